"""Nonlinear multivariate Hawkes process with signed (inhibitory or exciting) exponential kernels.

``lambda_k(t) = link(x_k(t))``, ``x_k(t) = mu_k + sum_j sum_{t_m^j < t} phi_kj(t - t_m^j)``,
``phi_kj(s) = sum_u A[k, j, u] beta_u exp(-beta_u s)`` with ``A`` of any sign (a negative entry: type
``j`` inhibits type ``k``; tick's convention, row ``k`` the target, column ``j`` the source). Links:
``"softplus"`` (``log(1 + e^x)``, the default), ``"relu"`` (``max(x, 0)``), ``"exp"`` and
``"identity"`` (the linear Hawkes process: with ``mu > 0, A >= 0`` it is :class:`~tpp.hawkes.ExpHawkes`).

* The pre-activation follows the O(N K U) exponential recursion (Ozaki 1979): with
  ``R[j, u](t) = sum_{t_m^j <= t} exp(-beta_u (t - t_m))`` after each event (compiled, with its
  derivative in ``beta``), ``x`` at any later time is a decay of the state at the last earlier event.
  Events at equal times do not excite one another (as in :mod:`tpp.hawkes._recursion`).
* Exact log-likelihood ``sum_n log lambda_{k_n}(t_n) - sum_k int lambda_k``. Between events
  ``x_k(t_n + s) = mu_k + sum_u c[n, k, u] exp(-beta_u s)``; its integral under the link is
  closed form for ``"identity"``, for ``"relu"`` with one decay (``x`` is monotone: cut at its zero)
  and for ``"exp"`` with one decay (``e^mu / beta * (Ei(c) - Ei(c e^{-beta s}))``, exponential
  integral). Elsewhere (softplus; relu/exp with several decays) it is an adaptive Gauss-Legendre
  rule (:func:`integrate_between_events`): each interval is cut into geometric panels of
  ``1/(4 beta_max)``, ``2/(4 beta_max)``, ``4/(4 beta_max)``, ... (the excitation decays
  exponentially, so late panels may be long), and a panel is halved until its 16- and 8-point
  rules agree to ``max(tol * width / W, 1e-14 |integral|)`` summed over the marks (``W``: total
  window length of the batch). The estimated error of the compensator of the batch is therefore at
  most ``tol`` (default ``1e-10``) plus a relative ``1e-14`` round-off floor, and the 16-point value
  kept is far more accurate than that estimate for smooth integrands. The estimate of the last
  evaluation is ``compensator_error_``.
* Maximum likelihood by L-BFGS-B (scipy) on ``(mu, A, log beta)`` with torch autograd gradients;
  standard errors from the observed information (finite differences of the gradient).
* Exact simulation by Ogata's thinning: between events each ``c[k, u] exp(-beta_u s)`` shrinks
  towards 0 whatever its sign, so ``link(mu_k + sum_u max(c[k, u], 0))`` (the link is non-decreasing)
  bounds ``lambda_k`` until the next event; recomputed after each candidate.

Unlike the linear model, a nonlinear link is not invariant under a change of the time unit (only
relu, identity and exp are): ``softplus`` acts on the intensity in the data's own unit, so the fit
works in that unit (not standardised as :class:`ExpHawkes` does).
"""

from __future__ import annotations

import enum
import math
import time as _time
import warnings
from collections.abc import Sequence
from typing import Any

import numba
import numpy as np
import scipy.optimize
import scipy.special
import torch
from torch import Tensor, nn

from tpp.compensator import gauss_legendre
from tpp.events import EventBatch
from tpp.hawkes._common import (FitResult, assemble, budget_error, check_fit_arguments, check_parameter_size,
                                record_validation, simulation_window)
from tpp.hawkes._common import flat_events as _flat
from tpp.hawkes._common import observed_information
from tpp.model import Seed
from tpp.options import Interval, Options, check_params
from tpp.process import PointProcess, as_numpy_rng

__all__ = ["Link", "NonlinearHawkes", "integrate_between_events", "simulate_from_states"]

_JIT = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")


class Link(str, enum.Enum):
    """The non-decreasing function that maps the pre-activation ``x`` to the intensity."""

    SOFTPLUS = "softplus"  #: ``log(1 + e^x)``
    RELU = "relu"  #: ``max(x, 0)``
    EXP = "exp"  #: ``e^x``
    IDENTITY = "identity"  #: ``x`` (the linear Hawkes process; needs ``x > 0``)


_LINK_CODE = {Link.SOFTPLUS: 0, Link.RELU: 1, Link.EXP: 2, Link.IDENTITY: 3}


def _apply_link(link: Link, x: Tensor) -> Tensor:
    if link is Link.SOFTPLUS:
        return torch.logaddexp(x, torch.zeros_like(x))  # exact (torch's softplus is linear above 20)
    if link is Link.RELU:
        return x.clamp_min(0.0)
    if link is Link.EXP:
        return x.exp()
    return x


def _log_link(link: Link, x: Tensor) -> Tensor:
    if link is Link.EXP:
        return x  # log e^x without overflow
    if link is Link.SOFTPLUS:
        # log(log1p(e^x)): for very negative x, log1p(e^x) underflows; there log softplus(x) = x + log1p(-e^x/2 ...)
        sp = torch.logaddexp(x, torch.zeros_like(x))
        small = x < -30
        return torch.where(small, x - 0.5 * x.clamp_max(-30).exp(), sp.clamp_min(1e-300).log())
    return _apply_link(link, x).log()


def _inverse_link(link: Link, rate: np.ndarray) -> np.ndarray:
    """The pre-activation whose intensity is ``rate`` (the Poisson start of the fit)."""
    if link is Link.SOFTPLUS:
        return rate + np.log(-np.expm1(-rate))
    if link is Link.EXP:
        return np.log(rate)
    return rate


