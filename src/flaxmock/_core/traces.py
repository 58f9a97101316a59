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
from typing import Any

import jax

# Made once, at import (making one is not thread-safe).
_FRESH_TRACE = jax.make_user_context(None)
_TOKENS = itertools.count(1)


def fresh_trace() -> contextlib.AbstractContextManager[None]:
    """A context in which JAX reuses no trace made outside it (a fresh user-context value)."""
    return _FRESH_TRACE(("flaxmock.trace", next(_TOKENS)))


def inside_checkpoint() -> bool:
    """Whether the code running is being traced for ``jax.checkpoint`` (``jax.remat``), at any
    depth (a loop body inside a checkpointed function included).

    A host callback (:func:`flaxmock._core.mockcore.host_count`) cannot be staged there: JAX
    refuses effects when it differentiates a checkpointed function (``NotImplementedError:
    Effects not supported in partial-eval of checkpoint/remat``), long after the trace. JAX has
    no public way to ask; this walks its trace chain (``jax._src.core.trace_ctx``, each trace's
    ``parent_trace`` and ``frame.debug_info.traced_for``). Should that change, the answer is
    True: the caller then takes the path that is safe everywhere.
    """
    try:
        from jax._src import core as jax_core

        trace: Any = jax_core.trace_ctx.trace
        while trace is not None:
            debug = getattr(getattr(trace, "frame", None), "debug_info", None)
            if "checkpoint" in str(getattr(debug, "traced_for", "")):
                return True
            trace = getattr(trace, "parent_trace", None)
        return False
    except Exception:  # JAX's private trace state changed shape: be safe.
        return True
