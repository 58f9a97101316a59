"""A Llama-style decoder in ``flax.linen``, configurable from a toy up to 8B and 70B sizes.

Token embedding, blocks of RMSNorm, grouped-query attention with rotary position embeddings
(RoPE) and a SwiGLU MLP, a final norm and an output projection, either tied to the embedding
(``embed.attend``) or a separate ``lm_head``. Parameters carry logical partitioning metadata
(``nn.with_logical_partitioning``), as in MaxText-style models. With ``scan_layers`` the blocks
are stacked with ``nn.scan(nn.remat(...))`` over a leading layer axis. With ``decode`` the
attention keeps a decode cache (``cache`` collection: keys, values and the next position), as
Flax's ``MultiHeadDotProductAttention(decode=True)`` does: ``init`` with a full-length input
sizes it, and each ``apply(..., mutable=["cache"])`` appends the given tokens.

It exercises what real models do and flaxmock must handle: ``setup()`` and ``@nn.compact``
modules, a self-method call (``Attention._split_heads``), ``super().__call__`` (the scanned
block), weight tying, sown attention weights, and lifted transforms. The 8B, 70B and 405B presets
are meant to be used abstractly (``jax.eval_shape``, ``flaxmock.unflaxify``): their parameters
take 15, 131 and 756 GiB.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from flaxmock.examples import llama
  >>> model = llama.Llama(llama.LlamaConfig.tiny())
  >>> tokens = jnp.zeros((2, 6), jnp.int32)
  >>> variables = model.init(jax.random.key(0), tokens)
  >>> model.apply(variables, tokens).shape
  (2, 6, 256)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Sizes and dtypes of a :class:`Llama` model.

    Attributes:
      vocab_size: Number of tokens.
      dim: Width of the residual stream.
      n_layers: Number of blocks.
      n_heads: Number of query heads.
      n_kv_heads: Number of key/value heads (grouped-query attention when < ``n_heads``).
      ffn_dim: Hidden width of the SwiGLU MLP.
      max_seq_len: Longest sequence the rotary embedding is meant for.
      rope_theta: Base of the rotary embedding's frequencies.
      norm_eps: Epsilon of the RMS norms.
      param_dtype: Dtype of the parameters.
      dtype: Dtype of the computation.
      tie_embeddings: Project to the vocabulary with the embedding (``embed.attend``).
      scan_layers: Stack the blocks with ``nn.scan(nn.remat(Block))``.
      decode: Keep a decode cache in each attention (``cache`` collection).
    """

    vocab_size: int = 256
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    ffn_dim: int = 128
    max_seq_len: int = 2048
    rope_theta: float = 500_000.0
    norm_eps: float = 1e-5
    param_dtype: Any = jnp.float32
    dtype: Any = jnp.float32
    tie_embeddings: bool = True
    scan_layers: bool = False
    decode: bool = False

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @classmethod
    def tiny(cls, **overrides: Any) -> LlamaConfig:
        """A toy configuration that initialises and runs in well under a second on CPU."""
        return cls(**overrides)

    @classmethod
    def _llama3(cls, overrides: dict[str, Any], **sizes: Any) -> LlamaConfig:
        """A Llama 3 family configuration: its shared fields, then ``sizes``, then overrides."""
        shared = dict(
            vocab_size=128_256,
            n_kv_heads=8,
            max_seq_len=8192,
            param_dtype=jnp.bfloat16,
            dtype=jnp.bfloat16,
            tie_embeddings=False,
        )
        return cls(**{**shared, **sizes, **overrides})

    @classmethod
    def llama3_8b(cls, **overrides: Any) -> LlamaConfig:
        """The sizes of Llama 3 8B (8.03B parameters, bfloat16, untied output)."""
        return cls._llama3(overrides, dim=4096, n_layers=32, n_heads=32, ffn_dim=14_336)

    @classmethod
    def llama3_70b(cls, **overrides: Any) -> LlamaConfig:
        """The sizes of Llama 3 70B (70.6B parameters, bfloat16, untied output)."""
        return cls._llama3(overrides, dim=8192, n_layers=80, n_heads=64, ffn_dim=28_672)

    @classmethod
    def llama3_405b(cls, **overrides: Any) -> LlamaConfig:
        """The sizes of Llama 3.1 405B (405.9B parameters, bfloat16, untied output).

        Examples:
          >>> LlamaConfig.llama3_405b().num_params()
          405853388800
        """
        return cls._llama3(overrides, dim=16_384, n_layers=126, n_heads=128, ffn_dim=53_248)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> LlamaConfig:
        """``"tiny"``, ``"8b"``, ``"70b"`` or ``"405b"``."""
        presets = {
            "tiny": cls.tiny,
            "8b": cls.llama3_8b,
            "70b": cls.llama3_70b,
            "405b": cls.llama3_405b,
        }
        if name not in presets:
            raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(presets)}.")
        return presets[name](**overrides)

    def num_params(self) -> int:
        """The exact number of parameters, computed from the sizes.

        Examples:
          >>> LlamaConfig.llama3_8b().num_params()
          8030261248
        """
        attn = self.dim * self.n_heads * self.head_dim * 2
        attn += self.dim * self.n_kv_heads * self.head_dim * 2
        block = attn + 3 * self.dim * self.ffn_dim + 2 * self.dim
        head = 0 if self.tie_embeddings else self.vocab_size * self.dim
        return self.vocab_size * self.dim + self.n_layers * block + self.dim + head


