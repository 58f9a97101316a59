"""``Mocker``: the drop-in ``self`` for plot and analysis code."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


# A drop-in `self` (#13): every method, every attribute, containers, the bound-module API.


class VAE(nn.Module):
    """Methods of several kinds: encode/decode, generate with a key, and __call__."""

    latent: int = 4
    out_dim: int = 6

    def setup(self):
        self.enc = nn.Dense(2 * self.latent)
        self.dec = nn.Dense(self.out_dim)

    def encode(self, x):
        mean, logvar = jnp.split(self.enc(x), 2, axis=-1)
        return mean, logvar

    def decode(self, z):
        return nn.sigmoid(self.dec(z))

    def generate(self, key, n):
        return self.decode(jax.random.normal(key, (n, self.latent)))

    def __call__(self, x):
        mean, _ = self.encode(x)
        self.sow("intermediates", "mean", mean)
        return self.decode(mean)


def _specs_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert (x.shape, x.dtype) == (y.shape, y.dtype)


def test_every_method_gives_the_real_methods_specs():
    x, key = jnp.ones((3, 5)), jax.random.key(1)
    variables = VAE().init(jax.random.key(0), x)
    self = flaxmock.Mocker()
    self.vae = VAE()
    for method, args in [
        ("__call__", (x,)),
        ("encode", (x,)),
        ("decode", (jnp.ones((3, 4)),)),
        ("generate", (key, 7)),
    ]:
        fake = self.vae(*args) if method == "__call__" else getattr(self.vae, method)(*args)
        real = VAE().apply(variables, *args, method=method)
        _specs_equal(fake, real)
    # Each method has its own records, as unittest.mock's children; __call__'s are the mock's.
    assert (self.vae.call_count, self.vae.encode.call_count, self.vae.generate.call_count) == (
        1,
        1,
        1,
    )
    assert isinstance(self.vae.generate, flaxmock.MethodMock)
    self.vae.reset_mock()
    assert self.vae.encode.call_count == 0


def test_embed_attend_and_lstm_initialize_carry():
    self = flaxmock.Mocker()
    self.embed = nn.Embed(11, 8)
    self.cell = nn.OptimizedLSTMCell(16)
    h = jnp.ones((2, 8))
    logits = self.embed.attend(h)
    assert (logits.shape, logits.dtype) == ((2, 11), jnp.float32)
    carry = self.cell.initialize_carry(jax.random.key(0), (2, 8))
    real = nn.OptimizedLSTMCell(16).initialize_carry(jax.random.key(0), (2, 8))
    _specs_equal(carry, real)


def test_config_fields_read_through_and_unknown_methods_raise():
    self = flaxmock.Mocker()
    self.attn = nn.MultiHeadDotProductAttention(num_heads=4, qkv_features=16)
    assert (self.attn.num_heads, self.attn.qkv_features) == (4, 16)
    self.vae = VAE(latent=3)
    assert self.vae.latent == 3
    with pytest.raises(flaxmock.MockAttributeError, match=r"has no method 'sample'"):
        self.vae.method("sample")
    with pytest.raises(
        flaxmock.MockAttributeError, match=r"Mocker\.vae: VAE has no attribute 'encoder'.*after"
    ):
        _ = self.vae.encoder


class Tower(nn.Module):
    """setup() defines a submodule, a list of them, a parameter and constants."""

    def setup(self):
        self.enc = nn.Dense(8)
        self.heads = [nn.Dense(3), nn.Dense(5)]
        self.table = self.param("table", nn.initializers.normal(), (7, 2))
        self.bias = self.param("bias", nn.initializers.zeros, (3,))  # needs no key
        self.positions = jnp.arange(6)
        self.label = "tower"

    def __call__(self, x):
        return self.enc(x) + self.table.sum() + self.positions.sum()


def test_attributes_defined_in_setup_are_mocked_as_a_bound_module_would_have_them():
    self = flaxmock.Mocker()
    self.tower = Tower()
    x = jnp.ones((2, 4))
    bound = Tower().bind(Tower().init(jax.random.key(0), x))
    # A submodule made in setup() is a mock of that submodule: the real method's specs.
    assert isinstance(self.tower.enc, flaxmock.BoundMock)
    _specs_equal(self.tower.enc(x), bound.enc(x))
    assert [type(h) for h in self.tower.heads] == [flaxmock.BoundMock] * 2
    # (never called by Tower, so the bound module has no parameters for them)
    assert [(h(x).shape, h(x).dtype) for h in self.tower.heads] == [
        ((2, 3), jnp.float32),
        ((2, 5), jnp.float32),
    ]
    # A parameter made in setup() is random values of its spec, drawn once; a constant
    # computed from the configuration alone has its real value; other values read through.
    _specs_equal(self.tower.table, bound.table)
    assert self.tower.table is self.tower.table
    assert not np.array_equal(np.asarray(self.tower.table), np.asarray(bound.table))
    _specs_equal(self.tower.bias, bound.bias)  # a parameter is drawn even if init needs no key
    assert not np.array_equal(np.asarray(self.tower.bias), np.zeros(3))
    np.testing.assert_array_equal(self.tower.positions, bound.positions)
    assert self.tower.positions.dtype == bound.positions.dtype
    assert self.tower.label == "tower"


class NoisySetup(nn.Module):
    def setup(self):
        # A Python number from a parameter: fails when setup() runs abstractly.
        self.noise = float(self.param("scale", nn.initializers.normal(), ()))

    def __call__(self, x):
        return x * self.noise


def test_setup_that_fails_abstractly_names_the_attribute_and_the_fix():
    self = flaxmock.Mocker()
    self.noisy = NoisySetup()
    with pytest.raises(
        flaxmock.MockAttributeError,
        match=r"reading 'noise' runs NoisySetup\.setup\(\), which failed .*self\.noise = ",
    ):
        _ = self.noisy.noise


def test_lists_tuples_and_dicts_of_modules_are_wrapped():
    self = flaxmock.Mocker()
    blocks = [nn.Dense(4), nn.Dense(5)]
    self.blocks = blocks
    self.heads = {"a": nn.Dense(2), "b": (nn.Dense(3), "tag")}
    assert blocks[0].__class__ is nn.Dense  # the user's list is not changed
    x = jnp.ones((2, 3))
    assert [b(x).shape for b in self.blocks] == [(2, 4), (2, 5)]
    assert self.heads["b"][0](x).shape == (2, 3) and self.heads["b"][1] == "tag"
    assert self.blocks[0].name == "blocks_0" and self.heads["b"][0].name == "heads_b_0"
    # Each element has its own stream.
    self.same = [nn.Dense(4), nn.Dense(4)]
    assert not np.array_equal(self.same[0](x), self.same[1](x))
    plain = [1, 2]
    self.plain = plain
    assert self.plain is plain


def test_mocker_sow_make_rng_variables():
    self = flaxmock.Mocker(seed=3)
    assert self.sow("intermediates", "h", jnp.ones(2)) is True
    self.sow("intermediates", "h", jnp.zeros(2))
    assert len(self.variables["intermediates"]["h"]) == 2
    k1, k2 = self.make_rng("dropout"), self.make_rng("dropout")
    assert not np.array_equal(jax.random.key_data(k1), jax.random.key_data(k2))
    assert self.has_rng("dropout") and not self.is_initializing()
    assert self.is_mutable_collection("cache") and not self.is_mutable_collection("params")
    idx = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
    idx.value = idx.value + 1
    assert int(self.variable("cache", "index").value) == 1 and self.has_variable("cache", "index")
    w = self.param("w", nn.initializers.ones, (2,))
    assert self.variables["params"]["w"] is w and self.param("w", nn.initializers.ones, (2,)) is w
    with pytest.raises(flaxmock.MockAttributeError, match=r"no such variable and no init_fn"):
        self.variable("cache", "missing")
    with pytest.raises(flaxmock.MockAttributeError, match=r"does not provide nn\.Module\.apply"):
        self.apply  # noqa: B018
    with pytest.raises(flaxmock.MockAttributeError, match=r"Mocker\.sow is part of the"):
        self.sow = 1


def test_replacing_a_string_and_a_called_mock():
    self = flaxmock.Mocker()
    self.label = "a"
    self.label = "b"
    self.mlp = nn.Dense(2)
    self.mlp(jnp.ones((1, 3)))
    self.mlp = [nn.Dense(2)]  # replacing a mock that has recorded calls is allowed
    assert self.label == "b" and self.mlp[0].call_count == 0


# Draw only what is asked for (#13.4, #13.5): asserted on the trees given to the draw.


@pytest.fixture
def drawn(monkeypatch):
    from flaxmock._core import mockdraw

    seen = []
    original = mockdraw.draw

    def spy(info, trees, **kwargs):
        seen.append(len(trees))
        return original(info, trees, **kwargs)

    monkeypatch.setattr(mockdraw, "draw", spy)
    return seen


class BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        for i in range(3):
            x = nn.Conv(4, (3, 3), name=f"conv{i}")(x)
            x = nn.BatchNorm(use_running_average=not train, name=f"bn{i}")(x)
        return x


def test_batchnorm_first_call_draws_only_its_output(drawn):
    self = flaxmock.Mocker()
    self.net = BNNet()
    x = jnp.ones((1, 6, 6, 3))
    assert self.net.layer is None
    out = self.net(x)
    assert out.shape == (1, 6, 6, 4)
    # init recorded six batch_stats entries; the plain call drew one group (the output).
    assert len(self.net.layer.info.sown) == 6 and drawn == [1]
    # State asked for: drawn once, the same on every call (not redrawn per call).
    _, s1 = flaxmock.call(self.net.layer, x, mutable=["batch_stats"])
    _, s2 = flaxmock.call(self.net.layer, x, mutable=["batch_stats"])
    real = BNNet().init(jax.random.key(0), x)
    _specs_equal(s1["batch_stats"], real["batch_stats"])
    np.testing.assert_array_equal(
        s1["batch_stats"]["bn0"]["mean"], s2["batch_stats"]["bn0"]["mean"]
    )


def test_plain_call_of_a_sowing_mock_draws_no_sown_value(drawn):
    self = flaxmock.Mocker()
    self.block = ThoughtBlock()
    x = jnp.zeros((1, 16, 32))
    self.block(x)
    self.block(x)
    assert drawn == [1, 1]
    sown = self.block.intermediates(x)
    assert drawn[-1] == 3  # the output and the two sown entries (one a tuple of two values)
    assert set(sown) == {"intermediates", "plots"}
    self.block.intermediates(x, collections=("plots",))
    assert drawn[-1] == 2


def test_mocked_layer_in_a_tree_draws_sown_values_only_when_collected(drawn):
    class Outer(nn.Module):
        @nn.compact
        def __call__(self, x):
            return ThoughtBlock(name="block")(x)[0]

    x = jnp.zeros((1, 16, 32))
    tree = flaxmock.mock(flaxmock.unflaxify(Outer(), x), "block")
    flaxmock.call(tree, x)
    assert drawn == [1]
    _, cols = flaxmock.call(tree, x, mutable=["intermediates"])
    assert drawn[-1] == 2 and set(cols) == {"intermediates"}  # plots not drawn
    real = Outer().apply(Outer().init(jax.random.key(0), x), x, mutable=["intermediates"])[1]
    _specs_equal(cols, real)


# One plot function for mock and real (#13.3).


class Model(nn.Module):
    def setup(self):
        self.block = ThoughtBlock()

    def __call__(self, x):
        return self.block(x)

    def plot(self, x):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        sown = flaxmock.intermediates(self.block, x)
        scores = sown["plots"]["new_cumulative_scores"][0]
        fig, axes = plt.subplots(1, 2)
        axes[0].plot(np.asarray(scores[0]))
        axes[1].imshow(np.asarray(sown["intermediates"]["scores"][1]))
        return fig


def test_same_plot_method_on_a_mocker_and_on_a_bound_module():
    import matplotlib.pyplot as plt

    x = jnp.ones((1, 16, 32))
    self = flaxmock.Mocker()
    self.block = ThoughtBlock()
    fake = Model.plot(self, x)
    variables = Model().init(jax.random.key(0), x)
    real = Model().bind(variables).plot(x)
    try:
        assert len(fake.axes) == len(real.axes) == 2
        for a, b in zip(fake.axes, real.axes, strict=True):
            assert len(a.lines) == len(b.lines) and len(a.images) == len(b.images)
            for la, lb in zip(a.lines, b.lines, strict=True):
                assert la.get_ydata().shape == lb.get_ydata().shape
            for ia, ib in zip(a.images, b.images, strict=True):
                assert ia.get_array().shape == ib.get_array().shape
        # The real values are those of apply.
        block_vars = {"params": variables["params"]["block"]}
        ref = ThoughtBlock().apply(block_vars, x, mutable=["intermediates", "plots"])[1]
        got = flaxmock.intermediates(Model().bind(variables).block, x)
        jax.tree.map(np.testing.assert_array_equal, got, ref)
    finally:
        plt.close(fake)
        plt.close(real)


def test_intermediates_of_methods_and_errors():
    x = jnp.ones((3, 5))
    self = flaxmock.Mocker()
    self.vae = VAE()
    variables = VAE().init(jax.random.key(0), x)
    bound = VAE().bind(variables)
    _specs_equal(flaxmock.intermediates(self.vae, x), flaxmock.intermediates(bound, x))
    assert (
        flaxmock.intermediates(self.vae.encode, x) == {} == flaxmock.intermediates(bound.encode, x)
    )
    assert flaxmock.intermediates(self.vae, x, method="encode") == {}
    with pytest.raises(flaxmock.InvalidArgumentError, match=r"VAE is not bound.*model\.bind"):
        flaxmock.intermediates(VAE(), x)
    with pytest.raises(flaxmock.InvalidArgumentError, match=r"got int"):
        flaxmock.intermediates(3, x)
