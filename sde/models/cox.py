"""A Cox process driven by a latent neural SDE, trained by its evidence lower bound.

:class:`NeuralCoxSDE` (also exported as ``NeuralCox``): a Cox process (doubly stochastic Poisson
process, Cox 1955) whose intensity is driven by a latent neural SDE,
``lambda_k(t) = c_k softplus(w_k . z(t) + b_k)``. Its marginal likelihood is intractable: the
training objective is the ELBO of a posterior SDE over the latent path (the bound of the latent
SDE of Li et al., AISTATS 2020, Sec. 5, with the Cox log-likelihood of the events given the path in
place of a Gaussian term); :meth:`NeuralCoxSDE.log_likelihood` is an importance-weighted estimate
with the same posterior as proposal, and :meth:`NeuralCoxSDE.log_marginal_likelihood` a particle
filter's. Its conditional intensity (what the :class:`~tpp.process.PointProcess` protocol asks for)
comes from a bootstrap particle filter over prior paths, which sees only the events before each
query time.

The SDE is discretised with Euler-Maruyama (``method`` can choose another torchsde scheme) on a
fixed grid of ``step_size`` in model time (time divided by ``time_scale``, set by ``initialise``
from the training data). With Euler the path KL the solver accumulates, ``sum 1/2 |u|^2 dt``, is
exactly the KL between the posterior's and the prior's Gaussian transitions (both have covariance
``g^2 dt``), so the bound holds for the discretised model itself. The networks and the posterior SDE
are shared with :class:`~sde.models.latent.LatentSDE` (:mod:`sde.models._posterior`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sde.models._base import seeded
from sde.models._posterior import (
    BackwardEncoder,
    DiagonalDiffusion,
    DriftNet,
    Posterior,
    WeightedPosterior,
    check_num_samples,
    gaussian_kl,
    gaussian_log_ratio,
    importance_weighted,
    mlp,
    solve_fixed,
)
from sde.solvers import Backprop, Method
from tpp.compensator import gauss_legendre
from tpp.events import EventBatch
from tpp.model import Seed
from tpp.options import Interval, check_params, check_size
from tpp.process import PointProcess, as_numpy_rng

__all__ = ["NeuralCox", "NeuralCoxSDE"]

IMPORTANCE_SAMPLES = 16
"""Default number of posterior paths of :meth:`NeuralCoxSDE.log_likelihood` and :meth:`NeuralCoxSDE.score`."""


def _events_before(batch: EventBatch, t: Tensor) -> Tensor:
    """``[B, T]`` number of events strictly before each time (an event at ``t`` is not yet history)."""
    times = torch.where(batch.mask, batch.time, torch.full_like(batch.time, math.inf))
    return torch.searchsorted(times.contiguous(), t.to(times.dtype).contiguous(), side="left")


def _log_softplus(x: Tensor) -> Tensor:
    """``log(softplus(x))`` without ``log(0)`` far in the left tail (where it equals ``x``)."""
    return torch.where(x < -20, x, torch.log(F.softplus(x.clamp_min(-20))))


class _PriorSystem(nn.Module):
    """The prior SDE ``dz = h(t + offset, z) dt + g(z) dW`` for torchsde (``offset [N]`` per row)."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, drift: nn.Module, diffusion: nn.Module, offset: Tensor | None = None) -> None:
        super().__init__()
        self.drift, self.diffusion, self.offset = drift, diffusion, offset

    def f(self, t: Tensor, z: Tensor) -> Tensor:
        return self.drift(t if self.offset is None else t + self.offset, z)

    def g(self, t: Tensor, z: Tensor) -> Tensor:
        return self.diffusion(t, z)


class _CoxTerms(NamedTuple):
    """Per path ``[S, B]``: the Cox log-likelihood given the path (``cox``) and the path term (path
    KL, or the sampled log ratio); the initial term (``KL(q(z_0)||p(z_0)) [B]`` or the sampled log
    ratio ``[S, B]``); ``unit [B]``, ``L log time_scale`` (from model time to the data's)."""

    cox: Tensor
    path: Tensor
    initial: Tensor
    unit: Tensor


