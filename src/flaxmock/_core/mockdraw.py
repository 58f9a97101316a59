"""The random draw of a mock call, and its key schedule: the same on both front doors.

The key of one call of a mock is built in this order (every step a ``jax.random.fold_in``):

1. ``jax.random.key(seed)``: the seed given to ``mock`` (a ``Mocker`` derives one per attribute);
2. the stable hash of the mock's *stream*, its position in the model (the call path on linen,
   the attribute path on NNX), so that two mocks draw different numbers;
3. the stable hash of the method called (an NNX mock answers every public method);
4. the call count, read from the mock's counter (penzai or NNX state), so that successive calls
   draw anew, under ``jax.jit`` too;
5. the dispatch index: how often the mock ran before in the same run of a linen tree (a module
   called twice in one ``apply`` draws twice; 0 on NNX, where each call advances the counter);
6. the per-step fold, when given: a key Flax splits per step of ``nn.scan`` (and per lane of
   ``nn.vmap``) for a mock inside a lifted body;
7. the lane, when given: the layer index of an NNX mock replacing a stack of layers (sliced by
   ``nnx.scan``/``nnx.vmap``), then the lane index of ``vmap_axis_name`` when that is set;
8. under ``jax.vmap`` (with or without an axis name), the lane index of every ``vmap`` that
   batches the call's inputs (:func:`vmap_lanes`), so that each lane draws its own values, as
   each lane of the real call computes its own. Outside ``vmap`` nothing is folded: a call
   draws the same eagerly and under ``jax.jit``.

The key is then split once: the first half draws the output, the second (folded with ``j``)
the ``j``-th sown value drawn (a front end draws only the sown values a call's caller
collects: see ``flaxmock._linen.mock.MockLayer.run_replaced``). Values written whole (state)
are drawn by :func:`draw_call` from the key of count 0 and dispatch index
:data:`WRITTEN_INDEX`, the same on every call. Within one such group the
leaves of one dtype are slices of one draw (:func:`_draw_by_dtype`), from the group's key
folded with the dtype's index: a call with twenty outputs compiles two random draws instead
of twenty.

A draw runs as two compiled functions, each shared by every mock that needs it (the seed,
stream and counts are arguments): the keys (:func:`_group_keys`), compiled once per layout
(how many groups and dtypes) and axis name, whatever the shapes; then the values
(:func:`_fill_groups`), compiled once per output signature and fill. On CPU the hashes of the
key schedule take as long to compile as a random draw, so a model whose mocks have many
distinct output shapes compiles them once, not once per shape. An eager call, whose key inputs
are all known on the host, computes the key schedule there instead (:func:`_host_keys`,
threefry in Python: the same bits, tested; about 60 us, and nothing to compile) and passes the
key data to one compiled function of the values (:func:`_fill_groups_from_data`). Eager calls
lower the values with threefry unrolled (:mod:`flaxmock._core.prng`: the same bits, compiled
in less than half the time); under a trace both are part of the caller's computation.

Hashes are ``zlib.crc32`` (:func:`stable_hash`), never ``hash()``, so seeds reproduce in every
process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import custom_batching

from flaxmock._core import errors as _errors
from flaxmock._core import fill as _fill
from flaxmock._core import mockcore as _mockcore
from flaxmock._core import prng as _prng
from flaxmock._core import specs as _specs

Groups = tuple[tuple[jax.ShapeDtypeStruct, ...], ...]


#: The dispatch index of the draw of values written whole (:func:`draw_call`), with count 0:
#: no call's own draw has it (a dispatch index counts the runs of one mock in one apply).
WRITTEN_INDEX = 2**32 - 1


def stable_hash(text: str) -> int:
    """A 31-bit hash of ``text`` that is the same in every process (unlike ``hash()``)."""
    return zlib.crc32(text.encode()) & 0x7FFFFFFF


def call_key(
    seed: Any,
    stream: Any,
    method: Any,
    count: Any,
    index: Any,
    fold: Any = None,
    lane: Any = None,
    vmap_axis_name: str | None = None,
) -> jax.Array:
    """The key of one mock call (see the module docstring for the order)."""
    key = jax.random.key(seed)
    for part in (stream, method, count, index):
        key = jax.random.fold_in(key, part)
    if fold is not None:
        key = jax.random.fold_in(key, fold)
    if lane is not None:
        key = jax.random.fold_in(key, lane)
    if vmap_axis_name is not None:
        key = jax.random.fold_in(key, jax.lax.axis_index(vmap_axis_name))
    return key


@custom_batching.custom_vmap
def vmap_lanes(key: jax.Array, witness: Any) -> jax.Array:
    """``key``, with the lane index of each ``jax.vmap`` that batches ``witness`` folded in.

    Outside ``vmap`` (or when no leaf of ``witness`` is batched) ``key`` itself. ``jax.vmap``
    without an axis name offers no ``axis_index``: this function's batching rule is where the
    lane is known (``custom_vmap``), and it runs once per ``vmap`` level, innermost first.
    """
    del witness
    return key


@vmap_lanes.def_vmap
def _vmap_lanes_rule(
    axis_size: int, in_batched: Any, key: jax.Array, witness: Any
) -> tuple[jax.Array, bool]:
    key_batched = in_batched[0]
    lanes = jnp.arange(axis_size, dtype=jnp.uint32)

    def fold(k: jax.Array, lane: jax.Array) -> jax.Array:
        # ``k`` may hold the lanes of inner vmaps already (a key array): fold into each.
        f = jax.random.fold_in
        for _ in range(k.ndim):
            f = jax.vmap(f, in_axes=(0, None))
        return f(k, lane)

    keys = jax.vmap(fold)(key, lanes) if key_batched else jax.vmap(lambda i: fold(key, i))(lanes)
    # The rule runs at this vmap's level; an outer vmap that batches the witness too folds its
    # own lane in through the same function.
    return vmap_lanes(keys, witness), True


def lane_witness(tree: Any) -> list[Any] | None:
    """The traced array leaves of a call's inputs, whose batching :func:`vmap_lanes` detects.

    None when no leaf is traced (an eager call outside any transform: nothing to detect).
    Gradients are stopped: the witness only marks which lanes exist.
    """
    leaves = [
        jax.lax.stop_gradient(leaf)
        for leaf in jax.tree.leaves(tree)
        if isinstance(leaf, jax.core.Tracer) and not jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)
    ]
    return leaves or None


#: How many keys each group of a call's draw takes: the number of its dtypes (one draw per
#: dtype, :func:`_draw_by_dtype`), or None for one key (a fill dict or callable, per leaf).
KeyLayout = tuple[int | None, ...]


def _group_keys(
    layout: KeyLayout,
    vmap_axis_name: str | None,
    seed: Any,
    stream: Any,
    method: Any,
    count: Any,
    index: Any,
    fold: Any,
    lane: Any,
    witness: Any = None,
) -> list[list[jax.Array]]:
    """The keys of one call's draw: per group (output, then each sown value), per dtype."""
    key = call_key(seed, stream, method, count, index, fold, lane, vmap_axis_name)
    if witness is not None:
        key = vmap_lanes(key, witness)
    out_key, sown_key = jax.random.split(key)
    keys = [out_key] + [jax.random.fold_in(sown_key, j) for j in range(len(layout) - 1)]
    return [
        [k] if n is None else [jax.random.fold_in(k, d) for d in range(n)]
        for k, n in zip(keys, layout, strict=True)
    ]


