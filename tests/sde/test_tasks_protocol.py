"""The documented protocols of sde.tasks (issue 14): interpolation_split / forecast_split, masks saved and
loaded for a peer, no held-out value reaching a model; the scores of sde.metrics (CRPS, interval coverage,
AUROC, AUPRC) and the keys evaluate() and `sde fit` report with them, on PhysioNet 2012 too."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sde import metrics
from sde.cli import app
from sde.series import SeriesBatch
from sde.tasks import (
    Predictive,
    TaskName,
    derived_seed,
    drop_values,
    evaluate,
    forecast_split,
    interpolation_split,
    load_masks,
    make_task,
    predictive_distribution,
    save_masks,
    subsample,
)

from ..conftest import needs_data

runner = CliRunner()


def toy(B: int = 8, L: int = 14, C: int = 3, labels: bool = True, seed: int = 0) -> SeriesBatch:
    """Unequal lengths, irregular times, some values missing."""
    g = np.random.default_rng(seed)
    series = []
    for b in range(B):
        n = L - b % 4
        t = np.cumsum(g.uniform(0.2, 1.0, n))
        v = g.normal(size=(n, C))
        v[g.random((n, C)) < 0.2] = np.nan
        series.append((t, v))
    return SeriesBatch.from_arrays(series, [b % 2 for b in range(B)] if labels else None,
                                   ids=[f"s{b}" for b in range(B)])


def observed(batch: SeriesBatch) -> torch.Tensor:
    return batch.mask[..., None] & ~torch.isnan(batch.values)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal, NaN where NaN."""
    return bool(torch.equal(torch.isnan(a), torch.isnan(b)) and torch.equal(torch.nan_to_num(a), torch.nan_to_num(b)))


def perturbed(batch: SeriesBatch, where: torch.Tensor, by: float = 1e3) -> SeriesBatch:
    """``batch`` with the values under ``where`` moved far away (the rest unchanged)."""
    values = torch.where(where, batch.values + by, batch.values)
    return SeriesBatch(batch.time, values, batch.mask, labels=batch.labels, ids=batch.ids)


# --------------------------------------------------------------------------- the split functions
def test_interpolation_split_hides_exactly_the_held_out_values_and_is_seeded():
    batch = toy()
    before = batch.values.clone()
    split = interpolation_split(batch, share=0.3, seed=4)
    assert split.task is TaskName.INTERPOLATE
    assert torch.equal(batch.values.isnan(), before.isnan())  # the batch is not changed
    assert not (split.held_out & ~observed(batch)).any()  # only observed values are held out
    assert torch.isnan(split.inputs.values[split.held_out]).all()
    keep = ~split.held_out
    assert same(split.inputs.values[keep], batch.values[keep])
    assert torch.equal(split.inputs.time, batch.time) and split.inputs.ids == batch.ids
    assert torch.equal(split.inputs.labels, batch.labels)
    assert torch.equal(split.held_out, interpolation_split(batch, share=0.3, seed=4).held_out)
    assert not torch.equal(split.held_out, interpolation_split(batch, share=0.3, seed=5).held_out)
    assert set(split.masks) == {"held_out"}


def test_forecast_split_hides_every_value_of_the_future_rows_and_scores_the_observed_ones():
    batch = toy()
    split = forecast_split(batch, horizon=0.25, seed=0)
    for b, n in enumerate(batch.lengths.tolist()):
        k = math.ceil(0.25 * n)
        assert split.future_rows[b, :n].tolist() == [False] * (n - k) + [True] * k
    assert torch.isnan(split.inputs.values[split.future_rows]).all()
    assert torch.equal(split.held_out, observed(batch) & split.future_rows[..., None])
    past = ~split.future_rows[..., None].expand_as(batch.values)
    assert same(split.inputs.values[past], batch.values[past])
    assert set(split.masks) == {"held_out", "future_rows"}


