"""The command line: ``flaxmock summary`` (what a model costs) and ``flaxmock demo``.

``summary`` loads a model from a factory (``package.module:factory`` or
``path/to/file.py:factory``) returning a linen module, an NNX module, or a pair ``(module,
example_inputs)``, and prints its :func:`flaxmock.summary` (or :func:`flaxmock.nnx.summary`)
as text, JSON or HTML, with FLOPs and parameter bytes per device on request. Inputs are given
as specs (``int32[1,128]``), so nothing is allocated: it works on a 70B model on a laptop.

``demo`` converts the bundled Llama-style example abstractly, prints its per-call summary, mocks
every attention block and checks the mocked model's output shape, all without allocating a
single parameter.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import resource
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxmock._core import errors as _errors
from flaxmock._core import table as _table

_EXAMPLE_TARGET = "flaxmock.examples.llama:llama3_8b"

_SPEC = re.compile(r"^(?:(?P<name>[A-Za-z_]\w*)=)?(?P<dtype>[A-Za-z]\w*)\[(?P<shape>[\d,\s]*)\]$")

# Short dtype names (as the summary prints them) and NumPy's names.
_DTYPES = {
    "bool": jnp.bool_,
    "bf16": jnp.bfloat16,
    "f16": jnp.float16,
    "f32": jnp.float32,
    "f64": jnp.float64,
    "i8": jnp.int8,
    "i16": jnp.int16,
    "i32": jnp.int32,
    "i64": jnp.int64,
    "u8": jnp.uint8,
    "u16": jnp.uint16,
    "u32": jnp.uint32,
    "u64": jnp.uint64,
}


def _peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parse_input(text: str) -> tuple[str | None, jax.ShapeDtypeStruct]:
    """Parses ``int32[1,128]`` (or ``name=int32[1,128]``) into ``(name, spec)``.

    Raises:
      ParseSpecError: the text is not a spec.

    Examples:
      >>> parse_input("int32[1,128]")
      (None, ShapeDtypeStruct(shape=(1, 128), dtype=int32))
      >>> parse_input("mask=bool[]")
      ('mask', ShapeDtypeStruct(shape=(), dtype=bool))
    """
    match = _SPEC.match(text.strip())
    dtype = None
    if match is not None:
        name = match["dtype"]
        dtype = _DTYPES.get(name)
        if dtype is None:
            try:
                dtype = jnp.dtype(name)
            except TypeError:
                dtype = None
    if match is None or dtype is None:
        raise _errors.ParseSpecError(
            f"--input {text!r} is not an array spec. Expected DTYPE[SHAPE] such as "
            "int32[1,128], bf16[2,4096] or f32[] (a scalar), or NAME=DTYPE[SHAPE] for a "
            f"keyword argument (mask=bool[1,128]); DTYPE is a NumPy name (int32, bfloat16) or "
            f"a short one ({', '.join(_DTYPES)})."
        )
    shape = tuple(int(d) for d in match["shape"].replace(" ", "").split(",") if d)
    return match["name"], jax.ShapeDtypeStruct(shape, dtype)


def parse_mesh(text: str) -> dict[str, int]:
    """Parses ``data=2,model=4`` into ``{"data": 2, "model": 4}``.

    Raises:
      ParseSpecError: the text is not a mesh.

    Examples:
      >>> parse_mesh("data=2,model=4")
      {'data': 2, 'model': 4}
    """
    sizes: dict[str, int] = {}
    for part in text.split(","):
        name, eq, size = part.strip().partition("=")
        if not eq or not name.isidentifier() or not size.isdigit() or int(size) < 1:
            raise _errors.ParseSpecError(
                f"--mesh {text!r} is not a mesh: expected AXIS=SIZE pairs separated by commas, "
                f"such as data=2,model=4 (bad part: {part.strip()!r})."
            )
        sizes[name] = int(size)
    return sizes


def parse_rules(text: str) -> tuple[tuple[str, str | None], ...]:
    """Parses ``embed=data,mlp=model,layers=`` into logical axis rules (empty: replicated).

    Raises:
      ParseSpecError: the text is not a list of rules.

    Examples:
      >>> parse_rules("embed=data,layers=")
      (('embed', 'data'), ('layers', None))
    """
    rules = []
    for part in text.split(","):
        name, eq, axis = part.strip().partition("=")
        if not eq or not name.isidentifier() or (axis and not axis.isidentifier()):
            raise _errors.ParseSpecError(
                f"--rules {text!r} is not a list of rules: expected LOGICAL=MESH_AXIS pairs "
                "separated by commas, such as embed=data,mlp=model (LOGICAL= with nothing after "
                f"it: replicated) (bad part: {part.strip()!r})."
            )
        rules.append((name, axis or None))
    return tuple(rules)


def load_target(target: str) -> Callable[..., Any]:
    """Returns the factory named by ``package.module:factory`` or ``path/to/file.py:factory``.

    Raises:
      LoadTargetError: the module or file cannot be loaded, or has no such callable.
    """
    source, sep, attr = target.rpartition(":")
    if not sep or not source or not attr.isidentifier():
        raise _errors.LoadTargetError(
            f"TARGET {target!r} does not name a factory. Expected package.module:factory or "
            f"path/to/file.py:factory, e.g. {_EXAMPLE_TARGET}."
        )
    if source.endswith(".py") or "/" in source or "\\" in source:
        path = Path(source)
        if not path.is_file():
            raise _errors.LoadTargetError(
                f"TARGET {target!r}: no file {str(path)!r} (from {Path.cwd()}). Fix: give the "
                "path of a Python file, relative to the current directory or absolute."
            )
        spec = importlib.util.spec_from_file_location(f"_flaxmock_target_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise _errors.LoadTargetError(f"TARGET {target!r}: {path} is not a Python module.")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            raise _errors.LoadTargetError(
                f"TARGET {target!r}: running {path} raised {type(e).__name__}: {e}"
            ) from e
    else:
        try:
            module = importlib.import_module(source)
        except ImportError as e:
            raise _errors.LoadTargetError(
                f"TARGET {target!r}: cannot import {source!r} ({type(e).__name__}: {e}). Fix: "
                "install the package, run from the directory that holds it, or give the path "
                "of its file (path/to/file.py:factory)."
            ) from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        found = "is not callable" if hasattr(module, attr) else "does not exist"
        raise _errors.LoadTargetError(
            f"TARGET {target!r}: {attr!r} {found} in {source}. Callables there: "
            f"{', '.join(names[:20]) or 'none'}."
        )
    return factory


def call_factory(target: str, factory: Callable[..., Any]) -> tuple[Any, tuple, dict]:
    """Calls the factory; returns ``(module, args, kwargs)`` (no inputs: empty).

    Raises:
      CallFactoryError: the factory raised, or returned something else than a module or a
        ``(module, example_inputs)`` pair.
    """
    import flax.linen as nn
    from flax import nnx

    try:
        made = factory()
    except Exception as e:
        lines = traceback.format_exception_only(type(e), e)
        raise _errors.CallFactoryError(
            f"TARGET {target!r}: the factory raised {''.join(lines).strip()}. It is called with "
            "no arguments; fix it, or wrap it in one that takes none."
        ) from e
    module, inputs = made if isinstance(made, tuple) and len(made) == 2 else (made, None)
    if not isinstance(module, nn.Module | nnx.Module):
        raise _errors.CallFactoryError(
            f"TARGET {target!r}: the factory returned {type(made).__name__}: {made!r:.100}. "
            "Expected a flax.linen.Module, an nnx.Module, or a pair (module, example_inputs) "
            "whose inputs are a tuple of positional arguments, a dict of keyword arguments, "
            "or one array (arrays or jax.ShapeDtypeStruct)."
        )
    if inputs is None:
        return module, (), {}
    if isinstance(inputs, dict):
        return module, (), dict(inputs)
    if isinstance(inputs, list | tuple):
        return module, tuple(inputs), {}
    return module, (inputs,), {}


def _specs(tree: Any) -> Any:
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype) if hasattr(x, "dtype") else x,
        tree,
        is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct),
    )


def summarize(
    target: str,
    inputs: Sequence[str] = (),
    *,
    flops: bool = False,
    vjp_flops: bool = False,
    depth: int | None = None,
    mesh: str | None = None,
    rules: str | None = None,
) -> Any:
    """The :class:`~flaxmock.Summary` that ``flaxmock summary`` prints.

    Raises:
      LoadTargetError, CallFactoryError, ParseSpecError: see the option's help.
    """
    from flax import nnx

    import flaxmock

    factory = load_target(target)
    parsed = [parse_input(text) for text in inputs]
    sizes = parse_mesh(mesh) if mesh else None
    axis_rules = parse_rules(rules) if rules else None
    module, args, kwargs = call_factory(target, factory)
    if parsed:
        args = tuple(spec for name, spec in parsed if name is None)
        kwargs = {name: spec for name, spec in parsed if name is not None}
    if not args and not kwargs:
        raise _errors.CallFactoryError(
            f"TARGET {target!r}: the factory returned a module without example inputs. Fix: "
            "give them with --input (e.g. --input int32[1,128]), or return (module, inputs)."
        )
    args, kwargs = _specs(args), _specs(kwargs)
    options: dict[str, Any] = dict(
        flops=flops, vjp_flops=vjp_flops, mesh=sizes, rules=axis_rules, depth=depth
    )
    if isinstance(module, nnx.Module):
        return flaxmock.nnx.summary(module, *args, **options, **kwargs)
    tree = flaxmock.unflaxify(module, *args, **kwargs)
    return flaxmock.summary(tree, **options)


def demo(size: str = "8b", seq_len: int = 16, rows: int = 40) -> int:
    """Converts the example model at ``size`` abstractly and prints its summary."""
    import flax.linen as nn

    import flaxmock
    from flaxmock.examples import llama

    config = llama.LlamaConfig.preset(size)
    model = llama.Llama(config)
    tokens = jax.ShapeDtypeStruct((1, seq_len), jnp.int32)
    print(f"flaxmock demo: Llama-style decoder, preset {size!r}, tokens {tokens.shape}")
    start = time.perf_counter()
    tree = flaxmock.unflaxify(model, tokens)
    convert_s = time.perf_counter() - start
    table = flaxmock.summary(tree, title=f"Llama {size}")
    print(_summary_rows(table, rows))
    print(
        f"\nconverted in {convert_s:.2f} s; {table.total_params:,} parameters "
        f"({_table.format_bytes(table.total_bytes)}) described, none allocated; "
        f"peak RSS {_peak_rss_mib():.0f} MiB"
    )
    start = time.perf_counter()
    mocked = flaxmock.mock(tree, llama.Attention)
    mocked = flaxmock.mock(mocked, [llama.MLP, nn.Embed])
    out = flaxmock.eval_shape(flaxmock.call, mocked, tokens)
    print(
        f"every attention, MLP and embedding call mocked: output {out.shape} {out.dtype} "
        f"(eval_shape, {time.perf_counter() - start:.2f} s)"
    )
    return 0


def _summary_rows(table: object, limit: int) -> str:
    text = str(table)
    lines = text.splitlines()
    if limit <= 0 or len(lines) <= limit + 4:
        return text
    head = lines[: limit + 2]
    tail = lines[-2:]
    return "\n".join(head + [f"... ({len(lines) - limit - 4} more rows) ..."] + tail)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Plain text, every option's default shown, descriptions kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        default = action.default
        shown = "off" if default is False else "none" if default in (None, []) else "%(default)s"
        return f"{text} (default: {shown})"


_SUMMARY_EPILOG = f"""\
examples:
  flaxmock summary {_EXAMPLE_TARGET} --flops
  flaxmock summary flaxmock.examples.llama:llama3_70b --flops --vjp-flops --depth 1
  flaxmock summary flaxmock.examples.llama:llama3_70b_scan --mesh data=8,model=8 \\
      --rules vocab=model,embed=data,heads=model,kv_heads=model,mlp=model,layers=
  flaxmock summary models/my_model.py:make --input int32[1,128] --input mask=bool[1,128] \\
      --format json --output summary.json

