"""The ``where`` grammar: which modules a mock replaces, the same on the linen and NNX sides.

``flaxmock.mock``, ``flaxmock.unmock``, ``flaxmock.selector`` and ``flaxmock.nnx.mock`` take a
``where`` in one of these forms:

* **A module class** (``nn.Dense`` on the linen side, ``nnx.Linear`` on the NNX side): every
  module that is an instance of it, subclasses included. A class of the other front end is an
  :class:`~flaxmock.InvalidSelectorError` saying so.
* **A glob over paths.** A path is the module's names from the root joined by ``/``
  (``"blocks/0/attn"``: Flax scope names on the linen side, attribute names and list indices on
  the NNX side). ``*`` and ``?`` never cross a ``/``; ``**`` as a whole segment matches zero or
  more segments (``"a/**/b"`` matches ``a/b``, ``a/x/b`` and ``a/x/y/b``; ``"**/b"`` matches
  ``b``; ``"**"`` matches every path); ``[...]`` is a character class, as in ``fnmatch``. The
  root's path is the empty string: ``""`` selects the root (``"*"`` selects the top-level
  modules, not the root). A trailing ``.method`` selects one method: ``"embed.attend"``,
  ``"lin.__call__"`` (``".__call__"`` for the root's).
* **A predicate.** A callable taking one positional argument gets the node (linen: the converted
  layer, with ``.module``, ``.method_name`` and ``.info``; NNX: the module); one taking two gets
  ``(path, module)`` (the path as above, ``""`` for the root). An exception it raises propagates
  with a note naming the path it raised on.
* **A list or tuple** of any of these: a module any element selects is selected. An element that
  selects nothing is a :class:`~flaxmock.SelectNothingError` naming that element.

Where a module and one of its descendants are both selected, the outer one is replaced.

Containers: an ``nnx.List``/``nnx.Dict`` holds modules and computes nothing, and so does a linen
module that is never called itself (its children are called from elsewhere, as in
``for block in self.blocks.items: x = block(x)``). A container is never replaced: a ``where``
that selects only containers is a :class:`~flaxmock.SelectNothingError` suggesting ``"name/*"``,
and one that selects a container but not all of its elements is a
:class:`~flaxmock.SelectContainerError`. On the linen side only a glob can name a container (a
class or predicate sees called modules only). Flax names the modules of a linen list or dict
attribute held in ``setup`` ``name_0``, ``name_1``: there ``"name_*"`` selects them, and a glob
naming ``name`` says so.

A module *instance* is not a selector: it is rejected with :class:`~flaxmock.InvalidSelectorError`
(pass its class or its path).

This module is front-end neutral: the front ends describe their modules as :class:`Candidate`
records and their vocabulary as a :class:`Front`, and call :func:`select` (or :func:`compile_where`
for a one-node predicate such as ``flaxmock.selector``).
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from flaxmock._core import errors as _errors

#: What ``where`` accepts (see the module docstring).
Where = type | str | Callable[..., Any] | Sequence[Any]

# How many selectable paths a SelectNothingError lists.
_SHOWN = 20


@dataclasses.dataclass(frozen=True)
class Front:
    """The words and module types of one front end, for selecting and for error messages.

    Attributes:
      module_type: The base class of this side's modules (``flax.linen.Module``).
      module_name: How to name it in messages (``"flax.linen.Module"``).
      example: A class to show in examples (``"nn.Dense"``).
      noun: What a selectable thing is called (``"layer"``, ``"module"``).
      other_type: The other front end's module base class.
      other_name: How to name it (``"flax.nnx.Module"``).
      other_call: The function that selects the other side's modules (``"flaxmock.nnx.mock"``).
    """

    module_type: type
    module_name: str
    example: str
    noun: str
    other_type: type
    other_name: str
    other_call: str


@dataclasses.dataclass(frozen=True, eq=False)
class Candidate:
    """One thing a ``where`` may select, described without front-end types.

    Attributes:
      path: The ``/``-joined path, ``""`` for the root.
      kind: The module's class name, for messages.
      module: The module (class selectors test it, two-argument predicates get it), or None
        for a container that is not a module object of its own (a never-called linen scope).
      node: What a one-argument predicate gets (linen: the layer; NNX: the module), or None
        when predicates do not see this candidate.
      method: The one method of a call (linen), or None when the candidate is a whole module.
      methods: For a whole module: the methods replacing it replaces (all of its methods).
      container: A container (see the module docstring): never replaced; ``path/*`` selects
        its elements.
      taken: Why the candidate cannot be selected now (``"already mocked"``), or None.
    """

    path: str
    kind: str
    module: Any = None
    node: Any = None
    method: str | None = None
    methods: tuple[str, ...] = ()
    container: bool = False
    taken: str | None = None

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("/")) if self.path else ()

    @property
    def label(self) -> str:
        """``path.method`` as messages show it (``<root>`` for the root's path)."""
        base = self.path or "<root>"
        return f"{base}.{self.method}" if self.method else base

    @property
    def method_names(self) -> tuple[str, ...]:
        return (self.method,) if self.method else self.methods


# What matching one candidate found: None (no match), _WHOLE, or the frozenset of the methods a
# `path.method` glob named.
_WHOLE: Any = object()


def _show(where: Any) -> str:
    """``where`` as messages show it: classes and functions by name, no addresses."""
    if isinstance(where, list | tuple):
        inner = ", ".join(_show(w) for w in where)
        return (
            f"[{inner}]"
            if isinstance(where, list)
            else f"({inner}{',' if len(where) == 1 else ''})"
        )
    if isinstance(where, type):
        return where.__name__
    if callable(where) and hasattr(where, "__qualname__"):
        return where.__qualname__.rpartition("<locals>.")[2]
    return f"{where!r:.80}"


class _Form:
    """One compiled ``where`` form."""

    def __init__(self, where: Any) -> None:
        self.where = where

    def match(self, c: Candidate) -> Any:
        raise NotImplementedError


class _Class(_Form):
    def match(self, c: Candidate) -> Any:
        return _WHOLE if c.module is not None and isinstance(c.module, self.where) else None


class _Glob(_Form):
    def __init__(self, where: str, call: str) -> None:
        super().__init__(where)
        self.parts = tuple(where.split("/")) if where else ()
        if any(not part for part in self.parts):
            raise _errors.InvalidSelectorError(
                f"{call}(where={_show(where)}): a path glob has an empty segment (a leading, "
                f"trailing or doubled '/'). Paths are relative to the root and never start with "
                "'/'. Fix: drop the extra '/' ('blocks/*/attn'); the root's path is ''."
            )

    def match(self, c: Candidate) -> Any:
        if _match_segments(self.parts, c.segments):
            return _WHOLE
        names = c.method_names
        if c.path:
            *head, last = c.segments
            found = {m for m in names if _match_segments(self.parts, (*head, f"{last}.{m}"))}
        elif len(self.parts) == 1 and self.parts[0].startswith("."):
            # The root's methods are named ``.method``; a glob must start with the dot to reach
            # them, so that ``*.__call__`` does not select the root.
            found = {m for m in names if fnmatch.fnmatchcase(f".{m}", self.parts[0])}
        else:
            found = set()
        return frozenset(found) if found else None


