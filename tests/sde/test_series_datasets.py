"""The time-series registry (sde.datasets): cards, checksums, the readers on real files and on broken ones.

Tests marked ``needs_data`` read the staged data through $TPP_DATA_DIR; the others write their own small
files. No test touches the network or the user's cache.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import sde.datasets as sd
import sde.readers as readers
import tpp.datasets as ds
import tpp.registry as registry
from sde.series import SeriesDataError
from tpp.events import EventDataError

DATA = os.environ.get("TPP_DATA_DIR")
needs_data = pytest.mark.skipif(not DATA or not Path(DATA).is_dir(),
                                reason="needs the staged real datasets: set TPP_DATA_DIR to the shared data folder")

UEA = {"basicmotions", "japanesevowels", "plaid", "gunpoint", "italypowerdemand", "osuleaf", "acsf1", "tecator",
       "cardanosentiment"}
PHYSIONET = {"physionet2012", "physionet2012_first200", "physionet2012_b"}
FORECAST = {"airline", "lynx", "pbs", "shampoo_sales", "uschange", "solar", "m1_yearly", "co2", "sunspots", "nile",
            "elnino", "macrodata"}


pytestmark = pytest.mark.usefixtures("offline_registry")  # private cache, no network (tests/conftest.py)


@pytest.fixture(scope="module")
def manifest() -> dict[str, str]:
    """relative path -> sha256, from MANIFEST.sha256 of $TPP_DATA_DIR."""
    out = {}
    for line in (Path(DATA or ".") / "MANIFEST.sha256").read_text().splitlines():
        digest, rel = line.split(maxsplit=1)
        out[rel.strip().removeprefix("./")] = digest
    return out


# --------------------------------------------------------------------------- cards (no data needed)
def test_every_card_parses_with_the_required_fields():
    cards = sd.list_series()
    assert {c.name for c in cards} == UEA | PHYSIONET | FORECAST
    for c in cards:
        for key in ("description", "source", "url", "licence", "licence_note", "citation", "units"):
            assert getattr(c, key).strip(), f"{c.name}: empty {key}"
        assert c.num_series > 0 and c.num_rows >= c.num_series and c.num_channels > 0
        assert (c.task == "classification") == (c.num_classes >= 2)
        if c.name in PHYSIONET:
            assert c.download is None and set(c.splits) == {"train", "val", "test"}
            assert c.files["all"].companions["outcomes"][0].startswith("physionet2012/Outcomes-")
            continue
        assert c.download is not None and set(c.download) == set(c.files), c.name
        for split, sources in c.download.items():
            (src,) = sources
            assert src.url.startswith("https://files.pythonhosted.org/") and src.archive_sha256 and src.member
            assert src.sha256 == c.files[split].sha256, f"{c.name}: the wheel member is the staged file"
    assert sd.series_card("BasicMotions").name == "basicmotions" and sd.series_card("p12").name == "physionet2012"
    with pytest.raises(KeyError, match="did you mean 'basicmotions'"):
        sd.series_card("basicmotion")


def test_both_packages_answer_the_same_verbs_with_one_code():
    for verb in ("load", "card", "list_datasets", "describe", "download", "verify"):
        ours, theirs = getattr(sd, verb), getattr(ds, verb)
        assert ours.__func__ is theirs.__func__ is getattr(registry.Registry, verb), verb
    assert (sd.load_series, sd.series_card, sd.list_series, sd.describe_series) == (sd.load, sd.card,
                                                                                  sd.list_datasets, sd.describe)
    assert (sd.read_ts, sd.read_tsf, sd.read_csv_series, sd.read_physionet2012) == (
        readers.read_ts, readers.read_tsf, readers.read_csv_series, readers.read_physionet2012)
    assert list(sd.describe().columns) == ["name", "task", "series", "rows", "channels", "classes", "licence"]
    assert len(sd.describe()) == len(sd.list_datasets()) == len(UEA | PHYSIONET | FORECAST)


def test_sde_imports_no_private_name_of_tpp():
    """``sde`` may use only the public names of ``tpp`` (the architecture's one rule across the packages)."""
    import ast

    root = Path(sd.__file__).parent
    private = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tpp":
                private += [f"{path}:{node.lineno} {node.module}.{a.name}" for a in node.names
                            if a.name.startswith("_")]
                private += [f"{path}:{node.lineno} {node.module}" for part in (node.module or "").split(".")
                            if part.startswith("_")]
            elif isinstance(node, ast.Import):
                private += [f"{path}:{node.lineno} {a.name}" for a in node.names
                            if a.name.split(".")[0] == "tpp" and any(p.startswith("_") for p in a.name.split("."))]
    assert private == []


def test_unknown_split_names_the_choices():
    with pytest.raises(KeyError, match=r"no validation split.*split\(\(0.8, 0.2\)"):
        sd.load_series("basicmotions", "val")
    with pytest.raises(KeyError, match="choose one of"):
        sd.load_series("physionet2012_first200", "holdout")


@needs_data
def test_every_card_sha256_matches_the_manifest(manifest):
    for c in sd.list_series():
        for f in c.files.values():
            assert manifest.get(f.path) == f.sha256, f"{c.name}: {f.path}"
            for path, sha in f.companions.values():
                assert manifest.get(path) == sha, f"{c.name}: {path}"


@needs_data
def test_verify_gives_every_checked_file_by_split_and_role():
    paths = sd.verify("physionet2012_first200")
    assert set(paths) == {"all", "all.outcomes"} and paths["all.outcomes"].name == "Outcomes-a.txt"
    assert {k: p.name for k, p in sd.verify("gunpoint").items()} == {"train": "GunPoint_TRAIN.ts",
                                                                     "test": "GunPoint_TEST.ts"}


# --------------------------------------------------------------------------- real data
@needs_data
def test_basicmotions_shapes_and_classes():
    train, test = sd.load_series("basicmotions", "train"), sd.load_series("basicmotions", "test")
    for b in (train, test):
        assert (len(b), b.max_length, b.num_channels, b.num_classes) == (40, 100, 6, 4)
        assert b.class_names == ("Standing", "Running", "Walking", "Badminton")
        assert np.bincount(b.labels.numpy()).tolist() == [10, 10, 10, 10]
        assert torch.equal(b.time[0], torch.arange(100, dtype=torch.float64))  # no clock: time = index
        assert not torch.isnan(b.values).any()
    assert len(sd.load_series("basicmotions")) == 80


@needs_data
def test_japanesevowels_has_variable_lengths():
    train, test = sd.load_series("japanesevowels", "train"), sd.load_series("japanesevowels", "test")
    assert (len(train), len(test), train.num_channels, train.num_classes) == (270, 370, 12, 9)
    assert (int(train.lengths.min()), int(train.lengths.max())) == (7, 26)
    assert (int(test.lengths.min()), int(test.lengths.max())) == (7, 29)
    assert np.bincount(train.labels.numpy()).tolist() == [30] * 9
    short = int(train.lengths.argmin())
    assert torch.isnan(train.values[short, 7:]).all() and not torch.isnan(train.values[short, :7]).any()


@needs_data
def test_regression_sets_give_targets():
    tecator = sd.load_series("tecator", "train")
    assert tecator.labels is None and tecator.targets.shape == (172, 1) and tecator.num_channels == 1
    cardano = sd.load_series("cardanosentiment", "test")
    assert cardano.targets.shape == (33, 1) and cardano.num_channels == 2 and torch.isfinite(cardano.targets).all()


@needs_data
def test_physionet_first200_parse_labels_and_cache(monkeypatch):
    b = sd.load_series("physionet2012_first200")
    assert (len(b), b.num_channels, b.num_classes) == (200, 37, 2)
    assert b.channel_names == sd.PHYSIONET_CHANNELS and b.class_names == ("survived", "died")
    outcomes = pd.read_csv(Path(DATA) / "physionet2012" / "Outcomes-a.txt").set_index("RecordID")
    expected = outcomes.loc[[int(i) for i in b.ids], "In-hospital_death"].to_numpy()
    assert torch.equal(b.labels, torch.tensor(expected)) and int(b.labels.sum()) == 25
    assert list(b.ids) == sorted(b.ids) and b.ids[0] == "132539"
    assert torch.all(b.time[:, 0] == 0) and float(b.time[b.mask].max()) <= 48.0  # admission row, hours
    # record 132540 (the file shown in the data README): pH 7.45 at 00:42, HR 88 at 01:11, Weight 76 at t = 0
    r = b.ids.index("132540")
    ch = sd.PHYSIONET_CHANNELS.index
    rows = {round(float(t) * 60): k for k, t in enumerate(b.time[r, : int(b.lengths[r])])}
    assert float(b.values[r, rows[42], ch("pH")]) == 7.45 and float(b.values[r, rows[71], ch("HR")]) == 88
    assert float(b.values[r, rows[0], ch("Weight")]) == 76
    assert (Path(os.environ["TPP_CACHE_DIR"]) / "series" / "physionet2012").is_dir()

    def no_parse(*args, **kwargs):
        raise AssertionError("parsed again instead of reading the cache")

    monkeypatch.setattr(readers, "_parse_physionet", no_parse)
    parts = [sd.load_series("physionet2012_first200", s) for s in ("train", "val", "test")]
    assert all(abs(len(p) - f * 200) <= 2 for p, f in zip(parts, (0.7, 0.15, 0.15)))  # up to one per class
    assert sorted(i for p in parts for i in p.ids) == sorted(b.ids)
    assert sum(int(p.labels.sum()) for p in parts) == 25 and all(int(p.labels.sum()) >= 3 for p in parts[1:])


@needs_data
def test_forecasting_series_load_with_their_time_index():
    air = sd.load_series("airline")
    assert (len(air), air.num_events) == (1, 144) and torch.equal(air.time[0], torch.arange(144, dtype=torch.float64))
    assert float(air.values[0, 0, 0]) == 112 and air.channel_names == ("Passengers",)
    co2 = sd.load_series("co2")
    assert co2.num_events == 2284 and int(torch.isnan(co2.values).sum()) == 59 and float(co2.time[0, -1]) == 2283
    elnino = sd.load_series("elnino")
    assert elnino.num_events == 732 and float(elnino.values[0, 1, 0]) == 24.2  # 1950 February
    macro = sd.load_series("macrodata")
    assert macro.num_channels == 12 and float(macro.time[0, -1]) == 202
    solar = sd.load_series("solar")
    assert float(solar.time[0, 1]) == 0.5 and float(solar.time[0, -1]) == 144.0  # hours, half-hourly rows
    m1 = sd.load_series("m1_yearly")
    assert len(m1) == 181 and m1.ids[:2] == ("T1", "T2") and int(m1.lengths[0]) == 28


@needs_data
def test_a_changed_file_is_refused(tmp_path):
    root = tmp_path / "data"
    (root / "uea_GunPoint").mkdir(parents=True)
    (root / "uea_GunPoint" / "GunPoint_TRAIN.ts").write_text("@problemName GunPoint\n@data\n1,2,3:1\n")
    with pytest.raises(ds.ChecksumError, match="GunPoint_TRAIN.ts: sha256 mismatch"):
        sd.load_series("gunpoint", "train", data_dir=root)


def test_missing_files_without_download_say_where_they_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("TPP_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="download=False"):
        sd.load_series("nile", data_dir=tmp_path, download=False)
    with pytest.raises(FileNotFoundError, match="no \\[download\\]"):
        sd.load_series("physionet2012_first200", data_dir=tmp_path)


def test_download_fetches_checks_and_caches_the_wheel_member(tmp_path, monkeypatch):
    ts = b"@problemName Toy\n@univariate true\n@classLabel true a b\n@data\n1,2,3:a\n4,5,6,7:b\n"
    wheel = tmp_path / "toy-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("toy/data/Toy_TRAIN.ts", ts)
    sha, archive_sha = hashlib.sha256(ts).hexdigest(), hashlib.sha256(wheel.read_bytes()).hexdigest()
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "toy.toml").write_text(f'''
name = "toy"
description = "d"
source = "s"
url = "https://example.org"
licence = "l"
licence_note = "n"
citation = "c"
units = "index"
task = "classification"
format = "ts"
num_series = 2
num_rows = 7
num_channels = 1
num_classes = 2
splits = ["train"]
[files.train]
path = "toy/Toy_TRAIN.ts"
sha256 = "{sha}"
num_series = 2
num_rows = 7
[download.train]
data = {{ url = "https://files.example.org/toy-1.0-py3-none-any.whl", archive_sha256 = "{archive_sha}", \
member = "toy/data/Toy_TRAIN.ts", sha256 = "{sha}" }}
''')
    monkeypatch.setattr(sd.REGISTRY, "cards_dir", cards)
    monkeypatch.delenv("TPP_DATA_DIR", raising=False)
    calls = []

    def fake_download(url: str, dest: Path, timeout: float = 0) -> None:
        calls.append(url)
        dest.write_bytes(wheel.read_bytes())

    monkeypatch.setattr(registry, "download_url", fake_download)
    b = sd.load_series("toy", "train")
    assert len(calls) == 1 and b.lengths.tolist() == [3, 4] and b.class_names == ("a", "b")
    assert sd.load_series("toy", "train", download=False) == b and len(calls) == 1  # from the cache now
    # a corrupted wheel is refused and deleted
    cached = Path(os.environ["TPP_CACHE_DIR"]) / "series" / "toy" / "original" / "Toy_TRAIN.ts"
    cached.unlink()
    monkeypatch.setattr(registry, "download_url", lambda url, dest, timeout=0: dest.write_bytes(b"not a wheel"))
    with pytest.raises(ds.ChecksumError, match="sha256 mismatch"):
        sd.load_series("toy", "train")


# --------------------------------------------------------------------------- broken files
TS_HEAD = ("# comment\n@problemName Toy\n@timeStamps false\n@univariate false\n@dimensions 2\n"
           "@classLabel true up down\n@data\n")


def write(tmp_path: Path, text: str, name: str = "toy.ts") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_read_ts_parses_missing_values_and_trailing_padding(tmp_path):
    b = sd.read_ts(write(tmp_path, TS_HEAD + "1,?,3:4,5,6:up\n1,2,?,?:3,4,?,?:down\n"))
    assert b.lengths.tolist() == [3, 2] and b.labels.tolist() == [0, 1] and b.class_names == ("up", "down")
    assert torch.isnan(b.values[0, 1, 0]) and b.values[0, 1, 1] == 5.0 and torch.isnan(b.values[1, 2]).all()


def test_read_ts_with_numeric_time_stamps_takes_the_union_of_channel_times(tmp_path):
    head = TS_HEAD.replace("@timeStamps false", "@timeStamps true")
    b = sd.read_ts(write(tmp_path, head + "(0,1.0),(2.5,2.0):(1,7.0),(2.5,8.0):up\n"))
    assert b.time[0].tolist() == [0.0, 1.0, 2.5]
    assert torch.equal(torch.isnan(b.values[0]), torch.tensor([[False, True], [True, False], [False, False]]))


@pytest.mark.parametrize(
    "body, line, series, field, fragment",
    [
        ("1,2,3:4,5,6:up\n1,x,3:4,5,6:down\n", 9, 1, "channel 0", "'x' at position 1 is not a number"),
        ("1,2,3:4,5,6:sideways\n", 8, 0, "label", "class 'sideways'"),
        ("1,2,3:4,5:up\n", 8, 0, "channel 1", "channel 1 has 2 values"),
        ("1,2,3:up\n", 8, 0, None, "expected 2 channel(s) and a label"),
        ("1,2,inf:4,5,6:up\n", 8, 0, "channel 0", "not finite"),
        ("?,?:?,?:up\n", 8, 0, None, "every value is missing"),
    ],
)
def test_read_ts_errors_name_file_line_series_and_field(tmp_path, body, line, series, field, fragment):
    path = write(tmp_path, TS_HEAD + body)
    with pytest.raises(SeriesDataError) as info:
        sd.read_ts(path)
    err = info.value
    assert isinstance(err, EventDataError) and (err.line, err.series, err.field) == (line, series, field)
    assert str(path) in str(err) and f"line {line}" in str(err) and fragment in str(err)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("@problemName Toy\n1,2:up\n", "expected an @header line"),
        ("@problemName Toy\n@colour blue\n@data\n1:up\n", "unknown header @colour"),
        ("@problemName Toy\n@classLabel maybe\n@data\n1:up\n", "must be true or false"),
        ("@problemName Toy\n@univariate true\n", "no @data"),
        # found by the CLI corpus' generated files: "0" passed isdigit() and reached chans[0] of no channels
        ("@dimensions 0\n@targetLabel true\n@data\n0\n", "@dimensions '0' is not a positive integer"),
        ("@problemName Toy\n@equalLength true\n@seriesLength 3\n@data\n1,2,3\n1,2\n", "header says equal lengths"),
    ],
)
def test_read_ts_header_errors(tmp_path, text, fragment):
    with pytest.raises(SeriesDataError, match=fragment):
        sd.read_ts(write(tmp_path, text))


