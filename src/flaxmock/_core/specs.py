"""Specs of values: arrays become ``jax.ShapeDtypeStruct``, everything else stays.

Flax calls take Python values (``deterministic=True``, ``mode="b"``) next to arrays. Such values
must stay static through ``jax.eval_shape``/``jax.jit`` (a tracer in a Python ``if`` fails), so
the helpers here split a pytree into its array leaves and the rest, in the way equinox's
``filter_eval_shape`` does (:func:`partition`, :func:`eval_shape`), and describe a call's inputs
by a hashable signature for caching.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from flaxmock._core import errors as _errors
from flaxmock._core import table as _table


def is_array(x: Any) -> bool:
    """Whether ``x`` is an array leaf (a JAX or NumPy array, a tracer, or a spec)."""
    return isinstance(x, jax.Array | np.ndarray | np.generic | jax.ShapeDtypeStruct)


def is_spec(x: Any) -> bool:
    """Whether ``x`` is an abstract array, a ``jax.ShapeDtypeStruct`` (the ``is_leaf`` of specs)."""
    return isinstance(x, jax.ShapeDtypeStruct)


def typed_sharding(x: Any) -> Any:
    """The sharding that is part of an array's type, under an explicit-sharding mesh; or None.

    Under ``jax.set_mesh`` of a mesh with ``AxisType.Explicit`` axes, an array's sharding is
    part of its type (``jax.typeof(x).sharding``, a ``NamedSharding`` over an ``AbstractMesh``):
    model code may read it, and shape evaluation propagates it. Specs keep it. Other shardings
    (auto meshes, single devices) are placements, not types, and are left out as before.
    """
    if isinstance(x, jax.ShapeDtypeStruct):
        sharding = x.sharding
    elif isinstance(x, jax.Array):
        sharding = jax.typeof(x).sharding
    else:
        return None
    if not isinstance(sharding, jax.sharding.NamedSharding):
        return None
    mesh = sharding.mesh
    if jax.sharding.AxisType.Explicit not in getattr(mesh, "axis_types", ()):
        return None
    if not isinstance(mesh, jax.sharding.AbstractMesh):
        sharding = jax.sharding.NamedSharding(mesh.abstract_mesh, sharding.spec)
    return sharding


def spec_of(x: Any) -> Any:
    """Returns the ``ShapeDtypeStruct`` of an array leaf, and any other value unchanged.

    Under an explicit-sharding mesh the spec keeps the array's typed sharding
    (:func:`typed_sharding`).
    """
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    if isinstance(x, jax.Array | np.ndarray | np.generic):
        return jax.ShapeDtypeStruct(
            np.shape(x),
            x.dtype,
            weak_type=getattr(x, "weak_type", False),
            sharding=typed_sharding(x),
        )
    return x


def specs_of(tree: Any) -> Any:
    """Maps :func:`spec_of` over a pytree (``ShapeDtypeStruct`` leaves stay leaves)."""
    return jax.tree.map(spec_of, tree, is_leaf=is_spec)


def partition(tree: Any) -> tuple[list[Any], Callable[[list[Any]], Any]]:
    """Splits a pytree into its array leaves and a function that puts new ones back.

    Non-array leaves are closed over by the returned function, so they stay Python values when
    the arrays cross ``jax.eval_shape`` or ``jax.jit``.
    """
    leaves, treedef = jax.tree.flatten(tree, is_leaf=is_spec)
    where = [i for i, leaf in enumerate(leaves) if is_array(leaf)]
    arrays = [leaves[i] for i in where]
    # The closure keeps only the static leaves: array leaves may be tracers.
    static = [None if is_array(leaf) else leaf for leaf in leaves]

    def combine(new_arrays: list[Any]) -> Any:
        out = list(static)
        for i, a in zip(where, new_arrays, strict=True):
            out[i] = a
        return jax.tree.unflatten(treedef, out)

    return arrays, combine


def check_function(fun: Any) -> None:
    """Raises :class:`InvalidArgumentError` unless ``fun``, given to ``eval_shape``, is callable."""
    if not callable(fun):
        raise _errors.InvalidArgumentError(
            "eval_shape(fun, *args, **kwargs) takes the function to evaluate first, as "
            f"jax.eval_shape does; got a {type(fun).__name__} for fun. Fix: pass a function, "
            "a module or a converted tree, then its arguments."
        )


def eval_shape(fun: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``jax.eval_shape`` that lets Python values through, as equinox's ``filter_eval_shape``.

    The array leaves (arrays and ``jax.ShapeDtypeStruct``) of ``fun``, ``args`` and ``kwargs``
    are traced; every other leaf (``deterministic=True``, a string, a function) is passed to
    ``fun`` as the Python value it is. Of the output, array leaves come back as their
    ``jax.ShapeDtypeStruct``; other leaves (``None``, ints, strings), which ``jax.eval_shape``
    would turn into arrays or refuse, come back as ``fun`` returned them. The front ends' own
    ``eval_shape`` prepare what this one cannot see: penzai state (linen) and NNX graph nodes,
    split into arrays and rebuilt inside ``fun``.

    Raises:
      InvalidArgumentError: ``fun`` is not callable.
    """
    check_function(fun)
    arrays, combine = partition((fun, args, kwargs))
    # The output's Python leaves are captured from the trace and put back afterwards.
    rebuild_out: list[Callable[[list[Any]], Any]] = []

    def run(arrays: list[Any]) -> list[Any]:
        f, a, kw = combine(arrays)
        out_arrays, rebuild = partition(f(*a, **kw))
        rebuild_out[:] = [rebuild]
        return out_arrays

    out_specs = jax.eval_shape(run, arrays)
    return rebuild_out[0](out_specs)