class _Predicate(_Form):
    def __init__(self, where: Callable[..., Any], front: Front, call: str) -> None:
        super().__init__(where)
        self.arity = _arity(where, front, call)

    def match(self, c: Candidate) -> Any:
        if c.node is None:
            return None
        try:
            result = self.where(c.node) if self.arity == 1 else self.where(c.path, c.module)
        except Exception as e:
            e.add_note(f"flaxmock: raised by the where predicate on {c.label} ({c.kind})")
            raise
        return _WHOLE if result else None


def _match_segments(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    """Whether a glob's segments match a path's: ``**`` spans segments, the rest one each."""
    memo: dict[tuple[int, int], bool] = {}

    def go(i: int, j: int) -> bool:
        if (i, j) not in memo:
            if i == len(pattern):
                memo[i, j] = j == len(path)
            elif pattern[i] == "**":
                memo[i, j] = go(i + 1, j) or (j < len(path) and go(i, j + 1))
            else:
                memo[i, j] = (
                    j < len(path) and fnmatch.fnmatchcase(path[j], pattern[i]) and go(i + 1, j + 1)
                )
        return memo[i, j]

    return go(0, 0)


def match_path(glob: str, path: str) -> bool:
    """Whether a ``/``-joined ``path`` matches ``glob`` (``*`` within a segment, ``**`` across)."""
    return _match_segments(
        tuple(glob.split("/")) if glob else (), tuple(path.split("/")) if path else ()
    )


def _arity(fn: Callable[..., Any], front: Front, call: str) -> int:
    """1 or 2: how many positional arguments a predicate takes (see the module docstring)."""
    name = getattr(fn, "__name__", type(fn).__name__)
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if params is not None:
        required = [p for p in params if p.kind in positional and p.default is p.empty]
        keyword = [p for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
        if len(required) in (1, 2) and not keyword:
            return len(required)
    found = "its signature cannot be read" if params is None else f"its signature is {name}"
    if params is not None:
        found += str(inspect.signature(fn))
    raise _errors.InvalidSelectorError(
        f"{call}(where={name}): a predicate takes one positional argument (the {front.noun}) or "
        f"two (path, module); {found}. Fix: write it as `lambda {front.noun}: ...` or "
        "`lambda path, module: ...`."
    )


def compile_where(
    where: Any, front: Front, *, call: str, candidates: Sequence[Candidate] = ()
) -> list[_Form]:
    """The forms of ``where``, one per element of a list (one for a single form).

    Args:
      where: The selector (see the module docstring).
      front: The front end's vocabulary.
      call: The public function, for messages (``"flaxmock.mock"``).
      candidates: The candidates, to name a module instance's path in the error.

    Raises:
      InvalidSelectorError: ``where`` (or an element) is not one of the forms.
    """
    if isinstance(where, list | tuple):
        return [
            form
            for element in where
            for form in compile_where(element, front, call=call, candidates=candidates)
        ]
    if isinstance(where, str):
        return [_Glob(where, call)]
    if isinstance(where, type):
        if issubclass(where, front.module_type):
            return [_Class(where)]
        if issubclass(where, front.other_type):
            raise _errors.InvalidSelectorError(
                f"{call}(where={where.__name__}): {where.__name__} is a {front.other_name} "
                f"subclass, and {call} selects {front.module_name}s. Fix: 1. select this "
                f"model's modules by their class ({front.example}), a path glob or a "
                f"predicate; 2. for a model of the other kind, use {front.other_call}."
            )
        raise _errors.InvalidSelectorError(
            f"{call}(where={where.__name__}): {where.__name__} is a class but not a "
            f"{front.module_name} subclass. Fix: pass a module class ({front.example}), a glob "
            f"over paths ('blocks/*/attn'), or a predicate `lambda {front.noun}: ...`."
        )
    if isinstance(where, front.module_type | front.other_type):
        kind = type(where).__name__
        paths = [repr(c.path) for c in candidates if c.module is where]
        path = f"where={paths[0]}" if paths else "its path as a glob ('blocks/0/attn')"
        raise _errors.InvalidSelectorError(
            f"{call}(where=<a {kind} instance>): a module object is not a selector (it would be "
            f"taken for a predicate and called). Fix: 1. pass its class: where={kind}; "
            f"2. pass {path}."
        )
    if callable(where):
        return [_Predicate(where, front, call)]
    raise _errors.InvalidSelectorError(
        f"{call}: where must be a Flax module class ({front.example}), a glob over paths "
        f"('blocks/*/attn', '**/lin', 'embed.attend'), a predicate (`lambda {front.noun}: ...` "
        "or `lambda path, module: ...`), or a list or tuple of these; got "
        f"{type(where).__name__}: {where!r:.80}."
    )


def select(
    where: Any,
    candidates: Sequence[Candidate],
    front: Front,
    *,
    call: str,
    subject: str,
    taken_fix: str = "",
) -> list[Candidate]:
    """The candidates ``where`` selects: not containers, not taken, in the given order.

    Outer-most-wins is left to the caller, who knows how its candidates nest.

    Args:
      where: The selector (see the module docstring).
      candidates: Everything that may be named, containers and taken ones included.
      front: The front end's vocabulary.
      call: The public function, for messages (``"flaxmock.mock"``).
      subject: What is selected in, for messages (the root module's class name).
      taken_fix: How to make a taken candidate selectable, for messages.

    Raises:
      InvalidSelectorError: ``where`` is not a selector.
      SelectNothingError: ``where`` (or one element of a list) selects nothing that can be
        replaced; the message lists the closest paths, the containers or the taken candidates
        it named instead.
      SelectContainerError: ``where`` selects a container but not all of its elements.
      SelectMethodError: a ``path.method`` glob names some methods of a module whose
        replacement replaces all of its methods.
    """
    forms = compile_where(where, front, call=call, candidates=candidates)
    if not forms:
        raise _errors.SelectNothingError(
            f"{call}(where={_show(where)}): an empty list selects nothing. Fix: list at least one "
            "class, glob or predicate."
        )
    live = [c for c in candidates if c.taken is None]
    matched: dict[int, Any] = {}
    for form in forms:
        found = {id(c): how for c in live if (how := form.match(c)) is not None}
        if not any(not c.container for c in live if id(c) in found):
            raise _nothing(
                where, form, len(forms) > 1, found, candidates, front, call, subject, taken_fix
            )
        for key, how in found.items():
            previous = matched.get(key)
            if previous is _WHOLE or how is _WHOLE:
                matched[key] = _WHOLE
            else:
                matched[key] = how | (previous or frozenset())
    _check_containers(where, matched, candidates, call)
    for c in live:
        how = matched.get(id(c))
        if how is not None and how is not _WHOLE and set(c.method_names) - how:
            raise _errors.SelectMethodError(
                f"{call}(where={_show(where)}) selects the method(s) {', '.join(sorted(how))} of "
                f"{c.label} ({c.kind}), but a mock of a {front.noun} replaces all of its methods "
                f"({', '.join(c.method_names)}): the others would return random values too. "
                f"Fix: 1. select the whole {front.noun}: where={c.path!r}, if every method may be "
                "mocked; 2. mock the code that calls the method instead."
            )
    return [c for c in live if not c.container and id(c) in matched]


def _children(candidates: Sequence[Candidate]) -> dict[str, list[Candidate]]:
    children: dict[str, list[Candidate]] = {}
    for c in candidates:
        if c.path:
            children.setdefault(c.path.rpartition("/")[0], []).append(c)
    return children


def _check_containers(
    where: Any, matched: dict[int, Any], candidates: Sequence[Candidate], call: str
) -> None:
    """Raises if ``where`` selects a container without all of its elements."""
    children = _children(candidates)
    replaced = [c.segments for c in candidates if id(c) in matched and not c.container]

    def covered(c: Candidate) -> bool:
        # Replaced, already replaced, or a container whose elements all are.
        if c.container:
            elements = children.get(c.path, [])
            return bool(elements) and all(covered(e) for e in elements)
        return c.taken is not None or id(c) in matched

    for c in candidates:
        if not c.container or id(c) not in matched or covered(c):
            continue
        if any(r == c.segments[: len(r)] for r in replaced):
            continue  # Inside a replaced module: nothing of it runs.
        left = [e.label for e in children.get(c.path, []) if not covered(e)]
        raise _errors.SelectContainerError(
            f"{call}(where={_show(where)}) selects {c.label} ({c.kind}), a container: it holds "
            "modules and is never replaced itself, and where does not select its elements "
            f"{_errors.cut_list(left, 8)}, so they would stay real. "
            f"Fix: 1. to mock its elements, select them too: {_elements_glob(c)!r} (in a list "
            "with the rest); 2. to leave them real, make where skip the container."
        )


def _elements_glob(c: Candidate) -> str:
    return f"{c.path}/*" if c.path else "*"


def _nothing(
    where: Any,
    form: _Form,
    in_list: bool,
    found: dict[int, Any],
    candidates: Sequence[Candidate],
    front: Front,
    call: str,
    subject: str,
    taken_fix: str,
) -> _errors.SelectNothingError:
    """The error for a form that selects nothing that can be replaced."""
    head = f"{call}(where={_show(where)})" + (
        f": the element {_show(form.where)}" if in_list else ""
    )
    fix_first = "1. drop it from the list, or " if in_list else "1. "
    containers = [c for c in candidates if id(c) in found]
    if containers:
        globs = _errors.cut_list([repr(_elements_glob(c)) for c in containers], 8)
        return _errors.SelectNothingError(
            f"{head} selects only containers: "
            + _errors.cut_list([f"{c.label} ({c.kind})" for c in containers], 8)
            + ". A container holds modules and is never replaced itself. Fix: "
            f"{fix_first}select its elements: {globs}."
        )
    taken = [c for c in candidates if c.taken is not None and _quiet_match(form, c)]
    if taken:
        return _errors.SelectNothingError(
            f"{head} selects only {front.noun}s that are {taken[0].taken}: "
            + _errors.cut_list([c.label for c in taken], 8)
            + (f". Fix: {taken_fix}." if taken_fix else ".")
        )
    selectable = [c for c in candidates if c.taken is None and not c.container]
    available: dict[str, str] = {}
    for c in selectable:
        available.setdefault(c.label, c.kind)
    close: list[str] = []
    if isinstance(form.where, str):
        # A glob naming a method is compared with ``path.method``, any other with the path.
        with_method = "." in form.where.rpartition("/")[2]
        labels: dict[str, list[str]] = {}
        for c in selectable:
            labels.setdefault(c.label if with_method else c.path or "<root>", []).append(c.label)
        for match in difflib.get_close_matches(form.where, list(labels), 10, 0.3):
            close += [label for label in labels[match] if label not in close]
    # The closest paths first, then the rest in alphabetical order.
    ordered = close + sorted(label for label in available if label not in close)
    shown = _errors.cut_list(
        [f"{label} ({available[label]})" for label in ordered], _SHOWN, sep="\n  "
    )
    hints = _setup_list_hint(form, selectable) if isinstance(form.where, str) else ""
    if isinstance(form.where, str) and "<root>" in form.where:
        hints += " The root's path is '' (messages show it as <root>)."
    return _errors.SelectNothingError(
        f"{head} selects no {front.noun} of {subject}.{hints} {front.noun.capitalize()}s that "
        f"can be selected:\n  {shown}\nFix: {fix_first}use one of these paths: in a glob, '*' "
        "and '?' stay within one segment, '**' spans segments ('**/attn', 'a/**/b'), "
        f"'.method' selects one method ('embed.attend'), '' is the root; 2. pass a module "
        f"class ({front.example}); 3. pass a predicate `lambda {front.noun}: ...` or "
        "`lambda path, module: ...`."
    )


def _quiet_match(form: _Form, c: Candidate) -> bool:
    # Only to word an error: a predicate that fails on a taken candidate simply did not match.
    try:
        return form.match(c) is not None
    except Exception:
        return False


def _setup_list_hint(form: _Form, selectable: Sequence[Candidate]) -> str:
    """A hint when a glob names ``name`` and the paths hold ``name_0``, ``name_1``.

    Flax names the modules of a list or dict attribute held in linen's ``setup`` (and unnamed
    submodules of one class) ``name_<key>``: there is no module at ``name`` itself.
    """
    if not isinstance(form, _Glob) or "**" in form.parts:
        return ""
    fixes: dict[str, list[str]] = {}
    for c in selectable:
        segments = c.segments
        if len(segments) != len(form.parts):
            continue
        for i, segment in enumerate(segments):
            base, sep, _ = segment.rpartition("_")
            if not sep or not base:
                continue
            alias = (*segments[:i], base, *segments[i + 1 :])
            if _match_segments(form.parts, alias):
                parts = list(form.parts)
                parts[i] = f"{parts[i]}_*"
                fixes.setdefault("/".join(parts), []).append(c.path)
    if not fixes:
        return ""
    glob, paths = next(iter(fixes.items()))
    return (
        f" Flax names the modules of a list or dict attribute (and unnamed submodules) "
        f"'name_<key>': {glob!r} selects {_errors.cut_list(paths, 4)}."
    )
