"""Trained weights for the un-mocked layers: ``load`` and ``check_checkpoint`` (linen).

The linen front door onto :mod:`flaxmock._core.checkpoint`: the model's variables are those
``bind`` checks against (every un-mocked layer's, and the state mocks keep), the whole model's
those of the tree with its mocks put back; the values read are held as ``bind`` and
``materialize`` hold them (``_with_values``), sharded as ``materialize(mesh=)`` shards them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax

from flaxmock._core import checkpoint as _ckpt
from flaxmock._linen import assemble as _assemble
from flaxmock._linen import materialize as _materialize
from flaxmock._linen import mock as _mock
from flaxmock._linen import shardings as _shardings
from flaxmock._linen import variables as _vars
from flaxmock._linen.layer import FlaxCallLayer

Path = tuple[str, ...]


def _name(key: tuple[str, Path]) -> str:
    return "/".join((key[0],) + key[1])


def _expected(root: Any) -> tuple[dict[str, _ckpt.Spec], list[str]]:
    """``{path: spec}`` of the whole model (mocks put back), and its collections."""
    whole_tree = root
    while mocks := [
        m
        for m in _assemble.replacements_reachable(whole_tree)
        if isinstance(m, _mock.MockLayer) and isinstance(m.info.original, FlaxCallLayer)
    ]:
        whole_tree = _materialize._unmock_these(whole_tree, mocks)
    whole = _materialize._needed(whole_tree)
    expected = {_name(k): _ckpt.spec_of(_vars.unbox(v)) for k, v in whole.items()}
    collections = sorted({col for col, _ in whole}, key=lambda c: (c != "params", c))
    return expected, collections


def _subject(root: Any) -> str:
    return f"{type(root.module).__name__}.{root.method_name}"


def check_checkpoint(
    tree: Any, path: Any, *, key_map: Mapping[str, str] | Callable[[str], str | None] | None = None
) -> Any:
    """Compares a checkpoint's metadata with a converted model; reads no array data.

    Every variable of the model (mocked layers' included, as the tree had them before
    :func:`flaxmock.mock`) is compared with the checkpoint's entries: their names (after
    ``key_map``), shapes and dtypes. Orbax checkpoints are read with Orbax's metadata API,
    safetensors files by their headers. A group of layers stacked along a leading axis on one
    side (``nn.scan``: ``params/blocks/...``) and unrolled on the other (``params/layers_0/...``)
    is recognised and named as such.

    Args:
      tree: A converted tree (:func:`flaxmock.unflaxify`), mocked or not.
      path: An Orbax checkpoint directory of the variables dict (as ``ocp.StandardCheckpointer``
        or ``ocp.PyTreeCheckpointer`` save ``module.init``'s output), a ``.safetensors`` file, a
        directory of them, or a sharded checkpoint's ``*.safetensors.index.json``.
      key_map: Maps the checkpoint's entry names to the model's variable paths
        (``"params/layers_0/attn/q/kernel"``): a dict (names it lacks use the default) or a
        callable (returning None skips the entry). Default: a name's ``/``- or ``.``-separated
        parts are the path, under ``params`` when the first part is no collection of the model
        (``"layers_0.attn.q.kernel"`` is ``params/layers_0/attn/q/kernel``). Hugging Face's
        PyTorch names (``model.layers.0.self_attn.q_proj.weight``) need a callable mapping them
        to the Flax module's names; a kernel stored transposed then shows as a shape mismatch
        (the report names it; ``load`` does not transpose).

    Returns:
      A :class:`~flaxmock.CheckpointReport`: ``ok`` when the checkpoint holds exactly the
      model's entries; ``missing``, ``unexpected``, ``shape_mismatched``, ``dtype_mismatched``
      and ``layouts`` otherwise. ``print`` it for every entry.

    Raises:
      InvalidArgumentError: ``tree`` is not a converted tree.
      LoadCheckpointError: ``path`` is no checkpoint flaxmock reads.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, flaxmock, tempfile
      >>> import orbax.checkpoint as ocp
      >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
      >>> x = jnp.ones((4, 3))
      >>> path = tempfile.mkdtemp() + "/ckpt"
      >>> ocp.PyTreeCheckpointer().save(path, model.init(jax.random.key(0), x))
      >>> tree = flaxmock.unflaxify(nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(3)]), x)
      >>> print(flaxmock.check_checkpoint(tree, path))  # doctest: +ELLIPSIS
      Orbax checkpoint .../ckpt against Sequential.__call__: 2 wrong shape; 2 entries match
        wrong shape: params/layers_2/bias: expected float32[3], found float32[2]
        wrong shape: params/layers_2/kernel: expected float32[8, 3], found float32[8, 2]
    """
    root = _materialize._check_root(tree, "check_checkpoint")
    expected, collections = _expected(root)
    return _ckpt.check(_subject(root), expected, path, key_map, _ckpt.default_names(collections))


def load(
    tree: Any,
    path: Any,
    *,
    key_map: Mapping[str, str] | Callable[[str], str | None] | None = None,
    mesh: Any = None,
    rules: Any = None,
    strict: bool = True,
) -> Any:
    """Gives the un-mocked layers their trained values, reading only those from a checkpoint.

    The checkpoint's metadata is checked first, as :func:`check_checkpoint` does; then only the
    arrays of the variables that :func:`flaxmock.bind` would need (every un-mocked layer's, and
    the state mocks keep) are read: with Orbax's partial restore, or one ``numpy.memmap`` slice
    per safetensors tensor. Mocked layers' entries are never read. Each array is read straight
    into its dtype and placement, never through a copy of the whole checkpoint: with ``mesh``,
    sharded as :func:`flaxmock.materialize` shards it (each device's shard read alone),
    otherwise on the default device.

    Args:
      tree: A converted tree, typically partly mocked.
      path: The checkpoint, as for :func:`check_checkpoint`.
      key_map: Maps checkpoint names to model paths, as for :func:`check_checkpoint`.
      mesh: A ``jax.sharding.Mesh`` to place the parameters on, by their partitioning metadata.
      rules: Logical axis rules for ``nn.with_logical_partitioning`` metadata.
      strict: Refuse a checkpoint that does not match the whole model (default). With False,
        only problems with the entries the un-mocked layers need are refused.

    Returns:
      A new tree holding the values in new ``pz.Parameter`` and ``pz.StateVariable`` objects,
      as :func:`flaxmock.bind` gives it; ``tree`` is unchanged.

    Raises:
      LoadCheckpointError: the checkpoint does not fit the model (its ``report`` attribute is the
        :class:`~flaxmock.CheckpointReport`; the message lists every problem, or the first ones
        "and N more"); nothing is read. Also when ``path`` is no checkpoint flaxmock reads.
      InvalidArgumentError: ``tree`` is not a converted tree.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, flaxmock, tempfile
      >>> import orbax.checkpoint as ocp
      >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
      >>> x = jnp.ones((4, 3))
      >>> variables = model.init(jax.random.key(0), x)
      >>> path = tempfile.mkdtemp() + "/ckpt"
      >>> ocp.PyTreeCheckpointer().save(path, variables)
      >>> tree = flaxmock.mock(flaxmock.unflaxify(model, x), "layers_0")
      >>> real = flaxmock.load(tree, path)  # reads layers_2 only
      >>> p = real.submodule_calls[(1, "layers_2.__call__")].scope_data.parameters["kernel"]
      >>> bool((p.value == variables["params"]["layers_2"]["kernel"]).all())
      True
    """
    root = _materialize._check_root(tree, "load")
    expected, collections = _expected(root)
    current = _materialize._needed(root)
    keys = sorted(current)
    currents = [current[k] for k in keys]
    shardings = _shardings.variable_shardings(currents, mesh, rules)
    if shardings is None:
        shardings = [jax.sharding.SingleDeviceSharding(jax.devices()[0])] * len(keys)
    read = _ckpt.load(
        _subject(root),
        expected,
        {_name(k): s for k, s in zip(keys, shardings, strict=True)},
        path,
        key_map,
        _ckpt.default_names(collections),
        strict=strict,
        call="load(tree, path)",
    )
    values = {}
    for k, c in zip(keys, currents, strict=True):
        value = read[_name(k)]
        values[k] = c.replace_boxed(value) if isinstance(c, nn.meta.AxisMetadata) else value
    return _materialize._with_values(root, values)
