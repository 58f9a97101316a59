"""Zoo cases written the way third-party text models are (BERT, T5, GPT, MoE)."""

from __future__ import annotations

from zoo_case import ZooCase

CASES: list[ZooCase] = []
