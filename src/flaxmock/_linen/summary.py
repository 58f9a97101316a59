"""``summary``: one row per call of a converted tree, from abstract values alone."""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from penzai import pz

from flaxmock._core import errors as _errors
from flaxmock._core import table as _table
from flaxmock._linen import assemble as _assemble
from flaxmock._linen import layer as _layer
from flaxmock._linen import variables as _vars


def _leaf_size(value: Any) -> tuple[int, int]:
    value = _vars.unbox(value)
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is None or dtype is None:
        return 0, 0
    count = math.prod(shape)
    try:
        itemsize = np.dtype(dtype).itemsize
    except TypeError:
        itemsize = getattr(dtype, "itemsize", 0)
    return count, count * itemsize


def _owned(layer: Any, seen: set[Any]) -> tuple[int, int]:
    """Parameters this layer owns (each shared parameter counted at its first call only)."""
    count = nbytes = 0
    if not isinstance(layer, _layer.FlaxCallLayer):
        return 0, 0
    for col, path, value, label in _assemble.own_variables(layer):
        if col != "params":
            continue
        ident = label or (layer.info.scope_path, path)
        if ident in seen:
            continue
        seen.add(ident)
        for leaf in jax.tree.leaves(value):
            c, b = _leaf_size(leaf)
            count += c
            nbytes += b
    return count, nbytes


def _transform_note(info: Any) -> str:
    """``scan/remat x80`` for the body of lifted transforms, ``nested apply`` for those."""
    if info.nested and info.scope_path and not info.transforms:
        return "nested apply"
    if not info.transforms:
        return ""
    steps = f" x{info.steps}" if info.steps else ""
    return "/".join(info.transforms) + steps


def summary(tree: Any, *, title: str | None = None) -> _table.Summary:
    """Lists every call of a converted tree in call order, with shapes and parameter sizes.

    Everything comes from what the converter recorded and from abstract values: nothing is
    computed or allocated, so it works on a 70-billion-parameter model on a laptop. The body of
    a lifted transform is listed once, with per-step shapes, its transforms and its number of
    steps in the note (``scan/remat x80``); its parameters are counted stacked. A mocked call
    owns no parameters (its row says how many it replaced and its sub-calls are gone), so on a
    partly mocked tree the totals are what :func:`flaxmock.materialize` would allocate.

    Args:
      tree: A tree from :func:`flaxmock.unflaxify`, possibly with mocks.
      title: A title for the table (default: the root module's type).

    Returns:
      A :class:`Summary`: ``print`` it for the table; ``rows`` holds one ``CallRow`` per call.

    Raises:
      InvalidArgumentError: ``tree`` is not a penzai layer.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, flaxmock
      >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
      >>> tree = flaxmock.unflaxify(model, jax.ShapeDtypeStruct((4, 3), jnp.float32))
      >>> s = flaxmock.summary(tree)
      >>> [(row.path, row.module_type, row.param_count) for row in s.rows]
      [('<root>', 'Sequential', 0), ('layers_0', 'Dense', 32), ('layers_2', 'Dense', 18)]
      >>> s.total_params
      50
    """
    if not isinstance(tree, pz.nn.Layer):
        raise _errors.InvalidArgumentError(
            f"summary expects a converted tree (from flaxmock.unflaxify, possibly mocked), got "
            f"{type(tree).__name__}."
        )
    seen: set[Any] = set()
    rows = []
    for _, layer in _layer.iter_layers(tree):
        info = getattr(layer, "info", None)
        note = ""
        in_spec = getattr(info, "in_spec", None)
        out_spec = getattr(info, "out_spec", None)
        if isinstance(layer, _layer.FlaxCallLayer):
            count, nbytes = _owned(layer, seen)
            note = _transform_note(info)
        else:
            count = nbytes = 0
            original = getattr(info, "original", None)
            if info is not None and original is not None:
                mocked_params = sum(
                    _leaf_size(leaf)[0] for leaf in jax.tree.leaves(getattr(info, "variables", {}))
                )
                note = ", ".join(
                    filter(
                        None,
                        [
                            "mocked",
                            f"{_table.format_count(mocked_params)} params not allocated"
                            if mocked_params
                            else "",
                            _transform_note(original.info),
                        ],
                    )
                )
                in_spec = original.info.in_spec
                given = getattr(info, "out", None)
                out_spec = given if given is not None else original.info.out_spec
            else:
                note = f"replaced by {type(layer).__name__}"
        module = getattr(layer, "module", None)
        rows.append(
            _table.CallRow(
                path=getattr(info, "path_str", "?"),
                module_type=type(module).__name__ if module is not None else type(layer).__name__,
                method=getattr(layer, "method_name", "__call__"),
                inputs=in_spec,
                outputs=out_spec,
                param_count=count,
                param_bytes=nbytes,
                note=note,
            )
        )
    if title is None:
        root_module = getattr(tree, "module", None)
        title = type(root_module).__name__ if root_module is not None else type(tree).__name__
    return _table.Summary(rows=rows, title=title)
