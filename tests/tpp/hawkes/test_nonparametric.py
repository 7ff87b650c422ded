"""Nonparametric (piecewise-constant kernel) Hawkes: exact likelihood, EM, simulation, goodness of fit."""

import numpy as np
import pytest
import scipy.stats
import torch

from tpp import EventBatch
from tpp.compensator import integrate_intervals
from tpp.hawkes import ExpHawkes, Poisson
from tpp.hawkes.nonparametric import NonparametricHawkes, _log_likelihood
from tpp.metrics import time_rescaling

MU2 = np.array([0.5, 0.3])
A2 = np.array([[0.3, 0.1], [0.2, 0.4]])

# A kernel that no exponential fits: all its mass on lags [0.6, 1.4) (bins 3..6 of 10 on [0, 2)).
SHAPE_MU = np.array([0.4, 0.3])
SHAPE_ADJ = np.array([[0.4, 0.15], [0.1, 0.3]])
SHAPE_W, SHAPE_B = 2.0, 10


def shape_kernel() -> np.ndarray:
    kv = np.zeros((2, 2, SHAPE_B))
    kv[:, :, 3:7] = SHAPE_ADJ[..., None] / (4 * SHAPE_W / SHAPE_B)
    return kv


def bin_integral(kv_row: np.ndarray, width: float, r: float) -> float:
    """``int_0^r`` of a piecewise-constant kernel, summing each bin's overlap with ``[0, r]``."""
    return float(sum(v * max(0.0, min(r, (b + 1) * width) - b * width) for b, v in enumerate(kv_row)))


def direct_loglik(mu: np.ndarray, kv: np.ndarray, support: float, batch: EventBatch) -> np.ndarray:
    """Independent O(N^2) evaluation of the definition (strictly earlier events within ``support`` excite)."""
    K, _, B = kv.shape
    width = support / B
    out = []
    for s, (times, marks) in enumerate(batch.sequences()):
        t0, t1 = float(batch.t_start[s]), float(batch.t_end[s])
        total = -mu.sum() * (t1 - t0)
        for t, i in zip(times, marks):
            lam = mu[i]
            for tm, j in zip(times, marks):
                lag = t - tm
                if 0 < lag < support:
                    lam += kv[i, j, int(np.floor(lag / width))]
            total += np.log(lam)
            total -= sum(bin_integral(kv[k, i], width, t1 - t) for k in range(K))
        out.append(total)
    return np.array(out)


@pytest.fixture(scope="module")
def small_batch() -> EventBatch:
    seqs = ExpHawkes.from_params(MU2, A2, 2.0).sample(3, 15.0, generator=7).sequences()
    # A tie, a lag of exactly W = 1.5 (does not excite: the support is [0, W)) and a window that
    # starts before the first event and ends well after the last.
    edge = (np.array([0.5, 0.5, 1.1, 2.0, 3.5, 3.8]), np.array([0, 1, 1, 0, 1, 0]))
    return EventBatch.from_sequences([s[0] for s in seqs] + [edge[0]], [s[1] for s in seqs] + [edge[1]],
                                     t_start=[0.0, 0.0, 0.0, -1.0], t_end=[15.0, 15.0, 15.0, 6.0], num_marks=2)


def small_kernel() -> np.ndarray:
    kv = np.random.default_rng(3).uniform(0.05, 0.6, (2, 2, 5))
    kv[0, 1, 2] = 0.0
    return kv


def test_log_likelihood_equals_direct_evaluation(small_batch):
    kv = small_kernel()
    model = NonparametricHawkes.from_params(MU2, kv, 1.5)
    ours = model.log_likelihood(small_batch).detach().numpy()
    np.testing.assert_allclose(ours, direct_loglik(MU2, kv, 1.5, small_batch), rtol=1e-12)
    assert len(small_batch) == 4 and small_batch.num_events > 40


def test_gradients_pass_gradcheck(small_batch):
    mu = torch.tensor(MU2, requires_grad=True)
    kv = torch.tensor(small_kernel() + 0.05, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m, k: _log_likelihood(m, k, 1.5, small_batch), (mu, kv))
    model = NonparametricHawkes.from_params(MU2, small_kernel(), 1.5)
    model.log_likelihood(small_batch).sum().backward()
    assert model.baseline.grad is not None and model.kernel_values.grad.abs().sum() > 0


