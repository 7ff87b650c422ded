"""The batch base of both families: ragged sequences padded left-aligned to ``[B, L]``, and one error type.

A set of sequences (event sequences, observed series) is ragged: sequence ``b`` has ``L_b`` rows. A
:class:`PaddedBatch` stores them padded to the longest, left-aligned:

* ``time`` ``[B, L]`` absolute times of the rows (float64 by default),
* ``mask`` ``[B, L]`` True where a row exists (rows first, then padding),
* per-row fields ``[B, L, ...]`` and per-sequence fields ``[B, ...]`` that a subclass declares,
* ``seq_names`` (optional): one name per sequence, for error messages and bookkeeping.

A subclass declares its fields as class attributes (as ``torch.distributions`` declares
``arg_constraints``): :attr:`~PaddedBatch.row_fields` (name -> padding fill),
:attr:`~PaddedBatch.sequence_fields`, :attr:`~PaddedBatch.meta_fields` and which of them follow the
float dtype. Device and dtype moves, indexing, seeded splits, concatenation, equality and the
per-sequence view are then written once, here; :class:`tpp.events.EventBatch` and
:class:`sde.series.SeriesBatch` keep only their own fields and checks.

Bad data raises a :class:`DataError` (a ``ValueError``) whose message names the file, the
sequence (index and/or name), the row or position and the field.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import Tensor

__all__ = ["DataError", "PaddedBatch", "Index", "allocate", "first_true", "check_offsets", "pad_flat"]

Index = int | slice | Sequence[int] | np.ndarray | Tensor
"""What selects sequences of a batch: an int, a slice, integer indices or a boolean mask."""

B = TypeVar("B", bound="PaddedBatch")


class DataError(ValueError):
    """Bad data; the message names the file (``source``), file ``line``, the sequence, position/row and field.

    ``sequence`` is the sequence's label (its name, or its index in the batch), ``sequence_name`` an
    extra name shown beside an index, ``position`` the index of the row inside its sequence and
    ``row`` the row of the source table. Every reader and batch of both packages raises a subclass.
    """

    noun: ClassVar[str] = "sequence"  # what one entry of the batch is called in messages
    name_noun: ClassVar[str] = "name"  # what its extra name is called
    position_noun: ClassVar[str] = "position"  # what a row inside a sequence is called

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        sequence: Any = None,
        sequence_name: Any = None,
        position: int | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.detail = self.message = message  # without the location, so a wrapper can re-locate it
        self.source, self.line, self.sequence, self.sequence_name = source, line, sequence, sequence_name
        self.position, self.row, self.field = position, row, field
        where = [f"line {line}"] if line is not None else []
        if sequence is not None:
            named = f" ({self.name_noun} {sequence_name!r})" if sequence_name is not None else ""
            where.append(f"{self.noun} {sequence!r}{named}")
        where += [f"{self.position_noun} {position}"] if position is not None else []
        where += [f"row {row}"] if row is not None else []
        where += [f"field {field!r}"] if field is not None else []
        self._where = where  # fixed here: subclasses may rename attributes afterwards
        super().__init__(self._text())

    def _text(self) -> str:
        where = ([str(self.source)] if self.source is not None else []) + self._where
        return f"{', '.join(where)}: {self.detail}" if where else self.detail

    @classmethod
    def at(
        cls, message: str, *, index: int, name: Any = None, position: int | None = None, field: str | None = None,
        source: str | None = None,
    ) -> DataError:
        """The error for sequence ``index`` of a batch (named ``name`` when the batch has names)."""
        return cls(message, source=source, sequence=index if name is None else name, position=position, field=field)

    def with_source(self, source: str) -> DataError:
        """The same error, naming ``source`` (a file) too."""
        err = copy.copy(self)
        # a fresh attribute dict: some libraries' exception reducers (tblib, which dask.distributed installs)
        # make copy.copy share it, and the original error would then name the file too
        err.__dict__ = dict(self.__dict__)
        err.source = source
        err.args = (err._text(),)
        return err


def first_true(bad: Tensor) -> tuple[int, ...] | None:
    """Index of the first True entry (row-major order), or None: where validation reports a fault."""
    hits = torch.nonzero(bad)
    return None if hits.numel() == 0 else tuple(int(i) for i in hits[0])


def check_offsets(
    offsets: np.ndarray, num_rows: int, error: type[DataError], source: str | None, field: str
) -> np.ndarray:
    """``offsets [B + 1]`` of concatenated sequences as int64: from 0, non-decreasing, ending at ``num_rows``."""
    offsets = np.asarray(offsets)
    integral = offsets.dtype.kind in "iu" or (
        offsets.dtype.kind == "f" and bool(np.all(np.isfinite(offsets) & (offsets == np.round(offsets)))))
    if not integral or offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0 \
            or offsets[-1] != num_rows or np.any(np.diff(offsets) < 0):
        raise error(f"{field} must be integers that start at 0, are non-decreasing and end at the number of "
                    f"rows ({num_rows})", source=source, field=field)
    return offsets.astype(np.int64)


def pad_flat(flat: np.ndarray, offsets: np.ndarray, fill: float | int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated rows ``[N, ...]`` -> padded ``[B, L, ...]`` (left-aligned) and the mask ``[B, L]``.

    ``fill`` is a scalar or one value per sequence (``[B]``, e.g. the window end that pads times).
    """
    lengths = np.diff(offsets)
    mask = np.arange(int(lengths.max(initial=0)))[None, :] < lengths[:, None]
    padded = np.empty(mask.shape + flat.shape[1:], flat.dtype)
    fill = np.asarray(fill, flat.dtype)
    padded[...] = fill.reshape(fill.shape + (1,) * (padded.ndim - fill.ndim))  # [B] fills broadcast along rows
    padded[mask] = flat
    return padded, mask


