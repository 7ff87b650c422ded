"""Neural STPP flows' time unit (issue 16, the earthquakes_japan gap to seahorse-stpp): the CNFs integrate the
space density over the window in flow units, so a window with many events must not stretch that span. With the
temporal model's unit (the mean gap) a 30-day earthquake window was ~88 units and 8 training steps took the
attentive CNF's test space log-likelihood below its start (benchmarks/results/stpp_peer_eq.md). Small nets,
float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tpp.events import EventBatch
from tpp.spatial.cnf import AttentiveCNF, JumpCNF, TimeVaryingCNF

SMALL = {"feature_dim": 2, "hidden_size": 4, "flow_hidden": (8, 8)}
MODELS = [TimeVaryingCNF, JumpCNF, AttentiveCNF]


def _dense(events_per_window: int, num: int = 2, t_end: float = 30.0, seed: int = 0) -> EventBatch:
    """``num`` windows ``[0, t_end]`` with ``events_per_window`` uniform events each and Gaussian locations."""
    rng = np.random.default_rng(seed)
    times = [np.sort(rng.uniform(0, t_end, events_per_window)) for _ in range(num)]
    feats = [rng.normal(size=(events_per_window, 2)) * 5.0 + [140.0, 35.0] for _ in range(num)]
    return EventBatch.from_sequences(times, t_end=t_end, features=feats, feature_names=["lon", "lat"])


@pytest.mark.parametrize("cls", MODELS)
def test_flow_time_span_stays_bounded_however_many_events_a_window_holds(cls):
    """90 and 300 events in a 30-unit window: the temporal unit follows the gap, the flows' unit does not (their
    span is 30 units in both), so the flows see the same time axis."""
    a = cls(**SMALL).initialise(_dense(90))
    b = cls(**SMALL).initialise(_dense(300))
    assert float(a.time_scale) == pytest.approx(30 / 91, rel=0.2) and float(b.time_scale) < float(a.time_scale) / 2
    assert float(a.flow_time_scale) == pytest.approx(1.0) and float(b.flow_time_scale) == pytest.approx(1.0)
    data = _dense(300)
    assert float(b._flow_times(data, data.time)[data.mask].max()) <= 30.0 + 1e-9
    assert float(b._model_times(data, data.time)[data.mask].max()) > 250.0  # the temporal model keeps its own unit


def test_sparse_windows_keep_the_mean_gap_unit_and_flow_span_none_always_does():
    """A window with fewer than ``flow_span`` mean gaps keeps the old unit; ``flow_span=None`` never bounds it."""
    sparse = JumpCNF(**SMALL).initialise(_dense(10))
    assert float(sparse.flow_time_scale) == float(sparse.time_scale)
    unbounded = JumpCNF(**SMALL, flow_span=None).initialise(_dense(300))
    assert float(unbounded.flow_time_scale) == float(unbounded.time_scale)
    with pytest.raises(ValueError, match="flow_span"):
        JumpCNF(**SMALL, flow_span=0.0)


def test_space_likelihood_uses_the_flow_unit_and_is_invariant_to_the_clock():
    """The space part is the one for flows on the bounded axis (a model given the same weights with the flows in the
    mean-gap unit scores differently on a dense window), and rescaling time by c leaves it unchanged."""
    data = _dense(45, num=1, seed=3)
    fast = {**SMALL, "time_step": 3.0}  # RK4 for the hidden state: the flows are what is checked
    torch.manual_seed(0)
    model = AttentiveCNF(**fast).initialise(data)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    model.eval()
    other = AttentiveCNF(**fast, flow_span=None)
    other.load_state_dict(model.state_dict())
    other.flow_time_scale.copy_(other.time_scale)
    other.eval()
    c = 24.0
    clock = data._replace(time=data.time * c, t_start=data.t_start * c, t_end=data.t_end * c)
    scaled = AttentiveCNF(**fast).initialise(clock)
    scaled.load_state_dict({**model.state_dict(), "time_scale": model.time_scale * c,
                            "flow_time_scale": model.flow_time_scale * c})
    scaled.eval()
    with torch.no_grad():
        space = model.log_likelihood_split(data)[1]
        space_gap_unit = other.log_likelihood_split(data)[1]
        space_clock = scaled.log_likelihood_split(clock)[1]
    assert not torch.allclose(space, space_gap_unit, atol=1e-3)
    assert torch.allclose(space, space_clock, atol=1e-6)


def test_state_dicts_from_before_the_flow_unit_keep_the_model_unit():
    """A state saved without ``flow_time_scale`` ran its flows in the model unit: loading keeps that."""
    model = JumpCNF(**SMALL).initialise(_dense(300))
    state = model.state_dict()
    del state["flow_time_scale"]
    fresh = JumpCNF(**SMALL)
    fresh.load_state_dict(state)
    assert float(fresh.flow_time_scale) == float(model.time_scale) != float(model.flow_time_scale)
