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


# ----------------------------------------------------------------------------- continuous per-event features
def with_features(seq_names=None):
    return make([[0.5, 1.0, 2.0], [3.0], []], [[0, 1, 0], [1], []], num_marks=2, t_end=4.0,
                features=[[[1.0, -1.0], [2.0, -2.0], [3.0, -3.0]], [[4.0, -4.0]], np.zeros((0, 2))],
                feature_names=["lon", "lat"], seq_names=seq_names)


def test_features_are_float64_padded_with_zeros_and_named():
    b = with_features()
    assert b.features.shape == (3, 3, 2) and b.features.dtype == torch.float64
    assert b.feature_names == ("lon", "lat") and b.num_features == 2
    assert b.features[0, :, 0].tolist() == [1.0, 2.0, 3.0] and b.features[1, 1:].abs().sum() == 0
    assert b.features[2].abs().sum() == 0  # an empty sequence is all padding
    plain = make([[0.5]])
    assert plain.features is None and plain.feature_names == () and plain.num_features == 0


def test_features_without_names_are_named_by_index_and_one_feature_may_be_flat():
    b = make([[0.5, 1.0]], features=[[7.0, 8.0]])
    assert b.feature_names == ("f0",) and b.features[0, :, 0].tolist() == [7.0, 8.0]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_feature_names_sequence_position_row_and_the_feature(bad):
    features = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    features[2, 1] = bad
    with pytest.raises(EventDataError) as info:
        EventBatch.from_flat(np.array([0.1, 0.2, 0.3]), np.array([0, 1, 3]), 0.0, 1.0, features=features,
                             feature_names=["mag", "depth"], seq_names=["a", "b"], rows=np.array([10, 11, 12]),
                             source="quakes.csv")
    err = info.value
    assert (err.source, err.sequence, err.position, err.row, err.field) == ("quakes.csv", "b", 1, 12, "depth")
    assert "must be finite" in str(err) and "field 'depth'" in str(err)
    padded = with_features()
    broken = padded.features.clone()
    broken[1, 0, 0] = bad
    with pytest.raises(EventDataError, match=r"sequence 1, position 0, field 'lon'"):
        EventBatch(padded.time, padded.mark, padded.mask, padded.t_start, padded.t_end, 2, features=broken,
                   feature_names=padded.feature_names)
    # padding is not data: a non-finite value there is fine
    broken = padded.features.clone()
    broken[1, 2, 0] = bad
    EventBatch(padded.time, padded.mark, padded.mask, padded.t_start, padded.t_end, 2, features=broken)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"features": np.ones((3, 2)), "feature_names": ["x"]}, "1 feature_names"),
        ({"features": np.ones((3, 2)), "feature_names": ["x", "x"]}, "distinct"),
        ({"feature_names": ["x"]}, "without features"),
        ({"features": np.ones((2, 2))}, "N = 3"),
        ({"features": np.array([["a"], ["b"], ["c"]])}, "real numbers"),
    ],
)
def test_feature_names_and_shapes_must_match(kwargs, fragment):
    with pytest.raises(EventDataError, match=fragment):
        EventBatch.from_flat(np.array([0.1, 0.2, 0.3]), np.array([0, 3]), 0.0, 1.0, **kwargs)


def test_from_sequences_rejects_features_of_the_wrong_length_naming_the_sequence():
    with pytest.raises(EventDataError, match=r"sequence 'b', field 'features'.*L = 2"):
        make([[0.1], [0.2, 0.3]], features=[[1.0], [2.0]], seq_names=["a", "b"])


def test_features_follow_indexing_device_moves_splits_and_concat():
    b = with_features(seq_names=["x", "y", "z"])
    assert torch.equal(b[[1]].features, b.features[1:2, :1])
    low = b.to("cpu", torch.float32)
    assert low.time.dtype == torch.float32 and low.features.dtype == torch.float64  # features keep their precision
    assert low.feature_names == b.feature_names
    parts = b.split((2 / 3, 1 / 3), seed=1)
    assert all(p.feature_names == ("lon", "lat") for p in parts)
    assert EventBatch.concat([b[:1], b[1:]]) == b
    with pytest.raises(ValueError, match="features"):
        EventBatch.concat([b, make([[1.0]])])
    renamed = make([[1.0]], features=[[0.0]], feature_names=["depth"])
    with pytest.raises(ValueError, match="feature_names"):
        EventBatch.concat([b[:1], renamed])


def test_flat_layout_round_trips_features():
    b = with_features()
    flat = b.to_flat()
    assert flat["features"].shape == (4, 2) and flat["feature_names"].tolist() == ["lon", "lat"]
    assert EventBatch.from_flat(**flat, num_marks=2) == b
    times, marks, feats = zip(*b.sequences("time", "mark", "features"))
    again = EventBatch.from_sequences(times, marks, features=feats, feature_names=b.feature_names, t_end=4.0,
                                      num_marks=2)
    assert again == b


def test_features_take_part_in_equality():
    b = with_features()
    assert not b == EventBatch.from_flat(**{k: v for k, v in b.to_flat().items() if "feature" not in k}, num_marks=2)
    other = b.to_flat()
    other["features"] = other["features"] + 1.0
    assert not b == EventBatch.from_flat(**other, num_marks=2)


def test_models_that_ignore_features_accept_batches_with_them():
    """Hawkes and neural models read time, mark, mask and the window only: features change nothing."""
    import tpp
    from tpp.hawkes import ExpHawkes
    from tpp.neural import RMTPP

    plain = ExpHawkes.from_params([0.4, 0.2], [[0.3, 0.1], [0.1, 0.2]], 1.5).sample(6, 20.0, generator=0)
    rng = np.random.default_rng(0)
    flat = plain.to_flat()
    featured = EventBatch.from_flat(**flat, num_marks=2, features=rng.normal(size=(flat["times"].size, 2)),
                                    feature_names=["lon", "lat"])
    fitted = ExpHawkes(2, 1.5).fit(featured)
    reference = ExpHawkes(2, 1.5).fit(plain)
    np.testing.assert_allclose(fitted.adjacency_, reference.adjacency_)
    torch.testing.assert_close(fitted.log_likelihood(featured), reference.log_likelihood(plain))
    torch.manual_seed(0)
    model = RMTPP(2, 8)
    tpp.fit(model, featured, epochs=1, batch_size=3, progress=False)
    with torch.no_grad():
        torch.testing.assert_close(model.log_likelihood(featured), model.log_likelihood(plain))