def allocate(n: int, fractions: np.ndarray, offset: float) -> np.ndarray:
    """Systematic allocation of ``n`` ranked members to parts of the given fractions: member ``j`` sits at
    ``(j + offset) / n`` in ``[0, 1)`` and joins the part whose cumulative fractions span it, so each part
    gets the floor or the ceiling of ``fraction * n`` members."""
    return np.searchsorted(np.cumsum(fractions)[:-1], (np.arange(n) + offset) / n, side="right")


def _same(a: Tensor | None, b: Tensor | None) -> bool:
    """Equal shapes and values, NaN equal to NaN (a missing value equals a missing value)."""
    if a is None or b is None:
        return a is None and b is None
    if a.shape != b.shape:
        return False
    if a.is_floating_point() or b.is_floating_point():
        return bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())
    return torch.equal(a, b)


def _pad_rows(x: Tensor, length: int, fill: float | int | bool) -> Tensor:
    """Pad dimension 1 of ``x [B, L, ...]`` to ``length`` with ``fill``."""
    return torch.nn.functional.pad(x, [0, 0] * (x.dim() - 2) + [0, length - x.shape[1]], value=fill)


class PaddedBatch:
    """Ragged sequences padded left-aligned to ``[B, L]`` (see the module docstring).

    A subclass declares its fields; its constructor must accept every declared field (and
    ``seq_names``) as a keyword, plus ``validate=False`` for tensors that are already checked.
    """

    error: ClassVar[type[DataError]] = DataError
    row_fields: ClassVar[Mapping[str, float | int | bool]] = {"time": 0.0, "mask": False}
    """Per-row tensors ``[B, L, ...]`` (optional ones may be None) -> the value that pads them."""
    sequence_fields: ClassVar[tuple[str, ...]] = ()
    """Per-sequence tensors ``[B, ...]`` (optional ones may be None)."""
    meta_fields: ClassVar[tuple[str, ...]] = ()
    """Settings carried unchanged (``num_marks``, ``channel_names``): equal across a concatenation."""
    meta_merge: ClassVar[Mapping[str, Callable[[list[Any]], Any]]] = {}
    """How :meth:`concat` merges a meta field that may differ (e.g. ``num_marks``: the largest)."""
    float_fields: ClassVar[frozenset[str]] = frozenset({"time"})
    """The fields that :meth:`to` casts to a new float dtype (the others keep theirs)."""
    sequence_view: ClassVar[tuple[str, ...]] = ("time",)
    """The row fields :meth:`sequences` returns by default."""
    names_in_equality: ClassVar[bool] = True
    """Whether ``==`` compares ``seq_names`` too."""
    noun: ClassVar[str] = "sequences"
    row_noun: ClassVar[str] = "rows"

    time: Tensor
    mask: Tensor
    seq_names: Sequence[Any] | None

    # ------------------------------------------------------------------ declared fields
    @classmethod
    def _fields(cls) -> tuple[str, ...]:
        return (*cls.row_fields, *cls.sequence_fields, *cls.meta_fields, "seq_names")

    def _replace(self: B, **changes: Any) -> B:
        """A batch of the same type with some fields changed, not validated again (the inputs were)."""
        fields = {name: getattr(self, name) for name in self._fields()}
        return type(self)(**{**fields, **changes}, validate=False)

    def _tensors(self, names: Sequence[str]) -> dict[str, Tensor]:
        return {name: x for name in names if (x := getattr(self, name)) is not None}

    # ------------------------------------------------------------------ shared checks
    def _error(self, b: int, message: str, position: int | None = None, field: str | None = None) -> DataError:
        """The error for sequence ``b`` of this batch (named when the batch has names)."""
        name = None if self.seq_names is None else self.seq_names[b]
        return self.error.at(message, index=b, name=name, position=position, field=field)

    def _check_names(self) -> None:
        if self.seq_names is not None and len(self.seq_names) != len(self):
            raise self.error(f"{len(self.seq_names)} seq_names for {len(self)} {self.noun}", field="seq_names")

    def _check_left_aligned(self) -> None:
        """Rows first, then padding: models rely on it (last row = ``lengths - 1``)."""
        arange = torch.arange(self.max_length, device=self.mask.device)
        hit = first_true(self.mask != (arange[None, :] < self.lengths[:, None]))
        if hit is not None:
            raise self._error(hit[0], f"mask must be left-aligned: {self.row_noun} first, then padding", hit[1],
                              "mask")

    def _padding_time(self) -> Tensor:
        """``[B]`` the time that pads each sequence (default: its last row's, keeping ``time`` ordered)."""
        if self.max_length == 0:
            return self.time.new_zeros(len(self))
        return self.time.gather(1, (self.lengths - 1).clamp(min=0)[:, None])[:, 0]

    def _canonicalise_padding(self) -> None:
        """Padding holds the declared fills and :meth:`_padding_time`, so padded and unpadded input agree."""
        for name, fill in self.row_fields.items():
            x = getattr(self, name)
            if name in ("time", "mask") or x is None:
                continue
            keep = self.mask.reshape(self.mask.shape + (1,) * (x.dim() - 2))
            setattr(self, name, torch.where(keep, x, torch.full_like(x, fill)))
        self.time = torch.where(self.mask, self.time, self._padding_time()[:, None])

    def _strata(self) -> np.ndarray | None:
        """``[B]`` strata that :meth:`split` splits in the same fractions each (None: no strata)."""
        return None

    def _parts_without_strata(self, rng: np.random.Generator, fractions: np.ndarray) -> np.ndarray:
        """``[B]`` the part of each sequence: one permutation cut at ``round(cumsum(fractions) * B)``."""
        n = len(self)
        perm = rng.permutation(n)
        bounds = np.round(np.cumsum(fractions) * n).astype(int)
        part = np.empty(n, np.int64)
        part[perm] = np.searchsorted(bounds[:-1], np.arange(n), side="right")
        return part

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return self.time.shape[0]

    @property
    def batch_size(self) -> int:
        """``B``, the number of sequences (as ``len``)."""
        return self.time.shape[0]

    @property
    def max_length(self) -> int:
        """``L``, the padded length: the longest sequence's number of rows."""
        return self.time.shape[1]

    @property
    def lengths(self) -> Tensor:
        """Number of rows per sequence, ``[B]`` long."""
        return self.mask.sum(1)

    @property
    def num_events(self) -> int:
        """Number of rows that exist (the trainer normalises losses by it)."""
        return int(self.mask.sum())

    @property
    def device(self) -> torch.device:
        """Where the tensors live (every field is on the device of ``time``)."""
        return self.time.device

    @property
    def dtype(self) -> torch.dtype:
        """The float dtype of ``time`` (and of the other :attr:`float_fields`)."""
        return self.time.dtype

    def to(self: B, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> B:
        """Move to a device and/or cast the float fields (:attr:`float_fields`) to ``dtype``; others keep theirs.

        As with tensors, ``batch.to(torch.float32)`` casts only."""
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        dtype = dtype or self.dtype
        moved = {name: x.to(device=device, dtype=dtype) if name in self.float_fields else x.to(device)
                 for name, x in self._tensors((*self.row_fields, *self.sequence_fields)).items()}
        return self._replace(**moved)

    def _indices(self, index: Index) -> Tensor:
        """``index`` as sequence indices ``[K]`` (long, on the CPU, non-negative, in range)."""
        n = len(self)
        if isinstance(index, (int, np.integer)):
            return torch.arange(n)[int(index)].reshape(1)
        if isinstance(index, slice):
            return torch.arange(n)[index]
        idx = torch.as_tensor(np.asarray(index.cpu() if isinstance(index, Tensor) else index))
        if idx.dtype == torch.bool:
            if idx.shape != (n,):
                raise IndexError(f"boolean index of shape {tuple(idx.shape)} for {n} {self.noun}")
            return torch.nonzero(idx).flatten()
        if idx.numel() and idx.is_floating_point():
            raise IndexError(f"{self.noun} indices must be integers, got {idx.dtype}")
        idx = idx.long().reshape(-1)
        idx = torch.where(idx < 0, idx + n, idx)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise IndexError(f"index out of range for {n} {self.noun}")
        return idx

    def __getitem__(self: B, index: Index) -> B:
        """Select sequences (never rows): ``batch[3]``, ``batch[2:5]``, ``batch[[0, 4]]``, a boolean mask.

        The result is trimmed to the longest selected sequence."""
        cpu = self._indices(index)
        idx = cpu.to(self.device)
        max_len = int(self.lengths[idx].max()) if idx.numel() else 0
        fields: dict[str, Any] = {name: x[idx, :max_len] for name, x in self._tensors(self.row_fields).items()}
        fields.update({name: x[idx] for name, x in self._tensors(self.sequence_fields).items()})
        names = self.seq_names
        fields["seq_names"] = None if names is None else type(names)(names[i] for i in cpu.tolist())
        return self._replace(**fields)

    def split(
        self: B, fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0, stratify: bool = True
    ) -> tuple[B, ...]:
        """Split by sequence into parts of the given fractions (e.g. train/val/test), shuffled with ``seed``.

        Without strata, part ``k`` gets ``round(cumsum(fractions)[k] * B)`` minus the earlier parts of one
        permutation (a family may keep its own rule: :meth:`_parts_without_strata`). With strata
        (:meth:`_strata`, e.g. class labels) and ``stratify``, every stratum is split in the same
        fractions up to one sequence (systematic allocation with a random offset per
        stratum, as ``train_test_split(..., stratify=y)``). The split depends only on
        ``(len, strata, fractions, seed)``, so it is reproducible; each part keeps the original order.
        """
        frac = np.asarray(fractions, np.float64)
        if frac.ndim != 1 or np.any(frac < 0) or not np.isclose(frac.sum(), 1.0):
            raise ValueError(f"fractions must be non-negative and sum to 1, got {frac.tolist()}")
        n = len(self)
        rng = np.random.default_rng(seed)
        strata = self._strata() if stratify else None
        if strata is None:
            part = self._parts_without_strata(rng, frac)
        else:
            part = np.empty(n, np.int64)
            for c in np.unique(strata):
                members = rng.permutation(np.flatnonzero(strata == c))
                part[members] = allocate(members.size, frac, rng.random())
        out = [np.flatnonzero(part == k) for k in range(frac.size)]
        if any(p.size == 0 for p in out):
            raise ValueError(f"cannot split {n} {self.noun} into fractions {frac.tolist()}: a part would be empty")
        return tuple(self[p] for p in out)

    @classmethod
    def concat(cls, batches: Sequence[B]) -> B:
        """Stack the sequences of several batches of one type (same meta fields, optional fields in all or none).

        The result has the first batch's device and dtypes and canonical padding."""
        if not batches:
            raise ValueError("concat needs at least one batch")
        first = batches[0]
        for k, b in enumerate(batches[1:], 1):
            if type(b) is not type(first):
                raise ValueError(f"batch {k} is a {type(b).__name__}, batch 0 a {type(first).__name__}")
            for name in (*first.row_fields, *first.sequence_fields):
                if (getattr(b, name) is None) != (getattr(first, name) is None):
                    have, lack = (k, 0) if getattr(first, name) is None else (0, k)
                    raise ValueError(f"batch {have} has {name}, batch {lack} has none")
        fields: dict[str, Any] = {}
        for name in first.meta_fields:
            values = [getattr(b, name) for b in batches]
            if name in first.meta_merge:
                fields[name] = first.meta_merge[name](values)
                continue
            for k, value in enumerate(values[1:], 1):
                if value != values[0]:
                    raise ValueError(f"batch {k} has {name} {value!r}, batch 0 has {values[0]!r}")
        length = max(b.max_length for b in batches)
        for name, x in first._tensors(first.row_fields).items():
            fill = first.row_fields[name]
            fields[name] = torch.cat([_pad_rows(getattr(b, name).to(x.device, x.dtype), length, fill) for b in batches])
        for name, x in first._tensors(first.sequence_fields).items():
            fields[name] = torch.cat([getattr(b, name).to(x.device, x.dtype) for b in batches])
        names = None
        if all(b.seq_names is not None for b in batches):
            names = type(first.seq_names)(n for b in batches for n in b.seq_names)
        out = first._replace(**fields, seq_names=names)
        out._canonicalise_padding()
        return out

    def sequences(self, *fields: str) -> list[tuple[np.ndarray, ...]]:
        """Per-sequence numpy arrays of the row fields ``fields`` (default :attr:`sequence_view`), rows only.

        Float fields come as float64; the arrays are copies (writing to them leaves the batch alone)."""
        arrays = []
        for name in fields or self.sequence_view:
            x = getattr(self, name) if name in self.row_fields else None
            if x is None:
                raise ValueError(f"{type(self).__name__} has no per-row field {name!r}")
            x = x.detach().cpu().numpy()
            arrays.append(np.array(x, np.float64 if x.dtype.kind == "f" else x.dtype))
        return [tuple(a[b, :n] for a in arrays) for b, n in enumerate(self.lengths.tolist())]

    def __eq__(self, other: object) -> bool:
        """Same shape and mask, equal rows and per-sequence fields (NaN equals NaN), equal meta fields."""
        if not isinstance(other, type(self)):
            return NotImplemented
        if self.time.shape != other.time.shape or not torch.equal(self.mask, other.mask):
            return False
        for name in self.row_fields:
            a, b = getattr(self, name), getattr(other, name)
            if name != "mask" and not _same(None if a is None else a[self.mask], None if b is None else b[other.mask]):
                return False
        if not all(_same(getattr(self, name), getattr(other, name)) for name in self.sequence_fields):
            return False
        if any(getattr(self, name) != getattr(other, name) for name in self.meta_fields):
            return False
        return not self.names_in_equality or _names(self.seq_names) == _names(other.seq_names)

    __hash__ = None  # type: ignore[assignment]  # mutable tensors inside

    def _repr_counts(self) -> dict[str, Any]:
        """Subclass-specific counts for :meth:`__repr__` (e.g. ``num_marks``)."""
        return {}

    def __repr__(self) -> str:
        counts = {self.noun: len(self), self.row_noun: self.num_events, **self._repr_counts(),
                  "max_length": self.max_length, "dtype": self.dtype, "device": self.device}
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in counts.items())})"


def _names(names: Sequence[Any] | None) -> tuple[Any, ...] | None:
    return None if names is None else tuple(names)
