"""Method interception for Flax NNX modules: linen's ``intercept_methods`` for ``nnx.Module``.

NNX has no interceptor hook, and Python looks special methods such as ``__call__`` up on the
class, never on the instance, so an interceptor has to wrap methods on the classes. This module
does that as narrowly as it can:

* While at least one :func:`intercept_methods` context is active in *any* thread, the public
  methods (and ``__call__``) defined by each ``nnx.Module`` subclass are replaced by a wrapper.
  A class created while a context is active is wrapped as it is created.
* The wrapper reads the interceptor stack of the *calling thread*; when that stack is empty (a
  thread with no active context) it calls the original method directly, so other threads see
  no change in behaviour.
* The wrappers are installed when the first context opens and removed when the last one closes
  (a count shared by all threads, under a lock), also when the body raises: afterwards every
  class attribute is again the very object it was before.

Unlike ``nnx.tabulate``, nothing is left patched when a call fails.

Calls are seen when Python runs them, and a cached trace runs no Python: JAX reuses the trace of
a ``jax.jit``/``nnx.jit`` function, and of a lifted-transform body (a module-level function or
method decorated with ``@nnx.scan``/``@nnx.vmap``), that it has seen with the same shapes. So
that no call is missed, an active context sets a JAX *user context*
(see ``flaxmock._core.traces``, part of every trace cache key) to a fresh value when it opens and
whenever an outermost intercepted method starts in the thread: JAX traces such functions
anew instead of reusing a trace made without (or before) the interceptor. Afterwards the
previous value is back, so traces made outside any context stay cached as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from typing import Any

from flax import nnx

from flaxmock._core import errors as _errors
from flaxmock._core import traces as _traces

#: The interceptor signature, as in ``flax.linen.intercept_methods``.
Interceptor = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any], Any], Any]


@dataclasses.dataclass(frozen=True)
class InterceptorContext:
    """What an interceptor learns about the call it intercepts (as linen's).

    Attributes:
      module: The ``nnx.Module`` whose method is called.
      method_name: The name of the method called (``"__call__"``).
      orig_method: The original method bound to ``module``; calling it skips the remaining
        interceptors.
    """

    module: nnx.Module
    method_name: str
    orig_method: Callable[..., Any]


class _Stack(threading.local):
    def __init__(self) -> None:
        self.interceptors: list[Interceptor] = []
        # How many intercepted method calls are running in this thread.
        self.depth = 0


_STACK = _Stack()

# Guards the installation state below; held while wrappers are installed or removed, never
# during a call.
_LOCK = threading.RLock()
# How many intercept_methods contexts are open, over all threads.
_ACTIVE = 0
# (class, name) -> the original function that was in the class's __dict__.
_PATCHED: dict[tuple[type, str], Any] = {}
# Whether nnx.Module had its own __init_subclass__ before we added the creation hook.
_HOOK_SAVED: list[Any] = []

# Attribute names of the base classes: framework methods (`sow`, `iter_modules`, `train`, ...)
# that are not the module's own computation.
_BASE_NAMES = frozenset(dir(nnx.Module))

# Set on classes that must not be wrapped (flaxmock's own helper subclasses).
NO_INTERCEPT_ATTR = "_flaxmock_no_intercept"

# Flax's containers of modules: their own methods (`append`, `insert`) are list and dict
# operations, not computations of a module.
_CONTAINER_CLASSES = frozenset(
    getattr(nnx, name) for name in ("List", "Dict") if hasattr(nnx, name)
)


def intercepted_method_names(cls: type) -> list[str]:
    """Names of the methods of ``cls``'s own ``__dict__`` that interception wraps.

    These are the plain functions defined in the class body whose name is ``__call__`` or
    public (no leading underscore), except names of the ``nnx.Module`` base API. Properties,
    static and class methods are left alone, and so are the methods of Flax's containers
    ``nnx.List`` and ``nnx.Dict`` (a subclass's own methods are wrapped).
    """
    if cls in _CONTAINER_CLASSES:
        return []
    names = []
    for name, value in vars(cls).items():
        if name != "__call__" and (name.startswith("_") or name in _BASE_NAMES):
            continue
        original = _PATCHED.get((cls, name), value)
        if inspect.isfunction(original):
            names.append(name)
    return names


def method_names(cls: type) -> tuple[str, ...]:
    """Names of the methods interception wraps on ``cls`` and its bases, ``__call__`` first.

    :func:`intercepted_method_names` over the ``nnx.Module`` classes of ``cls``'s MRO: the
    methods a module of class ``cls`` answers that are its own computation.
    """
    names = {
        name
        for klass in cls.__mro__
        if isinstance(klass, type) and issubclass(klass, nnx.Module)
        for name in intercepted_method_names(klass)
    }
    return tuple(sorted(names, key=lambda name: (name != "__call__", name)))


def _all_module_classes() -> list[type]:
    seen: dict[type, None] = {}
    todo = [nnx.Module]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen[sub] = None
                todo.append(sub)
    return list(seen)


def _run(fn: Callable[..., Any], name: str, module: Any, args: Any, kwargs: Any) -> Any:
    # A snapshot: an interceptor that opens or closes a context while running must not change
    # the chain of the call in flight.
    stack = tuple(_STACK.interceptors)
    bound = functools.partial(fn, module)
    context = InterceptorContext(module, name, bound)
    fun: Callable[..., Any] = bound
    # As in linen's `run_interceptors`: the innermost context wraps the method first, so the
    # outermost interceptor runs first and each `next_fun` leads one level in.
    for interceptor in reversed(stack):
        fun = _wrap(interceptor, fun, context)
    if _STACK.depth:
        return fun(*args, **kwargs)
    # An outermost call: the transformed functions inside it are traced anew, even if this
    # context traced them before (a second model call in one context is seen too).
    _STACK.depth += 1
    try:
        with _traces.fresh_trace():
            return fun(*args, **kwargs)
    finally:
        _STACK.depth -= 1


def _wrap(interceptor: Interceptor, fun: Callable[..., Any], context: InterceptorContext) -> Any:
    @functools.wraps(fun)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        return interceptor(fun, args, kwargs, context)

    return wrapped


def _make_wrapper(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not _STACK.interceptors:
            return fn(self, *args, **kwargs)
        return _run(fn, name, self, args, kwargs)

    wrapper._flaxmock_original = fn  # type: ignore[attr-defined]
    return wrapper


def _patch_class(cls: type) -> None:
    if vars(cls).get(NO_INTERCEPT_ATTR, False):
        return
    for name in intercepted_method_names(cls):
        if (cls, name) in _PATCHED:
            continue
        fn = vars(cls)[name]
        _PATCHED[(cls, name)] = fn
        setattr(cls, name, _make_wrapper(fn, name))


def _creation_hook(cls: type, **kwargs: Any) -> None:
    super(nnx.Module, cls).__init_subclass__(**kwargs)  # type: ignore[misc]
    with _LOCK:
        if _ACTIVE:
            _patch_class(cls)


def _install() -> None:
    for cls in _all_module_classes():
        _patch_class(cls)
    # Classes defined while a context is active (in a doctest, in a test body) are wrapped too.
    _HOOK_SAVED[:] = [vars(nnx.Module).get("__init_subclass__")]
    nnx.Module.__init_subclass__ = classmethod(_creation_hook)  # type: ignore[assignment]


def _uninstall() -> None:
    if _HOOK_SAVED:
        saved = _HOOK_SAVED.pop()
        if saved is None:
            del nnx.Module.__init_subclass__
        else:
            nnx.Module.__init_subclass__ = saved  # type: ignore[method-assign]
    for (cls, name), fn in _PATCHED.items():
        setattr(cls, name, fn)
    _PATCHED.clear()


def intercept_methods(interceptor: Interceptor) -> contextlib.AbstractContextManager[None]:
    """Calls ``interceptor`` around every ``nnx.Module`` method call made inside the context.

    The NNX counterpart of ``flax.linen.intercept_methods``, with the same interceptor signature
    ``interceptor(next_fun, args, kwargs, context)``: call ``next_fun(*args, **kwargs)`` to run
    the method (and any inner interceptors), or return something else instead. ``context`` is an
    :class:`InterceptorContext` (``module``, ``method_name``, ``orig_method``).

    Every module is seen, Flax's built-in ones (``nnx.Linear``, ``nnx.MultiHeadAttention``)
    included, without subclassing: ``__call__`` and the public methods each class defines
    (a helper ``self.encode(x)`` too; not ``nnx.Module``'s own API such as ``sow`` or
    ``iter_modules``, not properties). A method that calls ``super().__call__`` is seen at
    both levels, as in linen.

    Contexts nest like linen's: the outermost interceptor runs first. Interception is
    per thread: another thread's calls run unchanged. When the last context closes, even
    after an exception, every class attribute is the original object again.

    Calls inside ``jax.jit``/``nnx.jit`` functions and ``nnx.scan``/``nnx.vmap`` bodies
    (module-level ``@nnx.scan`` functions included) are seen even if JAX traced them before the
    context opened: the context makes JAX trace them anew (see the module docstring), once per
    context for a jitted function called from outside any module, and on every outermost module
    call for the transforms inside it. So interception costs a new trace (and compilation) of
    those functions; nothing cached outside the context is dropped.

    Args:
      interceptor: A function ``(next_fun, args, kwargs, context) -> output``.

    Returns:
      A context manager, inside whose ``with`` block interception is active.

    Raises:
      InvalidArgumentError: ``interceptor`` is not callable (raised by this call, before the
        context is entered).

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from flaxmock.nnx import intercept_methods
      >>> model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.relu)
      >>> seen = []
      >>> def log(next_fun, args, kwargs, context):
      ...     out = next_fun(*args, **kwargs)
      ...     seen.append((type(context.module).__name__, context.method_name, out.shape))
      ...     return out
      >>> with intercept_methods(log):
      ...     _ = model(jnp.ones((2, 3)))
      >>> seen
      [('Linear', '__call__', (2, 4)), ('Sequential', '__call__', (2, 4))]
    """
    if not callable(interceptor):
        raise _errors.InvalidArgumentError(
            "intercept_methods(interceptor) takes a function (next_fun, args, kwargs, context) "
            f"-> output, got {type(interceptor).__name__}."
        )
    return _intercepting(interceptor)


@contextlib.contextmanager
def _intercepting(interceptor: Interceptor) -> Iterator[None]:
    global _ACTIVE
    with _LOCK:
        if _ACTIVE == 0:
            try:
                _install()
            except BaseException:
                _uninstall()
                raise
        _ACTIVE += 1
    _STACK.interceptors.append(interceptor)
    try:
        # A jitted function called inside the context (not from a module method) is traced
        # anew once per context.
        with _traces.fresh_trace():
            yield
    finally:
        popped = _STACK.interceptors.pop()
        assert popped is interceptor, "intercept_methods contexts closed out of order"
        with _LOCK:
            _ACTIVE -= 1
            if _ACTIVE == 0:
                _uninstall()


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """Hides this thread's interceptors inside the block (for flaxmock's own internal calls)."""
    saved = _STACK.interceptors
    _STACK.interceptors = []
    try:
        yield
    finally:
        _STACK.interceptors = saved
