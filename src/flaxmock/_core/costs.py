"""What a call costs, from XLA's cost analysis of the call lowered on abstract inputs.

Both summaries price a call the same way: its method is traced alone (``jax.jit(...).trace``
on ``jax.ShapeDtypeStruct`` inputs, so nothing is computed, compiled or allocated) with every
submodule call replaced by a *stub*, a primitive that returns zeros of the child's recorded
output specs at no cost. What remains is the call's *own* work, which is lowered to HLO and
priced by XLA's ``HloCostAnalysis`` (``Lowered.cost_analysis()``, as ``nn.tabulate`` does for
whole calls). The children are priced by their own traces, so each row shows its own cost
and the rows add up.

Where a child runs, and how often, is read from the traced jaxpr rather than guessed from the
transforms' names: every stub bound in the parent's trace is an equation of that jaxpr, inside
the ``scan`` (``nn.scan``, ``nnx.scan``, ``fori_loop`` with a static trip count), ``remat`` or
``cond`` equations that really enclose it. ``vmap`` records in a stub which of its inputs it
batches, and the child is priced under the same vmaps: work that reads only unbatched inputs
(a kernel computed from broadcast parameters) counts once, batched work once per lane, as JAX
computes them. A call whose output nothing uses is dead code: it counts zero times.
XLA counts a loop body once (the bug behind ``nn.tabulate``'s scan figures), so scans of a
call's own work are unrolled in the jaxpr before lowering; a ``while_loop`` with an unknown
trip count makes the figure unknown (None) instead of wrong.

The backward figure (``vjp``) is the cost of ``jax.vjp`` of the call with every inexact input
(parameters included) as a primal and the outputs as cotangents, minus the forward: what a
training step adds to the forward. Stubs pass zero cotangents back to their inputs, so a
call's own backward work upstream of a child is kept. A call under ``remat`` is computed again
in the backward pass once per enclosing ``remat``; that recompute is added to its backward
figure.

Parameter bytes per device (:func:`device_bytes`) are exact arithmetic from a
``PartitionSpec`` and the mesh's axis sizes: no devices are needed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np
from jax._src.interpreters import mlir as mlir_src
from jax._src.interpreters import partial_eval as pe
from jax.interpreters import ad, batching, mlir

from flaxmock._core import errors as _errors
from flaxmock._core import prng as _prng
from flaxmock._core import specs as _specs
from flaxmock._core import traces as _traces

# ---------------------------------------------------------------------------------------------
# The stub primitive.
#
# Params: ``child`` (the child's number in its caller; -1 for the linear stubs of a JVP, -2 for
# the zero cotangents of a transpose), ``out_avals`` (the outputs' avals, batched ones
# included), ``batching`` (the vmaps that batched the stub, innermost first: for each, its size
# and the batch dimension of each input, None where an input is not batched).
#
# A stub lowers to an opaque ``custom_call`` that takes the child's inputs: zeros from a
# constant would be folded into what consumes them (``x + 0`` becomes ``x``, and the caller's
# add disappears) and the work that only feeds the child would be dead code, both before
# XLA's cost analysis sees the module. The module is never compiled, so the call target needs
# no implementation. XLA prices an unknown custom call at -1 FLOPs and -1 bytes; the stubs'
# share is measured once (:func:`_stub_share`) and taken back out.

_stub_p = jex.Primitive("flaxmock_stub")
_stub_p.multiple_results = True


def _zeros(aval: Any) -> jax.Array:
    if jax.dtypes.issubdtype(aval.dtype, jax.dtypes.prng_key):
        impl = aval.dtype._impl
        data = jnp.zeros((*aval.shape, *impl.key_shape), jnp.uint32)
        return jax.random.wrap_key_data(data, impl=impl)
    return jnp.zeros(aval.shape, aval.dtype)


def _stub_impl(*args: Any, child: int, out_avals: tuple, batching: tuple) -> list[jax.Array]:
    del args, child, batching
    return [_zeros(a) for a in out_avals]


def _stub_abstract_eval(*args: Any, child: int, out_avals: tuple, batching: tuple) -> list[Any]:
    del args, child, batching
    return list(out_avals)


def _stub_lowering(ctx: Any, *args: Any, child: int, out_avals: tuple, batching: tuple) -> Any:
    del child, out_avals, batching
    types = [mlir_src.aval_to_ir_type(ctx.module_context, a) for a in ctx.avals_out]
    return mlir_src.custom_call("flaxmock_stub", result_types=types, operands=list(args)).results


def _stub_batch(
    axis_data: Any,
    vals: list[Any],
    dims: list[Any],
    *,
    child: int,
    out_avals: tuple,
    batching: tuple,
) -> tuple[list[Any], list[Any]]:
    if all(d is None for d in dims):
        # Nothing the child reads is batched: JAX computes it once, not once per lane.
        outs = _stub_p.bind(*vals, child=child, out_avals=out_avals, batching=batching)
        return outs, [None] * len(outs)
    size = axis_data.size
    level = (size, tuple(d if d is None or isinstance(d, int) else -1 for d in dims))
    batched = tuple(jax.core.ShapedArray((size, *a.shape), a.dtype) for a in out_avals)
    outs = _stub_p.bind(*vals, child=child, out_avals=batched, batching=(*batching, level))
    return outs, [0] * len(outs)


def _stub_jvp(
    primals: list[Any], tangents: list[Any], *, child: int, out_avals: tuple, batching: tuple
) -> tuple[list[Any], list[Any]]:
    outs = _stub_p.bind(*primals, child=child, out_avals=out_avals, batching=batching)
    # The tangent outputs depend linearly on the tangent inputs through a linear stub, so that
    # the caller's backward work upstream of the child is not pruned as dead; their cotangents
    # are opaque zeros (the child's own backward is priced by the child's trace).
    ins = [ad.instantiate_zeros(t) for t, p in zip(tangents, primals, strict=True) if _inexact(p)]
    inexact = tuple(a for a in out_avals if _inexact(a))
    lin = iter(_stub_p.bind(*ins, child=-1, out_avals=inexact, batching=()) if ins else ())
    out_tangents = []
    for a in out_avals:
        if ins and _inexact(a):
            out_tangents.append(next(lin))
        else:
            out_tangents.append(ad.Zero(a.to_tangent_aval()))
    return outs, out_tangents


def _stub_transpose(
    cts: Any, *args: Any, child: int, out_avals: tuple, batching: tuple
) -> list[Any]:
    del child, out_avals, batching
    # The zero cotangents take the incoming ones as operands: the caller's backward work that
    # produced those would otherwise be dead code, and be dropped before it is counted.
    live = [ct for ct in cts if type(ct) is not ad.Zero]
    wanted = tuple(a.aval for a in args if ad.is_undefined_primal(a))
    zeros = iter(_stub_p.bind(*live, child=-2, out_avals=wanted, batching=()))
    return [next(zeros) if ad.is_undefined_primal(a) else None for a in args]


_stub_p.def_impl(_stub_impl)
_stub_p.def_abstract_eval(_stub_abstract_eval)
batching.fancy_primitive_batchers[_stub_p] = _stub_batch
ad.primitive_jvps[_stub_p] = _stub_jvp
ad.primitive_transposes[_stub_p] = _stub_transpose
mlir.register_lowering(_stub_p, _stub_lowering)


def _inexact(x: Any) -> bool:
    return jnp.issubdtype(getattr(x, "dtype", np.int32), jnp.inexact)


def _is_leaf_spec(x: Any) -> bool:
    return isinstance(x, jax.ShapeDtypeStruct)


def stub(child: int, out_spec: Any, inputs: Any) -> Any:
    """Stands for the call of a child: zeros of ``out_spec``, priced at nothing.

    Args:
      child: The child's number among its caller's calls (matched in :class:`CallCost`).
      out_spec: The child's output: a pytree of ``jax.ShapeDtypeStruct`` and Python values
        (which are returned as they are).
      inputs: What the child reads: ``(variables, args, kwargs)``, whose array leaves (in the
        order of ``specs.partition``) are the inputs of the child's own priced function. Those
        that are inexact get (zero) cotangents in a VJP; ``vmap`` batches the stub when any is
        batched, and records which, so that the child is priced under the same batching.

    Returns:
      ``out_spec`` with every spec replaced by an array of zeros.
    """
    leaves, treedef = jax.tree.flatten(out_spec, is_leaf=_is_leaf_spec)
    where = [i for i, leaf in enumerate(leaves) if isinstance(leaf, jax.ShapeDtypeStruct)]
    avals = tuple(jax.core.ShapedArray(leaves[i].shape, leaves[i].dtype) for i in where)
    ins = _specs.partition(inputs)[0]
    outs = _stub_p.bind(*ins, child=child, out_avals=avals, batching=())
    for i, value in zip(where, outs, strict=True):
        leaves[i] = value
    return jax.tree.unflatten(treedef, leaves)


# ---------------------------------------------------------------------------------------------
# Reading the traced jaxpr.

# Higher-order primitives that run their jaxpr once per execution of the equation.
_ONCE = frozenset(
    {
        "pjit",
        "jit",
        "closed_call",
        "core_call",
        "named_call",
        "custom_jvp_call",
        "custom_vjp_call",
        "custom_vjp_call_jaxpr",
        "remat2",
        "checkpoint",
    }
)
_REMAT = frozenset({"remat2", "checkpoint"})


@dataclasses.dataclass(frozen=True)
class Occurrence:
    """Where a stub sits in its caller's jaxpr: how often it runs per call of the caller.

    Attributes:
      count: Executions per execution of the caller (the lengths of the scans around it), or
        None when unknown (inside a ``while_loop`` or a branch of ``cond``/``switch``).
      remat: How many ``remat`` (``jax.checkpoint``) equations enclose it: the backward pass
        computes it again once per each.
      why: Why ``count`` is unknown (``"while_loop"``, ``"cond"``), else empty.
      batching: The vmaps around it that batch what it reads (see the stub's params): the
        child is priced under the same vmaps, so that work which does not depend on the
        batched inputs (a kernel computed from broadcast parameters) counts once, as JAX
        computes it.
      avals: Its inputs' avals, batched as the caller batches them.
    """

    count: int | None
    remat: int = 0
    why: str = ""
    batching: tuple = ()
    avals: tuple = ()


def _subjaxprs(params: Mapping[str, Any]) -> Iterator[Any]:
    for value in params.values():
        for item in value if isinstance(value, tuple | list) else (value,):
            if isinstance(item, jex.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jex.Jaxpr):
                yield item


def _occurrences(
    jaxpr: Any,
    count: int | None,
    remat: int,
    why: str,
    found: dict[int, list[Occurrence]],
    own: set[str],
) -> None:
    """Finds the stubs in ``jaxpr`` (recursively); ``own`` collects loops of the own work."""
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if eqn.primitive is _stub_p:
            child = eqn.params["child"]
            if child >= 0:
                avals = tuple(jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars)
                found.setdefault(child, []).append(
                    Occurrence(count, remat, why, eqn.params["batching"], avals)
                )
            continue
        subs = list(_subjaxprs(eqn.params))
        if not subs:
            continue
        if name == "scan":
            inner: tuple[int | None, int, str] = (
                None if count is None else count * int(eqn.params["length"]),
                remat,
                why,
            )
        elif name == "while":
            own.add("while_loop")
            inner = (None, remat, why or "inside a while_loop, whose trip count is unknown")
        elif name == "cond":
            own.add("cond")
            inner = (None, remat, why or "inside a branch of cond/switch, chosen by values")
        elif name in _ONCE:
            inner = (count, remat + (name in _REMAT), why)
        else:
            # Another higher-order primitive (a custom reduction's body, shard_map): XLA prices
            # its own work as it lowers it; a callee inside it runs an unknown number of times.
            inner = (None, remat, why or f"inside {name}, which runs it an unknown number of times")
        for sub in subs:
            _occurrences(sub, *inner, found, own)


#: The occurrences of a call whose output is never used.
DEAD: tuple[Occurrence, ...] = (Occurrence(0, 0, "its output is never used (dead code)"),)


def batched_inputs(occurrences: tuple[Occurrence, ...] | None) -> tuple[tuple, tuple] | None:
    """``(batching, avals)`` to price a child with, or None when its occurrences disagree.

    A child called under different vmaps in one caller (rare: a shared module called inside
    and outside a vmap) has no single batching to be priced under.
    """
    if not occurrences or occurrences == DEAD:
        return (), ()
    first = occurrences[0]
    if any((o.batching, o.avals) != (first.batching, first.avals) for o in occurrences):
        return None
    return (first.batching, first.avals) if first.batching else ((), ())


def _live(jaxpr: Any) -> Any:
    """``jaxpr`` without its dead code (every output and input kept)."""
    try:
        return pe.dce_jaxpr(jaxpr, [True] * len(jaxpr.outvars), instantiate=True)[0]
    except Exception:  # pragma: no cover (a primitive without a DCE rule): keep it all
        return jaxpr


def _unroll_value(value: Any) -> Any:
    if isinstance(value, jex.ClosedJaxpr):
        return value.replace(jaxpr=_unroll(value.jaxpr))
    if isinstance(value, jex.Jaxpr):
        return _unroll(value)
    if isinstance(value, tuple) and any(isinstance(v, jex.ClosedJaxpr | jex.Jaxpr) for v in value):
        return tuple(_unroll_value(v) for v in value)
    return value


def _unroll(jaxpr: Any) -> Any:
    """``jaxpr`` with every ``scan`` fully unrolled, so that XLA counts every step."""
    eqns = []
    for eqn in jaxpr.eqns:
        params = {k: _unroll_value(v) for k, v in eqn.params.items()}
        if eqn.primitive.name == "scan" and int(params["length"]) > 1:
            params["unroll"] = int(params["length"])
        eqns.append(eqn.replace(params=params))
    return jaxpr.replace(eqns=eqns)


# ---------------------------------------------------------------------------------------------
# Pricing.


@dataclasses.dataclass(frozen=True)
class CallCost:
    """The own cost of one execution of a call, and where its children run.

    Attributes:
      flops: Forward FLOPs of the call's own work, or None when unknown.
      vjp_flops: Backward FLOPs of its own work (None when not asked for, or unknown).
      bytes_accessed: XLA's estimate of the bytes its own work reads and writes (unfused
        HLO; the stubs' zeros are not counted), or None.
      children: ``child number -> occurrences`` of the stubs in the call's trace.
      why: Why ``flops`` is unknown, or a remark on how it was counted (``"cond"``: XLA
        counts the costliest branch).
    """

    flops: int | None
    vjp_flops: int | None
    bytes_accessed: int | None
    children: Mapping[int, tuple[Occurrence, ...]]
    why: str = ""


def _cost_dict(lowered: Any) -> dict[str, float]:
    cost = lowered.cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    return dict(cost or {})


@functools.cache
def _stub_share() -> tuple[float, float]:
    """What XLA's cost analysis counts for one stub: ``(flops, bytes)``, measured once."""
    aval = jax.core.ShapedArray((3,), jnp.float32)
    x = jax.ShapeDtypeStruct((3,), jnp.float32)
    lowered = jax.jit(lambda x: _stub_p.bind(x, child=-2, out_avals=(aval,), batching=())).lower(x)
    cost = _cost_dict(lowered)
    return cost.get("flops", 0.0), cost.get("bytes accessed", 0.0)


def _stub_instances(jaxpr: Any) -> int:
    """How many stubs a lowering of ``jaxpr`` holds (a fully unrolled scan, once per step)."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive is _stub_p:
            total += 1
            continue
        inner = sum(_stub_instances(sub) for sub in _subjaxprs(eqn.params))
        if inner and eqn.primitive.name == "scan":
            length, unroll = int(eqn.params["length"]), eqn.params["unroll"]
            if unroll is True or int(unroll) >= length:
                inner *= length
            elif length > 1:
                # Only unrolled scans are lowered here (see _unroll): a rolled one is counted
                # once by XLA, and its stubs with it.
                raise AssertionError(f"scan of {length} steps lowered rolled (unroll={unroll})")
        total += inner
    return total


def _xla(fun: Callable[..., Any], avals: list[Any]) -> tuple[int, int]:
    """``(flops, bytes accessed)`` of ``fun`` lowered on ``avals`` (never compiled)."""
    traced = jax.jit(fun).trace(*avals)
    # Threefry's CPU lowering is a loop (counted once); the unrolled one is counted exactly.
    with _prng.unrolled_threefry():
        lowered = traced.lower()
    cost = _cost_dict(lowered)
    n = _stub_instances(traced.jaxpr.jaxpr)
    share_flops, share_bytes = _stub_share()
    flops = cost.get("flops", 0.0) - n * share_flops
    nbytes = cost.get("bytes accessed", 0.0) - n * share_bytes
    return round(flops), round(nbytes)


def _itemsize(dtype: Any) -> int:
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        impl = dtype._impl
        return 4 * math.prod(impl.key_shape)
    return np.dtype(dtype).itemsize


class Pricer:
    """Prices traced calls, each distinct jaxpr once.

    Calls with the same jaxpr (the 80 identical blocks of a model) cost the same, so the
    lowering and XLA's analysis, which take most of the time, run once per distinct jaxpr.
    One ``Pricer`` serves one summary.
    """

    def __init__(self, *, vjp: bool):
        self.vjp = vjp
        self._cache: dict[tuple[str, int], tuple[int | None, int | None, int | None, str]] = {}

    def price(
        self,
        fun: Callable[..., Any],
        arrays: list[Any],
        batching: tuple = (),
        batched: tuple = (),
    ) -> CallCost:
        """Prices ``fun(*arrays) -> (primary, aux)``; every leaf of both must be an array.

        Only ``primary`` gets cotangents in the backward figure (``aux`` holds what the call
        writes into collections, which no loss reads back).

        Args:
          fun: The call with its children stubbed (:func:`stub`).
          arrays: Its inputs: arrays or ``jax.ShapeDtypeStruct``.
          batching: The vmaps its caller runs it under (:class:`Occurrence`), innermost first;
            ``fun`` is priced under them, on the ``batched`` inputs.
          batched: The inputs' specs as batched, when ``batching`` is given.

        Returns:
          The :class:`CallCost` of one execution (of all its lanes together).
        """
        avals = [jax.ShapeDtypeStruct(np.shape(a), a.dtype) for a in (batched or arrays)]
        n_primary: list[int] = []

        def flat(*xs: Any) -> list[Any]:
            primary, aux = fun(*xs)
            leaves = jax.tree.leaves(primary)
            n_primary[:] = [len(leaves)]
            return leaves + jax.tree.leaves(aux)

        traced: Callable[..., Any] = flat
        for size, dims in batching:
            if any(d == -1 for d in dims):
                return CallCost(None, None, None, {}, "batched in a way not priced (ragged)")
            traced = jax.vmap(traced, in_axes=list(dims), axis_size=size)
        # Traced in a fresh JAX user context: a jit inside the model (``nn.jit``, ``nnx.jit``)
        # is traced anew with the stubs in it, and that trace is never reused by the model's
        # own later calls (which would then compute zeros).
        with _traces.fresh_trace():
            closed = jax.jit(traced).trace(*avals).jaxpr
        found: dict[int, list[Occurrence]] = {}
        own: set[str] = set()
        _occurrences(closed.jaxpr, 1, 0, "", found, own)
        # A call whose output nothing uses is dead code, which XLA removes with the work that
        # only fed it: it runs no time. Its stub is found before, not after, removing it.
        live: dict[int, list[Occurrence]] = {}
        _occurrences(_live(closed.jaxpr), 1, 0, "", live, set())
        children = {k: tuple(live.get(k, ())) or DEAD for k in found}
        key = (str(closed), n_primary[0])
        cached = self._cache.get(key)
        if cached is None:
            cached = self._price(closed, avals, n_primary[0], own)
            self._cache[key] = cached
        flops, vjp_flops, nbytes, why = cached
        return CallCost(flops, vjp_flops, nbytes, children, why)

    def _price(
        self, closed: Any, avals: list[Any], n_primary: int, own: set[str]
    ) -> tuple[int | None, int | None, int | None, str]:
        unknown = sorted(own - {"cond"})
        if unknown:
            # XLA counts a loop body once, whatever the trip count: no figure beats a wrong one.
            return None, None, None, f"its own {', '.join(unknown)} runs an unknown number of times"
        unrolled = closed.replace(jaxpr=_unroll(closed.jaxpr))
        fun = jex.jaxpr_as_fun(unrolled)
        flops, nbytes = _xla(fun, avals)
        why = "cond: costliest branch" if "cond" in own else ""
        if not self.vjp:
            return flops, None, max(nbytes, 0), why
        diff = [i for i, a in enumerate(avals) if _inexact(a)]

        def fwd_bwd(*xs: Any) -> Any:
            def primal(*d: Any) -> tuple[list[Any], list[Any]]:
                full = list(xs)
                for i, x in zip(diff, d, strict=True):
                    full[i] = x
                outs = fun(*full)
                return outs[:n_primary], outs[n_primary:]

            outs, vjp_fn, aux = jax.vjp(primal, *[xs[i] for i in diff], has_aux=True)
            cts = [o if _inexact(o) else np.zeros(np.shape(o), jax.dtypes.float0) for o in outs]
            # The forward's outputs are returned too, so that the forward is the same
            # computation in both figures and the difference is the backward alone.
            return outs, aux, vjp_fn(cts)

        total, _ = _xla(fwd_bwd, avals)
        return flops, max(total - flops, 0), max(nbytes, 0), why


# ---------------------------------------------------------------------------------------------
# Executions: how often each call runs, from its callers' occurrences.


@dataclasses.dataclass(frozen=True)
class Runs:
    """How often a call runs in one forward (and backward) pass of the root.

    Attributes:
      count: Forward executions, or None when unknown.
      recompute: Extra forward executions in the backward pass (``remat``).
      why: Why ``count`` is unknown.
    """

    count: int | None
    recompute: int = 0
    why: str = ""


ROOT_RUNS = Runs(1)


def child_runs(parent: Runs, occurrences: tuple[Occurrence, ...] | None) -> Runs:
    """The :class:`Runs` of a child from its caller's runs and the stubs found for it.

    A child whose stub is not in the caller's jaxpr (its output unused and traced away, or a
    caller that could not be traced) runs an unknown number of times.
    """
    if parent.count is None:
        return Runs(None, 0, parent.why)
    if not occurrences:
        return Runs(None, 0, "not seen in the caller's trace")
    if occurrences == DEAD:
        return Runs(0, 0, DEAD[0].why)
    count = 0
    recompute = 0
    for occ in occurrences:
        if occ.count is None:
            return Runs(None, 0, occ.why)
        count += parent.count * occ.count
        # Computed again when the caller is (recompute), and once per enclosing remat.
        recompute += occ.count * (parent.recompute + parent.count * occ.remat)
    return Runs(count, recompute)


def figures(cost: CallCost, runs: Runs) -> tuple[int | None, int | None, int | None, str]:
    """``(flops, vjp_flops, bytes_accessed, note)`` of a row: every execution together.

    The note says why the figures are unknown, or how they were counted.
    """
    flops, vjp, nbytes = scaled(cost, runs)
    if runs.count is None:
        why = f"cost unknown: {runs.why}"
    elif cost.flops is None:
        why = f"cost unknown: {cost.why}"
    elif runs.count == 0 and runs.why:
        why = runs.why
    else:
        why = cost.why
    return flops, vjp, nbytes, why


def scaled(cost: CallCost, runs: Runs) -> tuple[int | None, int | None, int | None]:
    """``(flops, vjp_flops, bytes_accessed)`` of every execution of a call together."""
    if runs.count is None or cost.flops is None:
        return None, None, None
    flops = runs.count * cost.flops
    vjp = None
    if cost.vjp_flops is not None:
        vjp = runs.count * cost.vjp_flops + runs.recompute * cost.flops
    nbytes = None if cost.bytes_accessed is None else runs.count * cost.bytes_accessed
    return flops, vjp, nbytes


# ---------------------------------------------------------------------------------------------
# Bytes per device.


def mesh_axis_sizes(mesh: Any) -> dict[str, int]:
    """``{axis name: size}`` of a ``jax.sharding.Mesh``, an ``AbstractMesh`` or a mapping.

    Raises:
      InvalidArgumentError: ``mesh`` is none of these.
    """
    if isinstance(mesh, Mapping):
        sizes = dict(mesh)
    elif hasattr(mesh, "shape") and hasattr(mesh, "axis_names"):
        sizes = dict(mesh.shape)
    else:
        raise _errors.InvalidArgumentError(
            f"mesh= expects a jax.sharding.Mesh, a jax.sharding.AbstractMesh or a mapping of "
            f"axis names to sizes ({{'data': 2, 'model': 4}}), got {type(mesh).__name__}: "
            f"{mesh!r:.80}."
        )
    bad = {k: v for k, v in sizes.items() if not isinstance(v, int) or v < 1}
    if bad:
        raise _errors.InvalidArgumentError(f"mesh= axis sizes must be positive ints, got {bad!r}.")
    return {str(k): int(v) for k, v in sizes.items()}


def device_bytes(
    shape: tuple[int, ...], dtype: Any, spec: Any, sizes: Mapping[str, int], *, path: str
) -> int:
    """Bytes of one device's shard of an array partitioned by ``spec`` over a mesh.

    A dimension split over mesh axes of total size ``n`` holds ``ceil(dim / n)`` elements per
    device (XLA pads uneven shards); every device holds a shard of the same shape.

    Args:
      shape: The array's shape.
      dtype: Its dtype.
      spec: A ``jax.sharding.PartitionSpec`` (or tuple) of mesh axis names, ``None`` for a
        replicated dimension, a tuple of names for a dimension split over several axes.
      sizes: The mesh's axis sizes (:func:`mesh_axis_sizes`).
      path: The variable's path, named in errors.

    Returns:
      The bytes.

    Raises:
      ShardParametersError: ``spec`` names an axis the mesh does not have, has more entries
        than ``shape`` has dimensions, or uses a mesh axis twice.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jax.sharding import PartitionSpec as P
      >>> device_bytes((1024, 4096), jnp.bfloat16, P("data", "model"), {"data": 2, "model": 4},
      ...              path="w")
      1048576
      >>> device_bytes((10,), jnp.float32, P("model"), {"model": 4}, path="b")  # ceil(10/4)
      12
    """
    entries = tuple(spec) if spec is not None else ()
    if len(entries) > len(shape):
        raise _errors.ShardParametersError(
            f"{path}: the partition spec {spec} has {len(entries)} entries for an array of "
            f"shape {tuple(shape)}. Fix: give one entry (or None) per dimension in the "
            "variable's partitioning metadata."
        )
    used: list[str] = []
    elements = 1
    for i, dim in enumerate(shape):
        entry = entries[i] if i < len(entries) else None
        names = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
        split = 1
        for name in names:
            if name not in sizes:
                raise _errors.ShardParametersError(
                    f"{path}: the partition spec {spec} names the axis {name!r}, which the "
                    f"mesh {dict(sizes)} does not have. Fix: 1. add the axis to the mesh; "
                    "2. if it is a logical axis name (nn.with_logical_partitioning, NNX "
                    "sharding names), pass rules= mapping it to mesh axes, e.g. "
                    f"rules=[({name!r}, {next(iter(sizes), 'data')!r})]."
                )
            if name in used:
                raise _errors.ShardParametersError(
                    f"{path}: the partition spec {spec} uses the mesh axis {name!r} twice. "
                    "Fix: map each mesh axis to at most one dimension (check rules=)."
                )
            used.append(name)
            split *= sizes[name]
        elements *= -(-int(dim) // split)
    return elements * _itemsize(dtype)
