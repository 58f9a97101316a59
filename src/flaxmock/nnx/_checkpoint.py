"""Trained weights for the un-mocked parts of an NNX model: ``load`` and ``check_checkpoint``.

The NNX front door onto :mod:`flaxmock._core.checkpoint`: the model's entries are its
variables' paths as ``nnx.state(model)`` names them (``layers/0/linear/kernel``), the whole
model's those of the model with its mocks put back (:func:`flaxmock.nnx.unmock`); the values
read are given to the model by :func:`flaxmock.nnx.bind`. RNG state (``nnx.RngState``) is no
checkpoint entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
from flax import nnx

from flaxmock._core import checkpoint as _ckpt
from flaxmock._core import errors as _errors
from flaxmock.nnx import _abstract as _nnx_abstract
from flaxmock.nnx import _bind as _nnx_bind
from flaxmock.nnx import _mock as _nnx_mock
from flaxmock.nnx import _shapes as _nnx_shapes
from flaxmock.nnx import _unmock as _nnx_unmock


def _entries(model: Any) -> dict[str, nnx.Variable]:
    return {
        "/".join(str(k) for k in path): var
        for path, var in _nnx_shapes.iter_variables(model)
        if not isinstance(var, nnx.RngState)
    }


def _expected(model: Any, call: str) -> dict[str, _ckpt.Spec]:
    if not isinstance(model, nnx.Module):
        raise _errors.InvalidArgumentError(
            f"{call} expects an nnx.Module (from flaxmock.nnx.abstract, mocked or not), got "
            f"{type(model).__name__}."
        )
    mocked = any(
        isinstance(m, _nnx_mock.MockModule) for _, m in _nnx_shapes.iter_module_paths(model)
    )
    whole = _nnx_unmock.unmock(model) if mocked else model
    return {path: _ckpt.spec_of(var.get_value()) for path, var in _entries(whole).items()}


def _default_names(expected: dict[str, _ckpt.Spec]) -> Any:
    """The default ``key_map``: the path itself, without the ``/value`` that saving an
    ``nnx.State`` (rather than ``nnx.to_pure_dict`` of it) appends to each variable."""
    plain = _ckpt.default_names(())

    def path_of(name: str) -> str | None:
        path = plain(name)
        if path is not None and path not in expected and path.endswith("/value"):
            return path[: -len("/value")]
        return path

    return path_of


def check_checkpoint(
    model: Any, path: Any, *, key_map: Mapping[str, str] | Callable[[str], str | None] | None = None
) -> Any:
    """Compares a checkpoint's metadata with an NNX model's variables; reads no array data.

    As :func:`flaxmock.check_checkpoint`, for NNX: every variable of the model (mocked
    modules' included) is compared, by its path in ``nnx.state(model)`` (``layers/0/kernel``),
    with the checkpoint's entries (an Orbax directory of ``nnx.state(model)`` or of
    ``nnx.to_pure_dict`` of it, or safetensors files); stacked-versus-unrolled layers
    (``layers/kernel`` with a leading axis against ``layers/0/kernel``) are named as such.

    Args:
      model: An ``nnx.Module``, abstract (:func:`flaxmock.nnx.abstract`), mocked or real.
      path: The checkpoint, as for :func:`flaxmock.check_checkpoint`.
      key_map: Maps checkpoint names to model paths: a dict or a callable (None skips an
        entry). Default: a name's ``/``- or ``.``-separated parts are the path, less the
        trailing ``value`` of a saved ``nnx.State`` (``kernel/value`` is ``kernel``).

    Returns:
      A :class:`~flaxmock.CheckpointReport`.

    Raises:
      InvalidArgumentError: ``model`` is not an ``nnx.Module``.
      LoadCheckpointError: ``path`` is no checkpoint flaxmock reads.

    Examples:
      >>> import tempfile, orbax.checkpoint as ocp
      >>> from flax import nnx
      >>> import flaxmock.nnx
      >>> path = tempfile.mkdtemp() + "/ckpt"
      >>> ocp.PyTreeCheckpointer().save(path, nnx.state(nnx.Linear(3, 4, rngs=nnx.Rngs(0))))
      >>> model = flaxmock.nnx.abstract(nnx.Linear, 3, 4, use_bias=False, rngs=nnx.Rngs(0))
      >>> print(flaxmock.nnx.check_checkpoint(model, path))  # doctest: +ELLIPSIS
      Orbax checkpoint .../ckpt against Linear: 1 unexpected; 1 entries match
        unexpected: bias (float32[4])
    """
    expected = _expected(model, "check_checkpoint")
    name = _nnx_abstract.public_type(model).__name__
    return _ckpt.check(name, expected, path, key_map, _default_names(expected))


def load(
    model: Any,
    path: Any,
    *,
    key_map: Mapping[str, str] | Callable[[str], str | None] | None = None,
    strict: bool = True,
) -> Any:
    """Returns a copy of an NNX model whose abstract values are read from a checkpoint.

    As :func:`flaxmock.load`, for NNX: the checkpoint's metadata is checked against the whole
    model first (as :func:`check_checkpoint` does); then only the arrays of the variables that
    are abstract (those of the modules neither mocked nor real) are read, on the default
    device, and given to the copy as :func:`flaxmock.nnx.bind` gives them. Mocked modules'
    entries are never read.

    Args:
      model: An ``nnx.Module``, typically abstract (:func:`flaxmock.nnx.abstract`) and partly
        mocked.
      path: The checkpoint, as for :func:`flaxmock.check_checkpoint`.
      key_map: As for :func:`check_checkpoint`.
      strict: Refuse a checkpoint that does not match the whole model (default); with False,
        only problems with the entries read are refused.

    Returns:
      The copy; ``model`` is untouched.

    Raises:
      LoadCheckpointError: the checkpoint does not fit the model (``report`` attribute: the
        :class:`~flaxmock.CheckpointReport`); nothing is read.
      InvalidArgumentError: ``model`` is not an ``nnx.Module``.

    Examples:
      >>> import tempfile, jax.numpy as jnp, orbax.checkpoint as ocp
      >>> from flax import nnx
      >>> import flaxmock.nnx
      >>> real = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
      >>> path = tempfile.mkdtemp() + "/ckpt"
      >>> ocp.PyTreeCheckpointer().save(path, nnx.state(real))
      >>> model = flaxmock.nnx.load(flaxmock.nnx.abstract(nnx.Linear, 3, 4, rngs=nnx.Rngs(1)), path)
      >>> bool((model(jnp.ones((2, 3))) == real(jnp.ones((2, 3)))).all())
      True
    """
    expected = _expected(model, "load")
    # Array attributes (nnx.data buffers) are no checkpoint entries: the constructor's values.
    if any(not isinstance(h, nnx.Variable) for _, h in _nnx_abstract.abstract_values(model)):
        model = _nnx_abstract.materialize_arrays(model)
    needed = [
        "/".join(str(k) for k in p)
        for p, var in _nnx_abstract.abstract_values(model)
        if isinstance(var, nnx.Variable) and not isinstance(var, nnx.RngState)
    ]
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    read = _ckpt.load(
        _nnx_abstract.public_type(model).__name__,
        expected,
        dict.fromkeys(needed, device),
        path,
        key_map,
        _default_names(expected),
        strict=strict,
        call="flaxmock.nnx.load(model, path)",
    )
    values: dict[str, Any] = {}
    for p, array in read.items():
        _ckpt.set_in(values, p.split("/"), array)
    return _nnx_bind.bind(model, values)
