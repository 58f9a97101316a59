"""Benchmark: mocked forwards of the example model, against generating the arrays directly.

At the 8B preset, abstract (no parameter is ever allocated), on CPU, it measures:

(a) converting the model and mocking every call below the root (embedding, each block, the
    final norm, the output head), then one eager forward: time and the process's peak RSS;
(b) a repeated call with the same input signature, as a ratio to generating the same random
    arrays directly with ``flaxmock.fill_tree`` (goal: <= 2x): what the mock engine adds on top
    of the random generation itself (the interceptor walk, the spec lookup, the sown writes);
(c) a call after ``pz.variable_jit`` has compiled the mocked forward.

Timings are medians of ``--repeat`` runs. Run: ``python bench/mock.py`` (``--size tiny`` for
a quick check).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import jax
import jax.numpy as jnp
from penzai import pz

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
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    model = llama.Llama(llama.LlamaConfig.preset(args.size))
    tokens = jnp.zeros((1, args.seq_len), jnp.int32)

    start = time.perf_counter()
    tree = flaxmock.unflaxify(model, tokens)
    mocked = flaxmock.mock(tree, lambda layer: len(layer.info.call_path) == 1)
    convert_s = time.perf_counter() - start
    start = time.perf_counter()
    out = jax.block_until_ready(flaxmock.call(mocked, tokens))
    first_s = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # (b) The same random arrays generated directly: every mock's output spec.
    mocks = [m for m in mocked.submodule_calls.values() if isinstance(m, flaxmock.MockLayer)]
    key = jax.random.key(0)

    def direct():
        return [flaxmock.fill_tree(key, m.info.out_spec) for m in mocks]

    repeated = median_time(lambda: flaxmock.call(mocked, tokens), args.repeat)
    baseline = median_time(direct, args.repeat)

    # (c) After jit compiled the mocked forward.
    step = pz.variable_jit(lambda t, x: flaxmock.call(t, x))
    jax.block_until_ready(step(mocked, tokens))
    jitted = median_time(lambda: step(mocked, tokens), args.repeat)

    print(
        f"preset {args.size}, tokens {tokens.shape}, {len(mocks)} mocked calls, output {out.shape}"
    )
    print(
        f"(a) convert + mock: {convert_s:.3f} s; first mocked forward: {first_s:.3f} s; "
        f"peak RSS {rss:.0f} MiB"
    )
    print(
        f"(b) repeated mocked forward: {repeated * 1e3:.2f} ms; the same arrays generated "
        f"directly: {baseline * 1e3:.2f} ms; ratio {repeated / baseline:.2f} (goal <= 2)"
    )
    print(f"(c) mocked forward under pz.variable_jit, after compiling: {jitted * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
