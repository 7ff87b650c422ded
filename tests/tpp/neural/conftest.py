"""What the neural model tests share: a 3-type Hawkes process, small batches, extra padding."""

import numpy as np
import pytest
import torch

from tpp import EventBatch
from tpp.hawkes import ExpHawkes

MU3 = np.array([0.4, 0.25, 0.3])
A3 = np.array([[0.3, 0.2, 0.0], [0.1, 0.4, 0.1], [0.0, 0.3, 0.3]])


@pytest.fixture(scope="module")
def hawkes_data() -> EventBatch:
    return ExpHawkes.from_params(MU3, A3, 1.5).sample(6, 12.0, generator=3)


@pytest.fixture(scope="module")
def tiny() -> EventBatch:
    """Three short sequences: one empty, one with a window starting before the first event, one tie."""
    return EventBatch.from_sequences(
        [[0.3, 0.9, 0.9, 2.2], [], [1.1, 1.7]], [[0, 2, 1, 0], [], [1, 1]],
        t_start=[0.0, 0.0, 0.5], t_end=[3.0, 1.5, 2.5], num_marks=3,
    )


def pad_more(batch: EventBatch, extra: int, mark: int = 2) -> EventBatch:
    """The same sequences with ``extra`` more padding columns, every padded mark set to ``mark``
    (a model must ignore what padding holds)."""
    B = len(batch)
    mask = torch.cat([batch.mask, torch.zeros(B, extra, dtype=torch.bool)], 1)
    time = torch.cat([batch.time, batch.t_end[:, None].expand(B, extra)], 1)
    marks = torch.where(mask, torch.cat([batch.mark, batch.mark.new_zeros(B, extra)], 1), mark)
    return EventBatch(time, marks, mask, batch.t_start, batch.t_end, batch.num_marks)


def assert_future_events_do_not_reach(model, data: EventBatch, change: str) -> None:
    """Move the later half of the longest sequence (its times, its marks, or both): the intensity at
    and before the first moved event must not change, after it must, and other sequences stay put."""
    times, marks = zip(*data.sequences())
    b = int(np.argmax([t.size for t in times]))
    j = len(times[b]) // 2
    t_cut = times[b][j]
    moved_t, moved_m = [t.copy() for t in times], [m.copy() for m in marks]
    if change in ("time", "both"):
        moved_t[b][j:] = t_cut + (moved_t[b][j:] - t_cut) * 0.5 + 0.01
    if change in ("mark", "both"):
        moved_m[b][j:] = (moved_m[b][j:] + 1) % data.num_marks
    moved = EventBatch.from_sequences(moved_t, moved_m, t_start=data.t_start.numpy(), t_end=data.t_end.numpy(),
                                      num_marks=data.num_marks)
    query = torch.linspace(float(data.t_start[b]), float(data.t_end[b]), 400, dtype=torch.float64)
    query = torch.sort(torch.cat([query, torch.tensor([t_cut])])).values.expand(len(data), -1)  # t_cut itself too
    before, after = model.intensity(data, query).detach(), model.intensity(moved, query).detach()
    early = query[b] <= t_cut
    assert torch.equal(before[b][early], after[b][early])
    assert not torch.allclose(before[b][~early], after[b][~early])  # the check is not vacuous
    others = [i for i in range(len(data)) if i != b]
    assert torch.equal(before[others], after[others])
