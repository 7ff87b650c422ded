"""FaDIn: Hawkes processes with general finite-support kernels, fitted on a grid (Staerman et al., ICML 2023).

``lambda_i(t) = mu_i + sum_j A[i, j] sum_{t - W <= t_m^j < t} kernel_ij(t - t_m^j)`` with each
``kernel_ij`` a density on ``[0, W]`` from :mod:`tpp.hawkes.kernels` (so ``A`` is the kernels'
integral, as for :class:`~tpp.hawkes.ExpHawkes`).

Fitting (FaDIn, Section 3): events are projected on a grid of step ``delta``; the discrete
kernels ``phi_ij[tau] = kernel_ij(tau delta)``, ``tau = 1 .. L = floor(W / delta)``, are normalised
on the grid so that ``delta sum_tau phi_ij[tau] = 1`` exactly; the discrete intensity is
``lambda_i[s] = mu_i + sum_j A[i, j] sum_tau phi_ij[tau] z_j[s - tau]`` (eq. 6). Two objectives:

* ``"l2"``: ``(1/N) sum_i (delta sum_s lambda_i[s]^2 - 2 sum_{n: type i} lambda_i[s_n])`` (eq. 7),
  evaluated from the statistics ``zG``, ``zN``, ``ztzG`` computed once (exact, or the Toeplitz
  approximation), so each step costs O(K^3 L^2) whatever the number of events;
* ``"likelihood"``: the discretised log-likelihood ``sum_n log lambda[s_n] - delta sum_s lambda[s]``,
  from the event pairs less than ``L`` bins apart, O(pairs) per step.

The statistics come from pairs of events within ``W`` of each other (:mod:`tpp.hawkes._grid`),
not from a dense sweep of ``T / delta`` bins. Positivity is by a softplus parametrisation; the
start is moment-based (rates, and a branching ratio from the dispersion of counts); L-BFGS with a
strong-Wolfe line search runs until the objective's relative change falls below ``tol``.

After fitting, the model is an ordinary continuous-time :class:`~tpp.process.PointProcess`: exact
log-likelihood (the kernels' distribution functions are closed form), intensity, compensator,
exact simulation by the branching construction.
"""

from __future__ import annotations

import math
import time as _time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.optimize
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from tpp.events import EventBatch
from tpp.hawkes import _grid
from tpp.hawkes._common import (check_fit_arguments, check_parameter_size, record_validation, simulate_branching,
                                warn_if_not_stationary)
from tpp.hawkes.kernels import Kernel, get_kernel
from tpp.model import Seed
from tpp.options import Initialisation, Interval, KernelName, Objective, Options, check_params
from tpp.process import PointProcess, as_numpy_rng

__all__ = ["FaDInHawkes", "GridStatistics"]


