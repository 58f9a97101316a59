"""The NNX side of costs: each recorded call's own work traced alone, its callees stubbed.

``flaxmock._core.costs`` prices a function and reads where its stubs run. The NNX summary
keeps, for every call it records, the called module as it was at that moment (``nnx.split``
inside the summary's trace: one step's or one lane's variables inside ``nnx.scan`` /
``nnx.vmap``); this module rebuilds that module in a new trace, calls the same method on the
recorded input specs, and replaces each of its direct calls (submodules, helper methods on
itself) by a stub of the matching recorded row's output, in call order.

Parameter bytes per device come from each ``nnx.Variable``'s sharding metadata
(``nnx.with_partitioning``), through the logical axis rules when given.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx
from flax.core import spmd as core_spmd

from flaxmock._core import costs as _costs
from flaxmock._core import specs as _specs
from flaxmock.nnx import _intercept as _nnx_intercept
from flaxmock.nnx import _shapes as _nnx_shapes


@dataclasses.dataclass
class Recorded:
    """A call as the summary saw it, enough to trace it again alone.

    Attributes:
      parent: The row of the calling call, or None for a top-level call.
      graphdef: The called module's graph definition (None for mocks: never priced).
      state: Specs of its state at the call.
      method: The method's name.
      inputs: Specs of the call's ``(args, kwargs)``.
      outputs: Specs of its output.
    """

    parent: int | None
    graphdef: Any
    state: Any
    method: str
    inputs: Any
    outputs: Any = None


def capture(module: Any) -> tuple[Any, Any]:
    """``(graphdef, state specs)`` of a module, inside or outside a trace."""
    graphdef, state = nnx.split(module)
    return graphdef, jax.tree.map(
        _specs.spec_of, state, is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct)
    )


class _Stubber:
    """The interceptor of one call's trace: the call runs, its direct calls are stubs."""

    def __init__(self, outputs: list[Any]):
        self.outputs = outputs
        self.depth = 0
        self.calls = 0

    def __call__(self, next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
        if self.depth == 0:
            self.depth += 1
            try:
                return next_fun(*args, **kwargs)
            finally:
                self.depth -= 1
        i = self.calls
        self.calls += 1
        if i >= len(self.outputs):
            raise _Mismatch
        state = nnx.state(context.module)
        # The callee's own priced function takes the array leaves of the same pytree.
        return _costs.stub(i, self.outputs[i], (state, tuple(args), dict(kwargs)))


class _Mismatch(Exception):
    """The call, traced alone, made other calls than it made in the summary's trace."""


def price(
    rows: list[Recorded],
    children: list[list[int]],
    pricer: _costs.Pricer,
    *,
    ignore: frozenset[str] = frozenset(),
) -> list[tuple[_costs.CallCost | None, _costs.Runs]]:
    """Prices every recorded call (None for mocks) and finds how often each runs.

    Args:
      rows: The recorded calls, in call order.
      children: Each row's direct calls (rows), in call order.
      pricer: The pricer (it caches by jaxpr).
      ignore: Variable metadata keys that do not change what a call computes (the summary's
        own tag), left out when comparing calls.

    Returns:
      ``(own cost per execution, runs)`` per row.
    """
    costs: list[_costs.CallCost | None] = []
    runs: list[_costs.Runs] = []
    # Calls that compute alike (the blocks of a model) are traced once. Comparing graph
    # definitions is not free (the root's holds the whole model): only calls that agree on
    # cheaper features are compared.
    traced: dict[Any, _costs.CallCost] = {}
    rough = [_rough_key(row) for row in rows]
    alike = {k: n for k, n in collections.Counter(rough).items() if n > 1}
    for i, row in enumerate(rows):
        occurrences = None
        if row.parent is None:
            runs.append(_costs.ROOT_RUNS)
        elif costs[row.parent] is None:
            # The caller is a mock: its callees do not run.
            runs.append(_costs.Runs(None, 0, "caller not priced"))
        else:
            parent_cost = costs[row.parent]
            assert parent_cost is not None
            occurrences = parent_cost.children.get(children[row.parent].index(i))
            runs.append(_costs.child_runs(runs[row.parent], occurrences))
        if row.graphdef is None:
            costs.append(None)
            continue
        batched = _costs.batched_inputs(occurrences)
        if batched is None:
            costs.append(_costs.CallCost(None, None, None, {}, "called under different vmaps"))
            continue
        key = None
        if rough[i] in alike:
            key = _key(row, [rows[c] for c in children[i]], ignore, batched)
        cost = traced.get(key) if key is not None else None
        if cost is None:
            cost = _price_one(row, rows, children[i], pricer, batched)
            if key is not None:
                traced[key] = cost
        costs.append(cost)
    return list(zip(costs, runs, strict=True))


def _rough_key(row: Recorded) -> Any:
    """Cheap features that calls computing alike share."""
    leaves = jax.tree.leaves(row.state)
    inputs = jax.tree.leaves(row.inputs, is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct))
    return (
        row.method,
        len(leaves),
        tuple(tuple(x.shape) for x in leaves[:8]),
        tuple(tuple(np.shape(x)) for x in inputs if _specs.is_array(x)),
    )


