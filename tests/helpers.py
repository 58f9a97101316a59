"""Helpers shared by the test modules: assertions, zoo plumbing and small shared models.

No test module imports another; what two of them need lives here.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import flaxmock
from flaxmock._linen import layer as _layer
from zoo_case import ZooCase


def init_variables(case: ZooCase):
    model = case.make()
    rngs = {"params": jax.random.key(0), **{r: jax.random.key(1) for r in case.rngs}}
    variables = model.init(rngs, *case.args, method=case.method, **case.kwargs, **case.init_kwargs)
    # module.init also returns what it sowed; apply is given what a checkpoint holds.
    return model, {k: v for k, v in variables.items() if k != "intermediates"}


def apply_rngs(case: ZooCase):
    return {r: jax.random.key(2) for r in case.rngs} or None


def with_python_outputs(jitted_maker, fn):
    """Wraps ``jitted_maker(fn)`` so that fn may return Python values (None, ints, strings).

    ``jax.jit`` returns only arrays: the rest of the output is captured at trace time.
    """
    rebuilds = []

    def arrays_only(*args):
        arrays, rebuild = flaxmock._core.specs.partition(fn(*args))
        rebuilds.append(rebuild)
        return arrays

    compiled = jitted_maker(arrays_only)
    return lambda *args: (lambda arrays: rebuilds[-1](arrays))(compiled(*args))


def assert_trees_equal(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for path, a, e in zip(
        [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(expected)[0]],
        jax.tree.leaves(actual),
        jax.tree.leaves(expected),
        strict=True,
    ):
        if hasattr(e, "shape"):
            assert a.shape == e.shape and a.dtype == e.dtype, path
            np.testing.assert_array_equal(np.asarray(a), np.asarray(e), err_msg=path)
        else:
            assert a == e, path


def assert_specs_equal(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        if hasattr(e, "shape"):
            assert (a.shape, a.dtype) == (e.shape, e.dtype)
        else:
            assert a == e


# Small models shared by several test modules.


class Body(nn.Module):
    """One scanned step: a tuple carry, a broadcast argument, a sown value."""

    dim: int = 8

    @nn.compact
    def __call__(self, carry, bias):
        h, count = carry
        pre = nn.Dense(self.dim, name="proj")(h) + bias
        h = nn.LayerNorm(name="norm")(jnp.tanh(pre))
        self.sow("intermediates", "h", h)
        return (h, count + 1), pre[..., 0]


class Stack(nn.Module):
    layers: int = 4
    dim: int = 8

    @nn.compact
    def __call__(self, x):
        scanned = nn.scan(
            nn.remat(Body),
            variable_axes={"params": 0, "intermediates": 0},
            split_rngs={"params": True},
            in_axes=(nn.broadcast,),
            length=self.layers,
        )
        (h, count), per_step = scanned(dim=self.dim, name="blocks")((x, 0), jnp.ones(self.dim))
        return nn.Dense(2, name="head")(h), count, per_step


class Head(nn.Module):
    @nn.compact
    def __call__(self, x):
        kernel = self.param("head_kernel", nn.initializers.normal(), (5, 3))
        # A nested apply: the inner module gets its variables from this call, not from the tree.
        return nn.Dense(3, name="inner").apply(
            {"params": {"kernel": kernel, "bias": jnp.zeros(3)}}, jnp.tanh(x)
        )


def run_on_8_cpu_devices(script: str) -> None:
    """Runs ``script`` in a fresh Python process with 8 simulated CPU devices.

    JAX fixes its device count when its backend starts, so a test that needs a mesh of 8
    devices runs in its own process. The script must print ``OK`` last.
    """
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().endswith("OK")


# Small NNX models shared by the NNX test modules.


class NnxMLP(nnx.Module):
    def __init__(self, din: int = 3, dh: int = 8, dout: int = 2, *, rngs: nnx.Rngs):
        self.layers = nnx.List(
            [
                nnx.Linear(din, dh, rngs=rngs),
                nnx.Linear(dh, dh, rngs=rngs),
                nnx.Linear(dh, dout, rngs=rngs),
            ]
        )

    def __call__(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = nnx.relu(x)
        return x


class NnxBlock(nnx.Module):
    """BatchNorm (training mode: updates its statistics) and Dropout (consumes rngs)."""

    def __init__(self, d: int, *, rngs: nnx.Rngs):
        self.lin = nnx.Linear(d, d, rngs=rngs)
        self.bn = nnx.BatchNorm(d, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        return self.drop(nnx.relu(self.bn(self.lin(x)))) + x


class NnxStack(nnx.Module):
    """Blocks built with nnx.split_rngs + nnx.vmap, run with nnx.scan."""

    def __init__(self, d: int = 4, n: int = 3, *, rngs: nnx.Rngs):
        @nnx.split_rngs(splits=n)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make(rngs):
            return NnxBlock(d, rngs=rngs)

        self.blocks = make(rngs)
        self.head = nnx.Linear(d, 2, rngs=rngs)

    def __call__(self, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def body(x, block):
            return block(x)

        return self.head(body(x, self.blocks))


def nnx_values(model, *, with_variables: bool = False) -> dict:
    """``path -> value`` (NumPy; random keys as their key data) of every variable of ``model``.

    With ``with_variables``, ``path -> (variable, value)``.
    """
    out = {}
    for path, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Variable):
            value = var.get_value()
            if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
                value = jax.random.key_data(value)
            out[path] = (var, np.asarray(value)) if with_variables else np.asarray(value)
    return out


def jit_bodies_inline(tree):
    """``jax.disable_jit()`` when ``tree`` calls an ``nn.jit`` body, else a no-op context.

    flaxmock runs ``nn.jit`` bodies inline (Flax caches their traces, interceptors included);
    a reference ``module.apply`` of such a model is run the same way, and never leaves a
    trace made under a test's interceptor in Flax's cache.
    """
    jitted = any(
        "jit" in getattr(getattr(layer, "info", None), "transforms", ())
        for _, layer in _layer.iter_layers(tree)
    )
    return jax.disable_jit() if jitted else contextlib.nullcontext()
