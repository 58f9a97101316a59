"""A :class:`~flaxmock.Summary` as HTML, for notebooks (``Summary._repr_html_``).

The look follows treescope's: a monospace table on white, each module type on the pastel
background treescope gives that name (``treescope.formatting_util.color_from_string``), mocks
on the colour of ``MockLayer``. For tables with hundreds of rows the header stays in place
while the body scrolls, and each call with callees has a triangle that folds its subtree (a few
lines of inline script). Long tables start with the subtrees below the first level folded by a
script too, so that where a notebook runs no scripts every row simply stays shown.
"""

from __future__ import annotations

import html
import itertools

from treescope import formatting_util

from flaxmock._core import table as _table

# In a table longer than _LONG rows, the rows at _OPEN_DEPTH start folded (scripts permitting).
_OPEN_DEPTH = 1
_LONG = 60
_IDS = itertools.count()

_STYLE = """
.flaxmock-summary { font-family: monospace; font-size: 0.8em; color: black;
  background: white; line-height: 1.4; width: fit-content; max-width: 100%; }
.flaxmock-summary .fm-title { font-weight: bold; padding: 0 0 0.3em 0; }
.flaxmock-summary .fm-scroll { max-height: 36em; overflow: auto; border: 1px solid #ddd; }
.flaxmock-summary table { border-collapse: separate; border-spacing: 0; white-space: pre; }
.flaxmock-summary th { position: sticky; top: 0; background: #f3f3f3; z-index: 1;
  text-align: left; padding: 0.1em 0.4em; border-bottom: 1px solid #ccc; font-weight: normal;
  color: #555; }
.flaxmock-summary td { padding: 0.05em 0.4em; border-bottom: 1px solid #f0f0f0; }
.flaxmock-summary td.fm-spec, .flaxmock-summary td.fm-note { white-space: normal;
  overflow-wrap: break-word; }
.flaxmock-summary td.fm-spec { min-width: 8em; max-width: 14em; }
.flaxmock-summary td.fm-note { min-width: 10em; max-width: 18em; }
.flaxmock-summary td.fm-num, .flaxmock-summary th.fm-num { text-align: right; }
.flaxmock-summary td.fm-type span { padding: 0 0.3em; border-radius: 0.3em; }
.flaxmock-summary td.fm-spec { color: #444; }
.flaxmock-summary td.fm-note { color: #777; }
.flaxmock-summary tr.fm-total td { border-top: 1px solid #ccc; font-weight: bold; }
.flaxmock-summary .fm-toggle { cursor: pointer; color: #888; user-select: none; }
"""

# Folds or unfolds the rows below the clicked one (those deeper than it, up to the next row
# as shallow), keeping folded sub-subtrees folded when unfolding.
_TOGGLE = (
    "var r=this.closest('tr'),d=+r.dataset.depth,open=r.dataset.open!=='1';"
    "r.dataset.open=open?'1':'0';this.textContent=open?'\u25bc':'\u25b6';"
    "var hide=1e9;for(var n=r.nextElementSibling;n&&+n.dataset.depth>d;"
    "n=n.nextElementSibling){var k=+n.dataset.depth;if(k<=hide)hide=1e9;"
    "n.style.display=(open&&k<=hide)?'':'none';"
    "if(open&&n.dataset.open==='0'&&k<hide)hide=k;}"
)


def _cell(text: str, cls: str = "", style: str = "") -> str:
    attrs = f' class="{cls}"' if cls else ""
    attrs += f' style="{style}"' if style else ""
    return f"<td{attrs}>{html.escape(text)}</td>"


def render(summary: _table.Summary) -> str:
    """Returns the HTML of a summary table.

    Args:
      summary: The table.

    Returns:
      An HTML fragment (a ``<div>`` with its own ``<style>``).

    Examples:
      >>> from flaxmock._core.table import CallRow, Summary
      >>> text = render(Summary([CallRow("<root>", "Dense", "__call__", None, None, 3, 12)]))
      >>> "<th" in text and "Dense" in text
      True
    """
    columns = summary._columns()
    cells = summary._cells(columns)
    rows = summary.rows
    children = _table._children(rows)
    ident = f"flaxmock-summary-{next(_IDS)}"
    out = [f'<div class="flaxmock-summary" id="{ident}"><style>{_STYLE}</style>']
    if summary.title:
        out.append(f'<div class="fm-title">{html.escape(summary.title)}</div>')
    out.append('<div class="fm-scroll"><table><thead><tr>')
    for name in columns:
        cls = ' class="fm-num"' if name in _table._RIGHT else ""
        out.append(f"<th{cls}>{html.escape(name)}</th>")
    out.append("</tr></thead><tbody>")
    for i, (row, values) in enumerate(zip(rows, cells, strict=True)):
        out.append(f'<tr data-depth="{row.depth}" data-open="1">')
        for name, value in zip(columns, values, strict=True):
            out.append(_render_cell(name, value, row, bool(children[i])))
        out.append("</tr>")
    total = summary._total_cells(columns)
    out.append('<tr class="fm-total" data-depth="-1">')
    out.extend(
        _cell(v, "fm-num" if n in _table._RIGHT else "")
        for n, v in zip(columns, total, strict=True)
    )
    out.append("</tr></tbody></table></div>")
    if len(rows) > _LONG:
        out.append(
            f'<script>document.querySelectorAll(\'#{ident} tr[data-depth="{_OPEN_DEPTH}"] '
            ".fm-toggle').forEach(function(t){t.click();});</script>"
        )
    out.append("</div>")
    return "".join(out)


def _render_cell(name: str, value: str, row: _table.CallRow, has_children: bool) -> str:
    if name == "path":
        indent = "\u2002" * (2 * row.depth)
        if has_children:
            toggle = f'<span class="fm-toggle" onclick="{html.escape(_TOGGLE)}">\u25bc</span> '
        else:
            toggle = "\u2002 "
        return f"<td>{indent}{toggle}{html.escape(value)}</td>"
    if name == "module":
        color = formatting_util.color_from_string("MockLayer" if row.mocked else value)
        text = html.escape(value)
        return f'<td class="fm-type"><span style="background:{color}">{text}</span></td>'
    if name in ("inputs", "outputs"):
        return _cell(value, "fm-spec")
    if name == "note":
        return _cell(value, "fm-note")
    return _cell(value, "fm-num" if name in _table._RIGHT else "")
