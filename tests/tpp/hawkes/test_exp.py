"""Exponential Hawkes: exact likelihood, gradients, recovery, goodness of fit, simulation."""


import numpy as np
import pytest
import scipy.stats
import torch

from tpp import EventBatch
from tpp.compensator import integrate_intervals
from tpp.hawkes import ExpHawkes, NonStationaryWarning, Poisson, SumExpHawkes
from tpp.metrics import time_rescaling

MU2 = np.array([0.5, 0.3])
A2 = np.array([[0.3, 0.1], [0.2, 0.4]])


def direct_loglik(mu, adj, betas, batch):
    """Independent O(N^2) evaluation of the definition (strictly earlier events excite)."""
    adj = adj.reshape(len(mu), len(mu), -1)
    out = []
    for b, (times, marks) in enumerate(batch.sequences()):
        t0, t1 = float(batch.t_start[b]), float(batch.t_end[b])
        total = -mu.sum() * (t1 - t0)
        for n, (t, i) in enumerate(zip(times, marks)):
            lags = t - times[:n]
            lam = mu[i] + sum(
                adj[i, marks[m], u] * beta * np.exp(-beta * lags[m])
                for m in range(n) if lags[m] > 0 for u, beta in enumerate(betas)
            )
            total += np.log(lam)
            total -= sum(adj[:, i, u].sum() * (1 - np.exp(-beta * (t1 - t))) for u, beta in enumerate(betas))
        out.append(total)
    return np.array(out)


@pytest.fixture(scope="module")
def small_batch():
    model = ExpHawkes.from_params(MU2, A2, 2.0)
    batch = model.sample(4, 25.0, generator=7)
    # A tie and a window starting before the first event exercise the edge cases.
    seqs = [(t, m) for t, m in batch.sequences()]
    t, m = seqs[0]
    t = np.sort(np.concatenate([t, [t[2]]]))
    m = np.concatenate([m, [1]])
    return EventBatch.from_sequences([t] + [s[0] for s in seqs[1:]], [m] + [s[1] for s in seqs[1:]],
                                     t_start=[-1.0, 0.0, 0.0, 0.0], t_end=[26.0, 25.0, 25.0, 25.0], num_marks=2)


def test_log_likelihood_equals_direct_evaluation(small_batch):
    model = ExpHawkes.from_params(MU2, A2, 2.0)
    ours = model.log_likelihood(small_batch).detach().numpy()
    np.testing.assert_allclose(ours, direct_loglik(MU2, A2, [2.0], small_batch), rtol=1e-12)


def test_sum_exp_log_likelihood_equals_direct_evaluation(small_batch):
    adj = np.stack([A2 * 0.6, A2 * 0.4], -1)
    model = SumExpHawkes.from_params(MU2, adj, [1.0, 5.0])
    ours = model.log_likelihood(small_batch).detach().numpy()
    np.testing.assert_allclose(ours, direct_loglik(MU2, adj, [1.0, 5.0], small_batch), rtol=1e-12)


def test_zero_adjacency_is_the_poisson_closed_form(small_batch):
    hawkes = ExpHawkes.from_params(MU2, np.zeros((2, 2)), 3.0)
    poisson = Poisson.from_params(MU2)
    counts = torch.stack([(small_batch.mark.eq(k) & small_batch.mask).sum(1) for k in range(2)], 1).double()
    closed = (counts * torch.log(torch.tensor(MU2))).sum(1) - small_batch.duration * MU2.sum()
    torch.testing.assert_close(hawkes.log_likelihood(small_batch).detach(), closed)
    torch.testing.assert_close(poisson.log_likelihood(small_batch).detach(), closed)


def test_gradients_pass_gradcheck(small_batch):
    model = SumExpHawkes.from_params(MU2, np.stack([A2, A2 / 2], -1), [1.5, 4.0])
    params = [model.baseline.detach().clone().requires_grad_(),
              model.adjacency.detach().clone().requires_grad_(),
              model.decays.detach().clone().requires_grad_()]
    from tpp.hawkes.exp import _HawkesLogLik, _flat

    flat = _flat(small_batch)
    assert torch.autograd.gradcheck(lambda mu, a, b: _HawkesLogLik.apply(mu, a, b, flat, small_batch.device), params)


def test_compensator_closed_form_matches_quadrature(small_batch):
    model = ExpHawkes.from_params(MU2, A2, 2.0)
    numeric = integrate_intervals(model.intensity, small_batch, num_points=64)
    torch.testing.assert_close(model.compensator(small_batch).detach(), numeric.total.detach(), rtol=1e-10, atol=1e-10)
    assert float(numeric.error.detach().max()) < 1e-8


