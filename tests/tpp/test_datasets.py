"""Tests of the dataset registry (tpp.datasets), its cards (data/*.toml) and the converters (tpp.sources).

Tests marked ``needs_data`` read the staged data through $TPP_DATA_DIR (the Makefile points it at
shared/data); the others build their own small files. No test touches the network or the user's cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

import tpp.datasets as ds
import tpp.registry as registry
from tpp import EventBatch, write_events
from tpp.sources import CONVERTERS, convert

_REAL_DOWNLOAD = registry.download_url
DATA = os.environ.get("TPP_DATA_DIR")
needs_data = pytest.mark.skipif(
    not DATA or not Path(DATA).is_dir(),
    reason="needs the staged real datasets: set TPP_DATA_DIR to the shared data folder (the Makefile does)",
)

EXPECTED_NAMES = {
    "pubg", "reddit_askscience_comments", "taxi", "twitter", "yelp_airport", "yelp_mississauga",
    "wikipedia_ifl", "yelp_toronto_ifl", "mimic2_rmtpp", "stackoverflow_rmtpp_subset", "bookorder_rmtpp",
    "earthquakes_japan", "ridgecrest2019_comcat", "phuket_earthquakes", "lfe_families_ducellier",
    "chicago_shootings", "boko_haram_ucdp", "whale_calls_ccb2010", "grasshopper_spikes_nitime", "helpdesk",
    "bpi2012_w", "lifelines_recur", "anhp_synthetic",
}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


pytestmark = pytest.mark.usefixtures("offline_registry")  # private cache, no network (tests/conftest.py)


@pytest.fixture(scope="module")
def manifest() -> dict[str, Path]:
    """sha256 -> staged file, from MANIFEST.sha256 of $TPP_DATA_DIR."""
    root = Path(DATA or ".")
    out = {}
    for line in (root / "MANIFEST.sha256").read_text().splitlines():
        digest, rel = line.split(maxsplit=1)
        out[digest] = root / rel.removeprefix("./")
    return out


# --------------------------------------------------------------------------- cards (no data needed)
def test_every_card_parses_with_the_required_fields() -> None:
    cards = ds.list_datasets()
    assert {c.name for c in cards} == EXPECTED_NAMES
    for c in cards:
        for key in ("description", "source", "url", "licence", "licence_note", "citation", "units", "window"):
            assert getattr(c, key).strip(), f"{c.name}: empty {key}"
        assert c.num_marks >= 1 and c.num_sequences > 0 and c.num_events > 0
        assert c.files and c.download is not None, c.name
        assert set(c.download.files) == set(c.files), f"{c.name}: every file needs a download recipe"
        assert c.download.format in CONVERTERS
        for srcs in c.download.files.values():
            for s in srcs:
                assert s.sha256 is not None, f"{c.name}: {s.url} has a local copy, so a sha256"
                assert s.url.startswith("https://")
                if "raw.githubusercontent.com" in s.url:
                    assert len(s.url.split("/")[5]) == 40, f"{c.name}: pin a full commit in {s.url}"
        if c.split is not None:
            assert c.split.by == "time" or c.num_sequences >= 10, f"{c.name}: too few sequences to split by sequence"


@pytest.mark.parametrize(
    "alias, name",
    [
        ("stackoverflow", "stackoverflow_rmtpp_subset"), ("bookorder", "bookorder_rmtpp"), ("mimic2", "mimic2_rmtpp"),
        ("wikipedia", "wikipedia_ifl"), ("yelp_toronto", "yelp_toronto_ifl"), ("ridgecrest", "ridgecrest2019_comcat"),
        ("phuket", "phuket_earthquakes"), ("lfe", "lfe_families_ducellier"), ("whale_calls", "whale_calls_ccb2010"),
        ("grasshopper", "grasshopper_spikes_nitime"), ("earthquakes_japan", "earthquakes_japan"),
        ("chicago", "chicago_shootings"), ("boko_haram", "boko_haram_ucdp"), ("recur", "lifelines_recur"),
        ("anhp", "anhp_synthetic"), ("PUBG", "pubg"), ("  Taxi ", "taxi"),
    ],
)
def test_alias_and_case_insensitive_lookup(alias: str, name: str) -> None:
    assert ds.card(alias).name == name


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(KeyError, match="stackoverflow_rmtpp_subset"):
        ds.card("stackoverfow")
    with pytest.raises(KeyError, match="unknown dataset 'no_such_thing'"):
        ds.load("no_such_thing")


def test_describe_is_one_row_per_card() -> None:
    table = ds.describe()
    assert list(table.columns) == ["name", "sequences", "events", "marks", "licence", "window"]
    assert set(table["name"]) == EXPECTED_NAMES
    assert int(table.loc[table["name"] == "pubg", "sequences"].iloc[0]) == 3001


def test_malformed_card_names_file_and_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (ds.CARDS_DIR / "taxi.toml").read_text().replace("num_events = 17904\n", "num_events = 17905\n", 1)
    (tmp_path / "taxi.toml").write_text(text)
    monkeypatch.setattr(ds.REGISTRY, "cards_dir", tmp_path)
    with pytest.raises(ds.CardError, match=r"taxi\.toml: num_events = 17905 but the files add up to 17904"):
        ds.list_datasets()


def test_split_by_time_keeps_every_event_once() -> None:
    batch = EventBatch.from_sequences([[0.5, 1.0, 6.0, 9.9], [2.0]], t_start=0.0, t_end=[10.0, 5.0])
    parts = ds.split_by_time(batch, [0.6, 0.4])
    assert [p.num_events for p in parts] == [3, 2]
    assert parts[0].t_end.tolist() == [6.0, 3.0] and parts[1].t_start.tolist() == [6.0, 3.0]
    assert parts[1].t_end.tolist() == [10.0, 5.0]
    assert parts[1].sequences()[0][0].tolist() == [6.0, 9.9]  # an event on the cut goes to the later block


# --------------------------------------------------------------------------- download, cache, checksums (own files)
TOY_CSV = "seq,t,type\na,0.5,1\na,1.5,2\nb,0.2,1\nc,2.0,2\nc,2.5,1\nd,1.0,1\n"


def _toy_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, url: str, source_sha: str,
                  staged_sha: str = "0" * 64, extra: str = "") -> None:
    """A one-card registry ('toy_events': 4 sequences, 6 events, 2 marks) whose original is a CSV."""
    cards = tmp_path / "cards"
    cards.mkdir(exist_ok=True)
    (cards / "toy_events.toml").write_text(f"""
