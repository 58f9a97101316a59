"""Property-based tests: the converter's two invariants and the mock invariant, on random models.

Hypothesis draws small Flax module trees (``strategies.models``); for each:

(a) with real variables, ``flaxmock.call`` equals ``model.apply`` exactly, sown values included;
(b) with abstract variables, ``flaxmock.eval_shape`` of the call equals ``jax.eval_shape`` of
    ``model.apply``;
(c) with a random subset of layers mocked (by glob or predicate) and the rest given values by
    ``materialize`` or ``bind``, the output and sown specs equal the real ones.

``make test`` draws 20 models (derandomized, so every run draws the same ones);
``make test-slow`` draws 200 (``PROPERTY_EXAMPLES``).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flaxmock
import strategies
from flaxmock._linen import layer as _layer

X = jnp.linspace(-1.0, 1.0, 2 * strategies.WIDTH).reshape(2, strategies.WIDTH)
MUTABLE = ["intermediates"]


def assert_trees_equal(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        if hasattr(e, "shape"):
            assert (a.shape, a.dtype) == (e.shape, e.dtype)
            np.testing.assert_array_equal(np.asarray(a), np.asarray(e))
        else:
            assert a == e


def specs(tree):
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype) if hasattr(x, "shape") else x, tree
    )


def assert_specs_equal(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        if hasattr(e, "shape"):
            assert (a.shape, a.dtype) == (e.shape, e.dtype)
        else:
            assert a == e


@settings(
    max_examples=int(os.environ.get("PROPERTY_EXAMPLES", 20)),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(spec=strategies.models, data=st.data())
def test_random_models(spec, data):
    model = strategies.Root(spec=spec)
    variables = model.init(jax.random.key(0), X)
    variables = {k: v for k, v in variables.items() if k != "intermediates"}
    ref = model.apply(variables, X, mutable=MUTABLE)

    # (a) Real variables: exactly module.apply.
    real = flaxmock.unflaxify(model, X, variables=variables)
    assert_trees_equal(flaxmock.call(real, X, mutable=MUTABLE), ref)

    # (b) Abstract: eval_shape equals eval_shape of module.apply.
    abstract = flaxmock.unflaxify(model, jax.ShapeDtypeStruct(X.shape, X.dtype))
    out = flaxmock.eval_shape(lambda t, x: flaxmock.call(t, x, mutable=MUTABLE), abstract, X)
    # jax.eval_shape would turn Python ints in the output into arrays: compare with the real run.
    assert_specs_equal(out, specs(ref))

    # (c) A random subset mocked, the rest given values: the real structure, shapes, dtypes.
    layers = [layer for _, layer in _layer.iter_layers(abstract)]
    if data.draw(st.booleans(), label="by glob"):
        paths = sorted({layer.info.path_str for layer in layers} - {"<root>"})
        where = data.draw(
            st.sampled_from(paths + ["*", "**/c0", "body*", "*shared*"]), label="glob"
        )
        if not any(flaxmock.selector(where)(layer) for layer in layers):
            where = "**"
    else:
        chosen = data.draw(
            st.sets(st.sampled_from([layer.info.call_path for layer in layers]), min_size=1),
            label="mocked calls",
        )
        where = lambda layer: layer.info.call_path in chosen  # noqa: E731
    mocked = flaxmock.mock(abstract, where, seed=data.draw(st.integers(0, 3), label="seed"))
    if isinstance(mocked, flaxmock.FlaxCallLayer):
        if data.draw(st.booleans(), label="materialize"):
            mocked = flaxmock.materialize(mocked, jax.random.key(1))
        else:
            mocked = flaxmock.bind(mocked, variables)
    got = flaxmock.call(mocked, X, mutable=MUTABLE)
    assert_specs_equal(specs(got), specs(ref))
