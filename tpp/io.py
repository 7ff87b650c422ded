"""Reading and writing event data: pandas, CSV, Parquet, the ``.npz`` layout, EasyTPP, tick.

:func:`read_events` is the one entry point; it returns an :class:`~tpp.events.EventBatch`.
Every reader funnels into :meth:`EventBatch.from_flat`, so validation and its error messages
(file, sequence, position, row, field) are the same whatever the format.

Window defaults: ``t_start`` 0 and ``t_end`` the last event of each sequence, unless given as a
scalar, as a per-sequence column, or stored in the file itself (``.npz``, EasyTPP JSON windows).

Continuous per-event features (locations, magnitudes): ``read_events(..., features=["lon", "lat"])``
keeps those columns of a table (CSV, Parquet, JSON rows, JSON lines), those flat arrays of an
``.npz`` (aligned with ``times``, as the registry stores ``lon``/``lat``/``magnitude``) or those
per-event keys of EasyTPP records. Written files carry the features of their batch and read back
with them: an ``.npz`` stores ``features``/``feature_names``, and a table in the layout that
:func:`to_dataframe` writes (all of ``seq, time, mark, t_start, t_end, num_marks``) has its other
columns as features.
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

LAYOUT_COLUMNS = ("seq", "time", "mark", "t_start", "t_end", "num_marks")
"""The columns :func:`to_dataframe` writes besides the features."""


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


def _feature_columns(df: pd.DataFrame, features: Sequence[str] | None, source: str | None) -> list[str]:
    """The requested feature columns (each must exist), or with None those of the written layout (see module doc)."""
    if features is None:
        if not set(LAYOUT_COLUMNS) <= set(df.columns):
            return []
        features = [c for c in df.columns if c not in LAYOUT_COLUMNS]
    for name in features:
        if name not in df.columns:
            raise EventDataError(f"missing feature column {name!r} (columns are {list(df.columns)})", source=source,
                                 field=name)
    return [str(name) for name in features]


def from_dataframe(
    df: pd.DataFrame,
    seq: str | None = "seq",
    time: str = "time",
    mark: str | None = "mark",
    t_start: float | str | None = None,
    t_end: float | str | None = None,
    num_marks: int | None = None,
    *,
    features: Sequence[str] | None = None,
    source: str | None = None,
    dtype: Any = DEFAULT_TIME_DTYPE,
) -> EventBatch:
    """One row per event. Rows of a sequence keep their order; sequences keep the order of first appearance.

    A missing ``seq`` column means one sequence; a missing ``mark`` column means unmarked events.
    ``t_start``/``t_end``: a number, a column name, or None (use columns ``t_start``/``t_end`` when
    present, else 0 and the last event). ``num_marks`` defaults to a ``num_marks`` column or max mark + 1.
    ``features``: columns kept as continuous per-event features (None: the other columns of a table in
    the layout :func:`to_dataframe` writes, else none; ``[]``: none).
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
    names = _feature_columns(df, features, source)
    values = None
    if names:
        values = np.stack([_numeric_column(df, n, source, n).astype(np.float64)[order] for n in names], axis=1)
    return EventBatch.from_flat(
        times, offsets, t0, t1, marks, num_marks, features=values, feature_names=names or None, seq_names=seq_names,
        rows=order, source=source, dtype=dtype,
    )


def to_dataframe(batch: EventBatch) -> pd.DataFrame:
    """One row per event with columns ``seq, time, mark``, the features, ``t_start, t_end, num_marks`` (lossless)."""
    clash = [n for n in batch.feature_names if n in LAYOUT_COLUMNS]
    if clash:
        raise EventDataError(f"feature {clash[0]!r} has the name of a column of the event table; rename it",
                             field=clash[0])
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
    features = {n: flat["features"][:, d] for d, n in enumerate(batch.feature_names)}
    return pd.DataFrame(
        {
            "seq": pd.array(seq_col.tolist()),
            "time": flat["times"],
            "mark": flat["marks"],
            **features,
            "t_start": np.repeat(flat["t_start"], lengths),
            "t_end": np.repeat(flat["t_end"], lengths),
            "num_marks": np.full(flat["times"].size, batch.num_marks, np.int64),
        }
    )


