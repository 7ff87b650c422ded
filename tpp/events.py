"""The one batch type every point-process model takes: padded event sequences with observation windows.

A set of event sequences is ragged. :class:`EventBatch` (a :class:`~tpp.batch.PaddedBatch`) stores
them padded to the longest sequence, left-aligned:

* ``time``  ``[B, L]`` absolute event times (float64 by default),
* ``mark``  ``[B, L]`` event types in ``0 .. num_marks - 1`` (long),
* ``mask``  ``[B, L]`` True where an event is present,
* ``features`` ``[B, L, D]`` optional continuous per-event features (locations, magnitudes), float64,
  named by ``feature_names``; None (and ``()``) when absent,
* ``t_start``, ``t_end`` ``[B]`` the observation window of each sequence. Likelihoods integrate
  the intensity over the whole window, not only up to the last event,
* ``mark_names`` (optional): the original id of each mark ``0 .. num_marks - 1`` when a reader
  remapped sparse or non-integer ids (``read_events(..., remap_marks=True)``); writers put them back.

Inter-event times are derived (:attr:`EventBatch.inter_event_times`), not stored twice.
Device moves, indexing, splits, concatenation and equality come from the base class.
Validation runs once, at construction, and raises :class:`EventDataError` naming the
sequence, the position in the sequence (and the source row where known) and the field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tpp.batch import DataError, PaddedBatch, check_offsets, pad_flat

__all__ = ["EventBatch", "EventDataError", "DEFAULT_TIME_DTYPE"]

DEFAULT_TIME_DTYPE = torch.float64


class EventDataError(DataError):
    """Bad event data: the message names the source, sequence, position/row and field."""


@dataclass(frozen=True)
class _Provenance:
    """Where the events came from, so errors can name the file, sequence ids and rows."""

    source: str | None = None
    seq_names: Sequence[Any] | None = None
    rows: np.ndarray | None = None  # flat, aligned with the concatenated events

    def seq_label(self, b: int) -> Any:
        return self.seq_names[b] if self.seq_names is not None else b

    def row_of(self, flat_index: int) -> int | None:
        return None if self.rows is None else int(self.rows[flat_index])


def _validate_flat(
    times: np.ndarray,
    marks: np.ndarray,
    offsets: np.ndarray,
    t_start: np.ndarray,
    t_end: np.ndarray,
    num_marks: int,
    prov: _Provenance,
    features: np.ndarray | None = None,
    feature_names: Sequence[str] = (),
) -> None:
    """Vectorised checks on concatenated sequences (``features [N, D]`` too); raise on the first offending event."""
    num_seq = len(offsets) - 1
    if num_seq == 0:
        raise EventDataError("no sequences: the input is empty", source=prov.source)
    seq_of = np.repeat(np.arange(num_seq), np.diff(offsets))

    def fail(idx: int, field_name: str, msg: str) -> None:
        b = int(seq_of[idx])
        raise EventDataError(
            msg,
            source=prov.source,
            sequence=prov.seq_label(b),
            position=int(idx - offsets[b]),
            row=prov.row_of(idx),
            field=field_name,
        )

    def fail_window(b: int, field_name: str, msg: str) -> None:
        raise EventDataError(msg, source=prov.source, sequence=prov.seq_label(b), field=field_name)

    if num_marks < 1:
        raise EventDataError(f"num_marks must be >= 1, got {num_marks}", source=prov.source, field="mark")
    for name, window in (("t_start", t_start), ("t_end", t_end)):
        bad = np.flatnonzero(~np.isfinite(window))
        if bad.size:
            fail_window(int(bad[0]), name, f"window bound is {window[bad[0]]}, must be finite")
    bad = np.flatnonzero(t_end < t_start)
    if bad.size:
        b = int(bad[0])
        fail_window(b, "t_end", f"window end {float(t_end[b])!r} is before its start {float(t_start[b])!r}")
    bad = np.flatnonzero(~np.isfinite(times))
    if bad.size:
        fail(int(bad[0]), "time", f"time is {float(times[bad[0]])}, must be finite")
    if times.size:
        same_seq = seq_of[1:] == seq_of[:-1]
        bad = np.flatnonzero(same_seq & (times[1:] < times[:-1]))
        if bad.size:
            i = int(bad[0]) + 1
            fail(i, "time", f"times must be non-decreasing: {float(times[i])!r} comes after {float(times[i - 1])!r}")
        bad = np.flatnonzero(times < t_start[seq_of])
        if bad.size:
            i = int(bad[0])
            fail(i, "time", f"time {float(times[i])!r} is before the window start {float(t_start[seq_of[i]])!r}")
        bad = np.flatnonzero(times > t_end[seq_of])
        if bad.size:
            i = int(bad[0])
            fail(i, "time", f"time {float(times[i])!r} is after the window end {float(t_end[seq_of[i]])!r}")
        bad = np.flatnonzero(marks < 0)
        if bad.size:
            i = int(bad[0])
            fail(i, "mark", f"mark {int(marks[i])} is negative")
        bad = np.flatnonzero(marks >= num_marks)
        if bad.size:
            i = int(bad[0])
            fail(i, "mark", f"mark {int(marks[i])} is >= num_marks={num_marks}")
        if features is not None:
            bad = np.flatnonzero(~np.isfinite(features).all(1))
            if bad.size:
                i = int(bad[0])
                d = int(np.flatnonzero(~np.isfinite(features[i]))[0])
                fail(i, feature_names[d], f"feature {feature_names[d]!r} is {float(features[i, d])}, must be finite")


def _as_int_marks(values: np.ndarray, prov: _Provenance, offsets: np.ndarray) -> np.ndarray:
    """Marks must be integers; refuse 1.5 rather than truncate it silently."""
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind == "b":
        return values.astype(np.int64)
    if values.dtype.kind != "f":
        raise EventDataError(f"marks must be integers, got dtype {values.dtype}"
                             " (read_events(..., remap_marks=True) maps other ids to 0..K-1)", source=prov.source,
                             field="mark")
    with np.errstate(invalid="ignore"):
        # beyond 2**62 a cast to int64 wraps around: refuse rather than produce a negative mark
        bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)) | (np.abs(values) > 2.0**62))
    if bad.size:
        i = int(bad[0])
        b = int(np.searchsorted(offsets, i, side="right") - 1)
        what = "is too large" if np.isfinite(values[i]) and values[i] == np.round(values[i]) else "is not an integer"
        raise EventDataError(
            f"mark {float(values[i])!r} {what}",
            source=prov.source,
            sequence=prov.seq_label(b),
            position=int(i - offsets[b]),
            row=prov.row_of(i),
            field="mark",
        )
    return values.astype(np.int64)


def _sequence_array(
    values: Any, b: int, seq_names: Sequence[Any] | None, source: str | None, field: str
) -> tuple[np.ndarray, Any]:
    """Sequence ``b``'s values of ``field`` as an array, and the sequence's label; ragged nesting raises."""
    label = seq_names[b] if seq_names is not None and b < len(seq_names) else b
    try:
        return np.asarray(values), label
    except ValueError as exc:  # ragged nesting
        raise EventDataError(f"{field} values are not one array ({exc})", source=source, sequence=label,
                             field=field) from None


def _real_array(values: Any, b: int, seq_names: Sequence[Any] | None, source: str | None) -> np.ndarray:
    """One sequence's times as float64, refusing text, complex numbers and ragged nesting (no silent casts)."""
    array, label = _sequence_array(values, b, seq_names, source, "time")
    if array.dtype.kind not in "fiub" or array.ndim > 1:
        what = f"dtype {array.dtype}" if array.dtype.kind not in "fiub" else f"shape {array.shape}"
        raise EventDataError(f"times must be a flat array of real numbers, got {what}", source=source, sequence=label,
                             field="time")
    return array.astype(np.float64).reshape(-1)


