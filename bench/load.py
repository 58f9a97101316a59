"""Benchmark: loading one block's trained weights from a checkpoint with ``flaxmock.load``.

It writes a checkpoint of the example Llama model at the 8B width (4096 wide, MLP 14336,
vocabulary 128256, bfloat16) with as many blocks as the free disk space allows (at most
``--blocks``, default 4: about 3.7 GiB per format), in two formats: an Orbax directory of the
variables dict (``ocp.PyTreeCheckpointer``) and one safetensors file (written here from the
format's specification). Then, in fresh processes, it converts the model, mocks every block but
one, and loads the rest (embedding, the kept block, final norm, head) with ``flaxmock.load``
from each format, and compares with Orbax restoring the whole checkpoint. It reports:

- bytes read from disk (``read_bytes`` of ``/proc/self/io``; the checkpoint's pages are evicted
  from the page cache with ``posix_fadvise(DONTNEED)`` before each phase) against the un-mocked
  bytes (goal: at most 1.05x);
- peak RSS (``ru_maxrss``) minus the fixed base (import, convert, mock) against the un-mocked
  bytes (goal: at most 1.3x);
- time, against Orbax restoring the whole checkpoint.

Run: ``python bench/load.py`` (``--blocks 2`` for a smaller checkpoint; ``--dir`` to choose
where it is written, removed at the end unless ``--keep-files``). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

from _common import peak_rss_bytes, print_table, run_phase

BLOCK_BYTES = 2 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096)
FIXED_BYTES = 2 * (2 * 128_256 * 4096 + 4096)


def read_bytes() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    return -1


def config(blocks: int, size: str):  # noqa: ANN201
    import jax.numpy as jnp

    from flaxmock.examples import llama

    if size == "tiny":  # a quick check of the script
        return llama.LlamaConfig.tiny(
            n_layers=blocks, tie_embeddings=False, param_dtype=jnp.bfloat16, dtype=jnp.bfloat16
        )
    return llama.LlamaConfig.llama3_8b(n_layers=blocks)


def write_safetensors(file: str, flat: dict) -> None:
    """A safetensors file per its specification, one tensor at a time."""
    import jax.numpy as jnp
    import numpy as np

    names = {np.dtype(jnp.bfloat16): "BF16", np.dtype(np.float32): "F32"}
    header, offset = {}, 0
    for name, array in flat.items():
        size = array.size * array.dtype.itemsize
        header[name] = {
            "dtype": names[np.dtype(array.dtype)],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(file, "wb") as f:
        f.write(len(head).to_bytes(8, "little") + head)
        for array in flat.values():
            f.write(np.asarray(array).tobytes())


def worker(phase: str, blocks: int, keep: int, folder: str, size: str) -> dict:
    start = time.perf_counter()
    import jax
    import jax.numpy as jnp
    import orbax.checkpoint as ocp
    from penzai import pz

    import flaxmock
    from flaxmock.examples import llama

    result: dict = {"import": time.perf_counter() - start}
    model = llama.Llama(config(blocks, size))
    tokens = jax.ShapeDtypeStruct((1, 16), jnp.int32)
    orbax_dir = os.path.join(folder, "orbax")
    st_file = os.path.join(folder, "model.safetensors")

    if phase == "write":
        tree = flaxmock.materialize(flaxmock.unflaxify(model, tokens), jax.random.key(0))
        flat = {
            p.label: flaxmock_unbox(p.value) for p in pz.unbind_params(tree)[1]
        }  # "params/layers_0/attn/q/kernel"
        variables: dict = {}
        for label, value in flat.items():
            node = variables
            *parents, leaf = label.split("/")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        start = time.perf_counter()
        ocp.PyTreeCheckpointer().save(orbax_dir, variables)
        result["orbax_write"] = time.perf_counter() - start
        start = time.perf_counter()
        write_safetensors(st_file, {k.removeprefix("params/"): v for k, v in flat.items()})
        result["safetensors_write"] = time.perf_counter() - start
        os.sync()
        result["bytes"] = sum(v.nbytes for v in flat.values())
        return result

    if phase == "restore-all":
        before = read_bytes()
        start = time.perf_counter()
        restored = ocp.PyTreeCheckpointer().restore(orbax_dir)
        jax.block_until_ready(restored)
        result.update(
            time=time.perf_counter() - start,
            read=read_bytes() - before,
            peak_rss=peak_rss_bytes(),
        )
        return result

    tree = flaxmock.unflaxify(model, tokens)
    kept = f"layers_{keep}"
    mocked = flaxmock.mock(
        tree,
        lambda layer: (
            len(layer.info.scope_path) == 1
            and layer.info.scope_path[0].startswith("layers_")
            and layer.info.scope_path[0] != kept
        ),
    )
    if phase == "base":
        result["peak_rss"] = peak_rss_bytes()
        return result
    path = orbax_dir if phase == "load-orbax" else st_file
    before = read_bytes()
    start = time.perf_counter()
    loaded = flaxmock.load(mocked, path)
    params = [p.value for p in pz.unbind_params(loaded)[1]]
    jax.block_until_ready(params)
    result.update(
        time=time.perf_counter() - start,
        read=read_bytes() - before,
        peak_rss=peak_rss_bytes(),
        unmocked=sum(leaf.nbytes for leaf in jax.tree.leaves(params)),
        arrays=len(params),
    )
    return result


def flaxmock_unbox(value):  # noqa: ANN001, ANN201
    import flax.linen as nn

    return nn.meta.unbox(value)


def evict(folder: str) -> None:
    """Drops the checkpoint's pages from the page cache, so that reads go to the disk."""
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def run_fresh(args: argparse.Namespace, phase: str) -> dict:
    evict(args.dir)
    options = ["--blocks", str(args.blocks), "--keep", str(args.keep), "--dir", args.dir]
    return run_phase(__file__, phase, [*options, "--size", args.size])


