"""The zoo itself: every case initialises and applies with plain Flax."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import zoo
from flaxmock.examples import llama


@pytest.mark.parametrize("case", zoo.CASES, ids=zoo.IDS)
def test_case_inits_and_applies(case):
    model = case.make()
    rngs = {"params": jax.random.key(0), **{r: jax.random.key(1) for r in case.rngs}}
    variables = model.init(rngs, *case.args, method=case.method, **case.kwargs, **case.init_kwargs)
    assert jax.tree.leaves(variables.get("params", {})), "every case has parameters"
    out = model.apply(
        variables,
        *case.args,
        method=case.method,
        mutable=case.mutable,
        rngs={r: jax.random.key(2) for r in case.rngs} or None,
        **case.kwargs,
    )
    assert jax.tree.leaves(out)


@pytest.mark.parametrize("preset", ["tiny", "8b", "70b"])
def test_llama_num_params_matches_init(preset):
    config = llama.LlamaConfig.preset(preset)
    variables = jax.eval_shape(
        lambda k: llama.Llama(config).init(k, jnp.zeros((1, 4), jnp.int32)), jax.random.key(0)
    )
    assert sum(x.size for x in jax.tree.leaves(variables)) == config.num_params()


def test_llama_presets_have_the_published_sizes():
    assert round(llama.LlamaConfig.llama3_8b().num_params() / 1e9, 2) == 8.03
    assert round(llama.LlamaConfig.llama3_70b().num_params() / 1e9, 1) == 70.6
    with pytest.raises(ValueError, match="Unknown preset 'huge'"):
        llama.LlamaConfig.preset("huge")
