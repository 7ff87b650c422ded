"""Neural ODE on series (torch): the solve against closed forms, what the model can see (the first
row and the duration only), padding, gradients, and learning a label carried by the first value."""

import numpy as np
import pytest
import torch

import tpp
from sde.models import NeuralODE
from sde.series import SeriesBatch
from sde.solvers import Method
from tests.sde.test_cde import irregular, nan_padded, pad_columns


def constant_field(model: NeuralODE) -> torch.Tensor:
    """Make ``f(z) = tanh(b)`` (last layer's weight zero); returns the velocity ``tanh(b)``."""
    last = model.field.net[-2]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.linspace(-1.5, 2.0, last.bias.numel()))
    return torch.tanh(last.bias.detach())


@pytest.mark.parametrize("method", [Method.DOPRI5, Method.RK4])
def test_constant_field_moves_every_series_linearly_in_model_time(method):
    """dz/dt = v: z(t) = z(0) + v t on the model's clock (each series from 0, scaled by the training
    duration), read at any times of the series."""
    torch.manual_seed(0)
    series, labels = irregular(1)
    batch = SeriesBatch.from_arrays(series, labels, dtype=torch.float64)
    model = NeuralODE(2, 6, 3, method=method).double().fit_standardisation(batch)
    v = constant_field(model)
    times = batch.time[:, [1, 3, 4]]
    z = model.states(batch, times)
    z0 = model.states(batch, batch.time[:, :1])
    clock = (times - batch.time[:, :1]) / model.time_scale
    torch.testing.assert_close(z, z0 + clock[..., None] * v, rtol=0, atol=1e-10)


def test_adaptive_and_fine_fixed_steps_agree():
    torch.manual_seed(0)
    series, labels = irregular(2)
    batch = SeriesBatch.from_arrays(series, labels, dtype=torch.float64)
    adaptive = NeuralODE(2, 6, 3, rtol=1e-9, atol=1e-9).double().fit_standardisation(batch).eval()
    fixed = NeuralODE(2, 6, 3, method=Method.RK4, step_size=1e-3).double().fit_standardisation(batch).eval()
    fixed.load_state_dict(adaptive.state_dict())
    # ReLU kinks in the field cap both solvers below their nominal order: agreement to 1e-5, not rounding
    torch.testing.assert_close(adaptive.states(batch), fixed.states(batch), rtol=0, atol=1e-5)
    # a loose tolerance is a different (cheaper) solution, not the same one
    loose = NeuralODE(2, 6, 3, rtol=1e-1, atol=1e-1).double().fit_standardisation(batch).eval()
    loose.load_state_dict(adaptive.state_dict())
    assert not torch.allclose(loose.states(batch), adaptive.states(batch), rtol=0, atol=1e-9)


def test_only_the_first_row_and_the_duration_reach_the_state():
    torch.manual_seed(0)
    series, labels = irregular(3, missing=0.0)
    batch = SeriesBatch.from_arrays(series, labels)
    model = NeuralODE(2, 8, 3).fit_standardisation(batch).eval()
    end = model.states(batch)
    later = batch.values.clone()
    later[:, 1:] = torch.randn_like(later[:, 1:])
    changed_later = SeriesBatch(batch.time, later, batch.mask, batch.labels)
    torch.testing.assert_close(model.states(changed_later), end, rtol=0, atol=0)
    first = batch.values.clone()
    first[:, 0] += 1.0
    assert not torch.allclose(model.states(SeriesBatch(batch.time, first, batch.mask, batch.labels)), end)
    shorter = SeriesBatch.from_arrays([(t[:-2], v[:-2]) for t, v in series], labels)
    assert not torch.allclose(model.states(shorter), end)


def test_padded_batch_scores_each_series_as_alone():
    torch.manual_seed(0)
    series, labels = irregular(1)
    batch = pad_columns(SeriesBatch.from_arrays(nan_padded(series, 5), labels), 6)
    model = NeuralODE(2, 8, 3, method=Method.RK4).fit_standardisation(batch).eval()
    alone = torch.cat([model.label_log_prob(SeriesBatch.from_arrays([s], labels[i : i + 1]))
                       for i, s in enumerate(series)])
    torch.testing.assert_close(model.label_log_prob(batch), alone, rtol=1e-5, atol=1e-5)


def test_gradcheck_float64():
    torch.manual_seed(0)
    series, labels = irregular(2, n=2, missing=0.0)
    batch = SeriesBatch.from_arrays(series, labels, dtype=torch.float64)
    model = NeuralODE(2, 3, 3, num_layers=1, method=Method.RK4).double().fit_standardisation(batch).eval()

    def score(w0: torch.Tensor, w_init: torch.Tensor) -> torch.Tensor:
        params = {"field.net.0.weight": w0, "initial.weight": w_init}
        return torch.func.functional_call(model, params, (batch,))

    w0 = model.field.net[0].weight.detach().clone().requires_grad_(True)
    w_init = model.initial.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(score, (w0, w_init), eps=1e-6, atol=1e-6)


def test_learns_a_label_carried_by_the_first_value():
    """label = 1 iff the first value of channel 0 is positive (the rest is noise): the only
    information a neural ODE sees besides the duration; learned to near-perfect accuracy."""
    rng = np.random.default_rng(0)
    series, labels = [], []
    for _ in range(64):
        rows = int(rng.integers(4, 9))
        times = np.sort(rng.uniform(0, 2, rows))
        values = rng.normal(size=(rows, 2))
        series.append((times, values))
        labels.append(int(values[0, 0] > 0))
    data = SeriesBatch.from_arrays(series, np.array(labels))
    torch.manual_seed(0)
    model = NeuralODE(2, 8, 2, method=Method.RK4, step_size=0.25)
    tpp.fit(model, data, epochs=30, batch_size=32, lr=2e-2, seed=0, progress=False)
    accuracy = float((model.predict(data).argmax(1) == data.labels).float().mean())
    assert accuracy >= 0.9, accuracy


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="rtol and atol"):
        NeuralODE(2, 4, 2, rtol=0.0)
    with pytest.raises(ValueError, match="num_layers"):
        NeuralODE(2, 4, 2, num_layers=0)
    series, labels = irregular(6, n=2)
    with pytest.raises(ValueError, match="input_channels=3"):
        NeuralODE(3, 4, 2).label_log_prob(SeriesBatch.from_arrays(series, labels))
