"""Multivariate Hawkes process with piecewise-constant kernels, fitted by EM.

``lambda_i(t) = mu_i + sum_j sum_{t - W < t_m^j < t} phi_ij(t - t_m^j)``, with
``phi_ij(s) = kernel_values[i, j, floor(s / h)]`` on ``[0, W)`` (``h = W / B``, ``B`` equal bins) and 0
beyond: tick's ``HawkesEM(kernel_support=W, kernel_size=B)``. Row ``i`` is the excited type, column
``j`` the exciting one; ``adjacency[i, j] = h * sum_b kernel_values[i, j, b]`` is the integral of
``phi_ij``, so its spectral radius is the branching ratio.

* Estimation: the EM algorithm of Marsan & Lengline (2008) and Lewis & Mohler (2011). The branching
  structure (which parent, or the baseline, produced each event) is the missing data; with it the
  likelihood factorises into Poisson counts, so the M-step is counts over exposures. Every EM
  iterate increases the exact likelihood, with the survival term over the whole window, because the
  M-step's exposures account for the window end (tick's divides by ``h * N_j`` and so ignores that
  the last events' kernels run past ``t_end``).
* Only pairs with lags in ``(0, W)`` matter. They are listed once per fit (a compiled pass over the
  sorted events, :func:`tpp.hawkes._em.window_pairs`); an EM iteration is then one fused pass over
  them (:func:`tpp.hawkes._em.em_step`), O(number of pairs) and no Python loop over events.
* Exact log-likelihood, intensity and compensator in torch over the same pairs, differentiable in
  ``baseline`` and ``kernel_values``: the compensator of a piecewise-constant kernel is its
  piecewise-linear integral ``Phi_ij``.
* Exact simulation by the branching (cluster) construction, vectorised one generation at a time.

Events strictly earlier in time excite; ties do not (as in :mod:`tpp.hawkes._recursion`).
"""

from __future__ import annotations

import time as _time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from tpp.events import EventBatch
from tpp.hawkes import _em
from tpp.hawkes._common import (FitResult, check_fit_arguments, check_parameter_size, record_validation,
                                simulate_branching, warn_if_not_stationary)
from tpp.hawkes._common import flat_events as _flat
from tpp.model import Seed
from tpp.options import Interval, check_params
from tpp.process import PointProcess, as_numpy_rng

__all__ = ["NonparametricHawkes"]


def _bin_of(lag: np.ndarray, width: float, bins: int) -> np.ndarray:
    """Bin ``floor(lag / width)`` of lags in ``(0, W)``; clamped because ``lag / width`` may round up to ``bins``."""
    return np.minimum((lag / width).astype(np.int64), bins - 1)


def _seq_of_events(flat: dict[str, np.ndarray]) -> np.ndarray:
    return np.repeat(np.arange(flat["t_end"].size), np.diff(flat["seq_offsets"]))


def _kernel_integral(kernel_values: Tensor, width: float, source: Tensor, lag: Tensor) -> Tensor:
    """``Phi_ij(lag) = int_0^lag phi_ij``, ``[P, K]`` over targets ``i``, for source types ``source [P]``.

    Piecewise linear: the mass of the whole bins below ``lag`` plus the value of its bin times the
    part of it covered. ``lag`` is clamped to ``[0, W]``; from ``W`` on, ``Phi_ij = adjacency[i, j]``.
    """
    K, _, B = kernel_values.shape
    zero = kernel_values.new_zeros(K, K, 1)
    below = torch.cat([zero, kernel_values.cumsum(-1) * width], -1)  # [K, K, B + 1] mass below each bin edge
    value = torch.cat([kernel_values, zero], -1)  # bin B (past the support) has value 0
    lag = lag.clamp(0.0, B * width)
    f = torch.floor(lag / width).long().clamp(0, B)
    covered = (lag - f.to(lag.dtype) * width).clamp_min(0.0)
    return (below[:, source, f] + covered * value[:, source, f]).T


