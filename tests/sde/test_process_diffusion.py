"""Stochastic process diffusion (sde.models.ProcessDiffusion) and its synthetic sets (sde.diffusion_data).

Closed forms in float64: the forward marginal's covariance, and on Gaussian-process data the optimal
linear denoiser, for which the probability-flow log-likelihood is the Gaussian log-density and the
reverse processes sample the data's covariance. The training recoveries live in
benchmarks/process_diffusion.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from sde import diffusion_data as dd
from sde.models import ProcessDiffusion
from sde.models.process_diffusion import noise_covariance, plot_samples
from sde.series import SeriesBatch, SeriesDataError

L = 8


def _times() -> Tensor:
    g = torch.Generator().manual_seed(3)
    t = torch.sort(torch.rand(L, dtype=torch.float64, generator=g)).values
    t[0] = 0.0
    return t


def _data_cov(t: Tensor) -> Tensor:
    """The data's covariance: a GP unlike the noise (longer RBF, variance 2) plus a nugget."""
    gap = t[:, None] - t[None]
    return 2.0 * torch.exp(-(gap / 0.3) ** 2) + 0.05 * torch.eye(len(t), dtype=t.dtype)


class OptimalLinear(nn.Module):
    """The exact denoiser for x_0 ~ N(0, K): z = sqrt(1 - a) C^T (a K + (1 - a) Sigma)^{-1} x."""

    def __init__(self, model: ProcessDiffusion, K: Tensor) -> None:
        super().__init__()
        object.__setattr__(self, "model", model)  # not a submodule: the model owns this denoiser
        self.register_buffer("K", K)

    def forward(self, x: Tensor, t: Tensor, s: Tensor, mask: Tensor) -> Tensor:
        # every series of these tests has the same times and every row of a batch the same s: one solve
        assert bool((t == t[:1]).all()) and bool((s == s[:1]).all())
        sigma = self.model.noise_covariance(t[:1], mask[:1])[0]
        a = self.model.schedule.alpha_bar(s[:1].to(torch.float64))
        cov = a * self.K + (1 - a) * sigma
        gain = (1 - a).sqrt() * torch.linalg.cholesky(sigma).T @ torch.linalg.inv(cov)  # [L, L]
        return (gain @ x.to(torch.float64)).to(x.dtype)


def _optimal(noise: str, kind: str = "sde", **options: object) -> ProcessDiffusion:
    model = ProcessDiffusion(1, noise=noise, kind=kind, noise_scale=0.2, skip=False, output="white",
                             **options).double()
    model.denoiser = OptimalLinear(model, _data_cov(_times()))
    return model


@pytest.mark.parametrize("noise", ["gp", "ou"])
def test_forward_marginal_covariance_is_scaled_noise_covariance(noise: str) -> None:
    model = ProcessDiffusion(1, noise=noise, noise_scale=0.2).double()
    t, N = _times()[None], 100_000
    mask = torch.ones(N, L, dtype=torch.bool)
    chol = model.noise_factor(t, mask[:1]).expand(N, L, L)
    s = torch.full((N,), 0.3, dtype=torch.float64)
    x0 = torch.zeros(N, L, 1, dtype=torch.float64)
    xs, _ = model.diffuse(x0, chol, mask, s, generator=torch.Generator().manual_seed(0))
    empirical = xs[..., 0].T @ xs[..., 0] / N
    target = (1 - model.schedule.alpha_bar(s[:1])) * model.noise_covariance(t, mask[:1])[0]
    assert float((empirical - target).norm() / target.norm()) < 0.02
    # the mean part: x_0 is scaled by sqrt(alpha_bar)
    ones = torch.ones(4, L, 1, dtype=torch.float64)
    xs1, z = model.diffuse(ones, chol[:4], mask[:4], s[:4])
    a = model.schedule.alpha_bar(s[:1])
    assert torch.allclose(xs1, a.sqrt() * ones + (1 - a).sqrt() * (chol[:4] @ z))