name = "toy_events"
aliases = ["toy"]
description = "four tiny sequences"
source = "tests"
url = "https://example.invalid/toy"
licence = "CC0"
licence_note = "made up"
citation = "none"
units = "s"
window = "[0, 3]"
num_marks = 2
num_sequences = 4
num_events = 6
splits = ["train", "test"]

[split]
train = 0.5
test = 0.5
seed = 3

[files.all]
path = "toy_events/toy.npz"
sha256 = "{staged_sha}"
num_sequences = 4
num_events = 6

[download]
format = "csv"
options = {{ seq = "seq", time = "t", mark = "type", mark_base = 1, t_end = 3.0 }}

[download.all]
data = {{ url = "{url}", sha256 = "{source_sha}"{extra} }}
""")
    monkeypatch.setattr(ds.REGISTRY, "cards_dir", cards)
    monkeypatch.delenv("TPP_DATA_DIR", raising=False)


def _copying_downloader(src: Path, calls: list[str]):
    def fake(url: str, dest: Path, timeout: float = 0) -> None:
        calls.append(url)
        shutil.copyfile(src, dest)

    return fake


def _toy_expected() -> EventBatch:
    return EventBatch.from_sequences(
        [[0.5, 1.5], [0.2], [2.0, 2.5], [1.0]], [[0, 1], [0], [1, 0], [0]], t_start=0.0, t_end=3.0, num_marks=2
    )


def test_download_checks_converts_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = tmp_path / "toy.csv"
    original.write_text(TOY_CSV)
    _toy_registry(tmp_path, monkeypatch, url="https://example.invalid/toy.csv", source_sha=_sha(original))
    calls: list[str] = []
    monkeypatch.setattr(registry, "download_url", _copying_downloader(original, calls))

    batch = ds.load("toy")
    assert batch == _toy_expected()
    cached = tmp_path / "cache" / "toy_events" / "toy.npz"
    assert cached.is_file() and (tmp_path / "cache" / "toy_events" / "original" / "toy.csv").is_file()
    assert (cached.parent / "toy.npz.sha256").read_text().strip() == _sha(cached)
    assert calls == ["https://example.invalid/toy.csv"]

    again = ds.load("toy", download=False)  # from the cache, verified against its recorded digest
    assert again == batch and len(calls) == 1
    train, test = ds.load("toy", "train"), ds.load("toy", "test")
    assert len(train) + len(test) == 4 and train == ds.load("toy", "train")

    damaged = cached.with_name("damaged")
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    damaged.replace(cached)  # a damaged cached npz (same size)
    with pytest.raises(ds.ChecksumError, match="toy.npz: sha256 mismatch"):
        ds.load("toy")


def test_corrupt_download_raises_and_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = tmp_path / "toy.csv"
    good.write_text(TOY_CSV)
    bad = tmp_path / "bad.csv"
    bad.write_text(TOY_CSV.replace("2.5", "2.6"))
    expected = _sha(good)
    _toy_registry(tmp_path, monkeypatch, url="https://example.invalid/toy.csv", source_sha=expected)
    monkeypatch.setattr(registry, "download_url", _copying_downloader(bad, []))
    with pytest.raises(ds.ChecksumError) as info:
        ds.load("toy_events")
    msg = str(info.value)
    assert "https://example.invalid/toy.csv" in msg and expected in msg and _sha(bad) in msg and "deleted" in msg
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert leftovers == [], f"the corrupt download must not stay in the cache: {leftovers}"


def test_download_false_without_any_copy_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _toy_registry(tmp_path, monkeypatch, url="https://example.invalid/toy.csv", source_sha="1" * 64)
    with pytest.raises(FileNotFoundError, match="download=False"):
        ds.load("toy", download=False)


def test_data_dir_copy_is_checked_and_preferred(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "staged"
    staged = write_events(_toy_expected(), root / "toy_events" / "toy.npz")
    _toy_registry(tmp_path, monkeypatch, url="https://example.invalid/toy.csv", source_sha="1" * 64,
                  staged_sha=_sha(staged))
    assert ds.load("toy", data_dir=root) == _toy_expected()
    monkeypatch.setenv("TPP_DATA_DIR", str(root))
    assert ds.load("toy") == _toy_expected()
    staged.write_bytes(staged.read_bytes() + b"junk")
    with pytest.raises(ds.ChecksumError, match="sha256 mismatch"):
        ds.load("toy", data_dir=root)


def test_archive_member_and_real_urllib_downloader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wheel-like zip served over file:// through the real downloader; the member is checked and converted."""
    member = tmp_path / "toy.csv"
    member.write_text(TOY_CSV)
    wheel = tmp_path / "toy-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(member, "toy/data/toy.csv")
    _toy_registry(tmp_path, monkeypatch, url=wheel.as_uri(), source_sha=_sha(member),
                  extra=f', archive_sha256 = "{_sha(wheel)}", member = "toy/data/toy.csv"')
    monkeypatch.setattr(registry, "download_url", _REAL_DOWNLOAD)
    assert ds.load("toy") == _toy_expected()
    assert (tmp_path / "cache" / "toy_events" / "original" / "toy.csv").read_text() == TOY_CSV


