"""PowerLawHawkes: the sum-of-exponentials approximation of the power law, the exact likelihood against a
direct O(N^2) sum, autograd against finite differences, recovery of the exponent, the estimator face and CLI."""

import json
import math
import warnings

import numpy as np
import pytest
import scipy.integrate
import scipy.special
import torch

from tpp import table
from tpp.events import EventBatch
from tpp.hawkes import PowerLawHawkes, SumExpHawkes
from tpp.hawkes.powerlaw import geometric_decays, powerlaw_kernel, powerlaw_weights

from ..conftest import needs_data, tpp_in_process

RANGE = (1e-4, 1e2)
TRUTH = PowerLawHawkes.from_params([0.4, 0.3], [[0.3, 0.1], [0.2, 0.25]], 1.8, 0.2, RANGE, num_terms=24)


@pytest.fixture(scope="module")
def simulated():
    return TRUTH.sample(4, 2000.0, generator=1)


def approximation_error(p: float, c: float, num_terms: int, decay_range=(1e-4, 1e3)) -> float:
    """``max |f_M / f - 1|`` over ``[10 / beta_max, 0.01 / beta_min]``."""
    beta = geometric_decays(decay_range, num_terms)
    w = powerlaw_weights(p, c, beta).numpy()
    t = np.geomspace(10 / decay_range[1], 0.01 / decay_range[0], 400)
    approx = np.exp(-np.outer(t, beta)) @ (w * beta)
    return float(np.abs(approx / powerlaw_kernel(t, p, c) - 1).max())


@pytest.mark.parametrize("p", [1.5, 2.0, 3.0])
def test_the_sum_of_exponentials_error_falls_as_the_number_of_terms_grows(p):
    errors = [approximation_error(p, 0.01, m) for m in (8, 12, 16, 20)]
    assert all(later < earlier / 2 for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 4e-3  # the docstring's bound at r = 2.3


@pytest.mark.parametrize("p", [1.2, 1.5, 2.0, 3.0])
def test_the_documented_accuracy_and_lost_kernel_mass(p):
    assert approximation_error(p, 0.01, 20) < 4e-3
    assert approximation_error(p, 0.01, 32) < 3e-3
    beta = geometric_decays((1e-4, 1e3), 32)
    lost = 1 - float(powerlaw_weights(p, 0.01, beta).sum())
    # about (c beta_min)^(p - 1) / Gamma(p): the Gamma mixture's mass below the slowest decay
    assert lost == pytest.approx((0.01 * 1e-4) ** (p - 1) / math.gamma(p), rel=0.15, abs=1e-4)


def test_the_kernel_is_a_normalised_power_law():
    total, _ = scipy.integrate.quad(lambda t: float(powerlaw_kernel(t, 1.7, 0.3)), 0, np.inf, limit=200)
    assert total == pytest.approx(1.0, rel=1e-8)
    assert float(powerlaw_kernel(0.0, 1.7, 0.3)) == pytest.approx(0.7 / 0.3, rel=1e-12)


def truncated(batch: EventBatch, t_end: float) -> EventBatch:
    """The events of ``batch`` on ``[t_start, t_end]``."""
    pairs = []
    for s in range(len(batch)):
        m = batch.mask[s] & (batch.time[s] <= t_end)
        pairs.append((batch.time[s][m].numpy(), batch.mark[s][m].numpy()))
    flat_t = np.concatenate([p[0] for p in pairs])
    offsets = np.concatenate([[0], np.cumsum([p[0].size for p in pairs])])
    return EventBatch.from_flat(flat_t, offsets, batch.t_start.numpy(), np.full(len(batch), t_end),
                                np.concatenate([p[1] for p in pairs]), batch.num_marks)


def direct_loglik(model: PowerLawHawkes, batch) -> np.ndarray:
    """O(N^2): sum log(mu + sum_{t_m < t_n} a f_M(t_n - t_m)) - int lambda, per sequence."""
    mu, a = model.baseline_, model.adjacency_
    beta, w = model.decays_, model.weights_
    out = []
    for s in range(len(batch)):
        m = batch.mask[s]
        t, k = batch.time[s][m].numpy(), batch.mark[s][m].numpy()
        T0, T = float(batch.t_start[s]), float(batch.t_end[s])
        ll = 0.0
        for n in range(t.size):
            past = t < t[n]
            lags = t[n] - t[past]
            f = np.exp(-np.outer(lags, beta)) @ (w * beta)
            ll += math.log(mu[k[n]] + np.sum(a[k[n], k[past]] * f))
        integral = (1 - np.exp(-np.outer(T - t, beta))) @ w
        ll -= mu.sum() * (T - T0) + np.sum(a[:, k].sum(0) * integral)
        out.append(ll)
    return np.array(out)


def test_likelihood_equals_the_direct_quadratic_sum(simulated):
    small = truncated(simulated[:2], 150.0)
    ties = small.time.clone()
    ties[0, 5] = ties[0, 4]  # a tie: the later copy is not excited by the earlier
    batch = EventBatch(ties, small.mark, small.mask, small.t_start, small.t_end, small.num_marks)
    got = TRUTH.log_likelihood(batch).detach().numpy()
    want = direct_loglik(TRUTH, batch)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=0)
    # the same as the SumExpHawkes it stands for
    np.testing.assert_allclose(TRUTH.as_sumexp().log_likelihood(batch).detach().numpy(), got, rtol=1e-12)
    assert isinstance(TRUTH.as_sumexp(), SumExpHawkes)