def _fill_groups(
    groups: Groups, fill: Any, where: str, keys: list[list[jax.Array]]
) -> list[list[jax.Array]]:
    """The random arrays of one call from its keys (:func:`_group_keys`)."""
    if isinstance(fill, _PerLeaf):
        # A fill dict: each leaf drawn with its own fill.
        return [
            [
                _fill.fill_array(jax.random.fold_in(k, i), spec, leaf_fill, path=where)
                for i, (spec, leaf_fill) in enumerate(zip(group, fills, strict=True))
            ]
            for (k,), group, fills in zip(keys, groups, fill.fills, strict=True)
        ]
    if callable(fill):
        # A user's fill function is given one leaf's spec at a time.
        return [
            [
                _fill.fill_array(jax.random.fold_in(k, i), spec, fill, path=where)
                for i, spec in enumerate(group)
            ]
            for (k,), group in zip(keys, groups, strict=True)
        ]
    return [_draw_by_dtype(ks, group, fill, where) for ks, group in zip(keys, groups, strict=True)]


def _key_layout(groups: Groups, fill: Any) -> KeyLayout:
    if isinstance(fill, _PerLeaf) or callable(fill):
        return (None,) * len(groups)
    return tuple(len({spec.dtype for spec in group}) for group in groups)


def _draw_by_dtype(
    keys: Sequence[Any], group: tuple[jax.ShapeDtypeStruct, ...], fill: Any, where: str
) -> list[jax.Array]:
    """One draw per dtype for all of a group's leaves, sliced and reshaped into them.

    The leaves of one dtype follow the same fill rule, so one flat draw of their total size
    gives each leaf the distribution a draw of its own would. ``keys[d]`` draws the ``d``-th
    dtype, in the order of the group's leaves.
    """
    by_dtype: dict[Any, list[int]] = {}
    for i, spec in enumerate(group):
        by_dtype.setdefault(spec.dtype, []).append(i)
    out: list[Any] = [None] * len(group)
    for key, (dtype, indices) in zip(keys, by_dtype.items(), strict=True):
        sizes = [math.prod(group[i].shape) for i in indices]
        flat = _fill.fill_array(key, jax.ShapeDtypeStruct((sum(sizes),), dtype), fill, path=where)
        if len(indices) > 1:
            # Computed once, then sliced: with threefry lowered unrolled (see draw), XLA would
            # otherwise fuse the whole hash into each slice, and compiling a call with twenty
            # outputs would take seconds. The values are the same.
            flat = jax.lax.optimization_barrier(flat)
        offset = 0
        for i, size in zip(indices, sizes, strict=True):
            spec = group[i]
            leaf = flat[offset : offset + size].reshape(spec.shape)
            out[i] = _fill.apply_sharding(leaf, spec)
            offset += size
    return out


