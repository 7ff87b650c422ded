"""Series batches and readers under bad labels and unobserved series (issue 13).

A missing label is refused naming the series, never made a class of its own; a series whose every
value is missing is refused by the readers and announced by a warning elsewhere.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from sde.readers import read_csv_series, read_tsf
from sde.series import SeriesBatch, SeriesDataError


def pairs(n: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.arange(3.0), np.arange(3.0) + b) for b in range(n)]


@pytest.mark.parametrize("missing", [float("nan"), None, pd.NA])
def test_from_arrays_refuses_a_missing_label_naming_the_series(missing):
    with pytest.raises(SeriesDataError) as info:
        SeriesBatch.from_arrays(pairs(), ["up", missing, "down"], ids=["r0", "r1", "r2"])
    err = info.value
    assert err.series == 1 and err.series_id == "r1" and err.field == "labels"
    assert "series 1" in str(err) and "'r1'" in str(err)


def test_nan_among_numeric_labels_is_refused_not_a_class():
    with pytest.raises(SeriesDataError, match="series 2.*field 'labels'.*missing"):
        SeriesBatch.from_arrays(pairs(), np.array([0.0, 1.0, np.nan]))


def test_from_flat_refuses_a_missing_label_naming_the_series():
    times = np.tile(np.arange(2.0), 2)
    with pytest.raises(SeriesDataError) as info:
        SeriesBatch.from_flat(times, times, np.array([0, 2, 4]), np.array([np.nan, 1.0]), ids=["a", "b"],
                              source="f.csv")
    assert info.value.series == 0 and info.value.series_id == "a" and "f.csv" in str(info.value)


def test_from_dataframe_refuses_a_missing_label_naming_the_series():
    df = pd.DataFrame({"id": ["a", "a", "b", "b"], "t": [0.0, 1.0, 0.0, 1.0], "x": [1.0, 2.0, 3.0, 4.0],
                       "y": ["up", "up", None, None]})
    with pytest.raises(SeriesDataError) as info:
        SeriesBatch.from_dataframe(df, "id", "t", ["x"], "y", source="table.csv")
    assert info.value.series == 1 and info.value.series_id == "b" and info.value.field == "labels"


def test_labels_that_are_present_still_map_to_sorted_classes():
    batch = SeriesBatch.from_arrays(pairs(), ["up", "down", "up"])
    assert batch.class_names == ("down", "up") and batch.labels.tolist() == [1, 0, 1]


def test_from_dataframe_refuses_a_series_without_any_value():
    df = pd.DataFrame({"id": ["a", "a", "b"], "t": [0.0, 1.0, 0.0], "x": [1.0, np.nan, np.nan]})
    with pytest.raises(SeriesDataError, match="every value is missing") as info:
        SeriesBatch.from_dataframe(df, "id", "t", ["x"])
    assert info.value.series == 1 and info.value.series_id == "b"


def test_from_arrays_warns_naming_a_series_without_any_value():
    series = [(np.arange(2.0), np.array([1.0, 2.0])), (np.arange(2.0), np.full(2, np.nan))]
    with pytest.warns(UserWarning, match=r"1 series without any observed value \('quiet'\)"):
        batch = SeriesBatch.from_arrays(series, ids=["loud", "quiet"])
    assert len(batch) == 2
    with pytest.raises(SeriesDataError, match="every value is missing"):
        SeriesBatch.from_arrays(series, ids=["loud", "quiet"], allow_unobserved=False)


def test_observed_series_give_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SeriesBatch.from_arrays(pairs())


def test_tsf_reader_refuses_an_all_missing_series(tmp_path):
    path = tmp_path / "m.tsf"
    path.write_text("@attribute series_name string\n@data\nT1:1,2,3\nT2:?,?,?\n")
    with pytest.raises(SeriesDataError) as info:
        read_tsf(path)
    assert info.value.series == 1 and info.value.series_id == "T2" and "m.tsf" in str(info.value)


def test_csv_series_reader_refuses_an_all_missing_series(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("a,b\n,\n,\n")
    with pytest.raises(SeriesDataError, match="every value is missing"):
        read_csv_series(path)


def test_split_of_labelled_series_is_unchanged_by_the_label_check():
    batch = SeriesBatch.from_arrays(pairs(6), [0, 1, 0, 1, 0, 1])
    train, test = batch.split((0.5, 0.5), seed=0)
    assert len(train) == 3 and sorted(train.labels.tolist()) in ([0, 0, 1], [0, 1, 1])
    assert torch.equal(torch.cat([train.labels, test.labels]).sort().values, torch.tensor([0, 0, 0, 1, 1, 1]))
