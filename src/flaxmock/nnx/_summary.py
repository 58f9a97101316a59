"""``summary`` for NNX models: one row per module method call, from interception, abstractly.

The call runs under :func:`flaxmock.nnx.eval_shape` (nothing computed or allocated, the model
untouched) inside :func:`flaxmock.nnx.intercept_methods`; each intercepted call becomes a
:class:`~flaxmock.CallRow` in the order calls *start* (a parent before its children), as the
linen ``summary`` orders them.

Lifted transforms (``nnx.scan``, ``nnx.vmap``, ``nnx.remat``) call fresh copies of the modules
passed to them. Each variable of the traced model carries a tag in its metadata (which the
copies keep) naming its path, so a copy's rows are named after the original module; comparing
the copy's shapes with the original's gives the ``scan x3`` note.

Costs (``flops=``, ``vjp_flops=``) come from ``flaxmock.nnx._costs``, which traces each
recorded call again alone; bytes per device (``mesh=``) from the variables' sharding metadata.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
from flax import nnx

from flaxmock._core import costs as _costs
from flaxmock._core import errors as _errors
from flaxmock._core import specs as _specs
from flaxmock._core import table as _table
from flaxmock.nnx import _abstract as _nnx_abstract
from flaxmock.nnx import _costs as _nnx_costs
from flaxmock.nnx import _intercept as _nnx_intercept
from flaxmock.nnx import _mock as _nnx_mock
from flaxmock.nnx import _shapes as _nnx_shapes

# The variable metadata key under which a summary tags its traced copy's variables.
_TAG = "flaxmock_summary_path"


class _NotCalled:
    """The inputs and outputs of a row for a module the call never called (shown ``-``)."""

    def __repr__(self) -> str:
        return "-"


NOT_CALLED = _NotCalled()


def _owned_params(
    model: Any, sizes: dict[str, int] | None = None, rules: Any = None
) -> dict[str, tuple[int, int, int]]:
    """``path -> (count, bytes, bytes per device)`` of the ``nnx.Param`` each module owns.

    A module's own parameters, not its children's; bytes per device are 0 without ``sizes``.
    """
    module_paths = {path for path, _ in _nnx_shapes.iter_module_paths(model)}
    owned: dict[str, tuple[int, int, int]] = {}
    for path, var in _nnx_shapes.iter_variables(model):
        if not isinstance(var, nnx.Param):
            continue
        owner = path[:-1]
        while owner and owner not in module_paths:
            owner = owner[:-1]
        value = var.get_value()
        size = int(np.prod(value.shape))
        device = 0
        if sizes is not None:
            spec = _nnx_costs.partition_spec(var, rules)
            where = _nnx_shapes.path_str(path)
            device = _costs.device_bytes(value.shape, value.dtype, spec, sizes, path=where)
        count, nbytes, on_device = owned.get(_nnx_shapes.path_str(owner), (0, 0, 0))
        owned[_nnx_shapes.path_str(owner)] = (
            count + size,
            nbytes + size * np.dtype(value.dtype).itemsize,
            on_device + device,
        )
    return owned


def summary(
    model: nnx.Module,
    *args: Any,
    method: str | Callable[..., Any] = "__call__",
    flops: bool = False,
    vjp_flops: bool = False,
    mesh: Any = None,
    rules: Any = None,
    depth: int | None = None,
    title: str | None = None,
    **kwargs: Any,
) -> _table.Summary:
    """Returns the table of every module method call made by ``model(*args, **kwargs)``.

    One row per call, in call order: the module's path (``/``-joined attribute names and list
    indices), its class, the method, the input and output specs, and the number and bytes of the
    parameters (``nnx.Param``) the module owns itself, so that the rows add up to the model's total.
    A module that owns parameters and is never called (the model reads
    ``self.embedder.embedding[...]`` directly, or never uses it) gets a row after the calls, with
    method, inputs and outputs ``-`` and the note ``not called``: ``total_params`` is always the
    count of ``nnx.state(model, nnx.Param)``. Helper methods (``self.encode(x)``) and Flax's
    built-in modules get their own rows; mocks are marked ``mocked``. The call is shape-evaluated:
    it works on abstract models (:func:`flaxmock.nnx.abstract`), allocates nothing, and leaves
    ``model`` untouched. The body of an ``nnx.scan``/``nnx.vmap`` over a layer stack is listed with
    per-layer (per lane) shapes, its rows named after the stack's modules, its parameters counted
    for all layers, and a note ``scan x3``/``vmap x3`` (as the linen summary notes lifted
    transforms); it appears as often as JAX traces it (usually once). Bodies JAX traced before, e.g.
    of a method decorated with ``@nnx.scan``, are traced anew so that none is missing.

    Costs are opt-in, and counted as :func:`flaxmock.summary` counts them: with
    ``flops=True`` each row gets the forward FLOPs of its own work (``flops``) and of its
    subtree (``subtree_flops``), from XLA's cost analysis of the call traced alone on abstract
    inputs with its calls stubbed (nothing computed, compiled or allocated; it works on
    abstract models, unlike ``nnx.tabulate``). A call counts once per step of the ``nnx.scan``
    (or ``fori_loop`` with a static trip count) it runs in and once per lane of an
    ``nnx.vmap`` that batches it. ``vjp_flops=True`` adds the backward pass, with the
    recompute of ``nnx.remat``. Unknowable figures (``while_loop``, ``cond`` branches) are
    None, and so are the totals above them. With ``mesh`` each row gets the bytes of its own
    parameters per device, from their sharding metadata (``nnx.with_partitioning``) through
    ``rules``.

    Args:
      model: An ``nnx.Module``, real or abstract, possibly mocked.
      *args: Positional arguments: arrays, ``jax.ShapeDtypeStruct`` or Python values.
      method: The method to call, by name, or a function ``(module, *args, **kwargs)``.
      flops: Compute forward FLOPs (and XLA's bytes accessed) per call.
      vjp_flops: Compute backward-pass FLOPs per call.
      mesh: A ``jax.sharding.Mesh``, a ``jax.sharding.AbstractMesh`` or a mapping of axis
        names to sizes (``{"data": 2, "model": 4}``): compute parameter bytes per device.
      rules: Logical axis rules for the variables' sharding names (default: the
        ``flax.core.spmd.logical_axis_rules`` context).
      depth: Fold the calls deeper than ``depth`` into their callers (their parameters and
        costs add to the caller's row); None keeps every row.
      title: A title for the table (default: the model's class name).
      **kwargs: Keyword arguments, as ``args``.

    Returns:
      A :class:`~flaxmock.Summary` (the type the linen :func:`flaxmock.summary` returns);
      ``print`` it.

    Raises:
      InvalidArgumentError: ``model`` is not an ``nnx.Module``, or ``mesh`` or ``depth`` is of
        the wrong kind.
      ShardParametersError: a parameter's sharding names an axis the mesh lacks.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from flaxmock.nnx import abstract, summary
      >>> model = abstract(lambda: nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0))))
      >>> print(summary(model, jax.ShapeDtypeStruct((2, 3), jnp.float32)))
      Sequential
      #  path      module      method    inputs    outputs   params  bytes  note
      -  --------  ----------  --------  --------  --------  ------  -----  ----
      0  <root>    Sequential  __call__  f32[2,3]  f32[2,4]       -      -
      1  layers/0  Linear      __call__  f32[2,3]  f32[2,4]      16   64 B
         total                                                   16   64 B
      >>> s = summary(model, jax.ShapeDtypeStruct((2, 3), jnp.float32), flops=True)
      >>> [row.flops for row in s.rows], s.total_flops  # 2 * batch * in * out + bias adds
      ([0, 56], 56)
    """
    if not isinstance(model, nnx.Module):
        raise _errors.InvalidArgumentError(
            f"summary expects an nnx.Module, got {type(model).__name__}. For a linen model, "
            "use flaxmock.summary(flaxmock.unflaxify(model, *args))."
        )
    sizes = None if mesh is None else _costs.mesh_axis_sizes(mesh)
    priced = flops or vjp_flops
    owned = _owned_params(model, sizes, rules)
    rows: list[_table.CallRow | None] = []
    recorded: list[_nnx_costs.Recorded] = []
    paths: dict[int, _nnx_shapes.Path] = {}
    notes: dict[int, str] = {}
    shapes: dict[_nnx_shapes.Path, tuple[int, ...]] = {}
    known: list[tuple[_nnx_shapes.Path, type]] = []
    # (path, note, row) of the calls running.
    active: list[tuple[_nnx_shapes.Path, str, int]] = []
    # Ids key the dicts above: the modules stay alive until the summary ends so that no id is
    # reused by a later copy.
    alive: list[Any] = []
    # A fresh object per summary, put in every variable's metadata: it changes the graph
    # definitions the model's lifted transforms see, so that JAX traces their bodies anew
    # (a body traced before, e.g. a method decorated with `@nnx.scan` called earlier with the
    # same shapes, would otherwise come from JAX's cache, its calls unseen). JAX keeps one
    # cached trace per summary and transformed function.
    token = object()

    def register(root: Any, prefix: _nnx_shapes.Path) -> None:
        alive.append(root)
        for path, module in _nnx_shapes.iter_module_paths(root):
            paths.setdefault(id(module), (*prefix, *path))

    def on_merge(copy: Any) -> None:
        register(copy, ())
        known.extend(
            (path, _nnx_abstract.public_type(module))
            for path, module in _nnx_shapes.iter_module_paths(copy)
        )
        for path, var in _nnx_shapes.iter_variables(copy):
            shapes[path] = tuple(np.shape(var.get_value()))
            var.set_metadata(_TAG, (token, path))

    def original_path(module: Any) -> _nnx_shapes.Path | None:
        # Lifted transforms (nnx.scan, nnx.vmap, nnx.remat) call a fresh copy of a submodule;
        # its variables keep their metadata, so the tag names the original.
        for rel, var in _nnx_shapes.iter_variables(module):
            tag = var.get_metadata(_TAG, None)
            if (
                isinstance(tag, tuple)
                and tag[0] is token
                and tag[1][len(tag[1]) - len(rel) :] == rel
            ):
                return tag[1][: len(tag[1]) - len(rel)]
        # A module without variables: the one module of its class under the calling module.
        parent = active[-1][0] if active else ()
        kind = _nnx_abstract.public_type(module)
        found = {path for path, other in known if path[: len(parent)] == parent and other is kind}
        return found.pop() if len(found) == 1 else None

    def stack_note(module: Any, prefix: _nnx_shapes.Path) -> str | None:
        """``scan x3`` for a copy whose variables lost the leading layer axis of the original's.

        None when ``module`` has no variable to tell by.
        """
        for rel, var in _nnx_shapes.iter_variables(module):
            value = var.get_value()
            before = shapes.get((*prefix, *rel))
            if before is None or (not before and not np.ndim(value)):
                continue
            if before[1:] == tuple(np.shape(value)):
                # A vmap body sees batch tracers; a scan body sees per-step values.
                kind = "vmap" if type(value).__name__ == "BatchTracer" else "scan"
                return f"{kind} x{before[0]}"
            return ""
        return None

    def path_of(module: Any) -> str:
        if id(module) not in paths:
            found = original_path(module)
            if found is None:
                return f"<{_nnx_abstract.public_type(module).__name__}>"
            register(module, found)
            # Modules without variables take the note of their parent in the copy.
            inherited = {(): active[-1][1] if active else ""}
            for rel, child in _nnx_shapes.iter_module_paths(module):
                note = stack_note(child, (*found, *rel))
                if note is None:
                    note = next(
                        inherited[rel[:k]] for k in range(len(rel), -1, -1) if rel[:k] in inherited
                    )
                inherited[rel] = note
                notes.setdefault(id(child), note)
        return _nnx_shapes.path_str(paths[id(module)])

    def record(next_fun: Any, call_args: Any, call_kwargs: Any, context: Any) -> Any:
        module = context.module
        path = path_of(module)
        stacked = notes.get(id(module), "")
        mocked = isinstance(module, _nnx_mock.MockModule)
        if mocked:
            module_type, note, params = module.info.module_type.__name__, "mocked", (0, 0, 0)
        else:
            module_type = _nnx_abstract.public_type(module).__name__
            # A module seen twice (a helper method, a shared module) counts its parameters at
            # its first call only, so that the rows add up.
            note, params = "", owned.pop(path, (0, 0, 0))
        note = ", ".join(part for part in (note, stacked) if part)
        index = len(rows)
        rows.append(None)
        inputs = _specs.specs_of((tuple(call_args), dict(call_kwargs)))
        if priced:
            graphdef, state = (None, None) if mocked else _nnx_costs.capture(module)
            recorded.append(
                _nnx_costs.Recorded(
                    active[-1][2] if active else None, graphdef, state, context.method_name, inputs
                )
            )
        depth_here = len(active)
        active.append((paths.get(id(module), ()), stacked, index))
        try:
            out = next_fun(*call_args, **call_kwargs)
        finally:
            active.pop()
        outputs = _specs.specs_of(out)
        if priced:
            recorded[index].outputs = outputs
        rows[index] = _table.make_row(
            path=path,
            module_type=module_type,
            method=context.method_name,
            inputs=inputs,
            outputs=outputs,
            param_count=params[0],
            param_bytes=params[1],
            note=note,
            depth=depth_here,
            mocked=mocked,
            device_param_bytes=params[2] if sizes is not None else None,
        )
        return out

    def run(copy: Any, /, *call_args: Any, **call_kwargs: Any) -> Any:
        on_merge(copy)
        return _nnx_shapes.bound_method(copy, method)(*call_args, **call_kwargs)

    with _nnx_intercept.intercept_methods(record):
        _nnx_shapes.eval_shape(run, model, *args, **kwargs)
    done = [row for row in rows if row is not None]
    if priced:
        done = _with_costs(done, recorded, flops, vjp_flops)
    # Modules whose parameters the call reads without calling them (`self.embedder.embedding[
    # ...]`) or never uses: one row each, so that the total is the model's parameter count.
    by_path = {
        _nnx_shapes.path_str(path): module for path, module in _nnx_shapes.iter_module_paths(model)
    }
    zero = 0 if priced else None
    for path, params in owned.items():
        done.append(
            _table.make_row(
                path=path,
                module_type=_nnx_abstract.public_type(by_path[path]).__name__,
                method="-",
                inputs=NOT_CALLED,
                outputs=NOT_CALLED,
                param_count=params[0],
                param_bytes=params[1],
                note="not called",
                depth=1,
                mocked=False,
                flops=zero if flops else None,
                vjp_flops=zero if vjp_flops else None,
                device_param_bytes=params[2] if sizes is not None else None,
            )
        )
    if title is None:
        title = _nnx_abstract.public_type(model).__name__
    return _table.finish(
        done,
        title=title,
        flops=flops,
        vjp_flops=vjp_flops,
        device_bytes=sizes is not None,
        depth=depth,
    )


def _with_costs(
    rows: list[_table.CallRow], recorded: list[_nnx_costs.Recorded], flops: bool, vjp_flops: bool
) -> list[_table.CallRow]:
    """The rows with their costs (every call traced again alone)."""
    children: list[list[int]] = [[] for _ in recorded]
    for i, rec in enumerate(recorded):
        if rec.parent is not None:
            children[rec.parent].append(i)
    pricer = _costs.Pricer(vjp=vjp_flops)
    priced = _nnx_costs.price(recorded, children, pricer, ignore=frozenset({_TAG}))
    out = []
    for row, (cost, runs) in zip(rows, priced, strict=True):
        if cost is None:
            out.append(row)
            continue
        fwd, vjp, accessed, why = _costs.figures(cost, runs)
        note = ", ".join(part for part in (row.note, why) if part)
        out.append(
            dataclasses.replace(
                row,
                flops=fwd if flops else None,
                vjp_flops=vjp,
                bytes_accessed=accessed,
                note=note,
            )
        )
    return out
