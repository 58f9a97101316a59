# %% [markdown]
# # Writing plot code without a checkpoint: `flaxmock.Mocker`
#
# Research models often carry a `plot()` or analysis function that reads what the model sows
# (attention maps, routing scores) from a training run. Developing it usually means waiting for
# a run, or loading a checkpoint. `flaxmock.Mocker` is a stand-in `self`: assign Flax modules to
# it, and calling them gives random arrays with the real shapes, computed through the modules'
# own code with abstract parameters; `.intermediates(...)` gives random sown values in exactly
# the structure a real run returns.
#
# **What you will learn**
#
# - develop a model's `plot(intermediates)` function against `Mocker().block.intermediates(...)`;
# - check that the same function runs on a real run's intermediates, of the same structure;
# - write a plot *method* once (`flaxmock.intermediates(self.block, x)`) and run it on a
#   `Mocker()` and on the trained model (`model.bind(variables)`);
# - use the whole module: every method (`self.vae.encode(x)`), config fields, lists of modules,
#   and the bound-module API on `self` (`sow`, `make_rng`, `variables`);
# - call mocked modules, make mocked parameters with `Mocker.param`;
# - read a mocked module's call records (`call_count`, `call_args_list`) and its `repr`.

# %%
import importlib.util
import io
import tempfile
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp

import flaxmock

# matplotlib is optional (`pip install flaxmock[plot]`); without it, the plot steps are skipped.
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
if HAS_MATPLOTLIB:
    # No backend is forced: run as a script, matplotlib picks a non-interactive one (Agg) on a
    # machine without a display. `show(fig)` displays a figure in a notebook, whatever the
    # backend (the docs build runs the tutorials with Agg).
    import matplotlib.pyplot as plt


def show(fig):
    """Shows a figure in a notebook, whatever matplotlib's backend; does nothing in a script."""
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:
        return
    if get_ipython() is not None:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        display(Image(buffer.getvalue()))


# %% [markdown]
# ## A block that sows what we want to plot
#
# `ThoughtBlock` is a small attention block. It sows its attention weights and the cumulative
# attention each position received into a `plots` collection, and the norm of its attention
# output into `intermediates`. Its static `plot` method turns those collections into figures,
# keyed by name, as a trainer's logging hook would call it.


# %%
class ThoughtBlock(nn.Module):
    num_heads: int = 4

    @nn.compact
    def __call__(self, x):
        b, t, d = x.shape
        heads = (self.num_heads, d // self.num_heads)
        q = nn.DenseGeneral(heads, name="q")(x)
        k = nn.DenseGeneral(heads, name="k")(x)
        v = nn.DenseGeneral(heads, name="v")(x)
        weights = nn.dot_product_attention_weights(q, k)  # [batch, heads, query, key]
        self.sow("plots", "attn_weights", weights)
        received = weights.mean(axis=1).sum(axis=-2)  # attention each key position received
        self.sow("plots", "new_cumulative_scores", jnp.cumsum(received, axis=-1))
        h = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, t, d)
        self.sow("intermediates", "h_norm", jnp.linalg.norm(h, axis=-1))
        return x + nn.Dense(d, name="out")(h)

    @staticmethod
    def plot(intermediates):
        """Figures from the sown values of one call, keyed by name."""
        plots = intermediates["plots"]
        weights = plots["attn_weights"][0]  # sow appends to a tuple: take the first call
        scores = plots["new_cumulative_scores"][0]
        h_norm = intermediates["intermediates"]["h_norm"][0]
        figs = {}
        fig, axes = plt.subplots(1, weights.shape[1], figsize=(3 * weights.shape[1], 3))
        for head, ax in enumerate(axes):
            ax.imshow(weights[0, head], cmap="viridis")
            ax.set_title(f"head {head}")
        fig.tight_layout()
        figs["analysis/attn_maps"] = fig
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.plot(scores[0], label="cumulative attention received")
        ax.plot(h_norm[0], label="|h|")
        ax.set_xlabel("position")
        ax.legend()
        fig.tight_layout()
        figs["analysis/cum_scores"] = fig
        return figs


