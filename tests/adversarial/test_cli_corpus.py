"""Every odd or malformed file given to ``tpp fit`` / ``sde fit`` ends cleanly (issue 13).

The property: exit code 0 or 2, no traceback, at most three lines on stderr, within 60 s. The corpus is
hand-written cases for each reader (CSV, Parquet, JSON/JSONL, .npz, .pkl, UEA .ts, .tsf, CSV series)
plus hypothesis-generated CSV and .ts texts; each file runs through the CLI in-process with typer's
CliRunner, so a crash shows as ``result.exception`` rather than a dead process.
"""

from __future__ import annotations

import pickle
import resource
import time
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sde.cli import app as sde_app
from tpp.cli import app as tpp_app

TIME_LIMIT_S = 60.0
MEMORY_LIMIT_KB = 8 * 1024 * 1024  # ru_maxrss is in KiB on Linux

# --------------------------------------------------------------------------- the corpus
Writer = Callable[[Path], None]


def _text(content: str, encoding: str = "utf-8") -> Writer:
    return lambda p: p.write_bytes(content.encode(encoding))


def _bytes(content: bytes) -> Writer:
    return lambda p: p.write_bytes(content)


def _parquet(df: pd.DataFrame) -> Writer:
    return lambda p: df.to_parquet(p)


def _npz(**arrays: np.ndarray) -> Writer:
    def write(p: Path) -> None:
        with open(p, "wb") as fh:
            np.savez(fh, **arrays)
    return write


def _npz_with_object(p: Path) -> None:
    with open(p, "wb") as fh:  # object arrays are stored as pickles inside the archive
        np.savez(fh, times=np.array([1.0, "a", None], dtype=object), seq_offsets=np.array([0, 3]))


def _npy(p: Path) -> None:
    with open(p, "wb") as fh:
        np.save(fh, np.arange(5.0))


def _zip_not_npz(p: Path) -> None:
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("times.txt", "1 2 3")


def _pickle(obj: object, protocol: int = 4) -> Writer:
    return lambda p: p.write_bytes(pickle.dumps(obj, protocol=protocol))


class _NotOurs:  # a class of this test module: unpickling it would import and run foreign code
    pass


_MALICIOUS_PICKLE = b"cos\nsystem\n(S'echo pwned > /dev/null'\ntR."  # os.system(...) on load

_GOOD_CSV = "seq,time,mark\n0,0.5,0\n0,1.5,1\n0,2.0,0\n1,0.3,1\n1,0.9,0\n1,2.2,1\n2,0.1,0\n2,1.1,0\n"

