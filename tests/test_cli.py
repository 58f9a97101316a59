"""``flaxmock summary`` on the command line: targets, specs, formats and every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import flaxmock
from flaxmock import _cli
from flaxmock._core import table as _table
from flaxmock.examples import llama

FACTORY = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, flax.linen as nn
    from flax import nnx
    import flaxmock.nnx

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, *, scale=None):
            h = nn.Dense(8, use_bias=False, name="up")(x)
            if scale is not None:
                h = h * scale
            return nn.Dense(2, use_bias=False, name="down")(jax.nn.relu(h))

    def make():
        return Net(), (jax.ShapeDtypeStruct((4, 3), jnp.float32),)

    def bare():
        return Net()

    def keywords():
        return Net(), {"x": jax.ShapeDtypeStruct((4, 3), jnp.float32)}

    def nnx_model():
        model = flaxmock.nnx.abstract(nnx.Linear, 3, 5, use_bias=False, rngs=nnx.Rngs(0))
        return model, jax.ShapeDtypeStruct((4, 3), jnp.float32)

    def broken():
        raise RuntimeError("no weights here")

    def wrong():
        return 42

    NOT_CALLABLE = 3
    """
)


@pytest.fixture
def target(tmp_path: Path) -> str:
    path = tmp_path / "models.py"
    path.write_text(FACTORY)
    return str(path)


def test_file_target_text_with_flops(target, capsys):
    assert _cli.main(["summary", f"{target}:make", "--flops"]) == 0
    out = capsys.readouterr().out
    assert "up" in out and "down" in out and "flops" in out
    table = _cli.summarize(f"{target}:make", flops=True)
    assert table.rows[1].flops == 2 * 4 * 3 * 8
    assert table.total_flops == 2 * 4 * 3 * 8 + 4 * 8 + 2 * 4 * 8 * 2


def test_inputs_replace_the_factory_s_and_keywords(target):
    table = _cli.summarize(f"{target}:bare", ["f32[6,3]"], flops=True)
    assert table.rows[0].inputs[0][0] == jax.ShapeDtypeStruct((6, 3), jnp.float32)
    table = _cli.summarize(f"{target}:make", ["x=bf16[2,3]", "scale=f32[]"])
    assert table.rows[0].inputs[1]["scale"] == jax.ShapeDtypeStruct((), jnp.float32)
    table = _cli.summarize(f"{target}:keywords")
    assert table.rows[0].inputs[1]["x"].shape == (4, 3)


def test_nnx_target(target):
    table = _cli.summarize(f"{target}:nnx_model", flops=True, depth=0)
    assert table.rows[0].module_type == "Linear" and table.total_flops == 2 * 4 * 3 * 5


def test_json_and_html_output_files(target, tmp_path):
    out = tmp_path / "s.json"
    args = ["summary", f"{target}:make", "--vjp-flops", "--format", "json", "--output", str(out)]
    assert _cli.main(args) == 0
    data = json.loads(out.read_text())
    assert [r["path"] for r in data["rows"]] == ["<root>", "up", "down"]
    assert data["total_vjp_flops"] == sum(r["vjp_flops"] for r in data["rows"])
    html = tmp_path / "s.html"
    assert _cli.main(["summary", f"{target}:make", "--format", "html", "--output", str(html)]) == 0
    assert "<table>" in html.read_text() and "position: sticky" in html.read_text()


def test_bundled_example_with_mesh_and_rules():
    rules = ",".join(f"{k}={v or ''}" for k, v in llama.RULES)
    table = _cli.summarize(
        "flaxmock.examples.llama:tiny", flops=True, mesh="data=2,model=4", rules=rules, depth=1
    )
    assert max(r.depth for r in table.rows) == 1
    assert table.total_flops == table.rows[0].subtree_flops > 0
    assert 0 < table.max_device_param_bytes < table.total_bytes


