"""NNX models with the idioms of public NNX code, in small models of our own.

``tests/test_nnx_wild.py`` runs every check over :data:`CASES`. Each case reproduces, with a few
features, the idioms that a public NNX model is written with; the code is ours, and the table
names the model that motivated each case.

==================================  ========================================  ======================
case id                             idioms exercised                          motivated by
==================================  ========================================  ======================
mnist_cnn                           nnx.Conv, nnx.BatchNorm and nnx.Linear;   Flax NNX MNIST
                                    nnx.Dropout given rngs at construction    tutorial CNN
                                    and again at call time (rngs=None by
                                    default); nnx.avg_pool held as a
                                    functools.partial attribute; a user
                                    submodule class wrapping built-ins;
                                    train()/eval() switching

gemma                               nnx.Einsum projections, one with a        Gemma-style NNX
                                    leading axis of 2 unpacked into keys and  decoders (flax
                                    values; a helper method (project) called  examples gemma,
                                    by __call__; rotary positions; an         bonsai, tunix)
                                    nnx.Param scale read with [...]; blocks
                                    in an nnx.List; nnx.Embed for lookup and
                                    attend (tied logits); a gated MLP

scan_over_layers                    __init__ under nnx.split_rngs(splits=3)   the scan-over-layers
                                    and nnx.vmap(in_axes=(0, 0)); __call__    example of Flax's NNX
                                    under nnx.scan(in_axes=(0, nnx.Carry),    0.11 migration guide
                                    out_axes=nnx.Carry); Linear, BatchNorm,
                                    Dropout and a raw nnx.Param stacked
                                    three times

mha_decode_cache                    nnx.MultiHeadAttention(decode=True) with  autoregressive
                                    its cache made by init_cache in a         decoding with NNX
                                    factory; a call that advances the cache   attention

lora                                nnx.LoRALinear (an nnx.Linear subclass    LoRA fine-tuning with
                                    with LoRAParam variables) and a bare      NNX
                                    nnx.LoRA

sequential_sow                      nnx.Sequential of user blocks that sow    Flax's NNX guide on
                                    nnx.Intermediate values, read back        intermediates
                                    through nnx.capture
==================================  ========================================  ======================
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoo_parts import lower_triangle, rms_scale, rotate

# --- a small convolutional classifier -------------------------------------------------------


class ConvUnit(nnx.Module):
    """Conv, BatchNorm, ReLU, then 2x2 average pooling held as a ``functools.partial``."""

    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(cin, cout, kernel_size=(3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(cout, rngs=rngs)
        self.pool = functools.partial(nnx.avg_pool, window_shape=(2, 2), strides=(2, 2))

    def __call__(self, x):
        return self.pool(nnx.relu(self.norm(self.conv(x))))


class DigitClassifier(nnx.Module):
    """Two conv units and two Linear layers; the dropouts take ``rngs`` at call time."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.unit_a = ConvUnit(1, 4, rngs=rngs)
        self.drop_maps = nnx.Dropout(rate=0.1, rngs=rngs)
        self.unit_b = ConvUnit(4, 4, rngs=rngs)
        self.hidden = nnx.Linear(16, 4, rngs=rngs)
        self.drop_hidden = nnx.Dropout(rate=0.1, rngs=rngs)
        self.logits = nnx.Linear(4, 10, rngs=rngs)

    def __call__(self, x, rngs: nnx.Rngs | None = None):
        x = self.unit_b(self.drop_maps(self.unit_a(x), rngs=rngs))
        h = nnx.relu(self.hidden(x.reshape(x.shape[0], -1)))
        return self.logits(self.drop_hidden(h, rngs=rngs))


# --- a decoder with einsum attention and a tied embedding -----------------------------------


class OffsetScaleNorm(nnx.Module):
    """RMS normalisation whose learned scale is stored as an offset from one."""

    def __init__(self, dim: int):
        self.offset = nnx.Param(jnp.zeros((dim,)))

    def __call__(self, x):
        return rms_scale(x) * (1.0 + self.offset[...])


