# %% [markdown]
# # What a model costs, without the hardware
#
# How many FLOPs does a forward pass take, and a training step? How many bytes of activations
# does each call write? Does a sharding plan fit on a device? For a model you cannot load, the
# usual tools either need the parameters or answer wrongly. `flaxmock.summary(...,
# flops=True)` answers from abstract values alone: each call is traced on its own with its
# callees stubbed and priced by XLA's cost analysis, nothing is compiled or allocated, and
# identical calls (the 80 blocks of a 70B model) are priced once.
#
# **What you will learn**
#
# - FLOPs (forward and backward) and activation bytes per call of a 70B Llama-style model;
# - why `nn.tabulate(compute_flops=True)` undercounts scanned layers, and why the summary
#   does not;
# - parameter bytes per device under two meshes, with no devices;
# - the same from the command line, `flaxmock summary`.

# %%
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp

import flaxmock
from flaxmock.examples import llama

# %% [markdown]
# ## FLOPs of a 70B model
#
# The bundled example at Llama 3 70B sizes, its 80 blocks stacked with
# `nn.scan(nn.remat(Block))`, on 2048 tokens. `depth=2` folds the calls inside each attention
# and MLP into their rows (their figures add up there), so the table stays short.

# %%
model, (tokens,) = llama.llama3_70b_scan(seq_len=2048)
tree = flaxmock.unflaxify(model, tokens)
table = flaxmock.summary(tree, flops=True, vjp_flops=True, depth=2)
print(f"forward {table.total_flops / 1e12:.1f} TFLOP, backward {table.total_vjp_flops / 1e12:.1f}")
table  # an HTML table in a notebook; print(table) gives plain text

# %% [markdown]
# Each row shows the call's own FLOPs (`flops`, its callees excluded) and its subtree's
# (`subtree`); the body of the scan counts once per step, so the rows add up to the model's
# total. The backward figure (`vjp`) includes the forward the backward pass recomputes under
# `nn.remat`. A rule of thumb counts `2 * N * tokens` forward FLOPs (`N`: the parameters less
# the embedding table, which is looked up, not multiplied); attention's `tokens**2` terms add
# to it.

# %%
n = model.config.num_params() - model.config.vocab_size * model.config.dim
print(f"2 * N * tokens = {2 * n * tokens.shape[1] / 1e12:.1f} TFLOP")
assert table.total_flops == table.rows[0].subtree_flops == sum(r.flops for r in table.rows)
assert 1.0 < table.total_flops / (2 * n * tokens.shape[1]) < 1.1

# %% [markdown]
# Activation bytes: each row's `out_bytes` (the `out bytes` column) is the size of one call's
# outputs. The logits are the largest single activation; a block writes one residual stream
# per step, which is what `nn.remat` keeps while it recomputes the rest.

# %%
logits, block = table.rows[0], next(r for r in table.rows if r.path == "blocks")
print(
    f"logits {logits.out_bytes / 2**30:.2f} GiB; one block step {block.out_bytes / 2**20:.0f} MiB"
)
assert logits.out_bytes == 2048 * 128_256 * 4  # f32[1,2048,128256]

# %% [markdown]
# ## The scan pitfall
#
# XLA's cost analysis counts the body of a loop once, whatever its trip count. `nn.tabulate`
# prices each call by lowering it whole, so a model whose layers are scanned is priced as if it
# had one layer. On a small model with 4 layers, scanned and unrolled:

# %%
x = jnp.zeros((1, 64), jnp.int32)
for scan in (False, True):
    small = llama.Llama(llama.LlamaConfig.tiny(n_layers=4, scan_layers=scan))
    ours = flaxmock.summary(flaxmock.unflaxify(small, x), flops=True).total_flops
    text = nn.tabulate(small, jax.random.key(0), compute_flops=True, depth=1,
                       console_kwargs={"width": 300, "force_terminal": False})(x)  # fmt: skip
    # The root row of nn.tabulate's table holds the FLOPs of the whole call.
    rows = [line.strip("│┃").split("│" if "│" in line else "┃")
            for line in text.splitlines() if line.startswith(("┃", "│"))]  # fmt: skip
    theirs = int(rows[1][[c.strip() for c in rows[0]].index("flops")])
    print(f"{'scanned' if scan else 'unrolled':>9}: nn.tabulate {theirs:>11,}  summary {ours:>11,}")
    if not scan:
        unrolled = (ours, theirs)
assert ours == unrolled[0] == unrolled[1] and theirs < ours

# %% [markdown]
# The summary counts the same FLOPs for both forms (the body's stubs sit inside the scan in
# the caller's trace, so each counts once per step); `nn.tabulate` is right only unrolled.

# %% [markdown]
# ## Parameter bytes per device
#
# The example's parameters carry logical axis names (`nn.with_logical_partitioning`);
# `llama.RULES` maps them to a 2-D mesh (`"data"` for fully sharded data parallelism,
# `"model"` for tensor parallelism). With `mesh=` (a `jax.sharding.Mesh`, an `AbstractMesh` or
# just the axis sizes) each row gets the bytes of its parameters on each device, exact from
# the partition specs: no device is needed. Tensor parallelism on 8 chips, then the same with
# 8-way fully sharded data parallelism on top (64 chips):

# %%
per_device = []
for mesh in ({"data": 1, "model": 8}, {"data": 8, "model": 8}):
    plan = flaxmock.summary(tree, mesh=mesh, rules=llama.RULES, depth=1)
    per_device.append(plan.max_device_param_bytes)
    print(f"mesh {mesh}: {per_device[-1] / 2**30:.2f} GiB of parameters per device")
print(plan)
# Every parameter is split over "model" (8); the second plan splits "embed" over "data" too.
assert abs(per_device[0] / per_device[1] - 8) < 0.01
assert per_device[0] <= table.total_bytes / 8 * 1.01

# %% [markdown]
# ## On the command line
#
# `flaxmock summary` takes a factory (`package.module:factory` or `path/to/file.py:factory`)
# returning a module, or a module and example inputs, and prints the same table as text, JSON
# or HTML; `flaxmock summary --help` lists every option.

# %%
command = [
    sys.executable, "-m", "flaxmock", "summary", "flaxmock.examples.llama:llama3_70b_scan",
    "--depth", "1", "--mesh", "data=8,model=8",
    "--rules", ",".join(f"{k}={v or ''}" for k, v in llama.RULES),
]  # fmt: skip
print(" ".join(command[1:]))
result = subprocess.run(command, capture_output=True, text=True, check=True)
print(result.stdout)
assert "blocks" in result.stdout and "2.05 GiB" in result.stdout

# %% [markdown]
# ## Next steps
#
# - `flaxmock.nnx.summary(model, *args, flops=True)` does the same for Flax NNX models,
#   abstract ones included (`flaxmock.nnx.abstract`), where `nnx.tabulate` raises.
# - `Summary.to_json()` for other tools; in a notebook the table renders as HTML with a fixed
#   header and foldable subtrees.
# - `bench/summary.py` compares the figures and the time with `nn.tabulate`.