@pytest.mark.parametrize("noise", ["gp", "ou", "independent"])
def test_probability_flow_log_likelihood_equals_gaussian_density(noise: str) -> None:
    # beta_max = 40: alpha_bar(1) = 2e-9, so N(0, Sigma) is the terminal marginal to far below the tolerance
    model = _optimal(noise, beta_max=40.0, eps=1e-6)
    t, K = _times(), _data_cov(_times())
    x = torch.linalg.cholesky(K) @ torch.randn(2, L, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    batch = SeriesBatch(t.expand(2, L), x, torch.ones(2, L, dtype=torch.bool))
    ll = model.log_likelihood(batch, rtol=1e-8, atol=1e-8)
    exact = torch.distributions.MultivariateNormal(torch.zeros(L, dtype=torch.float64), K).log_prob(x[..., 0])
    assert torch.allclose(ll, exact, atol=1e-3, rtol=0)
    # the data's units: scaling the values by 3 (and the model's channel std) moves log p by -L log 3
    model.channel_std.fill_(3.0)
    scaled = SeriesBatch(t.expand(2, L), 3 * x, torch.ones(2, L, dtype=torch.bool))
    assert torch.allclose(model.log_likelihood(scaled, rtol=1e-8, atol=1e-8), exact - L * math.log(3.0), atol=1e-3)


@pytest.mark.parametrize("kind", ["ddpm", "sde"])
def test_reverse_process_samples_the_data_covariance(kind: str) -> None:
    model = _optimal("ou", kind, num_steps=100)
    samples = model.sample(_times(), num_samples=4000, seed=0)  # [S, L, 1]
    assert samples.shape == (4000, L, 1)
    empirical = samples[..., 0].T @ samples[..., 0] / 4000
    K = _data_cov(_times())
    assert float((empirical - K).norm() / K.norm()) < 0.08


def _small_data(n: int = 12, length: int = 6) -> SeriesBatch:
    return dd.ou(n, length, t_end=10.0, seed=0)


def test_objective_gradients_reach_every_parameter() -> None:
    data = _small_data()
    for kind in ("ddpm", "sde"):
        torch.manual_seed(0)
        model = ProcessDiffusion(1, kind=kind, hidden_size=16, num_layers=1, num_heads=2).initialise(data)
        obj = model.objective(data)
        assert obj.shape == (len(data),) and bool((obj <= 0).all())
        obj.sum().backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0


def test_fit_sample_impute_and_score_shapes() -> None:
    data = _small_data()
    model = ProcessDiffusion(1, noise="ou", hidden_size=16, num_layers=1, num_heads=2, num_steps=10)
    model.fit(data, epochs=1, batch_size=6, progress=False)
    ll = model.log_likelihood(data[:2], rtol=1e-3, atol=1e-3)
    assert ll.shape == (2,) and bool(torch.isfinite(ll).all())
    assert math.isfinite(model.score(data[:2], rtol=1e-3, atol=1e-3))
    t = torch.linspace(0.0, 5.0, 7)
    assert model.sample(t, 3, seed=0).shape == (3, 7, 1)
    assert model.sample(t.expand(2, 7), 3, seed=0).shape == (3, 2, 7, 1)
    assert torch.equal(model.sample(t, 2, seed=5), model.sample(t, 2, seed=5))
    # impute: observed values come back as they are, the missing ones are sampled
    values = data.values.clone()
    values[:, 3:] = float("nan")
    partial = SeriesBatch(data.time, values, data.mask)
    draws = model.impute(partial[:3], num_samples=4)
    assert draws.shape == (4, 3, data.values.shape[1], 1)
    assert torch.equal(draws[:, :, :3], data.values[:3, :3].expand(4, -1, -1, -1))
    assert bool(torch.isfinite(draws).all())
    pred = model.predict(partial[:3], num_samples=4)
    assert pred.mean.shape == (3, data.values.shape[1], 1) and float(pred.std[:, :3].abs().max()) == 0.0


def test_errors_name_the_problem() -> None:
    data = _small_data()
    model = ProcessDiffusion(1, hidden_size=16, num_layers=1, num_heads=2)
    values = data.values.clone()
    values[2, 4, 0] = float("nan")
    with pytest.raises(SeriesDataError, match="fully observed") as info:
        model.objective(SeriesBatch(data.time, values, data.mask))
    assert info.value.series == 2 and info.value.row == 4
    with pytest.raises(ValueError, match="channels"):
        ProcessDiffusion(2).objective(data)
    with pytest.raises(ValueError, match="noise='brownian'"):
        ProcessDiffusion(1, noise="brownian")
    with pytest.raises(ValueError, match="kind"):
        ProcessDiffusion(1, kind="flow")
    with pytest.raises(ValueError, match="strictly increasing"):
        model.sample(torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="num_samples"):
        model.sample(torch.tensor([0.0, 1.0]), 0)
    with pytest.raises(ValueError):
        ProcessDiffusion(0)
    with pytest.raises(TypeError, match="SeriesBatch"):
        model.objective(data.values)


def test_noise_covariance_kernels_and_padding() -> None:
    t = torch.tensor([[0.0, 0.1, 0.3, 0.3]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False]])
    gp = noise_covariance(t, mask, "gp", 0.2, jitter=0.0)
    ou = noise_covariance(t, mask, "ou", 0.2, jitter=0.0)
    assert math.isclose(float(gp[0, 0, 1]), math.exp(-0.25)) and math.isclose(float(ou[0, 0, 2]), math.exp(-1.5))
    for cov in (gp, ou, noise_covariance(t, mask, "independent", 0.2)):
        assert torch.equal(cov[0, 3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64))
    assert torch.equal(noise_covariance(t, mask, "independent", 0.2)[0], torch.eye(4, dtype=torch.float64))


