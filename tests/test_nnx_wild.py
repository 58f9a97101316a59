"""``flaxmock.nnx`` on NNX models written the way third-party code writes them.

Each model is a tiny copy of a real style: the MNIST CNN of the Flax examples (``nnx.Conv``,
``nnx.BatchNorm``, ``nnx.Dropout`` given ``rngs`` at call time, ``nnx.avg_pool`` through
``functools.partial``), a Gemma-style decoder (``nnx.Einsum`` attention with a helper method,
an ``nnx.Param`` RMSNorm scale, ``nnx.Embed`` tied through ``attend``, layers in an
``nnx.List``), the "scan over layers" of the Flax 0.11 migration guide (``__init__`` under
``nnx.split_rngs`` + ``nnx.vmap``, ``__call__`` under ``nnx.scan``), an autoregressive decoder with
the ``nnx.MultiHeadAttention`` cache, ``nnx.LoRALinear`` and ``nnx.LoRA``, and ``nnx.Sequential``
of blocks that ``sow`` intermediates. For each: ``abstract`` allocates nothing, ``eval_shape``
gives the real output specs, a mock of every submodule class gives outputs of the real specs
while the input model is untouched, ``materialize`` gives the un-mocked parts the factory's
values, interception sees Flax's built-in modules, and ``summary`` renders.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import flaxmock
import flaxmock.nnx as fnnx

# --------------------------------------------------------------------------------------------
# 1. The CNN of the Flax MNIST example.


class CNN(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 4, kernel_size=(3, 3), rngs=rngs)
        self.batch_norm1 = nnx.BatchNorm(4, rngs=rngs)
        self.dropout1 = nnx.Dropout(rate=0.025, rngs=rngs)
        self.conv2 = nnx.Conv(4, 4, kernel_size=(3, 3), rngs=rngs)
        self.batch_norm2 = nnx.BatchNorm(4, rngs=rngs)
        self.avg_pool = functools.partial(nnx.avg_pool, window_shape=(2, 2), strides=(2, 2))
        self.linear1 = nnx.Linear(16, 4, rngs=rngs)
        self.dropout2 = nnx.Dropout(rate=0.025, rngs=rngs)
        self.linear2 = nnx.Linear(4, 10, rngs=rngs)

    def __call__(self, x, rngs: nnx.Rngs | None = None):
        x = self.avg_pool(nnx.relu(self.batch_norm1(self.dropout1(self.conv1(x), rngs=rngs))))
        x = self.avg_pool(nnx.relu(self.batch_norm2(self.conv2(x))))
        x = x.reshape(x.shape[0], -1)
        x = nnx.relu(self.dropout2(self.linear1(x), rngs=rngs))
        return self.linear2(x)


# --------------------------------------------------------------------------------------------
# 2. A Gemma-style decoder.


class RMSNorm(nnx.Module):
    def __init__(self, dim: int):
        self.scale = nnx.Param(jnp.zeros((dim,)))

    def __call__(self, x):
        var = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        return x * jax.lax.rsqrt(var + 1e-6) * (1 + self.scale[...])


def apply_rope(x, positions, max_wavelength=10_000):
    freq = 2 * jnp.arange(x.shape[-1] // 2) / x.shape[-1]
    sinusoid = positions[..., None] / (max_wavelength**freq)[None, None, :]
    sin, cos = jnp.sin(sinusoid)[..., None, :], jnp.cos(sinusoid)[..., None, :]
    first, second = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)


class Attention(nnx.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, *, rngs: nnx.Rngs):
        self.q_einsum = nnx.Einsum("BTD,NDH->BTNH", (heads, dim, head_dim), rngs=rngs)
        self.kv_einsum = nnx.Einsum("BSD,CKDH->CBSKH", (2, heads, dim, head_dim), rngs=rngs)
        self.attn_vec_einsum = nnx.Einsum("BTNH,NHD->BTD", (heads, head_dim, dim), rngs=rngs)
        self.head_dim = head_dim

    def compute_qkv(self, x, positions):
        q = apply_rope(self.q_einsum(x), positions)
        k, v = self.kv_einsum(x)
        return q, apply_rope(k, positions), v

    def __call__(self, x, positions, mask):
        q, k, v = self.compute_qkv(x, positions)
        logits = jnp.einsum("BTNH,BSNH->BTNS", q * self.head_dim**-0.5, k)
        logits = jnp.where(mask[:, :, None, :], logits, -1e10)
        probs = jax.nn.softmax(logits, axis=-1).astype(k.dtype)
        return self.attn_vec_einsum(jnp.einsum("BTNS,BSNH->BTNH", probs, v))


class FeedForward(nnx.Module):
    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs):
        self.gate = nnx.Linear(dim, hidden, use_bias=False, rngs=rngs)
        self.up = nnx.Linear(dim, hidden, use_bias=False, rngs=rngs)
        self.down = nnx.Linear(hidden, dim, use_bias=False, rngs=rngs)

    def __call__(self, x):
        return self.down(nnx.gelu(self.gate(x)) * self.up(x))


class DecoderLayer(nnx.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, hidden: int, *, rngs: nnx.Rngs):
        self.pre_attention_norm = RMSNorm(dim)
        self.attn = Attention(dim, heads, head_dim, rngs=rngs)
        self.pre_ffw_norm = RMSNorm(dim)
        self.mlp = FeedForward(dim, hidden, rngs=rngs)

    def __call__(self, x, positions, mask):
        x = x + self.attn(self.pre_attention_norm(x), positions, mask)
        return x + self.mlp(self.pre_ffw_norm(x))


class Gemma(nnx.Module):
    # dim == head_dim == hidden: kernels of equal shapes share their compiled initializer.
    def __init__(self, vocab=16, dim=4, depth=2, heads=2, head_dim=4, hidden=4, *, rngs):
        self.embedder = nnx.Embed(vocab, dim, rngs=rngs)
        self.layers = nnx.List(
            [DecoderLayer(dim, heads, head_dim, hidden, rngs=rngs) for _ in range(depth)]
        )
        self.final_norm = RMSNorm(dim)
        self.dim = dim

    def __call__(self, tokens):
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
        mask = jnp.tril(jnp.ones((tokens.shape[1], tokens.shape[1]), bool))[None]
        x = self.embedder(tokens) * jnp.sqrt(float(self.dim))
        for layer in self.layers:
            x = layer(x, positions, mask)
        return self.embedder.attend(self.final_norm(x))


# --------------------------------------------------------------------------------------------
# 3. Scan over layers, as in the Flax 0.11 migration guide.


class ScanMLP(nnx.Module):
    @nnx.split_rngs(splits=3)
    @nnx.vmap(in_axes=(0, 0))
    def __init__(self, rngs: nnx.Rngs):
        self.linear = nnx.Linear(4, 4, rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.node = nnx.Param(jnp.ones((2,)))

    @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry)
    def __call__(self, x):
        return nnx.gelu(self.dropout(self.bn(self.linear(x))))


class ScanModel(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.stack = ScanMLP(rngs)
        self.head = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        return self.head(self.stack(x))


# --------------------------------------------------------------------------------------------
# 4. Autoregressive decoding with the nnx.MultiHeadAttention cache.


class CachedDecoder(nnx.Module):
    def __init__(self, vocab: int = 16, dim: int = 4, *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(vocab, dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=2, in_features=dim, decode=True, rngs=rngs)
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.head = nnx.Linear(dim, vocab, rngs=rngs)

    def __call__(self, tokens):
        x = self.embed(tokens)
        return self.head(self.norm(x + self.attn(x, deterministic=True)))


def make_cached_decoder(*, rngs: nnx.Rngs) -> CachedDecoder:
    model = CachedDecoder(rngs=rngs)
    model.attn.init_cache((2, 6, 4))
    return model


# --------------------------------------------------------------------------------------------
# 5. LoRA.


class LoraModel(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.base = nnx.LoRALinear(4, 4, lora_rank=2, rngs=rngs)
        self.adapter = nnx.LoRA(4, 2, 3, rngs=rngs)

    def __call__(self, x):
        return self.adapter(nnx.relu(self.base(x)))


# --------------------------------------------------------------------------------------------
# 6. nnx.Sequential of blocks that sow intermediates, read with nnx.capture.


class SowBlock(nnx.Module):
    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs):
        self.lin = nnx.Linear(din, dout, rngs=rngs)

    def __call__(self, x):
        h = self.lin(x)
        self.sow(nnx.Intermediate, "pre_act", h)
        return nnx.relu(h)


def make_sequential(*, rngs: nnx.Rngs) -> nnx.Sequential:
    return nnx.Sequential(
        SowBlock(4, 4, rngs=rngs), SowBlock(4, 4, rngs=rngs), nnx.Linear(4, 2, rngs=rngs)
    )


def forward_capturing(model, x):
    """The forward pass the Flax guide on intermediates writes (``sow`` needs a capture)."""
    return nnx.capture(model, nnx.Intermediate)(x)


def _call(model, *args):
    return model(*args)


# --------------------------------------------------------------------------------------------
# The cases.


@dataclasses.dataclass(frozen=True)
class Case:
    """A model factory, example inputs, and what the checks expect of it.

    Attributes:
      make: The factory, called with ``rngs=``.
      args: Positional inputs.
      call: How the model is run: ``call(model, *args)``.
      builtins: Flax classes whose calls interception must see.
      partial: What to mock before materializing the rest.
      intercept_args: Inputs for the interception check, of shapes no other test uses: JAX
        reuses the trace of an ``@nnx.scan`` method body it has seen (no Python runs then).
    """

    make: Callable[..., nnx.Module]
    args: tuple[Any, ...]
    builtins: frozenset[str]
    partial: Any
    intercept_args: tuple[Any, ...] | None = None
    call: Callable[..., Any] = _call


CASES = {
    "mnist_cnn": Case(
        CNN,
        (jnp.ones((2, 8, 8, 1)),),
        frozenset({"Conv", "BatchNorm", "Dropout", "Linear"}),
        nnx.Conv,
    ),
    "gemma": Case(
        Gemma,
        (jnp.arange(10, dtype=jnp.int32).reshape(2, 5),),
        frozenset({"Embed", "Einsum", "Linear"}),
        DecoderLayer,
    ),
    "scan_over_layers": Case(
        ScanModel,
        (jnp.ones((2, 4)),),
        frozenset({"Linear", "BatchNorm", "Dropout"}),
        "stack/linear",
        intercept_args=(jnp.ones((7, 4)),),
    ),
    "mha_decode_cache": Case(
        make_cached_decoder,
        (jnp.ones((2, 1), jnp.int32),),
        frozenset({"Embed", "MultiHeadAttention", "LinearGeneral", "LayerNorm", "Linear"}),
        nnx.MultiHeadAttention,
    ),
    "lora": Case(LoraModel, (jnp.ones((2, 4)),), frozenset({"LoRALinear", "LoRA"}), nnx.LoRA),
    "sequential_sow": Case(
        make_sequential,
        (jnp.ones((2, 4)),),
        frozenset({"Sequential", "Linear"}),
        SowBlock,
        call=forward_capturing,
    ),
}
IDS = list(CASES)


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
    out = {}
    for path, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Variable):
            value = var.get_value()
            if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
                value = jax.random.key_data(value)
            out[path] = (var, np.asarray(value))
    return out


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
    assert fnnx.eval_shape(model, *_specs(case.args), method=case.call) == _real_out(name)
    real = _fresh(name)
    before = _values(real)
    assert fnnx.eval_shape(real, *case.args, method=case.call) == _real_out(name)
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
    assert mocked.dropout1.rate == 0.025
    mocked.train()
    assert mocked.dropout1.deterministic is False
    y_train = mocked(x, rngs=nnx.Rngs(1))
    mocked.eval()
    assert mocked.dropout1.deterministic is True
    assert _specs(mocked(x)) == _specs(y_train) == _real_out("mnist_cnn")
    assert mocked.dropout1.call_count == 2
    assert not hasattr(mocked.dropout1, "no_such_attribute")


def test_gemma_tied_embedding_mock_answers_both_methods():
    model = _fresh("gemma")
    tokens = CASES["gemma"].args[0]
    mocked = fnnx.mock(model, nnx.Embed)
    assert _specs(mocked(tokens)) == _real_out("gemma")
    embedder = mocked.embedder
    assert embedder.call_count == 2
    assert [spec[0][0].shape for spec in embedder.call_args_list] == [(2, 5), (2, 5, 4)]
    # The helper method of the attention is its own row; the mocked layer hides its children.
    rows = fnnx.summary(fnnx.mock(model, "layers/0"), tokens).rows
    assert ("layers/0", "DecoderLayer", "mocked") in [(r.path, r.module_type, r.note) for r in rows]
    assert ("layers/1/attn", "compute_qkv") in [(r.path, r.method) for r in rows]
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
    mocked = fnnx.mock(model, "stack/linear")
    linear = mocked.stack.linear
    assert linear.info.stack_size == 3
    y1, y2 = mocked(x), nnx.jit(lambda m, x: m(x))(mocked, x)
    assert _specs(y1) == _specs(y2) == _real_out("scan_over_layers")
    assert not np.array_equal(y1, y2)
    np.testing.assert_array_equal(linear.counter.get_value(), [[0, 2], [1, 2], [2, 2]])
    assert fnnx.mock(model, "stack").stack.info.stack_size == 3
    with pytest.raises(fnnx.StackSizeError, match=r"stack/linear \(Linear\).*stack_size=3"):
        fnnx.mock(model, "stack/linear", stack_size=4)


def test_scan_over_layers_summary_notes_and_repeats():
    model = _fresh("scan_over_layers")
    x = jnp.ones((2, 4))
    model(x)  # JAX now holds a trace of the scanned body for these shapes.
    for _ in range(2):
        rows = fnnx.summary(model, x).rows
        assert [(r.path, r.module_type, r.note) for r in rows] == [
            ("<root>", "ScanModel", ""),
            ("stack", "ScanMLP", ""),
            ("stack/linear", "Linear", "scan x3"),
            ("stack/bn", "BatchNorm", "scan x3"),
            ("stack/dropout", "Dropout", "scan x3"),
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
    # The cache of a mocked attention is gone with it; the rest decodes as usual.
    whole = fnnx.mock(model, nnx.MultiHeadAttention)
    assert _specs(whole(token)) == _real_out("mha_decode_cache")
    assert not any(isinstance(v, nnx.Cache) for _, v in nnx.iter_graph(whole))


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
