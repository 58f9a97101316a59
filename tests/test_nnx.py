"""Tests of ``flaxmock.nnx``: shape evaluation, mocks, abstract models, interception, summary."""

from __future__ import annotations

import threading
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import errors as flax_errors
from flax import nnx

import flaxmock
import flaxmock.nnx as fnnx
from helpers import NnxBlock as Block
from helpers import NnxMLP as MLP
from helpers import NnxStack as Stack

# --------------------------------------------------------------------------------------------
# The NNX zoo.


class Attn(nnx.Module):
    """nnx.MultiHeadAttention, a helper method and a static keyword argument."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.attn = nnx.MultiHeadAttention(
            num_heads=2, in_features=8, qkv_features=8, decode=False, rngs=rngs
        )
        self.out = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x, *, deterministic: bool = True):
        return self.out(self.encode(x, deterministic=deterministic))

    def encode(self, x, deterministic: bool = True):
        return self.attn(x, deterministic=deterministic)


ZOO = {
    "mlp": (lambda: MLP(rngs=nnx.Rngs(0)), (jnp.ones((2, 3)),), {}, "layers/0"),
    "batchnorm_dropout": (lambda: Block(4, rngs=nnx.Rngs(0)), (jnp.ones((5, 4)),), {}, "lin"),
    "vmap_scan_stack": (lambda: Stack(rngs=nnx.Rngs(0)), (jnp.ones((5, 4)),), {}, "head"),
    "attention": (
        lambda: Attn(rngs=nnx.Rngs(0)),
        (jnp.ones((2, 5, 8)),),
        {"deterministic": True},
        nnx.MultiHeadAttention,
    ),
}
ZOO_IDS = list(ZOO)


def _concrete_state(model):
    """Every variable's value, as NumPy (fails on abstract values and tracers)."""
    return {
        path: np.asarray(var.get_value())
        for path, var in nnx.iter_graph(model)
        if isinstance(var, nnx.Variable)
        and not jax.dtypes.issubdtype(var.dtype, jax.dtypes.prng_key)
    }


def _assert_same_state(before, model):
    after = _concrete_state(model)
    assert after.keys() == before.keys()
    for path in before:
        np.testing.assert_array_equal(after[path], before[path], err_msg=str(path))


def _specs(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def _real_specs(make, args, kwargs):
    return _specs(make()(*args, **kwargs))


# --------------------------------------------------------------------------------------------
# Shape evaluation never changes the model.


@pytest.mark.parametrize("name", ZOO_IDS)
def test_eval_shape_leaves_model_unchanged_and_matches_real(name):
    make, args, kwargs, _ = ZOO[name]
    model = make()
    before = _concrete_state(model)
    out = fnnx.eval_shape(model, *args, **kwargs)
    _assert_same_state(before, model)
    for _, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Variable):
            assert isinstance(var.get_value(), jax.Array)
            assert not isinstance(var.get_value(), jax.core.Tracer)
    assert out == _real_specs(make, args, kwargs)


def test_plain_jax_eval_shape_fails_where_ours_works():
    # The trap this module avoids: jax.eval_shape traces the module's own Variables.
    stack = Stack(rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="different trace level"):
        jax.eval_shape(stack, jnp.ones((5, 4)))
    block = Block(4, rngs=nnx.Rngs(0))
    with pytest.raises(flax_errors.TraceContextError, match="different trace level"):
        jax.eval_shape(block, jnp.ones((5, 4)))
    assert fnnx.eval_shape(stack, jnp.ones((5, 4))).shape == (5, 2)
    assert fnnx.eval_shape(block, jnp.ones((5, 4))).shape == (5, 4)


@pytest.mark.parametrize("name", ZOO_IDS)
def test_eval_shape_on_abstract_model(name):
    make, args, kwargs, _ = ZOO[name]
    model = fnnx.abstract(make)
    assert fnnx.eval_shape(model, *_specs(args), **kwargs) == _real_specs(make, args, kwargs)


# --------------------------------------------------------------------------------------------
# Mocks.


