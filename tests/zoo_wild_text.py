"""Zoo cases with the idioms of public text models, in small models of our own.

Each case reproduces, at a width of 8 to 16 and sequences of 4 to 8 tokens, the idioms that a
public text model is written with: a frozen config dataclass as a field, ``setup()`` lists
named ``str(i)``, output dataclasses with ``None`` fields, Python flags among the arguments,
``self.make_rng("dropout")``, weights read from another module's variables, lifted transforms
with ``static_argnums``, boxed (logically partitioned) parameters. The code is ours; the table
names the model that motivated each case.

==================================  ========================================  ======================
case id                             idioms exercised                          motivated by
==================================  ========================================  ======================
text_bert                           a frozen config dataclass as a field;     Hugging Face
                                    setup() lists named str(i); a child       transformers Flax BERT
                                    attribute named self; three nn.Embed
                                    tables summed with ids cast by
                                    .astype('i4');
                                    dot_product_attention_weights with a
                                    dropout rng from
                                    self.make_rng('dropout') only when not
                                    deterministic; a per-layer head scale;
                                    weights and hidden states collected into
                                    tuples on request (Python flags); a
                                    flax.struct.dataclass output read by
                                    name, index and slice, with None fields;
                                    pooling by a tanh Dense

text_bert_mlm_remat                 nn.remat(layer, static_argnums=(4, 5))    Hugging Face
                                    classes made in setup() and named         transformers Flax BERT
                                    str(i); None as a positional argument; a  masked LM
                                    tuple output (as_dataclass=False); a
                                    set-up child that is never called (no
                                    parameters); an untied vocabulary head
                                    with its own bias param made in setup()

text_bert_mlm_tied                  the head reads the encoder's token table  Hugging Face
                                    through self.encoder.variables and runs   transformers Flax BERT
                                    its own Dense's apply on the transpose    masked LM (tied)
                                    (nested apply on a set-up child); remat
                                    layers

text_t5                             one nn.Embed made in the parent's         T5 (flaxformer,
                                    setup(), passed as a field to encoder     Hugging Face Flax T5)
                                    and decoder, and attended for the
                                    logits; a bias module owned by each
                                    stack, passed to its layers and called
                                    from each with Python ints and a bool;
                                    nn.DenseGeneral with tuple features and
                                    axis=(-2, -1); make_attention_mask,
                                    make_causal_mask, combine_masks; Dropout
                                    with broadcast_dims, one instance called
                                    several times; make_rng('dropout') into
                                    nn.dot_product_attention; encode/decode
                                    methods with a keyword-only flag

text_t5_encode                      method='encode' by name on a setup()      T5 (flaxformer)
                                    model whose decoder is never called

text_gpt2                           dense layers whose (out, in) kernels are  Hugging Face
                                    made by self.param and contracted with    transformers Flax
                                    lax.dot_general; a LayerNorm written      GPT-2
                                    with self.param gain and shift; a causal
                                    mask array made in setup() and sliced;
                                    jnp.split into q, k, v; positions from
                                    the cumulative sum of a left-padding
                                    mask; bfloat16 compute over float32
                                    params; logits by attend; blocks named
                                    str(i); a dict output with None and a
                                    tuple

text_moe                            a router with lax.top_k; experts stacked  top-k
                                    by nn.vmap (in_axes=None, axis_size);     mixture-of-experts LMs
                                    two auxiliary losses sown in every        (Switch, ST-MoE)
                                    block; attention with mask=; one compact
                                    nn.Embed called for lookup and attend

text_kv_cache                       decode=True: has_variable and             flax examples lm1b
                                    self.variable in a 'cache' collection     decoder
                                    (init creates, apply fills);
                                    lax.dynamic_update_slice and
                                    lax.dynamic_slice at a cached counter; a
                                    helper function that makes variables on
                                    the module it is given;
                                    mutable=['cache']

text_maxtext                        nn.scan(nn.remat(layer,                   MaxText decoder
                                    prevent_cse=False,
                                    policy=save_only_these_names(...),
                                    static_argnums=(-1, ..., -5))) over a
                                    body that takes Python flags
                                    positionally and returns (x, None);
                                    params stacked on axis 1 through
                                    partitioning.ScanIn, chosen by
                                    is_mutable_collection('params');
                                    PARTITION_NAME; variable_axes for
                                    params, cache and intermediates;
                                    constructor keywords for the scanned
                                    class; kernel initialiser given extra
                                    self.param arguments and logical axis
                                    names; a setup() param table with lookup
                                    and an unused attend method;
                                    with_logical_constraint;
                                    checkpoint_name; a parameter-free module
                                    with a plain __call__;
                                    segment-restricted causal attention; sow
                                    in the scanned body
==================================  ========================================  ======================
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen import partitioning
from jax import lax
from jax.ad_checkpoint import checkpoint_name

from zoo_case import ZooCase
from zoo_parts import (
    Inputs,
    TwoLayer,
    lower_triangle,
    merge_heads,
    padding_bias,
    rms_scale,
    rotate,
    split_heads,
)

_in = Inputs(7)

#: Activations looked up by name from a config string.
ACTIVATIONS = {
    "gelu": functools.partial(nn.gelu, approximate=False),
    "gelu_tanh": functools.partial(nn.gelu, approximate=True),
    "relu": nn.relu,
}


# --- a bidirectional encoder and its masked-token head -------------------------------------


class ByNameOrPosition:
    """Output fields read by name, or by position among the fields that are not ``None``."""

    def as_tuple(self) -> tuple:
        values = (getattr(self, f.name) for f in dataclasses.fields(self))
        return tuple(v for v in values if v is not None)

    def __getitem__(self, key):
        return getattr(self, key) if isinstance(key, str) else self.as_tuple()[key]


@flax.struct.dataclass
class EncoderOut(ByNameOrPosition):
    hidden: jax.Array = None
    pooled: jax.Array | None = None
    all_hidden: tuple[jax.Array, ...] | None = None
    all_weights: tuple[jax.Array, ...] | None = None


@flax.struct.dataclass
class TokenLogits(ByNameOrPosition):
    logits: jax.Array = None
    all_hidden: tuple[jax.Array, ...] | None = None
    all_weights: tuple[jax.Array, ...] | None = None


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    vocab: int = 48
    width: int = 16
    layers: int = 2
    heads: int = 2
    ffn: int = 32
    act: str = "gelu"
    rate: float = 0.1
    attn_rate: float = 0.1
    max_len: int = 16
    segments: int = 2
    init_std: float = 0.02
    eps: float = 1e-12
    tie_output: bool = True


class TokenEmbedding(nn.Module):
    """Token, segment and position tables summed, then LayerNorm and dropout."""

    cfg: EncoderConfig

    def setup(self):
        cfg = self.cfg
        init = nn.initializers.normal(cfg.init_std)
        self.words = nn.Embed(cfg.vocab, cfg.width, embedding_init=init)
        self.kinds = nn.Embed(cfg.segments, cfg.width, embedding_init=init)
        self.places = nn.Embed(cfg.max_len, cfg.width, embedding_init=init)
        self.ln = nn.LayerNorm(epsilon=cfg.eps)
        self.drop = nn.Dropout(cfg.rate)

    def __call__(self, ids, kinds, places, deterministic=True):
        x = self.words(ids.astype("i4")) + self.kinds(kinds.astype("i4"))
        x = x + self.places(places.astype("i4"))
        return self.drop(self.ln(x), deterministic=deterministic)


class WeightsAttention(nn.Module):
    """Self-attention from ``dot_product_attention_weights``: its own dropout rng, a per-head
    scale, and the weights returned on request."""

    cfg: EncoderConfig

    def setup(self):
        init = nn.initializers.normal(self.cfg.init_std)
        self.q, self.k, self.v = (nn.Dense(self.cfg.width, kernel_init=init) for _ in range(3))

    def __call__(self, x, keep, head_scale, deterministic=True, return_weights: bool = False):
        cfg = self.cfg
        q, k, v = (split_heads(proj(x), cfg.heads) for proj in (self.q, self.k, self.v))
        bias = None if keep is None else padding_bias(keep)
        rng = None
        if not deterministic and cfg.attn_rate > 0:
            rng = self.make_rng("dropout")
        weights = nn.attention.dot_product_attention_weights(
            q,
            k,
            bias=bias,
            dropout_rng=rng,
            dropout_rate=cfg.attn_rate,
            deterministic=deterministic,
        )
        if head_scale is not None:
            weights = weights * head_scale[:, None, None]
        y = merge_heads(jnp.einsum("bhqk,bkhd->bqhd", weights, v))
        return (y, weights) if return_weights else (y,)


class EncoderLayer(nn.Module):
    """Post-norm attention and feed-forward; the attention child is named ``self``."""

    cfg: EncoderConfig

    def setup(self):
        cfg = self.cfg
        dense = functools.partial(nn.Dense, kernel_init=nn.initializers.normal(cfg.init_std))
        self.self = WeightsAttention(cfg)
        self.mix = dense(cfg.width)
        self.ln_attn = nn.LayerNorm(epsilon=cfg.eps)
        self.ffn = TwoLayer(cfg.ffn, act=ACTIVATIONS[cfg.act], dense=dense)
        self.ln_ffn = nn.LayerNorm(epsilon=cfg.eps)
        self.drop = nn.Dropout(cfg.rate)

    def __call__(self, x, keep, head_scale, deterministic=True, return_weights=False):
        found = self.self(x, keep, head_scale, deterministic, return_weights)
        x = self.ln_attn(x + self.drop(self.mix(found[0]), deterministic=deterministic))
        x = self.ln_ffn(x + self.drop(self.ffn(x), deterministic=deterministic))
        return (x, *found[1:])


class LayerStack(nn.Module):
    cfg: EncoderConfig
    remat: bool = False

    def setup(self):
        # Counting self as argument 0, the two Python flags are arguments 4 and 5.
        layer = nn.remat(EncoderLayer, static_argnums=(4, 5)) if self.remat else EncoderLayer
        self.layers = [layer(self.cfg, name=str(i)) for i in range(self.cfg.layers)]

    def __call__(
        self,
        x,
        keep,
        head_scale,
        deterministic=True,
        return_weights=False,
        return_hidden=False,
        as_dataclass=True,
    ):
        hidden = (x,) if return_hidden else None
        weights = () if return_weights else None
        for i, layer in enumerate(self.layers):
            scale = None if head_scale is None else head_scale[i]
            found = layer(x, keep, scale, deterministic, return_weights)
            x = found[0]
            if return_weights:
                weights += (found[1],)
            if return_hidden:
                hidden += (x,)
        if not as_dataclass:
            return tuple(v for v in (x, hidden, weights) if v is not None)
        return EncoderOut(hidden=x, all_hidden=hidden, all_weights=weights)


class TextEncoder(nn.Module):
    """Embeddings, the layer stack, and a tanh summary of the first token (when ``pool``)."""

    cfg: EncoderConfig
    pool: bool = True
    remat: bool = False

    def setup(self):
        self.embed = TokenEmbedding(self.cfg)
        self.stack = LayerStack(self.cfg, self.remat)
        # Set up either way; without ``pool`` it is never called and has no parameters.
        self.summary = nn.Dense(self.cfg.width)

    def __call__(
        self,
        ids,
        keep,
        kinds=None,
        places=None,
        head_scale=None,
        deterministic=True,
        return_weights=False,
        return_hidden=False,
        as_dataclass=True,
    ):
        kinds = jnp.zeros_like(ids) if kinds is None else kinds
        if places is None:
            places = jnp.broadcast_to(jnp.arange(ids.shape[-1]), ids.shape)
        x = self.embed(ids, kinds, places, deterministic=deterministic)
        found = self.stack(
            x, keep, head_scale, deterministic, return_weights, return_hidden, as_dataclass
        )
        pooled = nn.tanh(self.summary(found[0][:, 0])) if self.pool else None
        if as_dataclass:
            return found.replace(pooled=pooled)
        return (found[0], *((pooled,) if self.pool else ()), *found[1:])


class MaskedLM(nn.Module):
    """The encoder without pooling and a vocabulary head, tied to the token table or not."""

    cfg: EncoderConfig
    remat: bool = False

    def setup(self):
        cfg = self.cfg
        self.encoder = TextEncoder(cfg, pool=False, remat=self.remat)
        self.transform = nn.Dense(cfg.width)
        self.ln = nn.LayerNorm(epsilon=cfg.eps)
        self.to_vocab = nn.Dense(cfg.vocab, use_bias=False)
        self.vocab_bias = self.param("vocab_bias", nn.initializers.zeros, (cfg.vocab,))

    def __call__(
        self,
        ids,
        keep,
        kinds,
        places,
        head_scale,
        deterministic=True,
        return_weights=False,
        return_hidden=False,
        as_dataclass=True,
    ):
        found = self.encoder(
            ids,
            keep,
            kinds,
            places,
            head_scale,
            deterministic=deterministic,
            return_weights=return_weights,
            return_hidden=return_hidden,
            as_dataclass=as_dataclass,
        )
        h = self.ln(ACTIVATIONS[self.cfg.act](self.transform(found[0])))
        if self.cfg.tie_output:
            # The token table, read from the encoder's variables, runs through the head's Dense.
            table = self.encoder.variables["params"]["embed"]["words"]["embedding"]
            logits = self.to_vocab.apply({"params": {"kernel": table.T}}, h)
        else:
            logits = self.to_vocab(h)
        logits = logits + self.vocab_bias
        if not as_dataclass:
            return (logits, *found[1:])
        return TokenLogits(logits, found.all_hidden, found.all_weights)


# --- an encoder-decoder with a shared token table and relative-offset biases ----------------


@dataclasses.dataclass(frozen=True)
class Seq2SeqConfig:
    vocab: int = 40
    width: int = 16
    heads: int = 2
    head_dim: int = 8
    ffn: int = 32
    encoder_layers: int = 2
    decoder_layers: int = 1
    reach: int = 4
    rate: float = 0.1


class OffsetBias(nn.Module):
    """A learned bias per head and clipped key-minus-query offset, for given lengths."""

    heads: int
    reach: int

    @staticmethod
    def rows(q_len: int, k_len: int, reach: int, both_ways: bool) -> np.ndarray:
        offset = np.arange(k_len)[None, :] - np.arange(q_len)[:, None]
        if not both_ways:
            offset = np.minimum(offset, 0)
        return np.clip(offset, -reach, reach) + reach

    @nn.compact
    def __call__(self, q_len: int, k_len: int, both_ways: bool = True):
        table = self.param("table", nn.initializers.normal(0.1), (2 * self.reach + 1, self.heads))
        picked = table[self.rows(q_len, k_len, self.reach, both_ways)]
        return jnp.moveaxis(picked, -1, 0)[None]


class ScaleNorm(nn.Module):
    """Root-mean-square normalisation with a learned scale."""

    @nn.compact
    def __call__(self, x):
        return rms_scale(x) * self.param("scale", nn.initializers.ones, (x.shape[-1],))


class ProjectedAttention(nn.Module):
    cfg: Seq2SeqConfig

    @nn.compact
    def __call__(self, x, context, mask=None, bias=None, *, deterministic=False):
        cfg = self.cfg
        proj = functools.partial(
            nn.DenseGeneral, features=(cfg.heads, cfg.head_dim), use_bias=False
        )
        q, k, v = proj(name="q")(x), proj(name="k")(context), proj(name="v")(context)
        if mask is not None:
            from_mask = jnp.where(mask > 0, 0.0, -1e10)
            bias = from_mask if bias is None else from_mask + bias
        rng = None if deterministic or not cfg.rate else self.make_rng("dropout")
        y = nn.dot_product_attention(
            q, k, v, bias=bias, dropout_rng=rng, dropout_rate=cfg.rate, deterministic=deterministic
        )
        return nn.DenseGeneral(x.shape[-1], axis=(-2, -1), use_bias=False, name="o")(y)


class Seq2SeqLayer(nn.Module):
    """Self-attention biased by the stack's shared ``offsets``, cross-attention when given an
    encoding, feed-forward; every part pre-normed and residual."""

    cfg: Seq2SeqConfig
    offsets: nn.Module
    causal: bool = False

    @nn.compact
    def __call__(self, x, mask, encoded=None, cross_mask=None, *, deterministic=False):
        cfg = self.cfg
        drop = nn.Dropout(cfg.rate, broadcast_dims=(-2,))
        n = x.shape[-2]
        h = ScaleNorm(name="ln_self")(x)
        bias = self.offsets(n, n, not self.causal)
        h = ProjectedAttention(cfg, name="self_attn")(h, h, mask, bias, deterministic=deterministic)
        x = x + drop(h, deterministic=deterministic)
        if encoded is not None:
            h = ScaleNorm(name="ln_cross")(x)
            h = ProjectedAttention(cfg, name="cross_attn")(
                h, encoded, cross_mask, deterministic=deterministic
            )
            x = x + drop(h, deterministic=deterministic)
        ffn = TwoLayer(
            cfg.ffn,
            act=nn.relu,
            rate=cfg.rate,
            dense=functools.partial(nn.Dense, use_bias=False),
            name="ffn",
        )
        h = ffn(ScaleNorm(name="ln_ffn")(x), deterministic)
        return x + drop(h, deterministic=deterministic)


class Seq2SeqStack(nn.Module):
    """The encoder, or (``decoder=True``) the decoder with logits from the shared table."""

    cfg: Seq2SeqConfig
    tokens: nn.Module
    decoder: bool = False

    def setup(self):
        cfg = self.cfg
        self.offsets = OffsetBias(cfg.heads, cfg.reach)
        depth = cfg.decoder_layers if self.decoder else cfg.encoder_layers
        self.layers = [Seq2SeqLayer(cfg, self.offsets, self.decoder) for _ in range(depth)]
        self.ln = ScaleNorm()
        self.drop = nn.Dropout(cfg.rate, broadcast_dims=(-2,))

    def __call__(self, ids, mask, encoded=None, cross_mask=None, *, deterministic=False):
        x = self.drop(self.tokens(ids.astype("int32")), deterministic=deterministic)
        for layer in self.layers:
            x = layer(x, mask, encoded, cross_mask, deterministic=deterministic)
        x = self.drop(self.ln(x), deterministic=deterministic)
        if not self.decoder:
            return x
        return self.tokens.attend(x) / jnp.sqrt(x.shape[-1])


class Seq2SeqLM(nn.Module):
    cfg: Seq2SeqConfig

    def setup(self):
        cfg = self.cfg
        init = nn.initializers.normal(1.0)
        self.tokens = nn.Embed(cfg.vocab, cfg.width, embedding_init=init)
        self.encoder = Seq2SeqStack(cfg, self.tokens)
        self.decoder = Seq2SeqStack(cfg, self.tokens, decoder=True)

    def encode(self, src, *, train: bool = True):
        mask = nn.make_attention_mask(src > 0, src > 0)
        return self.encoder(src, mask, deterministic=not train)

    def decode(self, encoded, src, tgt_in, tgt, *, train: bool = True):
        mask = nn.combine_masks(nn.make_attention_mask(tgt > 0, tgt > 0), nn.make_causal_mask(tgt))
        cross = nn.make_attention_mask(tgt > 0, src > 0)
        return self.decoder(tgt_in, mask, encoded, cross, deterministic=not train)

    def __call__(self, src, tgt_in, tgt, *, train: bool = True):
        return self.decode(self.encode(src, train=train), src, tgt_in, tgt, train=train)


# --- a decoder-only language model with hand-made layers ------------------------------------


@dataclasses.dataclass(frozen=True)
class CausalConfig:
    vocab: int = 50
    max_len: int = 16
    width: int = 16
    layers: int = 2
    heads: int = 2
    eps: float = 1e-5
    rate: float = 0.1


class OutInDense(nn.Module):
    """A dense layer whose kernel is made by ``self.param`` in ``(out, in)`` order."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.initializers.normal(0.02), (self.features, x.shape[-1]))
        b = self.param("b", nn.initializers.zeros, (self.features,))
        x = jnp.asarray(x, self.dtype)
        y = lax.dot_general(x, jnp.asarray(w, self.dtype), (((x.ndim - 1,), (1,)), ((), ())))
        return y + jnp.asarray(b, self.dtype)


