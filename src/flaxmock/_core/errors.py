"""Error classes raised by flaxmock.

Every error names the module path and method it concerns (``blocks_0/attn.__call__``), what was
expected, what was found, and how to fix it. Each class subclasses the matching built-in so that
``except ValueError`` and ``except TypeError`` keep working.
"""

from __future__ import annotations


class FlaxmockError(Exception):
    """Base class of every flaxmock error."""


class ConvertError(FlaxmockError, ValueError):
    """A Flax module call could not be converted into a penzai layer."""


class UnsupportedDtypeError(FlaxmockError, TypeError):
    """A mock was asked to produce an array of a dtype the fill rules do not cover."""


class AbstractParameterError(FlaxmockError, ValueError):
    """An un-mocked layer was called while its parameters are still abstract."""


class SelectNothingError(FlaxmockError, ValueError):
    """A ``where`` selector matched no layer of the tree."""


class SelectContainerError(FlaxmockError, ValueError):
    """A ``where`` selects a container (an ``nnx.List``, say) but not all of its elements."""


class SelectMethodError(FlaxmockError, ValueError):
    """A ``where`` names one method of a module whose mock replaces all of its methods."""


class ShapeInferenceError(FlaxmockError, ValueError):
    """The output shape of a mocked call could not be inferred with ``jax.eval_shape``."""


class BindVariablesError(FlaxmockError, ValueError):
    """Variables given to ``bind`` are missing or do not match the abstract ones."""


def call_path_str(path: tuple[str, ...], method: str | None = None) -> str:
    """Formats a call path as ``a/b/c.method`` for error messages."""
    text = "/".join(path) if path else "<root>"
    return f"{text}.{method}" if method else text


class CallStructureError(FlaxmockError, ValueError):
    """A converted tree made a submodule call that was not seen at conversion time."""


class InvalidSelectorError(FlaxmockError, TypeError):
    """A ``where`` selector is of a kind flaxmock does not understand."""


class MockerAttributeError(FlaxmockError, AttributeError):
    """A ``Mocker`` attribute was assigned twice."""


class FillError(FlaxmockError, ValueError):
    """A fill policy is unknown, or a fill callable returned an array not matching its spec."""


class InvalidArgumentError(FlaxmockError, TypeError):
    """A call argument is neither an array nor a hashable (static) Python value."""


class UnknownFactoryError(FlaxmockError, ValueError):
    """``flaxmock.nnx.materialize`` got a model it cannot rebuild (not from ``nnx.abstract``)."""
