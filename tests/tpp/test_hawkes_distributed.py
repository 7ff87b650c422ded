"""Issue 17, item 8: the fixed-decay exponential Hawkes fit on Dask (tpp.hawkes.distributed).

On a dask.distributed LocalCluster with 2 workers the fit from partitioned Parquet equals the single-process
``ExpHawkes.fit`` to 1e-8 (parameters and log-likelihood), for partitions of whole sequences, for time blocks of
one sequence (the recursion's state carried over each boundary, ties at a boundary included) and for both at
once; the reduced statistics equal the single-process ones (counts and the time unit exactly, sums to rounding).
"""

import sys

import numpy as np
import pytest

pytest.importorskip("dask.distributed", reason="needs the distributed extra: pip install 'tpp-sde[distributed]'")

from dask.distributed import Client, LocalCluster  # noqa: E402

from tpp import EventBatch  # noqa: E402
from tpp.events import EventDataError  # noqa: E402
from tpp.hawkes import ExpHawkes, SumExpHawkes  # noqa: E402
from tpp.hawkes import distributed  # noqa: E402
from tpp.io import read_events, write_events  # noqa: E402

TOL = 1e-8
TRUTH = ExpHawkes.from_params([0.3, 0.2, 0.4], [[0.2, 0.1, 0.0], [0.0, 0.3, 0.1], [0.1, 0.0, 0.2]], 1.5)


@pytest.fixture(scope="module")
def client():
    # threads in this process: no worker start-up (torch import) per process, reliable in CI; the compiled
    # recursions release the GIL, so two workers still run two partitions at once
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as c:
            yield c


@pytest.fixture(scope="module")
def sequences():
    return TRUTH.sample(6, 300.0, generator=1)


@pytest.fixture(scope="module")
def stream():
    return TRUTH.sample(1, 2500.0, generator=2)


def assert_same_fit(model, reference, batch):
    assert type(model) is type(reference)
    np.testing.assert_allclose(model.baseline_, reference.baseline_, rtol=TOL, atol=0)
    np.testing.assert_allclose(model.adjacency_, reference.adjacency_, rtol=TOL, atol=TOL * 1e-2)
    np.testing.assert_allclose(model.decays_, reference.decays_, rtol=1e-14)
    ll, ll_ref = model.fit_result_["log_likelihood"], reference.fit_result_["log_likelihood"]
    assert abs(ll - ll_ref) <= TOL * abs(ll_ref)
    exact = float(model.log_likelihood(batch).sum().detach())
    assert abs(exact - float(reference.log_likelihood(batch).sum().detach())) <= TOL * abs(exact)
    assert abs(exact - ll) <= 1e-9 * abs(exact)  # the reported value is the model's exact log-likelihood
    assert model.fit_result_["converged"]


def test_fit_equals_single_process_by_sequences(client, sequences, tmp_path):
    paths = distributed.write_parquet(sequences, tmp_path, 4, by="sequence")
    assert len(paths) == 4
    assert sum(read_events(p).num_events for p in paths) == sequences.num_events
    model = distributed.fit_parquet(tmp_path, 3, 1.5, client=client)
    assert_same_fit(model, ExpHawkes(3, 1.5).fit(sequences), sequences)
    assert model.fit_result_["partitions"] == 4 and model.fit_result_["sequences"] == 6


def test_fit_equals_single_process_by_time_blocks_of_one_sequence(client, stream, tmp_path):
    paths = distributed.write_parquet(stream, tmp_path, 5, by="time")
    blocks = [read_events(p) for p in paths]
    assert len(blocks) == 5 and all(len(b) == 1 for b in blocks)
    # the blocks tile the window: each starts where the previous ends
    assert [float(b.t_start[0]) for b in blocks[1:]] == [float(b.t_end[0]) for b in blocks[:-1]]
    model = distributed.fit_parquet(str(tmp_path / "part-*.parquet"), 3, 1.5, client=client)
    assert_same_fit(model, ExpHawkes(3, 1.5).fit(stream), stream)
    assert model.fit_result_["sequences"] == 1 and model.fit_result_["blocks"] == 5


