"""The built package: a wheel ships its type information and its license.

A user's type checker sees flaxmock's own annotations only if the wheel carries ``py.typed``
(PEP 561); without it mypy reports "missing library stubs or py.typed marker" and every
flaxmock value is ``Any`` in the user's project.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import venv
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
    )
    (found,) = out.glob("flaxmock-*.whl")
    return found


def test_wheel_ships_py_typed_and_license(wheel: pathlib.Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "flaxmock/py.typed" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    metadata = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/METADATA"))
    )
    assert b"License-Expression: Apache-2.0" in metadata
    assert b"Typing :: Typed" in metadata


def test_mypy_sees_flaxmock_types_from_the_installed_wheel(
    wheel: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    # A throwaway project: a bare venv with only the wheel in it, and mypy run against it.
    env = tmp_path / "venv"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
        + [str(wheel)],
        check=True,
    )
    project = tmp_path / "user.py"
    project.write_text(
        "import flaxmock\n"
        "reveal_type(flaxmock.unflaxify)\n"
        "reveal_type(flaxmock.summary)\n"
        "n: int = flaxmock.summary\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--python-executable", str(python)]
        + [str(project)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    out = result.stdout + result.stderr
    assert "py.typed" not in out, out
    assert "-> flaxmock." in out and "FlaxCallLayer" in out, out
    assert "Summary" in out, out
    # A real type, so a wrong use is reported (with Any, mypy would accept it).
    assert 'Incompatible types in assignment (expression has type "def' in out, out


def test_api_reference_documents_every_public_name():
    """docs/api.md lists its entries by hand (grouped by task): none may be forgotten."""
    import re

    import flaxmock
    import flaxmock.nnx

    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    start = text.index(".. currentmodule:: flaxmock.nnx")
    end = text.index(".. currentmodule:: flaxmock\n", start)
    entry = re.compile(r"^\.\. auto(?:function|class|exception):: (\S+)$", re.M)
    linen = set(entry.findall(text[:start] + text[end:]))
    nnx = set(entry.findall(text[start:end]))
    nnx |= {n.removeprefix("flaxmock.nnx.") for n in linen if n.startswith("flaxmock.nnx.")}
    missing = sorted(set(flaxmock.__all__) - {"fills"} - linen)
    # flaxmock.nnx re-exports a few linen objects (one MockAttributeError): documented once.
    shared = {
        n for n in flaxmock.nnx.__all__ if getattr(flaxmock, n, None) is getattr(flaxmock.nnx, n)
    }
    missing += sorted(f"flaxmock.nnx.{n}" for n in set(flaxmock.nnx.__all__) - shared - nnx)
    assert not missing, f"public names missing from docs/api.md: {missing}"
    modules = set(re.findall(r"^\.\. automodule:: (\S+)$", text, re.M))
    assert {"flaxmock.fills", "flaxmock.examples.llama"} <= modules
