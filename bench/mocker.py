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

3. The same figures for NNX mocks (``flaxmock.nnx.mock`` on ``flaxmock.nnx.abstract`` models;
   the models are in ``bench/nnx_models.py``): repeated calls of the mock of one block of the
   Llama twin, which sows its attention probabilities (``nnx.Intermediate``), against the
   seed-style way (``nnx.eval_shape`` of construction and of the call, then a normal draw,
   on every call) and against one jitted normal of the output; first calls (abstract model +
   mock + draw) of a ResNet-18 with BatchNorm, mocked whole and with every top-level call
   mocked, and of the Llama twin with every top-level call mocked, against the naive
   ``nnx.eval_shape(factory)`` + ``nnx.eval_shape(call)`` + a normal draw.

Each first call runs in a fresh process (``bench/_common.py``'s ``run_phase``), the mocked way
and then the naive way, so that no compilation of another case is reused.

Run: ``python bench/mocker.py`` (``--size tiny --image 32`` for a quick check; ``--front
linen`` or ``nnx`` for one front end).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

import _common
import jax
import jax.numpy as jnp
import nnx_models
import vision
from flax import nnx

import flaxmock
import flaxmock.nnx
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


def report_repeated(title: str, mock_s: float, naive_s: float, normal_s: float) -> None:
    print(title)
    print(
        f"  mock {mock_s * 1e3:.2f} ms, seed-style {naive_s * 1e3:.1f} ms, jitted normal of "
        f"the output {normal_s * 1e3:.2f} ms"
    )
    print(
        f"  seed-style / mock = {naive_s / mock_s:.1f}x (goal >= 20x); mock / normal = "
        f"{mock_s / normal_s:.2f}x (goal <= 1.5x); per-call path beyond the draw "
        f"{(mock_s - normal_s) * 1e6:.0f} us"
    )


def spec_of(tree):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def jitted_normal_s(spec, repeat: int) -> float:
    key = jax.random.key(0)
    normal = jax.jit(lambda k: normal_of(k, spec))
    jax.block_until_ready(normal(key))
    return median_time(lambda: normal(key), repeat)


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
    normal_s = jitted_normal_s(jax.eval_shape(lambda: self.block(x)), repeat)
    report_repeated(
        f"repeated Mocker call, {size} Block (sows attn weights), input {x.shape} {x.dtype}:",
        mocker_s,
        naive_s,
        normal_s,
    )


def nnx_repeated(size: str, seq_len: int, repeat: int) -> None:
    config = llama.LlamaConfig.preset(size)

    def factory():
        return nnx_models.Block(config, nnx.Rngs(0), sow_attention=True)

    mocked = flaxmock.nnx.mock(flaxmock.nnx.abstract(factory), "", seed=0)
    x = jnp.zeros((1, seq_len, config.dim), config.dtype)
    out = jax.block_until_ready(mocked(x))
    mock_s = median_time(lambda: mocked(x), repeat)
    # What the mock sowed (as the real block does on every call): its attention probabilities.
    sown = [v.get_value()[-1] for _, v in nnx.iter_graph(mocked) if isinstance(v, nnx.Intermediate)]
    key = jax.random.key(0)

    def seed_style():
        abstract = nnx.eval_shape(factory)
        spec = nnx.eval_shape(lambda m, x: m(x), abstract, x)
        return normal_of(key, spec)

    naive_s = median_time(seed_style, max(3, repeat // 5))
    normal_s = jitted_normal_s(spec_of(out), repeat)
    report_repeated(
        f"repeated NNX mock call, {size} Block (sows attn weights), input {x.shape} {x.dtype}:",
        mock_s,
        naive_s,
        normal_s,
    )
    both_s = jitted_normal_s(spec_of((out, sown)), repeat)
    print(
        f"  an NNX block sows on every call, so the mock draws its sown {spec_of(sown)} too: "
        f"jitted normal of output + sown {both_s * 1e3:.2f} ms, mock / that = "
        f"{mock_s / both_s:.2f}x"
    )


def first_case(case: str, size: str, image: int) -> dict:
    """One first call, mocked way then naive way, in this (fresh) process: seconds of each."""
    img = jnp.zeros((1, image, image, 3))
    config = llama.LlamaConfig.preset(size)
    tokens = jnp.zeros((1, 16), jnp.int32)
    key = jax.random.key(0)
    linen = {
        "resnet50-mocker": (vision.ResNet50(), img, None),
        "resnet18-tree": (vision.ResNet18(), img, "*"),
        "vgg16-tree": (vision.VGG16(), img, "*"),
        "llama-tree": (llama.Llama(config), tokens, "*"),
    }
    nnx_cases = {
        "nnx-resnet18-whole": (lambda: nnx_models.ResNet(rngs=nnx.Rngs(0)), img, ""),
        "nnx-resnet18-tree": (
            lambda: nnx_models.ResNet(rngs=nnx.Rngs(0)),
            img,
            ["*", "blocks/*"],
        ),
        "nnx-llama-tree": (
            lambda: nnx_models.llama_model(config, nnx.Rngs(0)),
            tokens,
            ["*", "layers/*"],
        ),
    }
    if case in linen:
        model, arg, where = linen[case]
        if where is None:
            self = flaxmock.Mocker(seed=0)
            self.net = model
            mock_s = once(lambda: self.net(arg))
        else:
            mock_s = once(
                lambda: flaxmock.call(flaxmock.mock(flaxmock.unflaxify(model, arg), where), arg)
            )
        naive_s = once(lambda: normal_of(key, naive_spec(model, arg)))
    else:
        factory, arg, where = nnx_cases[case]
        mock_s = once(lambda: flaxmock.nnx.mock(flaxmock.nnx.abstract(factory), where)(arg))

        def naive():
            abstract = nnx.eval_shape(factory)
            return normal_of(key, nnx.eval_shape(lambda m, a: m(a), abstract, arg))

        naive_s = once(naive)
    return {"mock_s": mock_s, "naive_s": naive_s}


FIRST_CASES = {
    "linen": [
        ("resnet50-mocker", "Mocker-held ResNet-50"),
        ("resnet18-tree", "ResNet-18, every top-level call mocked"),
        ("vgg16-tree", "VGG-16-style, every top-level call mocked"),
        ("llama-tree", "Llama {size}, every top-level call mocked"),
    ],
    "nnx": [
        ("nnx-resnet18-whole", "NNX ResNet-18 (BatchNorm), mocked whole"),
        ("nnx-resnet18-tree", "NNX ResNet-18 (BatchNorm), every top-level call mocked"),
        ("nnx-llama-tree", "NNX Llama {size}, every top-level call mocked"),
    ],
}


def first_calls(fronts: list[str], size: str, image: int) -> None:
    print(
        "first call (convert or abstract + mock + draw) against eval_shape of construction + "
        "eval_shape of the call + normal draw, each case in a fresh process:"
    )
    for front in fronts:
        for case, name in FIRST_CASES[front]:
            args = ["--size", size, "--image", str(image)]
            got = _common.run_phase(__file__, case, args)
            mock_s, naive_s = got["mock_s"], got["naive_s"]
            print(
                f"  {name.format(size=size)}: {mock_s:.2f} s against {naive_s:.2f} s = "
                f"{mock_s / naive_s:.2f}x (goal <= 2x)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="8b")
    parser.add_argument("--image", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--parts", default="repeated,first", help="repeated, first, or both")
    parser.add_argument("--front", default="linen,nnx", help="linen, nnx, or both")
    parser.add_argument("--phase", help=argparse.SUPPRESS)  # One first-call case (internal).
    args = parser.parse_args()
    # NNX's own deprecation warning for sowing outside nnx.capture, on every call.
    warnings.simplefilter("ignore", DeprecationWarning)
    if args.phase:
        print(json.dumps(first_case(args.phase, args.size, args.image)))
        return
    parts, fronts = args.parts.split(","), args.front.split(",")
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, python {sys.version.split()[0]}")
    if "repeated" in parts:
        for seq_len in (128, 16):
            if "linen" in fronts:
                repeated(args.size, seq_len, args.repeat)
            if "nnx" in fronts:
                nnx_repeated(args.size, seq_len, args.repeat)
    if "first" in parts:
        first_calls(fronts, args.size, args.image)


if __name__ == "__main__":
    main()
