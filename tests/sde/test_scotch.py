"""SCOTCH (structure learning with a graph-masked latent SDE) and its data: sde.structure_data, sde.models.SCOTCH.

Closed forms in float64: the Lorenz-96 and glycolysis drifts against their graphs (autograd Jacobians), one
Euler step of the simulator, the drift's exact zeros for non-edges, the Bernoulli KL, AUROC's extremes. The
long recovery (Lorenz-96, D = 10, 30% missing, AUROC against the baselines) is benchmarks/scotch.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sde.models import SCOTCH
from sde.models.scotch import bernoulli_kl, straight_through_graphs
from sde.series import SeriesBatch
from sde.structure_data import (
    auroc,
    correlation_graph,
    glycolysis,
    glycolysis_drift,
    glycolysis_graph,
    granger_graph,
    lorenz96,
    lorenz96_drift,
    lorenz96_graph,
    observe_with_missing,
)


def _jacobian_pattern(fn, x: torch.Tensor) -> np.ndarray:
    return (torch.autograd.functional.jacobian(fn, x) != 0).numpy().astype(np.int64)


# ---------------------------------------------------------------------------------------------- data
def test_lorenz96_graph_is_parents_i_minus_2_minus_1_self_plus_1_and_matches_the_drift_jacobian():
    D = 7
    graph = lorenz96_graph(D)
    for i in range(D):
        assert set(np.flatnonzero(graph[i])) == {(i - 2) % D, (i - 1) % D, i, (i + 1) % D}
    x = torch.randn(D, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(_jacobian_pattern(lorenz96_drift, x), graph)
    with pytest.raises(ValueError, match="dim >= 4"):
        lorenz96_graph(3)


def test_lorenz96_noiseless_step_is_one_euler_step_of_the_closed_form_drift():
    x0 = np.random.default_rng(1).standard_normal((3, 6))
    dt = 0.01
    data = lorenz96(3, times=[0.0, dt, 2 * dt], dim=6, forcing=8.0, noise=0.0, dt=dt, x0=x0)
    x = torch.from_numpy(x0)
    one = x + dt * lorenz96_drift(x, 8.0)
    two = one + dt * lorenz96_drift(one, 8.0)
    np.testing.assert_allclose(data.values[:, 0], x0, rtol=0, atol=1e-14)
    np.testing.assert_allclose(data.values[:, 1], one.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(data.values[:, 2], two.numpy(), rtol=1e-12, atol=1e-12)
    assert data.series.values.shape == (3, 3, 6) and not torch.isnan(data.series.values).any()


def test_lorenz96_with_30_percent_missing_rows_is_an_irregular_series_batch():
    data = lorenz96(20, n_steps=50, t_end=10.0, dim=5, missing=0.3, seed=3)
    assert data.values.shape == (20, 50, 5) and data.times.shape == (50,)
    batch = data.series
    assert isinstance(batch, SeriesBatch) and len(batch) == 20 and batch.num_channels == 5
    kept = batch.num_events / (20 * 50)
    assert 0.62 < kept < 0.78  # 70% of the rows (the first always kept)
    assert float(batch.time[0, 0]) == 0.0
    values = observe_with_missing(data.values, data.times, 0.3, "values", generator=0)
    observed = float(values.observed.double().mean())
    assert 0.65 < observed < 0.75 and values.num_events == 20 * 50
    with pytest.raises(ValueError, match="mode"):
        observe_with_missing(data.values, data.times, 0.3, "cells")


def test_glycolysis_graph_matches_the_drift_jacobian_and_the_simulation_is_finite():
    y = torch.rand(7, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) + 0.1
    np.testing.assert_array_equal(_jacobian_pattern(glycolysis_drift, y), glycolysis_graph())
    data = glycolysis(2, n_steps=20, t_end=2.0, seed=0)
    assert data.values.shape == (2, 20, 7) and np.isfinite(data.values).all()
    assert data.series.channel_names == tuple(f"S{i}" for i in range(1, 8))


# ---------------------------------------------------------------------------------------------- baselines
def test_auroc_extremes_and_ties():
    graph = np.array([[1, 0], [1, 0]])
    assert auroc(graph * 2.0, graph) == 1.0
    assert auroc(1.0 - graph, graph) == 0.0
    assert auroc(np.ones((2, 2)), graph) == 0.5
    # off the diagonal only: the edge [1, 0] scores above the non-edge [0, 1]
    assert auroc(np.array([[0.0, 0.1], [0.2, 0.0]]), np.array([[1, 0], [1, 1]]), include_diagonal=False) == 1.0


def test_granger_recovers_a_linear_var_and_correlation_is_symmetric():
    rng = np.random.default_rng(0)
    A = np.array([[0.5, 0.0, 0.0], [0.6, 0.4, 0.0], [0.0, -0.6, 0.3]])  # x0 -> x1 -> x2
    x = np.zeros((4, 200, 3))
    for t in range(1, 200):
        x[:, t] = x[:, t - 1] @ A.T + rng.standard_normal((4, 3))
    batch = observe_with_missing(x, np.arange(200.0), 0.0)
    truth = (A != 0).astype(int)
    assert auroc(granger_graph(batch), truth) == 1.0
    corr = correlation_graph(batch)
    np.testing.assert_allclose(corr, corr.T)


# ---------------------------------------------------------------------------------------------- the model
def test_drift_jacobian_is_exactly_zero_for_every_non_edge_of_a_sampled_graph():
    torch.manual_seed(0)
    model = SCOTCH(6, hidden_size=16).double()
    graphs = model.sample_graphs(3, relaxed=True)  # hard 0/1 values (straight-through)
    assert set(torch.unique(graphs.detach()).tolist()) <= {0.0, 1.0}
    for graph in graphs:
        z = torch.randn(6, dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(lambda x: model.drift(x[None], graph[None])[0], z)
        non_edges = graph.detach() == 0
        assert non_edges.any() and (jac[non_edges] == 0).all()
        assert (jac[~non_edges] != 0).float().mean() > 0.9  # the edges are used


def test_bernoulli_kl_matches_the_closed_form_and_straight_through_samples_carry_gradient():
    logits = torch.tensor([[0.3, -1.2]], dtype=torch.float64)
    q, p = torch.sigmoid(logits), torch.sigmoid(torch.tensor(-2.0, dtype=torch.float64))
    expected = (q * torch.log(q / p) + (1 - q) * torch.log((1 - q) / (1 - p))).sum()
    torch.testing.assert_close(bernoulli_kl(logits, -2.0), expected)
    logits.requires_grad_(True)
    sample = straight_through_graphs(logits, 500, 0.5)
    assert set(torch.unique(sample.detach()).tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(sample.detach().mean(0), torch.sigmoid(logits.detach()), atol=0.07, rtol=0)
    sample.sum().backward()
    assert (logits.grad > 0).all()


@pytest.fixture(scope="module")
def small_lorenz() -> SeriesBatch:
    return lorenz96(6, n_steps=25, t_end=12.0, dim=5, noise=0.5, missing=0.3, seed=4).series


def test_elbo_is_finite_and_its_gradient_reaches_the_graph_logits(small_lorenz):
    torch.manual_seed(0)
    model = SCOTCH(5, hidden_size=16, context_size=8, step_size=0.5).initialise(small_lorenz)
    elbo = model.elbo(small_lorenz)
    assert elbo.shape == (6,) and torch.isfinite(elbo).all()
    elbo.sum().backward()
    grad = model.graph_logits.grad
    assert grad is not None and torch.isfinite(grad).all() and (grad != 0).sum() > 10
    probs = model.edge_probabilities_
    assert probs.shape == (5, 5) and ((probs >= 0) & (probs <= 1)).all()
    score = model.score(small_lorenz, num_samples=2)
    assert np.isfinite(score) and score == model.score(small_lorenz, num_samples=2)  # seeded


def test_constructor_refuses_bad_arguments():
    with pytest.raises(ValueError):
        SCOTCH(0)
    with pytest.raises(ValueError):
        SCOTCH(3, temperature=0.0)
    with pytest.raises(ValueError):
        SCOTCH(3, noise_scale=-1.0)


def test_a_tiny_fit_ranks_the_true_edges_above_the_non_edges():
    # a linear chain dx = A x dt + 0.3 dW, x0 -> x1 -> ... -> x4, with self-decay; 30% of the rows missing
    D, n, T = 5, 8, 60
    A = -1.0 * np.eye(D)
    for i in range(1, D):
        A[i, i - 1] = 1.5
    rng = np.random.default_rng(0)
    dt, fine = 0.25, 4
    x = np.zeros((n, T, D))
    state = rng.standard_normal((n, D)) * 2
    for t in range(T):
        x[:, t] = state
        for _ in range(fine):
            state = state + dt / fine * state @ A.T + 0.3 * np.sqrt(dt / fine) * rng.standard_normal((n, D))
    batch = observe_with_missing(x, np.arange(T) * dt, 0.3, generator=1)
    truth = (A != 0).astype(int)
    torch.manual_seed(0)
    model = SCOTCH(D, hidden_size=16, context_size=8, step_size=1.0, noise_scale=0.1, sparsity=1.0,
                   kl_anneal_steps=10)
    model.fit(batch, epochs=60, batch_size=n, lr=1e-2, progress=False, patience=10**6)
    probs = model.edge_probabilities_.numpy()
    # from 1/2 everywhere: the edges' mean moves about 0.3 above the non-edges' (0.81 vs 0.52 here)
    assert probs[truth == 1].mean() > probs[truth == 0].mean() + 0.15
    assert auroc(probs, truth, include_diagonal=False) > 0.75  # 0.83 here


def test_the_simulators_are_reexported_from_sde_simulate():
    import sde.simulate

    assert sde.simulate.lorenz96 is lorenz96 and sde.simulate.glycolysis is glycolysis


def test_plot_graph_draws_the_posterior_beside_the_truth_with_its_auroc():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from sde.models.scotch import plot_graph

    truth = lorenz96_graph(5)
    fig = plot_graph(0.8 * truth + 0.1, truth)
    assert isinstance(fig, Figure) and len(fig.axes) == 3  # posterior, truth, colour bar
    assert "AUROC 1.000" in fig._suptitle.get_text()
    torch.manual_seed(0)
    fig = plot_graph(SCOTCH(5, hidden_size=8))  # a model, no truth: one panel
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="square"):
        plot_graph(np.zeros((2, 3)))
    import matplotlib.pyplot as plt

    plt.close("all")
