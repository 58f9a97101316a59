# %% [markdown]
# # Partial mocking: real parameters only where the model runs for real
#
# The most useful debugging set-up is partial: mock the expensive or irrelevant parts of a
# model, and run the rest for real. With flaxmock the memory this costs is that of the
# parameters the real part uses, never that of the whole model: mocked layers keep abstract
# parameters, which are never computed or allocated.
#
# **What you will learn**
#
# - mock every attention block of a Llama-style model and give real parameters to the rest
#   with `flaxmock.materialize`;
# - measure the memory saved: bytes allocated against the whole model's parameter bytes;
# - bind the un-mocked part from a partial checkpoint with `flaxmock.bind`;
# - check a checkpoint against the model without reading it (`flaxmock.check_checkpoint`) and
#   load only the un-mocked layers' weights from it (`flaxmock.load`);
# - take gradients through a partly mocked model the penzai way (`pz.unbind_params`): one
#   gradient per parameter, a tied embedding included (mock outputs are constants);
# - run a decode loop with a decode cache through a partly mocked model: eagerly, compiled,
#   and inside `jax.lax.fori_loop`;
# - check that a real block computes what it computes in the full model, with spies
#   (`flaxmock.spy`, `flaxmock.replay`), in a scanned stack too.

# %%
import flax.linen as nn
import jax
import jax.numpy as jnp
from penzai import pz

import flaxmock
from flaxmock.examples import llama

# %% [markdown]
# ## The example model
#
# `flaxmock.examples.llama` is a Llama-style decoder: token embedding, blocks of RMSNorm,
# grouped-query attention with RoPE and a SwiGLU MLP, a final norm and an output head. Its
# presets go up to 8B and 70B parameters; here we use the `tiny` configuration, which runs on a
# CPU in a fraction of a second.

# %%
config = llama.LlamaConfig.tiny()
model = llama.Llama(config)
tokens = jnp.arange(12, dtype=jnp.int32).reshape(1, 12) % config.vocab_size

tree = flaxmock.unflaxify(model, tokens)
whole = flaxmock.summary(tree)
print(f"{whole.total_params:,} parameters, {whole.total_bytes:,} bytes")
assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(tree))

# %% [markdown]
# ## Mock every attention block
#
# Selecting by class mocks each `Attention` call, wherever it is. The summary marks them.

# %%
mocked = flaxmock.mock(tree, llama.Attention)
print(flaxmock.summary(mocked))
n_attention = sum(row.module_type == "Attention" for row in whole.rows)
n_mocked = sum(row.note.startswith("mocked") for row in flaxmock.summary(mocked).rows)
assert n_mocked == n_attention > 0

# %% [markdown]
# ## Materialize the rest, and run it
#
# `flaxmock.materialize(tree, key)` gives every parameter an un-mocked layer uses the value
# `module.init(key, ...)` would give it. It runs the model's own initializers under `jax.jit`
# with only those parameters as outputs, so the attention weights are never computed. The tree
# then runs: embeddings, norms and MLPs for real, attention random.

# %%
real = flaxmock.materialize(mocked, jax.random.key(0))
logits = flaxmock.call(real, tokens)
print(logits.shape, logits.dtype)
assert logits.shape == (1, 12, config.vocab_size)
assert jnp.isfinite(logits).all()

# %% [markdown]
# The real parameters are penzai parameters, as in a tree from penzai's own `unflaxify`: one
# `pz.Parameter` per Flax parameter, shared by every layer that uses it, so `pz.unbind_params`
# lists each once. (The mocked layers' parameters are still frozen `jax.ShapeDtypeStruct`
# specs, which no tool mistakes for a parameter.) Their values are those of the model's own
# `init` (compiled, as `materialize` compiles it). The example's parameters carry logical
# partitioning metadata (`nn.LogicallyPartitioned` boxes); `nn.unbox` strips it, leaving the
# plain arrays a checkpoint holds.

# %%
_, real_params = pz.unbind_params(real)
reference = nn.unbox(jax.jit(model.init)(jax.random.key(0), tokens))
embed_path = next(row.path for row in whole.rows if row.module_type == "Embed")
embedding = next(p for p in real_params if p.label == f"params/{embed_path}/embedding")
assert jnp.array_equal(nn.unbox(embedding.value), reference["params"][embed_path]["embedding"])

