"""The ``key`` argument of ``materialize`` on both front doors: a key, an int seed or ``nnx.Rngs``.

``flaxmock.materialize(tree, key)`` (linen) and ``flaxmock.nnx.materialize(model, key)`` accept
the same three kinds of randomness, read the same way:

* a ``jax.Array`` PRNG key: a typed scalar key (``jax.random.key(0)``) or a raw ``uint32[2]``
  one (``jax.random.PRNGKey(0)``), wrapped as a typed key (the same bits);
* an int seed: ``jax.random.key(seed)``;
* an ``nnx.Rngs``: on the linen side its ``params`` stream (its ``default`` stream when it has
  no ``params`` one) draws the key, advancing it as ``rngs.params()`` would; the NNX side uses
  the ``nnx.Rngs`` itself.

:func:`reseed` turns one key into streams named like those of an ``nnx.Rngs`` a factory was
given, so that an int seed keeps every stream of it (``nnx.Rngs(0, noise=1)``) and the shape of
forked streams (``nnx.split_rngs``, ``rngs.split(n)``).
"""

from __future__ import annotations

import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxmock._core import errors as _errors

#: The kinds of ``key`` that ``materialize`` accepts, as named in error messages.
KEY_KINDS = "a jax.Array PRNG key (jax.random.key(0)), an int seed or an nnx.Rngs"


def is_seed(key: Any) -> bool:
    """Whether ``key`` is an int seed (a Python or NumPy integer, not a bool)."""
    return isinstance(key, int | np.integer) and not isinstance(key, bool | np.bool_)


def check_seed(seed: Any, *, where: str) -> None:
    """Raises :class:`InvalidArgumentError` unless ``seed`` (of a mock) is an int."""
    if not is_seed(seed):
        raise _errors.InvalidArgumentError(
            f"{where}: seed must be an int (the seed of the mocks' random streams); got "
            f"{_describe(seed)}."
        )


def to_key(key: Any, *, where: str) -> jax.Array:
    """Returns the typed PRNG key ``key`` stands for (see the module docstring).

    Args:
      key: A PRNG key, an int seed or an ``nnx.Rngs``.
      where: The function the key was given to, named in the error message.

    Raises:
      InvalidArgumentError: ``key`` is of none of these kinds, or an ``nnx.Rngs`` with neither a
        ``params`` nor a ``default`` stream.
    """
    if isinstance(key, nnx.Rngs):
        streams = dict(key.items())
        if "params" not in streams and "default" not in streams:
            raise _errors.InvalidArgumentError(
                f"{where}: the nnx.Rngs given as key has no 'params' or 'default' stream to draw "
                f"the parameters' key from (its streams: {', '.join(streams) or 'none'}). Fix: "
                "nnx.Rngs(0) or nnx.Rngs(params=0), or pass a key or an int seed."
            )
        return key.params()
    if is_seed(key):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape == ():
            return key
    elif isinstance(key, jax.Array | np.ndarray) and key.dtype == np.uint32 and key.shape == (2,):
        return jax.random.wrap_key_data(jnp.asarray(key))
    raise _errors.InvalidArgumentError(
        f"{where}: key must be {KEY_KINDS}; got {_describe(key)}. Fix: pass "
        "jax.random.key(0), 0 or nnx.Rngs(0)."
    )


def _describe(key: Any) -> str:
    if isinstance(key, jax.Array | np.ndarray):
        return f"an array of dtype {key.dtype} and shape {tuple(key.shape)}"
    return f"{type(key).__name__} {key!r:.60}"


def stream_shapes(rngs: nnx.Rngs) -> dict[str, tuple[int, ...]]:
    """``{stream name: key shape}`` of an ``nnx.Rngs`` (``()`` unless forked into a batch)."""
    return {name: tuple(np.shape(stream.key.get_value())) for name, stream in rngs.items()}


def reseed(like: nnx.Rngs, key: jax.Array) -> nnx.Rngs:
    """A fresh ``nnx.Rngs`` with the streams and key shapes of ``like``, all drawn from ``key``.

    The stream parameters are drawn from (``params``, else ``default``) gets ``key`` itself, so
    that ``reseed(nnx.Rngs(0), jax.random.key(s))`` equals ``nnx.Rngs(s)``; every other stream
    ``name`` gets ``jax.random.fold_in(key, crc32(name))`` (stable across processes). A forked
    stream, whose keys have a batch shape ``(n, ...)``, gets ``jax.random.split`` of its key
    into that shape.
    """
    shapes = stream_shapes(like)
    main = "params" if "params" in shapes else "default"
    streams = {}
    for name, shape in shapes.items():
        stream_key = key if name == main else jax.random.fold_in(key, _stable_hash(name))
        streams[name] = jax.random.split(stream_key, shape) if shape else stream_key
    return nnx.Rngs(**streams)


def _stable_hash(name: str) -> int:
    # zlib.crc32 is stable across processes (unlike hash()), so reseeded streams reproduce.
    return zlib.crc32(name.encode()) & 0x7FFFFFFF
