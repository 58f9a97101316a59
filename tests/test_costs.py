"""Costs in the summaries: FLOPs per call and per subtree, backward FLOPs, bytes per device.

The oracle for FLOPs is XLA's own cost analysis of the whole ``module.apply`` (for models
without loops, where XLA counts every operation once) and hand arithmetic; the oracle for bytes
per device is the arithmetic of the partition specs (and, in a subprocess on 8 simulated CPU
devices, the shards ``materialize`` really creates).
"""

from __future__ import annotations

import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax.core import DenyList
from jax.sharding import PartitionSpec as P

import flaxmock
import flaxmock.nnx as fnnx
import zoo
from flaxmock._core import costs
from flaxmock.examples import llama
from helpers import init_variables, run_on_8_cpu_devices

F32 = jnp.float32


def _spec(*shape, dtype=F32):
    return jax.ShapeDtypeStruct(shape, dtype)


def _xla_flops(fun, *args) -> int:
    """XLA's count for the whole function: the oracle for models without loops."""
    return int(jax.jit(fun).lower(*args).cost_analysis()["flops"])


def _row(table, path, method="__call__"):
    (row,) = [r for r in table.rows if r.path == path and r.method == method]
    return row


# Exact figures by hand.


@pytest.mark.parametrize("batch,d_in,d_out", [(4, 3, 8), (2, 16, 5)])
def test_dense_flops_are_two_in_out_batch_on_both_front_ends(batch, d_in, d_out):
    x = _spec(batch, d_in)
    tree = flaxmock.unflaxify(nn.Dense(d_out, use_bias=False), x)
    table = flaxmock.summary(tree, flops=True)
    assert table.rows[0].flops == 2 * d_in * d_out * batch
    assert table.total_flops == table.rows[0].subtree_flops == 2 * d_in * d_out * batch

    model = fnnx.abstract(nnx.Linear, d_in, d_out, use_bias=False, rngs=nnx.Rngs(0))
    table = fnnx.summary(model, x, flops=True)
    assert table.rows[0].flops == 2 * d_in * d_out * batch


def test_rows_add_up_and_match_xla_on_the_whole_apply():
    case = next(c for c in zoo.CASES if c.id == "llama_tiny")
    model, variables = init_variables(case)
    tree = flaxmock.unflaxify(model, *case.args)
    table = flaxmock.summary(tree, flops=True, vjp_flops=True)
    assert table.total_flops == sum(r.flops for r in table.rows)
    assert table.total_flops == table.rows[0].subtree_flops
    assert table.total_vjp_flops == table.rows[0].subtree_vjp_flops
    # Every subtree figure is its own figure plus its callees' subtree figures.
    for i, row in enumerate(table.rows):
        below = table.rows[i + 1 :]
        end = next((k for k, r in enumerate(below) if r.depth <= row.depth), len(below))
        callees = [r for r in below[:end] if r.depth == row.depth + 1]
        assert row.subtree_flops == row.flops + sum(r.subtree_flops for r in callees)
    assert table.total_flops == _xla_flops(model.apply, variables, *case.args)


@pytest.mark.parametrize(
    "case_id", ["mlp_compact", "self_method", "weight_tying", "shared_submodule", "batchnorm_eval"]
)
def test_total_flops_equal_xla_on_the_whole_apply(case_id):
    case = next(c for c in zoo.CASES if c.id == case_id)
    model, variables = init_variables(case)
    tree = flaxmock.unflaxify(model, *case.args, method=case.method, **case.kwargs)
    table = flaxmock.summary(tree, flops=True)

    def apply(v, *args):
        return model.apply(v, *args, method=case.method, mutable=case.mutable, **case.kwargs)

    assert table.total_flops == _xla_flops(apply, variables, *case.args)


# Transforms.


