"""The converted layer, and the protocol of the layers that replace one.

A converted tree is a tree of :class:`FlaxCallLayer`, penzai's ``InterceptedFlaxModuleMethod``
with a :class:`CallInfo` attached. How it runs is ``flaxmock._linen.dispatch``'s business; which
variables a run gets is ``flaxmock._linen.assemble``'s.

Any entry of ``submodule_calls`` may be replaced by another penzai layer (tree surgery). The
runtime knows two kinds of replacement:

* a :class:`ReplacementLayer` (a ``MockLayer``; a new kind subclasses it): the runtime asks it
  which call it replaces, which variables it keeps, runs it in place with an
  :class:`Invocation` (the bound Flax module, its count for the run, the root's
  ``random_streams`` and side inputs) and lists it in summaries with its own note;
* any other penzai layer: called the penzai way, ``layer(ArgsAndKwargs(...),
  random_streams=..., **side_inputs)``, with what was given to the root layer's ``__call__``;
  the module it replaces is named by its key in the parent's ``submodule_calls``.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
from flax.core import scope as flax_scope
from penzai import pz
from penzai.toolshed.unflaxify import (
    ArgsAndKwargs,
    InterceptedFlaxModuleMethod,
)

from flaxmock._core import table as _table
from flaxmock._linen import record as _record
from flaxmock._linen import render as _render

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
      nested: The call runs inside a nested ``module.apply``, whose variables are its own.
      steps: For a scanned or vmapped body, the number of steps (the leading axis of its
        stacked variables), when it has variables.
      passthrough: For the root: ``(collection, name)`` of the variables it holds that the
        call never reads (given with ``variables=`` but unused by ``method``). They are passed
        on to Flax when they hold values, and no layer owns them: ``materialize`` and ``bind``
        do not need them, and summaries do not count them.
      out_given: ``out_spec`` was given (``unflaxify(out=...)``), not traced.
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
    nested: bool = False
    steps: int | None = None
    passthrough: frozenset[tuple[str, str]] = frozenset()
    out_given: bool = False

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
    ``flaxmock._linen.dispatch``. Its variables are held as penzai's ``unflaxify`` holds them:
    with real values, one ``pz.Parameter`` per Flax parameter and one ``pz.StateVariable`` per
    other Flax variable, each shared by every layer (and every mock) that uses it, so
    ``pz.unbind_params`` finds each parameter once and a tied weight gets one gradient; with
    abstract values (``jax.ShapeDtypeStruct``), frozen ``pz.ParameterValue`` and
    ``pz.StateVariableValue`` leaves, so an abstract tree is a plain pytree.

    Attributes:
      module: The unbound Flax module.
      method_name: The name of the called method.
      scope_data: The variables this call's module owns (not those of its submodule calls'
        layers), or None: ``parameters`` (``{name: parameter}``) and ``variables``
        (``{collection: {name: state variable}}``), names being paths relative to the module
        joined with ``/``.
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
          random_streams: Optional penzai random streams, one per rng name. Each gives the Flax
            call one key, and the streams are passed on to penzai layers inserted in the tree.
          **side_inputs: Passed on to penzai layers inserted in the tree (penzai's layer
            convention); Flax code does not see them.

        Unlike penzai's ``InterceptedFlaxModuleMethod``, the layer's ``pz.StateVariable``s are
        not updated: like ``module.apply`` (and :func:`flaxmock.call`), a call returns the
        updated collections and changes nothing in the tree.

        Returns:
          The output, or ``(output, collections)`` if the tree was converted with ``mutable``.
        """
        # The dispatcher runs layers, and needs this class to tell them from replacements: a
        # real import cycle, broken here.
        from flaxmock._linen import dispatch

        rngs = None
        if random_streams:
            rngs = {k: s.next_key() for k, s in random_streams.items()}
        return dispatch.run(
            self,
            args_and_kwargs.args,
            args_and_kwargs.kwargs,
            mutable=self.info.mutable,
            rngs=rngs,
            random_streams=random_streams,
            side_inputs=side_inputs,
        )

    @property
    def path_str(self) -> str:
        return self.info.path_str

    def __repr__(self) -> str:
        # One short line: the whole tree is treescope's (or ``str(flaxmock.summary(tree))``).
        return _render.short_repr(self)

    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        return _render.render_call_layer(self, path, subtree_renderer)


