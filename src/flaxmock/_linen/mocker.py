"""``Mocker``: a drop-in ``self`` for plot and analysis code, built on the mock engine.

Assigning a Flax module (or a list, tuple or dict of modules) to an attribute of a
:class:`Mocker` wraps it in a :class:`BoundMock` (a mock that behaves like a bound module: call
it as ``self.attn(x)`` or ``self.vae.generate(key, z)`` in a module's method). Each method of
the module is a :class:`MethodMock`; calling one converts the module's call of that method
abstractly (:func:`flaxmock.unflaxify` with ``method=``) and mocks it whole
(:func:`flaxmock.mock`), so its outputs and sown values are the mock engine's: the same fill
rules, the same per-signature shape cache, the same seeding, and only what is collected is
drawn. Nothing here is a second engine. The :class:`Mocker` itself answers what plot code asks
of a bound module's ``self`` (``sow``, ``make_rng``, ``param``, ``variable``, ``variables``...),
and :func:`intermediates` runs the same plot code on a mock and on a real bound module.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
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


#: What ``nn.Module`` itself defines: not methods of a model that a mock answers.
_MODULE_API = frozenset(dir(nn.Module))


def mocked_methods(cls: type) -> frozenset[str]:
    """The methods of a Flax module class that a :class:`BoundMock` answers with random output.

    ``__call__`` and every function its classes define below ``nn.Module`` (what
    ``module.apply(..., method=...)`` accepts), except ``setup``, dunder methods, dataclass
    fields that hold a function, and ``nn.Module``'s own API.
    """
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    names = set()
    for klass in cls.__mro__:
        if klass is nn.Module or not issubclass(klass, nn.Module):
            continue
        for name, value in vars(klass).items():
            if name == "__call__" or (
                inspect.isfunction(value)
                and not name.startswith("__")
                and name not in fields
                and name != "setup"
                and name not in _MODULE_API
            ):
                names.add(name)
    return frozenset(names)


class MethodMock(_mockcore.CallRecords):
    """One method of a module held by a :class:`Mocker`: random output of its real specs.

    ``self.vae.generate`` is one; it has its own output specs (inferred once per input
    signature), its own random stream (the method's name is folded into the key) and its own
    call records, as a ``unittest.mock`` child does (``self.vae.generate.call_count``).

    Attributes:
      owner: The :class:`BoundMock` it belongs to.
      method: The method's name.
      layer: The :class:`MockLayer` standing for the method's call once it was first called,
        else None.
    """

    def __init__(self, owner: BoundMock, method: str, out: Any = None):
        self.owner = owner
        self.method = method
        self.out = out
        self.layer: _mock.MockLayer | None = None
        self._no_calls = _mockcore.MockState()

    def _layer_for(self, args: tuple, kwargs: dict) -> _mock.MockLayer:
        if self.layer is not None:
            return self.layer
        owner = self.owner
        if self.out is not None:
            # With an explicit output spec the module is never traced: its output shape may
            # depend on values, which no trace can see.
            self.layer = _mock.explicit_mock(
                owner.module, self.method, self.out, seed=owner.seed, fill=owner.fill
            )
        else:
            specs = _specs.specs_of((args, kwargs))
            method = None if self.method == "__call__" else self.method
            tree = _convert.unflaxify(owner.module, *specs[0], method=method, **specs[1])
            self.layer = _mock.mock_layer(tree, seed=owner.seed, fill=owner.fill)
        return self.layer

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Random output with the structure, shapes and dtypes of the real method's.

        Only the output is drawn: what the method sows is drawn when it is collected
        (:meth:`intermediates`).
        """
        return _call.call(self._layer_for(args, kwargs), *args, **kwargs)

    def intermediates(
        self,
        *args: Any,
        collections: tuple[str, ...] | list[str] = ("intermediates", "plots"),
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Random values for everything the method sows into ``collections``.

        The nested structure (Flax's tuples included) is that of ``module.apply(...,
        method=..., mutable=list(collections))[1]``, so the result can be passed to plot code
        written against real output (see :func:`flaxmock.intermediates`).
        """
        layer = self._layer_for(args, kwargs)
        _, sown = _call.call(layer, *args, mutable=list(collections), **kwargs)
        return sown

    @property
    def mock_state(self) -> _mockcore.MockState:  # type: ignore[override]
        """The :class:`MockState` of the method's mock (an empty one before the first call)."""
        return self._no_calls if self.layer is None else self.layer.mock_state

    def _count(self) -> int:
        return 0 if self.layer is None else self.layer.call_count

    def _reset_count(self) -> None:
        if self.layer is not None:
            self.layer._reset_count()

    def _label(self) -> str:
        suffix = "" if self.method == "__call__" else f".{self.method}"
        return f"Mocker.{self.owner.name}{suffix}"

    def describe_out(self) -> str:
        """The latest output's specs in short (``f32[2,4]``), or ``not called yet``."""
        if self.layer is None:
            return "not called yet"
        latest = self.layer.mock_state.last_out_spec
        return _table.describe_specs(latest if latest is not None else self.layer.info.out_spec)

    def __repr__(self) -> str:
        return f"MethodMock({self._label()}, out={self.describe_out()})"


class BoundMock(_mockcore.CallRecords):
    """A Flax module held by a :class:`Mocker`: every method returns random arrays.

    It answers every method of the module's class (``self.vae(x)``, ``self.vae.encode(x)``,
    ``self.cell.initialize_carry(key, shape)``; not ``setup``, dunder methods or ``nn.Module``'s
    own API) with random output
    of that method's real structure, shapes and dtypes, each method a :class:`MethodMock` with
    its own cached specs and call records. Other attributes (dataclass fields, properties,
    constants) are read from the real module; a submodule there is a :class:`BoundMock` too.
    Attributes that ``setup()`` defines are read as a bound module has them (``setup()`` run
    abstractly): submodules as :class:`BoundMock`, arrays as random values of their specs.
    Its own call records are those of ``__call__``, in ``unittest.mock``'s words
    (``call_count``, ``assert_called_once_with``...); ``reset_mock`` resets every method's.

    Attributes:
      module: The wrapped (unbound) Flax module, never modified.
      name: The attribute name it was assigned to (``blocks_0`` for the first of a list).
      seed: The seed of its random streams.
      fill: Its fill policy.
    """

    def __init__(self, module: nn.Module, name: str, seed: int, fill: Any, out: Any = None):
        self.module = module
        self.name = name
        self.seed = seed
        self.fill = fill
        self._methods: dict[str, MethodMock] = {"__call__": MethodMock(self, "__call__", out)}
        self._mockable = mocked_methods(type(module))
        self._attributes: dict[str, Any] = {}

    @property
    def layer(self) -> _mock.MockLayer | None:
        """The :class:`MockLayer` of ``__call__`` once it was first called, else None."""
        return self._methods["__call__"].layer

    def method(self, name: str) -> MethodMock:
        """The :class:`MethodMock` of method ``name`` (``self.vae.method("encode")``).

        Raises:
          MockAttributeError: the module's class has no such method.
        """
        if name not in self._methods:
            if name not in self._mockable:
                raise _errors.MockAttributeError(
                    f"Mocker.{self.name}: {type(self.module).__name__} has no method {name!r} "
                    f"to mock (its methods: {_errors.cut_list(sorted(self._mockable), 8)})."
                )
            self._methods[name] = MethodMock(self, name)
        return self._methods[name]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Random output with the structure, shapes and dtypes of ``module(*args, **kwargs)``."""
        return self._methods["__call__"](*args, **kwargs)

    def intermediates(
        self,
        *args: Any,
        collections: tuple[str, ...] | list[str] = ("intermediates", "plots"),
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Random values for everything ``module(*args, **kwargs)`` sows into ``collections``.

        The nested structure (Flax's tuples included) is that of
        ``module.apply(..., mutable=list(collections))[1]``, so the result can be passed to a
        ``plot()`` written against real output; :func:`flaxmock.intermediates` gives the same
        for a real bound module.
        """
        return self._methods["__call__"].intermediates(*args, collections=collections, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or "_methods" not in vars(self):
            raise AttributeError(name)
        if name in self._mockable:
            return self.method(name)
        if name in self._attributes:
            return self._attributes[name]
        try:
            value = getattr(self.module, name)
        except AttributeError:
            value = self._setup_attribute(name)
        wrapped = wrap(value, f"{self.name}.{name}", self.seed, self.fill)
        self._attributes[name] = wrapped
        return wrapped

    def _setup_attribute(self, name: str) -> Any:
        """What ``setup()`` assigns to ``name``: submodules unbound, arrays random.

        ``setup()`` runs only in a bound module: it is run abstractly (``jax.eval_shape`` of
        ``init``), so no parameter is allocated. A submodule comes back unbound (to be wrapped
        as a mock of its own); an array computed from the configuration alone (``jnp.arange``,
        a rotary table) comes back with its real value; one that depends on a parameter or a
        key (a parameter made in ``setup()``) as random values of its spec, drawn with this
        mock's fill from its own stream.
        """
        found: dict[str, Any] = {}

        def read(bound: nn.Module) -> None:
            # Constants that setup() computes from the configuration alone come out concrete
            # (their real values); what depends on a parameter or a key stays abstract.
            with jax.ensure_compile_time_eval():
                value = getattr(bound, name)
            # A variable (a parameter made in setup()) is drawn even when its initializer
            # needs no key (zeros) and so came out concrete: mocks never show init values.
            variables = {id(leaf) for leaf in jax.tree.leaves(nn.meta.unbox(bound.variables))}
            found["value"] = _detached(nn.meta.unbox(value), variables)

        try:
            jax.eval_shape(lambda key: self.module.init(key, method=read), jax.random.key(0))
        except AttributeError:
            found.clear()
        except Exception as error:  # noqa: BLE001 (setup() failed abstractly: say so below)
            first_line = (str(error).splitlines() or [""])[0]
            module = type(self.module).__name__
            raise _errors.MockAttributeError(
                f"Mocker.{self.name}: reading {name!r} runs {module}.setup(), which failed "
                f"when run abstractly: {type(error).__name__}: {first_line} Fix: assign that "
                f"attribute to the Mocker itself (self.{name} = ...)."
            ) from error
        if "value" not in found:
            raise _errors.MockAttributeError(
                f"Mocker.{self.name}: {type(self.module).__name__} has no attribute {name!r}, "
                "neither as a field, a method nor after setup(). Fix: check the name "
                f"(its methods: {_errors.cut_list(sorted(self._mockable), 8)})."
            )
        value = found["value"]
        key = jax.random.key(_derived_seed(self.seed, f"setup:{self.name}.{name}"))
        specs = [x for x in jax.tree.leaves(value) if isinstance(x, jax.ShapeDtypeStruct)]
        if not specs:
            return value
        drawn = iter(_fill.fill_tree(key, specs, self.fill, path=f"Mocker.{self.name}.{name}"))
        return jax.tree.map(
            lambda x: next(drawn) if isinstance(x, jax.ShapeDtypeStruct) else x, value
        )

    @property
    def mock_state(self) -> _mockcore.MockState:  # type: ignore[override]
        """The :class:`MockState` of ``__call__``'s mock (an empty one before the first call)."""
        return self._methods["__call__"].mock_state

    def _count(self) -> int:
        return self._methods["__call__"]._count()

    def _reset_count(self) -> None:
        self._methods["__call__"]._reset_count()

    def reset_mock(self) -> None:
        """Forgets every call of every method, as ``unittest.mock`` resets its children."""
        for method in self._methods.values():
            method.reset_mock()

    def _label(self) -> str:
        return f"Mocker.{self.name}"

    def __repr__(self) -> str:
        out = self._methods["__call__"].describe_out()
        return f"BoundMock({type(self.module).__name__}, name={self.name!r}, out={out})"


def _holds_module(value: Any) -> bool:
    if isinstance(value, nn.Module):
        return True
    if isinstance(value, list | tuple):
        return any(_holds_module(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_module(v) for v in value.values())
    return False


def _detached(value: Any, variables: set[int]) -> Any:
    """``value`` read inside an abstract ``init``: modules unbound, arrays that are variables
    (ids in ``variables``) or depend on one or on a key (tracers) as their specs."""
    if isinstance(value, nn.Module):
        return value.clone(parent=None)
    if isinstance(value, jax.core.Tracer) or (
        isinstance(value, jax.Array) and id(value) in variables
    ):
        return jax.ShapeDtypeStruct(value.shape, value.dtype)
    if isinstance(value, dict):
        return {k: _detached(v, variables) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_detached(v, variables) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    return value


def wrap(value: Any, name: str, seed: int, fill: Any) -> Any:
    """``value`` with every Flax module in it (lists, tuples, dicts, nested) a :class:`BoundMock`.

    A module in a container is named as Flax names it (``blocks_0``, ``experts_gate``). A value
    holding no module is returned as it is; a container holding one is copied, never changed.
    """
    if not _holds_module(value):
        return value
    if isinstance(value, nn.Module):
        return BoundMock(value, name, _derived_seed(seed, name), fill)
    if isinstance(value, dict):
        return {k: wrap(v, f"{name}_{k}", seed, fill) for k, v in value.items()}
    items = [wrap(v, f"{name}_{i}", seed, fill) for i, v in enumerate(value)]
    if isinstance(value, list):
        return items
    if hasattr(value, "_fields"):  # A namedtuple.
        return type(value)(*items)
    return type(value)(items)


class MockerVariable:
    """A variable of a :class:`Mocker`, as :meth:`Mocker.variable` returns it.

    Read and written as ``.value``, as Flax's ``Variable``.
    """

    def __init__(self, owner: Mocker, collection: str, name: str):
        self.owner = owner
        self.collection = collection
        self.name = name

    @property
    def value(self) -> Any:
        """The variable's value (assign to it to write it)."""
        return self.owner._variables[self.collection][self.name]

    @value.setter
    def value(self, value: Any) -> None:
        self.owner.put_variable(self.collection, self.name, value)

    def __repr__(self) -> str:
        return f"MockerVariable({self.collection}/{self.name})"


def _sow_reduce(xs: Any, x: Any) -> Any:
    return (*xs, x)


def _sow_init() -> tuple:
    return ()


class Mocker:
    """A stand-in ``self``: modules assigned to it return random arrays of their real shapes.

    Assigning a ``flax.linen.Module`` (or a list, tuple or dict of them, nested too) to an
    attribute wraps it in a :class:`BoundMock`, which answers every method of the module;
    other values (strings, ints, arrays, functions) are stored unchanged. Each wrapped module
    draws from its own stream, derived from ``seed`` and its attribute name, and every call
    draws anew. Assigning an attribute again replaces it (a module gets a new mock with a fresh
    call history, even if the old one has recorded calls), so a notebook cell that sets up
    ``self`` can be run again.

    The Mocker answers what a method of a bound module asks of ``self``, with the semantics of
    ``module.apply`` with every collection but ``params`` mutable: :meth:`sow` (what is sown
    can be read back from :attr:`variables`), :meth:`make_rng`, :meth:`param`,
    :meth:`variable`, :meth:`put_variable`, :meth:`get_variable`, :meth:`has_variable`,
    :meth:`is_initializing` (False), :meth:`is_mutable_collection`, :meth:`has_rng`.

    Args:
      seed: Seed of all random values.
      fill: The fill policy (see :func:`flaxmock.mock`).

    Examples:
      >>> import jax.numpy as jnp, flax.linen as nn, flaxmock
      >>> self = flaxmock.Mocker(seed=0)
      >>> self.attn = nn.SelfAttention(num_heads=2)
      >>> self.attn(jnp.zeros((1, 16, 32))).shape
      (1, 16, 32)
      >>> self.attn.call_count, self.attn.num_heads
      (1, 2)
      >>> self.blocks = [nn.Dense(4), nn.Dense(8)]
      >>> self.blocks[1](jnp.ones((2, 3))).shape
      (2, 8)
      >>> self.sow("intermediates", "h", jnp.ones(2))
      True
      >>> self.variables["intermediates"]["h"][0].shape
      (2,)
    """

    def __init__(self, seed: int = 0, fill: Any = None):
        _keys.check_seed(seed, where="Mocker")
        _fill.check_fillable({}, fill)  # An unknown fill policy fails here, not at a call.
        object.__setattr__(self, "_seed", seed)
        object.__setattr__(self, "_fill", fill)
        object.__setattr__(self, "_attrs", {})
        object.__setattr__(self, "_variables", {})
        object.__setattr__(self, "_rng_counts", {})

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(type(self), name):
            raise _errors.MockAttributeError(
                f"Mocker.{name} is part of the bound-module API the Mocker provides and cannot "
                f"be assigned. Fix: use another attribute name."
            )
        self._attrs[name] = wrap(value, name, self._seed, self._fill)

    def __getattr__(self, name: str) -> Any:
        attrs = object.__getattribute__(self, "_attrs")
        if name in attrs:
            return attrs[name]
        if name in _MODULE_API:
            raise _errors.MockAttributeError(
                f"Mocker does not provide nn.Module.{name}. A Mocker stands in for the `self` "
                "of a bound module's method: it provides sow, make_rng, param, variable, "
                "put_variable, get_variable, has_variable, variables, is_initializing, "
                "is_mutable_collection and has_rng. Fix: run this code on the real bound module "
                "(model.bind(variables)), or assign what it reads to the Mocker."
            )
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
        as attribute ``name`` and in ``variables["params"]``, and returned; a second call with
        the same name returns the same value.

        Examples:
          >>> import flax.linen as nn, flaxmock
          >>> self = flaxmock.Mocker()
          >>> self.param("w", nn.initializers.lecun_normal(), (3, 4)).shape
          (3, 4)
        """
        existing = self._variables.get("params", {})
        if name in existing:
            return existing[name]
        spec = jax.eval_shape(lambda k: init_fn(k, *init_args, **init_kwargs), jax.random.key(0))
        spec = nn.meta.unbox(spec)
        key = jax.random.key(_derived_seed(self._seed, f"param:{name}"))
        value = _fill.fill_tree(key, spec, self._fill, path=f"Mocker.param({name!r})")
        self._variables.setdefault("params", {})[name] = value
        self._attrs[name] = value
        return value

    def sow(
        self,
        col: str,
        name: str,
        value: Any,
        reduce_fn: Callable[[Any, Any], Any] = _sow_reduce,
        init_fn: Callable[[], Any] = _sow_init,
    ) -> bool:
        """Stores ``value`` in collection ``col`` as ``nn.Module.sow`` does (appended to a tuple).

        Read it back from :attr:`variables` (``self.variables["intermediates"][name]``).

        Returns:
          True, as a bound module's ``sow`` in a collection that is mutable.
        """
        collection = self._variables.setdefault(col, {})
        collection[name] = reduce_fn(collection[name] if name in collection else init_fn(), value)
        return True

    def make_rng(self, name: str = "params") -> jax.Array:
        """A new key of stream ``name`` at each call (derived from the Mocker's seed)."""
        count = self._rng_counts.get(name, 0)
        self._rng_counts[name] = count + 1
        key = jax.random.key(_derived_seed(self._seed, f"rng:{name}"))
        return jax.random.fold_in(key, count)

    def has_rng(self, name: str) -> bool:
        """True: a Mocker gives keys of every stream."""
        del name
        return True

    def is_initializing(self) -> bool:
        """False: a Mocker stands in for a module in ``apply``, not in ``init``."""
        return False

    def is_mutable_collection(self, col: str) -> bool:
        """Whether ``col`` is mutable: every collection but ``params``."""
        return col != "params"

    def variable(
        self, col: str, name: str, init_fn: Any = None, *init_args: Any, **init_kwargs: Any
    ) -> MockerVariable:
        """The variable ``name`` of collection ``col``, created with ``init_fn(*init_args)``.

        As ``nn.Module.variable``: the variable exists after the first call (later calls return
        it as it is), and its ``.value`` can be read and written.

        Raises:
          MockAttributeError: it does not exist and no ``init_fn`` is given.
        """
        if not self.has_variable(col, name):
            if init_fn is None:
                raise _errors.MockAttributeError(
                    f"Mocker.variable({col!r}, {name!r}): no such variable and no init_fn to "
                    "create it. Fix: pass init_fn, or put_variable it first."
                )
            self.put_variable(col, name, init_fn(*init_args, **init_kwargs))
        return MockerVariable(self, col, name)

    def put_variable(self, col: str, name: str, value: Any) -> None:
        """Sets variable ``name`` of collection ``col`` to ``value``."""
        self._variables.setdefault(col, {})[name] = value

    def get_variable(self, col: str, name: str, default: Any = None) -> Any:
        """The value of variable ``name`` of collection ``col``, or ``default``."""
        return self._variables.get(col, {}).get(name, default)

    def has_variable(self, col: str, name: str) -> bool:
        """Whether variable ``name`` of collection ``col`` exists."""
        return name in self._variables.get(col, {})

    @property
    def variables(self) -> dict[str, Any]:
        """Every variable of the Mocker, a copy, by collection and then by name.

        ``params`` from :meth:`param`, what :meth:`sow` stored, and :meth:`variable`'s.
        """
        return {col: dict(values) for col, values in self._variables.items()}


def intermediates(
    target: Any,
    *args: Any,
    collections: tuple[str, ...] | list[str] = ("intermediates", "plots"),
    method: str | None = None,
    rngs: Any = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """What a call sows into ``collections``: random for a mock, real for a bound module.

    The same plot code runs on a :class:`Mocker` while it is developed and on the trained
    model afterwards: ``flaxmock.intermediates(self.block, x)`` gives, in the structure of
    ``module.apply(..., mutable=list(collections))[1]`` (Flax's tuples included),

    * for a module held by a Mocker (a :class:`BoundMock`, or one of its methods such as
      ``self.vae.encode``): random values of the real structure, shapes and dtypes;
    * for a bound Flax module (``model.bind(variables)``, or a submodule of one reached as
      ``self.block`` in a method of the bound model), or a method of one: the real values,
      from ``apply`` of that module with its own variables and ``collections`` mutable
      (values already sown in those collections are not included).

    Args:
      target: A :class:`BoundMock`, a :class:`MethodMock`, a bound ``flax.linen.Module`` or a
        method of one.
      *args: Positional arguments of the call.
      collections: The collections to return.
      method: The method to call (a name), for a module; default ``__call__``.
      rngs: As for ``module.apply``, for a real module.
      **kwargs: Keyword arguments of the call.

    Returns:
      ``{collection: nested values}``, as ``module.apply(..., mutable=...)[1]``.

    Raises:
      InvalidArgumentError: ``target`` is none of these, or an unbound module.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, flaxmock
      >>> class Block(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x):
      ...         h = nn.Dense(4)(x)
      ...         self.sow("intermediates", "h", h)
      ...         return h
      >>> x = jnp.ones((2, 3))
      >>> self = flaxmock.Mocker()
      >>> self.block = Block()
      >>> flaxmock.intermediates(self.block, x)["intermediates"]["h"][0].shape
      (2, 4)
      >>> real = Block().bind(Block().init(jax.random.key(0), x))
      >>> flaxmock.intermediates(real, x)["intermediates"]["h"][0].shape
      (2, 4)
    """
    if isinstance(target, BoundMock):
        mocked = target if method is None else target.method(method)
        return mocked.intermediates(*args, collections=collections, **kwargs)
    if isinstance(target, MethodMock):
        return target.intermediates(*args, collections=collections, **kwargs)
    module = target
    if inspect.ismethod(target) and isinstance(target.__self__, nn.Module):
        module, method = target.__self__, target.__name__
    if not isinstance(module, nn.Module):
        raise _errors.InvalidArgumentError(
            f"flaxmock.intermediates(target, ...): target must be a module held by a Mocker, "
            f"a bound flax.linen.Module or a method of one; got {type(target).__name__}."
        )
    if module.scope is None:
        raise _errors.InvalidArgumentError(
            f"flaxmock.intermediates: the {type(module).__name__} is not bound, so it has no "
            "variables to compute real values with. Fix: 1. bind it: "
            "flaxmock.intermediates(model.bind(variables), ...); 2. for random values of the "
            "real shapes, hold it in a Mocker: self = flaxmock.Mocker(); self.block = module; "
            "flaxmock.intermediates(self.block, ...)."
        )
    unbound, variables = module.unbind()
    given = {col: v for col, v in variables.items() if col not in collections}
    _, sown = unbound.apply(
        given,
        *args,
        method=method,
        mutable=list(collections),
        rngs=rngs,
        **kwargs,
    )
    return dict(sown)
