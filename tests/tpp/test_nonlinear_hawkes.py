"""NonlinearHawkes (issue 17, item 1): signed exponential kernels under a softplus / relu / exp / identity link.

The likelihood equals a direct O(N^2) computation (intensities summed over all earlier events, the
compensator by scipy's adaptive quadrature cut at the zero crossings of a relu) to 1e-10; gradients pass
gradcheck; a K=2 model with an inhibitory entry is recovered within 3 standard errors; the identity link
with non-negative weights is ExpHawkes; the intensity is causal; the sampler passes the time-rescaling test.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import scipy.stats
import torch

from tpp import table
from tpp.events import EventBatch
from tpp.hawkes import ExpHawkes, NonlinearHawkes, SumExpHawkes
from tpp.hawkes.nonlinear import _Prepared, integrate_between_events

from ..conftest import tpp_in_process

INHIBITING = ([0.3, 0.0], [[0.4, -0.8], [0.5, 0.2]])  # type 1 inhibits type 0
PARAMS = {  # (baseline, adjacency) per link; exp's feedback is kept small so the process is not explosive
    "softplus": ([0.5, 0.2], [[0.5, -0.8], [0.6, 0.3]]),
    "relu": ([0.5, 0.2], [[0.5, -0.8], [0.6, 0.3]]),
    "exp": ([-0.5, -1.0], [[0.3, -0.6], [0.4, 0.2]]),
    "identity": ([0.5, 0.2], [[0.5, 0.1], [0.6, 0.3]]),
}
LINKS = {"softplus": lambda x: np.logaddexp(x, 0.0), "relu": lambda x: max(x, 0.0), "exp": np.exp,
         "identity": lambda x: x}


def model_for(link: str, two_decays: bool) -> NonlinearHawkes:
    mu, adjacency = PARAMS[link]
    adjacency = np.asarray(adjacency)
    if two_decays:
        return NonlinearHawkes.from_params(mu, np.stack([0.6 * adjacency, 0.4 * adjacency], -1), [0.7, 3.0], link=link)
    return NonlinearHawkes.from_params(mu, adjacency, 1.5, link=link)


def with_a_tie(batch: EventBatch) -> EventBatch:
    """The batch with its third event repeated at the same time (tied events do not excite each other)."""
    flat = batch.to_flat()
    times, marks, offsets = flat["times"], flat["marks"], flat["seq_offsets"].copy()
    times = np.insert(times, 3, times[2])
    marks = np.insert(marks, 3, 1 - marks[2])
    offsets[1:] += 1
    return EventBatch.from_flat(times, offsets, flat["t_start"], flat["t_end"], marks, batch.num_marks)


def direct_log_likelihood(model: NonlinearHawkes, batch: EventBatch) -> np.ndarray:
    """O(N^2): each pre-activation summed over all strictly earlier events; the compensator by
    scipy.integrate.quad on each inter-event interval, cut at the relu's zero crossings."""
    mu, beta = model.baseline_, model.decays_
    A = model.adjacency.detach().numpy()
    f = LINKS[model.link.value]
    flat = batch.to_flat()
    out = []
    for s in range(len(batch)):
        lo, hi = flat["seq_offsets"][s], flat["seq_offsets"][s + 1]
        T, M = flat["times"][lo:hi], flat["marks"][lo:hi]

        def x(t: float, k: int) -> float:
            return mu[k] + sum(A[k, M[i], u] * beta[u] * np.exp(-beta[u] * (t - T[i]))
                               for i in np.flatnonzero(T < t) for u in range(beta.size))

        ll = sum(np.log(f(x(T[n], M[n]))) for n in range(T.size))
        edges = np.concatenate([[flat["t_start"][s]], T, [flat["t_end"][s]]])
        for k in range(model.num_marks):
            for a, b in zip(edges[:-1], edges[1:]):
                if b <= a:
                    continue
                cuts = [a]
                if model.link.value == "relu":
                    grid = np.linspace(a, b, 201)
                    grid[0] = np.nextafter(a, b)  # just after the event at a, which counts
                    values = [x(t, k) for t in grid]
                    cuts += [scipy.optimize.brentq(lambda t: x(t, k), grid[i], grid[i + 1], xtol=1e-15, rtol=1e-15)
                             for i in range(200) if values[i] * values[i + 1] < 0]
                cuts.append(b)
                for left, right in zip(cuts[:-1], cuts[1:]):
                    ll -= scipy.integrate.quad(lambda t: f(x(t, k)), left, right, epsabs=1e-14, epsrel=1e-13,
                                               limit=200)[0]
        out.append(ll)
    return np.array(out)


