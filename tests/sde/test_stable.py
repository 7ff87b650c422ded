"""Stable neural SDEs (LSDE, LNSDE, GSDE): padding, positivity of the geometric SDE, its log-space
scheme against the direct one, gradients through a fixed Brownian path, the stabilisers, training."""

import numpy as np
import pytest
import torch

import tpp
from sde.models import GSDE, LNSDE, LSDE
from sde.models.stable import GeometricScheme
from sde.paths import drop
from sde.series import SeriesBatch
from tests.sde.test_cde import irregular, nan_padded, pad_columns

MODELS = [LSDE, LNSDE, GSDE]


@pytest.mark.parametrize("cls", MODELS)
def test_padding_changes_nothing(cls):
    """Same batch with extra NaN rows, same Brownian path: identical scores. Without noise
    (sigmoid(theta) = 0) a series scores the same alone as in a padded batch."""
    torch.manual_seed(0)
    series, labels = irregular(1)
    plain = SeriesBatch.from_arrays(series, labels)
    padded = pad_columns(SeriesBatch.from_arrays(nan_padded(series, 3), labels), 7)
    assert padded.max_length == plain.max_length + 7
    model = cls(2, 8, 3, brownian_seed=3).fit_standardisation(plain)
    torch.testing.assert_close(model.objective(plain), model.objective(padded), rtol=0, atol=0)
    quiet = cls(2, 8, 3, theta=float("-inf")).fit_standardisation(plain).eval()  # readout: running statistics
    alone = torch.cat([quiet.label_log_prob(SeriesBatch.from_arrays([s], labels[i : i + 1]))
                       for i, s in enumerate(series)])
    torch.testing.assert_close(quiet.label_log_prob(padded), alone, rtol=1e-5, atol=1e-5)


def long_series(horizon: float = 50.0, rows: int = 200, batch: int = 8) -> SeriesBatch:
    rng = np.random.default_rng(0)
    times = np.linspace(0.0, horizon, rows)
    return SeriesBatch.from_arrays([(times, np.sin(times / (1 + b))[:, None] + 0.1 * rng.normal(size=(rows, 1)))
                                    for b in range(batch)], np.arange(batch) % 2)


def loud(model: GSDE) -> GSDE:
    """Large noise: sigma(t) close to 1 (its clip) at every time."""
    with torch.no_grad():
        model.theta.fill_(8.0)
        model.sigma_net[2].weight.zero_()
        model.sigma_net[2].bias.fill_(3.0)
    return model


def test_geometric_sde_stays_positive_on_a_long_horizon():
    data = long_series()
    times = data.time[:, ::5]
    torch.manual_seed(0)
    log_model = loud(GSDE(1, 16, 2, step_size=0.25, brownian_seed=0))
    z = log_model.states(data, times)
    assert z.shape == (8, times.shape[1], 16)
    assert torch.isfinite(z).all() and (z > 0).all()
    # The same equation stepped in z by Euler crosses zero (z_{n+1} = z_n (1 + gamma dt + sigma dW) < 0
    # whenever sigma dW < -1 - gamma dt): why the log scheme is the default.
    direct = loud(GSDE(1, 16, 2, step_size=0.25, brownian_seed=0, scheme=GeometricScheme.DIRECT))
    direct.load_state_dict(log_model.state_dict())
    assert (direct.states(data, times) < 0).any()


def test_log_scheme_and_direct_scheme_converge_to_one_solution():
    """Same Brownian path, shrinking steps: log-Euler and Euler on eq. 6 approach each other (at the
    rate of Euler's strong order 1/2). Leaving out the Ito correction -sigma^2/2 in log space would
    leave a gap of about sigma^2 t / 2 that no step size removes."""
    torch.manual_seed(0)
    data = long_series(horizon=1.0, rows=21, batch=16)
    log_model = loud(GSDE(1, 8, 2).double())
    with torch.no_grad():
        log_model.sigma_net[2].bias.fill_(0.5)  # sigma = tanh(0.5) ~ 0.46: sigma^2 t / 2 ~ 0.1
    direct = GSDE(1, 8, 2, scheme=GeometricScheme.DIRECT).double()
    direct.load_state_dict(log_model.state_dict())
    batch = data.to(dtype=torch.float64)
    gaps = []
    for dt in (0.02, 0.0025):
        log_model.step_size = direct.step_size = dt
        log_model.brownian_seed = direct.brownian_seed = 7
        a, b = log_model.states(batch), direct.states(batch)
        gaps.append(float((a.log() - b.log()).abs().mean().detach()))
    assert gaps[1] < 0.5 * gaps[0] and gaps[1] < 0.02, gaps


