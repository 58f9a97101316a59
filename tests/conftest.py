"""Test-session settings shared by every test module."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skips tests marked ``slow`` unless the run selects them.

    ``pytest -m slow`` runs the slow ones alone; ``FLAXMOCK_SLOW=1`` (``make test-slow``) runs
    everything.
    """
    expr = config.getoption("markexpr") or ""
    if ("slow" in expr and "not slow" not in expr) or os.environ.get("FLAXMOCK_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)
