"""Example models bundled with flaxmock (used by the demo, the tutorials and the benchmarks)."""

from flaxmock.examples import llama as llama

__all__ = ["llama"]
