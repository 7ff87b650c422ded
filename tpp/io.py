"""Reading and writing event data: pandas, CSV, Parquet, the ``.npz`` layout, EasyTPP, tick.

:func:`read_events` is the one entry point; it returns an :class:`~tpp.events.EventBatch`.
Every reader funnels into :meth:`EventBatch.from_flat`, so validation and its error messages
(file, sequence, position, row, field) are the same whatever the format.

Window defaults: ``t_start`` 0 and ``t_end`` the last event of each sequence, unless given as a
scalar, as a per-sequence column, or stored in the file itself (``.npz``, EasyTPP JSON windows).
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tpp.events import DEFAULT_TIME_DTYPE, EventBatch, EventDataError

__all__ = ["read_events", "write_events", "from_dataframe", "to_dataframe", "from_tick", "to_tick", "atomic_write"]


@contextmanager
def atomic_write(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only if the block succeeds.

    A reader never sees a half-written file, and a crash leaves the old file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; a written file gets the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


# --------------------------------------------------------------------------- pandas / CSV / Parquet
def _numeric_column(df: pd.DataFrame, column: str, source: str | None, field: str) -> np.ndarray:
    values = df[column]
    if values.dtype.kind in "fiub":
        return values.to_numpy()
    if values.dtype.kind in "mMc":  # would be turned silently into nanoseconds, or lose the imaginary part
        kind = {"m": "durations", "M": "dates", "c": "complex numbers"}[values.dtype.kind]
        raise EventDataError(
            f"column {column!r} holds {kind} ({values.dtype}); convert it to real numbers first"
            + (" (e.g. seconds since a reference time)" if kind != "complex numbers" else ""),
            source=source, field=field,
        )
    converted = pd.to_numeric(values, errors="coerce")
    if converted.dtype.kind not in "fiub":
        raise EventDataError(f"column {column!r} is not real numbers ({converted.dtype})", source=source, field=field)
    bad = np.flatnonzero(converted.isna().to_numpy() & values.notna().to_numpy())
    if bad.size:
        i = int(bad[0])
        raise EventDataError(
            f"value {values.iloc[i]!r} in column {column!r} is not a number", source=source, row=i, field=field
        )
    missing = np.flatnonzero(values.isna().to_numpy())
    if missing.size:
        raise EventDataError(f"column {column!r} is empty here", source=source, row=int(missing[0]), field=field)
    return converted.to_numpy()


def _window_values(
    df: pd.DataFrame, arg: float | str | None, default_column: str, first_rows: np.ndarray, order: np.ndarray,
    offsets: np.ndarray, source: str | None, field: str,
) -> np.ndarray | float | None:
    """Window bound per sequence: scalar, a column constant within each sequence, or None (default)."""
    column = arg if isinstance(arg, str) else (default_column if arg is None and default_column in df.columns else None)
    if column is None:
        return None if arg is None else float(arg)
    if column not in df.columns:
        raise EventDataError(f"missing column {column!r} (columns are {list(df.columns)})", source=source, field=field)
    values = _numeric_column(df, column, source, field).astype(np.float64)[order]
    seq_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    per_seq = values[offsets[:-1]]
    bad = np.flatnonzero(values != per_seq[seq_of])
    if bad.size:
        i = int(bad[0])
        raise EventDataError(
            f"column {column!r} must be constant within a sequence ({values[i]!r} vs {per_seq[seq_of[i]]!r})",
            source=source, row=int(order[i]), field=field,
        )
    return per_seq


def from_dataframe(
    df: pd.DataFrame,
    seq: str | None = "seq",
    time: str = "time",
    mark: str | None = "mark",
    t_start: float | str | None = None,
    t_end: float | str | None = None,
    num_marks: int | None = None,
    *,
    source: str | None = None,
    dtype: Any = DEFAULT_TIME_DTYPE,
) -> EventBatch:
    """One row per event. Rows of a sequence keep their order; sequences keep the order of first appearance.

    A missing ``seq`` column means one sequence; a missing ``mark`` column means unmarked events.
    ``t_start``/``t_end``: a number, a column name, or None (use columns ``t_start``/``t_end`` when
    present, else 0 and the last event). ``num_marks`` defaults to a ``num_marks`` column or max mark + 1.
    """
    if len(df) == 0:
        raise EventDataError("no events: the table is empty", source=source)
    if time not in df.columns:
        raise EventDataError(f"missing column {time!r} (columns are {list(df.columns)})", source=source, field=time)
    df = df.reset_index(drop=True)
    if seq is not None and seq in df.columns:
        if df[seq].isna().any():
            raise EventDataError("sequence id is missing", source=source, row=int(np.flatnonzero(df[seq].isna())[0]), field=seq)
        codes, names = pd.factorize(df[seq], sort=False)
        order = np.argsort(codes, kind="stable")
        counts = np.bincount(codes, minlength=len(names))
        seq_names: list[Any] = [n.item() if hasattr(n, "item") else n for n in names]
    else:
        order = np.arange(len(df))
        counts = np.array([len(df)])
        seq_names = [0]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    times = _numeric_column(df, time, source, "time").astype(np.float64)[order]
    marks = None
    if mark is not None and mark in df.columns:
        marks = _numeric_column(df, mark, source, "mark")[order]
    if num_marks is None and "num_marks" in df.columns:
        num_marks = int(_numeric_column(df, "num_marks", source, "num_marks").max())
    first_rows = order[offsets[:-1]]
    t0 = _window_values(df, t_start, "t_start", first_rows, order, offsets, source, "t_start")
    t1 = _window_values(df, t_end, "t_end", first_rows, order, offsets, source, "t_end")
    if t0 is None:
        t0 = 0.0
    if t1 is None:
        last_idx = np.maximum(offsets[1:] - 1, 0)
        t1 = times[last_idx]
    return EventBatch.from_flat(
        times, offsets, t0, t1, marks, num_marks, seq_names=seq_names, rows=order, source=source, dtype=dtype
    )


def to_dataframe(batch: EventBatch) -> pd.DataFrame:
    """One row per event with columns ``seq, time, mark, t_start, t_end, num_marks`` (lossless)."""
    flat = batch.to_flat()
    lengths = np.diff(flat["seq_offsets"])
    if np.any(lengths == 0):
        b = int(np.flatnonzero(lengths == 0)[0])
        raise EventDataError(
            "a sequence without events cannot be written one row per event; write .npz instead",
            sequence=batch.seq_names[b] if batch.seq_names else b,
        )
    names = batch.seq_names if batch.seq_names is not None else list(range(len(batch)))
    seq_col = np.repeat(np.asarray(names, dtype=object), lengths)
    return pd.DataFrame(
        {
            "seq": pd.array(seq_col.tolist()),
            "time": flat["times"],
            "mark": flat["marks"],
            "t_start": np.repeat(flat["t_start"], lengths),
            "t_end": np.repeat(flat["t_end"], lengths),
            "num_marks": np.full(flat["times"].size, batch.num_marks, np.int64),
        }
    )


# --------------------------------------------------------------------------- npz (the $TPP_DATA_DIR layout)
def _read_npz(path: Path, num_marks: int | None, t_start: Any, t_end: Any, dtype: Any) -> EventBatch:
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for corrupt archives
        raise EventDataError(f"cannot read as .npz ({exc})", source=str(path)) from None
    for key in ("times", "seq_offsets"):
        if key not in data:
            raise EventDataError(f"missing array {key!r} (arrays are {list(data.keys())})", source=str(path), field=key)
    offsets = data["seq_offsets"]
    n_seq = len(offsets) - 1
    times = data["times"]
    if t_start is None:
        t_start = data["t_start"] if "t_start" in data else 0.0
    if t_end is None:
        if "t_end" in data:
            t_end = data["t_end"]
        else:
            t_end = np.array([times[offsets[b + 1] - 1] if offsets[b + 1] > offsets[b] else 0.0 for b in range(n_seq)])
    if num_marks is None and "num_marks" in data:
        num_marks = int(data["num_marks"])
    names = data["seq_names"].tolist() if "seq_names" in data else None
    return EventBatch.from_flat(
        times, offsets, t_start, t_end, data["marks"] if "marks" in data else None, num_marks,
        seq_names=names, source=str(path), dtype=dtype,
    )


def _write_npz(batch: EventBatch, path: Path) -> None:
    flat = batch.to_flat()
    arrays = dict(flat, num_marks=np.int64(batch.num_marks))
    if batch.seq_names is not None:
        arrays["seq_names"] = np.asarray(batch.seq_names)
    with atomic_write(path, ".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


# --------------------------------------------------------------------------- EasyTPP and tick
def _from_easytpp(obj: Any, split: str | None, source: str | None, dtype: Any) -> EventBatch:
    """EasyTPP data: a pickle dict ``{'dim_process': K, '<split>': [[{time_since_start, type_event}, ...], ...]}``
    or the JSON/HF layout: a list of records ``{'time_since_start': [...], 'type_event': [...], 'dim_process': K}``."""
    if isinstance(obj, dict) and "time_since_start" in obj:  # columnar HF dict of lists
        keys = list(obj)
        obj = [dict(zip(keys, values)) for values in zip(*(obj[k] for k in keys))]
    if isinstance(obj, dict):
        if "dim_process" not in obj:
            raise EventDataError("EasyTPP dict has no 'dim_process'", source=source, field="dim_process")
        num_marks = int(obj["dim_process"])
        candidates = [k for k, v in obj.items() if isinstance(v, list) and (not v or isinstance(v[0], list))]
        if split is None:
            if len(candidates) != 1:
                raise EventDataError(f"EasyTPP dict holds splits {candidates}: pass split=", source=source)
            split = candidates[0]
        if split not in obj:
            raise EventDataError(f"EasyTPP dict has no split {split!r} (has {candidates})", source=source)
        seqs = obj[split]
        times = [np.array([e["time_since_start"] for e in s], np.float64) for s in seqs]
        marks = [np.array([e["type_event"] for e in s]) for s in seqs]
        return EventBatch.from_sequences(times, marks, t_start=0.0, num_marks=num_marks, source=source, dtype=dtype)
    if isinstance(obj, list) and obj and isinstance(obj[0], dict) and "time_since_start" in obj[0]:
        num_marks = max(int(r.get("dim_process", 0)) for r in obj) or None
        times = [np.asarray(r["time_since_start"], np.float64) for r in obj]
        marks = [np.asarray(r["type_event"]) for r in obj]
        names = [r.get("seq_idx", i) for i, r in enumerate(obj)]
        return EventBatch.from_sequences(
            times, marks, t_start=0.0, num_marks=num_marks, seq_names=names, source=source, dtype=dtype
        )
    raise EventDataError("not an EasyTPP dict or record list", source=source)


def from_tick(
    events: Sequence[np.ndarray] | Sequence[Sequence[np.ndarray]],
    t_start: float = 0.0,
    t_end: float | Sequence[float] | None = None,
    dtype: Any = DEFAULT_TIME_DTYPE,
) -> EventBatch:
    """tick's layout: one realization = a list of K arrays (times of each type); several = a list of those."""
    if len(events) == 0:
        raise EventDataError("no events: the list is empty")
    first = events[0]
    single = isinstance(first, np.ndarray) or (len(first) > 0 and np.isscalar(first[0])) or len(first) == 0
    realizations = [events] if single else events
    num_marks = len(realizations[0])
    times, marks = [], []
    for r, per_type in enumerate(realizations):
        if len(per_type) != num_marks:
            raise EventDataError(f"has {len(per_type)} types, the first realization has {num_marks}", sequence=r, field="mark")
        t = np.concatenate([np.asarray(a, np.float64).reshape(-1) for a in per_type])
        m = np.concatenate([np.full(np.asarray(a).size, k, np.int64) for k, a in enumerate(per_type)])
        order = np.argsort(t, kind="stable")
        times.append(t[order])
        marks.append(m[order])
    return EventBatch.from_sequences(times, marks, t_start=t_start, t_end=t_end, num_marks=num_marks, dtype=dtype)


