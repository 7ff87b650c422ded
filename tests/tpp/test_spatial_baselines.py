"""The spatio-temporal baselines (tpp.spatial.gmm) and the Pinwheel generator (tpp.spatial.data).

Exact likelihoods against direct O(N^2) sums, densities that integrate to one, causality, samples that
follow the model's own closed-form laws, gradients, ties, and a short fit on real data.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch

from tests.conftest import needs_data
from tpp.events import EventBatch, EventDataError
from tpp.spatial import data as spatial_data
from tpp.spatial.gmm import HawkesGMM, KDESpatial, PoissonGMM, SelfCorrecting, SelfCorrectingGMM

PARAMS = {"mu": 0.4, "a": 0.5, "beta": 2.0, "pi0": 0.2, "tau": 0.7}


def located(times, xy, t_end=10.0):
    """One batch from lists of times and [L, 2] locations."""
    return EventBatch.from_sequences(times, t_end=t_end, features=[np.asarray(v, float) for v in xy],
                                     feature_names=["x", "y"])


@pytest.fixture(scope="module")
def small() -> EventBatch:
    """Three short sequences; the second holds a tie (times 2.0, 2.0) and the third no event."""
    rng = np.random.default_rng(3)
    times = [np.sort(rng.uniform(0, 10, 7)), np.array([0.5, 2.0, 2.0, 3.5, 7.25]), np.array([])]
    xy = [rng.normal(size=(7, 2)) * 2 + 1, rng.normal(size=(5, 2)), np.zeros((0, 2))]
    return located(times, xy)


def with_params(model: HawkesGMM, train: EventBatch) -> HawkesGMM:
    """The model started on ``train`` (scaler) and set to PARAMS with distinct per-coordinate scales."""
    model.initialise(train)
    p = PARAMS
    with torch.no_grad():
        tm = model.time_model
        if model.temporal == "hawkes":
            tm.log_baseline.fill_(math.log(p["mu"]))
            tm.log_adjacency.fill_(math.log(p["a"]))
            tm.log_decays.fill_(math.log(p["beta"]))
        model.base_mean.copy_(torch.tensor([0.3, -0.2]))
        model.log_base_scale.copy_(torch.tensor([0.1, -0.3]).double())
        model.log_kernel_scale.copy_(torch.tensor([-1.0, -0.6]).double())
        model.log_tau.fill_(math.log(p["tau"]))
        model.base_logit.fill_(math.log(p["pi0"] / (1 - p["pi0"])))
    return model


def gmm_law(model: HawkesGMM):
    """The mixture's parameters in data units: (pi0, base mean, base sd, kernel sd, tau)."""
    sc = model.scaler
    with torch.no_grad():
        return (float(torch.sigmoid(model.base_logit)), sc.unstandardise(model.base_mean).numpy(),
                (model.log_base_scale.exp() * sc.scale).numpy(), (model.log_kernel_scale.exp() * sc.scale).numpy(),
                float(model.log_tau.exp()))


def direct_log_likelihood(model: HawkesGMM, batch: EventBatch) -> tuple[np.ndarray, np.ndarray]:
    """(time, space) per sequence by the O(N^2) definitions, history strictly before each event."""
    pi0, m0, s0, s, tau = gmm_law(model)
    mu, a, beta = PARAMS["mu"], PARAMS["a"], PARAMS["beta"]
    out_t, out_s = [], []
    for seq in range(len(batch)):
        n = int(batch.lengths[seq])
        t = batch.time[seq, :n].numpy()
        x = batch.features[seq, :n].numpy()
        T0, T1 = float(batch.t_start[seq]), float(batch.t_end[seq])
        ll_t = -mu * (T1 - T0) - a * np.sum(1 - np.exp(-beta * (T1 - t)))
        ll_s = 0.0
        for i in range(n):
            before = t < t[i]
            ll_t += math.log(mu + a * beta * np.sum(np.exp(-beta * (t[i] - t[before]))))
            base = np.prod(scipy.stats.norm.pdf(x[i], m0, s0))
            if before.any():
                w = np.exp(-(t[i] - t[before]) / tau)
                w /= w.sum()
                comp = np.prod(scipy.stats.norm.pdf(x[i][None], x[before], s[None]), axis=1)
                ll_s += math.log(pi0 * base + (1 - pi0) * np.sum(w * comp))
            else:
                ll_s += math.log(base)
        out_t.append(ll_t)
        out_s.append(ll_s)
    return np.array(out_t), np.array(out_s)