def test_forecast_split_keeps_a_one_row_series_unscored_and_says_so():
    batch = SeriesBatch.from_arrays([(np.arange(5.0), np.ones((5, 1))), (np.zeros(1), np.ones((1, 1)))], ids=["a", "b"])
    with pytest.warns(UserWarning, match=r"1 series with fewer than 2 rows \('b'\)"):
        split = forecast_split(batch, horizon=0.2)
    assert not split.held_out[1].any() and split.held_out[0].sum() == 1


def test_make_task_uses_the_public_splits_with_its_derived_seed():
    batch = toy(labels=False)
    seed, share = 7, 0.25
    task = make_task(batch, TaskName.INTERPOLATE, seed=seed, missing=0.2, holdout=share, train=True)
    dropped, _ = drop_values(batch, 0.2, derived_seed(seed, 1))
    split = interpolation_split(dropped, share=share, seed=derived_seed(seed, 2))
    assert torch.equal(task.scored, split.held_out) and same(task.inputs.values, split.inputs.values)
    future = make_task(batch, TaskName.FORECAST, seed=seed, scale=task.scale)
    fsplit = forecast_split(batch, horizon=0.2)
    assert torch.equal(future.scored, fsplit.held_out) and torch.equal(future.masks["future_rows"], fsplit.future_rows)


# --------------------------------------------------------------------------- masks on disk
def test_masks_round_trip_through_an_atomically_written_npz(tmp_path):
    batch = toy(labels=False)
    train = make_task(batch, TaskName.INTERPOLATE, seed=0, missing=0.1, train=True)
    test = make_task(batch, TaskName.INTERPOLATE, seed=1, missing=0.1, scale=train.scale)
    path = save_masks(tmp_path / "masks.npz", test)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks.npz"]  # no temporary file left behind
    loaded = load_masks(path)
    for name, mask in test.masks.items():
        assert loaded[name].dtype == bool and np.array_equal(loaded[name], mask.numpy())
    assert loaded["ids"].tolist() == list(batch.ids) and str(loaded["task"]) == "interpolate"
    assert np.array_equal(loaded["lengths"], batch.lengths.numpy())
    np.testing.assert_array_equal(loaded["time"], batch.time.numpy())
    split = forecast_split(batch, horizon=0.3)
    loaded = load_masks(save_masks(tmp_path / "f.npz", split))
    assert np.array_equal(loaded["future_rows"], split.future_rows.numpy()) and str(loaded["task"]) == "forecast"
    assert set(load_masks(save_masks(tmp_path / "d.npz", {"held_out": split.held_out}))) == {"format", "held_out"}


def test_load_masks_names_a_file_that_is_not_a_mask_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(ValueError, match="bad.npz"):
        load_masks(bad)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_masks(tmp_path / "missing.npz")


# --------------------------------------------------------------------------- no held-out value reaches a model
def _fitted(name: str, task: TaskName, train, seed: int = 0):
    import sde.table  # noqa: F401
    from tpp import fit, table

    model = table.build(name, train.inputs, seed=seed, task=task.head, output_size=train.inputs.num_channels,
                        hidden_size=8)
    fit(model, train.inputs, epochs=2, batch_size=4, lr=1e-2, seed=seed)
    return model


@pytest.mark.parametrize("task", [TaskName.INTERPOLATE, TaskName.FORECAST])
@pytest.mark.parametrize("name", ["gru", "neural-cde"])
def test_a_held_out_value_never_reaches_the_inputs_or_the_predictions(name, task):
    batch = toy(labels=False)
    train = make_task(batch, task, seed=0, train=True)
    model = _fitted(name, task, train)
    test = make_task(batch, task, seed=1, scale=train.scale)
    moved = make_task(perturbed(batch, test.scored), task, seed=1, scale=train.scale)
    assert torch.equal(moved.scored, test.scored) and test.num_scored > 0
    assert same(moved.inputs.values, test.inputs.values)  # the inputs: identical
    assert not same(moved.values, test.values)  # (the truth did move)
    a, b = predictive_distribution(model, test.inputs, train.scale), predictive_distribution(model, moved.inputs,
                                                                                             train.scale)
    assert torch.equal(a.mean, b.mean) and torch.equal(a.std, b.std)
    first, second = evaluate(model, test, seed=0), evaluate(model, moved, seed=0)
    assert first["n_test_values"] == second["n_test_values"] and first["test_mae"] != second["test_mae"]


