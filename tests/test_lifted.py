"""Lifted transforms: bodies of nn.scan / nn.remat / nn.vmap and nested apply are layers."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from penzai import pz

import flaxmock
from flaxmock._linen import layer as _layer
from helpers import Head, Stack, assert_specs_equal, assert_trees_equal

X = jnp.linspace(-1, 1, 16).reshape(2, 8)


@pytest.fixture(scope="module")
def variables():
    return Stack().init(jax.random.key(0), X)


def layer_at(tree, path, method="__call__"):
    for _, layer in _layer.iter_layers(tree):
        if layer.info.path_str == path and layer.method_name == method:
            return layer
    raise AssertionError(f"no layer {path}.{method}")


def test_scan_body_is_reified_with_stacked_parameters(variables):
    tree = flaxmock.unflaxify(Stack(), X, variables={"params": variables["params"]})
    body = layer_at(tree, "blocks")
    assert body.info.transforms == ("scan", "remat")
    assert body.info.steps == 4
    proj = layer_at(tree, "blocks/proj")
    assert proj.scope_data.parameters["kernel"].value.shape == (4, 8, 8)
    # Each body call is listed once, however often JAX traced it.
    paths = [layer.info.path_str for _, layer in _layer.iter_layers(tree)]
    assert paths.count("blocks/proj") == 1


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_scan_real_variables_equal_apply(variables, jit):
    params = {"params": variables["params"]}
    tree = flaxmock.unflaxify(Stack(), X, variables=params)

    def via_tree(t, x):
        return flaxmock.call(t, x, mutable=["intermediates"])

    def via_apply(v, x):
        return Stack().apply(v, x, mutable=["intermediates"])

    if jit:
        # The bound tree holds pz.Parameters: it goes through jit the penzai way.
        via_tree, via_apply = pz.variable_jit(via_tree), jax.jit(via_apply)
    assert_trees_equal(via_tree(tree, X), via_apply(params, X))


def test_mock_inside_scan_body_draws_per_step(variables):
    tree = flaxmock.unflaxify(Stack(), X, variables={"params": variables["params"]})
    mocked = flaxmock.mock(tree, "blocks/proj")
    assert isinstance(layer_at(mocked, "blocks", "__call__"), flaxmock.FlaxCallLayer)
    out, count, per_step = flaxmock.call(mocked, X)
    ref = Stack().apply({"params": variables["params"]}, X)
    assert_specs_equal(
        jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), (out, per_step)),
        jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), (ref[0], ref[2])),
    )
    assert count == 4
    # Outputs are stacked along the scan axis, a different draw at each step.
    assert per_step.shape == (4, 2)
    assert len({tuple(np.asarray(row).round(6)) for row in per_step}) == 4
    again = flaxmock.call(mocked, X)
    assert not np.array_equal(again[2], per_step)


def test_mocked_scan_body_sows_stacked_structure(variables):
    tree = flaxmock.unflaxify(Stack(), X)
    mocked = flaxmock.materialize(flaxmock.mock(tree, "blocks"), jax.random.key(0))
    out, cols = flaxmock.call(mocked, X, mutable=["intermediates"])
    _, ref_cols = Stack().apply({"params": variables["params"]}, X, mutable=["intermediates"])
    assert_specs_equal(
        jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), cols),
        jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), ref_cols),
    )


def test_materialize_creates_stacked_parameters(variables):
    tree = flaxmock.mock(flaxmock.unflaxify(Stack(), X), "head")
    real = flaxmock.materialize(tree, jax.random.key(0))
    kernel = layer_at(real, "blocks/proj").scope_data.parameters["kernel"].value
    assert kernel.shape == (4, 8, 8)
    ref = jax.jit(Stack().init)(jax.random.key(0), X)["params"]["blocks"]["proj"]["kernel"]
    np.testing.assert_array_equal(kernel, ref)


class Ensemble(nn.Module):
    @nn.compact
    def __call__(self, x):
        members = nn.vmap(
            nn.Dense,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            axis_size=3,
        )
        return members(4, name="members")(x)


def test_vmap_ensemble_reified_and_lanes_differ_when_mocked():
    x = jnp.ones((2, 5))
    variables = Ensemble().init(jax.random.key(0), x)
    tree = flaxmock.unflaxify(Ensemble(), x, variables=variables)
    members = layer_at(tree, "members")
    assert members.info.transforms == ("vmap",)
    assert members.info.steps == 3
    assert_trees_equal(flaxmock.call(tree, x), Ensemble().apply(variables, x))
    out = flaxmock.call(flaxmock.mock(tree, "members"), x)
    assert out.shape == (3, 2, 4)
    assert not np.array_equal(out[0], out[1])


def test_nested_apply_is_a_layer_with_its_own_variables():
    x = jnp.ones((2, 5))
    variables = Head().init(jax.random.key(0), x)
    tree = flaxmock.unflaxify(Head(), x, variables=variables)
    ((key, inner),) = tree.submodule_calls.items()
    assert key == (0, "inner.__call__") and inner.info.nested
    assert inner.scope_data is None  # its kernel belongs to the caller
    assert_trees_equal(flaxmock.call(tree, x), Head().apply(variables, x))
    assert inner.info.path_str == "inner"
    mocked = flaxmock.mock(tree, "inner.__call__")
    assert flaxmock.call(mocked, x).shape == (2, 3)


def test_mock_inside_scan_under_variable_jit(variables):
    tree = flaxmock.unflaxify(Stack(), X, variables={"params": variables["params"]})
    mocked = flaxmock.mock(tree, "blocks/norm")
    step = pz.variable_jit(lambda t, x: flaxmock.call(t, x))
    with jax.checking_leaks():
        first = step(mocked, X)
        second = step(mocked, X)
    assert first[0].shape == (2, 2)
    assert not np.array_equal(first[2], second[2])


class DecoderBlock(nn.Module):
    """A Llama-sized decoder block (projections only: the shapes, not the maths, matter)."""

    dim: int
    ffn: int
    heads: int
    kv_heads: int

    @nn.compact
    def __call__(self, h, _):
        head_dim = self.dim // self.heads
        x = nn.RMSNorm(name="attn_norm")(h)
        q = nn.DenseGeneral((self.heads, head_dim), use_bias=False, name="q")(x)
        k = nn.DenseGeneral((self.kv_heads, head_dim), use_bias=False, name="k")(x)
        v = nn.DenseGeneral((self.kv_heads, head_dim), use_bias=False, name="v")(x)
        k = jnp.repeat(k, self.heads // self.kv_heads, axis=2)
        v = jnp.repeat(v, self.heads // self.kv_heads, axis=2)
        w = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / head_dim**0.5, axis=-1)
        a = jnp.einsum("bhqk,bkhd->bqhd", w, v)
        h = h + nn.DenseGeneral(self.dim, axis=(-2, -1), use_bias=False, name="o")(a)
        x = nn.RMSNorm(name="mlp_norm")(h)
        gate = nn.Dense(self.ffn, use_bias=False, name="gate")(x)
        up = nn.Dense(self.ffn, use_bias=False, name="up")(x)
        return h + nn.Dense(self.dim, use_bias=False, name="down")(jax.nn.silu(gate) * up), None


class ScannedLM(nn.Module):
    layers: int = 80
    dim: int = 4096
    ffn: int = 14336
    heads: int = 32
    kv_heads: int = 8
    vocab: int = 128256

    @nn.compact
    def __call__(self, tokens):
        h = nn.Embed(self.vocab, self.dim, jnp.float32, jnp.bfloat16, name="embed")(tokens)
        blocks = nn.scan(
            nn.remat(DecoderBlock),
            variable_axes={"params": 0},
            split_rngs={"params": True},
            length=self.layers,
        )
        h, _ = blocks(self.dim, self.ffn, self.heads, self.kv_heads, name="blocks")(h, None)
        return nn.Dense(self.vocab, use_bias=False, name="lm_head")(nn.RMSNorm(name="norm")(h))


def test_mock_inside_scanned_remat_80_layer_8b_model_abstract():
    tokens = jax.ShapeDtypeStruct((1, 16), jnp.int32)
    model = ScannedLM()
    tree = flaxmock.unflaxify(model, tokens)
    table = flaxmock.summary(tree)
    notes = {r.path: r.note for r in table.rows}
    assert notes["blocks"] == "scan/remat x80"
    assert table.total_params > 18_000_000_000  # 80 layers at 8B width, never allocated
    mocked = flaxmock.mock(tree, "blocks/o")
    assert isinstance(layer_at(mocked, "blocks/o"), flaxmock.MockLayer)
    out = flaxmock.eval_shape(flaxmock.call, mocked, tokens)
    variables = jax.eval_shape(lambda k: model.init(k, tokens), jax.random.key(0))
    ref = jax.eval_shape(model.apply, variables, tokens)
    assert (out.shape, out.dtype) == (ref.shape, ref.dtype) == ((1, 16, 128256), jnp.float32)


# Transforms of functions and methods, a lifted class at the root, branches.


class GruModel(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.RNN(nn.GRUCell(4), name="gru")(x)


def test_function_form_scan_is_named_with_its_length():
    # nn.RNN scans a method of its cell (flax.core.lift.scan on a function): no lifted class
    # names it, the stack does; the length is the sequence's, not a parameter's leading axis.
    x = jnp.ones((2, 3, 5))
    tree = flaxmock.unflaxify(GruModel(), x)
    body = layer_at(tree, "GRUCell_0", "scan_fn")
    assert body.info.transforms == ("scan",)
    assert body.info.steps == 3
    assert "scan x3" in str(flaxmock.summary(tree))


class Pair(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3, name="decoder")(nn.Dense(4, name="encoder")(x))


def test_lifted_class_at_the_root_is_the_root():
    batched = nn.vmap(
        Pair, in_axes=0, out_axes=0, variable_axes={"params": None}, split_rngs={"params": False}
    )()
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 6, 3)), jnp.float32)
    variables = batched.init(jax.random.key(0), x)
    tree = flaxmock.unflaxify(batched, x, variables=variables)
    paths = {layer.info.path_str for _, layer in _layer.iter_layers(tree)}
    assert paths == {"<root>", "encoder", "decoder"}
    assert not any(layer.info.nested for _, layer in _layer.iter_layers(tree))
    np.testing.assert_array_equal(flaxmock.call(tree, x), batched.apply(variables, x))
    out = flaxmock.call(flaxmock.mock(tree, "encoder"), x)
    assert out.shape == (2, 6, 3)


class Switch(nn.Module):
    """flax.linen.switch's docstring example: every branch runs once while initialising."""

    def setup(self):
        self.dense = nn.Dense(2)
        self.heads = [nn.Dense(2) for _ in range(3)]

    def __call__(self, x, index):
        branches = [lambda mdl, x, i=i: mdl.heads[i](x) for i in range(3)]
        if self.is_mutable_collection("params"):
            for branch in branches:
                branch(self, x)
        return nn.switch(index, branches, self, self.dense(x))


