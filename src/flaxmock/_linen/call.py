"""Calling a converted or patched tree as ``module.apply`` is called."""

from __future__ import annotations

from typing import Any

import flax
from penzai import pz
from penzai.toolshed.unflaxify import ArgsAndKwargs

from flaxmock._core import errors as _errors
from flaxmock._core import specs as _specs
from flaxmock._linen import dispatch as _dispatch
from flaxmock._linen import layer as _layer
from flaxmock._linen import variables as _vars


def call(tree: Any, *args: Any, mutable: Any = False, rngs: Any = None, **kwargs: Any) -> Any:
    """Calls a converted tree as ``module.apply(variables, *args, **kwargs)`` would be called.

    Un-mocked layers run their Flax code with their own variables; mocked layers emit random
    values; the result has exactly the structure ``module.apply`` returns.

    As with ``module.apply``, the tree is never changed: with ``mutable``, the updated
    collections are returned, and the tree's ``pz.StateVariable``s (``batch_stats``, a decode
    ``cache``) keep their values; give the returned ones to :func:`flaxmock.bind` for the next
    step. (Only the mocks' call counters advance, so that the next call draws new numbers.)

    A tree with real values holds ``pz.Parameter`` and ``pz.StateVariable`` objects, which are
    not pytrees: compile with :func:`flaxmock.jit` (penzai's ``pz.variable_jit``), not
    ``jax.jit`` with the tree as an argument (which fails with a ``TypeError`` naming
    ``Parameter``; ``jax.jit`` of a function that closes over the tree works), and take
    gradients with respect to the parameters ``pz.unbind_params`` returns (see the examples).

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
      InvalidArgumentError: ``tree`` is not a penzai layer.
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

      Compiled, and differentiated with respect to the parameters, the penzai way:

      >>> from penzai import pz
      >>> bool((pz.variable_jit(flaxmock.call)(tree, x) == model.apply(variables, x)).all())
      True
      >>> unbound, params = pz.unbind_params(tree, freeze=True)
      >>> def loss(params):
      ...     return flaxmock.call(pz.bind_variables(unbound, params), x).sum()
      >>> grads = jax.grad(loss)(params)
      >>> sorted((g.label, g.value.shape) for g in grads)
      [('params/bias', (3,)), ('params/kernel', (4, 3))]
    """
    if not isinstance(tree, pz.nn.Layer):
        raise _errors.InvalidArgumentError(
            f"call expects a converted tree (from flaxmock.unflaxify, possibly mocked), got "
            f"{type(tree).__name__}."
        )
    if isinstance(tree, _layer.FlaxCallLayer):
        return _dispatch.run(tree, args, kwargs, mutable=mutable, rngs=rngs)
    call_args = ArgsAndKwargs(args=args, kwargs=kwargs)
    if not isinstance(tree, _layer.ReplacementLayer):
        return tree(call_args)
    # A replacement at the root (a model mocked whole): what it sows is collected here, in the
    # structure ``module.apply(..., mutable=...)`` returns.
    collections: dict[str, Any] = {}
    out = tree.run_replaced(call_args, _layer.Invocation(collections=collections, mutable=mutable))
    if mutable is False:
        return out
    # What ``module.apply`` would return besides: the variables the mock keeps (those that
    # held values when it was mocked; their values are as they were), in the collections asked.
    # State the mock holds a value for is not drawn: it comes back here, leaf by leaf.
    drawn = _vars.flatten_variables(collections)
    for (col, path), var in _vars.flatten_variables(tree.kept_variables()).items():
        if (col, path) not in drawn and flax.core.scope.in_filter(mutable, col):
            _vars.set_in(collections.setdefault(col, {}), path, _vars.value_of(var))
    return out, _dispatch.with_params_collection(collections, mutable, tree)


