"""Bayesian exponential Hawkes (tpp.hawkes.bayes): the JAX likelihood, posterior recovery and coverage.

The full coverage study (30 runs, ~700 events each, 1000 draws) is benchmarks/hawkes_bayes_coverage.py;
test_credible_intervals_cover_the_truth_at_the_nominal_rate runs a smaller one (30 runs, fewer events
and draws) that fits the test budget.
"""

import sys

import numpy as np
import pytest

pytest.importorskip("numpyro")  # the optional extra `bayes` (make test installs it)

from tpp import EventBatch  # noqa: E402
from tpp.hawkes import ExpHawkes  # noqa: E402
from tpp.hawkes import bayes  # noqa: E402

MU = np.array([0.5, 0.3])
ADJ = np.array([[0.3, 0.1], [0.2, 0.4]])
DECAY = 1.5


@pytest.fixture(scope="module")
def ragged_batch() -> EventBatch:
    """Sequences of different lengths (one empty), a tie, and a window that starts before its first event."""
    base = ExpHawkes.from_params(MU, ADJ, 2.0).sample(3, 30.0, generator=1)
    seqs = list(base.sequences())
    t, m = seqs[0]
    t = np.sort(np.concatenate([t, [t[2], t[2]]]))
    m = np.concatenate([m, [1, 0]])
    return EventBatch.from_sequences(
        [t, seqs[1][0][:5], seqs[2][0], np.array([])], [m, seqs[1][1][:5], seqs[2][1], np.array([], int)],
        t_start=[-1.0, 0.0, 0.0, 2.0], t_end=[31.0, 30.0, 30.0, 5.0], num_marks=2)


@pytest.fixture(scope="module")
def posterior_data() -> EventBatch:
    return ExpHawkes.from_params(MU, ADJ, DECAY).sample(6, 100.0, generator=11)


@pytest.fixture(scope="module")
def posterior(posterior_data) -> "bayes.Posterior":
    return bayes.sample_posterior(posterior_data, num_samples=500, num_warmup=300, seed=0, num_chains=2)


def test_jax_log_likelihood_equals_exp_hawkes_on_ragged_batches(ragged_batch):
    for mu, adj, decay in [(MU, ADJ, 2.0), (np.array([0.2, 1.1]), np.array([[0.05, 0.7], [0.0, 0.3]]), 0.37)]:
        ours = bayes.log_likelihood(ragged_batch, mu, adj, decay)
        ref = ExpHawkes.from_params(mu, adj, decay).log_likelihood(ragged_batch).detach().numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)


def test_sampler_target_with_padding_equals_total_log_likelihood(ragged_batch):
    """The padded arrays the sampler compiles for give the same total as the per-sequence likelihood."""
    import jax
    import jax.numpy as jnp

    arrays = bayes._event_arrays(ragged_batch, pad_to=bayes._padded_size(ragged_batch.num_events) + 7)
    with jax.enable_x64(True):
        terms = bayes._event_terms(jnp.asarray(MU), jnp.asarray(ADJ), jnp.asarray(2.0),
                                   {k: jnp.asarray(v) for k, v in arrays.items()})
        total = float(jnp.sum(terms)) - MU.sum() * arrays["duration"].sum()
    ref = ExpHawkes.from_params(MU, ADJ, 2.0).log_likelihood(ragged_batch).sum().item()
    assert total == pytest.approx(ref, rel=1e-12)