@pytest.mark.parametrize("name", ZOO_IDS)
def test_mock_output_has_real_specs_and_input_untouched(name):
    make, args, kwargs, where = ZOO[name]
    model = make()
    before = _concrete_state(model)
    children = {path: node for path, node in nnx.iter_graph(model)}
    mocked = fnnx.mock(model, where)
    out = mocked(*args, **kwargs)
    assert _specs(out) == _real_specs(make, args, kwargs)
    assert fnnx.eval_shape(mocked, *args, **kwargs) == _specs(out)
    # The input model: same objects, same classes, same values.
    _assert_same_state(before, model)
    for path, node in nnx.iter_graph(model):
        assert children[path] is node
    assert not any(isinstance(m, fnnx.MockModule) for _, m in nnx.iter_graph(model))


def test_unmocked_rest_computes_exactly_on_mocked_output():
    model = MLP(rngs=nnx.Rngs(0))
    mocked = fnnx.mock(model, "layers/0")
    seen = {}

    def grab(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, fnnx.MockModule):
            seen["h"] = out
        return out

    x = jnp.ones((2, 3))
    with fnnx.intercept_methods(grab):
        y = mocked(x)
    h = nnx.relu(seen["h"])
    expected = model.layers[2](nnx.relu(model.layers[1](h)))
    np.testing.assert_array_equal(y, expected)
    assert mocked.layers[0].call_count == 1
    assert mocked.layers[0].call_args_list == [((jax.ShapeDtypeStruct((2, 3), jnp.float32),), {})]


def test_successive_calls_differ_same_seed_identical():
    x = jnp.ones((2, 3))
    a = fnnx.mock(MLP(rngs=nnx.Rngs(0)), nnx.Linear, seed=7)
    b = fnnx.mock(MLP(rngs=nnx.Rngs(1)), nnx.Linear, seed=7)
    c = fnnx.mock(MLP(rngs=nnx.Rngs(0)), nnx.Linear, seed=8)
    a1, a2 = a(x), a(x)
    assert not np.array_equal(a1, a2)
    np.testing.assert_array_equal(a1, b(x))
    np.testing.assert_array_equal(a2, b(x))
    assert not np.array_equal(a1, c(x))
    # Different mocks of one model draw different numbers.
    layers = fnnx.mock(MLP(din=8, dout=8, rngs=nnx.Rngs(0)), nnx.Linear).layers
    z = jnp.ones((2, 8))
    assert not np.array_equal(layers[0](z), layers[1](z))


def test_mock_under_nnx_jit_advances_counter_and_matches_eager():
    x = jnp.ones((2, 3))
    jitted = fnnx.mock(MLP(rngs=nnx.Rngs(0)), "layers/1")
    eager = fnnx.mock(MLP(rngs=nnx.Rngs(0)), "layers/1")
    call = nnx.jit(lambda m, x: m(x))
    j1, j2 = call(jitted, x), call(jitted, x)
    assert not np.array_equal(j1, j2)
    assert jitted.layers[1].call_count == 2
    np.testing.assert_allclose(j1, eager(x), rtol=1e-6)
    np.testing.assert_allclose(j2, eager(x), rtol=1e-6)


def test_mock_inside_scanned_stack():
    model = Stack(rngs=nnx.Rngs(0))
    x = jnp.ones((5, 4))
    mocked = fnnx.mock(model, "blocks/lin", stack_size=3)
    out = mocked(x)
    assert _specs(out) == jax.ShapeDtypeStruct((5, 2), jnp.float32)
    counter = mocked.blocks.lin.counter.get_value()
    np.testing.assert_array_equal(counter, [[0, 1], [1, 1], [2, 1]])
    assert mocked.blocks.lin.call_count == 1
    assert not np.array_equal(out, mocked(x))


def test_mock_methods_other_than_call_and_root():
    model = Attn(rngs=nnx.Rngs(0))
    mocked = fnnx.mock(model, "")
    assert isinstance(mocked, fnnx.MockModule)
    x = jnp.ones((2, 5, 8))
    assert _specs(mocked.encode(x)) == jax.ShapeDtypeStruct((2, 5, 8), jnp.float32)
    assert _specs(mocked(x, deterministic=True)) == jax.ShapeDtypeStruct((2, 5, 3), jnp.float32)


def test_mock_fill_and_non_array_outputs():
    class Pair(nnx.Module):
        def __call__(self, x):
            return {"n": 3, "y": x.astype(jnp.int8), "mask": x > 0}

    class Outer(nnx.Module):
        def __init__(self):
            self.pair = Pair()

        def __call__(self, x):
            return self.pair(x)

    out = fnnx.mock(Outer(), Pair, fill="zeros")(jnp.ones((3,)))
    assert out["n"] == 3
    np.testing.assert_array_equal(out["y"], np.zeros(3, np.int8))
    assert out["mask"].dtype == jnp.bool_


