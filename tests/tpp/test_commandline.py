"""The CLI machinery both commands share: one-line errors with exit code 2, strict JSON, data by name or path."""

import enum
import json
from pathlib import Path
from typing import Annotated

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from tpp.commandline import command_app, echo_json, in_range, is_file_argument, jsonable, load_data, user_errors

toy = command_app("A toy command.")


@toy.command()
@user_errors
def run(
    rate: Annotated[float, typer.Option(callback=in_range(0.0, 1.0, high_open=True))] = 0.5,
    fail: Annotated[str, typer.Option()] = "",
) -> None:
    if fail == "value":
        raise ValueError("data.csv, sequence 'a', row 3, field 'time':\n  times must increase")
    if fail == "key":
        raise KeyError("unknown dataset 'x'")
    echo_json({"rate": rate, "nan": float("nan"), "array": np.arange(2)})


@toy.command()
def other() -> None:
    """A second command, so the app is a group."""


def invoke(*args: str):
    return CliRunner().invoke(toy, list(args))


def test_success_prints_strict_json_with_non_finite_numbers_as_null():
    res = invoke("run", "--rate", "0.25")
    assert res.exit_code == 0 and json.loads(res.stdout) == {"rate": 0.25, "nan": None, "array": [0, 1]}


@pytest.mark.parametrize(("args", "needle"), [
    (["run", "--fail", "value"], "row 3, field 'time': times must increase"),
    (["run", "--fail", "key"], "unknown dataset 'x'"),  # a KeyError's message, not its quoted repr
    (["run", "--rate", "1"], "--rate"),  # outside [0, 1)
    (["run", "--rate", "abc"], "--rate"),
    (["run", "--no-such-flag"], "--no-such-flag"),
    (["nope"], "nope"),
])
def test_user_and_usage_errors_are_one_line_on_stderr_with_exit_code_2(args, needle):
    res = invoke(*args)
    assert res.exit_code == 2 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.stderr


def test_help_still_works():
    res = invoke("run", "--help")
    assert res.exit_code == 0 and "--rate" in res.stdout


class Colour(enum.Enum):
    RED = "red"


def test_jsonable_turns_numpy_torch_paths_and_enums_into_json_types():
    value = {"a": np.float32(1.5), "b": torch.tensor([1.0, float("inf")]), "c": Path("x/y"), "d": Colour.RED,
             "e": (np.int64(3),)}
    assert jsonable(value) == {"a": 1.5, "b": [1.0, None], "c": "x/y", "d": "red", "e": [3]}


def test_in_range_accepts_the_interval_and_refuses_outside_it():
    check = in_range(0.0, 1.0, low_open=True)
    assert check(1.0) == 1.0 and check(None) is None
    with pytest.raises(typer.BadParameter, match=r"\(0.0, 1.0\]"):
        check(0.0)


def test_a_data_argument_is_a_file_when_it_exists_has_a_separator_or_a_known_suffix(tmp_path):
    existing = tmp_path / "events"
    existing.write_text("x")
    assert is_file_argument(str(existing), (".csv",))
    assert is_file_argument("somewhere/else", (".csv",)) and is_file_argument("x.CSV", (".csv",))
    assert not is_file_argument("taxi", (".csv",))
    with pytest.raises(FileNotFoundError, match="missing.csv: no such file"):
        load_data("missing.csv", suffixes=(".csv",), read_file=Path.read_text, load_registered=str.upper)
    assert load_data("taxi", suffixes=(".csv",), read_file=Path.read_text, load_registered=str.upper) == "TAXI"
    assert load_data(str(existing), suffixes=(".csv",), read_file=Path.read_text, load_registered=str.upper) == "x"
