"""Zoo cases with the idioms of public vision models, in small models of our own.

Each case reproduces, on 8x8 images and a few channels, the idioms that a public vision model
is written with: how it passes modules around, which transforms, state and rng streams it uses,
what it returns. The code is ours; the table names the model that motivated each case.

==================================  ========================================  ======================
case id                             idioms exercised                          motivated by
==================================  ========================================  ======================
vision_resnet_train                 functools.partial(nn.Conv) and            flax examples imagenet
                                    partial(nn.BatchNorm) passed down as      ResNet
                                    fields; a module class as a field
                                    (unit); an activation as a field; a
                                    projected shortcut made by a helper
                                    function only when shapes differ;
                                    zero-initialised last BatchNorm scale;
                                    explicit padding list; max_pool;
                                    batch_stats updated

vision_resnet_bottleneck_bf16_eval  the 1-3-1 bottleneck unit; bfloat16       flax examples imagenet
                                    compute over float32 params; running      ResNet
                                    averages read (train=False)

vision_vit_dropout                  patch nn.Conv; class token param tiled    google-research
                                    and concatenated; a position module       vision_transformer ViT
                                    whose initialiser is a field;
                                    MultiHeadDotProductAttention given
                                    deterministic, dropout_rate and
                                    broadcast_dropout=False at construction,
                                    called with (x, x); nn.Dropout;
                                    keyword-only deterministic and train;
                                    dict fields unpacked with **; tanh
                                    representation layer

vision_bigvision_vit_scan           nn.scan(nn.remat(block,                   big_vision ViT
                                    prevent_cse=False, static_argnums=(2,),
                                    policy=...)) with split_rngs for params
                                    and dropout, in_axes=nn.broadcast and
                                    PARTITION_NAME; a scanned body returning
                                    (x, dict) sliced per layer; logically
                                    partitioned kernels; dtype given as a
                                    string; a free function calling
                                    module.param; attention pooling with a
                                    learned probe; one Dense (and the head)
                                    called twice

vision_unet_diffusion               setup() lists of lists of                 DDPM UNet
                                    nn.remat(block, static_argnums=(3,))
                                    blocks and a list holding None; timestep
                                    sinusoid and label nn.Embed conditioning
                                    in a helper method; GroupNorm; skips
                                    kept in a list and popped;
                                    jax.image.resize; one-argument
                                    self-attention; zero-initialised output
                                    conv

vision_unet_encode                  method= a lambda calling the encode       DDPM UNet
                                    method with None for the label: a list
                                    of arrays out

vision_convnext_droppath            named nn.Sequential holding modules made  ConvNeXt
                                    outside it and a plain function;
                                    depthwise conv (feature_group_count);
                                    layer-scale param; stochastic depth on a
                                    'drop_path' rng stream; nn.share_scope
                                    in a wrapper's setup()

vision_mlp_mixer                    setup() blocks; token mixing across       google-research
                                    jnp.swapaxes; logically partitioned       vision_transformer
                                    kernels; nn.Einsum head; an unused        MLP-Mixer
                                    keyword-only train

vision_swin                         a relative-offset bias table param and a  Swin Transformer
                                    NumPy index made in setup(); shifted
                                    windows (jnp.roll, a NumPy mask);
                                    nn.Einsum giving q, k, v; Python ints
                                    returned by one submodule and passed to
                                    others; attention weights sown; dict
                                    output holding tuples of arrays and of
                                    ints

vision_scan_resnet_bn               nn.scan over BatchNorm blocks: params     ResNet stages scanned
                                    and batch_stats stacked; train as a       over depth
                                    module attribute; None as the scanned
                                    input and output

vision_dcgan_generator              strided nn.ConvTranspose; train mode      DCGAN generator
                                    read from
                                    is_mutable_collection('batch_stats')

vision_simclr                       an unbound model passed as a field and    SimCLR
                                    called on two views (BatchNorm stats
                                    updated twice); an @nn.nowrap helper
                                    that names submodules; one head called
                                    twice; (loss, dict) output

vision_mae                          random masking from a 'mask' rng in the   MAE (masked
                                    root's own methods; argsort and           autoencoder)
                                    take_along_axis; token params made in
                                    setup(); lists of blocks; (loss, pred,
                                    mask) output

vision_sn_discriminator             nn.SpectralNorm over Conv and Dense       spectrally normalised
                                    (map_variables; u and sigma in            GAN discriminators
                                    batch_stats); update_stats from
                                    is_mutable_collection; a
                                    flax.struct.dataclass output with a
                                    static field
==================================  ========================================  ======================
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoo_case import ZooCase
from zoo_parts import Inputs, TwoLayer, sincos_grid, sinusoid

ModuleFactory = Callable[..., nn.Module]

_in = Inputs(2024)


# --- convolutional towers with BatchNorm ----------------------------------------------------


def _shortcut(x, y, conv: ModuleFactory, norm: ModuleFactory, stride: int):
    """``x`` itself when it matches ``y``, else a strided 1x1 projection of it.

    Called from a compact method: the submodules it makes belong to that module.
    """
    if x.shape == y.shape:
        return x
    x = conv(y.shape[-1], (1, 1), (stride, stride), name="skip_conv")(x)
    return norm(name="skip_norm")(x)


class _Unit(nn.Module):
    """The fields of a residual unit: its parent hands down the conv and norm factories."""

    width: int
    conv: ModuleFactory
    norm: ModuleFactory
    act: Callable
    stride: int = 1


class PlainUnit(_Unit):
    """Two 3x3 convolutions around a shortcut."""

    @nn.compact
    def __call__(self, x):
        h = self.conv(self.width, (3, 3), (self.stride, self.stride))(x)
        h = self.conv(self.width, (3, 3))(self.act(self.norm()(h)))
        h = self.norm(scale_init=nn.initializers.zeros_init())(h)
        return self.act(h + _shortcut(x, h, self.conv, self.norm, self.stride))


class BottleneckUnit(_Unit):
    """1x1 down to ``width``, a (strided) 3x3, 1x1 up to ``4 * width``."""

    @nn.compact
    def __call__(self, x):
        plan = [(self.width, 1, 1), (self.width, 3, self.stride), (4 * self.width, 1, 1)]
        h = x
        for i, (features, k, s) in enumerate(plan):
            h = self.conv(features, (k, k), (s, s))(h)
            if i < len(plan) - 1:
                h = self.act(self.norm()(h))
        h = self.norm(scale_init=nn.initializers.zeros_init())(h)
        return self.act(h + _shortcut(x, h, self.conv, self.norm, self.stride))


class ConvTower(nn.Module):
    """A stem, stages of ``unit`` blocks (stride 2 entering each later stage), a classifier."""

    depths: Sequence[int]
    unit: type[nn.Module]
    width: int
    classes: int
    dtype: Any = jnp.float32
    act: Callable = nn.relu

    @nn.compact
    def __call__(self, x, train: bool = True):
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
        # Evaluation reads the running averages; training updates them.
        frozen = not train
        norm = functools.partial(nn.BatchNorm, dtype=self.dtype, use_running_average=frozen)
        x = conv(self.width, (3, 3), padding=[(1, 1), (1, 1)], name="stem")(x)
        x = self.act(norm(name="stem_norm")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        for stage, depth in enumerate(self.depths):
            for k in range(depth):
                stride = 2 if stage > 0 and k == 0 else 1
                x = self.unit(self.width * 2**stage, conv, norm, self.act, stride)(x)
        logits = nn.Dense(self.classes, dtype=self.dtype, name="classifier")(x.mean(axis=(1, 2)))
        return jnp.asarray(logits, self.dtype)


class StageBlock(nn.Module):
    """One block of a stage of identical blocks, the body of an ``nn.scan``."""

    squeeze: int
    train: bool = False

    @nn.compact
    def __call__(self, x, nothing):
        norm = functools.partial(nn.BatchNorm, use_running_average=not self.train, momentum=0.9)
        h = nn.relu(norm(name="norm_a")(nn.Conv(self.squeeze, (1, 1), name="reduce")(x)))
        h = nn.Conv(x.shape[-1], (3, 3), use_bias=False, name="spread")(h)
        h = norm(scale_init=nn.initializers.zeros_init(), name="norm_b")(h)
        return nn.relu(x + h), nothing


class ScannedStageNet(nn.Module):
    width: int = 8
    depth: int = 3
    classes: int = 5

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Conv(self.width, (3, 3), strides=(2, 2), use_bias=False, name="stem")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, name="stem_bn")(x))
        stage_cls = nn.scan(
            StageBlock,
            variable_axes={"params": 0, "batch_stats": 0},
            split_rngs={"params": True},
            length=self.depth,
        )
        x, _ = stage_cls(self.width // 2, train, name="stage")(x, None)
        return nn.Dense(self.classes, name="classifier")(x.mean(axis=(1, 2)))


# --- patch transformers ---------------------------------------------------------------------


class LearnedPositions(nn.Module):
    """Adds a learned table of the tokens' shape; the initialiser is a field."""

    init_fn: Callable[..., jax.Array]

    @nn.compact
    def __call__(self, tokens):
        if tokens.ndim != 3:
            raise ValueError(f"expected (batch, tokens, width), got shape {tokens.shape}")
        return tokens + self.param("table", self.init_fn, (1, *tokens.shape[1:]))