def test_shape_inference_error_and_out_escape_hatch():
    class Nonzero(nnx.Module):
        def __call__(self, x):
            return jnp.nonzero(x)[0]

    class Outer(nnx.Module):
        def __init__(self):
            self.nz = Nonzero()

        def __call__(self, x):
            return self.nz(x)

    x = jnp.array([0.0, 1.0, 2.0])
    with pytest.raises(flaxmock.ShapeInferenceError, match=r"nz\.__call__.*out=jax"):
        fnnx.mock(Outer(), Nonzero)(x)
    spec = jax.ShapeDtypeStruct((2,), jnp.int32)
    assert fnnx.mock(Outer(), Nonzero, out=spec)(x).shape == (2,)


def test_select_errors():
    model = MLP(rngs=nnx.Rngs(0))
    with pytest.raises(flaxmock.SelectNothingError, match=r"(?s)selects no module.*layers/1"):
        fnnx.mock(model, "blocks/*")
    with pytest.raises(flaxmock.SelectNothingError, match="selects no module"):
        fnnx.mock(model, nnx.BatchNorm)
    with pytest.raises(flaxmock.InvalidSelectorError, match="nnx.Module subclass"):
        fnnx.mock(model, int)
    with pytest.raises(flaxmock.InvalidSelectorError, match="predicate"):
        fnnx.mock(model, 3)  # type: ignore[arg-type]
    selected = fnnx.mock(model, lambda path, m: path.endswith("2"))
    assert isinstance(selected.layers[2], fnnx.MockModule)
    assert not isinstance(selected.layers[1], fnnx.MockModule)


# --------------------------------------------------------------------------------------------
# Abstract models and materialize.


def test_abstract_model_mocked_partly_errors_then_materializes():
    model = fnnx.abstract(MLP, rngs=nnx.Rngs(0))
    assert isinstance(model, MLP)
    assert isinstance(model.layers[1].kernel.get_value(), jax.ShapeDtypeStruct)
    x = jnp.ones((2, 3))
    # Fully mocked: no value needed.
    assert fnnx.mock(model, nnx.Linear)(x).shape == (2, 2)
    mocked = fnnx.mock(model, "layers/0")
    with pytest.raises(
        flaxmock.AbstractParameterError,
        match=r"(?s)MLP.__call__.*layers/1: .*kernel.*layers/2.*flaxmock.nnx.materialize",
    ):
        mocked(x)
    assert fnnx.eval_shape(mocked, x).shape == (2, 2)
    real = fnnx.materialize(mocked, nnx.Rngs(0))
    assert type(real.layers[1]) is nnx.Linear
    reference = MLP(rngs=nnx.Rngs(0))
    for i in (1, 2):
        np.testing.assert_array_equal(real.layers[i].kernel[...], reference.layers[i].kernel[...])
    y = real(x)
    assert y.shape == (2, 2)
    # The abstract input stays abstract.
    assert isinstance(mocked.layers[1].kernel.get_value(), jax.ShapeDtypeStruct)


def test_abstract_call_error_names_submodule_paths():
    model = fnnx.abstract(lambda: Attn(rngs=nnx.Rngs(0)))
    with pytest.raises(
        flaxmock.AbstractParameterError,
        match=r"(?s)attn/query: bias, kernel.*\n  out: bias, kernel",
    ):
        model(jnp.ones((2, 5, 8)))


def test_materialize_without_factory():
    model = nnx.eval_shape(lambda: MLP(rngs=nnx.Rngs(0)))
    with pytest.raises(fnnx.UnknownFactoryError, match="flaxmock.nnx.abstract"):
        fnnx.materialize(model, nnx.Rngs(0))


# --------------------------------------------------------------------------------------------
# intercept_methods.


def _class_attributes():
    todo, seen = [nnx.Module], {}
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in seen:
                seen[sub] = dict(vars(sub))
                todo.append(sub)
    seen[nnx.Module] = dict(vars(nnx.Module))
    return seen


def _assert_same_class_attributes(before):
    after = _class_attributes()
    for cls, attrs in before.items():
        now = after[cls]
        assert now.keys() == attrs.keys(), cls
        for name, value in attrs.items():
            assert now[name] is value, (cls, name)


