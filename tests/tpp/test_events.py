"""EventBatch: construction, validation messages, views, splits."""

import numpy as np
import pytest
import torch

from tpp import EventBatch, EventDataError


def make(times, marks=None, **kw):
    return EventBatch.from_sequences(times, marks, **kw)


def test_padding_mask_and_window_defaults():
    b = make([[0.5, 1.0, 2.0], [3.0]], [[0, 1, 0], [1]], num_marks=2)
    assert b.time.dtype == torch.float64
    assert b.mask.tolist() == [[True, True, True], [True, False, False]]
    assert b.t_start.tolist() == [0.0, 0.0]
    assert b.t_end.tolist() == [2.0, 3.0]  # last event of each sequence by default
    assert b.num_events == 4 and len(b) == 2


def test_inter_event_times_are_derived_from_t_start():
    b = make([[0.5, 1.0, 2.0]], t_start=0.25, t_end=3.0)
    assert b.inter_event_times[0].tolist() == [0.25, 0.5, 1.0]


@pytest.mark.parametrize(
    "times, marks, kw, field, position, fragment",
    [
        ([[0.0, 2.0, 1.0]], None, {}, "time", 2, "non-decreasing"),
        ([[0.0, np.nan]], None, {"t_end": 5.0}, "time", 1, "finite"),
        ([[0.0, np.inf]], None, {"t_end": 5.0}, "time", 1, "finite"),
        ([[1.0, 2.0]], None, {"t_start": [0.0, 1.5], "t_end": 3.0}, "time", 0, "before the window start"),
        ([[1.0, 4.0]], None, {"t_end": 3.0}, "time", 1, "after the window end"),
        ([[1.0, 2.0]], [[0, -1]], {}, "mark", 1, "negative"),
        ([[1.0, 2.0]], [[0, 1.5]], {}, "mark", 1, "not an integer"),
        ([[1.0, 2.0]], [[0, 3]], {"num_marks": 2}, "mark", 1, ">= num_marks"),
    ],
)
def test_bad_input_names_sequence_position_and_field(times, marks, kw, field, position, fragment):
    with pytest.raises(EventDataError) as info:
        make([[0.1]] + times, None if marks is None else [[0]] + marks, **kw)
    err = info.value
    assert err.sequence == 1 and err.position == position and err.field == field
    assert fragment in str(err) and "sequence 1" in str(err) and f"position {position}" in str(err)


def test_window_end_before_start_is_rejected():
    with pytest.raises(EventDataError, match="before its start"):
        make([[1.0]], t_start=2.0, t_end=1.0)


def test_empty_input_is_rejected():
    with pytest.raises(EventDataError, match="empty"):
        make([])


def test_ties_are_legal_and_keep_their_order():
    b = make([[1.0, 1.0, 2.0]], [[1, 0, 1]], num_marks=2)
    assert b.mark[0].tolist() == [1, 0, 1]


def test_empty_sequence_and_zero_length_window_are_legal():
    b = make([[], [2.0]], t_start=[0.0, 2.0], t_end=[1.0, 2.0])
    assert b.lengths.tolist() == [0, 1]


def test_indexing_selects_sequences_and_trims_padding():
    b = make([[0.5, 1.0, 2.0], [3.0], [1.0, 2.0]])
    sub = b[[1, 2]]
    assert sub.max_length == 2 and sub.lengths.tolist() == [1, 2]
    assert b[1:2].time.shape == (1, 1)
    assert b[0] == make([[0.5, 1.0, 2.0]])


def test_split_is_reproducible_disjoint_and_complete():
    b = make([[float(i)] for i in range(1, 101)], t_end=200.0)
    parts_a = b.split((0.6, 0.2, 0.2), seed=3)
    parts_b = b.split((0.6, 0.2, 0.2), seed=3)
    assert [len(p) for p in parts_a] == [60, 20, 20]
    for pa, pb in zip(parts_a, parts_b):
        assert pa == pb
    seen = sorted(float(t) for p in parts_a for t in p.time[p.mask])
    assert seen == [float(i) for i in range(1, 101)]
    assert not parts_a[0] == b.split((0.6, 0.2, 0.2), seed=4)[0]


def test_to_device_and_dtype_round_trip():
    b = make([[0.5, 1.0]])
    c = b.to("cpu", torch.float32)
    assert c.time.dtype == torch.float32 and c.mark.dtype == torch.long
    assert c.to(dtype=torch.float64) == b


def test_concat_keeps_every_sequence():
    a, b = make([[1.0]]), make([[2.0, 3.0]])
    c = EventBatch.concat([a, b])
    assert len(c) == 2 and c.num_events == 3


def test_padded_constructor_rejects_holes_in_mask():
    with pytest.raises(EventDataError, match="left-aligned"):
        EventBatch(torch.zeros(1, 2, dtype=torch.float64), torch.zeros(1, 2), torch.tensor([[False, True]]),
                   torch.zeros(1), torch.ones(1), 1)
