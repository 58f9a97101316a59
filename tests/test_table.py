"""Tests of the summary table in ``flaxmock._core.table``."""

from __future__ import annotations

import collections
import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from penzai.toolshed.unflaxify import ArgsAndKwargs

import flaxmock
from flaxmock._core import html
from flaxmock._core.table import (
    CallRow,
    Summary,
    describe_inputs,
    describe_specs,
    format_bytes,
    format_count,
    format_flops,
    roll_up,
    spec_bytes,
)


def S(shape, dtype=jnp.float32):  # noqa: N802 - reads like a type in the tables below.
    return jax.ShapeDtypeStruct(shape, dtype)


Pair = collections.namedtuple("Pair", ["a", "b"])


@pytest.mark.parametrize(
    ("dtype", "text"),
    [
        (jnp.float32, "f32"),
        (jnp.float16, "f16"),
        (jnp.float64, "f64"),
        (jnp.bfloat16, "bf16"),
        (jnp.float8_e4m3fn, "f8e4m3fn"),
        (jnp.float8_e5m2, "f8e5m2"),
        (jnp.int4, "i4"),
        (jnp.int8, "i8"),
        (jnp.int64, "i64"),
        (jnp.uint8, "u8"),
        (jnp.uint32, "u32"),
        (jnp.bool_, "bool"),
        (jnp.complex64, "c64"),
        (jnp.complex128, "c128"),
        (jax.random.key(0).dtype, "key<fry>"),
        (jax.random.key(0, impl="rbg").dtype, "key<rbg>"),
        (np.object_, "object"),
    ],
    ids=str,
)
def test_short_dtype_names(dtype, text):
    assert describe_specs(S((2, 3), dtype)) == f"{text}[2,3]"


@pytest.mark.parametrize(
    ("tree", "text"),
    [
        (S((1, 16, 512)), "f32[1,16,512]"),
        (S(()), "f32[]"),
        (S((0, 3)), "f32[0,3]"),
        ((S((2, 3), jnp.bfloat16), S((), jnp.int32)), "(bf16[2,3], i32[])"),
        ({"a": S((4,))}, "{'a': f32[4]}"),
        ([S((4,)), None], "[f32[4], None]"),
        ((S((4,)),), "(f32[4],)"),
        ((), "()"),
        (None, "None"),
        (3, "3"),
        ("mode", "'mode'"),
        (True, "True"),
        (Pair(S((2,)), 1), "Pair(a=f32[2], b=1)"),
        (jnp.zeros((2, 2), jnp.int8), "i8[2,2]"),
        (np.zeros(3, np.float32), "f32[3]"),
        (jax.random.key(0), "key<fry>[]"),
        (
            nn.Partitioned(S((8,)), names=("x",)),
            "Partitioned(value=f32[8], names=('x',), mesh=None)",
        ),
    ],
    ids=repr,
)
def test_describe_specs(tree, text):
    assert describe_specs(tree) == text


def test_describe_specs_registered_pytree_node():
    @jax.tree_util.register_pytree_node_class
    class Box:
        def __init__(self, x):
            self.x = x

        def tree_flatten(self):
            return (self.x,), None

        @classmethod
        def tree_unflatten(cls, aux, children):
            return cls(*children)

    assert describe_specs(Box(S((3,)))) == "Box(f32[3])"


def test_describe_specs_truncates_at_max_width():
    tree = [S((1, 16, 512))] * 10
    text = describe_specs(tree)
    assert len(text) == 60
    assert text == "[f32[1,16,512], f32[1,16,512], f32[1,16,512], f32[1,16,512]…"
    assert describe_specs(tree, max_width=10) == "[f32[1,16…"
    # Exactly at the limit: nothing cut.
    assert describe_specs(S((1, 16, 512)), max_width=13) == "f32[1,16,512]"


def test_describe_specs_stops_early_on_huge_trees():
    # Would take seconds if the whole tree were rendered.
    huge = {f"layer_{i}": (S((8, 128)), S((8, 128))) for i in range(200_000)}
    assert describe_specs(huge).endswith("…")


