"""Zoo cases written the way third-party text models are (BERT, T5, GPT, MoE).

Each model follows the code of a real library closely, with its idioms left in: a frozen
config dataclass as a module field, ``setup()`` lists named ``str(i)``, output dataclasses
with ``None`` fields, Python flags (``deterministic``, ``output_attentions``, ``return_dict``),
``self.make_rng("dropout")``, weights read from another module's variables, lifted transforms
with ``static_argnums`` and boxed (logically partitioned) parameters. Sizes are tiny.

- ``text_bert*``: Hugging Face ``transformers``' ``FlaxBertModule`` and
  ``FlaxBertForMaskedLMModule``.
- ``text_t5*``: flaxformer's T5 (a relative position bias owned by each stack and shared by its
  layers, one token embedder shared by encoder and decoder, logits via ``embed.attend``).
- ``text_gpt2``: ``FlaxGPT2``-style (``FlaxConv1D``, a causal mask held by the module).
- ``text_moe``: a top-k mixture of experts with ``nn.vmap``-stacked experts and sown losses.
- ``text_kv_cache``: an autoregressive decoder with a ``cache`` collection.
- ``text_maxtext``: MaxText's decoder (``nn.scan(nn.remat(..., static_argnums=...))``).
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

_rng = np.random.default_rng(7)

ACT2FN = {
    "gelu": functools.partial(nn.gelu, approximate=False),
    "gelu_new": functools.partial(nn.gelu, approximate=True),
    "relu": nn.relu,
}


# --------------------------------------------------------------------------------------------
# Hugging Face transformers: FlaxBertModule, FlaxBertForMaskedLMModule.


class ModelOutput:
    """The part of ``transformers.utils.ModelOutput`` that the modules use."""

    def to_tuple(self) -> tuple:
        values = (getattr(self, f.name) for f in dataclasses.fields(self))
        return tuple(v for v in values if v is not None)

    def __getitem__(self, k):
        if isinstance(k, str):
            return getattr(self, k)
        return self.to_tuple()[k]


@flax.struct.dataclass
class FlaxBaseModelOutput(ModelOutput):
    last_hidden_state: jax.Array = None
    hidden_states: tuple[jax.Array, ...] | None = None
    attentions: tuple[jax.Array, ...] | None = None


@flax.struct.dataclass
class FlaxBaseModelOutputWithPooling(ModelOutput):
    last_hidden_state: jax.Array = None
    pooler_output: jax.Array | None = None
    hidden_states: tuple[jax.Array, ...] | None = None
    attentions: tuple[jax.Array, ...] | None = None


@flax.struct.dataclass
class FlaxMaskedLMOutput(ModelOutput):
    logits: jax.Array = None
    hidden_states: tuple[jax.Array, ...] | None = None
    attentions: tuple[jax.Array, ...] | None = None


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 48
    hidden_size: int = 16
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    intermediate_size: int = 32
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 16
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    tie_word_embeddings: bool = True


class FlaxBertEmbeddings(nn.Module):
    config: BertConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        init = jax.nn.initializers.normal(stddev=self.config.initializer_range)
        self.word_embeddings = nn.Embed(
            self.config.vocab_size, self.config.hidden_size, embedding_init=init, dtype=self.dtype
        )
        self.position_embeddings = nn.Embed(
            self.config.max_position_embeddings,
            self.config.hidden_size,
            embedding_init=init,
            dtype=self.dtype,
        )
        self.token_type_embeddings = nn.Embed(
            self.config.type_vocab_size,
            self.config.hidden_size,
            embedding_init=init,
            dtype=self.dtype,
        )
        self.LayerNorm = nn.LayerNorm(epsilon=self.config.layer_norm_eps, dtype=self.dtype)
        self.dropout = nn.Dropout(rate=self.config.hidden_dropout_prob)

    def __call__(self, input_ids, token_type_ids, position_ids, attention_mask, deterministic=True):
        inputs_embeds = self.word_embeddings(input_ids.astype("i4"))
        position_embeds = self.position_embeddings(position_ids.astype("i4"))
        token_type_embeddings = self.token_type_embeddings(token_type_ids.astype("i4"))
        hidden_states = inputs_embeds + token_type_embeddings + position_embeds
        hidden_states = self.LayerNorm(hidden_states)
        return self.dropout(hidden_states, deterministic=deterministic)


class FlaxBertSelfAttention(nn.Module):
    config: BertConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        config = self.config
        self.head_dim = config.hidden_size // config.num_attention_heads
        init = jax.nn.initializers.normal(config.initializer_range)
        self.query = nn.Dense(config.hidden_size, dtype=self.dtype, kernel_init=init)
        self.key = nn.Dense(config.hidden_size, dtype=self.dtype, kernel_init=init)
        self.value = nn.Dense(config.hidden_size, dtype=self.dtype, kernel_init=init)

    def _split_heads(self, hidden_states):
        shape = hidden_states.shape[:2] + (self.config.num_attention_heads, self.head_dim)
        return hidden_states.reshape(shape)

    def _merge_heads(self, hidden_states):
        return hidden_states.reshape(hidden_states.shape[:2] + (self.config.hidden_size,))

    def __call__(
        self,
        hidden_states,
        attention_mask,
        layer_head_mask,
        deterministic=True,
        output_attentions: bool = False,
    ):
        query_states = self._split_heads(self.query(hidden_states))
        key_states = self._split_heads(self.key(hidden_states))
        value_states = self._split_heads(self.value(hidden_states))

        if attention_mask is not None:
            attention_mask = jnp.expand_dims(attention_mask, axis=(-3, -2))
            attention_bias = lax.select(
                attention_mask > 0,
                jnp.full(attention_mask.shape, 0.0).astype(self.dtype),
                jnp.full(attention_mask.shape, jnp.finfo(self.dtype).min).astype(self.dtype),
            )
        else:
            attention_bias = None

        dropout_rng = None
        if not deterministic and self.config.attention_probs_dropout_prob > 0.0:
            dropout_rng = self.make_rng("dropout")

        attn_weights = nn.attention.dot_product_attention_weights(
            query_states,
            key_states,
            bias=attention_bias,
            dropout_rng=dropout_rng,
            dropout_rate=self.config.attention_probs_dropout_prob,
            broadcast_dropout=True,
            deterministic=deterministic,
            dtype=self.dtype,
            precision=None,
        )
        if layer_head_mask is not None:
            attn_weights = jnp.einsum("...hqk,h->...hqk", attn_weights, layer_head_mask)

        attn_output = jnp.einsum("...hqk,...khd->...qhd", attn_weights, value_states)
        attn_output = self._merge_heads(attn_output)
        return (attn_output, attn_weights) if output_attentions else (attn_output,)


class FlaxBertSelfOutput(nn.Module):
    config: BertConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.dense = nn.Dense(
            self.config.hidden_size,
            kernel_init=jax.nn.initializers.normal(self.config.initializer_range),
            dtype=self.dtype,
        )
        self.LayerNorm = nn.LayerNorm(epsilon=self.config.layer_norm_eps, dtype=self.dtype)
        self.dropout = nn.Dropout(rate=self.config.hidden_dropout_prob)

    def __call__(self, hidden_states, input_tensor, deterministic: bool = True):
        hidden_states = self.dense(hidden_states)
        hidden_states = self.dropout(hidden_states, deterministic=deterministic)
        return self.LayerNorm(hidden_states + input_tensor)


class FlaxBertAttention(nn.Module):
    config: BertConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.self = FlaxBertSelfAttention(self.config, dtype=self.dtype)
        self.output = FlaxBertSelfOutput(self.config, dtype=self.dtype)

    def __call__(
        self,
        hidden_states,
        attention_mask,
        layer_head_mask,
        deterministic=True,
        output_attentions: bool = False,
    ):
        attn_outputs = self.self(
            hidden_states,
            attention_mask,
            layer_head_mask=layer_head_mask,
            deterministic=deterministic,
            output_attentions=output_attentions,
        )
        attn_output = attn_outputs[0]
        hidden_states = self.output(attn_output, hidden_states, deterministic=deterministic)
        outputs = (hidden_states,)
        if output_attentions:
            outputs += (attn_outputs[1],)
        return outputs


class FlaxBertIntermediate(nn.Module):
    config: BertConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.dense = nn.Dense(
            self.config.intermediate_size,
            kernel_init=jax.nn.initializers.normal(self.config.initializer_range),
            dtype=self.dtype,
        )
        self.activation = ACT2FN[self.config.hidden_act]

    def __call__(self, hidden_states):
        return self.activation(self.dense(hidden_states))


class FlaxBertOutput(nn.Module):
    config: BertConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.dense = nn.Dense(
            self.config.hidden_size,
            kernel_init=jax.nn.initializers.normal(self.config.initializer_range),
            dtype=self.dtype,
        )
        self.dropout = nn.Dropout(rate=self.config.hidden_dropout_prob)
        self.LayerNorm = nn.LayerNorm(epsilon=self.config.layer_norm_eps, dtype=self.dtype)

    def __call__(self, hidden_states, attention_output, deterministic: bool = True):
        hidden_states = self.dense(hidden_states)
        hidden_states = self.dropout(hidden_states, deterministic=deterministic)
        return self.LayerNorm(hidden_states + attention_output)


class FlaxBertLayer(nn.Module):
    config: BertConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.attention = FlaxBertAttention(self.config, dtype=self.dtype)
        self.intermediate = FlaxBertIntermediate(self.config, dtype=self.dtype)
        self.output = FlaxBertOutput(self.config, dtype=self.dtype)

    def __call__(
        self,
        hidden_states,
        attention_mask,
        layer_head_mask,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        init_cache: bool = False,
        deterministic: bool = True,
        output_attentions: bool = False,
    ):
        attention_outputs = self.attention(
            hidden_states,
            attention_mask,
            layer_head_mask=layer_head_mask,
            deterministic=deterministic,
            output_attentions=output_attentions,
        )
        attention_output = attention_outputs[0]
        hidden_states = self.intermediate(attention_output)
        hidden_states = self.output(hidden_states, attention_output, deterministic=deterministic)
        outputs = (hidden_states,)
        if output_attentions:
            outputs += (attention_outputs[1],)
        return outputs


class FlaxBertLayerCollection(nn.Module):
    config: BertConfig
    dtype: jnp.dtype = jnp.float32
    gradient_checkpointing: bool = False

    def setup(self):
        if self.gradient_checkpointing:
            # transformers writes static_argnums=(5, 6, 7), counting from hidden_states; Flax
            # counts ``self`` as argument 0 since 0.7, so the same three flags are (6, 7, 8).
            FlaxBertCheckpointLayer = nn.remat(FlaxBertLayer, static_argnums=(6, 7, 8))
            self.layers = [
                FlaxBertCheckpointLayer(self.config, name=str(i), dtype=self.dtype)
                for i in range(self.config.num_hidden_layers)
            ]
        else:
            self.layers = [
                FlaxBertLayer(self.config, name=str(i), dtype=self.dtype)
                for i in range(self.config.num_hidden_layers)
            ]

    def __call__(
        self,
        hidden_states,
        attention_mask,
        head_mask,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        init_cache: bool = False,
        deterministic: bool = True,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ):
        all_attentions = () if output_attentions else None
        all_hidden_states = () if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            layer_outputs = layer(
                hidden_states,
                attention_mask,
                head_mask[i] if head_mask is not None else None,
                encoder_hidden_states,
                encoder_attention_mask,
                init_cache,
                deterministic,
                output_attentions,
            )
            hidden_states = layer_outputs[0]
            if output_attentions:
                all_attentions += (layer_outputs[1],)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        outputs = (hidden_states, all_hidden_states, all_attentions)
        if not return_dict:
            return tuple(v for v in outputs if v is not None)
        return FlaxBaseModelOutput(
            last_hidden_state=hidden_states,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )


class FlaxBertEncoder(nn.Module):
    config: BertConfig
    dtype: jnp.dtype = jnp.float32
    gradient_checkpointing: bool = False

    def setup(self):
        self.layer = FlaxBertLayerCollection(
            self.config, dtype=self.dtype, gradient_checkpointing=self.gradient_checkpointing
        )

    def __call__(
        self,
        hidden_states,
        attention_mask,
        head_mask,
        deterministic: bool = True,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ):
        return self.layer(
            hidden_states,
            attention_mask,
            head_mask=head_mask,
            deterministic=deterministic,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=return_dict,
        )


class FlaxBertPooler(nn.Module):
    config: BertConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.dense = nn.Dense(
            self.config.hidden_size,
            kernel_init=jax.nn.initializers.normal(self.config.initializer_range),
            dtype=self.dtype,
        )

    def __call__(self, hidden_states):
        cls_hidden_state = hidden_states[:, 0]
        return nn.tanh(self.dense(cls_hidden_state))


class FlaxBertModule(nn.Module):
    config: BertConfig
    dtype: jnp.dtype = jnp.float32
    add_pooling_layer: bool = True
    gradient_checkpointing: bool = False

    def setup(self):
        self.embeddings = FlaxBertEmbeddings(self.config, dtype=self.dtype)
        self.encoder = FlaxBertEncoder(
            self.config, dtype=self.dtype, gradient_checkpointing=self.gradient_checkpointing
        )
        self.pooler = FlaxBertPooler(self.config, dtype=self.dtype)

    def __call__(
        self,
        input_ids,
        attention_mask,
        token_type_ids=None,
        position_ids=None,
        head_mask=None,
        deterministic: bool = True,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ):
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if position_ids is None:
            position_ids = jnp.broadcast_to(
                jnp.arange(jnp.atleast_2d(input_ids).shape[-1]), input_ids.shape
            )
        hidden_states = self.embeddings(
            input_ids, token_type_ids, position_ids, attention_mask, deterministic=deterministic
        )
        outputs = self.encoder(
            hidden_states,
            attention_mask,
            head_mask=head_mask,
            deterministic=deterministic,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=return_dict,
        )
        hidden_states = outputs[0]
        pooled = self.pooler(hidden_states) if self.add_pooling_layer else None

        if not return_dict:
            if pooled is None:
                return (hidden_states,) + outputs[1:]
            return (hidden_states, pooled) + outputs[1:]
        return FlaxBaseModelOutputWithPooling(
            last_hidden_state=hidden_states,
            pooler_output=pooled,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class FlaxBertPredictionHeadTransform(nn.Module):
    config: BertConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.dense = nn.Dense(self.config.hidden_size, dtype=self.dtype)
        self.activation = ACT2FN[self.config.hidden_act]
        self.LayerNorm = nn.LayerNorm(epsilon=self.config.layer_norm_eps, dtype=self.dtype)

    def __call__(self, hidden_states):
        return self.LayerNorm(self.activation(self.dense(hidden_states)))


class FlaxBertLMPredictionHead(nn.Module):
    config: BertConfig
    dtype: jnp.dtype = jnp.float32
    bias_init: Any = jax.nn.initializers.zeros

    def setup(self):
        self.transform = FlaxBertPredictionHeadTransform(self.config, dtype=self.dtype)
        self.decoder = nn.Dense(self.config.vocab_size, dtype=self.dtype, use_bias=False)
        self.bias = self.param("bias", self.bias_init, (self.config.vocab_size,))

    def __call__(self, hidden_states, shared_embedding=None):
        hidden_states = self.transform(hidden_states)
        if shared_embedding is not None:
            hidden_states = self.decoder.apply(
                {"params": {"kernel": shared_embedding.T}}, hidden_states
            )
        else:
            hidden_states = self.decoder(hidden_states)
        bias = jnp.asarray(self.bias, self.dtype)
        return hidden_states + bias


class FlaxBertOnlyMLMHead(nn.Module):
    config: BertConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.predictions = FlaxBertLMPredictionHead(self.config, dtype=self.dtype)

    def __call__(self, hidden_states, shared_embedding=None):
        return self.predictions(hidden_states, shared_embedding=shared_embedding)


class FlaxBertForMaskedLMModule(nn.Module):
    config: BertConfig
    dtype: jnp.dtype = jnp.float32
    gradient_checkpointing: bool = False

    def setup(self):
        self.bert = FlaxBertModule(
            config=self.config,
            add_pooling_layer=False,
            dtype=self.dtype,
            gradient_checkpointing=self.gradient_checkpointing,
        )
        self.cls = FlaxBertOnlyMLMHead(config=self.config, dtype=self.dtype)

    def __call__(
        self,
        input_ids,
        attention_mask,
        token_type_ids,
        position_ids,
        head_mask,
        deterministic: bool = True,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ):
        outputs = self.bert(
            input_ids,
            attention_mask,
            token_type_ids,
            position_ids,
            head_mask,
            deterministic=deterministic,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=return_dict,
        )
        hidden_states = outputs[0]
        if self.config.tie_word_embeddings:
            shared_embedding = self.bert.variables["params"]["embeddings"]["word_embeddings"][
                "embedding"
            ]
        else:
            shared_embedding = None
        logits = self.cls(hidden_states, shared_embedding=shared_embedding)
        if not return_dict:
            return (logits,) + outputs[1:]
        return FlaxMaskedLMOutput(
            logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


# --------------------------------------------------------------------------------------------
# flaxformer T5: shared token embedder, relative position bias shared by a stack's layers.


@dataclasses.dataclass(frozen=True)
class T5Config:
    vocab_size: int = 40
    emb_dim: int = 16
    num_heads: int = 2
    head_dim: int = 8
    mlp_dim: int = 32
    num_encoder_layers: int = 2
    num_decoder_layers: int = 1
    relative_attention_num_buckets: int = 8
    relative_attention_max_distance: int = 16
    dropout_rate: float = 0.1
    dtype: Any = jnp.float32


class RelativePositionBiases(nn.Module):
    num_buckets: int
    max_distance: int
    num_heads: int
    dtype: Any = jnp.float32
    embedding_init: Any = nn.linear.default_embed_init

    @staticmethod
    def _relative_position_bucket(
        relative_position, bidirectional=True, num_buckets=32, max_distance=128
    ):
        ret = 0
        n = -relative_position
        if bidirectional:
            num_buckets //= 2
            ret += (n < 0).astype(np.int32) * num_buckets
            n = np.abs(n)
        else:
            n = np.maximum(n, 0)
        max_exact = num_buckets // 2
        is_small = n < max_exact
        val_if_large = max_exact + (
            np.log(n.astype(np.float32) / max_exact + np.finfo(np.float32).eps)
            / np.log(max_distance / max_exact)
            * (num_buckets - max_exact)
        ).astype(np.int32)
        val_if_large = np.minimum(val_if_large, num_buckets - 1)
        ret += np.where(is_small, n, val_if_large)
        return ret

    @nn.compact
    def __call__(self, qlen: int, klen: int, bidirectional: bool = True):
        context_position = np.arange(qlen, dtype=jnp.int32)[:, None]
        memory_position = np.arange(klen, dtype=jnp.int32)[None, :]
        relative_position = memory_position - context_position
        rp_bucket = self._relative_position_bucket(
            relative_position,
            bidirectional=bidirectional,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )
        relative_attention_bias = self.param(
            "rel_embedding", self.embedding_init, (self.num_heads, self.num_buckets), jnp.float32
        )
        relative_attention_bias = jnp.asarray(relative_attention_bias, self.dtype)
        bcast_iota = lax.broadcasted_iota(jnp.int32, (self.num_buckets, 1, 1), 0)
        rp_bucket_one_hot = jnp.array(rp_bucket[jnp.newaxis, ...] == bcast_iota, dtype=self.dtype)
        values = lax.dot_general(
            relative_attention_bias, rp_bucket_one_hot, (((1,), (0,)), ((), ()))
        )
        return values[jnp.newaxis, ...]


class T5LayerNorm(nn.Module):
    epsilon: float = 1e-6
    dtype: Any = jnp.float32
    scale_init: Any = nn.initializers.ones

    @nn.compact
    def __call__(self, x):
        x = jnp.asarray(x, jnp.float32)
        features = x.shape[-1]
        mean2 = jnp.mean(lax.square(x), axis=-1, keepdims=True)
        y = jnp.asarray(x * lax.rsqrt(mean2 + self.epsilon), self.dtype)
        scale = self.param("scale", self.scale_init, (features,), jnp.float32)
        return y * jnp.asarray(scale, self.dtype)


class T5Attention(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, inputs_q, inputs_kv, mask=None, bias=None, *, deterministic=False):
        cfg = self.config
        dense = functools.partial(
            nn.DenseGeneral,
            axis=-1,
            features=(cfg.num_heads, cfg.head_dim),
            use_bias=False,
            dtype=cfg.dtype,
        )
        query = dense(name="query")(inputs_q)
        key = dense(name="key")(inputs_kv)
        value = dense(name="value")(inputs_kv)
        attention_bias = None
        if mask is not None:
            attention_bias = lax.select(
                mask > 0,
                jnp.full(mask.shape, 0.0).astype(cfg.dtype),
                jnp.full(mask.shape, -1e10).astype(cfg.dtype),
            )
        if bias is not None:
            attention_bias = bias if attention_bias is None else attention_bias + bias
        dropout_rng = None
        if not deterministic and cfg.dropout_rate > 0.0:
            dropout_rng = self.make_rng("dropout")
        x = nn.dot_product_attention(
            query,
            key,
            value,
            bias=attention_bias,
            dropout_rng=dropout_rng,
            dropout_rate=cfg.dropout_rate,
            deterministic=deterministic,
            dtype=cfg.dtype,
        )
        return nn.DenseGeneral(
            features=inputs_q.shape[-1], axis=(-2, -1), use_bias=False, name="out"
        )(x)


class T5Mlp(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, inputs, deterministic: bool = False):
        cfg = self.config
        x = nn.Dense(cfg.mlp_dim, use_bias=False, name="wi")(inputs)
        x = nn.relu(x)
        x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)
        return nn.Dense(inputs.shape[-1], use_bias=False, name="wo")(x)


class T5EncoderLayer(nn.Module):
    config: T5Config
    shared_relative_position_bias: nn.Module | None = None

    @nn.compact
    def __call__(self, inputs, encoder_mask=None, *, deterministic: bool = False):
        cfg = self.config
        length = inputs.shape[-2]
        encoder_bias = self.shared_relative_position_bias(length, length, True)
        x = T5LayerNorm(name="pre_attention_layer_norm")(inputs)
        x = T5Attention(cfg, name="attention")(
            x, x, encoder_mask, encoder_bias, deterministic=deterministic
        )
        x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)
        x = x + inputs
        y = T5LayerNorm(name="pre_mlp_layer_norm")(x)
        y = T5Mlp(cfg, name="mlp")(y, deterministic=deterministic)
        y = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(y, deterministic=deterministic)
        return y + x


class T5DecoderLayer(nn.Module):
    config: T5Config
    shared_relative_position_bias: nn.Module | None = None

    @nn.compact
    def __call__(
        self,
        targets,
        encoded,
        decoder_mask=None,
        encoder_decoder_mask=None,
        *,
        deterministic: bool = False,
    ):
        cfg = self.config
        length = targets.shape[-2]
        decoder_bias = self.shared_relative_position_bias(length, length, False)
        x = T5LayerNorm(name="pre_self_attention_layer_norm")(targets)
        x = T5Attention(cfg, name="self_attention")(
            x, x, decoder_mask, decoder_bias, deterministic=deterministic
        )
        x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)
        x = x + targets
        y = T5LayerNorm(name="pre_cross_attention_layer_norm")(x)
        y = T5Attention(cfg, name="encoder_decoder_attention")(
            y, encoded, encoder_decoder_mask, deterministic=deterministic
        )
        y = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(y, deterministic=deterministic)
        y = y + x
        z = T5LayerNorm(name="pre_mlp_layer_norm")(y)
        z = T5Mlp(cfg, name="mlp")(z, deterministic=deterministic)
        z = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(z, deterministic=deterministic)
        return z + y


class T5Encoder(nn.Module):
    config: T5Config
    shared_token_embedder: nn.Module

    def setup(self):
        cfg = self.config
        self.relpos_bias = RelativePositionBiases(
            num_buckets=cfg.relative_attention_num_buckets,
            max_distance=cfg.relative_attention_max_distance,
            num_heads=cfg.num_heads,
            dtype=cfg.dtype,
        )
        self.layers = [
            T5EncoderLayer(cfg, shared_relative_position_bias=self.relpos_bias)
            for _ in range(cfg.num_encoder_layers)
        ]
        self.encoder_norm = T5LayerNorm()
        self.input_dropout = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))
        self.output_dropout = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))

    def __call__(self, encoder_input_tokens, encoder_mask=None, *, deterministic: bool = False):
        x = self.shared_token_embedder(encoder_input_tokens.astype("int32"))
        x = self.input_dropout(x, deterministic=deterministic)
        for layer in self.layers:
            x = layer(x, encoder_mask, deterministic=deterministic)
        x = self.encoder_norm(x)
        return self.output_dropout(x, deterministic=deterministic)


class T5Decoder(nn.Module):
    config: T5Config
    shared_token_embedder: nn.Module

    def setup(self):
        cfg = self.config
        self.relpos_bias = RelativePositionBiases(
            num_buckets=cfg.relative_attention_num_buckets,
            max_distance=cfg.relative_attention_max_distance,
            num_heads=cfg.num_heads,
            dtype=cfg.dtype,
        )
        self.layers = [
            T5DecoderLayer(cfg, shared_relative_position_bias=self.relpos_bias)
            for _ in range(cfg.num_decoder_layers)
        ]
        self.decoder_norm = T5LayerNorm()
        self.dropout = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))

    def __call__(
        self,
        encoded,
        decoder_input_tokens,
        decoder_mask=None,
        encoder_decoder_mask=None,
        *,
        deterministic: bool = False,
    ):
        y = self.shared_token_embedder(decoder_input_tokens.astype("int32"))
        y = self.dropout(y, deterministic=deterministic)
        for layer in self.layers:
            y = layer(y, encoded, decoder_mask, encoder_decoder_mask, deterministic=deterministic)
        y = self.decoder_norm(y)
        y = self.dropout(y, deterministic=deterministic)
        # T5 v1.0 ties the output head to the input embedding and rescales.
        logits = self.shared_token_embedder.attend(y)
        return logits / jnp.sqrt(y.shape[-1])


class T5Transformer(nn.Module):
    config: T5Config

    def setup(self):
        cfg = self.config
        self.token_embedder = nn.Embed(
            cfg.vocab_size, cfg.emb_dim, embedding_init=nn.initializers.normal(stddev=1.0)
        )
        self.encoder = T5Encoder(cfg, shared_token_embedder=self.token_embedder)
        self.decoder = T5Decoder(cfg, shared_token_embedder=self.token_embedder)

    def encode(self, encoder_input_tokens, *, enable_dropout: bool = True):
        encoder_mask = nn.make_attention_mask(encoder_input_tokens > 0, encoder_input_tokens > 0)
        return self.encoder(encoder_input_tokens, encoder_mask, deterministic=not enable_dropout)

    def decode(
        self,
        encoded,
        encoder_input_tokens,
        decoder_input_tokens,
        decoder_target_tokens,
        *,
        enable_dropout: bool = True,
    ):
        decoder_mask = nn.combine_masks(
            nn.make_attention_mask(decoder_target_tokens > 0, decoder_target_tokens > 0),
            nn.make_causal_mask(decoder_target_tokens),
        )
        encoder_decoder_mask = nn.make_attention_mask(
            decoder_target_tokens > 0, encoder_input_tokens > 0
        )
        return self.decoder(
            encoded,
            decoder_input_tokens,
            decoder_mask,
            encoder_decoder_mask,
            deterministic=not enable_dropout,
        )

    def __call__(
        self,
        encoder_input_tokens,
        decoder_input_tokens,
        decoder_target_tokens,
        *,
        enable_dropout: bool = True,
    ):
        encoded = self.encode(encoder_input_tokens, enable_dropout=enable_dropout)
        return self.decode(
            encoded,
            encoder_input_tokens,
            decoder_input_tokens,
            decoder_target_tokens,
            enable_dropout=enable_dropout,
        )


# --------------------------------------------------------------------------------------------
# GPT-2 as transformers' FlaxGPT2 writes it: FlaxConv1D, a causal mask built in setup,
# computation in bfloat16 over float32 parameters, logits through wte.attend.


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    vocab_size: int = 50
    n_positions: int = 16
    n_embd: int = 16
    n_layer: int = 2
    n_head: int = 2
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    embd_pdrop: float = 0.1
    resid_pdrop: float = 0.1


class GPT2LayerNorm(nn.Module):
    """OpenAI's original ``norm``: parameters ``g`` and ``b`` made with ``self.param``."""

    epsilon: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        g = self.param("g", nn.initializers.ones, (x.shape[-1],))
        b = self.param("b", nn.initializers.zeros, (x.shape[-1],))
        x = jnp.asarray(x, jnp.float32)
        u = jnp.mean(x, axis=-1, keepdims=True)
        s = jnp.mean(jnp.square(x - u), axis=-1, keepdims=True)
        x = (x - u) * lax.rsqrt(s + self.epsilon)
        return jnp.asarray(x * g + b, self.dtype)


