"""Compiled CPU recurrences of the neural TPPs: RNN, GRU and the continuous-time LSTM, with fused backward passes.

Why: on a CPU with small batches (64 sequences, 32 hidden units) a recurrence is bound by the
per-step cost of autograd, not by arithmetic: torch's GRU backward runs about a dozen small
kernels per time step, and the continuous-time LSTM of the neural Hawkes process, written as a
Python loop, records ~20 autograd nodes per step. Here the forward pass runs once without a graph
(torch's own RNN kernels; a compiled loop for the CT-LSTM) and the backward pass is one compiled
reverse loop per batch: per step one small matrix product and fused element-wise gate algebra.
Everything that is parallel over time (the input projections and the weight gradients) stays one
large matrix product in torch.

The functions are drop-in: same values, same gradients (checked against torch's autograd by
``gradcheck`` in float64 in ``tests/tpp/neural/test_kernels.py``). On other devices, or when no
gradient is needed, the plain torch computation runs instead. The public face is
:class:`tpp.neural.layers.RecurrentHistory` (which re-exports :class:`Recurrence`) and the NHP's
CT-LSTM; this module is private.
"""

from __future__ import annotations

import enum

import numba
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from tpp.neural._fastmath import INLINE, JIT, exp_neg, runs_compiled, sigmoid, softplus, tanh, to_numpy

__all__ = [
    "Recurrence", "run_recurrence", "run_projected_recurrence", "compiled_recurrence_applies", "ctlstm_states",
    "ctlstm_states_reference",
]


class Recurrence(enum.Enum):
    """Cell of :class:`tpp.neural.layers.RecurrentHistory`."""

    GRU = "gru"
    RNN_TANH = "rnn_tanh"  # Elman RNN, bounded state (EasyTPP's RMTPP)
    RNN_RELU = "rnn_relu"  # Du et al. 2016, eq. 9: h_j = max(W y_j + W t_j + W h_{j-1} + b, 0)


# ---------------------------------------------------------------------------------------- compiled loops
# Layout rule, for the vectoriser: every quantity a loop stores goes to an array of its own (stores
# at offsets inside one array, or a branch on the step inside the loop, keep LLVM from vectorising).
@numba.njit(**INLINE)
def _copy_block(src, dst, offset):
    """``dst[:, offset : offset + H] = src`` for ``src [B, H]``."""
    for b in range(src.shape[0]):
        for j in range(src.shape[1]):
            dst[b, offset + j] = src[b, j]


@numba.njit(**JIT)
def _gru_forward(gi, w_hh_t, b_hh, h0):
    """GRU over ``gi [B, L, 3H]`` (input projections, torch's gate order r, z, n) from ``h0 [B, H]``.

    Returns the outputs and, for the reverse loop, ``r``, ``z``, ``n`` and ``W_hn h + b_hn``.
    """
    B, L, G = gi.shape
    H = G // 3
    out = np.empty((B, L, H), gi.dtype)
    rs = np.empty((B, L, H), gi.dtype)
    zs = np.empty((B, L, H), gi.dtype)
    ns = np.empty((B, L, H), gi.dtype)
    ghns = np.empty((B, L, H), gi.dtype)
    h = h0.copy()
    gh = np.empty((B, G), gi.dtype)
    for t in range(L):
        np.dot(h, w_hh_t, gh)
        for b in range(B):
            for j in range(H):
                r = sigmoid(gi[b, t, j] + gh[b, j] + b_hh[j])
                z = sigmoid(gi[b, t, H + j] + gh[b, H + j] + b_hh[H + j])
                ghn = gh[b, 2 * H + j] + b_hh[2 * H + j]
                n = tanh(gi[b, t, 2 * H + j] + r * ghn)
                out[b, t, j] = (1.0 - z) * n + z * h[b, j]
                rs[b, t, j] = r
                zs[b, t, j] = z
                ns[b, t, j] = n
                ghns[b, t, j] = ghn
        for b in range(B):
            for j in range(H):
                h[b, j] = out[b, t, j]
    return out, (rs, zs, ns, ghns)


