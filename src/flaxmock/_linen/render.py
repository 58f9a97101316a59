"""Treescope rendering and short reprs of converted layers and replacements (public parts only).

A converted layer (``FlaxCallLayer``) or a replacement (``MockLayer``) renders as one foldable
node whose first line, shown collapsed or expanded, reads like a call::

    layers_0/attn.__call__: f32[1,16,64] -> f32[1,16,64]  # Attention, 16.4K params (64.00 KiB, …)

A replacement's line has its own background colour and says what it is (``# mock of
Attention``), so mocks stand out in a collapsed tree. Inside, the fields follow: the static
metadata (the Flax module's configuration, the recorded ``info``) on one line each, with only
their scalar fields (``module=Dense(features=4096, use_bias=False, name='wq', ...)``; the whole
objects are ``layer.module`` and ``layer.info``); the scope data (parameters, state) starts
collapsed, an abstract variable on one line (``parameters['kernel']: bf16[4096,4096]  #
params/…/kernel, ('embed', 'heads')``), a real one in full as treescope draws arrays; the
submodule calls are shown one per line. Labels name paths, never Python object ids.
Treescope's layout and HTML cost grow with the number of rendering parts, so lines are built
from few parts: rendering the static metadata in full, or each abstract parameter as a penzai
struct, multiplied the time of rendering an 8B tree by four and by two (``bench/render.py``).

The plain ``repr`` of a layer is one short line (:func:`short_repr`): type, root call, number of
calls and of replaced ones, instead of the whole tree.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
from penzai import pz
from treescope import rendering_parts

from flaxmock._core import table as _table

_LABEL_STYLE = "font-weight: bold;"


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


def _parameters(node: Any) -> tuple[int, int, bool | None]:
    """``(count, bytes, abstract)`` of the distinct parameters under ``node``.

    ``abstract`` is None when there are none, True when every value is a spec.
    """
    seen: set[Any] = set()
    count = nbytes = 0
    kinds: set[bool] = set()
    is_param = lambda x: isinstance(x, pz.Parameter | pz.ParameterValue)  # noqa: E731
    for leaf in jax.tree.leaves(node, is_leaf=is_param):
        if not is_param(leaf) or leaf.label in seen:
            continue
        seen.add(leaf.label)
        for value in jax.tree.leaves(leaf.value):
            if hasattr(value, "shape") and hasattr(value, "dtype"):
                count += math.prod(value.shape)
                nbytes += math.prod(value.shape) * value.dtype.itemsize
                kinds.add(isinstance(value, jax.ShapeDtypeStruct))
    return count, nbytes, (None if not kinds else kinds == {True})


def _params_text(node: Any) -> str:
    count, nbytes, abstract = _parameters(node)
    if abstract is None:
        return "no params"
    kind = "abstract" if abstract else "real"
    return f"{_table.format_count(count)} params ({_table.format_bytes(nbytes)}, {kind})"


def call_text(label: str, in_spec: Any, out_spec: Any) -> str:
    """``path.method: inputs -> outputs``, with specs as summaries show them."""
    return f"{label}: {_table.describe_inputs(in_spec)} -> {_table.describe_specs(out_spec)}"


_SCALARS = (str, int, float, bool, type(None))


def _one_line(obj: Any, name: str, style: Any) -> Any:
    """``name=Type(scalar fields..., ...)``: static metadata summarised on one line."""
    if not dataclasses.is_dataclass(obj):
        return rendering_parts.siblings(style(name), "=", rendering_parts.text(type(obj).__name__))
    shown, omitted = [], False
    for field in dataclasses.fields(obj):
        if field.name == "parent" or not field.repr:
            continue
        value = getattr(obj, field.name, None)
        if isinstance(value, _SCALARS) and len(repr(value)) <= 40:
            shown.append(f"{field.name}={value!r}")
        else:
            omitted = True
    inner = ", ".join(shown + (["..."] if omitted else []))
    # Few parts per line: treescope's layout and HTML cost grow with the number of parts.
    return rendering_parts.siblings(
        style(name),
        rendering_parts.text(f"={type(obj).__name__}"),
        rendering_parts.comment_color(rendering_parts.text(f"({inner})")),
    )


def _collapsed_object(obj: Any, name: str, path: str | None, subtree_renderer: Any) -> Any:
    """``name=Type(fields...)`` as a node that starts collapsed (a dataclass's fields)."""
    child_path = None if path is None else f"{path}.{name}"
    if not dataclasses.is_dataclass(obj):
        return rendering_parts.siblings_with_annotations(
            f"{name}=", subtree_renderer(obj, path=child_path)
        )
    fields = tuple(f for f in dataclasses.fields(obj) if f.name != "parent")
    return rendering_parts.build_foldable_tree_node_from_children(
        prefix=rendering_parts.siblings(
            f"{name}=", rendering_parts.maybe_qualified_type_name(type(obj)), "("
        ),
        children=rendering_parts.build_field_children(
            obj, child_path, subtree_renderer, fields_or_attribute_names=fields
        ),
        suffix=")",
        path=child_path,
        expand_state=rendering_parts.ExpandState.COLLAPSED,
    )


_VARIABLE_TYPES = (pz.Parameter, pz.ParameterValue, pz.StateVariable, pz.StateVariableValue)


def _abstract_spec(leaf: Any) -> str | None:
    """``f32[64,64]  # params/wq/kernel, ('embed', 'heads')`` for an abstract variable, or None.

    Only for a variable whose value is made of ``jax.ShapeDtypeStruct`` (nothing to show but
    its spec); a real value is left to treescope, which can visualise arrays.
    """
    if not isinstance(leaf, _VARIABLE_TYPES):
        return None
    values = jax.tree.leaves(leaf.value)
    if not values or not all(isinstance(v, jax.ShapeDtypeStruct) for v in values):
        return None
    spec, names = leaf.value, getattr(leaf.value, "names", None)
    if names is not None:  # a partitioning box (nn.Partitioned, nn.LogicallyPartitioned)
        spec = getattr(spec, "value", spec)
    note = ", ".join([str(leaf.label)] + ([repr(tuple(names))] if names else []))
    return f"{_table.describe_specs(spec)}  # {note}"


def _variable_lines(prefix: str, value: Any, path: str | None, subtree_renderer: Any) -> list:
    """One line per variable under ``value`` (nested dicts flattened into the prefix)."""
    if isinstance(value, dict):
        lines = []
        for key, leaf in value.items():
            lines += _variable_lines(f"{prefix}[{key!r}]", leaf, path, subtree_renderer)
        return lines
    spec = _abstract_spec(value)
    if spec is not None:
        text, note = spec.split("  # ", 1)
        return [
            rendering_parts.siblings(
                rendering_parts.text(f"{prefix}: {text}"),
                rendering_parts.comment_color(rendering_parts.text(f"  # {note}")),
            )
        ]
    child_path = None if path is None else f"{path}.{prefix}"
    return [
        rendering_parts.siblings_with_annotations(
            f"{prefix}: ", subtree_renderer(value, path=child_path)
        )
    ]


def _scope_data(obj: Any, name: str, path: str | None, subtree_renderer: Any, style: Any) -> Any:
    """A converted call's own variables: collapsed, one line per variable.

    An abstract variable is one text line (spec, label, partitioning names): rendering each as
    a full penzai struct (variable, box, spec) was half of the time of rendering an 8B tree.
    Empty collections are left out.
    """
    child_path = None if path is None else f"{path}.{name}"
    children = []
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if isinstance(value, dict):
            children += _variable_lines(field.name, value, child_path, subtree_renderer)
        else:
            children.append(rendering_parts.text(f"{field.name}={value!r}"))
    return rendering_parts.build_foldable_tree_node_from_children(
        prefix=rendering_parts.siblings(
            style(name), rendering_parts.text(f"={type(obj).__name__}(")
        ),
        children=children,
        suffix=")",
        comma_separated=True,
        expand_state=rendering_parts.ExpandState.COLLAPSED,
    )


def _render_node(
    node: Any,
    path: str | None,
    subtree_renderer: Any,
    *,
    label: str,
    note: str,
    background_color: str | None,
    expand_state: Any,
) -> Any:
    fields = dataclasses.fields(node)
    style = _field_name_style(fields)
    children: list[Any] = []
    for field in fields:
        value = getattr(node, field.name)
        child_path = None if path is None else f"{path}.{field.name}"
        if field.name == "submodule_calls":
            # One line per call, keyed as in the dict, shown expanded.
            children.append(
                rendering_parts.build_foldable_tree_node_from_children(
                    prefix=rendering_parts.siblings(style(field.name), "={"),
                    children=[
                        rendering_parts.siblings_with_annotations(
                            f"{key!r}: ", subtree_renderer(call, path=f"{child_path}[{key!r}]")
                        )
                        for key, call in value.items()
                    ],
                    suffix="}",
                    comma_separated=True,
                    expand_state=rendering_parts.ExpandState.EXPANDED,
                )
            )
        elif isinstance(value, str | int | bool | type(None)):
            # Written directly: treescope's handler chain for a scalar costs as much as a node.
            children.append(
                rendering_parts.siblings(style(field.name), "=", rendering_parts.text(repr(value)))
            )
        elif not field.metadata.get("pytree_node", True):
            children.append(_one_line(value, field.name, style))
        elif field.name == "scope_data":
            children.append(_scope_data(value, field.name, path, subtree_renderer, style))
        else:
            children.append(_collapsed_object(value, field.name, path, subtree_renderer))
    prefix = rendering_parts.siblings(
        rendering_parts.custom_style(rendering_parts.text(label), css_style=_LABEL_STYLE),
        rendering_parts.comment_color(rendering_parts.text(f"  # {note}")),
        rendering_parts.text(f"  {type(node).__name__}("),
    )
    return rendering_parts.build_foldable_tree_node_from_children(
        prefix=prefix,
        children=children,
        suffix=")",
        comma_separated=True,
        path=path,
        background_color=background_color,
        expand_state=expand_state,
    )


def render_call_layer(node: Any, path: str | None, subtree_renderer: Any) -> Any:
    """The treescope rendering of a ``FlaxCallLayer``."""
    info = node.info
    return _render_node(
        node,
        path,
        subtree_renderer,
        label=call_text(f"{info.path_str}.{node.method_name}", info.in_spec, info.out_spec),
        note=f"{type(node.module).__name__}, {_params_text(node)}",
        background_color=None,
        expand_state=rendering_parts.ExpandState.WEAKLY_EXPANDED,
    )


def render_replacement(node: Any, path: str | None, subtree_renderer: Any) -> Any:
    """The treescope rendering of a ``ReplacementLayer`` (marked, collapsed)."""
    replaced = node.replaced()
    return _render_node(
        node,
        path,
        subtree_renderer,
        label=call_text(replaced.label, replaced.info.in_spec, replaced.info.out_spec),
        note=f"{node.short_label()} ({node.summary_note()})",
        background_color=node.treescope_color(),
        expand_state=rendering_parts.ExpandState.COLLAPSED,
    )


def short_repr(node: Any) -> str:
    """``FlaxCallLayer(<root>.__call__: i32[1,16] -> f32[1,16,256], 12 calls, 2 mocked)``."""
    # The layer module imports this one: the classes are found by name, not imported.
    calls = replaced = 0
    stack = [node]
    while stack:
        layer = stack.pop()
        calls += 1
        if hasattr(layer, "replaced") and hasattr(layer, "run_replaced"):
            replaced += 1
        stack.extend(getattr(layer, "submodule_calls", {}).values())
    if hasattr(node, "replaced") and hasattr(node, "run_replaced"):
        call = node.replaced()
        label, info = call.label, call.info
    else:
        info = node.info
        label = f"{info.path_str}.{node.method_name}"
    text = call_text(label, info.in_spec, info.out_spec)
    return f"{type(node).__name__}({text}, {calls} calls, {replaced} replaced)"
