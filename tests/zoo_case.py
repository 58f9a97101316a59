"""The record of one linen zoo case, shared by ``zoo.py`` and the ``zoo_wild_*`` modules."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn


@dataclasses.dataclass(frozen=True)
class ZooCase:
    """A model and the arguments of one call.

    Attributes:
      id: Readable test id.
      make: Builds the (unbound) module.
      args: Positional arguments (concrete arrays or Python values).
      kwargs: Keyword arguments (Python values stay static).
      method: ``method=`` for init and apply (a name or a function), or None.
      mutable: ``mutable=`` for apply.
      rngs: Names of the rng streams apply needs besides ``params``.
      init_kwargs: Extra keyword arguments for init only.
      notes: What the case exercises.
      tags: Labels that :func:`cases` filters on.
    """

    id: str
    make: Callable[[], nn.Module]
    args: tuple
    kwargs: dict = dataclasses.field(default_factory=dict)
    method: Any = None
    mutable: Any = False
    rngs: tuple[str, ...] = ()
    init_kwargs: dict = dataclasses.field(default_factory=dict)
    notes: str = ""
    tags: tuple[str, ...] = ()
