"""Abstract NNX models: built without allocating, guarded against eager calls, materialized late.

* :func:`abstract` builds a model under ``nnx.eval_shape``: every array is a
  ``jax.ShapeDtypeStruct``. It remembers how the model was built (factory and arguments) so that
  :func:`materialize` can build real values later.
* An eager call of an abstract module would fail deep inside a layer with
  ``'ShapeDtypeStruct' object is not subscriptable``. Instead each module of such a model whose
  subtree holds abstract values is given a *guard* class: a subclass created once per class,
  with the same name, whose methods first check that no value of the subtree is still abstract
  and raise :class:`~flaxmock.AbstractParameterError` naming them all. Under ``nnx.eval_shape``
  or ``flaxmock.nnx.eval_shape`` the values are tracers, so the check passes and shape
  evaluation works. ``isinstance`` is unchanged; ``type(module)`` is the guard subclass until
  :func:`materialize` restores the original class.
* :func:`materialize` re-runs the factory under ``jax.jit`` returning only the values still
  abstract: XLA removes the initialisation of everything else (mocked parts are never
  computed), and the values land in a copy of the model.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from flaxmock._core import errors as _errors
from flaxmock._core import keys as _keys
from flaxmock._core import specs as _specs
from flaxmock.nnx import _intercept as _nnx_intercept
from flaxmock.nnx import _shapes as _nnx_shapes

# model -> (factory, args, kwargs): how an abstract model was built. Weak, so that models are
# freed normally; copies made by flaxmock (mock, materialize) carry the entry over.
_ORIGINS: weakref.WeakKeyDictionary[Any, tuple[Callable[..., Any], tuple, dict]] = (
    weakref.WeakKeyDictionary()
)

_GUARDS: dict[type, type] = {}
_GUARDS_LOCK = threading.Lock()
_GUARD_BASE_ATTR = "_flaxmock_guarded_base"


class _Checking(threading.local):
    def __init__(self) -> None:
        # Inside a guarded call whose check passed, nested guarded calls need no check.
        self.depth = 0


_CHECKING = _Checking()


def public_type(module: Any) -> type:
    """The class of ``module`` as its author wrote it (the guard subclass's base)."""
    cls = type(module)
    return vars(cls).get(_GUARD_BASE_ATTR, cls)


#: A class attribute of modules whose abstract values do not block a call (a mock holds the
#: state of the module it replaces, abstract until materialized, and never reads it unknown).
HOLDS_ABSTRACT_ATTR = "_flaxmock_holds_abstract_state"


def abstract_values(module: Any, *, held: bool = True) -> list[tuple[_nnx_shapes.Path, Any]]:
    """``(path, holder)`` of every abstract value of ``module``'s graph.

    ``holder`` is the ``nnx.Variable`` holding the value, or, for a plain array attribute
    (:func:`flaxmock.nnx._shapes.iter_arrays`), the ``jax.ShapeDtypeStruct`` itself.

    Args:
      module: The root.
      held: Include the values held by mocks (state of the module a mock replaced), which
        ``materialize`` gives values to but which do not keep a call from running.
    """
    found: list[tuple[_nnx_shapes.Path, Any]] = [
        (path, var)
        for path, var in _nnx_shapes.iter_variables(module)
        if _specs.is_spec(var.get_value())
    ]
    found += [
        (path, leaf) for path, leaf in _nnx_shapes.iter_arrays(module) if _specs.is_spec(leaf)
    ]
    if held or not found:
        return found
    holders = [
        path
        for path, node in _nnx_shapes.iter_module_paths(module)
        if getattr(type(node), HOLDS_ABSTRACT_ATTR, False)
    ]
    return [
        (path, var)
        for path, var in found
        if not any(path[: len(holder)] == holder for holder in holders)
    ]


def _owners_text(found: list[tuple[_nnx_shapes.Path, Any]], limit: int = 12) -> str:
    owners: dict[str, list[str]] = {}
    for path, holder in found:
        name = str(path[-1]) + ("" if isinstance(holder, nnx.Variable) else " (array attribute)")
        owners.setdefault(_nnx_shapes.path_str(path[:-1]), []).append(name)
    lines = [f"  {owner}: {', '.join(names)}" for owner, names in list(owners.items())[:limit]]
    if len(owners) > limit:
        lines.append(f"  ... and {len(owners) - limit} more modules")
    return "\n".join(lines)


def _abstract_error(module: Any, method: str, found: list[Any]) -> _errors.AbstractParameterError:
    name = public_type(module).__name__
    return _errors.AbstractParameterError(
        f"Cannot call {name}.{method}: these parts of the model are neither mocked nor "
        f"materialized, their values are still abstract (jax.ShapeDtypeStruct); paths are "
        f"relative to the called {name}:\n{_owners_text(found)}\n"
        "Fix it in one of these ways:\n"
        "  1. mock them too: model = flaxmock.nnx.mock(model, where) with a class, a path "
        "glob or a predicate selecting them;\n"
        "  2. give them real values: model = flaxmock.nnx.materialize(model, nnx.Rngs(0)) "
        "(array attributes set in __init__ get the values the constructor computes), or "
        "flaxmock.nnx.bind(model, nnx.state(real_model));\n"
        "  3. only evaluate shapes: flaxmock.nnx.eval_shape(model, *args)."
    )


def _make_guarded(base: type, name: str) -> Callable[..., Any]:
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        # Look the method up on the base at call time: it may be wrapped by intercept_methods.
        method = getattr(base, name)
        if _CHECKING.depth:
            return method(self, *args, **kwargs)
        found = abstract_values(self, held=False)
        if found:
            raise _abstract_error(self, name, found)
        _CHECKING.depth += 1
        try:
            return method(self, *args, **kwargs)
        finally:
            _CHECKING.depth -= 1

    guarded.__name__ = name
    guarded.__qualname__ = f"{base.__qualname__}.{name}"
    return guarded


def _guard_class(base: type) -> type:
    with _GUARDS_LOCK:
        if base in _GUARDS:
            return _GUARDS[base]
        namespace: dict[str, Any] = {
            name: _make_guarded(base, name)
            for name in _nnx_intercept.method_names(base)
            if name in dir(base)
        }
        namespace[_GUARD_BASE_ATTR] = base
        namespace[_nnx_intercept.NO_INTERCEPT_ATTR] = True
        namespace["__module__"] = base.__module__
        namespace["__qualname__"] = base.__qualname__
        guard = type(base)(base.__name__, (base,), namespace)
        _GUARDS[base] = guard
        return guard


def unguard(model: Any) -> None:
    """Restores the original class of every guarded module of ``model`` (in place)."""
    for _, module in _nnx_shapes.iter_module_paths(model):
        base = vars(type(module)).get(_GUARD_BASE_ATTR)
        if base is not None:
            module.__class__ = base


def guard(model: Any) -> None:
    """Guards (in place) every module of ``model`` whose subtree holds abstract values."""
    # One walk of the model: a module holds abstract values when its path is a prefix of one
    # of theirs (asking each module in turn walked every subtree again: quadratic).
    owners = {
        tuple(path[:k]) for path, _ in abstract_values(model, held=False) for k in range(len(path))
    }
    for path, module in _nnx_shapes.iter_module_paths(model):
        if tuple(path) in owners and _GUARD_BASE_ATTR not in vars(type(module)):
            module.__class__ = _guard_class(type(module))


def origin_of(model: Any) -> tuple[Callable[..., Any], tuple, dict] | None:
    """How an abstract model was built, if flaxmock built it."""
    try:
        return _ORIGINS.get(model)
    except TypeError:
        return None


def set_origin(model: Any, origin: tuple[Callable[..., Any], tuple, dict] | None) -> None:
    if origin is not None:
        _ORIGINS[model] = origin


def abstract(factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Builds ``factory(*args, **kwargs)`` with every array a ``jax.ShapeDtypeStruct``.

    The model is built under ``nnx.eval_shape``: no parameter is allocated or computed, so a
    model of any size is built in the time its Python code takes. Shapes and dtypes are exact.
    The arguments are not changed: an ``nnx.Rngs`` among them is not advanced.

    The result can be inspected (``nnx.state``), shape-evaluated
    (:func:`flaxmock.nnx.eval_shape`, :func:`flaxmock.nnx.summary`), mocked
    (:func:`flaxmock.nnx.mock`) and materialized (:func:`flaxmock.nnx.materialize`, which
    re-runs ``factory``). Calling it eagerly raises :class:`~flaxmock.AbstractParameterError`
    naming the abstract parts. Its modules have guard subclasses of their classes (same names,
    ``isinstance`` unchanged) until materialized.

    ``nnx.jit`` cannot run it either, nor ``jax.jit`` over its ``nnx.split`` state, nor
    ``nnx.scan``/``nnx.vmap`` over its abstract parts: JAX refuses the ``ShapeDtypeStruct``
    arguments (``TypeError: ... is not a valid JAX type``) before flaxmock sees the call. A trace
    cannot tell a compiled run from shape evaluation (JAX shares one trace cache between them), so
    no earlier error is possible. Mock the abstract parts or materialize them first, or evaluate
    shapes only: ``nnx.jit(f).eval_shape(model, x)`` or :func:`flaxmock.nnx.eval_shape`.

    Args:
      factory: A function or ``nnx.Module`` class returning a module.
      *args: Positional arguments of ``factory``.
      **kwargs: Keyword arguments of ``factory``.

    Returns:
      The abstract module.

    Raises:
      InvalidArgumentError: ``factory`` is not callable, is a built module, or returns
        something other than an ``nnx.Module``.

    Examples:
      >>> import jax
      >>> from flax import nnx
      >>> from flaxmock.nnx import abstract
      >>> model = abstract(nnx.Linear, 1024, 4096, rngs=nnx.Rngs(0))
      >>> model.kernel.get_value()
      ShapeDtypeStruct(shape=(1024, 4096), dtype=float32)
    """
    if not callable(factory):
        raise _errors.InvalidArgumentError(
            f"abstract(factory, *args, **kwargs) takes a function or nnx.Module class that "
            f"builds the model, got {type(factory).__name__}. Fix: "
            "flaxmock.nnx.abstract(nnx.Linear, 3, 4, rngs=nnx.Rngs(0)), or a lambda."
        )
    if isinstance(factory, nnx.Module):
        name = type(factory).__name__
        raise _errors.InvalidArgumentError(
            f"abstract(factory, *args, **kwargs) takes the function or class that builds the "
            f"model, got a built {name} (calling it would run its __call__). Fix it in one of "
            "these ways:\n"
            f"  1. pass the class and its arguments: flaxmock.nnx.abstract({name}, ..., "
            "rngs=nnx.Rngs(0));\n"
            f"  2. pass a function building it: flaxmock.nnx.abstract(lambda: {name}(...))."
        )
    traced, rebuild = _nnx_shapes.split_inputs((args, kwargs))
    graphdefs: list[Any] = []

    def build(traced: Any) -> Any:
        (call_args, call_kwargs), _ = rebuild(traced)
        with _nnx_intercept.suspended():
            built = factory(*call_args, **call_kwargs)
        if not isinstance(built, nnx.Module):
            raise _errors.InvalidArgumentError(
                f"abstract: the factory {getattr(factory, '__name__', factory)!r} returned a "
                f"{type(built).__name__}, not an nnx.Module. Fix: return one module; wrap "
                "several in a module of your own, or in nnx.Sequential (a list of layers) "
                "or nnx.List."
            )
        _nnx_shapes.mark_traced_arrays_as_data(built)
        graphdef, state = nnx.split(built)
        graphdefs.append(graphdef)
        return state

    # The arguments cross as a traced copy: an `nnx.Rngs` given is not advanced (its traced
    # copy is), and Python values (sizes, activation functions) stay static.
    state = jax.eval_shape(build, traced)
    model = nnx.merge(graphdefs[0], state)
    guard(model)
    set_origin(model, (factory, args, kwargs))
    return model


def _recorded_rngs(args: tuple, kwargs: dict) -> list[nnx.Rngs]:
    """The distinct ``nnx.Rngs`` among the factory's top-level arguments, in order."""
    found: dict[int, nnx.Rngs] = {}
    for value in (*args, *kwargs.values()):
        if isinstance(value, nnx.Rngs):
            found.setdefault(id(value), value)
    return list(found.values())


def _streams_text(rngs: nnx.Rngs) -> str:
    return ", ".join(
        f"{name!r}" + (f" (forked, keys {list(shape)})" if shape else "")
        for name, shape in _keys.stream_shapes(rngs).items()
    )


def _with_key(key: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The factory's arguments with each ``nnx.Rngs`` replaced as ``materialize(key=)`` says."""
    recorded = _recorded_rngs(args, kwargs)
    if not recorded:
        raise _errors.InvalidArgumentError(
            f"materialize(model, key={_short(key)}): the model's factory took no nnx.Rngs "
            "argument, so the key has nothing to seed; the factory draws its own values. Fix "
            "it in one of these ways:\n"
            "  1. materialize(model) without a key, for the factory's own values;\n"
            "  2. build the model with its rngs as an argument, flaxmock.nnx.abstract(Model, "
            "..., rngs=nnx.Rngs(0)), then materialize(model, key)."
        )
    if isinstance(key, nnx.Rngs):
        given = _keys.stream_shapes(key)
        for rngs in recorded:
            if any(
                given.get(name, shape) != shape for name, shape in _keys.stream_shapes(rngs).items()
            ):
                raise _errors.InvalidArgumentError(
                    f"materialize(model, key=nnx.Rngs(...)): the factory was given an nnx.Rngs "
                    f"with the streams {_streams_text(rngs)}, the given one has "
                    f"{_streams_text(key)}. Fix it in one of these ways:\n"
                    "  1. fork the given nnx.Rngs as the factory's was (rngs.split(n));\n"
                    "  2. pass an int seed or a jax.random.key: each stream of the factory's "
                    "nnx.Rngs is reseeded from it, with its shape."
                )
        new = {id(rngs): key for rngs in recorded}
    else:
        base = _keys.to_key(key, where="flaxmock.nnx.materialize")
        # The i-th distinct nnx.Rngs argument folds in i (none for the first), so that two
        # arguments do not get the same streams.
        new = {
            id(rngs): _keys.reseed(rngs, jax.random.fold_in(base, i) if i else base)
            for i, rngs in enumerate(recorded)
        }

    # Only top-level arguments: mapping over a pytree would rebuild any module in it.
    def swap(x: Any) -> Any:
        return new.get(id(x), x) if isinstance(x, nnx.Rngs) else x

    return tuple(swap(a) for a in args), {k: swap(v) for k, v in kwargs.items()}


def _short(key: Any) -> str:
    return type(key).__name__ if isinstance(key, nnx.Rngs | jax.Array) else f"{key!r:.40}"


def materialize(model: Any, key: Any = None) -> Any:
    """Returns a copy of ``model`` in which every abstract value is a real, initialised array.

    The values are those ``factory`` gives (the factory given to :func:`flaxmock.nnx.abstract`),
    with randomness from ``key`` in place of each ``nnx.Rngs`` argument it was called with.
    ``key`` is, as for the linen :func:`flaxmock.materialize`:

    * an ``nnx.Rngs``: used as it is, so a part that is not mocked gets the values
      ``factory(..., rngs=key)`` gives it under ``jax.jit`` (and ``key`` advances as in that
      build). Its
      streams must have the shapes of the factory's (forked the same way, if those were);
    * an int seed or a ``jax.Array`` PRNG key: each ``nnx.Rngs`` argument is rebuilt with all of
      its streams, reseeded from it: the stream parameters are drawn from (``params``, else
      ``default``) gets ``jax.random.key(seed)`` (or the key) itself, so that an ``nnx.Rngs(0)``
      factory materialized with ``0`` equals ``factory(rngs=nnx.Rngs(0))``; every other stream
      ``name`` gets ``jax.random.fold_in(key, crc32(name))``; a forked stream (``nnx.split_rngs``,
      ``rngs.split(n)``) gets its keys by ``jax.random.split`` into the recorded shape.
      The i-th distinct ``nnx.Rngs`` argument (i > 0) first folds in ``i``;
    * None: the recorded ``nnx.Rngs`` arguments themselves (advanced since, and by this build).

    The factory runs under ``jax.jit`` returning only the values still abstract, so XLA
    computes nothing else: the parameters of mocked parts are never allocated. The values are
    what ``jax.jit`` of the factory gives, up to XLA fusion of the pruned computation (at most
    the last bit, one ulp); they are not necessarily those of an eager ``factory(...)`` call:
    initialisers whose eager and jitted results differ (``nnx.initializers.normal()`` in an
    ``nnx.Einsum``) differ from the eager build in the last bit. Values that are
    already real stay. ``model`` itself is untouched; the copy's modules have their original
    classes back.

    Args:
      model: A model from :func:`flaxmock.nnx.abstract`, or one derived from it by
        :func:`flaxmock.nnx.mock` or :func:`flaxmock.nnx.unmock`.
      key: An ``nnx.Rngs``, an int seed, a ``jax.Array`` PRNG key, or None (see above).

    Returns:
      The materialized copy.

    Raises:
      UnknownFactoryError: ``model`` has abstract values but was not built by
        :func:`flaxmock.nnx.abstract` (or by flaxmock from such a model), so there is no
        factory to run, or the factory builds a different structure.
      InvalidArgumentError: ``model`` is not an ``nnx.Module``; ``key`` is of none of the kinds
        above, or the factory took no ``nnx.Rngs`` for it to replace, or an ``nnx.Rngs``
        given lacks streams, or has streams of other shapes, that the factory's had.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from flaxmock.nnx import abstract, materialize
      >>> model = abstract(nnx.Linear, 3, 4, rngs=nnx.Rngs(0))
      >>> real = materialize(model, 0)
      >>> bool(jnp.all(real.kernel[...] == nnx.Linear(3, 4, rngs=nnx.Rngs(0)).kernel[...]))
      True
    """
    return _materialize(model, key)


def materialize_arrays(model: Any) -> Any:
    """A copy of ``model`` whose abstract array attributes (not variables) are computed.

    They get the values the factory's constructor computes, with the factory's own arguments;
    its ``nnx.Rngs`` are not advanced. Used by ``load``, whose checkpoints hold variables only.
    """
    return _materialize(model, None, arrays_only=True)


def _materialize(model: Any, key: Any, *, arrays_only: bool = False) -> Any:
    if not isinstance(model, nnx.Module):
        raise _errors.InvalidArgumentError(
            f"materialize expects an nnx.Module (from flaxmock.nnx.abstract), got "
            f"{type(model).__name__}."
        )
    if key is not None and not isinstance(key, nnx.Rngs):
        _keys.to_key(key, where="flaxmock.nnx.materialize")  # Rejects other kinds up front.
    copy = nnx.clone(model)
    unguard(copy)
    needed = [
        path
        for path, holder in abstract_values(copy)
        if not (arrays_only and isinstance(holder, nnx.Variable))
    ]
    if not needed:
        if arrays_only:
            guard(copy)
            set_origin(copy, origin_of(model))
        return copy
    origin = origin_of(model)
    if origin is None:
        raise _errors.UnknownFactoryError(
            f"Cannot materialize {public_type(model).__name__}: it has abstract values "
            f"(e.g. {_nnx_shapes.path_str(needed[0])}) but flaxmock does not know how it was "
            "built. Build it with flaxmock.nnx.abstract(factory, *args, **kwargs) (and "
            "mock it with flaxmock.nnx.mock), which records the factory; a model made by "
            "nnx.eval_shape or copied with nnx.clone does not carry it."
        )
    factory, args, kwargs = origin
    lacking: list[str] = []
    if key is not None:
        if isinstance(key, nnx.Rngs):
            recorded = {n for r in _recorded_rngs(args, kwargs) for n, _ in r.items()}
            lacking = sorted(recorded - {name for name, _ in key.items()})
        args, kwargs = _with_key(key, args, kwargs)
    traced, rebuild = _nnx_shapes.split_inputs((args, kwargs))

    def init(traced: Any) -> tuple[list[Any], Any]:
        (call_args, call_kwargs), nodes = rebuild(traced)
        with _nnx_intercept.suspended():
            fresh = factory(*call_args, **call_kwargs)
        _nnx_shapes.mark_traced_arrays_as_data(fresh)
        values = {path: var.get_value() for path, var in _nnx_shapes.iter_variables(fresh)}
        values.update(_nnx_shapes.iter_arrays(fresh))
        missing = [path for path in needed if path not in values]
        if missing and lacking:
            raise _errors.InvalidArgumentError(
                "materialize(model, key=nnx.Rngs(...)): built with the given nnx.Rngs, the "
                "model has no value at "
                f"{_errors.cut_list([_nnx_shapes.path_str(p) for p in missing], 5)}: the factory's "
                f"nnx.Rngs had the streams {', '.join(map(repr, lacking))}, which the given one "
                "lacks, and the model keeps streams. Fix: give an nnx.Rngs with these streams "
                "too, or an int seed or a jax.random.key (each stream of the factory's nnx.Rngs "
                "is reseeded from it)."
            )
        if missing:
            raise _errors.UnknownFactoryError(
                f"Cannot materialize: the factory's model has no value at "
                f"{_errors.cut_list([_nnx_shapes.path_str(p) for p in missing], 5)}; it builds a "
                "different structure than the abstract model."
            )
        return [values[path] for path in needed], nnx.state(nodes)

    values, new_state = jax.jit(init)(traced)
    if not arrays_only:  # Advance the caller's rngs as a real build would.
        nnx.update(tuple(_nnx_shapes.split_nodes((args, kwargs))), new_state)
    variables = dict(_nnx_shapes.iter_variables(copy))
    arrays = []
    for path, value in zip(needed, values, strict=True):
        if path in variables:
            variables[path].set_value(value)
        else:  # A plain array attribute (nnx.data): set as the attribute itself.
            arrays.append((path, value))
    if arrays:
        _nnx_shapes.set_arrays(copy, arrays)
    if arrays_only:  # Its variables may still be abstract.
        guard(copy)
        set_origin(copy, origin)
    return copy
