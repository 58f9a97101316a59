"""``summary``: one row per call of a converted tree, from abstract values alone.

Costs (``flops=``, ``vjp_flops=``) come from ``flaxmock._linen.costs``; bytes per device
(``mesh=``) from the parameters' partitioning metadata.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import nnx
from penzai import pz

from flaxmock._core import costs as _costs
from flaxmock._core import errors as _errors
from flaxmock._core import table as _table
from flaxmock._linen import assemble as _assemble
from flaxmock._linen import costs as _linen_costs
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


def _owned(
    layer: _layer.FlaxCallLayer,
    seen: set[Any],
    sizes: dict[str, int] | None = None,
    rules: Any = None,
) -> tuple[int, int, int, int]:
    """Variables this layer owns (each shared one counted at its first call only).

    Returns ``(parameter count, bytes, parameter bytes per device, bytes of state)``: the bytes
    are those of every variable the layer owns, parameters and state (``batch_stats``, a
    ``cache``), which :func:`flaxmock.materialize` allocates alike; bytes per device are 0
    without mesh axis ``sizes``.
    """
    count = nbytes = device = state = 0
    for col, path, value, var in _assemble.own_variables(layer):
        # Every layer that uses a Flax variable holds it under the same label.
        ident = getattr(var, "label", None) or (layer.info.scope_path, col, path)
        if ident in seen:
            continue
        seen.add(ident)
        for leaf in jax.tree.leaves(value):
            c, b = _leaf_size(leaf)
            nbytes += b
            if col == "params":
                count += c
            else:
                state += b
        if sizes is not None and col == "params":
            spec = _linen_costs.partition_spec(value, rules)
            leaf = _vars.unbox(value)
            where = "/".join((layer.path_str, *path))
            device += _costs.device_bytes(leaf.shape, leaf.dtype, spec, sizes, path=where)
    return count, nbytes, device, state


def _not_called_note(layer: _layer.FlaxCallLayer) -> str:
    """Names the submodules whose variables ``layer`` holds although no call of theirs was seen.

    A module that reads a submodule's variables directly (``self.embed.embedding[ids]``)
    holds them in its own scope data: its row counts them, and this note says whose they are,
    so that the row's figure is not mistaken for the module's own parameters.
    """
    depth = len(layer.info.scope_path)
    called = set()
    for key, child in layer.submodule_calls.items():
        scope = _layer.replaced_path(layer, key, child)
        if len(scope) > depth:
            called.add(scope[depth])
    counts: dict[str, int] = {}
    for col, path, value, _ in _assemble.own_variables(layer):
        if col == "params" and len(path) > 1 and path[0] not in called:
            size = sum(_leaf_size(leaf)[0] for leaf in jax.tree.leaves(value))
            counts[path[0]] = counts.get(path[0], 0) + size
    return ", ".join(
        f"incl. {_table.format_count(n)} params of {name} (not called)"
        for name, n in counts.items()
    )


def _kept_state_bytes(layer: _layer.ReplacementLayer, seen: set[Any]) -> int:
    """Bytes of the state (not parameters) a replacement keeps, each variable counted once."""
    nbytes = 0
    for (col, path), var in _vars.flatten_variables(layer.kept_variables()).items():
        if col == "params":
            continue
        ident = getattr(var, "label", None) or (col, path, id(layer))
        if ident in seen:
            continue
        seen.add(ident)
        nbytes += sum(_leaf_size(leaf)[1] for leaf in jax.tree.leaves(_vars.value_of(var)))
    return nbytes


def _passthrough_note(layer: _layer.FlaxCallLayer) -> str:
    """``"4,096 given params unused by decode, not counted"`` for a root that passes them on."""
    count = sum(
        _leaf_size(leaf)[0]
        for col, _, value, _ in _assemble.passed_through(layer)
        if col == "params"
        for leaf in jax.tree.leaves(value)
    )
    if not count:
        return ""
    return f"{count:,} given params unused by {layer.method_name}, not counted"


def _transform_note(info: Any) -> str:
    """``scan/remat x80`` for the body of lifted transforms, ``nested apply`` for those."""
    if info.nested and info.scope_path and not info.transforms:
        return "nested apply"
    if not info.transforms:
        return ""
    steps = f" x{info.steps}" if info.steps else ""
    return "/".join(info.transforms) + steps


def summary(
    tree: Any,
    *,
    flops: bool = False,
    vjp_flops: bool = False,
    mesh: Any = None,
    rules: Any = None,
    depth: int | None = None,
    title: str | None = None,
) -> _table.Summary:
    """Lists every call of a converted tree in call order, with shapes, sizes and costs.

    Everything comes from what the converter recorded and from abstract values: nothing is
    computed or allocated, so it works on a 70-billion-parameter model on a laptop. The body of
    a lifted transform is listed once, with per-step shapes, its transforms and its number of
    steps in the note (``scan/remat x80``); its parameters are counted stacked. ``bytes`` counts
    every variable a call's module owns, its state (``batch_stats``) included and noted
    (``incl. 512 B state``); ``params`` counts parameters only. A mocked call owns no variables
    (its row says how many parameters it replaced and its sub-calls are gone), so on a partly
    mocked tree ``total_bytes`` is what :func:`flaxmock.materialize` allocates.

    Costs are opt-in (the default table stays as fast as converting). With ``flops=True``
    each row gets the forward FLOPs of its own work (``flops``) and of its subtree
    (``subtree_flops``), from XLA's cost analysis of the call traced alone on abstract inputs
    with its submodule calls stubbed: nothing is computed or compiled, and identical calls
    (the blocks of a model) are analysed once. A call counts once per step of the ``nn.scan``
    it runs in and once per lane of an ``nn.vmap`` that batches it, so the rows add up to the
    model's FLOPs (``total_flops``) whether its layers are scanned or not. ``vjp_flops=True``
    adds the backward pass's FLOPs, with the recompute of ``nn.remat`` bodies. A figure that
    cannot be known without running the model (a loop with a data-dependent trip count, the
    branches of ``nn.cond``) is None, and so are the totals above it: never a wrong number.
    Mocked calls cost nothing and add nothing.

    With ``mesh``, each row gets ``device_param_bytes``: the bytes of its own parameters on
    each device, from their partitioning metadata (``nn.with_partitioning``,
    ``nn.with_logical_partitioning`` through ``rules``), exact arithmetic with no devices.

    Args:
      tree: A tree from :func:`flaxmock.unflaxify`, possibly with mocks.
      flops: Compute forward FLOPs (and XLA's bytes accessed) per call.
      vjp_flops: Compute backward-pass FLOPs per call.
      mesh: A ``jax.sharding.Mesh``, a ``jax.sharding.AbstractMesh`` or a mapping of axis
        names to sizes (``{"data": 2, "model": 4}``): compute parameter bytes per device.
      rules: Logical axis rules for ``nn.with_logical_partitioning`` names, as for
        :func:`flaxmock.materialize` (default: the ``nn.logical_axis_rules`` context).
      depth: Fold the calls deeper than ``depth`` into their callers (their parameters and
        costs add to the caller's row), as torchinfo's ``depth`` does; None keeps every row.
      title: A title for the table (default: the root module's type).

    Returns:
      A :class:`Summary`: ``print`` it for the table; ``rows`` holds one ``CallRow`` per call.

    Raises:
      InvalidArgumentError: ``tree`` is not a penzai layer, or ``mesh`` or ``depth`` is of the
        wrong kind.
      ShardParametersError: a parameter's partitioning names an axis the mesh lacks.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, flaxmock
      >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
      >>> tree = flaxmock.unflaxify(model, jax.ShapeDtypeStruct((4, 3), jnp.float32))
      >>> s = flaxmock.summary(tree)
      >>> [(row.path, row.module_type, row.param_count) for row in s.rows]
      [('<root>', 'Sequential', 0), ('layers_0', 'Dense', 32), ('layers_2', 'Dense', 18)]
      >>> s.total_params
      50
      >>> s = flaxmock.summary(tree, flops=True)
      >>> [row.flops for row in s.rows]  # relu; Dense: 2 * batch * in * out + bias adds
      [32, 224, 136]
      >>> s.total_flops == s.rows[0].subtree_flops == 392
      True
    """
    if not isinstance(tree, pz.nn.Layer):
        if isinstance(tree, nnx.Module):
            fix = " For a Flax NNX model use flaxmock.nnx.summary(model, *args)."
        elif isinstance(tree, nn.Module):
            fix = (
                " Convert the linen module first: "
                "flaxmock.summary(flaxmock.unflaxify(model, *args))."
            )
        else:
            fix = ""
        raise _errors.InvalidArgumentError(
            f"summary expects a converted tree (from flaxmock.unflaxify, possibly mocked), got "
            f"{type(tree).__name__}.{fix}"
        )
    sizes = None if mesh is None else _costs.mesh_axis_sizes(mesh)
    priced: dict[Any, _linen_costs.LayerCost] = {}
    if flops or vjp_flops:
        priced = _linen_costs.tree_costs(tree, _costs.Pricer(vjp=vjp_flops))
    seen: set[Any] = set()
    rows: list[_table.CallRow] = []

    def add(call_path: tuple, fields: dict[str, Any], mocked: bool, device: int = 0) -> None:
        if sizes is not None:
            fields["device_param_bytes"] = device
        if flops or vjp_flops:
            figures, why = _figures(priced[call_path], flops, vjp_flops)
            fields.update(figures)
            if not mocked:
                fields["note"] = ", ".join(part for part in (fields["note"], why) if part)
        rows.append(_table.make_row(depth=len(call_path), mocked=mocked, **fields))

    def visit(layer: Any, parent: _layer.FlaxCallLayer | None, call_path: tuple) -> None:
        if isinstance(layer, _layer.FlaxCallLayer):
            count, nbytes, device, state = _owned(layer, seen, sizes, rules)
            # Bytes include state (BatchNorm statistics), as materialize allocates it: say so.
            state_note = f"incl. {_table.format_bytes(state)} state" if state else ""
            spied = "spied" if hasattr(layer, "records") else ""  # a SpyLayer: runs as it is
            notes = [
                _transform_note(layer.info),
                _passthrough_note(layer),
                state_note,
                _not_called_note(layer),
                spied,
            ]
            note = ", ".join(filter(None, notes))
            fields = _fields(layer, layer.info, note)
            fields.update(param_count=count, param_bytes=nbytes)
            add(call_path, fields, False, device)
            for child_key, child in layer.submodule_calls.items():
                visit(child, layer, (*call_path, child_key))
        elif isinstance(layer, _layer.ReplacementLayer):
            replaced = layer.replaced()
            # A mock keeps the replaced call's state (materialize gives it values): its bytes.
            state = _kept_state_bytes(layer, seen)
            state_note = f"incl. {_table.format_bytes(state)} state" if state else ""
            notes = [layer.summary_note(), _transform_note(replaced.info), state_note]
            fields = _fields(replaced, replaced.info, ", ".join(filter(None, notes)))
            fields.update(param_bytes=state)
            add(call_path, fields, True)
        else:
            # Any other penzai layer put in by tree surgery: named by its key in the parent.
            key = call_path[-1] if call_path else None
            path = _layer.replaced_path(parent, call_path[-1], layer) if parent is not None else ()
            fields = {
                "path": "/".join(path) or "<root>",
                "module_type": type(layer).__name__,
                "method": key[1].rsplit(".", 1)[-1] if key is not None else "__call__",
                "inputs": None,
                "outputs": None,
                "param_count": 0,
                "param_bytes": 0,
                "note": f"replaced by {type(layer).__name__}",
            }
            add(call_path, fields, True)

    visit(tree, None, ())
    if title is None:
        # The root's row names the root module (or the inserted layer's type).
        title = rows[0].module_type
    return _table.finish(
        rows,
        title=title,
        flops=flops,
        vjp_flops=vjp_flops,
        device_bytes=sizes is not None,
        depth=depth,
    )


def _figures(
    priced: _linen_costs.LayerCost, flops: bool, vjp_flops: bool
) -> tuple[dict[str, Any], str]:
    """The cost fields of a row, and why they are unknown (or how they were counted)."""
    if priced.cost is None:
        return (
            {},
            f"cost unknown: {priced.runs.why or priced.why}" if priced.why != "mocked" else "",
        )
    fwd, vjp, accessed, why = _costs.figures(priced.cost, priced.runs)
    fields = {"flops": fwd if flops else None, "vjp_flops": vjp, "bytes_accessed": accessed}
    return fields, why


def _fields(call: Any, info: _layer.CallInfo, note: str) -> dict[str, Any]:
    """The row fields of a converted call, or of a replaced one (``call`` a ``ReplacedCall``)."""
    return {
        "path": info.path_str,
        "module_type": type(call.module).__name__,
        "method": call.method_name,
        "inputs": info.in_spec,
        "outputs": info.out_spec,
        "param_count": 0,
        "param_bytes": 0,
        "note": note,
    }
