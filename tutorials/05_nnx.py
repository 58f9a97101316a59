# %% [markdown]
# # Flax NNX: abstract models, mocks, interception and summaries
#
# Flax's NNX API has no method interceptors, and `jax.eval_shape` over a stateful NNX model with
# `nnx.scan` inside fails. `flaxmock.nnx` fills these gaps with the ideas of the linen side:
# abstract parameters, random-output mocks of the real shapes, and a per-call summary.
#
# **What you will learn**
#
# - evaluate output shapes without touching the model (`flaxmock.nnx.eval_shape(fun, *args)`);
# - build a model without allocating it (`flaxmock.nnx.abstract`);
# - replace submodules by mocks (`flaxmock.nnx.mock`) and check what they return;
# - give real values to the un-mocked rest only (`flaxmock.nnx.materialize`, `flaxmock.nnx.bind`)
#   and put mocked modules back (`flaxmock.nnx.unmock`);
# - watch every module call, built-in ones included (`flaxmock.nnx.intercept_methods`);
# - print the per-call table (`flaxmock.nnx.summary`).

# %%
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import flaxmock
import flaxmock.nnx

# %% [markdown]
# ## The model
#
# A small encoder: an input projection, a stack of blocks built with `nnx.vmap` and run with
# `nnx.scan` (each block: `nnx.MultiHeadAttention`, `nnx.BatchNorm`-free MLP with `nnx.Dropout`),
# and an output head.