TPP_CASES: dict[str, Writer] = {
    # ---- CSV
    "empty.csv": _text(""),
    "blank_lines.csv": _text("\n\n\n"),
    "header_only.csv": _text("seq,time,mark\n"),
    "no_time_column.csv": _text("seq,mark\n0,1\n0,2\n"),
    "no_mark_column.csv": _text("seq,time\n0,1.0\n0,2.0\n1,0.5\n"),
    "no_seq_column.csv": _text("time,mark\n1.0,0\n2.0,1\n"),
    "text_time.csv": _text("seq,time,mark\n0,abc,0\n0,2.0,1\n"),
    "text_mark.csv": _text("seq,time,mark\n0,1.0,x\n0,2.0,y\n"),
    "nan_time.csv": _text("seq,time,mark\n0,nan,0\n0,2.0,1\n"),
    "inf_time.csv": _text("seq,time,mark\n0,1.0,0\n0,inf,1\n"),
    "neg_inf_time.csv": _text("seq,time,mark\n0,-inf,0\n0,1.0,1\n"),
    "empty_time_cell.csv": _text("seq,time,mark\n0,,0\n0,1.0,1\n"),
    "unsorted_times.csv": _text("seq,time,mark\n0,3.0,0\n0,1.0,1\n0,2.0,0\n"),
    "duplicate_times.csv": _text("seq,time,mark\n0,1.0,0\n0,1.0,1\n0,1.0,0\n"),
    "negative_times.csv": _text("seq,time,mark\n0,-5.0,0\n0,-1.0,1\n"),
    "duplicate_header.csv": _text("seq,time,time,mark\n0,1.0,2.0,0\n0,2.0,3.0,1\n"),
    "huge_times.csv": _text("seq,time,mark\n0,1e300,0\n0,1.7e308,1\n"),
    "overflow_times.csv": _text("seq,time,mark\n0,1e400,0\n0,1e401,1\n"),
    "tiny_times.csv": _text("seq,time,mark\n0,1e-320,0\n0,2e-320,1\n"),
    "huge_mark.csv": _text("seq,time,mark\n0,1.0,99999999999\n0,2.0,0\n"),
    "huge_int_mark.csv": _text("seq,time,mark\n0,1.0,123456789012345678901234567890\n0,2.0,0\n"),
    "negative_marks.csv": _text("seq,time,mark\n0,1.0,-1\n0,2.0,0\n"),
    "float_marks.csv": _text("seq,time,mark\n0,1.0,0.5\n0,2.0,1.5\n"),
    "integral_float_marks.csv": _text("seq,time,mark\n0,1.0,0.0\n0,2.0,1.0\n"),
    "nan_mark.csv": _text("seq,time,mark\n0,1.0,nan\n0,2.0,1\n"),
    "bool_marks.csv": _text("seq,time,mark\n0,1.0,True\n0,2.0,False\n"),
    "bom.csv": _text("\ufeff" + _GOOD_CSV),
    "utf16.csv": _text(_GOOD_CSV, "utf-16"),
    "latin1_ids.csv": lambda p: p.write_bytes("seq,time,mark\n\xe9,1.0,0\n\xe9,2.0,1\n".encode("latin-1")),
    "semicolon.csv": _text(_GOOD_CSV.replace(",", ";")),
    "tabs.csv": _text(_GOOD_CSV.replace(",", "\t")),
    "decimal_comma.csv": _text("seq;time;mark\n0;1,5;0\n0;2,5;1\n"),
    "binary_garbage.csv": _bytes(bytes(range(256)) * 4),
    "nul_bytes.csv": _bytes(b"seq,time,mark\n0,1.0\x00,0\n"),
    "single_row.csv": _text("seq,time,mark\n0,1.0,0\n"),
    "single_column_single_value.csv": _text("time\n1.0\n"),
    "ragged_rows.csv": _text("seq,time,mark\n0,1.0,0,7,8\n0,2.0\n"),
    "unclosed_quote.csv": _text('seq,time,mark\n0,"1.0,0\n0,2.0,1\n'),
    "quoted_numbers.csv": _text('seq,time,mark\n"0","1.0","0"\n"0","2.0","1"\n'),
    "whitespace_cells.csv": _text("seq,time,mark\n0, 1.0 , 0\n0, 2.0 ,1\n"),
    "crlf.csv": _text(_GOOD_CSV.replace("\n", "\r\n")),
    "cr_only.csv": _text(_GOOD_CSV.replace("\n", "\r")),
    "no_trailing_newline.csv": _text(_GOOD_CSV.rstrip("\n")),
    "many_sequences_one_event.csv": _text("seq,time,mark\n" + "".join(f"{i},1.0,0\n" for i in range(50))),
    "empty_seq_id.csv": _text("seq,time,mark\n,1.0,0\n0,2.0,1\n"),
    "na_seq_id.csv": _text("seq,time,mark\nNA,1.0,0\nNA,2.0,1\n"),
    "header_uppercase.csv": _text(_GOOD_CSV.replace("seq,time,mark", "SEQ,TIME,MARK")),
    "header_with_spaces.csv": _text(_GOOD_CSV.replace("seq,time,mark", " seq , time , mark ")),
    "all_same_time.csv": _text("seq,time,mark\n" + "0,1.0,0\n" * 200),
    "zero_times.csv": _text("seq,time,mark\n0,0,0\n0,0,1\n"),
    "hex_times.csv": _text("seq,time,mark\n0,0x10,0\n0,0x20,1\n"),
    "date_times.csv": _text("seq,time,mark\n0,2020-01-01,0\n0,2020-01-02,1\n"),
    "mark_only_header.csv": _text("mark\n0\n1\n"),
    "many_columns.csv": _text(",".join(f"c{i}" for i in range(300)) + "\n" + ",".join("1" for _ in range(300)) + "\n"),
    "long_line.csv": _text("seq,time,mark\n0," + "1" * 5000 + ",0\n"),
    "html.csv": _text("<html><body>404 Not Found</body></html>\n"),
    "json_in_csv.csv": _text('{"seq": 0, "time": 1.0}\n'),
    "gzip_not.csv.gz": _bytes(b"this is not gzip"),
    # ---- Parquet
    "empty.parquet": _parquet(pd.DataFrame({"seq": pd.Series([], dtype=str), "time": pd.Series([], dtype=float),
                                            "mark": pd.Series([], dtype=int)})),
    "no_columns.parquet": _parquet(pd.DataFrame()),
    "text_time.parquet": _parquet(pd.DataFrame({"seq": ["0", "0"], "time": ["a", "b"], "mark": [0, 1]})),
    "bytes_time.parquet": _parquet(pd.DataFrame({"seq": ["0", "0"], "time": [b"a", b"b"], "mark": [0, 1]})),
    "bool_time.parquet": _parquet(pd.DataFrame({"seq": ["0", "0"], "time": [True, False], "mark": [0, 1]})),
    "datetime_time.parquet": _parquet(pd.DataFrame({"seq": ["0", "0"], "time": pd.to_datetime(["2020-01-01",
                                                                                                "2020-01-02"]),
                                                    "mark": [0, 1]})),
    "nested_time.parquet": _parquet(pd.DataFrame({"seq": ["0", "1"], "time": [[1.0, 2.0], [3.0]], "mark": [0, 1]})),
    "struct_mark.parquet": _parquet(pd.DataFrame({"seq": ["0", "0"], "time": [1.0, 2.0],
                                                  "mark": [{"a": 1}, {"a": 2}]})),
    "nested_seq.parquet": _parquet(pd.DataFrame({"seq": [[0], [0]], "time": [1.0, 2.0], "mark": [0, 1]})),
    "float_seq.parquet": _parquet(pd.DataFrame({"seq": [0.5, 0.5], "time": [1.0, 2.0], "mark": [0, 1]})),
    "nan_time.parquet": _parquet(pd.DataFrame({"seq": ["0", "0"], "time": [np.nan, 2.0], "mark": [0, 1]})),
    "inf_time.parquet": _parquet(pd.DataFrame({"seq": ["0", "0"], "time": [1.0, np.inf], "mark": [0, 1]})),
    "float_mark.parquet": _parquet(pd.DataFrame({"seq": ["0", "0"], "time": [1.0, 2.0], "mark": [0.5, 1.5]})),
    "negative_mark.parquet": _parquet(pd.DataFrame({"seq": ["0", "0"], "time": [1.0, 2.0], "mark": [-3, 1]})),
    "uint64_mark.parquet": _parquet(pd.DataFrame({"seq": ["0", "0"], "time": [1.0, 2.0],
                                                  "mark": np.array([2**63, 1], dtype=np.uint64)})),
    "categorical_mark.parquet": _parquet(pd.DataFrame({"seq": ["0", "0"], "time": [1.0, 2.0],
                                                       "mark": pd.Categorical(["a", "b"])})),
    "int_time_overflow.parquet": _parquet(pd.DataFrame({"seq": ["0", "0"], "time": np.array([2**62, 2**63 - 1]),
                                                        "mark": [0, 1]})),
    "not_parquet.parquet": _text(_GOOD_CSV),
    "truncated.parquet": lambda p: (pd.DataFrame({"seq": ["0"], "time": [1.0], "mark": [0]}).to_parquet(p),
                                    p.write_bytes(p.read_bytes()[:40])),
    # ---- JSON / JSONL
    "empty.json": _text(""),
    "invalid.json": _text("{not json"),
    "number.json": _text("42"),
    "string.json": _text('"hello"'),
    "null.json": _text("null"),
    "empty_list.json": _text("[]"),
    "empty_dict.json": _text("{}"),
    "list_of_numbers.json": _text("[1, 2, 3]"),
    "list_of_lists.json": _text("[[1, 2], [3]]"),
    "list_of_strings.json": _text('["a", "b"]'),
    "nested_garbage.json": _text('[{"a": [{"b": {"c": []}}]}]'),
    "deep_nesting.json": _text("[" * 5000 + "]" * 5000),
    "rows_text_time.json": _text('[{"seq": 0, "time": "x", "mark": 0}]'),
    "rows_missing_time.json": _text('[{"seq": 0, "time": 1.0, "mark": 0}, {"seq": 0, "mark": 1}]'),
    "rows_mixed.json": _text('[{"seq": 0, "time": 1.0, "mark": 0}, 5, "x"]'),
    "rows_nested_time.json": _text('[{"seq": 0, "time": [1.0], "mark": 0}]'),
    "rows_dict_seq.json": _text('[{"seq": {"a": 1}, "time": 1.0, "mark": 0}]'),
    "rows_nan.json": _text('[{"seq": 0, "time": NaN, "mark": 0}, {"seq": 0, "time": Infinity, "mark": 1}]'),
    "easytpp_no_dim.json": _text('{"train": [[{"time_since_start": 1.0, "type_event": 0}]]}'),
    "easytpp_bad_dim.json": _text('{"dim_process": "x", "train": [[{"time_since_start": 1.0, "type_event": 0}]]}'),
    "easytpp_neg_dim.json": _text('{"dim_process": -2, "train": [[{"time_since_start": 1.0, "type_event": 0}]]}'),
    "easytpp_split_not_list.json": _text('{"dim_process": 2, "train": 5}'),
    "easytpp_seq_not_list.json": _text('{"dim_process": 2, "train": [5, 6]}'),
    "easytpp_event_not_dict.json": _text('{"dim_process": 2, "train": [[1.0, 2.0]]}'),
    "easytpp_missing_key.json": _text('{"dim_process": 2, "train": [[{"time_since_start": 1.0}]]}'),
    "easytpp_text_time.json": _text('{"dim_process": 2, "train": [[{"time_since_start": "a", "type_event": 0}]]}'),
    "easytpp_mark_out_of_range.json": _text('{"dim_process": 2, "train": '
                                            '[[{"time_since_start": 1.0, "type_event": 7}]]}'),
    "easytpp_empty_split.json": _text('{"dim_process": 2, "train": []}'),
    "easytpp_empty_seq.json": _text('{"dim_process": 2, "train": [[]]}'),
    "empty.jsonl": _text(""),
    "blank.jsonl": _text("\n\n"),
    "invalid_line.jsonl": _text('{"seq": 0, "time": 1.0, "mark": 0}\n{oops\n'),
    "numbers.jsonl": _text("1\n2\n3\n"),
    "lists.jsonl": _text("[1, 2]\n[3]\n"),
    "missing_time.jsonl": _text('{"seq": 0, "mark": 0}\n'),
    "text_time.jsonl": _text('{"seq": 0, "time": "late", "mark": 0}\n'),
    "null_time.jsonl": _text('{"seq": 0, "time": null, "mark": 0}\n'),
    "binary.jsonl": _bytes(bytes(range(256))),
    # ---- .npz
    "not_a_zip.npz": _text("hello"),
    "npy_not_npz.npz": _npy,
    "zip_not_npz.npz": _zip_not_npz,
    "empty_archive.npz": _npz(),
    "missing_times.npz": _npz(marks=np.array([0, 1]), seq_offsets=np.array([0, 2])),
    "missing_offsets.npz": _npz(times=np.array([1.0, 2.0]), marks=np.array([0, 1])),
    "times_2d.npz": _npz(times=np.ones((2, 2)), marks=np.array([0, 1, 0, 1]), seq_offsets=np.array([0, 4])),
    "text_times.npz": _npz(times=np.array(["a", "b"]), marks=np.array([0, 1]), seq_offsets=np.array([0, 2])),
    "complex_times.npz": _npz(times=np.array([1j, 2j]), marks=np.array([0, 1]), seq_offsets=np.array([0, 2])),
    "offsets_do_not_end_at_n.npz": _npz(times=np.array([1.0, 2.0]), marks=np.array([0, 1]), seq_offsets=np.array([0, 5])),
    "decreasing_offsets.npz": _npz(times=np.array([1.0, 2.0]), marks=np.array([0, 1]), seq_offsets=np.array([0, -1, 2])),
    "float_offsets.npz": _npz(times=np.array([1.0, 2.0]), marks=np.array([0, 1]), seq_offsets=np.array([0.0, 1.5, 2.0])),
    "offsets_2d.npz": _npz(times=np.array([1.0, 2.0]), marks=np.array([0, 1]), seq_offsets=np.array([[0, 2]])),
    "marks_wrong_length.npz": _npz(times=np.array([1.0, 2.0]), marks=np.array([0]), seq_offsets=np.array([0, 2])),
    "marks_float.npz": _npz(times=np.array([1.0, 2.0]), marks=np.array([0.5, 1.0]), seq_offsets=np.array([0, 2])),
    "marks_negative.npz": _npz(times=np.array([1.0, 2.0]), marks=np.array([-1, 0]), seq_offsets=np.array([0, 2])),
    "nan_times.npz": _npz(times=np.array([np.nan, 2.0]), marks=np.array([0, 1]), seq_offsets=np.array([0, 2])),
    "unsorted_times.npz": _npz(times=np.array([2.0, 1.0]), marks=np.array([0, 1]), seq_offsets=np.array([0, 2])),
    "scalar_times.npz": _npz(times=np.array(1.0), marks=np.array(0), seq_offsets=np.array(1)),
    "object_times.npz": _npz_with_object,
    "num_marks_text.npz": _npz(times=np.array([1.0, 2.0]), marks=np.array([0, 1]), seq_offsets=np.array([0, 2]),
                               num_marks=np.array("two")),
    "num_marks_zero.npz": _npz(times=np.array([1.0, 2.0]), marks=np.array([0, 1]), seq_offsets=np.array([0, 2]),
                               num_marks=np.array(0)),
    "t_end_before_times.npz": _npz(times=np.array([1.0, 2.0]), marks=np.array([0, 1]), seq_offsets=np.array([0, 2]),
                                   t_end=np.array([0.5])),
    "offsets_not_from_zero.npz": _npz(times=np.array([1.0, 2.0]), marks=np.array([0, 1]), seq_offsets=np.array([1, 2])),
    "bool_times.npz": _npz(times=np.array([True, False]), marks=np.array([0, 1]), seq_offsets=np.array([0, 2])),
    "huge_mark_ids.npz": _npz(times=np.array([1.0, 2.0]), marks=np.array([0, 2**62]), seq_offsets=np.array([0, 2])),
    "feature_names_mismatch.npz": _npz(times=np.array([1.0, 2.0]), marks=np.array([0, 1]), seq_offsets=np.array([0, 2]),
                                       features=np.ones((2, 3)), feature_names=np.array(["a"])),
    "truncated.npz": lambda p: (_npz(times=np.arange(100.0), marks=np.zeros(100, int), seq_offsets=np.array([0, 100]))(p),
                                p.write_bytes(p.read_bytes()[:300])),
    # ---- .pkl
    "empty.pkl": _bytes(b""),
    "garbage.pkl": _bytes(b"\x80\x04garbage"),
    "text.pkl": _text(_GOOD_CSV),
    "int.pkl": _pickle(5),
    "list_of_numbers.pkl": _pickle([1, 2, 3]),
    "dict_no_dim.pkl": _pickle({"train": []}),
    "foreign_class.pkl": _pickle({"dim_process": 2, "train": [[_NotOurs()]]}),
    "malicious.pkl": _bytes(_MALICIOUS_PICKLE),
    "dataframe.pkl": _pickle(pd.DataFrame({"seq": [0], "time": [1.0], "mark": [0]})),
    "protocol0.pkl": _pickle({"dim_process": 2, "train": [[{"time_since_start": "x", "type_event": 0}]]}, 0),
    "numpy_scalars.pkl": _pickle({"dim_process": 2, "train": [[{"time_since_start": np.float64(1.0),
                                                                "type_event": np.int64(0)}]]}),
    "unknown.suffix": _text(_GOOD_CSV),
    "no_suffix": _text(_GOOD_CSV),
}