def _init(init: Any, names: tuple[str, ...]) -> Any:
    return nn.with_logical_partitioning(init, names)


class RMSNorm(nn.Module):
    """Root-mean-square normalisation with a learned scale."""

    config: LlamaConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param(
            "scale",
            _init(nn.initializers.ones, ("embed",)),
            (x.shape[-1],),
            self.config.param_dtype,
        )
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, -1, keepdims=True) + self.config.norm_eps)
        return (x32 * scale.astype(jnp.float32)).astype(self.config.dtype)


def rotary(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotates pairs of features of ``x`` (batch, seq, heads, head_dim) by their position."""
    half = x.shape[-1] // 2
    freqs = 1.0 / theta ** (jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions[:, None].astype(jnp.float32) * freqs[None, :]  # (seq, half)
    sin, cos = jnp.sin(angles)[None, :, None, :], jnp.cos(angles)[None, :, None, :]
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).astype(x.dtype)


class KVCache(nn.Module):
    """The decode cache of one attention: keys and values so far, and the next position.

    ``init`` only creates it, sized by its input (the longest sequence to decode); each later
    call appends the given keys and values.
    """

    @nn.compact
    def __call__(self, k: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Returns the positions of the given tokens and the whole cache's keys and values."""
        initialising = not self.has_variable("cache", "cached_key")
        cached_k = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
        cached_v = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
        index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
        if initialising:
            return jnp.arange(k.shape[1]), k, v
        start = index.value
        cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k, (0, start, 0, 0))
        cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v, (0, start, 0, 0))
        index.value = start + k.shape[1]
        return start + jnp.arange(k.shape[1]), cached_k.value, cached_v.value


class Attention(nn.Module):
    """Causal grouped-query attention with rotary embeddings (a ``setup()`` module)."""

    config: LlamaConfig

    def setup(self) -> None:
        c = self.config

        def dense(features: int, names: tuple[str, str], name: str) -> nn.Dense:
            return nn.Dense(
                features,
                use_bias=False,
                dtype=c.dtype,
                param_dtype=c.param_dtype,
                kernel_init=_init(nn.initializers.lecun_normal(), names),
                name=name,
            )

        self.q = dense(c.n_heads * c.head_dim, ("embed", "heads"), "q")
        self.k = dense(c.n_kv_heads * c.head_dim, ("embed", "kv_heads"), "k")
        self.v = dense(c.n_kv_heads * c.head_dim, ("embed", "kv_heads"), "v")
        self.o = dense(c.dim, ("heads", "embed"), "o")
        if c.decode:
            self.cache = KVCache()

    def _split_heads(self, x: jax.Array, heads: int) -> jax.Array:
        return x.reshape(x.shape[:-1] + (heads, self.config.head_dim))

    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        seq = x.shape[1]
        positions = jnp.arange(seq)
        q = self._split_heads(self.q(x), c.n_heads)
        k = self._split_heads(self.k(x), c.n_kv_heads)
        v = self._split_heads(self.v(x), c.n_kv_heads)
        key_positions = positions
        if c.decode:
            positions, k, v = self.cache(k, v)
            key_positions = jnp.arange(k.shape[1])
        q = rotary(q, positions, c.rope_theta)
        k = rotary(k, key_positions, c.rope_theta)
        groups = c.n_heads // c.n_kv_heads
        k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / c.head_dim**0.5
        causal = key_positions[None, :] <= positions[:, None]
        weights = jax.nn.softmax(jnp.where(causal, logits, -1e30), axis=-1)
        self.sow("intermediates", "attn_weights", weights)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(c.dtype), v)
        return self.o(out.reshape(out.shape[:2] + (c.n_heads * c.head_dim,)))


class MLP(nn.Module):
    """The SwiGLU feed-forward block (a compact module)."""

    config: LlamaConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config

        def dense(features: int, names: tuple[str, str], name: str) -> nn.Dense:
            return nn.Dense(
                features,
                use_bias=False,
                dtype=c.dtype,
                param_dtype=c.param_dtype,
                kernel_init=_init(nn.initializers.lecun_normal(), names),
                name=name,
            )

        gate = dense(c.ffn_dim, ("embed", "mlp"), "gate")(x)
        up = dense(c.ffn_dim, ("embed", "mlp"), "up")(x)
        return dense(c.dim, ("mlp", "embed"), "down")(jax.nn.silu(gate) * up)


