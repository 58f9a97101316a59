"""The converted layer: one Flax module method call as a penzai layer, with what was recorded.

A converted tree is a tree of :class:`FlaxCallLayer`, penzai's ``InterceptedFlaxModuleMethod``
with a :class:`CallInfo` attached. How it runs is ``flaxmock._linen.dispatch``'s business; which
variables a run gets is ``flaxmock._linen.assemble``'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import jax
from penzai import pz
from penzai.toolshed.unflaxify import (
    ArgsAndKwargs,
    InterceptedFlaxModuleMethod,
)

from flaxmock._linen import record as _record

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
    ``flaxmock._linen.dispatch``. Its parameters are frozen ``pz.ParameterValue`` leaves holding
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
        )

    @property
    def path_str(self) -> str:
        return self.info.path_str


def iter_layers(tree: Any) -> Iterator[tuple[tuple[CallKey, ...], Any]]:
    """Yields ``(call_path, layer)`` for the root and every nested submodule call layer."""

    def go(layer: Any, path: tuple[CallKey, ...]) -> Iterator[tuple[tuple[CallKey, ...], Any]]:
        yield path, layer
        for key, child in getattr(layer, "submodule_calls", {}).items():
            yield from go(child, path + (key,))

    yield from go(tree, ())