def gib(n: float) -> str:
    return f"{n / 2**30:.3f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=4, help="most blocks to write")
    parser.add_argument("--keep", type=int, default=1, help="the block left un-mocked")
    parser.add_argument("--dir", default="/tmp/flaxmock-bench-load")
    parser.add_argument("--keep-files", action="store_true")
    parser.add_argument("--size", default="8b", choices=["8b", "tiny"], help="model width")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(worker(args.phase, args.blocks, args.keep, args.dir, args.size)))
        return

    os.makedirs(args.dir, exist_ok=True)
    free = shutil.disk_usage(args.dir).free
    # Two formats, and half the free space left to others.
    fit = int((free / 4 - FIXED_BYTES) // BLOCK_BYTES)
    args.blocks = min(args.blocks, fit)
    if args.blocks < 2:
        sys.exit(f"only {gib(free)} free in {args.dir}: not enough for two blocks in two formats")
    args.keep = min(args.keep, args.blocks - 1)
    try:
        write = run_fresh(args, "write")
        base = run_fresh(args, "base")
        runs = {p: run_fresh(args, p) for p in ("load-orbax", "load-safetensors", "restore-all")}
    finally:
        if not args.keep_files:
            shutil.rmtree(args.dir, ignore_errors=True)
    unmocked = runs["load-orbax"]["unmocked"]
    rows = [
        ("free disk space", f"{gib(free)} in {args.dir}"),
        (
            "model",
            f"example Llama, {args.size} width, {args.blocks} blocks (chosen to fit the disk)",
        ),
        ("checkpoint (each format)", gib(write["bytes"])),
        ("un-mocked", f"embedding, block layers_{args.keep}, final norm, head"),
        ("un-mocked parameters", f"{gib(unmocked)} ({runs['load-orbax']['arrays']} arrays)"),
        ("fixed base: import + convert + mock", gib(base["peak_rss"])),
    ]
    for phase, label in (("load-orbax", "Orbax"), ("load-safetensors", "safetensors")):
        r = runs[phase]
        rows += [
            (
                f"load, {label}: read from disk",
                f"{gib(r['read'])} = {r['read'] / unmocked:.3f}x un-mocked  (goal <= 1.05)",
            ),
            (
                f"load, {label}: peak - base",
                f"{gib(r['peak_rss'] - base['peak_rss'])} = "
                f"{(r['peak_rss'] - base['peak_rss']) / unmocked:.2f}x un-mocked  (goal <= 1.3)",
            ),
            (f"load, {label}: time", f"{r['time']:.2f} s"),
        ]
    whole = runs["restore-all"]
    rows += [
        ("Orbax restore of everything: read", gib(whole["read"])),
        ("Orbax restore of everything: peak RSS", gib(whole["peak_rss"])),
        ("Orbax restore of everything: time", f"{whole['time']:.2f} s"),
        (
            "write: Orbax / safetensors",
            f"{write['orbax_write']:.1f} s / {write['safetensors_write']:.1f} s",
        ),
    ]
    print_table(rows)


if __name__ == "__main__":
    main()
