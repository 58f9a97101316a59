"""Nothing the user owns changes, and every error path has a message test.

For every public operation, on models with ``setup()``, ``@nn.compact``, BatchNorm, ``sow`` and a
shared submodule, the user's module objects, variables dicts, arrays and input trees are equal
to and identical with what they were before; Flax's interceptor and module stacks are empty; no
JAX or Flax configuration is left changed. Also after an operation that raises.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import flax.linen.module as flax_module
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from penzai import pz

import flaxmock

# Models: setup() style with a helper method, compact with BatchNorm, a shared submodule.


class SetupNet(nn.Module):
    features: int = 4

    def setup(self):
        self.dense = nn.Dense(self.features)
        self.norm = nn.LayerNorm()
        self.head = nn.Dense(2)

    def encode(self, x):
        return self.norm(self.dense(x))

    def __call__(self, x):
        h = self.encode(x)
        self.sow("intermediates", "h", h)
        return self.head(nn.relu(h))


class CompactBN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        h = nn.Dense(4, name="dense")(x)
        h = nn.BatchNorm(use_running_average=not train, name="bn")(h)
        self.sow("intermediates", "h", h)
        return nn.Dense(2, name="out")(h), {"n": 3}


class UsesShared(nn.Module):
    shared: nn.Module

    @nn.compact
    def __call__(self, x):
        return self.shared(x) + nn.Dense(4, name="own")(x)


class SharedNet(nn.Module):
    def setup(self):
        self.embed = nn.Dense(4)
        self.user = UsesShared(shared=self.embed)

    def __call__(self, x):
        return self.user(self.embed(x))


@dataclasses.dataclass
class Model:
    id: str
    make: Callable[[], nn.Module]
    x: Any
    kwargs: dict[str, Any]
    mutable: Any
    mock_where: str  # A layer to mock in the "mocked" tree.


MODELS = [
    Model("setup", SetupNet, jnp.ones((2, 3)), {}, ["intermediates"], "dense"),
    Model("compact_batchnorm", CompactBN, jnp.ones((5, 3)), {"train": True}, True, "bn"),
    Model("shared_submodule", SharedNet, jnp.ones((2, 4)), {}, False, "embed"),
]


@dataclasses.dataclass
class Ctx:
    """What the user owns for one model, and trees built from it."""

    model: nn.Module
    variables: dict[str, Any]
    x: Any
    kwargs: dict[str, Any]
    mutable: Any
    mock_where: str
    abstract: Any
    real: Any
    mocked: Any


def make_ctx(m: Model) -> Ctx:
    model = m.make()
    variables = model.init(jax.random.key(0), m.x, **m.kwargs)
    variables = {k: v for k, v in variables.items() if k != "intermediates"}
    abstract = flaxmock.unflaxify(model, m.x, **m.kwargs)
    real = flaxmock.unflaxify(model, m.x, variables=variables, **m.kwargs)
    mocked = flaxmock.mock(abstract, m.mock_where)
    return Ctx(model, variables, m.x, m.kwargs, m.mutable, m.mock_where, abstract, real, mocked)


# Snapshots of everything the user owns, and of global state.


def module_snapshot(module: nn.Module) -> dict[str, Any]:
    fields = {f.name: getattr(module, f.name) for f in dataclasses.fields(module)}
    return {
        "repr": repr(module),
        "copy": copy.deepcopy(module),
        "field_ids": {k: id(v) for k, v in fields.items()},
        "dict_ids": {k: id(v) for k, v in vars(module).items()},
        "state": repr(module._state),
        "scope": module.scope,
        # Modules passed as attributes (the shared submodule) belong to the user too.
        "children": {k: module_snapshot(v) for k, v in fields.items() if isinstance(v, nn.Module)},
    }


def assert_module_unchanged(module: nn.Module, snap: dict[str, Any]) -> None:
    after = module_snapshot(module)
    assert after["repr"] == snap["repr"]
    assert module == snap["copy"]
    assert after["field_ids"] == snap["field_ids"]
    assert after["dict_ids"] == snap["dict_ids"]
    assert after["state"] == snap["state"]
    assert after["scope"] is None and snap["scope"] is None
    for name, child in snap["children"].items():
        assert_module_unchanged(getattr(module, name), child)


def dict_nodes(tree: Any, path: tuple = ()) -> list[tuple[tuple, int, list[Any]]]:
    """``(path, id, keys)`` of every dict in a nested variables dict."""
    if not isinstance(tree, dict):
        return []
    out = [(path, id(tree), list(tree))]
    for k, v in tree.items():
        out += dict_nodes(v, path + (k,))
    return out


def tree_snapshot(tree: Any) -> dict[str, Any]:
    leaves, treedef = jax.tree.flatten(tree, is_leaf=lambda x: isinstance(x, pz.StateVariable))
    return {
        "treedef": treedef,
        "ids": [id(leaf) for leaf in leaves],
        "leaves": leaves,
        "values": [
            np.array(leaf)
            if isinstance(leaf, jax.Array | np.ndarray)
            else (np.array(leaf.value) if isinstance(leaf, pz.StateVariable) else None)
            for leaf in leaves
        ],
        "dicts": dict_nodes(tree),
    }


def assert_tree_unchanged(tree: Any, snap: dict[str, Any], *, state_may_advance=False) -> None:
    after = tree_snapshot(tree)
    assert after["treedef"] == snap["treedef"]
    assert after["ids"] == snap["ids"]
    assert after["dicts"] == snap["dicts"]
    for leaf, before in zip(after["leaves"], snap["values"], strict=True):
        if isinstance(leaf, jax.Array):
            assert not leaf.is_deleted()  # never donated
            np.testing.assert_array_equal(np.asarray(leaf), before)
        elif isinstance(leaf, np.ndarray):
            np.testing.assert_array_equal(leaf, before)
        elif isinstance(leaf, pz.StateVariable) and not state_may_advance:
            # A mock's call counter advances when the tree is called, by design; otherwise not.
            np.testing.assert_array_equal(np.asarray(leaf.value), before)


def jax_config() -> dict[str, Any]:
    out = {}
    for name in jax.config.values:
        try:
            # ``getattr`` reads the current, possibly context-local, value.
            out[name] = getattr(jax.config, name)
        except AttributeError:
            out[name] = jax.config.values[name]
    return out


def global_state() -> dict[str, Any]:
    return {
        "jax": jax_config(),
        "flax": dict(vars(flax.config)["_values"]),
        "interceptors": list(flax_module._global_interceptor_stack),
        "module_stack": list(flax_module._context.module_stack),
        "call_info_stack": list(flax_module._context.call_info_stack),
        "capture_stack": list(flax_module._context.capture_stack),
    }


def assert_global_state_clean(before: dict[str, Any]) -> None:
    after = global_state()
    assert len(flax_module._global_interceptor_stack) == 0
    assert after["module_stack"] == [None]
    assert after["call_info_stack"] == [] and after["capture_stack"] == []
    changed = {k for k in before["jax"] if before["jax"][k] != after["jax"].get(k)}
    assert not changed, f"JAX config changed: {sorted(changed)}"
    assert after["flax"] == before["flax"]


# The operations, table-driven. Each takes a Ctx and returns (what it touched of the user's).


@dataclasses.dataclass
class Op:
    id: str
    run: Callable[[Ctx], Any]
    trees: tuple[str, ...] = ()  # Ctx trees passed to the operation, which must not change.
    raises: type[BaseException] | tuple[type[BaseException], ...] | None = None
    calls: bool = False  # Calls a tree: mock counters may advance.


def _wrong_variables(c: Ctx) -> dict[str, Any]:
    return {"params": jax.tree.map(lambda a: jnp.zeros((7,)), c.variables["params"])}


def _mocker_call(c: Ctx) -> Any:
    self = flaxmock.Mocker(seed=1)
    self.m = c.model
    return self.m(c.x, **c.kwargs), self.m(c.x, **c.kwargs)


def _mocker_intermediates(c: Ctx) -> Any:
    self = flaxmock.Mocker(seed=1)
    self.m = c.model
    return self.m.intermediates(c.x, **c.kwargs)


def _mocker_bad_input(c: Ctx) -> Any:
    self = flaxmock.Mocker(seed=1)
    self.m = c.model
    return self.m(jnp.ones(()), **c.kwargs)  # Dense needs a feature axis


def _mocker_assign_twice(c: Ctx) -> Any:
    self = flaxmock.Mocker()
    self.m = c.model
    self.m = c.model
    return self.m


def _mocker_param(c: Ctx) -> Any:
    self = flaxmock.Mocker()
    self.m = c.model
    return self.param("w", nn.initializers.lecun_normal(), (3, 4))


def _jit_call(c: Ctx) -> Any:
    tree = flaxmock.bind(c.mocked, c.variables)
    return pz.variable_jit(lambda t, x: flaxmock.call(t, x, mutable=c.mutable, **c.kwargs))(
        tree, c.x
    )


OPS = [
    Op("unflaxify_abstract", lambda c: flaxmock.unflaxify(c.model, c.x, **c.kwargs)),
    Op(
        "unflaxify_specs",
        lambda c: flaxmock.unflaxify(
            c.model, jax.ShapeDtypeStruct(c.x.shape, c.x.dtype), **c.kwargs
        ),
    ),
    Op(
        "unflaxify_variables",
        lambda c: flaxmock.unflaxify(c.model, c.x, variables=c.variables, **c.kwargs),
    ),
    Op(
        "unflaxify_mutable",
        lambda c: flaxmock.unflaxify(c.model, c.x, variables=c.variables, mutable=True, **c.kwargs)(
            flaxmock.ArgsAndKwargs.capture(c.x, **c.kwargs)
        ),
        calls=True,
    ),
    Op("mock", lambda c: flaxmock.mock(c.real, c.mock_where), trees=("real",)),
    Op("mock_whole", lambda c: flaxmock.mock(c.abstract, "**"), trees=("abstract",)),
    Op("unmock", lambda c: flaxmock.unmock(c.mocked), trees=("mocked",)),
    Op(
        "materialize",
        lambda c: flaxmock.materialize(c.mocked, jax.random.key(1)),
        trees=("mocked",),
    ),
    Op("bind", lambda c: flaxmock.bind(c.mocked, c.variables), trees=("mocked",)),
    Op(
        "call_real",
        lambda c: flaxmock.call(c.real, c.x, mutable=c.mutable, **c.kwargs),
        trees=("real",),
        calls=True,
    ),
    Op(
        "call_mocked",
        lambda c: flaxmock.call(
            flaxmock.bind(c.mocked, c.variables), c.x, mutable=c.mutable, **c.kwargs
        ),
        trees=("mocked",),
        calls=True,
    ),
    Op(
        "call_mocked_whole",
        lambda c: flaxmock.call(flaxmock.mock(c.real, "**"), c.x, mutable=c.mutable, **c.kwargs),
        trees=("real",),
        calls=True,
    ),
    Op("call_variable_jit", _jit_call, trees=("mocked",), calls=True),
    Op(
        "eval_shape",
        lambda c: flaxmock.eval_shape(
            lambda t, x: flaxmock.call(t, x, mutable=c.mutable, **c.kwargs), c.mocked, c.x
        ),
        trees=("mocked",),
    ),
    Op("mocker_call", _mocker_call),
    Op("mocker_intermediates", _mocker_intermediates),
    Op("mocker_param", _mocker_param),
    # Operations that raise.
    Op(
        "call_abstract_raises",
        lambda c: flaxmock.call(c.abstract, c.x, **c.kwargs),
        trees=("abstract",),
        raises=flaxmock.AbstractParameterError,
        calls=True,
    ),
    Op(
        "call_wrong_input_raises",
        lambda c: flaxmock.call(c.real, jnp.ones((2, 9)), **c.kwargs),
        trees=("real",),
        raises=flax.errors.ScopeParamShapeError,  # The model's own error, unchanged.
        calls=True,
    ),
    Op(
        "call_mocked_wrong_input_raises",
        lambda c: flaxmock.call(flaxmock.mock(c.real, "**"), jnp.ones((2, 9)), **c.kwargs),
        trees=("real",),
        # Shape inference runs the real module, whose error propagates with a note.
        raises=flax.errors.ScopeParamShapeError,
        calls=True,
    ),
    Op(
        "unflaxify_wrong_variables_raises",
        lambda c: flaxmock.unflaxify(c.model, c.x, variables=_wrong_variables(c), **c.kwargs),
        # Flax's shape check, or flaxmock's own when the layout is checked up front.
        raises=(flax.errors.ScopeParamShapeError, flaxmock.BindVariablesError),
    ),
    Op(
        "unflaxify_bad_input_raises",
        lambda c: flaxmock.unflaxify(c.model, jnp.ones(()), **c.kwargs),
        raises=IndexError,  # nn.Dense on a scalar: the model's own error, unchanged.
    ),
    Op(
        "mock_nothing_raises",
        lambda c: flaxmock.mock(c.real, "no_such_layer"),
        trees=("real",),
        raises=flaxmock.SelectNothingError,
    ),
    Op(
        "bind_wrong_raises",
        lambda c: flaxmock.bind(c.mocked, _wrong_variables(c)),
        trees=("mocked",),
        raises=flaxmock.BindVariablesError,
    ),
    Op("mocker_bad_input_raises", _mocker_bad_input, raises=IndexError),
    Op("mocker_assign_twice", _mocker_assign_twice),
]
OPS.append(Op("summary", lambda c: str(flaxmock.summary(c.mocked)), trees=("mocked",)))


@pytest.mark.parametrize("op", OPS, ids=[o.id for o in OPS])
@pytest.mark.parametrize("model", MODELS, ids=[m.id for m in MODELS])
def test_nothing_the_user_owns_changes(model, op):
    c = make_ctx(model)
    state = global_state()
    module = module_snapshot(c.model)
    variables = tree_snapshot(c.variables)
    var_leaves = jax.tree.leaves(c.variables)
    x = tree_snapshot(c.x)
    trees = {name: tree_snapshot(getattr(c, name)) for name in op.trees}
    if op.raises is None:
        result = op.run(c)
        assert result is not None
    else:
        with pytest.raises(op.raises):
            op.run(c)
    assert_module_unchanged(c.model, module)
    assert_tree_unchanged(c.variables, variables)
    # The very same array objects, still alive.
    assert all(a is b for a, b in zip(jax.tree.leaves(c.variables), var_leaves, strict=True))
    assert_tree_unchanged(c.x, x)
    for name, snap in trees.items():
        assert_tree_unchanged(getattr(c, name), snap, state_may_advance=op.calls)
    assert_global_state_clean(state)


def test_config_set_by_the_user_is_kept():
    """Operations inside a user's config context neither reset nor leak it."""
    c = make_ctx(MODELS[0])
    with jax.numpy_rank_promotion("raise"), jax.default_matmul_precision("highest"):
        before = global_state()
        flaxmock.call(flaxmock.mock(c.real, "dense"), c.x)
        with pytest.raises(flaxmock.AbstractParameterError):
            flaxmock.call(c.abstract, c.x)
        assert_global_state_clean(before)
        assert jax.config.jax_numpy_rank_promotion == "raise"
    assert jax.config.jax_numpy_rank_promotion != "raise"


