"""``summary``: one row per call, from abstract values."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

import flaxmock
from helpers import Head, Stack


class Tied(nn.Module):
    """An embedding used twice (lookup and attend): its parameters count once."""

    @nn.compact
    def __call__(self, tokens):
        embed = nn.Embed(50, 8, name="embed")
        h = nn.Dense(8, name="mix")(embed(tokens))
        return embed.attend(h)


def test_rows_follow_call_order_and_count_shared_parameters_once():
    tree = flaxmock.unflaxify(Tied(), jax.ShapeDtypeStruct((2, 5), jnp.int32))
    table = flaxmock.summary(tree)
    assert [(r.path, r.method) for r in table.rows] == [
        ("<root>", "__call__"),
        ("embed", "__call__"),
        ("mix", "__call__"),
        ("embed", "attend"),
    ]
    assert [r.param_count for r in table.rows] == [0, 400, 72, 0]
    assert table.total_params == 472
    assert table.total_bytes == 472 * 4
    variables = jax.eval_shape(
        lambda k: Tied().init(k, jnp.zeros((2, 5), jnp.int32)), jax.random.key(0)
    )
    assert table.total_params == sum(x.size for x in jax.tree.leaves(variables))
    text = str(table)
    assert "embed" in text and "attend" in text and "i32[2,5]" in text


def test_mocked_rows_are_marked_and_own_nothing():
    tree = flaxmock.unflaxify(Tied(), jax.ShapeDtypeStruct((2, 5), jnp.int32))
    table = flaxmock.summary(flaxmock.mock(tree, "mix"))
    mix = next(r for r in table.rows if r.path == "mix")
    assert mix.note == "mocked, 72 params not allocated" and mix.param_count == 0
    assert mix.outputs == jax.ShapeDtypeStruct((2, 5, 8), jnp.float32)


def test_lifted_bodies_are_listed_once_with_transform_and_steps():
    table = flaxmock.summary(flaxmock.unflaxify(Stack(), jnp.ones((2, 8))))
    notes = {r.path: r.note for r in table.rows}
    assert notes["blocks"] == "scan/remat x4"
    assert [r.path for r in table.rows].count("blocks/proj") == 1
    proj = next(r for r in table.rows if r.path == "blocks/proj")
    assert proj.param_count == 4 * (8 * 8 + 8)  # stacked over the 4 steps
    assert "scan/remat x4" in str(table)


def test_nested_apply_row():
    table = flaxmock.summary(flaxmock.unflaxify(Head(), jnp.ones((2, 5))))
    assert [(r.path, r.note) for r in table.rows] == [("<root>", ""), ("inner", "nested apply")]
