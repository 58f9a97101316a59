"""The mock machinery both front doors share: static record, per-mock state, call records.

A mock of either kind (the linen ``MockLayer``, the NNX ``MockModule``, and through the first the
``Mocker``) is made of:

* a frozen :class:`MockInfo` record: what the mock replaces and how it draws (path, seed, fill,
  an explicit output spec), never changed after the mock is built;
* one mutable :class:`MockState`: the spec cache, the call history and the other memos, shared by
  every copy of the mock (a tree derived from a mocked tree, an ``nnx.clone`` of a mocked model),
  and safe to use from several threads at once;
* a call counter held as the framework's own state (penzai ``StateVariable``, ``nnx.Variable``),
  so that successive calls draw anew under ``jax.jit`` too. It is the front end's business;
* :class:`CallRecords`: ``unittest.mock``'s assertions, the same on both sides.

The random draw and its key schedule are in :mod:`flaxmock._core.mockdraw`. The helpers at the end
(:func:`signature_or_raise`, :func:`inferring`) raise the errors both sides raise, with the same
texts.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from flaxmock._core import errors as _errors
from flaxmock._core import specs as _specs

#: How many input signatures a mock remembers besides the recorded one (least recently used
#: ones are dropped). Bounds memory when a mock is called with ever new shapes.
SPEC_CACHE_SIZE = 64

#: How many calls ``call_args_list`` remembers (the oldest are dropped).
CALL_HISTORY_SIZE = 1024

#: The first count of calls counted on the host (:meth:`MockState.next_host_count`): far above
#: any count a mock's own counter reaches, so that their random keys never coincide.
HOST_COUNT_BASE = 2**31

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class MockInfo:
    """The static data every mock has (compared and hashed by identity, never changed).

    The linen ``MockLayerInfo`` and the NNX ``MockModuleInfo`` add what their side needs.

    Attributes:
      path: The ``/``-joined path of the replaced module (``"blocks_0/attn"``, ``"<root>"``).
      stream: The text whose stable hash separates this mock's numbers from other mocks' (its
        position in the model: the call path on linen, the attribute path on NNX).
      seed: The seed of the mock's random stream.
      fill: The fill policy (see ``flaxmock.fill_tree``).
      out: An explicit output spec given to ``mock(..., out=...)``, or None to infer it.
    """

    path: str
    stream: str
    seed: int
    fill: Any
    out: Any


class SpecCache:
    """A bounded, thread-safe LRU map, for specs inferred once per input signature.

    Lookups and insertions hold a lock; the (slow) inference of a missing entry runs outside it,
    so two threads may infer the same entry at once (both get the same answer, one is kept) but
    never see an entry evicted between the lookup and the read.
    """

    def __init__(self, size: int = SPEC_CACHE_SIZE):
        self.size = size
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[Hashable, Any] = collections.OrderedDict()

    def get_or_infer(self, key: Hashable, infer: Callable[[], T]) -> T:
        """The entry for ``key``, inferred with ``infer()`` (outside the lock) when missing."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        value = infer()
        self.put(key, value)
        return value

    def get(self, key: Hashable) -> Any:
        """The entry for ``key`` (marked as recently used), or None."""
        with self._lock:
            if key not in self._entries:
                return None
            self._entries.move_to_end(key)
            return self._entries[key]

    def put(self, key: Hashable, value: Any) -> None:
        """Stores an entry, dropping the least recently used ones beyond the size."""
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def latest(self, match: Callable[[Any], bool]) -> Any:
        """The value of the most recently used entry whose key ``match``es, or None."""
        with self._lock:
            return next((v for k, v in reversed(self._entries.items()) if match(k)), None)

    def values(self) -> list[Any]:
        with self._lock:
            return list(self._entries.values())

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class MockState:
    """The mutable part of one mock, shared by every copy of it.

    Attributes:
      specs: Output specs per input signature (a bounded, locked LRU ``SpecCache``).
      shardings: Output shardings per input signature and shardings (linen's ``mesh=``).
      call_args: The input specs ``(args, kwargs)`` of the latest calls, oldest first.
      last_out_spec: The output specs of the latest call, or None before the first.
    """

    def __init__(self) -> None:
        self.specs = SpecCache()
        self.shardings = SpecCache()
        self.call_args: collections.deque[Any] = collections.deque(maxlen=CALL_HISTORY_SIZE)
        self.last_out_spec: Any = None
        #: Calls counted on the host (in a loop body under ``pz.variable_jit``), beyond the
        #: counter's own.
        self.host_calls = 0
        self._lock = threading.Lock()
        self._memo: dict[str, Any] = {}

    def next_host_count(self) -> np.uint32:
        """The next count of a call made where the counter cannot advance (a loop body).

        Counts from ``HOST_COUNT_BASE`` up, so that they never meet the counter's own.
        """
        with self._lock:
            count = HOST_COUNT_BASE + self.host_calls
            self.host_calls += 1
            return np.uint32(count % 2**32)

    def record_call(self, spec_in: Any, out_spec: Any) -> None:
        """Records one call: its input specs ``(args, kwargs)`` and its output specs."""
        self.call_args.append(spec_in)
        self.last_out_spec = out_spec

    def memo(self, name: str, build: Callable[[], T]) -> T:
        """``build()``, computed once per mock (under the lock) and kept."""
        with self._lock:
            if name not in self._memo:
                self._memo[name] = build()
            return self._memo[name]

    def __repr__(self) -> str:
        # No object id: tree renderings stay the same from run to run.
        return f"MockState(calls recorded={len(self.call_args)}, signatures={len(self.specs)})"

    def reset(self) -> None:
        """Forgets the calls (the caches stay: they describe the replaced call, not the calls)."""
        self.call_args.clear()
        self.last_out_spec = None
        with self._lock:
            self.host_calls = 0


