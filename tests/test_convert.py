"""The converter's two invariants on every zoo model, with and without ``jax.jit``.

1. With real variables, ``flaxmock.call`` of the converted tree equals ``module.apply`` exactly,
   sown and mutable collections included.
2. With abstract variables, ``jax.eval_shape`` of the tree gives the structure, shapes and
   dtypes of ``jax.eval_shape`` of ``module.apply``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from penzai import pz

import flaxmock
import zoo
from flaxmock._linen import layer as _layer
from helpers import (
    apply_rngs,
    assert_specs_equal,
    assert_trees_equal,
    init_variables,
    jit_bodies_inline,
    with_python_outputs,
)

CASES = zoo.CASES
IDS = [c.id for c in CASES]


@pytest.mark.parametrize(("case", "jit"), zoo.PARAMS_WITH_JIT)
def test_real_variables_equal_apply(case, jit):
    model, variables = init_variables(case)
    tree = flaxmock.unflaxify(
        model, *case.args, variables=variables, method=case.method, **case.kwargs
    )
    rngs = apply_rngs(case)

    def via_tree(tree, args):
        return flaxmock.call(tree, *args, mutable=case.mutable, rngs=rngs, **case.kwargs)

    def via_apply(variables, args):
        # flaxmock runs nn.jit bodies inline (see the guarantees): so does the reference.
        with jit_bodies_inline(tree):
            return model.apply(
                variables,
                *args,
                method=case.method,
                mutable=case.mutable,
                rngs=rngs,
                **case.kwargs,
            )

    arrays, rebuild = flaxmock._core.specs.partition(case.args)
    if jit:
        # The tree holds penzai variables (pz.Parameter, pz.StateVariable): it goes through
        # jit the penzai way; the reference is plain jax.jit of module.apply.
        out = with_python_outputs(pz.variable_jit, lambda t, a: via_tree(t, rebuild(a)))(
            tree, arrays
        )
        ref = with_python_outputs(jax.jit, lambda v, a: via_apply(v, rebuild(a)))(variables, arrays)
    else:
        out, ref = via_tree(tree, case.args), via_apply(variables, case.args)
    assert_trees_equal(out, ref)


@pytest.mark.parametrize("case", zoo.IDIOM_PARAMS, ids=IDS)
def test_abstract_eval_shape_equals_apply(case):
    model, variables = init_variables(case)
    tree = flaxmock.unflaxify(model, *case.args, method=case.method, **case.kwargs)
    rngs = apply_rngs(case)
    out = flaxmock.eval_shape(
        lambda t, *a: flaxmock.call(t, *a, mutable=case.mutable, rngs=rngs, **case.kwargs),
        tree,
        *case.args,
    )
    ref = flaxmock.eval_shape(
        lambda v, *a: model.apply(
            v, *a, method=case.method, mutable=case.mutable, rngs=rngs, **case.kwargs
        ),
        variables,
        *case.args,
    )
    assert_specs_equal(out, ref)


@pytest.mark.parametrize("case", zoo.IDIOM_PARAMS, ids=IDS)
def test_abstract_parameters_allocate_nothing(case):
    model = case.make()
    tree = flaxmock.unflaxify(model, *case.args, method=case.method, **case.kwargs)
    leaves = [
        v
        for _, layer in _layer.iter_layers(tree)
        for _, _, v, _ in flaxmock._linen.assemble.own_variables(layer)
    ]
    assert leaves, "every zoo model has variables"
    for leaf in jax.tree.leaves(leaves):
        assert isinstance(leaf, jax.ShapeDtypeStruct)


@pytest.mark.parametrize("case", zoo.IDIOM_PARAMS, ids=IDS)
def test_abstract_call_names_layers_without_values(case):
    model = case.make()
    tree = flaxmock.unflaxify(model, *case.args, method=case.method, **case.kwargs)
    with pytest.raises(flaxmock.AbstractParameterError, match="still have abstract parameters"):
        flaxmock.call(tree, *case.args, mutable=case.mutable, **case.kwargs)


def test_root_is_penzais_class_with_penzais_keys():
    import flax.linen as nn

    model = nn.Sequential([nn.Dense(4), nn.Dense(2)])
    tree = flaxmock.unflaxify(model, jnp.ones((1, 3)))
    assert isinstance(tree, flaxmock.InterceptedFlaxModuleMethod)
    assert list(tree.submodule_calls) == [(0, "layers_0.__call__"), (1, "layers_1.__call__")]
    call = tree.submodule_calls[(0, "layers_0.__call__")]
    assert call.scope_data.parameters["kernel"].label == "params/layers_0/kernel"


def test_penzai_call_convention_returns_apply_output():
    import flax.linen as nn

    model = nn.Dense(3)
    x = jnp.arange(8.0).reshape(2, 4)
    variables = model.init(jax.random.key(0), x)
    tree = flaxmock.unflaxify(model, x, variables=variables)
    out = tree(flaxmock.ArgsAndKwargs.capture(x))
    np.testing.assert_array_equal(out, model.apply(variables, x))


def test_self_method_calls_make_no_extra_layers():
    case = next(c for c in CASES if c.id == "self_method")
    tree = flaxmock.unflaxify(case.make(), *case.args, **case.kwargs)
    for _, layer in _layer.iter_layers(tree):
        # Re-entrant calls (self.encode, self._helper) run inside their module's layer.
        assert all(
            child.info.scope_path != layer.info.scope_path
            for child in layer.submodule_calls.values()
        )


def test_shared_submodule_is_filed_under_its_caller():
    case = next(c for c in CASES if c.id == "shared_submodule")
    tree = flaxmock.unflaxify(case.make(), *case.args, **case.kwargs)
    # The shared module's calls are children of the layers that call it, not of its owner.
    shared_calls = [
        (parent.info.scope_path, child.info.scope_path)
        for _, parent in _layer.iter_layers(tree)
        for child in parent.submodule_calls.values()
        if child.info.scope_path[: len(parent.info.scope_path)] != parent.info.scope_path
    ]
    assert len(shared_calls) >= 2
    assert len({caller for caller, _ in shared_calls}) >= 2


def test_unbound_module_required():
    import flax.linen as nn

    with pytest.raises(flaxmock.ConvertError, match="expects a flax.linen.Module"):
        flaxmock.unflaxify(lambda x: x, jnp.ones(3))
    bound = nn.Dense(2).bind(nn.Dense(2).init(jax.random.key(0), jnp.ones((1, 2))))
    with pytest.raises(flaxmock.ConvertError, match="expects an unbound module"):
        flaxmock.unflaxify(bound, jnp.ones((1, 2)))


def test_model_errors_name_the_call_path():
    import flax.linen as nn

    class Bad(nn.Module):
        @nn.compact
        def __call__(self, x):
            return x @ jnp.ones((7, 2))

    class Outer(nn.Module):
        @nn.compact
        def __call__(self, x):
            return Bad(name="bad")(x)

    with pytest.raises(TypeError) as info:
        flaxmock.unflaxify(Outer(), jnp.ones((1, 3)))
    assert "raised in bad.__call__" in "\n".join(getattr(info.value, "__notes__", []))


def test_other_python_path_is_reported():
    import flax.linen as nn

    class Branchy(nn.Module):
        @nn.compact
        def __call__(self, x, deep: bool = False):
            x = nn.Dense(2, name="a")(x)
            if deep:
                x = nn.Dense(2, name="b")(x)
            return x

    x = jnp.ones((1, 2))
    variables = Branchy().init(jax.random.key(0), x, deep=True)
    tree = flaxmock.unflaxify(Branchy(), x, variables=variables)
    with pytest.raises(flaxmock.CallStructureError, match=r"was not seen when the tree"):
        flaxmock.call(tree, x, deep=True)


def test_eval_shape_keeps_python_outputs():
    import flax.linen as nn

    class Talky(nn.Module):
        @nn.compact
        def __call__(self, x):
            return {"y": nn.Dense(2)(x), "n": 3, "tag": "ok", "none": None}

    tree = flaxmock.unflaxify(Talky(), jnp.ones((1, 3)))
    out = flaxmock.eval_shape(flaxmock.call, tree, jnp.ones((4, 3)))
    assert out == {
        "y": jax.ShapeDtypeStruct((4, 2), jnp.float32),
        "n": 3,
        "tag": "ok",
        "none": None,
    }
