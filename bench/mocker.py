"""Benchmark: per-call time of a ``Mocker``-wrapped Llama block against the naive approach.

The naive approach runs ``jax.eval_shape`` of ``init`` and of ``apply`` on every call to learn
the output shape, then fills it. ``Mocker`` converts once per input signature and then only
generates random numbers. At the 8B preset, it measures the first call, repeated calls (median
of ``--repeat``) and the naive call, and prints the speed-up (goal: repeated calls at least 20x
faster than the naive approach). Run: ``python bench/mocker.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

import flaxmock
from flaxmock.examples import llama


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="8b")
    parser.add_argument("--seq-len", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()

    config = llama.LlamaConfig.preset(args.size)
    block = llama.Block(config)
    x = jnp.zeros((1, args.seq_len, config.dim), config.dtype)

    self = flaxmock.Mocker(seed=0)
    self.block = block
    start = time.perf_counter()
    jax.block_until_ready(self.block(x))
    first = time.perf_counter() - start
    repeated = median_time(lambda: self.block(x), args.repeat)

    key = jax.random.key(0)

    def naive():
        variables = jax.eval_shape(lambda k: block.init(k, x), key)
        spec = jax.eval_shape(lambda v: block.apply(v, x), variables)
        return flaxmock.fill_tree(key, spec)

    naive_s = median_time(naive, max(3, args.repeat // 5))
    print(f"Mocker-wrapped Block, preset {args.size}, input {x.shape} {x.dtype}")
    print(f"first call (converts): {first * 1e3:.1f} ms")
    print(f"repeated call: {repeated * 1e3:.2f} ms")
    print(f"naive eval_shape(init) + eval_shape(apply) + fill per call: {naive_s * 1e3:.1f} ms")
    print(f"speed-up of repeated calls: {naive_s / repeated:.1f}x (goal >= 20x)")


if __name__ == "__main__":
    main()
