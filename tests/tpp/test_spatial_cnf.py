"""Neural STPP (tpp.spatial.cnf): the CNF numerics against closed forms, the density's normalisation, causality,
gradients, a tiny fit and sampling. Small nets, few events, float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tpp.events import EventBatch
from tpp.spatial._flows import Trace, solve_flow
from tpp.spatial.cnf import AttentiveCNF, JumpCNF, TimeVaryingCNF

MODELS = [TimeVaryingCNF, JumpCNF, AttentiveCNF]
SMALL = {"feature_dim": 2, "hidden_size": 4, "flow_hidden": (8, 8)}


def _data(num: int = 3, seed: int = 0) -> EventBatch:
    rng = np.random.default_rng(seed)
    times, feats = [], []
    for b in range(num):
        n = 2 + b % 3
        times.append(np.sort(rng.uniform(0, 4, n)))
        feats.append(rng.normal(size=(n, 2)) * [2.0, 1.0] + [10.0, -3.0])
    return EventBatch.from_sequences(times, t_end=4.0, features=feats, feature_names=["lon", "lat"])


def _model(cls, data: EventBatch, seed: int = 0, scale: float = 0.3, **kwargs):
    """A model whose every parameter is perturbed (so no flow is the identity), standardised on ``data``; a Jump
    CNF's radial jumps widened from their near-identity start to ``alpha ~ 0.5``."""
    torch.manual_seed(seed)
    model = cls(**{**SMALL, **kwargs}).initialise(data)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
        if isinstance(model, JumpCNF):
            alpha = model.jumps.net[-1].bias.view(model.jumps.flows, -1)[:, -2]
            alpha.copy_(model.jumps.alpha_shift + math.log(0.5) + torch.randn_like(alpha) * scale)
    return model.eval()


class _Linear(nn.Module):
    """``f(t, x) = A x``: its flow and log-determinant have closed forms."""

    cross_rows = False

    def __init__(self, A: torch.Tensor) -> None:
        super().__init__()
        self.A = nn.Parameter(A)

    def forward(self, t, x, cond):
        return x @ self.A.T


def test_exact_trace_log_density_equals_closed_form_for_a_linear_drift():
    A = torch.tensor([[0.3, -0.7], [0.4, -0.2]], dtype=torch.float64)
    x = torch.tensor([[1.0, 2.0], [-0.5, 0.25], [3.0, -1.0]], dtype=torch.float64)
    t0 = torch.tensor([3.0, 1.0, 2.5], dtype=torch.float64)
    t1 = torch.tensor([0.5, 0.0, 2.5], dtype=torch.float64)  # the last row does not move
    with torch.no_grad():
        z, delta = solve_flow(_Linear(A), x, t0, t1, x.new_zeros(3, 0), trace=Trace.EXACT, rtol=1e-10, atol=1e-10)
    span = t1 - t0
    expected_z = torch.stack([torch.linalg.matrix_exp(A * s) @ xi for s, xi in zip(span, x)])
    assert torch.allclose(z, expected_z, atol=1e-7)
    assert torch.allclose(delta, torch.trace(A) * span, atol=1e-7)  # log det of the map, to 1e-5 asked


@pytest.mark.parametrize("trace", [Trace.RADEMACHER, Trace.GAUSSIAN])
def test_hutchinson_estimate_averages_to_the_exact_trace(trace: Trace):
    torch.manual_seed(0)
    from tpp.spatial.cnf import _PlainDrift

    drift = _PlainDrift(2, 1, (8,)).double()
    with torch.no_grad():
        for p in drift.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    reps = 300
    x = torch.tensor([[0.5, -1.0]], dtype=torch.float64).expand(reps, 2)
    cond = torch.full((reps, 1), 0.3, dtype=torch.float64)
    t0, t1 = torch.full((reps,), 2.0, dtype=torch.float64), torch.zeros(reps, dtype=torch.float64)
    with torch.no_grad():
        z_exact, exact = solve_flow(drift, x[:1], t0[:1], t1[:1], cond[:1], trace=Trace.EXACT, rtol=1e-7, atol=1e-7)
        z_est, est = solve_flow(drift, x, t0, t1, cond, trace=trace, rtol=1e-7, atol=1e-7,
                                generator=torch.Generator().manual_seed(1))
    # every replica has its own noise vector: their mean is unbiased, within 4 standard errors
    assert torch.allclose(z_est, z_exact.expand_as(z_est), atol=1e-5)
    err = float(est.mean() - exact[0])
    assert abs(err) < 4 * float(est.std()) / math.sqrt(reps) + 1e-9
    assert float(est.std()) > 0  # a real estimate, not the exact trace


def _causal_attentive_drift(ff: bool = False):
    """One sequence of four rows at times (0.1, 0.5, 0.5, 1.2) under a perturbed attentive drift (each row sees
    the strictly earlier ones), with a state ``x`` that requires grad at t = 0.7: ``(drift, t, x, cond)``.
    ``ff``: the drift with the reference's gated feed-forward part."""
    from tpp.spatial.cnf import _AttentiveDrift

    torch.manual_seed(0)
    B, R, D = 1, 4, 2
    drift = _AttentiveDrift(D, 3, (8, 8), 8, ff=ff).double()
    with torch.no_grad():
        for p in drift.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    u = torch.tensor([[0.1, 0.5, 0.5, 1.2]], dtype=torch.float64)
    drift.configure(B, R, R, (u[:, None, :] < u[:, :, None]) & ~torch.eye(R, dtype=torch.bool))
    t = torch.full((R,), 0.7, dtype=torch.float64)
    x = torch.randn(R, D, dtype=torch.float64, requires_grad=True)
    cond = torch.randn(R, 3, dtype=torch.float64)
    return drift, t, x, cond