def breakpoint_batch(batch: EventBatch, support: float, bins: int) -> EventBatch:
    """The events and every bin edge ``t_m + b h`` inside the window, as cut points for quadrature.

    Between consecutive cut points the intensity is constant, so Gauss-Legendre is exact there.
    """
    width = support / bins
    cuts = []
    for s, (times, _) in enumerate(batch.sequences()):
        t0, t1 = float(batch.t_start[s]), float(batch.t_end[s])
        edges = (times[:, None] + np.arange(bins + 1) * width).ravel()
        cuts.append(np.unique(np.concatenate([times, edges[(edges > t0) & (edges < t1)]])))
    return EventBatch.from_sequences(cuts, t_start=batch.t_start.numpy(), t_end=batch.t_end.numpy(), num_marks=1)


def test_compensator_and_cumulative_intensity_match_quadrature_of_intensity(small_batch):
    model = NonparametricHawkes.from_params(MU2, small_kernel(), 1.5)
    cuts = breakpoint_batch(small_batch, 1.5, 5)
    numeric = integrate_intervals(lambda _, t: model.intensity(small_batch, t), cuts, num_points=4)
    torch.testing.assert_close(model.compensator(small_batch).detach(), numeric.total.detach(), rtol=1e-10, atol=1e-10)
    # Lambda_k(t_start, t_n] at each event: the quadrature summed up to the event's cut point.
    running = numeric.value.detach().cumsum(1).numpy()  # [B, cut points + 1, K]
    cum = model.cumulative_intensity(small_batch).detach().numpy()
    for s, ((times, _), (cut_times, _)) in enumerate(zip(small_batch.sequences(), cuts.sequences())):
        pos = np.searchsorted(cut_times, times)
        np.testing.assert_allclose(cum[s, : times.size], running[s, pos], rtol=1e-10, atol=1e-10)


def test_intensity_uses_only_the_strict_past_within_the_support():
    model = NonparametricHawkes.from_params([0.5], [[[1.0, 2.0, 3.0, 4.0]]], 1.0)
    batch = EventBatch.from_sequences([[1.0]], t_end=3.0)
    t = torch.tensor([[0.5, 1.0, 1.1, 1.3, 1.99, 2.0, 2.5]], dtype=torch.float64)
    lam = model.intensity(batch, t)[0, :, 0].detach().numpy()
    np.testing.assert_allclose(lam, [0.5, 0.5, 1.5, 2.5, 4.5, 0.5, 0.5], rtol=1e-14)
    np.testing.assert_allclose(model.kernel([-0.1, 0.0, 0.3, 0.99, 1.0])[:, 0, 0], [0, 1, 2, 4, 0])
    np.testing.assert_array_equal(model.excitation([0.3, 0.6]), model.kernel([0.3, 0.6]))
    np.testing.assert_allclose(model.adjacency_, [[2.5]])


# ---------------------------------------------------------------------------- EM on exponential data
@pytest.fixture(scope="module")
def exp_fit():
    data = ExpHawkes.from_params(MU2, A2, 2.0).sample(1, 6.25e4, generator=1)
    model = NonparametricHawkes(2, support=3.0, bins=30).fit(data, tol=1e-8)
    return data, model


def test_em_recovers_exponential_kernels_bin_by_bin(exp_fit):
    data, model = exp_fit
    assert 0.9e5 < data.num_events < 1.1e5
    beta, width = 2.0, 0.1
    # Kernel mass beyond W = 3 is exp(-6) = 0.25% of A: the fit estimates the truncated integral.
    target_adj = A2 * (1 - np.exp(-beta * 3.0))
    edges = np.arange(31) * width
    target_bins = A2[..., None] * (np.exp(-beta * edges[:-1]) - np.exp(-beta * edges[1:])) / width  # bin averages
    # Tolerance: the MLE's standard errors from the observed Fisher information. Over 40 repeated
    # simulations of this setting their spread matched these errors within 15% for the adjacency and
    # the first bins (and was smaller in the tail), with no bias beyond 0.5 standard errors.
    se = model.standard_errors(data)
    assert se["adjacency"].max() < 0.01  # the test has power: errors are at the 5e-3 scale
    z_adj = np.abs(model.adjacency_ - target_adj) / se["adjacency"]
    z_bins = np.abs(model.kernel_values_ - target_bins) / se["kernel_values"]
    # |z| < 4.5 for every one of 124 values fails with probability < 124 * 7e-6 if the fit is right.
    assert z_adj.max() < 4.5, (model.adjacency_, target_adj, se["adjacency"])
    assert z_bins.max() < 4.5, np.unravel_index(z_bins.argmax(), z_bins.shape)
    assert np.mean(z_bins**2) < 2.0  # no systematic shape error hiding under the per-bin bound
    assert np.abs(model.baseline_ - MU2).max() < 4.5 * se["baseline"].max()


