"""NNX models for the benchmarks: the Llama example's NNX twin and a ResNet with BatchNorm.

Our own code, nothing downloaded. ``bench/summary.py`` prices the Llama twin (unrolled with an
``nnx.List`` of blocks, or scanned with ``nnx.scan`` over blocks stacked by ``nnx.vmap``);
``bench/mocker.py`` mocks one block of it and every top-level call of it and of the ResNet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from flaxmock.examples import llama


def _dense(c: llama.LlamaConfig, d_in: int, d_out: int, rngs: Any) -> nnx.Linear:
    return nnx.Linear(d_in, d_out, use_bias=False, dtype=c.dtype, param_dtype=c.param_dtype,
                      rngs=rngs)  # fmt: skip


def _norm(c: llama.LlamaConfig, rngs: Any) -> nnx.RMSNorm:
    return nnx.RMSNorm(c.dim, epsilon=c.norm_eps, dtype=c.dtype, param_dtype=c.param_dtype,
                       rngs=rngs)  # fmt: skip


class Attention(nnx.Module):
    """Grouped-query attention with rotary positions; sows its probabilities if asked."""

    def __init__(self, c: llama.LlamaConfig, rngs: Any, *, sow_attention: bool = False):
        self.c, self.sow_attention = c, sow_attention
        self.q = _dense(c, c.dim, c.n_heads * c.head_dim, rngs)
        self.k = _dense(c, c.dim, c.n_kv_heads * c.head_dim, rngs)
        self.v = _dense(c, c.dim, c.n_kv_heads * c.head_dim, rngs)
        self.o = _dense(c, c.n_heads * c.head_dim, c.dim, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.c
        b, t, _ = x.shape
        positions = jnp.arange(t)
        q = llama.rotary(self.q(x).reshape(b, t, c.n_heads, c.head_dim), positions, c.rope_theta)
        k = llama.rotary(self.k(x).reshape(b, t, c.n_kv_heads, c.head_dim), positions,
                         c.rope_theta)  # fmt: skip
        v = self.v(x).reshape(b, t, c.n_kv_heads, c.head_dim)
        groups = c.n_heads // c.n_kv_heads
        k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / c.head_dim**0.5
        causal = jnp.tril(jnp.ones((t, t), bool))
        weights = jax.nn.softmax(jnp.where(causal, logits, -1e30), axis=-1)
        if self.sow_attention:
            self.sow(nnx.Intermediate, "attn_weights", weights)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(c.dtype), v)
        return self.o(out.reshape(b, t, c.n_heads * c.head_dim))


class MLP(nnx.Module):
    """The SwiGLU feed-forward layer."""

    def __init__(self, c: llama.LlamaConfig, rngs: Any):
        self.gate = _dense(c, c.dim, c.ffn_dim, rngs)
        self.up = _dense(c, c.dim, c.ffn_dim, rngs)
        self.down = _dense(c, c.ffn_dim, c.dim, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(jax.nn.silu(self.gate(x)) * self.up(x))


class Block(nnx.Module):
    """A pre-norm decoder block."""

    def __init__(self, c: llama.LlamaConfig, rngs: Any, *, sow_attention: bool = False):
        self.attn_norm = _norm(c, rngs)
        self.attn = Attention(c, rngs, sow_attention=sow_attention)
        self.mlp_norm, self.mlp = _norm(c, rngs), MLP(c, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x + self.attn(self.attn_norm(x))
        return h + self.mlp(self.mlp_norm(h))


class Llama(nnx.Module):
    """The NNX twin of ``flaxmock.examples.llama.Llama(c)`` (same shapes and FLOPs)."""

    def __init__(self, c: llama.LlamaConfig, rngs: Any, *, sow_attention: bool = False):
        self.c = c
        self.embed = nnx.Embed(c.vocab_size, c.dim, dtype=c.dtype, param_dtype=c.param_dtype,
                               rngs=rngs)  # fmt: skip
        if c.scan_layers:

            @nnx.split_rngs(splits=c.n_layers)
            @nnx.vmap(in_axes=0, out_axes=0)
            def make(rngs: Any) -> Block:
                return Block(c, rngs, sow_attention=sow_attention)

            self.blocks = make(rngs)
        else:
            self.layers = nnx.List(
                [Block(c, rngs, sow_attention=sow_attention) for _ in range(c.n_layers)]
            )
        self.norm = _norm(c, rngs)
        self.lm_head = _dense(c, c.dim, c.vocab_size, rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        h = self.embed(tokens)
        if self.c.scan_layers:

            @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
            def step(h: jax.Array, block: Block) -> jax.Array:
                return block(h)

            h = step(h, self.blocks)
        else:
            for block in self.layers:
                h = block(h)
        return self.lm_head(self.norm(h)).astype(jnp.float32)


def llama_model(config: llama.LlamaConfig, rngs: Any, *, sow_attention: bool = False) -> Llama:
    """The NNX twin of the example at ``config``."""
    return Llama(config, rngs, sow_attention=sow_attention)


class ResNetBlock(nnx.Module):
    """The basic residual block (two 3x3 convolutions, BatchNorm in inference mode)."""

    def __init__(self, c_in: int, filters: int, strides: int, rngs: Any):
        def conv(c_in: int, kernel: int, strides: int = 1) -> nnx.Conv:
            return nnx.Conv(c_in, filters, (kernel, kernel), strides=strides, use_bias=False,
                            rngs=rngs)  # fmt: skip

        def norm() -> nnx.BatchNorm:
            return nnx.BatchNorm(filters, use_running_average=True, momentum=0.9, rngs=rngs)

        self.conv1, self.norm1 = conv(c_in, 3, strides), norm()
        self.conv2, self.norm2 = conv(filters, 3), norm()
        # The projection of the residual where the shape changes (data, also when None).
        needed = strides != 1 or c_in != filters
        self.proj = nnx.data(nnx.List([conv(c_in, 1, strides), norm()]) if needed else None)

    def __call__(self, x: jax.Array) -> jax.Array:
        residual = x
        y = nnx.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        if self.proj is not None:
            residual = self.proj[1](self.proj[0](residual))
        return nnx.relu(residual + y)


class ResNet(nnx.Module):
    """A ResNet in the flax examples' style: a strided 7x7 stem, max pooling, basic blocks."""

    def __init__(
        self,
        stage_sizes: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 1000,
        num_filters: int = 64,
        *,
        rngs: Any,
    ):
        self.conv_init = nnx.Conv(3, num_filters, (7, 7), strides=2, padding=[(3, 3), (3, 3)],
                                  use_bias=False, rngs=rngs)  # fmt: skip
        self.bn_init = nnx.BatchNorm(num_filters, use_running_average=True, rngs=rngs)
        blocks, c_in = [], num_filters
        for i, size in enumerate(stage_sizes):
            for j in range(size):
                filters = num_filters * 2**i
                blocks.append(ResNetBlock(c_in, filters, 2 if i > 0 and j == 0 else 1, rngs))
                c_in = filters
        self.blocks = nnx.List(blocks)
        self.head = nnx.Linear(c_in, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.bn_init(self.conv_init(x)))
        x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        for block in self.blocks:
            x = block(x)
        return self.head(jnp.mean(x, axis=(1, 2)))
