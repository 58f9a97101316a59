"""The spy machinery both front doors share: one recorded call, and the call-history vocabulary.

A spy runs the real call and records its arguments and output. One call is recorded as a
:class:`SpyRecord`: a pytree whose children are the array leaves of ``(args, kwargs, output)``
and whose static data is the rest (the tree structure, the non-array leaves, the array ranks
at record time, the lifted transforms around the call). A record made inside the body of a
scan or a vmap leaves it through the transform as a Flax collection does (its arrays stacked
along leading axes); :func:`calls_of` splits the leading scan axes into one call per step.

:class:`SpyRecords` gives spies the call-history vocabulary of mocks
(:class:`flaxmock._core.mockcore.CallRecords`: ``call_count``, ``call_args_list``,
``assert_called_with``, ``reset_mock``...), with arrays compared by value.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from flaxmock._core import mockcore as _mockcore
from flaxmock._core import specs as _specs


@jax.tree_util.register_pytree_node_class
class SpyRecord:
    """One recorded call: the array leaves of ``(args, kwargs, output)`` and its static rest.

    Attributes:
      arrays: The array leaves, in ``jax.tree`` order (with leading step/lane axes when the
        record left a scan or vmap body).
      treedef: The structure of ``(args, kwargs, output)``.
      statics: The leaves, with None where an array goes.
      ndims: The rank of each array when it was recorded.
      axes: The lifted transforms around the call that stack records, outermost first
        (``("scan", "vmap")``): each added one leading axis.
      method: The called method, when the spy answers several (NNX), else None.
    """

    def __init__(
        self,
        arrays: tuple[Any, ...],
        treedef: Any,
        statics: tuple[Any, ...],
        ndims: tuple[int, ...],
        axes: tuple[str, ...],
        method: str | None = None,
    ):
        self.arrays = tuple(arrays)
        self.treedef = treedef
        self.statics = statics
        self.ndims = ndims
        self.axes = axes
        self.method = method

    def tree_flatten(self) -> tuple[tuple[Any, ...], Any]:
        return self.arrays, (self.treedef, self.statics, self.ndims, self.axes, self.method)

    @classmethod
    def tree_unflatten(cls, aux: Any, children: Any) -> SpyRecord:
        return cls(tuple(children), *aux)

    def __repr__(self) -> str:
        return f"SpyRecord({len(self.arrays)} arrays, axes={self.axes})"


def record(
    args: Any, kwargs: Any, output: Any, axes: tuple[str, ...] = (), method: str | None = None
) -> SpyRecord:
    """The :class:`SpyRecord` of one call.

    Args:
      args: The positional arguments.
      kwargs: The keyword arguments.
      output: What the call returned.
      axes: The lifted transforms around the call that will stack the record, outermost first.
      method: The called method, for a spy that answers several.
    """
    leaves, treedef = jax.tree.flatten((tuple(args), dict(kwargs), output))
    arrays = tuple(x for x in leaves if _specs.is_array(x))
    statics = tuple(None if _specs.is_array(x) else x for x in leaves)
    ndims = tuple(int(np.ndim(x)) for x in arrays)
    return SpyRecord(arrays, treedef, statics, ndims, tuple(axes), method)


@dataclasses.dataclass(frozen=True)
class SpyCall:
    """One call a spy saw.

    Attributes:
      path: The ``/``-joined path of the spied module (``"blocks/attn"``).
      method: The called method's name.
      args: The positional arguments, as the call received them.
      kwargs: The keyword arguments.
      output: What the call returned.
      step: Inside a scanned body, the step index (one per enclosing scan, outermost first);
        ``()`` elsewhere.
      lanes: The enclosing vmaps whose lanes are stacked along the leading axes of the arrays.
      module: The spied module (unbound linen module or NNX module), for :func:`replay`.
    """

    path: str
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    output: Any
    step: tuple[int, ...] = ()
    lanes: tuple[str, ...] = ()
    module: Any = dataclasses.field(default=None, repr=False, compare=False)


def _layout(rec: SpyRecord) -> tuple[list[tuple[int, ...]], tuple[str, ...]]:
    """The steps of a record's leading scan axes (in step order), and its stacked lane axes."""
    lead = 0
    if rec.arrays:
        lead = int(np.ndim(rec.arrays[0])) - rec.ndims[0]
    scans = 0
    while scans < min(lead, len(rec.axes)) and rec.axes[scans] == "scan":
        scans += 1
    lanes = rec.axes[scans:lead] if lead <= len(rec.axes) else ("?",) * (lead - scans)
    steps: list[tuple[int, ...]] = [()]
    for axis in range(scans):
        n = int(np.shape(rec.arrays[0])[axis])
        steps = [s + (i,) for s in steps for i in range(n)]
    return steps, tuple(lanes)


