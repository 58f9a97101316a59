"""Benchmark: FLOPs from ``summary(flops=True)`` against ``nn.tabulate(compute_flops=True)``.

On the bundled Llama-style example (``flaxmock.examples.llama``), unrolled (``layers_i``) and
scanned (``nn.scan(nn.remat(Block))``), at ``--sizes`` and ``--seq-len`` tokens, each
measurement in a fresh subprocess (so that peak RSS is its own and no trace cache is shared),
it measures:

* flaxmock: ``unflaxify`` + ``summary(flops=True)``: seconds (wall and CPU), forward FLOPs,
  peak RSS;
* Flax: ``nn.tabulate(model, key, compute_flops=True)(tokens)``: seconds (wall and CPU), the
  root row's FLOPs;

and prints, per size: the scanned figure against the unrolled one (goal: equal within 1%),
both against ``2 * N * tokens`` (``N``: parameters less the embedding table, whose lookup
costs no FLOPs; attention's ``seq_len**2`` terms add to it), the same figures from
``nn.tabulate`` (which counts a scanned body once), and the time ratio ``tabulate /
flaxmock`` (goal: >= 5x; 70B with FLOPs under 10 s and peak RSS under 1 GB).

For NNX, a Llama-style model written with ``nnx`` (below; unrolled with an ``nnx.List`` of
blocks or scanned with ``nnx.scan`` over blocks stacked by ``nnx.vmap``): ``flaxmock.nnx.summary(
abstract model, flops=True)`` at the same sizes, and ``nnx.tabulate(compute_flops=True)`` where
it runs: on a real (allocated) model, so at ``--nnx-tabulate-size`` only (it raises on an
abstract one).

Run: ``python bench/summary.py`` (sizes 8b,70b; ``--skip-tabulate`` leaves out Flax's
slow runs, ``--sizes tiny`` is a quick check).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp

from flaxmock.examples import llama

# An NNX twin of the example, for the NNX rows.


def _nnx_model(config: llama.LlamaConfig, rngs: Any) -> Any:
    from flax import nnx

    c = config

    def dense(d_in: int, d_out: int, rngs: Any) -> nnx.Linear:
        return nnx.Linear(d_in, d_out, use_bias=False, dtype=c.dtype, param_dtype=c.param_dtype,
                          rngs=rngs)  # fmt: skip

    class Attention(nnx.Module):
        def __init__(self, rngs: Any):
            self.q = dense(c.dim, c.n_heads * c.head_dim, rngs)
            self.k = dense(c.dim, c.n_kv_heads * c.head_dim, rngs)
            self.v = dense(c.dim, c.n_kv_heads * c.head_dim, rngs)
            self.o = dense(c.n_heads * c.head_dim, c.dim, rngs)

        def __call__(self, x: jax.Array) -> jax.Array:
            b, t, _ = x.shape
            positions = jnp.arange(t)
            q = llama.rotary(self.q(x).reshape(b, t, c.n_heads, c.head_dim), positions,
                             c.rope_theta)  # fmt: skip
            k = llama.rotary(self.k(x).reshape(b, t, c.n_kv_heads, c.head_dim), positions,
                             c.rope_theta)  # fmt: skip
            v = self.v(x).reshape(b, t, c.n_kv_heads, c.head_dim)
            groups = c.n_heads // c.n_kv_heads
            k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
            logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / c.head_dim**0.5
            causal = jnp.tril(jnp.ones((t, t), bool))
            weights = jax.nn.softmax(jnp.where(causal, logits, -1e30), axis=-1)
            out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(c.dtype), v)
            return self.o(out.reshape(b, t, c.n_heads * c.head_dim))

    class MLP(nnx.Module):
        def __init__(self, rngs: Any):
            self.gate = dense(c.dim, c.ffn_dim, rngs)
            self.up = dense(c.dim, c.ffn_dim, rngs)
            self.down = dense(c.ffn_dim, c.dim, rngs)

        def __call__(self, x: jax.Array) -> jax.Array:
            return self.down(jax.nn.silu(self.gate(x)) * self.up(x))

    def norm(rngs: Any) -> nnx.RMSNorm:
        return nnx.RMSNorm(c.dim, epsilon=c.norm_eps, dtype=c.dtype, param_dtype=c.param_dtype,
                           rngs=rngs)  # fmt: skip

    class Block(nnx.Module):
        def __init__(self, rngs: Any):
            self.attn_norm, self.attn = norm(rngs), Attention(rngs)
            self.mlp_norm, self.mlp = norm(rngs), MLP(rngs)

        def __call__(self, x: jax.Array) -> jax.Array:
            h = x + self.attn(self.attn_norm(x))
            return h + self.mlp(self.mlp_norm(h))

    class Llama(nnx.Module):
        def __init__(self, rngs: Any):
            self.embed = nnx.Embed(c.vocab_size, c.dim, dtype=c.dtype, param_dtype=c.param_dtype,
                                   rngs=rngs)  # fmt: skip
            if c.scan_layers:
                make = nnx.split_rngs(splits=c.n_layers)(nnx.vmap(Block, in_axes=0, out_axes=0))
                self.blocks = make(rngs)
            else:
                self.layers = nnx.List([Block(rngs) for _ in range(c.n_layers)])
            self.norm = norm(rngs)
            self.lm_head = dense(c.dim, c.vocab_size, rngs)

        def __call__(self, tokens: jax.Array) -> jax.Array:
            h = self.embed(tokens)
            if c.scan_layers:

                @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
                def step(h: jax.Array, block: Block) -> jax.Array:
                    return block(h)

                h = step(h, self.blocks)
            else:
                for block in self.layers:
                    h = block(h)
            return self.lm_head(self.norm(h)).astype(jnp.float32)

    return Llama(rngs)


def _tabulate_flops(text: str) -> int:
    """The root row's FLOPs in ``nn.tabulate``'s table (it counts each call's subtree)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines = [line for line in text.splitlines() if line.startswith(("┃", "│"))]
    header = [cell.strip() for cell in lines[0].strip("┃").split("┃")]
    root = [cell.strip() for cell in lines[1].strip("│").split("│")]
    return int(root[header.index("flops")])


def measure(kind: str, size: str, scan: bool, seq_len: int) -> dict:
    import flax.linen as nn

    import flaxmock

    config = llama.LlamaConfig.preset(size, scan_layers=scan)
    tokens_spec = jax.ShapeDtypeStruct((1, seq_len), jnp.int32)
    out: dict[str, Any] = {"kind": kind, "size": size, "scan": scan}
    start, cpu_start = time.perf_counter(), time.process_time()
    if kind == "flaxmock":
        tree = flaxmock.unflaxify(llama.Llama(config), tokens_spec)
        table = flaxmock.summary(tree, flops=True)
        out["flops"] = table.total_flops
        out["params"] = table.total_params
    elif kind == "tabulate":
        text = nn.tabulate(
            llama.Llama(config),
            jax.random.key(0),
            compute_flops=True,
            console_kwargs={"width": 400, "force_terminal": False},
        )(jnp.zeros((1, seq_len), jnp.int32))
        out["flops"] = _tabulate_flops(text)
    elif kind == "nnx":
        from flax import nnx

        model = flaxmock.nnx.abstract(lambda: _nnx_model(config, nnx.Rngs(0)))
        start, cpu_start = time.perf_counter(), time.process_time()
        table = flaxmock.nnx.summary(model, tokens_spec, flops=True)
        out["flops"] = table.total_flops
    elif kind == "nnx_tabulate":
        from flax import nnx

        model = _nnx_model(config, nnx.Rngs(0))
        start, cpu_start = time.perf_counter(), time.process_time()
        text = nnx.tabulate(
            model,
            jnp.zeros((1, seq_len), jnp.int32),
            compute_flops=True,
            console_kwargs={"width": 400, "force_terminal": False},
        )
        out["flops"] = _tabulate_flops(text)
    out["seconds"] = time.perf_counter() - start
    out["cpu_seconds"] = time.process_time() - cpu_start
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run(kind: str, size: str, scan: bool, seq_len: int) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--one",
            f"{kind}:{size}:{int(scan)}",
            "--seq-len",
            str(seq_len),
        ],
        capture_output=True,
        text=True,
        env={"JAX_PLATFORMS": "cpu", **os.environ},
    )
    if proc.returncode != 0:
        return {"kind": kind, "size": size, "scan": scan, "error": proc.stderr.strip()[-300:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x / 1e12:.2f}T" if x >= 1e10 else f"{x:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="8b,70b")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--skip-tabulate", action="store_true")
    parser.add_argument("--skip-nnx", action="store_true")
    parser.add_argument("--nnx-tabulate-size", default="tiny")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, size, scan = args.one.split(":")
        print(json.dumps(measure(kind, size, scan == "1", args.seq_len)))
        return

    tokens = args.seq_len
    print(f"tokens per call: {tokens}; each figure from a fresh process")
    print(
        f"{'model':>16} {'size':>5} {'layers':>8} {'flops':>10} {'vs 2N*tok':>10} "
        f"{'seconds':>8} {'cpu s':>7} {'peak RSS':>9}"
    )
    results: dict[tuple[str, str, bool], dict] = {}
    kinds = ["flaxmock"] + ([] if args.skip_tabulate else ["tabulate"])
    kinds += [] if args.skip_nnx else ["nnx"]
    for size in args.sizes.split(","):
        config = llama.LlamaConfig.preset(size)
        n = config.num_params() - config.vocab_size * config.dim
        for kind in kinds:
            for scan in (False, True):
                r = results[(kind, size, scan)] = run(kind, size, scan, tokens)
                name = {"flaxmock": "summary", "tabulate": "nn.tabulate", "nnx": "nnx summary"}
                layers = "scanned" if scan else "unrolled"
                if "error" in r:
                    print(f"{name[kind]:>16} {size:>5} {layers:>8}  error: {r['error']}")
                    continue
                ratio = r["flops"] / (2 * n * tokens)
                print(
                    f"{name[kind]:>16} {size:>5} {layers:>8} {_fmt(r['flops']):>10} "
                    f"{ratio:>10.3f} {r['seconds']:>7.2f}s {r['cpu_seconds']:>6.2f}s "
                    f"{r['peak_rss_mib']:>5.0f} MiB"
                )
    print()
    for size in args.sizes.split(","):
        ours = {s: results[("flaxmock", size, s)] for s in (False, True)}
        if any("error" in r for r in ours.values()):
            continue
        diff = ours[True]["flops"] / ours[False]["flops"] - 1
        print(f"{size}: summary, scanned vs unrolled FLOPs: {diff:+.4%} (goal: within 1%)")
        if "nnx" in kinds and not any("error" in results[("nnx", size, s)] for s in (False, True)):
            nnx_diff = results[("nnx", size, True)]["flops"] / ours[False]["flops"] - 1
            print(f"{size}: nnx summary (scanned) vs linen summary FLOPs: {nnx_diff:+.4%}")
        if "tabulate" not in kinds:
            continue
        for scan in (False, True):
            tab = results[("tabulate", size, scan)]
            if "error" in tab:
                continue
            layers = "scanned" if scan else "unrolled"
            print(
                f"{size} {layers}: nn.tabulate / summary time: "
                f"{tab['seconds'] / ours[scan]['seconds']:.1f}x (cpu "
                f"{tab['cpu_seconds'] / ours[scan]['cpu_seconds']:.1f}x; goal: >= 5x); "
                f"nn.tabulate FLOPs / summary FLOPs: {tab['flops'] / ours[scan]['flops']:.3f}"
            )
    if not args.skip_nnx:
        small = args.nnx_tabulate_size
        ours = run("nnx", small, False, tokens)
        tab = run("nnx_tabulate", small, False, tokens)
        if "error" in ours or "error" in tab:
            print(f"nnx.tabulate at {small}: error: {tab.get('error') or ours.get('error')}")
        else:
            print(
                f"{small} (real NNX model): nnx.tabulate {tab['seconds']:.2f}s, "
                f"{_fmt(tab['flops'])} FLOPs; nnx summary (abstract) {ours['seconds']:.2f}s, "
                f"{_fmt(ours['flops'])} FLOPs"
            )
    print("goals: scanned = unrolled within 1%; >= 5x faster than nn.tabulate; 70b under 10 s")


if __name__ == "__main__":
    main()
