"""Random fill rules: turn a pytree of ``jax.ShapeDtypeStruct`` into arrays of those exact specs.

Mocks record the specs of a call's real output once and fill them anew on every call, so these
functions are pure functions of the key: they work eagerly and under ``jax.jit``/``jax.vmap``.

The default rules (``fill=None`` or ``"normal"``) by dtype:

* floating (``float16/32/64``, ``bfloat16``, every ``float8``/``float6``/``float4`` variant):
  standard normal drawn in ``float32`` (``float64`` for ``float64``) then cast, so the narrow
  formats get the rounded values of a normal sample; unsigned-only formats
  (``float8_e8m0fnu``) get its absolute value;
* complex: independent standard normal real and imaginary parts;
* signed integers: uniform in ``[-100, 100]``, clamped to the dtype's range (``int4``: ``[-8, 7]``);
* unsigned integers: uniform in ``[0, 100]``, clamped to the dtype's range;
* ``bool``: Bernoulli(0.5);
* typed PRNG key arrays (``jax.random.key``): fresh keys of the same key implementation.

Other dtypes (object, string, void, ...) raise
:class:`~flaxmock._core.errors.UnsupportedDtypeError`; :func:`check_fillable` reports them all
at mock-creation time instead of inside a trace.

Fills that respect meaning (public as ``flaxmock.fills``): random numbers of the right shape
can still be wrong in kind (expert indices beyond the number of experts, negative variances,
attention weights that do not sum to one). :func:`indices`, :func:`nonnegative`,
:func:`probabilities` and :func:`copy_input` draw values with those meanings; a fill may also
be a dict from output paths to fills (:func:`fill_for`), so that one mock fills each output
its own way: ``fill={"1": fills.indices(64)}`` for a router returning ``(weights, indices)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

from flaxmock._core import errors as _errors
from flaxmock._core import prng as _prng
from flaxmock._core import select as _select
from flaxmock._core import specs as _specs

#: A fill policy: ``None``/``"normal"`` (the default rules), ``"zeros"``, ``"ones"``,
#: ``"uniform"``, a callable ``(key, spec) -> array`` returning an array of exactly ``spec``'s
#: shape and dtype (``flaxmock.fills``' are such callables), or a dict from output path globs
#: to any of these (see :func:`fill_for`).
Fill: TypeAlias = Any

#: The named fill policies.
FILL_POLICIES: tuple[str, ...] = ("normal", "zeros", "ones", "uniform")

# The integer range drawn from by default: small enough to be valid indices into most axes and to
# keep sums and products of mocked integers far from overflow, wide enough to look random.
_INT_LOW = -100
_INT_HIGH = 100

_FIX_HINT = (
    "To mock it anyway, pass `fill=` a callable `(key, spec) -> array` that builds such arrays, "
    "or mock the call with an explicit `out=` spec of supported dtypes."
)


def _is_key_dtype(dtype: Any) -> bool:
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _is_supported(dtype: Any) -> bool:
    """Whether the default rules can produce arrays of ``dtype``."""
    if _is_key_dtype(dtype):
        return True
    return any(
        jax.dtypes.issubdtype(dtype, kind)
        for kind in (jnp.floating, jnp.complexfloating, jnp.integer, jnp.bool_)
    )


def _at(path: str) -> str:
    return f" at {path}" if path else ""


def _unsupported_error(problems: list[tuple[str, Any]], path: str) -> _errors.UnsupportedDtypeError:
    """Builds one error listing every ``(tree path, dtype)`` the rules cannot fill."""
    lines = "\n".join(f"  {leaf or '<leaf>'}: {dtype}" for leaf, dtype in problems)
    return _errors.UnsupportedDtypeError(
        f"Cannot fill the output{_at(path)}: the random fill rules do not cover "
        f"these dtypes:\n{lines}\n"
        "Supported: floating (incl. bfloat16, float8, float4), complex, integer, bool and "
        f"typed PRNG key arrays. {_FIX_HINT}"
    )


def _check_policy(fill: Fill) -> None:
    if isinstance(fill, Mapping):
        for key, value in fill.items():
            if not isinstance(key, str):
                raise _errors.FillError(
                    f"A fill dict maps output paths (strings such as 'indices', '1', "
                    f"'intermediates/**') to fills; got the key {key!r}."
                )
            if isinstance(value, Mapping):
                raise _errors.FillError(f"The fill for {key!r} is a dict; give one fill per path.")
            _check_policy(value)
        return
    if fill is None or callable(fill):
        return
    if isinstance(fill, str) and fill in FILL_POLICIES:
        return
    raise _errors.FillError(
        f"Unknown fill policy {fill!r}: expected None, one of "
        f"{', '.join(map(repr, FILL_POLICIES))}, or a callable `(key, spec) -> array`."
    )


def _fresh_keys(key: jax.Array, shape: tuple[int, ...], dtype: Any) -> jax.Array:
    # The key implementation lives only on the private `_impl` of the key dtype; it is needed so
    # the result has the spec's dtype (`key<rbg>` stays `key<rbg>` whatever `key` is).
    impl = dtype._impl
    data = jax.random.bits(key, (*shape, *impl.key_shape), jnp.uint32)
    return jax.random.wrap_key_data(data, impl=impl)


def _draw_ints(key: jax.Array, shape: tuple[int, ...], dtype: Any) -> jax.Array:
    info = jnp.iinfo(dtype)
    low = max(_INT_LOW if jax.dtypes.issubdtype(dtype, jnp.signedinteger) else 0, int(info.min))
    high = min(_INT_HIGH, int(info.max))
    # Drawn in int32 (every clamped bound fits) and cast: `randint` in int4 or uint64 directly is
    # either unsupported or needs x64.
    return jax.random.randint(key, shape, low, high + 1, dtype=jnp.int32).astype(dtype)


def _draw_floats(key: jax.Array, shape: tuple[int, ...], dtype: Any, uniform: bool) -> jax.Array:
    # Sampling in a narrow format directly is unsupported (float8, float4) or biased (bf16);
    # sample in float32 (float64 for float64, to keep its precision) and round once.
    wide = jnp.float64 if jnp.dtype(dtype).itemsize >= 8 else jnp.float32
    if uniform:
        return jax.random.uniform(key, shape, wide).astype(dtype)
    x = jax.random.normal(key, shape, wide)
    if float(jnp.finfo(dtype).min) > 0:
        # Unsigned formats (float8_e8m0fnu) turn negative values into NaN.
        x = jnp.abs(x)
    return x.astype(dtype)


def _fill_default(key: jax.Array, spec: jax.ShapeDtypeStruct, policy: str, path: str) -> jax.Array:
    shape, dtype = tuple(spec.shape), spec.dtype
    if _is_key_dtype(dtype):
        # A key has no zero or one: every policy gives fresh keys.
        return _fresh_keys(key, shape, dtype)
    if not _is_supported(dtype):
        raise _unsupported_error([("", dtype)], path)
    if policy == "zeros":
        return jnp.zeros(shape, dtype)
    if policy == "ones":
        return jnp.ones(shape, dtype)
    uniform = policy == "uniform"
    if jax.dtypes.issubdtype(dtype, jnp.bool_):
        return jax.random.bernoulli(key, 0.5, shape)
    if jax.dtypes.issubdtype(dtype, jnp.integer):
        return _draw_ints(key, shape, dtype)
    if jax.dtypes.issubdtype(dtype, jnp.complexfloating):
        part = jnp.finfo(dtype).dtype
        re_key, im_key = jax.random.split(key)
        re = _draw_floats(re_key, shape, part, uniform)
        im = _draw_floats(im_key, shape, part, uniform)
        return jax.lax.complex(re, im).astype(dtype)
    return _draw_floats(key, shape, dtype, uniform)


def apply_sharding(x: jax.Array, spec: jax.ShapeDtypeStruct) -> jax.Array:
    """``x`` with ``spec``'s sharding: placed (a device sharding) or typed (explicit mesh)."""
    sharding = getattr(spec, "sharding", None)
    if not isinstance(sharding, jax.sharding.Sharding):
        return x
    if isinstance(sharding, jax.sharding.NamedSharding) and isinstance(
        sharding.mesh, jax.sharding.AbstractMesh
    ):
        # A sharding in the type (explicit-sharding mesh): no devices to place on, eagerly or
        # traced; `reshard` gives the array that type on the mesh in context.
        return jax.sharding.reshard(x, sharding)
    if isinstance(x, jax.core.Tracer):
        return jax.lax.with_sharding_constraint(x, sharding)
    return jax.device_put(x, sharding)