def _compensator(baseline: Tensor, kernel_values: Tensor, support: float, flat: dict[str, np.ndarray]) -> Tensor:
    """``[B]`` ``int_{t_start}^{t_end} sum_i lambda_i``
    ``= mu_total (t_end - t_start) + sum_m sum_i Phi_{i, k_m}(t_end - t_m)``:
    each event's share is its kernels' integral up to the window end."""
    device, dtype = baseline.device, baseline.dtype
    seq = _seq_of_events(flat)
    remaining = torch.from_numpy(flat["t_end"][seq] - flat["times"]).to(device, dtype)
    source = torch.from_numpy(flat["marks"]).to(device)
    spent = _kernel_integral(kernel_values, support / kernel_values.shape[-1], source, remaining).sum(-1)
    duration = torch.from_numpy(flat["t_end"] - flat["t_start"]).to(device, dtype)
    return (baseline.sum() * duration).index_add(0, torch.from_numpy(seq).to(device), spent)


def _log_likelihood(baseline: Tensor, kernel_values: Tensor, support: float, batch: EventBatch) -> Tensor:
    """Exact log-likelihood per sequence ``[B]``, differentiable in ``baseline`` and ``kernel_values``.

    ``log L = sum_n log lambda_{k_n}(t_n) - int_{t_start}^{t_end} sum_i lambda_i(t) dt`` (Daley &
    Vere-Jones 2003, Prop. 7.2.III), the intensity at each event summed over its pairs, the
    integral in closed form (:func:`_compensator`).
    """
    flat = _flat(batch)
    device = baseline.device
    times, marks, offsets = flat["times"], flat["marks"], flat["seq_offsets"]
    target, source, lag, _ = _em.window_pairs(times, offsets, times, offsets, support)
    bins = torch.from_numpy(_bin_of(lag, support / kernel_values.shape[-1], kernel_values.shape[-1])).to(device)
    target = torch.from_numpy(target).to(device)
    marks_t = torch.from_numpy(marks).to(device)
    excitation = kernel_values[marks_t[target], marks_t[torch.from_numpy(source).to(device)], bins]
    lam = baseline[marks_t].index_add(0, target, excitation)
    seq = torch.from_numpy(_seq_of_events(flat)).to(device)
    log_lam = torch.zeros(len(batch), dtype=baseline.dtype, device=device).index_add(0, seq, torch.log(lam))
    return log_lam - _compensator(baseline, kernel_values, support, flat)


def _exposure(flat: dict[str, np.ndarray], num_marks: int, bins: int, width: float) -> np.ndarray:
    """``[K, B]``: sum over type-``j`` events of the length of ``[t_m + b h, t_m + (b + 1) h] ∩ [t_m, t_end]``.

    The compensator is ``sum_{i,j,b} kernel_values[i, j, b] * exposure[j, b]`` (plus the baseline's),
    the same closed form as :func:`_kernel_integral` at ``t_end - t_m``.
    """
    remaining = np.minimum(flat["t_end"][_seq_of_events(flat)] - flat["times"], bins * width)
    whole = np.minimum(np.floor(remaining / width), bins).astype(np.int64)  # bins wholly inside the window
    marks = flat["marks"]
    # events whose bin b is whole: those with whole > b (a reversed cumulative count)
    hist = np.bincount(marks * (bins + 1) + whole, minlength=num_marks * (bins + 1)).reshape(num_marks, bins + 1)
    exposure = hist[:, ::-1].cumsum(1)[:, ::-1][:, 1:] * width
    partial = whole < bins
    covered = np.clip(remaining - whole * width, 0.0, width)[partial]
    exposure += np.bincount(marks[partial] * bins + whole[partial], covered, minlength=num_marks * bins).reshape(
        num_marks, bins
    )
    return exposure


