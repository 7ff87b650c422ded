"""Time-varying Hawkes baselines (issue 17, item 2): exact compensator, likelihood against the definition,
gradients, recovery of a simulated periodic baseline, serialisation, CLI, and the constant default unchanged."""

import json
import warnings

import numpy as np
import pytest
import scipy.integrate
import torch
from typer.testing import CliRunner

from tpp import EventBatch, table
from tpp.compensator import gauss_legendre
from tpp.hawkes import ExpHawkes, SumExpHawkes
from tpp.hawkes.baselines import Piecewise, PeriodicSpline
from tpp.hawkes.exp import _flat, _SeasonalLogLik

PERIOD = 10.0
COEF = np.array([[0.2, 0.8, 1.5, 0.6, 0.1, 0.05], [0.5, 0.3, 0.1, 0.2, 0.9, 0.4]])
A2 = np.array([[0.3, 0.1], [0.2, 0.4]])
BASES = [
    dict(baseline_kind="periodic", period=PERIOD, n_basis=6),
    dict(baseline_kind="periodic", period=PERIOD, n_basis=6, degree=2, origin=1.3),
    dict(baseline_kind="piecewise", period=PERIOD, n_basis=6),
    dict(baseline_kind="piecewise", period=PERIOD, breakpoints=[0.5, 2.0, 3.0, 5.5, 7.0, 9.0], origin=-2.0),
    dict(baseline_kind="piecewise", breakpoints=[3.0, 6.0, 11.0, 14.0, 20.0]),  # absolute bins
]


def seasonal(options, adjacency=A2, decay=2.0):
    return ExpHawkes.from_params(COEF, adjacency, decay, **options)


@pytest.fixture(scope="module")
def small_batch():
    batch = seasonal(BASES[0]).sample(3, 25.0, generator=7)
    # A tie and a window starting before the first event exercise the edge cases.
    seqs = list(batch.sequences())
    t, m = seqs[0]
    t = np.sort(np.concatenate([t, [t[2]]]))
    m = np.concatenate([m, [1]])
    late = seqs[2][0] >= 3.0  # the third window starts late (a phase other than 0)
    return EventBatch.from_sequences([t, seqs[1][0], seqs[2][0][late]], [m, seqs[1][1], seqs[2][1][late]],
                                     t_start=[-1.0, 0.0, 3.0], t_end=[26.0, 25.0, 25.0], num_marks=2)


def direct_loglik(model, batch):
    """Independent O(N^2) evaluation of the definition, the baseline integral by adaptive quadrature."""
    adj, beta = model.adjacency_, model.decay_
    out = []
    for b, (times, marks) in enumerate(batch.sequences()):
        t0, t1 = float(batch.t_start[b]), float(batch.t_end[b])
        knots = np.arange(np.floor(t0 / 0.5) * 0.5, t1, 0.5)  # every knot and breakpoint above sits on this grid (+ origin)
        points = np.unique(np.concatenate([knots, knots + 0.3, knots + 0.2]))
        points = points[(points > t0) & (points < t1)]
        mu_integral = scipy.integrate.quad(lambda s: model.baseline_at(np.array([s])).sum(), t0, t1, points=points,
                                           limit=4 * points.size + 50, epsabs=1e-13, epsrel=1e-13)[0]
        total = -mu_integral
        mu = model.baseline_at(times)
        for n, (t, i) in enumerate(zip(times, marks)):
            lags = t - times[:n]
            lam = mu[n, i] + sum(adj[i, marks[k]] * beta * np.exp(-beta * lags[k]) for k in range(n) if lags[k] > 0)
            total += np.log(lam) - adj[:, i].sum() * (1 - np.exp(-beta * (t1 - t)))
        out.append(total)
    return np.array(out)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_spline_basis_integrals_equal_quadrature_and_sum_to_one(degree):
    basis = PeriodicSpline(24.0, 6, degree, origin=1.5)
    t = np.linspace(-50, 80, 777)
    np.testing.assert_allclose(basis.values(t).sum(1), 1.0, atol=1e-14)
    t0, t1 = np.array([-30.3, 2.0, 5.0]), np.array([47.1, 2.5, 100.0])
    knots = list(np.arange(-48, 120, 4) + 1.5)
    numeric = np.array([[scipy.integrate.quad(lambda y: basis.values(np.array([y]))[0, b], a, c, limit=500, points=knots)[0]
                         for b in range(6)] for a, c in zip(t0, t1)])
    np.testing.assert_allclose(basis.integral(t0, t1), numeric, atol=1e-11)


@pytest.mark.parametrize("basis", [Piecewise(24.0, 5), Piecewise(24.0, None, [3.0, 7.5, 20.0], origin=2.0),
                                   Piecewise(None, None, [3.0, 7.5, 20.0])])
