"""The linen side of costs: each layer's own work traced alone, its children stubbed.

``flaxmock._core.costs`` prices a function and reads where its stubs run; this module supplies,
for every converted layer, the function to price: the layer's ``module.apply`` on abstract
variables and its recorded input specs, under an interceptor (following ``walk``'s rules, like
the dispatcher) that replaces each submodule call by a stub of the child's recorded output.

Layers are priced top-down, each on the variables it runs with. Outside lifted transforms
those are what a run of the layer alone assembles (``assemble``: shared modules adopted where
Flax adopts them). Inside ``nn.scan``/``nn.vmap`` and nested ``module.apply`` calls they are
read from the caller's trace, at the stub (``module.variables`` as the child sees them): one
step's or one lane's, or those the nested apply passed, so a lifted body and everything below
it are traced with the shapes they really run with.

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
from flaxmock._linen import variables as _vars
from flaxmock._linen import walk as _walk

CallPath = tuple[tuple[int, str], ...]


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """A layer's own cost per execution and how often it runs (``None`` cost: not priced)."""

    cost: _costs.CallCost | None
    runs: _costs.Runs
    why: str = ""


def _alone(layer: _layer.FlaxCallLayer) -> bool:
    """Whether the layer is priced by applying its module alone (``module.apply(method=...)``).

    The body of a lifted transform is not: the transform is what decides how its work runs
    (``nn.vmap`` batches only what reads batched values, ``nn.map_variables`` changes the
    variables it sees, ``nn.remat`` computes it again, and a transform of a method or function,
    such as ``nn.RNN``'s ``scan_fn`` or an ``@nn.scan`` method, is recorded under a name that
    applies the transform again, or is no method at all). It runs through its caller's trace,
    where the transform really applies, and its own work is what it adds there.
    """
    if layer.info.transforms:
        return False
    method = layer.info.method
    if isinstance(method, str):
        return callable(getattr(type(layer.module), method, None))
    return callable(method)


