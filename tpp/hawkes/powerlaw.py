"""Multivariate Hawkes process with power-law (Omori / Lomax) kernels, through a sum of exponentials.

``lambda_k(t) = mu_k + sum_j a_kj sum_{t_m^j < t} f(t - t_m^j)`` with the normalised power law
``f(t) = (p - 1) c^(p - 1) (t + c)^(-p)`` (``p > 1`` the exponent, ``c > 0`` the cutoff, integral 1,
so ``a`` is the branching matrix).

The power law is a Gamma mixture of exponentials: ``f(t) = int g(s) s exp(-s t) ds`` with ``g`` the
Gamma(``p - 1``, rate ``c``) density. Discretising that integral on the geometric grid of decays
``beta_m = beta_0 r^m`` (``m < M``) by the midpoint rule in ``log s`` gives the sum of exponentials of
Bacry & Muzy (2014) and Hardiman, Bercot & Bouchaud (2013):

    ``f_M(t) = sum_m w_m beta_m exp(-beta_m t)``,
    ``w_m = log(r) g(beta_m) beta_m = log(r) c^(p-1) beta_m^(p-1) exp(-c beta_m) / Gamma(p - 1)``

(HBB's weights ``beta_m^(p-1)``, tapered by the cutoff). The model IS this sum of exponentials: its
kernel is ``a_kj f_M``, so the exact O(N K M) recursion of :class:`~tpp.hawkes.SumExpHawkes` computes
the likelihood and its compiled thinning sampler simulates it; the power law enters only through the
weights, smooth in ``(p, c)``.

Approximation error (measured by ``tests/tpp/test_powerlaw_hawkes.py``; ``r`` the grid ratio). The
midpoint rule on an integrand analytic in ``log s`` converges exponentially in ``1 / log r``. Inside
``[10 / beta_max, 0.01 / beta_min]`` the relative error ``max |f_M / f - 1|`` measured for ``p`` in
``{1.2, 1.5, 2, 3}`` (``c beta_max = 10``) is 0.03-0.13 at ``r = 4.3``, 4e-3-2.3e-2 at ``r = 2.9``,
5e-4-3.5e-3 at ``r = 2.3`` and 3e-5-2.6e-3 at ``r = 1.7`` (the largest for ``p`` near 1, where the
truncation below ``beta_min`` dominates). Outside that window the truncation dominates: for
``t >> 1 / beta_min`` the approximation decays exponentially instead of as a power, and
``sum_m w_m`` falls short of 1 by about ``(c beta_min)^(p-1) / Gamma(p)`` (the share of offspring
that would come after the longest time scale): :meth:`PowerLawHawkes.kernel_mass` reports it. ``fit``
chooses the grid from the data (``1 / beta_min`` ten times the longest window, ``1 / beta_max`` the 1%
quantile of the positive gaps) unless ``decay_range`` is given, and warns when ``r > 3``.

Fit: for a fixed grid the per-event statistics of the recursion are computed once; the likelihood is
then concave in ``(mu, a)`` for fixed ``(p, c)`` and separates over target types. ``(p, c)`` are
fitted by profile likelihood: an outer bounded L-BFGS over ``(log(p - 1), log c)`` whose gradient is
the envelope-theorem derivative at the inner optimum (each inner problem a bound-constrained L-BFGS),
started from the best point of a coarse grid. One exponent and one cutoff are shared by every pair
``(k, j)``. Bounds: ``p`` in ``[1.01, 11]``, ``c`` in ``[0.1 / beta_max, 1 / beta_min]`` (outside, the grid
cannot resolve the kernel); ``fit_result_["at_bound"]`` names a parameter that ends on one.
"""

from __future__ import annotations

import math
import time as _time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.optimize
import scipy.special
import torch
from torch import Tensor, nn

from tpp.events import EventBatch
from tpp.hawkes import _recursion
from tpp.hawkes._common import (FitResult, check_fit_arguments, check_parameter_size, record_validation,
                                warn_if_not_stationary)
from tpp.hawkes._common import flat_events as _flat
from tpp.hawkes._common import observed_information
from tpp.hawkes.exp import SumExpHawkes, _HawkesLogLik, _standardise
from tpp.model import Seed
from tpp.options import Interval, check_params
from tpp.process import PointProcess

