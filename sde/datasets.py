"""The registry of named time-series datasets: one card per dataset (``data/series/<name>.toml``) and
:func:`load` ``(name, split) -> SeriesBatch``.

The verbs (:func:`load`, :func:`card`, :func:`list_datasets`, :func:`describe`, :func:`download`,
:func:`verify`) are those of :mod:`tpp.datasets`; both are :class:`tpp.registry.Registry`, which
finds files (the ``data_dir`` argument, ``$TPP_DATA_DIR``, then the user cache ``$TPP_CACHE_DIR``,
default ``~/.cache/tpp-sde``, under ``series/<name>/original/``), checks every file's sha256 before
it is read, and downloads a missing original from the card's ``[download]`` (the aeon / sktime /
statsmodels wheels on PyPI, sha256 of the wheel and of the member checked).

A series card has the keys of an event card where they mean the same (description, source, url,
licence and its caveats, citation, units, ``[files.<split>]`` with path and sha256, ``[split]``,
``[download]``) plus ``task``, ``format`` (the reader, :mod:`sde.readers`), ``num_series``,
``num_rows``, ``num_channels``, ``num_classes`` and ``[options]`` for the reader; a loaded batch is
checked against the card's counts. The old names (:func:`load_series`, :func:`series_card`,
:func:`list_series`, :func:`describe_series`, and the readers) stay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sde.readers import (
    PHYSIONET_CHANNELS,
    READERS,
    Format,
    read_csv_series,
    read_physionet2012,
    read_ts,
    read_tsf,
)
from sde.series import SeriesBatch, SeriesDataError
from tpp.registry import BaseCard, CardFile, CardTable, Registry, Source, SplitSpec

__all__ = [
    "CARDS_DIR",
    "PHYSIONET_CHANNELS",
    "REGISTRY",
    "TASKS",
    "Format",
    "SeriesCard",
    "SeriesFile",
    "SeriesRegistry",
    "card",
    "describe",
    "describe_series",
    "download",
    "list_datasets",
    "list_series",
    "load",
    "load_series",
    "read_csv_series",
    "read_physionet2012",
    "read_ts",
    "read_tsf",
    "series_card",
    "verify",
]

#: Where the cards live: ``data/series/`` at the repository root.
CARDS_DIR = Path(__file__).resolve().parent.parent / "data" / "series"
TASKS = ("classification", "regression", "forecast")  # the values of sde.models.heads.Task


# --------------------------------------------------------------------------- the card
@dataclass(frozen=True, kw_only=True)
class SeriesFile(CardFile):
    """One split's files: the main file and companions (PhysioNet: ``outcomes``), each (path, sha256)."""

    num_series: int
    num_rows: int


@dataclass(frozen=True, kw_only=True)
class SeriesCard(BaseCard):
    """Everything the registry knows about one time-series dataset (see ``data/series/README.md``)."""

    task: str
    format: Format
    num_series: int
    num_rows: int
    num_channels: int
    num_classes: int
    files: Mapping[str, SeriesFile]
    options: Mapping[str, Any] = field(default_factory=dict)
    download: Mapping[str, tuple[Source, ...]] | None = None

    @property
    def stratify(self) -> bool:
        """Whether the seeded split keeps the class proportions (``split.stratify``, default true)."""
        return self.split is None or self.split.stratify

    def summary(self) -> dict[str, Any]:
        """Name, task, series, rows, channels, classes, licence: one row of the ``sde datasets`` table."""
        return {"name": self.name, "task": self.task, "series": self.num_series, "rows": self.num_rows,
                "channels": self.num_channels, "classes": self.num_classes, "licence": self.licence}


def _file(split: str, e: CardTable) -> SeriesFile:
    # every sub-table of [files.<split>] is a companion file of the main one
    companions = {role: (c.get("path", str), c.sha256()) for role, c in
                  ((k, e.table(k)) for k, v in e.raw.items() if isinstance(v, dict))}
    return SeriesFile(split=split, path=e.get("path", str), sha256=e.sha256(), num_series=e.get("num_series", int),
                      num_rows=e.get("num_rows", int), companions=companions)


