"""Selecting the NNX submodules to mock, and telling layer stacks from single modules.

``mock(where=...)`` takes a module class, a glob over ``/``-joined paths, or a predicate. Flax's
containers (``nnx.List``, ``nnx.Dict``) are walked into, never replaced: they hold modules and
compute nothing. A stack of layers built with ``nnx.vmap`` is recognised by its state: every
array has the leading layer axis (random keys included, which are scalars in a single module).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from flaxmock._core import errors as _errors
from flaxmock._core import specs as _specs
from flaxmock.nnx import _shapes as _nnx_shapes

#: What ``mock(where=...)`` accepts: a module class, a glob over ``/``-joined paths, or a
#: predicate ``(path, module) -> bool``.
Where = type | str | Callable[[str, Any], bool]


class StackSizeError(_errors.FlaxmockError, ValueError):
    """``mock(stack_size=n)`` does not match the leading layer axis of the selected module."""


# Containers of modules: walked into by `mock`, never replaced themselves.
_CONTAINER_TYPES = tuple(getattr(nnx, name) for name in ("List", "Dict") if hasattr(nnx, name))


def matcher(where: Where) -> Callable[[str, Any], bool]:
    """The predicate ``(path, module) -> bool`` of a ``where`` selector."""
    if isinstance(where, type):
        if not issubclass(where, nnx.Module):
            raise _errors.InvalidSelectorError(
                f"mock(where={where.__name__}): a class selector must be an nnx.Module "
                "subclass, such as nnx.Linear."
            )
        return lambda path, module: isinstance(module, where)
    if isinstance(where, str):
        return lambda path, module: fnmatch.fnmatchcase(path, where)
    if callable(where):
        return where
    raise _errors.InvalidSelectorError(
        f"mock(where={where!r}): expected an nnx.Module class (nnx.Linear), a glob over "
        "'/'-joined paths ('layers/*/attn'), or a predicate (path, module) -> bool."
    )


def set_child(parent: Any, key: Any, value: Any) -> None:
    """Sets an attribute of a module, or an item of a list or dict of modules."""
    if isinstance(key, str) and isinstance(parent, nnx.Pytree):
        setattr(parent, key, value)
    else:
        parent[key] = value


def get_child(parent: Any, key: Any) -> Any:
    """Reads an attribute of a module, or an item of a list or dict of modules."""
    if isinstance(key, str) and isinstance(parent, nnx.Pytree):
        return getattr(parent, key)
    return parent[key]


def is_container(module: Any) -> bool:
    """Whether ``module`` is a plain ``nnx.List``/``nnx.Dict`` (holds modules, has no call)."""
    return isinstance(module, _CONTAINER_TYPES) and not callable(module)


def _leading_axis(module: Any) -> tuple[int | None, bool]:
    """``(n, has_arrays)``: the leading axis all of ``module``'s arrays share, if any."""
    leaves = [
        leaf
        for leaf in jax.tree.leaves(
            nnx.state(module), is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct)
        )
        if _specs.is_array(leaf)
    ]
    if not leaves:
        return None, False
    sizes = {leaf.shape[0] if leaf.ndim else None for leaf in leaves}
    (size,) = sizes if len(sizes) == 1 else (None,)
    return size, True


def stack_size(
    modules: dict[_nnx_shapes.Path, Any],
    path: _nnx_shapes.Path,
    module: Any,
    requested: int | None | str,
) -> int | None:
    """The stack size of a mock of ``module`` (see ``mock(stack_size=...)``).

    A layer stack built with ``nnx.vmap`` has a leading layer axis on every array, random keys
    included (a single module's keys are scalars). A module without arrays is sliced with the
    nearest enclosing module that has some.
    """
    size, has_arrays = _leading_axis(module)
    for depth in range(len(path) - 1, -1, -1):
        if has_arrays:
            break
        size, has_arrays = _leading_axis(modules[path[:depth]])
    if requested == "auto":
        return size
    if requested is None:
        return None
    if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
        raise StackSizeError(
            f"mock(stack_size={requested!r}): expected a positive int, 'auto' or None."
        )
    if has_arrays and size != requested:
        found = f"a leading axis of {size}" if size else "no leading axis shared by all"
        fix = f"stack_size={size}" if size else "stack_size=None"
        raise StackSizeError(
            f"mock(stack_size={requested}): {_nnx_shapes.path_str(path)} "
            f"({type(module).__name__}) is not a stack of {requested} layers: its arrays (or, "
            f"without arrays, those of the stack it is in) have {found}. Fix: pass {fix}, or "
            "leave the default stack_size='auto'."
        )
    return requested
