"""``MockLayer``: a stand-in for a submodule call that emits random arrays of the real shapes.

A mock keeps what the converter recorded about the call it replaces (output specs, sown specs)
and, on each call, fills them randomly: the common path runs no ``jax.eval_shape`` at all. A call
with a new input signature is inferred once, by recording the original module's call on abstract
variables (the converter's own recorder), and cached. The machinery (spec cache, call records,
key schedule, grouped draw, errors) is the one the NNX mocks use, in ``flaxmock._core``; what is
here is linen's: the penzai layer, its counter, and the replacement protocol of
``flaxmock._linen.layer`` it implements.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from penzai import pz
from penzai.toolshed.unflaxify import ArgsAndKwargs
from treescope import formatting_util

from flaxmock._core import errors as _errors
from flaxmock._core import fill as _fill
from flaxmock._core import keys as _keys
from flaxmock._core import mockcore as _mockcore
from flaxmock._core import mockdraw as _mockdraw
from flaxmock._core import select as _select
from flaxmock._core import specs as _specs
from flaxmock._core import table as _table
from flaxmock._linen import assemble as _assemble
from flaxmock._linen import layer as _layer
from flaxmock._linen import record as _record
from flaxmock._linen import select as _linen_select
from flaxmock._linen import shardings as _shardings
from flaxmock._linen import variables as _vars
from flaxmock._linen import walk as _walk

# Guards the read-and-advance of every mock's counter, so that threads calling the same tree
# draw for distinct counts. Held only for that update, never during a call.
_COUNTER_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class MockLayerInfo(_mockcore.MockInfo):
    """Static data of a :class:`MockLayer`, besides :class:`MockInfo`'s (compared by identity).

    Attributes:
      call: The replaced call's record, as the mock answers it (``out_spec`` is ``out`` when
        that is given).
      in_signature: The signature of the recorded input.
      variables: Abstract variables of the replaced call's subtree, relative to its module.
      vmap_axis_name: A ``jax.vmap`` axis whose lane index is folded into the key, or None.
      original: The layer this mock replaced (for ``unmock``), or None.
      mesh: A ``jax.sharding.Mesh``: outputs get the shardings the real call's would have.
      rules: Logical axis rules for the parameters' ``nn.with_logical_partitioning`` names.
    """

    call: _layer.CallInfo
    in_signature: Any
    variables: Any
    vmap_axis_name: str | None = None
    original: Any = None
    mesh: Any = None
    rules: Any = None

    @property
    def scope_path(self) -> tuple[str, ...]:
        """The Flax scope path of the replaced call's module."""
        return self.call.scope_path

    @property
    def call_path(self) -> tuple[Any, ...]:
        """The ``submodule_calls`` keys leading from the root to the replaced call."""
        return self.call.call_path

    @property
    def path_str(self) -> str:
        """The replaced call's module path, as ``CallInfo.path_str`` gives it (``<root>``)."""
        return self.call.path_str

    @property
    def out_spec(self) -> Any:
        """The output specs of the recorded input signature."""
        return self.call.out_spec

    @property
    def sown(self) -> tuple[_record.SownEntry, ...]:
        """What the recorded call sowed, relative to its module's scope."""
        return self.call.sown