def test_read_tsf_and_csv_errors_name_the_place(tmp_path):
    tsf = "@relation R\n@attribute series_name string\n@attribute start_timestamp date\n@data\n"
    b = sd.read_tsf(write(tmp_path, tsf + "A:2000-01-01 00-00-00:1,2,?,4\n", "ok.tsf"))
    assert b.ids == ("A",) and torch.isnan(b.values[0, 2, 0]) and b.lengths.tolist() == [4]
    with pytest.raises(SeriesDataError, match=r"line 6, series 1: 2 ':'-separated fields"):
        sd.read_tsf(write(tmp_path, tsf + "A:2000-01-01 00-00-00:1,2\nB:3,4\n", "bad.tsf"))
    csv = write(tmp_path, "month,sales\n2000-01,1\n2000-02,two\n", "bad.csv")
    with pytest.raises(SeriesDataError, match=r"bad.csv, line 3, field 'sales': 'two' is not a number"):
        sd.read_csv_series(csv, time="month", unit="M", values=["sales"])
    csv = write(tmp_path, "month,sales\n2000-01,1\n2000-13,2\n", "badtime.csv")
    with pytest.raises(SeriesDataError, match=r"field 'month': cannot read the time column"):
        sd.read_csv_series(csv, time="month", unit="M", values=["sales"])
    with pytest.raises(SeriesDataError, match=r"ragged.csv, line 3: not a CSV table"):
        sd.read_csv_series(write(tmp_path, "q,v\n1999 Q4,1\n2000 Q2,1,2\n", "ragged.csv"), time="q", unit="Q")
    ok = sd.read_csv_series(write(tmp_path, "q,v\n1999 Q4,1\n2000 Q2,\n", "gap.csv"), time="q", unit="Q", values=["v"])
    assert ok.time[0].tolist() == [0.0, 2.0] and torch.isnan(ok.values[0, 1, 0])  # a gap in time, a missing value