_GOOD_TS = ("@problemName toy\n@timeStamps false\n@missing false\n@univariate true\n@equalLength true\n"
            "@seriesLength 4\n@classLabel true a b\n@data\n1,2,3,4:a\n2,3,4,5:b\n1,1,2,2:a\n3,2,1,0:b\n"
            + "".join(f"{k},{k + 1},{k % 3},{k}:{'ab'[k % 2]}\n" for k in range(8)))

SDE_CASES: dict[str, Writer] = {
    # ---- UEA .ts
    "empty.ts": _text(""),
    "only_comments.ts": _text("# nothing\n# here\n"),
    "no_data_section.ts": _text("@problemName x\n@classLabel true a b\n"),
    "data_no_cases.ts": _text("@problemName x\n@classLabel true a b\n@data\n"),
    "unknown_header.ts": _text("@whatever 3\n@data\n1,2:a\n"),
    "text_values.ts": _text(_GOOD_TS.replace("1,2,3,4:a", "1,two,3,4:a")),
    "nan_values.ts": _text(_GOOD_TS.replace("1,2,3,4:a", "1,nan,3,4:a")),
    "inf_values.ts": _text(_GOOD_TS.replace("1,2,3,4:a", "1,inf,3,4:a")),
    "missing_label.ts": _text(_GOOD_TS.replace("1,2,3,4:a", "1,2,3,4")),
    "unknown_label.ts": _text(_GOOD_TS.replace("1,2,3,4:a", "1,2,3,4:zzz")),
    "no_class_names.ts": _text(_GOOD_TS.replace("@classLabel true a b", "@classLabel true")),
    "class_label_false.ts": _text(_GOOD_TS.replace("@classLabel true a b", "@classLabel false")
                                  .replace(":a\n", "\n").replace(":b\n", "\n")),
    "ragged_dims.ts": _text(_GOOD_TS.replace("@univariate true", "@univariate false").replace("@dimensions 1", "")
                            .replace("1,2,3,4:a", "1,2,3,4:1,2:a")),
    "ragged_channels.ts": _text(_GOOD_TS.replace("@univariate true", "@univariate false\n@dimensions 2")
                                .replace("1,2,3,4:a", "1,2,3,4:1,2:a").replace("2,3,4,5:b", "2,3,4,5:1,2,3,4:b")),
    "wrong_length.ts": _text(_GOOD_TS.replace("1,2,3,4:a", "1,2:a")),
    "bad_series_length.ts": _text(_GOOD_TS.replace("@seriesLength 4", "@seriesLength four")),
    "bad_flag.ts": _text(_GOOD_TS.replace("@missing false", "@missing maybe")),
    "all_missing.ts": _text(_GOOD_TS.replace("@missing false", "@missing true").replace("1,2,3,4:a", "?,?,?,?:a")),
    "one_class.ts": _text(_GOOD_TS.replace(":b\n", ":a\n")),
    "single_case.ts": _text(_GOOD_TS.split("@data\n")[0] + "@data\n1,2,3,4:a\n"),
    "length_one.ts": _text(_GOOD_TS.replace("@seriesLength 4", "@seriesLength 1")
                           .split("@data\n")[0] + "@data\n1:a\n2:b\n3:a\n4:b\n"),
    "binary.ts": _bytes(bytes(range(256)) * 3),
    "utf16.ts": _text(_GOOD_TS, "utf-16"),
    "bom.ts": _text("\ufeff" + _GOOD_TS),
    "timestamps_bad.ts": _text(_GOOD_TS.replace("@timeStamps false", "@timeStamps true")),
    "both_labels.ts": _text(_GOOD_TS.replace("@classLabel true a b", "@classLabel true a b\n@targetLabel true")),
    "huge_values.ts": _text(_GOOD_TS.replace("1,2,3,4:a", "1e308,1e308,-1e308,1e308:a")),
    "empty_fields.ts": _text(_GOOD_TS.replace("1,2,3,4:a", ",,,:a")),
    "crlf.ts": _text(_GOOD_TS.replace("\n", "\r\n")),
    # ---- .tsf
    "empty.tsf": _text(""),
    "no_data.tsf": _text("@relation x\n@attribute series_name string\n"),
    "bad_fields.tsf": _text("@relation x\n@attribute series_name string\n@frequency monthly\n@data\nT1:1,2,3:4\n"),
    "text_values.tsf": _text("@relation x\n@attribute series_name string\n@data\nT1:1,a,3\n"),
    "no_attribute.tsf": _text("@relation x\n@data\n1,2,3\n"),
    "binary.tsf": _bytes(b"\x00\xff" * 100),
    # ---- CSV series (sde reads a CSV as one series: classify must refuse it in one line)
    "empty.csv": _text(""),
    "header_only.csv": _text("a,b\n"),
    "text_values.csv": _text("a,b\n1,x\n2,3\n"),
    "binary.csv": _bytes(bytes(range(256)) * 2),
    "one_value.csv": _text("a\n1\n"),
    "series.csv": _text("a,b\n1,2\n2,3\n3,4\n4,5\n"),
    "inf.csv": _text("a\n1\ninf\n"),
    "duplicate_header.csv": _text("a,a\n1,2\n3,4\n"),
    "semicolon.csv": _text("a;b\n1;2\n3;4\n"),
    "utf16.csv": _text("a,b\n1,2\n", "utf-16"),
    "unknown.xyz": _text("1,2,3\n"),
}