class _CoxPosterior(Posterior):
    """Posterior SDE of :class:`NeuralCoxSDE` for ``N = S * B`` paths, in model time since each window start.

    The drift reads the backward-GRU summary of the events after ``t`` (a learned vector when none
    is left), the time to the next event and the time to the window end. After the window end the
    posterior drift is the prior drift (no path KL accrues there).
    """

    def __init__(self, model: NeuralCoxSDE, context: Tensor, times: Tensor, lengths: Tensor, end: Tensor) -> None:
        super().__init__(model)
        # context [N, L + 1, X] (row L: nothing left), times [N, L + 1] (inf on padding and row L)
        self.context, self.times, self.lengths, self.end = context, times, lengths, end

    def f(self, t: Tensor, z: Tensor) -> Tensor:
        N = self.times.shape[0]
        t_col = t.reshape(1, 1).to(self.times.dtype).expand(N, 1).contiguous()
        idx = torch.searchsorted(self.times, t_col, right=True)  # events at or before t are past
        idx = torch.minimum(idx, self.lengths[:, None])
        ctx = self.context.gather(1, idx[..., None].expand(N, 1, self.context.shape[-1]))[:, 0]
        nxt = torch.minimum(self.times.gather(1, idx), self.end[:, None])
        feats = torch.cat([nxt - t_col, self.end[:, None] - t_col], -1).clamp(0, 1e6).to(z.dtype)
        inputs = [z, ctx, feats]
        if self.model.time_dependent:
            inputs.append(t_col.to(z.dtype))
        correction = self.model.posterior_drift(torch.cat(inputs, -1))
        return self._prior(t, z) + torch.where(t_col < self.end[:, None], correction, torch.zeros_like(correction))