# --------------------------------------------------------------------------- npz (the $TPP_DATA_DIR layout)
def _npz_features(
    data: Any, names: Sequence[str] | None, num_events: int, source: str
) -> tuple[np.ndarray | None, list[str]]:
    """``[N, D]`` features of an ``.npz``: the stored ``features`` matrix (columns ``feature_names``) or, by name,
    flat arrays aligned with ``times`` (the registry's ``lon``, ``lat``, ``magnitude``). None: what is stored."""
    stored = [str(n) for n in data["feature_names"]] if "features" in data and "feature_names" in data else []
    names = stored if names is None else list(names)
    columns = []
    for name in names:
        if name in stored:
            column = data["features"][:, stored.index(name)]
        elif name in data:
            column = data[name]
        else:
            raise EventDataError(f"no feature {name!r}: the file holds arrays {list(data.keys())}"
                                 + (f" and features {stored}" if stored else ""), source=source, field=name)
        if column.dtype.kind not in "fiu" or column.shape != (num_events,):
            raise EventDataError(f"feature {name!r} must be one real number per event ({num_events}), got "
                                 f"{column.dtype} of shape {column.shape}", source=source, field=name)
        columns.append(column.astype(np.float64))
    return (np.stack(columns, axis=1) if columns else None), names


def _read_npz(path: Path, num_marks: int | None, t_start: Any, t_end: Any, dtype: Any,
              features: Sequence[str] | None = None) -> EventBatch:
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
    values, feature_names = _npz_features(data, features, times.size, str(path))
    return EventBatch.from_flat(
        times, offsets, t_start, t_end, data["marks"] if "marks" in data else None, num_marks,
        features=values, feature_names=feature_names or None, seq_names=names, source=str(path), dtype=dtype,
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
def _record_features(
    records: Sequence[dict], names: Sequence[str], b: int, source: str | None, per_event: bool
) -> np.ndarray:
    """``[L_b, D]`` features of sequence ``b``: keys of its per-event dicts (``per_event``) or lists of its record."""
    rows = records if per_event else [records[0]]
    for position, record in enumerate(rows):
        missing = [n for n in names if n not in record]
        if missing:
            raise EventDataError(f"no feature {missing[0]!r} (keys are {sorted(record)})", source=source, sequence=b,
                                 position=position if per_event else None, field=missing[0])
    columns = []
    for name in names:
        values = [r[name] for r in records] if per_event else records[0][name]
        try:
            columns.append(np.asarray(values, np.float64).reshape(-1))
        except (TypeError, ValueError) as exc:
            raise EventDataError(f"feature {name!r} is not real numbers ({exc})", source=source, sequence=b,
                                 field=name) from None
    return np.stack(columns, axis=1)


def _from_easytpp(
    obj: Any, split: str | None, source: str | None, dtype: Any, features: Sequence[str] | None = None
) -> EventBatch:
    """EasyTPP data: a pickle dict ``{'dim_process': K, '<split>': [[{time_since_start, type_event}, ...], ...]}``
    or the JSON/HF layout: a list of records ``{'time_since_start': [...], 'type_event': [...], 'dim_process': K}``.
    ``features``: per-event keys (pickle) or per-record lists (JSON) kept as continuous features."""
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
        values = [_record_features(s, features, b, source, True) for b, s in enumerate(seqs)] if features else None
        return EventBatch.from_sequences(times, marks, t_start=0.0, num_marks=num_marks, features=values,
                                         feature_names=features, source=source, dtype=dtype)
    if isinstance(obj, list) and obj and isinstance(obj[0], dict) and "time_since_start" in obj[0]:
        num_marks = max(int(r.get("dim_process", 0)) for r in obj) or None
        times = [np.asarray(r["time_since_start"], np.float64) for r in obj]
        marks = [np.asarray(r["type_event"]) for r in obj]
        names = [r.get("seq_idx", i) for i, r in enumerate(obj)]
        values = [_record_features([r], features, b, source, False) for b, r in enumerate(obj)] if features else None
        return EventBatch.from_sequences(
            times, marks, t_start=0.0, num_marks=num_marks, features=values, feature_names=features, seq_names=names,
            source=source, dtype=dtype,
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
    features: Sequence[str] | None = None,
    dtype: Any = DEFAULT_TIME_DTYPE,
) -> EventBatch:
    """Read events from a DataFrame, a ``.csv``/``.parquet``/``.npz``/``.pkl``/``.json``/``.jsonl`` path, an
    EasyTPP dict, or tick's list-of-arrays-per-type, and return one validated :class:`EventBatch`.

    ``features``: names of continuous per-event features to keep (table columns, flat ``.npz`` arrays
    aligned with ``times``, EasyTPP keys); a missing one raises naming it. None keeps the features a
    file written by :func:`write_events` carries (see the module docstring).
    A ``.json`` file is EasyTPP's layout or a list of rows ``{"seq": ..., "time": ..., ...}`` (a table,
    as one JSON object per line in ``.jsonl``).

    Raises :class:`~tpp.events.EventDataError` naming file, sequence, position/row and field.
    """
    def table(df: pd.DataFrame, path: str | None = None) -> EventBatch:
        return from_dataframe(df, seq, time, mark, t_start, t_end, num_marks, features=features, source=path,
                              dtype=dtype)

    if isinstance(source, pd.DataFrame):
        return table(source)
    if isinstance(source, dict):
        return _from_easytpp(source, split, None, dtype, features)
    if isinstance(source, (list, tuple)):
        if source and isinstance(source[0], dict):
            return _from_easytpp(list(source), split, None, dtype, features)
        if features:
            raise EventDataError("tick's layout (arrays of times per type) has no per-event features",
                                 field=features[0])
        return from_tick(source, t_start=0.0 if t_start is None else float(t_start), t_end=t_end, dtype=dtype)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"cannot read events from a {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise EventDataError("no such file", source=str(path))
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix

    def from_json(obj: Any) -> EventBatch:
        if isinstance(obj, list) and obj and isinstance(obj[0], dict) and time in obj[0]:  # rows of a table
            return table(pd.DataFrame(obj), str(path))
        return _from_easytpp(obj, split, str(path), dtype, features)

    readers: dict[str, Callable[[], EventBatch]] = {
        ".csv": lambda: table(_read_table(path, pd.read_csv), str(path)),
        ".csv.gz": lambda: table(_read_table(path, pd.read_csv), str(path)),
        ".parquet": lambda: table(_read_table(path, pd.read_parquet), str(path)),
        ".jsonl": lambda: table(pd.DataFrame(_read_json_lines(path)), str(path)),
        ".npz": lambda: _read_npz(path, num_marks, t_start, t_end, dtype, features),
        ".pkl": lambda: _from_easytpp(_load_pickle(path), split, str(path), dtype, features),
        ".json": lambda: from_json(_read_json(path)),
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


def _read_json_lines(path: Path) -> list[Any]:
    """One JSON object per line (blank lines skipped); a bad line raises naming it."""
    rows = []
    with open(path) as fh:
        for number, text in enumerate(fh, 1):
            if text.strip():
                try:
                    rows.append(json.loads(text))
                except json.JSONDecodeError as exc:
                    raise EventDataError(f"invalid JSON ({exc})", source=str(path), line=number) from None
    if not rows:
        raise EventDataError("no events: the file is empty", source=str(path))
    return rows


def write_events(batch: EventBatch, path: str | os.PathLike) -> Path:
    """Write ``batch`` to ``.csv``, ``.parquet`` or ``.npz`` (by suffix), atomically; reading it back is lossless
    (features included)."""
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