def test_attentive_trace_is_the_sum_of_each_rows_own_jacobian_block():
    drift, t, x, cond = _causal_attentive_drift()
    R, D = x.shape
    jac = torch.autograd.functional.jacobian(lambda x_: drift(t, x_, cond), x)  # [R, D, R, D]
    blocks = torch.stack([torch.diagonal(jac[i, :, i, :]).sum() for i in range(R)])
    f_self = drift(t, x, cond, self_only=True)
    assert torch.allclose(f_self, drift(t, x, cond))  # same values, only the gradient paths differ
    div = sum(torch.autograd.grad(f_self[:, d].sum(), x, retain_graph=True)[0][:, d] for d in range(D))
    assert torch.allclose(div, blocks, atol=1e-12)
    # causal: row 1 does not see row 2 (tied time) nor row 3 (later)
    assert torch.all(jac[1, :, 2:, :] == 0) and torch.all(jac[0, :, 1:, :] == 0)


@pytest.mark.parametrize("cls", MODELS)
def test_learned_spatial_density_integrates_to_one(cls):
    data = _data(1)
    model = _model(cls, data, rtol=1e-7, atol=1e-7, scale=0.1)
    # a large box in data units around the standardised cloud (mean, scale from the scaler)
    mean, scale = model.scaler.mean, model.scaler.scale
    n = 128  # the Jump CNF's radial jumps make bumps ~0.5 standardised units wide: a 64-point grid errs by 1e-3
    grids = [torch.linspace(float(mean[d] - 8 * scale[d]), float(mean[d] + 8 * scale[d]), n, dtype=torch.float64)
             for d in range(2)]
    gx, gy = torch.meshgrid(*grids, indexing="ij")
    x = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)
    t = data.time[:, -1] + 0.3  # after the whole history
    with torch.no_grad():
        dens = model.spatial_density(data, t, x)[0]
    cell = float((grids[0][1] - grids[0][0]) * (grids[1][1] - grids[1][0]))
    total = float(dens.sum()) * cell  # trapezoid = midpoint here: the density is negligible on the border
    assert abs(total - 1.0) < 1e-3, total


