"""``summary`` for NNX models: one row per module method call, from interception, abstractly.

The call runs under :func:`flaxmock.nnx.eval_shape` (nothing computed or allocated, the model
untouched) inside :func:`flaxmock.nnx.intercept_methods`; each intercepted call becomes a
:class:`~flaxmock.CallRow` in the order calls *start* (a parent before its children), as the
linen ``summary`` orders them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from flax import nnx

from flaxmock import _nnx_abstract, _nnx_intercept, _nnx_mock, _nnx_shapes, _specs, _table


def _owned_params(model: Any) -> dict[str, tuple[int, int]]:
    """``path -> (count, bytes)`` of the ``nnx.Param`` each module owns (not its children's)."""
    module_paths = {path for path, _ in _nnx_shapes.iter_module_paths(model)}
    owned: dict[str, tuple[int, int]] = {}
    for path, var in _nnx_shapes.iter_variables(model):
        if not isinstance(var, nnx.Param):
            continue
        owner = path[:-1]
        while owner and owner not in module_paths:
            owner = owner[:-1]
        value = var.get_value()
        size = int(np.prod(value.shape))
        count, nbytes = owned.get(_nnx_shapes.path_str(owner), (0, 0))
        owned[_nnx_shapes.path_str(owner)] = (
            count + size,
            nbytes + size * np.dtype(value.dtype).itemsize,
        )
    return owned


def summary(
    model: nnx.Module,
    *args: Any,
    method: str | Callable[..., Any] = "__call__",
    **kwargs: Any,
) -> _table.Summary:
    """Returns the table of every module method call made by ``model(*args, **kwargs)``.

    One row per call, in call order: the module's path (``/``-joined attribute names and list
    indices), its class, the method, the input and output specs, and the number and bytes of
    the parameters (``nnx.Param``) the module owns itself, so that the rows add up to the
    model's total. Helper methods (``self.encode(x)``) and Flax's built-in modules get their
    own rows; mocks are marked ``mocked``. The call is shape-evaluated: it works on abstract
    models (:func:`flaxmock.nnx.abstract`), allocates nothing, and leaves ``model`` untouched.
    Inside ``nnx.scan``/``nnx.vmap`` bodies, calls appear as often as JAX traces the body.

    Args:
      model: An ``nnx.Module``, real or abstract, possibly mocked.
      *args: Positional arguments: arrays, ``jax.ShapeDtypeStruct`` or Python values.
      method: The method to call, by name, or a function ``(module, *args, **kwargs)``.
      **kwargs: Keyword arguments, as ``args``.

    Returns:
      A :class:`~flaxmock.Summary`; ``print`` it.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from flaxmock.nnx import abstract, summary
      >>> model = abstract(lambda: nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0))))
      >>> print(summary(model, jax.ShapeDtypeStruct((2, 3), jnp.float32)))
      #  path      module      method    inputs    outputs   params  bytes  note
      -  --------  ----------  --------  --------  --------  ------  -----  ----
      0  <root>    Sequential  __call__  f32[2,3]  f32[2,4]       -      -
      1  layers/0  Linear      __call__  f32[2,3]  f32[2,4]      16   64 B
         total                                                   16   64 B
    """
    owned = _owned_params(model)
    rows: list[_table.CallRow | None] = []
    paths: dict[int, _nnx_shapes.Path] = {}
    known: list[tuple[_nnx_shapes.Path, Any]] = []
    active: list[_nnx_shapes.Path] = []

    def register(root: Any, prefix: _nnx_shapes.Path) -> None:
        for path, module in _nnx_shapes.iter_module_paths(root):
            paths.setdefault(id(module), (*prefix, *path))
            known.append(((*prefix, *path), module))

    def on_merge(copy: Any) -> None:
        register(copy, ())

    def path_of(module: Any) -> str:
        if id(module) not in paths:
            # Lifted transforms (nnx.scan, nnx.vmap) call a fresh copy of a submodule: find
            # the one module of the same class under the calling module, and name the copy
            # and its children after it.
            parent = active[-1] if active else ()
            kind = _nnx_abstract.public_type(module)
            found = {
                path
                for path, other in known
                if path[: len(parent)] == parent and _nnx_abstract.public_type(other) is kind
            }
            if len(found) != 1:
                return f"<{kind.__name__}>"
            register(module, found.pop())
        return _nnx_shapes.path_str(paths[id(module)])

    def record(next_fun: Any, call_args: Any, call_kwargs: Any, context: Any) -> Any:
        module = context.module
        path = path_of(module)
        if isinstance(module, _nnx_mock.MockModule):
            module_type, note, params = module.info.module_type.__name__, "mocked", (0, 0)
        else:
            module_type = _nnx_abstract.public_type(module).__name__
            # A module seen twice (a helper method, a shared module) counts its parameters at
            # its first call only, so that the rows add up.
            note, params = "", owned.pop(path, (0, 0))
        index = len(rows)
        rows.append(None)
        active.append(paths.get(id(module), ()))
        try:
            out = next_fun(*call_args, **call_kwargs)
        finally:
            active.pop()
        rows[index] = _table.CallRow(
            path=path,
            module_type=module_type,
            method=context.method_name,
            inputs=_specs.specs_of((tuple(call_args), dict(call_kwargs))),
            outputs=_specs.specs_of(out),
            param_count=params[0],
            param_bytes=params[1],
            note=note,
        )
        return out

    with _nnx_intercept.intercept_methods(record):
        _nnx_shapes.eval_shape_call(model, args, kwargs, method=method, on_merge=on_merge)
    return _table.Summary([row for row in rows if row is not None])