class CallRecords:
    """``unittest.mock``'s call records and assertions, for a mock with a :class:`MockState`.

    A subclass provides ``mock_state``, ``_count()`` (the calls counted by its counter, which
    also counts calls under ``jax.jit``), ``_reset_count()`` and ``_label()`` (its path and
    method, for messages).
    """

    mock_state: MockState

    def _count(self) -> int:
        raise NotImplementedError

    def _reset_count(self) -> None:
        raise NotImplementedError

    def _label(self) -> str:
        raise NotImplementedError

    @property
    def call_count(self) -> int:
        """How many times the mock was called (eagerly or under ``jax.jit``)."""
        return self._count()

    @property
    def call_args_list(self) -> list[Any]:
        """The input specs ``(args, kwargs)`` of the latest calls (arrays as specs).

        Records are taken when the mock runs in Python: each eager call, and each *trace*
        under ``jax.jit`` (a cached trace records nothing; a scan body is traced twice). The
        latest ``CALL_HISTORY_SIZE`` (1024) are kept.
        """
        return list(self.mock_state.call_args)

    def assert_called(self) -> None:
        """Raises ``AssertionError`` unless the mock was called at least once."""
        if self.call_count == 0:
            raise AssertionError(f"Expected {self._label()} to be called.")

    def assert_not_called(self) -> None:
        """Raises ``AssertionError`` if the mock was called."""
        if self.call_count != 0:
            raise AssertionError(
                f"Expected {self._label()} not to be called; called {self.call_count} times."
            )

    def assert_called_once(self) -> None:
        """Raises ``AssertionError`` unless the mock was called exactly once."""
        if self.call_count != 1:
            raise AssertionError(
                f"Expected {self._label()} to be called once; called {self.call_count} times."
            )

    def assert_called_with(self, *args: Any, **kwargs: Any) -> None:
        """Raises ``AssertionError`` unless the latest call's input specs equal these.

        Arguments are compared by their specs (shape, dtype; Python values by equality).
        """
        expected = _specs.specs_of((args, kwargs))
        history = self.mock_state.call_args
        latest = history[-1] if history else None
        if latest is None or _specs.signature_of(latest) != _specs.signature_of(expected):
            raise AssertionError(
                f"{self._label()}: expected a call with {expected!r}, latest was "
                f"{'no call' if latest is None else repr(latest)}."
            )

    def assert_called_once_with(self, *args: Any, **kwargs: Any) -> None:
        """``assert_called_once`` and ``assert_called_with`` together."""
        self.assert_called_once()
        self.assert_called_with(*args, **kwargs)

    def reset_mock(self) -> None:
        """Forgets every call: the count goes back to 0 and ``call_args_list`` is emptied.

        The counter is part of the random key, so the next call draws what the first call drew.
        """
        self._reset_count()
        self.mock_state.reset()