# ------------------------------------------------------------------------------------------ compiled loops
@numba.njit(**_JIT)
def _inclusive_states(times: np.ndarray, marks: np.ndarray, offsets: np.ndarray, beta: np.ndarray, num_marks: int):
    """``R[n, j, u] = sum_{m <= n, mark_m = j} exp(-beta_u (t_n - t_m))`` within each sequence, its
    derivative ``dR[n, j, u]`` in ``beta_u``, and ``prev[n]``: the last event of the sequence strictly
    before ``t_n`` (-1 if none; events tied with ``t_n`` are not before it)."""
    N = times.size
    U = beta.size
    R = np.zeros((N, num_marks, U))
    dR = np.zeros((N, num_marks, U))
    prev = np.full(N, -1, np.int64)
    for b in range(offsets.size - 1):
        for n in range(offsets[b], offsets[b + 1]):
            if n > offsets[b]:
                dt = times[n] - times[n - 1]
                prev[n] = n - 1 if dt > 0 else prev[n - 1]
                for u in range(U):
                    decay = math.exp(-beta[u] * dt)
                    for j in range(num_marks):
                        dR[n, j, u] = decay * (dR[n - 1, j, u] - dt * R[n - 1, j, u])
                        R[n, j, u] = decay * R[n - 1, j, u]
            for u in range(U):
                R[n, marks[n], u] += 1.0
    return R, dR, prev


@numba.njit(**_JIT)
def _link_value(code: int, x: float) -> float:
    if code == 0:
        return max(x, 0.0) + math.log1p(math.exp(-abs(x)))
    if code == 1 or code == 3:  # a negative linear intensity cannot fire: clamp at 0
        return max(x, 0.0)
    return math.exp(x)


@numba.njit(**_JIT)
def _seed(seed: int) -> None:
    np.random.seed(seed)


