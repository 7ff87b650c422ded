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

Identity is text: in a file (CSV, Parquet, JSON rows, JSON lines) the sequence ids are read as strings,
never type-inferred nor turned into missing values, so ``"01"`` and ``"1"`` are two sequences and
``"NA"``, ``""``, ``"None"`` are ordinary ids (a DataFrame given by the caller keeps its values).

Mark ids are integers ``0 .. K - 1``. Sparse or huge ids (more than :data:`MAX_DENSE_MARKS` types of which
fewer than a tenth occur, or more than :data:`MAX_MARK_TYPES` types in all) and non-integer ids (``"buy"``)
are refused, naming the count of distinct marks and the largest id; ``remap_marks=True`` maps the distinct
ids to ``0 .. K - 1`` in sorted order and keeps the original ids as ``EventBatch.mark_names``, which the
writers put back.
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

from tpp.batch import check_offsets
from tpp.events import DEFAULT_TIME_DTYPE, EventBatch, EventDataError

__all__ = ["read_events", "write_events", "from_dataframe", "to_dataframe", "from_tick", "to_tick", "atomic_write"]

LAYOUT_COLUMNS = ("seq", "time", "mark", "t_start", "t_end", "num_marks")
"""The columns :func:`to_dataframe` writes besides the features."""

MAX_DENSE_MARKS = 1000
"""Up to this many mark types (largest id + 1) the ids are taken as they are, however few occur."""
MAX_MARK_TYPES = 100_000
"""No more mark types than this without ``remap_marks=True`` (a model allocates one row per type)."""

# pandas' default missing-value words: they stay missing in every column but the sequence ids
_NA_WORDS = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
             "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")


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
def _empty_cell(column: str, field: str, source: str | None, row: int, sequences: pd.Series | None) -> EventDataError:
    """A blank or NA cell, named where it is (and, given the id column, its sequence and position)."""
    where: dict[str, Any] = {}
    if sequences is not None:
        label = sequences.iloc[row]
        where = {"sequence": label, "position": int((sequences.iloc[:row] == label).sum())}
    return EventDataError(f"column {column!r} is empty here: every event needs a finite {field}", source=source,
                          row=row, field=field, **where)


def _numeric_column(df: pd.DataFrame, column: str, source: str | None, field: str,
                    sequences: pd.Series | None = None) -> np.ndarray:
    values = df[column]
    if values.dtype.kind in "fiub":
        missing = np.flatnonzero(values.isna().to_numpy())  # a blank or NA cell: name it, not a later symptom
        if missing.size:
            raise _empty_cell(column, field, source, int(missing[0]), sequences)
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
        raise _empty_cell(column, field, source, int(missing[0]), sequences)
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
    remap_marks: bool = False,
) -> EventBatch:
    """One row per event. Rows of a sequence keep their order; sequences keep the order of first appearance.

    A missing ``seq`` column means one sequence; a missing ``mark`` column means unmarked events.
    ``t_start``/``t_end``: a number, a column name, or None (use columns ``t_start``/``t_end`` when
    present, else 0 and the last event). ``num_marks`` defaults to a ``num_marks`` column or max mark + 1.
    ``features``: columns kept as continuous per-event features (None: the other columns of a table in
    the layout :func:`to_dataframe` writes, else none; ``[]``: none).
    ``remap_marks``: map sparse or non-integer mark ids to ``0 .. K - 1`` (see the module docstring).
    """
    if len(df) == 0:
        raise EventDataError("no events: the table is empty", source=source)
    if time not in df.columns:
        raise EventDataError(f"missing column {time!r} (columns are {list(df.columns)})", source=source, field=time)
    df = df.reset_index(drop=True)
    _refuse_nested_cells(df, source)
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
    ids = df[seq] if seq is not None and seq in df.columns else None
    times = _numeric_column(df, time, source, "time", ids).astype(np.float64)[order]
    marks, mark_names = None, None
    declared = num_marks
    if declared is None and "num_marks" in df.columns and not remap_marks:  # remapped ids make the count moot
        declared = _numeric_column(df, "num_marks", source, "num_marks").max()
        if not (np.isfinite(declared) and declared == np.round(declared)):
            raise EventDataError(f"num_marks {declared!r} is not a whole number", source=source, field="num_marks")
        declared = int(declared)
    if mark is not None and mark in df.columns:
        if remap_marks:
            marks, mark_names = _remap(df[mark], source)
            marks = marks[order]
        else:
            if df[mark].dtype.kind not in "fiubmMc":
                _refuse_text_marks(df[mark], source)
            marks = _numeric_column(df, mark, source, "mark")[order]
    num_marks = _checked_num_marks(marks, declared, source, remapped=remap_marks)
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
        mark_names=mark_names, rows=order, source=source, dtype=dtype,
    )