@numba.njit(**JIT)
def _gru_reverse(dout, rs, zs, ns, ghns, h_prev, w_hh):
    """Reverse loop of the GRU: gradients of the input and recurrent pre-activations, and of ``h0``."""
    B, L, H = dout.shape
    dgi = np.empty((B, L, 3 * H), dout.dtype)
    dr_ = np.empty((B, H), dout.dtype)
    dz_ = np.empty((B, H), dout.dtype)
    dn_ = np.empty((B, H), dout.dtype)
    dnr = np.empty((B, H), dout.dtype)
    direct = np.empty((B, H), dout.dtype)
    dh = np.zeros((B, H), dout.dtype)
    step = np.empty((B, 3 * H), dout.dtype)
    back = np.empty((B, H), dout.dtype)
    dgh = np.empty((B, L, 3 * H), dout.dtype)
    for t in range(L - 1, -1, -1):
        for b in range(B):
            for j in range(H):
                g = dout[b, t, j] + dh[b, j]
                r = rs[b, t, j]
                z = zs[b, t, j]
                n = ns[b, t, j]
                dn = g * (1.0 - z) * (1.0 - n * n)
                dz_[b, j] = g * (h_prev[b, t, j] - n) * z * (1.0 - z)
                dr_[b, j] = dn * ghns[b, t, j] * r * (1.0 - r)
                dn_[b, j] = dn
                dnr[b, j] = dn * r
                direct[b, j] = g * z
        _copy_block(dr_, step, 0)
        _copy_block(dz_, step, H)
        _copy_block(dnr, step, 2 * H)
        np.dot(step, w_hh, back)
        for b in range(B):
            for j in range(H):
                dh[b, j] = direct[b, j] + back[b, j]
        for b in range(B):
            for k in range(3 * H):
                dgh[b, t, k] = step[b, k]
        for b in range(B):
            for j in range(H):
                dgi[b, t, j] = dr_[b, j]
        for b in range(B):
            for j in range(H):
                dgi[b, t, H + j] = dz_[b, j]
        for b in range(B):
            for j in range(H):
                dgi[b, t, 2 * H + j] = dn_[b, j]
    return dgi, dgh, dh


@numba.njit(**JIT)
def _rnn_forward(gi, w_hh_t, b_hh, h0, relu):
    """Elman RNN over ``gi [B, L, H]`` (input projections) from ``h0 [B, H]``."""
    B, L, H = gi.shape
    out = np.empty((B, L, H), gi.dtype)
    h = h0.copy()
    pre = np.empty((B, H), gi.dtype)
    for t in range(L):
        np.dot(h, w_hh_t, pre)
        if relu:
            for b in range(B):
                for j in range(H):
                    out[b, t, j] = max(gi[b, t, j] + pre[b, j] + b_hh[j], 0.0)
        else:
            for b in range(B):
                for j in range(H):
                    out[b, t, j] = tanh(gi[b, t, j] + pre[b, j] + b_hh[j])
        for b in range(B):
            for j in range(H):
                h[b, j] = out[b, t, j]
    return out


@numba.njit(**JIT)
def _rnn_reverse(dout, out, w_hh, relu):
    """Reverse loop of an Elman RNN: gradient of the pre-activation at every step, and of ``h0``."""
    B, L, H = dout.shape
    dpre = np.empty((B, L, H), dout.dtype)
    dh = np.zeros((B, H), dout.dtype)
    step = np.empty((B, H), dout.dtype)
    for t in range(L - 1, -1, -1):
        if relu:
            for b in range(B):
                for j in range(H):
                    step[b, j] = (dout[b, t, j] + dh[b, j]) * (out[b, t, j] > 0.0)
        else:
            for b in range(B):
                for j in range(H):
                    y = out[b, t, j]
                    step[b, j] = (dout[b, t, j] + dh[b, j]) * (1.0 - y * y)
        np.dot(step, w_hh, dh)
        for b in range(B):
            for j in range(H):
                dpre[b, t, j] = step[b, j]
    return dpre, dh


