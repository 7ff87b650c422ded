"""Fixed-decay (sum-of-)exponential Hawkes MLE on Dask, for logs spread over many Parquet partitions.

For fixed decays the exact log-likelihood separates by target type ``i``::

    log L = sum_i [ sum_{n: m_n = i} log(mu_i + A[i] . X[n]) - mu_i D - A[i] . tails ]

(:func:`tpp.hawkes._recursion.event_features`): ``X[n]`` (``beta_u R[j, u]`` just before event ``n``) is a
row per event, while the duration ``D``, the ``tails`` (``K U`` numbers) and the counts per type add over
sequences and over time blocks of one sequence. A time block needs the recursion's state at its start: the
decayed excitation per type and decay (and the events tied at the boundary), which is itself a sum of each
earlier block's end state decayed to the boundary, so it comes from a cheap associative scan over the
blocks' own end states, as :meth:`~tpp.hawkes.exp.SumExpHawkes.partial_fit` carries it.

:func:`fit_parquet` runs on Dask (``dask.delayed`` over partitions; a ``distributed.Client`` when given, else
Dask's default scheduler), never a scheduler of our own:

1. each partition is read on a worker (:func:`tpp.io.read_events`, validated) and kept there (``persist``);
   it reports its windows, counts and each sequence piece's end state (O(N U), vectorised);
2. the client checks that the pieces of each sequence tile its window, scans the boundary states and sets the
   time unit (``ExpHawkes.fit``'s standardisation: mean event rate 1);
3. each partition computes its rows ``X`` grouped by target type and its ``tails`` on its worker;
4. the ``K`` per-target problems (``1 + K U`` unknowns each, concave) are solved in parallel on the workers
   (in at most ``target_groups`` tasks of consecutive types), each task receiving only its types' rows from every
   partition, by the optimiser ``ExpHawkes.fit`` uses, from the same start; so the fit equals
   ``ExpHawkes(K, decay).fit(batch)`` up to floating-point summation order (the per-target projected Newton
   solve, ``SumExpHawkes._solve_target``, ends with a finishing step, so rows that differ by rounding, as a carried
   state's do, still reach the same optimum to ~1e-12).

A sequence is identified by its id (the ``seq`` column): an id found in several partitions, or several pieces
of one, is ONE sequence cut in time blocks, whose windows must follow each other exactly (each block's
``t_start`` equals the previous one's ``t_end``). :func:`write_parquet` writes a batch in that layout, by
sequences or by time blocks. Needs the ``distributed`` extra (``pip install 'tpp-sde[distributed]'``).
"""

from __future__ import annotations

import glob as _glob
import math
import os
import time as _time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from tpp.events import EventBatch, EventDataError
from tpp.hawkes import _recursion
from tpp.hawkes._common import FitResult, warn_if_not_stationary
from tpp.hawkes._common import flat_events as _flat
from tpp.hawkes.exp import ExpHawkes, SumExpHawkes, _standardise, moment_start
from tpp.options import Objective, check_params

__all__ = ["fit_parquet", "write_parquet", "statistics", "batch_statistics", "HawkesStatistics", "partition_paths"]

_EXTRA = "pip install 'tpp-sde[distributed]' (dask[distributed] and pyarrow)"


def _dask() -> Any:
    """Import Dask when used: it is an optional extra, and ``import tpp`` must stay cheap without it."""
    try:
        import dask
    except ImportError as exc:
        raise ImportError(f"tpp.hawkes.distributed needs Dask: {_EXTRA}") from exc
    return dask