def test_fit_equals_single_process_with_every_sequence_in_time_blocks(client, sequences, tmp_path):
    distributed.write_parquet(sequences, tmp_path, 3, by="time")
    model = distributed.fit_parquet(sorted(tmp_path.glob("*.parquet"))[::-1], 3, 1.5, client=client)  # any file order
    assert_same_fit(model, ExpHawkes(3, 1.5).fit(sequences), sequences)


def test_ties_across_block_boundaries_do_not_excite(client, tmp_path):
    """Times rounded to 0.5: blocks end and start on tied events (the events at the boundary stay pending and
    excite only later times, as in one pass), and some blocks have zero length."""
    sample = TRUTH.sample(1, 1500.0, generator=3)
    times, marks = next(iter(sample.sequences()))
    tied = EventBatch.from_sequences([np.round(np.asarray(times) * 2) / 2], [marks], t_start=0.0, t_end=1500.0,
                                     num_marks=3)
    distributed.write_parquet(tied, tmp_path, 7, by="time")
    ends = [(float(b.t_start[0]), float(b.t_end[0]), read_events(p).time[0, -1].item())
            for p in sorted(tmp_path.glob("*.parquet")) for b in [read_events(p)]]
    assert any(end == last for _, end, last in ends[:-1])  # a block whose last event sits on its boundary
    model = distributed.fit_parquet(tmp_path, 3, 1.5, client=client)
    assert_same_fit(model, ExpHawkes(3, 1.5).fit(tied), tied)
    stats = distributed.statistics(tmp_path, 3, 1.5, client=client, rows=True)
    reference = distributed.batch_statistics(tied, 1.5)
    for rows, ref in zip(stats.rows, reference.rows):
        np.testing.assert_allclose(rows, ref, rtol=1e-12, atol=1e-12)

    # a block of zero length (all its events at its one instant) folds nothing into the carried state
    t = np.array([0.5, 1.0, 1.0, 1.0, 1.0, 2.5, 3.0])
    m = np.array([0, 1, 0, 2, 1, 0, 2])
    tiny = EventBatch.from_sequences([t], [m], t_start=0.0, t_end=4.0, num_marks=3)
    distributed.write_parquet(tiny, tmp_path / "tiny", 4, by="time")
    windows = sorted((float(b.t_start[0]), float(b.t_end[0])) for b in map(read_events, (tmp_path / "tiny").glob("*")))
    assert (1.0, 1.0) in windows
    stats = distributed.statistics(tmp_path / "tiny", 3, 1.5, client=client, rows=True)
    reference = distributed.batch_statistics(tiny, 1.5)
    np.testing.assert_allclose(stats.tails, reference.tails, rtol=1e-13)
    for rows, ref in zip(stats.rows, reference.rows):
        np.testing.assert_allclose(rows, ref, rtol=1e-13, atol=1e-15)


def test_reduced_statistics_equal_single_process(client, sequences, stream, tmp_path):
    distributed.write_parquet(sequences, tmp_path / "seq", 4, by="sequence")
    stats = distributed.statistics(tmp_path / "seq", 3, 1.5, client=client, rows=True)
    reference = distributed.batch_statistics(sequences, 1.5)
    # counts and the time unit exactly; each event's row bit for bit (same recursion, same clock)
    np.testing.assert_array_equal(stats.counts, reference.counts)
    assert (stats.num_events, stats.num_sequences, stats.partitions) == (sequences.num_events, 6, 4)
    assert stats.scale == reference.scale and stats.duration == reference.duration
    np.testing.assert_array_equal(stats.decays, reference.decays)
    for rows, ref in zip(stats.rows, reference.rows):
        np.testing.assert_array_equal(rows, ref)
    # sums over partitions: equal but for the order of summation
    np.testing.assert_allclose(stats.tails, reference.tails, rtol=1e-14)

    distributed.write_parquet(stream, tmp_path / "time", 6, by="time")
    stats = distributed.statistics(tmp_path / "time", 3, 1.5, client=client, rows=True)
    reference = distributed.batch_statistics(stream, 1.5)
    np.testing.assert_array_equal(stats.counts, reference.counts)
    assert stats.scale == reference.scale and stats.duration == reference.duration
    np.testing.assert_allclose(stats.tails, reference.tails, rtol=1e-13)
    for rows, ref in zip(stats.rows, reference.rows):  # the carried state: equal to rounding
        np.testing.assert_allclose(rows, ref, rtol=1e-12, atol=1e-12)
    grouped = distributed.statistics(tmp_path / "time", 3, 1.5, client=client, rows=True, target_groups=2)
    for rows, ref in zip(grouped.rows, stats.rows):  # the solve tasks' grouping changes no row
        np.testing.assert_array_equal(rows, ref)


