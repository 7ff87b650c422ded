"""Converters from the original public files of the registered datasets to :class:`~tpp.events.EventBatch`.

Each converter is a small function ``(sources, options) -> EventBatch`` registered under a format
name that the dataset cards (``data/*.toml``) use. ``sources`` maps a role (``"data"``, or
``"time"``/``"event"`` for the RMTPP text pairs, ...) to a local file, in the card's order;
``options`` holds the card's converter options plus ``num_marks``, ``features`` (the card's
continuous per-event features, kept by the converters of files that hold them: ``npz``, ``csv``,
``stpp-pkl``) and ``source`` (a label for error messages) added by :mod:`tpp.datasets`.

Why here and not in :mod:`tpp.io`: these formats are the quirks of particular upstream
repositories (legacy ``torch.save`` dicts, object-array ``.npz``, counting-process CSV, ...), needed
only to rebuild a dataset from its original when ``$TPP_DATA_DIR`` is not available.

Some originals are pickles (``triangular-tpp-pkl``, ``ifl-tpp-npz``, ``stpp-pkl``, ``ntpp-pkl``,
``easytpp-pkl``): :func:`tpp.datasets.load` checks their sha256 before converting them, and they are
unpickled by restricted loaders (:mod:`tpp.io`'s data-only unpickler, ``torch.load(weights_only=True)``)
that build containers, numbers and numpy arrays only: a file naming any other class or function is
refused, never run.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tpp.events import EventBatch, EventDataError
from tpp.io import _DataOnlyUnpickler, from_dataframe, read_events

__all__ = ["CONVERTERS", "Converter", "convert", "register"]

Converter = Callable[[Mapping[str, Path], Mapping[str, Any]], EventBatch]
CONVERTERS: dict[str, Converter] = {}

# Seconds per unit, for datetime columns.
_UNIT_SECONDS = {"s": 1.0, "min": 60.0, "h": 3600.0, "D": 86400.0}


def register(name: str) -> Callable[[Converter], Converter]:
    """Register a converter under a format name (the ``format`` key of a card)."""

    def deco(fn: Converter) -> Converter:
        if name in CONVERTERS:
            raise ValueError(f"format {name!r} is already registered")
        CONVERTERS[name] = fn
        return fn

    return deco


def convert(
    format: str, sources: Mapping[str, str | Path] | str | Path, options: Mapping[str, Any] | None = None
) -> EventBatch:
    """Convert local original file(s) with the converter registered as ``format``.

    ``sources`` is one path (role ``"data"``) or a mapping role -> path.
    """
    if format not in CONVERTERS:
        raise KeyError(f"unknown format {format!r}; registered formats are {sorted(CONVERTERS)}")
    if isinstance(sources, (str, Path)):
        sources = {"data": sources}
    paths = {role: Path(p) for role, p in sources.items()}
    for role, p in paths.items():
        if not p.is_file():
            raise FileNotFoundError(f"{format}: source {role!r} not found: {p}")
    return CONVERTERS[format](paths, dict(options or {}))


# --------------------------------------------------------------------------- helpers
def _only(sources: Mapping[str, Path], format: str) -> Path:
    if len(sources) != 1:
        raise ValueError(f"{format} takes exactly one source file, got roles {list(sources)}")
    return next(iter(sources.values()))


def _label(options: Mapping[str, Any], path: Path) -> str:
    return str(options.get("source") or path)


def _num_marks(options: Mapping[str, Any]) -> int | None:
    value = options.get("num_marks")
    return None if value is None else int(value)


def _window(value: Any, name: str) -> float | None:
    """A card window bound: a number, or ``"last"`` (= None, the last event, as EventBatch defaults)."""
    if value is None or value == "last":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"option {name!r} must be a number or 'last', got {value!r}")


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as a protocol-2 pickle uses it (the bytes of a numpy array, written as latin-1 text);
    no other codec, so a pickle cannot reach the codec registry through it."""
    if not isinstance(text, str) or encoding.replace("-", "").replace("_", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r} (only latin1 is data)")
    return text.encode("latin1")