def _refuse_nested_cells(df: pd.DataFrame, source: str | None) -> None:
    """A cell holding a list, dict, array or bytes (nested Parquet/JSON columns) is one event's value only
    by accident: refuse it naming row and column, rather than let it become text or crash a hash."""
    for column in df.columns:
        if df[column].dtype != object:
            continue
        nested = np.flatnonzero([isinstance(v, (list, tuple, dict, set, np.ndarray, bytes, bytearray))
                                 for v in df[column].tolist()])
        if nested.size:
            value = df[column].iloc[int(nested[0])]
            raise EventDataError(f"cell holds a {type(value).__name__}, not one value (a nested column?)",
                                 source=source, row=int(nested[0]), field=str(column))


def _refuse_text_marks(column: pd.Series, source: str | None) -> None:
    """Marks that are not numbers (``"buy"``) are refused, with the hint that turns them into 0..K-1."""
    converted = pd.to_numeric(column, errors="coerce")
    bad = np.flatnonzero(converted.isna().to_numpy() & column.notna().to_numpy())
    if bad.size:
        i = int(bad[0])
        distinct = column.dropna().nunique()
        raise EventDataError(
            f"mark {column.iloc[i]!r} is not an integer id ({distinct} distinct marks); pass remap_marks=True (tpp fit: --remap-marks) to "
            "map the distinct ids to 0..K-1 (the original ids are kept as mark_names)",
            source=source, row=i, field="mark")


def _remap(values: Any, source: str | None, field: str = "mark") -> tuple[np.ndarray, tuple[Any, ...]]:
    """Distinct mark ids -> ``0 .. K - 1`` in sorted order (numbers by value, other ids as text), and the ids."""
    if isinstance(values, pd.Series):
        series = values
    else:
        array = np.asarray(values)
        series = pd.Series(array.reshape(-1) if array.dtype.kind in "fiub" else array.astype(object).reshape(-1))
    missing = np.flatnonzero(series.isna().to_numpy())
    if missing.size:
        raise EventDataError("mark is missing", source=source, row=int(missing[0]), field=field)
    if series.dtype.kind in "fiub":
        raw = series.to_numpy()
        if raw.dtype.kind == "f" and np.all(raw == np.round(raw)) and np.all(np.abs(raw) <= 2.0**53):
            raw = raw.astype(np.int64)  # integral floats (1e9 read from text) name an integer id
        names, codes = np.unique(raw, return_inverse=True)
        return codes.reshape(-1).astype(np.int64), tuple(n.item() for n in names)
    text = [v if isinstance(v, str) else str(v.item() if isinstance(v, np.generic) else v) for v in series.tolist()]
    names_text = sorted(set(text))
    lookup = {n: k for k, n in enumerate(names_text)}
    return np.array([lookup[t] for t in text], np.int64), tuple(names_text)


