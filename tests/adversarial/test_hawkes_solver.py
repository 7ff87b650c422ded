"""Small-data fixed costs of the Hawkes fits (issue 17, item 9): the per-target problem of ``ExpHawkes`` is solved
by a compiled projected Newton (``SumExpHawkes._solve_target``, shared with the distributed fit), and one type
with linear mark productivity by a compiled reparametrised fit; both reach the general path's optimum."""

import numpy as np
import pytest

from tpp.hawkes import ExpHawkes, MarkedHawkes, _recursion
from tpp.hawkes._common import flat_events
from tpp.hawkes.exp import SumExpHawkes, _standardise, moment_start

MU = np.array([0.3, 0.2, 0.4])
ADJ = np.array([[0.2, 0.1, 0.0], [0.0, 0.3, 0.1], [0.1, 0.0, 0.2]])
DECAY = 1.5


@pytest.fixture(scope="module")
def problem():
    """Target type 2's rows, tails and window of a 3-type sample, in the fit's standardised clock."""
    batch = ExpHawkes.from_params(MU, ADJ, DECAY).sample(6, 300.0, generator=1)
    flat, scale = _standardise(flat_events(batch))
    order = np.argsort(flat["marks"], kind="stable")
    rows = np.empty_like(order)
    rows[order] = np.arange(order.size)
    X, tails, duration = _recursion.event_features(flat["times"], flat["marks"], flat["seq_offsets"], flat["t_start"],
                                                   flat["t_end"], np.array([DECAY * scale]), 3, rows)
    counts = np.bincount(flat["marks"], minlength=3).astype(float)
    mu0, adj0 = moment_start(counts, duration, 1)
    bounds = np.concatenate([[0], np.cumsum(counts).astype(int)])
    return {"X": np.ascontiguousarray(X[bounds[2]:bounds[3]]), "tails": tails, "duration": duration,
            "mu0": float(mu0[2]), "w0": adj0[2, :, 0].copy(), "floor": 1e-12 * float(mu0.min()),
            "n": float(flat["times"].size)}


def solve(p, X=None, **kw):
    stats = {"iterations": 0, "evaluations": 0, "bar": type("Bar", (), {"update": lambda self, n: None})()}
    args = dict(l1=0.0, l2=0.0, max_iter=500, tol=1e-10, final=True) | kw
    return SumExpHawkes._solve_target(p["X"] if X is None else X, p["tails"], p["duration"], p["mu0"], p["w0"],
                                      p["floor"], p["n"], args["l1"], args["l2"], args["max_iter"], args["tol"], stats,
                                      final=args["final"])


def kkt_gradient(p, x, l1=0.0):
    """The objective's gradient at ``x`` (per event, plus the l1 term on the adjacency)."""
    Z = np.hstack([np.ones((p["X"].shape[0], 1)), p["X"]])
    g = (np.concatenate([[p["duration"]], p["tails"]]) - Z.T @ (1.0 / (Z @ x))) / p["n"]
    g[1:] += l1
    return g


def test_final_target_solve_lands_on_the_kkt_point(problem):
    res = solve(problem)
    assert res.success
    g = kkt_gradient(problem, res.x)
    free = res.x > np.array([problem["floor"], 0.0, 0.0, 0.0])
    # at the optimum to rounding: the free variables' gradient vanishes, the bound ones' points outwards
    assert np.all(np.abs(g[free]) < 1e-13)
    assert np.all(g[~free] >= -1e-13)


