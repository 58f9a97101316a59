"""Every case where flaxmock gave a plausible wrong answer, and the test that now pins it.

Each case is a small model of our own with the shape of the public model that showed it; the
test asserts the right result (against ``module.apply`` / the real NNX call) or the specific
error class and message. Sections by area; add new cases to the table and a test below.

Linen runtime and mock cases (issues #12, #19):

==========================  =======================================  ========================
case                        public model that showed it              outcome
==========================  =======================================  ========================
12.2 jit closes over tree   any model, ``jax.jit(lambda x: call())``  fixed (fresh draws)
19.1 state under a mock     BatchNorm block; flax wmt decode cache   fixed
19.4 vmap lanes             scenic DETR auxiliary heads              fixed
19.5 shared module, 1 path  a module passed to two children          fixed (mocked at all)
19.8 mock in a loop body    flax lm1b while_loop sampler             fixed (fresh draws)
19.9 mesh= in an nn.scan    MaxText scanned decoder layers           fixed
19.17 decode loops          flax wmt/lm1b decoding                   recipe (tutorial 03)
19.18 fills with meaning    MaxText Mixtral router, ogbg graph nets  fixed (flaxmock.fills)
==========================  =======================================  ========================
"""

from __future__ import annotations

import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from penzai import pz

import flaxmock
from helpers import run_on_8_cpu_devices

# ---------------------------------------------------------------------------------------------
# Linen runtime and mocks (issues #12 and #19: 12.2, 19.1, 19.4, 19.5, 19.8, 19.9)
# ---------------------------------------------------------------------------------------------


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3, name="head")(nn.Dense(4, name="body")(x))


_X = jnp.ones((2, 4))


def _mocked_net():
    model = _Net()
    variables = model.init(jax.random.key(0), _X)
    return flaxmock.mock(flaxmock.unflaxify(model, _X, variables=variables), "head")


def _head(tree):
    return tree.submodule_calls[(1, "head.__call__")]


def _eager_draws(n):
    tree = _mocked_net()
    return [flaxmock.call(tree, _X) for _ in range(n)]


def test_12_2_jit_closing_over_a_mocked_tree_draws_anew():
    expected = _eager_draws(4)
    tree = _mocked_net()
    step = jax.jit(lambda x: flaxmock.call(tree, x))
    # Each run of the compiled closure takes the next count, as eager calls do, in one sequence
    # with the eager calls in between; nothing is left traced in the tree.
    got = [step(_X), flaxmock.call(tree, _X), step(_X), step(_X)]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)
    assert _head(tree).call_count == 4
    assert not isinstance(_head(tree).counter.value, jax.core.Tracer)
    # The real part is the model's: the output is the mocked head of the real body.
    assert got[0].shape == (2, 3)


def test_12_2_jit_taking_the_tree_as_an_argument_is_flaxmock_jit():
    tree = _mocked_net()
    with pytest.raises(TypeError, match="Parameter"):
        jax.jit(flaxmock.call)(tree, _X)
    step = flaxmock.jit(flaxmock.call)
    expected = _eager_draws(2)
    np.testing.assert_array_equal(step(tree, _X), expected[0])
    np.testing.assert_array_equal(step(tree, _X), expected[1])
    assert _head(tree).call_count == 2


@pytest.mark.parametrize("how", ["eager", "pz.variable_jit"])
def test_19_8_mock_inside_fori_loop_draws_per_iteration(how):
    # lm1b's sampler: a while_loop whose body calls the (mocked) decoder closed over.
    tree = _mocked_net()

    def sample(tree, x):
        def body(i, out):
            return out.at[i].set(flaxmock.call(tree, x))

        return jax.lax.fori_loop(0, 3, body, jnp.zeros((3, 2, 3)))

    run = sample if how == "eager" else pz.variable_jit(sample)
    out = run(tree, _X)
    assert not np.array_equal(out[0], out[1]) and not np.array_equal(out[1], out[2])
    if how == "eager":
        # The counter held a value: the loop's draws are the eager sequence's.
        for g, e in zip(out, _eager_draws(3), strict=True):
            np.testing.assert_array_equal(g, e)
    assert _head(tree).call_count == 3
    # Nothing traced is left in the tree: it keeps working eagerly.
    assert flaxmock.call(tree, _X).shape == (2, 3)
    assert _head(tree).call_count == 4