def test_console_entry_point_runs_the_bundled_example():
    proc = subprocess.run(
        [sys.executable, "-m", "flaxmock", "summary", "flaxmock.examples.llama:tiny", "--depth=0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("Llama\n#  path")


def test_help_describes_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        _cli.main(["summary", "--help"])
    text = capsys.readouterr().out
    for option in ("--input", "--flops", "--vjp-flops", "--depth", "--mesh", "--rules"):
        assert option in text
    for default in ("(default: none)", "(default: off)", "(default: text)", "default: keep all"):
        assert default in text
    assert "\x1b[" not in text  # plain text


@pytest.mark.parametrize(
    "args,error,match",
    [
        (["no_colon"], flaxmock.LoadTargetError, r"does not name a factory. Expected package"),
        (["not_a_module_xyz:make"], flaxmock.LoadTargetError, r"cannot import 'not_a_module_xyz'"),
        (["missing/file.py:make"], flaxmock.LoadTargetError, r"no file 'missing/file.py'"),
        ([":missing"], flaxmock.LoadTargetError, r"'missing' does not exist in .*Callables there"),
        ([":NOT_CALLABLE"], flaxmock.LoadTargetError, r"'NOT_CALLABLE' is not callable"),
        ([":broken"], flaxmock.CallFactoryError, r"raised RuntimeError: no weights here"),
        ([":wrong"], flaxmock.CallFactoryError, r"returned int: 42. Expected a flax.linen"),
        ([":bare"], flaxmock.CallFactoryError, r"without example inputs. Fix: .*--input"),
        ([":make", "int32(1,2)"], flaxmock.ParseSpecError, r"'int32\(1,2\)' is not an array spec"),
        ([":make", "floaty[2]"], flaxmock.ParseSpecError, r"'floaty\[2\]' is not an array spec"),
    ],
)
def test_bad_inputs_raise_clear_errors(target, args, error, match):
    name = args[0] if not args[0].startswith(":") else f"{target}{args[0]}"
    with pytest.raises(error, match=match):
        _cli.summarize(name, args[1:])


def test_bad_mesh_and_rules(target):
    with pytest.raises(flaxmock.ParseSpecError, match=r"--mesh 'data:2' is not a mesh"):
        _cli.summarize(f"{target}:make", mesh="data:2")
    with pytest.raises(flaxmock.ParseSpecError, match=r"--rules 'embed' is not a list of rules"):
        _cli.summarize(f"{target}:make", rules="embed")


def test_a_target_file_that_raises(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("raise ImportError('missing dependency')\n")
    with pytest.raises(flaxmock.LoadTargetError, match="running .*bad.py raised ImportError"):
        _cli.summarize(f"{path}:make")


def test_errors_exit_with_status_1_and_a_message(target, capsys):
    assert _cli.main(["summary", f"{target}:broken"]) == 1
    assert "flaxmock summary: error: TARGET" in capsys.readouterr().err


def test_top_level_and_demo_help_are_plain_text_with_defaults(capsys):
    with pytest.raises(SystemExit):
        _cli.main(["--help"])
    top = capsys.readouterr().out
    assert "summary" in top and "demo" in top
    with pytest.raises(SystemExit):
        _cli.main(["demo", "--help"])
    demo = capsys.readouterr().out
    for option, default in (("--size", "8b"), ("--seq-len", "16"), ("--rows", "40")):
        assert option in demo and f"(default: {default})" in demo
    for text in (top, demo):
        assert "``" not in text and ":func:" not in text and "\x1b[" not in text  # no reST


def test_demo_prints_sizes_in_sensible_units(capsys):
    assert _cli.main(["demo", "--size", "tiny", "--seq-len", "4", "--rows", "3"]) == 0
    out = capsys.readouterr().out
    model = llama.Llama(llama.LlamaConfig.tiny())
    tree = flaxmock.unflaxify(model, jax.ShapeDtypeStruct((1, 4), jnp.int32))
    total = flaxmock.summary(tree).total_bytes
    assert total < 2**20  # the tiny example is under a MiB: GiB would read 0.00
    assert "0.00 GiB" not in out
    assert f"({_table.format_bytes(total)}) described" in out