@pz.pytree_dataclass
class MockLayer(_layer.ReplacementLayer, _mockcore.CallRecords):
    """A penzai layer that returns random arrays shaped like a Flax call's real output.

    It has the call signature of ``InterceptedFlaxModuleMethod`` (one ``ArgsAndKwargs``), so it
    drops into ``submodule_calls`` in place of the layer it replaces. Build it with
    :func:`flaxmock.mock`. It records its calls as ``unittest.mock`` does (``call_count``,
    ``call_args_list``, ``assert_called_once_with``, ``reset_mock``...).

    Attributes:
      module: The unbound Flax module whose call this mock replaces.
      method_name: The name of the replaced method.
      counter: The number of calls so far, a ``pz.StateVariable`` (penzai state).
      info: The static :class:`MockLayerInfo`.
      mock_state: The mutable :class:`MockState` (spec cache, call history), shared by every
        tree derived from this mock.
      kept: The replaced module's state and the parameters that held real values when it was
        mocked (``{collection: nested dict}`` of the ``pz.Parameter`` and ``pz.StateVariable``
        objects, shared with the layers that still use them): existing state (``batch_stats``,
        a decode ``cache``) keeps its value under a mock, and state that was still abstract
        gets its value from ``flaxmock.bind``/``materialize`` like the rest of the tree; a real
        layer that reads the mocked module's parameters (weight tying) still finds them.
        Abstract parameters are dropped.
    """

    module: nn.Module = dataclasses.field(metadata={"pytree_node": False})
    method_name: str = dataclasses.field(metadata={"pytree_node": False})
    counter: Any
    info: MockLayerInfo = dataclasses.field(metadata={"pytree_node": False})
    mock_state: _mockcore.MockState = dataclasses.field(metadata={"pytree_node": False})
    kept: Any = dataclasses.field(default_factory=dict)

    # The replacement protocol (flaxmock._linen.layer.ReplacementLayer).

    def replaced(self) -> _layer.ReplacedCall:
        return _layer.ReplacedCall(self.module, self.method_name, self.info.call)

    def kept_variables(self) -> dict[str, Any]:
        return self.kept

    def abstract_variables(self) -> dict[str, Any]:
        return self.info.variables

    def reserve_count(self, inputs: Any = None) -> Any:
        """Returns the call counter's value and advances it (when it is bound penzai state).

        Where the counter was closed over by a staging trace (a ``jax.jit`` of a closure over
        the tree, a ``lax.fori_loop``/``while_loop`` body), the trace must not write it (that
        would leave its tracer in the tree); the count is then taken on the host each time the
        traced code runs (a host callback), so each run and each
        loop iteration still draws anew. With a counter that holds a value, that host count
        advances the counter itself, as an eager call would. ``inputs``, the run's arguments,
        tie that callback to the run (see :func:`flaxmock._core.mockcore.host_count`).
        """
        if not isinstance(self.counter, pz.StateVariable):
            return self.counter.value
        with _COUNTER_LOCK:
            count = self.counter.value
            advanced = jnp.add(count, np.uint32(1))
            if not _mockcore.closed_over(count, advanced):
                self.counter.value = advanced
                return count
        if isinstance(count, jax.core.Tracer):
            # The counter is the state of an outer trace (``pz.variable_jit`` around a loop):
            # its value is unknown on the host. Counts from the mock's host sequence.
            return _mockcore.host_count(self.mock_state.next_host_count, inputs)
        return _mockcore.host_count(self._advance_on_host, inputs)

    def _advance_on_host(self) -> np.uint32:
        # Runs in a host callback, when the compiled code runs: the counter holds a value.
        with _COUNTER_LOCK:
            count = int(np.asarray(self.counter.value))
            self.counter.value = np.uint32((count + 1) % 2**32)
            return np.uint32(count)

    def release_count(self, count: Any) -> None:
        """Gives back a reserved count that was not used, if no later one was taken."""
        if not isinstance(self.counter, pz.StateVariable):
            return
        with _COUNTER_LOCK:
            current = self.counter.value
            # Only concrete counts are compared; under a trace the reservation stays.
            if isinstance(current, jax.core.Tracer) or isinstance(count, jax.core.Tracer):
                return
            if int(current) == int(count) + 1:
                self.counter.value = count

    def run_replaced(self, args_and_kwargs: ArgsAndKwargs, invocation: _layer.Invocation) -> Any:
        """Returns random arrays of the real output's specs and writes what the call sows.

        Only what the run collects is drawn (:meth:`Invocation.collects`): a plain call draws
        the output alone. Values sown by appending (``self.sow``'s default) are drawn anew on
        every call; values written whole (state: BatchNorm's ``batch_stats``, a cache; a
        ``sow`` with a custom ``reduce_fn``) keep the value the mock holds when it holds one,
        else are drawn from a key without the call count, so every call writes the same
        value: state is initialised once, not redrawn per call.
        """
        inputs = (args_and_kwargs.args, args_and_kwargs.kwargs)
        spec_in = _specs.specs_of(inputs)
        out_spec, sown = self.output_spec(args_and_kwargs, spec_in=spec_in)
        self.mock_state.record_call(spec_in, out_spec)
        count = self.reserve_count(inputs) if invocation.count is None else invocation.count
        wanted = [e for e in sown if invocation.collects(e)]
        per_call = [e for e in wanted if e.append]
        state = [e for e in wanted if not e.append]
        if state:
            held = self._held_state()
            state = [e for e in state if (e.collection, e.path) not in held]
        out, sown_values, state_values = _mockdraw.draw_call(
            self.info,
            out_spec,
            [(_sown_name(e), e.spec) for e in per_call],
            [(_sown_name(e), e.spec) for e in state],
            method=self.method_name,
            count=count,
            index=invocation.index,
            fold=invocation.fold,
            vmap_axis_name=self.info.vmap_axis_name,
            inputs=inputs,
        )
        written = list(zip(per_call, sown_values, strict=True))
        invocation.write_sown(written + list(zip(state, state_values, strict=True)))
        return out

    def _held_state(self) -> frozenset[tuple[str, tuple[str, ...]]]:
        """``(collection, path)`` of the kept state that holds values (never drawn)."""

        flat = _vars.flatten_variables(self.kept, skip=("params",))
        return frozenset(k for k, var in flat.items() if _vars.holds_values(_vars.value_of(var)))

    def summary_note(self) -> str:
        replaced = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(self.info.variables))
        if not replaced:
            return "mocked"
        return f"mocked, {_table.format_count(replaced)} params not allocated"

    def short_label(self) -> str:
        return f"mock of {type(self.module).__name__}"

    def treescope_color(self) -> str:
        return formatting_util.color_from_string("MockLayer")

    # Call records (flaxmock._core.mockcore.CallRecords).

    def _count(self) -> int:
        return int(np.asarray(self.counter.value)) + self.mock_state.host_calls

    def _reset_count(self) -> None:
        if isinstance(self.counter, pz.StateVariable):
            with _COUNTER_LOCK:
                self.counter.value = jnp.zeros((), jnp.uint32)

    def _label(self) -> str:
        return f"{self.info.path}.{self.method_name}"

    # Output specs.

    def output_spec(
        self, args_and_kwargs: ArgsAndKwargs, *, spec_in: Any = None
    ) -> tuple[Any, tuple]:
        """The output and sown specs for these arguments, inferred at most once per signature.

        ``spec_in``, the arguments' specs when the caller has them, saves computing them again.

        Raises:
          InvalidArgumentError: a non-array argument cannot be hashed (so cannot be static).
          ShapeInferenceError: the output shape depends on values (``jnp.nonzero`` without
            ``size=``), so ``jax.eval_shape`` cannot infer it.
        """
        info = self.info
        if info.out is not None:
            return info.out, info.sown
        if spec_in is None:
            spec_in = _specs.specs_of((args_and_kwargs.args, args_and_kwargs.kwargs))
        sig = _mockcore.signature_or_raise(spec_in, self._label())
        if sig == info.in_signature:
            out_spec, sown = info.out_spec, info.sown
        else:
            out_spec, sown = self.mock_state.specs.get_or_infer(sig, lambda: self._infer(spec_in))
        if info.mesh is not None:
            out_spec = _shardings.mock_output_shardings(
                self.module,
                info.call.method,
                info.variables,
                args_and_kwargs,
                out_spec,
                cache=self.mock_state.shardings,
                mesh=info.mesh,
                rules=info.rules,
                path=self._label(),
                per_step=bool(info.call.transforms),
            )
        return out_spec, sown

    def _infer(self, spec_in: Any) -> tuple[Any, tuple]:
        # The converter's recorder on the original module with abstract variables: the output
        # and sown specs of the new signature.
        args, kwargs = spec_in
        with _mockcore.inferring(self._label(), spec_in, fix="flaxmock.mock(tree, where,"):
            with _walk.isolated():
                root, _ = _record.record(
                    self.module,
                    self.info.variables,
                    tuple(args),
                    dict(kwargs),
                    method=self.info.call.method,
                    rngs=_layer.default_rngs(),
                )
        return root.out_spec, root.sown


