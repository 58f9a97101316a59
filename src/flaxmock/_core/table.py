"""The per-call summary table shared by the Linen and the NNX ``summary``.

A :class:`Summary` is a list of :class:`CallRow` (one per module call, in call order) that prints
as an aligned plain-text table. The helpers :func:`describe_specs`, :func:`format_bytes` and
:func:`format_count` render its cells compactly (``f32[1,16,512]``, ``14.96 GiB``, ``8.03B``)
and are reused in reprs and error messages.

Rendering only reads what the rows hold (specs, counts): it runs no JAX computation and is linear
in the number of rows, and each spec cell stops rendering as soon as it is too long to show.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

#: Longest text of an ``inputs`` or ``outputs`` cell; longer ones end in "…".
MAX_CELL_WIDTH = 60

_ELLIPSIS = "…"

_COLUMNS = ("#", "path", "module", "method", "inputs", "outputs", "params", "bytes", "note")
# Right-aligned columns: the numbers.
_RIGHT = frozenset({"#", "params", "bytes"})


@dataclasses.dataclass(frozen=True)
class CallRow:
    """One module call of a summary.

    Attributes:
      path: The module's path from the root, ``/``-separated (``"blocks_0/attn"``).
      module_type: The module's class name.
      method: The method called (``"__call__"``).
      inputs: The call's inputs: a pytree of ``jax.ShapeDtypeStruct`` and Python values,
        conventionally ``(args, kwargs)``, which is shown like a call's argument list.
      outputs: The call's outputs, a pytree like ``inputs``.
      param_count: The number of parameters this call's module owns (not those of its
        submodules, and a shared parameter only at its owner), so that rows add up.
      param_bytes: The bytes of those parameters.
      note: Free text, e.g. ``"mocked"`` or ``"scan x80"``.
    """

    path: str
    module_type: str
    method: str
    inputs: Any
    outputs: Any
    param_count: int
    param_bytes: int
    note: str = ""


class _Full(Exception):
    """Raised by :class:`_Writer` once it holds more text than can be shown."""


class _Writer:
    """Collects text pieces and stops the rendering as soon as the text is too long.

    Stopping early keeps a cell cheap even when its pytree is huge (an 80-layer cache).
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.pieces: list[str] = []
        self.size = 0

    def write(self, text: str) -> None:
        self.pieces.append(text)
        self.size += len(text)
        if self.size > self.limit:
            raise _Full

    def text(self) -> str:
        out = "".join(self.pieces)
        if len(out) > self.limit:
            out = out[: self.limit - 1] + _ELLIPSIS
        return out


@functools.lru_cache(maxsize=256)
def _short_dtype(dtype: Any) -> str:
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return str(dtype)  # Already short: key<fry>.
    try:
        name = np.dtype(dtype).name
    except TypeError:
        return str(dtype)
    if name == "bool":
        return "bool"
    if name == "bfloat16":
        return "bf16"
    # float8_e4m3fn -> f8e4m3fn, uint8 -> u8, complex64 -> c64.
    match = re.fullmatch(r"(float|int|uint|complex)(\d+)(?:_(\w+))?", name)
    if match is None:
        return name
    kind, bits, variant = match.groups()
    prefix = {"float": "f", "int": "i", "uint": "u", "complex": "c"}[kind]
    return f"{prefix}{bits}{variant or ''}"


def _is_array_like(x: Any) -> bool:
    return isinstance(x, jax.ShapeDtypeStruct | jax.Array | np.ndarray | np.generic)


def _render(x: Any, out: _Writer) -> None:
    if _is_array_like(x):
        out.write(f"{_short_dtype(x.dtype)}[{','.join(map(str, np.shape(x)))}]")
    elif isinstance(x, tuple) and hasattr(x, "_fields"):  # A namedtuple.
        out.write(f"{type(x).__name__}(")
        _render_items(zip(x._fields, x, strict=True), out, "=", str)
        out.write(")")
    elif isinstance(x, list):
        out.write("[")
        _render_seq(x, out)
        out.write("]")
    elif isinstance(x, tuple):
        out.write("(")
        _render_seq(x, out)
        out.write(",)" if len(x) == 1 else ")")
    elif isinstance(x, Mapping):
        out.write("{")
        _render_items(x.items(), out, ": ", repr)
        out.write("}")
    elif dataclasses.is_dataclass(x) and not isinstance(x, type):
        out.write(f"{type(x).__name__}(")
        fields = [(f.name, getattr(x, f.name)) for f in dataclasses.fields(x)]
        _render_items(fields, out, "=", str)
        out.write(")")
    else:
        children, treedef = jax.tree_util.tree_flatten(x, is_leaf=lambda y: y is not x)
        if jax.tree_util.treedef_is_leaf(treedef):
            out.write(repr(x))  # A leaf: a Python value.
        else:
            # Another registered pytree node: show its type and children.
            out.write(f"{type(x).__name__}(")
            _render_seq(children, out)
            out.write(")")