class ViTLayer(nn.Module):
    heads: int
    hidden: int
    rate: float = 0.1
    attn_rate: float = 0.1

    @nn.compact
    def __call__(self, x, *, deterministic):
        h = nn.LayerNorm(name="ln_attn")(x)
        h = nn.MultiHeadDotProductAttention(
            num_heads=self.heads,
            kernel_init=nn.initializers.xavier_uniform(),
            dropout_rate=self.attn_rate,
            broadcast_dropout=False,
            deterministic=deterministic,
            name="attn",
        )(h, h)
        x = x + nn.Dropout(self.rate)(h, deterministic=deterministic)
        mlp = TwoLayer(
            self.hidden,
            rate=self.rate,
            dense=functools.partial(
                nn.Dense,
                kernel_init=nn.initializers.xavier_uniform(),
                bias_init=nn.initializers.normal(1e-6),
            ),
            name="mlp",
        )
        h = mlp(nn.LayerNorm(name="ln_mlp")(x), deterministic)
        return x + nn.Dropout(self.rate)(h, deterministic=deterministic)


class ViTEncoder(nn.Module):
    layers: int
    heads: int
    hidden: int
    rate: float = 0.1

    @nn.compact
    def __call__(self, x, *, train):
        x = LearnedPositions(nn.initializers.normal(0.02), name="positions")(x)
        x = nn.Dropout(self.rate)(x, deterministic=not train)
        for i in range(self.layers):
            x = ViTLayer(self.heads, self.hidden, self.rate, name=f"layer_{i}")(
                x, deterministic=not train
            )
        return nn.LayerNorm(name="final_ln")(x)


