"""Spies (#15): real calls run unchanged and record what they receive and return.

The oracle is ``module.apply`` (outputs, collections) and ``nn.intercept_methods`` on it (what
each call receives and returns). Light cases only: the zoo part runs on a few small models.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from penzai import pz

import flaxmock
import zoo
from flaxmock._linen.layer import iter_layers
from helpers import assert_trees_equal, init_variables

LIGHT = ["mlp_compact", "setup_module", "self_method", "embed_attend"]
CASES = {case.id: case for case in zoo.CASES}


def _spies(tree):
    return {
        (layer.info.path_str, layer.method_name): layer
        for _, layer in iter_layers(tree)
        if isinstance(layer, flaxmock.SpyLayer)
    }


def _converted(case_id):
    case = CASES[case_id]
    model, variables = init_variables(case)
    tree = flaxmock.unflaxify(
        model, *case.args, method=case.method, variables=variables, **case.kwargs
    )
    return case, model, variables, tree


def _seen_by_intercept(model, variables, case):
    """``{(path, method): [(args, kwargs, output)]}`` as ``nn.intercept_methods`` sees them."""
    seen: dict = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name != "setup" and module.scope is not None:
            path = "/".join(module.scope.path) or "<root>"
            seen.setdefault((path, context.method_name), []).append((args, kwargs, out))
        return out

    with nn.intercept_methods(interceptor):
        model.apply(variables, *case.args, method=case.method, mutable=case.mutable, **case.kwargs)
    return seen


@pytest.mark.parametrize("case_id", LIGHT)
def test_spying_every_call_changes_nothing_and_records_what_apply_sees(case_id):
    case, model, variables, tree = _converted(case_id)
    spied = flaxmock.spy(tree, lambda layer: True)
    kwargs = dict(case.kwargs, mutable=case.mutable)
    expected = model.apply(variables, *case.args, method=case.method, **kwargs)
    assert_trees_equal(flaxmock.call(spied, *case.args, **kwargs), expected)
    seen = _seen_by_intercept(model, variables, case)
    spies = _spies(spied)
    assert spies
    for key, spy in spies.items():
        if key not in seen:  # The root call with method= a function has no module path.
            continue
        assert spy.call_count == len(seen[key]), key
        for call, (args, kw, out) in zip(spy.calls, seen[key], strict=True):
            assert_trees_equal((call.args, call.kwargs, call.output), (tuple(args), kw, out))
    # Compiled the penzai way: same outputs, and every spy records once more.
    counts = {k: s.call_count for k, s in spies.items()}
    run = flaxmock.jit(lambda t, *a: flaxmock.call(t, *a, **kwargs))
    out = run(spied, *case.args)
    # Exactly what the unspied tree gives under jit (the records are extra outputs of the
    # program; they change nothing that it computes).
    assert_trees_equal(out, run(tree, *case.args))
    # (Compiled against eager, both may differ in the last digit: XLA fuses otherwise.)
    jax.tree.map(
        lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6),
        out,
        expected,
    )
    assert all(s.call_count == 2 * counts[k] for k, s in spies.items())
    for spy in spies.values():
        jax.tree.map(
            lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6),
            spy.outputs[-1],
            spy.outputs[0],
        )


def test_scan_body_records_one_call_per_step_and_replays_at_that_step():
    case, model, variables, tree = _converted("llama_tiny_scan")
    spied = flaxmock.spy(tree, ["blocks/attn", "blocks"])
    expected = model.apply(variables, *case.args)
    out = flaxmock.call(spied, *case.args)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    n_layers = model.config.n_layers
    attn = _spies(spied)[("blocks/attn", "__call__")]
    body = _spies(spied)[("blocks", "__call__")]
    assert attn.call_count == body.call_count == n_layers
    assert [c.step for c in attn.calls] == [(i,) for i in range(n_layers)]
    # Step k's input is step k-1's output (the carry), step 0's is the embedding.
    for k in range(1, n_layers):
        np.testing.assert_array_equal(body.calls[k].args[0], body.outputs[k - 1][0])
    bound = model.bind(variables)
    for call in attn.calls:
        np.testing.assert_allclose(flaxmock.replay(call, bound), call.output, rtol=1e-5, atol=1e-6)


def test_records_survive_variable_jit_and_reset_mock():
    case, model, variables, tree = _converted("mlp_compact")
    spied = flaxmock.spy(tree, nn.Dense)
    step = flaxmock.jit(flaxmock.call)
    x = case.args[0]
    step(spied, x)
    step(spied, x * 2)
    spy = next(iter(_spies(spied).values()))
    assert spy.call_count == 2
    assert all(not isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(spy.call_args_list))
    spy.assert_called_with(x * 2)
    with pytest.raises(AssertionError, match="expected a call with"):
        spy.assert_called_with(x)
    spy.reset_mock()
    spy.assert_not_called()
    assert spy.outputs == []


def test_spy_a_real_block_in_a_mocked_model_and_replay_it_on_the_full_model():
    case, model, variables, tree = _converted("llama_tiny")
    partial = flaxmock.spy(flaxmock.mock(tree, ["layers_0", "embed"]), "layers_1")
    flaxmock.call(partial, *case.args)
    seen = _spies(partial)[("layers_1", "__call__")].calls[-1]
    for target in (tree, model.bind(variables)):
        np.testing.assert_array_equal(flaxmock.replay(seen, target), seen.output)
    assert flaxmock.unspy(flaxmock.unmock(partial)) == tree


def test_spy_errors():
    case, model, variables, tree = _converted("mlp_compact")
    spied = flaxmock.spy(tree, nn.Dense)
    with pytest.raises(flaxmock.SelectNothingError, match="flaxmock.unspy"):
        flaxmock.unspy(tree)
    with pytest.raises(flaxmock.SelectNothingError, match="already SpyLayers"):
        flaxmock.spy(spied, nn.Dense)
    with pytest.raises(flaxmock.InvalidArgumentError, match="spy.calls"):
        flaxmock.replay((case.args, {}), tree)
    flaxmock.call(spied, case.args[0])
    call = next(iter(_spies(spied).values())).calls[0]
    with pytest.raises(flaxmock.SelectNothingError, match="no real call"):
        flaxmock.replay(call, flaxmock.mock(tree, nn.Dense))
    with pytest.raises(flaxmock.InvalidArgumentError, match="bound Flax module"):
        flaxmock.replay(call, model)
    other = nn.Dense(2)
    bound_other = other.bind(other.init(jax.random.key(0), case.args[0]))
    with pytest.raises(flaxmock.BindVariablesError, match="no variables at"):
        flaxmock.replay(call, bound_other)


def test_spy_in_a_vmap_body_that_carries_intermediates_records_lanes():
    class Ensemble(nn.Module):
        @nn.compact
        def __call__(self, x):
            members = nn.vmap(
                nn.Dense,
                variable_axes={"params": 0, "intermediates": 0},
                split_rngs={"params": True},
                in_axes=None,
                out_axes=0,
                axis_size=3,
            )(4)
            return members(x)

    x = jnp.ones((2, 5))
    model = Ensemble()
    variables = model.init(jax.random.key(0), x)
    spied = flaxmock.spy(flaxmock.unflaxify(model, x, variables=variables), "VmapDense_0")
    out = flaxmock.call(spied, x)
    np.testing.assert_array_equal(out, model.apply(variables, x))
    (spy,) = _spies(spied).values()
    assert spy.call_count == 1 and spy.calls[0].lanes == ("vmap",)
    np.testing.assert_array_equal(spy.outputs[0], out)
    assert isinstance(spy.records, pz.StateVariable)


# NNX: the same core, NNX state for the records.


class _NnxBlock(nnx.Module):
    def __init__(self, rngs):
        self.lin = nnx.Linear(4, 4, rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)

    def __call__(self, x):
        return jnp.tanh(self.bn(self.lin(x)))


@nnx.vmap(in_axes=0, out_axes=0)
def _nnx_stack(key):
    return _NnxBlock(nnx.Rngs(key))


class _NnxModel(nnx.Module):
    """Three blocks stacked with ``nnx.vmap`` and run by ``nnx.scan``, then a head."""

    def __init__(self):
        self.blocks = _nnx_stack(jax.random.split(jax.random.key(0), 3))
        self.head = nnx.Linear(4, 2, rngs=nnx.Rngs(1))

    def __call__(self, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def run(x, block):
            return block(x)

        return self.head(run(x, self.blocks))


def _nnx_leaves(model):
    return jax.tree.leaves(nnx.state(model))


def test_nnx_spy_changes_nothing_and_records_each_scan_step():
    model = _NnxModel()
    reference = nnx.clone(model)
    x = jnp.ones((2, 4))
    spied = flaxmock.nnx.spy(model, ["blocks", "head"])
    out = spied(x)
    np.testing.assert_array_equal(out, reference(x))
    # State (BatchNorm statistics) updated as the unspied model's; the user's model untouched.
    for a, e in zip(_nnx_leaves(flaxmock.nnx.unspy(spied)), _nnx_leaves(reference), strict=True):
        np.testing.assert_array_equal(a, e)
    for a, e in zip(_nnx_leaves(model), _nnx_leaves(_NnxModel()), strict=True):
        np.testing.assert_array_equal(a, e)
    blocks, head = spied.blocks, spied.head
    assert blocks.call_count == 3 and head.call_count == 1
    assert [c.step for c in blocks.calls] == [(0,), (1,), (2,)]
    for k in range(1, 3):  # Step k's input is step k-1's output (the carry).
        np.testing.assert_array_equal(blocks.calls[k].args[0], blocks.outputs[k - 1])
    np.testing.assert_array_equal(head.outputs[0], out)
    head.assert_called_with(blocks.outputs[-1])
    for call in blocks.calls:  # Replayed eagerly, on a copy of the (untouched) model.
        np.testing.assert_allclose(
            flaxmock.nnx.replay(call, model), call.output, rtol=1e-5, atol=1e-6
        )
    # Under nnx.jit the records are written back too, and the output is exactly the unspied
    # model's under nnx.jit (both have run once: same state).
    jitted = nnx.jit(lambda m, x: m(x))
    np.testing.assert_array_equal(jitted(spied, x), jitted(nnx.clone(reference), x))
    assert blocks.call_count == 6 and head.call_count == 2
    assert not any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(head.outputs))
    head.reset_mock()
    head.assert_not_called()


def test_nnx_spy_errors():
    model = _NnxModel()
    spied = flaxmock.nnx.spy(model, "head")
    x = jnp.ones((2, 4))
    graphdef, state = nnx.split(spied)

    @jax.jit
    def raw(state, x):  # A copy merged inside a raw JAX transform: nothing is written back.
        return nnx.merge(graphdef, state)(x)

    with pytest.raises(flaxmock.RecordSpyError, match=r"head: .*not written back.*nnx.jit"):
        raw(state, x)
    assert spied.head.call_count == 0
    with pytest.raises(flaxmock.SelectNothingError, match="already SpyModules"):
        flaxmock.nnx.spy(spied, "head")
    with pytest.raises(flaxmock.SelectNothingError, match="flaxmock.nnx.unspy"):
        flaxmock.nnx.unspy(model)
    spied(x)
    with pytest.raises(flaxmock.SelectNothingError, match="no real module at 'head'"):
        flaxmock.nnx.replay(spied.head.calls[0], flaxmock.nnx.mock(model, "head"))
    with pytest.raises(flaxmock.InvalidArgumentError, match="recorded by an NNX spy"):
        flaxmock.nnx.replay(spied.head.outputs[0], model)