# --------------------------------------------------------------------------- the property
_runner = CliRunner()


def _check_clean(app: object, args: list[str], label: str) -> None:
    """Run the CLI and assert the issue's property for this input."""
    started = time.perf_counter()
    result = _runner.invoke(app, args)
    elapsed = time.perf_counter() - started
    stderr = result.stderr
    where = f"{label}: exit {result.exit_code}\nstdout: {result.stdout[-2000:]}\nstderr: {stderr[-2000:]}"
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{where}\nexception: {result.exception!r}")
    assert result.exit_code in (0, 2), where
    assert "Traceback" not in result.output, where
    # lines as a terminal or a log shows them: a progress bar redrawn with '\r' is one line
    assert len(stderr.rstrip("\n").split("\n")) <= 3 if stderr else True, where
    assert elapsed < TIME_LIMIT_S, f"{where}\ntook {elapsed:.1f} s"
    if result.exit_code == 2:
        assert stderr.rstrip("\n").split("\n")[-1].split("\r")[-1].lstrip().startswith("error:") \
            or "error:" in stderr, where


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("corpus")
    paths: dict[str, Path] = {}
    for family, cases in (("tpp", TPP_CASES), ("sde", SDE_CASES)):
        (folder / family).mkdir()
        for name, write in cases.items():
            path = folder / family / name
            write(path)
            paths[f"{family}/{name}"] = path
    return paths