def _checked_num_marks(marks: np.ndarray | None, declared: Any, source: str | None, remapped: bool = False) -> Any:
    """The number of mark types, refusing sparse or huge id spaces (see the module docstring) with a hint."""
    if marks is None or not np.asarray(marks).size:
        return declared
    marks = np.asarray(marks)
    if marks.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            if not np.all(np.isfinite(marks) & (marks == np.round(marks)) & (np.abs(marks) <= 2.0**62)):
                return declared  # from_flat names the offending mark
        marks = marks.astype(np.int64)
    if marks.dtype.kind not in "iub" or remapped:
        return declared
    largest = int(marks.max())
    types = largest + 1
    if isinstance(declared, (int, np.integer)) and declared >= types:
        types = int(declared)
        sparse = False  # a declared id space (e.g. a split of a larger data set) is taken at its word
    else:
        distinct = np.unique(marks).size
        sparse = types > MAX_DENSE_MARKS and types > 10 * distinct
    if sparse or types > MAX_MARK_TYPES:
        distinct = np.unique(marks).size
        limit = (f"more than 10 x the distinct count and {MAX_DENSE_MARKS}" if sparse
                 else f"more than {MAX_MARK_TYPES}")
        declared_text = f" and num_marks is {types}" if types != largest + 1 else ""
        raise EventDataError(
            f"{distinct} distinct marks, but the largest id is {largest}{declared_text}: {types} mark types "
            f"({limit}) would be allocated; pass remap_marks=True (tpp fit: --remap-marks) to map the distinct ids to 0..K-1 (the original "
            "ids are kept as mark_names)", source=source, field="mark")
    return declared


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
    marks: Any = flat["marks"]
    if batch.mark_names is not None:
        unused = sorted(set(range(batch.num_marks)) - set(np.unique(marks).tolist()))
        if unused:
            raise EventDataError(
                f"mark {batch.mark_names[unused[0]]!r} (and {len(unused) - 1} more) has no event, so a table "
                "cannot keep its name; write .npz instead, which keeps every mark name", field="mark")
        marks = pd.array([batch.mark_names[m] for m in marks.tolist()])
    return pd.DataFrame(
        {
            "seq": pd.array(seq_col.tolist()),
            "time": flat["times"],
            "mark": marks,
            **features,
            "t_start": np.repeat(flat["t_start"], lengths),
            "t_end": np.repeat(flat["t_end"], lengths),
            "num_marks": np.full(flat["times"].size, batch.num_marks, np.int64),
        }
    )


# --------------------------------------------------------------------------- npz (the $TPP_DATA_DIR layout)
def _npz_array(data: Any, key: str, source: str) -> np.ndarray:
    """One array of an ``.npz``; an unreadable member (object arrays, a damaged entry) names the file and field."""
    try:
        return data[key]
    except Exception as exc:  # numpy and zipfile raise several types for corrupt members
        raise EventDataError(f"cannot read array {key!r} ({exc})", source=source, field=key) from None


def _npz_features(
    data: Any, names: Sequence[str] | None, num_events: int, source: str
) -> tuple[np.ndarray | None, list[str]]:
    """``[N, D]`` features of an ``.npz``: the stored ``features`` matrix (columns ``feature_names``) or, by name,
    flat arrays aligned with ``times`` (the registry's ``lon``, ``lat``, ``magnitude``). None: what is stored."""
    stored: list[str] = []
    if "features" in data and "feature_names" in data:
        stored_names = _npz_array(data, "feature_names", source)
        matrix = _npz_array(data, "features", source)
        if stored_names.ndim != 1 or matrix.ndim != 2 or matrix.shape[1] != stored_names.size:
            raise EventDataError(f"features must be [N, D] with D = {stored_names.size} feature_names, got shape "
                                 f"{matrix.shape}", source=source, field="features")
        stored = [str(n) for n in stored_names]
    names = stored if names is None else list(names)
    columns = []
    for name in names:
        if name in stored:
            column = _npz_array(data, "features", source)[:, stored.index(name)]
        elif name in data:
            column = _npz_array(data, name, source)
        else:
            raise EventDataError(f"no feature {name!r}: the file holds arrays {list(data.keys())}"
                                 + (f" and features {stored}" if stored else ""), source=source, field=name)
        if column.dtype.kind not in "fiu" or column.shape != (num_events,):
            raise EventDataError(f"feature {name!r} must be one real number per event ({num_events}), got "
                                 f"{column.dtype} of shape {column.shape}", source=source, field=name)
        columns.append(column.astype(np.float64))
    return (np.stack(columns, axis=1) if columns else None), names


