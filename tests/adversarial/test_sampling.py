"""Samplers with budgets: every ``sample`` refuses a bad count or horizon before simulating anything,
and a simulation that would run without bound (a long horizon for a neural model, an explosive Hawkes
process) stops at its documented ``max_events`` with a :class:`SamplingBudgetError` saying how far it got
(events simulated, time reached) and how to raise the cap."""

import inspect
import math
import time

import numpy as np
import pytest
import torch

import tpp.sampling
from tpp.events import EventBatch
from tpp.hawkes import ExpHawkes, FaDInHawkes, NonparametricHawkes, Poisson, SumExpHawkes
from tpp.neural import NHP, RMTPP, SAHP, THP, AttNHP, FullyNN, IntensityFree
from tpp.process import SamplingBudgetError, check_sample_arguments
from tpp.sampling import thinning_sample

NEURAL = [RMTPP, NHP, THP, SAHP, AttNHP, FullyNN, IntensityFree]


def _classic() -> dict[str, object]:
    """One stationary model of each classic family (branching ratio 0.3)."""
    return {
        "Poisson": Poisson.from_params([0.5, 0.2]),
        "ExpHawkes": ExpHawkes.from_params([0.5], [[0.3]], 1.0),
        "SumExpHawkes": SumExpHawkes.from_params([0.5], [[[0.1, 0.2]]], [1.0, 3.0]),
        "FaDInHawkes": FaDInHawkes.from_params([0.5], [[0.3]], "truncated-exponential", 3.0, {"decay": [[2.0]]}),
        "NonparametricHawkes": NonparametricHawkes.from_params([0.5], [[[0.1, 0.1, 0.05, 0.05]]], 2.0),
    }


def _models() -> dict[str, object]:
    torch.manual_seed(0)
    return {**_classic(), **{cls.__name__: cls(2, 8) for cls in NEURAL}}


MODELS = _models()


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("n", [0, -1, 2.5, True, "3", None])
def test_every_sampler_refuses_a_count_that_is_not_a_positive_integer(name, n):
    with pytest.raises((ValueError, TypeError), match=r"\bn\b"):
        MODELS[name].sample(n, 5.0, generator=0)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("t_end", [math.nan, math.inf, -math.inf, 0.0, -1.0, "5"])
def test_every_sampler_refuses_a_non_finite_or_empty_horizon_at_once(name, t_end):
    start = time.perf_counter()
    with pytest.raises((ValueError, TypeError), match="t_end"):
        MODELS[name].sample(1, t_end, generator=0)
    assert time.perf_counter() - start < 1.0  # refused before any simulation


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_sampler_refuses_a_non_finite_start_and_a_bad_cap(name):
    with pytest.raises(ValueError, match="t_start"):
        MODELS[name].sample(1, 5.0, generator=0, t_start=math.nan)
    if "max_events" in inspect.signature(MODELS[name].sample).parameters:
        with pytest.raises(ValueError, match="max_events"):
            MODELS[name].sample(1, 5.0, generator=0, max_events=0)


def test_exp_hawkes_nan_horizon_is_refused_before_simulating():
    # it used to simulate 5e7 events (no event time ever passes NaN) before refusing
    model = ExpHawkes.from_params([1.0], [[0.5]], 1.0)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="t_end must be finite"):
        model.sample(1, float("nan"))
    assert time.perf_counter() - start < 0.5


def test_a_continuation_must_not_end_before_its_history():
    model = MODELS["ExpHawkes"]
    history = model.sample(2, 5.0, generator=0)
    with pytest.raises(ValueError, match="before the end"):
        model.sample(2, 4.0, history=history, generator=1)
    with pytest.raises(ValueError, match="n=3 but the history has 2"):
        model.sample(3, 8.0, history=history, generator=1)
    with pytest.raises(TypeError, match="history must be an EventBatch"):
        model.sample(2, 8.0, history=[1, 2], generator=1)
    assert len(model.sample(2, 5.0, history=history, generator=1)) == 2  # the same end: nothing to add


def test_valid_requests_still_sample_and_signatures_are_kept():
    for name, model in MODELS.items():
        batch = model.sample(2, 3.0, generator=0)
        assert isinstance(batch, EventBatch) and len(batch) == 2, name
        assert list(inspect.signature(model.sample).parameters)[:2] == ["n", "t_end"], name
    per_sequence = MODELS["ExpHawkes"].sample(np.int64(2), np.array([3.0, 4.0]), generator=0)
    assert per_sequence.t_end.tolist() == [3.0, 4.0]


