"""Readers of time-series files into :class:`~sde.series.SeriesBatch`, one per format a series card
names (``format = ...`` in ``data/series/*.toml``; :mod:`sde.datasets` dispatches on it), usable on
any file of that format as well.

All are strict: a malformed file raises :class:`~sde.series.SeriesDataError` (an
:class:`~tpp.events.EventDataError`) naming the file, line, series and field.

* ``ts``: the sktime/aeon ``.ts`` format of the UCR/UEA archives (:func:`read_ts`). Without
  ``@timeStamps true`` the time of row ``k`` is its index ``k`` (0, 1, ..., L - 1): the archives store
  equally spaced samples without their clock. ``?`` is a missing value; trailing rows missing in every
  channel are padding and dropped. Classification gives ``labels`` (indices into the header's class
  list, kept as ``class_names``); regression (``@targetLabel true``) gives ``targets [B, 1]``.
* ``tsf``: the Monash forecasting format (:func:`read_tsf`); time = index since each series' start.
* ``csv``: one forecasting series per file (:func:`read_csv_series`), ``B = 1``; time = elapsed
  periods (or ``unit``) since the first row.
* ``physionet2012``: the raw PhysioNet/CinC 2012 records (:func:`read_physionet2012`), parsed once and
  cached in the user cache.
"""

from __future__ import annotations

import enum
import io
import os
import re
import tarfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import torch

from sde.series import DEFAULT_DTYPE, SeriesBatch, SeriesDataError
from tpp.io import atomic_write
from tpp.registry import cache_dir, sha256_file

__all__ = [
    "PHYSIONET_CHANNELS",
    "READERS",
    "Format",
    "read_csv_series",
    "read_physionet2012",
    "read_ts",
    "read_tsf",
]


class Format(enum.Enum):
    """The file formats a series card can name, each with its reader in :data:`READERS`."""

    TS = "ts"
    TSF = "tsf"
    CSV = "csv"
    PHYSIONET2012 = "physionet2012"


# --------------------------------------------------------------------------- .ts (UCR/UEA archives)
_TS_KEYS = {"problemname", "timestamps", "missing", "univariate", "dimension", "dimensions", "equallength",
            "serieslength", "classlabel", "targetlabel"}
_STAMP = re.compile(r"\(([^(),]+),([^()]*)\)")


def _content_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """``(line number, stripped line)`` of every line that is neither blank nor a ``#`` comment."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:  # binary or another encoding: say where, not a bare codec error
        raise SeriesDataError(f"not UTF-8 text (byte {data[exc.start]:#04x}); save the file as UTF-8",
                              source=str(path), line=data.count(b"\n", 0, exc.start) + 1) from None
    text = text.removeprefix("\ufeff")  # a byte-order mark announces UTF-8; it is not part of the first header
    for lineno, raw in enumerate(re.split(r"\r\n|\r|\n", text), 1):  # the line ends text mode would accept
        line = raw.strip()
        if line and not line.startswith("#"):
            yield lineno, line


def _floats(tokens: list[str], source: str, line: int, series: int, what: str) -> np.ndarray:
    """Parse ``tokens`` ('?' = NaN); name the first bad token's position on failure."""
    clean = ["nan" if t.strip() == "?" else t for t in tokens]
    try:
        out = np.asarray(clean, dtype=np.float64)
    except ValueError:
        for k, tok in enumerate(clean):
            try:
                float(tok)
            except ValueError:
                raise SeriesDataError(f"{tok.strip()!r} at position {k} is not a number (use '?' for missing)",
                                      source=source, line=line, series=series, row=k, field=what) from None
        raise
    bad = np.flatnonzero(np.isinf(out))
    if bad.size:
        raise SeriesDataError(f"value {out[bad[0]]} is not finite (use '?' for missing)", source=source, line=line,
                              series=series, row=int(bad[0]), field=what)
    return out