@pytest.mark.parametrize("w0", [[1e5, 1e3, 1.0], [0.0, 1e4, 1e2], [1.0, 1.0, 50.0], [5.7e5, 6.1e3, 0.0]])
def test_target_solve_from_a_far_warm_start_reaches_the_moment_start_optimum(problem, w0):
    """A learned decay warm-starts each inner solve from the last decay's adjacency, which can be far off (5.7e5
    on 24 order books). The full projected Newton step from there crosses a bound, and its clipped decrease
    ``g . (x - x(1))`` is negative: taken as "converged", the solve returned its start (nit 0, 274789 nats per
    event above the optimum) and the profile became a function of the path, not of the decay."""
    start = dict(problem, w0=np.array(w0), mu0=0.5 * problem["mu0"])
    ref, far = solve(problem), solve(start, final=False)
    assert far.success and far.nit > 0
    assert far.fun == pytest.approx(ref.fun, rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(far.x, ref.x, rtol=1e-4, atol=1e-8)


def test_rows_that_differ_by_rounding_give_the_same_optimum(problem):
    """What the distributed fit relies on: its rows come from carried states, equal up to rounding."""
    nudged = np.nextafter(problem["X"], np.inf)
    a, b = solve(problem), solve(problem, X=nudged)
    np.testing.assert_allclose(a.x, b.x, rtol=1e-10, atol=1e-14)


def test_penalised_target_solve_sets_weak_entries_to_exact_zero(problem):
    res = solve(problem, l1=0.05)
    assert res.success and np.any(res.x[1:] == 0.0)
    g = kkt_gradient(problem, res.x, l1=0.05)
    free = res.x[1:] > 0
    assert np.all(np.abs(g[1:][free]) < 1e-12) and np.all(g[1:][~free] >= -1e-12)


def test_fixed_decay_fit_takes_few_likelihood_passes():
    """The L-BFGS-B loop took 26 steps and 30 evaluations here (each with ~45 us of scipy overhead on small data);
    Newton's quadratic convergence needs a handful per target, to a tighter optimum."""
    batch = ExpHawkes.from_params(MU, ADJ, DECAY).sample(4, 400.0, generator=3)
    model = ExpHawkes(3, decay=DECAY).fit(batch)
    assert model.fit_result_["converged"]
    assert model.fit_result_["iterations"] <= 3 * 5
    assert model.fit_result_["evaluations"] <= 3 * 7
    assert model.fit_result_["log_likelihood"] >= -3744.2950466649368  # the L-BFGS-B fit's


KW = dict(threshold=1.0, reference=1.0, productivity="linear", mark_distribution="exponential")


@pytest.fixture(scope="module")
def marked_batch():
    truth = MarkedHawkes.from_params([0.4], np.array([[0.3]]), 1.5, [0.8], np.array([[2.0, 0.0]]), **KW)
    return truth.sample(1, 2500.0, generator=1)


def general_fit(batch, monkeypatch, **kw):
    with monkeypatch.context() as m:
        m.setattr(MarkedHawkes, "_fit_linear_one_type", lambda self, *a, **k: None)  # the L-BFGS-B path
        return MarkedHawkes(1, productivity="linear", threshold=1.0, reference=1.0, **kw).fit(batch)


@pytest.mark.parametrize("decay", [None, 1.5])
def test_one_type_linear_marked_fit_reaches_the_general_path_optimum(marked_batch, monkeypatch, decay):
    fast = MarkedHawkes(1, productivity="linear", threshold=1.0, reference=1.0, decay=decay).fit(marked_batch)
    slow = general_fit(marked_batch, monkeypatch, decay=decay)
    assert "decay_steps" in fast.fit_result_ and "decay_steps" not in slow.fit_result_  # each path ran
    ll_fast = float(fast.log_likelihood(marked_batch).sum().detach())
    ll_slow = float(slow.log_likelihood(marked_batch).sum().detach())
    assert ll_fast >= ll_slow - 1e-9 * abs(ll_slow)
    assert fast.fit_result_["log_likelihood"] == pytest.approx(ll_fast, rel=1e-10)
    for name in ("baseline_", "adjacency_", "alpha_"):
        np.testing.assert_allclose(getattr(fast, name), getattr(slow, name), rtol=2e-4)
    assert fast.decay_ == pytest.approx(slow.decay_, rel=2e-4)


def test_marks_below_the_reference_take_the_general_path(marked_batch):
    # reference above the threshold: g = 1 + alpha (x - x0) may turn negative, outside the reparametrisation
    model = MarkedHawkes(1, productivity="linear", threshold=1.0, reference=1.2).fit(marked_batch)
    assert "decay_steps" not in model.fit_result_ and model.fit_result_["converged"]
