"""Zoo cases written the way third-party vision models are (ResNet, ViT, UNet, ConvNeXt)."""

from __future__ import annotations

from zoo_case import ZooCase

CASES: list[ZooCase] = []