@numba.njit(**JIT)
def _decay_rates(gx, gh, s, deltas, sds):
    """``delta = softplus(d)`` and ``sigmoid(d)`` at step ``s`` (its own function: inside the long step
    body the compiler leaves this loop scalar, ten times slower)."""
    B, _, H = deltas.shape
    for b in range(B):
        for j in range(H):
            d = gx[b, s, 6 * H + j] + gh[b, 6 * H + j]
            deltas[b, s, j] = softplus(d)
            sds[b, s, j] = sigmoid(d)


@numba.njit(**JIT)
def _decay_factors(deltas, gaps, s, es):
    """``exp(-delta gap)`` of the states of step ``s - 1`` over the gap to input ``s``."""
    B, _, H = deltas.shape
    for b in range(B):
        gap = gaps[b, s - 1]
        for j in range(H):
            es[b, s, j] = exp_neg(deltas[b, s - 1, j] * gap)


@numba.njit(**JIT)
def _ctlstm_forward(gx, w_h_t, gaps):
    """Forward loop of the continuous-time LSTM.

    ``gx [B, L+1, 7H]`` input part of the gates (position 0 is the begin-of-sequence input), ``w_h_t
    [H, 7H]`` the recurrent weight transposed, ``gaps [B, L]``. Returns the states ``(c, c_bar, delta,
    o)`` and, for the reverse loop, the gate activations and the decayed cell before each input.
    """
    B, L1, G = gx.shape
    H = G // 7
    shape = (B, L1, H)
    cs, cbs, deltas, os_ = np.empty(shape, gx.dtype), np.empty(shape, gx.dtype), np.empty(shape, gx.dtype), np.empty(shape, gx.dtype)
    i_s, fs, zs = np.empty(shape, gx.dtype), np.empty(shape, gx.dtype), np.empty(shape, gx.dtype)
    ibs, fbs, sds = np.empty(shape, gx.dtype), np.empty(shape, gx.dtype), np.empty(shape, gx.dtype)
    cts, ths, es = np.zeros(shape, gx.dtype), np.zeros(shape, gx.dtype), np.zeros(shape, gx.dtype)
    h = np.zeros((B, H), gx.dtype)  # h(t) just before the current input
    ct = np.zeros((B, H), gx.dtype)  # c(t) just before the current input
    cb_prev = np.zeros((B, H), gx.dtype)
    gh = np.zeros((B, G), gx.dtype)
    for s in range(L1):
        if s > 0:
            # Small loops: one long loop body with every transcendental is left unvectorised.
            _decay_factors(deltas, gaps, s, es)
            for b in range(B):
                for j in range(H):
                    c = cs[b, s - 1, j]
                    cb = cbs[b, s - 1, j]
                    ctv = cb + (c - cb) * es[b, s, j]
                    th = tanh(ctv)
                    cts[b, s, j] = ctv
                    ths[b, s, j] = th
                    ct[b, j] = ctv
                    h[b, j] = os_[b, s - 1, j] * th
                    cb_prev[b, j] = cb
            np.dot(h, w_h_t, gh)
        for b in range(B):
            for j in range(H):
                i = sigmoid(gx[b, s, j] + gh[b, j])
                f = sigmoid(gx[b, s, H + j] + gh[b, H + j])
                zz = tanh(gx[b, s, 2 * H + j] + gh[b, 2 * H + j])
                o = sigmoid(gx[b, s, 3 * H + j] + gh[b, 3 * H + j])
                ib = sigmoid(gx[b, s, 4 * H + j] + gh[b, 4 * H + j])
                fb = sigmoid(gx[b, s, 5 * H + j] + gh[b, 5 * H + j])
                cs[b, s, j] = f * ct[b, j] + i * zz
                cbs[b, s, j] = fb * cb_prev[b, j] + ib * zz
                os_[b, s, j] = o
                i_s[b, s, j] = i
                fs[b, s, j] = f
                zs[b, s, j] = zz
                ibs[b, s, j] = ib
                fbs[b, s, j] = fb
        _decay_rates(gx, gh, s, deltas, sds)
    return (cs, cbs, deltas, os_), (i_s, fs, zs, ibs, fbs, sds), (cts, ths, es)