def _flag(value: str, key: str, source: str, line: int) -> bool:
    word = value.split()[0].lower() if value.split() else ""
    if word not in ("true", "false"):
        raise SeriesDataError(f"@{key} must be true or false, got {value!r}", source=source, line=line, field=key)
    return word == "true"


def read_ts(path: str | os.PathLike, *, dtype: torch.dtype = DEFAULT_DTYPE) -> SeriesBatch:
    """Read a sktime/aeon ``.ts`` file (UCR/UEA archives) strictly; see the module docstring."""
    src = str(path)
    header: dict[str, tuple[str, int]] = {}
    cases: list[tuple[int, str]] = []
    in_data = False
    for lineno, line in _content_lines(path):
        if in_data:
            cases.append((lineno, line))
            continue
        if not line.startswith("@"):
            raise SeriesDataError("expected an @header line (or a # comment) before @data", source=src, line=lineno)
        key, _, rest = line[1:].partition(" ")
        key = key.lower()
        if key == "data":
            in_data = True
        elif key not in _TS_KEYS:
            raise SeriesDataError(f"unknown header @{line[1:].split()[0]}", source=src, line=lineno, field=key)
        else:
            header[key] = (rest.strip(), lineno)
    if not in_data:
        raise SeriesDataError("no @data section", source=src)
    if not cases:
        raise SeriesDataError("no cases after @data", source=src)
    stamps = "timestamps" in header and _flag(header["timestamps"][0], "timeStamps", src, header["timestamps"][1])
    classes: tuple[str, ...] = ()
    if "classlabel" in header:
        value, line = header["classlabel"]
        if _flag(value, "classLabel", src, line):
            classes = tuple(value.split()[1:])
            if len(classes) < 2:
                raise SeriesDataError("@classLabel true needs the class names", source=src, line=line,
                                      field="classLabel")
    regression = "targetlabel" in header and _flag(header["targetlabel"][0], "targetLabel", src,
                                                   header["targetlabel"][1])
    if classes and regression:
        raise SeriesDataError("both @classLabel and @targetLabel are true", source=src)
    dims = None
    if "univariate" in header and _flag(header["univariate"][0], "univariate", src, header["univariate"][1]):
        dims = 1
    for key in ("dimensions", "dimension"):
        if key in header:
            value, line = header[key]
            if not value.isdigit() or int(value) < 1 or (dims is not None and int(value) != dims):
                raise SeriesDataError(f"@{key} {value!r} is not a positive integer consistent with @univariate",
                                      source=src, line=line, field=key)
            dims = int(value)
    equal = "equallength" in header and _flag(header["equallength"][0], "equalLength", src, header["equallength"][1])
    length = None
    if "serieslength" in header:
        value, line = header["serieslength"]
        if not value.isdigit():
            raise SeriesDataError(f"@seriesLength {value!r} is not an integer", source=src, line=line,
                                  field="seriesLength")
        length = int(value)
    labelled = bool(classes) or regression
    series, labels, targets = [], [], []
    for b, (lineno, line) in enumerate(cases):
        fields = line.split(":")
        if dims is None:
            dims = len(fields) - labelled
            if dims < 1:  # a labelled line with no ':' once reached chans[0] of no channels (IndexError)
                raise SeriesDataError("a case needs at least one channel" + (" before its label" if labelled else ""),
                                      source=src, line=lineno, series=b)
        if len(fields) != dims + labelled:
            raise SeriesDataError(f"{len(fields)} ':'-separated fields, expected {dims} channel(s)"
                                  + (" and a label" if labelled else ""), source=src, line=lineno, series=b)
        if stamps:
            t, v = _stamped_case(fields[:dims], src, lineno, b)
        else:
            chans = [_floats(f.split(","), src, lineno, b, f"channel {c}") for c, f in enumerate(fields[:dims])]
            n = chans[0].size
            for c, ch in enumerate(chans):
                if ch.size != n:
                    raise SeriesDataError(f"channel {c} has {ch.size} values, channel 0 has {n}", source=src,
                                          line=lineno, series=b, field=f"channel {c}")
            v = np.stack(chans, 1)
            t = np.arange(n, dtype=np.float64)
        keep = np.flatnonzero(~np.isnan(v).all(1))  # trailing all-missing rows are padding
        if keep.size == 0:
            raise SeriesDataError("every value is missing", source=src, line=lineno, series=b)
        if (equal or length is not None) and not stamps:
            want = length if length is not None else len(series[0][0]) if series else v.shape[0]
            if v.shape[0] != want:
                raise SeriesDataError(f"length {v.shape[0]} but the header says equal lengths of {want}", source=src,
                                      line=lineno, series=b, field="seriesLength")
        t, v = t[: keep[-1] + 1], v[: keep[-1] + 1]
        series.append((t, v))
        if classes:
            label = fields[-1].strip()
            if label not in classes:
                raise SeriesDataError(f"class {label!r} is not among the header's {list(classes)}", source=src,
                                      line=lineno, series=b, field="label")
            labels.append(classes.index(label))
        elif regression:
            targets.append(_floats([fields[-1]], src, lineno, b, "target")[0])
            if np.isnan(targets[-1]):
                raise SeriesDataError("the target is missing", source=src, line=lineno, series=b, field="target")
    return SeriesBatch.from_arrays(series, labels=np.asarray(labels, np.int64) if classes else None,
                                   targets=np.asarray(targets)[:, None] if regression else None,
                                   class_names=classes, dtype=dtype, source=src)


