"""Space-time ETAS (Ogata 1998; Zhuang, Ogata & Vere-Jones 2002): the model seismologists fit to catalogues.

The conditional intensity of an event at time ``t``, location ``x = (x, y)`` in the region ``S`` is

``lambda(t, x) = mu u(x) + sum_{t_j < t} kappa(m_j) g(t - t_j) f(x - x_j | m_j)``

* ``kappa(m) = K exp(alpha (m - m0))``: the expected number of children of an event of magnitude ``m`` on the
  whole plane (productivity; ``m0`` the completeness magnitude);
* ``g(s) = (p - 1) c^(p-1) (s + c)^(-p)``: the normalised Omori-Utsu law (``p > 1``), ``G(s) = 1 - (1 + s/c)^(1-p)``;
* ``f(. | m)``: an isotropic **Gaussian** with variance ``sigma^2(m) = D exp(gamma (m - m0))`` per coordinate
  (Zhuang et al. 2002's Gaussian kernel; its scale grows with the magnitude). Chosen over their power-law kernel
  because its mass in a rectangle is a product of error functions: the likelihood stays exact in a bounded region;
* ``u``: the background density on ``S`` (integrates to 1), ``mu`` the background events per unit time;
* magnitudes: Gutenberg-Richter, ``m - m0 ~ Exponential(beta)`` independent of the past, ``beta`` by its MLE
  ``1 / mean(m - m0)`` (Aki 1965; ``b = beta / ln 10``). For magnitudes rounded to a bin ``dm``, pass
  ``m0 = (smallest magnitude) - dm / 2`` (Utsu's correction): ``m0`` is the lower end of the density.

With ``magnitude=None`` (catalogues without magnitudes, e.g. earthquakes_japan) ``kappa = K`` and
``sigma^2 = D`` are constant (``alpha = gamma = 0``, not fitted).

**Region.** ``S`` is a rectangle: ``region=((x_lo, x_hi), (y_lo, y_hi))``, by default the bounding box of the
training locations (an event outside it is refused with a located error: pass ``region=`` to score other data).
Infinite bounds give the unbounded plane. Distances are Euclidean in the features' own units (degrees for
lon/lat: no map projection). Only events in ``S`` are observed, and only they excite: the model is the
process restricted to ``S``; the kernel's mass in ``S``, ``M_j = int_S f(x - x_j | m_j) dx``, is exact (erf).

**Likelihood** (per sequence on ``[t_start, t_end]``), split as the protocol asks
(:mod:`tpp.spatial.base`), with ``lambda(t) = int_S lambda(t, x) dx = mu + sum_{t_j<t} kappa_j g(t - t_j) M_j``:

* time: ``sum_n log lambda(t_n) - [mu (t_end - t_start) + sum_j kappa_j M_j G(t_end - t_j)]``;
* space: ``sum_n log lambda(t_n, x_n) - log lambda(t_n)``;
* magnitude: ``sum_n log beta - beta (m_n - m0)`` (:meth:`ETAS.log_likelihood_parts`, key ``"magnitude"``).

:meth:`log_likelihood` is time + space as the protocol says (the magnitude part separates: ``beta`` has its
closed form and no other parameter enters it); :meth:`complete_log_likelihood` adds the magnitudes.
Ties follow the package rule: only events strictly earlier in time excite.

**Background** by the stochastic-declustering EM (Zhuang et al. 2002): given the background probabilities
``phi_j = mu u(x_j) / lambda(t_j, x_j)``, ``u(x) = sum_j phi_j N_S(x; x_j, h_j^2) / sum_j phi_j`` with
``N_S`` a Gaussian kernel renormalised to ``S`` and a variable bandwidth ``h_j``: with ``bandwidth="background"``
(default) the smallest radius around ``x_j`` holding ``n_p`` background events by weight (``sum phi`` of the
other events within it ``>= n_p``), with ``bandwidth="events"`` Zhuang et al.'s distance to the ``n_p``-th nearest
event; either at least ``min_bandwidth``. Counting the neighbours by ``phi`` keeps the background's kernels from
shrinking to the size of aftershock clusters, where ``u`` would absorb part of the clustering (``K`` too low, ``p``
and ``c`` too high). On two simulated catalogues with a uniform background (``benchmarks/etas.py``'s model, ~1,300
events) ``"background"`` with ``n_p = 30`` (the default) gave every estimate within 0.1 standard errors of a fit
with the true ``u``; ``"events"`` with ``n_p = 10`` put ``K`` up to 1.0 and ``p`` up to 1.1 standard errors
further off. The parameters are fitted by maximum likelihood given ``u`` (scipy L-BFGS-B on
the exact analytic gradient, compiled), then ``phi`` and ``u`` are updated, until ``phi`` moves less than
``em_tol``. In the M-step each training event's background density leaves out its own kernel (``fit``'s
``leave_one_out``). The stored ``u`` is the one the final parameters were fitted with, and
``background_probabilities_`` are the ``phi_j`` of the final model. Background kernels farther than
``sqrt(2 * 50) h_j`` from a point are skipped (each below ``e^-50`` of its peak).

**Short windows; the two estimators.** ``K``, ``c`` and ``p`` enter both parts; on windows short against the Omori
tail (the 30-day sequences of earthquakes_japan) the joint likelihood can climb towards ``p -> 1``, ``K -> infinity``
(the kernel becomes an unnormalised ``(t + c)^-1`` memory of every earlier event). The search stops at ``K = 50``
and ``fit`` warns (``fit_result_["at_bound"]``). Because the parameters are shared, the maximum-likelihood fit
(``estimator="likelihood"``, the default) trades the time part for the space part where the model is
misspecified. On earthquakes_japan (no magnitudes; 950 training windows that overlap by 23 of their 30 days) its
time part on test was 0.545 nats/event, below exponential Hawkes's 0.587 (``tpp.hawkes.ExpHawkes``, maximum
likelihood), while this temporal law fitted on the time part alone reached 0.618. The cause is in the data, not
the fit: the windows' overall rates differ far beyond Poisson (events per window: sd 39 against 9 for train, 96
against 10 for test), and the time part is best served by a long-memory self-excitation from every earlier event
anywhere (``mu`` 1.28, ``K (p - 1)`` 0.10) that carries each window's level; the space part credits only triggering
local in space and wants a background share of each event's intensity about four times larger (joint fit ``mu``
2.14, ``K (p - 1)`` 0.036; on train it gains 0.18 nats/event in space for 0.025 in time). Measured as not the cause:
the background's bandwidth (``n_p`` 5, 30, "events"), the training windows' repeated events in the leave-one-out
background (0.03 nats of ``log u``), the ``K`` bound (unbounded: the same 0.545), the number of EM iterations
(3 or 5); nor the kernel's shape (scratch fits with the background held fixed: a power-law spatial kernel
0.556, a share of the children placed by ``u`` 0.576).
``estimator="two-stage"`` is the seismologist's temporal fit inside the model: ``(mu, K, alpha, c, p)`` maximise
the time part (the exact likelihood of the observed times under the model), then ``(D, gamma)`` the space part
given them, alternated with the same declustering EM. On earthquakes_japan: time 0.618, space -3.630 (the
likelihood fit: 0.545, -3.508; Hawkes x GMM's time part 0.582 over 3 seeds; ``benchmarks/stpp.py --models
etas,etas-two-stage``). Where the windows' rates do not vary so, the joint fit is also the better one in time
(ridgecrest2019_comcat's test part: 1.787 against 1.523; phuket_earthquakes: -1.484 against -1.516). Under a
correct model both estimators are consistent; the two-stage one has no observed-information standard errors.

**Simulation** is exact by branching: background events ``Poisson(mu T)`` uniform in time with locations from
``u``; every event has ``Poisson(kappa(m))`` children on the plane with Omori-Utsu delays, Gaussian displacements
and Gutenberg-Richter magnitudes; a child outside ``S`` or after ``t_end`` is dropped with its line (outside ``S``
it is unobserved, so, as in the likelihood, it does not excite).
"""

from __future__ import annotations

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
from scipy.spatial import cKDTree
from torch import Tensor

from tpp.events import EventBatch, EventDataError
from tpp.hawkes._common import (FitResult, budget_error, check_fit_arguments, observed_information, record_validation,
                                simulation_window, warn_if_not_stationary)
from tpp.model import Seed
from tpp.process import as_numpy_rng
from tpp.spatial.base import SpatioTemporalProcess

__all__ = ["ETAS", "PARAMETER_NAMES"]

