"""RMTPP: what is particular to it (the contract every model meets is in test_contract.py)."""

import pytest
import torch

from tpp import EventBatch
from tpp.compensator import integrate_intervals
from tpp.neural.rmtpp import RMTPP


def make_model(hidden_size: int = 8, seed: int = 0, **kwargs) -> RMTPP:
    torch.manual_seed(seed)
    return RMTPP(3, hidden_size=hidden_size, **kwargs).double()


@pytest.mark.parametrize("w", [-0.8, 1e-9, 0.3])
def test_compensator_equals_fine_quadrature_of_intensity(hawkes_data, w):
    """Decaying, flat (the ``w -> 0`` branch) and growing intensities between events."""
    model = make_model()
    with torch.no_grad():
        model.w.fill_(w)
        exact = model.compensator(hawkes_data)
        fine = integrate_intervals(model.intensity, hawkes_data, 128)
        per_interval = model.cumulative_intensity(hawkes_data)
    torch.testing.assert_close(exact, fine.total, rtol=1e-4, atol=0.0)
    torch.testing.assert_close(per_interval, fine.value.cumsum(1)[:, :-1], rtol=1e-4, atol=1e-10)


def test_batches_of_empty_histories_are_scored_and_forecast():
    from tpp.neural import FullyNN, IntensityFree

    empty = EventBatch.from_sequences([[], []], [[], []], t_start=[0.0, 0.0], t_end=[1.0, 2.0], num_marks=3)
    for model in (make_model(), FullyNN(3, 8).double(), IntensityFree(3, 8).double()):
        ll = model.log_likelihood(empty)
        assert ll.shape == (2,) and bool(torch.isfinite(ll).all())
        assert bool(torch.isfinite(model.predict(empty).time_mean).all())


def test_weights_saved_with_separate_time_and_mark_heads_still_load():
    """State dicts written before the heads were merged (``time_head``, ``mark_head``) load into ``head``."""
    import torch

    from tpp.neural import RMTPP

    model = RMTPP(3, 8)
    state = model.state_dict()
    head_w, head_b = state.pop("head.weight"), state.pop("head.bias")
    state["time_head.weight"], state["mark_head.weight"] = head_w[:1], head_w[1:]
    state["time_head.bias"], state["mark_head.bias"] = head_b[:1], head_b[1:]
    other = RMTPP(3, 8)
    other.load_state_dict(state)
    torch.testing.assert_close(other.head.weight, head_w)
    torch.testing.assert_close(other.head.bias, head_b)
