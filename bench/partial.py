"""Benchmark: memory and time of a partially mocked example model, against its real parameters.

The example Llama model at the 8B preset, converted abstractly; every decoder block but one is
mocked (selected by a predicate on ``layer.info.scope_path``), the rest (embedding, one block,
final norm, output head) is given real parameters with ``flaxmock.materialize``, and the tree is
called on a short sequence. It reports:

- the bytes of the un-mocked parameters (the values of the materialized tree's
  ``pz.Parameter``s), next to the whole model's parameter bytes (``flaxmock.summary``);
- the peak RSS (``ru_maxrss``) of a fresh process doing all of the above, and of a fresh
  process that only imports jax and flaxmock and converts the model abstractly (the fixed base);
- the ratio (peak - base) / un-mocked bytes: the goal is <= 1.3, i.e. the memory a partial run
  costs is that of the parameters it really uses, never that of the model;
- the times of convert, mock, materialize and call.

Two costs are not parameters, and the table shows them apart:

- random generation: jax's default threefry PRNG, lowered as a loop on CPU, needs 8x the
  output's bytes of scratch per array (the 8B embedding: 1 GiB of bf16 values, 8.4 GB of
  scratch). ``materialize`` lowers it unrolled (bit-identical values;
  ``flaxmock._core.prng``), which removes the scratch; ``--prng rbg`` shows XLA's
  RngBitGenerator for comparison;
- the forward itself: XLA on CPU computes a bfloat16 matmul in float32, so the output head's
  matmul holds a float32 copy of its kernel (2 GiB at 8B) while it runs. Any run of that head on
  CPU pays it; a fresh process measures one such matmul alone (``matmul`` phase).

Each measurement runs in its own subprocess, so that peak RSS is that of one job alone. Run:
``python bench/partial.py`` (``--size tiny`` for a quick check). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import time

from _common import peak_rss_bytes, print_table, run_phase


def worker(size: str, seq_len: int, keep: int, phase: str, prng: str, mock_head: bool) -> dict:
    """One measurement, in a fresh process: ``base`` converts only; ``run`` does everything;
    ``matmul`` runs only the output head's matmul on arrays of its shapes."""
    times = {}
    start = time.perf_counter()
    import jax

    if prng != "default":
        jax.config.update("jax_default_prng_impl", prng)
    import jax.numpy as jnp
    from penzai import pz

    import flaxmock
    from flaxmock.examples import llama

    times["import"] = time.perf_counter() - start

    model = llama.Llama(llama.LlamaConfig.preset(size))
    tokens = jnp.zeros((1, seq_len), jnp.int32)
    if phase == "matmul":
        c = model.config
        kernel = jnp.ones((c.dim, c.vocab_size), c.param_dtype)
        h = jnp.ones((1, seq_len, c.dim), c.dtype)
        before = peak_rss_bytes()
        jax.block_until_ready(jnp.dot(h, kernel))
        return {"times": times, "extra": peak_rss_bytes() - before}

    start = time.perf_counter()
    tree = flaxmock.unflaxify(model, jax.ShapeDtypeStruct(tokens.shape, tokens.dtype))
    times["convert"] = time.perf_counter() - start
    result: dict = {"times": times, "model_bytes": flaxmock.summary(tree).total_bytes}
    if phase == "base":
        result["peak_rss"] = peak_rss_bytes()
        return result

    # Every block call but the kept one, by scope path ("layers_0", ...): the same selection a
    # user writes to debug one layer of a big model.
    blocks = pz.select(tree).at_subtrees_where(flaxmock.selector(llama.Block)).get_sequence()
    block_paths = [layer.info.scope_path for layer in blocks]
    kept = block_paths[keep]
    mocked_paths = set(block_paths) - {kept}
    if mock_head:
        # The output projection too: on CPU its bf16 matmul runs in float32, a float32 copy of
        # its kernel (7.8 GiB at 405B) beside the bf16 kernel itself (3.9 GiB).
        mocked_paths.add(("lm_head",))

    start = time.perf_counter()
    mocked = flaxmock.mock(tree, lambda layer: layer.info.scope_path in mocked_paths)
    times["mock"] = time.perf_counter() - start

    start = time.perf_counter()
    real = flaxmock.materialize(mocked, jax.random.key(0))
    # One pz.Parameter per Flax parameter (a tied one once); their values are the arrays.
    _, params = pz.unbind_params(real)
    jax.block_until_ready([p.value for p in params])
    times["materialize"] = time.perf_counter() - start
    peaks = {"materialize": peak_rss_bytes()}

    start = time.perf_counter()
    logits = jax.block_until_ready(flaxmock.call(real, tokens))
    times["call"] = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(flaxmock.call(real, tokens))
    times["call again"] = time.perf_counter() - start
    peaks["call"] = peak_rss_bytes()

    concrete = jax.tree.leaves([p.value for p in params])
    result.update(
        peak_rss=peak_rss_bytes(),
        peaks=peaks,
        unmocked_bytes=sum(leaf.nbytes for leaf in concrete),
        unmocked_leaves=len(concrete),
        summary_unmocked_bytes=flaxmock.summary(mocked).total_bytes,
        n_blocks=len(block_paths),
        kept="/".join(kept),
        tied=model.config.tie_embeddings,
        head_mocked=mock_head and not model.config.tie_embeddings,
        logits=f"{logits.dtype}{list(logits.shape)}",
    )
    return result


