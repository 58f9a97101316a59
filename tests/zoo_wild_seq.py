"""Zoo cases written the way third-party sequence models are (RNNs, state spaces, control flow).

Recurrent layers as Flax users write them (``nn.RNN`` over Flax's cells, ``nn.Bidirectional``,
the flax examples' hand-scanned LSTM), control flow over submodules with Flax's lifted
``nn.cond`` / ``nn.switch`` / ``nn.while_loop``, the other lifted transforms (``nn.jit``,
``nn.map_variables``, ``nn.checkpoint`` with ``static_argnums``, ``nn.custom_vjp``), an S4D
state-space layer with complex intermediates, and causal temporal convolutions (TCN, WaveNet).
Every case is tiny: batch 2, 4 to 6 steps, 4 to 8 features.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoo_case import ZooCase

_rng = np.random.default_rng(7)


def _normal(*shape: int, dtype: Any = jnp.float32) -> jax.Array:
    return jnp.asarray(_rng.standard_normal(shape), dtype)


# --- nn.RNN over Flax's own cells -------------------------------------------------------------


class LstmGruStack(nn.Module):
    """An LSTM layer whose final carry is returned, then a GRU layer on padded sequences."""

    hidden: int = 8
    project: bool = True

    @nn.compact
    def __call__(self, x, seq_lengths):
        if self.project:
            x = nn.Dense(6, name="in_proj")(x)
        carry, ys = nn.RNN(nn.OptimizedLSTMCell(self.hidden), return_carry=True, name="lstm")(x)
        ys = nn.RNN(nn.GRUCell(6), name="gru")(ys, seq_lengths=seq_lengths)
        return carry, nn.Dense(4, name="head")(ys)


class BiRnnTagger(nn.Module):
    """A bidirectional tagger: LSTM forward, GRU backward, per-step logits and both carries."""

    @nn.compact
    def __call__(self, tokens, seq_lengths):
        x = nn.Embed(16, 6, name="embed")(tokens)
        bi = nn.Bidirectional(
            nn.RNN(nn.LSTMCell(4)),
            nn.RNN(nn.GRUCell(4)),
            return_carry=True,
            name="bi",
        )
        (fwd_carry, bwd_carry), ys = bi(x, seq_lengths=seq_lengths)
        return (fwd_carry, bwd_carry), nn.Dense(3, name="tags")(ys)


class ConvLstmNet(nn.Module):
    """A conv stem, a ConvLSTM over frames (batch, time, h, w, channels), a 1x1 readout."""

    @nn.compact
    def __call__(self, frames):
        frames = nn.relu(nn.Conv(3, (3, 3), name="stem")(frames))
        rnn = nn.RNN(nn.ConvLSTMCell(4, kernel_size=(3, 3)), return_carry=True, name="convlstm")
        (c, h), ys = rnn(frames)
        return (c, h), nn.Conv(2, (1, 1), name="readout")(ys[:, -1])


# --- the flax examples' hand-scanned LSTM (seq2seq, sst2), with a method= other than __call__ --


class ScannedLSTM(nn.Module):
    """``nn.scan`` over time applied to ``__call__`` as a decorator, as the flax examples do."""

    features: int

    @functools.partial(
        nn.scan,
        variable_broadcast="params",
        variable_axes={"intermediates": 0},
        split_rngs={"params": False},
        in_axes=1,
        out_axes=1,
    )
    @nn.compact
    def __call__(self, carry, x):
        carry, y = nn.OptimizedLSTMCell(self.features, name="cell")(carry, x)
        self.sow(
            "intermediates",
            "h_norm",
            jnp.linalg.norm(y, axis=-1),
            reduce_fn=lambda acc, new: acc + new,
            init_fn=lambda: 0.0,
        )
        return carry, y

    @nn.nowrap
    def initialize_carry(self, batch: int) -> tuple[jax.Array, jax.Array]:
        cell = nn.OptimizedLSTMCell(self.features, parent=None)
        return cell.initialize_carry(jax.random.key(0), (batch, self.features))


class Seq2Seq(nn.Module):
    """Encoder/decoder with setup(): ``encode`` returns the final carry (a tuple) and the states."""

    vocab: int = 12
    hidden: int = 6

    def setup(self):
        self.embed = nn.Embed(self.vocab, 5)
        self.encoder = ScannedLSTM(self.hidden)
        self.decoder = ScannedLSTM(self.hidden)
        self.proj = nn.Dense(self.vocab)

    def encode(self, tokens):
        carry = self.encoder.initialize_carry(tokens.shape[0])
        return self.encoder(carry, self.embed(tokens))

    def __call__(self, tokens, targets):
        carry, _ = self.encode(tokens)
        _, ys = self.decoder(carry, self.embed(targets))
        return self.proj(ys)


# --- Flax's lifted control flow over submodules ---------------------------------------------


class ControlFlow(nn.Module):
    """``nn.cond`` on a data-dependent predicate, ``nn.switch`` over activation heads, and a
    fori-style ``nn.while_loop`` refining a carry with a Dense.

    The branches use the same submodules (so init creates the same variables in each), as in
    the examples of Flax's docstrings; the loop's Dense is called once before the loop, since
    variables cannot be created inside it.
    """

    steps: int = 3

    def setup(self):
        self.gate = nn.Dense(6)
        self.proj = nn.Dense(6)
        self.cell = nn.Dense(6)
        self.head = nn.Dense(4)

    def __call__(self, x):
        h = self.gate(x)
        h = nn.cond(
            h.mean() > 0,
            lambda mdl, v: nn.relu(mdl.proj(v)),
            lambda mdl, v: -mdl.proj(v) * 0.5,
            self,
            h,
        )
        h = self.cell(h)

        def cond_fn(mdl, carry):
            return carry[0] < self.steps

        def body_fn(mdl, carry):
            i, v = carry
            return i + 1, jnp.tanh(mdl(v)) + v

        n, h = nn.while_loop(cond_fn, body_fn, self.cell, (jnp.int32(0), h))
        branches = [
            lambda mdl, v: mdl.head(nn.gelu(v)),
            lambda mdl, v: mdl.head(jnp.tanh(v)),
            lambda mdl, v: mdl.head(v) * 2.0,
        ]
        index = jnp.argmax(jnp.abs(h).sum(axis=0)[:3])
        return n, nn.switch(index, branches, self, h)


class SwitchExperts(nn.Module):
    """Flax's documented ``nn.switch`` idiom: every branch runs once, outside, during init.

    The experts own different variables, so init must create all of them outside the switch.
    """

    def setup(self):
        self.gate = nn.Dense(6)
        self.experts = [nn.Dense(4, name=f"expert_{i}") for i in range(3)]

    def __call__(self, x):
        h = self.gate(x)

        def head_fn(i):
            return lambda mdl, v: mdl.experts[i](v)

        branches = [head_fn(i) for i in range(len(self.experts))]
        if self.is_mutable_collection("params"):  # run all branches on init
            for branch in branches:
                branch(self, h)
        index = jnp.argmax(jnp.abs(h).sum(axis=0)[:3])
        return nn.switch(index, branches, self, h)


# --- the other lifted transforms ------------------------------------------------------------


class FeedForward(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(x.shape[-1], name="wo")(nn.gelu(nn.Dense(8, name="wi")(x)))


JitFeedForward = nn.jit(FeedForward)


def _causal_mask(kernel: jax.Array) -> jax.Array:
    # MADE-style autoregressive mask: output i sees inputs < i only.
    n_in, n_out = kernel.shape
    return kernel * (jnp.arange(n_in)[:, None] < jnp.arange(n_out)[None, :])


class JitMapVariables(nn.Module):
    """An ``nn.jit``-wrapped block class and an ``nn.map_variables`` masked Dense."""

    @nn.compact
    def __call__(self, x):
        h = JitFeedForward(name="ffn")(x)
        masked = nn.map_variables(
            nn.Dense,
            "params",
            trans_in_fn=lambda v: (
                {**v, "kernel": _causal_mask(v["kernel"])} if "kernel" in v else v
            ),
            init=True,
        )(x.shape[-1], name="masked")
        return masked(h) + x


class DropBlock(nn.Module):
    @nn.compact
    def __call__(self, x, deterministic: bool):
        # Pre-activation residual block.
        h = nn.Dense(x.shape[-1], name="dense")(nn.gelu(x))
        return x + nn.Dropout(0.25)(h, deterministic=deterministic)


class RematCustomVjp(nn.Module):
    """``nn.checkpoint`` with ``static_argnums`` (self is 0), and a sign-gradient ``custom_vjp``."""

    @nn.compact
    def __call__(self, x, deterministic: bool = False):
        block = nn.checkpoint(DropBlock, static_argnums=(2,))
        for i in range(2):
            x = block(name=f"block_{i}")(x, deterministic)

        def f(mdl, v):
            return mdl(v)

        def fwd(mdl, v):
            return nn.vjp(f, mdl, v)

        def bwd(vjp_fn, y_t):
            params_t, *inputs_t = vjp_fn(y_t)
            return (jax.tree.map(jnp.sign, params_t), *inputs_t)

        sign_grad = nn.custom_vjp(f, forward_fn=fwd, backward_fn=bwd)
        return sign_grad(nn.Dense(3, name="head"), x)


# --- an S4D state-space layer (complex diagonal SSM, FFT convolution) ------------------------


def _log_step_init(dt_min: float = 0.001, dt_max: float = 0.1):
    def init(key, shape):
        return jax.random.uniform(key, shape) * (np.log(dt_max) - np.log(dt_min)) + np.log(dt_min)

    return init


class S4DKernel(nn.Module):
    """One S4D layer on a single channel, as in the annotated S4; vmapped over channels."""

    n: int = 4
    length: int = 6

    @nn.compact
    def __call__(self, u):
        lambda_re = self.param("Lambda_re", nn.initializers.constant(-0.5), (self.n,))
        lambda_im = self.param(
            "Lambda_im",
            lambda key, shape: jnp.pi * jnp.arange(shape[0], dtype=jnp.float32),
            (self.n,),
        )
        c = self.param("C", nn.initializers.normal(0.5**0.5), (self.n, 2))
        d = self.param("D", nn.initializers.ones, (1,))
        log_step = self.param("log_step", _log_step_init(), (1,))
        lam = jnp.clip(lambda_re, None, -1e-4) + 1j * lambda_im
        c = c[..., 0] + 1j * c[..., 1]
        step = jnp.exp(log_step)
        # Zero-order hold discretisation, then the Vandermonde kernel K[l] = sum_n C B Lbar^l.
        lam_bar = jnp.exp(lam * step)
        b_bar = (lam_bar - 1.0) / lam
        k = (c * b_bar) @ (lam_bar[:, None] ** jnp.arange(self.length))
        self.sow("intermediates", "kernel", k)
        ud = jnp.fft.rfft(jnp.pad(u, (0, self.length)))
        kd = jnp.fft.rfft(jnp.pad(k.real, (0, self.length)))
        y = jnp.fft.irfft(ud * kd)[: self.length]
        return y + d * u


class S4Block(nn.Module):
    """LayerNorm, S4D over every channel (cloned with ``nn.vmap``), GLU, residual; unbatched."""

    features: int = 4
    length: int = 6

    @nn.compact
    def __call__(self, x):
        ssm = nn.vmap(
            S4DKernel,
            in_axes=1,
            out_axes=1,
            variable_axes={"params": 1, "intermediates": 1},
            split_rngs={"params": True},
        )(length=self.length, name="s4d")
        h = ssm(nn.LayerNorm(name="norm")(x))
        h = nn.Dense(2 * self.features, name="glu")(nn.gelu(h))
        return x + nn.glu(h)


class S4Stack(nn.Module):
    """The annotated S4's ``StackedModel``: encoder, S4 blocks, mean-pooled decoder."""

    length: int = 6

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(4, name="encoder")(x)
        for i in range(2):
            x = S4Block(length=self.length, name=f"layer_{i}")(x)
        return nn.Dense(3, name="decoder")(x.mean(0))