class MeanVarNorm(nn.Module):
    """LayerNorm by hand: ``self.param`` gain and shift, statistics in float32."""

    eps: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        gain = self.param("gain", nn.initializers.ones, (x.shape[-1],))
        shift = self.param("shift", nn.initializers.zeros, (x.shape[-1],))
        x32 = jnp.asarray(x, jnp.float32)
        centred = x32 - x32.mean(-1, keepdims=True)
        y = centred * lax.rsqrt(jnp.mean(centred**2, axis=-1, keepdims=True) + self.eps)
        return jnp.asarray(y * gain + shift, self.dtype)


class FusedCausalAttention(nn.Module):
    cfg: CausalConfig
    dtype: Any = jnp.float32

    def setup(self):
        cfg = self.cfg
        self.fused = OutInDense(3 * cfg.width, self.dtype)
        self.out = OutInDense(cfg.width, self.dtype)
        self.drop = nn.Dropout(cfg.rate)
        # A constant array held by the module, cut to the sequence length at call time.
        self.future = nn.make_causal_mask(jnp.ones((1, cfg.max_len), bool), dtype=bool)

    def __call__(self, x, keep, deterministic=True):
        parts = jnp.split(self.fused(x), 3, axis=-1)
        q, k, v = (split_heads(t, self.cfg.heads) for t in parts)
        b, n = x.shape[:2]
        causal = jnp.broadcast_to(self.future[:, :, :n, :n], (b, 1, n, n))
        mask = nn.combine_masks(causal, jnp.broadcast_to(keep[:, None, None, :], causal.shape))
        y = nn.dot_product_attention(q, k, v, mask=mask, dtype=self.dtype)
        return self.drop(self.out(merge_heads(y)), deterministic=deterministic)