__all__ = ["PowerLawHawkes", "powerlaw_kernel", "powerlaw_weights", "geometric_decays"]


def geometric_decays(decay_range: Sequence[float], num_terms: int) -> np.ndarray:
    """``num_terms`` decays ``beta_0 r^m`` from ``decay_range[0]`` to ``decay_range[1]`` (geometric grid)."""
    low, high = (float(v) for v in decay_range)
    if not (0 < low < high and np.isfinite(high)):
        raise ValueError(f"decay_range must be two positive finite numbers, low < high, got {list(decay_range)}")
    return np.geomspace(low, high, int(num_terms))


def powerlaw_kernel(t: np.ndarray, exponent: float, cutoff: float) -> np.ndarray:
    """The normalised power law ``(p - 1) c^(p - 1) (t + c)^(-p)`` (integral 1 over ``t >= 0``)."""
    t = np.asarray(t, np.float64)
    p, c = float(exponent), float(cutoff)
    return (p - 1) * c ** (p - 1) * (t + c) ** (-p)


def powerlaw_weights(exponent: Tensor | float, cutoff: Tensor | float, decays: Tensor | np.ndarray) -> Tensor:
    """Weights ``w_m`` of the sum of exponentials ``sum_m w_m beta_m exp(-beta_m t)`` approximating the
    power law (see the module docstring); differentiable in ``exponent`` and ``cutoff`` (torch)."""
    beta = torch.as_tensor(decays, dtype=torch.float64)
    p = torch.as_tensor(exponent, dtype=torch.float64)
    c = torch.as_tensor(cutoff, dtype=torch.float64)
    log_ratio = math.log(float(beta[1] / beta[0]))
    shape = p - 1
    log_w = math.log(log_ratio) + shape * torch.log(c * beta) - c * beta - torch.lgamma(shape)
    return torch.exp(log_w)


