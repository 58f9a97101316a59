"""Bounded-memory random generation on CPU: threefry lowered unrolled while we compile.

On CPU, JAX lowers the threefry hash (the default PRNG) as a ``fori_loop`` of five steps, so
XLA cannot fuse it with what consumes the bits: every ``jax.random`` call over ``n`` elements
holds four ``uint32[n]`` buffers (the loop state, double-buffered). Initialising a
``bfloat16[128256, 4096]`` embedding takes 8.4 GB of scratch for a 1 GB result. GPU and TPU
lowerings are unrolled (or a kernel) and fuse into the consumer with no scratch at all.

:func:`compile_fused` lowers a jitted function with the unrolled lowering JAX itself uses on
other platforms. Both lowerings compute the same hash, so the values are bit-identical (tested);
only XLA's scheduling changes: the bits, the initializer's arithmetic and the cast fuse into one
loop, and the scratch vanishes.

The lowering rule is JAX's private registry entry; it is swapped only while lowering, under a
lock, and restored even when lowering raises. Another thread that lowers at the same moment
gets the unrolled rule too, which changes nothing but its memory use. Where the registry is not
found (another JAX version), functions compile as usual.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

_LOCK = threading.RLock()


def _registry() -> tuple[dict[Any, Any], Any, Any] | None:
    """``(cpu rules, threefry primitive, unrolled rule entry)``, or None if not found."""
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32 as tf

        rules = mlir._platform_specific_lowerings["cpu"]
        current = rules[tf.threefry2x32_p]
        unrolled = tf._threefry2x32_lowering_rule
        entry = type(current)(unrolled, current.inline)
    except (ImportError, AttributeError, KeyError, TypeError):
        return None
    return rules, tf.threefry2x32_p, entry


@contextlib.contextmanager
def unrolled_threefry() -> Iterator[None]:
    """Lowers threefry unrolled on CPU inside the context; restores JAX's rule on exit."""
    found = _registry()
    if found is None:
        yield
        return
    rules, prim, entry = found
    with _LOCK:
        saved = rules[prim]
        rules[prim] = entry
        try:
            yield
        finally:
            rules[prim] = saved


def compile_fused(jitted: Any, *args: Any) -> Any:
    """``jitted.lower(*args).compile()`` with threefry unrolled; call the result on ``args``."""
    with unrolled_threefry():
        lowered = jitted.lower(*args)
    return lowered.compile()


# Threefry-2x32 on the host, for key schedules whose every input is known there.
_MASK = 0xFFFFFFFF
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry2x32(key: tuple[int, int], count: tuple[int, int]) -> tuple[int, int]:
    """The threefry-2x32 hash of one pair of counts, as JAX computes it (20 rounds)."""
    k0, k1 = key
    ks = (k0, k1, k0 ^ k1 ^ 0x1BD11BDA)
    x0, x1 = (count[0] + ks[0]) & _MASK, (count[1] + ks[1]) & _MASK
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = (x0 + x1) & _MASK
            x1 = (((x1 << r) | (x1 >> (32 - r))) & _MASK) ^ x0
        x0 = (x0 + ks[(i + 1) % 3]) & _MASK
        x1 = (x1 + ks[(i + 2) % 3] + i + 1) & _MASK
    return x0, x1


def host_keys_supported() -> bool:
    """Whether :func:`fold_in` here gives ``jax.random``'s keys: the default threefry, split
    as ``jax_threefry_partitionable`` does (a split's key ``i`` is the fold-in of ``i``)."""
    import jax

    config: Any = jax.config
    impl = str(getattr(config, "jax_default_prng_impl", ""))
    return impl == "threefry2x32" and bool(getattr(config, "jax_threefry_partitionable", False))


def seed_key(seed: int) -> tuple[int, int]:
    """``jax.random.key(seed)``'s data for a uint32 seed."""
    return 0, seed & _MASK


def fold_in(key: tuple[int, int], data: int) -> tuple[int, int]:
    """``jax.random.fold_in(key, data)`` for a uint32 ``data``; also ``split(key)[data]``."""
    return threefry2x32(key, (0, data & _MASK))