@pytest.mark.parametrize("name", sorted(TPP_CASES))
def test_tpp_fit_exp_hawkes_ends_cleanly_on_odd_files(corpus: dict[str, Path], name: str) -> None:
    path = corpus[f"tpp/{name}"]
    _check_clean(tpp_app, ["fit", "--model", "exp-hawkes", "--data", str(path), "--json"], name)


_RMTPP_CASES = ["bom.csv", "nested_seq.parquet", "struct_mark.parquet", "easytpp_event_not_dict.json", "single_row.csv", "duplicate_times.csv", "all_same_time.csv", "integral_float_marks.csv",
                "many_sequences_one_event.csv", "huge_times.csv", "tiny_times.csv", "zero_times.csv",
                "numpy_scalars.pkl", "empty.parquet", "easytpp_empty_seq.json"]


@pytest.mark.parametrize("name", _RMTPP_CASES)
def test_tpp_fit_rmtpp_ends_cleanly_on_odd_files(corpus: dict[str, Path], name: str) -> None:
    path = corpus[f"tpp/{name}"]
    _check_clean(tpp_app, ["fit", "--model", "rmtpp", "--epochs", "1", "--data", str(path), "--json"], name)


@pytest.mark.parametrize("name", sorted(SDE_CASES))
def test_sde_fit_gru_ends_cleanly_on_odd_files(corpus: dict[str, Path], name: str) -> None:
    path = corpus[f"sde/{name}"]
    _check_clean(sde_app, ["fit", "--model", "gru", "--data", str(path), "--task", "classify", "--epochs", "1",
                           "--json"], name)