def _read_npz(path: Path, num_marks: int | None, t_start: Any, t_end: Any, dtype: Any,
              features: Sequence[str] | None = None, remap_marks: bool = False) -> EventBatch:
    """The ``$TPP_DATA_DIR`` layout, every array checked for shape and type before use (errors name the field)."""
    source = str(path)
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for corrupt archives
        raise EventDataError(f"cannot read as .npz ({exc})", source=source) from None
    if not hasattr(data, "keys"):  # a plain .npy renamed: one array, no fields
        raise EventDataError("not an .npz archive of named arrays (a single array?)", source=source)
    for key in ("times", "seq_offsets"):
        if key not in data:
            raise EventDataError(f"missing array {key!r} (arrays are {list(data.keys())})", source=source, field=key)
    times = _npz_array(data, "times", source)
    if times.ndim != 1 or times.dtype.kind not in "fiu":
        raise EventDataError(f"times must be a flat array of real numbers, got {times.dtype} of shape {times.shape}",
                             source=source, field="times")
    offsets = check_offsets(_npz_array(data, "seq_offsets", source), times.size, EventDataError, source,
                            "seq_offsets")
    n_seq = len(offsets) - 1
    marks = _npz_array(data, "marks", source) if "marks" in data else None
    if marks is not None and marks.shape != times.shape:
        raise EventDataError(f"marks must be one per event ({times.size}), got shape {marks.shape}", source=source,
                             field="marks")
    for key in ("t_start", "t_end"):
        if key in data:
            bound = _npz_array(data, key, source)
            if bound.dtype.kind not in "fiu" or bound.shape not in ((), (n_seq,)):
                raise EventDataError(f"{key} must be a number or one per sequence ({n_seq}), got {bound.dtype} of "
                                     f"shape {bound.shape}", source=source, field=key)
    if t_start is None:
        t_start = _npz_array(data, "t_start", source) if "t_start" in data else 0.0
    if t_end is None:
        if "t_end" in data:
            t_end = _npz_array(data, "t_end", source)
        else:
            last = times[np.maximum(offsets[1:] - 1, 0)] if times.size else np.zeros(n_seq)
            t_end = np.where(np.diff(offsets) > 0, last, 0.0)
    declared = num_marks
    if declared is None and "num_marks" in data:
        stored = _npz_array(data, "num_marks", source)
        if stored.shape != () or stored.dtype.kind not in "iu":
            raise EventDataError(f"num_marks must be one integer, got {stored.dtype} of shape {stored.shape}",
                                 source=source, field="num_marks")
        declared = int(stored)
    names = None
    if "seq_names" in data:
        stored_names = _npz_array(data, "seq_names", source)
        if stored_names.shape != (n_seq,):
            raise EventDataError(f"seq_names must be one per sequence ({n_seq}), got shape {stored_names.shape}",
                                 source=source, field="seq_names")
        names = stored_names.tolist()
    mark_names = None
    if "mark_names" in data:  # written by write_events for a remapped batch: marks are already 0..K-1
        stored_marks = _npz_array(data, "mark_names", source)
        if stored_marks.ndim != 1:
            raise EventDataError(f"mark_names must be a flat array, got shape {stored_marks.shape}", source=source,
                                 field="mark_names")
        mark_names = stored_marks.tolist()
        declared = len(mark_names) if declared is None else declared
    elif remap_marks and marks is not None:
        marks, mark_names = _remap(marks, source)
        declared = num_marks
    declared = _checked_num_marks(marks, declared, source, remapped=mark_names is not None)
    values, feature_names = _npz_features(data, features, times.size, source)
    return EventBatch.from_flat(
        times, offsets, t_start, t_end, marks, declared,
        features=values, feature_names=feature_names or None, seq_names=names, mark_names=mark_names, source=source,
        dtype=dtype,
    )


def _write_npz(batch: EventBatch, path: Path) -> None:
    flat = batch.to_flat()
    arrays = dict(flat, num_marks=np.int64(batch.num_marks))
    for key, names in (("seq_names", batch.seq_names), ("mark_names", batch.mark_names)):
        if names is not None:
            array = np.asarray(names)
            if array.dtype.kind not in "iuU" or array.ndim != 1:  # mixed or missing names: as text (no pickles)
                array = np.asarray([str(n) for n in names], dtype=str)
            arrays[key] = array
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


def _sequence_marks(
    marks: list[np.ndarray], num_marks: int | None, remap: bool, source: str | None
) -> tuple[list[np.ndarray], int | None, tuple[Any, ...] | None]:
    """Per-sequence marks checked for a sparse id space, or remapped to ``0 .. K - 1`` (``remap``)."""
    try:
        flat = np.concatenate([np.asarray(m).reshape(-1) for m in marks]) if marks else np.zeros(0, np.int64)
    except ValueError as exc:
        raise EventDataError(f"marks are not one flat array per sequence ({exc})", source=source,
                             field="mark") from None
    if not flat.size:
        return marks, num_marks, None
    names = None
    if remap:
        flat, names = _remap(flat, source)
        num_marks = None
    elif flat.dtype.kind not in "fiub":
        raise EventDataError(f"mark {flat[0]!r} is not an integer id; pass remap_marks=True (tpp fit: --remap-marks) to map the distinct ids "
                             "to 0..K-1 (the original ids are kept as mark_names)", source=source, field="mark")
    num_marks = _checked_num_marks(flat, num_marks, source, remapped=remap)
    bounds = np.cumsum([np.asarray(m).size for m in marks])[:-1]
    return np.split(flat, bounds), num_marks, names