@dataclasses.dataclass(frozen=True)
class _PerLeaf:
    """A fill dict resolved for one call's leaves: one fill per leaf of each group."""

    fills: tuple[tuple[Any, ...], ...]


def _leaf_fills(fill: Any, trees: Sequence[Any], prefixes: Sequence[str]) -> _PerLeaf:
    if isinstance(fill, _fill.copy_input):
        # The arguments pass through to the output; what the call sows gets the default.
        fill = {"**": fill, **{f"{p}/**" if p else "**": None for p in prefixes[1:]}}
        fill = dict(reversed(list(fill.items())))
    return _PerLeaf(
        tuple(
            tuple(
                _fill.fill_for(fill, name)
                for name, leaf in _fill.leaf_paths(tree, prefix)
                if _specs.is_array(leaf)
            )
            for tree, prefix in zip(trees, prefixes, strict=True)
        )
    )


def _hashable(fill: Any) -> bool:
    try:
        hash(fill)
    except TypeError:
        return False
    return True


@functools.lru_cache(maxsize=512)
def _compiled_keys(layout: KeyLayout, vmap_axis_name: str | None) -> Any:
    # The key schedule, compiled once per layout (how many groups and dtypes), whatever the
    # shapes: on CPU its hashes take as long to compile as a draw does.
    return jax.jit(functools.partial(_group_keys, layout, vmap_axis_name))


@functools.lru_cache(maxsize=512)
def _compiled_fill(groups: Groups, fill: Any) -> Any:
    # One compiled function per output signature and fill policy, shared by every mock with
    # that signature: a repeated call costs two dispatches (keys, then values) instead of a
    # dozen eager key and fill operations, and 32 identical blocks compile once. Fill errors
    # were reported when the mock was made (check_fillable), so no path is needed.
    return jax.jit(functools.partial(_fill_groups, groups, fill, "a mock"))


@functools.lru_cache(maxsize=4096)
def _host_prefix(seed: int, stream: int, method: int) -> tuple[int, int]:
    # The part of a mock's key that is the same for each of its calls.
    return _prng.fold_in(_prng.fold_in(_prng.seed_key(seed), stream), method)


def _as_uint32(value: Any) -> int:
    # As ``jax.random.fold_in`` converts its data (``jnp.uint32(value)``).
    return int(np.asarray(value).astype(np.uint32))


