"""Every case where flaxmock returned a plausible wrong answer, and the test that keeps it away.

Issues #12 ("Never silently wrong") and #19 (round two). Each case is reproduced by a small
inline model of the same shape as the public model that showed it, and asserts the right
result against ``module.apply`` / the real NNX call, or the specific error and message.
One section per area; the table grows with each.

=================================================  =====  =============================  =======
case                                               issue  public model that showed it    outcome
=================================================  =====  =============================  =======
linen: blocks whose parent is a pushed scope       12.1   big_vision Gemma (scan=False)  fixed
linen: method= tree owns variables it never reads  12.3   flax examples wmt (decode)     fixed
linen: cut lists in error messages                 12.3   flax examples wmt (decode)     fixed
linen: abstract unflaxify with rngs={'dropout'}    12.4   flax examples (Dropout)        fixed
linen: unwrapped params or a missing subtree       12.5   flax examples (checkpoints)    error
linen: mutable=True, every param owner mocked      12.6   flax examples (all linen)      fixed
linen: model errors with no module path            12     eval_shape of a tree           fixed
linen: out= specs not checked                      12     value-dependent outputs        error
summary given the other side's model               12.12  flax examples/gemma (NNX)      error
summary cells spanning lines                       12.12  flax examples/gemma (NNX)      fixed
linen: setup calls one of the module's methods     19.7   flaxformer T5 Decoder.setup    fixed
linen: summary bytes leave out state               19.2   tutorial 03 with BatchNorm     fixed
linen: param_with_axes models and bind             19.10  flaxformer T5, t5x             fixed
linen: jit closing over a mocked tree              12.2   jax.jit closing over a call    fixed
linen: state under a mock                          19.1   BatchNorm; flax wmt cache      fixed
linen: jax.vmap lanes of a mock                    19.4   scenic DETR auxiliary heads    fixed
linen: shared module selected by one path          19.5   module passed to 2 children    fixed
linen: mock in a loop body                         19.8   flax lm1b while_loop sampler   fixed
linen: mesh= in an nn.scan body                    19.9   MaxText scanned decoders       fixed
linen: decode loops                                19.17  flax wmt/lm1b decoding         recipe
linen: fills with meaning                          19.18  MaxText router, ogbg nets      fixed
linen: a submodule's params read, never called     12.10  bonsai Qwen3 (its linen form)  fixed
both: a predicate that raises (in test_select.py)  19.16  IndexError in a where lambda   error
linen: model mocked whole, state it updates        13.4   ResNet train step mocked whole fixed
=================================================  =====  =============================  =======

NNX cases (issues #12, #19):

====================  =================================================  ==========
case                  public model that showed it                        outcome
====================  =================================================  ==========
12.7 scan fn cached   flax docs scan-over-layers (module-level nnx.scan) fixed
12.8 checkpoint       tunix RematConfig.DECODER (jax.checkpoint)         warning
12.8 jax.jit          bonsai jitted forward over split/merge             fixed (host count)
19.3 loops            lax.fori_loop / gspmd guide raw lax.scan           fixed (host count)
19.3 jit closure      jax.jit of a function closing over the model       fixed (host count)
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
19.13 value_and_grad  flax gspmd guide train_step (jax.value_and_grad)   fixed (host count)
19.5 shared module    tied module at two paths, selected by one path     fixed
19.4 vmap lanes       mock broadcast into nnx.vmap(in_axes=(None, 0))    fixed
19.18 copy_input      an NNX mock passing its input through              fixed
13.5 sow reduce_fn    a value sown whole (state) redrawn on every call    fixed
13.4 BatchNorm state  NNX mock kept no BatchStat/Cache it replaced       fixed
19.6 created vars     flax VAE: self.kl_loss = Loss(kl); nnx.pop         fixed
19.15 init_cache      init_cache through a mocked MultiHeadAttention     fixed
19.11 array attrs     bonsai Gemma3 embed_scale / position_ids buffers   fixed
19.12 explicit mesh   flax MiniGPT doc (jax.set_mesh, Explicit axes)     fixed (linen too)
====================  =================================================  ==========

Spy cases (issue #15): a spy never returns a silently empty record nor leaves a tracer.

===========================  =======================================  ========
case                         public model that showed it              outcome
===========================  =======================================  ========
15 spy in a vmap body        nn.vmap(variable_axes={'params': 0})     error
15 jit closing over a spy    jax.jit closing over flaxmock.call       error
===========================  =======================================  ========
"""

from __future__ import annotations

import re
import textwrap
import warnings
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from penzai import pz

import flaxmock
import flaxmock.nnx
import zoo
from helpers import nnx_values, run_on_8_cpu_devices

# ---------------------------------------------------------------------------------------------
# Linen conversion and variables (issues #12.1, #12.3-#12.6, #12 raw errors, #19.2, #19.7,
# #19.10)
# ---------------------------------------------------------------------------------------------


def _jit_init(model, *args, **kwargs):
    # materialize gives the values of a jit-compiled init (eager init may differ in the last bit).
    return jax.jit(lambda k: model.init(k, *args, **kwargs))(jax.random.key(0))


def _n_params(variables) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))


class _PushedBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Dense(4)(x)) + x


class _PushedStack(nn.Module):
    """Blocks built on pushed scopes, as big_vision's Gemma builds them without scan."""

    n: int = 3

    @nn.compact
    def __call__(self, x):
        layers = self.scope.push("layers")
        for i in range(self.n):
            x = _PushedBlock(parent=layers.push(str(i)))(x)
        return nn.Dense(2)(x)


def test_pushed_scope_blocks_are_separate_layers():
    model, x = _PushedStack(), jnp.arange(8.0).reshape(2, 4) / 8
    variables = model.init(jax.random.key(0), x)
    tree = flaxmock.unflaxify(model, x)
    blocks = [k for k in tree.submodule_calls if k[1].startswith("layers/")]
    assert blocks == [(0, "layers/0.__call__"), (1, "layers/1.__call__"), (2, "layers/2.__call__")]
    paths = [tree.submodule_calls[k].info.scope_path for k in blocks]
    assert paths == [("layers", "0"), ("layers", "1"), ("layers", "2")]
    # Each block's Dense owns its own parameters; the root owns none of theirs.
    assert tree.scope_data is None
    rows = {r.path: r for r in flaxmock.summary(tree).rows}
    for i in range(3):
        assert rows[f"layers/{i}/Dense_0"].param_count == 20
        assert not rows[f"layers/{i}"].note
    assert flaxmock.summary(tree).total_params == _n_params(variables)
    # Exact equality with module.apply, bound and materialized, eager and compiled.
    bound = flaxmock.bind(tree, variables)
    np.testing.assert_array_equal(flaxmock.call(bound, x), model.apply(variables, x))
    np.testing.assert_array_equal(
        pz.variable_jit(flaxmock.call)(bound, x), model.apply(variables, x)
    )
    real = flaxmock.materialize(tree, jax.random.key(0))
    np.testing.assert_array_equal(flaxmock.call(real, x), model.apply(_jit_init(model, x), x))


