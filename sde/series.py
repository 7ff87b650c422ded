"""The time-series twin of :class:`tpp.events.EventBatch`: irregular, partly observed multivariate series.

A set of series is ragged: series ``b`` has ``L_b`` observation rows at strictly increasing times, and
each row holds ``C`` channel values, NaN where that channel was not observed at that row (PhysioNet:
most channels at most rows). :class:`SeriesBatch` stores them padded and left-aligned:

* ``time``   ``[B, L]`` absolute observation times (float64 by default),
* ``values`` ``[B, L, C]`` NaN where a channel is not observed (and on every padding row),
* ``mask``   ``[B, L]`` True where a row exists,
* ``labels`` ``[B]`` class indices (classification) with their ``class_names``, or ``targets``
  ``[B, ...]`` (regression: ``[B, O]``), and optional ``ids`` (record names) for error messages.

Padding is canonical: a padding row repeats its series' last time (so ``time`` stays ordered and
finite) and holds NaN values. Hence NaN-padded input and unpadded input give equal batches.
Validation runs once, at construction, and raises :class:`SeriesDataError` (an
:class:`~tpp.events.EventDataError`) naming the series, the row and the field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import InitVar, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from tpp.events import EventDataError

__all__ = ["DEFAULT_DTYPE", "SeriesBatch", "SeriesDataError"]

DEFAULT_DTYPE = torch.float64


class SeriesDataError(EventDataError):
    """Bad time-series data; the message names the file (and line), the series, the row and the field.

    ``series`` is the series index in the batch (the record id is added to the message when known),
    ``row`` the row inside that series, ``line`` a line of the source file.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        series: int | None = None,
        series_id: Any = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        where = [str(source)] if source is not None else []
        if line is not None:
            where.append(f"line {line}")
        if series is not None:
            where.append(f"series {series}" + (f" (id {series_id!r})" if series_id is not None else ""))
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field {field!r}")
        ValueError.__init__(self, f"{', '.join(where)}: {message}" if where else message)
        # the attributes of EventDataError, so code catching either reads the same names
        self.source, self.sequence, self.position, self.row, self.field = source, series, row, row, field
        self.series, self.series_id, self.line, self.message = series, series_id, line, message

    def with_source(self, source: str) -> SeriesDataError:
        """The same error, naming ``source`` (a file) too."""
        return SeriesDataError(self.message, source=source, line=self.line, series=self.series,
                               series_id=self.series_id, row=self.row, field=self.field)


def _first(bad: Tensor) -> tuple[int, ...] | None:
    """Index of the first True entry (row-major), or None."""
    hits = torch.nonzero(bad)
    return None if hits.numel() == 0 else tuple(int(i) for i in hits[0])


