"""Penzai-native variables: one ``pz.Parameter`` per Flax parameter, one ``pz.StateVariable`` per
other Flax variable, shared by every layer (and mock) that uses it; abstract values frozen.

The oracle is Flax: the labels are the paths of ``module.init``'s variables, and values and
gradients are those of ``module.apply``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from penzai import pz

import flaxmock
from flaxmock._linen import layer as _layer
from flaxmock._linen import variables as _vars
from flaxmock.examples import llama
from helpers import assert_trees_equal

CONFIG = llama.LlamaConfig.tiny(tie_embeddings=True)
MODEL = llama.Llama(CONFIG)
TOKENS = (jnp.arange(12, dtype=jnp.int32).reshape(1, 12) * 7) % CONFIG.vocab_size
VARIABLES = MODEL.init(jax.random.key(0), TOKENS)


def flax_labels(variables):
    return {"/".join((col, *path)) for col, path in _vars.flatten_variables(variables)}


def layers_at(tree, path):
    return [
        layer
        for _, layer in _layer.iter_layers(tree)
        if isinstance(layer, _layer.FlaxCallLayer) and layer.path_str == path
    ]


def bound_trees():
    abstract = flaxmock.unflaxify(MODEL, TOKENS)
    return {
        "unflaxify": flaxmock.unflaxify(MODEL, TOKENS, variables=VARIABLES),
        "bind": flaxmock.bind(abstract, VARIABLES),
        "materialize": flaxmock.materialize(abstract, jax.random.key(0)),
    }


@pytest.mark.parametrize("how", ["unflaxify", "bind", "materialize"])
def test_unbind_params_finds_each_flax_parameter_once(how):
    tree = bound_trees()[how]
    _, params = pz.unbind_params(tree)
    labels = [p.label for p in params]
    assert len(labels) == len(set(labels))
    assert set(labels) == flax_labels({"params": VARIABLES["params"]})
    # The tied embedding: `embed.__call__` and `embed.attend` hold the same object.
    embed_calls = layers_at(tree, "embed")
    assert [layer.method_name for layer in embed_calls] == ["__call__", "attend"]
    first, second = (layer.scope_data.parameters["embedding"] for layer in embed_calls)
    assert isinstance(first, pz.Parameter) and first is second


def test_grad_over_unbound_params_equals_grad_of_apply():
    tree = flaxmock.unflaxify(MODEL, TOKENS, variables=VARIABLES)
    unbound, params = pz.unbind_params(tree, freeze=True)

    def tree_loss(params):
        return flaxmock.call(pz.bind_variables(unbound, params), TOKENS).mean()

    def apply_loss(variables):
        return MODEL.apply(variables, TOKENS).mean()

    grads = {g.label: g.value for g in jax.grad(tree_loss)(params)}
    ref = _vars.flatten_variables(jax.grad(apply_loss)(VARIABLES))
    assert set(grads) == {"/".join((col, *path)) for col, path in ref}
    for (col, path), expected in ref.items():
        # The tied embedding's one gradient is the sum over both uses, as Flax gives it.
        assert_trees_equal(grads["/".join((col, *path))], expected)
    embedding = nn.unbox(grads["params/embed/embedding"])
    assert np.abs(np.asarray(embedding)).sum() > 0


def test_grad_under_variable_jit_equals_jitted_grad_of_apply():
    tree = flaxmock.unflaxify(MODEL, TOKENS, variables=VARIABLES)
    unbound, params = pz.unbind_params(tree, freeze=True)

    def loss(params, unbound):
        return flaxmock.call(pz.bind_variables(unbound, params), TOKENS).mean()

    grads = {g.label: g.value for g in pz.variable_jit(jax.grad(loss))(params, unbound)}
    ref = jax.jit(jax.grad(lambda v: MODEL.apply(v, TOKENS).mean()))(VARIABLES)
    for (col, path), expected in _vars.flatten_variables(ref).items():
        assert_trees_equal(grads["/".join((col, *path))], expected)


def test_grad_through_mocks_under_variable_jit():
    tree = flaxmock.mock(flaxmock.unflaxify(MODEL, TOKENS, variables=VARIABLES), llama.MLP)
    unbound, params = pz.unbind_params(tree, freeze=True)

    def loss(params, unbound):
        return flaxmock.call(pz.bind_variables(unbound, params), TOKENS).mean()

    grads = {g.label: g.value for g in pz.variable_jit(jax.grad(loss))(params, unbound)}
    # Mocked after binding, the MLPs keep their (real) parameters: one gradient each, zero, as
    # a mock's output is a constant.
    assert len(grads) == len(params) == len(flax_labels({"params": VARIABLES["params"]}))
    mlp = [label for label in grads if "/mlp/" in label]
    assert mlp and all(not np.asarray(nn.unbox(grads[label])).any() for label in mlp)
    assert np.asarray(nn.unbox(grads["params/embed/embedding"])).any()
    _, counters = pz.unbind_state_vars(unbound)
    assert counters and all(int(c.value) == 1 for c in counters)  # written back by variable_jit


def test_variable_jit_call_equals_eager_and_apply():
    tree = flaxmock.unflaxify(MODEL, TOKENS, variables=VARIABLES)
    jitted = pz.variable_jit(flaxmock.call)(tree, TOKENS)
    assert_trees_equal(jitted, jax.jit(MODEL.apply)(VARIABLES, TOKENS))
    assert_trees_equal(flaxmock.call(tree, TOKENS), MODEL.apply(VARIABLES, TOKENS))


def test_plain_jit_of_a_bound_tree_fails_in_jax():
    tree = flaxmock.unflaxify(MODEL, TOKENS, variables=VARIABLES)
    with pytest.raises(TypeError, match="Parameter"):
        jax.jit(flaxmock.call)(tree, TOKENS)


class Norm(nn.Module):
    @nn.compact
    def __call__(self, x, train):
        h = nn.Dense(4, name="dense")(x)
        return nn.BatchNorm(use_running_average=not train, momentum=0.5, name="bn")(h)


X = jnp.arange(12.0).reshape(3, 4)


def test_batchnorm_state_is_state_variables_and_call_changes_nothing():
    model = Norm()
    variables = model.init(jax.random.key(0), X, False)
    tree = flaxmock.unflaxify(model, X, True, variables=variables)
    bn = layers_at(tree, "bn")[0]
    mean = bn.scope_data.variables["batch_stats"]["mean"]
    assert isinstance(mean, pz.StateVariable) and mean.label == "batch_stats/bn/mean"
    _, state = pz.unbind_state_vars(tree)
    assert {s.label for s in state} == flax_labels({"batch_stats": variables["batch_stats"]})
    _, params = pz.unbind_params(tree)
    assert {p.label for p in params} == flax_labels({"params": variables["params"]})

    before = [np.asarray(s.value) for s in state]
    out, updates = flaxmock.call(tree, X, True, mutable=["batch_stats"])
    ref_out, ref_updates = model.apply(variables, X, True, mutable=["batch_stats"])
    assert_trees_equal((out, updates), (ref_out, ref_updates))
    # Like module.apply, a call returns the new state and leaves the tree's state as it was.
    for s, b in zip(state, before, strict=True):
        np.testing.assert_array_equal(np.asarray(s.value), b)
    # The penzai layer convention (tree(ArgsAndKwargs)) changes nothing either.
    stepped = flaxmock.unflaxify(model, X, True, variables=variables, mutable=["batch_stats"])
    stepped(flaxmock.ArgsAndKwargs.capture(X, True))
    mean = layers_at(stepped, "bn")[0].scope_data.variables["batch_stats"]["mean"]
    np.testing.assert_array_equal(np.asarray(mean.value), variables["batch_stats"]["bn"]["mean"])

    # The next step binds the returned state: a new tree, with new state variables.
    nxt = flaxmock.bind(tree, {**variables, **updates})
    new_mean = layers_at(nxt, "bn")[0].scope_data.variables["batch_stats"]["mean"]
    assert new_mean is not layers_at(tree, "bn")[0].scope_data.variables["batch_stats"]["mean"]
    np.testing.assert_array_equal(new_mean.value, updates["batch_stats"]["bn"]["mean"])
    assert_trees_equal(
        flaxmock.call(nxt, X, True, mutable=["batch_stats"]),
        model.apply({**variables, **updates}, X, True, mutable=["batch_stats"]),
    )


def test_abstract_values_stay_frozen_specs():
    model = Norm()
    tree = flaxmock.unflaxify(model, X, True)
    bn = layers_at(tree, "bn")[0]
    scale = bn.scope_data.parameters["scale"]
    mean = bn.scope_data.variables["batch_stats"]["mean"]
    assert isinstance(scale, pz.ParameterValue) and isinstance(mean, pz.StateVariableValue)
    assert isinstance(scale.value, jax.ShapeDtypeStruct)
    assert pz.unbind_variables(tree)[1] == ()
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(tree))


def test_bind_and_materialize_never_change_the_given_tree():
    tree = flaxmock.unflaxify(MODEL, TOKENS, variables=VARIABLES)
    _, params = pz.unbind_params(tree)
    before = {p.label: p.value for p in params}
    # materialize gives jax.jit(model.init)'s values (an eager init may differ in the last bit).
    other = jax.jit(MODEL.init)(jax.random.key(1), TOKENS)
    for new in (flaxmock.bind(tree, other), flaxmock.materialize(tree, jax.random.key(1))):
        _, new_params = pz.unbind_params(new)
        assert {p.label for p in new_params} == set(before)
        assert not {id(p) for p in new_params} & {id(p) for p in params}
        embedding = next(p for p in new_params if p.label == "params/embed/embedding")
        np.testing.assert_array_equal(
            nn.unbox(embedding.value), nn.unbox(other["params"]["embed"]["embedding"])
        )
    # The given tree's parameters hold the very arrays they held.
    assert all(p.value is before[p.label] for p in params)
    assert_trees_equal(flaxmock.call(tree, TOKENS), MODEL.apply(VARIABLES, TOKENS))


def test_a_mock_keeps_the_shared_parameter_objects():
    tree = flaxmock.unflaxify(MODEL, TOKENS, variables=VARIABLES)
    mocked = flaxmock.mock(tree, "embed.attend")
    (mock,) = [m for _, m in _layer.iter_layers(mocked) if isinstance(m, flaxmock.MockLayer)]
    embed_call = layers_at(mocked, "embed")[0]
    shared = embed_call.scope_data.parameters["embedding"]
    assert mock.kept["params"]["embedding"] is shared
    _, params = pz.unbind_params(mocked)
    assert sorted(p.label for p in params) == sorted(flax_labels({"params": VARIABLES["params"]}))

    # bind gives the layer and the mock one new object, and the tree runs with the new values.
    other = MODEL.init(jax.random.key(1), TOKENS)
    rebound = flaxmock.bind(mocked, other)
    (new_mock,) = [m for _, m in _layer.iter_layers(rebound) if isinstance(m, flaxmock.MockLayer)]
    new_shared = layers_at(rebound, "embed")[0].scope_data.parameters["embedding"]
    assert new_mock.kept["params"]["embedding"] is new_shared is not shared
    assert len(pz.unbind_params(rebound)[1]) == len(params)
    assert mock.kept["params"]["embedding"] is shared  # the mocked tree is unchanged

    assert flaxmock.unmock(mocked) == tree
    # The layer a mock replaced is given the new values too: unmocking the rebound tree gives
    # the tree bound to them, not a mix of old and new values.
    unmocked = flaxmock.unmock(rebound)
    assert len(pz.unbind_params(unmocked)[1]) == len(params)
    assert_trees_equal(flaxmock.call(unmocked, TOKENS), MODEL.apply(other, TOKENS))


def test_eval_shape_accepts_bound_and_mocked_trees():
    tree = flaxmock.mock(flaxmock.unflaxify(MODEL, TOKENS, variables=VARIABLES), llama.Attention)
    _, variables = pz.unbind_variables(tree)
    before = [v.value for v in variables]
    spec = jax.ShapeDtypeStruct((2, 5), jnp.int32)
    out = flaxmock.eval_shape(flaxmock.call, tree, spec)
    assert out == jax.eval_shape(MODEL.apply, VARIABLES, spec)
    assert all(v.value is b for v, b in zip(variables, before, strict=True))


def test_summary_counts_the_tied_embedding_once():
    tree = flaxmock.unflaxify(MODEL, TOKENS, variables=VARIABLES)
    _, params = pz.unbind_params(tree)
    total = sum(nn.unbox(p.value).size for p in params)
    assert flaxmock.summary(tree).total_params == total == CONFIG.num_params()