def test_user_interceptor_outside_is_kept():
    """An interceptor the user installed stays installed, the only one, after each operation."""
    c = make_ctx(MODELS[0])
    seen = []

    def spy(next_fun, args, kwargs, context):
        seen.append(context.method_name)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(spy):
        flaxmock.unflaxify(c.model, c.x)
        flaxmock.call(c.real, c.x)
        with pytest.raises(flaxmock.AbstractParameterError):
            flaxmock.call(c.abstract, c.x)
        assert list(flax_module._global_interceptor_stack) == [spy]
    assert seen  # the user's interceptor kept seeing the model's calls
    assert len(flax_module._global_interceptor_stack) == 0


# Error paths without a message test elsewhere.


def test_materialize_and_bind_need_a_converted_root():
    tree = flaxmock.mock(flaxmock.unflaxify(nn.Dense(2), jnp.ones((1, 3))), "**")
    with pytest.raises(TypeError, match=r"materialize expects a tree from flaxmock.unflaxify"):
        flaxmock.materialize(tree, jax.random.key(0))
    with pytest.raises(TypeError, match=r"bind expects a tree .*got MockLayer.*mocked whole"):
        flaxmock.bind(tree, {})


def test_bind_strict_reports_unused_entries():
    model = nn.Sequential([nn.Dense(3), nn.Dense(2)])
    x = jnp.ones((1, 3))
    variables = model.init(jax.random.key(0), x)
    tree = flaxmock.mock(flaxmock.unflaxify(model, x), "layers_0")
    assert flaxmock.call(flaxmock.bind(tree, variables), x).shape == (1, 2)
    with pytest.raises(
        flaxmock.BindVariablesError,
        match=(
            r"2 problem\(s\)(.|\n)*unused: params/layers_0/bias\n  unused: params/layers_0/kernel"
        ),
    ):
        flaxmock.bind(tree, variables, strict=True)