def _stamped_case(fields: list[str], src: str, line: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """``(t, v)`` of one case written as ``(time,value)`` pairs per channel (numeric times): rows are
    the union of the channels' times, NaN where a channel has no value at that time."""
    per = []
    for c, f in enumerate(fields):
        pairs = _STAMP.findall(f)
        if not pairs or _STAMP.sub("", f).replace(",", "").strip():
            raise SeriesDataError("expected (time,value) pairs separated by ','", source=src, line=line, series=b,
                                  field=f"channel {c}")
        t = _floats([p[0] for p in pairs], src, line, b, f"channel {c} time")
        if np.isnan(t).any() or np.any(np.diff(t) <= 0):
            raise SeriesDataError("time stamps must be numbers, strictly increasing", source=src, line=line, series=b,
                                  field=f"channel {c} time")
        per.append((t, _floats([p[1] for p in pairs], src, line, b, f"channel {c}")))
    times = np.unique(np.concatenate([t for t, _ in per]))
    v = np.full((times.size, len(per)), np.nan)
    for c, (t, x) in enumerate(per):
        v[np.searchsorted(times, t), c] = x
    return times, v


# --------------------------------------------------------------------------- .tsf (Monash forecasting)
def read_tsf(path: str | os.PathLike, *, dtype: torch.dtype = DEFAULT_DTYPE) -> SeriesBatch:
    """Read a Monash ``.tsf`` file: one univariate series per line (its attributes, then the values).

    Time = index since each series' first value (the card's ``units`` give the frequency); ``ids`` =
    the first (name) attribute; ``?`` is a missing value."""
    src = str(path)
    attributes: list[str] = []
    series, ids = [], []
    in_data = False
    for lineno, line in _content_lines(path):
        if not in_data:
            if not line.startswith("@"):
                raise SeriesDataError("expected an @header line before @data", source=src, line=lineno)
            key, _, rest = line[1:].partition(" ")
            if key.lower() == "attribute":
                attributes.append(rest.split()[0] if rest.split() else "")
            in_data = key.lower() == "data"
            continue
        fields = line.split(":")
        if len(fields) != len(attributes) + 1:
            raise SeriesDataError(f"{len(fields)} ':'-separated fields, expected {len(attributes)} attribute(s) "
                                  "and the values", source=src, line=lineno, series=len(series))
        v = _floats(fields[-1].split(","), src, lineno, len(series), "values")
        series.append((np.arange(v.size, dtype=np.float64), v))
        ids.append(fields[0] if attributes else str(len(series) - 1))
    if not series:
        raise SeriesDataError("no series after @data", source=src)
    return SeriesBatch.from_arrays(series, ids=ids, channel_names=("value",), dtype=dtype, source=src,
                                   allow_unobserved=False)


# --------------------------------------------------------------------------- forecasting CSV
_PERIODS = ("Y", "Q", "M")


def read_csv_series(
    path: str | os.PathLike,
    *,
    time: str | Sequence[str] | None = None,
    unit: str = "index",
    time_format: str | None = None,
    values: Sequence[str] | None = None,
    channel_names: Sequence[str] | None = None,
    layout: str = "long",
    name: str | None = None,
    dtype: torch.dtype = DEFAULT_DTYPE,
) -> SeriesBatch:
    """One forecasting series from a CSV file (``B = 1``); blank cells are missing values.

    ``time``: the time column (``[year, quarter]`` columns for quarterly data; ``None``: row index);
    ``unit``: ``'Y'``, ``'Q'``, ``'M'`` (calendar periods) or a pandas duration (``'1W'``, ``'1h'``):
    time = elapsed units since the first row. ``layout='wide_months'``: one row per year and one
    column per month (``values`` = the 12 month columns), read as one monthly series.
    """
    src = str(path)
    try:
        df = pd.read_csv(path)
        # pandas renames a repeated header ("a", "a.1"): both would be read as channels under made-up names
        header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0].tolist()
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise SeriesDataError(f"not a CSV table ({exc})", source=src, line=int(m.group(1)) if m else None) from None
    except UnicodeDecodeError as exc:
        raise SeriesDataError(f"not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as UTF-8",
                              source=src) from None
    repeated = [name for k, name in enumerate(header) if name in header[:k]]
    if repeated:
        raise SeriesDataError(f"column {repeated[0]!r} appears twice in the header", source=src, line=1,
                              field=str(repeated[0]))
    cols = [time] if isinstance(time, str) else list(time or [])
    values = list(values) if values is not None else [c for c in df.columns if c not in cols]
    missing = [c for c in (*cols, *values) if c not in df.columns]
    if missing:
        raise SeriesDataError(f"no column(s) {missing} (columns: {list(df.columns)})", source=src, field=missing[0])
    if len(df) == 0:  # a header without rows once reached stamps.iloc[0] (IndexError)
        raise SeriesDataError("the table has no rows", source=src)
    numeric = np.stack([_column(df, c, src) for c in values], 1)
    if layout == "wide_months":
        if len(values) != 12 or len(cols) != 1:
            raise SeriesDataError("wide_months needs one year column and 12 month columns", source=src)
        periods = pd.PeriodIndex.from_fields(year=np.repeat(df[cols[0]].to_numpy(), 12),
                                             month=np.tile(np.arange(1, 13), len(df)), freq="M")
        numeric = numeric.reshape(-1, 1)
        t = (periods.asi8 - periods.asi8[0]).astype(np.float64)
    elif layout != "long":
        raise ValueError(f"layout must be 'long' or 'wide_months', got {layout!r}")
    elif not cols or unit == "index":
        t = np.arange(len(df), dtype=np.float64)
    else:
        t = _elapsed(df, cols, unit, time_format, src)
    names = tuple(channel_names) if channel_names is not None else tuple(values) if layout == "long" else ("value",)
    return SeriesBatch.from_arrays([(t, numeric)], channel_names=names, ids=[name or Path(src).stem], dtype=dtype,
                                   source=src, allow_unobserved=False)