def test_intercept_sees_builtin_modules_and_helpers():
    model = Attn(rngs=nnx.Rngs(0))
    seen = []

    def log(next_fun, args, kwargs, context):
        seen.append((type(context.module).__name__, context.method_name))
        return next_fun(*args, **kwargs)

    with fnnx.intercept_methods(log):
        model(jnp.ones((2, 5, 8)))
    assert seen[:3] == [
        ("Attn", "__call__"),
        ("Attn", "encode"),
        ("MultiHeadAttention", "__call__"),
    ]
    assert ("LinearGeneral", "__call__") in seen
    assert seen[-1] == ("Linear", "__call__")


def test_intercept_can_replace_output_and_nesting_order():
    model = MLP(rngs=nnx.Rngs(0))
    order = []

    def tag(name):
        def interceptor(next_fun, args, kwargs, context):
            order.append(name)
            return next_fun(*args, **kwargs)

        return interceptor

    def zero_linear(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        return jnp.zeros_like(out) if isinstance(context.module, nnx.Linear) else out

    with fnnx.intercept_methods(tag("outer")), fnnx.intercept_methods(tag("inner")):
        nnx.Linear(2, 2, rngs=nnx.Rngs(0))(jnp.ones((1, 2)))
    assert order == ["outer", "inner"]
    with fnnx.intercept_methods(zero_linear):
        y = model(jnp.ones((2, 3)))
    np.testing.assert_array_equal(y, np.zeros((2, 2)))

    # orig_method skips the other interceptors (the zeroing one too): the real output.
    def skip(next_fun, args, kwargs, context):
        return context.orig_method(*args, **kwargs)

    with (
        fnnx.intercept_methods(skip),
        fnnx.intercept_methods(tag("never")),
        fnnx.intercept_methods(zero_linear),
    ):
        skipped = model(jnp.ones((2, 3)))
    assert "never" not in order
    np.testing.assert_array_equal(skipped, model(jnp.ones((2, 3))))
    assert np.abs(np.asarray(skipped)).sum() > 0


def test_intercept_restores_every_class_attribute_after_raise():
    before = _class_attributes()
    original = nnx.Linear.__call__

    def boom(next_fun, args, kwargs, context):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), fnnx.intercept_methods(boom):
        MLP(rngs=nnx.Rngs(0))(jnp.ones((2, 3)))
    assert nnx.Linear.__call__ is original
    _assert_same_class_attributes(before)

    class Defined(nnx.Module):
        def __call__(self, x):
            return x

    defined_call = Defined.__call__
    with fnnx.intercept_methods(boom):

        class Inside(nnx.Module):
            def __call__(self, x):
                return x

        inside_call = vars(Inside)["__call__"]
        with pytest.raises(RuntimeError):
            Inside()(1)
        with pytest.raises(RuntimeError):
            Defined()(1)
    assert Defined.__call__ is defined_call
    assert vars(Inside)["__call__"] is not inside_call  # the wrapper, removed:
    assert vars(Inside)["__call__"].__name__ == "__call__"
    assert Inside()(1) == 1
    _assert_same_class_attributes(before)


def test_intercept_is_thread_local_and_reference_counted():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    x = jnp.ones((1, 2))
    entered, release = threading.Event(), threading.Event()
    seen = {"a": 0, "b": 0}
    errors = []

    def count(name):
        def interceptor(next_fun, args, kwargs, context):
            seen[name] += 1
            return next_fun(*args, **kwargs)

        return interceptor

    def thread_a():
        try:
            with fnnx.intercept_methods(count("a")):
                entered.set()
                release.wait(timeout=30)
                model(x)  # Still intercepted after the main thread's context closed.
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    worker = threading.Thread(target=thread_a)
    worker.start()
    entered.wait(timeout=30)
    model(x)  # Not intercepted: this thread has no context.
    with fnnx.intercept_methods(count("b")):
        model(x)
    release.set()
    worker.join(timeout=30)
    assert not errors
    assert seen == {"a": 1, "b": 1}
    assert vars(nnx.Linear)["__call__"].__name__ == "__call__"
    assert not hasattr(vars(nnx.Linear)["__call__"], "_flaxmock_original")


# --------------------------------------------------------------------------------------------
# summary.


