"""Tests of ``flaxmock.load`` / ``check_checkpoint`` (linen) and their ``flaxmock.nnx`` namesakes.

The oracle is ``module.apply`` with the variables the checkpoint was written from, and the
variables themselves; what was read is asserted on the readers (which entries Orbax was asked
to restore, which safetensors tensors were mapped), never on time.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from penzai import pz

import flaxmock
import flaxmock.nnx as fnnx
from flaxmock._core import checkpoint as _ckpt
from flaxmock.examples import llama
from helpers import NnxMLP, run_on_8_cpu_devices

CONFIG = dict(vocab_size=32, dim=8, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=16)
TOKENS = jnp.arange(6, dtype=jnp.int32).reshape(1, 6) % 32


def tiny(**overrides):
    return llama.Llama(llama.LlamaConfig.tiny(**{**CONFIG, **overrides}))


@pytest.fixture(scope="module")
def trained():
    """A tiny Llama (untied head) and its variables, as module.init gives them (unboxed)."""
    model = tiny(tie_embeddings=False)
    variables = nn_unbox(jax.jit(model.init)(jax.random.key(1), TOKENS))
    return model, variables


def nn_unbox(variables):
    import flax.linen as nn

    return nn.meta.unbox(variables)


def flat(variables, prefix=()):
    out = {}
    for k, v in variables.items():
        if isinstance(v, dict):
            out.update(flat(v, prefix + (k,)))
        else:
            out["/".join(prefix + (k,))] = v
    return out


def save_orbax(path, variables):
    ocp.PyTreeCheckpointer().save(path, variables)
    return path


SAFETENSORS_NAMES = {np.dtype(np.float32): "F32", np.dtype(jnp.bfloat16): "BF16"}


def write_safetensors(file, tensors):
    """A safetensors file as its specification lays it out (8-byte little-endian header length,
    JSON header, raw little-endian buffers), written without flaxmock's reader."""
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(np.asarray(array)).tobytes()
        header[name] = {
            "dtype": SAFETENSORS_NAMES[np.dtype(array.dtype)],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    head = json.dumps({"__metadata__": {"format": "np"}, **header}).encode()
    head += b" " * (-len(head) % 8)
    with open(file, "wb") as f:
        f.write(len(head).to_bytes(8, "little") + head + b"".join(blobs))
    return file


@pytest.fixture
def reads(monkeypatch):
    """Records what the readers are asked for: Orbax restore targets and safetensors tensors."""
    seen = {"orbax": [], "safetensors": [], "calls": 0}
    restore = ocp.PyTreeCheckpointer.restore

    def spy_restore(self, path, *args, **kwargs):
        seen["orbax"] += list(flat(kwargs["args"].item))
        return restore(self, path, *args, **kwargs)

    read_tensor = _ckpt.read_tensor

    def spy_tensor(file, offset, spec, sharding):
        array = read_tensor(file, offset, spec, sharding)
        seen["safetensors"].append((offset, spec))
        return array

    read = _ckpt.Checkpoint.read

    def count(cls_read):
        def wrapped(self, wanted):
            seen["calls"] += 1
            return cls_read(self, wanted)

        return wrapped

    monkeypatch.setattr(ocp.PyTreeCheckpointer, "restore", spy_restore)
    monkeypatch.setattr(_ckpt, "read_tensor", spy_tensor)
    for cls in (_ckpt.OrbaxCheckpoint, _ckpt.SafetensorsCheckpoint):
        monkeypatch.setattr(cls, "read", count(cls.read))
    del read
    return seen


def mock_all_but(tree, kept):
    return flaxmock.mock(
        tree, lambda layer: layer.info.scope_path in {("layers_0",), ("layers_1",)} - {kept}
    )


def unmocked_param_values(tree):
    return {p.label: np.asarray(nn_unbox(p.value)) for p in pz.unbind_params(tree)[1]}


# --------------------------------------------------------------------------------------------
# Orbax


def test_load_orbax_reads_only_the_unmocked_entries_and_gives_their_values(
    trained, tmp_path, reads
):
    model, variables = trained
    path = save_orbax(tmp_path / "ckpt", variables)
    tree = mock_all_but(flaxmock.unflaxify(model, TOKENS), ("layers_1",))
    loaded = flaxmock.load(tree, path)
    requested = set(reads["orbax"])
    want = {k for k in flat(variables) if not k.startswith("params/layers_0/")}
    assert requested == want
    assert not any("layers_0" in k for k in requested)
    values = unmocked_param_values(loaded)
    assert set(values) == want
    for label, value in values.items():
        np.testing.assert_array_equal(value, flat(variables)[label])
    # The un-mocked block computes as the same block of the real model.
    block = loaded.submodule_calls[(2, "layers_1.__call__")]
    h = jnp.ones((1, 6, 8))
    np.testing.assert_array_equal(
        flaxmock.call(block, h),
        llama.Block(model.config).apply({"params": variables["params"]["layers_1"]}, h),
    )


def test_load_orbax_unmocked_model_equals_module_apply(trained, tmp_path):
    model, variables = trained
    path = save_orbax(tmp_path / "ckpt", variables)
    loaded = flaxmock.load(flaxmock.unflaxify(model, TOKENS), path)
    np.testing.assert_array_equal(flaxmock.call(loaded, TOKENS), model.apply(variables, TOKENS))


def test_check_checkpoint_match_reads_no_array(trained, tmp_path, reads):
    model, variables = trained
    path = save_orbax(tmp_path / "ckpt", variables)
    report = flaxmock.check_checkpoint(flaxmock.unflaxify(model, TOKENS), path)
    assert report.ok
    assert report.matched == len(flat(variables))
    assert "matches" in str(report)
    assert reads["orbax"] == [] and reads["calls"] == 0


# --------------------------------------------------------------------------------------------
# Mismatches: the report, and load's error with nothing read.


def broken(variables, how):
    f = dict(flat(variables))
    if how == "shape":
        f["params/layers_1/mlp/up/kernel"] = np.zeros((8, 15), np.float32)
    elif how == "dtype":
        f["params/layers_1/attn/q/kernel"] = f["params/layers_1/attn/q/kernel"].astype(jnp.bfloat16)
    elif how == "missing":
        del f["params/layers_1/attn_norm/scale"]
    elif how == "extra":
        f["params/layers_1/attn/bias"] = np.zeros((8,), np.float32)
    out = {}
    for k, v in f.items():
        node = out
        *parents, leaf = k.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


@pytest.mark.parametrize(
    ("how", "field", "line"),
    [
        (
            "shape",
            "shape_mismatched",
            r"wrong shape: params/layers_1/mlp/up/kernel: expected "
            r"float32\[8, 16\], found float32\[8, 15\]",
        ),
        (
            "dtype",
            "dtype_mismatched",
            r"wrong dtype: params/layers_1/attn/q/kernel: expected "
            r"float32\[8, 8\], found bfloat16\[8, 8\]",
        ),
        (
            "missing",
            "missing",
            r"missing: params/layers_1/attn_norm/scale \(expected "
            r"float32\[8\]\)",
        ),
        ("extra", "unexpected", r"unexpected: params/layers_1/attn/bias \(float32\[8\]\)"),
    ],
)
def test_mismatch_is_reported_and_load_refuses(trained, tmp_path, reads, how, field, line):
    model, variables = trained
    path = save_orbax(tmp_path / "ckpt", broken(variables, how))
    tree = mock_all_but(flaxmock.unflaxify(model, TOKENS), ("layers_1",))
    report = flaxmock.check_checkpoint(tree, path)
    assert not report.ok
    assert len(getattr(report, field)) == 1
    assert getattr(report, field)[0][0].startswith("params/layers_1/")
    with pytest.raises(flaxmock.LoadCheckpointError, match=line) as raised:
        flaxmock.load(tree, path)
    assert raised.value.report == report
    assert "nothing was loaded" in str(raised.value)
    assert reads["calls"] == 0 and reads["orbax"] == []


def test_problems_of_mocked_layers_only_refused_unless_not_strict(trained, tmp_path):
    model, variables = trained
    bad = broken(variables, "extra")
    del bad["params"]["layers_0"]["mlp"]  # a mocked layer's entries, never read
    path = save_orbax(tmp_path / "ckpt", bad)
    tree = mock_all_but(flaxmock.unflaxify(model, TOKENS), ("layers_1",))
    with pytest.raises(flaxmock.LoadCheckpointError, match=r"4\) pass strict=False"):
        flaxmock.load(tree, path)
    loaded = flaxmock.load(tree, path, strict=False)
    assert set(unmocked_param_values(loaded)) >= {"params/layers_1/mlp/up/kernel"}
    # A problem with an entry that is read is refused even then.
    path2 = save_orbax(tmp_path / "ckpt2", broken(variables, "shape"))
    with pytest.raises(flaxmock.LoadCheckpointError, match="wrong shape"):
        flaxmock.load(tree, path2, strict=False)


def test_long_report_is_cut_in_the_error_but_not_in_the_report(trained, tmp_path):
    model, variables = trained
    extra = {f"old_{i}": np.zeros(1, np.float32) for i in range(5)}
    path = save_orbax(
        tmp_path / "ckpt", {"params": {"embed": variables["params"]["embed"], **extra}}
    )
    tree = flaxmock.unflaxify(model, TOKENS)
    report = flaxmock.check_checkpoint(tree, path)
    assert (len(report.missing), len(report.unexpected)) == (len(flat(variables)) - 1, 5)
    assert str(report).count("missing:") == len(report.missing)
    assert str(report).count("unexpected:") == 5
    with pytest.raises(flaxmock.LoadCheckpointError, match=r"\.\.\. and 5 more"):
        flaxmock.load(tree, path)


def test_scanned_checkpoint_against_unrolled_model_is_named(trained, tmp_path, reads):
    model, variables = trained
    params = dict(variables["params"])
    layers = [params.pop("layers_0"), params.pop("layers_1")]
    params["blocks"] = jax.tree.map(lambda *xs: np.stack(xs), *layers)
    path = save_orbax(tmp_path / "ckpt", {"params": params})
    unrolled = flaxmock.unflaxify(model, TOKENS)
    report = flaxmock.check_checkpoint(unrolled, path)
    assert [(x.stacked, x.unrolled, x.count, x.checkpoint_stacked) for x in report.layouts] == [
        ("params/blocks", "params/layers_{0..1}", 2, True)
    ]
    assert "the checkpoint stacks 2 layers" in str(report)
    with pytest.raises(flaxmock.LoadCheckpointError, match=r"layout: the checkpoint stacks 2"):
        flaxmock.load(unrolled, path)
    # And the other way round: the model scanned (nn.scan), the checkpoint unrolled.
    scanned = flaxmock.unflaxify(tiny(tie_embeddings=False, scan_layers=True), TOKENS)
    report2 = flaxmock.check_checkpoint(scanned, save_orbax(tmp_path / "ckpt2", variables))
    assert [x.checkpoint_stacked for x in report2.layouts] == [False]
    assert "the model stacks 2 layers" in str(report2)
    assert reads["calls"] == 0


# --------------------------------------------------------------------------------------------
# safetensors


def test_load_safetensors_reads_only_the_unmocked_tensors(trained, tmp_path, reads):
    model, variables = trained
    names = {k.removeprefix("params/").replace("/", "."): v for k, v in flat(variables).items()}
    file = write_safetensors(tmp_path / "model.safetensors", names)
    tree = mock_all_but(flaxmock.unflaxify(model, TOKENS), ("layers_0",))
    assert flaxmock.check_checkpoint(tree, file).ok
    loaded = flaxmock.load(tree, file)
    header = _ckpt.read_safetensors_header(str(file))
    by_offset = {offset: name for name, (offset, _) in header.items()}
    read = {by_offset[offset] for offset, _ in reads["safetensors"]}
    assert read == {n for n in names if not n.startswith("layers_1.")}
    for label, value in unmocked_param_values(loaded).items():
        np.testing.assert_array_equal(value, flat(variables)[label])


def test_load_sharded_safetensors_with_key_map(trained, tmp_path, reads):
    model, variables = trained
    # Hugging-Face-like names, split over two files with an index, and one buffer to skip.
    hf = {
        "model." + k.removeprefix("params/").replace("/", "."): v
        for k, v in flat(variables).items()
    }
    hf["model.rotary.inv_freq"] = np.ones(2, np.float32)
    items = sorted(hf.items())
    shards = {
        "a.safetensors": dict(items[: len(items) // 2]),
        "b.safetensors": dict(items[len(items) // 2 :]),
    }
    for name, tensors in shards.items():
        write_safetensors(tmp_path / name, tensors)
    weight_map = {n: f for f, tensors in shards.items() for n in tensors}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))

    def key_map(name):
        if name.endswith("inv_freq"):
            return None
        return "params/" + name.removeprefix("model.").replace(".", "/")

    tree = mock_all_but(flaxmock.unflaxify(model, TOKENS), ("layers_1",))
    report = flaxmock.check_checkpoint(tree, tmp_path, key_map=key_map)
    assert report.ok and report.ignored == ("model.rotary.inv_freq",)
    loaded = flaxmock.load(tree, tmp_path / "model.safetensors.index.json", key_map=key_map)
    assert len(reads["safetensors"]) == len([k for k in flat(variables) if "layers_0" not in k])
    for label, value in unmocked_param_values(loaded).items():
        np.testing.assert_array_equal(value, flat(variables)[label])
    # A dict key_map maps the names it holds; the others keep the default.
    renamed = {"model.norm.scale": "params/norm/scale"}
    report = flaxmock.check_checkpoint(tree, tmp_path, key_map=renamed)
    assert ("params/model/norm/scale", "float32[8]") not in report.unexpected
    assert any(p == "params/model/embed/embedding" for p, _ in report.unexpected)


def test_key_map_to_one_path_twice_raises(trained, tmp_path):
    model, variables = trained
    file = write_safetensors(
        tmp_path / "m.safetensors", {"a": np.ones(2, np.float32), "b": np.ones(2, np.float32)}
    )
    with pytest.raises(
        flaxmock.LoadCheckpointError, match=r"'a' and 'b', to the same model path 'params/x'"
    ):
        flaxmock.check_checkpoint(
            flaxmock.unflaxify(model, TOKENS), file, key_map=lambda n: "params/x"
        )


def test_bad_files_raise(trained, tmp_path):
    model, _ = trained
    tree = flaxmock.unflaxify(model, TOKENS)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((100).to_bytes(8, "little") + b"{}")
    with pytest.raises(
        flaxmock.LoadCheckpointError, match="header length .100 bytes. exceeds the file"
    ):
        flaxmock.check_checkpoint(tree, bad)
    with pytest.raises(flaxmock.LoadCheckpointError, match="does not exist"):
        flaxmock.load(tree, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(flaxmock.LoadCheckpointError, match="holds no checkpoint"):
        flaxmock.load(tree, tmp_path / "empty")


# --------------------------------------------------------------------------------------------
# NNX


def test_nnx_load_reads_only_unmocked_entries(tmp_path, reads):
    real = NnxMLP(rngs=nnx.Rngs(0))
    path = save_orbax(tmp_path / "ckpt", nnx.state(real))
    model = fnnx.mock(fnnx.abstract(NnxMLP, rngs=nnx.Rngs(5)), "layers/0")
    assert fnnx.check_checkpoint(model, path).ok
    loaded = fnnx.load(model, path)
    assert sorted(reads["orbax"]) == sorted(
        f"layers/{i}/{n}/value" for i in (1, 2) for n in ("bias", "kernel")
    )
    x = jnp.ones((2, 8))
    np.testing.assert_array_equal(
        loaded.layers[2](loaded.layers[1](x)), real.layers[2](real.layers[1](x))
    )


def test_nnx_full_model_equals_real(tmp_path):
    real = NnxMLP(rngs=nnx.Rngs(0))
    path = save_orbax(tmp_path / "ckpt", nnx.to_pure_dict(nnx.state(real)))
    loaded = fnnx.load(fnnx.abstract(NnxMLP, rngs=nnx.Rngs(5)), path)
    x = jnp.ones((2, 3))
    np.testing.assert_array_equal(loaded(x), real(x))


class _NnxBuffers(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, d: int = 4):
        self.lin = nnx.Linear(d, d, rngs=rngs)
        self.position_ids = jnp.arange(d)  # an array attribute: no checkpoint entry

    def __call__(self, x):
        return self.lin(x) + self.position_ids.astype(x.dtype)


def test_nnx_load_computes_array_attributes_as_the_constructor(tmp_path):
    # The checkpoint holds the parameters; the buffer gets the constructor's value (#19.11).
    real = _NnxBuffers(nnx.Rngs(0))
    path = save_orbax(tmp_path / "ckpt", nnx.to_pure_dict(nnx.state(real, nnx.Param)))
    rngs = nnx.Rngs(5)
    loaded = fnnx.load(fnnx.abstract(_NnxBuffers, rngs), path)
    x = jnp.ones((2, 4))
    np.testing.assert_array_equal(loaded(x), real(x))
    assert int(rngs.params.count[...]) == 0  # the factory's rngs are not advanced


@pytest.mark.parametrize(
    ("change", "line"),
    [
        (
            lambda d: d["layers"][1].update(kernel=np.zeros((8, 7), np.float32)),
            r"wrong shape: layers/1/kernel: expected float32\[8, 8\], found float32\[8, 7\]",
        ),
        (lambda d: d["layers"][1].pop("bias"), r"missing: layers/1/bias"),
        (
            lambda d: d["layers"][1].update(extra=np.zeros(1, np.float32)),
            r"unexpected: layers/1/extra",
        ),
    ],
)
def test_nnx_mismatch_is_reported_and_load_refuses(tmp_path, reads, change, line):
    state = nnx.to_pure_dict(nnx.state(NnxMLP(rngs=nnx.Rngs(0))))
    change(state)
    path = save_orbax(tmp_path / "ckpt", state)
    model = fnnx.mock(fnnx.abstract(NnxMLP, rngs=nnx.Rngs(5)), "layers/0")
    assert not fnnx.check_checkpoint(model, path).ok
    with pytest.raises(fnnx.LoadCheckpointError, match=line):
        fnnx.load(model, path)
    assert reads["calls"] == 0


def test_nnx_stacked_checkpoint_against_list_is_named(tmp_path):
    state = nnx.to_pure_dict(nnx.state(NnxMLP(din=8, rngs=nnx.Rngs(0))))
    # The first two layers stacked as nnx.vmap builds them, the last left as it is.
    stacked = {n: np.stack([state["layers"][i][n] for i in (0, 1)]) for n in ("kernel", "bias")}
    file = write_safetensors(
        tmp_path / "m.safetensors",
        {
            **{f"layers/{n}": v for n, v in stacked.items()},
            **{f"layers/2/{n}": v for n, v in state["layers"][2].items()},
        },
    )
    report = fnnx.check_checkpoint(fnnx.abstract(NnxMLP, din=8, rngs=nnx.Rngs(0)), file)
    # The two layers the model lacks are the two the checkpoint stacks.
    assert [(lay.stacked, lay.unrolled) for lay in report.layouts] == [("layers", "layers/{0..1}")]
    model = fnnx.abstract(NnxMLP, din=8, dout=8, rngs=nnx.Rngs(0))
    state = nnx.to_pure_dict(nnx.state(NnxMLP(din=8, dout=8, rngs=nnx.Rngs(0))))
    stacked = {
        f"layers/{n}": np.stack([state["layers"][i][n] for i in range(3)])
        for n in ("kernel", "bias")
    }
    file = write_safetensors(tmp_path / "m2.safetensors", stacked)
    report = fnnx.check_checkpoint(model, file)
    assert [str(lay) for lay in report.layouts][0].startswith(
        "the checkpoint stacks 3 layers along a leading axis under layers/... (scanned, nn.scan) "
        "where the model has them unrolled as layers/{0..2}/..."
    )


SHARDED_LOAD = """
import json, tempfile
import jax, jax.numpy as jnp, numpy as np, flax.linen as nn
import orbax.checkpoint as ocp
from penzai import pz
import flaxmock
from flaxmock.examples import llama

config = llama.LlamaConfig.tiny(
    vocab_size=32, dim=8, n_layers=1, n_heads=2, n_kv_heads=2, ffn_dim=16
)
model, tokens = llama.Llama(config), jnp.zeros((1, 4), jnp.int32)
variables = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), tokens))
path = tempfile.mkdtemp() + "/ckpt"
ocp.PyTreeCheckpointer().save(path, variables)
flat = {}
def walk(tree, prefix):
    for k, v in tree.items():
        if isinstance(v, dict):
            walk(v, prefix + [k])
        else:
            flat["/".join(prefix + [k])] = v
walk(variables, [])
header, blobs, offset = {}, [], 0
for name, value in flat.items():
    data = np.asarray(value).tobytes()
    header[name] = {
        "dtype": "F32", "shape": list(value.shape), "data_offsets": [offset, offset + len(data)]
    }
    blobs.append(data)
    offset += len(data)
head = json.dumps(header).encode()
st = tempfile.mkdtemp() + "/m.safetensors"
with open(st, "wb") as f:
    f.write(len(head).to_bytes(8, "little") + head + b"".join(blobs))
mesh = jax.make_mesh((2, 4), ("data", "model"))
tree = flaxmock.unflaxify(model, tokens)
for where in (path, st):
    loaded = flaxmock.load(tree, where, mesh=mesh, rules=llama.RULES)
    ref = flaxmock.materialize(tree, 0, mesh=mesh, rules=llama.RULES)
    got = {p.label: nn.meta.unbox(p.value) for p in pz.unbind_params(loaded)[1]}
    want = {p.label: nn.meta.unbox(p.value) for p in pz.unbind_params(ref)[1]}
    for label, value in got.items():
        assert value.sharding == want[label].sharding, (label, value.sharding, want[label].sharding)
        parts = label.split("/")
        leaf = variables
        for part in parts:
            leaf = leaf[part]
        np.testing.assert_array_equal(np.asarray(value), leaf)
    assert len(got["params/layers_0/mlp/up/kernel"].sharding.device_set) == 8
print("OK")
"""


@pytest.mark.slow
def test_load_with_mesh_shards_as_materialize():
    run_on_8_cpu_devices(SHARDED_LOAD)