def test_piecewise_basis_integrals_equal_the_time_spent_in_each_bin(basis):
    t0, t1 = np.array([-30.3, 2.0, 5.0]), np.array([47.1, 2.5, 100.0])
    for a, c, row in zip(t0, t1, basis.integral(t0, t1)):
        # exact reference: split [a, c] at every bin edge and read the bin at each piece's midpoint
        period = basis.period or 1e9
        edges = np.concatenate([(basis.edges + basis.origin)[None, :] + period * np.arange(-10, 11)[:, None]]).ravel()
        cuts = np.unique(np.concatenate([[a, c], edges[(edges > a) & (edges < c)]]))
        ref = (np.diff(cuts)[:, None] * basis.values((cuts[1:] + cuts[:-1]) / 2)).sum(0)
        np.testing.assert_allclose(row, ref, atol=1e-11)


@pytest.mark.parametrize("options", BASES, ids=["spline3", "spline2", "bins", "breakpoints", "absolute"])
def test_log_likelihood_equals_direct_evaluation(options, small_batch):
    model = seasonal(options)
    ours = model.log_likelihood(small_batch).detach().numpy()
    np.testing.assert_allclose(ours, direct_loglik(model, small_batch), rtol=1e-10)


@pytest.mark.parametrize("options", BASES[:2] + BASES[3:4], ids=["spline3", "spline2", "breakpoints"])
def test_compensator_equals_a_numeric_integral_of_the_intensity(options, small_batch):
    model = seasonal(options)
    basis = model._basis
    phases = np.arange(basis.n_basis) * PERIOD / basis.n_basis if basis.kind == "periodic" else basis.edges
    knots = (basis.origin + phases[None, :] + PERIOD * np.arange(-3, 5)[:, None]).ravel()
    for b in range(len(small_batch)):
        one = small_batch[b]
        t0, t1 = float(one.t_start[0]), float(one.t_end[0])
        cuts = np.unique(np.concatenate([[t0, t1], one.to_flat()["times"], knots[(knots > t0) & (knots < t1)]]))
        # the integrand is smooth between consecutive events and knots: Gauss-Legendre is exact to rounding there
        nodes, weights = gauss_legendre(torch.tensor(cuts[:-1]), torch.tensor(cuts[1:]), 16)
        lam = model.intensity(one, nodes.reshape(1, -1)).detach().sum(-1).reshape(nodes.shape)
        numeric = float((lam * weights).sum())
        assert abs(float(model.compensator(one).detach()) - numeric) < 1e-10 * numeric
        # and the cumulative intensity at the window end is the compensator
        cum = model.cumulative_intensity_at(one, one.t_end[:, None]).detach().sum()
        assert abs(float(cum) - numeric) < 1e-10 * numeric


def test_gradients_pass_gradcheck(small_batch):
    model = SumExpHawkes.from_params(COEF, np.stack([A2, A2 / 2], -1), [1.5, 4.0], **BASES[0])
    params = [model.baseline_coef.detach().clone().requires_grad_(), model.adjacency.detach().clone().requires_grad_(),
              model.decays.detach().clone().requires_grad_()]
    flat = _flat(small_batch)
    assert torch.autograd.gradcheck(
        lambda c, a, b: _SeasonalLogLik.apply(c, a, b, flat, model._basis, small_batch.device), params)


def test_equal_coefficients_are_the_constant_baseline(small_batch):
    mu = np.array([0.5, 0.3])
    constant = ExpHawkes.from_params(mu, A2, 2.0)
    for options in BASES[:4]:
        periodic = ExpHawkes.from_params(mu, A2, 2.0, **options)  # [K] rates: equal coefficients
        np.testing.assert_allclose(periodic.log_likelihood(small_batch).detach(), constant.log_likelihood(small_batch).detach(),
                                   rtol=1e-12)
        np.testing.assert_allclose(periodic.baseline_, mu, rtol=1e-12)


def test_mle_recovers_a_simulated_periodic_baseline():
    truth = ExpHawkes.from_params(COEF * 2, A2, 2.0, **BASES[0])
    data = truth.sample(10, 200.0, generator=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ExpHawkes(2, baseline="periodic", period=PERIOD, n_basis=6).fit(data)
    se = fit.standard_errors(data)
    assert np.all(np.abs(fit.adjacency_ - A2) < 3 * se["adjacency"][..., 0])
    assert abs(fit.decay_ - 2.0) < 3 * se["decays"][0]
    z = np.abs(fit.baseline_coef_ - COEF * 2) / se["baseline_coef"]
    assert np.nanmax(z) < 3.5  # 12 coefficients: allow one slightly past 3 sigma
    assert np.all(np.abs(fit.baseline_ - truth.baseline_) < 3 * se["baseline"])
    # and it beats the constant baseline on held-out data from the same process
    held_out = truth.sample(5, 200.0, generator=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        constant = ExpHawkes(2).fit(data)
    assert float(fit.score(held_out)) > float(constant.score(held_out))


def test_absolute_breakpoints_fit_and_baseline_is_the_window_mean():
    options = dict(baseline_kind="piecewise", breakpoints=[50.0, 100.0])
    truth = ExpHawkes.from_params([[0.5, 2.0, 1.0]], [[0.3]], 1.0, **options)
    data = truth.sample(4, 150.0, generator=5)
    fit = ExpHawkes(1, 1.0, baseline="piecewise", breakpoints=[50.0, 100.0]).fit(data)
    np.testing.assert_allclose(fit.baseline_, fit.baseline_coef_[0].mean(), rtol=1e-12)  # equal thirds of [0, 150]
    assert np.all(np.abs(fit.baseline_coef_[0] - [0.5, 2.0, 1.0]) < [0.25, 0.6, 0.4])


def test_simulated_immigrants_follow_the_baseline():
    model = ExpHawkes.from_params(COEF, np.zeros((2, 2)), 2.0, **BASES[2])  # a seasonal Poisson process
    data = model.sample(200, 20.0, generator=1)
    flat = data.to_flat()
    phase_bin = np.floor(np.mod(flat["times"], PERIOD) / (PERIOD / 6)).astype(int)
    counts = np.zeros((2, 6))
    np.add.at(counts, (flat["marks"], phase_bin), 1)
    expected = COEF * 200 * 2 * PERIOD / 6  # 200 sequences of two periods
    assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected) + 1)