def _column(df: pd.DataFrame, col: str, src: str) -> np.ndarray:
    parsed = pd.to_numeric(df[col], errors="coerce")
    bad = np.flatnonzero(parsed.isna().to_numpy() & df[col].notna().to_numpy())
    if bad.size:
        raise SeriesDataError(f"{df[col].iloc[bad[0]]!r} is not a number", source=src, line=int(bad[0]) + 2,
                              field=col)
    return parsed.to_numpy(np.float64)


def _elapsed(df: pd.DataFrame, cols: list[str], unit: str, time_format: str | None, src: str) -> np.ndarray:
    """Elapsed ``unit`` since the first row, from the time column(s); unparsable cells name their line."""
    try:
        if len(cols) == 2:  # year and quarter (or month) numbers
            sub = "quarter" if unit == "Q" else "month"
            idx = pd.PeriodIndex.from_fields(year=df[cols[0]].to_numpy(), **{sub: df[cols[1]].to_numpy()}, freq=unit)
            return (idx.asi8 - idx.asi8[0]).astype(np.float64)
        text = df[cols[0]].astype(str)
        if unit in _PERIODS:
            if time_format is not None:
                idx = pd.PeriodIndex(pd.to_datetime(text, format=time_format), freq=unit)
            else:
                idx = pd.PeriodIndex(text.str.replace(" ", "", regex=False), freq=unit)
            return (idx.asi8 - idx.asi8[0]).astype(np.float64)
        stamps = pd.to_datetime(text, format=time_format, utc=True)
        return ((stamps - stamps.iloc[0]) / pd.Timedelta(unit)).to_numpy(np.float64)
    except (ValueError, TypeError) as exc:
        raise SeriesDataError(f"cannot read the time column as {unit!r} ({exc})", source=src, field=cols[0]) from None


