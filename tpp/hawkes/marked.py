"""Multivariate exponential Hawkes process with continuous marks (ETAS-style productivity).

``lambda_k(t) = mu_k + sum_{t_m < t} a_{k, k_m} g_{k_m}(x_m) beta exp(-beta (t - t_m))``, where ``x_m`` is a
continuous feature of event ``m`` (a magnitude, a trade size: the column ``feature`` of
:attr:`EventBatch.features`) and ``g`` its productivity, ``g(x0) = 1`` at the reference ``x0``:

* ``"linear"``: ``1 + alpha_j (x - x0)``, ``alpha_j >= 0`` (marks bounded below by ``x0``);
* ``"exp"``: ``exp(alpha_j (x - x0))``, as in ETAS (Ogata 1988);
* ``"network"``: ``exp(h(x) - h(x0))`` with ``h`` a one-layer network with positive weights
  (monotone increasing), shared by the source types (their scale sits in ``a``).

The marks have a distribution of their own, independent of the past (as in ETAS), per type ``k``:
``"exponential"`` (``x - threshold ~ Exponential(rate_k)``: the Gutenberg-Richter law above a completeness
threshold, ``rate = b log 10``) or ``"gaussian"`` (``N(mean_k, std_k^2)``). The likelihood is complete:

    ``log L = sum_n log lambda_{k_n}(t_n) + sum_n log f_{k_n}(x_n) - sum_k int lambda_k``,

the compensator in closed form, ``mu_k T + sum_m g(x_m) a_{k, k_m} (1 - exp(-beta (T - t_m)))``.
It is computed exactly by the O(N K) recursion with event weights ``g(x_m)`` (compiled), fused with its
gradient in ``(mu, a, beta)`` and in every ``g(x_m)`` (a backward recursion), so any differentiable ``g``
is fitted by maximum likelihood (bounded L-BFGS; the mark distribution separates and has a closed form).
Simulation is exact by the cluster (branching) construction: each event of type ``j`` with mark ``x``
has ``Poisson(a_kj g_j(x))`` children of type ``k`` after ``Exponential(beta)`` delays, each child's mark
drawn from ``f_k``. The expected number of children of a type-``j`` event is ``a_kj E_j[g(X)]``:
:attr:`MarkedHawkes.branching_ratio` is the spectral radius of that matrix (infinite for ``"exp"``
with ``alpha_j >=`` the Gutenberg-Richter rate: then the process explodes).

Ties follow the package rule: only events strictly earlier in time excite.
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
import torch
from torch import Tensor, nn

from tpp.events import EventBatch, EventDataError
from tpp.hawkes._common import (FitResult, budget_error, check_fit_arguments, check_parameter_size, record_validation,
                                simulation_window, warn_if_not_stationary)
from tpp.hawkes._common import flat_events as _flat
from tpp.hawkes._common import observed_information
from tpp.hawkes._recursion import fit_linear_one_type
from tpp.hawkes.exp import _standardise
from tpp.model import Seed
from tpp.options import Interval, Options, check_params
from tpp.process import PointProcess, as_numpy_rng

__all__ = ["MarkedHawkes", "Productivity", "MarkDistribution"]

_JIT = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")


class Productivity(str, enum.Enum):
    """How an event's feature scales the excitation it causes."""

    LINEAR = "linear"  #: ``1 + alpha (x - x0)``
    EXP = "exp"  #: ``exp(alpha (x - x0))`` (ETAS)
    NETWORK = "network"  #: a small monotone network


class MarkDistribution(str, enum.Enum):
    """The distribution of the feature given the event's type."""

    EXPONENTIAL = "exponential"  #: ``x - threshold ~ Exponential(rate)`` (Gutenberg-Richter)
    GAUSSIAN = "gaussian"  #: ``N(mean, std^2)``


# --------------------------------------------------------------------------- compiled recursions
@numba.njit(**_JIT)
def marked_loglik_and_grad(times, marks, g, offsets, t_start, t_end, mu, adjacency, beta, seq_weights, need_grad):
    """Exact Hawkes log-likelihood (without the mark density) per sequence, and the ``seq_weights``-weighted
    gradient in ``mu [K]``, ``adjacency [K, K]``, ``beta`` and the event weights ``g [N]``.

    Forward pass: ``R[j] = sum_{t_m < t, mark j} g_m exp(-beta (t - t_m))``, ``lambda = mu_i + beta A[i] . R``.
    Backward pass (events in reverse): ``Q[i] = sum_{t_n > t, mark i} exp(-beta (t_n - t)) / lambda_n`` gives
    ``d log L / d g_m = beta sum_i A[i, k_m] Q[i](t_m) - sum_i A[i, k_m] (1 - exp(-beta (T - t_m)))``.
    """
    num_seq = offsets.size - 1
    K = mu.size
    N = times.size
    loglik = np.zeros(num_seq)
    g_mu = np.zeros(K)
    g_adj = np.zeros((K, K))
    g_beta = 0.0
    g_g = np.zeros(N)
    lam_all = np.zeros(N)
    state = np.zeros(K)
    d_state = np.zeros(K)
    pending = np.zeros(K)
    col_sum = np.zeros(K)
    for j in range(K):
        for i in range(K):
            col_sum[j] += adjacency[i, j]
    mu_total = 0.0
    for i in range(K):
        mu_total += mu[i]
    for b in range(num_seq):
        w = seq_weights[b]
        state[:] = 0.0
        d_state[:] = 0.0
        pending[:] = 0.0
        t_now = t_start[b]
        t_stop = t_end[b]
        total = 0.0
        for n in range(offsets[b], offsets[b + 1]):
            t = times[n]
            i = marks[n]
            if t > t_now:
                dt = t - t_now
                decay = math.exp(-beta * dt)
                for j in range(K):
                    r = state[j] + pending[j]
                    d_state[j] = decay * (d_state[j] - dt * r)
                    state[j] = decay * r
                    pending[j] = 0.0
                t_now = t
            lam = mu[i]
            for j in range(K):
                lam += adjacency[i, j] * beta * state[j]
            lam_all[n] = lam
            total += math.log(lam)
            tail = t_stop - t
            e = math.exp(-beta * tail)
            total -= g[n] * col_sum[i] * (1.0 - e)
            if need_grad:
                inv = w / lam
                g_mu[i] += inv
                for j in range(K):
                    g_adj[i, j] += inv * beta * state[j]
                    g_beta += inv * adjacency[i, j] * (state[j] + beta * d_state[j])
                for k in range(K):
                    g_adj[k, i] -= w * g[n] * (1.0 - e)
                g_beta -= w * g[n] * col_sum[i] * tail * e
            pending[i] += g[n]
        duration = t_stop - t_start[b]
        total -= mu_total * duration
        loglik[b] = total
        if need_grad:
            for i in range(K):
                g_mu[i] -= w * duration
            # backward pass for the event weights
            state[:] = 0.0
            pending[:] = 0.0
            t_now = np.inf
            for n in range(offsets[b + 1] - 1, offsets[b] - 1, -1):
                t = times[n]
                if t < t_now:
                    decay = 0.0 if t_now == np.inf else math.exp(-beta * (t_now - t))
                    for k in range(K):
                        state[k] = decay * (state[k] + pending[k])
                        pending[k] = 0.0
                    t_now = t
                i = marks[n]
                s = 0.0
                for k in range(K):
                    s += adjacency[k, i] * state[k]
                g_g[n] = w * (beta * s - col_sum[i] * (1.0 - math.exp(-beta * (t_stop - t))))
                pending[i] += 1.0 / lam_all[n]
    return loglik, g_mu, g_adj, g_beta, g_g


