"""Scoring test data: the log-likelihood per event with a fine integrator, in memory-bounded pieces."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tpp.bench.config import EVAL_POINTS
from tpp.events import EventBatch

__all__ = ["EVAL_ELEMENTS", "test_log_likelihood", "prediction_chunk"]

#: elements of one ``[B, T, K]`` intensity tensor allowed while scoring (sets the chunk sizes)
EVAL_ELEMENTS = 4_000_000


@torch.no_grad()
def test_log_likelihood(model: Any, test: EventBatch, num_points: int = EVAL_POINTS,
                        max_elements: int | None = None) -> float:
    """Log-likelihood per event of ``test`` (in the units the model was fitted in), neural intensities integrated
    with ``num_points`` Gauss-Legendre nodes per interval; closed forms are used where a model has one.

    Sequences are scored in groups of similar length, and a neural model's own
    ``log_likelihood(num_points=, chunk_size=)`` evaluates the intervals in chunks, so that no ``[B, T, K]``
    intensity tensor exceeds ``max_elements`` (default :data:`EVAL_ELEMENTS`; wikipedia has 8227 types). The
    value does not depend on the grouping or the chunks (up to rounding)."""
    from tpp.neural.base import NeuralTPP

    budget = EVAL_ELEMENTS if max_elements is None else int(max_elements)
    model.eval()
    if test.num_events == 0:
        return float("nan")
    lengths = test.lengths.cpu().numpy()
    order = np.argsort(lengths, kind="stable")
    per_sequence = (int(lengths.max()) + 1) * num_points * test.num_marks
    batch_size = int(np.clip(budget // max(per_sequence, 1), 1, 64))
    total = 0.0
    for start in range(0, order.size, batch_size):
        part = test[order[start : start + batch_size]]
        if isinstance(model, NeuralTPP):
            chunk = max(1, budget // max(len(part) * num_points * test.num_marks, 1))
            total += float(model.log_likelihood(part, num_points=num_points, chunk_size=chunk).double().sum())
        else:
            total += float(model.log_likelihood(part).double().sum())
    return total / test.num_events


def prediction_chunk(test: EventBatch) -> int:
    """Histories per ``predict`` call: its intensity tensors are about ``chunk x 1280 x K``."""
    # At least 8: RMTPP, FullyNN and IntensityFree (GRU encoders) raise on a batch whose histories are all
    # empty ("Expected sequence length to be larger than 0 in RNN"); a chunk of one empty history is such a batch.
    return int(np.clip(EVAL_ELEMENTS // (1280 * max(test.num_marks, 1)), 8, 256))