def _feature_names(names: Sequence[str] | None, num_features: int, source: str | None = None) -> tuple[str, ...]:
    """Names of ``num_features`` features: as given (distinct strings, one per feature) or ``f0, f1, ...``."""
    names = tuple(str(n) for n in names) if names is not None and len(names) else ()
    if not names:
        return tuple(f"f{d}" for d in range(num_features))
    if len(names) != num_features:
        raise EventDataError(f"{len(names)} feature_names {list(names)} for {num_features} features", source=source,
                             field="feature_names")
    if len(set(names)) != len(names):
        raise EventDataError(f"feature_names must be distinct, got {list(names)}", source=source, field="feature_names")
    return names


def _flat_features(features: Any, num_events: int, source: str | None) -> np.ndarray:
    """Per-event features ``[N, D]`` (or ``[N]``, one feature) as float64, refusing text and complex numbers."""
    array = np.asarray(features)
    if array.dtype.kind not in "fiu":
        raise EventDataError(f"features must be real numbers, got dtype {array.dtype}", source=source, field="features")
    array = array.astype(np.float64)
    array = array[:, None] if array.ndim == 1 else array
    if array.ndim != 2 or array.shape[0] != num_events:
        raise EventDataError(f"features must be [N, D] with N = {num_events} events, got shape {array.shape}",
                             source=source, field="features")
    return array