def _render_seq(items: Any, out: _Writer) -> None:
    for i, item in enumerate(items):
        if i:
            out.write(", ")
        _render(item, out)


def _render_items(items: Any, out: _Writer, sep: str, key_text: Any) -> None:
    for i, (key, value) in enumerate(items):
        if i:
            out.write(", ")
        out.write(f"{key_text(key)}{sep}")
        _render(value, out)


def _describe(render: Any, max_width: int) -> str:
    out = _Writer(max_width)
    try:
        render(out)
    except _Full:
        pass
    return out.text()


def describe_specs(tree: Any, max_width: int = MAX_CELL_WIDTH) -> str:
    """Returns a compact one-line text of a pytree of specs.

    Arrays and ``jax.ShapeDtypeStruct`` are shown as ``dtype[shape]`` with short dtype names
    (``f32``, ``bf16``, ``i8``, ``u8``, ``bool``, ``c64``, ``f8e4m3fn``, ``key<fry>``); tuples,
    lists and dicts as in Python; other values by their ``repr``.

    Args:
      tree: A pytree of ``jax.ShapeDtypeStruct``, arrays and Python values.
      max_width: The longest text returned; longer text is cut and ends in "…".

    Returns:
      The text.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> describe_specs(jax.ShapeDtypeStruct((1, 16, 512), jnp.float32))
      'f32[1,16,512]'
      >>> describe_specs((jax.ShapeDtypeStruct((2, 3), jnp.bfloat16), None, {"n": 3}))
      "(bf16[2,3], None, {'n': 3})"
      >>> describe_specs([jax.ShapeDtypeStruct((8,), jnp.int8)] * 20, max_width=24)
      '[i8[8], i8[8], i8[8], i…'
    """
    return _describe(lambda out: _render(tree, out), max_width)


def _split_inputs(inputs: Any) -> tuple[Any, Any] | None:
    """``(args, kwargs)`` of a call's inputs, if they have that form."""
    if type(inputs).__name__ == "ArgsAndKwargs":  # penzai's, without importing penzai here.
        return inputs.args, inputs.kwargs
    if (
        isinstance(inputs, tuple)
        and len(inputs) == 2
        and isinstance(inputs[0], tuple | list)
        and isinstance(inputs[1], Mapping)
    ):
        return inputs[0], inputs[1]
    return None


def describe_inputs(inputs: Any, max_width: int = MAX_CELL_WIDTH) -> str:
    """Like :func:`describe_specs`, but shows ``(args, kwargs)`` as an argument list.

    Args:
      inputs: A call's inputs: ``(args, kwargs)``, penzai's ``ArgsAndKwargs``, or any pytree
        (shown by :func:`describe_specs`).
      max_width: The longest text returned; longer text is cut and ends in "…".

    Returns:
      The text.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> x = jax.ShapeDtypeStruct((4, 3), jnp.float32)
      >>> describe_inputs(((x,), {"deterministic": True}))
      'f32[4,3], deterministic=True'
    """
    split = _split_inputs(inputs)
    if split is None:
        return describe_specs(inputs, max_width)
    args, kwargs = split

    def render(out: _Writer) -> None:
        _render_seq(args, out)
        if args and kwargs:
            out.write(", ")
        _render_items(kwargs.items(), out, "=", str)

    return _describe(render, max_width)


_BYTE_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def format_bytes(n: int) -> str:
    """Returns a byte count in binary units, with two decimals above 1 KiB.

    Args:
      n: A number of bytes.

    Returns:
      The text, e.g. ``"512 B"`` or ``"14.96 GiB"``.

    Examples:
      >>> format_bytes(512), format_bytes(1536), format_bytes(16_060_000_000)
      ('512 B', '1.50 KiB', '14.96 GiB')
    """
    if abs(n) < 1024:
        return f"{n} B"
    value = float(n)
    for unit in _BYTE_UNITS:
        value /= 1024
        if abs(value) < 1024 or unit == _BYTE_UNITS[-1]:
            break
    return f"{value:.2f} {unit}"


_COUNT_UNITS = ("", "K", "M", "B", "T")