def _easytpp_sequences(seqs: Any, split: str, source: str | None) -> list[list[dict]]:
    """The split's sequences, checked to be lists of event dicts with both keys (else a located error)."""
    if not isinstance(seqs, list):
        raise EventDataError(f"split {split!r} is a {type(seqs).__name__}, not a list of sequences", source=source,
                             field=split)
    for b, events in enumerate(seqs):
        if not isinstance(events, list):
            raise EventDataError(f"sequence is a {type(events).__name__}, not a list of events", source=source,
                                 sequence=b)
        for position, event in enumerate(events):
            missing = [k for k in ("time_since_start", "type_event") if not isinstance(event, dict) or k not in event]
            if missing:
                what = "event has no" if isinstance(event, dict) else f"event is a {type(event).__name__}, needs"
                raise EventDataError(f"{what} {missing[0]!r}", source=source, sequence=b, position=position,
                                     field=missing[0])
    return seqs


def _easytpp_times(values: Any, b: int, source: str | None) -> np.ndarray:
    """One sequence's ``time_since_start`` as floats, or a located error."""
    try:
        return np.asarray(values, np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise EventDataError(f"time_since_start is not real numbers ({exc})", source=source, sequence=b,
                             field="time_since_start") from None


def _from_easytpp(
    obj: Any, split: str | None, source: str | None, dtype: Any, features: Sequence[str] | None = None,
    remap_marks: bool = False,
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
        try:
            num_marks = int(obj["dim_process"])
        except (TypeError, ValueError):
            raise EventDataError(f"dim_process {obj['dim_process']!r} is not a whole number", source=source,
                                 field="dim_process") from None
        candidates = [k for k, v in obj.items() if isinstance(v, list) and (not v or isinstance(v[0], list))]
        if split is None:
            if len(candidates) != 1:
                raise EventDataError(f"EasyTPP dict holds splits {candidates}: pass split=", source=source)
            split = candidates[0]
        if split not in obj:
            raise EventDataError(f"EasyTPP dict has no split {split!r} (has {candidates})", source=source)
        seqs = _easytpp_sequences(obj[split], split, source)
        times = [_easytpp_times([e["time_since_start"] for e in s], b, source) for b, s in enumerate(seqs)]
        marks = [np.array([e["type_event"] for e in s]) for s in seqs]
        marks, num_marks, mark_names = _sequence_marks(marks, num_marks, remap_marks, source)
        values = [_record_features(s, features, b, source, True) for b, s in enumerate(seqs)] if features else None
        batch = EventBatch.from_sequences(times, marks, t_start=0.0, num_marks=num_marks, features=values,
                                          feature_names=features, source=source, dtype=dtype)
        return batch if mark_names is None else batch._replace(mark_names=mark_names)
    if isinstance(obj, list) and obj and isinstance(obj[0], dict) and "time_since_start" in obj[0]:
        for b, r in enumerate(obj):
            missing = [k for k in ("time_since_start", "type_event") if not isinstance(r, dict) or k not in r]
            if missing:
                raise EventDataError(f"record is not a dict with {missing[0]!r}", source=source, sequence=b,
                                     field=missing[0])
        try:
            num_marks = max(int(r.get("dim_process", 0)) for r in obj) or None
        except (TypeError, ValueError) as exc:
            raise EventDataError(f"dim_process is not a whole number ({exc})", source=source,
                                 field="dim_process") from None
        times = [_easytpp_times(r["time_since_start"], b, source) for b, r in enumerate(obj)]
        marks = [np.asarray(r["type_event"]) for r in obj]
        marks, num_marks, mark_names = _sequence_marks(marks, num_marks, remap_marks, source)
        names = [r.get("seq_idx", i) for i, r in enumerate(obj)]
        values = [_record_features([r], features, b, source, False) for b, r in enumerate(obj)] if features else None
        batch = EventBatch.from_sequences(
            times, marks, t_start=0.0, num_marks=num_marks, features=values, feature_names=features, seq_names=names,
            source=source, dtype=dtype,
        )
        return batch if mark_names is None else batch._replace(mark_names=mark_names)
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
# What an EasyTPP pickle may name besides plain containers and numbers: numpy arrays and scalars.
# Anything else (a class to build, a function to call) would run code from the file, so it is refused.
_PICKLE_GLOBALS = frozenset({
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "complex"), ("builtins", "slice"),
    ("collections", "OrderedDict"), ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
})


class _DataOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds only containers, numbers, text and numpy arrays (see :data:`_PICKLE_GLOBALS`)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: an EasyTPP pickle holds only lists, "
                                         "dicts, numbers and numpy arrays (loading other objects would run code "
                                         "from the file)")
        return super().find_class(module, name)


