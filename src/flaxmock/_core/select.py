"""Selectors: which layers of a converted tree a ``where`` names.

``where`` is a Flax module class, a glob over the layer's path, a predicate, or a list of these
(any of them). Paths are Flax scope paths joined by ``/`` (``"blocks_0/attn"``); a glob is also
matched against ``path.method`` (``"embed.attend"``), so one method of a module can be named.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
from penzai import pz

from flaxmock._core import errors as _errors

Where = type | str | Callable[[Any], bool] | Sequence[Any]


def predicate(where: Where) -> Callable[[Any], bool]:
    """Turns ``where`` into a predicate over layers (see the module docstring).

    Raises:
      InvalidSelectorError: ``where`` is a class that is not a Flax module, or of another type.
    """
    if isinstance(where, type):
        if not issubclass(where, nn.Module):
            raise _errors.InvalidSelectorError(
                f"where={where.__name__} is a class but not a flax.linen.Module subclass. Fix: "
                "pass a Flax module class (nn.Dense), a glob over layer paths "
                "('blocks_*/attn'), or a predicate `lambda layer: ...`."
            )
        cls = where
        return lambda layer: isinstance(getattr(layer, "module", None), cls)
    if isinstance(where, str):
        # ``*`` matches across ``/``; a leading ``**/`` also matches at the top level.
        patterns = [where] + ([where[3:]] if where.startswith("**/") else [])

        def by_glob(layer: Any) -> bool:
            path = layer_path(layer)
            method = getattr(layer, "method_name", "")
            return any(
                fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(f"{path}.{method}", p)
                for p in patterns
            )

        return by_glob
    if isinstance(where, Sequence):
        preds = [predicate(w) for w in where]
        return lambda layer: any(p(layer) for p in preds)
    if callable(where):
        return lambda layer: bool(where(layer))
    raise _errors.InvalidSelectorError(
        f"where must be a Flax module class, a glob string, a predicate or a list of these; got "
        f"{type(where).__name__}: {where!r:.80}."
    )


def selector(where: Where) -> Callable[[Any], bool]:
    """A predicate for ``pz.select(tree).at_subtrees_where(...)`` that reaches nested calls.

    penzai's ``pz.select(tree).at_instances_of(InterceptedFlaxModuleMethod)`` selects only the
    outermost instance, the root, so a ``.where(...)`` after it selects nothing. Putting the
    whole condition in one ``at_subtrees_where`` predicate, as this one does, reaches any depth.

    Args:
      where: As for :func:`flaxmock.mock`.

    Returns:
      A predicate over tree nodes, true for the converted layers ``where`` names.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, flaxmock
      >>> from penzai import pz
      >>> tree = flaxmock.unflaxify(nn.Sequential([nn.Dense(2), nn.Dense(2)]), jnp.ones((1, 2)))
      >>> pz.select(tree).at_subtrees_where(flaxmock.selector(nn.Dense)).count()
      2
    """
    from flaxmock._linen import layer as _layer

    pred = predicate(where)
    return lambda node: isinstance(node, _layer.FlaxCallLayer) and pred(node)


def layer_path(layer: Any) -> str:
    """The ``/``-joined scope path of a layer (``""`` for the root)."""
    info = getattr(layer, "info", None)
    path = getattr(info, "scope_path", ())
    return "/".join(path)


def select_layers(tree: Any, where: Where, kinds: tuple[type, ...]) -> pz.Selection:
    """Selects the outermost layers of the given kinds that ``where`` matches.

    ``pz.select(...).at_instances_of`` would stop at the root (the outermost instance), so the
    whole condition goes in one ``at_subtrees_where`` predicate, which reaches nested layers.

    Raises:
      SelectNothingError: nothing matched; the message lists the layer paths there are.
    """
    pred = predicate(where)
    selection = pz.select(tree).at_subtrees_where(
        lambda node: isinstance(node, kinds) and pred(node)
    )
    if selection.count() == 0:
        from flaxmock._linen import layer as _layer

        others = [
            layer
            for _, layer in _layer.iter_layers(tree)
            if not isinstance(layer, kinds)
            and getattr(layer, "module", None) is not None
            and pred(layer)
        ]
        if others:
            kind = type(others[0]).__name__
            raise _errors.SelectNothingError(
                f"where={where!r} matches only layers that are already {kind}s: "
                + ", ".join(
                    f"{layer_path(layer) or '<root>'}.{layer.method_name}" for layer in others[:8]
                )
                + ". Fix: flaxmock.unmock(tree, where) first to put back the original layers."
            )
        available = {
            f"{layer_path(layer) or '<root>'}.{getattr(layer, 'method_name', '?')}": (
                type(getattr(layer, "module", None)).__name__
            )
            for _, layer in _layer.iter_layers(tree)
            if isinstance(layer, kinds)
        }
        # The closest paths first (when ``where`` is a glob), then the rest in order.
        close = []
        if isinstance(where, str):
            bare = {p.rsplit(".", 1)[0]: p for p in available}
            for match in difflib.get_close_matches(where, list(bare) + list(available), 10, 0.3):
                entry = bare.get(match, match)
                if entry not in close:
                    close.append(entry)
        # The closest paths when there are any, else the first ones in order.
        ordered = close or sorted(available)[:20]
        shown = "\n  ".join(f"{p} ({available[p]})" for p in ordered) + (
            f"\n  ... ({len(available)} in all)" if len(available) > len(ordered) else ""
        )
        raise _errors.SelectNothingError(
            f"where={where!r} matched no layer. Layers that can be selected:\n  {shown}\n"
            "Fix: use one of these paths (globs like 'blocks_*/attn' or 'embed.attend' work), "
            "a module class, or a predicate `lambda layer: ...`."
        )
    return selection
