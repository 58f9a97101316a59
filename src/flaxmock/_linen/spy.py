"""``SpyLayer``: a converted call that runs as it is and records what it receives and returns.

A spy is the converted layer itself (a :class:`~flaxmock.FlaxCallLayer`, with the same module,
variables and submodule calls) plus its records, a ``pz.StateVariable``: the runtime runs it
natively, as any converted layer, so outputs, sown values and state are exactly those of the
unspied tree, and every tree walker (``materialize``, ``bind``, summaries, selection) sees the
real layer it is. The dispatcher records each call (``flaxmock._linen.dispatch``): inside the
run, the record goes into the ``intermediates`` collection of the spied module's scope, which
Flax's lifted transforms carry out of scan and vmap bodies (stacked per step or lane) as they
carry any ``sow``; after the run it is taken out of the collections and appended to the spy's
state. The recorded calls, the call-history vocabulary and the value comparison are the
shared core's (``flaxmock._core.spycore``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import scope as flax_scope
from penzai import pz
from treescope import formatting_util

from flaxmock._core import errors as _errors
from flaxmock._core import mockcore as _mockcore
from flaxmock._core import select as _select
from flaxmock._core import spycore as _spycore
from flaxmock._linen import assemble as _assemble
from flaxmock._linen import layer as _layer
from flaxmock._linen import select as _linen_select
from flaxmock._linen import variables as _vars

#: The name prefix of spy records in the ``intermediates`` collection during a run.
RECORD_PREFIX = "__flaxmock_spy_"


@pz.pytree_dataclass(has_implicitly_inherited_fields=True)  # type: ignore[call-arg]
class SpyLayer(_layer.FlaxCallLayer, _spycore.SpyRecords):
    """A converted call that runs unchanged and records each call's arguments and output.

    Build it with :func:`flaxmock.spy`; :func:`flaxmock.unspy` puts back the plain layer. It has
    the call-history vocabulary of :class:`flaxmock.MockLayer` (``call_count``,
    ``call_args_list``, ``assert_called_with``, ``assert_called_once``, ``reset_mock``...),
    with recorded values instead of specs, and ``outputs`` and ``calls`` (one
    ``SpyCall`` per call; inside an ``nn.scan`` body, one per step).

    Attributes:
      records: The recorded calls, a ``pz.StateVariable`` holding a tuple of ``SpyRecord``
        (penzai state: it advances eagerly and under ``flaxmock.jit``/``pz.variable_jit``).
      counter: The number of records, a ``pz.StateVariable`` (tells a trace that may write the
        records from one that closes over them).
    """

    records: Any
    counter: Any

    # Records (flaxmock._core.spycore.SpyRecords).

    def _records(self) -> tuple[_spycore.SpyRecord, ...]:
        return tuple(self.records.value)

    def _reset_records(self) -> None:
        if isinstance(self.records, pz.StateVariable):
            self.records.value = ()
            self.counter.value = jnp.zeros((), jnp.uint32)

    def _label(self) -> str:
        return f"{self.info.path_str}.{self.method_name}"

    def _spy_path(self) -> str:
        return self.info.path_str

    def _spy_method(self) -> str:
        return self.method_name

    def _spy_module(self) -> Any:
        return self

    def append(self, new: list[_spycore.SpyRecord]) -> None:
        """Appends records made by a run (eagerly, or inside a trace that owns the state).

        Raises:
          RecordSpyError: the records are values of a trace that closes over the tree (a
            ``jax.jit`` of a function that closes over it): they cannot be kept.
        """
        if not new or not isinstance(self.records, pz.StateVariable):
            return
        count = self.counter.value
        advanced = jnp.add(count, jnp.uint32(len(new)))
        leaves = [x for r in new for x in r.arrays]
        tracer = next((x for x in leaves if isinstance(x, jax.core.Tracer)), None)
        closed = _mockcore.closed_over(count, advanced) or (
            tracer is not None
            and not isinstance(count, jax.core.Tracer)
            and not isinstance(advanced, jax.core.Tracer)
        )
        if closed:
            raise _errors.RecordSpyError(
                f"{self._label()}: the spy ran inside a trace (jax.jit, jax.eval_shape, a "
                "lax loop) that closes over the tree, so its records are values of that trace "
                "and cannot be kept in the tree. Fix: 1. pass the tree to the compiled "
                "function as an argument with flaxmock.jit (pz.variable_jit): "
                "flaxmock.jit(flaxmock.call)(tree, x); 2. run it eagerly; or 3. remove the "
                "spies first: flaxmock.unspy(tree)."
            )
        self.records.value = tuple(self.records.value) + tuple(new)
        self.counter.value = advanced

    def short_label(self) -> str:
        return f"spy on {type(self.module).__name__}"

    def treescope_color(self) -> str:
        return formatting_util.color_from_string("SpyLayer")

    def as_layer(self) -> _layer.FlaxCallLayer:
        """The plain converted layer (without records)."""
        return _layer.FlaxCallLayer(
            module=self.module,
            method_name=self.method_name,
            scope_data=self.scope_data,
            submodule_calls=self.submodule_calls,
            info=self.info,
        )


def spy_layer(layer: _layer.FlaxCallLayer) -> SpyLayer:
    """The :class:`SpyLayer` of one converted layer, with empty records."""
    label = f"{layer.info.path_str}.{layer.method_name}@" + "/".join(
        f"{i}:{name}" for i, name in layer.info.call_path
    )
    return SpyLayer(
        module=layer.module,
        method_name=layer.method_name,
        scope_data=layer.scope_data,
        submodule_calls=layer.submodule_calls,
        info=layer.info,
        records=pz.StateVariable(value=(), label=f"flaxmock.spy:{label}"),
        counter=pz.StateVariable(
            value=jnp.zeros((), jnp.uint32), label=f"flaxmock.spycount:{label}"
        ),
    )


def spy(tree: Any, where: _select.Where) -> Any:
    """Wraps the calls ``where`` selects in spies (:class:`SpyLayer`) that record each call.

    A spied call runs exactly as before (outputs, sown values and state are those of the
    unspied tree); each call's arguments and output are recorded in the spy's penzai state,
    eagerly and under :func:`flaxmock.jit`. Inside an ``nn.scan`` body each step is recorded
    (read back as one call per step), inside an ``nn.vmap`` body each call's arrays have the
    lanes along a leading axis. Unlike :func:`flaxmock.mock`, a selected layer inside another
    selected one is spied too (a block and its attention). A record made inside a lifted body
    leaves it through the ``intermediates`` collection, so that transform must carry it
    (``variable_axes={"params": 0, "intermediates": 0}``), as it must for ``sow``. Spies and
    mocks combine on one tree (spy a real block, mock the rest).

    Args:
      tree: A converted tree (from :func:`flaxmock.unflaxify`), possibly patched.
      where: Which calls to spy on, in the grammar of :func:`flaxmock.mock`.

    Returns:
      A new tree; ``tree`` itself is unchanged.

    Raises:
      SelectNothingError: ``where``, or an element of a list, selects no converted layer.
      SelectContainerError: ``where`` selects a module that is never called itself.
      InvalidSelectorError: ``where`` is not a selector.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, flaxmock
      >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
      >>> x = jnp.ones((4, 3))
      >>> tree = flaxmock.unflaxify(model, x, variables=model.init(jax.random.key(0), x))
      >>> spied = flaxmock.spy(tree, "layers_2")
      >>> y = flaxmock.call(spied, x)
      >>> layer = spied.submodule_calls[(1, "layers_2.__call__")]
      >>> layer.call_count, bool((layer.outputs[-1] == y).all())
      (1, True)
    """
    kinds = (_layer.FlaxCallLayer,)
    modules = _linen_select.choose(
        tree,
        where,
        kinds,
        taken={SpyLayer: "already SpyLayers"},
        call="flaxmock.spy",
        taken_fix="flaxmock.unspy(tree, where) first puts back the plain layers",
    )

    # Unlike mocks, nested selections are all spied (a block and its attention).
    def rebuild(node: Any) -> Any:
        if not isinstance(node, _layer.FlaxCallLayer):
            return node
        children = {k: rebuild(c) for k, c in node.submodule_calls.items()}
        if any(children[k] is not c for k, c in node.submodule_calls.items()):
            node = dataclasses.replace(node, submodule_calls=children)
        if not isinstance(node, SpyLayer) and _linen_select.is_chosen(node, kinds, modules):
            node = spy_layer(node)
        return node

    return rebuild(tree)


def unspy(tree: Any, where: _select.Where = "**") -> Any:
    """Puts back the plain converted layers of the spies ``where`` selects (all by default).

    ``flaxmock.unmock`` removes mocks only, and this function spies only: a tree with both
    gets its original back with both.

    Args:
      tree: A tree with spies (from :func:`flaxmock.spy`).
      where: Which spies to remove, in the grammar of :func:`flaxmock.mock`.

    Returns:
      A new tree; ``tree`` itself is unchanged.

    Raises:
      SelectNothingError: ``where``, or an element of a list, selects no spy.
      InvalidSelectorError: ``where`` is not a selector.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, flaxmock
      >>> tree = flaxmock.unflaxify(nn.Dense(2), jax.ShapeDtypeStruct((1, 3), jnp.float32))
      >>> flaxmock.unspy(flaxmock.spy(tree, "")) == tree
      True
    """
    selection = _linen_select.select_layers(
        tree,
        where,
        (SpyLayer,),
        taken={_layer.FlaxCallLayer: "not spies (FlaxCallLayers)"},
        call="flaxmock.unspy",
        taken_fix="select spied layers, or spy on these first with flaxmock.spy(tree, where)",
    )
    return selection.apply(lambda s: s.as_layer())


def spies_reachable(root: _layer.FlaxCallLayer) -> list[SpyLayer]:
    """Every :class:`SpyLayer` a run of ``root`` can dispatch, ``root`` included."""
    return [layer for _, layer in _layer.iter_layers(root) if isinstance(layer, SpyLayer)]


def record_name(index: int) -> str:
    """The name of the ``index``-th spy's records in ``intermediates`` during a run."""
    return f"{RECORD_PREFIX}{index}__"


