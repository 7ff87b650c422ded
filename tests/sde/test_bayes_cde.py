"""Bayesian neural CDE (weight-space SDE posterior, Hess et al. 2024): it reduces to the neural CDE when the
weights cannot move, its path KL matches the Gaussian closed form, the ELBO is below the quantities it
bounds, the predictive spread grows away from the training data, and a short fit raises the ELBO."""

import numpy as np
import pytest
import torch

from sde.models import BayesianNeuralCDE, NeuralCDE
from sde.models.bayes_cde import gaussian_path_kl
from sde.models.heads import Task
from sde.solvers import Method
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


# ---------------------------------------------------------------------- treatment plans: the tumour simulator
def tumour_batch(n: int = 12, tau: int = 3, horizon: int = 24, seed: int = 0):
    """``n`` simulated patients, each a history up to a random origin and ``tau`` plan rows (outcome blanked),
    with the log volumes of the plan days as targets; and the simulation."""
    from sde.tumour import log_outcome, simulate_tumour

    sim = simulate_tumour(n, seed=seed, horizon=horizon)
    t0 = np.random.default_rng(seed).integers(8, horizon - tau - 1, n)
    batch = sim.forecast_series(t0, tau, measured_only=False)
    rows = batch.mask.sum(1)
    assert torch.isnan(batch.values[torch.arange(n), rows - 1, 0]).all()  # the plan's outcome is blank
    y = log_outcome(sim.volume[np.arange(n)[:, None], t0[:, None] + np.arange(1, tau + 1)])
    np.testing.assert_array_equal(batch.targets.numpy(), y)
    return batch, sim, t0


def test_untreated_tumour_follows_the_gompertz_step_and_closed_form():
    """No treatment, no noise: every day is exactly V(t+1) = V(t) (1 + rho log(K / V(t))) (the simulator's
    Euler step of Gompertz growth), and for slowly growing tumours (rho < 1e-3) the 60 days stay within
    0.5 % of the closed form K exp(log(V0 / K) e^{-rho t})."""
    from sde.tumour import gompertz, simulate_tumour

    sim = simulate_tumour(200, seed=1, noise_level=0.0, actions=np.zeros((200, 60, 2)))
    p, v = sim.params, sim.volume
    np.testing.assert_allclose(v[:, 1:], v[:, :-1] * (1 + p["rho"][:, None] * np.log(p["K"][:, None] / v[:, :-1])),
                               rtol=1e-12)
    closed = gompertz(p["initial_volume"][:, None], p["rho"][:, None], p["K"][:, None], sim.days[None])
    slow = p["rho"] < 1e-3
    assert slow.sum() >= 5
    assert np.abs(v[slow] / closed[slow] - 1).max() < 5e-3
    assert (np.diff(np.log(v), axis=1) > 0).all()  # below the carrying capacity it only grows
    assert sim.chemo.sum() == sim.radio.sum() == 0 and sim.observed[:, 0].all()


def test_treatments_shrink_the_tumour_and_counterfactuals_replay_the_factual_path():
    """The counterfactual of the factual treatments is the factual path (same noise); chemotherapy or
    radiotherapy on the origin day gives a smaller volume the next day than no treatment, for every patient
    with a tumour left; both together shrink it more (the simulator as sde.simulate.tumour_growth)."""
    from sde.simulate import tumour_growth

    sim = tumour_growth(300, seed=2, horizon=30)
    factual = np.stack([sim.chemo, sim.radio], -1)
    np.testing.assert_array_equal(sim.counterfactual(10, factual[:, 10:15]), sim.volume[:, 11:16])
    plans = {name: np.zeros((1, 3, 2)) for name in ("none", "chemo", "radio", "both")}
    plans["chemo"][0, 0, 0] = plans["radio"][0, 0, 1] = 1
    plans["both"][0, 0] = 1
    out = {name: sim.counterfactual(10, plan)[:, 0] for name, plan in plans.items()}
    alive = out["none"] > 1e-6
    assert alive.sum() > 250
    assert (out["chemo"][alive] < out["none"][alive]).all() and (out["radio"][alive] < out["none"][alive]).all()
    assert (out["both"][alive] <= np.minimum(out["chemo"], out["radio"])[alive]).all()


