"""read_events / write_events: every format, lossless round trips, errors naming file and row."""

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch

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


# ----------------------------------------------------------------------------- continuous per-event features
@pytest.fixture
def featured(batch, rng):
    flat = batch.to_flat()
    values = np.column_stack([rng.uniform(130, 145, flat["times"].size), rng.uniform(30, 45, flat["times"].size)])
    return EventBatch.from_flat(**flat, num_marks=batch.num_marks, features=values, feature_names=["lon", "lat"],
                                seq_names=batch.seq_names)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".npz"])
def test_round_trip_keeps_features_exactly(tmp_path, featured, suffix):
    path = write_events(featured, tmp_path / f"events{suffix}")
    back = read_events(path)  # a written file declares its features
    assert back == featured and back.feature_names == ("lon", "lat")
    assert torch.equal(back.features[back.mask], featured.features[featured.mask])
    assert read_events(path, features=["lat"]).feature_names == ("lat",)
    assert read_events(path, features=[]).features is None


def test_table_keeps_the_requested_feature_columns(tmp_path):
    df = pd.DataFrame({"seq": ["a", "a", "b"], "time": [1.0, 2.0, 0.5], "lon": [139.1, 139.2, 140.0],
                       "lat": [35.0, 35.5, 36.0], "place": ["Tokyo", "Tokyo", "Chiba"]})
    b = read_events(df, features=["lat", "lon"])
    assert b.feature_names == ("lat", "lon") and b.features[0, :, 1].tolist() == [139.1, 139.2]
    assert read_events(df).features is None  # a table of one's own: features only when asked for
    df.to_csv(tmp_path / "q.csv", index=False)
    assert read_events(tmp_path / "q.csv", features=["lat", "lon"]) == b


def test_a_missing_feature_names_the_file_and_the_field(tmp_path, featured):
    (tmp_path / "q.csv").write_text("seq,time,lon\na,1.0,139.0\n")
    with pytest.raises(EventDataError, match=r"q\.csv, field 'depth': missing feature column 'depth'"):
        read_events(tmp_path / "q.csv", features=["depth"])
    path = write_events(featured, tmp_path / "q.npz")
    with pytest.raises(EventDataError, match=r"q\.npz, field 'depth': no feature 'depth'.*features \['lon', 'lat'\]"):
        read_events(path, features=["depth"])


def test_a_bad_feature_value_names_file_row_and_field(tmp_path):
    (tmp_path / "q.csv").write_text("seq,time,lon\na,1.0,139.0\na,2.0,east\n")
    with pytest.raises(EventDataError, match=r"q\.csv, row 1, field 'lon'.*'east'"):
        read_events(tmp_path / "q.csv", features=["lon"])
    (tmp_path / "r.csv").write_text("seq,time,lon\na,1.0,139.0\nb,2.0,inf\n")
    with pytest.raises(EventDataError) as info:
        read_events(tmp_path / "r.csv", features=["lon"])
    assert (info.value.sequence, info.value.position, info.value.row, info.value.field) == ("b", 0, 1, "lon")


def test_npz_flat_arrays_aligned_with_times_are_features_by_name(tmp_path):
    np.savez(tmp_path / "cat.npz", times=np.array([0.5, 1.0, 2.0]), seq_offsets=np.array([0, 2, 3]),
             t_start=np.zeros(2), t_end=np.full(2, 3.0), lon=np.array([1.0, 2.0, 3.0]), mag=np.array([4, 5, 6]),
             seq_level=np.array([7.0, 8.0]))
    b = read_events(tmp_path / "cat.npz", features=["mag", "lon"])
    assert b.feature_names == ("mag", "lon") and b.features[0, :, 0].tolist() == [4.0, 5.0]
    assert read_events(tmp_path / "cat.npz").features is None
    with pytest.raises(EventDataError, match=r"field 'seq_level'.*one real number per event \(3\)"):
        read_events(tmp_path / "cat.npz", features=["seq_level"])


def test_easytpp_records_keep_feature_keys(tmp_path):
    seqs = [[{"time_since_start": 0.5, "type_event": 1, "lon": 1.0}, {"time_since_start": 1.5, "type_event": 0,
                                                                       "lon": 2.0}]]
    with open(tmp_path / "d.pkl", "wb") as fh:
        pickle.dump({"dim_process": 2, "train": seqs}, fh)
    b = read_events(tmp_path / "d.pkl", features=["lon"])
    assert b.feature_names == ("lon",) and b.features[0, :, 0].tolist() == [1.0, 2.0]
    records = [{"dim_process": 2, "time_since_start": [0.5, 1.5], "type_event": [1, 0], "lon": [1.0, 2.0]}]
    (tmp_path / "d.json").write_text(json.dumps(records))
    assert read_events(tmp_path / "d.json", features=["lon"]) == b
    with pytest.raises(EventDataError, match=r"sequence 0, position 0, field 'lat'"):
        read_events(tmp_path / "d.pkl", features=["lat"])


def test_json_rows_and_json_lines_are_tables_with_features(tmp_path):
    rows = [{"seq": "a", "time": 0.5, "mark": 0, "lon": 1.25}, {"seq": "a", "time": 1.5, "mark": 1, "lon": -2.5}]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    expected = read_events(pd.DataFrame(rows), features=["lon"])
    assert read_events(tmp_path / "rows.json", features=["lon"]) == expected
    assert read_events(tmp_path / "rows.jsonl", features=["lon"]) == expected
    (tmp_path / "bad.jsonl").write_text(json.dumps(rows[0]) + "\n{oops\n")
    with pytest.raises(EventDataError, match=r"bad\.jsonl, line 2: invalid JSON"):
        read_events(tmp_path / "bad.jsonl")


def test_a_feature_named_like_a_table_column_cannot_be_written(tmp_path):
    b = EventBatch.from_sequences([[1.0]], features=[[2.0]], feature_names=["time"])
    with pytest.raises(EventDataError, match="field 'time'.*rename it"):
        write_events(b, tmp_path / "e.csv")
    assert read_events(write_events(b, tmp_path / "e.npz")) == b  # the npz layout has no such clash


def test_tick_layout_has_no_features():
    with pytest.raises(EventDataError, match="no per-event features"):
        read_events([np.array([0.5])], features=["lon"])


@needs_data
@pytest.mark.parametrize(
    "path, features",
    [
        ("earthquakes_japan/earthquakes_japan_train.npz", ["lon", "lat"]),
        ("ridgecrest2019_comcat/ridgecrest2019.npz", ["lon", "lat", "magnitude", "depth"]),
        ("phuket_earthquakes/phuket.npz", ["lon", "lat", "magnitude"]),
        ("chicago_shootings/chicago_shootings.npz", ["lon", "lat"]),
        ("boko_haram_ucdp/boko_haram.npz", ["lon", "lat"]),
    ],
)
def test_registry_files_with_locations_load_them_as_features(path, features):
    b = read_events(f"{SHARED_DATA}/{path}", features=features)
    raw = np.load(f"{SHARED_DATA}/{path}")
    assert b.feature_names == tuple(features) and b.features.dtype == torch.float64
    for d, name in enumerate(features):
        np.testing.assert_array_equal(b.features[b.mask][:, d].numpy(), raw[name])
    assert b == read_events(f"{SHARED_DATA}/{path}", features=features)[:]
