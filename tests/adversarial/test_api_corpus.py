"""A generated corpus over the public Python API (issue 13): constructors and methods of the Hawkes, Poisson,
neural and sde models, the EventBatch / SeriesBatch constructors, ``tpp.read_events`` on generated tables,
``.npz`` layouts and JSON, ``sde.readers.read_ts`` on generated ``.ts`` texts, ``sample`` / ``fit`` /
``standard_errors`` with odd arguments.

The property, for every generated call: it returns normally, or raises one of our errors (the
:class:`tpp.batch.DataError` family, ``ValueError``, ``TypeError``, :class:`tpp.process.SamplingBudgetError`)
with a message, raised by our own code, not a raw ``IndexError`` / ``RuntimeError`` / ``LinAlgError`` /
``ZeroDivisionError`` (or a ``ValueError`` from deep inside numpy, torch or pandas); and it does so within a
time bound (hypothesis' ``deadline`` plus a whole-test timeout, so a hang fails instead of stalling).

Named tests after the corpus pin what it found, each failing on the code before its fix.
"""

from __future__ import annotations

import json
import math
import traceback
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tpp
from tpp import EventBatch, read_events
from tpp.batch import DataError
from tpp.hawkes import ExpHawkes, FaDInHawkes, NonparametricHawkes, Poisson, SumExpHawkes
from tpp.process import SamplingBudgetError

pytestmark = pytest.mark.timeout(300)

OURS = ("tpp", "sde")  # top-level packages whose frames may raise a ValueError / TypeError
SETTINGS = settings(max_examples=60, deadline=timedelta(seconds=30), derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])
FEW = settings(SETTINGS, max_examples=15)

DATA = ExpHawkes.from_params([0.5, 0.2], [[0.3, 0.1], [0.0, 0.2]], 1.0).sample(3, 20.0, generator=0)

# Odd values for a number argument: wrong types, NaN, infinities, huge, negative, fractional, numpy scalars.
ODD_NUMBER = st.one_of(
    st.integers(-3, 4), st.sampled_from([0.0, 2.5, -1.5, 1e-300, 1e300, 2**40, 2**63, math.nan, math.inf, -math.inf]),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(), st.text(max_size=3),
    st.sampled_from([[1, 2], (), {}, np.float64(2.0), np.int64(2), np.array([1.0, 2.0]), torch.tensor(3.0), 1j]),
)
# Small positive values that are fine: mixed in so that calls also get past the first check.
GOOD_COUNT = st.integers(1, 3)


