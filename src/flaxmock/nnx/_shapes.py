"""Shape inference for NNX modules that never touches the model, and graph walking helpers.

``jax.eval_shape(model, x)`` over a stateful NNX module traces the module's own ``Variable``
objects: with ``nnx.vmap``/``nnx.scan`` inside, older Flax left tracers in the parameters, and
Flax 0.12 fails with a trace-level error. Here every graph node among the function and its
arguments is split into a graph definition and a state (``nnx.split``), the state crosses the
core's filter-style ``eval_shape`` (``flaxmock._core.specs``: Python values static, non-array
outputs captured) as a plain argument, and a *copy* is merged inside the trace; the caller's
objects are never seen by JAX.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
from flax import nnx
from flax.nnx import graphlib

from flaxmock._core import errors as _errors
from flaxmock._core import specs as _specs

#: A path in a module graph: attribute names and list indices.
Path = tuple[Any, ...]


class _Evaluating(threading.local):
    def __init__(self) -> None:
        self.depth = 0


_EVALUATING = _Evaluating()


def evaluating() -> bool:
    """Whether this thread is inside :func:`eval_shape` (where no state is meant to advance)."""
    return _EVALUATING.depth > 0


@contextlib.contextmanager
def _shape_evaluation() -> Any:
    _EVALUATING.depth += 1
    try:
        yield
    finally:
        _EVALUATING.depth -= 1


def path_str(path: Path) -> str:
    """Formats a graph path as ``layers/0/attn`` (``<root>`` for the empty path)."""
    return "/".join(str(k) for k in path) if path else "<root>"


def iter_module_paths(root: Any) -> Iterator[tuple[Path, nnx.Module]]:
    """Yields ``(path, module)`` for every module reachable from ``root``, root first.

    Unlike ``nnx.iter_graph``, a module reachable at several paths (a shared submodule) is
    yielded at each of them; its children are walked only once, at the first.
    """
    seen: set[int] = set()

    def walk(node: Any, path: Path) -> Iterator[tuple[Path, nnx.Module]]:
        if isinstance(node, nnx.Module):
            yield path, node
        if id(node) in seen:
            return
        seen.add(id(node))
        impl = graphlib.get_node_impl(node)
        if impl is None:
            return
        for key, child in impl.node_dict(node).items():
            if isinstance(key, str) and key.startswith("_pytree__"):
                continue
            if graphlib.is_node(child) and not isinstance(child, nnx.Variable):
                yield from walk(child, (*path, key))

    yield from walk(root, ())


def iter_variables(root: Any) -> Iterator[tuple[Path, nnx.Variable]]:
    """Yields ``(path, variable)`` for every ``nnx.Variable`` in ``root``'s graph, once each."""
    for path, node in nnx.iter_graph(root):
        if isinstance(node, nnx.Variable):
            yield tuple(path), node


def iter_arrays(root: Any) -> Iterator[tuple[Path, Any]]:
    """Yields ``(path, value)`` for every plain array of ``root``'s state, once each.

    These are the arrays a module holds outside any ``nnx.Variable``: attributes set to an array
    in ``__init__`` (``self.embed_scale = jnp.sqrt(...)``, ``self.position_ids =
    nnx.data(jnp.arange(n))``), which ``nnx.state`` lists beside the variables. In an abstract
    model they are ``jax.ShapeDtypeStruct``, like its parameters.
    """

    # The state's mapping walked as it is: `nnx.to_flat_state` sorts the paths, which fails
    # where one level mixes names and list indices (`nnx.capture`'s `__captures__` tuples).
    def walk(node: Any, path: Path) -> Iterator[tuple[Path, Any]]:
        for key, value in node.items():
            if isinstance(value, nnx.Variable):
                continue
            if isinstance(value, Mapping):
                yield from walk(value, (*path, key))
            else:
                yield (*path, key), value

    yield from walk(nnx.state(root), ())