@dataclasses.dataclass(frozen=True)
class ReplacedCall:
    """The converted call a :class:`ReplacementLayer` stands for.

    Attributes:
      module: The unbound Flax module whose call is replaced.
      method_name: The name of the replaced method.
      info: The recorded call, as the replacement answers it (its ``out_spec`` is the one the
        replacement returns).
    """

    module: nn.Module
    method_name: str
    info: CallInfo

    @property
    def label(self) -> str:
        """``blocks_0/attn.__call__``: the call's path and method, as messages name it."""
        return f"{self.info.path_str}.{self.method_name}"


@dataclasses.dataclass(frozen=True)
class Invocation:
    """How the runtime runs a :class:`ReplacementLayer` in place of one Flax call.

    Attributes:
      module: The bound Flax module of the replaced call, inside the enclosing layer's
        ``apply``: the replacement writes what the call sows into its scope. None when the
        replacement is called on its own.
      collections: With ``module`` None, the dict that receives what the call sows, as
        ``module.apply(..., mutable=...)[1]`` would hold it; None to drop it.
      mutable: The collections to keep in ``collections`` (as ``module.apply``'s ``mutable``).
      count: The call count reserved for this run (:meth:`ReplacementLayer.reserve_count`), or
        None to reserve one now.
      index: How often the replacement ran before in the same run.
      fold: Extra data for the random key: a per-step key inside a lifted body, or None.
      random_streams: The ``random_streams`` given to the root layer's ``__call__``, or None.
      side_inputs: The side inputs given to the root layer's ``__call__``.
    """

    module: nn.Module | None = None
    collections: dict[str, Any] | None = None
    mutable: Any = False
    count: Any = None
    index: int = 0
    fold: Any = None
    random_streams: dict[str, pz.RandomStream] | None = None
    side_inputs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def collects(self, entry: _record.SownEntry) -> bool:
        """Whether this run keeps what the replaced call writes for ``entry``.

        It does when the entry's collection is mutable (the enclosing ``apply``'s ``mutable``,
        or ``mutable`` here for a replacement called on its own) and, for state (a value
        written whole: ``batch_stats``, a cache), when that state does not exist yet: existing
        state keeps its value. A replacement draws only what is collected.
        """
        if self.module is not None:
            scope = self.module.scope
            if scope is None or not scope.is_mutable_collection(entry.collection):
                return False
            return entry.append or _existing(scope, entry) is None
        return (
            self.collections is not None
            and self.mutable is not False
            and flax_scope.in_filter(self.mutable, entry.collection)
        )

    def write_sown(self, sown: list[tuple[_record.SownEntry, Any]]) -> None:
        """Writes a replaced call's sown values where ``sow`` would have put them."""
        if self.module is not None:
            _write_into_scope(self.module, sown)
        elif self.collections is not None and self.mutable is not False:
            for entry, value in sown:
                if not flax_scope.in_filter(self.mutable, entry.collection):
                    continue
                node = self.collections.setdefault(entry.collection, {})
                for k in entry.path[:-1]:
                    node = node.setdefault(k, {})
                node[entry.path[-1]] = tuple(value) if entry.append else value


def _existing(scope: Any, entry: _record.SownEntry) -> Any:
    """The value at ``entry``'s collection and path in ``scope``, or None."""
    existing: Any = scope.variables().get(entry.collection, {})
    for k in entry.path:
        existing = existing.get(k) if isinstance(existing, Mapping) else None
    return existing


def _write_into_scope(module: nn.Module, sown: list[tuple[_record.SownEntry, Any]]) -> None:
    scope = module.scope
    if scope is None:
        return
    for entry, value in sown:
        if not scope.is_mutable_collection(entry.collection):
            continue
        existing = _existing(scope, entry)
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