# ----------------------------------------------------------------------------------------------- writing
def write_parquet(batch: EventBatch, directory: str | os.PathLike, partitions: int, by: str = "sequence") -> list[Path]:
    """Write ``batch`` as ``partitions`` Parquet files ``part-00000.parquet, ...`` under ``directory``
    (:func:`tpp.io.write_events` each: the project's event table), for :func:`fit_parquet`.

    ``by="sequence"``: each file holds whole, consecutive sequences, balanced by event count.
    ``by="time"``: each sequence is cut into up to ``partitions`` time blocks of about equal event counts, file
    ``k`` holding block ``k`` of every sequence, under the sequence's own id; a block's window starts at its
    first event, where the previous block's window ends. Fewer files are written when there are fewer
    sequences (events) than ``partitions``: a table cannot hold an empty piece. Returns the paths written.
    """
    from tpp.io import write_events

    if by not in ("sequence", "time"):
        raise ValueError(f"write_parquet: by must be 'sequence' or 'time', got {by!r}")
    if not (isinstance(partitions, (int, np.integer)) and partitions >= 1):
        raise ValueError(f"write_parquet: partitions must be a positive integer, got {partitions!r}")
    if batch.mark_names is not None:
        raise ValueError("write_parquet: the batch has mark names; the partitions must share integer mark ids "
                         "0..K-1, so write batch.mark_names aside and pass a batch with mark_names=None")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    old = sorted(directory.glob("part-*.parquet"))
    if old:
        raise ValueError(f"write_parquet: {directory} already holds partitions ({old[0].name}, ...): they would mix "
                         "with the new ones; write to an empty directory")
    flat = batch.to_flat()
    lengths = np.diff(flat["seq_offsets"])
    names = [str(n) for n in (batch.seq_names if batch.seq_names is not None else range(len(batch)))]
    if np.any(lengths == 0):
        b = int(np.flatnonzero(lengths == 0)[0])
        raise EventDataError("a sequence without events cannot be written to a Parquet table (one row per event), "
                             "and its window counts in the likelihood, so it is not dropped silently: remove it "
                             "from the batch, or fit the batch with ExpHawkes.fit", sequence=names[b])
    features = flat.get("features")
    pieces: list[list[tuple[int, int, int, float, float]]] = [[] for _ in range(partitions)]  # (seq, lo, hi, a, c)
    if by == "sequence":
        ends = np.cumsum(lengths)
        cut = np.searchsorted(ends, np.arange(1, partitions) * ends[-1] / partitions, side="left") + 1
        groups = np.split(np.arange(len(lengths)), np.unique(np.clip(cut, 1, len(lengths))))
        for k, group in enumerate(g for g in groups if g.size):
            for b in group:
                lo, hi = flat["seq_offsets"][b], flat["seq_offsets"][b + 1]
                pieces[k].append((int(b), int(lo), int(hi), float(flat["t_start"][b]), float(flat["t_end"][b])))
    else:
        for b, n_b in enumerate(lengths):
            lo = int(flat["seq_offsets"][b])
            cuts = np.unique(np.round(np.arange(1, partitions) * n_b / partitions).astype(np.int64))
            cuts = cuts[(cuts > 0) & (cuts < n_b)]
            edges = np.concatenate([[0], cuts, [n_b]])
            bounds = np.concatenate([[flat["t_start"][b]], flat["times"][lo + cuts], [flat["t_end"][b]]])
            for k in range(edges.size - 1):
                pieces[k].append((b, lo + int(edges[k]), lo + int(edges[k + 1]), float(bounds[k]), float(bounds[k + 1])))
    paths = []
    for k, part in enumerate(p for p in pieces if p):
        idx = np.concatenate([np.arange(lo, hi) for _, lo, hi, _, _ in part])
        offsets = np.concatenate([[0], np.cumsum([hi - lo for _, lo, hi, _, _ in part])])
        piece = EventBatch.from_flat(
            flat["times"][idx], offsets, np.array([p[3] for p in part]), np.array([p[4] for p in part]),
            flat["marks"][idx], batch.num_marks, features=None if features is None else features[idx],
            feature_names=list(batch.feature_names) or None, seq_names=[names[p[0]] for p in part])
        paths.append(write_events(piece, directory / f"part-{k:05d}.parquet"))
    return paths


