"""Checkpoints: their metadata without their data, a report against a model, and reading a subset.

Both front ends (``flaxmock.load`` / ``flaxmock.check_checkpoint`` for linen, their
``flaxmock.nnx`` namesakes) describe a model as ``{path: spec}`` (paths ``/``-joined strings:
``params/layers_0/attn/q/kernel`` for linen, ``layers/0/attn/kernel`` for NNX) and use this
module to:

* open a checkpoint (:func:`open_checkpoint`): an Orbax directory (read with Orbax's metadata
  API and partial restore, imported lazily) or safetensors files (one file, a directory of them,
  or a sharded ``*.index.json``), read in-house: a safetensors file is an 8-byte little-endian
  header length, a JSON header of ``{name: {dtype, shape, data_offsets}}`` and the raw
  little-endian buffers, so the header is the metadata and a tensor is read at its offset (one
  ``readinto`` on one device, a ``numpy.memmap`` slice per shard on several): no extra
  dependency, and nothing but the requested bytes is read;
* compare the checkpoint's metadata with the model (:func:`compare`, giving a
  :class:`CheckpointReport`): missing, unexpected, shape- and dtype-mismatched entries, and a
  scanned-versus-unrolled layer layout (``blocks/...`` stacked over a leading axis against
  ``layers_0/...``, ``layers_1/...``) named as such;
* read the arrays of some entries only (:meth:`Checkpoint.read`), each straight into its final
  dtype and sharding.

``Checkpoint.read`` is the one place array data is read: tests instrument it (and the readers
below it) to assert what was requested.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from flaxmock._core import errors as _errors

#: ``{checkpoint name: model path}`` or a callable from the name to the path (None: ignore it).
KeyMap = Mapping[str, str] | Callable[[str], str | None] | None

#: safetensors dtype names (the format's specification) and numpy dtypes.
SAFETENSORS_DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "U8": np.uint8,
    "I8": np.int8,
    "U16": np.uint16,
    "I16": np.int16,
    "U32": np.uint32,
    "I32": np.int32,
    "U64": np.uint64,
    "I64": np.int64,
    "F16": np.float16,
    "BF16": jax.numpy.bfloat16,
    "F32": np.float32,
    "F64": np.float64,
    "F8_E4M3": jax.numpy.float8_e4m3fn,
    "F8_E5M2": jax.numpy.float8_e5m2,
}


@dataclasses.dataclass(frozen=True)
class Spec:
    """The shape and dtype of one checkpoint entry (from metadata only)."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __str__(self) -> str:
        return f"{self.dtype.name}{list(self.shape)}"


def spec_of(value: Any) -> Spec:
    return Spec(tuple(int(d) for d in value.shape), np.dtype(value.dtype))


class Checkpoint:
    """An opened checkpoint: its entries' metadata and a reader of some of their arrays."""

    #: What it is, for reports (``"Orbax checkpoint /ckpt"``).
    source: str

    def metadata(self) -> dict[str, Spec]:
        """``{checkpoint name: spec}`` of every array entry; reads no array data."""
        raise NotImplementedError

    def read(self, wanted: Mapping[str, tuple[Spec, Any]]) -> dict[str, jax.Array]:
        """The arrays of the ``wanted`` names, each with its ``(spec, sharding)``, and no other."""
        raise NotImplementedError


