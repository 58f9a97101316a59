"""Real values for the layers that run for real: ``materialize`` (fresh) and ``bind`` (given).

Only un-mocked layers get values; mocked ones keep nothing but specs. ``materialize`` runs the
model's own ``init`` under ``jax.jit`` returning only the leaves un-mocked layers use: XLA never
computes the rest, so peak memory follows the un-mocked parameters, not the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from flaxmock._core import errors as _errors
from flaxmock._core import fill as _fill
from flaxmock._core import keys as _keys
from flaxmock._core import prng as _prng
from flaxmock._core import specs as _specs
from flaxmock._linen import assemble as _assemble
from flaxmock._linen import dispatch as _dispatch
from flaxmock._linen import layer as _layer
from flaxmock._linen import mock as _mock
from flaxmock._linen import shardings as _shardings
from flaxmock._linen import variables as _vars
from flaxmock._linen import walk as _walk

Path = tuple[str, ...]


def _needed(tree: _layer.FlaxCallLayer) -> dict[tuple[str, Path], Any]:
    """``{(collection, path): current value}`` of every variable the tree gives values to.

    Those an un-mocked layer owns, and the state mocks keep (``batch_stats``, a decode
    ``cache``: a mock keeps state as state, with the values the tree is given). Variables that
    hold no arrays (the ``AxisMetadata`` that ``param_with_axes`` puts in ``params_axes``:
    static metadata, known from the conversion) need no values and are left out.
    """
    assembled = _assemble.assemble(tree)
    needed = _vars.flatten_variables(assembled.variables)
    for (col, path), var in assembled.kept.items():
        if col != "params":
            needed[(col, path)] = _vars.value_of(var)
    return {k: v for k, v in needed.items() if not _vars.is_static(v)}


def _with_values(root: _layer.FlaxCallLayer, values: dict[tuple[str, Path], Any]) -> Any:
    """Returns ``root`` with the variables named in ``values`` held with those values.

    Each Flax variable gets one new object (a ``pz.Parameter`` or ``pz.StateVariable``, see
    ``flaxmock._linen.variables.to_variable``) that every layer using it shares, and so do the
    mocks that keep it (``MockLayer.kept``: a tied parameter the mock shares with an un-mocked
    layer) and the layers mocks replaced (so that ``unmock`` puts back a layer holding the same
    values as the rest of the tree). The objects of ``root`` are never changed: the tree a user
    had keeps its values. Parts with nothing to change are reused as they are.
    """
    base = root.info.scope_path
    made: dict[tuple[str, Path], Any] = {}

    def renew(col: str, key: tuple[str, Path], old: Any) -> Any:
        if key not in values:
            return old
        if key not in made:
            label = getattr(old, "label", None) or _vars.label_of(col, (), _vars.name_of(key[1]))
            made[key] = _vars.to_variable(col, label, values[key])
        return made[key]

    def renew_all(col: str, here: Path, entries: dict[str, Any]) -> dict[str, Any]:
        return {
            name: renew(col, (col, here + _vars.path_of(name)), var)
            for name, var in entries.items()
        }

    def same(new: dict[Any, Any], old: dict[Any, Any]) -> bool:
        return all(new[k] is v for k, v in old.items())

    def rebuild_mock(mock: _mock.MockLayer) -> _mock.MockLayer:
        changes: dict[str, Any] = {}
        if mock.kept:
            here = mock.info.scope_path[len(base) :]
            flat = _vars.flatten_variables(mock.kept)
            kept = {
                (col, path): renew(col, (col, here + path), v) for (col, path), v in flat.items()
            }
            if not same(kept, flat):
                changes["kept"] = _vars.nest(kept)
        original = mock.info.original
        if isinstance(original, _layer.FlaxCallLayer):
            new_original = rebuild(original)
            if new_original is not original:
                changes["info"] = dataclasses.replace(mock.info, original=new_original)
        return dataclasses.replace(mock, **changes) if changes else mock

    def rebuild(layer: Any) -> Any:
        if isinstance(layer, _mock.MockLayer):
            return rebuild_mock(layer)
        if not isinstance(layer, _layer.FlaxCallLayer):
            return layer
        here = layer.info.scope_path[len(base) :]
        data = layer.scope_data
        if data is not None:
            params = renew_all("params", here, data.parameters)
            state = {col: renew_all(col, here, e) for col, e in data.variables.items()}
            # Plain values of a hand-built layer stay plain.
            others = {
                col: {
                    name: values.get((col, here + _vars.path_of(name)), v)
                    for name, v in entries.items()
                }
                for col, entries in data.immutable_variables.items()
            }
            unchanged = (
                same(params, data.parameters)
                and all(same(state[c], e) for c, e in data.variables.items())
                and all(same(others[c], e) for c, e in data.immutable_variables.items())
            )
            if not unchanged:
                data = dataclasses.replace(
                    data, parameters=params, variables=state, immutable_variables=others
                )
        children = {k: rebuild(c) for k, c in layer.submodule_calls.items()}
        if data is layer.scope_data and same(children, layer.submodule_calls):
            return layer
        return dataclasses.replace(layer, scope_data=data, submodule_calls=children)

    return rebuild(root)


def _check_root(tree: Any, what: str) -> _layer.FlaxCallLayer:
    if not isinstance(tree, _layer.FlaxCallLayer):
        raise _errors.InvalidArgumentError(
            f"{what} expects a tree from flaxmock.unflaxify (a FlaxCallLayer at the root), got "
            f"{type(tree).__name__}. A tree mocked whole has no parameters to give values to."
        )
    return tree


def materialize(
    tree: Any,
    key: Any,
    *args: Any,
    mesh: Any = None,
    rules: Any = None,
    **kwargs: Any,
) -> Any:
    """Gives every un-mocked layer real parameters from the model's own initializers.

    The values are those ``module.init(key, *args)`` gives (the root module's ``init`` with the
    recorded arguments' shapes, ``key`` as the ``params`` stream), computed under ``jax.jit``
    with only the leaves un-mocked layers use as outputs, so the mocked parameters are never
    computed or allocated. Other collections (``batch_stats``) are initialised likewise. On
    CPU the random bits are generated fused with the initializers (JAX's own unrolled threefry
    lowering, bit-identical), so initialising an array needs no scratch beyond it.

    The values equal those of ``jax.jit(model.init)`` up to XLA fusion: the pruned computation (only
    the needed outputs) may be fused differently, which can change a value in its last bit (one ulp;
    seen on ``nn.SpectralNorm``'s ``sigma``). An eager ``model.init`` may differ from both in the
    last bit where XLA fuses the initializer's arithmetic differently. ``init`` runs on
    ``args``/``kwargs`` when given, else on zeros of the recorded argument shapes: variables
    computed from the inputs (data-dependent initialisers, values ``init`` sows into collections it
    returns, such as ``plots``) need the real inputs to match.

    With ``mesh``, parameters that carry partitioning metadata (``nn.with_partitioning`` or
    ``nn.with_logical_partitioning`` boxes) are created sharded over it (``out_shardings``), never
    gathered on one device; others are replicated.

    Args:
      tree: A converted tree, typically partly mocked.
      key: The ``params`` key, as for ``module.init``: a ``jax.Array`` PRNG key, an int seed
        (``jax.random.key(seed)``), or an ``nnx.Rngs``, whose ``params`` stream (else its
        ``default`` one) draws the key, advancing as ``rngs.params()`` does.
      *args: Example inputs for ``init`` (default: zeros of the recorded shapes).
      mesh: A ``jax.sharding.Mesh`` to create the parameters on, or None.
      rules: Logical axis rules for ``nn.with_logical_partitioning`` metadata (default: the
        rules of the surrounding ``nn.logical_axis_rules`` context).
      **kwargs: Example keyword inputs for ``init`` (default: the recorded ones).

    Returns:
      A new tree, holding the new values in new ``pz.Parameter`` and ``pz.StateVariable``
      objects (one per Flax variable, shared by the layers and mocks that use it); ``tree`` and
      its variables are unchanged. Mocked layers keep their abstract parameters.

    Raises:
      InvalidArgumentError: ``tree`` is not a converted tree, or ``key`` is none of the kinds
        above.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, flaxmock
      >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
      >>> x = jnp.ones((4, 3))
      >>> tree = flaxmock.mock(flaxmock.unflaxify(model, x), "layers_0")
      >>> real = flaxmock.materialize(tree, jax.random.key(0))
      >>> flaxmock.call(real, x).shape
      (4, 2)
      >>> ref = model.init(jax.random.key(0), x)["params"]["layers_2"]["kernel"]
      >>> p = real.submodule_calls[(1, "layers_2.__call__")].scope_data.parameters["kernel"]
      >>> bool((p.value == ref).all())
      True
    """
    root = _check_root(tree, "materialize")
    key = _keys.to_key(key, where="materialize")
    current = _needed(root)
    needed = sorted(current)
    if not needed:
        return tree
    currents = [current[k] for k in needed]
    if not args and not kwargs:
        args, kwargs = root.info.in_spec
    arrays, rebuild = _specs.partition((tuple(args), dict(kwargs)))

    # Mocks that keep state run their original code in this ``init``: the state's initial
    # values are what that code creates (BatchNorm's zero mean), not random draws. XLA drops
    # the rest of what it computes (the mocked parameters are no output).
    stateful = [
        m
        for m in _assemble.replacements_reachable(root)
        if isinstance(m, _mock.MockLayer)
        and isinstance(m.info.original, _layer.FlaxCallLayer)
        and any(col != "params" for col in m.kept)
    ]
    init_root = _unmock_these(root, stateful) if stateful else root
    assembled = _assemble.assemble(init_root)
    mocks = _assemble.replacements_reachable(init_root)

    def init(key: jax.Array, arg_arrays: list[Any]) -> list[Any]:
        a, kw = rebuild(arg_arrays)
        # ``init`` runs under the tree's own dispatcher: mocked calls emit placeholders of
        # their recorded shapes instead of tracing their code, so their parameters are never
        # even traced (and calls whose shapes depend on values do not break the trace). Flax
        # derives each module's keys from its own scope path, so skipping the mocked modules
        # leaves every other module's values as ``init`` gives them.
        dispatcher = _dispatch.Dispatcher(
            init_root, assembled.skip_setup, {id(m): 0 for m in mocks}, lenient=True
        )
        with (
            _walk.jit_bodies_inline(_dispatch.has_jit_body(init_root)),
            nn.intercept_methods(dispatcher),
        ):
            variables = root.module.init(
                {"params": key}, *a, method=root.info.method, mutable=True, **kw
            )
        flat = _vars.flatten_variables(variables)
        missing = [k for k in needed if k not in flat]
        if missing:
            names = ["/".join((c,) + p) for c, p in missing]
            raise _errors.BindVariablesError(
                f"materialize: {root.path_str}.{root.method_name}'s init did not create "
                f"{_errors.cut_list(names, 8)}. The layers that own them "
                "cannot be initialised from the model; give their values with flaxmock.bind."
            )
        # Unboxed, so that out_shardings line up with the leaves; boxes are put back below.
        return [_vars.unbox(flat[k]) for k in needed]

    inputs = [_fill.zeros(a) if isinstance(a, jax.ShapeDtypeStruct) else a for a in arrays]
    jitted = jax.jit(init, out_shardings=_shardings.variable_shardings(currents, mesh, rules))
    # Lowered with threefry unrolled: on CPU the default lowering holds 8x the output's bytes
    # of scratch per random array (see flaxmock._core.prng); the values are bit-identical.
    values = _prng.compile_fused(jitted, key, inputs)(key, inputs)
    values = [
        c.replace_boxed(v) if isinstance(c, nn.meta.AxisMetadata) else v
        for c, v in zip(currents, values, strict=True)
    ]
    return _with_values(root, dict(zip(needed, values, strict=True)))


def _unmock_these(root: _layer.FlaxCallLayer, mocks: list[Any]) -> _layer.FlaxCallLayer:
    """``root`` with these mocks put back to the layers they replaced."""
    ids = {id(m) for m in mocks}

    def put_back(layer: Any) -> Any:
        if id(layer) in ids:
            return layer.info.original
        if not isinstance(layer, _layer.FlaxCallLayer):
            return layer
        return dataclasses.replace(
            layer, submodule_calls={k: put_back(c) for k, c in layer.submodule_calls.items()}
        )

    return put_back(root)


def _describe(value: Any) -> str:
    return _errors.describe_value(_vars.unbox(value))


def _check_layout(
    variables: Mapping[str, Any], needed: Mapping[tuple[str, Path], Any], *, call: str
) -> None:
    """Raises when ``variables`` are parameters not wrapped in ``{"params": ...}``.

    Flax's variables dicts are keyed by collection first; a bare parameter dict (what
    ``variables["params"]`` or a checkpoint's parameter tree holds) would otherwise have every
    entry reported missing.
    """
    wanted = {path for col, path in needed if col == "params"}
    if "params" in variables or not wanted or not variables:
        return
    as_params = {path for _, path in _vars.flatten_variables({"params": dict(variables)})}
    if not wanted & as_params:
        return
    keys = _errors.cut_list([repr(k) for k in variables], 6)
    fixed = call.replace("variables", '{"params": params}', 1)
    raise _errors.BindVariablesError(
        f"{call}: the variables have no 'params' collection; their top-level keys ({keys}) are "
        "the parameters themselves (module paths), not collections. Flax keys a variables dict "
        "by collection first, as module.init returns it. Fix: wrap them: "
        f"{fixed}."
    )


def _absent_subtrees(
    needed: Mapping[tuple[str, Path], Any], given: Mapping[tuple[str, Path], Any]
) -> list[str]:
    """The largest subtrees of ``needed`` of which ``given`` has nothing (``params/encoder``)."""
    present = {(col,) + path[:k] for col, path in given for k in range(len(path) + 1)}
    found: dict[str, int] = {}
    for col, path in needed:
        full = (col,) + path
        if full in present or (col, path) in given:
            continue
        # The shortest prefix of the entry with nothing given below it.
        k = next(k for k in range(1, len(full) + 1) if full[:k] not in present)
        name = "/".join(full[:k])
        found[name] = found.get(name, 0) + 1
    return [f"{name} ({n} entries)" for name, n in found.items() if n > 1]


def bind(tree: Any, variables: Any, *, strict: bool = False) -> Any:
    """Gives every un-mocked layer its values from a (possibly partial) variables dict.

    Args:
      tree: A converted tree, typically partly mocked.
      variables: A Flax variables dict (``{"params": ...}``) as ``module.init`` returns, for
        the root module; it may hold only the entries un-mocked layers need (a checkpoint
        subset). Boxed (``nn.Partitioned``) and plain values are both accepted.
      strict: Also report entries that no un-mocked layer uses.

    Returns:
      A new tree, holding the new values in new ``pz.Parameter`` and ``pz.StateVariable``
      objects (one per Flax variable, shared by the layers and mocks that use it); ``tree`` and
      its variables are unchanged. Mocked layers keep their abstract parameters.

    Raises:
      BindVariablesError: entries are missing, or have another shape or dtype than the
        converted model expects; one message lists every such entry and the whole subtrees
        missing. Parameters not wrapped in ``{"params": ...}`` are named as such.
      InvalidArgumentError: ``tree`` is not a converted tree, or ``variables`` not a mapping.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, flaxmock
      >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
      >>> x = jnp.ones((4, 3))
      >>> variables = model.init(jax.random.key(0), x)
      >>> tree = flaxmock.mock(flaxmock.unflaxify(model, x), "layers_0")
      >>> del variables["params"]["layers_0"]  # only the un-mocked part is needed
      >>> flaxmock.call(flaxmock.bind(tree, variables), x).shape
      (4, 2)
    """
    root = _check_root(tree, "bind")
    if not isinstance(variables, Mapping):
        raise _errors.InvalidArgumentError(
            f"bind expects a Flax variables dict ({{'params': ...}}, as module.init returns), "
            f"got {type(variables).__name__}."
        )
    needed = _needed(root)
    _check_layout(dict(variables), needed, call="bind(tree, variables)")
    given = _vars.flatten_variables(dict(variables))
    problems = []
    values = {}
    for k, current in sorted(needed.items()):
        name = "/".join((k[0],) + k[1])
        if k not in given:
            problems.append(f"  missing: {name} (expected {_describe(current)})")
            continue
        value = given[k]
        want, got = _vars.unbox(current), _vars.unbox(value)
        if tuple(np.shape(got)) != tuple(want.shape) or np.dtype(got.dtype) != np.dtype(want.dtype):
            problems.append(
                f"  wrong shape or dtype: {name}: expected {_describe(want)}, got {_describe(got)}"
            )
            continue
        if isinstance(current, nn.meta.AxisMetadata) and not isinstance(
            value, nn.meta.AxisMetadata
        ):
            value = current.replace_boxed(value)
        values[k] = value
    if strict:
        extra = sorted(k for k in set(given) - set(needed) if not _vars.is_static(given[k]))
        problems += [f"  unused: {'/'.join((c,) + p)}" for c, p in extra]
    if problems:
        absent = _absent_subtrees(needed, given)
        raise _errors.bind_error(
            problems,
            subject=f"{root.path_str}.{root.method_name}",
            fix=(f"Missing whole subtrees: {_errors.cut_list(absent, 8)}.\n" if absent else "")
            + "Fix: give every missing entry (paths are as in module.init's output), with "
            "the shapes and dtypes the model was converted with; or mock the layers that use "
            "them (flaxmock.mock)"
            + ("; or pass strict=False to ignore unused entries." if strict else "."),
        )
    return _with_values(root, values)