def to_tick(batch: EventBatch) -> list[list[np.ndarray]]:
    """One list of K arrays (times per type) per sequence, as tick's learners take them."""
    return [[t[m == k].copy() for k in range(batch.num_marks)] for t, m in batch.sequences()]


# --------------------------------------------------------------------------- entry points
def _load_pickle(path: Path) -> Any:
    with open(path, "rb") as fh:
        try:
            return pickle.load(fh, encoding="latin1")
        except Exception as exc:
            raise EventDataError(f"cannot unpickle ({exc})", source=str(path)) from None


def read_events(
    source: Any,
    seq: str | None = "seq",
    time: str = "time",
    mark: str | None = "mark",
    t_start: float | str | None = None,
    t_end: float | str | None = None,
    *,
    num_marks: int | None = None,
    split: str | None = None,
    dtype: Any = DEFAULT_TIME_DTYPE,
) -> EventBatch:
    """Read events from a DataFrame, a ``.csv``/``.parquet``/``.npz``/``.pkl``/``.json`` path, an EasyTPP
    dict, or tick's list-of-arrays-per-type, and return one validated :class:`EventBatch`.

    Raises :class:`~tpp.events.EventDataError` naming file, sequence, position/row and field.
    """
    if isinstance(source, pd.DataFrame):
        return from_dataframe(source, seq, time, mark, t_start, t_end, num_marks, dtype=dtype)
    if isinstance(source, dict):
        return _from_easytpp(source, split, None, dtype)
    if isinstance(source, (list, tuple)):
        if source and isinstance(source[0], dict):
            return _from_easytpp(list(source), split, None, dtype)
        return from_tick(source, t_start=0.0 if t_start is None else float(t_start), t_end=t_end, dtype=dtype)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"cannot read events from a {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise EventDataError("no such file", source=str(path))
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    def table(reader: Callable[[Path], pd.DataFrame]) -> Callable[[], EventBatch]:
        return lambda: from_dataframe(
            _read_table(path, reader), seq, time, mark, t_start, t_end, num_marks, source=str(path), dtype=dtype
        )

    readers: dict[str, Callable[[], EventBatch]] = {
        ".csv": table(pd.read_csv),
        ".csv.gz": table(pd.read_csv),
        ".parquet": table(pd.read_parquet),
        ".npz": lambda: _read_npz(path, num_marks, t_start, t_end, dtype),
        ".pkl": lambda: _from_easytpp(_load_pickle(path), split, str(path), dtype),
        ".json": lambda: _from_easytpp(_read_json(path), split, str(path), dtype),
    }
    if suffix not in readers:
        raise EventDataError(f"unknown file type {suffix!r}; expected one of {sorted(readers)}", source=str(path))
    return readers[suffix]()


def _read_table(path: Path, reader: Callable[[Path], pd.DataFrame]) -> pd.DataFrame:
    try:
        return reader(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise EventDataError(f"cannot parse ({str(exc).splitlines()[0]})", source=str(path)) from None


def _read_json(path: Path) -> Any:
    try:
        with open(path) as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise EventDataError(f"invalid JSON ({exc})", source=str(path)) from None


def write_events(batch: EventBatch, path: str | os.PathLike) -> Path:
    """Write ``batch`` to ``.csv``, ``.parquet`` or ``.npz`` (by suffix), atomically; reading it back is lossless."""
    path = Path(path)
    if path.suffix == ".npz":
        _write_npz(batch, path)
    elif path.suffix == ".csv":
        df = to_dataframe(batch)
        with atomic_write(path, ".csv") as tmp:
            df.to_csv(tmp, index=False)
    elif path.suffix == ".parquet":
        df = to_dataframe(batch)
        with atomic_write(path, ".parquet") as tmp:
            df.to_parquet(tmp, index=False)
    else:
        raise ValueError(f"unknown file type {path.suffix!r}: use .csv, .parquet or .npz")
    return path
