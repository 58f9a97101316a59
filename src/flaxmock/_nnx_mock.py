"""NNX mocks: a stand-in module that returns random arrays shaped like the real output.

:func:`mock` copies the model (the input model and its state are untouched) and puts a
:class:`MockModule` in place of every selected submodule. The mock keeps the replaced module as
static data only: its graph definition and *abstract* state (no arrays), so a mocked part of a
real model frees nothing of the user's but holds no array of its own either.

On a call, the mock infers the real output's specs by shape-evaluating the replaced module on
the call's input specs (:func:`flaxmock.nnx.eval_shape`: nothing computed, nothing mutated),
once per input signature (a bounded LRU cache), and fills them with the shared fill rules
(``flaxmock.fill_tree``). Randomness, as in the linen ``MockLayer``: ``jax.random.key(seed)``
folded with a stable hash of the mock's path, the method, and a call counter held as an
``nnx.Variable`` (:class:`MockCounter`), so successive calls differ, also under ``nnx.jit``.
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
import threading
import zlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from flaxmock import _errors, _fill, _nnx_abstract, _nnx_intercept, _nnx_shapes, _specs

#: How many input signatures a mock remembers per method (least recently used are dropped).
SPEC_CACHE_SIZE = 64

#: How many calls ``call_args_list`` remembers (the oldest are dropped).
CALL_HISTORY_SIZE = 1024

#: What ``mock(where=...)`` accepts: a module class, a glob over ``/``-joined paths, or a
#: predicate ``(path, module) -> bool``.
Where = type | str | Callable[[str, Any], bool]


class MockCounter(nnx.Variable):
    """The call counter of a :class:`MockModule`: ``[lane, count]`` (``uint32``).

    ``lane`` tells the layers of a stacked mock apart (``mock(..., stack_size=n)``: the counter
    gets a leading axis of ``n``, sliced by ``nnx.scan``/``nnx.vmap`` like the stack).
    """


@dataclasses.dataclass(frozen=True, eq=False)
class MockInfo:
    """Static data of a :class:`MockModule` (compared and hashed by identity).

    Attributes:
      path: The ``/``-joined path of the replaced module in the model.
      module_type: The replaced module's class.
      graphdef: The replaced module's graph definition.
      state: Its state, every array replaced by a ``jax.ShapeDtypeStruct``.
      method_names: The methods the mock answers (``__call__`` and the public ones).
      seed: The seed of the mock's random stream.
      fill: The fill policy (see ``flaxmock.fill_tree``).
      out: An explicit output spec, or None to infer it.
      stack_size: The length of the leading layer axis of a stacked module, or None.
    """

    path: str
    module_type: type
    graphdef: Any
    state: Any
    method_names: tuple[str, ...]
    seed: int
    fill: Any
    out: Any
    stack_size: int | None
    cache: collections.OrderedDict = dataclasses.field(default_factory=collections.OrderedDict)
    call_args_list: collections.deque = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=CALL_HISTORY_SIZE)
    )
    lock: Any = dataclasses.field(default_factory=threading.Lock)

    @property
    def path_hash(self) -> int:
        # zlib.crc32 is stable across processes (unlike hash()), so seeds reproduce everywhere.
        return zlib.crc32(self.path.encode()) & 0x7FFFFFFF


def _sliced_state(state: Any) -> Any:
    """The abstract state of one layer of a stack: the leading axis dropped."""

    def drop(x: Any) -> Any:
        if isinstance(x, jax.ShapeDtypeStruct) and x.ndim:
            return jax.ShapeDtypeStruct(x.shape[1:], x.dtype)
        return x

    return jax.tree.map(drop, state, is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct))


class MockModule(nnx.Module):
    """An ``nnx.Module`` returning random arrays with the replaced module's output specs.

    Built by :func:`mock`. Calling it (or any public method of the replaced module, e.g.
    ``embed.attend(x)``) returns random arrays of exactly the structure, shapes and dtypes the
    real module returns for these inputs; non-array outputs are returned as the real module
    returns them.

    Attributes:
      info: The static :class:`MockInfo`.
      counter: The :class:`MockCounter` state.
    """

    def __init__(self, info: MockInfo):
        self.info = info
        lanes = jnp.arange(info.stack_size or 1, dtype=jnp.uint32)
        counter = jnp.stack([lanes, jnp.zeros_like(lanes)], axis=-1)
        self.counter = MockCounter(counter if info.stack_size else counter[0])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Returns random arrays with the real ``__call__`` output's specs."""
        return self._emit("__call__", args, kwargs)

    def __getattr__(self, name: str) -> Any:
        info = vars(self).get("info")
        if info is not None and name in info.method_names and name != "__call__":
            return lambda *args, **kwargs: self._emit(name, args, kwargs)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def path(self) -> str:
        """The path of the replaced module."""
        return self.info.path

    @property
    def call_count(self) -> int:
        """How many times the mock was called (eagerly or through ``nnx.jit``)."""
        count = self.counter.get_value()[..., 1]
        return int(count.max()) if count.ndim else int(count)

    @property
    def call_args_list(self) -> list[Any]:
        """The input specs ``(args, kwargs)`` of the latest calls (arrays as specs).

        Recorded when the mock runs in Python: each eager call and each *trace* under
        ``nnx.jit`` (a cached trace records nothing). The latest ``CALL_HISTORY_SIZE`` are kept.
        """
        return list(self.info.call_args_list)

    def _output_spec(self, method: str, args: Any, kwargs: Any) -> Any:
        """The output specs of ``method`` for these arguments, inferred once per signature.

        Raises:
          InvalidArgumentError: a non-array argument cannot be hashed (so cannot be static).
          ShapeInferenceError: the output shape depends on input values.
        """
        info = self.info
        if info.out is not None:
            return info.out
        spec_in = _specs.specs_of((args, kwargs))
        # Inside nnx.scan/vmap over a stack, the counter is one layer's (no leading axis).
        sliced = info.stack_size is not None and self.counter.get_value().ndim == 1
        sig = _specs.signature_of(spec_in)
        if sig is None:
            bad = _specs.unhashable_leaves(spec_in)
            raise _errors.InvalidArgumentError(
                f"{info.path}.{method}: the arguments {', '.join(bad)} are neither arrays nor "
                "hashable Python values, so the mock cannot tell which output shape they lead "
                "to. Fix: pass them as arrays or hashable values (a tuple, not a list)."
            )
        key = (method, sliced, sig)
        with info.lock:
            if key in info.cache:
                info.cache.move_to_end(key)
                return info.cache[key]
        result = self._infer(method, spec_in, sliced)
        with info.lock:
            info.cache[key] = result
            while len(info.cache) > SPEC_CACHE_SIZE:
                info.cache.popitem(last=False)
        return result

    def _infer(self, method: str, spec_in: Any, sliced: bool) -> Any:
        info = self.info
        state = _sliced_state(info.state) if sliced else info.state
        args, kwargs = spec_in
        try:
            # The replaced module's own calls are flaxmock's business, not the user's: no
            # interceptor sees them (a summary shows the mock's row only).
            with _nnx_intercept.suspended():
                original = nnx.merge(info.graphdef, state)
                _nnx_abstract.unguard(original)
                return _nnx_shapes.eval_shape(original, *args, method=method, **kwargs)
        except jax.errors.ConcretizationTypeError as e:
            raise _errors.ShapeInferenceError(
                f"{info.path}.{method}: cannot infer the output shape for inputs "
                f"{spec_in!r:.200}: it depends on input values ({type(e).__name__}), which "
                "shape evaluation cannot see. Fix: give the output spec explicitly, "
                "flaxmock.nnx.mock(model, where, out=jax.ShapeDtypeStruct(shape, dtype))."
            ) from e
        except Exception as e:
            e.add_note(
                f"flaxmock: the real {info.path}.{method} fails on these inputs, so the mock "
                "cannot give their output shape."
            )
            raise

    def _emit(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Returns random arrays shaped like ``method``'s real output, and advances the counter."""
        info = self.info
        out_spec = self._output_spec(method, args, kwargs)
        info.call_args_list.append(_specs.specs_of((args, kwargs)))
        counter = self.counter.get_value()
        self.counter.set_value(counter.at[..., 1].add(1))
        key = jax.random.fold_in(jax.random.key(info.seed), info.path_hash)
        key = jax.random.fold_in(key, info.method_names.index(method))
        if counter.ndim == 1:
            key = jax.random.fold_in(jax.random.fold_in(key, counter[0]), counter[1])
        else:
            # A whole stack called at once (outside scan): one draw for all of it.
            key = jax.random.fold_in(key, counter[0, 1])
        return _fill.fill_tree(key, out_spec, info.fill, where=f"{info.path}.{method}")


def _method_names(cls: type) -> tuple[str, ...]:
    names = {"__call__"}
    for klass in cls.__mro__:
        if isinstance(klass, type) and issubclass(klass, nnx.Module):
            names.update(_nnx_intercept.intercepted_method_names(klass))
    return ("__call__", *sorted(names - {"__call__"}))


def _matcher(where: Where) -> Callable[[str, Any], bool]:
    if isinstance(where, type):
        if not issubclass(where, nnx.Module):
            raise _errors.InvalidSelectorError(
                f"mock(where={where.__name__}): a class selector must be an nnx.Module "
                "subclass, such as nnx.Linear."
            )
        return lambda path, module: isinstance(module, where)
    if isinstance(where, str):
        return lambda path, module: fnmatch.fnmatchcase(path, where)
    if callable(where):
        return where
    raise _errors.InvalidSelectorError(
        f"mock(where={where!r}): expected an nnx.Module class (nnx.Linear), a glob over "
        "'/'-joined paths ('layers/*/attn'), or a predicate (path, module) -> bool."
    )


def _set_child(parent: Any, key: Any, value: Any) -> None:
    if isinstance(key, str) and isinstance(parent, nnx.Pytree):
        setattr(parent, key, value)
    else:
        parent[key] = value


def _get_child(parent: Any, key: Any) -> Any:
    if isinstance(key, str) and isinstance(parent, nnx.Pytree):
        return getattr(parent, key)
    return parent[key]


def mock(
    model: Any,
    where: Where,
    *,
    seed: int = 0,
    fill: _fill.Fill = None,
    out: Any = None,
    stack_size: int | None = None,
) -> Any:
    """Returns a copy of ``model`` with every selected submodule replaced by a :class:`MockModule`.

    A mock returns random arrays with exactly the structure, shapes and dtypes the replaced
    module would return for the same inputs (shape-evaluated once per input signature, never
    computed), drawn anew on every call; the rest of the model computes as usual on them.
    ``model`` and its state are untouched (the copy shares no ``Variable`` with it).

    The outermost selected modules are replaced (a selected module's children are gone with
    it); a module reachable at several paths is replaced by one mock at all of them. On an
    abstract model (:func:`flaxmock.nnx.abstract`), the mocked parts need no values at all;
    what is left abstract is named by the error an eager call raises, and
    :func:`flaxmock.nnx.materialize` gives it values.

    Args:
      model: An ``nnx.Module``, real or abstract.
      where: Which submodules to mock: an ``nnx.Module`` class (``nnx.Linear``, subclasses
        included), a glob over the ``/``-joined attribute path (``"layers/*/attn"``; list
        indices are path components, ``""`` is the root), or a predicate
        ``(path, module) -> bool``.
      seed: The seed of the mocks' random streams; each mock folds in a hash of its path.
      fill: The fill policy: None (normal floats, integers in ``[-100, 100]``, Bernoulli
        bools), ``"zeros"``, ``"ones"``, ``"uniform"``, or ``(key, spec) -> array``.
      out: An explicit output spec (a pytree of ``jax.ShapeDtypeStruct``), for outputs whose
        shape depends on input values and so cannot be inferred.
      stack_size: For a stack of layers built with ``nnx.vmap`` and run inside
        ``nnx.scan``/``nnx.vmap``: the length of its leading layer axis, so that the mock's
        counter is sliced with the stack and each layer draws its own numbers.

    Returns:
      The mocked copy (a :class:`MockModule` itself if ``where`` selects the root).

    Raises:
      SelectNothingError: ``where`` selects no submodule; the message lists available paths.
      InvalidSelectorError: ``where`` is of an unsupported kind.
      UnsupportedDtypeError: ``out`` has a dtype the fill rules do not cover.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from flaxmock.nnx import mock
      >>> model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.relu)
      >>> mocked = mock(model, "layers/0")
      >>> y = mocked(jnp.ones((2, 3)))
      >>> y.shape, bool((y >= 0).all()), mocked.layers[0].call_count
      ((2, 4), True, 1)
    """
    match = _matcher(where)
    if out is not None:
        _fill.check_fillable(out, fill, where="mock(out=...)")
    else:
        _fill.check_fillable({}, fill)
    copy = nnx.clone(model)
    _nnx_abstract.unguard(copy)
    available: list[str] = []
    selected: list[tuple[_nnx_shapes.Path, Any]] = []
    for path, module in _nnx_shapes.iter_module_paths(copy):
        text = "/".join(str(k) for k in path)
        if any(path[: len(p)] == p for p, _ in selected) or isinstance(module, MockModule):
            continue
        available.append(f"{text or '<root>'} ({type(module).__name__})")
        if match(text, module):
            selected.append((path, module))
    if not selected:
        shown = "\n".join(f"  {p}" for p in available[:20])
        more = f"\n  ... and {len(available) - 20} more" if len(available) > 20 else ""
        raise _errors.SelectNothingError(
            f"mock(where={where!r}) selects no module of {type(model).__name__}. Paths are "
            f"'/'-joined attribute names and list indices; available:\n{shown}{more}"
        )
    mocks: dict[int, MockModule] = {}
    for path, module in selected:
        if id(module) not in mocks:
            graphdef, state = nnx.split(module)
            abstract_state = jax.tree.map(
                _specs.spec_of, state, is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct)
            )
            info = MockInfo(
                path=_nnx_shapes.path_str(path),
                module_type=type(module),
                graphdef=graphdef,
                state=abstract_state,
                method_names=_method_names(type(module)),
                seed=seed,
                fill=fill,
                out=out,
                stack_size=stack_size,
            )
            mocks[id(module)] = MockModule(info)
        if not path:
            return mocks[id(module)]
        parent = copy
        for key in path[:-1]:
            parent = _get_child(parent, key)
        _set_child(parent, path[-1], mocks[id(module)])
    _nnx_abstract.guard(copy)
    _nnx_abstract.set_origin(copy, _nnx_abstract.origin_of(model))
    return copy
