"""Sharded materialization and sharded mock outputs on 8 simulated CPU devices (subprocesses)."""

from __future__ import annotations

import textwrap

from helpers import run_on_8_cpu_devices

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, flax.linen as nn, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from penzai import pz
    import flaxmock

    assert len(jax.devices()) == 8, jax.devices()

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            w1 = self.param(
                "w1", nn.with_logical_partitioning(nn.initializers.normal(), ("embed", "mlp")),
                (16, 32))
            w2 = self.param(
                "w2", nn.with_logical_partitioning(nn.initializers.normal(), ("mlp", "embed")),
                (32, 16))
            return jnp.tanh(x @ w1) @ w2

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = MLP(name="mocked")(x)
            return MLP(name="real")(h)

    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
    rules = (("embed", "data"), ("mlp", "model"))
    x = jnp.ones((4, 16))
    tree = flaxmock.mock(flaxmock.unflaxify(Model(), x), "mocked")
    real = flaxmock.materialize(tree, jax.random.key(0), mesh=mesh, rules=rules)
    params = real.submodule_calls[(1, "real.__call__")].scope_data.parameters
    # Real values are penzai parameters, created sharded.
    assert isinstance(params["w1"], pz.Parameter), type(params["w1"])
    w1 = params["w1"].value
    assert isinstance(w1, nn.LogicallyPartitioned), type(w1)
    assert w1.value.sharding == NamedSharding(mesh, P("data", "model")), w1.value.sharding
    assert params["w2"].value.value.sharding == NamedSharding(mesh, P("model", "data"))
    # Each device holds a slice: never gathered on one device.
    assert w1.value.addressable_shards[0].data.shape == (8, 8)
    # Same values as an unsharded init.
    ref = jax.jit(Model().init)(jax.random.key(0), x)["params"]["real"]["w1"].value
    np.testing.assert_array_equal(np.asarray(w1.value), np.asarray(ref))
    out = flaxmock.call(real, x)
    assert out.shape == (4, 16)
    print("OK")
    """
)


MOCK_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, flax.linen as nn, numpy as np, pytest
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from penzai import pz
    import flaxmock

    class Up(nn.Module):
        @nn.compact
        def __call__(self, x):
            w = self.param(
                "w", nn.with_logical_partitioning(nn.initializers.normal(), ("embed", "mlp")),
                (16, 32))
            return {"h": x @ w, "n": 3}

    class Down(nn.Module):
        @nn.compact
        def __call__(self, h):
            w = self.param("w", nn.with_partitioning(nn.initializers.normal(), ("model", None)),
                           (32, 16))
            return h @ w

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            return Down(name="down")(Up(name="up")(x)["h"])

    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
    rules = (("embed", None), ("mlp", "model"))
    x = jax.device_put(jnp.ones((8, 16)), NamedSharding(mesh, P("data", None)))
    model = Model()
    variables = jax.jit(model.init)(jax.random.key(0), x)
    with nn.logical_axis_rules(rules):
        shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(variables), mesh, rules)
    variables = jax.device_put(variables, shardings)

    # The oracle: the shardings XLA gives the real calls' outputs.
    real_up = jax.jit(lambda v, x: Up().apply(v, x)["h"])({"params": variables["params"]["up"]}, x)
    real_h = real_up
    real_out = jax.jit(model.apply)(variables, x)

    tree = flaxmock.unflaxify(model, x)
    mocked = flaxmock.mock(tree, ["up", "down"], mesh=mesh, rules=rules)
    up = flaxmock.call(mocked.submodule_calls[(0, "up.__call__")], x)
    assert up["n"] == 3
    assert up["h"].shape == real_h.shape
    assert up["h"].sharding.is_equivalent_to(real_h.sharding, 2), up["h"].sharding
    out = flaxmock.call(mocked, x)
    assert out.sharding.is_equivalent_to(real_out.sharding, 2), (out.sharding, real_out.sharding)
    # The outputs really are split: not every device holds the whole array.
    assert up["h"].addressable_shards[0].data.shape != up["h"].shape
    # Under jit too.
    jitted = pz.variable_jit(lambda t, x: flaxmock.call(t, x))(mocked, x)
    assert jitted.sharding.is_equivalent_to(real_out.sharding, 2), jitted.sharding
    # Without mesh=, outputs are not sharded on the mesh.
    plain = flaxmock.call(flaxmock.mock(tree, ["up", "down"]), x)
    assert not isinstance(plain.sharding, NamedSharding) or plain.sharding.mesh != mesh
    with pytest.raises(flaxmock.InvalidArgumentError, match="expects a jax.sharding.Mesh"):
        flaxmock.mock(tree, "up", mesh="data")
    print("OK")
    """
)


def test_materialize_creates_sharded_parameters():
    run_on_8_cpu_devices(SCRIPT)


def test_mock_outputs_have_the_real_calls_shardings():
    run_on_8_cpu_devices(MOCK_SCRIPT)