def test_sum_of_exponentials_penalties_and_default_scheduler(client, sequences, tmp_path):
    distributed.write_parquet(sequences, tmp_path, 3, by="time")
    model = distributed.fit_parquet(tmp_path, 3, [0.5, 3.0], client=client)
    assert_same_fit(model, SumExpHawkes(3, [0.5, 3.0]).fit(sequences), sequences)
    # no client: Dask's default scheduler (threads here; the active distributed client where there is one)
    penalised = distributed.fit_parquet(tmp_path, 3, 1.5, l1=0.01, l2=0.02, target_groups=2)  # types {0, 1}, {2}
    reference = ExpHawkes(3, 1.5).fit(sequences, l1=0.01, l2=0.02)
    np.testing.assert_allclose(penalised.adjacency_, reference.adjacency_, rtol=TOL, atol=TOL * 1e-2)
    np.testing.assert_allclose(penalised.baseline_, reference.baseline_, rtol=TOL)


def test_a_type_without_events(client, sequences, tmp_path):
    flat = sequences.to_flat()
    five = EventBatch.from_flat(flat["times"], flat["seq_offsets"], flat["t_start"], flat["t_end"], flat["marks"], 5)
    distributed.write_parquet(five, tmp_path, 3, by="time")
    model = distributed.fit_parquet(tmp_path, 5, 1.5, client=client, target_groups=2)
    reference = ExpHawkes(5, 1.5).fit(five)
    assert_same_fit(model, reference, five)
    assert np.all(model.adjacency_[3:, :3] == 0)  # nothing excites a type that never occurs


def test_blocks_of_one_sequence_must_tile_its_window(client, stream, tmp_path):
    times, marks = next(iter(stream.sequences()))
    times, marks = np.asarray(times), np.asarray(marks)
    half = times.size // 2
    first = EventBatch.from_sequences([times[:half]], [marks[:half]], t_start=0.0, t_end=float(times[half]),
                                      num_marks=3, seq_names=["s"])
    gap = EventBatch.from_sequences([times[half + 1:]], [marks[half + 1:]], t_start=float(times[half + 1]),
                                    t_end=2500.0, num_marks=3, seq_names=["s"])
    write_events(first, tmp_path / "a.parquet")
    write_events(gap, tmp_path / "b.parquet")
    with pytest.raises(EventDataError, match=r"b\.parquet.*'s'.*leave a gap"):
        distributed.fit_parquet(tmp_path, 3, 1.5, client=client)


def test_arguments_and_layout_are_checked(sequences, tmp_path, monkeypatch):
    distributed.write_parquet(sequences, tmp_path, 2)
    with pytest.raises(ValueError, match="already holds partitions"):
        distributed.write_parquet(sequences, tmp_path, 2)  # old partitions would mix with new ones
    with pytest.raises(ValueError, match="by must be"):
        distributed.write_parquet(sequences, tmp_path / "x", 2, by="rows")
    with pytest.raises(ValueError, match="target_groups"):
        distributed.fit_parquet(tmp_path, 3, 1.5, target_groups=0)
    with pytest.raises(ValueError, match="fixed decays"):
        distributed.fit_parquet(tmp_path, 3, None)
    with pytest.raises(EventDataError, match="no partition files"):
        distributed.fit_parquet(tmp_path / "nothing-*.parquet", 3, 1.5)
    with pytest.raises(EventDataError, match="mark"):
        distributed.fit_parquet(tmp_path, 2, 1.5)  # the data hold 3 types
    empty = EventBatch.from_sequences([[1.0, 2.0], []], [[0, 1], []], t_end=[3.0, 3.0], num_marks=3)
    with pytest.raises(EventDataError, match="without events"):
        distributed.write_parquet(empty, tmp_path / "empty", 2)
    monkeypatch.setitem(sys.modules, "dask", None)
    with pytest.raises(ImportError, match=r"tpp-sde\[distributed\]"):
        distributed.fit_parquet(tmp_path, 3, 1.5)