class EinsumAttention(nnx.Module):
    """Causal attention from ``nnx.Einsum`` projections; keys and values come from one einsum
    with a leading axis of 2. ``project`` is a helper method called by ``__call__``."""

    def __init__(self, dim: int, heads: int, head_dim: int, *, rngs: nnx.Rngs):
        self.to_q = nnx.Einsum("btd,hdk->bthk", (heads, dim, head_dim), rngs=rngs)
        self.to_kv = nnx.Einsum("bsd,phdk->pbshk", (2, heads, dim, head_dim), rngs=rngs)
        self.to_out = nnx.Einsum("bthk,hkd->btd", (heads, head_dim, dim), rngs=rngs)

    def project(self, x, positions):
        k, v = self.to_kv(x)
        return rotate(self.to_q(x), positions), rotate(k, positions), v

    def __call__(self, x, positions, causal):
        q, k, v = self.project(x, positions)
        logits = jnp.einsum("bthk,bshk->bhts", q, k) / np.sqrt(q.shape[-1])
        probs = jax.nn.softmax(jnp.where(causal, logits, -1e10), axis=-1)
        return self.to_out(jnp.einsum("bhts,bshk->bthk", probs, v))


class GatedMLP(nnx.Module):
    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs):
        self.wide = nnx.Linear(dim, 2 * hidden, use_bias=False, rngs=rngs)
        self.narrow = nnx.Linear(hidden, dim, use_bias=False, rngs=rngs)

    def __call__(self, x):
        gate, value = jnp.split(self.wide(x), 2, axis=-1)
        return self.narrow(nnx.gelu(gate) * value)


class DecoderBlock(nnx.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, hidden: int, *, rngs: nnx.Rngs):
        self.norm_attn = OffsetScaleNorm(dim)
        self.attn = EinsumAttention(dim, heads, head_dim, rngs=rngs)
        self.norm_mlp = OffsetScaleNorm(dim)
        self.mlp = GatedMLP(dim, hidden, rngs=rngs)

    def __call__(self, x, positions, causal):
        x = x + self.attn(self.norm_attn(x), positions, causal)
        return x + self.mlp(self.norm_mlp(x))


class TiedDecoderLM(nnx.Module):
    """Blocks in an ``nnx.List``; the embedding is used for lookup and, by ``attend``, logits."""

    def __init__(self, vocab=16, dim=4, depth=2, heads=2, head_dim=4, hidden=4, *, rngs):
        self.embed = nnx.Embed(vocab, dim, rngs=rngs)
        self.layers = nnx.List(
            [DecoderBlock(dim, heads, head_dim, hidden, rngs=rngs) for _ in range(depth)]
        )
        self.norm_out = OffsetScaleNorm(dim)
        self.input_scale = float(np.sqrt(dim))

    def __call__(self, tokens):
        n = tokens.shape[1]
        positions = jnp.broadcast_to(jnp.arange(n), tokens.shape)
        x = self.embed(tokens) * self.input_scale
        for layer in self.layers:
            x = layer(x, positions, lower_triangle(n))
        return self.embed.attend(self.norm_out(x))


# --- one block repeated by vmap at construction and scan at call ----------------------------


class RepeatedBlock(nnx.Module):
    """Three stacked copies of a block: built by ``nnx.vmap`` over split rngs, applied in
    sequence by ``nnx.scan`` with the input as the carry."""

    @nnx.split_rngs(splits=3)
    @nnx.vmap(in_axes=(0, 0))
    def __init__(self, rngs: nnx.Rngs):
        self.proj = nnx.Linear(4, 4, rngs=rngs)
        self.norm = nnx.BatchNorm(4, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.gain = nnx.Param(jnp.ones((4,)))

    @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry)
    def __call__(self, x):
        h = self.norm(self.proj(x))
        return self.drop(nnx.gelu(h)) * self.gain[...]


