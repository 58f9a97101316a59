"""The model zoo the tests parametrise over: the cases real Flax models contain.

Each :class:`ZooCase` builds a small linen model and concrete arguments so that
``model.init(key, *args, **kwargs)`` and ``model.apply`` both run. Tests use
``pytest.mark.parametrize("case", IDIOM_PARAMS, ids=IDS)`` (the idiom cases; the costliest and
the wild ones marked ``slow``), ``PARAMS_WITH_JIT`` for the core eager/jit checks (every case
eager; under jit the idiom cases of ``JIT_IDS``), ``PARAMS`` for every non-slow case, or
``cases("lifted")`` for a subset.

Tags: ``setup``, ``method`` (a ``method=`` other than ``__call__``), ``shared`` (one module called
from several places or its variables read directly), ``mutable``, ``rng``, ``static_args``
(Python values among the arguments), ``non_array``, ``dtype``, ``metadata`` (boxed params),
``lifted`` (``nn.scan``/``nn.remat``/``nn.vmap``/nested ``apply``), ``llama``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxmock.examples import llama
from zoo_case import ZooCase

_rng = np.random.default_rng(0)


def _normal(*shape: int, dtype: Any = jnp.float32) -> jax.Array:
    return jnp.asarray(_rng.standard_normal(shape), dtype)


class MLP(nn.Module):
    features: tuple[int, ...] = (16, 8, 4)

    @nn.compact
    def __call__(self, x):
        for i, f in enumerate(self.features):
            x = nn.Dense(f)(x)
            if i < len(self.features) - 1:
                x = nn.gelu(x)
        return x


class SetupModule(nn.Module):
    def setup(self):
        self.inp = nn.Dense(8)
        self.hidden = [nn.Dense(8) for _ in range(2)]
        self.norm = nn.LayerNorm()

    def __call__(self, x):
        x = self.inp(x)
        for layer in self.hidden:
            x = nn.relu(layer(x))
        return self.norm(x)


class SelfMethod(nn.Module):
    """``__call__`` calls its own methods, which call submodules."""

    def setup(self):
        self.enc = nn.Dense(6)
        self.dec = nn.Dense(3)

    def encode(self, x):
        return nn.tanh(self.enc(x))

    def _helper(self, h):
        return self.dec(h) * 2.0

    def __call__(self, x):
        return self._helper(self.encode(x))


class EmbedAttend(nn.Module):
    @nn.compact
    def __call__(self, tokens):
        embed = nn.Embed(32, 8, name="embed")
        h = nn.Dense(8, name="mix")(embed(tokens))
        return embed.attend(h)


class WeightTying(nn.Module):
    """The parent reads the child's variables directly."""

    def setup(self):
        self.bias = nn.Dense(8)
        self.proj = nn.Dense(8)
        self.embed = nn.Embed(20, 8)

    def __call__(self, tokens):
        bias = self.bias(jnp.ones((1, 4)))
        h = self.embed(tokens) + bias
        table = self.embed.variables["params"]["embedding"]
        return self.proj(h) @ table.T


class Encoder(nn.Module):
    embed: nn.Module

    @nn.compact
    def __call__(self, tokens):
        return nn.Dense(8, name="proj")(self.embed(tokens))


class Decoder(nn.Module):
    embed: nn.Module

    @nn.compact
    def __call__(self, tokens, memory):
        h = self.embed(tokens) + memory.mean(1, keepdims=True)
        return self.embed.attend(nn.Dense(8, name="proj")(h))


class SharedSubmodule(nn.Module):
    """One embedding created in setup and passed as an attribute to two modules."""

    def setup(self):
        self.shared = nn.Embed(24, 8)
        self.encoder = Encoder(self.shared)
        self.decoder = Decoder(self.shared)

    def __call__(self, src, tgt):
        return self.decoder(tgt, self.encoder(src))


class SharedSubmoduleAdopted(nn.Module):
    """Like :class:`SharedSubmodule`, but the embedding is never assigned to ``self``.

    Flax then binds it where it is first used: its variables live under ``encoder/embed``
    although the decoder calls it too.
    """

    def setup(self):
        embed = nn.Embed(24, 8)
        self.encoder = Encoder(embed)
        self.decoder = Decoder(embed)

    def __call__(self, src, tgt):
        return self.decoder(tgt, self.encoder(src))


class EncoderDecoder(nn.Module):
    """A setup() model with extra methods, called by name or as a function."""

    def setup(self):
        self.enc = MLP((8, 8))
        self.dec = MLP((8, 5))

    def encode(self, x):
        return self.enc(x)

    def decode(self, z):
        return self.dec(z)

    def __call__(self, x):
        return self.decode(self.encode(x))