def test_the_latent_sde_samples_do_not_see_held_out_values():
    batch = toy(labels=False)
    train = make_task(batch, TaskName.INTERPOLATE, seed=0, train=True)
    import sde.table  # noqa: F401
    from tpp import table

    model = table.build("latent-sde", train.inputs, seed=0, hidden_size=8)
    test = make_task(batch, TaskName.INTERPOLATE, seed=1, scale=train.scale)
    moved = make_task(perturbed(batch, test.scored), TaskName.INTERPOLATE, seed=1, scale=train.scale)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        a = predictive_distribution(model, test.inputs, train.scale)
        torch.manual_seed(3)
        b = predictive_distribution(model, moved.inputs, train.scale)
    assert a.kind == "mixture" and a.samples.shape[1:] == test.values.shape
    assert torch.equal(a.samples, b.samples)


# --------------------------------------------------------------------------- metrics
def _crps_by_integral(cdf, y: float, lo: float = -12.0, hi: float = 12.0, n: int = 100001) -> float:
    """``int F(x)**2 dx`` below ``y`` plus ``int (1 - F(x))**2 dx`` above it (trapezoids, split at the step)."""
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    below, above = np.linspace(lo, y, n), np.linspace(y, hi, n)
    return float(trapezoid(cdf(below) ** 2, below) + trapezoid((1 - cdf(above)) ** 2, above))


def _normal_cdf(x, m=0.0, s=1.0):
    return 0.5 * (1 + torch.erf(torch.as_tensor((x - m) / (s * math.sqrt(2))))).numpy()


def test_crps_gaussian_is_the_integral_of_the_squared_cdf_difference():
    for m, s, y in [(0.0, 1.0, 0.3), (1.0, 2.0, -1.5), (-0.5, 0.4, 2.0)]:
        expected = _crps_by_integral(lambda x: _normal_cdf(x, m, s), y)
        assert float(metrics.crps_gaussian(m, s, y)) == pytest.approx(expected, abs=1e-6)
    assert float(metrics.crps_gaussian(0.0, 0.0, 2.5)) == 2.5  # a point forecast: the absolute error
    # at the mean of a standard normal: (sqrt(2) - 1) / sqrt(pi)
    assert float(metrics.crps_gaussian(0.0, 1.0, 0.0)) == pytest.approx((math.sqrt(2) - 1) / math.sqrt(math.pi))


def test_crps_samples_is_the_unbiased_energy_form():
    g = np.random.default_rng(0)
    x, y = g.normal(size=(7, 5)), g.normal(size=5)
    brute = np.abs(x - y).mean(0) - np.abs(x[:, None] - x[None, :]).sum((0, 1)) / (2 * 7 * 6)
    np.testing.assert_allclose(metrics.crps_samples(x, y).numpy(), brute, rtol=1e-12)
    assert float(metrics.crps_samples([[1.0], [3.0]], [2.0])[0]) == pytest.approx(1.0 - 1.0)  # 1 - |1-3|/2
    # unbiased: the mean over many draws of 3 samples is the Gaussian's CRPS (the plug-in form is not)
    draws = torch.randn(3, 200000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert float(metrics.crps_samples(draws, torch.full((200000,), 0.5)).mean()) == pytest.approx(
        float(metrics.crps_gaussian(0.0, 1.0, 0.5)), abs=5e-3)
    with pytest.raises(ValueError, match="at least 2 samples"):
        metrics.crps_samples([[1.0]], [1.0])


def test_crps_mixture_is_exact():
    means, s, y = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64), 0.7, 0.2
    w = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)

    def cdf(x):
        return sum(float(w[i]) * _normal_cdf(x, float(means[i]), s) for i in range(3))

    mixture = metrics.GaussianMixture(means[:, None], torch.tensor([s]), w[:, None])
    got = metrics.crps_mixture(mixture, torch.tensor([y]))
    assert float(got[0]) == pytest.approx(_crps_by_integral(cdf, y), abs=1e-6)
    one = metrics.crps_mixture(metrics.GaussianMixture(torch.tensor([[0.3]]), torch.tensor([1.2])), torch.tensor([1.0]))
    assert float(one[0]) == pytest.approx(float(metrics.crps_gaussian(0.3, 1.2, 1.0)), rel=1e-9)


