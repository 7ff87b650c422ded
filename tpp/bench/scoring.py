"""Scoring test data: the log-likelihood per event with a fine integrator, in memory-bounded pieces, and the
intensity-free paper's own score (times 2..N only), which its published numbers are on."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tpp.bench.config import EVAL_POINTS
from tpp.events import EventBatch

__all__ = ["EVAL_ELEMENTS", "test_log_likelihood", "test_ifl_time_log_likelihood", "ifl_windows", "test_rescaling_ks", "prediction_chunk"]

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
    budget = EVAL_ELEMENTS if max_elements is None else int(max_elements)
    model.eval()
    if test.num_events == 0:
        return float("nan")
    return _summed_log_likelihood(model, test, num_points, budget) / test.num_events


def _summed_log_likelihood(model: Any, batch: EventBatch, num_points: int, budget: int) -> float:
    """Sum over ``batch``'s sequences of the model's log-likelihood, in the memory-bounded groups of
    :func:`_length_groups` (a neural model's intervals also in chunks)."""
    from tpp.neural.base import NeuralTPP

    total = 0.0
    for part in _length_groups(batch, num_points, budget):
        if isinstance(model, NeuralTPP):
            chunk = max(1, budget // max(len(part) * num_points * batch.num_marks, 1))
            total += float(model.log_likelihood(part, num_points=num_points, chunk_size=chunk).double().sum())
        else:
            total += float(model.log_likelihood(part).double().sum())
    return total


def ifl_windows(test: EventBatch) -> tuple[EventBatch, EventBatch, int]:
    """The two windows whose log-likelihoods differ by IFL's score, and the number of times IFL scores.

    Of every sequence with at least two events: ``whole`` is the sequence on ``[t_start, t_N]`` (no survival
    term after the last event), ``first`` its first event alone on ``[t_start, t_1]``; IFL scores the
    ``N - 1`` inter-event times ``tau_2 .. tau_N`` (sequences of one event score nothing)."""
    flat = test.to_flat()
    off, times, marks = flat["seq_offsets"], flat["times"], flat["marks"]
    lengths = np.diff(off)
    keep = np.flatnonzero(lengths >= 2)
    starts, ends = off[keep], off[keep + 1]
    idx = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)]) if keep.size else np.zeros(0, np.int64)
    new_off = np.concatenate([[0], np.cumsum(lengths[keep])])
    whole = EventBatch.from_flat(times[idx], new_off, flat["t_start"][keep], times[ends - 1], marks[idx],
                                 test.num_marks, dtype=test.dtype)
    first = EventBatch.from_flat(times[starts], np.arange(keep.size + 1), flat["t_start"][keep], times[starts],
                                 marks[starts], test.num_marks, dtype=test.dtype)
    return whole, first, int((lengths[keep] - 1).sum())


@torch.no_grad()
def test_ifl_time_log_likelihood(model: Any, test: EventBatch, num_points: int = EVAL_POINTS,
                                 max_elements: int | None = None) -> float:
    """Log-likelihood per scored time as the original intensity-free code scores test data (Shchur et al.,
    ICLR 2020, shchur/ifl-tpp branch original-code ``train.py``): the density of the inter-event times
    ``tau_2 .. tau_N`` of every sequence given the history, summed over all test sequences and divided by the
    number of those times. The first event's time is not scored (their first input is a dummy), there is
    no survival term after the last event, and the marks are not scored (their time NLL leaves them out);
    the history does include the marks here, as in every marked model of ours.

    ``log p(t_2..t_N | t_1) = log L([t_start, t_N]) - log L([t_start, t_1])`` minus the marks' part
    ``sum_{n >= 2} log(lambda_{k_n}(t_n) / lambda(t_n))``. In the units the model was fitted in; NaN when no
    sequence has two events."""
    budget = EVAL_ELEMENTS if max_elements is None else int(max_elements)
    model.eval()
    whole, first, scored = ifl_windows(test)
    if scored == 0:
        return float("nan")
    total = _summed_log_likelihood(model, whole, num_points, budget)
    total -= _summed_log_likelihood(model, first, num_points, budget)
    if whole.num_marks > 1:
        for part in _length_groups(whole, num_points, budget):
            lam = model.intensity(part, part.time).double()  # [B, L, K], history strictly before each event
            own = lam.gather(-1, part.mark.clamp_max(lam.shape[-1] - 1)[..., None])[..., 0]
            log_p = torch.log(own.clamp_min(1e-300)) - torch.log(lam.sum(-1).clamp_min(1e-300))
            later = part.mask.clone()
            later[:, 0] = False  # the first event's mark is in both windows: it cancelled already
            total -= float(log_p[later].sum())
    return total / scored


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