def test_plot_samples_returns_a_figure() -> None:
    from matplotlib.figure import Figure

    data = _small_data()
    model = ProcessDiffusion(1, hidden_size=16, num_layers=1, num_heads=2, num_steps=5).initialise(data)
    fig = plot_samples(model, data, num_samples=3)
    assert isinstance(fig, Figure) and len(fig.axes) == 2 and len(fig.axes[1].lines) == 3
    import matplotlib.pyplot as plt

    plt.close(fig)


# ---------------------------------------------------------------------------------------------- data sets
@pytest.mark.parametrize("name", sorted(dd.GENERATORS))
def test_synthetic_sets_are_seeded_irregular_and_finite(name: str) -> None:
    a, b = dd.load(name, 4, length=10, seed=2), dd.load(name, 4, length=10, seed=2)
    assert a == b and a.values.shape[:2] == (4, 10) and bool(torch.isfinite(a.values).all())
    assert bool((a.time[:, 0] == 0).all()) and not torch.equal(a.time[0], a.time[1])
    assert not torch.equal(dd.load(name, 4, length=10, seed=3).values, a.values)
    regular = dd.load(name, 2, length=5, irregular=False)
    assert torch.equal(regular.time[0], regular.time[1])


def test_ou_and_cir_transitions_match_their_moments() -> None:
    n, t1 = 20_000, 7.0
    ou = dd.ou(n, 2, t_end=t1, irregular=False, seed=0).values[:, 1, 0].numpy()
    mu, theta, sigma = 0.02, 0.1, 0.4
    mean = mu * (t1 / theta - (1 - math.exp(-theta * t1)) / theta**2)
    var = math.exp(-2 * theta * t1) + sigma**2 * (1 - math.exp(-2 * theta * t1)) / (2 * theta)
    assert abs(ou.mean() - mean) < 4 * math.sqrt(var / n) and abs(ou.var() / var - 1) < 0.05
    cir = dd.cir(n, 2, t_end=0.5, irregular=False, seed=0).values[:, 1, 0].numpy()
    expected = 1.2 + (math.sqrt(2 / math.pi) - 1.2) * math.exp(-0.5)
    assert abs(cir.mean() - expected) < 4 * cir.std() / math.sqrt(n) and bool(np.all(cir >= 0))


def test_unknown_set_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown synthetic set"):
        dd.load("lorentz")