class _DownloadUnpickler(_DataOnlyUnpickler):
    """The data-only unpickler plus what protocol-2 pickles of numpy arrays hold: latin-1 ``_codecs.encode``
    and ``bytes``."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        if (module, name) in {("builtins", "bytes"), ("__builtin__", "bytes")}:  # protocol 2's empty bytes
            return bytes
        return super().find_class(module, name)


def _unpickle(path: Path, label: str) -> Any:
    """Load a pickle of plain data with :mod:`tpp.io`'s data-only unpickler: a checksum says the file is the
    one the card names, not that it is harmless, so a class or function named in the file is refused, never
    run."""
    with open(path, "rb") as fh:
        try:
            return _DownloadUnpickler(fh, encoding="latin1").load()
        except RecursionError:
            raise EventDataError("cannot unpickle (nested too deeply)", source=label) from None
        except Exception as exc:  # pickle raises many types on bad input
            raise EventDataError(f"cannot unpickle ({exc})", source=label) from None


def _numpy_pickle_globals() -> list[Any]:
    """What a legacy ``torch.save`` of numpy arrays names (under numpy 1's and numpy 2's module paths), for
    ``torch.load(weights_only=True)``: its unpickler refuses every other class or function."""
    from numpy._core.multiarray import _reconstruct, scalar

    dtypes = {type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDGUSO"}
    return [_reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct"), scalar,
            (scalar, "numpy.core.multiarray.scalar"), np.ndarray, np.dtype, *dtypes]


def _load_npz(path: Path, label: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz``; object arrays (pickles inside the archive) through the data-only unpickler,
    where ``np.load(allow_pickle=True)`` would run whatever the pickle names."""
    out: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                name = member[:-4] if member.endswith(".npy") else member
                with archive.open(member) as fh:
                    version = np.lib.format.read_magic(fh)
                    # 3.0 differs from 2.0 only in allowing UTF-8 field names; an ASCII header reads the same
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, fortran, dtype = read_header(fh)
                    if dtype.hasobject:
                        array = _DownloadUnpickler(fh, encoding="latin1").load()
                        if not isinstance(array, np.ndarray):
                            raise ValueError(f"array {name!r} holds a {type(array).__name__}, not an array")
                    else:
                        count = int(np.prod(shape, dtype=np.int64))
                        data = fh.read(count * dtype.itemsize)
                        array = np.frombuffer(data, dtype=dtype, count=count)
                        array = array.reshape(shape[::-1]).T if fortran else array.reshape(shape)
                    out[name] = array
    except RecursionError:
        raise EventDataError("cannot read as .npz (nested too deeply)", source=label) from None
    except Exception as exc:  # zip, header and pickle errors come in many types
        raise EventDataError(f"cannot read as .npz ({exc})", source=label) from None
    return out


# --------------------------------------------------------------------------- our own layout
@register("npz")
def from_npz(sources: Mapping[str, Path], options: Mapping[str, Any]) -> EventBatch:
    """The uniform ``.npz`` layout of ``$TPP_DATA_DIR`` (times, seq_offsets, t_start, t_end, marks, and
    the per-event arrays named by option ``features``, e.g. ``lon``, ``lat``)."""
    return read_events(_only(sources, "npz"), num_marks=_num_marks(options), features=options.get("features"))