def test_interval_coverage_is_nominal_for_a_calibrated_predictive():
    g = torch.Generator().manual_seed(0)
    n = 40000
    mean, std = torch.randn(n, generator=g, dtype=torch.float64), torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    y = mean + std * torch.randn(n, generator=g, dtype=torch.float64)
    for level in (0.5, 0.9):
        assert metrics.interval_coverage((mean, std), y, level) == pytest.approx(level, abs=0.01)
        samples = mean + std * torch.randn(400, n, generator=g, dtype=torch.float64)
        assert metrics.interval_coverage(samples, y, level) == pytest.approx(level, abs=0.015)
        paths = mean + 0.6 * std * torch.randn(16, n, generator=g, dtype=torch.float64)  # a mixture: 16 paths + noise
        mixture = metrics.GaussianMixture(paths, 0.8 * std)
        truth = paths[0] + 0.8 * std * torch.randn(n, generator=g, dtype=torch.float64)  # drawn from the mixture
        assert metrics.interval_coverage(mixture, truth, level) == pytest.approx(level, abs=0.01)
    assert metrics.interval_coverage((torch.zeros(1), torch.ones(1)), torch.tensor([1.64]), 0.9) == 1.0
    assert metrics.interval_coverage((torch.zeros(1), torch.ones(1)), torch.tensor([1.65]), 0.9) == 0.0


def test_auroc_and_auprc_on_small_examples_with_ties():
    assert metrics.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert metrics.auroc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5  # all tied: one half
    assert metrics.auroc([0.2, 0.5, 0.5, 0.9], [0, 0, 1, 1]) == pytest.approx((1 + 1 + 1 + 0.5) / 4)
    assert metrics.auroc([0.9, 0.1], [1, 1]) != metrics.auroc([0.9, 0.1], [1, 1])  # NaN: one class only
    # AP: thresholds 0.8 (1 tp / 1), 0.4 (1 / 2), 0.35 (2 / 3), 0.1 (2 / 4): 1/2 * 1 + 1/2 * 2/3
    assert metrics.auprc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.5 + 1 / 3)
    # tied scores are one threshold: {0.5, 0.5} holds one positive of two -> precision 1/2 at recall 1/2
    assert metrics.auprc([0.5, 0.5, 0.9], [0, 1, 1]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert metrics.auprc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 0]) == pytest.approx(0.25)  # all tied: the base rate
    with pytest.raises(ValueError, match="0 or 1"):
        metrics.auroc([0.1, 0.2], [0, 2])


