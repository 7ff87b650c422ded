"""SeriesBatch: construction, canonical padding, validation messages, views, splits and round trips."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from sde.series import SeriesBatch, SeriesDataError
from tpp.events import EventDataError


def ragged(seed: int = 0, lengths=(5, 2, 7, 1), channels: int = 3, labels: bool = True) -> SeriesBatch:
    rng = np.random.default_rng(seed)
    series = []
    for n in lengths:
        t = np.cumsum(rng.exponential(size=n))
        v = rng.normal(size=(n, channels))
        v[rng.random((n, channels)) < 0.3] = np.nan
        series.append((t, v))
    lab = rng.integers(0, 3, len(lengths)) if labels else None
    return SeriesBatch.from_arrays(series, lab, class_names=("a", "b", "c") if labels else ())


def test_padding_is_canonical_last_time_and_nan_values():
    b = SeriesBatch.from_arrays([(np.array([0.0, 1.0, 3.0]), np.ones((3, 2))), (np.array([0.5, 2.0]), np.ones((2, 2)))])
    assert b.time.dtype == torch.float64 and b.values.shape == (2, 3, 2)
    assert b.mask.tolist() == [[True, True, True], [True, True, False]]
    assert b.time[1].tolist() == [0.5, 2.0, 2.0]  # padding repeats the last time: ordered and finite
    assert torch.isnan(b.values[1, 2]).all() and not torch.isnan(b.values[0]).any()
    assert b.lengths.tolist() == [3, 2] and b.num_events == 5 and len(b) == 2 and b.num_channels == 2
    assert b.channel_names == ("x0", "x1")


def test_nan_padded_input_equals_unpadded_input():
    t = np.array([0.0, 1.0, 2.5])
    v = np.array([[1.0, np.nan], [2.0, 3.0], [np.nan, 4.0]])
    plain = SeriesBatch.from_arrays([(t, v), (t[:2], v[:2])], labels=[0, 1])
    padded = SeriesBatch.from_arrays(
        [(np.r_[t, np.nan, np.nan], np.r_[v, np.full((2, 2), np.nan)]),
         (np.r_[t[:2], np.nan], np.r_[v[:2], [[np.nan] * 2]])],
        labels=[0, 1])
    assert padded == plain
    # the padded-tensor constructor canonicalises whatever sits on the padding
    garbage = SeriesBatch(torch.tensor([[0.0, 1.0, 2.5], [0.0, 1.0, -7.0]], dtype=torch.float64),
                          torch.tensor(np.stack([v, np.r_[v[:2], [[5.0, 6.0]]]])),
                          torch.tensor([[True, True, True], [True, True, False]]), torch.tensor([0, 1]))
    assert garbage == plain
    assert garbage.time[1, 2] == 1.0 and torch.isnan(garbage.values[1, 2]).all()


@pytest.mark.parametrize(
    "series, field, b, row, fragment",
    [
        ([([0.0, 1.0], [1.0, 2.0]), ([0.0, 2.0, 1.0], [1.0, 2.0, 3.0])], "time", 1, 2, "strictly increasing"),
        ([([0.0, 1.0, 1.0], [1.0, 2.0, 3.0])], "time", 0, 2, "strictly increasing"),
        ([([0.0, 1.0], [1.0, 2.0]), ([0.0, np.inf], [1.0, 2.0])], "time", 1, 1, "finite"),
        ([([0.0, 1.0, 2.0], [1.0, -np.inf, 2.0])], "values", 0, 1, "finite or NaN"),
        ([([0.0, np.nan, 2.0], [1.0, np.nan, 2.0])], "time", 0, 1, "padding"),
        ([([0.0, np.nan], [1.0, 5.0])], "values", 0, 1, "padding row"),
        ([([0.0, 1.0], [[1.0, 2.0], [3.0, 4.0]]), ([0.0], [[1.0, 2.0, 3.0]])], "values", 1, None, "channels"),
        ([([0.0, 1.0], [1.0])], "values", 0, None, "L = 2"),
        ([([0.0, 1.0], [1.0, 2.0]), ([np.nan], [np.nan])], "mask", 1, None, "no rows"),
    ],
)
def test_validation_names_series_row_and_field(series, field, b, row, fragment):
    with pytest.raises(SeriesDataError) as info:
        SeriesBatch.from_arrays([(np.asarray(t, float), np.asarray(v, float)) for t, v in series], source="demo.csv")
    err = info.value
    assert isinstance(err, EventDataError)  # the trainer and tpp code catch the one error type
    assert (err.field, err.series, err.row) == (field, b, row)
    assert fragment in str(err) and "demo.csv" in str(err) and f"series {b}" in str(err)
    if row is not None:
        assert f"row {row}" in str(err)


def test_label_and_target_and_shape_errors():
    t, v = torch.tensor([[0.0, 1.0]], dtype=torch.float64), torch.ones(1, 2, 1, dtype=torch.float64)
    m = torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(SeriesDataError, match=r"series 0, field 'labels': label 3 >= number of classes 2"):
        SeriesBatch(t, v, m, torch.tensor([3]), class_names=("no", "yes"))
    with pytest.raises(SeriesDataError, match="negative"):
        SeriesBatch(t, v, m, torch.tensor([-1]))
    with pytest.raises(SeriesDataError, match="integer"):
        SeriesBatch(t, v, m, torch.tensor([0.5]))
    with pytest.raises(SeriesDataError, match=r"field 'targets'"):
        SeriesBatch(t, v, m, targets=torch.tensor([[np.inf]]))
    with pytest.raises(SeriesDataError, match="left-aligned"):
        SeriesBatch(t, v, torch.tensor([[False, True]]))
    with pytest.raises(SeriesDataError, match=r"values must be \[B, L, C\]"):
        SeriesBatch(t, torch.ones(2, 2, 1), m)
    with pytest.raises(SeriesDataError, match="channel_names"):
        SeriesBatch(t, v, m, channel_names=("a", "b"))
    with pytest.raises(SeriesDataError, match=r"series 0 \(id 'rec-7'\), row 1"):
        SeriesBatch(torch.tensor([[1.0, 0.0]], dtype=torch.float64), v, m, ids=["rec-7"])


def test_labels_by_name_keep_class_names():
    s = [(np.arange(2.0), np.ones(2))] * 3
    b = SeriesBatch.from_arrays(s, labels=["walk", "run", "walk"])
    assert b.class_names == ("run", "walk") and b.labels.tolist() == [1, 0, 1] and b.num_classes == 2
    b = SeriesBatch.from_arrays(s, labels=["walk", "run", "walk"], class_names=("walk", "run", "swim"))
    assert b.labels.tolist() == [0, 1, 0] and b.num_classes == 3
    with pytest.raises(SeriesDataError, match=r"series 1, field 'labels': label 'jump'"):
        SeriesBatch.from_arrays(s, labels=["walk", "jump", "walk"], class_names=("walk", "run"))
    assert SeriesBatch.from_arrays(s).num_classes is None


def test_getitem_selects_series_and_trims_to_the_longest():
    b = ragged()
    assert b.max_length == 7
    one = b[1]
    assert len(one) == 1 and one.max_length == 2 and one.labels.tolist() == b.labels[1:2].tolist()
    assert b[-1].max_length == 1 and b[-1] == b[3:]
    sub = b[np.array([3, 0])]
    assert sub.max_length == 5 and sub.lengths.tolist() == [1, 5]
    assert torch.equal(sub.time[1, :5], b.time[0, :5])
    assert b[np.array([True, False, False, True])] == b[[0, 3]]
    assert b[torch.tensor([2])] == b[2:3]
    with pytest.raises(IndexError):
        b[np.array([4])]


def test_series_round_trip_and_concat_of_slices():
    b = ragged()
    assert SeriesBatch.from_arrays(b.series(), b.labels.numpy(), class_names=b.class_names) == b
    assert SeriesBatch.concat([b[:1], b[1:3], b[3:]]) == b
    with pytest.raises(ValueError, match="channel_names"):
        SeriesBatch.concat([b, ragged(channels=2)])
    with pytest.raises(ValueError, match="labels"):
        SeriesBatch.concat([b, ragged(labels=False)])


def test_split_is_a_reproducible_partition_and_stratifies_labels():
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    rng.shuffle(labels)
    b = SeriesBatch.from_arrays([(np.arange(3.0) + i, np.full(3, float(i))) for i in range(100)], labels)
    parts = b.split((0.6, 0.2, 0.2), seed=7)
    again = b.split((0.6, 0.2, 0.2), seed=7)
    assert all(p == q for p, q in zip(parts, again))
    ids = [p.values[:, 0, 0].long().numpy() for p in parts]  # value 0 = original index
    assert sorted(np.concatenate(ids).tolist()) == list(range(100))
    for p, f in zip(parts, (0.6, 0.2, 0.2)):
        counts = np.bincount(p.labels.numpy(), minlength=3)
        assert np.all(np.abs(counts - f * np.array([50, 30, 20])) <= 1)  # every class in proportion
    assert [len(p) for p in b.split((0.6, 0.2, 0.2), seed=7, stratify=False)] == [60, 20, 20]
    assert not all(p == q for p, q in zip(parts, b.split((0.6, 0.2, 0.2), seed=8)))
    with pytest.raises(ValueError, match="sum to 1"):
        b.split((0.5, 0.2))


def test_to_changes_dtype_keeps_mask_and_labels():
    b = ragged()
    f = b.to(dtype=torch.float32)
    assert f.dtype == torch.float32 and f.values.dtype == torch.float32 and f.labels.dtype == torch.long
    assert f.device == b.device and f.mask.dtype == torch.bool
    assert torch.allclose(f.time.double(), b.time, atol=1e-6)


def test_observed_and_counts_on_rows_only():
    b = ragged()
    obs = b.observed
    assert obs.shape == b.values.shape
    assert int(obs.sum()) == int((~torch.isnan(b.values[b.mask])).sum())
    assert not obs[~b.mask].any()


def test_dataclasses_replace_revalidates():
    b = ragged()
    moved = dataclasses.replace(b, time=b.time + 1.0)
    assert torch.equal(moved.time[moved.mask], b.time[b.mask] + 1.0)
    with pytest.raises(SeriesDataError, match="strictly increasing"):
        dataclasses.replace(b, time=-b.time)


def test_from_dataframe_groups_by_id_and_checks_order_and_labels():
    df = pd.DataFrame({
        "pid": ["p2", "p2", "p1", "p2", "p1"],
        "t": [0.0, 1.0, 0.5, 3.0, 2.0],
        "hr": [80.0, np.nan, 70.0, 90.0, 75.0],
        "temp": [37.0, 37.5, np.nan, 38.0, 36.9],
        "died": ["yes", "yes", "no", "yes", "no"],
    })
    b = SeriesBatch.from_dataframe(df, "pid", "t", ["hr", "temp"], "died")
    assert b.ids == ("p2", "p1") and b.lengths.tolist() == [3, 2]
    assert b.time[0].tolist() == [0.0, 1.0, 3.0] and b.channel_names == ("hr", "temp")
    assert b.class_names == ("no", "yes") and b.labels.tolist() == [1, 0]
    bad = df.copy()
    bad.loc[4, "t"] = 0.1
    with pytest.raises(SeriesDataError, match=r"series 1 \(id 'p1'\), row 1, field 't'.*table row 4"):
        SeriesBatch.from_dataframe(bad, "pid", "t", ["hr", "temp"], "died", source="icu.csv")
    bad = df.copy()
    bad.loc[3, "died"] = "no"
    with pytest.raises(SeriesDataError, match=r"series 0 \(id 'p2'\), row 2, field 'died'"):
        SeriesBatch.from_dataframe(bad, "pid", "t", ["hr", "temp"], "died")
    bad = df.copy()
    bad["hr"] = bad["hr"].astype(object)
    bad.loc[1, "hr"] = "high"
    with pytest.raises(SeriesDataError, match=r"field 'hr'.*'high' is not a number"):
        SeriesBatch.from_dataframe(bad, "pid", "t", ["hr", "temp"])
    with pytest.raises(SeriesDataError, match="no column"):
        SeriesBatch.from_dataframe(df, "pid", "time", ["hr"])


def _reference_split(labels: np.ndarray | None, n: int, fractions, seed: int) -> list[list[int]]:
    """The split of earlier versions, written out: systematic allocation per class (random offset), or over
    one permutation at offset 1/2 without labels."""
    rng = np.random.default_rng(seed)
    strata = labels if labels is not None else np.zeros(n, np.int64)
    part = np.empty(n, np.int64)
    cuts = np.cumsum(fractions)[:-1]
    for c in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == c))
        u = rng.random() if labels is not None else 0.5
        part[members] = np.searchsorted(cuts, (np.arange(members.size) + u) / members.size, side="right")
    return [np.flatnonzero(part == k).tolist() for k in range(len(fractions))]


@pytest.mark.parametrize("n", [5, 7, 15, 30, 61])
@pytest.mark.parametrize("fractions", [(0.7, 0.15, 0.15), (0.5, 0.5), (0.85, 0.15)])
@pytest.mark.parametrize("stratify", [True, False])
def test_split_is_the_split_of_earlier_versions(n, fractions, stratify):
    """Results (and benchmarks) depend on the exact split, labelled or not."""
    labels = np.arange(n) % 2
    b = SeriesBatch.from_arrays([(np.arange(2.0), np.full(2, float(i))) for i in range(n)], labels)
    unlabelled = SeriesBatch.from_arrays([(np.arange(2.0), np.full(2, float(i))) for i in range(n)])
    for seed in range(3):
        for batch, lab in ((b, labels if stratify else None), (unlabelled, None)):
            expected = _reference_split(lab, n, fractions, seed)
            if any(not p for p in expected):
                continue
            got = batch.split(fractions, seed, stratify=stratify)
            assert [p.values[:, 0, 0].long().tolist() for p in got] == expected