def _key(row: Recorded, callees: list[Recorded], ignore: frozenset[str], batched: Any) -> Any:
    """A key equal for calls whose traces are equal, or None.

    The module's graph definition compared by structure (less the metadata keys in
    ``ignore``), the state's specs, the method, the input specs, the vmaps it runs under and
    what each callee's stub returns.
    """
    try:
        key = (
            _graph_key(row.graphdef, ignore),
            tuple((tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(row.state)),
            row.method,
            _signature(row.inputs),
            tuple(_signature(c.outputs) for c in callees),
            batched[0],
            tuple((tuple(x.shape), str(x.dtype)) for x in batched[1]),
        )
        hash(key)
    except (_specs.Unkeyable, TypeError):
        return None
    return key


def _graph_key(graphdef: Any, ignore: frozenset[str]) -> Any:
    """A graph definition as a hashable tuple, less the variable metadata keys in ``ignore``.

    Graph definitions compare by structure (node types, static attributes, variable
    metadata); the summary's tag, which names each copy's path, is left out.
    """
    nodes = []
    for node in graphdef.nodes:
        metadata = getattr(node, "metadata", None)
        if isinstance(metadata, Mapping) and ignore & set(metadata):
            rest = tuple((k, v) for k, v in metadata.items() if k not in ignore)
            nodes.append((type(node), node.type, node.index, node.outer_index, rest))
        else:
            nodes.append(node)
    return tuple(nodes), tuple(graphdef.attributes)


def _signature(tree: Any) -> Any:
    signature = _specs.signature_of(tree)
    if signature is None:
        raise _specs.Unkeyable("a static value is not hashable")
    return signature


def _price_one(
    row: Recorded,
    rows: list[Recorded],
    children: list[int],
    pricer: _costs.Pricer,
    batched: tuple[tuple, tuple],
) -> _costs.CallCost:
    args, kwargs = row.inputs
    arrays, rebuild = _specs.partition((row.state, tuple(args), dict(kwargs)))
    batching, batched_avals = batched
    if batching and len(batched_avals) != len(arrays):
        return _costs.CallCost(None, None, None, {}, "its caller passed other inputs")
    graphdef, method = row.graphdef, row.method
    outputs = [rows[c].outputs for c in children]
    stubbers: list[_Stubber] = []

    def fun(*xs: Any) -> tuple[Any, Any]:
        state, a, kw = rebuild(list(xs))
        module = nnx.merge(graphdef, state)
        stubber = _Stubber(outputs)
        stubbers[:] = [stubber]
        with _nnx_intercept.intercept_methods(stubber):
            out = _nnx_shapes.bound_method(module, method)(*a, **kw)
        if stubber.calls != len(outputs):
            raise _Mismatch
        # The state is returned too: what the call writes (statistics, counters) is work.
        return _specs.partition(out)[0], _specs.partition(nnx.state(module))[0]

    try:
        # The pricer traces in a fresh JAX user context, and so does the interceptor: no
        # trace made before (by an ``nnx.jit`` inside the model) hides a child call here.
        return pricer.price(fun, arrays, batching, batched_avals)
    except _Mismatch:
        why = "it makes other calls when traced alone"
    except jax.errors.ConcretizationTypeError:
        why = "shapes depend on values"
    return _costs.CallCost(None, None, None, {}, why)


def partition_spec(var: nnx.Variable, rules: Any) -> Any:
    """The mesh ``PartitionSpec`` of an ``nnx.Variable`` from its sharding metadata."""
    context = core_spmd.logical_axis_rules(rules) if rules is not None else contextlib.nullcontext()
    with context:
        spec = nnx.spmd.get_var_pspec(var)
    return spec if spec is not None else jax.sharding.PartitionSpec()
