"""SAHP: what is particular to it (the contract every model meets is in test_contract.py)."""

import torch

from tpp.compensator import integrate_intervals
from tpp.neural.sahp import SAHP


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