class PatchClassifier(nn.Module):
    """Patches, a class token, the encoder (configured by a dict), a tanh layer, logits."""

    patch: dict
    encoder: dict
    width: int
    rep: int | None
    classes: int

    @nn.compact
    def __call__(self, images, *, train):
        size = self.patch["size"]
        x = nn.Conv(self.width, size, strides=size, padding="VALID", name="patchify")(images)
        x = x.reshape(x.shape[0], -1, self.width)
        token = self.param("class_token", nn.initializers.zeros, (1, 1, self.width))
        x = jnp.concatenate([jnp.tile(token, (x.shape[0], 1, 1)), x], axis=1)
        x = ViTEncoder(name="encoder", **self.encoder)(x, train=train)[:, 0]
        if self.rep is not None:
            x = nn.tanh(nn.Dense(self.rep, name="rep")(x))
        return nn.Dense(self.classes, name="head")(x)


def _position_codes(module: nn.Module, kind: str, grid: tuple[int, int], width: int, dtype):
    """Position codes for a token grid: a param of ``module`` or fixed sines."""
    if kind == "learned":
        init = nn.initializers.normal(stddev=width**-0.5)
        return module.param("positions", init, (1, grid[0] * grid[1], width), dtype)
    if kind == "sincos":
        return sincos_grid(*grid, width).astype(dtype)
    raise ValueError(f"unknown position code {kind!r}")


class AuxBlock(nn.Module):
    """Pre-norm attention and MLP; also returns a dict of its inner activations."""

    heads: int
    hidden: int
    rate: float = 0.0
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x, deterministic=True):
        aux = {}
        h = nn.LayerNorm(name="ln_attn")(x)
        aux["attn"] = h = nn.MultiHeadDotProductAttention(
            num_heads=self.heads, deterministic=deterministic, dtype=self.dtype, name="attn"
        )(h, h)
        x = aux["resid_attn"] = x + nn.Dropout(self.rate)(h, deterministic)
        axes = nn.with_logical_partitioning(nn.initializers.xavier_uniform(), ("embed", "mlp"))
        mlp = TwoLayer(
            self.hidden,
            rate=self.rate,
            dense=functools.partial(nn.Dense, dtype=self.dtype, kernel_init=axes),
            name="mlp",
        )
        aux["mlp"] = h = mlp(nn.LayerNorm(name="ln_mlp")(x), deterministic)
        x = aux["resid_mlp"] = x + nn.Dropout(self.rate)(h, deterministic)
        return x, aux


class ProbePool(nn.Module):
    """Pools tokens by attending from one learned query."""

    heads: int
    hidden: int

    @nn.compact
    def __call__(self, x):
        probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, x.shape[-1]), x.dtype)
        probe = jnp.broadcast_to(probe, (x.shape[0], 1, x.shape[-1]))
        h = nn.MultiHeadDotProductAttention(num_heads=self.heads, name="attn")(probe, x)
        h = h + TwoLayer(self.hidden, name="mlp")(nn.LayerNorm(name="ln")(h))
        return h[:, 0]


