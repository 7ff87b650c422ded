"""GRU-D (Che et al. 2018): its equations on a hand-computed two-step example, decay from the series start
for a never-observed channel, padding rows, and the `sde fit` command."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from sde.models import GRUD, Task
from sde.series import SeriesBatch

from tests.conftest import needs_data


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def hand_set(model: GRUD) -> None:
    """One channel, one hidden unit, every weight chosen by hand."""
    cell = model.cell
    with torch.no_grad():
        cell.decay_x_weight.fill_(0.5)
        cell.decay_x_bias.fill_(0.1)
        cell.decay_h.weight.fill_(0.3)
        cell.decay_h.bias.fill_(-0.2)
        model.x_mean.fill_(0.4)
        # columns: [x_hat, h_hat, m]
        cell.update.weight.copy_(torch.tensor([[0.2, -0.3, 0.5]], dtype=torch.float64))
        cell.update.bias.fill_(0.1)
        cell.reset.weight.copy_(torch.tensor([[0.4, 0.6, -0.2]], dtype=torch.float64))
        cell.reset.bias.fill_(-0.1)
        cell.candidate.weight.copy_(torch.tensor([[0.7, -0.5, 0.3]], dtype=torch.float64))
        cell.candidate.bias.fill_(0.05)


def test_grud_equals_its_equations_on_a_hand_computed_two_step_example():
    torch.manual_seed(0)
    model = GRUD(1, hidden_size=1, output_size=2).double()
    hand_set(model)
    # observed 1.2 at t = 3 (the series' start), missing at t = 4.5
    batch = SeriesBatch.from_arrays([(np.array([3.0, 4.5]), np.array([[1.2], [np.nan]]))], dtype=torch.float64)

    # step 1: delta = 0 (first row), m = 1
    x_hat = 1.2
    h_hat = math.exp(-max(0.0, 0.3 * 0.0 - 0.2)) * 0.0
    z = sigmoid(0.2 * x_hat - 0.3 * h_hat + 0.5 * 1 + 0.1)
    r = sigmoid(0.4 * x_hat + 0.6 * h_hat - 0.2 * 1 - 0.1)
    h_tilde = math.tanh(0.7 * x_hat - 0.5 * r * h_hat + 0.3 * 1 + 0.05)
    h1 = (1 - z) * h_hat + z * h_tilde
    # step 2: delta = 1.5 since the last observation, m = 0: decayed imputation between 1.2 and the mean 0.4
    gamma_x = math.exp(-max(0.0, 0.5 * 1.5 + 0.1))
    x_hat = gamma_x * 1.2 + (1 - gamma_x) * 0.4
    h_hat = math.exp(-max(0.0, 0.3 * 1.5 - 0.2)) * h1
    z = sigmoid(0.2 * x_hat - 0.3 * h_hat + 0.5 * 0 + 0.1)
    r = sigmoid(0.4 * x_hat + 0.6 * h_hat - 0.2 * 0 - 0.1)
    h_tilde = math.tanh(0.7 * x_hat - 0.5 * r * h_hat + 0.3 * 0 + 0.05)
    h2 = (1 - z) * h_hat + z * h_tilde

    states = model.states(batch, torch.tensor([[3.0, 4.5]], dtype=torch.float64))
    torch.testing.assert_close(states[0, :, 0], torch.tensor([h1, h2], dtype=torch.float64), rtol=1e-12, atol=1e-12)
    # a query between the rows reads the state after the last row at or before it; before the first, zeros
    between = model.states(batch, torch.tensor([[4.0, 2.0]], dtype=torch.float64))[0, :, 0]
    torch.testing.assert_close(between, torch.tensor([h1, 0.0], dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_a_channel_never_observed_decays_from_the_series_start_and_padding_rows_change_nothing():
    torch.manual_seed(0)
    model = GRUD(2, hidden_size=3, output_size=2).double()
    with torch.no_grad():
        model.cell.decay_x_weight.fill_(1.0)
    seen: list[torch.Tensor] = []
    original = model.cell.forward

    def spy(x, m, delta, x_last, x_mean, h):
        seen.append(delta.clone())
        return original(x, m, delta, x_last, x_mean, h)

    model.cell.forward = spy  # type: ignore[method-assign]
    long = (np.array([0.0, 1.0, 3.0]), np.array([[1.0, np.nan], [np.nan, np.nan], [2.0, np.nan]]))
    short = (np.array([0.0, 2.0]), np.array([[0.5, 1.0], [np.nan, 2.0]]))
    batch = SeriesBatch.from_arrays([long, short], dtype=torch.float64)
    states = model.states(batch, batch.time)
    # row 3 of the long series (t=3): channel 0 last seen at t=0 (gap 3), channel 1 never: counted from the start
    torch.testing.assert_close(seen[2][0], torch.tensor([3.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(seen[1][1], torch.tensor([2.0, 2.0], dtype=torch.float64))
    # the short series alone gives the same states as in the padded batch
    alone = model.states(batch[[1]], batch[[1]].time)
    torch.testing.assert_close(alone[0], states[1, :2], rtol=1e-12, atol=1e-12)


def test_grud_classifies_and_forecasts_through_the_heads():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    pairs = [(np.sort(rng.uniform(0, 3, 6)), rng.normal(size=(6, 2))) for _ in range(4)]
    batch = SeriesBatch.from_arrays(pairs, labels=[0, 1, 0, 1])
    model = GRUD(2, hidden_size=4, output_size=2).initialise(batch)
    out = model.objective(batch)
    out.sum().backward()
    assert out.shape == (4,) and torch.isfinite(out).all()
    assert model.cell.decay_h.weight.grad is not None and model.cell.decay_x_weight.grad is not None
    assert model.predict(batch).shape == (4, 2)
    forecaster = GRUD(2, hidden_size=4, output_size=2, task=Task.FORECAST).initialise(batch)
    assert forecaster.predict(batch).mean.shape == (4, 6, 2)


@needs_data
@pytest.mark.parametrize("model", ["gru-d"])
def test_sde_fit_runs_the_model_on_basicmotions(model):
    from typer.testing import CliRunner

    from sde.cli import app

    res = CliRunner().invoke(app, ["fit", "--model", model, "--data", "basicmotions", "--task", "classify",
                                   "--epochs", "1", "--hidden-size", "8", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["model"] == model and 0.0 <= out["test_accuracy"] <= 1.0


def test_a_grud_state_depends_only_on_the_rows_at_or_before_its_time():
    torch.manual_seed(0)
    model = GRUD(2, hidden_size=4, output_size=2).double()
    batch = SeriesBatch.from_arrays([(np.array([0.0, 0.5, 1.5, 2.0]), np.array([[1.0, np.nan], [np.nan, 0.3],
                                                                               [0.2, 0.1], [np.nan, np.nan]]))],
                                    dtype=torch.float64)
    before = model.states(batch, batch.time)
    changed = batch.values.clone()
    changed[0, 2, 0] += 5.0
    after = model.states(dataclasses.replace(batch, values=changed), batch.time)
    torch.testing.assert_close(after[0, :2], before[0, :2], rtol=0, atol=0)
    # the later row with nothing observed imputes from the changed value: it moves too
    assert not torch.allclose(after[0, 2:], before[0, 2:])
