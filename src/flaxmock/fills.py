"""Fills that respect meaning: valid indices, non-negative values, probabilities, copies.

A mock fills its outputs with random values of the real shapes and dtypes. Where a value has a
meaning the model relies on (expert indices below the number of experts, variances that are
not negative, attention weights that sum to one), give the mock one of these fills, for the
whole output or, with a dict, per output path:

>>> import jax, jax.numpy as jnp, flax.linen as nn, flaxmock
>>> from flaxmock import fills
>>> class Router(nn.Module):
...     @nn.compact
...     def __call__(self, x):
...         logits = nn.Dense(8)(x)
...         weights, indices = jax.lax.top_k(jax.nn.softmax(logits), 2)
...         return weights / weights.sum(-1, keepdims=True), indices
>>> tree = flaxmock.unflaxify(Router(), jnp.ones((4, 16)))
>>> mocked = flaxmock.mock(
...     tree, "", fill={"0": fills.probabilities(), "1": fills.indices(8)}
... )
>>> weights, indices = flaxmock.call(mocked, jnp.ones((4, 16)))
>>> bool((indices >= 0).all() and (indices < 8).all()), bool(jnp.allclose(weights.sum(-1), 1))
(True, True)

All of them (and fill dicts) work for :func:`flaxmock.nnx.mock` and :class:`flaxmock.Mocker`
too: every mock gives its draw the call's arguments, which ``copy_input`` copies. They live in
``flaxmock._core.fill``, where the default rules are.
"""

from flaxmock._core.fill import copy_input as copy_input
from flaxmock._core.fill import indices as indices
from flaxmock._core.fill import nonnegative as nonnegative
from flaxmock._core.fill import probabilities as probabilities

__all__ = ["copy_input", "indices", "nonnegative", "probabilities"]
