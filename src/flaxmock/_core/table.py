"""The per-call summary table shared by the Linen and the NNX ``summary``.

A :class:`Summary` is a list of :class:`CallRow` (one per module call, in call order, a caller
before its callees) that prints as an aligned plain-text table, converts to a dict or JSON
(:meth:`Summary.to_dict`, :meth:`Summary.to_json`) and renders as HTML in notebooks
(``flaxmock._core.html``). The helpers :func:`describe_specs`, :func:`format_bytes`,
:func:`format_count` and :func:`format_flops` render its cells compactly (``f32[1,16,512]``,
``14.96 GiB``, ``8.03B``, ``292T``) and are reused in reprs and error messages.

Costs (FLOPs, bytes per device) are optional columns, filled by the front ends from
``flaxmock._core.costs``; :func:`roll_up` adds each row's subtree figures and
:meth:`Summary.collapse` folds the rows below a depth into their callers, both from the rows'
depths alone.

Rendering only reads what the rows hold (specs, counts): it runs no JAX computation and is linear
in the number of rows, and each spec cell stops rendering as soon as it is too long to show.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

#: Longest text of an ``inputs`` or ``outputs`` cell; longer ones end in "…".
MAX_CELL_WIDTH = 60

_ELLIPSIS = "…"

_COLUMNS = ("#", "path", "module", "method", "inputs", "outputs", "params", "bytes", "note")
_DEVICE_COLUMNS = ("per device",)
_COST_COLUMNS = ("flops", "subtree", "vjp", "out bytes")
# Right-aligned columns: the numbers.
_RIGHT = frozenset({"#", "params", "bytes", "per device", "flops", "subtree", "vjp", "out bytes"})


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
      param_bytes: The bytes of the variables the call's module owns: its parameters and, in
        linen summaries, its state (``batch_stats``, noted ``incl. ... state``), which
        ``materialize`` allocates too.
      note: Free text, e.g. ``"mocked"`` or ``"scan x80"``.
      depth: How deep the call is in the call tree (the root's call is 0, its callees 1).
      mocked: The call is replaced by a mock: the model's code does not run there, so it has
        no cost and adds nothing to the totals.
      flops: Forward FLOPs of the call's own work (not its callees'), summed over every time
        it runs in one call of the root (a body of ``scan`` over 80 layers counts 80 times, a
        ``vmap``ped one once per lane); None when not computed, or unknown (see ``note``).
      vjp_flops: Backward-pass FLOPs of the same work (what ``jax.vjp`` adds to the forward),
        with the forward recomputed under ``remat`` included; None likewise.
      subtree_flops: ``flops`` of the call and every call below it.
      subtree_vjp_flops: ``vjp_flops`` of the call and every call below it.
      bytes_accessed: XLA's estimate of the bytes the call's own work reads and writes
        (unfused HLO), summed like ``flops``; None likewise.
      device_param_bytes: With a mesh, the bytes of this call's own parameters that each
        device holds (every device holds the same); else None.

    The property ``out_bytes`` is the size of one call's outputs, from ``outputs``.
    """

    path: str
    module_type: str
    method: str
    inputs: Any
    outputs: Any
    param_count: int
    param_bytes: int
    note: str = ""
    depth: int = 0
    mocked: bool = False
    flops: int | None = None
    vjp_flops: int | None = None
    subtree_flops: int | None = None
    subtree_vjp_flops: int | None = None
    bytes_accessed: int | None = None
    device_param_bytes: int | None = None

    @property
    def out_bytes(self) -> int:
        """The bytes of one call's outputs (its activations), from the ``outputs`` specs."""
        return spec_bytes(self.outputs)


def make_row(**fields: Any) -> CallRow:
    """A :class:`CallRow` built without the dataclass ``__init__``, for front ends' loops.

    A frozen dataclass sets each of its 16 fields through ``object.__setattr__``; a summary of
    a 70B model builds about a thousand rows, and the default summary must stay as fast as it
    was with eight fields. Fields not given keep their class defaults (read through the class,
    as for any dataclass field with a default). The fields are not checked: front ends give
    the right ones.
    """
    row = object.__new__(CallRow)
    row.__dict__.update(fields)
    return row


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
            # A leaf: a Python value, by its repr when that fits on one line, else by its type
            # (a cell is one line).
            text = repr(x)
            out.write(text if "\n" not in text else type(x).__name__)
        else:
            # Another registered pytree node (an nnx.Rngs, a cache module): its type and
            # children, leaving out bookkeeping leaves whose repr spans lines (NNX's state).
            out.write(f"{type(x).__name__}(")
            _render_seq([c for c in children if not _is_bookkeeping(c)], out)
            out.write(")")


