"""Every case where flaxmock gave a plausible wrong answer, and the test that now pins it.

Each case is a small model of our own with the shape of the public model that showed it; the
test asserts the right result (against ``module.apply`` / the real NNX call) or the specific
error class and message. Sections by area; add new cases to the table and a test below.

NNX cases (issues #12, #19):

====================  =================================================  ==========
case                  public model that showed it                        outcome
====================  =================================================  ==========
12.7 scan fn cached   flax docs scan-over-layers (module-level nnx.scan) fixed
12.8 checkpoint       tunix RematConfig.DECODER (jax.checkpoint)         warning
12.8 jax.jit          bonsai jitted forward over split/merge             warning
19.3 loops            lax.fori_loop / gspmd guide raw lax.scan           warning
19.3 nnx.remat        (Flax transform, state written back)               fixed
12.9 children sow     flax examples/gemma Block mocked (layers/N/mlp)    fixed
12.10 never called    bonsai Qwen3 reads self.embedder.embedding[...]    fixed
12.11 materialize     tunix Einsum with nnx.initializers.normal()        fixed (documented)
12 abstract(list)     (first-use trial)                                  error
12 abstract(model)    (first-use trial)                                  error
12 materialize "seed" (first-use trial)                                  error (vocabulary work)
12 intercept(None)    (first-use trial)                                  error (vocabulary work)
12 eval_shape error   shape error deep in a submodule                    note names module call
12 abstract + jit     partly abstract model through nnx.jit / jax.jit    documented limit
19.14 Rngs(0,noise=1) materialize(model, 0) kept every stream            fixed (vocabulary work)
19.13 value_and_grad  flax gspmd guide train_step (jax.value_and_grad)   fixed (+ warning)
19.5 shared module    tied module at two paths, selected by one path     fixed
====================  =================================================  ==========
"""

from __future__ import annotations

import re
import warnings
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import flaxmock
import flaxmock.nnx
from helpers import nnx_values

# ---------------------------------------------------------------------------------------------
# NNX (issues #12 and #19, NNX cases)
# ---------------------------------------------------------------------------------------------