class _KernelInverse:
    """Delays drawn from the kernels ``phi_ij`` normalised to densities, by inverting their
    piecewise-linear integral ``Phi_ij`` (pick the bin by its mass, then uniform within it)."""

    def __init__(self, kernel_values: np.ndarray, width: float) -> None:
        K, _, B = kernel_values.shape
        self.width, self.bins = width, B
        self.mass = kernel_values.reshape(K * K, B) * width  # [R, B] rows are cells (i, j)
        self.below = np.concatenate([np.zeros((K * K, 1)), self.mass.cumsum(1)], 1)  # [R, B + 1]
        self.total = self.below[:, -1].copy()
        has = self.mass > 0
        self.first_bin = np.where(has.any(1), has.argmax(1), 0)
        self.last_bin = np.where(has.any(1), B - 1 - has[:, ::-1].argmax(1), B - 1)
        # One sorted key array for all rows: row r holds r + (normalised CDF at its bins' right edges)
        # in [r, r + 1], so a single searchsorted finds the bin of every draw whatever its cell.
        safe = np.where(self.total > 0, self.total, 1.0)
        norm = np.where(self.total[:, None] > 0, self.below[:, 1:] / safe[:, None], 1.0)
        self.keys = (norm + np.arange(K * K)[:, None]).ravel()
        self.safe_total = safe

    def integral(self, cell: np.ndarray, lag: np.ndarray) -> np.ndarray:
        """``Phi_cell(lag)``, lags clamped to ``[0, W]``."""
        lag = np.clip(lag, 0.0, self.bins * self.width)
        f = np.minimum(np.floor(lag / self.width).astype(np.int64), self.bins)
        value = np.concatenate([self.mass / self.width, np.zeros((self.mass.shape[0], 1))], 1)
        return self.below[cell, f] + np.clip(lag - f * self.width, 0.0, None) * value[cell, f]

    def delay(self, cell: np.ndarray, mass: np.ndarray) -> np.ndarray:
        """``Phi_cell^{-1}(mass)`` for ``mass`` in ``[0, adjacency_cell]``."""
        u = mass / self.safe_total[cell]
        b = np.searchsorted(self.keys, cell + u, side="right") - cell * self.bins
        # the key search loses a few bits to the row offset: keep the bin among those with mass
        b = np.clip(b, self.first_bin[cell], self.last_bin[cell])
        in_bin = self.mass[cell, b]
        frac = np.clip((mass - self.below[cell, b]) / np.where(in_bin > 0, in_bin, 1.0), 0.0, 1.0)
        return (b + frac) * self.width


