"""Zoo cases with the idioms of public sequence models, in small models of our own.

Recurrent layers as Flax users write them (``nn.RNN`` over Flax's cells, ``nn.Bidirectional``,
an LSTM scanned over time by a decorator), control flow over submodules with Flax's lifted
``nn.cond`` / ``nn.switch`` / ``nn.while_loop``, the other lifted transforms (``nn.jit``,
``nn.map_variables``, ``nn.checkpoint`` with ``static_argnums``, ``nn.custom_vjp``), a diagonal
state-space layer with complex intermediates, and causal dilated convolutions. Every case is
tiny: batch 2, 4 to 6 steps, 4 to 8 features. The code is ours; the table names the model that
motivated each case.

==================================  ========================================  ======================
case id                             idioms exercised                          motivated by
==================================  ========================================  ======================
seq_rnn_lstm_gru                    nn.RNN(nn.OptimizedLSTMCell,              Flax nn.RNN users
                                    return_carry=True): a (c, h) carry out;   (flax examples
                                    nn.RNN(nn.GRUCell) with seq_lengths       sst2-style
                                                                              classifiers)

seq_rnn_lstm_gru_bare               the same with nn.RNN as the first call:   Flax nn.RNN users
                                    a mocked call inside the body of a
                                    transformed method

seq_bidirectional                   nn.Bidirectional over an LSTM and a GRU   bidirectional RNN
                                    with return_carry: a tuple of carries,    taggers
                                    one of them a tuple

seq_conv_lstm                       nn.RNN(nn.ConvLSTMCell) over (batch,      ConvLSTM precipitation
                                    time, h, w, c) frames after a per-frame   nowcasting
                                    nn.Conv; a (c, h) carry out

seq_scanned_lstm_encode             functools.partial(nn.scan,                flax examples seq2seq
                                    variable_broadcast='params',              and sst2 LSTMs
                                    split_rngs={'params': False}, in_axes=1,
                                    out_axes=1) as a decorator on a compact
                                    __call__; per-step sow with
                                    reduce_fn/init_fn; an @nn.nowrap method
                                    making a cell with parent=None; two
                                    instances of the scanned class in
                                    setup(); method='encode' returning a
                                    carry tuple and states

seq_control_flow                    nn.cond on a data-dependent predicate     the examples in Flax's
                                    with branches sharing submodules;         nn.cond / nn.switch /
                                    nn.while_loop over a Dense with an int32  nn.while_loop
                                    counter carried and returned; nn.switch   docstrings
                                    over lambdas in front of one shared head

seq_jit_map_variables               nn.jit applied to a module class;         MADE-style masked
                                    nn.map_variables(nn.Dense, 'params',      autoregressive layers
                                    trans_in_fn=..., init=True) masking a
                                    kernel

seq_remat_static_custom_vjp         nn.checkpoint(block,                      gradient-surgery and
                                    static_argnums=(2,)) around Dropout (a    memory-saving recipes
                                    dropout rng inside remat); nn.custom_vjp
                                    with nn.vjp forward and a
                                    sign-of-gradient backward over a Dense

seq_s4d                             self.param with constant, lambda,         the annotated S4 (S4D)
                                    normal, ones and closure initialisers;
                                    complex arithmetic and a complex kernel
                                    sown; FFT convolution; nn.vmap over
                                    channels with variable_axes on axis 1;
                                    the unbatched net batched by a
                                    module-level nn.vmap class used as a
                                    child

seq_s4d_lifted_root                 the applied (root) module is itself a     the annotated S4 (S4D)
                                    class made by nn.vmap

seq_wavenet_tcn                     causal 1-D convolutions (padding ((k -    WaveNet and TCN
                                    1) * d, 0), kernel_dilation); a 1x1
                                    projection only when widths differ;
                                    gated tanh * sigmoid; skip outputs
                                    summed; sow with reduce_fn/init_fn and a
                                    plain sow
==================================  ========================================  ======================
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoo_case import ZooCase
from zoo_parts import Inputs, TwoLayer

_in = Inputs(7)


# --- nn.RNN over Flax's own cells -----------------------------------------------------------


class TwoRecurrences(nn.Module):
    """An LSTM whose final carry is returned, then a GRU over padded sequences."""

    hidden: int = 8
    project: bool = True

    @nn.compact
    def __call__(self, x, lengths):
        if self.project:
            x = nn.Dense(6, name="proj")(x)
        lstm = nn.RNN(nn.OptimizedLSTMCell(self.hidden), return_carry=True, name="lstm")
        carry, h = lstm(x)
        h = nn.RNN(nn.GRUCell(6), name="gru")(h, seq_lengths=lengths)
        return carry, nn.Dense(4, name="out")(h)


class BothWaysTagger(nn.Module):
    """Tags every token from an LSTM read forwards and a GRU read backwards."""

    @nn.compact
    def __call__(self, ids, lengths):
        x = nn.Embed(16, 6, name="tokens")(ids)
        both = nn.Bidirectional(
            nn.RNN(nn.LSTMCell(4)), nn.RNN(nn.GRUCell(4)), return_carry=True, name="both"
        )
        carries, h = both(x, seq_lengths=lengths)
        return carries, nn.Dense(3, name="tags")(h)


class FrameRecurrence(nn.Module):
    """Frames ``(batch, time, h, w, c)``: a conv on each, a ConvLSTM across them."""

    @nn.compact
    def __call__(self, frames):
        x = nn.relu(nn.Conv(3, (3, 3), name="per_frame")(frames))
        rnn = nn.RNN(nn.ConvLSTMCell(4, kernel_size=(3, 3)), return_carry=True, name="conv_lstm")
        carry, h = rnn(x)
        return carry, nn.Conv(2, (1, 1), name="out")(h[:, -1])


# --- an LSTM scanned over time by a decorator, in an encoder-decoder ------------------------


class TimeLoopLSTM(nn.Module):
    """One LSTM cell applied along axis 1 by ``nn.scan`` on ``__call__`` (params shared by all
    steps); each step adds its output norm to a sown running total."""

    width: int

    @functools.partial(
        nn.scan,
        variable_broadcast="params",
        variable_axes={"intermediates": 0},
        split_rngs={"params": False},
        in_axes=1,
        out_axes=1,
    )
    @nn.compact
    def __call__(self, carry, x_t):
        carry, h_t = nn.OptimizedLSTMCell(self.width, name="cell")(carry, x_t)
        total = jnp.linalg.norm(h_t, axis=-1)
        self.sow(
            "intermediates",
            "norm_total",
            total,
            reduce_fn=lambda acc, new: acc + new,
            init_fn=lambda: 0.0,
        )
        return carry, h_t

    @nn.nowrap
    def zero_carry(self, batch: int):
        """A carry made by a cell outside the module tree (``parent=None``)."""
        cell = nn.OptimizedLSTMCell(self.width, parent=None)
        return cell.initialize_carry(jax.random.key(0), (batch, self.width))


class RecurrentTranslator(nn.Module):
    """``encode`` returns the final carry (a tuple) and the states; ``__call__`` decodes."""

    vocab: int = 12
    width: int = 6

    def setup(self):
        self.tokens = nn.Embed(self.vocab, 5)
        self.reader = TimeLoopLSTM(self.width)
        self.writer = TimeLoopLSTM(self.width)
        self.to_vocab = nn.Dense(self.vocab)

    def encode(self, ids):
        return self.reader(self.reader.zero_carry(ids.shape[0]), self.tokens(ids))

    def __call__(self, ids, targets):
        carry, _ = self.encode(ids)
        _, h = self.writer(carry, self.tokens(targets))
        return self.to_vocab(h)


# --- Flax's lifted control flow over submodules ---------------------------------------------


class Branching(nn.Module):
    """``nn.cond`` on a data-dependent predicate, a counted ``nn.while_loop`` over a Dense, and
    ``nn.switch`` over activations in front of one shared head.

    The branches of ``cond`` and ``switch`` call the same submodules, so init creates the same
    variables whichever runs; the loop's Dense runs once before the loop, since variables
    cannot be created inside it.
    """

    steps: int = 3

    def setup(self):
        self.inp = nn.Dense(6)
        self.either = nn.Dense(6)
        self.step = nn.Dense(6)
        self.out = nn.Dense(4)

    def __call__(self, x):
        h = self.inp(x)
        h = nn.cond(
            jnp.mean(h) > 0,
            lambda m, v: nn.relu(m.either(v)),
            lambda m, v: -0.5 * m.either(v),
            self,
            h,
        )
        h = self.step(h)

        def more(m, state):
            return state[0] < self.steps

        def refine(m, state):
            count, v = state
            return count + 1, v + jnp.tanh(m(v))

        count, h = nn.while_loop(more, refine, self.step, (jnp.int32(0), h))
        heads = [
            lambda m, v: m.out(nn.gelu(v)),
            lambda m, v: m.out(jnp.tanh(v)),
            lambda m, v: 2.0 * m.out(v),
        ]
        pick = jnp.argmax(jnp.abs(h).sum(axis=0)[: len(heads)])
        return count, nn.switch(pick, heads, self, h)


class ExpertSwitch(nn.Module):
    """``nn.switch`` over experts with different variables: every branch runs once, outside
    the switch, while initialising."""

    def setup(self):
        self.inp = nn.Dense(6)
        self.experts = [nn.Dense(4, name=f"expert{i}") for i in range(3)]

    def __call__(self, x):
        h = self.inp(x)

        def expert(i):
            return lambda m, v: m.experts[i](v)

        branches = [expert(i) for i in range(3)]
        if self.is_mutable_collection("params"):
            for branch in branches:
                branch(self, h)
        pick = jnp.argmax(jnp.abs(h).sum(axis=0)[:3])
        return nn.switch(pick, branches, self, h)


# --- the other lifted transforms ------------------------------------------------------------

JitTwoLayer = nn.jit(TwoLayer)


def _strictly_earlier(params):
    """MADE-style masking: output j of the masked Dense sees inputs i < j only."""
    if "kernel" not in params:
        return params
    n_in, n_out = params["kernel"].shape
    allowed = jnp.arange(n_in)[:, None] < jnp.arange(n_out)[None, :]
    return {**params, "kernel": params["kernel"] * allowed}


class JitAndMasked(nn.Module):
    """A class wrapped by ``nn.jit`` and an ``nn.map_variables`` Dense with a masked kernel."""

    @nn.compact
    def __call__(self, x):
        h = JitTwoLayer(8, name="jitted")(x)
        masked_cls = nn.map_variables(nn.Dense, "params", trans_in_fn=_strictly_earlier, init=True)
        return x + masked_cls(x.shape[-1], name="masked")(h)


class NoisyResidual(nn.Module):
    @nn.compact
    def __call__(self, x, deterministic: bool):
        h = nn.Dense(x.shape[-1], name="dense")(nn.gelu(x))
        return x + nn.Dropout(0.25)(h, deterministic=deterministic)


class CheckpointAndSignGrad(nn.Module):
    """``nn.checkpoint`` with ``static_argnums`` (self is 0), then a head whose parameter
    gradients are replaced by their signs through ``nn.custom_vjp``."""

    @nn.compact
    def __call__(self, x, deterministic: bool = False):
        block_cls = nn.checkpoint(NoisyResidual, static_argnums=(2,))
        for i in range(2):
            x = block_cls(name=f"res{i}")(x, deterministic)

        def run(m, v):
            return m(v)

        def forward(m, v):
            return nn.vjp(run, m, v)

        def backward(pullback, grad):
            param_grads, *input_grads = pullback(grad)
            return (jax.tree.map(jnp.sign, param_grads), *input_grads)

        sign_grad = nn.custom_vjp(run, forward_fn=forward, backward_fn=backward)
        return sign_grad(nn.Dense(3, name="head"), x)


# --- a diagonal state-space layer -----------------------------------------------------------


def _uniform_log(low: float, high: float):
    """An initialiser drawing ``log(step)`` uniformly between ``log(low)`` and ``log(high)``."""

    def init(key, shape):
        return jax.random.uniform(key, shape, minval=np.log(low), maxval=np.log(high))

    return init


class DiagonalSSM(nn.Module):
    """One channel through a complex diagonal state space: discretised, unrolled into a
    convolution kernel (sown), applied by FFT. Unbatched, single channel."""

    states: int = 4
    length: int = 6

    @nn.compact
    def __call__(self, u):
        decay = self.param("decay", nn.initializers.constant(-0.5), (self.states,))
        freq = self.param(
            "freq",
            lambda key, shape: jnp.pi * jnp.arange(shape[0], dtype=jnp.float32),
            (self.states,),
        )
        readout = self.param("readout", nn.initializers.normal(0.7), (self.states, 2))
        skip = self.param("skip", nn.initializers.ones, (1,))
        log_dt = self.param("log_dt", _uniform_log(1e-3, 1e-1), (1,))
        poles = jnp.minimum(decay, -1e-4) + 1j * freq
        dt = jnp.exp(log_dt)
        # Zero-order hold: x' = a x + u becomes x[k+1] = exp(a dt) x[k] + (exp(a dt) - 1) / a u[k].
        step = jnp.exp(poles * dt)
        gain = (readout[:, 0] + 1j * readout[:, 1]) * (step - 1.0) / poles
        kernel = jnp.sum(gain[:, None] * step[:, None] ** jnp.arange(self.length), axis=0)
        self.sow("intermediates", "kernel", kernel)
        n = 2 * self.length
        y = jnp.fft.irfft(jnp.fft.rfft(u, n) * jnp.fft.rfft(kernel.real, n), n)[: self.length]
        return y + skip * u


class SSMLayer(nn.Module):
    """LayerNorm, one SSM per channel (``nn.vmap`` over axis 1), a gated linear unit, residual."""

    width: int = 4
    length: int = 6

    @nn.compact
    def __call__(self, x):
        per_channel = nn.vmap(
            DiagonalSSM,
            in_axes=1,
            out_axes=1,
            variable_axes={"params": 1, "intermediates": 1},
            split_rngs={"params": True},
        )
        h = per_channel(length=self.length, name="ssm")(nn.LayerNorm(name="ln")(x))
        return x + nn.glu(nn.Dense(2 * self.width, name="gate")(nn.gelu(h)))


class SSMNet(nn.Module):
    """In projection, two SSM layers, mean over time, out projection; written unbatched."""

    length: int = 6

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(4, name="inp")(x)
        for i in range(2):
            x = SSMLayer(length=self.length, name=f"layer{i}")(x)
        return nn.Dense(3, name="out")(x.mean(axis=0))


# The batched model is a class made by nn.vmap: params shared, sown kernels per example.
BatchedSSMNet = nn.vmap(
    SSMNet,
    in_axes=0,
    out_axes=0,
    variable_axes={"params": None, "intermediates": 0},
    split_rngs={"params": False},
)


class SSMClassifier(nn.Module):
    """The batched SSM net as the child of a plain module."""

    @nn.compact
    def __call__(self, x):
        return BatchedSSMNet(length=x.shape[1], name="net")(x)


# --- causal dilated convolutions ------------------------------------------------------------


def causal_conv(features: int, width: int, dilation: int = 1, **kwargs) -> nn.Conv:
    """A 1-D convolution that only looks back: all padding on the left."""
    pad = ((width - 1) * dilation, 0)
    return nn.Conv(features, (width,), padding=(pad,), kernel_dilation=dilation, **kwargs)


class CausalResidual(nn.Module):
    """Two causal convolutions, with a 1x1 projection of the input when widths differ."""

    features: int
    width: int = 3
    dilation: int = 1

    @nn.compact
    def __call__(self, x):
        h = x
        for i in range(2):
            h = nn.relu(causal_conv(self.features, self.width, self.dilation, name=f"conv{i}")(h))
        if x.shape[-1] != self.features:
            x = nn.Conv(self.features, (1,), name="match")(x)
        return nn.relu(x + h)


class GatedDilations(nn.Module):
    """A causal residual block, then gated (tanh times sigmoid) dilated layers whose skip
    outputs are summed. Each layer sows its skip output and adds its gate's mean to a sown
    running total (``reduce_fn``/``init_fn``)."""

    channels: int = 4
    dilations: tuple[int, ...] = (1, 2, 4)

    @nn.compact
    def __call__(self, x):
        x = CausalResidual(self.channels, width=2, name="entry")(x)
        total = 0.0
        for i, d in enumerate(self.dilations):
            both = causal_conv(2 * self.channels, 2, d, name=f"dilated{i}")(x)
            signal, gate = jnp.split(both, 2, axis=-1)
            z = jnp.tanh(signal) * nn.sigmoid(gate)
            self.sow(
                "intermediates",
                "gate_mean",
                nn.sigmoid(gate).mean(),
                reduce_fn=lambda acc, new: acc + new,
                init_fn=lambda: jnp.zeros(()),
            )
            skip = nn.Conv(self.channels, (1,), name=f"skip{i}")(z)
            self.sow("intermediates", "skip", skip)
            total = total + skip
            x = x + nn.Conv(self.channels, (1,), name=f"back{i}")(z)
        return nn.Conv(3, (1,), name="out")(nn.relu(total))


# --- the cases ------------------------------------------------------------------------------

_SEQ = _in.normal(2, 5, 4)
_LENGTHS = jnp.asarray([5, 3], jnp.int32)
_IDS = _in.ints(0, 12, 2, 5)

CASES: list[ZooCase] = [
    ZooCase(
        "seq_rnn_lstm_gru",
        TwoRecurrences,
        (_SEQ, _LENGTHS),
        notes="nn.RNN(OptimizedLSTMCell, return_carry) then nn.RNN(GRUCell) with seq_lengths",
        tags=("lifted",),
    ),
    ZooCase(
        "seq_bidirectional",
        BothWaysTagger,
        (_IDS, _LENGTHS),
        notes="nn.Bidirectional(LSTM, GRU) with return_carry: a tuple of carries, one a tuple",
        tags=("lifted",),
    ),
    ZooCase(
        "seq_conv_lstm",
        FrameRecurrence,
        (_in.normal(2, 4, 5, 5, 2),),
        notes="nn.RNN(nn.ConvLSTMCell) over frames, (c, h) carry returned",
        tags=("lifted",),
    ),
    ZooCase(
        "seq_scanned_lstm_encode",
        RecurrentTranslator,
        (_IDS,),
        method="encode",
        mutable=["intermediates"],
        notes="nn.scan decorator on __call__ (broadcast params, in/out_axes=1), per-step sow "
        "with reduce_fn/init_fn, an nn.nowrap carry maker, method='encode'",
        tags=("setup", "method", "lifted", "mutable"),
    ),
    ZooCase(
        "seq_control_flow",
        Branching,
        (_in.normal(2, 5),),
        notes="nn.cond on a data-dependent predicate, counted nn.while_loop over a Dense (int "
        "counter out), nn.switch over heads sharing one Dense",
        tags=("setup", "lifted", "dtype"),
    ),
    ZooCase(
        "seq_jit_map_variables",
        JitAndMasked,
        (_in.normal(2, 5, 4),),
        notes="nn.jit(TwoLayer) as a class, nn.map_variables(nn.Dense) with a masked kernel",
        tags=("lifted",),
    ),
    ZooCase(
        "seq_remat_static_custom_vjp",
        CheckpointAndSignGrad,
        (_in.normal(2, 5, 4),),
        {"deterministic": False},
        rngs=("dropout",),
        notes="nn.checkpoint(static_argnums=(2,)) with Dropout, nn.custom_vjp with nn.vjp",
        tags=("lifted", "rng", "static_args"),
    ),
    ZooCase(
        "seq_s4d",
        SSMClassifier,
        (_in.normal(2, 6, 3),),
        mutable=["intermediates"],
        notes="custom self.param initialisers, complex kernel sown, FFT conv, per-channel "
        "nn.vmap, the net batched by an nn.vmap-ed class",
        tags=("lifted", "dtype", "mutable"),
    ),
    ZooCase(
        "seq_wavenet_tcn",
        GatedDilations,
        (_in.normal(2, 6, 3),),
        mutable=["intermediates"],
        notes="causal padding ((k-1)*d, 0), dilations, gated tanh*sigmoid, skip sums, sow with "
        "reduce_fn/init_fn",
        tags=("mutable",),
    ),
    ZooCase(
        "seq_rnn_lstm_gru_bare",
        lambda: TwoRecurrences(project=False),
        (_SEQ, _LENGTHS),
        notes="nn.RNN(OptimizedLSTMCell) as the first call: the mocked call is in its body "
        "(a transform of a method: named from flax.core.lift on the stack)",
        tags=("lifted",),
    ),
    ZooCase(
        "seq_s4d_lifted_root",
        BatchedSSMNet,
        (_in.normal(2, 6, 3),),
        mutable=["intermediates"],
        notes="the applied module is itself a class made by nn.vmap",
        tags=("lifted", "dtype", "mutable"),
    ),
]

# Cases that flaxmock does not handle yet; each names its reproduction.
PENDING: list[ZooCase] = [
    # Converted without variables, the tree records init's extra calls of every branch
    # (`if self.is_mutable_collection("params")`), which apply skips: CallStructureError, whose
    # message gives the fix (convert with variables=jax.eval_shape(model.init, ...), which
    # records apply's path; tested in tests/test_lifted.py). The tests here convert abstract
    # models without variables.
    ZooCase(
        "seq_switch_init_all_branches",
        ExpertSwitch,
        (_in.normal(2, 5),),
        notes="nn.switch over experts with different variables, all run once at init",
        tags=("setup", "lifted"),
    ),
]