def _is_bookkeeping(x: Any) -> bool:
    """A pytree leaf that is not an array and whose repr spans lines."""
    if _is_array_like(x) or not jax.tree_util.treedef_is_leaf(jax.tree.structure(x)):
        return False
    return "\n" in repr(x)


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
    return _format_thousands(n, _COUNT_UNITS)


def _format_thousands(n: int, units: tuple[str, ...]) -> str:
    """``n`` with three significant digits and the suffix of its power of 1000 in ``units``."""
    value = float(n)
    for i, unit in enumerate(units):
        if i == 0 and abs(n) < 1000:
            return str(n)
        if i:
            value /= 1000
        text = f"{value:.3g}"
        # Rounding can carry into the next unit (999_999 -> "1e+03K"): move on to it.
        if abs(float(text)) < 1000 or unit == units[-1]:
            if "e" in text:
                text = f"{value:.0f}"
            return f"{text}{unit}"
    raise AssertionError("unreachable")


_FLOP_UNITS = ("", "K", "M", "G", "T", "P", "E")


def format_flops(n: int) -> str:
    """Returns a FLOP count with three significant digits and an SI suffix (G, T, P).

    Args:
      n: A number of floating-point operations.

    Returns:
      The text, e.g. ``"512"``, ``"962G"`` or ``"4.72T"``.

    Examples:
      >>> format_flops(512), format_flops(962_072_674_304), format_flops(4_720_000_000_000)
      ('512', '962G', '4.72T')
    """
    return _format_thousands(n, _FLOP_UNITS)


def spec_bytes(tree: Any) -> int:
    """The bytes of the array leaves (arrays or ``jax.ShapeDtypeStruct``) of a pytree.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> spec_bytes((jax.ShapeDtypeStruct((2, 8), jnp.bfloat16), None, 3))
      32
    """
    total = 0
    for leaf in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct)):
        if not _is_array_like(leaf):
            continue
        dtype = leaf.dtype
        if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
            itemsize = 4 * math.prod(dtype._impl.key_shape)
        else:
            itemsize = np.dtype(dtype).itemsize
        total += math.prod(np.shape(leaf)) * itemsize
    return total


_ROLLED = ("flops", "vjp_flops", "bytes_accessed")


def _sum_known(values: list[int | None]) -> int | None:
    """The sum, or None if any value is unknown."""
    if any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None)


def _children(rows: list[CallRow]) -> list[list[int]]:
    """Each row's callees (rows one level deeper, up to the next row as shallow as it)."""
    children: list[list[int]] = [[] for _ in rows]
    stack: list[int] = []
    for i, row in enumerate(rows):
        while stack and rows[stack[-1]].depth >= row.depth:
            stack.pop()
        if stack:
            children[stack[-1]].append(i)
        stack.append(i)
    return children


def roll_up(rows: list[CallRow]) -> list[CallRow]:
    """Returns the rows with ``subtree_flops`` and ``subtree_vjp_flops`` filled in.

    A row's subtree figure is its own figure plus its callees' subtree figures, found from the
    rows' depths (rows are in call order, a caller before its callees). Mocked rows add
    nothing; an unknown figure (None on a row that is not mocked) makes every figure above it
    unknown. Rows whose own figure was not computed keep None.

    Args:
      rows: The rows, in call order.

    Returns:
      New rows.

    Examples:
      >>> rows = [CallRow("<root>", "M", "__call__", None, None, 0, 0, flops=10),
      ...         CallRow("a", "D", "__call__", None, None, 0, 0, depth=1, flops=5)]
      >>> [r.subtree_flops for r in roll_up(rows)]
      [15, 5]
    """
    children = _children(rows)
    subtree: dict[str, list[int | None]] = {"flops": [None] * len(rows), "vjp_flops": []}
    subtree["vjp_flops"] = [None] * len(rows)
    for i in reversed(range(len(rows))):
        row = rows[i]
        for name in ("flops", "vjp_flops"):
            own = getattr(row, name)
            if row.mocked or own is None:
                continue
            below = []
            for c in children[i]:
                if rows[c].mocked:
                    continue
                below.append(subtree[name][c])
            total = _sum_known([own, *below])
            subtree[name][i] = total
    return [
        dataclasses.replace(
            row, subtree_flops=subtree["flops"][i], subtree_vjp_flops=subtree["vjp_flops"][i]
        )
        for i, row in enumerate(rows)
    ]


def finish(
    rows: list[CallRow],
    *,
    title: str = "",
    flops: bool,
    vjp_flops: bool,
    device_bytes: bool,
    depth: int | None,
) -> Summary:
    """The table of a summary's rows: subtree figures added, rows below ``depth`` folded.

    Both front ends end their ``summary`` with it, so that the optional figures are named,
    rolled up and folded one way.
    """
    asked = {"flops": flops, "vjp_flops": vjp_flops, "device_param_bytes": device_bytes}
    if flops or vjp_flops:
        rows = roll_up(rows)
    computed = frozenset(name for name, on in asked.items() if on)
    table = Summary(rows, title=title, computed=computed)
    return table if depth is None else table.collapse(depth)