def _weights_np(exponent: float, cutoff: float, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``w [M]`` and its derivatives ``dw/dp``, ``dw/dc`` (numpy, for the fit)."""
    a = exponent - 1
    log_ratio = math.log(beta[1] / beta[0])
    w = np.exp(math.log(log_ratio) + a * np.log(cutoff * beta) - cutoff * beta - scipy.special.gammaln(a))
    dp = w * (np.log(cutoff * beta) - scipy.special.digamma(a))
    dc = w * (a / cutoff - beta)
    return w, dp, dc


class PowerLawHawkes(PointProcess):
    """Multivariate Hawkes process with power-law kernels ``a_kj f(t)`` (see the module docstring).

    Args:
        num_marks: number of event types ``K``.
        num_terms: ``M``, the exponentials of the approximation (cost O(N K M)); at least 2.
        decay_range: ``(beta_min, beta_max)`` of the geometric grid in the data's time unit; None lets
            ``fit`` choose it from the data (and sets it until the next fit).

    Fitted attributes: ``baseline_ [K]``, ``adjacency_ [K, K]`` (the branching matrix of the power law),
    ``exponent_`` (``p``), ``cutoff_`` (``c``), ``decays_ [M]``, ``weights_ [M]``, ``fit_result_``.
    """

    _constraints = {
        "num_marks": Interval(1, None, integer=True),
        "num_terms": Interval(2, 200, integer=True),
        "baseline": Interval(0, None, closed="neither"),
        "adjacency": Interval(0, None),
        "exponent": Interval(1, None, closed="neither"),
        "cutoff": Interval(0, None, closed="neither"),
        "max_iter": Interval(1, None, integer=True),
        "tol": Interval(0, None),
    }

    def __init__(self, num_marks: int, num_terms: int = 24, decay_range: Sequence[float] | None = None) -> None:
        super().__init__()
        check_params(self, num_marks=num_marks, num_terms=num_terms)
        self.num_marks, self.num_terms = int(num_marks), int(num_terms)
        self.decay_range = None if decay_range is None else tuple(float(v) for v in decay_range)
        K, M = self.num_marks, self.num_terms
        check_parameter_size(self, (K, K, M), f"num_marks={K} with {M} terms")
        decays = geometric_decays(self.decay_range or (1e-3, 1e3), M)
        self.register_buffer("decays", torch.from_numpy(decays))
        self.log_baseline = nn.Parameter(torch.full((K,), math.log(0.1), dtype=torch.float64))
        self.log_adjacency = nn.Parameter(torch.full((K, K), math.log(0.5 / K), dtype=torch.float64))
        # Held as they are (not as logs), so a model saved as JSON reloads bit for bit; fit keeps them in range.
        self.exponent = nn.Parameter(torch.tensor(1.5, dtype=torch.float64))
        self.cutoff = nn.Parameter(torch.tensor(1.0 / float(np.sqrt(decays[0] * decays[-1])), dtype=torch.float64))

    # ------------------------------------------------------------------ parameters
    @property
    def baseline(self) -> Tensor:
        return self.log_baseline.exp()

    @property
    def adjacency(self) -> Tensor:
        return self.log_adjacency.exp()

    @property
    def weights(self) -> Tensor:
        """``w [M]`` of the sum-of-exponentials kernel ``f_M``."""
        return powerlaw_weights(self.exponent, self.cutoff, self.decays)

    def set_params(self, baseline: Sequence[float], adjacency: np.ndarray, exponent: float, cutoff: float,
                   decays: Sequence[float] | None = None) -> "PowerLawHawkes":
        """Set parameters (zeros in ``adjacency`` allowed); ``decays`` replaces the grid (geometric, ``M`` values)."""
        K = self.num_marks
        baseline = np.asarray(baseline, np.float64).reshape(K)
        adjacency = np.asarray(adjacency, np.float64).reshape(K, K)
        check_params(self, baseline=baseline, adjacency=adjacency, exponent=float(exponent), cutoff=float(cutoff))
        with torch.no_grad(), np.errstate(divide="ignore"):
            if decays is not None:
                decays = np.asarray(decays, np.float64).reshape(-1)
                if decays.size != self.num_terms or np.any(decays <= 0) or not np.allclose(
                        decays[1:] / decays[:-1], decays[1] / decays[0], rtol=1e-9):
                    raise ValueError(f"{type(self).__name__}: decays must be {self.num_terms} positive numbers on a "
                                     f"geometric grid, got {decays.tolist()}")
                self.decays.copy_(torch.from_numpy(decays))
            self.log_baseline.copy_(torch.from_numpy(np.log(baseline)))
            self.log_adjacency.copy_(torch.from_numpy(np.log(adjacency)))
            self.exponent.fill_(float(exponent))
            self.cutoff.fill_(float(cutoff))
        self._publish()
        return self

    @classmethod
    def from_params(cls, baseline: Sequence[float], adjacency: np.ndarray, exponent: float, cutoff: float,
                    decay_range: Sequence[float], num_terms: int = 24,
                    decays: Sequence[float] | None = None) -> "PowerLawHawkes":
        """A model with the given parameters on the grid of ``num_terms`` decays spanning ``decay_range``
        (``decays``: the grid itself, as :meth:`to_dict` writes it, so a reload is exact)."""
        baseline = np.asarray(baseline, np.float64).reshape(-1)
        model = cls(baseline.size, num_terms, decay_range)
        return model.set_params(baseline, adjacency, exponent, cutoff, decays)

    def _publish(self) -> None:
        self.baseline_ = self.baseline.detach().numpy().copy()
        self.adjacency_ = self.adjacency.detach().numpy().copy()
        self.exponent_ = float(self.exponent.detach())
        self.cutoff_ = float(self.cutoff.detach())
        self.decays_ = self.decays.numpy().copy()
        self.weights_ = self.weights.detach().numpy().copy()

    def kernel_mass(self) -> float:
        """``sum_m w_m``: the integral of ``f_M`` (1 minus the mass the grid truncates)."""
        return float(self.weights.detach().sum())

    @property
    def branching_ratio(self) -> float:
        """Spectral radius of ``a * sum_m w_m``, the branching ratio of the model as simulated (< 1: stationary)."""
        return float(np.max(np.abs(np.linalg.eigvals(self.adjacency.detach().numpy())))) * self.kernel_mass()

    def kernel(self, lags: np.ndarray) -> np.ndarray:
        """The exact power law ``f(lag)`` at the current ``(p, c)`` (what ``f_M`` approximates)."""
        return powerlaw_kernel(lags, float(self.exponent.detach()), float(self.cutoff.detach()))

    def excitation(self, lags: np.ndarray) -> np.ndarray:
        """``phi_kj(lag) = a_kj f_M(lag)``, ``[T, K, K]`` (the kernel the model uses)."""
        lags = np.asarray(lags, np.float64)
        beta, w = self.decays.numpy(), self.weights.detach().numpy()
        f = np.exp(-np.outer(lags, beta)) @ (w * beta)
        return f[:, None, None] * self.adjacency.detach().numpy()[None]

    def as_sumexp(self) -> SumExpHawkes:
        """The equivalent :class:`SumExpHawkes` (``A[k, j, m] = a_kj w_m``), detached."""
        adj = self.adjacency.detach().numpy()[..., None] * self.weights.detach().numpy()
        return SumExpHawkes.from_params(self.baseline.detach().numpy(), adj, self.decays.numpy())

    def summary_params(self) -> dict[str, Any]:
        """What ``tpp fit --json`` reports beyond baseline and adjacency."""
        return {"decay": self.decays_.tolist(), "exponent": self.exponent_, "cutoff": self.cutoff_,
                "kernel_mass": self.kernel_mass(), "branching_ratio": self.branching_ratio}

    def to_dict(self) -> dict:
        """Parameters as plain JSON-able values (the table's loader rebuilds the model)."""
        return {
            "model": "powerlaw-hawkes",
            "baseline": self.baseline.detach().numpy().tolist(),
            "adjacency": self.adjacency.detach().numpy().tolist(),
            "exponent": float(self.exponent.detach()),
            "cutoff": float(self.cutoff.detach()),
            "num_terms": self.num_terms,
            "decay_range": [float(self.decays[0]), float(self.decays[-1])],
            "decays": self.decays.numpy().tolist(),
        }

    # ------------------------------------------------------------------ protocol
    def log_likelihood(self, batch: EventBatch) -> Tensor:
        """Exact log-likelihood ``[B]`` of the sum-of-exponentials model, differentiable in every parameter."""
        self.check_marks(batch)
        adjacency = self.adjacency[..., None] * self.weights
        # The grid is fixed: its gradient (beta's) is not needed, so it enters as a constant.
        return _HawkesLogLik.apply(self.baseline, adjacency, self.decays.clone(), _flat(batch), batch.device)

    def intensity(self, batch: EventBatch, t: Tensor) -> Tensor:
        """``[B, T, K]`` intensity given the events strictly before each ``t``."""
        self.check_marks(batch)
        return self.as_sumexp().intensity(batch, t)

    def cumulative_intensity(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        """``[B, L, K]`` closed-form ``Lambda_k(t_start, t_n]``."""
        self.check_marks(batch)
        return self.as_sumexp().cumulative_intensity(batch)

    def compensator(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        """``[B]`` closed-form integral of the total intensity."""
        self.check_marks(batch)
        return self.as_sumexp().compensator(batch)

    def sample(self, n: int, t_end: float, history: EventBatch | None = None, generator: Seed = None,
               t_start: float = 0.0, max_events: int = 50_000_000) -> EventBatch:
        """Exact simulation of the sum-of-exponentials model (:meth:`SumExpHawkes.sample`, compiled thinning)."""
        return self.as_sumexp().sample(n, t_end, history=history, generator=generator, t_start=t_start,
                                       max_events=max_events)

    # ------------------------------------------------------------------ fitting
    def _grid_from_data(self, flat: dict[str, np.ndarray]) -> tuple[float, float]:
        """``(beta_min, beta_max)``: ten times the longest window, and the 1% quantile of positive gaps."""
        longest = float(np.max(flat["t_end"] - flat["t_start"]))
        seq = np.repeat(np.arange(flat["t_start"].size), np.diff(flat["seq_offsets"]))
        gaps = np.diff(flat["times"])[np.diff(seq) == 0]
        gaps = gaps[gaps > 0]
        shortest = float(np.quantile(gaps, 0.01)) if gaps.size else longest / max(flat["times"].size, 1)
        low, high = 0.1 / longest, 1.0 / max(shortest, 1e-12 * longest)
        return low, max(high, 100 * low)

    def fit(self, train: EventBatch, val: EventBatch | None = None, *, max_iter: int = 500, tol: float = 1e-10,
            progress: bool = False, **trainer_options: Any) -> "PowerLawHawkes":
        """Maximum likelihood of ``(mu, a, p, c)`` (profile over ``(p, c)``, see the module docstring).

        ``val`` is only scored (``fit_result_["val_score"]``); the trainer's options are accepted and unused.
        """
        check_fit_arguments(self, val, trainer_options, train=train)
        check_params(self, max_iter=max_iter, tol=tol)
        self.check_marks(train)
        if train.num_events == 0:
            raise ValueError("cannot fit a Hawkes process to data without events")
        start = _time.perf_counter()
        flat, scale = _standardise(_flat(train))
        if self.decay_range is not None:
            low, high = self.decay_range[0] * scale, self.decay_range[1] * scale
        else:
            low, high = self._grid_from_data(flat)
        beta = geometric_decays((low, high), self.num_terms)
        ratio = beta[1] / beta[0]
        if ratio > 3:
            warnings.warn(f"{type(self).__name__}: {self.num_terms} terms over {high / low:.3g} give a grid ratio "
                          f"{ratio:.3g} > 3: the power law is approximated to worse than about 1e-2; pass a larger "
                          "num_terms= (or a narrower decay_range=)", stacklevel=2)
        mu, adj, p, c, result = self._fit_profile(flat, beta, max_iter, tol)
        result["log_likelihood"] = float(result["log_likelihood"] - flat["times"].size * np.log(scale))
        result["seconds"] = _time.perf_counter() - start
        self.set_params(mu / scale, adj, p, c * scale, beta / scale)
        self.fit_result_ = result
        record_validation(self, val, result)
        warn_if_not_stationary(self.branching_ratio)
        return self

    def _fit_profile(self, flat, beta, max_iter, tol):
        K, M = self.num_marks, beta.size
        n_events = float(flat["times"].size)
        order = np.argsort(flat["marks"], kind="stable")
        rows = np.empty_like(order)
        rows[order] = np.arange(order.size)
        bounds_of_type = np.concatenate([[0], np.cumsum(np.bincount(flat["marks"], minlength=K))])
        X, tails, duration = _recursion.event_features(flat["times"], flat["marks"], flat["seq_offsets"],
                                                        flat["t_start"], flat["t_end"], beta, K, rows)
        X3 = X.reshape(-1, K, M)
        tails2 = tails.reshape(K, M)
        counts = np.diff(bounds_of_type).astype(np.float64)
        rates = np.maximum(counts / duration, 1e-10)
        warm = {"mu": 0.5 * rates, "adj": np.full((K, K), 0.5 / K)}
        mu_floor = 1e-12 * float(rates.min())
        stats = {"iterations": 0, "evaluations": 0, "outer": 0}
        cache: dict[tuple[float, float], tuple] = {}

        def inner(p: float, c: float):
            key = (p, c)
            if key in cache:
                return cache[key]
            w, dp, dc = _weights_np(p, c, beta)
            Y = X3 @ w  # [N, K]
            tails_w = tails2 @ w
            value, converged = 0.0, True
            g_w = np.zeros(M)
            for i in range(K):
                Yi = Y[bounds_of_type[i]: bounds_of_type[i + 1]]

                def objective(theta, Yi=Yi):
                    stats["evaluations"] += 1
                    ll, g_mu, g_a = _recursion.target_loglik_and_grad(Yi, theta[0], theta[1:], tails_w, duration)
                    if not np.isfinite(ll):
                        return np.inf, np.zeros_like(theta)
                    return -ll / n_events, -np.concatenate([[g_mu], g_a]) / n_events

                x0 = np.concatenate([[max(warm["mu"][i], mu_floor)], np.maximum(warm["adj"][i], 0)])
                res = scipy.optimize.minimize(objective, x0, jac=True, method="L-BFGS-B",
                                              bounds=[(mu_floor, None)] + [(0.0, None)] * K,
                                              options=dict(maxiter=max_iter, ftol=tol, gtol=1e-12, maxcor=20))
                stats["iterations"] += int(res.nit)
                warm["mu"][i], warm["adj"][i] = res.x[0], res.x[1:]
                value += float(res.fun)
                converged &= bool(res.success)
                # Envelope theorem: d(log L)/dw at the inner optimum, the bounds not involving w.
                a_i = res.x[1:]
                lam = res.x[0] + Yi @ a_i
                S = np.einsum("n,njm->jm", 1.0 / lam, X3[bounds_of_type[i]: bounds_of_type[i + 1]])
                g_w += a_i @ (S - tails2)
            out = (warm["mu"].copy(), warm["adj"].copy(), value, converged, g_w @ dp, g_w @ dc)
            cache[key] = out
            return out

        def profile(z: np.ndarray) -> tuple[float, np.ndarray]:
            stats["outer"] += 1
            p, c = 1 + math.exp(z[0]), math.exp(z[1])
            _, _, value, _, g_p, g_c = inner(p, c)
            # value is -log L / N: its gradient in (log(p-1), log c)
            return value, -np.array([g_p * (p - 1), g_c * c]) / n_events

        low, high = float(beta[0]), float(beta[-1])
        z_bounds = [(math.log(0.01), math.log(10.0)), (math.log(0.1 / high), math.log(1.0 / low))]
        # A coarse look at the profile first: it can have several local optima in the cutoff.
        starts = [(math.log(e), z) for e in (0.2, 0.5, 1.0, 2.0)
                  for z in np.linspace(z_bounds[1][0] + 1.0, z_bounds[1][1] - 1.0, 6)]
        best = min(starts, key=lambda z: profile(np.array(z))[0])
        outer = scipy.optimize.minimize(profile, np.array(best), jac=True, method="L-BFGS-B", bounds=z_bounds,
                                        options=dict(maxiter=200, ftol=max(tol, 1e-13), gtol=1e-9))
        p, c = 1 + math.exp(outer.x[0]), math.exp(outer.x[1])
        mu, adj, value, converged, _, _ = inner(p, c)
        result = FitResult(objective="likelihood", value=value, log_likelihood=-value * n_events,
                           iterations=stats["iterations"], evaluations=stats["evaluations"],
                           outer_steps=stats["outer"], converged=bool(converged and outer.success),
                           at_bound=[name for name, v, (lo, hi) in zip(("exponent", "cutoff"), outer.x, z_bounds)
                                     if min(v - lo, hi - v) < 1e-6])
        return mu, adj, p, c, result

    # ------------------------------------------------------------------ uncertainty
    def _loglik_grad(self, flat: dict[str, np.ndarray], theta: np.ndarray) -> np.ndarray:
        """Gradient of the exact log-likelihood in ``theta = (mu [K], a [K K], p, c)`` (data units)."""
        K = self.num_marks
        beta = self.decays.numpy()
        mu, a, p, c = theta[:K], theta[K: K + K * K].reshape(K, K), theta[-2], theta[-1]
        w, dp, dc = _weights_np(p, c, beta)
        args = (flat["times"], flat["marks"], flat["seq_offsets"], flat["t_start"], flat["t_end"])
        _, g_mu, g_A, _ = _recursion.loglik_and_grad(*args, mu, a[..., None] * w, beta,
                                                      np.ones(flat["t_end"].size), True)
        g_w = np.einsum("kjm,kj->m", g_A, a)
        return np.concatenate([g_mu, (g_A @ w).ravel(), [g_w @ dp, g_w @ dc]])

    def standard_errors(self, data: EventBatch, rel_step: float = 1e-5) -> dict[str, Any]:
        """Asymptotic standard errors from the observed Fisher information (central differences of the
        analytic gradient) in ``(mu, a, p, c)``; NaN (with a warning) where it is not positive definite
        (e.g. an adjacency fitted at 0)."""
        if not hasattr(self, "baseline_"):
            raise ValueError(f"{type(self).__name__}.standard_errors: fit the model (or set_params) first")
        self.check_marks(data)
        flat = _flat(data)
        K = self.num_marks
        theta = np.concatenate([self.baseline_, self.adjacency_.ravel(), [self.exponent_, self.cutoff_]])
        information = observed_information(lambda th: self._loglik_grad(flat, th), theta, rel_step)
        try:
            variance = np.diag(np.linalg.inv(information))
        except np.linalg.LinAlgError:
            raise ValueError(f"{type(self).__name__}.standard_errors: the observed Fisher information is singular "
                             "(too few events for the parameters)") from None
        if np.any(variance <= 0):
            warnings.warn(f"{type(self).__name__}.standard_errors: {int(np.sum(variance <= 0))} standard errors are "
                          "undefined (NaN): the information is not positive definite in their directions", stacklevel=2)
        se = np.sqrt(np.where(variance > 0, variance, np.nan))
        return {"baseline": se[:K], "adjacency": se[K: K + K * K].reshape(K, K), "exponent": float(se[-2]),
                "cutoff": float(se[-1])}