def _sown_name(entry: _record.SownEntry) -> str:
    """``intermediates/attn_weights``: a sown value's path, as fill dicts name it."""
    return "/".join((entry.collection, *entry.path))


def _output_names(info: MockLayerInfo) -> list[str]:
    """The paths of a mock's output and sown leaves, as fill dicts name them."""
    names = [n for n, leaf in _fill.leaf_paths(info.call.out_spec) if _specs.is_array(leaf)]
    for entry in info.call.sown:
        names += [
            n
            for n, leaf in _fill.leaf_paths(entry.spec, _sown_name(entry))
            if _specs.is_array(leaf)
        ]
    return names


def _new_mock(module: nn.Module, method_name: str, info: MockLayerInfo, kept: Any) -> MockLayer:
    """A :class:`MockLayer` with a fresh counter and state, after checking its fill."""
    _fill.check_fillable(info.call.out_spec, info.fill, path=f"{info.path}.{method_name}")
    for entry in info.call.sown:
        _fill.check_fillable(
            entry.spec,
            info.fill,
            path=f"{info.path}.{method_name} (sown {entry.collection})",
            prefix=_sown_name(entry),
        )
    counter = pz.StateVariable(
        value=jnp.zeros((), jnp.uint32),
        # Unique in a tree (one layer per call path), and the same for trees mocked alike, so
        # that pz.variable_jit does not retrace for each new mock.
        label=f"flaxmock.counter:{info.path}.{method_name}@{info.stream}",
    )
    return MockLayer(
        module=module,
        method_name=method_name,
        counter=counter,
        info=info,
        mock_state=_mockcore.MockState(),
        kept=kept,
    )