class StackedRegressor(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.stack = RepeatedBlock(rngs)
        self.head = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        return self.head(self.stack(x))


# --- incremental decoding with the nnx.MultiHeadAttention cache -----------------------------


class IncrementalDecoder(nnx.Module):
    def __init__(self, vocab: int = 16, dim: int = 4, *, rngs: nnx.Rngs):
        self.tokens = nnx.Embed(vocab, dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=2, in_features=dim, decode=True, rngs=rngs)
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.out = nnx.Linear(dim, vocab, rngs=rngs)

    def __call__(self, tokens):
        x = self.tokens(tokens)
        return self.out(self.norm(x + self.attn(x, deterministic=True)))


def make_incremental_decoder(*, rngs: nnx.Rngs) -> IncrementalDecoder:
    """The decoder with its attention cache made for a batch of 2 and 6 positions."""
    model = IncrementalDecoder(rngs=rngs)
    model.attn.init_cache((2, 6, 4))
    return model


# --- low-rank adaptation --------------------------------------------------------------------


class LoraModel(nnx.Module):
    """An ``nnx.LoRALinear`` (a Linear with a low-rank update) and a bare ``nnx.LoRA``."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.base = nnx.LoRALinear(4, 4, lora_rank=2, rngs=rngs)
        self.adapter = nnx.LoRA(4, 2, 3, rngs=rngs)

    def __call__(self, x):
        return self.adapter(nnx.relu(self.base(x)))


# --- nnx.Sequential of blocks that sow ------------------------------------------------------


class SowBlock(nnx.Module):
    """A Linear whose pre-activation is sown as an ``nnx.Intermediate``."""

    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs):
        self.lin = nnx.Linear(din, dout, rngs=rngs)

    def __call__(self, x):
        pre = self.lin(x)
        self.sow(nnx.Intermediate, "pre_act", pre)
        return nnx.relu(pre)


def make_sequential(*, rngs: nnx.Rngs) -> nnx.Sequential:
    blocks = [SowBlock(4, 4, rngs=rngs) for _ in range(2)]
    return nnx.Sequential(*blocks, nnx.Linear(4, 2, rngs=rngs))


def forward_capturing(model, x):
    """Runs ``model`` under ``nnx.capture``, which ``sow`` needs: returns (output, sown)."""
    return nnx.capture(model, nnx.Intermediate)(x)


# --- the cases ------------------------------------------------------------------------------


def _call(model, *args):
    return model(*args)


@dataclasses.dataclass(frozen=True)
class Case:
    """A model factory, example inputs, and what the checks expect of it.

    Attributes:
      make: The factory, called with ``rngs=``.
      args: Positional inputs.
      builtins: Flax classes whose calls interception must see.
      partial: What to mock before materializing the rest.
      intercept_args: Inputs for the interception check, of shapes no other test uses: JAX
        reuses the trace of an ``@nnx.scan`` method body it has seen (no Python runs then).
      call: How the model is run: ``call(model, *args)``.
    """

    make: Callable[..., nnx.Module]
    args: tuple[Any, ...]
    builtins: frozenset[str]
    partial: Any
    intercept_args: tuple[Any, ...] | None = None
    call: Callable[..., Any] = _call


CASES = {
    "mnist_cnn": Case(
        DigitClassifier,
        (jnp.ones((2, 8, 8, 1)),),
        frozenset({"Conv", "BatchNorm", "Dropout", "Linear"}),
        nnx.Conv,
    ),
    "gemma": Case(
        TiedDecoderLM,
        (jnp.arange(10, dtype=jnp.int32).reshape(2, 5),),
        frozenset({"Embed", "Einsum", "Linear"}),
        DecoderBlock,
    ),
    "scan_over_layers": Case(
        StackedRegressor,
        (jnp.ones((2, 4)),),
        frozenset({"Linear", "BatchNorm", "Dropout"}),
        "stack/proj",
        intercept_args=(jnp.ones((7, 4)),),
    ),
    "mha_decode_cache": Case(
        make_incremental_decoder,
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
