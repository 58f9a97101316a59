# %% [markdown]
# # Mocks: random outputs of the real shapes
#
# `flaxmock.mock` replaces chosen submodule calls of a converted tree by `MockLayer`s. A mock
# returns random arrays with exactly the structure, shapes and dtypes of the real call's output,
# and still writes random values wherever the real call would `sow`. The rest of the model runs
# for real, or is mocked too: a fully mocked model runs with no parameters at all.
#
# **What you will learn**
#
# - select the calls to mock by module class, by a glob over call paths, or by a predicate;
# - what a mock returns: the real shapes and dtypes, sown values included;
# - how the randomness works: successive calls differ, a seed reproduces them;
# - fill policies other than the default (zeros, ones, uniform, your own function);
# - mock a call whose output shape depends on values (`out=` when converting and when mocking);
# - put the originals back with `flaxmock.unmock`;
# - render a patched tree with treescope;
# - call a mocked tree under `jax.jit` (`pz.variable_jit`).

# %%
import flax.linen as nn
import jax
import jax.numpy as jnp
from penzai import pz

import flaxmock
from flaxmock import fills

# %% [markdown]
# ## The model
#
# The small model of tutorial 01: an embedding, two blocks of self-attention and an MLP (which
# sows the mean of its activations), and an output head.


# %%
class MLP(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, x):
        h = nn.gelu(nn.Dense(self.hidden, name="up")(x))
        self.sow("intermediates", "act_mean", h.mean())
        return nn.Dense(x.shape[-1], name="down")(h)


class Block(nn.Module):
    dim: int

    @nn.compact
    def __call__(self, x):
        x = x + nn.SelfAttention(num_heads=2, name="attn")(nn.LayerNorm(name="ln1")(x))
        return x + MLP(4 * self.dim, name="mlp")(nn.LayerNorm(name="ln2")(x))


class TinyLM(nn.Module):
    vocab: int = 100
    dim: int = 32
    depth: int = 2

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(self.vocab, self.dim, name="embed")(tokens)
        for i in range(self.depth):
            x = Block(self.dim, name=f"block_{i}")(x)
        return nn.Dense(self.vocab, name="head")(x)


model = TinyLM()
tokens = jnp.arange(16).reshape(2, 8)
variables = model.init(jax.random.key(0), tokens)
real_tree = flaxmock.unflaxify(model, tokens, variables=variables)
expected, expected_sown = model.apply(variables, tokens, mutable=["intermediates"])

# %% [markdown]
# ## Mock by module class
#
# Passing a Flax module class mocks every call of that class, at any depth. Here every
# self-attention is replaced; the embeddings, layer norms, MLPs and head still run with their
# real parameters. `flaxmock.summary` marks the mocked rows.

# %%
no_attention = flaxmock.mock(real_tree, nn.SelfAttention)
print(flaxmock.summary(no_attention))

out = flaxmock.call(no_attention, tokens)
assert out.shape == expected.shape and out.dtype == expected.dtype
assert not jnp.allclose(out, expected)  # the attention outputs are random now

# %% [markdown]
# `mock` returns a new tree; the tree you passed is untouched. The mocks are `MockLayer`s in
# place of the original layers in `submodule_calls`.

# %%
attn = no_attention.submodule_calls[(1, "block_0.__call__")].submodule_calls[(1, "attn.__call__")]
print(type(attn).__name__, attn.info.out_spec)
assert isinstance(attn, flaxmock.MockLayer)
assert not isinstance(
    real_tree.submodule_calls[(1, "block_0.__call__")].submodule_calls[(1, "attn.__call__")],
    flaxmock.MockLayer,
)

# %% [markdown]
# The tree is a penzai pytree, so treescope renders it (in a notebook, `pz.show(no_attention)`
# draws it interactively, with each mock's fields foldable). For logs, `summary_line()` says in
# one line what a mock stands for: the module, the call, the output spec it emits and how many
# parameters it spares.

# %%
import treescope  # noqa: E402

print(attn.summary_line())
text = treescope.render_to_text(attn)
# The first line names the call, its specs and the mock: visible even when folded.
print(text.splitlines()[0][:100])
assert text.startswith("block_0/attn.__call__: f32[2,8,32] -> f32[2,8,32]  # mock of SelfAttention")

# %% [markdown]
# In a notebook, the tree itself is the best view: treescope draws it with one line per call
# (`path.method: inputs -> outputs`), each mock marked in colour with what it stands for, and
# every node foldable. Penzai users turn this on once per session with
# `treescope.basic_interactive_setup(autovisualize_arrays=True)`; `treescope.display` shows one
# value.

