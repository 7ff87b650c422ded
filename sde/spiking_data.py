"""Spiking populations for the latent models of neural activity: a Lorenz-driven simulation, binned recordings,
and the two scores of the field (firing-rate R^2, bits per spike).

* :func:`lorenz_spikes`: the synthetic benchmark of LFADS (Pandarinath et al. 2018) and of the Langevin-flow
  paper: a Lorenz attractor drives a population of Poisson neurons with log-linear rates;
* :func:`to_series`: counts ``[trials, bins, neurons]`` as a :class:`~sde.series.SeriesBatch`;
* :func:`grasshopper_counts`: the registry's ``grasshopper_spikes_nitime`` event data (two recordings of an
  auditory receptor neuron, 10 s each) binned into counts and cut into trials;
* :func:`rate_r2` and :func:`bits_per_spike` (the Neural Latents Benchmark's co-smoothing score).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

if TYPE_CHECKING:
    from sde.series import SeriesBatch

__all__ = ["LORENZ", "SpikingData", "bits_per_spike", "grasshopper_counts", "lorenz_spikes", "rate_r2", "to_series"]

LORENZ = {"sigma": 10.0, "rho": 28.0, "beta": 8.0 / 3.0}
"""The classic chaotic Lorenz parameters."""


class SpikingData(NamedTuple):
    """``counts [trials, bins, neurons]`` (float64 integers), ``times [bins]`` (bin centres, seconds), ``rates``
    (the true firing rates, spikes per second, ``[trials, bins, neurons]``)."""

    counts: np.ndarray
    times: np.ndarray
    rates: np.ndarray


def _lorenz_rk4(z: np.ndarray, dt: float, steps: int) -> np.ndarray:
    """``[steps + 1, N, 3]`` RK4 path of the Lorenz system from ``z [N, 3]``."""
    s, r, b = LORENZ["sigma"], LORENZ["rho"], LORENZ["beta"]

    def f(x: np.ndarray) -> np.ndarray:
        u, v, w = x[:, 0], x[:, 1], x[:, 2]
        return np.stack([s * (v - u), u * (r - w) - v, u * v - b * w], 1)

    out = [z]
    for _ in range(steps):
        k1 = f(z)
        k2 = f(z + 0.5 * dt * k1)
        k3 = f(z + 0.5 * dt * k2)
        k4 = f(z + dt * k3)
        z = z + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(z)
    return np.stack(out)


def lorenz_spikes(n_trials: int = 200, n_neurons: int = 50, n_bins: int = 100, bin_size: float = 0.01,
                  seed: int = 0, *, base_rate: float = 15.0, gain: float = 1.0, lorenz_time: float = 1.0,
                  substeps: int = 4) -> SpikingData:
    """A Lorenz-driven Poisson population.

    Latent: the Lorenz system (sigma = 10, rho = 28, beta = 8/3) integrated by RK4 with ``substeps`` steps per
    bin; each trial starts at an independent point on the attractor (a uniform start in ``[-15, 15]^2 x
    [10, 40]`` run for 5 Lorenz time units) and spans ``lorenz_time`` Lorenz time units over its ``n_bins`` bins
    (1.0: about one turn around a wing). The three coordinates are standardised by the attractor's long-run
    mean and standard deviation (x, y: mean 0, std 7.9 / 9.0; z: mean 23.5, std 8.6).
    Rates: ``log rate = log(base_rate) + gain * C z`` with ``C [neurons, 3]`` i.i.d. ``N(0, 1/3)`` (so each
    neuron's log rate has standard deviation about ``gain``), spikes per second; counts ``Poisson(rate *
    bin_size)`` per bin. Everything is drawn from ``numpy.random.default_rng(seed)``.
    """
    for name, value in (("n_trials", n_trials), ("n_neurons", n_neurons), ("n_bins", n_bins)):
        if int(value) != value or value < 1:
            raise ValueError(f"lorenz_spikes: {name} must be an integer >= 1, got {value!r}")
    for name, value in (("bin_size", bin_size), ("base_rate", base_rate), ("lorenz_time", lorenz_time)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"lorenz_spikes: {name} must be a positive number, got {value!r}")
    rng = np.random.default_rng(seed)
    start = np.column_stack([rng.uniform(-15, 15, (n_trials, 2)), rng.uniform(10, 40, n_trials)])
    burn_dt = 0.005
    start = _lorenz_rk4(start, burn_dt, int(5.0 / burn_dt))[-1]
    dt = lorenz_time / (n_bins * substeps)
    path = _lorenz_rk4(start, dt, n_bins * substeps)  # [n_bins * substeps + 1, N, 3]
    # the latent at each bin's centre: the path at the middle substep of the bin (substeps even) or the mean
    centres = path[1:].reshape(n_bins, substeps, n_trials, 3).mean(1).transpose(1, 0, 2)  # [N, bins, 3]
    latent = (centres - np.array([0.0, 0.0, 23.5])) / np.array([7.9, 9.0, 8.6])
    C = rng.normal(0.0, 1.0 / math.sqrt(3.0), (n_neurons, 3))
    rates = base_rate * np.exp(gain * latent @ C.T)
    counts = rng.poisson(rates * bin_size).astype(np.float64)
    times = (np.arange(n_bins) + 0.5) * bin_size
    return SpikingData(counts, times, rates)


def to_series(counts: np.ndarray, times: np.ndarray) -> SeriesBatch:
    """``counts [trials, bins, neurons]`` at ``times [bins]`` (or ``[trials, bins]``) as a full SeriesBatch."""
    from sde.series import SeriesBatch

    values = torch.as_tensor(np.asarray(counts, dtype=np.float64))
    time = torch.as_tensor(np.asarray(times, dtype=np.float64))
    time = time.expand(values.shape[0], -1).clone() if time.dim() == 1 else time
    return SeriesBatch(time, values, torch.ones(values.shape[:2], dtype=torch.bool))


def grasshopper_counts(bin_size: float = 0.01, window: float = 1.0) -> SeriesBatch:
    """The registry's ``grasshopper_spikes_nitime`` binned into counts: each recording's ``[0, 10]`` s window
    is cut into bins of ``bin_size`` seconds (default 10 ms) and the bins into trials of ``window`` seconds
    (default 1 s: 100 bins, 20 trials over the two recordings, recording by recording in order). One channel
    (the neuron); bin ``k`` of a trial counts the spikes in ``[k dt, (k + 1) dt)`` and sits at its centre."""
    import tpp.datasets

    per_trial = int(round(window / bin_size))
    if per_trial < 1 or not math.isclose(per_trial * bin_size, window, rel_tol=1e-9):
        raise ValueError(f"grasshopper_counts: window={window!r} must be a whole number of bins of {bin_size!r}")
    events = tpp.datasets.load("grasshopper_spikes_nitime")
    trials = []
    for i in range(events.time.shape[0]):
        t0, t1 = float(events.t_start[i]), float(events.t_end[i])
        n_trials = int((t1 - t0 + 1e-9) // window)
        spikes = events.time[i][events.mask[i]].numpy() - t0
        edges = np.arange(n_trials * per_trial + 1) * bin_size
        counts, _ = np.histogram(spikes, bins=edges)
        trials.append(counts.reshape(n_trials, per_trial, 1))
    counts = np.concatenate(trials).astype(np.float64)
    return to_series(counts, (np.arange(per_trial) + 0.5) * bin_size)


def rate_r2(predicted: np.ndarray, true: np.ndarray) -> float:
    """``1 - SS_res / SS_tot`` of firing rates ``[..., neurons]``, each neuron centred by its own mean (the
    variance-weighted R^2 over neurons)."""
    predicted, true = np.asarray(predicted, dtype=np.float64), np.asarray(true, dtype=np.float64)
    flat_p, flat_t = predicted.reshape(-1, predicted.shape[-1]), true.reshape(-1, true.shape[-1])
    return float(1 - ((flat_p - flat_t) ** 2).sum() / ((flat_t - flat_t.mean(0)) ** 2).sum())


def bits_per_spike(rates: np.ndarray, counts: np.ndarray, bin_size: float, reference_rates: np.ndarray) -> float:
    """``(log L(rates) - log L(reference)) / (spikes * log 2)``: Poisson log-likelihood of ``counts [..., N]``
    under the predicted ``rates`` against a constant rate per neuron ``reference_rates [N]`` (per second);
    the co-smoothing score of the Neural Latents Benchmark (Pei et al. 2021)."""
    counts = np.asarray(counts, dtype=np.float64)
    mean = np.asarray(rates, dtype=np.float64) * bin_size
    ref = np.broadcast_to(np.asarray(reference_rates, dtype=np.float64) * bin_size, counts.shape)
    ll = (counts * np.log(np.maximum(mean, 1e-12)) - mean).sum()
    ll0 = (counts * np.log(np.maximum(ref, 1e-12)) - ref).sum()
    return float((ll - ll0) / (counts.sum() * math.log(2)))
