"""The time-series twin of :class:`tpp.events.EventBatch`: irregular, partly observed multivariate series.

A set of series is ragged: series ``b`` has ``L_b`` observation rows at strictly increasing times, and
each row holds ``C`` channel values, NaN where that channel was not observed at that row (PhysioNet:
most channels at most rows). :class:`SeriesBatch` (a :class:`tpp.batch.PaddedBatch`, like
``EventBatch``) stores them padded and left-aligned:

* ``time``   ``[B, L]`` absolute observation times (float64 by default),
* ``values`` ``[B, L, C]`` NaN where a channel is not observed (and on every padding row),
* ``mask``   ``[B, L]`` True where a row exists,
* ``labels`` ``[B]`` class indices (classification) with their ``class_names``, or ``targets``
  ``[B, ...]`` (regression: ``[B, O]``), and optional ``seq_names`` (record names; ``ids`` is an alias).

Padding is canonical: a padding row repeats its series' last time (so ``time`` stays ordered and
finite) and holds NaN values. Hence NaN-padded input and unpadded input give equal batches.
Device moves, indexing, splits (stratified by label), concatenation and equality (NaN equals NaN)
come from the base class. Validation runs once, at construction, and raises
:class:`SeriesDataError` (an :class:`~tpp.events.EventDataError`) naming the series, the row and the field.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import InitVar, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from tpp.batch import PaddedBatch, allocate, check_offsets, first_true, pad_flat
from tpp.events import EventDataError

__all__ = ["DEFAULT_DTYPE", "SeriesBatch", "SeriesDataError"]

DEFAULT_DTYPE = torch.float64


class SeriesDataError(EventDataError):
    """Bad time-series data; the message names the file (and line), the series, the row and the field.

    ``series`` is the series index in the batch (the record id ``series_id`` is added to the message
    when known), ``row`` the row inside that series (also ``position``), ``line`` a line of the source file.
    """

    noun, name_noun, position_noun = "series", "id", "row"

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
        super().__init__(message, source=source, line=line, sequence=series, sequence_name=series_id, position=row,
                         field=field)
        self.row = row  # the row inside the series: the position of the event vocabulary
        self.series, self.series_id = series, series_id

    @classmethod
    def at(
        cls, message: str, *, index: int, name: Any = None, position: int | None = None, field: str | None = None,
        source: str | None = None,
    ) -> SeriesDataError:
        return cls(message, source=source, series=index, series_id=name, row=position, field=field)


@dataclass(eq=False, repr=False, init=False)
class SeriesBatch(PaddedBatch):
    """Padded irregular multivariate series (see the module docstring); validated at construction.

    Build one with :meth:`from_arrays`, :meth:`from_flat` or :meth:`from_dataframe`; the padded
    constructor takes tensors as they are (``validate=False`` is for code holding a checked batch).
    ``ids=`` is an alias of ``seq_names=``.
    """

    error = SeriesDataError
    row_fields = {"time": 0.0, "values": float("nan"), "mask": False}
    sequence_fields = ("labels", "targets")
    meta_fields = ("channel_names", "class_names")
    float_fields = frozenset({"time", "values", "targets"})
    sequence_view = ("time", "values")
    noun, row_noun = "series", "rows"

    time: Tensor
    values: Tensor
    mask: Tensor
    labels: Tensor | None = None
    targets: Tensor | None = None
    channel_names: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    seq_names: tuple[str, ...] | None = None
    validate: InitVar[bool] = True

    def __init__(
        self,
        time: Tensor,
        values: Tensor,
        mask: Tensor,
        labels: Tensor | None = None,
        targets: Tensor | None = None,
        channel_names: Sequence[str] = (),
        class_names: Sequence[str] = (),
        seq_names: Sequence[Any] | None = None,
        validate: bool = True,
        *,
        ids: Sequence[Any] | None = None,
    ) -> None:
        if ids is not None and seq_names is not None:
            raise TypeError("give seq_names or its alias ids, not both")
        for name, tensor in (("time", time), ("values", values), ("mask", mask), ("labels", labels),
                             ("targets", targets)):
            if not isinstance(tensor, torch.Tensor) and (tensor is not None or name in ("time", "values", "mask")):
                # a list or a number once failed with an AttributeError
                raise TypeError(f"SeriesBatch({name}=...) must be a torch.Tensor, got {type(tensor).__name__} (build "
                                "from arrays with SeriesBatch.from_arrays or SeriesBatch.from_flat)")
        self.time, self.values, self.mask, self.labels, self.targets = time, values, mask, labels, targets
        self.channel_names, self.class_names = channel_names, class_names  # type: ignore[assignment]
        self.seq_names = seq_names if ids is None else ids  # type: ignore[assignment]
        self.__post_init__(validate)

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
        if self.seq_names is not None:
            self.seq_names = tuple(str(i) for i in self.seq_names)
        self._check_names()
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
            self._canonicalise_padding()

    def _check(self) -> None:
        """Vectorised checks; raise on the first offending series/row (row-major order)."""
        mask, time, values = self.mask, self.time, self.values
        self._check_left_aligned()
        hit = first_true(self.lengths == 0)
        if hit is not None:
            raise self._error(hit[0], "series has no rows", field="mask")
        hit = first_true(mask & ~torch.isfinite(time))
        if hit is not None:
            raise self._error(hit[0], f"time is {float(time[hit])}, must be finite", hit[1], "time")
        if time.shape[1] > 1:
            both = mask[:, 1:] & mask[:, :-1]
            hit = first_true(both & ~(time[:, 1:] > time[:, :-1]))
            if hit is not None:
                b, r = hit[0], hit[1] + 1
                raise self._error(b, f"times must be strictly increasing: {float(time[b, r])!r} comes after "
                                  f"{float(time[b, r - 1])!r}", r, "time")
        hit = first_true(mask[..., None] & torch.isinf(values))
        if hit is not None:
            b, r, c = hit
            raise self._error(b, f"value is {float(values[b, r, c])} in channel {self.channel_names[c]!r}; values "
                              "must be finite or NaN (missing)", r, "values")
        if self.labels is not None and len(self):
            hit = first_true(self.labels < 0)
            if hit is not None:
                raise self._error(hit[0], f"label {int(self.labels[hit])} is negative", field="labels")
            if self.class_names:
                hit = first_true(self.labels >= len(self.class_names))
                if hit is not None:
                    raise self._error(hit[0], f"label {int(self.labels[hit])} >= number of classes "
                                      f"{len(self.class_names)} ({list(self.class_names)})", field="labels")
        if self.targets is not None:
            hit = first_true(torch.isinf(self.targets).reshape(len(self), -1))
            if hit is not None:
                raise self._error(hit[0], "targets must be finite or NaN", field="targets")

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
        seq_names: Sequence[Any] | None = None,
        ids: Sequence[Any] | None = None,
        dtype: torch.dtype = DEFAULT_DTYPE,
        source: str | None = None,
    ) -> SeriesBatch:
        """Build from concatenated rows: ``times [N]``, ``values [N, C]``, ``offsets [B + 1]`` (series
        ``b`` = rows ``offsets[b]:offsets[b + 1]``). ``source`` names the origin in error messages;
        ``ids`` is an alias of ``seq_names``. Labels must not be missing (NaN/None raise naming the series);
        a series without any observed value is announced by a warning."""
        times = np.asarray(times, np.float64).reshape(-1)
        values = np.asarray(values, np.float64)
        values = values.reshape(times.size, -1) if values.ndim < 2 else values
        if values.ndim != 2 or values.shape[0] != times.size:
            raise SeriesDataError(f"values must be [N, C] with N = {times.size} rows, got {values.shape}",
                                  source=source, field="values")
        offsets = check_offsets(offsets, times.size, SeriesDataError, source, "offsets")
        names = ids if seq_names is None else seq_names
        if labels is not None:  # a missing label is refused here, not made a class of its own
            labels, class_names = _label_indices(labels, class_names, source, names)
        empty = unobserved_series(values, offsets)
        if empty.size:
            shown = ", ".join(repr(names[b]) if names is not None and b < len(names) else str(int(b))
                              for b in empty[:5])
            warnings.warn(
                f"{source + ': ' if source else ''}{empty.size} series without any observed value ({shown}"
                f"{', ...' if empty.size > 5 else ''}): a model sees only their times; drop them with "
                "batch[batch.observed.flatten(1).any(1)]", UserWarning, stacklevel=2)
        time_pad, mask = pad_flat(times, offsets, 0.0)
        value_pad = pad_flat(values, offsets, np.nan)[0]
        try:
            return cls(torch.from_numpy(time_pad).to(dtype), torch.from_numpy(value_pad).to(dtype),
                       torch.from_numpy(mask), None if labels is None else torch.as_tensor(np.asarray(labels)),
                       None if targets is None else torch.as_tensor(np.asarray(targets, np.float64)).to(dtype),
                       tuple(channel_names), tuple(class_names), None if names is None else tuple(names))
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
        seq_names: Sequence[Any] | None = None,
        ids: Sequence[Any] | None = None,
        dtype: torch.dtype = DEFAULT_DTYPE,
        source: str | None = None,
        allow_unobserved: bool = True,
    ) -> SeriesBatch:
        """Build from one ``(times [L_i], values [L_i, C] or [L_i])`` pair per series.

        Trailing rows whose time is NaN are padding and are dropped (their values must be NaN too), so
        NaN-padded arrays give the same batch as unpadded ones. ``labels`` may be integers (class
        indices) or names: names map to indices of ``class_names`` (default: the sorted distinct names);
        a missing label (NaN, None) raises naming the series. A series without any observed value
        raises with ``allow_unobserved=False`` (what the readers pass), else a warning names it.
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
        record_ids = ids if seq_names is None else seq_names
        if not allow_unobserved:
            _refuse_unobserved(np.concatenate(vs), offsets, record_ids, source)
        label_idx, names = _label_indices(labels, class_names, source, record_ids)
        return cls.from_flat(np.concatenate(ts), np.concatenate(vs), offsets, label_idx, targets=targets,
                             channel_names=channel_names, class_names=names,
                             seq_names=ids if seq_names is None else seq_names, dtype=dtype, source=source)

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
        are missing values; a series with no observed value raises, naming it. ``label_col`` must be
        constant within a series and never missing.
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
            absent = np.flatnonzero(pd.isna(lab))
            if absent.size:
                i = int(absent[0])
                b = int(seq_of[i])
                raise SeriesDataError(f"label is missing ({lab[i]!r}); every series needs one", source=source,
                                      series=b, series_id=uniques[b], row=int(i - offsets[b]), field="labels")
            first = lab[offsets[:-1]]
            differs = np.flatnonzero(lab != np.repeat(first, np.diff(offsets)))
            if differs.size:
                i = int(differs[0])
                b = int(seq_of[i])
                raise SeriesDataError(f"label {lab[i]!r} differs from the series' first label {first[b]!r}",
                                      source=source, series=b, series_id=uniques[b], row=int(i - offsets[b]),
                                      field=label_col)
            labels = first
        _refuse_unobserved(values, offsets, [str(u) for u in uniques], source)
        label_idx, names = _label_indices(labels, class_names, source, [str(u) for u in uniques])
        return cls.from_flat(times, values, offsets, label_idx, channel_names=[str(c) for c in value_cols],
                             class_names=names, seq_names=[str(u) for u in uniques], dtype=dtype, source=source)

    # ------------------------------------------------------------------ views
    @property
    def ids(self) -> tuple[str, ...] | None:
        """Alias of :attr:`seq_names` (the record names)."""
        return self.seq_names

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

    _with = PaddedBatch._replace  # the older name

    def _strata(self) -> np.ndarray | None:
        """Labels are strata: :meth:`split` splits every class in the same fractions."""
        return None if self.labels is None else self.labels.cpu().numpy()

    def _parts_without_strata(self, rng: np.random.Generator, fractions: np.ndarray) -> np.ndarray:
        """One permutation, allocated at offset 1/2 (this family's unstratified split since its first version)."""
        part = np.empty(len(self), np.int64)
        part[rng.permutation(len(self))] = allocate(len(self), fractions, 0.5)
        return part

    def series(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Alias of :meth:`sequences`: per-series ``(times [L_b], values [L_b, C])`` (inverts :meth:`from_arrays`)."""
        return self.sequences()  # type: ignore[return-value]

    def _repr_counts(self) -> dict[str, Any]:
        counts: dict[str, Any] = {"channels": self.num_channels}
        if self.labels is not None:
            counts["classes"] = self.num_classes
        if self.targets is not None:
            counts["targets"] = tuple(self.targets.shape[1:])
        return counts


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


def unobserved_series(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Indices of the series (rows ``offsets[b]:offsets[b + 1]`` of ``values [N, C]``) without any observed value."""
    values = np.asarray(values)
    if values.ndim == 2 and values.shape[1] == 0:  # no channels: nothing could be observed, nothing to warn of
        return np.zeros(0, np.int64)
    observed = ~np.isnan(values.reshape(values.shape[0], -1)).all(1) if values.size else np.zeros(values.shape[0], bool)
    running = np.concatenate([[0], np.cumsum(observed)])
    counts = running[offsets[1:]] - running[offsets[:-1]]
    return np.flatnonzero((counts == 0) & (np.diff(offsets) > 0))  # a series without rows is refused elsewhere


def _refuse_unobserved(values: np.ndarray, offsets: np.ndarray, ids: Sequence[Any] | None, source: str | None) -> None:
    """Refuse series whose every value is missing (as :func:`sde.readers.read_ts` does), naming the first."""
    empty = unobserved_series(values, offsets)
    if empty.size:
        b = int(empty[0])
        raise SeriesDataError(f"every value is missing ({empty.size} such series)", source=source, series=b,
                              series_id=None if ids is None or b >= len(ids) else ids[b], field="values")


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # arrays and other non-scalars are not a missing scalar
        return False


def _label_indices(
    labels: Sequence[Any] | np.ndarray | Tensor | None, class_names: Sequence[str], source: str | None,
    ids: Sequence[Any] | None = None,
) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """Integer labels as they are; names mapped to ``class_names`` (default: sorted distinct names).

    A missing label (NaN, None) is refused naming its series, never turned into a class of its own."""
    if labels is None:
        return None, tuple(class_names)
    # look before np.asarray: it would write a NaN among names as the text "nan"
    raw = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else labels
    arr = np.asarray(raw)
    if arr.ndim == 1:
        items = list(raw) if not isinstance(raw, np.ndarray) else raw.tolist() if raw.dtype.kind in "fO" else []
        absent = [i for i, x in enumerate(items) if _is_missing(x)]
        if absent:
            b = absent[0]
            raise SeriesDataError(f"label is missing ({items[b]!r}); every series needs one", source=source, series=b,
                                  series_id=None if ids is None or b >= len(ids) else ids[b], field="labels")
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
