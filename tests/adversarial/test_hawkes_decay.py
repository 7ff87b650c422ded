"""ExpHawkes with a learned decay: the fast path (pilot fit on a prefix, secant on the profile likelihood,
polished last solve) reaches the same maximum as a slow reference over the decay (issue 17, item 9)."""

import numpy as np
import pytest
import scipy.optimize

from tpp.hawkes import ExpHawkes
from tpp.hawkes.exp import _prefix

MU = np.array([0.4, 0.25, 0.3])
ADJ = np.array([[0.3, 0.0, 0.2], [0.25, 0.2, 0.0], [0.0, 0.3, 0.35]])
DECAY = 1.5


@pytest.fixture(scope="module")
def batch():
    # several sequences, so the pilot's prefix cuts one of them inside its window
    truth = ExpHawkes.from_params(MU, ADJ, DECAY)
    data = truth.sample(3, 9_000.0, generator=11)
    assert data.num_events >= ExpHawkes.PILOT_RATIO * ExpHawkes.PILOT_EVENTS  # the fast path runs
    return data


def profile_loglik(batch, decay: float) -> float:
    """The slow reference: a fixed-decay fit (its inner problem is concave) at a tight tolerance."""
    return ExpHawkes(3, decay=decay).fit(batch, tol=1e-14, max_iter=5_000).fit_result_["log_likelihood"]


def test_learned_decay_reaches_the_profile_maximum_of_a_slow_reference(batch):
    fast = ExpHawkes(3).fit(batch)
    assert fast.fit_result_["pilot_events"] > 0  # the pilot path was taken
    # slow reference: a grid over the decay (no better region elsewhere), then a bounded 1-D search
    grid = DECAY * np.exp(np.linspace(-1.5, 1.5, 13))
    values = [profile_loglik(batch, d) for d in grid]
    best = int(np.argmax(values))
    lo, hi = np.log(grid[max(best - 1, 0)]), np.log(grid[min(best + 1, grid.size - 1)])
    found = scipy.optimize.minimize_scalar(lambda x: -profile_loglik(batch, float(np.exp(x))), bounds=(lo, hi),
                                           method="bounded", options=dict(xatol=1e-7))
    reference_ll, reference_decay = -float(found.fun), float(np.exp(found.x))
    ll = fast.fit_result_["log_likelihood"]
    assert ll >= reference_ll - 1e-6 * abs(reference_ll)
    assert abs(ll - reference_ll) <= 1e-6 * abs(reference_ll)
    assert fast.decay_ == pytest.approx(reference_decay, rel=1e-3)
    # and the reported value is the model's exact log-likelihood at the fitted parameters
    assert float(fast.log_likelihood(batch).sum().detach()) == pytest.approx(ll, rel=1e-10)


def test_learned_decay_no_worse_than_the_plain_quasi_newton_path(batch, monkeypatch):
    fast = ExpHawkes(3).fit(batch)
    monkeypatch.setattr(ExpHawkes, "PILOT_EVENTS", 10**12)  # no pilot: L-BFGS-B over log(decay) from the data's start
    slow = ExpHawkes(3).fit(batch)
    assert "pilot_events" not in slow.fit_result_
    assert fast.fit_result_["log_likelihood"] >= slow.fit_result_["log_likelihood"] - 1e-9 * abs(
        slow.fit_result_["log_likelihood"])
    assert fast.fit_result_["decay_steps"] <= slow.fit_result_["decay_steps"]


def test_pilot_prefix_is_a_valid_layout_that_cuts_a_sequence_at_an_event():
    flat = {
        "times": np.array([0.5, 1.0, 2.0, 0.2, 0.4, 0.9, 1.5]),
        "marks": np.array([0, 1, 0, 1, 1, 0, 0]),
        "seq_offsets": np.array([0, 3, 7]),
        "t_start": np.zeros(2),
        "t_end": np.array([3.0, 2.0]),
        "scale": 1.0,
    }
    whole = _prefix(flat, 3)
    assert whole["seq_offsets"].tolist() == [0, 3] and whole["t_end"].tolist() == [3.0]
    cut = _prefix(flat, 5)
    assert cut["seq_offsets"].tolist() == [0, 3, 5]
    assert cut["t_end"].tolist() == [3.0, 0.9]  # the second window ends at the first event left out
    assert cut["times"].tolist() == [0.5, 1.0, 2.0, 0.2, 0.4]
    assert flat["t_end"].tolist() == [3.0, 2.0]  # the input is not modified


def test_profile_decay_gradient_from_the_feature_slopes_equals_the_recursion_gradient():
    from tpp.hawkes import SumExpHawkes, _recursion
    from tpp.hawkes._common import flat_events

    mu = np.array([0.4, 0.3])
    adj = np.array([[[0.2, 0.1], [0.1, 0.05]], [[0.0, 0.2], [0.3, 0.1]]])
    beta = np.array([0.7, 3.0])
    flat = flat_events(SumExpHawkes.from_params(mu, adj, beta).sample(3, 200.0, generator=1))
    args = (flat["times"], flat["marks"], flat["seq_offsets"], flat["t_start"], flat["t_end"])
    order = np.argsort(flat["marks"], kind="stable")
    rows = np.empty_like(order)
    rows[order] = np.arange(order.size)
    _, _, _, expected = _recursion.loglik_and_grad(*args, mu, adj, beta, np.ones(3), True)
    buffers = (np.full((rows.size, 4), np.nan), np.full((rows.size, 4), np.nan))  # every row is written
    X, D, tails, dtails, duration = _recursion.event_features_and_slopes(*args, beta, 2, rows, *buffers)
    X0, tails0, duration0 = _recursion.event_features(*args, beta, 2, rows)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(tails, tails0)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(flat["marks"], minlength=2))])
    got = sum(_recursion.target_decay_gradient(X[bounds[i]:bounds[i + 1]], D[bounds[i]:bounds[i + 1]], mu[i],
                                               adj[i].reshape(-1), dtails, 2) for i in range(2))
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
