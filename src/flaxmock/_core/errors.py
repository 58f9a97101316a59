"""Error classes raised by flaxmock.

Every error names the module path and method it concerns (``blocks_0/attn.__call__``), what was
expected, what was found, and how to fix it. Each class subclasses the matching built-in so that
``except ValueError`` and ``except TypeError`` keep working.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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
    """Variables given to ``bind`` or ``unflaxify(variables=...)`` do not fit the model.

    Entries are missing (a whole subtree, or parameters not wrapped in ``{"params": ...}``), or
    do not match the abstract ones in shape or dtype.
    """


class OutputSpecError(FlaxmockError, ValueError):
    """An ``out=`` spec does not match the output the real call gives."""


class CallStructureError(FlaxmockError, ValueError):
    """A converted tree made a submodule call that was not seen at conversion time."""


class InvalidSelectorError(FlaxmockError, TypeError):
    """A ``where`` selector is of a kind flaxmock does not understand."""


class MockAttributeError(FlaxmockError, AttributeError):
    """An attribute read through a mock is not available.

    Raised by an NNX mock (``flaxmock.nnx.MockModule``) for an attribute of the replaced module
    that holds a parameter, an array or a submodule, which a mock does not keep (it keeps state
    variables), or when the replaced call creates a variable at a path the mock cannot hold; and
    by a ``flaxmock.Mocker`` for an attribute that was never assigned. A subclass of
    ``AttributeError``, so ``hasattr`` and ``getattr(obj, name, default)`` work as usual.
    """


class FillError(FlaxmockError, ValueError):
    """A fill policy is unknown, or a fill callable returned an array not matching its spec."""


class InvalidArgumentError(FlaxmockError, TypeError):
    """An argument of a flaxmock function has a type it does not accept.

    Also raised when a call argument given to a mock is neither an array nor a hashable
    (static) Python value.
    """


class UnknownFactoryError(FlaxmockError, ValueError):
    """``flaxmock.nnx.materialize`` got a model it cannot rebuild (not from ``nnx.abstract``)."""


class ShardParametersError(FlaxmockError, ValueError):
    """A parameter's partitioning does not fit the mesh given to ``summary(..., mesh=)``."""


class LoadTargetError(FlaxmockError, ValueError):
    """The command line's ``TARGET`` (``package.module:factory``, ``file.py:factory``) is bad."""


class CallFactoryError(FlaxmockError, ValueError):
    """The command line's factory raised, or returned something it cannot summarise."""


class ParseSpecError(FlaxmockError, ValueError):
    """A command-line spec (``int32[1,128]``, ``data=2,model=4``) does not parse."""


class StackSizeError(FlaxmockError, ValueError):
    """``flaxmock.nnx.mock(stack_size=n)`` does not match the selected module's layer axis."""


class RecordSpyError(FlaxmockError, RuntimeError):
    """A spy could not record a call: its record cannot leave the trace it was made in (a
    ``jax.jit`` closing over the tree, a lifted body whose transform drops ``intermediates``)."""


class FlaxmockWarning(UserWarning):
    """Base class of every flaxmock warning: a result that is usable but not what it seems."""


class FrozenMockWarning(FlaxmockWarning):
    """A mock ran inside ``jax.checkpoint`` on a copy of the model whose state is not written
    back, where no host callback can count the call: its call counter did not advance, so it
    draws the same values on every such call and ``call_count`` does not count them."""


def note_raised_in(error: BaseException, where: str) -> None:
    """Names the innermost call an error was raised in (once), keeping its type and message.

    Errors from a model's own code propagate unchanged; the note ``flaxmock: raised in
    blocks_0/attn.__call__`` is added by the innermost flaxmock call that sees the error, so
    outer calls do not add theirs.
    """
    if not any(n.startswith(_RAISED_IN) for n in getattr(error, "__notes__", ())):
        error.add_note(f"{_RAISED_IN} {where}")


_RAISED_IN = "flaxmock: raised in"

#: How many problems a ``BindVariablesError`` lists before "... and N more".
BIND_PROBLEMS_SHOWN = 20


def describe_value(value: Any) -> str:
    """``float32[3, 4]`` for an array or spec, the type's name for anything else."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is None or dtype is None:
        return type(value).__name__
    return f"{getattr(dtype, 'name', dtype)}{list(shape)}"


def bind_error(problems: list[str], *, subject: str, fix: str) -> BindVariablesError:
    """One :class:`BindVariablesError` for every problem found (the first ones, then a count).

    Args:
      problems: One line per problem, such as ``"  missing: params/w (expected float32[3])"``.
      subject: What was bound (``"<root>.__call__"``, ``"MLP"``).
      fix: The fixes, a paragraph starting with ``"Fix: "``.
    """
    return BindVariablesError(
        f"bind: {len(problems)} problem(s) with the values for {subject}:\n"
        + cut_list(problems, BIND_PROBLEMS_SHOWN, sep="\n", indent="  ")
        + f"\n{fix}"
    )


def cut_list(items: Sequence[Any], limit: int, *, sep: str = ", ", indent: str = "") -> str:
    """The first ``limit`` items joined with ``sep``, then how many were left out.

    Every list an error message shows goes through here, so that a cut list always says so.

    Examples:
      >>> cut_list(["a", "b", "c", "d"], 2)
      'a, b, ... and 2 more'
      >>> cut_list(["a", "b"], 2)
      'a, b'
    """
    shown = [str(item) for item in items[:limit]]
    if len(items) > limit:
        shown.append(f"{indent}... and {len(items) - limit} more")
    return sep.join(shown)


class LoadCheckpointError(FlaxmockError, ValueError):
    """A checkpoint cannot be read, or does not fit the model it is loaded into.

    ``load`` raises it, instead of loading a partial model, when the checkpoint's metadata does
    not match the model (its ``report`` attribute is the :class:`~flaxmock.CheckpointReport`),
    and for files that are no checkpoint flaxmock reads.
    """

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report
