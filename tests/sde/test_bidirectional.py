"""GRU-D, ODE-RNN and GRUTime read in both directions (``bidirectional=True``, :mod:`sde.models._bidir`):
the prediction at a row reads the rows before and after it, a held-out value never reaches the prediction at
its row, padding changes nothing, a forecast's hidden future carries no value, and the classifier's summary
reads every row."""

import numpy as np
import pytest
import torch

from sde.models import GRUD, ODERNN, GRUTime, Task
from sde.models._bidir import reversed_rows
from sde.series import SeriesBatch
from sde.tasks import forecast_split, interpolation_split

MODELS = [GRUD, ODERNN, GRUTime]


def series(seed: int, n: int, channels: int = 3, missing: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.uniform(0.1, 1.0, n))
    values = rng.normal(size=(n, channels))
    values[rng.random((n, channels)) < missing] = np.nan
    values[0, 0] = values[-1, 0] = 1.0  # first and last rows observed
    return times, values


def make(cls, task: Task = Task.FORECAST, channels: int = 3):
    torch.manual_seed(0)
    out = channels if task is Task.FORECAST else 2
    model = cls(channels, hidden_size=8, output_size=out, task=task, bidirectional=True).double()
    with torch.no_grad():  # non-zero weights everywhere, so any dependence shows
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def batch_of(*items) -> SeriesBatch:
    return SeriesBatch.from_arrays(list(items), dtype=torch.float64)


def row_means(model, batch: SeriesBatch) -> torch.Tensor:
    return model.predict(batch).mean  # [B, L, C]