@numba.njit(**_JIT)
def weighted_post_states(times, marks, g, offsets, beta, num_marks):
    """``R[n, j] = sum_{m <= n, mark j} g_m exp(-beta (t_n - t_m))`` and ``C[n, j] = sum_{m <= n, mark j} g_m``
    within each sequence: the history strictly before a query ``t`` is the state at the last event before
    ``t``, decayed."""
    N = times.size
    R = np.zeros((N, num_marks))
    C = np.zeros((N, num_marks))
    for b in range(offsets.size - 1):
        for n in range(offsets[b], offsets[b + 1]):
            if n > offsets[b]:
                decay = math.exp(-beta * (times[n] - times[n - 1]))
                for j in range(num_marks):
                    R[n, j] = R[n - 1, j] * decay
                    C[n, j] = C[n - 1, j]
            R[n, marks[n]] += g[n]
            C[n, marks[n]] += g[n]
    return R, C


class _MarkedLogLik(torch.autograd.Function):
    """The Hawkes part of the log-likelihood ``[B]``; backward is the compiled analytic gradient."""

    @staticmethod
    def forward(ctx, mu: Tensor, adjacency: Tensor, beta: Tensor, g: Tensor, flat: dict, device: torch.device) -> Tensor:  # type: ignore[override]
        ctx.flat, ctx.params = flat, (mu, adjacency, beta, g)
        args = [p.detach().cpu().double().numpy() for p in (mu, adjacency)]
        ll, *_ = marked_loglik_and_grad(flat["times"], flat["marks"], g.detach().cpu().double().numpy(),
                                        flat["seq_offsets"], flat["t_start"], flat["t_end"], *args, float(beta.detach()),
                                        np.ones(len(flat["t_end"])), False)
        return torch.from_numpy(ll).to(device=device, dtype=mu.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        flat = ctx.flat
        mu, adjacency, beta, g = ctx.params
        _, g_mu, g_adj, g_beta, g_g = marked_loglik_and_grad(
            flat["times"], flat["marks"], g.detach().cpu().double().numpy(), flat["seq_offsets"], flat["t_start"],
            flat["t_end"], mu.detach().cpu().double().numpy(), adjacency.detach().cpu().double().numpy(),
            float(beta.detach()), grad_out.detach().cpu().double().numpy(), True)
        to = dict(dtype=mu.dtype, device=mu.device)
        return (torch.from_numpy(g_mu).to(**to), torch.from_numpy(g_adj).to(**to),
                torch.tensor(g_beta, **to).reshape(beta.shape), torch.from_numpy(g_g).to(**to), None, None)


def _segment_sum(values: Tensor, offsets: np.ndarray) -> Tensor:
    """Per-sequence sums of a concatenated ``[N]`` tensor."""
    seq = torch.from_numpy(np.repeat(np.arange(offsets.size - 1), np.diff(offsets))).to(values.device)
    return torch.zeros(offsets.size - 1, dtype=values.dtype, device=values.device).index_add(0, seq, values)


class MarkedHawkes(PointProcess):
    """Exponential Hawkes process whose excitation is scaled by ``g(feature)`` (see the module docstring).

    Args:
        num_marks: number of event types ``K``.
        feature: name of the feature column that is the mark (``"magnitude"``).
        productivity: ``"exp"`` (ETAS), ``"linear"`` or ``"network"`` (:class:`Productivity`).
        mark_distribution: ``"exponential"`` (Gutenberg-Richter) or ``"gaussian"`` (:class:`MarkDistribution`).
        decay: fixes ``beta``; None learns it.
        threshold: lower end of the exponential mark distribution (completeness magnitude); None: the smallest
            feature of the training data (its maximum-likelihood value), so a held-out event below it has density 0
            and is refused with a located error: give the catalogue's threshold to score other data.
        reference: ``x0`` with ``g(x0) = 1``; None: the threshold (exponential marks) or the training mean (gaussian).
        hidden_size: units of the ``"network"`` productivity.

    Fitted attributes: ``baseline_ [K]``, ``adjacency_ [K, K]`` (children per event at ``x = x0``),
    ``decay_``, ``alpha_ [K]`` (per source type; not for ``"network"``), ``mark_params_`` (``rate`` or
    ``mean``/``std`` per type), ``threshold_``, ``reference_``, ``fit_result_``.
    """

    _constraints = {
        "num_marks": Interval(1, None, integer=True),
        "productivity": Options(Productivity),
        "mark_distribution": Options(MarkDistribution),
        "decay": Interval(0, None, closed="neither", none_ok=True),
        "threshold": Interval(None, None, none_ok=True),
        "reference": Interval(None, None, none_ok=True),
        "hidden_size": Interval(1, 256, integer=True),
        "baseline": Interval(0, None, closed="neither"),
        "adjacency": Interval(0, None),
        "max_iter": Interval(1, None, integer=True),
        "tol": Interval(0, None),
    }

    def __init__(self, num_marks: int, feature: str = "magnitude", productivity: Productivity | str = "exp",
                 mark_distribution: MarkDistribution | str = "exponential", decay: float | None = None,
                 threshold: float | None = None, reference: float | None = None, hidden_size: int = 8) -> None:
        super().__init__()
        checked = check_params(self, num_marks=num_marks, productivity=productivity,
                               mark_distribution=mark_distribution, decay=decay, threshold=threshold,
                               reference=reference, hidden_size=hidden_size)
        if not isinstance(feature, str) or not feature:
            raise TypeError(f"{type(self).__name__}: feature must be a feature name (e.g. 'magnitude'), got {feature!r}")
        self.num_marks, self.feature = int(num_marks), feature
        self.productivity, self.mark_distribution = checked["productivity"], checked["mark_distribution"]
        if self.productivity is Productivity.LINEAR and self.mark_distribution is not MarkDistribution.EXPONENTIAL:
            raise ValueError(f"{type(self).__name__}: productivity 'linear' (1 + alpha (x - x0)) needs marks bounded "
                             "below by x0: use mark_distribution='exponential', or productivity='exp'")
        self.decay, self.threshold, self.reference, self.hidden_size = decay, threshold, reference, int(hidden_size)
        K = self.num_marks
        check_parameter_size(self, (K, K), f"num_marks={K}")
        self.log_baseline = nn.Parameter(torch.full((K,), math.log(0.1), dtype=torch.float64))
        self.log_adjacency = nn.Parameter(torch.full((K, K), math.log(0.5 / K), dtype=torch.float64))
        self.log_decay = nn.Parameter(torch.tensor(math.log(1.0 if decay is None else float(decay)), dtype=torch.float64),
                                      requires_grad=decay is None)
        self.alpha = nn.Parameter(torch.zeros(K, dtype=torch.float64))
        if self.productivity is Productivity.NETWORK:
            H = self.hidden_size
            self.net_weight = nn.Parameter(torch.randn(H, dtype=torch.float64) * 0.5)
            self.net_bias = nn.Parameter(torch.randn(H, dtype=torch.float64) * 0.5)
            self.net_out = nn.Parameter(torch.full((H,), -3.0, dtype=torch.float64))
        # Mark distribution: (rate, 0) or (mean, std) per type; the reference and threshold; the feature scale.
        self.register_buffer("mark_params", torch.tensor([[1.0, 1.0]] * K, dtype=torch.float64))
        self.register_buffer("x_threshold", torch.tensor(0.0 if threshold is None else float(threshold), dtype=torch.float64))
        self.register_buffer("x_reference", torch.tensor(
            float(reference) if reference is not None else float(self.x_threshold), dtype=torch.float64))
        self.register_buffer("x_scale", torch.tensor(1.0, dtype=torch.float64))

    # ------------------------------------------------------------------ parameters
    @property
    def baseline(self) -> Tensor:
        return self.log_baseline.exp()

    @property
    def adjacency(self) -> Tensor:
        return self.log_adjacency.exp()

    @property
    def decay_rate(self) -> Tensor:
        return self.log_decay.exp()

    def productivity_of(self, x: Tensor, types: Tensor) -> Tensor:
        """``g_{types}(x)``, differentiable in the productivity's parameters."""
        x = torch.as_tensor(x, dtype=torch.float64)
        types = torch.as_tensor(types, dtype=torch.long)
        z = x - self.x_reference
        if self.productivity is Productivity.LINEAR:
            return 1 + self.alpha[types] * z
        if self.productivity is Productivity.EXP:
            return torch.exp(self.alpha[types] * z)
        return torch.exp(self._h(x) - self._h(self.x_reference.reshape(1)))

    def _h(self, x: Tensor) -> Tensor:
        """Monotone increasing: positive output weights times softplus of positive-slope units."""
        u = (x[:, None] - self.x_reference) / self.x_scale
        inner = nn.functional.softplus(self.net_weight) * u + self.net_bias
        return nn.functional.softplus(inner) @ nn.functional.softplus(self.net_out)

    def mark_log_density(self, x: Tensor, types: Tensor) -> Tensor:
        """``log f_{types}(x)`` of the mark distribution."""
        x = torch.as_tensor(x, dtype=torch.float64)
        a, b = self.mark_params[types, 0], self.mark_params[types, 1]
        if self.mark_distribution is MarkDistribution.EXPONENTIAL:
            return torch.log(a) - a * (x - self.x_threshold)
        return -0.5 * ((x - a) / b) ** 2 - torch.log(b) - 0.5 * math.log(2 * math.pi)

    def set_params(self, baseline: Sequence[float], adjacency: np.ndarray, decay: float, alpha: Sequence[float] | None = None,
                   mark_params: np.ndarray | None = None, threshold: float | None = None,
                   reference: float | None = None) -> "MarkedHawkes":
        """Set parameters directly (``mark_params [K, 2]``: ``(rate, unused)`` or ``(mean, std)`` per type)."""
        K = self.num_marks
        baseline = np.asarray(baseline, np.float64).reshape(K)
        adjacency = np.asarray(adjacency, np.float64).reshape(K, K)
        check_params(self, baseline=baseline, adjacency=adjacency, decay=float(decay))
        with torch.no_grad(), np.errstate(divide="ignore"):
            self.log_baseline.copy_(torch.from_numpy(np.log(baseline)))
            self.log_adjacency.copy_(torch.from_numpy(np.log(adjacency)))
            self.log_decay.fill_(math.log(float(decay)))
            if alpha is not None:
                self.alpha.copy_(torch.as_tensor(np.broadcast_to(np.asarray(alpha, np.float64), (K,)).copy()))
            if mark_params is not None:
                params = np.asarray(mark_params, np.float64).reshape(K, 2)
                if np.any(params[:, 0 if self.mark_distribution is MarkDistribution.EXPONENTIAL else 1] <= 0):
                    raise ValueError(f"{type(self).__name__}: mark rates / standard deviations must be positive, "
                                     f"got {params.tolist()}")
                self.mark_params.copy_(torch.from_numpy(params))
            if threshold is not None:
                self.x_threshold.fill_(float(threshold))
            if reference is not None:
                self.x_reference.fill_(float(reference))
        if self.productivity is Productivity.LINEAR and bool((self.alpha < 0).any()):
            raise ValueError(f"{type(self).__name__}: linear productivity needs alpha >= 0, got {self.alpha.tolist()}")
        self._publish()
        return self

    @classmethod
    def from_params(cls, baseline: Sequence[float], adjacency: np.ndarray, decay: float, alpha: Sequence[float],
                    mark_params: np.ndarray, threshold: float = 0.0, reference: float | None = None,
                    feature: str = "magnitude", productivity: str = "exp",
                    mark_distribution: str = "exponential") -> "MarkedHawkes":
        """A model with the given parameters (``"linear"`` or ``"exp"`` productivity)."""
        baseline = np.asarray(baseline, np.float64).reshape(-1)
        model = cls(baseline.size, feature, productivity, mark_distribution, decay, threshold, reference)
        return model.set_params(baseline, adjacency, decay, alpha, mark_params, threshold,
                                threshold if reference is None else reference)

    def _publish(self) -> None:
        self.baseline_ = self.baseline.detach().numpy().copy()
        self.adjacency_ = self.adjacency.detach().numpy().copy()
        self.decay_ = float(self.decay_rate.detach())
        self.alpha_ = self.alpha.detach().numpy().copy()
        params = self.mark_params.numpy().copy()
        self.mark_params_ = ({"rate": params[:, 0]} if self.mark_distribution is MarkDistribution.EXPONENTIAL
                             else {"mean": params[:, 0], "std": params[:, 1]})
        self.threshold_ = float(self.x_threshold)
        self.reference_ = float(self.x_reference)

    def mean_productivity(self) -> np.ndarray:
        """``E_j[g_j(X)]`` under each type's mark distribution, ``[K]`` (``inf`` where it diverges)."""
        K = self.num_marks
        params = self.mark_params.numpy()
        alpha = self.alpha.detach().numpy()
        x0, thr = float(self.x_reference), float(self.x_threshold)
        if self.mark_distribution is MarkDistribution.EXPONENTIAL:
            rate = params[:, 0]
            if self.productivity is Productivity.LINEAR:
                return 1 + alpha * (thr + 1 / rate - x0)
            if self.productivity is Productivity.EXP:
                with np.errstate(divide="ignore", over="ignore"):
                    return np.where(alpha < rate, np.exp(alpha * (thr - x0)) * rate / np.maximum(rate - alpha, 1e-300),
                                    np.inf)
            nodes, weights = np.polynomial.laguerre.laggauss(60)
            x = thr + nodes[None, :] / rate[:, None]
        else:
            mean, std = params[:, 0], params[:, 1]
            if self.productivity is Productivity.EXP:
                return np.exp(alpha * (mean - x0) + 0.5 * (alpha * std) ** 2)
            nodes, weights = np.polynomial.hermite_e.hermegauss(60)
            weights = weights / math.sqrt(2 * math.pi)
            x = mean[:, None] + std[:, None] * nodes[None, :]
        with torch.no_grad():
            g = self.productivity_of(torch.from_numpy(x.ravel()), torch.arange(K).repeat_interleave(x.shape[1])).numpy()
        return g.reshape(K, -1) @ weights

    @property
    def branching_ratio(self) -> float:
        """Spectral radius of ``a_kj E_j[g(X)]`` (< 1: stationary; ``inf`` if the mean productivity diverges)."""
        m = self.mean_productivity()
        if not np.all(np.isfinite(m)):
            return float("inf")
        return float(np.max(np.abs(np.linalg.eigvals(self.adjacency.detach().numpy() * m[None, :]))))

    def excitation(self, lags: np.ndarray) -> np.ndarray:
        """``phi_kj(lag)`` of an event at the reference mark ``x0`` (``g = 1``), ``[T, K, K]`` (for kernel plots)."""
        lags = np.asarray(lags, np.float64)
        beta = float(self.decay_rate.detach())
        return (beta * np.exp(-beta * lags))[:, None, None] * self.adjacency.detach().numpy()[None]

    def summary_params(self) -> dict[str, Any]:
        """What ``tpp fit --json`` reports beyond baseline and adjacency."""
        ratio = self.branching_ratio
        return {"decay": self.decay_, "feature": self.feature, "productivity": self.productivity.value,
                "alpha": self.alpha_.tolist(), "threshold": self.threshold_, "reference": self.reference_,
                "mark_distribution": self.mark_distribution.value,
                "mark_params": {k: v.tolist() for k, v in self.mark_params_.items()},
                "branching_ratio": ratio if np.isfinite(ratio) else None}

    def to_dict(self) -> dict:
        """Parameters as plain JSON-able values (the table's loader rebuilds the model)."""
        out = {
            "model": "marked-hawkes",
            "feature": self.feature,
            "productivity": self.productivity.value,
            "mark_distribution": self.mark_distribution.value,
            "baseline": self.baseline.detach().numpy().tolist(),
            "adjacency": self.adjacency.detach().numpy().tolist(),
            "decay": float(self.decay_rate.detach()),
            "alpha": self.alpha.detach().numpy().tolist(),
            "mark_params": self.mark_params.numpy().tolist(),
            "threshold": float(self.x_threshold),
            "reference": float(self.x_reference),
        }
        if self.productivity is Productivity.NETWORK:
            out["network"] = {"hidden_size": self.hidden_size, "scale": float(self.x_scale),
                              **{k: getattr(self, k).detach().numpy().tolist() for k in ("net_weight", "net_bias", "net_out")}}
        return out

    @classmethod
    def from_dict(cls, p: dict[str, Any]) -> "MarkedHawkes":
        """Inverse of :meth:`to_dict`."""
        baseline = np.asarray(p["baseline"], np.float64).reshape(-1)
        net = p.get("network") or {}
        model = cls(baseline.size, p["feature"], p["productivity"], p["mark_distribution"], p["decay"],
                    p["threshold"], p["reference"], net.get("hidden_size", 8))
        if net:
            with torch.no_grad():
                for k in ("net_weight", "net_bias", "net_out"):
                    getattr(model, k).copy_(torch.as_tensor(net[k], dtype=torch.float64))
                model.x_scale.fill_(float(net["scale"]))
        return model.set_params(baseline, p["adjacency"], p["decay"], p["alpha"], p["mark_params"], p["threshold"],
                                p["reference"])

    # ------------------------------------------------------------------ data
    def _features(self, batch: EventBatch, flat: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """The mark column ``x [N]`` (concatenated), checked against the mark distribution's support."""
        self.check_marks(batch)
        if batch.features is None or self.feature not in batch.feature_names:
            has = (f"features {list(batch.feature_names)}: pass feature= one of them" if batch.feature_names else
                   "no features: read the events with their feature columns (e.g. a magnitude)")
            raise EventDataError(f"{type(self).__name__} needs the feature {self.feature!r} (the mark); the batch has "
                                 f"{has}", field=self.feature)
        flat = _flat(batch) if flat is None else flat
        x = np.ascontiguousarray(flat["features"][:, batch.feature_names.index(self.feature)], dtype=np.float64)
        return x

    def _check_support(self, x: np.ndarray, flat: dict[str, np.ndarray]) -> None:
        if self.mark_distribution is MarkDistribution.EXPONENTIAL:
            bad = np.flatnonzero(x < float(self.x_threshold))
            if bad.size:
                n = int(bad[0])
                b = int(np.searchsorted(flat["seq_offsets"], n, side="right") - 1)
                raise EventDataError(f"{self.feature} {x[n]!r} is below the threshold {float(self.x_threshold)!r} of "
                                     "the exponential mark distribution: pass a lower threshold= or select the events "
                                     "above it", sequence=b, position=n - int(flat["seq_offsets"][b]), field=self.feature)

    # ------------------------------------------------------------------ protocol
    def log_likelihood(self, batch: EventBatch) -> Tensor:
        """Exact complete log-likelihood ``[B]`` (times, types and marks), differentiable in every parameter."""
        flat = _flat(batch)
        x = self._features(batch, flat)
        self._check_support(x, flat)
        types = torch.from_numpy(flat["marks"])
        xt = torch.from_numpy(x)
        g = self.productivity_of(xt, types)
        hawkes = _MarkedLogLik.apply(self.baseline, self.adjacency, self.decay_rate, g, flat, batch.device)
        marks = _segment_sum(self.mark_log_density(xt, types), flat["seq_offsets"])
        return hawkes + marks.to(hawkes.device)

    def _states(self, batch: EventBatch, t: Tensor) -> tuple[Tensor, Tensor]:
        """Weighted decayed states ``R [B, T, K]`` and weighted counts ``C [B, T, K]`` strictly before ``t``."""
        flat = _flat(batch)
        x = self._features(batch, flat)
        with torch.no_grad():
            g = self.productivity_of(torch.from_numpy(x), torch.from_numpy(flat["marks"])).numpy()
        beta = float(self.decay_rate.detach())
        R, C = weighted_post_states(flat["times"], flat["marks"], np.ascontiguousarray(g), flat["seq_offsets"], beta,
                                    self.num_marks)
        t_cpu = t.detach().cpu().to(torch.float64)
        times = batch.time.detach().cpu().to(torch.float64)
        times = torch.where(batch.mask.cpu(), times, torch.full_like(times, float("inf")))
        last = torch.searchsorted(times.contiguous(), t_cpu.contiguous(), side="left") - 1
        has = last >= 0
        B, T = t_cpu.shape
        K = self.num_marks
        if R.shape[0] == 0:
            return torch.zeros(B, T, K, dtype=torch.float64), torch.zeros(B, T, K, dtype=torch.float64)
        offsets = torch.from_numpy(flat["seq_offsets"][:-1])[:, None]
        idx = (offsets + last.clamp_min(0)).reshape(-1).clamp(0, R.shape[0] - 1)
        R_t = torch.from_numpy(R)[idx].reshape(B, T, K)
        C_t = torch.from_numpy(C)[idx].reshape(B, T, K)
        t_last = times.gather(1, last.clamp_min(0))
        R_t = torch.where(has[..., None], R_t * torch.exp(-beta * (t_cpu - t_last))[..., None], torch.zeros_like(R_t))
        C_t = torch.where(has[..., None], C_t, torch.zeros_like(C_t))
        return R_t.to(t.device), C_t.to(t.device)

    def intensity(self, batch: EventBatch, t: Tensor) -> Tensor:
        """``[B, T, K]`` intensity at ``t [B, T]`` given the events strictly before it (and their marks)."""
        R, _ = self._states(batch, t)
        with torch.no_grad():
            return self.baseline + self.decay_rate * torch.einsum("kj,btj->btk", self.adjacency, R)

    def cumulative_intensity_at(self, batch: EventBatch, t: Tensor) -> Tensor:
        """``[B, T, K]`` ``Lambda_k(t_start, t]`` in closed form."""
        R, C = self._states(batch, t)
        with torch.no_grad():
            elapsed = (t - batch.t_start[:, None]).to(torch.float64)
            return self.baseline * elapsed[..., None] + torch.einsum("kj,btj->btk", self.adjacency, C - R)

    def cumulative_intensity(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        """``[B, L, K]`` ``Lambda_k(t_start, t_n]`` at every event (closed form)."""
        return self.cumulative_intensity_at(batch, batch.time)

    def compensator(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        """``[B]`` closed-form integral of the total intensity over each window."""
        return self.cumulative_intensity_at(batch, batch.t_end[:, None]).sum((1, 2))

    # ------------------------------------------------------------------ fitting
    def _fit_marks(self, x: np.ndarray, types: np.ndarray) -> np.ndarray:
        """Closed-form MLE of the mark distribution per type (pooled for a type without events)."""
        K = self.num_marks
        params = np.ones((K, 2))
        if self.mark_distribution is MarkDistribution.EXPONENTIAL:
            excess = x - float(self.x_threshold)
            pooled = 1.0 / max(float(excess.mean()), 1e-12)
            for k in range(K):
                e = excess[types == k]
                params[k, 0] = 1.0 / max(float(e.mean()), 1e-12) if e.size else pooled
        else:
            pooled = (float(x.mean()), max(float(x.std()), 1e-12))
            for k in range(K):
                e = x[types == k]
                params[k] = (float(e.mean()), max(float(e.std()), 1e-12)) if e.size > 1 else pooled
        return params

    def _g_parameters(self) -> list[nn.Parameter]:
        if self.productivity is Productivity.NETWORK:
            return [self.net_weight, self.net_bias, self.net_out]
        return [self.alpha]

    def fit(self, train: EventBatch, val: EventBatch | None = None, *, max_iter: int = 1000, tol: float = 1e-12,
            progress: bool = False, **trainer_options: Any) -> "MarkedHawkes":
        """Maximum likelihood: the mark distribution in closed form, then ``(mu, a, beta, g)`` by bounded L-BFGS
        on the exact likelihood (time rescaled internally so the mean event rate is 1). One type with linear
        productivity (marks not below the reference) takes a compiled path to the same optimum
        (:meth:`_fit_linear_one_type`; ``fit_result_["decay_steps"]`` says it ran).

        ``val`` is only scored (``fit_result_["val_score"]``); the trainer's options are accepted and unused.
        """
        check_fit_arguments(self, val, trainer_options, train=train)
        check_params(self, max_iter=max_iter, tol=tol)
        if train.num_events == 0:
            raise ValueError("cannot fit a Hawkes process to data without events")
        start = _time.perf_counter()
        raw = _flat(train)
        x = self._features(train, raw)
        types = raw["marks"]
        with torch.no_grad():
            if self.threshold is None:
                self.x_threshold.fill_(float(x.min()))
            if self.reference is None:
                self.x_reference.fill_(float(self.x_threshold) if self.mark_distribution is MarkDistribution.EXPONENTIAL
                                       else float(x.mean()))
            self.x_scale.fill_(max(float(x.std()), 1e-12))
            self.mark_params.copy_(torch.from_numpy(self._fit_marks(x, types)))
        self._check_support(x, raw)
        flat, scale = _standardise(raw)
        K = self.num_marks
        n_events = float(x.size)
        duration = float(np.sum(flat["t_end"] - flat["t_start"]))
        rates = np.maximum(np.bincount(types, minlength=K) / duration, 1e-10)
        mu_floor = 1e-12 * float(rates.min())
        learn = self.decay is None
        if learn:
            seq = np.repeat(np.arange(flat["t_start"].size), np.diff(flat["seq_offsets"]))
            gaps = np.diff(flat["times"])[(np.diff(seq) == 0) & (np.diff(flat["times"]) > 0)]
            beta0 = 1.0 / float(np.median(gaps)) if gaps.size else 1.0
        else:
            beta0 = float(self.decay) * scale
        xt, tt = torch.from_numpy(x), torch.from_numpy(types)
        if self.productivity is Productivity.LINEAR and K == 1:
            fast = self._fit_linear_one_type(flat, x, learn, beta0, float(0.5 * rates[0]), mu_floor, max_iter, tol)
            if fast is not None:
                mu, a, alpha, beta, fun, iterations, evaluations, steps, converged = fast
                self.set_params([mu / scale], [[a]], beta / scale, alpha=[alpha])
                ll_marks = float(self.mark_log_density(xt, tt).sum())
                result = FitResult(objective="likelihood", value=fun,
                                   log_likelihood=-fun * n_events - n_events * math.log(scale) + ll_marks,
                                   iterations=iterations, evaluations=evaluations, decay_steps=steps,
                                   converged=converged, seconds=_time.perf_counter() - start)
                self.fit_result_ = result
                record_validation(self, val, result)
                warn_if_not_stationary(self.branching_ratio)
                return self
        g_params = self._g_parameters()
        g_sizes = [p.numel() for p in g_params]
        weights = np.ones(flat["t_end"].size)
        args = (flat["times"], flat["marks"])
        rest = (flat["seq_offsets"], flat["t_start"], flat["t_end"])
        evaluations = [0]

        def unpack(theta: np.ndarray):
            mu, adj = theta[:K], theta[K: K + K * K].reshape(K, K)
            beta = math.exp(theta[K + K * K]) if learn else beta0
            return mu, adj, beta, theta[K + K * K + int(learn):]

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            evaluations[0] += 1
            mu, adj, beta, gvec = unpack(theta)
            with torch.no_grad():
                offset = 0
                for p, size in zip(g_params, g_sizes):
                    p.copy_(torch.from_numpy(gvec[offset: offset + size]).reshape(p.shape))
                    offset += size
            with torch.enable_grad():
                g = self.productivity_of(xt, tt)
            g_np = np.ascontiguousarray(g.detach().numpy())
            if not np.all(np.isfinite(g_np)) or np.any(g_np < 0):
                return np.inf, np.zeros_like(theta)
            ll, g_mu, g_adj, g_beta, g_g = marked_loglik_and_grad(*args, g_np, *rest, mu, adj, beta, weights, True)
            value = -float(ll.sum()) / n_events
            if not np.isfinite(value):
                return np.inf, np.zeros_like(theta)
            grads = torch.autograd.grad(g, g_params, grad_outputs=torch.from_numpy(g_g), allow_unused=True)
            g_theta = np.concatenate([g_mu, g_adj.ravel()] + ([[g_beta * beta]] if learn else [])
                                     + [np.zeros(s) if gr is None else gr.numpy().ravel() for gr, s in zip(grads, g_sizes)])
            return value, -g_theta / n_events

        theta0 = np.concatenate([0.5 * rates, np.full(K * K, 0.5 / K)] + ([[math.log(beta0)]] if learn else [])
                                + [p.detach().numpy().ravel() if self.productivity is Productivity.NETWORK
                                   else np.zeros(s) for p, s in zip(g_params, g_sizes)])
        bounds = [(mu_floor, None)] * K + [(0.0, None)] * (K * K) + ([(None, None)] if learn else [])
        if self.productivity is Productivity.LINEAR:
            bounds += [(0.0, None)] * K
        elif self.productivity is Productivity.EXP:
            bounds += [(-20.0 / float(self.x_scale), 20.0 / float(self.x_scale))] * K  # keeps exp() finite
        else:
            bounds += [(-20.0, 20.0)] * sum(g_sizes)
        res = scipy.optimize.minimize(objective, theta0, jac=True, method="L-BFGS-B", bounds=bounds,
                                      options=dict(maxiter=max_iter, ftol=tol, gtol=1e-10, maxcor=20))
        objective(res.x)  # leave the productivity's parameters at the solution
        mu, adj, beta, _ = unpack(res.x)
        self.set_params(mu / scale, adj, beta / scale)
        ll_marks = float(self.mark_log_density(xt, tt).sum())
        result = FitResult(objective="likelihood", value=float(res.fun),
                           log_likelihood=-float(res.fun) * n_events - n_events * math.log(scale) + ll_marks,
                           iterations=int(res.nit), evaluations=evaluations[0], converged=bool(res.success),
                           seconds=_time.perf_counter() - start)
        self.fit_result_ = result
        record_validation(self, val, result)
        warn_if_not_stationary(self.branching_ratio)
        return self

    def _fit_linear_one_type(self, flat: dict[str, np.ndarray], x: np.ndarray, learn: bool, beta0: float, mu0: float,
                             mu_floor: float, max_iter: int, tol: float) -> tuple | None:
        """The fit of one type with linear productivity, compiled (:func:`~tpp.hawkes._recursion.fit_linear_one_type`):
        with ``c = (a, a alpha)`` the intensity is linear in ``(mu, c)`` at a fixed decay, and ``a >= 0, alpha >= 0`` is
        ``c >= 0``, so each decay's problem is concave and solved by projected Newton, and the decay by Newton on
        its profile (same model and optimum as the general L-BFGS-B path, ~10x faster on 1e4 events). ``None``
        where the reparametrisation does not hold: a mark below the reference (``g`` could turn negative), or an
        optimum with ``a = 0 < a alpha`` (``alpha`` infinite); the general path then fits.
        Returns ``(mu, a, alpha, beta, value, iterations, evaluations, decay steps, converged)`` in the
        standardised clock."""
        z = np.ascontiguousarray(x - float(self.x_reference), dtype=np.float64)
        if z.size == 0 or float(z.min()) < 0:
            return None
        out = np.empty(3)
        theta0 = np.array([mu0, 0.5, 0.0])  # the general path's start: a = 0.5, alpha = 0
        fun, beta, iterations, evaluations, steps, converged = fit_linear_one_type(
            flat["times"], z, flat["seq_offsets"], flat["t_start"], flat["t_end"], float(beta0), bool(learn), theta0,
            float(mu_floor), int(max_iter), float(tol), 1e-6, out)
        mu, c0, c1 = (float(v) for v in out)
        if not np.isfinite(fun) or (c0 <= 0 and c1 > 0):
            return None
        alpha = c1 / c0 if c0 > 0 else 0.0
        return mu, c0, alpha, float(beta), float(fun), int(iterations), int(evaluations), int(steps), bool(converged)

    # ------------------------------------------------------------------ uncertainty
    def standard_errors(self, data: EventBatch, rel_step: float = 1e-5) -> dict[str, Any]:
        """Asymptotic standard errors of ``(mu, a, beta, alpha)`` from the observed information (central
        differences of the analytic gradient); ``"linear"`` and ``"exp"`` productivities only; a fixed decay has
        error 0 and the others are conditional on it. The mark
        distribution's parameters separate: their errors are the closed forms (``rate / sqrt(n)``;
        ``std / sqrt(n)`` and ``std / sqrt(2 n)``)."""
        if self.productivity is Productivity.NETWORK:
            raise ValueError(f"{type(self).__name__}.standard_errors: not defined for the network productivity")
        flat = _flat(data)
        x = self._features(data, flat)
        self._check_support(x, flat)
        K = self.num_marks
        xt, tt = torch.from_numpy(x), torch.from_numpy(flat["marks"])
        weights = np.ones(flat["t_end"].size)

        def grad(theta: np.ndarray) -> np.ndarray:
            mu, adj, beta, alpha = theta[:K], theta[K: K + K * K].reshape(K, K), theta[K + K * K], theta[-K:]
            z = (xt - self.x_reference).numpy()
            if self.productivity is Productivity.LINEAR:
                g, dg = 1 + alpha[flat["marks"]] * z, z
            else:
                g = np.exp(alpha[flat["marks"]] * z)
                dg = g * z
            _, g_mu, g_adj, g_beta, g_g = marked_loglik_and_grad(flat["times"], flat["marks"], np.ascontiguousarray(g),
                                                                 flat["seq_offsets"], flat["t_start"], flat["t_end"],
                                                                 mu, adj, beta, weights, True)
            g_alpha = np.bincount(flat["marks"], weights=g_g * dg, minlength=K)
            return np.concatenate([g_mu, g_adj.ravel(), [g_beta], g_alpha])

        theta = np.concatenate([self.baseline_, self.adjacency_.ravel(), [self.decay_], self.alpha_])
        information = observed_information(grad, theta, rel_step)
        # A fixed decay is not estimated: the others' errors are conditional on it (its row and column dropped).
        free = np.ones(theta.size, bool)
        free[K + K * K] = self.decay is None
        variance = np.full(theta.size, np.nan)
        try:
            variance[free] = np.diag(np.linalg.inv(information[np.ix_(free, free)]))
        except np.linalg.LinAlgError:
            raise ValueError(f"{type(self).__name__}.standard_errors: the observed Fisher information is singular "
                             "(too few events for the parameters)") from None
        if np.any(variance[free] <= 0):
            warnings.warn(f"{type(self).__name__}.standard_errors: {int(np.sum(variance[free] <= 0))} standard errors "
                          "are undefined (NaN): the information is not positive definite in their directions",
                          stacklevel=2)
        se = np.sqrt(np.where(variance > 0, variance, np.nan))
        return {"baseline": se[:K], "adjacency": se[K: K + K * K].reshape(K, K),
                "decay": float(se[K + K * K]) if self.decay is None else 0.0, "alpha": se[-K:]}

    # ------------------------------------------------------------------ simulation
    def _draw_marks(self, types: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        params = self.mark_params.numpy()
        if self.mark_distribution is MarkDistribution.EXPONENTIAL:
            return float(self.x_threshold) + rng.exponential(1.0, types.size) / params[types, 0]
        return params[types, 0] + params[types, 1] * rng.standard_normal(types.size)

    def sample(self, n: int, t_end: float, history: EventBatch | None = None, generator: Seed = None,
               t_start: float = 0.0, max_events: int = 10_000_000) -> EventBatch:
        """Exact simulation by the cluster construction (module docstring), marks drawn from the mark distribution.

        The batch carries one feature, the model's (``feature_names == (feature,)``); with a ``history`` its
        events come first with their value of that feature (its other feature columns are not carried: new
        events have no values for them). ``max_events`` caps the new events over all sequences
        (:class:`~tpp.process.SamplingBudgetError` past it, e.g. for an explosive process)."""
        rng = as_numpy_rng(generator)
        K = self.num_marks
        mu = self.baseline.detach().numpy()
        adj = self.adjacency.detach().numpy()
        beta = float(self.decay_rate.detach())
        starts, t0s, ends = simulation_window(n, t_end, history, t_start, K)
        ratio = self.branching_ratio

        def g_of(x: np.ndarray, typ: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return self.productivity_of(torch.from_numpy(x), torch.from_numpy(typ)).numpy()

        immigrants = np.outer(ends - starts, mu)
        if float(immigrants.sum()) > max_events:
            raise budget_error(self, max_events, f"the immigrants alone number {float(immigrants.sum()):.4g} on average",
                               ratio)
        counts = rng.poisson(immigrants)
        seq = np.repeat(np.repeat(np.arange(n), K), counts.ravel())
        typ = np.repeat(np.tile(np.arange(K), n), counts.ravel())
        times = starts[seq] + rng.random(seq.size) * (ends - starts)[seq]
        generation = (seq, typ, times, self._draw_marks(typ, rng))

        def children(p_seq, p_typ, p_time, p_x, scale):
            mean = adj[:, p_typ].T * (g_of(p_x, p_typ) * scale)[:, None]  # [P, K]
            n_child = rng.poisson(mean).ravel()
            parent = np.repeat(np.arange(p_seq.size).repeat(K), n_child)
            c_typ = np.repeat(np.tile(np.arange(K), p_seq.size), n_child)
            c_time = p_time[parent] + rng.exponential(1.0 / beta, parent.size)
            c_seq = p_seq[parent]
            keep = c_time <= ends[c_seq]
            c_typ = c_typ[keep]
            return c_seq[keep], c_typ, c_time[keep], self._draw_marks(c_typ, rng)

        parts = [generation]
        if history is not None:
            h_flat = _flat(history)
            h_x = self._features(history, h_flat)
            h_seq = np.repeat(np.arange(n), np.diff(h_flat["seq_offsets"]))
            # Exponential delays are memoryless: the children still to come after the history's end number
            # Poisson(a g exp(-beta elapsed)) and arrive after Exponential(beta) delays from that end.
            elapsed = starts[h_seq] - h_flat["times"]
            late = children(h_seq, h_flat["marks"], starts[h_seq], h_x, np.exp(-beta * elapsed))
            parts.append(late)
            generation = tuple(np.concatenate(pair) for pair in zip(generation, late))
        total = sum(part[0].size for part in parts)
        depth = 0
        while generation[0].size:
            generation = children(*generation, np.ones(generation[0].size))
            parts.append(generation)
            total += generation[0].size
            depth += 1
            if total > max_events:
                raise budget_error(self, max_events, f"{total} events simulated in {depth} generations of children",
                                   ratio)
        seq, typ, times, xs = (np.concatenate(v) for v in zip(*parts))
        if history is not None:
            seq = np.concatenate([h_seq, seq])
            times = np.concatenate([h_flat["times"], times])
            typ = np.concatenate([h_flat["marks"], typ])
            xs = np.concatenate([h_x, xs])
        order = np.lexsort((times, seq))  # stable: a history's events first at equal times
        offsets = np.concatenate([[0], np.cumsum(np.bincount(seq, minlength=n))]).astype(np.int64)
        return EventBatch.from_flat(times[order], offsets, t0s, ends, typ[order], K, features=xs[order][:, None],
                                    feature_names=(self.feature,))