# %% [markdown]
# ## The memory saved
#
# The arrays allocated are the values of those parameters. Compare their bytes with the whole
# model's, from the summary of the un-mocked tree. (The summary of the *mocked* tree counts
# only un-mocked layers' parameters, so its total is the same figure.) The tiny model ties its
# output to the embedding: the `embed.__call__` and `embed.attend` layers hold the same
# parameter, and `pz.unbind_params` lists it once.

# %%
allocated = sum(nn.unbox(p.value).nbytes for p in real_params)
print(f"whole model: {whole.total_bytes:>9,} bytes")
print(f"allocated:   {allocated:>9,} bytes ({allocated / whole.total_bytes:.0%} of the model)")
assert allocated < whole.total_bytes
assert allocated == flaxmock.summary(mocked).total_bytes

# %% [markdown]
# At the 8B preset the MLPs dominate: mocking every attention block still allocates about
# 12.5 of the model's 15 GiB. Mocking every block but one allocates about 2.4 GiB (embedding,
# output head, one block, final norm); `bench/partial.py` measures the process's peak memory
# for that run.
#
# ## Bind a partial checkpoint
#
# `flaxmock.bind(tree, variables)` takes the values from a variables dict instead, as
# `module.init` returns it, and it may hold only what the un-mocked layers need: a checkpoint
# subset. Here the "checkpoint" is a full init with the attention weights removed. With the same
# values and fresh mocks of the same seed, the result equals the materialized run.

# %%
attention_paths = {row.path for row in whole.rows if row.module_type == "Attention"}


def without_attention(params, prefix=""):
    return {
        name: without_attention(value, f"{prefix}{name}/") if isinstance(value, dict) else value
        for name, value in params.items()
        if f"{prefix}{name}" not in attention_paths
    }


checkpoint = {"params": without_attention(reference["params"])}
bound = flaxmock.bind(flaxmock.mock(tree, llama.Attention), checkpoint)
fresh = flaxmock.materialize(flaxmock.mock(tree, llama.Attention), jax.random.key(0))
assert jnp.array_equal(flaxmock.call(bound, tokens), flaxmock.call(fresh, tokens))

# %% [markdown]
# A checkpoint that lacks something an un-mocked layer needs is reported in one error listing
# every missing entry (`strict=True` also reports entries nothing uses).

# %%
incomplete = {"params": {k: v for k, v in checkpoint["params"].items() if k != embed_path}}
try:
    flaxmock.bind(mocked, incomplete)
except flaxmock.BindVariablesError as err:
    message = str(err)
print(message)
assert embed_path in message

# %% [markdown]
# ## Load trained weights from a checkpoint
#
# A real checkpoint does not fit in memory when the model does not: `flaxmock.load(tree, path)`
# reads from an Orbax checkpoint directory or safetensors files **only** the arrays the
# un-mocked layers need, each straight into its dtype (and, with `mesh=`, its sharding). It
# checks the checkpoint's metadata against the model first, without reading any array:
# `flaxmock.check_checkpoint(tree, path)` returns that report. Here the "trained" variables are
# the reference init above, saved with Orbax.

# %%
import tempfile  # noqa: E402

import orbax.checkpoint as ocp  # noqa: E402

ckpt_path = tempfile.mkdtemp() + "/trained"
ocp.PyTreeCheckpointer().save(ckpt_path, reference)

# A model built with another MLP width: the report names every entry that differs.
wider = flaxmock.unflaxify(llama.Llama(llama.LlamaConfig.tiny(ffn_dim=96)), tokens)
report = flaxmock.check_checkpoint(wider, ckpt_path)
print(report)
assert not report.ok and len(report.shape_mismatched) == 3 * config.n_layers

# %% [markdown]
# `load` refuses such a checkpoint with the same report (`LoadCheckpointError`) rather than
# loading part of a model. On the right model, mock every block but `layers_1` and load: only
# the embedding, `layers_1`, the final norm and the head are read; the block then computes
# exactly as the same block of the full model with the trained weights.

# %%
try:
    flaxmock.load(wider, ckpt_path)
    raise AssertionError("load should refuse a checkpoint of another model")
except flaxmock.LoadCheckpointError as err:
    assert err.report == report