def set_arrays(root: Any, values: list[tuple[Path, Any]]) -> None:
    """Sets plain array attributes of ``root``'s graph (in place), by their state paths."""
    nested: dict[Any, Any] = {}
    for path, value in values:
        node = nested
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    nnx.update(root, nnx.State(nested))


def mark_traced_arrays_as_data(root: Any) -> None:
    """Makes every traced array attribute of ``root``'s graph a data attribute (in place).

    Built under a trace (``jax.eval_shape``), ``self.pos = jnp.arange(n)`` assigns a tracer,
    which Flax 0.12 does not recognise as an array: the attribute becomes static (a tracer kept
    in the graph definition), where an eager build makes it data (a leaf of ``nnx.state``).
    Re-assigning it wrapped in ``nnx.data`` gives the structure of the eager build.
    """
    nodes = [node for _, node in nnx.iter_graph(root) if isinstance(node, nnx.Pytree)]
    for node in nodes:
        for name, value in list(vars(node).items()):
            if isinstance(value, jax.core.Tracer):
                setattr(node, name, nnx.data(value))


def bound_method(module: Any, method: str | Callable[..., Any]) -> Callable[..., Any]:
    """``module.<method>`` for a method name, or ``functools.partial(method, module)``."""
    if isinstance(method, str):
        return getattr(module, method)
    return functools.partial(method, module)


