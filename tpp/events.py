"""The one batch type every model takes: padded event sequences with observation windows.

A set of event sequences is ragged. :class:`EventBatch` stores them padded to the longest
sequence, left-aligned:

* ``time``  ``[B, L]`` absolute event times (float64 by default),
* ``mark``  ``[B, L]`` event types in ``0 .. num_marks - 1`` (long),
* ``mask``  ``[B, L]`` True where an event is present,
* ``t_start``, ``t_end`` ``[B]`` the observation window of each sequence. Likelihoods integrate
  the intensity over the whole window, not only up to the last event.

Inter-event times are derived (:attr:`EventBatch.inter_event_times`), not stored twice.
Validation runs once, at construction, and raises :class:`EventDataError` naming the
sequence, the position in the sequence (and the source row where known) and the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["EventBatch", "EventDataError", "DEFAULT_TIME_DTYPE"]

DEFAULT_TIME_DTYPE = torch.float64


class EventDataError(ValueError):
    """Bad event data: the message names the source, sequence, position/row and field."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        sequence: Any = None,
        position: int | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.detail = message  # without the location prefix, so a wrapper can re-locate it
        self.source, self.sequence, self.position, self.row, self.field = (
            source,
            sequence,
            position,
            row,
            field,
        )
        where = []
        if source is not None:
            where.append(str(source))
        if sequence is not None:
            where.append(f"sequence {sequence!r}")
        if position is not None:
            where.append(f"position {position}")
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


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
) -> None:
    """Vectorised checks on concatenated sequences; raise on the first offending event."""
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


def _as_int_marks(values: np.ndarray, prov: _Provenance, offsets: np.ndarray) -> np.ndarray:
    """Marks must be integers; refuse 1.5 rather than truncate it silently."""
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind == "b":
        return values.astype(np.int64)
    if values.dtype.kind != "f":
        raise EventDataError(f"marks must be integers, got dtype {values.dtype}", source=prov.source, field="mark")
    bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
    if bad.size:
        i = int(bad[0])
        b = int(np.searchsorted(offsets, i, side="right") - 1)
        raise EventDataError(
            f"mark {float(values[i])!r} is not an integer",
            source=prov.source,
            sequence=prov.seq_label(b),
            position=int(i - offsets[b]),
            row=prov.row_of(i),
            field="mark",
        )
    return values.astype(np.int64)


def _real_array(values: Any, b: int, seq_names: Sequence[Any] | None, source: str | None) -> np.ndarray:
    """One sequence's times as float64, refusing text, complex numbers and ragged nesting (no silent casts)."""
    label = seq_names[b] if seq_names is not None and b < len(seq_names) else b
    try:
        array = np.asarray(values)
    except ValueError as exc:  # ragged nesting
        raise EventDataError(f"times are not one flat array ({exc})", source=source, sequence=label, field="time") from None
    if array.dtype.kind not in "fiub" or array.ndim > 1:
        what = f"dtype {array.dtype}" if array.dtype.kind not in "fiub" else f"shape {array.shape}"
        raise EventDataError(f"times must be a flat array of real numbers, got {what}", source=source, sequence=label,
                             field="time")
    return array.astype(np.float64).reshape(-1)


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