def mock_layer(
    layer: _layer.FlaxCallLayer,
    *,
    seed: int = 0,
    fill: Any = None,
    out: Any = None,
    vmap_axis_name: str | None = None,
    mesh: Any = None,
    rules: Any = None,
) -> MockLayer:
    """Builds the :class:`MockLayer` that replaces one converted layer."""
    call = layer.info
    assembled = _assemble.assemble(layer, include_replaced=True)
    out_spec = _specs.specs_of(out) if out is not None else None
    if out_spec is not None and not call.out_given:
        # The real output's specs were recorded: a different out= would be a wrong answer.
        _specs.check_out_spec(
            out_spec,
            call.out_spec,
            where=f"{call.path_str}.{layer.method_name}",
            call="flaxmock.mock(tree, where, out=...)",
        )
    info = MockLayerInfo(
        path=call.path_str,
        stream="/".join(f"{i}:{name}" for i, name in call.call_path),
        seed=seed,
        fill=fill,
        out=out_spec,
        call=call if out_spec is None else dataclasses.replace(call, out_spec=out_spec),
        in_signature=_specs.signature_of(call.in_spec),
        variables=_specs.specs_of(assembled.variables),
        vmap_axis_name=vmap_axis_name,
        original=layer,
        mesh=mesh,
        rules=rules,
    )
    return _new_mock(layer.module, layer.method_name, info, _kept(assembled.objects))


