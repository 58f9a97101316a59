"""One vocabulary on both front doors: the same verbs, argument kinds and errors for linen and NNX.

``eval_shape(fun, *args)`` (function first, like ``jax.eval_shape``), ``materialize(x, key)``
with a key, an int seed or an ``nnx.Rngs``, ``summary(..., title=)``, ``unmock`` and ``bind`` on
both sides; renamed arguments and classes; and every public function answering a wrong argument
with a ``FlaxmockError``. The oracles are ``module.apply``/``jax.jit(model.init)`` for linen and
the factory itself for NNX.
"""

from __future__ import annotations

import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import flaxmock
import flaxmock.nnx as fnnx
from flaxmock._core import errors as _errors
from helpers import NnxBlock as Block
from helpers import NnxMLP as MLP
from helpers import NnxStack as Stack
from helpers import nnx_values


class Encoding(Block):
    """A helper method with a static keyword argument and a non-array output."""

    def encode(self, x, *, scale: float = 1.0):
        return self.lin(x) * scale, "encoded"


def _assert_state(model, before):
    after = nnx_values(model)
    assert after.keys() == before.keys()
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value, err_msg=str(path))


def _assert_same_values(a, b):
    _assert_state(a, nnx_values(b))


X4 = jnp.linspace(-1.0, 1.0, 20).reshape(5, 4)

# --------------------------------------------------------------------------------------------
# eval_shape(fun, *args, **kwargs): the function first, on both sides.


@pytest.mark.parametrize(
    "make",
    [lambda: Block(4, rngs=nnx.Rngs(0)), lambda: Stack(rngs=nnx.Rngs(0))],
    ids=["bn", "scan"],
)
def test_nnx_eval_shape_never_changes_the_model(make):
    model = make()
    before = nnx_values(model)
    expected = jax.ShapeDtypeStruct((5, 4 if isinstance(model, Block) else 2), jnp.float32)
    # A module, a function of the module, the module among keyword arguments.
    assert fnnx.eval_shape(model, X4) == expected
    assert fnnx.eval_shape(lambda m, x: m(x), model, X4) == expected
    assert fnnx.eval_shape(lambda x, *, m: m(x), X4, m=model) == expected
    _assert_state(model, before)
    for _, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Variable):
            assert not isinstance(var.get_value(), jax.core.Tracer)
    # The real call changes the state (BatchNorm statistics, Dropout's count): eval_shape did not.
    model(X4)
    assert any(not np.array_equal(value, nnx_values(model)[path]) for path, value in before.items())


def test_nnx_eval_shape_bound_method_static_values_and_python_outputs():
    model = Encoding(4, rngs=nnx.Rngs(0))
    before = nnx_values(model)
    out, tag = fnnx.eval_shape(model.encode, X4, scale=2.0)
    assert (out, tag) == (jax.ShapeDtypeStruct((5, 4), jnp.float32), "encoded")
    # A Python value stays static: a tracer would fail in this `if`.
    both = fnnx.eval_shape(lambda m, x, twice: m(m(x)) if twice else m(x), model, X4, True)
    assert both.shape == (5, 4)
    rngs = nnx.Rngs(0)
    fnnx.eval_shape(lambda r: jax.random.normal(r(), (3,)), rngs)
    assert int(rngs.default.count.get_value()) == 0  # The caller's Rngs is not advanced.
    _assert_state(model, before)


def test_nnx_eval_shape_on_abstract_model_equals_real():
    abstract = fnnx.abstract(Stack, rngs=nnx.Rngs(0))
    spec = jax.ShapeDtypeStruct((5, 4), jnp.float32)
    assert fnnx.eval_shape(abstract, spec) == jax.eval_shape(
        lambda x: Stack(rngs=nnx.Rngs(0))(x), spec
    )