def _host_keys(layout: KeyLayout, args: Sequence[Any]) -> np.ndarray:
    """The key data of :func:`_group_keys`, computed on the host (every input known there).

    One row per key, in the order :func:`_fill_groups_from_data` reads them. The same bits as
    the compiled schedule (tested), without compiling it: in a fresh process that compile was
    the largest part of a mock's first call.
    """
    seed, stream, method, count, index, fold, lane = args[:7]
    key = _host_prefix(int(seed), int(stream), int(method))
    for part in (count, index, fold, lane):
        if part is not None:
            key = _prng.fold_in(key, _as_uint32(part))
    out_key, sown_key = _prng.fold_in(key, 0), _prng.fold_in(key, 1)  # split(key)
    keys = [out_key] + [_prng.fold_in(sown_key, j) for j in range(len(layout) - 1)]
    rows: list[tuple[int, int]] = []
    for k, n in zip(keys, layout, strict=True):
        rows += [k] if n is None else [_prng.fold_in(k, d) for d in range(n)]
    return np.array(rows, np.uint32)


def _fill_groups_from_data(
    groups: Groups, fill: Any, layout: KeyLayout, data: jax.Array
) -> list[list[jax.Array]]:
    """:func:`_fill_groups` given the keys as rows of key data (:func:`_host_keys`)."""
    rows = iter(range(data.shape[0]))
    keys = [
        [jax.random.wrap_key_data(data[next(rows)]) for _ in range(1 if n is None else n)]
        for n in layout
    ]
    return _fill_groups(groups, fill, "a mock", keys)


@functools.lru_cache(maxsize=512)
def _compiled_fill_from_data(groups: Groups, fill: Any, layout: KeyLayout) -> Any:
    return jax.jit(functools.partial(_fill_groups_from_data, groups, fill, layout))


def draw(
    info: _mockcore.MockInfo,
    trees: Sequence[Any],
    *,
    method: str,
    count: Any,
    index: Any = 0,
    fold: Any = None,
    lane: Any = None,
    vmap_axis_name: str | None = None,
    inputs: Any = None,
    prefixes: Sequence[str] | None = None,
) -> list[Any]:
    """Fills spec trees (the output's, then each sown value's) with one call's random values.

    Args:
      info: The mock's static data: its seed, stream and fill policy.
      trees: Pytrees whose ``jax.ShapeDtypeStruct`` leaves are filled; other leaves are kept.
      method: The method called.
      count, index, fold, lane, vmap_axis_name: The other parts of the key, in the order of
        the module docstring.
      inputs: The call's arguments ``(args, kwargs)``: under ``jax.vmap``, each lane that
        batches them draws its own values (:func:`vmap_lanes`); ``fills.copy_input`` copies
        one of them.
      prefixes: The path of each tree's leaves for a fill dict (``""`` for the output,
        ``"intermediates/attn_weights"`` for a sown value); default ``""`` each.

    Returns:
      One filled tree per tree of ``trees``.
    """
    parts = [_specs.partition(tree) for tree in trees]
    groups = tuple(tuple(arrays) for arrays, _ in parts)
    prefixes = list(prefixes) if prefixes is not None else [""] * len(trees)
    fill = info.fill
    if isinstance(fill, Mapping) or isinstance(fill, _fill.copy_input):
        fill = _leaf_fills(fill, trees, prefixes)
    layout = _key_layout(groups, fill)
    # NumPy scalars, not jnp ones: each jnp.uint32(...) is a device computation of its own
    # (about 40 us each on CPU), while the compiled draw takes NumPy scalars as they are.
    args = (
        np.uint32(info.seed),
        np.uint32(stable_hash(info.stream)),
        np.uint32(stable_hash(method)),
        count,
        np.uint32(index),
        fold,
        lane,
        lane_witness(inputs),
    )
    # An eager call (no trace, no vmap) compiles on the first use of a signature, with threefry
    # lowered unrolled, as JAX lowers it on GPU and TPU (flaxmock._core.prng; the same bits): on
    # CPU JAX lowers it as a loop, which XLA takes more than twice as long to compile. Under a
    # trace the draw is part of the caller's computation, lowered with it.
    eager = args[-1] is None and not any(isinstance(a, jax.core.Tracer) for a in args[3:7])
    with _prng.unrolled_threefry() if eager else contextlib.nullcontext():
        if not _hashable(fill):  # A fill callable the caches cannot key on: filled eagerly.
            keys = _compiled_keys(layout, vmap_axis_name)(*args)
            filled = _fill_groups(groups, fill, f"{info.path}.{method}", keys)
        elif eager and vmap_axis_name is None and _prng.host_keys_supported():
            # Every input of the key schedule is known here: computed on the host (no compile,
            # no dispatch), the values in one compiled function.
            run = _compiled_fill_from_data(groups, fill, layout)
            filled = run(_host_keys(layout, args))
        else:
            keys = _compiled_keys(layout, vmap_axis_name)(*args)
            filled = _compiled_fill(groups, fill)(keys)
    if isinstance(fill, _PerLeaf):
        filled = _copy_inputs(filled, groups, fill, inputs, f"{info.path}.{method}")
    return [rebuild(list(arrays)) for (_, rebuild), arrays in zip(parts, filled, strict=True)]


