"""Event readers under bad or odd input: identity is text, sparse marks, malformed .npz (issue 13).

Each test is named after the property it holds; every one of them failed on the readers before the fix.
"""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tpp import EventBatch, EventDataError, read_events, write_events

ODD_IDS = ["01", "1", "NA", "", "None", "nan", "NULL", "1.0", " 1"]
FORMATS = [".csv", ".parquet", ".npz"]


def odd_batch(ids=ODD_IDS, features: bool = True) -> EventBatch:
    """One sequence per id, each with distinct times, marks and features (so a merge would show)."""
    times = [[0.25 + b, 1.5 + b] for b in range(len(ids))]
    marks = [[b % 3, (b + 1) % 3] for b in range(len(ids))]
    values = [np.array([[b + 0.125], [b + 0.375]]) for b in range(len(ids))] if features else None
    return EventBatch.from_sequences(times, marks, t_start=-0.5, t_end=[b + 2.0 for b in range(len(ids))],
                                     num_marks=3, seq_names=ids, features=values,
                                     feature_names=["x"] if features else None)


# ----------------------------------------------------------------------------- identity is text
@pytest.mark.parametrize("suffix", FORMATS)
def test_sequence_ids_round_trip_as_distinct_text(tmp_path, suffix):
    batch = odd_batch()
    back = read_events(write_events(batch, tmp_path / f"e{suffix}"))
    assert back.seq_names == ODD_IDS and len(back) == len(ODD_IDS)
    assert back == batch  # times, marks, windows, features exactly
    assert torch.equal(back.features[back.mask], batch.features[batch.mask])


def test_the_five_ids_of_the_issue_stay_five_sequences(tmp_path):
    ids = ["01", "1", "NA", "", "None"]
    for suffix in FORMATS:
        back = read_events(write_events(odd_batch(ids), tmp_path / f"five{suffix}"))
        assert back.seq_names == ids, suffix


