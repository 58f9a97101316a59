"""flaxmock: run, inspect and plot Flax models without their parameters.

A Flax linen call is converted (:func:`unflaxify`) into a penzai tree with one layer per
submodule call and abstract parameters; selected calls are replaced by random-output mocks
(:func:`mock`); the tree is called like ``module.apply`` (:func:`call`).
"""

import importlib.metadata

from penzai.toolshed.unflaxify import ArgsAndKwargs as ArgsAndKwargs
from penzai.toolshed.unflaxify import InterceptedFlaxModuleMethod as InterceptedFlaxModuleMethod

from flaxmock import fills as fills  # noqa: E402

# The NNX front end, reachable as `flaxmock.nnx` after `import flaxmock` (imported last: it
# imports the core, which must be initialised first).
from flaxmock import nnx as nnx  # noqa: E402
from flaxmock._core.checkpoint import CheckpointReport as CheckpointReport
from flaxmock._core.errors import AbstractParameterError as AbstractParameterError
from flaxmock._core.errors import BindVariablesError as BindVariablesError
from flaxmock._core.errors import CallFactoryError as CallFactoryError
from flaxmock._core.errors import CallStructureError as CallStructureError
from flaxmock._core.errors import ConvertError as ConvertError
from flaxmock._core.errors import FillError as FillError
from flaxmock._core.errors import FlaxmockError as FlaxmockError
from flaxmock._core.errors import InvalidArgumentError as InvalidArgumentError
from flaxmock._core.errors import InvalidSelectorError as InvalidSelectorError
from flaxmock._core.errors import LoadCheckpointError as LoadCheckpointError
from flaxmock._core.errors import LoadTargetError as LoadTargetError
from flaxmock._core.errors import MockAttributeError as MockAttributeError
from flaxmock._core.errors import OutputSpecError as OutputSpecError
from flaxmock._core.errors import ParseSpecError as ParseSpecError
from flaxmock._core.errors import RecordSpyError as RecordSpyError
from flaxmock._core.errors import SelectContainerError as SelectContainerError
from flaxmock._core.errors import SelectMethodError as SelectMethodError
from flaxmock._core.errors import SelectNothingError as SelectNothingError
from flaxmock._core.errors import ShapeInferenceError as ShapeInferenceError
from flaxmock._core.errors import ShardParametersError as ShardParametersError
from flaxmock._core.errors import UnsupportedDtypeError as UnsupportedDtypeError
from flaxmock._core.fill import fill_array as fill_array
from flaxmock._core.fill import fill_tree as fill_tree
from flaxmock._core.mockcore import CallRecords as CallRecords
from flaxmock._core.mockcore import MockInfo as MockInfo
from flaxmock._core.mockcore import MockState as MockState
from flaxmock._core.spycore import SpyCall as SpyCall
from flaxmock._core.table import CallRow as CallRow
from flaxmock._core.table import Summary as Summary
from flaxmock._linen.call import call as call
from flaxmock._linen.call import eval_shape as eval_shape
from flaxmock._linen.call import jit as jit
from flaxmock._linen.checkpoint import check_checkpoint as check_checkpoint
from flaxmock._linen.checkpoint import load as load
from flaxmock._linen.convert import unflaxify as unflaxify
from flaxmock._linen.layer import CallInfo as CallInfo
from flaxmock._linen.layer import FlaxCallLayer as FlaxCallLayer
from flaxmock._linen.layer import Invocation as Invocation
from flaxmock._linen.layer import ReplacedCall as ReplacedCall
from flaxmock._linen.layer import ReplacementLayer as ReplacementLayer
from flaxmock._linen.materialize import bind as bind
from flaxmock._linen.materialize import materialize as materialize
from flaxmock._linen.mock import MockLayer as MockLayer
from flaxmock._linen.mock import MockLayerInfo as MockLayerInfo
from flaxmock._linen.mock import mock as mock
from flaxmock._linen.mock import unmock as unmock
from flaxmock._linen.mocker import BoundMock as BoundMock
from flaxmock._linen.mocker import MethodMock as MethodMock
from flaxmock._linen.mocker import Mocker as Mocker
from flaxmock._linen.mocker import MockerVariable as MockerVariable
from flaxmock._linen.mocker import intermediates as intermediates
from flaxmock._linen.select import selector as selector
from flaxmock._linen.spy import SpyLayer as SpyLayer
from flaxmock._linen.spy import replay as replay
from flaxmock._linen.spy import spy as spy
from flaxmock._linen.spy import unspy as unspy
from flaxmock._linen.summary import summary as summary

__version__ = importlib.metadata.version("flaxmock")

__all__ = [
    "AbstractParameterError",
    "ArgsAndKwargs",
    "BindVariablesError",
    "CallFactoryError",
    "BoundMock",
    "CallInfo",
    "CallRecords",
    "CallRow",
    "CheckpointReport",
    "CallStructureError",
    "ConvertError",
    "FillError",
    "FlaxCallLayer",
    "FlaxmockError",
    "InterceptedFlaxModuleMethod",
    "InvalidArgumentError",
    "InvalidSelectorError",
    "LoadCheckpointError",
    "LoadTargetError",
    "Invocation",
    "MockAttributeError",
    "MockInfo",
    "MockLayer",
    "MockLayerInfo",
    "MockState",
    "MethodMock",
    "Mocker",
    "MockerVariable",
    "OutputSpecError",
    "ParseSpecError",
    "ReplacedCall",
    "RecordSpyError",
    "ReplacementLayer",
    "SelectContainerError",
    "SelectMethodError",
    "SelectNothingError",
    "ShapeInferenceError",
    "ShardParametersError",
    "SpyCall",
    "SpyLayer",
    "Summary",
    "UnsupportedDtypeError",
    "bind",
    "call",
    "check_checkpoint",
    "eval_shape",
    "jit",
    "load",
    "fill_array",
    "fill_tree",
    "intermediates",
    "materialize",
    "mock",
    "replay",
    "selector",
    "spy",
    "summary",
    "unflaxify",
    "unmock",
    "unspy",
    "fills",
]
