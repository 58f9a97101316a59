"""The shared core of flaxmock: what linen and NNX mocks have in common.

* ``errors``: every error class (one per failure, each a ``FlaxmockError``).
* ``specs``: array specs, the split of a pytree into array leaves and static values, call
  signatures (the keys of spec caches).
* ``fill`` and ``prng``: the random fill rules and memory-bounded random generation.
* ``select``: the one ``where`` grammar (classes, globs over ``/``-separated paths, predicates).
* ``table``: the per-call summary table both front ends return.
* ``mockstate``: the part of a replaced call's state update that needs no parameter.

Nothing here imports ``flax.linen``- or ``flax.nnx``-specific code of flaxmock: the front ends
(``flaxmock._linen``, ``flaxmock.nnx``) import the core, never the reverse.
"""
