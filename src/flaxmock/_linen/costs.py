"""The linen side of costs: each layer's own work traced alone, its children stubbed.

``flaxmock._core.costs`` prices a function and reads where its stubs run; this module supplies,
for every converted layer, the function to price: the layer's ``module.apply`` on abstract
variables and its recorded input specs, under an interceptor (following ``walk``'s rules, like
the dispatcher) that replaces each submodule call by a stub of the child's recorded output.

Layers are priced top-down. A child's variables are read from its caller's trace, at the stub
(``module.variables`` as the child sees them): inside ``nn.scan``/``nn.vmap`` those are one
step's or one lane's, so a lifted body and everything below it are traced with the shapes they
really run with, and a nested ``module.apply``'s callees with the variables it passed.

Parameter bytes per device come from the partitioning metadata (``nn.Partitioned``'s mesh
axes, ``nn.LogicallyPartitioned``'s logical axes through the rules) and the mesh's axis sizes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import flax.linen as nn
import jax

from flaxmock._core import costs as _costs
from flaxmock._core import specs as _specs
from flaxmock._linen import assemble as _assemble
from flaxmock._linen import layer as _layer
from flaxmock._linen import walk as _walk

CallPath = tuple[tuple[int, str], ...]


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """A layer's own cost per execution and how often it runs (``None`` cost: not priced)."""

    cost: _costs.CallCost | None
    runs: _costs.Runs
    why: str = ""


class _Stubber:
    """The interceptor of one layer's trace: its own work runs, its submodule calls are stubs."""

    def __init__(self, layer: _layer.FlaxCallLayer):
        self.layer = layer
        self.walk = _walk.Walk(layer)
        self.ordinal = {key: i for i, key in enumerate(layer.submodule_calls)}
        # Child number -> the specs of the variables the child saw.
        self.views: dict[int, Any] = {}

    def __call__(self, next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
        if _walk.is_isolated():
            return next_fun(*args, **kwargs)
        kind = self.walk.classify(context)
        if kind == _walk.SETUP:
            return next_fun(*args, **kwargs)
        if kind == _walk.INLINE:
            return self.walk.call_inline(next_fun, args, kwargs, context)
        key = self.walk.next_key(context, advance=kind != _walk.LIFTED)
        node = self.layer.submodule_calls.get(key)
        out_spec = _out_spec(node)
        if node is None or out_spec is None:
            # A call the tree has not seen, or a replacement with no recorded output: its work
            # counts as the caller's own.
            return self.walk.call_inline(next_fun, args, kwargs, context)
        i = self.ordinal[key]
        variables = context.module.variables
        self.views[i] = _specs.specs_of(variables)
        return _costs.stub(i, out_spec, (args, kwargs, variables))


def _out_spec(node: Any) -> Any:
    info = getattr(node, "info", None)
    given = getattr(info, "out", None)
    if given is not None:
        return given
    return getattr(info, "out_spec", None)


def _price(
    layer: _layer.FlaxCallLayer, variables: Any, pricer: _costs.Pricer
) -> tuple[_costs.CallCost, dict[int, Any]]:
    args, kwargs = layer.info.in_spec
    arrays, rebuild = _specs.partition((variables, tuple(args), dict(kwargs)))
    stubbers: list[_Stubber] = []

    def priced(mutable: Any) -> _costs.CallCost:
        def fun(*xs: Any) -> tuple[Any, Any]:
            v, a, kw = rebuild(list(xs))
            stubber = _Stubber(layer)
            stubbers[:] = [stubber]
            with nn.intercept_methods(stubber):
                out, state = layer.module.apply(
                    v,
                    *a,
                    method=layer.info.method,
                    rngs=_layer.default_rngs(),
                    mutable=mutable,
                    **kw,
                )
            return _specs.partition(out)[0], _specs.partition(state)[0]

        return pricer.price(fun, arrays)

    try:
        # ``params`` immutable as in a real apply; everything else may be written (sow,
        # BatchNorm statistics), as the recorder does.
        cost = priced(flax.core.DenyList("params"))
    except jax.errors.ConcretizationTypeError:
        raise
    except Exception:
        # Some lifted transforms fail when only some collections are mutable (see record).
        cost = priced(True)
    return cost, stubbers[0].views if stubbers else {}


def tree_costs(tree: Any, pricer: _costs.Pricer) -> dict[CallPath, LayerCost]:
    """Prices every converted layer of ``tree``; keyed by call path, as ``iter_layers`` yields.

    Args:
      tree: A converted tree, possibly with mocks.
      pricer: The pricer (it caches by jaxpr).

    Returns:
      ``call path -> LayerCost``; mocks and other replacements have no cost.
    """
    out: dict[CallPath, LayerCost] = {}

    def unpriced(layer: Any, path: CallPath, runs: _costs.Runs, why: str) -> None:
        out[path] = LayerCost(None, runs, why)
        for key, child in getattr(layer, "submodule_calls", {}).items():
            unpriced(child, (*path, key), _costs.Runs(None, 0, runs.why or why), why)

    def visit(layer: Any, path: CallPath, variables: Any, runs: _costs.Runs) -> None:
        if not isinstance(layer, _layer.FlaxCallLayer):
            out[path] = LayerCost(None, runs, "mocked")
            return
        if variables is None:
            unpriced(layer, path, runs, runs.why or "not reached by its caller's trace")
            return
        try:
            cost, views = _price(layer, variables, pricer)
        except jax.errors.ConcretizationTypeError:
            # Its output shapes depend on values (given with unflaxify's outs=).
            unpriced(layer, path, _costs.Runs(None, 0, "shapes depend on values"), "")
            return
        except Exception as e:
            e.add_note(
                f"flaxmock: tracing {layer.path_str}.{layer.method_name} alone, to count its "
                "FLOPs, failed. Summarise without flops=/vjp_flops= to get the rest of the table."
            )
            raise
        out[path] = LayerCost(cost, runs)
        for i, (key, child) in enumerate(layer.submodule_calls.items()):
            child_runs = _costs.child_runs(runs, cost.children.get(i))
            visit(child, (*path, key), views.get(i), child_runs)

    if isinstance(tree, _layer.FlaxCallLayer):
        variables = _specs.specs_of(_assemble.assemble(tree, include_replaced=True).variables)
        visit(tree, (), variables, _costs.ROOT_RUNS)
    else:
        out[()] = LayerCost(None, _costs.ROOT_RUNS, "mocked")
    return out


def partition_spec(value: Any, rules: Any) -> Any:
    """The mesh ``PartitionSpec`` of a (possibly boxed) linen variable; ``()`` if it has none.

    ``nn.Partitioned`` names mesh axes; ``nn.LogicallyPartitioned`` names logical axes, mapped
    through ``rules`` (else the box's own rules, else the ``nn.logical_axis_rules`` context)
    as Flax maps them (``nn.logical_to_mesh_axes``).
    """
    if isinstance(value, nn.LogicallyPartitioned):
        if rules is None:
            rules = value.rules if value.rules is not None else nn.get_logical_axis_rules()
        return nn.logical_to_mesh_axes(value.names, rules)
    if isinstance(value, nn.Partitioned):
        return jax.sharding.PartitionSpec(*value.names)
    return jax.sharding.PartitionSpec()
