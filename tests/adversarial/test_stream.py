"""Streamed event logs: :class:`tpp.stream.ParquetSource` reads sequence ids as text, as :func:`tpp.read_events`
does, so ``"01"`` and ``"1"`` are two sequences and an integer id 7 is the sequence ``"7"`` in both readers."""

from __future__ import annotations

import numpy as np
import pandas as pd

import tpp
from tpp.stream import EventLogWriter, ParquetSource


def test_ids_01_and_1_are_two_sequences(tmp_path):
    path = tmp_path / "ids.parquet"
    pd.DataFrame({"seq": ["01", "01", "1", "1", "1"], "time": [1.0, 2.0, 0.5, 1.5, 2.5],
                  "mark": [0, 0, 0, 0, 0]}).to_parquet(path)
    source = ParquetSource(path)
    assert source.num_sequences == 2 and source.lengths.tolist() == [2, 3]
    assert source.names(np.arange(2)) == ["01", "1"]
    assert source.load(np.arange(2)).seq_names == ["01", "1"] == tpp.read_events(path).seq_names


def test_integer_and_float_ids_read_as_the_same_text_as_read_events(tmp_path):
    for ids in ([7, 7, 12], [1.0, 1.0, 2.5]):
        path = tmp_path / f"ids_{type(ids[0]).__name__}.parquet"
        pd.DataFrame({"seq": ids, "time": [1.0, 2.0, 1.0], "mark": [0, 0, 0]}).to_parquet(path)
        source = ParquetSource(path)
        expected = tpp.read_events(path).seq_names
        assert all(isinstance(name, str) for name in expected)
        assert source.names(np.arange(2)) == expected
        assert source.load(np.array([1, 0])).seq_names == expected[::-1]
        assert source.standardisation_sample().seq_names == expected


def test_logs_written_without_names_read_back_with_text_ids(tmp_path):
    batch = tpp.hawkes.ExpHawkes.from_params([0.5], [[0.2]], 1.0).sample(3, 10.0, generator=0)
    with EventLogWriter(tmp_path / "log.parquet") as writer:
        writer.write(batch)
    source = ParquetSource(tmp_path / "log.parquet")
    assert source.names(np.arange(3)) == ["0", "1", "2"] == tpp.read_events(tmp_path / "log.parquet").seq_names