class EventBatch:
    """Padded event sequences with per-sequence observation windows (see module docstring).

    Build one with :meth:`from_sequences`, :meth:`from_flat` or :func:`tpp.read_events`; the
    padded constructor is for code that already holds padded tensors.
    """

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
        validate: bool = True,
    ) -> None:
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
        if validate:
            lengths = self.mask.sum(1)
            arange = torch.arange(self.max_length, device=self.mask.device)
            if not torch.equal(self.mask, arange[None, :] < lengths[:, None]):
                raise EventDataError("mask must be left-aligned: events first, then padding")
            flat = self.to_flat()
            _validate_flat(
                flat["times"],
                flat["marks"],
                flat["seq_offsets"],
                flat["t_start"],
                flat["t_end"],
                self.num_marks,
                _Provenance(seq_names=self.seq_names),
            )

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
        seq_names: Sequence[Any] | None = None,
        rows: np.ndarray | None = None,
        source: str | None = None,
        dtype: torch.dtype = DEFAULT_TIME_DTYPE,
    ) -> "EventBatch":
        """Build from concatenated sequences (the ``.npz`` layout of ``$TPP_DATA_DIR``).

        ``rows`` (one per event) and ``source`` only serve error messages.
        """
        prov = _Provenance(source=source, seq_names=seq_names, rows=rows)
        offsets = np.asarray(seq_offsets, dtype=np.int64)
        times = np.asarray(times)
        if times.dtype.kind not in "fiu":
            raise EventDataError(f"times must be numeric, got dtype {times.dtype}", source=source, field="time")
        times = times.astype(np.float64)
        if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0 or offsets[-1] != times.size or np.any(
            np.diff(offsets) < 0
        ):
            raise EventDataError(
                "seq_offsets must start at 0, be non-decreasing and end at the number of events",
                source=source,
                field="seq_offsets",
            )
        marks = np.zeros(times.size, np.int64) if marks is None else _as_int_marks(marks, prov, offsets)
        if marks.shape != times.shape:
            raise EventDataError("marks and times differ in length", source=source, field="mark")
        if num_marks is None:
            num_marks = int(marks.max()) + 1 if marks.size else 1
        t_start = _window(t_start, offsets.size - 1, "t_start", source)
        t_end = _window(t_end, offsets.size - 1, "t_end", source)
        _validate_flat(times, marks, offsets, t_start, t_end, int(num_marks), prov)
        lengths = np.diff(offsets)
        num_seq, max_len = lengths.size, int(lengths.max()) if lengths.size else 0
        mask = np.arange(max_len)[None, :] < lengths[:, None]
        time_pad = np.zeros((num_seq, max_len), np.float64)
        mark_pad = np.zeros((num_seq, max_len), np.int64)
        time_pad[mask] = times
        mark_pad[mask] = marks
        # Padding repeats the window end: keeps padded times sorted and inside the window.
        time_pad[~mask] = np.broadcast_to(t_end[:, None], (num_seq, max_len))[~mask]
        return cls(
            torch.from_numpy(time_pad).to(dtype),
            torch.from_numpy(mark_pad),
            torch.from_numpy(mask),
            torch.from_numpy(t_start).to(dtype),
            torch.from_numpy(t_end).to(dtype),
            int(num_marks),
            seq_names=seq_names,
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
        seq_names: Sequence[Any] | None = None,
        source: str | None = None,
        dtype: torch.dtype = DEFAULT_TIME_DTYPE,
    ) -> "EventBatch":
        """Build from one array of times (and marks) per sequence.

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
        t0 = _window(t_start, lengths.size, "t_start", source)
        if t_end is None:
            with np.errstate(invalid="ignore"):
                last = np.array([a[-1] if a.size else np.nan for a in arrays], np.float64)
            t1 = np.where(np.isnan(last), t0, last)
        else:
            t1 = _window(t_end, lengths.size, "t_end", source)
        return cls.from_flat(
            flat_t, offsets, t0, t1, flat_m, num_marks, seq_names=seq_names, source=source, dtype=dtype
        )

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return self.time.shape[0]

    @property
    def batch_size(self) -> int:
        return self.time.shape[0]

    @property
    def max_length(self) -> int:
        return self.time.shape[1]

    @property
    def lengths(self) -> Tensor:
        """Number of events per sequence, ``[B]``."""
        return self.mask.sum(1)

    @property
    def num_events(self) -> int:
        return int(self.mask.sum())

    @property
    def duration(self) -> Tensor:
        """Window length ``t_end - t_start`` per sequence, ``[B]``."""
        return self.t_end - self.t_start

    @property
    def inter_event_times(self) -> Tensor:
        """``[B, L]``: gap from the previous event (from ``t_start`` for the first); 0 on padding."""
        prev = torch.cat([self.t_start[:, None], self.time[:, :-1]], dim=1)
        return torch.where(self.mask, self.time - prev, torch.zeros_like(self.time))

    @property
    def device(self) -> torch.device:
        return self.time.device

    @property
    def dtype(self) -> torch.dtype:
        return self.time.dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "EventBatch":
        """Move to a device and/or change the time dtype (marks and mask stay integer/bool)."""
        dtype = dtype or self.time.dtype
        return EventBatch(
            self.time.to(device=device, dtype=dtype),
            self.mark.to(device),
            self.mask.to(device),
            self.t_start.to(device=device, dtype=dtype),
            self.t_end.to(device=device, dtype=dtype),
            self.num_marks,
            seq_names=self.seq_names,
            validate=False,
        )

    def __getitem__(self, index: int | slice | Sequence[int] | Tensor | np.ndarray) -> "EventBatch":
        """Select sequences (never events): ``batch[3]``, ``batch[2:5]``, ``batch[[0, 4]]``."""
        if isinstance(index, int):
            index = [index]
        if isinstance(index, slice):
            idx = torch.arange(len(self))[index]
        else:
            idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
            if idx.dtype == torch.bool:
                idx = torch.nonzero(idx).flatten()
        idx = idx.to(self.device)
        lengths = self.lengths[idx]
        max_len = int(lengths.max()) if idx.numel() else 0
        names = None if self.seq_names is None else [self.seq_names[int(i)] for i in idx.cpu()]
        return EventBatch(
            self.time[idx, :max_len],
            self.mark[idx, :max_len],
            self.mask[idx, :max_len],
            self.t_start[idx],
            self.t_end[idx],
            self.num_marks,
            seq_names=names,
            validate=False,
        )

    def split(
        self, fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0
    ) -> tuple["EventBatch", ...]:
        """Split by sequence into parts of the given fractions (e.g. train/val/test), shuffled with ``seed``.

        The split is a function of ``(len(self), fractions, seed)`` only, so it is reproducible.
        """
        fractions = np.asarray(fractions, dtype=np.float64)
        if np.any(fractions < 0) or not np.isclose(fractions.sum(), 1.0):
            raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions.tolist()}")
        n = len(self)
        perm = np.random.default_rng(seed).permutation(n)
        bounds = np.round(np.cumsum(fractions) * n).astype(int)
        parts = np.split(perm, bounds[:-1])
        if any(p.size == 0 for p in parts):
            raise ValueError(f"cannot split {n} sequences into fractions {fractions.tolist()}: a part would be empty")
        return tuple(self[np.sort(p)] for p in parts)

    @staticmethod
    def concat(batches: Sequence["EventBatch"]) -> "EventBatch":
        """Stack the sequences of several batches (same ``num_marks``)."""
        num_marks = max(b.num_marks for b in batches)
        flats = [b.to_flat() for b in batches]
        offsets = [0]
        for f in flats:
            offsets.extend((offsets[-1] + f["seq_offsets"][1:]).tolist())
        names = None
        if all(b.seq_names is not None for b in batches):
            names = [n for b in batches for n in b.seq_names]
        return EventBatch.from_flat(
            np.concatenate([f["times"] for f in flats]),
            np.asarray(offsets, np.int64),
            np.concatenate([f["t_start"] for f in flats]),
            np.concatenate([f["t_end"] for f in flats]),
            np.concatenate([f["marks"] for f in flats]),
            num_marks,
            seq_names=names,
            dtype=batches[0].dtype,
        )

    def to_flat(self) -> dict[str, np.ndarray]:
        """Concatenated numpy arrays: ``times``, ``marks``, ``seq_offsets``, ``t_start``, ``t_end``."""
        mask = self.mask.cpu().numpy()
        lengths = mask.sum(1)
        return {
            "times": self.time.detach().cpu().numpy().astype(np.float64)[mask],
            "marks": self.mark.cpu().numpy()[mask],
            "seq_offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            "t_start": self.t_start.detach().cpu().numpy().astype(np.float64),
            "t_end": self.t_end.detach().cpu().numpy().astype(np.float64),
        }

    def sequences(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per-sequence ``(times, marks)`` numpy arrays."""
        flat = self.to_flat()
        o = flat["seq_offsets"]
        return [(flat["times"][o[b] : o[b + 1]], flat["marks"][o[b] : o[b + 1]]) for b in range(len(self))]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EventBatch):
            return NotImplemented
        return (
            self.num_marks == other.num_marks
            and self.time.shape == other.time.shape
            and torch.equal(self.mask, other.mask)
            and torch.equal(self.time[self.mask], other.time[other.mask])
            and torch.equal(self.mark[self.mask], other.mark[other.mask])
            and torch.equal(self.t_start, other.t_start)
            and torch.equal(self.t_end, other.t_end)
        )

    __hash__ = None  # mutable tensors inside

    def __repr__(self) -> str:
        return (
            f"EventBatch(sequences={len(self)}, events={self.num_events}, num_marks={self.num_marks}, "
            f"max_length={self.max_length}, dtype={self.dtype}, device={self.device})"
        )
