"""Assembling the variables of a run: every un-mocked layer's own, in the root's coordinates.

A converted layer owns the variables of its module (``scope_data``); a run of a layer applies
its module once with the variables of every un-mocked layer below it, nested as Flax expects.
Replaced calls contribute only what their ``ReplacementLayer`` keeps (a mock's existing state,
tied parameters), and modules whose every call was replaced (by a replacement or any penzai
layer) are named so that their ``setup`` is skipped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax

from flaxmock._core import errors as _errors
from flaxmock._linen import variables as _vars
from flaxmock._linen.layer import FlaxCallLayer, ReplacementLayer, replaced_path

Path = tuple[str, ...]


def own_variables(
    layer: FlaxCallLayer, *, passthrough: bool = False
) -> Iterator[tuple[str, Path, Any, Any]]:
    """Yields ``(collection, relative path, value, variable)`` for each variable ``layer`` owns.

    ``variable`` is what the layer holds (a ``pz.Parameter``, ``pz.StateVariable`` or their
    frozen values; a plain value in ``immutable_variables`` of a hand-built layer), shared with
    every other layer that uses the same Flax variable. With ``passthrough``, also those it only
    holds to pass on (``CallInfo.passthrough``).
    """
    data = layer.scope_data
    if data is None:
        return
    skip = frozenset() if passthrough else layer.info.passthrough
    for name, param in data.parameters.items():
        if ("params", name) not in skip:
            yield "params", _vars.path_of(name), _vars.value_of(param), param
    for groups in (data.variables, data.immutable_variables):
        for col, entries in groups.items():
            for name, var in entries.items():
                if (col, name) not in skip:
                    yield col, _vars.path_of(name), _vars.value_of(var), var


def passed_through(layer: FlaxCallLayer) -> Iterator[tuple[str, Path, Any, Any]]:
    """Like :func:`own_variables`, the variables ``layer`` holds only to pass on."""
    if not layer.info.passthrough:
        return
    for col, path, value, var in own_variables(layer, passthrough=True):
        if (col, _vars.name_of(path)) in layer.info.passthrough:
            yield col, path, value, var


@dataclasses.dataclass
class Assembled:
    """The variables of the un-mocked layers under a root, in the root's coordinates."""

    variables: dict[str, Any]
    abstract: dict[str, list[str]]  # Layer path -> its variables that are still abstract.
    skip_setup: set[Path]  # Module paths with only replaced calls: their setup must not run.
    # ``{(collection, path): variable}``: the objects (``pz.Parameter``...) the converted
    # layers hold, whose values ``variables`` holds.
    objects: dict[tuple[str, Path], Any]
    # ``{(collection, path): variable}``: what the replacements keep (a mock's state, abstract
    # or not; tied parameters), whether ``include_kept`` put it in ``variables`` or not.
    kept: dict[tuple[str, Path], Any] = dataclasses.field(default_factory=dict)