class NeuralCoxSDE(PointProcess):
    """A marked Cox process driven by a latent neural SDE: ``lambda_k(t) = c_k softplus(w_k . z(t) + b_k)``.

    ``z`` follows the prior SDE ``dz = h(s, z) ds + g(z) dW`` from ``z(0) ~ p(z_0)`` at each window's
    start, in model time ``s = (t - t_start) / time_scale`` (``h`` reads ``s`` when
    ``time_dependent``). ``c_k`` is a fixed scale (buffer ``rate_scale``: the mark's mean training
    rate per unit of model time over ``log 2``, set by :meth:`initialise`), so ``z = 0``
    gives the mean rate and a unit change of ``w_k . z`` a change of order one in relative terms;
    the learned part is the softplus of an affine map of the state. Intensities are returned per
    unit of the data's time (divided by ``time_scale``).

    The path is the Euler-Maruyama chain on a grid of ``step_size`` in model time (``time_scale`` is
    the median window length, so the default is 64 cells per typical window) joined by straight
    lines; the same path definition is used by the bound, the filter and the sampler.

    * :meth:`elbo` is **a lower bound** on the marginal log-likelihood and the training
      :meth:`objective`: ``E_q[sum_n log lambda_{k_n}(t_n) - int sum_k lambda_k dt - path KL] -
      KL(q(z_0)||p(z_0))`` under a posterior SDE whose drift is the prior drift plus a correction
      reading a GRU run backwards over the events (mark embedding, gap to the next event), the time
      to the next event and to the window end, averaged over ``num_samples`` posterior paths (the
      constructor's setting is the training one). Each event's intensity comes from the path
      interpolated at its time; the integral is Gauss-Legendre with ``num_points`` nodes in every
      grid cell (exact to quadrature precision for the piecewise-linear path).
    * :meth:`log_likelihood` is **an importance-weighted estimate** of the marginal
      log-likelihood (Burda et al. 2016) with the same posterior as proposal and the exact density
      ratio of the Euler chains as weights: at least the ELBO in expectation, below the exact value
      in expectation, consistent as its ``num_samples`` grows; :meth:`score` is its mean per event.
    * :meth:`intensity` is the predictive (``F_t-``-conditional) intensity
      ``E[lambda(t) | events strictly before t]`` estimated by a bootstrap particle filter with
      ``num_particles`` prior paths (Gordon, Salmond & Smith 1993), solved ``filter_block`` cells at
      a time, with systematic resampling at block ends when the effective sample size drops below
      half. It sees only the events before ``t`` (causal by construction, not by training) and
      converges to the exact conditional intensity as ``num_particles`` grows; it is deterministic
      given ``filter_seed``. Past ``t_end`` it keeps conditioning on "no event yet", as
      :meth:`predict` needs. :meth:`log_marginal_likelihood` is the same filter's estimate of the
      exact marginal log-likelihood. ``compensator``, ``cumulative_intensity`` and ``predict``
      integrate this intensity (the protocol's defaults).
    * :meth:`sample` draws prior paths (from ``p(z_0)``, or from a filter particle at the end of a
      history), then events exactly by thinning against each path's intensity, with exact per-cell
      bounds (a softplus of a linear function peaks at a cell end).
    """

    _constraints = {**{name: Interval(1, None, integer=True)
                       for name in ("num_marks", "latent_size", "hidden_size", "context_size", "num_samples",
                                    "num_points", "num_particles", "filter_block")},
                    "step_size": Interval(0, None, closed="neither")}

    def __init__(
        self,
        num_marks: int,
        latent_size: int = 4,
        hidden_size: int = 32,
        context_size: int = 16,
        *,
        time_dependent: bool = True,
        num_samples: int = 1,
        step_size: float = 1 / 64,
        num_points: int = 4,
        num_particles: int = 256,
        filter_block: int = 8,
        filter_seed: int = 0,
        method: Method = Method.EULER,
        backprop: Backprop = Backprop.DIRECT,
    ) -> None:
        super().__init__()
        check_params(self, num_marks=num_marks, latent_size=latent_size, hidden_size=hidden_size,
                     context_size=context_size, num_samples=num_samples, num_points=num_points,
                     num_particles=num_particles, filter_block=filter_block, step_size=step_size)
        self.num_marks, self.latent_size = int(num_marks), int(latent_size)
        self.time_dependent = bool(time_dependent)
        self.num_samples, self.step_size, self.num_points = int(num_samples), float(step_size), int(num_points)
        self.num_particles, self.filter_seed = int(num_particles), int(filter_seed)
        self.filter_block = int(filter_block)
        self.method, self.backprop = method, backprop
        # ints from here on (torch refuses NumPy integers and integral floats as sizes), of a size that fits
        num_marks, latent_size = self.num_marks, self.latent_size
        hidden_size, context_size = int(hidden_size), int(context_size)
        check_size(self, (max(num_marks + 1, latent_size + context_size + 3, hidden_size + 2), hidden_size),
                   f"num_marks={num_marks}, latent_size={latent_size}, hidden_size={hidden_size}, "
                   f"context_size={context_size}")
        check_size(self, (2 * latent_size + num_marks, context_size + 1),
                   f"num_marks={num_marks}, latent_size={latent_size}, context_size={context_size}")
        self.embedding = nn.Embedding(num_marks + 1, hidden_size, padding_idx=num_marks)  # row K: padding
        self.encoder = BackwardEncoder(hidden_size + 2, hidden_size, context_size)
        self.empty_context = nn.Parameter(torch.zeros(context_size))
        self.qz0 = nn.Linear(context_size + 1, 2 * latent_size)
        self.pz0_mean = nn.Parameter(torch.zeros(latent_size))
        self.pz0_log_std = nn.Parameter(torch.zeros(latent_size))
        self.posterior_drift = mlp(latent_size + context_size + 2 + int(time_dependent), hidden_size, latent_size,
                                    zero_last=True)
        self.prior_drift = DriftNet(latent_size, hidden_size, time_dependent)
        self.diffusion = DiagonalDiffusion(latent_size)
        self.head = nn.Linear(latent_size, num_marks)
        self.register_buffer("rate_scale", torch.ones(num_marks))
        self.register_buffer("time_scale", torch.tensor(1.0, dtype=torch.float64))

    # ------------------------------------------------------------------ bookkeeping
    @property
    def dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @torch.no_grad()
    def initialise(self, train: EventBatch) -> NeuralCoxSDE:
        """``time_scale`` = median window length; ``rate_scale`` = each mark's mean rate (model time) / log 2."""
        durations = train.duration.to(torch.float64)
        positive = durations[durations > 0]
        self.time_scale.fill_(float(positive.median()) if positive.numel() else 1.0)
        exposure = float(durations.sum()) / float(self.time_scale)
        counts = torch.bincount(train.mark[train.mask], minlength=self.num_marks)[: self.num_marks].to(torch.float64)
        rate = (counts / max(exposure, 1e-12)).clamp_min(1e-3)
        self.rate_scale.copy_((rate / math.log(2)).to(self.rate_scale.dtype))
        return self

    def fit_standardisation(self, train: EventBatch) -> NeuralCoxSDE:
        """Old name of :meth:`initialise` (kept so existing code runs)."""
        return self.initialise(train)

    def _prepare(self, batch: EventBatch) -> EventBatch:
        if batch.device != self.device:
            batch = batch.to(self.device)
        if batch.num_marks > self.num_marks:
            raise ValueError(f"batch has {batch.num_marks} marks, the model {self.num_marks}")
        return batch

    def _rates(self, z: Tensor) -> Tensor:
        """``[..., K]`` intensity in model time at latent states ``z [..., D]``."""
        return self.rate_scale * F.softplus(self.head(z))

    def _log_rates(self, z: Tensor) -> Tensor:
        return torch.log(self.rate_scale) + _log_softplus(self.head(z))

    def _model_time(self, batch: EventBatch, t: Tensor) -> Tensor:
        return (t.to(torch.float64) - batch.t_start.to(torch.float64)[:, None]) / float(self.time_scale)

    def _grid(self, horizon: float) -> Tensor:
        """Grid ``0, dt, .., N dt`` (float64) covering ``[0, horizon]``."""
        n = max(1, math.ceil(horizon / self.step_size - 1e-9))
        return torch.arange(n + 1, dtype=torch.float64, device=self.device) * self.step_size

    @staticmethod
    def _on_path(ys: Tensor, cell: Tensor, frac: Tensor) -> Tensor:
        """Latent state on the piecewise-linear path: ``ys [N, G, D]`` at cells/fractions ``[N, ...]``."""
        N, D = ys.shape[0], ys.shape[-1]
        flat_cell = cell.reshape(N, -1)
        left = ys.gather(1, flat_cell[..., None].expand(-1, -1, D))
        right = ys.gather(1, (flat_cell + 1)[..., None].expand(-1, -1, D))
        z = left + frac.reshape(N, -1, 1).to(ys.dtype) * (right - left)
        return z.reshape(*cell.shape, D)

    def _cell_of(self, s: Tensor, num_cells: int) -> tuple[Tensor, Tensor]:
        cell = torch.floor(s / self.step_size).long().clamp(0, num_cells - 1)
        return cell, s / self.step_size - cell.to(s.dtype)

    # ------------------------------------------------------------------ the bound and the estimate
    def _paths(self, batch: EventBatch, num_samples: int, weights: bool) -> _CoxTerms:
        """``num_samples`` posterior paths per sequence and the terms of the bound (``weights``: of the
        importance weights) in model time; see :meth:`elbo` and :meth:`log_likelihood`."""
        batch = self._prepare(batch)
        B, S, dtype = len(batch), num_samples, self.dtype
        s_ev = self._model_time(batch, batch.time)  # [B, L] float64
        end = batch.duration.to(torch.float64) / float(self.time_scale)
        grid = self._grid(float(end.max()) if B else 0.0)
        num_cells = grid.numel() - 1
        lengths = batch.lengths
        context = self._event_context(batch, s_ev, end)  # [B, L + 1, X]
        times = torch.cat([torch.where(batch.mask, s_ev, torch.full_like(s_ev, math.inf)),
                           torch.full((B, 1), math.inf, dtype=torch.float64, device=self.device)], 1)
        q = self.qz0(torch.cat([context[:, 0], end[:, None].to(dtype)], -1))
        mean_q, log_std_q = q.chunk(2, -1)
        eps = torch.randn(S, B, self.latent_size, dtype=dtype, device=self.device)
        z0 = mean_q + log_std_q.exp() * eps  # [S, B, D]
        if weights:
            initial = gaussian_log_ratio(z0, mean_q, log_std_q, self.pz0_mean, self.pz0_log_std)
        else:
            initial = gaussian_kl(mean_q, log_std_q, self.pz0_mean, self.pz0_log_std)
        z0 = z0.reshape(S * B, -1)
        system = _CoxPosterior(self, context.repeat(S, 1, 1), times.repeat(S, 1), lengths.repeat(S), end.repeat(S))
        if weights:
            y0 = torch.cat([z0, z0.new_zeros(S * B, 1)], -1)
            out = solve_fixed(WeightedPosterior(system), y0, grid.to(dtype), step_size=self.step_size,
                              method=Method.EULER, backprop=self.backprop).ys
            ys, path = out[..., :-1], out[:, -1, -1]
        else:
            solution = solve_fixed(system, z0, grid.to(dtype), step_size=self.step_size,
                                   method=self.method, backprop=self.backprop, logqp=True)
            ys, path = solution.ys, solution.logqp  # [S*B, G, D], [S*B]
        # events: the path interpolated at each event time
        cell, frac = self._cell_of(s_ev, num_cells)
        z_ev = self._on_path(ys, cell.repeat(S, 1), frac.repeat(S, 1))  # [S*B, L, D]
        marks = batch.mark.clamp(0, self.num_marks - 1).repeat(S, 1)
        log_lam = self._log_rates(z_ev).gather(-1, marks[..., None])[..., 0]
        mask = batch.mask.repeat(S, 1)
        event_term = torch.where(mask, log_lam, torch.zeros_like(log_lam)).sum(1)
        compensator = self.path_compensator(ys, grid, end.repeat(S)).sum(-1)
        # the density per unit of the data's time: each event's intensity divided by time_scale
        unit = lengths.to(dtype) * math.log(float(self.time_scale))
        return _CoxTerms((event_term - compensator).reshape(S, B), path.reshape(S, B), initial, unit)

    def elbo(self, batch: EventBatch, num_samples: int | None = None) -> Tensor:
        """``[B]`` ELBO: a Monte Carlo **lower bound** on the marginal log-likelihood of each sequence.

        ``E_q[sum_n log lambda_{k_n}(t_n) - int_{t_start}^{t_end} sum_k lambda_k(t) dt - path KL]
        - KL(q(z_0) || p(z_0))`` over ``num_samples`` posterior paths (default: the constructor's
        ``num_samples``), in the units of the data (the intensity per unit of model time is divided
        by ``time_scale``).
        """
        S = self.num_samples if num_samples is None else check_num_samples(num_samples)
        terms = self._paths(batch, S, weights=False)
        return (terms.cox - terms.path).mean(0) - terms.initial - terms.unit

    def objective(self, batch: EventBatch) -> Tensor:
        """``[B]`` the training objective: :meth:`elbo` with the constructor's ``num_samples``."""
        return self.elbo(batch)

    def log_likelihood(self, batch: EventBatch, num_samples: int = IMPORTANCE_SAMPLES) -> Tensor:
        """``[B]`` **importance-weighted estimate** of the marginal log-likelihood ``log p(events)``.

        ``log (1/K) sum_k p(events, z_k) / q(z_k | events)`` over ``K = num_samples`` posterior paths
        (Burda et al. 2016), each weighed by the exact density ratio of the prior's and the
        posterior's Euler chains: a lower bound in expectation, at least the ELBO, tightening to the
        exact value as ``num_samples`` grows (consistent, not exact). Needs ``method=Method.EULER``.
        :meth:`log_marginal_likelihood` is the particle filter's estimate of the same quantity.
        """
        if self.method is not Method.EULER:
            raise ValueError(f"the importance weights are exact for Euler-Maruyama steps only; this model solves "
                             f"with {self.method}: use elbo, or build the model with method=Method.EULER")
        terms = self._paths(batch, check_num_samples(num_samples), weights=True)
        return importance_weighted(terms.cox - terms.path - terms.initial) - terms.unit

    @torch.no_grad()
    def score(self, batch: EventBatch, num_samples: int = IMPORTANCE_SAMPLES, seed: Seed = 0) -> float:
        """Mean importance-weighted log-likelihood per event (higher is better; see
        :meth:`log_likelihood`). ``seed`` fixes the paths (None: fresh noise)."""
        with seeded(seed, self.device):
            return float(self.log_likelihood(batch, num_samples).sum()) / max(batch.num_events, 1)

    def _event_context(self, batch: EventBatch, s_ev: Tensor, end: Tensor) -> Tensor:
        """``[B, L + 1, X]``: row ``n`` summarises events ``n ..`` (backward GRU); row ``L`` is 'none left'."""
        B, L = batch.time.shape
        empty = self.empty_context.expand(B, 1, -1)
        if L == 0:
            return empty
        nxt = torch.cat([s_ev[:, 1:], end[:, None]], 1)
        nxt = torch.where(torch.arange(L, device=self.device)[None, :] + 1 < batch.lengths[:, None], nxt,
                          end[:, None].expand(B, L))
        gap = (nxt - s_ev).to(self.dtype)
        marks = torch.where(batch.mask, batch.mark, torch.full_like(batch.mark, self.num_marks))
        x = torch.cat([self.embedding(marks), gap[..., None], s_ev.to(self.dtype)[..., None]], -1)
        ctx = self.encoder(x, batch.lengths)
        ctx = torch.cat([ctx, empty], 1)
        # the row just past each sequence's last event is 'no events left'
        j = torch.arange(L + 1, device=self.device)[None, :, None]
        return torch.where(j >= batch.lengths[:, None, None], self.empty_context, ctx)

    def path_compensator(self, ys: Tensor, grid: Tensor, end: Tensor) -> Tensor:
        """``[N, K]`` integral over ``[0, end [N]]`` (model time) of each mark's intensity along the
        piecewise-linear paths ``ys [N, G, D]`` on ``grid [G]``: Gauss-Legendre, ``num_points`` per cell."""
        a = torch.minimum(grid[None, :-1], end[:, None])
        b = torch.minimum(grid[None, 1:], end[:, None])
        nodes, weights = gauss_legendre(a, b, self.num_points)  # [N, C, P]
        cell = torch.arange(grid.numel() - 1, device=self.device)[None, :, None].expand_as(nodes)
        frac = (nodes - grid[:-1, None]) / self.step_size
        lam = self._rates(self._on_path(ys, cell, frac))
        return (lam * weights.to(lam.dtype)[..., None]).sum((1, 2))

    # ------------------------------------------------------------------ the filter
    def _prior_system(self, offset: Tensor | None = None) -> _PriorSystem:
        return _PriorSystem(self.prior_drift, self.diffusion, offset)

    @torch.no_grad()
    def _filter(self, batch: EventBatch, horizon: Tensor) -> dict[str, Tensor]:
        """Bootstrap particle filter of the latent path given the events, over ``[0, horizon.max()]``.

        Returns per cell ``j`` the particles at both ends (``start [J, B, M, D]``, ``stop``), their
        normalised log weights at the cell start (``log_w [J, B, M]``, given the events before the
        cell), the grid, each event's cell, and the log-evidence estimate over each window.
        """
        B, M, D, dtype = len(batch), self.num_particles, self.latent_size, self.dtype
        gen = torch.Generator(device=self.device).manual_seed(self.filter_seed)
        s_ev = self._model_time(batch, batch.time)
        end = batch.duration.to(torch.float64) / float(self.time_scale)
        grid = self._grid(max(float(end.max()) if B else 0.0, float(horizon.max()) if horizon.numel() else 0.0))
        num_cells = grid.numel() - 1
        ev_cell, ev_frac = self._cell_of(s_ev, num_cells)
        ev_cell = torch.where(batch.mask, ev_cell, torch.full_like(ev_cell, num_cells))  # padding: no cell
        # events of cell j are positions lo[j] .. hi[j] - 1 (times are sorted)
        cells = torch.arange(num_cells + 1, device=self.device)
        bounds = torch.searchsorted(ev_cell.contiguous(), cells.expand(B, -1).contiguous())  # [B, J + 1]
        marks = batch.mark.clamp(0, self.num_marks - 1)
        eps = torch.randn(B, M, D, generator=gen, dtype=dtype, device=self.device)
        z = self.pz0_mean + self.pz0_log_std.exp() * eps
        log_w = torch.full((B, M), -math.log(M), dtype=dtype, device=self.device)
        log_evidence = torch.zeros(B, dtype=torch.float64, device=self.device)
        starts, stops, weights = [], [], []
        system = self._prior_system()
        for j0 in range(0, num_cells, self.filter_block):
            # one solve per block of cells; resampling (if the weights degenerated) at block ends only
            j1 = min(j0 + self.filter_block, num_cells)
            ys = solve_fixed(system, z.reshape(B * M, D), grid[j0 : j1 + 1].to(dtype), step_size=self.step_size,
                        method=self.method, seed=self.filter_seed * 1_000_003 + j0).ys.reshape(B, M, j1 - j0 + 1, D)
            for j in range(j0, j1):
                start, stop = ys[:, :, j - j0], ys[:, :, j - j0 + 1]
                starts.append(start)
                stops.append(stop)
                weights.append(log_w)
                events = self._events_in_cell(start, stop, ev_frac, marks, bounds[:, j], bounds[:, j + 1])  # [B, M]
                # the whole cell: past t_end the filter goes on conditioning on 'no event yet'
                a = grid[j].expand(B, 1)
                full = self._cell_compensator(start[:, None], stop[:, None], a, a + self.step_size, j, grid)[:, 0]
                clipped = torch.minimum(end, grid[j + 1])[:, None].clamp_min(grid[j])
                inside = self._cell_compensator(start[:, None], stop[:, None], a, clipped, j, grid)[:, 0]
                gain = torch.logsumexp(log_w + events - inside, -1).to(torch.float64)
                log_evidence += torch.where(grid[j] < end, gain, torch.zeros_like(gain))
                log_w = log_w + events - full
                log_w = log_w - torch.logsumexp(log_w, -1, keepdim=True)
            z, log_w = self._resample(ys[:, :, -1], log_w, gen)
        return {
            "start": torch.stack(starts), "stop": torch.stack(stops), "log_w": torch.stack(weights), "grid": grid,
            "bounds": bounds, "ev_frac": ev_frac, "marks": marks, "log_evidence": log_evidence,
        }

    def _events_in_cell(self, start: Tensor, stop: Tensor, ev_frac: Tensor, marks: Tensor, lo: Tensor,
                        hi: Tensor) -> Tensor:
        """``[..., M]`` sum of log intensities of events ``lo .. hi - 1`` (each ``[...]``) under the
        particles ``start/stop [..., M, D]`` of their cell (a sequential sum: padding adds exact zeros)."""
        shape = lo.shape
        B = shape[0]
        total = torch.zeros(start.shape[:-1], dtype=start.dtype, device=start.device)
        count = int((hi - lo).max()) if hi.numel() else 0
        L = ev_frac.shape[1]
        for e in range(count):
            pos = lo + e
            valid = pos < hi
            idx = pos.clamp_max(max(L - 1, 0)).reshape(B, -1)
            frac = ev_frac.gather(1, idx).reshape(shape).to(start.dtype)
            mark = marks.gather(1, idx).reshape(shape)
            z = start + frac[..., None, None] * (stop - start)
            log_lam = self._log_rates(z).gather(-1, mark[..., None, None].expand(*z.shape[:-1], 1))[..., 0]
            total = total + torch.where(valid[..., None], log_lam, torch.zeros_like(log_lam))
        return total

    def _cell_compensator(self, start: Tensor, stop: Tensor, a: Tensor, b: Tensor, cell: Tensor | int,
                          grid: Tensor) -> Tensor:
        """``[B, T, M]`` integral over ``[a, b] [B, T]`` (inside ``cell``) of each particle's total intensity."""
        nodes, w = gauss_legendre(a, b, self.num_points)  # [B, T, P]
        left = grid[cell] if isinstance(cell, int) else grid[cell][..., None]
        frac = ((nodes - left) / self.step_size).to(start.dtype)
        z = start[:, :, None] + frac[..., None, None] * (stop - start)[:, :, None]  # [B, T, P, M, D]
        lam = self._rates(z).sum(-1)
        return (lam * w.to(lam.dtype)[..., None]).sum(2)

    def _resample(self, z: Tensor, log_w: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """Systematic resampling of the sequences whose effective sample size fell below ``M / 2``."""
        B, M, D = z.shape
        u = torch.rand(B, 1, generator=gen, dtype=torch.float64, device=z.device)  # drawn every time
        w = log_w.to(torch.float64).exp()
        ess = 1.0 / (w**2).sum(-1)
        need = ess < M / 2
        if not bool(need.any()):
            return z, log_w
        positions = (u + torch.arange(M, dtype=torch.float64, device=z.device)) / M
        cdf = w.cumsum(-1)
        cdf = cdf / cdf[:, -1:]
        ancestors = torch.searchsorted(cdf, positions).clamp_max(M - 1)
        ancestors = torch.where(need[:, None], ancestors, torch.arange(M, device=z.device))
        z = z.gather(1, ancestors[..., None].expand(B, M, D))
        log_w = torch.where(need[:, None], torch.full_like(log_w, -math.log(M)), log_w)
        return z, log_w

    @torch.no_grad()
    def _filtered(self, batch: EventBatch, t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Particles at times ``t [B, T]``: latent states ``[B, T, M, D]`` and normalised log weights
        ``[B, T, M]`` given the events strictly before each time."""
        grid = state["grid"]
        num_cells = grid.numel() - 1
        s = self._model_time(batch, t).clamp_min(0)
        cell, _ = self._cell_of(s, num_cells)
        B, T = cell.shape
        b_idx = torch.arange(B, device=self.device)[:, None].expand(B, T)
        start = state["start"][cell, b_idx]  # [B, T, M, D]
        stop = state["stop"][cell, b_idx]
        log_w = state["log_w"][cell, b_idx]  # [B, T, M]
        lo = state["bounds"].gather(1, cell)
        before = _events_before(batch, t)  # strictly before t, compared in the data's own clock
        hi = torch.maximum(before, lo)
        log_w = log_w + self._events_in_cell(start, stop, state["ev_frac"], state["marks"], lo, hi)
        log_w = log_w - self._cell_compensator(start, stop, grid[cell], torch.maximum(s, grid[cell]), cell, grid)
        log_w = log_w - torch.logsumexp(log_w, -1, keepdim=True)
        frac = ((s - grid[cell]) / self.step_size).clamp(0, 1).to(start.dtype)
        z = start + frac[..., None, None] * (stop - start)
        return z, log_w, s

    def intensity(self, batch: EventBatch, t: Tensor, chunk: int | None = None) -> Tensor:
        """``[B, T, K]`` predictive intensity ``E[lambda(t) | events strictly before t]`` (particle filter).

        A Monte Carlo estimate with ``num_particles`` particles, deterministic given ``filter_seed``;
        causal by construction (the weights at ``t`` use the events before ``t`` only).
        """
        batch = self._prepare(batch)
        t = t.to(device=self.device, dtype=torch.float64)
        state = self._filter(batch, self._model_time(batch, t).max(1).values if t.numel() else t.new_zeros(len(batch)))
        if chunk is None:
            # about 4M numbers in the largest intermediate, [B, chunk, num_points, M, max(K, D)]
            width = len(batch) * self.num_particles * self.num_points * max(self.num_marks, self.latent_size)
            chunk = max(1, (1 << 22) // max(1, width))
        out = []
        with torch.no_grad():
            for lo in range(0, t.shape[1], chunk):
                z, log_w, _ = self._filtered(batch, t[:, lo : lo + chunk], state)
                lam = self._rates(z)  # [B, Tc, M, K]
                out.append((lam * log_w.exp()[..., None]).sum(2))
        lam = torch.cat(out, 1) if out else torch.zeros(len(batch), 0, self.num_marks, dtype=self.dtype)
        return (lam.to(torch.float64) / float(self.time_scale)).to(batch.dtype)

    def log_marginal_likelihood(self, batch: EventBatch) -> Tensor:
        """``[B]`` particle-filter estimate of the exact marginal log-likelihood ``log p(events)``.

        The product of the filter's mean incremental weights is unbiased for the likelihood (Del Moral
        2004), so its log is a lower bound in expectation that tightens as ``num_particles`` grows.
        """
        batch = self._prepare(batch)
        state = self._filter(batch, batch.duration.to(torch.float64) / float(self.time_scale))
        log_evidence = state["log_evidence"] - batch.lengths.to(torch.float64) * math.log(float(self.time_scale))
        return log_evidence.to(batch.dtype)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample_paths(self, n: int, horizon: float, generator: torch.Generator, z0: Tensor | None = None,
                     offset: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``n`` prior paths on the grid ``0, dt, ..`` of ``[0, horizon]`` (model time, after ``offset [n]``).

        Returns the grid ``[G]`` and the states ``[n, G, D]``.
        """
        D, dtype = self.latent_size, self.dtype
        if z0 is None:
            z0 = self.pz0_mean + self.pz0_log_std.exp() * torch.randn(n, D, generator=generator, dtype=dtype,
                                                                    device=self.device)
        grid = self._grid(horizon)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
        system = self._prior_system(None if offset is None else offset.to(dtype))
        ys = solve_fixed(system, z0, grid.to(dtype), step_size=self.step_size, method=self.method, seed=seed).ys
        return grid, ys

    def sample(
        self,
        n: int,
        t_end: float,
        history: EventBatch | None = None,
        generator: Seed = None,
        t_start: float = 0.0,
    ) -> EventBatch:
        """``n`` sequences on ``[t_start, t_end]``, or continuations of ``history`` up to ``t_end``.

        A prior path per sequence (from ``p(z_0)``, or from one filter particle drawn by weight at
        the end of the history), then events by exact thinning against its piecewise-linear
        intensity, cell by cell.
        """
        rng = as_numpy_rng(generator)
        gen = torch.Generator(device=self.device).manual_seed(int(rng.integers(0, 2**62)))
        scale = float(self.time_scale)
        if history is None:
            t0 = torch.full((n,), float(t_start), dtype=torch.float64, device=self.device)
            begin = torch.zeros(n, dtype=torch.float64, device=self.device)
            z0 = None
            old = [(np.zeros(0), np.zeros(0, np.int64))] * n
            after = np.full(n, float(t_start))
        else:
            if len(history) != n:
                raise ValueError(f"n={n} but the history has {len(history)} sequences")
            history = self._prepare(history)
            t0 = history.t_start.to(torch.float64)
            begin = history.duration.to(torch.float64) / scale
            state = self._filter(history, begin)
            z, log_w, _ = self._filtered(history, history.t_end[:, None], state)
            pick = torch.multinomial(log_w[:, 0].exp().float(), 1, generator=gen)[:, 0]
            z0 = z[:, 0].gather(1, pick[:, None, None].expand(n, 1, self.latent_size))[:, 0]
            old = history.sequences()
            after = history.t_end.cpu().numpy().astype(np.float64)
        stop = (float(t_end) - t0) / scale - begin
        if bool((stop < 0).any()):
            raise ValueError("t_end must not be before the start of the simulation")
        grid, ys = self.sample_paths(n, float(stop.max()), gen, z0, begin if history is not None else None)
        lam = self._rates(ys).to(torch.float64)  # [n, G, K]
        length = (torch.minimum(grid[None, 1:], stop[:, None]) - grid[None, :-1]).clamp_min(0)  # [n, C]
        bound = torch.maximum(lam[:, :-1], lam[:, 1:]).sum(-1)  # exact: softplus of a line peaks at an end
        counts = torch.poisson(bound * length, generator=gen).long()
        rows, cells = torch.nonzero(counts, as_tuple=True)
        reps = counts[rows, cells]
        rows, cells = rows.repeat_interleave(reps), cells.repeat_interleave(reps)
        u = torch.rand(rows.numel(), generator=gen, dtype=torch.float64, device=self.device)
        s = grid[cells] + u * length[rows, cells]  # uniform on the part of the cell inside the window
        frac = ((s - grid[cells]) / self.step_size)[:, None].to(ys.dtype)
        z = ys[rows, cells] + frac * (ys[rows, cells + 1] - ys[rows, cells])
        lam_c = self._rates(z).to(torch.float64)
        total = lam_c.sum(-1)
        u_accept = torch.rand(rows.numel(), generator=gen, dtype=torch.float64, device=self.device)
        keep = u_accept * bound[rows, cells] <= total
        marks = torch.multinomial(lam_c[keep].float().clamp_min(1e-30), 1, generator=gen)[:, 0] if bool(keep.any()) \
            else torch.zeros(0, dtype=torch.long, device=self.device)
        rows, times = rows[keep], t0[rows[keep]] + (begin[rows[keep]] + s[keep]) * scale
        rows_np, times_np, marks_np = rows.cpu().numpy(), times.cpu().numpy(), marks.cpu().numpy()
        seq_t, seq_m = [], []
        for b in range(n):
            sel = rows_np == b
            new_t, new_m = times_np[sel], marks_np[sel]
            order = np.argsort(new_t, kind="stable")
            # rounding of the clock may not move an event outside its window or before the history's end
            seq_t.append(np.concatenate([old[b][0], np.clip(new_t[order], after[b], float(t_end))]))
            seq_m.append(np.concatenate([old[b][1], new_m[order]]))
        return EventBatch.from_sequences(seq_t, seq_m, t_start=t0.cpu().numpy(), t_end=float(t_end),
                                         num_marks=self.num_marks)


NeuralCox = NeuralCoxSDE
"""The former name of :class:`NeuralCoxSDE` (kept)."""