def run_fresh(args: argparse.Namespace, phase: str) -> dict:
    options = ["--size", args.size, "--seq-len", str(args.seq_len), "--keep", str(args.keep)]
    options += ["--prng", args.prng] + (["--mock-head"] if args.mock_head else [])
    return run_phase(__file__, phase, options)


def gib(n: float) -> str:
    # GiB for the big presets; smaller units so that the tiny preset's sizes do not read as 0.
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.3f} {unit}"
    return f"{n:.0f} B"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="8b", help="example preset: tiny, 8b, 70b, 405b")
    parser.add_argument("--seq-len", type=int, default=16)
    parser.add_argument("--keep", type=int, default=0, help="index of the block left un-mocked")
    parser.add_argument(
        "--prng",
        default="default",
        choices=["default", "rbg", "unsafe_rbg"],
        help="jax_default_prng_impl for materialize (rbg: other values, far less scratch memory)",
    )
    parser.add_argument(
        "--mock-head",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="mock the output head too (default: only at 405b, whose head's float32 matmul "
        "copy alone takes 7.8 GiB)",
    )
    parser.add_argument("--phase", choices=["base", "run", "matmul"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mock_head is None:
        args.mock_head = args.size == "405b"

    if args.phase is not None:
        print(
            json.dumps(
                worker(args.size, args.seq_len, args.keep, args.phase, args.prng, args.mock_head)
            )
        )
        return

    base = run_fresh(args, "base")
    run = run_fresh(args, "run")
    # The head's matmul alone, unless the head is mocked (then no real matmul of it runs).
    matmul = {"extra": 0} if args.mock_head else run_fresh(args, "matmul")
    unmocked = max(run["unmocked_bytes"], 1)
    ratio_init = (run["peaks"]["materialize"] - base["peak_rss"]) / unmocked
    ratio = (run["peak_rss"] - base["peak_rss"]) / unmocked
    ratio_net = (run["peak_rss"] - base["peak_rss"] - matmul["extra"]) / unmocked
    rows = [
        ("model", f"example Llama, preset {args.size!r}, {run['n_blocks']} blocks"),
        ("PRNG", args.prng),
        (
            "un-mocked",
            f"embedding, block {run['kept']!r}, final norm, "
            + (
                "head mocked"
                if run["head_mocked"]
                else "head (tied to the embedding)"
                if run["tied"]
                else "head"
            ),
        ),
        ("input / output", f"int32[1,{args.seq_len}] -> {run['logits']}"),
        ("whole model's parameters", gib(run["model_bytes"])),
        ("un-mocked parameters", f"{gib(run['unmocked_bytes'])} ({run['unmocked_leaves']} arrays)"),
        ("  same, from summary(mocked)", gib(run["summary_unmocked_bytes"])),
        ("fixed base: import + convert", gib(base["peak_rss"])),
        ("peak RSS after materialize", gib(run["peaks"]["materialize"])),
        ("peak RSS after call", gib(run["peaks"]["call"])),
        ("peak RSS, partial run", gib(run["peak_rss"])),
        ("peak - base", gib(run["peak_rss"] - base["peak_rss"])),
        (
            "head matmul alone (XLA CPU)",
            "- (head mocked)" if run["head_mocked"] else gib(matmul["extra"]),
        ),
        ("(materialize peak - base) / un-mocked", f"{ratio_init:.2f}  (goal <= 1.3)"),
        ("(peak - base) / un-mocked", f"{ratio:.2f}"),
        ("(peak - base - matmul) / un-mocked", f"{ratio_net:.2f}  (goal <= 1.3)"),
    ]
    for name in ("import", "convert", "mock", "materialize", "call", "call again"):
        rows.append((f"time: {name}", f"{run['times'][name]:.2f} s"))
    print_table(rows)


if __name__ == "__main__":
    main()
