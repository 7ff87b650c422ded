"""Bayesian neural CDE (weight-space SDE posterior, Hess et al. 2024): it reduces to the neural CDE when the
weights cannot move, its path KL matches the Gaussian closed form, the ELBO is below the quantities it
bounds, the predictive spread grows away from the training data, and a short fit raises the ELBO."""

import numpy as np
import pytest
import torch

from sde.models import BayesianNeuralCDE, NeuralCDE
from sde.models.bayes_cde import gaussian_path_kl
from sde.models.heads import Task
from sde.series import SeriesBatch
from tests.conftest import needs_data
from tests.sde.test_cde import irregular


def walks(seed: int, n: int, scale: float = 1.0, length: int = 20) -> SeriesBatch:
    """``n`` two-channel random walks on a 0.1 grid; the target is the sum of the last values."""
    rng = np.random.default_rng(seed)
    series = [(np.arange(length) * 0.1, np.cumsum(rng.normal(size=(length, 2)) * 0.3, 0) * scale) for _ in range(n)]
    return SeriesBatch.from_arrays(series, targets=np.array([[v[-1].sum()] for _, v in series]))


def test_frozen_weights_and_no_kl_give_the_deterministic_cde():
    """weight_diffusion ~ 0, zero posterior drift, kl_weight 0: the objective and the predicted probabilities
    are the NeuralCDE's with the same weights (same solver, grid and knots); the untrained posterior is the
    prior, so the KL and the ELBO's gap are 0 too."""
    torch.manual_seed(0)
    series, labels = irregular(1, n=5)
    batch = SeriesBatch.from_arrays(series, labels)
    det = NeuralCDE(2, 8, 3, num_layers=1, field_init="torch").double()
    bay = BayesianNeuralCDE(2, 8, 3, num_layers=1, field_init="torch", weight_diffusion=1e-12, kl_weight=0.0).double()
    result = bay.load_state_dict(det.state_dict(), strict=False)
    assert not result.unexpected_keys and all(k.startswith(("weight_drift", "num_train")) for k in result.missing_keys)
    det.initialise(batch).eval()
    bay.initialise(batch).eval()
    expected = det.label_log_prob(batch)
    torch.testing.assert_close(bay.objective(batch), expected, rtol=0, atol=1e-9)
    torch.testing.assert_close(bay.elbo(batch), expected, rtol=0, atol=1e-9)
    torch.testing.assert_close(bay.predict(batch, samples=3), det.predict(batch), rtol=0, atol=1e-9)


@pytest.mark.parametrize("prior_rate", [0.0, 2.0])
def test_path_kl_matches_the_gaussian_closed_form(prior_rate):
    """A constant control v (posterior drift = prior drift + sigma v): the KL the solver integrates along the
    weight paths is |v|^2 T / 2; the paths' end is the Gaussian of the Ornstein-Uhlenbeck closed form; and
    the path KL is at least the KL between the two Gaussian marginals at T (data processing)."""
    from sde.models.bayes_cde import ou_marginal

    sigma, T, S = 0.3, 1.0, 4000
    model = BayesianNeuralCDE(1, 2, 2, num_layers=1, hidden_hidden_size=2, weight_diffusion=sigma,
                              prior_rate=prior_rate).double()
    v = torch.linspace(-1.5, 1.5, model.num_weights, dtype=torch.float64)
    torch.manual_seed(1)
    with torch.no_grad():
        model.weight_drift[-1].bias.copy_(v)
        _, paths, kl = model.weight_paths(T, 1e-2, S)
    torch.testing.assert_close(kl, torch.full_like(kl, gaussian_path_kl(v, T)), rtol=1e-9, atol=0)
    mean, var = ou_marginal(v, prior_rate, sigma, T)
    end = paths[:, -1] - model.weight_start().detach()
    # Euler-Maruyama with steps of 0.01 is exact for theta = 0 and within 2 % of the OU moments for theta = 2;
    # Monte Carlo errors: 4 std of the mean, 5 % of the variance (4,000 paths)
    assert float((end.mean(0) - mean).abs().max()) < 4 * var**0.5 / S**0.5 + 0.02 * float(mean.abs().max())
    assert float(end.var(0).mean()) == pytest.approx(var, rel=0.05)
    marginal_kl = float((mean**2).sum()) / (2 * var)  # same variance under p, mean w0
    assert float(kl.mean()) >= marginal_kl - 1e-9
    if prior_rate == 0:  # a random walk: only the drift separates q from p, and the two KLs coincide
        assert float(kl.mean()) == pytest.approx(marginal_kl, rel=1e-9)


