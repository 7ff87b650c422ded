"""Langevin flows (underdamped Langevin latent dynamics), the Poisson count emission and the spiking data.

Monte Carlo tolerances are stated per check; the long recovery (firing-rate R^2, co-smoothing bits per
spike, against LatentSDE) is benchmarks/langevin_flow.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

import sde.simulate
from sde.models import LangevinFlow, PoissonLatentSDE
from sde.models._base import seeded
from sde.models.emissions import PoissonEmission, poisson_log_prob
from sde.models.langevin import CoupledPotential
from sde.spiking_data import bits_per_spike, grasshopper_counts, lorenz_spikes, rate_r2, to_series
from tests.conftest import needs_data
from tpp.table import constructor_args


def _small_data(n_trials: int = 12, seed: int = 0):
    data = lorenz_spikes(n_trials, n_neurons=8, n_bins=20, bin_size=0.02, seed=seed, base_rate=20.0)
    return data, to_series(data.counts, data.times)


def _model(**kwargs) -> LangevinFlow:
    torch.manual_seed(0)
    options = {"latent_size": 3, "hidden_size": 16, "context_size": 8, "step_size": 0.05}
    return LangevinFlow(8, **{**options, **kwargs})


# ------------------------------------------------------------------------------------- prior dynamics
def test_zero_potential_velocity_is_ar1_with_ou_stationary_variance():
    """``U = 0``: the velocity's Euler chain is the AR(1) ``p' = (1 - gamma dt) p + sigma sqrt(dt) xi``; its
    stationary variance is within 2% of the OU closed form ``sigma^2 / (2 gamma)`` (Monte Carlo: 4000 paths of
    2 coordinates, 8 times one relaxation time apart, started in the chain's stationary law; the estimate's
    relative standard error is about 0.6%, the Euler bias ``gamma dt / 2`` = 0.5%)."""
    model = LangevinFlow(3, latent_size=2, potential="zero", friction=1.5, noise=0.8, step_size=0.01).double()
    assert not list(model.energy.parameters())
    gamma = float(model.friction_coefficient()[0].detach())
    sigma = float(model.noise_scale()[0].detach())
    dt = model.step_size
    closed = sigma**2 / (2 * gamma)
    assert torch.allclose(model.stationary_velocity_variance(), torch.full((2,), closed, dtype=torch.float64))
    euler = float(model.stationary_velocity_variance(dt)[0])
    N, D = 4000, 2
    gen = torch.Generator().manual_seed(1)
    p0 = torch.randn(N, D, generator=gen, dtype=torch.float64) * math.sqrt(euler)
    z0 = torch.cat([torch.zeros_like(p0), p0], -1)
    times = torch.arange(0, 8.0 / gamma + dt / 2, dt, dtype=torch.float64)
    ys = model.sample_prior(N, times, z0=z0, seed=2)
    p = ys[..., D:]  # [N, T, D]
    # AR(1): the regression of one step on the previous has slope 1 - gamma dt and residual variance sigma^2 dt
    x, y = p[:, :-1].reshape(-1), p[:, 1:].reshape(-1)
    slope = float((x * y).sum() / (x * x).sum())
    assert abs(slope - (1 - gamma * dt)) < 5e-4
    residual = float((y - slope * x).var())
    assert residual == pytest.approx(sigma**2 * dt, rel=0.01)
    # the stationary variance, read one relaxation time (1 / gamma) apart
    every = int(round(1 / (gamma * dt)))
    variance = float(p[:, ::every].pow(2).mean())
    assert variance == pytest.approx(closed, rel=0.02)
    # the positions integrate the velocities exactly (dq = p dt, no noise)
    q = ys[..., :D]
    assert torch.allclose(q[:, 1:] - q[:, :-1], p[:, :-1] * dt, atol=1e-12)


def test_potential_gradient_is_the_closed_form_of_its_energy():
    """``CoupledPotential.gradient`` (closed form, used in the drift) equals autograd of ``energy``."""
    torch.manual_seed(0)
    potential = CoupledPotential(5, hidden_size=7).double()
    q = torch.randn(11, 5, dtype=torch.float64, requires_grad=True)
    (auto,) = torch.autograd.grad(potential.energy(q).sum(), q)
    assert torch.allclose(potential.gradient(q), auto, atol=1e-12)


# ------------------------------------------------------------------------------------- emission
def test_poisson_emission_log_likelihood_equals_scipy():
    """``poisson_log_prob`` and ``PoissonEmission.log_prob`` equal ``scipy.stats.poisson.logpmf``."""
    rng = np.random.default_rng(0)
    log_mean = rng.normal(0.0, 1.5, (40, 3))
    counts = rng.poisson(np.exp(log_mean)).astype(np.float64)
    ours = poisson_log_prob(torch.as_tensor(counts), torch.as_tensor(log_mean)).numpy()
    assert np.allclose(ours, scipy.stats.poisson.logpmf(counts, np.exp(log_mean)), atol=1e-10)
    readout = torch.nn.Linear(2, 3).double()
    emission = PoissonEmission(readout, bin_size=0.05)
    z = torch.as_tensor(rng.normal(size=(40, 2)))
    with torch.no_grad():
        mean = (readout(z).exp() * 0.05).numpy()
        ours = emission.log_prob(torch.as_tensor(counts), z).numpy()
    assert np.allclose(ours, scipy.stats.poisson.logpmf(counts, mean), atol=1e-10)
    with pytest.raises(ValueError, match="bin_size"):
        PoissonEmission(readout, bin_size=0.0)


# ------------------------------------------------------------------------------------- bound and training
def test_elbo_is_finite_and_its_gradient_reaches_the_potential():
    """The ELBO is finite, and its gradient reaches every parameter of the potential, friction and noise."""
    _, batch = _small_data()
    model = _model()
    model.initialise(batch)
    assert float(model.poisson_emission.bin_size) == pytest.approx(0.02)
    with seeded(0):
        elbo = model.elbo(batch, num_samples=2)
    assert elbo.shape == (12,) and bool(torch.isfinite(elbo).all())
    elbo.sum().backward()
    for name, param in [*model.energy.named_parameters(), ("friction", model.raw_friction),
                        ("noise", model.raw_noise_scale)]:
        assert param.grad is not None and bool(torch.isfinite(param.grad).all()), name
        assert float(param.grad.abs().sum()) > 0, name
    # the importance-weighted estimate is at least the ELBO on average (same paths' expectation)
    with seeded(1):
        estimate = model.log_likelihood(batch, num_samples=16)
    assert bool(torch.isfinite(estimate).all())


def test_kl_annealing_schedule():
    """``kl_weight`` rises linearly from 0 to 1 over ``kl_warmup`` steps (counted by ``after_step``); the
    objective equals the ELBO after the warm-up and exceeds it (by the KL) at weight 0."""
    _, batch = _small_data()
    model = _model(kl_warmup=4)
    model.initialise(batch)
    assert model.kl_weight == 0.0
    with seeded(3):
        start = model.objective(batch)
    with seeded(3):
        elbo = model.elbo(batch)
    assert bool((start >= elbo - 1e-4).all())
    for expected in (0.25, 0.5, 0.75, 1.0, 1.0):
        model.after_step()
        assert model.kl_weight == pytest.approx(expected)
    with seeded(3):
        assert torch.allclose(model.objective(batch), elbo, rtol=1e-5, atol=1e-4)


def test_tiny_fit_raises_the_elbo():
    """A few epochs on a small Lorenz population raise the mean ELBO (same posterior noise before and after)."""
    _, batch = _small_data(16)
    model = _model(kl_warmup=10)
    model.initialise(batch)

    def mean_elbo() -> float:
        with seeded(5), torch.no_grad():
            return float(model.elbo(batch, num_samples=4).mean())

    before = mean_elbo()
    model.fit(batch, epochs=15, batch_size=8, lr=1e-2, seed=0, progress=False)
    assert mean_elbo() > before + 1.0


def test_predict_rates_latents_shapes():
    """Faces: ``predict`` mean/std ``[B, T, C]`` (Poisson family, std >= sqrt(mean)), ``rates`` ``[S, B, T, C]``
    positive, ``latents`` ``[S, B, T, D]``, ``interpolate(noise=True)`` integer counts; the Gaussian emission
    keeps LatentSDE's faces; the constructor arguments rebuild the same tensors."""
    data, batch = _small_data(5)
    model = _model()
    model.initialise(batch)
    pred = model.predict(batch, num_samples=3)
    assert pred.mean.shape == (5, 20, 8) and pred.std.shape == (5, 20, 8) and pred.family == "poisson"
    assert bool((pred.std >= pred.mean.sqrt() - 1e-6).all())
    rates = model.rates(batch, num_samples=2)
    assert rates.shape == (2, 5, 20, 8) and bool((rates > 0).all())
    assert model.latents(batch, num_samples=2).shape == (2, 5, 20, 3)
    t = torch.as_tensor(data.times[:7])
    draws = model.interpolate(batch, t, num_samples=2, noise=True)
    assert draws.shape == (2, 5, 7, 8) and bool((draws == draws.round()).all())
    rebuilt = LangevinFlow(**constructor_args(model))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    gaussian = _model(emission="gaussian")
    gaussian.initialise(batch)
    assert gaussian.predict(batch, num_samples=2).mean.shape == (5, 20, 8)
    with pytest.raises(ValueError, match="emission"):
        gaussian.rates(batch)
    with pytest.raises(ValueError, match="potential"):
        _model(potential="quartic")


