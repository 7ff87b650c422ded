"""FullyNN: what is particular to it (the contract every model meets is in test_contract.py)."""

import torch

from tpp.compensator import integrate_intervals
from tpp.neural.fullynn import FullyNN


def make_model(hidden_size: int = 8, seed: int = 0, **kwargs) -> FullyNN:
    torch.manual_seed(seed)
    return FullyNN(3, hidden_size=hidden_size, **kwargs).double()


def test_compensator_equals_fine_quadrature_of_intensity(hawkes_data):
    model = make_model(num_layers=3)
    with torch.no_grad():  # large weights: a steep, strongly curved cumulative hazard
        for p in model.parameters():
            p.mul_(3.0)
        exact = model.compensator(hawkes_data)
        fine = integrate_intervals(model.intensity, hawkes_data, 128)
        per_interval = model.cumulative_intensity(hawkes_data)
    torch.testing.assert_close(exact, fine.total, rtol=1e-4, atol=0.0)
    torch.testing.assert_close(per_interval, fine.value.cumsum(1)[:, :-1], rtol=1e-4, atol=1e-10)


def test_intensity_is_autograd_derivative_of_cumulative_hazard_and_positive():
    model = make_model()
    h = torch.randn(5, 7, model.hidden_size, dtype=torch.float64)
    tau = torch.rand(5, 7, dtype=torch.float64).mul(30.0).requires_grad_()
    cumulative, hazard = model._hazard(h, tau)
    (grad,) = torch.autograd.grad(cumulative.sum(), tau)
    torch.testing.assert_close(hazard, grad, rtol=1e-10, atol=1e-12)
    zero, _ = model._hazard(h, torch.zeros(5, 7, dtype=torch.float64))
    assert torch.equal(zero, torch.zeros_like(zero))
    far, far_hazard = model._hazard(h, torch.full((5, 7), 1e8, dtype=torch.float64))
    assert bool((far_hazard > 0).all()) and bool((far > 1.0).all())  # the gap distribution is proper

