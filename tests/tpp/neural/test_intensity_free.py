"""IntensityFree: what is particular to it (the contract every model meets is in test_contract.py)."""

import numpy as np
import pytest
import scipy.stats
import torch

from tpp import EventBatch
from tpp.compensator import gauss_legendre, integrate_intervals
from tpp.neural.base import NeuralTPP
from tpp.neural.intensity_free import IntensityFree


def make_model(hidden_size: int = 8, seed: int = 0, **kwargs) -> IntensityFree:
    torch.manual_seed(seed)
    return IntensityFree(3, hidden_size=hidden_size, **kwargs).double()


@pytest.fixture(scope="module")
def tiny() -> EventBatch:
    """Three short sequences: one empty, one with a window starting before the first event."""
    return EventBatch.from_sequences(
        [[0.3, 0.9, 1.0, 2.2], [], [1.1, 1.7]], [[0, 2, 1, 0], [], [1, 1]],
        t_start=[0.0, 0.0, 0.5], t_end=[3.0, 1.5, 2.5], num_marks=3,
    )


def test_standardisation_is_of_log_gaps_and_set_by_initialise_only(hawkes_data):
    untouched = make_model()
    untouched(hawkes_data)  # a query, even in training mode, sets nothing behind the caller's back
    assert not bool(untouched.standardised) and float(untouched.log_tau_mean) == 0.0
    assert float(untouched.log_tau_std) == 1.0  # the documented default: log tau in the data's own unit
    model = make_model().initialise(hawkes_data)
    log_gaps = np.log(np.concatenate([np.diff(np.concatenate([[0.0], t])) for t, _ in hawkes_data.sequences()]))
    assert float(model.log_tau_mean) == pytest.approx(log_gaps.mean(), rel=1e-12)
    assert float(model.log_tau_std) == pytest.approx(log_gaps.std(ddof=1), rel=1e-12)
    model.initialise(hawkes_data[:2])  # once per model: the weights were learnt in these units
    assert float(model.log_tau_mean) == pytest.approx(log_gaps.mean(), rel=1e-12)


def test_density_likelihood_equals_intensity_form(hawkes_data, tiny):
    """sum log p(tau) + log p(k) + log S(last) == sum log lambda_k(t_n) - compensator (survival term included)."""
    model = make_model().initialise(hawkes_data).eval()
    for batch in (hawkes_data, tiny):
        intensity_form = NeuralTPP.log_likelihood(model, batch)
        torch.testing.assert_close(model.log_likelihood(batch), intensity_form, rtol=1e-12, atol=1e-10)


def test_compensator_equals_fine_quadrature_of_intensity(hawkes_data):
    model = make_model().initialise(hawkes_data).eval()
    with torch.no_grad():
        exact = model.compensator(hawkes_data)
        fine = integrate_intervals(model.intensity, hawkes_data, 128)
        per_interval = model.cumulative_intensity(hawkes_data)
    torch.testing.assert_close(exact, fine.total, rtol=1e-4, atol=0.0)
    torch.testing.assert_close(per_interval, fine.value.cumsum(1)[:, :-1], rtol=1e-4, atol=1e-10)


def test_gap_density_integrates_to_one_and_to_the_survival():
    model = make_model()
    model.log_tau_mean.fill_(-1.0)
    model.log_tau_std.fill_(1.7)
    h = torch.randn(5, model.hidden_size, dtype=torch.float64)
    # tau = exp(y): int p(tau) dtau = int p(e^y) e^y dy, 64 Gauss-Legendre panels over +-40 std of log tau.
    edges = torch.linspace(-1.0 - 40 * 1.7, -1.0 + 40 * 1.7, 65, dtype=torch.float64)
    y, w = gauss_legendre(edges[:-1], edges[1:], 16)
    y, w = y.reshape(-1), w.reshape(-1)
    log_p, _ = model._log_density_survival(h[:, None], y.exp().expand(5, -1))
    mass = (torch.exp(log_p + y) * w).sum(-1)
    torch.testing.assert_close(mass, torch.ones(5, dtype=torch.float64), rtol=1e-10, atol=0.0)
    cut = 0.37
    _, log_surv = model._log_density_survival(h, torch.full((5,), cut, dtype=torch.float64))
    upper = torch.linspace(np.log(cut), float(edges[-1]), 65, dtype=torch.float64)
    y_hi, w_hi = (v.reshape(-1) for v in gauss_legendre(upper[:-1], upper[1:], 16))
    log_p_hi, _ = model._log_density_survival(h[:, None], y_hi.exp().expand(5, -1))
    torch.testing.assert_close(log_surv.exp(), (torch.exp(log_p_hi + y_hi) * w_hi).sum(-1), rtol=1e-9, atol=0.0)