def test_thinning_sample_checks_its_arguments_too():
    with pytest.raises(ValueError, match=r"\bn\b"):
        thinning_sample(MODELS["Poisson"], 0, 5.0)
    with pytest.raises(ValueError, match="t_end"):
        thinning_sample(MODELS["Poisson"], 1, math.nan)


@pytest.mark.parametrize("cls", NEURAL, ids=lambda c: c.__name__)
def test_neural_long_horizon_stops_at_max_events_and_says_how_far(cls):
    torch.manual_seed(0)
    model = cls(2, 8)
    start = time.perf_counter()
    with pytest.raises(SamplingBudgetError, match="max_events=30") as caught:
        model.sample(1, t_end=1e7, max_events=30, generator=0)
    assert time.perf_counter() - start < 20
    assert "reached t=" in str(caught.value) and "t_end=1e+07" in str(caught.value)  # how far it got
    assert isinstance(caught.value, RuntimeError) and isinstance(caught.value, ValueError)


def test_thp_default_cap_is_reached(monkeypatch):
    # THP.sample(1, t_end=1e7) ran without bound: each step re-encodes the history, so the old cap of 1e5
    # events over the batch took days to reach. The default cap is now per sequence and reachable.
    monkeypatch.setattr(tpp.sampling, "MAX_EVENTS", 25)
    torch.manual_seed(0)
    with pytest.raises(SamplingBudgetError, match=r"max_events=25 new events.*sequence 0 reached t=[0-9.]+ of t_end=1e\+07"):
        THP(2, 8).sample(1, t_end=1e7, generator=0)


def test_the_cap_counts_new_events_only():
    torch.manual_seed(0)
    model = RMTPP(1, 8)
    history = model.sample(1, 20.0, generator=0)
    assert history.num_events > 5
    continued = model.sample(1, 21.0, history=history, generator=1, max_events=history.num_events)
    assert continued.num_events >= history.num_events


def test_sampling_within_the_cap_is_unchanged():
    model = ExpHawkes.from_params([0.5], [[0.3]], 1.0)
    assert model.sample(3, 50.0, generator=4) == model.sample(3, 50.0, generator=4, max_events=10_000)
    batch = model.sample(1, 50.0, generator=4)
    with pytest.raises(SamplingBudgetError):
        model.sample(1, 50.0, generator=4, max_events=batch.num_events - 1)
    assert model.sample(1, 50.0, generator=4, max_events=batch.num_events) == batch


def _explosive() -> dict[str, object]:
    """Each classic self-exciting family with branching ratio 1.5."""
    return {
        "ExpHawkes": ExpHawkes.from_params([1.0], [[1.5]], 1.0),
        "SumExpHawkes": SumExpHawkes.from_params([1.0], [[[0.5, 1.0]]], [1.0, 3.0]),
        "FaDInHawkes": FaDInHawkes.from_params([1.0], [[1.5]], "truncated-exponential", 3.0, {"decay": [[2.0]]}),
        "NonparametricHawkes": NonparametricHawkes.from_params([1.0], [[[0.75, 0.75, 0.75, 0.75]]], 2.0),  # densities
    }


@pytest.mark.parametrize("name", sorted(_explosive()))
def test_an_explosive_hawkes_process_stops_at_the_cap_with_its_progress(name):
    model = _explosive()[name]
    start = time.perf_counter()
    with pytest.raises(SamplingBudgetError, match="max_events=5000") as caught:
        model.sample(1, 1e3, generator=0, max_events=5000)  # 1e3 immigrants: the children pass the cap
    assert time.perf_counter() - start < 10
    message = str(caught.value)
    assert "explosive" in message and "branching ratio 1.500" in message
    assert "events simulated" in message and "t=" in message and "shorter t_end" in message


def test_poisson_refuses_a_horizon_with_more_expected_events_than_the_cap_before_drawing():
    start = time.perf_counter()
    with pytest.raises(SamplingBudgetError, match="1e\\+12 events expected"):
        Poisson.from_params([1.0]).sample(1, 1e12)
    assert time.perf_counter() - start < 1.0


def test_check_sample_arguments_accepts_numpy_integers_and_per_sequence_ends():
    check_sample_arguments(np.int32(3), np.array([1.0, 2.0, 3.0]))
    check_sample_arguments(2, torch.tensor(4.0), max_events=np.int64(5))
    with pytest.raises(ValueError, match="one per sequence"):
        check_sample_arguments(2, np.array([1.0, 2.0, 3.0]))
    with pytest.raises(TypeError, match="max_events"):
        check_sample_arguments(2, 4.0, max_events=2.5)
