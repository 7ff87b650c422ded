"""Minibatch sources for the trainer: an :class:`EventBatch` in memory, or event logs in Parquet too large for it.

The trainer (:func:`tpp.fit`) reads its data through one small protocol, :class:`BatchSource`:

* ``lengths`` ``[S]``: events per sequence (the index: what a plan needs, never the events),
* ``num_marks``,
* ``plan(batch_size, rng)``: the epoch's minibatches as arrays of sequence numbers, in training
  order. A plan is a function of ``(batch_size, rng state)`` only, so an interrupted epoch is
  rebuilt exactly from the random state at its start and the number of steps done;
* ``load(indices)``: those sequences as a validated :class:`EventBatch`.

:class:`InMemorySource` wraps an :class:`EventBatch`. :class:`ParquetSource` reads the long layout
of :func:`tpp.io.to_dataframe` (one row per event: ``seq, time, mark`` and optionally ``t_start``,
``t_end``, ``num_marks``; the rows of a sequence contiguous and in time order) from one or several
Parquet files. One pass over the ``seq`` (and ``mark``) column builds the index; then each
minibatch reads only the rows of its block. Memory is proportional to a block (``block_events``
rows) plus the index (a few numbers per sequence), not to the log.
:class:`EventLogWriter` writes such a file chunk by chunk.
"""

from __future__ import annotations

import abc
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tpp.events import EventBatch, EventDataError
from tpp.io import atomic_write, from_dataframe

__all__ = ["BatchSource", "InMemorySource", "ParquetSource", "EventLogWriter", "length_buckets", "as_source"]