# %% [markdown]
# ## Random intermediates of the real structure
#
# Assign the block to a `Mocker` and ask for its intermediates. No parameter is allocated: the
# block's code runs once abstractly to learn the shapes, then random values fill them. The
# result has Flax's own structure, tuples from `sow` included.

# %%
self = flaxmock.Mocker(seed=0)
self.block = ThoughtBlock()
fake = self.block.intermediates(jnp.zeros((1, 16, 64)))
print(jax.tree.map(lambda a: a.shape, fake))
assert fake["plots"]["new_cumulative_scores"][0].shape == (1, 16)
assert fake["plots"]["attn_weights"][0].shape == (1, 4, 16, 16)

# %% [markdown]
# ## Develop `plot()` against them
#
# The plot function gets exactly what it would get from a real run. The figures are written to a
# temporary directory here; in your own session, `figs[...].savefig("debug.pdf")`.

# %%
out_dir = Path(tempfile.mkdtemp(prefix="flaxmock_plots_"))
if HAS_MATPLOTLIB:
    figs = ThoughtBlock.plot(fake)
    for name, fig in figs.items():
        fig.savefig(out_dir / f"{name.replace('/', '_')}.png")
        plt.close(fig)
    written = sorted(p.name for p in out_dir.iterdir())
    print(written)
    assert written == ["analysis_attn_maps.png", "analysis_cum_scores.png"]

# %% [markdown]
# ## The same function on a real run
#
# Now a real (small) run: initialise the block, apply it with the sown collections mutable, and
# hand the result to the same `plot()`. The structures agree leaf for leaf, shapes and dtypes
# included. (Pass only `params` to `apply`: `init` also returns the `plots` it sowed, and
# `apply` would append to them.)

# %%
x = jax.random.normal(jax.random.key(1), (1, 16, 64))
params = ThoughtBlock().init(jax.random.key(0), x)["params"]
_, real = ThoughtBlock().apply({"params": params}, x, mutable=["intermediates", "plots"])

assert jax.tree.structure(real) == jax.tree.structure(fake)
assert jax.tree.map(lambda a: (a.shape, a.dtype), real) == jax.tree.map(
    lambda a: (a.shape, a.dtype), fake
)
if HAS_MATPLOTLIB:
    for name, fig in ThoughtBlock.plot(real).items():
        fig.savefig(out_dir / f"real_{name.replace('/', '_')}.png")
        plt.close(fig)
    assert (out_dir / "real_analysis_cum_scores.png").exists()

# %% [markdown]
# ## One plot method, run on a `Mocker` and on the trained model
#
# Plot code often lives in a method of the model itself (`def plot(self, x)`), reading
# `self.block`. `flaxmock.intermediates(self.block, x)` returns what the call sows in the
# structure of `apply(..., mutable=["intermediates", "plots"])[1]`: random values when
# `self` is a `Mocker`, the real ones when `self` is the bound model (`model.bind(variables)`,
# which runs `apply` of that submodule with its own variables). The same method runs both
# ways; here it draws into one of two axes, shown side by side.


# %%
class Model(nn.Module):
    def setup(self):
        self.block = ThoughtBlock()

    def __call__(self, x):
        return self.block(x)

    def plot_scores(self, x, ax):
        """Plots the cumulative attention each position received; returns the sown values."""
        sown = flaxmock.intermediates(self.block, x)
        ax.plot(sown["plots"]["new_cumulative_scores"][0][0])
        ax.set_xlabel("position")
        return sown


mocker = flaxmock.Mocker(seed=0)
mocker.block = ThoughtBlock()
variables = Model().init(jax.random.key(0), x)
bound = Model().bind(variables)
if HAS_MATPLOTLIB:
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3), sharey=False)
    fake_sown = Model.plot_scores(mocker, x, left)  # `self` is the Mocker: random values
    real_sown = bound.plot_scores(x, right)  # `self` is the bound model: real values
    left.set_title("Mocker (random, real shapes)")
    right.set_title("model.bind(variables) (real)")
    fig.tight_layout()
    assert len(left.lines) == len(right.lines) == 1
    assert jax.tree.structure(fake_sown) == jax.tree.structure(real_sown)
    show(fig)

