"""Fractional noise: exact fBM / fOU paths, the Markov approximation (MA-fBM) and FractionalLatentSDE.

Daems, Opper, Crevecoeur & Birdal (ICLR 2024). Monte Carlo tolerances are stated per check: a relative
bound where the issue asks for one (2%), else a number of standard errors of the sample covariance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate as si
import scipy.special as sp
import torch

import sde.simulate
from sde.fractional import (
    FBMType,
    MarkovFBM,
    _system,
    approximation_cost,
    estimate_hurst,
    fbm,
    fbm_covariance,
    fou,
    fou_autocovariance,
    optimal_weights,
    optimal_weights_torch,
    ou_rates,
    paths_to_series,
)
from sde.models import FractionalLatentSDE
from sde.models._base import seeded
from sde.models._posterior import solve_fixed
from sde.models.fractional import _FractionalPosterior
from sde.solvers import Method
from tpp.table import constructor_args

HURSTS = (0.2, 0.3, 0.7, 0.8)


def _z_scores(samples: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """``(sample cov - cov) / its standard error``, the error of a Gaussian sample's covariance entry being
    ``sqrt((C_ss C_tt + C_st^2) / N)``."""
    n = samples.shape[0]
    centred = samples - samples.mean(0)
    sample = centred.T @ centred / n
    d = np.diag(cov)
    return (sample - cov) / np.sqrt((d[:, None] * d[None, :] + cov**2) / n)


# ------------------------------------------------------------------------------------------ closed forms
@pytest.mark.parametrize("kind", [FBMType.TYPE_I, FBMType.TYPE_II])
@pytest.mark.parametrize("hurst", [0.3, 0.7])
def test_weight_system_matches_quadrature(kind, hurst):
    """``A``, ``b``, ``c`` of the weight system equal their defining integrals (``b``: the cross covariance of
    the target fBM and each OU increment, from the kernels of the moving-average representations)."""
    gamma, T = np.array([0.3, 1.0, 6.0]), 1.3
    A, b, c = _system(gamma, hurst, T, kind)
    alpha = hurst - 0.5
    mvn_scale = sp.gamma(hurst + 0.5) / math.sqrt(sp.gamma(2 * hurst + 1) * math.sin(math.pi * hurst))

    def cross(t: float, g: float) -> float:
        inner = si.quad(lambda s: (t - s) ** alpha * math.exp(-g * (t - s)), 0, t, limit=200)[0]
        if kind is FBMType.TYPE_II:
            return inner / sp.gamma(hurst + 0.5)
        past = si.quad(lambda v: ((t + v) ** alpha - v**alpha) * (math.exp(-g * (t + v)) - math.exp(-g * v)), 0,
                       np.inf, limit=400)[0]
        return (inner + past) / mvn_scale

    b_num = [si.quad(lambda t: cross(t, g), 0, T, limit=100)[0] for g in gamma]
    np.testing.assert_allclose(b, b_num, rtol=1e-6)
    def integrated(w: np.ndarray) -> float:  # int_0^T Var(sum_k w_k Z_k(t)) dt
        return si.quad(lambda t: float(MarkovFBM(gamma, w, hurst, kind).variance(t)), 0, T)[0]

    eye = np.eye(len(gamma))
    for i in range(len(gamma)):
        for j in range(len(gamma)):
            want = integrated(eye[i]) if i == j else (integrated(eye[i] + eye[j]) - integrated(eye[i])
                                                      - integrated(eye[j])) / 2
            assert A[i, j] == pytest.approx(want, rel=1e-8)
    target = MarkovFBM(gamma, b, hurst, kind)
    assert c == pytest.approx(si.quad(lambda t: float(target.target_covariance(t, t)), 0, T)[0], rel=1e-8)


def test_ou_rates_is_the_papers_grid():
    """``gamma_k = r^(k - (K+1)/2)``; ``gamma_max`` sets ``r = gamma_max^(2/(K-1))``."""
    np.testing.assert_allclose(ou_rates(5, 20.0), 20.0 ** (np.arange(-2, 3) / 2))
    np.testing.assert_allclose(ou_rates(3, r=4.0), [0.25, 1.0, 4.0])
    with pytest.raises(ValueError, match="num_ou"):
        ou_rates(0)


@pytest.mark.parametrize("kind", [FBMType.TYPE_I, FBMType.TYPE_II])
def test_markov_covariance_monte_carlo_within_2_percent(kind):
    """K = 5, H in {0.2, 0.3, 0.7, 0.8}: the sample variance and covariance of 200,000 exact draws of the
    approximation are within 2% of the closed form (the standard error is below 0.6% on every entry)."""
    times = np.array([0.25, 0.5, 1.0])
    for i, hurst in enumerate(HURSTS):
        ma = MarkovFBM.optimal(hurst, 5, fbm_type=kind)
        draws = ma.sample(200_000, times, generator=10 + i).numpy()
        closed = ma.covariance(times[:, None], times[None, :])
        sample = np.cov(draws.T, bias=True)
        np.testing.assert_allclose(sample, closed, rtol=0.02, err_msg=f"H={hurst}")
        np.testing.assert_allclose(np.diag(closed), ma.variance(times))


def test_model_solver_draws_the_markov_approximation():
    """The model's own noise, solved by sde.solvers.solve (Euler, general noise, u = 0), has the closed-form
    covariance: within 4.5 standard errors of 4,000 paths plus 2% for the Euler step (gamma dt = 0.04)."""
    class Zero(torch.nn.Module):
        def forward(self, t, z):
            return torch.zeros_like(z)

    ts = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    for hurst in (0.2, 0.8):
        torch.manual_seed(0)
        model = FractionalLatentSDE(1, latent_size=1, hurst=hurst, prior_drift=Zero(), diffusion_init=1.0,
                                    step_size=0.002).double()
        N = 4000
        omega = model.omega()
        ctx = torch.zeros(N, 1, model.qz0.in_features, dtype=torch.float64)
        system = _FractionalPosterior(model, omega, ctx, torch.full((N, 1), math.inf, dtype=torch.float64),
                                      torch.zeros(N, dtype=torch.float64), False)
        zero = torch.zeros(N, 1, dtype=torch.float64)
        y0 = torch.cat([zero, model._initial_ou(N), zero], -1)
        with torch.no_grad():
            z = solve_fixed(system, y0, ts, step_size=0.002, method=Method.EULER, seed=1).ys[:, 1:, 0].numpy()
        ma = MarkovFBM(model.gamma.numpy(), omega.detach().numpy(), hurst)
        closed = ma.covariance(ts[1:, None].numpy(), ts[None, 1:].numpy())
        z_scores = _z_scores(z, closed)
        bias = 0.02 * np.abs(closed) / np.sqrt((np.diag(closed)[:, None] * np.diag(closed)[None, :] + closed**2) / N)
        assert np.all(np.abs(z_scores) < 4.5 + bias), (hurst, z_scores)


@pytest.mark.parametrize("kind", [FBMType.TYPE_I, FBMType.TYPE_II])
def test_approximation_error_falls_as_k_grows(kind):
    """On the paper's grid with fixed ``r`` (K = 1, 3, ..., 11 nest), the optimal L2 error and, for Type I, the
    largest error of the covariance against exact fBM both fall as K grows."""
    t = np.linspace(0.02, 1.0, 50)
    for hurst in HURSTS:
        costs, cov_errors = [], []
        for K in (1, 3, 5, 7, 9, 11):
            gamma = ou_rates(K, r=4.0)
            costs.append(approximation_cost(gamma, hurst, 1.0, kind))
            if kind is FBMType.TYPE_I:
                ma = MarkovFBM(gamma, optimal_weights(gamma, hurst, 1.0, kind), hurst, kind)
                cov_errors.append(np.abs(ma.covariance(t[:, None], t[None, :])
                                         - fbm_covariance(t[:, None], t[None, :], hurst)).max())
        assert np.all(np.diff(costs) < 0) and costs[-1] < 0.2 * costs[0], (hurst, costs)
        if cov_errors:
            assert np.all(np.diff(cov_errors) < 0) and cov_errors[-1] < 0.06, (hurst, cov_errors)
    # a weight vector other than the optimum costs more
    gamma = ou_rates(5)
    best = optimal_weights(gamma, 0.3)
    assert approximation_cost(gamma, 0.3, omega=best * 1.05) > approximation_cost(gamma, 0.3)


def test_weights_are_differentiable_in_hurst():
    """``omega(H)``'s gradient (a central difference of the closed form) matches a finite difference."""
    gamma = ou_rates(5)
    h = torch.tensor(0.35, dtype=torch.float64, requires_grad=True)
    w = optimal_weights_torch(gamma, h)
    probe = torch.arange(1.0, 6.0, dtype=torch.float64)
    (w * probe).sum().backward()
    fd = ((optimal_weights(gamma, 0.351) - optimal_weights(gamma, 0.349)) / 0.002) @ probe.numpy()
    assert float(h.grad) == pytest.approx(fd, rel=1e-4)