class FlaxConv1D(nn.Module):
    features: int
    use_bias: bool = True
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, inputs):
        inputs = jnp.asarray(inputs, self.dtype)
        kernel = self.param(
            "kernel", jax.nn.initializers.normal(stddev=0.02), (self.features, inputs.shape[-1])
        )
        kernel = jnp.asarray(kernel.transpose(), self.dtype)
        y = lax.dot_general(
            inputs, kernel, (((inputs.ndim - 1,), (0,)), ((), ())), precision=self.precision
        )
        if self.use_bias:
            bias = self.param("bias", jax.nn.initializers.zeros, (self.features,))
            y = y + jnp.asarray(bias, self.dtype)
        return y


class FlaxGPT2Attention(nn.Module):
    config: GPT2Config
    dtype: Any = jnp.float32

    def setup(self):
        config = self.config
        self.embed_dim = config.n_embd
        self.num_heads = config.n_head
        self.head_dim = self.embed_dim // self.num_heads
        self.c_attn = FlaxConv1D(3 * self.embed_dim, dtype=self.dtype)
        self.c_proj = FlaxConv1D(self.embed_dim, dtype=self.dtype)
        self.resid_dropout = nn.Dropout(rate=config.resid_pdrop)
        self.causal_mask = nn.make_causal_mask(
            jnp.ones((1, config.n_positions), dtype="bool"), dtype="bool"
        )

    def _split_heads(self, hidden_states):
        return hidden_states.reshape(hidden_states.shape[:2] + (self.num_heads, self.head_dim))

    def _merge_heads(self, hidden_states):
        return hidden_states.reshape(hidden_states.shape[:2] + (self.embed_dim,))

    def __call__(self, hidden_states, attention_mask=None, deterministic: bool = True):
        qkv = self.c_attn(hidden_states)
        query, key, value = jnp.split(qkv, 3, axis=2)
        query = self._split_heads(query)
        key = self._split_heads(key)
        value = self._split_heads(value)
        query_length, key_length = query.shape[1], key.shape[1]
        causal_mask = self.causal_mask[:, :, :query_length, :key_length]
        batch_size = hidden_states.shape[0]
        causal_mask = jnp.broadcast_to(causal_mask, (batch_size,) + causal_mask.shape[1:])
        attention_mask = jnp.broadcast_to(
            jnp.expand_dims(attention_mask, axis=(-3, -2)), causal_mask.shape
        )
        attention_mask = nn.combine_masks(attention_mask, causal_mask)
        attn_output = nn.dot_product_attention(
            query, key, value, mask=attention_mask, dtype=self.dtype, deterministic=True
        )
        attn_output = self.c_proj(self._merge_heads(attn_output))
        return self.resid_dropout(attn_output, deterministic=deterministic)


