"""flaxmock for Flax NNX: abstract models, mocks, method interception and summaries.

* :func:`abstract` builds a model without allocating it; :func:`materialize` gives its
  un-mocked parts real values later, computing nothing else; :func:`bind` gives them values
  from a state you have; :func:`load` reads them from a checkpoint (only those), after
  :func:`check_checkpoint` compares its metadata with the model.
* :func:`mock` returns a copy of a model whose selected submodules return random arrays of the
  real output specs (:class:`MockModule`); the rest computes as usual on them. :func:`unmock`
  puts the replaced modules back. :func:`spy` wraps selected submodules in spies
  (:class:`SpyModule`) that run them unchanged and record each call; :func:`replay` runs a
  recorded call again against another model.
* :func:`intercept_methods` is linen's interceptor context for ``nnx.Module``, built-in modules
  included, thread-local and leaving no class patched.
* :func:`eval_shape` (``eval_shape(fun, *args)``, like ``jax.eval_shape``) and :func:`summary`
  evaluate shapes without ever changing the model (unlike ``jax.eval_shape`` over a stateful
  module with ``nnx.scan``/``nnx.vmap`` inside).

The verbs mean what they mean for linen (``flaxmock.mock``, ``flaxmock.materialize``, ...), with
the same argument names; errors are the same classes, exported by both packages where shared.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from flax import nnx
  >>> import flaxmock.nnx
  >>> model = flaxmock.nnx.abstract(nnx.Linear, 4096, 4096, rngs=nnx.Rngs(0))
  >>> mocked = flaxmock.nnx.mock(model, nnx.Linear)
  >>> mocked(jnp.ones((2, 4096))).shape
  (2, 4096)
"""

from flaxmock._core.checkpoint import CheckpointReport as CheckpointReport
from flaxmock._core.errors import FlaxmockWarning as FlaxmockWarning
from flaxmock._core.errors import FrozenMockWarning as FrozenMockWarning
from flaxmock._core.errors import LoadCheckpointError as LoadCheckpointError
from flaxmock._core.errors import MockAttributeError as MockAttributeError
from flaxmock._core.errors import StackSizeError as StackSizeError
from flaxmock._core.errors import UnknownFactoryError as UnknownFactoryError
from flaxmock.nnx._abstract import abstract as abstract
from flaxmock.nnx._abstract import materialize as materialize
from flaxmock.nnx._bind import bind as bind
from flaxmock.nnx._checkpoint import check_checkpoint as check_checkpoint
from flaxmock.nnx._checkpoint import load as load
from flaxmock.nnx._intercept import InterceptorContext as InterceptorContext
from flaxmock.nnx._intercept import intercept_methods as intercept_methods
from flaxmock.nnx._mock import MockCounter as MockCounter
from flaxmock.nnx._mock import MockModule as MockModule
from flaxmock.nnx._mock import MockModuleInfo as MockModuleInfo
from flaxmock.nnx._mock import mock as mock
from flaxmock.nnx._shapes import eval_shape as eval_shape
from flaxmock.nnx._spy import SpyModule as SpyModule
from flaxmock.nnx._spy import SpyState as SpyState
from flaxmock.nnx._spy import replay as replay
from flaxmock.nnx._spy import spy as spy
from flaxmock.nnx._spy import unspy as unspy
from flaxmock.nnx._summary import summary as summary
from flaxmock.nnx._unmock import unmock as unmock

__all__ = [
    "CheckpointReport",
    "FlaxmockWarning",
    "FrozenMockWarning",
    "InterceptorContext",
    "LoadCheckpointError",
    "MockAttributeError",
    "MockCounter",
    "MockModule",
    "MockModuleInfo",
    "SpyModule",
    "SpyState",
    "StackSizeError",
    "UnknownFactoryError",
    "abstract",
    "bind",
    "check_checkpoint",
    "eval_shape",
    "intercept_methods",
    "load",
    "materialize",
    "replay",
    "spy",
    "mock",
    "summary",
    "unmock",
    "unspy",
]
