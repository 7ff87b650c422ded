"""Scoring test data: the log-likelihood per event with a fine integrator, in memory-bounded pieces."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tpp.bench.config import EVAL_POINTS
from tpp.events import EventBatch

__all__ = ["EVAL_ELEMENTS", "test_log_likelihood", "test_rescaling_ks", "prediction_chunk"]

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
    total = 0.0
    for part in _length_groups(test, num_points, budget):
        if isinstance(model, NeuralTPP):
            chunk = max(1, budget // max(len(part) * num_points * test.num_marks, 1))
            total += float(model.log_likelihood(part, num_points=num_points, chunk_size=chunk).double().sum())
        else:
            total += float(model.log_likelihood(part).double().sum())
    return total / test.num_events


def _length_groups(test: EventBatch, num_points: int, budget: int) -> list[EventBatch]:
    """``test`` in groups of similar length whose ``[B, L * num_points, K]`` intensity tensors stay within
    ``budget`` elements (at most 64 sequences a group)."""
    lengths = test.lengths.cpu().numpy()
    order = np.argsort(lengths, kind="stable")
    per_sequence = (int(lengths.max()) + 1) * num_points * test.num_marks
    batch_size = int(np.clip(budget // max(per_sequence, 1), 1, 64))
    return [test[order[start : start + batch_size]] for start in range(0, order.size, batch_size)]


@torch.no_grad()
def test_rescaling_ks(model: Any, test: EventBatch, num_points: int = EVAL_POINTS,
                      max_elements: int | None = None) -> float:
    """KS statistic of the time-rescaling residuals of ``test``'s ground process (all types together) against
    Exp(1) (:func:`tpp.metrics.ground_rescaled_residuals`, pooled over sequences), scored in the same memory-bounded
    groups as :func:`test_log_likelihood`. 0 is a perfect fit; unit-free, so the fitting unit does not matter.
    The ground process, not per-type residuals: those are censored by short windows (see the function)."""
    import scipy.stats

    from tpp.metrics import ground_rescaled_residuals as rescaled_residuals
    from tpp.neural.base import NeuralTPP

    budget = EVAL_ELEMENTS if max_elements is None else int(max_elements)
    model.eval()
    if test.num_events == 0:
        return float("nan")
    points = num_points if isinstance(model, NeuralTPP) else None
    residuals = np.concatenate([rescaled_residuals(model, part, points)
                                for part in _length_groups(test, num_points, budget)])
    return float(scipy.stats.kstest(residuals, "expon").statistic)


def prediction_chunk(test: EventBatch) -> int:
    """Histories per ``predict`` call: its intensity tensors are about ``chunk x 1280 x K``."""
    # At least 8: RMTPP, FullyNN and IntensityFree (GRU encoders) raise on a batch whose histories are all
    # empty ("Expected sequence length to be larger than 0 in RNN"); a chunk of one empty history is such a batch.
    return int(np.clip(EVAL_ELEMENTS // (1280 * max(test.num_marks, 1)), 8, 256))
