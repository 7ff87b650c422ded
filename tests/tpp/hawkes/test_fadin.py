"""FaDIn: kernels, grid statistics, the two discrete objectives, recovery, continuous-time protocol."""

import numpy as np
import pytest
import scipy.stats
import torch

from tpp import EventBatch
from tpp.compensator import integrate_intervals
from tpp.hawkes import ExpHawkes, FaDInHawkes
from tpp.hawkes import _grid
from tpp.hawkes.fadin import GridStatistics
from tpp.hawkes.kernels import KERNELS, ParametricKernel, get_kernel
from tpp.metrics import time_rescaling

MU = np.array([0.5, 0.3])
A = np.array([[0.3, 0.1], [0.2, 0.4]])
GAUSS = {"m": np.array([[1.0, 1.5], [0.5, 2.0]]), "sigma": np.full((2, 2), 0.3)}
COSINE = {"u": np.array([[0.2, 0.5], [0.1, 1.0]]), "sigma": np.array([[0.4, 0.5], [0.3, 0.6]])}


def p64(d):
    return {k: torch.as_tensor(np.asarray(v, np.float64)) for k, v in d.items()}


@pytest.mark.parametrize("name", list(KERNELS))
def test_kernels_are_densities_with_matching_cdf(name):
    k = get_kernel(name, 3.0)
    p = p64(k.default_params())
    t = torch.linspace(0, 3, 300001, dtype=torch.float64)[1:]
    dens = k.pdf(t, p)
    assert float(torch.trapezoid(dens, t)) == pytest.approx(1.0, abs=2e-4)
    for x in (0.4, 1.3, 2.9):
        sel = t <= x
        assert float(k.cdf(torch.tensor(x, dtype=torch.float64), p)) == pytest.approx(
            float(torch.trapezoid(dens[sel], t[sel])), abs=2e-4)


@pytest.mark.parametrize("name", list(KERNELS))
def test_kernel_sampler_matches_conditional_cdf(name):
    k = get_kernel(name, 3.0)
    p = p64(k.default_params())
    n = 40000
    draws = k.sample({kk: np.full(n, v) for kk, v in k.default_params().items()}, np.full(n, 0.5), np.random.default_rng(0))
    c0 = float(k.cdf(torch.tensor(0.5, dtype=torch.float64), p))

    def cdf(x):
        return (k.cdf(torch.as_tensor(x), p).numpy() - c0) / (1 - c0)

    assert draws.min() >= 0.5 and draws.max() <= 3.0
    assert scipy.stats.kstest(draws, cdf).pvalue > 0.001


def test_parametric_kernel_normalises_by_quadrature_and_has_autograd_gradients():
    gamma = ParametricKernel(lambda t, k, s: t ** (k - 1) * torch.exp(-t / s), {"k": 2.0, "s": 0.5}, positive=("k", "s")).bind(3.0)
    p = {"k": torch.tensor(2.0, dtype=torch.float64, requires_grad=True), "s": torch.tensor(0.5, dtype=torch.float64)}
    truth = scipy.stats.gamma(2.0, scale=0.5)
    value = gamma.cdf(torch.tensor(1.0, dtype=torch.float64), p)
    assert float(value.detach()) == pytest.approx(truth.cdf(1.0) / truth.cdf(3.0), rel=1e-10)
    value.backward()
    assert torch.isfinite(p["k"].grad)


@pytest.fixture(scope="module")
def gaussian_model():
    return FaDInHawkes.from_params(MU, A, "truncated-gaussian", 3.0, GAUSS, delta=0.05)


@pytest.fixture(scope="module")
def small(gaussian_model):
    batch = gaussian_model.sample(3, 40.0, generator=3)
    seqs = batch.sequences()
    return EventBatch.from_sequences([t for t, _ in seqs], [m for _, m in seqs], t_start=[0.0, -2.0, 0.0],
                                     t_end=[40.0, 41.0, 40.0], num_marks=2)


def _direct_grid(model, batch):
    lam = model.discrete_intensity(batch)
    flat = batch.to_flat()
    bins, _ = _grid.project(flat["times"], flat["seq_offsets"], flat["t_start"], flat["t_end"], model.delta)
    seq = np.repeat(np.arange(len(batch)), np.diff(flat["seq_offsets"]))
    at_events = lam[torch.from_numpy(seq), torch.from_numpy(flat["marks"]), torch.from_numpy(bins)]
    return lam, at_events