def _kept(objects: dict[tuple[str, tuple[str, ...]], Any]) -> dict[str, Any]:
    """What a mock keeps of the replaced subtree's variables, nested.

    Its state (every collection but ``params``: ``batch_stats``, a decode ``cache``), abstract
    or not: state keeps its value under a mock, and an abstract one gets its value when the
    tree does (``flaxmock.bind``, ``flaxmock.materialize``). Of its parameters, those that hold
    values (a real layer may read them: weight tying); abstract parameters are dropped.

    The objects themselves are kept, not their values: a parameter the mock keeps is the same
    ``pz.Parameter`` as in the un-mocked layers that share it (a tied embedding stays one
    parameter for ``pz.unbind_params``).
    """
    return _vars.nest(
        {
            k: var
            for k, var in objects.items()
            if k[0] != "params"
            or not any(
                isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(_vars.value_of(var))
            )
        }
    )


def explicit_mock(
    module: nn.Module, method_name: str, out: Any, *, seed: int = 0, fill: Any = None
) -> MockLayer:
    """A :class:`MockLayer` for ``module.method_name`` with a given output spec, never traced."""
    out_spec = _specs.specs_of(out)
    call = _layer.CallInfo(
        scope_path=(),
        call_path=(),
        in_spec=None,
        out_spec=out_spec,
        sown=(),
        rng_names=frozenset(),
        method=method_name,
    )
    info = MockLayerInfo(
        path=call.path_str,
        stream="",
        seed=seed,
        fill=fill,
        out=out_spec,
        call=call,
        in_signature=None,
        variables={},
    )
    return _new_mock(module, method_name, info, {})


