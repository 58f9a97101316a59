"""``unflaxify``: a Flax linen call converted into a penzai tree, with no parameters needed.

The conversion is one abstract trace (``jax.eval_shape``) of the call under a recording
interceptor (``_record``): of ``module.init`` when no variables are given, which yields the
abstract variables and the call records together, or of ``module.apply`` otherwise. Each
submodule call becomes a :class:`~flaxmock._linen.layer.FlaxCallLayer` holding the variables its
module owns; nothing is computed and, with abstract variables, nothing is allocated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
from penzai.toolshed.unflaxify import InterceptedFlaxScopeData

from flaxmock._core import errors as _errors
from flaxmock._core import specs as _specs
from flaxmock._linen import layer as _layer
from flaxmock._linen import record as _record
from flaxmock._linen import variables as _vars

Path = tuple[str, ...]


def _normalize_rngs(rngs: Any, *, initializing: bool) -> dict[str, Any]:
    """The ``rngs`` of the recording trace, from what ``module.apply`` would be given.

    Without variables the trace is ``module.init``, which needs a ``params`` stream that
    ``apply``'s ``rngs`` (``{"dropout": key}``) need not have: a fixed one is supplied. The values
    it gives are abstract and never seen.
    """
    if rngs is None:
        return _layer.default_rngs()
    if isinstance(rngs, Mapping):
        given = dict(rngs)
        if initializing and "params" not in given:
            given = {**_layer.default_rngs(), **given}
        return given
    return {"params": rngs}


def _check_module(module: Any) -> None:
    if not isinstance(module, nn.Module):
        raise _errors.ConvertError(
            f"unflaxify expects a flax.linen.Module, but got {type(module).__name__}: "
            f"{module!r:.80}. For a Flax NNX model use flaxmock.nnx; for a function, wrap it "
            "in a linen Module."
        )
    if module.scope is not None:
        raise _errors.ConvertError(
            f"unflaxify expects an unbound module, but {type(module).__name__} is bound to a "
            "scope (it was taken from inside a running apply or `module.bind`). Fix: pass the "
            "unbound module, e.g. `module.clone(parent=None)` or the object you built."
        )


def unflaxify(
    module: nn.Module,
    *args: Any,
    variables: Any = None,
    rngs: Any = None,
    method: Any = None,
    mutable: Any = False,
    out: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> _layer.FlaxCallLayer:
    """Converts a Flax linen call into a penzai tree, one layer per submodule call.

    Args:
      module: The (unbound) Flax linen module.
      *args: Positional arguments of the call: arrays or ``jax.ShapeDtypeStruct`` specs (nothing is
        computed), or Python values, which stay static.
      variables: The module's variables. ``None`` (the default) makes every variable abstract
        (a ``jax.ShapeDtypeStruct`` from ``jax.eval_shape`` of ``module.init``): nothing is
        allocated, at any model size. Real variables give a tree bound to those arrays, as
        penzai's ``unflaxify`` binds them: one ``pz.Parameter`` per Flax parameter and one
        ``pz.StateVariable`` per other variable, each shared by every layer that uses it (so
        ``pz.unbind_params`` and ``pz.variable_jit`` work). Abstract values stay frozen
        ``pz.ParameterValue`` / ``pz.StateVariableValue`` leaves.
      rngs: Keys for the trace, as for ``module.apply``. When omitted, a fixed key is used for
        every stream (Flax falls back to ``params`` for any stream it lacks).
      method: The method to call, a name or a function, as for ``module.apply``.
      mutable: The collections ``tree(ArgsAndKwargs(...))`` treats as mutable, as for
        ``module.apply``; ``flaxmock.call`` takes its own ``mutable``.
      out: Output specs of calls that must not be traced, by glob over their paths
        (``{"blocks_*/router": jax.ShapeDtypeStruct((8,), jnp.int32)}``): for calls whose output
        shape depends on values (``jnp.nonzero`` without ``size=``). Mock them afterwards.
      **kwargs: Keyword arguments of the call (arrays, specs or static Python values).

    Returns:
      The root layer, a penzai ``InterceptedFlaxModuleMethod`` (a
      :class:`~flaxmock.FlaxCallLayer`), whose ``submodule_calls`` hold one layer per
      submodule call, keyed ``(index, "name.method")``.

    Raises:
      ConvertError: ``module`` is not an unbound Flax linen module. Errors raised by the model
        itself propagate with a note naming the module path and method they came from.
      BindVariablesError: ``variables`` lack parameters the call reads (a missing subtree),
        or hold parameters not wrapped in ``{"params": ...}``.
      OutputSpecError: an ``out=`` spec does not match the output of a call whose output can
        be inferred.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, flaxmock
      >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
      >>> tree = flaxmock.unflaxify(model, jax.ShapeDtypeStruct((4, 3), jnp.float32))
      >>> sorted(tree.submodule_calls)
      [(0, 'layers_0.__call__'), (1, 'layers_2.__call__')]
      >>> tree.submodule_calls[(0, 'layers_0.__call__')].scope_data.parameters['kernel'].value
      ShapeDtypeStruct(shape=(3, 8), dtype=float32)

      With real variables, the tree holds penzai parameters, one per Flax parameter:

      >>> from penzai import pz
      >>> x = jnp.ones((4, 3))
      >>> bound = flaxmock.unflaxify(model, x, variables=model.init(jax.random.key(0), x))
      >>> _, params = pz.unbind_params(bound)
      >>> len(params), sorted(p.label for p in params)[:2]
      (4, ['params/layers_0/bias', 'params/layers_0/kernel'])
    """
    _check_module(module)
    if out is not None and not isinstance(out, Mapping):
        raise _errors.InvalidArgumentError(
            f"unflaxify(out=...) takes a dict from globs over call paths to output specs "
            f"({{'blocks_*/router': jax.ShapeDtypeStruct((8,), jnp.int32)}}), got "
            f"{type(out).__name__}."
        )
    root_record, variables = _record.record(
        module,
        variables,
        args,
        kwargs,
        method=method,
        rngs=_normalize_rngs(rngs, initializing=variables is None),
        out=out,
    )
    tree = build(root_record, variables, method=method, mutable=mutable)
    if out:
        _check_given_outputs(tree)
    return tree


def _check_given_outputs(tree: _layer.FlaxCallLayer) -> None:
    """Checks each ``out=`` spec against the real output, where that can be inferred.

    The call is traced on its own (``init`` of its module with the recorded inputs); when that
    fails (an output shape that depends on values, the reason to give ``out=``), the given spec
    is taken as it is.
    """
    for _, layer in _layer.iter_layers(tree):
        if not isinstance(layer, _layer.FlaxCallLayer) or not layer.info.out_given:
            continue
        args, kwargs = layer.info.in_spec
        try:
            record, _ = _record.record(
                layer.module,
                None,
                tuple(args),
                dict(kwargs),
                method=layer.method_name,
                rngs=_layer.default_rngs(),
            )
        except Exception:
            continue
        _specs.check_out_spec(
            layer.info.out_spec,
            record.out_spec,
            where=f"{layer.path_str}.{layer.method_name}",
            call="flaxmock.unflaxify(model, *args, out={...})",
        )


def build(
    root: _record.CallRecord, variables: Any, *, method: Any, mutable: Any
) -> _layer.FlaxCallLayer:
    """Builds the layer tree from call records, giving each layer the variables it owns.

    A variable belongs to the called module whose scope path is the longest prefix of the
    variable's path: its own variables, and those of modules it runs inline (lifted bodies,
    uncalled submodules). Every call of a module shares its variables: the same objects
    (``flaxmock._linen.variables.to_variable``), in ``scope_data.parameters`` (``params``) and
    ``scope_data.variables`` (every other collection).
    """
    records: list[tuple[tuple, _record.CallRecord]] = []

    def collect(rec: _record.CallRecord, call_path: tuple) -> None:
        records.append((call_path, rec))
        for key, child in rec.children.items():
            collect(child, call_path + (key,))

    collect(root, ())
    # Calls inside a nested ``module.apply`` get their variables from that call's own dict.
    called = {rec.scope_path for _, rec in records if not rec.nested}
    owned: dict[Path, dict[str, dict[str, Any]]] = {}
    # Variables given but never read by the call (the encoder's parameters in a tree of
    # ``method="decode"``) would otherwise fall to the root: the root keeps them, to pass them on
    # to Flax, but does not own them.
    passthrough: set[tuple[str, str]] = set()
    flat = _vars.flatten_variables(variables)
    for (col, path), value in flat.items():
        # The longest called prefix: walk up from the variable's parent path.
        owner = next(path[:k] for k in range(len(path) - 1, -1, -1) if path[:k] in called)
        name = _vars.name_of(path[len(owner) :])
        if owner == () and root.used is not None and (col, path) not in root.used:
            passthrough.add((col, name))
        # One object per Flax variable, shared by every call of its owner (weight tying:
        # ``embed.__call__`` and ``embed.attend`` hold the same ``pz.Parameter``).
        owned.setdefault(owner, {}).setdefault(col, {})[name] = _vars.to_variable(
            col, _vars.label_of(col, owner, name), value
        )

    def make(rec: _record.CallRecord, call_path: tuple) -> _layer.FlaxCallLayer:
        mine = {} if rec.nested else owned.get(rec.scope_path, {})
        params = dict(mine.get("params", {}))
        state = {col: dict(entries) for col, entries in mine.items() if col != "params"}
        scope_data = None
        if params or state or rec.rng_names:
            scope_data = InterceptedFlaxScopeData(
                parameters=params,
                variables=state,
                immutable_variables={},
                rng_names=rec.rng_names,
            )
        info = _layer.CallInfo(
            scope_path=rec.scope_path,
            call_path=call_path,
            in_spec=rec.in_spec,
            out_spec=rec.out_spec,
            sown=rec.sown,
            rng_names=rec.rng_names,
            transforms=rec.transforms,
            nested=rec.nested,
            steps=_steps(rec, flat),
            method=method if rec.key is None and method is not None else rec.method_name,
            mutable=mutable,
            passthrough=frozenset(passthrough) if rec.key is None else frozenset(),
            out_given=rec.out_given,
        )
        return _layer.FlaxCallLayer(
            module=rec.module,
            method_name=rec.method_name,
            scope_data=scope_data,
            submodule_calls={
                key: make(child, call_path + (key,)) for key, child in rec.children.items()
            },
            info=info,
        )

    return make(root, ())


def _steps(rec: _record.CallRecord, flat: dict[tuple[str, Path], Any]) -> int | None:
    """The number of steps of a scanned or vmapped body.

    For a scan, what Flax's scan saw while recording (its length); otherwise the leading axis
    of the body's variables (stacked along the mapped axis).
    """
    if rec.nested or not ({"scan", "vmap"} & set(rec.transforms)):
        return None
    if rec.steps is not None:
        return rec.steps
    n = len(rec.scope_path)
    for (_, path), value in flat.items():
        shape = getattr(_vars.unbox(value), "shape", None)
        if path[:n] == rec.scope_path and shape:
            return int(shape[0])
    return None