# As in the annotated S4, the model is written unbatched and the applied module is its vmap.
BatchS4Stack = nn.vmap(
    S4Stack,
    in_axes=0,
    out_axes=0,
    variable_axes={"params": None, "intermediates": 0},
    split_rngs={"params": False},
)


class S4Classifier(nn.Module):
    """The batched S4 stack as a child of a plain module, sown kernels included."""

    @nn.compact
    def __call__(self, x):
        return BatchS4Stack(length=x.shape[1], name="s4")(x)


# --- causal temporal convolutions: a TCN and a WaveNet stack ---------------------------------


class TemporalBlock(nn.Module):
    """The TCN residual block: two causal dilated convolutions, a 1x1 projection when needed."""

    features: int
    kernel: int = 3
    dilation: int = 1

    @nn.compact
    def __call__(self, x):
        pad = ((self.kernel - 1) * self.dilation, 0)
        h = x
        for i in range(2):
            h = nn.Conv(
                self.features,
                (self.kernel,),
                padding=(pad,),
                kernel_dilation=self.dilation,
                name=f"conv_{i}",
            )(h)
            h = nn.relu(h)
        res = x if x.shape[-1] == self.features else nn.Conv(self.features, (1,), name="down")(x)
        return nn.relu(h + res)


class WaveNet(nn.Module):
    """Causal conv, then gated (tanh * sigmoid) dilated layers with skip connections.

    Each layer sows its gate activity summed over calls (``reduce_fn``/``init_fn``) and its
    skip output.
    """

    channels: int = 4
    dilations: tuple[int, ...] = (1, 2, 4)

    @nn.compact
    def __call__(self, x):
        x = TemporalBlock(self.channels, kernel=2, name="tcn")(x)
        skips = []
        for i, d in enumerate(self.dilations):
            gated = nn.Conv(
                2 * self.channels,
                (2,),
                padding=((d, 0),),
                kernel_dilation=d,
                name=f"dilated_{i}",
            )(x)
            filt, gate = jnp.split(gated, 2, axis=-1)
            z = jnp.tanh(filt) * nn.sigmoid(gate)
            self.sow(
                "intermediates",
                "gate_activity",
                nn.sigmoid(gate).mean(),
                reduce_fn=lambda acc, new: acc + new,
                init_fn=lambda: jnp.zeros(()),
            )
            skip = nn.Conv(self.channels, (1,), name=f"skip_{i}")(z)
            self.sow("intermediates", "skip", skip)
            skips.append(skip)
            x = x + nn.Conv(self.channels, (1,), name=f"res_{i}")(z)
        out = nn.relu(sum(skips))
        return nn.Conv(3, (1,), name="logits")(out)