def test_switch_branches_and_init_only_calls():
    x, index = jnp.ones((1, 2)), jnp.int32(1)
    model = Switch()
    variables = model.init(jax.random.key(0), x, index)
    # With variables (real or abstract), apply's path is recorded: params are not mutable
    # while recording, and every branch's calls are kept.
    tree = flaxmock.unflaxify(model, x, index, variables=variables)
    np.testing.assert_array_equal(flaxmock.call(tree, x, index), model.apply(variables, x, index))
    body = layer_at(tree, "<root>", "<lambda>")
    assert body.info.transforms == ("switch",)
    assert sorted(k[1] for k in body.submodule_calls) == [
        "heads_0.__call__",
        "heads_1.__call__",
        "heads_2.__call__",
    ]
    abstract = flaxmock.unflaxify(
        model, x, index, variables=jax.eval_shape(model.init, jax.random.key(0), x, index)
    )
    # materialize runs init, which makes the init-only calls: matched by name, or run natively.
    real = flaxmock.materialize(flaxmock.mock(abstract, "heads_0"), jax.random.key(0))
    assert flaxmock.call(real, x, index).shape == (1, 2)
    # Converted without variables, init's path is recorded; the error says how to convert.
    init_path = flaxmock.unflaxify(model, x, index)
    with pytest.raises(flaxmock.CallStructureError, match=r"variables=jax.eval_shape\(model.init"):
        flaxmock.eval_shape(flaxmock.call, init_path, x, index)


