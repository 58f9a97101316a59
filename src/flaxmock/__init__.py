"""flaxmock: run, inspect and plot Flax models without their parameters."""

from flaxmock._errors import AbstractParameterError as AbstractParameterError
from flaxmock._errors import BindVariablesError as BindVariablesError
from flaxmock._errors import ConvertError as ConvertError
from flaxmock._errors import FlaxmockError as FlaxmockError
from flaxmock._errors import SelectNothingError as SelectNothingError
from flaxmock._errors import ShapeInferenceError as ShapeInferenceError
from flaxmock._errors import UnsupportedDtypeError as UnsupportedDtypeError

__version__ = "0.1.0"