def partition_paths(path_or_glob: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The partition files: a list of paths, a directory (its ``*.parquet``, sorted), a glob pattern (sorted
    matches) or one file."""
    if isinstance(path_or_glob, (list, tuple)):
        paths = [Path(p) for p in path_or_glob]
    else:
        text = os.fspath(path_or_glob)
        if Path(text).is_dir():
            paths = sorted(Path(text).glob("*.parquet"))
        elif any(ch in text for ch in "*?["):
            paths = [Path(p) for p in sorted(_glob.glob(text))]
        else:
            paths = [Path(text)]
    if not paths:
        raise EventDataError("no partition files found (a directory needs *.parquet files, a glob some match)",
                             source=os.fspath(path_or_glob) if not isinstance(path_or_glob, (list, tuple)) else None)
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise EventDataError("no such partition file", source=str(missing[0]))
    return paths


# ----------------------------------------------------------------------------------------------- worker tasks
def _load(path: str, num_marks: int) -> dict[str, Any]:
    """Read and validate one partition (on a worker); only what the fit needs is kept in memory."""
    from tpp.io import read_events

    batch = read_events(path, num_marks=num_marks, features=[])
    if batch.num_marks != num_marks:
        raise EventDataError(f"the partition declares {batch.num_marks} mark types, the fit {num_marks}",
                             source=path, field="num_marks")
    flat = _flat(batch)
    names = [str(n) for n in (batch.seq_names if batch.seq_names is not None else range(len(batch)))]
    return {"path": path, "names": names, **{k: flat[k] for k in ("times", "marks", "seq_offsets", "t_start", "t_end")}}


def _summary(part: dict[str, Any], beta: np.ndarray, num_marks: int) -> dict[str, Any]:
    """Windows, counts and each piece's own end state (from an empty history, in the data's clock):
    ``state[b, j, u] = sum_{t_m < c_b, mark j} exp(-beta_u (c_b - t_m))`` and ``pending[b, j]`` the events at
    exactly ``c_b`` (tied with the next block's first events: they excite only later times)."""
    K, U = num_marks, beta.size
    offsets, times, marks = part["seq_offsets"], part["times"], part["marks"]
    B = offsets.size - 1
    seq = np.repeat(np.arange(B), np.diff(offsets))
    lag = part["t_end"][seq] - times
    inside = lag > 0
    index = seq * K + marks
    state = np.stack([np.bincount(index, weights=np.where(inside, np.exp(-beta[u] * lag), 0.0), minlength=B * K)
                      for u in range(U)], axis=-1).reshape(B, K, U)
    pending = np.bincount(index[~inside], minlength=B * K).astype(np.float64).reshape(B, K)
    return {"path": part["path"], "names": part["names"], "t_start": part["t_start"], "t_end": part["t_end"],
            "lengths": np.diff(offsets), "mark_counts": np.bincount(marks, minlength=K), "state": state, "pending": pending}


def _features(part: dict[str, Any], plan: dict[str, Any], beta: np.ndarray, scale: float, num_marks: int,
              groups: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """One partition's rows ``X`` (``[n, K U]``) sorted by target type, event order within a type, cut into the
    target groups ``[groups[g], groups[g + 1])`` (one array each), and its ``tails [K U]``, in ``ExpHawkes.fit``'s
    standardised clock (``(t - sequence start) / scale``).

    Whole sequences go through :func:`_recursion.event_features` exactly as the single-process fit; a time block
    through :func:`_recursion.chunk_features` from its carried state (its ``tails`` then include the carried
    history's excitation over the block, so the blocks' tails add up to the sequence's)."""
    K, U = num_marks, beta.size
    offsets, marks = part["seq_offsets"], part["marks"]
    origin = plan["origin"]  # [B] the start of each piece's sequence
    seq = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    times = (part["times"] - origin[seq]) / scale
    t_end = (part["t_end"] - origin) / scale
    order = np.argsort(marks, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(marks, minlength=K))])
    whole = plan["whole"]  # [B] bool: the piece is its whole sequence
    if whole.all():  # the common case: rows written straight into type order, as the single-process fit does
        rows = np.empty_like(order)
        rows[order] = np.arange(order.size)
        X, tails, _ = _recursion.event_features(times, marks, offsets, np.zeros(whole.size), t_end, beta, K, rows)
    else:
        X = np.empty((times.size, K * U))
        tails = np.zeros(K * U)
        if whole.any():
            idx = np.flatnonzero(whole[seq])
            sub_offsets = np.concatenate([[0], np.cumsum(np.diff(offsets)[whole])])
            X[idx], tails_w, _ = _recursion.event_features(times[idx], marks[idx], sub_offsets,
                                                           np.zeros(int(whole.sum())), t_end[whole], beta, K,
                                                           np.arange(idx.size))
            tails += tails_w
        for b in np.flatnonzero(~whole):
            lo, hi = offsets[b], offsets[b + 1]
            state, pending = plan["state"][b].copy(), plan["pending"][b].copy()
            clock = np.array([(part["t_start"][b] - origin[b]) / scale])
            X[lo:hi], tails_b = _recursion.chunk_features(times[lo:hi], marks[lo:hi], float(t_end[b]), beta, K,
                                                          state, pending, clock)
            tails += tails_b
        X = X[order]
    return [X[bounds[groups[g]]:bounds[groups[g + 1]]] for g in range(groups.size - 1)], tails