def test_pickle_reader_refuses_code_it_cannot_verify(corpus: dict[str, Path], tmp_path: Path) -> None:
    """A .pkl that would import or call anything outside plain containers and numpy is refused, not run."""
    from tpp.batch import DataError
    from tpp.io import read_events

    marker = tmp_path / "ran"
    payload = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(payload)
    with pytest.raises(DataError, match="refus"):
        read_events(evil)
    assert not marker.exists()
    with pytest.raises(DataError, match="refus"):
        read_events(corpus["tpp/foreign_class.pkl"])
    # numpy scalars in an EasyTPP pickle are what EasyTPP writes: still read
    batch = read_events(corpus["tpp/numpy_scalars.pkl"])
    assert batch.num_marks == 2


# --------------------------------------------------------------------------- generated inputs
_cell = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**25), max_value=10**25).map(str),
    st.sampled_from(["", "nan", "NA", "inf", "-0", "1e999", "abc", '"', "'", " ", "0x1", "1,5", "True", "\t"]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\n\r\x00"), max_size=6),
)
_header = st.lists(st.sampled_from(["seq", "time", "mark", "time", "x", "", "Time", "seq "]), min_size=1, max_size=4)


@st.composite
def _csv_text(draw: st.DrawFn) -> str:
    header = draw(_header)
    rows = draw(st.lists(st.lists(_cell, min_size=max(len(header) - 1, 0), max_size=len(header) + 1), max_size=8))
    sep = draw(st.sampled_from([",", ",", ",", ";", "\t"]))
    return sep.join(header) + "\n" + "".join(sep.join(r) + "\n" for r in rows)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=_csv_text())
