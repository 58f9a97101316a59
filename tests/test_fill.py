"""Tests of the random fill rules in ``flaxmock._core.fill``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from flaxmock._core import fill as _fill
from flaxmock._core.errors import FillError, UnsupportedDtypeError

KEY = jax.random.key(0)
THREEFRY = jax.random.key(0).dtype
RBG = jax.random.key(0, impl="rbg").dtype

FLOAT_DTYPES = [
    jnp.float16,
    jnp.float32,
    jnp.bfloat16,
    jnp.float8_e4m3fn,
    jnp.float8_e5m2,
    jnp.float8_e4m3fnuz,
    jnp.float8_e4m3b11fnuz,
    jnp.float8_e5m2fnuz,
    jnp.float8_e8m0fnu,
]
# Newer formats, tested where this jax has them.
FLOAT_DTYPES += [
    getattr(jnp, name)
    # float6 formats are left out: XLA cannot yet create arrays of them, so no output has them.
    for name in ("float8_e3m4", "float8_e4m3", "float4_e2m1fn")
    if hasattr(jnp, name)
]
INT_DTYPES = [jnp.int8, jnp.int16, jnp.int32, jnp.uint8, jnp.uint16, jnp.uint32]
INT_DTYPES += [
    getattr(jnp, name) for name in ("int4", "uint4", "int2", "uint2") if hasattr(jnp, name)
]
# Dtypes with at most 4 bits of randomness per value, for which short arrays may collide.
LOW_BIT_DTYPES = tuple(
    getattr(jnp, n) for n in ("int4", "uint4", "int2", "uint2", "float4_e2m1fn") if hasattr(jnp, n)
) + (jnp.float8_e8m0fnu,)
DTYPES = [*FLOAT_DTYPES, *INT_DTYPES, jnp.bool_, jnp.complex64, THREEFRY, RBG]
# Scalar, zero-size and n-d. Tests reuse these shapes: every new shape costs compilations.
SHAPES = [(), (3, 0, 2), (2, 3, 4)]
ND = (2, 3, 4)
BIG = (20_000,)  # For statistical checks.


def _is_key(dtype) -> bool:
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _dtype_id(dtype) -> str:
    return str(dtype) if _is_key(dtype) else jnp.dtype(dtype).name


def _as_numpy(x: jax.Array) -> np.ndarray:
    """Host values that NumPy compares exactly: key data for keys, widened narrow formats."""
    if _is_key(x.dtype):
        return np.asarray(jax.random.key_data(x))
    if jax.dtypes.issubdtype(x.dtype, jnp.floating):
        return np.asarray(x.astype(jnp.float32))
    if jax.dtypes.issubdtype(x.dtype, jnp.integer):
        return np.asarray(x.astype(jnp.int32))
    return np.asarray(x)


def _assert_matches(x: jax.Array, spec: jax.ShapeDtypeStruct) -> None:
    assert isinstance(x, jax.Array)
    assert x.shape == spec.shape
    assert x.dtype == spec.dtype


# --- Table-driven: every dtype x shape x policy, eager and jitted. ---------------------------


# Each table is filled as one tree (one compilation) and checked leaf by leaf: compiling each
# case separately would take most of a minute.
TABLE = {f"{_dtype_id(d)}{list(s)}": jax.ShapeDtypeStruct(s, d) for d in DTYPES for s in SHAPES}


def _check_table(out, specs) -> None:
    assert out.keys() == specs.keys()
    for name, spec in specs.items():
        assert (out[name].shape, out[name].dtype) == (spec.shape, spec.dtype), name


def test_every_dtype_and_shape_traced():
    # Abstract evaluation traces exactly what jit traces, without compiling 70 fills.
    _check_table(jax.eval_shape(lambda k: _fill.fill_tree(k, TABLE), KEY), TABLE)


@pytest.mark.slow  # the jitted variant runs by default
def test_every_dtype_and_shape_eager():
    out = _fill.fill_tree(KEY, TABLE)
    _check_table(out, TABLE)
    for name, spec in TABLE.items():
        assert isinstance(out[name], jax.Array), name
        if _is_key(spec.dtype) and out[name].size:
            # The keys are usable (their dtype, checked above, carries the key implementation).
            assert jax.random.normal(out[name].reshape(-1)[0]).dtype == jnp.float32, name


ND_TABLE = {_dtype_id(d): jax.ShapeDtypeStruct(ND, d) for d in DTYPES}
# Shared by the tests below, so that it compiles once.
_fill_nd_jitted = jax.jit(lambda k: _fill.fill_tree(k, ND_TABLE))


def test_every_dtype_jitted():
    _check_table(_fill_nd_jitted(KEY), ND_TABLE)


@pytest.mark.parametrize("policy", [None, "normal", "zeros", "ones", "uniform"])
def test_every_dtype_under_each_policy(policy):
    _check_table(_fill.fill_tree(KEY, ND_TABLE, policy), ND_TABLE)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_fill_is_a_pure_function_of_the_key(jit):
    fn = _fill_nd_jitted if jit else (lambda k: _fill.fill_tree(k, ND_TABLE))
    a, b, c = fn(KEY), fn(KEY), fn(jax.random.key(1))
    for name in ND_TABLE:
        np.testing.assert_array_equal(_as_numpy(a[name]), _as_numpy(b[name]), err_msg=name)
        assert not np.array_equal(_as_numpy(a[name]), _as_numpy(c[name])), name


def test_jit_and_eager_agree_bit_for_bit():
    eager, jitted = _fill.fill_tree(KEY, ND_TABLE), _fill_nd_jitted(KEY)
    for name in ND_TABLE:
        np.testing.assert_array_equal(_as_numpy(eager[name]), _as_numpy(jitted[name]), name)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=_dtype_id)
def test_floats_are_finite_and_not_constant(dtype):
    x = _fill.fill_array(KEY, jax.ShapeDtypeStruct(BIG, dtype)).astype(jnp.float32)
    assert bool(jnp.all(jnp.isfinite(x)))
    assert len(np.unique(np.asarray(x))) > 1


def test_normal_has_standard_moments():
    x = _fill.fill_array(KEY, jax.ShapeDtypeStruct(BIG, jnp.float32))
    assert abs(float(x.mean())) < 0.05
    assert abs(float(x.std()) - 1.0) < 0.05
    assert float(x.min()) < 0.0


def test_complex_parts_are_independent_normals():
    z = _fill.fill_array(KEY, jax.ShapeDtypeStruct(BIG, jnp.complex64))
    assert abs(float(z.real.std()) - 1) < 0.05
    assert abs(float(z.imag.std()) - 1) < 0.05
    assert abs(float(jnp.corrcoef(z.real, z.imag)[0, 1])) < 0.05


@pytest.mark.parametrize("policy", [None, "uniform"])
@pytest.mark.parametrize("dtype", INT_DTYPES, ids=_dtype_id)
def test_int_ranges(dtype, policy):
    x = _fill.fill_array(KEY, jax.ShapeDtypeStruct(BIG, dtype), policy).astype(jnp.int32)
    info = jnp.iinfo(dtype)
    signed = jax.dtypes.issubdtype(dtype, jnp.signedinteger)
    low, high = max(-100 if signed else 0, int(info.min)), min(100, int(info.max))
    assert int(x.min()) == low
    assert int(x.max()) == high


def test_bool_is_bernoulli_half():
    x = _fill.fill_array(KEY, jax.ShapeDtypeStruct(BIG, jnp.bool_))
    assert abs(float(x.mean()) - 0.5) < 0.03


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.int8, jnp.bool_, jnp.complex64])
def test_zeros_and_ones(dtype):
    spec = jax.ShapeDtypeStruct((3, 2), dtype)
    np.testing.assert_array_equal(_fill.fill_array(KEY, spec, "zeros"), np.zeros((3, 2), dtype))
    np.testing.assert_array_equal(_fill.fill_array(KEY, spec, "ones"), np.ones((3, 2), dtype))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16, jnp.complex64])
def test_uniform_floats_in_unit_interval(dtype):
    x = _fill.fill_array(KEY, jax.ShapeDtypeStruct(BIG, dtype), "uniform")
    parts = [x.real, x.imag] if jnp.iscomplexobj(x) else [x]
    for p in parts:
        p = p.astype(jnp.float32)
        # Rounding to a narrow format may round values just below 1 up to 1.
        assert float(p.min()) >= 0.0 and float(p.max()) <= 1.0
        assert float(p.max()) > 0.9


def test_callable_fill():
    def halves(key, spec):
        return jnp.full(spec.shape, 0.5, spec.dtype)

    out = _fill.fill_tree(KEY, (jax.ShapeDtypeStruct((2,), jnp.float32),), halves)
    np.testing.assert_array_equal(out[0], np.array([0.5, 0.5], np.float32))


def test_callable_fill_receives_distinct_keys_per_leaf():
    seen = []

    def record(key, spec):
        seen.append(np.asarray(jax.random.key_data(key)))
        return jnp.zeros(spec.shape, spec.dtype)

    spec = jax.ShapeDtypeStruct((1,), jnp.float32)
    _fill.fill_tree(KEY, [spec, spec, spec], record)
    assert len({s.tobytes() for s in seen}) == 3


def test_fill_tree_structure_and_non_spec_leaves():
    arr = jnp.arange(3)
    specs = {
        "a": jax.ShapeDtypeStruct((2,), jnp.float32),
        "b": (None, 3, "text", True, arr),
        "c": [jax.ShapeDtypeStruct((), jnp.int32)],
    }
    out = _fill.fill_tree(KEY, specs)
    assert jax.tree.structure(out, is_leaf=lambda x: x is None) == jax.tree.structure(
        specs, is_leaf=lambda x: x is None
    )
    assert out["b"][:4] == (None, 3, "text", True)
    assert out["b"][4] is arr
    _assert_matches(out["a"], specs["a"])
    _assert_matches(out["c"][0], specs["c"][0])


def test_fill_tree_leaves_differ():
    spec = jax.ShapeDtypeStruct((8,), jnp.float32)
    a, b = _fill.fill_tree(KEY, (spec, spec))
    assert not np.array_equal(a, b)


def test_vmap_gives_each_lane_its_own_values():
    spec = {"x": jax.ShapeDtypeStruct((4,), jnp.bfloat16), "k": jax.ShapeDtypeStruct((), RBG)}
    keys = jax.random.split(KEY, 3)
    out = jax.vmap(lambda k: _fill.fill_tree(k, spec))(keys)
    assert out["x"].shape == (3, 4) and out["x"].dtype == jnp.bfloat16
    assert out["k"].shape == (3,) and out["k"].dtype == RBG
    assert not np.array_equal(out["x"][0], out["x"][1])
    # Lane i equals the unbatched fill with key i.
    np.testing.assert_array_equal(out["x"][1], _fill.fill_tree(keys[1], spec)["x"])


def test_sharding_is_applied():
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    spec = jax.ShapeDtypeStruct((4,), jnp.float32, sharding=sharding)
    eager = _fill.fill_array(KEY, spec)
    jitted = jax.jit(lambda k: _fill.fill_array(k, spec))(KEY)
    assert eager.sharding == sharding
    assert jitted.sharding.is_equivalent_to(sharding, 1)


# --- Errors. -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.object_, np.dtype("U3"), np.dtype("V4")], ids=str)
def test_unsupported_dtype(dtype):
    spec = jax.ShapeDtypeStruct((2,), dtype)
    pattern = rf"(?s)at blocks_0/attn.*{np.dtype(dtype)}.*fill=.*out="
    with pytest.raises(UnsupportedDtypeError, match=pattern):
        _fill.fill_array(KEY, spec, path="blocks_0/attn")
    with pytest.raises(UnsupportedDtypeError, match=pattern):
        _fill.check_fillable(spec, path="blocks_0/attn")
    with pytest.raises(TypeError):  # UnsupportedDtypeError is a TypeError.
        _fill.fill_tree(KEY, [spec])


def test_check_fillable_lists_every_bad_leaf_with_its_path():
    specs = {
        "ok": jax.ShapeDtypeStruct((2,), jnp.float32),
        "bad": [jax.ShapeDtypeStruct((1,), np.object_), jax.ShapeDtypeStruct((), "U2")],
        "also_ok": jax.ShapeDtypeStruct((), RBG),
    }
    with pytest.raises(UnsupportedDtypeError) as info:
        _fill.check_fillable(specs, path="enc.__call__")
    message = str(info.value)
    assert "Cannot fill the output at enc.__call__" in message
    assert "['bad'][0]: object" in message
    assert "['bad'][1]: <U2" in message
    assert "ok" not in message.replace("also_ok", "").split("Supported")[0].replace("bad", "")


def test_check_fillable_accepts_supported_trees():
    _fill.check_fillable({"a": jax.ShapeDtypeStruct((2,), jnp.float8_e4m3fn), "b": None, "c": 1})
    # A callable fill takes responsibility for the dtypes it is given.
    _fill.check_fillable(
        jax.ShapeDtypeStruct((2,), np.object_), lambda k, s: np.zeros(s.shape, s.dtype)
    )


def test_unknown_policy():
    spec = jax.ShapeDtypeStruct((2,), jnp.float32)
    with pytest.raises(FillError, match=r"Unknown fill policy 'gaussian'.*'normal', 'zeros'"):
        _fill.fill_array(KEY, spec, "gaussian")
    with pytest.raises(FillError, match="Unknown fill policy 3"):
        _fill.check_fillable(spec, 3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bad", "found"),
    [
        (lambda k, s: jnp.zeros((3,), s.dtype), r"float32\[3\]"),
        (lambda k, s: jnp.zeros(s.shape, jnp.int32), r"int32\[2\]"),
        (lambda k, s: 1.0, "None"),
    ],
    ids=["shape", "dtype", "not-array"],
)
def test_callable_returning_wrong_spec(bad, found):
    spec = jax.ShapeDtypeStruct((2,), jnp.float32)
    pattern = rf"fill callable .* at dec/out returned {found} for a float32\[2\] spec"
    with pytest.raises(FillError, match=pattern):
        _fill.fill_array(KEY, spec, bad, path="dec/out")
    if found != "None":
        # Caught at mock-creation time by an abstract evaluation, too.
        with pytest.raises(FillError, match=pattern):
            _fill.check_fillable({"y": spec}, bad, path="dec/out")


# --- Properties over random pytrees of random specs. -------------------------------------------

_spec_strategy = st.builds(
    jax.ShapeDtypeStruct,
    hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3),
    st.sampled_from(DTYPES),
)
_leaf_strategy = st.one_of(_spec_strategy, st.none(), st.integers(-5, 5), st.text(max_size=3))
_tree_strategy = st.recursive(
    _leaf_strategy,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.tuples(children, children),
        st.dictionaries(st.sampled_from("abcd"), children, max_size=3),
    ),
    max_leaves=6,
)
_policy_strategy = st.sampled_from([None, "normal", "zeros", "ones", "uniform"])


def _specs_and_outputs(specs, out):
    is_leaf = lambda x: x is None or isinstance(x, jax.ShapeDtypeStruct)  # noqa: E731
    assert jax.tree.structure(specs, is_leaf=is_leaf) == jax.tree.structure(out, is_leaf=is_leaf)
    return list(
        zip(
            jax.tree.leaves(specs, is_leaf=is_leaf),
            jax.tree.leaves(out, is_leaf=is_leaf),
            strict=True,
        )
    )


@settings(max_examples=40, deadline=None)
@given(specs=_tree_strategy, policy=_policy_strategy, seed=st.integers(0, 2**31 - 1))
def test_property_structure_shape_dtype(specs, policy, seed):
    out = _fill.fill_tree(jax.random.key(seed), specs, policy)
    for spec, x in _specs_and_outputs(specs, out):
        if isinstance(spec, jax.ShapeDtypeStruct):
            _assert_matches(x, spec)
        else:
            assert x is spec


@settings(max_examples=10, deadline=None)
@given(specs=_tree_strategy, seed=st.integers(0, 2**31 - 1))
def test_property_same_key_bit_identical_different_key_different(specs, seed):
    is_spec = lambda v: isinstance(v, jax.ShapeDtypeStruct)  # noqa: E731
    spec_leaves = jax.tree.leaves(specs, is_leaf=is_spec)

    def filled_only(key):
        # Python leaves cannot leave a jit; the spec leaves keep their positions in the tree.
        out = jax.tree.leaves(_fill.fill_tree(key, specs))
        return [x for x, s in zip(out, spec_leaves, strict=True) if is_spec(s)]

    a = filled_only(jax.random.key(seed))
    b = jax.jit(filled_only)(jax.random.key(seed))
    c = filled_only(jax.random.key(seed + 1))
    for spec, x, y, z in zip(filter(is_spec, spec_leaves), a, b, c, strict=True):
        np.testing.assert_array_equal(_as_numpy(x), _as_numpy(y))
        # Only leaves with enough values to make a collision implausible must differ.
        if np.prod(spec.shape) >= 8 and spec.dtype not in (jnp.bool_, *LOW_BIT_DTYPES):
            assert not np.array_equal(_as_numpy(x), _as_numpy(z))


@settings(max_examples=20, deadline=None)
@given(
    shape=hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=4),
    dtype=st.sampled_from(INT_DTYPES),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_int_ranges(shape, dtype, seed):
    x = _fill.fill_array(jax.random.key(seed), jax.ShapeDtypeStruct(shape, dtype))
    x = np.asarray(x.astype(jnp.int32))
    signed = jax.dtypes.issubdtype(dtype, jnp.signedinteger)
    info = jnp.iinfo(dtype)
    assert np.all(x >= max(-100 if signed else 0, int(info.min)))
    assert np.all(x <= min(100, int(info.max)))
