"""Latent neural SDE for irregular, partly missing time series, trained by its evidence lower bound.

:class:`LatentSDE` (Li, Wong, Chen & Duvenaud, "Scalable Gradients for Stochastic Differential
Equations", AISTATS 2020, Sec. 5): a latent path ``z(t)`` follows the prior SDE
``dz = h(z) dt + g(z) dW``; observations are ``x_i ~ N(decoder(z(t_i)), diag(sigma^2))``. A
posterior SDE ``dz = f(t, z, context) dt + g(z) dW`` shares the diffusion, its drift reads a GRU run
backwards over the observations, and ``z(t_0) ~ q(z_0)``. Girsanov's theorem gives the bound

    log p(x) >= E_q[ sum_i log p(x_i | z(t_i)) - int 1/2 |u(t)|^2 dt ] - KL(q(z_0) || p(z_0)),
    u = (f - h) / g,

whose path term is accumulated by the solve (``logqp=True`` in :func:`sde.solvers.solve`). The
posterior drift is the prior drift plus a learned correction that starts at zero, so an untrained
posterior is the prior and pays no path KL.

The SDE is discretised with Euler-Maruyama (``method`` can choose another torchsde scheme) on a
fixed grid of ``step_size`` in model time (time divided by ``time_scale``, set by ``initialise`` from
the training data). With Euler the path KL the solver accumulates, ``sum 1/2 |u|^2 dt``, is exactly
the KL between the posterior's and the prior's Gaussian transitions (both have covariance
``g^2 dt``), so the bound holds for the discretised model itself, and the importance-weighted
estimate of :meth:`LatentSDE.log_likelihood` weighs each path by the exact density ratio of the two
chains (:class:`sde.models._posterior.WeightedPosterior`).

The SDE-driven Cox process that shares these pieces lives in :mod:`sde.models.cox`.
"""

from __future__ import annotations