class ReplacementLayer(pz.nn.Layer):
    """The protocol between the linen runtime and a layer that replaces a converted call.

    A subclass is a ``@pz.pytree_dataclass`` that drops into ``submodule_calls`` (or is the root
    of a tree) in place of a :class:`FlaxCallLayer`; ``flaxmock.MockLayer`` is one. The runtime
    (``dispatch``, ``assemble``, ``call``, ``summary``) uses only the methods below.
    """

    @abc.abstractmethod
    def replaced(self) -> ReplacedCall:
        """The call this layer replaces: its module, method and recorded :class:`CallInfo`."""

    @abc.abstractmethod
    def run_replaced(self, args_and_kwargs: ArgsAndKwargs, invocation: Invocation) -> Any:
        """Runs in place of the call with these arguments and returns its output.

        What the replaced call sows goes to ``invocation.write_sown``.
        """

    def kept_variables(self) -> dict[str, Any]:
        """Variables (``{collection: nested dict}``) this layer keeps for a run of the tree.

        The replaced module's existing state, or parameters that real layers read (weight
        tying); placed at the replaced module's scope path.
        """
        return {}

    def abstract_variables(self) -> dict[str, Any]:
        """Abstract variables of the replaced call's subtree, to infer shapes through it."""
        return {}

    def reserve_count(self, inputs: Any = None) -> Any:
        """Reserves this layer's call count for one run (called once per run, before it).

        ``inputs`` are the run's arguments ``(args, kwargs)``, or None.
        """
        return None

    def release_count(self, count: Any) -> None:
        """Gives back a count reserved for a run that never reached this layer."""

    def summary_note(self) -> str:
        """The note of this layer's row in ``flaxmock.summary``."""
        return f"replaced by {type(self).__name__}"

    def short_label(self) -> str:
        """What this layer is, in a few words, as tree renderings label it."""
        return f"{type(self).__name__} replacing {type(self.replaced().module).__name__}"

    def summary_line(self) -> str:
        """``Dense at blocks_0/mlp.__call__ -> f32[2,8] (mocked)``: this layer in one line."""
        replaced = self.replaced()
        return (
            f"{type(replaced.module).__name__} at {replaced.label} -> "
            f"{_table.describe_specs(replaced.info.out_spec)} ({self.summary_note()})"
        )

    def __call__(
        self,
        args_and_kwargs: ArgsAndKwargs,
        /,
        random_streams: dict[str, pz.RandomStream] | None = None,
        **side_inputs: Any,
    ) -> Any:
        """Runs this layer on its own, outside a run of the tree (sown values are dropped)."""
        return self.run_replaced(
            args_and_kwargs, Invocation(random_streams=random_streams, side_inputs=side_inputs)
        )

    def __repr__(self) -> str:
        return _render.short_repr(self)

    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        # A replacement stands out in a large tree: collapsed, coloured, with a one-line label.
        return _render.render_replacement(self, path, subtree_renderer)


def replaced_path(parent: FlaxCallLayer, key: CallKey, child: Any) -> Path:
    """The scope path of the module whose call ``parent.submodule_calls[key]`` replaces.

    A :class:`ReplacementLayer` says it; for any other layer it is read from the key: the
    parent's path and the called module's name. (A shared module called from another module
    than its owner lives elsewhere; then its ``setup`` is not skipped.)
    """
    if isinstance(child, FlaxCallLayer):
        return child.info.scope_path
    if isinstance(child, ReplacementLayer):
        return child.replaced().info.scope_path
    # A module under a pushed scope is keyed by its path below the parent's (``layers/0``).
    return parent.info.scope_path + tuple(key[1].rsplit(".", 1)[0].split("/"))


def iter_layers(tree: Any) -> Iterator[tuple[tuple[CallKey, ...], Any]]:
    """Yields ``(call_path, layer)`` for the root and every nested submodule call layer."""

    def go(layer: Any, path: tuple[CallKey, ...]) -> Iterator[tuple[tuple[CallKey, ...], Any]]:
        yield path, layer
        if isinstance(layer, FlaxCallLayer):
            for key, child in layer.submodule_calls.items():
                yield from go(child, path + (key,))

    yield from go(tree, ())
