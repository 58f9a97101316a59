"""``MockLayer``: a stand-in for a submodule call that emits random arrays of the real shapes.

A mock keeps what the converter recorded about the call it replaces (output specs, sown specs)
and, on each call, fills them randomly with the fill rules of ``_fill``: the common path runs no
``jax.eval_shape`` at all. A call with a new input signature is inferred once, by recording the
original module's call on abstract variables (the converter's own recorder), and cached.

Randomness: ``jax.random.key(seed)``, folded with a hash of the call path (each mock draws its
own numbers), folded with a call counter kept as penzai state (each call draws new numbers, also
under ``pz.variable_jit``). With ``vmap_axis_name`` set, the lane index of that ``jax.vmap`` axis
is folded in as well, so each lane gets its own values while parameters stay shared.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import threading
import zlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from penzai import pz
from penzai.toolshed.unflaxify import ArgsAndKwargs
from treescope import formatting_util

from flaxmock._core import errors as _errors
from flaxmock._core import fill as _fill
from flaxmock._core import keys as _keys
from flaxmock._core import select as _select
from flaxmock._core import specs as _specs
from flaxmock._linen import assemble as _assemble
from flaxmock._linen import layer as _layer
from flaxmock._linen import record as _record
from flaxmock._linen import select as _linen_select
from flaxmock._linen import shardings as _shardings
from flaxmock._linen import variables as _vars
from flaxmock._linen import walk as _walk

#: How many input signatures a mock remembers besides the recorded one (least recently used
#: ones are dropped). Bounds memory when a mock is called with ever new shapes.
SPEC_CACHE_SIZE = 64

#: How many calls ``call_args_list`` remembers (the oldest are dropped).
CALL_HISTORY_SIZE = 1024

# Guards the read-and-advance of every mock's counter, so that threads calling the same tree
# draw for distinct counts. Held only for that update, never during a call.
_COUNTER_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True, eq=False)
class MockInfo:
    """Static data of a :class:`MockLayer` (compared by identity).

    Attributes:
      scope_path: The Flax scope path of the replaced call's module.
      call_path: The ``submodule_calls`` keys leading from the root to the call.
      method: The method to apply for shape inference.
      in_signature: The signature of the recorded input.
      out_spec: The recorded output specs.
      sown: The recorded sown values.
      variables: Abstract variables of the replaced call's subtree, relative to its module.
      seed: The seed of this mock's random stream.
      fill: The fill policy (see ``flaxmock.fill_tree``).
      out: An explicit output spec given to ``mock(..., out=...)``, or None.
      vmap_axis_name: A ``jax.vmap`` axis whose lane index is folded into the key, or None.
      original: The layer this mock replaced (for ``unmock``).
      mesh: A ``jax.sharding.Mesh``: outputs get the shardings the real call's would have.
      rules: Logical axis rules for the parameters' ``nn.with_logical_partitioning`` names.
    """

    scope_path: tuple[str, ...]
    call_path: tuple[Any, ...]
    method: Any
    in_signature: Any
    out_spec: Any
    sown: tuple[_record.SownEntry, ...]
    variables: Any
    seed: int
    fill: Any
    out: Any
    vmap_axis_name: str | None
    original: Any
    mesh: Any = None
    rules: Any = None
    cache: collections.OrderedDict = dataclasses.field(default_factory=collections.OrderedDict)
    call_args_list: collections.deque = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=CALL_HISTORY_SIZE)
    )
    # The output spec of the latest call (one element once called).
    last_out_spec: list = dataclasses.field(default_factory=list)
    # Output shardings per (input signature, input shardings), when mesh is given.
    shardings: dict = dataclasses.field(default_factory=dict)

    @property
    def path_str(self) -> str:
        return "/".join(self.scope_path) if self.scope_path else "<root>"


def _draw(
    groups: tuple[tuple[jax.ShapeDtypeStruct, ...], ...],
    fill: Any,
    vmap_axis_name: str | None,
    where: str,
    seed: Any,
    path_hash: Any,
    count: Any,
    index: Any,
    fold: Any,
) -> list[list[jax.Array]]:
    """The random arrays of one mock call: one group for the output, one per sown entry.

    The key is the seed folded with the call path's hash, the call count, how often the mock
    ran in the same run, extra data (a per-step key inside lifted bodies) and, when asked, the
    ``vmap`` lane. Within a group (the output, or one sown entry), the leaves of one dtype are
    slices of one draw (:func:`_draw_by_dtype`); with a callable ``fill``, leaf ``i`` draws
    from ``fold_in(group_key, i)``.
    """
    key = jax.random.fold_in(jax.random.key(seed), path_hash)
    key = jax.random.fold_in(key, count)
    key = jax.random.fold_in(key, index)
    if fold is not None:
        key = jax.random.fold_in(key, fold)
    if vmap_axis_name is not None:
        key = jax.random.fold_in(key, jax.lax.axis_index(vmap_axis_name))
    out_key, sown_key = jax.random.split(key)
    keys = [out_key] + [jax.random.fold_in(sown_key, j) for j in range(len(groups) - 1)]
    if callable(fill):
        # A user's fill function is given one leaf's spec at a time.
        return [
            [
                _fill.fill_array(jax.random.fold_in(k, i), spec, fill, path=where)
                for i, spec in enumerate(group)
            ]
            for k, group in zip(keys, groups, strict=True)
        ]
    return [_draw_by_dtype(k, group, fill, where) for k, group in zip(keys, groups, strict=True)]


def _draw_by_dtype(
    key: Any, group: tuple[jax.ShapeDtypeStruct, ...], fill: Any, where: str
) -> list[jax.Array]:
    """One draw per dtype for all of a group's leaves, sliced and reshaped into them.

    The leaves of one dtype follow the same fill rule, so one flat draw of their total size
    gives each leaf the distribution a draw of its own would: a call with twenty outputs
    compiles two random draws instead of twenty (0.13 s each on CPU). The dtype's index among
    the group's dtypes is folded into the key.
    """
    by_dtype: dict[Any, list[int]] = {}
    for i, spec in enumerate(group):
        by_dtype.setdefault(spec.dtype, []).append(i)
    out: list[Any] = [None] * len(group)
    for d, (dtype, indices) in enumerate(by_dtype.items()):
        sizes = [math.prod(group[i].shape) for i in indices]
        flat = _fill.fill_array(
            jax.random.fold_in(key, d),
            jax.ShapeDtypeStruct((sum(sizes),), dtype),
            fill,
            path=where,
        )
        offset = 0
        for i, size in zip(indices, sizes, strict=True):
            spec = group[i]
            leaf = flat[offset : offset + size].reshape(spec.shape)
            out[i] = _fill.apply_sharding(leaf, spec)
            offset += size
    return out


@functools.lru_cache(maxsize=512)
def _compiled_draw(
    groups: tuple[tuple[jax.ShapeDtypeStruct, ...], ...],
    fill: Any,
    vmap_axis_name: str | None,
) -> Any:
    # One compiled function per output signature and fill policy, shared by every mock with
    # that signature (the seed and path are arguments): a repeated call costs one dispatch
    # instead of a dozen eager key and fill operations, and 32 identical blocks compile once.
    # Fill errors were reported when the mock was made (check_fillable), so no path is needed.
    return jax.jit(functools.partial(_draw, groups, fill, vmap_axis_name, "a mock"))


def _path_hash(call_path: tuple[Any, ...]) -> int:
    # zlib.crc32 is stable across processes (unlike hash()), so seeds reproduce everywhere.
    return zlib.crc32(repr(call_path).encode()) & 0x7FFFFFFF


@pz.pytree_dataclass
class MockLayer(pz.nn.Layer):
    """A penzai layer that returns random arrays shaped like a Flax call's real output.

    It has the call signature of ``InterceptedFlaxModuleMethod`` (one ``ArgsAndKwargs``), so it
    drops into ``submodule_calls`` in place of the layer it replaces. Build it with
    :func:`flaxmock.mock`.

    Attributes:
      module: The unbound Flax module whose call this mock replaces.
      method_name: The name of the replaced method.
      counter: The number of calls so far, a ``pz.StateVariable`` (penzai state).
      info: The static :class:`MockInfo`.
      kept: The replaced module's variables that held real values when it was mocked
        (``{collection: nested dict}``): existing state (``batch_stats``, a decode ``cache``)
        keeps its value under a mock, as the docs promise, and a real layer that reads the
        mocked module's parameters (weight tying) still finds them. Abstract ones are dropped.
    """

    module: nn.Module = dataclasses.field(metadata={"pytree_node": False})
    method_name: str = dataclasses.field(metadata={"pytree_node": False})
    counter: Any
    info: MockInfo = dataclasses.field(metadata={"pytree_node": False})
    kept: Any = dataclasses.field(default_factory=dict)

    def __call__(self, args_and_kwargs: ArgsAndKwargs, /, **side_inputs: Any) -> Any:
        """Returns random arrays with the real output's structure, shapes and dtypes."""
        out, _ = self.emit(args_and_kwargs)
        return out

    @property
    def path_str(self) -> str:
        return self.info.path_str

    @property
    def call_count(self) -> int:
        """How many times this mock was called (its counter's value)."""
        value = self.counter.value
        return int(value)

    @property
    def call_args_list(self) -> list[Any]:
        """The input specs ``(args, kwargs)`` of the latest calls.

        Records are taken when the mock runs in Python: each eager call, and each *trace*
        under ``jax.jit`` (a cached trace records nothing; a scan body is traced twice). The
        history keeps the latest ``CALL_HISTORY_SIZE`` calls.
        """
        return list(self.info.call_args_list)

    def assert_called(self) -> None:
        """Raises ``AssertionError`` unless the mock was called at least once."""
        if self.call_count == 0:
            raise AssertionError(f"Expected {self.path_str}.{self.method_name} to be called.")

    def assert_not_called(self) -> None:
        """Raises ``AssertionError`` if the mock was called."""
        if self.call_count != 0:
            raise AssertionError(
                f"Expected {self.path_str}.{self.method_name} not to be called; called "
                f"{self.call_count} times."
            )

    def assert_called_once(self) -> None:
        """Raises ``AssertionError`` unless the mock was called exactly once."""
        if self.call_count != 1:
            raise AssertionError(
                f"Expected {self.path_str}.{self.method_name} to be called once; called "
                f"{self.call_count} times."
            )

    def assert_called_with(self, *args: Any, **kwargs: Any) -> None:
        """Raises ``AssertionError`` unless the latest call's input specs equal these.

        Arguments are compared by their specs (shape, dtype; Python values by equality).
        """
        expected = _specs.signature_of(_specs.specs_of((args, kwargs)))
        history = self.info.call_args_list
        actual = _specs.signature_of(history[-1]) if history else None
        if actual != expected:
            got = history[-1] if history else "no call"
            raise AssertionError(
                f"{self.path_str}.{self.method_name}: expected a call with "
                f"{_specs.specs_of((args, kwargs))!r}, latest was {got!r}."
            )

    def assert_called_once_with(self, *args: Any, **kwargs: Any) -> None:
        """``assert_called_once`` and ``assert_called_with`` together."""
        self.assert_called_once()
        self.assert_called_with(*args, **kwargs)

    def output_spec(self, args_and_kwargs: ArgsAndKwargs) -> tuple[Any, tuple]:
        """The output and sown specs for these arguments, inferred at most once per signature.

        Raises:
          InvalidArgumentError: a non-array argument cannot be hashed (so cannot be static).
          ShapeInferenceError: the output shape depends on values (``jnp.nonzero`` without
            ``size=``), so ``jax.eval_shape`` cannot infer it.
        """
        out_spec, sown = self._unsharded_output_spec(args_and_kwargs)
        if self.info.mesh is None or self.info.out is not None:
            return out_spec, sown
        return self._with_shardings(args_and_kwargs, out_spec), sown

    def _unsharded_output_spec(self, args_and_kwargs: ArgsAndKwargs) -> tuple[Any, tuple]:
        info = self.info
        if info.out is not None:
            return info.out, info.sown
        spec_in = _specs.specs_of((args_and_kwargs.args, args_and_kwargs.kwargs))
        sig = _specs.signature_of(spec_in)
        if sig is None:
            bad = _specs.unhashable_leaves(spec_in)
            raise _errors.InvalidArgumentError(
                f"{self.path_str}.{self.method_name}: the arguments {', '.join(bad)} are neither "
                "arrays nor hashable Python values, so they cannot be static arguments, and "
                "the mock cannot tell which output shape they lead to. Fix: pass them as "
                "arrays, as a pytree of arrays, or as hashable values (a tuple instead of a "
                "list, a frozen dataclass instead of a dict-like object)."
            )
        if sig == info.in_signature:
            return info.out_spec, info.sown
        if sig in info.cache:
            info.cache.move_to_end(sig)
            return info.cache[sig]
        result = self._infer(spec_in)
        info.cache[sig] = result
        while len(info.cache) > SPEC_CACHE_SIZE:
            info.cache.popitem(last=False)
        return result

    def _with_shardings(self, args_and_kwargs: ArgsAndKwargs, out_spec: Any) -> Any:
        """``out_spec`` with the shardings XLA gives the real call's outputs on the mesh.

        The real call is compiled (never run) with its parameters sharded as their partitioning
        metadata says and the arguments sharded as given (replicated when not arrays on the
        mesh); the compiled outputs' shardings are cached per input signature and shardings.
        Under a trace (``jax.jit``) the arguments' shardings are unknown: the shardings of the
        latest concrete call with the same signature are used, else replicated arguments.
        """
        info = self.info
        mesh = info.mesh
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
        found = info.shardings.get(key)
        if found is None and any(isinstance(a, jax.core.Tracer) for a in arrays):
            # Under a trace the arguments' shardings are not known yet: reuse those of the
            # latest concrete call with this signature, if any (else: replicated arguments).
            found = next((v for (s, _), v in reversed(info.shardings.items()) if s == sig), None)
        if found is None:
            found = _shardings.real_output_shardings(
                self.module,
                info.method,
                info.variables,
                arrays,
                rebuild,
                list(in_shardings),
                mesh=mesh,
                rules=info.rules,
                path=f"{self.path_str}.{self.method_name}",
            )
            info.shardings[key] = found
            while len(info.shardings) > SPEC_CACHE_SIZE:
                info.shardings.pop(next(iter(info.shardings)))
        leaves, rebuild_out = _specs.partition(out_spec)
        return rebuild_out(
            [
                jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
                for leaf, sharding in zip(leaves, found, strict=True)
            ]
        )

    def _infer(self, spec_in: Any) -> tuple[Any, tuple]:
        args, kwargs = spec_in
        try:
            with _walk.isolated():
                root, _ = _record.record(
                    self.module,
                    self.info.variables,
                    tuple(args),
                    dict(kwargs),
                    method=self.info.method,
                    rngs=_layer.default_rngs(),
                )
        except jax.errors.ConcretizationTypeError as e:
            raise _errors.ShapeInferenceError(
                f"{self.path_str}.{self.method_name}: cannot infer the output shape for inputs "
                f"{spec_in!r:.200}: it depends on input values ({type(e).__name__}), which "
                "jax.eval_shape cannot see. Fix: give the output spec explicitly, "
                "flaxmock.mock(tree, where, out=jax.ShapeDtypeStruct(shape, dtype))."
            ) from e
        except Exception as e:
            e.add_note(
                f"flaxmock: the real {self.path_str}.{self.method_name} fails on these inputs, "
                "so the mock cannot give their output shape."
            )
            raise
        return root.out_spec, root.sown

    def reserve_count(self) -> Any:
        """Returns the call counter's value and advances it (when it is bound penzai state)."""
        with _COUNTER_LOCK:
            count = self.counter.value
            if isinstance(self.counter, pz.StateVariable):
                self.counter.value = count + 1
            return count

    def release_count(self, count: Any) -> None:
        """Gives back a reserved count that was not used, if no later one was taken."""
        if not isinstance(self.counter, pz.StateVariable):
            return
        with _COUNTER_LOCK:
            current = self.counter.value
            # Only concrete counts are compared; under a trace the reservation stays.
            if isinstance(current, jax.core.Tracer) or isinstance(count, jax.core.Tracer):
                return
            if int(current) == int(count) + 1:
                self.counter.value = count

    def emit(
        self,
        args_and_kwargs: ArgsAndKwargs,
        *,
        count: Any = None,
        index: int = 0,
        fold: Any = None,
    ) -> tuple[Any, list[tuple[Any, Any]]]:
        """Returns the random output and the random sown values ``[(SownEntry, value)]``.

        Args:
          args_and_kwargs: The call's arguments (only their specs matter).
          count: The call count to draw for; None reads and advances the counter.
          index: How many times this mock was already dispatched in the same run.
          fold: Extra data folded into the key (a per-step key inside a lifted body).
        """
        out_spec, sown = self.output_spec(args_and_kwargs)
        self.info.call_args_list.append(
            _specs.specs_of((args_and_kwargs.args, args_and_kwargs.kwargs))
        )
        self.info.last_out_spec[:] = [out_spec]
        if count is None:
            count = self.reserve_count()
        where = f"{self.path_str}.{self.method_name}"
        parts = [_specs.partition(out_spec)] + [_specs.partition(e.spec) for e in sown]
        groups = tuple(tuple(arrays) for arrays, _ in parts)
        try:
            draw = _compiled_draw(groups, self.info.fill, self.info.vmap_axis_name)
        except TypeError:  # An unhashable fill callable: draw eagerly.
            draw = functools.partial(_draw, groups, self.info.fill, self.info.vmap_axis_name, where)
        seed = jnp.uint32(self.info.seed)
        # Lowered as JAX does by default: the unrolled threefry of flaxmock._core.prng would save
        # scratch, but XLA fuses it into each leaf's slice, and compiling a call with twenty
        # outputs would take seconds instead of a fraction of one.
        filled = draw(seed, jnp.uint32(_path_hash(self.info.call_path)), count, index, fold)
        values = [rebuild(list(arrays)) for (_, rebuild), arrays in zip(parts, filled, strict=True)]
        return values[0], list(zip(sown, values[1:], strict=True))

    def treescope_color(self) -> str:
        return formatting_util.color_from_string("MockLayer")

    def summary_line(self) -> str:
        """One line: the mocked module type, its call path and the recorded output spec."""
        from flaxmock._core import table as _table

        return (
            f"mock of {type(self.module).__name__} at {self.path_str}.{self.method_name} "
            f"-> {_table.describe_specs(self.info.out_spec)}"
        )

    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        # penzai's struct rendering, with the mock's one-line summary as the first line's
        # annotation and the node collapsed, so mocks stand out in a large tree.
        from penzai.core._treescope_handlers import struct_handler
        from treescope import rendering_parts

        fields = dataclasses.fields(self)
        return rendering_parts.build_foldable_tree_node_from_children(
            prefix=struct_handler.render_struct_constructor(self),
            children=rendering_parts.build_field_children(
                self,
                path,
                subtree_renderer,
                fields_or_attribute_names=fields,
                attr_style_fn=struct_handler.struct_attr_style_fn_for_fields(fields),
            ),
            suffix=")",
            path=path,
            background_color=self.treescope_color(),
            first_line_annotation=rendering_parts.comment_color(
                rendering_parts.text(f"  # {self.summary_line()}")
            ),
            expand_state=rendering_parts.ExpandState.COLLAPSED,
        )