# --------------------------------------------------------------------------- the registry of series cards
class SeriesRegistry(Registry[SeriesCard, SeriesBatch]):
    """Series cards (``data/series/*.toml``): every file is its own original, read by :mod:`sde.readers`."""

    noun = "time-series dataset"

    def parse(self, table: CardTable) -> SeriesCard:
        t = table
        task = t.get("task", str)
        if task not in TASKS:
            raise t.error(f"task must be one of {TASKS}, got {task!r}")
        try:
            fmt = Format(t.get("format", str))
        except ValueError:
            raise t.error(f"format must be one of {[f.value for f in Format]}, got {t.raw['format']!r}") from None
        num_classes = t.get("num_classes", int)
        if (task == "classification") != (num_classes >= 2):
            raise t.error("num_classes must be >= 2 for classification and 0 otherwise")
        files = {split: _file(split, e) for split, e in t.table("files").tables().items()}
        split = SplitSpec.parse(t.table("split")) if "split" in t else None
        download = None
        if "download" in t:
            download = {}
            for part, spec in t.table("download").tables().items():
                if part not in files:
                    raise t.error(f"[download.{part}] has no matching [files.{part}]")
                if set(spec.raw) != set(files[part].parts):
                    raise t.error(f"[download.{part}] needs one source per file: {', '.join(files[part].parts)}")
                download[part] = Source.parse_all(spec, require_sha256=True)
        return SeriesCard(**t.header(), task=task, format=fmt, num_series=t.get("num_series", int),
                          num_rows=t.get("num_rows", int), num_channels=t.get("num_channels", int),
                          num_classes=num_classes, splits=BaseCard.check_layout(t, files, split,
                                                                                ("num_series", "num_rows")),
                          files=files, split=split, options=t.options(), download=download)

    def read(self, card: SeriesCard, entry: CardFile, paths: Mapping[str, Path]) -> SeriesBatch:
        assert isinstance(entry, SeriesFile)
        path = paths["data"]
        if card.format is Format.PHYSIONET2012:
            batch = read_physionet2012(path, paths["outcomes"])
        elif card.format is Format.CSV:
            batch = read_csv_series(path, name=card.name, **card.options)
        else:
            batch = READERS[card.format](path, **card.options)
        if (len(batch), batch.num_events, batch.num_channels) != (entry.num_series, entry.num_rows, card.num_channels):
            raise SeriesDataError(f"holds {len(batch)} series / {batch.num_events} rows / {batch.num_channels} "
                                  f"channels, but card {card.name!r} [files.{entry.split}] says {entry.num_series} / "
                                  f"{entry.num_rows} / {card.num_channels}", source=str(path))
        return batch

    def partition(self, card: SeriesCard, whole: SeriesBatch) -> Sequence[SeriesBatch]:
        assert card.split is not None
        return whole.split(list(card.split.fractions.values()), seed=card.split.seed, stratify=card.stratify)

    def recipe(self, card: SeriesCard, entry: CardFile, role: str) -> Sequence[Source] | None:
        sources = [s for s in (card.download or {}).get(entry.split, ()) if s.role == role]
        return sources or None

    def split_hint(self, card: SeriesCard, key: str) -> str:
        if key == "val" and card.format is Format.TS:
            return " (the archive has no validation split: use load(name, 'train').split((0.8, 0.2), seed=0))"
        return ""


REGISTRY = SeriesRegistry(CARDS_DIR, face="sde.datasets", cache_folder="series")


# --------------------------------------------------------------------------- the verbs
# The registry's own methods, so that both packages answer the same verbs with the same code:
# load(name, split=None, *, data_dir=None, download=True) -> SeriesBatch, card(name) -> SeriesCard,
# list_datasets(), describe() (name, task, series, rows, channels, classes, licence),
# download(name) and verify(name) -> the checked local files by split.
load, card, list_datasets, describe, download, verify = REGISTRY.verbs

# The names used before the registry was shared with tpp.
load_series = load
series_card = card
list_series = list_datasets
describe_series = describe