class NonparametricHawkes(PointProcess):
    """Hawkes process with piecewise-constant kernels on ``[0, support)`` in ``bins`` equal bins.

    Args:
        num_marks: number of event types ``K``.
        support: kernel support ``W`` (in the data's time unit); excitation older than ``W`` is 0.
        bins: number ``B`` of equal bins of width ``h = W / B``.

    Parameters (``nn.Parameter``, float64, used as they are: non-negative by construction in
    :meth:`fit` and :meth:`set_params`): ``baseline [K]`` and ``kernel_values [K, K, B]``.

    Fitted attributes (after :meth:`fit` or :meth:`from_params`): ``baseline_ [K]``,
    ``kernel_values_ [K, K, B]``, ``adjacency_ [K, K]`` (kernel integrals), ``support_``, ``bins_``;
    ``fit_result_`` after :meth:`fit`.
    """

    _constraints = {
        "num_marks": Interval(1, None, integer=True),
        "support": Interval(0, None, closed="neither"),
        "bins": Interval(0, None, closed="neither", integer=True),
        "baseline": Interval(0, None, closed="neither"),
        "kernel_values": Interval(0, None),
        "max_iter": Interval(0, None, integer=True),
        "tol": Interval(0, None),
    }

    def __init__(self, num_marks: int, support: float, bins: int) -> None:
        super().__init__()
        check_params(self, num_marks=num_marks, support=support, bins=bins)
        self.num_marks, self.support, self.bins = int(num_marks), float(support), int(bins)
        K, B = self.num_marks, self.bins
        check_parameter_size(self, (K, K, B), f"num_marks={K} with bins={B}")
        # Before fitting: a branching ratio of 0.1 spread evenly, so the model is usable as is.
        self.baseline = nn.Parameter(torch.full((K,), 0.1, dtype=torch.float64))
        self.kernel_values = nn.Parameter(torch.full((K, K, B), 0.1 / (K * self.support), dtype=torch.float64))

    # ------------------------------------------------------------------ parameters
    @property
    def bin_width(self) -> float:
        return self.support / self.bins

    @property
    def adjacency(self) -> Tensor:
        """``[K, K]`` kernel integrals ``h * sum_b kernel_values[i, j, b]``."""
        return self.kernel_values.sum(-1) * self.bin_width

    def set_params(self, baseline: Sequence[float], kernel_values: np.ndarray) -> "NonparametricHawkes":
        """Set ``baseline [K]`` (positive) and ``kernel_values [K, K, B]`` (non-negative)."""
        K, B = self.num_marks, self.bins
        baseline = np.asarray(baseline, np.float64).reshape(K)
        kernel_values = np.asarray(kernel_values, np.float64)
        if kernel_values.shape != (K, K, B):
            raise ValueError(f"kernel_values must have shape {(K, K, B)}, got {kernel_values.shape}")
        check_params(self, baseline=baseline, kernel_values=kernel_values)
        with torch.no_grad():
            self.baseline.copy_(torch.from_numpy(baseline))
            self.kernel_values.copy_(torch.from_numpy(kernel_values))
        self._publish()
        return self

    @classmethod
    def from_params(cls, baseline: Sequence[float], kernel_values: np.ndarray, support: float) -> "NonparametricHawkes":
        """A model with ``baseline [K]`` and ``kernel_values [K, K, B]`` on ``[0, support)``."""
        kernel_values = np.asarray(kernel_values, np.float64)
        if kernel_values.ndim != 3:
            raise ValueError(f"kernel_values must be [K, K, B], got shape {kernel_values.shape}")
        return cls(kernel_values.shape[0], support, kernel_values.shape[-1]).set_params(baseline, kernel_values)

    def _publish(self) -> None:
        """Expose the current parameters as scikit-learn style fitted attributes."""
        self.baseline_ = self.baseline.detach().cpu().numpy().copy()
        self.kernel_values_ = self.kernel_values.detach().cpu().numpy().copy()
        self.adjacency_ = self.kernel_values_.sum(-1) * self.bin_width
        self.support_, self.bins_ = self.support, self.bins

    @property
    def branching_ratio(self) -> float:
        """Spectral radius of the adjacency: < 1 means stationary."""
        return float(np.max(np.abs(np.linalg.eigvals(self.adjacency.detach().cpu().numpy()))))

    def kernel(self, lags: np.ndarray) -> np.ndarray:
        """``phi_ij(lag)``, ``[T, K, K]``: :meth:`excitation` under tick's name for it."""
        return self.excitation(lags)

    def excitation(self, lags: np.ndarray) -> np.ndarray:
        """``phi_ij(lag)`` for every pair, ``[T, K, K]`` (0 outside ``[0, W)``).

        The name every Hawkes model shares, for plots (:func:`tpp.plot.plot_kernel_grid`)."""
        lags = np.asarray(lags, np.float64).reshape(-1)
        values = self.kernel_values.detach().cpu().numpy()
        inside = (lags >= 0) & (lags < self.support)
        b = np.clip(np.floor(np.where(inside, lags, 0.0) / self.bin_width).astype(np.int64), 0, self.bins - 1)
        return np.where(inside[:, None, None], np.moveaxis(values[:, :, b], -1, 0), 0.0)

    def to_dict(self) -> dict:
        """Parameters as plain JSON-able values."""
        return {
            "model": "nonparametric-hawkes",
            "baseline": self.baseline.detach().cpu().numpy().tolist(),
            "kernel_values": self.kernel_values.detach().cpu().numpy().tolist(),
            "support": self.support,
        }

    # ------------------------------------------------------------------ protocol
    def _check(self, batch: EventBatch) -> None:
        self.check_marks(batch)

    def log_likelihood(self, batch: EventBatch) -> Tensor:
        """Exact log-likelihood per sequence ``[B]``, differentiable in ``baseline`` and ``kernel_values``."""
        self._check(batch)
        return _log_likelihood(self.baseline, self.kernel_values, self.support, batch)

    def _query_pairs(self, batch: EventBatch, t: Tensor):
        """Pairs of query times ``t [B, T]`` and the events of their sequence with lag in ``(0, W)``."""
        flat = _flat(batch)
        B, T = t.shape
        queries = t.detach().cpu().to(torch.float64).reshape(-1).numpy()
        query, event, lag, first = _em.window_pairs(
            queries, np.arange(B + 1, dtype=np.int64) * T, flat["times"], flat["seq_offsets"], self.support
        )
        return flat, query, event, lag, first

    def intensity(self, batch: EventBatch, t: Tensor) -> Tensor:
        """``[B, T, K]`` intensity at ``t [B, T]`` given the events of ``batch`` strictly before each time."""
        self._check(batch)
        flat, query, event, lag, _ = self._query_pairs(batch, t)
        device = self.baseline.device
        source = torch.from_numpy(flat["marks"][event]).to(device)
        bins = torch.from_numpy(_bin_of(lag, self.bin_width, self.bins)).to(device)
        excitation = self.kernel_values[:, source, bins].T  # [P, K]
        B, T = t.shape
        out = self.baseline.expand(B * T, self.num_marks).index_add(0, torch.from_numpy(query).to(device), excitation)
        return out.reshape(B, T, self.num_marks).to(t.device)

    def cumulative_intensity_at(self, batch: EventBatch, t: Tensor) -> Tensor:
        """``[B, T, K]`` ``Lambda_k(t_start, t]`` in closed form.

        ``mu_k (t - t_start)`` plus, per past event, ``Phi_{k, j_m}(t - t_m)``: the full adjacency for
        events older than ``W`` (counted, not listed) and the piecewise-linear integral for the rest.
        """
        self._check(batch)
        flat, query, event, lag, first = self._query_pairs(batch, t)
        device, dtype = self.baseline.device, self.baseline.dtype
        K = self.num_marks
        B, T = t.shape
        # events of each type before position n (flat), to count the spent events before `first`
        counts = np.zeros((flat["times"].size + 1, K))
        np.cumsum(np.eye(K)[flat["marks"]], 0, out=counts[1:])
        seq_start = np.repeat(flat["seq_offsets"][:-1], T)
        spent = torch.from_numpy(counts[first] - counts[seq_start]).to(device=device, dtype=dtype)  # [B T, K]
        source = torch.from_numpy(flat["marks"][event]).to(device)
        partial = _kernel_integral(self.kernel_values, self.bin_width, source, torch.from_numpy(lag).to(device, dtype))
        elapsed = (t.to(device, dtype) - batch.t_start.to(device, dtype)[:, None]).reshape(-1, 1)
        out = elapsed * self.baseline + spent @ self.adjacency.T
        out = out.index_add(0, torch.from_numpy(query).to(device), partial)
        return out.reshape(B, T, K).to(t.device)

    def cumulative_intensity(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        """``[B, L, K]`` closed-form ``Lambda_k(t_start, t_n]`` at every event (time-rescaling residuals)."""
        return self.cumulative_intensity_at(batch, batch.time)

    def compensator(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        """``[B]`` closed-form integral of the total intensity over each window."""
        self._check(batch)
        return _compensator(self.baseline, self.kernel_values, self.support, _flat(batch))

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        train: EventBatch,
        val: EventBatch | None = None,
        *,
        max_iter: int = 500,
        tol: float = 1e-6,
        progress: bool = False,
        **trainer_options: Any,
    ) -> "NonparametricHawkes":
        """Maximum likelihood by EM (Lewis & Mohler 2011; Marsan & Lengline 2008) on ``train``; returns self.

        E-step: event ``n`` of type ``i`` is an immigrant with probability ``mu_i / lambda_i(t_n)`` and a
        child of the earlier event ``m`` (lag in ``(0, W)``) with probability
        ``phi_{i, k_m}(t_n - t_m) / lambda_i(t_n)``. M-step: ``mu_i`` = expected immigrants of type ``i``
        / total observed time; ``kernel_values[i, j, b]`` = expected type-``i`` children of type-``j``
        parents at lag bin ``b`` / exposure ``[j, b]`` (:func:`_exposure`: ``h`` times the number of
        type-``j`` events, less the part of bin ``b`` that falls after the window end). Each iterate
        raises the exact log-likelihood of :meth:`log_likelihood`.

        Stops when the log-likelihood changes by less than ``tol`` nats per event between two
        iterations (a change per event, not relative to the log-likelihood itself, whose zero moves
        with the time unit), or after ``max_iter`` M-steps. The parameters returned are those whose
        log-likelihood was last evaluated, so ``fit_result_["log_likelihood"]`` is theirs.

        EM is exactly equivariant to the clock (its M-step is a ratio of counts to exposures), so
        unlike :class:`~tpp.hawkes.ExpHawkes` no standardised time unit is needed: working in the
        data's own unit keeps every lag in the same bin as :meth:`log_likelihood` puts it.

        Starts from half of each type's rate as baseline and a flat kernel with branching ratio 0.5
        (EM cannot revive a value that is exactly 0, so every start value is positive).
        ``fit_result_``: ``log_likelihood``, ``log_likelihood_trace`` (one value per E-step),
        ``iterations`` (M-steps), ``converged``, ``seconds`` (all), ``setup_seconds`` (pair list and
        exposures), ``em_seconds``, ``seconds_per_iteration``, ``num_pairs``.

        ``val``: a held-out batch, only scored (``fit_result_["val_score"]``, exact log-likelihood per
        event); nothing is selected on it. ``trainer_options`` (``epochs``, ``batch_size``, ``lr``,
        ``seed``, ..., the options of :func:`tpp.train.fit`) are accepted for the model contract and
        unused: EM starts from a deterministic moment-based value.
        """
        check_fit_arguments(self, val, trainer_options, train=train)
        check_params(self, max_iter=max_iter, tol=tol)
        data = train
        self._check(data)
        if data.num_events == 0:
            raise ValueError("cannot fit a Hawkes process to data without events")
        start = _time.perf_counter()
        K, B, width = self.num_marks, self.bins, self.bin_width
        flat = _flat(data)
        times, marks, offsets = flat["times"], flat["marks"], flat["seq_offsets"]
        N = times.size
        total_time = float(np.sum(flat["t_end"] - flat["t_start"]))
        if not total_time > 0:
            raise ValueError("the observation windows have zero total length: no rate can be fitted")
        target, source, lag, _ = _em.window_pairs(times, offsets, times, offsets, self.support)
        # CSR layout: window_pairs groups pairs by target, so a cumulative count delimits each event's parents.
        pair_ptr = np.zeros(N + 1, np.int64)
        np.cumsum(np.bincount(target, minlength=N), out=pair_ptr[1:])
        pair_cell = (marks[target] * K + marks[source]) * B + _bin_of(lag, width, B)
        exposure = np.broadcast_to(_exposure(flat, K, B, width)[None], (K, K, B)).ravel()
        has_exposure = exposure > 0
        counts = np.bincount(marks, minlength=K).astype(np.float64)
        if np.any(counts == 0):
            raise ValueError(f"no events of type(s) {np.flatnonzero(counts == 0).tolist()}: their baseline MLE is 0")
        mu = 0.5 * counts / total_time
        kernel = np.where(has_exposure, 0.5 / (K * self.support), 0.0)
        setup_seconds = _time.perf_counter() - start

        trace: list[float] = []
        converged = False
        em_start = _time.perf_counter()
        with tqdm(desc=f"fitting {type(self).__name__}", unit=" it", disable=not progress, leave=False) as bar:
            for it in range(max_iter + 1):
                inv_by_type, inv_by_cell, sum_log = _em.em_step(mu, kernel, marks, pair_ptr, pair_cell)
                trace.append(sum_log - mu.sum() * total_time - kernel @ exposure)
                if progress:
                    bar.set_postfix(loglik_per_event=trace[-1] / N)
                if it > 0 and abs(trace[-1] - trace[-2]) <= tol * N:
                    converged = True
                    break
                if it == max_iter:
                    break
                # M-step: expected counts (the parameter times the E-step's sums) over exposures.
                mu = mu * inv_by_type / total_time
                kernel = np.divide(kernel * inv_by_cell, exposure, out=np.zeros_like(kernel), where=has_exposure)
                bar.update(1)
        em_seconds = _time.perf_counter() - em_start
        iterations = len(trace) - 1
        self.set_params(mu, kernel.reshape(K, K, B))
        self.fit_result_ = FitResult(
            objective="likelihood",
            method="em",
            log_likelihood=float(trace[-1]),
            log_likelihood_trace=[float(v) for v in trace],
            iterations=iterations,
            converged=converged,
            tol=tol,
            seconds=_time.perf_counter() - start,
            setup_seconds=setup_seconds,
            em_seconds=em_seconds,
            seconds_per_iteration=em_seconds / max(iterations, 1),
            num_pairs=int(target.size),
        )
        record_validation(self, val, self.fit_result_)
        warn_if_not_stationary(self.branching_ratio)
        return self

    def standard_errors(self, data: EventBatch) -> dict[str, np.ndarray]:
        """Asymptotic standard errors of the MLE from the observed Fisher information, in closed form.

        ``log L`` is ``sum_n log(x_n . theta_i) - (linear in theta)`` with ``theta_i = (mu_i,
        kernel_values[i])`` and ``x_n`` the indicator of type ``k_n``'s baseline plus the number of
        parents of ``n`` in each cell ``(j, b)``. Its Hessian is ``-sum_{n: k_n = i} x_n x_n^T /
        lambda_n^2``, block diagonal over targets ``i``, so each target's block (``1 + K B``
        unknowns) is inverted on its own. Returns ``baseline [K]``, ``kernel_values [K, K, B]`` and
        ``adjacency [K, K]`` (from the covariance of the bins it sums). Cells without any pair carry
        no information: their error is ``nan``. Valid for values inside the domain, not for those
        fitted at 0, and for the MLE (fit with a small ``tol``: EM converges slowly).
        """
        import scipy.sparse

        self._check(data)
        flat = _flat(data)
        K, B, width = self.num_marks, self.bins, self.bin_width
        times, marks, offsets = flat["times"], flat["marks"], flat["seq_offsets"]
        target, source, lag, _ = _em.window_pairs(times, offsets, times, offsets, self.support)
        bins = _bin_of(lag, width, B)
        column = 1 + marks[source] * B + bins  # within the target's block; column 0 is its baseline
        lam = self.baseline_[marks] + np.bincount(
            target, self.kernel_values_[marks[target], marks[source], bins], minlength=times.size
        )
        se_mu, se_kernel, se_adj = np.full(K, np.nan), np.full((K, K, B), np.nan), np.full((K, K), np.nan)
        for i in range(K):
            events = np.flatnonzero(marks == i)
            row_of = np.full(times.size, -1)
            row_of[events] = np.arange(events.size)
            mine = marks[target] == i
            rows = np.concatenate([np.arange(events.size), row_of[target[mine]]])
            cols = np.concatenate([np.zeros(events.size, np.int64), column[mine]])
            X = scipy.sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(events.size, 1 + K * B))
            info = (X.T @ X.multiply(1.0 / lam[events, None] ** 2).tocsr()).toarray()
            known = np.flatnonzero(np.diag(info) > 0)
            cov = np.full(info.shape, np.nan)
            try:
                cov[np.ix_(known, known)] = np.linalg.inv(info[np.ix_(known, known)])
            except np.linalg.LinAlgError:
                raise ValueError(f"{type(self).__name__}.standard_errors: the observed Fisher information of type {i}'s "
                                 f"intensity is singular ({events.size} events of that type): some of its bins always "
                                 "occur together, so their standard errors are undefined; fit more events or fewer "
                                 "bins") from None
            se_mu[i] = np.sqrt(cov[0, 0])
            se_kernel[i] = np.sqrt(np.diag(cov)[1:]).reshape(K, B)
            for j in range(K):
                block = cov[1 + j * B : 1 + (j + 1) * B, 1 + j * B : 1 + (j + 1) * B]
                se_adj[i, j] = width * np.sqrt(np.nansum(block))  # cells without pairs add nothing
        return {"baseline": se_mu, "kernel_values": se_kernel, "adjacency": se_adj}

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
        """Exact simulation by the branching (cluster) construction (Hawkes & Oakes 1974).

        Immigrants of type ``i`` are ``Poisson(mu_i * duration)`` uniform on the window; each event
        of type ``j`` has ``Poisson(adjacency[i, j])`` children of type ``i`` whose delays follow
        ``phi_ij / adjacency[i, j]`` (a bin by its mass, then uniform within it). One generation is
        drawn at a time for all sequences at once; children after ``t_end`` are dropped with their
        whole line, which can only be later.

        Without ``history``: ``n`` sequences on ``[t_start, t_end]``. With ``history`` (``n`` must
        equal its number of sequences): continuations from each ``history.t_end`` to ``t_end``,
        returned with the history's events. Given the history, the future is the superposition of
        new immigrants and of the history events' children after ``history.t_end``: for an event at
        ``t_m``, ``Poisson(adjacency - Phi(r))`` children with ``r = history.t_end - t_m`` and delays
        drawn conditioned on exceeding ``r`` (inverting ``Phi`` on ``[Phi(r), adjacency]``).

        ``max_events`` caps the events over all sequences: passing it (an explosive process, a long
        horizon) raises :class:`~tpp.process.SamplingBudgetError` saying how far it got.
        """
        rng = as_numpy_rng(generator)
        K = self.num_marks
        if history is not None:
            self._check(history)
        inverse = _KernelInverse(self.kernel_values.detach().cpu().numpy().astype(np.float64), self.bin_width)
        adjacency = inverse.total.reshape(K, K)

        def draw_delays(child: np.ndarray, parent: np.ndarray, lower: np.ndarray) -> np.ndarray:
            cell = child * K + parent
            done = inverse.integral(cell, lower)  # mass already spent before ``lower``
            delay = inverse.delay(cell, done + rng.random(cell.size) * (inverse.total[cell] - done))
            return np.maximum(delay, lower)  # after the history end, even after rounding

        def remaining(parent: np.ndarray, lower: np.ndarray) -> np.ndarray:
            cells = np.arange(K)[None, :] * K + parent[:, None]  # [M, K]: child type i, parent type j
            return inverse.total[cells] - inverse.integral(cells, lower[:, None])

        return simulate_branching(self.baseline.detach().cpu().numpy().astype(np.float64), adjacency, self.support,
                                  draw_delays, remaining, n, t_end, history, rng, t_start, max_events,
                                  owner=self)