class OrbaxCheckpoint(Checkpoint):
    """An Orbax checkpoint directory of a (nested) variables dict; names are ``/``-joined."""

    def __init__(self, path: str) -> None:
        import orbax.checkpoint as ocp  # lazily: an optional integration

        self._ocp = ocp
        self.path = os.path.abspath(path)
        self.source = f"Orbax checkpoint {self.path}"
        self._checkpointer = ocp.PyTreeCheckpointer()
        self._meta: dict[str, Spec] | None = None

    def metadata(self) -> dict[str, Spec]:
        if self._meta is None:
            tree = self._checkpointer.metadata(self.path).item_metadata
            tree = getattr(tree, "tree", tree)
            flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_array_metadata)[0]
            self._meta = {
                "/".join(_key_str(k) for k in path): spec_of(leaf)
                for path, leaf in flat
                if _is_array_metadata(leaf)
            }
        return dict(self._meta)

    def read(self, wanted: Mapping[str, tuple[Spec, Any]]) -> dict[str, jax.Array]:
        ocp = self._ocp
        item: dict[str, Any] = {}
        restore_args: dict[str, Any] = {}
        for name, (spec, sharding) in wanted.items():
            parts = name.split("/")
            set_in(item, parts, jax.ShapeDtypeStruct(spec.shape, spec.dtype, sharding=sharding))
            set_in(restore_args, parts, ocp.ArrayRestoreArgs(dtype=spec.dtype, sharding=sharding))
        if not item:
            return {}
        restored = self._checkpointer.restore(
            self.path,
            args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True),
        )
        return {name: _get_in(restored, name.split("/")) for name in wanted}


class SafetensorsCheckpoint(Checkpoint):
    """safetensors files, read in-house: the header for metadata, a ``numpy.memmap`` per tensor."""

    def __init__(self, files: Sequence[str], source: str) -> None:
        self.files = [os.path.abspath(f) for f in files]
        self.source = source
        self._where: dict[str, tuple[str, int, Spec]] | None = None

    def _index(self) -> dict[str, tuple[str, int, Spec]]:
        """``{name: (file, absolute byte offset, spec)}``, from the headers only."""
        if self._where is None:
            where: dict[str, tuple[str, int, Spec]] = {}
            for file in self.files:
                for name, (offset, spec) in read_safetensors_header(file).items():
                    where[name] = (file, offset, spec)
            self._where = where
        return self._where

    def metadata(self) -> dict[str, Spec]:
        return {name: spec for name, (_, _, spec) in self._index().items()}

    def read(self, wanted: Mapping[str, tuple[Spec, Any]]) -> dict[str, jax.Array]:
        index = self._index()
        out = {}
        for name, (_, sharding) in wanted.items():
            file, offset, stored = index[name]
            out[name] = read_tensor(file, offset, stored, sharding)
        return out


def read_safetensors_header(file: str) -> dict[str, tuple[int, Spec]]:
    """``{name: (absolute byte offset, spec)}`` of a safetensors file, reading only its header."""
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise _bad_file(file, "it is shorter than the 8-byte header length")
        length = int.from_bytes(head, "little")
        size = os.fstat(f.fileno()).st_size
        if length > size - 8:
            raise _bad_file(file, f"its header length ({length} bytes) exceeds the file")
        try:
            header = json.loads(f.read(length))
        except ValueError as e:
            raise _bad_file(file, f"its header is not JSON ({e})") from None
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES.get(entry.get("dtype"))
        if dtype is None:
            raise _bad_file(
                file,
                f"tensor {name!r} has dtype {entry.get('dtype')!r}, not one of "
                f"{sorted(SAFETENSORS_DTYPES)}",
            )
        spec = Spec(tuple(int(d) for d in entry["shape"]), np.dtype(dtype))
        begin, end = entry["data_offsets"]
        if end - begin != int(np.prod(spec.shape, dtype=np.int64)) * spec.dtype.itemsize:
            raise _bad_file(file, f"tensor {name!r} ({spec}) has {end - begin} bytes of data")
        if 8 + length + end > size:
            raise _bad_file(file, f"tensor {name!r} ends past the end of the file")
        out[name] = (8 + length + begin, spec)
    return out


