"""How converted trees read: the short plain repr, treescope's rendering, penzai's tools on it."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import treescope
from penzai import pz
from penzai.toolshed.unflaxify import ArgsAndKwargs

import flaxmock
from flaxmock.examples import llama


class Mlp(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3, name="down")(jax.nn.relu(nn.Dense(8, name="up")(x)))


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2, name="head")(Mlp(name="mlp")(x))


X = jax.ShapeDtypeStruct((4, 5), jnp.float32)


def _mocked():
    return flaxmock.mock(flaxmock.unflaxify(Net(), X), Mlp)


def test_plain_repr_of_the_8b_tree_is_short():
    tree = flaxmock.unflaxify(
        llama.Llama(llama.LlamaConfig.llama3_8b()), jax.ShapeDtypeStruct((1, 16), jnp.int32)
    )
    text = repr(tree)
    assert len(text) < 300, text
    assert text.startswith("FlaxCallLayer(<root>.__call__: i32[1,16] -> ")
    calls = sum(1 for _ in flaxmock._linen.layer.iter_layers(tree))
    assert f", {calls} calls, 0 replaced)" in text


def test_plain_repr_counts_the_mocks():
    assert repr(_mocked()) == (
        "FlaxCallLayer(<root>.__call__: f32[4,5] -> f32[4,2], 3 calls, 1 replaced)"
    )


def test_collapsed_rendering_shows_calls_and_marks_the_mock():
    # Text rendering with everything collapsed to its first line: what a closed tree shows.
    with treescope.using_expansion_strategy(max_height=1):
        text = treescope.render_to_text(_mocked())
    assert text.startswith("<root>.__call__: f32[4,5] -> f32[4,2]  # Net, ")
    assert "mlp.__call__: f32[4,5] -> f32[4,3]  # mock of Mlp (mocked, 75 params not" in text
    expanded = treescope.render_to_text(_mocked())
    assert "head.__call__: f32[4,3] -> f32[4,2]  # Dense, 8 params (32 B, abstract)" in expanded


def test_html_rendering_marks_the_mock():
    html = treescope.render_to_html(_mocked(), compressed=False)
    assert "# mock of Mlp (mocked, 75 params not allocated)" in html
    assert "mlp.__call__: f32[4,5] -&gt; f32[4,3]" in html


def test_parameters_summarized_as_real_after_materialize():
    tree = flaxmock.materialize(flaxmock.unflaxify(Net(), X), jax.random.key(0))
    text = treescope.render_to_text(tree)
    # up: 5*8+8, down: 8*3+3, head: 3*2+2 = 48 + 27 + 8.
    assert "# Net, 83 params (332 B, real)" in text


def test_no_object_ids_in_labels_or_rendering():
    a, b = _mocked(), _mocked()
    (counter,) = [v for v in pz.unbind_state_vars(a)[1]]
    assert counter.label == "flaxmock.counter:mlp.__call__@0:mlp.__call__"
    # Two trees built alike render alike: nothing depends on where objects live.
    assert treescope.render_to_text(a) == treescope.render_to_text(b)
    # The only addresses left are those of the user's functions in module configs.
    text = re.sub(r"<function \S+ at 0x[0-9a-f]+>", "<function>", treescope.render_to_text(a))
    assert not re.search(r"0x[0-9a-f]{6,}", text)


def _real_mocked():
    return flaxmock.materialize(_mocked(), jax.random.key(0))


def test_penzai_tools_still_work_on_a_mocked_tree():
    mocked = _real_mocked()
    x = jnp.ones((4, 5))
    layers = pz.select(mocked).at_instances_of(flaxmock.MockLayer).get_sequence()
    assert [type(layer.module) for layer in layers] == [Mlp]
    unbound, variables = pz.unbind_state_vars(mocked)
    assert [v.label for v in variables] == ["flaxmock.counter:mlp.__call__@0:mlp.__call__"]
    # A call advances the mock's counter: the rebound tree's first call matches a fresh one's.
    expected = flaxmock.call(_real_mocked(), x)
    bound = pz.bind_variables(unbound, variables)
    np.testing.assert_array_equal(flaxmock.call(bound, x), expected)
    # variable_jit: the same numbers as the eager call of a fresh tree; jitting a second tree
    # mocked alike reuses the trace (labels do not change per mock).
    fresh = _real_mocked()
    out = pz.variable_jit(lambda t, x: t(ArgsAndKwargs((x,), {})))(fresh, x)
    np.testing.assert_array_equal(out, expected)


def test_static_metadata_renders_on_one_line_with_scalar_fields():
    tree = flaxmock.unflaxify(Net(), X)
    text = treescope.render_to_text(tree, ignore_exceptions=False)
    lines = text.splitlines()
    module_lines = [line.strip() for line in lines if line.strip().startswith("module=")]
    # The root, mlp, up, down and head layers: each module on one line, its scalars shown.
    assert len(module_lines) == 2  # the root and mlp; the leaf layers fit on one line each
    assert "module=Dense(features=2, use_bias=True," in text
    assert all(line.rstrip(",").endswith(")") for line in module_lines)
    info_lines = [line.strip() for line in lines if line.strip().startswith("info=CallInfo(")]
    assert info_lines and all("in_spec" not in line for line in info_lines)
    # An abstract parameter is one line: its key, spec and label (nothing else to show).
    assert "parameters['kernel']: f32[3,2]  # params/head/kernel" in text
    assert "ShapeDtypeStruct" not in text


def test_real_parameters_render_in_full_as_penzai_renders_them():
    tree = flaxmock.unflaxify(Net(), X)
    variables = Net().init(jax.random.key(0), jnp.ones(X.shape))
    text = treescope.render_to_text(flaxmock.bind(tree, variables), ignore_exceptions=False)
    # A real value is left to treescope (array summaries, penzai's labels), not a spec line.
    assert "label='params/head/kernel'" in text
    assert "parameters['kernel']: f32[3,2]  #" not in text
    assert re.search(r"<jax\.Array float32\(3, 2\)", text) is not None
