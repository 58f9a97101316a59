"""Runs every tutorial in ``tutorials/`` as a plain script, as a reader would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = sorted((ROOT / "tutorials").glob("*.py"))

# An empty directory shows up as one visible skip rather than as a silently empty test list.
PARAMS = [pytest.param(path, id=path.stem) for path in TUTORIALS] or [
    pytest.param(None, id="none", marks=pytest.mark.skip(reason="no tutorials yet"))
]


@pytest.mark.parametrize("path", PARAMS)
def test_tutorial_runs(path: Path, tmp_path: Path) -> None:
    env = {**os.environ, "MPLBACKEND": "Agg", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (
        f"{path.name} exited with {result.returncode}\n"
        f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-8000:]}"
    )
