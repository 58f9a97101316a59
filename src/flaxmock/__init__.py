"""flaxmock: run, inspect and plot Flax models without their parameters.

A Flax linen call is converted (:func:`unflaxify`) into a penzai tree with one layer per
submodule call and abstract parameters; selected calls are replaced by random-output mocks
(:func:`mock`); the tree is called like ``module.apply`` (:func:`call`).
"""

from penzai.toolshed.unflaxify import ArgsAndKwargs as ArgsAndKwargs
from penzai.toolshed.unflaxify import InterceptedFlaxModuleMethod as InterceptedFlaxModuleMethod

from flaxmock._call import call as call
from flaxmock._call import eval_shape as eval_shape
from flaxmock._convert import unflaxify as unflaxify
from flaxmock._errors import AbstractParameterError as AbstractParameterError
from flaxmock._errors import BindVariablesError as BindVariablesError
from flaxmock._errors import CallStructureError as CallStructureError
from flaxmock._errors import ConvertError as ConvertError
from flaxmock._errors import FillError as FillError
from flaxmock._errors import FlaxmockError as FlaxmockError
from flaxmock._errors import InvalidArgumentError as InvalidArgumentError
from flaxmock._errors import InvalidSelectorError as InvalidSelectorError
from flaxmock._errors import MockerAttributeError as MockerAttributeError
from flaxmock._errors import SelectNothingError as SelectNothingError
from flaxmock._errors import ShapeInferenceError as ShapeInferenceError
from flaxmock._errors import UnsupportedDtypeError as UnsupportedDtypeError
from flaxmock._fill import fill_array as fill_array
from flaxmock._fill import fill_tree as fill_tree
from flaxmock._layer import CallInfo as CallInfo
from flaxmock._layer import FlaxCallLayer as FlaxCallLayer
from flaxmock._materialize import bind as bind
from flaxmock._materialize import materialize as materialize
from flaxmock._mock import MockInfo as MockInfo
from flaxmock._mock import MockLayer as MockLayer
from flaxmock._mock import mock as mock
from flaxmock._mock import unmock as unmock
from flaxmock._mocker import MockedModule as MockedModule
from flaxmock._mocker import Mocker as Mocker
from flaxmock._select import selector as selector
from flaxmock._summary import summary as summary
from flaxmock._table import CallRow as CallRow
from flaxmock._table import Summary as Summary

__version__ = "0.1.0"

__all__ = [
    "AbstractParameterError",
    "ArgsAndKwargs",
    "BindVariablesError",
    "CallInfo",
    "CallRow",
    "CallStructureError",
    "ConvertError",
    "FillError",
    "FlaxCallLayer",
    "FlaxmockError",
    "InterceptedFlaxModuleMethod",
    "InvalidArgumentError",
    "InvalidSelectorError",
    "MockInfo",
    "MockerAttributeError",
    "MockLayer",
    "MockedModule",
    "Mocker",
    "SelectNothingError",
    "ShapeInferenceError",
    "Summary",
    "UnsupportedDtypeError",
    "bind",
    "call",
    "eval_shape",
    "fill_array",
    "fill_tree",
    "materialize",
    "mock",
    "selector",
    "summary",
    "unflaxify",
    "unmock",
]
