"""MarkedHawkes: the complete likelihood against a direct O(N^2) sum, g = 1 against ExpHawkes plus the mark
density, autograd against finite differences, recovery of alpha, exact simulation, the estimator face and CLI."""

import json
import math
import warnings

import numpy as np
import pytest
import torch

from tpp import table
from tpp.events import EventBatch, EventDataError
from tpp.hawkes import ExpHawkes, MarkedHawkes
from tpp.process import PointProcess

from ..conftest import needs_data, tpp_in_process

TRUTH = MarkedHawkes.from_params([0.3, 0.2], [[0.25, 0.1], [0.1, 0.2]], 1.5, [0.8, 0.5], [[2.0, 0.0], [2.3, 0.0]],
                                 threshold=2.5)


@pytest.fixture(scope="module")
def simulated():
    return TRUTH.sample(4, 1500.0, generator=1)


def truncated(batch: EventBatch, t_end: float) -> EventBatch:
    """The events of ``batch`` on ``[t_start, t_end]``, with their features."""
    f = batch.to_flat()
    seq = np.repeat(np.arange(len(batch)), np.diff(f["seq_offsets"]))
    keep = f["times"] <= t_end
    offsets = np.concatenate([[0], np.cumsum(np.bincount(seq[keep], minlength=len(batch)))])
    return EventBatch.from_flat(f["times"][keep], offsets, f["t_start"], np.full(len(batch), t_end), f["marks"][keep],
                                batch.num_marks, features=f["features"][keep], feature_names=batch.feature_names)


def direct_loglik(model: MarkedHawkes, batch: EventBatch) -> np.ndarray:
    """O(N^2): sum log lambda + sum log f(x) - int lambda, per sequence, from the model's parameters."""
    mu, A, beta = model.baseline_, model.adjacency_, model.decay_
    out = []
    column = batch.feature_names.index(model.feature)
    for s in range(len(batch)):
        m = batch.mask[s]
        t, k = batch.time[s][m].numpy(), batch.mark[s][m].numpy()
        x = batch.features[s][m][:, column].numpy()
        z = x - model.reference_
        g = 1 + model.alpha_[k] * z if model.productivity.value == "linear" else np.exp(model.alpha_[k] * z)
        T0, T = float(batch.t_start[s]), float(batch.t_end[s])
        ll = 0.0
        for n in range(t.size):
            past = t < t[n]
            ll += math.log(mu[k[n]] + np.sum(A[k[n], k[past]] * g[past] * beta * np.exp(-beta * (t[n] - t[past]))))
        ll -= mu.sum() * (T - T0) + np.sum(g * A[:, k].sum(0) * (1 - np.exp(-beta * (T - t))))
        if model.mark_distribution.value == "exponential":
            rate = model.mark_params_["rate"][k]
            ll += np.sum(np.log(rate) - rate * (x - model.threshold_))
        else:
            mean, std = model.mark_params_["mean"][k], model.mark_params_["std"][k]
            ll += np.sum(-0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * math.log(2 * math.pi))
        out.append(ll)
    return np.array(out)


def with_tie(batch: EventBatch) -> EventBatch:
    """``batch`` with event 5 of the first sequence moved onto event 4's time."""
    time = batch.time.clone()
    time[0, 5] = time[0, 4]
    return EventBatch(time, batch.mark, batch.mask, batch.t_start, batch.t_end, batch.num_marks,
                      features=batch.features, feature_names=batch.feature_names)


@pytest.mark.parametrize("productivity, marks", [("exp", "exponential"), ("linear", "exponential"),
                                                 ("exp", "gaussian")])
def test_likelihood_equals_the_direct_quadratic_sum(simulated, productivity, marks):
    batch = with_tie(truncated(simulated[:2], 200.0))
    model = MarkedHawkes.from_params(TRUTH.baseline_, TRUTH.adjacency_, 1.5, [0.8, 0.5],
                                     [[2.0, 0.0], [2.3, 0.0]] if marks == "exponential" else [[3.0, 0.5], [3.1, 0.4]],
                                     threshold=2.5, productivity=productivity, mark_distribution=marks)
    with torch.no_grad():
        got = model.log_likelihood(batch).numpy()
    np.testing.assert_allclose(got, direct_loglik(model, batch), rtol=1e-10, atol=0)