def _add(parts: list[np.ndarray]) -> np.ndarray:
    return np.sum(parts, axis=0)


def _solve_group(blocks: list[np.ndarray], counts: np.ndarray, tails: np.ndarray, duration: float, n_events: float,
                 mu0: np.ndarray, w0: np.ndarray, mu_floor: float, l1: float, l2: float, max_iter: int,
                 tol: float) -> list[dict[str, Any]]:
    """The concave problems of a group of target types, on a worker, one after the other: the optimiser and
    settings of ``ExpHawkes.fit``. ``blocks[p]``: partition ``p``'s rows of the group's types (type order);
    ``counts [P, types]``: how many rows of each type each partition holds."""
    starts = np.concatenate([np.zeros((counts.shape[0], 1), np.int64), np.cumsum(counts, axis=1)], axis=1)
    out = []
    for k in range(counts.shape[1]):
        pieces = [block[starts[p, k]:starts[p, k + 1]] for p, block in enumerate(blocks) if counts[p, k]]
        if not pieces:  # a type without events: its baseline goes to the floor, its row of A to 0, as in fit
            X = np.zeros((0, tails.size))
        else:
            X = np.ascontiguousarray(np.concatenate(pieces) if len(pieces) > 1 else pieces[0])
        # the progress bar SumExpHawkes._solve_target updates: the project's tqdm, switched off on a worker
        stats = {"iterations": 0, "evaluations": 0, "bar": tqdm(disable=True)}
        # fit's solver and its final solve's settings, so both reach the same optimum
        res = SumExpHawkes._solve_target(X, tails, duration, float(mu0[k]), w0, mu_floor, n_events, l1, l2, max_iter,
                                         tol, stats, final=True)
        out.append({"x": res.x, "fun": float(res.fun), "success": bool(res.success),
                    "iterations": stats["iterations"], "evaluations": stats["evaluations"]})
    return out


# ----------------------------------------------------------------------------------------------- the reduction
@dataclass
class HawkesStatistics:
    """Reduced sufficient statistics of the fixed-decay likelihood, in ``ExpHawkes.fit``'s standardised clock.

    ``scale``: the time unit (total window length / events); ``duration``: total window length in that unit;
    ``tails [K U]``; ``counts [K]``; ``rows[i]``: the rows ``X`` of the events of type ``i`` (``[n_i, K U]``,
    sequences in partition order), when asked for."""

    num_events: int
    num_sequences: int
    scale: float
    duration: float
    counts: np.ndarray
    tails: np.ndarray
    decays: np.ndarray
    rows: list[np.ndarray] | None = None
    partitions: int = 1
    info: dict[str, Any] = field(default_factory=dict)


