"""Hypothesis strategies for random small Flax linen module trees.

A model is described by a frozen, hashable spec (nested tuples) drawn by Hypothesis; a few
parametrised module classes interpret it, so no class is built with ``exec``. Specs cover:
nesting depth up to 3, ``@nn.compact`` and ``setup()`` style, Dense/LayerNorm/custom layers,
a module called twice, a module passed as an attribute to a sibling, helper methods calling
submodules (self-method calls), bfloat16 layers, int32 (argmax) and bool outputs, tuple/dict/
None/int output pytrees, and ``sow`` into ``"intermediates"``.

Every layer keeps the feature width ``WIDTH``, so any composition is well-typed.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from hypothesis import strategies as st

WIDTH = 3

# Leaf layers: ("dense", bf16: bool) | ("norm",) | ("scale",)  (a custom module with a param)
# Block: ("block", style, children, flags) with style "compact" | "setup" and flags a frozenset of
#   "sow", "twice" (first child called twice), "helper" (children called via a helper method),
#   "tuple_out" (returns (x, 3)), "dict_out" (returns {"h": x, "none": None}).
# Root: ("root", block, out_kind) with out_kind "array" | "tuple" | "dict" | "argmax" | "bool",
#   "shared" | "none".


class Scale(nn.Module):
    """A custom module with its own parameter."""

    @nn.compact
    def __call__(self, x):
        s = self.param("s", nn.initializers.ones, (x.shape[-1],))
        return x * s + 0.5


def make_leaf(spec: tuple, name: str | None = None) -> nn.Module:
    kind = spec[0]
    if kind == "dense":
        return nn.Dense(WIDTH, dtype=jnp.bfloat16 if spec[1] else None, name=name)
    if kind == "norm":
        return nn.LayerNorm(name=name)
    return Scale(name=name)


def make(spec: tuple, name: str | None = None, ext: nn.Module | None = None) -> nn.Module:
    if spec[0] == "block":
        cls = CompactBlock if spec[1] == "compact" else SetupBlock
        return cls(spec=spec, ext=ext, name=name)
    return make_leaf(spec, name)


def finish(block: nn.Module, x: Any) -> Any:
    """Sows and shapes a block's output as its flags say."""
    flags = block.spec[3]
    if "sow" in flags:
        block.sow("intermediates", "h", x)
    if "tuple_out" in flags:
        return x, 3
    if "dict_out" in flags:
        return {"h": x, "none": None}
    return x


def unwrap(out: Any) -> Any:
    """The array of a block's output (blocks may return a tuple or a dict)."""
    if isinstance(out, tuple):
        return out[0]
    if isinstance(out, dict):
        return out["h"]
    return out


class CompactBlock(nn.Module):
    spec: tuple
    ext: nn.Module | None = None  # A sibling's module, passed in as an attribute.

    def helper(self, layer, x):
        # A self-method call that calls a submodule: part of this block's layer.
        return unwrap(layer(x)) * 0.5 + x

    @nn.compact
    def __call__(self, x):
        _, _, children, flags = self.spec
        for i, child in enumerate(children):
            layer = make(child, name=f"c{i}")
            if "helper" in flags:
                x = self.helper(layer, x)
            else:
                x = unwrap(layer(x))
            if i == 0 and "twice" in flags:
                x = unwrap(layer(x))  # The same module instance, called again.
        if self.ext is not None:
            x = self.ext(x)
        return finish(self, x.astype(jnp.float32))


class SetupBlock(nn.Module):
    spec: tuple
    ext: nn.Module | None = None

    def setup(self):
        self.layers = [make(child) for child in self.spec[2]]

    def helper(self, i, x):
        return unwrap(self.layers[i](x)) * 0.5 + x

    def __call__(self, x):
        flags = self.spec[3]
        for i in range(len(self.layers)):
            x = self.helper(i, x) if "helper" in flags else unwrap(self.layers[i](x))
            if i == 0 and "twice" in flags:
                x = unwrap(self.layers[0](x))
        if self.ext is not None:
            x = self.ext(x)
        return finish(self, x.astype(jnp.float32))


class Root(nn.Module):
    """The model: one block, an optional shared module, and an output of some pytree shape."""

    spec: tuple

    @nn.compact
    def __call__(self, x):
        _, block, out_kind, shared = self.spec
        ext = nn.Dense(WIDTH, name="shared") if shared == "shared" else None
        if ext is not None:
            x = ext(x)  # The owner calls it too; the block calls it as an attribute.
        h = unwrap(make(block, name="body", ext=ext)(x))
        if out_kind == "tuple":
            return h, None, 7
        if out_kind == "dict":
            return {"h": h, "n": 2}
        if out_kind == "argmax":
            return {"logits": h, "ids": jnp.argmax(h, -1)}
        if out_kind == "bool":
            return h > 0, h.astype(jnp.bfloat16)
        return h


LEAVES = st.one_of(
    st.tuples(st.just("dense"), st.booleans()),
    st.just(("norm",)),
    st.just(("scale",)),
)
FLAGS = st.frozensets(st.sampled_from(["sow", "twice", "helper", "tuple_out", "dict_out"])).map(
    lambda f: f - {"dict_out"} if "tuple_out" in f else f
)


def blocks(depth: int) -> st.SearchStrategy[tuple]:
    child = LEAVES if depth <= 1 else st.one_of(LEAVES, blocks(depth - 1))
    return st.tuples(
        st.just("block"),
        st.sampled_from(["compact", "setup"]),
        st.lists(child, min_size=1, max_size=3).map(tuple),
        FLAGS,
    )


models = st.tuples(
    st.just("root"),
    blocks(3),
    st.sampled_from(["array", "tuple", "dict", "argmax", "bool"]),
    st.sampled_from(["shared", "none"]),
)