class ResBlock(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        h = nn.Conv(4, (3, 3), use_bias=False)(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
        return nn.relu(h + x)


class ResNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Conv(4, (3, 3))(x)
        for _ in range(2):
            x = ResBlock()(x, train)
        return nn.Dense(3)(x.mean((1, 2)))


class WithDropout(nn.Module):
    @nn.compact
    def __call__(self, x, deterministic: bool = False):
        x = nn.Dense(8)(x)
        x = nn.Dropout(0.5)(x, deterministic=deterministic)
        return nn.Dense(2)(x)


class SowChild(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(x.shape[-1])(x)
        self.sow("intermediates", "h", h)
        return h


class Sowing(nn.Module):
    """Sows in parent and child, a child called twice, a custom reduce_fn, two collections."""

    @nn.compact
    def __call__(self, x):
        child = SowChild(name="child")
        h = child(child(x))
        self.sow("intermediates", "out", h)
        self.sow("plots", "total", h.sum(), reduce_fn=lambda old, new: old + new, init_fn=lambda: 0)
        self.sow(
            "plots", "total", h.mean(), reduce_fn=lambda old, new: old + new, init_fn=lambda: 0
        )
        return h


class NonArrayOutputs(nn.Module):
    @nn.compact
    def __call__(self, x, *, deterministic: bool = True, mode: str = "a"):
        h = nn.Dense(3)(x)
        if not deterministic:
            h = h * 0.5
        if mode == "b":
            h = nn.Dense(3, name="b_branch")(h)
        return {"out": h, "pair": (h.sum(), None), "n": 3, "mode": mode, "flag": deterministic}


class Bf16Params(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(8, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)(x)
        return nn.LayerNorm(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)(h)


class IntBoolOutputs(nn.Module):
    @nn.compact
    def __call__(self, x):
        logits = nn.Dense(5)(x)
        return jnp.argmax(logits, -1).astype(jnp.int32), logits > 0


class ComplexOutputs(nn.Module):
    @nn.compact
    def __call__(self, x):
        return jnp.fft.fft(nn.Dense(8)(x)).astype(jnp.complex64)


class Partitioned(nn.Module):
    @nn.compact
    def __call__(self, x):
        dense = nn.Dense(
            8, kernel_init=nn.with_partitioning(nn.initializers.lecun_normal(), (None, "model"))
        )
        w = self.param("w", nn.with_partitioning(nn.initializers.ones, ("model",)), (8,))
        return dense(x) * w


class ScanBody(nn.Module):
    @nn.compact
    def __call__(self, carry, scale):
        h, step = carry
        h = nn.tanh(nn.Dense(6, name="proj")(h)) * scale
        self.sow("intermediates", "h", h)
        return (h, step + 1), h.sum(-1)


class ScanLayers(nn.Module):
    @nn.compact
    def __call__(self, x):
        layers = nn.scan(
            nn.remat(ScanBody),
            variable_axes={"params": 0, "intermediates": 0},
            split_rngs={"params": True},
            in_axes=(nn.broadcast,),
            length=3,
        )
        (h, steps), ys = layers(name="layers")((x, 0), jnp.float32(0.5))
        return h, steps, ys


class VmapEnsemble(nn.Module):
    @nn.compact
    def __call__(self, x):
        members = nn.vmap(
            nn.Dense,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=4,
        )(3, name="members")
        return members(x).mean(0)


class NestedApply(nn.Module):
    """A block that applies an unbound module on parameters it holds itself."""

    @nn.compact
    def __call__(self, x):
        kernel = self.param("head_kernel", nn.initializers.lecun_normal(), (x.shape[-1], 4))
        h = nn.Dense(x.shape[-1], name="pre")(x)
        return nn.Dense(4, name="head").apply(
            {"params": {"kernel": kernel, "bias": jnp.zeros(4)}}, h
        )


X = _normal(2, 5)
TOKENS = jnp.asarray(_rng.integers(0, 20, (2, 6)), jnp.int32)

CASES: list[ZooCase] = [
    ZooCase("mlp_compact", MLP, (X,), notes="compact nn.Dense stack with gelu"),
    ZooCase("setup_module", SetupModule, (X,), notes="setup() children, a list", tags=("setup",)),
    ZooCase(
        "self_method",
        SelfMethod,
        (X,),
        notes="__call__ calls self.encode and self._helper, which call submodules",
        tags=("setup",),
    ),
    ZooCase(
        "super_call",
        lambda: nn.SelfAttention(num_heads=2, qkv_features=8),
        (_normal(2, 4, 8),),
        notes="nn.SelfAttention calls super().__call__",
    ),
    ZooCase(
        "mha_cross",
        lambda: nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8),
        (_normal(2, 3, 8), _normal(2, 5, 8)),
        notes="inputs_q and inputs_kv of different lengths",
    ),
    ZooCase(
        "embed_attend",
        EmbedAttend,
        (TOKENS,),
        notes="one nn.Embed called twice: lookup and attend",
        tags=("shared",),
    ),
    ZooCase(
        "weight_tying",
        WeightTying,
        (TOKENS,),
        notes="the parent reads self.embed.variables['params']['embedding']",
        tags=("setup", "shared"),
    ),
    ZooCase(
        "shared_submodule",
        SharedSubmodule,
        (TOKENS, TOKENS[:, :4]),
        notes="an Embed bound as 'shared' in the parent, called by encoder and decoder",
        tags=("setup", "shared"),
    ),
    ZooCase(
        "shared_submodule_adopted",
        SharedSubmoduleAdopted,
        (TOKENS, TOKENS[:, :4]),
        notes="an Embed never assigned to self: its params live under encoder/embed",
        tags=("setup", "shared"),
    ),
    ZooCase("encoder_decoder", EncoderDecoder, (X,), tags=("setup",)),
    ZooCase(
        "encoder_decoder_encode",
        EncoderDecoder,
        (X,),
        method="encode",
        notes="method= by name",
        tags=("setup", "method"),
    ),
    ZooCase(
        "encoder_decoder_decode_fn",
        EncoderDecoder,
        (_normal(2, 8),),
        method=EncoderDecoder.decode,
        notes="method= as a function",
        tags=("setup", "method"),
    ),
    ZooCase(
        "batchnorm_resnet",
        ResNet,
        (_normal(2, 6, 6, 4),),
        {"train": True},
        mutable=["batch_stats"],
        notes="BatchNorm in training mode updates batch_stats",
        tags=("mutable", "static_args"),
    ),
    ZooCase(
        "batchnorm_eval",
        ResNet,
        (_normal(2, 6, 6, 4),),
        {"train": False},
        notes="BatchNorm reads batch_stats without mutating them",
        tags=("static_args",),
    ),
    ZooCase(
        "dropout",
        WithDropout,
        (X,),
        {"deterministic": False},
        rngs=("dropout",),
        tags=("rng", "static_args"),
    ),
    ZooCase(
        "sow_intermediates",
        Sowing,
        (X,),
        mutable=["intermediates", "plots"],
        notes="sow in parent and child (child called twice), a reduce_fn, two collections",
        tags=("mutable",),
    ),
    ZooCase(
        "non_array_outputs",
        NonArrayOutputs,
        (X,),
        {"deterministic": True, "mode": "b"},
        notes="dict output with a tuple, None, int, str, bool; Python flags select a branch",
        tags=("non_array", "static_args"),
    ),
    ZooCase("bf16_params", Bf16Params, (X.astype(jnp.bfloat16),), tags=("dtype",)),
    ZooCase("int_bool_outputs", IntBoolOutputs, (X,), tags=("dtype",)),
    ZooCase("complex_outputs", ComplexOutputs, (X,), tags=("dtype",)),
    ZooCase(
        "partitioned",
        Partitioned,
        (X,),
        notes="nn.with_partitioning: params are nn.Partitioned boxes",
        tags=("metadata",),
    ),
    ZooCase(
        "scan_layers",
        ScanLayers,
        (_normal(2, 6),),
        mutable=["intermediates"],
        notes="nn.scan(nn.remat(body)): stacked params, broadcast arg, tuple carry, sow",
        tags=("lifted", "mutable"),
    ),
    ZooCase(
        "vmap_ensemble",
        VmapEnsemble,
        (X,),
        notes="nn.vmap(nn.Dense): params stacked on a leading axis of 4",
        tags=("lifted",),
    ),
    ZooCase(
        "nested_apply",
        NestedApply,
        (X,),
        notes="nn.Dense(4).apply({'params': ...}) inside a bound module",
        tags=("lifted",),
    ),
    ZooCase(
        "llama_tiny",
        lambda: llama.Llama(llama.LlamaConfig.tiny()),
        (TOKENS,),
        mutable=["intermediates"],
        notes="the bundled example: setup/compact, self-method, tied embedding, sown weights",
        tags=("llama", "setup", "shared", "mutable", "metadata"),
    ),
    ZooCase(
        "llama_tiny_scan",
        lambda: llama.Llama(llama.LlamaConfig.tiny(scan_layers=True, tie_embeddings=False)),
        (TOKENS,),
        notes="the bundled example with nn.scan(nn.remat(Block)) and a separate lm_head",
        tags=("llama", "setup", "lifted", "metadata"),
    ),
]

# Our own models with the idioms of public vision, text and sequence models (each module's
# docstring tables its cases, their idioms and the model that motivated them); they go through
# every test that parametrises over CASES.
import zoo_wild_seq  # noqa: E402
import zoo_wild_text  # noqa: E402
import zoo_wild_vision  # noqa: E402

CASES = CASES + zoo_wild_vision.CASES + zoo_wild_text.CASES + zoo_wild_seq.CASES

#: Cases that cost the most per test (big scans, many layers) and mostly repeat what a cheaper
#: case covers: marked ``slow``, run with ``pytest -m slow`` (tests/conftest.py skips them
#: otherwise), so that ``make test`` stays within a few minutes on two cores.
SLOW_IDS = frozenset(
    {
        "vision_bigvision_vit_scan",
        "vision_scan_resnet_bn",
        "vision_unet_diffusion",
        "vision_swin",
        "vision_vit_dropout",
        "vision_resnet_bottleneck_bf16_eval",
        "vision_mae",
        "text_maxtext",
        "text_bert_mlm_remat",
        "text_t5_encode",
        "text_gpt2",
        "seq_bidirectional",
        "seq_conv_lstm",
        "seq_scanned_lstm_encode",
        "seq_remat_static_custom_vjp",
        "seq_s4d",
        "seq_wavenet_tcn",
        "seq_rnn_lstm_gru_bare",
        "vision_convnext_droppath",
        "vision_dcgan_generator",
        "vision_unet_encode",
    }
)
assert SLOW_IDS <= {case.id for case in CASES}, SLOW_IDS - {case.id for case in CASES}

#: ``CASES`` for ``pytest.mark.parametrize``, the slow ones marked.
PARAMS = [
    pytest.param(case, marks=pytest.mark.slow) if case.id in SLOW_IDS else case for case in CASES
]

IDS = [case.id for case in CASES]

#: Cases written after public models (``zoo_wild_*``): bigger and slower than the idiom cases
#: above them. ``make test`` runs them through the check that matters most (exact equality
#: with ``module.apply`` with real variables, eager: :data:`PARAMS_WITH_JIT`); every other zoo
#: test runs them under ``slow`` (:data:`IDIOM_PARAMS`, :data:`IDIOM_PARAMS_WITH_JIT`), so
#: that ``make test`` stays within its time on two cores.
#: ``make test-slow`` runs all of them everywhere.
WILD_IDS = frozenset(
    case.id for module in (zoo_wild_vision, zoo_wild_text, zoo_wild_seq) for case in module.CASES
)

#: ``CASES`` with the slow ones and the wild ones marked ``slow``.
IDIOM_PARAMS = [
    pytest.param(case, marks=pytest.mark.slow) if case.id in SLOW_IDS | WILD_IDS else case
    for case in CASES
]


#: Idiom cases whose jit variant runs in ``make test``: one or more per feature that compiling
#: could change (setup and sharing, method=, mutable state, rngs, non-array outputs, dtypes,
#: metadata boxes, lifted transforms). The other idiom cases run under jit in ``slow``.
JIT_IDS = frozenset(
    {
        "mlp_compact",
        "weight_tying",
        "encoder_decoder_decode_fn",
        "batchnorm_resnet",
        "dropout",
        "non_array_outputs",
        "bf16_params",
        "partitioned",
        "scan_layers",
        "vmap_ensemble",
        "nested_apply",
        "llama_tiny_scan",
    }
)
assert JIT_IDS <= {case.id for case in CASES} - WILD_IDS


def _slow(case_id: str, jit: bool, wild_eager: bool) -> bool:
    if case_id in SLOW_IDS:
        return True
    if case_id in WILD_IDS:
        return jit or not wild_eager
    return jit and case_id not in JIT_IDS


def _with_jit(wild_eager: bool) -> list[Any]:
    return [
        pytest.param(
            case,
            jit,
            id=f"{case.id}-{'jit' if jit else 'eager'}",
            marks=[pytest.mark.slow] if _slow(case.id, jit, wild_eager) else [],
        )
        for case in CASES
        for jit in (False, True)
    ]


#: ``(case, jit)`` pairs for tests run eagerly and under jit; a wild case runs eagerly only, an
#: idiom case outside :data:`JIT_IDS` under jit only in ``slow``.
PARAMS_WITH_JIT = _with_jit(wild_eager=True)
#: The same with every wild case ``slow``.
IDIOM_PARAMS_WITH_JIT = _with_jit(wild_eager=False)

_TAGS = frozenset(tag for case in CASES for tag in case.tags)


def cases(*tags: str) -> list[ZooCase]:
    """The cases that carry every one of ``tags`` (all cases when none are given).

    Raises:
      ValueError: If a tag is not used by any case (a typo would otherwise select nothing).
    """
    unknown = sorted(set(tags) - _TAGS)
    if unknown:
        raise ValueError(f"Unknown zoo tags {unknown}; the tags are {sorted(_TAGS)}.")
    return [case for case in CASES if set(tags) <= set(case.tags)]