def test_em_log_likelihood_never_decreases_and_matches_the_exact_one(exp_fit):
    data, model = exp_fit
    result = model.fit_result_
    trace = np.asarray(result["log_likelihood_trace"])
    assert result["converged"] and len(trace) == result["iterations"] + 1 > 10
    assert np.diff(trace).min() >= -1e-10 * abs(trace[-1])
    # the EM's closed-form compensator (exposures) is the same as log_likelihood's
    exact = float(model.log_likelihood(data).detach().sum())
    assert result["log_likelihood"] == pytest.approx(exact, rel=1e-11)
    assert 0 < result["seconds_per_iteration"] < result["seconds"]


def test_em_fixed_point_is_a_stationary_point_with_the_window_end():
    """Many short windows: ignoring that kernels run past t_end (tick's M-step) would leave
    |theta * dlogL/dtheta| near 3 at its fixed point; the exact exposures bring it to 0."""
    data = ExpHawkes.from_params(MU2, A2, 2.0).sample(200, 40.0, generator=2)
    model = NonparametricHawkes(2, support=3.0, bins=30).fit(data, tol=1e-10, max_iter=5000)
    model.log_likelihood(data).sum().backward()
    assert float((model.kernel_values.grad * model.kernel_values).detach().abs().max()) < 0.01
    assert float((model.baseline.grad * model.baseline).detach().abs().max()) < 0.01
    assert float(model.kernel_values.grad.max()) < 0.01  # KKT: no zero value would gain by growing
    short = NonparametricHawkes(2, support=3.0, bins=30).fit(data, max_iter=3)
    assert short.fit_result_["iterations"] == 3 and not short.fit_result_["converged"]


# ---------------------------------------------------------------------------- simulation round trip
@pytest.fixture(scope="module")
def shape_data():
    truth = NonparametricHawkes.from_params(SHAPE_MU, shape_kernel(), SHAPE_W)
    return truth, truth.sample(20, 1500.0, generator=5)


def test_sample_then_fit_recovers_a_non_exponential_shape(shape_data):
    _, data = shape_data
    assert 3e4 < data.num_events < 5e4
    model = NonparametricHawkes(2, support=SHAPE_W, bins=SHAPE_B).fit(data, tol=1e-9, max_iter=5000)
    se = model.standard_errors(data)
    z_bins = np.abs(model.kernel_values_ - shape_kernel()) / se["kernel_values"]
    assert z_bins.max() < 4.5, np.unravel_index(z_bins.argmax(), z_bins.shape)
    assert (np.abs(model.adjacency_ - SHAPE_ADJ) / se["adjacency"]).max() < 4.5
    # the mass sits where it should: bins 3..6 hold nearly all of it
    inside = model.kernel_values_[:, :, 3:7].sum(-1) / model.kernel_values_.sum(-1)
    assert inside.min() > 0.9


def test_rescaled_times_pass_ks_for_truth_and_fail_for_poisson(shape_data):
    truth, data = shape_data
    good = time_rescaling(truth, data)
    assert good.ks_pvalue > 0.01
    assert abs(good.residuals.mean() - 1) < 0.03
    assert time_rescaling(Poisson(2).fit(data), data).ks_pvalue < 1e-6


