"""Neural CDE (and the GRU baseline, the other deterministic model): padding, gradients, missing data,
the heads' likelihoods, and a real data set learned well above chance."""

import math

import numpy as np
import pytest
import torch

from sde.models import GRUTime, NeuralCDE
from sde.models.heads import GaussianPrediction, Task
from sde.paths import drop
from sde.series import SeriesBatch
from tests.conftest import needs_data


def irregular(seed: int, n: int = 4, channels: int = 2, missing: float = 0.3) -> tuple[list, np.ndarray]:
    """``n`` series of 6-14 rows at irregular times (a random subset of a 0.125 grid), values partly NaN."""
    rng = np.random.default_rng(seed)
    series = []
    for _ in range(n):
        rows = int(rng.integers(6, 15))
        times = np.sort(rng.choice(np.arange(48), rows, replace=False)) * 0.125 + rng.uniform(0, 3)
        values = rng.normal(size=(rows, channels))
        values[rng.random((rows, channels)) < missing] = np.nan
        series.append((times, values))
    return series, rng.integers(0, 3, n)


def nan_padded(series: list, extra: int) -> list:
    """The same series with ``extra`` trailing rows whose time and values are NaN."""
    return [(np.concatenate([t, np.full(extra, np.nan)]), np.concatenate([v, np.full((extra, v.shape[1]), np.nan)]))
            for t, v in series]


def pad_columns(batch: SeriesBatch, extra: int) -> SeriesBatch:
    """``batch`` with ``extra`` more padding rows after every series (NaN values, mask False)."""
    B, _, C = batch.values.shape
    return SeriesBatch(torch.cat([batch.time, batch.time.new_zeros(B, extra)], 1),
                       torch.cat([batch.values, batch.values.new_full((B, extra, C), float("nan"))], 1),
                       torch.cat([batch.mask, batch.mask.new_zeros(B, extra)], 1), batch.labels, batch.targets)


