"""Time-rescaling residuals, KS test, QQ data, and the comparison report."""

import json

import numpy as np
import pytest

from tpp import EventBatch
from tpp.hawkes import ExpHawkes, Poisson
from tpp.metrics import log_likelihood_per_event, rescaled_residuals, time_rescaling
from tpp.report import MODEL_NAMES, compare_models, write_report


def test_poisson_residuals_are_rate_times_same_type_gaps():
    batch = EventBatch.from_sequences([[1.0, 2.0, 4.0, 7.0]], [[0, 1, 0, 1]], t_start=0.5, t_end=8.0, num_marks=2)
    res = np.sort(rescaled_residuals(Poisson.from_params([2.0, 3.0]), batch))
    expected = np.sort([2.0 * 0.5, 2.0 * 3.0, 3.0 * 1.5, 3.0 * 5.0])
    np.testing.assert_allclose(res, expected)


def test_residual_count_equals_event_count_across_sequences():
    model = ExpHawkes.from_params([0.5, 0.3], [[0.3, 0.1], [0.2, 0.4]], 2.0)
    data = model.sample(5, 200.0, generator=0)
    assert rescaled_residuals(model, data).size == data.num_events


def test_qq_quantiles_are_exponential_and_sorted():
    model = Poisson.from_params([1.0])
    data = model.sample(1, 5000.0, generator=1)
    res = time_rescaling(model, data)
    theo, emp = res.qq(num=200)
    assert np.all(np.diff(emp) >= 0) and theo.size == 200
    np.testing.assert_allclose(np.median(emp), np.log(2), atol=0.05)


def test_log_likelihood_per_event_is_total_over_count():
    model = Poisson.from_params([2.0])
    data = model.sample(3, 10.0, generator=2)
    assert log_likelihood_per_event(model, data) == pytest.approx(float(model.log_likelihood(data).detach().sum()) / data.num_events)


def test_log_likelihood_per_event_takes_the_quadrature_rule_as_an_argument_and_batches_sequences():
    """A neural model's rule and memory bound are arguments: scoring in batches of sequences and chunks of intervals
    gives the one-call value, and the model's own default is left as it was."""
    import torch

    from tpp.neural import THP

    data = ExpHawkes.from_params([0.5, 0.3], [[0.3, 0.1], [0.2, 0.4]], 2.0).sample(7, 20.0, generator=2)
    torch.manual_seed(0)
    model = THP(2, hidden_size=8).double().eval()
    whole = log_likelihood_per_event(model, data, num_points=12)
    assert whole == pytest.approx(model.score(data, num_points=12), rel=1e-12)
    pieces = log_likelihood_per_event(model, data, num_points=12, chunk_size=4, batch_size=3)
    assert pieces == pytest.approx(whole, rel=1e-12)
    assert whole != log_likelihood_per_event(model, data, num_points=2)
    assert model.num_points == 16


def test_report_prefers_hawkes_on_hawkes_data_and_writes_plots(tmp_path):
    truth = ExpHawkes.from_params([0.5, 0.3], [[0.3, 0.1], [0.2, 0.4]], 2.0)
    train = truth.sample(4, 2000.0, generator=3)
    test = truth.sample(2, 2000.0, generator=4)
    reports = compare_models(train, test, progress=False)
    by_name = {r.name: r for r in reports}
    assert by_name["exp-hawkes"].test_ll_per_event > by_name["poisson"].test_ll_per_event + 0.05
    assert by_name["exp-hawkes"].rescaling.ks_pvalue > 1e-3 > by_name["poisson"].rescaling.ks_pvalue
    table = write_report(reports, train, test, tmp_path, title="simulated")
    assert list(table["model"]) == list(MODEL_NAMES)
    assert list(MODEL_NAMES[:3]) == ["poisson", "exp-hawkes", "sumexp-hawkes"]
    assert "marked-hawkes" not in MODEL_NAMES  # it needs a feature column these events lack
    for name in ("qq.png", "intensity.png", "kernels.png", "adjacency_exp-hawkes.png"):
        assert (tmp_path / name).stat().st_size > 5000
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload[1]["decay"] == pytest.approx(by_name["exp-hawkes"].model.decay_)


def test_log_likelihood_split_adds_up_and_mark_part_is_exact_for_poisson():
    from tpp.metrics import log_likelihood_split

    model = Poisson.from_params([1.0, 3.0])
    data = model.sample(2, 50.0, generator=1)
    split = log_likelihood_split(model, data)
    assert split["time"] + split["mark"] == pytest.approx(split["total"])
    n0 = int((data.mark[data.mask] == 0).sum())
    expected_mark = (n0 * np.log(0.25) + (data.num_events - n0) * np.log(0.75)) / data.num_events
    assert split["mark"] == pytest.approx(expected_mark)


def test_next_event_metrics_are_calibrated_for_the_true_model():
    from tpp.metrics import next_event_metrics

    truth = ExpHawkes.from_params([0.4, 0.2], [[0.4, 0.1], [0.1, 0.4]], 2.0)
    data = truth.sample(10, 100.0, generator=2)
    out = next_event_metrics(truth, data, max_prefixes=600, seed=0)
    assert out["num_predictions"] == 600
    # The true model's quantiles are calibrated: observed fractions near the levels (binomial sd ~0.02).
    np.testing.assert_allclose(out["calibration_observed"], out["calibration_levels"], atol=0.07)
    poisson = Poisson(2).fit(data)
    assert out["rmse"] <= next_event_metrics(poisson, data, max_prefixes=600, seed=0)["rmse"] * 1.02
    assert 0.5 < out["accuracy"] <= 1.0