@pytest.mark.parametrize("two_decays", [False, True], ids=["one-decay", "two-decays"])
@pytest.mark.parametrize("link", list(PARAMS))
def test_log_likelihood_equals_the_direct_quadratic_computation(link, two_decays):
    model = model_for(link, two_decays)
    batch = with_a_tie(model.sample(2, 12.0, generator=2))
    ll = model.log_likelihood(batch).detach().numpy()
    np.testing.assert_allclose(ll, direct_log_likelihood(model, batch), rtol=0, atol=1e-10)
    assert model.compensator_error_ <= 1e-10


@pytest.mark.parametrize("link, two_decays", [("softplus", False), ("softplus", True), ("relu", False),
                                              ("relu", True), ("exp", False), ("exp", True)])
def test_log_likelihood_gradients_pass_gradcheck(link, two_decays):
    model = model_for(link, two_decays)
    batch = model.sample(2, 10.0, generator=3)
    prep = _Prepared(batch)

    def loglik(mu, adjacency, log_beta):
        return model._loglik(prep, mu, adjacency, log_beta.exp())[0]

    args = tuple(p.detach().clone().requires_grad_(True) for p in (model.baseline, model.adjacency, model.log_decays))
    assert torch.autograd.gradcheck(loglik, args, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_inhibition_is_recovered_within_three_standard_errors():
    truth = NonlinearHawkes.from_params(*INHIBITING, 2.0)
    data = truth.sample(4, 500.0, generator=7)  # about 3500 events
    model = NonlinearHawkes(2).fit(data)  # decay learned too
    assert model.fit_result_["converged"]
    se = model.standard_errors(data)
    np.testing.assert_array_less(np.abs(model.baseline_ - truth.baseline_), 3 * se["baseline"])
    np.testing.assert_array_less(np.abs(model.adjacency_ - truth.adjacency_), 3 * se["adjacency"])
    assert abs(model.decay_ - 2.0) < 3 * se["decays"][0]
    assert model.adjacency_[0, 1] + 3 * se["adjacency"][0, 1] < 0  # the inhibition is significant
    # the fit is a maximum: the truth scores lower on the training data
    assert model.fit_result_["log_likelihood"] >= truth.score(data) * data.num_events


@pytest.mark.parametrize("link", ["relu", "exp"])
def test_other_links_are_recovered(link):
    mu, adjacency = ([0.6, 0.4], [[0.3, -0.5], [0.4, 0.2]]) if link == "relu" else ([-0.3, -0.8], [[0.2, -0.6], [0.3, -0.4]])
    truth = NonlinearHawkes.from_params(mu, adjacency, 2.0, link=link)
    data = truth.sample(4, 400.0, generator=11)
    model = NonlinearHawkes(2, link=link, decay=2.0).fit(data)
    se = model.standard_errors(data)
    np.testing.assert_array_less(np.abs(model.adjacency_ - truth.adjacency_), 3 * se["adjacency"])
    np.testing.assert_array_less(np.abs(model.baseline_ - truth.baseline_), 3 * se["baseline"])


def test_identity_link_with_non_negative_weights_is_exp_hawkes():
    mu, adjacency = [0.5, 0.2], [[0.5, 0.1], [0.6, 0.3]]
    linear = ExpHawkes.from_params(mu, adjacency, 1.5)
    batch = with_a_tie(linear.sample(3, 40.0, generator=0))
    ours = NonlinearHawkes.from_params(mu, adjacency, 1.5, link="identity")
    torch.testing.assert_close(ours.log_likelihood(batch), linear.log_likelihood(batch), rtol=0, atol=1e-10)
    torch.testing.assert_close(ours.intensity(batch, batch.time), linear.intensity(batch, batch.time), rtol=1e-13, atol=0)
    adj3 = np.stack([0.6 * np.asarray(adjacency), 0.4 * np.asarray(adjacency)], -1)
    sum_exp = SumExpHawkes.from_params(mu, adj3, [0.7, 3.0])
    ours3 = NonlinearHawkes.from_params(mu, adj3, [0.7, 3.0], link="identity")
    torch.testing.assert_close(ours3.log_likelihood(batch), sum_exp.log_likelihood(batch), rtol=0, atol=1e-10)


def test_moving_a_future_event_leaves_the_earlier_intensity_unchanged():
    model = model_for("softplus", True)
    batch = model.sample(1, 20.0, generator=5)
    flat = batch.to_flat()
    n = flat["times"].size // 2
    moved = flat["times"].copy()
    moved[n] = (moved[n] + moved[n + 1]) / 2  # later, still in order
    other = EventBatch.from_flat(moved, flat["seq_offsets"], flat["t_start"], flat["t_end"], flat["marks"], 2)
    before = torch.linspace(0.0, float(flat["times"][n]), 200, dtype=torch.float64)[None]  # up to the old time
    torch.testing.assert_close(model.intensity(other, before), model.intensity(batch, before), rtol=0, atol=0)
    cum, cum_other = model.cumulative_intensity(batch), model.cumulative_intensity(other)
    torch.testing.assert_close(cum_other[:, :n], cum[:, :n], rtol=0, atol=0)  # events before the moved one
    assert not torch.allclose(model.intensity(other, before + 1e-3 + float(moved[n] - flat["times"][n])),
                              model.intensity(batch, before + 1e-3 + float(moved[n] - flat["times"][n])))


def test_cumulative_intensity_and_compensator_agree_with_the_intensity():
    model = model_for("softplus", False)
    batch = model.sample(3, 15.0, generator=9)
    cum = model.cumulative_intensity(batch)
    # the default integrator of PointProcess (fixed Gauss-Legendre on each interval) on intensity()
    reference = super(NonlinearHawkes, model).cumulative_intensity(batch, num_points=256)
    torch.testing.assert_close(cum[batch.mask], reference[batch.mask], rtol=1e-9, atol=1e-9)
    comp = model.compensator(batch)
    ll = model.log_likelihood(batch)
    log_lam = model.intensity(batch, batch.time).gather(-1, batch.mark[..., None])[..., 0].log()
    torch.testing.assert_close(ll, (log_lam * batch.mask).sum(1) - comp, rtol=0, atol=1e-10)


def test_adaptive_rule_meets_its_tolerance_on_a_sharp_relu_kink():
    # x(s) = -1 + 50 e^{-s} - 49.5 e^{-3 s}: two decays of opposite sign, a kink a quadrature cannot see coming
    mu = torch.tensor([-1.0], dtype=torch.float64)
    c = torch.tensor([[[50.0, -49.5]]], dtype=torch.float64)
    beta = torch.tensor([1.0, 3.0], dtype=torch.float64)
    value, error, _ = integrate_between_events("relu", mu, c, beta, torch.tensor([10.0], dtype=torch.float64))
    def g(s):
        return -1 + 50 * np.exp(-s) - 49.5 * np.exp(-3 * s)

    left, right = scipy.optimize.brentq(g, 0.0, 0.5, xtol=1e-15), scipy.optimize.brentq(g, 1.0, 10.0, xtol=1e-15)
    exact = (-(right - left) + 50 * (np.exp(-left) - np.exp(-right)) - 49.5 / 3 * (np.exp(-3 * left) - np.exp(-3 * right)))
    assert abs(float(value) - exact) < 1e-10 and error < 1e-10


def test_sampler_passes_the_time_rescaling_test():
    model = NonlinearHawkes.from_params([0.5, 1.0], [[0.6, -1.5], [-0.8, 0.3]], 1.0)
    data = model.sample(4, 300.0, generator=13)
    cum = model.cumulative_intensity(data)  # [B, L, K]
    flat_marks = data.mark[data.mask].numpy()
    residuals = []
    for k in range(2):  # per type: the gaps of Lambda_k between its own events are Exp(1)
        for b in range(len(data)):
            own = data.mark[b][data.mask[b]] == k
            values = cum[b][data.mask[b]][own, k].detach().numpy()
            residuals.append(np.diff(np.concatenate([[0.0], values])))
    residuals = np.concatenate(residuals)
    assert residuals.size == flat_marks.size
    assert scipy.stats.kstest(residuals, "expon").pvalue > 0.01
    # the same seed gives the same sample; a history is continued, not replaced
    again = model.sample(4, 300.0, generator=13)
    torch.testing.assert_close(again.time, data.time)
    longer = model.sample(4, 350.0, history=data, generator=1)
    assert longer.num_events >= data.num_events and bool((longer.t_end == 350.0).all())


def test_round_trips_through_the_table_and_the_cli(tmp_path):
    model = NonlinearHawkes.from_params(*INHIBITING, 2.0, link="relu")
    data = NonlinearHawkes.from_params(*INHIBITING, 2.0).sample(2, 100.0, generator=1)
    loaded = table.from_dict(json.loads(json.dumps(model.to_dict())))
    assert type(loaded) is NonlinearHawkes and loaded.link.value == "relu"
    assert loaded.score(data) == model.score(data)
    two = NonlinearHawkes.from_params(INHIBITING[0], np.stack([np.asarray(INHIBITING[1])] * 2, -1), [0.5, 3.0])
    assert table.from_dict(two.to_dict()).score(data) == two.score(data)
    path = tmp_path / "events.csv"
    flat = data.to_flat()
    seq = np.repeat(np.arange(len(data)), np.diff(flat["seq_offsets"]))
    path.write_text("seq,time,mark\n" + "".join(f"{s},{float(t)!r},{m}\n" for s, t, m in zip(seq, flat["times"], flat["marks"])))
    res = tpp_in_process("fit", "--model", "nonlinear-hawkes", "--data", str(path), "--t-end", "100", "--link", "relu",
                         "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["model"] == "nonlinear-hawkes" and out["link"] == "relu" and np.isfinite(out["log_likelihood"])
    assert np.asarray(out["adjacency"]).shape == (2, 2)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="link must be one of 'softplus', 'relu', 'exp', 'identity'"):
        NonlinearHawkes(2, link="tanh")
    with pytest.raises(ValueError, match="decay .one. or decays .several., not both"):
        NonlinearHawkes(2, decay=1.0, decays=[1.0, 2.0])
    with pytest.raises(ValueError, match="decays must be positive"):
        NonlinearHawkes(2, decays=[1.0, -2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = NonlinearHawkes(1, link="exp", decay=1.0)
    with pytest.raises(ValueError, match="without events"):
        model.fit(EventBatch.from_flat(np.zeros(0), np.array([0, 0]), np.zeros(1), np.ones(1), np.zeros(0, np.int64), 1))


def test_identity_link_fit_is_the_exp_hawkes_fit():
    data = ExpHawkes.from_params([0.5, 0.2], [[0.5, 0.1], [0.6, 0.0]], 1.5).sample(4, 300.0, generator=3)
    linear = ExpHawkes(2, decay=1.5).fit(data)
    ours = NonlinearHawkes(2, link="identity", decay=1.5).fit(data)
    assert ours.fit_result_["log_likelihood"] == pytest.approx(linear.fit_result_["log_likelihood"], abs=1e-6)
    np.testing.assert_allclose(ours.adjacency_, linear.adjacency_, atol=1e-4)
    assert float(ours.adjacency_.min()) >= 0.0  # the linear intensity stays positive


def test_exp_link_closed_form_is_accurate_for_small_and_large_exponents_and_intervals():
    from tpp.hawkes.nonlinear import _ExpIntegral

    for c in (-50.0, -1.5, -1e-9, 0.0, 1e-12, 0.99, 1.01, 20.0, 60.0):
        for L in (1e-9, 1e-4, 0.3, 1.01, 40.0):
            value = float(_ExpIntegral.apply(torch.tensor([[c]], dtype=torch.float64), torch.tensor([[L]], dtype=torch.float64)))
            exact = scipy.integrate.quad(lambda r: np.exp(c * np.exp(-r)), 0, L, epsabs=0, epsrel=1e-13, limit=500)[0]
            # relative to the interval too: where the exponent is very negative the integral is ~0 next to e^mu L / beta
            assert abs(value - exact) <= 1e-14 * max(exact, L), (c, L, value, exact)
    args = (torch.tensor([[1e-10, -0.2, 5.0]], dtype=torch.float64, requires_grad=True),
            torch.tensor([[0.8]], dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(_ExpIntegral.apply, args, eps=1e-7, atol=1e-7, rtol=1e-6)