@pytest.mark.parametrize("cls", [NeuralCDE, GRUTime])
def test_padded_batch_scores_each_series_as_alone(cls):
    torch.manual_seed(0)
    series, labels = irregular(1)
    batch = pad_columns(SeriesBatch.from_arrays(nan_padded(series, 5), labels), 6)
    model = cls(2, 8, 3).initialise(batch).eval()  # eval: the readout's batch-norm uses running statistics
    together = model.label_log_prob(batch)
    alone = torch.cat([model.label_log_prob(SeriesBatch.from_arrays([s], labels[i : i + 1]))
                       for i, s in enumerate(series)])
    # float32 arithmetic on differently shaped batches: equal up to rounding, no more
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_cde_gradcheck_float64():
    torch.manual_seed(0)
    series, labels = irregular(2, n=2, channels=2, missing=0.0)
    batch = SeriesBatch.from_arrays(series, labels)
    model = NeuralCDE(2, 3, 3, num_layers=1).double().fit_standardisation(batch).eval()
    weight = model.field.net[0].weight

    def score(values: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        changed = SeriesBatch(batch.time, values, batch.mask, batch.labels, validate=False)
        return torch.func.functional_call(model, {"field.net.0.weight": w}, (changed,))

    values = torch.nan_to_num(batch.values).clone().requires_grad_(True)
    weight = weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(score, (values, weight), eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("cls", [NeuralCDE, GRUTime])
def test_half_the_rows_missing_still_trains(cls):
    torch.manual_seed(0)
    series, labels = irregular(3, n=6, missing=0.0)
    for kw in ({}, {"per_channel": True}, {"remove": True}):
        batch = drop(SeriesBatch.from_arrays(series, labels), 0.5, seed=0, **kw)
        model = cls(2, 8, 3).initialise(batch)
        ll = model.objective(batch)
        ll.sum().backward()
        assert torch.isfinite(ll).all() and (ll < 0).all()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        assert torch.isfinite(model.objective(batch[[0]])).all()  # one series in training mode


def test_gaussian_heads_are_normal_log_densities():
    torch.manual_seed(0)
    series, _ = irregular(4, n=3)
    rng = np.random.default_rng(0)
    targets = rng.normal(size=(3, 2))
    batch = SeriesBatch.from_arrays(series, targets=targets)
    model = NeuralCDE(2, 8, 2, task=Task.REGRESSION).initialise(batch)
    pred = model.predict(batch)
    assert isinstance(pred, GaussianPrediction)
    expected = torch.distributions.Normal(pred.mean, pred.std).log_prob(batch.targets.float()).sum(1)
    torch.testing.assert_close(model.log_density(batch).detach(), expected)
    torch.testing.assert_close(model.objective(batch).detach(), expected)  # the objective of a regression
    assert model.score(batch) == pytest.approx(float(expected.sum()) / batch.targets.numel(), rel=1e-5)
    # forecast: one target per row, NaN rows (and padding) not scored
    row_targets = np.full((3, batch.max_length, 1), np.nan)
    row_targets[:, :4, 0] = rng.normal(size=(3, 4))
    fbatch = SeriesBatch(batch.time, batch.values, batch.mask, targets=torch.as_tensor(row_targets))
    forecaster = GRUTime(2, 8, 1, task=Task.FORECAST).initialise(fbatch)
    fpred = forecaster.predict(fbatch)
    scored = torch.distributions.Normal(fpred.mean[:, :4], fpred.std[:, :4]).log_prob(fbatch.targets[:, :4].float())
    torch.testing.assert_close(forecaster.log_density(fbatch).detach(), scored.sum((1, 2)))
    # the score is the mean log density per scored target (12 of them: 4 rows of 3 series)
    assert forecaster.score(fbatch) == pytest.approx(float(scored.sum()) / 12, rel=1e-5)
    with pytest.raises(ValueError, match="label_log_prob"):
        forecaster.label_log_prob(fbatch)


def test_gru_state_uses_only_the_past():
    torch.manual_seed(0)
    series, labels = irregular(5, n=2)
    batch = SeriesBatch.from_arrays(series, labels)
    model = GRUTime(2, 8, 3).fit_standardisation(batch)
    at = batch.time[:, 3:4]
    before = model.states(batch, at)
    changed = batch.values.clone()
    changed[:, 4:] = 100.0
    after = model.states(SeriesBatch(batch.time, changed, batch.mask, batch.labels), at)
    torch.testing.assert_close(before, after)
    assert not torch.allclose(model.states(SeriesBatch(batch.time, changed, batch.mask, batch.labels)), model.states(batch))


def test_bad_input_is_named():
    series, labels = irregular(6, n=2, channels=2)
    batch = SeriesBatch.from_arrays(series, labels)
    with pytest.raises(ValueError, match="input_channels=3"):
        NeuralCDE(3, 8, 3).label_log_prob(batch)
    with pytest.raises(ValueError, match="label 5"):
        NeuralCDE(2, 8, 3).label_log_prob(SeriesBatch.from_arrays(series, [0, 5]))
    with pytest.raises(ValueError, match="log_density is for regression"):
        NeuralCDE(2, 8, 3).log_density(batch)
    with pytest.raises(TypeError, match="Task"):
        NeuralCDE(2, 8, 3, task="classification")


@needs_data
def test_cde_learns_basicmotions():
    """4 balanced classes (chance 0.25); a small CDE trained for 25 full-batch steps classifies most test
    series (measured: 0.80-1.00 over seeds 0-5, 1.0 with seed 0)."""
    from sde.datasets import load_series

    train, test = load_series("basicmotions", "train"), load_series("basicmotions", "test")
    torch.manual_seed(0)
    model = NeuralCDE(train.num_channels, 16, 4)
    assert model.fit(train, epochs=25, batch_size=40, lr=1e-2, seed=0, progress=False) is model
    accuracy = float((model.predict(test).argmax(1) == test.labels).float().mean())
    assert accuracy >= 0.7, accuracy
    assert model.score(test) == pytest.approx(accuracy)  # the classifier's score is its accuracy
    assert model.train_result_ is not None and len(model.train_result_.history) == 25
    assert math.isclose(float(model.predict(test).sum(1).mean()), 1.0, rel_tol=1e-5)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("cls", [NeuralCDE, GRUTime])
@pytest.mark.parametrize("training", [True, False])
def test_queries_leave_the_state_and_the_mode_unchanged(cls, training):
    """label_log_prob, score and predict read the batch-norm's running statistics and never update them."""
    torch.manual_seed(0)
    series, labels = irregular(7, n=4)
    batch = SeriesBatch.from_arrays(series, labels)
    model = cls(2, 8, 3).initialise(batch).train(training)
    before = _state(model)
    model.label_log_prob(batch)
    model.score(batch)
    model.predict(batch)
    after = _state(model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.training == training for m in model.modules())
    if training:  # the training objective is what updates the running statistics
        model.objective(batch)
        assert not torch.equal(_state(model)["head.net.2.running_mean"], before["head.net.2.running_mean"])


def test_classifier_score_is_the_accuracy_and_old_names_still_work():
    torch.manual_seed(0)
    series, labels = irregular(8, n=6)
    batch = SeriesBatch.from_arrays(series, labels)
    model = NeuralCDE(2, 8, 3)
    assert model.fit_standardisation(batch) is model  # the old name of initialise
    model.eval()
    accuracy = float((model.predict(batch).argmax(1) == batch.labels).double().mean())
    assert model.score(batch) == accuracy
    torch.testing.assert_close(model.log_likelihood(batch), model.label_log_prob(batch))  # deprecated alias
    torch.testing.assert_close(model(batch), model.objective(batch))