one_block = flaxmock.mock(tree, lambda layer: layer.info.scope_path == ("layers_0",))
loaded = flaxmock.load(one_block, ckpt_path)
print(sorted(p.label for p in pz.unbind_params(loaded)[1]))
block = (
    pz.select(loaded)
    .at_subtrees_where(
        lambda x: isinstance(x, flaxmock.FlaxCallLayer) and x.info.scope_path == ("layers_1",)
    )
    .get()
)
h = jax.random.normal(jax.random.key(1), (1, 12, config.dim))
expected = llama.Block(config).apply({"params": reference["params"]["layers_1"]}, h)
assert jnp.array_equal(flaxmock.call(block, h), expected)

# %% [markdown]
# ## Gradients through mocks
#
# A materialized, partly mocked tree works under `jax.grad` and `pz.variable_jit`, the penzai
# way: `pz.unbind_params` takes the parameters out (frozen, so they are a pytree), and the loss
# binds them back into the tree with `pz.bind_variables`. The rest of the tree (the mocks' call
# counters, penzai state) goes through `pz.variable_jit`, which also advances the counters.
# Each Flax parameter is one parameter, so each gets one gradient: the tied embedding's
# gradient is already the sum over `embed.__call__` and `embed.attend`, as Flax gives it.
#
# A mock's output is a constant: gradients flow to the real parameters around the mocks (here
# through the residual connections), but nothing flows back *through* a mock. The norm in front
# of each attention feeds only the mocked attention, so its scale gets exactly zero gradient.

# %%
unbound, params = pz.unbind_params(real, freeze=True)


def loss(params, unbound):
    tree = pz.bind_variables(unbound, params)
    return flaxmock.call(tree, tokens).astype(jnp.float32).mean()


grads = pz.variable_jit(jax.grad(loss))(params, unbound)
grad_norms = {
    g.label.removeprefix("params/"): float(jnp.abs(nn.unbox(g.value)).sum()) for g in grads
}
for name, norm in sorted(grad_norms.items()):
    print(f"{name:32} {norm:.3g}")
assert len(grad_norms) == len(grads) == len(real_params)  # one gradient per parameter
assert grad_norms[f"{embed_path}/embedding"] > 0
# The rows just before each attention call are the norms that feed it.
rows = whole.rows
feeding = [rows[i - 1].path for i, row in enumerate(rows) if row.module_type == "Attention"]
assert all(grad_norms[f"{path}/scale"] == 0 for path in feeding)

# %% [markdown]
# ## A mocked decode loop
#
# With `decode=True` each attention of the example keeps a decode cache (the `cache`
# collection: keys, values and the next position), as Flax's own attention does. `init` with a
# full-length input sizes the cache; each `apply(..., mutable=["cache"])` then appends one
# token and returns the updated cache, changing nothing else.
#
# `flaxmock.call(tree, token, mutable=["cache"])` does exactly what `apply` does: it returns
# the new cache and leaves the tree as it was. The loop therefore gives the returned cache back
# to the tree with `flaxmock.bind` before the next step. Two things matter:
#
# - convert with `variables=` holding the full-length cache (abstract is enough:
#   `jax.eval_shape(model.init, key, full_length_tokens)`). Without variables the converter
#   records `init` on the one-token example, and the cache it records is one token long;
# - mocks keep state as state: a mocked attention would keep its cache as given (no token
#   appended). Here the MLPs are mocked and the attention runs for real.

# %%
decoder = llama.Llama(llama.LlamaConfig.tiny(decode=True))
batch, length = 2, 8
full = jnp.zeros((batch, length), jnp.int32)
abstract_vars = jax.eval_shape(decoder.init, jax.random.key(0), full)
step_tree = flaxmock.mock(
    flaxmock.unflaxify(decoder, full[:, :1], variables=abstract_vars), llama.MLP
)
start_vars = jax.jit(decoder.init)(jax.random.key(0), full)  # stands for a checkpoint
real_params, start_cache = {"params": start_vars["params"]}, start_vars["cache"]
step_tree = flaxmock.bind(step_tree, real_params | {"cache": start_cache})
print(jax.tree.map(jnp.shape, start_cache["layers_0"]))

# Eagerly: one token per step, the cache given back with bind.
tree_now, cache, tok = step_tree, start_cache, full[:, :1] + 1
for _ in range(3):
    logits, updated = flaxmock.call(tree_now, tok, mutable=["cache"])
    cache = updated["cache"]
    tree_now = flaxmock.bind(tree_now, real_params | {"cache": cache})
    tok = jnp.argmax(logits[:, -1], -1)[:, None].astype(jnp.int32)