def format_count(n: int) -> str:
    """Returns a count with three significant digits and a K/M/B/T suffix.

    Args:
      n: A count, e.g. of parameters.

    Returns:
      The text, e.g. ``"640"``, ``"1.2M"`` or ``"8.03B"``.

    Examples:
      >>> format_count(640), format_count(1_200_000), format_count(8_030_261_248)
      ('640', '1.2M', '8.03B')
    """
    value = float(n)
    for i, unit in enumerate(_COUNT_UNITS):
        if i == 0 and abs(n) < 1000:
            return str(n)
        if i:
            value /= 1000
        text = f"{value:.3g}"
        # Rounding can carry into the next unit (999_999 -> "1e+03K"): move on to it.
        if abs(float(text)) < 1000 or unit == _COUNT_UNITS[-1]:
            if "e" in text:
                text = f"{value:.0f}"
            return f"{text}{unit}"
    raise AssertionError("unreachable")


@dataclasses.dataclass
class Summary:
    """A table of module calls: ``print`` it, or read its rows.

    Each row counts only the parameters its module owns, so the totals count every parameter
    once.

    Attributes:
      rows: One :class:`CallRow` per call, in call order.
      title: A title printed above the table (none if empty).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> x = jax.ShapeDtypeStruct((4, 3), jnp.float32)
      >>> h = jax.ShapeDtypeStruct((4, 8), jnp.float32)
      >>> s = Summary(
      ...     [CallRow("layers_0", "Dense", "__call__", ((x,), {}), h, 32, 128)], title="MLP"
      ... )
      >>> print(s)
      MLP
      #  path      module  method    inputs    outputs   params  bytes  note
      -  --------  ------  --------  --------  --------  ------  -----  ----
      0  layers_0  Dense   __call__  f32[4,3]  f32[4,8]      32  128 B
         total                                               32  128 B
      >>> s.total_params, s.total_bytes
      (32, 128)
    """

    rows: list[CallRow]
    title: str = ""

    @property
    def total_params(self) -> int:
        """The number of parameters, summed over the rows."""
        return sum(row.param_count for row in self.rows)

    @property
    def total_bytes(self) -> int:
        """The bytes of the parameters, summed over the rows."""
        return sum(row.param_bytes for row in self.rows)

    def to_rows(self) -> list[dict[str, Any]]:
        """Returns the rows as dicts (e.g. for ``pandas.DataFrame``), specs as text.

        Returns:
          One dict per row with keys ``index``, ``path``, ``module_type``, ``method``,
          ``inputs``, ``outputs`` (texts as in the table), ``param_count``, ``param_bytes``
          and ``note``.

        Examples:
          >>> row = CallRow("enc", "Encoder", "__call__", ((1,), {}), None, 0, 0)
          >>> Summary([row]).to_rows()[0]["inputs"]
          '1'
        """
        return [
            {
                "index": i,
                "path": row.path,
                "module_type": row.module_type,
                "method": row.method,
                "inputs": describe_inputs(row.inputs),
                "outputs": describe_specs(row.outputs),
                "param_count": row.param_count,
                "param_bytes": row.param_bytes,
                "note": row.note,
            }
            for i, row in enumerate(self.rows)
        ]

    def _cells(self) -> list[tuple[str, ...]]:
        return [
            (
                str(i),
                row.path,
                row.module_type,
                row.method,
                describe_inputs(row.inputs),
                describe_specs(row.outputs),
                # A dash for "owns none" keeps the eye on the rows that do.
                format_count(row.param_count) if row.param_count else "-",
                format_bytes(row.param_bytes) if row.param_bytes else "-",
                row.note,
            )
            for i, row in enumerate(self.rows)
        ]

    def __str__(self) -> str:
        cells = self._cells()
        total = (
            "",
            "total",
            "",
            "",
            "",
            "",
            format_count(self.total_params),
            format_bytes(self.total_bytes),
            "",
        )
        widths = [
            max(len(name), *(len(row[j]) for row in (*cells, total)))
            for j, name in enumerate(_COLUMNS)
        ]

        def line(values: tuple[str, ...]) -> str:
            parts = (
                value.rjust(width) if name in _RIGHT else value.ljust(width)
                for name, value, width in zip(_COLUMNS, values, widths, strict=True)
            )
            return "  ".join(parts).rstrip()

        lines = [self.title] if self.title else []
        lines.append(line(_COLUMNS))
        lines.append(line(tuple("-" * w for w in widths)))
        lines.extend(line(row) for row in cells)
        lines.append(line(total))
        return "\n".join(lines)

    __repr__ = __str__