# ------------------------------------------------------------------------------------------ exact paths
@pytest.mark.parametrize("hurst", [0.2, 0.5, 0.8])
def test_davies_harte_has_the_fbm_covariance(hurst):
    """20,000 Davies-Harte paths: every entry of the sample covariance within 5 standard errors of fBM's."""
    paths = fbm(20_000, 16, hurst, t_end=2.0, generator=3).numpy()
    assert paths.shape == (20_000, 17) and np.all(paths[:, 0] == 0)
    t = np.linspace(0, 2.0, 17)[1:]
    z = _z_scores(paths[:, 1:], fbm_covariance(t[:, None], t[None, :], hurst))
    assert np.abs(z).max() < 5.0


@pytest.mark.parametrize("hurst", [0.2, 0.8])
def test_fou_has_its_autocovariance(hurst):
    """Exact stationary fOU (circulant embedding of the closed-form autocovariance): sample covariance within 5
    standard errors; the autocovariance matches its defining expectation by quadrature, and H = 1/2 is OU's."""
    theta, sigma = 2.0, 0.7
    paths = fou(20_000, 16, hurst, theta=theta, sigma=sigma, mean=1.0, t_end=2.0, generator=4).numpy()
    lags = np.linspace(0, 2.0, 17)
    acf = fou_autocovariance(lags, hurst, theta, sigma)
    cov = acf[np.abs(np.arange(17)[:, None] - np.arange(17)[None, :])]
    assert np.abs(_z_scores(paths, cov)).max() < 5.0
    assert abs(paths.mean() - 1.0) < 0.05
    for tau in (0.0, 0.4):
        expect = [si.quad(lambda w: theta * math.exp(-theta * w) * abs(tau + s * w) ** (2 * hurst), 0, np.inf,
                          limit=400)[0] for s in (1, -1)]
        want = sigma**2 / 4 * (sum(expect) - 2 * tau ** (2 * hurst))
        assert fou_autocovariance(np.array([tau]), hurst, theta, sigma)[0] == pytest.approx(want, rel=1e-7)
    np.testing.assert_allclose(fou_autocovariance(lags, 0.5, theta, sigma),
                               sigma**2 * np.exp(-theta * lags) / (2 * theta), rtol=1e-9)