def test_sampler_log_density_is_prior_plus_likelihood_plus_jacobian(ragged_batch):
    """The density NUTS samples, at a point of the unconstrained space, against scipy's priors and ExpHawkes."""
    import jax
    import jax.numpy as jnp
    import scipy.stats as st

    mu, adj, decay = np.array([0.4, 0.7]), np.array([[0.2, 0.05], [0.3, 0.1]]), 1.3
    hyper = np.array([0.9, 0.25, np.log(2.0), 1.5, 0.0])
    arrays = bayes._event_arrays(ragged_batch, pad_to=100)
    hyper[4] = arrays["duration"].sum()
    z = {"baseline": np.log(mu), "adjacency": np.log(adj), "decay": np.log(decay)}
    with jax.enable_x64(True):
        ours = float(bayes._log_density({k: jnp.asarray(v) for k, v in z.items()},
                                        {k: jnp.asarray(v) for k, v in arrays.items()}, jnp.asarray(hyper)))
    expected = (st.halfnorm(scale=0.9).logpdf(mu).sum() + st.halfcauchy(scale=0.25).logpdf(adj).sum()
                + st.lognorm(s=1.5, scale=2.0).logpdf(decay) + np.log(mu).sum() + np.log(adj).sum() + np.log(decay)
                + ExpHawkes.from_params(mu, adj, decay).log_likelihood(ragged_batch).sum().item())
    assert ours == pytest.approx(expected, rel=1e-12)


def test_posterior_mean_is_near_the_truth(posterior):
    assert posterior.baseline.shape == (1000, 2) and posterior.adjacency.shape == (1000, 2, 2)
    assert posterior.decay.shape == (1000,)
    truth = np.concatenate([MU, ADJ.ravel(), [DECAY]])
    mean = np.concatenate([posterior.mean("baseline"), posterior.mean("adjacency").ravel(), [posterior.mean("decay")]])
    sd = np.concatenate([posterior.baseline.std(0), posterior.adjacency.std(0).ravel(), [posterior.decay.std()]])
    assert np.all(np.abs(mean - truth) < 3 * sd), (mean, truth, sd)
    np.testing.assert_allclose(mean, truth, atol=0.35 * DECAY)  # and not merely wide
    assert posterior.num_divergences <= 5


def test_credible_intervals_branching_ratio_and_summary(posterior):
    lo, hi = posterior.credible_interval("adjacency", 0.9)
    assert lo.shape == hi.shape == (2, 2) and np.all(lo < hi)
    ratio = posterior.branching_ratio()
    assert ratio.shape == (1000,)
    np.testing.assert_allclose(ratio[0], np.max(np.abs(np.linalg.eigvals(posterior.adjacency[0]))))
    rlo, rhi = posterior.credible_interval("branching_ratio", 0.9)
    true_ratio = np.max(np.abs(np.linalg.eigvals(ADJ)))
    assert rlo <= true_ratio <= rhi
    table = posterior.summary()
    assert list(table.index) == ["baseline[0]", "baseline[1]", "adjacency[0,0]", "adjacency[0,1]",
                                 "adjacency[1,0]", "adjacency[1,1]", "decay", "branching_ratio"]
    assert {"mean", "sd", "5%", "95%", "r_hat", "ess"} <= set(table.columns)
    assert table["r_hat"].max() < 1.1 and table["ess"].min() > 50
    assert table.loc["decay", "5%"] == pytest.approx(posterior.credible_interval("decay")[0])
    model = posterior.to_model()
    np.testing.assert_allclose(model.adjacency_, posterior.adjacency.mean(0))
    with pytest.raises(ValueError, match="unknown quantity"):
        posterior.credible_interval("kernel")
    with pytest.raises(ValueError, match="level"):
        posterior.credible_interval("decay", 1.5)


def test_posterior_follows_the_data_clock(posterior_data, posterior):
    """Unix-like seconds (times x 1000 + 1.7e9) give the same adjacency and the same rates per original
    unit: the default priors scale with the data's event rate, so no unit is assumed."""
    scale = 1000.0
    seqs = list(posterior_data.sequences())
    shifted = EventBatch.from_sequences([t * scale + 1.7e9 for t, _ in seqs], [m for _, m in seqs],
                                        t_start=posterior_data.t_start.numpy() * scale + 1.7e9,
                                        t_end=posterior_data.t_end.numpy() * scale + 1.7e9, num_marks=2)
    other = bayes.sample_posterior(shifted, num_samples=500, num_warmup=300, seed=0, num_chains=2)
    np.testing.assert_allclose(other.mean("adjacency"), posterior.mean("adjacency"), atol=0.03)
    np.testing.assert_allclose(other.mean("baseline") * scale, posterior.mean("baseline"), rtol=0.05)
    assert other.mean("decay") * scale == pytest.approx(posterior.mean("decay"), rel=0.05)


