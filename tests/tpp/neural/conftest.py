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


def pad_more(batch: EventBatch, extra: int) -> EventBatch:
    """The same sequences with ``extra`` more padding columns."""
    B = len(batch)
    return EventBatch(
        torch.cat([batch.time, batch.t_end[:, None].expand(B, extra)], 1),
        torch.cat([batch.mark, torch.zeros(B, extra, dtype=torch.long)], 1),
        torch.cat([batch.mask, torch.zeros(B, extra, dtype=torch.bool)], 1),
        batch.t_start, batch.t_end, batch.num_marks,
    )