def test_pushed_scope_block_mocked_alone():
    model, x = _PushedStack(), jnp.arange(8.0).reshape(2, 4) / 8
    variables = model.init(jax.random.key(0), x)
    tree = flaxmock.mock(flaxmock.unflaxify(model, x), where="layers/1", seed=0)
    rows = [r.path for r in flaxmock.summary(tree).rows]
    assert "layers/1/Dense_0" not in rows and "layers/0/Dense_0" in rows
    bound = flaxmock.bind(tree, variables)
    # Blocks 0 and 2 and the head run for real around the mocked block 1: rebuild the output
    # from block 1's mocked output with the real modules.
    params = variables["params"]
    seen = {}

    def spy(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and context.module.scope is not None:
            seen[tuple(context.module.scope.path)] = out
        return out

    with nn.intercept_methods(spy):
        out = flaxmock.call(bound, x)
    mocked = seen[("layers", "1")]
    h = _PushedBlock().apply({"params": params["layers"]["2"]}, mocked)
    expected = nn.Dense(2).apply({"params": params["Dense_0"]}, h)
    np.testing.assert_array_equal(out, expected)
    # Only the mocked block's parameters are gone: materialize allocates the others.
    real = flaxmock.materialize(tree, jax.random.key(0))
    assert flaxmock.call(real, x).shape == (2, 2)


def test_pushed_scope_blocks_mocked_by_class():
    model, x = _PushedStack(), jnp.ones((2, 4))
    tree = flaxmock.mock(flaxmock.unflaxify(model, x), where=_PushedBlock, seed=0)
    summary = flaxmock.summary(tree)
    assert [r.path for r in summary.rows] == [
        "<root>",
        "layers/0",
        "layers/1",
        "layers/2",
        "Dense_0",
    ]
    assert summary.total_params == 10
    real = flaxmock.materialize(tree, jax.random.key(0))
    assert flaxmock.call(real, x).shape == (2, 2)


class _SetupLayers(nn.Module):
    """A decoder whose setup builds its layers through one of its own methods (flaxformer)."""

    n: int = 2

    def setup(self):
        self.layers = self._make_layers()

    def _make_layers(self):
        return [nn.Dense(4) for _ in range(self.n)]

    def __call__(self, x):
        for layer in self.layers:
            x = nn.tanh(layer(x))
        return x


class _SetupModel(nn.Module):
    def setup(self):
        self.decoder = _SetupLayers()

    def __call__(self, x):
        return self.decoder(x)


@pytest.mark.parametrize("given", ["abstract", "variables"])
def test_setup_calling_own_method_converts_and_runs(given):
    model, x = _SetupModel(), jnp.arange(8.0).reshape(2, 4) / 8
    variables = model.init(jax.random.key(0), x)
    tree = flaxmock.unflaxify(model, x, variables=variables if given == "variables" else None)
    assert [r.path for r in flaxmock.summary(tree).rows] == [
        "<root>",
        "decoder",
        "decoder/layers_0",
        "decoder/layers_1",
    ]
    bound = flaxmock.bind(tree, variables)
    np.testing.assert_array_equal(flaxmock.call(bound, x), model.apply(variables, x))
    mocked = flaxmock.mock(bound, where="decoder/layers_0", seed=0)
    out = flaxmock.call(mocked, x)
    assert out.shape == (2, 4) and not np.array_equal(out, model.apply(variables, x))


class _DropoutModel(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        return nn.Dropout(0.5, deterministic=not train)(nn.Dense(4)(x))


@pytest.mark.parametrize(
    "rngs",
    [{"dropout": 1}, {"dropout": 1, "params": 2}, 1],
    ids=["dropout-only", "dropout-and-params", "one-key"],
)
def test_abstract_conversion_takes_apply_rngs(rngs):
    model, x = _DropoutModel(), jnp.arange(6.0).reshape(2, 3)
    keys = (
        {k: jax.random.key(v) for k, v in rngs.items()}
        if isinstance(rngs, dict)
        else jax.random.key(rngs)
    )
    tree = flaxmock.unflaxify(model, x, rngs=keys)
    drew = tree.submodule_calls[(1, "Dropout_0.__call__")].info.rng_names
    # One key is apply's ``params`` stream, which Flax's Dropout falls back to.
    assert drew == ({"dropout"} if isinstance(rngs, dict) else {"params"})
    variables = model.init(jax.random.key(0), x)
    dropout = {"dropout": jax.random.key(7)}
    np.testing.assert_array_equal(
        flaxmock.call(flaxmock.bind(tree, variables), x, rngs=dropout),
        model.apply(variables, x, rngs=dropout),
    )


class _EncoderDecoder(nn.Module):
    """An encoder-decoder whose decode method never touches the encoder (flax examples wmt)."""

    def setup(self):
        self.embed = nn.Embed(10, 4)
        self.encoder = nn.Dense(4)
        self.decoder = nn.Dense(4)

    def encode(self, tokens):
        return self.encoder(self.embed(tokens))

    def decode(self, encoded, tokens):
        return self.decoder(encoded + self.embed(tokens))

    def __call__(self, tokens):
        return self.decode(self.encode(tokens), tokens)


def test_method_tree_owns_only_the_variables_its_calls_use():
    model, tokens = _EncoderDecoder(), jnp.array([[1, 2, 3]])
    encoded = jnp.linspace(-1, 1, 12).reshape(1, 3, 4)
    variables = model.init(jax.random.key(0), tokens)
    tree = flaxmock.unflaxify(model, encoded, tokens, variables=variables, method="decode")
    summary = flaxmock.summary(tree)
    root = summary.rows[0]
    # The encoder's 20 parameters are not the root's.
    assert (root.param_count, root.note) == (0, "20 given params unused by decode, not counted")
    assert summary.total_params == 40 + 20
    # They are still passed on: the tree equals module.apply, also with mutable=True.
    expected = model.apply(variables, encoded, tokens, method="decode", mutable=True)
    assert_out = flaxmock.call(tree, encoded, tokens, mutable=True)
    jax.tree.map(np.testing.assert_array_equal, assert_out, expected)
    # Converted abstractly, materialize and bind need no encoder values.
    abstract = flaxmock.unflaxify(
        model, encoded, tokens, variables=jax.eval_shape(lambda: variables), method="decode"
    )
    reference = model.apply(_jit_init(model, tokens), encoded, tokens, method="decode")
    real = flaxmock.materialize(abstract, jax.random.key(0))
    np.testing.assert_array_equal(flaxmock.call(real, encoded, tokens), reference)
    used = {"params": {k: variables["params"][k] for k in ("embed", "decoder")}}
    np.testing.assert_array_equal(
        flaxmock.call(flaxmock.bind(abstract, used), encoded, tokens),
        model.apply(variables, encoded, tokens, method="decode"),
    )
    # A mocked decoder leaves the root's ownership as it was.
    mocked = flaxmock.mock(tree, where="decoder", seed=0)
    assert flaxmock.summary(mocked).total_params == 40


class _ManyParams(nn.Module):
    @nn.compact
    def __call__(self, x):
        return x + sum(self.param(f"w{i}", nn.initializers.zeros, (3,)) for i in range(7))


def test_cut_lists_say_how_many_are_left_out():
    assert flaxmock._core.errors.cut_list(list("abcdef"), 4) == "a, b, c, d, ... and 2 more"
    tree = flaxmock.unflaxify(_ManyParams(), jnp.ones(3))
    with pytest.raises(flaxmock.AbstractParameterError, match=r"params/w3, \.\.\. and 3 more"):
        flaxmock.call(tree, jnp.ones(3))


def _two_dense():
    model, x = nn.Sequential([nn.Dense(4), nn.Dense(2)]), jnp.ones((1, 3))
    return model, x, model.init(jax.random.key(0), x)


def test_unwrapped_params_rejected_up_front():
    model, x, variables = _two_dense()
    with pytest.raises(
        flaxmock.BindVariablesError,
        match=r"unflaxify\(Sequential\(\), \.\.\., variables=\.\.\.\): the variables have no "
        r"'params' collection; their top-level keys \('layers_0', 'layers_1'\)(.|\n)*Fix: "
        r'wrap them: variables=\{"params": params\}',
    ):
        flaxmock.unflaxify(model, x, variables=variables["params"])
    with pytest.raises(
        flaxmock.BindVariablesError,
        match=r"bind\(tree, variables\): the variables have no 'params' collection(.|\n)*"
        r'Fix: wrap them: bind\(tree, \{"params": params\}\)',
    ):
        flaxmock.bind(flaxmock.unflaxify(model, x), variables["params"])


def test_missing_subtree_named_up_front():
    model, x, variables = _two_dense()
    partial = {"params": {"layers_0": variables["params"]["layers_0"]}}
    with pytest.raises(
        flaxmock.BindVariablesError,
        match=r"do not hold every variable the call reads; these parameters are not in them: "
        r"params/layers_1/bias, params/layers_1/kernel\. Fix: 1\. give the whole variables",
    ):
        flaxmock.unflaxify(model, x, variables=partial)
    with pytest.raises(
        flaxmock.BindVariablesError,
        match=r"missing: params/layers_1/kernel \(expected float32\[4, 2\]\)\n"
        r"Missing whole subtrees: params/layers_1 \(2 entries\)\.\nFix: ",
    ):
        flaxmock.bind(flaxmock.unflaxify(model, x), partial)
    # What the error suggests works: mock the layer whose values are missing.
    tree = flaxmock.mock(flaxmock.unflaxify(model, x), where="layers_1", seed=0)
    assert flaxmock.call(flaxmock.bind(tree, partial), x).shape == (1, 2)


class _SowingMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(4)(x)
        self.sow("intermediates", "h", h)
        return nn.Dense(2)(h)


@pytest.mark.parametrize("where", ["*", "**", "Dense_1"])
def test_mutable_true_returns_the_collections_apply_returns(where):
    model, x = _SowingMLP(), jnp.ones((1, 3))
    variables = model.init(jax.random.key(0), x)
    _, expected = model.apply(variables, x, mutable=True)
    # Converted with values, the mocks keep them: params come back as given.
    tree = flaxmock.mock(flaxmock.unflaxify(model, x, variables=variables), where=where, seed=0)
    _, got = flaxmock.call(tree, x, mutable=True)
    assert sorted(got) == sorted(expected) == ["intermediates", "params"]
    jax.tree.map(np.testing.assert_array_equal, got["params"], expected["params"])
    assert jax.tree.map(jnp.shape, got) == jax.tree.map(jnp.shape, expected)


@pytest.mark.parametrize("where", ["*", "**"])
def test_mutable_true_keeps_params_collection_when_every_owner_is_abstract_and_mocked(where):
    model, x = _SowingMLP(), jnp.ones((1, 3))
    tree = flaxmock.mock(flaxmock.unflaxify(model, x), where=where, seed=0)
    _, got = flaxmock.call(tree, x, mutable=True)
    # The collection is there; mocked abstract parameters hold no values, so it is empty.
    assert got["params"] == {}
    assert jax.tree.map(jnp.shape, got["intermediates"]) == {"h": ((1, 4),)}
    _, only = flaxmock.call(tree, x, mutable=["intermediates"])
    assert sorted(only) == ["intermediates"]


class _RootMatmul(nn.Module):
    @nn.compact
    def __call__(self, x):
        return x @ self.param("w", nn.initializers.ones, (3, 4))


def test_shape_errors_name_the_call_and_the_inputs():
    tree = flaxmock.unflaxify(_RootMatmul(), jax.ShapeDtypeStruct((1, 3), jnp.float32))
    wrong = jax.ShapeDtypeStruct((1, 5), jnp.float32)
    with pytest.raises(TypeError, match="dot_general") as info:
        flaxmock.eval_shape(flaxmock.call, tree, wrong)
    notes = "\n".join(info.value.__notes__)
    assert "flaxmock: raised in <root>.__call__" in notes
    assert (
        "<root>.__call__ was converted for the inputs (f32[1,3]) and is called with (f32[1,5])"
        in (notes)
    )
    with pytest.raises(TypeError, match="dot_general") as info:
        flaxmock.unflaxify(
            _RootMatmul(),
            wrong,
            variables=jax.eval_shape(
                lambda: _RootMatmul().init(jax.random.key(0), jnp.ones((1, 3)))
            ),
        )
    assert "flaxmock: raised in <root>.__call__" in info.value.__notes__


class _Router(nn.Module):
    @nn.compact
    def __call__(self, x):
        return jnp.argmax(nn.Dense(4)(x), -1)


class _NonZero(nn.Module):
    def __call__(self, x):
        return jnp.nonzero(x > 0)[0]


class _Routed(nn.Module):
    @nn.compact
    def __call__(self, x):
        return _Router()(x), _NonZero()(x)


def test_out_specs_checked_against_the_real_output():
    S = jax.ShapeDtypeStruct
    model, x = _Routed(), S((2, 3), jnp.float32)
    # _NonZero's output depends on values: its out= is taken as given.
    tree = flaxmock.unflaxify(model, x, out={"_NonZero_0": S((5,), jnp.int32)})
    assert tree.submodule_calls[(1, "_NonZero_0.__call__")].info.out_spec == S((5,), jnp.int32)
    # The router's can be inferred: a wrong one is an error, at conversion and at mock.
    with pytest.raises(
        flaxmock.OutputSpecError,
        match=r"unflaxify\(model, \*args, out=\{\.\.\.\}\): the out spec for _Router_0.__call__ "
        r"does not match the output of the real call: expected i32\[2\], got f32\[2\]\. Fix: 1\.",
    ):
        flaxmock.unflaxify(
            model, x, out={"_NonZero_0": S((5,), jnp.int32), "_Router_0": S((2,), jnp.float32)}
        )
    with pytest.raises(
        flaxmock.OutputSpecError,
        match=r"mock\(tree, where, out=\.\.\.\): the out spec for _Router_0.__call__ does not "
        r"match the output of the real call: expected i32\[2\], got i32\[3\]",
    ):
        flaxmock.mock(tree, "_Router_0", out=S((3,), jnp.int32))
    mocked = flaxmock.mock(tree, "_Router_0", out=S((2,), jnp.int32))
    mocked = flaxmock.mock(mocked, "_NonZero_0", out=S((7,), jnp.int32))
    real = flaxmock.materialize(mocked, jax.random.key(0))
    out = flaxmock.call(real, jnp.ones((2, 3)))
    assert jax.tree.map(jnp.shape, out) == ((2,), (7,))


def test_each_summary_rejects_the_other_front_doors_model():
    from flax import nnx

    import flaxmock.nnx as fnnx

    with pytest.raises(
        flaxmock.InvalidArgumentError,
        match=r"got Linear\. For a Flax NNX model use flaxmock\.nnx\.summary\(model, \*args\)",
    ):
        flaxmock.summary(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    with pytest.raises(
        flaxmock.InvalidArgumentError,
        match=r"got Dense\. Convert the linen module first: flaxmock\.summary\(flaxmock\.unflaxify",
    ):
        flaxmock.summary(nn.Dense(3))
    with pytest.raises(flaxmock.InvalidArgumentError, match=r"use flaxmock\.summary\("):
        fnnx.summary(nn.Dense(3), jnp.ones((1, 2)))


def test_summary_cells_are_one_line():
    from flax import nnx

    import flaxmock.nnx as fnnx

    class Cache(nnx.Module):
        def __init__(self):
            self.k = nnx.Cache(jnp.zeros((2, 3)))

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(2, 2, rngs=rngs)
            self.dropout = nnx.Dropout(0.5)

        def __call__(self, x, rngs, cache):
            return self.dropout(self.linear(x), rngs=rngs)

    model = Block(nnx.Rngs(0))
    text = str(fnnx.summary(model, jnp.ones((1, 2)), nnx.Rngs(1), Cache()))
    rows = text.splitlines()
    # Title, header, rule, three rows, total: no cell spans lines.
    assert len(rows) == 7, text
    assert "f32[1,2], Rngs(RngStream(" in rows[3]
    assert flaxmock._core.table.describe_specs(Cache()) == "Cache(Cache(f32[2,3]))"


class _NormBlock(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.BatchNorm(use_running_average=not train)(nn.Dense(8)(x))


class _NormNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(2)(_NormBlock()(_NormBlock()(x, train), train))


@pytest.mark.parametrize("where", [None, "_NormBlock_0", "**/Dense_0"])
def test_summary_bytes_are_what_materialize_allocates(where):
    model, x = _NormNet(), jnp.ones((2, 4))
    tree = flaxmock.unflaxify(model, x)
    if where is not None:
        tree = flaxmock.mock(tree, where=where, seed=0)
    summary = flaxmock.summary(tree)
    real = flaxmock.materialize(tree, jax.random.key(0))
    _, variables = pz.unbind_variables(real)
    allocated = sum(v.value.nbytes for v in variables if not v.label.startswith("flaxmock.counter"))
    assert summary.total_bytes == allocated
    rows = {r.path: r for r in summary.rows}
    norm = rows.get("_NormBlock_1/BatchNorm_0")
    # Scale and bias are parameters; mean and var are state, counted in bytes and noted.
    assert (norm.param_count, norm.param_bytes, norm.note) == (16, 128, "incl. 64 B state")


class _AxesDense(nn.Module):
    """A dense layer declaring its parameter's logical axes (flaxformer, t5x)."""

    @nn.compact
    def __call__(self, x):
        from flax.linen import partitioning

        kernel = partitioning.param_with_axes(
            "kernel", nn.initializers.lecun_normal(), (x.shape[-1], 3), axes=("embed", "mlp")
        )
        return x @ kernel


class _AxesNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        return _AxesDense()(_AxesDense()(x))


@pytest.mark.parametrize("given", ["params-only", "init-output"])
def test_param_with_axes_binds_params_only_and_init_output(given):
    model, x = _AxesNet(), jnp.linspace(0, 1, 6).reshape(2, 3)
    variables = model.init(jax.random.key(0), x)
    assert "params_axes" in variables
    values = {"params": variables["params"]} if given == "params-only" else variables
    expected = model.apply({"params": variables["params"]}, x)
    tree = flaxmock.unflaxify(model, x)
    np.testing.assert_array_equal(flaxmock.call(flaxmock.bind(tree, values), x), expected)
    np.testing.assert_array_equal(
        flaxmock.call(flaxmock.bind(tree, values, strict=True), x), expected
    )
    np.testing.assert_array_equal(
        flaxmock.call(flaxmock.unflaxify(model, x, variables=values), x), expected
    )
    mocked = flaxmock.bind(flaxmock.mock(tree, where="_AxesDense_1", seed=0), values)
    assert flaxmock.call(mocked, x).shape == (2, 3)


def test_12_10_linen_summary_names_a_submodule_read_but_never_called():
    """Qwen3's idiom in linen: ``self.embed.embedding[ids]`` reads a setup submodule's param."""

    class Reads(nn.Module):
        def setup(self):
            self.embed = nn.Embed(10, 4)
            self.out = nn.Dense(3)

        def __call__(self, ids):
            return self.out(self.embed.embedding[ids])

    model, ids = Reads(), jnp.zeros((2, 5), jnp.int32)
    variables = model.init(jax.random.key(0), ids)
    table = flaxmock.summary(flaxmock.unflaxify(model, ids))
    assert table.total_params == sum(x.size for x in jax.tree.leaves(variables)) == 55
    root = table.rows[0]
    # The root's scope holds the embedding (it reads it); the row says whose it is.
    assert root.param_count == 40
    assert root.note == "incl. 40 params of embed (not called)"
    assert [row.path for row in table.rows] == ["<root>", "out"]
    # A module whose children are all called gets no such note (the zoo has none).
    assert "not called" not in str(flaxmock.summary(flaxmock.unflaxify(nn.Dense(3), ids * 1.0)))
    real = flaxmock.unflaxify(model, ids, variables=variables)
    np.testing.assert_array_equal(flaxmock.call(real, ids), model.apply(variables, ids))


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


class _TopKRouter(nn.Module):
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
        weights, indices = _TopKRouter(name="router")(x)
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


class _NnxDecoder(nnx.Module):
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


_FROZEN = {"jax.checkpoint": "checkpoint / remat"}
# Loops whose bodies merge the split state they close over: counted on the host (#19.3).
_HOST_COUNTED = {"fori_loop": 2, "lax.scan": 2}


@pytest.mark.parametrize("how", [*_FROZEN, *_HOST_COUNTED, "nnx.remat"])
@pytest.mark.parametrize("jitted", [False, True], ids=["eager", "nnx.jit"])
def test_12_8_19_3_mock_in_a_copy_not_written_back_warns(how, jitted):
    mocked = flaxmock.nnx.mock(_NnxDecoder(nnx.Rngs(0), how), "layer/lin")
    x = jnp.ones((2, 4))
    run = nnx.jit(lambda m, x: m(x)) if jitted else (lambda m, x: m(x))
    if how not in _FROZEN:
        # nnx.remat writes the state back; a loop body closing over the state is counted on
        # the host: fresh draws on every call, every call (and iteration) counted, no warning.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            first, second = run(mocked, x), run(mocked, x)
        assert not np.array_equal(first, second)
        assert mocked.layer.lin.call_count == 2 * _HOST_COUNTED.get(how, 1)
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


def test_12_8_19_3_plain_jax_jit_over_split_merge():
    # bonsai's jitted forward: jax.jit over (graphdef, state), the state not returned. The
    # copy's counter is not written back, so each run is counted on the host (#19.3).
    mocked = flaxmock.nnx.mock(_Layer(nnx.Rngs(0)), "lin")
    graphdef, state = nnx.split(mocked)
    forward = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
    x = jnp.ones((2, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first, second = forward(state, x), forward(state, x)
    assert not np.array_equal(first, second)
    assert mocked.lin.call_count == 2

    # Returning the state and applying it: the counter is left as it was, so no call is
    # counted twice.
    @jax.jit
    def step(state, x):
        model = nnx.merge(graphdef, state)
        return model(x), nnx.state(model)

    fresh = flaxmock.nnx.mock(_Layer(nnx.Rngs(0)), "lin")
    graphdef, state = nnx.split(fresh)
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
        h = model.a(x)
        return (model.b(h) ** 2).sum(), h

    # jax.value_and_grad differentiates a copy of the model, which is not written back: the
    # call is counted on the host (#19.3), with no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (value, h), grads = jax.value_and_grad(loss, has_aux=True)(mocked)
    # The oracle: the real b differentiated by nnx.value_and_grad at the mock's drawn output.
    ref_value, ref_grads = nnx.value_and_grad(lambda b: (b(h) ** 2).sum())(mocked.b)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    np.testing.assert_allclose(grads.b.kernel[...], ref_grads["kernel"][...], rtol=1e-6)
    np.testing.assert_array_equal(grads.a.counter[...], 0.0)
    assert mocked.a.call_count == 1
    nnx.value_and_grad(lambda m: loss(m)[0])(mocked)  # Params only, the state written back
    assert mocked.a.call_count == 2


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


# NNX mocks on the draw path of linen mocks: the call's inputs reach the draw (#19.4 NNX lanes,
# #19.18 copy_input on NNX).


@pytest.mark.parametrize("jitted", [False, True], ids=["eager", "nnx.jit"])
def test_19_4_nnx_vmap_lanes_draw_their_own_values(jitted):
    # A mock broadcast into nnx.vmap(in_axes=(None, 0)) returned the same row for every example.
    model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    mocked = flaxmock.nnx.mock(model, "")
    xs = jax.random.normal(jax.random.key(1), (4, 2, 4))
    per_example = nnx.vmap(lambda m, x: m(x), in_axes=(None, 0))
    out = (nnx.jit(per_example) if jitted else per_example)(mocked, xs)
    real = per_example(model, xs)
    assert _spec_tree(out) == _spec_tree(real)
    for i in range(4):
        assert _spec_tree(out[i]) == _spec_tree(model(xs[i]))
        for j in range(i):
            assert not np.array_equal(out[i], out[j]), (i, j)
    assert mocked.call_count == 1  # nnx.vmap writes the counter back: one call

    # Lanes whose inputs are not batched compute the same thing: the mock draws the same.
    fresh = flaxmock.nnx.mock(model, "")
    same = nnx.vmap(lambda m, _: m(xs[0]), in_axes=(None, 0))(fresh, jnp.arange(3))
    np.testing.assert_array_equal(same[0], same[1])
    np.testing.assert_array_equal(same[0], flaxmock.nnx.mock(model, "")(xs[0]))


@pytest.mark.filterwarnings(_SOW_DEPRECATED)
def test_19_18_nnx_copy_input_passes_the_argument_through():
    x = jax.random.normal(jax.random.key(1), (2, 4))
    fills = flaxmock.fills
    mocked = flaxmock.nnx.mock(_SowingModel(nnx.Rngs(0)), "layers/0", fill=fills.copy_input(0))
    real = _SowingModel(nnx.Rngs(0))
    out, sown = nnx.capture(mocked, nnx.Intermediate)(x)
    expected, _ = nnx.capture(real.layers[1], nnx.Intermediate)(x)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    # What the mocked block sows keeps the default fill: random, not a copy of the input.
    act = nnx.to_pure_dict(sown)["layers"][0]["mlp"]["act"][0]
    assert act.shape == x.shape and not np.array_equal(act, x)

    # A fill dict names sown values under their collection, then the path under the mock.
    by_path = {"": fills.copy_input(0), "intermediates/mlp/act": "zeros"}
    mocked = flaxmock.nnx.mock(_SowingModel(nnx.Rngs(0)), "layers/0", fill=by_path)
    out, sown = nnx.capture(mocked, nnx.Intermediate)(x)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_array_equal(nnx.to_pure_dict(sown)["layers"][0]["mlp"]["act"][0], 0.0)

    # An argument of another shape than the output cannot be copied.
    wrong = flaxmock.nnx.mock(nnx.Linear(4, 3, rngs=nnx.Rngs(0)), "", fill=fills.copy_input(0))
    with pytest.raises(
        flaxmock.FillError, match=r"<root>.__call__: copy_input.*float32\[2, 4\].*float32\[2, 3\]"
    ):
        wrong(x)


class _SowsState(nnx.Module):
    """Sows a value written whole (a custom ``reduce_fn``: state) and one appended per call."""

    def __init__(self, rngs: nnx.Rngs):
        self.lin = nnx.Linear(3, 4, rngs=rngs)

    def __call__(self, x):
        h = self.lin(x)
        self.sow(nnx.Intermediate, "last", h.mean(0), reduce_fn=lambda _, new: new)
        self.sow(nnx.Intermediate, "act", h)
        return h


def test_13_5_nnx_state_written_whole_is_drawn_once():
    # As on linen: a value written whole is state, drawn once (the same on every call), while
    # appended values are drawn anew per call.
    x = jnp.ones((2, 3))
    _, real = nnx.capture(_SowsState(nnx.Rngs(0)), nnx.Intermediate)(x)
    mocked = flaxmock.nnx.mock(_SowsState(nnx.Rngs(0)), "")
    runs = [nnx.capture(mocked, nnx.Intermediate)(x)[1] for _ in range(2)]
    runs.append(nnx.capture(nnx.jit(lambda m, x: m(x)), nnx.Intermediate)(mocked, x)[1])
    runs = [nnx.to_pure_dict(run) for run in runs]
    assert _spec_tree(runs[0]) == _spec_tree(nnx.to_pure_dict(real))
    for run in runs[1:]:
        np.testing.assert_array_equal(run["last"], runs[0]["last"])
        assert not np.array_equal(run["act"][0], runs[0]["act"][0])
    # Not a slice of the first call's appended draw (another key).
    assert not np.array_equal(runs[0]["last"], runs[0]["act"][0][0])
    assert mocked.call_count == 3


class _BnNnxNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.lin = nnx.Linear(3, 4, rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)

    def __call__(self, x):
        return self.bn(self.lin(x))


def _batch_stats(model) -> dict:
    return nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))


def test_13_4_nnx_mock_holds_the_state_of_what_it_replaces():
    # An NNX mock kept no BatchStat of the module it replaced (reading one raised). It holds
    # them now, at the same paths, and a train-mode call updates them as the real call does
    # where that needs no parameter (a BatchNorm mocked alone: the statistics of its input);
    # where it does (the network mocked whole) they keep their values, as linen mocks do.
    x = jax.random.normal(jax.random.key(1), (2, 3))
    model = _BnNnxNet(nnx.Rngs(0))
    real = _BnNnxNet(nnx.Rngs(0))
    expected = _spec_tree(real(x))
    alone = flaxmock.nnx.mock(model, "bn")
    whole = flaxmock.nnx.mock(model, "")
    for mocked in [alone, whole]:
        assert _spec_tree(_batch_stats(mocked)) == _spec_tree(_batch_stats(model))
        assert _spec_tree(mocked(x)) == expected
    np.testing.assert_allclose(alone.bn.mean[...], real.bn.mean[...], rtol=1e-6)
    np.testing.assert_allclose(alone.bn.var[...], real.bn.var[...], rtol=1e-6)
    assert not np.array_equal(alone.bn.mean[...], 0.0)
    np.testing.assert_array_equal(whole.bn.mean[...], 0.0)  # kept: needs lin's parameters
    np.testing.assert_array_equal(whole.bn.var[...], 1.0)
    # Evaluation mode reads the statistics and writes none.
    alone.eval()
    before = _batch_stats(alone)
    alone(x)
    jax.tree.map(np.testing.assert_array_equal, _batch_stats(alone), before)
    # Parameters are still not kept: reading one is a clear error.
    with pytest.raises(flaxmock.MockAttributeError, match=r"bn is mocked: its attribute 'scale'"):
        _ = alone.bn.scale
    np.testing.assert_array_equal(model.bn.mean[...], 0.0)  # the user's model is untouched
    # unmock puts the module back with the state the mock holds (parameters stay abstract).
    restored = flaxmock.nnx.unmock(alone)
    np.testing.assert_array_equal(restored.bn.mean[...], alone.bn.mean[...])
    assert isinstance(restored.bn.scale.get_value(), jax.ShapeDtypeStruct)


def test_13_4_nnx_abstract_state_of_a_mock_is_materialized_or_drawn_once():
    # On an abstract model the state a mock holds is abstract: a call does not need it (no
    # AbstractParameterError), materialize gives it the factory's values, and a call that
    # writes it without a value computes or draws it once (never leaves it abstract).
    x = jax.random.normal(jax.random.key(1), (2, 3))
    model = flaxmock.nnx.mock(flaxmock.nnx.abstract(_BnNnxNet, nnx.Rngs(0)), "")
    assert all(isinstance(v, jax.ShapeDtypeStruct) for v in jax.tree.leaves(_batch_stats(model)))
    real = flaxmock.nnx.materialize(model, 0)
    jax.tree.map(
        np.testing.assert_array_equal, _batch_stats(real), _batch_stats(_BnNnxNet(nnx.Rngs(0)))
    )
    model(x)
    first = _batch_stats(model)
    assert not any(isinstance(v, jax.ShapeDtypeStruct) for v in jax.tree.leaves(first))
    model(x)
    jax.tree.map(np.testing.assert_array_equal, _batch_stats(model), first)


class _Loss(nnx.Variable):
    """The flax VAE example's loss variable, created in ``__call__`` and taken with nnx.pop."""


class _VaeEncoder(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.lin = nnx.Linear(4, 8, rngs=rngs)

    def __call__(self, x):
        mean, logstd = jnp.split(self.lin(x), 2, axis=-1)
        self.kl_loss = _Loss(jnp.mean(0.5 * (mean**2 + jnp.exp(2 * logstd) - 1) - logstd))
        return mean, jnp.exp(logstd)


class _Vae(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.encoder = _VaeEncoder(rngs)
        self.decoder = nnx.Linear(4, 4, rngs=rngs)

    def __call__(self, x):
        mean, std = self.encoder(x)
        return self.decoder(mean + std)


def test_19_6_nnx_mock_creates_the_variables_the_call_creates():
    # flax VAE example: the KL term a mocked encoder created was missing, so nnx.pop gave an
    # empty state and the loss silently became 0 (real 0.889).
    x = jax.random.normal(jax.random.key(1), (2, 4))
    real = _Vae(nnx.Rngs(0))
    expected_out = _spec_tree(real(x))
    expected = nnx.to_pure_dict(nnx.pop(real, _Loss))
    mocked = flaxmock.nnx.mock(_Vae(nnx.Rngs(0)), "encoder")
    popped = []
    for run in [lambda m, x: m(x), lambda m, x: m(x), nnx.jit(lambda m, x: m(x))]:
        assert _spec_tree(run(mocked, x)) == expected_out
        popped.append(nnx.to_pure_dict(nnx.pop(mocked, _Loss)))
        assert not jax.tree.leaves(nnx.state(mocked, _Loss))  # popped, as from the real one
    assert _spec_tree(popped[0]) == _spec_tree(expected)
    kl = popped[0]["encoder"]["kl_loss"]
    assert kl != 0.0
    # Drawn through the core's draw of state written whole: once, the same on every call.
    for later in popped[1:]:
        np.testing.assert_array_equal(later["encoder"]["kl_loss"], kl)
    # The whole model mocked creates it at the same path; a fill dict names it by its type
    # and path, as sown values and state are named.
    whole = flaxmock.nnx.mock(_Vae(nnx.Rngs(0)), "", fill={"_Loss/**": "ones"})
    assert _spec_tree(whole(x)) == expected_out
    got = nnx.to_pure_dict(nnx.pop(whole, _Loss))
    assert _spec_tree(got) == _spec_tree(expected) and got["encoder"]["kl_loss"] == 1.0


class _CreatesCounter(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.lin = nnx.Linear(4, 4, rngs=rngs)

    def __call__(self, x):
        self.counter = nnx.Cache(x.sum())  # a name the mock uses for its own counter
        return self.lin(x)


def test_19_6_nnx_variable_the_mock_cannot_create_is_an_error():
    mocked = flaxmock.nnx.mock(_CreatesCounter(nnx.Rngs(0)), "")
    with pytest.raises(
        flaxmock.MockAttributeError,
        match=r"(?s)<root> is mocked: the replaced _CreatesCounter's call creates the "
        r"variable counter \(Cache, float32\[\]\).*1\. do not mock <root>",
    ):
        mocked(jnp.ones((2, 4)))


class _CachedAttention(nnx.Module):
    """A hand-written attention with ``nnx.Cache`` state made by ``init_cache``."""

    def __init__(self, rngs: nnx.Rngs):
        self.qkv = nnx.Linear(8, 24, rngs=rngs)
        self.k_cache = nnx.data(None)

    def init_cache(self, batch: int, length: int):
        self.k_cache = nnx.Cache(jnp.zeros((batch, length, 8)))
        self.v_cache = nnx.Cache(jnp.zeros((batch, length, 8)))
        self.index = nnx.Cache(jnp.array(0, jnp.int32))

    def __call__(self, x):
        q, k, v = jnp.split(self.qkv(x), 3, axis=-1)
        if self.k_cache is None:
            raise ValueError("cache not initialized")
        i = self.index[...]
        self.k_cache[...] = jax.lax.dynamic_update_slice(self.k_cache[...], k, (0, i, 0))
        self.v_cache[...] = jax.lax.dynamic_update_slice(self.v_cache[...], v, (0, i, 0))
        self.index[...] = i + x.shape[1]
        return jax.nn.softmax(q @ self.k_cache[...].transpose(0, 2, 1)) @ self.v_cache[...]


def test_19_15_hand_written_cache_through_a_mock():
    x = jnp.ones((1, 2, 8))
    real = _CachedAttention(nnx.Rngs(0))
    mocked = flaxmock.nnx.mock(_CachedAttention(nnx.Rngs(0)), "")
    with pytest.raises(ValueError, match="cache not initialized"):  # as the real module
        mocked(x)
    for model in [real, mocked]:
        model.init_cache(1, 6)
        for _ in range(2):
            out = model(x)
    assert _spec_tree(out) == _spec_tree(real(x)) and int(real.index[...]) == 6
    assert int(mocked.index[...]) == 4
    assert _spec_tree(nnx.state(mocked, nnx.Cache)) == _spec_tree(nnx.state(real, nnx.Cache))


class _AttnDecoder(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.attn = nnx.MultiHeadAttention(2, 8, qkv_features=8, decode=True, rngs=rngs)
        self.out = nnx.Linear(8, 8, rngs=rngs)

    def __call__(self, x):
        return self.out(self.attn(x))


@pytest.mark.parametrize("jitted", [False, True], ids=["eager", "nnx.jit"])
def test_19_15_init_cache_through_a_mocked_attention(jitted):
    # init_cache through a mocked attention created no cache; the next decode call failed
    # with the model's own "cache not initialized" error. The mock now writes the state the
    # real method writes: what needs no parameter (init_cache's zero caches, the cache index)
    # as the real method computes it; the keys and values need the projections' parameters
    # and keep their values.
    x = jax.random.normal(jax.random.key(1), (1, 1, 8))
    real = _AttnDecoder(nnx.Rngs(0))
    mocked = flaxmock.nnx.mock(_AttnDecoder(nnx.Rngs(0)), "attn")
    for model in [real, mocked]:
        model.attn.init_cache((1, 4, 8))
    caches = [nnx.to_pure_dict(nnx.state(m, nnx.Cache)) for m in [real, mocked]]
    jax.tree.map(np.testing.assert_array_equal, caches[1], caches[0])
    step = nnx.jit(lambda m, x: m(x)) if jitted else (lambda m, x: m(x))
    for i in range(3):
        assert _spec_tree(step(mocked, x)) == _spec_tree(step(real, x))
        assert int(mocked.attn.cache_index[...]) == int(real.attn.cache_index[...]) == i + 1
    np.testing.assert_array_equal(mocked.attn.cached_key[...], 0.0)
    assert mocked.attn.call_count == 4  # init_cache and three steps


# NNX plain arrays, explicit meshes and staged copies (#19.11, #19.12, #19.3 rest).


class _Buffers(nnx.Module):
    """bonsai Gemma3's shape: a scale computed in __init__ and an arange position buffer."""

    def __init__(self, rngs: nnx.Rngs, d: int = 4):
        self.lin = nnx.Linear(d, d, rngs=rngs)
        self.embed_scale = nnx.data(jnp.sqrt(jnp.asarray(d, jnp.float32)))
        self.position_ids = jnp.arange(d)  # a plain array attribute: data, as Flax makes it

    def __call__(self, x):
        return self.lin(x) * self.embed_scale + self.position_ids.astype(x.dtype)


def test_19_11_nnx_array_attributes_are_materialized_and_named():
    x = jnp.arange(8.0).reshape(2, 4)
    real = _Buffers(nnx.Rngs(0))
    model = flaxmock.nnx.abstract(_Buffers, nnx.Rngs(0))
    # Both array attributes are abstract leaves of the state, as they are leaves of the real one.
    assert {p for p, _ in nnx.to_flat_state(nnx.state(model))} == {
        p for p, _ in nnx.to_flat_state(nnx.state(real))
    }
    np.testing.assert_array_equal(flaxmock.nnx.materialize(model, 0)(x), real(x))
    np.testing.assert_array_equal(flaxmock.nnx.bind(model, nnx.state(real))(x), real(x))
    # Parameters given, the array attributes still abstract: the call names them.
    partly = flaxmock.nnx.abstract(_Buffers, nnx.Rngs(0))
    nnx.update(partly, nnx.state(real, nnx.Param))
    with pytest.raises(
        flaxmock.AbstractParameterError,
        match=r"(?s)<root>: embed_scale \(array attribute\), position_ids \(array attribute\)"
        r".*materialize\(model, nnx\.Rngs\(0\)\) \(array attributes set in __init__",
    ):
        partly(x)
    with pytest.raises(
        flaxmock.BindVariablesError,
        match=r"missing: embed_scale \(expected float32\[\], an array attribute set in __init__",
    ):
        flaxmock.nnx.bind(model, nnx.state(real, nnx.Param))
    # A mock of the layer and a materialized rest: the buffers are real, the output the mock's.
    mocked = flaxmock.nnx.materialize(flaxmock.nnx.mock(model, "lin"), 0)
    np.testing.assert_array_equal(mocked.position_ids, real.position_ids)
    assert mocked(x).shape == (2, 4)


def _explicit_mesh():
    # A 1-device mesh of explicit axes: the shardings are in the types, as on a real pod.
    axes = (jax.sharding.AxisType.Explicit,) * 2
    return jax.make_mesh((1, 1), ("data", "model"), axis_types=axes)


def _typed_spec(x):
    return jax.typeof(x).sharding.spec


class _ReadsSharding(nnx.Module):
    """The flax MiniGPT doc's shape: model code reads the input's sharding from its type."""

    def __init__(self, rngs: nnx.Rngs):
        init = nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "model"))
        self.lin = nnx.Linear(4, 8, kernel_init=init, rngs=rngs)

    def __call__(self, x):
        assert _typed_spec(x) == jax.P("data", None), jax.typeof(x)
        return self.lin(x)


class _ShardedNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.block = _ReadsSharding(rngs)
        self.out = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, x):
        return self.out(self.block(x))


def test_19_12_nnx_explicit_mesh_keeps_typed_shardings():
    with jax.set_mesh(_explicit_mesh()):
        x = jax.device_put(jnp.ones((2, 4)), jax.P("data", None))
        real = _ShardedNet(nnx.Rngs(0))
        model = flaxmock.nnx.abstract(_ShardedNet, nnx.Rngs(0))
        out = flaxmock.nnx.eval_shape(model, x)
        assert out.sharding.spec == _typed_spec(real(x))
        assert "block/lin" in str(flaxmock.nnx.summary(model, x))
        np.testing.assert_array_equal(flaxmock.nnx.materialize(model, 0)(x), real(x))
        # The mock infers its output from the input's typed sharding and gives its output the
        # real one's (was: the sharding dropped, and `is_fully_addressable` raised eagerly).
        mocked = flaxmock.nnx.materialize(flaxmock.nnx.mock(model, "block"), 0)
        for run in [lambda m, x: m.block(x), nnx.jit(lambda m, x: m.block(x))]:
            assert (
                _typed_spec(run(mocked, x)) == _typed_spec(real.block(x)) == jax.P("data", "model")
            )
        assert _typed_spec(mocked(x)) == _typed_spec(real(x))


_EXPLICIT_MESH_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
import flax.linen as nn
import flaxmock, flaxmock.nnx

mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
with jax.set_mesh(mesh):
    x = jax.device_put(jnp.ones((8, 4)), jax.P("data", None))
    real = nnx.Linear(4, 8, rngs=nnx.Rngs(0))
    mocked = flaxmock.nnx.mock(real, "")
    eager = mocked(x)  # split over the 8 devices as the real output is
    assert eager.sharding == real(x).sharding, eager.sharding
    assert eager.addressable_shards[0].data.shape == (1, 8)
    forward = jax.jit(lambda x: mocked(x))  # closed over: counted on the host
    a, b = forward(x), forward(x)
    assert a.sharding == real(x).sharding and not np.array_equal(a, b)
    assert mocked.call_count == 3
    tree = flaxmock.mock(flaxmock.unflaxify(nn.Dense(8), x), "")
    out = jax.jit(lambda x: flaxmock.call(tree, x))(x)
    assert jax.typeof(out).sharding.spec == jax.P("data", None), jax.typeof(out)
print("OK")
"""


@pytest.mark.slow
def test_19_12_explicit_mesh_of_8_devices_splits_mock_outputs():
    run_on_8_cpu_devices(_EXPLICIT_MESH_SCRIPT)


def test_19_12_linen_explicit_mesh_keeps_typed_shardings():
    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            assert _typed_spec(x) == jax.P("data", None), jax.typeof(x)
            return nn.Dense(8)(x)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = Block()(x)
            return nn.Dense(2)(h), h

    with jax.set_mesh(_explicit_mesh()):
        x = jax.device_put(jnp.ones((2, 4)), jax.P("data", None))
        variables = Net().init(jax.random.key(0), x)
        real = jax.tree.map(_typed_spec, Net().apply(variables, x))
        abstract = flaxmock.mock(flaxmock.unflaxify(Net(), x), "Block_0")
        out = flaxmock.eval_shape(flaxmock.call, abstract, x)
        assert jax.tree.map(lambda s: s.sharding.spec, out) == real
        tree = flaxmock.materialize(abstract, 0)  # its init sees the input's typed sharding
        for run in [flaxmock.call, flaxmock.jit(flaxmock.call)]:
            assert jax.tree.map(_typed_spec, run(tree, x)) == real


class _ClosesOver(nnx.Module):
    """Raw JAX transforms closing over the model, as bonsai's forward and the gspmd guide do."""

    def __init__(self, rngs: nnx.Rngs, how: str):
        self.lin = nnx.Linear(4, 8, rngs=rngs)
        self.how = how

    def __call__(self, x):
        if self.how == "lax.scan":  # each step's output kept: steps must differ
            return jax.lax.scan(lambda c, _: (c + 1, self.lin(c)), x, None, length=2)[1]
        return jax.checkpoint(lambda x: self.lin(x))(x)[None]  # no host callback in remat


def test_19_3_nnx_mocks_closed_over_by_a_trace_draw_fresh_values():
    x = jnp.ones((2, 4))
    mocked = flaxmock.nnx.mock(_ClosesOver(nnx.Rngs(0), "lax.scan"), "lin")
    forward = jax.jit(lambda x: mocked(x))  # plain jax.jit closing over the model
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first, second = forward(x), forward(x)
        eager = mocked(x)
    # Every run of the compiled code, every step of the loop, draws anew and is counted.
    assert not np.array_equal(first[0], first[1])
    assert not np.array_equal(first, second)
    assert not np.array_equal(second, eager)
    assert mocked.lin.call_count == 6
    # Differentiated, the loop still draws per step (the count is tied to the step's input).
    steps = nnx.value_and_grad(lambda m, x: (m(x) ** 2).sum())
    assert np.isfinite(steps(mocked, x)[0])
    assert mocked.lin.call_count == 8


class _RawScanStack(nnx.Module):
    """The flax gspmd guide: a raw jax.lax.scan over an nnx.vmap-built stack's split state."""

    def __init__(self, rngs: nnx.Rngs):
        @nnx.split_rngs(splits=2)
        @nnx.vmap
        def make(rngs):
            return _Layer(rngs)

        self.blocks = make(rngs)

    def __call__(self, x):
        graphdef, state = nnx.split(self.blocks)

        def body(c, layer_state):
            y = nnx.merge(graphdef, layer_state)(c)
            return y, y

        return jax.lax.scan(body, x, state)[1]


def test_19_3_nnx_raw_scan_over_split_stack_state_draws_per_layer_and_call():
    mocked = flaxmock.nnx.mock(_RawScanStack(nnx.Rngs(0)), "blocks/lin")
    x = jnp.ones((2, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first, second = mocked(x), mocked(x)
    assert first.shape == (2, 2, 4)
    assert not np.array_equal(first[0], first[1])
    assert not np.array_equal(first, second)
    assert mocked.blocks.lin.call_count == 4  # two calls of two layers


def test_19_3_nnx_mock_in_jax_checkpoint_over_a_closure_warns_and_differentiates():
    # jax.checkpoint refuses host callbacks once differentiated: there the draws stay frozen,
    # said by the warning; never JAX's NotImplementedError.
    mocked = flaxmock.nnx.mock(_ClosesOver(nnx.Rngs(0), "jax.checkpoint"), "lin")
    x = jnp.ones((2, 4))
    loss = nnx.value_and_grad(lambda m, x: (m(x) ** 2).sum())
    with pytest.warns(flaxmock.nnx.FrozenMockWarning, match=r"lin .*\(checkpoint / remat\)"):
        first, _ = loss(mocked, x)
    second, _ = loss(mocked, x)
    assert first == second
    assert mocked.lin.call_count == 0


# Mocks draw only what is collected; state is not a sown value (issue #13, items 4 and 5).


def test_13_4_model_mocked_whole_gives_back_the_state_it_holds():
    # A BatchNorm network in training mode updates batch_stats, so the recorded call "writes"
    # them: a whole-model mock drew them as random sown values, though it holds their values.
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train=True):
            return nn.BatchNorm(use_running_average=not train)(nn.Dense(4)(x))

    x = jnp.ones((2, 3))
    variables = Net().init(jax.random.key(0), x)
    tree = flaxmock.mock(flaxmock.unflaxify(Net(), x, variables=variables), "")
    _, cols = flaxmock.call(tree, x, mutable=["batch_stats"])
    _, real = Net().apply(variables, x, mutable=["batch_stats"])
    assert jax.tree.structure(cols) == jax.tree.structure(real)
    # The mock does not compute the update (documented); it gives back the state it holds.
    jax.tree.map(np.testing.assert_array_equal, cols["batch_stats"], variables["batch_stats"])


# Spies (#15).


def test_15_spy_in_a_lifted_body_that_drops_intermediates_raises():
    # zoo's vmap_ensemble: nn.vmap(nn.Dense) with variable_axes={"params": 0}.
    case = next(c for c in zoo.CASES if c.id == "vmap_ensemble")
    (x,), model = case.args, case.make()
    variables = model.init(jax.random.key(0), x)
    tree = flaxmock.unflaxify(model, x, variables=variables)
    # The body's records cannot leave the vmap: an error naming the fix, not an empty record.
    with pytest.raises(flaxmock.RecordSpyError, match=r"members.__call__.*'intermediates': 0"):
        flaxmock.call(flaxmock.spy(tree, "members"), x)
    # Spying the module that calls it records (outside the vmap), with apply's output.
    spied = flaxmock.spy(tree, "")
    np.testing.assert_array_equal(flaxmock.call(spied, x), model.apply(variables, x))
    np.testing.assert_array_equal(spied.outputs[0], model.apply(variables, x))


def test_15_jit_closing_over_a_spied_tree_raises_instead_of_leaking_tracers():
    x = jnp.ones((2, 5))
    model = nn.Dense(3)
    variables = model.init(jax.random.key(0), x)
    spied = flaxmock.spy(flaxmock.unflaxify(model, x, variables=variables), "")
    with pytest.raises(flaxmock.RecordSpyError, match=r"closes over the tree.*flaxmock\.jit"):
        jax.jit(lambda x: flaxmock.call(spied, x))(x)
    assert spied.call_count == 0
    # The fix the message names: the tree as an argument of flaxmock.jit.
    np.testing.assert_array_equal(
        flaxmock.jit(flaxmock.call)(spied, x), jax.jit(model.apply)(variables, x)
    )
    assert spied.call_count == 1
    flaxmock.call(spied, x)  # No tracer was left in the tree.