# %%
treescope.display(no_attention)

# %% [markdown]
# ## Mock by glob: sown values still come out
#
# A string is a glob over call paths (`/`-separated scope paths): `"block_*/mlp"` selects the
# MLP of every block, `"**/up"` any call named `up` at any depth. `*` never crosses a `/` (so
# `"*"` is the top-level calls), `**` spans any number of segments (`"block_0/**/up"`), and
# `"embed.attend"` selects one method of a module. A mocked MLP no longer
# computes its activations, but it still sows: random values, in exactly the structure Flax
# would return, so analysis code that reads `intermediates` keeps working.

# %%
no_mlp = flaxmock.mock(real_tree, "block_*/mlp")
out, sown = flaxmock.call(no_mlp, tokens, mutable=["intermediates"])
print(sown)
assert jax.tree.structure(sown) == jax.tree.structure(expected_sown)
assert sown["intermediates"]["block_0"]["mlp"]["act_mean"][0].shape == ()

# %% [markdown]
# A selector that matches nothing is an error that lists the paths you could have meant.

# %%
try:
    flaxmock.mock(real_tree, "block_*/mpl")
except flaxmock.SelectNothingError as err:
    message = str(err)
print("\n".join(message.splitlines()[:4]), "\n...")
assert "block_0/mlp" in message

# %% [markdown]
# ## Mock by predicate: a model with no parameters at all
#
# A predicate gets each layer and returns whether to mock it; `layer.info` holds what the
# converter recorded (`scope_path`, `call_path`, input and output specs). (A predicate with two
# arguments gets `(path, module)` instead, as on the NNX side.) Mocking every call
# directly under the root makes an **abstract** tree runnable: no parameter is ever allocated,
# yet the output and sown values have their real shapes. (A list mixes selectors:
# `[nn.Embed, "block_*", "head"]` selects the same calls.)

# %%
abstract_tree = flaxmock.unflaxify(model, jax.ShapeDtypeStruct((2, 8), jnp.int32))
everything = flaxmock.mock(abstract_tree, lambda layer: len(layer.info.call_path) == 1)

out, sown = flaxmock.call(everything, tokens, mutable=["intermediates"])
assert out.shape == (2, 8, 100)
assert jax.tree.structure(sown) == jax.tree.structure(expected_sown)
same = flaxmock.mock(abstract_tree, [nn.Embed, "block_*", "head"])
assert flaxmock.summary(same).rows == flaxmock.summary(everything).rows

# %% [markdown]
# The same selectors drive penzai's own selection API through `flaxmock.selector`. (penzai's
# `pz.select(tree).at_instances_of(InterceptedFlaxModuleMethod)` stops at the root layer, so a
# `.where(...)` after it finds nothing; `at_subtrees_where` with the whole condition reaches
# every depth.)

# %%
n_attention = pz.select(real_tree).at_subtrees_where(flaxmock.selector(nn.SelfAttention)).count()
assert n_attention == 2

# %% [markdown]
# ## Randomness: fresh values each call, reproducible from a seed
#
# Each mock draws from a key made of the seed (`mock(..., seed=0)` by default), its call path
# (so two mocks differ) and a call counter kept as penzai state (so successive calls differ).
# The counter is also the mock's call record, in `unittest.mock`'s words.

# %%
head = everything.submodule_calls[(3, "head.__call__")]
calls_before = head.call_count
first = flaxmock.call(everything, tokens)
second = flaxmock.call(everything, tokens)
assert not jnp.array_equal(first, second)
assert head.call_count == calls_before + 2
print(head.call_args_list[-1])


# Two fresh mocks with the same seed replay the same sequence; another seed gives other values.
def top_level(layer):
    return len(layer.info.call_path) == 1


a = flaxmock.call(flaxmock.mock(abstract_tree, top_level, seed=0), tokens)
b = flaxmock.call(flaxmock.mock(abstract_tree, top_level, seed=0), tokens)
c = flaxmock.call(flaxmock.mock(abstract_tree, top_level, seed=1), tokens)
assert jnp.array_equal(a, b)
assert not jnp.array_equal(a, c)

# %% [markdown]
# ## Fill policies
#
# By default floating outputs are standard normal (cast to the dtype), signed integers uniform
# in [-100, 100], unsigned in [0, 100], booleans fair coin flips. `fill=` picks another policy
# per `mock` call: `"zeros"`, `"ones"`, `"uniform"` (floats in [0, 1)), or a function
# `(key, jax.ShapeDtypeStruct) -> array`. It applies to sown values too.

