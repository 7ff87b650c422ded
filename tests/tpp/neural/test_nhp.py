"""NHP: exact gradients, padding/order/clock invariance, compensator, causality, training."""

import numpy as np
import pytest
import torch
from torch.func import functional_call

from tpp import EventBatch, fit
from tpp.compensator import integrate_intervals
from tpp.hawkes import ExpHawkes, Poisson
from tpp.neural.nhp import NHP

from .conftest import A3, MU3, assert_future_events_do_not_reach, pad_more


def make_model(hidden_size: int = 8, seed: int = 0, **kwargs) -> NHP:
    torch.manual_seed(seed)
    return NHP(3, hidden_size=hidden_size, **kwargs).double()


def test_log_likelihood_gradients_match_finite_differences(tiny):
    model = make_model(hidden_size=4, num_points=4)
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


def test_float32_log_likelihood_is_invariant_to_the_clock_origin(hawkes_data):
    """Time differences are cast to float32, not absolute times: a clock at 1e7 (float32 spacing 1)
    gives the log-likelihood of the same events at 0."""
    model = make_model().float()
    flat = hawkes_data.to_flat()
    shifted = EventBatch.from_flat(flat["times"] + 1e7, flat["seq_offsets"], flat["t_start"] + 1e7,
                                   flat["t_end"] + 1e7, flat["marks"], 3)
    torch.testing.assert_close(model.log_likelihood(shifted).detach(), model.log_likelihood(hawkes_data).detach(),
                               rtol=1e-5, atol=1e-4)


def test_compensator_equals_fine_quadrature_of_intensity(hawkes_data):
    model = make_model()
    with torch.no_grad():
        # Fast decays (delta ~ 8) and a steep head: a harder integrand than at initialisation.
        model.cell.linear.bias[6 * model.hidden_size :].fill_(8.0)
        model.head.weight.mul_(4.0)
        ours = model.compensator(hawkes_data)
        fine = integrate_intervals(model.intensity, hawkes_data, 256)
        per_interval = model.cumulative_intensity(hawkes_data)
    torch.testing.assert_close(ours, fine.total, rtol=1e-4, atol=0.0)
    torch.testing.assert_close(per_interval, fine.value.cumsum(1)[:, :-1], rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("change", ["time", "mark"])
def test_future_events_do_not_reach_earlier_intensity(hawkes_data, change):
    model = make_model()
    assert_future_events_do_not_reach(model, hawkes_data, change)


def test_training_on_hawkes_data_approaches_the_true_process():
    """120 Adam steps on ~20k events of a 3-type Hawkes process: above the start and above the best
    Poisson process (so the history is used), near the true process's own held-out score."""
    process = ExpHawkes.from_params(MU3, A3, 1.5)
    data = process.sample(1024 + 64, 10.0, generator=11)
    train, test = data[:1024], data[1024:]
    model = make_model(hidden_size=16, seed=1).float().eval()
    before = model.score(test)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    order = torch.Generator().manual_seed(0)
    for _ in range(120):
        minibatch = train[torch.randperm(len(train), generator=order)[:64]]
        opt.zero_grad()
        (-model.log_likelihood(minibatch).sum() / minibatch.num_events).backward()
        opt.step()
    after = model.score(test)
    assert after > before + 0.08
    assert after > Poisson(3).fit(train).score(test) + 0.06
    assert after > process.score(test) - 0.05


def test_fit_on_50k_hawkes_events_comes_within_005_nats_of_the_true_process():
    """The shared trainer on ~52k events of a 3-type exponential Hawkes process: the held-out
    log-likelihood per event is within 0.05 nats of the true process's exact one on the same events."""
    process = ExpHawkes.from_params(MU3, A3, 1.5)
    data = process.sample(650, 50.0, generator=5)
    train, val, test = data[np.arange(500)], data[np.arange(500, 550)], data[np.arange(550, 650)]
    torch.manual_seed(0)
    model = NHP(3)
    fit(model, train, val, epochs=5, batch_size=32, lr=1e-2, seed=0, progress=False)
    assert model.score(test) > process.score(test) - 0.05  # score: exact log-likelihood per event