def test_discrete_kernels_sum_to_one_over_delta(gaussian_model):
    phi = gaussian_model.discrete_kernels()
    torch.testing.assert_close(gaussian_model.delta * phi.sum(-1), torch.ones(2, 2, dtype=torch.float64), rtol=0, atol=1e-14)


def test_l2_from_statistics_equals_direct_discrete_intensity(gaussian_model, small):
    lam, at_events = _direct_grid(gaussian_model, small)
    direct = (gaussian_model.delta * (lam**2).sum() - 2 * at_events.sum()) / small.num_events
    exact = gaussian_model.l2_loss(GridStatistics(small, gaussian_model.delta, 3.0, exact=True))
    assert abs(float(exact.detach()) - float(direct.detach())) < 1e-10
    toeplitz = gaussian_model.l2_loss(GridStatistics(small, gaussian_model.delta, 3.0, exact=False))
    # The approximation ignores pairs near each window's end: a small, visible difference.
    toeplitz, direct = float(toeplitz.detach()), float(direct.detach())
    assert 0 < abs(toeplitz - direct) < 0.05 * abs(direct)


def test_discrete_likelihood_from_pairs_equals_direct(gaussian_model, small):
    lam, at_events = _direct_grid(gaussian_model, small)
    direct = -(torch.log(at_events).sum() - gaussian_model.delta * lam.sum()) / small.num_events
    stats = GridStatistics(small, gaussian_model.delta, 3.0, pairs=True)
    assert abs(float(gaussian_model.discrete_nll(stats)) - float(direct)) < 1e-10


def test_continuous_log_likelihood_equals_direct_sum(gaussian_model, small):
    kernel = gaussian_model.kernel
    p = p64(GAUSS)
    expected = []
    for b, (times, marks) in enumerate(small.sequences()):
        t0, t1 = float(small.t_start[b]), float(small.t_end[b])
        total = -MU.sum() * (t1 - t0)
        for n, (t, i) in enumerate(zip(times, marks)):
            lam = MU[i]
            for m in range(n):
                lag = t - times[m]
                if 0 < lag <= 3.0:
                    j = marks[m]
                    lam += A[i, j] * float(kernel.pdf(torch.tensor(lag, dtype=torch.float64), {k: v[i, j] for k, v in p.items()}))
            total += np.log(lam)
            for i2 in range(2):
                total -= A[i2, i] * float(kernel.cdf(torch.tensor(min(t1 - t, 3.0), dtype=torch.float64), {k: v[i2, i] for k, v in p.items()}))
        expected.append(total)
    np.testing.assert_allclose(gaussian_model.log_likelihood(small).detach().numpy(), expected, rtol=1e-10)


def test_compensator_matches_quadrature(gaussian_model, small):
    numeric = integrate_intervals(gaussian_model.intensity, small, num_points=256)
    np.testing.assert_allclose(gaussian_model.compensator(small).detach().numpy(), numeric.total.detach().numpy(), rtol=2e-5)


def test_continuous_log_likelihood_gradcheck(small):
    model = FaDInHawkes.from_params(MU, A, "raised-cosine", 3.0, COSINE)
    sub = small[[0]]
    names = [n for n, _ in model.named_parameters()]
    inputs = [p.detach().clone().requires_grad_() for _, p in model.named_parameters()]

    def ll(*raw):
        return torch.func.functional_call(model, dict(zip(names, raw)), (sub,))

    assert torch.autograd.gradcheck(ll, inputs)


@pytest.mark.parametrize("kernel, params", [("truncated-gaussian", GAUSS), ("raised-cosine", COSINE)])
def test_l2_recovers_parameters_and_grid_error_shrinks_with_delta(kernel, params):
    truth = FaDInHawkes.from_params(MU, A, kernel, 3.0, params)
    data = truth.sample(1, 6.2e4, generator=11)
    assert 0.9e5 < data.num_events < 1.1e5
    loc = "m" if kernel == "truncated-gaussian" else "u"
    fits = {delta: FaDInHawkes(2, kernel, 3.0, delta).fit(data) for delta in (0.1, 0.01, 0.0025)}
    assert all(f.fit_result_["converged"] for f in fits.values())
    fit = fits[0.01]
    # Tolerances are 4 standard deviations of each estimate over 12 simulations of this size at
    # delta = 0.01 (measured largest sd over entries: baseline 0.006, adjacency 0.005, location
    # and scale 0.018; largest error seen in the 12 runs: 0.012, 0.011, 0.036).
    assert np.abs(fit.baseline_ - MU).max() < 0.025
    assert np.abs(fit.adjacency_ - A).max() < 0.02
    assert np.abs(fit.kernel_params_[loc] - params[loc]).max() < 0.075
    assert np.abs(fit.kernel_params_["sigma"] - params["sigma"]).max() < 0.075

    # The discretisation error, separated from the statistical error by fitting the same events:
    # the distance to the finest-grid fit shrinks from delta = 0.1 to 0.01. (Against the truth,
    # at 1e5 events the statistical error of the Gaussian's m and sigma, sd ~0.01, hides the
    # delta = 0.1 grid bias; for the raised cosine the error fell ~40% in 4 of 5 seeds measured.)
    def kernel_distance(a, b):
        return sum(np.abs(a.kernel_params_[k] - b.kernel_params_[k]).sum() for k in (loc, "sigma"))

    assert kernel_distance(fits[0.01], fits[0.0025]) < 0.5 * kernel_distance(fits[0.1], fits[0.0025])


