"""Arguments at the boundary: constructors refuse a non-integral ``num_marks``; ``standard_errors`` says why
they are undefined (one event, repeated decays, a boundary fit) instead of numpy's ``LinAlgError`` or a
silent 0; ``tpp.fit`` names a bad ``epochs`` / ``batch_size`` / ``lr``; ``tpp simulate`` and ``tpp eval``
end bad values and non-model files with exit code 2 and one line."""

import json
import math
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import tpp
from tpp.cli import app
from tpp.events import EventBatch
from tpp.hawkes import ExpHawkes, FaDInHawkes, NonparametricHawkes, Poisson, SumExpHawkes
from tpp.io import write_events
from tpp.neural import RMTPP, THP

DATA = ExpHawkes.from_params([0.5], [[0.3]], 1.0).sample(6, 40.0, generator=0)
ONE_EVENT = EventBatch.from_flat(np.array([1.0]), np.array([0, 1]), np.array([0.0]), np.array([5.0]), np.array([0]), 1)


# ------------------------------------------------------------------------------------- constructors
@pytest.mark.parametrize("build", [
    lambda k: ExpHawkes(k), lambda k: ExpHawkes(k, 1.0), lambda k: SumExpHawkes(k, [1.0, 2.0]), lambda k: Poisson(k),
    lambda k: FaDInHawkes(k, "truncated-exponential", 3.0), lambda k: NonparametricHawkes(k, 2.0, 4),
    lambda k: RMTPP(k, 8), lambda k: THP(k, 8),
])
@pytest.mark.parametrize("num_marks", [2.5, 0, -1, math.nan, "2", True])
def test_constructors_refuse_a_num_marks_that_is_not_a_positive_integer(build, num_marks):
    # ExpHawkes(2.5) once became K=2 silently
    with pytest.raises((TypeError, ValueError), match="num_marks"):
        build(num_marks)


# ------------------------------------------------------------------------------------- standard errors
def test_standard_errors_after_a_one_event_fit_say_the_information_is_singular():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ExpHawkes(1, 1.0).fit(ONE_EVENT, progress=False)
    with pytest.raises(ValueError, match="singular.*1 events"):
        model.standard_errors(ONE_EVENT)


def test_standard_errors_with_repeated_decays_are_refused_naming_the_decay():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SumExpHawkes(1, [1.0, 1.0]).fit(DATA, progress=False)
    with pytest.raises(ValueError, match=r"decay\(s\) \[1.0\] appear more than once"):
        model.standard_errors(DATA)


def test_standard_errors_where_the_information_is_not_positive_definite_are_nan_with_a_warning():
    # a one-event fit with a learned decay puts the adjacency at 0: the old code clipped to a certain 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ExpHawkes(1).fit(ONE_EVENT, progress=False)
    with pytest.warns(UserWarning, match="undefined \\(NaN\\).*not positive definite"):
        se = model.standard_errors(ONE_EVENT)
    assert np.isnan(se["adjacency"]).all() and np.isnan(se["decays"]).all()
    assert np.isfinite(se["baseline"]).all()


def test_standard_errors_before_fitting_are_refused():
    with pytest.raises(ValueError, match="fit the model"):
        ExpHawkes(1, 1.0).standard_errors(DATA)


def test_standard_errors_of_a_good_fit_are_finite_and_positive():
    model = ExpHawkes(1, 1.0).fit(ExpHawkes.from_params([0.5], [[0.3]], 1.0).sample(20, 200.0, generator=1),
                                  progress=False)
    se = model.standard_errors(DATA)
    assert np.all(se["baseline"] > 0) and np.all(se["adjacency"] > 0)


# ------------------------------------------------------------------------------------- the trainer
@pytest.mark.parametrize("setting", [
    {"epochs": -1}, {"epochs": 0}, {"epochs": 2.5}, {"batch_size": 0}, {"batch_size": -3}, {"lr": 0.0},
    {"lr": -1e-3}, {"lr": math.nan}, {"lr": math.inf}, {"weight_decay": -1.0}, {"warmup": 1.5}, {"clip": -1.0},
    {"patience": 0}, {"seed": -1}, {"epochs": "3"},
])
def test_the_trainer_names_a_bad_setting(setting):
    (name, value), = setting.items()
    torch.manual_seed(0)
    with pytest.raises((ValueError, TypeError), match=f"tpp.fit: {name} must be"):
        tpp.fit(RMTPP(1, 8), DATA, progress=False, **{"epochs": 1, **setting})
    with pytest.raises((ValueError, TypeError), match=f"tpp.fit: {name} must be"):
        RMTPP(1, 8).fit(DATA, progress=False, **{"epochs": 1, **setting})