@pytest.mark.parametrize(
    ("inputs", "text"),
    [
        (((S((4, 3)),), {}), "f32[4,3]"),
        (((S((4, 3)),), {"deterministic": True}), "f32[4,3], deterministic=True"),
        (((), {"x": S((2,)), "mode": "b"}), "x=f32[2], mode='b'"),
        (((), {}), ""),
        (ArgsAndKwargs(args=(S((2,), jnp.int32),), kwargs={"train": False}), "i32[2], train=False"),
        # Not an (args, kwargs) pair: shown as a pytree.
        ((S((2,)), S((3,))), "(f32[2], f32[3])"),
        (S((2,)), "f32[2]"),
    ],
)
def test_describe_inputs(inputs, text):
    assert describe_inputs(inputs) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (1024, "1.00 KiB"),
        (1536, "1.50 KiB"),
        (3 * 2**20, "3.00 MiB"),
        (16_060_000_000, "14.96 GiB"),
        (2**40, "1.00 TiB"),
        (2**70, "1024.00 EiB"),
    ],
)
def test_format_bytes(n, text):
    assert format_bytes(n) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"),
        (640, "640"),
        (999, "999"),
        (1000, "1K"),
        (12_345, "12.3K"),
        (123_456, "123K"),
        (999_999, "1M"),
        (1_200_000, "1.2M"),
        (8_030_261_248, "8.03B"),
        (70_553_706_496, "70.6B"),
        (1_500_000_000_000, "1.5T"),
        (10**15, "1000T"),
    ],
)
def test_format_count(n, text):
    assert format_count(n) == text


X = S((4, 3))
H = S((4, 8))
Y = S((4, 2))
ROWS = [
    CallRow("<root>", "Sequential", "__call__", ((X,), {}), Y, 0, 0),
    CallRow("layers_0", "Dense", "__call__", ((X,), {}), H, 32, 128),
    CallRow("layers_2", "Dense", "__call__", ((H,), {}), Y, 18, 72, note="mocked"),
]

EXPECTED = """\
Sequential
#  path      module      method    inputs    outputs   params  bytes  note
-  --------  ----------  --------  --------  --------  ------  -----  ------
0  <root>    Sequential  __call__  f32[4,3]  f32[4,2]       -      -
1  layers_0  Dense       __call__  f32[4,3]  f32[4,8]      32  128 B
2  layers_2  Dense       __call__  f32[4,8]  f32[4,2]      18   72 B  mocked
   total                                                   50  200 B"""


def test_summary_renders_aligned_table():
    s = Summary(ROWS, title="Sequential")
    assert str(s) == EXPECTED
    assert repr(s) == EXPECTED


def test_summary_without_title_or_rows():
    assert str(Summary([])) == (
        "#  path   module  method  inputs  outputs  params  bytes  note\n"
        "-  -----  ------  ------  ------  -------  ------  -----  ----\n"
        "   total                                        0    0 B"
    )


def test_summary_large_numbers_and_long_cells():
    row = CallRow(
        "decoder/layers",
        "ScanBlock",
        "__call__",
        ((S((1, 2048, 8192), jnp.bfloat16),), {"cache": [S((8, 2048, 128))] * 8}),
        S((1, 2048, 8192), jnp.bfloat16),
        70_553_706_496,
        141_107_412_992,
        note="scan x80",
    )
    lines = str(Summary([row])).splitlines()
    assert lines[2] == (
        "0  decoder/layers  ScanBlock  __call__  "
        "bf16[1,2048,8192], cache=[f32[8,2048,128], f32[8,2048,128],…  "
        "bf16[1,2048,8192]   70.6B  131.42 GiB  scan x80"
    )
    assert lines[3].endswith("70.6B  131.42 GiB")


def test_totals_and_to_rows():
    s = Summary(ROWS, title="Sequential")
    assert (s.total_params, s.total_bytes) == (50, 200)
    rows = s.to_rows()
    assert [r["path"] for r in rows] == ["<root>", "layers_0", "layers_2"]
    assert rows[2] == {
        "index": 2,
        "path": "layers_2",
        "module_type": "Dense",
        "method": "__call__",
        "inputs": "f32[4,8]",
        "outputs": "f32[4,2]",
        "param_count": 18,
        "param_bytes": 72,
        "note": "mocked",
    }


def test_call_row_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ROWS[0].note = "x"  # type: ignore[misc]


def test_thousand_rows_render():
    rows = [
        CallRow(f"blocks_{i}/attn", "Attention", "__call__", ((X,), {}), [H] * 50, i, 4 * i)
        for i in range(1000)
    ]
    lines = str(Summary(rows)).splitlines()
    assert len(lines) == 1003
    assert lines[-1].endswith("500K  1.91 MiB")
    # Every row's params cell is right-aligned under its header.
    end = lines[0].index("params") + len("params")
    assert all(line[end - 1] != " " and line[end] == " " for line in lines[2:])


# Cost columns, roll-ups and the other renderings.


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"),
        (999, "999"),
        (1_000, "1K"),
        (962_072_674_304, "962G"),
        (292_600_000_000_000, "293T"),
    ],
)
def test_format_flops(n, text):
    assert format_flops(n) == text


