"""The suite's data: registry splits cut to size, rescaled to the training split's mean gap (numbers are
reported back in the data's units)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from tpp import datasets as registry
from tpp.bench.config import LikelihoodConfig
from tpp.events import EventBatch

__all__ = ["BenchData", "truncate", "subsample", "rescaled", "mean_gap", "load_dataset"]


def truncate(batch: EventBatch, max_events: int | None) -> EventBatch:
    """Each sequence cut to its first ``max_events`` events; the window then ends halfway to the next event."""
    if max_events is None or len(batch) == 0 or int(batch.lengths.max()) <= max_events:
        return batch
    flat = batch.to_flat()
    off = flat["seq_offsets"]
    times, marks, offsets, t_end = [], [], [0], flat["t_end"].copy()
    for b in range(len(batch)):
        t, m = flat["times"][off[b] : off[b + 1]], flat["marks"][off[b] : off[b + 1]]
        if t.size > max_events:
            t_end[b] = 0.5 * (t[max_events - 1] + t[max_events])
            t, m = t[:max_events], m[:max_events]
        times.append(t)
        marks.append(m)
        offsets.append(offsets[-1] + t.size)
    return EventBatch.from_flat(np.concatenate(times), np.asarray(offsets), flat["t_start"], t_end,
                                np.concatenate(marks), batch.num_marks, dtype=batch.dtype)


def subsample(batch: EventBatch, limit: int | None, seed: int) -> EventBatch:
    """At most ``limit`` sequences, drawn without replacement with ``seed``, in their original order."""
    if limit is None or len(batch) <= limit:
        return batch
    keep = np.sort(np.random.default_rng(seed).choice(len(batch), limit, replace=False))
    return batch[keep]


def rescaled(batch: EventBatch, scale: float) -> EventBatch:
    """Times shifted to start at each window's start and divided by ``scale`` (log-likelihoods move by
    ``- log scale`` per event)."""
    flat = batch.to_flat()
    seq = np.repeat(np.arange(len(batch)), np.diff(flat["seq_offsets"]))
    return EventBatch.from_flat(
        (flat["times"] - flat["t_start"][seq]) / scale, flat["seq_offsets"], np.zeros(len(batch)),
        (flat["t_end"] - flat["t_start"]) / scale, flat["marks"], batch.num_marks, dtype=batch.dtype,
    )


def mean_gap(batch: EventBatch) -> float:
    """Mean positive inter-event time (1.0 when there is none): the time unit the models are fitted in."""
    gaps = batch.inter_event_times[batch.mask]
    gaps = gaps[gaps > 0]
    return float(gaps.mean()) if gaps.numel() else 1.0


@dataclass
class BenchData:
    """One dataset as the suite uses it: rescaled splits and the scale to report numbers back in data units."""

    name: str
    train: EventBatch
    val: EventBatch
    test: EventBatch
    scale: float
    units: str
    num_marks: int


def load_dataset(name: str, config: LikelihoodConfig, data_dir: str | os.PathLike | None = None) -> BenchData:
    """Train/val/test from the registry (validation carved from train, seeded, when the card has none), cut as
    ``config`` says and divided by the training split's mean gap."""
    card = registry.card(name)
    train = registry.load(name, "train", data_dir=data_dir)
    if "val" in card.splits:
        val = registry.load(name, "val", data_dir=data_dir)
    else:
        train, val = train.split((0.85, 0.15), seed=0)
    test = registry.load(name, "test", data_dir=data_dir)
    n_train, n_eval, n_events = config.max_train_sequences, config.max_eval_sequences, config.max_events
    if config.quick and card.num_marks > 1000:
        n_train = n_eval = config.quick_many_types[0]
        n_events = config.quick_many_types[1]
    train = truncate(subsample(train, n_train, 0), n_events)
    val = truncate(subsample(val, n_eval, 1), n_events)
    test = truncate(subsample(test, n_eval, 2), n_events)
    scale = mean_gap(train) if config.rescale else 1.0
    if config.rescale:
        train, val, test = (rescaled(b, scale) for b in (train, val, test))
    return BenchData(card.name, train, val, test, scale, card.units, card.num_marks)