def test_tpp_fit_ends_cleanly_on_generated_csv(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.mktemp("gen") / "events.csv"
    path.write_text(text, encoding="utf-8")
    _check_clean(tpp_app, ["fit", "--model", "exp-hawkes", "--data", str(path), "--json"], repr(text[:300]))


_ts_header = st.lists(st.sampled_from([
    "@problemName g", "@timeStamps false", "@timeStamps true", "@missing true", "@missing false",
    "@univariate true", "@univariate false", "@dimensions 2", "@dimensions 0", "@equalLength true",
    "@equalLength false", "@seriesLength 3", "@seriesLength -1", "@classLabel true a b", "@classLabel true",
    "@classLabel false", "@targetLabel true", "# comment", "@bogus"]), max_size=7)
_ts_value = st.one_of(st.floats(allow_nan=False, width=32).map(lambda v: f"{v:g}"),
                      st.sampled_from(["?", "", "x", "nan", "1e999", "(1,2)"]))


@st.composite
def _ts_text(draw: st.DrawFn) -> str:
    # half the time the valid header of the corpus, so that odd values and labels reach the training
    lines = draw(st.one_of(_ts_header, st.just(_GOOD_TS.split("@data")[0].strip().split("\n"))))
    cases = []
    for _ in range(draw(st.integers(0, 12))):  # 10+ cases reach the split and the training
        channels = draw(st.lists(st.lists(_ts_value, min_size=1, max_size=4).map(",".join), min_size=1, max_size=3))
        label = draw(st.sampled_from(["a", "b", "c", "", "1.5"]))
        cases.append(":".join([*channels, label]) if label or draw(st.booleans()) else ":".join(channels))
    return "\n".join(lines) + "\n@data\n" + "\n".join(cases) + "\n"


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=_ts_text())
def test_sde_fit_ends_cleanly_on_generated_ts(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.mktemp("gen") / "series.ts"
    path.write_text(text, encoding="utf-8")
    _check_clean(sde_app, ["fit", "--model", "gru", "--data", str(path), "--task", "classify", "--epochs", "1",
                           "--json"], repr(text[:300]))


def test_corpus_stays_within_memory() -> None:
    """After the corpus, the process's peak resident memory is under the issue's 8 GB."""
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < MEMORY_LIMIT_KB


# --------------------------------------------------------------------------- the fixes, at the reader
@pytest.mark.parametrize("name, field", [
    ("nested_seq.parquet", "seq"), ("nested_time.parquet", "time"), ("struct_mark.parquet", "mark"),
    ("bytes_time.parquet", "time"), ("rows_nested_time.json", "time"), ("duplicate_header.csv", "time"),
    ("easytpp_event_not_dict.json", "time_since_start"), ("easytpp_missing_key.json", "type_event"),
    ("easytpp_bad_dim.json", "dim_process"), ("easytpp_text_time.json", "time_since_start"),
])
def test_read_events_refuses_malformed_structure_naming_the_field(corpus: dict[str, Path], name: str,
                                                                  field: str) -> None:
    """Nested cells, repeated headers and malformed EasyTPP records raise a DataError naming file and field
    (before: a TypeError from a hash or a subscript, or ids silently made text, or one 'time' column dropped)."""
    from tpp.batch import DataError
    from tpp.io import read_events

    with pytest.raises(DataError) as info:
        read_events(corpus[f"tpp/{name}"])
    assert name in str(info.value) and repr(field) in str(info.value)


def test_read_events_refuses_too_deep_json_with_a_data_error(corpus: dict[str, Path]) -> None:
    from tpp.batch import DataError
    from tpp.io import read_events

    with pytest.raises(DataError, match="nested too deeply"):
        read_events(corpus["tpp/deep_nesting.json"])


@pytest.mark.parametrize("name", ["binary.ts", "utf16.ts", "binary.tsf", "utf16.csv"])
def test_series_readers_name_the_file_and_line_of_undecodable_bytes(corpus: dict[str, Path], name: str) -> None:
    """Before: a bare UnicodeDecodeError without the file."""
    from sde.cli import read_series_file
    from sde.series import SeriesDataError

    with pytest.raises(SeriesDataError, match="not UTF-8") as info:
        read_series_file(corpus[f"sde/{name}"])
    assert name in str(info.value)


def test_series_readers_accept_a_byte_order_mark_and_refuse_repeated_headers(corpus: dict[str, Path]) -> None:
    """A UTF-8 BOM is an encoding mark, not part of '@problemName'; 'a,a' is refused, not read as 'a', 'a.1'."""
    from sde.cli import read_series_file
    from sde.series import SeriesDataError

    assert len(read_series_file(corpus["sde/bom.ts"]).series()) == len(read_series_file(corpus["sde/crlf.ts"]).series()) == 12
    with pytest.raises(SeriesDataError, match="appears twice"):
        read_series_file(corpus["sde/duplicate_header.csv"])
