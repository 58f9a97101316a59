"""The NNX side of the ``where`` grammar (``flaxmock._core.select``), and layer stacks.

Every module reachable from the model is one candidate, at each path it is reachable at: its
``/``-joined attribute path (list indices are segments), the methods a mock of it replaces (all
of them: an NNX mock replaces the whole module), the module itself. Flax's containers
(``nnx.List``, ``nnx.Dict``) are candidates too, never replaced: they hold modules and compute
nothing. A stack of layers built with ``nnx.vmap`` is recognised by its state: every array has
the leading layer axis (random keys included, which are scalars in a single module).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
from flax import nnx

from flaxmock._core import errors as _errors
from flaxmock._core import select as _select
from flaxmock._core import specs as _specs
from flaxmock.nnx import _abstract as _nnx_abstract
from flaxmock.nnx import _shapes as _nnx_shapes

FRONT = _select.Front(
    module_type=nnx.Module,
    module_name="flax.nnx.Module",
    example="nnx.Linear",
    noun="module",
    other_type=nn.Module,
    other_name="flax.linen.Module",
    other_call="flaxmock.mock (on a tree from flaxmock.unflaxify)",
)


# Containers of modules: walked into by `mock`, never replaced themselves.
_CONTAINER_TYPES = tuple(getattr(nnx, name) for name in ("List", "Dict") if hasattr(nnx, name))


def select_modules(
    model: Any,
    where: Any,
    *,
    call: str,
    methods_of: Callable[[type], tuple[str, ...]],
    taken: Callable[[Any], str | None],
    taken_fix: str = "",
    as_selected: Callable[[Any], Any] | None = None,
) -> list[_nnx_shapes.Path]:
    """The paths of the outermost modules of ``model`` that ``where`` selects, in graph order.

    A module reachable at several paths is selected at each of them that ``where`` names.
    ``model`` is only read: predicates see the user's own modules.

    Args:
      model: The model to select in.
      where: The selector (see ``flaxmock._core.select``).
      call: The public function, for messages.
      methods_of: The methods a replacement of a module of this class replaces.
      taken: Why a module cannot be selected (already a mock), or None.
      taken_fix: How to make a taken module selectable, for messages.
      as_selected: What class selectors and predicates see of a module (default: the module
        itself; ``unmock`` shows the module a mock replaced).

    Raises:
      InvalidSelectorError, SelectNothingError, SelectContainerError, SelectMethodError: see
        ``flaxmock._core.select.select``.
    """
    paths: dict[int, _nnx_shapes.Path] = {}
    found = []
    for path, module in _nnx_shapes.iter_module_paths(model):
        container = is_container(module)
        shown = module if as_selected is None else as_selected(module)
        candidate = _select.Candidate(
            path="/".join(str(k) for k in path),
            kind=type(shown).__name__,
            module=shown,
            node=shown,
            methods=() if container else methods_of(type(shown)),
            container=container,
            taken=taken(module),
        )
        paths[id(candidate)] = path
        found.append(candidate)
    chosen = _select.select(
        where, found, FRONT, call=call, subject=type(model).__name__, taken_fix=taken_fix
    )
    selected: list[_nnx_shapes.Path] = []
    for candidate in chosen:
        path = paths[id(candidate)]
        if not any(path[: len(p)] == p for p in selected):
            selected.append(path)
    return selected


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


def set_at(root: Any, path: _nnx_shapes.Path, value: Any) -> None:
    """Puts ``value`` at the non-empty graph ``path`` below ``root`` (in place)."""
    parent = root
    for key in path[:-1]:
        parent = get_child(parent, key)
    set_child(parent, path[-1], value)


def is_container(module: Any) -> bool:
    """Whether ``module`` is a plain ``nnx.List``/``nnx.Dict`` (holds modules, has no call)."""
    return isinstance(module, _CONTAINER_TYPES) and not callable(module)


def _leading_axis(module: Any) -> tuple[int | None, bool]:
    """``(n, has_arrays)``: the leading axis all of ``module``'s arrays share, if any."""
    leaves = [
        leaf
        for leaf in jax.tree.leaves(nnx.state(module), is_leaf=_specs.is_spec)
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
        raise _errors.StackSizeError(
            f"mock(stack_size={requested!r}): expected a positive int, 'auto' or None."
        )
    if has_arrays and size != requested:
        found = f"a leading axis of {size}" if size else "no leading axis shared by all"
        fix = f"stack_size={size}" if size else "stack_size=None"
        raise _errors.StackSizeError(
            f"mock(stack_size={requested}): {_nnx_shapes.path_str(path)} "
            f"({type(module).__name__}) is not a stack of {requested} layers: its arrays (or, "
            f"without arrays, those of the stack it is in) have {found}. Fix: pass {fix}, or "
            "leave the default stack_size='auto'."
        )
    return requested


def replace_at(
    model: Any,
    paths: list[_nnx_shapes.Path],
    make: Callable[[_nnx_shapes.Path, Any, dict[_nnx_shapes.Path, Any]], Any],
) -> Any:
    """A copy of ``model`` with the module at each of ``paths`` replaced by ``make(...)``.

    ``make(path, module, modules)`` gets the copy's module and every module of the copy by
    path. A module reachable at several paths (shared: ``self.dec = self.enc``) is replaced by
    one replacement at all of them, whichever path selected it; not inside a replaced module.
    ``model`` is only read.

    Returns:
      The copy, or the replacement itself when ``paths`` holds the root.
    """
    copy = nnx.clone(model)
    _nnx_abstract.unguard(copy)
    modules = dict(_nnx_shapes.iter_module_paths(copy))
    selected = [(path, modules[path]) for path in paths]
    chosen = {id(module) for _, module in selected}
    selected += [
        (path, module)
        for path, module in modules.items()
        if id(module) in chosen
        and path not in paths
        and not any(path[: len(other)] == other for other in paths)
    ]
    made: dict[int, Any] = {}
    for path, module in selected:
        if id(module) not in made:
            made[id(module)] = make(path, module, modules)
        if not path:
            # A mock of the root holds the root's state, which materialize gives values to.
            _nnx_abstract.set_origin(made[id(module)], _nnx_abstract.origin_of(model))
            return made[id(module)]
        set_at(copy, path, made[id(module)])
    _nnx_abstract.guard(copy)
    _nnx_abstract.set_origin(copy, _nnx_abstract.origin_of(model))
    return copy