# %% [markdown]
# A heat map of real attention weights and one of random numbers look different, of course:
# the mock checks the *plumbing* (keys, tuple nesting, shapes, axes), which is where plot code
# usually breaks.
#
# ## Calling mocked modules
#
# Inside analysis code, `self = flaxmock.Mocker()` can replace `self` entirely: modules assigned
# to it return random arrays of their real output shapes, plain values pass through unchanged.
# Each module has its own random stream, successive calls differ, and everything is
# reproducible from the seed.

# %%
self = flaxmock.Mocker(seed=0)
self.attn = nn.SelfAttention(num_heads=8)
self.mlp = nn.Dense(512)
self.label = "layer 3"  # not a module: stored as is

a = self.attn(jnp.zeros((1, 16, 512)))
m = self.mlp(a)
assert a.shape == (1, 16, 512) and m.shape == (1, 16, 512)
assert not jnp.array_equal(self.attn(jnp.zeros((1, 16, 512))), a)  # a new draw each call
assert self.label == "layer 3"

replay = flaxmock.Mocker(seed=0)
replay.attn = nn.SelfAttention(num_heads=8)
assert jnp.array_equal(replay.attn(jnp.zeros((1, 16, 512))), a)  # same seed, same values

# %% [markdown]
# Array arguments may also be `jax.ShapeDtypeStruct`s; keyword arguments that are Python values
# (`deterministic=True`) stay static. The shapes are inferred once per input signature and
# cached, so repeated calls cost only the random generation.

# %%
spec = jax.ShapeDtypeStruct((2, 8, 512), jnp.bfloat16)
assert self.attn(spec, deterministic=True).shape == (2, 8, 512)

# %% [markdown]
# ## Mocked parameters: `Mocker.param`
#
# `self.param(name, init_fn, *args)` is the analogue of `nn.Module.param`: a random array of
# the shape and dtype `init_fn` would return, stored under `name`. `nn.Partitioned` boxes (from
# `nn.with_partitioning`) are unwrapped first.

# %%
w = self.param("w_gate", nn.initializers.lecun_normal(), (512, 8))
assert w.shape == (512, 8) and self.w_gate is w
sharded = self.param("w_up", nn.with_partitioning(nn.initializers.zeros, ("embed", "mlp")), (8, 4))
assert sharded.shape == (8, 4)

# %% [markdown]
# ## Call records and `repr`
#
# Each mocked module counts its calls and keeps the input specs of the latest ones, in
# `unittest.mock`'s words; its `repr` names the module type, the attribute and the last output
# spec.

# %%
print(self.attn)
print(self.attn.call_args_list[-1])
assert self.attn.call_count == 3
assert self.attn.call_args_list[0] == ((jax.ShapeDtypeStruct((1, 16, 512), jnp.float32),), {})
assert "SelfAttention" in repr(self.attn) and "'attn'" in repr(self.attn)

# %% [markdown]
# ## The whole module, and the rest of `self`
#
# A module held by a `Mocker` answers every method of its class, each with its own output
# specs (inferred once per input signature) and its own call records; configuration fields
# read through to the real module. Lists, tuples and dicts of modules (the `setup()` idiom
# `self.blocks = [...]`) are wrapped element by element. `self.sow`, `self.make_rng`,
# `self.variable` and `self.variables` behave as on a module bound in `apply`.

# %%
self = flaxmock.Mocker(seed=0)
self.embed = nn.Embed(num_embeddings=100, features=32)
self.blocks = [nn.Dense(32) for _ in range(3)]
h = self.embed(jnp.zeros((1, 8), jnp.int32))
for block in self.blocks:
    h = block(h)
logits = self.embed.attend(h)  # another method: its own specs
assert logits.shape == (1, 8, 100) and self.embed.num_embeddings == 100
assert self.embed.attend.call_count == 1 and self.blocks[2].call_count == 1
self.sow("intermediates", "logits", logits)
noise = jax.random.normal(self.make_rng("dropout"), logits.shape)
assert self.variables["intermediates"]["logits"][0].shape == noise.shape

# %% [markdown]
# ## Next steps
#
# - `tutorials/02_tree_surgery.py`: the engine under `Mocker`: mocks inside a converted model, fill
#   policies, seeds, `jit`.
# - `tutorials/03_partial_mocking.py`: run part of a large model for real, mock the rest.
