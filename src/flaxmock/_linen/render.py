"""Treescope rendering of replacement layers, through treescope's public parts only.

A replacement renders like any penzai struct (its type, then its fields), collapsed, with a
comment on the first line saying what it replaces and what it returns, so that mocks stand out
in a large tree.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from treescope import rendering_parts


def _field_name_style(fields: tuple[dataclasses.Field, ...]) -> Any:
    # As penzai renders structs: fields that are pytree children in italics.
    children = {f.name for f in fields if f.metadata.get("pytree_node", True)}

    def style(name: str) -> Any:
        if name in children:
            return rendering_parts.custom_style(
                rendering_parts.text(name), css_style="font-style: italic; color: #00225f;"
            )
        return rendering_parts.text(name)

    return style


def render_replacement(node: Any, path: str | None, subtree_renderer: Any) -> Any:
    """The treescope rendering of a ``ReplacementLayer`` (a dataclass with ``summary_line``)."""
    fields = dataclasses.fields(node)
    return rendering_parts.build_foldable_tree_node_from_children(
        prefix=rendering_parts.render_dataclass_constructor(node),
        children=rendering_parts.build_field_children(
            node,
            path,
            subtree_renderer,
            fields_or_attribute_names=fields,
            attr_style_fn=_field_name_style(fields),
        ),
        suffix=")",
        path=path,
        background_color=node.treescope_color(),
        first_line_annotation=rendering_parts.comment_color(
            rendering_parts.text(f"  # {node.summary_line()}")
        ),
        expand_state=rendering_parts.ExpandState.COLLAPSED,
    )
