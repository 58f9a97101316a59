"""Calling a converted or patched tree as ``module.apply`` is called."""

from __future__ import annotations

from typing import Any

import jax
from penzai import pz
from penzai.toolshed.unflaxify import ArgsAndKwargs

from flaxmock._core import specs as _specs
from flaxmock._linen import dispatch as _dispatch
from flaxmock._linen import layer as _layer


def call(tree: Any, *args: Any, mutable: Any = False, rngs: Any = None, **kwargs: Any) -> Any:
    """Calls a converted tree as ``module.apply(variables, *args, **kwargs)`` would be called.

    Un-mocked layers run their Flax code with their own variables; mocked layers emit random
    values; the result has exactly the structure ``module.apply`` returns.

    Args:
      tree: A tree from :func:`flaxmock.unflaxify`, possibly patched (mocks, any penzai layer).
      *args: Positional arguments of the call.
      mutable: As for ``module.apply``: the collections to return (``["intermediates"]``),
        ``True`` for all, ``False`` for none.
      rngs: As for ``module.apply``. When omitted, a fixed key serves every stream.
      **kwargs: Keyword arguments of the call.

    Returns:
      The output, or ``(output, collections)`` when ``mutable`` is not ``False``, exactly as
      ``module.apply`` returns them.

    Raises:
      AbstractParameterError: an un-mocked layer still has abstract parameters.
      CallStructureError: the model made a submodule call not seen at conversion time.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, flaxmock
      >>> model = nn.Dense(3)
      >>> x = jnp.ones((2, 4))
      >>> variables = model.init(jax.random.key(0), x)
      >>> tree = flaxmock.unflaxify(model, x, variables=variables)
      >>> bool((flaxmock.call(tree, x) == model.apply(variables, x)).all())
      True
    """
    if isinstance(tree, _layer.FlaxCallLayer):
        return _dispatch.run(tree, args, kwargs, mutable=mutable, rngs=rngs)
    call_args = ArgsAndKwargs(args=args, kwargs=kwargs)
    if not isinstance(tree, _layer.ReplacementLayer):
        return tree(call_args)
    # A replacement at the root (a model mocked whole): what it sows is collected here, in the
    # structure ``module.apply(..., mutable=...)`` returns.
    collections: dict[str, Any] = {}
    out = tree.run_replaced(call_args, _layer.Invocation(collections=collections, mutable=mutable))
    return out if mutable is False else (out, collections)


def eval_shape(fun: Any, *args: Any, **kwargs: Any) -> Any:
    """``jax.eval_shape`` for functions of converted trees, mocks included.

    Like ``jax.eval_shape``, but penzai state (the mocks' call counters) may appear in the
    arguments, Python values in the arguments stay static, and Python values in the output
    (``None``, ints, strings) come back as they are. State is not advanced.

    Args:
      fun: The function to evaluate.
      *args: Its positional arguments (trees, arrays, ``jax.ShapeDtypeStruct`` specs, Python
        values).
      **kwargs: Its keyword arguments.

    Returns:
      ``fun``'s output with every array leaf replaced by its ``jax.ShapeDtypeStruct``.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, flaxmock
      >>> tree = flaxmock.unflaxify(nn.Dense(3), jax.ShapeDtypeStruct((2, 4), jnp.float32))
      >>> flaxmock.eval_shape(flaxmock.call, tree, jax.ShapeDtypeStruct((5, 4), jnp.float32))
      ShapeDtypeStruct(shape=(5, 3), dtype=float32)
    """
    (args, kwargs), state = pz.unbind_state_vars((args, kwargs), freeze=True)
    arrays, rebuild = _specs.partition((args, kwargs))
    # ``jax.eval_shape`` turns a returned Python int into a weak int32 array and fails on a
    # str: only the output's arrays cross it; the rest is captured and put back.
    rebuild_out: list[Any] = []

    def run(arrays: list[Any], state: list[Any]) -> Any:
        a, kw = rebuild(arrays)
        live = [s.unfreeze_as_copy() for s in state]
        a, kw = pz.bind_variables((a, kw), live)
        out_arrays, rebuild_output = _specs.partition(fun(*a, **kw))
        rebuild_out.append(rebuild_output)
        return out_arrays

    out_specs = jax.eval_shape(run, arrays, list(state))
    return rebuild_out[0](out_specs)
