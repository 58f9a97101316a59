"""Benchmark: abstract conversion time against one ``jax.eval_shape`` of ``module.apply``.

For the bundled Llama-style example at each size, in a fresh subprocess per size (so peak RSS is
that size's own), it measures:

* ``eval_shape(apply)``: one ``jax.eval_shape`` of ``model.apply`` on abstract variables (the
  floor: any abstract conversion traces the model at least once);
* ``unflaxify``: ``flaxmock.unflaxify(model, tokens)`` with no variables (abstract);
* ``summary``: ``flaxmock.summary`` of the converted tree;
* the ratio ``unflaxify / eval_shape(apply)`` (goal: <= 1.5) and the process's peak RSS (goal:
  under 1 GB at 70B).

Timings are the best of ``--repeat`` runs, each with a fresh function (``jax.eval_shape`` caches
traces by function). Run: ``python bench/convert.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def measure(size: str, repeat: int) -> dict:
    import resource

    import jax
    import jax.numpy as jnp

    import flaxmock
    from flaxmock.examples import llama

    model = llama.Llama(llama.LlamaConfig.preset(size))
    tokens = jax.ShapeDtypeStruct((1, 16), jnp.int32)
    variables = jax.eval_shape(lambda k: model.init(k, tokens), jax.random.key(0))

    def best(fn) -> float:
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    ref = best(lambda: jax.eval_shape(lambda v, t: model.apply(v, t), variables, tokens))
    conv = best(lambda: flaxmock.unflaxify(model, tokens))
    tree = flaxmock.unflaxify(model, tokens)
    summ = best(lambda: str(flaxmock.summary(tree)))
    table = flaxmock.summary(tree)
    return {
        "size": size,
        "params": table.total_params,
        "param_gib": table.total_bytes / 2**30,
        "layers": len(table.rows),
        "eval_shape_s": ref,
        "unflaxify_s": conv,
        "summary_s": summ,
        "ratio": conv / ref,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,8b,70b")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.repeat)))
        return
    rows = []
    for size in args.sizes.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--one", size, "--repeat", str(args.repeat)],
            check=True,
            capture_output=True,
            text=True,
            env={"JAX_PLATFORMS": "cpu", **__import__("os").environ},
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    header = (
        f"{'size':>5} {'params':>15} {'GiB':>8} {'calls':>6} {'eval_shape':>11} "
        f"{'unflaxify':>10} {'ratio':>6} {'summary':>8} {'peak RSS':>9}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['size']:>5} {r['params']:>15,} {r['param_gib']:>8.2f} {r['layers']:>6} "
            f"{r['eval_shape_s']:>10.3f}s {r['unflaxify_s']:>9.3f}s {r['ratio']:>6.2f} "
            f"{r['summary_s']:>7.3f}s {r['peak_rss_mib']:>6.0f} MiB"
        )
    print("goal: ratio <= 1.5, peak RSS < 1 GB at 70b")


if __name__ == "__main__":
    main()
