"""Mocks: shapes of the real thing, sown values, randomness, caching, errors."""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from penzai import pz

import flaxmock
import zoo
from flaxmock._linen import layer as _layer
from helpers import (
    apply_rngs,
    assert_specs_equal,
    assert_trees_equal,
    init_variables,
    jit_bodies_inline,
    with_python_outputs,
)

CASES = zoo.CASES
IDS = [c.id for c in CASES]


def specs(tree):
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype) if hasattr(x, "shape") else x, tree
    )


@pytest.mark.parametrize("case", zoo.IDIOM_PARAMS, ids=IDS)
def test_whole_model_mock_has_real_structure(case):
    model, variables = init_variables(case)
    tree = flaxmock.unflaxify(model, *case.args, method=case.method, **case.kwargs)
    mocked = flaxmock.mock(tree, "**")
    assert isinstance(mocked, flaxmock.MockLayer)
    out = flaxmock.call(mocked, *case.args, mutable=case.mutable, **case.kwargs)
    ref = model.apply(
        variables,
        *case.args,
        method=case.method,
        mutable=case.mutable,
        rngs=apply_rngs(case),
        **case.kwargs,
    )
    if case.mutable:
        # A mock writes what the call sows; state that exists (batch_stats) is not emitted.
        out_value, out_cols = out
        ref_value, ref_cols = ref
        assert_specs_equal(specs(out_value), specs(ref_value))
        for col, value in out_cols.items():
            assert_specs_equal(specs(value), specs(ref_cols[col]))
        sown_cols = {c for c in ref_cols if c not in variables}
        assert sown_cols <= set(out_cols)
    else:
        assert_specs_equal(specs(out), specs(ref))


def first_leaf_layer(tree):
    for _, layer in _layer.iter_layers(tree):
        if layer is not tree and not layer.submodule_calls:
            return layer
    return None


