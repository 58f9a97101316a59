"""Determinism: the same seed gives bit-identical mock outputs across runs and processes.

Seeds are folded with ``zlib.crc32`` of the call path and attribute name, never ``hash()``
(randomised per process), so two fresh interpreters draw the same bits as this one.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import textwrap

import pytest

# Prints one hex line per output: a partly mocked tree called twice (eager, then under
# pz.variable_jit), and a Mocker module called twice plus its intermediates.
SCRIPT = textwrap.dedent(
    """
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    from penzai import pz

    import flaxmock


    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(8, name="a")(x)
            self.sow("intermediates", "h", h)
            h = nn.LayerNorm(name="norm")(h)
            return nn.Dense(4, name="b")(nn.relu(h)), jnp.argmax(h, -1)


    def hex_of(tree):
        return "".join(np.asarray(leaf).tobytes().hex() for leaf in jax.tree.leaves(tree))


    def lines():
        x = jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)
        tree = flaxmock.unflaxify(Net(), jax.ShapeDtypeStruct((2, 3), jnp.float32))
        mocked = flaxmock.mock(tree, ["a", "norm"], seed=7)
        real = flaxmock.materialize(mocked, jax.random.key(3))
        out = [hex_of(flaxmock.call(real, x, mutable=["intermediates"])) for _ in range(2)]
        step = pz.variable_jit(lambda t, x: flaxmock.call(t, x, mutable=["intermediates"]))
        out += [hex_of(step(real, x)) for _ in range(2)]
        whole = flaxmock.mock(tree, "**", seed=7, fill="uniform")
        out += [hex_of(flaxmock.call(whole, x, mutable=["intermediates"])) for _ in range(2)]
        self = flaxmock.Mocker(seed=11)
        self.net = Net()
        out += [hex_of(self.net(x)) for _ in range(2)]
        out.append(hex_of(self.net.intermediates(x)))
        out.append(hex_of(self.param("w", nn.initializers.lecun_normal(), (3, 4))))
        return out


    if __name__ == "__main__":
        print("\\n".join(lines()))
    """
)


def run_in_subprocesses(tmp_path, hash_seeds: list[str]) -> list[list[str]]:
    """Runs SCRIPT in one fresh interpreter per hash seed, at once; returns their lines."""
    path = tmp_path / "script.py"
    path.write_text(SCRIPT)
    procs = [
        subprocess.Popen(
            [sys.executable, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # A different PYTHONHASHSEED per process: nothing may depend on ``hash()``.
            env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONHASHSEED": seed},
        )
        for seed in hash_seeds
    ]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        out.append(stdout.split())
    return out


def run_here(tmp_path) -> list[str]:
    path = tmp_path / "here.py"
    path.write_text(SCRIPT)
    return runpy.run_path(str(path))["lines"]()


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    return run_here(tmp_path_factory.mktemp("determinism"))


@pytest.mark.slow  # two fresh processes; heavy
def test_two_processes_and_this_one_draw_the_same_bits(tmp_path, in_process):
    first, second = run_in_subprocesses(tmp_path, ["1", "2"])
    assert len(first) == len(in_process) == 10
    assert first == second
    assert first == in_process


def test_successive_calls_differ_within_a_run(in_process):
    tree_eager, tree_eager_2, tree_jit, tree_jit_2, whole, whole_2, net, net_2, *_ = in_process
    assert tree_eager != tree_eager_2
    assert whole != whole_2
    assert net != net_2
    # Eager and pz.variable_jit calls draw for their own counts (2 and 3 after two eager calls).
    assert tree_jit not in (tree_eager, tree_eager_2) and tree_jit != tree_jit_2


def test_same_seed_in_one_process_is_bit_identical(tmp_path, in_process):
    assert run_here(tmp_path) == in_process