# --------------------------------------------------------------------------- PhysioNet 2012
#: The 37 time-varying variables of the PhysioNet/CinC 2012 records, in channel order. Age, Gender,
#: Height and ICUType (and RecordID) are per-stay descriptors, not series, and are left out.
PHYSIONET_CHANNELS = (
    "Weight", "Albumin", "ALP", "ALT", "AST", "Bilirubin", "BUN", "Cholesterol", "Creatinine", "DiasABP", "FiO2",
    "GCS", "Glucose", "HCO3", "HCT", "HR", "K", "Lactate", "Mg", "MAP", "MechVent", "Na", "NIDiasABP", "NIMAP",
    "NISysABP", "PaCO2", "PaO2", "pH", "Platelets", "RespRate", "SaO2", "SysABP", "Temp", "TroponinI", "TroponinT",
    "Urine", "WBC",
)
_DESCRIPTORS = ("RecordID", "Age", "Gender", "Height", "ICUType")
_PHYSIONET_VERSION = 1  # bump when the parse changes: the cache key includes it
_MAX_MINUTES = 4096  # > 48 h 59 min: packs (record, minute) into one integer key


def read_physionet2012(archive: str | os.PathLike, outcomes: str | os.PathLike, *, cache: bool = True,
                       dtype: torch.dtype = DEFAULT_DTYPE) -> SeriesBatch:
    """PhysioNet/CinC Challenge 2012 records (a ``.tar.gz`` of ``<RecordID>.txt`` files) as a batch.

    One series per record, ordered by file name; rows = the distinct times (hours since ICU admission,
    from ``HH:MM``), always including ``t = 0`` (admission, where the descriptors are recorded, so
    every series starts at 0); channels = :data:`PHYSIONET_CHANNELS`. Several values of one variable at
    one time are averaged; ``Weight = -1`` is the file format's "missing". Labels: in-hospital death
    from the outcomes file (``class_names = ('survived', 'died')``); ``ids`` = RecordIDs.

    The parse (a few seconds for 4000 records) is cached in the user cache, keyed by the sha256 of
    both files, and written atomically.
    """
    archive, outcomes = Path(archive), Path(outcomes)
    target = cache_dir() / "series" / "physionet2012" / (
        f"{sha256_file(archive)[:16]}-{sha256_file(outcomes)[:16]}-v{_PHYSIONET_VERSION}.npz")
    arrays = None
    if cache and target.is_file():
        try:
            with np.load(target, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError):
            arrays = None  # a damaged cache entry is rebuilt below
    if arrays is None:
        arrays = _parse_physionet(archive, outcomes)
        if cache:
            with atomic_write(target, ".npz") as tmp, open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
    offsets = arrays["offsets"]
    values = np.full((arrays["times"].size, len(PHYSIONET_CHANNELS)), np.nan)
    values[arrays["obs_row"], arrays["obs_channel"]] = arrays["obs_value"]
    return SeriesBatch.from_flat(arrays["times"], values, offsets, arrays["labels"],
                                 channel_names=PHYSIONET_CHANNELS, class_names=("survived", "died"),
                                 ids=[str(i) for i in arrays["ids"]], dtype=dtype, source=str(archive))


