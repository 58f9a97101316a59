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
