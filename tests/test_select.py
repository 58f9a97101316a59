"""The ``where`` grammar, one table run against both front ends.

Two models of the same shape, one linen and one NNX, have the same paths:

    enc            (Enc)        lin, mlp
    enc/mlp        (MLP)        lin, sub
    enc/mlp/sub    (Block)      lin
    blocks         a container: an nnx.List; a linen module never called itself
    blocks/0, blocks/1 (Block)  lin
    lin            (Dense / Linear)

Each row of ``TABLE`` is mocked with ``flaxmock.mock`` on the converted linen tree and with
``flaxmock.nnx.mock`` on the NNX model, and must select the same paths (the mocked model still
runs, with the real output's specs) or raise the same error class with the same message.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import flaxmock
import flaxmock.nnx as fnnx
from flaxmock._linen import layer as _layer
from flaxmock.nnx import _shapes as _nnx_shapes

X = jnp.ones((2, 3))

# --------------------------------------------------------------------------------------------
# The linen model.


class LBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3, name="lin")(x)


class LMLP(nn.Module):
    def setup(self):
        self.lin = nn.Dense(3)
        self.sub = LBlock()

    def __call__(self, x):
        return self.sub(self.lin(x))


class LEnc(nn.Module):
    def setup(self):
        self.lin = nn.Dense(3)
        self.mlp = LMLP()

    def __call__(self, x):
        return self.mlp(self.lin(x))


class LBlocks(nn.Module):
    """Holds the blocks; never called itself (the parent calls its items)."""

    def setup(self):
        self.items = [LBlock(name="0"), LBlock(name="1")]


class LNet(nn.Module):
    def setup(self):
        self.enc = LEnc()
        self.blocks = LBlocks()
        self.lin = nn.Dense(2)

    def __call__(self, x):
        x = self.enc(x)
        for block in self.blocks.items:
            x = block(x)
        return self.lin(x)


# --------------------------------------------------------------------------------------------
# The NNX model.


class NBlock(nnx.Module):
    def __init__(self, rngs):
        self.lin = nnx.Linear(3, 3, rngs=rngs)

    def __call__(self, x):
        return self.lin(x)


class NMLP(nnx.Module):
    def __init__(self, rngs):
        self.lin = nnx.Linear(3, 3, rngs=rngs)
        self.sub = NBlock(rngs)

    def __call__(self, x):
        return self.sub(self.lin(x))


class NEnc(nnx.Module):
    def __init__(self, rngs):
        self.lin = nnx.Linear(3, 3, rngs=rngs)
        self.mlp = NMLP(rngs)

    def __call__(self, x):
        return self.mlp(self.lin(x))


class NNet(nnx.Module):
    def __init__(self, rngs):
        self.enc = NEnc(rngs)
        self.blocks = nnx.List([NBlock(rngs), NBlock(rngs)])
        self.lin = nnx.Linear(3, 2, rngs=rngs)

    def __call__(self, x):
        x = self.enc(x)
        for block in self.blocks:
            x = block(x)
        return self.lin(x)


# --------------------------------------------------------------------------------------------
# The two sides.


@dataclasses.dataclass(frozen=True)
class Side:
    name: str
    Linear: type
    Block: type
    other_linear: type
    instance: Any
    module_of: Callable[[Any], Any]  # the module of what a one-argument predicate gets
    mock: Callable[[Any], list[str]]  # where -> the mocked paths, sorted


def _linen_mock(where):
    model = LNet()
    tree = flaxmock.unflaxify(model, X)
    mocked = flaxmock.mock(tree, where)
    out = flaxmock.eval_shape(flaxmock.call, mocked, X)
    real = jax.eval_shape(model.apply, jax.eval_shape(model.init, jax.random.key(0), X), X)
    assert (out.shape, out.dtype) == (real.shape, real.dtype)
    return sorted(
        "/".join(layer.info.scope_path)
        for _, layer in _layer.iter_layers(mocked)
        if isinstance(layer, flaxmock.MockLayer)
    )


def _nnx_mock(where):
    model = NNet(nnx.Rngs(0))
    mocked = fnnx.mock(model, where)
    out = mocked(X)
    real = model(X)
    assert (out.shape, out.dtype) == (real.shape, real.dtype)
    return sorted(
        "/".join(str(k) for k in path)
        for path, module in _nnx_shapes.iter_module_paths(mocked)
        if isinstance(module, fnnx.MockModule)
    )


LINEN = Side(
    name="linen",
    Linear=nn.Dense,
    Block=LBlock,
    other_linear=nnx.Linear,
    instance=nn.Dense(3),
    module_of=lambda layer: layer.module,
    mock=_linen_mock,
)
NNX = Side(
    name="nnx",
    Linear=nnx.Linear,
    Block=NBlock,
    other_linear=nn.Dense,
    instance=nnx.Linear(3, 3, rngs=nnx.Rngs(0)),
    module_of=lambda module: module,
    mock=_nnx_mock,
)

LINS = ["blocks/0/lin", "blocks/1/lin", "enc/lin", "enc/mlp/lin", "enc/mlp/sub/lin", "lin"]
BLOCKS = ["blocks/0", "blocks/1", "enc/mlp/sub"]


def _raises_on_enc_lin(path, module):
    if path == "enc/lin":
        raise ZeroDivisionError("the predicate failed")
    return False


@dataclasses.dataclass(frozen=True)
class Row:
    where: Callable[[Side], Any]
    paths: list[str] | None = None
    error: type[BaseException] | None = None
    match: str = ""


TABLE = {
    # Classes, subclasses included.
    "class": Row(lambda s: s.Linear, LINS),
    "user_class": Row(lambda s: s.Block, BLOCKS),
    # Globs: `**` spans zero or more segments, `*` stays within one.
    "**/x": Row(lambda s: "**/lin", LINS),
    "a/**/b": Row(lambda s: "enc/**/lin", ["enc/lin", "enc/mlp/lin", "enc/mlp/sub/lin"]),
    "a/*/b": Row(lambda s: "enc/*/lin", ["enc/mlp/lin"]),
    "container/*/b": Row(lambda s: "blocks/*/lin", ["blocks/0/lin", "blocks/1/lin"]),
    "container/*": Row(lambda s: "blocks/*", ["blocks/0", "blocks/1"]),
    "char_class": Row(lambda s: "blocks/[1-9]", ["blocks/1"]),
    "x.method": Row(lambda s: "lin.__call__", ["lin"]),
    "x.method_glob": Row(lambda s: "**/sub.__call__", ["enc/mlp/sub"]),
    "root": Row(lambda s: "", [""]),
    "everything": Row(lambda s: "**", [""]),
    # Predicates: one argument gets the node, two get (path, module).
    "predicate_1": Row(lambda s: lambda node: isinstance(s.module_of(node), s.Block), BLOCKS),
    "predicate_2": Row(
        lambda s: lambda path, module: path.startswith("enc") and isinstance(module, s.Linear),
        ["enc/lin", "enc/mlp/lin", "enc/mlp/sub/lin"],
    ),
    # Lists and tuples: any element; the outermost of nested matches.
    "list": Row(lambda s: ["lin", s.Block], ["blocks/0", "blocks/1", "enc/mlp/sub", "lin"]),
    "tuple_nested": Row(lambda s: ("enc", "enc/lin"), ["enc"]),
    # Errors.
    "dead_list_element": Row(
        lambda s: ["lin", "nothing"],
        error=flaxmock.SelectNothingError,
        match=r"where=\['lin', 'nothing'\]\): the element 'nothing' selects no (layer|module) "
        r"of [LN]Net\.(.|\n)*1\. drop it from the list",
    ),
    "nothing": Row(
        lambda s: "enc/attn",
        error=flaxmock.SelectNothingError,
        match=r"where='enc/attn'\) selects no (layer|module) of [LN]Net\.(.|\n)*"
        r"Fix: 1\. use one of these paths: in a glob, '\*' and '\?' stay within one segment",
    ),
    "module_instance": Row(
        lambda s: s.instance,
        error=flaxmock.InvalidSelectorError,
        match=r"where=<a (Dense|Linear) instance>\): a module object is not a selector "
        r"(.|\n)*pass its class: where=(Dense|Linear)",
    ),
    "other_side_class": Row(
        lambda s: s.other_linear,
        error=flaxmock.InvalidSelectorError,
        match=r"is a flax\.(nnx|linen)\.Module subclass, and flaxmock(\.nnx)?\.mock selects "
        r"flax\.(linen|nnx)\.Modules(.|\n)*2\. for a model of the other kind, use flaxmock",
    ),
    "container_only": Row(
        lambda s: "blocks",
        error=flaxmock.SelectNothingError,
        match=r"where='blocks'\) selects only containers: blocks \((List|never called itself)\)"
        r"\. A container holds modules and is never replaced itself\. Fix: 1\. select its "
        r"elements: 'blocks/\*'\.",
    ),
    "container_and_others": Row(
        lambda s: "*",
        error=flaxmock.SelectContainerError,
        match=r"where='\*'\) selects blocks \((List|never called itself)\), a container: (.|\n)*"
        r"does not select its elements blocks/0(\.__call__)?, blocks/1(\.__call__)?, (.|\n)*"
        r"select them too: 'blocks/\*'",
    ),
    "predicate_raises": Row(
        lambda s: _raises_on_enc_lin,
        error=ZeroDivisionError,
        match=r"raised by the where predicate on enc/lin(\.__call__)? \((Dense|Linear)\)",
    ),
    "predicate_arity": Row(
        lambda s: lambda: True,
        error=flaxmock.InvalidSelectorError,
        match=r"a predicate takes one positional argument \(the (layer|module)\) or two "
        r"\(path, module\); its signature is <lambda>\(\)",
    ),
    "bad_glob": Row(
        lambda s: "/lin",
        error=flaxmock.InvalidSelectorError,
        match=r"where='/lin'\): a path glob has an empty segment",
    ),
    "bad_type": Row(
        lambda s: 3,
        error=flaxmock.InvalidSelectorError,
        match=r"where must be a Flax module class \((nn\.Dense|nnx\.Linear)\), a glob over "
        r"paths .*got int: 3",
    ),
    "empty_list": Row(
        lambda s: [], error=flaxmock.SelectNothingError, match=r"an empty list selects nothing"
    ),
}


def _normalised(message: str) -> str:
    """The message with the words that differ between the sides replaced."""
    for a, b in [
        ("flaxmock.nnx.mock", "flaxmock.mock"),
        ("module", "layer"),
        ("Modules that", "Layers that"),
        ("Linear", "Dense"),
        ("nnx.Dense", "nn.Dense"),
        ("never called itself", "List"),
        (" (on a tree from flaxmock.unflaxify)", ""),
        ("flax.nnx.", "flax.linen."),
        (".__call__", ""),
    ]:
        message = message.replace(a, b)
    return re.sub(r"\b[LN](Net|Enc|MLP|Block)\b", r"\1", message)


@pytest.mark.parametrize("row_id", list(TABLE))
def test_where_table_same_on_linen_and_nnx(row_id):
    row = TABLE[row_id]
    results = {}
    for side in (LINEN, NNX):
        if row.error is None:
            results[side.name] = side.mock(row.where(side))
            continue
        with pytest.raises(row.error, match=row.match) as info:
            side.mock(row.where(side))
        text = str(info.value) + "".join(getattr(info.value, "__notes__", []))
        results[side.name] = _normalised(text)
    if row.error is None:
        assert results["linen"] == row.paths, "linen"
        assert results["nnx"] == row.paths, "nnx"
    else:
        # The same message on both sides, but for the words of each (layer/module, class names).
        linen, nnx_ = results["linen"], results["nnx"]
        if row.error is flaxmock.InvalidSelectorError and row_id == "other_side_class":
            linen, nnx_ = (re.sub(r"flax\.\w+\.Module", "M", t) for t in (linen, nnx_))
        assert linen == nnx_


def test_close_matches_listed_first_on_both_sides():
    for side in (LINEN, NNX):
        with pytest.raises(flaxmock.SelectNothingError) as info:
            side.mock("blocks/0/lni")
        listed = str(info.value).split("\n")[1].strip()
        assert listed.startswith("blocks/0/lin"), side.name


def test_one_method_of_a_module_with_several():
    class LTied(nn.Module):
        def setup(self):
            self.embed = nn.Embed(10, 4)

        def __call__(self, tokens):
            return self.embed.attend(self.embed(tokens))

    class NTied(nnx.Module):
        def __init__(self, rngs):
            self.embed = nnx.Embed(10, 4, rngs=rngs)

        def __call__(self, tokens):
            return self.embed.attend(self.embed(tokens))

    tokens = jnp.array([[1, 2, 3]])
    # linen: a layer is one call, so one method can be mocked and the other stays real.
    tree = flaxmock.unflaxify(LTied(), tokens)
    mocked = flaxmock.mock(tree, "embed.attend")
    kinds = {key: type(layer).__name__ for key, layer in mocked.submodule_calls.items()}
    assert kinds == {(0, "embed.__call__"): "FlaxCallLayer", (1, "embed.attend"): "MockLayer"}
    # NNX: a mock replaces the whole module, so one method of two is an error, not a mock of both.
    model = NTied(nnx.Rngs(0))
    with pytest.raises(
        flaxmock.SelectMethodError,
        match=r"flaxmock\.nnx\.mock\(where='embed\.attend'\) selects the method\(s\) attend of "
        r"embed \(Embed\), but a mock of a module replaces all of its methods \(__call__, "
        r"attend\)(.|\n)*Fix: 1\. select the whole module: where='embed'",
    ):
        fnnx.mock(model, "embed.attend")
    # Every method named is the whole module.
    both = fnnx.mock(model, ["embed.attend", "embed.__call__"])
    assert isinstance(both.embed, fnnx.MockModule)
    assert both(tokens).shape == model(tokens).shape


def test_nnx_predicate_selecting_a_container_with_others_raises():
    model = NNet(nnx.Rngs(0))
    with pytest.raises(
        flaxmock.SelectContainerError,
        match=r"selects blocks \(List\), a container(.|\n)*its elements blocks/0, blocks/1",
    ):
        fnnx.mock(model, lambda path, module: path in ("blocks", "lin"))
    with pytest.raises(flaxmock.SelectContainerError, match=r"selects blocks \(List\)"):
        fnnx.mock(model, lambda module: isinstance(module, nnx.List | NEnc))
    # With all of its elements selected too, the container is simply walked into.
    everything = fnnx.mock(model, lambda path, module: path != "")
    assert isinstance(everything.blocks, nnx.List)
    assert all(isinstance(b, fnnx.MockModule) for b in everything.blocks)
    # An element that names only the container selects nothing, whatever the others select.
    with pytest.raises(
        flaxmock.SelectNothingError,
        match=r"the element 'blocks' selects only containers: blocks \(List\)",
    ):
        fnnx.mock(model, ["blocks", "blocks/*"])


def test_already_mocked_is_named_on_both_sides():
    tree = flaxmock.mock(flaxmock.unflaxify(LNet(), X), "lin")
    with pytest.raises(
        flaxmock.SelectNothingError,
        match=r"selects only layers that are already MockLayers: lin\.__call__\. Fix: "
        r"flaxmock\.unmock\(tree, where\) first",
    ):
        flaxmock.mock(tree, "lin")
    model = fnnx.mock(NNet(nnx.Rngs(0)), "lin")
    with pytest.raises(
        flaxmock.SelectNothingError, match=r"selects only modules that are already MockModules: lin"
    ):
        fnnx.mock(model, "lin")


def test_unmock_uses_the_grammar():
    tree = flaxmock.unflaxify(LNet(), X)
    mocked = flaxmock.mock(tree, ["blocks/*", "enc/**/lin"])
    partly = flaxmock.unmock(mocked, ["blocks/1", nn.Dense])
    left = sorted(
        "/".join(layer.info.scope_path)
        for _, layer in _layer.iter_layers(partly)
        if isinstance(layer, flaxmock.MockLayer)
    )
    assert left == ["blocks/0"]
    assert flaxmock.unmock(mocked) == tree
    with pytest.raises(
        flaxmock.SelectNothingError,
        match=r"flaxmock\.unmock\(where=\['blocks/1', 'lin'\]\): the element 'lin' selects only "
        r"layers that are not mocks \(FlaxCallLayers\): lin\.__call__",
    ):
        flaxmock.unmock(mocked, ["blocks/1", "lin"])


def test_setup_list_names_are_explained():
    class Seq(nn.Module):
        def setup(self):
            self.layers = [nn.Dense(3), nn.Dense(3)]

        def __call__(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    tree = flaxmock.unflaxify(Seq(), X)
    with pytest.raises(
        flaxmock.SelectNothingError,
        match=r"where='layers'\) selects no layer of Seq\. Flax names the modules of a list or "
        r"dict attribute \(and unnamed submodules\) 'name_<key>': 'layers_\*' selects "
        r"layers_0, layers_1\.",
    ):
        flaxmock.mock(tree, "layers")
    assert len(flaxmock.mock(tree, "layers_*").submodule_calls) == 2


def test_selector_for_penzai_uses_the_grammar():
    from penzai import pz

    tree = flaxmock.unflaxify(LNet(), X)
    count = lambda where: pz.select(tree).at_subtrees_where(flaxmock.selector(where)).count()  # noqa: E731
    assert count("enc/**/lin") == 3
    assert count("enc/*/lin") == 1
    assert count(["lin", LBlock]) == 4
    assert count(lambda path, module: path == "blocks/0") == 1
    with pytest.raises(flaxmock.InvalidSelectorError, match="a module object is not a selector"):
        flaxmock.selector(nn.Dense(3))
