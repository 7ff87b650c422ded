"""Count emissions for the latent models of series: a Poisson observation model of spike counts.

The latent models of :mod:`sde.models` (:class:`~sde.models.LatentSDE` and its subclasses) observe
their series through a Gaussian ``x ~ N(W z + c, diag(sigma^2))`` written in
``LatentSDE._reconstruction``. Spike trains binned into counts are not Gaussian: a neuron's count in
a bin of width ``dt`` is ``y ~ Poisson(rate dt)`` with ``log rate = W z + c`` (the log-linear
readout of LFADS and of the Langevin-flow paper). This module writes that emission once:

* :func:`poisson_log_prob`: ``log p(y | mean) = y log mean - mean - log y!`` (equals
  ``scipy.stats.poisson.logpmf``; a non-integer ``y`` is read through ``lgamma``);
* :class:`PoissonEmission`: ``log rate = readout(z)`` (a linear layer, per unit of data time), the bin
  width ``dt`` (the exposure) and the log-probability of a count array;
* :class:`PoissonReconstruction`: a mixin for a latent model built on ``LatentSDE``'s posterior
  machinery. Put before the model class in the bases (``class M(PoissonReconstruction, LatentSDE)``)
  and call :meth:`PoissonReconstruction._register_poisson` in the constructor; it replaces the
  reconstruction term of the bound (``elbo``, ``log_likelihood``, ``score`` then score counts), the
  decoded values (expected counts per bin), draws Poisson counts for ``interpolate(noise=True)`` and
  adds :meth:`~PoissonReconstruction.rates`. ``emission="gaussian"`` leaves ``LatentSDE``'s emission.

``LatentSDE`` itself has no emission argument: its Gaussian reconstruction is a method, so a Poisson
latent SDE is the two-line subclass :class:`sde.models.langevin.PoissonLatentSDE`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from sde.models.heads import GaussianPrediction

if TYPE_CHECKING:
    from sde.models.latent import _Observed, _Paths
    from sde.series import SeriesBatch

__all__ = ["EMISSIONS", "PoissonEmission", "PoissonReconstruction", "check_emission", "poisson_log_prob"]

EMISSIONS = ("poisson", "gaussian")
"""Observation models of the count-capable latent models (the ``emission`` argument)."""


def check_emission(emission: str, owner: str) -> str:
    """``emission`` if it is one of :data:`EMISSIONS`, else a ValueError naming the allowed values."""
    if not isinstance(emission, str) or emission not in EMISSIONS:
        raise ValueError(f"{owner}: emission must be one of {', '.join(map(repr, EMISSIONS))}, got {emission!r}")
    return emission


def check_counts(batch: SeriesBatch) -> None:
    """Refuse a batch whose observed values are not counts (non-negative integers): a Poisson emission would
    otherwise round them, silently, or score a negative value as impossible. The error names the series, row
    and channel of the first offending value."""
    from sde.series import SeriesDataError

    values = batch.values
    observed = ~torch.isnan(values) & batch.mask[..., None]
    bad = observed & ((values < 0) | (values != torch.round(values)))
    if bool(bad.any()):
        b, row, channel = (int(i) for i in bad.nonzero()[0])
        name = batch.seq_names[b] if batch.seq_names is not None else b
        raise SeriesDataError.at(f"a Poisson emission models counts, but channel {channel} holds "
                                 f"{float(values[b, row, channel])!r} (counts are non-negative integers)",
                                 index=b, name=name, position=row, field="values")


def poisson_log_prob(counts: Tensor, log_mean: Tensor) -> Tensor:
    """Elementwise ``log Poisson(counts; exp(log_mean))`` = ``y log mu - mu - lgamma(y + 1)``."""
    return counts * log_mean - log_mean.exp() - torch.lgamma(counts + 1)


class PoissonEmission(nn.Module):
    """``y ~ Poisson(exp(readout(z)) * dt)``: log firing rate linear in the latent state, ``dt`` the bin width.

    ``readout``: the linear layer ``z -> log rate`` (per unit of data time); ``bin_size``: the exposure
    ``dt`` in data time (None: set by the owning model's ``initialise`` from the training rows, see
    :meth:`PoissonReconstruction._register_poisson`).
    """

    def __init__(self, readout: nn.Module, bin_size: float | None = None) -> None:
        super().__init__()
        self.readout = readout
        if bin_size is not None and not (math.isfinite(bin_size) and bin_size > 0):
            raise ValueError(f"bin_size must be a positive number of data time units, got {bin_size!r}")
        self.register_buffer("bin_size", torch.tensor(1.0 if bin_size is None else float(bin_size),
                                                      dtype=torch.float64))

    def log_rate(self, z: Tensor) -> Tensor:
        """``[..., C]`` log firing rate per unit of data time."""
        return self.readout(z)

    def log_mean(self, z: Tensor) -> Tensor:
        """``[..., C]`` log expected count in a bin: ``log rate + log dt``."""
        return self.log_rate(z) + torch.log(self.bin_size).to(z.dtype)

    def log_prob(self, counts: Tensor, z: Tensor) -> Tensor:
        """``[..., C]`` ``log p(counts | z)`` elementwise (no reduction: the caller masks missing values)."""
        return poisson_log_prob(counts, self.log_mean(z))


class PoissonReconstruction:
    """Mixin: the Poisson count emission for a latent model on ``LatentSDE``'s posterior (see the module docstring).

    The host class provides ``decoder`` (the log-rate readout), ``_posterior``, ``channel_mean``,
    ``channel_std`` and ``_Observed``-based faces (``LatentSeriesModel``). With ``poisson_emission`` None
    every method defers to the host (its Gaussian emission).
    """

    # provided by the host class (annotations only: they do not shadow the host's attributes and properties)
    poisson_emission: PoissonEmission | None
    decoder: nn.Linear
    channel_mean: Tensor
    channel_std: Tensor
    time_scale: Tensor
    device: torch.device
    dtype: torch.dtype

    def _register_poisson(self, emission: str, bin_size: float | None) -> None:
        """Build the emission (``"poisson"``: on the host's ``decoder``; ``"gaussian"``: none). ``bin_size``
        None: :meth:`initialise` sets it to the median gap between consecutive training rows."""
        self.emission = check_emission(emission, type(self).__name__)
        self.bin_size = None if bin_size is None else float(bin_size)
        self.poisson_emission = PoissonEmission(self.decoder, bin_size) if emission == "poisson" else None

    @torch.no_grad()
    def initialise(self, train: SeriesBatch) -> Any:
        """The host's standardisation and clock, then the bin width (if not given): the median positive gap
        between consecutive rows of the training series (data time). Refuses values that are not counts."""
        if self.poisson_emission is not None:
            check_counts(train)
        super().initialise(train)  # type: ignore[misc]
        if self.poisson_emission is not None and self.bin_size is None:
            time = train.time.to(torch.float64)
            gaps = time[:, 1:] - time[:, :-1]
            gaps = gaps[train.mask[:, 1:] & train.mask[:, :-1] & (gaps > 0)]
            self.poisson_emission.bin_size.fill_(float(gaps.median()) if gaps.numel() else 1.0)
        if self.poisson_emission is not None and isinstance(getattr(self.decoder, "bias", None), Tensor):
            # start each neuron at its mean training rate (as a GLM's intercept): a random start would
            # cost thousands of nats of reconstruction before the latent can explain anything
            rate = self.channel_mean.to(torch.float64).clamp_min(1e-3) / self.poisson_emission.bin_size
            self.decoder.bias.copy_(rate.log().to(self.decoder.bias))
        return self

    def _raw_values(self, obs: _Observed) -> Tensor:
        """``[B, L, C]`` the observed values in the data's units (0 where missing)."""
        raw = obs.x * self.channel_std + self.channel_mean
        # the standardisation round trip is exact up to rounding; counts are integers
        return torch.where(obs.observed, raw.round(), torch.zeros_like(raw))

    def _reconstruction(self, obs: _Observed, paths: _Paths, num_samples: int) -> Tensor:
        """``[S, B]`` ``sum_i log Poisson(y_i | exp(W z(t_i) + c) dt)`` over the observed counts along each path."""
        if self.poisson_emission is None:
            return super()._reconstruction(obs, paths, num_samples)  # type: ignore[misc]
        B = obs.s.shape[0]
        idx = torch.searchsorted(paths.grid, obs.s.contiguous())
        z = paths.ys.gather(1, idx.repeat(num_samples, 1)[..., None].expand(-1, -1, paths.ys.shape[-1]))
        log_p = self.poisson_emission.log_prob(self._raw_values(obs).repeat(num_samples, 1, 1), z)
        log_p = log_p.reshape(num_samples, B, *obs.x.shape[1:])
        return torch.where(obs.observed, log_p, torch.zeros_like(log_p)).sum((2, 3))

    def _latent_paths(self, obs: _Observed, rel: Tensor, num_samples: int) -> Tensor:
        """``[S, B, T, Dz]`` latent states at model times ``rel [B, T]`` (posterior up to each series' last
        observation, prior after it)."""
        paths = self._posterior(obs, rel, num_samples, logqp=False)
        idx = torch.searchsorted(paths.grid, rel.contiguous()).repeat(num_samples, 1)
        z = paths.ys.gather(1, idx[..., None].expand(-1, -1, paths.ys.shape[-1]))
        return z.reshape(num_samples, rel.shape[0], rel.shape[1], -1)

    def _sample_values(self, obs: _Observed, rel: Tensor, num_samples: int) -> Tensor:
        """Expected counts per bin (standardised, as ``interpolate`` un-standardises) or the host's decoded means."""
        if self.poisson_emission is None:
            return super()._sample_values(obs, rel, num_samples)  # type: ignore[misc]
        mean = self.poisson_emission.log_mean(self._latent_paths(obs, rel, num_samples)).exp()
        return (mean - self.channel_mean) / self.channel_std

    def _times(self, batch: SeriesBatch, t: Tensor | None) -> tuple[_Observed, Tensor]:
        """The batch's observed rows and model times of ``t`` (default each row's time; ``[T]`` or ``[B, T]``)."""
        from sde.models.latent import _Observed

        obs = _Observed(self, batch)
        B = obs.s.shape[0]
        if t is None:
            t = torch.maximum(batch.time.to(device=self.device, dtype=torch.float64), obs.first[:, None])
        t = torch.as_tensor(t, dtype=torch.float64, device=self.device)
        t = t.expand(B, -1) if t.dim() == 1 else t
        rel = (t - obs.first[:, None]) / float(self.time_scale)
        if bool((rel < 0).any()):
            b, j = (int(v) for v in torch.nonzero(rel < 0)[0])
            raise ValueError(f"series {b}: time t[{j}]={float(t[b, j])!r} is before its first observation")
        return obs, rel.to(self.dtype)

    @torch.no_grad()
    def rates(self, batch: SeriesBatch, t: Tensor | None = None, num_samples: int = 20) -> Tensor:
        """``[S, B, T, C]`` firing rates (per unit of data time) at times ``t`` (default each row's time)."""
        if self.poisson_emission is None:
            raise ValueError(f"rates are the Poisson emission's; this {type(self).__name__} has emission="
                             f"{self.emission!r}")
        obs, rel = self._times(batch, t)
        return self.poisson_emission.log_rate(self._latent_paths(obs, rel, int(num_samples))).exp()

    @torch.no_grad()
    def interpolate(self, batch: SeriesBatch, t: Tensor, num_samples: int = 100, noise: bool = False) -> Tensor:
        """The host's ``interpolate``; with the Poisson emission the values are expected counts per bin and
        ``noise=True`` draws the counts themselves."""
        gaussian_noise = noise and self.poisson_emission is None
        x = super().interpolate(batch, t, num_samples, noise=gaussian_noise)  # type: ignore[misc]
        if noise and self.poisson_emission is not None:
            return torch.poisson(x.clamp_min(0))
        return x

    @torch.no_grad()
    def predict(self, batch: SeriesBatch, t: Tensor | None = None, num_samples: int = 100) -> GaussianPrediction:
        """Predictive mean and std ``[B, T, C]`` of the counts (Poisson emission: ``family="poisson"``, std with
        the Poisson variance added to the spread of the expected counts); else the host's prediction."""
        if self.poisson_emission is None:
            return super().predict(batch, t, num_samples)  # type: ignore[misc]
        obs, rel = self._times(batch, t)
        mean = self.poisson_emission.log_mean(self._latent_paths(obs, rel, int(num_samples))).exp()
        expected = mean.mean(0)
        return GaussianPrediction(expected, (mean.var(0, unbiased=False) + expected).sqrt(), family="poisson")