def test_hawkes_gmm_likelihood_equals_the_direct_quadratic_sum(small):
    model = with_params(HawkesGMM(feature_dim=2, hidden_size=8), small)
    with torch.no_grad():
        time, space = model.log_likelihood_split(small)
        total = model.log_likelihood(small)
    want_t, want_s = direct_log_likelihood(model, small)
    np.testing.assert_allclose(time.numpy(), want_t, rtol=0, atol=1e-10)
    np.testing.assert_allclose(space.numpy(), want_s, rtol=0, atol=1e-10)
    np.testing.assert_allclose(total.numpy(), want_t + want_s, rtol=0, atol=1e-10)


def test_self_correcting_likelihood_equals_its_definition_with_quadrature(small):
    model = SelfCorrecting()
    with torch.no_grad():
        model.log_rate.fill_(-0.3)
        model.log_mu.fill_(math.log(0.4))
        model.log_beta.fill_(math.log(0.7))
        got = model.log_likelihood(small._replace(features=None, feature_names=())).numpy()
    for seq in range(len(small)):
        n = int(small.lengths[seq])
        t = small.time[seq, :n].numpy()

        def lam(u: float) -> float:
            return math.exp(-0.3 + 0.4 * u - 0.7 * np.sum(t < u))

        edges = np.concatenate([[0.0], t, [10.0]])
        integral = sum(scipy.integrate.quad(lam, lo, hi, epsabs=1e-13, epsrel=1e-13)[0]
                       for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo)
        assert got[seq] == pytest.approx(sum(math.log(lam(u)) for u in t) - integral, abs=1e-9)


def test_spatial_densities_integrate_to_one_over_a_large_box(small):
    gmm = with_params(HawkesGMM(2), small)
    kde = KDESpatial(2)
    kde.initialise(small)
    # composite Gauss-Legendre: 80 panels of 6 nodes per axis on [-20, 20] (the box holds every component to
    # many standard deviations; panels of 0.5 resolve the narrowest kernels)
    x, wx = np.polynomial.legendre.leggauss(6)
    edges = np.linspace(-20.0, 20.0, 81)
    mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1] - edges[0]) / 2
    nodes, weights = (mid[:, None] + half * x).ravel(), np.tile(half * wx, mid.size)
    grid = np.stack(np.meshgrid(nodes, nodes, indexing="ij"), -1).reshape(-1, 2)
    w = np.outer(weights, weights).reshape(-1)
    t = torch.tensor([6.0, 2.0, 4.0])  # the second sequence right at its tie: history strictly before
    for model in (gmm, kde):
        with torch.no_grad():
            density = model.spatial_density(small, t, torch.from_numpy(grid)).numpy()
        np.testing.assert_allclose(density @ w, 1.0, atol=1e-3)