def test_19_8_mock_inside_while_loop_under_jit():
    tree = _mocked_net()

    def sample(x):
        def body(state):
            i, acc = state
            return i + 1, acc + flaxmock.call(tree, x)

        return jax.lax.while_loop(lambda s: s[0] < 2, body, (0, jnp.zeros((2, 3))))[1]

    expected = sum(_eager_draws(2))
    np.testing.assert_allclose(jax.jit(sample)(_X), expected, rtol=1e-6)
    assert _head(tree).call_count == 2


class _AuxHeads(nn.Module):
    """DETR's auxiliary heads: one head module mapped over the decoder layers by a plain vmap."""

    @nn.compact
    def __call__(self, hs):
        return jax.vmap(nn.Dense(3, name="cls"))(hs)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_19_4_vmap_lanes_draw_their_own_values(jit):
    hs = jnp.ones((4, 2, 5))  # (layers, queries, dim): every layer's input is the same here
    tree = flaxmock.mock(flaxmock.unflaxify(_AuxHeads(), hs), "cls")
    run = pz.variable_jit(flaxmock.call) if jit else flaxmock.call
    out = run(tree, hs)
    assert out.shape == (4, 2, 3)
    assert len({np.asarray(lane).tobytes() for lane in out}) == 4

    # A vmap over a closure of the tree, nested twice: every lane of both levels differs.
    single = flaxmock.mock(flaxmock.unflaxify(nn.Dense(3), hs[0]), "")
    nested = jax.vmap(jax.vmap(lambda h: flaxmock.call(single, h)))(jnp.ones((2, 3, 2, 5)))
    assert len({np.asarray(lane).tobytes() for lane in nested.reshape(6, 2, 3)}) == 6


def test_19_4_unbatched_inputs_stay_identical_and_eager_equals_jit():
    # Lanes whose inputs are not batched compute the same thing: the mock draws the same.
    tree = flaxmock.mock(flaxmock.unflaxify(nn.Dense(3), _X), "")
    out = jax.vmap(lambda _: flaxmock.call(tree, _X))(jnp.arange(3))
    np.testing.assert_array_equal(out[0], out[1])
    # Outside vmap nothing is folded in: eager and jit draw the same numbers.
    fresh = flaxmock.mock(flaxmock.unflaxify(nn.Dense(3), _X), "")
    np.testing.assert_array_equal(
        pz.variable_jit(flaxmock.call)(fresh, _X),
        flaxmock.call(flaxmock.mock(flaxmock.unflaxify(nn.Dense(3), _X), ""), _X),
    )


class _BnBlock(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        return nn.BatchNorm(use_running_average=not train)(nn.Dense(4)(x))


class _BnNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        return nn.Dense(2, name="out")(_BnBlock(name="block")(x, train))


def _abstract(variables):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), variables)


@pytest.mark.parametrize("how", ["bind", "materialize", "bind-then-mock"])
def test_19_1_mocked_state_keeps_the_values_the_tree_is_given(how):
    model = _BnNet()
    x = jnp.arange(12.0).reshape(3, 4)
    variables = model.init(jax.random.key(0), x)
    stats = jax.tree.map(lambda v: v + 0.5, variables["batch_stats"])  # not init's values
    given = {"params": variables["params"], "batch_stats": stats}
    tree = flaxmock.unflaxify(model, x, variables=_abstract(variables))
    if how == "bind":
        tree = flaxmock.bind(flaxmock.mock(tree, "block"), given)
        expected = stats["block"]
    elif how == "materialize":
        tree = flaxmock.materialize(flaxmock.mock(tree, "block"), jax.random.key(0))
        expected = variables["batch_stats"]["block"]  # init's: zero mean, unit variance
    else:
        tree = flaxmock.mock(flaxmock.bind(tree, given), "block")
        expected = stats["block"]
    _, updated = flaxmock.call(tree, x, mutable=["batch_stats"])
    # The mocked block's running statistics keep their value (the mock computes no update).
    jax.tree.map(np.testing.assert_array_equal, updated["batch_stats"]["block"], expected)
    _, real = model.apply(variables, x, mutable=["batch_stats"])
    assert jax.tree.structure(updated) == jax.tree.structure(real)