@numba.njit(**JIT)
def _ctlstm_reverse(dcs, dcbs, ddeltas, dos, states, acts, decayed, gaps, w_h):
    """Reverse loop of the continuous-time LSTM: gradients of the gate pre-activations ``[B, L+1, 7H]``."""
    cs, cbs, deltas, os_ = states
    i_s, fs, zs, ibs, fbs, sds = acts
    cts, ths, es = decayed
    B, L1, H = dcs.shape
    dg = np.empty((B, L1, 7 * H), dcs.dtype)
    carry_c, carry_cb = np.zeros((B, H), dcs.dtype), np.zeros((B, H), dcs.dtype)
    carry_d, carry_o = np.zeros((B, H), dcs.dtype), np.zeros((B, H), dcs.dtype)
    blocks = np.empty((7, B, H), dcs.dtype)
    cb_prev = np.zeros((B, H), dcs.dtype)
    step = np.empty((B, 7 * H), dcs.dtype)
    dh = np.empty((B, H), dcs.dtype)
    for s in range(L1 - 1, -1, -1):
        if s > 0:
            for b in range(B):
                for j in range(H):
                    cb_prev[b, j] = cbs[b, s - 1, j]
        else:
            cb_prev[:, :] = 0.0
        g_i, g_f, g_z, g_o, g_ib, g_fb, g_d = blocks[0], blocks[1], blocks[2], blocks[3], blocks[4], blocks[5], blocks[6]
        for b in range(B):
            for j in range(H):
                dc = dcs[b, s, j] + carry_c[b, j]
                dcb = dcbs[b, s, j] + carry_cb[b, j]
                i = i_s[b, s, j]
                f = fs[b, s, j]
                zz = zs[b, s, j]
                o = os_[b, s, j]
                ib = ibs[b, s, j]
                fb = fbs[b, s, j]
                dzz = dc * i + dcb * ib
                g_i[b, j] = dc * zz * i * (1.0 - i)
                g_f[b, j] = dc * cts[b, s, j] * f * (1.0 - f)
                g_z[b, j] = dzz * (1.0 - zz * zz)
                g_o[b, j] = (dos[b, s, j] + carry_o[b, j]) * o * (1.0 - o)
                g_ib[b, j] = dcb * zz * ib * (1.0 - ib)
                g_fb[b, j] = dcb * cb_prev[b, j] * fb * (1.0 - fb)
                g_d[b, j] = (ddeltas[b, s, j] + carry_d[b, j]) * sds[b, s, j]
                carry_c[b, j] = dc * f  # d c(t) so far; finished below once dh is known
                carry_cb[b, j] = dcb * fb
        for k in range(7):
            _copy_block(blocks[k], step, k * H)
        for b in range(B):
            for k in range(7 * H):
                dg[b, s, k] = step[b, k]
        if s == 0:
            break
        np.dot(step, w_h, dh)
        for b in range(B):
            gap = gaps[b, s - 1]
            for j in range(H):
                th = ths[b, s, j]
                e = es[b, s, j]
                dct = carry_c[b, j] + dh[b, j] * os_[b, s - 1, j] * (1.0 - th * th)
                carry_c[b, j] = dct * e
                carry_cb[b, j] = carry_cb[b, j] + dct * (1.0 - e)
                carry_d[b, j] = -dct * (cs[b, s - 1, j] - cbs[b, s - 1, j]) * e * gap
                carry_o[b, j] = dh[b, j] * th
    return dg


# ---------------------------------------------------------------------------------------- RNN / GRU
def _torch_recurrence(kind: Recurrence, x: Tensor, h0: Tensor, params: tuple[Tensor, ...]) -> Tensor:
    """torch's own kernels (other devices, and the reference the tests compare with)."""
    fn = {Recurrence.GRU: torch.gru, Recurrence.RNN_TANH: torch.rnn_tanh, Recurrence.RNN_RELU: torch.rnn_relu}[kind]
    return fn(x, h0[None].contiguous(), params, True, 1, 0.0, False, False, True)[0]


