"""The Laplace observation model of the series models' regression / forecast head (``likelihood="laplace"``):
its log density is torch's Laplace, its location learns the median (what an MAE rewards; a Gaussian head
learns the mean), and a Laplace predictive is scored with the Laplace's density, CRPS and intervals."""

import math

import numpy as np
import pytest
import torch

from sde.metrics import Laplace, crps_laplace, crps_samples, inside_interval, laplace_interval
from sde.models import GRUD, ODERNN, Task
from sde.models.baselines import GRUTime
from sde.models.heads import GaussianHead, GaussianPrediction, make_head
from sde.series import SeriesBatch
from sde.tasks import Predictive, TargetScale, TaskName, evaluate, make_task, predictive_distribution

from ..conftest import needs_data


def _series(n: int, length: int, channels: int, seed: int) -> SeriesBatch:
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        t = np.sort(rng.uniform(0, 10, length))
        items.append((t, rng.normal(size=(length, channels))))
    return SeriesBatch.from_arrays(items, dtype=torch.float64)


# --------------------------------------------------------------------------- the head
def test_laplace_log_likelihood_is_torchs_laplace_log_prob_summed_over_finite_targets():
    torch.manual_seed(0)
    head = GaussianHead(5, 3, init_std=0.7, likelihood="laplace").double()
    z = torch.randn(4, 6, 5, dtype=torch.float64)
    y = torch.randn(4, 6, 3, dtype=torch.float64) * 2
    y[0, 1, 2] = y[3, 0, 0] = float("nan")
    ll = head.log_likelihood(z, y)
    location = head.net(z)
    b = torch.nn.functional.softplus(head.rho) + 1e-6
    expected = torch.distributions.Laplace(location, b.expand_as(location)).log_prob(torch.nan_to_num(y))
    expected = torch.where(torch.isfinite(y), expected, torch.zeros_like(expected)).flatten(1).sum(1)
    torch.testing.assert_close(ll, expected, rtol=0, atol=1e-12)


def test_laplace_prediction_is_the_location_with_the_laplace_std_and_says_its_family():
    head = GaussianHead(4, 2, init_std=0.5, likelihood="laplace").double()
    z = torch.randn(3, 4, dtype=torch.float64)
    pred = head.predict(z)
    assert pred.family == "laplace"
    torch.testing.assert_close(pred.mean, head.net(z))
    torch.testing.assert_close(pred.std, math.sqrt(2) * head.std().expand(3, 2))
    assert GaussianHead(4, 2).predict(z.float()).family == "gaussian"
    assert GaussianPrediction(z, z).family == "gaussian"  # old constructions keep working


def test_laplace_and_gaussian_heads_have_the_same_state_dict_keys():
    assert list(GaussianHead(4, 2, likelihood="laplace").state_dict()) == list(GaussianHead(4, 2).state_dict())