def test_verify_downloads_nothing_and_download_fills_the_cache(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    original = tmp_path / "toy.csv"
    original.write_text(TOY_CSV)
    _toy_registry(tmp_path, monkeypatch, url="https://example.invalid/toy.csv", source_sha=_sha(original))
    calls: list[str] = []
    monkeypatch.setattr(registry, "download_url", _copying_downloader(original, calls))
    with pytest.raises(FileNotFoundError, match="download=False"):
        ds.verify("toy")
    assert calls == []
    cached = tmp_path / "cache" / "toy_events" / "toy.npz"
    assert ds.download("toy") == {"all": cached} and len(calls) == 1
    assert ds.verify("toy") == {"all": cached} and ds.download("toy") == {"all": cached} and len(calls) == 1
    cached.write_bytes(cached.read_bytes() + b"junk")
    with pytest.raises(ds.ChecksumError, match="toy.npz: sha256 mismatch"):
        ds.verify("toy")


@pytest.mark.parametrize(
    "old, new, message",
    [
        ('name = "toy_events"', 'name = "other"', "name 'other' must equal the file name 'toy_events'"),
        ('sha256 = "0000', 'sha256 = "ABCD', r"files\.all\.sha256 must be 64 lowercase hex digits"),
        ("num_sequences = 4\nnum_events = 6\n\n[download]", "num_events = 6\n\n[download]",
         r"missing key files\.all\.'num_sequences'"),
        ("test = 0.5", "test = 0.4", r"\[split\] fractions must sum to 1, got 0.9"),
        ('format = "csv"', 'format = "xls"', "download.format 'xls' is not a registered format"),
        ('url = "https://example.invalid/toy.csv"', 'url = "ftp://example.invalid/toy.csv"',
         r"download\.all\.data\.url must be an http\(s\) URL"),
        ("[download.all]", "[download.train]", r"\[download\.train\] has no matching \[files\.train\]"),
        ('splits = ["train", "test"]', 'splits = ["train"]', r"splits = \['train'\] but \[files\]/\[split\] give"),
        ("num_marks = 2", "num_marks = true", "key 'num_marks' must be int, got True"),
        ("[split]", "features = 3\n[split]", "key 'features' must be a list of strings"),
    ],
)
def test_malformed_card_errors_name_the_file_and_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         old: str, new: str, message: str) -> None:
    _toy_registry(tmp_path, monkeypatch, url="https://example.invalid/toy.csv", source_sha="1" * 64)
    path = tmp_path / "cards" / "toy_events.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ds.CardError, match=r"toy_events\.toml: " + message):
        ds.list_datasets()


