"""Flax variable dicts: one flat form, ``{(collection, path): value}``, and back; and how a tree
holds each Flax variable.

Every part of the linen front end that walks a variables dict (recording, conversion,
assembling a run's variables, ``materialize``, ``bind``, mocks keeping real state) uses these
helpers, so that paths are spelled and escaped one way.

A converted tree holds each Flax variable as penzai's ``unflaxify`` does: a real parameter as
one mutable ``pz.Parameter`` and any other real variable as one ``pz.StateVariable``, each shared
(the same object) by every layer that uses it, so that ``pz.unbind_params``, ``pz.variable_jit``
and ``jax.grad`` over the unbound parameters work and a tied weight is one parameter. An
abstract value (a ``jax.ShapeDtypeStruct``) cannot be held by a mutable variable (penzai calls
``jnp.asarray`` on its value), so it stays a frozen ``pz.ParameterValue`` or
``pz.StateVariableValue``: a plain pytree leaf of specs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from penzai import pz

Path = tuple[str, ...]


def flatten(tree: Any, prefix: Path = ()) -> dict[Path, Any]:
    """Flattens nested mappings into ``{path: leaf}``; tuples and boxes are leaves."""
    out: dict[Path, Any] = {}
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            out.update(flatten(v, prefix + (str(k),)))
    else:
        out[prefix] = tree
    return out


def flatten_variables(variables: Any, *, skip: tuple[str, ...] = ()) -> dict[tuple[str, Path], Any]:
    """``{(collection, path): leaf}`` of a variables dict, leaving out the ``skip`` collections."""
    out: dict[tuple[str, Path], Any] = {}
    for col, tree in (variables or {}).items():
        if col in skip:
            continue
        for path, leaf in flatten(tree).items():
            out[(col, path)] = leaf
    return out


def set_in(tree: dict, path: Path, value: Any) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def nest(flat: Mapping[tuple[str, Path], Any]) -> dict[str, Any]:
    """The variables dict of a flat ``{(collection, path): leaf}`` (the inverse of flatten)."""
    out: dict[str, Any] = {}
    for (col, path), value in flat.items():
        set_in(out.setdefault(col, {}), path, value)
    return out


def name_of(path: Path) -> str:
    """A variable's name in a layer's scope data: its relative path joined with ``/``.

    A ``/`` inside one key (``nn.SpectralNorm`` stores ``"Dense_0/kernel/u"`` as one key) is
    escaped as ``%2F`` (and ``%`` as ``%25``), so that :func:`path_of` gives the path back.
    """
    return "/".join(str(k).replace("%", "%25").replace("/", "%2F") for k in path)


def path_of(name: str) -> Path:
    """The relative path of a variable named by :func:`name_of`."""
    return tuple(k.replace("%2F", "/").replace("%25", "%") for k in name.split("/"))


def unbox(value: Any) -> Any:
    return value.unbox() if isinstance(value, nn.meta.AxisMetadata) else value


def label_of(collection: str, scope_path: Path, name: str) -> str:
    """The label of a Flax variable in a tree: ``"params/blocks_0/attn/kernel"``.

    ``name`` is the variable's name in its owner's scope data (:func:`name_of`), so the label is
    unique per Flax variable.
    """
    return "/".join((collection, *scope_path, name))


def is_static(value: Any) -> bool:
    """Whether a variable holds no array at all (``params_axes``' ``AxisMetadata``)."""
    return not jax.tree.leaves(value)


def holds_values(value: Any) -> bool:
    """Whether every leaf of ``value`` (boxes unwrapped) is an array holding values.

    Abstract specs do not; nor do Python values, which a mutable penzai variable would turn into
    arrays (``jnp.asarray``), changing what the model's code sees.
    """
    leaves = jax.tree.leaves(value)
    return bool(leaves) and all(isinstance(x, jax.Array | np.ndarray | np.generic) for x in leaves)


#: What a tree holds a Flax variable as, mutable (real values) or frozen (specs, Python values).
VARIABLE_TYPES = (pz.Parameter, pz.StateVariable, pz.ParameterValue, pz.StateVariableValue)


def to_variable(collection: str, label: str, value: Any) -> Any:
    """A Flax variable as a tree holds it (see the module docstring).

    A new mutable variable wraps ``value`` without copying it (``jnp.asarray`` of a JAX array is
    the array itself): nothing the user gave is changed or duplicated.
    """
    is_param = collection == "params"
    if holds_values(value):
        return (pz.Parameter if is_param else pz.StateVariable)(value=value, label=label)
    return (pz.ParameterValue if is_param else pz.StateVariableValue)(value=value, label=label)


def value_of(variable: Any) -> Any:
    """The value of a variable as a tree holds it (a plain value is its own value)."""
    return variable.value if isinstance(variable, VARIABLE_TYPES) else variable
