"""The state a mocked call writes: the part the real call computes without the parameters.

A mock replaces a module's computation, not its state. When the replaced call writes state
(a decode cache and its index, BatchNorm statistics in training mode, zero caches created by an
``init_cache`` method, a loss variable created in ``__call__``), some of the new values do not
depend on the module's parameters at all: ``cache_index + 1``, ``jnp.zeros(shape)``, running
statistics of the call's own input. Those the mock can give exactly as the real call does,
without computing anything else: :func:`known_part` traces the real call once (its jaxpr), marks
the parameters unknown, and keeps the computations that need only known inputs (JAX's partial
evaluation, which the linearisation of ``jax.jvp`` uses too). What needs a parameter is left to
the front end's rule for state (kept as it was; drawn once through
``flaxmock._core.mockdraw.draw_call`` when it has no value yet).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
from jax._src.interpreters import partial_eval as _pe
from jax.extend import core as _jcore


@dataclasses.dataclass(frozen=True)
class KnownPart:
    """The outputs of a function that its known inputs alone determine, compiled once.

    Attributes:
      positions: For each output of the function, its index among the computed outputs, or
        None when it needs an unknown input.
      run: The compiled computation: known inputs in, the computed outputs out.
    """

    positions: tuple[int | None, ...]
    run: Callable[..., Any] | None

    def __call__(self, known_inputs: Sequence[Any]) -> list[Any]:
        """Each output's value (None where it needs an unknown input)."""
        if self.run is None:
            return [None] * len(self.positions)
        computed = self.run(*known_inputs)
        return [None if i is None else computed[i] for i in self.positions]


def known_part(fun: Callable[..., Any], specs: Sequence[Any], unknown: Sequence[bool]) -> KnownPart:
    """What of ``fun(*inputs)`` (a list of arrays) can be computed with the unknown inputs absent.

    Args:
      fun: A function of array leaves returning a list of arrays; traced once here.
      specs: The ``jax.ShapeDtypeStruct`` of each input.
      unknown: For each input, whether it is unknown (a parameter the mock holds no value of).

    Returns:
      The :class:`KnownPart`; call it with the known inputs, in order.
    """
    closed = jax.make_jaxpr(lambda *leaves: list(fun(*leaves)))(*specs)
    known, _, out_unknowns, _ = _pe.partial_eval_jaxpr_nounits(closed, list(unknown), False)
    positions: list[int | None] = []
    for is_unknown in out_unknowns:
        positions.append(None if is_unknown else sum(p is not None for p in positions))
    n_known = sum(p is not None for p in positions)
    if not n_known:
        return KnownPart(tuple(positions), None)
    # The known jaxpr also returns residuals (known values the unknown part would need, such
    # as a normalised input): not computed. Every input is kept (instantiate), in order.
    used = [True] * n_known + [False] * (len(known.jaxpr.outvars) - n_known)
    pruned, _ = _pe.dce_jaxpr(known.jaxpr, used, instantiate=True)
    run = jax.jit(_jcore.jaxpr_as_fun(_jcore.ClosedJaxpr(pruned, known.consts)))
    return KnownPart(tuple(positions), run)