def test_padding_never_reaches_a_series() -> None:
    """The probability-flow drift and the prior density of a ragged batch are each series' own (the
    likelihood then differs only by the shared adaptive steps: 2e-6 at rtol 1e-8, checked by hand)."""
    from sde.models.process_diffusion import _Prepared

    data = dd.sine(3, 5, seed=4)
    short = SeriesBatch.from_arrays([(data.time[0, :3].numpy(), data.values[0, :3].numpy()),
                                     (data.time[1].numpy(), data.values[1].numpy())])
    torch.manual_seed(0)
    model = ProcessDiffusion(1, noise="gp", hidden_size=8, num_layers=1, num_heads=2).double().initialise(data)
    s = torch.tensor(0.4, dtype=torch.float64)
    with torch.no_grad():  # values only
        both = _Prepared(model, short, complete=True, what="test")
        drift = model._flow(both.x, both, s)
        prior = model.prior_log_density(both.x, both.chol, both.mask)
        for i in range(2):
            alone = _Prepared(model, short[i:i + 1], complete=True, what="test")
            rows = alone.x.shape[1]
            assert torch.allclose(drift[i:i + 1, :rows], model._flow(alone.x, alone, s), atol=1e-12)
            assert float(drift[i, rows:].abs().sum()) == 0.0
            assert torch.allclose(prior[i:i + 1], model.prior_log_density(alone.x, alone.chol, alone.mask),
                                  atol=1e-12)


class Zero(nn.Module):
    def forward(self, x: Tensor, t: Tensor, s: Tensor, mask: Tensor) -> Tensor:
        return torch.zeros_like(x)


def test_skip_is_the_exact_denoiser_for_data_like_the_noise() -> None:
    # skip alone (the network outputs 0) is optimal for x_0 ~ N(0, Sigma): the flow is still, log p = log N(x; 0, Sigma)
    model = ProcessDiffusion(1, noise="ou", noise_scale=0.2, denoiser=Zero()).double()
    t = _times()
    mask = torch.ones(1, L, dtype=torch.bool)
    sigma = model.noise_covariance(t[None], mask)[0]
    x = torch.linalg.cholesky(sigma) @ torch.randn(L, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ll = model.log_likelihood(SeriesBatch(t[None], x[None], mask))
    exact = torch.distributions.MultivariateNormal(torch.zeros(L, dtype=torch.float64), sigma).log_prob(x[:, 0])
    assert torch.allclose(ll, exact[None], atol=1e-6)


class RowWise(nn.Module):
    """``eps_hat = sqrt(1 - a) x / (a c + 1 - a)``: each row alone, the exact noise for x_0 ~ N(0, c Sigma)."""

    def __init__(self, model: ProcessDiffusion, c: float) -> None:
        super().__init__()
        object.__setattr__(self, "model", model)
        self.c = c

    def forward(self, x: Tensor, t: Tensor, s: Tensor, mask: Tensor) -> Tensor:
        a = self.model.schedule.alpha_bar(s.to(torch.float64))[:, None, None]
        return ((1 - a).sqrt() * x / (a * self.c + 1 - a)).to(x.dtype)


@pytest.mark.parametrize("noise", ["ou", "gp"])
def test_noise_prediction_makes_the_exact_denoiser_row_wise(noise: str) -> None:
    # data shaped like the noise but smaller (c = 0.1, as a standardised OU residual): predicting the correlated
    # noise, a row-wise network is exact; predicting the white z, the same network is not (it would need C^{-1})
    c, t = 0.1, _times()
    mask = torch.ones(1, L, dtype=torch.bool)
    models = {}
    for output in ("noise", "white"):
        model = ProcessDiffusion(1, noise=noise, noise_scale=0.2, skip=False, output=output, beta_max=40.0,
                                 eps=1e-6).double()
        model.denoiser = RowWise(model, c)
        models[output] = model
    sigma = models["noise"].noise_covariance(t[None], mask)[0]
    x = math.sqrt(c) * torch.linalg.cholesky(sigma) @ torch.randn(L, 1, dtype=torch.float64,
                                                                   generator=torch.Generator().manual_seed(4))
    batch = SeriesBatch(t[None], x[None], mask)
    exact = torch.distributions.MultivariateNormal(torch.zeros(L, dtype=torch.float64), c * sigma).log_prob(x[:, 0])
    assert torch.allclose(models["noise"].log_likelihood(batch, rtol=1e-8, atol=1e-8), exact[None], atol=1e-3)
    assert not torch.allclose(models["white"].log_likelihood(batch, rtol=1e-8, atol=1e-8), exact[None], atol=1e-1)
    with pytest.raises(ValueError, match="output"):
        ProcessDiffusion(1, output="x0")