def test_plot_hawkes_posterior(posterior, tmp_path):
    from tpp.plot import plot_hawkes_posterior, save_figure

    fig = plot_hawkes_posterior(posterior, truth=ExpHawkes.from_params(MU, ADJ, DECAY))
    assert save_figure(fig, tmp_path / "posterior.png").stat().st_size > 1000


def test_arguments_are_checked(ragged_batch):
    with pytest.raises(ValueError, match="num_marks=1"):
        bayes.sample_posterior(ragged_batch, num_marks=1)
    with pytest.raises(ValueError, match="num_samples"):
        bayes.sample_posterior(ragged_batch, num_samples=0)
    with pytest.raises(ValueError, match="adjacency_scale"):
        bayes.sample_posterior(ragged_batch, priors={"adjacency_scale": -1.0})
    with pytest.raises(ValueError, match="unknown prior"):
        bayes.sample_posterior(ragged_batch, priors={"mu_scale": 1.0})
    with pytest.raises(TypeError, match="EventBatch"):
        bayes.sample_posterior([1.0, 2.0])


def test_missing_extra_names_it(monkeypatch, ragged_batch):
    monkeypatch.setitem(sys.modules, "numpyro", None)  # import numpyro now raises ImportError
    with pytest.raises(ImportError, match=r"tpp-sde\[bayes\]"):
        bayes.sample_posterior(ragged_batch)


def test_float64_is_local_to_the_call(posterior, posterior_data):
    import jax

    assert posterior.baseline.dtype == np.float64
    # another test module of the same process may have turned x64 on for itself: set it off here, sample, and
    # check the sampler left it off (it runs in float64 inside a local jax.enable_x64)
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    try:
        # the fixture's settings and data: the compiled sampler is reused (a new one costs ~13 s CPU)
        again = bayes.sample_posterior(posterior_data, num_samples=500, num_warmup=300, seed=1, num_chains=2)
        assert again.baseline.dtype == np.float64
        assert not jax.config.jax_enable_x64
    finally:
        jax.config.update("jax_enable_x64", before)


#: First generator seed of the coverage study's data sets (checked also with 3000: see the docstring).
SEED = 2000


@pytest.mark.slow
def test_credible_intervals_cover_the_truth_at_the_nominal_rate():
    """30 simulated data sets (2 sequences on [0, 100], 257-376 events each), 90% intervals of the 7
    parameters from one chain of 200 draws after 150 warm-up steps: pooled coverage in [0.80, 0.97] (the
    issue's band; 210 interval checks, binomial sd 0.021 at the nominal 0.90, so the band is about
    -4.8 / +3.4 sd). Measured 0.905 with SEED 2000 and 0.871 with 3000 (300 warm-up steps and 300 draws
    cost twice the sampling for no change in the claim). The full-size study is benchmarks/hawkes_bayes_coverage.py.

    The data sets fall in a few padded sizes: the sampler compiles once per size, not per run (these 30
    all pad to 384 events, so it compiles once: compiling costs ~13 s CPU, sampling ~0.15 s a run)."""
    truth = ExpHawkes.from_params(MU, ADJ, DECAY)
    value = np.concatenate([MU, ADJ.ravel(), [DECAY]])
    hits, sizes = [], set()
    for r in range(30):
        data = truth.sample(2, 100.0, generator=SEED + r)
        sizes.add(bayes._padded_size(data.num_events))
        post = bayes.sample_posterior(data, num_samples=200, num_warmup=150, seed=r)
        lo = np.concatenate([np.ravel(post.credible_interval(n)[0]) for n in ("baseline", "adjacency", "decay")])
        hi = np.concatenate([np.ravel(post.credible_interval(n)[1]) for n in ("baseline", "adjacency", "decay")])
        hits.append((lo <= value) & (value <= hi))
    coverage = float(np.mean(hits))
    # One compilation per padded size, not per data set.
    assert bayes._compiled_sampler(2, 150, 200, 0.8)._cache_size() == len(sizes) < 5
    assert 0.80 <= coverage <= 0.97, (coverage, np.mean(hits, 0))
