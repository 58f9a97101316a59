"""The converted layer and how a converted (possibly patched) tree runs.

A converted tree is a tree of :class:`FlaxCallLayer`, penzai's ``InterceptedFlaxModuleMethod``
with a record of the call attached. It runs *natively*: calling a layer applies its Flax module
once, with the variables of every un-mocked layer below it assembled into one dict, under an
interceptor that follows the same walk as the converter (``_walk``). Calls whose layer is still a
converted layer run as Flax runs them; calls whose layer was replaced (a ``MockLayer``, or any
penzai layer) are redirected to it. Running natively is what keeps the converted tree exactly
equal to ``module.apply``: weight tying, shared modules, ``sow``, BatchNorm state and Dropout's
rng splitting are Flax's own, not a re-implementation of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import flax
import flax.linen as nn
import jax
from penzai import pz
from penzai.toolshed.unflaxify import (
    ArgsAndKwargs,
    InterceptedFlaxModuleMethod,
    InterceptedFlaxScopeData,
)

from flaxmock._core import errors as _errors
from flaxmock._linen import record as _record
from flaxmock._linen import walk as _walk

Path = tuple[str, ...]
CallKey = tuple[int, str]


@dataclasses.dataclass(frozen=True, eq=False)
class CallInfo:
    """What the converter recorded about one call (static metadata of a layer).

    Compared by identity, so that ``jax.jit`` can hash the treedef of a tree holding it.

    Attributes:
      scope_path: The Flax scope path of the called module (``("blocks_0", "attn")``).
      call_path: The ``submodule_calls`` keys leading from the root to this call.
      in_spec: Specs of the recorded call's ``(args, kwargs)``.
      out_spec: Specs of its output (non-array leaves as they were).
      sown: What the call sowed, relative to its module's scope.
      rng_names: The rng streams the call drew from.
      method: The ``method`` to apply (a name, or the function given to ``unflaxify``).
      mutable: The default ``mutable`` of ``layer(ArgsAndKwargs(...))``.
      transforms: The lifted transforms (``("scan", "remat")``) this call is the body of;
        Flax applies them when the enclosing layer runs.
      detached: The call runs inside a nested ``module.apply``, whose variables are its own.
      steps: For a scanned or vmapped body, the number of steps (the leading axis of its
        stacked variables), when it has variables.
    """

    scope_path: Path
    call_path: tuple[CallKey, ...]
    in_spec: Any
    out_spec: Any
    sown: tuple[_record.SownEntry, ...]
    rng_names: frozenset[str]
    method: Any
    mutable: Any = False
    transforms: tuple[str, ...] = ()
    detached: bool = False
    steps: int | None = None

    @property
    def path_str(self) -> str:
        return "/".join(self.scope_path) if self.scope_path else "<root>"


def default_rngs() -> dict[str, jax.Array]:
    """Fixed keys for calls that draw random numbers when the user gives none.

    Flax's ``make_rng`` falls back to the ``params`` stream for any stream it lacks, so one key
    serves Dropout and every other rng user.
    """
    return {"params": jax.random.key(0)}


@pz.pytree_dataclass(has_implicitly_inherited_fields=True)  # type: ignore[call-arg]
class FlaxCallLayer(InterceptedFlaxModuleMethod):
    """One Flax module method call, converted into a penzai layer.

    A subclass of penzai's ``InterceptedFlaxModuleMethod`` (so ``pz.select``, treescope and
    penzai's tooling treat it as one) that runs natively: see the module docstring of
    ``flaxmock._linen.layer``. Its parameters are frozen ``pz.ParameterValue`` leaves holding
    arrays, or ``jax.ShapeDtypeStruct`` for an abstract tree, so the tree is a plain pytree.

    Attributes:
      module: The unbound Flax module.
      method_name: The name of the called method.
      scope_data: The parameters and other variables this call's module owns (not those of its
        submodule calls' layers), or None.
      submodule_calls: One layer per submodule call, keyed ``(index, "name.method")``.
      info: The recorded :class:`CallInfo`.
    """

    info: CallInfo = dataclasses.field(metadata={"pytree_node": False})

    def __call__(
        self,
        args_and_kwargs: ArgsAndKwargs,
        random_streams: dict[str, pz.RandomStream] | None = None,
        **side_inputs: Any,
    ) -> Any:
        """Runs the call, returning what ``module.apply`` returns for it.

        Args:
          args_and_kwargs: The method's arguments.
          random_streams: Optional penzai random streams, one per rng name.
          **side_inputs: Ignored (penzai's layer convention).

        Returns:
          The output, or ``(output, collections)`` if the tree was converted with ``mutable``.
        """
        rngs = None
        if random_streams:
            rngs = {k: s.next_key() for k, s in random_streams.items()}
        return run(
            self,
            args_and_kwargs.args,
            args_and_kwargs.kwargs,
            mutable=self.info.mutable,
            rngs=rngs,
        )

    @property
    def path_str(self) -> str:
        return self.info.path_str


def _set_in(tree: dict, path: Path, value: Any) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def name_of(path: Path) -> str:
    """A variable's name in a layer's scope data: its relative path joined with ``/``.

    A ``/`` inside one key (``nn.SpectralNorm`` stores ``"Dense_0/kernel/u"`` as one key) is
    escaped as ``%2F`` (and ``%`` as ``%25``), so that :func:`path_of` gives the path back.
    """
    return "/".join(str(k).replace("%", "%25").replace("/", "%2F") for k in path)


def path_of(name: str) -> Path:
    """The relative path of a variable named by :func:`name_of`."""
    return tuple(k.replace("%2F", "/").replace("%25", "%") for k in name.split("/"))


def own_variables(layer: FlaxCallLayer) -> Iterator[tuple[str, Path, Any, str | None]]:
    """Yields ``(collection, relative path, value, label)`` for each variable ``layer`` owns."""
    data = layer.scope_data
    if data is None:
        return
    for name, param in data.parameters.items():
        yield "params", path_of(name), param.value, getattr(param, "label", None)
    for col, entries in data.immutable_variables.items():
        for name, value in entries.items():
            yield col, path_of(name), value, None


@dataclasses.dataclass
class Assembled:
    """The variables of the un-mocked layers under a root, in the root's coordinates."""

    variables: dict[str, Any]
    abstract: dict[str, list[str]]  # Layer path -> its variables that are still abstract.
    skip_setup: set[Path]  # Module paths with only replaced calls: their setup must not run.


def assemble(
    root: FlaxCallLayer, *, include_replaced: bool = False, include_kept: bool = False
) -> Assembled:
    """Collects the variables of every converted layer reachable from ``root``.

    With ``include_replaced``, mocks below ``root`` contribute the abstract variables they kept
    of the layer they replaced (to infer shapes through the original code). With
    ``include_kept``, they contribute the real values they kept (``MockLayer.kept``: existing
    state, tied parameters), for a run.

    Paths are made relative to ``root``'s scope. A module from outside ``root``'s subtree (a
    shared module passed in as an attribute) is adopted by Flax under its own name when ``root``
    is applied on its own, so it is placed there.
    """
    variables: dict[str, Any] = {}
    abstract: dict[str, list[str]] = {}
    plain_paths: set[Path] = set()
    replaced_paths: set[Path] = set()
    remaps: list[tuple[Path, Path]] = [(root.info.scope_path, ())]

    def rel(path: Path) -> Path | None:
        best = None
        for src, dst in remaps:
            if path[: len(src)] == src and (best is None or len(src) > len(best[0])):
                best = (src, dst)
        return None if best is None else best[1] + path[len(best[0]) :]

    def visit(layer: FlaxCallLayer) -> None:
        if layer.info.detached:
            # A nested ``module.apply`` brings its own variables; its paths are its own.
            return
        here = rel(layer.info.scope_path)
        if here is None:
            remaps.append((layer.info.scope_path, layer.info.scope_path[-1:]))
            here = layer.info.scope_path[-1:]
        plain_paths.add(here)
        for col, path, value, _ in own_variables(layer):
            _set_in(variables.setdefault(col, {}), here + path, value)
            if isinstance(_unbox(value), jax.ShapeDtypeStruct):
                abstract.setdefault(layer.path_str, []).append("/".join((col,) + path))
        for child in layer.submodule_calls.values():
            if isinstance(child, FlaxCallLayer):
                visit(child)
            else:
                info = getattr(child, "info", None)
                original = getattr(info, "original", None)
                if original is not None and original.info.detached:
                    continue
                if info is not None and getattr(info, "scope_path", None) is not None:
                    p = rel(info.scope_path)
                    p = p if p is not None else info.scope_path[-1:]
                    replaced_paths.add(p)
                    kept = None
                    if include_replaced:
                        kept = getattr(info, "variables", None)
                    elif include_kept:
                        kept = getattr(child, "kept", None)
                    if kept:
                        for col, tree in kept.items():
                            for path, value in _record._flatten(tree).items():
                                _set_in(variables.setdefault(col, {}), p + path, value)

    visit(root)
    return Assembled(variables, abstract, replaced_paths - plain_paths)


def _unbox(value: Any) -> Any:
    return value.unbox() if isinstance(value, nn.meta.AxisMetadata) else value


def mocks_reachable(root: FlaxCallLayer) -> list[Any]:
    """Every replaced layer with an ``emit`` (a mock) that a run of ``root`` can dispatch."""
    found = []

    def visit(layer: Any) -> None:
        for child in layer.submodule_calls.values():
            if isinstance(child, FlaxCallLayer):
                visit(child)
            elif hasattr(child, "emit"):
                found.append(child)

    visit(root)
    return found


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
                and not self.walk.in_detached
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
                note_error(e, f"{node.path_str}.{node.method_name}")
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


def note_error(error: BaseException, where: str) -> None:
    """Names the innermost call an error was raised in (once), keeping its type and message."""
    if not any(n.startswith("flaxmock: raised in") for n in getattr(error, "__notes__", ())):
        error.add_note(f"flaxmock: raised in {where}")


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


def check_concrete(root: FlaxCallLayer, assembled: Assembled) -> None:
    if not assembled.abstract:
        return
    lines = [
        f"  {path}: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}"
        for path, names in assembled.abstract.items()
    ]
    raise _errors.AbstractParameterError(
        f"Cannot run {root.path_str}.{root.method_name}: these un-mocked layers still have "
        "abstract parameters (jax.ShapeDtypeStruct), which hold no values:\n"
        + "\n".join(lines)
        + "\nFix, for each: 1. mock it: flaxmock.mock(tree, where=...); 2. give it values: "
        "flaxmock.materialize(tree, key) or flaxmock.bind(tree, variables); or 3. only trace "
        "shapes: flaxmock.eval_shape(flaxmock.call, tree, *args)."
    )


def run(
    layer: FlaxCallLayer,
    args: tuple,
    kwargs: dict,
    *,
    mutable: Any = False,
    rngs: Any = None,
) -> Any:
    """Applies ``layer``'s module natively, redirecting replaced submodule calls."""
    assembled = assemble(layer, include_kept=True)
    check_concrete(layer, assembled)
    mocks = mocks_reachable(layer)
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


def iter_layers(tree: Any) -> Iterator[tuple[tuple[CallKey, ...], Any]]:
    """Yields ``(call_path, layer)`` for the root and every nested submodule call layer."""

    def go(layer: Any, path: tuple[CallKey, ...]) -> Iterator[tuple[tuple[CallKey, ...], Any]]:
        yield path, layer
        for key, child in getattr(layer, "submodule_calls", {}).items():
            yield from go(child, path + (key,))

    yield from go(tree, ())


__all__ = ["ArgsAndKwargs", "FlaxCallLayer", "InterceptedFlaxScopeData"]