def take_records(collections: dict[str, Any], count: int) -> list[list[_spycore.SpyRecord]]:
    """Takes the spies' records out of ``collections['intermediates']`` (in place).

    Returns one list per spy index, in the order the records were written; dicts left empty by
    the removal are removed too.
    """
    found: list[list[_spycore.SpyRecord]] = [[] for _ in range(count)]

    def walk(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        out = {}
        for k, v in node.items():
            if isinstance(k, str) and k.startswith(RECORD_PREFIX):
                found[int(k[len(RECORD_PREFIX) : -2])].extend(v)
                continue
            v2 = walk(v)
            if isinstance(v, dict) and v and not v2:
                continue
            out[k] = v2
        return out

    if "intermediates" in collections:
        collections["intermediates"] = walk(dict(collections["intermediates"]))
    return found


def record_in_scope(module: Any, index: int, rec: _spycore.SpyRecord) -> bool:
    """Writes ``rec`` into the ``intermediates`` of ``module``'s scope; False if not mutable."""
    scope = getattr(module, "scope", None)
    if scope is None or not scope.is_mutable_collection("intermediates"):
        return False
    name = record_name(index)
    existing = (
        scope.get_variable("intermediates", name)
        if scope.has_variable("intermediates", name)
        else ()
    )
    scope.put_variable("intermediates", name, tuple(existing) + (rec,))
    return True


def with_intermediates(mutable: Any) -> Any:
    """``mutable`` (a Flax collection filter) with ``intermediates`` added, for a run with spies."""
    if mutable is True:
        return True
    if mutable is False or mutable is None:
        return ["intermediates"]
    if isinstance(mutable, str):
        return [mutable, "intermediates"]
    if isinstance(mutable, (list, tuple)):
        return [*mutable, "intermediates"]
    if isinstance(mutable, flax_scope.DenyList) and isinstance(mutable.deny, (str, list, tuple)):
        deny = [mutable.deny] if isinstance(mutable.deny, str) else list(mutable.deny)
        return flax_scope.DenyList([d for d in deny if d != "intermediates"])
    return mutable


def replay(recorded: _spycore.SpyCall, target: Any) -> Any:
    """Runs a recorded call again, on its recorded arguments, against another tree or module.

    "Does the real block compute, inside the mocked model, what it computes inside the full
    model?" is then ``flaxmock.replay(spy.calls[-1], full_tree)`` compared with
    ``spy.outputs[-1]``. The call of the same module path and method is found in ``target``
    and run with ``target``'s variables for it, as ``target`` runs it (mocks inside that call
    in ``target`` stay mocks); a call recorded at step ``k`` of an ``nn.scan`` body runs,
    eagerly and natively, with step ``k`` of the stacked variables.

    Args:
      recorded: A recorded call (an element of a spy's ``calls``).
      target: A converted tree (from :func:`flaxmock.unflaxify`, with values), or a bound
        Flax module (``model.bind(variables)``) of the same model.

    Returns:
      The output of the call on the recorded arguments.

    Raises:
      InvalidArgumentError: ``recorded`` is not a recorded call, or ``target`` is neither a
        tree nor a bound module.
      SelectNothingError: ``target`` has no real call of that path and method (none, or mocked).
      BindVariablesError: ``target`` lacks the call's variables, or their shapes do not match.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, flaxmock
      >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
      >>> x = jnp.ones((4, 3))
      >>> variables = model.init(jax.random.key(0), x)
      >>> tree = flaxmock.unflaxify(model, x, variables=variables)
      >>> spied = flaxmock.spy(flaxmock.mock(tree, "layers_0"), "layers_2")
      >>> _ = flaxmock.call(spied, x)
      >>> seen = spied.submodule_calls[(1, "layers_2.__call__")].calls[-1]
      >>> again = flaxmock.replay(seen, model.bind(variables))
      >>> bool((again == seen.output).all())
      True
    """
    if not isinstance(recorded, _spycore.SpyCall) or not isinstance(recorded.module, SpyLayer):
        raise _errors.InvalidArgumentError(
            f"replay expects a call recorded by a linen spy (an element of spy.calls), got "
            f"{type(recorded).__name__}. Fix: flaxmock.replay(spy_layer.calls[-1], target)."
        )
    spy_layer = recorded.module
    label = f"{recorded.path}.{recorded.method}"
    args, kwargs = recorded.args, recorded.kwargs
    if isinstance(target, _layer.FlaxCallLayer):
        found = [
            layer
            for _, layer in _layer.iter_layers(target)
            if isinstance(layer, _layer.FlaxCallLayer)
            and layer.info.path_str == recorded.path
            and layer.method_name == recorded.method
        ]
        if not found:
            raise _errors.SelectNothingError(
                f"replay: the target tree has no real call {label} (it is mocked, or the tree "
                "is another model's). Fix: replay against a tree where that call is real (the "
                "full model: flaxmock.materialize(tree, key) or flaxmock.bind(tree, variables))."
            )
        layer = found[0]
        if not recorded.step:
            # Run as the target tree runs it (a spy there records nothing more).
            plain = layer.as_layer() if isinstance(layer, SpyLayer) else layer
            return plain(_layer.ArgsAndKwargs(args=args, kwargs=kwargs))
        assembled = _assemble.assemble(layer, include_kept=True)
        _assemble.check_concrete(layer, assembled)
        variables = assembled.variables
    elif isinstance(target, nn.Module) and target.scope is not None:
        variables = {}
        for col, tree in target.variables.items():
            node: Any = tree
            for k in spy_layer.info.scope_path:
                node = node.get(k) if hasattr(node, "get") else None
            if node is not None:
                variables[col] = node
        if not variables and spy_layer.scope_data is not None:
            raise _errors.BindVariablesError(
                f"replay: the bound module has no variables at {recorded.path!r} for {label}. "
                "Fix: bind the same model's variables: flaxmock.replay(call, "
                "model.bind(variables))."
            )
    else:
        raise _errors.InvalidArgumentError(
            f"replay: target must be a converted tree or a bound Flax module, got "
            f"{type(target).__name__}. Fix: pass flaxmock.unflaxify(model, x, variables=...) "
            "or model.bind(variables)."
        )
    module, method = spy_layer.module, spy_layer.info.method
    if recorded.step:
        variables = _step_variables(module, method, variables, recorded, label)
    return module.apply(variables, *args, rngs=_layer.default_rngs(), method=method, **dict(kwargs))


def _step_variables(
    module: nn.Module, method: Any, variables: dict[str, Any], recorded: Any, label: str
) -> dict[str, Any]:
    """One step's variables of a scanned call, from the stacked ones."""
    step = recorded.step
    wanted = jax.eval_shape(
        lambda: module.init(
            _layer.default_rngs(), *recorded.args, method=method, **dict(recorded.kwargs)
        )
    )
    flat_wanted = _vars.flatten_variables(dict(wanted))
    out: dict[str, Any] = {}
    for (col, path), value in _vars.flatten_variables(variables).items():
        spec = flat_wanted.get((col, path))
        leaf = _vars.unbox(value)
        if spec is None:
            continue
        shape = tuple(_vars.unbox(spec).shape)
        if tuple(leaf.shape) == shape:
            piece = leaf
        elif tuple(leaf.shape[len(step) :]) == shape:
            piece = leaf[step]
        else:
            raise _errors.BindVariablesError(
                f"replay: {label} at step {step} needs {col}/{'/'.join(path)} of shape "
                f"{shape}, and the target holds {tuple(leaf.shape)}. Fix: replay against the "
                "same model (same sizes and number of layers)."
            )
        _vars.set_in(out.setdefault(col, {}), path, piece)
    return out
