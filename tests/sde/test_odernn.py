"""ODE-RNN (Rubanova et al. 2019): with a zero vector field it is a GRU over the observed rows; between rows
the state follows the ODE as one direct solve would; backwards and forwards undo each other; the heads and
`sde fit` run it."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn

from sde.models import ODERNN, Task
from sde.models.odernn import ODEFunc, evolve
from sde.series import SeriesBatch
from sde.solvers import Method, solve

from tests.conftest import needs_data


@pytest.fixture
def batch() -> SeriesBatch:
    """Two series of unequal length on irregular times, with missing values and a row with none observed."""
    long = (np.array([0.0, 0.3, 0.45, 1.2, 2.0]),
            np.array([[0.5, np.nan], [np.nan, np.nan], [1.5, -0.2], [np.nan, 0.7], [-1.0, 0.1]]))
    short = (np.array([1.0, 1.6, 2.5]), np.array([[0.2, 0.3], [np.nan, 1.1], [0.4, np.nan]]))
    return SeriesBatch.from_arrays([long, short], dtype=torch.float64)


def gru_baseline(cell: nn.GRUCell, times: np.ndarray, values: np.ndarray, query: float,
                 time_input: bool) -> torch.Tensor:
    """The GRU over the observed rows at or before ``query`` (input: values with 0 where missing, mask, and with
    ``time_input`` the time since the previous observed row), written out row by row."""
    h = torch.zeros(1, cell.hidden_size, dtype=torch.float64)
    start, previous = times[0], times[0]
    for t, x in zip(times, values):
        if t - start > query + 1e-12:
            break
        m = ~np.isnan(x)
        if not m.any():
            continue
        parts = [np.where(m, x, 0.0), m.astype(float)] + ([[t - previous]] if time_input else [])
        h = cell(torch.tensor(np.concatenate([np.ravel(p) for p in parts]))[None], h)
        previous = t
    return h[0]


@pytest.mark.parametrize("time_input", [False, True])
def test_with_a_zero_vector_field_the_odernn_is_the_gru_over_the_observed_rows(batch, time_input):
    torch.manual_seed(0)
    model = ODERNN(2, hidden_size=5, output_size=2, time_input=time_input).double()
    with torch.no_grad():
        model.field.net[-1].weight.zero_()
        model.field.net[-1].bias.zero_()
    query = torch.tensor([[0.0, 0.35, 1.2, 2.0], [1.0, 1.7, 2.5, 2.5]], dtype=torch.float64)
    states = model.states(batch, query)
    for b, (times, values) in enumerate(batch.series()):
        times, values = np.asarray(times), np.asarray(values)
        for q in range(query.shape[1]):
            expected = gru_baseline(model.cell, times, values, float(query[b, q]) - times[0], time_input)
            torch.testing.assert_close(states[b, q], expected, rtol=1e-12, atol=1e-12)


def test_between_rows_the_state_follows_one_direct_solve_of_the_ode():
    """The gap folded into the field (dh/ds = delta f(h), s in [0, 1]) is the solve over [0, delta] itself."""
    torch.manual_seed(0)
    field = ODEFunc(4, 8).double()
    with torch.no_grad():
        for p in field.parameters():
            p.mul_(10)  # a field that moves the state visibly
    h = torch.randn(3, 4, dtype=torch.float64)
    delta = torch.tensor([0.3, 0.7, 0.0], dtype=torch.float64)
    moved = evolve(field, h, delta, method=Method.DOPRI5, rtol=1e-10, atol=1e-10)
    for i in range(3):
        if delta[i] == 0:
            torch.testing.assert_close(moved[i], h[i], rtol=0, atol=0)
            continue
        ts = torch.tensor([0.0, float(delta[i])], dtype=torch.float64)
        direct = solve(field, h[i:i + 1], ts, method=Method.DOPRI5, rtol=1e-10, atol=1e-10).ys[0, -1]
        torch.testing.assert_close(moved[i], direct, rtol=1e-7, atol=1e-7)
    # a fixed-step method steps each row by at most step_size: 0.7 / 0.05 -> 14 RK4 steps, the direct solve's
    fixed = evolve(field, h[1:2], delta[1:2], method=Method.RK4, step_size=0.05)
    ts = torch.tensor([0.0, 0.7], dtype=torch.float64)
    direct = solve(field, h[1:2], ts, method=Method.RK4, step_size=0.05).ys[:, -1]
    torch.testing.assert_close(fixed, direct, rtol=1e-12, atol=1e-12)
    # backwards in time undoes forwards (the Latent ODE encoder runs this way)
    back = evolve(field, moved, -delta, method=Method.DOPRI5, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(back, h, rtol=1e-6, atol=1e-6)


def test_the_state_at_a_query_between_rows_is_the_last_update_moved_by_the_ode(batch):
    torch.manual_seed(0)
    model = ODERNN(2, hidden_size=4, output_size=2, method=Method.DOPRI5, rtol=1e-10, atol=1e-10).double()
    at_row, between = model.states(batch, torch.tensor([[0.45, 0.9], [1.6, 2.0]], dtype=torch.float64)).unbind(1)
    gap = torch.tensor([0.45, 0.4], dtype=torch.float64) / model.time_scale
    expected = evolve(model.field, at_row, gap, method=Method.DOPRI5, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(between, expected, rtol=1e-7, atol=1e-7)
    assert not torch.allclose(between, at_row)  # the ODE moved it


def test_odernn_classifies_and_forecasts_through_the_heads(batch):
    torch.manual_seed(0)
    labelled = SeriesBatch.from_arrays(list(batch.series()), labels=[0, 1], dtype=torch.float64)
    model = ODERNN(2, hidden_size=4, output_size=2).double().initialise(labelled)
    out = model.objective(labelled)
    out.sum().backward()
    assert out.shape == (2,) and torch.isfinite(out).all()
    assert model.field.net[0].weight.grad is not None and model.cell.weight_ih.grad is not None
    assert model.predict(labelled).shape == (2, 2)
    forecaster = ODERNN(2, hidden_size=4, output_size=2, task=Task.FORECAST).double().initialise(batch)
    assert forecaster.predict(batch).mean.shape == (2, 5, 2)


@needs_data
def test_sde_fit_runs_the_odernn_on_basicmotions():
    from typer.testing import CliRunner

    from sde.cli import app

    res = CliRunner().invoke(app, ["fit", "--model", "ode-rnn", "--data", "basicmotions", "--task", "classify",
                                   "--epochs", "1", "--hidden-size", "8", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["model"] == "ode-rnn" and 0.0 <= out["test_accuracy"] <= 1.0 and out["stats"]["solves"] > 0


def test_a_state_depends_only_on_the_rows_at_or_before_its_time(batch):
    """Forecasts use the past only: changing a later value leaves every earlier state as it was."""
    torch.manual_seed(0)
    model = ODERNN(2, hidden_size=4, output_size=2).double()
    before = model.states(batch, batch.time)
    changed = batch.values.clone()
    changed[0, 3, 1] += 5.0  # the long series' row at t = 1.2
    after = model.states(dataclasses.replace(batch, values=changed), batch.time)
    torch.testing.assert_close(after[0, :3], before[0, :3], rtol=0, atol=0)
    torch.testing.assert_close(after[1], before[1], rtol=0, atol=0)
    assert not torch.allclose(after[0, 3:], before[0, 3:])