def read_tensor(file: str, offset: int, spec: Spec, sharding: Any) -> jax.Array:
    """One tensor of a safetensors file, placed with ``sharding``; reads only its bytes.

    On one device, its bytes are read into one host buffer (exactly those bytes: no read-ahead
    of a memory map), then copied to the device: the tensor is held twice only while it is
    copied. Over several devices, each addressable shard is read from a ``numpy.memmap`` of
    the tensor alone (``jax.make_array_from_callback``).
    """
    count = int(np.prod(spec.shape, dtype=np.int64))
    if count == 0:
        return jax.device_put(np.zeros(spec.shape, spec.dtype), sharding)
    if len(sharding.device_set) == 1:
        host = np.empty(spec.shape, spec.dtype)
        with open(file, "rb") as f:
            f.seek(offset)
            got = f.readinto(host.reshape(-1).view(np.uint8).data)
        if got != host.nbytes:
            raise _bad_file(file, f"a tensor at byte {offset} ends past the end of the file")
        array = jax.device_put(host, sharding)
        array.block_until_ready()
        return array
    view = np.memmap(file, dtype=spec.dtype, mode="r", offset=offset, shape=spec.shape)
    return jax.make_array_from_callback(
        spec.shape, sharding, lambda idx: np.ascontiguousarray(view[idx])
    )


def _bad_file(file: str, why: str) -> _errors.LoadCheckpointError:
    return _errors.LoadCheckpointError(
        f"{file} is not a valid safetensors file: {why}. Fix: give the path of a file written "
        "by safetensors (save_file), or the directory or *.index.json of a sharded checkpoint."
    )


def open_checkpoint(path: Any) -> Checkpoint:
    """The checkpoint at ``path``: a ``.safetensors`` file, a sharded safetensors
    ``*.index.json``, a directory of safetensors files, or an Orbax checkpoint directory."""
    path = os.fspath(path)
    if os.path.isfile(path):
        if path.endswith(".json"):
            with open(path) as f:
                weight_map = json.load(f).get("weight_map", {})
            folder = os.path.dirname(path)
            files = sorted({os.path.join(folder, f) for f in weight_map.values()})
            return SafetensorsCheckpoint(files, f"sharded safetensors {path} ({len(files)} files)")
        return SafetensorsCheckpoint([path], f"safetensors {path}")
    if os.path.isdir(path):
        entries = sorted(os.listdir(path))
        indexes = [e for e in entries if e.endswith(".safetensors.index.json")]
        if len(indexes) == 1:
            return open_checkpoint(os.path.join(path, indexes[0]))
        tensors = [os.path.join(path, e) for e in entries if e.endswith(".safetensors")]
        if tensors:
            return SafetensorsCheckpoint(tensors, f"safetensors in {path} ({len(tensors)} files)")
        if "_METADATA" in entries or "_CHECKPOINT_METADATA" in entries or "checkpoint" in entries:
            return OrbaxCheckpoint(path)
        raise _errors.LoadCheckpointError(
            f"{path} holds no checkpoint flaxmock can read: no *.safetensors file, no "
            "*.safetensors.index.json and no Orbax metadata (_METADATA). Fix: give the directory "
            "Orbax saved (the step directory, not its parent), or safetensors files."
        )
    raise _errors.LoadCheckpointError(
        f"{path} does not exist. Fix: give an Orbax checkpoint directory, a .safetensors file, "
        "a directory of them, or a sharded checkpoint's *.safetensors.index.json."
    )


def _is_array_metadata(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, Mapping)


def _key_str(key: Any) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def set_in(tree: dict, parts: Sequence[str], value: Any) -> None:
    for part in parts[:-1]:
        tree = tree.setdefault(part, {})
    tree[parts[-1]] = value


def _get_in(tree: Any, parts: Sequence[str]) -> Any:
    for part in parts:
        tree = tree[part]
    return tree