def zeros(spec: jax.ShapeDtypeStruct) -> jax.Array:
    """Zeros of ``spec``'s shape and dtype, with its sharding (typed or placed) if it has one."""
    return apply_sharding(jnp.zeros(spec.shape, spec.dtype), spec)


def fill_array(
    key: jax.Array, spec: jax.ShapeDtypeStruct, fill: Fill = None, *, path: str = ""
) -> jax.Array:
    """Returns a random array of exactly ``spec``'s shape and dtype.

    Args:
      key: A PRNG key; the result is a pure function of it.
      spec: The shape and dtype to produce.
      fill: The fill policy: None or ``"normal"`` (the default rules of this module),
        ``"zeros"``, ``"ones"``, ``"uniform"`` (floats in ``[0, 1)``, integers and bools as by
        default), or a callable ``(key, spec) -> array``.
      path: The module path (and method) the array is for, named in error messages.

    Returns:
      An array with ``spec``'s shape and dtype (and sharding, if ``spec`` carries one).

    Raises:
      UnsupportedDtypeError: ``spec.dtype`` is not covered by the fill rules.
      FillError: ``fill`` is an unknown policy, or a callable returned the wrong shape or dtype.
      InvalidArgumentError: ``key`` is not a PRNG key, or ``spec`` not a
        ``jax.ShapeDtypeStruct``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> x = fill_array(jax.random.key(0), jax.ShapeDtypeStruct((2, 3), jnp.bfloat16))
      >>> x.shape, x.dtype
      ((2, 3), dtype(bfloat16))
      >>> fill_array(jax.random.key(0), jax.ShapeDtypeStruct((3,), jnp.int8), "zeros")
      Array([0, 0, 0], dtype=int8)
    """
    _check_policy(fill)
    _check_key_and_spec(key, spec, path)
    fill = fill_for(fill, "")
    if callable(fill):
        out = fill(key, spec)
        shape = getattr(out, "shape", None)
        dtype = getattr(out, "dtype", None)
        if shape != tuple(spec.shape) or dtype != spec.dtype:
            raise _errors.FillError(
                f"The fill callable {fill!r}{_at(path)} returned "
                f"{_short(shape, dtype)} for a {_short(spec.shape, spec.dtype)} spec. A fill "
                "callable must return an array of exactly `spec.shape` and `spec.dtype`."
            )
    else:
        out = _fill_default(key, spec, fill or "normal", path)
    return apply_sharding(out, spec)