class FlaxGPT2MLP(nn.Module):
    config: GPT2Config
    intermediate_size: int
    dtype: Any = jnp.float32

    def setup(self):
        self.c_fc = FlaxConv1D(self.intermediate_size, dtype=self.dtype)
        self.c_proj = FlaxConv1D(self.config.n_embd, dtype=self.dtype)
        self.act = ACT2FN["gelu_new"]
        self.dropout = nn.Dropout(rate=self.config.resid_pdrop)

    def __call__(self, hidden_states, deterministic: bool = True):
        hidden_states = self.c_proj(self.act(self.c_fc(hidden_states)))
        return self.dropout(hidden_states, deterministic=deterministic)


class FlaxGPT2Block(nn.Module):
    config: GPT2Config
    dtype: Any = jnp.float32

    def setup(self):
        eps = self.config.layer_norm_epsilon
        self.ln_1 = GPT2LayerNorm(epsilon=eps, dtype=self.dtype)
        self.attn = FlaxGPT2Attention(self.config, dtype=self.dtype)
        self.ln_2 = GPT2LayerNorm(epsilon=eps, dtype=self.dtype)
        self.mlp = FlaxGPT2MLP(self.config, 4 * self.config.n_embd, dtype=self.dtype)

    def __call__(self, hidden_states, attention_mask=None, deterministic: bool = True):
        residual = hidden_states
        hidden_states = self.attn(
            self.ln_1(hidden_states), attention_mask=attention_mask, deterministic=deterministic
        )
        hidden_states = hidden_states + residual
        residual = hidden_states
        return residual + self.mlp(self.ln_2(hidden_states), deterministic=deterministic)