def test_pypi_fbm_paths_agree():
    """PyPI ``fbm`` 0.3.0 (its Davies-Harte) and ours draw the same law: both sample covariances within 5
    standard errors of the exact one, and our estimator recovers H on its paths."""
    from fbm import FBM

    np.random.seed(5)  # fbm 0.3.0 draws from numpy's global generator
    hurst, n = 0.3, 16
    ref = FBM(n=n, hurst=hurst, length=1.0, method="daviesharte")
    theirs = np.stack([ref.fbm() for _ in range(3000)])
    ours = fbm(3000, n, hurst, generator=5).numpy()
    t = np.linspace(0, 1, n + 1)[1:]
    exact = fbm_covariance(t[:, None], t[None, :], hurst)
    assert np.abs(_z_scores(theirs[:, 1:], exact)).max() < 5.0
    assert np.abs(_z_scores(ours[:, 1:], exact)).max() < 5.0
    fitted = estimate_hurst(theirs[:20], np.linspace(0, 1, n + 1)).hurst
    assert abs(fitted - hurst) < 0.05


def test_simulate_reexports_and_argument_errors():
    assert sde.simulate.fbm is fbm and sde.simulate.fou is fou
    with pytest.raises(ValueError, match="hurst"):
        fbm(2, 8, 1.0)
    with pytest.raises(ValueError, match="n_steps"):
        fbm(2, 0, 0.5)
    with pytest.raises(ValueError, match="theta"):
        fou(2, 8, 0.5, theta=0.0)