# %%
zeros = flaxmock.call(flaxmock.mock(abstract_tree, top_level, fill="zeros"), tokens)
assert (zeros == 0).all()
uniform = flaxmock.call(flaxmock.mock(abstract_tree, top_level, fill="uniform"), tokens)
assert (uniform >= 0).all() and (uniform < 1).all()


def sevens(key, spec):
    return jnp.full(spec.shape, 7, spec.dtype)


out, sown = flaxmock.call(
    flaxmock.mock(abstract_tree, top_level, fill=sevens), tokens, mutable=["intermediates"]
)
assert (out == 7).all()
assert all((leaf == 7).all() for leaf in jax.tree.leaves(sown))

# %% [markdown]
# ## Fills that respect meaning: recipes
#
# Random values of the right shape can still be wrong in kind: a mocked MoE router's expert
# indices beyond the number of experts (most tokens then get no expert at all), a negative
# running variance, attention weights that do not sum to one. `flaxmock.fills` has fills with
# those meanings: `indices(bound)`, `nonnegative()`, `probabilities(axis=-1)` and
# `copy_input(argument)`. Give one to `fill=` for every output of the mock, or a dict from
# output paths to fills: a tuple's leaves are `0`, `1`, ..., a dict's are its keys, and what
# the call sows is under its collection (`intermediates/...`, `batch_stats/...`). Globs work as
# in `where`; outputs no key matches get the default; a key that matches nothing raises.
# The same fills work for `flaxmock.nnx.mock` and `flaxmock.Mocker`.
#
# **MoE router.** The router returns `(weights, indices)`; the experts gather by the indices.


# %%
class TopKRouter(nn.Module):
    experts: int = 8

    @nn.compact
    def __call__(self, x):
        probs = jax.nn.softmax(nn.Dense(self.experts, name="gate")(x))
        weights, indices = jax.lax.top_k(probs, 2)
        return weights / weights.sum(-1, keepdims=True), indices


class MoE(nn.Module):
    @nn.compact
    def __call__(self, x):
        weights, indices = TopKRouter(name="router")(x)
        experts = self.param("experts", nn.initializers.normal(), (8, x.shape[-1]))
        # Out-of-range indices would be clamped by the gather: every token the same expert.
        return (weights[..., None] * experts[indices]).sum(-2)


moe_x = jnp.ones((16, 4))
moe_tree = flaxmock.unflaxify(MoE(), moe_x)
router_fill = {"0": fills.probabilities(), "1": fills.indices(8)}
moe = flaxmock.materialize(flaxmock.mock(moe_tree, "router", fill=router_fill), 0)
weights, indices = flaxmock.call(moe.submodule_calls[(0, "router.__call__")], moe_x)
assert ((indices >= 0) & (indices < 8)).all() and jnp.allclose(weights.sum(-1), 1.0)
assert flaxmock.call(moe, moe_x).shape == (16, 4)

# %% [markdown]
# **Normalisation statistics.** In a tree without values, a mocked block draws the state it
# updates; make the variances non-negative. (A tree with values keeps a mock's state as it is:
# see the guarantees page.)


# %%
class NormBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.BatchNorm(use_running_average=False, name="bn")(nn.Dense(4)(x))


stats_tree = flaxmock.mock(
    flaxmock.unflaxify(NormBlock(), moe_x), "", fill={"batch_stats/**/var": fills.nonnegative()}
)
_, stats = flaxmock.call(stats_tree, moe_x, mutable=["batch_stats"])
assert (stats["batch_stats"]["bn"]["var"] >= 0).all()

# %% [markdown]
# **Attention weights.** A mocked attention that sows its weights: probabilities over the keys.


# %%
class SowingAttention(nn.Module):
    @nn.compact
    def __call__(self, x):
        weights = jax.nn.softmax(x @ x.T)
        self.sow("intermediates", "attn_weights", weights)
        return weights @ nn.Dense(4, name="v")(x)


attn_tree = flaxmock.mock(
    flaxmock.unflaxify(SowingAttention(), moe_x),
    "",
    fill={"intermediates/attn_weights/*": fills.probabilities(axis=-1)},
)
_, sown = flaxmock.call(attn_tree, moe_x, mutable=["intermediates"])
(attn_weights,) = sown["intermediates"]["attn_weights"]
assert (attn_weights >= 0).all() and jnp.allclose(attn_weights.sum(-1), 1.0)