class FlaxGPT2LMHeadModule(nn.Module):
    config: GPT2Config
    dtype: Any = jnp.float32

    def setup(self):
        config = self.config
        init = jax.nn.initializers.normal(stddev=config.initializer_range)
        self.wte = nn.Embed(config.vocab_size, config.n_embd, embedding_init=init, dtype=self.dtype)
        self.wpe = nn.Embed(
            config.n_positions, config.n_embd, embedding_init=init, dtype=self.dtype
        )
        self.dropout = nn.Dropout(rate=config.embd_pdrop)
        self.h = [
            FlaxGPT2Block(config, name=str(i), dtype=self.dtype) for i in range(config.n_layer)
        ]
        self.ln_f = GPT2LayerNorm(epsilon=config.layer_norm_epsilon, dtype=self.dtype)

    def __call__(
        self,
        input_ids,
        attention_mask,
        deterministic: bool = True,
        output_hidden_states: bool = False,
    ):
        position_ids = jnp.maximum(jnp.cumsum(attention_mask, axis=-1) - 1, 0)
        hidden_states = self.wte(input_ids.astype("i4")) + self.wpe(position_ids.astype("i4"))
        hidden_states = self.dropout(hidden_states, deterministic=deterministic)
        all_hidden_states = () if output_hidden_states else None
        for block in self.h:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states = block(hidden_states, attention_mask, deterministic=deterministic)
        hidden_states = self.ln_f(hidden_states)
        return {
            "logits": self.wte.attend(hidden_states),
            "hidden_states": all_hidden_states,
            "cross_attentions": None,
        }