TARGET's factory is called with no arguments. It returns a flax.linen.Module, an nnx.Module,
or a pair (module, example_inputs); example inputs are a tuple of positional arguments, a dict
of keyword arguments or one array, and --input replaces them. Arrays may be
jax.ShapeDtypeStruct: nothing is allocated (for NNX, build the model with
flaxmock.nnx.abstract). Errors exit with status 1.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flaxmock",
        description="Run, inspect and plot Flax models without their parameters.",
        formatter_class=_HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p_sum = sub.add_parser(
        "summary",
        help="print a model's calls, parameters and costs (FLOPs, bytes per device)",
        description=(
            "Print one row per module call of a Flax model: shapes, parameters, and on request\n"
            "FLOPs (forward and backward, scan-aware) and parameter bytes per device. The model\n"
            "is traced abstractly: nothing is computed, compiled or allocated."
        ),
        epilog=_SUMMARY_EPILOG,
        formatter_class=_HelpFormatter,
    )
    p_sum.add_argument(
        "target",
        metavar="TARGET",
        help="the model factory: package.module:factory or path/to/file.py:factory",
    )
    p_sum.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="SPEC",
        help=(
            "an input array spec, DTYPE[SHAPE] such as int32[1,128] (NAME=DTYPE[SHAPE] for a "
            "keyword argument); repeat for several; replaces the factory's example inputs"
        ),
    )
    p_sum.add_argument(
        "--flops", action="store_true", help="add forward FLOPs per call, its own and its subtree's"
    )
    p_sum.add_argument(
        "--vjp-flops",
        action="store_true",
        help="add backward-pass FLOPs per call (with the recompute of remat)",
    )
    p_sum.add_argument(
        "--depth",
        type=int,
        default=None,
        metavar="N",
        help="fold calls deeper than N into their callers (0: the root alone; default: keep all)",
    )
    p_sum.add_argument(
        "--mesh",
        default=None,
        metavar="AXIS=N,...",
        help="a device mesh, such as data=2,model=4: add parameter bytes per device",
    )
    p_sum.add_argument(
        "--rules",
        default=None,
        metavar="LOGICAL=AXIS,...",
        help=(
            "logical axis rules for logically partitioned parameters, such as "
            "embed=data,mlp=model (LOGICAL= for replicated)"
        ),
    )
    p_sum.add_argument(
        "--format",
        choices=["text", "json", "html"],
        default="text",
        help="the output format",
    )
    p_sum.add_argument(
        "--output",
        default=None,
        metavar="FILE",
        help="write the output to FILE instead of standard output",
    )
    p_demo = sub.add_parser(
        "demo",
        help="convert the bundled example model and summarise it",
        description="Convert the bundled Llama-style example abstractly and summarise it.",
        formatter_class=_HelpFormatter,
    )
    p_demo.add_argument(
        "--size", default="8b", choices=["tiny", "8b", "70b"], help="the example's preset"
    )
    p_demo.add_argument("--seq-len", type=int, default=16, help="tokens per sequence")
    p_demo.add_argument("--rows", type=int, default=40, help="rows to show (0: all)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flaxmock`` command and of ``python -m flaxmock``."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        return demo(args.size, args.seq_len, args.rows)
    try:
        table = summarize(
            args.target,
            args.input,
            flops=args.flops,
            vjp_flops=args.vjp_flops,
            depth=args.depth,
            mesh=args.mesh,
            rules=args.rules,
        )
    except _errors.FlaxmockError as e:
        print(f"flaxmock summary: error: {e}", file=sys.stderr)
        return 1
    if args.format == "json":
        text = table.to_json(indent=1)
    elif args.format == "html":
        text = table._repr_html_()
    else:
        text = str(table)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