def test_k10_from_the_default_start_converges_without_nan():
    rng = np.random.default_rng(0)
    K = 10
    adj = np.zeros((K, K))
    on = rng.random((K, K)) < 0.3
    adj[on] = rng.uniform(0.1, 1.0, on.sum())
    adj *= 0.6 / np.max(np.abs(np.linalg.eigvals(adj)))
    mu = rng.uniform(0.1, 0.5, K)
    truth = FaDInHawkes.from_params(mu, adj, "truncated-exponential", 3.0, {"decay": np.full((K, K), 2.0)})
    data = truth.sample(1, 4e3, generator=1)
    fit = FaDInHawkes(K, "truncated-exponential", 3.0, 0.1).fit(data)
    assert fit.fit_result_["converged"] and np.isfinite(fit.fit_result_["loss"])
    assert np.all(np.isfinite(fit.adjacency_)) and np.all(np.isfinite(fit.kernel_params_["decay"]))
    # 25,776 events for 100 pairs: errors of ~0.05 per entry are the statistical noise here.
    assert np.abs(fit.adjacency_ - adj).max() < 0.15
    assert np.abs(fit.adjacency_ - adj).mean() < 0.03


def test_likelihood_objective_on_exponential_data_matches_exact_mle():
    data = ExpHawkes.from_params(MU, A, 2.0).sample(1, 3e4, generator=5)
    exact = ExpHawkes(2, decay=2.0).fit(data)
    fadin = FaDInHawkes(2, "truncated-exponential", 6.0, 0.01, objective="likelihood", fixed={"decay": 2.0}).fit(data)
    np.testing.assert_allclose(fadin.kernel_params_["decay"], 2.0)
    # Truncating at W = 6 keeps 1 - exp(-12) of the mass: the two estimators agree up to the grid.
    np.testing.assert_allclose(fadin.adjacency_, exact.adjacency_, atol=0.02)
    np.testing.assert_allclose(fadin.baseline_, exact.baseline_, atol=0.02)


def test_fitted_model_is_a_point_process(gaussian_model):
    data = gaussian_model.sample(1, 2e4, generator=7)
    assert time_rescaling(gaussian_model, data).ks_pvalue > 0.01
    history = gaussian_model.sample(2, 10.0, generator=1)
    cont = gaussian_model.sample(2, 20.0, history=history, generator=2)
    for (h, _), (c, _) in zip(history.sequences(), cont.sequences()):
        np.testing.assert_array_equal(c[: h.size], h)
    rate = np.linalg.solve(np.eye(2) - A, MU)
    observed = np.bincount(data.mark[data.mask].numpy(), minlength=2) / 2e4
    np.testing.assert_allclose(observed, rate, rtol=0.08)


def test_masks_and_fixed_parameters_are_respected():
    data = FaDInHawkes.from_params(MU, A, "truncated-gaussian", 3.0, GAUSS).sample(1, 5e3, generator=2)
    mask = np.array([[True, False], [True, True]])
    fit = FaDInHawkes(2, "truncated-gaussian", 3.0, 0.05, adjacency_mask=mask, fixed={"sigma": 0.3}).fit(data)
    assert fit.adjacency_[0, 1] == 0.0
    np.testing.assert_allclose(fit.kernel_params_["sigma"], 0.3)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="unknown kernel"):
        FaDInHawkes(2, "triangle", 3.0, 0.1)
    with pytest.raises(ValueError, match="delta"):
        FaDInHawkes(2, "truncated-gaussian", 3.0, 5.0)
    with pytest.raises(ValueError, match="objective"):
        FaDInHawkes(2, "truncated-gaussian", 3.0, 0.1, objective="l1")