def _plan(summaries: list[dict[str, Any]], K: int, beta: np.ndarray) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Group the pieces by sequence id, check that each sequence's blocks tile its window, and scan the boundary
    states (``carry' = exp(-beta (c - a)) (carry + pending) + own end state``; a block of zero length folds
    nothing). Returns each partition's plan and the global totals."""
    pieces: dict[str, list[tuple[float, float, int, int]]] = {}
    for p, s in enumerate(summaries):
        for b, name in enumerate(s["names"]):
            pieces.setdefault(name, []).append((float(s["t_start"][b]), float(s["t_end"][b]), p, b))
    plans = [{"origin": np.empty(len(s["names"])), "whole": np.zeros(len(s["names"]), bool),
              "state": np.zeros((len(s["names"]), K, beta.size)), "pending": np.zeros((len(s["names"]), K))}
             for s in summaries]
    starts, ends = [], []
    for name, blocks in pieces.items():
        blocks.sort(key=lambda x: (x[0], x[1]))
        for (a0, c0, p0, _), (a1, c1, p1, _) in zip(blocks, blocks[1:]):
            if a1 != c0:
                raise EventDataError(
                    f"the time blocks of one sequence must follow each other (each starting where the previous ends): "
                    f"[{a0!r}, {c0!r}] in {summaries[p0]['path']} and [{a1!r}, {c1!r}] in this file "
                    + ("overlap" if a1 < c0 else "leave a gap"), source=summaries[p1]["path"], sequence=name,
                    field="t_start")
        origin = blocks[0][0]
        starts.append(origin)
        ends.append(blocks[-1][1])
        state, pending = np.zeros((K, beta.size)), np.zeros(K)
        for a, c, p, b in blocks:
            plans[p]["origin"][b] = origin
            plans[p]["whole"][b] = len(blocks) == 1
            plans[p]["state"][b], plans[p]["pending"][b] = state, pending
            own_state, own_pending = summaries[p]["state"][b], summaries[p]["pending"][b]
            if c > a:
                state = np.exp(-beta * (c - a))[None, :] * (state + pending[:, None]) + own_state
                pending = own_pending
            else:
                state, pending = state + own_state, pending + own_pending
    counts = np.sum([s["mark_counts"] for s in summaries], axis=0)
    n_events = int(counts.sum())
    if n_events == 0:
        raise ValueError("cannot fit a Hawkes process to data without events")
    starts_a, ends_a = np.asarray(starts), np.asarray(ends)
    raw_duration = float(np.sum(ends_a - starts_a))  # as _standardise sums it, sequences in order of appearance
    if not raw_duration > 0:
        raise ValueError("the observation windows have zero total length: no rate can be fitted")
    scale = raw_duration / n_events
    totals = {"counts": counts, "num_events": n_events, "num_sequences": len(pieces), "scale": scale,
              "duration": float(np.sum((ends_a - starts_a) / scale)), "blocks": sum(len(v) for v in pieces.values())}
    return plans, totals


def _scheduler(client: Any) -> dict[str, Any]:
    """``dask.compute``/``persist`` keyword arguments: the given client, else Dask's default (a distributed
    client when one is active, else threads)."""
    return {} if client is None else {"scheduler": client}


def _reduce(path_or_glob: Any, num_marks: int, decays: np.ndarray, client: Any,
            target_groups: int = 64) -> tuple[Any, dict[str, Any], list[Path]]:
    """Phases 1-3 of the module docstring: persisted partitions, their summaries, the plan, and the per-partition
    features as Dask objects (not yet computed). ``decays`` in the data's clock."""
    dask = _dask()
    from dask import delayed

    paths = partition_paths(path_or_glob)
    K = int(num_marks)
    # a fresh key per call: a file rewritten under the same name must be read again, never served from a cache
    call = uuid.uuid4().hex
    loads = [delayed(_load)(str(p), K, dask_key_name=f"tpp-load-{call}-{k}") for k, p in enumerate(paths)]
    start = _time.perf_counter()
    loads = list(dask.persist(*loads, **_scheduler(client)))
    summaries = list(dask.compute(*[delayed(_summary, pure=True)(part, decays, K) for part in loads], **_scheduler(client)))
    plans, totals = _plan(summaries, K, decays)
    totals["read_seconds"] = _time.perf_counter() - start
    beta = decays * totals["scale"]  # the standardised clock's decays, as _initial_guess makes them
    # target types in groups of consecutive ids: a group's rows are one slice of each partition's sorted rows, and
    # the tasks number P G + G whatever K (one type per group up to target_groups types)
    groups = np.unique(np.linspace(0, K, min(K, target_groups) + 1).round().astype(np.int64))
    feats = [delayed(_features, nout=2, pure=True)(part, plan, beta, totals["scale"], K, groups)
             for part, plan in zip(loads, plans)]
    totals.update(beta=beta, groups=groups, partition_counts=np.stack([s["mark_counts"] for s in summaries]))
    return feats, totals, paths


