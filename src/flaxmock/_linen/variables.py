"""Flax variable dicts: one flat form, ``{(collection, path): value}``, and back.

Every part of the linen front end that walks a variables dict (recording, conversion,
assembling a run's variables, ``materialize``, ``bind``, mocks keeping real state) uses these
helpers, so that paths are spelled and escaped one way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn

Path = tuple[str, ...]


def flatten(tree: Any, prefix: Path = ()) -> dict[Path, Any]:
    """Flattens nested mappings into ``{path: leaf}``; tuples and boxes are leaves."""
    out: dict[Path, Any] = {}
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            out.update(flatten(v, prefix + (str(k),)))
    else:
        out[prefix] = tree
    return out


def flatten_variables(variables: Any, *, skip: tuple[str, ...] = ()) -> dict[tuple[str, Path], Any]:
    """``{(collection, path): leaf}`` of a variables dict, leaving out the ``skip`` collections."""
    out: dict[tuple[str, Path], Any] = {}
    for col, tree in (variables or {}).items():
        if col in skip:
            continue
        for path, leaf in flatten(tree).items():
            out[(col, path)] = leaf
    return out


def set_in(tree: dict, path: Path, value: Any) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def nest(flat: Mapping[tuple[str, Path], Any]) -> dict[str, Any]:
    """The variables dict of a flat ``{(collection, path): leaf}`` (the inverse of flatten)."""
    out: dict[str, Any] = {}
    for (col, path), value in flat.items():
        set_in(out.setdefault(col, {}), path, value)
    return out


def name_of(path: Path) -> str:
    """A variable's name in a layer's scope data: its relative path joined with ``/``.

    A ``/`` inside one key (``nn.SpectralNorm`` stores ``"Dense_0/kernel/u"`` as one key) is
    escaped as ``%2F`` (and ``%`` as ``%25``), so that :func:`path_of` gives the path back.
    """
    return "/".join(str(k).replace("%", "%25").replace("/", "%2F") for k in path)


def path_of(name: str) -> Path:
    """The relative path of a variable named by :func:`name_of`."""
    return tuple(k.replace("%2F", "/").replace("%25", "%") for k in name.split("/"))


def unbox(value: Any) -> Any:
    return value.unbox() if isinstance(value, nn.meta.AxisMetadata) else value