def eval_shape(fun: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Returns the output specs of ``fun(*args, **kwargs)``; no module given is changed.

    Like ``jax.eval_shape`` (and :func:`flaxmock.eval_shape`), with NNX objects welcome: every
    graph node (``nnx.Module``, ``nnx.Rngs``, ``nnx.Variable``) in ``fun`` (a module is
    callable: ``eval_shape(model, x)``; a bound method ``model.encode`` is split too) or in the
    arguments is split into its state, which crosses ``jax.eval_shape``, and merged into a
    *copy* inside the trace, as ``nnx.eval_shape`` does. So the model may be real or abstract
    (:func:`flaxmock.nnx.abstract`) and may use ``nnx.vmap``, ``nnx.scan``, ``BatchNorm`` and
    ``Dropout``: every parameter, batch statistic and RNG count of the caller's modules keeps
    its value and no tracer is left behind. Python values in the arguments stay static (so
    ``deterministic=True`` works in a Python ``if``), and non-array outputs come back as they
    are. Nothing is computed or allocated.

    Modules reached only through a closure are not split: pass them as arguments.

    Args:
      fun: The function to evaluate: a module, a bound method, or any function.
      *args: Positional arguments: modules, arrays, ``jax.ShapeDtypeStruct`` and Python values.
      **kwargs: Keyword arguments, as ``args``.

    Returns:
      The output with every array replaced by its ``jax.ShapeDtypeStruct``; non-array outputs
      (Python numbers, strings) as the call returned them.

    Raises:
      InvalidArgumentError: ``fun`` is not callable.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from flaxmock.nnx import eval_shape
      >>> model = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
      >>> eval_shape(model, jax.ShapeDtypeStruct((2, 3), jnp.float32))
      ShapeDtypeStruct(shape=(2, 4), dtype=float32)
      >>> eval_shape(lambda m, x: m(x).sum(), model, jnp.ones((5, 3)))
      ShapeDtypeStruct(shape=(), dtype=float32)
    """
    _specs.check_function(fun)
    owner = getattr(fun, "__self__", None)
    if isinstance(fun, types.MethodType) and isinstance(owner, nnx.Pytree):
        # The module behind a bound method is an argument like any other: split, then copied.
        fun, args = fun.__func__, (owner, *args)
    traced, rebuild = split_inputs((fun, args, kwargs))
    merged: list[Any] = []

    def run(traced: Any) -> Any:
        (call, call_args, call_kwargs), nodes = rebuild(traced)
        merged[:] = [nodes]
        return call(*call_args, **call_kwargs)

    outermost = not evaluating()
    try:
        with _shape_evaluation():
            return _specs.eval_shape(run, traced)
    except Exception as e:
        if outermost and not isinstance(e, _errors.FlaxmockError):
            _note_failing_call(e, lambda: _specs.eval_shape(run, traced), merged)
        raise


def _note_failing_call(error: Exception, rerun: Callable[[], Any], merged: list[Any]) -> None:
    """Names the module call an evaluation failed in (``flaxmock: raised in inner.__call__``).

    JAX's shape errors (``dot_general requires contracting dimensions...``) name no module. Only
    after a failure, the evaluation runs again under interception; the innermost module call
    the exception passes through is the one named, by its path in the modules given (or
    ``<Class>`` for a copy a lifted transform made).
    """
    from flaxmock.nnx import _intercept  # A cycle at import time: _intercept is light.

    found: list[tuple[Any, str]] = []

    def locate(next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
        try:
            return next_fun(*args, **kwargs)
        except Exception:
            if not found:
                found.append((context.module, context.method_name))
            raise

    try:
        with _intercept.intercept_methods(locate), _shape_evaluation():
            rerun()
    except Exception:  # The same failure, expected; only `found` matters.
        pass
    if not found:
        return
    module, method = found[0]
    paths = {
        id(node): path
        for root in merged
        for path, node in iter_module_paths(root[0] if len(root) == 1 else root)
    }
    path = paths.get(id(module))
    name = type(module).__name__
    where = f"<{name}>.{method}" if path is None else f"{path_str(path)}.{method} ({name})"
    _errors.note_raised_in(error, where)


def split_inputs(tree: Any) -> tuple[Any, Callable[[Any], tuple[Any, Any]]]:
    """Splits a pytree of arguments for crossing ``jax.jit``/``jax.eval_shape``.

    Array leaves are traced, NNX objects (``nnx.Rngs``, modules) cross as their state (so a
    traced copy is used and the caller's objects are never touched), and every other leaf
    (ints, functions, strings) stays a static Python value.

    Returns:
      ``(traced, rebuild)``: ``traced`` is a pytree of arrays to pass through the transform,
      and ``rebuild(traced)`` returns ``(tree, nodes)`` inside it, ``nodes`` being the tuple of
      rebuilt NNX objects (pass ``nnx.state(nodes)`` out to update the originals).
    """

    def is_leaf(x: Any) -> bool:
        return isinstance(x, nnx.Pytree | nnx.Variable) or _specs.is_array(x)

    leaves, treedef = jax.tree.flatten(tree, is_leaf=is_leaf)
    node_at = [i for i, leaf in enumerate(leaves) if isinstance(leaf, nnx.Pytree | nnx.Variable)]
    array_at = [i for i, leaf in enumerate(leaves) if _specs.is_array(leaf)]
    graphdef, state = nnx.split(tuple(leaves[i] for i in node_at))
    static = [None if (i in node_at or i in array_at) else leaf for i, leaf in enumerate(leaves)]
    traced = (state, [leaves[i] for i in array_at])

    def rebuild(traced: Any) -> tuple[Any, Any]:
        state, arrays = traced
        nodes = nnx.merge(graphdef, state)
        out = list(static)
        for i, node in zip(node_at, nodes, strict=True):
            out[i] = node
        for i, array in zip(array_at, arrays, strict=True):
            out[i] = array
        return jax.tree.unflatten(treedef, out), nodes

    return traced, rebuild


def split_nodes(tree: Any) -> list[Any]:
    """The NNX objects among ``tree``'s leaves, in the order :func:`split_inputs` uses."""
    leaves = jax.tree.leaves(
        tree, is_leaf=lambda x: isinstance(x, nnx.Pytree | nnx.Variable) or _specs.is_array(x)
    )
    return [leaf for leaf in leaves if isinstance(leaf, nnx.Pytree | nnx.Variable)]
