"""Recording a Flax call: one record per submodule call, with specs and sown values.

The recorder is a Flax method interceptor run inside one abstract trace (``jax.eval_shape``). For
every submodule call (see ``_walk``) it keeps the call's module, method, scope path, input and
output specs, and what the call *sowed*: values it created or appended in collections other
than ``params``. The converter builds layers from these records; a mock re-runs the recorder on
its original module to infer the output of a new input signature. One engine for both.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping
from typing import Any

import flax
import flax.linen as nn
import jax

from flaxmock._core import errors as _errors
from flaxmock._core import fill as _fill
from flaxmock._core import specs as _specs
from flaxmock._linen import variables as _vars
from flaxmock._linen import walk as _walk

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class SownEntry:
    """A value a call writes into a non-``params`` collection.

    Attributes:
      collection: The collection name (``"intermediates"``, ``"plots"``, ``"batch_stats"``).
      path: The variable's path relative to the called module's scope.
      append: True when the call appended to a tuple (``sow``'s default ``reduce_fn``); then
        ``spec`` is the tuple of appended elements' specs. False when it wrote a whole value
        (a custom ``reduce_fn``, or a new state variable); then ``spec`` is that value's spec.
      spec: Specs of what was written.
    """

    collection: str
    path: Path
    append: bool
    spec: Any


@dataclasses.dataclass
class CallRecord:
    """What one call did during the recording trace."""

    module: nn.Module  # An unbound clone of the called module.
    method_name: str
    scope_path: Path
    key: tuple[int, str] | None  # None for the root call.
    children: dict[tuple[int, str], CallRecord] = dataclasses.field(default_factory=dict)
    in_spec: Any = None
    out_spec: Any = None
    sown: tuple[SownEntry, ...] = ()
    rng_names: frozenset[str] = frozenset()
    # The lifted transforms this call is the body of (("scan", "remat")), outermost first.
    transforms: tuple[str, ...] = ()
    # For a scanned body: the number of steps, as Flax's scan saw it (None if unknown).
    steps: int | None = None
    # Inside a nested ``module.apply``: its variables come from that call, not the tree, and
    # ``scope_path`` is a display path: ``base`` (the caller's path and the nested module's
    # name) followed by the path inside the nested apply.
    nested: bool = False
    base: Path = ()
    # For the root call traced with given variables: the ``(collection, path)`` of those the
    # call's computation reads (None: all of them).
    used: frozenset[tuple[str, Path]] | None = None
    # The output spec was given (``unflaxify(out=...)``), not traced.
    out_given: bool = False

    @property
    def path_str(self) -> str:
        return "/".join(self.scope_path)


def _snapshot(module: nn.Module) -> dict[tuple[str, Path], Any]:
    scope = module.scope
    if scope is None:
        return {}
    return _vars.flatten_variables(scope.variables(), skip=("params",))


def _sown_between(before: dict, after: dict) -> tuple[SownEntry, ...]:
    entries = []
    for (col, path), new in after.items():
        old = before.get((col, path), None)
        if (col, path) in before and old is new:
            continue
        # Compare by identity: the values are tracers, whose ``==`` is elementwise.
        if isinstance(new, tuple) and (
            old is None
            or (
                isinstance(old, tuple)
                and len(new) >= len(old)
                and all(a is b for a, b in zip(new, old, strict=False))
            )
        ):
            appended = new[len(old) if isinstance(old, tuple) else 0 :]
            entries.append(SownEntry(col, path, True, _specs.specs_of(appended)))
        else:
            entries.append(SownEntry(col, path, False, _specs.specs_of(new)))
    return tuple(entries)


def _rng_names(module: nn.Module) -> frozenset[str]:
    scope = module.scope
    counters = getattr(scope, "rng_counters", None) or {}
    return frozenset(k for k, v in counters.items() if isinstance(v, int) and v > 0)


class Recorder:
    """A Flax interceptor that builds a :class:`CallRecord` tree during one trace."""

    def __init__(self, module: nn.Module, method_name: str, out: Mapping[str, Any] | None = None):
        self.root = CallRecord(module=module, method_name=method_name, scope_path=(), key=None)
        self.walk = _walk.Walk(self.root)
        self.out = dict(out or {})

    def _given_out(self, record: CallRecord) -> Any:
        for pattern, spec in self.out.items():
            path = record.path_str
            if fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(
                f"{path}.{record.method_name}", pattern
            ):
                return spec
        return None

    def __call__(self, next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
        kind = self.walk.classify(context)
        if kind == _walk.SETUP:
            return self.walk.call_setup(next_fun, args, kwargs, context)
        if kind == _walk.INLINE:
            return self.walk.call_inline(next_fun, args, kwargs, context)
        module = context.module
        parent: CallRecord = self.walk.top.payload
        key = self.walk.next_key(context, advance=kind != _walk.LIFTED)
        base = parent.base
        if kind == _walk.NESTED:
            base = parent.scope_path + (str(module.name),)
        nested = kind == _walk.NESTED or parent.nested
        transforms = self.walk.transforms_of(context) if kind == _walk.LIFTED else ()
        record = CallRecord(
            # A deep clone: submodules held as attributes (a shared embedding) are bound in the
            # trace, and their scopes and setup attributes hold its tracers.
            module=module.clone(_deep_clone=True),
            method_name=context.method_name,
            scope_path=(base if nested else ()) + tuple(module.scope.path),
            key=key,
            in_spec=_specs.specs_of((args, kwargs)),
            transforms=transforms,
            steps=_walk.scan_length() if "scan" in transforms else None,
            nested=nested,
            base=base,
        )
        # A lifted body traced again replaces its earlier record (same key, same call), except
        # the branches of nn.cond / nn.switch: each trace is another branch, and a run traces
        # them all, so the calls of every branch are kept.
        previous = parent.children.get(key)
        if previous is not None and {"cond", "switch"} & set(record.transforms):
            record.children.update(previous.children)
        parent.children[key] = record
        given = self._given_out(record)
        if given is not None:
            # The output spec is given (``out=``): the call is not traced, its output is a
            # placeholder of that spec (the trace is abstract, so its values never matter).
            record.out_spec = _specs.specs_of(given)
            record.out_given = True
            return jax.tree.map(
                lambda s: _fill.zeros(s) if _specs.is_spec(s) else s,
                record.out_spec,
                is_leaf=_specs.is_spec,
            )
        before = _snapshot(module)
        try:
            out = self.walk.call_child(module, record, next_fun, args, kwargs, kind=kind)
        except Exception as e:
            where = f"{record.path_str or '<root>'}.{record.method_name}"
            _errors.note_raised_in(e, where)
            if isinstance(e, jax.errors.ConcretizationTypeError):
                _note_value_dependent(e, where, record.path_str)
            raise
        record.out_spec = _specs.specs_of(out)
        record.sown = _sown_between(before, _snapshot(module))
        record.rng_names = _rng_names(module)
        return out


_VALUE_DEPENDENT = "flaxmock: the output shape of"


def _note_value_dependent(error: BaseException, where: str, path: str | None) -> None:
    """Adds (once: the innermost call's) the fix for an output shape that depends on values."""
    if any(n.startswith(_VALUE_DEPENDENT) for n in getattr(error, "__notes__", ())):
        return
    spec = "jax.ShapeDtypeStruct(shape, dtype)"
    if path is not None:
        fix = f"give its output spec, flaxmock.unflaxify(model, *args, out={{{path!r}: {spec}}}), "
        fix += "then mock it."
    else:
        fix = (
            "for a call inside the model, give its output spec, flaxmock.unflaxify(model, "
            f"*args, out={{'path/of/call': {spec}}}); for a module mocked whole, "
            f"Mocker.mock(name, module, out={spec})."
        )
    error.add_note(
        f"{_VALUE_DEPENDENT} {where} depends on input values, which an abstract trace cannot "
        f"see. Fix: {fix}"
    )


def _used_variables(jaxpr: Any, n_vars: int, rebuild_vars: Any) -> frozenset[tuple[str, Path]]:
    """The ``(collection, path)`` of the variables a traced call computes with.

    ``jaxpr``'s first inputs are the variables' arrays, in the order ``rebuild_vars`` takes them;
    one is read when an equation or the output uses it.
    """
    read: set[int] = {id(v) for v in jaxpr.outvars}
    for eqn in jaxpr.eqns:
        read.update(id(v) for v in eqn.invars)
    flags = [id(v) in read for v in jaxpr.invars[:n_vars]]
    per_variable = _vars.flatten_variables(rebuild_vars(flags))
    return frozenset(k for k, v in per_variable.items() if any(jax.tree.leaves(v)))


def method_name_of(method: Any) -> str:
    """The name under which Flax intercepts ``method`` (a string, a function, or None)."""
    if method is None:
        return "__call__"
    if isinstance(method, str):
        return method
    return getattr(method, "__name__", repr(method))


def record(
    module: nn.Module,
    variables: Any,
    args: tuple,
    kwargs: dict,
    *,
    method: Any,
    rngs: dict[str, Any],
    out: Mapping[str, Any] | None = None,
) -> tuple[CallRecord, Any]:
    """Records every submodule call of one abstract call.

    Args:
      module: The Flax module to apply.
      variables: Its variables (arrays or specs), or None to trace ``module.init`` instead (one
        trace gives both the abstract variables and the records).
      args: Positional arguments (arrays, specs or Python values).
      kwargs: Keyword arguments (likewise).
      method: As for ``module.apply``.
      rngs: Keys for the trace.
      out: Output specs of calls not to trace, by glob over their paths.

    Returns:
      The root :class:`CallRecord` and the variables: the given ones, or the abstract ones from
      ``module.init`` (without ``intermediates``, as ``module.init`` returns them by default).
    """
    arrays, rebuild = _specs.partition((args, kwargs))
    recorder = Recorder(module, method_name_of(method), out)
    flat_vars, rebuild_vars = _specs.partition(variables)
    # Whether ``params`` stays immutable while recording with variables (see run).
    params_immutable = [True]
    created: list[Path] = []

    def run(var_arrays: list[Any], arg_arrays: list[Any]) -> Any:
        a, kw = rebuild(arg_arrays)
        given: Any = None
        # Recording is abstract: nn.jit bodies are traced inline at no cost, so every call in
        # them is seen, whatever Flax cached before.
        with _walk.jit_bodies_inline(), nn.intercept_methods(recorder):
            if variables is None:
                out, new_vars = module.init_with_output(rngs, *a, method=method, mutable=True, **kw)
            else:
                # Every collection but the given parameters is mutable, to see what the call
                # writes; ``params`` stays immutable as in a real apply, so code that branches
                # on ``self.is_mutable_collection("params")`` (initialising every nn.switch
                # branch) takes apply's path.
                given = rebuild_vars(var_arrays)
                mutable: Any = True
                if "params" in given and params_immutable[0]:
                    mutable = flax.core.DenyList("params")
                out, new_vars = module.apply(
                    given, *a, rngs=rngs, method=method, mutable=mutable, **kw
                )
        root = recorder.root
        if variables is not None:
            # Parameters the apply had to create (``params`` mutable): not in what was given.
            given_params = {p for c, p in _vars.flatten_variables(given) if c == "params"}
            created[:] = sorted(
                p
                for c, p in _vars.flatten_variables(new_vars)
                if c == "params" and p not in given_params
            )
        root.in_spec = _specs.specs_of((a, kw))
        root.out_spec = _specs.specs_of(out)
        # Everything sown anywhere is the root call's sown output.
        before = _vars.flatten_variables(
            rebuild_vars(var_arrays) if variables is not None else {}, skip=("params",)
        )
        root.sown = _sown_between(before, _vars.flatten_variables(new_vars, skip=("params",)))
        # The walk's frames hold the trace's bound modules, whose scopes hold its tracers.
        recorder.walk = _walk.Walk(root)
        if variables is None:
            return new_vars
        # The output's arrays, so that a variable returned as it is counts as read.
        return _specs.partition(out)[0]

    def trace(var_arrays: list[Any], arg_arrays: list[Any]) -> Any:
        traced = jax.jit(run).trace(var_arrays, arg_arrays)
        if variables is not None:
            recorder.root.used = _used_variables(traced.jaxpr.jaxpr, len(var_arrays), rebuild_vars)
        return traced.out_info

    try:
        try:
            abstract_vars = trace(flat_vars, arrays)
        except Exception:
            if variables is None or "params" not in variables:
                raise
            # Some lifted transforms fail when only some collections are mutable (Flax's
            # nn.map_variables fails on apply(..., mutable=["intermediates"]) too): record
            # again with everything mutable, as earlier versions did.
            recorder = Recorder(module, method_name_of(method), out)
            params_immutable[0] = False
            abstract_vars = trace(flat_vars, arrays)
            if created:
                # The first recording failed on a parameter that is not there: say which.
                raise
    except (flax.errors.ScopeParamNotFoundError, flax.errors.ScopeCollectionNotFound) as e:
        if variables is None:
            raise
        raise layout_error(module, variables, created, e) from e
    except jax.errors.ConcretizationTypeError as e:
        _note_value_dependent(e, f"{type(module).__name__}.{method_name_of(method)}", None)
        _errors.note_raised_in(e, f"<root>.{method_name_of(method)}")
        raise
    except Exception as e:
        # The applied module's own code (not a submodule call's, which notes its path).
        _errors.note_raised_in(e, f"<root>.{method_name_of(method)}")
        raise
    finally:
        recorder.walk = _walk.Walk(recorder.root)
    if created:
        raise layout_error(module, variables, created, None)
    if variables is None:
        variables = {k: v for k, v in abstract_vars.items() if k != "intermediates"}
    return recorder.root, variables


def layout_error(
    module: nn.Module, variables: Any, created: list[Path], error: BaseException | None
) -> _errors.BindVariablesError:
    """The error for ``unflaxify(variables=...)`` missing parameters the call needs.

    ``created`` are the paths of the parameters the call would have created, or ``error`` is
    Flax's error for the first one it looked up in vain.
    """
    call = f"unflaxify({type(module).__name__}(), ..., variables=...)"
    names = ["params/" + "/".join(p) for p in created]
    found = (
        f"these parameters are not in them: {_errors.cut_list(names, 8)}"
        if created
        else f"Flax could not find a variable: {str(error).splitlines()[0]}"
    )
    if "params" not in variables and variables:
        keys = _errors.cut_list([repr(k) for k in variables], 6)
        return _errors.BindVariablesError(
            f"{call}: the variables have no 'params' collection; their top-level keys ({keys}) "
            f"look like the parameters themselves, and {found}. Flax keys a variables dict by "
            "collection first, as module.init returns it. Fix: wrap them: "
            'variables={"params": params}.'
        )
    return _errors.BindVariablesError(
        f"{call}: the variables do not hold every variable the call reads; {found}. Fix: 1. "
        "give the whole variables dict, as module.init returns it (a checkpoint restored "
        "without a subtree, or a subtree of it, misses entries); 2. convert abstractly and give "
        "the values you have to the layers that need them: flaxmock.bind(flaxmock.mock("
        "flaxmock.unflaxify(model, *args), where=...), variables), whose error lists every "
        "missing entry."
    )
