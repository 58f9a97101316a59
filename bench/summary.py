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

For NNX, a Llama-style model written with ``nnx`` (``bench/nnx_models.py``; unrolled with an
``nnx.List`` of blocks or scanned with ``nnx.scan`` over blocks stacked by ``nnx.vmap``):
``flaxmock.nnx.summary(abstract model, flops=True)`` at the same sizes, and
``nnx.tabulate(compute_flops=True)`` where it runs: on a real (allocated) model, so at
``--nnx-tabulate-size`` only (it raises on an abstract one).

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
import nnx_models

from flaxmock.examples import llama


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

        model = flaxmock.nnx.abstract(lambda: nnx_models.llama_model(config, nnx.Rngs(0)))
        start, cpu_start = time.perf_counter(), time.process_time()
        table = flaxmock.nnx.summary(model, tokens_spec, flops=True)
        out["flops"] = table.total_flops
    elif kind == "nnx_tabulate":
        from flax import nnx

        model = nnx_models.llama_model(config, nnx.Rngs(0))
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
