"""The fixed-decay ``ExpHawkes`` fit's fast kernels (issue 17, "ours at most 0.5x intensify"): a counting sort of
the events by mark, the statistics written transposed (``[K U, N]``), and the projected Newton that reads a type's
events as a contiguous range of columns. Each must equal the path it replaced, so the fit's optimum is unchanged."""

import numpy as np
import pytest

from tpp.hawkes import ExpHawkes, _recursion
from tpp.hawkes._common import flat_events
from tpp.hawkes.exp import SumExpHawkes, _standardise, moment_start

MU = np.array([0.3, 0.2, 0.4])
ADJ = np.array([[0.2, 0.1, 0.0], [0.0, 0.3, 0.1], [0.1, 0.0, 0.2]])
DECAY = 1.5


@pytest.fixture(scope="module")
def sample():
    """A 3-type sample in the fit's standardised clock, with an empty sequence and a tie added."""
    batch = ExpHawkes.from_params(MU, ADJ, DECAY).sample(5, 200.0, generator=3)
    flat, scale = _standardise(flat_events(batch))
    # a tie (two events at one time, the second of another type) and an empty sequence after the first
    cut = int(flat["seq_offsets"][1])
    flat["times"] = np.insert(flat["times"], cut, flat["times"][cut - 1])
    flat["marks"] = np.insert(flat["marks"], cut, (flat["marks"][cut - 1] + 1) % 3)
    offsets = flat["seq_offsets"].copy()
    offsets[1:] += 1
    flat["seq_offsets"] = np.insert(offsets, 1, offsets[1])
    flat["t_start"] = np.insert(flat["t_start"], 1, 0.0)
    flat["t_end"] = np.insert(flat["t_end"], 1, 3.0)
    return flat, scale


def stable_rows(marks):
    order = np.argsort(marks, kind="stable")
    rows = np.empty_like(order)
    rows[order] = np.arange(order.size)
    return rows


def both_layouts(flat, scale, beta, K=3):
    """``bounds`` (each type's row range), the row statistics ``(X, tails, duration)`` and the transposed ones of one sample."""
    rows, bounds = _recursion.rows_by_mark(flat["marks"], K)
    args = (flat["times"], flat["marks"], flat["seq_offsets"], flat["t_start"], flat["t_end"],
            np.array(beta) * scale, K, rows)
    return bounds, _recursion.event_features(*args), _recursion.event_features_columns(*args)


@pytest.mark.parametrize("marks", [np.array([], np.int64), np.array([0, 0, 0]), np.array([3, 0, 3, 1, 0, 3, 1]),
                                   np.random.default_rng(0).integers(0, 7, 5000)])
def test_counting_sort_by_mark_is_the_stable_argsort(marks):
    """Types that never occur (2, 4, 5, 6 in the third case) get empty ranges; ties keep their order."""
    K = 7
    rows, bounds = _recursion.rows_by_mark(marks.astype(np.int64), K)
    np.testing.assert_array_equal(rows, stable_rows(marks))
    np.testing.assert_array_equal(bounds, np.concatenate([[0], np.cumsum(np.bincount(marks, minlength=K))]))


@pytest.mark.parametrize("beta", [[1.5], [0.4, 3.0]])
def test_transposed_features_equal_the_row_features_exactly(sample, beta):
    _, (X, tails, duration), (XT, tails_t, duration_t) = both_layouts(*sample, beta)
    np.testing.assert_array_equal(XT, X.T)  # the same arithmetic in the same order: bit for bit
    np.testing.assert_array_equal(tails_t, tails)
    assert duration_t == duration


@pytest.mark.parametrize("l1, l2, final", [(0.0, 0.0, True), (0.0, 0.0, False), (0.01, 0.0, True), (0.0, 0.05, True)])
def test_columnar_newton_reaches_the_row_newton_optimum(sample, l1, l2, final):
    """Every type's solve on its column range (longer than one block of 256 events for the largest) against
    the row-layout solve of the same rows: same optimum, value and success."""
    flat, scale = sample
    K = 3
    bounds, (X, tails, duration), (XT, _, _) = both_layouts(flat, scale, [DECAY], K)
    assert np.diff(bounds).max() > _recursion.COLUMN_BLOCK
    mu0, adj0 = moment_start(np.bincount(flat["marks"], minlength=K).astype(float), duration, 1)
    for i in range(K):
        common = (tails, duration, float(mu0[i]), adj0[i, :, 0].copy(), 1e-12 * float(mu0.min()),
                  float(flat["times"].size), l1, l2, 500, 1e-10)
        stats = {"iterations": 0, "evaluations": 0, "bar": type("Bar", (), {"update": lambda self, n: None})()}
        by_rows = SumExpHawkes._solve_target(np.ascontiguousarray(X[bounds[i]:bounds[i + 1]]), *common, stats,
                                             final=final)
        by_columns = SumExpHawkes._solve_target(XT, *common, stats, final=final,
                                                columns=(int(bounds[i]), int(bounds[i + 1])))
        assert by_columns.success and by_rows.success
        assert by_columns.fun == pytest.approx(by_rows.fun, rel=1e-12)
        np.testing.assert_allclose(by_columns.x, by_rows.x, rtol=1e-7 if not final else 1e-9, atol=1e-12)


def test_columnar_pass_equals_the_row_pass(sample):
    """One pass of the columnar kernel: value, gradient and the Hessian's upper triangle against the row kernels
    (a zero weight, skipped by the columnar pass, included)."""
    flat, scale = sample
    K = 3
    bounds, (X, tails, duration), (XT, _, _) = both_layouts(flat, scale, [DECAY], K)
    lo, hi = int(bounds[1]), int(bounds[2])
    theta = np.array([0.4, 0.3, 0.0, 0.2])
    c = np.concatenate([[duration], tails])
    inv_n = 1.0 / flat["times"].size
    g_rows, lam = np.empty(4), np.empty(hi - lo)
    f_rows = _recursion._target_value_grad(np.ascontiguousarray(X[lo:hi]), 1, c, theta, 1, inv_n, 0.01, 0.02,
                                           g_rows, lam, True)
    g_cols, hess = np.empty(4), np.full((4, 4), np.nan)
    Z = np.empty((5, _recursion.COLUMN_BLOCK))
    f_cols = _recursion._columns_value_grad_hessian(XT, lo, hi, 1, c, theta, 1, inv_n, 0.01, 0.02, g_cols, True,
                                                    True, hess, Z)
    assert f_cols == pytest.approx(f_rows, rel=1e-13)
    np.testing.assert_allclose(g_cols, g_rows, rtol=1e-12, atol=1e-15)
    Zr = np.hstack([np.ones((hi - lo, 1)), X[lo:hi]]) / lam[:, None]
    upper = np.triu_indices(4)
    np.testing.assert_allclose(hess[upper], (Zr.T @ Zr)[upper], rtol=1e-12)
    # a non-positive intensity is infinite, as in the row kernels
    assert _recursion._columns_value_grad_hessian(XT, lo, hi, 1, c, np.array([-1.0, 0.0, 0.0, 0.0]), 1, inv_n, 0.0,
                                                  0.0, g_cols, True, True, hess, Z) == np.inf
