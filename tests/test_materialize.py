"""``materialize`` and ``bind``: real values only where the model runs for real."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from penzai import pz

import flaxmock
import zoo
from flaxmock._linen import assemble as _assemble
from helpers import apply_rngs, assert_specs_equal, assert_trees_equal, init_variables

CASES = zoo.CASES
IDS = [c.id for c in CASES]


@pytest.mark.parametrize("case", zoo.IDIOM_PARAMS, ids=IDS)
def test_materialize_gives_init_values(case):
    model, variables = init_variables(case)
    tree = flaxmock.unflaxify(model, *case.args, method=case.method, **case.kwargs)
    real = flaxmock.materialize(tree, jax.random.key(0), *case.args, **case.kwargs)
    arrays, rebuild = flaxmock._core.specs.partition(case.args)
    if case.rngs:
        # init drew from other streams too. The parameters come from the params stream alone
        # (Flax derives each module's key from its path), so they equal init's; the run gives
        # apply's structure, shapes and dtypes (its other streams' draws differ).
        init_rngs = {"params": jax.random.key(0), **{r: jax.random.key(1) for r in case.rngs}}
        variables = jax.jit(
            lambda a: model.init(init_rngs, *rebuild(a), method=case.method, **case.kwargs)
        )(arrays)
        got = _assemble.assemble(real).variables
        assert_trees_equal(got["params"], variables["params"])
        rngs = apply_rngs(case)
        out = flaxmock.call(real, *case.args, mutable=case.mutable, rngs=rngs, **case.kwargs)
        ref = model.apply(
            variables,
            *case.args,
            method=case.method,
            mutable=case.mutable,
            rngs=rngs,
            **case.kwargs,
        )
        assert_specs_equal(out, ref)
        return
    # The values are those of a jit-compiled init; eager init may differ in the last bit.
    variables = jax.jit(lambda k, a: model.init(k, *rebuild(a), method=case.method, **case.kwargs))(
        jax.random.key(0), arrays
    )
    variables = {k: v for k, v in variables.items() if k != "intermediates"}
    out = flaxmock.call(real, *case.args, mutable=case.mutable, **case.kwargs)
    ref = model.apply(
        variables, *case.args, method=case.method, mutable=case.mutable, **case.kwargs
    )
    assert_trees_equal(out, ref)


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(64, name="big")(x)
        return nn.Dense(2, name="small")(h)


X = jnp.ones((2, 3))


def test_materialize_leaves_mocked_parameters_abstract():
    tree = flaxmock.mock(flaxmock.unflaxify(Net(), X), "big")
    real = flaxmock.materialize(tree, jax.random.key(0))
    small = real.submodule_calls[(1, "small.__call__")].scope_data.parameters
    assert isinstance(small["kernel"].value, jax.Array)
    big = real.submodule_calls[(0, "big.__call__")]
    assert isinstance(big, flaxmock.MockLayer)
    for leaf in jax.tree.leaves(big.info.variables):
        assert isinstance(leaf, jax.ShapeDtypeStruct)
    ref = Net().init(jax.random.key(0), X)["params"]["small"]["kernel"]
    np.testing.assert_array_equal(small["kernel"].value, ref)


def test_bind_partial_checkpoint():
    variables = Net().init(jax.random.key(0), X)
    tree = flaxmock.mock(flaxmock.unflaxify(Net(), X), "big")
    subset = {"params": {"small": variables["params"]["small"]}}
    bound = flaxmock.bind(tree, subset)
    out = flaxmock.call(bound, X)
    assert out.shape == (2, 2)


def test_bind_reports_every_problem_at_once():
    variables = Net().init(jax.random.key(0), X)
    tree = flaxmock.unflaxify(Net(), X)
    bad = {
        "params": {
            "big": {"kernel": jnp.zeros((3, 5))},
            "small": variables["params"]["small"],
            "extra": {"w": jnp.zeros(1)},
        }
    }
    with pytest.raises(flaxmock.BindVariablesError) as info:
        flaxmock.bind(tree, bad, strict=True)
    message = str(info.value)
    assert "missing: params/big/bias (expected float32[64])" in message
    assert (
        "wrong shape or dtype: params/big/kernel: expected float32[3, 64], got float32[3, 5]"
        in (message)
    )
    assert "unused: params/extra/w" in message
    assert "3 problem(s)" in message
    flaxmock.bind(tree, {**variables, "extra": {}})  # extra entries are fine without strict


def test_grad_flows_to_real_parameters_through_mocks():
    class Chain(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(4, name="first")(x)
            h = nn.Dense(4, name="mocked")(h)
            return nn.Dense(1, name="last")(h * x.sum())

    x = jnp.ones((2, 3))
    tree = flaxmock.mock(flaxmock.unflaxify(Chain(), x), "mocked")
    tree = flaxmock.materialize(tree, jax.random.key(0))
    # The real parameters are penzai parameters: differentiate with respect to them, the
    # penzai way (the mocked layer's parameters stay abstract, so are not among them).
    unbound, params = pz.unbind_params(tree, freeze=True)

    def loss(params):
        return flaxmock.call(pz.bind_variables(unbound, params), x).sum()

    grads = {g.label: g.value for g in jax.grad(loss)(params)}
    assert sorted(grads) == [
        f"params/{m}/{p}" for m in ("first", "last") for p in ("bias", "kernel")
    ]
    last = grads["params/last/kernel"]
    first = grads["params/first/kernel"]
    assert np.abs(np.asarray(last)).sum() > 0
    # The mock's output is a constant: nothing flows back to the layer before it.
    np.testing.assert_array_equal(np.asarray(first), 0)


def test_materialize_computes_only_unmocked_leaves():
    tree = flaxmock.mock(flaxmock.unflaxify(Net(), X), "big")
    needed = {
        (col, path)
        for col, t in flaxmock._linen.assemble.assemble(tree).variables.items()
        for path in flaxmock._linen.variables.flatten(t)
    }
    assert needed == {("params", ("small", "kernel")), ("params", ("small", "bias"))}


def test_materialize_never_traces_mocked_code():
    class Router(nn.Module):
        @nn.compact
        def __call__(self, x):
            # A value-dependent shape: no abstract trace of this code can succeed.
            return jnp.nonzero(nn.Dense(3)(x).sum(0) > 0)[0]

    class Routed(nn.Module):
        @nn.compact
        def __call__(self, x):
            idx = Router(name="router")(x)
            return nn.Dense(2, name="out")(x) + idx.sum()

    x = jnp.ones((2, 4))
    spec = jax.ShapeDtypeStruct((3,), jnp.int32)
    tree = flaxmock.mock(flaxmock.unflaxify(Routed(), x, out={"router": spec}), "router")
    real = flaxmock.materialize(tree, jax.random.key(0))
    assert flaxmock.call(real, x).shape == (2, 2)
    kernel = real.submodule_calls[(1, "out.__call__")].scope_data.parameters["kernel"].value
    # Skipping the mocked module leaves the others' values as init gives them.
    with nn.intercept_methods(
        lambda f, a, k, c: jnp.zeros(3, jnp.int32) if c.module.name == "router" else f(*a, **k)
    ):
        ref = jax.jit(Routed().init)(jax.random.key(0), x)
    np.testing.assert_array_equal(kernel, ref["params"]["out"]["kernel"])