# --------------------------------------------------------------------------- upstream formats
@register("triangular-tpp-pkl")
def from_triangular_tpp_pkl(sources: Mapping[str, Path], options: Mapping[str, Any]) -> EventBatch:
    """shchur/triangular-tpp ``data/*.pkl``: a legacy ``torch.save`` dict
    ``{sequences: [{arrival_times}], t_max, mean_number_items}``; window ``[0, t_max]``.

    The legacy format is a pickle of numpy arrays: ``torch.load(weights_only=True)`` reads it with numpy's
    array globals allowed and nothing else (see :func:`_numpy_pickle_globals`); float32 times are
    widened to float64 exactly.
    """
    import torch  # the only converter that needs torch

    path = _only(sources, "triangular-tpp-pkl")
    label = _label(options, path)
    try:
        # weights_only: torch's restricted unpickler, told about numpy arrays only (a download never runs code)
        with torch.serialization.safe_globals(_numpy_pickle_globals()):
            obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise EventDataError(f"cannot torch.load ({exc})", source=label) from None
    if not isinstance(obj, dict) or "sequences" not in obj or "t_max" not in obj:
        raise EventDataError("expected a dict with 'sequences' and 't_max'", source=label)
    times = [np.asarray(s["arrival_times"]).astype(np.float64).reshape(-1) for s in obj["sequences"]]
    return EventBatch.from_sequences(
        times, t_start=0.0, t_end=float(obj["t_max"]), num_marks=_num_marks(options) or 1, source=label
    )


@register("ifl-tpp-npz")
def from_ifl_tpp_npz(sources: Mapping[str, Path], options: Mapping[str, Any]) -> EventBatch:
    """shchur/ifl-tpp ``data/*.npz``: object arrays ``arrival_times`` (and ``marks``), one list per
    sequence; no window stored, so ``[0, last event]`` (needs ``allow_pickle=True``)."""
    path = _only(sources, "ifl-tpp-npz")
    label = _label(options, path)
    data = _load_npz(path, label)
    if "arrival_times" not in data:
        raise EventDataError(f"missing array 'arrival_times' (arrays are {list(data.keys())})", source=label)
    times = [np.asarray(t, np.float64).reshape(-1) for t in data["arrival_times"]]
    marks = [np.asarray(m).reshape(-1) for m in data["marks"]] if "marks" in data else None
    return EventBatch.from_sequences(
        times, marks, t_start=0.0, t_end=None, num_marks=_num_marks(options), source=label
    )


def _read_lines(path: Path, dtype: type, label: str) -> list[np.ndarray]:
    out = []
    with open(path) as fh:
        for i, line in enumerate(fh):
            if not line.strip():
                continue
            try:
                out.append(np.array(line.split(), dtype=dtype))
            except ValueError as exc:
                raise EventDataError(f"cannot parse line ({exc})", source=label, row=i) from None
    return out


@register("rmtpp-text")
def from_rmtpp_text(sources: Mapping[str, Path], options: Mapping[str, Any]) -> EventBatch:
    """dunan/NeuralPointProcess text files: one line per sequence, ``time*`` = space-separated times,
    ``event*`` = the matching marks (1-based upstream; ``mark_base`` is subtracted).

    Roles come in pairs ``time<suffix>``/``event<suffix>`` (e.g. ``time``/``event`` or
    ``time-1-test``/``event-1-test``), read in the card's order. ``dedupe = true`` drops repeated
    (times, marks) sequences, keeping the first. Window: ``[first event, last event]`` of each sequence
    (none is stored upstream).
    """
    base = int(options.get("mark_base", 1))
    times: list[np.ndarray] = []
    marks: list[np.ndarray] = []
    seen: set[tuple[bytes, bytes]] = set()
    time_roles = [r for r in sources if r.startswith("time")]
    if not time_roles or len(time_roles) * 2 != len(sources):
        raise ValueError(f"rmtpp-text needs pairs of roles time*/event*, got {list(sources)}")
    for role in time_roles:
        event_role = "event" + role[len("time") :]
        if event_role not in sources:
            raise ValueError(f"rmtpp-text: role {role!r} has no matching {event_role!r}")
        t_path, e_path = sources[role], sources[event_role]
        ts = _read_lines(t_path, np.float64, str(t_path))
        es = _read_lines(e_path, np.int64, str(e_path))
        if len(ts) != len(es):
            raise EventDataError(f"{len(ts)} time lines but {len(es)} event lines in {e_path}", source=str(t_path))
        for i, (t, e) in enumerate(zip(ts, es)):
            if t.size != e.size:
                raise EventDataError(f"{t.size} times but {e.size} marks", source=str(t_path), sequence=i)
            if options.get("dedupe"):
                key = (t.tobytes(), e.tobytes())
                if key in seen:
                    continue
                seen.add(key)
            times.append(t)
            marks.append(e - base)
    first = [t[0] if t.size else 0.0 for t in times]
    label = str(options.get("source") or next(iter(sources.values())))
    return EventBatch.from_sequences(
        times, marks, t_start=first, t_end=None, num_marks=_num_marks(options), source=label
    )