def _parse_physionet(archive: Path, outcomes: Path) -> dict[str, np.ndarray]:
    """The records as sparse arrays: row times and offsets, and one (row, channel, value) per observation."""
    src_o = str(outcomes)
    out = pd.read_csv(outcomes)
    for col in ("RecordID", "In-hospital_death"):
        if col not in out:
            raise SeriesDataError(f"no column {col!r} (columns: {list(out.columns)})", source=src_o, field=col)
    death = out["In-hospital_death"].to_numpy()
    bad = np.flatnonzero(~np.isin(death, (0, 1)))
    if bad.size:
        raise SeriesDataError(f"In-hospital_death is {death[bad[0]].item()!r}, must be 0 or 1", source=src_o,
                              line=int(bad[0]) + 2, field="In-hospital_death")
    dup = out["RecordID"].duplicated()
    if dup.any():
        raise SeriesDataError("RecordID appears twice", source=src_o, line=int(np.flatnonzero(dup)[0]) + 2,
                              field="RecordID")
    label_of = dict(zip(out["RecordID"].astype(str), death.astype(np.int64)))
    names, chunks, starts, line_numbers = [], [], [0], []
    with tarfile.open(archive) as tf:
        for member in sorted((m for m in tf.getmembers() if m.isfile() and m.name.endswith(".txt")),
                             key=lambda m: m.name):
            text = tf.extractfile(member).read().decode("utf-8")  # type: ignore[union-attr]
            lines = text.splitlines()
            if not lines or lines[0].strip() != "Time,Parameter,Value":
                raise SeriesDataError("expected the header 'Time,Parameter,Value'", source=f"{archive}:{member.name}",
                                      line=1)
            b = len(names)
            names.append(member.name)
            body = lines[1:]
            numbers = np.arange(2, len(body) + 2)
            if not all(body):  # empty lines (rare) are skipped; their neighbours keep their line numbers
                numbers = numbers[[bool(s) for s in body]]
                body = [s for s in body if s]
            if body:
                chunks.append(f"{b}," + f"\n{b},".join(body))
            line_numbers.append(numbers)
            starts.append(starts[-1] + len(body))
    if not names:
        raise SeriesDataError("no <RecordID>.txt records in the archive", source=str(archive))
    text = "\n".join(chunks)
    line_of = np.concatenate(line_numbers)  # file line of every data row

    def read(value_dtype: Any) -> pd.DataFrame:
        return pd.read_csv(io.StringIO(text), header=None, names=["rec", "time", "param", "value"],
                           dtype={"rec": np.int64, "time": "category", "param": "category",
                                  "value": value_dtype}, keep_default_na=False)

    try:
        try:
            df = read(np.float64)
        except ValueError:  # a value is not a number: read it as text to say where (slow path, errors only)
            df = read(str)
    except pd.errors.ParserError as exc:
        m = re.search(r"line (\d+)", str(exc))
        i = int(m.group(1)) - 1 if m else 0
        b = int(np.searchsorted(starts, i, side="right") - 1)
        raise SeriesDataError(f"not a 'Time,Parameter,Value' row ({exc})", source=f"{archive}:{names[b]}",
                              line=int(line_of[i]) if i < line_of.size else None) from None

    def fail(mask: np.ndarray, message: str, fld: str) -> None:
        i = int(np.flatnonzero(mask)[0])
        b = int(df["rec"].iat[i])
        raise SeriesDataError(message.format(df.iloc[i]), source=f"{archive}:{names[b]}", line=int(line_of[i]),
                              series=b, field=fld)

    # times and parameters repeat (2881 and 42 distinct): check and convert each distinct text once
    times = df["time"].cat.categories.astype(str)
    ok = times.str.fullmatch(r"\d\d:[0-5]\d")
    code = df["time"].cat.codes.to_numpy()
    if not ok.all():
        fail(~ok[code], "time {0.time!r} is not HH:MM", "Time")
    minutes = (times.str.slice(0, 2).astype(int) * 60 + times.str.slice(3, 5).astype(int)).to_numpy()[code]
    if minutes.max() >= _MAX_MINUTES:
        fail(minutes >= _MAX_MINUTES, "time {0.time!r} is beyond 68 hours", "Time")
    value = pd.to_numeric(df["value"], errors="coerce").to_numpy(np.float64)
    if not np.isfinite(value).all():
        fail(~np.isfinite(value), "value {0.value!r} is not a finite number", "Value")
    vocab = PHYSIONET_CHANNELS + _DESCRIPTORS
    index = pd.Index(vocab).get_indexer(df["param"].cat.categories.astype(str))
    code = df["param"].cat.codes.to_numpy()
    if (index < 0).any():
        fail(index[code] < 0, "unknown parameter {0.param!r}", "Parameter")
    param = index[code]  # position in vocab: channels first, then the descriptors
    rec = df["rec"].to_numpy()
    is_id = param == vocab.index("RecordID")
    ids = np.full(len(names), -1, np.int64)
    ids[rec[is_id]] = value[is_id].astype(np.int64)
    for b, name in enumerate(names):
        stem = PurePosixPath(name).stem
        if ids[b] < 0 or str(ids[b]) != stem:
            raise SeriesDataError(f"RecordID {ids[b] if ids[b] >= 0 else 'missing'} does not match the file name",
                                  source=f"{archive}:{name}", series=b, field="RecordID")
        if stem not in label_of:
            raise SeriesDataError(f"record {stem} has no row in the outcomes file", source=src_o, series=b,
                                  field="RecordID")
    C = len(PHYSIONET_CHANNELS)
    series = (param < C) & ~((param == PHYSIONET_CHANNELS.index("Weight")) & (value == -1))
    key = rec[series] * _MAX_MINUTES + minutes[series]
    admission = np.arange(len(names), dtype=np.int64) * _MAX_MINUTES  # every record has a row at t = 0
    rows, row_of = np.unique(np.concatenate([admission, key]), return_inverse=True)
    row_of = row_of[admission.size:]
    # average repeated values of one variable at one time
    cell, cell_of = np.unique(row_of * C + param[series], return_inverse=True)
    total = np.bincount(cell_of, weights=value[series])
    count = np.bincount(cell_of)
    return {
        "times": (rows % _MAX_MINUTES) / 60.0,
        "offsets": np.concatenate([[0], np.cumsum(np.bincount(rows // _MAX_MINUTES, minlength=len(names)))]),
        "obs_row": cell // C,
        "obs_channel": (cell % C).astype(np.int16),
        "obs_value": total / count,
        "labels": np.array([label_of[str(i)] for i in ids], np.int64),
        "ids": ids,
    }


#: The reader of each format: ``READERS[fmt](path, **options)`` (PhysioNet also takes the outcomes file).
READERS: dict[Format, Callable[..., SeriesBatch]] = {
    Format.TS: read_ts,
    Format.TSF: read_tsf,
    Format.CSV: read_csv_series,
    Format.PHYSIONET2012: read_physionet2012,
}