def test_poisson_latent_sde_uses_the_same_emission():
    """LatentSDE with the Poisson emission (the benchmark's comparison): finite ELBO, rates of the right shape."""
    _, batch = _small_data(4)
    torch.manual_seed(0)
    model = PoissonLatentSDE(8, latent_size=3, hidden_size=16, context_size=8, step_size=0.05)
    model.initialise(batch)
    assert bool(torch.isfinite(model.elbo(batch)).all())
    assert model.rates(batch, num_samples=2).shape == (2, 4, 20, 8)


# ------------------------------------------------------------------------------------- data and scores
def test_lorenz_spikes_generator():
    """Shapes, integer counts, the true rates' law (log rate = log(base) + C z), seeding, re-export."""
    data = sde.simulate.lorenz_spikes(6, 9, 30, 0.01, seed=3)
    assert data.counts.shape == data.rates.shape == (6, 30, 9) and data.times.shape == (30,)
    assert np.allclose(data.times, (np.arange(30) + 0.5) * 0.01)
    assert np.all(data.counts == np.round(data.counts)) and np.all(data.rates > 0)
    again = lorenz_spikes(6, 9, 30, 0.01, seed=3)
    assert np.array_equal(again.counts, data.counts)
    # the log rates span a 3-dimensional affine space (the Lorenz latent)
    log_rates = np.log(data.rates).reshape(-1, 9)
    singular = np.linalg.svd(log_rates - log_rates.mean(0), compute_uv=False)
    assert singular[3] < 1e-8 * singular[0]
    with pytest.raises(ValueError, match="n_bins"):
        lorenz_spikes(2, 3, 0, 0.01)


