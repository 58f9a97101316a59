"""The linen front end: a Flax linen call converted into a penzai tree, mocked and run.

Data flow: ``record`` traces one abstract call under an interceptor that follows ``walk``'s rules
and keeps a ``CallRecord`` per submodule call; ``convert`` builds ``FlaxCallLayer``s (``layer``)
from them; ``mock`` replaces selected layers; ``materialize`` gives values to the rest; ``call``
runs a tree natively under the dispatcher of ``layer``. ``mocker`` and ``summary`` are front
ends over the same pieces.
"""
