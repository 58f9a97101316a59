"""Zoo cases written the way third-party vision models are (ResNet, ViT, UNet, ConvNeXt).

Each model follows the code it is named after (flax/examples imagenet ResNet, google-research
vision_transformer ViT and MLP-Mixer, big_vision ViT, a DDPM-style UNet, ConvNeXt, Swin), with
its idioms kept and its sizes cut to a few channels on 8x8 images.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoo_case import ZooCase

ModuleDef = Any

_rng = np.random.default_rng(2024)


def _normal(*shape: int, dtype: Any = jnp.float32) -> jax.Array:
    return jnp.asarray(_rng.standard_normal(shape), dtype)


# --- flax/examples/imagenet/models.py ------------------------------------------------------


class ResNetBlock(nn.Module):
    """ResNet block."""

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    act: Callable
    strides: tuple[int, int] = (1, 1)

    @nn.compact
    def __call__(self, x):
        residual = x
        y = self.conv(self.filters, (3, 3), self.strides)(x)
        y = self.norm()(y)
        y = self.act(y)
        y = self.conv(self.filters, (3, 3))(y)
        y = self.norm(scale_init=nn.initializers.zeros_init())(y)

        if residual.shape != y.shape:
            residual = self.conv(self.filters, (1, 1), self.strides, name="conv_proj")(residual)
            residual = self.norm(name="norm_proj")(residual)

        return self.act(residual + y)


class BottleneckResNetBlock(nn.Module):
    """Bottleneck ResNet block."""

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    act: Callable
    strides: tuple[int, int] = (1, 1)

    @nn.compact
    def __call__(self, x):
        residual = x
        y = self.conv(self.filters, (1, 1))(x)
        y = self.norm()(y)
        y = self.act(y)
        y = self.conv(self.filters, (3, 3), self.strides)(y)
        y = self.norm()(y)
        y = self.act(y)
        y = self.conv(self.filters * 4, (1, 1))(y)
        y = self.norm(scale_init=nn.initializers.zeros_init())(y)

        if residual.shape != y.shape:
            residual = self.conv(self.filters * 4, (1, 1), self.strides, name="conv_proj")(residual)
            residual = self.norm(name="norm_proj")(residual)

        return self.act(residual + y)


class ResNet(nn.Module):
    """ResNetV1.5."""

    stage_sizes: Sequence[int]
    block_cls: ModuleDef
    num_classes: int
    num_filters: int = 64
    dtype: Any = jnp.float32
    act: Callable = nn.relu
    conv: ModuleDef = nn.Conv

    @nn.compact
    def __call__(self, x, train: bool = True):
        conv = functools.partial(self.conv, use_bias=False, dtype=self.dtype)
        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            dtype=self.dtype,
        )

        x = conv(self.num_filters, (3, 3), (1, 1), padding=[(1, 1), (1, 1)], name="conv_init")(x)
        x = norm(name="bn_init")(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        for i, block_size in enumerate(self.stage_sizes):
            for j in range(block_size):
                strides = (2, 2) if i > 0 and j == 0 else (1, 1)
                x = self.block_cls(
                    self.num_filters * 2**i, strides=strides, conv=conv, norm=norm, act=self.act
                )(x)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.num_classes, dtype=self.dtype)(x)
        x = jnp.asarray(x, self.dtype)
        return x


ResNetTiny = functools.partial(ResNet, stage_sizes=[1, 1], block_cls=ResNetBlock, num_filters=4)
ResNetTinyBottleneck = functools.partial(
    ResNet, stage_sizes=[1], block_cls=BottleneckResNetBlock, num_filters=2
)


# --- google-research/vision_transformer models_vit.py ---------------------------------------


class AddPositionEmbs(nn.Module):
    """Adds learned positional embeddings to the inputs."""

    posemb_init: Callable[..., jax.Array]

    @nn.compact
    def __call__(self, inputs):
        assert inputs.ndim == 3, f"Number of dimensions should be 3, have {inputs.ndim}"
        pos_emb_shape = (1, inputs.shape[1], inputs.shape[2])
        pe = self.param("pos_embedding", self.posemb_init, pos_emb_shape)
        return inputs + pe


class MlpBlock(nn.Module):
    """Transformer MLP / feed-forward block."""

    mlp_dim: int
    dtype: Any = jnp.float32
    out_dim: int | None = None
    dropout_rate: float = 0.1
    kernel_init: Callable = nn.initializers.xavier_uniform()
    bias_init: Callable = nn.initializers.normal(stddev=1e-6)

    @nn.compact
    def __call__(self, inputs, *, deterministic):
        actual_out_dim = inputs.shape[-1] if self.out_dim is None else self.out_dim
        x = nn.Dense(
            features=self.mlp_dim,
            dtype=self.dtype,
            kernel_init=self.kernel_init,
            bias_init=self.bias_init,
        )(inputs)
        x = nn.gelu(x)
        x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=deterministic)
        output = nn.Dense(
            features=actual_out_dim,
            dtype=self.dtype,
            kernel_init=self.kernel_init,
            bias_init=self.bias_init,
        )(x)
        output = nn.Dropout(rate=self.dropout_rate)(output, deterministic=deterministic)
        return output


class Encoder1DBlock(nn.Module):
    """Transformer encoder layer."""

    mlp_dim: int
    num_heads: int
    dtype: Any = jnp.float32
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1

    @nn.compact
    def __call__(self, inputs, *, deterministic):
        x = nn.LayerNorm(dtype=self.dtype)(inputs)
        x = nn.MultiHeadDotProductAttention(
            dtype=self.dtype,
            kernel_init=nn.initializers.xavier_uniform(),
            broadcast_dropout=False,
            deterministic=deterministic,
            dropout_rate=self.attention_dropout_rate,
            num_heads=self.num_heads,
        )(x, x)
        x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=deterministic)
        x = x + inputs

        y = nn.LayerNorm(dtype=self.dtype)(x)
        y = MlpBlock(mlp_dim=self.mlp_dim, dtype=self.dtype, dropout_rate=self.dropout_rate)(
            y, deterministic=deterministic
        )
        return x + y


class Encoder(nn.Module):
    """Transformer Model Encoder for sequence to sequence translation."""

    num_layers: int
    mlp_dim: int
    num_heads: int
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    add_position_embedding: bool = True

    @nn.compact
    def __call__(self, x, *, train):
        assert x.ndim == 3  # (batch, len, emb)
        if self.add_position_embedding:
            x = AddPositionEmbs(
                posemb_init=nn.initializers.normal(stddev=0.02), name="posembed_input"
            )(x)
            x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=not train)

        for lyr in range(self.num_layers):
            x = Encoder1DBlock(
                mlp_dim=self.mlp_dim,
                dropout_rate=self.dropout_rate,
                attention_dropout_rate=self.attention_dropout_rate,
                name=f"encoderblock_{lyr}",
                num_heads=self.num_heads,
            )(x, deterministic=not train)
        encoded = nn.LayerNorm(name="encoder_norm")(x)
        return encoded


class VisionTransformer(nn.Module):
    """VisionTransformer."""

    num_classes: int
    patches: Any
    transformer: Any
    hidden_size: int
    representation_size: int | None = None
    classifier: str = "token"

    @nn.compact
    def __call__(self, inputs, *, train):
        x = inputs
        n, h, w, c = x.shape
        x = nn.Conv(
            features=self.hidden_size,
            kernel_size=self.patches["size"],
            strides=self.patches["size"],
            padding="VALID",
            name="embedding",
        )(x)

        n, h, w, c = x.shape
        x = jnp.reshape(x, [n, h * w, c])

        if self.classifier in ["token", "token_unpooled"]:
            cls = self.param("cls", nn.initializers.zeros, (1, 1, c))
            cls = jnp.tile(cls, [n, 1, 1])
            x = jnp.concatenate([cls, x], axis=1)

        x = Encoder(name="Transformer", **self.transformer)(x, train=train)

        if self.classifier == "token":
            x = x[:, 0]
        elif self.classifier == "gap":
            x = jnp.mean(x, axis=list(range(1, x.ndim - 1)))

        if self.representation_size is not None:
            x = nn.Dense(features=self.representation_size, name="pre_logits")(x)
            x = nn.tanh(x)

        if self.num_classes:
            x = nn.Dense(features=self.num_classes, name="head")(x)
        return x


def _vit_tiny() -> VisionTransformer:
    return VisionTransformer(
        num_classes=5,
        patches={"size": (4, 4)},
        transformer={"num_layers": 1, "mlp_dim": 16, "num_heads": 2},
        hidden_size=8,
        representation_size=8,
    )


# --- big_vision/models/vit.py ---------------------------------------------------------------


class BvMlpBlock(nn.Module):
    """Transformer MLP / feed-forward block."""

    mlp_dim: int | None = None
    dropout: float = 0.0
    dtype_mm: str = "float32"

    @nn.compact
    def __call__(self, x, deterministic=True):
        inits = dict(
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.xavier_uniform(), ("embed", "mlp")
            ),
            bias_init=nn.initializers.normal(stddev=1e-6),
        )
        n, _, d = x.shape
        x = nn.Dense(self.mlp_dim or 4 * d, dtype=self.dtype_mm, **inits)(x)
        x = nn.gelu(x)
        x = nn.Dropout(rate=self.dropout)(x, deterministic)
        x = nn.Dense(d, dtype=self.dtype_mm, **inits)(x)
        return x


class BvEncoder1DBlock(nn.Module):
    """Single transformer encoder block (MHSA + MLP)."""

    mlp_dim: int | None = None
    num_heads: int = 12
    dropout: float = 0.0
    dtype_mm: str = "float32"

    @nn.compact
    def __call__(self, x, deterministic=True):
        out = {}
        y = nn.LayerNorm()(x)
        y = out["sa"] = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            kernel_init=nn.initializers.xavier_uniform(),
            deterministic=deterministic,
            dtype=self.dtype_mm,
        )(y, y)
        y = nn.Dropout(rate=self.dropout)(y, deterministic)
        x = out["+sa"] = x + y

        y = nn.LayerNorm()(x)
        y = out["mlp"] = BvMlpBlock(
            mlp_dim=self.mlp_dim, dropout=self.dropout, dtype_mm=self.dtype_mm
        )(y, deterministic)
        y = nn.Dropout(rate=self.dropout)(y, deterministic)
        x = out["+mlp"] = x + y
        return x, out


class BvEncoder(nn.Module):
    """Transformer Model Encoder for sequence to sequence translation."""

    depth: int
    mlp_dim: int | None = None
    num_heads: int = 12
    dropout: float = 0.0
    scan: bool = False
    remat_policy: str = "nothing_saveable"
    dtype_mm: str = "float32"

    @nn.compact
    def __call__(self, x, deterministic=True):
        out = {}

        if self.scan:
            block = nn.remat(
                BvEncoder1DBlock,
                prevent_cse=False,
                static_argnums=(2,),  # 0=self, 2=deterministic
                policy=getattr(jax.checkpoint_policies, self.remat_policy, None),
            )
            x, scan_out = nn.scan(
                block,
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=nn.broadcast,
                length=self.depth,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(
                name="encoderblock",
                dtype_mm=self.dtype_mm,
                mlp_dim=self.mlp_dim,
                num_heads=self.num_heads,
                dropout=self.dropout,
            )(x, deterministic)
            for lyr in range(self.depth):
                out[f"block{lyr:02d}"] = jax.tree.map(lambda o, lyr=lyr: o[lyr], scan_out)
        else:
            for lyr in range(self.depth):
                block_cur = BvEncoder1DBlock(
                    name=f"encoderblock_{lyr}",
                    dtype_mm=self.dtype_mm,
                    mlp_dim=self.mlp_dim,
                    num_heads=self.num_heads,
                    dropout=self.dropout,
                )
                x, out[f"block{lyr:02d}"] = block_cur(x, deterministic)
            out["pre_ln"] = x

        return nn.LayerNorm(name="encoder_norm")(x), out


class MAPHead(nn.Module):
    """Multihead Attention Pooling."""

    mlp_dim: int | None = None
    num_heads: int = 12

    @nn.compact
    def __call__(self, x):
        n, _, d = x.shape
        probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, d), x.dtype)
        probe = jnp.tile(probe, [n, 1, 1])

        x = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, kernel_init=nn.initializers.xavier_uniform()
        )(probe, x)

        y = nn.LayerNorm()(x)
        x = x + BvMlpBlock(mlp_dim=self.mlp_dim)(y)
        return x[:, 0]


def posemb_sincos_2d(h, w, width, temperature=10_000.0, dtype=jnp.float32):
    """Follows the MoCo v3 logic."""
    y, x = jnp.mgrid[:h, :w]

    assert width % 4 == 0, "Width must be mult of 4 for sincos posemb"
    omega = jnp.arange(width // 4) / (width // 4 - 1)
    omega = 1.0 / (temperature**omega)
    y = jnp.einsum("m,d->md", y.flatten(), omega)
    x = jnp.einsum("m,d->md", x.flatten(), omega)
    pe = jnp.concatenate([jnp.sin(x), jnp.cos(x), jnp.sin(y), jnp.cos(y)], axis=1)
    return jnp.asarray(pe, dtype)[None, :, :]


def get_posemb(self, typ, seqshape, width, name, dtype=jnp.float32):
    if typ == "learn":
        return self.param(
            name,
            nn.initializers.normal(stddev=1 / np.sqrt(width)),
            (1, np.prod(seqshape), width),
            dtype,
        )
    elif typ == "sincos2d":
        return posemb_sincos_2d(*seqshape, width, dtype=dtype)
    else:
        raise ValueError(f"Unknown posemb type: {typ}")


class BvViT(nn.Module):
    """ViT model."""

    num_classes: int | None = None
    patch_size: Sequence[int] = (16, 16)
    width: int = 768
    depth: int = 12
    mlp_dim: int | None = None
    num_heads: int = 12
    posemb: str = "learn"
    rep_size: int | bool = False
    dropout: float = 0.0
    pool_type: str = "gap"
    head_zeroinit: bool = True
    scan: bool = False
    remat_policy: str = "nothing_saveable"
    dtype_mm: str = "float32"

    @nn.compact
    def __call__(self, image, *, train=False):
        out = {}

        image = jnp.asarray(image, self.dtype_mm)

        # Patch extraction
        x = out["stem"] = nn.Conv(
            self.width,
            self.patch_size,
            strides=self.patch_size,
            padding="VALID",
            name="embedding",
            dtype=self.dtype_mm,
        )(image)

        n, h, w, c = x.shape
        x = jnp.reshape(x, [n, h * w, c])

        # Add posemb before adding extra token.
        x = out["with_posemb"] = x + get_posemb(
            self, self.posemb, (h, w), c, "pos_embedding", x.dtype
        )

        if self.pool_type == "tok":
            cls = self.param("cls", nn.initializers.zeros, (1, 1, c), x.dtype)
            x = jnp.concatenate([jnp.tile(cls, [n, 1, 1]), x], axis=1)

        n, _, c = x.shape
        x = nn.Dropout(rate=self.dropout)(x, not train)

        x, out["encoder"] = BvEncoder(
            depth=self.depth,
            mlp_dim=self.mlp_dim,
            num_heads=self.num_heads,
            dropout=self.dropout,
            scan=self.scan,
            remat_policy=self.remat_policy,
            dtype_mm=self.dtype_mm,
            name="Transformer",
        )(x, deterministic=not train)
        encoded = out["encoded"] = x

        if self.pool_type == "map":
            x = out["head_input"] = MAPHead(num_heads=self.num_heads, mlp_dim=self.mlp_dim)(x)
        elif self.pool_type == "gap":
            x = out["head_input"] = jnp.mean(x, axis=1)
        elif self.pool_type == "tok":
            x = out["head_input"] = x[:, 0]
            encoded = encoded[:, 1:]
        else:
            raise ValueError(f"Unknown pool type: '{self.pool_type}'")

        x_2d = jnp.reshape(encoded, [n, h, w, -1])

        if self.rep_size:
            rep_size = self.width if self.rep_size is True else self.rep_size
            hid = nn.Dense(rep_size, name="pre_logits")
            # NOTE: In the past we did not include tanh in pre_logits.
            # For few-shot, it should not matter much, as it whitens anyways.
            x_2d = nn.tanh(hid(x_2d))
            x = nn.tanh(hid(x))

        out["pre_logits_2d"] = x_2d
        out["pre_logits"] = x

        if self.num_classes:
            kw = {"kernel_init": nn.initializers.zeros} if self.head_zeroinit else {}
            head = nn.Dense(self.num_classes, name="head", **kw)
            x_2d = out["logits_2d"] = head(x_2d)
            x = out["logits"] = head(x)

        return x, out


def _bv_vit_scan() -> BvViT:
    return BvViT(
        num_classes=3,
        patch_size=(4, 4),
        width=8,
        depth=2,
        mlp_dim=16,
        num_heads=2,
        rep_size=True,
        dropout=0.1,
        pool_type="map",
        head_zeroinit=False,
        scan=True,
    )


# --- A DDPM-style UNet (setup() modules, timestep embedding, skips in a list) --------------


class TimeResnetBlock(nn.Module):
    """Convolutional residual block with a timestep embedding added in the middle."""

    out_ch: int | None = None
    dropout: float = 0.1
    groups: int = 2

    @nn.compact
    def __call__(self, x, temb, train: bool):
        B, H, W, C = x.shape
        out_ch = C if self.out_ch is None else self.out_ch
        h = nn.swish(nn.GroupNorm(num_groups=self.groups, name="norm1")(x))
        h = nn.Conv(out_ch, (3, 3), name="conv1")(h)
        h += nn.Dense(out_ch, name="temb_proj")(nn.swish(temb))[:, None, None, :]
        h = nn.swish(nn.GroupNorm(num_groups=self.groups, name="norm2")(h))
        h = nn.Dropout(rate=self.dropout)(h, deterministic=not train)
        h = nn.Conv(out_ch, (3, 3), name="conv2")(h)
        if C != out_ch:
            x = nn.Dense(out_ch, name="nin_shortcut")(x)
        return x + h


class AttnBlock(nn.Module):
    """Self-attention over the pixels of a feature map."""

    num_heads: int = 1
    groups: int = 2

    def setup(self):
        self.norm = nn.GroupNorm(num_groups=self.groups)
        self.attn = nn.MultiHeadDotProductAttention(num_heads=self.num_heads)

    def __call__(self, x):
        B, H, W, C = x.shape
        h = self.norm(x).reshape(B, H * W, C)
        h = self.attn(h)
        return x + h.reshape(B, H, W, C)


class Downsample(nn.Module):
    with_conv: bool = True

    @nn.compact
    def __call__(self, x):
        if self.with_conv:
            return nn.Conv(x.shape[-1], (3, 3), strides=(2, 2), name="op")(x)
        return nn.avg_pool(x, (2, 2), strides=(2, 2))


class Upsample(nn.Module):
    @nn.compact
    def __call__(self, x):
        B, H, W, C = x.shape
        x = jax.image.resize(x, (B, H * 2, W * 2, C), method="nearest")
        return nn.Conv(C, (3, 3), name="conv")(x)


class UNet(nn.Module):
    """A small class-conditional DDPM UNet: setup() children, a remat block class, skips in a
    list, attention at the lowest resolution."""

    ch: int = 4
    ch_mult: tuple[int, ...] = (1, 1)
    num_res_blocks: int = 1
    dropout: float = 0.1
    out_ch: int = 3
    num_classes: int | None = 3

    def setup(self):
        block_cls = nn.remat(TimeResnetBlock, static_argnums=(3,))  # 0=self, 3=train
        self.temb_dense0 = nn.Dense(self.ch * 4)
        self.temb_dense1 = nn.Dense(self.ch * 4)
        if self.num_classes is not None:
            self.label_emb = nn.Embed(self.num_classes, self.ch * 4)
        self.conv_in = nn.Conv(self.ch, (3, 3))

        down, down_attn, downsample = [], [], []
        for i_level, mult in enumerate(self.ch_mult):
            down.append(
                [
                    block_cls(out_ch=self.ch * mult, dropout=self.dropout)
                    for _ in range(self.num_res_blocks)
                ]
            )
            down_attn.append(AttnBlock() if i_level == len(self.ch_mult) - 1 else None)
            if i_level != len(self.ch_mult) - 1:
                downsample.append(Downsample(with_conv=True))
        self.down = down
        self.down_attn = down_attn
        self.downsample = downsample

        self.mid_block1 = block_cls(dropout=self.dropout)
        self.mid_attn = AttnBlock()
        self.mid_block2 = block_cls(dropout=self.dropout)

        up, upsample = [], []
        for i_level, mult in reversed(list(enumerate(self.ch_mult))):
            up.append(
                [
                    block_cls(out_ch=self.ch * mult, dropout=self.dropout)
                    for _ in range(self.num_res_blocks + 1)
                ]
            )
            if i_level != 0:
                upsample.append(Upsample())
        self.up = up
        self.upsample = upsample

        self.norm_out = nn.GroupNorm(num_groups=2)
        self.conv_out = nn.Conv(self.out_ch, (3, 3), kernel_init=nn.initializers.zeros)

    def timestep_embedding(self, timesteps, y=None, max_period: float = 10_000.0):
        """Sinusoidal embedding of the timesteps, two dense layers, plus the label's."""
        half = self.ch // 2
        freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
        args = timesteps.astype(jnp.float32)[:, None] * freqs[None]
        emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
        emb = self.temb_dense0(emb)
        emb = self.temb_dense1(nn.swish(emb))
        if y is not None:
            emb = emb + self.label_emb(y)
        return emb

    def encode(self, x, t, y=None, train: bool = False):
        """Returns the skip features of the down path and the conditioning embedding."""
        temb = self.timestep_embedding(t, y)
        hs = [self.conv_in(x)]
        for i_level in range(len(self.ch_mult)):
            for block in self.down[i_level]:
                h = block(hs[-1], temb, train)
                if self.down_attn[i_level] is not None:
                    h = self.down_attn[i_level](h)
                hs.append(h)
            if i_level != len(self.ch_mult) - 1:
                hs.append(self.downsample[i_level](hs[-1]))
        return hs, temb

    def __call__(self, x, t, y=None, train: bool = False):
        hs, temb = self.encode(x, t, y, train)
        h = hs[-1]
        h = self.mid_block1(h, temb, train)
        h = self.mid_attn(h)
        h = self.mid_block2(h, temb, train)
        for j, blocks in enumerate(self.up):
            for block in blocks:
                h = block(jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
            if j < len(self.upsample):
                h = self.upsample[j](h)
        assert not hs
        h = nn.swish(self.norm_out(h))
        return self.conv_out(h)


# --- ConvNeXt (a JAX port: nn.Sequential stem, drop path, layer scale, share_scope) --------


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch of a sample."""

    rate: float = 0.0

    @nn.compact
    def __call__(self, x, deterministic: bool = False):
        if deterministic or self.rate == 0.0:
            return x
        keep_prob = 1.0 - self.rate
        mask = jax.random.bernoulli(
            self.make_rng("drop_path"), keep_prob, (x.shape[0],) + (1,) * (x.ndim - 1)
        )
        return jnp.where(mask, x / keep_prob, 0.0)


class ConvNeXtBlock(nn.Module):
    dim: int
    drop_path: float = 0.0
    layer_scale_init_value: float = 1e-6

    @nn.compact
    def __call__(self, x, deterministic: bool = False):
        inputs = x
        x = nn.Conv(self.dim, (3, 3), padding=1, feature_group_count=self.dim, name="dwconv")(x)
        x = nn.LayerNorm(epsilon=1e-6, name="norm")(x)
        x = nn.Dense(4 * self.dim, name="pwconv1")(x)
        x = nn.gelu(x)
        x = nn.Dense(self.dim, name="pwconv2")(x)
        if self.layer_scale_init_value > 0:
            gamma = self.param(
                "gamma", nn.initializers.constant(self.layer_scale_init_value), (self.dim,)
            )
            x = gamma * x
        return inputs + DropPath(self.drop_path, name="drop_path")(x, deterministic)


class ConvNeXt(nn.Module):
    depths: Sequence[int] = (1, 1)
    dims: Sequence[int] = (8, 16)
    drop_path_rate: float = 0.0
    layer_scale_init_value: float = 1e-6

    @nn.compact
    def __call__(self, x, train: bool = False):
        dp_rates = np.linspace(0, self.drop_path_rate, sum(self.depths))
        cur = 0
        for i, (depth, dim) in enumerate(zip(self.depths, self.dims, strict=True)):
            if i == 0:
                x = nn.Sequential(
                    [nn.Conv(dim, (2, 2), strides=(2, 2)), nn.LayerNorm(epsilon=1e-6)],
                    name="stem",
                )(x)
            else:
                x = nn.Sequential(
                    [nn.LayerNorm(epsilon=1e-6), nn.Conv(dim, (2, 2), strides=(2, 2))],
                    name=f"downsample_layers_{i}",
                )(x)
            for j in range(depth):
                x = ConvNeXtBlock(
                    dim,
                    drop_path=float(dp_rates[cur + j]),
                    layer_scale_init_value=self.layer_scale_init_value,
                    name=f"stages_{i}_{j}",
                )(x, not train)
            cur += depth
        return nn.LayerNorm(epsilon=1e-6, name="norm")(jnp.mean(x, axis=(1, 2)))


class ConvNeXtClassifier(nn.Module):
    """Wraps the backbone without adding a level to its parameter tree."""

    num_classes: int = 4
    drop_path_rate: float = 0.2

    def setup(self):
        self.backbone = ConvNeXt(drop_path_rate=self.drop_path_rate)
        nn.share_scope(self, self.backbone)
        self.head = nn.Sequential([nn.Dense(16), nn.gelu, nn.Dense(self.num_classes)])

    def __call__(self, x, train: bool = False):
        return self.head(self.backbone(x, train=train))


# --- google-research/vision_transformer models_mixer.py, with logical axis names ----------


class MixerMlpBlock(nn.Module):
    mlp_dim: int
    axes: tuple[str, str] = ("embed", "mlp")

    @nn.compact
    def __call__(self, x):
        y = nn.Dense(
            self.mlp_dim,
            kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), self.axes),
        )(x)
        y = nn.gelu(y)
        return nn.Dense(
            x.shape[-1],
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.lecun_normal(), self.axes[::-1]
            ),
        )(y)


class MixerBlock(nn.Module):
    """Mixer block layer."""

    tokens_mlp_dim: int
    channels_mlp_dim: int

    def setup(self):
        self.norm1 = nn.LayerNorm()
        self.token_mixing = MixerMlpBlock(self.tokens_mlp_dim, axes=("length", "mlp"))
        self.norm2 = nn.LayerNorm()
        self.channel_mixing = MixerMlpBlock(self.channels_mlp_dim)

    def __call__(self, x):
        y = self.norm1(x)
        y = jnp.swapaxes(y, 1, 2)
        y = self.token_mixing(y)
        y = jnp.swapaxes(y, 1, 2)
        x = x + y
        y = self.norm2(x)
        return x + self.channel_mixing(y)


class MlpMixer(nn.Module):
    """Mixer architecture."""

    patches: Any
    num_classes: int
    num_blocks: int
    hidden_dim: int
    tokens_mlp_dim: int
    channels_mlp_dim: int
    model_name: str | None = None

    @nn.compact
    def __call__(self, inputs, *, train):
        del train
        x = nn.Conv(
            self.hidden_dim, self.patches["size"], strides=self.patches["size"], name="stem"
        )(inputs)
        n, h, w, c = x.shape
        x = x.reshape(n, h * w, c)
        for _ in range(self.num_blocks):
            x = MixerBlock(self.tokens_mlp_dim, self.channels_mlp_dim)(x)
        x = nn.LayerNorm(name="pre_head_layer_norm")(x)
        x = jnp.mean(x, axis=1)
        if self.num_classes:
            x = nn.Einsum(
                (self.hidden_dim, self.num_classes),
                "bd,dk->bk",
                kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed", "vocab")),
                name="head",
            )(x)
        return x


# --- Swin-like window attention (setup() with a numpy buffer, ints between modules) ---------


def window_partition(x, window_size):
    B, H, W, C = x.shape
    x = x.reshape(B, H // window_size, window_size, W // window_size, window_size, C)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, C)


def window_reverse(windows, window_size, H, W):
    B = windows.shape[0] // (H * W // window_size // window_size)
    x = windows.reshape(B, H // window_size, W // window_size, window_size, window_size, -1)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(B, H, W, -1)


class WindowAttention(nn.Module):
    """Window based multi-head self attention with relative position bias."""

    dim: int
    window_size: int
    num_heads: int
    attn_drop: float = 0.0

    def setup(self):
        ws = self.window_size
        self.relative_position_bias_table = self.param(
            "relative_position_bias_table",
            nn.initializers.truncated_normal(stddev=0.02),
            ((2 * ws - 1) * (2 * ws - 1), self.num_heads),
        )
        coords = np.stack(np.meshgrid(np.arange(ws), np.arange(ws), indexing="ij"))
        coords_flatten = coords.reshape(2, -1)
        relative = coords_flatten[:, :, None] - coords_flatten[:, None, :]
        relative = relative.transpose(1, 2, 0) + (ws - 1)
        self.relative_position_index = relative[..., 0] * (2 * ws - 1) + relative[..., 1]
        head_dim = self.dim // self.num_heads
        self.qkv = nn.Einsum((self.dim, 3, self.num_heads, head_dim), "bnc,cthd->tbhnd")
        self.proj = nn.Dense(self.dim)
        self.attn_dropout = nn.Dropout(self.attn_drop)
        self.scale = head_dim**-0.5

    def __call__(self, x, mask=None, deterministic: bool = True):
        B_, N, C = x.shape
        q, k, v = self.qkv(x)
        attn = (q * self.scale) @ jnp.swapaxes(k, -2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        attn = attn + bias.reshape(N, N, -1).transpose(2, 0, 1)[None]
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.reshape(B_ // nW, nW, self.num_heads, N, N) + mask[None, :, None]
            attn = attn.reshape(-1, self.num_heads, N, N)
        attn = jax.nn.softmax(attn, axis=-1)
        self.sow("intermediates", "attention_weights", attn)
        attn = self.attn_dropout(attn, deterministic=deterministic)
        x = jnp.swapaxes(attn @ v, 1, 2).reshape(B_, N, C)
        return self.proj(x)


def shifted_window_mask(H, W, window_size, shift_size):
    img_mask = np.zeros((1, H, W, 1), np.float32)
    cnt = 0
    slices = (
        slice(0, -window_size),
        slice(-window_size, -shift_size),
        slice(-shift_size, None),
    )
    for h in slices:
        for w in slices:
            img_mask[:, h, w, :] = cnt
            cnt += 1
    mask_windows = np.asarray(window_partition(img_mask, window_size))[..., 0]
    attn_mask = mask_windows[:, None, :] - mask_windows[:, :, None]
    return np.where(attn_mask != 0, -100.0, 0.0).astype(np.float32)


class SwinBlock(nn.Module):
    dim: int
    num_heads: int
    window_size: int = 2
    shift_size: int = 0
    mlp_ratio: float = 2.0

    @nn.compact
    def __call__(self, x, H: int, W: int, train: bool = False):
        B, L, C = x.shape
        window_size, shift_size = self.window_size, self.shift_size
        if min(H, W) <= window_size:
            window_size, shift_size = min(H, W), 0
        shortcut = x
        x = nn.LayerNorm(name="norm1")(x).reshape(B, H, W, C)
        if shift_size > 0:
            x = jnp.roll(x, (-shift_size, -shift_size), axis=(1, 2))
            mask = jnp.asarray(shifted_window_mask(H, W, window_size, shift_size))
        else:
            mask = None
        windows = window_partition(x, window_size)
        windows = WindowAttention(C, window_size, self.num_heads, attn_drop=0.1, name="attn")(
            windows, mask=mask, deterministic=not train
        )
        x = window_reverse(windows, window_size, H, W)
        if shift_size > 0:
            x = jnp.roll(x, (shift_size, shift_size), axis=(1, 2))
        x = shortcut + x.reshape(B, H * W, C)
        y = nn.LayerNorm(name="norm2")(x)
        y = nn.Dense(int(C * self.mlp_ratio), name="fc1")(y)
        y = nn.Dense(C, name="fc2")(nn.gelu(y))
        return x + y


class PatchEmbed(nn.Module):
    patch_size: int = 2
    embed_dim: int = 8

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(
            self.embed_dim, (self.patch_size,) * 2, strides=(self.patch_size,) * 2, name="proj"
        )(x)
        B, H, W, C = x.shape
        x = nn.LayerNorm(name="norm")(x.reshape(B, H * W, C))
        return x, H, W


class PatchMerging(nn.Module):
    dim: int

    @nn.compact
    def __call__(self, x, H: int, W: int):
        B, L, C = x.shape
        x = x.reshape(B, H, W, C)
        x = jnp.concatenate(
            [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1
        )
        x = x.reshape(B, (H // 2) * (W // 2), 4 * C)
        x = nn.LayerNorm(name="norm")(x)
        return nn.Dense(2 * self.dim, use_bias=False, name="reduction")(x)


class SwinTransformer(nn.Module):
    embed_dim: int = 8
    depths: Sequence[int] = (2, 1)
    num_heads: Sequence[int] = (2, 4)
    window_size: int = 2
    num_classes: int = 3

    @nn.compact
    def __call__(self, x, train: bool = False):
        x, H, W = PatchEmbed(embed_dim=self.embed_dim, name="patch_embed")(x)
        features = []
        dim = self.embed_dim
        for i, (depth, heads) in enumerate(zip(self.depths, self.num_heads, strict=True)):
            for j in range(depth):
                x = SwinBlock(
                    dim,
                    heads,
                    window_size=self.window_size,
                    shift_size=0 if j % 2 == 0 else self.window_size // 2,
                    name=f"layers_{i}_blocks_{j}",
                )(x, H, W, train)
            features.append(x.reshape(x.shape[0], H, W, dim))
            if i < len(self.depths) - 1:
                x = PatchMerging(dim, name=f"layers_{i}_downsample")(x, H, W)
                H, W, dim = H // 2, W // 2, dim * 2
        x = nn.LayerNorm(name="norm")(x)
        logits = nn.Dense(self.num_classes, name="head")(jnp.mean(x, axis=1))
        return {"logits": logits, "features": tuple(features), "resolution": (H, W)}


# --- Scanned ResNet stages: BatchNorm statistics stacked by nn.scan ------------------------


class ScannedBottleneck(nn.Module):
    """One block of a stage of identical blocks, scanned over its depth."""

    features: int
    train: bool = False

    @nn.compact
    def __call__(self, x, _):
        y = nn.Conv(self.features, (1, 1), use_bias=False, name="conv1")(x)
        y = nn.BatchNorm(use_running_average=not self.train, momentum=0.9, name="bn1")(y)
        y = nn.relu(y)
        y = nn.Conv(x.shape[-1], (3, 3), use_bias=False, name="conv2")(y)
        y = nn.BatchNorm(
            use_running_average=not self.train,
            momentum=0.9,
            scale_init=nn.initializers.zeros_init(),
            name="bn2",
        )(y)
        return nn.relu(x + y), None


class ScanResNet(nn.Module):
    width: int = 8
    depth: int = 3
    num_classes: int = 5

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Conv(self.width, (3, 3), strides=(2, 2), use_bias=False, name="stem")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="stem_bn")(x)
        x = nn.relu(x)
        stage = nn.scan(
            ScannedBottleneck,
            variable_axes={"params": 0, "batch_stats": 0},
            split_rngs={"params": True},
            length=self.depth,
        )
        x, _ = stage(self.width // 2, train, name="stage")(x, None)
        return nn.Dense(self.num_classes, name="head")(jnp.mean(x, axis=(1, 2)))


# --- A spectrally normalised GAN discriminator with a struct output -----------------------


@flax.struct.dataclass
class DiscriminatorOutput:
    logits: jax.Array
    features: tuple[jax.Array, ...]
    num_layers: int = flax.struct.field(pytree_node=False)


class SNDiscriminator(nn.Module):
    """Train mode read off the mutability of ``batch_stats``, as some GAN code does."""

    features: Sequence[int] = (4, 8)

    @nn.compact
    def __call__(self, x):
        update_stats = self.is_mutable_collection("batch_stats")
        feats = []
        for i, f in enumerate(self.features):
            x = nn.SpectralNorm(nn.Conv(f, (3, 3), strides=(2, 2)), name=f"sn_conv_{i}")(
                x, update_stats=update_stats
            )
            x = nn.leaky_relu(x, negative_slope=0.2)
            feats.append(x)
        x = x.reshape(x.shape[0], -1)
        logits = nn.SpectralNorm(nn.Dense(1))(x, update_stats=update_stats)
        return DiscriminatorOutput(logits, tuple(feats), len(self.features))


class DCGANGenerator(nn.Module):
    """DCGAN generator: Dense to a 2x2 map, strided ConvTranspose up to 8x8, tanh."""

    features: Sequence[int] = (16, 8)
    out_channels: int = 3

    @nn.compact
    def __call__(self, z):
        # Train mode read off the mutability of batch_stats instead of a flag.
        train = self.is_mutable_collection("batch_stats")
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9)
        x = nn.Dense(2 * 2 * self.features[0], use_bias=False, name="project")(z)
        x = nn.relu(norm(name="project_bn")(x.reshape(z.shape[0], 2, 2, self.features[0])))
        for i, f in enumerate(self.features[1:]):
            x = nn.ConvTranspose(f, (3, 3), strides=(2, 2), use_bias=False, name=f"up_{i}")(x)
            x = nn.relu(norm(name=f"up_{i}_bn")(x))
        x = nn.ConvTranspose(self.out_channels, (3, 3), strides=(2, 2), name="to_rgb")(x)
        return jnp.tanh(x)


# --- SimCLR: an encoder module passed in as a field, called on two views ------------------


class ProjectionHead(nn.Module):
    hidden: int = 8
    out: int = 4

    @nn.nowrap
    def _dense(self, features: int, name: str) -> nn.Dense:
        return nn.Dense(features, kernel_init=nn.initializers.he_normal(), name=name)

    @nn.compact
    def __call__(self, h):
        h = nn.relu(self._dense(self.hidden, "fc1")(h))
        return self._dense(self.out, "fc2")(h)


class SimCLR(nn.Module):
    encoder: nn.Module
    temperature: float = 0.5

    @nn.compact
    def __call__(self, view1, view2, train: bool = True):
        head = ProjectionHead(name="projection")
        z1 = head(self.encoder(view1, train=train))
        z2 = head(self.encoder(view2, train=train))
        z = jnp.concatenate([z1, z2]) / jnp.linalg.norm(
            jnp.concatenate([z1, z2]), axis=-1, keepdims=True
        )
        logits = z @ z.T / self.temperature
        n = z1.shape[0]
        logits = jnp.where(jnp.eye(2 * n, dtype=bool), -1e9, logits)
        labels = jnp.concatenate([jnp.arange(n) + n, jnp.arange(n)])
        loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1))
        return loss, {"z1": z1, "z2": z2}


# --- MAE (facebookresearch/mae ported to Flax): random masking on a 'mask' rng -------------


class MaskedAutoencoderViT(nn.Module):
    patch_size: int = 2
    in_chans: int = 3
    embed_dim: int = 8
    depth: int = 1
    num_heads: int = 2
    decoder_embed_dim: int = 8
    decoder_depth: int = 1
    decoder_num_heads: int = 2
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True

    def setup(self):
        p = self.patch_size
        self.patch_embed = nn.Conv(self.embed_dim, (p, p), strides=(p, p), padding="VALID")
        self.cls_token = self.param(
            "cls_token", nn.initializers.normal(stddev=0.02), (1, 1, self.embed_dim)
        )
        self.blocks = [
            BvEncoder1DBlock(num_heads=self.num_heads, mlp_dim=2 * self.embed_dim)
            for _ in range(self.depth)
        ]
        self.norm = nn.LayerNorm()
        self.decoder_embed = nn.Dense(self.decoder_embed_dim)
        self.mask_token = self.param(
            "mask_token", nn.initializers.normal(stddev=0.02), (1, 1, self.decoder_embed_dim)
        )
        self.decoder_blocks = [
            BvEncoder1DBlock(num_heads=self.decoder_num_heads, mlp_dim=2 * self.decoder_embed_dim)
            for _ in range(self.decoder_depth)
        ]
        self.decoder_norm = nn.LayerNorm()
        self.decoder_pred = nn.Dense(p * p * self.in_chans)

    def patchify(self, imgs):
        p = self.patch_size
        n, h, w, c = imgs.shape
        x = imgs.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
        return x.reshape(n, (h // p) * (w // p), p * p * c)

    def random_masking(self, x):
        n, length, d = x.shape
        len_keep = int(length * (1 - self.mask_ratio))
        noise = jax.random.uniform(self.make_rng("mask"), (n, length))
        ids_shuffle = jnp.argsort(noise, axis=1)
        ids_restore = jnp.argsort(ids_shuffle, axis=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_masked = jnp.take_along_axis(x, ids_keep[..., None], axis=1)
        mask = jnp.ones((n, length)).at[:, :len_keep].set(0)
        mask = jnp.take_along_axis(mask, ids_restore, axis=1)
        return x_masked, mask, ids_restore

    def forward_encoder(self, imgs):
        x = self.patch_embed(imgs)
        n, h, w, c = x.shape
        x = x.reshape(n, h * w, c) + posemb_sincos_2d(h, w, c)
        x, mask, ids_restore = self.random_masking(x)
        cls = jnp.tile(self.cls_token, (n, 1, 1))
        x = jnp.concatenate([cls, x], axis=1)
        for blk in self.blocks:
            x, _ = blk(x)
        return self.norm(x), mask, ids_restore

    def forward_decoder(self, x, ids_restore):
        x = self.decoder_embed(x)
        n, length = ids_restore.shape
        mask_tokens = jnp.tile(self.mask_token, (n, length + 1 - x.shape[1], 1))
        x_ = jnp.concatenate([x[:, 1:], mask_tokens], axis=1)
        x_ = jnp.take_along_axis(x_, ids_restore[..., None], axis=1)
        side = int(math.isqrt(length))
        x_ = x_ + posemb_sincos_2d(side, side, x.shape[-1])
        x = jnp.concatenate([x[:, :1], x_], axis=1)
        for blk in self.decoder_blocks:
            x, _ = blk(x)
        x = self.decoder_pred(self.decoder_norm(x))
        return x[:, 1:]

    def forward_loss(self, imgs, pred, mask):
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean = target.mean(axis=-1, keepdims=True)
            var = target.var(axis=-1, keepdims=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(axis=-1)
        return (loss * mask).sum() / mask.sum()

    def __call__(self, imgs):
        latent, mask, ids_restore = self.forward_encoder(imgs)
        pred = self.forward_decoder(latent, ids_restore)
        loss = self.forward_loss(imgs, pred, mask)
        return loss, pred, mask


IMAGES = _normal(2, 8, 8, 3)
IMAGES_4 = _normal(2, 8, 8, 4)
# As in ``model.apply(variables, x, t, method=lambda m, x, t, train: m.encode(x, t, train)[0])``.
_unet_skips = lambda module, x, t, y, train: module.encode(x, t, y, train)[0]  # noqa: E731
LATENTS = _normal(2, 8)
LABELS = jnp.asarray(_rng.integers(0, 3, (2,)), jnp.int32)
TIMESTEPS = jnp.asarray(_rng.integers(0, 1000, (2,)), jnp.int32)

CASES: list[ZooCase] = [
    ZooCase(
        "vision_resnet_train",
        lambda: ResNetTiny(num_classes=5),
        (IMAGES,),
        {"train": True},
        mutable=["batch_stats"],
        notes="imagenet ResNet: partial(nn.Conv)/partial(nn.BatchNorm) fields, block_cls, "
        "conv_proj shortcut, max_pool, batch_stats updated",
        tags=("mutable", "static_args"),
    ),
    ZooCase(
        "vision_resnet_bottleneck_bf16_eval",
        lambda: ResNetTinyBottleneck(num_classes=5, dtype=jnp.bfloat16),
        (IMAGES,),
        {"train": False},
        notes="imagenet ResNet with BottleneckResNetBlock, bf16 compute, running averages read",
        tags=("static_args", "dtype"),
    ),
    ZooCase(
        "vision_vit_dropout",
        _vit_tiny,
        (IMAGES,),
        {"train": True},
        rngs=("dropout",),
        notes="google-research ViT: class token, pos_embedding param, MHDPA with attention "
        "dropout, nn.Dropout, dict fields, kw-only train",
        tags=("rng", "static_args"),
    ),
    ZooCase(
        "vision_bigvision_vit_scan",
        _bv_vit_scan,
        (IMAGES,),
        {"train": True},
        rngs=("dropout",),
        notes="big_vision ViT: nn.scan(nn.remat(block, static_argnums)) with dropout split, "
        "dict of intermediates out, MAP head, pre_logits Dense called twice, logical kernels",
        tags=("lifted", "rng", "static_args", "shared", "metadata"),
    ),
    ZooCase(
        "vision_unet_diffusion",
        UNet,
        (IMAGES_4, TIMESTEPS, LABELS),
        {"train": True},
        rngs=("dropout",),
        notes="class-conditional DDPM UNet: setup() lists of remat blocks, sinusoidal temb and "
        "label nn.Embed in a helper method, GroupNorm, skips in a list, jax.image.resize, MHDPA",
        tags=("setup", "lifted", "rng", "static_args"),
    ),
    ZooCase(
        "vision_unet_encode",
        lambda: UNet(ch_mult=(1,)),
        (IMAGES_4, TIMESTEPS, None),
        {"train": False},
        method=_unet_skips,
        notes="method= a lambda calling UNet.encode with y=None: a list of skip features out",
        tags=("setup", "lifted", "method", "static_args"),
    ),
    ZooCase(
        "vision_convnext_droppath",
        ConvNeXtClassifier,
        (IMAGES,),
        {"train": True},
        rngs=("drop_path",),
        notes="ConvNeXt: nn.Sequential stem/downsample, depthwise conv, layer-scale gamma, "
        "stochastic depth on a 'drop_path' rng, nn.share_scope wrapper, nn.gelu in a Sequential",
        tags=("setup", "shared", "rng", "static_args"),
    ),
    ZooCase(
        "vision_mlp_mixer",
        lambda: MlpMixer(
            patches={"size": (2, 2)},
            num_classes=4,
            num_blocks=2,
            hidden_dim=8,
            tokens_mlp_dim=8,
            channels_mlp_dim=16,
        ),
        (IMAGES,),
        {"train": False},
        notes="MLP-Mixer: setup() MixerBlock, swapaxes token mixing, logically partitioned "
        "kernels, nn.Einsum head",
        tags=("setup", "metadata", "static_args"),
    ),
    ZooCase(
        "vision_swin",
        SwinTransformer,
        (IMAGES,),
        {"train": False},
        mutable=["intermediates"],
        notes="Swin: window attention with a relative position bias param and numpy index in "
        "setup(), shifted-window mask, jnp.roll, nn.Einsum qkv, ints returned and passed "
        "between submodules, attention weights sown, dict output with tuples and ints",
        tags=("setup", "static_args", "non_array", "mutable"),
    ),
    ZooCase(
        "vision_scan_resnet_bn",
        ScanResNet,
        (IMAGES,),
        {"train": True},
        mutable=["batch_stats"],
        notes="nn.scan over a stage of BatchNorm blocks: params and batch_stats stacked, "
        "train passed as a module attribute, running averages updated",
        tags=("lifted", "mutable", "static_args"),
    ),
    ZooCase(
        "vision_dcgan_generator",
        DCGANGenerator,
        (LATENTS,),
        mutable=["batch_stats"],
        notes="DCGAN generator: strided nn.ConvTranspose, BatchNorm whose train mode is read "
        "from is_mutable_collection('batch_stats')",
        tags=("mutable",),
    ),
    ZooCase(
        "vision_simclr",
        lambda: SimCLR(encoder=ResNetTiny(stage_sizes=[1], num_classes=8)),
        (IMAGES, IMAGES[:, ::-1]),
        {"train": True},
        mutable=["batch_stats"],
        notes="SimCLR: an unbound ResNet passed as a field, called on two views (BatchNorm "
        "stats updated twice), one head called twice, @nn.nowrap helper, (loss, dict) out",
        tags=("shared", "mutable", "static_args"),
    ),
    ZooCase(
        "vision_mae",
        MaskedAutoencoderViT,
        (IMAGES,),
        rngs=("mask",),
        notes="MAE: random masking from a 'mask' rng in the root's own method, argsort and "
        "take_along_axis, cls/mask token params in setup(), sincos posemb, (loss, pred, mask)",
        tags=("setup", "rng"),
    ),
    ZooCase(
        "vision_sn_discriminator",
        SNDiscriminator,
        (IMAGES,),
        mutable=["batch_stats"],
        notes="nn.SpectralNorm (map_variables) over Conv and Dense, u/sigma in batch_stats, "
        "train read from is_mutable_collection, a flax.struct.dataclass output with a static int",
        tags=("lifted", "mutable", "non_array"),
    ),
]

# Cases that flaxmock does not handle yet go here, each naming its reproduction.
PENDING: list[ZooCase] = []