def _sequence_features(features: Sequence[Any], lengths: np.ndarray, seq_names: Sequence[Any] | None,
                       source: str | None) -> np.ndarray:
    """One ``[L_b, D]`` (or ``[L_b]``) array per sequence -> the concatenated ``[N, D]``."""
    if len(features) != lengths.size:
        raise EventDataError(f"features must have one array per sequence ({lengths.size}), got {len(features)}",
                             source=source, field="features")
    arrays, width = [], None
    for b, values in enumerate(features):
        array, label = _sequence_array(values, b, seq_names, source, "features")
        array = array.reshape(-1, 1) if array.ndim == 1 else array
        if array.ndim != 2 or array.shape[0] != lengths[b] or (width is not None and array.size
                                                                and array.shape[1] != width):
            raise EventDataError(f"features must be [L, D] with L = {lengths[b]} (the number of times)"
                                 + (f" and D = {width}" if width is not None else "") + f", got shape {array.shape}",
                                 source=source, sequence=label, field="features")
        width = array.shape[1] if width is None and array.size else width
        arrays.append(array)
    width = width or 1
    return _flat_features(np.concatenate([a.reshape(-1, width) for a in arrays]), int(lengths.sum()), source)


def _window(values: Any, num_seq: int, name: str, source: str | None) -> np.ndarray:
    """A window bound per sequence from a scalar or one value per sequence."""
    try:
        array = np.asarray(values)
        if array.dtype.kind not in "fiub":
            raise TypeError(f"dtype {array.dtype}")
        return np.broadcast_to(array.astype(np.float64), (num_seq,)).copy()
    except (TypeError, ValueError) as exc:
        raise EventDataError(f"must be a number or one number per sequence ({num_seq}); got {exc}",
                             source=source, field=name) from None


def _mark_names(names: Sequence[Any] | None, num_marks: int, source: str | None = None) -> tuple[Any, ...] | None:
    """The original mark ids as a tuple: one per mark type, distinct (None: the marks are their own ids)."""
    if names is None:
        return None
    names = tuple(n.item() if isinstance(n, np.generic) else n for n in names)
    if len(names) != num_marks:
        raise EventDataError(f"{len(names)} mark_names for num_marks={num_marks}", source=source, field="mark_names")
    if len(set(names)) != len(names):
        raise EventDataError("mark_names must be distinct", source=source, field="mark_names")
    return names