def test_linen_eval_shape_takes_a_tree_as_the_function():
    model = nn.Dense(3)
    x = jnp.ones((2, 4))
    tree = flaxmock.mock(flaxmock.unflaxify(model, x), nn.Dense)
    expected = jax.eval_shape(model.apply, model.init(jax.random.key(0), x), x)
    assert flaxmock.eval_shape(flaxmock.call, tree, x) == expected
    out = flaxmock.eval_shape(lambda t, x, flag: (flaxmock.call(t, x), flag), tree, x, "a")
    assert out == (expected, "a")
    assert tree.call_count == 0  # Penzai state crossed as a copy.


@pytest.mark.parametrize("eval_shape", [flaxmock.eval_shape, fnnx.eval_shape], ids=["linen", "nnx"])
def test_eval_shape_needs_a_function_first(eval_shape):
    with pytest.raises(
        flaxmock.InvalidArgumentError, match=r"takes the function to evaluate first.*got a int"
    ):
        eval_shape(3, jnp.ones(3))


# --------------------------------------------------------------------------------------------
# summary(..., title=): one table type.


def test_both_summaries_take_a_title_and_return_one_type():
    linen = flaxmock.summary(flaxmock.unflaxify(nn.Dense(2), jnp.ones((1, 3))), title="linen")
    model = fnnx.abstract(MLP, rngs=nnx.Rngs(0))
    titled = fnnx.summary(model, jax.ShapeDtypeStruct((1, 3), jnp.float32), title="nnx")
    default = fnnx.summary(model, jax.ShapeDtypeStruct((1, 3), jnp.float32))
    assert type(linen) is type(titled) is flaxmock.Summary
    assert (linen.title, titled.title, default.title) == ("linen", "nnx", "NnxMLP")
    assert str(titled).splitlines()[0] == "nnx"


# --------------------------------------------------------------------------------------------
# materialize(x, key): a key, an int seed or an nnx.Rngs, on both sides.


def _linen_case():
    model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
    x = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)
    return model, x, flaxmock.mock(flaxmock.unflaxify(model, x), "layers_0")


@pytest.mark.parametrize(
    "key, init_key",
    [
        (jax.random.key(3), jax.random.key(3)),
        (jax.random.PRNGKey(3), jax.random.key(3)),
        (3, jax.random.key(3)),
        (np.int64(3), jax.random.key(3)),
        (nnx.Rngs(3), nnx.Rngs(3).params()),
        (nnx.Rngs(params=3, dropout=4), nnx.Rngs(params=3).params()),
    ],
    ids=["key", "raw_key", "int", "numpy_int", "rngs", "rngs_params_stream"],
)
def test_linen_materialize_key_kinds_equal_init(key, init_key):
    model, x, tree = _linen_case()
    real = flaxmock.materialize(tree, key)
    reference = jax.jit(model.init)(init_key, x)["params"]["layers_2"]
    layer = real.submodule_calls[(1, "layers_2.__call__")]
    for name in ("kernel", "bias"):
        np.testing.assert_array_equal(
            layer.scope_data.parameters[name].value, reference[name], err_msg=name
        )


def test_linen_materialize_with_rngs_draws_like_rngs_params():
    _, _, tree = _linen_case()
    rngs = nnx.Rngs(3)
    first = flaxmock.materialize(tree, rngs)
    second = flaxmock.materialize(tree, rngs)  # The stream advanced: other values.
    layer = (1, "layers_2.__call__")
    a = first.submodule_calls[layer].scope_data.parameters["kernel"].value
    b = second.submodule_calls[layer].scope_data.parameters["kernel"].value
    assert int(rngs.default.count.get_value()) == 2 and not np.array_equal(a, b)


