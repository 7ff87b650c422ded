"""Latent ODE (Rubanova et al. 2019): a finite ELBO with exact gradients (gradcheck, float64), the
importance-weighted estimate above the bound, reconstruction at any time after the first observation, a
short fit on sine data that interpolates held-out values well below their variance, the joint classifier,
and `sde fit`."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch.func import functional_call

from sde.models import LatentODE
from sde.series import SeriesBatch
from sde.solvers import Method

from ..conftest import needs_data

GRID = np.linspace(0.0, 5.0, 51)


def sines(n: int, rng: np.random.Generator, rows: int = 24) -> SeriesBatch:
    """``sin(t + phase)`` plus noise 0.05 at ``rows`` random points of a shared grid on [0, 5] (the first always)."""
    pairs = []
    for _ in range(n):
        idx = np.r_[0, np.sort(rng.choice(np.arange(1, GRID.size), rows - 1, replace=False))]
        t = GRID[idx]
        pairs.append((t, np.sin(t + rng.uniform(0, 2 * np.pi))[:, None] + 0.05 * rng.normal(size=(rows, 1))))
    return SeriesBatch.from_arrays(pairs)


@pytest.fixture
def tiny() -> SeriesBatch:
    """Three two-channel series on irregular times, some values missing, one row with none."""
    rng = np.random.default_rng(1)
    pairs = []
    for n, start in ((5, 0.0), (4, 2.0), (3, 0.5)):
        values = rng.normal(size=(n, 2))
        values[1, 0] = np.nan
        pairs.append((start + np.sort(rng.uniform(0, 2, n)), values))
    pairs[0][1][2] = np.nan
    return SeriesBatch.from_arrays(pairs, labels=[0, 1, 0], dtype=torch.float64)


def test_the_elbo_is_finite_and_below_the_importance_weighted_estimate(tiny):
    torch.manual_seed(0)
    model = LatentODE(2, latent_size=3, hidden_size=4, units=8).double().initialise(tiny)
    elbo = model.elbo(tiny, num_samples=64)
    assert elbo.shape == (3,) and torch.isfinite(elbo).all()
    estimate = model.log_likelihood(tiny, num_samples=64)
    assert torch.isfinite(estimate).all() and bool((estimate >= elbo - 1e-6).all())
    assert np.isfinite(model.score(tiny))
    # a series with no observed value scores 0
    empty = dataclasses.replace(tiny, values=torch.where(torch.arange(3)[:, None, None] == 1,
                                                        torch.full_like(tiny.values, float("nan")), tiny.values))
    assert float(model.elbo(empty)[1].detach()) == 0.0


def test_elbo_gradients_pass_gradcheck_in_float64(tiny):
    torch.manual_seed(0)
    model = LatentODE(2, latent_size=2, hidden_size=3, units=4, num_layers=1, num_samples=2, method=Method.RK4,
                      step_size=0.1).double().initialise(tiny)
    names = ["encoder_cell.weight_ih", "encoder_field.net.0.weight", "qz0.2.bias", "dynamics.net.2.weight",
             "decoder.weight", "raw_noise"]
    params = dict(model.named_parameters())

    def elbo(values, *tensors):
        torch.manual_seed(3)  # the same draws of z0 at every evaluation
        batch = dataclasses.replace(tiny, values=values)
        return functional_call(model, dict(zip(names, tensors)), (batch,))

    values = tiny.values.clone().requires_grad_(True)
    inputs = (values, *(params[n].detach().clone().requires_grad_(True) for n in names))
    assert torch.autograd.gradcheck(elbo, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_reconstruction_interpolates_and_extrapolates_and_refuses_times_before_the_first_observation(tiny):
    torch.manual_seed(0)
    model = LatentODE(2, latent_size=3, hidden_size=4, units=8).double().initialise(tiny)
    first = tiny.time[:, 0]
    query = first[:, None] + torch.tensor([0.0, 0.5, 4.0], dtype=torch.float64)  # the last is past every series' end
    samples = model.interpolate(tiny, query, num_samples=5)
    assert samples.shape == (5, 3, 3, 2) and torch.isfinite(samples).all()
    future = model.forecast(tiny, tiny.time.max(1).values[:, None] + 1.0, num_samples=4)
    assert future.shape == (4, 3, 1, 2)
    pred = model.predict(tiny, num_samples=8)
    assert pred.mean.shape == (3, 5, 2) and bool((pred.std > 0).all())
    with pytest.raises(ValueError, match="before its first observation"):
        model.interpolate(tiny, first[:, None] - 0.1)
    with pytest.raises(ValueError, match="before its last observation"):
        model.forecast(tiny, first[:, None])


def test_a_short_fit_on_sine_data_interpolates_held_out_values_well_below_their_variance():
    rng = np.random.default_rng(0)
    train, test = sines(96, rng), sines(32, rng)
    torch.manual_seed(0)
    # RK4 at step 0.1 model time (10 steps over the median span) is ample for a sine's smooth latent flow;
    # 120 Adam steps on batches of 16: MSE / variance measured 0.045 (data and torch seeds 10 / 10: 0.14)
    model = LatentODE(1, latent_size=4, hidden_size=16, units=32, method=Method.RK4,
                      step_size=0.1).initialise(train)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(120):
        batch = train[rng.choice(len(train), 16, replace=False)]
        loss = -model.objective(batch).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    held = torch.zeros(test.values.shape, dtype=torch.bool)
    held[:, 1:-1:3] = True  # every third value strictly inside each series
    hidden = torch.where(held, torch.full_like(test.values, float("nan")), test.values)
    inputs = dataclasses.replace(test, values=hidden)
    mean = model.interpolate(inputs, test.time, num_samples=16).mean(0)
    mse = float(((mean - test.values)[held] ** 2).mean())
    variance = float(test.values[held].var())
    assert mse < 0.2 * variance, (mse, variance)


def test_the_joint_classifier_on_z0_adds_the_label_log_probability(tiny):
    torch.manual_seed(0)
    model = LatentODE(2, latent_size=3, hidden_size=4, units=8, num_classes=2, classifier_weight=2.0).double()
    model.initialise(tiny)
    torch.manual_seed(5)
    joint = model.objective(tiny)
    torch.manual_seed(5)
    elbo = model.elbo(tiny)
    torch.testing.assert_close(joint, elbo + 2.0 * model.label_log_prob(tiny))
    probs = model.predict_proba(tiny)
    assert probs.shape == (3, 2)
    torch.testing.assert_close(probs.sum(1), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="no classifier"):
        LatentODE(2).label_log_prob(tiny)


@needs_data
def test_sde_fit_runs_the_latent_ode_on_basicmotions():
    from typer.testing import CliRunner

    from sde.cli import app

    res = CliRunner().invoke(app, ["fit", "--model", "latent-ode", "--data", "basicmotions", "--task", "classify",
                                   "--epochs", "1", "--hidden-size", "8", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["model"] == "latent-ode" and 0.0 <= out["test_accuracy"] <= 1.0 and out["stats"]["solves"] > 0