def test_bind_missing_and_wrong_shape_in_one_message():
    model = nn.Sequential([nn.Dense(3), nn.Dense(2)])
    x = jnp.ones((1, 3))
    tree = flaxmock.unflaxify(model, x)
    variables = model.init(jax.random.key(0), x)
    del variables["params"]["layers_0"]["bias"]
    variables["params"]["layers_1"]["kernel"] = jnp.ones((3, 5), jnp.bfloat16)
    with pytest.raises(
        flaxmock.BindVariablesError,
        match=(
            r"missing: params/layers_0/bias \(expected float32\[3\]\)(.|\n)*"
            r"wrong shape or dtype: params/layers_1/kernel: expected float32\[3, 2\], "
            r"got bfloat16\[3, 5\]"
        ),
    ):
        flaxmock.bind(tree, variables)


def test_mocker_unknown_attribute():
    self = flaxmock.Mocker()
    with pytest.raises(
        flaxmock.MockAttributeError, match=r"Mocker has no attribute 'encoder'; assign it first"
    ):
        _ = self.encoder
    assert not hasattr(self, "encoder")
    with pytest.raises(flaxmock.MockAttributeError, match="no attribute 'encoder' to delete"):
        del self.encoder


def test_mocker_attribute_can_be_reassigned_after_del():
    self = flaxmock.Mocker()
    self.m = nn.Dense(2)
    del self.m
    with pytest.raises(flaxmock.MockAttributeError, match="no attribute 'm'"):
        _ = self.m
    self.m = nn.Dense(3)
    assert self.m(jnp.ones((1, 2))).shape == (1, 3)


