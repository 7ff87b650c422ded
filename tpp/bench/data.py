"""The suite's data: registry splits (or, in full runs, the split the data's paper used) cut to size, rescaled
to the training split's mean gap (numbers are reported back in the data's units).

Published splits reproduced for full runs (:data:`PUBLISHED_SPLITS`), so that the papers' numbers in
:mod:`tpp.bench.published` are set beside ours on the same test sequences:

* ``"tritpp"`` (Shchur et al., NeurIPS 2020, shchur/triangular-tpp ``SequenceDataset.train_val_test_split``):
  the file's sequences in file order, the first ``int(0.6 n)`` train, up to ``int(0.8 n)`` validation, the rest
  test -- no shuffle (its ``seed`` argument is unused).
* ``"ifl"`` (Shchur et al., ICLR 2020, shchur/ifl-tpp branch original-code, ``train_val_test_split_whole`` as
  ``code/train.py`` calls it with ``seed = 0``): ``np.random.seed(0)``, then two calls of scikit-learn's
  ``train_test_split`` on the global generator: 60 % train / 40 % rest, then the rest halved into validation and
  test. :func:`ifl_split` reproduces scikit-learn's ``ShuffleSplit`` index arithmetic with ``RandomState(0)``.

Quick runs keep the registry's splits (seeded shuffles of the card's ``[split]``): their cut data match no
paper anyway.

**Anchored sequences.** In the RMTPP releases (mimic2, stackoverflow, bookorder) every sequence's first event
sits exactly at its window's start: times are measured from it. An event at the window start has no random time,
and scoring it as one makes the likelihood unbounded (the intensity or density a model puts at a zero gap after
its initial state enters no compensator: RMTPP's ``exp(v . h_0 + b)`` grew to e^88 on mimic2 and its loss
overflowed at epoch 39; IntensityFree reached +5.3 nats per event there against Poisson's -2.5). So the suite
conditions on that event, as the RMTPP / NHP / THP papers do (their integrals start at the first event): it is
removed and the window starts at its time (:func:`condition_on_first_event`; ``BenchData.first_event`` and every
cell's row say so). Data sets without an event at the window start are unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from tpp import datasets as registry
from tpp.bench.config import LikelihoodConfig
from tpp.events import EventBatch

__all__ = ["BenchData", "truncate", "subsample", "rescaled", "mean_gap", "load_dataset", "PUBLISHED_SPLITS",
           "tritpp_split", "ifl_split", "published_split", "anchored", "condition_on_first_event", "FIRST_EVENT",
           "ANCHORED_BEFORE_RULE", "current_protocol"]

#: how a cell treated an event at its window start (recorded in each cell; see the module docstring)
FIRST_EVENT = "conditioned"
#: the registry's anchored data sets: their cells from before the rule (no ``first_event`` in the row) scored the
#: anchoring event and are recomputed, not reused
ANCHORED_BEFORE_RULE = frozenset({"mimic2_rmtpp", "stackoverflow_rmtpp_subset", "bookorder_rmtpp"})


def current_protocol(row: dict) -> bool:
    """False for a cell of an anchored data set written before the first-event rule (it scored that event)."""
    return "first_event" in row or row.get("dataset") not in ANCHORED_BEFORE_RULE

#: data set -> the paper's split reproduced in full runs (see the module docstring)
PUBLISHED_SPLITS: dict[str, str] = {
    **{name: "tritpp" for name in ("pubg", "reddit_askscience_comments", "taxi", "twitter", "yelp_airport",
                                   "yelp_mississauga")},
    "wikipedia_ifl": "ifl",
    "yelp_toronto_ifl": "ifl",
}


def anchored(batch: EventBatch) -> bool:
    """Whether every non-empty sequence's first event sits exactly at its window's start (and one has events)."""
    if batch.mask.shape[1] == 0:
        return False
    has = batch.mask[:, 0]
    return bool(has.any()) and bool(((batch.time[:, 0] == batch.t_start) | ~has).all())


def condition_on_first_event(batch: EventBatch) -> EventBatch:
    """Each sequence without its first event, its window starting at that event's time: the likelihood is then
    conditioned on the first event (module docstring, *Anchored sequences*). Empty sequences stay empty."""
    flat = batch.to_flat()
    off = flat["seq_offsets"]
    keep = np.ones(flat["times"].size, dtype=bool)
    t_start = flat["t_start"].copy()
    lengths = np.diff(off)
    first = off[:-1][lengths > 0]
    keep[first] = False
    t_start[lengths > 0] = flat["times"][first]
    offsets = np.concatenate([[0], np.cumsum(np.maximum(lengths - 1, 0))])
    return EventBatch.from_flat(flat["times"][keep], offsets, t_start, flat["t_end"], flat["marks"][keep],
                                batch.num_marks, dtype=batch.dtype)


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


def tritpp_split(whole: EventBatch, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
                 ) -> tuple[EventBatch, EventBatch, EventBatch]:
    """Train/val/test as triangular-tpp cuts them: contiguous blocks of the sequences in file order, the
    boundaries ``int(n * f_train)`` and ``int(n * (f_train + f_val))`` (Python's truncation, as theirs)."""
    n = len(whole)
    i1, i2 = int(n * fractions[0]), int(n * (fractions[0] + fractions[1]))
    if not 0 < i1 < i2 < n:
        raise ValueError(f"cannot cut {n} sequences into {list(fractions)}: a part would be empty")
    idx = np.arange(n)
    return whole[idx[:i1]], whole[idx[i1:i2]], whole[idx[i2:]]


def _shuffle_split(n: int, train_size: float, test_size: float, rng: np.random.RandomState
                   ) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ``train_test_split(arange(n), train_size=, test_size=)`` on ``rng``: one permutation, the
    first ``ceil(test_size n)`` indices test, the next ``floor(train_size n)`` train (``ShuffleSplit``)."""
    n_test, n_train = int(np.ceil(test_size * n)), int(np.floor(train_size * n))
    perm = rng.permutation(n)
    return perm[n_test:n_test + n_train], perm[:n_test]


def ifl_split(whole: EventBatch, seed: int = 0) -> tuple[EventBatch, EventBatch, EventBatch]:
    """Train/val/test as ifl-tpp's original code cuts them (``train_val_test_split_whole(seed=0)``, 0.6/0.2/0.2):
    both ``train_test_split`` calls draw from the one global generator seeded once, so they share ``rng``."""
    rng = np.random.RandomState(seed)
    all_idx = np.arange(len(whole))
    train, rest = _shuffle_split(len(all_idx), 0.6, 0.2 + 0.2, rng)
    val, test = _shuffle_split(len(rest), 0.2 / (0.2 + 0.2), 0.2 / (0.2 + 0.2), rng)
    # indices in the paper's (shuffled) order; the likelihood per event does not depend on the order
    return whole[all_idx[train]], whole[all_idx[rest][val]], whole[all_idx[rest][test]]


def published_split(name: str, data_dir: str | os.PathLike | None = None
                    ) -> tuple[EventBatch, EventBatch, EventBatch] | None:
    """The paper's train/val/test of registry data set ``name`` (see :data:`PUBLISHED_SPLITS`), or None where
    the suite reproduces none (the registry's own split files are then the published ones, or none is known)."""
    kind = PUBLISHED_SPLITS.get(registry.card(name).name)
    if kind is None:
        return None
    whole = registry.load(name, data_dir=data_dir)
    return tritpp_split(whole) if kind == "tritpp" else ifl_split(whole, seed=0)


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
    #: which split was used: "registry" (the card's files or seeded [split]) or a :data:`PUBLISHED_SPLITS` kind
    split: str = "registry"
    #: "conditioned" where every sequence began with an event at its window start (removed: the module
    #: docstring), else "scored"
    first_event: str = "scored"


def load_dataset(name: str, config: LikelihoodConfig, data_dir: str | os.PathLike | None = None) -> BenchData:
    """Train/val/test, cut as ``config`` says and divided by the training split's mean gap.

    Full runs use the paper's split where :data:`PUBLISHED_SPLITS` names one (the card says so in its
    ``[split]`` comment); otherwise, and in quick runs, the registry's (validation carved from train, seeded,
    when the card has none)."""
    card = registry.card(name)
    published = None if config.quick or config.split != "published" else published_split(name, data_dir)
    if published is not None:
        train, val, test = published
        split = PUBLISHED_SPLITS[card.name]
    else:
        split = "registry"
        train = registry.load(name, "train", data_dir=data_dir)
        if "val" in card.splits:
            val = registry.load(name, "val", data_dir=data_dir)
        else:
            train, val = train.split((0.85, 0.15), seed=0)
        test = registry.load(name, "test", data_dir=data_dir)
    first_event = "scored"
    if all(anchored(b) for b in (train, val, test)):
        train, val, test = (condition_on_first_event(b) for b in (train, val, test))
        first_event = FIRST_EVENT
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
    return BenchData(card.name, train, val, test, scale, card.units, card.num_marks, split, first_event)