_JIT = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")
#: the natural parameters, in the order of every parameter vector of this module
PARAMETER_NAMES = ("mu", "K", "alpha", "c", "p", "D", "gamma")
#: background kernels are skipped beyond this many nats below their peak
_CUT = 50.0


# --------------------------------------------------------------------------- compiled passes
@numba.njit(**_JIT)
def _etas_pass(times, x, y, dm, offsets, t_start, t_end, u, kappa, s2, mass, dmass, mu, c, p, need_grad):
    """Time and space log-likelihood per sequence, ``lambda(t_n, x_n)``, ``lambda(t_n)`` per event, the
    gradient of time + space in ``(log mu, log K, alpha, log c, log(p - 1), log D, gamma)``, and the gradient of
    the time part alone in the same coordinates (the space part's is their difference; the two-stage fit uses both).

    ``kappa, s2, mass, dmass [N]``: per event ``K e^{alpha dm}``, ``D e^{gamma dm}``, the kernel's mass in the
    region and its derivative in ``log s2``. Events with ``t_j < t_n`` (a prefix: times are sorted) excite ``n``.
    """
    B = offsets.size - 1
    N = times.size
    time_ll = np.zeros(B)
    space_ll = np.zeros(B)
    lam_x = np.zeros(N)
    lam_t = np.zeros(N)
    grad = np.zeros(7)
    grad_time = np.zeros(7)
    gt = np.zeros(7)
    logc = math.log(c)
    a0 = math.log(p - 1.0) + (p - 1.0) * logc
    ga = np.zeros(7)
    for b in range(B):
        lo = offsets[b]
        for n in range(lo, offsets[b + 1]):
            t = times[n]
            lx = mu * u[n]
            lt = mu
            if need_grad:
                ga[:] = 0.0
                gt[:] = 0.0
            for j in range(lo, n):
                dt = t - times[j]
                if dt <= 0.0:
                    break  # ties and later: not in the history
                lw = math.log(dt + c)
                kg = kappa[j] * math.exp(a0 - p * lw)
                rx = x[n] - x[j]
                ry = y[n] - y[j]
                q = (rx * rx + ry * ry) / (2.0 * s2[j])
                a = kg * math.exp(-q) / (2.0 * math.pi * s2[j])
                lx += a
                lt += kg * mass[j]
                if need_grad:
                    dlc = (p - 1.0) - p * c / (dt + c)
                    dlp = 1.0 + (p - 1.0) * (logc - lw)
                    ga[1] += a
                    ga[2] += a * dm[j]
                    ga[3] += a * dlc
                    ga[4] += a * dlp
                    h = a * (q - 1.0)
                    ga[5] += h
                    ga[6] += h * dm[j]
                    bt = kg * mass[j]  # the same derivatives of lambda(t_n)
                    gt[1] += bt
                    gt[2] += bt * dm[j]
                    gt[3] += bt * dlc
                    gt[4] += bt * dlp
                    e = kg * dmass[j]
                    gt[5] += e
                    gt[6] += e * dm[j]
            lam_x[n] = lx
            lam_t[n] = lt
            time_ll[b] += math.log(lt)
            space_ll[b] += math.log(lx) - math.log(lt)
            if need_grad:
                ga[0] = mu * u[n]
                gt[0] = mu
                for k in range(7):
                    grad[k] += ga[k] / lx
                    grad_time[k] += gt[k] / lt
            # compensator of event n's offspring over (t_n, t_end]
            s = t_end[b] - t
            w = 1.0 + s / c
            lwp = math.log(w)
            wp = math.exp((1.0 - p) * lwp)
            km = kappa[n] * mass[n]
            term = km * (1.0 - wp)
            time_ll[b] -= term
            if need_grad:
                # the compensator is in the time part only: the same terms leave both gradients
                gt[1] = term
                gt[2] = term * dm[n]
                gt[3] = km * (-(p - 1.0) * wp / w * s / c)
                gt[4] = km * (p - 1.0) * lwp * wp
                e = kappa[n] * (1.0 - wp) * dmass[n]
                gt[5] = e
                gt[6] = e * dm[n]
                for k in range(1, 7):
                    grad[k] -= gt[k]
                    grad_time[k] -= gt[k]
        duration = t_end[b] - t_start[b]
        time_ll[b] -= mu * duration
        if need_grad:
            grad[0] -= mu * duration
            grad_time[0] -= mu * duration
    return time_ll, space_ll, lam_x, lam_t, grad, grad_time


@numba.njit(**_JIT)
def _background(px, py, cx, cy, h2, weight, cut):
    """``sum_j weight_j exp(-r^2 / (2 h2_j)) / (2 pi h2_j)`` at each point (``r`` its distance to centre ``j``);
    a centre more than ``cut`` nats below its peak at that point is skipped."""
    out = np.zeros(px.size)
    for i in range(px.size):
        total = 0.0
        for j in range(cx.size):
            dx = px[i] - cx[j]
            dy = py[i] - cy[j]
            q = (dx * dx + dy * dy) / (2.0 * h2[j])
            if q < cut:
                total += weight[j] * math.exp(-q) / (2.0 * math.pi * h2[j])
        out[i] = total
    return out


