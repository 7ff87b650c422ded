"""Compiled CPU Gauss-Legendre compensators of SAHP and THP: the interval integrals of their intensities.

The compensator of a state model integrates ``intensity_after(state_n, s)`` over ``s in [0, tau_n]``
with a Gauss-Legendre rule. In torch that is a dozen element-wise kernels over ``[B, L + 1, P, K]``
and as many again for their gradients; here it is one pass each way, with the gradient written out
by hand (checked against torch's autograd by ``gradcheck`` in float64 in
``tests/tpp/neural/test_kernels.py``). Where the compiled path does not apply (another device,
mixed dtypes) the functions return None and the model integrates in torch. Private: the models
(:mod:`tpp.neural.sahp`, :mod:`tpp.neural.thp`) are the public face.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from tpp.neural._fastmath import JIT, exp_neg, runs_compiled, sigmoid, softplus, to_numpy

__all__ = ["sahp_interval_integral", "thp_interval_integral"]


# Layout, for the vectoriser: per type ``k`` and node ``p`` an inner loop over the ``N = B (L + 1)``
# intervals, contiguous in ``[K, N]`` arrays. ``nodes`` / ``weights``: the rule on [0, 1] (an
# interval's nodes are ``tau x_p``, its weights ``tau w_p``).
@numba.njit(**JIT)
def _sahp_integral(mu, jump, rate, nodes, weights):
    """``sum_p w_p softplus(mu + jump exp(-rate x_p))`` for ``[K, N]`` arrays (``jump = eta - mu``,
    ``rate = gamma tau``); the caller multiplies by ``tau``."""
    K, N = mu.shape
    out = np.zeros((K, N), mu.dtype)
    for k in range(K):
        for p in range(nodes.shape[0]):
            x = nodes[p]
            w = weights[p]
            for n in range(N):
                out[k, n] += w * softplus(mu[k, n] + jump[k, n] * exp_neg(rate[k, n] * x))
    return out


@numba.njit(**JIT)
def _sahp_integral_grad(mu, jump, rate, nodes, weights):
    """Derivatives of :func:`_sahp_integral` with respect to ``mu``, ``eta`` and ``rate`` (each ``[K, N]``)."""
    K, N = mu.shape
    d_mu = np.zeros((K, N), mu.dtype)
    d_eta = np.zeros((K, N), mu.dtype)
    d_rate = np.zeros((K, N), mu.dtype)
    for k in range(K):
        for p in range(nodes.shape[0]):
            x = nodes[p]
            w = weights[p]
            for n in range(N):
                e = exp_neg(rate[k, n] * x)
                s = w * sigmoid(mu[k, n] + jump[k, n] * e)
                d_mu[k, n] += s - s * e
                d_eta[k, n] += s * e
                d_rate[k, n] -= s * jump[k, n] * e * x
    return d_mu, d_eta, d_rate


@numba.njit(**JIT)
def _thp_integral(base, ratio, slope, nodes, weights):
    """``sum_p w_p softplus(base + slope_k ratio x_p)`` for ``base [K, N]`` (``head / s``), ``ratio [N]``
    (``tau / (t_n - t_start + 1)``) and ``slope [K]`` (``alpha / s``); the caller multiplies by ``s tau``."""
    K, N = base.shape
    out = np.zeros((K, N), base.dtype)
    for k in range(K):
        for p in range(nodes.shape[0]):
            c = slope[k] * nodes[p]
            w = weights[p]
            for n in range(N):
                out[k, n] += w * softplus(base[k, n] + c * ratio[n])
    return out


@numba.njit(**JIT)
def _thp_integral_grad(base, ratio, slope, nodes, weights):
    """Sums over the nodes behind the gradients of :func:`_thp_integral`: ``w sigmoid(y)``, ``w sigmoid(y) x``
    and ``w (softplus(y) - y sigmoid(y))`` at ``y = base + slope ratio x`` (each ``[K, N]``)."""
    K, N = base.shape
    sig = np.zeros((K, N), base.dtype)
    sig_x = np.zeros((K, N), base.dtype)
    scale_term = np.zeros((K, N), base.dtype)
    for k in range(K):
        for p in range(nodes.shape[0]):
            x = nodes[p]
            c = slope[k] * x
            w = weights[p]
            for n in range(N):
                y = base[k, n] + c * ratio[n]
                s = w * sigmoid(y)
                sig[k, n] += s
                sig_x[k, n] += s * x
                scale_term[k, n] += w * softplus(y) - s * y
    return sig, sig_x, scale_term


@functools.lru_cache(maxsize=64)
def _unit_rule(num_points: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(num_points)
    return ((x + 1) / 2).astype(dtype), (w / 2).astype(dtype)


def _columns(t: Tensor) -> np.ndarray:
    """``[B, I, K]`` -> contiguous ``[K, B I]``."""
    return np.ascontiguousarray(to_numpy(t).reshape(-1, t.shape[-1]).T)


def _rows(a: np.ndarray, like: Tensor) -> Tensor:
    """``[K, B I]`` -> ``[B, I, K]`` like ``like``."""
    return torch.from_numpy(np.ascontiguousarray(a.T)).view(like.shape[:-1] + (a.shape[0],))


class _SAHPIntegral(torch.autograd.Function):
    @staticmethod
    def forward(ctx, params, tau, num_points):  # type: ignore[override]
        mu, eta, gamma = params.detach().chunk(3, -1)
        tau_row = to_numpy(tau).reshape(-1)
        arrays = (_columns(mu), _columns(eta - mu), _columns(gamma) * tau_row)
        ctx.rule = _unit_rule(num_points, tau_row.dtype)
        ctx.arrays = arrays
        ctx.save_for_backward(tau)
        return _rows(_sahp_integral(*arrays, *ctx.rule) * tau_row, mu)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        (tau,) = ctx.saved_tensors
        tau_row = to_numpy(tau).reshape(-1)
        g = _columns(grad) * tau_row
        d_mu, d_eta, d_rate = _sahp_integral_grad(*ctx.arrays, *ctx.rule)
        parts = (g * d_mu, g * d_eta, g * d_rate * tau_row)
        return torch.cat([_rows(part, grad) for part in parts], -1), None, None


class _THPIntegral(torch.autograd.Function):
    @staticmethod
    def forward(ctx, head, alpha, log_scale, tau, time_scale, num_points):  # type: ignore[override]
        scale = log_scale.detach().exp()
        tau_row = to_numpy(tau).reshape(-1)
        base = _columns(head.detach() / scale)
        ratio = tau_row * to_numpy(time_scale).reshape(-1)
        slope = to_numpy(alpha.detach() / scale)
        ctx.rule = _unit_rule(num_points, tau_row.dtype)
        ctx.arrays = (base, ratio, slope)
        ctx.save_for_backward(scale, tau)
        return _rows(_thp_integral(base, ratio, slope, *ctx.rule) * tau_row * to_numpy(scale)[:, None], head)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        scale, tau = ctx.saved_tensors
        base, ratio, slope = ctx.arrays
        tau_row = to_numpy(tau).reshape(-1)
        g = _columns(grad) * tau_row
        sig, sig_x, scale_term = _thp_integral_grad(base, ratio, slope, *ctx.rule)
        d_head = _rows(g * sig, grad)
        d_alpha = torch.from_numpy((g * sig_x * ratio).sum(1, dtype=np.float64)).to(grad.dtype)
        d_log_scale = torch.from_numpy((g * scale_term).sum(1, dtype=np.float64)).to(grad.dtype) * scale
        return d_head, d_alpha, d_log_scale, None, None, None


def sahp_interval_integral(params: Tensor, tau: Tensor, num_points: int) -> Tensor | None:
    """``[B, I, K]`` Gauss-Legendre integral of ``softplus(mu + (eta - mu) exp(-gamma s))`` over ``s in [0, tau]``
    for ``params = (mu, eta, gamma) [B, I, 3K]`` and ``tau [B, I]`` (cast to the parameters' dtype), compiled
    on CPU; None where the compiled path does not apply (the caller integrates in torch)."""
    tau = tau.to(params.dtype)
    if not runs_compiled(params, tau):
        return None
    return _SAHPIntegral.apply(params, tau, num_points)


def thp_interval_integral(head: Tensor, time_scale: Tensor, alpha: Tensor, log_scale: Tensor, tau: Tensor,
                          num_points: int) -> Tensor | None:
    """``[B, I, K]`` Gauss-Legendre integral of ``s_k softplus((alpha_k r s' + head_k) / s_k)`` over ``s' in [0, tau]``
    with ``r = time_scale [B, I]`` (no gradient) and ``s = exp(log_scale)``, compiled on CPU; None where the
    compiled path does not apply."""
    tau = tau.to(head.dtype)
    if not runs_compiled(head, time_scale, alpha, log_scale, tau):
        return None
    return _THPIntegral.apply(head, alpha, log_scale, tau, time_scale.detach(), num_points)