def jit(fun: Any, **jit_kwargs: Any) -> Any:
    """``jax.jit`` for functions that take converted trees: penzai's ``pz.variable_jit``.

    A tree with real values holds ``pz.Parameter`` and ``pz.StateVariable`` objects, and every
    mock holds its call counter as a ``pz.StateVariable``: these are not pytrees, so plain
    ``jax.jit(fun)(tree, x)`` fails with a ``TypeError`` naming ``Parameter`` or
    ``StateVariable``. This function is ``pz.variable_jit``: the variables in the arguments
    cross the compiled call as its inputs and outputs, so the tree's state advances as an eager
    call would (each call of a mock draws anew, ``call_count`` counts it) and the parameters
    are not baked into the compiled code.

    ``jax.jit`` of a function that *closes over* a tree also works: the parameters become
    constants of the compiled code, and each mock takes its count on the host each time the
    code runs, so its draws stay fresh (the same holds in a ``lax.fori_loop``/``while_loop``
    body).

    Args:
      fun: The function to compile; trees may be among its arguments.
      **jit_kwargs: As for ``jax.jit`` (``static_argnames``, ``donate_argnames``...).

    Returns:
      The compiled function.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, flaxmock
      >>> x = jnp.ones((2, 4))
      >>> tree = flaxmock.mock(flaxmock.unflaxify(nn.Dense(3), x), "")
      >>> step = flaxmock.jit(flaxmock.call)
      >>> first, second = step(tree, x), step(tree, x)
      >>> bool((first == second).all()), tree.call_count
      (False, 2)
    """
    if not callable(fun):
        raise _errors.InvalidArgumentError(
            f"jit(fun, **jit_kwargs) takes the function to compile, as jax.jit does; got a "
            f"{type(fun).__name__}. Fix: flaxmock.jit(flaxmock.call)(tree, *args)."
        )
    return pz.variable_jit(fun, **jit_kwargs)


def eval_shape(fun: Any, *args: Any, **kwargs: Any) -> Any:
    """``jax.eval_shape`` for functions of converted trees, mocks included.

    Like ``jax.eval_shape``, but penzai variables may appear in ``fun`` and the arguments (a
    bound tree's ``pz.Parameter`` and ``pz.StateVariable`` objects, the mocks' call counters:
    plain ``jax.eval_shape`` fails on them with a ``TypeError``), Python values in the arguments
    stay static, and Python values in the output (``None``, ints, strings) come back as they
    are. No variable is changed: the trace sees copies of them.

    Args:
      fun: The function to evaluate (a converted tree is callable too).
      *args: Its positional arguments (trees, arrays, ``jax.ShapeDtypeStruct`` specs, Python
        values).
      **kwargs: Its keyword arguments.

    Returns:
      ``fun``'s output with every array leaf replaced by its ``jax.ShapeDtypeStruct``.

    Raises:
      InvalidArgumentError: ``fun`` is not callable.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, flaxmock
      >>> tree = flaxmock.unflaxify(nn.Dense(3), jax.ShapeDtypeStruct((2, 4), jnp.float32))
      >>> flaxmock.eval_shape(flaxmock.call, tree, jax.ShapeDtypeStruct((5, 4), jnp.float32))
      ShapeDtypeStruct(shape=(5, 3), dtype=float32)
    """
    # penzai variables (a bound tree's parameters and state, the mocks' call counters) are not
    # pytrees: they cross the trace frozen, and the function sees them bound to copies, so the
    # caller's counters do not advance.
    _specs.check_function(fun)
    (fun, args, kwargs), state = pz.unbind_variables((fun, args, kwargs), freeze=True)

    def bound(fun: Any, args: Any, kwargs: Any, state: list[Any]) -> Any:
        live = [s.unfreeze_as_copy() for s in state]
        fun, args, kwargs = pz.bind_variables((fun, args, kwargs), live)
        return fun(*args, **kwargs)

    return _specs.eval_shape(bound, fun, args, kwargs, list(state))