def test_19_1_bind_asks_for_the_state_a_mock_keeps():
    model = _BnNet()
    x = jnp.ones((3, 4))
    variables = model.init(jax.random.key(0), x)
    tree = flaxmock.mock(flaxmock.unflaxify(model, x, variables=_abstract(variables)), "block")
    with pytest.raises(
        flaxmock.BindVariablesError, match="missing: batch_stats/block/BatchNorm_0/mean"
    ):
        flaxmock.bind(tree, {"params": variables["params"]})


class _Decoder(nn.Module):
    """A decoder step with a decode cache, as flax wmt's and lm1b's."""

    @nn.compact
    def __call__(self, x):
        attn = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=4, decode=True)
        return nn.Dense(4, name="out")(attn(x, x))


def test_19_1_mocked_attention_keeps_its_decode_cache():
    model = _Decoder()
    x = jnp.ones((1, 1, 4))
    variables = model.init(jax.random.key(0), jnp.ones((1, 5, 4)))
    tree = flaxmock.unflaxify(model, x, variables=_abstract(variables))
    tree = flaxmock.bind(flaxmock.mock(tree, nn.MultiHeadDotProductAttention), variables)
    _, updated = flaxmock.call(tree, x, mutable=["cache"])
    jax.tree.map(np.testing.assert_array_equal, updated["cache"], variables["cache"])
    assert int(updated["cache"]["MultiHeadDotProductAttention_0"]["cache_index"]) == 0


class _Child(nn.Module):
    inner: nn.Module

    @nn.compact
    def __call__(self, x):
        return self.inner(x) + 1.0


class _SharedTwice(nn.Module):
    """One module passed to two children (flaxformer's shared relative-position embedding)."""

    def setup(self):
        self.shared = nn.Dense(4)
        self.a = _Child(self.shared)
        self.b = _Child(self.shared)

    def __call__(self, x):
        return self.b(self.a(x))


def test_19_5_module_reachable_at_two_paths_is_mocked_at_both():
    model = _SharedTwice()
    x = jnp.ones((2, 4))
    tree = flaxmock.unflaxify(model, x, variables=model.init(jax.random.key(0), x))

    def under_a(layer):  # a predicate that sees only the call made from `a`
        return layer.info.call_path[:1] == ((0, "a.__call__"),) and layer.info.scope_path == (
            "shared",
        )

    mocked = flaxmock.mock(tree, under_a)
    assert isinstance(
        mocked.submodule_calls[(0, "a.__call__")].submodule_calls[(0, "shared.__call__")],
        flaxmock.MockLayer,
    )
    assert isinstance(
        mocked.submodule_calls[(1, "b.__call__")].submodule_calls[(0, "shared.__call__")],
        flaxmock.MockLayer,
    )
    # Putting back the call under `b` puts back the module at both paths.
    back = flaxmock.unmock(mocked, lambda layer: layer.info.call_path[:1] == ((1, "b.__call__"),))
    assert back == tree
    # The mocked model runs, both places drawing from mocks (the real Dense would give
    # out_b = W (W x + b + 1) + b + 1).
    out = flaxmock.call(mocked, x)
    assert out.shape == (2, 4)
    assert not np.allclose(out, flaxmock.call(tree, x))