def test_simulation_matches_stationary_rate_and_is_seeded():
    truth = NonparametricHawkes.from_params(SHAPE_MU, shape_kernel(), SHAPE_W)
    a = truth.sample(3, 5e3, generator=9)
    assert a == truth.sample(3, 5e3, generator=9)
    assert a == truth.sample(3, 5e3, generator=np.random.default_rng(9))
    torch_gen = truth.sample(3, 5e3, generator=torch.Generator().manual_seed(0))
    assert torch_gen.num_events > 0
    long = truth.sample(10, 5e3, generator=10)
    rate = np.linalg.solve(np.eye(2) - SHAPE_ADJ, SHAPE_MU)  # stationary rate (I - A)^-1 mu
    observed = np.bincount(long.mark[long.mask].numpy(), minlength=2) / 5e4
    # Counts of a stationary Hawkes process have covariance T (I - A)^-1 diag(rate) (I - A)^-T
    # (Bacry et al. 2013, the CLT): the rates are checked to 4.5 of those standard deviations (~0.8%).
    inv = np.linalg.inv(np.eye(2) - SHAPE_ADJ)
    sd = np.sqrt(np.diag(inv @ np.diag(rate) @ inv.T) / 5e4)
    assert np.all(np.abs(observed - rate) < 4.5 * sd), (observed, rate, sd)


def test_simulated_continuation_has_the_conditional_first_event_law():
    """After a burst, the first new event comes from the history's remaining offspring (delays
    conditioned past the history end) or a new immigrant: its survival is exp(-Lambda)."""
    kv = np.array([[[0.0, 1.2, 0.8, 0.4]]])  # W = 1, adjacency 0.6, mass away from lag 0
    model = NonparametricHawkes.from_params([0.2], kv, 1.0)
    past = np.array([0.0, 0.1, 0.2, 0.3, 0.45])
    history = EventBatch.from_sequences([past], t_end=0.5)
    cont = model.sample(4000, 100.0, history=EventBatch.concat([history] * 4000), generator=3)
    for c, _ in cont.sequences()[:5]:
        np.testing.assert_array_equal(c[: past.size], past)
        assert np.all(np.diff(c) >= 0) and c[-1] <= 100.0
    assert int(cont.lengths.min()) > past.size
    first = cont.time[:, past.size].numpy()

    def cdf(t: np.ndarray) -> np.ndarray:
        # Lambda(t) from the history end: mu (t - 0.5) + what each past kernel adds between 0.5 and t
        def added(x: float) -> float:
            return sum(bin_integral(kv[0, 0], 0.25, x - tm) - bin_integral(kv[0, 0], 0.25, 0.5 - tm) for tm in past)

        return 1 - np.exp(-(0.2 * (t - 0.5) + np.array([added(x) for x in t])))

    assert scipy.stats.kstest(first, cdf).pvalue > 0.01


# ---------------------------------------------------------------------------- estimator face
def test_fit_is_equivariant_to_the_clock():
    """Unix seconds vs hours: baseline and kernel values scale as 1/time, the adjacency is unchanged."""
    data = ExpHawkes.from_params(MU2, A2, 2.0).sample(3, 1000.0, generator=8)
    seqs = data.sequences()
    offset, unit = 1.3e9, 3600.0
    shifted = EventBatch.from_sequences([offset + unit * t for t, _ in seqs], [m for _, m in seqs],
                                        t_start=offset, t_end=offset + unit * 1000.0, num_marks=2)
    a = NonparametricHawkes(2, support=3.0, bins=15).fit(data)
    b = NonparametricHawkes(2, support=3.0 * unit, bins=15).fit(shifted)
    assert b.fit_result_["iterations"] == a.fit_result_["iterations"]
    np.testing.assert_allclose(b.adjacency_, a.adjacency_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(b.kernel_values_ * unit, a.kernel_values_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(b.baseline_ * unit, a.baseline_, rtol=1e-6)
    assert b.fit_result_["log_likelihood"] == pytest.approx(float(b.log_likelihood(shifted).detach().sum()), rel=1e-9)


def test_bad_parameters_are_rejected():
    with pytest.raises(ValueError, match="support must be positive"):
        NonparametricHawkes(2, support=0.0, bins=10)
    with pytest.raises(ValueError, match="bins must be a positive integer"):
        NonparametricHawkes(2, support=1.0, bins=0)
    with pytest.raises(ValueError, match="kernel_values must be non-negative"):
        NonparametricHawkes.from_params([0.1], [[[0.1, -0.1]]], 1.0)
    with pytest.raises(ValueError, match="no events of type"):
        NonparametricHawkes(2, support=1.0, bins=2).fit(EventBatch.from_sequences([[0.5, 1.0]], [[0, 0]], num_marks=2))