class CausalBlock(nn.Module):
    cfg: CausalConfig
    dtype: Any = jnp.float32

    def setup(self):
        cfg = self.cfg
        self.ln_attn = MeanVarNorm(cfg.eps, self.dtype)
        self.attn = FusedCausalAttention(cfg, self.dtype)
        self.ln_mlp = MeanVarNorm(cfg.eps, self.dtype)
        self.mlp = TwoLayer(
            4 * cfg.width,
            act=ACTIVATIONS["gelu_tanh"],
            rate=cfg.rate,
            dense=functools.partial(OutInDense, dtype=self.dtype),
        )

    def __call__(self, x, keep, deterministic=True):
        x = x + self.attn(self.ln_attn(x), keep, deterministic)
        return x + self.mlp(self.ln_mlp(x), deterministic)


class CausalLM(nn.Module):
    cfg: CausalConfig
    dtype: Any = jnp.float32

    def setup(self):
        cfg = self.cfg
        init = nn.initializers.normal(0.02)
        self.tokens = nn.Embed(cfg.vocab, cfg.width, embedding_init=init, dtype=self.dtype)
        self.places = nn.Embed(cfg.max_len, cfg.width, embedding_init=init, dtype=self.dtype)
        self.drop = nn.Dropout(cfg.rate)
        self.blocks = [CausalBlock(cfg, self.dtype, name=str(i)) for i in range(cfg.layers)]
        self.ln_out = MeanVarNorm(cfg.eps, self.dtype)

    def __call__(self, ids, keep, deterministic=True, return_hidden=False):
        # With left padding, a token's position counts the real tokens before it.
        places = jnp.maximum(jnp.cumsum(keep, axis=-1) - 1, 0)
        x = self.tokens(ids.astype("i4")) + self.places(places.astype("i4"))
        x = self.drop(x, deterministic=deterministic)
        hidden = () if return_hidden else None
        for block in self.blocks:
            if return_hidden:
                hidden += (x,)
            x = block(x, keep, deterministic)
        x = self.ln_out(x)
        return {"logits": self.tokens.attend(x), "hidden": hidden, "cross_attentions": None}