_SCANNED_MESH_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, flax.linen as nn, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import flaxmock

    class Layer(nn.Module):
        @nn.compact
        def __call__(self, x, _):
            w = self.param(
                "w", nn.with_logical_partitioning(nn.initializers.normal(), ("embed", "mlp")),
                (8, 16))
            return jnp.tanh(x @ w) @ w.T, None

    class Stack(nn.Module):  # MaxText's scanned decoder layers
        @nn.compact
        def __call__(self, x):
            layers = nn.scan(
                Layer, variable_axes={"params": 0}, split_rngs={"params": True}, length=3,
                in_axes=nn.broadcast, metadata_params={nn.PARTITION_NAME: "layers"})
            return layers(name="layers")(x, None)[0]

    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
    rules = (("embed", None), ("mlp", "model"), ("layers", None))
    x = jax.device_put(jnp.ones((4, 8)), NamedSharding(mesh, P("data", None)))
    tree = flaxmock.unflaxify(Stack(), x)
    mocked = flaxmock.mock(tree, "layers", mesh=mesh, rules=rules)
    out = flaxmock.call(mocked, x)

    # The oracle: one step of the real body, compiled with its parameters sharded.
    one = Layer()
    v = jax.eval_shape(one.init, jax.random.key(0), x, None)
    with nn.logical_axis_rules(rules):
        shard = nn.logical_to_mesh_sharding(nn.get_partition_spec(v), mesh, rules)
    v = jax.device_put(jax.jit(one.init)(jax.random.key(0), x, None), shard)
    real = jax.jit(lambda v, x: one.apply(v, x, None)[0])(v, x)
    assert out.shape == real.shape and out.dtype == real.dtype
    assert out.sharding.is_equivalent_to(real.sharding, 2), (out.sharding, real.sharding)
    print("OK")
    """
)


def test_19_9_mesh_mock_of_a_scan_body_compiles_one_step():
    run_on_8_cpu_devices(_SCANNED_MESH_SCRIPT)


def _apply_loop(model, variables, tokens):
    cache, outs = variables["cache"], []
    for i in range(tokens.shape[1]):
        out, updated = model.apply(
            {"params": variables["params"], "cache": cache}, tokens[:, i : i + 1], mutable=["cache"]
        )
        cache, outs = updated["cache"], outs + [out]
    return jnp.concatenate(outs, 1), cache


@pytest.mark.parametrize("how", ["eager", "flaxmock.jit", "fori_loop"])
def test_19_17_decode_loop_with_bind_equals_apply(how):
    model = _Decoder()
    tokens = jax.random.normal(jax.random.key(1), (1, 4, 4))
    variables = model.init(jax.random.key(0), jnp.ones((1, 4, 4)))  # sizes the cache
    params = {"params": variables["params"]}
    # Converted for one step, with variables= holding the full-length cache.
    tree = flaxmock.unflaxify(model, tokens[:, :1], variables=variables)
    expected, expected_cache = _apply_loop(model, variables, tokens)

    # call(..., mutable=["cache"]) returns the new cache and leaves the tree as it was.
    first, updated = flaxmock.call(tree, tokens[:, :1], mutable=["cache"])
    again, _ = flaxmock.call(tree, tokens[:, :1], mutable=["cache"])
    np.testing.assert_array_equal(first, again)
    assert int(updated["cache"]["MultiHeadDotProductAttention_0"]["cache_index"]) == 1

    def call_step(tree, tok):
        return flaxmock.call(tree, tok, mutable=["cache"])

    step = call_step if how == "eager" else flaxmock.jit(call_step)
    if how == "fori_loop":

        def body(i, state):
            cache, outs = state
            tok = jax.lax.dynamic_slice_in_dim(tokens, i, 1, axis=1)
            out, updated = flaxmock.call(
                flaxmock.bind(tree, params | {"cache": cache}), tok, mutable=["cache"]
            )
            return updated["cache"], jax.lax.dynamic_update_slice_in_dim(outs, out, i, axis=1)

        cache, got = jax.jit(
            lambda: jax.lax.fori_loop(0, 4, body, (variables["cache"], jnp.zeros((1, 4, 4))))
        )()
    else:
        now, outs = tree, []
        for i in range(4):
            out, updated = step(now, tokens[:, i : i + 1])
            cache, outs = updated["cache"], outs + [out]
            now = flaxmock.bind(now, params | {"cache": cache})
        got = jnp.concatenate(outs, 1)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    jax.tree.map(np.testing.assert_array_equal, cache, expected_cache)


def test_19_17_converting_without_variables_records_a_one_token_cache():
    # The documented trap: without variables= the converter records init on the example, so
    # the cache is as long as the example (one token), not the sequence to decode.
    model = _Decoder()
    tree = flaxmock.unflaxify(model, jnp.ones((1, 1, 4)))
    _, cache = flaxmock.eval_shape(
        lambda t: flaxmock.call(t, jnp.ones((1, 1, 4)), mutable=["cache"]), tree
    )
    assert cache["cache"]["MultiHeadDotProductAttention_0"]["cached_key"].shape[1] == 1


class _Router(nn.Module):
    experts: int = 64

    @nn.compact
    def __call__(self, x):
        probs = jax.nn.softmax(nn.Dense(self.experts, name="gate")(x))
        weights, indices = jax.lax.top_k(probs, 2)
        return weights / weights.sum(-1, keepdims=True), indices


class _Moe(nn.Module):
    """A Mixtral-style sparse MLP: each token's output is its routed experts' rows."""

    @nn.compact
    def __call__(self, x):
        weights, indices = _Router(name="router")(x)
        experts = self.param("experts", nn.initializers.normal(), (64, x.shape[-1]))
        onehot = jax.nn.one_hot(indices, 64)  # an index out of range gives a zero row
        return jnp.einsum("tk,tke,ed->td", weights, onehot, experts)


def test_19_18_default_fill_gives_invalid_router_indices_and_meaning_fills_fix_it():
    x = jnp.ones((64, 8))
    tree = flaxmock.materialize(flaxmock.unflaxify(_Moe(), x), 0)
    # The default integer rule is [-100, 100]: most tokens get no expert.
    plain = flaxmock.call(flaxmock.mock(tree, "router"), x)
    assert int((jnp.abs(plain).sum(-1) == 0).sum()) > 16
    fill = {"0": flaxmock.fills.probabilities(), "1": flaxmock.fills.indices(64)}
    mocked = flaxmock.mock(tree, "router", fill=fill)
    weights, indices = flaxmock.call(mocked.submodule_calls[(0, "router.__call__")], x)
    assert bool(((indices >= 0) & (indices < 64)).all())
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    assert int((jnp.abs(flaxmock.call(mocked, x)).sum(-1) == 0).sum()) == 0


def test_19_18_sown_and_state_paths_take_their_fills():
    x = jnp.ones((3, 4))
    tree = flaxmock.unflaxify(_BnNet(), x)
    fill = {"batch_stats/**/var": flaxmock.fills.nonnegative(), "batch_stats/**/mean": "zeros"}
    mocked = flaxmock.mock(tree, "block", fill=fill)
    mocked = flaxmock.mock(mocked, "out")
    _, stats = flaxmock.call(mocked, x, mutable=["batch_stats"])
    assert bool((stats["batch_stats"]["block"]["BatchNorm_0"]["var"] >= 0).all())
    np.testing.assert_array_equal(stats["batch_stats"]["block"]["BatchNorm_0"]["mean"], 0.0)


def test_19_18_copy_input_passes_the_argument_through():
    x = jnp.arange(12.0).reshape(3, 4)
    tree = flaxmock.unflaxify(_BnNet(), x)
    mocked = flaxmock.mock(tree, "block", fill=flaxmock.fills.copy_input(0))
    mocked = flaxmock.materialize(mocked, 0)
    variables = _BnNet().init(jax.random.key(0), x)
    expected = nn.Dense(2).apply({"params": variables["params"]["out"]}, x)
    np.testing.assert_allclose(flaxmock.call(mocked, x), expected, rtol=1e-6)


def test_19_18_fill_errors():
    x = jnp.ones((64, 8))
    tree = flaxmock.unflaxify(_Moe(), x)
    with pytest.raises(flaxmock.FillError, match=r"keys \['indices'\] match no output.*'0', '1'"):
        flaxmock.mock(tree, "router", fill={"indices": flaxmock.fills.indices(64)})
    with pytest.raises(
        flaxmock.FillError, match=r"fills integer arrays, but this output is float32"
    ):
        flaxmock.mock(tree, "router", fill=flaxmock.fills.indices(64))
    with pytest.raises(flaxmock.FillError, match="positive int"):
        flaxmock.fills.indices(0)
    wrong = flaxmock.mock(tree, "router", fill={"1": flaxmock.fills.copy_input(0)})
    with pytest.raises(flaxmock.FillError, match=r"router.__call__: copy_input.*float32\[64, 8\]"):
        flaxmock.call(wrong.submodule_calls[(0, "router.__call__")], x)
