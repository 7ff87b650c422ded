"""ETAS's time part (issue 16: "ETAS beats exponential Hawkes in time" on earthquakes_japan).

The maximum-likelihood fit shares ``mu, K, c, p`` between the time and the space part. When the windows' overall
rates vary (earthquakes_japan: events per 30-day window have sd 39 against a Poisson sd of 9), the time part is best
served by a long-memory self-excitation that carries each window's level, which the space part refuses (it wants
the triggering that is local in space). ``estimator="two-stage"`` fits the temporal law on the time part (the
seismologist's temporal ETAS) and ``D`` on the space part given it. These tests check the time part's own gradient
that the two-stage fit follows, that each stage is at its optimum, and the trade on a small replica of the
situation: windows whose background rates differ."""

import warnings

import numpy as np
import pytest

from tpp.events import EventBatch
from tpp.spatial.etas import ETAS

BOX = ((0.0, 10.0), (0.0, 10.0))


def varying_windows(n: int, seed: int, duration: float = 20.0) -> EventBatch:
    """Magnitude-free ETAS windows whose background rate is drawn per window (Gamma with shape 1.5, mean 2): the
    over-dispersion of earthquakes_japan's window counts, with a known local triggering (K 0.4, p 1.3)."""
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(n):
        mu = 2.0 * rng.gamma(1.5, 1.0 / 1.5)
        model = ETAS.from_params(mu=mu, K=0.4, c=0.01, p=1.3, D=0.02, region=BOX, magnitude=None)
        parts.append(model.sample(1, duration, generator=int(rng.integers(1 << 30))).to_flat())
    times = np.concatenate([f["times"] for f in parts])
    offsets = np.concatenate([[0], np.cumsum([f["times"].size for f in parts])])
    return EventBatch.from_flat(times, offsets, np.zeros(n), np.full(n, duration), np.zeros(times.size, np.int64), 1,
                                features=np.concatenate([f["features"] for f in parts]), feature_names=("x", "y"))


def fit(batch: EventBatch, estimator: str, em_iterations: int) -> ETAS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # boundary and stationarity notes: not under test here
        return ETAS(magnitude=None, region=BOX, estimator=estimator).fit(batch, em_iterations=em_iterations)


@pytest.fixture(scope="module")
def train() -> EventBatch:
    return varying_windows(24, 0)


def test_time_part_gradient_matches_finite_differences():
    # magnitudes, a region with edge effects (masses below 1) and a non-uniform background: every term enters
    model = ETAS.from_params(mu=0.8, K=0.35, c=0.05, p=1.4, D=0.15, alpha=0.7, gamma=0.5, beta=2.0, m0=1.0,
                             region=((0, 4), (-1, 2)))
    model.set_background([[1.0, 0.5], [3.8, 1.9], [2.0, -0.5]], [0.6, 0.4, 0.8], [1.0, 2.0, 0.5])
    data = model._catalogue(model.sample(2, 20.0, generator=2))
    u = model.background_density(np.stack([data["x"], data["y"]], 1))
    z = model._to_z(model.params.numpy())
    time_ll, space_ll, _, _, grad, grad_time = model._pass(data, model.params.numpy(), u, True, True)
    step = 1e-6
    for k in range(7):
        e = np.zeros(7)
        e[k] = step
        hi = model._pass(data, model._from_z(z + e), u)
        lo = model._pass(data, model._from_z(z - e), u)
        assert grad_time[k] == pytest.approx((hi[0].sum() - lo[0].sum()) / (2 * step), rel=1e-6, abs=1e-6), k
        assert grad[k] - grad_time[k] == pytest.approx((hi[1].sum() - lo[1].sum()) / (2 * step), rel=1e-6, abs=1e-6), k


def test_each_stage_of_the_two_stage_fit_is_at_its_optimum(train):
    # one EM step: both fits see the same background, so the comparisons are exact statements about optima
    joint, staged = fit(train, "likelihood", 1), fit(train, "two-stage", 1)
    assert staged.fit_result_["objective"] == "two-stage" and joint.fit_result_["objective"] == "likelihood"
    data, u = staged._train_data, staged._train_u
    parts = {name: model._pass(data, model.params.numpy(), u, True, True) for name, model in
             (("joint", joint), ("staged", staged))}
    # the two-stage fit has the higher time part, the likelihood fit the higher time + space
    assert parts["staged"][0].sum() > parts["joint"][0].sum()
    assert (parts["joint"][0].sum() + parts["joint"][1].sum()) > (parts["staged"][0].sum() + parts["staged"][1].sum())
    # stationarity: the time part in the interior temporal parameters, the space part in log D
    grad, grad_time = parts["staged"][4], parts["staged"][5]
    names = ["log mu", "log K", "alpha", "log c", "log(p - 1)", "log D", "gamma"]
    interior = [k for k in (0, 1, 3, 4) if names[k] not in staged.fit_result_["at_bound"]]
    assert interior, staged.fit_result_["at_bound"]
    n = train.num_events
    assert np.max(np.abs(grad_time[interior])) / n < 1e-4, grad_time
    assert abs(grad[5] - grad_time[5]) / n < 1e-4


def test_two_stage_wins_in_time_when_window_rates_vary(train):
    # held-out windows from the same law: the likelihood fit keeps the local triggering (best in space), the
    # temporal law fitted on time carries each window's level (best in time), as on earthquakes_japan
    test = varying_windows(24, 1)
    joint, staged = fit(train, "likelihood", 2), fit(train, "two-stage", 2)
    t_joint, s_joint = (float(v.sum()) / test.num_events for v in joint.log_likelihood_split(test))
    t_staged, s_staged = (float(v.sum()) / test.num_events for v in staged.log_likelihood_split(test))
    assert t_staged > t_joint + 0.01, (t_staged, t_joint)
    assert s_joint > s_staged, (s_joint, s_staged)
    assert abs(joint.params_["p"] - 1.3) < 0.15 and staged.params_["p"] < joint.params_["p"]


def test_estimator_is_checked_kept_and_its_standard_errors_refused(train):
    with pytest.raises(ValueError, match="estimator must be"):
        ETAS(magnitude=None, estimator="time")
    staged = fit(train, "two-stage", 1)
    again = ETAS.from_dict(staged.to_dict())
    assert again.estimator == "two-stage"
    with pytest.raises(ValueError, match="two-stage"):
        staged.standard_errors()