def test_reversed_rows_reverses_each_series_on_its_own_clock_and_keeps_padding_last():
    b = batch_of((np.array([0.0, 1.0, 3.0]), np.array([[1.0], [2.0], [3.0]])),
                 (np.array([0.0, 2.0]), np.array([[5.0], [6.0]])))
    r = reversed_rows(b)
    assert torch.equal(r.time[0], torch.tensor([0.0, 2.0, 3.0], dtype=torch.float64))
    assert torch.equal(r.values[0, :, 0], torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    assert torch.equal(r.time[1, :2], torch.tensor([0.0, 2.0], dtype=torch.float64))
    assert torch.equal(r.values[1, :2, 0], torch.tensor([6.0, 5.0], dtype=torch.float64))
    assert torch.equal(r.mask, b.mask)


@pytest.mark.parametrize("cls", MODELS)
def test_the_prediction_at_a_row_reads_the_rows_before_and_after_it(cls):
    model = make(cls)
    times, values = series(1, 9)
    base = row_means(model, batch_of((times, values)))
    for j, row in ((2, 1), (2, 3)):  # a row before, then a row after row j
        changed = values.copy()
        changed[row] = np.where(np.isnan(changed[row]), 7.0, changed[row] + 5.0)
        out = row_means(model, batch_of((times, changed)))
        assert not torch.allclose(out[0, j], base[0, j])
    # the forward-only model does not read the row after
    torch.manual_seed(0)
    one_way = cls(3, hidden_size=8, output_size=3, task=Task.FORECAST).double().eval()
    changed = values.copy()
    changed[3] += 5.0
    torch.testing.assert_close(row_means(one_way, batch_of((times, changed)))[0, :3],
                               row_means(one_way, batch_of((times, values)))[0, :3], rtol=0, atol=0)


@pytest.mark.parametrize("cls", MODELS)
def test_leave_row_out_predicts_each_row_from_the_other_rows_only(cls):
    model = make(cls)
    leave = cls(3, hidden_size=8, output_size=3, task=Task.FORECAST, bidirectional=True, leave_row_out=True).double()
    leave.load_state_dict(model.state_dict())
    leave.eval()
    times, values = series(4, 9)
    base = row_means(leave, batch_of((times, values)))
    for j in (0, 4, 8):  # first, inner and last row: all of that row's values moved
        changed = values.copy()
        changed[j] = np.where(np.isnan(changed[j]), 7.0, changed[j] + 5.0)
        out = row_means(leave, batch_of((times, changed)))
        torch.testing.assert_close(out[0, j], base[0, j], rtol=0, atol=0)
        neighbour = j + 1 if j < 8 else j - 1
        assert not torch.allclose(out[0, neighbour], base[0, neighbour])
    # the default reading does see the row at the query time
    changed = values.copy()
    changed[4] = np.where(np.isnan(changed[4]), 7.0, changed[4] + 5.0)
    assert not torch.allclose(row_means(model, batch_of((times, changed)))[0, 4],
                              row_means(model, batch_of((times, values)))[0, 4])
    with pytest.raises(ValueError, match="bidirectional"):
        cls(3, hidden_size=8, output_size=3, task=Task.FORECAST, leave_row_out=True)


@pytest.mark.parametrize("cls", MODELS)
def test_a_held_out_value_never_reaches_the_prediction_at_its_row(cls):
    model = make(cls)
    raw = batch_of(series(2, 12), series(3, 8))
    split = interpolation_split(raw, share=0.3, seed=0)
    b, j, c = (int(i) for i in torch.nonzero(split.held_out)[0])
    values = raw.values.clone()
    values[b, j, c] += 100.0
    perturbed = SeriesBatch(raw.time, values, raw.mask)
    again = interpolation_split(perturbed, share=0.3, seed=0)
    assert torch.equal(again.held_out, split.held_out)
    torch.testing.assert_close(row_means(model, again.inputs), row_means(model, split.inputs), rtol=0, atol=0)


@pytest.mark.parametrize("cls", MODELS)
def test_a_forecast_reads_the_past_and_no_future_value(cls):
    model = make(cls)
    raw = batch_of(series(4, 10), series(5, 7))
    split = forecast_split(raw, horizon=0.3)
    future = split.future_rows
    base = row_means(model, split.inputs)
    # the future values are NaN in the inputs whatever they were: the backward pass over them reads only times
    values = raw.values.clone()
    values[future] = 1e3
    again = forecast_split(SeriesBatch(raw.time, values, raw.mask), horizon=0.3)
    torch.testing.assert_close(row_means(model, again.inputs), base, rtol=0, atol=0)
    # a past value changes the forecast
    values = split.inputs.values.clone()
    values[0, 1] = torch.where(torch.isnan(values[0, 1]), torch.full_like(values[0, 1], 3.0), values[0, 1] + 3.0)
    moved = row_means(model, SeriesBatch(raw.time, values, raw.mask))
    assert not torch.allclose(moved[0][future[0]], base[0][future[0]])


@pytest.mark.parametrize("cls", MODELS)
def test_padding_changes_nothing(cls):
    model = make(cls)
    short, long = series(6, 5), series(7, 11)
    alone = row_means(model, batch_of(short))
    together = row_means(model, batch_of(long, short))
    # ODE-RNN's Euler steps per row follow the batch's largest gap (as in one direction): a solver tolerance
    tol = 1e-3 if cls is ODERNN else 1e-10
    torch.testing.assert_close(together[1, :5], alone[0], rtol=tol, atol=tol)


@pytest.mark.parametrize("cls", MODELS)
def test_the_bidirectional_classifier_reads_the_first_and_the_last_row_and_trains(cls):
    model = make(cls, Task.CLASSIFICATION)
    times, values = series(8, 9)
    b = batch_of((times, values), series(9, 6))
    base = model.predict(b)
    for row in (0, 8):
        changed = values.copy()
        changed[row] = 5.0
        out = model.predict(batch_of((times, changed), series(9, 6)))
        assert not torch.allclose(out[0], base[0])
        torch.testing.assert_close(out[1], base[1], rtol=1e-10, atol=1e-10)
    labelled = SeriesBatch(b.time, b.values, b.mask, labels=torch.tensor([0, 1]))
    model.train()
    loss = -model.objective(labelled).mean()
    loss.backward()
    backward_weights = [p for n, p in model.named_parameters() if "backward" in n]
    assert backward_weights and all(p.grad is not None and p.grad.abs().sum() > 0 for p in backward_weights
                                    if p.requires_grad and p.dim() > 1)


@pytest.mark.parametrize("name", ["gru-d", "ode-rnn", "gru"])
def test_a_bidirectional_model_built_by_the_table_saves_and_loads(name, tmp_path):
    import sde.table  # noqa: F401 - registers the sde entries
    from tpp import table

    b = batch_of(series(10, 6, channels=2), series(11, 4, channels=2))
    model = table.build(name, b, seed=0, task=Task.FORECAST, output_size=2, bidirectional=True)
    model.initialise(b)
    loaded = table.load(table.save(model, tmp_path / "m.pt"))
    assert loaded.bidirectional is True
    torch.testing.assert_close(loaded.predict(b).mean, model.predict(b).mean)


def _classifier_with_reconstruction(cls, bidirectional: bool, weight: float = 0.5):
    torch.manual_seed(0)
    model = cls(3, hidden_size=8, output_size=2, task=Task.CLASSIFICATION, bidirectional=bidirectional,
                reconstruction_weight=weight).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cls", MODELS)
def test_the_reconstruction_estimate_of_a_value_never_reads_that_value(cls, bidirectional):
    # For the summed squared error S of one pass, S(v + d) + S(v - d) - 2 S(v) = 2 d^2 exactly when no estimate
    # of that pass reads v: checked for the last row the pass reads (forward: the last row; backward: the
    # first), whose value no later estimate of that pass sees either
    from sde.models._bidir import reversed_rows

    model = _classifier_with_reconstruction(cls, bidirectional)
    times, values = series(12, 7)
    for backward in ((False, True) if bidirectional else (False,)):
        row = 0 if backward else 6

        def summed(delta: float) -> float:
            changed = values.copy()
            changed[row, 0] += delta
            prepared = model.prepare(batch_of((times, changed)))
            if backward:
                prepared = reversed_rows(prepared)
            with torch.no_grad():
                error = model.reconstruction_error(prepared, model._pass(prepared, backward=backward), backward)
            return float(error[0]) * int(np.isfinite(changed).sum())

        curvature = summed(0.7) + summed(-0.7) - 2 * summed(0.0)  # standardised units (the model's std is 1)
        assert curvature == pytest.approx(2 * 0.7**2, rel=1e-9)
        # and the value does enter the error: moving it changes S
        assert summed(0.7) != pytest.approx(summed(0.0))


@pytest.mark.parametrize("cls", MODELS)
def test_the_reconstruction_term_enters_training_only(cls):
    model = _classifier_with_reconstruction(cls, True, weight=0.5)
    plain = cls(3, hidden_size=8, output_size=2, task=Task.CLASSIFICATION, bidirectional=True).double()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("reconstruct")})
    b = batch_of(series(13, 7), series(14, 5))
    b = SeriesBatch(b.time, b.values, b.mask, labels=torch.tensor([0, 1]))
    model.eval(), plain.eval()
    torch.testing.assert_close(model.objective(b), plain.objective(b), rtol=0, atol=0)
    model.train(), plain.train()
    prepared = model.prepare(b)
    from sde.models._bidir import reversed_rows
    flipped = reversed_rows(prepared)
    error = (model.reconstruction_error(prepared, model._pass(prepared, backward=False))
             + model.reconstruction_error(flipped, model._pass(flipped, backward=True), backward=True)) / 2
    torch.testing.assert_close(model.objective(b), plain.objective(b) - 0.5 * error, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="classifier"):
        cls(3, hidden_size=8, output_size=3, task=Task.FORECAST, reconstruction_weight=1.0)
    with pytest.raises(ValueError, match="reconstruction_weight"):
        cls(3, hidden_size=8, output_size=2, reconstruction_weight=-1.0)