def map_names(
    names: Sequence[str], key_map: KeyMap, default: Callable[[str], str | None]
) -> tuple[dict[str, str], list[str]]:
    """``({model path: checkpoint name}, [names mapped to None])`` under ``key_map``.

    A dict maps the names it holds and leaves the others to ``default``; a callable maps every
    name (None: the entry is ignored, such as a buffer the model does not hold).
    """
    mapped: dict[str, str] = {}
    ignored = []
    for name in names:
        if callable(key_map):
            path = key_map(name)
        elif key_map is not None and name in key_map:
            path = key_map[name]
        else:
            path = default(name)
        if path is None:
            ignored.append(name)
            continue
        path = "/".join(path) if isinstance(path, tuple) else str(path)
        if path in mapped:
            raise _errors.LoadCheckpointError(
                f"key_map maps two checkpoint entries, {mapped[path]!r} and {name!r}, to the same "
                f"model path {path!r}. Fix: map each entry to its own path (or to None to skip it)."
            )
        mapped[path] = name
    return mapped, ignored


_INDEXED = re.compile(r"^(.*?)_?(\d+)$")


@dataclasses.dataclass(frozen=True)
class Layout:
    """A group of layers the model and the checkpoint lay out differently (scanned/unrolled)."""

    stacked: str  # the stacked subtree (``params/blocks``), on the side that stacks
    unrolled: str  # the unrolled ones, as a pattern (``params/layers_{0..31}``)
    count: int
    checkpoint_stacked: bool

    def __str__(self) -> str:
        if self.checkpoint_stacked:
            return (
                f"the checkpoint stacks {self.count} layers along a leading axis under "
                f"{self.stacked}/... (scanned, nn.scan) where the model has them unrolled as "
                f"{self.unrolled}/...: build the model with scanned layers (scan_layers=True "
                "in MaxText-style configs), or unstack the checkpoint"
            )
        return (
            f"the model stacks {self.count} layers along a leading axis under {self.stacked}/... "
            f"(scanned, nn.scan) where the checkpoint has them unrolled as {self.unrolled}/...: "
            "build the model with unrolled layers (scan_layers=False), or stack the checkpoint"
        )


@dataclasses.dataclass(frozen=True)
class CheckpointReport:
    """What a checkpoint's metadata says against a model's variables; printable.

    Attributes:
      model: What the model is (``"Llama.__call__"``).
      source: What the checkpoint is (``"Orbax checkpoint /tmp/ckpt"``).
      missing: ``(path, expected)`` of the model's entries the checkpoint lacks.
      unexpected: ``(path, found)`` of the checkpoint's entries the model does not have (paths
        after ``key_map``).
      shape_mismatched: ``(path, expected, found)`` of entries of another shape.
      dtype_mismatched: ``(path, expected, found)`` of entries of the same shape, another dtype.
      layouts: Groups of layers stacked on one side and unrolled on the other (each with
        ``stacked``, ``unrolled``, ``count`` and ``checkpoint_stacked``; ``str`` says it).
      ignored: Checkpoint entries ``key_map`` mapped to None.
      needed: The model paths a ``load`` reads (the un-mocked ones); ``None`` for a whole-model
        check.
    """

    model: str
    source: str
    missing: tuple[tuple[str, str], ...] = ()
    unexpected: tuple[tuple[str, str], ...] = ()
    shape_mismatched: tuple[tuple[str, str, str], ...] = ()
    dtype_mismatched: tuple[tuple[str, str, str], ...] = ()
    layouts: tuple[Any, ...] = ()  # Layout
    ignored: tuple[str, ...] = ()
    matched: int = 0

    @property
    def ok(self) -> bool:
        """Whether the checkpoint holds exactly the model's entries, of its shapes and dtypes."""
        return not (
            self.missing or self.unexpected or self.shape_mismatched or self.dtype_mismatched
        )

    def problem_lines(self) -> list[str]:
        """One line per problem: layouts first, then each entry."""
        lines = [f"  layout: {layout}" for layout in self.layouts]
        lines += [f"  missing: {p} (expected {e})" for p, e in self.missing]
        lines += [f"  unexpected: {p} ({f})" for p, f in self.unexpected]
        lines += [
            f"  wrong shape: {p}: expected {e}, found {f}" for p, e, f in self.shape_mismatched
        ]
        lines += [
            f"  wrong dtype: {p}: expected {e}, found {f}" for p, e, f in self.dtype_mismatched
        ]
        return lines

    def text(self, limit: int | None = None) -> str:
        """The report; with ``limit``, at most that many problem lines then "and N more"."""
        head = f"{self.source} against {self.model}: "
        if self.ok:
            head += f"matches ({self.matched} entries"
            head += f", {len(self.ignored)} ignored by key_map)" if self.ignored else ")"
            return head
        counts = [
            (len(self.missing), "missing"),
            (len(self.unexpected), "unexpected"),
            (len(self.shape_mismatched), "wrong shape"),
            (len(self.dtype_mismatched), "wrong dtype"),
        ]
        head += ", ".join(f"{n} {what}" for n, what in counts if n)
        head += f"; {self.matched} entries match"
        lines = self.problem_lines()
        body = (
            "\n".join(lines)
            if limit is None
            else _errors.cut_list(lines, limit, sep="\n", indent="  ")
        )
        return f"{head}\n{body}"

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        return f"CheckpointReport({self.text(limit=_errors.BIND_PROBLEMS_SHOWN)!r})"


