"""NNX spies: modules that run as they are and record what they receive and return.

A :class:`SpyModule` holds the real module (``wrapped``) and its records, a :class:`SpyState`
variable: NNX's transforms carry it as they carry any state, so a record made inside an
``nnx.scan`` body over a stack of layers comes back stacked along the step axis (read back as one
call per step), and one made inside ``nnx.vmap`` along the lane axis. The recorded calls and the
call-history vocabulary are the shared core's (``flaxmock._core.spycore``), as for linen's
``SpyLayer``.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from flaxmock._core import errors as _errors
from flaxmock._core import select as _select
from flaxmock._core import spycore as _spycore
from flaxmock.nnx import _intercept as _nnx_intercept
from flaxmock.nnx import _mock as _nnx_mock
from flaxmock.nnx import _select as _nnx_select
from flaxmock.nnx import _shapes as _nnx_shapes


class SpyState(nnx.Variable):
    """The records of a :class:`SpyModule`: a tuple of recorded calls (NNX state)."""


class SpyModule(_spycore.SpyRecords, nnx.Module):
    """An ``nnx.Module`` that runs the module it wraps unchanged and records every call.

    Built by :func:`flaxmock.nnx.spy`; :func:`flaxmock.nnx.unspy` puts the module back. Calls
    of ``__call__`` and of the wrapped module's other public methods are recorded; any other
    attribute reads through to the wrapped module. The records have the call-history vocabulary
    of mocks (``call_count``, ``call_args_list``, ``outputs``, ``assert_called_with`` with
    arrays compared by value, ``reset_mock``), and ``calls``: one ``flaxmock.SpyCall`` per
    recorded call (per step inside ``nnx.scan``), for :func:`flaxmock.nnx.replay`.

    Attributes:
      wrapped: The real module.
      records: The :class:`SpyState` holding the records.
      spy_path: The ``/``-joined path of the wrapped module in the model.
    """

    def __init__(self, wrapped: nnx.Module, path: str):
        self.wrapped = wrapped
        self.records = SpyState(())
        self.spy_path = path

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Calls the wrapped module and records the call."""
        return self._run("__call__", args, kwargs)

    def __getattr__(self, name: str) -> Any:
        wrapped = vars(self).get("wrapped")
        if wrapped is None or name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        if name != "__call__" and name in _nnx_intercept.method_names(type(wrapped)):
            return lambda *args, **kwargs: self._run(name, args, kwargs)
        return getattr(wrapped, name)

    def _run(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        out = getattr(self.wrapped, method)(*args, **kwargs)
        transform = _nnx_mock._current_transform()
        axes = (transform,) if transform in ("scan", "vmap") else ()
        rec = _spycore.record(args, kwargs, out, axes, method)
        traced = any(isinstance(x, jax.core.Tracer) for x in rec.arrays)
        if traced and not _nnx_mock._written_back(self.records):
            raise _errors.RecordSpyError(
                f"{self.spy_path}: the spy ran inside a JAX transform ({transform}) over a copy "
                "of the model whose state is not written back (jax.jit or jax.lax over "
                "nnx.split state, or a closure), so its records cannot be kept. Fix: 1. use "
                "Flax's transforms (nnx.jit, nnx.scan, nnx.vmap), which write state back; 2. "
                "run it eagerly; or 3. remove the spies first: flaxmock.nnx.unspy(model)."
            )
        self.records.set_value(tuple(self.records.get_value()) + (rec,))
        return out

    # Records (flaxmock._core.spycore.SpyRecords).

    def _records(self) -> tuple[_spycore.SpyRecord, ...]:
        return tuple(self.records.get_value())

    def _reset_records(self) -> None:
        self.records.set_value(())

    def _label(self) -> str:
        return self.spy_path

    def _spy_path(self) -> str:
        return self.spy_path

    def _spy_method(self) -> str:
        return "__call__"

    def _spy_module(self) -> Any:
        return self


def spy(model: Any, where: _select.Where) -> Any:
    """Returns a copy of ``model`` whose selected submodules are wrapped in spies.

    The NNX counterpart of :func:`flaxmock.spy`: each selected module is wrapped in a
    :class:`SpyModule` that runs it unchanged and records each call's arguments and output
    (``__call__`` and the module's other public methods). Records are NNX state, so they are
    kept eagerly and under Flax's transforms (``nnx.jit``; inside ``nnx.scan`` each step is
    recorded, read back as one call per step; inside ``nnx.vmap`` the lanes are stacked). The
    outermost selected modules are wrapped; a module reachable at several paths is wrapped by
    one spy at all of them. ``model`` is untouched.

    Args:
      model: An ``nnx.Module`` with values.
      where: Which submodules to spy on, in the grammar of :func:`flaxmock.nnx.mock`.

    Returns:
      The spied copy (a :class:`SpyModule` itself if ``where`` selects the root).

    Raises:
      SelectNothingError: ``where``, or an element of a list, selects no module.
      SelectContainerError: ``where`` selects an ``nnx.List``/``nnx.Dict`` without all of its
        elements.
      SelectMethodError: ``where`` names one method of a module with others: a spy records
        them all.
      InvalidSelectorError: ``where`` is not a selector.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import flaxmock.nnx
      >>> model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.relu)
      >>> spied = flaxmock.nnx.spy(model, "layers/0")
      >>> y = spied(jnp.ones((2, 3)))
      >>> spied.layers[0].call_count, spied.layers[0].outputs[0].shape
      (1, (2, 4))
    """
    paths = _nnx_select.select_modules(
        model,
        where,
        call="flaxmock.nnx.spy",
        methods_of=_nnx_intercept.method_names,
        taken=lambda module: "already SpyModules" if isinstance(module, SpyModule) else None,
        taken_fix="flaxmock.nnx.unspy(model, where) first puts back the modules",
    )
    return _nnx_select.replace_at(
        model, paths, lambda path, module, modules: SpyModule(module, _nnx_shapes.path_str(path))
    )


def unspy(model: Any, where: _select.Where = "**") -> Any:
    """Returns a copy of ``model`` with the modules its spies wrap put back (all by default).

    Args:
      model: A model with spies (from :func:`flaxmock.nnx.spy`), or a spy itself.
      where: Which spies to remove, in the grammar of :func:`flaxmock.nnx.mock`; class
        selectors and predicates see the wrapped module.

    Returns:
      The copy (the wrapped module itself when ``model`` is a spy).

    Raises:
      SelectNothingError: ``where``, or an element of a list, selects no spy.
      InvalidSelectorError: ``where`` is not a selector.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import flaxmock.nnx
      >>> model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.relu)
      >>> type(flaxmock.nnx.unspy(flaxmock.nnx.spy(model, nnx.Linear)).layers[0]).__name__
      'Linear'
    """
    paths = _nnx_select.select_modules(
        model,
        where,
        call="flaxmock.nnx.unspy",
        methods_of=_nnx_intercept.method_names,
        taken=lambda m: None if isinstance(m, SpyModule) else "not spies",
        taken_fix="select spied modules, or spy on them first with flaxmock.nnx.spy(model, where)",
        as_selected=lambda m: m.wrapped if isinstance(m, SpyModule) else m,
    )
    return _nnx_select.replace_at(model, paths, lambda path, module, modules: module.wrapped)


def replay(recorded: _spycore.SpyCall, model: Any) -> Any:
    """Runs a recorded call again, on its recorded arguments, against another NNX model.

    The module at the recorded path of ``model`` is copied (``model`` is never changed) and the
    recorded method called on the copy; a call recorded at step ``k`` of an ``nnx.scan`` over a
    stack of layers runs with step ``k`` of the stack's state.

    Args:
      recorded: A recorded call (an element of a :class:`SpyModule`'s ``calls``).
      model: An ``nnx.Module`` of the same model.

    Returns:
      The output of the call on the recorded arguments.

    Raises:
      InvalidArgumentError: ``recorded`` is not a call recorded by an NNX spy, or ``model`` is
        not an ``nnx.Module``.
      SelectNothingError: ``model`` has no real module at that path (none, or a mock).

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import flaxmock.nnx
      >>> model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.relu)
      >>> spied = flaxmock.nnx.spy(model, "layers/0")
      >>> _ = spied(jnp.ones((2, 3)))
      >>> seen = spied.layers[0].calls[0]
      >>> bool((flaxmock.nnx.replay(seen, model) == seen.output).all())
      True
    """
    if not isinstance(recorded, _spycore.SpyCall) or not isinstance(recorded.module, SpyModule):
        raise _errors.InvalidArgumentError(
            "flaxmock.nnx.replay expects a call recorded by an NNX spy (an element of "
            f"spy.calls), got {type(recorded).__name__}. Fix: "
            "flaxmock.nnx.replay(spy_module.calls[-1], model)."
        )
    if not isinstance(model, nnx.Module):
        raise _errors.InvalidArgumentError(
            f"flaxmock.nnx.replay: model must be an nnx.Module, got {type(model).__name__}."
        )
    found = dict(_nnx_shapes.iter_module_paths(model))
    module = next((m for p, m in found.items() if _nnx_shapes.path_str(p) == recorded.path), None)
    if isinstance(module, SpyModule):
        module = module.wrapped
    if module is None or isinstance(module, _nnx_mock.MockModule):
        raise _errors.SelectNothingError(
            f"flaxmock.nnx.replay: the model has no real module at {recorded.path!r} (it is "
            "mocked, or the model is another one). Fix: replay against a model where it is "
            "real (the full model)."
        )
    copy = nnx.clone(module)
    if recorded.step:
        graphdef, state = nnx.split(copy)
        step = recorded.step
        state = jax.tree.map(lambda x: x[step], state)
        copy = nnx.merge(graphdef, state)
    return getattr(copy, recorded.method)(*recorded.args, **recorded.kwargs)