@dataclass(eq=False)
class SeriesBatch:
    """Padded irregular multivariate series (see the module docstring); validated at construction.

    Build one with :meth:`from_arrays`, :meth:`from_flat` or :meth:`from_dataframe`; the padded
    constructor takes tensors as they are (``validate=False`` is for code holding a checked batch).
    """

    time: Tensor
    values: Tensor
    mask: Tensor
    labels: Tensor | None = None
    targets: Tensor | None = None
    channel_names: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    ids: tuple[str, ...] | None = None
    validate: InitVar[bool] = True

    def __post_init__(self, validate: bool) -> None:
        fail = SeriesDataError
        if self.time.dim() != 2 or not self.time.is_floating_point():
            raise fail(f"time must be a floating [B, L] tensor, got {self.time.dtype} {tuple(self.time.shape)}",
                       field="time")
        B, L = self.time.shape
        if self.values.dim() == 2:  # univariate given as [B, L]
            self.values = self.values[..., None]
        if self.values.dim() != 3 or tuple(self.values.shape[:2]) != (B, L):
            raise fail(f"values must be [B, L, C] = [{B}, {L}, C], got {tuple(self.values.shape)}", field="values")
        if tuple(self.mask.shape) != (B, L):
            raise fail(f"mask must be [B, L] = [{B}, {L}], got {tuple(self.mask.shape)}", field="mask")
        self.mask = self.mask.to(torch.bool)
        self.values = self.values.to(self.time.dtype)
        C = self.values.shape[2]
        self.channel_names = tuple(str(c) for c in self.channel_names) or tuple(f"x{c}" for c in range(C))
        if len(self.channel_names) != C:
            raise fail(f"{len(self.channel_names)} channel_names for {C} channels", field="channel_names")
        self.class_names = tuple(str(c) for c in self.class_names)
        if self.ids is not None:
            self.ids = tuple(str(i) for i in self.ids)
            if len(self.ids) != B:
                raise fail(f"{len(self.ids)} ids for {B} series", field="ids")
        if self.labels is not None:
            self.labels = torch.as_tensor(self.labels, device=self.time.device)
            if self.labels.shape != (B,) or self.labels.is_floating_point() or self.labels.is_complex():
                raise fail(f"labels must be integer [B] = [{B}], got {self.labels.dtype} {tuple(self.labels.shape)}",
                           field="labels")
            self.labels = self.labels.long()
        if self.targets is not None:
            self.targets = torch.as_tensor(self.targets, device=self.time.device).to(self.time.dtype)
            if self.targets.dim() == 0 or self.targets.shape[0] != B:
                raise fail(f"targets must be [B, ...] with B = {B}, got {tuple(self.targets.shape)}", field="targets")
        if validate:
            self._check()
            last = self.time.gather(1, (self.lengths - 1).clamp(min=0)[:, None])
            self.time = torch.where(self.mask, self.time, last)
            self.values = torch.where(self.mask[..., None], self.values, torch.full_like(self.values, float("nan")))

    def _fail(self, b: int, message: str, row: int | None = None, field: str | None = None) -> SeriesDataError:
        return SeriesDataError(message, series=b, series_id=None if self.ids is None else self.ids[b], row=row,
                               field=field)

    def _check(self) -> None:
        """Vectorised checks; raise on the first offending series/row (row-major order)."""
        mask, time, values = self.mask, self.time, self.values
        lengths = mask.sum(1)
        arange = torch.arange(mask.shape[1], device=mask.device)
        hit = _first(mask != (arange[None, :] < lengths[:, None]))
        if hit is not None:
            raise self._fail(hit[0], "mask must be left-aligned: rows first, then padding", hit[1], "mask")
        hit = _first(lengths == 0)
        if hit is not None:
            raise self._fail(hit[0], "series has no rows", field="mask")
        hit = _first(mask & ~torch.isfinite(time))
        if hit is not None:
            raise self._fail(hit[0], f"time is {float(time[hit])}, must be finite", hit[1], "time")
        if time.shape[1] > 1:
            both = mask[:, 1:] & mask[:, :-1]
            hit = _first(both & ~(time[:, 1:] > time[:, :-1]))
            if hit is not None:
                b, r = hit[0], hit[1] + 1
                raise self._fail(b, f"times must be strictly increasing: {float(time[b, r])!r} comes after "
                                 f"{float(time[b, r - 1])!r}", r, "time")
        hit = _first(mask[..., None] & torch.isinf(values))
        if hit is not None:
            b, r, c = hit
            raise self._fail(b, f"value is {float(values[b, r, c])} in channel {self.channel_names[c]!r}; values must "
                             "be finite or NaN (missing)", r, "values")
        if self.labels is not None and len(self):
            hit = _first(self.labels < 0)
            if hit is not None:
                raise self._fail(hit[0], f"label {int(self.labels[hit])} is negative", field="labels")
            if self.class_names:
                hit = _first(self.labels >= len(self.class_names))
                if hit is not None:
                    raise self._fail(hit[0], f"label {int(self.labels[hit])} >= number of classes "
                                     f"{len(self.class_names)} ({list(self.class_names)})", field="labels")
        if self.targets is not None:
            hit = _first(torch.isinf(self.targets).reshape(len(self), -1))
            if hit is not None:
                raise self._fail(hit[0], "targets must be finite or NaN", field="targets")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_flat(
        cls,
        times: np.ndarray,
        values: np.ndarray,
        offsets: np.ndarray,
        labels: np.ndarray | Sequence[int] | None = None,
        *,
        targets: np.ndarray | None = None,
        channel_names: Sequence[str] = (),
        class_names: Sequence[str] = (),
        ids: Sequence[Any] | None = None,
        dtype: torch.dtype = DEFAULT_DTYPE,
        source: str | None = None,
    ) -> SeriesBatch:
        """Build from concatenated rows: ``times [N]``, ``values [N, C]``, ``offsets [B + 1]`` (series
        ``b`` = rows ``offsets[b]:offsets[b + 1]``). ``source`` names the origin in error messages."""
        times = np.asarray(times, np.float64).reshape(-1)
        values = np.asarray(values, np.float64)
        values = values.reshape(times.size, -1) if values.ndim < 2 else values
        offsets = np.asarray(offsets, np.int64)
        if values.ndim != 2 or values.shape[0] != times.size:
            raise SeriesDataError(f"values must be [N, C] with N = {times.size} rows, got {values.shape}",
                                  source=source, field="values")
        if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0 or offsets[-1] != times.size or np.any(
                np.diff(offsets) < 0):
            raise SeriesDataError("offsets must start at 0, be non-decreasing and end at the number of rows",
                                  source=source, field="offsets")
        lengths = np.diff(offsets)
        B, L, C = lengths.size, int(lengths.max(initial=0)), values.shape[1]
        mask = np.arange(L)[None, :] < lengths[:, None]
        time_pad = np.zeros((B, L))
        value_pad = np.full((B, L, C), np.nan)
        time_pad[mask] = times
        value_pad[mask] = values
        try:
            return cls(torch.from_numpy(time_pad).to(dtype), torch.from_numpy(value_pad).to(dtype),
                       torch.from_numpy(mask), None if labels is None else torch.as_tensor(np.asarray(labels)),
                       None if targets is None else torch.as_tensor(np.asarray(targets, np.float64)).to(dtype),
                       tuple(channel_names), tuple(class_names), None if ids is None else tuple(ids))
        except SeriesDataError as err:
            if source is None or err.source is not None:
                raise
            raise err.with_source(source) from None

    @classmethod
    def from_arrays(
        cls,
        series: Sequence[tuple[Any, Any]],
        labels: Sequence[Any] | np.ndarray | None = None,
        *,
        targets: Any = None,
        channel_names: Sequence[str] = (),
        class_names: Sequence[str] = (),
        ids: Sequence[Any] | None = None,
        dtype: torch.dtype = DEFAULT_DTYPE,
        source: str | None = None,
    ) -> SeriesBatch:
        """Build from one ``(times [L_i], values [L_i, C] or [L_i])`` pair per series.

        Trailing rows whose time is NaN are padding and are dropped (their values must be NaN too), so
        NaN-padded arrays give the same batch as unpadded ones. ``labels`` may be integers (class
        indices) or names: names map to indices of ``class_names`` (default: the sorted distinct names).
        """
        ts, vs = [], []
        for i, item in enumerate(series):
            t = np.asarray(item[0], np.float64).reshape(-1)
            v = np.asarray(item[1], np.float64)
            v = v[:, None] if v.ndim == 1 else v
            if v.ndim != 2 or v.shape[0] != t.size:
                raise SeriesDataError(f"values must be [L, C] with L = {t.size} (the number of times), got {v.shape}",
                                      source=source, series=i, field="values")
            if vs and v.shape[1] != vs[0].shape[1]:
                raise SeriesDataError(f"{v.shape[1]} channels, but series 0 has {vs[0].shape[1]}", source=source,
                                      series=i, field="values")
            pad = np.flatnonzero(np.isnan(t))
            if pad.size:
                k = int(pad[0])
                later = np.flatnonzero(~np.isnan(t[k:]))
                if later.size:
                    raise SeriesDataError(f"time is NaN but row {k + int(later[0])} after it has a time: NaN times "
                                          "mark padding and must come last", source=source, series=i, row=k,
                                          field="time")
                filled = np.flatnonzero(~np.isnan(v[k:]).all(1))
                if filled.size:
                    raise SeriesDataError("padding row (NaN time) holds values", source=source, series=i,
                                          row=k + int(filled[0]), field="values")
                t, v = t[:k], v[:k]
            ts.append(t)
            vs.append(v)
        if not ts:
            raise SeriesDataError("no series: the input is empty", source=source)
        offsets = np.concatenate([[0], np.cumsum([t.size for t in ts])])
        label_idx, names = _label_indices(labels, class_names, source)
        return cls.from_flat(np.concatenate(ts), np.concatenate(vs), offsets, label_idx, targets=targets,
                             channel_names=channel_names, class_names=names, ids=ids, dtype=dtype, source=source)

    @classmethod
    def from_dataframe(
        cls,
        df: pd.DataFrame,
        id_col: str,
        time_col: str,
        value_cols: Sequence[str],
        label_col: str | None = None,
        *,
        class_names: Sequence[str] = (),
        dtype: torch.dtype = DEFAULT_DTYPE,
        source: str | None = None,
    ) -> SeriesBatch:
        """Build from a long table: one row per observation time of one series (``id_col``).

        Series keep the order of their first row; rows keep their table order and must already be
        sorted by time (an unsorted series raises, naming it, its row and the table row). NaN cells
        are missing values. ``label_col`` must be constant within a series.
        """
        missing = [c for c in (id_col, time_col, *value_cols, *([label_col] if label_col else [])) if c not in df]
        if missing:
            raise SeriesDataError(f"no column(s) {missing} in the table (columns: {list(df.columns)})", source=source,
                                  field=missing[0])
        codes, uniques = pd.factorize(df[id_col], sort=False)
        order = np.argsort(codes, kind="stable")
        times = _numeric(df[time_col], source, time_col)[order]
        values = np.stack([_numeric(df[c], source, c) for c in value_cols], axis=1)[order] if value_cols else \
            np.zeros((len(df), 0))
        offsets = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(uniques)))])
        seq_of = codes[order]
        same = seq_of[1:] == seq_of[:-1]
        bad = np.flatnonzero(same & ~(times[1:] > times[:-1]))
        if bad.size:
            i = int(bad[0]) + 1
            b = int(seq_of[i])
            raise SeriesDataError(f"times must be strictly increasing within a series: {times[i]!r} comes after "
                                  f"{times[i - 1]!r} (table row {df.index[order[i]]!r})", source=source, series=b,
                                  series_id=uniques[b], row=int(i - offsets[b]), field=time_col)
        labels = None
        if label_col is not None:
            lab = df[label_col].to_numpy()[order]
            first = lab[offsets[:-1]]
            differs = np.flatnonzero(lab != np.repeat(first, np.diff(offsets)))
            if differs.size:
                i = int(differs[0])
                b = int(seq_of[i])
                raise SeriesDataError(f"label {lab[i]!r} differs from the series' first label {first[b]!r}",
                                      source=source, series=b, series_id=uniques[b], row=int(i - offsets[b]),
                                      field=label_col)
            labels = first
        label_idx, names = _label_indices(labels, class_names, source)
        return cls.from_flat(times, values, offsets, label_idx, channel_names=[str(c) for c in value_cols],
                             class_names=names, ids=[str(u) for u in uniques], dtype=dtype, source=source)

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return self.time.shape[0]

    @property
    def max_length(self) -> int:
        return self.time.shape[1]

    @property
    def lengths(self) -> Tensor:
        """Number of rows per series, ``[B]`` long."""
        return self.mask.sum(1)

    @property
    def num_events(self) -> int:
        """Number of rows that exist (the trainer normalises the loss by it)."""
        return int(self.mask.sum())

    @property
    def num_channels(self) -> int:
        return self.values.shape[2]

    @property
    def num_classes(self) -> int | None:
        """``len(class_names)`` (or ``max label + 1`` without names); None without labels."""
        if self.labels is None:
            return None
        if self.class_names:
            return len(self.class_names)
        return int(self.labels.max()) + 1 if len(self) else 0

    @property
    def observed(self) -> Tensor:
        """``[B, L, C]`` bool: the channel was observed at that row (row exists and value not NaN)."""
        return self.mask[..., None] & ~torch.isnan(self.values)

    @property
    def device(self) -> torch.device:
        return self.time.device

    @property
    def dtype(self) -> torch.dtype:
        return self.time.dtype

    def _with(self, **fields: Any) -> SeriesBatch:
        base = {k: getattr(self, k) for k in ("time", "values", "mask", "labels", "targets", "channel_names",
                                              "class_names", "ids")}
        return SeriesBatch(**{**base, **fields}, validate=False)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> SeriesBatch:
        """Move to a device and/or change the float dtype (time, values, targets); mask and labels keep theirs."""
        dtype = dtype or self.dtype
        return self._with(
            time=self.time.to(device=device, dtype=dtype),
            values=self.values.to(device=device, dtype=dtype),
            mask=self.mask.to(device),
            labels=None if self.labels is None else self.labels.to(device),
            targets=None if self.targets is None else self.targets.to(device=device, dtype=dtype),
        )

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray | Tensor) -> SeriesBatch:
        """Select series (never rows): ``batch[3]``, ``batch[2:5]``, ``batch[np.array([0, 4])]``, a bool mask.

        The result is trimmed to the longest selected series."""
        if isinstance(index, (int, np.integer)):
            idx = torch.arange(len(self))[int(index)].reshape(1)
        elif isinstance(index, slice):
            idx = torch.arange(len(self))[index]
        else:
            idx = torch.as_tensor(np.asarray(index.cpu() if isinstance(index, Tensor) else index))
            if idx.dtype == torch.bool:
                if idx.shape != (len(self),):
                    raise IndexError(f"boolean index of shape {tuple(idx.shape)} for {len(self)} series")
                idx = torch.nonzero(idx).flatten()
            idx = idx.long().reshape(-1)
            idx = torch.where(idx < 0, idx + len(self), idx)
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
                raise IndexError(f"series index out of range for {len(self)} series")
        cpu_idx = idx
        idx = idx.to(self.device)
        max_len = int(self.lengths[idx].max()) if idx.numel() else 0
        return self._with(
            time=self.time[idx, :max_len],
            values=self.values[idx, :max_len],
            mask=self.mask[idx, :max_len],
            labels=None if self.labels is None else self.labels[idx],
            targets=None if self.targets is None else self.targets[idx],
            ids=None if self.ids is None else tuple(self.ids[int(i)] for i in cpu_idx),
        )

    def split(
        self, fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0, stratify: bool = True
    ) -> tuple[SeriesBatch, ...]:
        """Split by series into parts of the given fractions, shuffled with ``seed``.

        With labels and ``stratify``, every class is split in the same fractions, up to one series per
        class (as the reference codes' ``train_test_split(..., stratify=y)``); without, part ``k`` gets
        ``round(fraction_k * B)`` series. The split depends only on ``(len, labels, fractions, seed)``,
        so it is reproducible; each part keeps the original series order.
        """
        frac = np.asarray(fractions, np.float64)
        if frac.ndim != 1 or np.any(frac < 0) or not np.isclose(frac.sum(), 1.0):
            raise ValueError(f"fractions must be non-negative and sum to 1, got {frac.tolist()}")
        rng = np.random.default_rng(seed)
        strata = stratify and self.labels is not None
        labels = self.labels.cpu().numpy() if strata else np.zeros(len(self), np.int64)
        part = np.empty(len(self), np.int64)
        cuts = np.cumsum(frac)[:-1]
        for c in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == c))
            # systematic allocation: member j sits at (j + u) / n in [0, 1); with a random offset u per
            # class, every class gets floor or ceil of fraction * n_c series in each part
            u = rng.random() if strata else 0.5
            part[members] = np.searchsorted(cuts, (np.arange(members.size) + u) / members.size, side="right")
        out = [np.flatnonzero(part == k) for k in range(frac.size)]
        if any(p.size == 0 for p in out):
            raise ValueError(f"cannot split {len(self)} series into fractions {frac.tolist()}: a part would be empty")
        return tuple(self[p] for p in out)

    @staticmethod
    def concat(batches: Sequence[SeriesBatch]) -> SeriesBatch:
        """Stack the series of several batches (same channels, same classes; labels/targets in all or none)."""
        if not batches:
            raise ValueError("concat needs at least one batch")
        first = batches[0]
        for k, b in enumerate(batches[1:], 1):
            if b.channel_names != first.channel_names:
                raise ValueError(f"batch {k} has channels {b.channel_names}, batch 0 has {first.channel_names}")
            if (b.labels is None) != (first.labels is None) or b.class_names != first.class_names:
                raise ValueError(f"batch {k} has other labels/classes than batch 0")
            if (b.targets is None) != (first.targets is None):
                raise ValueError(f"batch {k} has targets where batch 0 has none, or the reverse")
        L = max(b.max_length for b in batches)

        def pad(x: Tensor, fill: float | bool) -> Tensor:
            widths = [0, 0] * (x.dim() - 2) + [0, L - x.shape[1]]
            return torch.nn.functional.pad(x, widths, value=fill)

        ids = None
        if all(b.ids is not None for b in batches):
            ids = tuple(i for b in batches for i in b.ids)
        cat = SeriesBatch(
            torch.cat([pad(b.time.to(first.dtype), 0.0) for b in batches]),
            torch.cat([pad(b.values.to(first.dtype), float("nan")) for b in batches]),
            torch.cat([pad(b.mask, False) for b in batches]),
            None if first.labels is None else torch.cat([b.labels for b in batches]),
            None if first.targets is None else torch.cat([b.targets.to(first.dtype) for b in batches]),
            first.channel_names, first.class_names, ids, validate=False,
        )
        last = cat.time.gather(1, (cat.lengths - 1)[:, None])  # re-canonicalise the new padding
        cat.time = torch.where(cat.mask, cat.time, last)
        return cat

    def series(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per-series ``(times [L_b], values [L_b, C])`` numpy arrays (the inverse of :meth:`from_arrays`)."""
        time = self.time.detach().cpu().numpy().astype(np.float64)
        values = self.values.detach().cpu().numpy().astype(np.float64)
        return [(time[b, :n], values[b, :n]) for b, n in enumerate(self.lengths.tolist())]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SeriesBatch):
            return NotImplemented

        def same(a: Tensor | None, b: Tensor | None) -> bool:
            if a is None or b is None:
                return a is None and b is None
            return a.shape == b.shape and bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all()) \
                if a.is_floating_point() else torch.equal(a, b)

        return (
            self.time.shape == other.time.shape and torch.equal(self.mask, other.mask)
            and same(self.time[self.mask], other.time[other.mask])
            and same(self.values[self.mask], other.values[other.mask])
            and same(self.labels, other.labels) and same(self.targets, other.targets)
            and self.channel_names == other.channel_names and self.class_names == other.class_names
            and self.ids == other.ids
        )

    __hash__ = None  # type: ignore[assignment]  # mutable tensors inside

    def __repr__(self) -> str:
        extra = f", classes={self.num_classes}" if self.labels is not None else ""
        extra += f", targets={tuple(self.targets.shape[1:])}" if self.targets is not None else ""
        return (f"SeriesBatch(series={len(self)}, rows={self.num_events}, channels={self.num_channels}, "
                f"max_length={self.max_length}{extra}, dtype={self.dtype}, device={self.device})")


def _numeric(column: pd.Series, source: str | None, name: str) -> np.ndarray:
    """A numeric table column as float64 (blank cells NaN); other text raises naming the row."""
    if column.dtype.kind in "fiub":
        return column.to_numpy(np.float64)
    parsed = pd.to_numeric(column, errors="coerce")
    bad = np.flatnonzero(parsed.isna().to_numpy() & column.notna().to_numpy())
    if bad.size:
        raise SeriesDataError(f"{column.iloc[bad[0]]!r} is not a number (table row {column.index[bad[0]]!r})",
                              source=source, field=name)
    return parsed.to_numpy(np.float64)


def _label_indices(
    labels: Sequence[Any] | np.ndarray | None, class_names: Sequence[str], source: str | None
) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """Integer labels as they are; names mapped to ``class_names`` (default: sorted distinct names)."""
    if labels is None:
        return None, tuple(class_names)
    arr = np.asarray(labels)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64), tuple(class_names)
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)) and not class_names:
        return arr.astype(np.int64), ()
    names = tuple(str(c) for c in class_names) or tuple(sorted({str(x) for x in arr.tolist()}))
    lookup: Mapping[str, int] = {n: i for i, n in enumerate(names)}
    out = np.empty(arr.size, np.int64)
    for i, x in enumerate(arr.reshape(-1).tolist()):
        if str(x) not in lookup:
            raise SeriesDataError(f"label {x!r} is not one of the classes {list(names)}", source=source, series=i,
                                  field="labels")
        out[i] = lookup[str(x)]
    return out, names