def _load_pickle(path: Path) -> Any:
    with open(path, "rb") as fh:
        try:
            return _DataOnlyUnpickler(fh, encoding="latin1").load()
        except RecursionError:
            raise EventDataError("cannot unpickle (nested too deeply)", source=str(path)) from None
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
    remap_marks: bool = False,
) -> EventBatch:
    """Read events from a DataFrame, a ``.csv``/``.parquet``/``.npz``/``.pkl``/``.json``/``.jsonl`` path, an
    EasyTPP dict, or tick's list-of-arrays-per-type, and return one validated :class:`EventBatch`.

    ``features``: names of continuous per-event features to keep (table columns, flat ``.npz`` arrays
    aligned with ``times``, EasyTPP keys); a missing one raises naming it. None keeps the features a
    file written by :func:`write_events` carries (see the module docstring).
    A ``.json`` file is EasyTPP's layout or a list of rows ``{"seq": ..., "time": ..., ...}`` (a table,
    as one JSON object per line in ``.jsonl``).

    Sequence ids in files are text (``"01"`` and ``"1"`` differ; ``"NA"`` is an id, not a missing value).
    ``remap_marks``: map sparse, huge or non-integer mark ids to ``0 .. K - 1`` in sorted order, keeping
    the original ids as ``batch.mark_names`` (without it such ids are refused; see the module docstring).

    Raises :class:`~tpp.events.EventDataError` naming file, sequence, position/row and field.
    """
    def table(df: pd.DataFrame, path: str | None = None) -> EventBatch:
        _refuse_nested_cells(df.reset_index(drop=True), path)  # before the ids become text ("[0]")
        if path is not None and seq is not None and seq in df.columns:
            df = df.assign(**{seq: _ids_as_text(df[seq])})
        return from_dataframe(df, seq, time, mark, t_start, t_end, num_marks, features=features, source=path,
                              dtype=dtype, remap_marks=remap_marks)

    if isinstance(source, pd.DataFrame):
        return table(source)
    if isinstance(source, dict):
        return _from_easytpp(source, split, None, dtype, features, remap_marks)
    if isinstance(source, (list, tuple)):
        if source and isinstance(source[0], dict):
            return _from_easytpp(list(source), split, None, dtype, features, remap_marks)
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
            return table(_json_table(obj, seq, str(path)), str(path))
        return _from_easytpp(obj, split, str(path), dtype, features, remap_marks)

    def read_csv(p: Path) -> pd.DataFrame:
        # ids stay text: no type inference, no NA words on the id column; the other columns as usual
        columns = pd.read_csv(p, nrows=0).columns
        # pandas renames a repeated header ("time", "time.1") and the reader would pick one silently
        header = pd.read_csv(p, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0].tolist() \
            if len(columns) else []
        repeated = [name for k, name in enumerate(header) if name in header[:k]]
        if repeated:
            raise EventDataError(f"column {repeated[0]!r} appears twice in the header", source=str(p),
                                 field=str(repeated[0]))
        return pd.read_csv(p, dtype={seq: str} if seq in columns else None, keep_default_na=False,
                           na_values={c: list(_NA_WORDS) for c in columns if c != seq})

    readers: dict[str, Callable[[], EventBatch]] = {
        ".csv": lambda: table(_read_table(path, read_csv), str(path)),
        ".csv.gz": lambda: table(_read_table(path, read_csv), str(path)),
        ".parquet": lambda: table(_read_table(path, pd.read_parquet), str(path)),
        ".jsonl": lambda: table(_json_table(_read_json_lines(path), seq, str(path)), str(path)),
        ".npz": lambda: _read_npz(path, num_marks, t_start, t_end, dtype, features, remap_marks),
        ".pkl": lambda: _from_easytpp(_load_pickle(path), split, str(path), dtype, features, remap_marks),
        ".json": lambda: from_json(_read_json(path)),
    }
    if suffix not in readers:
        raise EventDataError(f"unknown file type {suffix!r}; expected one of {sorted(readers)}", source=str(path))
    return readers[suffix]()