def test_intensity_uses_only_the_strict_past():
    model = ExpHawkes.from_params([1.0], [[0.5]], 2.0)
    batch = EventBatch.from_sequences([[1.0]], t_end=3.0)
    lam = model.intensity(batch, torch.tensor([[0.5, 1.0, 2.0]], dtype=torch.float64))[0, :, 0]
    expected = [1.0, 1.0, 1.0 + 0.5 * 2.0 * np.exp(-2.0)]
    np.testing.assert_allclose(lam.detach().numpy(), expected, rtol=1e-14)


def _fisher_check(model, truth_mu, truth_adj, data, z=4.5):
    se = model.standard_errors(data)
    err_mu = np.abs(model.baseline_ - truth_mu) / se["baseline"]
    err_adj = np.abs(model.adjacency_ - truth_adj) / se["adjacency"][..., 0]
    # |z| < 4.5 for every one of <= 30 parameters fails with probability < 30 * 7e-6 if the MLE is right.
    assert err_mu.max() < z, (model.baseline_, truth_mu, se["baseline"])
    assert err_adj.max() < z, (model.adjacency_, truth_adj, se["adjacency"])
    return se


def test_mle_recovers_parameters_k2():
    truth = ExpHawkes.from_params(MU2, A2, 2.0)
    data = truth.sample(1, 6.0e4, generator=1)
    assert 0.9e5 < data.num_events < 1.2e5
    fitted = ExpHawkes(2, decay=2.0).fit(data)
    se = _fisher_check(fitted, MU2, A2, data)
    assert se["adjacency"].max() < 0.02  # the test has power: errors are at the 1e-2 scale
    learned = ExpHawkes(2).fit(data)
    se = learned.standard_errors(data)
    assert abs(learned.decay_ - 2.0) < 4.5 * se["decays"][0]


def test_mle_recovers_parameters_k5():
    rng = np.random.default_rng(5)
    mu = rng.uniform(0.1, 0.4, 5)
    adj = rng.uniform(0.02, 0.15, (5, 5))
    truth = ExpHawkes.from_params(mu, adj, 1.5)
    data = truth.sample(20, 2.5e3, generator=2)
    assert 0.8e5 < data.num_events < 1.6e5
    fitted = ExpHawkes(5, decay=1.5).fit(data)
    _fisher_check(fitted, mu, adj, data)


def test_least_squares_is_consistent():
    truth = ExpHawkes.from_params(MU2, A2, 2.0)
    data = truth.sample(1, 6.0e4, generator=3)
    ls = ExpHawkes(2, decay=2.0).fit(data, objective="least-squares")
    np.testing.assert_allclose(ls.baseline_, MU2, atol=0.05)
    np.testing.assert_allclose(ls.adjacency_, A2, atol=0.05)
    mle = ExpHawkes(2, decay=2.0).fit(data)
    assert mle.score(data) >= ls.score(data)  # the MLE maximises what score measures


def test_l1_penalty_shrinks_adjacency():
    data = ExpHawkes.from_params(MU2, A2, 2.0).sample(1, 1e4, generator=4)
    free = ExpHawkes(2, decay=2.0).fit(data)
    sparse = ExpHawkes(2, decay=2.0).fit(data, l1=0.05)
    assert sparse.adjacency_.sum() < free.adjacency_.sum()


def test_rescaled_times_pass_ks_for_truth_and_fail_for_poisson():
    truth = ExpHawkes.from_params(MU2, A2, 2.0)
    data = truth.sample(1, 2e4, generator=11)
    good = time_rescaling(truth, data)
    assert good.ks_pvalue > 0.01
    # Exp(1) residuals: mean 1 and variance 1 as well.
    assert abs(good.residuals.mean() - 1) < 0.03
    bad = time_rescaling(Poisson(2).fit(data), data)
    assert bad.ks_pvalue < 1e-6


def test_simulation_matches_stationary_rate_and_is_seeded():
    truth = ExpHawkes.from_params(MU2, A2, 2.0)
    a = truth.sample(3, 5e3, generator=9)
    b = truth.sample(3, 5e3, generator=9)
    assert a == b
    rate = np.linalg.solve(np.eye(2) - A2, MU2)  # stationary rate (I - A)^-1 mu
    observed = np.bincount(a.mark[a.mask].numpy(), minlength=2) / (3 * 5e3)
    np.testing.assert_allclose(observed, rate, rtol=0.06)