def _total(summary: Summary, name: str) -> int | None:
    """The sum of a figure over the rows that are not mocked; None if not computed or unknown."""
    if name not in summary.figures:
        return None
    return _sum_known([getattr(row, name) for row in summary.rows if not row.mocked])


@dataclasses.dataclass
class Summary:
    """A table of module calls: ``print`` it, or read its rows.

    Each row counts only the parameters its module owns, so the totals count every parameter
    once.

    Attributes:
      rows: One :class:`CallRow` per call, in call order.
      title: A title printed above the table (none if empty).
      computed: The optional figures computed (``"flops"``, ``"vjp_flops"``,
        ``"device_param_bytes"``): their columns are shown and their totals summed. None:
        those that some row holds.

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
    computed: frozenset[str] | None = None

    @property
    def total_params(self) -> int:
        """The number of parameters, summed over the rows."""
        return sum(row.param_count for row in self.rows)

    @property
    def total_bytes(self) -> int:
        """The bytes of the rows' variables (``param_bytes``), summed."""
        return sum(row.param_bytes for row in self.rows)

    @property
    def total_flops(self) -> int | None:
        """Forward FLOPs of one call of the root, the rows' ``flops`` summed (mocks excluded).

        None when FLOPs were not computed, or when a row's are unknown.
        """
        return _total(self, "flops")

    @property
    def total_vjp_flops(self) -> int | None:
        """Backward-pass FLOPs, summed like :attr:`total_flops`; None likewise."""
        return _total(self, "vjp_flops")

    @property
    def max_device_param_bytes(self) -> int | None:
        """With a mesh, the bytes of parameters on the fullest device (all hold the same)."""
        return _total(self, "device_param_bytes")

    def collapse(self, depth: int) -> Summary:
        """Returns the table with the rows deeper than ``depth`` folded into their callers.

        A kept row's own figures (parameters, bytes, FLOPs) then include those of the calls
        folded into it, so the totals do not change; subtree figures stay as they were.

        Args:
          depth: The deepest row kept (0: the root's call alone).

        Returns:
          A new :class:`Summary`.

        Raises:
          InvalidArgumentError: ``depth`` is not a non-negative int.

        Examples:
          >>> rows = [CallRow("<root>", "M", "__call__", None, None, 0, 0, flops=10),
          ...         CallRow("a", "D", "__call__", None, None, 8, 32, depth=1, flops=5)]
          >>> top = Summary(rows).collapse(0)
          >>> top.rows[0].param_count, top.rows[0].flops, top.rows[0].note
          (8, 15, '1 call below')
        """
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            from flaxmock._core import errors

            raise errors.InvalidArgumentError(
                f"depth= expects a non-negative int (0 keeps the root's row alone), got {depth!r}."
            )
        rows = self.rows
        children = _children(rows)
        kept: list[CallRow] = []
        for i, row in enumerate(rows):
            if row.depth > depth:
                continue
            if row.depth < depth:
                kept.append(row)
                continue
            below: list[int] = []
            stack = list(children[i])
            while stack:
                c = stack.pop()
                below.append(c)
                stack.extend(children[c])
            if not below:
                kept.append(row)
                continue
            extra = [rows[c] for c in below]
            changes: dict[str, Any] = {
                "param_count": row.param_count + sum(r.param_count for r in extra),
                "param_bytes": row.param_bytes + sum(r.param_bytes for r in extra),
            }
            for name in (*_ROLLED, "device_param_bytes"):
                own = getattr(row, name)
                if own is None:
                    continue
                changes[name] = _sum_known(
                    [own, *(getattr(r, name) for r in extra if not r.mocked)]
                )
            n = len(below)
            folded = f"{n} call{'s' if n > 1 else ''} below"
            changes["note"] = f"{row.note}, {folded}" if row.note else folded
            kept.append(dataclasses.replace(row, **changes))
        return Summary(kept, title=self.title, computed=self.computed)

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

    def to_dict(self) -> dict[str, Any]:
        """Returns the whole table as plain Python values (for ``json``, files, other tools).

        Returns:
          ``{"title", "rows", "total_params", "total_bytes", "total_flops",
          "total_vjp_flops", "max_device_param_bytes"}``; each row is a dict of every
          :class:`CallRow` field (``inputs`` and ``outputs`` as text, as in the table) plus
          ``index`` and ``out_bytes``. Figures not computed are None.

        Examples:
          >>> row = CallRow("<root>", "Dense", "__call__", None, None, 32, 128, flops=96)
          >>> d = Summary([row], title="Dense").to_dict()
          >>> d["total_flops"], d["rows"][0]["flops"], d["rows"][0]["depth"]
          (96, 96, 0)
        """
        rows = []
        for i, row in enumerate(self.rows):
            fields = {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}
            fields["inputs"] = describe_inputs(row.inputs)
            fields["outputs"] = describe_specs(row.outputs)
            rows.append({"index": i, **fields, "out_bytes": row.out_bytes})
        return {
            "title": self.title,
            "rows": rows,
            "total_params": self.total_params,
            "total_bytes": self.total_bytes,
            "total_flops": self.total_flops,
            "total_vjp_flops": self.total_vjp_flops,
            "max_device_param_bytes": self.max_device_param_bytes,
        }

    def to_json(self, indent: int | None = None) -> str:
        """Returns :meth:`to_dict` as JSON text.

        Args:
          indent: As for ``json.dumps``.

        Returns:
          The text.

        Examples:
          >>> Summary([], title="empty").to_json()[:34]
          '{"title": "empty", "rows": [], "to'
        """
        return json.dumps(self.to_dict(), indent=indent)

    def _repr_html_(self) -> str:
        from flaxmock._core import html

        return html.render(self)

    def _columns(self) -> tuple[str, ...]:
        figures = self.figures
        columns: tuple[str, ...] = _COLUMNS[:-1]
        if "device_param_bytes" in figures:
            columns += _DEVICE_COLUMNS
        if "flops" in figures:
            columns += ("flops", "subtree")
        if "vjp_flops" in figures:
            columns += ("vjp",)
        if figures & {"flops", "vjp_flops"}:
            columns += ("out bytes",)
        return columns + _COLUMNS[-1:]

    @property
    def figures(self) -> frozenset[str]:
        """The optional figures computed (``computed`` if given, else those some row holds)."""
        if self.computed is not None:
            return self.computed
        return frozenset(
            name
            for name in ("flops", "vjp_flops", "device_param_bytes")
            if any(getattr(row, name) is not None for row in self.rows)
        )

    def _cells(self, columns: tuple[str, ...]) -> list[tuple[str, ...]]:
        # The optional columns sit between "bytes" and "note"; only the shown ones are
        # rendered (a spec or a byte count is not free).
        extra = [_CELLS[c] for c in columns[len(_COLUMNS) - 1 : -1]]
        cells: list[tuple[str, ...]] = [
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
        if not extra:
            return cells
        return [
            (*c[:-1], *(cell(row) for cell in extra), c[-1])
            for c, row in zip(cells, self.rows, strict=True)
        ]

    def _total_cells(self, columns: tuple[str, ...]) -> tuple[str, ...]:
        def opt(value: int | None, fmt: Any) -> str:
            return "?" if value is None else fmt(value)

        cell = {
            "path": "total",
            "params": format_count(self.total_params),
            "bytes": format_bytes(self.total_bytes),
            "per device": opt(self.max_device_param_bytes, format_bytes),
            "flops": opt(self.total_flops, format_flops),
            "vjp": opt(self.total_vjp_flops, format_flops),
        }
        return tuple(cell.get(c, "") for c in columns)

    def __str__(self) -> str:
        columns = self._columns()
        cells = self._cells(columns)
        total = self._total_cells(columns)
        widths = [
            max(len(name), *(len(row[j]) for row in (*cells, total)))
            for j, name in enumerate(columns)
        ]

        def line(values: tuple[str, ...]) -> str:
            parts = (
                value.rjust(width) if name in _RIGHT else value.ljust(width)
                for name, value, width in zip(columns, values, widths, strict=True)
            )
            return "  ".join(parts).rstrip()

        lines = [self.title] if self.title else []
        lines.append(line(columns))
        lines.append(line(tuple("-" * w for w in widths)))
        lines.extend(line(row) for row in cells)
        lines.append(line(total))
        return "\n".join(lines)

    __repr__ = __str__


_CELLS: dict[str, Any] = {
    "per device": lambda row: _cost_cell(
        row.device_param_bytes, format_bytes, row.mocked or not row.param_count
    ),
    "flops": lambda row: _cost_cell(row.flops, format_flops, row.mocked),
    "subtree": lambda row: _cost_cell(row.subtree_flops, format_flops, row.mocked),
    "vjp": lambda row: _cost_cell(row.vjp_flops, format_flops, row.mocked),
    "out bytes": lambda row: format_bytes(row.out_bytes),
}


def _cost_cell(value: int | None, fmt: Any, mocked: bool) -> str:
    """A figure's text: ``-`` for a mocked call, ``?`` for an unknown one."""
    if mocked:
        return "-"
    return "?" if value is None else fmt(value)
