"""Baselines of Chen, Amos & Nickel (ICLR 2021): simple temporal models x a conditional Gaussian mixture
in space, and a kernel-density spatial baseline.

Time (the ground process of the events; one mark type):

* ``"poisson"``: :class:`tpp.hawkes.Poisson` (``lambda = rate``);
* ``"hawkes"``: :class:`tpp.hawkes.ExpHawkes` (``lambda(t) = mu + a beta sum_{t_j < t} exp(-beta (t - t_j))``;
  its exact compiled recursion is the torch-differentiable likelihood, closed-form compensator, exact sampler);
* ``"self-correcting"``: :class:`SelfCorrecting` (``lambda(t) = exp(c + mu (t - t_start) - beta N(t-))``,
  Isham & Westcott 1979; the paper's form with an intercept ``c``, which it fixes at 0; exact piecewise
  compensator; sampled by the one thinning sampler :func:`tpp.sampling.thinning_sample`);
* ``"nhp"``, ``"thp"``: our neural TPPs :class:`tpp.neural.NHP` (Mei & Eisner 2017) and :class:`tpp.neural.THP`
  (Zuo et al. 2020) with one type and ``hidden_size`` units (the paper's tables pair only the classic models
  with the mixture; these set a neural ground process beside the same spatial head). Their compensator is their
  own Gauss-Legendre quadrature (cheaper nodes in training, :meth:`tpp.neural.base.NeuralTPP.objective`), they
  sample by thinning, and they train jointly with the head by the one trainer.

Space (:class:`HawkesGMM`, the paper's ``GaussianMixtureSpatialModel`` with a base component): the next
location at time ``t`` given the events strictly before ``t`` has density

``f(x | t, H) = pi0 N(x; m0, S0) + (1 - pi0) sum_{t_j < t} w_j(t) N(x; x_j, S)``,
``w_j(t) = softmax_j(-(t - t_j) / tau)``

(diagonal ``S0``, ``S``; without history ``f = N(m0, S0)``). The reference code has ``pi0 = 0`` after the first
event; ``pi0`` is learned here (a sigmoid), so the reference model is its limit. :class:`KDESpatial`: the
same temporal choices x a fixed Gaussian kernel density of the training locations (bandwidth a multiple of
Scott's rule chosen by leave-one-out likelihood on the training locations, or on validation data, or given).

Locations are standardised with the training mean and one scale (:class:`~tpp.spatial.data.LocationScaler`);
densities are reported in the data's units (``- D log scale``). Everything is float64 and exact.

Ties (``ties=``): ``"keep"`` (default) follows the project's rule (ARCHITECTURE.md, "Ties"): an event's
history is the events strictly earlier in time, so tied events neither excite nor locate one another;
``"error"`` refuses a batch with tied times (an :class:`~tpp.events.EventDataError` naming the sequence and
position), for data where a tie means a duplicate.
"""

from __future__ import annotations

import abc
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tpp.events import EventBatch, EventDataError
from tpp.model import Seed
from tpp.process import PointProcess, as_numpy_rng
from tpp.spatial.base import SpatioTemporalProcess
from tpp.spatial.data import LocationScaler, _normal_log_density, _warn_dropped_features

__all__ = ["SelfCorrecting", "HawkesGMM", "PoissonGMM", "SelfCorrectingGMM", "KDESpatial", "TEMPORAL_MODELS",
           "NEURAL_TEMPORAL", "TIES"]

#: the neural ground processes (tpp.neural classes), trained with the spatial head
NEURAL_TEMPORAL = {"nhp": "NHP", "thp": "THP"}
TEMPORAL_MODELS = ("hawkes", "poisson", "self-correcting", *NEURAL_TEMPORAL)
TIES = ("keep", "error")

#: elements of one pairwise block (queries x sources): bounds the memory of a density evaluation
_BLOCK = 1 << 22


def _logsumexp(x: Tensor, dim: int) -> Tensor:
    """``logsumexp`` whose terms below ``exp(-700)`` of the largest count as ``exp(-700)``: the float64 sum is
    unchanged (``1 + n e^-700 == 1``), and no subnormal number is formed (they slow a CPU down tenfold).
    Every row needs one finite entry."""
    top = x.amax(dim, keepdim=True).detach()
    return (x - top).clamp_min(-700.0).exp().sum(dim).log() + top.squeeze(dim)


# ---------------------------------------------------------------------------------------------- time
def _counts_before(batch: EventBatch, t: Tensor) -> Tensor:
    """``[B, T]`` the number of events strictly before each ``t [B, T]`` (padding never counts)."""
    times = torch.where(batch.mask, batch.time, torch.full_like(batch.time, math.inf))
    return torch.searchsorted(times.contiguous(), t.to(times.dtype).contiguous(), side="left")