# ------------------------------------------------------------------------------------- the command line
def _run(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception  # no traceback
    return result


def _one_error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("args, named", [
    (["-n", "0"], "num-sequences"), (["-n", "-1"], "num-sequences"), (["-n", "2.5"], "num-sequences"),
    (["--t-end", "nan"], "t-end"), (["--t-end", "inf"], "t-end"), (["--t-end", "0"], "t-end"),
    (["--t-end", "-5"], "t-end"), (["--seed", "-1"], "seed"), (["--decay", "0"], "decay"),
    (["--decay", "nan"], "decay"), (["--max-events", "0"], "max-events"),
])
def test_simulate_refuses_bad_values_in_one_line(tmp_path, args, named):
    line = _one_error_line(_run("simulate", "--out", str(tmp_path / "o.csv"), "--baseline", "0.5",
                                "--adjacency", "0.3", *args))
    assert named in line
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("baseline, adjacency, named", [
    ("0.5,x", "0.3,0.1;0.1,0.3", "--baseline"), ("0.5", "0.3,0.1", "--adjacency"),
    ("0.5,0.5", "0.3,0.1;0.1", "--adjacency"), ("0.5", "y", "--adjacency"), ("nan", "0.3", "baseline"),
])
def test_simulate_names_the_malformed_flag(tmp_path, baseline, adjacency, named):
    line = _one_error_line(_run("simulate", "--out", str(tmp_path / "o.csv"), "--baseline", baseline,
                                "--adjacency", adjacency))
    assert named in line


def test_simulate_of_an_explosive_model_stops_at_the_cap_in_one_line(tmp_path):
    model = tmp_path / "model.json"
    model.write_text(json.dumps(ExpHawkes.from_params([1.0], [[1.5]], 1.0).to_dict()))
    line = _one_error_line(_run("simulate", "--out", str(tmp_path / "o.csv"), "--model-file", str(model),
                                "--t-end", "1e6", "--max-events", "2000"))
    assert "max_events=2000" in line and "explosive" in line and "--max-events" in line


NOT_MODELS = {
    "list.json": "[1, 2]",
    "number.json": "3",
    "string.json": '"exp-hawkes"',
    "empty_object.json": "{}",
    "model_not_text.json": '{"model": 3}',
    "unknown.json": '{"model": "no-such-model"}',
    "missing_field.json": '{"model": "exp-hawkes", "baseline": [0.5]}',
    "bad_field.json": '{"model": "exp-hawkes", "baseline": "x", "adjacency": [[0.3]], "decay": 1.0}',
    "bad_shape.json": '{"model": "exp-hawkes", "baseline": [0.5, 0.2], "adjacency": [[0.3]], "decay": 1.0}',
    "null_decay.json": '{"model": "exp-hawkes", "baseline": [0.5], "adjacency": [[0.3]], "decay": null}',
    "not_json.json": "{model",
}


@pytest.fixture(scope="module")
def events_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "events.csv"
    write_events(DATA, path)
    return path


@pytest.mark.parametrize("name", sorted(NOT_MODELS))
def test_eval_and_simulate_refuse_a_file_that_is_not_a_model_naming_it(tmp_path, events_file, name):
    model = tmp_path / name
    model.write_text(NOT_MODELS[name])
    line = _one_error_line(_run("eval", "--model-file", str(model), "--data", str(events_file)))
    assert name in line
    line = _one_error_line(_run("simulate", "--out", str(tmp_path / "o.csv"), "--model-file", str(model)))
    assert name in line


def test_eval_refuses_a_binary_file_naming_it(tmp_path, events_file):
    model = tmp_path / "weights.pt"
    model.write_bytes(b"\x80\x02\xff\xfe" * 10)
    assert "weights.pt" in _one_error_line(_run("eval", "--model-file", str(model), "--data", str(events_file)))


def test_eval_and_simulate_of_a_good_model_file_still_work(tmp_path, events_file):
    model = tmp_path / "model.json"
    model.write_text(json.dumps(ExpHawkes.from_params([0.5], [[0.3]], 1.0).to_dict()))
    result = _run("eval", "--model-file", str(model), "--data", str(events_file), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"] == "exp-hawkes"
    result = _run("simulate", "--out", str(tmp_path / "o.csv"), "--model-file", str(model), "-n", "2",
                  "--max-events", "10000")
    assert result.exit_code == 0, result.output and (tmp_path / "o.csv").exists()