def test_mocker_explicit_out_with_unsupported_dtype():
    self = flaxmock.Mocker()
    with pytest.raises(flaxmock.UnsupportedDtypeError, match=r"<root>.__call__"):
        self.mock("m", nn.Dense(2), out=jax.ShapeDtypeStruct((2,), np.dtype("O")))
        self.m(jnp.ones((1, 2)))


def test_mock_out_with_unsupported_dtype_fails_at_mock_time():
    # The output given at conversion, so mock's out= is not compared with a recorded one (an
    # out= that differs from the recorded output raises OutputSpecError first).
    out = {"layers_0": jax.ShapeDtypeStruct((1, 2), jnp.float32)}
    tree = flaxmock.unflaxify(nn.Sequential([nn.Dense(2)]), jnp.ones((1, 2)), out=out)
    with pytest.raises(flaxmock.UnsupportedDtypeError, match=r"layers_0.__call__"):
        flaxmock.mock(tree, "layers_0", out=jax.ShapeDtypeStruct((2,), np.dtype("O")))


def test_mocker_data_dependent_shape_points_to_out():
    class Nonzero(nn.Module):
        @nn.compact
        def __call__(self, x):
            return jnp.nonzero(x)[0]

    self = flaxmock.Mocker()
    self.nz = Nonzero()
    with pytest.raises(jax.errors.ConcretizationTypeError) as info:
        self.nz(jnp.ones(3))
    assert any("out=" in n for n in getattr(info.value, "__notes__", []))
    with pytest.raises(jax.errors.ConcretizationTypeError) as info:
        flaxmock.unflaxify(Nonzero(), jnp.ones(3))
    assert any("out={" in n for n in getattr(info.value, "__notes__", []))