# --------------------------------------------------------------------------------------------
# A top-k mixture of experts: experts stacked with nn.vmap, router losses sown.


class Expert(nn.Module):
    d_ff: int
    d_model: int

    @nn.compact
    def __call__(self, x):
        h = nn.gelu(nn.Dense(self.d_ff, use_bias=False, name="wi")(x))
        return nn.Dense(self.d_model, use_bias=False, name="wo")(h)


class SparseMoe(nn.Module):
    num_experts: int = 4
    top_k: int = 2
    d_ff: int = 16

    @nn.compact
    def __call__(self, x):
        batch, length, d_model = x.shape
        tokens = x.reshape(-1, d_model)
        router_logits = nn.Dense(self.num_experts, use_bias=False, name="router")(tokens)
        router_probs = jax.nn.softmax(router_logits.astype(jnp.float32), axis=-1)
        top_weights, top_experts = jax.lax.top_k(router_probs, self.top_k)
        top_weights = top_weights / top_weights.sum(-1, keepdims=True)
        combine = jnp.sum(
            jax.nn.one_hot(top_experts, self.num_experts) * top_weights[..., None], axis=1
        )
        experts = nn.vmap(
            Expert,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_experts,
        )(self.d_ff, d_model, name="experts")
        expert_outputs = experts(tokens)
        y = jnp.einsum("te,etd->td", combine, expert_outputs)
        # Switch Transformer's load-balancing loss and ST-MoE's router z-loss.
        density = jnp.mean(jax.nn.one_hot(top_experts[:, 0], self.num_experts), axis=0)
        density_proxy = jnp.mean(router_probs, axis=0)
        self.sow(
            "intermediates",
            "load_balancing_loss",
            jnp.mean(density * density_proxy) * self.num_experts**2,
        )
        z_loss = jnp.mean(jnp.square(jax.nn.logsumexp(router_logits, axis=-1)))
        self.sow("intermediates", "router_z_loss", z_loss)
        return y.reshape(batch, length, d_model)


class MoeBlock(nn.Module):
    num_heads: int = 2
    num_experts: int = 4
    top_k: int = 2

    @nn.compact
    def __call__(self, x, mask):
        h = nn.LayerNorm(name="ln_attn")(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads, name="attn")(
            h, h, mask=mask
        )
        h = nn.LayerNorm(name="ln_moe")(x)
        return x + SparseMoe(self.num_experts, self.top_k, name="moe")(h)


