"""The README's first example runs verbatim and prints what the README shows.

Twice: in the development environment (``make test``), and from a fresh virtual environment
into which ``pip install <clone>`` put flaxmock and its dependencies (``slow``: it downloads
and installs jax, flax and penzai), run outside the clone so that only the installed package
can be imported.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import venv

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _first_example() -> tuple[str, str]:
    """The README's first example: its code and the output it shows."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Install and a first example") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    shown = re.search(r"```text\n(.*?)```", section, re.S)
    assert code is not None and shown is not None
    assert code.start() < shown.start()
    return code.group(1), shown.group(1)


def _run_example(python: str, cwd: pathlib.Path) -> None:
    code, shown = _first_example()
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("PYTHONPATH", None)
    run = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.rstrip() == shown.rstrip()


def test_readme_first_example_prints_what_the_readme_shows():
    _run_example(sys.executable, ROOT)


@pytest.mark.slow
def test_readme_first_example_from_a_fresh_venv(tmp_path: pathlib.Path):
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = str(env / "bin" / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    where = subprocess.run(
        [python, "-c", "import flaxmock; print(flaxmock.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert str(env) in where.stdout, where.stdout  # the installed copy, not the clone's src/
    _run_example(python, tmp_path)