def test_with_g_equal_to_one_it_is_exp_hawkes_plus_the_mark_log_density(simulated):
    batch = truncated(simulated, 300.0)
    exp = ExpHawkes.from_params(TRUTH.baseline_, TRUTH.adjacency_, 1.5)
    x = batch.to_flat()["features"][:, 0]
    k = batch.to_flat()["marks"]
    for productivity in ("exp", "linear", "network"):
        model = MarkedHawkes.from_params(TRUTH.baseline_, TRUTH.adjacency_, 1.5, [0.0, 0.0], [[2.0, 0.0], [2.3, 0.0]],
                                         threshold=2.5, productivity="exp" if productivity == "network" else productivity)
        if productivity == "network":  # a network whose output weights vanish: g = exp(0) = 1
            torch.manual_seed(0)
            model = MarkedHawkes(2, productivity="network")
            model.set_params(TRUTH.baseline_, TRUTH.adjacency_, 1.5, None, [[2.0, 0.0], [2.3, 0.0]], 2.5, 2.5)
            with torch.no_grad():
                model.net_out.fill_(-1e4)
        rate = np.array([2.0, 2.3])[k]
        marks = np.bincount(np.repeat(np.arange(len(batch)), batch.lengths.numpy()),
                            weights=np.log(rate) - rate * (x - 2.5), minlength=len(batch))
        with torch.no_grad():
            np.testing.assert_allclose(model.log_likelihood(batch).numpy(), exp.log_likelihood(batch).numpy() + marks,
                                       rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("productivity", ["exp", "linear", "network"])
def test_gradients_pass_gradcheck(simulated, productivity):
    batch = with_tie(truncated(simulated[:1], 80.0))
    torch.manual_seed(0)
    model = MarkedHawkes(2, productivity=productivity, decay=None)
    model.set_params(TRUTH.baseline_, TRUTH.adjacency_, 1.5, None if productivity == "network" else [0.8, 0.5],
                     [[2.0, 0.0], [2.3, 0.0]], 2.5, 2.5)
    names = ["log_baseline", "log_adjacency", "log_decay"] + (
        ["net_weight", "net_bias", "net_out"] if productivity == "network" else ["alpha"])
    inputs = tuple(getattr(model, n).detach().clone().requires_grad_(True) for n in names)

    def ll(*values):
        return torch.func.functional_call(model, dict(zip(names, values)), (batch,), strict=False).sum()

    assert torch.autograd.gradcheck(ll, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_alpha_is_recovered_within_three_standard_errors(simulated):
    model = MarkedHawkes(2).fit(simulated)
    se = model.standard_errors(simulated)
    assert np.all(np.abs(model.alpha_ - TRUTH.alpha_) < 3 * se["alpha"]), (model.alpha_, se["alpha"])
    assert np.all(se["alpha"] < 0.3)  # informative
    assert abs(model.decay_ - 1.5) < 3 * se["decay"]
    assert np.all(np.abs(model.adjacency_ - TRUTH.adjacency_) < 3 * se["adjacency"])
    assert np.all(np.abs(model.baseline_ - TRUTH.baseline_) < 3 * se["baseline"])
    # Gutenberg-Richter rates in closed form, within 3 of their standard errors rate / sqrt(n)
    counts = np.bincount(simulated.to_flat()["marks"], minlength=2)
    assert np.all(np.abs(model.mark_params_["rate"] - [2.0, 2.3]) < 3 * np.array([2.0, 2.3]) / np.sqrt(counts))
    assert model.fit_result_["converged"]
    with torch.no_grad():
        assert model.fit_result_["log_likelihood"] == pytest.approx(float(model.log_likelihood(simulated).sum()),
                                                                    rel=1e-10)
        assert float(model.log_likelihood(simulated).sum()) >= float(TRUTH.log_likelihood(simulated).sum())


def test_linear_productivity_is_recovered_too():
    truth = MarkedHawkes.from_params([0.5], [[0.3]], 2.0, [1.0], [[1.5, 0.0]], threshold=0.0, productivity="linear")
    data = truth.sample(4, 1500.0, generator=5)
    model = MarkedHawkes(1, productivity="linear", threshold=0.0).fit(data)
    se = model.standard_errors(data)
    assert abs(model.alpha_[0] - 1.0) < 3 * se["alpha"][0]
    fixed = MarkedHawkes(1, productivity="linear", threshold=0.0, decay=2.0).fit(data)
    se_fixed = fixed.standard_errors(data)
    assert fixed.decay_ == 2.0 and se_fixed["decay"] == 0.0 and abs(fixed.alpha_[0] - 1.0) < 3 * se_fixed["alpha"][0]


def test_simulation_matches_the_model(simulated):
    # the stationary rate (I - M)^-1 mu with M = a E[g], M the mean children per event
    M = TRUTH.adjacency_ * TRUTH.mean_productivity()[None, :]
    assert TRUTH.branching_ratio == pytest.approx(float(np.max(np.abs(np.linalg.eigvals(M)))))
    expected = np.linalg.solve(np.eye(2) - M, TRUTH.baseline_) * 4 * 1500.0
    counts = np.bincount(simulated.to_flat()["marks"], minlength=2)
    assert np.all(np.abs(counts - expected) < 0.1 * expected)
    x = simulated.to_flat()["features"][:, 0]
    assert x.min() >= 2.5 and simulated.feature_names == ("magnitude",)
    # the time-rescaled residuals of the truth are unit exponential
    from tpp.metrics import time_rescaling

    assert time_rescaling(TRUTH, simulated).ks_pvalue > 0.01
    # continuing a history keeps it and adds events after it
    cont = TRUTH.sample(1, 1600.0, history=simulated[:1], generator=2)
    n0 = simulated[:1].num_events
    np.testing.assert_array_equal(cont.time[0, :n0].numpy(), simulated.time[0, :n0].numpy())
    assert cont.num_events > n0 and float(cont.t_end[0]) == 1600.0


def test_closed_form_compensator_equals_the_quadrature_of_the_intensity(simulated):
    batch = truncated(simulated[:2], 100.0)
    with torch.no_grad():
        exact = TRUTH.compensator(batch)
        numeric = PointProcess.compensator(TRUTH, batch, num_points=48)
    torch.testing.assert_close(exact, numeric, rtol=1e-8, atol=0)
    # the kernel of an event at the reference mark, and the intensity just after one such event
    np.testing.assert_allclose(TRUTH.excitation(np.array([0.0, 1.0]))[:, 0, 1], 0.1 * 1.5 * np.exp(-1.5 * np.array([0.0, 1.0])))


def test_table_round_trip_estimator_face_and_errors(simulated, tmp_path):
    torch.manual_seed(0)
    for productivity in ("exp", "network"):
        # the catalogue's completeness threshold, so held-out events below the training minimum still score
        model = table.build("marked-hawkes", simulated, productivity=productivity, threshold=2.5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted = model.fit(truncated(simulated, 300.0), simulated[:1], epochs=1, seed=0)
        assert fitted is model and "val_score" in model.fit_result_
        loaded = table.load(table.save(model, tmp_path / f"{productivity}.json"))
        assert type(loaded) is MarkedHawkes and loaded.productivity.value == productivity
        assert loaded.score(simulated) == pytest.approx(model.score(simulated), rel=1e-12)
    bare = EventBatch.from_flat([1.0, 2.0], [0, 2], [0.0], [3.0])
    with pytest.raises(EventDataError, match="needs the feature 'magnitude'"):
        MarkedHawkes(1).fit(bare)
    low = EventBatch.from_flat([1.0, 2.0], [0, 2], [0.0], [3.0], features=[3.0, 1.0], feature_names=["magnitude"])
    with pytest.raises(EventDataError, match="position 1.*below the threshold 2.0"):
        MarkedHawkes(1, threshold=2.0).fit(low)
    with pytest.raises(ValueError, match="linear.*bounded below"):
        MarkedHawkes(1, productivity="linear", mark_distribution="gaussian")
    with pytest.raises(ValueError, match="productivity must be one of"):
        MarkedHawkes(1, productivity="quadratic")


@needs_data
def test_cli_fits_an_earthquake_catalogue_with_magnitudes():
    res = tpp_in_process("fit", "--model", "marked-hawkes", "--data", "ridgecrest", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["model"] == "marked-hawkes" and out["num_events"] == 829 and out["feature"] == "magnitude"
    assert out["alpha"][0] > 0 and out["threshold"] == 2.5 and math.isfinite(out["log_likelihood"])