class MoeLM(nn.Module):
    vocab_size: int = 32
    d_model: int = 8
    num_layers: int = 2

    @nn.compact
    def __call__(self, tokens):
        embed = nn.Embed(self.vocab_size, self.d_model, name="embed")
        mask = nn.make_causal_mask(tokens)
        x = embed(tokens)
        for i in range(self.num_layers):
            x = MoeBlock(name=f"block_{i}")(x, mask)
        return embed.attend(nn.LayerNorm(name="ln_f")(x))


# --------------------------------------------------------------------------------------------
# An autoregressive decoder with a KV cache (flax's lm1b example, Hugging Face's
# _concatenate_to_cache): init with decode=True creates the cache, apply fills it.


class CachedSelfAttention(nn.Module):
    num_heads: int
    max_len: int

    @nn.compact
    def __call__(self, x, decode: bool = False):
        batch, length, features = x.shape
        head_dim = features // self.num_heads
        dense = functools.partial(nn.DenseGeneral, features=(self.num_heads, head_dim))
        query = dense(name="query")(x)
        key = dense(name="key")(x)
        value = dense(name="value")(x)
        mask = nn.make_causal_mask(jnp.ones((batch, length)), dtype=jnp.bool_)
        if decode:
            is_initialized = self.has_variable("cache", "cached_key")
            cache_shape = (batch, self.max_len, self.num_heads, head_dim)
            cached_key = self.variable("cache", "cached_key", jnp.zeros, cache_shape, key.dtype)
            cached_value = self.variable(
                "cache", "cached_value", jnp.zeros, cache_shape, value.dtype
            )
            cache_index = self.variable(
                "cache", "cache_index", lambda: jnp.array(0, dtype=jnp.int32)
            )
            if is_initialized:
                cur_index = cache_index.value
                indices = (0, cur_index, 0, 0)
                key = lax.dynamic_update_slice(cached_key.value, key, indices)
                value = lax.dynamic_update_slice(cached_value.value, value, indices)
                cached_key.value = key
                cached_value.value = value
                cache_index.value = cache_index.value + length
                # Attend to cached positions up to and including each query's own position.
                query_positions = cur_index + jnp.arange(length)
                mask = query_positions[:, None] >= jnp.arange(self.max_len)[None, :]
                mask = jnp.broadcast_to(mask, (batch, 1, length, self.max_len))
        out = nn.dot_product_attention(query, key, value, mask=mask)
        return nn.DenseGeneral(features, axis=(-2, -1), name="out")(out)


class AddPositionEmbs(nn.Module):
    max_len: int

    @nn.compact
    def __call__(self, inputs, decode: bool = False):
        length, features = inputs.shape[1:]
        pos_embedding = self.param(
            "pos_embedding", nn.initializers.normal(stddev=0.02), (1, self.max_len, features)
        )
        if decode:
            is_initialized = self.has_variable("cache", "cache_index")
            cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
            if is_initialized:
                i = cache_index.value
                cache_index.value = i + length
                pe = lax.dynamic_slice(pos_embedding, (0, i, 0), (1, length, features))
                return inputs + pe
        return inputs + pos_embedding[:, :length, :]


class CachedDecoderBlock(nn.Module):
    num_heads: int
    max_len: int

    @nn.compact
    def __call__(self, x, decode: bool = False):
        h = nn.LayerNorm(name="ln_1")(x)
        x = x + CachedSelfAttention(self.num_heads, self.max_len, name="attn")(h, decode=decode)
        h = nn.LayerNorm(name="ln_2")(x)
        h = nn.Dense(4 * x.shape[-1], name="fc")(h)
        return x + nn.Dense(x.shape[-1], name="proj")(nn.gelu(h))


class CachedDecoder(nn.Module):
    vocab_size: int = 32
    d_model: int = 8
    num_heads: int = 2
    num_layers: int = 2
    max_len: int = 8

    @nn.compact
    def __call__(self, tokens, decode: bool = False):
        x = nn.Embed(self.vocab_size, self.d_model, name="embed")(tokens)
        x = AddPositionEmbs(self.max_len, name="pos")(x, decode=decode)
        for i in range(self.num_layers):
            x = CachedDecoderBlock(self.num_heads, self.max_len, name=f"block_{i}")(x, decode)
        x = nn.LayerNorm(name="ln_f")(x)
        return nn.Dense(self.vocab_size, use_bias=False, name="lm_head")(x)


# --------------------------------------------------------------------------------------------
# MaxText's decoder: nn.scan over nn.remat(DecoderLayer, static_argnums=...), logically
# partitioned kernels, a parameter-free rotary module, scanned sow.


@dataclasses.dataclass(frozen=True)
class MaxTextConfig:
    vocab_size: int = 48
    emb_dim: int = 16
    num_query_heads: int = 2
    head_dim: int = 8
    mlp_dim: int = 32
    num_decoder_layers: int = 2
    dtype: Any = jnp.float32
    weight_dtype: Any = jnp.float32
    scan_layers: bool = True
    param_scan_axis: int = 1
    remat_policy: str = "qkv_proj"
    record_internal_nn_metrics: bool = True
    logits_via_embedding: bool = False
    normalization_layer_epsilon: float = 1e-6
    dropout_rate: float = 0.0
    enable_dropout: bool = False


def nd_dense_init(scale, mode, distribution):
    def init_fn(key, shape, dtype, in_axis, out_axis):
        fn = jax.nn.initializers.variance_scaling(scale, mode, distribution, in_axis, out_axis)
        return fn(key, shape, dtype)

    return init_fn


def _canonicalize_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


class MaxDenseGeneral(nn.Module):
    features: Any
    axis: Any = -1
    weight_dtype: Any = jnp.float32
    dtype: Any = jnp.float32
    kernel_init: Any = nd_dense_init(1.0, "fan_in", "truncated_normal")
    kernel_axes: tuple[str | None, ...] = ()

    @nn.compact
    def __call__(self, inputs):
        features = _canonicalize_tuple(self.features)
        axis = _canonicalize_tuple(self.axis)
        inputs = jnp.asarray(inputs, self.dtype)
        axis = tuple(ax if ax >= 0 else ax + inputs.ndim for ax in axis)
        kernel_shape = tuple(inputs.shape[ax] for ax in axis) + features
        kernel_in_axis = np.arange(len(axis))
        kernel_out_axis = np.arange(len(axis), len(axis) + len(features))
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
            kernel_shape,
            self.weight_dtype,
            kernel_in_axis,
            kernel_out_axis,
        )
        kernel = jnp.asarray(kernel, self.dtype)
        contract_ind = tuple(range(0, len(axis)))
        return lax.dot_general(inputs, kernel, ((axis, contract_ind), ((), ())))


class MaxEmbed(nn.Module):
    num_embeddings: int
    features: int
    dtype: Any = jnp.float32
    embedding_init: Any = nn.initializers.normal(stddev=1.0)

    def setup(self):
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(self.embedding_init, ("vocab", "embed")),
            (self.num_embeddings, self.features),
            jnp.float32,
        )

    def __call__(self, inputs):
        output = jnp.asarray(self.embedding, self.dtype)[inputs]
        return nn.with_logical_constraint(
            output, ("activation_batch", "activation_length", "embed")
        )

    def attend(self, query):
        return jnp.dot(query, jnp.asarray(self.embedding, jnp.bfloat16).T.astype(query.dtype))