class EventBatch(PaddedBatch):
    """Padded event sequences with per-sequence observation windows (see module docstring).

    Build one with :meth:`from_sequences`, :meth:`from_flat` or :func:`tpp.read_events`; the
    padded constructor is for code that already holds padded tensors. ``features`` stay float64
    under :meth:`to` (``dtype`` casts the time axis only), so locations keep their precision.
    """

    error = EventDataError
    row_fields = {"time": 0.0, "mark": 0, "mask": False, "features": 0.0}
    sequence_fields = ("t_start", "t_end")
    meta_fields = ("num_marks", "feature_names", "mark_names")
    meta_merge = {"num_marks": max}  # batches with fewer types embed in the larger type space
    float_fields = frozenset({"time", "t_start", "t_end"})
    sequence_view = ("time", "mark")
    names_in_equality = False  # readers name sequences differently; the events are the data
    noun, row_noun = "sequences", "events"

    def __init__(
        self,
        time: Tensor,
        mark: Tensor,
        mask: Tensor,
        t_start: Tensor,
        t_end: Tensor,
        num_marks: int,
        *,
        seq_names: Sequence[Any] | None = None,
        features: Tensor | None = None,
        feature_names: Sequence[str] = (),
        mark_names: Sequence[Any] | None = None,
        validate: bool = True,
    ) -> None:
        for name, tensor in (("time", time), ("mark", mark), ("mask", mask), ("t_start", t_start), ("t_end", t_end)):
            if not isinstance(tensor, torch.Tensor):  # a list or a number once failed with an AttributeError
                raise TypeError(f"EventBatch({name}=...) must be a torch.Tensor, got {type(tensor).__name__} (build "
                                "from arrays with EventBatch.from_sequences or EventBatch.from_flat)")
        if time.dim() != 2 or mark.shape != time.shape or mask.shape != time.shape:
            raise EventDataError(
                f"time, mark and mask must share one [B, L] shape, got {tuple(time.shape)}, "
                f"{tuple(mark.shape)}, {tuple(mask.shape)}"
            )
        if t_start.shape != (time.shape[0],) or t_end.shape != (time.shape[0],):
            raise EventDataError(f"t_start and t_end must have shape [B]={time.shape[0]}")
        for name, tensor in (("time", time), ("t_start", t_start), ("t_end", t_end)):
            if tensor.dtype == torch.bool or tensor.is_complex():
                raise EventDataError(f"{name} must be real numbers, got dtype {tensor.dtype}", field=name)
        if not time.is_floating_point():  # integer clock ticks: a float time axis like every other constructor
            time = time.to(DEFAULT_TIME_DTYPE)
        if mark.is_complex() or (mark.is_floating_point() and not torch.equal(mark, torch.round(mark))):
            raise EventDataError(f"marks must be integers, got dtype {mark.dtype} with fractional values", field="mark")
        self.time = time
        self.mark = mark.long()
        self.mask = mask.bool()
        self.t_start = t_start.to(time.dtype)
        self.t_end = t_end.to(time.dtype)
        self.num_marks = int(num_marks)
        self.seq_names = list(seq_names) if seq_names is not None else None
        self.features, self.feature_names = self._checked_features(features, feature_names)
        self.mark_names = _mark_names(mark_names, self.num_marks)
        self._check_names()
        if validate:
            self._check_left_aligned()
            flat = self.to_flat()
            _validate_flat(flat["times"], flat["marks"], flat["seq_offsets"], flat["t_start"], flat["t_end"],
                           self.num_marks, _Provenance(seq_names=self.seq_names), flat.get("features"),
                           self.feature_names)

    def _checked_features(self, features: Tensor | None, names: Sequence[str]) -> tuple[Tensor | None, tuple[str, ...]]:
        """``features`` as float64 ``[B, L, D]`` (``[B, L]`` is one feature) with ``D`` names; None when D = 0."""
        if features is None:
            if names is not None and len(names):
                raise EventDataError(f"feature_names {list(names)} given without features", field="feature_names")
            return None, ()
        features = torch.as_tensor(features, device=self.time.device)
        features = features[..., None] if features.dim() == 2 else features
        if features.dim() != 3 or features.shape[:2] != self.time.shape:
            raise EventDataError(f"features must be [B, L, D] = [{len(self)}, {self.max_length}, D], got "
                                 f"{tuple(features.shape)}", field="features")
        if features.dtype == torch.bool or features.is_complex():
            raise EventDataError(f"features must be real numbers, got dtype {features.dtype}", field="features")
        if features.shape[2] == 0:
            return None, ()
        return features.to(torch.float64), _feature_names(names, features.shape[2])

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_flat(
        cls,
        times: np.ndarray,
        seq_offsets: np.ndarray,
        t_start: np.ndarray,
        t_end: np.ndarray,
        marks: np.ndarray | None = None,
        num_marks: int | None = None,
        *,
        features: np.ndarray | None = None,
        feature_names: Sequence[str] | None = None,
        seq_names: Sequence[Any] | None = None,
        mark_names: Sequence[Any] | None = None,
        rows: np.ndarray | None = None,
        source: str | None = None,
        dtype: torch.dtype = DEFAULT_TIME_DTYPE,
    ) -> EventBatch:
        """Build from concatenated sequences (the ``.npz`` layout of ``$TPP_DATA_DIR``).

        ``features`` ``[N, D]`` (or ``[N]``) are per-event features named ``feature_names`` (default
        ``f0, f1, ...``). ``mark_names``: the original id of each mark (see the module docstring).
        ``rows`` (one per event) and ``source`` only serve error messages. The
        keys of :meth:`to_flat` are the arguments here: ``EventBatch.from_flat(**batch.to_flat())``.
        """
        prov = _Provenance(source=source, seq_names=seq_names, rows=rows)
        times = np.asarray(times)
        if times.dtype.kind not in "fiu":
            raise EventDataError(f"times must be numeric, got dtype {times.dtype}", source=source, field="time")
        times = times.astype(np.float64).reshape(-1)
        offsets = check_offsets(seq_offsets, times.size, EventDataError, source, "seq_offsets")
        marks = np.zeros(times.size, np.int64) if marks is None else _as_int_marks(marks, prov, offsets)
        if marks.shape != times.shape:
            raise EventDataError("marks and times differ in length", source=source, field="mark")
        if num_marks is None:
            num_marks = int(marks.max()) + 1 if marks.size else 1
        names: tuple[str, ...] = ()
        if features is not None:
            features = _flat_features(features, times.size, source)
            names = _feature_names(feature_names, features.shape[1], source)
        elif feature_names is not None and len(feature_names):
            raise EventDataError(f"feature_names {list(feature_names)} given without features", source=source,
                                 field="feature_names")
        t_start = _window(t_start, offsets.size - 1, "t_start", source)
        t_end = _window(t_end, offsets.size - 1, "t_end", source)
        _validate_flat(times, marks, offsets, t_start, t_end, int(num_marks), prov, features, names)
        mark_names = None if mark_names is None else _mark_names(mark_names, int(num_marks), source)
        # Padding repeats the window end: keeps padded times sorted and inside the window.
        time_pad, mask = pad_flat(times, offsets, t_end)
        return cls(
            torch.from_numpy(time_pad).to(dtype),
            torch.from_numpy(pad_flat(marks, offsets, 0)[0]),
            torch.from_numpy(mask),
            torch.from_numpy(t_start).to(dtype),
            torch.from_numpy(t_end).to(dtype),
            int(num_marks),
            seq_names=seq_names,
            features=None if features is None else torch.from_numpy(pad_flat(features, offsets, 0.0)[0]),
            feature_names=names,
            mark_names=mark_names,
            validate=False,
        )

    @classmethod
    def from_sequences(
        cls,
        times: Sequence[np.ndarray | Sequence[float]],
        marks: Sequence[np.ndarray | Sequence[int]] | None = None,
        *,
        t_start: float | Sequence[float] = 0.0,
        t_end: float | Sequence[float] | None = None,
        num_marks: int | None = None,
        features: Sequence[np.ndarray | Sequence[Any]] | None = None,
        feature_names: Sequence[str] | None = None,
        seq_names: Sequence[Any] | None = None,
        source: str | None = None,
        dtype: torch.dtype = DEFAULT_TIME_DTYPE,
    ) -> EventBatch:
        """Build from one array of times (and marks, and ``[L_b, D]`` features) per sequence.

        ``t_end=None`` takes each sequence's last event (its ``t_start`` when it has none).
        """
        arrays = [_real_array(t, b, seq_names, source) for b, t in enumerate(times)]
        lengths = np.array([a.size for a in arrays], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat_t = np.concatenate(arrays) if arrays else np.zeros(0)
        flat_m = None
        if marks is not None:
            try:
                mark_arrays = [np.asarray(m).reshape(-1) for m in marks]
            except ValueError as exc:  # ragged nesting
                raise EventDataError(f"marks are not one flat array per sequence ({exc})", source=source,
                                     field="mark") from None
            if len(mark_arrays) != len(arrays) or any(m.size != a.size for m, a in zip(mark_arrays, arrays)):
                raise EventDataError("marks must have one array per sequence, each as long as its times", source=source)
            flat_m = np.concatenate(mark_arrays) if mark_arrays else np.zeros(0, np.int64)
        flat_f = None if features is None or not arrays else _sequence_features(features, lengths, seq_names, source)
        t0 = _window(t_start, lengths.size, "t_start", source)
        if t_end is None:
            with np.errstate(invalid="ignore"):
                last = np.array([a[-1] if a.size else np.nan for a in arrays], np.float64)
            t1 = np.where(np.isnan(last), t0, last)
        else:
            t1 = _window(t_end, lengths.size, "t_end", source)
        return cls.from_flat(flat_t, offsets, t0, t1, flat_m, num_marks, features=flat_f, feature_names=feature_names,
                             seq_names=seq_names, source=source, dtype=dtype)

    # ------------------------------------------------------------------ views
    @property
    def duration(self) -> Tensor:
        """Window length ``t_end - t_start`` per sequence, ``[B]``."""
        return self.t_end - self.t_start

    @property
    def inter_event_times(self) -> Tensor:
        """``[B, L]``: gap from the previous event (from ``t_start`` for the first); 0 on padding."""
        prev = torch.cat([self.t_start[:, None], self.time[:, :-1]], dim=1)
        return torch.where(self.mask, self.time - prev, torch.zeros_like(self.time))

    def scale_time(self, factor: float) -> EventBatch:
        """The same events in another time unit: ``time``, ``t_start`` and ``t_end`` multiplied by ``factor > 0``
        (marks, features and names unchanged). Order and ties are kept (up to rounding of nearly equal times)."""
        factor = float(factor)
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"factor must be a positive finite number, got {factor}")
        if factor == 1.0:
            return self
        return self._replace(time=self.time * factor, t_start=self.t_start * factor, t_end=self.t_end * factor)

    @property
    def num_features(self) -> int:
        """``D``, the number of continuous per-event features (0 without features)."""
        return len(self.feature_names)

    def _padding_time(self) -> Tensor:
        return self.t_end  # padding repeats the window end: sorted and inside the window

    def _repr_counts(self) -> dict[str, Any]:
        counts: dict[str, Any] = {"num_marks": self.num_marks}
        if self.mark_names is not None:
            counts["mark_names"] = list(self.mark_names[:5]) + (["..."] if self.num_marks > 5 else [])
        if self.features is not None:
            counts["features"] = list(self.feature_names)
        return counts

    def to_flat(self) -> dict[str, np.ndarray]:
        """Concatenated numpy arrays: ``times``, ``marks``, ``seq_offsets``, ``t_start``, ``t_end`` and, with
        features, ``features [N, D]`` and ``feature_names [D]`` (the arguments of :meth:`from_flat`)."""
        mask = self.mask.cpu().numpy()
        flat = {
            "times": self.time.detach().cpu().numpy().astype(np.float64)[mask],
            "marks": self.mark.cpu().numpy()[mask],
            "seq_offsets": np.concatenate([[0], np.cumsum(mask.sum(1))]).astype(np.int64),
            "t_start": self.t_start.detach().cpu().numpy().astype(np.float64),
            "t_end": self.t_end.detach().cpu().numpy().astype(np.float64),
        }
        if self.features is not None:
            flat["features"] = self.features.detach().cpu().numpy()[mask]
            flat["feature_names"] = np.asarray(self.feature_names, dtype=str)
        return flat
