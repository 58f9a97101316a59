"""``Mocker``: the drop-in ``self`` for plot and analysis code."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import flaxmock


class ThoughtBlock(nn.Module):
    """A block that sows what a plot reads (the issue's example)."""

    dim: int = 32

    @nn.compact
    def __call__(self, x):
        scores = nn.Dense(1, name="score")(x)[..., 0]
        cumulative = jnp.cumsum(jax.nn.softmax(scores, -1), -1)
        self.sow("plots", "new_cumulative_scores", cumulative)
        self.sow("intermediates", "scores", scores)
        self.sow("intermediates", "scores", scores * 2)
        return nn.Dense(self.dim, name="out")(x), {"n": 3, "tag": "block"}


def test_module_call_returns_real_structure_shapes_dtypes():
    self = flaxmock.Mocker(seed=0)
    self.block = ThoughtBlock()
    out, extra = self.block(jnp.zeros((1, 16, 32)))
    ref = jax.eval_shape(
        lambda x: ThoughtBlock().init_with_output(jax.random.key(0), x)[0][0],
        jax.ShapeDtypeStruct((1, 16, 32), jnp.float32),
    )
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert extra == {"n": 3, "tag": "block"}  # non-array leaves as the real call returns them


def test_intermediates_match_apply_structure():
    self = flaxmock.Mocker()
    self.block = ThoughtBlock()
    x = jnp.zeros((1, 16, 32))
    fake = self.block.intermediates(x)
    variables = ThoughtBlock().init(jax.random.key(0), x)
    _, real = ThoughtBlock().apply(
        {"params": variables["params"]}, x, mutable=["intermediates", "plots"]
    )
    assert jax.tree.structure(fake) == jax.tree.structure(real)
    for a, b in zip(jax.tree.leaves(fake), jax.tree.leaves(real), strict=True):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    assert len(fake["intermediates"]["scores"]) == 2  # Flax's tuple of two sown values


def test_successive_calls_differ_and_seed_reproduces():
    def draws(seed):
        self = flaxmock.Mocker(seed=seed)
        self.mlp = nn.Dense(4)
        return self.mlp(jnp.ones((2, 3))), self.mlp(jnp.ones((2, 3)))

    a1, a2 = draws(0)
    b1, _ = draws(0)
    c1, _ = draws(1)
    assert not np.array_equal(a1, a2)
    np.testing.assert_array_equal(a1, b1)
    assert not np.array_equal(a1, c1)


def test_modules_get_their_own_streams():
    self = flaxmock.Mocker()
    self.a = nn.Dense(4)
    self.b = nn.Dense(4)
    assert not np.array_equal(self.a(jnp.ones((2, 3))), self.b(jnp.ones((2, 3))))


def test_static_kwargs_and_spec_arguments():
    self = flaxmock.Mocker()
    self.drop = nn.Dropout(0.5)
    spec = jax.ShapeDtypeStruct((2, 5), jnp.bfloat16)
    out = self.drop(spec, deterministic=True)
    assert out.shape == (2, 5) and out.dtype == jnp.bfloat16


def test_new_signatures_are_cached():
    self = flaxmock.Mocker()
    self.mlp = nn.Dense(4)
    self.mlp(jnp.ones((2, 3)))
    for _ in range(3):
        assert self.mlp(jnp.ones((7, 3))).shape == (7, 4)
    assert len(self.mlp.layer.mock_state.specs) == 1
    assert self.mlp.call_count == 4
    assert self.mlp.call_args_list[-1][0][0].shape == (7, 3)


def test_other_values_pass_through():
    self = flaxmock.Mocker()
    self.name = "attn"
    self.n = 3
    self.fn = jnp.sum
    arr = jnp.ones(2)
    self.arr = arr
    assert (self.name, self.n, self.fn) == ("attn", 3, jnp.sum)
    assert self.arr is arr


def test_param_shapes_and_partitioned():
    self = flaxmock.Mocker()
    w = self.param("w", nn.initializers.lecun_normal(), (3, 4))
    assert w.shape == (3, 4) and w.dtype == jnp.float32
    boxed = self.param(
        "p", nn.with_partitioning(nn.initializers.zeros_init(), ("a", "b")), (2, 5), jnp.bfloat16
    )
    assert boxed.shape == (2, 5) and boxed.dtype == jnp.bfloat16
    assert self.w is w


def test_assigning_again_replaces_with_a_fresh_mock():
    # A notebook cell that sets up `self` can be run again: the new module replaces the old
    # one, with a fresh call history.
    self = flaxmock.Mocker()
    x = jnp.ones((2, 5))
    self.mlp = nn.Dense(3)
    first = self.mlp
    y = first(x)
    self.mlp = nn.Dense(4)
    assert isinstance(self.mlp, flaxmock.BoundMock) and self.mlp is not first
    assert self.mlp.call_count == 0 and self.mlp.call_args_list == []
    assert self.mlp(x).shape == (2, 4)
    assert (first.call_count, self.mlp.call_count) == (1, 1)
    # Run again, the cell gives the same numbers: the attribute name picks the stream.
    self.mlp = nn.Dense(3)
    np.testing.assert_array_equal(self.mlp(x), y)


def test_repr_names_type_attribute_and_output():
    self = flaxmock.Mocker()
    self.mlp = nn.Dense(4)
    assert "not called yet" in repr(self.mlp)
    self.mlp(jnp.ones((2, 3)))
    assert repr(self.mlp) == "BoundMock(Dense, name='mlp', out=f32[2,4])"


def test_plot_workflow():
    """The issue's workflow: a static plot() developed against mocked output."""

    def plot(intermediates):
        scores = intermediates["plots"]["new_cumulative_scores"][0]
        return {"analysis/cum_scores": scores.mean(0)}

    self = flaxmock.Mocker()
    self.block = ThoughtBlock()
    figs = plot(self.block.intermediates(jnp.zeros((1, 16, 32))))
    assert figs["analysis/cum_scores"].shape == (16,)