def test_lsde_gradcheck_with_a_fixed_brownian_path():
    torch.manual_seed(0)
    series, labels = irregular(2, n=2, missing=0.0)
    batch = SeriesBatch.from_arrays(series, labels)
    model = LSDE(2, 3, 3, num_layers=1, step_size=0.05, brownian_seed=11).double().fit_standardisation(batch).eval()
    with torch.no_grad():
        model.sigma_net[2].bias.fill_(0.5)  # noise on, so the path matters

    def score(values: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        changed = SeriesBatch(batch.time, values, batch.mask, batch.labels, validate=False)
        return torch.func.functional_call(model, {"embed_control.weight": w}, (changed,))

    values = batch.values.clone().requires_grad_(True)
    weight = model.embed_control.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(score, (values, weight), eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("cls", MODELS)
def test_stabilisers_bound_drift_and_diffusion(cls):
    torch.manual_seed(0)
    clipped, free = cls(2, 8, 3), cls(2, 8, 3, clip_drift=False, clip_diffusion=False)
    free.load_state_dict(clipped.state_dict())
    with torch.no_grad():
        for m in (clipped, free):  # raw drift and noise scale well above 1
            m.theta.fill_(10.0)
            m.sigma_net[2].bias.fill_(5.0)
            m.gamma_net[-1].bias.fill_(5.0)
    z = torch.full((4, 8), 30.0)
    x, t = torch.full((4, clipped.path_channels), 30.0), torch.tensor(0.3)
    for m, bounded in ((clipped, True), (free, False)):
        # gamma: the drift (LSDE, LNSDE) or its rate (GSDE); diffusion: sigma(t), sigma(t) z, or the GSDE's
        # rate sigma(t) (its log-space diffusion)
        assert bool((m.gamma(t, z, x).abs() <= 1).all()) == bounded
        assert bool((m.diffusion(t, z).abs() <= 1).all()) == bounded


def test_stable_sde_trains_with_tpp_fit():
    """Two classes told apart by their level under a random-phase sine and noise; the loss falls."""
    rng = np.random.default_rng(0)
    times = np.linspace(0, 6, 25)
    labels = np.arange(32) % 2
    series = [(times, (y - 0.5) + np.sin(times + rng.uniform(0, 6))[:, None] + 0.3 * rng.normal(size=(25, 1)))
              for y in labels]
    data = SeriesBatch.from_arrays(series, labels)
    torch.manual_seed(0)
    model = LNSDE(1, 16, 2)
    result = tpp.fit(model, data, epochs=15, batch_size=16, lr=1e-2, seed=0, progress=False)
    losses = [h["train_nll_per_event"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0], losses
    accuracy = float((model.predict(data, samples=4).argmax(1) == data.labels).float().mean())
    assert accuracy >= 0.9, accuracy


@pytest.mark.parametrize("cls", MODELS)
def test_half_the_values_missing_still_runs(cls):
    torch.manual_seed(0)
    series, labels = irregular(3, n=6, missing=0.0)
    for kw in ({}, {"per_channel": True}, {"remove": True}):
        batch = drop(SeriesBatch.from_arrays(series, labels), 0.5, seed=0, **kw)
        model = cls(2, 8, 3).initialise(batch)
        ll = model.objective(batch)
        ll.sum().backward()
        assert torch.isfinite(ll).all() and (ll < 0).all()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        probs = model.predict(batch, samples=3)
        torch.testing.assert_close(probs.sum(1), torch.ones(len(batch)))


@pytest.mark.parametrize("cls", MODELS)
def test_score_is_reproducible_and_queries_change_nothing(cls):
    """A stochastic model's score draws its Brownian paths from its seed: the same weights give the same
    score, the caller's random stream is left where it was, and no running statistic moves."""
    torch.manual_seed(0)
    series, labels = irregular(4, n=5)
    batch = SeriesBatch.from_arrays(series, labels)
    model = cls(2, 8, 3).initialise(batch).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    first = model.score(batch, samples=2)
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.score(batch, samples=2) == first and 0.0 <= first <= 1.0
    model.predict(batch)
    model.label_log_prob(batch)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert model.training