def test_mock_new_signature_data_dependent_points_to_out():
    """A mock asked for a new input shape whose output depends on values: ShapeInferenceError."""

    class Maybe(nn.Module):
        @nn.compact
        def __call__(self, x):
            if x.shape[0] == 2:
                return x
            return jnp.nonzero(x)[0]

    tree = flaxmock.mock(flaxmock.unflaxify(Maybe(), jnp.ones(2)), "**")
    with pytest.raises(
        flaxmock.ShapeInferenceError,
        match=r"<root>.__call__: cannot infer the output shape(.|\n)*flaxmock.mock\(tree, where, "
        r"out=jax.ShapeDtypeStruct",
    ):
        flaxmock.call(tree, jnp.ones(3))


def test_call_abstract_lists_every_layer_and_fixes():
    tree = flaxmock.unflaxify(nn.Sequential([nn.Dense(3), nn.Dense(2)]), jnp.ones((1, 3)))
    with pytest.raises(
        flaxmock.AbstractParameterError,
        match=r"layers_0: params/layers_0/bias, params/layers_0/kernel|layers_0: params",
    ) as info:
        flaxmock.call(tree, jnp.ones((1, 3)))
    text = str(info.value)
    assert "layers_1:" in text and "flaxmock.materialize(tree, key)" in text