assert int(cache["layers_0"]["attn"]["cache"]["cache_index"]) == 3

# Compiled: flaxmock.jit (penzai's pz.variable_jit) takes the tree as an argument.
step = flaxmock.jit(lambda tree, tok: flaxmock.call(tree, tok, mutable=["cache"]))
logits, updated = step(flaxmock.bind(step_tree, real_params | {"cache": start_cache}), tok)
assert int(updated["cache"]["layers_0"]["attn"]["cache"]["cache_index"]) == 1


# Inside jax.lax.fori_loop: the loop carries the cache; each iteration binds it.
def generate(first):
    def body(i, state):
        tok, cache, out = state
        tree = flaxmock.bind(step_tree, real_params | {"cache": cache})
        logits, updated = flaxmock.call(tree, tok, mutable=["cache"])
        nxt = jnp.argmax(logits[:, -1], -1)[:, None].astype(jnp.int32)
        return nxt, updated["cache"], out.at[:, i].set(nxt[:, 0])

    init = (first, start_cache, jnp.zeros((batch, length), jnp.int32))
    return jax.lax.fori_loop(0, length, body, init)


_, final_cache, generated = jax.jit(generate)(full[:, :1] + 1)
print(generated)
assert int(final_cache["layers_0"]["attn"]["cache"]["cache_index"]) == length
# The mocked MLPs drew anew at every step (a fresh count per iteration): the tokens vary.
assert len({int(t) for t in generated[0]}) > 1

# %% [markdown]
# ## Check one real block with a spy
#
# A partial run is only useful if its real part computes what it computes in the full model.
# `flaxmock.spy(tree, where)` wraps the selected calls in spies (`flaxmock.SpyLayer`): each
# runs exactly as before and records its arguments and output, with the call-history vocabulary
# of mocks (`call_count`, `call_args_list`, `outputs`, `calls`, `assert_called_with` with arrays
# compared by value, `reset_mock()`). `flaxmock.replay(call, other)` runs a recorded call again,
# on its recorded inputs, against another tree or a bound module. Here every part of the model
# but its second block is mocked, and the block is checked against the full model in three
# lines.

# %%
full = flaxmock.bind(tree, reference)
partial = flaxmock.spy(flaxmock.mock(full, ["embed", "layers_0", "norm"]), "layers_1")
flaxmock.call(partial, tokens)
(block,) = pz.select(partial).at_instances_of(flaxmock.SpyLayer).get_sequence()
seen = block.calls[-1]
assert jnp.array_equal(flaxmock.replay(seen, full), seen.output)
print(block.call_count, seen.args[0].shape, "->", seen.output.shape)

# %% [markdown]
# The same works inside a scanned stack (`scan_layers=True`: `nn.scan(nn.remat(Block))`). A
# spy in the scan body records one call per step (`call.step`), carried out of the scan as
# Flax carries a `sow` (the scan must carry the `intermediates` collection, as the example's
# does); `replay` runs a step's call with that step's slice of the stacked parameters. The
# scan compiles its body, the replay runs eagerly, so they agree up to XLA's rounding.

# %%
scan_model = llama.Llama(llama.LlamaConfig.tiny(scan_layers=True, tie_embeddings=False))
scan_full = flaxmock.materialize(flaxmock.unflaxify(scan_model, tokens), jax.random.key(0))
scan_partial = flaxmock.spy(flaxmock.mock(scan_full, ["embed", "norm", "lm_head"]), "blocks/attn")
flaxmock.call(scan_partial, tokens)
(attention,) = pz.select(scan_partial).at_instances_of(flaxmock.SpyLayer).get_sequence()
print([call.step for call in attention.calls])
assert attention.call_count == scan_model.config.n_layers
for call in attention.calls:
    assert jnp.allclose(flaxmock.replay(call, scan_full), call.output, rtol=1e-5, atol=1e-6)

# %% [markdown]
# ## Next steps
#
# - `bench/partial.py`: peak memory and time of a partly mocked 8B model.
# - `tutorials/04_plot_debugging.py`: develop plotting code against random intermediates.
# - `tutorials/02_tree_surgery.py`: fill policies, seeds and value-dependent shapes for the mocks.