@dataclasses.dataclass(frozen=True)
class Signature:
    """A hashable description of a call's inputs: structure, array specs and static values."""

    treedef: Any
    leaves: tuple[Any, ...]


def signature_of(tree: Any) -> Signature | None:
    """Returns the :class:`Signature` of ``tree``, or ``None`` if a static leaf is unhashable."""
    leaves, treedef = jax.tree.flatten(tree, is_leaf=is_spec)
    out: list[tuple[Any, ...]] = []
    for leaf in leaves:
        if is_array(leaf):
            # The dtype's name, not its NumPy code: bfloat16 and the float8 types share codes.
            sharding = typed_sharding(leaf)
            out.append(
                ("array", tuple(np.shape(leaf)), str(leaf.dtype))
                + (() if sharding is None else (sharding,))
            )
        else:
            try:
                hash(leaf)
            except TypeError:
                return None
            out.append(("static", type(leaf), leaf))
    return Signature(treedef, tuple(out))


def check_out_spec(given: Any, actual: Any, *, where: str, call: str) -> None:
    """Raises :class:`OutputSpecError` unless an ``out=`` spec matches the real output's specs.

    Args:
      given: The ``out=`` spec, as given.
      actual: The specs of the real call's output (inferred).
      where: The call's path and method (``blocks_0/router.__call__``).
      call: The flaxmock call the spec was given to (``"flaxmock.mock(tree, where, out=...)"``).
    """
    given_specs, actual_specs = specs_of(given), specs_of(actual)
    if signature_of(given_specs) == signature_of(actual_specs):
        return
    raise _errors.OutputSpecError(
        f"{call}: the out spec for {where} does not match the output of the real call: "
        f"expected {_table.describe_specs(actual_specs)}, got {_table.describe_specs(given_specs)}"
        f". Fix: 1. leave out= away for {where}: its output can be inferred; 2. give the real "
        "output's structure, shapes and dtypes."
    )


def unhashable_leaves(tree: Any) -> list[str]:
    """Paths and types of the non-array leaves of ``tree`` that cannot be hashed."""
    found = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_spec)[0]:
        if is_array(leaf):
            continue
        try:
            hash(leaf)
        except TypeError:
            found.append(f"{jax.tree_util.keystr(path)}: {type(leaf).__name__}")
    return found


class Unkeyable(Exception):
    """A value has no structural fingerprint (see :func:`fingerprint`)."""


_ATOMS = (int, float, complex, str, bytes, bool, type(None), type, np.dtype)


def fingerprint(value: Any, *, skip: frozenset[str] = frozenset(), _depth: int = 0) -> Any:
    """A hashable key equal for values that compute alike, compared by structure.

    Python values compare by value; containers, dataclasses (a Flax module's fields, a config)
    and ``functools.partial`` by their parts; functions by their code, defaults and closure
    contents (two initialisers made by the same factory with the same arguments are equal);
    arrays by shape and dtype; anything else hashable by itself. Dataclass fields and mapping
    keys named in ``skip`` are left out.

    Raises:
      Unkeyable: a part is none of these (unhashable), or the value nests too deep.

    Examples:
      >>> import functools
      >>> def scaled(s):
      ...     return lambda x: x * s
      >>> fingerprint(scaled(2)) == fingerprint(scaled(2)) != fingerprint(scaled(3))
      True
    """
    if _depth > 12:
        raise Unkeyable("nested too deep")
    depth = _depth + 1
    if isinstance(value, _ATOMS):
        return (type(value), value)
    if isinstance(value, tuple | list):
        return (type(value), tuple(fingerprint(v, skip=skip, _depth=depth) for v in value))
    if isinstance(value, Mapping):
        return (
            type(value),
            tuple(
                (fingerprint(k, _depth=depth), fingerprint(v, skip=skip, _depth=depth))
                for k, v in value.items()
                if k not in skip
            ),
        )
    if is_array(value):
        return ("array", tuple(np.shape(value)), str(value.dtype))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (
            type(value),
            tuple(
                (f.name, fingerprint(getattr(value, f.name, None), skip=skip, _depth=depth))
                for f in dataclasses.fields(value)
                if f.name not in skip
            ),
        )
    if isinstance(value, functools.partial):
        return (
            functools.partial,
            fingerprint(value.func, skip=skip, _depth=depth),
            fingerprint(value.args, skip=skip, _depth=depth),
            fingerprint(value.keywords, skip=skip, _depth=depth),
        )
    if isinstance(value, types.FunctionType):
        cells = tuple(c.cell_contents for c in value.__closure__ or ())
        return (
            value.__code__,
            fingerprint(value.__defaults__, skip=skip, _depth=depth),
            fingerprint(value.__kwdefaults__, skip=skip, _depth=depth),
            fingerprint(cells, skip=skip, _depth=depth),
        )
    try:
        hash(value)
    except TypeError as e:
        raise Unkeyable(f"{type(value).__name__} is not hashable") from e
    return ("id", value)
