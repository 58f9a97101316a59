"""Benchmark: ``Mocker`` and mock calls against the naive approach, as ratios in one run.

Item 6 of issue #13; every figure is a ratio of two timings taken in the same process.

1. Repeated calls of a ``Mocker``-held 8B Llama block (which sows its attention weights), at
   sequence lengths 128 and 16 (median of ``--repeat``), against
   - the seed-style way: ``jax.eval_shape`` of ``init`` and of ``apply``, then a normal draw
     of the output, on every call (goal: the Mocker at least 20x faster);
   - one jitted ``jax.random.normal`` of the output alone (goal: at most 1.5x of it). The
     difference is the per-call Python path (signature lookup, counter, dispatch).
2. First calls (convert + mock + draw): a ``Mocker``-held ResNet-50 (BatchNorm), and every
   top-level call mocked (``flaxmock.mock(tree, "*")``, then one ``flaxmock.call``) of
   ResNet-18, a VGG-16-style network and the 8B Llama, against the naive
   ``eval_shape(init)`` + ``eval_shape(apply)`` + a normal draw of the output (goal: at most
   2x). The models are in ``bench/vision.py``.

Run: ``python bench/mocker.py`` (``--size tiny --image 32`` for a quick check).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import vision

import flaxmock
from flaxmock.examples import llama


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def once(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def normal_of(key, spec):
    """A normal draw of every array leaf of ``spec`` (the seed-style fill)."""
    leaves, treedef = jax.tree.flatten(spec)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten(
        [jax.random.normal(k, s.shape, s.dtype) for k, s in zip(keys, leaves, strict=True)]
    )


def naive_spec(model, *args, **kwargs):
    key = jax.random.key(0)
    variables = jax.eval_shape(lambda k: model.init(k, *args, **kwargs), key)
    return jax.eval_shape(lambda v: model.apply(v, *args, **kwargs), variables)


def repeated(size: str, seq_len: int, repeat: int) -> None:
    config = llama.LlamaConfig.preset(size)
    block = llama.Block(config)
    x = jnp.zeros((1, seq_len, config.dim), config.dtype)
    self = flaxmock.Mocker(seed=0)
    self.block = block
    jax.block_until_ready(self.block(x))
    mocker_s = median_time(lambda: self.block(x), repeat)
    key = jax.random.key(0)
    naive_s = median_time(lambda: normal_of(key, naive_spec(block, x)), max(3, repeat // 5))
    spec = jax.eval_shape(lambda: self.block(x))
    normal = jax.jit(lambda k: normal_of(k, spec))
    jax.block_until_ready(normal(key))
    normal_s = median_time(lambda: normal(key), repeat)
    print(f"repeated Mocker call, {size} Block (sows attn weights), input {x.shape} {x.dtype}:")
    print(
        f"  Mocker {mocker_s * 1e3:.2f} ms, seed-style {naive_s * 1e3:.1f} ms, jitted normal of "
        f"the output {normal_s * 1e3:.2f} ms"
    )
    print(
        f"  seed-style / Mocker = {naive_s / mocker_s:.1f}x (goal >= 20x); Mocker / normal = "
        f"{mocker_s / normal_s:.2f}x (goal <= 1.5x); per-call path beyond the draw "
        f"{(mocker_s - normal_s) * 1e6:.0f} us"
    )


def first_calls(size: str, image: int) -> None:
    img = jnp.zeros((1, image, image, 3))
    config = llama.LlamaConfig.preset(size)
    tokens = jnp.zeros((1, 16), jnp.int32)
    key = jax.random.key(0)
    cases = [
        ("Mocker-held ResNet-50", vision.ResNet50(), (img,), "mocker"),
        ("ResNet-18, every top-level call mocked", vision.ResNet18(), (img,), "tree"),
        ("VGG-16-style, every top-level call mocked", vision.VGG16(), (img,), "tree"),
        (f"Llama {size}, every top-level call mocked", llama.Llama(config), (tokens,), "tree"),
    ]
    print(
        "first call (convert + mock + draw) against eval_shape(init) + eval_shape(apply) + "
        "normal draw:"
    )
    for name, model, args, how in cases:
        if how == "mocker":
            self = flaxmock.Mocker(seed=0)
            self.net = model
            mock_s = once(lambda: self.net(*args))  # noqa: B023
        else:

            def first(model=model, args=args):
                tree = flaxmock.unflaxify(model, *args)
                return flaxmock.call(flaxmock.mock(tree, "*"), *args)

            mock_s = once(first)
        naive_s = once(lambda: normal_of(key, naive_spec(model, *args)))  # noqa: B023
        print(
            f"  {name}: {mock_s:.2f} s against {naive_s:.2f} s = {mock_s / naive_s:.2f}x "
            "(goal <= 2x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="8b")
    parser.add_argument("--image", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--parts", default="repeated,first", help="repeated, first, or both")
    args = parser.parse_args()
    parts = args.parts.split(",")
    if "repeated" in parts:
        for seq_len in (128, 16):
            repeated(args.size, seq_len, args.repeat)
    if "first" in parts:
        first_calls(args.size, args.image)


if __name__ == "__main__":
    main()