def test_scanned_stack_counts_like_its_unrolled_twin():
    tokens = _spec(2, 16, dtype=jnp.int32)
    tables = {}
    for scan in (False, True):
        model = llama.Llama(llama.LlamaConfig.tiny(n_layers=3, scan_layers=scan))
        tables[scan] = flaxmock.summary(flaxmock.unflaxify(model, tokens), flops=True)
    unrolled, scanned = tables[False], tables[True]
    assert scanned.total_flops == unrolled.total_flops
    # The body's subtree is the three blocks' together; each of its rows three blocks' rows.
    blocks = [r for r in unrolled.rows if r.path.startswith("layers_") and r.depth == 1]
    assert _row(scanned, "blocks").subtree_flops == sum(r.subtree_flops for r in blocks)
    q = [r.flops for r in unrolled.rows if r.path.endswith("/attn/q")]
    assert len(q) == 3 and _row(scanned, "blocks/attn/q").flops == sum(q)
    # nn.tabulate counts a scanned body once: here 3x less than the truth.
    assert _row(scanned, "blocks/attn/q").flops == 3 * q[0]


def test_nnx_scan_counts_like_its_unrolled_twin():
    class Block(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(16, 16, use_bias=False, rngs=rngs)

        def __call__(self, x):
            return x + jax.nn.relu(self.lin(x))

    class Stack(nnx.Module):
        def __init__(self, scan, rngs):
            self.scan = scan
            if scan:
                make = nnx.split_rngs(splits=4)(nnx.vmap(Block, in_axes=0, out_axes=0))
                self.blocks = make(rngs)
            else:
                self.blocks = nnx.List([Block(rngs) for _ in range(4)])

        def __call__(self, x):
            if not self.scan:
                for block in self.blocks:
                    x = block(x)
                return x

            @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
            def step(x, block):
                return block(x)

            return step(x, self.blocks)

    x = _spec(8, 16)
    unrolled = fnnx.summary(fnnx.abstract(Stack, False, nnx.Rngs(0)), x, flops=True)
    scanned = fnnx.summary(fnnx.abstract(Stack, True, nnx.Rngs(0)), x, flops=True)
    per_block = 2 * 8 * 16 * 16 + 2 * 8 * 16  # the matmul, relu and the residual add
    assert unrolled.total_flops == scanned.total_flops == 4 * per_block
    assert _row(scanned, "blocks/lin").flops == 4 * 2 * 8 * 16 * 16
    assert _row(scanned, "blocks").note == "scan x4"


def test_vmapped_body_counts_once_per_lane():
    # Parameters batched, input broadcast (in_axes=None): each lane computes the Dense.
    case = next(c for c in zoo.CASES if c.id == "vmap_ensemble")
    model, variables = init_variables(case)
    table = flaxmock.summary(flaxmock.unflaxify(model, *case.args), flops=True)
    members = _row(table, "members")
    assert members.note.startswith("vmap")
    batch, d_in = case.args[0].shape
    assert members.flops == 4 * (2 * batch * d_in * 3 + batch * 3)
    assert table.total_flops == _xla_flops(model.apply, variables, *case.args)


class _Gram(nn.Module):
    """Work on the parameters alone (a Gram matrix), then on the batched input."""

    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.initializers.normal(), (x.shape[-1], 16))
        gram = w @ w.T  # reads no batched value: JAX computes it once, not per lane
        return x @ gram


class _Batched(nn.Module):
    @nn.compact
    def __call__(self, x):
        body = nn.vmap(
            _Gram, in_axes=0, out_axes=0, variable_axes={"params": None},
            split_rngs={"params": False},
        )  # fmt: skip
        return body(name="body")(x)


def test_vmapped_work_on_broadcast_parameters_counts_once():
    x = jnp.ones((6, 3, 8))
    model = _Batched()
    variables = model.init(jax.random.key(0), x)
    table = flaxmock.summary(flaxmock.unflaxify(model, x), flops=True)
    gram, per_lane = 2 * 8 * 16 * 8, 2 * 3 * 8 * 8
    assert _row(table, "body").flops == gram + 6 * per_lane
    assert table.total_flops == _xla_flops(model.apply, variables, x)