def test_summary_on_abstract_mocked_model():
    model = fnnx.abstract(lambda: Attn(rngs=nnx.Rngs(0)))
    x = jax.ShapeDtypeStruct((2, 5, 8), jnp.float32)
    table = fnnx.summary(model, x, deterministic=True)
    paths = [(row.path, row.module_type, row.method) for row in table.rows]
    assert paths[:3] == [
        ("<root>", "Attn", "__call__"),
        ("<root>", "Attn", "encode"),
        ("attn", "MultiHeadAttention", "__call__"),
    ]
    assert ("attn/query", "LinearGeneral", "__call__") in paths
    assert table.rows[-1].outputs == jax.ShapeDtypeStruct((2, 5, 3), jnp.float32)
    n_params = sum(
        int(np.prod(v.get_value().shape))
        for _, v in nnx.iter_graph(model)
        if isinstance(v, nnx.Param)
    )
    assert table.total_params == n_params
    mocked = fnnx.mock(model, nnx.MultiHeadAttention)
    rows = fnnx.summary(mocked, x).rows
    assert [(r.path, r.module_type, r.note) for r in rows] == [
        ("<root>", "Attn", ""),
        ("<root>", "Attn", ""),
        ("attn", "MultiHeadAttention", "mocked"),
        ("out", "Linear", ""),
    ]
    assert "mocked" in str(fnnx.summary(mocked, x))


def test_summary_inside_scan_and_model_untouched():
    model = Stack(rngs=nnx.Rngs(0))
    before = _concrete_state(model)
    rows = fnnx.summary(model, jnp.ones((5, 4))).rows
    # The scan body calls a fresh copy of the stack; its rows are named after it.
    assert [(r.path, r.module_type) for r in rows] == [
        ("<root>", "NnxStack"),
        ("blocks", "NnxBlock"),
        ("blocks/lin", "Linear"),
        ("blocks/bn", "BatchNorm"),
        ("blocks/drop", "Dropout"),
        ("head", "Linear"),
    ]
    params = [v for _, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)]
    assert sum(r.param_count for r in rows) == sum(v.get_value().size for v in params)
    _assert_same_state(before, model)


# --------------------------------------------------------------------------------------------
# Stacks, raw JAX transforms, nnx.jit, attributes and containers.


def test_mock_stack_size_inferred_explicit_and_checked():
    model = Stack(rngs=nnx.Rngs(0))
    x = jnp.ones((5, 4))
    # Inferred: the stack's arrays (random keys included) share a leading axis of 3; a plain
    # module's do not.
    inferred = fnnx.mock(model, "blocks/lin")
    assert inferred.blocks.lin.info.stack_size == 3
    np.testing.assert_array_equal(inferred(x), fnnx.mock(model, "blocks/lin", stack_size=3)(x))
    assert fnnx.mock(model, "head").head.info.stack_size is None
    assert fnnx.mock(model, "head", stack_size=None).head.counter.get_value().shape == (2,)
    with pytest.raises(
        fnnx.StackSizeError,
        match=r"stack_size=2\): blocks/lin \(Linear\) is not a stack of 2 layers.*leading axis "
        r"of 3\. Fix: pass stack_size=3",
    ):
        fnnx.mock(model, "blocks/lin", stack_size=2)
    with pytest.raises(fnnx.StackSizeError, match=r"head \(Linear\).*no leading axis shared"):
        fnnx.mock(model, "head", stack_size=2)
    with pytest.raises(fnnx.StackSizeError, match="expected a positive int"):
        fnnx.mock(model, "head", stack_size=0)


def test_mock_called_inside_raw_jax_scan_over_a_closure():
    class Closure(nnx.Module):
        def __init__(self, *, rngs):
            self.lin = nnx.Linear(4, 4, rngs=rngs)

        def __call__(self, xs):
            def step(c, x):
                c = self.lin(c + x)
                return c, c

            return jax.lax.scan(step, jnp.zeros(4), xs)

    model = Closure(rngs=nnx.Rngs(0))
    xs = jnp.ones((3, 4))
    mocked = fnnx.mock(model, "lin")
    # The counter of a module closed over by jax.lax.scan cannot change inside it (the real
    # module's state could not either): each step is counted on the host instead (#19.3), so
    # every step draws anew, and no warning is given.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = mocked(xs)
    assert _specs(out) == _specs(model(xs))
    steps = out[1]
    assert not np.array_equal(steps[0], steps[1])
    assert mocked.lin.call_count == 3