def signature_or_raise(spec_in: Any, where: str, extra: Any = None) -> _specs.Signature:
    """The signature of a call's input specs ``(args, kwargs)`` (with ``extra``), for caching.

    Raises:
      InvalidArgumentError: a non-array argument cannot be hashed, so cannot be static.
    """
    sig = _specs.signature_of(spec_in if extra is None else (spec_in, extra))
    if sig is None:
        bad = _specs.unhashable_leaves(spec_in)
        raise _errors.InvalidArgumentError(
            f"{where}: the arguments {', '.join(bad)} are neither arrays nor hashable Python "
            "values, so they cannot be static arguments, and the mock cannot tell which output "
            "shape they lead to. Fix: pass them as arrays, as a pytree of arrays, or as hashable "
            "values (a tuple instead of a list, a frozen dataclass instead of a dict-like object)."
        )
    return sig


@contextlib.contextmanager
def inferring(where: str, spec_in: Any, fix: str) -> Iterator[None]:
    """Wraps the shape inference of a real call for a mock, explaining its failures.

    Args:
      where: The call (``blocks_0/attn.__call__``).
      spec_in: The input specs inferred for.
      fix: The call that gives the output spec explicitly (``flaxmock.mock(tree, where,``).

    Raises:
      ShapeInferenceError: the output shape depends on input values (``jnp.nonzero`` without
        ``size=``), which shape evaluation cannot see.
    """
    try:
        yield
    except jax.errors.ConcretizationTypeError as e:
        raise _errors.ShapeInferenceError(
            f"{where}: cannot infer the output shape for inputs {spec_in!r:.200}: it depends on "
            f"input values ({type(e).__name__}), which shape evaluation cannot see. Fix: give "
            f"the output spec explicitly, {fix} out=jax.ShapeDtypeStruct(shape, dtype))."
        ) from e
    except Exception as e:
        e.add_note(
            f"flaxmock: the real {where} fails on these inputs, so the mock cannot give their "
            "output shape."
        )
        raise


def closed_over(count: Any, advanced: Any) -> bool:
    """Whether a counter read as ``count`` cannot be written with ``advanced`` (its successor).

    True when ``advanced`` belongs to a staging trace (``jax.jit``, a ``lax.fori_loop`` or
    ``while_loop`` body, ``jax.checkpoint``...) other than the one ``count`` belongs to: the
    counter was closed over by that trace, and writing to it would leave the trace's tracer
    behind in the user's model (the next eager call fails with ``UnexpectedTracerError``).
    ``jax.vmap`` and ``jax.grad`` of an eager value give an eager successor: not closed over.
    """
    if not isinstance(advanced, jax.core.Tracer):
        return False
    return not (isinstance(count, jax.core.Tracer) and count._trace is advanced._trace)


def host_count(next_count: Callable[[], Any], inputs: Any = None) -> jax.Array:
    """A uint32 count taken on the host, by ``next_count()``, each time the traced code runs.

    For a counter closed over by a staging trace (:func:`closed_over`): a ``jax.jit`` of a
    closure, or a loop body, runs its trace many times, and each run must draw anew. The count
    is taken by a host callback at run time, so each run (each loop iteration) gets its own.

    ``inputs`` (the call's arguments) tie the callback to the call: the sum of their first
    array, gradient stopped, is its operand (a sum, not an element: slicing a dimension sharded
    over an explicit-sharding mesh is refused). A callback without operands is loop-invariant
    to JAX, and under differentiation (``jax.grad`` of a ``lax.scan``) JAX hoists it out of the
    loop, so every iteration would draw the same values.
    """
    witness = [
        jnp.sum(jax.lax.stop_gradient(leaf))
        for leaf in jax.tree.leaves(inputs)
        if isinstance(leaf, jax.Array)
        and leaf.size
        and not jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)
    ][:1]
    return io_callback(
        lambda *_: np.asarray(next_count(), np.uint32),
        jax.ShapeDtypeStruct((), jnp.uint32),
        *witness,
    )