# --- routed experts -------------------------------------------------------------------------


class RoutedExperts(nn.Module):
    """Each token goes to its top-``k`` experts (stacked by ``nn.vmap``); two router losses are
    sown."""

    experts: int = 4
    k: int = 2
    hidden: int = 16

    @nn.compact
    def __call__(self, x):
        flat = x.reshape(-1, x.shape[-1])
        logits = nn.Dense(self.experts, use_bias=False, name="router")(flat)
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        gate, choice = lax.top_k(probs, self.k)
        gate = gate / gate.sum(-1, keepdims=True)
        weights = jnp.einsum("tke,tk->te", jax.nn.one_hot(choice, self.experts), gate)
        bank = nn.vmap(
            TwoLayer,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.experts,
        )(self.hidden, dense=functools.partial(nn.Dense, use_bias=False), name="bank")
        y = jnp.einsum("te,etd->td", weights, bank(flat))
        # How evenly the first choices spread, and how large the router's logits grow.
        share = jax.nn.one_hot(choice[:, 0], self.experts).mean(0)
        self.sow("intermediates", "balance", self.experts**2 * jnp.mean(share * probs.mean(0)))
        self.sow("intermediates", "logit_size", jnp.mean(jax.nn.logsumexp(logits, -1) ** 2))
        return y.reshape(x.shape)