@pytest.mark.parametrize(("case", "jit"), zoo.IDIOM_PARAMS_WITH_JIT)
def test_partial_mock_rest_runs_exactly(case, jit):
    """Un-mocked layers compute what module.apply computes with the mocked output substituted."""
    model, variables = init_variables(case)
    tree = flaxmock.unflaxify(
        model, *case.args, variables=variables, method=case.method, **case.kwargs
    )
    target = first_leaf_layer(tree)
    if target is None:
        pytest.skip("the model makes no submodule call")
    path = "/".join(target.info.scope_path)
    if target.info.nested:
        # The root of a nested apply: its display path names it, its Flax scope path is ().
        path = ""
    # Inside a lifted body (traced more than once) every trace of the call is substituted, and
    # so is every call of the module's method: a module called from several places (a shared
    # submodule) is mocked at all of them (#19.5). The root of a nested apply is its own.
    lifted = any(
        layer.info.transforms
        for call_path, layer in _layer.iter_layers(tree)
        if target.info.call_path[: len(call_path)] == call_path
    )
    mocked = flaxmock.mock(
        tree, lambda layer: layer.info.call_path == target.info.call_path, fill="ones"
    )
    # The output specs of the calls that are mocked, in call order (a shared module's calls
    # from different places have different shapes).
    specs = [
        layer.info.out_spec
        for _, layer in _layer.iter_layers(tree)
        if layer is target
        or (
            not target.info.nested
            and not layer.info.nested
            and layer.info.scope_path == target.info.scope_path
            and layer.method_name == target.method_name
        )
    ]
    rngs = apply_rngs(case)

    def substitute(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "setup" and not state["root_seen"]:
            state["root_seen"] = True  # The applied module's own call is never the target.
            return next_fun(*args, **kwargs)
        if (
            context.method_name == target.method_name
            and module.scope is not None
            and "/".join(module.scope.path) == path
            and (lifted or not target.info.nested or not state["done"])
        ):
            state["done"] = True
            spec = specs[min(state["calls"], len(specs) - 1)]
            state["calls"] += 1
            return jax.tree.map(
                lambda s: jnp.ones(s.shape, s.dtype) if isinstance(s, jax.ShapeDtypeStruct) else s,
                spec,
                is_leaf=lambda s: isinstance(s, jax.ShapeDtypeStruct),
            )
        return next_fun(*args, **kwargs)

    def via_apply(variables, args):
        state["done"] = state["root_seen"] = False
        state["calls"] = 0
        # nn.jit bodies inline, as flaxmock runs them: a trace cached by Flax would hide the
        # body's calls from the substituting interceptor (or keep its substitution for later).
        with jit_bodies_inline(tree), nn.intercept_methods(substitute):
            return model.apply(
                variables,
                *args,
                method=case.method,
                mutable=case.mutable,
                rngs=rngs,
                **case.kwargs,
            )

    state = {"done": False, "root_seen": False, "calls": 0}
    arrays, rebuild = flaxmock._core.specs.partition(case.args)
    if jit:
        out = with_python_outputs(
            pz.variable_jit,
            lambda t, a: flaxmock.call(
                t, *rebuild(a), mutable=case.mutable, rngs=rngs, **case.kwargs
            ),
        )(mocked, arrays)
        ref = with_python_outputs(jax.jit, lambda v, a: via_apply(v, rebuild(a)))(variables, arrays)
    else:
        out = flaxmock.call(mocked, *case.args, mutable=case.mutable, rngs=rngs, **case.kwargs)
        ref = via_apply(variables, case.args)
    assert state["done"]
    assert_trees_equal(out, ref)


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(8, name="a")(x)
        self.sow("intermediates", "h", h)
        return nn.Dense(4, name="b")(nn.relu(h))


X = jnp.ones((2, 3))


@pytest.fixture
def tree():
    return flaxmock.unflaxify(Net(), X)


def test_successive_calls_differ_and_seed_reproduces(tree):
    mocked = flaxmock.mock(tree, nn.Dense)
    mocked = flaxmock.materialize(mocked, jax.random.key(0))
    first, second = flaxmock.call(mocked, X), flaxmock.call(mocked, X)
    assert not np.array_equal(first, second)
    again = flaxmock.materialize(flaxmock.mock(tree, nn.Dense), jax.random.key(0))
    np.testing.assert_array_equal(flaxmock.call(again, X), first)
    other = flaxmock.materialize(flaxmock.mock(tree, nn.Dense, seed=1), jax.random.key(0))
    assert not np.array_equal(flaxmock.call(other, X), first)


def test_each_mock_draws_its_own_numbers(tree):
    mocked = flaxmock.mock(tree, nn.Dense, fill=None)
    a = mocked.submodule_calls[(0, "a.__call__")]
    b = mocked.submodule_calls[(1, "b.__call__")]
    x8 = jnp.ones((2, 8))
    out_a = a(flaxmock.ArgsAndKwargs.capture(X))
    out_b = b(flaxmock.ArgsAndKwargs.capture(x8))
    assert not np.array_equal(out_a[:, :4], out_b)


def test_counter_advances_under_variable_jit(tree):
    mocked = flaxmock.mock(tree, "**")
    step = pz.variable_jit(lambda t, x: flaxmock.call(t, x))
    first, second = step(mocked, X), step(mocked, X)
    assert first.shape == (2, 4)
    assert not np.array_equal(first, second)
    assert mocked.call_count == 2


def test_fill_policies(tree):
    zeros = flaxmock.call(flaxmock.mock(tree, "**", fill="zeros"), X)
    np.testing.assert_array_equal(zeros, np.zeros((2, 4)))
    ones = flaxmock.call(flaxmock.mock(tree, "**", fill="ones"), X)
    np.testing.assert_array_equal(ones, np.ones((2, 4)))
    custom = flaxmock.mock(tree, "**", fill=lambda key, spec: jnp.full(spec.shape, 7, spec.dtype))
    np.testing.assert_array_equal(flaxmock.call(custom, X), np.full((2, 4), 7.0))


def test_mock_sows_like_the_real_call(tree):
    mocked = flaxmock.mock(tree, "**")
    out, cols = flaxmock.call(mocked, X, mutable=["intermediates"])
    variables = Net().init(jax.random.key(0), X)
    ref_out, ref_cols = Net().apply({"params": variables["params"]}, X, mutable=["intermediates"])
    assert_specs_equal(specs(cols), specs(ref_cols))
    # Not asked for: not returned, as with module.apply.
    assert flaxmock.call(mocked, X).shape == ref_out.shape


def test_new_signature_is_inferred_once_and_cached(tree):
    mocked = flaxmock.mock(tree, "**")
    assert flaxmock.call(mocked, jnp.ones((5, 3))).shape == (5, 4)
    assert len(mocked.mock_state.specs) == 1
    assert flaxmock.call(mocked, jnp.ones((5, 3))).shape == (5, 4)
    assert len(mocked.mock_state.specs) == 1
    assert flaxmock.call(mocked, X).shape == (2, 4)  # the recorded signature: no inference
    assert len(mocked.mock_state.specs) == 1


def test_new_signature_the_real_module_rejects_names_the_path(tree):
    mocked = flaxmock.mock(tree, "**")
    with pytest.raises(flax.errors.ScopeParamShapeError) as info:
        flaxmock.call(mocked, jnp.ones((2, 5)))
    assert any("<root>.__call__ fails on these inputs" in n for n in info.value.__notes__)


def test_data_dependent_shape_points_to_out():
    class Nonzero(nn.Module):
        @nn.compact
        def __call__(self, x):
            return jnp.nonzero(x)[0]

    class Outer(nn.Module):
        @nn.compact
        def __call__(self, x):
            return Nonzero(name="nz")(x.sum(0))

    with pytest.raises(jax.errors.ConcretizationTypeError) as info:
        flaxmock.unflaxify(Outer(), jnp.ones((2, 3)))
    assert any("out={'nz': jax.ShapeDtypeStruct" in n for n in info.value.__notes__)
    # With the output spec given, conversion works and the call can be mocked.
    out = jax.ShapeDtypeStruct((3,), jnp.int32)
    tree = flaxmock.unflaxify(Outer(), jnp.ones((2, 3)), out={"nz": out})
    mocked = flaxmock.mock(tree, "nz")
    result = flaxmock.eval_shape(flaxmock.call, mocked, jnp.ones((2, 3)))
    assert (result.shape, result.dtype) == ((3,), jnp.int32)
    # The same on Mocker.
    self = flaxmock.Mocker()
    nz = self.mock("nz", Nonzero(), out=out)
    assert nz is self.nz
    assert self.nz(jnp.ones(3)).shape == (3,)


def test_mock_returns_new_tree_and_unmock_restores(tree):
    before = jax.tree.leaves(tree)
    mocked = flaxmock.mock(tree, "a")
    assert isinstance(mocked.submodule_calls[(0, "a.__call__")], flaxmock.MockLayer)
    assert isinstance(tree.submodule_calls[(0, "a.__call__")], flaxmock.FlaxCallLayer)
    assert jax.tree.leaves(tree) == before
    assert flaxmock.unmock(mocked) == tree


def test_selectors(tree):
    by_glob = flaxmock.mock(tree, "b")
    assert isinstance(by_glob.submodule_calls[(1, "b.__call__")], flaxmock.MockLayer)
    by_method = flaxmock.mock(tree, "a.__call__")
    assert isinstance(by_method.submodule_calls[(0, "a.__call__")], flaxmock.MockLayer)
    by_pred = flaxmock.mock(tree, lambda layer: layer.info.path_str == "a")
    assert isinstance(by_pred.submodule_calls[(0, "a.__call__")], flaxmock.MockLayer)
    both = flaxmock.mock(tree, ["a", "b"])
    assert all(isinstance(c, flaxmock.MockLayer) for c in both.submodule_calls.values())


def test_selector_errors(tree):
    with pytest.raises(flaxmock.SelectNothingError, match=r"selects no layer(.|\n)*a.__call__"):
        flaxmock.mock(tree, "attn*")
    with pytest.raises(flaxmock.InvalidSelectorError, match="not a flax.linen.Module subclass"):
        flaxmock.mock(tree, dict)
    with pytest.raises(flaxmock.InvalidSelectorError, match="must be a Flax module class"):
        flaxmock.mock(tree, 3)


def test_unsupported_dtype_fails_at_mock_time():
    class Strange(nn.Module):
        @nn.compact
        def __call__(self, x):
            return x

    tree = flaxmock.unflaxify(Strange(), jnp.ones(2))
    with pytest.raises(flaxmock.FlaxmockError, match="fill"):
        flaxmock.mock(tree, "**", fill="no-such-policy")


def test_vmap_lanes_get_their_own_values(tree):
    mocked = flaxmock.mock(tree, "**", vmap_axis_name="lanes")
    out = pz.variable_jit(
        lambda t, xs: jax.vmap(lambda x: flaxmock.call(t, x), axis_name="lanes")(xs)
    )(mocked, jnp.ones((3, 2, 3)))
    assert out.shape == (3, 2, 4)
    assert not np.array_equal(out[0], out[1])
    # Without an axis name too, each lane that batches the inputs draws its own (#19.4).
    shared = flaxmock.mock(tree, "**")
    out = jax.vmap(lambda x: flaxmock.call(shared, x))(jnp.ones((3, 2, 3)))
    assert not np.array_equal(out[0], out[1])


def test_glob_forms_and_penzai_route():
    class Deep(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Dense(3, name="mlp")(x)
            return Net(name="inner")(x)

    tree = flaxmock.unflaxify(Deep(), X)
    # ``**/name`` matches at any depth, the top level included.
    mocked = flaxmock.mock(tree, "**/a")
    assert isinstance(
        mocked.submodule_calls[(1, "inner.__call__")].submodule_calls[(0, "a.__call__")],
        flaxmock.MockLayer,
    )
    assert flaxmock.mock(tree, "**/mlp").submodule_calls[(0, "mlp.__call__")].info.original
    # A tuple of classes; the outermost match wins.
    both = flaxmock.mock(tree, (Net, nn.Dense))
    assert isinstance(both.submodule_calls[(1, "inner.__call__")], flaxmock.MockLayer)
    # penzai's route: at_instances_of stops at the root; the selector predicate reaches nested.
    assert pz.select(tree).at_instances_of(flaxmock.InterceptedFlaxModuleMethod).count() == 1
    assert pz.select(tree).at_subtrees_where(flaxmock.selector(nn.Dense)).count() == 3


def test_empty_match_lists_closest_paths_first(tree):
    with pytest.raises(flaxmock.SelectNothingError) as info:
        flaxmock.mock(tree, "bb")
    listed = str(info.value).split("\n")[1].strip()
    assert listed.startswith("b.__call__")


def test_call_records_in_unittest_mock_words(tree):
    mocked = flaxmock.mock(tree, "**")
    mocked.assert_not_called()
    with pytest.raises(AssertionError, match=r"Expected <root>.__call__ to be called\."):
        mocked.assert_called()
    flaxmock.call(mocked, X)
    mocked.assert_called_once_with(jax.ShapeDtypeStruct((2, 3), jnp.float32))
    with pytest.raises(AssertionError, match="expected a call with"):
        mocked.assert_called_with(jnp.ones((9, 3)))
    flaxmock.call(mocked, jnp.ones((5, 3)))
    assert mocked.call_count == 2
    assert [a[0][0].shape for a in mocked.call_args_list] == [(2, 3), (5, 3)]
    with pytest.raises(AssertionError, match="to be called once; called 2 times"):
        mocked.assert_called_once()


def test_mock_not_reached_is_not_counted():
    class Branchy(nn.Module):
        @nn.compact
        def __call__(self, x, use_b: bool = True):
            x = nn.Dense(3, name="a")(x)
            return nn.Dense(3, name="b")(x) if use_b else x

    tree = flaxmock.unflaxify(Branchy(), X, use_b=False)
    mocked = flaxmock.materialize(flaxmock.mock(tree, "a"), jax.random.key(0))
    flaxmock.call(mocked, X, use_b=False)
    mocked.submodule_calls[(0, "a.__call__")].assert_called_once()


def test_unhashable_static_argument_is_reported():
    class Takes(nn.Module):
        @nn.compact
        def __call__(self, x, options):
            return nn.Dense(2)(x) * len(options)

    class Opts(list):
        __hash__ = None  # type: ignore[assignment]

    self = flaxmock.Mocker()
    self.m = Takes()
    with pytest.raises(flaxmock.InvalidArgumentError, match=r"\['options'\]: Opts are neither"):
        self.m(X, options=Opts.__new__(Opts))


def test_real_layer_errors_name_their_path():
    class Outer(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2, name="proj")(x)

    x = jnp.ones((1, 3))
    variables = Outer().init(jax.random.key(0), x)
    tree = flaxmock.unflaxify(Outer(), x, variables=variables)
    with pytest.raises(flax.errors.ScopeParamShapeError) as info:
        flaxmock.call(tree, jnp.ones((1, 5)))
    assert "flaxmock: raised in proj.__call__" in info.value.__notes__


def test_real_layer_reading_a_mocked_modules_variables_is_explained():
    class Tying(nn.Module):
        @nn.compact
        def __call__(self, tokens):
            embed = nn.Embed(10, 4, name="embed")
            h = embed(tokens)
            return h @ embed.variables["params"]["embedding"].T

    tokens = jnp.array([[1, 2]])
    tree = flaxmock.mock(flaxmock.unflaxify(Tying(), tokens), "embed")
    with pytest.raises(KeyError) as info:
        flaxmock.call(tree, tokens)
    assert any("when they were mocked (embed.__call__)" in n for n in info.value.__notes__)
    # With real values, the mock keeps them: the tied read works and equals apply with the
    # mock's output substituted.
    variables = Tying().init(jax.random.key(0), tokens)

    def mocked():
        return flaxmock.mock(flaxmock.unflaxify(Tying(), tokens, variables=variables), "embed")

    out = flaxmock.call(mocked(), tokens)
    # A fresh mock of the same seed and path draws the same first output.
    first = flaxmock.call(mocked().submodule_calls[(0, "embed.__call__")], tokens)
    table = variables["params"]["embed"]["embedding"]
    np.testing.assert_allclose(out, first @ table.T, rtol=1e-6)


def test_mocked_module_keeps_existing_state():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            h = nn.BatchNorm(use_running_average=not train, name="bn")(x)
            return nn.Dense(2, name="head")(h)

    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 3)), jnp.float32)
    variables = Net().init(jax.random.key(0), x, False)
    variables = jax.tree.map(lambda v: v + 0.5, variables)  # stats that are not init's
    tree = flaxmock.unflaxify(Net(), x, True, variables=variables, mutable=["batch_stats"])
    mocked = flaxmock.mock(tree, "bn")
    out, updates = flaxmock.call(mocked, x, True, mutable=["batch_stats"])
    assert out.shape == (4, 2)
    # The mocked BatchNorm leaves its running statistics as they were (a real one updates them).
    for name in ("mean", "var"):
        np.testing.assert_array_equal(
            updates["batch_stats"]["bn"][name], variables["batch_stats"]["bn"][name]
        )
    _, real_updates = Net().apply(variables, x, True, mutable=["batch_stats"])
    assert not np.allclose(
        real_updates["batch_stats"]["bn"]["mean"], variables["batch_stats"]["bn"]["mean"]
    )


def test_mocking_a_mocked_layer_says_so(tree):
    mocked = flaxmock.mock(tree, "a")
    with pytest.raises(flaxmock.SelectNothingError, match=r"already MockLayers: a.__call__"):
        flaxmock.mock(mocked, "a")


def test_mocker_repr_shows_the_latest_output():
    self = flaxmock.Mocker()
    self.d = nn.Dense(4)
    self.d(jnp.ones((1, 3)))
    self.d(jnp.ones((5, 3), jnp.bfloat16))
    # bf16 inputs meet f32 parameters: the real output, and so the mock's, is f32.
    assert repr(self.d) == "BoundMock(Dense, name='d', out=f32[5,4])"