def _compiled_forward(kind: Recurrence, gi: Tensor, h0: Tensor, w_hh: Tensor,
                      b_hh: Tensor) -> tuple[np.ndarray, np.ndarray | None]:
    if kind is Recurrence.GRU:
        return _gru_forward(to_numpy(gi), to_numpy(w_hh.t()), to_numpy(b_hh), to_numpy(h0))
    relu = kind is Recurrence.RNN_RELU
    return _rnn_forward(to_numpy(gi), to_numpy(w_hh.t()), to_numpy(b_hh), to_numpy(h0), relu), None


class _CompiledRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kind, gi, h0, w_hh, b_hh):  # type: ignore[override]
        out, saved = _compiled_forward(kind, gi, h0, w_hh, b_hh)
        out = torch.from_numpy(out)
        ctx.kind = kind
        ctx.saved = saved
        ctx.save_for_backward(h0, w_hh, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):  # type: ignore[override]
        h0, w_hh, out = ctx.saved_tensors
        B, L, H = out.shape
        h_prev = torch.cat([h0[:, None], out[:, :-1]], 1)
        if ctx.kind is Recurrence.GRU:
            dgi, dgh, dh0 = _gru_reverse(to_numpy(dout), *ctx.saved, to_numpy(h_prev), to_numpy(w_hh))
            dgi, dgh = torch.from_numpy(dgi), torch.from_numpy(dgh)
        else:
            dpre, dh0 = _rnn_reverse(to_numpy(dout), out.numpy(), to_numpy(w_hh), ctx.kind is Recurrence.RNN_RELU)
            dgi = dgh = torch.from_numpy(dpre)
        # What is parallel over time is one matrix product.
        dgh2 = dgh.view(B * L, -1)
        dw_hh = dgh2.t() @ h_prev.reshape(B * L, H)
        return None, dgi, torch.from_numpy(dh0), dw_hh, dgh2.sum(0)




def compiled_recurrence_applies(rnn: nn.RNNBase, h0: Tensor) -> bool:
    """Whether :func:`run_projected_recurrence` can run ``rnn`` from ``h0`` (CPU, float32/64)."""
    return runs_compiled(h0, rnn.weight_hh_l0, rnn.bias_hh_l0)


def run_projected_recurrence(kind: Recurrence, rnn: nn.RNNBase, gi: Tensor, h0: Tensor) -> Tensor:
    """Outputs ``[B, L, H]`` of the one-layer ``rnn`` given its input projections ``gi = W_ih x + b_ih``
    ``[B, L, G]`` (CPU only: see :func:`compiled_recurrence_applies`).

    Taking the projections lets a caller form them more cheaply than from ``x``: when the input is a
    mark embedding and one time feature, ``W_ih x`` is a row of a ``[K + 1, G]`` table plus a scaled
    column (:class:`tpp.neural.layers.RecurrentHistory`).
    """
    w_hh, b_hh = rnn.weight_hh_l0, rnn.bias_hh_l0
    if gi.dtype in (torch.bfloat16, torch.float16):  # autocast's products: the loop runs in the weights' dtype
        gi = gi.to(w_hh.dtype)
    if gi.shape[1] == 0:
        return gi.new_zeros(gi.shape[0], 0, h0.shape[-1])
    if torch.is_grad_enabled() and any(t.requires_grad for t in (gi, h0, w_hh, b_hh)):
        return _CompiledRecurrence.apply(kind, gi, h0, w_hh, b_hh)
    return torch.from_numpy(_compiled_forward(kind, gi, h0, w_hh, b_hh)[0])


def run_recurrence(kind: Recurrence, rnn: nn.RNNBase, x: Tensor, h0: Tensor) -> Tensor:
    """Outputs ``[B, L, H]`` of the one-layer ``rnn`` (an ``nn.GRU`` or ``nn.RNN``, batch first) from ``h0 [B, H]``."""
    params = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
    if not runs_compiled(x, h0, *params) or x.shape[1] == 0:
        return _torch_recurrence(kind, x, h0, params)
    return run_projected_recurrence(kind, rnn, F.linear(x, rnn.weight_ih_l0, rnn.bias_ih_l0), h0)


