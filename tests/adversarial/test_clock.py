"""Clock and units: absolute timestamps (Unix seconds or milliseconds) against windows that start at 0 fit
without error but wrong, so every fit says so once with an :class:`AbsoluteTimeWarning` naming the fix;
ordinary data (registry sets, simulated Hawkes, relative times) never warns. The classic estimators
validate the trainer options they accept and ignore, by the trainer's own rules."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tpp
from tests.conftest import needs_data
from tpp.clock import AbsoluteTimeWarning, absolute_time_ratio
from tpp.events import EventBatch
from tpp.hawkes import ExpHawkes, FaDInHawkes, NonparametricHawkes, Poisson, SumExpHawkes
from tpp.neural import RMTPP

TRUTH = ExpHawkes.from_params([0.6, 0.4], [[0.3, 0.1], [0.2, 0.3]], 2.0)
UNIX_2026 = 1.767e9  # seconds since 1970 at the start of 2026


@pytest.fixture(scope="module")
def relative() -> EventBatch:
    return TRUTH.sample(6, 40.0, generator=3)


def unix(batch: EventBatch, scale: float = 1.0) -> EventBatch:
    """The same events stamped in Unix time (one sequence a day later than the other), windows from t_start=0."""
    flat = batch.to_flat()
    off = flat["seq_offsets"]
    times = [(UNIX_2026 + 86400.0 * b + flat["times"][off[b]:off[b + 1]]) * scale for b in range(len(batch))]
    marks = [flat["marks"][off[b]:off[b + 1]] for b in range(len(batch))]
    return EventBatch.from_sequences(times, marks, t_start=0.0, num_marks=batch.num_marks)


def absolute_warnings(caught: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in caught if issubclass(w.category, AbsoluteTimeWarning)]


@pytest.mark.parametrize("scale", [1.0, 1e3], ids=["seconds", "milliseconds"])
def test_unix_timestamps_with_window_start_zero_warn_once_for_exp_hawkes(relative, scale):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ExpHawkes(2, decay=2.0).fit(unix(relative, scale), max_iter=5)
    found = absolute_warnings(caught)
    assert len(found) == 1
    message = str(found[0].message)
    assert "ExpHawkes.fit" in message and "t_start" in message and "shift" in message
    assert found[0].filename == __file__  # points at the caller's line, not at the library


@pytest.mark.parametrize("make", [lambda: Poisson(2), lambda: SumExpHawkes(2, decays=[1.0, 3.0]),
                                  lambda: FaDInHawkes(2), lambda: NonparametricHawkes(2, support=1.0, bins=4)],
                         ids=["Poisson", "SumExpHawkes", "FaDInHawkes", "NonparametricHawkes"])
def test_unix_timestamps_warn_for_every_classic_estimator_before_any_work(relative, make):
    # As an error: the warning comes before the estimator's work (FaDIn's grid over [0, 1.7e9] would not fit
    # in memory), and names the estimator.
    model = make()
    with warnings.catch_warnings():
        warnings.simplefilter("error", AbsoluteTimeWarning)
        with pytest.raises(AbsoluteTimeWarning, match=type(model).__name__):
            model.fit(unix(relative))


def test_unix_timestamps_warn_for_the_trainer_on_rmtpp(relative):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tpp.fit(RMTPP(2, 8), unix(relative), epochs=1, batch_size=4, progress=False)
    found = absolute_warnings(caught)
    assert len(found) == 1 and "tpp.fit" in str(found[0].message)


def test_unix_timestamps_warn_for_the_trainer_on_a_parquet_source(relative, tmp_path):
    path = tpp.write_events(unix(relative), tmp_path / "unix.parquet")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tpp.fit(RMTPP(2, 8), tpp.stream.ParquetSource(path), epochs=1, batch_size=4, progress=False)
    assert len(absolute_warnings(caught)) == 1


def test_the_fix_named_in_the_warning_silences_it(relative):
    batch = unix(relative)
    flat = batch.to_flat()
    first = flat["times"][flat["seq_offsets"][:-1]]
    off = flat["seq_offsets"]
    windowed = EventBatch.from_sequences([flat["times"][off[b]:off[b + 1]] for b in range(len(batch))],
                                         [flat["marks"][off[b]:off[b + 1]] for b in range(len(batch))],
                                         t_start=first - 1.0, num_marks=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AbsoluteTimeWarning)
        ExpHawkes(2, decay=2.0).fit(windowed, max_iter=5)


def test_simulated_and_relative_data_do_not_warn(relative):
    late = TRUTH.sample(4, 5000.0, generator=1)  # long windows, a late first event is still ordinary
    with warnings.catch_warnings():
        warnings.simplefilter("error", AbsoluteTimeWarning)
        ExpHawkes(2, decay=2.0).fit(relative, max_iter=5)
        ExpHawkes(2, decay=2.0).fit(late, max_iter=5)
        Poisson(2).fit(relative)
        tpp.fit(RMTPP(2, 8), relative, epochs=1, batch_size=4, progress=False)


def test_the_rule_is_undefined_without_a_time_scale():
    single = EventBatch.from_sequences([np.array([UNIX_2026]), np.array([UNIX_2026 + 5])], [np.zeros(1), np.zeros(1)],
                                       num_marks=1)
    assert absolute_time_ratio(single) is None  # single events: nothing to compare the lead with
    with warnings.catch_warnings():
        warnings.simplefilter("error", AbsoluteTimeWarning)
        Poisson(1).fit(single)


@needs_data
@pytest.mark.parametrize("name", ["taxi", "bookorder", "mimic2", "twitter", "yelp_toronto", "wikipedia",
                                  "earthquakes_japan", "whale_calls", "phuket_earthquakes", "chicago_shootings",
                                  "lifelines_recur", "pubg"])
def test_registry_sets_do_not_warn(name):
    batch = tpp.datasets.load(name, "train")
    assert absolute_time_ratio(batch) < 1.0  # far below the threshold of 100, not just under it
    with warnings.catch_warnings():
        warnings.simplefilter("error", AbsoluteTimeWarning)
        assert not tpp.clock.warn_if_absolute_time(batch, "test")
        if len(np.unique(batch.mark[batch.mask].numpy())) == batch.num_marks:  # else Poisson's MLE is refused
            Poisson(batch.num_marks).fit(batch, epochs=1)


# ----------------------------------------------------------------------------- trainer options of the classics
@pytest.mark.parametrize("options, named", [({"epochs": -1}, "epochs"), ({"batch_size": 0}, "batch_size"),
                                            ({"lr": 0.0}, "lr"), ({"warmup": 2.0}, "warmup"),
                                            ({"seed": -3}, "seed")])
def test_classic_estimators_refuse_bad_trainer_options_by_the_trainers_rules(relative, options, named):
    for model in (ExpHawkes(2), Poisson(2)):
        with pytest.raises(ValueError, match=named):
            model.fit(relative, **options)
    with pytest.raises(ValueError, match=named):  # the same value is refused by the trainer itself
        tpp.fit(RMTPP(2, 8), relative, progress=False, **options)


def test_classic_estimators_refuse_a_non_integer_count_and_a_bad_on_nonfinite(relative):
    with pytest.raises(TypeError, match="epochs"):
        ExpHawkes(2).fit(relative, epochs=2.5)
    with pytest.raises(ValueError, match="sometimes"):
        Poisson(2).fit(relative, on_nonfinite="sometimes")


def test_classic_estimators_still_accept_good_trainer_options(relative):
    model = ExpHawkes(2, decay=2.0).fit(relative, epochs=3, batch_size=8, lr=1e-2, seed=1, progress=False, max_iter=5)
    assert model.fit_result_ is not None