def length_buckets(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Indices of sequences grouped by similar length, ``batch_size`` per group; with ``rng``, sequences of equal
    length are shuffled before grouping and the group order is shuffled.

    Why shuffle within a length: with equal-length series (most series archives) a stable sort made the same
    minibatches every epoch, only reordered, and left the same tiny remainder batch each time (a NeuralCDE
    on GunPoint varied 0.73-0.95 across seeds from that alone)."""
    lengths = np.asarray(lengths)
    order = np.argsort(lengths, kind="stable") if rng is None else np.lexsort((rng.random(lengths.size), lengths))
    groups = [order[i : i + batch_size] for i in range(0, order.size, batch_size)]
    if rng is not None:
        groups = [groups[i] for i in rng.permutation(len(groups))]
    return groups


class BatchSource(abc.ABC):
    """Where the trainer gets its minibatches (see the module docstring for the contract)."""

    num_marks: int

    @property
    @abc.abstractmethod
    def lengths(self) -> np.ndarray:
        """``[S]`` number of events of each sequence."""

    @abc.abstractmethod
    def load(self, indices: np.ndarray) -> EventBatch:
        """The sequences ``indices`` (in that order) as one validated batch."""

    def plan(self, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
        """The minibatches of one epoch: length buckets of ``batch_size`` sequences, order drawn from
        ``rng`` (``None``: a fixed order, for evaluation). Draws from ``rng`` and nothing else."""
        return length_buckets(self.lengths, batch_size, rng)

    def standardisation_sample(self) -> EventBatch:
        """The data a model's one-time start learns from (:meth:`tpp.model.Model.initialise`, called by the
        trainer before a fresh run: rates, time standardisation): all of it by default."""
        return self.load(np.arange(len(self.lengths)))

    @property
    def num_events(self) -> int:
        return int(self.lengths.sum())

    @property
    def num_sequences(self) -> int:
        return int(len(self.lengths))


class InMemorySource(BatchSource):
    """An in-memory batch as a source: minibatches are index views of it.

    Any batch with the trainer's duck type works: ``len``, ``batch[indices]``, ``lengths``,
    ``num_events``, ``to`` (an :class:`EventBatch`, or ``sde.series.SeriesBatch`` whose rows count
    as events and which has no marks).
    """

    def __init__(self, data: EventBatch) -> None:
        self.data = data
        self.num_marks = int(getattr(data, "num_marks", 0) or 0)
        self._lengths = data.lengths.cpu().numpy()
        # Length buckets are the same groups every epoch (only their order changes), so each minibatch is
        # sliced once and reused: the cache holds at most the data again, trimmed to each group's length.
        self._loaded: dict[bytes, EventBatch] = {}
        self._cached_rows = 0

    @property
    def lengths(self) -> np.ndarray:
        return self._lengths

    def load(self, indices: np.ndarray) -> EventBatch:
        indices = np.asarray(indices, dtype=np.int64)
        key = indices.tobytes()
        batch = self._loaded.get(key)
        if batch is None:
            batch = self.data[indices]
            if self._cached_rows + len(indices) <= 2 * len(self._lengths):  # bounded for any pattern of requests
                self._loaded[key] = batch
                self._cached_rows += len(indices)
        return batch

    def standardisation_sample(self) -> EventBatch:
        return self.data


def as_source(data: EventBatch | BatchSource) -> BatchSource:
    """``data`` as a :class:`BatchSource` (an in-memory batch is wrapped, a source returned as is)."""
    if isinstance(data, BatchSource):
        return data
    if isinstance(data, EventBatch) or all(hasattr(data, a) for a in ("lengths", "num_events", "to", "__getitem__")):
        return InMemorySource(data)
    raise TypeError(f"expected an EventBatch, a batch with the same interface or a BatchSource, got {type(data).__name__}")


# --------------------------------------------------------------------------- Parquet
class _RowGroups:
    """The row groups of several Parquet files as one table: global row numbers across the files."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self.files = [pq.ParquetFile(p) for p in self.paths]
        groups = []  # (file, row group, first global row, rows)
        start = 0
        for f, pf in enumerate(self.files):
            for g in range(pf.metadata.num_row_groups):
                n = pf.metadata.row_group(g).num_rows
                groups.append((f, g, start, n))
                start += n
        self.groups = groups
        self.num_rows = start
        self.starts = np.array([g[2] for g in groups] + [start], dtype=np.int64)
        schemas = {tuple(pf.schema_arrow.names) for pf in self.files}
        if len(schemas) > 1:
            raise EventDataError(f"the files have different columns: {sorted(schemas)}", source=str(self.paths[0].parent))
        self.columns = list(self.files[0].schema_arrow.names)

    def iter_batches(self, columns: list[str], batch_rows: int = 1 << 18):
        """``(first global row, RecordBatch)`` over every row, in order."""
        for f, g, start, _ in self.groups:
            row = start
            for batch in self.files[f].iter_batches(batch_size=batch_rows, row_groups=[g], columns=columns):
                yield row, batch
                row += batch.num_rows

    def read_rows(self, first: int, stop: int, columns: list[str]) -> pa.Table:
        """Global rows ``[first, stop)``; reads only the row groups they overlap, in record batches."""
        pieces = []
        g0 = int(np.searchsorted(self.starts, first, side="right") - 1)
        for f, g, start, _ in self.groups[g0:]:
            if start >= stop:
                break
            row = start
            for batch in self.files[f].iter_batches(batch_size=1 << 16, row_groups=[g], columns=columns):
                lo, hi = max(first - row, 0), min(stop - row, batch.num_rows)
                if hi > lo:
                    pieces.append(batch.slice(lo, hi - lo))
                row += batch.num_rows
                if row >= stop:
                    break
        return pa.Table.from_batches(pieces) if pieces else pa.table({c: [] for c in columns})


def _ids_as_text(ids: pa.Array) -> pa.Array:
    """Sequence ids as text, as :func:`tpp.read_events` reads them from a file (7 -> "7", 1.5 -> "1.5"; "01" and
    "1" stay two ids); a null stays null (refused as a missing id by the index)."""
    if pa.types.is_dictionary(ids.type):
        ids = ids.dictionary_decode()
    if pa.types.is_string(ids.type):
        return ids
    if pa.types.is_large_string(ids.type) or pa.types.is_integer(ids.type):
        return pc.cast(ids, pa.string())  # exact: an integer's text is Python's str()
    # Floats, booleans, ...: Python's text of each value, like tpp.io (str(1.0) == "1.0", NaN is missing)
    return pa.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                     for v in ids.to_pylist()], type=pa.string())


