"""``flaxmock.nnx`` on NNX models written with the idioms of third-party code.

The models and their case records live in ``tests/zoo_nnx_wild.py`` (a convolutional classifier,
a decoder with einsum attention and a tied embedding, a block stacked by ``nnx.vmap`` and applied
by ``nnx.scan``, the ``nnx.MultiHeadAttention`` decode cache, ``nnx.LoRALinear`` and
``nnx.LoRA``, an ``nnx.Sequential`` of blocks that ``sow``). For each: ``abstract`` allocates
nothing, ``eval_shape`` gives the real output specs, a mock of every submodule class gives
outputs of the real specs while the input model is untouched, ``materialize`` gives the
un-mocked parts the factory's values, interception sees Flax's built-in modules, and
``summary`` renders.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import flaxmock
import flaxmock.nnx as fnnx
from helpers import nnx_values
from zoo_nnx_wild import CASES, IDS, LoraModel, SowBlock, forward_capturing


def _specs(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


@functools.cache
def _pristine(name: str) -> tuple[nnx.Module, Any]:
    """A model built by the factory with ``nnx.Rngs(0)`` (never called), and its output specs.

    Built once per case: compiling the eager operations of a model is what takes time here.
    Tests work on ``nnx.clone`` copies.
    """
    case = CASES[name]
    model = case.make(rngs=nnx.Rngs(0))
    return model, _specs(case.call(nnx.clone(model), *case.args))


def _fresh(name: str) -> nnx.Module:
    return nnx.clone(_pristine(name)[0])


def _real_out(name: str) -> Any:
    """The output specs of a real run."""
    return _pristine(name)[1]


def _values(model) -> dict:
    """``path -> (variable, value as NumPy)`` of every variable (random keys as key data)."""
    return nnx_values(model, with_variables=True)


def _assert_untouched(before: dict, model) -> None:
    """Same variables (the very objects) with the same values."""
    after = _values(model)
    assert after.keys() == before.keys()
    for path, (var, value) in before.items():
        assert after[path][0] is var, path
        np.testing.assert_array_equal(after[path][1], value, err_msg=str(path))


def _submodule_classes(model) -> list[type]:
    classes = {
        type(module)
        for path, module in nnx.iter_graph(model)
        if path and isinstance(module, nnx.Module) and not isinstance(module, nnx.List)
    }
    return sorted(classes, key=lambda cls: cls.__name__)


# --------------------------------------------------------------------------------------------
# The checks, for every case.


@pytest.mark.parametrize("name", IDS)
def test_abstract_allocates_nothing_and_eval_shape_is_real(name):
    case = CASES[name]
    model = fnnx.abstract(case.make, rngs=nnx.Rngs(0))
    values = [var.get_value() for _, var in nnx.iter_graph(model) if isinstance(var, nnx.Variable)]
    assert values and all(isinstance(v, jax.ShapeDtypeStruct) for v in values)
    assert fnnx.eval_shape(case.call, model, *_specs(case.args)) == _real_out(name)
    real = _fresh(name)
    before = _values(real)
    assert fnnx.eval_shape(case.call, real, *case.args) == _real_out(name)
    _assert_untouched(before, real)


@pytest.mark.parametrize("name", IDS)
def test_mock_of_each_submodule_class_gives_real_specs(name):
    case = CASES[name]
    model = _fresh(name)
    before = _values(model)
    classes = _submodule_classes(model)
    assert len(classes) >= 2
    for cls in classes:
        mocked = fnnx.mock(model, cls)
        assert any(
            isinstance(m, fnnx.MockModule) and issubclass(m.info.module_type, cls)
            for _, m in nnx.iter_graph(mocked)
        )
        out = case.call(mocked, *case.args)
        assert _specs(out) == _real_out(name), cls.__name__
        _assert_untouched(before, model)


@pytest.mark.parametrize("name", IDS)
def test_materialize_gives_unmocked_parts_the_factory_values(name):
    case = CASES[name]
    mocked = fnnx.mock(fnnx.abstract(case.make, rngs=nnx.Rngs(0)), case.partial)
    # (Called directly: a call failing inside nnx.capture leaves capture state in the model.)
    with pytest.raises(flaxmock.AbstractParameterError):
        mocked(*case.args)
    real = fnnx.materialize(mocked, nnx.Rngs(0))
    reference = _values(_fresh(name))
    compared = 0
    for path, (var, value) in _values(real).items():
        if isinstance(var, fnnx.MockCounter):
            continue
        np.testing.assert_allclose(value, reference[path][1], rtol=1e-6, err_msg=str(path))
        compared += 1
    assert compared
    assert _specs(case.call(real, *case.args)) == _real_out(name)


@pytest.mark.parametrize("name", IDS)
def test_intercept_sees_builtin_module_calls(name):
    case = CASES[name]
    model = _fresh(name)
    seen = set()

    def log(next_fun, args, kwargs, context):
        seen.add(type(context.module).__name__)
        return next_fun(*args, **kwargs)

    with fnnx.intercept_methods(log):
        case.call(model, *(case.intercept_args or case.args))
    assert case.builtins <= seen
    assert type(model).__name__ in seen
    assert "List" not in seen


@pytest.mark.parametrize("name", IDS)
def test_summary_renders_and_counts_every_parameter(name):
    case = CASES[name]
    model = fnnx.abstract(case.make, rngs=nnx.Rngs(0))
    table = fnnx.summary(model, *_specs(case.args), method=case.call)
    text = str(table)
    for cls in case.builtins:
        assert cls in text
    assert table.rows[0].outputs == jax.tree.leaves(_real_out(name))[0]
    n_params = sum(
        int(np.prod(v.get_value().shape))
        for _, v in nnx.iter_graph(model)
        if isinstance(v, nnx.Param)
    )
    assert table.total_params == n_params


# --------------------------------------------------------------------------------------------
# What each style brings of its own.


def test_cnn_dropout_rngs_at_call_time_and_train_eval_reach_the_mock():
    model = _fresh("mnist_cnn")
    x = jnp.ones((2, 8, 8, 1))
    mocked = fnnx.mock(model, nnx.Dropout)
    # Configuration reads through the mock; set_attributes (train/eval) writes through it.
    assert mocked.drop_maps.rate == 0.1
    mocked.train()
    assert mocked.drop_maps.deterministic is False
    y_train = mocked(x, rngs=nnx.Rngs(1))
    mocked.eval()
    assert mocked.drop_maps.deterministic is True
    assert _specs(mocked(x)) == _specs(y_train) == _real_out("mnist_cnn")
    assert mocked.drop_maps.call_count == 2
    assert not hasattr(mocked.drop_maps, "no_such_attribute")


def test_gemma_tied_embedding_mock_answers_both_methods():
    model = _fresh("gemma")
    tokens = CASES["gemma"].args[0]
    mocked = fnnx.mock(model, nnx.Embed)
    assert _specs(mocked(tokens)) == _real_out("gemma")
    embed = mocked.embed
    assert embed.call_count == 2
    assert [spec[0][0].shape for spec in embed.call_args_list] == [(2, 5), (2, 5, 4)]
    # The helper method of the attention is its own row; the mocked layer hides its children.
    rows = fnnx.summary(fnnx.mock(model, "layers/0"), tokens).rows
    assert ("layers/0", "DecoderBlock", "mocked") in [(r.path, r.module_type, r.note) for r in rows]
    assert ("layers/1/attn", "project") in [(r.path, r.method) for r in rows]
    assert not any(r.path.startswith("layers/0/") for r in rows)


def test_gemma_reading_a_mocked_parameter_names_the_fix():
    class Tied(nnx.Module):
        def __init__(self, *, rngs):
            self.embed = nnx.Embed(8, 4, rngs=rngs)

        def __call__(self, tokens):
            return self.embed(tokens) @ self.embed.embedding[...].T

    mocked = fnnx.mock(Tied(rngs=nnx.Rngs(0)), nnx.Embed)
    with pytest.raises(
        fnnx.MockAttributeError,
        match=r"(?s)embed is mocked: its attribute 'embedding' holds Param.*Embed.*"
        r"1\. mock the code that reads 'embedding'.*2\. do not mock embed",
    ):
        mocked(jnp.ones((2, 3), jnp.int32))


def test_scan_over_layers_mock_inside_the_stack_infers_the_stack():
    model = _fresh("scan_over_layers")
    x = jnp.ones((2, 4))
    mocked = fnnx.mock(model, "stack/proj")
    linear = mocked.stack.proj
    assert linear.info.stack_size == 3
    y1, y2 = mocked(x), nnx.jit(lambda m, x: m(x))(mocked, x)
    assert _specs(y1) == _specs(y2) == _real_out("scan_over_layers")
    assert not np.array_equal(y1, y2)
    np.testing.assert_array_equal(linear.counter.get_value(), [[0, 2], [1, 2], [2, 2]])
    assert fnnx.mock(model, "stack").stack.info.stack_size == 3
    with pytest.raises(fnnx.StackSizeError, match=r"stack/proj \(Linear\).*stack_size=3"):
        fnnx.mock(model, "stack/proj", stack_size=4)


def test_scan_over_layers_summary_notes_and_repeats():
    model = _fresh("scan_over_layers")
    x = jnp.ones((2, 4))
    model(x)  # JAX now holds a trace of the scanned body for these shapes.
    for _ in range(2):
        rows = fnnx.summary(model, x).rows
        assert [(r.path, r.module_type, r.note) for r in rows] == [
            ("<root>", "StackedRegressor", ""),
            ("stack", "RepeatedBlock", ""),
            ("stack/proj", "Linear", "scan x3"),
            ("stack/norm", "BatchNorm", "scan x3"),
            ("stack/drop", "Dropout", "scan x3"),
            ("head", "Linear", ""),
        ]
        assert rows[2].param_count == 3 * (4 * 4 + 4)


def test_decode_cache_advances_in_the_copy_only():
    model = _fresh("mha_decode_cache")
    token = jnp.ones((2, 1), jnp.int32)
    mocked = fnnx.mock(model, "attn/query")
    for _ in range(2):
        assert _specs(mocked(token)) == _real_out("mha_decode_cache")
    assert int(mocked.attn.cache_index[...]) == 2
    assert int(model.attn.cache_index[...]) == 0
    # A mocked attention keeps its cache (#13.4 on NNX); its index advances as the real one's
    # (it needs no parameter), the keys and values (which do) keep their values.
    whole = fnnx.mock(model, nnx.MultiHeadAttention)
    for step in range(2):
        assert _specs(whole(token)) == _real_out("mha_decode_cache")
        assert int(whole.attn.cache_index[...]) == step + 1
    np.testing.assert_array_equal(whole.attn.cached_key[...], model.attn.cached_key[...])
    assert int(model.attn.cache_index[...]) == 0


def test_lora_adapter_mocked_keeps_base_kernel_and_param_types():
    model = fnnx.abstract(LoraModel, rngs=nnx.Rngs(0))
    real = fnnx.materialize(fnnx.mock(model, nnx.LoRA), nnx.Rngs(0))
    reference = _fresh("lora")
    np.testing.assert_array_equal(real.base.kernel[...], reference.base.kernel[...])
    assert isinstance(real.base.lora, fnnx.MockModule)
    assert type(real.base) is nnx.LoRALinear
    # LoRALinear is an nnx.Linear: selecting the class replaces it whole.
    mocked = fnnx.mock(reference, nnx.Linear)
    assert isinstance(mocked.base, fnnx.MockModule)
    assert not any(isinstance(v, nnx.LoRAParam) for _, v in nnx.iter_graph(mocked.base))


def test_sequential_mock_sows_random_intermediates_of_the_real_specs():
    x = jnp.ones((2, 4))
    model = _fresh("sequential_sow")
    _, real = forward_capturing(model, x)
    mocked = fnnx.mock(model, SowBlock)
    out, sown = forward_capturing(mocked, x)
    assert _specs(sown) == _specs(real)
    assert not np.array_equal(
        sown["layers"][0]["pre_act"].get_value()[0], sown["layers"][1]["pre_act"].get_value()[0]
    )
    _, again = nnx.jit(forward_capturing)(mocked, x)
    assert _specs(again) == _specs(real)
    assert not np.array_equal(
        again["layers"][0]["pre_act"].get_value()[0], sown["layers"][0]["pre_act"].get_value()[0]
    )
    # Sowing outside nnx.capture (deprecated by Flax) stores onto the module, mock or not.
    with pytest.warns(DeprecationWarning, match="nnx.capture"):
        mocked(x)
    assert _specs(nnx.pop(mocked, nnx.Intermediate)) == _specs(real)


def test_rnn_cell_mock_reads_cell_configuration():
    # nnx.RNN reads `cell.num_feature_axes` and calls `cell.initialize_carry` before scanning.
    rnn = fnnx.abstract(lambda: nnx.RNN(nnx.GRUCell(4, 5, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(0)))
    x = jnp.ones((2, 3, 4))
    mocked = fnnx.materialize(fnnx.mock(rnn, nnx.GRUCell))  # The RNN's own rngs.
    assert mocked.cell.num_feature_axes == 1
    assert (
        _specs(mocked(x)) == fnnx.eval_shape(rnn, x) == jax.ShapeDtypeStruct((2, 3, 5), jnp.float32)
    )
