"""``Mocker``: a drop-in ``self`` for plot and analysis code, built on the mock engine.

Assigning a Flax module to an attribute of a :class:`Mocker` wraps it in a :class:`BoundMock`
(a mock that behaves like a bound module: call it as ``self.attn(x)`` in a module's method);
calling that converts the module abstractly (:func:`flaxmock.unflaxify`)
and mocks it whole (:func:`flaxmock.mock`), so its outputs and sown values are the mock engine's:
the same fill rules, the same per-signature shape cache, the same seeding. Nothing here is a
second engine.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from flaxmock._core import errors as _errors
from flaxmock._core import fill as _fill
from flaxmock._core import keys as _keys
from flaxmock._core import mockcore as _mockcore
from flaxmock._core import mockdraw as _mockdraw
from flaxmock._core import specs as _specs
from flaxmock._core import table as _table
from flaxmock._linen import call as _call
from flaxmock._linen import convert as _convert
from flaxmock._linen import mock as _mock


def _derived_seed(seed: int, name: str) -> int:
    # Stable across processes: each attribute gets its own stream, reproducible from the seed.
    return _mockdraw.stable_hash(f"{seed}:{name}")


class BoundMock(_mockcore.CallRecords):
    """A Flax module wrapped by a :class:`Mocker`: calls return random arrays of the real shapes.

    Its call records are its :class:`MockLayer`'s, in ``unittest.mock``'s words (``call_count``,
    ``assert_called_once_with``, ``reset_mock``...).

    Attributes:
      module: The wrapped (unbound) Flax module, never modified.
      name: The attribute name it was assigned to.
      layer: The :class:`MockLayer` standing for the module once it was first called, else None.
    """

    def __init__(self, module: nn.Module, name: str, seed: int, fill: Any, out: Any = None):
        self.module = module
        self.name = name
        self.seed = seed
        self.fill = fill
        self.out = out
        self.layer: _mock.MockLayer | None = None
        self._no_calls = _mockcore.MockState()

    def _layer_for(self, args: tuple, kwargs: dict) -> _mock.MockLayer:
        if self.layer is None and self.out is not None:
            # With an explicit output spec the module is never traced: its output shape may
            # depend on values, which no trace can see.
            self.layer = _mock.explicit_mock(
                self.module, "__call__", self.out, seed=self.seed, fill=self.fill
            )
        elif self.layer is None:
            specs = _specs.specs_of((args, kwargs))
            tree = _convert.unflaxify(self.module, *specs[0], **specs[1])
            self.layer = _mock.mock_layer(tree, seed=self.seed, fill=self.fill)
        return self.layer

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Random output with the structure, shapes and dtypes of ``module(*args, **kwargs)``."""
        return _call.call(self._layer_for(args, kwargs), *args, **kwargs)

    def intermediates(
        self,
        *args: Any,
        collections: tuple[str, ...] | list[str] = ("intermediates", "plots"),
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Random values for everything the module sows into ``collections``.

        The nested structure (Flax's tuples included) is that of
        ``module.apply(..., mutable=list(collections))[1]``, so the result can be passed to a
        ``plot()`` written against real output.
        """
        layer = self._layer_for(args, kwargs)
        _, sown = _call.call(layer, *args, mutable=list(collections), **kwargs)
        return sown

    @property
    def mock_state(self) -> _mockcore.MockState:  # type: ignore[override]
        """The :class:`MockState` of the module's mock (an empty one before the first call)."""
        return self._no_calls if self.layer is None else self.layer.mock_state

    def _count(self) -> int:
        return 0 if self.layer is None else self.layer.call_count

    def _reset_count(self) -> None:
        if self.layer is not None:
            self.layer._reset_count()

    def _label(self) -> str:
        return f"Mocker.{self.name}"

    def __repr__(self) -> str:
        out = "not called yet"
        if self.layer is not None:
            state = self.layer.mock_state
            latest = state.last_out_spec
            out = _table.describe_specs(latest if latest is not None else self.layer.info.out_spec)
        return f"BoundMock({type(self.module).__name__}, name={self.name!r}, out={out})"


class Mocker:
    """A stand-in ``self``: modules assigned to it return random arrays of their real shapes.

    Assigning a ``flax.linen.Module`` to an attribute wraps it in a :class:`BoundMock`; other
    values (strings, ints, arrays, functions) are stored unchanged. Each wrapped module draws from
    its own stream, derived from ``seed`` and its attribute name, and every call draws anew.
    Assigning an attribute again replaces it (a module gets a new mock with a fresh call
    history), so a notebook cell that sets up ``self`` can be run again.

    Args:
      seed: Seed of all random values.
      fill: The fill policy (see :func:`flaxmock.mock`).

    Examples:
      >>> import jax.numpy as jnp, flax.linen as nn, flaxmock
      >>> self = flaxmock.Mocker(seed=0)
      >>> self.attn = nn.SelfAttention(num_heads=2)
      >>> self.attn(jnp.zeros((1, 16, 32))).shape
      (1, 16, 32)
      >>> self.attn.call_count
      1
    """

    def __init__(self, seed: int = 0, fill: Any = None):
        _keys.check_seed(seed, where="Mocker")
        _fill.check_fillable({}, fill)  # An unknown fill policy fails here, not at a call.
        object.__setattr__(self, "_seed", seed)
        object.__setattr__(self, "_fill", fill)
        object.__setattr__(self, "_attrs", {})

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, nn.Module):
            value = BoundMock(value, name, _derived_seed(self._seed, name), self._fill)
        self._attrs[name] = value

    def __getattr__(self, name: str) -> Any:
        attrs = object.__getattribute__(self, "_attrs")
        if name in attrs:
            return attrs[name]
        raise _errors.MockAttributeError(
            f"Mocker has no attribute {name!r}; assign it first "
            f"(self.{name} = ..., or self.mock({name!r}, module, out=...))."
        )

    def __delattr__(self, name: str) -> None:
        if name not in self._attrs:
            raise _errors.MockAttributeError(f"Mocker has no attribute {name!r} to delete.")
        del self._attrs[name]

    def mock(self, name: str, module: nn.Module, *, out: Any = None) -> BoundMock:
        """Assigns ``module`` under ``name`` with an explicit output spec ``out``.

        For modules whose output shape depends on values (``jnp.nonzero`` without ``size=``).

        Raises:
          InvalidArgumentError: ``module`` is not a ``flax.linen.Module``.
        """
        if not isinstance(module, nn.Module):
            raise _errors.InvalidArgumentError(
                f"Mocker.mock({name!r}, module): module must be a flax.linen.Module, got "
                f"{type(module).__name__}."
            )
        wrapped = BoundMock(module, name, _derived_seed(self._seed, name), self._fill, out)
        self._attrs[name] = wrapped
        return wrapped

    def param(self, name: str, init_fn: Any, *init_args: Any, **init_kwargs: Any) -> Any:
        """The mocked analogue of ``nn.Module.param``: random values of ``init_fn``'s shape.

        ``init_fn`` is called as Flax calls it, ``init_fn(key, *init_args, **init_kwargs)``,
        but only abstractly; ``nn.Partitioned`` boxes are unwrapped first. The value is stored
        as attribute ``name`` and returned.

        Examples:
          >>> import flax.linen as nn, flaxmock
          >>> self = flaxmock.Mocker()
          >>> self.param("w", nn.initializers.lecun_normal(), (3, 4)).shape
          (3, 4)
        """
        spec = jax.eval_shape(lambda k: init_fn(k, *init_args, **init_kwargs), jax.random.key(0))
        spec = nn.meta.unbox(spec)
        key = jax.random.key(_derived_seed(self._seed, f"param:{name}"))
        value = _fill.fill_tree(key, spec, self._fill, path=f"Mocker.param({name!r})")
        setattr(self, name, value)
        return value