class ScannedViT(nn.Module):
    """Patch tokens through ``depth`` scanned, rematerialised blocks, pooled by a probe."""

    patch: tuple[int, int] = (4, 4)
    width: int = 8
    depth: int = 2
    heads: int = 2
    hidden: int = 16
    classes: int = 3
    rate: float = 0.1
    positions: str = "learned"
    remat_policy: str = "nothing_saveable"
    dtype: str = "float32"

    @nn.compact
    def __call__(self, images, *, train=False):
        deterministic = not train
        x = nn.Conv(
            self.width,
            self.patch,
            strides=self.patch,
            padding="VALID",
            dtype=self.dtype,
            name="patchify",
        )(jnp.asarray(images, self.dtype))
        n, rows, cols, _ = x.shape
        x = x.reshape(n, rows * cols, self.width)
        x = x + _position_codes(self, self.positions, (rows, cols), self.width, x.dtype)
        x = nn.Dropout(self.rate)(x, deterministic)
        body = nn.remat(
            AuxBlock,
            prevent_cse=False,
            static_argnums=(2,),  # self is argument 0, deterministic argument 2.
            policy=getattr(jax.checkpoint_policies, self.remat_policy, None),
        )
        blocks = nn.scan(
            body,
            variable_axes={"params": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=nn.broadcast,
            length=self.depth,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )(self.heads, self.hidden, self.rate, self.dtype, name="blocks")
        x, stacked = blocks(x, deterministic)
        per_layer = [jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(self.depth)]
        x = nn.LayerNorm(name="final_ln")(x)
        rep, head = nn.Dense(self.width, name="rep"), nn.Dense(self.classes, name="head")
        grid = nn.tanh(rep(x.reshape(n, rows, cols, self.width)))
        pooled = nn.tanh(rep(ProbePool(self.heads, self.hidden, name="pool")(x)))
        return head(pooled), {"layers": per_layer, "grid_logits": head(grid), "pooled": pooled}


# --- a class-conditional diffusion UNet -----------------------------------------------------


class CondResBlock(nn.Module):
    """GroupNorm, swish and conv twice, with the conditioning added in between."""

    out: int | None = None
    rate: float = 0.1

    @nn.compact
    def __call__(self, x, cond, train: bool):
        out = self.out or x.shape[-1]
        h = nn.Conv(out, (3, 3), name="conv_a")(nn.swish(nn.GroupNorm(2, name="gn_a")(x)))
        h = h + nn.Dense(out, name="cond")(nn.swish(cond))[:, None, None, :]
        h = nn.Dropout(self.rate)(
            nn.swish(nn.GroupNorm(2, name="gn_b")(h)), deterministic=not train
        )
        h = nn.Conv(out, (3, 3), name="conv_b")(h)
        if x.shape[-1] != out:
            x = nn.Dense(out, name="match")(x)
        return x + h


class PixelAttention(nn.Module):
    def setup(self):
        self.gn = nn.GroupNorm(2)
        self.attn = nn.MultiHeadDotProductAttention(num_heads=1)

    def __call__(self, x):
        b, h, w, c = x.shape
        return x + self.attn(self.gn(x).reshape(b, h * w, c)).reshape(b, h, w, c)


class Halve(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Conv(x.shape[-1], (3, 3), strides=(2, 2), name="conv")(x)


class Double(nn.Module):
    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        x = jax.image.resize(x, (b, 2 * h, 2 * w, c), method="nearest")
        return nn.Conv(c, (3, 3), name="conv")(x)


class DenoiseNet(nn.Module):
    """Down path, middle, up path over skips; conditioned on timestep and class label."""

    base: int = 4
    mults: tuple[int, ...] = (1, 1)
    blocks_per_level: int = 1
    rate: float = 0.1
    out_channels: int = 3
    labels: int | None = 3

    def setup(self):
        block = nn.remat(CondResBlock, static_argnums=(3,))  # self 0, x 1, cond 2, train 3.
        width = 4 * self.base
        self.cond_in = nn.Dense(width)
        self.cond_out = nn.Dense(width)
        if self.labels is not None:
            self.label_table = nn.Embed(self.labels, width)
        self.first = nn.Conv(self.base, (3, 3))
        last = len(self.mults) - 1
        self.down = [
            [block(self.base * m, self.rate) for _ in range(self.blocks_per_level)]
            for m in self.mults
        ]
        self.down_attn = [PixelAttention() if level == last else None for level in range(last + 1)]
        self.halve = [Halve() for _ in range(last)]
        self.middle = [block(rate=self.rate), PixelAttention(), block(rate=self.rate)]
        self.up = [
            [block(self.base * m, self.rate) for _ in range(self.blocks_per_level + 1)]
            for m in reversed(self.mults)
        ]
        self.double = [Double() for _ in range(last)]
        self.gn_out = nn.GroupNorm(2)
        self.last = nn.Conv(self.out_channels, (3, 3), kernel_init=nn.initializers.zeros)

    def condition(self, t, label=None):
        """Timestep features through two Dense layers, plus the label's embedding."""
        c = self.cond_out(nn.swish(self.cond_in(sinusoid(t, self.base))))
        return c if label is None else c + self.label_table(label)

    def encode(self, x, t, label=None, train: bool = False):
        """The down path's activations (the skips) and the conditioning vector."""
        cond = self.condition(t, label)
        skips = [self.first(x)]
        for level, blocks in enumerate(self.down):
            for blk in blocks:
                h = blk(skips[-1], cond, train)
                if self.down_attn[level] is not None:
                    h = self.down_attn[level](h)
                skips.append(h)
            if level < len(self.halve):
                skips.append(self.halve[level](skips[-1]))
        return skips, cond

    def __call__(self, x, t, label=None, train: bool = False):
        skips, cond = self.encode(x, t, label, train)
        first, attn, second = self.middle
        h = second(attn(first(skips[-1], cond, train)), cond, train)
        for level, blocks in enumerate(self.up):
            for blk in blocks:
                h = blk(jnp.concatenate([h, skips.pop()], axis=-1), cond, train)
            if level < len(self.double):
                h = self.double[level](h)
        if skips:
            raise AssertionError("every skip is consumed")
        return self.last(nn.swish(self.gn_out(h)))


# --- a depthwise-convolution net with stochastic depth --------------------------------------


class StochasticDepth(nn.Module):
    """Zeroes a sample's whole residual branch with probability ``rate``."""

    rate: float = 0.0

    @nn.compact
    def __call__(self, x, deterministic: bool = False):
        if deterministic or not self.rate:
            return x
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        keep = jax.random.bernoulli(self.make_rng("drop_path"), 1.0 - self.rate, shape)
        return jnp.where(keep, x / (1.0 - self.rate), 0.0)


class DepthwiseBlock(nn.Module):
    channels: int
    drop: float = 0.0
    gamma_init: float = 1e-6

    @nn.compact
    def __call__(self, x, deterministic: bool = False):
        c = self.channels
        h = nn.Conv(c, (3, 3), padding=1, feature_group_count=c, name="depthwise")(x)
        h = TwoLayer(4 * c, name="pointwise")(nn.LayerNorm(epsilon=1e-6, name="ln")(h))
        gamma = self.param("gamma", nn.initializers.constant(self.gamma_init), (c,))
        return x + StochasticDepth(self.drop, name="drop")(gamma * h, deterministic)


class DepthwiseNet(nn.Module):
    depths: Sequence[int] = (1, 1)
    widths: Sequence[int] = (8, 16)
    drop: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        rates = iter(np.linspace(0.0, self.drop, sum(self.depths)))
        for stage, (depth, width) in enumerate(zip(self.depths, self.widths, strict=True)):
            patchify = nn.Conv(width, (2, 2), strides=(2, 2))
            ln = nn.LayerNorm(epsilon=1e-6)
            layers = [patchify, ln] if stage == 0 else [ln, patchify]
            x = nn.Sequential(layers, name=f"entry_{stage}")(x)
            for k in range(depth):
                block = DepthwiseBlock(width, float(next(rates)), name=f"block_{stage}_{k}")
                x = block(x, not train)
        return nn.LayerNorm(epsilon=1e-6, name="final_ln")(x.mean(axis=(1, 2)))


class FlatClassifier(nn.Module):
    """Wraps a backbone whose parameters stay at the top level (``nn.share_scope``)."""

    classes: int = 4
    drop: float = 0.2

    def setup(self):
        self.backbone = DepthwiseNet(drop=self.drop)
        nn.share_scope(self, self.backbone)
        self.head = nn.Sequential([nn.Dense(16), nn.gelu, nn.Dense(self.classes)])

    def __call__(self, x, train: bool = False):
        return self.head(self.backbone(x, train=train))


# --- an all-MLP mixer with logical axis names -----------------------------------------------


def _logical_dense(axes: tuple[str, str]) -> ModuleFactory:
    init = nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes)
    return functools.partial(nn.Dense, kernel_init=init)


class MixLayer(nn.Module):
    """Mixes across tokens (on the transposed map), then across channels."""

    token_hidden: int
    channel_hidden: int

    def setup(self):
        self.ln_tokens = nn.LayerNorm()
        self.across_tokens = TwoLayer(self.token_hidden, dense=_logical_dense(("length", "mlp")))
        self.ln_channels = nn.LayerNorm()
        self.across_channels = TwoLayer(self.channel_hidden, dense=_logical_dense(("embed", "mlp")))

    def __call__(self, x):
        h = jnp.swapaxes(self.ln_tokens(x), 1, 2)
        x = x + jnp.swapaxes(self.across_tokens(h), 1, 2)
        return x + self.across_channels(self.ln_channels(x))


class TokenMixer(nn.Module):
    patch: dict
    width: int
    layers: int
    token_hidden: int
    channel_hidden: int
    classes: int

    @nn.compact
    def __call__(self, images, *, train):
        del train  # Accepted for a uniform signature; the mixer has no dropout.
        size = self.patch["size"]
        x = nn.Conv(self.width, size, strides=size, name="patchify")(images)
        x = x.reshape(x.shape[0], -1, self.width)
        for _ in range(self.layers):
            x = MixLayer(self.token_hidden, self.channel_hidden)(x)
        x = nn.LayerNorm(name="final_ln")(x).mean(axis=1)
        init = nn.with_logical_partitioning(nn.initializers.zeros, ("embed", "vocab"))
        return nn.Einsum((self.width, self.classes), "nc,ck->nk", kernel_init=init, name="head")(x)


# --- shifted-window attention ---------------------------------------------------------------


def to_windows(x, size: int):
    """``(b, h, w, c)`` to ``(b * windows, size * size, c)``."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // size, size, w // size, size, c)
    return jnp.einsum("bipjqc->bijpqc", x).reshape(-1, size * size, c)


def from_windows(windows, size: int, h: int, w: int):
    """The inverse of :func:`to_windows`."""
    c = windows.shape[-1]
    x = windows.reshape(-1, h // size, w // size, size, size, c)
    return jnp.einsum("bijpqc->bipjqc", x).reshape(-1, h, w, c)


def _window_offsets(size: int) -> np.ndarray:
    """For each pair of positions in a window, the row of its relative-offset bias."""
    rows, cols = np.divmod(np.arange(size * size), size)
    dr = rows[:, None] - rows[None, :] + size - 1
    dc = cols[:, None] - cols[None, :] + size - 1
    return dr * (2 * size - 1) + dc


def _shift_mask(h: int, w: int, size: int, shift: int) -> np.ndarray:
    """-100 between positions of a window that come from different regions after the roll."""
    # Plain NumPy throughout: this runs while JAX traces, and must stay a constant.
    region = np.zeros((h, w), np.int32)
    bands = [(0, h - size), (h - size, h - shift), (h - shift, h)]
    for i, (r0, r1) in enumerate(bands):
        for j, (c0, c1) in enumerate(bands):
            region[r0:r1, c0:c1] = 3 * i + j
    blocks = region.reshape(h // size, size, w // size, size).swapaxes(1, 2)
    ids = blocks.reshape(-1, size * size)
    return np.where(ids[:, :, None] != ids[:, None, :], -100.0, 0.0).astype(np.float32)


class OffsetBiasAttention(nn.Module):
    """Self-attention inside windows, biased by a learned table of relative offsets."""

    width: int
    size: int
    heads: int
    rate: float = 0.0

    def setup(self):
        self.offset_table = self.param(
            "offset_table",
            nn.initializers.truncated_normal(0.02),
            ((2 * self.size - 1) ** 2, self.heads),
        )
        self.offset_rows = _window_offsets(self.size)  # A NumPy array, not a variable.
        d = self.width // self.heads
        self.qkv = nn.Einsum((self.width, 3, self.heads, d), "bnc,ckhd->kbhnd")
        self.out = nn.Dense(self.width)
        self.drop = nn.Dropout(self.rate)

    def __call__(self, x, mask=None, deterministic: bool = True):
        q, k, v = self.qkv(x)
        logits = jnp.einsum("bhnd,bhmd->bhnm", q, k) / np.sqrt(q.shape[-1])
        logits = logits + jnp.moveaxis(self.offset_table[self.offset_rows], -1, 0)
        if mask is not None:
            per_image = mask.shape[0]
            logits = logits.reshape(-1, per_image, *logits.shape[1:]) + mask[None, :, None]
            logits = logits.reshape(-1, *logits.shape[2:])
        weights = jax.nn.softmax(logits, axis=-1)
        self.sow("intermediates", "weights", weights)
        y = jnp.einsum("bhnm,bhmd->bnhd", self.drop(weights, deterministic=deterministic), v)
        return self.out(y.reshape(*x.shape))


class WindowLayer(nn.Module):
    width: int
    heads: int
    size: int = 2
    shift: int = 0

    @nn.compact
    def __call__(self, x, h: int, w: int, train: bool = False):
        size, shift = (min(h, w), 0) if min(h, w) <= self.size else (self.size, self.shift)
        grid = nn.LayerNorm(name="ln_attn")(x).reshape(-1, h, w, self.width)
        mask = None
        if shift:
            grid = jnp.roll(grid, (-shift, -shift), axis=(1, 2))
            mask = jnp.asarray(_shift_mask(h, w, size, shift))
        attn = OffsetBiasAttention(self.width, size, self.heads, rate=0.1, name="attn")
        grid = from_windows(attn(to_windows(grid, size), mask, not train), size, h, w)
        if shift:
            grid = jnp.roll(grid, (shift, shift), axis=(1, 2))
        x = x + grid.reshape(x.shape)
        return x + TwoLayer(2 * self.width, name="mlp")(nn.LayerNorm(name="ln_mlp")(x))


class GridTokens(nn.Module):
    """Patch embedding that also returns the token grid's height and width (Python ints)."""

    width: int = 8
    patch: int = 2

    @nn.compact
    def __call__(self, images):
        x = nn.Conv(self.width, (self.patch,) * 2, strides=(self.patch,) * 2, name="conv")(images)
        n, h, w, c = x.shape
        return nn.LayerNorm(name="ln")(x.reshape(n, h * w, c)), h, w


class MergeTokens(nn.Module):
    """Concatenates each 2x2 neighbourhood and projects it to twice the width."""

    @nn.compact
    def __call__(self, x, h: int, w: int):
        grid = x.reshape(x.shape[0], h, w, -1)
        quads = [grid[:, i::2, j::2] for j in (0, 1) for i in (0, 1)]
        x = jnp.concatenate(quads, axis=-1).reshape(x.shape[0], (h // 2) * (w // 2), -1)
        return nn.Dense(2 * grid.shape[-1], use_bias=False, name="proj")(nn.LayerNorm()(x))


class WindowedViT(nn.Module):
    width: int = 8
    depths: Sequence[int] = (2, 1)
    heads: Sequence[int] = (2, 4)
    size: int = 2
    classes: int = 3

    @nn.compact
    def __call__(self, images, train: bool = False):
        x, h, w = GridTokens(self.width, name="tokens")(images)
        width, maps = self.width, []
        for stage, (depth, heads) in enumerate(zip(self.depths, self.heads, strict=True)):
            for k in range(depth):
                shift = self.size // 2 if k % 2 else 0
                layer = WindowLayer(width, heads, self.size, shift, name=f"stage{stage}_{k}")
                x = layer(x, h, w, train)
            maps.append(x.reshape(x.shape[0], h, w, width))
            if stage + 1 < len(self.depths):
                x = MergeTokens(name=f"merge{stage}")(x, h, w)
                h, w, width = h // 2, w // 2, 2 * width
        pooled = nn.LayerNorm(name="final_ln")(x).mean(axis=1)
        return {
            "logits": nn.Dense(self.classes, name="head")(pooled),
            "features": tuple(maps),
            "resolution": (h, w),
        }


# --- GANs -----------------------------------------------------------------------------------


@flax.struct.dataclass
class CriticOut:
    score: jax.Array
    maps: tuple[jax.Array, ...]
    depth: int = flax.struct.field(pytree_node=False)


class NormalisedCritic(nn.Module):
    """Spectrally normalised layers; their power iteration runs when ``batch_stats`` is
    mutable."""

    widths: Sequence[int] = (4, 8)

    @nn.compact
    def __call__(self, images):
        update = self.is_mutable_collection("batch_stats")
        maps, x = [], images
        for i, width in enumerate(self.widths):
            conv = nn.Conv(width, (3, 3), strides=(2, 2))
            x = nn.leaky_relu(
                nn.SpectralNorm(conv, name=f"sn_conv_{i}")(x, update_stats=update), 0.2
            )
            maps.append(x)
        flat = x.reshape(x.shape[0], -1)
        score = nn.SpectralNorm(nn.Dense(1))(flat, update_stats=update)
        return CriticOut(score, tuple(maps), len(self.widths))


class UpsamplingGenerator(nn.Module):
    """A latent projected to a 2x2 map, upsampled by strided transposed convolutions."""

    widths: Sequence[int] = (16, 8)
    channels: int = 3

    @nn.compact
    def __call__(self, z):
        # Training mode is whether the caller lets BatchNorm statistics change.
        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not self.is_mutable_collection("batch_stats"),
            momentum=0.9,
        )
        first = self.widths[0]
        x = nn.Dense(4 * first, use_bias=False, name="project")(z).reshape(-1, 2, 2, first)
        x = nn.relu(norm(name="project_norm")(x))
        for i, width in enumerate(self.widths[1:]):
            up = nn.ConvTranspose(width, (3, 3), strides=(2, 2), use_bias=False, name=f"up{i}")
            x = nn.relu(norm(name=f"up{i}_norm")(up(x)))
        x = nn.ConvTranspose(self.channels, (3, 3), strides=(2, 2), name="to_pixels")(x)
        return jnp.tanh(x)


# --- self-supervised learning: two views, masked patches ------------------------------------


class Projector(nn.Module):
    hidden: int = 8
    out: int = 4

    @nn.nowrap
    def _layer(self, features: int, name: str) -> nn.Dense:
        return nn.Dense(features, kernel_init=nn.initializers.he_normal(), name=name)

    @nn.compact
    def __call__(self, h):
        return self._layer(self.out, "out")(nn.relu(self._layer(self.hidden, "hidden")(h)))


class TwoViewContrast(nn.Module):
    """Embeds two views with the same backbone and head; NT-Xent loss over the pairs."""

    backbone: nn.Module
    temperature: float = 0.5

    @nn.compact
    def __call__(self, view_a, view_b, train: bool = True):
        head = Projector(name="projector")
        za = head(self.backbone(view_a, train=train))
        zb = head(self.backbone(view_b, train=train))
        z = jnp.concatenate([za, zb])
        z = z / jnp.linalg.norm(z, axis=-1, keepdims=True)
        n = za.shape[0]
        sim = jnp.where(jnp.eye(2 * n, dtype=bool), -1e9, z @ z.T / self.temperature)
        partner = (jnp.arange(2 * n) + n) % (2 * n)
        log_p = jax.nn.log_softmax(sim)
        loss = -jnp.mean(log_p[jnp.arange(2 * n), partner])
        return loss, {"view_a": za, "view_b": zb}


class MaskedPatchAutoencoder(nn.Module):
    """Encodes a random subset of patch tokens and reconstructs every patch's pixels."""

    patch: int = 2
    channels: int = 3
    width: int = 8
    decoder_width: int = 8
    heads: int = 2
    keep: float = 0.25

    def setup(self):
        p = self.patch
        self.patchify = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID")
        self.summary_token = self.param(
            "summary_token", nn.initializers.normal(0.02), (1, 1, self.width)
        )
        self.encoder_blocks = [AuxBlock(self.heads, 2 * self.width)]
        self.encoder_ln = nn.LayerNorm()
        self.bridge = nn.Dense(self.decoder_width)
        self.hole_token = self.param(
            "hole_token", nn.initializers.normal(0.02), (1, 1, self.decoder_width)
        )
        self.decoder_blocks = [AuxBlock(self.heads, 2 * self.decoder_width)]
        self.decoder_ln = nn.LayerNorm()
        self.to_pixels = nn.Dense(p * p * self.channels)

    def pixels_per_patch(self, images):
        n, h, w, c = images.shape
        p = self.patch
        x = images.reshape(n, h // p, p, w // p, p, c)
        return jnp.einsum("nipjqc->nijpqc", x).reshape(n, (h // p) * (w // p), p * p * c)

    def shuffle(self, tokens):
        """Keeps ``keep`` of the tokens in a random order drawn from the ``mask`` stream."""
        n, length, _ = tokens.shape
        kept = int(length * self.keep)
        order = jnp.argsort(jax.random.uniform(self.make_rng("mask"), (n, length)), axis=1)
        restore = jnp.argsort(order, axis=1)
        visible = jnp.take_along_axis(tokens, order[:, :kept, None], axis=1)
        hidden = jnp.take_along_axis((jnp.arange(length) >= kept)[None].repeat(n, 0), restore, 1)
        return visible, hidden.astype(jnp.float32), restore

    def encode(self, images):
        x = self.patchify(images)
        n, h, w, c = x.shape
        x, hidden, restore = self.shuffle(x.reshape(n, h * w, c) + sincos_grid(h, w, c))
        x = jnp.concatenate([jnp.tile(self.summary_token, (n, 1, 1)), x], axis=1)
        for block in self.encoder_blocks:
            x, _ = block(x)
        return self.encoder_ln(x), hidden, restore

    def decode(self, x, restore):
        x = self.bridge(x)
        n, length = restore.shape
        holes = jnp.tile(self.hole_token, (n, length - x.shape[1] + 1, 1))
        tokens = jnp.take_along_axis(jnp.concatenate([x[:, 1:], holes], 1), restore[..., None], 1)
        side = int(np.sqrt(length))
        x = jnp.concatenate([x[:, :1], tokens + sincos_grid(side, side, x.shape[-1])], axis=1)
        for block in self.decoder_blocks:
            x, _ = block(x)
        return self.to_pixels(self.decoder_ln(x))[:, 1:]

    def __call__(self, images):
        latent, hidden, restore = self.encode(images)
        pred = self.decode(latent, restore)
        target = self.pixels_per_patch(images)
        target = (target - target.mean(-1, keepdims=True)) / jnp.sqrt(
            target.var(-1, keepdims=True) + 1e-6
        )
        per_patch = jnp.mean((pred - target) ** 2, axis=-1)
        return jnp.sum(per_patch * hidden) / jnp.sum(hidden), pred, hidden


# --- the cases ------------------------------------------------------------------------------

IMAGES = _in.normal(2, 8, 8, 3)
IMAGES_4 = _in.normal(2, 8, 8, 4)
LATENTS = _in.normal(2, 8)
LABELS = _in.ints(0, 3, 2)
TIMESTEPS = _in.ints(0, 1000, 2)


def _tower(**overrides) -> ConvTower:
    fields = {"depths": (1, 1), "unit": PlainUnit, "width": 4, "classes": 5} | overrides
    return ConvTower(**fields)


CASES: list[ZooCase] = [
    ZooCase(
        "vision_resnet_train",
        _tower,
        (IMAGES,),
        {"train": True},
        mutable=["batch_stats"],
        notes="partial(nn.Conv)/partial(nn.BatchNorm) fields, a unit class field, projected "
        "shortcut made by a helper, max_pool, batch_stats updated",
        tags=("mutable", "static_args"),
    ),
    ZooCase(
        "vision_resnet_bottleneck_bf16_eval",
        lambda: _tower(depths=(1,), unit=BottleneckUnit, width=2, dtype=jnp.bfloat16),
        (IMAGES,),
        {"train": False},
        notes="bottleneck units, bf16 compute over f32 params, running averages read",
        tags=("static_args", "dtype"),
    ),
    ZooCase(
        "vision_vit_dropout",
        lambda: PatchClassifier(
            patch={"size": (4, 4)},
            encoder={"layers": 1, "heads": 2, "hidden": 16},
            width=8,
            rep=8,
            classes=5,
        ),
        (IMAGES,),
        {"train": True},
        rngs=("dropout",),
        notes="class token, learned positions with an initialiser field, MHDPA with attention "
        "dropout set at construction, nn.Dropout, dict fields, kw-only train",
        tags=("rng", "static_args"),
    ),
    ZooCase(
        "vision_bigvision_vit_scan",
        ScannedViT,
        (IMAGES,),
        {"train": True},
        rngs=("dropout",),
        notes="nn.scan(nn.remat(block, static_argnums)) with dropout split, a dict of "
        "activations out, probe pooling, a Dense called twice, logical kernels",
        tags=("lifted", "rng", "static_args", "shared", "metadata"),
    ),
    ZooCase(
        "vision_unet_diffusion",
        DenoiseNet,
        (IMAGES_4, TIMESTEPS, LABELS),
        {"train": True},
        rngs=("dropout",),
        notes="setup() lists of remat blocks, conditioning in a helper method, GroupNorm, "
        "skips in a list, jax.image.resize, self-attention",
        tags=("setup", "lifted", "rng", "static_args"),
    ),
    ZooCase(
        "vision_unet_encode",
        lambda: DenoiseNet(mults=(1,)),
        (IMAGES_4, TIMESTEPS, None),
        {"train": False},
        method=lambda module, x, t, label, train: module.encode(x, t, label, train)[0],
        notes="method= a function calling encode with label None: a list of skips out",
        tags=("setup", "lifted", "method", "static_args"),
    ),
    ZooCase(
        "vision_convnext_droppath",
        FlatClassifier,
        (IMAGES,),
        {"train": True},
        rngs=("drop_path",),
        notes="named nn.Sequential with a plain function, depthwise conv, layer scale, "
        "stochastic depth on a 'drop_path' rng, nn.share_scope",
        tags=("setup", "shared", "rng", "static_args"),
    ),
    ZooCase(
        "vision_mlp_mixer",
        lambda: TokenMixer(
            patch={"size": (2, 2)},
            width=8,
            layers=2,
            token_hidden=8,
            channel_hidden=16,
            classes=4,
        ),
        (IMAGES,),
        {"train": False},
        notes="setup() mixing layers, swapaxes token mixing, logical kernels, nn.Einsum head",
        tags=("setup", "metadata", "static_args"),
    ),
    ZooCase(
        "vision_swin",
        WindowedViT,
        (IMAGES,),
        {"train": False},
        mutable=["intermediates"],
        notes="offset bias table and NumPy index in setup(), shifted windows, nn.Einsum qkv, "
        "ints between submodules, sown weights, dict of tuples and ints out",
        tags=("setup", "static_args", "non_array", "mutable"),
    ),
    ZooCase(
        "vision_scan_resnet_bn",
        ScannedStageNet,
        (IMAGES,),
        {"train": True},
        mutable=["batch_stats"],
        notes="nn.scan over BatchNorm blocks: params and batch_stats stacked, train as an "
        "attribute, running averages updated",
        tags=("lifted", "mutable", "static_args"),
    ),
    ZooCase(
        "vision_dcgan_generator",
        UpsamplingGenerator,
        (LATENTS,),
        mutable=["batch_stats"],
        notes="strided nn.ConvTranspose, train mode from is_mutable_collection('batch_stats')",
        tags=("mutable",),
    ),
    ZooCase(
        "vision_simclr",
        lambda: TwoViewContrast(_tower(depths=(1,), classes=8)),
        (IMAGES, IMAGES[:, ::-1]),
        {"train": True},
        mutable=["batch_stats"],
        notes="an unbound model field called on two views, a @nn.nowrap helper, one head "
        "called twice, (loss, dict) out",
        tags=("shared", "mutable", "static_args"),
    ),
    ZooCase(
        "vision_mae",
        MaskedPatchAutoencoder,
        (IMAGES,),
        rngs=("mask",),
        notes="random masking from a 'mask' rng in the root's own method, argsort and "
        "take_along_axis, token params in setup(), (loss, pred, mask) out",
        tags=("setup", "rng"),
    ),
    ZooCase(
        "vision_sn_discriminator",
        NormalisedCritic,
        (IMAGES,),
        mutable=["batch_stats"],
        notes="nn.SpectralNorm over Conv and Dense, update_stats from is_mutable_collection, "
        "a flax.struct.dataclass output with a static int",
        tags=("lifted", "mutable", "non_array"),
    ),
]

# Cases that flaxmock does not handle yet go here, each naming its reproduction.
PENDING: list[ZooCase] = []
