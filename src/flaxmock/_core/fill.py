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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

from flaxmock._core import errors as _errors
from flaxmock._core import prng as _prng
from flaxmock._core import specs as _specs

#: A fill policy: ``None``/``"normal"`` (the default rules), ``"zeros"``, ``"ones"``,
#: ``"uniform"``, or a callable ``(key, spec) -> array`` returning an array of exactly ``spec``'s
#: shape and dtype.
Fill: TypeAlias = None | str | Callable[[jax.Array, jax.ShapeDtypeStruct], jax.Array]

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
    sharding = getattr(spec, "sharding", None)
    if not isinstance(sharding, jax.sharding.Sharding):
        return x
    if isinstance(x, jax.core.Tracer):
        return jax.lax.with_sharding_constraint(x, sharding)
    return jax.device_put(x, sharding)


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
    # Eager draws compile jax.random's functions on first use: lowered fused (same bits, no
    # 8x scratch on CPU; see flaxmock._core.prng).
    with _prng.unrolled_threefry():
        filled = [
            fill_array(jax.random.fold_in(key, i), leaf, fill, path=path)
            if _specs.is_spec(leaf)
            else leaf
            for i, leaf in enumerate(leaves)
        ]
    return jax.tree_util.tree_unflatten(treedef, filled)


def check_fillable(specs: Any, fill: Fill = None, *, path: str = "") -> None:
    """Checks, without filling, that :func:`fill_tree` can fill ``specs`` with ``fill``.

    Called when a mock is created, so that a bad dtype is reported there rather than from inside
    a trace. With a callable ``fill``, the callable is traced abstractly once per spec
    (``jax.eval_shape``) to check the shapes and dtypes it returns.

    Args:
      specs: A pytree whose ``jax.ShapeDtypeStruct`` leaves are to be filled.
      fill: The fill policy (see :func:`fill_array`).
      path: The module path (and method) the tree is for, named in error messages.

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