# ---------------------------------------------------------------------------------------- CT-LSTM
def ctlstm_states_reference(gx: Tensor, w_h: Tensor, gaps: Tensor) -> Tensor:
    """The continuous-time LSTM (Mei & Eisner 2017, eqs. 5-7) as plain torch ops: ``[B, L+1, 4H]``.

    ``gx [B, L+1, 7H]`` is the input part of the gates (``W_x x + b``; position 0 the BOS input),
    ``w_h [7H, H]`` the recurrent weight, ``gaps [B, L]`` the time from each state to the next input.
    States are ``(c, c_bar, delta, o)``: after input ``s`` the cell decays as
    ``c(t) = c_bar + (c - c_bar) exp(-delta (t - t_s))``, ``h(t) = o tanh(c(t))``.
    """
    B, L1, G = gx.shape
    H = G // 7
    zero = gx.new_zeros(B, H)
    c_t, c_bar, h = zero, zero, zero
    states = []
    for s in range(L1):
        gates = gx[:, s] + (h @ w_h.t() if s > 0 else 0.0)
        i, f, z, o, i_bar, f_bar, d = gates.chunk(7, -1)
        i, f, o, i_bar, f_bar = (torch.sigmoid(g) for g in (i, f, o, i_bar, f_bar))
        z = torch.tanh(z)
        c = f * c_t + i * z
        c_bar = f_bar * c_bar + i_bar * z
        delta = F.softplus(d)
        states.append(torch.cat([c, c_bar, delta, o], -1))
        if s + 1 < L1:
            c_t = c_bar + (c - c_bar) * torch.exp(-delta * gaps[:, s, None])
            h = o * torch.tanh(c_t)
    return torch.stack(states, 1)


class _CompiledCTLSTM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gx, w_h, gaps):  # type: ignore[override]
        states, acts, decayed = _ctlstm_forward(to_numpy(gx), to_numpy(w_h.t()), to_numpy(gaps))
        ctx.arrays = (states, acts, decayed)
        ctx.save_for_backward(w_h, gaps)
        return torch.from_numpy(np.concatenate(states, -1))

    @staticmethod
    @once_differentiable
    def backward(ctx, dstates):  # type: ignore[override]
        w_h, gaps = ctx.saved_tensors
        states, acts, decayed = ctx.arrays
        parts = [np.ascontiguousarray(part) for part in np.split(dstates.numpy(), 4, axis=-1)]
        dg = torch.from_numpy(_ctlstm_reverse(*parts, states, acts, decayed, to_numpy(gaps), to_numpy(w_h)))
        B, L1, H = states[0].shape
        # h just before each input, in bulk: o_{s-1} tanh(c(t_s)); 0 before the BOS input.
        o, th = torch.from_numpy(states[3]), torch.from_numpy(decayed[1])
        hs = torch.cat([o.new_zeros(B, 1, H), o[:, :-1] * th[:, 1:]], 1)
        dw_h = dg.reshape(B * L1, -1).t() @ hs.reshape(B * L1, H)
        return dg, dw_h, None


def ctlstm_states(gx: Tensor, w_h: Tensor, gaps: Tensor) -> Tensor:
    """:func:`ctlstm_states_reference` with a compiled loop and reverse pass on CPU (same values and gradients)."""
    if not runs_compiled(gx, w_h, gaps) or gaps.requires_grad:
        return ctlstm_states_reference(gx, w_h, gaps)
    if torch.is_grad_enabled() and (gx.requires_grad or w_h.requires_grad):
        return _CompiledCTLSTM.apply(gx, w_h, gaps)
    return torch.from_numpy(np.concatenate(_ctlstm_forward(to_numpy(gx), to_numpy(w_h.t()), to_numpy(gaps))[0], -1))

