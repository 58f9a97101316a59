"""Zoo cases written the way third-party sequence models are (RNNs, decode caches, control flow)."""

from __future__ import annotations

from zoo_case import ZooCase

CASES: list[ZooCase] = []