def draw_call(
    info: _mockcore.MockInfo,
    out_spec: Any,
    appended: Sequence[tuple[str, Any]],
    written: Sequence[tuple[str, Any]] = (),
    *,
    method: str,
    count: Any,
    index: Any = 0,
    fold: Any = None,
    lane: Any = None,
    vmap_axis_name: str | None = None,
    inputs: Any = None,
) -> tuple[Any, list[Any], list[Any]]:
    """One call's output and sown values, with state drawn once (both front doors).

    Values sown by appending (``sow``'s default) are drawn anew on every call, with the output.
    Values written whole (state; a ``sow`` with a custom ``reduce_fn``) are drawn from a key
    without the call count (count 0, dispatch index :data:`WRITTEN_INDEX`): every call writes
    the same value, so state is initialised once, not redrawn per call, and never equals what
    the first call appends.

    Args:
      info: The mock's static data.
      out_spec: The output's spec tree.
      appended: ``(path, spec tree)`` of each value sown by appending (the path as fill dicts
        name it, ``"intermediates/attn_weights"``).
      written: ``(path, spec tree)`` of each value written whole.
      method, count, index, fold, lane, vmap_axis_name, inputs: As for :func:`draw`.

    Returns:
      ``(output, appended values, written values)``.
    """
    parts = dict(method=method, fold=fold, lane=lane, vmap_axis_name=vmap_axis_name, inputs=inputs)
    out, *appended_values = draw(
        info,
        [out_spec, *(spec for _, spec in appended)],
        count=count,
        index=index,
        prefixes=["", *(path for path, _ in appended)],
        **parts,
    )
    written_values: list[Any] = []
    if written:
        # No output (an empty first tree); a fixed count and index: the same on every call.
        _, *written_values = draw(
            info,
            [(), *(spec for _, spec in written)],
            count=np.uint32(0),
            index=WRITTEN_INDEX,
            prefixes=["", *(path for path, _ in written)],
            **parts,
        )
    return out, appended_values, written_values


def _copy_inputs(
    filled: list[list[Any]], groups: Groups, fill: _PerLeaf, inputs: Any, where: str
) -> list[list[Any]]:
    """Puts the call's arguments where the fill is ``fills.copy_input``."""
    out = [list(group) for group in filled]
    for g, (group, fills) in enumerate(zip(groups, fill.fills, strict=True)):
        for i, (spec, leaf_fill) in enumerate(zip(group, fills, strict=True)):
            if not isinstance(leaf_fill, _fill.copy_input):
                continue
            if inputs is None:
                raise _errors.FillError(
                    f"{where}: {leaf_fill!r} needs the call's arguments, which were not "
                    "given to the draw (inputs=None). Fix: pass the call's (args, kwargs) as "
                    "inputs=."
                )
            args, kwargs = inputs
            try:
                value = leaf_fill.pick(args, kwargs)
            except _errors.FillError as e:
                raise _errors.FillError(f"{where}: {e}") from None
            if (
                tuple(getattr(value, "shape", ())) != tuple(spec.shape)
                or getattr(value, "dtype", None) != spec.dtype
            ):
                raise _errors.FillError(
                    f"{where}: {leaf_fill!r} picks {_errors.describe_value(value)} for an "
                    f"output of {spec.dtype}{list(spec.shape)}; the argument must have the "
                    "output's shape and dtype. Fix: pick another argument, or another fill."
                )
            out[g][i] = _fill.apply_sharding(jnp.asarray(value), spec)
    return out