def _check_key_and_spec(key: Any, spec: Any, path: str) -> None:
    is_key = isinstance(key, jax.Array | np.ndarray) and (
        jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
        or (key.dtype == np.uint32 and key.shape[-1:] == (2,))
    )
    if not is_key:
        raise _errors.InvalidArgumentError(
            f"fill{_at(path)}: key must be a PRNG key (jax.random.key(0)), got "
            f"{_errors.describe_value(key)}."
        )
    if not _specs.is_spec(spec):
        raise _errors.InvalidArgumentError(
            f"fill{_at(path)}: spec must be a jax.ShapeDtypeStruct, got "
            f"{_errors.describe_value(spec)}."
        )


def _short(shape: Any, dtype: Any) -> str:
    return f"{dtype}{list(shape) if shape is not None else ''}"


def fill_tree(key: jax.Array, specs: Any, fill: Fill = None, *, path: str = "") -> Any:
    """Replaces every ``jax.ShapeDtypeStruct`` leaf of ``specs`` with a random array.

    Leaf ``i`` (in ``jax.tree_util`` order) is filled with ``jax.random.fold_in(key, i)``, so
    leaves differ from each other and each depends only on ``key`` and its position. Other leaves
    (None, Python numbers, strings, arrays) are returned unchanged.

    Args:
      key: A PRNG key; the result is a pure function of it.
      specs: A pytree whose ``jax.ShapeDtypeStruct`` leaves are to be filled.
      fill: The fill policy (see :func:`fill_array`).
      path: The module path (and method) the tree is for, named in error messages.

    Returns:
      ``specs`` with every ``jax.ShapeDtypeStruct`` replaced by an array of its shape and dtype.

    Raises:
      UnsupportedDtypeError: a spec's dtype is not covered by the fill rules.
      FillError: ``fill`` is an unknown policy, or a callable returned the wrong shape or dtype.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> specs = {"h": jax.ShapeDtypeStruct((2, 4), jnp.float32), "n": 3, "mask": None}
      >>> out = fill_tree(jax.random.key(0), specs)
      >>> out["h"].shape, out["n"], out["mask"]
      ((2, 4), 3, None)
    """
    _check_policy(fill)
    leaves, treedef = jax.tree_util.tree_flatten(specs, is_leaf=_specs.is_spec)
    names = [name for name, _ in leaf_paths(specs)]
    # Eager draws compile jax.random's functions on first use: lowered fused (same bits, no
    # 8x scratch on CPU; see flaxmock._core.prng).
    with _prng.unrolled_threefry():
        filled = [
            fill_array(jax.random.fold_in(key, i), leaf, fill_for(fill, name), path=path)
            if _specs.is_spec(leaf)
            else leaf
            for i, (name, leaf) in enumerate(zip(names, leaves, strict=True))
        ]
    return jax.tree_util.tree_unflatten(treedef, filled)