def physionet(tmp_path: Path, records: dict[str, str], outcomes: str) -> tuple[Path, Path]:
    archive = tmp_path / "set.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for name, text in records.items():
            data = text.encode()
            info = tarfile.TarInfo(f"set-a/{name}.txt")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    out = tmp_path / "Outcomes.txt"
    out.write_text("RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death\n" + outcomes)
    return archive, out


REC = ("Time,Parameter,Value\n00:00,RecordID,{id}\n00:00,Age,54\n00:00,Weight,-1\n00:30,HR,80\n00:30,HR,90\n"
       "01:15,Temp,37.5\n")


def test_read_physionet_small_records(tmp_path):
    archive, out = physionet(tmp_path, {"1": REC.format(id=1), "2": REC.format(id=2).replace("37.5", "38")},
                             "1,0,0,5,-1,0\n2,0,0,5,-1,1\n")
    b = sd.read_physionet2012(archive, out, cache=False)
    assert b.ids == ("1", "2") and b.labels.tolist() == [0, 1] and b.lengths.tolist() == [3, 3]
    assert torch.allclose(b.time[0], torch.tensor([0.0, 0.5, 1.25], dtype=torch.float64))
    ch = sd.PHYSIONET_CHANNELS.index
    assert float(b.values[0, 1, ch("HR")]) == 85.0  # two values at one time are averaged
    assert torch.isnan(b.values[0, 0]).all()  # Weight -1 is missing: the admission row is empty
    assert float(b.values[1, 2, ch("Temp")]) == 38.0


