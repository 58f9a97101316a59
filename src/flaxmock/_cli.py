"""The command line: ``python -m flaxmock demo``.

``demo`` converts the bundled Llama-style example abstractly, prints its per-call summary, mocks
every attention block and checks the mocked model's output shape, all without allocating a
single parameter.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp


def _peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _summary_rows(table: object, limit: int) -> str:
    text = str(table)
    lines = text.splitlines()
    if limit <= 0 or len(lines) <= limit + 4:
        return text
    head = lines[: limit + 2]
    tail = lines[-2:]
    return "\n".join(head + [f"... ({len(lines) - limit - 4} more rows) ..."] + tail)


def demo(size: str = "8b", seq_len: int = 16, rows: int = 40) -> int:
    """Converts the example model at ``size`` abstractly and prints its summary."""
    import flax.linen as nn

    import flaxmock
    from flaxmock.examples import llama

    config = llama.LlamaConfig.preset(size)
    model = llama.Llama(config)
    tokens = jax.ShapeDtypeStruct((1, seq_len), jnp.int32)
    print(f"flaxmock demo: Llama-style decoder, preset {size!r}, tokens {tokens.shape}")
    start = time.perf_counter()
    tree = flaxmock.unflaxify(model, tokens)
    convert_s = time.perf_counter() - start
    table = flaxmock.summary(tree, title=f"Llama {size}")
    print(_summary_rows(table, rows))
    print(
        f"\nconverted in {convert_s:.2f} s; {table.total_params:,} parameters "
        f"({table.total_bytes / 2**30:.2f} GiB) described, none allocated; "
        f"peak RSS {_peak_rss_mib():.0f} MiB"
    )
    start = time.perf_counter()
    mocked = flaxmock.mock(tree, llama.Attention)
    mocked = flaxmock.mock(mocked, [llama.MLP, nn.Embed])
    out = flaxmock.eval_shape(flaxmock.call, mocked, tokens)
    print(
        f"every attention, MLP and embedding call mocked: output {out.shape} {out.dtype} "
        f"(eval_shape, {time.perf_counter() - start:.2f} s)"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m flaxmock``."""
    parser = argparse.ArgumentParser(prog="flaxmock", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="convert the bundled example model and summarise it")
    p_demo.add_argument("--size", default="8b", choices=["tiny", "8b", "70b"])
    p_demo.add_argument("--seq-len", type=int, default=16)
    p_demo.add_argument("--rows", type=int, default=40, help="rows to show (0: all)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.size, args.seq_len, args.rows)
    return 2  # pragma: no cover (argparse rejects other commands)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
