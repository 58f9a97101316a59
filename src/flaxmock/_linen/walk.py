"""The call walk shared by conversion and execution.

Both the converter (which records a layer per submodule call) and the runtime (which finds the
layer that stands for a call) install a Flax method interceptor and must agree, call for call,
on which intercepted calls are *submodule calls* and which run inline. The rules live here once:

* ``setup`` is never a call of its own: Flax runs it lazily before the first method call, and
  everything it calls (flaxformer's ``Decoder.setup`` calls ``self._setup_layer_sequence()``)
  runs inline, as part of it. Flax runs it before the interceptors of the call that triggers
  it, from wherever that call is made, so its calls cannot be keyed by a caller.
* A call on a module that is already running (``self.encode(x)``, ``self._split_heads(x)``,
  ``super().__call__(...)``) is part of the enclosing call: Flax wraps each class's own
  methods, so these reach the interceptor a second time for the same module.
* Flax's setup-validation call of lifted transforms runs on a clone bound to a ``TestScope``
  whose path is ``()``, colliding with the root: it passes through.
* A module whose parent is a raw Scope, not a Module, is the body of a lifted transform
  (``nn.scan``, ``nn.remat``/``nn.checkpoint``, ``nn.vmap``, ``nn.jit``: LIFTED) or, bound at
  path ``()``, the root of a nested ``module.apply`` (NESTED). Both are submodule calls of the
  enclosing call. A lifted body is traced more than once (by Flax's setup validation and by
  JAX), a different number of times under ``init`` than under ``apply``, so its key does not
  advance the caller's count: every trace of the body maps to the same layer.
* Any other call is a submodule call of the call on top of the stack, keyed
  ``(index, "name.method")`` with ``index`` counting the submodule calls of that call, as penzai
  does. The caller is the top of the stack, not ``module.parent``: a module created in one place
  and passed as an attribute (a shared embedding) is called from another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
import types
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
from flax.core import scope as flax_scope

_isolation = threading.local()


@contextlib.contextmanager
def isolated() -> Iterator[None]:
    """Runs a separate computation (a mock's shape inference) inside a running walk.

    Flax's interceptors stack: an inference started while a converted tree runs would be seen
    by that run's dispatcher, which would take its calls for the tree's own. Dispatchers pass
    every call through while this is active (in this thread).
    """
    _isolation.depth = getattr(_isolation, "depth", 0) + 1
    try:
        yield
    finally:
        _isolation.depth -= 1


def is_isolated() -> bool:
    """Whether :func:`isolated` is active in this thread."""
    return getattr(_isolation, "depth", 0) > 0


SETUP = "setup"
INLINE = "inline"
CHILD = "child"
LIFTED = "lifted"
NESTED = "nested"

#: Class-name prefixes Flax gives lifted module classes, and the transform each stands for.
_TRANSFORM_PREFIXES = (
    ("Scan", "scan"),
    ("Checkpoint", "remat"),
    ("Remat", "remat"),
    ("Vmap", "vmap"),
    ("Jit", "jit"),
    ("Vjp", "vjp"),
    ("Jvp", "jvp"),
    ("MapVariables", "map_variables"),
    ("Map_variables", "map_variables"),
    ("WhileLoop", "while_loop"),
    ("Cond", "cond"),
)


#: ``flax.core.lift`` functions, by name, and the transform each stands for.
_LIFT_FUNCTIONS = {
    "scan": "scan",
    "vmap": "vmap",
    "checkpoint": "remat",
    "remat_scan": "remat/scan",
    "jit": "jit",
    "while_loop": "while_loop",
    "cond": "cond",
    "switch": "switch",
    "map_variables": "map_variables",
    "custom_vjp": "custom_vjp",
    "vjp": "vjp",
    "jvp": "jvp",
    "value_and_grad": "grad",
}
_LIFT_FILE = os.path.join("flax", "core", "lift.py")
_MODULE_FILE = os.path.join("flax", "linen", "module.py")
_APPLY_FUNCTIONS = frozenset({"apply", "init", "init_with_output"})


def _markers_between(walk: Walk) -> list[str]:
    """What Python runs between the current intercepted call and the enclosing one.

    Walks the stack outward from the interceptor frame of the current call (the innermost
    frame of a ``__call__`` whose ``self.walk`` is ``walk``) to the next one (the enclosing
    call's), and returns, innermost first, the ``flax.core.lift`` transforms (``"scan"``) and
    ``"apply"`` for ``Module.apply``/``init`` frames. Flax names lifted classes after their
    transforms, but a transform applied to a function or method (``nn.RNN``'s scan, an
    ``@nn.scan`` method, ``nn.cond`` branches) and a nested ``apply`` leave only this trace.
    """
    markers: list[str] = []
    seen_own = False
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__call__" and getattr(frame.f_locals.get("self"), "walk", None) is walk:
            if seen_own:
                break
            seen_own = True
        elif seen_own:
            filename = code.co_filename
            if filename.endswith(_LIFT_FILE):
                name = _LIFT_FUNCTIONS.get(code.co_qualname.split(".")[0])
                if name is not None and (not markers or markers[-1] != name):
                    markers.append(name)
            elif filename.endswith(_MODULE_FILE) and code.co_name in _APPLY_FUNCTIONS:
                if not markers or markers[-1] != "apply":
                    markers.append("apply")
        frame = frame.f_back
    return markers


_AXES_SCAN_FILE = os.path.join("flax", "core", "axes_scan.py")


def scan_length() -> int | None:
    """The number of steps of the innermost ``flax.core.axes_scan`` scan being traced, if any.

    Read from the locals of its ``scan_fn`` frame: ``length`` when given, else the leading
    axis of the scanned inputs (``xs_flat``, already moved to the front).
    """
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "scan_fn" and code.co_filename.endswith(_AXES_SCAN_FILE):
            local = frame.f_locals
            length = local.get("length")
            if isinstance(length, int):
                return length
            xs = local.get("xs_flat")
            shape = getattr(xs[0], "shape", None) if xs else None
            return int(shape[0]) if shape else None
        frame = frame.f_back
    return None


def transform_names(lifted_class_name: str, body_class_name: str) -> tuple[str, ...]:
    """``("scan", "remat")`` from a lifted class name such as ``ScanCheckpointBlock``."""
    name = lifted_class_name
    if name.endswith(body_class_name):
        name = name[: -len(body_class_name)]
    names = []
    while name:
        for prefix, transform in _TRANSFORM_PREFIXES:
            if name.startswith(prefix):
                names.append(transform)
                name = name[len(prefix) :]
                break
        else:
            names.append(name)
            break
    return tuple(names)


@dataclasses.dataclass
class Frame:
    """One running call on the walk's stack."""

    module: Any  # The bound Flax module, or None for an inline region.
    payload: Any = None  # What the walker attaches (a record being built, or a layer).
    counter: int = 0  # Submodule calls made so far by this call.
    inline: bool = False
    lifted: bool = False  # This call is the body of a lifted transform.
    nested: bool = False  # This call is the root of a nested ``module.apply``.
    setup: bool = False  # An inline region: a module's ``setup``.
    # Lifted classes seen by Flax's setup validation, by module name (for summaries).
    lifted_classes: dict[str, str] = dataclasses.field(default_factory=dict)


class Walk:
    """The stack of running calls and the classification of intercepted calls."""

    def __init__(self, root_payload: Any):
        self.root = Frame(module=None, payload=root_payload)
        self.stack: list[Frame] = [self.root]

    @property
    def top(self) -> Frame:
        return self.stack[-1]

    @property
    def in_lifted(self) -> bool:
        """Whether the current call runs inside the body of a lifted transform."""
        return any(f.lifted for f in self.stack)

    @property
    def in_nested(self) -> bool:
        """Whether the current call runs inside a nested ``module.apply``."""
        return any(f.nested for f in self.stack)

    def classify(self, context: Any) -> str:
        """Returns SETUP, INLINE, CHILD, LIFTED or NESTED (see the module docstring)."""
        module = context.module
        if context.method_name == "setup":
            return SETUP
        scope = getattr(module, "scope", None)
        is_test_scope = type(scope).__name__ == "TestScope"
        if (
            self.root.module is None
            and scope is not None
            and scope.path == ()
            and not is_test_scope
        ):
            # The applied module itself, bound at the root scope. (With ``method=`` a plain
            # function, the first intercepted call may be a child's instead.)
            self.root.module = module
            return INLINE
        if isinstance(scope, flax_scope.Scope) and is_test_scope and self.top.setup:
            # Flax's setup validation of a lifted module, run while a setup runs: the lifted
            # class is the enclosing call's.
            caller = next(f for f in reversed(self.stack) if not f.setup)
            caller.lifted_classes.setdefault(module.name, type(module).__name__)
            return INLINE
        if self.top.inline:
            return INLINE
        if any(f.module is module for f in self.stack):
            return INLINE
        if isinstance(scope, flax_scope.Scope) and is_test_scope:
            self.top.lifted_classes.setdefault(module.name, type(module).__name__)
            return INLINE
        if not isinstance(module.parent, nn.Module):
            if scope is None:
                return INLINE
            if self._pushed_from_stack(scope) is not None:
                return CHILD
            if scope.path != ():
                return LIFTED
            # At path (): the root of a nested ``module.apply``, or the body of a transform of
            # the applied module itself (a vmapped class applied at the root, ``nn.cond`` on
            # ``self``). Which one Flax ran last tells them apart; only then is the stack read.
            markers = _markers_between(self)
            return LIFTED if markers and markers[0] != "apply" else NESTED
        return CHILD

    def _pushed_from_stack(self, scope: Any) -> Frame | None:
        """The running call whose module's scope ``scope`` was pushed from, if any.

        A module built with a scope for parent (``Blk(parent=self.scope.push("layers")
        .push(str(i)))``, as big_vision's Gemma builds its blocks) is an ordinary child of the
        module that pushed the scope: its scope's parent chain reaches that module's scope. A
        lifted body's scope is a fresh one (``flax.core.lift`` makes it with no parent).
        """
        frames = {id(f.module.scope): f for f in self.stack if f.module is not None}
        parent = scope.parent
        while parent is not None:
            frame = frames.get(id(parent))
            if frame is not None:
                return frame
            parent = parent.parent
        return None

    def child_name(self, module: Any) -> str:
        """The name of a child call in its key: the module's name, or, for a module whose parent
        is a pushed scope (it has no name), its scope path below the caller's (``layers/0``)."""
        if module.name is not None or module.scope is None:
            return str(module.name)
        path = tuple(module.scope.path)
        caller = self.top.module
        base = tuple(caller.scope.path) if caller is not None and caller.scope else ()
        if path[: len(base)] == base and len(path) > len(base):
            path = path[len(base) :]
        return "/".join(path)

    def next_key(self, context: Any, *, advance: bool = True) -> tuple[int, str]:
        """The ``(index, "name.method")`` key of a child call, advancing the caller's count."""
        frame = self.top
        key = (frame.counter, f"{self.child_name(context.module)}.{context.method_name}")
        if advance:
            frame.counter += 1
        return key

    def transforms_of(self, context: Any) -> tuple[str, ...]:
        """The transforms wrapping a LIFTED call, outermost first.

        From the lifted class Flax's setup validation ran (``ScanRematBlock``), else from the
        ``flax.core.lift`` functions on the stack (a transform of a function or method).
        """
        module = context.module
        lifted = self.top.lifted_classes.get(module.name)
        if lifted is not None:
            names = transform_names(lifted, type(module).__name__)
            if names:
                return names
        # Called from the interceptor, so the stack still holds the transform's frames.
        markers = [m for m in reversed(_markers_between(self)) if m != "apply"]
        return tuple(markers) or ("lifted",)

    def call_inline(self, next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
        """Runs an inline call; everything inside an inline region is inline too."""
        module = context.module
        opens_region = (
            self.root.module is not module
            and not self.top.inline
            and not any(f.module is module for f in self.stack)
        )
        if not opens_region:
            return next_fun(*args, **kwargs)
        self.stack.append(Frame(module=module, inline=True))
        try:
            return next_fun(*args, **kwargs)
        finally:
            self.stack.pop()

    def call_setup(self, next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
        """Runs a module's ``setup``: an inline region, whatever it calls."""
        self.stack.append(Frame(module=context.module, inline=True, setup=True))
        try:
            return next_fun(*args, **kwargs)
        finally:
            self.stack.pop()

    def call_child(
        self,
        module: Any,
        payload: Any,
        next_fun: Any,
        args: Any,
        kwargs: Any,
        *,
        kind: str = CHILD,
    ) -> Any:
        frame = Frame(module=module, payload=payload, lifted=kind == LIFTED, nested=kind == NESTED)
        self.stack.append(frame)
        try:
            return next_fun(*args, **kwargs)
        finally:
            self.stack.pop()


def jit_bodies_inline(run_inline: bool = True) -> contextlib.AbstractContextManager[Any]:
    """Runs ``nn.jit`` bodies inline (``jax.disable_jit``) while flaxmock intercepts.

    ``nn.jit`` caches one trace of its body per mutable filter and module fingerprint and
    replays it on later calls with equal ones. Method interceptors (flaxmock's, and any
    user's) run while that trace is made, not when it is replayed: a trace made under one
    flaxmock run (its mocks' draws, its dispatcher) would be replayed by a later run or by a
    plain ``module.apply``, and a trace made by a plain ``apply`` would hide the body's calls
    from flaxmock. Inline, the body runs (or is traced into the enclosing trace) each time,
    and Flax's cache is neither read nor written. The cost: outside any trace, the body runs
    op by op instead of as one compiled function, which can differ from ``module.apply`` by
    XLA's fusion (a last-ulp difference).
    """
    return jax.disable_jit() if run_inline else contextlib.nullcontext()
