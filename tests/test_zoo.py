"""The zoo itself: every case initialises and applies with plain Flax; the example's sizes."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import zoo
from flaxmock.examples import Llama, LlamaConfig, llama


def _count(variables) -> int:
    # Boxed params (nn.LogicallyPartitioned) are pytrees whose leaf is the array itself.
    return sum(x.size for x in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("case", zoo.IDIOM_PARAMS, ids=zoo.IDS)
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
    if case.mutable:
        out, updates = out
        assert set(updates) == set(case.mutable), "every mutable collection is written"
    assert jax.tree.leaves(out)


def test_ids_are_unique():
    assert len(set(zoo.IDS)) == len(zoo.IDS)


def test_cases_filters_on_every_tag():
    lifted = zoo.cases("lifted")
    assert {"scan_layers", "vmap_ensemble", "nested_apply"} <= {c.id for c in lifted}
    assert [c.id for c in zoo.cases("llama", "lifted")] == ["llama_tiny_scan"]
    assert zoo.cases() == zoo.CASES
    with pytest.raises(ValueError, match=r"Unknown zoo tags \['lifteed'\]"):
        zoo.cases("lifteed")


def test_shared_module_variables_live_where_flax_binds_them():
    # Assigned to self in the parent's setup: owned by the parent, under its attribute name.
    case = next(c for c in zoo.CASES if c.id == "shared_submodule")
    params = case.make().init(jax.random.key(0), *case.args)["params"]
    assert set(params) == {"shared", "encoder", "decoder"}
    assert set(params["encoder"]) == set(params["decoder"]) == {"proj"}
    # Never assigned to self: adopted by the first child that binds it, used by both.
    case = next(c for c in zoo.CASES if c.id == "shared_submodule_adopted")
    params = case.make().init(jax.random.key(0), *case.args)["params"]
    assert set(params["encoder"]) == {"embed", "proj"}
    assert set(params["decoder"]) == {"proj"}


def test_llama_tiny_num_params_matches_real_init():
    config = LlamaConfig.tiny()
    variables = Llama(config).init(jax.random.key(0), zoo.TOKENS)
    assert _count(variables) == config.num_params()
    # init leaves "intermediates" out by default, so the sown attention weights are not params.
    assert set(variables) == {"params"}
    kernel = variables["params"]["layers_0"]["attn"]["q"]["kernel"]
    assert isinstance(kernel, nn.LogicallyPartitioned) and kernel.names == ("embed", "heads")


@pytest.mark.parametrize(
    "config",
    [
        LlamaConfig.tiny(tie_embeddings=False),
        LlamaConfig.tiny(scan_layers=True),
        LlamaConfig.llama3_8b(),
        LlamaConfig.llama3_70b(),
    ],
    ids=["tiny_untied", "tiny_scan", "8b", "70b"],
)
def test_llama_num_params_matches_abstract_init(config):
    model = Llama(config)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
    assert _count(variables) == config.num_params()
    assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(config.param_dtype)}


def test_llama_presets_have_the_published_sizes():
    assert round(LlamaConfig.llama3_8b().num_params() / 1e9, 2) == 8.03
    assert round(LlamaConfig.llama3_70b().num_params() / 1e9, 1) == 70.6
    assert LlamaConfig.preset("70b") == LlamaConfig.llama3_70b()
    assert llama.LlamaConfig is LlamaConfig
    with pytest.raises(ValueError, match="Unknown preset 'huge'"):
        LlamaConfig.preset("huge")
