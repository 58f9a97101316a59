"""``unmock`` for NNX models: the replaced modules put back in place of their mocks.

A :class:`~flaxmock.nnx.MockModule` keeps the module it replaced as a graph definition and an
*abstract* state, and holds its state variables (batch statistics, caches) with their values,
but no parameter. So the module put back has the state the mock holds (as the mocked calls left
it) and abstract parameters: an abstract model comes back as it was before
:func:`flaxmock.nnx.mock` (and :func:`flaxmock.nnx.materialize` still knows its factory); a real
model gets its parameters back from :func:`flaxmock.nnx.bind`
(``bind(unmock(mocked), nnx.state(model, nnx.Param))``).
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from flaxmock._core import errors as _errors
from flaxmock._core import select as _select
from flaxmock.nnx import _abstract as _nnx_abstract
from flaxmock.nnx import _intercept as _nnx_intercept
from flaxmock.nnx import _mock as _nnx_mock
from flaxmock.nnx import _select as _nnx_select
from flaxmock.nnx import _shapes as _nnx_shapes


def _original(mock: _nnx_mock.MockModule) -> nnx.Module:
    """The module ``mock`` replaced, rebuilt with abstract state and the mock's configuration."""
    # Configuration set on the mock after mocking (``model.eval()`` sets ``deterministic``)
    # belongs to the module, and so does the state the mock holds. (The mock's private
    # accessors: the replacement protocol of the shared mock core is to expose them.)
    return mock._rebuilt(mock.info.state, mock._overrides(), values=True)


def unmock(model: Any, where: _select.Where = "**") -> Any:
    """Returns a copy of ``model`` with the modules its mocks replaced put back.

    The inverse of :func:`flaxmock.nnx.mock`. ``model`` is untouched. A mock keeps no
    parameters of the module it replaced, so the module comes back with abstract parameters
    (``jax.ShapeDtypeStruct``) and the state the mock holds (batch statistics, caches, as the
    mocked calls left them): on a model from :func:`flaxmock.nnx.abstract` the result is the
    abstract model again (:func:`flaxmock.nnx.materialize` works on it); parameters of a real
    model are given back with :func:`flaxmock.nnx.bind`. Configuration set on a mock after mocking
    (``model.eval()``) is set on the module put back. A module that one mock replaced at
    several paths comes back as one module at all of them.

    Args:
      model: A model with mocks, from :func:`flaxmock.nnx.mock` (or a mock itself).
      where: Which mocks to take out, in the grammar of :func:`flaxmock.nnx.mock` (``"**"``,
        the default, selects every path). Class selectors and predicates see the module each
        mock replaced (rebuilt with abstract values), so ``nnx.Linear`` selects the mocks of
        ``nnx.Linear`` modules.

    Returns:
      The copy (the replaced module itself when ``model`` is a mock).

    Raises:
      SelectNothingError: ``where``, or an element of a list, selects no mock.
      InvalidSelectorError: ``where`` is not a selector.
      InvalidArgumentError: ``model`` is not an ``nnx.Module``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from flaxmock.nnx import abstract, materialize, mock, unmock
      >>> model = abstract(nnx.Sequential, nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.relu)
      >>> restored = unmock(mock(model, nnx.Linear))
      >>> type(restored.layers[0]).__name__, restored.layers[0].kernel.get_value().shape
      ('Linear', (3, 4))
    """
    if not isinstance(model, nnx.Module):
        raise _errors.InvalidArgumentError(
            f"unmock expects an nnx.Module (a model from flaxmock.nnx.mock), got "
            f"{type(model).__name__}."
        )
    copy = nnx.clone(model)
    _nnx_abstract.unguard(copy)
    # The modules put back, one per mock (a mock reachable at several paths is one module),
    # also what selectors see of the mocks.
    originals: dict[int, nnx.Module] = {}

    def original(module: Any) -> Any:
        if not isinstance(module, _nnx_mock.MockModule):
            return module
        if id(module) not in originals:
            originals[id(module)] = _original(module)
        return originals[id(module)]

    paths = _nnx_select.select_modules(
        copy,
        where,
        call="flaxmock.nnx.unmock",
        methods_of=_nnx_intercept.method_names,
        taken=lambda m: None if isinstance(m, _nnx_mock.MockModule) else "not mocks",
        taken_fix="select mocked modules, or mock them first with flaxmock.nnx.mock(model, where)",
        as_selected=original,
    )
    modules = dict(_nnx_shapes.iter_module_paths(copy))
    for path in paths:
        restored = original(modules[path])
        if not path:
            _nnx_abstract.guard(restored)
            return restored
        _nnx_select.set_at(copy, path, restored)
    _nnx_abstract.guard(copy)
    _nnx_abstract.set_origin(copy, _nnx_abstract.origin_of(model))
    return copy
