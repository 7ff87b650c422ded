"""Property-based tests (hypothesis) over event inputs.

* Valid tables read back exactly (DataFrame; CSV, Parquet and .npz round trips; the streamed Parquet
  source), and every model's log-likelihood of valid batches is finite.
* Every kind of invalid input (unsorted, non-finite or missing times, bad marks, times outside the
  window, reversed or non-finite windows, empty input, wrong dtypes, mismatched lengths) raises
  :class:`tpp.EventDataError` and nothing else, from every constructor.
* Extreme scales: times near 0 and 1e9, gaps from 1e-9 to 1e6, 1e5 events in a sequence, 1000 marks.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import tpp
from tpp import EventBatch, EventDataError
from tpp.hawkes import ExpHawkes, FaDInHawkes, Poisson, SumExpHawkes
from tpp.neural import NHP, RMTPP, SAHP, THP, AttNHP, FullyNN, IntensityFree
from tpp.stream import EventLogWriter, ParquetSource

SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
            "derandomize": True}
MAX_MARKS = 4

# ----------------------------------------------------------------------------- strategies
gaps = st.floats(0.0, 10.0, allow_nan=False, allow_infinity=False)
starts = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@st.composite
def sequences(draw, min_events: int = 0, max_seq: int = 4, max_len: int = 10):
    """``(times, marks, t_start, t_end, K)``: valid sequences (ties, empty sequences, zero-length windows allowed)."""
    K = draw(st.integers(1, MAX_MARKS))
    times, marks, t0, t1 = [], [], [], []
    for _ in range(draw(st.integers(1, max_seq))):
        start = draw(starts)
        n = draw(st.integers(min_events, max_len))
        t = start + np.cumsum(draw(st.lists(gaps, min_size=n, max_size=n))) if n else np.zeros(0)
        times.append(np.asarray(t, np.float64))
        marks.append(np.asarray(draw(st.lists(st.integers(0, K - 1), min_size=n, max_size=n)), np.int64))
        t0.append(start)
        t1.append((t[-1] if n else start) + draw(gaps))
    return times, marks, np.array(t0), np.array(t1), K


@st.composite
def tables(draw):
    """A valid long table (one row per event, sequences interleaved) and the batch it stands for."""
    times, marks, t0, t1, K = draw(sequences(min_events=1))
    labels = draw(st.permutations([b for b, t in enumerate(times) for _ in t]))  # an interleaving
    ids = draw(st.lists(st.integers(-10**6, 10**6), min_size=len(times), max_size=len(times), unique=True))
    cursor = [0] * len(times)
    rows = []
    for b in labels:
        i = cursor[b]
        cursor[b] += 1
        rows.append({"seq": ids[b], "time": times[b][i], "mark": marks[b][i], "t_start": t0[b], "t_end": t1[b]})
    df = pd.DataFrame(rows)
    # Sequences come out in order of first appearance.
    order = list(dict.fromkeys(labels))
    expected = EventBatch.from_sequences([times[b] for b in order], [marks[b] for b in order],
                                         t_start=t0[order], t_end=t1[order], num_marks=K)
    return df, expected, K


def read(df: pd.DataFrame, K: int) -> EventBatch:
    return tpp.read_events(df, seq="seq", time="time", mark="mark", num_marks=K)


# ----------------------------------------------------------------------------- valid inputs read back exactly
@settings(max_examples=200, **SETTINGS)
@given(tables())
def test_valid_tables_read_to_the_batch_they_describe(case):
    df, expected, K = case
    got = read(df, K)
    assert got == expected
    assert got.seq_names == list(dict.fromkeys(df["seq"].tolist()))


@settings(max_examples=80, **SETTINGS)
@given(tables())
def test_csv_and_parquet_round_trips_are_lossless(tmp_path_factory, case):
    _, batch, _ = case
    folder = tmp_path_factory.mktemp("rt")
    for suffix in (".csv", ".parquet", ".npz"):
        path = tpp.write_events(batch, folder / f"events{suffix}")
        back = tpp.read_events(path)
        assert back == batch, suffix


@settings(max_examples=40, **SETTINGS)
@given(tables(), st.integers(1, 50), st.integers(1, 60), st.data())
def test_a_streamed_parquet_log_loads_the_batches_read_events_reads(tmp_path_factory, case, row_group, block, data):
    _, batch, _ = case
    path = tmp_path_factory.mktemp("stream") / "log.parquet"
    with EventLogWriter(path, row_group_size=row_group) as writer:
        writer.write(batch)
    source = ParquetSource(path, block_events=block)
    idx = np.asarray(data.draw(st.permutations(range(len(batch)))))[: data.draw(st.integers(1, len(batch)))]
    assert source.load(idx) == batch[idx]
    assert sorted(np.concatenate(source.plan(2, np.random.default_rng(0))).tolist()) == list(range(len(batch)))


# ----------------------------------------------------------------------------- invalid inputs: EventDataError only
CORRUPTIONS = [
    "unsorted", "nan-time", "inf-time", "neg-inf-time", "negative-mark", "mark-too-large", "fractional-mark",
    "before-window", "after-window", "reversed-window", "nan-window", "window-not-constant", "text-time",
    "missing-time", "missing-seq", "missing-mark", "complex-time", "datetime-time", "text-mark", "empty-table",
    "no-time-column", "no-rows-after-filter",
]


def corrupt(df: pd.DataFrame, kind: str, draw) -> pd.DataFrame:
    df = df.copy()
    row = draw(st.integers(0, len(df) - 1))
    if kind == "unsorted":
        seq = df["seq"].iloc[row]
        idx = np.flatnonzero((df["seq"] == seq).to_numpy())
        t = df["time"].to_numpy()[idx]
        assume(idx.size >= 2 and t[-1] > t[0])
        df.loc[idx[0], "time"], df.loc[idx[-1], "time"] = t[-1], t[0]  # first and last swapped
    elif kind in ("nan-time", "inf-time", "neg-inf-time"):
        df.loc[row, "time"] = {"nan-time": np.nan, "inf-time": np.inf, "neg-inf-time": -np.inf}[kind]
    elif kind == "negative-mark":
        df.loc[row, "mark"] = -draw(st.integers(1, 10**9))
    elif kind == "mark-too-large":
        df.loc[row, "mark"] = MAX_MARKS + draw(st.integers(0, 10**9))
    elif kind == "fractional-mark":
        df["mark"] = df["mark"].astype(float)
        df.loc[row, "mark"] += draw(st.floats(0.01, 0.99))
    elif kind == "before-window":
        seq = df["seq"].iloc[row]
        df.loc[df["seq"] == seq, "t_start"] = df.loc[row, "time"] + draw(st.floats(1e-3, 1e3))
    elif kind == "after-window":
        seq = df["seq"].iloc[row]
        df.loc[df["seq"] == seq, "t_end"] = df.loc[row, "time"] - draw(st.floats(1e-3, 1e3))
    elif kind == "reversed-window":
        seq = df["seq"].iloc[row]
        df.loc[df["seq"] == seq, "t_end"] = df.loc[df["seq"] == seq, "t_start"] - draw(st.floats(1e-3, 1e3))
    elif kind == "nan-window":
        seq = df["seq"].iloc[row]
        df.loc[df["seq"] == seq, draw(st.sampled_from(["t_start", "t_end"]))] = draw(st.sampled_from([np.nan, np.inf]))
    elif kind == "window-not-constant":
        df.loc[row, draw(st.sampled_from(["t_start", "t_end"]))] += draw(st.floats(1e-3, 1e3))
        assume(len(df[df["seq"] == df["seq"].iloc[row]]) >= 2)
    elif kind == "text-time":
        df["time"] = df["time"].astype(object)
        df.loc[row, "time"] = draw(st.sampled_from(["abc", "1,5", "", "NaN-ish", "--"]))
    elif kind == "missing-time":
        df["time"] = df["time"].astype(object)
        df.loc[row, "time"] = None
    elif kind == "missing-seq":
        df["seq"] = df["seq"].astype(object)
        df.loc[row, "seq"] = None
    elif kind == "missing-mark":
        df["mark"] = df["mark"].astype(object)
        df.loc[row, "mark"] = None
    elif kind == "complex-time":
        df["time"] = df["time"] + 1j * draw(st.floats(0.5, 5.0))
    elif kind == "datetime-time":
        df["time"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(df["time"] - df["time"].min(), unit="s")
    elif kind == "text-mark":
        df["mark"] = df["mark"].astype(object)
        df.loc[row, "mark"] = draw(st.sampled_from(["a", "type-1", "x"]))
    elif kind == "empty-table":
        df = df.iloc[:0]
    elif kind == "no-time-column":
        df = df.drop(columns="time")
    elif kind == "no-rows-after-filter":
        df = df[df["time"] > np.inf]
    return df


@settings(max_examples=600, **SETTINGS)
@given(tables(), st.sampled_from(CORRUPTIONS), st.data())
def test_invalid_tables_raise_event_data_error_and_nothing_else(case, kind, data):
    df, _, _ = case
    bad = corrupt(df, kind, data.draw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a silent conversion (complex -> real) would only warn
        with pytest.raises(EventDataError):
            read(bad, MAX_MARKS)


@settings(max_examples=80, **SETTINGS)
@given(tables(), st.sampled_from(["nan-time", "unsorted", "after-window", "text-time", "fractional-mark"]), st.data())
def test_invalid_csv_files_raise_event_data_error_naming_the_file(tmp_path_factory, case, kind, data):
    df, _, _ = case
    path = tmp_path_factory.mktemp("bad") / "events.csv"
    corrupt(df, kind, data.draw).to_csv(path, index=False)
    with pytest.raises(EventDataError, match="events.csv"):
        tpp.read_events(path, num_marks=MAX_MARKS)


@st.composite
def bad_sequences(draw):
    """Invalid input to ``EventBatch.from_sequences`` / ``from_flat``: one defect in valid sequences."""
    times, marks, t0, t1, K = draw(sequences(min_events=1))
    times = [t.copy() for t in times]
    b = draw(st.integers(0, len(times) - 1))
    i = draw(st.integers(0, len(times[b]) - 1))
    kind = draw(st.sampled_from(["unsorted", "nan", "inf", "mark-range", "before", "after", "reversed",
                                 "short-marks", "window-length", "text", "complex", "nested", "marks-per-seq"]))
    kw: dict = {"t_start": t0, "t_end": t1, "num_marks": K}
    if kind == "unsorted":
        assume(times[b].size >= 2 and times[b][-1] > times[b][0])
        times[b] = times[b][::-1].copy()
    elif kind in ("nan", "inf"):
        times[b][i] = np.nan if kind == "nan" else -np.inf
    elif kind == "mark-range":
        marks[b] = marks[b].copy()
        marks[b][i] = draw(st.sampled_from([-1, K, K + 7, -(2**40)]))
    elif kind == "before":
        kw["t_start"] = t0.copy()
        kw["t_start"][b] = times[b][0] + 1.0
    elif kind == "after":
        kw["t_end"] = t1.copy()
        kw["t_end"][b] = times[b][-1] - 1.0
    elif kind == "reversed":
        kw["t_end"] = t1.copy()
        kw["t_end"][b] = t0[b] - draw(st.floats(1e-6, 1e6))
    elif kind == "short-marks":
        marks[b] = marks[b][:-1]
    elif kind == "window-length":
        kw[draw(st.sampled_from(["t_start", "t_end"]))] = np.zeros(len(times) + draw(st.integers(1, 3)))
    elif kind == "text":
        times[b] = [str(x) for x in times[b]][:-1] + ["later"]
    elif kind == "complex":
        times[b] = times[b] + 1j
    elif kind == "nested":
        times[b] = [times[b].tolist(), [1.0]]  # ragged: not one array of times
    elif kind == "marks-per-seq":
        marks = marks[:-1] if len(marks) > 1 else marks + [np.zeros(1, np.int64)]
    return times, marks, kw


@settings(max_examples=300, **SETTINGS)
@given(bad_sequences())
def test_invalid_sequences_raise_event_data_error_and_nothing_else(case):
    times, marks, kw = case
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(EventDataError):
            EventBatch.from_sequences(times, marks, **kw)


@st.composite
def bad_padded(draw):
    """Invalid padded tensors for the ``EventBatch`` constructor."""
    times, marks, t0, t1, K = draw(sequences(min_events=1))
    good = EventBatch.from_sequences(times, marks, t_start=t0, t_end=t1, num_marks=K)
    time, mark, mask = good.time.clone(), good.mark.clone(), good.mask.clone()
    t_start, t_end = good.t_start.clone(), good.t_end.clone()
    b = draw(st.integers(0, len(good) - 1))
    kind = draw(st.sampled_from(["gap-in-mask", "shape", "window-shape", "nan", "unsorted", "mark", "float-mark",
                                 "bool-time", "complex-time"]))
    n = int(mask[b].sum())
    if kind == "gap-in-mask":
        assume(n >= 2)
        mask[b, 0] = False  # padding before events
    elif kind == "shape":
        mark = mark[:, :-1]
    elif kind == "window-shape":
        t_end = t_end[:-1]
    elif kind == "nan":
        time[b, draw(st.integers(0, n - 1))] = float("nan")
    elif kind == "unsorted":
        assume(n >= 2 and time[b, n - 1] > time[b, 0])
        time[b, :n] = time[b, :n].flip(0)
    elif kind == "mark":
        mark[b, draw(st.integers(0, n - 1))] = draw(st.sampled_from([-1, K, K + 3]))
    elif kind == "float-mark":
        mark = mark.double()
        mark[b, draw(st.integers(0, n - 1))] += 0.5
    elif kind == "bool-time":
        time = time > 0
    elif kind == "complex-time":
        time = time.to(torch.complex128)
    return time, mark, mask, t_start, t_end, K


@settings(max_examples=200, **SETTINGS)
@given(bad_padded())
def test_invalid_padded_tensors_raise_event_data_error_and_nothing_else(case):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(EventDataError):
            EventBatch(*case)


# ----------------------------------------------------------------------------- every model: finite log-likelihoods
def _models(K: int) -> dict[str, torch.nn.Module]:
    torch.manual_seed(K)
    models = {
        "poisson": Poisson.from_params(np.linspace(0.2, 1.0, K)),
        "exp-hawkes": ExpHawkes.from_params(np.full(K, 0.3), np.full((K, K), 0.5 / K), 1.3),
        "sumexp-hawkes": SumExpHawkes.from_params(np.full(K, 0.3), np.full((K, K, 2), 0.25 / K), [2.0, 0.1]),
        "fadin": FaDInHawkes.from_params(np.full(K, 0.3), np.full((K, K), 0.5 / K), "truncated-exponential", 2.0,
                                         {"decay": np.full((K, K), 1.5)}),
        "rmtpp": RMTPP(K, 8),
        "nhp": NHP(K, 8),
        "thp": THP(K, 8, num_heads=1, num_layers=1),
        "sahp": SAHP(K, 8, num_heads=1, num_layers=1),
        "attnhp": AttNHP(K, 8, num_heads=1, num_layers=1),
        "fullynn": FullyNN(K, 8, num_layers=1),
        "intensity-free": IntensityFree(K, 8, num_mixtures=2),
    }
    for m in models.values():
        m.eval()
    return models


MODELS = {K: _models(K) for K in range(1, MAX_MARKS + 1)}
NAMES = list(MODELS[1])


def _loglik(model, batch: EventBatch) -> np.ndarray:
    with torch.no_grad():
        return model.log_likelihood(batch).double().numpy()


@settings(max_examples=150, **SETTINGS)
@given(sequences())
def test_every_model_gives_finite_log_likelihoods_on_valid_batches(case):
    times, marks, t0, t1, K = case
    batch = EventBatch.from_sequences(times, marks, t_start=t0, t_end=t1, num_marks=K)
    for name, model in MODELS[K].items():
        ll = _loglik(model, batch)
        assert ll.shape == (len(batch),), name
        assert np.all(np.isfinite(ll)), (name, ll)


@settings(max_examples=50, **SETTINGS)
@given(sequences(max_seq=3), st.integers(0, 3))
def test_log_likelihood_of_a_batch_is_the_log_likelihoods_of_its_sequences(case, extra_padding):
    """Batching, padding and sequence order do not change any model's per-sequence value."""
    times, marks, t0, t1, K = case
    batch = EventBatch.from_sequences(times, marks, t_start=t0, t_end=t1, num_marks=K)
    padded = EventBatch(torch.cat([batch.time, batch.t_end[:, None].expand(-1, extra_padding)], 1),
                        torch.cat([batch.mark, torch.zeros(len(batch), extra_padding, dtype=torch.long)], 1),
                        torch.cat([batch.mask, torch.zeros(len(batch), extra_padding, dtype=torch.bool)], 1),
                        batch.t_start, batch.t_end, K)
    for name, model in MODELS[K].items():
        whole = _loglik(model, padded)
        alone = np.array([_loglik(model, batch[[b]])[0] for b in range(len(batch))])
        np.testing.assert_allclose(whole, alone, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("name", NAMES)
def test_a_batch_with_more_marks_than_the_model_is_an_event_data_error(name):
    batch = EventBatch.from_sequences([[1.0, 2.0]], [[0, 3]], t_end=3.0, num_marks=4)
    with pytest.raises(EventDataError):
        _loglik(MODELS[2][name], batch)


# ----------------------------------------------------------------------------- extreme scales
SCALE_MODELS = ["exp-hawkes", "sumexp-hawkes", "poisson", "rmtpp", "nhp", "thp", "sahp", "attnhp", "fullynn",
                "intensity-free"]


@settings(max_examples=30, **SETTINGS)
@given(st.sampled_from([0.0, 1e-300, 1e9, -1e9]), st.sampled_from([1e-9, 1e-3, 1.0, 1e2, 1e6]), st.integers(1, 40),
       st.integers(0, 2**32 - 1))
def test_extreme_times_and_gaps_give_finite_log_likelihoods(offset, scale, n, seed):
    rng = np.random.default_rng(seed)
    t = offset + np.cumsum(scale * rng.uniform(0.5, 2.0, n))  # near 1e9, gaps of 1e-9 become ties: still valid
    batch = EventBatch.from_sequences([t], [rng.integers(0, 3, n)], t_start=offset, t_end=t[-1] + scale, num_marks=3)
    bad = {name: _loglik(MODELS[3][name], batch) for name in SCALE_MODELS}
    bad = {name: ll for name, ll in bad.items() if not np.all(np.isfinite(ll))}
    assert not bad, f"offset {offset}, gap scale {scale}: {bad}"


@pytest.mark.parametrize("name", ["rmtpp", "thp"])
def test_gaps_of_1e6_give_finite_log_likelihoods_for_rmtpp_and_thp(name):
    rng = np.random.default_rng(0)
    t = np.cumsum(1e6 * rng.uniform(0.5, 2.0, 5))
    batch = EventBatch.from_sequences([t], [rng.integers(0, 3, 5)], t_end=t[-1] + 1e6, num_marks=3)
    assert np.isfinite(_loglik(MODELS[3][name], batch)).all()


@pytest.mark.parametrize("name", ["exp-hawkes", "sumexp-hawkes", "poisson", "rmtpp", "fullynn", "intensity-free",
                                  "nhp"])
def test_1e5_events_in_one_sequence_give_a_finite_log_likelihood(name):
    rng = np.random.default_rng(0)
    n = 100_000
    t = np.cumsum(rng.exponential(1.0, n))
    batch = EventBatch.from_sequences([t], [rng.integers(0, 3, n)], t_end=t[-1] + 1.0, num_marks=3)
    ll = _loglik(MODELS[3][name], batch)
    assert np.isfinite(ll).all()
    assert -10 * n < ll[0] < 0  # of the order of minus one nat per event


@pytest.mark.parametrize("name", ["exp-hawkes", "poisson", "rmtpp", "nhp", "thp", "sahp", "attnhp", "fullynn",
                                  "intensity-free"])
def test_1000_marks_give_finite_log_likelihoods(name):
    K = 1000
    rng = np.random.default_rng(1)
    times = [np.cumsum(rng.exponential(1.0, n)) for n in (150, 0, 40)]
    batch = EventBatch.from_sequences(times, [rng.integers(0, K, t.size) for t in times],
                                      t_end=[t[-1] + 1 if t.size else 5.0 for t in times], num_marks=K)
    torch.manual_seed(0)
    model = {"exp-hawkes": lambda: ExpHawkes.from_params(np.full(K, 0.01), np.full((K, K), 0.5 / K), 1.0),
             "poisson": lambda: Poisson.from_params(np.full(K, 0.001))}.get(name)
    model = model() if model else type(MODELS[3][name])(K, 8)
    model.eval()
    ll = _loglik(model, batch)
    assert np.isfinite(ll).all() and ll.shape == (3,)


def test_the_csv_round_trip_keeps_extreme_values_exactly(tmp_path):
    """1e9-scale times with 1e-6 gaps and 1e-300 times keep every bit through a CSV file."""
    times = [np.array([1e9, 1e9 + 1e-6, 1e9 + 2e-6]), np.array([1e-300, 2e-300, 1e-7])]
    batch = EventBatch.from_sequences(times, [[0, 1, 0], [1, 1, 0]], t_start=[1e9 - 1, 0.0], t_end=[1e9 + 1, 1.0])
    assert tpp.read_events(tpp.write_events(batch, tmp_path / "extreme.csv")) == batch