def _softplus_inverse(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x + np.log(-np.expm1(-x))


class GridStatistics:
    """Everything FaDIn's objectives need from the data, computed once (see :mod:`tpp.hawkes._grid`)."""

    def __init__(self, data: EventBatch, delta: float, support: float, exact: bool = True, pairs: bool = False) -> None:
        flat = data.to_flat()
        self.delta = float(delta)
        self.L = int(math.floor(support / delta + 1e-9))
        if self.L < 1:
            raise ValueError(f"delta={delta} is larger than the support W={support}: no kernel tap on the grid")
        K = data.num_marks
        bins, sizes = _grid.project(flat["times"], flat["seq_offsets"], flat["t_start"], flat["t_end"], self.delta)
        n_pairs = _grid.count_pairs(bins, flat["seq_offsets"], self.L) if pairs else 0
        zG, zN, ztzG, counts, tgt, src, lag = _grid.grid_statistics(
            bins, flat["marks"].astype(np.int64), flat["seq_offsets"], sizes, self.L, K, exact, n_pairs
        )
        as_t = lambda a: torch.from_numpy(a)  # noqa: E731
        self.zG, self.zN, self.counts = as_t(zG), as_t(zN), as_t(counts)
        # ztzG as the [(j, tau), (k, tau')] Gram matrix the loss multiplies by, built once (72 MB at K=10, L=300).
        self.gram = as_t(ztzG).permute(0, 2, 1, 3).reshape(K * self.L, K * self.L).contiguous()
        del ztzG
        self.grid_size = float(sizes.sum())
        self.num_events = float(flat["times"].size)
        self.event_marks = torch.from_numpy(flat["marks"].astype(np.int64))
        self.pair_target, self.pair_source, self.pair_lag = as_t(tgt), as_t(src), as_t(lag)
        self.exact = exact

    @property
    def ztzG(self) -> Tensor:
        """``[K, K, L, L]`` view of the Gram matrix: ``sum_s z_j[s - tau] z_k[s - tau']``."""
        K = self.counts.numel()
        return self.gram.reshape(K, self.L, K, self.L).permute(0, 2, 1, 3)


class FaDInHawkes(PointProcess):
    """Multivariate Hawkes process with finite-support parametric kernels, fitted by FaDIn.

    Args:
        num_marks: number of types ``K``.
        kernel: a :class:`~tpp.options.KernelName` or its value: ``"truncated-gaussian"`` (m, sigma),
            ``"raised-cosine"`` (u, sigma), ``"truncated-exponential"`` (decay), ``"kumaraswamy"`` (a, b);
            or a :class:`~tpp.hawkes.kernels.ParametricKernel`.
        support: ``W``, the kernels' support ``[0, W]``.
        delta: grid step of the discretisation.
        objective: :attr:`Objective.L2` (FaDIn's contrast, ``"l2"``) or :attr:`Objective.LIKELIHOOD`
            (discretised log-likelihood, ``"likelihood"``); kept as :attr:`fit_objective` (the name
            ``objective`` is the model contract's training objective, the log-likelihood).
        toeplitz: use the Toeplitz approximation of ``ztzG`` (drops the window-end correction).
        adjacency_mask: ``[K, K]`` booleans; False pins that ``A[i, j]`` to 0.
        fixed: parameters to hold at given values during ``fit``, e.g. ``{"sigma": 0.3}`` or
            ``{"baseline": [...]}``; arrays may hold NaN for entries that stay free.

    Fitted: ``baseline_ [K]``, ``adjacency_ [K, K]``, ``kernel_params_`` (dict of ``[K, K]``),
    ``fit_result_``.
    """

    _constraints = {
        "num_marks": Interval(1, None, integer=True),
        "support": Interval(0, None, closed="neither"),
        "delta": Interval(0, None, closed="neither"),
        "objective": Options(Objective),
        "baseline": Interval(0, None, closed="neither"),
        "adjacency": Interval(0, None),
        "max_iter": Interval(1, None, integer=True),
        "tol": Interval(0, None),
        "init": Options(Initialisation),
    }

    def __init__(
        self,
        num_marks: int,
        kernel: KernelName | str | Kernel = KernelName.TRUNCATED_GAUSSIAN,
        support: float = 1.0,
        delta: float = 0.01,
        objective: Objective | str = Objective.L2,
        *,
        toeplitz: bool = False,
        adjacency_mask: np.ndarray | None = None,
        fixed: Mapping[str, float | Sequence[float] | np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        checked = check_params(self, num_marks=num_marks, support=support, delta=delta, objective=objective)
        objective = checked["objective"]
        if objective is Objective.LEAST_SQUARES:
            raise ValueError(f"FaDInHawkes: objective must be {Objective.L2.value!r} or "
                             f"{Objective.LIKELIHOOD.value!r}, got {objective.value!r} (least squares is ExpHawkes')")
        if delta > support:
            raise ValueError(f"FaDInHawkes: delta must be in (0, support={support}], got {delta}")
        self.num_marks = K = int(num_marks)
        # the discretised kernels hold K x K x (support / delta) values once fitted: refuse a grid that cannot be
        check_parameter_size(self, (K, K, math.floor(min(support / delta, 2.0**62)) + 1),
                             f"num_marks={K} with support={support} / delta={delta}")
        self.kernel = get_kernel(kernel, support)
        self.support = float(support)
        self.delta = float(delta)
        self.fit_objective = objective
        self.toeplitz = bool(toeplitz)
        mask = np.ones((K, K), bool) if adjacency_mask is None else np.asarray(adjacency_mask, bool)
        if mask.shape != (K, K):
            raise ValueError(f"adjacency_mask must be [{K}, {K}], got {mask.shape}")
        self.register_buffer("adjacency_mask", torch.from_numpy(mask))
        self.fixed = {k: np.broadcast_to(np.asarray(v, np.float64), self._shape_of(k)).copy() for k, v in (fixed or {}).items()}
        self.raw_baseline = nn.Parameter(torch.zeros(K, dtype=torch.float64))
        self.raw_adjacency = nn.Parameter(torch.zeros(K, K, dtype=torch.float64))
        self.raw_kernel = nn.ParameterDict(
            {name: nn.Parameter(torch.zeros(K, K, dtype=torch.float64)) for name in self.kernel.param_names}
        )
        defaults = {name: np.full((K, K), v) for name, v in self.kernel.default_params().items()}
        self.set_params(np.full(K, 0.1), np.full((K, K), 0.1 / K), defaults)

    def _shape_of(self, name: str) -> tuple[int, ...]:
        K = self.num_marks
        if name == "baseline":
            return (K,)
        if name == "adjacency" or name in self.kernel.param_names:
            return (K, K)
        raise ValueError(f"cannot fix unknown parameter {name!r}: known are baseline, adjacency, {', '.join(self.kernel.param_names)}")

    # ------------------------------------------------------------------ parameters
    @property
    def baseline(self) -> Tensor:
        return F.softplus(self.raw_baseline)

    @property
    def adjacency(self) -> Tensor:
        return torch.where(self.adjacency_mask, F.softplus(self.raw_adjacency), 0.0)

    @property
    def kernel_params(self) -> dict[str, Tensor]:
        return self.kernel.constrain(dict(self.raw_kernel.items()))

    def set_params(self, baseline, adjacency, kernel_params: Mapping[str, np.ndarray]) -> "FaDInHawkes":
        """Set parameters directly (``adjacency`` entries of 0 are pinned by the mask)."""
        K = self.num_marks
        baseline = np.broadcast_to(np.asarray(baseline, np.float64), (K,))
        adjacency = np.broadcast_to(np.asarray(adjacency, np.float64), (K, K))
        check_params(self, baseline=baseline, adjacency=adjacency)
        missing = set(self.kernel.param_names) - set(kernel_params)
        if missing:
            raise ValueError(f"kernel {self.kernel.name} needs parameters {sorted(missing)}")
        with torch.no_grad():
            self.raw_baseline.copy_(torch.from_numpy(_softplus_inverse(baseline)))
            zero = adjacency == 0
            self.adjacency_mask &= torch.from_numpy(~zero)
            self.raw_adjacency.copy_(torch.from_numpy(_softplus_inverse(np.where(zero, 1.0, adjacency))))
            raw = self.kernel.unconstrain(
                {k: torch.as_tensor(np.broadcast_to(np.asarray(kernel_params[k], np.float64), (K, K)).copy()) for k in self.kernel.param_names}
            )
            for name, value in raw.items():
                self.raw_kernel[name].copy_(value)
        self._publish()
        return self

    @classmethod
    def from_params(
        cls,
        baseline: Sequence[float],
        adjacency: np.ndarray,
        kernel: str | Kernel,
        support: float,
        kernel_params: Mapping[str, np.ndarray],
        delta: float | None = None,
    ) -> "FaDInHawkes":
        """A model with given ``baseline [K]``, ``adjacency [K, K]`` and kernel parameters (``[K, K]`` each)."""
        baseline = np.asarray(baseline, np.float64).reshape(-1)
        model = cls(baseline.size, kernel, support, delta if delta is not None else support / 100)
        return model.set_params(baseline, adjacency, kernel_params)

    def _publish(self) -> None:
        with torch.no_grad():
            self.baseline_ = self.baseline.numpy().copy()
            self.adjacency_ = self.adjacency.numpy().copy()
            self.kernel_params_ = {k: v.numpy().copy() for k, v in self.kernel_params.items()}

    @property
    def branching_ratio(self) -> float:
        return float(np.max(np.abs(np.linalg.eigvals(self.adjacency.detach().numpy()))))

    def excitation(self, lags: np.ndarray | Tensor) -> np.ndarray:
        """``phi_ij(lag) = A[i, j] * kernel_ij(lag)`` for every pair, ``[T, K, K]`` (for plots)."""
        lags = torch.as_tensor(np.asarray(lags, np.float64))[:, None, None]
        with torch.no_grad():
            return (self.adjacency * self.kernel.pdf(lags, self.kernel_params)).numpy()

    def to_dict(self) -> dict:
        return {
            "model": "fadin",
            "kernel": self.kernel.name,
            "support": self.support,
            "delta": self.delta,
            "baseline": self.baseline_.tolist(),
            "adjacency": self.adjacency_.tolist(),
            "kernel_params": {k: v.tolist() for k, v in self.kernel_params_.items()},
        }

    # ------------------------------------------------------------------ the discrete objectives
    def discrete_kernels(self) -> Tensor:
        """``phi [K, K, L]`` on the grid, normalised so that ``delta * phi.sum(-1) == 1``."""
        L = int(math.floor(self.support / self.delta + 1e-9))
        taus = torch.arange(1, L + 1, dtype=torch.float64) * self.delta
        values = self.kernel.shape(taus[:, None, None], self.kernel_params).permute(1, 2, 0)
        return values / (self.delta * values.sum(-1, keepdim=True))

    def l2_loss(self, stats: GridStatistics) -> Tensor:
        """FaDIn's l2 contrast from the precomputed statistics (eq. 7), divided by the number of events."""
        mu, adj, phi = self.baseline, self.adjacency, self.discrete_kernels()
        K, L = self.num_marks, phi.shape[-1]
        weighted = adj[..., None] * phi  # [i, j, tau]
        # sum_s lambda_i[s]^2 = G mu_i^2 + 2 mu_i sum_j <w_ij, zG_j> + sum_{j,k} w_ij^T ztzG_jk w_ik
        cross = torch.einsum("ijt,jt->i", weighted, stats.zG)
        flat_w = weighted.reshape(K, K * L)
        quad = ((flat_w @ stats.gram) * flat_w).sum(-1)
        square = stats.grid_size * mu**2 + 2 * mu * cross + quad
        at_events = stats.counts * mu + torch.einsum("ijt,ijt->i", weighted, stats.zN)
        return (self.delta * square - 2 * at_events).sum() / stats.num_events

    def discrete_nll(self, stats: GridStatistics) -> Tensor:
        """Negative discretised log-likelihood per event: ``-(sum_n log lambda[s_n] - delta sum_s lambda[s]) / N``."""
        mu, adj, phi = self.baseline, self.adjacency, self.discrete_kernels()
        weighted = adj[..., None] * phi
        marks = stats.event_marks
        lam = mu[marks].clone()
        target_type = marks[stats.pair_target]
        contrib = weighted[target_type, stats.pair_source, stats.pair_lag - 1]
        lam = lam.index_add(0, stats.pair_target, contrib)
        integral = stats.grid_size * mu.sum() + torch.einsum("ijt,jt->", weighted, stats.zG)
        return -(torch.log(lam).sum() - self.delta * integral) / stats.num_events

    def discrete_intensity(self, data: EventBatch) -> Tensor:
        """``lambda [B, K, G]`` on each sequence's grid by direct convolution (O(G L), for checks)."""
        flat = data.to_flat()
        bins, sizes = _grid.project(flat["times"], flat["seq_offsets"], flat["t_start"], flat["t_end"], self.delta)
        phi = self.discrete_kernels()
        L = phi.shape[-1]
        G = int(sizes.max())
        z = torch.zeros(len(data), self.num_marks, G + L, dtype=torch.float64)
        seq = np.repeat(np.arange(len(data)), np.diff(flat["seq_offsets"]))
        z.index_put_((torch.from_numpy(seq), torch.from_numpy(flat["marks"]), torch.from_numpy(bins + L)),
                     torch.ones(bins.size, dtype=torch.float64), accumulate=True)
        # lambda_i[s] = mu_i + sum_j A_ij sum_tau phi_ij[tau] z_j[s - tau]
        weighted = self.adjacency[..., None] * phi  # [i, j, tau]
        kernel = weighted.flip(-1)  # conv1d correlates: tap order reversed
        conv = torch.nn.functional.conv1d(z, kernel)  # [B, i, G + 1]
        lam = self.baseline[None, :, None] + conv[..., :G]
        mask = torch.arange(G)[None, :] < torch.from_numpy(sizes)[:, None]
        return lam * mask[:, None, :]

    # ------------------------------------------------------------------ fitting
    def _initial_guess(self, data: EventBatch) -> tuple[np.ndarray, np.ndarray]:
        """Baseline from the rates and adjacency from a branching ratio estimated by the dispersion of
        counts: for a stationary Hawkes process, Var N / E N -> 1 / (1 - n)^2 over long windows."""
        flat = data.to_flat()
        K = self.num_marks
        total_time = float(np.sum(flat["t_end"] - flat["t_start"]))
        counts = np.bincount(flat["marks"], minlength=K).astype(np.float64)
        rates = np.maximum(counts / max(total_time, 1e-300), 1e-12)
        width = 10 * self.support
        per_bin = []
        for b in range(len(data)):
            t = flat["times"][flat["seq_offsets"][b] : flat["seq_offsets"][b + 1]] - flat["t_start"][b]
            n_bins = int((flat["t_end"][b] - flat["t_start"][b]) // width)
            if n_bins >= 1:
                per_bin.append(np.bincount((t[t < n_bins * width] // width).astype(np.int64), minlength=n_bins))
        ratio = 0.5
        if per_bin:
            pooled = np.concatenate(per_bin).astype(np.float64)
            if pooled.size >= 10 and pooled.mean() > 0:
                dispersion = pooled.var() / pooled.mean()
                ratio = float(np.clip(1 - 1 / np.sqrt(max(dispersion, 1.0)), 0.05, 0.9))
        mu = rates * (1 - ratio)
        adjacency = np.full((K, K), ratio / K)
        return mu, adjacency

    def fit(
        self,
        train: EventBatch,
        val: EventBatch | None = None,
        *,
        max_iter: int = 2000,
        tol: float = 1e-6,
        progress: bool = False,
        init: Initialisation | str = Initialisation.MOMENTS,
        **trainer_options: Any,
    ) -> "FaDInHawkes":
        """Fit by FaDIn's discretised objective (:attr:`fit_objective`); returns self (``baseline_``,
        ``adjacency_``, ``kernel_params_``, ``fit_result_``).

        ``init``: :attr:`Initialisation.MOMENTS` starts from rates and the dispersion-based branching
        ratio (kernel parameters at the family's defaults); :attr:`Initialisation.CURRENT` starts from
        the present values. L-BFGS (scipy) on the softplus-parametrised values, gradients by autograd;
        stops when the objective's relative reduction over the last 10 iterations falls below ``tol``
        (a per-step test stopped early runs on one tiny line-search step, so none is used).

        ``val``: a held-out batch, only scored (``fit_result_["val_score"]``: exact log-likelihood per
        event); nothing is selected on it. ``trainer_options`` (``epochs``, ``batch_size``, ``lr``,
        ``seed``, ..., the options of :func:`tpp.train.fit`) are accepted for the model contract and
        unused: the start is deterministic and the optimiser is L-BFGS.
        """
        check_fit_arguments(self, val, trainer_options, train=train)
        init = check_params(self, max_iter=max_iter, tol=tol, init=init)["init"]
        data = train
        self.check_marks(data)
        if data.num_events == 0:
            raise ValueError("cannot fit a Hawkes process to data without events")
        if init is Initialisation.MOMENTS:
            mu0, adj0 = self._initial_guess(data)
            self.set_params(mu0, np.where(self.adjacency_mask.numpy(), adj0, 0.0), self.kernel.default_params())
        self._apply_fixed()
        start = _time.perf_counter()
        likelihood = self.fit_objective is Objective.LIKELIHOOD
        stats = GridStatistics(data, self.delta, self.support, exact=not self.toeplitz, pairs=likelihood)
        precompute = _time.perf_counter() - start
        loss_fn = self.discrete_nll if likelihood else self.l2_loss
        params = list(self._free_parameters())
        sizes = [p.numel() for p in params]
        trace: list[float] = []
        evaluations = 0

        def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
            nonlocal evaluations
            evaluations += 1
            with torch.no_grad():
                for p, chunk in zip(params, np.split(x, np.cumsum(sizes)[:-1])):
                    p.copy_(torch.from_numpy(chunk).reshape(p.shape))
            for p in params:
                p.grad = None
            loss = loss_fn(stats)
            if not torch.isfinite(loss):
                return np.inf, np.zeros_like(x)
            loss.backward()
            self._mask_fixed_grads()
            bar.update(1)
            value = float(loss.detach())
            trace.append(value)
            return value, np.concatenate([p.grad.reshape(-1).numpy() for p in params])

        start = _time.perf_counter()
        x0 = np.concatenate([p.detach().reshape(-1).numpy() for p in params])
        iterates: list[float] = []
        window = 10

        def stop_when_flat(intermediate_result: scipy.optimize.OptimizeResult) -> None:
            # Entries of A near 0 leave their kernel parameters almost unidentified: L-BFGS can creep
            # on them for hundreds of steps at 1e-8 per step. Stop when `window` steps gained < tol.
            iterates.append(float(intermediate_result.fun))
            if flat_over_window():
                raise StopIteration

        def flat_over_window() -> bool:
            return len(iterates) > window and iterates[-window - 1] - iterates[-1] <= tol * max(abs(iterates[-1]), 1e-12)

        restarts = 0
        x = x0
        best = np.inf
        stalled = False
        with tqdm(desc="fitting FaDInHawkes", unit=" evals", disable=not progress, leave=False) as bar:
            while True:
                res = scipy.optimize.minimize(
                    objective, x, jac=True, method="L-BFGS-B", callback=stop_when_flat,
                    options=dict(maxiter=max(max_iter - len(iterates), 1), ftol=1e-15, gtol=1e-12, maxcor=20),
                )
                x = res.x
                # A restart that gains nothing means the optimum is flat to machine precision.
                stalled = np.isfinite(best) and best - res.fun <= tol * max(abs(res.fun), 1e-12)
                best = min(best, float(res.fun))
                # L-BFGS-B also stops when one line search gains nothing (a poor quasi-Newton
                # direction after a large step); restart from there with a fresh curvature model.
                if flat_over_window() or stalled or len(iterates) >= max_iter or not np.isfinite(res.fun) or restarts >= 20:
                    break
                restarts += 1
        objective(res.x)  # leave the parameters at the solution
        if not np.isfinite(res.fun):
            raise FloatingPointError("the FaDIn objective became non-finite; try a smaller delta or fix kernel parameters")
        converged = flat_over_window() or stalled or bool(res.success and len(iterates) < max_iter and restarts < 20)
        message = (f"objective gained < tol={tol:g} (relative) over {window} iterations" if flat_over_window()
                   else "a fresh L-BFGS restart gained < tol: the optimum is flat" if stalled else str(res.message))
        self._publish()
        self.fit_result_ = {
            "objective": self.fit_objective.value,
            "loss": float(res.fun),
            "loss_trace": trace,
            "iterations": len(iterates),
            "restarts": restarts,
            "evaluations": evaluations,
            "message": message,
            "converged": converged,
            "precompute_seconds": precompute,
            "optimize_seconds": _time.perf_counter() - start,
            "grid_taps": stats.L,
            "toeplitz": self.toeplitz,
        }
        record_validation(self, val, self.fit_result_)
        warn_if_not_stationary(self.branching_ratio)
        return self

    def _free_parameters(self):
        yield self.raw_baseline
        yield self.raw_adjacency
        yield from self.raw_kernel.values()

    def _raw_by_name(self) -> dict[str, nn.Parameter]:
        return {"baseline": self.raw_baseline, "adjacency": self.raw_adjacency, **dict(self.raw_kernel.items())}

    def _apply_fixed(self) -> None:
        raw = self._raw_by_name()
        with torch.no_grad():
            for name, value in self.fixed.items():
                keep = torch.from_numpy(np.isfinite(value))
                target = torch.from_numpy(np.where(np.isfinite(value), value, 1.0))
                if name in ("baseline", "adjacency") or name in self.kernel.positive:
                    target = torch.from_numpy(_softplus_inverse(np.maximum(target.numpy(), 1e-300)))
                raw[name].copy_(torch.where(keep, target, raw[name]))

    def _mask_fixed_grads(self) -> None:
        raw = self._raw_by_name()
        for name, value in self.fixed.items():
            if raw[name].grad is not None:
                raw[name].grad[torch.from_numpy(np.isfinite(value))] = 0.0
        if self.raw_adjacency.grad is not None:
            self.raw_adjacency.grad[~self.adjacency_mask] = 0.0

    # ------------------------------------------------------------------ continuous time
    def _history(self, batch: EventBatch, t: Tensor, cumulative: bool) -> Tensor:
        """``[B, T, K]``: intensity (or cumulative intensity from ``t_start``) at ``t`` from events strictly before ``t``."""
        mask = batch.mask
        times = torch.where(mask, batch.time, torch.full_like(batch.time, float("inf")))
        hi = torch.searchsorted(times.contiguous(), t.contiguous(), side="left")  # first event >= t
        lo = torch.searchsorted(times.contiguous(), (t - self.support).contiguous(), side="left")  # first within W
        B, T = t.shape
        K = self.num_marks
        counts = (hi - lo).reshape(-1)
        q = torch.repeat_interleave(torch.arange(B * T), counts)
        start = torch.repeat_interleave(lo.reshape(-1), counts)
        first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        ev = start + (torch.arange(q.numel()) - first)
        b = q // T
        lag = t.reshape(-1)[q] - batch.time[b, ev]
        src = batch.mark[b, ev]
        params = {k: v[:, src].T for k, v in self.kernel_params.items()}  # [P, K_target]
        if cumulative:
            values = self.kernel.cdf(lag[:, None].expand(-1, K), params)
        else:
            values = self.kernel.pdf(lag[:, None].expand(-1, K), params)
        values = values * self.adjacency[:, src].T
        out = torch.zeros(B * T, K, dtype=values.dtype).index_add(0, q, values).reshape(B, T, K)
        if cumulative:
            # Events older than W have passed their whole mass A[i, j]: counts of each type before lo.
            one_hot = F.one_hot(batch.mark, K).to(values.dtype) * mask[..., None]
            before = torch.cat([torch.zeros(B, 1, K, dtype=values.dtype), one_hot.cumsum(1)], 1)  # [B, L + 1, K]
            old = before.gather(1, lo[..., None].expand(-1, -1, K))  # [B, T, K]
            elapsed = (t - batch.t_start[:, None])[..., None]
            out = out + self.baseline * elapsed + old @ self.adjacency.T
        else:
            out = out + self.baseline
        return out

    def intensity(self, batch: EventBatch, t: Tensor) -> Tensor:
        return self._history(batch, t.to(torch.float64), cumulative=False)

    def cumulative_intensity(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        return self._history(batch, batch.time, cumulative=True)

    def compensator(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        return self._history(batch, batch.t_end[:, None], cumulative=True).sum((1, 2))

    def log_likelihood(self, batch: EventBatch) -> Tensor:
        """Exact continuous-time log-likelihood per sequence ``[B]`` (closed-form compensator)."""
        self.check_marks(batch)
        lam = self._history(batch, batch.time, cumulative=False)
        lam_event = lam.gather(2, batch.mark[..., None])[..., 0]
        log_terms = torch.where(batch.mask, torch.log(torch.where(batch.mask, lam_event, 1.0)), 0.0)
        return log_terms.sum(1) - self.compensator(batch)

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
        """Exact simulation by the branching construction (Hawkes & Oakes 1974): immigrants at rate
        ``mu``, and each event of type ``j`` has Poisson(``A[i, j]``) children of type ``i`` at delays
        drawn exactly from ``kernel_ij``. With a finite support, a history only matters through its
        last ``W``: those events' children still to come are drawn conditioned on falling after the
        history's end. ``max_events`` caps the events over all sequences: passing it raises
        :class:`~tpp.process.SamplingBudgetError` saying how far the simulation got."""
        K = self.num_marks
        adj = self.adjacency.detach().numpy()
        params = {k: v.detach().numpy() for k, v in self.kernel_params.items()}

        def draw_delays(child: np.ndarray, parent: np.ndarray, lower: np.ndarray) -> np.ndarray:
            return self.kernel.sample({k: v[child, parent] for k, v in params.items()}, lower, rng)

        def remaining(parent: np.ndarray, lower: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                cdf = self.kernel.cdf(
                    torch.as_tensor(lower)[:, None].expand(-1, K), {k: torch.as_tensor(v[:, parent].T) for k, v in params.items()}
                ).numpy()
            return adj[:, parent].T * (1 - cdf)

        rng = as_numpy_rng(generator)
        return simulate_branching(self.baseline.detach().numpy(), adj, self.support, draw_delays, remaining, n, t_end,
                                  history, rng, t_start, max_events, owner=self)
