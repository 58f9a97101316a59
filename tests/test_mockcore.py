"""The one mock core: linen and NNX mocks share call records, caches, key schedule and errors.

Also the replacement protocol of the linen runtime: a hand-written penzai layer put in a tree
by surgery is called the penzai way, with the root's random streams and side inputs.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import treescope
from flax import nnx
from penzai import pz

import flaxmock
import flaxmock.nnx as fnnx
from flaxmock._core import mockcore, mockdraw

X = jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(4, name="layers_0")(x))
        return nn.Dense(3, name="layers_1")(h)


class NnxMLP(nnx.Module):
    def __init__(self, *, rngs):
        self.layers = nnx.List([nnx.Linear(3, 4, rngs=rngs), nnx.Linear(4, 3, rngs=rngs)])

    def __call__(self, x):
        return self.layers[1](nnx.relu(self.layers[0](x)))


@dataclasses.dataclass
class Side:
    """One front door: how to mock the MLP's first layer whole, call it, and read it back."""

    name: str
    make: Any  # (seed) -> (mock of the first layer, function x -> its output)


def _linen_side(seed: int = 0) -> tuple[Any, Any]:
    tree = flaxmock.unflaxify(LinenMLP(), jax.ShapeDtypeStruct((2, 3), jnp.float32))
    mocked = flaxmock.mock(tree, "layers_0", seed=seed)
    layer = mocked.submodule_calls[(0, "layers_0.__call__")]
    return layer, lambda x: flaxmock.call(layer, x)


def _nnx_side(seed: int = 0) -> tuple[Any, Any]:
    mocked = fnnx.mock(NnxMLP(rngs=nnx.Rngs(0)), "layers/0", seed=seed)
    return mocked.layers[0], mocked.layers[0]


def _mocker_side(seed: int = 0) -> tuple[Any, Any]:
    self = flaxmock.Mocker(seed=seed)
    self.layers_0 = nn.Dense(4)
    return self.layers_0, self.layers_0


SIDES = [Side("linen", _linen_side), Side("nnx", _nnx_side), Side("mocker", _mocker_side)]


# Call records: one table, every front door.


@pytest.mark.parametrize("side", SIDES, ids=lambda s: s.name)
def test_call_records_in_unittest_mock_words(side):
    mock, call = side.make()
    mock.assert_not_called()
    assert mock.call_count == 0 and mock.call_args_list == []
    with pytest.raises(AssertionError, match=r"Expected .*layers.0.* to be called\."):
        mock.assert_called()
    with pytest.raises(AssertionError, match="expected a call with .*latest was no call"):
        mock.assert_called_with(X)
    first = call(X)
    mock.assert_called()
    mock.assert_called_once()
    mock.assert_called_once_with(jax.ShapeDtypeStruct((2, 3), jnp.float32))
    mock.assert_called_with(X)  # compared by spec
    with pytest.raises(AssertionError, match=r"expected a call with .*\(9, 3\)"):
        mock.assert_called_with(jnp.ones((9, 3)))
    with pytest.raises(AssertionError, match="not to be called; called 1 times"):
        mock.assert_not_called()
    call(jnp.ones((5, 3)))
    assert mock.call_count == 2
    assert [args[0].shape for args, _ in mock.call_args_list] == [(2, 3), (5, 3)]
    with pytest.raises(AssertionError, match="to be called once; called 2 times"):
        mock.assert_called_once()
    with pytest.raises(AssertionError, match="to be called once; called 2 times"):
        mock.assert_called_once_with(jnp.ones((5, 3)))
    mock.reset_mock()
    mock.assert_not_called()
    assert mock.call_count == 0 and mock.call_args_list == []
    # The count is part of the key: after a reset the first draw comes again.
    np.testing.assert_array_equal(call(X), first)
    mock.assert_called_once_with(X)


