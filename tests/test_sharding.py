"""Sharded materialization on 8 simulated CPU devices (in a separate process)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, flax.linen as nn, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
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


def test_materialize_creates_sharded_parameters():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().endswith("OK")