def _groups(target_groups: Any) -> int:
    if not (isinstance(target_groups, (int, np.integer)) and not isinstance(target_groups, bool) and target_groups >= 1):
        raise ValueError(f"target_groups must be a positive integer, got {target_groups!r}")
    return int(target_groups)


def _decays_of(num_marks: int, decay: float | Sequence[float]) -> SumExpHawkes:
    """The model the fit fills: ``ExpHawkes`` for one decay, ``SumExpHawkes`` for several (both check their
    arguments); its stored decays (``exp(log(decay))``) are the ones ``fit`` uses."""
    if np.ndim(decay) == 0:
        if decay is None:
            raise ValueError("fit_parquet fits fixed decays: pass decay= (a positive number or a list of them)")
        return ExpHawkes(num_marks, float(decay))
    return SumExpHawkes(num_marks, np.asarray(decay, np.float64))


def statistics(path_or_glob: Any, num_marks: int, decay: float | Sequence[float], client: Any = None,
               rows: bool = False, *, target_groups: int = 64) -> HawkesStatistics:
    """The reduced sufficient statistics that :func:`fit_parquet` solves from (``rows=True`` also gathers every
    event's row to the caller: for checks on small data)."""
    dask = _dask()
    from dask import delayed

    model = _decays_of(num_marks, decay)
    decays = model.decays.detach().numpy().copy()
    feats, totals, paths = _reduce(path_or_glob, num_marks, decays, client, _groups(target_groups))
    tails = delayed(_add, pure=True)([f[1] for f in feats])
    if rows:
        tails, blocks = dask.compute(tails, [f[0] for f in feats], **_scheduler(client))
        counts, groups = totals["partition_counts"], totals["groups"]
        group_of = np.repeat(np.arange(groups.size - 1), np.diff(groups))
        gathered = []
        for i in range(int(num_marks)):
            g, lo = group_of[i], groups[group_of[i]]
            offset = counts[:, lo:i].sum(axis=1)  # where type i's rows start in each partition's block of group g
            gathered.append(np.concatenate([b[g][offset[p]:offset[p] + counts[p, i]] for p, b in enumerate(blocks)]))
    else:
        (tails,), gathered = dask.compute(tails, **_scheduler(client)), None
    return HawkesStatistics(totals["num_events"], totals["num_sequences"], totals["scale"], totals["duration"],
                            totals["counts"], tails, totals["beta"], gathered, len(paths), {"blocks": totals["blocks"]})


def batch_statistics(batch: EventBatch, decay: float | Sequence[float]) -> HawkesStatistics:
    """:func:`statistics` computed in one process from a batch, as ``ExpHawkes.fit`` computes them (the reference)."""
    model = _decays_of(batch.num_marks, decay)
    model._check(batch)
    K = batch.num_marks
    flat, scale = _standardise(_flat(batch))
    beta = model.decays.detach().numpy().copy() * scale
    order = np.argsort(flat["marks"], kind="stable")
    row = np.empty_like(order)
    row[order] = np.arange(order.size)
    X, tails, duration = _recursion.event_features(flat["times"], flat["marks"], flat["seq_offsets"], flat["t_start"],
                                                   flat["t_end"], beta, K, row)
    counts = np.bincount(flat["marks"], minlength=K)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return HawkesStatistics(int(counts.sum()), len(batch), scale, duration, counts, tails, beta,
                            [X[bounds[i]:bounds[i + 1]] for i in range(K)])