def _box_mass(x: np.ndarray, y: np.ndarray, s2: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mass in the rectangle of isotropic Gaussians centred at ``(x, y)`` with variances ``s2``, and its
    derivative in ``log s2`` (exact, error functions; infinite bounds allowed)."""
    sigma = np.sqrt(s2)
    parts, slopes = [], []
    for centre, (lo, hi) in ((x, region[0]), (y, region[1])):
        a, b = (lo - centre) / sigma, (hi - centre) / sigma
        parts.append(scipy.special.ndtr(b) - scipy.special.ndtr(a))
        with np.errstate(invalid="ignore"):
            edge = lambda z: np.where(np.isfinite(z), z * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi), 0.0)  # noqa: E731
            slopes.append(-0.5 * (edge(b) - edge(a)))  # d mass / d log s2 = 1/2 d mass / d log sigma
    mass = parts[0] * parts[1]
    return mass, slopes[0] * parts[1] + parts[0] * slopes[1]


def _omori_tail(s: np.ndarray, c: float, p: float) -> np.ndarray:
    """``1 - G(s) = (1 + s/c)^(1-p)``: the share of an event's children still to come after ``s``."""
    return np.exp((1.0 - p) * np.log1p(np.maximum(s, 0.0) / c))


class ETAS(SpatioTemporalProcess):
    """Space-time ETAS with a Gaussian spatial kernel and a declustered background (see the module docstring).

    Args:
        magnitude: name of the magnitude feature; None: no magnitudes (constant productivity and kernel scale).
        location_names: the two location features; None: the first two features other than the magnitude.
        m0: completeness magnitude (lower end of the Gutenberg-Richter density; reference of ``kappa`` and
            ``sigma``); None: the smallest training magnitude. A smaller magnitude is refused with a located error.
        region: ``((x_lo, x_hi), (y_lo, y_hi))``; None: the bounding box of the training locations.
        bandwidth_neighbours: ``n_p`` of the background's variable bandwidth.
        bandwidth: ``"background"`` (neighbours counted by their background probabilities) or ``"events"``
            (Zhuang et al. 2002: the ``n_p``-th nearest event), see the module docstring.
        min_bandwidth: the smallest background bandwidth; None: ``1e-3`` times the region's diagonal (of the
            training bounding box when the region is unbounded).
        num_marks: must be 1 (the table passes the data's mark count; ETAS has one event type).
        estimator: ``"likelihood"`` (maximum likelihood of time + space, the default) or ``"two-stage"`` (the
            temporal parameters by the time part's likelihood, then ``D`` and ``gamma`` by the space part's given
            them: the temporal law a seismologist fits for forecasting times; see "Short windows" in the module
            docstring). Both alternate with the same declustering EM for the background.

    Fitted attributes: ``params_`` (dict of ``mu, K, alpha, c, p, D, gamma``), ``beta_`` (Gutenberg-Richter
    rate; ``b_value_ = beta_ / ln 10``), ``m0_``, ``region_``, ``background_probabilities_`` (the ``phi_j`` of the
    training events, concatenated: the last E-step's, with the fit's leave-one-out background;
    :meth:`background_probability` gives them under the full ``u`` for any batch),
    ``branching_ratio`` (``E[kappa(M)]``, infinite when ``alpha >= beta``),
    ``empirical_branching_ratio_`` (the mean ``kappa`` of the training events), ``fit_result_``.
    """

    def __init__(self, magnitude: str | None = "magnitude", location_names: Sequence[str] | None = None,
                 m0: float | None = None, region: Sequence[Sequence[float]] | None = None,
                 bandwidth_neighbours: int = 30, min_bandwidth: float | None = None, num_marks: int = 1,
                 bandwidth: str = "background", estimator: str = "likelihood") -> None:
        super().__init__()
        if int(num_marks) != 1:
            raise ValueError(f"ETAS has one event type; got num_marks={num_marks} (select one type, or merge them)")
        if magnitude is not None and (not isinstance(magnitude, str) or not magnitude):
            raise TypeError(f"ETAS: magnitude must be a feature name or None, got {magnitude!r}")
        self.set_locations(2, location_names)
        if self.location_names is not None and magnitude in self.location_names:
            raise ValueError(f"ETAS: the magnitude feature {magnitude!r} cannot also be a location {list(self.location_names)}")
        if int(bandwidth_neighbours) < 1:
            raise ValueError(f"ETAS: bandwidth_neighbours must be a positive integer, got {bandwidth_neighbours}")
        if min_bandwidth is not None and not float(min_bandwidth) > 0:
            raise ValueError(f"ETAS: min_bandwidth must be positive, got {min_bandwidth}")
        self.num_marks = 1
        self.magnitude = magnitude
        self.m0 = None if m0 is None else float(m0)
        self.region = None if region is None else self._check_region(region)
        self.bandwidth_neighbours = int(bandwidth_neighbours)
        if bandwidth not in ("background", "events"):
            raise ValueError(f"ETAS: bandwidth must be 'background' or 'events', got {bandwidth!r}")
        self.bandwidth = bandwidth
        if estimator not in ("likelihood", "two-stage"):
            raise ValueError(f"ETAS: estimator must be 'likelihood' or 'two-stage', got {estimator!r}")
        self.estimator = estimator
        self.min_bandwidth = None if min_bandwidth is None else float(min_bandwidth)
        # natural parameters (float64, PARAMETER_NAMES) and the Gutenberg-Richter rate
        self.register_buffer("params", torch.tensor([1.0, 0.5, 1.0, 0.01, 1.2, 0.01, 0.5], dtype=torch.float64))
        self.beta_ = 1.0 / math.log10(math.e) if magnitude is not None else float("nan")  # b = 1
        self.m0_ = 0.0 if self.m0 is None else self.m0
        self.region_ = self.region
        self._bg: dict[str, np.ndarray] | None = None
        self._train_data: dict[str, Any] | None = None
        self._train_u: np.ndarray | None = None
        self._names: tuple[str, ...] | None = None  # the features samples carry

    # ------------------------------------------------------------------ parameters
    def cover(self, *batches: EventBatch, margin: float = 0.01) -> "ETAS":
        """Set the study region to the bounding box of the locations of all ``batches`` (train, validation and test
        splits), widened by ``margin`` of its size on each side, so that a held-out event outside the training
        events' box is still inside the region (ETAS refuses events outside it); returns self."""
        boxes = [self.locations(b)[b.mask] for b in batches if b.num_events]
        if not boxes:
            raise ValueError("ETAS.cover: the batches hold no events")
        x = torch.cat(boxes).numpy()
        lo, hi = x.min(0), x.max(0)
        pad = (hi - lo) * float(margin)
        self.region = self.region_ = self._check_region(np.stack([lo - pad, hi + pad], 1))
        return self

    @staticmethod
    def _check_region(region: Sequence[Sequence[float]]) -> np.ndarray:
        box = np.asarray(region, np.float64)
        if box.shape != (2, 2) or np.any(np.isnan(box)) or np.any(box[:, 1] <= box[:, 0]):
            raise ValueError(f"ETAS: region must be ((x_lo, x_hi), (y_lo, y_hi)) with lo < hi, got {region!r}")
        return box

    @property
    def params_(self) -> dict[str, float]:
        values = self.params.numpy()
        return dict(zip(PARAMETER_NAMES, map(float, values)))

    @property
    def b_value_(self) -> float:
        return self.beta_ / math.log(10.0)

    @property
    def _free(self) -> np.ndarray:
        """Which of the seven parameters are fitted (alpha and gamma only with magnitudes)."""
        free = np.ones(7, bool)
        if self.magnitude is None:
            free[[2, 6]] = False
        return free

    def set_params(self, mu: float, K: float, c: float, p: float, D: float, alpha: float = 0.0, gamma: float = 0.0,
                   beta: float | None = None, m0: float | None = None,
                   region: Sequence[Sequence[float]] | None = None) -> "ETAS":
        """Set the parameters directly (``beta``: the Gutenberg-Richter rate; ``m0``, ``region`` as in the
        constructor). The background stays as it is (uniform on the region until :meth:`set_background`)."""
        if not (mu > 0 and K >= 0 and c > 0 and p > 1 and D > 0):
            raise ValueError(f"ETAS: need mu > 0, K >= 0, c > 0, p > 1, D > 0; got mu={mu}, K={K}, c={c}, p={p}, D={D}")
        if self.magnitude is None and (alpha != 0 or gamma != 0):
            raise ValueError("ETAS without magnitudes has alpha = gamma = 0")
        self.params.copy_(torch.tensor([mu, K, alpha, c, p, D, gamma], dtype=torch.float64))
        if beta is not None:
            if not beta > 0:
                raise ValueError(f"ETAS: beta must be positive, got {beta}")
            self.beta_ = float(beta)
        if m0 is not None:
            self.m0_ = float(m0)
        if region is not None:
            self.region_ = self._check_region(region)
        return self

    def set_background(self, centres: np.ndarray, bandwidths: np.ndarray | None, weights: np.ndarray | None = None,
                       variances: np.ndarray | None = None) -> "ETAS":
        """``u(x) = sum_j w_j N_S(x; centre_j, h_j^2) / sum_j w_j`` (``centres [J, 2]``, ``bandwidths [J]``
        standard deviations or ``variances [J]``, ``weights [J]`` default 1), renormalised to the region."""
        if self.region_ is None:
            raise ValueError("ETAS.set_background: set the region first (constructor or set_params(region=...))")
        centres = np.asarray(centres, np.float64).reshape(-1, 2)
        if (bandwidths is None) == (variances is None):
            raise ValueError("ETAS.set_background: give bandwidths or variances (one of them)")
        spread = np.asarray(bandwidths if variances is None else variances, np.float64)
        spread = np.broadcast_to(spread, (centres.shape[0],)).copy()
        w = np.ones(centres.shape[0]) if weights is None else np.asarray(weights, np.float64).reshape(-1)
        if np.any(~(spread > 0)) or np.any(w < 0) or not w.sum() > 0:
            raise ValueError("ETAS.set_background: bandwidths must be positive and weights non-negative, not all 0")
        h2 = spread * spread if variances is None else spread
        mass, _ = _box_mass(centres[:, 0], centres[:, 1], h2, self.region_)
        self._bg = {"x": np.ascontiguousarray(centres[:, 0]), "y": np.ascontiguousarray(centres[:, 1]), "h2": h2,
                    "phi": w.copy(), "weight": w / (w.sum() * mass)}
        return self

    def background_density(self, points: np.ndarray) -> np.ndarray:
        """``u`` at ``points [M, 2]`` (0 outside the region; uniform on a bounded region before any background)."""
        points = np.asarray(points, np.float64).reshape(-1, 2)
        box = self.region_
        inside = np.all((points >= box[:, 0]) & (points <= box[:, 1]), axis=1)
        if self._bg is None:
            area = float(np.prod(box[:, 1] - box[:, 0]))
            if not np.isfinite(area):
                raise ValueError("ETAS: no background density on an unbounded region: call fit or set_background")
            return np.where(inside, 1.0 / area, 0.0)
        bg = self._bg
        u = _background(np.ascontiguousarray(points[:, 0]), np.ascontiguousarray(points[:, 1]), bg["x"], bg["y"],
                        bg["h2"], bg["weight"], _CUT)
        return np.where(inside, u, 0.0)

    def mean_productivity(self) -> float:
        """``E[kappa(M)]`` under Gutenberg-Richter: ``K beta / (beta - alpha)`` (``inf`` if ``alpha >= beta``)."""
        K, alpha = float(self.params[1]), float(self.params[2])
        if self.magnitude is None:
            return K
        return K * self.beta_ / (self.beta_ - alpha) if alpha < self.beta_ else float("inf")

    @property
    def branching_ratio(self) -> float:
        """Mean number of children per event on the plane, ``E[kappa(M)]`` (< 1: the process is stable)."""
        return self.mean_productivity()

    # ------------------------------------------------------------------ data
    def _location_index(self, names: Sequence[str]) -> list[int]:
        names = list(names)
        if self.location_names is not None:
            missing = [n for n in self.location_names if n not in names]
            if missing:
                raise EventDataError(f"ETAS reads locations from features {list(self.location_names)}, but the batch "
                                     f"has {names} (missing {missing})", field="features")
            return [names.index(n) for n in self.location_names]
        others = [i for i, n in enumerate(names) if n != self.magnitude]
        if len(others) < 2:
            raise EventDataError(f"ETAS needs two location features besides the magnitude {self.magnitude!r}; the "
                                 f"batch has {names}", field="features")
        return others[:2]

    def locations(self, batch: EventBatch) -> Tensor:
        """``[B, L, 2]`` locations: :attr:`location_names`, or the first two features other than the magnitude."""
        if batch.features is None:
            raise EventDataError("ETAS needs per-event locations, but the batch has no features", field="features")
        return batch.features[..., self._location_index(batch.feature_names)].double()

    def _catalogue(self, batch: EventBatch, check: bool = True) -> dict[str, Any]:
        """Flat arrays: times, x, y, magnitude excess ``dm`` (zeros without magnitudes), offsets, windows."""
        self.check_marks(batch)
        if batch.features is None:
            raise EventDataError("ETAS needs per-event locations (and magnitudes): the batch has no features; read "
                                 "the events with their feature columns", field="features")
        flat = batch.to_flat()
        names = list(batch.feature_names)
        loc = flat["features"][:, self._location_index(names)]
        out = {"times": np.ascontiguousarray(flat["times"], np.float64), "offsets": flat["seq_offsets"].astype(np.int64),
               "t_start": flat["t_start"].astype(np.float64), "t_end": flat["t_end"].astype(np.float64),
               "x": np.ascontiguousarray(loc[:, 0], np.float64), "y": np.ascontiguousarray(loc[:, 1], np.float64),
               "m": None, "dm": np.zeros(flat["times"].size)}
        if self.magnitude is not None:
            if self.magnitude not in names:
                raise EventDataError(f"ETAS needs the magnitude feature {self.magnitude!r}; the batch has features "
                                     f"{names} (pass magnitude= one of them, or magnitude=None)", field=self.magnitude)
            m = np.ascontiguousarray(flat["features"][:, names.index(self.magnitude)], np.float64)
            out["m"] = m
            out["dm"] = m - self.m0_
        if check:
            self._check_support(out)
        return out

    def _locate(self, data: dict[str, Any], n: int) -> tuple[int, int]:
        b = int(np.searchsorted(data["offsets"], n, side="right") - 1)
        return b, n - int(data["offsets"][b])

    def _check_support(self, data: dict[str, Any]) -> None:
        bad = np.flatnonzero(~(np.isfinite(data["x"]) & np.isfinite(data["y"])))
        if bad.size:
            b, pos = self._locate(data, int(bad[0]))
            raise EventDataError("ETAS: a location is not finite", sequence=b, position=pos, field="features")
        if self.region_ is not None:
            box = self.region_
            outside = np.flatnonzero((data["x"] < box[0, 0]) | (data["x"] > box[0, 1]) | (data["y"] < box[1, 0])
                                     | (data["y"] > box[1, 1]))
            if outside.size:
                n = int(outside[0])
                b, pos = self._locate(data, n)
                raise EventDataError(f"ETAS: location ({data['x'][n]!r}, {data['y'][n]!r}) is outside the region "
                                     f"{box.tolist()} ({outside.size} events are): pass region= covering the data",
                                     sequence=b, position=pos, field="features")
        if data["m"] is not None:
            low = np.flatnonzero(~(data["m"] >= self.m0_))
            if low.size:
                n = int(low[0])
                b, pos = self._locate(data, n)
                raise EventDataError(f"{self.magnitude} {data['m'][n]!r} is below the completeness magnitude "
                                     f"m0={self.m0_!r} of the Gutenberg-Richter law: pass a lower m0= or select the "
                                     "events above it", sequence=b, position=pos, field=self.magnitude)

    def _event_terms(self, data: dict[str, Any], theta: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per event ``kappa``, ``sigma^2``, mass in the region and its ``d / d log sigma^2``."""
        mu, K, alpha, c, p, D, gamma = theta
        kappa = K * np.exp(alpha * data["dm"])
        s2 = D * np.exp(gamma * data["dm"])
        mass, dmass = _box_mass(data["x"], data["y"], s2, self.region_)
        return kappa, s2, mass, dmass

    def _pass(self, data: dict[str, Any], theta: np.ndarray, u: np.ndarray, need_grad: bool = False,
              time_gradient: bool = False):
        """``(time_ll [B], space_ll [B], lambda(t_n, x_n), lambda(t_n), gradient of time + space)``, and with
        ``time_gradient`` the time part's own gradient last (:func:`_etas_pass`)."""
        kappa, s2, mass, dmass = self._event_terms(data, theta)
        mu, _, _, c, p, _, _ = theta
        out = _etas_pass(data["times"], data["x"], data["y"], data["dm"], data["offsets"], data["t_start"],
                         data["t_end"], u, kappa, s2, mass, dmass, float(mu), float(c), float(p),
                         need_grad or time_gradient)
        return out if time_gradient else out[:5]

    def _ready(self) -> None:
        if self.region_ is None:
            raise ValueError("ETAS: not fitted (no region): call fit, or set_params(..., region=...)")

    # ------------------------------------------------------------------ likelihood
    def log_likelihood_parts(self, batch: EventBatch) -> dict[str, Tensor]:
        """``{"time", "space", "magnitude"}``, each ``[B]`` nats (module docstring); ``magnitude`` is 0 without
        magnitudes."""
        self._ready()
        data = self._catalogue(batch)
        u = self.background_density(np.stack([data["x"], data["y"]], 1))
        time_ll, space_ll, *_ = self._pass(data, self.params.numpy(), u)
        mag = np.zeros_like(time_ll)
        if data["m"] is not None:
            per_event = math.log(self.beta_) - self.beta_ * data["dm"]
            mag = np.add.reduceat(per_event, data["offsets"][:-1]) if per_event.size else mag
            mag = np.where(np.diff(data["offsets"]) > 0, mag, 0.0)
        to = dict(dtype=torch.float64, device=batch.device)
        return {"time": torch.as_tensor(time_ll, **to), "space": torch.as_tensor(space_ll, **to),
                "magnitude": torch.as_tensor(mag, **to)}

    def log_likelihood_split(self, batch: EventBatch) -> tuple[Tensor, Tensor]:
        """``(time [B], space [B])`` (module docstring)."""
        parts = self.log_likelihood_parts(batch)
        return parts["time"], parts["space"]

    def complete_log_likelihood(self, batch: EventBatch) -> Tensor:
        """``[B]`` time + space + Gutenberg-Richter magnitudes: the density of the whole catalogue."""
        parts = self.log_likelihood_parts(batch)
        return parts["time"] + parts["space"] + parts["magnitude"]

    def background_probability(self, batch: EventBatch) -> Tensor:
        """``[B, L]`` ``phi_n = mu u(x_n) / lambda(t_n, x_n)``: the probability that each event is a background
        event (stochastic declustering; 0 at padding)."""
        self._ready()
        data = self._catalogue(batch)
        u = self.background_density(np.stack([data["x"], data["y"]], 1))
        _, _, lam_x, _, _ = self._pass(data, self.params.numpy(), u)
        phi = float(self.params[0]) * u / lam_x
        out = torch.zeros(batch.mask.shape, dtype=torch.float64)
        out[batch.mask.cpu()] = torch.from_numpy(phi)
        return out.to(batch.device)

    # ------------------------------------------------------------------ queries at arbitrary times
    def _history(self, data: dict[str, Any], b: int, t: float) -> dict[str, np.ndarray]:
        lo, hi = int(data["offsets"][b]), int(data["offsets"][b + 1])
        stop = lo + int(np.searchsorted(data["times"][lo:hi], t, side="left"))  # strictly before t
        return {k: data[k][lo:stop] for k in ("times", "x", "y", "dm")}

    def _rates(self, data: dict[str, Any], b: int, t: Tensor) -> tuple[np.ndarray, np.ndarray, dict]:
        """Per query time of sequence ``b``: the weights ``kappa_j g(t - t_j)`` of every event ``[T, N_b]`` (0 for
        ``t_j >= t``) and the events' terms."""
        theta = self.params.numpy()
        lo, hi = int(data["offsets"][b]), int(data["offsets"][b + 1])
        ev = {k: data[k][lo:hi] for k in ("times", "x", "y", "dm")}
        kappa, s2, mass, _ = self._event_terms(ev, theta)
        c, p = float(theta[3]), float(theta[4])
        t = np.asarray(t, np.float64).reshape(-1, 1)
        dt = t - ev["times"][None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            g = np.where(dt > 0, (p - 1) * c ** (p - 1) * np.maximum(dt + c, c) ** (-p), 0.0)
        return kappa[None, :] * g, mass, {"kappa": kappa, "s2": s2, **ev}

    def intensity(self, batch: EventBatch, t: Tensor) -> Tensor:
        """``[B, T, 1]`` ``lambda(t) = int_S lambda(t, x) dx`` given the events strictly before ``t [B, T]``."""
        self._ready()
        data = self._catalogue(batch)
        mu = float(self.params[0])
        t_np = t.detach().cpu().double().numpy().reshape(batch.batch_size, -1)
        out = np.empty(t_np.shape)
        for b in range(batch.batch_size):
            w, mass, _ = self._rates(data, b, t_np[b])
            out[b] = mu + w @ mass
        return torch.from_numpy(out)[..., None].to(device=t.device)

    def cumulative_intensity_at(self, batch: EventBatch, t: Tensor) -> Tensor:
        """``[B, T, 1]`` ``Lambda(t_start, t]`` in closed form."""
        self._ready()
        data = self._catalogue(batch)
        mu, c, p = float(self.params[0]), float(self.params[3]), float(self.params[4])
        t_np = t.detach().cpu().double().numpy().reshape(batch.batch_size, -1)
        out = np.empty(t_np.shape)
        for b in range(batch.batch_size):
            lo, hi = int(data["offsets"][b]), int(data["offsets"][b + 1])
            ev = {k: data[k][lo:hi] for k in ("x", "y", "dm")}
            kappa, _, mass, _ = self._event_terms(ev, self.params.numpy())
            dt = t_np[b][:, None] - data["times"][lo:hi][None, :]
            share = np.where(dt > 0, 1.0 - _omori_tail(dt, c, p), 0.0)
            out[b] = mu * (t_np[b] - data["t_start"][b]) + share @ (kappa * mass)
        return torch.from_numpy(out)[..., None].to(device=t.device)

    def compensator(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        """``[B]`` closed-form integral of ``lambda(t)`` over each window (``num_points`` unused)."""
        return self.cumulative_intensity_at(batch, batch.t_end[:, None])[:, 0, 0]

    def cumulative_intensity(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        """``[B, L, 1]`` ``Lambda(t_start, t_n]`` at every event (closed form)."""
        return self.cumulative_intensity_at(batch, batch.time)

    def _points(self, batch: EventBatch, x: Tensor) -> np.ndarray:
        x = torch.as_tensor(x).detach().cpu().double()
        if x.dim() == 2:
            x = x[None].expand(batch.batch_size, *x.shape)
        if x.dim() != 3 or x.shape[0] != batch.batch_size or x.shape[-1] != 2:
            raise ValueError(f"x must be [M, 2] or [B, M, 2] (B = {batch.batch_size}), got shape {tuple(x.shape)}")
        return x.numpy()

    def spatial_log_density(self, batch: EventBatch, t: Tensor, x: Tensor) -> Tensor:
        """``[B, M]`` ``log lambda(t, x) - log lambda(t)`` (``-inf`` outside the region)."""
        self._ready()
        data = self._catalogue(batch)
        points = self._points(batch, x)
        mu = float(self.params[0])
        t_np = torch.as_tensor(t).detach().cpu().double().numpy().reshape(-1)
        out = np.empty(points.shape[:2])
        for b in range(batch.batch_size):
            w, mass, ev = self._rates(data, b, t_np[b:b + 1])
            px = points[b]
            r2 = (px[:, None, 0] - ev["x"][None]) ** 2 + (px[:, None, 1] - ev["y"][None]) ** 2
            f = np.exp(-r2 / (2 * ev["s2"][None])) / (2 * math.pi * ev["s2"][None])
            u = self.background_density(px)
            inside = np.all((px >= self.region_[:, 0]) & (px <= self.region_[:, 1]), 1)
            lam_x = mu * u + f @ w[0]
            with np.errstate(divide="ignore"):
                out[b] = np.where(inside, np.log(lam_x) - math.log(mu + float(w[0] @ mass)), -np.inf)
        return torch.from_numpy(out).to(device=batch.device)

    def _truncated_mean(self, centre: np.ndarray, sigma: np.ndarray, lo: float, hi: float) -> np.ndarray:
        a, b = (lo - centre) / sigma, (hi - centre) / sigma
        z = scipy.special.ndtr(b) - scipy.special.ndtr(a)
        pdf = lambda v: np.where(np.isfinite(v), np.exp(-0.5 * v * v), 0.0) / math.sqrt(2 * math.pi)  # noqa: E731
        return centre + sigma * (pdf(a) - pdf(b)) / np.maximum(z, 1e-300)

    def _mixture_means(self, x: np.ndarray, y: np.ndarray, s2: np.ndarray) -> np.ndarray:
        sigma = np.sqrt(s2)
        box = self.region_
        return np.stack([self._truncated_mean(x, sigma, *box[0]), self._truncated_mean(y, sigma, *box[1])], -1)

    def expected_location(self, batch: EventBatch, t: Tensor) -> Tensor:
        """``[B, 2]`` the mean of ``f(x | t, history)`` in closed form (truncated-Gaussian means in the region)."""
        self._ready()
        data = self._catalogue(batch)
        mu = float(self.params[0])
        if self._bg is None:
            box = self.region_
            if not np.all(np.isfinite(box)):
                raise ValueError("ETAS.expected_location: no background on an unbounded region: fit first")
            bg_mean = box.mean(1)
        else:
            bg = self._bg
            means = self._mixture_means(bg["x"], bg["y"], bg["h2"])
            share = bg["phi"] / bg["phi"].sum()
            bg_mean = share @ means
        t_np = torch.as_tensor(t).detach().cpu().double().numpy().reshape(-1)
        out = np.empty((batch.batch_size, 2))
        for b in range(batch.batch_size):
            w, mass, ev = self._rates(data, b, t_np[b:b + 1])
            weights = w[0] * mass
            means = self._mixture_means(ev["x"], ev["y"], ev["s2"]) if weights.size else np.zeros((0, 2))
            out[b] = (mu * bg_mean + weights @ means) / (mu + weights.sum())
        return torch.from_numpy(out).to(device=batch.device)

    # ------------------------------------------------------------------ fitting
    def _bandwidths(self, points: np.ndarray, phi: np.ndarray, tree: cKDTree) -> np.ndarray:
        """The smallest radius around each event holding ``n_p`` other events, counted by ``phi``
        (``bandwidth="background"``) or one each (``"events"``, Zhuang et al. 2002), at least ``min_bandwidth``."""
        box = self.region_
        span = np.where(np.isfinite(box[:, 1] - box[:, 0]), box[:, 1] - box[:, 0], np.ptp(points, 0))
        floor = max(self.min_bandwidth if self.min_bandwidth is not None else 1e-3 * float(np.hypot(*span)), 1e-12)
        n_p = self.bandwidth_neighbours
        k = min(n_p if self.bandwidth == "events" else 10 * n_p, points.shape[0] - 1)
        if k < 1:
            return np.full(points.shape[0], floor)
        out = np.empty(points.shape[0])
        for lo in range(0, points.shape[0], 20_000):  # chunks: k neighbours of every event at once would be large
            dist, idx = tree.query(points[lo:lo + 20_000], k=k + 1)
            if self.bandwidth == "events":
                out[lo:lo + dist.shape[0]] = dist[:, -1]
                continue
            # first neighbour at which the background weight reaches n_p (the farthest queried one if never)
            cum = np.cumsum(phi[idx[:, 1:]], 1)
            pos = np.where(cum[:, -1] >= n_p, np.argmax(cum >= n_p, 1), k - 1)
            out[lo:lo + dist.shape[0]] = dist[np.arange(dist.shape[0]), pos + 1]
        return np.maximum(out, floor)

    def fit(self, train: EventBatch, val: EventBatch | None = None, *, max_iter: int = 500, em_iterations: int = 20,
            em_tol: float = 1e-3, tol: float = 1e-10, leave_one_out: bool = True, progress: bool = False,
            **trainer_options: Any) -> "ETAS":
        """Maximum likelihood (or the two-stage estimator: the constructor's ``estimator``) alternated with the
        declustering EM for the background (module docstring).

        ``max_iter``: L-BFGS-B iterations per M-step; ``em_iterations``: at most this many background updates,
        stopping when no ``phi_j`` moves more than ``em_tol``; ``tol``: L-BFGS-B's relative tolerance.
        ``leave_one_out``: in the M-step, each training event's background density leaves out its own kernel
        (``u_{-n}(x_n)``). The kernel estimate sits at its peak on its own event, and without this the background
        absorbs part of the clustering (on simulated catalogues: ``mu`` too high by ~2 standard errors, ``K`` too
        low by ~3); the fitted model's ``u`` (new data, :meth:`log_likelihood`) is the full estimate, and
        ``fit_result_["log_likelihood"]`` is the model's time + space log-likelihood of ``train`` with it.
        ``val`` is only scored (``fit_result_["val_score"]``); the trainer's options are accepted and unused.
        """
        check_fit_arguments(self, val, trainer_options, train=train)
        if train.num_events < 2:
            raise ValueError("ETAS.fit needs at least two events")
        if int(em_iterations) < 1 or int(max_iter) < 1:
            raise ValueError(f"ETAS.fit: em_iterations and max_iter must be positive, got {em_iterations}, {max_iter}")
        start = _time.perf_counter()
        data = self._catalogue(train, check=False)
        if self.region is None:
            self.region_ = np.array([[data["x"].min(), data["x"].max()], [data["y"].min(), data["y"].max()]])
            if np.any(self.region_[:, 1] <= self.region_[:, 0]):
                raise ValueError(f"ETAS.fit: the training locations span no rectangle ({self.region_.tolist()}): "
                                 "pass region=")
        else:
            self.region_ = self.region
        if data["m"] is not None:
            self.m0_ = float(data["m"].min()) if self.m0 is None else self.m0
            data["dm"] = data["m"] - self.m0_
        self._check_support(data)
        if data["m"] is not None:
            excess = float(data["dm"].mean())
            if not excess > 0:
                raise ValueError(f"ETAS.fit: every magnitude equals m0={self.m0_}: the Gutenberg-Richter rate is "
                                 "undefined (pass a lower m0=, e.g. the smallest magnitude minus half its bin)")
            self.beta_ = 1.0 / excess
        self._names = tuple(train.feature_names[i] for i in self._location_index(train.feature_names)) + (
            (self.magnitude,) if self.magnitude is not None else ())
        points = np.stack([data["x"], data["y"]], 1)
        tree = cKDTree(points)
        n_events = data["times"].size
        duration = float(np.sum(data["t_end"] - data["t_start"]))
        free = self._free
        gaps = np.diff(data["times"])
        gaps = gaps[gaps > 0]
        box = self.region_
        span = np.where(np.isfinite(box[:, 1] - box[:, 0]), box[:, 1] - box[:, 0], np.ptp(points, 0))
        # a start from the data's scales: half the events background, c a tenth of the median gap, D from the
        # median nearest-neighbour distance
        nn_dist = np.median(tree.query(points, k=2)[0][:, 1]) if n_events > 1 else 1.0
        theta0 = np.array([0.5 * n_events / duration, 0.5, 0.0, 0.1 * float(np.median(gaps)) if gaps.size else 1.0,
                           1.2, max(float(nn_dist), 1e-3 * float(np.hypot(*span))) ** 2, 0.0])
        if data["m"] is not None:
            theta0[2] = 0.5 * self.beta_
            theta0[1] = 0.5 / (self.beta_ / (self.beta_ - theta0[2]))
        z0 = self._to_z(theta0)
        lo_t, hi_t = float(np.min(gaps)) if gaps.size else 1e-9, duration
        diag2 = float(np.sum(span ** 2))
        bounds_all = [(z0[0] - 30, z0[0] + 30), (-30.0, math.log(50.0)), (-10.0, 10.0),
                      (math.log(lo_t) - 10, math.log(hi_t)), (math.log(1e-4), math.log(9.0)),
                      (math.log(diag2) - 30, math.log(diag2)), (-10.0, 10.0)]
        bounds = [bd for bd, f in zip(bounds_all, free) if f]
        z0 = np.clip(z0, [bd[0] for bd in bounds_all], [bd[1] for bd in bounds_all])
        evaluations = [0]
        phi = np.ones(n_events)
        history = []
        z = z0[free]
        res = None
        for it in range(int(em_iterations)):
            self.set_background(points, self._bandwidths(points, phi, tree), phi)
            u = self._training_background(points, leave_one_out)

            def objective(zf: np.ndarray) -> tuple[float, np.ndarray]:
                evaluations[0] += 1
                full = z0.copy()
                full[free] = zf
                theta = self._from_z(full)
                time_ll, space_ll, _, _, grad = self._pass(data, theta, u, True)
                value = -float(time_ll.sum() + space_ll.sum()) / n_events
                if not np.isfinite(value):
                    return np.inf, np.zeros_like(zf)
                return value, -grad[free] / n_events

            if self.estimator == "likelihood":
                res = scipy.optimize.minimize(objective, z, jac=True, method="L-BFGS-B", bounds=bounds,
                                              options=dict(maxiter=int(max_iter), ftol=tol, gtol=1e-9, maxcor=20))
            else:
                res = self._two_stage_step(data, u, z0, z, bounds, n_events, int(max_iter), tol, evaluations)
            z = res.x
            full = z0.copy()
            full[free] = z
            theta = self._from_z(full)
            _, _, lam_x, _, _ = self._pass(data, theta, u)
            new_phi = theta[0] * u / lam_x
            change = float(np.max(np.abs(new_phi - phi)))
            history.append({"iteration": it, "value": float(res.fun), "phi_change": change, "lbfgs_iterations": int(res.nit),
                            "message": str(res.message)})
            if progress:
                print(f"ETAS EM {it}: -loglik/event {res.fun:.8f}, max phi change {change:.2e}, L-BFGS-B "
                      f"{res.nit} iterations ({res.message})")
            if change < em_tol:
                break
            phi = new_phi
        self.params.copy_(torch.from_numpy(theta))
        self.background_probabilities_ = new_phi
        # finite even when alpha >= beta (heavy productivity tail): the mean productivity of the observed events
        self.empirical_branching_ratio_ = float(np.mean(theta[1] * np.exp(theta[2] * data["dm"])))
        self._train_data, self._train_u = data, u
        full_u = self.background_density(points)
        time_ll, space_ll, *_ = self._pass(data, theta, full_u)
        result = FitResult(objective=self.estimator, value=float(res.fun),
                           log_likelihood=float(time_ll.sum() + space_ll.sum()), iterations=int(res.nit),
                           evaluations=evaluations[0], converged=bool(res.success) and change < em_tol,
                           em_iterations=len(history), em_history=history, seconds=_time.perf_counter() - start)
        if data["m"] is not None:
            result["magnitude_log_likelihood"] = float(n_events * math.log(self.beta_) - self.beta_ * data["dm"].sum())
        # a parameter on its search bound is a boundary solution, not an interior maximum: say which
        names = np.array(["log mu", "log K", "alpha", "log c", "log(p - 1)", "log D", "gamma"])[free]
        at_bound = [str(n) for n, v, (lo, hi) in zip(names, z, bounds) if min(v - lo, hi - v) < 1e-6 * max(1.0, abs(v))]
        result["at_bound"] = at_bound
        if at_bound:
            warnings.warn(f"ETAS.fit: {', '.join(at_bound)} ended on the search bound (bounds: log K <= log 50, "
                          "p - 1 >= 1e-4, ...): the likelihood rises towards the boundary (e.g. p -> 1 with K -> "
                          "infinity on windows short against the Omori tail); the estimate there is not an interior "
                          "maximum and its standard errors do not apply", stacklevel=2)
        self.fit_result_ = result
        record_validation(self, val, result)
        warn_if_not_stationary(self.branching_ratio)
        return self

    def _two_stage_step(self, data: dict[str, Any], u: np.ndarray, z0: np.ndarray, z: np.ndarray,
                        bounds: list[tuple[float, float]], n_events: int, max_iter: int, tol: float,
                        evaluations: list[int]) -> scipy.optimize.OptimizeResult:
        """One M-step of ``estimator="two-stage"``: the temporal parameters ``(mu, K, alpha, c, p)`` maximise the
        time part, then ``(D, gamma)`` the space part given them; again while the first block still moves (the
        time part sees ``D`` and ``gamma`` only through the kernels' masses in the region, i.e. edge effects).
        Returns the last L-BFGS-B result with ``x`` the whole free vector, ``fun`` ``-(time + space) / N`` and
        ``nit`` the iterations of all the stages."""
        free = self._free
        temporal = np.array([True, True, True, True, True, False, False])[free]
        box = np.array(bounds, np.float64)
        z = np.array(z, np.float64)
        iterations = 0

        def theta_of(zf: np.ndarray) -> np.ndarray:
            full = z0.copy()
            full[free] = zf
            return self._from_z(full)

        for _ in range(10):
            before = z.copy()
            for block, is_time in ((temporal, True), (~temporal, False)):
                def objective(zb: np.ndarray, block=block, is_time=is_time) -> tuple[float, np.ndarray]:
                    evaluations[0] += 1
                    zf = z.copy()
                    zf[block] = zb
                    time_ll, space_ll, _, _, grad, grad_time = self._pass(data, theta_of(zf), u, True, True)
                    value = -float(time_ll.sum() if is_time else space_ll.sum()) / n_events
                    if not np.isfinite(value):
                        return np.inf, np.zeros_like(zb)
                    g = grad_time if is_time else grad - grad_time
                    return value, -g[free][block] / n_events

                res = scipy.optimize.minimize(objective, z[block], jac=True, method="L-BFGS-B",
                                              bounds=[tuple(b) for b in box[block]],
                                              options=dict(maxiter=max_iter, ftol=tol, gtol=1e-9, maxcor=20))
                z[block] = res.x
                iterations += int(res.nit)
            if np.max(np.abs(z - before)) < 1e-7:
                break
        time_ll, space_ll, *_ = self._pass(data, theta_of(z), u)
        res.x, res.nit = z, iterations
        res.fun = -float(time_ll.sum() + space_ll.sum()) / n_events
        return res

    def _training_background(self, points: np.ndarray, leave_one_out: bool) -> np.ndarray:
        """``u(x_n)`` at the training events that define it, without each one's own kernel if asked (where that
        leaves nothing, the full value)."""
        u = self.background_density(points)
        if not leave_one_out:
            return u
        bg = self._bg
        loo = u - bg["weight"] / (2 * math.pi * bg["h2"])
        return np.where(loo > 1e-12 * u, loo, u)

    @staticmethod
    def _to_z(theta: np.ndarray) -> np.ndarray:
        """Natural parameters -> optimiser coordinates ``(log mu, log K, alpha, log c, log(p-1), log D, gamma)``."""
        mu, K, alpha, c, p, D, gamma = theta
        return np.array([math.log(mu), math.log(max(K, 1e-300)), alpha, math.log(c), math.log(p - 1), math.log(D), gamma])

    @staticmethod
    def _from_z(z: np.ndarray) -> np.ndarray:
        return np.array([math.exp(z[0]), math.exp(z[1]), z[2], math.exp(z[3]), 1 + math.exp(z[4]), math.exp(z[5]), z[6]])

    def gradient(self, batch: EventBatch) -> np.ndarray:
        """``d (time + space) / d (log mu, log K, alpha, log c, log(p-1), log D, gamma)`` summed over the batch (the
        background held fixed): what the fit follows; exposed for checks."""
        self._ready()
        data = self._catalogue(batch)
        u = self.background_density(np.stack([data["x"], data["y"]], 1))
        return self._pass(data, self.params.numpy(), u, True)[4]

    def standard_errors(self, data: EventBatch | None = None, rel_step: float = 1e-5) -> dict[str, float]:
        """Asymptotic standard errors of ``mu, K, alpha, c, p, D, gamma`` from the observed information (central
        differences of the analytic gradient, in the optimiser's coordinates, mapped by the delta method),
        conditional on the fitted background ``u``; ``beta`` by its closed form ``beta / sqrt(n)``.
        ``data``: None for the last fit's training data with the background values the fit used (leave-one-out),
        or a batch (scored with the model's full ``u``)."""
        self._ready()
        if getattr(self, "fit_result_", {}).get("objective") == "two-stage":
            raise ValueError("ETAS.standard_errors: the observed information of the likelihood does not give the "
                             "two-stage estimate's standard errors (it solves the time part's and the space part's "
                             "score equations, not one likelihood's): refit with estimator='likelihood'")
        if data is None:
            if getattr(self, "_train_data", None) is None:
                raise ValueError("ETAS.standard_errors: pass the data (the model was not fitted here)")
            flat, u = self._train_data, self._train_u  # the background the fit used
        else:
            flat = self._catalogue(data)
            u = self.background_density(np.stack([flat["x"], flat["y"]], 1))
        free = self._free
        theta = self.params.numpy().copy()
        z_full = self._to_z(theta)

        def grad(zf: np.ndarray) -> np.ndarray:
            full = z_full.copy()
            full[free] = zf
            return self._pass(flat, self._from_z(full), u, True)[4][free]

        information = observed_information(grad, z_full[free], rel_step)
        try:
            cov = np.linalg.inv(information)
        except np.linalg.LinAlgError:
            raise ValueError("ETAS.standard_errors: the observed information is singular (too few events for the "
                             "parameters)") from None
        variance = np.diag(cov)
        if np.any(variance <= 0):
            warnings.warn(f"ETAS.standard_errors: {int(np.sum(variance <= 0))} standard errors are undefined (NaN): "
                          "the information is not positive definite in their directions", stacklevel=2)
        # d natural / d z: mu, K, c, D by their value, p by p - 1, alpha and gamma by 1
        jac = np.array([theta[0], theta[1], 1.0, theta[3], theta[4] - 1, theta[5], 1.0])[free]
        se_free = np.sqrt(np.where(variance > 0, variance, np.nan)) * jac
        out = dict.fromkeys(PARAMETER_NAMES, 0.0)
        for name, value in zip(np.array(PARAMETER_NAMES)[free], se_free):
            out[str(name)] = float(value)
        n = flat["times"].size
        out["beta"] = self.beta_ / math.sqrt(n) if self.magnitude is not None else float("nan")
        return out

    # ------------------------------------------------------------------ simulation
    def _draw_truncated(self, centre: np.ndarray, sigma: np.ndarray, lo: float, hi: float,
                        rng: np.random.Generator) -> np.ndarray:
        """Gaussian draws restricted to ``[lo, hi]`` by inverting the CDF."""
        a, b = scipy.special.ndtr((lo - centre) / sigma), scipy.special.ndtr((hi - centre) / sigma)
        v = a + rng.random(centre.size) * (b - a)
        return np.clip(centre + sigma * scipy.special.ndtri(np.clip(v, 1e-300, 1 - 1e-16)), lo, hi)

    def _draw_background(self, count: int, rng: np.random.Generator) -> np.ndarray:
        box = self.region_
        if self._bg is None:
            if not np.all(np.isfinite(box)):
                raise ValueError("ETAS.sample: no background on an unbounded region: fit or set_background first")
            return box[:, 0] + rng.random((count, 2)) * (box[:, 1] - box[:, 0])
        bg = self._bg
        pick = rng.choice(bg["phi"].size, size=count, p=bg["phi"] / bg["phi"].sum())
        sigma = np.sqrt(bg["h2"][pick])
        return np.stack([self._draw_truncated(bg["x"][pick], sigma, *box[0], rng),
                         self._draw_truncated(bg["y"][pick], sigma, *box[1], rng)], 1)

    def _draw_magnitudes(self, count: int, rng: np.random.Generator) -> np.ndarray:
        if self.magnitude is None:
            return np.zeros(count)
        return rng.exponential(1.0 / self.beta_, count)

    def sample_branching(self, n: int, t_end: float, history: EventBatch | None = None, generator: Seed = None,
                         t_start: float = 0.0, max_events: int = 10_000_000) -> tuple[EventBatch, np.ndarray]:
        """:meth:`sample` and each new event's parent: ``parents [N_new]`` indexes the returned batch's flat
        events (``-1``: a background event), new events in the order of :meth:`EventBatch.to_flat`; a child of a
        history event points at that history event."""
        self._ready()
        rng = as_numpy_rng(generator)
        mu, K, alpha, c, p, D, gamma = map(float, self.params.numpy())
        starts, t0s, ends = simulation_window(n, t_end, history, t_start, 1)
        box = self.region_
        expected = float(mu * np.sum(ends - starts))
        if expected > max_events:
            raise budget_error(self, max_events, f"the background events alone number {expected:.4g} on average",
                               self.branching_ratio)
        counts = rng.poisson(mu * (ends - starts))
        seq = np.repeat(np.arange(n), counts)
        times = starts[seq] + rng.random(seq.size) * (ends - starts)[seq]
        loc = self._draw_background(seq.size, rng)
        dm = self._draw_magnitudes(seq.size, rng)
        # arrays of every event so far: (seq, time, x, y, dm, parent id); ids index these arrays
        cols = [seq, times, loc[:, 0], loc[:, 1], dm, np.full(seq.size, -1)]
        parts = [cols]

        def children(ids, p_seq, p_time, p_x, p_y, p_dm, lower):
            """Children still to come after ``lower`` of the parents (Poisson count, Omori delays > lower)."""
            tail = _omori_tail(lower, c, p)
            mean = K * np.exp(alpha * p_dm) * tail
            k = rng.poisson(mean)
            parent = np.repeat(np.arange(ids.size), k)
            # delay given > lower: (1 + d/c)^(1-p) uniform on (0, tail)
            v = rng.random(parent.size) * tail[parent]
            delay = c * (np.exp(np.log(np.maximum(v, 1e-300)) / (1.0 - p)) - 1.0)
            c_time = p_time[parent] + delay
            sigma = np.sqrt(D * np.exp(gamma * p_dm[parent]))
            c_x = p_x[parent] + sigma * rng.standard_normal(parent.size)
            c_y = p_y[parent] + sigma * rng.standard_normal(parent.size)
            c_seq = p_seq[parent]
            keep = (c_time <= ends[c_seq]) & (c_x >= box[0, 0]) & (c_x <= box[0, 1]) & (c_y >= box[1, 0]) & (
                c_y <= box[1, 1])
            c_dm = self._draw_magnitudes(int(keep.sum()), rng)
            return [c_seq[keep], c_time[keep], c_x[keep], c_y[keep], c_dm, ids[parent][keep]]

        next_id = seq.size
        ids = np.arange(next_id)
        generation = [ids] + cols[:5]
        h_count = 0
        if history is not None:
            hdata = self._catalogue(history)
            h_count = hdata["times"].size
            h_seq = np.repeat(np.arange(n), np.diff(hdata["offsets"]))
            h_ids = -2 - np.arange(h_count)  # history events: -2 - flat index, mapped below
            late = children(h_ids, h_seq, hdata["times"], hdata["x"], hdata["y"], hdata["dm"],
                            starts[h_seq] - hdata["times"])
            late_ids = next_id + np.arange(late[0].size)
            next_id += late[0].size
            parts.append(late)
            generation = [np.concatenate([generation[0], late_ids])] + [np.concatenate([a, b]) for a, b in
                                                                        zip(generation[1:], late[:5])]
        total = next_id
        depth = 0
        while generation[0].size:
            gen_ids, g_seq, g_time, g_x, g_y, g_dm = generation
            kids = children(gen_ids, g_seq, g_time, g_x, g_y, g_dm, np.zeros(gen_ids.size))
            new_ids = next_id + np.arange(kids[0].size)
            next_id += kids[0].size
            parts.append(kids)
            generation = [new_ids] + kids[:5]
            total += new_ids.size
            depth += 1
            if total > max_events:
                raise budget_error(self, max_events, f"{total} events simulated in {depth} generations of children",
                                   self.branching_ratio)
        seq, times, xs, ys, dms, parent = (np.concatenate(v) for v in zip(*parts))
        new_count = seq.size
        names = self._names or (tuple(self.location_names or ("x", "y"))
                                + ((self.magnitude,) if self.magnitude is not None else ()))
        feats = np.stack([xs, ys] + ([dms + self.m0_] if self.magnitude is not None else []), 1)
        origin = np.arange(new_count)  # new events: ids 0..new-1
        if history is not None:
            h_feats = np.stack([hdata["x"], hdata["y"]] + ([hdata["m"]] if self.magnitude is not None else []), 1)
            seq = np.concatenate([h_seq, seq])
            times = np.concatenate([hdata["times"], times])
            feats = np.concatenate([h_feats, feats])
            origin = np.concatenate([-2 - np.arange(h_count), origin])
            parent = np.concatenate([np.full(h_count, -1), parent])
        order = np.lexsort((times, seq))  # stable: a history's events first at equal times
        offsets = np.concatenate([[0], np.cumsum(np.bincount(seq, minlength=n))]).astype(np.int64)
        batch = EventBatch.from_flat(times[order], offsets, t0s, ends, np.zeros(seq.size, np.int64), 1,
                                     features=feats[order], feature_names=names)
        # map ids (new: 0.., history: -2 - i) to positions in the sorted flat layout
        position = np.empty(order.size, np.int64)
        position[order] = np.arange(order.size)
        lookup = {int(o): int(position[i]) for i, o in enumerate(origin)}
        sorted_origin = origin[order]
        new_parent = parent[order][sorted_origin >= 0]
        mapped = np.array([lookup[int(q)] if q != -1 else -1 for q in new_parent], np.int64)
        return batch, mapped

    def sample(self, n: int, t_end: float, history: EventBatch | None = None, generator: Seed = None,
               t_start: float = 0.0, max_events: int = 10_000_000) -> EventBatch:
        """Exact simulation by branching (module docstring). The features are the two locations and the magnitude
        (named as in the training data); a ``history``'s events come first with their features, and its events
        keep exciting (their children still to come after its end: Omori delays conditioned on the elapsed time).
        ``max_events`` caps the new events over all sequences (:class:`~tpp.process.SamplingBudgetError`)."""
        return self.sample_branching(n, t_end, history, generator, t_start, max_events)[0]

    # ------------------------------------------------------------------ reporting and serialisation
    def summary_params(self) -> dict[str, Any]:
        """What ``tpp fit --json`` reports."""
        ratio = self.branching_ratio
        return {**self.params_, "beta": self.beta_, "b_value": self.b_value_, "m0": self.m0_,
                "empirical_branching_ratio": getattr(self, "empirical_branching_ratio_", None),
                "magnitude": self.magnitude, "region": None if self.region_ is None else self.region_.tolist(),
                "branching_ratio": ratio if np.isfinite(ratio) else None}

    def to_dict(self) -> dict[str, Any]:
        """Parameters, region and background as plain JSON-able values (:meth:`from_dict` rebuilds the model)."""
        bg = self._bg
        return {"model": "etas", "magnitude": self.magnitude,
                "location_names": None if self.location_names is None else list(self.location_names),
                "feature_names": None if self._names is None else list(self._names),
                "m0": self.m0_, "beta": self.beta_, "params": self.params_,
                "region": None if self.region_ is None else self.region_.tolist(),
                "bandwidth_neighbours": self.bandwidth_neighbours, "min_bandwidth": self.min_bandwidth,
                "bandwidth": self.bandwidth, "estimator": self.estimator,
                # the kernels' variances themselves (not their square roots): a reloaded model scores identically
                "background": None if bg is None else {"x": bg["x"].tolist(), "y": bg["y"].tolist(),
                                                       "variance": bg["h2"].tolist(), "weight": bg["phi"].tolist()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ETAS":
        """Inverse of :meth:`to_dict`."""
        region = d.get("region")
        model = cls(d.get("magnitude"), d.get("location_names"), d.get("m0"), region,
                    d.get("bandwidth_neighbours", 30), d.get("min_bandwidth"),
                    bandwidth=d.get("bandwidth", "background"), estimator=d.get("estimator", "likelihood"))
        p = d["params"]
        model.set_params(p["mu"], p["K"], p["c"], p["p"], p["D"], p["alpha"], p["gamma"],
                         beta=None if d.get("magnitude") is None else d["beta"], m0=d.get("m0"), region=region)
        if d.get("feature_names"):
            model._names = tuple(d["feature_names"])
        bg = d.get("background")
        if bg is not None:
            model.set_background(np.stack([bg["x"], bg["y"]], 1), None, bg["weight"], variances=bg["variance"])
        return model

    @classmethod
    def from_params(cls, mu: float, K: float, c: float, p: float, D: float, alpha: float = 0.0, gamma: float = 0.0,
                    beta: float | None = None, m0: float = 0.0, region: Sequence[Sequence[float]] = ((0, 1), (0, 1)),
                    magnitude: str | None = "magnitude", location_names: Sequence[str] | None = ("x", "y")) -> "ETAS":
        """A model with the given parameters and a uniform background on ``region`` (for simulation studies)."""
        model = cls(magnitude, location_names, m0 if magnitude is not None else None, region)
        return model.set_params(mu, K, c, p, D, alpha, gamma, beta=beta, m0=m0, region=region)
