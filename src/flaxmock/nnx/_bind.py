"""``bind`` for NNX models: real values for the abstract parts, from a state the user has.

The NNX counterpart of the linen :func:`flaxmock.bind`: where :func:`flaxmock.nnx.materialize`
initialises the abstract parts afresh, ``bind`` takes their values from a checkpoint-like
``nnx.State`` or nested dict, checks them all against the abstract model and reports every
problem in one :class:`~flaxmock.BindVariablesError`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np
from flax import nnx

from flaxmock._core import errors as _errors
from flaxmock._core import specs as _specs
from flaxmock.nnx import _abstract as _nnx_abstract
from flaxmock.nnx import _shapes as _nnx_shapes


def _flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """``(path, leaf)`` of a nested mapping (``nnx.State`` included); path parts as strings."""
    for key, value in tree.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping):
            yield from _flatten(value, path)
        else:
            yield path, value


class _Attribute(NamedTuple):
    """A plain array attribute of the model, with the interface ``bind`` uses of a variable."""

    path: _nnx_shapes.Path
    value: Any

    def get_value(self) -> Any:
        return self.value


def bind(model: Any, values: Any, *, strict: bool = False) -> Any:
    """Returns a copy of ``model`` whose abstract values are taken from ``values``.

    ``values`` holds the model's state as ``nnx.state(model)`` returns it, or as a nested dict
    (``nnx.to_pure_dict(nnx.state(model))``, a checkpoint), keyed by attribute names and list
    indices; it may hold only the values that are abstract (those of the parts that are neither
    mocked nor real). Every abstract value must be given; a value given for a variable that is
    already real replaces it. Each value must have the shape and dtype of the variable it is
    for. Everything wrong is reported at once. ``model`` is untouched.

    Args:
      model: An ``nnx.Module``, typically abstract (:func:`flaxmock.nnx.abstract`) and partly
        mocked, or restored by :func:`flaxmock.nnx.unmock`.
      values: An ``nnx.State`` or a nested mapping of arrays (or ``nnx.Variable``).
      strict: Also report the entries that are no variable of ``model`` (the variables of
        mocked parts, for instance).

    Returns:
      The copy, with the original classes of its modules back when no value is left abstract.

    Raises:
      BindVariablesError: abstract values are missing, or values have another shape or dtype
        than the model's (with ``strict``, also unused entries); one message lists them all.
      InvalidArgumentError: ``model`` is not an ``nnx.Module``, or ``values`` not a mapping.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from flaxmock.nnx import abstract, bind
      >>> real = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
      >>> model = bind(abstract(nnx.Linear, 3, 4, rngs=nnx.Rngs(1)), nnx.state(real))
      >>> bool((model(jnp.ones((2, 3))) == real(jnp.ones((2, 3)))).all())
      True
    """
    if not isinstance(model, nnx.Module):
        raise _errors.InvalidArgumentError(
            f"bind expects an nnx.Module, got {type(model).__name__}."
        )
    if not isinstance(values, Mapping):
        raise _errors.InvalidArgumentError(
            "bind expects the values as an nnx.State or a nested dict (as nnx.state(model) "
            f"or nnx.to_pure_dict(nnx.state(model)) return them), got {type(values).__name__}."
        )
    given = dict(_flatten(values))
    copy = nnx.clone(model)
    _nnx_abstract.unguard(copy)
    variables: dict[tuple[str, ...], Any] = {
        tuple(str(k) for k in path): var for path, var in _nnx_shapes.iter_variables(copy)
    }
    # Plain array attributes (nnx.data buffers): set through nnx.update, by their graph path.
    for path, value in _nnx_shapes.iter_arrays(copy):
        variables[tuple(str(k) for k in path)] = _Attribute(path, value)
    problems = []
    updates = []
    for path, var in variables.items():
        name = "/".join(path)
        current = var.get_value()
        if path not in given:
            if _specs.is_spec(current):
                note = (
                    ", an array attribute set in __init__: materialize computes it"
                    if isinstance(var, _Attribute)
                    else ""
                )
                problems.append(
                    f"  missing: {name} (expected {_errors.describe_value(current)}{note})"
                )
            continue
        value = given[path]
        if isinstance(value, nnx.Variable):
            value = value.get_value()
        if not _specs.is_array(value) or _specs.is_spec(value):
            problems.append(
                f"  not a value: {name}: expected an array, got {_errors.describe_value(value)}"
                + (" (abstract)" if _specs.is_spec(value) else "")
            )
        elif tuple(np.shape(value)) != tuple(np.shape(current)) or value.dtype != current.dtype:
            problems.append(
                f"  wrong shape or dtype: {name}: expected {_errors.describe_value(current)}, "
                f"got {_errors.describe_value(value)}"
            )
        else:
            updates.append((var, value))
    if strict:
        problems += [f"  unused: {'/'.join(path)}" for path in sorted(set(given) - set(variables))]
    if problems:
        raise _errors.bind_error(
            problems,
            subject=_nnx_abstract.public_type(model).__name__,
            fix="Fix: give every missing value (paths are as in nnx.state(model)), with the "
            "shapes and dtypes of the model; or mock the modules that hold them "
            "(flaxmock.nnx.mock), or initialise them (flaxmock.nnx.materialize)"
            + ("; or pass strict=False to ignore unused entries." if strict else "."),
        )
    attributes = [(var.path, value) for var, value in updates if isinstance(var, _Attribute)]
    for var, value in updates:
        if not isinstance(var, _Attribute):
            var.set_value(value)
    if attributes:
        _nnx_shapes.set_arrays(copy, attributes)
    _nnx_abstract.guard(copy)
    _nnx_abstract.set_origin(copy, _nnx_abstract.origin_of(model))
    return copy