class _JitBody(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3, name="inner")(jnp.tanh(x))


_Jitted = nn.jit(_JitBody)


class _WithJitBody(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3, name="head")(_Jitted(name="body")(x))


def test_nn_jit_cache_neither_hides_calls_nor_keeps_mock_draws():
    """nn.jit caches its body's trace, interceptors included; flaxmock's runs never share it."""
    model = _WithJitBody()
    x = jax.random.normal(jax.random.key(1), (2, 4))
    variables = model.init(jax.random.key(0), x)
    # A plain apply first: Flax caches a trace of the body made with no interceptor.
    compiled = model.apply(variables, x)
    tree = flaxmock.unflaxify(model, x, variables=variables)
    paths = [layer.path_str for _, layer in _layer.iter_layers(tree)]
    assert "body/inner" in paths  # The cached trace did not hide the body's call.
    mocked = flaxmock.mock(tree, "body/inner", fill="ones")
    out_mocked = flaxmock.call(mocked, x)
    ones = jnp.ones((2, 3))
    head = variables["params"]["head"]
    np.testing.assert_array_equal(out_mocked, ones @ head["kernel"] + head["bias"])
    # The mock's draw is not replayed by a later run of the real tree or by module.apply.
    real = flaxmock.call(tree, x)
    with jax.disable_jit():
        inline = model.apply(variables, x)
    np.testing.assert_array_equal(real, inline)
    again = model.apply(variables, x)
    np.testing.assert_array_equal(again, compiled)
    np.testing.assert_allclose(real, compiled, rtol=1e-6, atol=1e-6)
    assert not np.allclose(out_mocked, compiled)
