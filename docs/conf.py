"""Sphinx configuration for the flaxmock docs.

The build needs no network: intersphinx is off and the tutorials, jupytext percent-format
scripts in ``tutorials/``, are converted to notebooks under ``docs/tutorials/`` (gitignored)
each time this file is loaded, then executed on CPU by myst-nb.
"""

from __future__ import annotations

import os
from pathlib import Path

import jupytext
import nbformat

# The tutorials' kernel inherits this environment: run them on CPU and never preallocate
# accelerator memory, also when sphinx is run directly rather than through `make docs`.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
TUTORIALS_SRC = ROOT / "tutorials"
TUTORIALS_OUT = DOCS / "tutorials"

project = "flaxmock"
author = "flaxmock authors"
copyright = "flaxmock authors"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_nb",
]

html_theme = "alabaster"
# Wide enough for a summary table's every column on a 1400-px screen (alabaster's default
# text column is 720 px); docs/_static/flaxmock.css lets the page follow the window.
html_theme_options = {"page_width": "auto", "body_max_width": "none", "sidebar_width": "200px"}
html_static_path = ["_static"]
html_css_files = ["flaxmock.css"]
autosummary_generate = False
exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]

# autodoc / napoleon: Google-style docstrings, signatures as written.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"show-inheritance": True}

# Names from other libraries cannot be resolved without intersphinx (no network at build
# time), so nitpicky mode (-n) only checks references into flaxmock itself.
# Private names (`flaxmock._*`) are not documented, so references to them are not checked
# either; a public function should not raise or return a type missing from `__all__`.
nitpick_ignore_regex = [
    (
        "py:.*",
        r"(jax|jaxlib|flax|nn|penzai|pz|numpy|np|jnp|treescope|collections|contextlib|typing)\..*",
    ),
    ("py:.*", r"flaxmock\._\w+\..*"),
    ("py:.*", r"(Any|Callable|Sequence|Mapping|Iterable|Iterator|PyTree|ArrayLike|Array)"),
]

# myst-nb: execute every tutorial at build time, offline, and fail the build on any error.
nb_execution_mode = "force"
nb_execution_timeout = 120
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_in_temp = True
myst_enable_extensions = ["colon_fence"]


def _write_if_changed(path: Path, text: str) -> None:
    # Rewriting unchanged files would bump their mtimes and make Sphinx rebuild every page.
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def _convert_tutorials() -> list[str]:
    """Converts ``tutorials/*.py`` to ``docs/tutorials/*.ipynb`` and writes their index."""
    TUTORIALS_OUT.mkdir(exist_ok=True)
    sources = sorted(TUTORIALS_SRC.glob("*.py"))
    names = [src.stem for src in sources]
    for stale in TUTORIALS_OUT.glob("*.ipynb"):
        if stale.stem not in names:
            stale.unlink()
    for src in sources:
        notebook = jupytext.read(src, fmt="py:percent")
        notebook.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        notebook.metadata.pop("jupytext", None)
        _write_if_changed(TUTORIALS_OUT / f"{src.stem}.ipynb", nbformat.writes(notebook))
    lines = ["# Tutorials", ""]
    if names:
        lines += [
            "Each tutorial is a plain Python script in `tutorials/`",
            "(jupytext percent format); run one with `python tutorials/<name>.py`.",
            "",
            "```{toctree}",
            ":maxdepth: 1",
            "",
            *names,
            "```",
        ]
    else:
        lines.append("No tutorials yet.")
    _write_if_changed(TUTORIALS_OUT / "index.md", "\n".join(lines) + "\n")
    return names


_convert_tutorials()
