"""The linen side of the ``where`` grammar (``flaxmock._core.select``): layers as candidates.

Each layer of a converted tree (a :class:`~flaxmock.FlaxCallLayer` or a mock) is one candidate:
its Flax scope path, its one method, its module. A scope that holds called modules but has no
call of its own (a module that is never called, whose children are called from elsewhere) is a
container: only a glob reaches it. Penzai layers a user inserted by hand are not candidates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
from flax import nnx
from penzai import pz

from flaxmock._core import select as _select
from flaxmock._linen import layer as _layer

FRONT = _select.Front(
    module_type=nn.Module,
    module_name="flax.linen.Module",
    example="nn.Dense",
    noun="layer",
    other_type=nnx.Module,
    other_name="flax.nnx.Module",
    other_call="flaxmock.nnx.mock",
)


def _candidate(layer: Any, taken: str | None = None) -> _select.Candidate:
    return _select.Candidate(
        path="/".join(layer.info.scope_path),
        kind=type(layer.module).__name__,
        module=layer.module,
        node=layer,
        method=layer.method_name,
        taken=taken,
    )


def candidates(
    tree: Any, kinds: tuple[type, ...], taken: dict[type, str]
) -> list[_select.Candidate]:
    """The layers of ``tree`` as candidates, in tree order, then the never-called scopes.

    Args:
      tree: A converted tree.
      kinds: The layer types that can be selected.
      taken: Other layer types, each with why it cannot be selected (``"already MockLayers"``).
    """
    found = []
    for _, layer in _layer.iter_layers(tree):
        # A taken type at least as specific as the matching kind wins (a SpyLayer is a
        # FlaxCallLayer, already spied).
        matching = [k for k in kinds if isinstance(layer, k)]
        reason = next(
            (
                why
                for kind, why in taken.items()
                if isinstance(layer, kind) and all(issubclass(kind, k) for k in matching)
            ),
            None,
        )
        if reason is not None:
            found.append(_candidate(layer, reason))
        elif matching:
            found.append(_candidate(layer))
    called = {c.segments for c in found}
    scopes: dict[tuple[str, ...], None] = {}
    for c in found:
        for depth in range(1, len(c.segments)):
            if c.segments[:depth] not in called:
                scopes.setdefault(c.segments[:depth])
    found += [
        _select.Candidate(path="/".join(s), kind="never called itself", container=True)
        for s in scopes
    ]
    return found


def choose(
    tree: Any,
    where: Any,
    kinds: tuple[type, ...],
    *,
    taken: dict[type, str],
    call: str,
    taken_fix: str,
) -> set[tuple[Any, ...]]:
    """The modules and methods (``_module_key``) of the layers ``where`` selects, nested included.

    A module called from several places (a shared module passed to two children: its calls
    sit at ``a/...`` and ``b/...`` in the tree, under one scope path) is one module: when
    ``where`` selects one of its calls of a method (a predicate over the layer can), every call
    of that method of that module is selected, as the NNX side replaces a module reachable at
    several paths at all of them.

    ``pz.select(...).at_instances_of`` would stop at the root (the outermost instance), so the
    choice, made beforehand by the grammar, goes in one ``at_subtrees_where`` predicate, which
    reaches nested layers and keeps the outermost of nested matches.

    Raises:
      InvalidSelectorError, SelectNothingError, SelectContainerError: see
        ``flaxmock._core.select.select``.
    """
    # The root module's class names the tree in messages (a tree whose root is not a layer,
    # built by hand, is named by its own class).
    root = tree.module if isinstance(tree, (*kinds, *taken)) else tree  # type: ignore[attr-defined]
    chosen = _select.select(
        where,
        candidates(tree, kinds, taken),
        FRONT,
        call=call,
        subject=type(root).__name__,
        taken_fix=taken_fix,
    )
    return {_module_key(c.node) for c in chosen}


def select_layers(
    tree: Any,
    where: Any,
    kinds: tuple[type, ...],
    *,
    taken: dict[type, str],
    call: str,
    taken_fix: str,
) -> pz.Selection:
    """The outermost layers of the given kinds that ``where`` selects, as a penzai selection.

    See :func:`choose` (which layers are chosen, and the errors).
    """
    modules = choose(tree, where, kinds, taken=taken, call=call, taken_fix=taken_fix)
    return pz.select(tree).at_subtrees_where(lambda node: is_chosen(node, kinds, modules))


def is_chosen(node: Any, kinds: tuple[type, ...], modules: set[tuple[Any, ...]]) -> bool:
    """Whether ``node`` is a layer of ``kinds`` whose module and method are in ``modules``."""
    return isinstance(node, kinds) and _module_key(node) in modules


def _module_key(layer: Any) -> tuple[Any, ...]:
    """Which module and method a layer calls: the same for every call of a shared module.

    Calls inside a nested ``module.apply`` have scope paths of their own, so they are told
    apart by the layer itself.
    """
    info = layer.replaced().info if isinstance(layer, _layer.ReplacementLayer) else layer.info
    if info.nested:
        return ("nested", id(layer))
    return (info.scope_path, layer.method_name, info.transforms)


def selector(where: _select.Where) -> Callable[[Any], bool]:
    """A predicate for ``pz.select(tree).at_subtrees_where(...)`` that reaches nested calls.

    penzai's ``pz.select(tree).at_instances_of(InterceptedFlaxModuleMethod)`` selects only the
    outermost instance, the root, so a ``.where(...)`` after it selects nothing. Putting the
    whole condition in one ``at_subtrees_where`` predicate, as this one does, reaches any depth.
    A predicate sees one node at a time, so unlike :func:`flaxmock.mock` it cannot tell that a
    list element selects nothing, nor name a container.

    Args:
      where: As for :func:`flaxmock.mock`: a module class, a glob over paths, a predicate, or
        a list of these (the grammar of ``flaxmock._core.select``, in the overview's
        "Selecting modules").

    Returns:
      A predicate over tree nodes, true for the converted layers ``where`` names.

    Raises:
      InvalidSelectorError: ``where`` is not a selector.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, flaxmock
      >>> from penzai import pz
      >>> tree = flaxmock.unflaxify(nn.Sequential([nn.Dense(2), nn.Dense(2)]), jnp.ones((1, 2)))
      >>> pz.select(tree).at_subtrees_where(flaxmock.selector(nn.Dense)).count()
      2
      >>> pz.select(tree).at_subtrees_where(flaxmock.selector("layers_1")).count()
      1
    """
    forms = _select.compile_where(where, FRONT, call="flaxmock.selector")

    def predicate(node: Any) -> bool:
        if not isinstance(node, _layer.FlaxCallLayer):
            return False
        candidate = _candidate(node)
        return any(form.match(candidate) is not None for form in forms)

    return predicate