@pytest.mark.parametrize(
    "record, outcomes, fragment, line, field",
    [
        (REC.format(id=1).replace("01:15", "1:15"), "1,0,0,5,-1,0\n", "time '1:15' is not HH:MM", 7, "Time"),
        (REC.format(id=1).replace("Temp", "Mood"), "1,0,0,5,-1,0\n", "unknown parameter 'Mood'", 7, "Parameter"),
        (REC.format(id=1).replace("37.5", "warm"), "1,0,0,5,-1,0\n", "value 'warm' is not a finite number", 7,
         "Value"),
        (REC.format(id=7), "1,0,0,5,-1,0\n", "RecordID 7 does not match the file name", None, "RecordID"),
        (REC.format(id=1), "2,0,0,5,-1,0\n", "record 1 has no row in the outcomes file", None, "RecordID"),
        (REC.format(id=1), "1,0,0,5,-1,2\n", "In-hospital_death is 2", 2, "In-hospital_death"),
    ],
)
def test_read_physionet_errors_name_file_line_and_field(tmp_path, record, outcomes, fragment, line, field):
    archive, out = physionet(tmp_path, {"1": record}, outcomes)
    with pytest.raises(SeriesDataError) as info:
        sd.read_physionet2012(archive, out, cache=False)
    err = info.value
    assert fragment in str(err) and (err.line, err.field) == (line, field)
    assert ("set-a/1.txt" in str(err)) or ("Outcomes.txt" in str(err))