def test_scores():
    """R^2 is 1 for the truth; bits per spike is 0 for the reference and > 0 for the true rates."""
    data = lorenz_spikes(20, 6, 40, 0.02, seed=0)
    assert rate_r2(data.rates, data.rates) == 1.0
    constant = data.counts.reshape(-1, 6).mean(0) / 0.02
    assert bits_per_spike(np.broadcast_to(constant, data.counts.shape), data.counts, 0.02, constant) == 0.0
    assert bits_per_spike(data.rates, data.counts, 0.02, constant) > 0.1


@needs_data
def test_grasshopper_counts():
    """The grasshopper recordings binned at 10 ms in 1 s trials: 20 trials of 100 bins, every spike counted."""
    batch = grasshopper_counts(0.01, 1.0)
    assert tuple(batch.values.shape) == (20, 100, 1)
    assert float(batch.values.sum()) == 1797.0
    with pytest.raises(ValueError, match="window"):
        grasshopper_counts(0.03, 1.0)


@pytest.mark.parametrize("value", [2.5, -1.0])
def test_a_poisson_emission_refuses_values_that_are_not_counts_and_names_the_row(value):
    """A Poisson emission never rounds a value silently: training data with a non-integer or negative value is
    refused at initialise with the series, row and channel named."""
    from sde.series import SeriesDataError

    data = lorenz_spikes(n_trials=3, n_neurons=4, n_bins=10, seed=0)
    counts = data.counts.astype(float)
    counts[1, 6, 2] = value
    batch = to_series(counts, data.times)
    with pytest.raises(SeriesDataError, match="channel 2") as info:
        PoissonLatentSDE(4).initialise(batch)
    assert info.value.row == 6 and info.value.series == 1


def test_plot_latents_draws_positions_and_rates_against_the_truth():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from sde.models.langevin import plot_latents

    data, batch = _small_data(3)
    model = _model()
    model.initialise(batch)
    fig = plot_latents(model, batch, 1, true_rates=data.rates[1], neurons=3, num_samples=2)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert len(fig.axes[0].lines) == 3  # one mean per latent position
    assert len(fig.axes[1].lines) == 9  # rate, counts and truth of 3 neurons
    with pytest.raises(ValueError, match="series"):
        plot_latents(model, batch, 3)
    plt.close("all")