class TwoDense(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4, name="b")(nn.Dense(8, name="a")(x))


def test_nested_mock_infers_a_new_input_shape():
    tree = flaxmock.unflaxify(TwoDense(), jnp.ones((2, 3)))
    mocked = flaxmock.materialize(flaxmock.mock(tree, "a"), jax.random.key(0))
    assert flaxmock.call(mocked, jnp.ones((2, 3))).shape == (2, 4)
    assert flaxmock.call(mocked, jnp.ones((5, 3))).shape == (5, 4)


# Long-running use: bounded memory, no tracer leaks.


def _long_run(calls: int, shapes: int, every: int) -> flaxmock.MockLayer:
    """``calls`` calls of a mocked model; every ``every``-th uses one of ``shapes`` new shapes.

    ``fill="zeros"``: a shape seen for the first time makes XLA compile its fill (about 0.1 s
    for zeros, 0.5 s for normals on CPU), which is JAX's cost, not flaxmock's.
    """
    tree = flaxmock.unflaxify(TwoDense(), jax.ShapeDtypeStruct((2, 3), jnp.float32))
    mocked = flaxmock.mock(tree, "**", fill="zeros")
    x = np.ones((2, 3), np.float32)
    pool = [np.ones((n + 3, 3), np.float32) for n in range(shapes)]
    live = None
    for i in range(calls):
        arg = pool[(i // every) % shapes] if i % every == 0 else x
        out = flaxmock.call(mocked, arg)
        assert out.shape == (arg.shape[0], 4)
        assert len(mocked.mock_state.specs) <= flaxmock._core.mockcore.SPEC_CACHE_SIZE
        assert len(mocked.call_args_list) <= flaxmock._core.mockcore.CALL_HISTORY_SIZE
        if i == calls // 4:
            live = len(jax.live_arrays())
    assert mocked.call_count == calls
    assert len(mocked.mock_state.specs) == flaxmock._core.mockcore.SPEC_CACHE_SIZE
    assert len(mocked.call_args_list) == min(calls, flaxmock._core.mockcore.CALL_HISTORY_SIZE)
    # The latest calls are the ones kept.
    assert mocked.call_args_list[-1][0][0].shape == arg.shape
    # No array accumulates over the calls: a few (the latest output, counter values) at most.
    assert len(jax.live_arrays()) <= live + 3
    return mocked


@pytest.mark.slow  # many calls; heavy
def test_many_calls_with_varying_shapes_keep_memory_bounded():
    _long_run(calls=1_200, shapes=80, every=4)


@pytest.mark.slow
def test_ten_thousand_calls_with_varying_shapes_keep_memory_bounded():
    _long_run(calls=10_000, shapes=200, every=1)


def test_jitted_calls_leak_no_tracers():
    tree = flaxmock.unflaxify(TwoDense(), jax.ShapeDtypeStruct((2, 3), jnp.float32))
    mocked = flaxmock.materialize(flaxmock.mock(tree, "a"), jax.random.key(0))
    whole = flaxmock.mock(tree, "**")
    step = pz.variable_jit(lambda t, x: flaxmock.call(t, x, mutable=True))
    with jax.checking_leaks():
        for _ in range(3):
            assert step(whole, jnp.ones((2, 3)))[0].shape == (2, 4)
            assert step(mocked, jnp.ones((2, 3)))[0].shape == (2, 4)
    assert whole.call_count == 3
    kept = jax.tree.leaves((whole.call_args_list, list(whole.mock_state.specs.values())))
    assert not any(isinstance(leaf, jax.core.Tracer) for leaf in kept)


@pytest.mark.slow  # jax.checking_leaks's report of a leak takes ~40 s in a full session.
def test_conversion_and_new_shapes_leak_no_tracers():
    tree = flaxmock.unflaxify(TwoDense(), jax.ShapeDtypeStruct((2, 3), jnp.float32))
    whole = flaxmock.mock(tree, "**")
    step = pz.variable_jit(lambda t, x: flaxmock.call(t, x))
    with jax.checking_leaks():
        flaxmock.unflaxify(TwoDense(), jnp.ones((2, 3)))
        for n in range(1, 70):
            assert step(whole, jnp.ones((n, 3))).shape == (n, 4)
    assert len(whole.mock_state.specs) == flaxmock._core.mockcore.SPEC_CACHE_SIZE
    kept = jax.tree.leaves((whole.call_args_list, list(whole.mock_state.specs.values())))
    assert not any(isinstance(leaf, jax.core.Tracer) for leaf in kept)


@pytest.mark.slow  # jax.checking_leaks's report of a leak takes ~20 s in a full session.
def test_eval_shape_leaks_no_tracers():
    tree = flaxmock.unflaxify(TwoDense(), jax.ShapeDtypeStruct((2, 3), jnp.float32))
    mocked = flaxmock.mock(tree, "a")
    with jax.checking_leaks():
        out = flaxmock.eval_shape(lambda t, x: flaxmock.call(t, x), mocked, jnp.ones((2, 3)))
    assert out.shape == (2, 4)