class _Stubber:
    """The interceptor of one layer's trace: its own work runs, its submodule calls are stubs.

    Calls that cannot be applied on their own (see :func:`_alone`) run through, their own calls
    stubbed in turn, unless named in ``stubbed``; their work is told apart by a second trace
    with them stubbed. Stubs are numbered by call path relative to the layer.
    """

    def __init__(self, layer: _layer.FlaxCallLayer, stubbed: frozenset[CallPath] = frozenset()):
        self.walk = _walk.Walk(layer)
        self.stubbed = stubbed
        self.paths: dict[int, CallPath] = {id(layer): ()}
        # Call path -> stub number, and the specs of the variables the call saw.
        self.ids: dict[CallPath, int] = {}
        self.views: dict[CallPath, Any] = {}
        # Calls run through, in the order met.
        self.through: list[CallPath] = []

    def __call__(self, next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
        if _walk.is_isolated():
            return next_fun(*args, **kwargs)
        kind = self.walk.classify(context)
        if kind == _walk.SETUP:
            return next_fun(*args, **kwargs)
        if kind == _walk.INLINE:
            return self.walk.call_inline(next_fun, args, kwargs, context)
        parent = self.walk.top.payload
        key = self.walk.next_key(context, advance=kind != _walk.LIFTED)
        node = parent.submodule_calls.get(key)
        if node is None:
            # A shared module adopted by this layer when it is applied alone runs under the
            # name of the attribute holding it: the same call number, another name.
            method = key[1].rsplit(".", 1)[-1]
            same = [
                k for k in parent.submodule_calls if k[0] == key[0] and k[1].endswith(f".{method}")
            ]
            if len(same) == 1:
                key = same[0]
                node = parent.submodule_calls[key]
        out_spec = _out_spec(node)
        if node is None or out_spec is None:
            # A call the tree has not seen, or a replacement with no recorded output: its work
            # counts as the caller's own.
            return self.walk.call_inline(next_fun, args, kwargs, context)
        path = (*self.paths[id(parent)], key)
        if isinstance(node, _layer.FlaxCallLayer) and not _alone(node) and path not in self.stubbed:
            self.paths[id(node)] = path
            if path not in self.through:
                self.through.append(path)
            return self.walk.call_child(context.module, node, next_fun, args, kwargs, kind=kind)
        i = self.ids.setdefault(path, len(self.ids))
        variables = context.module.variables
        self.views[path] = _specs.specs_of(variables)
        # The child's own priced function takes the array leaves of the same pytree.
        return _costs.stub(i, out_spec, (variables, tuple(args), dict(kwargs)))


class _MissingVariablesError(Exception):
    """A layer traced alone created parameters: its variables were not all given."""


def _out_spec(node: Any) -> Any:
    info = getattr(node, "info", None)
    given = getattr(info, "out", None)
    if given is not None:
        return given
    return getattr(info, "out_spec", None)


@dataclasses.dataclass(frozen=True)
class _Trace:
    """One priced trace of a layer: its cost, and where each stubbed call ran."""

    cost: _costs.CallCost
    occurrences: dict[CallPath, tuple[_costs.Occurrence, ...]]
    views: dict[CallPath, Any]
    through: list[CallPath]


def _trace(
    layer: _layer.FlaxCallLayer,
    variables: Any,
    pricer: _costs.Pricer,
    stubbed: frozenset[CallPath] = frozenset(),
    batched: tuple[tuple, tuple] = ((), ()),
    inline_jit: bool = False,
) -> _Trace:
    args, kwargs = layer.info.in_spec
    arrays, rebuild = _specs.partition((variables, tuple(args), dict(kwargs)))
    batching, batched_avals = batched
    if batching and len(batched_avals) != len(arrays):
        raise _MissingVariablesError("its caller passed other inputs than it was recorded with")
    stubbers: list[_Stubber] = []

    def priced(mutable: Any) -> _costs.CallCost:
        def fun(*xs: Any) -> tuple[Any, Any]:
            v, a, kw = rebuild(list(xs))
            stubber = _Stubber(layer, stubbed)
            stubbers[:] = [stubber]
            # nn.jit caches its body's trace by module and shapes, not by interceptor: a
            # cached trace would hide the body's calls from the stubber, and one made here,
            # with stubs, would be reused by the model's real runs. Inlined, nothing is cached.
            with nn.intercept_methods(stubber), _walk.jit_bodies_inline(inline_jit):
                out, state = layer.module.apply(
                    v,
                    *a,
                    method=layer.info.method,
                    rngs=_layer.default_rngs(),
                    mutable=mutable,
                    **kw,
                )
            created = set(_vars.flatten(state.get("params", {}))) - set(
                _vars.flatten(v.get("params", {}))
            )
            if created:
                # Created, not found: their initialisers would be priced as the call's work.
                raise _MissingVariablesError(sorted(created))
            return _specs.partition(out)[0], _specs.partition(state)[0]

        return pricer.price(fun, arrays, batching, batched_avals)

    try:
        # ``params`` immutable as in a real apply; everything else may be written (sow,
        # BatchNorm statistics), as the recorder does.
        cost = priced(flax.core.DenyList("params"))
    except (jax.errors.ConcretizationTypeError, _MissingVariablesError):
        raise
    except Exception:
        # Some lifted transforms fail when only some collections are mutable (see record).
        cost = priced(True)
    stubber = stubbers[0]
    occurrences = {path: cost.children.get(i, ()) for path, i in stubber.ids.items()}
    return _Trace(cost, occurrences, stubber.views, stubber.through)


Figures = tuple[int | None, int | None, int | None]  # flops, vjp_flops, bytes_accessed


def _minus(a: Figures, b: Figures) -> Figures:
    f, v, n = (None if x is None or y is None else x - y for x, y in zip(a, b, strict=True))
    return f, v, n


def _difference(a: _costs.CallCost, b: _costs.CallCost) -> Figures:
    return _minus(
        (a.flops, a.vjp_flops, a.bytes_accessed), (b.flops, b.vjp_flops, b.bytes_accessed)
    )


def _per_run(
    total: Figures, occurrences: tuple[_costs.Occurrence, ...] | None, why: str
) -> _costs.CallCost:
    """The cost of one execution of a call run through, from its total in its caller's trace."""
    counts = [o.count for o in occurrences or ()]
    if total[0] is None or not counts or any(c is None for c in counts):
        return _costs.CallCost(None, None, None, {}, why)
    n = sum(c for c in counts if c is not None)
    flops, vjp, nbytes = (None if x is None else round(x / n) for x in total)
    return _costs.CallCost(flops, vjp, nbytes, {}, why)


def tree_costs(tree: Any, pricer: _costs.Pricer) -> dict[CallPath, LayerCost]:
    """Prices every converted layer of ``tree``; keyed by call path, as ``iter_layers`` yields.

    Args:
      tree: A converted tree, possibly with mocks.
      pricer: The pricer (it caches by jaxpr).

    Returns:
      ``call path -> LayerCost``; mocks and other replacements have no cost.
    """
    out: dict[CallPath, LayerCost] = {}
    # Layers that compute alike (the blocks of a model) are traced once: by _layer_key.
    traced: dict[Any, tuple[_Trace, dict[CallPath, Any]]] = {}

    def unpriced(layer: Any, path: CallPath, runs: _costs.Runs, why: str) -> None:
        out[path] = LayerCost(None, runs, why)
        for key, child in getattr(layer, "submodule_calls", {}).items():
            unpriced(child, (*path, key), _costs.Runs(None, 0, runs.why or why), why)

    def node_at(layer: Any, rel: CallPath) -> Any:
        for key in rel:
            layer = layer.submodule_calls[key]
        return layer

    def visit(
        layer: Any,
        path: CallPath,
        view: Any,
        runs: _costs.Runs,
        lifted: bool = False,
        occurrences: tuple[_costs.Occurrence, ...] | None = None,
    ) -> None:
        if not isinstance(layer, _layer.FlaxCallLayer):
            out[path] = LayerCost(None, runs, "mocked")
            return
        lifted = lifted or bool(layer.info.transforms) or layer.info.nested
        variables = view
        if not lifted:
            assembled = _assemble.assemble(layer, include_replaced=True).variables
            variables = _specs.specs_of(assembled)
        if variables is None:
            unpriced(layer, path, runs, runs.why or "not reached by its caller's trace")
            return
        batched = _costs.batched_inputs(occurrences)
        if batched is None:
            unpriced(layer, path, _costs.Runs(None, 0, "called under different vmaps"), "")
            return
        try:
            key = _layer_key(layer, variables, batched)
            found = traced.get(key) if key is not None else None
            if found is None:
                full = _trace(layer, variables, pricer, batched=batched, inline_jit=inline_jit)
                # What each call run through adds: the full trace, less the trace without it.
                added = {
                    rel: (_difference(full.cost, other.cost), other.occurrences.get(rel))
                    for rel in full.through
                    for other in [
                        _trace(layer, variables, pricer, frozenset({rel}), batched, inline_jit)
                    ]
                }
                if key is not None:
                    traced[key] = (full, added)
            else:
                full, added = found
        except jax.errors.ConcretizationTypeError:
            # Its output shapes depend on values (given with unflaxify's outs=).
            unpriced(layer, path, _costs.Runs(None, 0, "shapes depend on values"), "")
            return
        except _MissingVariablesError as e:
            unpriced(layer, path, _costs.Runs(None, 0, f"variables not found: {e}"), "")
            return
        except Exception as e:
            e.add_note(
                f"flaxmock: tracing {layer.path_str}.{layer.method_name} alone, to count its "
                "FLOPs, failed. Summarise without flops=/vjp_flops= to get the rest of the table."
            )
            raise

        def own(rel: CallPath) -> tuple[int | None, int | None, int | None]:
            # A call's own work: what it adds, less what the calls run through inside it add.
            total = full.cost if rel == () else None
            figures: Figures = (
                (total.flops, total.vjp_flops, total.bytes_accessed)
                if total is not None
                else added[rel][0]
            )
            for inner, (contribution, _) in added.items():
                if len(inner) == len(rel) + 1 and inner[: len(rel)] == rel:
                    figures = _minus(figures, contribution)
            return figures

        flops, vjp, nbytes = own(())
        out[path] = LayerCost(_costs.CallCost(flops, vjp, nbytes, {}, full.cost.why), runs)
        for rel, (_, occurrences) in added.items():
            node_runs = _costs.child_runs(runs, occurrences)
            # Its recompute under remat is already in what it adds to its caller's backward.
            node_runs = dataclasses.replace(node_runs, recompute=0)
            out[(*path, *rel)] = LayerCost(_per_run(own(rel), occurrences, ""), node_runs)
        for rel, view in full.views.items():
            # Below a call run through (a transform's body), variables are per step or lane.
            inside = lifted or len(rel) > 1
            occurrences = full.occurrences[rel]
            child_runs = _costs.child_runs(runs, occurrences)
            visit(node_at(layer, rel), (*path, *rel), view, child_runs, inside, occurrences)
        # Calls under a call run through whose stubs never appeared (traced away) are unknown.
        for rel in added:
            for key, child in node_at(layer, rel).submodule_calls.items():
                if (*path, *rel, key) not in out:
                    unpriced(child, (*path, *rel, key), _costs.Runs(None, 0, "not seen"), "")

    inline_jit = any(
        "jit" in getattr(getattr(layer, "info", None), "transforms", ())
        for _, layer in _layer.iter_layers(tree)
    )
    if isinstance(tree, _layer.FlaxCallLayer):
        visit(tree, (), None, _costs.ROOT_RUNS)
    else:
        out[()] = LayerCost(None, _costs.ROOT_RUNS, "mocked")
    return out


_NOT_CONFIG = frozenset({"parent", "name"})


def _layer_key(layer: _layer.FlaxCallLayer, variables: Any, batched: Any) -> Any:
    """A key equal for layers whose traces are equal, or None (then the layer is traced).

    The module's configuration (its dataclass fields, compared by structure: see
    ``specs.fingerprint``), the method, the input specs, the variables' specs, the vmaps it
    runs under and, for each call it makes, what its stub returns (or, for a call run through,
    the same key again).
    """
    try:
        method = layer.info.method
        leaves, treedef = jax.tree.flatten(variables)
        return (
            _specs.fingerprint(layer.module, skip=_NOT_CONFIG),
            layer.method_name,
            method if isinstance(method, str) else _specs.fingerprint(method),
            _hashable(_specs.signature_of(layer.info.in_spec)),
            treedef,
            tuple((tuple(x.shape), str(x.dtype)) for x in leaves),
            tuple((key, _call_key(child)) for key, child in layer.submodule_calls.items()),
            batched[0],
            tuple((tuple(x.shape), str(x.dtype)) for x in batched[1]),
        )
    except _specs.Unkeyable:
        return None


def _call_key(node: Any) -> Any:
    if isinstance(node, _layer.FlaxCallLayer) and not _alone(node):
        return (
            "through",
            _specs.fingerprint(node.module, skip=_NOT_CONFIG),
            node.method_name,
            _hashable(_specs.signature_of(node.info.in_spec)),
            tuple((key, _call_key(child)) for key, child in node.submodule_calls.items()),
        )
    return ("stub", type(node), _hashable(_specs.signature_of(_specs.specs_of(_out_spec(node)))))


def _hashable(signature: Any) -> Any:
    if signature is None:
        raise _specs.Unkeyable("a static argument is not hashable")
    return signature


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
