"""Shardings over a mesh: of parameters, from their partitioning metadata, and of a call's outputs.

``materialize(..., mesh=)`` creates parameters with :func:`variable_shardings`;
``mock(..., mesh=)`` gives mock outputs the shardings :func:`real_output_shardings` finds by
compiling the real call (never running it), cached per input signature and shardings
(:func:`mock_output_shardings`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import flax.linen as nn
import jax

from flaxmock._core import specs as _specs
from flaxmock._linen import walk as _walk
from flaxmock._linen.layer import default_rngs


def variable_shardings(currents: list[Any], mesh: Any, rules: Any) -> list[Any] | None:
    """Mesh shardings of the given (boxed, abstract) variables, from their partitioning."""
    if mesh is None:
        return None
    specs = nn.get_partition_spec(currents)
    if rules is None:
        rules = nn.get_logical_axis_rules()
    logical = any(isinstance(c, nn.LogicallyPartitioned) for c in currents)
    if logical:
        return list(nn.logical_to_mesh_sharding(specs, mesh, rules))
    return [jax.sharding.NamedSharding(mesh, s) for s in specs]


def real_output_shardings(
    module: nn.Module,
    method: Any,
    variables: Any,
    arrays: list[Any],
    rebuild: Any,
    in_shardings: list[Any],
    *,
    mesh: Any,
    rules: Any,
    path: str,
) -> list[Any]:
    """The shardings XLA gives the outputs of ``module.apply`` compiled (never run) on ``mesh``.

    The parameters (abstract ``variables``, boxed as the model boxes them) are sharded by their
    partitioning metadata, the array arguments by ``in_shardings``.
    """

    def is_box(x: Any) -> bool:
        return isinstance(x, nn.meta.AxisMetadata)

    def var_sharding(v: Any) -> Any:
        found = variable_shardings([v], mesh, rules)
        assert found is not None  # mesh is set
        return found[0]

    var_shardings = jax.tree.map(var_sharding, variables, is_leaf=is_box)
    variables = nn.meta.unbox(variables)

    def real(variables: Any, arg_arrays: list[Any]) -> list[Any]:
        a, kw = rebuild(arg_arrays)
        out = module.apply(variables, *a, method=method, rngs=default_rngs(), **kw)
        return _specs.partition(out)[0]

    specs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in arrays]
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_walk.isolated())
            stack.enter_context(nn.logical_axis_rules(rules or ()))
            try:
                # For constraints that name mesh axes without a mesh
                # (nn.with_logical_constraint); JAX refuses it inside a trace, where the
                # shardings of the parameters and arguments still apply.
                stack.enter_context(jax.set_mesh(mesh))
            except ValueError:
                pass
            jitted = jax.jit(real, in_shardings=(var_shardings, in_shardings))
            compiled = jitted.lower(variables, specs).compile()
    except Exception as e:
        e.add_note(
            f"flaxmock: compiling the real {path} on the mock's mesh, to find its outputs' "
            "shardings, failed. Mock it without mesh= to get unsharded outputs."
        )
        raise
    return list(compiled.output_shardings)


def _one_step_variables(
    module: nn.Module, method: Any, arrays: list[Any], rebuild: Any, path: str
) -> Any:
    """The abstract variables (boxed) of one step of a lifted body: its own ``init``'s."""

    def init(arg_arrays: list[Any]) -> Any:
        a, kw = rebuild(arg_arrays)
        return module.init(default_rngs(), *a, method=method, **kw)

    specs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in arrays]
    try:
        with _walk.isolated():
            return jax.eval_shape(init, specs)
    except Exception as e:
        e.add_note(
            f"flaxmock: initialising one step of the lifted body {path}, to compile it on the "
            "mock's mesh, failed. Mock it without mesh= to get unsharded outputs."
        )
        raise


def mock_output_shardings(
    module: nn.Module,
    method: Any,
    variables: Any,
    args_and_kwargs: Any,
    out_spec: Any,
    *,
    cache: Any,
    mesh: Any,
    rules: Any,
    path: str,
    per_step: bool = False,
) -> Any:
    """``out_spec`` with the shardings XLA gives the real call's outputs on ``mesh``.

    With ``per_step`` (the call is the body of a lifted ``nn.scan``/``nn.vmap``, whose
    ``variables`` are stacked over the steps), the real call is compiled for one step: with the
    variables one step's ``init`` gives, partitioned as the body's own metadata says (without
    the axis the transform adds).

    The real call is compiled (never run) with its parameters sharded as their partitioning
    metadata says and the arguments sharded as given (replicated when not arrays on the mesh);
    the compiled outputs' shardings are kept in ``cache`` (a ``SpecCache``) per input signature
    and shardings. Under a trace (``jax.jit``) the arguments' shardings are unknown: the
    shardings of the latest concrete call with the same signature are used, else replicated
    arguments.
    """
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    arrays, rebuild = _specs.partition((args_and_kwargs.args, dict(args_and_kwargs.kwargs)))

    def arg_sharding(a: Any) -> Any:
        sharding = getattr(a, "sharding", None)
        if isinstance(sharding, jax.sharding.NamedSharding) and sharding.mesh == mesh:
            return sharding
        return replicated

    in_shardings = tuple(arg_sharding(a) for a in arrays)
    sig = _specs.signature_of(_specs.specs_of(arrays))
    key = (sig, in_shardings)
    found = cache.get(key)
    if found is None and any(isinstance(a, jax.core.Tracer) for a in arrays):
        # Under a trace the arguments' shardings are not known yet: reuse those of the latest
        # concrete call with this signature, if any (else: replicated arguments).
        found = cache.latest(lambda k: k[0] == sig)
    if found is None:
        if per_step:
            variables = _one_step_variables(module, method, arrays, rebuild, path)
        found = real_output_shardings(
            module,
            method,
            variables,
            arrays,
            rebuild,
            list(in_shardings),
            mesh=mesh,
            rules=rules,
            path=path,
        )
        cache.put(key, found)
    leaves, rebuild_out = _specs.partition(out_spec)
    return rebuild_out(
        [
            jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
            for leaf, sharding in zip(leaves, found, strict=True)
        ]
    )