def compare(
    model: str,
    expected: Mapping[str, Spec],
    checkpoint: Checkpoint,
    key_map: KeyMap,
    default: Callable[[str], str | None],
) -> tuple[CheckpointReport, dict[str, str]]:
    """The report of ``checkpoint``'s metadata against ``expected`` (``{model path: spec}``),
    and ``{model path: checkpoint name}``. Reads no array data."""
    found_by_name = checkpoint.metadata()
    names, ignored = map_names(sorted(found_by_name), key_map, default)
    found = {path: found_by_name[name] for path, name in names.items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes, dtypes = [], []
    for path in sorted(set(expected) & set(found)):
        want, got = expected[path], found[path]
        if want.shape != got.shape:
            shapes.append((path, str(want), str(got)))
        elif want.dtype != got.dtype:
            dtypes.append((path, str(want), str(got)))
    layouts = _layouts(
        {p: expected[p] for p in missing}, {p: found[p] for p in unexpected}
    ) + _layouts({p: found[p] for p in unexpected}, {p: expected[p] for p in missing}, flip=True)
    report = CheckpointReport(
        model=model,
        source=checkpoint.source,
        missing=tuple((p, str(expected[p])) for p in missing),
        unexpected=tuple((p, str(found[p])) for p in unexpected),
        shape_mismatched=tuple(shapes),
        dtype_mismatched=tuple(dtypes),
        layouts=tuple(layouts),
        ignored=tuple(ignored),
        matched=len(set(expected) & set(found)) - len(shapes) - len(dtypes),
    )
    return report, names


def _layouts(
    unrolled_side: Mapping[str, Spec], stacked_side: Mapping[str, Spec], *, flip: bool = False
) -> list[Layout]:
    """Groups ``prefix/<name>_<i>/rest`` of ``unrolled_side`` that ``stacked_side`` holds as
    ``prefix/<other>/rest`` with a leading axis of the group's size, and the same rest shapes.

    ``flip``: ``unrolled_side`` is the checkpoint's (the model is the stacked one).
    """
    groups: dict[tuple[tuple[str, ...], str, str], dict[int, dict[tuple[str, ...], Spec]]] = {}
    for path, spec in unrolled_side.items():
        parts = tuple(path.split("/"))
        for j, part in enumerate(parts):
            m = _INDEXED.match(part)
            if m and m.group(1):  # layers_3 (linen)
                key = (parts[:j], m.group(1), "_")
            elif m and j > 0:  # layers/3 (NNX lists)
                key = (parts[: j - 1], parts[j - 1], "/")
            else:
                continue
            groups.setdefault(key, {}).setdefault(int(m.group(2)), {})[parts[j + 1 :]] = spec
    out = []
    for (prefix, base, sep), by_index in groups.items():
        count = len(by_index)
        if sorted(by_index) != list(range(count)) or count < 1:
            continue
        rests = by_index[0]
        if any(r != rests for r in by_index.values()):
            continue
        # A stacked subtree: prefix/<name>/rest, each entry with a leading axis of ``count``.
        candidates: dict[str, dict[tuple[str, ...], Spec]] = {}
        for path, spec in stacked_side.items():
            parts = tuple(path.split("/"))
            if len(parts) > len(prefix) and parts[: len(prefix)] == prefix:
                candidates.setdefault(parts[len(prefix)], {})[parts[len(prefix) + 1 :]] = spec
        for name, entries in sorted(candidates.items()):
            if set(entries) != set(rests):
                continue
            if all(
                e.shape == (count,) + rests[r].shape and e.dtype == rests[r].dtype
                for r, e in entries.items()
            ):
                out.append(
                    Layout(
                        stacked="/".join(prefix + (name,)),
                        unrolled="/".join(prefix + (f"{base}{sep}{{0..{count - 1}}}",)),
                        count=count,
                        checkpoint_stacked=not flip,
                    )
                )
    return out


def shared_problems(report: CheckpointReport, needed: Sequence[str]) -> bool:
    """Whether a problem of ``report`` concerns a ``needed`` path (what a load reads)."""
    wanted = set(needed)
    return any(
        p in wanted
        for p, *_ in (*report.missing, *report.shape_mismatched, *report.dtype_mismatched)
    )


def default_names(collections: Sequence[str]) -> Callable[[str], str | None]:
    """The default ``key_map``: ``a.b.c`` or ``a/b/c`` as the path ``a/b/c``, put under
    ``collections[0]`` (``params``) when its first part is none of ``collections``."""

    def path_of(name: str) -> str:
        parts = name.split("/") if "/" in name else name.split(".")
        if collections and parts[0] not in collections:
            parts = [collections[0], *parts]
        return "/".join(parts)

    return path_of


def check(
    model: str,
    expected: Mapping[str, Spec],
    path: Any,
    key_map: KeyMap,
    default: Callable[[str], str | None],
) -> CheckpointReport:
    """The report of the checkpoint at ``path`` against ``expected``; no array data read."""
    return compare(model, expected, open_checkpoint(path), key_map, default)[0]


def load(
    model: str,
    expected: Mapping[str, Spec],
    needed: Mapping[str, Any],
    path: Any,
    key_map: KeyMap,
    default: Callable[[str], str | None],
    *,
    strict: bool,
    call: str,
) -> dict[str, jax.Array]:
    """``{model path: array}`` of the ``needed`` paths (``{path: sharding}``), read from the
    checkpoint at ``path`` after checking its metadata against ``expected`` (the whole model).

    Raises ``LoadCheckpointError`` with the report when it does not match (``strict``), or
    when a problem concerns a needed entry; nothing is read then.
    """
    checkpoint = open_checkpoint(path)
    report, names = compare(model, expected, checkpoint, key_map, default)
    if (strict and not report.ok) or shared_problems(report, list(needed)):
        fixes = [
            "build the model as the checkpoint was saved (sizes, dtypes, scanned or unrolled "
            "layers), or give the checkpoint of this model",
            "map the checkpoint's names to the model's paths with key_map= (a dict or a "
            "callable; None skips an entry)",
            "mock the layers whose entries are missing or differ (only un-mocked layers' "
            "entries are read)",
        ]
        if strict and not shared_problems(report, list(needed)):
            fixes.append(
                "pass strict=False: no problem concerns an entry the un-mocked layers need"
            )
        raise _errors.LoadCheckpointError(
            f"{call}: the checkpoint does not fit {model}; nothing was loaded.\n"
            + report.text(limit=_errors.BIND_PROBLEMS_SHOWN)
            + "\nFix: "
            + " ".join(f"{i}) {fix};" for i, fix in enumerate(fixes, 1))[:-1]
            + ".",
            report=report,
        )
    wanted = {names[p]: (expected[p], sharding) for p, sharding in needed.items()}
    arrays = checkpoint.read(wanted)
    return {p: arrays[names[p]] for p in needed}
