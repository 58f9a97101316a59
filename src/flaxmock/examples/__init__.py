"""Example models bundled with flaxmock (used by the demo, the tutorials and the benchmarks).

Examples:
  >>> from flaxmock.examples import Llama, LlamaConfig
  >>> LlamaConfig.preset("8b").num_params()
  8030261248
"""

from flaxmock.examples import llama as llama
from flaxmock.examples.llama import Llama as Llama
from flaxmock.examples.llama import LlamaConfig as LlamaConfig

__all__ = ["Llama", "LlamaConfig", "llama"]