def test_spec_bytes_and_out_bytes():
    assert spec_bytes({"a": S((2, 3)), "b": (S((4,), jnp.bfloat16), None, "x")}) == 24 + 8
    assert spec_bytes(S((3,), jax.random.key(0).dtype)) == 3 * 8
    assert CallRow("a", "D", "__call__", None, [S((2, 8))], 0, 0).out_bytes == 64


def _tree_rows():
    # <root> -> a -> a/x, a/y (mocked); <root> -> b.
    return [
        CallRow("<root>", "M", "__call__", None, None, 0, 0, flops=1, vjp_flops=2),
        CallRow("a", "A", "__call__", None, None, 4, 16, depth=1, flops=10, vjp_flops=20),
        CallRow("a/x", "D", "__call__", None, None, 8, 32, depth=2, flops=100, vjp_flops=200),
        CallRow("a/y", "D", "__call__", None, None, 0, 0, depth=2, mocked=True, note="mocked"),
        CallRow("b", "B", "__call__", None, None, 2, 8, depth=1, flops=1000, vjp_flops=2000),
    ]


def test_roll_up_adds_callees_and_skips_mocks():
    rows = roll_up(_tree_rows())
    assert [r.subtree_flops for r in rows] == [1111, 110, 100, None, 1000]
    assert [r.subtree_vjp_flops for r in rows] == [2222, 220, 200, None, 2000]
    unknown = roll_up([*_tree_rows()[:2], dataclasses.replace(_tree_rows()[2], flops=None)])
    assert [r.subtree_flops for r in unknown] == [None, None, None]
    table = Summary(unknown, computed=frozenset({"flops"}))
    assert table.total_flops is None
    # The root's own figure is known, its subtree's is not.
    assert str(table).splitlines()[2].split()[-4:] == ["1", "?", "0", "B"]


def test_collapse_folds_rows_and_keeps_totals():
    table = Summary(roll_up(_tree_rows()), title="M", computed=frozenset({"flops", "vjp_flops"}))
    assert (table.total_flops, table.total_vjp_flops) == (1111, 2222)
    top = table.collapse(1)
    assert [r.path for r in top.rows] == ["<root>", "a", "b"]
    a = top.rows[1]
    assert (a.flops, a.vjp_flops, a.param_count, a.param_bytes) == (110, 220, 12, 48)
    assert a.note == "2 calls below" and a.subtree_flops == 110
    assert (top.total_flops, top.total_params, top.title) == (1111, 14, "M")
    root = table.collapse(0).rows
    assert len(root) == 1 and (root[0].flops, root[0].param_count) == (1111, 14)
    with pytest.raises(flaxmock.InvalidArgumentError, match="depth= expects a non-negative int"):
        table.collapse(-1)


def test_cost_columns_and_totals_render():
    table = Summary(roll_up(_tree_rows()), computed=frozenset({"flops", "vjp_flops"}))
    lines = str(table).splitlines()
    assert lines[0].split() == [
        "#", "path", "module", "method", "inputs", "outputs", "params", "bytes", "flops",
        "subtree", "vjp", "out", "bytes", "note",
    ]  # fmt: skip
    assert lines[5].split()[-6:] == ["-", "-", "-", "0", "B", "mocked"]
    assert lines[-1].split() == ["total", "14", "56", "B", "1.11K", "2.22K"]


def test_to_dict_and_json_hold_every_field():
    table = Summary(roll_up(_tree_rows()), title="M", computed=frozenset({"flops"}))
    data = table.to_dict()
    assert data["title"] == "M" and data["total_flops"] == 1111
    assert data["total_vjp_flops"] is None  # not computed
    row = data["rows"][2]
    assert row["path"] == "a/x" and row["depth"] == 2 and row["flops"] == 100
    assert row["subtree_flops"] == 100 and row["out_bytes"] == 0 and row["mocked"] is False
    field_names = {f.name for f in dataclasses.fields(CallRow)}
    assert field_names | {"index", "out_bytes"} == set(row)
    assert json.loads(table.to_json()) == data


def test_html_has_a_fixed_header_and_foldable_subtrees():
    table = Summary(roll_up(_tree_rows()), title="M<&>", computed=frozenset({"flops"}))
    text = table._repr_html_()
    assert text.split('"><style>')[1] == html.render(table).split('"><style>')[1]
    assert "position: sticky" in text and "M&lt;&amp;&gt;" in text
    # The root and "a" have callees: two triangles; the mocked row gets the mock's colour.
    assert text.count('class="fm-toggle"') == 2
    assert text.count('data-depth="2"') == 2
    # Long tables start folded below the first level, by a script (all rows shown without).
    long = Summary([CallRow(f"l{i}", "D", "__call__", None, None, 0, 0, depth=min(i, 1))
                    for i in range(100)])  # fmt: skip
    assert "<script>" in long._repr_html_() and "<script>" not in text
