"""SAHP: what is particular to it (the contract every model meets is in test_contract.py)."""

import numpy as np
import torch

from tpp import fit
from tpp.compensator import integrate_intervals
from tpp.hawkes import ExpHawkes
from tpp.neural.sahp import SAHP

from .conftest import A3, MU3


def make_model(hidden_size: int = 8, seed: int = 0, **kwargs) -> SAHP:
    torch.manual_seed(seed)
    return SAHP(3, hidden_size=hidden_size, **kwargs).double()


def test_compensator_equals_fine_quadrature_of_intensity(hawkes_data):
    model = make_model()
    with torch.no_grad():
        model.head.weight.mul_(4.0)  # steeper decays and larger jumps than at initialisation: a harder integrand
        model.head.bias.mul_(4.0)
        ours = model.compensator(hawkes_data)
        fine = integrate_intervals(model.intensity, hawkes_data, 256)
        per_interval = model.cumulative_intensity(hawkes_data)
    torch.testing.assert_close(ours, fine.total, rtol=1e-4, atol=0.0)
    torch.testing.assert_close(per_interval, fine.value.cumsum(1)[:, :-1], rtol=1e-4, atol=1e-10)


def test_fit_on_50k_hawkes_events_comes_within_005_nats_of_the_true_process():
    """The shared trainer on ~52k events of a 3-type exponential Hawkes process: the held-out
    log-likelihood per event is within 0.05 nats of the true process's exact one on the same events."""
    process = ExpHawkes.from_params(MU3, A3, 1.5)
    data = process.sample(650, 50.0, generator=5)
    train, val, test = data[np.arange(500)], data[np.arange(500, 550)], data[np.arange(550, 650)]
    torch.manual_seed(0)
    model = SAHP(3)
    fit(model, train, val, epochs=15, batch_size=16, lr=1e-2, seed=0, progress=False)
    assert model.score(test) > process.score(test) - 0.05  # score: exact log-likelihood per event