class RMSNorm(nn.Module):
    epsilon: float = 1e-6
    dtype: Any = jnp.float32
    weight_dtype: Any = jnp.float32
    kernel_axes: tuple[str, ...] = ()
    scale_init: Any = nn.initializers.ones

    @nn.compact
    def __call__(self, x):
        x = jnp.asarray(x, jnp.float32)
        features = x.shape[-1]
        mean2 = jnp.mean(lax.square(x), axis=-1, keepdims=True)
        y = jnp.asarray(x * lax.rsqrt(mean2 + self.epsilon), self.dtype)
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(self.scale_init, self.kernel_axes),
            (features,),
            self.weight_dtype,
        )
        return y * jnp.asarray(scale, self.dtype)


class RotaryEmbedding(nn.Module):
    embedding_dims: int
    min_timescale: int = 1
    max_timescale: int = 10_000

    def __call__(self, inputs, position):
        half = self.embedding_dims // 2
        fraction = 2 * jnp.arange(0, half) / self.embedding_dims
        timescale = self.min_timescale * (self.max_timescale / self.min_timescale) ** fraction
        position = position[:, :, jnp.newaxis, jnp.newaxis]
        sinusoid_inp = position / timescale
        sin, cos = jnp.sin(sinusoid_inp), jnp.cos(sinusoid_inp)
        first_half, second_half = jnp.split(inputs, 2, axis=-1)
        first_part = first_half * cos - second_half * sin
        second_part = second_half * cos + first_half * sin
        return jnp.concatenate([first_part, second_part], axis=-1).astype(inputs.dtype)


class MaxAttention(nn.Module):
    config: MaxTextConfig

    @nn.compact
    def __call__(
        self,
        inputs_q,
        inputs_kv,
        inputs_positions,
        decoder_segment_ids=None,
        *,
        model_mode: str = "train",
        deterministic: bool = False,
    ):
        cfg = self.config
        dense = functools.partial(
            MaxDenseGeneral,
            features=(cfg.num_query_heads, cfg.head_dim),
            axis=-1,
            kernel_axes=("embed", "heads", "kv"),
            dtype=cfg.dtype,
            weight_dtype=cfg.weight_dtype,
        )
        query = dense(name="query")(inputs_q) / np.sqrt(cfg.head_dim)
        key = dense(name="key")(inputs_kv)
        value = dense(name="value")(inputs_kv)
        query = RotaryEmbedding(cfg.head_dim, name="query_rotary")(query, inputs_positions)
        key = RotaryEmbedding(cfg.head_dim, name="key_rotary")(key, inputs_positions)
        query = checkpoint_name(query, "query_proj")
        key = checkpoint_name(key, "key_proj")
        value = checkpoint_name(value, "value_proj")
        query = nn.with_logical_constraint(
            query, ("activation_batch", "activation_length", "activation_heads", "activation_kv")
        )
        length = query.shape[1]
        mask = lax.broadcasted_iota(jnp.int32, (length, length), 0) >= lax.broadcasted_iota(
            jnp.int32, (length, length), 1
        )
        mask = mask[None, None]
        if decoder_segment_ids is not None:
            same = decoder_segment_ids[:, :, None] == decoder_segment_ids[:, None, :]
            mask = jnp.logical_and(mask, same[:, None])
        logits = jnp.einsum("btkd,bskd->bkts", query, key).astype(jnp.float32)
        logits = jnp.where(mask, logits, -0.7 * float(np.finfo(np.float32).max))
        probs = jax.nn.softmax(logits, axis=-1).astype(cfg.dtype)
        out = jnp.einsum("bkts,bskd->btkd", probs, value)
        out = MaxDenseGeneral(
            features=inputs_q.shape[-1],
            axis=(-2, -1),
            kernel_axes=("heads", "kv", "embed"),
            dtype=cfg.dtype,
            weight_dtype=cfg.weight_dtype,
            name="out",
        )(out)
        return checkpoint_name(out, "out_proj")


class MaxMlpBlock(nn.Module):
    config: MaxTextConfig

    @nn.compact
    def __call__(self, inputs, deterministic: bool = False):
        cfg = self.config
        dense = functools.partial(MaxDenseGeneral, dtype=cfg.dtype, weight_dtype=cfg.weight_dtype)
        x0 = dense(cfg.mlp_dim, kernel_axes=("embed", "mlp"), name="wi_0")(inputs)
        x1 = dense(cfg.mlp_dim, kernel_axes=("embed", "mlp"), name="wi_1")(inputs)
        x = nn.silu(x0) * x1
        x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)
        return dense(inputs.shape[-1], kernel_axes=("mlp", "embed"), name="wo")(x)


class DecoderLayer(nn.Module):
    config: MaxTextConfig

    @nn.compact
    def __call__(self, inputs, decoder_segment_ids, decoder_positions, deterministic, model_mode):
        cfg = self.config
        inputs = nn.with_logical_constraint(
            inputs, ("activation_batch", "activation_length", "activation_embed")
        )
        lnx = RMSNorm(
            epsilon=cfg.normalization_layer_epsilon,
            dtype=cfg.dtype,
            weight_dtype=cfg.weight_dtype,
            kernel_axes=("norm",),
            name="pre_self_attention_norm",
        )(inputs)
        attention_lnx = MaxAttention(cfg, name="self_attention")(
            lnx,
            lnx,
            decoder_positions,
            decoder_segment_ids=decoder_segment_ids,
            deterministic=deterministic,
            model_mode=model_mode,
        )
        intermediate_inputs = inputs + attention_lnx
        hidden = RMSNorm(
            epsilon=cfg.normalization_layer_epsilon,
            dtype=cfg.dtype,
            weight_dtype=cfg.weight_dtype,
            kernel_axes=("norm",),
            name="post_self_attention_norm",
        )(intermediate_inputs)
        mlp_lnx = MaxMlpBlock(cfg, name="mlp")(hidden, deterministic=deterministic)
        layer_output = mlp_lnx + intermediate_inputs
        if cfg.record_internal_nn_metrics:
            self.sow("intermediates", "activation_mean", jnp.mean(layer_output))
            self.sow("intermediates", "activation_stdev", jnp.std(layer_output))
        if cfg.scan_layers:
            return layer_output, None
        return layer_output


class MaxDecoder(nn.Module):
    config: MaxTextConfig
    shared_embedding: nn.Module

    def get_remat_policy(self):
        if self.config.remat_policy == "qkv_proj":
            return jax.checkpoint_policies.save_only_these_names(
                "query_proj", "value_proj", "key_proj"
            )
        return None

    @nn.compact
    def __call__(
        self,
        decoder_input_tokens,
        decoder_positions,
        decoder_segment_ids=None,
        deterministic: bool = False,
        model_mode: str = "train",
    ):
        cfg = self.config
        y = self.shared_embedding(decoder_input_tokens.astype("int32"))
        y = nn.Dropout(rate=cfg.dropout_rate, broadcast_dims=(-2,))(y, deterministic=deterministic)
        y = y.astype(cfg.dtype)
        BlockLayer = nn.remat(  # noqa: N806 (MaxText's name)
            DecoderLayer,
            prevent_cse=not cfg.scan_layers,
            policy=self.get_remat_policy(),
            static_argnums=(-1, -2, -3, -4, -5),
        )
        initializing = self.is_mutable_collection("params")
        params_spec = (
            cfg.param_scan_axis if initializing else partitioning.ScanIn(cfg.param_scan_axis)
        )
        y, _ = nn.scan(
            BlockLayer,
            variable_axes={"params": params_spec, "cache": 0, "intermediates": 0},
            split_rngs={"params": True, "dropout": cfg.enable_dropout},
            in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
            length=cfg.num_decoder_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )(
            config=cfg, name="layers"
        )(y, decoder_segment_ids, decoder_positions, deterministic, model_mode)
        y = RMSNorm(
            epsilon=cfg.normalization_layer_epsilon,
            dtype=cfg.dtype,
            weight_dtype=cfg.weight_dtype,
            kernel_axes=("norm",),
            name="decoder_norm",
        )(y)
        if cfg.logits_via_embedding:
            logits = self.shared_embedding.attend(y) / jnp.sqrt(y.shape[-1])
        else:
            logits = MaxDenseGeneral(
                cfg.vocab_size,
                weight_dtype=cfg.weight_dtype,
                dtype=jnp.float32,
                kernel_axes=("embed", "vocab"),
                name="logits_dense",
            )(y)
        return nn.with_logical_constraint(
            logits, ("activation_embed_and_logits_batch", "activation_length", "activation_vocab")
        )