class RoutedBlock(nn.Module):
    heads: int = 2

    @nn.compact
    def __call__(self, x, mask):
        h = nn.LayerNorm(name="ln_attn")(x)
        attn = nn.MultiHeadDotProductAttention(num_heads=self.heads, name="attn")
        x = x + attn(h, h, mask=mask)
        return x + RoutedExperts(name="experts")(nn.LayerNorm(name="ln_experts")(x))


class RoutedLM(nn.Module):
    vocab: int = 32
    width: int = 8
    layers: int = 2

    @nn.compact
    def __call__(self, ids):
        table = nn.Embed(self.vocab, self.width, name="tokens")
        mask = nn.make_causal_mask(ids)
        x = table(ids)
        for i in range(self.layers):
            x = RoutedBlock(name=f"block{i}")(x, mask)
        return table.attend(nn.LayerNorm(name="ln_out")(x))


# --- incremental decoding with a cache collection -------------------------------------------


def _cache_counter(module: nn.Module):
    """``(was_there, variable)`` for the module's position counter in ``cache``."""
    there = module.has_variable("cache", "filled")
    return there, module.variable("cache", "filled", lambda: jnp.zeros((), jnp.int32))


class CachingAttention(nn.Module):
    """Causal self-attention; with ``decode``, keys and values go to a ``cache`` collection that
    init creates and apply fills."""

    heads: int
    max_len: int

    @nn.compact
    def __call__(self, x, decode: bool = False):
        b, n, width = x.shape
        proj = functools.partial(nn.DenseGeneral, features=(self.heads, width // self.heads))
        q, k, v = proj(name="q")(x), proj(name="k")(x), proj(name="v")(x)
        mask = lower_triangle(n)
        if decode:
            shape = (b, self.max_len, *k.shape[2:])
            ready, filled = _cache_counter(self)
            keys = self.variable("cache", "keys", jnp.zeros, shape, k.dtype)
            values = self.variable("cache", "values", jnp.zeros, shape, v.dtype)
            if ready:
                start = filled.value
                keys.value = k = lax.dynamic_update_slice(keys.value, k, (0, start, 0, 0))
                values.value = v = lax.dynamic_update_slice(values.value, v, (0, start, 0, 0))
                filled.value = start + n
                # Query i (at position start + i) sees every cached position up to its own.
                seen = (start + jnp.arange(n))[:, None] >= jnp.arange(self.max_len)[None, :]
                mask = jnp.broadcast_to(seen, (b, 1, n, self.max_len))
        y = nn.dot_product_attention(q, k, v, mask=mask)
        return nn.DenseGeneral(width, axis=(-2, -1), name="out")(y)


class CachedPositions(nn.Module):
    """Learned positions that, while decoding, continue from the cached counter."""

    max_len: int

    @nn.compact
    def __call__(self, x, decode: bool = False):
        n, width = x.shape[1:]
        table = self.param("table", nn.initializers.normal(0.02), (1, self.max_len, width))
        if decode:
            ready, filled = _cache_counter(self)
            if ready:
                start = filled.value
                filled.value = start + n
                return x + lax.dynamic_slice(table, (0, start, 0), (1, n, width))
        return x + table[:, :n]


class CachingBlock(nn.Module):
    heads: int
    max_len: int

    @nn.compact
    def __call__(self, x, decode: bool = False):
        attn = CachingAttention(self.heads, self.max_len, name="attn")
        x = x + attn(nn.LayerNorm(name="ln_attn")(x), decode=decode)
        return x + TwoLayer(4 * x.shape[-1], name="mlp")(nn.LayerNorm(name="ln_mlp")(x))


class CachingDecoder(nn.Module):
    vocab: int = 32
    width: int = 8
    heads: int = 2
    layers: int = 2
    max_len: int = 8

    @nn.compact
    def __call__(self, ids, decode: bool = False):
        x = nn.Embed(self.vocab, self.width, name="tokens")(ids)
        x = CachedPositions(self.max_len, name="positions")(x, decode=decode)
        for i in range(self.layers):
            x = CachingBlock(self.heads, self.max_len, name=f"block{i}")(x, decode)
        x = nn.LayerNorm(name="ln_out")(x)
        return nn.Dense(self.vocab, use_bias=False, name="to_vocab")(x)


# --- a scanned decoder over packed sequences, with logical axis names -----------------------


@dataclasses.dataclass(frozen=True)
class PackedConfig:
    vocab: int = 48
    width: int = 16
    heads: int = 2
    head_dim: int = 8
    ffn: int = 32
    layers: int = 2
    dtype: Any = jnp.float32
    weight_dtype: Any = jnp.float32
    param_axis: int = 1
    save_projections: bool = True
    record_stats: bool = True
    tied_logits: bool = False
    eps: float = 1e-6
    rate: float = 0.0
    dropout: bool = False


def _fan_in_normal(key, shape, dtype, in_axes, out_axes):
    """A truncated normal scaled by the fan-in; ``self.param`` passes which axes are inputs."""
    del out_axes  # Every kernel here has its outputs last.
    fan_in = int(np.prod([shape[a] for a in in_axes]))
    return jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype) / np.sqrt(fan_in)


class AxisDense(nn.Module):
    """Contracts ``axes`` of the input with a kernel that carries logical axis ``names``."""

    features: int | tuple[int, ...]
    names: tuple[str, ...]
    axes: int | tuple[int, ...] = -1
    dtype: Any = jnp.float32
    weight_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        axes = (self.axes,) if isinstance(self.axes, int) else tuple(self.axes)
        axes = tuple(a % x.ndim for a in axes)
        out = (self.features,) if isinstance(self.features, int) else tuple(self.features)
        shape = tuple(x.shape[a] for a in axes) + out
        ins = tuple(range(len(axes)))
        outs = tuple(range(len(axes), len(shape)))
        init = nn.with_logical_partitioning(_fan_in_normal, self.names)
        kernel = self.param("kernel", init, shape, self.weight_dtype, ins, outs)
        x = jnp.asarray(x, self.dtype)
        return lax.dot_general(x, jnp.asarray(kernel, self.dtype), ((axes, ins), ((), ())))


class VocabTable(nn.Module):
    """The token table: a ``setup()`` param with axis names, looked up or attended to."""

    vocab: int
    width: int
    dtype: Any = jnp.float32

    def setup(self):
        init = nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed"))
        self.table = self.param("table", init, (self.vocab, self.width), jnp.float32)

    def __call__(self, ids):
        x = jnp.take(jnp.asarray(self.table, self.dtype), ids, axis=0)
        return nn.with_logical_constraint(x, ("activation_batch", "activation_length", "embed"))

    def attend(self, x):
        return x @ jnp.asarray(self.table, x.dtype).T


class AxisScaleNorm(nn.Module):
    eps: float = 1e-6
    dtype: Any = jnp.float32
    weight_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        init = nn.with_logical_partitioning(nn.initializers.ones, ("norm",))
        scale = self.param("scale", init, (x.shape[-1],), self.weight_dtype)
        return jnp.asarray(rms_scale(x, self.eps), self.dtype) * jnp.asarray(scale, self.dtype)


class Rotary(nn.Module):
    """Parameter-free: a plain ``__call__``, neither ``@nn.compact`` nor ``setup()``."""

    period: float = 10_000.0

    def __call__(self, x, positions):
        return rotate(x, positions, self.period)


class PackedAttention(nn.Module):
    """Causal attention that stays within each packed segment; projections named for remat."""

    cfg: PackedConfig

    @nn.compact
    def __call__(self, x, positions, segments=None):
        cfg = self.cfg
        proj = functools.partial(
            AxisDense,
            (cfg.heads, cfg.head_dim),
            ("embed", "heads", "kv"),
            dtype=cfg.dtype,
            weight_dtype=cfg.weight_dtype,
        )
        q = Rotary(name="rotary_q")(proj(name="q")(x), positions) / np.sqrt(cfg.head_dim)
        k = Rotary(name="rotary_k")(proj(name="k")(x), positions)
        v = proj(name="v")(x)
        q, k, v = (checkpoint_name(t, f"{n}_proj") for t, n in ((q, "q"), (k, "k"), (v, "v")))
        axes = ("activation_batch", "activation_length", "activation_heads", "activation_kv")
        q = nn.with_logical_constraint(q, axes)
        allowed = lower_triangle(x.shape[1])
        if segments is not None:
            allowed = allowed & (segments[:, None, :, None] == segments[:, None, None, :])
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)
        probs = jax.nn.softmax(jnp.where(allowed, logits, -1e30), axis=-1).astype(cfg.dtype)
        y = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
        y = AxisDense(
            x.shape[-1],
            ("heads", "kv", "embed"),
            axes=(-2, -1),
            dtype=cfg.dtype,
            weight_dtype=cfg.weight_dtype,
            name="o",
        )(y)
        return checkpoint_name(y, "out_proj")