class _ScanBlock(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.lin = nnx.Linear(4, 4, rngs=rngs)

    def __call__(self, x):
        return nnx.relu(self.lin(x))


# The Flax docs' scan over layers: the body is a module-level function, traced once and then
# reused by JAX for every later call with the same shapes.
@nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
def _scan_blocks(x, block):
    return block(x)


@nnx.vmap(in_axes=(0, None), out_axes=0)
def _vmap_blocks(block, x):
    return block(x)


class _ScanModel(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, n: int = 3):
        @nnx.split_rngs(splits=n)
        @nnx.vmap
        def make(rngs):
            return _ScanBlock(rngs)

        self.blocks = make(rngs)

    def __call__(self, x):
        return _scan_blocks(x, self.blocks), _vmap_blocks(self.blocks, x)


def _calls_seen(fn):
    seen = []

    def log(next_fun, args, kwargs, context):
        seen.append((type(context.module).__name__, context.method_name))
        return next_fun(*args, **kwargs)

    with flaxmock.nnx.intercept_methods(log):
        fn()
    return seen


@pytest.mark.parametrize("jitted", [False, True], ids=["eager", "nnx.jit"])
def test_12_7_cached_scan_function_is_intercepted(jitted):
    model = _ScanModel(nnx.Rngs(0))
    x = jnp.ones((2, 4))
    run = nnx.jit(lambda m, x: m(x)) if jitted else (lambda m, x: m(x))
    expected = run(model, x)  # JAX traces (and caches) every body here, outside any context.
    # Under nnx.jit the calls are seen while the context's fresh trace runs.
    one_call = [("_ScanModel", "__call__")] + [
        ("_ScanBlock", "__call__"),
        ("Linear", "__call__"),
    ] * 2
    assert _calls_seen(lambda: run(model, x)) == one_call
    if not jitted:
        # Twice in one context: seen twice (a fresh trace per outermost call).
        assert _calls_seen(lambda: (run(model, x), run(model, x))) == one_call * 2

    def zero_linear(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        return jnp.zeros_like(out) if isinstance(context.module, nnx.Linear) else out

    with flaxmock.nnx.intercept_methods(zero_linear):
        altered = run(model, x)
    for leaf in jax.tree.leaves(altered):
        np.testing.assert_array_equal(leaf, 0.0)
    # Outside the context the cached traces run again, unchanged.
    jax.tree.map(np.testing.assert_array_equal, run(model, x), expected)


class _Layer(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.lin = nnx.Linear(4, 4, rngs=rngs)

    def __call__(self, x):
        return self.lin(x)


class _Decoder(nnx.Module):
    """One layer run through a transform, as tunix (remat), bonsai (jit) and gspmd (scan) do."""

    def __init__(self, rngs: nnx.Rngs, how: str):
        self.layer = _Layer(rngs)
        self.how = how

    def __call__(self, x):
        graphdef, state = nnx.split(self.layer)

        def run(state, x):
            return nnx.merge(graphdef, state)(x)

        if self.how == "jax.checkpoint":  # tunix RematConfig.DECODER
            return jax.checkpoint(run)(state, x)
        if self.how == "fori_loop":  # a loop over split state
            return jax.lax.fori_loop(0, 2, lambda i, x: run(state, x), x)
        if self.how == "lax.scan":  # the gspmd guide's raw scan over split state
            return jax.lax.scan(lambda c, _: (run(state, c), None), x, None, length=2)[0]
        if self.how == "nnx.remat":  # Flax's own transform writes the state back
            return nnx.remat(lambda layer, x: layer(x))(self.layer, x)
        raise AssertionError(self.how)


_FROZEN = {"jax.checkpoint": "checkpoint / remat", "fori_loop": "fori_loop", "lax.scan": "scan"}


@pytest.mark.parametrize("how", [*_FROZEN, "nnx.remat"])
@pytest.mark.parametrize("jitted", [False, True], ids=["eager", "nnx.jit"])
def test_12_8_19_3_mock_in_a_copy_not_written_back_warns(how, jitted):
    mocked = flaxmock.nnx.mock(_Decoder(nnx.Rngs(0), how), "layer/lin")
    x = jnp.ones((2, 4))
    run = nnx.jit(lambda m, x: m(x)) if jitted else (lambda m, x: m(x))
    if how == "nnx.remat":
        # The state flows back: fresh draws on every call, every call counted, no warning.
        first, second = run(mocked, x), run(mocked, x)
        assert not np.array_equal(first, second)
        assert mocked.layer.lin.call_count == 2
        return
    match = (
        rf"layer/lin \(a mock of Linear\) ran inside a JAX transform \({re.escape(_FROZEN[how])}\)"
    )
    with pytest.warns(flaxmock.nnx.FrozenMockWarning, match=match):
        first = run(mocked, x)
    # Warned once per mock; the draws are frozen and the count says these calls are not counted.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = run(mocked, x)
    np.testing.assert_array_equal(first, second)
    assert mocked.layer.lin.call_count == 0


def test_12_8_plain_jax_jit_over_split_merge():
    # bonsai's jitted forward: jax.jit over (graphdef, state), the state not returned.
    mocked = flaxmock.nnx.mock(_Layer(nnx.Rngs(0)), "lin")
    graphdef, state = nnx.split(mocked)
    forward = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
    x = jnp.ones((2, 4))
    with pytest.warns(flaxmock.nnx.FrozenMockWarning, match=r"lin .*\(jit\).*nnx\.update"):
        forward(state, x)
    assert mocked.lin.call_count == 0

    # Returning the state and applying it makes the count advance and the draws differ.
    @jax.jit
    def step(state, x):
        model = nnx.merge(graphdef, state)
        return model(x), nnx.state(model)

    fresh = flaxmock.nnx.mock(_Layer(nnx.Rngs(0)), "lin")
    graphdef, state = nnx.split(fresh)
    with pytest.warns(flaxmock.nnx.FrozenMockWarning):
        first, state = step(state, x)
    second, state = step(state, x)
    nnx.update(fresh, state)
    assert not np.array_equal(first, second)
    assert fresh.lin.call_count == 2


class _SowingMlp(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.lin = nnx.Linear(4, 4, rngs=rngs)

    def __call__(self, x):
        h = self.lin(x)
        self.sow(nnx.Intermediate, "act", h)
        return h


class _SowingBlock(nnx.Module):
    """flax examples/gemma's Block: its children sow (``layers/N/mlp/...``), so does it."""

    def __init__(self, rngs: nnx.Rngs):
        self.mlp = _SowingMlp(rngs)
        self.experts = nnx.List([_SowingMlp(rngs), _SowingMlp(rngs)])

    def __call__(self, x):
        self.sow(nnx.Intermediate, "inp", x.sum())
        return self.mlp(x) + self.experts[1](x)


class _SowingModel(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.layers = nnx.List([_SowingBlock(rngs), _SowingBlock(rngs)])

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


# Flax deprecates `self.sow` outside `nnx.capture` (the models sow as flax examples/gemma does).
_SOW_DEPRECATED = "ignore:.*outside of 'nnx.capture\\(\\)' is deprecated:DeprecationWarning"


def _spec_tree(tree):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


@pytest.mark.filterwarnings(_SOW_DEPRECATED)
@pytest.mark.parametrize("jitted", [False, True], ids=["eager", "nnx.jit"])
def test_12_9_mock_replays_what_its_children_sow(jitted):
    x = jnp.ones((2, 4))
    run = nnx.jit(lambda m, x: m(x)) if jitted else (lambda m, x: m(x))
    real = _SowingModel(nnx.Rngs(0))
    run(real, x)
    mocked = flaxmock.nnx.mock(_SowingModel(nnx.Rngs(0)), _SowingBlock)
    run(mocked, x)
    expected = nnx.to_pure_dict(nnx.state(real, nnx.Intermediate))
    got = nnx.to_pure_dict(nnx.state(mocked, nnx.Intermediate))
    assert _spec_tree(got) == _spec_tree(expected)
    assert set(got["layers"][0]["mlp"]) == {"act"} and 0 not in got["layers"][0]["experts"]
    assert not np.array_equal(got["layers"][0]["mlp"]["act"], expected["layers"][0]["mlp"]["act"])

    # The same under nnx.capture, called twice.
    _, expected = nnx.capture(_SowingModel(nnx.Rngs(0)), nnx.Intermediate)(x)
    mocked = flaxmock.nnx.mock(_SowingModel(nnx.Rngs(0)), _SowingBlock)
    for _ in range(2):
        _, got = nnx.capture(mocked, nnx.Intermediate)(x)
        assert _spec_tree(nnx.to_pure_dict(got)) == _spec_tree(nnx.to_pure_dict(expected))


class _Embedder(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.embedding = nnx.Param(jax.random.normal(rngs.params(), (10, 4)))


class _ReadsEmbedding(nnx.Module):
    """bonsai Qwen3: ``self.embedder.embedding[...]`` read directly, never called."""

    def __init__(self, rngs: nnx.Rngs):
        self.embedder = _Embedder(rngs)
        self.out = nnx.Linear(4, 4, rngs=rngs)
        self.spare = nnx.Linear(4, 2, rngs=rngs)  # built, never used

    def __call__(self, tokens):
        return self.out(self.embedder.embedding[...][tokens])


def _param_count(model) -> int:
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_12_10_summary_counts_modules_never_called():
    model = flaxmock.nnx.abstract(_ReadsEmbedding, nnx.Rngs(0))
    table = flaxmock.nnx.summary(model, jax.ShapeDtypeStruct((3,), jnp.int32))
    assert table.total_params == _param_count(model) == 40 + 20 + 10
    not_called = {row.path: row for row in table.rows if row.note == "not called"}
    assert set(not_called) == {"embedder", "spare"}
    assert not_called["embedder"].param_count == 40
    assert not_called["embedder"].module_type == "_Embedder"
    assert re.search(r"embedder\s+_Embedder\s+-\s+-\s+-\s+40\s+160 B\s+not called", str(table))


@pytest.mark.parametrize(
    "make, args",
    [
        (lambda: _ReadsEmbedding(nnx.Rngs(0)), (jnp.zeros((3,), jnp.int32),)),
        (lambda: _ScanModel(nnx.Rngs(0)), (jnp.ones((2, 4)),)),
        (lambda: _SowingModel(nnx.Rngs(0)), (jnp.ones((2, 4)),)),
    ],
    ids=["reads_embedding", "scan_model", "sowing_model"],
)
@pytest.mark.filterwarnings(_SOW_DEPRECATED)
def test_12_10_summary_total_is_the_param_count(make, args):
    model = flaxmock.nnx.abstract(make)
    assert flaxmock.nnx.summary(model, *args).total_params == _param_count(model)


class _EinsumAttention(nnx.Module):
    """tunix's Einsum projections with ``nnx.initializers.normal()``."""

    def __init__(self, rngs: nnx.Rngs):
        normal = nnx.initializers.normal()
        self.q = nnx.Einsum("BTD,DNH->BTNH", (64, 8, 16), kernel_init=normal, rngs=rngs)
        self.kv = nnx.Einsum("BSD,CDKH->CBSKH", (2, 64, 4, 16), kernel_init=normal, rngs=rngs)
        self.o = nnx.Linear(128, 64, rngs=rngs)

    def __call__(self, x):
        return self.o(self.q(x).reshape((*x.shape[:2], 128)))


def _params(model):
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


@pytest.mark.parametrize("mocked", [None, "q"], ids=["nothing_mocked", "q_mocked"])
def test_12_11_nnx_materialize_equals_jit_of_the_factory(mocked):
    model = flaxmock.nnx.abstract(_EinsumAttention, nnx.Rngs(0))
    if mocked:
        model = flaxmock.nnx.mock(model, mocked)
    got = _params(flaxmock.nnx.materialize(model, 0))
    jitted = _params(jax.jit(lambda: nnx.state(_EinsumAttention(nnx.Rngs(0))))())
    eager = _params(_EinsumAttention(nnx.Rngs(0)))
    assert set(got) == set(jitted) - {mocked}
    for name in got:
        jax.tree.map(
            lambda a, b: np.testing.assert_array_max_ulp(a, b, maxulp=1), got[name], jitted[name]
        )
    # What is not promised: the eager build's values (its normal() differs in the last bit).
    assert not np.array_equal(eager["kv"]["kernel"], jitted["kv"]["kernel"])
    np.testing.assert_array_max_ulp(eager["kv"]["kernel"], jitted["kv"]["kernel"], maxulp=1)


class _LinenEinsumStack(nn.Module):
    """The linen side of #12.11: normal() initialisers, one layer mocked."""

    @nn.compact
    def __call__(self, x):
        normal = nn.initializers.normal()
        x = nn.Dense(128, kernel_init=normal, name="q")(x)
        x = nn.Dense(64, kernel_init=normal, name="kv")(x)
        return nn.Dense(8, name="o")(x)


@pytest.mark.parametrize("mocked", [None, "q"], ids=["nothing_mocked", "q_mocked"])
def test_12_11_linen_materialize_equals_jit_of_init(mocked):
    model = _LinenEinsumStack()
    x = jnp.ones((2, 64))
    tree = flaxmock.unflaxify(model, x)
    if mocked:
        tree = flaxmock.mock(tree, mocked)
    real = flaxmock.materialize(tree, jax.random.key(0))
    jitted = jax.jit(model.init)(jax.random.key(0), x)["params"]
    got = {
        path.split(".")[0]: {name: p.value for name, p in layer.scope_data.parameters.items()}
        for (_, path), layer in real.submodule_calls.items()
        if hasattr(layer, "scope_data")
    }
    assert set(got) == set(jitted) - {mocked}
    for name in got:
        jax.tree.map(
            lambda a, b: np.testing.assert_array_max_ulp(a, b, maxulp=1), got[name], jitted[name]
        )


# Raw errors of the NNX front door (#12): each a FlaxmockError naming the argument and the fix.


def test_12_abstract_of_a_factory_returning_a_list():
    with pytest.raises(
        flaxmock.InvalidArgumentError,
        match=r"factory '<lambda>' returned a list, not an nnx\.Module\. Fix: .*nnx\.Sequential",
    ):
        flaxmock.nnx.abstract(lambda: [nnx.Linear(2, 2, rngs=nnx.Rngs(0))])


def test_12_abstract_of_a_built_model():
    with pytest.raises(
        flaxmock.InvalidArgumentError,
        match=r"(?s)got a built Linear .*abstract\(Linear, \.\.\., rngs=nnx\.Rngs\(0\)\)",
    ):
        flaxmock.nnx.abstract(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))


def test_12_materialize_with_a_string_seed():
    model = flaxmock.nnx.abstract(nnx.Linear, 2, 2, rngs=nnx.Rngs(0))
    with pytest.raises(flaxmock.InvalidArgumentError, match=r"got str 'seed'\. Fix: pass"):
        flaxmock.nnx.materialize(model, "seed")


def test_12_intercept_methods_of_none():
    with pytest.raises(flaxmock.InvalidArgumentError, match=r"takes a function .* got NoneType"):
        flaxmock.nnx.intercept_methods(None)


class _Wrapper(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.inner = nnx.Linear(3, 4, rngs=rngs)

    def __call__(self, x):
        return self.inner(x)


def test_12_eval_shape_error_names_the_module_call():
    model = _Wrapper(nnx.Rngs(0))
    with pytest.raises(TypeError, match="dot_general requires contracting") as info:
        flaxmock.nnx.eval_shape(model, jnp.ones((2, 5)))
    assert "flaxmock: raised in inner.__call__ (Linear)" in info.value.__notes__


class _TwoLinears(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.a = nnx.Linear(3, 3, rngs=rngs)
        self.b = nnx.Linear(3, 3, rngs=rngs)

    def __call__(self, x):
        return self.b(self.a(x))


def test_12_partly_abstract_model_through_jit_is_a_documented_limit():
    # `a` mocked, `b` still abstract. JAX refuses the abstract arguments of a jitted call before
    # flaxmock sees it (documented in abstract's docstring and docs/guarantees.md); an eager
    # call names the abstract parts and the fixes.
    model = flaxmock.nnx.mock(flaxmock.nnx.abstract(_TwoLinears, nnx.Rngs(0)), "a")
    x = jnp.ones((2, 3))
    with pytest.raises(TypeError, match="is not a valid JAX type"):
        nnx.jit(lambda m, x: m(x))(model, x)
    graphdef, state = nnx.split(model)
    with pytest.raises(TypeError, match="is not a valid JAX type"), warnings.catch_warnings():
        warnings.simplefilter("ignore", flaxmock.nnx.FrozenMockWarning)  # a raw jax.jit (#12.8)
        jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, x)
    with pytest.raises(
        flaxmock.AbstractParameterError, match=r"(?s)b: bias, kernel.*flaxmock\.nnx\.materialize"
    ):
        model(x)


class _KeepsRngs(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.lin = nnx.Linear(2, 2, rngs=rngs)
        self.rngs = rngs


def test_19_14_materialize_reseeds_every_stream_of_the_factory_rngs():
    # The factory took nnx.Rngs(0, noise=1): an int seed reseeds both streams, none is dropped.
    model = flaxmock.nnx.abstract(_KeepsRngs, nnx.Rngs(0, noise=1))
    real = flaxmock.nnx.materialize(model, 3)
    key = jax.random.key(3)
    noise = jax.random.fold_in(key, zlib.crc32(b"noise") & 0x7FFFFFFF)
    expected = _KeepsRngs(nnx.Rngs(default=key, noise=noise))
    got, want = nnx_values(real), nnx_values(expected)
    assert got.keys() == want.keys() and any("noise" in path for path in got)
    for path in want:
        np.testing.assert_array_equal(got[path], want[path])


class _Encoder(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.a = nnx.Linear(4, 4, rngs=rngs)
        self.b = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        return self.b(self.a(x))


def test_19_13_value_and_grad_over_a_whole_mocked_model():
    # The gspmd guide's train_step differentiates the model itself with jax.value_and_grad.
    mocked = flaxmock.nnx.mock(_Encoder(nnx.Rngs(0)), "a")
    x = jnp.ones((3, 4))

    def loss(model):
        return (model(x) ** 2).sum()

    # jax.value_and_grad differentiates a copy of the model, which is not written back (#12.8).
    with pytest.warns(flaxmock.nnx.FrozenMockWarning, match=r"a \(a mock of Linear\).*\(grad"):
        value, grads = jax.value_and_grad(loss)(mocked)
    ref_value, ref_grads = nnx.value_and_grad(loss)(mocked)  # Params only, the oracle
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    np.testing.assert_allclose(grads.b.kernel[...], ref_grads["b"]["kernel"][...], rtol=1e-6)
    np.testing.assert_array_equal(grads.a.counter[...], 0.0)
    assert mocked.a.call_count == 1  # the nnx.value_and_grad call, written back


class _Tied(nnx.Module):
    """One module at two paths (``self.dec = self.enc``), as tied encoders/decoders are."""

    def __init__(self, rngs: nnx.Rngs):
        self.enc = nnx.Linear(4, 4, rngs=rngs)
        self.dec = self.enc

    def __call__(self, x):
        return self.dec(nnx.relu(self.enc(x)))


@pytest.mark.parametrize(
    "where",
    ["enc", "dec", "*c", lambda module: isinstance(module, nnx.Linear), nnx.Linear],
    ids=["path_enc", "path_dec", "glob", "predicate", "class"],
)
def test_19_5_a_shared_module_is_mocked_at_every_path(where):
    model = _Tied(nnx.Rngs(0))
    mocked = flaxmock.nnx.mock(model, where)
    assert isinstance(mocked.enc, flaxmock.nnx.MockModule)
    assert mocked.dec is mocked.enc
    x = jnp.ones((2, 4))
    assert _spec_tree(mocked(x)) == _spec_tree(model(x))
    assert mocked.enc.call_count == 2