def check_fillable(specs: Any, fill: Fill = None, *, path: str = "", prefix: str = "") -> None:
    """Checks, without filling, that :func:`fill_tree` can fill ``specs`` with ``fill``.

    Called when a mock is created, so that a bad dtype is reported there rather than from inside
    a trace. With a callable ``fill``, the callable is traced abstractly once per spec
    (``jax.eval_shape``) to check the shapes and dtypes it returns.

    Args:
      specs: A pytree whose ``jax.ShapeDtypeStruct`` leaves are to be filled.
      fill: The fill policy (see :func:`fill_array`).
      path: The module path (and method) the tree is for, named in error messages.
      prefix: The path of the tree's leaves for a fill dict (``"intermediates/w"`` for a
        sown value; ``""`` for the output).

    Raises:
      UnsupportedDtypeError: one or more specs have dtypes the rules do not cover; the message
        lists each with its tree path.
      FillError: ``fill`` is an unknown policy, or a callable returns the wrong shape or dtype.

    Examples:
      >>> import jax, numpy as np
      >>> check_fillable({"a": jax.ShapeDtypeStruct((2,), np.float32)})
      >>> bad = {"a": jax.ShapeDtypeStruct((2,), np.object_)}
      >>> check_fillable(bad, path="enc/tok")  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      flaxmock._core.errors.UnsupportedDtypeError: Cannot fill the output at enc/tok: ...
    """
    _check_policy(fill)
    if isinstance(fill, Mapping):
        for name, leaf in leaf_paths(specs, prefix):
            if _specs.is_spec(leaf):
                check_fillable(leaf, fill_for(fill, name), path=f"{path} ({name or 'output'})")
        return
    leaves = jax.tree_util.tree_flatten_with_path(specs, is_leaf=_specs.is_spec)[0]
    if callable(fill):
        key = jax.random.key(0)
        for _, leaf in leaves:
            # The callable takes responsibility for dtypes the rules do not cover; those cannot
            # be traced, so only the others are checked.
            if _specs.is_spec(leaf) and _is_supported(leaf.dtype):
                try:
                    # Abstract evaluation runs the result check without computing anything.
                    jax.eval_shape(lambda k, leaf=leaf: fill_array(k, leaf, fill, path=path), key)
                except jax.errors.JAXTypeError:
                    # A callable that needs concrete values (NumPy on the key) can still work
                    # in an eager call; it is checked there.
                    pass
        return
    problems = [
        (jax.tree_util.keystr(keys), leaf.dtype)
        for keys, leaf in leaves
        if _specs.is_spec(leaf) and not _is_supported(leaf.dtype)
    ]
    if problems:
        raise _unsupported_error(problems, path)


