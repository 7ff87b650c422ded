"""SparseExpHawkes (issue 17, item 7): the sparse likelihood equals ExpHawkes's, the penalised solution meets its
KKT conditions, the support of a sparse truth is recovered, blocked (bounded-memory) and screened fits equal the
plain one, standard errors equal the inverse of a direct Hessian, model selection and the table entry work."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse

from tpp import table
from tpp.events import EventBatch
from tpp.hawkes import ExpHawkes, SparseExpHawkes
from tpp.hawkes import _recursion


def sparse_truth(K: int, per_row: int, row_sum: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    A = np.zeros((K, K))
    for i in range(K):
        A[i, rng.choice(K, per_row, replace=False)] = row_sum / per_row
    return A


def f1(est: np.ndarray, truth: np.ndarray) -> float:
    tp = np.sum((est > 0) & (truth > 0))
    return 2 * tp / (np.sum(est > 0) + np.sum(truth > 0))


@pytest.fixture(scope="module")
def truth30():
    return sparse_truth(30, 3, 0.6, seed=0)


@pytest.fixture(scope="module")
def events30(truth30):
    """About 15,000 events of a 30-type process with 3 non-zeros per row."""
    return SparseExpHawkes.from_params(np.full(30, 0.05), truth30, 1.0).sample(1, 4000.0, generator=0)


@pytest.fixture(scope="module")
def small():
    """A dense 5-type ExpHawkes sample (three sequences), with tied times added."""
    rng = np.random.default_rng(1)
    A = rng.uniform(0, 0.3, (5, 5)) * (rng.random((5, 5)) < 0.5)
    mu = rng.uniform(0.2, 0.5, 5)
    batch = ExpHawkes.from_params(mu, A, 2.0).sample(3, 150.0, generator=1)
    flat = batch.to_flat()
    flat["times"] = np.round(flat["times"], 1)  # ties: they must not excite one another
    return mu, A, EventBatch.from_flat(**flat)


def test_log_likelihood_equals_exp_hawkes_at_the_same_parameters(small):
    mu, A, batch = small
    dense = ExpHawkes.from_params(mu, A, 2.0).log_likelihood(batch).detach().numpy()
    sparse = SparseExpHawkes.from_params(mu, scipy.sparse.csr_matrix(A), 2.0).log_likelihood(batch).numpy()
    np.testing.assert_allclose(sparse, dense, rtol=0, atol=1e-10)
    assert SparseExpHawkes.from_params(mu, A, 2.0).score(batch) == pytest.approx(ExpHawkes.from_params(mu, A, 2.0).score(batch), abs=1e-12)


@pytest.mark.parametrize("penalty", ["l1", "group-lasso"])
def test_penalised_solution_meets_the_kkt_subgradient_conditions(events30, penalty):
    K, strength, ratio = 30, 0.02, (1.0 if penalty == "l1" else 0.5)
    model = SparseExpHawkes(K, decay=1.0, penalty=penalty, strength=strength, l1_ratio=0.5, tol=1e-11).fit(events30)
    flat = events30.to_flat()
    n = flat["times"].size
    adj = model.adjacency_
    _, g_mu, g_adj, _ = _recursion.loglik_and_grad(
        flat["times"], flat["marks"].astype(np.int64), flat["seq_offsets"], flat["t_start"], flat["t_end"],
        model.baseline_, adj[..., None], np.array([model.decay_]), np.ones(1), True)
    g = g_adj[..., 0] / n  # d(log-likelihood per event) / dA: the penalty's subgradient must match it
    lam1, lam2 = strength * ratio, strength * (1 - ratio)
    np.testing.assert_allclose(g_mu * model.baseline_ / n, 0.0, atol=1e-9)  # mu is unpenalised: stationary
    assert model.fit_result_["converged"] and 0 < model.adjacency_sparse_.nnz < K * K
    for i in range(K):
        row, norm = adj[i], np.linalg.norm(adj[i])
        on = row > 0
        if norm > 0:
            np.testing.assert_allclose(g[i, on], lam1 + lam2 * row[on] / norm, atol=1e-7)
            assert np.all(g[i, ~on] <= lam1 + 1e-7)
        else:
            assert np.linalg.norm(np.maximum(g[i] - lam1, 0.0)) <= lam2 + 1e-7


@pytest.mark.parametrize("penalty", ["l1", "group-lasso"])
def test_support_of_a_sparse_truth_is_recovered(events30, truth30, penalty):
    model = SparseExpHawkes(30, decay=1.0, penalty=penalty).fit(events30)
    assert f1(model.adjacency_, truth30) >= 0.9
    assert model.strength_ in [p["strength"] for p in model.path_]
    point = next(p for p in model.path_ if p["strength"] == model.strength_)
    assert point["bic"] == pytest.approx(-2 * point["log_likelihood_refit"] + np.log(events30.num_events) * point["df"])
    assert point["bic"] == min(p["bic"] for p in model.path_)


def test_bounded_memory_and_screening_give_the_same_solution(events30):
    """Design rows built in blocks of 1024 numbers, and candidate sources screened to 3 per target (the KKT check
    adding the rest), must reach the solution of the unscreened, unblocked fit."""
    reference = SparseExpHawkes(30, decay=1.0, strength=0.01, tol=1e-11).fit(events30)
    blocked = SparseExpHawkes(30, decay=1.0, strength=0.01, tol=1e-11, memory_floats=1024, max_candidates=3).fit(events30)
    assert blocked.fit_result_["kkt_rounds"] > 1
    np.testing.assert_allclose(blocked.adjacency_, reference.adjacency_, atol=1e-7)
    np.testing.assert_allclose(blocked.baseline_, reference.baseline_, rtol=1e-7)


def test_standard_errors_equal_the_inverse_of_a_direct_hessian(small):
    mu, A, batch = small
    model = SparseExpHawkes(5, decay=2.0, refit=True).fit(batch)
    se = model.standard_errors(batch)
    flat = batch.to_flat()
    args = (flat["times"], flat["marks"].astype(np.int64), flat["seq_offsets"], flat["t_start"], flat["t_end"])
    adj = model.adjacency_
    support = np.flatnonzero(adj.ravel() > 0)
    theta = np.concatenate([model.baseline_, adj.ravel()[support]])

    def grad(x):
        full = np.zeros(25)
        full[support] = x[5:]
        _, g_mu, g_adj, _ = _recursion.loglik_and_grad(*args, x[:5], full.reshape(5, 5, 1), np.array([2.0]),
                                                       np.ones(3), True)
        return np.concatenate([g_mu, g_adj.ravel()[support]])

    H = np.empty((theta.size, theta.size))
    for k in range(theta.size):
        h = 1e-6 * max(abs(theta[k]), 1e-3)
        up, down = theta.copy(), theta.copy()
        up[k] += h
        down[k] -= h
        H[:, k] = (grad(up) - grad(down)) / (2 * h)
    direct = np.sqrt(np.diag(np.linalg.inv(-(H + H.T) / 2)))
    np.testing.assert_allclose(se["baseline"], direct[:5], rtol=1e-5)
    np.testing.assert_allclose(se["adjacency"].toarray().ravel()[support], direct[5:], rtol=1e-5)
    assert se["adjacency"].nnz == model.adjacency_sparse_.nnz


def test_cross_validated_strength_and_aic(events30):
    cv = SparseExpHawkes(30, decay=1.0, selection="cv", n_folds=3, n_strengths=5).fit(events30)
    scores = [p["cv_log_likelihood"] for p in cv.path_]
    assert cv.strength_ == cv.path_[int(np.argmax(scores))]["strength"] and np.all(np.isfinite(scores))
    aic = SparseExpHawkes(30, decay=1.0, selection="aic", n_strengths=5).fit(events30)
    point = next(p for p in aic.path_ if p["strength"] == aic.strength_)
    assert point["aic"] == min(p["aic"] for p in aic.path_)


def test_sparse_sampler_matches_the_stationary_event_rate(truth30):
    model = SparseExpHawkes.from_params(np.full(30, 0.05), truth30, 1.0)
    batch = model.sample(20, 500.0, generator=3)
    expected = 500.0 * np.linalg.solve(np.eye(30) - truth30, np.full(30, 0.05)).sum()  # ignores the start-up transient
    assert abs(batch.num_events / 20 / expected - 1) < 0.05
    history = model.sample(2, 50.0, generator=4)
    more = model.sample(2, 80.0, history=history, generator=5)
    assert more.num_events >= history.num_events and np.isfinite(model.log_likelihood(more).numpy()).all()


def test_round_trip_and_table_entry(small, tmp_path):
    mu, A, batch = small
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = table.build("sparse-hawkes", batch).fit(batch)
    loaded = table.load(table.save(model, tmp_path / "sparse.model"))
    assert type(loaded) is SparseExpHawkes and loaded.score(batch) == model.score(batch)
    assert (loaded.adjacency_sparse_ != model.adjacency_sparse_).nnz == 0
    assert model.intensity(batch, batch.t_end[:, None]).shape == (3, 1, 5)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="penalty"):
        SparseExpHawkes(3, penalty="l2")
    with pytest.raises(ValueError, match="selection"):
        SparseExpHawkes(3, selection="gcv")
    with pytest.raises(ValueError):
        SparseExpHawkes(3, decay=-1.0)
    with pytest.raises(ValueError, match="fit the model"):
        SparseExpHawkes(3).log_likelihood(ExpHawkes.from_params([0.5] * 3, np.zeros((3, 3)), 1.0).sample(1, 5.0, generator=0))
