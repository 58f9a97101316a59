"""Running a converted tree natively: the dispatcher that redirects replaced calls.

Calling a layer applies its Flax module once, with the variables ``assemble`` collects, under an
interceptor that follows the converter's walk (``walk``). Calls whose layer is still a converted
layer run as Flax runs them; calls whose layer was replaced are redirected to it: a
``ReplacementLayer`` (a ``MockLayer``) through its protocol, any other penzai layer the penzai
way, with the ``random_streams`` and side inputs given to the root. Running natively is what
keeps the converted tree exactly equal to ``module.apply``: weight tying, shared modules,
``sow``, BatchNorm state and Dropout's rng splitting are Flax's own, not a re-implementation of
them.
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
from penzai.toolshed.unflaxify import ArgsAndKwargs

from flaxmock._core import errors as _errors
from flaxmock._core import specs as _specs
from flaxmock._core import spycore as _spycore
from flaxmock._core import table as _table
from flaxmock._linen import assemble as _assemble
from flaxmock._linen import spy as _spy
from flaxmock._linen import walk as _walk
from flaxmock._linen.layer import (
    FlaxCallLayer,
    Invocation,
    ReplacementLayer,
    default_rngs,
    iter_layers,
)

Path = tuple[str, ...]


class Dispatcher:
    """The runtime interceptor: native for converted layers, redirected for replaced ones.

    Mocks draw their numbers from a call count reserved once per run, before Flax starts, folded
    with how often the mock was dispatched in this run and, inside a lifted body, with a key
    from the module's ``params`` stream, which Flax splits per step of ``nn.scan`` and per lane
    of ``nn.vmap`` when ``split_rngs`` asks for it.
    """

    def __init__(
        self,
        root: FlaxCallLayer,
        skip_setup: set[Path],
        counts: dict[int, Any],
        *,
        lenient: bool = False,
        random_streams: dict[str, Any] | None = None,
        side_inputs: dict[str, Any] | None = None,
    ):
        self.walk = _walk.Walk(root)
        self.skip_setup = skip_setup
        self.counts = counts
        self.dispatched: dict[int, int] = {}
        # Given to the root layer's ``__call__``: passed on to every replacement, as penzai's
        # own ``InterceptedFlaxModuleMethod`` passes them on to its sublayers.
        self.random_streams = random_streams
        self.side_inputs = side_inputs or {}
        # For ``init`` (materialize): a call the tree has not seen (a model that initialises
        # every branch, or calls submodules only ``if self.is_initializing()``) is matched by
        # name alone, else runs natively, instead of raising CallStructureError.
        self.lenient = lenient
        # Spies reachable in this run, by id: their index names their records in a run.
        self.spies: dict[int, int] = {}
        # Spies that ran where their records could not be written (a lifted body whose
        # transform does not carry ``intermediates``), with where they ran.
        self.lost: dict[int, str] = {}

    def _record_spy(
        self, node: Any, module: nn.Module, args: Any, kwargs: Any, out: Any, kind: str
    ) -> None:
        index = self.spies[id(node)]
        # The lifted bodies around the call (the call itself when it is one), outermost first.
        bodies = [f.payload for f in self.walk.stack if f.lifted or f.nested]
        bodies += [node] if kind in (_walk.LIFTED, _walk.NESTED) else []
        axes = tuple(
            t
            for body in bodies
            if isinstance(body, FlaxCallLayer)
            for t in body.info.transforms
            if t in ("scan", "vmap")
        )
        rec = _spycore.record(args, kwargs, out, axes)
        if not _spy.record_in_scope(module, index, rec):
            body = next((b for b in reversed(bodies) if isinstance(b, FlaxCallLayer)), node)
            self.lost[index] = f"{body.path_str}.{body.method_name}"

    def _step_fold(self, module: nn.Module, kind: str) -> Any:
        if not (kind == _walk.LIFTED or self.walk.in_lifted) or not module.has_rng("params"):
            return None
        return jax.random.bits(module.make_rng("params"), dtype=jax.numpy.uint32)

    def __call__(self, next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
        if _walk.is_isolated():
            return next_fun(*args, **kwargs)
        kind = self.walk.classify(context)
        if kind == _walk.SETUP:
            scope = context.module.scope
            if (
                scope is not None
                and not self.walk.in_nested
                and tuple(scope.path) in self.skip_setup
            ):
                # Every call of this module was replaced and its variables are gone: its setup
                # (which would look them up) must not run. Nothing reads what it would define.
                return None
            return self.walk.call_setup(next_fun, args, kwargs, context)
        if kind == _walk.INLINE:
            return self.walk.call_inline(next_fun, args, kwargs, context)
        parent: FlaxCallLayer = self.walk.top.payload
        key = self.walk.next_key(context, advance=kind != _walk.LIFTED)
        node = parent.submodule_calls.get(key)
        if node is None and self.lenient:
            same_name = [k for k in parent.submodule_calls if k[1] == key[1]]
            if len(same_name) != 1:
                return self.walk.call_inline(next_fun, args, kwargs, context)
            node = parent.submodule_calls[same_name[0]]
        if node is None:
            raise _errors.CallStructureError(
                f"{parent.path_str}.{parent.method_name} made the submodule call {key!r}, which "
                "was not seen when the tree was converted (seen: "
                f"{sorted(parent.submodule_calls)!r}). The model took another Python path for "
                "these arguments (a different flag, mode or input structure). Fix: convert the "
                "model again with arguments that take this path: flaxmock.unflaxify(model, "
                "*args, **kwargs). If the model calls other submodules while initialising "
                "(`self.is_initializing()`, nn.switch initialising every branch) and the tree "
                "was converted without variables (which records init), convert with abstract "
                "variables so that apply's path is recorded: flaxmock.unflaxify(model, *args, "
                "variables=jax.eval_shape(model.init, jax.random.key(0), *args))."
            )
        if isinstance(node, FlaxCallLayer):
            try:
                out = self.walk.call_child(context.module, node, next_fun, args, kwargs, kind=kind)
            except Exception as e:
                _errors.note_raised_in(e, f"{node.path_str}.{node.method_name}")
                raise
            if isinstance(node, _spy.SpyLayer) and id(node) in self.spies:
                # (A run that records: ``run``. Initialising for ``materialize`` does not.)
                self._record_spy(node, context.module, args, kwargs, out, kind)
            return out
        call_args = ArgsAndKwargs(args=tuple(args), kwargs=dict(kwargs))
        if not isinstance(node, ReplacementLayer):
            return node(call_args, random_streams=self.random_streams, **self.side_inputs)
        index = self.dispatched.get(id(node), 0)
        self.dispatched[id(node)] = index + 1
        return node.run_replaced(
            call_args,
            Invocation(
                module=context.module,
                count=self.counts.get(id(node)),
                index=index,
                fold=self._step_fold(context.module, kind),
                random_streams=self.random_streams,
                side_inputs=self.side_inputs,
            ),
        )


def run(
    layer: FlaxCallLayer,
    args: tuple,
    kwargs: dict,
    *,
    mutable: Any = False,
    rngs: Any = None,
    random_streams: dict[str, Any] | None = None,
    side_inputs: dict[str, Any] | None = None,
) -> Any:
    """Applies ``layer``'s module natively, redirecting replaced submodule calls.

    ``random_streams`` and ``side_inputs`` are passed on to the replacements (they are what was
    given to the root layer's ``__call__``); ``rngs`` are Flax's.
    """
    assembled = _assemble.assemble(layer, include_kept=True)
    _assemble.check_concrete(layer, assembled)
    replacements = _assemble.replacements_reachable(layer)
    # Each run reserves one count per replacement up front (atomically: threads calling one
    # tree draw for distinct counts) and gives back the counts of those it did not reach.
    # Counters are written here, outside Flax's call: a mock dispatched inside a lifted body
    # must not write penzai state from inside that body's trace.
    counts = {id(r): r.reserve_count((args, kwargs)) for r in replacements}
    dispatcher = Dispatcher(
        layer,
        assembled.skip_setup,
        counts,
        random_streams=random_streams,
        side_inputs=side_inputs,
    )
    spies = _spy.spies_reachable(layer)
    dispatcher.spies = {id(s): i for i, s in enumerate(spies)}
    # Spies record through the ``intermediates`` collection (carried out of lifted bodies as
    # ``sow`` is); it is taken out of what the run returns.
    run_mutable = _spy.with_intermediates(mutable) if spies else mutable
    try:
        with _walk.jit_bodies_inline(has_jit_body(layer)), nn.intercept_methods(dispatcher):
            out = layer.module.apply(
                assembled.variables,
                *args,
                rngs=default_rngs() if rngs is None else rngs,
                method=layer.info.method,
                mutable=run_mutable,
                **kwargs,
            )
    except Exception as e:
        where = f"{layer.path_str}.{layer.method_name}"
        _note_inputs(e, where, layer.info.in_spec, (tuple(args), dict(kwargs)))
        _errors.note_raised_in(e, where)
        lookup = (
            KeyError,
            flax.errors.ScopeParamNotFoundError,
            flax.errors.ScopeCollectionNotFound,
        )
        if isinstance(e, lookup) and replacements:
            paths = sorted({r.replaced().label for r in replacements})
            e.add_note(
                "flaxmock: a real layer looked up a variable that is not there. Mocked calls "
                "keep only the variables that held real values when they were mocked "
                f"({_errors.cut_list(paths, 6)}); a real layer "
                "that reads an abstract mocked module's variables (weight tying: "
                "`self.embed.variables[...]`, `self.embed.embedding`) fails. Fix: mock that "
                "layer too, leave the module it reads un-mocked, or mock after giving values "
                "(flaxmock.bind or materialize, then flaxmock.mock)."
            )
        raise
    for r in replacements:
        if id(r) not in dispatcher.dispatched:
            r.release_count(counts[id(r)])
    if spies:
        out = _finish_spies(layer, spies, dispatcher, out, mutable, (tuple(args), dict(kwargs)))
    if mutable is not False and replacements:
        out = (out[0], with_params_collection(out[1], mutable, layer))
    return out


def _finish_spies(
    layer: FlaxCallLayer,
    spies: list[Any],
    dispatcher: Dispatcher,
    out: Any,
    mutable: Any,
    given: tuple[tuple, dict],
) -> Any:
    """Moves the spies' records from the run's collections into their state.

    Returns what the run returns without them (``module.apply``'s result for ``mutable``).
    """
    if dispatcher.lost:
        index = min(dispatcher.lost)
        raise _errors.RecordSpyError(
            f"{spies[index]._label()}: the spy ran inside a lifted body ({dispatcher.lost[index]}) "
            "whose transform does not carry the 'intermediates' collection, so its records "
            "cannot leave the body. Fix: 1. add it to the transform's variable_axes, as for "
            "sow: nn.scan(..., variable_axes={'params': 0, 'intermediates': 0}); or 2. spy on "
            "the module that calls the lifted module instead."
        )
    value, collections = out
    collections = dict(collections)
    found = _spy.take_records(collections, len(spies))
    if not flax.core.scope.in_filter(mutable, "intermediates") or not collections.get(
        "intermediates", True
    ):
        # Flax returns no empty collection: one that held only records goes.
        collections.pop("intermediates", None)
    if isinstance(layer, _spy.SpyLayer):
        found[0].append(_spycore.record(*given, value))
    for s, recs in zip(spies, found, strict=True):
        s.append(recs)
    return value if mutable is False else (value, collections)


def has_jit_body(layer: FlaxCallLayer) -> bool:
    """Whether a run of ``layer`` calls the body of an ``nn.jit`` (see ``jit_bodies_inline``)."""
    return any(
        isinstance(node, FlaxCallLayer) and "jit" in node.info.transforms
        for _, node in iter_layers(layer)
    )


def _note_inputs(error: BaseException, where: str, recorded: Any, given: Any) -> None:
    """Notes that the inputs differ from those the tree was converted for, when they do.

    A shape error deep in the model's code (``dot_general requires contracting dimensions...``)
    then says which call got which inputs.
    """
    given_specs = _specs.specs_of(given)
    try:
        same = _specs.signature_of(given_specs) == _specs.signature_of(recorded)
    except Exception:  # Leaves whose ``==`` is not a bool: say nothing rather than guess.
        return
    if same:
        return
    error.add_note(
        f"flaxmock: {where} was converted for the inputs ({_table.describe_inputs(recorded)}) "
        f"and is called with ({_table.describe_inputs(given_specs)}), which the model's code may "
        "not accept. Fix: call it with inputs of the converted shapes, or convert it for these: "
        "flaxmock.unflaxify(model, *args)."
    )


def with_params_collection(collections: dict[str, Any], mutable: Any, tree: Any) -> dict[str, Any]:
    """``collections`` with a ``params`` entry wherever ``module.apply`` would return one.

    ``module.apply(..., mutable=True)`` returns ``params``; a run in which every parameter owner
    is mocked has none with values (mocks keep only real ones), and Flax leaves the collection
    out. It is put back, holding what has values (nothing), so that the same collections come
    back.
    """
    if "params" in collections or not flax.core.scope.in_filter(mutable, "params"):
        return collections
    if isinstance(tree, FlaxCallLayer):
        has_params = "params" in _assemble.assemble(tree, include_replaced=True).variables
    else:
        has_params = bool(tree.abstract_variables().get("params"))
    return {**collections, "params": {}} if has_params else collections