# Fills that respect meaning (public as ``flaxmock.fills``). Each is a frozen dataclass, so
# equal fills are equal and hashable: the compiled draw of flaxmock._core.mockdraw is shared.


def _need(spec: jax.ShapeDtypeStruct, kinds: tuple[Any, ...], what: str, fill: Any) -> None:
    if not any(jax.dtypes.issubdtype(spec.dtype, k) for k in kinds):
        raise _errors.FillError(
            f"{fill!r} fills {what} arrays, but this output is {_short(spec.shape, spec.dtype)}. "
            "Fix: give this fill only to the outputs it is meant for, with a fill dict "
            "({'indices': fill, ...}; see flaxmock.fills)."
        )


@dataclasses.dataclass(frozen=True)
class indices:  # noqa: N801 (a fill reads as a function: fills.indices(64))
    """Integers uniform in ``[0, bound)``: valid indices into an axis of length ``bound``.

    For a mocked MoE router's expert indices, token ids, a graph's node indices.

    Attributes:
      bound: The exclusive upper bound (the axis length).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flaxmock import fills
      >>> x = fills.indices(4)(jax.random.key(0), jax.ShapeDtypeStruct((1000,), jnp.int32))
      >>> int(x.min()), int(x.max())
      (0, 3)
    """

    bound: int

    def __post_init__(self) -> None:
        if not isinstance(self.bound, int) or self.bound < 1:
            raise _errors.FillError(
                f"fills.indices(bound) needs a positive int, got {self.bound!r}."
            )

    def __call__(self, key: jax.Array, spec: jax.ShapeDtypeStruct) -> jax.Array:
        _need(spec, (jnp.integer,), "integer", self)
        high = min(self.bound, int(jnp.iinfo(spec.dtype).max) + 1)
        drawn = jax.random.randint(key, tuple(spec.shape), 0, high, dtype=jnp.int32)
        return drawn.astype(spec.dtype)


@dataclasses.dataclass(frozen=True)
class nonnegative:  # noqa: N801
    """Non-negative values: ``|normal|`` for floats, ``[0, 100]`` for integers.

    For variances and other normalisation statistics, counts, lengths, norms.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flaxmock import fills
      >>> spec = jax.ShapeDtypeStruct((9,), jnp.float32)
      >>> bool((fills.nonnegative()(jax.random.key(0), spec) >= 0).all())
      True
    """

    def __call__(self, key: jax.Array, spec: jax.ShapeDtypeStruct) -> jax.Array:
        _need(spec, (jnp.floating, jnp.integer), "float or integer", self)
        shape = tuple(spec.shape)
        if jax.dtypes.issubdtype(spec.dtype, jnp.integer):
            high = min(_INT_HIGH, int(jnp.iinfo(spec.dtype).max))
            return jax.random.randint(key, shape, 0, high + 1, dtype=jnp.int32).astype(spec.dtype)
        return jnp.abs(_draw_floats(key, shape, spec.dtype, uniform=False))


@dataclasses.dataclass(frozen=True)
class probabilities:  # noqa: N801
    """Non-negative values that sum to one along ``axis`` (a softmax of normal draws).

    For attention weights (``axis=-1``: over the keys), a router's gates, class probabilities.

    Attributes:
      axis: The axis the values sum to one along.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flaxmock import fills
      >>> p = fills.probabilities()(jax.random.key(0), jax.ShapeDtypeStruct((2, 5), jnp.float32))
      >>> bool(jnp.allclose(p.sum(-1), 1.0))
      True
    """

    axis: int = -1

    def __call__(self, key: jax.Array, spec: jax.ShapeDtypeStruct) -> jax.Array:
        _need(spec, (jnp.floating,), "floating-point", self)
        shape = tuple(spec.shape)
        if not -len(shape) <= self.axis < max(len(shape), 1) or not shape:
            raise _errors.FillError(
                f"{self!r}: the output {_short(spec.shape, spec.dtype)} has no axis {self.axis}."
            )
        logits = jax.random.normal(key, shape, jnp.float32)
        return jax.nn.softmax(logits, axis=self.axis).astype(spec.dtype)


