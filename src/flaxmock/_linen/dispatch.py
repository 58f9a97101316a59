"""Running a converted tree natively: the dispatcher that redirects replaced calls.

Calling a layer applies its Flax module once, with the variables ``assemble`` collects, under an
interceptor that follows the converter's walk (``walk``). Calls whose layer is still a converted
layer run as Flax runs them; calls whose layer was replaced (a ``MockLayer``, or any penzai layer)
are redirected to it. Running natively is what keeps the converted tree exactly equal to
``module.apply``: weight tying, shared modules, ``sow``, BatchNorm state and Dropout's rng
splitting are Flax's own, not a re-implementation of them.
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
from penzai.toolshed.unflaxify import ArgsAndKwargs

from flaxmock._core import errors as _errors
from flaxmock._linen import assemble as _assemble
from flaxmock._linen import record as _record
from flaxmock._linen import walk as _walk
from flaxmock._linen.layer import FlaxCallLayer, default_rngs

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
    ):
        self.walk = _walk.Walk(root)
        self.skip_setup = skip_setup
        self.counts = counts
        self.dispatched: dict[int, int] = {}
        # For ``init`` (materialize): a call the tree has not seen (a model that initialises
        # every branch, or calls submodules only ``if self.is_initializing()``) is matched by
        # name alone, else runs natively, instead of raising CallStructureError.
        self.lenient = lenient

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
            return next_fun(*args, **kwargs)
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
                return self.walk.call_child(context.module, node, next_fun, args, kwargs, kind=kind)
            except Exception as e:
                _errors.note_raised_in(e, f"{node.path_str}.{node.method_name}")
                raise
        emit = getattr(node, "emit", None)
        call_args = ArgsAndKwargs(args=tuple(args), kwargs=dict(kwargs))
        if emit is None:
            return node(call_args)
        index = self.dispatched.get(id(node), 0)
        self.dispatched[id(node)] = index + 1
        out, sown = emit(
            call_args,
            count=self.counts.get(id(node)),
            index=index,
            fold=self._step_fold(context.module, kind),
        )
        write_sown(context.module, sown)
        return out


def write_sown(module: nn.Module, sown: list[tuple[_record.SownEntry, Any]]) -> None:
    """Writes a replaced call's sown values into its module's scope, as ``sow`` would."""
    scope = module.scope
    if scope is None:
        return
    for entry, value in sown:
        if not scope.is_mutable_collection(entry.collection):
            continue
        existing: Any = scope.variables().get(entry.collection, {})
        for k in entry.path:
            existing = existing.get(k) if isinstance(existing, dict) else None
        if entry.append:
            new = (existing if isinstance(existing, tuple) else ()) + tuple(value)
        elif existing is not None:
            # State that already exists (BatchNorm statistics) keeps its value under a mock.
            continue
        else:
            new = value
        nested: Any = new
        for k in reversed(entry.path[1:]):
            nested = {k: nested}
        scope.put_variable(entry.collection, entry.path[0], nested)


def run(
    layer: FlaxCallLayer,
    args: tuple,
    kwargs: dict,
    *,
    mutable: Any = False,
    rngs: Any = None,
) -> Any:
    """Applies ``layer``'s module natively, redirecting replaced submodule calls."""
    assembled = _assemble.assemble(layer, include_kept=True)
    _assemble.check_concrete(layer, assembled)
    mocks = _assemble.mocks_reachable(layer)
    # Each run reserves one count per mock up front (atomically: threads calling one tree draw
    # for distinct counts) and gives back the counts of mocks it did not reach. Counters are
    # written here, outside Flax's call: a mock dispatched inside a lifted body must not write
    # penzai state from inside that body's trace.
    counts = {id(m): m.reserve_count() for m in mocks}
    dispatcher = Dispatcher(layer, assembled.skip_setup, counts)
    try:
        with nn.intercept_methods(dispatcher):
            out = layer.module.apply(
                assembled.variables,
                *args,
                rngs=default_rngs() if rngs is None else rngs,
                method=layer.info.method,
                mutable=mutable,
                **kwargs,
            )
    except (
        KeyError,
        flax.errors.ScopeParamNotFoundError,
        flax.errors.ScopeCollectionNotFound,
    ) as e:
        if mocks:
            paths = sorted({f"{m.path_str}.{m.method_name}" for m in mocks})
            e.add_note(
                "flaxmock: a real layer looked up a variable that is not there. Mocked calls "
                "keep only the variables that held real values when they were mocked "
                f"({', '.join(paths[:6])}{', ...' if len(paths) > 6 else ''}); a real layer "
                "that reads an abstract mocked module's variables (weight tying: "
                "`self.embed.variables[...]`, `self.embed.embedding`) fails. Fix: mock that "
                "layer too, leave the module it reads un-mocked, or mock after giving values "
                "(flaxmock.bind or materialize, then flaxmock.mock)."
            )
        raise
    for m in mocks:
        if id(m) not in dispatcher.dispatched:
            m.release_count(counts[id(m)])
    return out