def test_nn_jit_bodies_are_counted_and_leave_no_cached_trace():
    class Inner(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(4, name="dense")(jnp.tanh(x))

    class Outer(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.jit(Inner)(name="inner")(x) * 2.0

    x = jnp.ones((2, 3))
    model = Outer()
    variables = model.init(jax.random.key(0), x)

    def apply():  # called as the summary calls it, so that nn.jit's cache would be shared
        out = model.apply(
            variables, x, rngs={"params": jax.random.key(0)}, mutable=DenyList("params")
        )
        return out[0]

    before = apply()
    table = flaxmock.summary(flaxmock.unflaxify(model, x), flops=True)
    assert _row(table, "inner/dense").flops == 2 * 2 * 3 * 4 + 2 * 4
    assert table.total_flops == _xla_flops(model.apply, variables, x)
    # The model's own runs still compute: no trace made with stubs was cached by nn.jit.
    np.testing.assert_array_equal(apply(), before)


@nnx.jit
def _doubled(lin, x):
    return lin(x) * 2.0


def test_nnx_jit_inside_a_model_leaves_no_cached_trace():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(3, 4, rngs=rngs)

        def __call__(self, x):
            return _doubled(self.lin, x)

    model = Net(nnx.Rngs(0))
    x = jnp.ones((2, 3))
    before = model(x)
    table = fnnx.summary(model, x, flops=True)
    assert _row(table, "lin").flops == 2 * 2 * 3 * 4 + 2 * 4
    np.testing.assert_array_equal(model(x), before)
    assert table.total_flops == table.rows[0].subtree_flops


def test_nnx_vmap_counts_once_per_lane():
    class Ensemble(nnx.Module):
        def __init__(self, rngs):
            make = nnx.split_rngs(splits=5)(
                nnx.vmap(lambda r: nnx.Linear(3, 7, use_bias=False, rngs=r), in_axes=0)
            )
            self.members = make(rngs)

        def __call__(self, x):
            @nnx.vmap(in_axes=(0, None))
            def each(member, x):
                return member(x)

            return each(self.members, x)

    table = fnnx.summary(fnnx.abstract(Ensemble, nnx.Rngs(0)), _spec(2, 3), flops=True)
    assert _row(table, "members").flops == 5 * 2 * 2 * 3 * 7


class _Plain(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(8, use_bias=False, name="inner")(jnp.tanh(x))


class _Remat(nn.Module):
    remat: bool

    @nn.compact
    def __call__(self, x):
        body = nn.remat(_Plain) if self.remat else _Plain
        return body(name="body")(x)


def test_remat_adds_its_recompute_to_the_backward_figure():
    x = _spec(4, 8)
    plain, remat = (
        flaxmock.summary(flaxmock.unflaxify(_Remat(r), x), flops=True, vjp_flops=True)
        for r in (False, True)
    )
    for path in ("body", "body/inner"):
        assert _row(remat, path).flops == _row(plain, path).flops
        assert _row(remat, path).vjp_flops == _row(plain, path).vjp_flops + _row(plain, path).flops
    inner = _row(plain, "body/inner")
    # A Dense's backward: the kernel's and the input's gradients, one matmul each.
    assert inner.vjp_flops == 2 * inner.flops == 2 * 2 * 4 * 8 * 8


def test_unknown_trip_counts_and_branches_give_no_figure():
    class Loop(nn.Module):
        def setup(self):
            self.step = nn.Dense(4)

        def __call__(self, x):
            def body(mdl, carry):
                i, h = carry
                return i + 1, mdl.step(h)

            if self.is_mutable_collection("params"):  # init: create the parameters
                return body(self, (0, x))[1]
            return nn.while_loop(lambda mdl, c: c[0] < 3, body, self, (0, x))[1]

    x = _spec(2, 4)
    variables = jax.eval_shape(Loop().init, jax.random.key(0), x)
    tree = flaxmock.unflaxify(Loop(), x, variables=variables)
    table = flaxmock.summary(tree, flops=True)
    step = _row(table, "step")
    assert step.flops is None and "while_loop" in step.note
    assert table.total_flops is None and table.rows[0].subtree_flops is None
    assert "?" in str(table).splitlines()[-1]

    class Branch(nn.Module):
        def setup(self):
            self.head = nn.Dense(4)

        def __call__(self, x, flag):
            if self.is_mutable_collection("params"):  # init: create the parameters
                return self.head(x)
            return nn.cond(flag, lambda mdl, x: mdl.head(x), lambda mdl, x: x, self, x)

    flag = jax.ShapeDtypeStruct((), jnp.bool_)
    variables = jax.eval_shape(Branch().init, jax.random.key(0), x, flag)
    tree = flaxmock.unflaxify(Branch(), x, flag, variables=variables)
    table = flaxmock.summary(tree, flops=True)
    head = _row(table, "head")
    assert head.flops is None and "cond" in head.note
    assert table.total_flops is None


def test_mocked_calls_cost_nothing_and_add_nothing():
    model = llama.Llama(llama.LlamaConfig.tiny())
    tree = flaxmock.unflaxify(model, _spec(1, 8, dtype=jnp.int32))
    full = flaxmock.summary(tree, flops=True)
    mocked = flaxmock.summary(flaxmock.mock(tree, llama.MLP), flops=True)
    mlps = [r for r in mocked.rows if r.module_type == "MLP"]
    assert len(mlps) == 2 and all(r.mocked and r.flops is None for r in mlps)
    mlp_cost = sum(r.subtree_flops for r in full.rows if r.module_type == "MLP")
    assert mocked.total_flops == full.total_flops - mlp_cost


def test_identical_calls_are_lowered_once(monkeypatch):
    lowered = []
    real = costs._xla

    def counting(fun, avals):
        lowered.append(1)
        return real(fun, avals)

    monkeypatch.setattr(costs, "_xla", counting)
    model = llama.Llama(llama.LlamaConfig.tiny(n_layers=4))
    table = flaxmock.summary(flaxmock.unflaxify(model, _spec(1, 8, dtype=jnp.int32)), flops=True)
    # 4 identical blocks of 12 calls each, priced like one block.
    assert len(table.rows) == 52 and len(lowered) < 20


def test_alike_calls_are_traced_once_and_different_ones_never_conflated(monkeypatch):
    from flaxmock._linen import costs as linen_costs

    traces = []
    real = linen_costs._trace
    monkeypatch.setattr(
        linen_costs, "_trace", lambda *a, **k: traces.append(a[0].path_str) or real(*a, **k)
    )
    model = llama.Llama(llama.LlamaConfig.tiny(n_layers=4))
    flaxmock.summary(flaxmock.unflaxify(model, _spec(1, 8, dtype=jnp.int32)), flops=True)
    assert traces.count("layers_0") == 1 and "layers_3" not in traces
    assert len(traces) < 15  # of 52 calls

    def tanh_times(n):
        def act(x):
            for _ in range(n):
                x = jnp.tanh(x) * 2.0
            return x

        return act

    class Act(nn.Module):
        act: object

        @nn.compact
        def __call__(self, x):
            return self.act(x)

    class Acts(nn.Module):
        @nn.compact
        def __call__(self, x):
            # Same class, same shapes: only the functions held as fields differ.
            for i, act in enumerate([jax.nn.relu, jax.nn.gelu, tanh_times(2), tanh_times(3)]):
                x = Act(act, name=f"act{i}")(x)
            return x

    x = _spec(4, 8)
    table = flaxmock.summary(flaxmock.unflaxify(Acts(), x), flops=True)
    for act, row in zip(
        [jax.nn.relu, jax.nn.gelu, tanh_times(2), tanh_times(3)], table.rows[1:], strict=True
    ):
        assert row.flops == _xla_flops(act, x)
    assert len({row.flops for row in table.rows[1:]}) == 4


# depth=.


def test_depth_rolls_costs_and_parameters_up_exactly():
    model = llama.Llama(llama.LlamaConfig.tiny())
    tree = flaxmock.unflaxify(model, _spec(1, 8, dtype=jnp.int32))
    full = flaxmock.summary(tree, flops=True, vjp_flops=True)
    for depth in (0, 1, 2):
        top = flaxmock.summary(tree, flops=True, vjp_flops=True, depth=depth)
        assert max(r.depth for r in top.rows) == depth
        assert (top.total_flops, top.total_vjp_flops) == (full.total_flops, full.total_vjp_flops)
        assert (top.total_params, top.total_bytes) == (full.total_params, full.total_bytes)
        for row in top.rows:
            if row.depth == depth:
                # A folded row's own figure is its whole subtree's.
                assert row.flops == row.subtree_flops
    block = _row(flaxmock.summary(tree, flops=True, depth=1), "layers_0")
    assert block.note == "11 calls below"
    assert block.param_count == sum(
        r.param_count for r in full.rows if r.path.startswith("layers_0")
    )


@pytest.mark.parametrize("depth", [-1, 1.5, True, "1"])
def test_depth_must_be_a_non_negative_int(depth):
    tree = flaxmock.unflaxify(nn.Dense(3), _spec(2, 4))
    with pytest.raises(flaxmock.InvalidArgumentError, match="depth= expects a non-negative int"):
        flaxmock.summary(tree, depth=depth)


# Bytes per device.


class _Sharded(nn.Module):
    @nn.compact
    def __call__(self, x):
        w1 = self.param(
            "w1",
            nn.with_logical_partitioning(nn.initializers.normal(), ("embed", "mlp")),
            (16, 32),
        )
        w2 = self.param(
            "w2", nn.with_partitioning(nn.initializers.normal(), ("model", None)), (32, 16)
        )
        b = self.param("b", nn.initializers.zeros, (16,))
        return jnp.tanh(x @ w1) @ w2 + b


MESH = {"data": 2, "model": 4}
RULES = (("embed", "data"), ("mlp", "model"))


def test_device_bytes_follow_the_specs_by_hand():
    tree = flaxmock.unflaxify(_Sharded(), _spec(4, 16))
    table = flaxmock.summary(tree, mesh=MESH, rules=RULES)
    # w1 (16, 32) over (data=2, model=4); w2 (32, 16) over (model=4, -); b replicated.
    by_hand = (16 // 2) * (32 // 4) * 4 + (32 // 4) * 16 * 4 + 16 * 4
    assert table.rows[0].device_param_bytes == by_hand
    assert table.max_device_param_bytes == by_hand
    abstract = jax.sharding.AbstractMesh((2, 4), ("data", "model"))
    assert flaxmock.summary(tree, mesh=abstract, rules=RULES).max_device_param_bytes == by_hand
    assert "per device" in str(table)


def test_device_bytes_of_the_example_under_its_rules():
    config = llama.LlamaConfig.tiny(scan_layers=True, n_layers=4)
    tree = flaxmock.unflaxify(llama.Llama(config), _spec(1, 8, dtype=jnp.int32))
    table = flaxmock.summary(tree, mesh={"data": 2, "model": 4}, rules=llama.RULES)
    q = _row(table, "blocks/attn/q")
    # Stacked (layers=4, embed=64, heads=64) with layers replicated, embed over data, heads
    # over model.
    assert q.device_param_bytes == 4 * (64 // 2) * (64 // 4) * 4
    assert table.max_device_param_bytes == sum(r.device_param_bytes for r in table.rows)


def test_nnx_device_bytes_follow_the_sharding_metadata():
    class Model(nnx.Module):
        def __init__(self, rngs):
            init = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("embed", "mlp"))
            self.lin = nnx.Linear(16, 32, use_bias=False, kernel_init=init, rngs=rngs)

        def __call__(self, x):
            return self.lin(x)

    with nnx.use_eager_sharding(False):  # Sharding names as metadata only, no mesh needed.
        model = fnnx.abstract(Model, nnx.Rngs(0))
    table = fnnx.summary(model, _spec(2, 16), mesh=MESH, rules=RULES)
    assert _row(table, "lin").device_param_bytes == (16 // 2) * (32 // 4) * 4
    assert table.max_device_param_bytes == (16 // 2) * (32 // 4) * 4


def test_logical_names_without_rules_are_replicated_as_flax_does():
    tree = flaxmock.unflaxify(_Sharded(), _spec(4, 16))
    table = flaxmock.summary(tree, mesh=MESH)
    # w1 (logical names, no rule) replicated; w2 (mesh axes) split; b replicated.
    assert table.max_device_param_bytes == 16 * 32 * 4 + (32 // 4) * 16 * 4 + 16 * 4


def test_device_bytes_errors():
    tree = flaxmock.unflaxify(_Sharded(), _spec(4, 16))
    with pytest.raises(
        flaxmock.ShardParametersError,
        match=r"<root>/w2: the partition spec .* names the axis 'model', which the mesh "
        r"\{'data': 8\} does not have",
    ):
        flaxmock.summary(tree, mesh={"data": 8})
    with pytest.raises(flaxmock.ShardParametersError, match="uses the mesh axis 'data' twice"):
        costs.device_bytes((4, 4), F32, P("data", "data"), MESH, path="w")
    with pytest.raises(flaxmock.InvalidArgumentError, match="mesh= expects a jax.sharding.Mesh"):
        flaxmock.summary(tree, mesh=8)
    with pytest.raises(flaxmock.InvalidArgumentError, match="axis sizes must be positive ints"):
        flaxmock.summary(tree, mesh={"data": 0})
    with pytest.raises(flaxmock.ShardParametersError, match="has 3 entries for an array of shape"):
        costs.device_bytes((4, 4), F32, P("data", None, None), MESH, path="w")


def test_device_bytes_round_up_uneven_shards():
    assert costs.device_bytes((10, 3), F32, P("model"), MESH, path="w") == 3 * 3 * 4
    assert costs.device_bytes((8,), jnp.bfloat16, P(("data", "model")), MESH, path="w") == 2


SHARDED_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, flax.linen as nn, numpy as np
    from jax.sharding import Mesh
    import flaxmock
    from flaxmock.examples import llama

    assert len(jax.devices()) == 8, jax.devices()
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
    model = llama.Llama(llama.LlamaConfig.tiny(scan_layers=True, n_layers=4))
    tokens = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    tree = flaxmock.unflaxify(model, tokens)
    table = flaxmock.summary(tree, mesh=mesh, rules=llama.RULES)
    real = flaxmock.materialize(tree, jax.random.key(0), mesh=mesh, rules=llama.RULES)
    on_device = {d: 0 for d in jax.devices()}
    seen = set()
    for _, layer in flaxmock._linen.layer.iter_layers(real):
        if layer.scope_data is None:
            continue
        for p in layer.scope_data.parameters.values():
            if p.label in seen:  # the embedding, shared by embed and embed.attend
                continue
            seen.add(p.label)
            value = p.value.unbox() if isinstance(p.value, nn.meta.AxisMetadata) else p.value
            for shard in value.addressable_shards:
                on_device[shard.device] += shard.data.nbytes
    assert set(on_device.values()) == {table.max_device_param_bytes}, (on_device, table)
    print("OK")
    """
)


def test_device_bytes_equal_the_shards_materialize_creates_on_8_devices():
    run_on_8_cpu_devices(SHARDED_SCRIPT)


# The default path and NNX specifics.


def test_default_summary_computes_no_cost():
    tree = flaxmock.unflaxify(nn.Dense(3), _spec(2, 4))
    table = flaxmock.summary(tree)
    assert table.total_flops is None and table.max_device_param_bytes is None
    assert table.rows[0].flops is None and table.rows[0].out_bytes == 2 * 3 * 4
    assert "flops" not in str(table)


def test_nnx_costs_on_an_abstract_model_match_xla_on_the_real_one():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(5, 8, rngs=rngs)
            self.b = nnx.Linear(8, 3, rngs=rngs)

        def __call__(self, x):
            return self.b(jax.nn.gelu(self.a(x)))

    x = jnp.ones((4, 5))
    table = fnnx.summary(fnnx.abstract(Net, nnx.Rngs(0)), x, flops=True)
    real = Net(nnx.Rngs(0))
    graphdef, state = nnx.split(real)
    expected = _xla_flops(lambda s, x: nnx.merge(graphdef, s)(x), state, x)
    assert table.total_flops == expected
    assert np.all([r.flops is not None for r in table.rows])


def test_nnx_mocked_rows_cost_nothing():
    model = fnnx.abstract(lambda: nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0))))
    mocked = fnnx.mock(model, nnx.Linear)
    table = fnnx.summary(mocked, _spec(2, 3), flops=True)
    assert table.rows[1].mocked and table.rows[1].flops is None
    assert table.total_flops == table.rows[0].flops
