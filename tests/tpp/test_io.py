"""read_events / write_events: every format, lossless round trips, errors naming file and row."""

import json
import pickle

import numpy as np
import pandas as pd
import pytest

from tpp import EventBatch, EventDataError, read_events, write_events
from tpp.io import to_tick

from ..conftest import SHARED_DATA, needs_data


@pytest.fixture
def batch(rng):
    times = [np.sort(rng.uniform(0, 10, n)) for n in (5, 1, 8)]
    marks = [rng.integers(0, 3, t.size) for t in times]
    return EventBatch.from_sequences(times, marks, t_start=[0.0, -1.0, 0.5], t_end=[10.0, 11.0, 12.5], num_marks=4,
                                     seq_names=["a", "b", "c"])


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".npz"])
def test_round_trip_is_lossless(tmp_path, batch, suffix):
    path = write_events(batch, tmp_path / f"events{suffix}")
    back = read_events(path)
    assert back == batch  # exact float64 times, marks, windows and num_marks
    assert back.seq_names == batch.seq_names


def test_write_is_atomic_no_temp_files_left(tmp_path, batch):
    write_events(batch, tmp_path / "e.csv")
    assert [p.name for p in tmp_path.iterdir()] == ["e.csv"]


def test_dataframe_groups_by_sequence_in_order_of_appearance():
    df = pd.DataFrame({"user": ["x", "y", "x", "y"], "t": [1.0, 0.5, 2.0, 0.7], "type": [0, 1, 1, 0]})
    b = read_events(df, seq="user", time="t", mark="type", t_end=3.0)
    assert b.seq_names == ["x", "y"]
    assert b.time[0].tolist() == [1.0, 2.0] and b.mark[1].tolist() == [1, 0]
    assert b.t_end.tolist() == [3.0, 3.0]


def test_dataframe_without_seq_and_mark_is_one_unmarked_sequence():
    b = read_events(pd.DataFrame({"time": [0.1, 0.2]}))
    assert len(b) == 1 and b.num_marks == 1 and b.t_end.item() == 0.2


def test_per_sequence_t_end_column():
    df = pd.DataFrame({"seq": [0, 0, 1], "time": [1.0, 2.0, 1.0], "T": [5.0, 5.0, 9.0]})
    assert read_events(df, t_end="T").t_end.tolist() == [5.0, 9.0]


def test_csv_errors_name_file_row_and_field(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("seq,time,mark\na,1.0,0\na,oops,1\n")
    with pytest.raises(EventDataError) as info:
        read_events(path)
    msg = str(info.value)
    assert "bad.csv" in msg and "row 1" in msg and "'time'" in msg and "oops" in msg


def test_unsorted_rows_error_names_sequence_and_row(tmp_path):
    path = tmp_path / "unsorted.csv"
    path.write_text("seq,time,mark\na,1.0,0\nb,5.0,0\na,0.5,1\n")
    with pytest.raises(EventDataError) as info:
        read_events(path)
    err = info.value
    assert err.sequence == "a" and err.row == 2 and err.position == 1 and err.field == "time"


def test_missing_column_and_empty_table(tmp_path):
    with pytest.raises(EventDataError, match="missing column 'time'"):
        read_events(pd.DataFrame({"when": [1.0]}))
    with pytest.raises(EventDataError, match="empty"):
        read_events(pd.DataFrame({"time": []}))


def test_easytpp_pickle_and_json_layouts(tmp_path):
    seqs = [[{"time_since_start": 0.5, "time_since_last_event": 0.5, "type_event": 1},
             {"time_since_start": 1.5, "time_since_last_event": 1.0, "type_event": 0}]]
    with open(tmp_path / "d.pkl", "wb") as fh:
        pickle.dump({"dim_process": 3, "train": seqs}, fh)
    b = read_events(tmp_path / "d.pkl")
    assert b.num_marks == 3 and b.time[0].tolist() == [0.5, 1.5] and b.mark[0].tolist() == [1, 0]
    records = [{"dim_process": 3, "seq_idx": 0, "time_since_start": [0.5, 1.5], "type_event": [1, 0]}]
    (tmp_path / "d.json").write_text(json.dumps(records))
    assert read_events(tmp_path / "d.json") == b


def test_tick_list_of_arrays_round_trip():
    events = [np.array([0.5, 2.0]), np.array([1.0])]
    b = read_events(events)
    assert b.mark[0].tolist() == [0, 1, 0]
    back = to_tick(b)[0]
    assert all(np.array_equal(x, y) for x, y in zip(back, events))
    several = read_events([events, [np.array([0.1]), np.array([])]])
    assert len(several) == 2 and several.lengths.tolist() == [3, 1]


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(EventDataError, match="no such file"):
        read_events(tmp_path / "nope.csv")
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(EventDataError, match="unknown file type"):
        read_events(tmp_path / "x.txt")


@needs_data
def test_reads_the_shared_npz_layout():
    b = read_events(f"{SHARED_DATA}/taxi/taxi.npz")
    assert len(b) == 182 and b.num_events == 17904
    assert float(b.t_end.max()) == 24.0


@needs_data
def test_reads_the_anhp_easytpp_pickle():
    b = read_events(f"{SHARED_DATA}/anhp_synthetic/anhp_train.pkl", split="train")
    assert len(b) == 800 and b.num_marks == 50 and b.num_events == 4000


def test_written_files_get_ordinary_permissions(tmp_path, batch):
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    path = write_events(batch, tmp_path / "e.npz")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
