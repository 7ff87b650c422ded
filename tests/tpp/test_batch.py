"""The batch base: one error hierarchy, and indexing/to/split/concat/equality written once for every batch type."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from sde.series import SeriesBatch, SeriesDataError
from tpp.batch import DataError, PaddedBatch, check_offsets, first_true, pad_flat
from tpp.events import EventBatch, EventDataError


def events(seed: int = 0, lengths=(3, 0, 5, 1, 2)) -> EventBatch:
    rng = np.random.default_rng(seed)
    times = [np.sort(rng.uniform(0, 10, n)) for n in lengths]
    return EventBatch.from_sequences(
        times, [rng.integers(0, 3, n) for n in lengths], t_end=10.0, num_marks=3,
        features=[rng.normal(size=(n, 2)) for n in lengths], feature_names=["lon", "lat"],
        seq_names=[f"s{i}" for i in range(len(lengths))])


def series(seed: int = 0, lengths=(3, 1, 5, 2, 4)) -> SeriesBatch:
    rng = np.random.default_rng(seed)
    data = []
    for n in lengths:
        v = rng.normal(size=(n, 2))
        v[rng.random((n, 2)) < 0.3] = np.nan
        data.append((np.cumsum(rng.exponential(size=n)), v))
    return SeriesBatch.from_arrays(data, rng.integers(0, 2, len(lengths)), class_names=("a", "b"),
                                   ids=[f"r{i}" for i in range(len(lengths))])


BATCHES = {"events": events, "series": series}


@pytest.fixture(params=list(BATCHES))
def batch(request: pytest.FixtureRequest) -> PaddedBatch:
    return BATCHES[request.param]()


# ----------------------------------------------------------------------------- errors
def test_data_errors_are_one_hierarchy_of_value_errors():
    assert issubclass(EventDataError, DataError) and issubclass(SeriesDataError, EventDataError)
    assert issubclass(DataError, ValueError)
    assert EventBatch.error is EventDataError and SeriesBatch.error is SeriesDataError


def test_data_error_message_names_file_line_sequence_position_row_and_field():
    err = DataError("bad value", source="f.csv", line=9, sequence=2, sequence_name="x", position=3, row=7,
                    field="time")
    assert str(err) == "f.csv, line 9, sequence 2 (name 'x'), position 3, row 7, field 'time': bad value"
    assert (err.source, err.line, err.sequence, err.position, err.row, err.field) == ("f.csv", 9, 2, 3, 7, "time")
    assert str(DataError("plain")) == "plain" and err.detail == err.message == "bad value"


def test_each_family_names_a_sequence_in_its_own_words():
    assert str(EventDataError("x", sequence="a", position=1)) == "sequence 'a', position 1: x"
    err = SeriesDataError("x", series=1, series_id="p1", row=2, field="hr")
    assert str(err) == "series 1 (id 'p1'), row 2, field 'hr': x"
    assert (err.sequence, err.position, err.row, err.series, err.series_id) == (1, 2, 2, 1, "p1")


@pytest.mark.parametrize("error", [EventDataError("bad", sequence=1, position=2, field="mark"),
                                   SeriesDataError("bad", series=1, series_id="p", row=2, field="hr")])
def test_with_source_adds_the_file_and_keeps_every_attribute(error: DataError):
    located = error.with_source("data.csv")
    assert type(located) is type(error) and str(located) == f"data.csv, {error}"
    assert located.source == "data.csv" and error.source is None
    for name in ("sequence", "position", "row", "field", "detail"):
        assert getattr(located, name) == getattr(error, name)


def test_batch_errors_name_the_sequence_by_name_and_the_position():
    b = events()
    with pytest.raises(EventDataError, match=r"sequence 's2', position 1, field 'mask': mask must be left-aligned"):
        EventBatch(b.time, b.mark, torch.tensor([[1, 1, 1, 0, 0]] * 2 + [[1, 0, 1, 0, 0]] + [[1, 0, 0, 0, 0]] * 2,
                                                dtype=torch.bool), b.t_start, b.t_end, 3, seq_names=b.seq_names)
    with pytest.raises(EventDataError, match="2 seq_names for 5 sequences"):
        EventBatch(b.time, b.mark, b.mask, b.t_start, b.t_end, 3, seq_names=["a", "b"])


# ----------------------------------------------------------------------------- helpers
def test_pad_flat_pads_left_aligned_with_a_fill_per_sequence():
    padded, mask = pad_flat(np.array([1.0, 2.0, 3.0]), np.array([0, 2, 2, 3]), np.array([9.0, 8.0, 7.0]))
    assert mask.tolist() == [[True, True], [False, False], [True, False]]
    assert padded.tolist() == [[1.0, 2.0], [8.0, 8.0], [3.0, 7.0]]
    rows, _ = pad_flat(np.arange(6.0).reshape(3, 2), np.array([0, 1, 3]), np.nan)
    assert rows.shape == (2, 2, 2) and np.isnan(rows[0, 1]).all() and rows[1].tolist() == [[2, 3], [4, 5]]


@pytest.mark.parametrize("offsets", [[1, 3], [0, 2], [0, 3, 2, 3], [0.5, 3], [[0, 3]]])
def test_check_offsets_rejects_what_does_not_cut_the_rows(offsets: Any):
    with pytest.raises(EventDataError, match="start at 0"):
        check_offsets(np.asarray(offsets), 3, EventDataError, "x.npz", "seq_offsets")
    assert check_offsets(np.array([0.0, 3.0]), 3, EventDataError, None, "offsets").dtype == np.int64


def test_first_true_is_row_major():
    assert first_true(torch.tensor([[False, False], [True, True]])) == (1, 0)
    assert first_true(torch.zeros(2, 2, dtype=torch.bool)) is None


# ----------------------------------------------------------------------------- shared behaviour, both families
def test_every_index_form_selects_the_same_sequences(batch: PaddedBatch):
    expected = batch[[1, 3]]
    assert batch[np.array([1, 3])] == expected
    assert batch[torch.tensor([1, 3])] == expected
    assert batch[np.array([False, True, False, True, False])] == expected
    assert batch[1:4:2] == expected
    assert batch[-1] == batch[4:] and batch[np.int64(2)] == batch[[2]]
    with pytest.raises(IndexError):
        batch[[5]]
    with pytest.raises(IndexError):
        batch[np.array([True, False])]


def test_selection_is_trimmed_to_the_longest_selected_and_keeps_every_field(batch: PaddedBatch):
    sub = batch[[3, 0]]
    assert sub.max_length == int(batch.lengths[[3, 0]].max())
    assert sub.lengths.tolist() == batch.lengths[[3, 0]].tolist()
    assert sub.seq_names == type(batch.seq_names)([batch.seq_names[3], batch.seq_names[0]])
    for name in batch.row_fields:
        x = getattr(batch, name)
        torch.testing.assert_close(getattr(sub, name)[1, :sub.max_length], x[0, :sub.max_length], equal_nan=True)
    for name in batch.sequence_fields:
        if getattr(batch, name) is not None:
            assert torch.equal(getattr(sub, name), getattr(batch, name)[[3, 0]])
    for name in batch.meta_fields:
        assert getattr(sub, name) == getattr(batch, name)


def test_concat_of_a_partition_in_order_is_the_batch(batch: PaddedBatch):
    whole = type(batch).concat([batch[:2], batch[2:3], batch[3:]])
    assert whole == batch and whole.seq_names == batch.seq_names
    assert whole.max_length == batch.max_length
    with pytest.raises(ValueError, match="at least one"):
        type(batch).concat([])


def test_split_is_a_reproducible_partition_in_the_original_order(batch: PaddedBatch):
    parts = batch.split((0.6, 0.4), seed=5)
    assert all(p == q for p, q in zip(parts, batch.split((0.6, 0.4), seed=5)))
    names = [n for p in parts for n in p.seq_names]
    assert sorted(names) == sorted(batch.seq_names)
    for p in parts:
        order = [list(batch.seq_names).index(n) for n in p.seq_names]
        assert order == sorted(order)
    with pytest.raises(ValueError, match="sum to 1"):
        batch.split((0.5, 0.2))
    with pytest.raises(ValueError, match="would be empty"):
        batch.split((0.99, 0.01))


@pytest.mark.parametrize("n", [1, 2, 7, 10, 33, 100])
@pytest.mark.parametrize("fractions", [(0.6, 0.2, 0.2), (0.5, 0.5), (0.8, 0.1, 0.1), (0.7, 0.3)])
def test_event_split_is_one_permutation_cut_at_the_rounded_cumulative_fractions(n: int, fractions: tuple):
    """The exact split of earlier versions (results and benchmarks depend on it)."""
    b = EventBatch.from_sequences([[float(i)] for i in range(n)], t_end=float(n))
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(n)
        expected = np.split(perm, np.round(np.cumsum(fractions) * n).astype(int)[:-1])
        if any(p.size == 0 for p in expected):
            with pytest.raises(ValueError, match="empty"):
                b.split(fractions, seed)
            continue
        got = b.split(fractions, seed)
        assert [p.time[:, 0].long().tolist() for p in got] == [sorted(p.tolist()) for p in expected]


def test_to_casts_the_float_fields_only_and_round_trips(batch: PaddedBatch):
    low = batch.to("cpu", torch.float32)
    for name, x in low._tensors((*batch.row_fields, *batch.sequence_fields)).items():
        original = getattr(batch, name)
        assert x.dtype == (torch.float32 if name in batch.float_fields else original.dtype), name
    assert low.dtype == torch.float32 and low.device == batch.device
    assert low.to(dtype=torch.float64) == batch.to(torch.float32).to(dtype=torch.float64)  # a dtype alone casts
    assert low.to(dtype=torch.float64).dtype == torch.float64


def test_sequences_are_copies_of_each_sequences_rows(batch: PaddedBatch):
    seqs = batch.sequences()
    assert len(seqs) == len(batch) and len(seqs[0]) == len(batch.sequence_view)
    for b, parts in enumerate(seqs):
        assert parts[0].dtype == np.float64 and parts[0].shape[0] == int(batch.lengths[b])
    before = batch.time.clone()
    seqs[0][0][:] = -1.0
    assert torch.equal(batch.time, before)
    with pytest.raises(ValueError, match="no per-row field"):
        batch.sequences("t_end")


def test_equality_ignores_padding_and_treats_nan_as_equal():
    b = series()
    assert b == series() and not b == series(seed=1)
    padded = SeriesBatch.concat([b, b[:1]])[: len(b)]  # taken back out of a longer batch: same rows
    assert padded == b
    e = events()
    longer = EventBatch(torch.cat([e.time, e.t_end[:, None]], 1), torch.cat([e.mark, e.mark[:, :1]], 1),
                        torch.cat([e.mask, torch.zeros(len(e), 1, dtype=torch.bool)], 1), e.t_start, e.t_end, 3,
                        features=torch.cat([e.features, e.features[:, :1]], 1), feature_names=e.feature_names)
    assert not longer == e  # another [B, L]: different padded tensors
    assert longer[:] == e  # indexing trims the extra padding


def test_event_equality_ignores_names_series_equality_compares_them():
    e = events()
    assert EventBatch.from_flat(**e.to_flat(), num_marks=3) == e  # no names
    s = series()
    assert not s._replace(seq_names=None) == s


def test_repr_counts_sequences_and_rows(batch: PaddedBatch):
    text = repr(batch)
    assert text.startswith(f"{type(batch).__name__}({batch.noun}={len(batch)}, {batch.row_noun}={batch.num_events}")
    assert f"max_length={batch.max_length}" in text


def test_series_speaks_the_event_vocabulary_with_its_old_aliases():
    s = series()
    assert s.ids == s.seq_names == tuple(f"r{i}" for i in range(5))
    renamed = SeriesBatch(s.time, s.values, s.mask, s.labels, ids=list("abcde"))
    assert renamed.seq_names == tuple("abcde")
    assert all(all(np.array_equal(x, y, equal_nan=True) for x, y in zip(p, q))
               for p, q in zip(s.series(), s.sequences()))
    with pytest.raises(TypeError, match="not both"):
        SeriesBatch(s.time, s.values, s.mask, seq_names=list("abcde"), ids=list("abcde"))


# ----------------------------------------------------------------------------- a new family needs only declarations
class Spikes(PaddedBatch):
    """A minimal batch family: spike amplitudes per row and one gain per sequence."""

    row_fields = {"time": 0.0, "amplitude": -1.0, "mask": False}
    sequence_fields = ("gain",)
    meta_fields = ("unit",)
    float_fields = frozenset({"time", "amplitude", "gain"})
    sequence_view = ("time", "amplitude")

    def __init__(self, time: Tensor, amplitude: Tensor, mask: Tensor, gain: Tensor, unit: str = "mV", *,
                 seq_names: Any = None, validate: bool = True) -> None:
        self.time, self.amplitude, self.mask, self.gain, self.unit = time, amplitude, mask, gain, unit
        self.seq_names = seq_names
        if validate:
            self._check_left_aligned()


def spikes(lengths=(2, 3, 1)) -> Spikes:
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    time, mask = pad_flat(np.arange(offsets[-1], dtype=np.float64), offsets, 0.0)
    amplitude, _ = pad_flat(np.linspace(1, 2, offsets[-1]), offsets, -1.0)
    return Spikes(torch.from_numpy(time), torch.from_numpy(amplitude), torch.from_numpy(mask),
                  torch.arange(len(lengths), dtype=torch.float64), seq_names=["a", "b", "c"])


def test_a_new_batch_family_gets_every_operation_from_its_declarations():
    s = spikes()
    assert len(s) == 3 and s.num_events == 6 and s.lengths.tolist() == [2, 3, 1]
    assert s[[2, 0]].gain.tolist() == [2.0, 0.0] and s[[2, 0]].max_length == 2
    assert Spikes.concat([s[:1], s[1:]]) == s
    assert Spikes.concat([s[2:], s[:1]]).amplitude[0].tolist() == [s.amplitude[2, 0].item(), -1.0]
    assert s.to(dtype=torch.float32).amplitude.dtype == torch.float32
    assert [t.tolist() for t, _ in s.sequences()] == [[0.0, 1.0], [2.0, 3.0, 4.0], [5.0]]
    train, test = s.split((0.5, 0.5), seed=0)
    assert sorted(train.seq_names + test.seq_names) == ["a", "b", "c"]
    other = spikes()
    other.unit = "V"
    assert not s == other
    with pytest.raises(ValueError, match="unit"):
        Spikes.concat([s, other])
    with pytest.raises(DataError, match="left-aligned"):
        Spikes(s.time, s.amplitude, s.mask.flip(1), s.gain)