@pytest.mark.parametrize("side", SIDES, ids=lambda s: s.name)
def test_same_seed_reproduces_and_each_call_and_mock_differs(side):
    mock_a, call_a = side.make(seed=3)
    mock_b, call_b = side.make(seed=3)
    _, call_c = side.make(seed=4)
    a1, a2 = call_a(X), call_a(X)
    assert not np.array_equal(a1, a2)  # per call
    np.testing.assert_array_equal(call_b(X), a1)  # same seed, fresh mock: same sequence
    np.testing.assert_array_equal(call_b(X), a2)
    assert not np.array_equal(call_c(X), a1)  # another seed


def test_each_mock_of_one_model_draws_its_own_numbers_on_both_sides():
    # Both layers map 4 features to 4, so that their outputs can be compared.
    x = jnp.ones((2, 4))
    square = flaxmock.unflaxify(nn.Sequential([nn.Dense(4), nn.Dense(4)]), x)
    a, b = flaxmock.mock(square, nn.Dense).submodule_calls.values()
    args = flaxmock.ArgsAndKwargs.capture(x)
    assert not np.array_equal(a(args), b(args))
    model = nnx.Sequential(nnx.Linear(4, 4, rngs=nnx.Rngs(0)), nnx.Linear(4, 4, rngs=nnx.Rngs(1)))
    mocked = fnnx.mock(model, nnx.Linear)
    assert not np.array_equal(mocked.layers[0](x), mocked.layers[1](x))


def test_unhashable_argument_is_the_same_error_on_both_sides():
    class Opts(list):
        __hash__ = None  # type: ignore[assignment]

    class Takes(nn.Module):
        @nn.compact
        def __call__(self, x, options):
            return nn.Dense(2, name="d")(x) * len(options)

    class NnxTakes(nnx.Module):
        def __init__(self, *, rngs):
            self.d = nnx.Linear(3, 2, rngs=rngs)

        def __call__(self, x, options):
            return self.d(x) * len(options)

    pattern = r"d\.__call__: the arguments \[1\]\['options'\]: Opts are neither arrays nor hashable"
    tree = flaxmock.mock(flaxmock.unflaxify(Takes(), X, options=(1,)), "d")
    with pytest.raises(flaxmock.InvalidArgumentError, match=pattern):
        flaxmock.call(tree.submodule_calls[(0, "d.__call__")], X, options=Opts.__new__(Opts))
    mocked = fnnx.mock(NnxTakes(rngs=nnx.Rngs(0)), "d")
    with pytest.raises(flaxmock.InvalidArgumentError, match=pattern):
        mocked.d(X, options=Opts.__new__(Opts))


# The spec cache.


def test_spec_cache_is_a_bounded_lru_and_infers_outside_its_lock():
    cache = mockcore.SpecCache(size=2)
    assert cache.get_or_infer("a", lambda: 1) == 1
    assert cache.get_or_infer("b", lambda: 2) == 2
    assert cache.get_or_infer("a", lambda: pytest.fail("cached")) == 1  # "a" is now the newest
    # Inference may use the cache itself (it runs outside the lock: no deadlock).
    assert cache.get_or_infer("c", lambda: cache.get("a") + 2) == 3
    assert len(cache) == 2
    assert cache.get("b") is None  # the least recently used went
    assert cache.values() == [1, 3]


def test_spec_cache_looks_up_and_reads_under_its_lock():
    """Lookup, move-to-end and read are one step: no thread can evict the entry in between."""
    cache = mockcore.SpecCache(size=2)
    held: list[bool] = []

    class Key:
        def __hash__(self) -> int:
            held.append(cache._lock.locked())
            return 0

    key = Key()
    cache.get_or_infer(key, lambda: held.append(cache._lock.locked()) or 1)
    cache.get_or_infer(key, lambda: 2)
    # Hashed under the lock (lookups and insertion); inferred outside it.
    assert held and held.count(False) == 1 and held[1] is False