class PackedLayer(nn.Module):
    """The scanned body: takes Python flags positionally and returns ``(x, None)``."""

    cfg: PackedConfig

    @nn.compact
    def __call__(self, x, segments, positions, deterministic, mode):
        if mode not in ("train", "prefill"):
            raise ValueError(f"unknown mode {mode!r}")
        cfg = self.cfg
        x = nn.with_logical_constraint(
            x, ("activation_batch", "activation_length", "activation_embed")
        )
        norm = functools.partial(AxisScaleNorm, cfg.eps, cfg.dtype, cfg.weight_dtype)
        dense = functools.partial(AxisDense, dtype=cfg.dtype, weight_dtype=cfg.weight_dtype)
        x = x + PackedAttention(cfg, name="attn")(norm(name="ln_attn")(x), positions, segments)
        h = norm(name="ln_mlp")(x)
        gate = dense(cfg.ffn, ("embed", "mlp"), name="gate")(h)
        h = nn.silu(gate) * dense(cfg.ffn, ("embed", "mlp"), name="up")(h)
        h = nn.Dropout(cfg.rate, broadcast_dims=(-2,))(h, deterministic=deterministic)
        x = x + dense(x.shape[-1], ("mlp", "embed"), name="down")(h)
        if cfg.record_stats:
            self.sow("intermediates", "mean", jnp.mean(x))
            self.sow("intermediates", "std", jnp.std(x))
        return x, None


