"""NNX mocks: a stand-in module that returns random arrays shaped like the real output.

:func:`mock` copies the model (the input model and its state are untouched) and puts a
:class:`MockModule` in place of every selected submodule. The mock keeps the replaced module as
static data: its graph definition and *abstract* state, and holds its state variables (batch
statistics, caches; no parameters) with their values at the same paths, so a mocked part of a
real model holds no parameter array.

On a call, the mock infers the real output's specs by shape-evaluating the replaced module on the
call's input specs (:func:`flaxmock.nnx.eval_shape`: nothing computed, nothing mutated), once per
input signature, and fills them. The same evaluation records what the module and every module under
it sow (``self.sow``), which the mock sows again with random values, at the same paths. The spec
cache, the call records, the key schedule and the grouped draw are the linen ``MockLayer``'s
(``flaxmock._core.mockcore``, ``flaxmock._core.mockdraw``); the call counter is an ``nnx.Variable``
(:class:`MockCounter`), so successive calls differ, also under ``nnx.jit``. The counter of a mock
replacing a layer stack has the stack's leading axis, so that ``nnx.scan``/``nnx.vmap`` slice it
with the stack. The draw is given the call's arguments, as a linen mock's is: under
``jax.vmap``/``nnx.vmap`` each lane that batches them draws its own values, and
``fills.copy_input`` copies one of them.

State the replaced call writes (variables it creates or sets, found by the same evaluation) the
mock writes too: what the real call computes without parameters (``init_cache``'s zero caches, a
cache index, a mocked BatchNorm's statistics of its input) as the real call does
(``flaxmock._core.mockstate``), the rest keeps the held value or, having none, is drawn once.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import errors as flax_errors
from flax import nnx
from flax.nnx import graphlib, variablelib
from jax._src import core as jax_core

from flaxmock._core import errors as _errors
from flaxmock._core import fill as _fill
from flaxmock._core import keys as _keys
from flaxmock._core import mockcore as _mockcore
from flaxmock._core import mockdraw as _mockdraw
from flaxmock._core import mockstate as _mockstate
from flaxmock._core import select as _select
from flaxmock._core import specs as _specs
from flaxmock._core import traces as _traces
from flaxmock.nnx import _abstract as _nnx_abstract
from flaxmock.nnx import _intercept as _nnx_intercept
from flaxmock.nnx import _select as _nnx_select
from flaxmock.nnx import _shapes as _nnx_shapes


class MockCounter(nnx.Variable):
    """The call counter of a :class:`MockModule`: ``[lane, count]`` (``float32``).

    Floating point, so that ``jax.grad``/``jax.value_and_grad`` over a whole mocked model (the
    model as the differentiated argument) accept it (they refuse integer inputs); its gradient
    is zero. Counts are exact integers up to ``2**24`` (16.7 million) calls of one mock.

    ``lane`` tells the layers of a stacked mock apart: the counter of a mock replacing a stack of
    ``n`` layers (built with ``nnx.vmap``) gets a leading axis of ``n``, so that
    ``nnx.scan``/``nnx.vmap`` slice it like the stack's own state.
    """


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class MockModuleInfo(_mockcore.MockInfo):
    """Static data of a :class:`MockModule`, besides :class:`flaxmock.MockInfo`'s (by identity).

    Attributes:
      module_type: The replaced module's class.
      graphdef: The replaced module's graph definition.
      state: Its state, every array replaced by a ``jax.ShapeDtypeStruct``.
      method_names: The methods the mock answers (``__call__`` and the public ones).
      stack_size: The length of the leading layer axis of a stacked module, or None.
    """

    module_type: type
    graphdef: Any
    state: Any
    method_names: tuple[str, ...]
    stack_size: int | None


def _sliced_state(state: Any) -> Any:
    """The abstract state of one layer of a stack: the leading axis dropped."""

    def drop(x: Any) -> Any:
        if isinstance(x, jax.ShapeDtypeStruct) and x.ndim:
            return jax.ShapeDtypeStruct(x.shape[1:], x.dtype)
        return x

    return jax.tree.map(drop, state, is_leaf=_specs.is_spec)


# Attribute names a mock never forwards to the replaced module: Python's and NNX's own protocol
# (looked up by Flax on every module, e.g. while walking the graph).
_PRIVATE_PREFIXES = ("__", "_pytree__", "_object__", "_graph_node", "_flaxmock", "_nnx")

# `nnx.Module.sow`'s signature, to record a replaced module's calls in a replayable form.
_SOW_SIGNATURE = inspect.signature(nnx.Module.sow)
_DEFAULT_REDUCE = _SOW_SIGNATURE.parameters["reduce_fn"].default
# The key of a recorded sow call under which the sowing module's path (relative to the
# replaced module) is kept.
_SOWN_AT = "_flaxmock_sown_at"


class _SownValues(nnx.Module):
    """Holds what a child of a mocked module sowed, at the child's path under the mock."""

    _flaxmock_no_intercept = True