def simulate_from_states(link: Link | str, baseline: np.ndarray, adjacency: np.ndarray, decays: np.ndarray,
                         starts: np.ndarray, ends: np.ndarray, init_state: np.ndarray, max_events: int, seed: int
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Exact thinning of ``B`` nonlinear Hawkes sequences on ``(starts[b], ends[b]]``, each from the excitation
    state ``init_state [B, K, U]`` (``R[j, u]``: the decayed sum of earlier type-``j`` events at decay ``u``), the
    adjacency ``[K, K, U]`` and the compiled sampler seeded with ``seed``. Returns the concatenated times and
    marks, the counts per sequence and the first sequence that passed ``max_events`` in total (-1 if none).
    :meth:`NonlinearHawkes.sample` and :class:`tpp.control.HawkesInterventionEnv` step through it."""
    _seed(int(seed))
    return _simulate(_LINK_CODE[Link(link)], np.ascontiguousarray(baseline, np.float64),
                     np.ascontiguousarray(adjacency, np.float64), np.ascontiguousarray(decays, np.float64),
                     np.ascontiguousarray(starts, np.float64), np.ascontiguousarray(ends, np.float64),
                     np.ascontiguousarray(init_state, np.float64), int(max_events))


@numba.njit(**_JIT)
def _simulate(code: int, mu: np.ndarray, adjacency: np.ndarray, beta: np.ndarray, starts: np.ndarray,
              ends: np.ndarray, init_state: np.ndarray, max_events: int):
    """Ogata's thinning with the bound ``sum_k link(mu_k + sum_u max(c[k, u], 0))`` (valid until the
    next event: each ``c[k, u]`` decays towards 0). ``c[k, u] = sum_j A[k, j, u] beta_u R[j, u]``.
    Returns concatenated times, marks, counts per sequence and the sequence that passed ``max_events``
    (-1 if none). Seed with :func:`_seed` first."""
    K = mu.size
    U = beta.size
    B = starts.size
    capacity = 1024
    out_t = np.empty(capacity)
    out_m = np.empty(capacity, np.int64)
    counts = np.zeros(B, np.int64)
    c = np.zeros((K, U))
    lam = np.zeros(K)
    total_events = 0
    for b in range(B):
        for k in range(K):
            for u in range(U):
                e = 0.0
                for j in range(K):
                    e += adjacency[k, j, u] * beta[u] * init_state[b, j, u]
                c[k, u] = e
        t = starts[b]
        while True:
            bound = 0.0
            for k in range(K):
                x = mu[k]
                for u in range(U):
                    x += max(c[k, u], 0.0)
                bound += _link_value(code, x)
            if bound <= 0.0:  # nothing can fire again before an event, and none will come
                break
            dt = -math.log(1.0 - np.random.random()) / bound
            t_new = t + dt
            if t_new > ends[b]:
                break
            t = t_new
            total = 0.0
            for u in range(U):
                decay = math.exp(-beta[u] * dt)
                for k in range(K):
                    c[k, u] *= decay
            for k in range(K):
                x = mu[k]
                for u in range(U):
                    x += c[k, u]
                lam[k] = _link_value(code, x)
                total += lam[k]
            r = np.random.random() * bound
            if r >= total:
                continue
            mark = K - 1
            acc = 0.0
            for k in range(K):
                acc += lam[k]
                if r < acc:
                    mark = k
                    break
            if total_events == capacity:
                capacity *= 2
                new_t = np.empty(capacity)
                new_m = np.empty(capacity, np.int64)
                new_t[:total_events] = out_t[:total_events]
                new_m[:total_events] = out_m[:total_events]
                out_t, out_m = new_t, new_m
            out_t[total_events] = t
            out_m[total_events] = mark
            total_events += 1
            counts[b] += 1
            for k in range(K):
                for u in range(U):
                    c[k, u] += adjacency[k, mark, u] * beta[u]
            if total_events >= max_events:
                return out_t[:total_events], out_m[:total_events], counts, b
    return out_t[:total_events], out_m[:total_events], counts, -1


# ------------------------------------------------------------------------------------------ integrals
#: Gauss-Legendre orders of the adaptive rule: the finer gives the value, their difference the error estimate.
FINE, COARSE = 16, 8
#: Halvings of a panel before its estimate is accepted whatever it is (reached only at a kink the
#: relative floor cannot resolve, e.g. a ReLU zero crossing with several decays at 1e-9 of the panel).
MAX_DEPTH = 60
#: Relative round-off floor of a panel's error estimate.
RTOL_FLOOR = 1e-14

#: The fit's objective (minus the log-likelihood per event) outside the model's domain.
_OUT_OF_DOMAIN = 1e10

Panels = tuple[np.ndarray, np.ndarray, np.ndarray]  # (interval index, left offset, right offset)


def _panel_integrals(link: Link, mu: Tensor, c: Tensor, beta: Tensor, idx: Tensor, a: Tensor, b: Tensor,
                     order: int) -> Tensor:
    """``[P, K]`` the ``order``-point rule of ``int_a^b link(mu + sum_u c[idx, :, u] e^{-beta_u s}) ds``."""
    nodes, weights = gauss_legendre(a, b, order)  # [P, n]
    decay = torch.exp(-nodes[..., None] * beta)  # [P, n, U]
    x = mu + torch.einsum("pnu,pku->pnk", decay, c[idx])
    return (_apply_link(link, x) * weights[..., None]).sum(1)


def _initial_panels(lengths: np.ndarray, beta_max: float) -> Panels:
    """Geometric panels ``[0, h], [h, 2h], [2h, 4h], ...`` (``h = 1 / (4 beta_max)``) cut at each length."""
    h = 0.25 / beta_max
    live = np.flatnonzero(lengths > 0)
    ratio = lengths[live] / h
    count = np.where(ratio <= 1, 1, 1 + np.ceil(np.log2(np.maximum(ratio, 1.0)))).astype(np.int64)
    idx = np.repeat(live, count)
    j = np.arange(idx.size) - np.repeat(np.cumsum(count) - count, count)
    a = np.where(j == 0, 0.0, h * np.exp2(j - 1.0))
    b = np.minimum(h * np.exp2(j.astype(np.float64)), lengths[idx])
    b = np.where(j == np.repeat(count, count) - 1, lengths[idx], b)  # the last panel ends exactly at the event
    keep = b > a
    return idx[keep], a[keep], b[keep]


def _adaptive(link: Link, mu: Tensor, c: Tensor, beta: Tensor, lengths: np.ndarray, tol: float,
              window: float) -> tuple[Tensor, float, Panels]:
    """Halve panels until the 16- and 8-point rules agree (see the module docstring). Returns the
    ``[M, K]`` integrals (the 16-point values of the accepted panels, differentiable: each panel is
    evaluated once), the summed error estimate and the panels."""
    idx, a, b = _initial_panels(lengths, float(beta.detach().max()))
    out = torch.zeros(lengths.shape[0], mu.shape[-1], dtype=mu.dtype)
    done: list[Panels] = []
    error = 0.0
    window = max(window, 1e-300)
    for depth in range(MAX_DEPTH + 1):
        if idx.size == 0:
            break
        ti, ta, tb = torch.from_numpy(idx), torch.from_numpy(a), torch.from_numpy(b)
        fine = _panel_integrals(link, mu, c, beta, ti, ta, tb, FINE)
        with torch.no_grad():
            coarse = _panel_integrals(link, mu, c, beta, ti, ta, tb, COARSE)
            err = (fine.detach() - coarse).abs().sum(-1).numpy()
            size = fine.detach().abs().sum(-1).numpy()
        allow = np.maximum(tol * (b - a) / window, RTOL_FLOOR * size)
        ok = (err <= allow) | (depth == MAX_DEPTH) | ~np.isfinite(err)
        done.append((idx[ok], a[ok], b[ok]))
        kept = torch.from_numpy(np.flatnonzero(ok))
        out = out.index_add(0, ti[kept], fine[kept])
        error += float(err[ok & np.isfinite(err)].sum())
        idx, a, b = idx[~ok], a[~ok], b[~ok]
        mid = (a + b) / 2
        idx, a, b = np.concatenate([idx, idx]), np.concatenate([a, mid]), np.concatenate([mid, b])
    panels = tuple(np.concatenate(part) for part in zip(*done)) if done else (
        np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
    return out, error, panels  # type: ignore[return-value]


class _ExpIntegral(torch.autograd.Function):
    """``G(c, L) = Ei(c) - Ei(c e^{-L}) = int_0^L exp(c e^{-r}) dr`` for ``L >= 0``.

    Where ``L > 1`` or the exponent ``c e^{-r}`` varies by more than 1 over ``[0, L]``: ``L + Ein(-c e^{-L}) - Ein(-c)``
    with the entire function ``Ein`` (no ``log |c|`` cancellation at small ``c``). Elsewhere (a short
    interval ``L <= 1``, where that difference would cancel): the 16-point Gauss-Legendre rule of the
    integral itself, exact to round-off there (an analytic integrand whose exponent varies by at most 1)."""

    @staticmethod
    def forward(ctx, c: Tensor, L: Tensor) -> Tensor:  # type: ignore[override]
        cn = c.detach().cpu().numpy()
        Ln = np.broadcast_to(L.detach().cpu().numpy(), cn.shape)
        v = np.exp(-Ln)
        short = (Ln <= 1.0) & (np.abs(cn) * -np.expm1(-Ln) <= 1.0)
        with np.errstate(over="ignore", invalid="ignore"):
            value = Ln + _ein(-cn * v) - _ein(-cn)
            d_c = scipy.special.exprel(cn) - v * scipy.special.exprel(cn * v)  # (e^c - e^{c v}) / c
        if np.any(short):
            x, w = scipy.special.roots_legendre(16)
            Ls, cs = Ln[short][:, None], cn[short][:, None]
            r = Ls / 2 * (x + 1)
            integrand = np.exp(cs * np.exp(-r))
            value[short] = (Ls[:, 0] / 2) * (integrand @ w)
            d_c[short] = (Ls[:, 0] / 2) * ((np.exp(-r) * integrand) @ w)
        ctx.save_for_backward(c, L, torch.from_numpy(np.ascontiguousarray(d_c)).to(c))
        return torch.from_numpy(np.ascontiguousarray(value)).to(c)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        c, L, d_c = ctx.saved_tensors
        d_L = grad * torch.exp(c * torch.exp(-L))  # dG/dL: the integrand at r = L
        for dim, size in enumerate(L.shape):
            if size == 1 and d_L.shape[dim] != 1:
                d_L = d_L.sum(dim, keepdim=True)
        return grad * d_c, d_L


def _ein(z: np.ndarray) -> np.ndarray:
    """``Ein(z) = int_0^z (1 - e^{-t}) / t dt`` (entire): its series near 0, ``gamma + ln|z| - Ei(-z)`` elsewhere."""
    z = np.asarray(z, np.float64)
    out = np.empty_like(z)
    small = np.abs(z) < 1.0
    zs = z[small]
    term = zs.copy()
    acc = zs.copy()
    for k in range(2, 30):  # |z| < 1: the terms fall below 1e-32 by k = 30
        term = -term * zs / k
        acc = acc + term / k
    out[small] = acc
    zl = z[~small]
    out[~small] = np.euler_gamma + np.log(np.abs(zl)) - scipy.special.expi(-zl)
    return out


def _closed_form(link: Link, U: int) -> bool:
    return link is Link.IDENTITY or (U == 1 and link in (Link.RELU, Link.EXP))


def _exact_integrals(link: Link, mu: Tensor, c: Tensor, beta: Tensor, lengths: Tensor) -> Tensor:
    """``[M, K]`` closed-form ``int_0^{length} link(mu + sum_u c e^{-beta_u s}) ds`` (see :func:`_closed_form`)."""
    s = lengths[:, None]  # [M, 1]
    if link is Link.IDENTITY:
        return mu * s + (c * (-torch.expm1(-beta * s[..., None])) / beta).sum(-1)
    cc, b = c[..., 0], beta[0]
    if link is Link.EXP:
        return torch.exp(mu) * _ExpIntegral.apply(cc, b * s) / b
    # relu, one decay: x(s) = mu + cc e^{-b s} is monotone; integrate it where it is positive.
    def piece(lo: Tensor, hi: Tensor) -> Tensor:
        return mu * (hi - lo) + cc * (torch.exp(-b * lo) - torch.exp(-b * hi)) / b

    zero = torch.zeros_like(cc)
    safe = torch.where((cc * mu < 0), -cc / torch.where(mu == 0, torch.ones_like(mu), mu).expand_as(cc),
                       torch.ones_like(cc))
    crossing = torch.log(safe.clamp_min(1e-300)) / b  # where mu + cc e^{-b s} = 0 (when the signs differ)
    full = s.expand_as(cc)
    hi_dec = torch.minimum(crossing.clamp_min(0), full)  # cc > 0, mu < 0: positive until the crossing
    lo_inc = torch.minimum(crossing.clamp_min(0), full)  # cc < 0, mu > 0: positive after the crossing
    value = torch.where(
        cc >= 0,
        torch.where(mu >= 0, piece(zero, full), piece(zero, hi_dec)),
        torch.where(mu > 0, piece(lo_inc, full), zero),
    )
    return value


def integrate_between_events(link: Link | str, mu: Tensor, c: Tensor, beta: Tensor, lengths: Tensor,
                             tol: float = 1e-10, window: float | None = None,
                             panels: Panels | None = None) -> tuple[Tensor, float, Panels | None]:
    """``[M, K]`` integrals ``int_0^{lengths[m]} link(mu_k + sum_u c[m, k, u] exp(-beta_u s)) ds``.

    Closed form where the link allows (identity; relu and exp with one decay), else the adaptive
    Gauss-Legendre rule of the module docstring with absolute tolerance ``tol`` on the sum (``window``:
    the length ``W`` that shares it out, default the sum of ``lengths``). ``panels`` reuses an earlier
    choice (the value is then a smooth function of the parameters, as finite differences need).
    Returns the integrals, the error estimate (0 for closed forms and given panels) and the panels used.
    """
    link = Link(link)
    if _closed_form(link, beta.numel()):
        return _exact_integrals(link, mu, c, beta, lengths), 0.0, None
    if panels is None:
        lengths_np = lengths.detach().cpu().numpy()
        total = float(lengths_np.sum()) if window is None else window
        return _adaptive(link, mu, c, beta, lengths_np, tol, total)
    idx, a, b = (torch.from_numpy(p) for p in panels)
    out = torch.zeros(lengths.shape[0], mu.shape[-1], dtype=mu.dtype)
    if idx.numel():
        out = out.index_add(0, idx, _panel_integrals(link, mu, c, beta, idx, a.to(mu), b.to(mu), FINE))
    return out, 0.0, panels


# ------------------------------------------------------------------------------------------ the model
class _Prepared:
    """What a batch's likelihood needs besides the parameters: flat events, sequence of each event,
    interval lengths after each event and before the first; the states, cached per decay value."""

    def __init__(self, batch: EventBatch) -> None:
        flat = _flat(batch)
        self.flat = flat
        offsets = flat["seq_offsets"]
        B, N = offsets.size - 1, flat["times"].size
        self.num_seq, self.num_events = B, N
        self.seq = np.repeat(np.arange(B), np.diff(offsets))
        times = flat["times"]
        last = np.zeros(N, bool)
        last[offsets[1:][np.diff(offsets) > 0] - 1] = True
        nxt = np.empty(N)
        nxt[:-1] = times[1:] if N else nxt[:-1]
        nxt[last] = flat["t_end"][self.seq[last]]
        self.lengths = nxt - times  # interval after each event (0 between tied events)
        first = np.where(np.diff(offsets) > 0, times[np.minimum(offsets[:-1], max(N - 1, 0))] if N else 0.0,
                         flat["t_end"])
        self.head = first - flat["t_start"]  # before the first event: no history, x = mu
        self.window = float(np.sum(flat["t_end"] - flat["t_start"]))
        self._states: dict[tuple[float, ...], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def states(self, beta: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        key = tuple(beta.tolist())
        if key not in self._states:
            f = self.flat
            self._states = {key: _inclusive_states(f["times"], f["marks"], f["seq_offsets"], beta, K)}
        return self._states[key]


def _differentiable_states(R: np.ndarray, dR: np.ndarray, beta: Tensor) -> Tensor:
    """``R`` as a tensor whose gradient in ``beta`` is ``dR`` (first order: the value is ``R`` exactly)."""
    Rt = torch.from_numpy(R)
    if not beta.requires_grad:
        return Rt
    return Rt + (beta - beta.detach()) * torch.from_numpy(dR)


class NonlinearHawkes(PointProcess):
    """Multivariate Hawkes process ``lambda_k = link(mu_k + sum_j phi_kj * N_j)`` with signed
    (sum-of-)exponential kernels; see the module docstring for the likelihood, its tolerance and the sampler.

    Args:
        num_marks: number of event types ``K``.
        link: ``"softplus"`` (default), ``"relu"``, ``"exp"`` or ``"identity"`` (or a :class:`Link`).
        decay: one decay, fixed; ``None`` (and no ``decays``) learns one decay.
        decays: several decays ``beta_u`` (a sum-of-exponentials kernel); fixed unless ``learn_decays``.
        learn_decays: fit the decays too (default: True when neither ``decay`` nor ``decays`` is given).
        tol: absolute tolerance of the numerical compensator on a batch (see the module docstring).

    After :meth:`fit`: ``baseline_`` ``[K]`` (the pre-activation ``mu``), ``adjacency_`` ``[K, K]`` (one
    decay) or ``[K, K, U]``, signed; ``decay_`` (one decay) and ``decays_`` ``[U]``; ``fit_result_``.
    """

    _constraints = {
        "num_marks": Interval(1, None, integer=True),
        "link": Options(Link),
        "decay": Interval(0, None, closed="neither", none_ok=True),
        "decays": Interval(0, None, closed="neither"),
        "tol": Interval(0, None, closed="neither"),
        "baseline": Interval(None, None),
        "adjacency": Interval(None, None),
        "max_iter": Interval(1, None, integer=True),
        "ftol": Interval(0, None),
        "l2": Interval(0, None),
    }

    def __init__(self, num_marks: int, link: Link | str = Link.SOFTPLUS, decay: float | None = None,
                 decays: Sequence[float] | None = None, learn_decays: bool | None = None, tol: float = 1e-10) -> None:
        super().__init__()
        link = check_params(self, num_marks=num_marks, link=link, decay=decay, tol=tol)["link"]
        if decay is not None and decays is not None:
            raise ValueError(f"{type(self).__name__}: give decay (one) or decays (several), not both")
        if decays is not None:
            values = np.atleast_1d(np.asarray(decays, dtype=np.float64))
            if values.ndim != 1 or values.size < 1:
                raise ValueError(f"{type(self).__name__}: decays must be a non-empty list of positive numbers, "
                                 f"got {np.asarray(decays).tolist()}")
            check_params(self, decays=values)
        else:
            values = np.array([1.0 if decay is None else float(decay)])
        self.num_marks = int(num_marks)
        self.link = link
        self.decay = decay
        self.num_decays = values.size
        self.learn_decays = (decay is None and decays is None) if learn_decays is None else bool(learn_decays)
        self.tol = float(tol)
        K, U = self.num_marks, self.num_decays
        check_parameter_size(self, (K, K, U), f"num_marks={K} with {U} decay(s)")
        start = float(_inverse_link(link, np.array([0.1]))[0])
        self.baseline = nn.Parameter(torch.full((K,), start, dtype=torch.float64))
        self.adjacency = nn.Parameter(torch.zeros(K, K, U, dtype=torch.float64))
        self.log_decays = nn.Parameter(torch.as_tensor(np.log(values)), requires_grad=self.learn_decays)
        self.compensator_error_ = 0.0

    # ------------------------------------------------------------------ parameters
    @property
    def decays(self) -> Tensor:
        return self.log_decays.exp()

    def set_params(self, baseline: Sequence[float], adjacency: np.ndarray, decays: Sequence[float] | float) -> "NonlinearHawkes":
        """Set ``baseline [K]`` (pre-activation), ``adjacency [K, K]`` or ``[K, K, U]`` (signed), ``decays [U]``."""
        K, U = self.num_marks, self.num_decays
        baseline = np.asarray(baseline, np.float64).reshape(K)
        adjacency = np.asarray(adjacency, np.float64).reshape(K, K, U)
        decays = np.asarray(decays, np.float64).reshape(U)
        check_params(self, baseline=baseline, adjacency=adjacency, decays=decays)
        with torch.no_grad():
            self.baseline.copy_(torch.from_numpy(baseline))
            self.adjacency.copy_(torch.from_numpy(adjacency))
            self.log_decays.copy_(torch.from_numpy(np.log(decays)))
        self._publish()
        return self

    @classmethod
    def from_params(cls, baseline: Sequence[float], adjacency: np.ndarray, decays: Sequence[float] | float,
                    link: Link | str = Link.SOFTPLUS, tol: float = 1e-10) -> "NonlinearHawkes":
        """A model with the given parameters: ``adjacency [K, K]`` with one decay, ``[K, K, U]`` with ``U``."""
        baseline = np.asarray(baseline, np.float64).reshape(-1)
        decays = np.atleast_1d(np.asarray(decays, np.float64))
        if np.ndim(adjacency) == 2 and decays.size == 1:
            model = cls(baseline.size, link, decay=float(decays[0]), tol=tol)
        else:
            model = cls(baseline.size, link, decays=decays, tol=tol)
        return model.set_params(baseline, adjacency, decays)

    def _publish(self) -> None:
        self.baseline_ = self.baseline.detach().numpy().copy()
        adjacency = self.adjacency.detach().numpy().copy()
        self.decays_ = self.decays.detach().numpy().copy()
        self.adjacency_ = adjacency[..., 0] if self.num_decays == 1 else adjacency
        if self.num_decays == 1:
            self.decay_ = float(self.decays_[0])

    def excitation(self, lags: np.ndarray) -> np.ndarray:
        """Signed kernels ``phi_kj(lag)``, ``[T, K, K]`` (negative: inhibition)."""
        lags = np.asarray(lags, np.float64)
        beta = self.decays.detach().numpy()
        return np.einsum("kju,tu->tkj", self.adjacency.detach().numpy() * beta, np.exp(-np.outer(lags, beta)))

    def summary_params(self) -> dict[str, Any]:
        """What ``tpp fit --json`` reports beyond baseline (pre-activation) and adjacency (signed)."""
        decay: Any = self.decays_.tolist() if self.num_decays > 1 else float(self.decays_[0])
        return {"decay": decay, "link": self.link.value, "compensator_error": self.compensator_error_}

    def to_dict(self) -> dict:
        """Parameters as plain JSON-able values (see :func:`tpp.hawkes.from_dict`)."""
        adjacency = self.adjacency.detach().numpy()
        out: dict[str, Any] = {"model": "nonlinear-hawkes", "link": self.link.value,
                               "baseline": self.baseline.detach().numpy().tolist(),
                               "adjacency": (adjacency[..., 0] if self.num_decays == 1 else adjacency).tolist(),
                               "decays": self.decays.detach().numpy().tolist(), "tol": self.tol}
        return out

    # ------------------------------------------------------------------ the likelihood's parts
    def _pre_activation_at_events(self, prep: _Prepared, R: Tensor, prev: np.ndarray, beta: Tensor,
                                  adjacency: Tensor, mu: Tensor) -> Tensor:
        """``[N, K]`` ``x_k(t_n)`` given the events strictly before ``t_n``."""
        N = prep.num_events
        times = torch.from_numpy(prep.flat["times"])
        has = torch.from_numpy(prev >= 0)
        p = torch.from_numpy(np.maximum(prev, 0))
        gap = torch.where(has, times - times[p], torch.zeros(N, dtype=torch.float64)) if N else times
        before = R[p] * torch.exp(-gap[:, None, None] * beta) * has[:, None, None]
        return mu + torch.einsum("kju,nju->nk", adjacency * beta, before)

    def _parts(self, prep: _Prepared, mu: Tensor, adjacency: Tensor, beta: Tensor,
               panels: Panels | None = None) -> tuple[Tensor, Tensor, Tensor, float, Panels | None]:
        """``log lambda`` at each event ``[N]``, integrals after each event ``[N, K]`` and before the
        first ``[B, K]``, the compensator's error estimate and the panels."""
        K = self.num_marks
        R_np, dR_np, prev = prep.states(beta.detach().numpy(), K)
        R = _differentiable_states(R_np, dR_np, beta)
        x = self._pre_activation_at_events(prep, R, prev, beta, adjacency, mu)
        marks = torch.from_numpy(prep.flat["marks"])
        log_lam = _log_link(self.link, x.gather(1, marks[:, None])[:, 0]) if prep.num_events else x.sum(-1)
        c = torch.einsum("kju,nju->nku", adjacency * beta, R)
        after, error, panels = integrate_between_events(self.link, mu, c, beta, torch.from_numpy(prep.lengths),
                                                        self.tol, prep.window, panels)
        head = _apply_link(self.link, mu) * torch.from_numpy(prep.head)[:, None]
        return log_lam, after, head, error, panels

    def _loglik(self, prep: _Prepared, mu: Tensor, adjacency: Tensor, beta: Tensor,
                panels: Panels | None = None) -> tuple[Tensor, Panels | None]:
        given = panels is not None
        log_lam, after, head, error, panels = self._parts(prep, mu, adjacency, beta, panels)
        if not given:  # with given panels there is no new estimate
            self.compensator_error_ = error
        seq = torch.from_numpy(prep.seq)
        per_event = log_lam - after.sum(-1)
        out = torch.zeros(prep.num_seq, dtype=torch.float64).index_add(0, seq, per_event)
        return out - head.sum(-1), panels

    # ------------------------------------------------------------------ protocol
    def log_likelihood(self, batch: EventBatch) -> Tensor:
        """Exact log-likelihood per sequence ``[B]`` (the compensator to ``tol``), differentiable."""
        self.check_marks(batch)
        value, _ = self._loglik(_Prepared(batch), self.baseline, self.adjacency, self.decays)
        return value.to(batch.device)

    def _integrals(self, batch: EventBatch) -> tuple[_Prepared, Tensor, Tensor]:
        prep = _Prepared(batch)
        _, after, head, error, _ = self._parts(prep, self.baseline, self.adjacency, self.decays)
        self.compensator_error_ = error
        return prep, after, head

    def compensator(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        """``[B]`` integral of the total intensity over each window (closed form or to ``tol``)."""
        self.check_marks(batch)
        prep, after, head = self._integrals(batch)
        out = head.sum(-1).index_add(0, torch.from_numpy(prep.seq), after.sum(-1))
        return out.to(batch.device)

    def cumulative_intensity(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        """``[B, L, K]`` ``Lambda_k(t_start, t_n]`` at every event (padding: the whole window's)."""
        self.check_marks(batch)
        prep, after, head = self._integrals(batch)
        B, L, K = len(batch), batch.max_length, self.num_marks
        offsets = torch.from_numpy(prep.flat["seq_offsets"])
        seq = torch.from_numpy(prep.seq)
        running = after.cumsum(0)
        # the integral up to t_n: the head plus the intervals after the events before n in the sequence
        base = torch.cat([torch.zeros(1, K, dtype=after.dtype), running])
        upto = head[seq] + base[torch.arange(prep.num_events)] - base[offsets[:-1]][seq]
        total = head + base[offsets[1:]] - base[offsets[:-1]]
        out = total[:, None, :].expand(B, L, K).clone()
        mask = batch.mask.cpu()
        out[mask] = upto
        return out.to(batch.device)

    def intensity(self, batch: EventBatch, t: Tensor) -> Tensor:
        """``[B, T, K]`` intensity at ``t [B, T]`` given the events strictly before each time."""
        self.check_marks(batch)
        prep = _Prepared(batch)
        beta = self.decays
        R_np, dR_np, _ = prep.states(beta.detach().numpy(), self.num_marks)
        R = _differentiable_states(R_np, dR_np, beta)
        t_cpu = t.detach().cpu().to(torch.float64)
        times = batch.time.detach().cpu().to(torch.float64)
        times = torch.where(batch.mask.cpu(), times, torch.full_like(times, float("inf")))  # padding never precedes
        last = torch.searchsorted(times.contiguous(), t_cpu.contiguous(), side="left") - 1  # [B, T]
        has = last >= 0
        offsets = torch.from_numpy(prep.flat["seq_offsets"][:-1])[:, None]
        B, T = t_cpu.shape
        K, U = self.num_marks, self.num_decays
        if prep.num_events == 0:
            x = self.baseline.expand(B, T, K)
        else:
            flat_idx = (offsets + last.clamp_min(0)).reshape(-1).clamp(0, prep.num_events - 1)
            t_last = times.gather(1, last.clamp_min(0))
            gap = torch.where(has, t_cpu - t_last, torch.zeros_like(t_cpu))
            state = R[flat_idx].reshape(B, T, K, U) * torch.exp(-gap[..., None, None] * beta) * has[..., None, None]
            x = self.baseline + torch.einsum("kju,btju->btk", self.adjacency * beta, state)
        return _apply_link(self.link, x).to(t.device)

    # ------------------------------------------------------------------ fitting
    def _unpack(self, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        K, U = self.num_marks, self.num_decays
        mu, adjacency = theta[:K], theta[K: K + K * K * U].reshape(K, K, U)
        beta = theta[K + K * K * U:].exp() if self.learn_decays else self.decays.detach()
        return mu, adjacency, beta

    def _theta(self) -> np.ndarray:
        parts = [self.baseline.detach().numpy(), self.adjacency.detach().numpy().ravel()]
        if self.learn_decays:
            parts.append(self.log_decays.detach().numpy())
        return np.concatenate(parts)

    def fit(
        self,
        train: EventBatch,
        val: EventBatch | None = None,
        *,
        max_iter: int = 500,
        ftol: float = 1e-12,
        l2: float = 0.0,
        warm_start: bool = False,
        progress: bool = False,
        **trainer_options: Any,
    ) -> "NonlinearHawkes":
        """Maximum likelihood on ``train``; returns self (sets ``baseline_``, ``adjacency_``, ``decay(s)_``,
        ``fit_result_``).

        L-BFGS-B (scipy) on ``(mu, A, log beta)`` with autograd gradients of the exact log-likelihood per
        event; ``l2`` adds ``l2 * sum(A^2)`` (a signed adjacency has no sparsity bound to lean on).
        Starts from the Poisson fit (``A = 0``; a learned decay at the inverse median gap) unless
        ``warm_start``. The identity link keeps ``mu > 0`` and ``A >= 0`` (a linear intensity must stay
        positive). ``val`` is only scored; the trainer's options are accepted and unused, as for every
        classic estimator.
        """
        check_fit_arguments(self, val, trainer_options, train=train)
        check_params(self, max_iter=max_iter, ftol=ftol, l2=l2)
        self.check_marks(train)
        if train.num_events == 0:
            raise ValueError("cannot fit a Hawkes process to data without events")
        K, U = self.num_marks, self.num_decays
        prep = _Prepared(train)
        n_events = float(prep.num_events)
        if not warm_start:
            flat = prep.flat
            counts = np.bincount(flat["marks"], minlength=K).astype(np.float64)
            rates = np.maximum(counts / max(prep.window, 1e-300), 1e-10 / max(prep.window, 1e-300))
            decays = self.decays.detach().numpy()
            if self.learn_decays:
                gaps = np.diff(flat["times"])[np.diff(prep.seq) == 0]
                gaps = gaps[gaps > 0]
                scale = 1.0 / np.median(gaps) if gaps.size else 1.0 / max(prep.window, 1e-300)
                decays = scale * np.logspace(-1.0, 1.0, U) if U > 1 else np.array([scale])
            self.set_params(_inverse_link(self.link, rates), np.zeros((K, K, U)), decays)
        theta0 = self._theta()
        stats = {"evaluations": 0}
        start = _time.perf_counter()

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            stats["evaluations"] += 1
            th = torch.from_numpy(theta).requires_grad_(True)
            mu, adjacency, beta = self._unpack(th)
            with np.errstate(all="ignore"):
                ll, _ = self._loglik(prep, mu, adjacency, beta)
                value = -ll.sum() / n_events + l2 * (adjacency ** 2).sum()
            # A step out of the domain (an event at zero intensity under relu, an overflow under exp): a large
            # finite value makes L-BFGS-B's line search backtrack, where inf ends the run at the start point.
            if not torch.isfinite(value):
                return _OUT_OF_DOMAIN, np.zeros_like(theta)
            (grad,) = torch.autograd.grad(value, th)
            g = grad.numpy()
            if not np.all(np.isfinite(g)):
                return _OUT_OF_DOMAIN, np.zeros_like(theta)
            return float(value.detach()), g

        bounds = None
        if self.link is Link.IDENTITY:
            bounds = [(1e-12 * float(np.min(theta0[:K]) if np.min(theta0[:K]) > 0 else 1.0), None)] * K
            bounds += [(0.0, None)] * (K * K * U) + [(None, None)] * (U if self.learn_decays else 0)
            theta0[:K] = np.maximum(theta0[:K], bounds[0][0])
            theta0[K: K + K * K * U] = np.maximum(theta0[K: K + K * K * U], 0.0)
        res = scipy.optimize.minimize(objective, theta0, jac=True, method="L-BFGS-B", bounds=bounds,
                                      options=dict(maxiter=max_iter, ftol=ftol, gtol=1e-9, maxcor=20))
        mu, adjacency, beta = (p.detach().numpy() for p in self._unpack(torch.from_numpy(res.x)))
        self.set_params(mu, adjacency, beta)
        with torch.no_grad():
            ll = float(self.log_likelihood(train).sum())
        result = FitResult(objective="likelihood", value=float(res.fun), log_likelihood=ll, iterations=int(res.nit),
                           evaluations=stats["evaluations"], converged=bool(res.success),
                           message=str(res.message), seconds=_time.perf_counter() - start,
                           compensator_error=self.compensator_error_)
        self.fit_result_ = result
        record_validation(self, val, result)
        return self

    def standard_errors(self, data: EventBatch, rel_step: float = 1e-5) -> dict[str, np.ndarray]:
        """Asymptotic standard errors from the observed information: the Hessian of the log-likelihood in
        ``(mu, A[, beta])`` by central differences of its autograd gradient, with the quadrature panels held
        at those of the current parameters (so the differences see a smooth function)."""
        if not hasattr(self, "baseline_"):
            raise ValueError(f"{type(self).__name__}.standard_errors: fit the model (or set_params) first")
        self.check_marks(data)
        K, U = self.num_marks, self.num_decays
        prep = _Prepared(data)
        learn = self.learn_decays
        theta = np.concatenate([self.baseline_, self.adjacency.detach().numpy().ravel()]
                               + ([self.decays_] if learn else []))
        beta_fixed = self.decays.detach()
        _, panels = self._loglik(prep, self.baseline.detach(), self.adjacency.detach(), beta_fixed)

        def grad(x: np.ndarray) -> np.ndarray:
            th = torch.from_numpy(x).requires_grad_(True)
            mu, adjacency = th[:K], th[K: K + K * K * U].reshape(K, K, U)
            beta = th[K + K * K * U:] if learn else beta_fixed
            ll, _ = self._loglik(prep, mu, adjacency, beta, panels)
            (g,) = torch.autograd.grad(ll.sum(), th)
            return g.numpy()

        information = observed_information(grad, theta, rel_step, floor=1e-2)
        try:
            covariance = np.linalg.inv(information)
        except np.linalg.LinAlgError:
            raise ValueError(f"{type(self).__name__}.standard_errors: the observed Fisher information is singular: "
                             "the data do not determine every parameter; fit more events") from None
        variance = np.diag(covariance)
        if np.any(variance <= 0):
            warnings.warn(f"{type(self).__name__}.standard_errors: {int(np.sum(variance <= 0))} standard errors are "
                          "undefined (NaN): the observed information is not positive definite there", stacklevel=2)
        se = np.sqrt(np.where(variance > 0, variance, np.nan))
        adjacency = se[K: K + K * K * U].reshape(K, K, U)
        out = {"baseline": se[:K], "adjacency": adjacency[..., 0] if U == 1 else adjacency}
        if learn:
            out["decays"] = se[K + K * K * U:]
        return out

    # ------------------------------------------------------------------ simulation
    def sample(
        self,
        n: int,
        t_end: float,
        history: EventBatch | None = None,
        generator: Seed = None,
        t_start: float = 0.0,
        max_events: int = 50_000_000,
    ) -> EventBatch:
        """Exact simulation by Ogata's thinning with the bound of the module docstring (compiled).

        Without ``history``: ``n`` sequences on ``[t_start, t_end]``; with it, continuations from each
        ``history.t_end`` (returned with the history's events). Passing ``max_events`` (over all
        sequences) raises :class:`~tpp.process.SamplingBudgetError` saying how far it got.
        """
        rng = as_numpy_rng(generator)
        K, U = self.num_marks, self.num_decays
        mu = self.baseline.detach().numpy().copy()
        adj = self.adjacency.detach().numpy().copy()
        beta = self.decays.detach().numpy().copy()
        starts, t0s, ends = simulation_window(n, t_end, history, t_start, K)
        init = np.zeros((n, K, U))
        if history is not None and history.num_events:
            init = self._state_at(history, history.t_end[:, None])
        times, marks, counts, stopped = simulate_from_states(self.link, mu, adj, beta, starts, ends, init, max_events,
                                                             seed=int(rng.integers(0, 2**62)))
        if stopped >= 0:
            raise budget_error(self, max_events, f"{times.size} events simulated, sequence {stopped} reached "
                               f"t={float(times[-1]):.6g} of t_end={float(ends[stopped]):.6g}")
        seq = np.repeat(np.arange(n), counts)
        return assemble(seq, times, marks, n, t0s, ends, K, history)

    def _state_at(self, batch: EventBatch, t: Tensor) -> np.ndarray:
        """``[B, K, U]`` ``R`` of the events strictly before ``t [B, 1]`` (a history's end state)."""
        prep = _Prepared(batch)
        beta = self.decays.detach()
        R, _, _ = prep.states(beta.numpy(), self.num_marks)
        times = batch.time.detach().cpu().double()
        times = torch.where(batch.mask.cpu(), times, torch.full_like(times, float("inf")))
        tq = t.detach().cpu().double()
        last = (torch.searchsorted(times.contiguous(), tq.contiguous(), side="left") - 1)[:, 0]
        offsets = prep.flat["seq_offsets"][:-1]
        out = np.zeros((len(batch), self.num_marks, self.num_decays))
        for b in range(len(batch)):
            i = int(last[b])
            if i >= 0:
                gap = float(tq[b, 0] - times[b, i])
                out[b] = R[offsets[b] + i] * np.exp(-beta.numpy() * gap)
        return out
