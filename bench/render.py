"""Benchmark: how long a converted tree takes to render, and how large the rendering is.

On the bundled Llama-style example (``flaxmock.examples.llama``) at ``--size`` (default 8b),
converted abstractly, and the same tree with every attention block mocked, it measures:

* ``repr(tree)``: seconds and characters (goal: a short line);
* ``treescope.render_to_text(tree)``: seconds and characters;
* ``treescope.render_to_html(tree)``: seconds and bytes (goal: under 1 s at 8B, and a size
  that a notebook opens without trouble).

``--baseline`` renders with penzai's own handlers instead of flaxmock's (the converted layers
drawn as plain ``InterceptedFlaxModuleMethod`` dataclasses, as before flaxmock had its own
rendering), so that one run prints both and their ratios.

Run: ``python bench/render.py`` (``--size tiny`` is a quick check).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import treescope

import flaxmock
from flaxmock._linen import layer as _layer
from flaxmock.examples import llama


@contextlib.contextmanager
def _penzai_rendering() -> Iterator[None]:
    # Hide flaxmock's __treescope_repr__ (and short __repr__) for the baseline.
    saved = {}
    for cls in (_layer.FlaxCallLayer, _layer.ReplacementLayer):
        for name in ("__treescope_repr__", "__repr__"):
            if name in vars(cls):
                saved[cls, name] = vars(cls)[name]
                delattr(cls, name)
    try:
        yield
    finally:
        for (cls, name), value in saved.items():
            setattr(cls, name, value)


def _timed(fn: Any) -> tuple[float, int]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, len(out.encode() if isinstance(out, str) else out)


def measure(tree: Any) -> dict[str, tuple[float, int]]:
    return {
        "repr": _timed(lambda: repr(tree)),
        "text": _timed(lambda: treescope.render_to_text(tree)),
        "html": _timed(lambda: treescope.render_to_html(tree)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="8b", choices=["tiny", "8b", "70b"])
    parser.add_argument("--seq-len", type=int, default=16)
    parser.add_argument("--no-baseline", action="store_true", help="skip penzai's rendering")
    args = parser.parse_args()
    model = llama.Llama(llama.LlamaConfig.preset(args.size))
    tokens = jax.ShapeDtypeStruct((1, args.seq_len), jnp.int32)
    tree = flaxmock.unflaxify(model, tokens)
    mocked = flaxmock.mock(tree, llama.Attention)
    # One warm-up rendering of each, so that imports and caches do not count.
    with _penzai_rendering():
        treescope.render_to_html(
            flaxmock.unflaxify(
                llama.Llama(llama.LlamaConfig.tiny()), jax.ShapeDtypeStruct((1, 4), jnp.int32)
            )
        )
    treescope.render_to_html(
        flaxmock.unflaxify(
            llama.Llama(llama.LlamaConfig.tiny()), jax.ShapeDtypeStruct((1, 4), jnp.int32)
        )
    )
    print(f"flaxmock render bench: Llama {args.size}, tokens {tokens.shape}")
    print(f"{'tree':8} {'what':5} {'':>10} {'seconds':>9} {'size':>12} {'x time':>8} {'x size':>8}")
    for name, t in (("abstract", tree), ("mocked", mocked)):
        ours = measure(t)
        base = None
        if not args.no_baseline:
            with _penzai_rendering():
                base = measure(t)
        for what, (secs, size) in ours.items():
            if base is not None:
                b_secs, b_size = base[what]
                print(f"{name:8} {what:5} {'penzai':>10} {b_secs:9.3f} {b_size:12,}")
            ratio = f"{b_secs / secs:8.1f} {b_size / size:8.1f}" if base is not None else ""
            print(f"{name:8} {what:5} {'flaxmock':>10} {secs:9.3f} {size:12,} {ratio}")


if __name__ == "__main__":
    main()