def fit_parquet(path_or_glob: str | os.PathLike | Sequence[str | os.PathLike], num_marks: int,
                decay: float | Sequence[float], client: Any = None, *, l1: float = 0.0, l2: float = 0.0,
                max_iter: int = 500, tol: float = 1e-10, target_groups: int = 64) -> SumExpHawkes:
    """Exact MLE of a fixed-decay exponential Hawkes process on partitioned Parquet event tables, on Dask.

    ``path_or_glob``: a directory of ``*.parquet``, a glob, a file or a list of files (see :func:`write_parquet`
    and the module docstring for the layout). ``decay``: a positive number (an :class:`ExpHawkes` is returned)
    or a list of decays (a :class:`SumExpHawkes`). ``client``: a ``distributed.Client`` (None: Dask's default
    scheduler). ``l1``, ``l2``, ``max_iter``, ``tol``: as in :meth:`SumExpHawkes.fit`, whose result this equals up
    to summation order (``fit_result_["log_likelihood"]`` included, in the data's clock). ``target_groups``: at most
    this many solve tasks, each solving a run of consecutive target types (one type each when ``K`` is smaller), so
    the number of tasks stays bounded for thousands of types.
    """
    dask = _dask()
    from dask import delayed

    start = _time.perf_counter()
    model = _decays_of(num_marks, decay)
    check_params(model, l1=l1, l2=l2, max_iter=max_iter, tol=tol)
    K, U = model.num_marks, model.num_decays
    decays = model.decays.detach().numpy().copy()
    feats, totals, paths = _reduce(path_or_glob, K, decays, client, _groups(target_groups))
    n_events, scale, duration = totals["num_events"], totals["scale"], totals["duration"]
    # the start of SumExpHawkes.fit, in the standardised clock (total time = duration)
    mu0, adjacency0 = moment_start(np.asarray(totals["counts"], dtype=np.float64), duration, U)
    w0 = adjacency0[0].ravel()
    mu_floor = 1e-12 * float(mu0.min())
    tails = delayed(_add, pure=True)([f[1] for f in feats])
    groups, counts = totals["groups"], totals["partition_counts"]
    solves = [delayed(_solve_group, pure=True)([f[0][g] for f in feats], counts[:, lo:hi], tails, duration,
                                               float(n_events), mu0[lo:hi], w0, mu_floor, float(l1), float(l2),
                                               int(max_iter), float(tol))
              for g, (lo, hi) in enumerate(zip(groups[:-1], groups[1:]))]
    solve_start = _time.perf_counter()
    results = [r for group in dask.compute(*solves, **_scheduler(client)) for r in group]
    solve_seconds = _time.perf_counter() - solve_start  # the features of every partition, then the K solves
    mu = np.array([r["x"][0] for r in results])
    adj = np.stack([r["x"][1:] for r in results]).reshape(K, K, U)
    value = 0.0
    for r in results:  # in target order, as the single-process fit adds them
        value += r["fun"]
    beta = totals["beta"]
    model.set_params(mu / scale, adj, beta / scale)
    model.fit_result_ = FitResult(
        objective=Objective.LIKELIHOOD.value, value=value,
        log_likelihood=float(-value * n_events - n_events * math.log(scale)),
        iterations=sum(r["iterations"] for r in results), evaluations=sum(r["evaluations"] for r in results),
        decay_steps=0, converged=all(r["success"] for r in results), seconds=_time.perf_counter() - start,
        partitions=len(paths), sequences=totals["num_sequences"], blocks=totals["blocks"], events=n_events,
        read_seconds=totals["read_seconds"], solve_seconds=solve_seconds,
    )
    warn_if_not_stationary(model.branching_ratio)
    return model