def _numeric_max(column: pa.Array) -> int | None:
    """The largest value of an integer or float column as an int; None if not numeric, empty or not finite."""
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        return None
    value = pc.max(column).as_py()
    return int(value) if value is not None and math.isfinite(value) else None


def _ranges(first: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``concatenate([arange(f, f + n) for f, n in zip(first, lengths)])`` without a Python loop."""
    shift = first - np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.repeat(shift, lengths) + np.arange(int(lengths.sum()))


class ParquetSource(BatchSource):
    """Event logs in Parquet (long layout, one row per event), read block by block.

    Args:
        path: a ``.parquet`` file, a folder of them (read in name order, as one log) or a list of files.
        seq, time, mark, t_start, t_end: column names as in :func:`tpp.read_events` (``t_start`` /
            ``t_end``: a number, a column, or None: columns ``t_start``/``t_end`` when present, else 0
            and each sequence's last event). Sequence ids are text, as :func:`tpp.read_events` reads them
            (an integer id 7 is ``"7"``; ``"01"`` and ``"1"`` are two sequences), so both readers give the
            same ``seq_names``.
        num_marks: default: the ``num_marks`` column's maximum, else the largest mark + 1.
        block_events: sequences are cut, in file order, into blocks of about this many events; a
            minibatch holds sequences of one block, so training holds one block in memory at a time.
            Each epoch shuffles the blocks, and the length buckets within each.

    The rows of a sequence must be contiguous (as :func:`tpp.write_events` and :class:`EventLogWriter`
    write them); every minibatch is validated when loaded, and errors name the file's global row.
    """

    def __init__(
        self,
        path: str | os.PathLike | Sequence[str | os.PathLike],
        seq: str = "seq",
        time: str = "time",
        mark: str | None = "mark",
        t_start: float | str | None = None,
        t_end: float | str | None = None,
        *,
        num_marks: int | None = None,
        block_events: int = 1 << 20,
    ) -> None:
        if isinstance(path, (str, os.PathLike)):
            path = Path(path)
            paths = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        else:
            paths = [Path(p) for p in path]
        if not paths or not all(p.exists() for p in paths):
            raise EventDataError("no such Parquet file(s)", source=str(path))
        self.source = str(paths[0]) if len(paths) == 1 else str(paths[0].parent)
        self._table = _RowGroups(paths)
        columns = self._table.columns
        for name in (seq, time):
            if name not in columns:
                raise EventDataError(f"missing column {name!r} (columns are {columns})", source=self.source, field=name)
        self.seq, self.time = seq, time
        self.mark = mark if mark is not None and mark in columns else None
        self.t_start, self.t_end = t_start, t_end
        needed = [seq, time] + ([self.mark] if self.mark else [])
        for arg, default in ((t_start, "t_start"), (t_end, "t_end")):
            name = arg if isinstance(arg, str) else (default if arg is None and default in columns else None)
            if name is not None and name not in columns:
                raise EventDataError(f"missing column {name!r} (columns are {columns})", source=self.source, field=name)
            if name is not None:
                needed.append(name)
        self._columns = list(dict.fromkeys(needed))
        starts, names, max_mark, file_num_marks = self._index(columns)
        self._row_start = starts
        self._lengths = np.diff(np.append(starts, self._table.num_rows)).astype(np.int64)
        self._names = names
        if num_marks is None:
            num_marks = file_num_marks if file_num_marks is not None else max_mark + 1
        self.num_marks = max(int(num_marks), 1)
        self.block_events = int(block_events)
        self._block_seq = self._blocks()
        self._cache: tuple[int, pa.Table] | None = None

    # ------------------------------------------------------------------ index
    def _index(self, columns: list[str]) -> tuple[np.ndarray, pa.Array, int, int | None]:
        """One pass: first row of each sequence, its id, the largest mark and ``num_marks`` column."""
        read = [self.seq] + ([self.mark] if self.mark else []) + (["num_marks"] if "num_marks" in columns else [])
        starts, names = [], []
        last = None
        max_mark, file_num_marks = -1, None
        for row, batch in self._table.iter_batches(read):
            ids = _ids_as_text(batch.column(0))
            n = len(ids)
            if n == 0:
                continue
            if ids.null_count:
                i = int(np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))[0])
                raise EventDataError("sequence id is missing", source=self.source, row=row + i, field=self.seq)
            change = np.ones(n, dtype=bool)
            if n > 1:
                change[1:] = pc.not_equal(ids.slice(1), ids.slice(0, n - 1)).to_numpy(zero_copy_only=False)
            change[0] = last is None or ids[0].as_py() != last
            at = np.flatnonzero(change)
            starts.append(row + at)
            names.append(ids.take(pa.array(at)))
            last = ids[n - 1].as_py()
            # Non-numeric or non-finite marks are left to the validation of each loaded minibatch.
            if self.mark and (m := _numeric_max(batch.column(1))) is not None:
                max_mark = max(max_mark, m)
            if "num_marks" in read and (k := _numeric_max(batch.column(read.index("num_marks")))) is not None:
                file_num_marks = max(file_num_marks or 0, k)
        if not starts or self._table.num_rows == 0:
            raise EventDataError("no events: the log is empty", source=self.source)
        starts_arr = np.concatenate(starts).astype(np.int64)
        names_arr = pa.concat_arrays(names)
        if len(pc.unique(names_arr)) != len(names_arr):
            # A sequence id seen twice: its rows are not contiguous. Name the first repeat.
            counts = pc.value_counts(names_arr)
            dup = next(v["values"] for v in counts.to_pylist() if v["counts"] > 1)
            where = np.flatnonzero(pc.equal(names_arr, pa.scalar(dup, names_arr.type)).to_numpy(zero_copy_only=False))
            raise EventDataError(
                f"the rows of a sequence must be contiguous; this one starts again at row {int(starts_arr[where[1]])} "
                "(sort the log by sequence, or write it with tpp.write_events / EventLogWriter)",
                source=self.source, sequence=dup, row=int(starts_arr[where[1]]), field=self.seq,
            )
        return starts_arr, names_arr, max_mark, file_num_marks

    def _blocks(self) -> np.ndarray:
        """First sequence of each block (and the end): consecutive sequences of about ``block_events`` events."""
        bounds = [0]
        total = 0
        for s, n in enumerate(self._lengths):
            if total and total + n > self.block_events:
                bounds.append(s)
                total = 0
            total += int(n)
        bounds.append(len(self._lengths))
        return np.asarray(bounds, dtype=np.int64)

    # ------------------------------------------------------------------ the protocol
    @property
    def lengths(self) -> np.ndarray:
        return self._lengths

    @property
    def num_blocks(self) -> int:
        return len(self._block_seq) - 1

    def names(self, indices: np.ndarray) -> list[Any]:
        """Sequence ids of the sequence numbers ``indices``."""
        return self._names.take(pa.array(np.asarray(indices, dtype=np.int64))).to_pylist()

    def plan(self, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
        """Blocks in an order drawn from ``rng``; within each block, its length buckets in an order drawn from ``rng``.

        With one block this is exactly the in-memory plan of the same sequences.
        """
        order = np.arange(self.num_blocks)
        if rng is not None and self.num_blocks > 1:
            order = rng.permutation(self.num_blocks)
        out = []
        for b in order:
            s0, s1 = self._block_seq[b], self._block_seq[b + 1]
            out.extend(g + s0 for g in length_buckets(self._lengths[s0:s1], batch_size, rng))
        return out

    def _block(self, b: int) -> pa.Table:
        if self._cache is None or self._cache[0] != b:
            self._cache = None  # let the previous block go before reading the next
            s0, s1 = self._block_seq[b], self._block_seq[b + 1]
            first = int(self._row_start[s0])
            stop = int(self._row_start[s1]) if s1 < len(self._row_start) else self._table.num_rows
            self._cache = (b, self._table.read_rows(first, stop, self._columns))
        return self._cache[1]

    def load(self, indices: np.ndarray) -> EventBatch:
        """Read the sequences ``indices`` (from the blocks that hold them) and validate them as one batch."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size == 0:
            raise ValueError("no sequences to load")
        blocks = np.searchsorted(self._block_seq, indices, side="right") - 1
        tables, rows, positions = [], [], []
        for b in dict.fromkeys(blocks.tolist()):
            at = np.flatnonzero(blocks == b)
            base = int(self._row_start[self._block_seq[b]])
            local = _ranges(self._row_start[indices[at]] - base, self._lengths[indices[at]])
            tables.append(self._block(b).take(pa.array(local)))
            rows.append(local + base)
            positions.append(at)
        table, global_rows = tables[0], rows[0]
        if len(tables) > 1:  # sequences from several blocks: back to the order of ``indices``
            table, global_rows = pa.concat_tables(tables), np.concatenate(rows)
            done = np.concatenate(positions)
            lengths = self._lengths[indices[done]]
            first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            inverse = np.argsort(done)
            take = _ranges(first[inverse], lengths[inverse])
            table, global_rows = table.take(pa.array(take)), global_rows[take]
        frame = table.to_pandas()
        # ids as text (see the class docstring); set on the frame: the file's pandas metadata may name another dtype
        frame[self.seq] = _ids_as_text(table.column(self.seq).combine_chunks()).to_numpy(zero_copy_only=False)
        try:
            return from_dataframe(frame, self.seq, self.time, self.mark, self.t_start, self.t_end,
                                  self.num_marks, source=self.source)
        except EventDataError as exc:  # rows of the loaded piece -> rows of the log
            row = None if exc.row is None else int(global_rows[exc.row])
            raise EventDataError(exc.detail, source=self.source, sequence=exc.sequence, position=exc.position,
                                 row=row, field=exc.field) from None

    def standardisation_sample(self) -> EventBatch:
        """The first block (bounded memory), for :meth:`tpp.model.Model.initialise`."""
        return self.load(np.arange(self._block_seq[0], self._block_seq[1]))

    def __repr__(self) -> str:
        return (f"ParquetSource({self.source!r}, sequences={self.num_sequences}, events={self.num_events}, "
                f"num_marks={self.num_marks}, blocks={self.num_blocks})")


class EventLogWriter:
    """Write event batches one after another into one Parquet file, in the long layout of
    :func:`tpp.io.to_dataframe` (``seq, time, mark, t_start, t_end, num_marks``).

    Use as a context manager; the file appears (atomically) only when the block completes.
    Sequences without names are numbered on from the sequences already written.
    """

    def __init__(self, path: str | os.PathLike, row_group_size: int = 1 << 17) -> None:
        self.path = Path(path)
        self.row_group_size = int(row_group_size)
        self.num_sequences = 0
        self.num_events = 0
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> "EventLogWriter":
        self._atomic = atomic_write(self.path, ".parquet")
        self._tmp = self._atomic.__enter__()
        return self

    def write(self, batch: EventBatch) -> None:
        """Append the sequences of ``batch`` (each needs at least one event: one row per event)."""
        flat = batch.to_flat()
        lengths = np.diff(flat["seq_offsets"])
        if np.any(lengths == 0):
            b = int(np.flatnonzero(lengths == 0)[0])
            raise EventDataError("a sequence without events cannot be written one row per event",
                                 sequence=batch.seq_names[b] if batch.seq_names else b)
        names = (pa.array(batch.seq_names) if batch.seq_names is not None
                 else pa.array(np.arange(self.num_sequences, self.num_sequences + len(batch), dtype=np.int64)))
        repeat = np.repeat(np.arange(len(batch)), lengths)
        table = pa.table({
            "seq": names.take(pa.array(repeat)),
            "time": flat["times"],
            "mark": flat["marks"].astype(np.int64),
            "t_start": flat["t_start"][repeat],
            "t_end": flat["t_end"][repeat],
            "num_marks": np.full(repeat.size, batch.num_marks, dtype=np.int64),
        })
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, table.schema)
        self._writer.write_table(table, row_group_size=self.row_group_size)
        self.num_sequences += len(batch)
        self.num_events += int(lengths.sum())

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._writer is not None:
            self._writer.close()
        self._atomic.__exit__(exc_type, exc, tb)