@register("stpp-pkl")
def from_stpp_pkl(sources: Mapping[str, Path], options: Mapping[str, Any]) -> EventBatch:
    """Neural-STPP / DSTPP ``data_*.pkl``: a plain pickle list of sequences, each a list of
    ``[t, lon, lat]``. Window from options ``t_start`` (default 0) and ``t_end`` (number or ``'last'``).
    Option ``features`` names the columns after ``t`` that are kept (``["lon", "lat"]``); without it
    only the times are."""
    path = _only(sources, "stpp-pkl")
    label = _label(options, path)
    obj = _unpickle(path, label)
    names = list(options.get("features") or ())
    times, features = [], []
    for i, seq in enumerate(obj):
        arr = np.asarray(seq, np.float64)
        if arr.ndim != 2 or arr.shape[1] < 1 + len(names):
            raise EventDataError(f"expected rows [t, {', '.join(names) or 'x, y'}], got shape {arr.shape}",
                                 source=label, sequence=i)
        times.append(arr[:, 0])
        features.append(arr[:, 1 : 1 + len(names)])
    return EventBatch.from_sequences(
        times,
        t_start=float(options.get("t_start", 0.0)),
        t_end=_window(options.get("t_end", "last"), "t_end"),
        num_marks=_num_marks(options) or 1,
        features=features if names else None,
        feature_names=names or None,
        source=label,
    )


@register("ntpp-pkl")
def from_ntpp_pkl(sources: Mapping[str, Path], options: Mapping[str, Any]) -> EventBatch:
    """ArianeDucellier/NTPP ``catalog_LFEs.pkl``: a plain pickle ``dict(arrival_times=[array...], t_end=T)``;
    window ``[0, T]`` (empty sequences kept)."""
    path = _only(sources, "ntpp-pkl")
    label = _label(options, path)
    obj = _unpickle(path, label)
    if not isinstance(obj, dict) or "arrival_times" not in obj:
        raise EventDataError("expected a dict with 'arrival_times'", source=label)
    times = [np.asarray(t, np.float64).reshape(-1) for t in obj["arrival_times"]]
    t_end = options.get("t_end", obj.get("t_end"))
    return EventBatch.from_sequences(
        times, t_start=0.0, t_end=_window(t_end, "t_end"), num_marks=_num_marks(options) or 1, source=label
    )