def mock_layer(
    layer: Any,
    *,
    seed: int = 0,
    fill: Any = None,
    out: Any = None,
    vmap_axis_name: str | None = None,
    mesh: Any = None,
    rules: Any = None,
) -> MockLayer:
    """Builds the :class:`MockLayer` that replaces one converted layer."""
    info = layer.info
    assembled = _assemble.assemble(layer, include_replaced=True)
    variables = _specs.specs_of(assembled.variables)
    where = f"{info.path_str}.{layer.method_name}"
    out_spec = _specs.specs_of(out) if out is not None else info.out_spec
    _fill.check_fillable(out_spec, fill, path=where)
    for entry in info.sown:
        _fill.check_fillable(entry.spec, fill, path=f"{where} (sown {entry.collection})")
    mock_info = MockInfo(
        scope_path=info.scope_path,
        call_path=info.call_path,
        method=info.method,
        in_signature=_specs.signature_of(info.in_spec),
        out_spec=info.out_spec,
        sown=info.sown,
        variables=variables,
        seed=seed,
        fill=fill,
        out=out_spec if out is not None else None,
        vmap_axis_name=vmap_axis_name,
        original=layer,
        mesh=mesh,
        rules=rules,
    )
    counter = pz.StateVariable(
        value=jnp.zeros((), jnp.uint32), label=f"flaxmock.counter:{where}:{id(mock_info)}"
    )
    return MockLayer(
        module=layer.module,
        method_name=layer.method_name,
        counter=counter,
        info=mock_info,
        kept=_concrete(assembled.variables),
    )