def assemble(
    root: FlaxCallLayer, *, include_replaced: bool = False, include_kept: bool = False
) -> Assembled:
    """Collects the variables of every converted layer reachable from ``root``.

    With ``include_replaced``, replacements below ``root`` contribute the abstract variables of
    the call they replaced (to infer shapes through the original code). With ``include_kept``,
    they contribute the real values they keep (a mock's existing state, tied parameters), for
    a run; kept state that is still abstract (a tree converted without values and never given
    any) is left out, and the mock draws it.

    Paths are made relative to ``root``'s scope. A module from outside ``root``'s subtree (a
    shared module passed in as an attribute) is adopted by Flax, when ``root`` is applied on its
    own, by the module that holds it, under the name of the attribute that holds it (its own
    name when no attribute of the caller holds it), so it is placed there.
    """
    variables: dict[str, Any] = {}
    objects: dict[tuple[str, Path], Any] = {}
    kept_objects: dict[tuple[str, Path], Any] = {}
    abstract: dict[str, list[str]] = {}
    plain_paths: set[Path] = set()
    replaced_paths: set[Path] = set()
    remaps: list[tuple[Path, Path]] = [(root.info.scope_path, ())]

    def rel(path: Path) -> Path | None:
        best = None
        for src, dst in remaps:
            if path[: len(src)] == src and (best is None or len(src) > len(best[0])):
                best = (src, dst)
        return None if best is None else best[1] + path[len(best[0]) :]

    def visit(layer: FlaxCallLayer, caller: tuple[FlaxCallLayer, Path] | None = None) -> None:
        if layer.info.nested:
            # A nested ``module.apply`` brings its own variables; its paths are its own.
            return
        here = rel(layer.info.scope_path)
        if here is None:
            here = layer.info.scope_path[-1:]
            if caller is not None:
                attribute = _attribute_holding(caller[0].module, here[0])
                if attribute is not None:
                    here = (*caller[1], attribute)
            remaps.append((layer.info.scope_path, here))
        plain_paths.add(here)
        for col, path, value, var in own_variables(layer):
            _vars.set_in(variables.setdefault(col, {}), here + path, value)
            objects[(col, here + path)] = var
            if _is_abstract(value):
                abstract.setdefault(layer.path_str, []).append("/".join((col,) + path))
        for col, path, value, var in passed_through(layer):
            # Given but never read: passed on to Flax as given, unless abstract.
            if not any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(value)):
                _vars.set_in(variables.setdefault(col, {}), here + path, value)
                objects[(col, here + path)] = var
        for key, child in layer.submodule_calls.items():
            if isinstance(child, FlaxCallLayer):
                visit(child, (layer, here))
                continue
            if isinstance(child, ReplacementLayer) and child.replaced().info.nested:
                continue
            scope_path = replaced_path(layer, key, child)
            p = rel(scope_path)
            p = p if p is not None else scope_path[-1:]
            replaced_paths.add(p)
            if not isinstance(child, ReplacementLayer):
                continue
            for col, tree in child.kept_variables().items():
                for path, var in _vars.flatten(tree).items():
                    kept_objects[(col, p + path)] = var
                    # A mock keeps the variable objects (pz.Parameter...).
                    value = _vars.value_of(var)
                    if include_kept and not include_replaced and not _is_abstract(value):
                        _vars.set_in(variables.setdefault(col, {}), p + path, value)
            if include_replaced:
                for col, tree in child.abstract_variables().items():
                    for path, value in _vars.flatten(tree).items():
                        _vars.set_in(variables.setdefault(col, {}), p + path, value)

    visit(root)
    return Assembled(variables, abstract, replaced_paths - plain_paths, objects, kept_objects)


def _is_abstract(value: Any) -> bool:
    return any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(_vars.unbox(value)))


def _attribute_holding(module: Any, name: str) -> str | None:
    """The dataclass field of ``module`` that holds a submodule named ``name``, if any."""
    if not dataclasses.is_dataclass(module):
        return None
    for field in dataclasses.fields(module):
        if field.name in ("parent", "name"):
            continue
        value = getattr(module, field.name, None)
        if isinstance(value, nn.Module) and value.name == name:
            return field.name
    return None


def replacements_reachable(root: FlaxCallLayer) -> list[ReplacementLayer]:
    """Every :class:`ReplacementLayer` (a mock) that a run of ``root`` can dispatch."""
    found = []

    def visit(layer: FlaxCallLayer) -> None:
        for child in layer.submodule_calls.values():
            if isinstance(child, FlaxCallLayer):
                visit(child)
            elif isinstance(child, ReplacementLayer):
                found.append(child)

    visit(root)
    return found


def check_concrete(root: FlaxCallLayer, assembled: Assembled) -> None:
    if not assembled.abstract:
        return
    lines = [
        f"  {path}: {_errors.cut_list(names, 4)}" for path, names in assembled.abstract.items()
    ]
    raise _errors.AbstractParameterError(
        f"Cannot run {root.path_str}.{root.method_name}: these un-mocked layers still have "
        "abstract parameters (jax.ShapeDtypeStruct), which hold no values:\n"
        + "\n".join(lines)
        + "\nFix, for each: 1. mock it: flaxmock.mock(tree, where=...); 2. give it values: "
        "flaxmock.materialize(tree, key) or flaxmock.bind(tree, variables); or 3. only trace "
        "shapes: flaxmock.eval_shape(flaxmock.call, tree, *args)."
    )