def test_simulation_continues_a_history():
    model = seasonal(BASES[0])
    history = model.sample(3, 10.0, generator=2)
    more = model.sample(3, 30.0, history=history, generator=3)
    assert more.num_events > history.num_events
    np.testing.assert_array_equal(more.t_end.numpy(), 30.0)


def test_to_dict_round_trips_through_the_table(small_batch, tmp_path):
    for options in BASES:
        model = seasonal(options)
        loaded = table.from_dict(json.loads(json.dumps(model.to_dict())))
        assert loaded.baseline_kind == model.baseline_kind
        assert torch.equal(loaded.log_likelihood(small_batch), model.log_likelihood(small_batch))
        np.testing.assert_array_equal(loaded.baseline_, model.baseline_)
        again = table.load(table.save(model, tmp_path / "m.json"))
        assert torch.equal(again.log_likelihood(small_batch), model.log_likelihood(small_batch))
    sumexp = SumExpHawkes.from_params(COEF, np.stack([A2, A2 / 2], -1), [1.5, 4.0], **BASES[1])
    assert torch.equal(table.from_dict(sumexp.to_dict()).log_likelihood(small_batch), sumexp.log_likelihood(small_batch))


def test_the_default_constant_baseline_is_unchanged():
    model = ExpHawkes(2, 1.0)
    assert model.baseline_kind == "constant" and model._basis is None
    assert set(model.state_dict()) == {"log_baseline", "log_adjacency", "log_decays"}
    assert set(ExpHawkes.from_params([0.5, 0.3], A2, 2.0).to_dict()) == {"model", "baseline", "adjacency", "decay"}


@pytest.mark.parametrize("kwargs, match", [
    (dict(baseline="weekly"), "baseline must be one of"),
    (dict(baseline="periodic"), "needs period="),
    (dict(baseline="periodic", period=-1.0), "positive finite period"),
    (dict(baseline="periodic", period=24.0, n_basis=2), "n_basis must be an integer >= degree"),
    (dict(baseline="piecewise", breakpoints=[3.0, 2.0]), "strictly increasing"),
    (dict(baseline="piecewise", period=24.0, breakpoints=[3.0, 30.0]), "phases in"),
    (dict(baseline="piecewise"), "needs breakpoints="),
    (dict(period=24.0), "baseline='constant' takes no period"),
    (dict(baseline="piecewise", period=24.0, n_basis=4, degree=1), "takes no degree"),
    (dict(baseline="periodic", period=24.0, breakpoints=[1.0]), "not breakpoints"),
])
def test_bad_baseline_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ExpHawkes(1, 1.0, **kwargs)


def test_plot_baseline_draws_one_period():
    from tpp.plot import plot_baseline

    fig = plot_baseline(seasonal(BASES[0]))
    line = fig.axes[0].lines[0]
    assert line.get_xdata().max() < PERIOD and len(fig.axes[0].lines) == 4  # two curves and their means
    with pytest.raises(ValueError, match="no period"):
        plot_baseline(seasonal(BASES[4]))


def test_cli_fit_with_a_periodic_baseline(tmp_path):
    from tpp.cli import app

    path = tmp_path / "events.csv"
    data = seasonal(BASES[0]).sample(4, 60.0, generator=9)
    from tpp.io import write_events

    write_events(data, path)
    runner = CliRunner()
    out = tmp_path / "fit"
    result = runner.invoke(app, ["fit", "--model", "exp-hawkes", "--data", str(path), "--baseline", "periodic",
                                 "--period", str(PERIOD), "--n-basis", "6", "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    fitted = json.loads(result.stdout)
    assert fitted["baseline_model"]["kind"] == "periodic" and np.shape(fitted["baseline_coef"]) == (2, 6)
    assert (out / "baseline.png").exists()
    again = runner.invoke(app, ["eval", "--model-file", str(out / "model.json"), "--data", str(path), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["log_likelihood"] == fitted["log_likelihood"]
    refused = runner.invoke(app, ["fit", "--model", "poisson", "--data", str(path), "--baseline", "periodic",
                                  "--period", "10"])
    assert refused.exit_code == 2 and "constant baseline only" in refused.output