def _ids_as_text(column: pd.Series) -> pd.Series:
    """Sequence ids of a file as text (1 -> "1"); a true missing value (a Parquet or JSON null) stays missing."""
    if column.dtype == object or column.dtype.kind in "OSU" or isinstance(column.dtype, pd.StringDtype):
        if all(isinstance(v, str) for v in column.tolist()):
            return column.astype(object)
    values = [None if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA else
              (v if isinstance(v, str) else str(v.item() if isinstance(v, np.generic) else v))
              for v in column.astype(object).tolist()]
    return pd.Series(values, index=column.index, dtype=object)


def _json_table(rows: list[Any], seq: str | None, source: str) -> pd.DataFrame:
    """JSON rows as a table; every row must be an object, and the ids are kept as written (text, not floats)."""
    for number, row in enumerate(rows):
        if not isinstance(row, dict):
            raise EventDataError(f"a row must be a JSON object, got {type(row).__name__}", source=source, row=number)
    df = pd.DataFrame(rows)
    if seq is not None and seq in df.columns:  # a missing key would turn the whole column to floats
        ids = [r.get(seq) for r in rows]
        for number, value in enumerate(ids):
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise EventDataError(f"sequence id {value!r} is not text or a number", source=source, row=number,
                                     field=seq)
        df[seq] = pd.Series(ids, dtype=object)
    return df


def _read_table(path: Path, reader: Callable[[Path], pd.DataFrame]) -> pd.DataFrame:
    try:
        return reader(path)
    except EventDataError:  # already located by the reader
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise EventDataError(f"cannot parse ({str(exc).splitlines()[0]})", source=str(path)) from None


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EventDataError(f"invalid JSON ({exc})", source=str(path)) from None
    except RecursionError:  # nesting deeper than the interpreter's stack: no event data looks like that
        raise EventDataError("invalid JSON (nested too deeply)", source=str(path)) from None


def _read_json_lines(path: Path) -> list[Any]:
    """One JSON object per line (blank lines skipped); a bad line raises naming it."""
    rows = []
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for number, text in enumerate(fh, 1):
            if text.strip():
                try:
                    text.encode("utf-8")  # undecodable bytes stay as surrogates: refuse them naming the line
                    rows.append(json.loads(text))
                except (json.JSONDecodeError, UnicodeEncodeError) as exc:
                    raise EventDataError(f"invalid JSON ({exc})", source=str(path), line=number) from None
                except RecursionError:
                    raise EventDataError("invalid JSON (nested too deeply)", source=str(path), line=number) from None
    if not rows:
        raise EventDataError("no events: the file is empty", source=str(path))
    return rows


def _table_to_write(batch: EventBatch) -> pd.DataFrame:
    """:func:`to_dataframe` with the ids as text, as the readers read them back (None -> "None", 7 -> "7")."""
    df = to_dataframe(batch)
    names = batch.seq_names if batch.seq_names is not None else range(len(batch))
    text = np.asarray([n if isinstance(n, str) else str(n) for n in names], dtype=object)
    df["seq"] = pd.Series(np.repeat(text, batch.lengths.cpu().numpy()), dtype=object)
    return df


def write_events(batch: EventBatch, path: str | os.PathLike) -> Path:
    """Write ``batch`` to ``.csv``, ``.parquet`` or ``.npz`` (by suffix), atomically; reading it back is lossless
    (features included)."""
    path = Path(path)
    if path.suffix == ".npz":
        _write_npz(batch, path)
    elif path.suffix == ".csv":
        df = _table_to_write(batch)
        with atomic_write(path, ".csv") as tmp:
            df.to_csv(tmp, index=False)
    elif path.suffix == ".parquet":
        df = _table_to_write(batch)
        with atomic_write(path, ".parquet") as tmp:
            df.to_parquet(tmp, index=False)
    else:
        raise ValueError(f"unknown file type {path.suffix!r}: use .csv, .parquet or .npz")
    return path