def test_simulation_continues_a_history():
    truth = ExpHawkes.from_params(MU2, A2, 2.0)
    history = truth.sample(2, 10.0, generator=1)
    cont = truth.sample(2, 20.0, history=history, generator=2)
    for (h, _), (c, _) in zip(history.sequences(), cont.sequences()):
        np.testing.assert_array_equal(c[: h.size], h)
        assert np.all(np.diff(c) >= 0) and c[-1] <= 20.0


def test_simulated_continuation_has_the_conditional_first_event_law():
    """After a burst, the first new event comes sooner: its survival is exp(-Lambda) of the fitted model."""
    truth = ExpHawkes.from_params([0.2], [[0.8]], 1.0)
    history = EventBatch.from_sequences([[0.0, 0.1, 0.2, 0.3]], t_end=0.5)
    reps = EventBatch.concat([history] * 4000)
    cont = truth.sample(4000, 50.0, history=reps, generator=3)
    first = cont.time[:, 4].numpy()
    # Lambda(t) from 0.5: 0.2 (t - 0.5) + 0.8 sum_m (exp(-(0.5 - t_m)) - exp(-(t - t_m)))
    past = np.array([0.0, 0.1, 0.2, 0.3])

    def cdf(t):
        return 1 - np.exp(-(0.2 * (t - 0.5) + 0.8 * np.sum(np.exp(-(0.5 - past)) - np.exp(-(t[:, None] - past)), 1)))

    assert scipy.stats.kstest(first, cdf).pvalue > 0.01


def test_non_stationary_fit_warns():
    # A supercritical process grows exponentially; its MLE branching ratio is above 1.
    data = ExpHawkes.from_params([0.5], [[1.3]], 2.0).sample(1, 15.0, generator=1)
    with pytest.warns(NonStationaryWarning):
        model = ExpHawkes(1, decay=2.0).fit(data)
    assert model.branching_ratio >= 1


def test_bad_parameters_are_rejected():
    with pytest.raises(ValueError, match="decays? must be positive"):
        ExpHawkes(2, decay=-1.0)
    with pytest.raises(ValueError, match="adjacency must be non-negative"):
        ExpHawkes.from_params([0.1, 0.1], [[-0.1, 0], [0, 0]], 1.0)


def test_predict_gives_the_exact_next_event_law_for_poisson():
    model = Poisson.from_params([1.0, 3.0])
    batch = EventBatch.from_sequences([[0.5, 1.0]], [[0, 1]], t_end=2.0, num_marks=2)
    pred = model.predict(batch, quantiles=(0.5,))
    np.testing.assert_allclose(pred.time_mean.numpy(), [2.0 + 1 / 4.0], rtol=1e-6)
    np.testing.assert_allclose(pred.time_quantiles.numpy()[0, 0], 2.0 + np.log(2) / 4.0, rtol=1e-3)
    np.testing.assert_allclose(pred.mark_probs.numpy()[0], [0.25, 0.75], rtol=1e-6)


def test_predict_for_hawkes_matches_simulation():
    truth = ExpHawkes.from_params(MU2, A2, 2.0)
    history = truth.sample(1, 10.0, generator=5)
    pred = truth.predict(history)
    sims = truth.sample(3000, 100.0, history=EventBatch.concat([history] * 3000), generator=6)
    n = history.num_events
    first = sims.time[:, n].numpy()
    assert abs(first.mean() - float(pred.time_mean)) < 4 * first.std() / np.sqrt(first.size)
    freq = np.bincount(sims.mark[:, n].numpy(), minlength=2) / 3000
    np.testing.assert_allclose(freq, pred.mark_probs[0].numpy(), atol=0.03)


def test_fit_is_equivariant_to_the_clock():
    """Unix seconds vs hours: baselines and decays scale as 1/time, adjacency is unchanged."""
    truth = ExpHawkes.from_params(MU2, A2, 2.0)
    data = truth.sample(3, 3000.0, generator=8)
    seqs = data.sequences()
    offset, unit = 1.3e9, 3600.0
    shifted = EventBatch.from_sequences([offset + unit * t for t, _ in seqs], [m for _, m in seqs],
                                        t_start=offset, t_end=offset + unit * 3000.0, num_marks=2)
    a = ExpHawkes(2).fit(data)
    b = ExpHawkes(2).fit(shifted)
    np.testing.assert_allclose(b.adjacency_, a.adjacency_, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(b.baseline_ * unit, a.baseline_, rtol=1e-4)
    assert b.decay_ * unit == pytest.approx(a.decay_, rel=1e-4)
    # the reported optimum is the log-likelihood in the data's own units
    assert b.fit_result_["log_likelihood"] == pytest.approx(float(b.log_likelihood(shifted).detach().sum()), rel=1e-9)