class SelfCorrecting(PointProcess):
    """Self-correcting process ``lambda(t) = exp(c + mu (t - t_start) - beta N(t-))`` with ``mu, beta > 0``.

    ``N(t-)`` counts the events strictly before ``t`` (ties do not correct one another). Exact
    log-likelihood and compensator (piecewise closed form, in log space); sampled by thinning.
    """

    num_marks = 1

    def __init__(self) -> None:
        super().__init__()
        self.log_rate = nn.Parameter(torch.zeros((), dtype=torch.float64))  # c: log intensity at t_start
        self.log_mu = nn.Parameter(torch.tensor(math.log(0.1), dtype=torch.float64))
        self.log_beta = nn.Parameter(torch.tensor(math.log(0.1), dtype=torch.float64))

    def _intervals(self, batch: EventBatch) -> Tensor:
        """``[B, L + 1]`` integrals of the intensity over ``(e_i, e_{i+1}]`` with edges ``t_start, t_1..t_L, t_end``
        (padding sits at ``t_end``: its intervals are empty)."""
        t0 = batch.t_start[:, None]
        edges = torch.cat([t0, batch.time, batch.t_end[:, None]], 1).to(torch.float64)
        a, b = edges[:, :-1], edges[:, 1:]
        length = b - a
        count = torch.arange(a.shape[1], dtype=torch.float64, device=a.device)
        mu, beta = self.log_mu.exp(), self.log_beta.exp()
        live = length > 0
        safe = torch.where(live, length, torch.ones_like(length))  # an empty interval's gradient must stay finite
        log_part = (self.log_rate - beta * count + mu * (b - t0) + torch.log(-torch.expm1(-mu * safe)) - self.log_mu)
        return torch.where(live, log_part.exp(), torch.zeros_like(log_part))

    def log_likelihood(self, batch: EventBatch) -> Tensor:
        """``[B]`` exact: ``sum_n (c + mu (t_n - t_start) - beta N(t_n-)) - int lambda``."""
        self.check_marks(batch)
        n_before = _counts_before(batch, batch.time).to(torch.float64)
        elapsed = batch.time - batch.t_start[:, None]
        log_lam = self.log_rate + self.log_mu.exp() * elapsed - self.log_beta.exp() * n_before
        return torch.where(batch.mask, log_lam, torch.zeros_like(log_lam)).sum(1) - self.compensator(batch)

    def intensity(self, batch: EventBatch, t: Tensor) -> Tensor:
        """``[B, T, 1]`` at ``t [B, T]`` given the events strictly before it."""
        t = t.to(torch.float64)
        n_before = _counts_before(batch, t).to(torch.float64)
        log_lam = self.log_rate + self.log_mu.exp() * (t - batch.t_start[:, None]) - self.log_beta.exp() * n_before
        return log_lam.exp()[..., None]

    def compensator(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        """``[B]`` closed form (``num_points`` accepted for the protocol, unused)."""
        return self._intervals(batch).sum(1)

    def cumulative_intensity(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        """``[B, L, 1]`` closed-form ``Lambda(t_start, t_n]``."""
        return self._intervals(batch).cumsum(1)[:, : batch.time.shape[1], None]

    def sample(self, n: int, t_end: float, history: EventBatch | None = None, generator: Seed = None,
               t_start: float = 0.0, max_events: int = 2_000) -> EventBatch:
        """Thinning (:func:`tpp.sampling.thinning_sample`); the intensity grows between events, and the sampler's
        bound looks at the end of each window too, so it holds."""
        from tpp.sampling import thinning_sample

        return thinning_sample(self, n, t_end, history, generator, t_start, max_events=max_events)[0]

    @torch.no_grad()
    def initialise(self, train: EventBatch) -> "SelfCorrecting":
        """Start at the mean rate ``r`` with a drift balanced by the correction (``mu = beta r``), one event
        lowering the log intensity by one over the mean count per sequence (a mild correction: bursty data
        would otherwise start far from its optimum)."""
        rate = train.num_events / max(float(train.duration.sum()), 1e-300)
        beta = len(train) / max(train.num_events, 1)
        self.log_rate.fill_(math.log(max(rate, 1e-12)))
        self.log_beta.fill_(math.log(beta))
        self.log_mu.fill_(math.log(max(beta * rate, 1e-12)))
        return self


def _make_temporal(name: str, hidden_size: int | None) -> PointProcess:
    from tpp.hawkes import ExpHawkes, Poisson

    if name in NEURAL_TEMPORAL:
        import tpp.neural

        cls = getattr(tpp.neural, NEURAL_TEMPORAL[name])
        return cls(1) if hidden_size is None else cls(1, hidden_size)  # None: the neural model's own default width
    if name == "hawkes":
        return ExpHawkes(1, decay=None)
    if name == "poisson":
        return Poisson(1)
    return SelfCorrecting()


@torch.no_grad()
def _start_temporal(model: PointProcess, train: EventBatch) -> None:
    """A data-dependent start: the Poisson MLE; half the rate as Hawkes baseline with branching 0.5 and decay
    one over the mean gap; the self-correcting start of :meth:`SelfCorrecting.initialise`; a neural model's own
    (its time unit and its rate at the data's average, :meth:`tpp.neural.base.NeuralTPP.initialise`)."""
    from tpp.hawkes import ExpHawkes, Poisson
    from tpp.neural.base import NeuralTPP

    rate = train.num_events / max(float(train.duration.sum()), 1e-300)
    if isinstance(model, Poisson):
        model.log_rate.fill_(math.log(max(rate, 1e-12)))
    elif isinstance(model, ExpHawkes):
        gaps = train.inter_event_times[train.mask]
        gaps = gaps[gaps > 0]
        mean_gap = float(gaps.mean()) if gaps.numel() else 1.0 / max(rate, 1e-12)
        model.log_baseline.fill_(math.log(max(0.5 * rate, 1e-12)))
        model.log_adjacency.fill_(math.log(0.5))
        model.log_decays.fill_(math.log(1.0 / max(mean_gap, 1e-12)))
    elif isinstance(model, (SelfCorrecting, NeuralTPP)):
        model.initialise(train)


# ---------------------------------------------------------------------------------------------- base
class _LocatedProcess(SpatioTemporalProcess):
    """Shared plumbing: a temporal model of the ground process (``time_model``), a location scaler, ties."""

    _head_name = "spatial head"
    #: ``tpp fit``'s learning rate when none is given: a handful of parameters (rates, a decay, mixture weights and
    #: scales) that 1e-3 moves too slowly for a default run (benchmarks/stpp.py trains them at 0.05). A neural ground
    #: process trains at it too: on 400 Pinwheel sequences, 15 epochs, NHP x GMM reached time +0.006 / space -3.575
    #: at 0.05 against -0.018 / -3.808 at 0.01 (the mixture is what 0.01 leaves behind)
    default_lr = 0.05

    def __init__(self, feature_dim: int = 2, hidden_size: int | None = None, temporal: str = "hawkes",
                 location_names: Sequence[str] | None = None, ties: str = "keep") -> None:
        super().__init__()
        self.set_locations(feature_dim, location_names)
        if temporal not in TEMPORAL_MODELS:
            raise ValueError(f"temporal must be one of {list(TEMPORAL_MODELS)}, got {temporal!r}")
        if ties not in TIES:
            raise ValueError(f"ties must be 'keep' (the project's rule: history strictly before t) or 'error', "
                             f"got {ties!r}")
        self.num_marks = 1
        self.hidden_size = hidden_size  # the neural ground process's width; closed forms have no hidden layer
        self.temporal = temporal
        self.ties = ties
        self.time_model = _make_temporal(temporal, hidden_size)
        self.scaler = LocationScaler(self.feature_dim)

    # ------------------------------------------------------------------ checks and views
    def _check(self, batch: EventBatch) -> None:
        """One mark type (the model is of times and locations), and no ties under ``ties="error"``."""
        self.check_marks(batch)
        if self.ties == "error":
            tied = batch.mask[:, 1:] & batch.mask[:, :-1] & (batch.time[:, 1:] == batch.time[:, :-1])
            if bool(tied.any()):
                b, pos = (int(i) for i in tied.nonzero()[0])
                name = b if batch.seq_names is None else batch.seq_names[b]
                raise EventDataError(
                    f"{type(self).__name__}(ties='error'): events {pos} and {pos + 1} of sequence {name} share the "
                    f"time {float(batch.time[b, pos])!r}; pass ties='keep' to score ties by the events strictly before "
                    "them (the project's rule)", sequence=name, position=pos + 1, field="time")

    @staticmethod
    def _ground(batch: EventBatch) -> EventBatch:
        """The times alone (features dropped) for the temporal model."""
        return batch._replace(features=None, feature_names=())

    def _z(self, batch: EventBatch) -> Tensor:
        """``[B, L, D]`` standardised locations."""
        return self.scaler.standardise(self.locations(batch))

    # ------------------------------------------------------------------ protocol
    def log_likelihood_split(self, batch: EventBatch) -> tuple[Tensor, Tensor]:
        """``(time [B], space [B])``: exact temporal log-likelihood, and ``sum_n log f(x_n | t_n, history)``."""
        self._check(batch)
        time = self.time_model.log_likelihood(self._ground(batch))
        space = self._space_log_likelihood(batch)
        return time, space

    def objective(self, batch: EventBatch) -> Tensor:
        """``[B]`` the temporal model's own training objective (the log-likelihood for the closed forms; a neural
        model's cheaper quadrature while training) plus the space log-likelihood."""
        self._check(batch)
        return self.time_model.objective(self._ground(batch)) + self._space_log_likelihood(batch)

    def intensity(self, batch: EventBatch, t: Tensor) -> Tensor:
        """``[B, T, 1]`` the temporal intensity given the events strictly before ``t``."""
        self.check_marks(batch)
        return self.time_model.intensity(self._ground(batch), t)

    def compensator(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        """``[B]`` the temporal model's closed form (a neural model's quadrature, ``num_points`` nodes)."""
        return self.time_model.compensator(self._ground(batch), num_points)

    def cumulative_intensity(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        """``[B, L, 1]`` the temporal model's closed form (a neural model's quadrature, ``num_points`` nodes)."""
        return self.time_model.cumulative_intensity(self._ground(batch), num_points)

    @torch.no_grad()
    def initialise(self, train: EventBatch) -> "_LocatedProcess":
        """Location scaler from the training locations, then the temporal and spatial starts."""
        self._check(train)
        x = self.locations(train)[train.mask]
        self.scaler.fit(x)
        _start_temporal(self.time_model, self._ground(train))
        self._start_head(train)
        return self

    def sample(self, n: int, t_end: float, history: EventBatch | None = None, generator: Seed = None,
               t_start: float = 0.0) -> EventBatch:
        """Times from the temporal model (exact for Poisson and Hawkes, thinning otherwise), then each new
        location in time order from the spatial head given the events strictly before it. The features of the
        result are the location features only."""
        rng = as_numpy_rng(generator)
        names = self._sample_names(history)
        if history is not None:
            self._check(history)
        times = self.time_model.sample(n, t_end, history=None if history is None else self._ground(history),
                                       generator=rng, t_start=t_start)
        B, L = times.time.shape
        D = self.feature_dim
        z = torch.zeros(B, L, D, dtype=torch.float64)
        start = torch.zeros(B, dtype=torch.long)
        if history is not None:
            h = self._z(history).detach().cpu()
            z[:, : h.shape[1]] = torch.where(history.mask.cpu()[..., None], h, torch.zeros_like(h))
            start = history.lengths.cpu()
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        mask, time = times.mask.cpu(), times.time.cpu().to(torch.float64)
        with torch.no_grad():
            for pos in range(int(start.min()) if B else 0, L):
                rows = (mask[:, pos] & (pos >= start)).nonzero()[:, 0]
                if rows.numel():
                    z[rows, pos] = self._draw(time[rows], z[rows], mask[rows], time[rows, pos], gen)
            x = self.scaler.unstandardise(z.to(self.scaler.mean.device)).cpu()
        x = torch.where(mask[..., None], x, torch.zeros_like(x))
        return EventBatch(times.time, times.mark, times.mask, times.t_start, times.t_end, 1, features=x,
                          feature_names=names)

    def _sample_names(self, history: EventBatch | None) -> tuple[str, ...]:
        if self.location_names is not None:
            names = self.location_names
        elif history is not None and history.num_features >= self.feature_dim:
            names = tuple(history.feature_names[: self.feature_dim])
        else:
            names = ("x", "y") if self.feature_dim == 2 else tuple(f"f{d}" for d in range(self.feature_dim))
        if history is not None:
            _warn_dropped_features(tuple(history.feature_names), names, type(self).__name__)
        return names

    # ------------------------------------------------------------------ the head (subclasses)
    @abc.abstractmethod
    def _space_log_likelihood(self, batch: EventBatch) -> Tensor:
        """``[B]`` ``sum_n log f(x_n | t_n, events strictly before t_n)`` in the data's units."""

    @abc.abstractmethod
    def _start_head(self, train: EventBatch) -> None:
        """The spatial part's data-dependent start (after the scaler is set)."""

    @abc.abstractmethod
    def _draw(self, src_t: Tensor, src_z: Tensor, src_mask: Tensor, t: Tensor, gen: torch.Generator) -> Tensor:
        """``[R, D]`` one standardised location per row at ``t [R]`` given the sources strictly before it."""


# ---------------------------------------------------------------------------------------------- GMM
class HawkesGMM(_LocatedProcess):
    """A temporal model (``temporal="hawkes"`` default, ``"poisson"``, ``"self-correcting"``, ``"nhp"``, ``"thp"``)
    x the conditional Gaussian mixture of the module docstring.

    Args:
        feature_dim: ``D``, the number of location coordinates.
        hidden_size: the width of a neural temporal model (default: its class's); unused by the closed forms.
        temporal: the temporal model.
        location_names: the features that are the location (default: the first ``D``).
        ties: ``"keep"`` (history strictly before ``t``) or ``"error"`` (module docstring).

    Parameters (standardised units): ``base_mean [D]``, ``log_base_scale [D]``, ``log_kernel_scale [D]``,
    ``log_tau`` (the time scale of the weights, in the data's time unit), ``base_logit`` (``pi0 = sigmoid``).
    Trained by :meth:`fit` (the one trainer) on the exact log-likelihood (a neural temporal model's on its
    quadrature).
    """

    def __init__(self, feature_dim: int = 2, hidden_size: int | None = None, temporal: str = "hawkes",
                 location_names: Sequence[str] | None = None, ties: str = "keep") -> None:
        super().__init__(feature_dim, hidden_size, temporal, location_names, ties)
        D = self.feature_dim
        self.base_mean = nn.Parameter(torch.zeros(D, dtype=torch.float64))
        self.log_base_scale = nn.Parameter(torch.zeros(D, dtype=torch.float64))
        self.log_kernel_scale = nn.Parameter(torch.full((D,), math.log(0.1), dtype=torch.float64))
        self.log_tau = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.base_logit = nn.Parameter(torch.tensor(-2.0, dtype=torch.float64))

    @torch.no_grad()
    def _start_head(self, train: EventBatch) -> None:
        """Base at the standardised mean and scale (0, 1); components 0.1 wide; ``tau`` the mean positive gap."""
        gaps = train.inter_event_times[train.mask]
        gaps = gaps[gaps > 0]
        self.base_mean.zero_()
        self.log_base_scale.zero_()
        self.log_kernel_scale.fill_(math.log(0.1))
        self.log_tau.fill_(math.log(float(gaps.mean())) if gaps.numel() else 0.0)
        self.base_logit.fill_(-2.0)

    # ------------------------------------------------------------------ the mixture
    def _weights(self, src_t: Tensor, src_mask: Tensor, q_t: Tensor) -> tuple[Tensor, Tensor]:
        """``(log w [B, Q, L], has [B, Q])``: the softmax weights of the sources strictly before each query time
        (``-inf`` elsewhere; finite dummies on rows without history, which the caller discards)."""
        before = src_mask[:, None, :] & (src_t[:, None, :] < q_t[:, :, None])  # [B, Q, L]
        has = before.any(-1)
        logit = -(q_t[:, :, None] - src_t[:, None, :]) * torch.exp(-self.log_tau)
        logit = torch.where(before, logit, torch.full_like(logit, -math.inf))
        logit = torch.where(has[..., None], logit, torch.zeros_like(logit))  # finite where nothing came before
        return torch.log_softmax(logit, -1), has

    def _log_density_z(self, src_t: Tensor, src_z: Tensor, src_mask: Tensor, q_t: Tensor, q_z: Tensor) -> Tensor:
        """``[B, Q, M]`` ``log f(z | q_t, sources strictly before q_t)`` in standardised units; ``q_z [B, Q, M, D]``."""
        log_w, has = self._weights(src_t, src_mask, q_t)
        B, Q, M, D = q_z.shape
        L = src_t.shape[1]
        log_pi, log_rest = F.logsigmoid(self.base_logit), F.logsigmoid(-self.base_logit)
        base = _normal_log_density(q_z, self.base_mean, self.log_base_scale)  # [B, Q, M]
        if L == 0:
            return base
        inv = torch.exp(-self.log_kernel_scale)
        const = -self.log_kernel_scale.sum() - 0.5 * D * math.log(2 * math.pi)
        step = max(1, _BLOCK // max(B * Q * L, 1))
        parts = []
        for m0 in range(0, M, step):  # blocks of query points bound the [B, Q, m, L] temporaries
            qz = q_z[:, :, m0 : m0 + step]
            sq = 0.0
            for d in range(D):  # one coordinate at a time: no [B, Q, m, L, D] tensor
                diff = (qz[..., d, None] - src_z[:, None, None, :, d]) * inv[d]
                sq = sq + diff * diff
            parts.append(_logsumexp(const - 0.5 * sq + log_w[:, :, None, :], -1))
        mixture = torch.cat(parts, 2)
        with_history = torch.logaddexp(log_pi + base, log_rest + mixture)
        return torch.where(has[..., None], with_history, base)

    def _space_log_likelihood(self, batch: EventBatch) -> Tensor:
        z = self._z(batch)
        t = batch.time.to(torch.float64)
        logf = self._log_density_z(t, z, batch.mask, t, z[:, :, None, :])[..., 0] + self.scaler.log_det_inverse()
        return torch.where(batch.mask, logf, torch.zeros_like(logf)).sum(1)

    def spatial_log_density(self, batch: EventBatch, t: Tensor, x: Tensor) -> Tensor:
        """``[B, M]`` ``log f(x | t, events strictly before t)`` in the data's units; ``x [M, D]`` or ``[B, M, D]``."""
        self.check_marks(batch)
        t = torch.as_tensor(t, dtype=torch.float64, device=batch.time.device).reshape(-1)
        x = torch.as_tensor(x, dtype=torch.float64, device=batch.time.device)
        x = x.expand(len(batch), *x.shape) if x.dim() == 2 else x
        q_z = self.scaler.standardise(x)[:, None]  # [B, 1, M, D]
        out = self._log_density_z(batch.time.to(torch.float64), self._z(batch), batch.mask, t[:, None], q_z)
        return out[:, 0] + self.scaler.log_det_inverse()

    def expected_location(self, batch: EventBatch, t: Tensor) -> Tensor:
        """``[B, D]`` closed form: ``pi0 m0 + (1 - pi0) sum_j w_j(t) x_j`` (``m0`` without history)."""
        t = torch.as_tensor(t, dtype=torch.float64, device=batch.time.device).reshape(-1)
        log_w, has = self._weights(batch.time.to(torch.float64), batch.mask, t[:, None])
        z = self._z(batch)
        z = torch.where(batch.mask[..., None], z, torch.zeros_like(z))
        pi = torch.sigmoid(self.base_logit)
        history_mean = torch.einsum("bl,bld->bd", log_w[:, 0].exp(), z)
        mixed = pi * self.base_mean + (1 - pi) * history_mean
        mean = torch.where(has[:, 0, None], mixed, self.base_mean.expand_as(history_mean))
        return self.scaler.unstandardise(mean)

    def _draw(self, src_t: Tensor, src_z: Tensor, src_mask: Tensor, t: Tensor, gen: torch.Generator) -> Tensor:
        """``[R, D]`` one standardised location per row at time ``t [R]`` given the sources strictly before it."""
        log_w, has = self._weights(src_t, src_mask, t[:, None])
        R, D = t.shape[0], self.feature_dim
        eps = torch.randn(R, D, dtype=torch.float64, generator=gen)
        u = torch.rand(R, dtype=torch.float64, generator=gen)
        from_base = ~has[:, 0] | (u < torch.sigmoid(self.base_logit).cpu())
        j = torch.multinomial(log_w[:, 0].exp().clamp_min(0), 1, generator=gen)[:, 0]
        centre = src_z[torch.arange(R), j]
        kernel = centre + self.log_kernel_scale.exp().cpu() * eps
        base = self.base_mean.cpu() + self.log_base_scale.exp().cpu() * eps
        return torch.where(from_base[:, None], base, kernel)


class PoissonGMM(HawkesGMM):
    """:class:`HawkesGMM` with a homogeneous Poisson process in time."""

    def __init__(self, feature_dim: int = 2, hidden_size: int | None = None,
                 location_names: Sequence[str] | None = None, ties: str = "keep") -> None:
        super().__init__(feature_dim, hidden_size, "poisson", location_names, ties)


class SelfCorrectingGMM(HawkesGMM):
    """:class:`HawkesGMM` with a self-correcting process in time."""

    def __init__(self, feature_dim: int = 2, hidden_size: int | None = None,
                 location_names: Sequence[str] | None = None, ties: str = "keep") -> None:
        super().__init__(feature_dim, hidden_size, "self-correcting", location_names, ties)


# ---------------------------------------------------------------------------------------------- KDE
class KDESpatial(_LocatedProcess):
    """A temporal model (``temporal="poisson"`` default, or another of :data:`TEMPORAL_MODELS`) x a Gaussian kernel
    density of the training locations, the same at every time: ``f(x) = mean_c N(x; c, diag(h^2))``.

    ``bandwidth``: ``"cv"`` (default: the multiple of Scott's rule in :data:`BANDWIDTH_GRID` with the best
    leave-one-out log-likelihood of the training locations, chosen by :meth:`initialise`, so every training path
    applies it), ``"scott"`` (``h_d = sigma_d n^(-1/(D+4))`` over the ``n`` centres, standardised units), a
    positive number (that multiple of Scott's rule), or ``"validation"`` (the multiple with the best space
    log-likelihood on ``val``; :meth:`fit` then requires ``val``). ``max_centres``: the centres are the training
    locations, a seeded uniform subsample of ``max_centres`` of them when there are more (with a warning naming
    this argument). The spatial part has no trained parameter.
    """

    BANDWIDTH_GRID = (0.125, 0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0)

    def __init__(self, feature_dim: int = 2, hidden_size: int | None = None, temporal: str = "poisson",
                 bandwidth: float | str = "cv", max_centres: int = 10_000,
                 location_names: Sequence[str] | None = None, ties: str = "keep") -> None:
        super().__init__(feature_dim, hidden_size, temporal, location_names, ties)
        if isinstance(bandwidth, str):
            if bandwidth not in ("cv", "scott", "validation"):
                raise ValueError("bandwidth must be 'cv', 'scott', 'validation' or a positive multiple of Scott's "
                                 f"rule, got {bandwidth!r}")
            factor = 1.0
        else:
            factor = float(bandwidth)
            if not (math.isfinite(factor) and factor > 0):
                raise ValueError(f"bandwidth (a multiple of Scott's rule) must be positive, got {bandwidth!r}")
        if isinstance(max_centres, bool) or not isinstance(max_centres, (int, np.integer)) or max_centres < 1:
            raise ValueError(f"max_centres must be a positive integer, got {max_centres!r}")
        self.bandwidth = bandwidth
        self.max_centres = int(max_centres)
        D = self.feature_dim
        self.register_buffer("centres", torch.zeros(self.max_centres, D, dtype=torch.float64))
        self.register_buffer("centre_mask", torch.zeros(self.max_centres, dtype=torch.bool))
        self.register_buffer("scott", torch.ones(D, dtype=torch.float64))
        self.register_buffer("bandwidth_factor", torch.tensor(factor, dtype=torch.float64))

    @torch.no_grad()
    def _start_head(self, train: EventBatch) -> None:
        z = self._z(train)[train.mask]
        n = z.shape[0]
        if n > self.max_centres:
            warnings.warn(f"KDESpatial: {n} training locations, the kernel density keeps a seeded uniform subsample of "
                          f"max_centres={self.max_centres}; pass a larger max_centres to keep more", UserWarning,
                          stacklevel=4)
            pick = np.sort(np.random.default_rng(0).choice(n, self.max_centres, replace=False))
            z = z[torch.from_numpy(pick).to(z.device)]
        k = z.shape[0]
        self.centres.zero_()
        self.centres[:k] = z
        self.centre_mask.zero_()
        self.centre_mask[:k] = True
        sigma = z.std(0, unbiased=True) if k > 1 else torch.ones(self.feature_dim, dtype=torch.float64)
        sigma = torch.where(torch.isfinite(sigma) & (sigma > 0), sigma, torch.ones_like(sigma))
        self.scott.copy_(sigma * max(k, 1) ** (-1.0 / (self.feature_dim + 4)))
        if self.bandwidth == "cv" and k > 2:
            self.bandwidth_factor.fill_(self._leave_one_out_factor(z))

    #: evaluation points of the leave-one-out choice (a seeded subsample of the centres beyond that)
    CV_POINTS = 2000

    def _leave_one_out_factor(self, centres: Tensor) -> float:
        """The multiple of Scott's rule in :data:`BANDWIDTH_GRID` that maximises ``sum_i log f_{-i}(z_i)`` (the
        density of the other centres at centre ``i``) over up to :data:`CV_POINTS` centres."""
        k, D = centres.shape
        rows = np.arange(k) if k <= self.CV_POINTS else np.sort(np.random.default_rng(1).choice(k, self.CV_POINTS,
                                                                                              replace=False))
        scaled = centres / self.scott
        norms = (scaled * scaled).sum(-1)
        grid = torch.as_tensor(self.BANDWIDTH_GRID, dtype=torch.float64, device=centres.device)
        totals = torch.zeros_like(grid)
        step = max(1, _BLOCK // k)
        for i in range(0, rows.size, step):
            idx = torch.from_numpy(rows[i : i + step]).to(centres.device)
            q = scaled[idx]
            sq = ((q * q).sum(-1, keepdim=True) + norms - 2 * q @ scaled.T).clamp_min(0)  # [E, k], at factor 1
            sq[torch.arange(idx.numel()), idx] = math.inf  # leave the point itself out
            for g, factor in enumerate(self.BANDWIDTH_GRID):
                totals[g] += _logsumexp(-0.5 * sq / factor**2, -1).sum() - idx.numel() * D * math.log(factor)
        return float(grid[int(totals.argmax())])

    def _log_h(self) -> Tensor:
        return (self.scott * self.bandwidth_factor).log()

    def _log_density_z(self, q_z: Tensor) -> Tensor:
        """``[...]`` log kernel density at standardised points ``q_z [..., D]``."""
        shape = q_z.shape[:-1]
        flat = q_z.reshape(-1, self.feature_dim)
        centres = self.centres[self.centre_mask]
        log_h = self._log_h()
        inv = torch.exp(-log_h)
        const = -log_h.sum() - 0.5 * self.feature_dim * math.log(2 * math.pi) - math.log(max(centres.shape[0], 1))
        step = max(1, _BLOCK // max(centres.shape[0], 1))
        scaled = centres * inv
        norms = (scaled * scaled).sum(-1)
        parts = []
        for i in range(0, flat.shape[0], step):
            # |q - c|^2 / h^2 by the expansion (a matrix product); scaled coordinates stay O(10^2), so the
            # cancellation error (1e-16 of |q|^2 + |c|^2) is far below the kernel's resolution
            q = flat[i : i + step] * inv
            sq = ((q * q).sum(-1, keepdim=True) + norms - 2 * q @ scaled.T).clamp_min(0)
            parts.append(_logsumexp(-0.5 * sq, -1) + const)
        out = torch.cat(parts) if parts else flat.new_zeros(0)
        return out.reshape(shape)

    def _space_log_likelihood(self, batch: EventBatch) -> Tensor:
        logf = torch.zeros(batch.time.shape, dtype=torch.float64, device=batch.time.device)
        with torch.no_grad():  # no parameter in the spatial part: no graph to keep; padding is not evaluated
            logf[batch.mask] = self._log_density_z(self._z(batch)[batch.mask]) + self.scaler.log_det_inverse()
        return logf.sum(1)

    def objective(self, batch: EventBatch) -> Tensor:
        """``[B]`` the log-likelihood; while training with gradients, its time part only: the kernel density has no
        parameter, so the space part is a constant of the optimisation (same gradient, no wasted evaluation; the
        trainer's training loss then excludes it, its validation score does not: evaluation is in eval mode)."""
        if self.training and torch.is_grad_enabled():
            self._check(batch)
            return self.time_model.objective(self._ground(batch))
        return self.log_likelihood(batch)

    def spatial_log_density(self, batch: EventBatch, t: Tensor, x: Tensor) -> Tensor:
        """``[B, M]`` the kernel density (the same at every time and history) at ``x [M, D]`` or ``[B, M, D]``."""
        x = torch.as_tensor(x, dtype=torch.float64, device=batch.time.device)
        x = x.expand(len(batch), *x.shape) if x.dim() == 2 else x
        return self._log_density_z(self.scaler.standardise(x)) + self.scaler.log_det_inverse()

    def expected_location(self, batch: EventBatch, t: Tensor) -> Tensor:
        """``[B, D]`` the mean of the centres (every time)."""
        mean = self.centres[self.centre_mask].mean(0) if bool(self.centre_mask.any()) else self.centres[0] * 0
        return self.scaler.unstandardise(mean).expand(len(batch), -1).clone()

    def _draw(self, src_t: Tensor, src_z: Tensor, src_mask: Tensor, t: Tensor, gen: torch.Generator) -> Tensor:
        centres = self.centres[self.centre_mask].cpu()
        pick = torch.randint(0, centres.shape[0], (t.shape[0],), generator=gen)
        eps = torch.randn(t.shape[0], self.feature_dim, dtype=torch.float64, generator=gen)
        return centres[pick] + self._log_h().exp().cpu() * eps

    def fit(self, train: Any, val: Any = None, **trainer_options: Any) -> "KDESpatial":
        """The one trainer for the temporal part; with ``bandwidth="validation"`` the multiple of Scott's rule in
        :data:`BANDWIDTH_GRID` that maximises the space log-likelihood of ``val``."""
        if self.bandwidth == "validation" and val is None:
            raise ValueError("KDESpatial(bandwidth='validation') chooses the bandwidth on validation data: pass val")
        super().fit(train, val, **trainer_options)
        if self.bandwidth == "validation":
            scores = []
            with torch.no_grad():
                for factor in self.BANDWIDTH_GRID:
                    self.bandwidth_factor.fill_(factor)
                    scores.append(float(self._space_log_likelihood(val).sum()))
                self.bandwidth_factor.fill_(self.BANDWIDTH_GRID[int(np.argmax(scores))])
            self.bandwidth_scores_ = dict(zip(self.BANDWIDTH_GRID, scores))
        return self
