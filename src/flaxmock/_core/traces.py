"""Fresh JAX traces: a context in which JAX reuses no trace made outside it.

JAX caches the trace of a ``jax.jit``/``nnx.jit``/``nn.jit`` function by the function, its
static arguments and its input shapes, and runs no Python when it reuses one. flaxmock traces
models with its own code swapped in (NNX interceptors, the cost pricer's stubs); a trace made
that way must never be reused by the user's next real call, and a trace the user made before
must not hide calls from an interceptor. :func:`fresh_trace` sets a JAX *user context*
(``jax.make_user_context``, part of every trace and compilation cache key) to a value never
used before, for as long as it is open; afterwards the previous value is back, so the user's
own cached traces stay cached, and nothing global is cleared.
"""

from __future__ import annotations

import contextlib
import itertools

import jax

# Made once, at import (making one is not thread-safe).
_FRESH_TRACE = jax.make_user_context(None)
_TOKENS = itertools.count(1)


def fresh_trace() -> contextlib.AbstractContextManager[None]:
    """A context in which JAX reuses no trace made outside it (a fresh user-context value)."""
    return _FRESH_TRACE(("flaxmock.trace", next(_TOKENS)))