@pytest.mark.parametrize(
    "make_key",
    [lambda: jax.random.key(3), lambda: jax.random.PRNGKey(3), lambda: 3, lambda: nnx.Rngs(3)],
    ids=["key", "raw", "int", "rngs"],
)
def test_nnx_materialize_key_kinds_equal_the_factory(make_key):
    model = fnnx.abstract(MLP, rngs=nnx.Rngs(0))
    real = fnnx.materialize(fnnx.mock(model, "layers/0"), make_key())
    reference = MLP(rngs=nnx.Rngs(3))
    np.testing.assert_array_equal(real.layers[1].kernel[...], reference.layers[1].kernel[...])
    whole = fnnx.materialize(model, make_key())
    np.testing.assert_array_equal(whole(X4[:, :3]), reference(X4[:, :3]))


def test_nnx_materialize_forked_rngs_with_a_seed():
    # A layer stack built by vmapping over forked keys (nnx.split_rngs / rngs.fork): the seed
    # gives each forked stream keys of the recorded shape, split from jax.random.key(seed).
    @nnx.vmap(in_axes=0, out_axes=0)
    def make(rngs):
        return Block(4, rngs=rngs)

    model = fnnx.abstract(make, nnx.Rngs(0).split(3))
    real = fnnx.materialize(model, 7)
    reference = make(nnx.Rngs(default=jax.random.split(jax.random.key(7), 3)))
    _assert_same_values(real, reference)
    assert real.lin.kernel.get_value().shape == (3, 4, 4)
    with pytest.raises(
        flaxmock.InvalidArgumentError,
        match=r"streams 'default' \(forked, keys \[3\]\), the given one has 'default'\.(.|\n)*"
        r"1\. fork the given nnx.Rngs(.|\n)*2\. pass an int seed",
    ):
        fnnx.materialize(model, nnx.Rngs(0))
    forked = nnx.Rngs(7).split(3)
    _assert_same_values(fnnx.materialize(model, forked), make(nnx.Rngs(7).split(3)))


