# %% [markdown]
# # Converting a Flax model without its parameters
#
# `flaxmock.unflaxify` turns one call of a Flax linen module into a
# [penzai](https://penzai.readthedocs.io) tree with one layer per submodule call. By default it
# needs no parameters at all: every variable is a `jax.ShapeDtypeStruct`, so a model of any size
# converts in seconds on a laptop.
#
# **What you will learn**
#
# - convert a model abstractly, with no parameter array allocated;
# - find your way around the tree (`submodule_calls`) and print a summary table;
# - call the tree with real variables and get exactly what `module.apply` returns, sown
#   values included;
# - evaluate shapes of an abstract tree with `flaxmock.eval_shape`;
# - read the error you get when you call an abstract tree for real.

# %%
import flax.linen as nn
import jax
import jax.numpy as jnp

import flaxmock

# %% [markdown]
# ## A small model
#
# A two-block transformer-like model: an embedding, blocks of self-attention and an MLP, and an
# output head. The MLP *sows* the mean of its activations into the `intermediates` collection,
# as analysis code often does.


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

# %% [markdown]
# ## Convert abstractly
#
# The arguments may be real arrays or `jax.ShapeDtypeStruct` specs. With no `variables=`, the
# conversion is one abstract trace (`jax.eval_shape` of `model.init`): nothing is computed and
# every parameter in the tree is a `jax.ShapeDtypeStruct`.

# %%
token_spec = jax.ShapeDtypeStruct((2, 8), jnp.int32)
tree = flaxmock.unflaxify(model, token_spec)

leaves = jax.tree.leaves(tree)
print(f"{len(leaves)} leaves, e.g. {leaves[0]}")
assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves)

# %% [markdown]
# ## Look around the tree
#
# The root is penzai's own `InterceptedFlaxModuleMethod` (re-exported as
# `flaxmock.InterceptedFlaxModuleMethod`; flaxmock's `FlaxCallLayer` subclasses it), so
# `pz.select`, treescope and penzai's tooling work on it. Its `submodule_calls` dict holds one
# layer per call, keyed `(index, "name.method")` in call order, and nests as the calls nest.

# %%
print(list(tree.submodule_calls))
block_0 = tree.submodule_calls[(1, "block_0.__call__")]
print(list(block_0.submodule_calls))
assert isinstance(tree, flaxmock.InterceptedFlaxModuleMethod)  # penzai's class
assert list(block_0.submodule_calls)[1] == (1, "attn.__call__")

# %% [markdown]
# Each layer keeps what the converter recorded about its call in `layer.info`: the module's
# scope path and the input and output specs.

# %%
attn = block_0.submodule_calls[(1, "attn.__call__")]
print(attn.info.scope_path, "->", attn.info.out_spec)
assert attn.info.scope_path == ("block_0", "attn")
assert attn.info.out_spec.shape == (2, 8, 32)

# %% [markdown]
# ## A summary table
#
# `flaxmock.summary(tree)` lists every call in call order with its shapes and the parameters its
# module owns, from abstract values only. In a notebook it shows as an HTML table; `print` it
# for plain text; `.rows` and the totals are there for code.

# %%
summary = flaxmock.summary(tree)
abstract_variables = jax.eval_shape(model.init, jax.random.key(0), token_spec)
n_params = sum(x.size for x in jax.tree.leaves(abstract_variables))
assert summary.total_params == n_params
summary

# %% [markdown]
# ## Call it with real variables
#
# Given real `variables`, the tree is bound to those arrays. `flaxmock.call(tree, *args)` calls
# it as `model.apply(variables, *args)` would, and returns exactly the same thing. (The penzai
# way, `tree(flaxmock.ArgsAndKwargs.capture(*args))`, works too.)

# %%
tokens = jnp.arange(16).reshape(2, 8) % 100
variables = model.init(jax.random.key(0), tokens)
real_tree = flaxmock.unflaxify(model, tokens, variables=variables)

out = flaxmock.call(real_tree, tokens)
expected = model.apply(variables, tokens)
assert (out == expected).all()
assert (real_tree(flaxmock.ArgsAndKwargs.capture(tokens)) == expected).all()

# %% [markdown]
# ## Sown values
#
# With `mutable=["intermediates"]`, `flaxmock.call` returns `(output, collections)` with the
# sown values in Flax's own structure (a tuple per `sow`), as `model.apply` does.

# %%
out, sown = flaxmock.call(real_tree, tokens, mutable=["intermediates"])
_, expected_sown = model.apply(variables, tokens, mutable=["intermediates"])
print(sown)
assert jax.tree.structure(sown) == jax.tree.structure(expected_sown)
assert all(jax.tree.leaves(jax.tree.map(jnp.array_equal, sown, expected_sown)))

# %% [markdown]
# ## Shapes of an abstract tree
#
# An abstract tree cannot compute values, but it can trace: `flaxmock.eval_shape` is
# `jax.eval_shape` for functions of converted trees. A new input shape works too (here a batch
# of 4).

# %%
print(flaxmock.eval_shape(flaxmock.call, tree, token_spec))
bigger = flaxmock.eval_shape(flaxmock.call, tree, jax.ShapeDtypeStruct((4, 8), jnp.int32))
assert bigger == jax.ShapeDtypeStruct((4, 8, 100), jnp.float32)

# %% [markdown]
# ## Calling an abstract tree for real
#
# Calling the abstract tree with real arrays fails before anything runs, with an error that
# lists every layer still lacking values and the three ways out: mock it
# (tutorial 02), give it values with `flaxmock.materialize` or `flaxmock.bind` (tutorial 03),
# or only trace shapes.

# %%
try:
    flaxmock.call(tree, tokens)
except flaxmock.AbstractParameterError as err:
    message = str(err)
print("\n".join(message.splitlines()[:4]), "\n...")
assert "embed: params/embedding" in message

# %% [markdown]
# ## Next steps
#
# - `tutorials/02_tree_surgery.py`: replace chosen calls by layers that emit random arrays of the
#   real shapes, so the abstract tree runs.
# - `tutorials/03_partial_mocking.py`: real parameters only for the un-mocked part of a model.
# - `tutorials/04_plot_debugging.py`: develop plotting code against random intermediates.