def test_a_name_or_alias_used_twice_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _toy_registry(tmp_path, monkeypatch, url="https://example.invalid/toy.csv", source_sha="1" * 64)
    text = (tmp_path / "cards" / "toy_events.toml").read_text()
    (tmp_path / "cards" / "toy_two.toml").write_text(text.replace('name = "toy_events"', 'name = "toy_two"'))
    with pytest.raises(ds.CardError, match="toy_two.toml: name or alias 'toy' is also used by 'toy_events'"):
        ds.card("toy")


def test_split_by_time_keeps_each_events_features() -> None:
    batch = EventBatch.from_sequences([[0.5, 1.0, 6.0, 9.9]], t_start=0.0, t_end=10.0,
                                      features=[[[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]]],
                                      feature_names=["lon", "lat"])
    first, second = ds.split_by_time(batch, [0.5, 0.5])
    assert first.feature_names == second.feature_names == ("lon", "lat")
    assert first.features[0, :2].tolist() == [[0.0, 1.0], [2.0, 3.0]]
    assert second.features[0, :2].tolist() == [[4.0, 5.0], [6.0, 7.0]]


# --------------------------------------------------------------------------- the staged data
@needs_data
@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_card_files_exist_and_match_sha256(name: str, manifest: dict[str, Path]) -> None:
    c = ds.card(name)
    for f in c.files.values():
        path = Path(DATA) / f.path
        assert path.is_file(), f"{name}: missing {path}"
        assert _sha(path) == f.sha256, f"{name}: {f.path} differs from the card"
        assert manifest.get(f.sha256) == path
    for srcs in c.download.files.values():  # every original's digest is that of a local copy
        for s in srcs:
            assert s.sha256 in manifest, f"{name}: no local copy has the sha256 of {s.url}"


@needs_data
@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_load_gives_the_card_numbers(name: str) -> None:
    c = ds.card(name)
    batch = ds.load(name)
    assert (len(batch), batch.num_events, batch.num_marks) == (c.num_sequences, c.num_events, c.num_marks)
    for split, f in c.files.items():
        if split != "all":
            part = ds.load(name, split)
            assert (len(part), part.num_events) == (f.num_sequences, f.num_events)


@needs_data
def test_windows_match_the_cards() -> None:
    assert ds.load("pubg").t_end.unique().tolist() == [40.0]
    assert ds.load("taxi").t_start.unique().tolist() == [0.0]
    assert ds.load("earthquakes_japan", "val").t_end.unique().tolist() == [30.0]
    assert ds.load("ridgecrest").t_end.tolist() == [8.0]
    so = ds.load("stackoverflow")
    assert so.t_start.tolist() == so.time[:, 0].tolist()  # first event
    wiki = ds.load("wikipedia")
    assert wiki.t_end.tolist() == [float(t[-1]) for t, _ in wiki.sequences()]  # last event
    recur = ds.load("recur")
    assert recur.t_end[0].item() == 88.0 and recur.sequences()[0][0].tolist() == [6.0, 9.0, 56.0, 88.0]