# %%
class Block(nnx.Module):
    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        self.attn = nnx.MultiHeadAttention(num_heads=2, in_features=dim, decode=False, rngs=rngs)
        self.up = nnx.Linear(dim, 4 * dim, rngs=rngs)
        self.down = nnx.Linear(4 * dim, dim, rngs=rngs)
        self.drop = nnx.Dropout(0.1, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(x, deterministic=True)
        return x + self.drop(self.down(nnx.gelu(self.up(x))), deterministic=True)


class Encoder(nnx.Module):
    def __init__(self, dim: int = 16, depth: int = 3, *, rngs: nnx.Rngs):
        self.embed = nnx.Linear(8, dim, rngs=rngs)

        @nnx.split_rngs(splits=depth)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_blocks(rngs):
            return Block(dim, rngs=rngs)

        self.blocks = make_blocks(rngs)
        self.head = nnx.Linear(dim, 4, rngs=rngs)

    def __call__(self, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def run(x, block):
            return block(x)

        return self.head(run(self.embed(x), self.blocks))


x = jnp.ones((2, 5, 8))

# %% [markdown]
# ## Shape evaluation that never changes the model
#
# `jax.eval_shape(model, x)` traces the model's own variables; with `nnx.scan` inside, Flax
# refuses (older versions left tracers in the parameters). `flaxmock.nnx.eval_shape` takes the
# function first, like `jax.eval_shape` (a model is callable, so `eval_shape(model, x)` reads
# naturally), passes the state of every module it finds in the function and the arguments through
# the trace and calls copies: every parameter keeps its value. Python values stay static and
# non-array outputs come back as they are.

# %%
model = Encoder(rngs=nnx.Rngs(0))
kernel_before = np.asarray(model.head.kernel[...])
try:
    jax.eval_shape(model, x)
except ValueError as e:
    print("jax.eval_shape:", str(e).splitlines()[0][:70], "...")

out_spec = flaxmock.nnx.eval_shape(model, x)
print(out_spec)
assert out_spec == jax.ShapeDtypeStruct((2, 5, 4), jnp.float32)
assert flaxmock.nnx.eval_shape(lambda m, x: m(x).mean(), model, x).shape == ()
assert np.array_equal(model.head.kernel[...], kernel_before)

# %% [markdown]
# ## Abstract models
#
# `flaxmock.nnx.abstract(factory, *args)` builds the model under `nnx.eval_shape`: every array
# is a `jax.ShapeDtypeStruct`, nothing is allocated, so a model of any size costs only its
# Python code. Calling it eagerly raises an error naming its abstract parts.

# %%
abstract_model = flaxmock.nnx.abstract(Encoder, dim=16, depth=3, rngs=nnx.Rngs(0))
print(abstract_model.blocks.up.kernel.get_value())
assert abstract_model.blocks.up.kernel.get_value().shape == (3, 16, 64)
try:
    abstract_model(x)
except flaxmock.AbstractParameterError as e:
    print(str(e).splitlines()[0])
assert flaxmock.nnx.eval_shape(abstract_model, x) == out_spec

# %% [markdown]
# ## Mocks
#
# `flaxmock.nnx.mock(model, where)` returns a copy of the model in which every selected
# submodule is a `MockModule`: it returns random arrays of exactly the real output's
# structure, shapes and dtypes (shape-evaluated once per input signature), new ones on every
# call, reproducible from `seed`. `where` is the same grammar as linen's `flaxmock.mock`: a
# class, a glob over `/`-joined attribute paths (`"blocks"`, `"layers/*"`, `"**/attn"`; `*`
# stays within one segment), a predicate `module -> bool` or `(path, module) -> bool`, or a
# list of these. The input model is untouched.
#
# Here the whole block stack is mocked. It is called inside `nnx.scan`, one layer at a time:
# the mock sees that every array of the stack has a leading axis of 3 (the layers), so its call
# counter gets that axis too and is sliced with the stack, each layer drawing its own numbers.
# (`stack_size=` says it explicitly; `stack_size=None` turns it off.)

# %%
mocked = flaxmock.nnx.mock(model, "blocks", seed=0)
assert mocked.blocks.info.stack_size == 3
y1, y2 = mocked(x), mocked(x)
assert y1.shape == (2, 5, 4) and y1.dtype == jnp.float32
assert not np.array_equal(y1, y2)
assert isinstance(mocked.blocks, flaxmock.nnx.MockModule)
assert not isinstance(model.blocks, flaxmock.nnx.MockModule)
print("mocked blocks called", mocked.blocks.call_count, "times")

# %% [markdown]
# Mocks work under `nnx.jit`: the counter is an `nnx.Variable` (`MockCounter`), so it advances
# through the compiled calls too.

# %%
forward = nnx.jit(lambda m, x: m(x))
j1, j2 = forward(mocked, x), forward(mocked, x)
assert not np.array_equal(j1, j2)
assert mocked.blocks.call_count == 4

# %% [markdown]
# ## Partial materialization
#
# Mock the expensive part of an abstract model, then `flaxmock.nnx.materialize` the rest: the
# factory runs again under `jax.jit`, returning only the values still abstract, so the mocked
# parameters are never computed. The un-mocked parts get exactly the values the factory gives.

# %%
partial = flaxmock.nnx.mock(abstract_model, "blocks")
try:
    partial(x)
except flaxmock.AbstractParameterError as e:
    print(str(e).splitlines()[1:3])
real_rest = flaxmock.nnx.materialize(partial, 0)
assert np.array_equal(real_rest.head.kernel[...], model.head.kernel[...])
assert real_rest(x).shape == (2, 5, 4)

# %% [markdown]
# The key is what the linen `flaxmock.materialize` takes: an `nnx.Rngs` (used in place of the
# factory's), an int seed or a `jax.random.key` (each stream of the factory's `nnx.Rngs` is
# reseeded from it: here `0` gives the values of `nnx.Rngs(0)`).
#
# Values you already have (a checkpoint, another model's state) are given with
# `flaxmock.nnx.bind`: every path, shape and dtype is checked, and every problem is reported in
# one error. `flaxmock.nnx.unmock` puts mocked modules back (with abstract parameters: a mock
# keeps no parameters), so a mocked model can get its real parts back the same way.

# %%
bound = flaxmock.nnx.bind(abstract_model, nnx.state(Encoder(dim=16, depth=3, rngs=nnx.Rngs(1))))
assert bound(x).shape == (2, 5, 4)
restored = flaxmock.nnx.unmock(partial)
assert not isinstance(restored.blocks, flaxmock.nnx.MockModule)
try:
    flaxmock.nnx.bind(restored, {"head": {"kernel": jnp.ones((16, 5))}})
except flaxmock.BindVariablesError as e:
    message = str(e)
print("\n".join(message.splitlines()[:4]))
assert "wrong shape or dtype: head/kernel: expected float32[16, 4], got float32[16, 5]" in message

# %% [markdown]
# `nnx.jit` needs real values too: JAX traces an abstract model but refuses to run it
# (`... ShapeDtypeStruct is not a valid JAX type`). Materialize or mock first, or evaluate shapes
# only with `nnx.jit(f).eval_shape(...)` or `flaxmock.nnx.eval_shape`.

# %%
assert forward(real_rest, x).shape == (2, 5, 4)
assert forward.eval_shape(partial, x) == out_spec

# %% [markdown]
# ## Interception
#
# `flaxmock.nnx.intercept_methods` is linen's `intercept_methods` for NNX: the interceptor
# `(next_fun, args, kwargs, context)` sees every method call of every module, Flax's built-in
# ones included, and can change inputs and outputs. Only the calling thread is affected, and
# no class stays patched afterwards, even when the body raises.

# %%
calls = []


def log(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    calls.append(f"{type(context.module).__name__}.{context.method_name} -> {out.shape}")
    return out


original_call = nnx.Linear.__call__
with flaxmock.nnx.intercept_methods(log):
    model(x)
print("\n".join(calls[:4]))
assert "MultiHeadAttention.__call__ -> (2, 5, 16)" in calls
assert nnx.Linear.__call__ is original_call

# %% [markdown]
# ## Summary
#
# `flaxmock.nnx.summary` runs the call abstractly under interception and lists one row per
# module call: path, class, method, input and output specs, and the parameters each module owns.
# It works on abstract and mocked models and allocates nothing. The body of `nnx.scan` (or
# `nnx.vmap`) over the stack is listed once, with per-layer shapes, its parameters counted for
# all layers, and a note: `scan x3`.

# %%
table = flaxmock.nnx.summary(
    abstract_model, jax.ShapeDtypeStruct((2, 5, 8), jnp.float32), title="Encoder, 3 blocks"
)
print(table)
assert [row.note for row in table.rows if row.path == "blocks/attn"] == ["scan x3"]
n_params = sum(
    int(np.prod(v.get_value().shape))
    for _, v in nnx.iter_graph(abstract_model)
    if isinstance(v, nnx.Param)
)
assert table.total_params == n_params

# %% [markdown]
# ## Next steps
#
# - `tutorials/02_tree_surgery.py`: the same mocks for Flax linen models, with fill policies.
# - `tutorials/03_partial_mocking.py`: partial mocking of a large linen model.
# - The API reference of `flaxmock.nnx`: `mock(..., out=...)` for outputs whose shape depends
#   on values, `MockModule.call_args_list`, and what interception sees under `nnx.jit`.