@dataclasses.dataclass(frozen=True)
class copy_input:  # noqa: N801
    """A copy of one of the call's arguments (for a mock that should pass its input through).

    A residual block or a norm mocked to be the identity; a cache returned as it was given.
    Only mocks, which see their arguments, can use it; the argument must have the output's
    exact shape and dtype.

    Attributes:
      argument: The positional index (``0``: the first argument) or keyword name of the
        argument; ``path`` selects a leaf inside it (``"k"`` of a dict argument) with the
        output-path syntax of fill dicts.
      path: ``/``-joined path of the leaf inside the argument (``""``: the argument itself).

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, flaxmock
      >>> x = jnp.arange(6.0).reshape(2, 3)
      >>> tree = flaxmock.unflaxify(nn.LayerNorm(), x)
      >>> mocked = flaxmock.mock(tree, "", fill=flaxmock.fills.copy_input(0))
      >>> bool((flaxmock.call(mocked, x) == x).all())
      True
    """

    argument: int | str = 0
    path: str = ""

    def __call__(self, key: jax.Array, spec: jax.ShapeDtypeStruct) -> jax.Array:
        # Drawn as zeros here; the mock puts the argument in (see pick_input).
        return jnp.zeros(spec.shape, spec.dtype)

    def pick(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        """The chosen argument leaf of a call, or raises ``FillError``."""
        if isinstance(self.argument, int):
            if not -len(args) <= self.argument < len(args):
                raise _errors.FillError(f"{self!r}: the call has {len(args)} positional arguments.")
            value = args[self.argument]
        else:
            if self.argument not in kwargs:
                raise _errors.FillError(
                    f"{self!r}: the call has no keyword argument {self.argument!r} "
                    f"(it has {sorted(kwargs)!r})."
                )
            value = kwargs[self.argument]
        for name, leaf in leaf_paths(value):
            if name == self.path:
                return leaf
        raise _errors.FillError(
            f"{self!r}: the argument has no leaf at {self.path!r} (it has "
            f"{[n for n, _ in leaf_paths(value)]!r})."
        )


def leaf_paths(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(path, leaf)`` of every leaf (specs and arrays included), paths ``/``-joined.

    A dict key or attribute gives its name, a sequence index its number: the output of
    ``(weights, indices)`` has leaves ``0`` and ``1``, of ``{"h": ..., "n": ...}`` ``h``, ``n``.
    """
    out = []
    for keys, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=_specs.is_spec)[0]:
        parts = [prefix] if prefix else []
        for k in keys:
            for attr in ("key", "idx", "name"):
                if hasattr(k, attr):
                    parts.append(str(getattr(k, attr)))
                    break
            else:
                parts.append(str(k))
        out.append(("/".join(parts), leaf))
    return out


def fill_for(fill: Fill, path: str) -> Fill:
    """The fill of the output leaf at ``path`` (``"1"``, ``"indices"``, ``"intermediates/w"``).

    A dict ``{glob: fill}`` gives the fill of its first key whose glob matches the path
    (``*`` within a segment, ``**`` across segments, as in ``where``); unmatched leaves get the
    default (``None``). Any other fill applies to every leaf.
    """
    if not isinstance(fill, Mapping):
        return fill
    for glob, value in fill.items():
        if _select.match_path(glob, path):
            return value
    return None


def check_fill_keys(fill: Fill, paths: Sequence[str], *, where: str) -> None:
    """Raises :class:`FillError` if a key of a fill dict matches none of ``paths``.

    A key that matches nothing (a typo, an output the mock does not have) would leave the
    output it meant with the default fill, silently.
    """
    if not isinstance(fill, Mapping):
        return
    dead = [k for k in fill if not any(_select.match_path(k, p) for p in paths)]
    if dead:
        raise _errors.FillError(
            f"{where}: the fill dict's keys {dead!r} match no output of the mocked calls. The "
            f"outputs are {list(paths)[:12]!r}{' and more' if len(paths) > 12 else ''} (sown "
            "values under their collection, 'intermediates/...'). Fix: use these paths, or "
            "'**' for every output."
        )
