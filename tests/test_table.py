"""Tests of the summary table in ``flaxmock._core.table``."""

from __future__ import annotations

import collections
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from penzai.toolshed.unflaxify import ArgsAndKwargs

from flaxmock._core.table import (
    CallRow,
    Summary,
    describe_inputs,
    describe_specs,
    format_bytes,
    format_count,
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