@pytest.mark.slow  # tests/test_threads.py covers threads by default
def test_two_threads_call_one_mocked_tree_with_more_signatures_than_the_cache_holds():
    tree = flaxmock.unflaxify(LinenMLP(), jax.ShapeDtypeStruct((2, 3), jnp.float32))
    mocked = flaxmock.mock(tree, "", fill="zeros")
    sizes = list(range(3, 3 + mockcore.SPEC_CACHE_SIZE + 36))  # 100 batch sizes
    errors: list[BaseException] = []
    shapes: list[list[tuple[int, ...]]] = [[], []]
    barrier = threading.Barrier(2)

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=60)
            # One thread in each direction: they insert, hit and evict the same entries.
            for n in sizes if i == 0 else reversed(sizes):
                shapes[i].append(flaxmock.call(mocked, jnp.ones((n, 3))).shape)
        except BaseException as e:  # Reported in the main thread.
            errors.append(e)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # Switch threads as often as possible: races show.
    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    assert shapes[0] == [(n, 3) for n in sizes]
    assert shapes[1] == [(n, 3) for n in reversed(sizes)]
    assert len(mocked.mock_state.specs) == mockcore.SPEC_CACHE_SIZE
    assert mocked.call_count == 2 * len(sizes)


# The key schedule.


def test_every_part_of_the_key_schedule_changes_the_key():
    base = dict(seed=0, stream=1, method=2, count=3, index=4, fold=None, lane=None)
    keys = {"base": mockdraw.call_key(**base)}
    for part, value in [
        ("seed", 1),
        ("stream", 2),
        ("method", 3),
        ("count", 4),
        ("index", 5),
        ("fold", 6),
        ("lane", 7),
    ]:
        keys[part] = mockdraw.call_key(**{**base, part: value})
    data = {k: tuple(np.asarray(jax.random.key_data(v)).tolist()) for k, v in keys.items()}
    assert len(set(data.values())) == len(data)
    # vmap lanes: each lane its own key.
    lanes = jax.vmap(lambda _: mockdraw.call_key(**base, vmap_axis_name="i"), axis_name="i")(
        jnp.arange(3)
    )
    assert len({tuple(np.asarray(k).tolist()) for k in jax.random.key_data(lanes)}) == 3


class LinenWidths(nn.Module):
    @nn.compact
    def __call__(self, x):
        for width in (5, 7, 9):
            x = nn.Dense(width)(x)
        return x


def _linen_widths():
    x = jnp.ones((1, 3))
    mocked = flaxmock.mock(flaxmock.unflaxify(LinenWidths(), x), "*")
    return lambda: flaxmock.call(mocked, x)


def _nnx_widths():
    rngs = nnx.Rngs(0)
    model = nnx.Sequential(*(nnx.Linear(a, b, rngs=rngs) for a, b in [(3, 5), (5, 7), (7, 9)]))
    mocked = fnnx.mock(model, "layers/*")
    return lambda: mocked(jnp.ones((1, 3)))


