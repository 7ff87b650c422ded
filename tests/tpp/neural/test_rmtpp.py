"""RMTPP: exact gradients, padding/order invariance, closed-form compensator, causality, training."""

import pytest
import torch
from torch.func import functional_call

from tpp import EventBatch
from tpp.compensator import integrate_intervals
from tpp.hawkes import ExpHawkes, Poisson
from tpp.neural.rmtpp import RMTPP

from .conftest import A3, MU3, assert_future_events_do_not_reach, pad_more


def make_model(hidden_size: int = 8, seed: int = 0, **kwargs) -> RMTPP:
    torch.manual_seed(seed)
    return RMTPP(3, hidden_size=hidden_size, **kwargs).double()


@pytest.fixture(scope="module")
def tiny() -> EventBatch:
    """Three short sequences: one empty, one with a window starting before the first event."""
    return EventBatch.from_sequences(
        [[0.3, 0.9, 1.0, 2.2], [], [1.1, 1.7]], [[0, 2, 1, 0], [], [1, 1]],
        t_start=[0.0, 0.0, 0.5], t_end=[3.0, 1.5, 2.5], num_marks=3,
    )


def test_log_likelihood_gradients_match_finite_differences(tiny):
    model = make_model(hidden_size=4)
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for _, p in model.named_parameters())

    def loglik(*values):
        return functional_call(model, dict(zip(names, values)), (tiny,))

    assert torch.autograd.gradcheck(loglik, params, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_log_likelihood_is_invariant_to_padding_and_batch_order(hawkes_data):
    model = make_model()
    full = model.log_likelihood(hawkes_data).detach()
    alone = torch.cat([model.log_likelihood(hawkes_data[i]).detach() for i in range(len(hawkes_data))])
    torch.testing.assert_close(alone, full, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(model.log_likelihood(pad_more(hawkes_data, 7)).detach(), full, rtol=1e-12, atol=1e-10)
    perm = [4, 0, 5, 2, 1, 3]
    torch.testing.assert_close(model.log_likelihood(hawkes_data[perm]).detach(), full[perm], rtol=1e-12, atol=1e-10)


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


def test_future_events_do_not_reach_earlier_intensity(hawkes_data):
    model = make_model()
    assert_future_events_do_not_reach(model, hawkes_data, 'both')


def test_training_on_hawkes_data_approaches_the_true_process():
    """200 Adam steps on ~20k events of a 3-type Hawkes process: above the start and above the best
    Poisson process (so the history is used), near the true process's own held-out score."""
    process = ExpHawkes.from_params(MU3, A3, 1.5)
    data = process.sample(1024 + 64, 10.0, generator=11)
    train, test = data[:1024], data[1024:]
    model = make_model(hidden_size=16, seed=1).float().eval()
    before = model.score(test)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    order = torch.Generator().manual_seed(0)
    for _ in range(200):
        minibatch = train[torch.randperm(len(train), generator=order)[:64]]
        opt.zero_grad()
        (-model.log_likelihood(minibatch).sum() / minibatch.num_events).backward()
        opt.step()
    after = model.score(test)
    assert after > before + 0.08
    assert after > Poisson(3).fit(train).score(test) + 0.06
    assert after > process.score(test) - 0.05


def test_batches_of_empty_histories_are_scored_and_forecast():
    from tpp.neural import FullyNN, IntensityFree

    empty = EventBatch.from_sequences([[], []], [[], []], t_start=[0.0, 0.0], t_end=[1.0, 2.0], num_marks=3)
    for model in (make_model(), FullyNN(3, 8).double(), IntensityFree(3, 8).double()):
        ll = model.log_likelihood(empty)
        assert ll.shape == (2,) and bool(torch.isfinite(ll).all())
        assert bool(torch.isfinite(model.predict(empty).time_mean).all())