# The mock's own attributes; any other attribute set on it (``model.eval()`` sets
# ``deterministic`` on every module having one) is passed on to the replaced module when the
# output specs are inferred.
_OWN_ATTRIBUTES = frozenset({"info", "counter", "mock_state"})


class MockModule(_mockcore.CallRecords, nnx.Module):
    """An ``nnx.Module`` returning random arrays with the replaced module's output specs.

    Built by :func:`mock`. Calling it (or any public method of the replaced module, e.g.
    ``embed.attend(x)``) returns random arrays of exactly the structure, shapes and dtypes the real
    module returns for these inputs; non-array outputs are returned as the real module returns them.
    What the replaced module and its submodules sow (``self.sow(nnx.Intermediate, ...)``) the mock
    sows too, with random values of the same structure, shapes and dtypes, at the same paths (a
    child's at the child's path under the mock, in a small holder module). It records its calls as
    ``unittest.mock`` does (``call_count``, ``call_args_list``, ``assert_called_once_with``,
    ``reset_mock``...).

    It holds the replaced module's state variables (``nnx.BatchStat``, ``nnx.Cache``, other
    ``nnx.Variable`` subclasses; not parameters or RNG streams) at the same paths
    (``mocked.mean``; a child's in a holder module, ``mocked.bn.mean``), and writes the state
    the real call writes: values that need no parameter as the real call computes them, others
    kept, or drawn once when the mock holds no value yet (a variable created in ``__call__``).

    ``call_count`` counts its calls: eager calls, calls inside Flax's transforms (``nnx.jit``,
    ``nnx.scan``, ``nnx.vmap``, ``nnx.remat``), which write state back, and calls whose
    counter update would not reach the model (a ``jax.jit`` or ``jax.lax`` loop body closing
    over the model or its ``nnx.split`` state, ``jax.jit``/``jax.lax.scan``/``jax.grad``
    given split state), which are counted on the host each time the compiled code runs (one
    host callback per mock and run), as linen mocks are. A call inside ``jax.checkpoint``
    cannot be counted so: it is not counted, draws what the previous such call drew, and the
    mock says so once with a :class:`~flaxmock.nnx.FrozenMockWarning`.

    Other attributes of the replaced module that hold no arrays (configuration such as
    ``features`` or ``num_feature_axes``) read through the mock; setting one on the mock
    (``model.eval()`` sets ``deterministic``) sets it on the replaced module for shape inference.

    Attributes:
      info: The static :class:`MockModuleInfo`.
      mock_state: The mutable :class:`flaxmock.MockState` (spec cache, call history), shared by
        every copy of this mock.
      counter: The :class:`MockCounter` state.
    """

    # The replaced module's state it holds may be abstract (an abstract model): a call does not
    # read what it has no value of, and materialize gives it values.
    _flaxmock_holds_abstract_state = True

    def __init__(self, info: MockModuleInfo):
        self.info = info
        self.mock_state = _mockcore.MockState()
        lanes = jnp.arange(info.stack_size or 1, dtype=jnp.float32)
        counter = jnp.stack([lanes, jnp.zeros_like(lanes)], axis=-1)
        self.counter = MockCounter(counter if info.stack_size else counter[0])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Returns random arrays with the real ``__call__`` output's specs."""
        return self._emit("__call__", args, kwargs)

    def __getattr__(self, name: str) -> Any:
        info = vars(self).get("info")
        if info is None or name.startswith(_PRIVATE_PREFIXES):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        if name in info.method_names and name != "__call__":
            return lambda *args, **kwargs: self._emit(name, args, kwargs)
        try:
            value = getattr(self._replaced_view(), name)
        except AttributeError:
            raise AttributeError(
                f"{type(self).__name__!r} object (the mock of {info.path}, a "
                f"{info.module_type.__name__}) has no attribute {name!r}"
            ) from None
        state = _holds_state(value)
        if state:
            raise _errors.MockAttributeError(
                f"{info.path} is mocked: its attribute {name!r} holds "
                f"{type(state[0]).__name__} state of the replaced "
                f"{info.module_type.__name__}, which a mock does not keep (it keeps state "
                "variables such as batch statistics and caches, not parameters, arrays or "
                "modules). Fix it in one of these ways:\n"
                f"  1. mock the code that reads {name!r} too (its module, with a class, glob or "
                "predicate selecting it);\n"
                f"  2. do not mock {info.path} (select fewer modules)."
            )
        return value

    @property
    def path(self) -> str:
        """The path of the replaced module."""
        return self.info.path

    # Call records (flaxmock._core.mockcore.CallRecords).

    def _count(self) -> int:
        count = self.counter.get_value()[..., 1]
        counted = int(count.max()) if count.ndim else int(count)
        return counted + self.mock_state.host_calls

    def _reset_count(self) -> None:
        self.counter.set_value(self.counter.get_value().at[..., 1].set(0))

    def _label(self) -> str:
        return self.info.path

    # Output specs.

    def _replaced_view(self) -> Any:
        """The replaced module rebuilt with abstract state, to read its configuration from."""

        def build() -> Any:
            view = nnx.merge(self.info.graphdef, self.info.state)
            _nnx_abstract.unguard(view)
            return view

        return vars(self)["mock_state"].memo("view", build)

    def _overrides(self) -> tuple[tuple[str, Any], ...]:
        """Configuration set on the mock after it was built, to be passed on to the original.

        State on the mock (its counter, values it sowed) is not configuration.
        """
        return tuple(
            sorted(
                (name, value)
                for name, value in vars(self).items()
                if name not in _OWN_ATTRIBUTES
                and not name.startswith("_")
                and not _holds_state(value)
            )
        )

    def _output_spec(self, method: str, args: Any, kwargs: Any) -> Any:
        """The output specs of ``method`` for these arguments, inferred once per signature.

        Returns:
          ``(output specs, sown)``: ``sown`` holds the arguments of each ``self.sow(...)`` call
          the replaced module makes on itself, with the value as specs.

        Raises:
          InvalidArgumentError: a non-array argument cannot be hashed (so cannot be static).
          ShapeInferenceError: the output shape depends on input values.
        """
        spec_in = _specs.specs_of((args, kwargs))
        # Inside nnx.scan/vmap over a stack, the counter is one layer's (no leading axis).
        sliced = self.info.stack_size is not None and self.counter.get_value().ndim == 1
        overrides = self._overrides()
        sig = _mockcore.signature_or_raise(spec_in, f"{self.info.path}.{method}", overrides)
        # The state the mock holds is read by the replaced call (a cache made by init_cache):
        # its specs, and which values are still abstract, are part of the signature.
        held = tuple(
            (path, type(var), spec.shape, spec.dtype, _specs.is_spec(var.get_value()))
            for path, var in self._held()
            for spec in [_specs.specs_of(var.get_value())]
        )
        return self.mock_state.specs.get_or_infer(
            (method, sliced, sig, held),
            lambda: self._infer(method, spec_in, sliced, overrides),
        )

    def _infer(self, method: str, spec_in: Any, sliced: bool, overrides: Any) -> Any:
        """Output specs, sown calls and the state the call writes, for one signature.

        Returns:
          ``(output specs, sown, written, state part)``: ``written`` holds one entry per
          variable the call creates or sets (path under the mock, type, metadata, spec);
          ``state part`` computes those of their new values that need no parameter
          (:meth:`_state_part`), or is None.
        """
        info = self.info
        state = _sliced_state(info.state) if sliced else info.state
        args, kwargs = spec_in
        sown: list[dict[str, Any]] = []
        written: list[dict[str, Any]] = []

        def on_merge(copy: Any) -> None:
            # Record the `sow(...)` calls of the replaced module and of every module under it
            # (its children are gone with it), with the sowing module's path relative to it,
            # to replay them with random values. Instance attributes, set past NNX's
            # `__setattr__`: the traced copy's graph stays as it is.
            for rel, module in _nnx_shapes.iter_module_paths(copy):

                def record_sow(*sow_args: Any, _rel: Any = rel, **sow_kwargs: Any) -> bool:
                    bound = _SOW_SIGNATURE.bind(None, *sow_args, **sow_kwargs)
                    sown.append({_SOWN_AT: _rel, **dict(list(bound.arguments.items())[1:])})
                    return True

                object.__setattr__(module, "sow", record_sow)

        fix = "flaxmock.nnx.mock(model, where,"
        with _mockcore.inferring(f"{info.path}.{method}", spec_in, fix=fix):
            # The replaced module's own calls are flaxmock's business, not the user's: no
            # interceptor sees them (a summary shows the mock's row only).
            with _nnx_intercept.suspended():
                original = self._rebuilt(state, overrides)

                def run(copy: Any, /, *call_args: Any, **call_kwargs: Any) -> Any:
                    on_merge(copy)
                    before = _values_by_path(copy)
                    out = _nnx_shapes.bound_method(copy, method)(*call_args, **call_kwargs)
                    new = _written_state(copy, before)
                    written[:] = [
                        {"path": path, "type": type(var), "metadata": var.get_metadata()}
                        for path, var in new
                    ]
                    return out, [call["value"] for call in sown], [v.get_value() for _, v in new]

                out, sown_specs, written_specs = _nnx_shapes.eval_shape(
                    run, original, *args, **kwargs
                )
        for call, spec in zip(sown, sown_specs, strict=True):
            call["value"] = spec
        for entry, spec in zip(written, written_specs, strict=True):
            entry["value"] = spec
        part = self._state_part(method, original, spec_in, written) if written else None
        return out, tuple(sown), tuple(written), part

    def _rebuilt(self, state: Any, overrides: Any, *, values: bool = False) -> Any:
        """The replaced module, abstract, with the specs of the state the mock holds now.

        A variable the mock holds that the replaced module did not have when it was mocked (a
        cache ``init_cache`` created, a loss created in ``__call__``) is set at its path. With
        ``values``, the held state's values rather than their specs (for ``unmock``).
        """
        original = nnx.merge(self.info.graphdef, state)
        _nnx_abstract.unguard(original)
        if overrides:
            original.set_attributes(**dict(overrides), raise_if_not_found=False)
        existing = dict(_nnx_shapes.iter_variables(original))
        for path, var in self._held():
            spec = var.get_value() if values else _specs.specs_of(var.get_value())
            if path in existing:
                existing[path].set_value(spec)
                continue
            parent = _node_at(original, path[:-1])
            if parent is not None and isinstance(path[-1], str):
                setattr(parent, path[-1], type(var).from_metadata(spec, var.get_metadata()))
        return original

    def _state_part(
        self, method: str, original: Any, spec_in: Any, written: list[dict[str, Any]]
    ) -> tuple[tuple[Any, ...], _mockstate.KnownPart] | None:
        """What of the written state the real call computes without the parameters.

        The replaced module's parameters (and RNG state) are unknown, the state the mock holds
        with values and the call's array arguments known: ``cache_index + 1``, the zero caches
        of ``init_cache``, the statistics a mocked BatchNorm takes of its input are computed as
        the real call computes them (``flaxmock._core.mockstate``).

        Returns:
          ``(paths of the known state inputs, known part)``, or None when the arguments hold
          NNX objects (an ``nnx.Rngs``: tracing the real call would advance it).
        """
        if any(
            isinstance(leaf, nnx.Pytree | nnx.Variable)
            for leaf in jax.tree.leaves(
                spec_in, is_leaf=lambda x: isinstance(x, nnx.Pytree | nnx.Variable)
            )
        ):
            return None
        graphdef, state = nnx.split(original)
        variables = list(_nnx_shapes.iter_variables(original))
        known = {path for path, var in self._held() if not _specs.is_spec(var.get_value())}
        unknown = [path not in known for path, _ in variables]
        arrays, rebuild_args = _specs.partition(spec_in)
        n = len(variables)
        paths = [entry["path"] for entry in written]

        def call(*leaves: Any) -> list[Any]:
            # New Variables, made inside the trace (the state's own belong to no trace).
            copy = nnx.merge(graphdef, state, copy=True)
            for (_, var), leaf in zip(_nnx_shapes.iter_variables(copy), leaves[:n], strict=True):
                var.set_value(leaf)
            for _, module in _nnx_shapes.iter_module_paths(copy):
                object.__setattr__(module, "sow", lambda *a, **k: True)
            call_args, call_kwargs = rebuild_args(list(leaves[n:]))
            with _nnx_intercept.suspended():
                _nnx_shapes.bound_method(copy, method)(*call_args, **call_kwargs)
            after = dict(_nnx_shapes.iter_variables(copy))
            return [after[path].get_value() for path in paths]

        specs = [_specs.specs_of(var.get_value()) for _, var in variables]
        try:
            part = _mockstate.known_part(
                call, [*specs, *arrays], [*unknown, *([False] * len(arrays))]
            )
        except Exception:  # noqa: BLE001 (shape evaluation of this call succeeded)
            # A call JAX cannot trace to a jaxpr with these specs: nothing is computed; the
            # written state keeps its values or is drawn once (the rule for what needs a
            # parameter).
            return None
        known_paths = tuple(path for (path, _), u in zip(variables, unknown, strict=True) if not u)
        return known_paths, part

    def _held(self) -> list[tuple[Any, nnx.Variable]]:
        """``(path under the mock, variable)`` of the replaced module's state the mock holds.

        Walks the mock's attributes and its holder modules only (on every call: cheaper than
        walking the graph with ``nnx.iter_graph``).
        """
        found: list[tuple[Any, nnx.Variable]] = []

        def walk(node: Any, path: tuple[Any, ...]) -> None:
            items = enumerate(node) if isinstance(node, nnx.List) else vars(node).items()
            for key, value in items:
                if isinstance(value, nnx.Variable):
                    if _kept(value):
                        found.append(((*path, key), value))
                elif isinstance(value, _SownValues | nnx.List):
                    walk(value, (*path, key))

        walk(self, ())
        return found

    def _hold(self, path: tuple[Any, ...], var: nnx.Variable) -> bool:
        """Puts ``var`` at ``path`` under the mock (in holder modules); False if it cannot."""
        name = path[-1] if path else None
        if (
            not isinstance(name, str)
            or name.startswith("__")
            or name in _OWN_ATTRIBUTES
            or name in self.info.method_names
            or any(isinstance(key, str) and key in _OWN_ATTRIBUTES for key in path[:1])
        ):
            return False
        setattr(self._sown_holder(path[:-1]), name, var)
        return True

    def _update_state(
        self, written: tuple[dict[str, Any], ...], part: Any, args: Any, kwargs: Any
    ) -> tuple[list[Any], list[int]]:
        """The new values of the written state the real call computes without parameters.

        Returns:
          ``(values, to_draw)``: each written variable's computed value (None where it needs a
          parameter), and the indices of those to draw once (they have no value yet).
        """
        held = dict(self._held())
        values: list[Any] = [None] * len(written)
        if part is not None:
            known_paths, known = part
            arrays, _ = _specs.partition((args, kwargs))
            values = known([*(held[path].get_value() for path in known_paths), *arrays])
        to_draw = [
            i
            for i, entry in enumerate(written)
            if values[i] is None
            and (entry["path"] not in held or _specs.is_spec(held[entry["path"]].get_value()))
        ]
        return values, to_draw

    def _set_state(self, entry: dict[str, Any], value: Any, held: dict[Any, nnx.Variable]) -> None:
        """Writes one state value the call writes: at its variable (``held``, by path), or a
        new one at its path."""
        path = entry["path"]
        try:
            if path in held:
                held[path].set_value(value)
                return
            if self._hold(path, entry["type"].from_metadata(value, entry["metadata"])):
                return
        except flax_errors.TraceContextError:
            return  # A raw JAX transform over a copy: lost with the copy, as the real call's.
        info = self.info
        if path in {tuple(p) for p, _ in nnx.to_flat_state(info.state)}:
            # State the replaced module had that the mock cannot hold (documented limit): it
            # keeps no value, as before state was held; reading it is an error.
            return
        raise _errors.MockAttributeError(
            f"{info.path} is mocked: the replaced {info.module_type.__name__}'s call creates "
            f"the variable {_nnx_shapes.path_str(path)} ({entry['type'].__name__}, "
            f"{_errors.describe_value(value)}), which the mock cannot create at that path (a "
            "list index, or a name the mock uses itself). Fix it in one of these ways:\n"
            f"  1. do not mock {info.path} (select fewer modules, or "
            "flaxmock.nnx.unmock(model, ...));\n"
            "  2. mock the module that reads the variable too."
        )

    def _write_counter(self, counter: Any, advanced: Any) -> bool:
        """Writes the advanced call counter; False where the count must be taken on the host.

        That is where the counter is closed over by a staging trace (a ``jax.lax`` loop body,
        ``jax.jit`` of a closure: Flax refuses the update, or it would leave a tracer behind),
        or belongs to a copy merged inside a raw JAX transform given ``nnx.split`` state
        (``jax.jit``, ``jax.lax.scan`` over the state as ``xs``, ``jax.grad``) that no Flax
        transform writes back. The counter is then left as it is, so that a state the user
        does write back (``nnx.update``) counts no call twice. Inside ``jax.checkpoint`` no
        host callback can be staged: there the draws stay frozen and the mock warns
        (:class:`~flaxmock.nnx.FrozenMockWarning`).
        """
        if _mockcore.closed_over(counter, advanced):
            return self._frozen_in_checkpoint()
        if isinstance(counter, jax_core.Tracer) and not _written_back(self.counter):
            return self._frozen_in_checkpoint()
        try:
            self.counter.set_value(advanced)
        except flax_errors.TraceContextError:
            return self._frozen_in_checkpoint()
        return True

    def _frozen_in_checkpoint(self) -> bool:
        """For a counter closed over by a trace: False (count on the host) unless the trace is
        inside ``jax.checkpoint``, where no host callback can be staged: then the draws stay
        frozen, with a warning, and True (the counter is left as it is)."""
        if not _traces.inside_checkpoint():
            return False
        self._warn_frozen()
        return True

    def _warn_frozen(self) -> None:
        """Warns (once per mock) that this call's counter update is lost with its copy."""
        if _nnx_shapes.evaluating():
            return  # Shape evaluation advances nothing, by design.
        info = self.info
        transform = _current_transform()

        def warn() -> bool:
            warnings.warn(
                f"{info.path} (a mock of {info.module_type.__name__}) ran inside a JAX "
                f"transform ({transform}) on a copy of the model whose state is not written "
                "back, inside jax.checkpoint (where no host callback can count it): its call "
                "counter cannot advance, so it draws the same values on every such call and "
                "call_count does not count them. For fresh draws, use Flax's transform instead "
                "(nnx.remat), or return nnx.state(model) from the function and apply it with "
                "nnx.update(model, state) (then the counts advance and this warning can be "
                "ignored).",
                _errors.FrozenMockWarning,
                stacklevel=4,
            )
            return True

        self.mock_state.memo("warned_frozen", warn)

    def _emit(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Returns random arrays shaped like ``method``'s real output, and advances the counter."""
        info = self.info
        sown: tuple[dict[str, Any], ...] = ()
        written: tuple[dict[str, Any], ...] = ()
        part = None
        if info.out is not None:
            out_spec = info.out
        else:
            out_spec, sown, written, part = self._output_spec(method, args, kwargs)
        self.mock_state.record_call(_specs.specs_of((args, kwargs)), out_spec)
        counter = self.counter.get_value()
        advanced, lane, count = _advance(counter)
        if not self._write_counter(counter, advanced):
            # A copy no Flax transform writes back, or a counter closed over by a staging
            # trace: the count is taken on the host each time the compiled code runs, as for
            # a linen mock closed over by a trace (flaxmock._core.mockcore.host_count).
            count = _mockcore.host_count(self.mock_state.next_host_count, (args, kwargs))
        # Values sown by appending are drawn anew per call; values written whole (a `sow` with
        # a custom `reduce_fn`: state) once, the same on every call, as on linen.
        appended = [i for i, entry in enumerate(sown) if _appends(entry)]
        whole = [i for i, entry in enumerate(sown) if not _appends(entry)]
        # State the call writes (created or set variables): what the real call computes
        # without parameters is computed; the rest keeps the value the mock holds, or, having
        # none yet, is drawn once, as state written whole is.
        state_values, to_draw = self._update_state(written, part, args, kwargs)
        out, appended_values, whole_values = _mockdraw.draw_call(
            info,
            out_spec,
            [(_sown_name(sown[i]), sown[i]["value"]) for i in appended],
            [(_sown_name(sown[i]), sown[i]["value"]) for i in whole]
            + [(_state_name(written[i]), written[i]["value"]) for i in to_draw],
            method=method,
            count=count,
            lane=lane,
            inputs=(args, kwargs),
        )
        whole_values, drawn_state = whole_values[: len(whole)], whole_values[len(whole) :]
        for i, value in zip(to_draw, drawn_state, strict=True):
            state_values[i] = value
        held = dict(self._held()) if written else {}
        for entry, value in zip(written, state_values, strict=True):
            if value is not None:
                self._set_state(entry, value, held)
        values = dict(zip(appended + whole, appended_values + whole_values, strict=True))
        for i, entry in enumerate(sown):
            value = values[i]
            # As the replaced module did: into `nnx.capture`'s collections when one is active,
            # else onto the module (Flax's deprecated way, with Flax's warning). What a child
            # of the replaced module sowed is sown at the child's path under the mock.
            entry = dict(entry)
            target = self._sown_holder(entry.pop(_SOWN_AT))
            target.sow(**{**entry, "value": value})
        return out

    def _sown_holder(self, rel: tuple[Any, ...]) -> nnx.Module:
        """The module at ``rel`` under the mock that takes a child's sown values (made once).

        A :class:`_SownValues` module per path segment (an ``nnx.List`` of them for list
        indices), so that the values land at the paths of the real run
        (``layers/0/mlp/act``). Inside ``nnx.capture`` the holders get capture collections of
        the mock's kinds, so that ``nnx.capture`` finds them at their paths.
        """
        node: Any = self
        for i, key in enumerate(rel):
            container = node if isinstance(node, list | nnx.List) else None
            if container is not None:
                while len(container) <= key:
                    container.append(self._new_holder())
                node = container[key]
                continue
            child = vars(node).get(key)
            if child is None:
                nxt = rel[i + 1] if i + 1 < len(rel) else None
                child = nnx.List([]) if isinstance(nxt, int) else self._new_holder()
                setattr(node, key, child)
            node = child
        return node

    def _new_holder(self) -> nnx.Module:
        holder = _SownValues()
        captures = vars(self).get("__captures__")
        if captures is not None:
            # The attribute `nnx.capture` sets on every module it finds.
            holder.__captures__ = nnx.data(  # type: ignore[attr-defined]
                tuple(type(var)({}) for var in captures)
            )
        return holder


@jax.jit
def _advance(counter: jax.Array) -> tuple[jax.Array, jax.Array | None, jax.Array]:
    """``(counter advanced by one call, lane, count)`` of the call before it.

    One layer's counter is ``[lane, count]``; a whole stack called at once (outside scan)
    draws once for all of it, from the first layer's count. The key takes integers; the
    conversion is not differentiated (a zero gradient). Compiled: an eager call is one dispatch
    instead of five small device computations (under a trace it is part of the caller's).
    """
    parts = jax.lax.stop_gradient(counter).astype(jnp.uint32)
    lane, count = (parts[0], parts[1]) if counter.ndim == 1 else (None, parts[0, 1])
    return counter.at[..., 1].add(1), lane, count


def _appends(entry: dict[str, Any]) -> bool:
    """Whether a recorded ``sow`` appends to a tuple (its default ``reduce_fn``)."""
    return entry.get("reduce_fn", _DEFAULT_REDUCE) is _DEFAULT_REDUCE


def _sown_name(entry: dict[str, Any]) -> str:
    """``intermediates/mlp/act``: a sown value's path, as fill dicts name it.

    The collection is the Linen-style name Flax registers for the variable type
    (``nnx.Intermediate``: ``intermediates``), else the type's name; then the sowing module's
    path under the mock, then the sown name.
    """
    kind = entry["variable_type"]
    if not isinstance(kind, str):
        try:
            kind = variablelib.variable_name_from_type(kind)
        except ValueError:  # Not registered; registering would change Flax's global registry.
            kind = kind.__name__
    return "/".join(str(part) for part in (kind, *entry[_SOWN_AT], entry["name"]))


def _kept(var: nnx.Variable) -> bool:
    """Whether a mock holds ``var`` of the module it replaces: state, not parameters.

    Parameters are what a mock does without; RNG streams are not drawn from (the mock has its
    own key schedule); sown intermediates are replayed by the mock; its counter is its own.
    """
    return not isinstance(var, nnx.Param | nnx.RngState | nnx.Intermediate | MockCounter)


def _values_by_path(module: Any) -> dict[Any, tuple[nnx.Variable, Any]]:
    return {path: (var, var.get_value()) for path, var in _nnx_shapes.iter_variables(module)}


def _written_state(module: Any, before: dict[Any, Any]) -> list[tuple[Any, nnx.Variable]]:
    """The state variables of ``module`` a call created or set (their values replaced)."""
    return [
        (path, var)
        for path, var in _nnx_shapes.iter_variables(module)
        if _kept(var)
        and _specs.is_array(var.get_value())
        and (
            path not in before
            or before[path][0] is not var
            or before[path][1] is not var.get_value()
        )
    ]


def _node_at(root: Any, path: tuple[Any, ...]) -> Any:
    """The node at ``path`` under ``root`` (attributes and list indices), or None."""
    node = root
    for key in path:
        try:
            node = node[key] if isinstance(key, int) else getattr(node, key)
        except (AttributeError, IndexError, KeyError, TypeError):
            return None
    return node


def _state_name(entry: dict[str, Any]) -> str:
    """``batch_stats/bn/mean``: a written variable's path, as fill dicts name it."""
    return _sown_name(
        {"variable_type": entry["type"], _SOWN_AT: entry["path"][:-1], "name": entry["path"][-1]}
    )


def _written_back(variable: nnx.Variable) -> bool:
    """Whether an NNX transform in progress will write ``variable``'s new value back.

    Flax's transforms (``nnx.jit``, ``nnx.scan``, ``nnx.vmap``, ``nnx.remat``...) merge the
    modules given to them into copies inside the trace, record each copy's variables in their
    update context, and after the trace update the originals from them. A variable merged by
    the user inside a raw JAX transform (``jax.checkpoint``, ``jax.jit`` over ``nnx.split``
    state) is in no such record: its new value stays in a copy nobody reads, unless the user
    returns the state and applies it with ``nnx.update`` (which flaxmock cannot see).
    """
    for stack in graphlib.GRAPH_CONTEXT.update_context_stacks.values():
        for context in stack:
            inner = getattr(context, "inner_ref_outer_index", None)
            if inner is not None and variable in inner:
                return True
    return False


def _current_transform() -> str:
    """The name of the innermost JAX transform being traced (``jit``, ``checkpoint / remat``)."""
    trace = jax_core.trace_ctx.trace
    debug = getattr(getattr(trace, "frame", None), "debug_info", None)
    name = getattr(debug, "traced_for", None)
    if name:
        return str(name)
    kind = type(trace).__name__
    return {"BatchTrace": "vmap", "JVPTrace": "jvp / grad", "LinearizeTrace": "grad"}.get(
        kind, kind
    )


def _holds_state(value: Any) -> list[Any]:
    """The variables, modules and arrays in ``value`` (a pytree)."""
    return [
        leaf
        for leaf in jax.tree.leaves(
            value, is_leaf=lambda x: isinstance(x, nnx.Variable | nnx.Module)
        )
        if isinstance(leaf, nnx.Variable | nnx.Module) or _specs.is_array(leaf)
    ]


def _method_names(cls: type) -> tuple[str, ...]:
    """The methods a mock of a ``cls`` module answers: ``__call__``, then the public ones."""
    return ("__call__", *(n for n in _nnx_intercept.method_names(cls) if n != "__call__"))


def mock(
    model: Any,
    where: _select.Where,
    *,
    seed: int = 0,
    fill: _fill.Fill = None,
    out: Any = None,
    stack_size: int | None | Literal["auto"] = "auto",
) -> Any:
    """Returns a copy of ``model`` with every selected submodule replaced by a :class:`MockModule`.

    A mock returns random arrays with exactly the structure, shapes and dtypes the replaced
    module would return for the same inputs (shape-evaluated once per input signature, never
    computed), drawn anew on every call; the rest of the model computes as usual on them.
    ``model`` and its state are untouched (the copy shares no ``Variable`` with it).

    The outermost selected modules are replaced (a selected module's children are gone with
    it); a module reachable at several paths is replaced by one mock at all of them. On an
    abstract model (:func:`flaxmock.nnx.abstract`), the mocked parts need no values at all;
    what is left abstract is named by the error an eager call raises, and
    :func:`flaxmock.nnx.materialize` gives it values.

    Args:
      model: An ``nnx.Module``, real or abstract.
      where: Which submodules to mock: an ``nnx.Module`` class (``nnx.Linear``, subclasses
        included), a glob over the ``/``-joined attribute path (``"layers/*/attn"``,
        ``"**/attn"``; list indices are segments, ``*`` stays within one, ``""`` is the
        root), a predicate ``module -> bool`` or ``(path, module) -> bool``, or a list of
        these (the grammar shared with :func:`flaxmock.mock`, in the overview's "Selecting
        modules"). An ``nnx.List``/``nnx.Dict`` is never replaced: select its elements
        (``"layers/*"``).
      seed: The seed of the mocks' random streams; each mock folds in a hash of its path.
      fill: The fill policy: None (normal floats, integers in ``[-100, 100]``, Bernoulli
        bools), ``"zeros"``, ``"ones"``, ``"uniform"``, ``(key, spec) -> array``, a fill with a
        meaning from ``flaxmock.fills`` (``fills.copy_input(0)`` returns the first argument),
        or a dict from output paths to these (``{"1": fills.indices(64)}``); a sown value's
        path is its collection, the sowing module's path under the mock and its name
        (``"intermediates/mlp/act"``).
      out: An explicit output spec (a pytree of ``jax.ShapeDtypeStruct``), for outputs whose
        shape depends on input values and so cannot be inferred.
      stack_size: For a stack of layers built with ``nnx.vmap`` and run inside
        ``nnx.scan``/``nnx.vmap``: the length of its leading layer axis, so that the mock's
        counter is sliced with the stack and each layer draws its own numbers. ``"auto"``
        (the default) infers it per mock: a module whose arrays all share a leading axis of
        ``n`` is taken for a stack of ``n`` (a module without arrays, for the stack it is in);
        a module that merely looks so and is not run sliced behaves the same either way.
        None: not a stack.

    Returns:
      The mocked copy (a :class:`MockModule` itself if ``where`` selects the root).

    Raises:
      SelectNothingError: ``where``, or an element of a list, selects no module (or only
        containers); the message lists the closest paths.
      SelectContainerError: ``where`` selects an ``nnx.List``/``nnx.Dict`` without all of its
        elements.
      SelectMethodError: ``where`` names one method (``"embed.attend"``) of a module with
        others: a mock replaces them all.
      InvalidSelectorError: ``where`` is not a selector (a module instance, say).
      UnsupportedDtypeError: ``out`` has a dtype the fill rules do not cover.
      StackSizeError: ``stack_size`` is not the leading axis of a selected module's arrays.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from flaxmock.nnx import mock
      >>> model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.relu)
      >>> mocked = mock(model, "layers/0")
      >>> y = mocked(jnp.ones((2, 3)))
      >>> y.shape, bool((y >= 0).all()), mocked.layers[0].call_count
      ((2, 4), True, 1)
    """
    _keys.check_seed(seed, where="flaxmock.nnx.mock")
    # Selected on the user's model, which is only read (predicates see the user's modules),
    # then replaced at the same paths in the copy.
    paths = _nnx_select.select_modules(
        model,
        where,
        call="flaxmock.nnx.mock",
        methods_of=_method_names,
        taken=lambda module: "already MockModules" if isinstance(module, MockModule) else None,
    )
    if out is not None:
        _fill.check_fillable(out, fill, path="mock(out=...)")
    else:
        _fill.check_fillable({}, fill)

    def make(path: Any, module: Any, modules: dict[Any, Any]) -> MockModule:
        size = _nnx_select.stack_size(modules, path, module, stack_size)
        graphdef, state = nnx.split(module)
        info = MockModuleInfo(
            path=_nnx_shapes.path_str(path),
            stream=_nnx_shapes.path_str(path),
            module_type=type(module),
            graphdef=graphdef,
            state=_specs.specs_of(state),
            method_names=_method_names(type(module)),
            seed=seed,
            fill=fill,
            out=out,
            stack_size=size,
        )
        made = MockModule(info)
        # The replaced module's state (batch statistics, caches, variables a call created) is
        # the mock's: the same Variable objects, at the same paths under it.
        for rel, var in _nnx_shapes.iter_variables(module):
            if _kept(var):
                made._hold(rel, var)
        return made

    return _nnx_select.replace_at(model, paths, make)
