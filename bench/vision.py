"""Vision models for the benchmarks, written in the style of the flax examples.

ResNet-18 and ResNet-50 (basic and bottleneck blocks, strided convolutions, BatchNorm with
``use_running_average``) and a VGG-16-style network (3x3 convolutions, max pooling, dense
head). Our own code, nothing downloaded; ``bench/mocker.py`` mocks them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class ResNetBlock(nn.Module):
    """The basic residual block (two 3x3 convolutions)."""

    filters: int
    conv: Callable[..., Any]
    norm: Callable[..., Any]
    strides: tuple[int, int] = (1, 1)

    @nn.compact
    def __call__(self, x):
        residual = x
        y = self.conv(self.filters, (3, 3), self.strides)(x)
        y = nn.relu(self.norm()(y))
        y = self.conv(self.filters, (3, 3))(y)
        y = self.norm(scale_init=nn.initializers.zeros_init())(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters, (1, 1), self.strides, name="conv_proj")(residual)
            residual = self.norm(name="norm_proj")(residual)
        return nn.relu(residual + y)


class BottleneckResNetBlock(nn.Module):
    """The bottleneck block (1x1, strided 3x3, 1x1 with four times the filters)."""

    filters: int
    conv: Callable[..., Any]
    norm: Callable[..., Any]
    strides: tuple[int, int] = (1, 1)

    @nn.compact
    def __call__(self, x):
        residual = x
        y = nn.relu(self.norm()(self.conv(self.filters, (1, 1))(x)))
        y = nn.relu(self.norm()(self.conv(self.filters, (3, 3), self.strides)(y)))
        y = self.conv(self.filters * 4, (1, 1))(y)
        y = self.norm(scale_init=nn.initializers.zeros_init())(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters * 4, (1, 1), self.strides, name="conv_proj")(residual)
            residual = self.norm(name="norm_proj")(residual)
        return nn.relu(residual + y)


class ResNet(nn.Module):
    """A ResNet: a strided 7x7 stem, max pooling, stages of blocks, global pooling, a head."""

    stage_sizes: Sequence[int]
    block_cls: Any
    num_classes: int = 1000
    num_filters: int = 64
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            dtype=self.dtype,
        )
        x = conv(self.num_filters, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="conv_init")(x)
        x = nn.relu(norm(name="bn_init")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        for i, size in enumerate(self.stage_sizes):
            for j in range(size):
                strides = (2, 2) if i > 0 and j == 0 else (1, 1)
                x = self.block_cls(self.num_filters * 2**i, conv=conv, norm=norm, strides=strides)(
                    x
                )
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=ResNetBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BottleneckResNetBlock)


class VGG16(nn.Module):
    """A VGG-16-style network: five stages of 3x3 convolutions and max pooling, then dense."""

    num_classes: int = 1000
    stages: Sequence[Sequence[int]] = ((64, 64), (128, 128), (256,) * 3, (512,) * 3, (512,) * 3)

    @nn.compact
    def __call__(self, x, train: bool = False):
        for stage in self.stages:
            for filters in stage:
                x = nn.relu(nn.Conv(filters, (3, 3))(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        for width in (4096, 4096):
            x = nn.Dropout(0.5, deterministic=not train)(nn.relu(nn.Dense(width)(x)))
        return nn.Dense(self.num_classes)(x)