@needs_data
def test_seeded_split_is_reproducible_and_partitions() -> None:
    parts = [ds.load("twitter", s) for s in ("train", "val", "test")]
    assert parts[0] == ds.load("twitter", "train")
    assert [len(p) for p in parts] == [1211, 404, 404]
    assert sum(p.num_events for p in parts) == ds.card("twitter").num_events
    blocks = [ds.load("ridgecrest", s) for s in ("train", "val", "test")]
    assert sum(b.num_events for b in blocks) == 829
    assert blocks[0].t_end.item() == blocks[1].t_start.item()
    assert ds.load("anhp", "dev") == ds.load("anhp", "val")
    assert ds.load("bookorder", "all") == ds.load("bookorder")  # no 'all' file: the splits concatenated
    with pytest.raises(KeyError, match="no split 'val'"):
        ds.load("mimic2", "val")


FEATURES = {
    "earthquakes_japan": ("lon", "lat"), "ridgecrest2019_comcat": ("lon", "lat", "magnitude", "depth"),
    "phuket_earthquakes": ("lon", "lat", "magnitude", "mb"), "chicago_shootings": ("lon", "lat"),
    "boko_haram_ucdp": ("lon", "lat"),
}


def test_only_the_located_datasets_have_features() -> None:
    assert {c.name: c.features for c in ds.list_datasets() if c.features} == FEATURES


@needs_data
@pytest.mark.parametrize("name", sorted(FEATURES))
def test_located_datasets_load_their_features_in_card_order(name: str) -> None:
    """Every split carries the staged per-event arrays as ``features [B, L, D]``, column d = array d."""
    c = ds.card(name)
    whole = ds.load(name)
    assert whole.feature_names == FEATURES[name] and whole.features.shape[-1] == len(FEATURES[name])
    for split, f in c.files.items():
        flat = ds.load(name, split if split != "all" else None).to_flat()
        with np.load(Path(DATA) / f.path) as staged:
            for d, feature in enumerate(FEATURES[name]):
                assert np.array_equal(flat["features"][:, d], staged[feature]), (split, feature)
    parts = [ds.load(name, s) for s in c.splits]
    assert all(p.feature_names == FEATURES[name] for p in parts)
    assert sum(p.num_events for p in parts) == whole.num_events
    assert np.isfinite(whole.features[whole.mask].numpy()).all()


def _local_sources(c: ds.Card, split: str, manifest: dict[str, Path]) -> dict[str, Path]:
    return {s.role: manifest[s.sha256] for s in c.download.files[split]}


def _conversions() -> list[tuple[str, str]]:
    return [(c.name, split) for c in ds.list_datasets() for split in c.download.files]


@needs_data
@pytest.mark.parametrize("name, split", _conversions())
def test_converter_on_local_original_gives_the_staged_events(name: str, split: str, manifest: dict[str, Path]) -> None:
    c = ds.card(name)
    f = c.files[split]
    options = {**c.download.options, **(f.options if f.format == c.download.format else {}), "num_marks": c.num_marks,
               "features": list(c.features)}
    converted = convert(c.download.format, _local_sources(c, split, manifest), options)
    assert converted == ds.load(name, split if split != "all" else None)


@needs_data
def test_download_path_rebuilds_staged_files_from_originals(monkeypatch: pytest.MonkeyPatch,
                                                           manifest: dict[str, Path]) -> None:
    """Without $TPP_DATA_DIR, load fetches (here: copies) the originals, converts them and caches the result."""
    url_to_local = {
        s.url: manifest[s.sha256]
        for c in ds.list_datasets() for srcs in c.download.files.values() for s in srcs if s.member is None
    }
    staged = {key: ds.load(*key) for key in [("taxi", None), ("mimic2", "train"), ("anhp", "val"),
                                             ("earthquakes_japan", "val")]}
    calls: list[str] = []

    def fake(url: str, dest: Path, timeout: float = 0) -> None:
        calls.append(url)
        shutil.copyfile(url_to_local[url], dest)

    monkeypatch.setattr(registry, "download_url", fake)
    monkeypatch.delenv("TPP_DATA_DIR")
    for (name, split), expected in staged.items():
        assert ds.load(name, split) == expected
    assert len(calls) == 5  # taxi.pkl, mimic2 time+event fold 1 train, anhp dev.pkl, earthquakes data_val.pkl
    for (name, split), expected in staged.items():
        assert ds.load(name, split, download=False) == expected  # now from the cache (features too)
    assert len(calls) == 5
    assert staged[("earthquakes_japan", "val")].feature_names == ("lon", "lat")
