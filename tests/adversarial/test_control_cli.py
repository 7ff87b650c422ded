"""``tpp control``: the model-based control pipeline of issue 19 part 4 (:func:`tpp.control.run_control`) from the
command line, with tiny sizes (the benchmark's numbers come from benchmarks/hawkes_control.py)."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("gymnasium")  # the optional extra `control`; installed by `make test`

from tests.conftest import tpp_in_process  # noqa: E402

TINY = ("--log-episodes", "10", "--epochs", "1", "--iterations", "2", "--rollouts", "2", "--eval-episodes", "4",
        "--lookahead-samples", "2")
POLICIES = {"trained", "no_intervention", "random", "lookahead"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny run with ``--json --out`` shared by the tests (the pipeline costs seconds)."""
    out = tmp_path_factory.mktemp("control")
    return tpp_in_process("control", *TINY, "--seed", "1", "--json", "--out", str(out)), out


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_json_reports_every_policy_with_finite_numbers(tiny_run):
    result, _ = tiny_run
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # one JSON object and nothing else on stdout
    assert report["model"] == "sahp" and report["eval_episodes"] == 4 and report["seed"] == 1
    assert set(report["returns"]) == POLICIES
    for score in report["returns"].values():
        assert _finite(score["mean"]) and _finite(score["se"]) and score["se"] >= 0
        assert score["mean"] <= 0  # rewards are minus events minus costs
    for key in ("improvement_over_none", "improvement_over_random", "gap_to_lookahead", "validation_ll_per_event",
                "logged_return"):
        assert _finite(report[key]), key
    assert set(report["paired_difference"]) == POLICIES - {"trained"}
    assert all(_finite(d["mean"]) and _finite(d["se"]) for d in report["paired_difference"].values())
    assert len(report["training_curve"]) == 2 and all(map(_finite, report["training_curve"]))
    assert set(report["seconds"]) == {"log", "fit", "actor_critic", "evaluate"}
    assert report["logged_events"] > 0
    # the reported gains are what the means say
    means = {k: v["mean"] for k, v in report["returns"].items()}
    assert report["gap_to_lookahead"] == pytest.approx(means["trained"] - means["lookahead"])
    assert report["improvement_over_random"] == pytest.approx(
        (means["trained"] - means["random"]) / abs(means["random"]))


def test_out_writes_the_report_and_the_picture(tiny_run):
    result, out = tiny_run
    assert result.returncode == 0, result.stderr
    written = json.loads((out / "control.json").read_text())
    assert set(written["returns"]) == POLICIES
    assert all(len(score["returns"]) == 4 for score in written["returns"].values())  # per episode, in the file
    stdout_report = json.loads(result.stdout)
    assert written["returns"]["trained"]["mean"] == stdout_report["returns"]["trained"]["mean"]
    assert (out / "controlled_intensity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left behind


@pytest.mark.parametrize("args, needle", [
    (("--eval-episodes", "0"), "--eval-episodes"),
    (("--log-episodes", "2"), "--log-episodes"),
    (("--rollouts", "1"), "--rollouts"),
    (("--seed", "-1"), "--seed"),
    (("--epochs", "0"), "--epochs"),
    (("--model", "exp-hawkes"), "--model"),  # not a neural event model
    (("--model", "jump-cnf"), "--model"),  # a spatial model: the environment's events have no locations
])
def test_bad_values_exit_2_with_one_line(args, needle):
    result = tpp_in_process("control", *TINY, *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.stderr
    assert result.stdout == ""


def test_a_model_without_layers_learns_the_environment():
    """RMTPP has no ``num_layers``: the pipeline gives it only the arguments it takes."""
    result = tpp_in_process("control", *TINY, "--model", "rmtpp", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"] == "rmtpp"


@pytest.mark.parametrize("kwargs, needle", [
    ({"eval_episodes": 1}, "eval_episodes"),
    ({"log_episodes": 4}, "log_episodes"),
    ({"iterations": 2.5}, "iterations"),
    ({"model": "jump-cnf"}, "neural event model"),
])
def test_run_control_refuses_bad_arguments_before_any_work(kwargs, needle):
    from tpp.control import run_control

    with pytest.raises(ValueError, match=needle):
        run_control(progress=False, **kwargs)
