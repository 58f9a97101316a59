"""Building blocks shared by the third-party-style zoos (``zoo_wild_*.py``, ``zoo_nnx_wild.py``).

What lives here is never the point of a case: random inputs, a two-layer perceptron, head
splitting and masks for hand-written attention, and fixed position codes. The idioms that a
case exists to exercise stay in its own module, next to the table that names them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class Inputs:
    """Deterministic example arguments, one generator per zoo module."""

    def __init__(self, seed: int):
        self._rng = np.random.default_rng(seed)

    def normal(self, *shape: int, dtype: Any = jnp.float32) -> jax.Array:
        return jnp.asarray(self._rng.standard_normal(shape), dtype)

    def ints(self, low: int, high: int, *shape: int) -> jax.Array:
        """Integers in ``[low, high)`` as int32 (token ids, labels, timesteps)."""
        return jnp.asarray(self._rng.integers(low, high, shape), jnp.int32)

    def uniform(self, low: float, high: float, *shape: int) -> jax.Array:
        return jnp.asarray(self._rng.uniform(low, high, shape), jnp.float32)


class TwoLayer(nn.Module):
    """``dense(hidden)``, activation, optional dropout, ``dense(out)`` (the input width if unset).

    Attributes:
      hidden: Width of the inner layer.
      out: Width of the result; ``None`` keeps the input's.
      act: Activation between the two layers.
      rate: Dropout rate after the activation; 0 adds no ``nn.Dropout``.
      dense: Builds each layer as ``dense(features, name=...)``: a ``functools.partial`` of
        ``nn.Dense`` (or of another class) carries initialisers, dtypes and axis names.
    """

    hidden: int
    out: int | None = None
    act: Callable = nn.gelu
    rate: float = 0.0
    dense: Callable[..., nn.Module] = nn.Dense

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        h = self.act(self.dense(self.hidden, name="up")(x))
        if self.rate:
            h = nn.Dropout(self.rate)(h, deterministic=deterministic)
        return self.dense(self.out or x.shape[-1], name="down")(h)


def split_heads(x: jax.Array, heads: int) -> jax.Array:
    """``(..., length, heads * d)`` to ``(..., length, heads, d)``."""
    return x.reshape(*x.shape[:-1], heads, x.shape[-1] // heads)


def merge_heads(x: jax.Array) -> jax.Array:
    """``(..., length, heads, d)`` to ``(..., length, heads * d)``."""
    return x.reshape(*x.shape[:-2], -1)


def padding_bias(keep: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
    """An additive bias ``(batch, 1, 1, length)``: 0 where ``keep`` is nonzero, very negative
    elsewhere."""
    big = jnp.finfo(dtype).min
    return jnp.where(keep[:, None, None, :] > 0, 0.0, big).astype(dtype)


def lower_triangle(length: int) -> jax.Array:
    """A causal boolean mask ``(1, 1, length, length)``."""
    return jnp.tril(jnp.ones((length, length), bool))[None, None]


def sinusoid(positions: jax.Array, width: int, period: float = 10_000.0) -> jax.Array:
    """``sin`` and ``cos`` features of (integer or float) positions, ``(..., width)``."""
    half = width // 2
    rates = jnp.exp(-math.log(period) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions.astype(jnp.float32)[..., None] * rates
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def sincos_grid(rows: int, cols: int, width: int) -> jax.Array:
    """Fixed 2-D position codes for a ``rows x cols`` grid of tokens, ``(1, rows*cols, width)``."""
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    codes = [sinusoid(jnp.asarray(a.reshape(-1)), width // 2) for a in (c, r)]
    return jnp.concatenate(codes, axis=-1)[None]


def rotate(x: jax.Array, positions: jax.Array, period: float = 10_000.0) -> jax.Array:
    """Rotary position code on ``x`` of shape ``(batch, length, heads, d)``."""
    angles = sinusoid(positions, x.shape[-1], period)[:, :, None, :]
    half = x.shape[-1] // 2
    sin, cos = angles[..., :half], angles[..., half:]
    a, b = x[..., :half], x[..., half:]
    return jnp.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1).astype(x.dtype)


def rms_scale(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """``x`` divided by its root mean square over the last axis, computed in float32."""
    x32 = x.astype(jnp.float32)
    return x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