def test_elbo_is_below_what_it_bounds():
    """Per series and for the same weight draws: ELBO <= E_q log p(y | w) (the KL is >= 0) <=
    log (1/S) sum_s p(y | w_s) (Jensen); and the training objective with kl_weight 1 is the ELBO."""
    torch.manual_seed(0)
    series, labels = irregular(3, n=6)
    batch = SeriesBatch.from_arrays(series, labels)
    model = BayesianNeuralCDE(2, 8, 3, weight_diffusion=0.3, prior_rate=1.0)
    model.initialise(batch).eval()
    with torch.no_grad():
        model.weight_drift[-1].bias.normal_(0, 0.5)  # a posterior away from the prior: KL > 0
    torch.manual_seed(5)
    log_lik, kl = model.log_likelihood_samples(batch, 8)
    torch.manual_seed(5)
    elbo = model.elbo(batch, 8)
    assert bool((kl > 0).all())
    expected_log_lik = log_lik.mean(0)
    predictive = torch.logsumexp(log_lik, 0) - np.log(8)
    torch.testing.assert_close(elbo, expected_log_lik - kl.mean() / model.num_train_series.float())
    assert bool((elbo < expected_log_lik).all()) and bool((expected_log_lik <= predictive + 1e-6).all())
    torch.manual_seed(5)
    objective = model.objective(batch)  # eval mode, kl_weight 1: the same estimate with num_samples draws
    torch.manual_seed(5)
    torch.testing.assert_close(objective, model.elbo(batch))


def test_predictive_spread_grows_away_from_the_training_data():
    """After the standardisation on training walks: the spread of the sampled predictive means is several
    times larger on walks 4x wider (out of distribution) and on walks twice as long (extrapolation in time);
    the deterministic CDE's predictive std is the head's noise everywhere (no growth)."""
    train, iid, wide, long = walks(0, 32), walks(1, 16), walks(2, 16, scale=4.0), walks(3, 16, length=40)
    torch.manual_seed(0)
    model = BayesianNeuralCDE(2, 8, 1, task=Task.REGRESSION, weight_diffusion=0.05).initialise(train)
    spread = {name: float(model.predictive_samples(b, 16).var(0).mean()) for name, b in
              [("iid", iid), ("wide", wide), ("long", long)]}
    assert spread["iid"] > 0
    assert spread["wide"] > 3 * spread["iid"] and spread["long"] > 1.5 * spread["iid"], spread
    det = NeuralCDE(2, 8, 1, task=Task.REGRESSION).initialise(train)
    stds = [det.predict(b).std for b in (iid, wide, long)]
    assert all(torch.equal(s, stds[0][:1].expand_as(s)) for s in stds)


@needs_data
def test_short_fit_raises_the_elbo(small_ts):
    """30 ItalyPowerDemand series (2 classes): 8 epochs of the one trainer raise the ELBO on the training set."""
    from sde.readers import read_ts

    data = read_ts(small_ts)
    torch.manual_seed(0)
    model = BayesianNeuralCDE(data.num_channels, 8, 2, num_samples=2).initialise(data)
    torch.manual_seed(1)
    before = float(model.elbo(data, 8).mean().detach())
    model.fit(data, epochs=8, batch_size=10, lr=2e-2, progress=False)
    torch.manual_seed(1)
    after = float(model.elbo(data, 8).mean().detach())
    assert after > before + 0.03, (before, after)  # measured +0.06 to +0.18 over seeds 0-2
    assert 0.0 <= model.score(data) <= 1.0