import abc
import math
import warnings
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sde.models._base import seeded
from sde.models._posterior import (
    HALF_LOG_2PI,
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
from sde.models.heads import GaussianPrediction
from sde.solvers import Backprop, Method
from tpp.model import Model, Seed
from tpp.options import Interval, check_params, check_size

if TYPE_CHECKING:
    from sde.series import SeriesBatch

__all__ = ["LatentSDE"]

IMPORTANCE_SAMPLES = 64
"""Default number of posterior paths of :meth:`LatentSDE.log_likelihood` and :meth:`LatentSDE.score`."""


def _inverse_softplus(y: Tensor) -> Tensor:
    return y + torch.log(-torch.expm1(-y))


def __getattr__(name: str) -> Any:
    # NeuralCox lived here before it moved to sde.models.cox: old imports keep working
    if name in ("NeuralCox", "NeuralCoxSDE"):
        from sde.models import cox

        return getattr(cox, name)
    raise AttributeError(f"module 'sde.models.latent' has no attribute {name!r}")


class _Start(NamedTuple):
    """What every posterior solve of the latent family begins with (:meth:`LatentSDE._posterior_start`): the
    encoder's ``context [B, L, X]``, the initial states ``z0 [S*B, Z]`` and their term (KL ``[B]`` or sampled log
    ratio ``[S, B]``), the solve ``grid [T]``, each series' observation ``times`` (inf where none) and ``last``
    time, and a zero path term ``[S*B]``."""

    context: Tensor
    z0: Tensor
    initial: Tensor
    grid: Tensor
    times: Tensor
    last: Tensor
    no_path: Tensor


class _Paths(NamedTuple):
    """Posterior paths of a batch: ``ys [S*B, T, D]`` on ``grid [T]``, the path term ``[S*B]`` (the
    expected log ratio, i.e. path KL, or the sampled one) and the initial term (``KL(q(z_0)||p(z_0))
    [B]``, or the sampled log ratio ``[S, B]``)."""

    grid: Tensor
    ys: Tensor
    path: Tensor
    initial: Tensor


# ---------------------------------------------------------------------------------------------- posterior
class _SeriesPosterior(Posterior):
    """Posterior SDE of :class:`LatentSDE` for one batch of ``N = S * B`` paths.

    At time ``t`` the drift reads the context of the first observation after ``t`` (the backward
    GRU's summary of everything from there on) and the time left until it. After a series' last
    observation the posterior drift is the prior drift: nothing is left to condition on, and the
    path KL stops growing, so a series' bound does not depend on how long the others are.
    """

    def __init__(self, model: LatentSDE, context: Tensor, times: Tensor, last: Tensor) -> None:
        super().__init__(model)
        self.context, self.times, self.last = context, times, last  # [N, L, X], [N, L] (inf padded), [N]

    def f(self, t: Tensor, z: Tensor) -> Tensor:
        N, L = self.times.shape
        t_col = t.reshape(1, 1).to(self.times.dtype).expand(N, 1).contiguous()
        idx = torch.searchsorted(self.times, t_col, right=True).clamp_max(L - 1)  # first observation after t
        ctx = self.context.gather(1, idx[..., None].expand(N, 1, self.context.shape[-1]))[:, 0]
        ahead = (self.times.gather(1, idx) - t_col).clamp(0, 1e6).to(z.dtype)
        prior = self._prior(t, z)
        correction = self.model.posterior_drift(torch.cat([z, ctx, ahead], -1))
        return prior + torch.where(t_col < self.last[:, None], correction, torch.zeros_like(correction))


class _Observed:
    """Observed rows of a series batch, compacted: rows with no observed channel are dropped."""

    def __init__(self, model: LatentSDE, batch: SeriesBatch) -> None:
        dtype, device = model.dtype, model.device
        values = batch.values.to(device)
        if values.dim() != 3 or values.shape[-1] != model.num_channels:
            raise ValueError(f"values must be [B, L, {model.num_channels}], got {tuple(values.shape)}")
        time = batch.time.to(device=device, dtype=torch.float64)
        keep = batch.mask.to(device) & ~torch.isnan(values).all(-1)
        # Stable sort moves kept rows first, in their order: padding and all-missing rows go last.
        order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
        keep = keep.gather(1, order)
        self.lengths = keep.sum(1)
        L = max(int(self.lengths.max()) if keep.numel() else 0, 1)
        order, keep = order[:, :L], keep[:, :L]
        time = time.gather(1, order)
        values = values.gather(1, order[..., None].expand(-1, -1, values.shape[-1]))
        self.keep = keep
        self.first = torch.where(self.lengths > 0, time[:, 0], torch.zeros_like(time[:, 0]))
        scale = float(model.time_scale)
        self.s64 = torch.where(keep, (time - self.first[:, None]) / scale, torch.zeros_like(time))
        self.s = self.s64.to(dtype)
        self.observed = keep[..., None] & ~torch.isnan(values)
        standard = (values.to(dtype) - model.channel_mean) / model.channel_std
        self.x = torch.where(self.observed, standard, torch.zeros_like(standard))
        last_idx = (self.lengths - 1).clamp_min(0)
        self.last = self.s.gather(1, last_idx[:, None])[:, 0]

    def features(self) -> Tensor:
        """Encoder input ``[B, L, 2C + 2]``: values (0 where missing), observed flags, time, gap."""
        gap = torch.diff(self.s, dim=1, prepend=self.s[:, :1])
        return torch.cat([self.x, self.observed.to(self.x.dtype), self.s[..., None], gap[..., None]], -1)


class LatentSeriesModel(Model):
    """What the latent models of series values share (:class:`LatentSDE`, :class:`~sde.models.LatentODE`):
    the value standardisation and the clock (:meth:`initialise`), the Gaussian observation noise, and the
    sampling faces (:meth:`interpolate`, :meth:`forecast`, :meth:`predict`), written once. A subclass sets
    ``decoder`` (``nn.Linear(latent, channels)``), calls :meth:`_register_values` in its constructor and
    implements :meth:`_sample_values`.
    """

    num_channels: int
    decoder: nn.Linear

    def _register_values(self, num_channels: int, noise_init: float, learn_noise: bool = True) -> None:
        """The observation noise (a softplus of ``raw_noise``, in standardised units) and the standardisation
        buffers: channel means and scales, and ``time_scale`` (data time per model time)."""
        raw = _inverse_softplus(torch.full((num_channels,), float(noise_init)))
        if learn_noise:
            self.raw_noise = nn.Parameter(raw)
        else:
            self.register_buffer("raw_noise", raw)
        self.register_buffer("channel_mean", torch.zeros(num_channels))
        self.register_buffer("channel_std", torch.ones(num_channels))
        self.register_buffer("time_scale", torch.tensor(1.0, dtype=torch.float64))

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.decoder.weight.device

    @property
    def noise_std(self) -> Tensor:
        """``[C]`` observation noise standard deviation in the units of the data."""
        return F.softplus(self.raw_noise) * self.channel_std

    @torch.no_grad()
    def initialise(self, train: SeriesBatch) -> LatentSeriesModel:
        """Channel means and scales over the observed training values; ``time_scale`` = median span."""
        values = train.values.to(torch.float64)
        observed = train.mask[..., None] & ~torch.isnan(values)
        count = observed.sum((0, 1))
        empty = torch.nonzero(count == 0).flatten().tolist()
        if empty:
            # A small subset of a sparse data set (PhysioNet: a rare laboratory value) can leave a channel without
            # a single training value. It adds nothing to the ELBO; its values stay in the data's units (mean 0,
            # scale 1) and its predictions are the model's prior for it: said, not hidden.
            names = getattr(train, "channel_names", None)
            labels = [f"{c} ({names[c]})" if names else str(c) for c in empty]
            warnings.warn(f"channel(s) {', '.join(labels)} have no observed training value: left unstandardised "
                          "(mean 0, scale 1); their predictions are the model's prior, not learned from data",
                          stacklevel=2)
        filled = torch.where(observed, values, torch.zeros_like(values))
        mean = filled.sum((0, 1)) / count.clamp_min(1)
        var = (torch.where(observed, values - mean, torch.zeros_like(values)) ** 2).sum((0, 1)) / count.clamp_min(2)
        std = torch.where(count > 0, var.sqrt().clamp_min(1e-6), torch.ones_like(var))
        self.channel_mean.copy_(mean.to(self.channel_mean.dtype))
        self.channel_std.copy_(std.to(self.channel_std.dtype))
        rows = train.mask & ~torch.isnan(values).all(-1)
        time = train.time.to(torch.float64)
        first = torch.where(rows, time, torch.full_like(time, math.inf)).min(1).values
        last = torch.where(rows, time, torch.full_like(time, -math.inf)).max(1).values
        spans = (last - first)[torch.isfinite(last - first) & (last > first)]
        self.time_scale.fill_(float(spans.median()) if spans.numel() else 1.0)
        return self

    def fit_standardisation(self, train: SeriesBatch) -> LatentSeriesModel:
        """Old name of :meth:`initialise` (kept so existing code runs)."""
        return self.initialise(train)

    @abc.abstractmethod
    def _sample_values(self, obs: _Observed, rel: Tensor, num_samples: int) -> Tensor:
        """``[S, B, T, C]`` decoded means (standardised units, no observation noise) at model times ``rel [B, T]``
        (time since each series' first observation over ``time_scale``)."""

    @torch.no_grad()
    def predict(self, batch: SeriesBatch, t: Tensor | None = None, num_samples: int = 100) -> GaussianPrediction:
        """Predictive mean and std ``[B, T, C]`` of the series at absolute times ``t`` (``[T]`` or
        ``[B, T]``; default each row's time, from the series' first observation on), from
        ``num_samples`` samples with the observation noise (see :meth:`interpolate`)."""
        if t is None:
            first = _Observed(self, batch).first
            t = torch.maximum(batch.time.to(device=self.device, dtype=torch.float64), first[:, None])
        x = self.interpolate(batch, t, num_samples, noise=True)
        return GaussianPrediction(x.mean(0), x.std(0, unbiased=False))

    @torch.no_grad()
    def interpolate(self, batch: SeriesBatch, t: Tensor, num_samples: int = 100, noise: bool = False) -> Tensor:
        """``[S, B, T, C]`` samples of the series at absolute times ``t`` (``[T]`` or ``[B, T]``), in the data's
        units (``noise=True`` adds the observation noise). Times after a series' last observation are
        forecasts; times before its first are refused (the model's clock starts there)."""
        obs = _Observed(self, batch)
        B = obs.s.shape[0]
        t = torch.as_tensor(t, dtype=torch.float64, device=self.device)
        t = t.expand(B, -1) if t.dim() == 1 else t
        if t.dim() != 2 or t.shape[0] != B:
            raise ValueError(f"t must be [T] or [B={B}, T], got {tuple(t.shape)}")
        rel = (t - obs.first[:, None]) / float(self.time_scale)
        bad = torch.nonzero(rel < 0)
        if bad.numel():
            b, j = (int(v) for v in bad[0])
            raise ValueError(f"series {b}: time t[{j}]={float(t[b, j])!r} is before its first observation "
                             f"{float(obs.first[b])!r}")
        x = self._sample_values(obs, rel.to(self.dtype), check_num_samples(num_samples))
        if noise:
            x = x + F.softplus(self.raw_noise) * torch.randn_like(x)
        return x * self.channel_std + self.channel_mean

    def forecast(self, batch: SeriesBatch, t_future: Tensor, num_samples: int = 100, noise: bool = False) -> Tensor:
        """``[S, B, T, C]`` samples at times ``t_future`` at or after each series' last observation."""
        obs = _Observed(self, batch)
        t = torch.as_tensor(t_future, dtype=torch.float64, device=self.device)
        t = t.expand(len(obs.lengths), -1) if t.dim() == 1 else t
        last = obs.first + obs.s64.gather(1, (obs.lengths - 1).clamp_min(0)[:, None])[:, 0] * float(self.time_scale)
        bad = torch.nonzero(t < last[:, None])
        if bad.numel():
            b, j = (int(v) for v in bad[0])
            raise ValueError(f"series {b}: t_future[{j}]={float(t[b, j])!r} is before its last observation "
                             f"{float(last[b])!r}")
        return self.interpolate(batch, t, num_samples, noise)


class LatentSDE(LatentSeriesModel):
    """Latent SDE for irregular, partly missing multivariate time series (Li et al. 2020).

    * encoder: a GRU run backwards over each series' observed rows (values with NaN set to 0,
      observed flags, time, gap) gives a context per observation;
    * ``q(z_0) = N(mu, sigma^2)`` from the context of the first observation; ``p(z_0)`` learnable;
    * posterior drift ``f = h(z) + MLP(z, context, time to the next observation)``, prior drift
      ``h(z)`` (autonomous), shared diagonal diffusion ``g(z)`` (:class:`DiagonalDiffusion`); after
      a series' last observation the posterior is the prior (no path KL accrues there);
    * observations ``x ~ N(W z + c, diag(sigma_c^2))`` with a learnable noise per channel
      (softplus, starting at ``noise_init`` standard deviations); a NaN value is skipped in the
      reconstruction term, and a row with no value at all is dropped.

    Each series is modelled in its own clock: model time is ``(t - t_first) / time_scale`` with
    ``t_first`` the series' first observed time. :meth:`initialise` (called once by the trainer)
    sets ``time_scale`` (median span of the training series) and per-channel means and scales;
    densities are always of the raw values.

    The contract (:class:`tpp.model.Model`): :meth:`elbo` is the bound and the training
    :meth:`objective` (``num_samples`` posterior paths per series, the constructor's setting for
    training); :meth:`log_likelihood` is an importance-weighted estimate of ``log p(x)`` (its number
    of paths an argument); :meth:`score` its mean per row; :meth:`predict` the predictive mean and
    std of the series at given times; :meth:`interpolate` / :meth:`forecast` the samples.
    ``step_size`` is the Euler step in model time (default 0.02: 50 steps over a typical series);
    the latent at an observation is interpolated linearly between steps. ``prior_drift`` and
    ``diffusion`` take modules ``(t, z) -> [N, D]`` to replace the default networks (e.g. a linear
    drift for an OU prior; the diffusion must stay positive and diagonal).
    """

    _constraints = {**{name: Interval(1, None, integer=True)
                       for name in ("num_channels", "latent_size", "hidden_size", "context_size", "num_samples")},
                    "step_size": Interval(0, None, closed="neither")}

    def __init__(
        self,
        num_channels: int,
        latent_size: int = 4,
        hidden_size: int = 32,
        context_size: int = 16,
        *,
        num_samples: int = 1,
        step_size: float = 0.02,
        method: Method = Method.EULER,
        backprop: Backprop = Backprop.DIRECT,
        noise_init: float = 0.5,
        prior_drift: nn.Module | None = None,
        diffusion: nn.Module | None = None,
    ) -> None:
        super().__init__()
        check_params(self, num_channels=num_channels, latent_size=latent_size, hidden_size=hidden_size,
                     context_size=context_size, num_samples=num_samples, step_size=step_size)
        self.num_channels, self.latent_size = int(num_channels), int(latent_size)
        self.num_samples, self.step_size = int(num_samples), float(step_size)
        self.method, self.backprop = method, backprop
        # ints from here on (torch refuses NumPy integers and integral floats as sizes), of a size that fits
        num_channels, latent_size = self.num_channels, self.latent_size
        hidden_size, context_size = int(hidden_size), int(context_size)
        check_size(self, (max(2 * num_channels + 2, latent_size + context_size + 1, hidden_size), hidden_size),
                   f"num_channels={num_channels}, latent_size={latent_size}, hidden_size={hidden_size}, "
                   f"context_size={context_size}")
        check_size(self, (2 * latent_size, context_size), f"latent_size={latent_size}, context_size={context_size}")
        self.encoder = BackwardEncoder(2 * num_channels + 2, hidden_size, context_size)
        self.qz0 = nn.Linear(context_size, 2 * latent_size)
        self.pz0_mean = nn.Parameter(torch.zeros(latent_size))
        self.pz0_log_std = nn.Parameter(torch.zeros(latent_size))
        self.posterior_drift = mlp(latent_size + context_size + 1, hidden_size, latent_size, zero_last=True)
        self.prior_drift = prior_drift if prior_drift is not None else DriftNet(latent_size, hidden_size)
        self.diffusion = diffusion if diffusion is not None else DiagonalDiffusion(latent_size)
        self.decoder = nn.Linear(latent_size, num_channels)
        self._register_values(num_channels, noise_init)

    # ------------------------------------------------------------------ the posterior
    def _posterior_start(self, obs: _Observed, extra: Tensor | None, num_samples: int, weights: bool,
                         state_size: int) -> _Start:
        """The shared beginning of every posterior solve (here and in the subclasses that replace the solve):
        encode, draw ``z0 [S*B, state_size]`` from ``q(z_0)`` with its KL or sampled log ratio, and the grid: the
        union of the observation times, 0 and ``extra``."""
        B = obs.s.shape[0]
        context = self.encoder(obs.features(), obs.lengths)  # [B, L, X]
        mean_q, log_std_q = self.qz0(context[:, 0]).chunk(2, -1)
        eps = torch.randn(num_samples, B, state_size, dtype=self.dtype, device=self.device)
        z0 = mean_q + log_std_q.exp() * eps  # [S, B, Z]
        if weights:
            initial = gaussian_log_ratio(z0, mean_q, log_std_q, self.pz0_mean, self.pz0_log_std)
        else:
            initial = gaussian_kl(mean_q, log_std_q, self.pz0_mean, self.pz0_log_std)
        z0 = z0.reshape(num_samples * B, state_size)
        parts = [obs.s[obs.keep], torch.zeros(1, dtype=self.dtype, device=self.device)]
        if extra is not None:
            parts.append(extra.reshape(-1))
        grid = torch.unique(torch.cat(parts))
        times = torch.where(obs.keep, obs.s, torch.full_like(obs.s, math.inf))
        last = torch.where(obs.lengths > 0, obs.last, torch.zeros_like(obs.last))
        no_path = torch.zeros(z0.shape[0], dtype=self.dtype, device=self.device)
        return _Start(context, z0, initial, grid, times, last, no_path)

    def _posterior(self, obs: _Observed, extra: Tensor | None, num_samples: int, weights: bool = False,
                   logqp: bool = True) -> _Paths:
        """Sample ``num_samples`` posterior paths per series on the union of the observation times
        (and ``extra [B, T]`` model times). The path and initial terms are the KLs (``logqp``), the
        sampled log ratios (``weights``, for importance weights), or zeros (neither)."""
        context, z0, initial, grid, times, last, no_path = self._posterior_start(obs, extra, num_samples, weights,
                                                                                self.latent_size)
        if grid.numel() == 1:  # every series has a single observation at its own time 0
            return _Paths(grid, z0[:, None], no_path, initial)
        system = _SeriesPosterior(self, context.repeat(num_samples, 1, 1), times.repeat(num_samples, 1),
                                  last.repeat(num_samples))
        if weights:
            y0 = torch.cat([z0, no_path[:, None]], -1)
            ys = solve_fixed(WeightedPosterior(system), y0, grid, step_size=self.step_size, method=Method.EULER,
                             backprop=self.backprop).ys
            return _Paths(grid, ys[..., :-1], ys[:, -1, -1], initial)
        solution = solve_fixed(system, z0, grid, step_size=self.step_size, method=self.method,
                               backprop=self.backprop, logqp=logqp)
        return _Paths(grid, solution.ys, solution.logqp if logqp else no_path, initial)

    def _reconstruction(self, obs: _Observed, paths: _Paths, num_samples: int) -> Tensor:
        """``[S, B]`` ``sum_i log N(x_i | W z(t_i) + c, sigma^2)`` of the raw observed values along each path."""
        B = obs.s.shape[0]
        idx = torch.searchsorted(paths.grid, obs.s.contiguous())
        z = paths.ys.gather(1, idx.repeat(num_samples, 1)[..., None].expand(-1, -1, paths.ys.shape[-1]))  # [S*B, L, D]
        mean = self.decoder(z).reshape(num_samples, B, *obs.x.shape[1:])
        sigma = F.softplus(self.raw_noise)
        # density of the raw value: the standardised one's divided by the channel scale
        log_px = -0.5 * ((obs.x - mean) / sigma) ** 2 - torch.log(sigma * self.channel_std) - HALF_LOG_2PI
        return torch.where(obs.observed, log_px, torch.zeros_like(log_px)).sum((2, 3))

    # ------------------------------------------------------------------ bound and estimate
    def elbo(self, batch: SeriesBatch, num_samples: int | None = None) -> Tensor:
        """``[B]`` ELBO of each series: a Monte Carlo lower bound on ``log p(x)``.

        ``E_q[sum_i log N(x_i | W z(t_i) + c, sigma^2)] - E_q[path KL] - KL(q(z_0) || p(z_0))``, the
        expectation over ``num_samples`` posterior paths (default: the constructor's ``num_samples``);
        missing values are skipped, a series with no observation scores 0.
        """
        S = self.num_samples if num_samples is None else check_num_samples(num_samples)
        obs = _Observed(self, batch)
        B = obs.s.shape[0]
        paths = self._posterior(obs, None, S)
        recon = self._reconstruction(obs, paths, S)
        elbo = (recon - paths.path.reshape(S, B)).mean(0) - paths.initial
        return torch.where(obs.lengths > 0, elbo, torch.zeros_like(elbo))

    def objective(self, batch: SeriesBatch) -> Tensor:
        """``[B]`` the training objective: :meth:`elbo` with the constructor's ``num_samples``."""
        return self.elbo(batch)

    def log_likelihood(self, batch: SeriesBatch, num_samples: int = IMPORTANCE_SAMPLES) -> Tensor:
        """``[B]`` importance-weighted estimate of ``log p(x)`` with ``num_samples`` posterior paths.

        ``log (1/K) sum_k p(x, z_k) / q(z_k | x)`` (Burda et al. 2016) with the exact density ratio of
        the posterior's and the prior's Euler chains along each path; a lower bound in expectation,
        at least the ELBO and tightening to ``log p(x)`` as ``num_samples`` grows (a consistent
        estimate, not an exact value). Needs ``method=Method.EULER`` (the ratio of another scheme's
        transitions is not Gaussian).
        """
        if self.method is not Method.EULER:
            raise ValueError(f"the importance weights are exact for Euler-Maruyama steps only; this model solves "
                             f"with {self.method}: use elbo, or build the model with method=Method.EULER")
        S = check_num_samples(num_samples)
        obs = _Observed(self, batch)
        B = obs.s.shape[0]
        paths = self._posterior(obs, None, S, weights=True)
        log_w = self._reconstruction(obs, paths, S) - paths.path.reshape(S, B) - paths.initial
        estimate = importance_weighted(log_w)
        return torch.where(obs.lengths > 0, estimate, torch.zeros_like(estimate))

    @torch.no_grad()
    def score(self, data: SeriesBatch, num_samples: int = IMPORTANCE_SAMPLES, seed: Seed = 0) -> float:
        """Mean importance-weighted log-likelihood per row (nats, higher is better; see
        :meth:`log_likelihood`). ``seed`` fixes the paths (None: fresh noise)."""
        with seeded(seed, self.device):
            return float(self.log_likelihood(data, num_samples).sum()) / max(data.num_events, 1)

    # ------------------------------------------------------------------ predictions
    def _sample_values(self, obs: _Observed, rel: Tensor, num_samples: int) -> Tensor:
        """Posterior paths up to each series' last observation and the prior after it (the posterior drift
        equals the prior drift from there on), so times past the end are forecasts; decoded at ``rel``."""
        paths = self._posterior(obs, rel, num_samples, logqp=False)
        idx = torch.searchsorted(paths.grid, rel.contiguous()).repeat(num_samples, 1)
        z = paths.ys.gather(1, idx[..., None].expand(-1, -1, paths.ys.shape[-1]))
        return self.decoder(z).reshape(num_samples, rel.shape[0], rel.shape[1], -1)