class Noisy(nnx.Module):
    """Keeps its nnx.Rngs, with a second stream, as models that draw noise at call time do."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.lin = nnx.Linear(2, 2, rngs=rngs)
        self.rngs = rngs

    def __call__(self, x):
        return self.lin(x) + jax.random.normal(self.rngs.noise(), x.shape)


def test_nnx_materialize_seed_keeps_every_stream():
    model = fnnx.abstract(Noisy, rngs=nnx.Rngs(0, noise=1))
    real = fnnx.materialize(model, 5)
    # The documented reseeding: the parameters' stream gets the key, others fold in crc32(name).
    noise = jax.random.fold_in(jax.random.key(5), zlib.crc32(b"noise") & 0x7FFFFFFF)
    _assert_same_values(real, Noisy(rngs=nnx.Rngs(5, noise=noise)))
    with pytest.raises(
        flaxmock.InvalidArgumentError,
        match=r"no value at rngs/noise/count, rngs/noise/key: the factory's nnx.Rngs had the "
        r"streams 'noise', which the given one lacks",
    ):
        fnnx.materialize(model, nnx.Rngs(0))


def test_nnx_materialize_key_needs_an_rngs_argument():
    model = fnnx.abstract(lambda: MLP(rngs=nnx.Rngs(0)))
    with pytest.raises(
        flaxmock.InvalidArgumentError,
        match=r"materialize\(model, key=3\): the model's factory took no nnx.Rngs argument"
        r"(.|\n)*1\. materialize\(model\) without a key",
    ):
        fnnx.materialize(model, 3)
    _assert_same_values(fnnx.materialize(model), MLP(rngs=nnx.Rngs(0)))


@pytest.mark.parametrize(
    "bad", ["seed", 1.5, True, jnp.ones(3), jax.random.split(jax.random.key(0))]
)
def test_materialize_rejects_other_keys_on_both_sides(bad):
    _, _, tree = _linen_case()
    with pytest.raises(
        flaxmock.InvalidArgumentError,
        match=r"^materialize: key must be a jax.Array PRNG key \(jax.random.key\(0\)\), an int "
        r"seed or an nnx.Rngs; got ",
    ):
        flaxmock.materialize(tree, bad)
    model = fnnx.abstract(MLP, rngs=nnx.Rngs(0))
    with pytest.raises(flaxmock.InvalidArgumentError, match=r"nnx.materialize: key must be"):
        fnnx.materialize(model, bad)


def test_materialize_rngs_without_a_params_stream():
    _, _, tree = _linen_case()
    with pytest.raises(
        flaxmock.InvalidArgumentError, match=r"no 'params' or 'default' stream.*streams: noise"
    ):
        flaxmock.materialize(tree, nnx.Rngs(noise=0))


# --------------------------------------------------------------------------------------------
# flaxmock.nnx.unmock and flaxmock.nnx.bind.


def test_nnx_unmock_round_trip_on_an_abstract_model():
    model = fnnx.abstract(Stack, rngs=nnx.Rngs(0))
    mocked = fnnx.mock(model, Block)
    restored = fnnx.unmock(mocked)
    assert isinstance(restored.blocks, Block)

    def specs(m):
        return {
            path: (var.get_value().shape, var.get_value().dtype)
            for path, var in nnx.iter_graph(m)
            if isinstance(var, nnx.Variable)
        }

    assert specs(restored) == specs(model)
    # The factory is still known, and the mocked input is untouched.
    _assert_same_values(fnnx.materialize(restored, 0), Stack(rngs=nnx.Rngs(0)))
    assert isinstance(mocked.blocks, fnnx.MockModule)


def test_nnx_unmock_selects_and_keeps_configuration():
    model = fnnx.mock(MLP(rngs=nnx.Rngs(0)), nnx.Linear)
    one = fnnx.unmock(model, "layers/1")
    assert isinstance(one.layers[0], fnnx.MockModule) and type(one.layers[1]) is not fnnx.MockModule
    by_class = fnnx.unmock(model, nnx.Linear)
    assert not any(isinstance(layer, fnnx.MockModule) for layer in by_class.layers)
    # Predicates see the replaced module (rebuilt with abstract values).
    last = fnnx.unmock(model, lambda path, module: module.out_features == 2)
    assert [isinstance(layer, fnnx.MockModule) for layer in last.layers] == [True, True, False]
    block = fnnx.mock(Block(4, rngs=nnx.Rngs(0)), nnx.Dropout)
    block.eval()  # Sets `deterministic` on the mock.
    assert fnnx.unmock(block).drop.deterministic is True
    root = fnnx.mock(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), nnx.Linear)
    assert type(fnnx.unmock(root)).__name__ == "Linear"


def test_nnx_unmock_errors():
    model = fnnx.mock(MLP(rngs=nnx.Rngs(0)), "layers/0")
    with pytest.raises(
        flaxmock.SelectNothingError,
        match=r"flaxmock.nnx.unmock\(where='head'\) selects no module of NnxMLP. Modules that can "
        r"be selected:\n  layers/0 \(Linear\)",
    ):
        fnnx.unmock(model, "head")
    with pytest.raises(
        flaxmock.SelectNothingError,
        match=r"selects only modules that are not mocks: layers/1\. Fix: select mocked modules, "
        r"or mock them first with flaxmock.nnx.mock",
    ):
        fnnx.unmock(model, "layers/1")
    with pytest.raises(flaxmock.SelectNothingError, match=r"\(where='\*\*'\) selects only"):
        fnnx.unmock(MLP(rngs=nnx.Rngs(0)))
    with pytest.raises(flaxmock.InvalidSelectorError, match="nnx.unmock: where must be"):
        fnnx.unmock(model, 3)  # type: ignore[arg-type]


def test_nnx_bind_equals_the_real_model():
    real = Stack(rngs=nnx.Rngs(0))
    real.eval()
    model = fnnx.abstract(Stack, rngs=nnx.Rngs(1))
    bound = fnnx.bind(model, nnx.state(real))
    bound.eval()
    np.testing.assert_array_equal(bound(X4), real(X4))
    # From a nested dict (a checkpoint), into an un-mocked model restored by unmock.
    restored = fnnx.unmock(fnnx.mock(real, "head"))
    again = fnnx.bind(restored, nnx.to_pure_dict(nnx.state(real)))
    np.testing.assert_array_equal(again(X4), real(X4))
    assert isinstance(model.head.kernel.get_value(), jax.ShapeDtypeStruct)  # Untouched.


def test_nnx_bind_lists_every_problem_at_once():
    model = fnnx.mock(fnnx.abstract(MLP, rngs=nnx.Rngs(0)), "layers/0")
    values = {
        "layers": {
            0: {"kernel": jnp.ones((3, 8))},
            1: {"kernel": jnp.ones((8, 3), jnp.bfloat16), "bias": jnp.ones(8)},
            2: {"kernel": jnp.ones((8, 2))},
        }
    }
    with pytest.raises(
        flaxmock.BindVariablesError,
        match=r"bind: 3 problem\(s\) with the values for NnxMLP:\n"
        r"  wrong shape or dtype: layers/1/kernel: expected float32\[8, 8\], got bfloat16\[8, 3\]"
        r"\n  missing: layers/2/bias \(expected float32\[2\]\)\n"
        r"  unused: layers/0/kernel\nFix: (.|\n)*strict=False",
    ):
        fnnx.bind(model, values, strict=True)
    values["layers"][1]["kernel"] = jnp.ones((8, 8))
    values["layers"][2]["bias"] = jnp.ones(2)
    assert fnnx.bind(model, values)(jnp.ones((1, 3))).shape == (1, 2)


def test_bind_error_is_cut_after_twenty_problems():
    model = fnnx.abstract(
        lambda: nnx.Sequential(*[nnx.Linear(2, 2, rngs=nnx.Rngs(0)) for _ in range(15)])
    )
    with pytest.raises(
        flaxmock.BindVariablesError, match=r"bind: 30 problem\(s\)(.|\n)*\n  \.\.\. and 10 more\n"
    ):
        fnnx.bind(model, {})


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: fnnx.bind(3, {}), "bind expects an nnx.Module, got int"),
        (lambda: fnnx.bind(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), [1]), r"nnx.State or a nested dict"),
        (lambda: fnnx.unmock(3), r"unmock expects an nnx.Module"),
        (lambda: flaxmock.bind(_linen_case()[2], [1]), r"bind expects a Flax variables dict"),
    ],
)
def test_bind_and_unmock_argument_errors(call, match):
    with pytest.raises(flaxmock.InvalidArgumentError, match=match):
        call()


# --------------------------------------------------------------------------------------------
# Renamed arguments and classes; every error class in one place.


def test_fill_helpers_take_path_unflaxify_takes_out():
    spec = jax.ShapeDtypeStruct((2,), np.object_)
    with pytest.raises(flaxmock.UnsupportedDtypeError, match="Cannot fill the output at enc/tok"):
        flaxmock.fill_tree(jax.random.key(0), {"a": spec}, path="enc/tok")

    class Routed(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2, name="router")(x)

    out = {"router": jax.ShapeDtypeStruct((1, 2), jnp.float32)}
    tree = flaxmock.unflaxify(Routed(), jnp.ones((1, 3)), out=out)
    assert tree.submodule_calls[(0, "router.__call__")].info.out_spec == out["router"]
    # A spec that contradicts the real output (which can be inferred here) is an error.
    with pytest.raises(flaxmock.OutputSpecError, match="router"):
        flaxmock.unflaxify(
            Routed(), jnp.ones((1, 3)), out={"router": jax.ShapeDtypeStruct((4,), jnp.int32)}
        )
    with pytest.raises(flaxmock.InvalidArgumentError, match=r"unflaxify\(out=...\) takes a dict"):
        flaxmock.unflaxify(Routed(), jnp.ones((1, 3)), out=[1])


def test_one_name_one_class():
    assert not hasattr(flaxmock, "MockedModule") and not hasattr(flaxmock, "MockerAttributeError")
    assert flaxmock.MockAttributeError is fnnx.MockAttributeError is _errors.MockAttributeError
    names = set(flaxmock.__all__) | set(fnnx.__all__)
    errors = [
        getattr(flaxmock, n, None) or getattr(fnnx, n)
        for n in names
        if n.endswith("Error") and n != "FlaxmockError"
    ]
    assert {"StackSizeError", "UnknownFactoryError", "MockAttributeError"} <= {
        e.__name__ for e in errors
    }
    for error in errors:
        assert error.__module__ == "flaxmock._core.errors", error
        assert issubclass(error, flaxmock.FlaxmockError)
        assert issubclass(error, ValueError | TypeError | AttributeError | RuntimeError), error
    # The linen and NNX mocks and the Mocker's wrapper have distinct names.
    assert len({flaxmock.MockLayer.__name__, fnnx.MockModule.__name__, "BoundMock"}) == 3


# --------------------------------------------------------------------------------------------
# Wrong arguments to any public function: a FlaxmockError naming what was expected.


def _tree():
    return flaxmock.unflaxify(nn.Dense(2), jnp.ones((2, 3)))


WRONG_ARGUMENTS = {
    "call": (lambda: flaxmock.call(3, jnp.ones(2)), r"call expects a converted tree"),
    "summary": (lambda: flaxmock.summary(None), r"summary expects a converted tree"),
    "materialize_tree": (lambda: flaxmock.materialize(None, 0), r"materialize expects a tree"),
    "mock_seed": (lambda: flaxmock.mock(_tree(), "*", seed="a"), r"mock: seed must be an int"),
    "fill_array_key": (
        lambda: flaxmock.fill_array(3, jax.ShapeDtypeStruct((2,), jnp.float32)),
        r"fill: key must be a PRNG key",
    ),
    "fill_array_spec": (
        lambda: flaxmock.fill_array(jax.random.key(0), 3, path="a/b"),
        r"fill at a/b: spec must be a jax.ShapeDtypeStruct, got int",
    ),
    "mocker_seed": (lambda: flaxmock.Mocker(seed=1.5), r"Mocker: seed must be an int"),
    "mocker_mock": (
        lambda: flaxmock.Mocker().mock("a", 3),
        r"module must be a flax.linen.Module, got int",
    ),
    "nnx_abstract": (lambda: fnnx.abstract(3), r"abstract\(factory, \*args, \*\*kwargs\) takes"),
    "nnx_mock_seed": (
        lambda: fnnx.mock(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), nnx.Linear, seed=None),
        r"nnx.mock: seed must be an int",
    ),
    "nnx_materialize": (lambda: fnnx.materialize(3), r"materialize expects an nnx.Module"),
    "nnx_summary": (lambda: fnnx.summary(None), r"summary expects an nnx.Module"),
    "nnx_intercept_methods": (
        lambda: fnnx.intercept_methods(None),
        r"intercept_methods\(interceptor\) takes a function",
    ),
}


@pytest.mark.parametrize("name", list(WRONG_ARGUMENTS))
def test_wrong_arguments_raise_flaxmock_errors(name):
    call, match = WRONG_ARGUMENTS[name]
    with pytest.raises(flaxmock.InvalidArgumentError, match=match):
        call()


def test_mocker_fill_policy_is_checked_at_construction():
    with pytest.raises(flaxmock.FillError, match="Unknown fill policy 'bad'"):
        flaxmock.Mocker(fill="bad")
    with pytest.raises(flaxmock.FillError, match="Unknown fill policy 'bad'"):
        flaxmock.fill_tree(jax.random.key(0), {}, "bad")
