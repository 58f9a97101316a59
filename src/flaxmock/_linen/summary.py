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


def _owned(layer: _layer.FlaxCallLayer, seen: set[Any]) -> tuple[int, int]:
    """Parameters this layer owns (each shared parameter counted at its first call only)."""
    count = nbytes = 0
    for col, path, value, var in _assemble.own_variables(layer):
        if col != "params":
            continue
        # Every layer that uses a Flax parameter holds it under the same label.
        ident = getattr(var, "label", None) or (layer.info.scope_path, path)
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
    rows: list[_table.CallRow] = []

    def visit(layer: Any, parent: _layer.FlaxCallLayer | None, key: Any) -> None:
        if isinstance(layer, _layer.FlaxCallLayer):
            rows.append(_row(layer, layer.info, _transform_note(layer.info), _owned(layer, seen)))
            for child_key, child in layer.submodule_calls.items():
                visit(child, layer, child_key)
        elif isinstance(layer, _layer.ReplacementLayer):
            replaced = layer.replaced()
            note = ", ".join(filter(None, [layer.summary_note(), _transform_note(replaced.info)]))
            rows.append(_row(replaced, replaced.info, note))
        else:
            # Any other penzai layer put in by tree surgery: named by its key in the parent.
            path = _layer.replaced_path(parent, key, layer) if parent is not None else ()
            rows.append(
                _table.CallRow(
                    path="/".join(path) or "<root>",
                    module_type=type(layer).__name__,
                    method=key[1].rsplit(".", 1)[-1] if key is not None else "__call__",
                    inputs=None,
                    outputs=None,
                    param_count=0,
                    param_bytes=0,
                    note=f"replaced by {type(layer).__name__}",
                )
            )

    visit(tree, None, None)
    if title is None:
        # The root's row names the root module (or the inserted layer's type).
        title = rows[0].module_type
    return _table.Summary(rows=rows, title=title)


def _row(
    call: Any, info: _layer.CallInfo, note: str, params: tuple[int, int] = (0, 0)
) -> _table.CallRow:
    """The row of a converted call, or of a replaced one (``call`` a ``ReplacedCall``)."""
    return _table.CallRow(
        path=info.path_str,
        module_type=type(call.module).__name__,
        method=call.method_name,
        inputs=info.in_spec,
        outputs=info.out_spec,
        param_count=params[0],
        param_bytes=params[1],
        note=note,
    )