def _time_column(df: pd.DataFrame, options: Mapping[str, Any], label: str) -> np.ndarray:
    """Numbers as they are, or datetimes converted to ``time_unit`` since ``time_origin`` (ISO, UTC).

    Arithmetic is ``((ns - origin_ns) / 1e9) / unit_seconds``, so results are reproducible bit for bit.
    """
    column = options.get("time", "time")
    if column not in df.columns:
        raise EventDataError(f"missing column {column!r} (columns are {list(df.columns)})", source=label, field=column)
    if options.get("time_format", "number") == "number":
        return pd.to_numeric(df[column], errors="raise").to_numpy(np.float64)
    try:
        stamps = pd.to_datetime(df[column], utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise EventDataError(f"cannot parse datetimes ({exc})", source=label, field=column) from None
    ns = stamps.astype("datetime64[ns, UTC]").astype("int64").to_numpy()
    origin = options.get("time_origin")
    origin_ns = 0 if origin is None else pd.Timestamp(origin, tz="UTC").value
    unit = options.get("time_unit", "s")
    if unit not in _UNIT_SECONDS:
        raise ValueError(f"time_unit must be one of {sorted(_UNIT_SECONDS)}, got {unit!r}")
    return ((ns - origin_ns) / 1e9) / _UNIT_SECONDS[unit]


@register("csv")
def from_csv(sources: Mapping[str, Path], options: Mapping[str, Any]) -> EventBatch:
    """Event tables, one row per event, mapped by the card's options:

    ``time`` (column), ``time_format`` (``number`` | ``datetime``), ``time_origin`` and ``time_unit``
    (for datetimes), ``relative_to = "sequence"`` (times from each sequence's first event), ``seq``
    (column; without it each source file is one sequence), ``mark`` (column) and ``mark_base``,
    ``t_start`` (default 0) and ``t_end`` (number or ``'last'``), ``features`` (names of continuous
    per-event features) and ``feature_columns`` (feature name -> column, where they differ). Rows are
    stably sorted by time within a sequence; sequences keep the order of first appearance, files the
    card's order.
    """
    frames = []
    seq_col = options.get("seq")
    names = list(options.get("features") or ())
    columns = {name: options.get("feature_columns", {}).get(name, name) for name in names}
    for role, path in sources.items():
        label = str(path)
        try:
            df = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise EventDataError(f"cannot parse ({str(exc).splitlines()[0]})", source=label) from None
        out = pd.DataFrame({"time": _time_column(df, options, label)})
        if seq_col is not None:
            if seq_col not in df.columns:
                raise EventDataError(f"missing column {seq_col!r}", source=label, field=seq_col)
            out["seq"] = df[seq_col].to_numpy()
        else:
            out["seq"] = role
        if options.get("mark") is not None:
            mark_col = options["mark"]
            if mark_col not in df.columns:
                raise EventDataError(f"missing column {mark_col!r}", source=label, field=mark_col)
            out["mark"] = df[mark_col].to_numpy() - int(options.get("mark_base", 0))
        for name, column in columns.items():
            if column not in df.columns:
                raise EventDataError(f"missing column {column!r} for feature {name!r} (columns are "
                                     f"{list(df.columns)})", source=label, field=column)
            out[name] = df[column].to_numpy()
        frames.append(out)
    df = pd.concat(frames, ignore_index=True)
    codes, _ = pd.factorize(df["seq"], sort=False)
    df = df.iloc[np.lexsort((df["time"].to_numpy(), codes))].reset_index(drop=True)
    if options.get("relative_to") == "sequence":
        df["time"] = df["time"] - df.groupby("seq", sort=False)["time"].transform("first")
    return from_dataframe(
        df,
        seq="seq",
        time="time",
        mark="mark" if "mark" in df.columns else None,
        t_start=float(options.get("t_start", 0.0)),
        t_end=_window(options.get("t_end", "last"), "t_end"),
        num_marks=_num_marks(options),
        features=names,
        source=str(options.get("source") or next(iter(sources.values()))),
    )


@register("spike-times-txt")
def from_spike_times_txt(sources: Mapping[str, Path], options: Mapping[str, Any]) -> EventBatch:
    """nitime ``grasshopper_spike_times*.txt``: one number per line, ``#`` header lines; each file is one
    sequence. Times are divided by ``divide_by`` (1e6: microseconds -> seconds); window ``[0, t_end]``."""
    divisor = float(options.get("divide_by", 1.0))
    times = []
    for path in sources.values():
        try:
            values = np.loadtxt(path, comments="#", dtype=np.float64, ndmin=1)
        except ValueError as exc:
            raise EventDataError(f"cannot parse ({exc})", source=str(path)) from None
        times.append(values / divisor)
    return EventBatch.from_sequences(
        times,
        t_start=0.0,
        t_end=_window(options.get("t_end", "last"), "t_end"),
        num_marks=_num_marks(options) or 1,
        seq_names=list(sources),
        source=str(options.get("source") or next(iter(sources.values()))),
    )


@register("recur-csv")
def from_recur_csv(sources: Mapping[str, Path], options: Mapping[str, Any]) -> EventBatch:
    """lifelines ``recur.csv`` (counting-process rows ``ID, TIME0, TIME1, CENSOR, ...``): one sequence per
    subject, events at ``TIME1`` where ``CENSOR == 1``, window ``[0, max TIME1 of the subject]`` (so a
    censored last interval adds survival time; subjects without events give empty sequences)."""
    path = _only(sources, "recur-csv")
    label = _label(options, path)
    df = pd.read_csv(path)
    missing = {"ID", "TIME1", "CENSOR"} - set(df.columns)
    if missing:
        raise EventDataError(f"missing columns {sorted(missing)} (columns are {list(df.columns)})", source=label)
    ids, first_seen = pd.factorize(df["ID"], sort=False)
    t1 = df["TIME1"].to_numpy(np.float64)
    events = df["CENSOR"].to_numpy() == 1
    times = [np.sort(t1[(ids == k) & events]) for k in range(len(first_seen))]
    t_end = np.array([t1[ids == k].max() for k in range(len(first_seen))])
    return EventBatch.from_sequences(
        times,
        t_start=0.0,
        t_end=t_end,
        num_marks=_num_marks(options) or 1,
        seq_names=[v.item() if hasattr(v, "item") else v for v in first_seen],
        source=label,
    )


@register("easytpp-pkl")
def from_easytpp_pkl(sources: Mapping[str, Path], options: Mapping[str, Any]) -> EventBatch:
    """EasyTPP / "Gatech" pickles ``{'dim_process': K, '<key>': [[{time_since_start, type_event}...]]}``
    (read by :func:`tpp.read_events`); option ``key`` names the split inside the pickle. No window is
    stored: ``[0, last event]``."""
    path = _only(sources, "easytpp-pkl")
    batch = read_events(path, split=options.get("key"))
    n = _num_marks(options)
    if n is not None and n != batch.num_marks:
        raise EventDataError(f"dim_process is {batch.num_marks}, the card says {n}", source=_label(options, path))
    return batch


@register("ccb-rdata")
def from_ccb_rdata(sources: Mapping[str, Path], options: Mapping[str, Any]) -> EventBatch:
    """bokgyeong/WhaleCallHawkes ``ccb.RData``: data frame ``data`` (``ts`` minutes, ``marks`` = MARU
    0..9) and ``noise`` (per-minute covariate, ``ts``); window ``[0, max noise ts]``.

    Needs the optional pure-Python package ``rdata`` (``pip install rdata``).
    """
    path = _only(sources, "ccb-rdata")
    label = _label(options, path)
    try:
        import rdata  # type: ignore[import-not-found]
    except ImportError:
        raise ImportError(
            f"{label}: reading the R file needs the optional package 'rdata' (pip install rdata), "
            "or point $TPP_DATA_DIR at a staged copy"
        ) from None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata warns about R classes it maps to plain frames
        objs = rdata.read_rda(path)
    data, noise = objs["data"], objs["noise"]
    t = np.asarray(data["ts"], np.float64)
    order = np.argsort(t, kind="stable")
    marks = np.asarray(data["marks"])[order]
    return EventBatch.from_sequences(
        [t[order]],
        [marks],
        t_start=0.0,
        t_end=float(np.max(np.asarray(noise["ts"], np.float64))),
        num_marks=_num_marks(options),
        source=label,
    )