@pytest.mark.parametrize("make", [_linen_widths, _nnx_widths], ids=["linen", "nnx"])
def test_eager_key_schedule_compiles_nothing_for_mocks_of_many_output_shapes(make, monkeypatch):
    # Three mocks with three output shapes: the values compile per shape; the key schedule
    # (whose hashes cost as much to compile as a draw on CPU) is computed on the host.
    traced = {"keys": 0, "values": 0}

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            traced[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(mockdraw, "_group_keys", counting("keys", mockdraw._group_keys))
    monkeypatch.setattr(mockdraw, "_fill_groups", counting("values", mockdraw._fill_groups))
    caches = (mockdraw._compiled_keys, mockdraw._compiled_fill, mockdraw._compiled_fill_from_data)
    for cache in caches:
        cache.cache_clear()
    try:
        call = make()
        first = call()
        assert traced == {"keys": 0, "values": 3}
        second = call()
        assert traced == {"keys": 0, "values": 3}
    finally:  # No counting wrapper stays in the caches for other tests.
        for cache in caches:
            cache.cache_clear()
    assert first.shape == second.shape == (1, 9)
    assert not np.array_equal(first, second)  # each call draws anew


# The replacement protocol: a plain penzai layer inserted by tree surgery.


class Scaled(nn.Module):
    """A setup-style module: its setup looks up a parameter, so it must not run once replaced."""

    def setup(self):
        self.w = self.param("w", nn.initializers.ones, (4,))

    def __call__(self, x):
        return x * self.w


class Host(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(4, name="proj")(x)
        h = Scaled(name="blk")(h)
        return nn.Dense(2, name="head")(nn.relu(h))


class Seen:
    """What a layer was given (compared by identity, so that it can be static penzai data)."""

    def __init__(self) -> None:
        self.calls: list[Any] = []


@pz.pytree_dataclass
class Noisy(pz.nn.Layer):
    """A hand-written penzai layer: the input scaled by a side input, plus a stream's noise."""

    seen: Seen = dataclasses.field(metadata={"pytree_node": False})

    def __call__(self, argument, /, random_streams=None, **side_inputs):
        (h,) = argument.args
        key = random_streams["noise"].next_key()
        self.seen.calls.append((key, side_inputs))
        return h * side_inputs["scale"] + jax.random.normal(key, h.shape, h.dtype)


def test_a_penzai_layer_put_in_by_surgery_gets_the_roots_streams_and_side_inputs():
    x = jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)
    model = Host()
    variables = model.init(jax.random.key(0), x)
    tree = flaxmock.unflaxify(model, x, variables=variables)
    seen = Seen()
    patched = (
        pz.select(tree)
        .at_subtrees_where(flaxmock.selector("blk"))
        .apply(lambda _: Noisy(seen=seen))
    )
    stream = pz.RandomStream.from_base_key(jax.random.key(7))
    # Scaled's setup would look up its parameter, gone with its layer: it is skipped.
    out = patched(flaxmock.ArgsAndKwargs.capture(x), random_streams={"noise": stream}, scale=2.0)
    ((key, side_inputs),) = seen.calls
    assert side_inputs == {"scale": 2.0}
    assert int(stream.offset.value) == 2  # one key for Flax's rngs at the root, one for Noisy

    def substitute(next_fun, args, kwargs, context):
        if context.module.name == "blk" and context.method_name == "__call__":
            (h,) = args
            return h * 2.0 + jax.random.normal(key, h.shape, h.dtype)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(substitute):
        expected = model.apply(variables, x)
    np.testing.assert_array_equal(out, expected)
    # The summary names the inserted layer by the call it replaces.
    row = [r for r in flaxmock.summary(patched).rows if r.path == "blk"]
    assert [(r.module_type, r.method, r.note) for r in row] == [
        ("Noisy", "__call__", "replaced by Noisy")
    ]


def test_mocks_render_through_treescope_with_their_summary_line():
    tree = flaxmock.mock(
        flaxmock.unflaxify(LinenMLP(), jax.ShapeDtypeStruct((2, 3), jnp.float32)), "layers_0"
    )
    line = "Dense at layers_0.__call__ -> f32[2,4] (mocked, 16 params not allocated)"
    assert tree.submodule_calls[(0, "layers_0.__call__")].summary_line() == line
    assert "MockLayer(" in treescope.render_to_text(tree)
    # The mock's first line, shown collapsed: its call, then what it is.
    html = treescope.render_to_html(tree, compressed=False)
    assert "layers_0.__call__: f32[2,3] -&gt; f32[2,4]</span>" in html
    label = "  # mock of Dense (mocked, 16 params not allocated)"
    assert f'<span class="color_comment">{label}</span>' in html


@pytest.mark.parametrize(
    ("layout", "fold", "lane"),
    [((1,), None, None), ((2, None, 1), 3, None), ((1, 3), 7, 2), ((None,), None, 5)],
)
def test_host_key_schedule_equals_the_compiled_one(layout, fold, lane):
    # The same key bits as jax.random computes them (the compiled schedule, under jit too).
    args = (np.uint32(11), np.uint32(2**31 + 5), np.uint32(77), np.uint32(4), np.uint32(1))
    args += (fold, lane)
    compiled = mockdraw._group_keys(layout, None, *args)
    expected = np.stack([jax.random.key_data(k) for ks in compiled for k in ks])
    np.testing.assert_array_equal(mockdraw._host_keys(layout, args), expected)
    # A float32 counter (NNX mocks count in float32) converts as fold_in converts it.
    float_args = args[:3] + (np.float32(4.0),) + args[4:]
    np.testing.assert_array_equal(mockdraw._host_keys(layout, float_args), expected)