# %% [markdown]
# **Caches and pass-through.** A decode cache's position is an index below the cache length;
# a mocked block that should leave its input alone copies it.

# %%
step_x = jnp.ones((1, 1, 4))
decode_attn = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=4, decode=True)
cache_tree = flaxmock.mock(
    flaxmock.unflaxify(decode_attn, step_x, step_x),
    "",
    fill={"cache/cache_index": fills.indices(16)},
)
_, cache = flaxmock.call(cache_tree, step_x, step_x, mutable=["cache"])
assert 0 <= int(cache["cache"]["cache_index"]) < 16

identity = flaxmock.mock(flaxmock.unflaxify(NormBlock(), moe_x), "", fill=fills.copy_input(0))
assert (flaxmock.call(identity, moe_x) == moe_x).all()

# %% [markdown]
# ## Outputs whose shape depends on values
#
# Some calls return arrays whose shape depends on the input *values*, like `jnp.nonzero`
# without `size=`. No abstract trace can see such a shape, so conversion fails, and the error
# notes say what to do.


# %%
class Router(nn.Module):
    @nn.compact
    def __call__(self, x):
        scores = nn.Dense(1, name="score")(x)[..., 0]
        return jnp.nonzero(scores > 0)[0]  # the indices of the positive scores


class Routed(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4, name="proj")(x), Router(name="router")(x)


x_spec = jax.ShapeDtypeStruct((16, 8), jnp.float32)
try:
    flaxmock.unflaxify(Routed(), x_spec)
except jax.errors.ConcretizationTypeError as err:
    notes = err.__notes__
print("\n".join(notes[:2]))
assert any("out={" in note for note in notes)

# %% [markdown]
# Give the call's output spec with `out=` (a dict of globs over call paths) and it is not
# traced; then mock it. `mock(..., out=...)` can also set or change the spec when mocking.
# A fill function keeps the random indices valid.

# %%
routed_tree = flaxmock.unflaxify(
    Routed(), x_spec, out={"router": jax.ShapeDtypeStruct((5,), jnp.int32)}
)


def valid_index(key, spec):
    return jax.random.randint(key, spec.shape, 0, 16, spec.dtype)


routed = flaxmock.mock(flaxmock.mock(routed_tree, "router", fill=valid_index), "proj")
h, idx = flaxmock.call(routed, jnp.ones((16, 8)))
assert h.shape == (16, 4) and idx.shape == (5,)
assert ((idx >= 0) & (idx < 16)).all()

three = flaxmock.mock(routed_tree, "router", out=jax.ShapeDtypeStruct((3,), jnp.int32))
three = flaxmock.mock(three, "proj")
assert flaxmock.call(three, jnp.ones((16, 8)))[1].shape == (3,)

# %% [markdown]
# ## Undo: `flaxmock.unmock`
#
# Each mock keeps the layer it replaced. `unmock(tree)` puts every original back;
# `unmock(tree, where)` only those `where` selects.

# %%
assert flaxmock.unmock(no_attention) == real_tree
partly = flaxmock.unmock(everything, "head")
assert not isinstance(partly.submodule_calls[(3, "head.__call__")], flaxmock.MockLayer)
assert isinstance(partly.submodule_calls[(0, "embed.__call__")], flaxmock.MockLayer)

# %% [markdown]
# ## Under `jax.jit`
#
# The call counters are penzai state variables, so a mocked tree goes through `jax.jit` the
# penzai way: `pz.variable_jit` takes the state out, runs the compiled function, and writes the
# advanced counters back. Successive compiled calls still differ. Call *records*
# (`call_args_list`) are taken in Python, so under `jit` only the trace records one.

# %%
forward = pz.variable_jit(lambda tree, x: flaxmock.call(tree, x, mutable=["intermediates"]))
(out1, sown1), (out2, _) = forward(no_attention, tokens), forward(no_attention, tokens)
assert out1.shape == expected.shape
assert not jnp.array_equal(out1, out2)
assert jax.tree.structure(sown1) == jax.tree.structure(expected_sown)

# %% [markdown]
# ## Next steps
#
# - `tutorials/03_partial_mocking.py`: mock part of a large model and give real parameters to
#   the rest only (`flaxmock.materialize`, `flaxmock.bind`), and take gradients through mocks.
# - `tutorials/04_plot_debugging.py`: write plotting code against random intermediates with
#   `flaxmock.Mocker`.
