"""Threads: concurrent conversions and calls give the sequential results; interception is local.

A ``threading.Barrier`` makes the threads start each step together, so their traces overlap.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.linen.module as flax_module
import jax
import jax.numpy as jnp
import numpy as np

import flaxmock


class SetupNet(nn.Module):
    def setup(self):
        self.dense = nn.Dense(6)
        self.norm = nn.LayerNorm()
        self.head = nn.Dense(3)

    def __call__(self, x):
        h = self.norm(self.dense(x))
        self.sow("intermediates", "h", h)
        return self.head(h)


class CompactNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(5, name="a")(x)
        x = nn.relu(nn.Dense(5, name="b")(x))
        self.sow("intermediates", "x", x)
        return nn.Dense(2, name="c")(x), jnp.argmax(x, -1)


ROUNDS = 4


def run_threads(*fns: Callable[[], Any]) -> list[Any]:
    """Runs each ``fn`` ROUNDS times in its own thread, all starting each round together."""
    barrier = threading.Barrier(len(fns))
    results: list[list[Any]] = [[] for _ in fns]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for _ in range(ROUNDS):
                barrier.wait(timeout=60)
                results[i].append(fns[i]())
        except BaseException as e:  # Reported in the main thread.
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    if errors:
        raise errors[0]
    return results


def as_bytes(tree: Any) -> list[Any]:
    """Leaves as bytes (arrays) or as they are (specs), to compare bit for bit."""
    return [
        np.asarray(leaf).tobytes() if isinstance(leaf, jax.Array | np.ndarray) else leaf
        for leaf in jax.tree.leaves(tree)
    ]


def convert_and_call(model: nn.Module, x: jax.Array) -> Callable[[], Any]:
    variables = model.init(jax.random.key(0), x)
    variables = {k: v for k, v in variables.items() if k != "intermediates"}

    def fn() -> Any:
        abstract = flaxmock.unflaxify(model, x)
        mocked = flaxmock.mock(abstract, "a" if isinstance(model, CompactNet) else "dense")
        real = flaxmock.unflaxify(model, x, variables=variables)
        return (
            flaxmock.call(real, x, mutable=["intermediates"]),
            flaxmock.call(flaxmock.bind(mocked, variables), x, mutable=["intermediates"]),
            flaxmock.eval_shape(flaxmock.call, abstract, x),
        )

    return fn


def test_two_models_converted_and_called_at_once():
    fns = [
        convert_and_call(SetupNet(), jnp.linspace(-1, 1, 8).reshape(2, 4)),
        convert_and_call(CompactNet(), jnp.linspace(-2, 2, 9).reshape(3, 3)),
    ]
    sequential = [[fn() for _ in range(ROUNDS)] for fn in fns]
    concurrent = run_threads(*fns)
    for seq, con in zip(sequential, concurrent, strict=True):
        for a, b in zip(seq, con, strict=True):
            assert jax.tree.structure(a) == jax.tree.structure(b)
            assert as_bytes(a) == as_bytes(b)


def test_two_threads_call_the_same_partly_mocked_tree():
    """Each call draws for its own count: together the threads draw what a sequential run does."""
    x = jnp.linspace(-1, 1, 8).reshape(2, 4)
    tree = flaxmock.unflaxify(SetupNet(), x)

    def fresh() -> Any:
        # A fresh mock each time: trees derived from one mock share its counter (penzai state).
        return flaxmock.materialize(flaxmock.mock(tree, "dense"), jax.random.key(0))

    sequential_tree = fresh()
    sequential = [
        as_bytes(flaxmock.call(sequential_tree, x, mutable=["intermediates"]))
        for _ in range(2 * ROUNDS)
    ]
    assert len({tuple(s) for s in sequential}) == 2 * ROUNDS  # every call draws anew
    shared = fresh()
    concurrent = run_threads(
        *[lambda: as_bytes(flaxmock.call(shared, x, mutable=["intermediates"]))] * 2
    )
    assert shared.submodule_calls[(0, "dense.__call__")].call_count == 2 * ROUNDS
    drawn = sorted(tuple(r) for rs in concurrent for r in rs)
    assert drawn == sorted(tuple(s) for s in sequential)


def test_two_threads_call_the_same_real_tree():
    x = jnp.linspace(-1, 1, 8).reshape(2, 4)
    model = SetupNet()
    variables = {"params": model.init(jax.random.key(0), x)["params"]}
    tree = flaxmock.unflaxify(model, x, variables=variables)
    expected = as_bytes(model.apply(variables, x, mutable=["intermediates"]))
    concurrent = run_threads(
        *[lambda: as_bytes(flaxmock.call(tree, x, mutable=["intermediates"]))] * 2
    )
    assert all(r == expected for rs in concurrent for r in rs)


def test_interception_is_thread_local():
    """An interceptor active in one thread (the user's, or flaxmock's) is not seen in another."""
    x = jnp.ones((2, 4))
    model = SetupNet()
    variables = {"params": model.init(jax.random.key(0), x)["params"]}
    tree = flaxmock.unflaxify(model, x, variables=variables)
    seen: list[int] = []
    inside = threading.Barrier(2)
    done = threading.Barrier(2)
    stack_in_b: list[int] = []

    def spy(next_fun, args, kwargs, context):
        seen.append(threading.get_ident())
        return next_fun(*args, **kwargs)

    def thread_a() -> None:
        with nn.intercept_methods(spy):
            inside.wait(timeout=60)  # B runs while A's interceptor is installed.
            done.wait(timeout=120)
            model.apply(variables, x)  # A's own calls are seen.

    def thread_b() -> None:
        inside.wait(timeout=60)
        stack_in_b.append(len(flax_module._global_interceptor_stack))
        flaxmock.unflaxify(model, x)
        flaxmock.call(tree, x)
        flaxmock.call(flaxmock.mock(tree, "head"), x)
        stack_in_b.append(len(flax_module._global_interceptor_stack))
        done.wait(timeout=120)

    a = threading.Thread(target=thread_a)
    b = threading.Thread(target=thread_b)
    a.start()
    b.start()
    a.join(timeout=300)
    b.join(timeout=300)
    assert stack_in_b == [0, 0]
    assert seen and set(seen) == {a.ident}
    assert len(flax_module._global_interceptor_stack) == 0


def test_flaxmock_interceptor_is_not_seen_by_a_plain_apply_in_another_thread():
    """While one thread converts, a plain ``model.apply`` in another runs uninterrupted."""
    x = jnp.linspace(-1, 1, 8).reshape(2, 4)
    model = SetupNet()
    variables = {"params": model.init(jax.random.key(0), x)["params"]}
    expected = np.asarray(model.apply(variables, x))

    def convert() -> Any:
        return flaxmock.unflaxify(model, x).info.out_spec.shape

    def plain() -> Any:
        return np.asarray(model.apply(variables, x))

    converted, applied = run_threads(convert, plain)
    assert converted == [(2, 3)] * ROUNDS
    for out in applied:
        np.testing.assert_array_equal(out, expected)
