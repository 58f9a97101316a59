"""The call walk shared by conversion and execution.

Both the converter (which records a layer per submodule call) and the runtime (which finds the
layer that stands for a call) install a Flax method interceptor and must agree, call for call,
on which intercepted calls are *submodule calls* and which run inline. The rules live here once:

* ``setup`` is never a call of its own: Flax runs it lazily before the first method call.
* A call on a module that is already running (``self.encode(x)``, ``self._split_heads(x)``,
  ``super().__call__(...)``) is part of the enclosing call: Flax wraps each class's own
  methods, so these reach the interceptor a second time for the same module.
* Flax's setup-validation call of lifted transforms runs on a clone bound to a ``TestScope``
  whose path is ``()``, colliding with the root: it passes through.
* A module whose parent is not a Module (inside ``nn.scan``/``nn.remat``/``nn.vmap`` bodies, or
  the root of a nested ``module.apply``) runs inline, with its whole subtree, as part of the
  enclosing call: its (possibly stacked) variables belong to the enclosing layer.
* Any other call is a submodule call of the call on top of the stack, keyed
  ``(index, "name.method")`` with ``index`` counting the submodule calls of that call, as penzai
  does. The caller is the top of the stack, not ``module.parent``: a module created in one place
  and passed as an attribute (a shared embedding) is called from another.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
from flax.core import scope as flax_scope

SETUP = "setup"
INLINE = "inline"
CHILD = "child"


@dataclasses.dataclass
class Frame:
    """One running call on the walk's stack."""

    module: Any  # The bound Flax module, or None for an inline region.
    payload: Any = None  # What the walker attaches (a record being built, or a layer).
    counter: int = 0  # Submodule calls made so far by this call.
    inline: bool = False


class Walk:
    """The stack of running calls and the classification of intercepted calls."""

    def __init__(self, root_payload: Any):
        self.root = Frame(module=None, payload=root_payload)
        self.stack: list[Frame] = [self.root]

    @property
    def top(self) -> Frame:
        return self.stack[-1]

    def classify(self, context: Any) -> str:
        """Returns SETUP, INLINE or CHILD for an intercepted call (see the module docstring)."""
        module = context.module
        if context.method_name == "setup":
            return SETUP
        if self.root.module is None and module.scope is not None and module.scope.path == ():
            # The applied module itself, bound at the root scope. (With ``method=`` a plain
            # function, the first intercepted call may be a child's instead.)
            self.root.module = module
            return INLINE
        if self.top.inline:
            return INLINE
        if any(f.module is module for f in self.stack):
            return INLINE
        if isinstance(getattr(module, "scope", None), flax_scope.Scope) and (
            type(module.scope).__name__ == "TestScope"
        ):
            return INLINE
        if not isinstance(module.parent, nn.Module):
            return INLINE
        return CHILD

    def next_key(self, context: Any) -> tuple[int, str]:
        """The ``(index, "name.method")`` key of a child call, advancing the caller's count."""
        frame = self.top
        key = (frame.counter, f"{context.module.name}.{context.method_name}")
        frame.counter += 1
        return key

    def call_inline(self, next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
        """Runs an inline call; inside a lifted body or nested apply everything is inline."""
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

    def call_child(self, module: Any, payload: Any, next_fun: Any, args: Any, kwargs: Any) -> Any:
        self.stack.append(Frame(module=module, payload=payload))
        try:
            return next_fun(*args, **kwargs)
        finally:
            self.stack.pop()