def mock(
    tree: Any,
    where: _select.Where,
    *,
    seed: int = 0,
    fill: Any = None,
    out: Any = None,
    vmap_axis_name: str | None = None,
    mesh: Any = None,
    rules: Any = None,
) -> Any:
    """Replaces the layers ``where`` selects by mocks (:class:`MockLayer`).

    Each mock returns random arrays with exactly the structure, shapes and dtypes of the real
    call's output (non-array leaves as the real call returns them), and writes random values
    wherever the real call would ``sow``. Selections never overlap: where a layer and one of its
    descendants both match, the outer one is mocked.

    Args:
      tree: A converted tree (from :func:`flaxmock.unflaxify`), possibly already patched.
      where: Which calls to mock: a ``flax.linen.Module`` class (``nn.Dense``), a glob over
        ``/``-joined scope paths (``"blocks_*/attn"``, ``"**/attn"``, ``"embed.attend"``;
        ``*`` stays within one segment, ``""`` is the root), a predicate ``layer -> bool`` or
        ``(path, module) -> bool``, or a list of these (the grammar shared with
        :func:`flaxmock.nnx.mock`, in the overview's "Selecting modules").
      seed: Seed of the mocks' random numbers (each mock also folds in its call path).
      fill: How to fill: None or ``"normal"`` (the default rules), ``"zeros"``, ``"ones"``,
        ``"uniform"``, a callable ``(key, ShapeDtypeStruct) -> array``, a fill with a meaning
        from ``flaxmock.fills`` (``fills.indices(64)``, ``fills.nonnegative()``,
        ``fills.probabilities(axis=-1)``, ``fills.copy_input(0)``), or a dict from output
        paths to these: ``{"1": fills.indices(64)}`` for a call returning ``(weights,
        indices)``, ``{"intermediates/**": fills.probabilities()}`` for what it sows (globs as
        in ``where``; unmatched outputs get the default; a key that matches no output of the
        mocked calls raises ``FillError``).
      out: An explicit output spec (a pytree of ``jax.ShapeDtypeStruct``), for calls whose
        output shape depends on values and cannot be inferred.
      vmap_axis_name: Fold the lane index of this ``jax.vmap`` axis into the key, so that each
        lane gets its own values.
      mesh: A ``jax.sharding.Mesh``. Each mock's outputs then get the shardings the real
        call's outputs would have on it: the real call is compiled once per input signature
        (never run) with its parameters sharded by their ``nn.with_partitioning`` /
        ``nn.with_logical_partitioning`` metadata and the arguments as given.
      rules: Logical axis rules for ``nn.with_logical_partitioning`` names (default: those of
        the surrounding ``nn.logical_axis_rules`` context when ``mock`` is called).

    Returns:
      A new tree; ``tree`` itself is unchanged.

    Raises:
      SelectNothingError: ``where``, or an element of a list, selects no layer; the message
        lists the closest paths.
      SelectContainerError: ``where`` selects a module that is never called itself (its
        children are) without all of its children.
      InvalidSelectorError: ``where`` is not a selector (a module instance, say).
      UnsupportedDtypeError: a recorded output has a dtype the fill rules cannot produce.
      OutputSpecError: ``out`` does not match the output recorded for the selected call.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, flaxmock
      >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
      >>> tree = flaxmock.unflaxify(model, jax.ShapeDtypeStruct((4, 3), jnp.float32))
      >>> mocked = flaxmock.mock(tree, nn.Dense)
      >>> flaxmock.call(mocked, jnp.ones((4, 3))).shape
      (4, 2)
    """
    _keys.check_seed(seed, where="mock")
    if mesh is not None and not isinstance(mesh, jax.sharding.Mesh):
        raise _errors.InvalidArgumentError(
            f"mock: mesh= expects a jax.sharding.Mesh, got {type(mesh).__name__}. Fix: pass "
            "jax.sharding.Mesh(devices, axis_names), or leave it out for unsharded outputs."
        )
    if mesh is not None and rules is None:
        rules = tuple(nn.get_logical_axis_rules())
    selection = _linen_select.select_layers(
        tree,
        where,
        (_layer.FlaxCallLayer,),
        taken={MockLayer: "already MockLayers"},
        call="flaxmock.mock",
        taken_fix="flaxmock.unmock(tree, where) first puts back the original layers",
    )
    made: list[MockLayer] = []

    def make(layer: _layer.FlaxCallLayer) -> MockLayer:
        made.append(
            mock_layer(
                layer,
                seed=seed,
                fill=fill,
                out=out,
                vmap_axis_name=vmap_axis_name,
                mesh=mesh,
                rules=rules,
            )
        )
        return made[-1]

    new = selection.apply(make)
    # A key of a fill dict that names no output of any mock made here would leave the output
    # it meant with the default fill.
    _fill.check_fill_keys(
        fill,
        sorted({n for m in made for n in _output_names(m.info)}),
        where=f"flaxmock.mock(tree, {where!r})",
    )
    return new


def unmock(tree: Any, where: _select.Where = "**") -> Any:
    """Puts back the original layers of the mocks ``where`` selects (all by default).

    Args:
      tree: A tree with mocks (from :func:`flaxmock.mock`).
      where: Which mocks to put back, in the grammar of :func:`flaxmock.mock` (``"**"``, the
        default, selects every path).

    Returns:
      A new tree; ``tree`` itself is unchanged.

    Raises:
      SelectNothingError: ``where``, or an element of a list, selects no mock.
      InvalidSelectorError: ``where`` is not a selector.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, flaxmock
      >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
      >>> tree = flaxmock.unflaxify(model, jax.ShapeDtypeStruct((4, 3), jnp.float32))
      >>> flaxmock.unmock(flaxmock.mock(tree, nn.Dense)) == tree
      True
    """
    selection = _linen_select.select_layers(
        tree,
        where,
        (MockLayer,),
        taken={_layer.FlaxCallLayer: "not mocks (FlaxCallLayers)"},
        call="flaxmock.unmock",
        taken_fix="select mocked layers, or mock these first with flaxmock.mock(tree, where)",
    )
    return selection.apply(lambda m: m.info.original)