@pytest.fixture(scope="module")
def sampling_model() -> IntensityFree:
    """Well separated components (means -2 .. 2, scales e^-1), so that conditioning on a quiet time
    moves the component weights a lot; the history still modulates them."""
    model = make_model(hidden_size=8, seed=4, num_mixtures=4)
    with torch.no_grad():
        model.mixture_head.weight.mul_(0.5)
        model.mixture_head.bias.copy_(torch.tensor([0.0] * 4 + [-2.0, -0.7, 0.7, 2.0] + [-1.0] * 4))
    model.log_tau_mean.fill_(0.0)
    model.log_tau_std.fill_(0.5)
    model.standardised.fill_(True)
    return model.eval()


def interval_compensators(model: IntensityFree, batch: EventBatch) -> np.ndarray:
    """``[B, L + 1]`` total compensator of each interval (``-log S`` of its length)."""
    with torch.no_grad():
        return model.interval_compensator(batch, model.encode(batch)).sum(-1).numpy()


def test_samples_follow_the_model_distribution(sampling_model):
    """Probability integral transforms ``1 - S(tau_n | h_{n-1})`` of the first 5 gaps are uniform, and marks
    are drawn with the model's probabilities (the window is long enough that 5 events always come)."""
    data = sampling_model.sample(3000, 40.0, generator=0)
    assert int(data.lengths.min()) >= 8
    pit = 1 - np.exp(-interval_compensators(sampling_model, data)[:, :5].reshape(-1))
    assert scipy.stats.kstest(pit, "uniform").pvalue > 0.01
    with torch.no_grad():
        probs = torch.softmax(sampling_model.mark_head(sampling_model.encode(data)[:, :5]), -1).numpy()
    counts = np.bincount(data.mark[:, :5].numpy().reshape(-1), minlength=3)
    expected = probs.reshape(-1, 3).sum(0)
    assert scipy.stats.chisquare(counts, expected).pvalue > 0.01


def test_continued_samples_condition_on_the_quiet_time(sampling_model):
    """After a history whose window ends ``q`` past its last event, the first new gap has survival
    ``S(tau) / S(q)``: its transform ``1 - S(tau) / S(q)`` is uniform."""
    history = sampling_model.sample(3000, 3.0, generator=1)
    cont = sampling_model.sample(3000, 40.0, history=history, generator=2)
    lengths = history.lengths.numpy()
    for b in (0, 17, 2999):
        np.testing.assert_array_equal(cont.sequences()[b][0][: lengths[b]], history.sequences()[b][0])
    assert bool((cont.lengths > history.lengths).all())
    quiet = interval_compensators(sampling_model, history)[np.arange(3000), lengths]
    through = interval_compensators(sampling_model, cont)[np.arange(3000), lengths]
    pit = 1 - np.exp(-(through - quiet))
    assert scipy.stats.kstest(pit, "uniform").pvalue > 0.01
    assert np.mean(quiet > 0.1) > 0.2  # the conditioning matters for many sequences


def test_exact_predict_matches_the_quadrature_forecast(hawkes_data):
    """The closed-form forecast (log-normal moments, bisection quantiles) equals the protocol's
    quadrature forecast from the hazard, which knows nothing of the mixture."""
    from tpp.process import PointProcess

    torch.manual_seed(3)
    model = IntensityFree(3, hidden_size=8, num_mixtures=3).double()
    model.initialise(hawkes_data)
    with torch.no_grad():
        model.mixture_head.bias[3:6].fill_(-0.5)  # light tails: the quadrature's horizon sees all the mass
        model.mixture_head.bias[6:9].fill_(-1.0)
    exact = model.predict(hawkes_data, quantiles=(0.1, 0.5, 0.9))
    numeric = PointProcess.predict(model, hawkes_data, quantiles=(0.1, 0.5, 0.9), num_intervals=256, num_points=8)
    torch.testing.assert_close(exact.time_mean, numeric.time_mean, rtol=2e-4, atol=1e-6)
    torch.testing.assert_close(exact.time_quantiles, numeric.time_quantiles, rtol=2e-3, atol=1e-4)
    torch.testing.assert_close(exact.mark_probs, numeric.mark_probs, rtol=1e-6, atol=1e-8)
    assert (exact.time_quantiles[:, 0] >= hawkes_data.t_end).all()


def test_forecast_of_a_heavy_tailed_mixture_stays_within_the_horizon(hawkes_data):
    """Wide log-normal components have an astronomically large mean; the forecast, conditional on an
    event before the horizon like every model's, stays finite and inside it."""
    torch.manual_seed(5)
    model = IntensityFree(3, hidden_size=8, num_mixtures=3).double()
    model.initialise(hawkes_data)
    with torch.no_grad():
        model.mixture_head.bias[6:9].fill_(20.0)  # log scales at their bound: e^4 standardised units
    forecast = model.predict(hawkes_data, max_horizon=50.0)
    assert torch.isfinite(forecast.time_mean).all() and torch.isfinite(forecast.time_quantiles).all()
    assert bool((forecast.time_mean <= hawkes_data.t_end + 50.0).all())
    assert bool((forecast.time_quantiles[:, -1] <= hawkes_data.t_end + 50.0 + 1e-9).all())