def test_nnx_jit_needs_values_abstract_models_shape_evaluate():
    model = fnnx.abstract(MLP, rngs=nnx.Rngs(0))
    x = jnp.ones((2, 3))
    forward = nnx.jit(lambda m, x: m(x))
    # JAX traces the call (the values are tracers there), then refuses to run it on
    # ShapeDtypeStruct arguments.
    with pytest.raises(TypeError, match="ShapeDtypeStruct"):
        forward(model, x)
    expected = jax.ShapeDtypeStruct((2, 2), jnp.float32)
    assert forward.eval_shape(model, x) == fnnx.eval_shape(model, x) == expected
    # Mocked whole, or materialized, it runs.
    assert forward(fnnx.mock(model, nnx.Linear), x).shape == (2, 2)
    assert forward(fnnx.materialize(fnnx.mock(model, "layers/0")), x).shape == (2, 2)


def test_mock_reads_configuration_through_and_refuses_state():
    model = fnnx.mock(MLP(rngs=nnx.Rngs(0)), nnx.Linear)
    layer = model.layers[1]
    assert (layer.in_features, layer.out_features, layer.use_bias) == (8, 8, True)
    with pytest.raises(
        fnnx.MockAttributeError, match=r"layers/1 is mocked: its attribute 'kernel' holds Param"
    ):
        _ = layer.kernel
    with pytest.raises(AttributeError, match=r"the mock of layers/1, a Linear\) has no attribute"):
        _ = layer.nothing
    assert not hasattr(layer, "nothing")


def test_containers_are_walked_into_never_mocked():
    model = MLP(rngs=nnx.Rngs(0))
    with pytest.raises(
        flaxmock.SelectNothingError,
        match=r"selects only containers: layers \(List\)\..*select its elements: 'layers/\*'",
    ):
        fnnx.mock(model, nnx.List)
    everything = fnnx.mock(model, lambda path, module: path != "")
    assert isinstance(everything.layers, nnx.List)
    assert all(isinstance(layer, fnnx.MockModule) for layer in everything.layers)


def test_summary_notes_vmap_over_an_ensemble():
    class Ensemble(nnx.Module):
        def __init__(self, *, rngs):
            @nnx.split_rngs(splits=4)
            @nnx.vmap(in_axes=0, out_axes=0)
            def make(rngs):
                return nnx.Linear(3, 2, rngs=rngs)

            self.members = make(rngs)

        def __call__(self, x):
            return nnx.vmap(lambda member, x: member(x), in_axes=(0, None))(self.members, x)

    model = fnnx.abstract(Ensemble, rngs=nnx.Rngs(0))
    x = jax.ShapeDtypeStruct((5, 3), jnp.float32)
    rows = fnnx.summary(model, x).rows
    assert [(r.path, r.note, r.param_count) for r in rows] == [
        ("<root>", "", 0),
        ("members", "vmap x4", 4 * (3 * 2 + 2)),
    ]
    assert rows[0].outputs == jax.ShapeDtypeStruct((4, 5, 2), jnp.float32)
    mocked = fnnx.mock(model, nnx.Linear)
    assert mocked.members.info.stack_size == 4
    assert mocked(jnp.ones((5, 3))).shape == (4, 5, 2)
    assert fnnx.summary(mocked, x).rows[1].note == "mocked, vmap x4"


def test_mock_reading_a_replaced_submodule_and_sowing_on_itself():
    class Outer(nnx.Module):
        def __init__(self, *, rngs):
            self.block = Block(4, rngs=rngs)

        def __call__(self, x):
            return self.block.lin(x)  # Reaches into the block.

    mocked = fnnx.mock(Outer(rngs=nnx.Rngs(0)), Block)
    with pytest.raises(fnnx.MockAttributeError, match="its attribute 'lin' holds Linear state"):
        mocked(jnp.ones((5, 4)))

    class Sower(nnx.Module):
        def __call__(self, x):
            self.sow(nnx.Intermediate, "total", x.sum(), init_fn=lambda: 0.0, reduce_fn=jnp.add)
            return x

    class Host(nnx.Module):
        def __init__(self):
            self.sower = Sower()

        def __call__(self, x):
            return self.sower(self.sower(x))

    x = jnp.ones((3,))
    _, real = nnx.capture(Host(), nnx.Intermediate)(x)
    out, sown = nnx.capture(fnnx.mock(Host(), Sower), nnx.Intermediate)(x)
    # A custom reduce_fn is replayed: one scalar, not a tuple of two.
    assert _specs(sown) == _specs(real)
    assert sown["sower"]["total"].get_value().shape == ()