class PackedDecoder(nn.Module):
    cfg: PackedConfig
    tokens: nn.Module

    def remat_policy(self):
        if self.cfg.save_projections:
            return jax.checkpoint_policies.save_only_these_names("q_proj", "k_proj", "v_proj")
        return None

    @nn.compact
    def __call__(self, ids, positions, segments=None, deterministic=False, mode="train"):
        cfg = self.cfg
        x = self.tokens(ids.astype("int32"))
        x = nn.Dropout(cfg.rate, broadcast_dims=(-2,))(x, deterministic=deterministic)
        body = nn.remat(
            PackedLayer,
            prevent_cse=False,
            policy=self.remat_policy(),
            static_argnums=(-1, -2, -3, -4, -5),
        )
        # Init lays the stacked params on ``param_axis``; apply reads them through ScanIn.
        axis = cfg.param_axis
        if not self.is_mutable_collection("params"):
            axis = partitioning.ScanIn(axis)
        stack = nn.scan(
            body,
            variable_axes={"params": axis, "cache": 0, "intermediates": 0},
            split_rngs={"params": True, "dropout": cfg.dropout},
            in_axes=(nn.broadcast,) * 4,
            length=cfg.layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )
        x, _ = stack(cfg=cfg, name="layers")(
            x.astype(cfg.dtype), segments, positions, deterministic, mode
        )
        x = AxisScaleNorm(cfg.eps, cfg.dtype, cfg.weight_dtype, name="ln_out")(x)
        if cfg.tied_logits:
            logits = self.tokens.attend(x) / jnp.sqrt(x.shape[-1])
        else:
            logits = AxisDense(
                cfg.vocab,
                ("embed", "vocab"),
                dtype=jnp.float32,
                weight_dtype=cfg.weight_dtype,
                name="to_vocab",
            )(x)
        axes = ("activation_batch", "activation_length", "activation_vocab")
        return nn.with_logical_constraint(logits, axes)


class PackedLM(nn.Module):
    cfg: PackedConfig

    def setup(self):
        self.tokens = VocabTable(self.cfg.vocab, self.cfg.width, self.cfg.dtype)
        self.decoder = PackedDecoder(self.cfg, self.tokens)

    def __call__(self, ids, positions, segments=None, train: bool = True, mode: str = "train"):
        return self.decoder(ids, positions, segments, deterministic=not train, mode=mode)