def count_of(rec: SpyRecord) -> int:
    """How many calls one record holds (one per step of its leading scan axes)."""
    return len(_layout(rec)[0])


def calls_of(rec: SpyRecord, *, path: str, method: str, module: Any) -> list[SpyCall]:
    """The calls in one record: one per step of its leading scan axes, in step order."""
    steps, lanes = _layout(rec)
    out = []
    for step in steps:
        arrays = iter(x[step] if step else x for x in rec.arrays)
        leaves = [next(arrays) if s is None else s for s in rec.statics]
        args, kwargs, output = jax.tree.unflatten(rec.treedef, leaves)
        name = rec.method or method
        out.append(SpyCall(path, name, args, kwargs, output, step, lanes, module))
    return out


def same_values(a: Any, b: Any) -> bool:
    """Whether two pytrees have one structure and equal leaves (arrays by value)."""
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    if str(ta) != str(tb):
        return False
    for x, y in zip(la, lb, strict=True):
        if _specs.is_array(x) or _specs.is_array(y):
            if not (_specs.is_array(x) and _specs.is_array(y)):
                return False
            x, y = np.asarray(x), np.asarray(y)
            if x.shape != y.shape or x.dtype != y.dtype or not np.array_equal(x, y):
                return False
        elif x != y:
            return False
    return True


class SpyRecords(_mockcore.CallRecords):
    """The call records of a spy: ``CallRecords``' vocabulary, read from recorded values.

    A subclass provides ``_records()`` (its :class:`SpyRecord` s, oldest first),
    ``_reset_records()``, ``_label()``, ``_spy_path()``, ``_spy_method()`` and
    ``_spy_module()``.
    """

    def _records(self) -> tuple[SpyRecord, ...]:
        raise NotImplementedError

    def _reset_records(self) -> None:
        raise NotImplementedError

    def _spy_path(self) -> str:
        raise NotImplementedError

    def _spy_method(self) -> str:
        raise NotImplementedError

    def _spy_module(self) -> Any:
        raise NotImplementedError

    @property
    def calls(self) -> list[SpyCall]:
        """Every recorded call (a :class:`SpyCall` per call, per step inside a scan)."""
        return [
            c
            for r in self._records()
            for c in calls_of(
                r, path=self._spy_path(), method=self._spy_method(), module=self._spy_module()
            )
        ]

    def _count(self) -> int:
        return sum(count_of(r) for r in self._records())

    @property
    def call_args_list(self) -> list[Any]:  # type: ignore[override]
        """The arguments ``(args, kwargs)`` of every recorded call, oldest first (values)."""
        return [(c.args, c.kwargs) for c in self.calls]

    @property
    def outputs(self) -> list[Any]:
        """The output of every recorded call, oldest first."""
        return [c.output for c in self.calls]

    def assert_called_with(self, *args: Any, **kwargs: Any) -> None:
        """Raises ``AssertionError`` unless the latest call got these arguments.

        Arrays are compared by value (shape, dtype and every element), Python values by
        equality.
        """
        calls = self.calls
        if not calls or not same_values((calls[-1].args, calls[-1].kwargs), (args, kwargs)):
            latest = "no call" if not calls else repr((calls[-1].args, calls[-1].kwargs))
            raise AssertionError(
                f"{self._label()}: expected a call with {(args, kwargs)!r:.300}, latest was "
                f"{latest:.300}."
            )

    def reset_mock(self) -> None:
        """Forgets every recorded call."""
        self._reset_records()