def test_csv_ids_are_never_type_inferred_or_na_converted(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("seq,time,mark\n01,1.0,0\n1,2.0,1\nNA,1.0,0\n,1.0,0\nNone,1.0,0\n01,3.0,0\n")
    batch = read_events(path)
    assert batch.seq_names == ["01", "1", "NA", "", "None"]
    assert batch.lengths.tolist() == [2, 1, 1, 1, 1]


def test_csv_other_columns_still_treat_na_words_as_missing(tmp_path):
    path = tmp_path / "na.csv"
    path.write_text("seq,time,mark\nNA,1.0,0\nNA,NA,1\n")
    with pytest.raises(EventDataError) as info:
        read_events(path)
    assert info.value.row == 1 and info.value.field == "time"


def test_parquet_integer_ids_are_read_as_text(tmp_path):
    pd.DataFrame({"seq": [1, 1, 2], "time": [0.5, 1.0, 0.5]}).to_parquet(tmp_path / "i.parquet")
    assert read_events(tmp_path / "i.parquet").seq_names == ["1", "2"]


def test_parquet_null_id_is_refused_naming_the_row(tmp_path):
    pd.DataFrame({"seq": ["a", None], "time": [0.5, 1.0]}).to_parquet(tmp_path / "n.parquet")
    with pytest.raises(EventDataError, match="sequence id is missing") as info:
        read_events(tmp_path / "n.parquet")
    assert info.value.row == 1


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_json_rows_keep_ids_as_text(tmp_path, suffix):
    rows = [{"seq": i, "time": 1.0, "mark": 0} for i in ["01", "1", "NA", "", "None"]]
    rows.append({"seq": "01", "time": 2.0, "mark": 0})
    text = json.dumps(rows) if suffix == ".json" else "\n".join(json.dumps(r) for r in rows)
    (tmp_path / f"r{suffix}").write_text(text)
    batch = read_events(tmp_path / f"r{suffix}")
    assert batch.seq_names == ["01", "1", "NA", "", "None"] and batch.lengths.tolist() == [2, 1, 1, 1, 1]


def test_json_rows_that_are_not_objects_are_refused(tmp_path):
    (tmp_path / "r.jsonl").write_text('{"seq": "a", "time": 1.0}\n[1, 2]\n')
    with pytest.raises(EventDataError, match="row must be a JSON object"):
        read_events(tmp_path / "r.jsonl")


def test_a_dataframe_of_the_caller_keeps_its_id_values():
    df = pd.DataFrame({"seq": [1, 1, 2], "time": [0.5, 1.0, 0.5]})
    assert read_events(df).seq_names == [1, 2]


def test_names_that_are_not_text_are_written_as_text_everywhere(tmp_path):
    batch = EventBatch.from_sequences([[1.0], [2.0], [3.0]], seq_names=[None, 7, "a"])
    for suffix in FORMATS:
        back = read_events(write_events(batch, tmp_path / f"m{suffix}"))
        assert back.seq_names == ["None", "7", "a"], suffix  # and readable: no pickled object arrays


# ----------------------------------------------------------------------------- sparse or huge mark ids
def test_a_huge_csv_mark_id_is_refused_with_the_count_and_the_hint(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("seq,time,mark\na,1.0,0\na,2.0,1000000000\nb,1.0,5\n")
    start = time.perf_counter()
    with pytest.raises(EventDataError) as info:
        read_events(path)
    msg = str(info.value)
    assert "3 distinct marks" in msg and "1000000000" in msg and "remap_marks=True" in msg and "m.csv" in msg
    assert time.perf_counter() - start < 5


def test_a_huge_parquet_mark_id_is_refused_with_the_hint(tmp_path):
    table = pd.DataFrame({"seq": ["a", "b"], "time": [1.0, 2.0], "mark": np.array([2**40, 3])})
    table.to_parquet(tmp_path / "m.parquet")
    with pytest.raises(EventDataError, match=rf"2 distinct marks, but the largest id is {2**40}.*remap_marks=True"):
        read_events(tmp_path / "m.parquet")


def test_remap_marks_maps_sorted_ids_and_keeps_them(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("seq,time,mark\na,1.0,0\na,2.0,1000000000\nb,1.0,5\n")
    batch = read_events(path, remap_marks=True)
    assert batch.mark_names == (0, 5, 1000000000) and batch.num_marks == 3
    assert batch.mark[0].tolist() == [0, 2] and batch.mark[1, :1].tolist() == [1]


@pytest.mark.parametrize("suffix", FORMATS)
def test_remapped_marks_are_written_back_as_the_original_ids(tmp_path, suffix):
    df = pd.DataFrame({"seq": ["a", "a", "b"], "time": [1.0, 2.0, 1.0], "mark": [2**40, 7, 2**40]})
    batch = read_events(df, remap_marks=True)
    path = write_events(batch, tmp_path / f"r{suffix}")
    if suffix != ".npz":
        written = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        assert sorted(set(written["mark"].tolist())) == [7, 2**40]
    back = read_events(path, remap_marks=True)
    assert back == batch and back.mark_names == (7, 2**40)
    if suffix == ".npz":  # the file stores the mapping: no remap needed to read it back
        assert read_events(path) == batch


def test_text_marks_are_refused_unless_remapped(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("seq,time,mark\na,1.0,buy\na,2.0,sell\nb,1.0,buy\n")
    with pytest.raises(EventDataError, match=r"row 0, field 'mark'.*'buy'.*remap_marks=True"):
        read_events(path)
    batch = read_events(path, remap_marks=True)
    assert batch.mark_names == ("buy", "sell") and batch.mark[0].tolist() == [0, 1]
    back = read_events(write_events(batch, tmp_path / "back.csv"), remap_marks=True)
    assert back == batch


def test_mark_names_follow_indexing_split_concat_and_to():
    df = pd.DataFrame({"seq": list("aabbcc"), "time": [1.0, 2.0] * 3, "mark": ["x", "y", "y", "x", "x", "z"]})
    batch = read_events(df, remap_marks=True)
    names = ("x", "y", "z")
    assert batch[1].mark_names == names and batch[[0, 2]].mark_names == names
    assert all(p.mark_names == names for p in batch.split((0.5, 0.5), seed=1))
    assert EventBatch.concat([batch, batch]).mark_names == names
    assert batch.to(torch.float32).mark_names == names
    with pytest.raises(ValueError, match="mark_names"):
        EventBatch.concat([batch, batch._replace(mark_names=("p", "q", "r"))])


def test_a_table_cannot_silently_drop_an_unused_mark_name(tmp_path):
    df = pd.DataFrame({"seq": ["a", "b"], "time": [1.0, 1.0], "mark": ["x", "y"]})
    first = read_events(df, remap_marks=True)[0]  # "y" has no event left
    with pytest.raises(EventDataError, match="write .npz"):
        write_events(first, tmp_path / "t.csv")
    assert read_events(write_events(first, tmp_path / "t.npz")).mark_names == ("x", "y")


def test_dense_mark_ids_need_no_remap():
    df = pd.DataFrame({"seq": [0] * 1200, "time": np.arange(1200.0), "mark": np.arange(1200)})
    assert read_events(df).num_marks == 1200
    small = pd.DataFrame({"seq": [0, 0], "time": [1.0, 2.0], "mark": [0, 999]})
    assert read_events(small).num_marks == 1000  # small id spaces are taken as they are


def test_a_declared_num_marks_beyond_the_cap_is_refused(tmp_path):
    path = tmp_path / "n.csv"
    path.write_text("seq,time,mark,t_start,t_end,num_marks\na,1.0,1,0.0,1.0,1000000000\n")
    with pytest.raises(EventDataError, match="remap_marks=True"):
        read_events(path)


def test_a_mark_id_beyond_int64_is_refused_not_wrapped(tmp_path):
    (tmp_path / "f.csv").write_text("seq,time,mark\na,1.0,1e30\n")
    with pytest.raises(EventDataError, match="mark 1e\\+30 is too large"):
        read_events(tmp_path / "f.csv")


def test_easytpp_records_with_sparse_marks_are_refused_or_remapped(tmp_path):
    records = [{"dim_process": 0, "time_since_start": [0.5, 1.5], "type_event": [3, 10**9]}]
    (tmp_path / "d.json").write_text(json.dumps(records))
    with pytest.raises(EventDataError, match="remap_marks=True"):
        read_events(tmp_path / "d.json")
    assert read_events(tmp_path / "d.json", remap_marks=True).mark_names == (3, 10**9)


# ----------------------------------------------------------------------------- malformed .npz
GOOD = dict(times=np.array([0.5, 1.0, 2.0]), seq_offsets=np.array([0, 2, 3]), marks=np.array([0, 1, 0]))
MALFORMED = {
    "decreasing_offsets": (dict(GOOD, seq_offsets=np.array([0, 3, 2])), "seq_offsets"),
    "two_d_times": (dict(GOOD, times=np.array([[0.5, 1.0, 2.0]])), "times"),
    "fractional_offsets": (dict(GOOD, seq_offsets=np.array([0, 1.5, 3])), "seq_offsets"),
    "missing_offsets": ({"times": GOOD["times"], "marks": GOOD["marks"]}, "seq_offsets"),
    "missing_times": ({"seq_offsets": GOOD["seq_offsets"]}, "times"),
    "offsets_past_the_events": (dict(GOOD, seq_offsets=np.array([0, 2, 5])), "seq_offsets"),
    "offsets_short_of_the_events": (dict(GOOD, seq_offsets=np.array([0, 2])), "seq_offsets"),
    "short_marks": (dict(GOOD, marks=np.array([0, 1])), "marks"),
    "two_d_marks": (dict(GOOD, marks=np.array([[0, 1, 0]])), "marks"),
    "text_times": (dict(GOOD, times=np.array(["a", "b", "c"])), "times"),
    "window_of_wrong_length": (dict(GOOD, t_end=np.array([3.0, 3.0, 3.0])), "t_end"),
    "num_marks_array": (dict(GOOD, num_marks=np.array([2, 3])), "num_marks"),
    "num_marks_float": (dict(GOOD, num_marks=np.float64(2.5)), "num_marks"),
    "seq_names_short": (dict(GOOD, seq_names=np.array(["a"])), "seq_names"),
    "seq_names_pickled": (dict(GOOD, seq_names=np.array([None, "a"], dtype=object)), "seq_names"),
    "features_flat": (dict(GOOD, features=np.array([1.0, 2.0, 3.0]), feature_names=np.array(["x"])), "features"),
    "huge_mark": (dict(GOOD, marks=np.array([0, 2**40, 1])), "mark"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_npz_raises_a_located_data_error(tmp_path, name):
    arrays, field = MALFORMED[name]
    path = tmp_path / f"{name}.npz"
    np.savez(path, **arrays)
    with pytest.raises(EventDataError) as info:
        read_events(path)
    assert info.value.field == field and info.value.source == str(path), str(info.value)


def test_integral_float_offsets_are_read_as_integers(tmp_path):
    np.savez(tmp_path / "f.npz", **dict(GOOD, seq_offsets=np.array([0.0, 2.0, 3.0])))
    assert read_events(tmp_path / "f.npz").lengths.tolist() == [2, 1]


def test_a_renamed_npy_or_garbage_is_a_data_error(tmp_path):
    np.save(tmp_path / "one.npy", np.arange(3))
    (tmp_path / "one.npy").rename(tmp_path / "one.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really")
    for name in ("one.npz", "junk.npz"):
        with pytest.raises(EventDataError, match=name):
            read_events(tmp_path / name)


# ----------------------------------------------------------------------------- generated layouts
arrays_1d = st.one_of(
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), max_size=6).map(np.array),
    st.lists(st.integers(-3, 10), max_size=6).map(lambda x: np.array(x, np.int64)),
    st.lists(st.integers(-3, 10), min_size=1, max_size=6).map(lambda x: np.array(x, np.float64).reshape(1, -1)),
    st.lists(st.text(max_size=2), max_size=4).map(lambda x: np.array(x, dtype=str)),
    st.just(np.zeros((0,))),
    st.integers(-2, 2**41).map(np.int64),
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.sampled_from(["times", "seq_offsets", "marks", "t_start", "t_end", "num_marks",
                                        "seq_names", "mark_names", "features", "feature_names"]),
                       arrays_1d, max_size=8))
def test_any_npz_layout_reads_or_raises_our_error(tmp_path_factory, arrays):
    path = tmp_path_factory.mktemp("npz") / "x.npz"
    np.savez(path, **arrays)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            read_events(path)
        except EventDataError:
            pass
    assert time.perf_counter() - start < 10


cells = st.one_of(st.sampled_from(["", "NA", "None", "nan", "01", "1", "1e9", "-1", "buy", "inf", "1.5", "0",
                                   "2", "3.0", '"a,b"', "1e400"]), st.integers(-5, 5).map(str))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(cells, cells, cells), min_size=0, max_size=8), st.booleans())
def test_any_csv_table_reads_or_raises_our_error(tmp_path_factory, rows, remap):
    path = tmp_path_factory.mktemp("csv") / "x.csv"
    path.write_text("seq,time,mark\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    start = time.perf_counter()
    try:
        batch = read_events(path, remap_marks=remap)
        assert batch.num_marks <= 100_000
    except EventDataError:
        pass
    assert time.perf_counter() - start < 10