# --- the cases ------------------------------------------------------------------------------

ENC_IDS = _in.ints(1, 48, 2, 6)
# The second sequence is padded: its last two positions are masked.
ENC_KEEP = jnp.asarray([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], jnp.int32)
ENC_KINDS = jnp.asarray([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]], jnp.int32)
ENC_PLACES = jnp.broadcast_to(jnp.arange(6, dtype=jnp.int32), (2, 6))
ENC_HEAD_SCALE = _in.uniform(0.5, 1.0, 2, 2)

SRC = _in.ints(1, 40, 2, 6).at[1, 4:].set(0)
TGT = _in.ints(1, 40, 2, 5).at[1, 3:].set(0)
TGT_IN = jnp.concatenate([jnp.zeros((2, 1), jnp.int32), TGT[:, :-1]], axis=1)

CAUSAL_IDS = _in.ints(1, 50, 2, 7)
CAUSAL_KEEP = jnp.asarray([[1, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1]], jnp.int32)

PACKED_IDS = _in.ints(1, 48, 2, 8)
PACKED_POSITIONS = jnp.asarray([[0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 0, 1, 2, 3, 4]], jnp.int32)
PACKED_SEGMENTS = jnp.asarray([[1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 2, 2, 2, 2, 2]], jnp.int32)

_MLM_ARGS = (ENC_IDS, ENC_KEEP, ENC_KINDS, ENC_PLACES, None)
_MLM_KWARGS = {"deterministic": True, "return_hidden": True, "as_dataclass": False}

CASES: list[ZooCase] = [
    ZooCase(
        "text_bert",
        lambda: TextEncoder(EncoderConfig()),
        (ENC_IDS, ENC_KEEP, ENC_KINDS, ENC_PLACES, ENC_HEAD_SCALE),
        {
            "deterministic": False,
            "return_weights": True,
            "return_hidden": True,
            "as_dataclass": True,
        },
        rngs=("dropout",),
        notes="config field, setup lists named str(i), a child named 'self', make_rng('dropout'), "
        "head scale, a flax.struct output dataclass with tuple fields",
        tags=("setup", "rng", "static_args", "non_array"),
    ),
    ZooCase(
        "text_bert_mlm_remat",
        lambda: MaskedLM(EncoderConfig(tie_output=False), remat=True),
        _MLM_ARGS,
        _MLM_KWARGS,
        notes="untied head: nn.remat layers with static_argnums, None positional arguments, a "
        "tuple output, a set-up child never called",
        tags=("setup", "lifted", "static_args", "non_array"),
    ),
    ZooCase(
        "text_t5",
        lambda: Seq2SeqLM(Seq2SeqConfig()),
        (SRC, TGT_IN, TGT),
        {"train": True},
        rngs=("dropout",),
        notes="a token table shared by encoder and decoder and attended for the logits, offset "
        "biases called from every layer with Python ints",
        tags=("setup", "shared", "rng", "static_args"),
    ),
    ZooCase(
        "text_t5_encode",
        lambda: Seq2SeqLM(Seq2SeqConfig()),
        (SRC,),
        {"train": False},
        method="encode",
        notes="method='encode' on a setup() model whose decoder is unused",
        tags=("setup", "method", "shared", "static_args"),
    ),
    ZooCase(
        "text_gpt2",
        lambda: CausalLM(CausalConfig(), dtype=jnp.bfloat16),
        (CAUSAL_IDS, CAUSAL_KEEP),
        {"deterministic": True, "return_hidden": True},
        notes="self.param (out, in) kernels, a causal mask array made in setup, bfloat16 "
        "compute over float32 params, attend logits, a dict output with None",
        tags=("setup", "shared", "dtype", "static_args", "non_array"),
    ),
    ZooCase(
        "text_moe",
        RoutedLM,
        (_in.ints(1, 32, 2, 6),),
        mutable=["intermediates"],
        notes="top-k router (lax.top_k), experts stacked by nn.vmap, two router losses sown in "
        "every block",
        tags=("lifted", "mutable", "shared"),
    ),
    ZooCase(
        "text_kv_cache",
        CachingDecoder,
        (_in.ints(1, 32, 2, 4),),
        {"decode": True},
        mutable=["cache"],
        notes="init with decode=True creates the cache; apply fills 4 of 8 positions "
        "(dynamic_update_slice, a counter), mutable=['cache']",
        tags=("mutable", "static_args"),
    ),
    ZooCase(
        "text_maxtext",
        lambda: PackedLM(PackedConfig()),
        (PACKED_IDS, PACKED_POSITIONS, PACKED_SEGMENTS),
        {"train": False, "mode": "train"},
        mutable=["intermediates"],
        notes="nn.scan(nn.remat(layer, negative static_argnums, policy)) with params on axis 1 "
        "(ScanIn), PARTITION_NAME, logical kernels, Python flags through the scan, sow",
        tags=("setup", "lifted", "metadata", "mutable", "static_args"),
    ),
    ZooCase(
        "text_bert_mlm_tied",
        lambda: MaskedLM(EncoderConfig(), remat=True),
        _MLM_ARGS,
        _MLM_KWARGS,
        notes="tied head: reads the encoder's token table through self.encoder.variables and "
        "runs self.to_vocab.apply on its transpose (nested apply)",
        tags=("setup", "shared", "lifted", "static_args", "non_array"),
    ),
]

# Cases that find a flaxmock bug or limitation go here, each naming its reproduction.
PENDING: list[ZooCase] = []
