"""The registry of named real event datasets: one card per dataset (``data/<name>.toml``) and
:func:`load` ``(name, split) -> EventBatch``.

The verbs (:func:`load`, :func:`card`, :func:`list_datasets`, :func:`describe`, :func:`download`,
:func:`verify`) are those of :mod:`sde.datasets`; both are :class:`tpp.registry.Registry`, which
finds files (the ``data_dir`` argument, ``$TPP_DATA_DIR``, then the user cache ``$TPP_CACHE_DIR``,
default ``~/.cache/tpp-sde``), checks every file's sha256 before reading it, and downloads missing
originals. What is particular to events is here: an event card adds the observation window, the
number of marks, the continuous per-event ``features`` the files hold (locations, magnitudes:
loaded as :attr:`EventBatch.features`), and a ``[download]`` recipe whose originals a
:mod:`tpp.sources` converter turns into our ``.npz`` layout, cached with its digest beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from tpp import sources
from tpp.events import EventBatch, EventDataError
from tpp.io import atomic_write, write_events
from tpp.registry import (
    DEFAULT_CACHE_DIR,
    DOWNLOAD_TIMEOUT_S,
    SPLIT_ALIASES,
    BaseCard,
    CardError,
    CardFile,
    CardTable,
    ChecksumError,
    Registry,
    Source,
    SplitSpec,
    cache_dir,
    fetch_sources,
    sha256_file,
    verify_file,
)

__all__ = [
    "CARDS_DIR",
    "DEFAULT_CACHE_DIR",
    "DOWNLOAD_TIMEOUT_S",
    "REGISTRY",
    "SPLIT_ALIASES",
    "Card",
    "CardError",
    "ChecksumError",
    "DataFile",
    "Download",
    "EventCard",
    "EventRegistry",
    "Source",
    "SplitSpec",
    "cache_dir",
    "card",
    "describe",
    "download",
    "list_datasets",
    "load",
    "sha256_file",
    "split_by_time",
    "verify",
]

#: Where the cards live: ``data/`` at the repository root (next to the ``tpp`` package).
CARDS_DIR = Path(__file__).resolve().parent.parent / "data"


# --------------------------------------------------------------------------- the card
@dataclass(frozen=True, kw_only=True)
class DataFile(CardFile):
    """One file of a dataset: ``path`` relative to the data folder, read with converter ``format``."""

    num_sequences: int
    num_events: int
    format: str = "npz"
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Download:
    """Where the originals are and which :mod:`tpp.sources` converter rebuilds each file from them."""

    format: str
    options: Mapping[str, Any]
    files: Mapping[str, tuple[Source, ...]]


@dataclass(frozen=True, kw_only=True)
class EventCard(BaseCard):
    """Everything the registry knows about one event dataset (see ``data/README.md`` for the fields)."""

    window: str
    num_marks: int
    num_sequences: int
    num_events: int
    files: Mapping[str, DataFile]
    download: Download | None = None
    features: tuple[str, ...] = ()

    @property
    def extras(self) -> tuple[str, ...]:
        """The per-event arrays beside the times (the old name of :attr:`features`)."""
        return self.features

    def summary(self) -> dict[str, Any]:
        """Name, sequences, events, marks, licence, window: one row of the ``tpp datasets`` table."""
        return {"name": self.name, "sequences": self.num_sequences, "events": self.num_events,
                "marks": self.num_marks, "licence": self.licence, "window": self.window}


Card = EventCard  # the name used before the registry was shared with sde


def _format(t: CardTable, key: str, default: str | None = None) -> str:
    name = t.raw.get(key, default)
    if name not in sources.CONVERTERS:
        raise t.error(f"{t.where}{key} {name!r} is not a registered format ({sorted(sources.CONVERTERS)})")
    return name


def _converted_path(root: Path, f: CardFile) -> Path:
    """Where the cache keeps the ``.npz`` built from an original (same name, ``.npz`` suffix)."""
    return root / PurePosixPath(f.path).with_suffix(".npz")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


# --------------------------------------------------------------------------- the registry of event cards
class EventRegistry(Registry[EventCard, EventBatch]):
    """Event cards (``data/*.toml``): files in our ``.npz`` layout (or a converter's), originals
    converted by :mod:`tpp.sources` and cached as ``.npz`` with the digest in ``<file>.npz.sha256``."""

    def parse(self, table: CardTable) -> EventCard:
        t = table
        files = {
            split: DataFile(split=split, path=e.get("path", str), sha256=e.sha256(),
                            num_sequences=e.get("num_sequences", int), num_events=e.get("num_events", int),
                            format=_format(e, "format", "npz"), options=e.options())
            for split, e in t.table("files").tables().items()
        }
        split = SplitSpec.parse(t.table("split")) if "split" in t else None
        download = None
        if "download" in t:
            d = t.table("download")
            recipes = {}
            for part, spec in d.tables(skip=("format", "options")).items():
                if part not in files:
                    raise t.error(f"[download.{part}] has no matching [files.{part}]")
                recipes[part] = Source.parse_all(spec, require_sha256=False)
            download = Download(_format(d, "format"), d.options(), recipes)
        num_marks = t.get("num_marks", int)
        if num_marks < 1:
            raise t.error("num_marks must be >= 1 (1 for unmarked data)")
        return EventCard(**t.header(), window=t.get("window", str), num_marks=num_marks,
                         num_sequences=t.get("num_sequences", int), num_events=t.get("num_events", int),
                         splits=BaseCard.check_layout(t, files, split, ("num_sequences", "num_events")),
                         files=files, split=split, download=download, features=t.strings("features"))

    def read(self, card: EventCard, entry: CardFile, paths: Mapping[str, Path]) -> EventBatch:
        assert isinstance(entry, DataFile)
        path = paths["data"]
        # a staged copy is read with its card's converter; one rebuilt from the originals is our .npz
        fmt, options = (entry.format, entry.options) if sha256_file(path) == entry.sha256 else ("npz", {})
        batch = sources.convert(fmt, {"data": path}, {**options, **self._options(card)})
        return _check(card, entry, batch, path)

    def partition(self, card: EventCard, whole: EventBatch) -> Sequence[EventBatch]:
        assert card.split is not None
        fractions = list(card.split.fractions.values())
        if card.split.by == "time":
            return split_by_time(whole, fractions)
        return whole.split(fractions, seed=card.split.seed)

    def recipe(self, card: EventCard, entry: CardFile, role: str) -> Sequence[Source] | None:
        return None if card.download is None else card.download.files.get(entry.split)

    def from_cache(self, card: EventCard, entry: CardFile, role: str, searched: list[str]) -> Path | None:
        """A copy of the staged file (checked against the card) or the ``.npz`` converted from the
        originals (checked against the digest recorded beside it)."""
        cache = cache_dir()
        verbatim, converted = cache / entry.path, _converted_path(cache, entry)
        hint = "The cached file is corrupt or stale: delete it to download again."
        if verbatim != converted and verbatim.is_file():
            verify_file(verbatim, [entry.sha256], hint)
            return verbatim
        searched.append(str(converted))
        if not converted.is_file():
            return None
        sidecar = _sidecar(converted)
        verify_file(converted, [entry.sha256] + ([sidecar.read_text().strip()] if sidecar.is_file() else []), hint)
        return converted

    def fetch(self, card: EventCard, entry: CardFile, role: str, recipe: Sequence[Source]) -> Path:
        """Fetch the originals of one file (checked), convert them, and cache the ``.npz`` with its digest."""
        assert card.download is not None and isinstance(entry, DataFile)
        d = card.download
        paths = fetch_sources(recipe, self.originals(card))
        options = {**d.options, **(entry.options if entry.format == d.format else {}), **self._options(card)}
        options["source"] = f"{card.name} originals"
        batch = _check(card, entry, sources.convert(d.format, paths, options), options["source"])
        target = _converted_path(cache_dir(), entry)
        with atomic_write(target, ".npz") as tmp:
            write_events(batch, tmp)
            digest = sha256_file(tmp)
            with atomic_write(_sidecar(target)) as side:
                side.write_text(digest + "\n")
        return target

    @staticmethod
    def _options(card: EventCard) -> dict[str, Any]:
        """What every converter is told by the card: the number of marks and the features to keep."""
        return {"num_marks": card.num_marks, "features": list(card.features)}


def _check(c: EventCard, f: DataFile, batch: EventBatch, where: Path | str) -> EventBatch:
    """The batch if it holds what the card says (counts, and features in the card's order)."""
    if (len(batch), batch.num_events) != (f.num_sequences, f.num_events):
        raise EventDataError(
            f"holds {len(batch)} sequences / {batch.num_events} events, but card {c.name!r} "
            f"[files.{f.split}] says {f.num_sequences} / {f.num_events}",
            source=str(where),
        )
    if batch.feature_names != c.features:
        raise EventDataError(f"holds features {list(batch.feature_names)}, but card {c.name!r} says {list(c.features)}",
                             source=str(where), field="features")
    return batch


REGISTRY = EventRegistry(CARDS_DIR, face="tpp.datasets")


# --------------------------------------------------------------------------- the verbs
# The registry's own methods, so that both packages answer the same verbs with the same code:
# load(name, split=None, *, data_dir=None, download=True) -> EventBatch (num_marks and features as the
# card says; a split of a single file by sequence, or by time: split_by_time), card(name) -> EventCard,
# list_datasets(), describe() (name, sequences, events, marks, licence, window: the `tpp datasets`
# table), download(name) and verify(name) -> the checked local files by split.
load, card, list_datasets, describe, download, verify = REGISTRY.verbs


# --------------------------------------------------------------------------- splits
def split_by_time(batch: EventBatch, fractions: Sequence[float]) -> tuple[EventBatch, ...]:
    """Cut every sequence's window into consecutive blocks of the given fractions of its length.

    Block ``k`` keeps the events in ``[lo_k, hi_k)`` (the last block includes its end), with their
    marks and features, and takes ``[lo_k, hi_k]`` as its window, so the likelihood of each block is
    over that block alone.
    """
    frac = np.asarray(fractions, np.float64)
    if np.any(frac <= 0) or not np.isclose(frac.sum(), 1.0):
        raise ValueError(f"fractions must be positive and sum to 1, got {frac.tolist()}")
    flat = batch.to_flat()
    t, m, offsets = flat["times"], flat["marks"], flat["seq_offsets"]
    t0, t1 = flat["t_start"], flat["t_end"]
    features = flat.get("features")
    n = len(offsets) - 1
    seq_of = np.repeat(np.arange(n), np.diff(offsets))
    cuts = np.concatenate([[0.0], np.cumsum(frac)[:-1]])
    parts = []
    for k in range(frac.size):
        lo = t0 + cuts[k] * (t1 - t0)
        last = k == frac.size - 1
        hi = t1 if last else t0 + cuts[k + 1] * (t1 - t0)
        keep = (t >= lo[seq_of]) & ((t <= hi[seq_of]) if last else (t < hi[seq_of]))
        counts = np.bincount(seq_of[keep], minlength=n)
        parts.append(
            EventBatch.from_flat(
                t[keep], np.concatenate([[0], np.cumsum(counts)]), lo, hi, m[keep], batch.num_marks,
                features=None if features is None else features[keep],
                feature_names=None if features is None else batch.feature_names,
                seq_names=batch.seq_names, dtype=batch.dtype,
            )
        )
    return tuple(parts)