# --- arguments ----------------------------------------------------------------------------------

_SEQ = _normal(2, 5, 4)
_LENGTHS = jnp.asarray([5, 3], jnp.int32)
_TOKENS = jnp.asarray(_rng.integers(0, 12, (2, 5)), jnp.int32)

CASES: list[ZooCase] = [
    ZooCase(
        "seq_rnn_lstm_gru",
        LstmGruStack,
        (_SEQ, _LENGTHS),
        notes="nn.RNN(OptimizedLSTMCell, return_carry) then nn.RNN(GRUCell) with seq_lengths",
        tags=("lifted",),
    ),
    ZooCase(
        "seq_bidirectional",
        BiRnnTagger,
        (_TOKENS, _LENGTHS),
        notes="nn.Bidirectional(LSTM, GRU) with return_carry: a tuple of carries, one a tuple",
        tags=("lifted",),
    ),
    ZooCase(
        "seq_conv_lstm",
        ConvLstmNet,
        (_normal(2, 4, 5, 5, 2),),
        notes="nn.RNN(nn.ConvLSTMCell) over frames, (c, h) carry returned",
        tags=("lifted",),
    ),
    ZooCase(
        "seq_scanned_lstm_encode",
        Seq2Seq,
        (_TOKENS,),
        method="encode",
        mutable=["intermediates"],
        notes="nn.scan decorator on __call__ (broadcast params, in/out_axes=1), per-step sow "
        "with reduce_fn/init_fn, nn.nowrap initialize_carry, method='encode'",
        tags=("setup", "method", "lifted", "mutable"),
    ),
    ZooCase(
        "seq_control_flow",
        ControlFlow,
        (_normal(2, 5),),
        notes="nn.cond on a data-dependent predicate, fori-style nn.while_loop over a Dense "
        "(int counter out), nn.switch over heads sharing one Dense",
        tags=("setup", "lifted", "dtype"),
    ),
    ZooCase(
        "seq_jit_map_variables",
        JitMapVariables,
        (_normal(2, 5, 4),),
        notes="nn.jit(FeedForward) as a class, nn.map_variables(nn.Dense) with a causal mask",
        tags=("lifted",),
    ),
    ZooCase(
        "seq_remat_static_custom_vjp",
        RematCustomVjp,
        (_normal(2, 5, 4),),
        {"deterministic": False},
        rngs=("dropout",),
        notes="nn.checkpoint(static_argnums=(2,)) with Dropout, nn.custom_vjp with nn.vjp",
        tags=("lifted", "rng", "static_args"),
    ),
    ZooCase(
        "seq_s4d",
        S4Classifier,
        (_normal(2, 6, 3),),
        mutable=["intermediates"],
        notes="S4D: self.param initialisers, complex kernel sown, FFT conv, per-channel nn.vmap, "
        "the stack batched by an nn.vmap-ed class",
        tags=("lifted", "dtype", "mutable"),
    ),
    ZooCase(
        "seq_wavenet_tcn",
        WaveNet,
        (_normal(2, 6, 3),),
        mutable=["intermediates"],
        notes="causal nn.Conv padding ((k-1)*d, 0), dilations, gated tanh*sigmoid, skip sums, "
        "sow with reduce_fn/init_fn",
        tags=("mutable",),
    ),
    ZooCase(
        "seq_rnn_lstm_gru_bare",
        lambda: LstmGruStack(project=False),
        (_SEQ, _LENGTHS),
        notes="nn.RNN(OptimizedLSTMCell) as the first call: the mocked call is in its body "
        "(a transform of a method: named from flax.core.lift on the stack)",
        tags=("lifted",),
    ),
    ZooCase(
        "seq_s4d_lifted_root",
        BatchS4Stack,
        (_normal(2, 6, 3),),
        mutable=["intermediates"],
        notes="the annotated S4's BatchStackedModel: the applied module is an nn.vmap-ed class",
        tags=("lifted", "dtype", "mutable"),
    ),
]

# Cases that flaxmock does not handle yet; each names its standalone reproduction.
PENDING: list[ZooCase] = [
    # /tmp/wild/seq_init_branches.py: converted without variables, the tree records init's
    # extra calls of every branch (`if self.is_mutable_collection("params")`), which apply
    # skips: CallStructureError, whose message gives the fix (convert with
    # variables=jax.eval_shape(model.init, ...), which records apply's path; tested in
    # tests/test_lifted.py). The tests here convert abstract models without variables.
    ZooCase(
        "seq_switch_init_all_branches",
        SwitchExperts,
        (_normal(2, 5),),
        notes="nn.switch over experts with different variables, all run once at init",
        tags=("setup", "lifted"),
    ),
]