def test_gradients_pass_gradcheck(simulated):
    batch = truncated(simulated[:1], 60.0)  # a short window keeps it fast
    model = PowerLawHawkes.from_params([0.4, 0.3], [[0.3, 0.1], [0.2, 0.25]], 1.8, 0.2, RANGE, num_terms=12)
    names = ["log_baseline", "log_adjacency", "exponent", "cutoff"]
    inputs = tuple(getattr(model, n).detach().clone().requires_grad_(True) for n in names)

    def ll(*values):
        return torch.func.functional_call(model, dict(zip(names, values)), (batch,), strict=False).sum()

    assert torch.autograd.gradcheck(ll, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_exponent_and_cutoff_are_recovered_within_three_standard_errors(simulated):
    model = PowerLawHawkes(2, 24, RANGE).fit(simulated)
    se = model.standard_errors(simulated)
    assert abs(model.exponent_ - 1.8) < 3 * se["exponent"]
    assert abs(model.cutoff_ - 0.2) < 3 * se["cutoff"]
    assert np.all(np.abs(model.adjacency_ - TRUTH.adjacency_) < 3 * se["adjacency"])
    assert np.all(np.abs(model.baseline_ - TRUTH.baseline_) < 3 * se["baseline"])
    assert 0.05 < se["exponent"] < 0.5  # informative, not degenerate
    assert model.fit_result_["converged"] and model.fit_result_["at_bound"] == []
    # the fit is the maximum: the truth's likelihood is lower
    with torch.no_grad():
        assert float(model.log_likelihood(simulated).sum()) >= float(TRUTH.log_likelihood(simulated).sum())
        assert model.fit_result_["log_likelihood"] == pytest.approx(float(model.log_likelihood(simulated).sum()), rel=1e-9)
    # a grid chosen from the data gives the same exponent up to the approximation
    auto = PowerLawHawkes(2).fit(simulated)
    assert abs(auto.exponent_ - model.exponent_) < 0.2 * se["exponent"]


def test_estimator_face_table_round_trip_and_sampling(simulated, tmp_path):
    model = table.build("powerlaw-hawkes", simulated)
    fitted = model.fit(simulated, simulated[:1], epochs=1, seed=0)
    assert fitted is model and "val_score" in model.fit_result_
    assert model.baseline_.shape == (2,) and model.adjacency_.shape == (2, 2)
    assert model.exponent_ > 1 and model.cutoff_ > 0 and model.decays_.shape == (24,)
    assert 0 < model.kernel_mass() <= 1.0001
    loaded = table.load(table.save(model, tmp_path / "model.json"))
    assert type(loaded) is PowerLawHawkes
    assert loaded.score(simulated) == pytest.approx(model.score(simulated), rel=1e-12)
    a, b = model.sample(2, 50.0, generator=3), model.sample(2, 50.0, generator=3)
    assert torch.equal(a.time, b.time) and a.num_events > 0
    cont = model.sample(1, 2100.0, history=simulated[:1], generator=0)
    assert cont.num_events >= simulated[:1].num_events
    with torch.no_grad():
        lam = model.intensity(simulated[:1], torch.tensor([[10.0, 100.0]], dtype=torch.float64))
        comp = model.compensator(simulated[:1])
    assert lam.shape == (1, 2, 2) and bool((lam > 0).all()) and float(comp) > 0


def test_weights_match_the_gamma_mixture_density():
    beta = geometric_decays((1e-3, 1e3), 10)
    w = powerlaw_weights(2.5, 0.1, beta).numpy()
    density = (0.1 ** 1.5 * beta ** 0.5 * np.exp(-0.1 * beta) / scipy.special.gamma(1.5))
    np.testing.assert_allclose(w, density * beta * np.log(beta[1] / beta[0]), rtol=1e-12)


def test_a_coarse_grid_warns_and_bad_arguments_are_refused(simulated):
    with pytest.warns(UserWarning, match="grid ratio"), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        PowerLawHawkes(2, 3, (1e-4, 1e2)).fit(simulated[:1])
    with pytest.raises(ValueError, match="num_terms"):
        PowerLawHawkes(2, 1)
    with pytest.raises(ValueError, match="decay_range"):
        geometric_decays((10.0, 1.0), 5)
    with pytest.raises(ValueError, match="exponent"):
        TRUTH.set_params([0.4, 0.3], TRUTH.adjacency_, 0.9, 0.2)


@needs_data
def test_cli_fits_a_registry_data_set():
    res = tpp_in_process("fit", "--model", "powerlaw-hawkes", "--data", "ridgecrest", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["model"] == "powerlaw-hawkes" and out["num_events"] == 829
    assert 1 < out["exponent"] < 11 and out["cutoff"] > 0 and math.isfinite(out["log_likelihood"])
