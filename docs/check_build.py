"""Checks a built docs tree: every tutorial page shows its rich outputs.

Run by ``make docs`` after Sphinx: a tutorial that stops displaying its figure, its treescope
rendering or its summary table (a cell changed to ``print``, say) fails the build, since the
page would still build but no longer show the reader what its text promises.

Usage: ``python docs/check_build.py docs/_build/html``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# page -> (what it must show, pattern, at least how many times)
EXPECTED = {
    "tutorials/01_unflaxify.html": [("summary table", r'class="flaxmock-summary"', 1)],
    # The rendered output (the word "treescope" alone is in the prose too).
    "tutorials/02_tree_surgery.html": [("treescope rendering", r"<treescope-container", 1)],
    # One figure: the plot method run on a Mocker and on the bound model, side by side.
    "tutorials/04_plot_debugging.html": [("figure (mocked and real)", r"<img ", 1)],
    "tutorials/06_costs.html": [("summary table with FLOPs", r'class="flaxmock-summary"', 1)],
    "index.html": [("first example", r"pip install", 1)],
}


def main(root: Path) -> int:
    problems = []
    for page, checks in EXPECTED.items():
        path = root / page
        if not path.exists():
            problems.append(f"{page}: missing")
            continue
        text = path.read_text(encoding="utf-8")
        for what, pattern, least in checks:
            found = len(re.findall(pattern, text))
            if found < least:
                problems.append(f"{page}: expected {what} ({least}+ of {pattern!r}), found {found}")
    for problem in problems:
        print(f"docs check: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/_build/html")))