def _raised_by_us(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is in our packages (not numpy's, torch's, ...)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return True
    here = Path(tpp.__file__).resolve().parent.parent
    innermost = Path(frames[-1].filename).resolve()
    try:
        top = innermost.relative_to(here).parts[0]
    except ValueError:
        return False
    return top in OURS


def outcome(call, *args, **kwargs):
    """Run ``call``; return its value, or None after one of our errors; fail on anything else."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return call(*args, **kwargs)
    except np.linalg.LinAlgError as exc:  # a ValueError subclass, but never ours
        pytest.fail(f"raw LinAlgError from {call!r}{args!r}{kwargs!r}: {exc}")
    except (DataError, SamplingBudgetError) as exc:
        assert str(exc), f"{type(exc).__name__} without a message"
    except (ValueError, TypeError) as exc:
        assert str(exc), f"{type(exc).__name__} without a message"
        assert _raised_by_us(exc), (f"{type(exc).__name__} raised inside a dependency by {call!r}{args!r}"
                                    f"{kwargs!r}: {exc}\n{''.join(traceback.format_tb(exc.__traceback__)[-3:])}")
    return None


# ----------------------------------------------------------------------------------------------- constructors
HAWKES_BUILDERS = {
    "ExpHawkes": lambda a, b, c: ExpHawkes(a, b),
    "SumExpHawkes": lambda a, b, c: SumExpHawkes(a, b if isinstance(b, (list, tuple, np.ndarray)) else [b, c]),
    "FaDInHawkes": lambda a, b, c: FaDInHawkes(a, "truncated-exponential", b, c),
    "FaDInHawkes-kernel": lambda a, b, c: FaDInHawkes(a, b, 1.0, 0.1),
    "NonparametricHawkes": lambda a, b, c: NonparametricHawkes(a, b, c if not isinstance(c, int) or c < 100 else 4),
    "Poisson": lambda a, b, c: Poisson(a),
}


@pytest.mark.parametrize("name", sorted(HAWKES_BUILDERS))
@SETTINGS
@given(k=st.one_of(GOOD_COUNT, ODD_NUMBER), b=st.one_of(st.just(1.0), ODD_NUMBER), c=st.one_of(st.just(0.5), ODD_NUMBER))
def test_hawkes_constructors_accept_or_refuse_in_our_words(name, k, b, c):
    outcome(HAWKES_BUILDERS[name], k, b, c)


NEURAL = ["RMTPP", "NHP", "THP", "SAHP", "AttNHP", "FullyNN", "IntensityFree"]


@pytest.mark.parametrize("name", NEURAL)
@FEW
@given(k=st.one_of(GOOD_COUNT, ODD_NUMBER), hidden=st.one_of(st.integers(1, 8), ODD_NUMBER),
       points=st.one_of(st.just(4), ODD_NUMBER))
def test_neural_constructors_accept_or_refuse_in_our_words(name, k, hidden, points):
    cls = getattr(tpp.neural, name)
    model = outcome(cls, k, hidden, num_points=points)
    if model is not None and k in (1, 2, 3) and isinstance(k, int):  # a model that was built also scores
        data = ExpHawkes.from_params([0.5] * k, np.full((k, k), 0.1), 1.0).sample(2, 5.0, generator=0)
        outcome(model.score, data)


@pytest.mark.parametrize("name", NEURAL)
@pytest.mark.parametrize("k, hidden", [(1, np.int64(2)), (1, np.float64(2.0)), (1, 2.0), (1, 1e300), (2**40, 4),
                                       (1, 2**40)])
def test_neural_constructors_take_numpy_integral_and_huge_sizes_in_our_words(name, k, hidden):
    outcome(getattr(tpp.neural, name), k, hidden)


@pytest.mark.parametrize("name", NEURAL)
def test_neural_constructors_refuse_a_huge_num_points_in_our_words(name):
    outcome(getattr(tpp.neural, name), 1, 4, num_points=1e300)


def test_quadrature_refuses_a_num_points_beyond_the_finest_rule():
    # NHP(1, 1, num_points=1e300).score(...) reached scipy's allocator: "Maximum allowed size exceeded"
    from tpp.compensator import MAX_QUADRATURE_POINTS, gauss_legendre

    a, b = torch.zeros(2), torch.ones(2)
    for bad in (1e300, MAX_QUADRATURE_POINTS + 1, 2.5, 0, math.nan, "4"):
        with pytest.raises(ValueError, match="num_points \\(quadrature nodes per interval\\) must be an integer"):
            gauss_legendre(a, b, bad)
    nodes, weights = gauss_legendre(a, b, 4.0)
    assert nodes.shape == (2, 4) and torch.allclose(weights.sum(-1), torch.ones(2, dtype=weights.dtype))


@pytest.mark.parametrize("name", ["RMTPP", "THP", "IntensityFree"])
@FEW
@given(num_points=st.one_of(st.none(), st.just(4), ODD_NUMBER), chunk_size=st.one_of(st.none(), ODD_NUMBER))
def test_neural_score_with_odd_arguments_is_in_our_words(name, num_points, chunk_size):
    if isinstance(num_points, (int, float)) and not isinstance(num_points, bool) and num_points > 64:
        num_points = 64  # a valid but large quadrature only costs time
    torch.manual_seed(0)
    outcome(getattr(tpp.neural, name)(2, 4).score, DATA, num_points, chunk_size)


SDE_MODELS = ["NeuralCDE", "NeuralODE", "LSDE", "LNSDE", "GSDE", "GRUTime", "LatentSDE", "NeuralCoxSDE", "NeuralCox",
              "MarkovJumpProcess"]


@pytest.mark.parametrize("name", SDE_MODELS)
@FEW
@given(first=st.one_of(GOOD_COUNT, ODD_NUMBER), second=st.one_of(st.integers(1, 8), ODD_NUMBER))
def test_sde_constructors_accept_or_refuse_in_our_words(name, first, second):
    import sde.models

    cls = getattr(sde.models, name)
    if isinstance(second, int) and not isinstance(second, bool) and second > 64:
        second = 8
    if name == "MarkovJumpProcess":
        outcome(cls, first, None if second is None else [[0.0, second], [1.0, 0.0]])
    else:
        outcome(cls, first, second)


# ----------------------------------------------------------------------------------------------- sampling and fitting
SAMPLERS = {
    "ExpHawkes": lambda: ExpHawkes.from_params([0.5], [[0.3]], 1.0),
    "SumExpHawkes": lambda: SumExpHawkes.from_params([0.5], [[[0.2, 0.1]]], [1.0, 3.0]),
    "FaDInHawkes": lambda: FaDInHawkes(1, "truncated-exponential", 2.0, 0.1),
    "NonparametricHawkes": lambda: NonparametricHawkes(1, 2.0, 4),
    "Poisson": lambda: Poisson(1),
    "RMTPP": lambda: tpp.neural.RMTPP(1, 4, num_points=4),
    "THP": lambda: tpp.neural.THP(1, 4, num_heads=1, num_layers=1, num_points=4),
    "IntensityFree": lambda: tpp.neural.IntensityFree(1, 4, num_mixtures=2, num_points=4),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@SETTINGS
@given(n=st.one_of(GOOD_COUNT, ODD_NUMBER), t_end=st.one_of(st.just(5.0), ODD_NUMBER),
       max_events=st.one_of(st.just(200), st.integers(-2, 3), ODD_NUMBER))
def test_sample_with_odd_arguments_is_bounded_and_in_our_words(name, n, t_end, max_events):
    torch.manual_seed(0)
    model = SAMPLERS[name]()
    if isinstance(max_events, (int, float)) and not isinstance(max_events, bool) and max_events > 10_000:
        max_events = 10_000  # the property is about the cap being reached, not about a big cap
    outcome(model.sample, n, t_end, generator=0, max_events=max_events)


@pytest.mark.parametrize("name", ["ExpHawkes", "Poisson", "RMTPP"])
@FEW
@given(t_start=st.one_of(st.just(0.0), ODD_NUMBER), history=st.sampled_from(["none", "match", "other", "wrong"]),
       generator=st.one_of(st.none(), st.integers(0, 3), ODD_NUMBER))
def test_sample_with_odd_starts_histories_and_seeds_is_in_our_words(name, t_start, history, generator):
    model = SAMPLERS[name]()
    one_mark = ExpHawkes.from_params([0.5], [[0.3]], 1.0).sample(2, 3.0, generator=0)
    past = {"none": None, "match": one_mark, "other": DATA, "wrong": [1.0, 2.0]}[history]
    outcome(model.sample, 2, 6.0, history=past, generator=generator, t_start=t_start, max_events=500)


FITTERS = {
    "ExpHawkes": lambda: ExpHawkes(2, 1.0),
    "Poisson": lambda: Poisson(2),
    "RMTPP": lambda: tpp.neural.RMTPP(2, 4, num_points=4),
}


@pytest.mark.parametrize("name", sorted(FITTERS))
@FEW
@given(epochs=st.one_of(st.just(1), ODD_NUMBER), batch_size=st.one_of(st.just(2), ODD_NUMBER),
       lr=st.one_of(st.just(1e-2), ODD_NUMBER), checkpoint_every=st.one_of(st.none(), ODD_NUMBER))
def test_fit_with_odd_trainer_options_is_in_our_words(name, epochs, batch_size, lr, checkpoint_every):
    if isinstance(epochs, (int, float)) and not isinstance(epochs, bool) and epochs > 2:
        epochs = 2
    torch.manual_seed(0)
    outcome(FITTERS[name]().fit, DATA, epochs=epochs, batch_size=batch_size, lr=lr,
            checkpoint_every=checkpoint_every, progress=False)


@FEW
@given(times=st.lists(st.floats(0.0, 10.0), max_size=4), decays=st.lists(st.sampled_from([0.5, 1.0, 1.0, 3.0]),
                                                                          min_size=1, max_size=3),
       rel_step=st.one_of(st.just(1e-5), ODD_NUMBER))
def test_standard_errors_after_any_small_fit_are_in_our_words(times, decays, rel_step):
    times = sorted(times)
    data = EventBatch.from_sequences([times], t_start=0.0, t_end=10.0, num_marks=1)
    model = outcome(SumExpHawkes(1, decays).fit, data)
    if model is not None:
        outcome(model.standard_errors, data, rel_step)


# ----------------------------------------------------------------------------------------------- batches
ODD_TIME = st.one_of(st.floats(-5, 50), st.sampled_from([math.nan, math.inf, -math.inf, 1e300, 1.7e9, -0.0]))
ODD_MARK = st.one_of(st.integers(-2, 3), st.sampled_from([2**40, 1e9, 2.5, math.nan, -1]))


@SETTINGS
@given(times=st.lists(st.lists(ODD_TIME, max_size=4), max_size=3),
       marks=st.one_of(st.none(), st.lists(st.lists(ODD_MARK, max_size=4), max_size=3)),
       t_start=st.one_of(st.just(0.0), ODD_NUMBER), t_end=st.one_of(st.none(), st.just(60.0), ODD_NUMBER),
       num_marks=st.one_of(st.none(), GOOD_COUNT, ODD_NUMBER))
def test_event_batch_from_sequences_is_in_our_words(times, marks, t_start, t_end, num_marks):
    outcome(EventBatch.from_sequences, times, marks, t_start=t_start, t_end=t_end, num_marks=num_marks)


ARRAYS = st.one_of(
    st.lists(ODD_TIME, max_size=5).map(np.array), st.lists(st.integers(-3, 6), max_size=4).map(np.array),
    st.sampled_from([np.zeros((2, 2)), np.array([0.0, 1.5]), np.array([0, 2, 1]), np.array(["a", "b"]),
                     np.array([0.5, 1.5], dtype=object), np.array([], dtype=np.float64), np.array(3.0)]),
)


@SETTINGS
@given(times=ARRAYS, offsets=ARRAYS, t_start=ARRAYS, t_end=ARRAYS, marks=st.one_of(st.none(), ARRAYS),
       num_marks=st.one_of(st.none(), GOOD_COUNT, ODD_NUMBER))
def test_event_batch_from_flat_is_in_our_words(times, offsets, t_start, t_end, marks, num_marks):
    outcome(EventBatch.from_flat, times, offsets, t_start, t_end, marks, num_marks)


TENSORS = st.one_of(
    st.sampled_from([torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool),
                     torch.zeros(3), torch.zeros(2, 2), torch.full((2, 3), math.nan), torch.tensor([0.0, 1.0]),
                     torch.zeros(0, 0), torch.arange(6.0).reshape(2, 3), torch.tensor([[0, 1, 2], [2, 1, 0]])]),
    ODD_NUMBER,
)


@SETTINGS
@given(time=TENSORS, mark=TENSORS, mask=TENSORS, t_start=TENSORS, t_end=TENSORS,
       num_marks=st.one_of(GOOD_COUNT, ODD_NUMBER))
def test_event_batch_constructor_is_in_our_words(time, mark, mask, t_start, t_end, num_marks):
    outcome(EventBatch, time, mark, mask, t_start, t_end, num_marks)


@SETTINGS
@given(time=TENSORS, values=TENSORS, mask=TENSORS, labels=st.one_of(st.none(), TENSORS))
def test_series_batch_constructor_is_in_our_words(time, values, mask, labels):
    from sde.series import SeriesBatch

    outcome(SeriesBatch, time, values, mask, labels)


@SETTINGS
@given(series=st.lists(st.tuples(st.lists(ODD_TIME, max_size=4), st.lists(ODD_TIME, max_size=4)), max_size=3),
       labels=st.one_of(st.none(), st.lists(st.one_of(st.integers(-1, 3), st.text(max_size=2), st.none(),
                                                      st.just(math.nan)), max_size=3)))
def test_series_batch_from_arrays_is_in_our_words(series, labels):
    from sde.series import SeriesBatch

    outcome(SeriesBatch.from_arrays, [(np.array(t), np.array(v)) for t, v in series], labels)


@SETTINGS
@given(times=ARRAYS, values=ARRAYS, offsets=ARRAYS, labels=st.one_of(st.none(), ARRAYS))
def test_series_batch_from_flat_is_in_our_words(times, values, offsets, labels):
    from sde.series import SeriesBatch

    outcome(SeriesBatch.from_flat, times, values, offsets, labels)


# ----------------------------------------------------------------------------------------------- readers
ODD_CELL = st.one_of(st.text(alphabet="0123456789.-eEaNnIif ,\"x", max_size=6),
                     st.sampled_from(["", "NA", "nan", "inf", "-inf", "1e9", "1e400", "2.5", "None", "0x10", "١"]))


@SETTINGS
@given(rows=st.lists(st.tuples(ODD_CELL, ODD_CELL, ODD_CELL), max_size=6), header=st.sampled_from(
    ["seq,time,mark", "seq,time", "time,mark", "seq,time,mark,extra", "", "seq,seq,time"]))
def test_read_events_on_generated_csv_tables_is_in_our_words(tmp_path_factory, rows, header):
    path = tmp_path_factory.mktemp("csv") / "events.csv"
    path.write_text("\n".join([header, *(",".join(f'"{c}"' if "," in c else c for c in row) for row in rows)]) + "\n")
    outcome(read_events, path)


@FEW
@given(t_start=st.one_of(st.none(), ODD_NUMBER, st.sampled_from(["first", "min", "x"])),
       t_end=st.one_of(st.none(), ODD_NUMBER, st.sampled_from(["last", "max", "x"])),
       num_marks=st.one_of(st.none(), GOOD_COUNT, ODD_NUMBER), remap_marks=st.one_of(st.booleans(), ODD_NUMBER),
       columns=st.sampled_from([("seq", "time", "mark"), (None, "time", None), ("x", "time", "mark"),
                                ("seq", "mark", "time"), ("seq", "seq", "mark")]))
def test_read_events_with_odd_arguments_is_in_our_words(tmp_path_factory, t_start, t_end, num_marks, remap_marks,
                                                        columns):
    path = tmp_path_factory.mktemp("args") / "events.csv"
    path.write_text("seq,time,mark\na,0.5,0\na,1.5,1\nb,0.25,2\n")
    seq, time, mark = columns
    outcome(read_events, path, seq, time, mark, t_start, t_end, num_marks=num_marks, remap_marks=remap_marks)


NPZ_KEYS = ["times", "seq_offsets", "t_start", "t_end", "marks", "num_marks", "seq_names"]


@SETTINGS
@given(layout=st.dictionaries(st.sampled_from(NPZ_KEYS), ARRAYS, max_size=len(NPZ_KEYS)))
def test_read_events_on_generated_npz_layouts_is_in_our_words(tmp_path_factory, layout):
    path = tmp_path_factory.mktemp("npz") / "events.npz"
    np.savez(path, **layout)
    outcome(read_events, path)


JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 2**41), st.floats(allow_nan=False), st.text(max_size=3)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(
        st.sampled_from(["seq", "time", "mark", "dim_process", "train", "time_since_start", "type_event", "x"]),
        inner, max_size=4)),
    max_leaves=12,
)


@SETTINGS
@given(obj=JSON_VALUE, lines=st.booleans())
def test_read_events_on_generated_json_is_in_our_words(tmp_path_factory, obj, lines):
    folder = tmp_path_factory.mktemp("json")
    if lines:
        path = folder / "events.jsonl"
        items = obj if isinstance(obj, list) else [obj]
        path.write_text("\n".join(json.dumps(item) for item in items) + "\n")
    else:
        path = folder / "events.json"
        path.write_text(json.dumps(obj))
    outcome(read_events, path)


TS_HEADER = st.lists(st.sampled_from([
    "@problemName x", "@timeStamps true", "@timeStamps false", "@missing true", "@univariate true",
    "@univariate false", "@classLabel true a b", "@classLabel false", "@classLabel true", "@equalLength true",
    "@seriesLength 3", "@dimensions 2", "@targetlabel true", "@timestamps maybe", "@data",
]), max_size=6)
TS_LINE = st.lists(st.one_of(st.sampled_from(["1,2,3", "(1,2),(2,3)", "?", "NaN", "a", "1e400", "(x,1)", ":", "::",
                                              "1,2:3,4", "(1,2)", "((", "-inf"]), ODD_CELL), min_size=1, max_size=3)


@SETTINGS
@given(header=TS_HEADER, data=st.lists(TS_LINE, max_size=4), at_data=st.booleans())
def test_read_ts_on_generated_texts_is_in_our_words(tmp_path_factory, header, data, at_data):
    from sde.readers import read_ts

    path = tmp_path_factory.mktemp("ts") / "series.ts"
    body = [*header, *(["@data"] if at_data else []), *(":".join(line) for line in data)]
    path.write_text("\n".join(body) + "\n")
    outcome(read_ts, path)


SERIES_CELL = st.one_of(st.sampled_from(["", "NA", "nan", "inf", "1e400", "2.5", "x", "2020-01-01", "0"]),
                        st.floats(allow_nan=True, allow_infinity=True).map(repr))


@SETTINGS
@given(rows=st.lists(st.tuples(st.sampled_from(["a", "b", "01", "1", ""]), SERIES_CELL, SERIES_CELL), max_size=6),
       unit=st.sampled_from(["index", "s", "h", "D", "x"]), time=st.sampled_from([None, "t", "missing"]))
def test_read_csv_series_on_generated_tables_is_in_our_words(tmp_path_factory, rows, unit, time):
    from sde.readers import read_csv_series

    path = tmp_path_factory.mktemp("series") / "series.csv"
    path.write_text("\n".join(["id,t,v", *(",".join(row) for row in rows)]) + "\n")
    outcome(read_csv_series, path, time=time, unit=unit, values=["v"])


@SETTINGS
@given(header=st.lists(st.sampled_from(["@relation x", "@attribute series_name string",
                                        "@attribute start_timestamp date", "@frequency daily", "@horizon 3", "@missing true", "@equallength false",
                                        "@data", "# comment"]), max_size=6),
       data=st.lists(st.lists(st.sampled_from(["T1", "2020-01-01 00-00-00", "1,2,3", "?", "x", "1e400", "", "1,?,2"]),
                              min_size=1, max_size=3), max_size=3))
def test_read_tsf_on_generated_texts_is_in_our_words(tmp_path_factory, header, data):
    from sde.readers import read_tsf

    path = tmp_path_factory.mktemp("tsf") / "series.tsf"
    path.write_text("\n".join([*header, *(":".join(line) for line in data)]) + "\n")
    outcome(read_tsf, path)


# ----------------------------------------------------------------------------------------------- named findings
@pytest.mark.parametrize("value", [0, -1, 2.5, "2", True, math.nan])
@pytest.mark.parametrize("fitter", [lambda: ExpHawkes(1, 1.0), lambda: SumExpHawkes(1, [1.0, 2.0]),
                                    lambda: Poisson(1), lambda: FaDInHawkes(1, "truncated-exponential", 2.0, 0.1),
                                    lambda: NonparametricHawkes(1, 2.0, 4)])
def test_hawkes_fit_refuses_a_checkpoint_every_that_is_not_a_positive_integer(fitter, value):
    data = ExpHawkes.from_params([0.5], [[0.3]], 1.0).sample(2, 20.0, generator=0)
    with pytest.raises((ValueError, TypeError), match="checkpoint_every must be an integer >= 1"):
        fitter().fit(data, checkpoint_every=value)


@pytest.mark.parametrize("value", [0, -3, 2.5, "1"])
def test_the_trainer_refuses_a_checkpoint_every_that_is_not_a_positive_integer(value):
    with pytest.raises((ValueError, TypeError), match="tpp.fit: checkpoint_every must be an integer >= 1"):
        tpp.fit(tpp.neural.RMTPP(2, 4), DATA, epochs=1, checkpoint_every=value, progress=False)


def test_a_valid_checkpoint_every_or_none_still_fits():
    for value in (None, 1, np.int64(3)):
        assert ExpHawkes(2, 1.0).fit(DATA, checkpoint_every=value).baseline_ is not None


def test_absolute_time_warning_is_importable_from_tpp():
    from tpp import AbsoluteTimeWarning
    from tpp.clock import AbsoluteTimeWarning as where_it_lives

    assert AbsoluteTimeWarning is where_it_lives and issubclass(AbsoluteTimeWarning, UserWarning)
    assert "AbsoluteTimeWarning" in tpp.__all__


@pytest.mark.parametrize("build, named", [
    (lambda: ExpHawkes(2**40), "num_marks=1099511627776"), (lambda: SumExpHawkes(10_000, [1.0, 2.0]), "num_marks=10000"),
    (lambda: Poisson(2**40), "num_marks=1099511627776"), (lambda: NonparametricHawkes(100, 1.0, 10**5), "bins=100000"),
    (lambda: FaDInHawkes(100, "truncated-exponential", 1e6, 1e-3), "support=1000000.0 / delta=0.001"),
])
def test_hawkes_constructors_refuse_a_parameter_too_large_to_allocate(build, named):
    # ExpHawkes(2**40) reached torch's allocator and failed there with a RuntimeError
    with pytest.raises(ValueError, match=f"{named}.*more than the 67,108,864 allowed"):
        build()


@pytest.mark.parametrize("name", ["NeuralCDE", "NeuralODE", "LSDE", "GRUTime", "LatentSDE", "NeuralCox"])
@pytest.mark.parametrize("size", [np.int64(3), 3.0, np.float64(3.0)])
def test_sde_models_take_numpy_and_integral_float_sizes(name, size):
    # NeuralCDE(1, 1.0) and LatentSDE(np.int64(2)) failed inside torch ("must be tuple of ints")
    import sde.models

    model = getattr(sde.models, name)(2, size)
    assert all(isinstance(p, torch.Tensor) for p in model.parameters())


@pytest.mark.parametrize("name", ["NeuralCDE", "NeuralODE", "LSDE", "GRUTime", "LatentSDE", "NeuralCox"])
@pytest.mark.parametrize("first, second", [(2**40, 4), (2, 2**40), (2, 1e300)])
def test_sde_models_refuse_sizes_too_large_to_allocate(name, first, second):
    # NeuralODE(2**40) asked the allocator for 4 TiB and failed with a RuntimeError
    import sde.models

    with pytest.raises(ValueError, match="more than the 67,108,864 allowed"):
        getattr(sde.models, name)(first, second)


@pytest.mark.parametrize("build", [lambda: Poisson(1), lambda: ExpHawkes.from_params([0.5], [[0.3]], 1.0)])
def test_sample_refuses_more_sequences_than_one_call_can_hold(build):
    # Poisson(1).sample(2**63, 5.0) failed inside numpy: "Maximum allowed dimension exceeded"
    from tpp.process import MAX_SAMPLE_SEQUENCES

    with pytest.raises(ValueError, match="n \\(the number of sequences\\) must be at most"):
        build().sample(2**63, 5.0)
    with pytest.raises(ValueError, match=f"at most {MAX_SAMPLE_SEQUENCES:,}"):
        build().sample(MAX_SAMPLE_SEQUENCES + 1, 5.0)


@pytest.mark.parametrize("generator, error", [(0.0, TypeError), (-1, ValueError), ("0", TypeError), (True, TypeError)])
def test_sample_names_a_seed_that_is_not_a_non_negative_integer(generator, error):
    # numpy's SeedSequence refused 0.0 and -1 in its own words, from deep inside
    with pytest.raises(error, match="generator"):
        Poisson(1).sample(2, 5.0, generator=generator)


def test_sample_still_takes_every_kind_of_seed():
    for generator in (None, 0, np.int64(3), np.random.default_rng(1), torch.Generator().manual_seed(2),
                      np.random.SeedSequence(4), np.random.PCG64(5)):
        assert len(Poisson(1).sample(2, 5.0, generator=generator)) == 2


def test_read_ts_names_a_labelled_case_without_channels(tmp_path):
    # "@classLabel true a b" then a line "1,2,3" (no ':'): an IndexError inside the reader
    from sde.readers import read_ts
    from sde.series import SeriesDataError

    path = tmp_path / "label_only.ts"
    path.write_text("@classLabel true a b\n@data\n1,2,3\n")
    with pytest.raises(SeriesDataError, match="at least one channel before its label"):
        read_ts(path)


def test_read_csv_series_refuses_a_table_without_rows(tmp_path):
    # a header without rows reached stamps.iloc[0]: an IndexError
    from sde.readers import read_csv_series
    from sde.series import SeriesDataError

    path = tmp_path / "empty.csv"
    path.write_text("id,t,v\n")
    with pytest.raises(SeriesDataError, match="no rows"):
        read_csv_series(path, time="t", unit="s", values=["v"])


@pytest.mark.parametrize("field", ["time", "mark", "mask", "t_start", "t_end"])
def test_the_event_batch_constructor_names_an_argument_that_is_not_a_tensor(field):
    # EventBatch(time, ..., mask=0, ...) failed with "AttributeError: 'int' object has no attribute 'shape'"
    args = {"time": torch.zeros(2, 3), "mark": torch.zeros(2, 3, dtype=torch.long),
            "mask": torch.ones(2, 3, dtype=torch.bool), "t_start": torch.zeros(2), "t_end": torch.ones(2)}
    args[field] = [0.0]
    with pytest.raises(TypeError, match=f"EventBatch\\({field}=...\\) must be a torch.Tensor"):
        EventBatch(num_marks=1, **args)


@pytest.mark.parametrize("field", ["time", "values", "mask", "labels"])
def test_the_series_batch_constructor_names_an_argument_that_is_not_a_tensor(field):
    from sde.series import SeriesBatch

    args = {"time": torch.zeros(2, 3, dtype=torch.float64), "values": torch.zeros(2, 3, 1, dtype=torch.float64),
            "mask": torch.ones(2, 3, 1, dtype=torch.bool), "labels": None}
    args[field] = 0
    with pytest.raises(TypeError, match=f"SeriesBatch\\({field}=...\\) must be a torch.Tensor"):
        SeriesBatch(**args)