@pytest.mark.parametrize("cls", MODELS)
def test_moving_a_future_event_changes_nothing_before_it(cls):
    data = _data(1)
    model = _model(cls, data, rtol=1e-6, atol=1e-6)
    L = data.max_length
    assert L >= 2
    moved_time = data.time.clone()
    moved_time[0, -1] = (data.time[0, -2] + data.t_end[0]) / 2 + 0.1  # later event moved in time ...
    moved_x = data.features.clone()
    moved_x[0, -1] = torch.tensor([30.0, 20.0])  # ... and in space
    other = EventBatch(moved_time, data.mark, data.mask, data.t_start, data.t_end, 1, features=moved_x,
                       feature_names=data.feature_names)
    t_before = torch.linspace(0.0, float(data.time[0, -2]) + 1e-3, 4, dtype=torch.float64)[None]
    t_q = data.time[:, -2] + 1e-3
    x_q = torch.tensor([[9.0, -2.0], [11.0, -4.0]], dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(model.intensity(data, t_before), model.intensity(other, t_before))
        assert torch.equal(model.spatial_log_density(data, t_q, x_q), model.spatial_log_density(other, t_q, x_q))
        # every earlier event's own terms: equal up to the solver tolerance (the adaptive steps are shared
        # by the rows of one solve, so bits may differ; a causality bug would move them by O(1))
        a, b = model._encode(data), model._encode(other)
        assert torch.equal(a.log_rate[:, :-1], b.log_rate[:, :-1])
        sa, sb = model._space_events(a), model._space_events(b)
        assert torch.allclose(sa[:, :-1], sb[:, :-1], atol=1e-4)
        assert not torch.allclose(sa[:, -1], sb[:, -1], atol=1e-3)


@pytest.mark.parametrize("cls", MODELS)
def test_likelihood_terms_equal_the_density_at_each_event(cls):
    """The space part of the likelihood is ``log f(x_n | t_n, events before t_n)``, the density the queries answer."""
    data = _data(2)[1:]  # one sequence of three events
    model = _model(cls, data, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        _, space = model.log_likelihood_split(data)
        own = [model.spatial_log_density(data, data.time[:, n], data.features[:, n])[0, 0] for n in range(3)]
    assert torch.allclose(space[0], torch.stack(own).sum(), atol=1e-4)


@pytest.mark.parametrize("cls", MODELS)
def test_gradient_reaches_every_parameter(cls):
    data = _data(2)
    model = _model(cls, data, scale=0.3).train()
    loss = -model.log_likelihood(data).sum()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, missing
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters())


def test_adjoint_gradient_equals_direct_backprop():
    data = _data(1)
    grads = []
    for adjoint in (False, True):
        # adaptive solves throughout (train_time_step=None): the adjoint of a fixed RK4 grid is not its backprop
        model = _model(JumpCNF, data, scale=0.3, rtol=1e-7, atol=1e-7, trace="exact", adjoint=adjoint,
                       train_time_step=None).train()
        (-model.log_likelihood(data).sum()).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("cls", MODELS)
def test_a_tiny_fit_raises_the_likelihood(cls):
    data = _data(3, seed=3)
    torch.manual_seed(0)
    model = cls(**SMALL, rtol=1e-3, atol=1e-3).initialise(data)
    before = model.eval().score(data)
    model.fit(data, epochs=3, batch_size=3, lr=3e-2, warmup=0.0, seed=0, progress=False)
    after = model.score(data)
    assert after > before + 0.05, (before, after)


@pytest.mark.parametrize("cls", MODELS)
def test_sample_returns_located_events(cls):
    data = _data(2)
    model = _model(cls, data, scale=0.1)
    out = model.sample(2, t_end=1.5, generator=0)
    assert out.features is not None and out.features.shape == (*out.time.shape, 2)
    assert out.feature_names == ("x0", "x1") or len(out.feature_names) == 2
    assert bool(torch.isfinite(out.features).all())
    again = model.sample(2, t_end=1.5, generator=0)
    assert torch.equal(out.time, again.time) and torch.equal(out.features, again.features)
    cont = model.sample(2, t_end=4.5, history=data, generator=1)
    assert cont.feature_names == ("lon", "lat")
    assert torch.equal(cont.features[:, : data.max_length][data.mask], data.features[data.mask])


def test_expected_location_is_a_seeded_monte_carlo_mean():
    data = _data(1)
    model = _model(JumpCNF, data, scale=0.1, num_samples=64, rtol=1e-3, atol=1e-3)
    t = data.t_end
    first, second = model.expected_location(data, t), model.expected_location(data, t)
    assert first.shape == (1, 2) and torch.equal(first, second)
    pred = model.predict(data, num_intervals=16, num_points=4)
    assert pred.location_mean.shape == (1, 2) and bool(torch.isfinite(pred.time_mean).all())


def test_densities_are_in_data_units():
    """Scaling the locations by c changes every space log-density by -D log c and nothing else."""
    data = _data(2)
    c = 7.0
    scaled = data._replace(features=data.features * c)
    model_a = _model(TimeVaryingCNF, data)
    model_b = _model(TimeVaryingCNF, scaled)
    with torch.no_grad():
        ta, sa = model_a.log_likelihood_split(data)
        tb, sb = model_b.log_likelihood_split(scaled)
    n = data.mask.sum(1).double()
    assert torch.allclose(ta, tb) and torch.allclose(sb, sa - 2 * n * math.log(c), atol=1e-8)


def test_constructor_refuses_bad_settings():
    with pytest.raises(ValueError, match="num_marks"):
        JumpCNF(feature_dim=2, hidden_size=4, num_marks=3)
    with pytest.raises(ValueError, match="rtol"):
        AttentiveCNF(feature_dim=2, hidden_size=4, rtol=0.0)
    with pytest.raises(ValueError, match="trace|Trace"):
        TimeVaryingCNF(feature_dim=2, hidden_size=4, trace="exactish")


# ---------------------------------------------------------------------- the fast paths (forward-mode traces, flat
# Jump CNF, RK4 hidden state in training): each equals the slow path it replaces
@pytest.mark.parametrize("attentive", [False, True])
@pytest.mark.parametrize("trace", [Trace.EXACT, Trace.RADEMACHER])
def test_forward_mode_trace_equals_the_autograd_trace(attentive: bool, trace: Trace):
    """The drifts' hand-written forward-mode derivatives give the autograd trace (exact, and Hutchinson's with the
    same noise), and the same flow, to rounding."""
    from tpp.spatial.cnf import _AttentiveDrift, _PlainDrift

    torch.manual_seed(0)
    B, R, D = 2, 4, 2
    drift = (_AttentiveDrift(D, 3, (8, 8), 8) if attentive else _PlainDrift(D, 3, (8, 8))).double()
    with torch.no_grad():
        for p in drift.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    u = torch.tensor([[0.1, 0.5, 0.5, 1.2], [0.3, 0.4, 2.0, 2.5]], dtype=torch.float64)
    allowed = (u[:, None, :] < u[:, :, None]) & ~torch.eye(R, dtype=torch.bool)
    context = (B, R, R, allowed) if attentive else None
    x = torch.randn(B * R, D, dtype=torch.float64)
    cond = torch.randn(B * R, 3, dtype=torch.float64)
    t0, t1 = u.reshape(-1) * 0.5, torch.zeros(B * R, dtype=torch.float64)
    out = {}
    for jacobian in ("forward", "autograd"):
        with torch.no_grad():
            out[jacobian] = solve_flow(drift, x, t0, t1, cond, trace=trace, rtol=1e-7, atol=1e-7, context=context,
                                       generator=torch.Generator().manual_seed(3), jacobian=jacobian)
    assert torch.allclose(out["forward"][0], out["autograd"][0], atol=1e-10)
    assert torch.allclose(out["forward"][1], out["autograd"][1], atol=1e-9)
    if attentive:
        return  # the attentive drift's gradients: the next test (the autograd path cuts some of them)
    # and the gradients the training objective sends back through it
    grads = {}
    for jacobian in ("forward", "autograd"):
        drift.zero_grad()
        z, delta = solve_flow(drift, x, t0, t1, cond, trace=trace, rtol=1e-7, atol=1e-7, context=context,
                              generator=torch.Generator().manual_seed(3), jacobian=jacobian)
        (delta.sum() + z.square().sum()).backward()
        grads[jacobian] = torch.cat([p.grad.reshape(-1) for p in drift.parameters() if p.grad is not None])
    assert torch.allclose(grads["forward"], grads["autograd"], rtol=1e-6, atol=1e-8)


def test_attentive_forward_mode_trace_has_the_exact_gradient():
    """The attentive drift's forward-mode trace of each row's own block, differentiated, equals the derivative of
    the blocks of the full Jacobian (with respect to the parameters and to every row's state, the other rows'
    keys included: the autograd ``self_only`` path cuts that last part, as the reference code does)."""
    drift, t, x, cond = _causal_attentive_drift()
    R, D = x.shape
    params = [x, *drift.parameters()]
    _, div = drift.forward_with_trace(t, x, cond, None)
    fast = torch.autograd.grad(div.sum(), params, allow_unused=True)
    jac = torch.autograd.functional.jacobian(lambda x_: drift(t, x_, cond), x, create_graph=True)  # [R, D, R, D]
    blocks = torch.stack([torch.diagonal(jac[i, :, i, :]).sum() for i in range(R)])
    assert torch.allclose(div, blocks, atol=1e-12)
    slow = torch.autograd.grad(blocks.sum(), params, allow_unused=True)
    for a, b in zip(fast, slow):
        if a is None or b is None:
            assert (a is None or not bool(a.abs().sum() > 0)) and (b is None or not bool(b.abs().sum() > 0))
        else:
            assert torch.allclose(a, b, atol=1e-10)


def test_jump_cnf_flat_pass_equals_the_per_event_queries_on_ragged_ties():
    """The Jump CNF's flattened pass (padding dropped, events ordered latest first) gives each event the density
    that a query at its time answers, on sequences of different lengths with a tie."""
    times = [np.array([0.5, 1.0, 1.0, 2.5, 3.0]), np.array([0.2, 1.7])]
    rng = np.random.default_rng(4)
    feats = [rng.normal(size=(len(t), 2)) for t in times]
    data = EventBatch.from_sequences(times, t_end=4.0, features=feats, feature_names=["lon", "lat"])
    model = _model(JumpCNF, data, rtol=1e-7, atol=1e-7, scale=0.1)
    with torch.no_grad():
        enc = model._encode(data)
        flat = model._space_events(enc)
        for b in range(2):
            for n in range(int(data.mask[b].sum())):
                sub = data[torch.tensor([b])]
                own = model.spatial_log_density(sub, sub.time[:, n], sub.features[:, n])[0, 0]
                assert abs(float(flat[b, n] - (own + model._log_scale()))) < 1e-4, (b, n)  # solver tolerance
        assert torch.all(flat[~data.mask] == 0)


def test_rk4_hidden_state_in_training_matches_the_adaptive_solve():
    """``train_time_step``: the hidden-state ODE by RK4 in training (faster) gives the adaptive solve's time
    log-likelihood to within 1e-3 nats per event; evaluation (``eval()``) stays adaptive."""
    data = _data(3, seed=5)
    fast = _model(TimeVaryingCNF, data, scale=0.3, rtol=1e-8, atol=1e-8, train_time_step=0.5)
    slow = _model(TimeVaryingCNF, data, scale=0.3, rtol=1e-8, atol=1e-8, train_time_step=None)
    n = data.num_events
    with torch.no_grad():
        t_fast = fast.train().log_likelihood_split(data)[0].sum() / n
        t_slow = slow.train().log_likelihood_split(data)[0].sum() / n
        t_eval = fast.eval().log_likelihood_split(data)[0].sum() / n
    assert abs(float(t_fast - t_slow)) < 1e-3 and float(t_fast) != float(t_slow)
    assert abs(float(t_eval - t_slow)) < 1e-6  # evaluation: the adaptive solve
    assert fast._hidden_solver(torch.zeros(1), torch.ones(1))["method"] == "dopri5"  # eval mode
    with pytest.raises(ValueError, match="train_time_step"):
        TimeVaryingCNF(feature_dim=2, hidden_size=4, train_time_step=0.0)


def test_rk4_flows_in_training_match_the_adaptive_solve():
    """``train_flow_step``: the Jump CNF's flows by RK4 in training give the adaptive space log-likelihood (exact
    trace both) to within 1e-3 nats per event; evaluation stays adaptive."""
    data = _data(2, seed=6)
    kw = dict(scale=0.1, rtol=1e-8, atol=1e-8, trace="exact")
    fast = _model(JumpCNF, data, train_flow_step=0.25, **kw)
    slow = _model(JumpCNF, data, **kw)
    n = data.num_events
    with torch.no_grad():
        s_fast = fast.train().log_likelihood_split(data)[1].sum() / n
        s_slow = slow.train().log_likelihood_split(data)[1].sum() / n
        s_eval = fast.eval().log_likelihood_split(data)[1].sum() / n
    assert abs(float(s_fast - s_slow)) < 1e-3 and float(s_fast) != float(s_slow)
    assert abs(float(s_eval - s_slow)) < 1e-6


def test_density_map_and_events_map_return_figures():
    """tpp.spatial.plots: one panel per query time (the density on the grid, the events before it), and the
    catalogue map with magnitudes; bad arguments are refused."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from tpp.spatial.plots import plot_events_map, plot_spatial_density

    data = _data(2)
    model = _model(TimeVaryingCNF, data, scale=0.1, rtol=1e-3, atol=1e-3)
    fig = plot_spatial_density(model, data, [0.5, 3.9], sequence=1, grid=6)
    assert isinstance(fig, Figure) and len([a for a in fig.axes if a.collections]) >= 2
    assert not model.training  # left as it was (eval)
    plt.close(fig)
    with pytest.raises(ValueError, match="sequence 5"):
        plot_spatial_density(model, data, [1.0], sequence=5)
    mags = [np.abs(f[:, 0]) + 2.0 for f in (data.features[b][data.mask[b]].numpy() for b in range(2))]
    quake = EventBatch.from_sequences(
        [data.time[b][data.mask[b]].numpy() for b in range(2)], t_end=4.0,
        features=[np.column_stack([data.features[b][data.mask[b]].numpy(), m]) for b, m in enumerate(mags)],
        feature_names=["lon", "lat", "magnitude"])
    fig = plot_events_map(quake)
    assert isinstance(fig, Figure) and fig.axes[0].get_xlabel() == "lon" and fig.axes[1].get_ylabel() == "magnitude"
    plt.close(fig)
    fig = plot_events_map(data, sequence=0)
    assert fig.axes[1].get_ylabel() == "events so far"
    plt.close(fig)


# ---------------------------------------------------------------------- the flows' RNODE penalty (flow_penalty)
class _ScaledIdentity(_Linear):
    """``f = a x`` with its forward-mode trace: along it ``x(s) = exp(c s) x0`` (``c = a (t1 - t0)``), so the kinetic
    energy ``int ||dx/ds||^2 ds = c ||x0||^2 (exp(2 c) - 1) / 2`` and ``||J e||^2 = c^2 ||e||^2``."""

    def forward_with_trace(self, t, x, cond, noise, return_jv=False):
        a = self.A[0, 0]
        if noise is None:  # the exact trace: J applied to the basis
            jv = (a * torch.eye(x.shape[1], dtype=x.dtype)).expand(x.shape[0], -1, -1)
            out = (a * x, jv.diagonal(dim1=1, dim2=2).sum(-1))
        else:
            jv = a * noise[:, None, :]
            out = (a * x, (noise * jv[:, 0]).sum(-1))
        return (*out, jv) if return_jv else out


@pytest.mark.parametrize("trace", [Trace.RADEMACHER, Trace.GAUSSIAN])
def test_flow_penalty_equals_the_closed_form_energy_and_jacobian_norm(trace: Trace):
    a = 0.4
    x = torch.tensor([[1.0, 2.0], [-0.5, 0.25], [3.0, -1.0]], dtype=torch.float64)
    t0 = torch.tensor([3.0, 1.0, 2.5], dtype=torch.float64)
    t1 = torch.tensor([0.5, 0.0, 2.5], dtype=torch.float64)  # the last row does not move: not in the mean
    drift = _ScaledIdentity(torch.eye(2, dtype=torch.float64) * a)
    sink: list = []
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        z, delta = solve_flow(drift, x, t0, t1, x.new_zeros(3, 0), trace=trace, rtol=1e-10, atol=1e-10,
                              generator=gen, penalty=sink)
        e = solve_flow.__globals__["_noise"](x, trace, torch.Generator().manual_seed(3))
    c = a * (t1 - t0)
    energy = c * (x * x).sum(-1) * torch.expm1(2 * c) / 2
    jacnorm = c * c * (e * e).sum(-1)
    expected = (energy + jacnorm)[:2].mean()
    assert len(sink) == 1 and torch.allclose(sink[0], expected, rtol=1e-7)
    assert torch.allclose(z, x * torch.exp(c)[:, None], atol=1e-7)  # the penalty columns leave the flow alone
    assert torch.allclose(delta, a * (e * e).sum(-1) * (t1 - t0), atol=1e-7)  # Hutchinson's e^T J e, integrated
    with torch.no_grad():  # no sink without a Hutchinson trace (evaluation): nothing appended
        solve_flow(drift, x, t0, t1, x.new_zeros(3, 0), trace=Trace.EXACT, rtol=1e-8, atol=1e-8, penalty=sink)
    assert len(sink) == 1


@pytest.mark.parametrize("cls", MODELS)
def test_flow_penalty_lowers_only_the_training_objective(cls):
    data = _data()
    plain, penalised = _model(cls, data, scale=0.1), _model(cls, data, scale=0.1, flow_penalty=0.5)
    from tpp.table import constructor_args

    assert constructor_args(penalised)["flow_penalty"] == 0.5  # saved with the model
    with torch.no_grad():  # evaluation: identical likelihoods, the penalty is a training device only
        assert torch.allclose(plain.log_likelihood(data), penalised.log_likelihood(data))
    penalised.train()
    objective = penalised.objective(data)
    assert (objective < penalised.log_likelihood(data).detach() + 1.0).all()  # lower by a positive penalty
    objective.sum().backward()
    assert penalised._penalties is None
    with pytest.raises(ValueError, match="flow_penalty"):
        cls(**SMALL, flow_penalty=-1.0)


@pytest.mark.parametrize("flow_penalty", [0.0, 0.5])
def test_jump_cnf_checkpointed_training_has_the_kept_graphs_gradient(flow_penalty: float):
    """A large batch recomputes each interval's solve in the backward pass (``checkpoint_above``): the same
    objective and the same gradient as keeping every graph, Hutchinson noise and flow penalty included."""
    data = _data(num=5, seed=3)
    grads, objectives = [], []
    for above in (10**9, 0):  # never checkpoint, always checkpoint
        model = _model(JumpCNF, data, scale=0.2, flow_penalty=flow_penalty)
        model.checkpoint_above = above
        model.train()
        torch.manual_seed(11)  # the same Hutchinson noise on both sides
        objective = model.objective(data)
        objective.sum().backward()
        objectives.append(objective.detach())
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(objectives[0], objectives[1], rtol=1e-12, atol=1e-12)
    assert grads[0].shape == grads[1].shape and grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], rtol=1e-9, atol=1e-12)


def test_jump_cnf_trains_space_on_a_weighted_subsample_of_events():
    """``train_space_events=m``: in training each sequence scores ``min(m, L)`` of its events, each with its own
    log-density (the whole history's jumps applied) times ``L / min(m, L)``; each event is drawn with probability
    ``m / L`` (so the weighted sum is unbiased); evaluation scores every event; other CNFs refuse the option."""
    rng = np.random.default_rng(4)
    times = [np.sort(rng.uniform(0, 4, n)) for n in (7, 3, 5)]
    data = EventBatch.from_sequences(times, t_end=4.0, features=[rng.normal(size=(len(t), 2)) for t in times],
                                     feature_names=["lon", "lat"])
    full = _model(JumpCNF, data, trace="exact", rtol=1e-10, atol=1e-10).train()
    sub = _model(JumpCNF, data, trace="exact", rtol=1e-10, atol=1e-10, train_space_events=4).train()
    enc = full._encode(data).for_flows()
    every = full._space_events(enc).detach()
    torch.manual_seed(0)
    some = sub._space_events(sub._encode(data).for_flows()).detach()
    chosen = some != 0
    assert chosen.sum(1).tolist() == [4, 3, 4]
    weight = torch.tensor([7 / 4, 1.0, 5 / 4], dtype=every.dtype)[:, None].expand_as(every)
    torch.testing.assert_close(some[chosen], (every * weight)[chosen], rtol=1e-7, atol=1e-7)
    draws = torch.stack([sub._space_subsample(data.mask)[0] for _ in range(3000)]).double().mean(0)
    expected = torch.tensor([[4 / 7] * 7, [1.0] * 3 + [0.0] * 4, [4 / 5] * 5 + [0.0] * 2], dtype=torch.float64)
    assert float((draws - expected).abs().max()) < 0.04
    sub.eval()
    with torch.no_grad():
        torch.testing.assert_close(sub.log_likelihood_split(data)[1], full.eval().log_likelihood_split(data)[1])
    with pytest.raises(ValueError, match="Jump CNF"):
        TimeVaryingCNF(**SMALL, train_space_events=4)
    with pytest.raises(ValueError, match="positive integer"):
        JumpCNF(**SMALL, train_space_events=0)


def test_jump_cnf_checkpoints_by_its_graphs_estimated_bytes():
    """The checkpoint threshold is a memory budget: a float32 network's graph is half a float64 one's, so twice
    as many particle-intervals fit; an explicit ``checkpoint_above`` overrides the estimate."""
    wide, narrow = JumpCNF(feature_dim=2, hidden_size=4, dtype="float32"), JumpCNF(feature_dim=2, hidden_size=4)
    assert abs(wide._checkpoint_threshold() - 2 * narrow._checkpoint_threshold()) <= 1
    assert narrow._checkpoint_threshold() * narrow.graph_bytes_per_particle_interval * 8 <= narrow.checkpoint_bytes
    narrow.checkpoint_above = 7
    assert narrow._checkpoint_threshold() == 7


@pytest.mark.parametrize("bounded", [True, False])
def test_hidden_state_drift_is_bounded_or_free_as_asked(bounded: bool):
    from tpp.spatial._flows import HiddenODE, solve_hidden

    ode = HiddenODE(3, 8, bounded=bounded).double()
    with torch.no_grad():  # dh/dt = c (free) or tanh(c) (bounded), a constant: h(t) = h0 + rate t
        ode.dynamics[-1].bias.copy_(torch.tensor([2.0, -0.5, 0.0], dtype=torch.float64))
    h0 = torch.zeros(2, 3, dtype=torch.float64)
    t0, t1 = torch.tensor([0.0, 1.0], dtype=torch.float64), torch.tensor([0.5, 3.0], dtype=torch.float64)
    h, _ = solve_hidden(ode, h0, t0, t1, rtol=1e-9, atol=1e-9)
    c = ode.dynamics[-1].bias
    rate = torch.tanh(c) if bounded else c
    assert torch.allclose(h, (t1 - t0)[:, None] * rate, atol=1e-8)
    with pytest.raises(ValueError, match="hidden_dynamics"):
        TimeVaryingCNF(feature_dim=2, hidden_size=4, hidden_dynamics="stiff")


def test_a_state_saved_before_hidden_dynamics_loads_bounded(tmp_path):
    """Both drifts have the same tensors: a file written before the choice existed (bounded then) must not load as
    the new default (free), and a re-save records what it loaded as."""
    import json

    from tpp import table

    data = _data()
    model = _model(JumpCNF, data, hidden_dynamics="bounded", rtol=1e-6, atol=1e-6)
    assert JumpCNF(**SMALL).hidden_dynamics == "free"  # the default is not what such files hold
    payload = torch.load(table.save(model, tmp_path / "new.pt"), weights_only=True)
    args = json.loads(payload["args"])
    payload["args"] = json.dumps({k: v for k, v in args.items() if k not in ("hidden_dynamics", "flow_penalty")})
    payload["state_dict"] = {k: v for k, v in payload["state_dict"].items() if k != "free_hidden"}
    torch.save(payload, tmp_path / "old.pt")
    loaded = table.load(tmp_path / "old.pt")
    assert loaded.hidden_dynamics == "bounded" and loaded.hidden_ode.bounded
    with torch.no_grad():
        assert torch.equal(loaded.log_likelihood(data), model.log_likelihood(data))
    resaved = table.load(table.save(loaded, tmp_path / "resaved.pt"))
    assert resaved.hidden_dynamics == "bounded" and resaved.hidden_ode.bounded
    free = _model(JumpCNF, data, rtol=1e-6, atol=1e-6)  # and a free model round-trips as free
    again = table.load(table.save(free, tmp_path / "free.pt"))
    assert again.hidden_dynamics == "free" and not again.hidden_ode.bounded


@pytest.mark.parametrize("cls", MODELS)
def test_time_log_likelihood_is_the_time_part_of_the_split(cls):
    data = _data()
    model = _model(cls, data, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(model.time_log_likelihood(data), model.log_likelihood_split(data)[0])


def test_jump_cnf_draws_stay_within_the_sample_bound():
    """A drift that carries draws 1e6 standardised units per flow unit over a 150-event history: draws stay
    finite, confined to SAMPLE_BOUND training scales (a flow that is expansive off the data once stopped the
    solver on overflowing draws)."""
    from tpp.spatial.cnf import SAMPLE_BOUND

    n = 150
    history = EventBatch.from_sequences([np.linspace(0.1, 30.0, n)], t_end=31.0,
                                        features=[np.random.default_rng(0).normal(size=(n, 2))],
                                        feature_names=["lon", "lat"])
    model = JumpCNF(**SMALL).initialise(history).eval()
    with torch.no_grad():
        model.space_drift.net.layers[-1].linear.bias.fill_(1e6)
    draws = model.sample_locations(history, torch.tensor([30.5]), num=8, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(draws).all()
    standard = model.scaler.standardise(draws)
    assert (standard.abs() <= SAMPLE_BOUND * (1 + 1e-12)).all() and (standard.abs() > 0.9 * SAMPLE_BOUND).any()
    assert torch.isfinite(model.expected_location(history, torch.tensor([30.5]))).all()


def test_radial_jumps_have_the_jacobians_log_determinant_and_an_exact_inverse():
    """The Jump CNF's jump (four radial flows from a hypernetwork): its log-determinant equals the autograd
    Jacobian's, its inverse undoes it (contracting and expanding flows, points on and far from the centres),
    and it is local: far from the event it neither moves a point nor changes its density."""
    from tpp.spatial.cnf import _RadialJumps

    torch.manual_seed(0)
    jumps = _RadialJumps(2, 2 + 3, 16).double()
    with torch.no_grad():
        bias = jumps.net[-1].bias.view(4, 4)
        bias[:, :2] = torch.randn(4, 2) * 0.3  # centres near the event
        bias[:, 2] = 6.0 + math.log(0.5)  # alpha = 0.5
        bias[:, 3] = torch.tensor([-12.0, 1.5, -0.8, 8.0])  # log g(0) from -3 (contracting) to ~ +3
    event = torch.tensor([0.4, -0.2], dtype=torch.float64)
    x = torch.cat([torch.randn(40, 2, dtype=torch.float64) * 0.7 + event, event[None], event[None] + 1e-9])
    cond = torch.cat([event.expand(len(x), 2), torch.randn(1, 3, dtype=torch.float64).expand(len(x), 3)], -1)
    c = jumps._params(cond)[2].detach()
    assert c.min() < -2.5 and c.max() > 2.5
    y, logdet = (v.detach() for v in jumps(x, cond))
    for i in range(len(x) - 1):  # the last row sits 1e-9 from the event: its Jacobian is fine, autograd's too
        jac = torch.autograd.functional.jacobian(lambda v: jumps(v[None], cond[i:i + 1])[0][0], x[i])
        assert abs(float(torch.linalg.slogdet(jac)[1]) - float(logdet[i])) < 1e-9, i
    assert torch.allclose(jumps.inverse(y, cond), x, atol=1e-10)
    far = event + torch.tensor([[100.0, 0.0], [0.0, -100.0]], dtype=torch.float64)  # 200 widths away
    y_far, logdet_far = jumps(far, cond[:2])
    assert (y_far - far).abs().max() < 0.1 and logdet_far.abs().max() < 1e-2
    huge = cond.clone()
    huge[:, 2:] = 1e3  # a hidden state the hypernetwork never saw: the jump stays bounded
    moved, logdet_huge = (v.detach() for v in jumps(x, huge))
    assert ((moved - x).norm(dim=-1) <= 4 * math.expm1(jumps.max_log_ratio) / 4 + 1e-9).all()
    assert (logdet_huge.abs() <= 4 * 2 * jumps.max_log_ratio + 1e-9).all()


@pytest.mark.parametrize("cls", MODELS)
def test_sampled_locations_follow_the_spatial_density(cls):
    """Draws (base Gaussian, the flow run forwards) against the density (the flow run backwards) at the same time
    and history: each coordinate's empirical distribution against the density's marginal by quadrature (KS), and
    the sample mean against the quadrature mean."""
    import scipy.stats

    data = _data(1, seed=4)
    model = _model(cls, data, scale=0.15, rtol=1e-7, atol=1e-7)
    t = data.time[:, -1] + 0.4
    n_draws, n_grid = 1500, 160  # fine enough for the Jump CNF's radial bumps (quadrature error < 2e-3)
    draws = model.sample_locations(data, t, n_draws, torch.Generator().manual_seed(5))[0]
    mean, scale = model.scaler.mean, model.scaler.scale
    grids = [torch.linspace(float(mean[d] - 8 * scale[d]), float(mean[d] + 8 * scale[d]), n_grid,
                            dtype=torch.float64) for d in range(2)]
    gx, gy = torch.meshgrid(*grids, indexing="ij")
    with torch.no_grad():
        dens = model.spatial_density(data, t, torch.stack([gx.reshape(-1), gy.reshape(-1)], -1))[0]
    dens = dens.reshape(n_grid, n_grid)
    cell = [float(g[1] - g[0]) for g in grids]
    assert abs(float(dens.sum()) * cell[0] * cell[1] - 1) < 2e-3
    for d in range(2):
        marginal = (dens.sum(1 - d) * cell[1 - d]).numpy()
        edges = grids[d].numpy() + cell[d] / 2  # the midpoint rule's cells: mass up to each cell's upper edge
        cdf = np.concatenate([[0.0], np.cumsum(marginal) * cell[d]])
        cdf /= cdf[-1]
        knots = np.concatenate([[edges[0] - cell[d]], edges])
        ks = scipy.stats.kstest(draws[:, d].numpy(), lambda v: np.interp(v, knots, cdf))
        assert ks.pvalue > 1e-3, (d, ks)
        quad_mean = float((marginal * grids[d].numpy()).sum() * cell[d])
        sd = float(draws[:, d].std())
        assert abs(float(draws[:, d].mean()) - quad_mean) < 4 * sd / math.sqrt(n_draws)


def test_a_diverging_flow_gives_nan_with_a_warning_not_the_solvers_assertion():
    """A learned map that leaves the floating-point range: the solve returns NaN (the trainer's non-finite policy
    then names the batch or skips it) instead of torchdiffeq's assertion from inside its stepper."""
    x = torch.tensor([[1.0, 2.0], [-0.5, 0.25]], dtype=torch.float64) * 1e300
    fast = _Linear(torch.eye(2, dtype=torch.float64) * 50.0)  # 1e300 e^50 overflows float64
    with pytest.warns(RuntimeWarning, match="diverged"), torch.no_grad():
        z, delta = solve_flow(fast, x, torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64),
                              x.new_zeros(2, 0), trace=Trace.EXACT, rtol=1e-6, atol=1e-6)
    assert torch.isnan(z).all() and torch.isnan(delta).all()
    n = 6  # a drift of 1e308: the density path's state overflows in the first step
    history = EventBatch.from_sequences([np.linspace(0.1, 3.0, n)], t_end=3.5,
                                        features=[np.random.default_rng(0).normal(size=(n, 2))],
                                        feature_names=["lon", "lat"])
    model = JumpCNF(**SMALL).initialise(history)
    with torch.no_grad():
        model.space_drift.net.layers[-1].linear.bias.fill_(1e308)
    with pytest.warns(RuntimeWarning, match="diverged"), torch.no_grad():
        time, space = model.eval().log_likelihood_split(history)
    assert torch.isfinite(time).all() and torch.isnan(space).all()  # the time part has no flow in it


def test_jump_cnf_starts_its_jumps_on_the_events_at_the_datas_nearest_neighbour_scales():
    """``initialise``: every jump flow centred on its event, flow ``i``'s width the ``jump_scale_quantiles[i]``
    quantile of the distances (standardised) from an event to its nearest earlier one, whatever the state; the
    reference's start (``jump_scale_quantiles=None``, the default) keeps widths near ``e^-6``."""
    rng = np.random.default_rng(3)
    times, feats = [], []
    for n in (30, 45, 12):
        times.append(np.sort(rng.uniform(0, 20, n)))
        feats.append(np.cumsum(rng.normal(size=(n, 2)) * rng.uniform(0.01, 2.0, (n, 1)), 0) + [140.0, 35.0])
    data = EventBatch.from_sequences(times, t_end=20.0, features=feats, feature_names=["lon", "lat"])
    torch.manual_seed(0)
    model = JumpCNF(**SMALL)
    model.jump_scale_quantiles = (0.2, 0.4, 0.6, 0.8)
    model.initialise(data)
    # brute force, in the model's standardised units
    nearest = []
    for f in feats:
        y = model.scaler.standardise(torch.as_tensor(f)).numpy()
        nearest += [min(np.linalg.norm(y[j] - y[i]) for i in range(j)) for j in range(1, len(y))]
    expected = np.quantile(nearest, model.jump_scale_quantiles)
    assert expected[0] > 1e-3 and expected[-1] < 0.5  # inside the clamp, so the check is exact
    cond = torch.randn(7, 2 + SMALL["hidden_size"], dtype=torch.float64)
    z0, alpha, _ = (v.detach() for v in model.jumps._params(cond))
    assert torch.allclose(z0, cond[:, None, :2].expand_as(z0), atol=0)
    assert np.allclose(alpha[..., 0].numpy(), expected[None, :], rtol=1e-9)
    reference = JumpCNF(**SMALL)  # the default: the reference's start
    alpha_ref = reference.initialise(data).jumps._params(cond)[1].detach()
    assert (alpha_ref < 0.01).all()


def test_a_jump_cnf_saved_with_coupling_jumps_is_refused_in_our_words():
    """States saved before the radial jumps carry the couplings' masks: one clear error, not torch's key lists."""
    data = _data()
    model = JumpCNF(**SMALL).initialise(data)
    old = {k: v for k, v in model.state_dict().items() if not k.startswith("jumps.")}
    old["jumps.masks"] = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="affine-coupling jumps.*fit the model again"):
        JumpCNF(**SMALL).initialise(data).load_state_dict(old)