def test_confounding_raises_the_treatment_probability_with_the_tumour_size():
    """gamma > 0: the daily treatment probability increases with the recent tumour diameter (and the treated
    days have larger tumours than the untreated); gamma = 0: a constant treatment_scale / 2 whatever the size.
    Observation is informative too: measured days have larger tumours."""
    from sde.tumour import calc_diameter, simulate_tumour

    sim = simulate_tumour(400, gamma=10.0, seed=3, horizon=20)
    d = calc_diameter(sim.volume)
    order = np.argsort(d[:, 0])
    prob = sim.chemo_prob[order, 0]
    assert (np.diff(prob) >= 0).all() and prob[-1] > 2 * prob[0]
    treated = sim.chemo.astype(bool)
    assert d[treated].mean() > d[~treated].mean()
    later, seen = d[:, 1:], sim.observed[:, 1:]  # day 0 is always measured
    assert later[seen].mean() > later[~seen].mean()
    flat = simulate_tumour(50, gamma=0.0, seed=3, horizon=10)
    np.testing.assert_allclose(flat.chemo_prob, flat.settings["treatment_scale"] / 2)


def test_series_rows_carry_the_previous_days_treatments():
    """Row t of to_series holds the volume if measured (NaN otherwise) and the treatments of day t - 1."""
    from sde.tumour import simulate_tumour

    sim = simulate_tumour(5, seed=4, horizon=15, gamma=20.0, treatment_scale=1.0)
    batch = sim.to_series(upto=np.array([14, 10, 5, 14, 3]))
    assert batch.mask.sum(1).tolist() == [15, 11, 6, 15, 4] and batch.channel_names == ("volume", "chemo", "radio")
    v = batch.values[0].numpy()
    np.testing.assert_array_equal(v[1:, 1], sim.chemo[0, :14])
    np.testing.assert_array_equal(v[0, 1:], [0, 0])
    np.testing.assert_array_equal(np.isfinite(v[:, 0]), sim.observed[0])


def test_mixture_quantile_and_interval_coverage():
    """One Gaussian: the normal quantile; a mixture: its distribution function at the quantile is q;
    interval_coverage counts the finite truths inside."""
    from scipy.stats import norm

    from sde.models.bayes_cde import interval_coverage, mixture_quantile

    means = torch.tensor([[0.0, 1.0], [2.0, 1.0]], dtype=torch.float64)
    stds = torch.tensor([[1.0, 0.5], [0.5, 0.5]], dtype=torch.float64)
    q = mixture_quantile(means[:1], stds[:1], 0.975)
    np.testing.assert_allclose(q.numpy(), [norm.ppf(0.975), 1 + 0.5 * norm.ppf(0.975)], rtol=1e-9)
    q = mixture_quantile(means, stds, 0.9)
    cdf = norm.cdf(q.numpy()[None], means.numpy(), stds.numpy()).mean(0)
    np.testing.assert_allclose(cdf, 0.9, atol=1e-9)
    truth = torch.tensor([0.5, 3.0, float("nan")])
    assert interval_coverage(torch.zeros(3), torch.ones(3), truth) == 0.5