class MaxTransformer(nn.Module):
    config: MaxTextConfig

    def setup(self):
        cfg = self.config
        self.shared_embedding = MaxEmbed(cfg.vocab_size, cfg.emb_dim, dtype=cfg.dtype)
        self.decoder = MaxDecoder(config=cfg, shared_embedding=self.shared_embedding)

    def __call__(
        self,
        decoder_input_tokens,
        decoder_positions,
        decoder_segment_ids=None,
        enable_dropout: bool = True,
        model_mode: str = "train",
    ):
        return self.decoder(
            decoder_input_tokens=decoder_input_tokens,
            decoder_positions=decoder_positions,
            decoder_segment_ids=decoder_segment_ids,
            deterministic=not enable_dropout,
            model_mode=model_mode,
        )


# --------------------------------------------------------------------------------------------
# Arguments and cases.


def _tokens(batch: int, length: int, vocab: int) -> jax.Array:
    return jnp.asarray(_rng.integers(1, vocab, (batch, length)), jnp.int32)


BERT_IDS = _tokens(2, 6, 48)
# The second sequence is padded: its last two positions are masked.
BERT_MASK = jnp.asarray([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], jnp.int32)
BERT_TYPES = jnp.asarray([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]], jnp.int32)
BERT_POSITIONS = jnp.broadcast_to(jnp.arange(6, dtype=jnp.int32), (2, 6))
BERT_HEAD_MASK = jnp.asarray(_rng.uniform(0.5, 1.0, (2, 2)), jnp.float32)

T5_INPUTS = _tokens(2, 6, 40).at[1, 4:].set(0)
T5_TARGETS = _tokens(2, 5, 40).at[1, 3:].set(0)
T5_DECODER_INPUTS = jnp.concatenate([jnp.zeros((2, 1), jnp.int32), T5_TARGETS[:, :-1]], axis=1)

GPT2_IDS = _tokens(2, 7, 50)
GPT2_MASK = jnp.asarray([[1, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1]], jnp.int32)

MAX_TOKENS = _tokens(2, 8, 48)
MAX_POSITIONS = jnp.asarray([[0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 0, 1, 2, 3, 4]], jnp.int32)
MAX_SEGMENTS = jnp.asarray([[1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 2, 2, 2, 2, 2]], jnp.int32)

CASES: list[ZooCase] = [
    ZooCase(
        "text_bert",
        lambda: FlaxBertModule(BertConfig()),
        (BERT_IDS, BERT_MASK, BERT_TYPES, BERT_POSITIONS, BERT_HEAD_MASK),
        {
            "deterministic": False,
            "output_attentions": True,
            "output_hidden_states": True,
            "return_dict": True,
        },
        rngs=("dropout",),
        notes="FlaxBertModule: config field, setup lists named str(i), self.self, "
        "make_rng('dropout'), head mask, a flax.struct output dataclass with tuple fields",
        tags=("setup", "rng", "static_args", "non_array"),
    ),
    ZooCase(
        "text_bert_mlm_remat",
        lambda: FlaxBertForMaskedLMModule(
            BertConfig(tie_word_embeddings=False), gradient_checkpointing=True
        ),
        (BERT_IDS, BERT_MASK, BERT_TYPES, BERT_POSITIONS, None),
        {"deterministic": True, "output_hidden_states": True, "return_dict": False},
        notes="FlaxBertForMaskedLMModule (untied): nn.remat layers with static_argnums, None "
        "positional arguments, a tuple output built from a return_dict=False encoder",
        tags=("setup", "lifted", "static_args", "non_array"),
    ),
    ZooCase(
        "text_t5",
        lambda: T5Transformer(T5Config()),
        (T5_INPUTS, T5_DECODER_INPUTS, T5_TARGETS),
        {"enable_dropout": True},
        rngs=("dropout",),
        notes="flaxformer T5: an embedder shared by encoder and decoder and attended for the "
        "logits, relative position biases called from every layer with Python ints",
        tags=("setup", "shared", "rng", "static_args"),
    ),
    ZooCase(
        "text_t5_encode",
        lambda: T5Transformer(T5Config()),
        (T5_INPUTS,),
        {"enable_dropout": False},
        method="encode",
        notes="T5Transformer.encode: method= by name on a setup() model whose decoder is unused",
        tags=("setup", "method", "shared", "static_args"),
    ),
    ZooCase(
        "text_gpt2",
        lambda: FlaxGPT2LMHeadModule(GPT2Config(), dtype=jnp.bfloat16),
        (GPT2_IDS, GPT2_MASK),
        {"deterministic": True, "output_hidden_states": True},
        notes="FlaxGPT2: FlaxConv1D self.param kernels, a causal mask array built in setup, "
        "bfloat16 compute over float32 params, wte.attend logits, a dict output with None",
        tags=("setup", "shared", "dtype", "static_args", "non_array"),
    ),
    ZooCase(
        "text_moe",
        MoeLM,
        (_tokens(2, 6, 32),),
        mutable=["intermediates"],
        notes="top-k router (lax.top_k), experts stacked by nn.vmap, load-balancing and z "
        "losses sown in every block",
        tags=("lifted", "mutable", "shared"),
    ),
    ZooCase(
        "text_kv_cache",
        CachedDecoder,
        (_tokens(2, 4, 32),),
        {"decode": True},
        mutable=["cache"],
        notes="init with decode=True creates the cache; apply prefills 4 of 8 positions "
        "(dynamic_update_slice, cache_index), mutable=['cache']",
        tags=("mutable", "static_args"),
    ),
    ZooCase(
        "text_maxtext",
        lambda: MaxTransformer(MaxTextConfig()),
        (MAX_TOKENS, MAX_POSITIONS, MAX_SEGMENTS),
        {"enable_dropout": False, "model_mode": "train"},
        mutable=["intermediates"],
        notes="MaxText: nn.scan(nn.remat(DecoderLayer, static_argnums=(-1..-5), policy)) with "
        "params on axis 1 (ScanIn), PARTITION_NAME 'layers', logically partitioned kernels, "
        "Python flags broadcast through the scan, sow in the body",
        tags=("setup", "lifted", "metadata", "mutable", "static_args"),
    ),
    ZooCase(
        "text_bert_mlm_tied",
        lambda: FlaxBertForMaskedLMModule(BertConfig(), gradient_checkpointing=True),
        (BERT_IDS, BERT_MASK, BERT_TYPES, BERT_POSITIONS, None),
        {"deterministic": True, "output_hidden_states": True, "return_dict": False},
        notes="FlaxBertForMaskedLMModule (tied): the head reads bert's word embedding through "
        "self.bert.variables and runs self.decoder.apply on its transpose (nested apply)",
        tags=("setup", "shared", "lifted", "static_args", "non_array"),
    ),
]

# Cases that find a flaxmock bug or limitation go here, each naming its reproduction.
PENDING: list[ZooCase] = []