def _concrete(variables: dict[str, Any]) -> dict[str, Any]:
    """The leaves of a variables dict that hold values (abstract specs dropped), nested."""
    return _vars.nest(
        {
            k: value
            for k, value in _vars.flatten_variables(variables).items()
            if not any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(value))
        }
    )


def explicit_mock(
    module: nn.Module, method_name: str, out: Any, *, seed: int = 0, fill: Any = None
) -> MockLayer:
    """A :class:`MockLayer` for ``module.method_name`` with a given output spec, never traced."""
    out_spec = _specs.specs_of(out)
    where = f"<root>.{method_name}"
    _fill.check_fillable(out_spec, fill, path=where)
    info = MockInfo(
        scope_path=(),
        call_path=(),
        method=method_name,
        in_signature=None,
        out_spec=out_spec,
        sown=(),
        variables={},
        seed=seed,
        fill=fill,
        out=out_spec,
        vmap_axis_name=None,
        original=None,
    )
    counter = pz.StateVariable(
        value=jnp.zeros((), jnp.uint32), label=f"flaxmock.counter:{where}:{id(info)}"
    )
    return MockLayer(module=module, method_name=method_name, counter=counter, info=info)


def mock(
    tree: Any,
    where: _select.Where,
    *,
    seed: int = 0,
    fill: Any = None,
    out: Any = None,
    vmap_axis_name: str | None = None,
    mesh: Any = None,
    rules: Any = None,
) -> Any:
    """Replaces the layers ``where`` selects by mocks (:class:`MockLayer`).

    Each mock returns random arrays with exactly the structure, shapes and dtypes of the real
    call's output (non-array leaves as the real call returns them), and writes random values
    wherever the real call would ``sow``. Selections never overlap: where a layer and one of its
    descendants both match, the outer one is mocked.

    Args:
      tree: A converted tree (from :func:`flaxmock.unflaxify`), possibly already patched.
      where: Which calls to mock: a ``flax.linen.Module`` class (``nn.Dense``), a glob over
        ``/``-joined scope paths (``"blocks_*/attn"``, ``"**/attn"``, ``"embed.attend"``;
        ``*`` stays within one segment, ``""`` is the root), a predicate ``layer -> bool`` or
        ``(path, module) -> bool``, or a list of these (the grammar shared with
        :func:`flaxmock.nnx.mock`, in the overview's "Selecting modules").
      seed: Seed of the mocks' random numbers (each mock also folds in its call path).
      fill: How to fill: None or ``"normal"`` (the default rules), ``"zeros"``, ``"ones"``,
        ``"uniform"``, or a callable ``(key, ShapeDtypeStruct) -> array``.
      out: An explicit output spec (a pytree of ``jax.ShapeDtypeStruct``), for calls whose
        output shape depends on values and cannot be inferred.
      vmap_axis_name: Fold the lane index of this ``jax.vmap`` axis into the key, so that each
        lane gets its own values.
      mesh: A ``jax.sharding.Mesh``. Each mock's outputs then get the shardings the real
        call's outputs would have on it: the real call is compiled once per input signature
        (never run) with its parameters sharded by their ``nn.with_partitioning`` /
        ``nn.with_logical_partitioning`` metadata and the arguments as given.
      rules: Logical axis rules for ``nn.with_logical_partitioning`` names (default: those of
        the surrounding ``nn.logical_axis_rules`` context when ``mock`` is called).

    Returns:
      A new tree; ``tree`` itself is unchanged.

    Raises:
      SelectNothingError: ``where``, or an element of a list, selects no layer; the message
        lists the closest paths.
      SelectContainerError: ``where`` selects a module that is never called itself (its
        children are) without all of its children.
      InvalidSelectorError: ``where`` is not a selector (a module instance, say).
      UnsupportedDtypeError: a recorded output has a dtype the fill rules cannot produce.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, flaxmock
      >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
      >>> tree = flaxmock.unflaxify(model, jax.ShapeDtypeStruct((4, 3), jnp.float32))
      >>> mocked = flaxmock.mock(tree, nn.Dense)
      >>> flaxmock.call(mocked, jnp.ones((4, 3))).shape
      (4, 2)
    """
    _keys.check_seed(seed, where="mock")
    if mesh is not None and not isinstance(mesh, jax.sharding.Mesh):
        raise _errors.InvalidArgumentError(
            f"mock: mesh= expects a jax.sharding.Mesh, got {type(mesh).__name__}. Fix: pass "
            "jax.sharding.Mesh(devices, axis_names), or leave it out for unsharded outputs."
        )
    if mesh is not None and rules is None:
        rules = tuple(nn.get_logical_axis_rules())
    selection = _linen_select.select_layers(
        tree,
        where,
        (_layer.FlaxCallLayer,),
        taken={MockLayer: "already MockLayers"},
        call="flaxmock.mock",
        taken_fix="flaxmock.unmock(tree, where) first puts back the original layers",
    )
    return selection.apply(
        lambda layer: mock_layer(
            layer,
            seed=seed,
            fill=fill,
            out=out,
            vmap_axis_name=vmap_axis_name,
            mesh=mesh,
            rules=rules,
        )
    )


def unmock(tree: Any, where: _select.Where = "**") -> Any:
    """Puts back the original layers of the mocks ``where`` selects (all by default).

    Args:
      tree: A tree with mocks (from :func:`flaxmock.mock`).
      where: Which mocks to put back, in the grammar of :func:`flaxmock.mock` (``"**"``, the
        default, selects every path).

    Returns:
      A new tree; ``tree`` itself is unchanged.

    Raises:
      SelectNothingError: ``where``, or an element of a list, selects no mock.
      InvalidSelectorError: ``where`` is not a selector.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, flaxmock
      >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
      >>> tree = flaxmock.unflaxify(model, jax.ShapeDtypeStruct((4, 3), jnp.float32))
      >>> flaxmock.unmock(flaxmock.mock(tree, nn.Dense)) == tree
      True
    """
    selection = _linen_select.select_layers(
        tree,
        where,
        (MockLayer,),
        taken={_layer.FlaxCallLayer: "not mocks (FlaxCallLayers)"},
        call="flaxmock.unmock",
        taken_fix="select mocked layers, or mock these first with flaxmock.mock(tree, where)",
    )
    return selection.apply(lambda m: m.info.original)