def test_plan_model_shapes_and_its_intervals_cover_its_own_draws():
    """The encoder-decoder model: ELBO [B]; predict_outcomes gives samples / means / stds [S, B, tau] and
    intervals [B, tau] at the plan rows; a history plus a plan (with_plan) gives the same prediction as the
    series that ends with that plan; and the 95% interval covers 93-97% of fresh draws from the predictive
    itself (the coverage machinery, on a tiny case)."""
    from sde.models.bayes_cde import interval_coverage

    batch, sim, t0 = tumour_batch(6)
    torch.manual_seed(0)
    model = BayesianNeuralCDE(3, 8, 1, task=Task.FORECAST, plan_steps=3, hidden_hidden_size=8,
                              observation_counts=True, weight_diffusion=0.3, method=Method.EULER).double()
    model.initialise(batch)
    assert model.elbo(batch, 2).shape == (6,) and model.decoder_field.path_channels == 3
    pred = model.predict_outcomes(batch, None, 60, seed=1)
    assert pred.samples.shape == pred.means.shape == pred.stds.shape == (60, 6, 3)
    assert pred.lower.shape == pred.upper.shape == pred.times.shape == (6, 3) and bool((pred.width > 0).all())
    np.testing.assert_array_equal(pred.times.numpy(), t0[:, None] + np.arange(1, 4))
    history = sim.to_series(upto=t0, log_volume=True)
    plan = np.stack([sim.chemo, sim.radio], -1)[np.arange(6)[:, None], t0[:, None] + np.arange(3)]
    again = model.predict_outcomes(history, plan, 60, seed=1)
    torch.testing.assert_close(again.means, pred.means)
    # 20 fresh outcomes per weight sample: 21,600 draws from the mixture
    noise = torch.randn((20, *pred.means.shape), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    fresh = pred.means + pred.stds * noise
    cover = interval_coverage(pred.lower.expand_as(fresh), pred.upper.expand_as(fresh), fresh)
    assert 0.93 <= cover <= 0.97, cover
    gauss = model.predict(batch, samples=20)
    assert gauss.mean.shape == gauss.std.shape == (6, 3)
    assert np.isfinite(model.score(batch, samples=4))


def test_frozen_bayesian_plan_model_is_the_dropout_free_cde_and_dropout_spreads_it():
    """weight_diffusion ~ 0: the Bayesian encoder-decoder predicts what MCDropoutCDE with dropout 0 and the
    same weights predicts (the deterministic CDE); with dropout 0.5 and no aleatoric head the interval is the
    dropout draws' spread (positive), and at dropout 0 it collapses."""
    from sde.models.bayes_cde import MCDropoutCDE

    batch, _, _ = tumour_batch(6)
    kw = {"task": Task.FORECAST, "plan_steps": 3, "hidden_hidden_size": 8, "observation_counts": True}
    torch.manual_seed(0)
    bay = BayesianNeuralCDE(3, 8, 1, weight_diffusion=1e-12, **kw).double().initialise(batch)
    det = MCDropoutCDE(3, 8, 1, dropout=0.0, **kw).double()
    det.load_state_dict(bay.state_dict())
    a, b = bay.predict_outcomes(batch, None, 2), det.predict_outcomes(batch, None, 2)
    torch.testing.assert_close(a.means, b.means, rtol=0, atol=1e-8)
    torch.testing.assert_close(a.stds, b.stds, rtol=0, atol=1e-8)
    point = MCDropoutCDE(3, 8, 1, dropout=0.5, aleatoric=False, **kw).double()
    point.load_state_dict(bay.state_dict())
    assert bool((point.predict_outcomes(batch, None, 32).width > 0).all())
    point.dropout = 0.0
    assert float(point.predict_outcomes(batch, None, 8).width.max()) < 1e-4
    with pytest.raises(ValueError, match="plan_steps"):
        MCDropoutCDE(3, 8, 1, task=Task.FORECAST)
    with pytest.raises(ValueError, match="classification"):
        BayesianNeuralCDE(3, plan_steps=2)


def test_short_fit_of_the_plan_model_raises_its_elbo_and_plots_two_plans():
    """Three epochs on 16 simulated patients raise the plan model's ELBO; plot_treatment_plans draws the
    bands of two plans and returns a Figure."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from sde.models.bayes_cde import plot_treatment_plans

    batch, sim, t0 = tumour_batch(16, seed=5)
    torch.manual_seed(0)
    model = BayesianNeuralCDE(3, 8, 1, task=Task.FORECAST, plan_steps=3, hidden_hidden_size=8,
                              observation_counts=True, num_samples=2, method=Method.EULER)
    model.initialise(batch)
    torch.manual_seed(1)
    before = float(model.elbo(batch, 4).mean().detach())
    model.fit(batch, epochs=3, batch_size=8, lr=2e-2, progress=False)
    torch.manual_seed(1)
    after = float(model.elbo(batch, 4).mean().detach())
    assert after > before, (before, after)
    history = sim.to_series(upto=t0, log_volume=True)
    fig = plot_treatment_plans(model, history, {"none": np.zeros((3, 2)), "chemo+radio": np.ones((3, 2))},
                               num_samples=8)
    assert isinstance(fig, Figure) and len(fig.axes[0].collections) == 2
    import matplotlib.pyplot as plt

    plt.close(fig)