class Block(nn.Module):
    """One decoder block: pre-norm attention and pre-norm MLP, each with a residual."""

    config: LlamaConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = x + Attention(self.config, name="attn")(RMSNorm(self.config, name="attn_norm")(x))
        return h + MLP(self.config, name="mlp")(RMSNorm(self.config, name="mlp_norm")(h))


class ScannedBlock(Block):
    """A :class:`Block` with the ``(carry, x) -> (carry, y)`` signature ``nn.scan`` wants."""

    @nn.compact
    def __call__(self, carry: jax.Array, _: Any = None) -> tuple[jax.Array, None]:  # type: ignore[override]
        return super().__call__(carry), None


class Llama(nn.Module):
    """A Llama-style decoder: token ids (batch, seq) to logits (batch, seq, vocab) in float32."""

    config: LlamaConfig

    def setup(self) -> None:
        c = self.config
        self.embed = nn.Embed(
            c.vocab_size,
            c.dim,
            dtype=c.dtype,
            param_dtype=c.param_dtype,
            embedding_init=_init(nn.initializers.normal(0.02), ("vocab", "embed")),
        )
        if c.scan_layers:
            self.blocks = nn.scan(
                nn.remat(ScannedBlock),
                variable_axes={"params": 0, "intermediates": 0, "cache": 0},
                split_rngs={"params": True},
                length=c.n_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(c)
        else:
            self.layers = [Block(c) for _ in range(c.n_layers)]
        self.norm = RMSNorm(c)
        if not c.tie_embeddings:
            self.lm_head = nn.Dense(
                c.vocab_size,
                use_bias=False,
                dtype=c.dtype,
                param_dtype=c.param_dtype,
                kernel_init=_init(nn.initializers.lecun_normal(), ("embed", "vocab")),
            )

    def __call__(self, tokens: jax.Array, *, deterministic: bool = True) -> jax.Array:
        """Logits for ``tokens``; ``deterministic`` is accepted for API compatibility."""
        del deterministic  # The example has no dropout.
        h = self.embed(tokens)
        if self.config.scan_layers:
            h, _ = self.blocks(h, None)
        else:
            for layer in self.layers:
                h = layer(h)
        h = self.norm(h)
        logits = self.embed.attend(h) if self.config.tie_embeddings else self.lm_head(h)
        return logits.astype(jnp.float32)


def _example(
    config: LlamaConfig, seq_len: int, batch: int
) -> tuple[Llama, tuple[jax.ShapeDtypeStruct]]:
    return Llama(config), (jax.ShapeDtypeStruct((batch, seq_len), jnp.int32),)


def tiny(
    seq_len: int = 16, batch: int = 1, scan_layers: bool = False
) -> tuple[Llama, tuple[jax.ShapeDtypeStruct]]:
    """The toy model and a token spec: a factory for ``flaxmock summary`` on the command line.

    Examples:
      >>> model, (tokens,) = tiny()
      >>> model.config.dim, tokens.shape
      (64, (1, 16))
    """
    return _example(LlamaConfig.tiny(scan_layers=scan_layers), seq_len, batch)


def llama3_8b(
    seq_len: int = 2048, batch: int = 1, scan_layers: bool = False
) -> tuple[Llama, tuple[jax.ShapeDtypeStruct]]:
    """The 8B model and a token spec (``flaxmock summary flaxmock.examples.llama:llama3_8b``)."""
    return _example(LlamaConfig.llama3_8b(scan_layers=scan_layers), seq_len, batch)


def llama3_70b(
    seq_len: int = 2048, batch: int = 1, scan_layers: bool = False
) -> tuple[Llama, tuple[jax.ShapeDtypeStruct]]:
    """The 70B model and a token spec (``flaxmock summary flaxmock.examples.llama:llama3_70b``)."""
    return _example(LlamaConfig.llama3_70b(scan_layers=scan_layers), seq_len, batch)


def llama3_405b(
    seq_len: int = 2048, batch: int = 1, scan_layers: bool = False
) -> tuple[Llama, tuple[jax.ShapeDtypeStruct]]:
    """The 405B model and a token spec (``flaxmock summary ...llama:llama3_405b``)."""
    return _example(LlamaConfig.llama3_405b(scan_layers=scan_layers), seq_len, batch)


def llama3_70b_scan(
    seq_len: int = 2048, batch: int = 1
) -> tuple[Llama, tuple[jax.ShapeDtypeStruct]]:
    """:func:`llama3_70b` with its 80 blocks scanned (``nn.scan(nn.remat(...))``)."""
    return llama3_70b(seq_len, batch, scan_layers=True)


#: Logical axis rules for the example's partitioning names: a 2-D mesh ("data", "model") with
#: fully sharded data parallelism over "data" and tensor parallelism over "model".
RULES = (
    ("vocab", "model"),
    ("embed", "data"),
    ("heads", "model"),
    ("kv_heads", "model"),
    ("mlp", "model"),
    ("layers", None),
)
