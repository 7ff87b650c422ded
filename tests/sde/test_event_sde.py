"""``sde.jax.EventSDE``: event SDEs for stochastic spiking networks (Holberg & Salvi, NeurIPS 2024).

All checks share ONE compiled program (two neurons, Heun on a 5e-4 grid, spike times and their forward-mode
derivative in ``mu``): the networks differ only in array values (modes, noise, weights), so the ~15 s diffrax
compilation is paid once. The training check (input current recovered by signature-kernel MMD) lives in
``benchmarks/event_sde.py``: it takes minutes.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

T1, K, DT = 3.0, 6, 5e-4


@pytest.fixture(scope="module")
def ev():
    """``sde.jax.events`` in float64 with XLA's optimisations on (restored afterwards): with
    ``jax_disable_most_optimizations`` (set by other JAX tests) XLA returns NaN tangents for this program."""
    names = ("jax_enable_x64", "jax_disable_most_optimizations")
    old = {name: jax.config.values[name] for name in names}
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_disable_most_optimizations", False)
    import equinox as eqx

    import sde.jax.events as events

    @eqx.filter_jit
    def times_and_dmu(model, key):
        """Spike times ``[K]``, their derivative along ``d mu = (1, 1)`` (forward mode) and the neurons."""
        def times(mu):
            train = eqx.tree_at(lambda m: m.mu, model, mu)(T1, key=key, max_spikes=K)
            return train.times, train.neurons
        return jax.jvp(times, (model.mu,), (jnp.ones_like(model.mu),), has_aux=True)

    events.times_and_dmu = times_and_dmu
    yield events
    for name, value in old.items():
        jax.config.update(name, value)


def network(ev, **kw):
    """Two neurons, the one static configuration all checks share (arrays differ, the compilation does not)."""
    base = dict(mu=[1.5, 2.0], tau=[0.7, 1.0], sigma=[0.0, 0.0], theta=1.0, v_reset=0.0, weights=np.zeros((2, 2)),
                rate=1.0, beta=5.0, mode="intensity", solver="heun", dt0=DT, adjoint="forward")
    base.update(kw)
    return ev.EventSDE(2, **base)


def test_deterministic_lif_spike_times_equal_closed_form(ev):
    """V' = (mu - V) / tau from 0 hits theta at tau log(mu / (mu - theta)), then again after each reset;
    the derivative in mu is k tau (1 / mu - 1 / (mu - theta)) for the k-th spike."""
    model = network(ev, mode="threshold")
    times, dmu, neurons = ev.times_and_dmu(model, jax.random.PRNGKey(0))
    neurons = np.asarray(neurons)
    mu, tau, theta = np.array([1.5, 2.0]), np.array([0.7, 1.0]), 1.0
    period = tau * np.log(mu / (mu - theta))
    slope = tau * (1 / mu - 1 / (mu - theta))
    for n in range(2):
        mine = np.asarray(times)[neurons == n]
        count = int(T1 // period[n])
        assert len(mine) == min(count, K - (neurons == 1 - n).sum())
        np.testing.assert_allclose(mine, period[n] * np.arange(1, len(mine) + 1), rtol=0, atol=1e-6)
        np.testing.assert_allclose(np.asarray(dmu)[neurons == n], slope[n] * np.arange(1, len(mine) + 1),
                                   rtol=1e-5)


def test_spike_time_gradients_match_finite_differences_on_the_same_path(ev):
    """Noisy coupled network, stochastic (intensity) spiking: the event solver's derivative of every spike
    time equals central finite differences with the same key (same Brownian path, same Exp(1) thresholds)."""
    model = network(ev, mu=[1.3, 1.2], tau=1.0, sigma=[0.3, 0.3], weights=[[0.0, 0.4], [-0.3, 0.0]])
    key = jax.random.PRNGKey(0)
    times, dmu, _ = ev.times_and_dmu(model, key)
    finite = np.isfinite(np.asarray(times))
    assert finite.sum() >= 3
    eps = 1e-6
    up = network(ev, mu=[1.3 + eps, 1.2 + eps], tau=1.0, sigma=[0.3, 0.3], weights=[[0.0, 0.4], [-0.3, 0.0]])
    down = network(ev, mu=[1.3 - eps, 1.2 - eps], tau=1.0, sigma=[0.3, 0.3], weights=[[0.0, 0.4], [-0.3, 0.0]])
    with np.errstate(invalid="ignore"):  # inf - inf on the padding
        fd = (np.asarray(ev.times_and_dmu(up, key)[0]) - np.asarray(ev.times_and_dmu(down, key)[0])) / (2 * eps)
    np.testing.assert_allclose(np.asarray(dmu)[finite], fd[finite], rtol=1e-4, atol=1e-7)
    assert np.all(np.asarray(dmu)[~finite] == 0)


def test_spikes_at_constant_voltage_are_poisson_with_rate_lambda(ev):
    """v held at theta (mu = v0 = v_reset, no noise, no coupling): each neuron fires as a Poisson process of
    rate lambda(theta) = rate; the merged train's intervals are Exp(rate_0 + rate_1) (KS) and each spike
    belongs to neuron 0 with probability rate_0 / (rate_0 + rate_1)."""
    rates = np.array([8.0, 12.0])
    model = network(ev, mu=1.0, v_reset=1.0, rate=rates)
    gaps, labels = [], []
    for seed in range(40):
        times, _, neurons = ev.times_and_dmu(model, jax.random.PRNGKey(100 + seed))
        times = np.asarray(times)
        assert np.isfinite(times).all()    # K spikes long before t1: the intervals are not censored
        gaps.append(np.diff(np.concatenate([[0.0], times])))
        labels.append(np.asarray(neurons))
    gaps = np.concatenate(gaps) * rates.sum()
    assert stats.kstest(gaps, "expon").pvalue > 0.01
    share = (np.concatenate(labels) == 0).mean()
    n = len(gaps)
    assert abs(share - rates[0] / rates.sum()) < 4 * math.sqrt(0.24 / n)


def test_spike_path_is_the_counting_process_with_vertical_jumps(ev):
    times = jnp.array([0.5, 1.0, jnp.inf])
    neurons = jnp.array([1, 0, -1])
    path = np.asarray(jax.jit(ev.spike_path, static_argnums=(2, 3, 4))(times, neurons, 2, 0.0, 2.0))
    expected = np.array([[0.0, 0, 0], [0.25, 0, 0], [0.25, 0, 1], [0.5, 0, 1], [0.5, 1, 1], [1.0, 1, 1],
                         [1.0, 1, 1]])
    np.testing.assert_allclose(path, expected)


def test_spike_raster_plot_returns_a_figure_with_gradients(ev):
    import matplotlib

    matplotlib.use("Agg")
    train = ev.SpikeTrain(times=jnp.array([[0.4, 1.1, jnp.inf], [0.7, jnp.inf, jnp.inf]]),
                          neurons=jnp.array([[0, 0, -1], [0, -1, -1]]), truncated=jnp.array([False, False]),
                          ok=jnp.array([True, True]), t0=0.0, t1=2.0, num_neurons=1)
    fig = ev.plot_spike_raster(train, grads=np.array([[-0.5, -1.0, 0.0], [0.3, 0.0, 0.0]]))
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(fig.axes) == 2          # the raster and the gradient colour bar
    matplotlib.pyplot.close(fig)


def test_event_sde_rejects_bad_arguments(ev):
    with pytest.raises(ValueError, match="mode"):
        ev.EventSDE(2, mode=["intensity"])
    with pytest.raises(ValueError, match="adaptive"):
        ev.EventSDE(1, sigma=0.1, solver="tsit5")
    with pytest.raises(ValueError, match="weights"):
        ev.EventSDE(2, weights=np.zeros((3, 3)))


# ---------------------------------------------------------------- the torch twin (no compilation)
def test_torch_spiking_sde_lif_spike_times_equal_closed_form():
    import torch

    from sde.models import SpikingSDE

    net = SpikingSDE(2, mu=[1.5, 2.0], tau=[0.7, 1.0], mode="threshold", solver="heun", dt0=1e-3)
    train = net(1.0, max_spikes=3, generator=torch.Generator().manual_seed(0))
    times = train.times[0].detach().numpy()
    np.testing.assert_array_equal(train.neurons[0].numpy(), [1, 0, -1])
    np.testing.assert_allclose(times[:2], [math.log(2.0), 0.7 * math.log(3.0)], rtol=0, atol=1e-6)
    (dt_dmu,) = torch.autograd.grad(train.times[0, :2].sum(), net.mu)
    # the derivative of the scheme's spike time (root of a chord of slope (c1 - c0) / dt) is O(dt) from the
    # continuous one; its exactness for the scheme is the finite-difference test below
    np.testing.assert_allclose(dt_dmu.numpy(), [0.7 * (1 / 1.5 - 1 / 0.5), 1 / 2.0 - 1.0], rtol=2e-3)


def test_torch_spike_time_gradients_match_finite_differences_on_the_same_path():
    import torch

    from sde.models import SpikingSDE

    net = SpikingSDE(2, mu=[1.3, 1.2], sigma=0.3, weights=[[0.0, 0.4], [-0.3, 0.0]], dt0=1e-2)
    path = net.brownian(3.0, 3, generator=torch.Generator().manual_seed(0))
    thresholds = torch.empty(3, 8, dtype=torch.float64).exponential_(generator=torch.Generator().manual_seed(1))
    train = net(3.0, max_spikes=6, path=path, thresholds=thresholds)
    finite = torch.isfinite(train.times)
    assert finite.sum() >= 6
    (grad,) = torch.autograd.grad(train.times[finite].sum(), net.mu)
    eps, fd = 1e-6, []
    for j in range(2):
        with torch.no_grad():
            net.mu[j] += eps
            up = net(3.0, max_spikes=6, path=path, thresholds=thresholds).times
            net.mu[j] -= 2 * eps
            down = net(3.0, max_spikes=6, path=path, thresholds=thresholds).times
            net.mu[j] += eps
        fd.append(((up - down) / (2 * eps))[finite].sum().item())
    np.testing.assert_allclose(grad.numpy(), fd, rtol=1e-4)