# ------------------------------------------------------------------------------------------ fitting H
@pytest.mark.parametrize("hurst", [0.2, 0.5, 0.8])
def test_fitted_hurst_on_exact_paths(hurst):
    """Maximum likelihood of the MA-fBM (K = 5) on 10 exact fBM paths and, with the drift known (as in the
    paper's fOU experiments), 10 exact fOU paths of 100 steps each: H within 0.05."""
    t = np.linspace(0, 3.0, 101)
    fit = estimate_hurst(fbm(10, 100, hurst, t_end=3.0, generator=1), t)
    assert abs(fit.hurst - hurst) < 0.05 and 0.85 < fit.sigma < 1.25, fit
    t = np.linspace(0, 2.0, 101)
    fit = estimate_hurst(fou(10, 100, hurst, theta=1.0, t_end=2.0, generator=2), t, process="fou", theta=1.0,
                         mean=0.0)
    assert abs(fit.hurst - hurst) < 0.05, fit
    with pytest.raises(ValueError, match="strictly increasing"):
        estimate_hurst(np.zeros((1, 3)), np.array([0.0, 1.0, 1.0]))


# ------------------------------------------------------------------------------------------ the model
def _data(n: int = 12, steps: int = 20):
    paths = fou(n, steps, 0.3, theta=2.0, t_end=1.0, generator=0)
    return paths_to_series(paths, 1.0, noise_std=0.05, generator=1)


def test_model_elbo_is_finite_and_its_gradient_reaches_hurst():
    torch.manual_seed(0)
    data = _data()
    # init_hurst=False: H starts at the constructor's value (the default starts it at the Markov likelihood's
    # estimate, tests/adversarial/test_fractional_hurst.py)
    model = FractionalLatentSDE(1, latent_size=2, hidden_size=16, context_size=8, hurst=0.4, step_size=0.02,
                                init_hurst=False)
    model.initialise(data)
    assert 0 < model.hurst_ < 1 and model.hurst_ == pytest.approx(0.4)
    elbo = model.elbo(data)
    assert elbo.shape == (12,) and torch.isfinite(elbo).all()
    elbo.mean().backward()
    assert model.raw_hurst.grad is not None and float(model.raw_hurst.grad) != 0.0
    with torch.no_grad():
        assert math.isfinite(model.score(data, num_samples=4))
        pred = model.predict(data[:2], num_samples=4)
    assert pred.mean.shape == (2, 21, 1) and torch.isfinite(pred.std).all()
    # the table's save path can rebuild it from its attributes
    rebuilt = FractionalLatentSDE(**constructor_args(model))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    fixed = FractionalLatentSDE(1, latent_size=2, learn_hurst=False, hurst=0.3, fbm_type=FBMType.TYPE_II,
                                step_size=0.02)
    assert "raw_hurst" not in dict(fixed.named_parameters()) and fixed.hurst_ == pytest.approx(0.3)
    fixed.initialise(data)
    with torch.no_grad():
        assert torch.isfinite(fixed.elbo(data)).all()  # Type II: the OU processes start at 0
    with pytest.raises(ValueError, match="step_size"):
        FractionalLatentSDE(1, gamma_max=40.0, step_size=0.02)


def test_short_fit_raises_the_elbo():
    torch.manual_seed(0)
    data = _data(12, 20)
    model = FractionalLatentSDE(1, latent_size=2, hidden_size=16, context_size=8, step_size=0.02)
    model.initialise(data)
    with seeded(0), torch.no_grad():
        before = float(model.elbo(data, num_samples=4).mean())
    model.fit(data, epochs=5, batch_size=12, lr=2e-2, progress=False)
    with seeded(0), torch.no_grad():
        after = float(model.elbo(data, num_samples=4).mean())
    assert after > before + 1.0, (before, after)
    assert 0 < model.hurst_ < 1
