"""Online updates (issue 17, item 5): ``partial_fit`` carries the recursion state across chunks, so at fixed
parameters the chunks' log-likelihoods add up to the batch's exactly, and the streamed estimate ends within
1% (relative log-likelihood) of the batch MLE."""

import warnings

import numpy as np
import pytest

from tpp import EventBatch
from tpp.events import EventDataError
from tpp.hawkes import ExpHawkes, SumExpHawkes

MU = np.array([0.5, 0.3, 0.2])
A = np.array([[0.3, 0.1, 0.0], [0.2, 0.4, 0.1], [0.0, 0.2, 0.3]])
TRUTH = ExpHawkes.from_params(MU, A, 2.0)


@pytest.fixture(scope="module")
def stream():
    """One long sequence on [-2, T] (the window starts before the first event) with a tie inside."""
    batch = TRUTH.sample(1, 20_000.0, generator=3)
    flat = batch.to_flat()
    times, marks = flat["times"], flat["marks"].astype(np.int64)
    times = np.insert(times, 1001, times[1000])  # a tie: the boundary below falls between the two
    marks = np.insert(marks, 1001, 2)
    return times, marks, -2.0, 20_000.0


def batch_of(times, marks, t0, t1):
    return EventBatch.from_flat(times, np.array([0, times.size]), np.array([t0]), np.array([t1]), marks, 3)


def chunks(times, marks, t0, t1, cuts):
    """Split by event index; each chunk's window ends at its last event (or at ``t1``)."""
    bounds = [0, *cuts, times.size]
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        end = t1 if k == len(bounds) - 2 else float(times[b - 1])
        yield times[a:b], marks[a:b], (t0 if k == 0 else None), end


def test_chunks_give_exactly_the_batch_log_likelihood_at_fixed_parameters(stream):
    times, marks, t0, t1 = stream
    # cut at the tie (1001 splits its two events), in a run of equal cuts (an empty chunk) and near the end
    cuts = [1, 1001, 5000, 5000, 17_000, times.size - 1]
    model = ExpHawkes.from_params(MU * 1.1, A * 0.9, 1.7)
    before = model.baseline_.copy()
    for t, m, start, end in chunks(times, marks, t0, t1, cuts):
        model.partial_fit(t, m, t_start=start, t_end=end, update=False)
    batch = model.log_likelihood(batch_of(times, marks, t0, t1)).item()
    assert abs(model.stream_["log_likelihood"] - batch) <= 1e-10 * abs(batch)
    assert model.stream_["events"] == times.size and model.stream_["chunks"] == len(cuts) + 1
    np.testing.assert_array_equal(model.baseline_, before)  # update=False leaves the parameters alone


def test_chunks_given_as_event_batches_and_sum_exp_kernels(stream):
    times, marks, t0, t1 = stream
    adj = np.stack([A * 0.5, A * 0.5], -1)
    model = SumExpHawkes.from_params(MU, adj, [0.5, 4.0])
    edges = [t0, float(times[1000]), 3000.0, 12_000.0, t1]
    for a, b in zip(edges[:-1], edges[1:]):
        keep = (times > a) & (times <= b) if a > t0 else times <= b
        model.partial_fit(batch_of(times[keep], marks[keep], a, b), update=False)
    batch = model.log_likelihood(batch_of(times, marks, t0, t1)).item()
    assert abs(model.stream_["log_likelihood"] - batch) <= 1e-10 * abs(batch)


def test_streamed_estimate_is_within_one_percent_of_the_batch_mle(stream):
    times, marks, t0, t1 = stream
    data = batch_of(times, marks, t0, t1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch_fit = ExpHawkes(3, 2.0).fit(data)
    best = batch_fit.log_likelihood(data).item()
    online = ExpHawkes(3, 2.0)
    for t, m, start, end in chunks(times, marks, t0, t1, list(range(1000, times.size, 1000))):
        online.partial_fit(t, m, t_start=start, t_end=end)
    ours = online.log_likelihood(data).item()
    assert ours <= best + 1e-6 * abs(best)  # the batch MLE is the maximum
    assert (best - ours) / abs(best) < 0.01
    assert (best - ours) / abs(best) < 1e-4  # measured: ~1e-6 with 30 chunks
    assert online.stream_["events"] == times.size


def test_the_first_chunk_of_an_unfitted_model_learns_the_decay(stream):
    times, marks, t0, _ = stream
    model = ExpHawkes(3)  # decay learned
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.partial_fit(times[:5000], marks[:5000], t_start=t0)
        decay = model.decay_
        model.partial_fit(times[5000:10_000], marks[5000:10_000])
    assert abs(decay - 2.0) < 0.5
    assert model.decay_ == decay  # fixed during the stream
    assert model.stream_["t_end"] == float(times[9999])


def test_a_batch_fit_ends_the_stream(stream):
    times, marks, t0, _ = stream
    model = ExpHawkes.from_params(MU, A, 2.0)
    model.partial_fit(times[:100], marks[:100], t_start=t0, update=False)
    model.fit(batch_of(times[:2000], marks[:2000], t0, float(times[1999])))
    assert not hasattr(model, "stream_")


def test_chunks_out_of_order_or_without_a_start_are_refused(stream):
    times, marks, t0, _ = stream
    model = ExpHawkes.from_params(MU, A, 2.0)
    with pytest.raises(ValueError, match="t_start="):
        model.partial_fit(times[:10], marks[:10])
    model.partial_fit(times[:10], marks[:10], t_start=t0, update=False)
    with pytest.raises(EventDataError, match="non-decreasing"):
        model.partial_fit(times[:5], marks[:5], t_end=float(times[50]), update=False)  # goes back in time
    with pytest.raises(EventDataError, match="chunks must follow each other"):
        model.partial_fit(times[20:30], marks[20:30], t_start=float(times[15]), update=False)
    with pytest.raises(EventDataError, match="mark is outside"):
        model.partial_fit(times[10:12], np.array([0, 7]), update=False)
    with pytest.raises(ValueError, match="one sequence"):
        model.partial_fit(TRUTH.sample(2, 5.0, generator=0))
    with pytest.raises(ValueError, match="set the parameters"):
        ExpHawkes(3, 2.0).partial_fit(times[:10], marks[:10], t_start=t0, update=False)
    seasonal = ExpHawkes.from_params(MU, A, 2.0, baseline_kind="periodic", period=10.0)
    with pytest.raises(ValueError, match="baseline='constant' only"):
        seasonal.partial_fit(times[:10], marks[:10], t_start=t0)