def test_laplace_log_likelihood_passes_gradcheck_in_float64():
    torch.manual_seed(1)
    head = GaussianHead(3, 2, likelihood="laplace").double()
    z = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    # targets away from the location: |y - mu| is smooth there
    y = head.net(z).detach() + torch.tensor([[0.5, -0.7]], dtype=torch.float64)
    y[1, 0] = float("nan")
    rho = head.rho

    def f(z_: torch.Tensor, rho_: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            head.rho.copy_(rho_.detach())
        b = torch.nn.functional.softplus(rho_) + 1e-6
        mean = head.net(z_)
        observed = torch.isfinite(y)
        yy = torch.where(observed, y, mean.detach())
        return ((-torch.log(2 * b) - (yy - mean).abs() / b) * observed).sum(1)

    assert torch.autograd.gradcheck(lambda z_: head.log_likelihood(z_, y), (z,))
    assert torch.autograd.gradcheck(f, (z, rho.detach().clone().requires_grad_(True)))
    # the head's own gradient with respect to rho is the formula's
    head.zero_grad()
    head.log_likelihood(z.detach(), y).sum().backward()
    r = rho.detach().clone().requires_grad_(True)
    f(z.detach(), r).sum().backward()
    torch.testing.assert_close(head.rho.grad, r.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls", [GRUD, ODERNN, GRUTime])
def test_likelihood_is_validated_and_kept_by_the_series_models(cls):
    model = cls(2, 8, 2, Task.FORECAST, likelihood="laplace")
    assert model.likelihood == "laplace" and model.head.likelihood == "laplace"
    assert cls(2, 8, 2, Task.REGRESSION).head.likelihood == "gaussian"
    with pytest.raises(ValueError, match="'gaussian', 'laplace'"):
        cls(2, 8, 2, Task.FORECAST, likelihood="student")
    with pytest.raises(ValueError, match="classifier"):
        cls(2, 8, 2, Task.CLASSIFICATION, likelihood="laplace")
    assert cls(2, 8, 2, Task.CLASSIFICATION, likelihood="gaussian").likelihood == "gaussian"


def test_make_head_takes_the_likelihood_and_refuses_it_for_a_classifier():
    assert make_head(Task.FORECAST, 4, 2, None, likelihood="laplace").likelihood == "laplace"
    with pytest.raises(ValueError, match="classifier"):
        make_head(Task.CLASSIFICATION, 4, 2, None, likelihood="laplace")
    with pytest.raises(ValueError, match="one of"):
        make_head(Task.REGRESSION, 4, 2, None, likelihood="cauchy")


def test_table_save_and_load_keep_likelihood_laplace(tmp_path):
    import sde.table  # noqa: F401 - registers the series models in the model table
    from tpp import table

    torch.manual_seed(0)
    data = _series(6, 5, 2, seed=0)
    targets = torch.randn(6, 5, 2, dtype=torch.float64)
    data = SeriesBatch.from_arrays([(data.time[i].numpy(), data.values[i].numpy()) for i in range(6)],
                                   targets=targets, dtype=torch.float64)
    for model in (GRUD(2, 8, 2, Task.FORECAST, likelihood="laplace").double(),
                  table.build("gru-d", data, seed=0, task=Task.FORECAST, output_size=2, hidden_size=8,
                              likelihood="laplace")):
        model.initialise(data)
        loaded = table.load(table.save(model, tmp_path / "grud.pt"))
        assert loaded.likelihood == "laplace" and loaded.head.likelihood == "laplace"
        assert table.constructor_args(loaded)["likelihood"] == "laplace"
        assert loaded.score(data) == model.score(data)


# --------------------------------------------------------------------------- the location is a median
def test_a_laplace_head_learns_the_median_and_a_gaussian_head_the_mean_of_skewed_targets():
    """Constant inputs, exponential targets (mean 1, median log 2): the state is the same for every
    series, so the readout's output is one number, the minimiser of the loss."""
    n = 1000
    rng = np.random.default_rng(0)
    y = torch.as_tensor(rng.exponential(1.0, size=(n, 1)))
    data = SeriesBatch.from_arrays([(np.array([0.0, 1.0, 2.0]), np.ones((3, 1)))] * n, targets=y,
                                   dtype=torch.float64)
    found = {}
    for likelihood in ("gaussian", "laplace"):
        torch.manual_seed(0)
        model = GRUD(1, 4, 1, Task.REGRESSION, likelihood=likelihood).double()
        model.initialise(data)
        optimiser = torch.optim.Adam(model.parameters(), lr=0.03)
        for _ in range(300):
            optimiser.zero_grad()
            (-model.objective(data).mean()).backward()
            optimiser.step()
        pred = model.predict(data)
        assert float(pred.mean.std()) < 1e-6  # one prediction for all
        found[likelihood] = float(pred.mean[0, 0])
    median, mean = float(y.median()), float(y.mean())
    assert abs(found["laplace"] - median) < 0.05, found
    assert abs(found["gaussian"] - mean) < 0.05, found
    # and so the Laplace head has the lower MAE
    assert float((y - found["laplace"]).abs().mean()) < float((y - found["gaussian"]).abs().mean())


# --------------------------------------------------------------------------- metrics
def test_crps_laplace_equals_the_integral_of_the_squared_cdf_difference():
    from scipy import integrate

    def cdf(x: float, m: float, b: float) -> float:
        return 0.5 * math.exp((x - m) / b) if x < m else 1 - 0.5 * math.exp(-(x - m) / b)

    for m, b, y in [(0.0, 1.0, 0.3), (2.0, 0.5, -1.0), (-1.0, 3.0, 4.0), (0.5, 0.2, 0.5)]:
        lo, hi = min(m, y) - 60 * b, max(m, y) + 60 * b
        points = sorted({m, y})
        left, _ = integrate.quad(lambda x: cdf(x, m, b) ** 2, lo, y, points=[p for p in points if lo < p < y],
                                 epsabs=1e-13, epsrel=1e-13, limit=200)
        right, _ = integrate.quad(lambda x: (cdf(x, m, b) - 1) ** 2, y, hi, points=[p for p in points if y < p < hi],
                                  epsabs=1e-13, epsrel=1e-13, limit=200)
        assert abs(float(crps_laplace(m, b, y)) - (left + right)) < 1e-8, (m, b, y)


def test_crps_laplace_matches_the_crps_of_many_laplace_draws():
    gen = torch.Generator().manual_seed(0)
    loc = torch.tensor([0.0, 1.5, -2.0], dtype=torch.float64)
    scale = torch.tensor([1.0, 0.3, 2.0], dtype=torch.float64)
    y = torch.tensor([0.4, 1.0, 1.0], dtype=torch.float64)
    u = torch.rand(20000, 3, generator=gen, dtype=torch.float64) - 0.5
    draws = loc - scale * torch.sign(u) * torch.log1p(-2 * u.abs())
    torch.testing.assert_close(crps_samples(draws, y), crps_laplace(loc, scale, y), rtol=0.02, atol=0.01)
    # a point forecast: the absolute error
    assert float(crps_laplace(1.0, 0.0, 3.0)) == 2.0
    with pytest.raises(ValueError, match="scale"):
        crps_laplace(0.0, -1.0, 0.0)


def test_laplace_interval_is_the_central_interval():
    lo, hi = laplace_interval(torch.tensor(1.0), torch.tensor(2.0), 0.9)
    dist = torch.distributions.Laplace(torch.tensor(1.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64))
    assert abs(float(dist.cdf(lo)) - 0.05) < 1e-12 and abs(float(dist.cdf(hi)) - 0.95) < 1e-12
    inside = inside_interval(Laplace(torch.zeros(3), torch.ones(3)), torch.tensor([0.0, 0.69, 0.7]), 0.5)
    assert inside.tolist() == [True, True, False]  # half-width log 2 = 0.693


# --------------------------------------------------------------------------- scoring a Laplace forecaster
def _task_and_model(likelihood: str):
    torch.manual_seed(0)
    batch = _series(12, 8, 2, seed=1)
    train = make_task(batch, TaskName.FORECAST, seed=0, train=True)
    test = make_task(batch, TaskName.FORECAST, seed=1, scale=train.scale)
    model = GRUD(2, 8, 2, Task.FORECAST, likelihood=likelihood).double()
    model.initialise(train.inputs)
    with torch.no_grad():
        model.head.rho.copy_(torch.tensor([-0.5, 0.4], dtype=torch.float64))
    return model, test


def test_a_laplace_predictive_is_scored_with_the_laplace_density_crps_and_intervals():
    model, test = _task_and_model("laplace")
    result = evaluate(model, test, seed=0)
    pred = predictive_distribution(model, test.inputs, test.scale)
    assert pred.kind == result["predictive"] == "laplace"
    mean_c, std_c = test.scale.tensors(pred.mean)
    b_model = torch.nn.functional.softplus(model.head.rho.detach()) + 1e-6
    torch.testing.assert_close(pred.laplace_scale, (b_model * std_c).expand_as(pred.mean))  # b in data units
    where = test.scored
    y = test.values[where]
    m, b = pred.mean[where], pred.laplace_scale[where]
    n = test.num_scored
    ll = float(torch.distributions.Laplace(m, b).log_prob(y).sum()) / n
    assert result["test_log_likelihood"] == pytest.approx(ll, rel=1e-12)
    err = (y - m).abs()
    assert result["test_crps"] == pytest.approx(float((err + b * torch.exp(-err / b) - 0.75 * b).sum()) / n, rel=1e-12)
    assert result["test_mae"] == pytest.approx(float(err.sum()) / n, rel=1e-12)
    for level in (0.5, 0.9):
        cover = float((err <= b * math.log(1 / (1 - level))).double().sum()) / n
        assert result[f"coverage_{round(100 * level)}"] == pytest.approx(cover, abs=1e-12)
    # the Gaussian head of the same model is scored as before, with the Gaussian density
    gauss, _ = _task_and_model("gaussian")
    assert evaluate(gauss, test, seed=0)["predictive"] == "gaussian"


def test_central_intervals_of_a_laplace_predictive_cover_their_level_on_its_own_draws():
    model, test = _task_and_model("laplace")
    pred = predictive_distribution(model, test.inputs, test.scale)
    where = torch.ones_like(pred.mean, dtype=torch.bool)
    m, b = pred.mean[where], pred.laplace_scale[where]
    repeats = 20000 // m.numel() + 1
    gen = torch.Generator().manual_seed(3)
    u = torch.rand(repeats, m.numel(), generator=gen, dtype=torch.float64) - 0.5
    draws = m - b * torch.sign(u) * torch.log1p(-2 * u.abs())  # [R, N] from Laplace(m, b)
    for level in (0.5, 0.9):
        covered = torch.stack([pred.inside(draws[r], where, level) for r in range(repeats)])
        assert abs(float(covered.double().mean()) - level) < 0.02, level


def test_a_gaussian_predictive_keeps_its_kind_and_the_laplace_kind_needs_no_samples():
    mean = torch.zeros(1, 2, 1, dtype=torch.float64)
    assert Predictive(mean, torch.ones_like(mean)).kind == "gaussian"
    assert Predictive(mean, torch.ones_like(mean), family="laplace").kind == "laplace"
    assert TargetScale((0.0,), (1.0,)).std == (1.0,)


# --------------------------------------------------------------------------- the sde command
@needs_data
def test_sde_fit_likelihood_laplace_reaches_the_model_and_eval_scores_it_the_same(small_ts, tmp_path):
    import json

    from typer.testing import CliRunner

    from sde.cli import app

    runner = CliRunner()
    common = ["--data", str(small_ts), "--task", "forecast", "--json"]
    res = runner.invoke(app, ["fit", "--model", "gru-d", *common, "--epochs", "1", "--hidden-size", "8",
                              "--likelihood", "laplace", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    fitted = json.loads(res.stdout)
    assert fitted["likelihood"] == "laplace" and fitted["predictive"] == "laplace"
    res = runner.invoke(app, ["eval", "--model-file", str(tmp_path / "run"), *common])
    assert res.exit_code == 0, res.output
    again = json.loads(res.stdout)
    for key in ("test_mae", "test_log_likelihood", "test_crps", "coverage_90", "predictive"):
        assert again[key] == fitted[key], key
    # a model without the option, and a classifier, are refused with one line (exit 2), not ignored
    for model, task in (("latent-sde", "forecast"), ("gru-d", "classify")):
        res = runner.invoke(app, ["fit", "--model", model, "--data", str(small_ts), "--task", task, "--epochs", "1",
                                  "--likelihood", "laplace", "--json"])
        assert res.exit_code == 2 and "--likelihood" in res.output, res.output


def test_the_jax_twin_refuses_a_laplace_head_rather_than_turning_it_gaussian():
    pytest.importorskip("equinox")
    from sde.jax.convert import from_torch
    from sde.models.ode import NeuralODE

    with pytest.raises(ValueError, match="likelihood='laplace'"):
        from_torch(NeuralODE(2, 8, 2, Task.FORECAST, likelihood="laplace"))