@pytest.mark.parametrize("make", [HawkesGMM, PoissonGMM, SelfCorrectingGMM, lambda D: KDESpatial(D, temporal="hawkes")])
def test_moving_a_future_event_changes_nothing_before_it(small, make):
    model = make(2)
    model.initialise(small)
    seq = small[:1]
    cut = 5.0
    flat = seq.to_flat()
    later = flat["times"] > cut
    moved_t, moved_x = flat["times"].copy(), flat["features"].copy()
    moved_t[later] = np.minimum(moved_t[later] + 1.3, 9.9)
    moved_x[later] += 4.0
    other = located([np.sort(moved_t)], [moved_x[np.argsort(moved_t, kind="stable")]])
    queries = torch.tensor([[0.3, 2.2, 4.9, 5.0]], dtype=torch.float64)
    points = torch.tensor([[0.0, 0.0], [1.0, -2.0], [3.0, 3.0]], dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(model.intensity(seq, queries), model.intensity(other, queries))
        for t in queries[0]:
            density = model.spatial_density(seq, t[None], points)
            assert torch.equal(density, model.spatial_density(other, t[None], points))
            assert torch.equal(model.expected_location(seq, t[None]), model.expected_location(other, t[None]))


def test_samples_of_a_fitted_hawkes_gmm_follow_its_closed_form_laws():
    from tpp.metrics import rescaled_residuals

    train = spatial_data.pinwheel(40, seed=5)
    model = HawkesGMM(2).fit(train, None, epochs=2, batch_size=20, lr=0.05, seed=0, progress=False)
    sample = model.sample(150, 30.0, generator=11)
    assert sample.feature_names == ("x", "y") and sample.num_events > 1000
    residuals = rescaled_residuals(model, sample)  # the closed-form compensator between events: Exp(1)
    assert scipy.stats.kstest(residuals, "expon").pvalue > 1e-3
    # Each coordinate's conditional CDF at the sampled location (the mixture's marginal) is Uniform(0, 1).
    pi0, m0, s0, s, tau = gmm_law(model)
    for d in range(2):
        u = []
        for b in range(len(sample)):
            n = int(sample.lengths[b])
            t, x = sample.time[b, :n].numpy(), sample.features[b, :n, d].numpy()
            before = t[None, :] < t[:, None]  # [i, j]: event j strictly before event i
            w = np.where(before, np.exp(-(t[:, None] - t[None, :]) / tau), 0.0)
            has = before.any(1)
            w[has] /= w[has].sum(1, keepdims=True)
            kernel = (w * scipy.stats.norm.cdf(x[:, None], x[None, :], s[d])).sum(1)
            base = scipy.stats.norm.cdf(x, m0[d], s0[d])
            u.append(np.where(has, pi0 * base + (1 - pi0) * kernel, base))
        assert scipy.stats.kstest(np.concatenate(u), "uniform").pvalue > 1e-3


def test_the_log_likelihood_has_the_gradient_of_finite_differences(small):
    model = with_params(HawkesGMM(2), small)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    values = tuple(p.detach().clone().requires_grad_(True) for n, p in model.named_parameters() if p.requires_grad)

    def total(*params):
        return torch.func.functional_call(model, dict(zip(names, params)), (small,)).sum()

    assert torch.autograd.gradcheck(total, values, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_a_tied_copy_adds_the_density_and_intensity_given_the_strictly_earlier_events(small):
    model = with_params(HawkesGMM(2), small)
    seq = small[:1]
    flat = seq.to_flat()
    t_last, x_last = flat["times"][-1], flat["features"][-1]
    end = located([flat["times"]], [flat["features"]], t_end=t_last)
    tied = located([np.append(flat["times"], t_last)], [np.vstack([flat["features"], x_last])], t_end=t_last)
    with torch.no_grad():
        gain_t = model.log_likelihood_split(tied)[0] - model.log_likelihood_split(end)[0]
        gain_s = model.log_likelihood_split(tied)[1] - model.log_likelihood_split(end)[1]
        lam = model.intensity(end, torch.tensor([[t_last]]))[0, 0, 0]
        f = model.spatial_density(end, torch.tensor([t_last]), torch.from_numpy(x_last[None]))[0, 0]
    assert float(gain_t) == pytest.approx(math.log(float(lam)), abs=1e-10)
    assert float(gain_s) == pytest.approx(math.log(float(f)), abs=1e-10)
    with pytest.raises(EventDataError, match="share the time"):
        HawkesGMM(2, ties="error").log_likelihood(tied)
    with pytest.raises(ValueError, match="ties must be"):
        HawkesGMM(2, ties="jitter")


def test_densities_are_in_the_data_units_whatever_the_scale(small):
    """Rescaling the locations by c shifts each event's log density by exactly -D log c."""
    c = 1000.0
    flat = small.to_flat()
    big = EventBatch.from_flat(**{**flat, "features": flat["features"] * c})
    for make in (HawkesGMM, KDESpatial):
        a, b = make(2), make(2)
        a.initialise(small)
        b.initialise(big)
        with torch.no_grad():
            gap = (b.log_likelihood_split(big)[1] - a.log_likelihood_split(small)[1]).numpy()
        np.testing.assert_allclose(gap, -2 * math.log(c) * small.lengths.numpy(), atol=1e-8)


def test_pinwheel_has_the_papers_shape_and_statistics():
    p = spatial_data.PINWHEEL
    batch = spatial_data.pinwheel(300, seed=1, clusters_as_marks=True)
    assert batch.feature_names == ("x", "y") and batch.num_marks == 10 and len(batch) == 300
    assert torch.all(batch.t_start == 0) and torch.all(batch.t_end == p["t_end"])
    # stationary rate 10 * 0.05 / (1 - 0.6) per unit time, a little less from the empty start
    assert 34.0 < float(batch.lengths.double().mean()) < 39.5
    flat = batch.to_flat()
    radius = np.linalg.norm(flat["features"], axis=1)
    assert 1.8 < radius.mean() < 2.4
    # an arm turns away from its cluster's base angle by 0.25 e^f (f near 1): clusters sit in their own sector
    angle = np.arctan2(-flat["features"][:, 1], flat["features"][:, 0])  # the reference's rotation is clockwise
    offset = np.mod(angle - 2 * np.pi * flat["marks"] / 10, 2 * np.pi)
    assert abs(np.median(offset) - 0.25 * math.e) < 0.1
    # excitation runs from cluster k to k + 1 only: most consecutive pairs step forward by one
    same = np.diff(np.repeat(np.arange(300), np.diff(flat["seq_offsets"]))) == 0
    step = np.mod(np.diff(flat["marks"]), 10)[same]
    assert np.mean(step == 1) > 0.3  # 0.1 if the clusters were independent
    plain = spatial_data.pinwheel(3, seed=1)
    assert plain.num_marks == 1 and torch.equal(plain.time, spatial_data.pinwheel(3, seed=1).time)
    train, val, test = spatial_data.pinwheel_splits(seed=2, sizes=(4, 2, 2))
    assert (len(train), len(val), len(test)) == (4, 2, 2)


def test_pinwheel_arm_density_is_the_generators_change_of_variables():
    """Each arm's density integrates to 1 (quadrature) and, at drawn locations, equals ``p_f(f) / |det J|`` at
    the normal draw ``f`` that made them (the root search finds that preimage)."""
    p = spatial_data.PINWHEEL
    grid = np.linspace(-6.0, 6.0, 161)
    points = np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2)
    for k in (0, 7):
        density = np.exp(spatial_data.pinwheel_arm_log_density(points, k, grid=512))
        assert abs(density.sum() * (grid[1] - grid[0]) ** 2 - 1.0) < 2e-3
    clusters = np.arange(200) % 10
    x = spatial_data.pinwheel_locations(clusters, np.random.default_rng(3))
    f = np.random.default_rng(3).standard_normal((200, 2)) * [p["radial_std"], p["tangential_std"]] + [1.0, 0.0]
    jacobian = 4 * np.abs(1 + p["rate"] * np.exp(f[:, 0]) * f[:, 1])
    log_pf = (-0.5 * ((f[:, 0] - 1) / p["radial_std"]) ** 2 - 0.5 * (f[:, 1] / p["tangential_std"]) ** 2
              - np.log(2 * np.pi * p["radial_std"] * p["tangential_std"]))
    got = np.array([spatial_data.pinwheel_arm_log_density(x[i:i + 1], int(c))[0] for i, c in enumerate(clusters)])
    np.testing.assert_allclose(got, log_pf - np.log(jacobian), atol=1e-9)  # the draws' preimages are unique


def test_pinwheel_log_likelihood_is_the_hawkes_law_with_the_clusters_summed_out():
    """A direct computation on two short sequences: the 10-variate intensities by their sums over the history,
    the compensator in closed form, the current event's cluster summed out of the space part."""
    p = spatial_data.PINWHEEL
    batch = spatial_data.pinwheel(2, seed=8, clusters_as_marks=True, t_end=6.0)
    time_ll, space_ll = spatial_data.pinwheel_log_likelihood(batch)
    for b in range(2):
        n = int(batch.lengths[b])
        t, c = batch.time[b, :n].double().numpy(), batch.mark[b, :n].numpy()
        x = batch.features[b, :n].double().numpy()
        expect_time = expect_space = 0.0
        for i in range(n):
            rates = np.full(10, p["baseline"])
            for j in range(i):
                rates[(c[j] + 1) % 10] += p["excitation"] * p["decay"] * math.exp(-p["decay"] * (t[i] - t[j]))
            arms = np.array([math.exp(spatial_data.pinwheel_arm_log_density(x[i:i + 1], k)[0]) for k in range(10)])
            expect_time += math.log(rates.sum())
            expect_space += math.log((rates * arms).sum() / rates.sum())
        expect_time -= 10 * p["baseline"] * 6.0 + p["excitation"] * np.sum(1 - np.exp(-p["decay"] * (6.0 - t)))
        assert abs(float(time_ll[b]) - expect_time) < 1e-9 and abs(float(space_ll[b]) - expect_space) < 1e-9
    with pytest.raises(ValueError, match="clusters as marks"):
        spatial_data.pinwheel_log_likelihood(spatial_data.pinwheel(2, seed=8))


def test_the_kde_bandwidth_by_leave_one_out_is_near_scotts_rule_on_gaussian_locations():
    """Scott's rule is near-optimal for Gaussian data: the leave-one-out choice stays near a multiple of 1, and
    narrows for clustered locations."""
    rng = np.random.default_rng(0)
    gauss = located([np.sort(rng.uniform(0, 10, 400))], [rng.normal(size=(400, 2)) * [1.0, 3.0]])
    assert float(KDESpatial(2).initialise(gauss).bandwidth_factor) in (0.7, 1.0, 1.4)
    centres = rng.normal(size=(8, 2)) * 5
    tight = centres[rng.integers(0, 8, 400)] + rng.normal(size=(400, 2)) * 0.05
    assert float(KDESpatial(2).initialise(located([np.sort(rng.uniform(0, 10, 400))], [tight])).bandwidth_factor) < 0.5
    assert float(KDESpatial(2, bandwidth="scott").initialise(gauss).bandwidth_factor) == 1.0


def test_tpp_fit_reports_time_and_space_nats_per_event_of_a_spatial_model(tmp_path):
    import json

    from typer.testing import CliRunner

    from tpp.cli import app
    from tpp.io import write_events

    path = write_events(spatial_data.pinwheel(12, seed=4), tmp_path / "pinwheel.npz")
    result = CliRunner().invoke(app, ["fit", "--model", "hawkes-gmm", "--data", str(path), "--epochs", "1",
                                      "--batch-size", "4", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["model"] == "hawkes-gmm" and out["test_location_error"] > 0
    assert out["test_time_log_likelihood_per_event"] + out["test_space_log_likelihood_per_event"] == pytest.approx(
        out["test_log_likelihood_per_event"], abs=1e-12)
    assert 0 < out["test_location_error_events"] <= 256  # every test event's forecast, at most 256
    # the short name of the time-varying CNF: fitted and reported under its table name
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["fit", "--model", "tv-cnf", "--data", str(path), "--epochs", "1", "--batch-size", "4",
                                      "--hidden-size", "4", "--json", "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"] == "time-varying-cnf"
    assert {"model.pt", "events_map.png", "density_map.png"} <= {p.name for p in run.iterdir()}


@needs_data
def test_a_short_fit_on_japanese_earthquakes_improves_the_validation_likelihood():
    from tpp import datasets
    from tpp.spatial import spatial_metrics

    train = datasets.load("earthquakes_japan", "train")[:24]
    val = datasets.load("earthquakes_japan", "val")[:6]
    makers = (lambda: HawkesGMM(feature_dim=2, hidden_size=8),
              lambda: KDESpatial(feature_dim=2, hidden_size=8, temporal="hawkes", bandwidth="validation"))
    for make in makers:
        start = make().initialise(train)
        fitted = make().fit(train, val, epochs=3, batch_size=8, lr=0.05, seed=0, progress=False)
        assert fitted.score(val) > start.score(val) + 0.01
        metrics = spatial_metrics(fitted, val)
        assert math.isfinite(metrics["space_log_likelihood_per_event"]) and metrics["location_error"] > 0


def test_spatial_metrics_scores_each_prefix_as_its_own_query(small):
    """The location error is the mean distance to each event's expected location given the events before it (one
    query per event, however the queries are batched), and ``max_prefixes`` scores a seeded subset of them."""
    from tpp.spatial import spatial_metrics

    model = with_params(HawkesGMM(feature_dim=2, hidden_size=4), small).eval()
    x = model.locations(small)
    direct = []
    with torch.no_grad():
        for b in range(len(small)):
            for n in range(int(small.mask[b].sum())):
                mean = model.expected_location(small[[b]], small.time[b, n].reshape(1))
                direct.append(float(torch.linalg.vector_norm(mean[0] - x[b, n])))
        time, space = model.log_likelihood_split(small)
    for block in (1, 2, 16):
        out = spatial_metrics(model, small, block=block)
        assert out["location_error"] == pytest.approx(np.mean(direct), rel=1e-12)
        assert out["location_error_events"] == small.num_events == len(direct)
        assert out["space_log_likelihood_per_event"] == pytest.approx(float(space.sum()) / small.num_events, rel=1e-12)
        assert out["time_log_likelihood_per_event"] == pytest.approx(float(time.sum()) / small.num_events, rel=1e-12)
    some = spatial_metrics(model, small, max_prefixes=5, seed=1)
    assert some["location_error_events"] == 5 and some == spatial_metrics(model, small, max_prefixes=5, seed=1)
    assert any(some["location_error"] == pytest.approx(np.mean(np.array(direct)[list(c)]), rel=1e-12)
               for c in itertools.combinations(range(len(direct)), 5))
    with pytest.raises(ValueError, match="max_prefixes"):
        spatial_metrics(model, small, max_prefixes=0)


# --------------------------------------------------------------------------- neural ground processes (NHP, THP)
@pytest.mark.parametrize("temporal", ["nhp", "thp"])
def test_a_neural_ground_process_adds_its_own_likelihood_to_the_same_mixture(small, temporal):
    """Time part: the neural model's own log-likelihood of the times alone; space part: the mixture's, the same
    as under the Hawkes ground process with the same head parameters (the head does not see the time model)."""
    neural = with_params(HawkesGMM(feature_dim=2, hidden_size=8, temporal=temporal), small)
    hawkes = with_params(HawkesGMM(feature_dim=2, hidden_size=8), small)
    assert type(neural.time_model).__name__ == temporal.upper() and neural.time_model.hidden_size == 8
    with torch.no_grad():
        time, space = neural.log_likelihood_split(small)
        ground = small._replace(features=None, feature_names=())
        np.testing.assert_allclose(time.numpy(), neural.time_model.log_likelihood(ground).numpy(), rtol=0, atol=0)
        np.testing.assert_allclose(space.numpy(), hawkes.log_likelihood_split(small)[1].numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(neural.log_likelihood(small).numpy(), (time + space).numpy(), rtol=1e-12)
        neural.eval()
        np.testing.assert_allclose(neural.objective(small).numpy(), (time + space).numpy(), rtol=1e-12)


@pytest.mark.parametrize("temporal", ["nhp", "thp"])
def test_a_neural_ground_process_is_causal_and_differentiable(small, temporal):
    torch.manual_seed(0)
    model = HawkesGMM(2, hidden_size=8, temporal=temporal).double()
    model.initialise(small)
    seq = small[:1]
    flat = seq.to_flat()
    later = flat["times"] > 5.0
    moved_t, moved_x = flat["times"].copy(), flat["features"].copy()
    moved_t[later] = np.minimum(moved_t[later] + 1.3, 9.9)
    moved_x[later] += 4.0
    other = located([np.sort(moved_t)], [moved_x[np.argsort(moved_t, kind="stable")]])
    queries = torch.tensor([[0.3, 2.2, 4.9, 5.0]], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.intensity(seq, queries), model.intensity(other, queries), rtol=1e-12, atol=0)
    names = [n for n, p in model.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())

    def total(*params):
        return torch.func.functional_call(model, dict(zip(names, params)), (small[:2],)).sum()

    # fast mode: the Jacobian against random directions (every parameter at once, one finite difference each)
    assert torch.autograd.gradcheck(total, values, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_nhp_in_time_learns_pinwheels_self_excitation_that_poisson_cannot():
    """Pinwheel's times are a Hawkes process (law: +0.007 nats per event on its test split): NHP x GMM, 15 epochs
    on 400 sequences, comes within 0.1 of it in time; Poisson x GMM on the same run stays near -0.8."""
    import tpp

    train, val, test = spatial_data.pinwheel_splits()
    train, val, test = train[:400], val[:50], test[:100]
    scores = {}
    for temporal in ("nhp", "poisson"):
        model = HawkesGMM(2, hidden_size=32, temporal=temporal)
        tpp.fit(model, train, val, epochs=15, batch_size=32, seed=0, lr=0.05, progress=False)
        with torch.no_grad():
            time, space = model.log_likelihood_split(test)
        scores[temporal] = (float(time.sum()) / test.num_events, float(space.sum()) / test.num_events)
    assert scores["nhp"][0] > -0.1 and scores["poisson"][0] < -0.6, scores
    assert abs(scores["nhp"][1] - scores["poisson"][1]) < 0.1, scores  # the same head learns the same space