def test_auroc_and_auprc_match_scikit_learn():
    from sklearn.metrics import average_precision_score, roc_auc_score

    g = np.random.default_rng(0)
    for _ in range(20):
        labels = (g.random(60) < 0.15).astype(int)
        labels[:2] = [0, 1]
        scores = np.round(g.random(60), 1)  # many ties
        assert metrics.auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        assert metrics.auprc(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


def test_metrics_import_without_torch():
    code = "import sys, sde.metrics; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


# --------------------------------------------------------------------------- evaluate
def test_evaluate_reports_crps_and_coverage_beside_the_point_scores():
    batch = toy(labels=False)
    train = make_task(batch, TaskName.FORECAST, seed=0, train=True)
    model = _fitted("gru", TaskName.FORECAST, train)
    test = make_task(batch, TaskName.FORECAST, seed=1, scale=train.scale)
    out = evaluate(model, test, seed=0)
    for key in ("test_mse", "test_mae", "test_log_likelihood", "test_crps", "coverage_50", "coverage_90"):
        assert math.isfinite(out[key]), key
    assert out["predictive"] == "gaussian" and 0 <= out["coverage_50"] <= out["coverage_90"] <= 1
    assert 0 < out["test_crps"] <= out["test_mae"]  # a Gaussian's CRPS is below its mean's absolute error
    pred = predictive_distribution(model, test.inputs, train.scale)
    y = test.values[test.scored]
    assert out["test_crps"] == pytest.approx(float(metrics.crps_gaussian(pred.mean[test.scored], pred.std[test.scored],
                                                                         y).mean()))


def test_predictive_with_samples_scores_them():
    mean = torch.zeros(1, 2, 1, dtype=torch.float64)
    samples = torch.tensor([-1.0, 1.0], dtype=torch.float64).reshape(2, 1, 1, 1).expand(2, 1, 2, 1)
    where = torch.ones(1, 2, 1, dtype=torch.bool)
    y = torch.tensor([0.0, 3.0], dtype=torch.float64)
    pure = Predictive(mean, torch.ones_like(mean), samples)
    assert pure.kind == "samples" and pure.crps(y, where).tolist() == pytest.approx([1 - 1, 3 - 1])
    mix = Predictive(mean, torch.ones_like(mean), samples, torch.tensor([0.5]))
    assert mix.kind == "mixture"
    assert mix.inside(y, where, 0.9).tolist() == [True, False]


def test_evaluate_reports_auroc_and_auprc_for_two_classes():
    batch = toy(B=12, labels=True)
    import sde.table  # noqa: F401
    from tpp import fit, table

    task = make_task(batch, TaskName.CLASSIFY, seed=0, train=True)
    model = table.build("gru", task.inputs, seed=0, task=TaskName.CLASSIFY.head, output_size=2, hidden_size=8)
    fit(model, task.inputs, epochs=1, batch_size=4, seed=0)
    out = evaluate(model, task, seed=0)
    probs = model.predict(task.inputs)[:, 1]
    assert out["test_auroc"] == pytest.approx(metrics.auroc(probs, batch.labels))
    assert out["test_auprc"] == pytest.approx(metrics.auprc(probs, batch.labels))
    hits = model.predict(task.inputs).argmax(1) == batch.labels
    assert out["test_accuracy"] == pytest.approx(float(hits.double().mean()))


def test_subsample_is_seeded_and_keeps_the_order():
    batch = toy(B=10)
    part = subsample(batch, 4, seed=3)
    assert len(part) == 4 and list(part.ids) == sorted(part.ids, key=lambda s: int(s[1:]))
    assert part.ids == subsample(batch, 4, seed=3).ids != subsample(batch, 4, seed=4).ids
    assert subsample(batch, 20, seed=0) is batch


# --------------------------------------------------------------------------- the command on PhysioNet 2012
def _fit(*args: str) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = runner.invoke(app, ["fit", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])


@needs_data
@pytest.mark.parametrize("task", ["interpolate", "forecast", "classify"])
def test_sde_fit_runs_every_task_on_physionet2012(task, tmp_path):
    out = _fit("--model", "gru", "--data", "physionet2012", "--task", task, "--epochs", "1", "--hidden-size", "8",
               "--max-series", "60", "--json", "--out", str(tmp_path))
    assert out["max_series"] == 60 and out["n_train"] + out["n_val"] == 60 and out["n_test"] == 60
    if task == "classify":
        assert 0 <= out["test_accuracy"] <= 1 and {"test_auroc", "test_auprc"} <= set(out)
        assert not (set(out) & {"test_mse", "test_crps"})
    else:
        for key in ("test_mse", "test_mae", "test_crps", "coverage_50", "coverage_90"):
            assert math.isfinite(out[key]), key
        masks = load_masks(tmp_path / "test_masks.npz")
        assert int(masks["held_out"].sum()) == out["n_test_values"] and len(masks["ids"]) == 60
    again = runner.invoke(app, ["eval", "--model-file", str(tmp_path), "--data", "physionet2012", "--task", task,
                                "--json"])
    assert again.exit_code == 0, again.output
    scores = json.loads(again.stdout.strip().splitlines()[-1])
    key = "test_auroc" if task == "classify" else "test_crps"
    assert scores[key] == pytest.approx(out[key], rel=1e-9) and scores["max_series"] == 60


class _LatentLike(torch.nn.Module):
    """A stand-in with the latent models' interface (``interpolate`` samples, ``noise_std``, ``predict_proba``),
    as LatentODE has it: the value is the last observed value of its channel, plus noise."""

    noise_std = torch.tensor([0.5])

    def interpolate(self, batch, t, num_samples=16, noise=False):
        filled = torch.nan_to_num(batch.values[..., :1], nan=0.0).to(torch.float64)
        return filled.expand(num_samples, *filled.shape) + 0.1 * torch.randn(num_samples, *filled.shape,
                                                                               dtype=torch.float64)

    def predict_proba(self, batch):
        p = torch.sigmoid(torch.nan_to_num(batch.values[:, 0, 0], nan=0.0)).to(torch.float64)
        return torch.stack([1 - p, p], 1)

    def predict(self, batch):  # the values, not class probabilities: evaluate must not read it for classify
        raise AssertionError("predict_proba is the classifier's face")


def test_a_model_with_the_latent_interface_is_scored_as_a_mixture_and_classifies_by_predict_proba():
    batch = toy(C=1, labels=True)
    train = make_task(batch, TaskName.INTERPOLATE, seed=0, train=True)
    test = make_task(batch, TaskName.INTERPOLATE, seed=1, scale=train.scale)
    out = evaluate(_LatentLike(), test, seed=0)
    assert out["predictive"] == "mixture" and math.isfinite(out["test_crps"]) and 0 <= out["coverage_90"] <= 1
    classify = make_task(batch, TaskName.CLASSIFY, seed=0, train=True)
    probs = _LatentLike().predict_proba(batch)[:, 1]
    assert evaluate(_LatentLike(), classify, seed=0)["test_auroc"] == pytest.approx(metrics.auroc(probs, batch.labels))


def test_a_weighted_mixture_predictive_broadcasts_state_means_like_the_neural_mjp():
    # two states with emission means 0 and 10 ([S, 1, 1, C]), posterior weights per row ([S, B, L, 1])
    mu = torch.tensor([0.0, 10.0], dtype=torch.float64).reshape(2, 1, 1, 1)
    q = torch.tensor([[[1.0], [0.0]], [[0.0], [1.0]]], dtype=torch.float64).reshape(2, 1, 2, 1)  # row 0: state 0
    mean = (q * mu).sum(0)
    pred = Predictive(mean, torch.ones_like(mean), mu, torch.tensor([1.0], dtype=torch.float64), q)
    where = torch.ones(1, 2, 1, dtype=torch.bool)
    y = torch.tensor([0.5, 9.0], dtype=torch.float64)
    expected = metrics.crps_gaussian(torch.tensor([0.0, 10.0]), 1.0, y)
    assert pred.crps(y, where).tolist() == pytest.approx(expected.tolist(), rel=1e-9)
    assert pred.inside(y, where, 0.5).tolist() == [True, False]  # |9 - 10| > 0.674
