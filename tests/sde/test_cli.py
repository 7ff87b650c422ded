"""The `sde` command and its tasks: JSON keys, registry names and UEA files, --missing, one-line errors,
fit --out then eval giving the same numbers; the seeded masks of sde.tasks and the solver-work record."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sde.cli import app
from sde.series import SeriesBatch
from sde.tasks import (
    TaskName,
    derived_seed,
    drop_values,
    forecast_rows,
    holdout_values,
    last_windows,
    make_task,
    record_solver_work,
    windows,
)

from ..conftest import SHARED_DATA, needs_data

runner = CliRunner()
FAST = ["--epochs", "1", "--hidden-size", "8", "--json"]


def sde(*args: str):
    return runner.invoke(app, list(args))


def ts_file(name: str, part: str = "TRAIN") -> str:
    return str(Path(SHARED_DATA or "") / f"uea_{name}" / f"{name}_{part}.ts")


def finite_result(res, *keys: str) -> dict:
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    for key in ("train_seconds", *keys):
        assert math.isfinite(out[key]), (key, out[key])
    assert set(out["stats"]) == {"solves", "nfe", "steps", "accepted", "rejected"}
    return out


# --------------------------------------------------------------------------- the command
@needs_data
def test_fit_on_a_registry_name_prints_accuracy_and_solver_stats():
    out = finite_result(sde("fit", "--model", "neural-cde", "--data", "italypowerdemand", "--task", "classify", *FAST),
                        "test_accuracy")
    assert 0 <= out["test_accuracy"] <= 1 and out["n_test"] == 1029 and out["test_source"] == "italypowerdemand test split"
    assert out["model"] == "neural-cde" and out["task"] == "classify" and out["epochs"] == 1
    # RK4 on the test set: four evaluations of the vector field per step
    assert out["stats"]["solves"] > 0 and out["stats"]["nfe"] == 4 * out["stats"]["steps"] > 0


@needs_data
@needs_data
@pytest.mark.parametrize("missing", ["0", "0.5"])
def test_fit_on_a_uea_ts_path_with_and_without_missing_values(small_ts, missing):
    out = finite_result(sde("fit", "--model", "gru", "--data", str(small_ts), "--task", "classify", "--missing", missing,
                            *FAST), "test_accuracy")
    assert out["n_train"] + out["n_val"] + out["n_test"] == 30 and out["missing"] == float(missing)
    assert out["test_source"].startswith("seeded 20 % split")


@needs_data
@pytest.mark.parametrize(("model", "task"), [("lsde", "forecast"), ("gru", "interpolate"), ("latent-sde", "forecast"),
                                             ("latent-sde", "interpolate"), ("neural-mjp", "interpolate")])
@needs_data
def test_forecast_and_interpolate_report_finite_errors_and_log_likelihood(small_ts, model, task):
    out = finite_result(sde("fit", "--model", model, "--data", str(small_ts), "--task", task, "--missing", "0.3",
                            *FAST), "test_mse", "test_mae", "test_log_likelihood")
    assert out["test_mse"] >= out["test_mae"] ** 2 - 1e-12  # Jensen: mean square >= squared mean
    assert out["n_test_values"] > 0
    # every model here but the GRU solves a differential equation (latent.py binds solve at import)
    assert (out["stats"]["solves"] > 0 and out["stats"]["nfe"] > 0) == (model != "gru")


@needs_data
def test_forecast_on_series_of_unequal_length(tmp_path):
    """JapaneseVowels (7 to 29 rows): minibatches trim the row-aligned targets with the rows."""
    text = Path(ts_file("JapaneseVowels")).read_text().splitlines()
    start = next(i for i, line in enumerate(text) if line.strip().lower().startswith("@data")) + 1
    path = tmp_path / "Vowels_small_TRAIN.ts"
    path.write_text("\n".join(text[: start + 24]) + "\n")
    out = finite_result(sde("fit", "--model", "neural-cde", "--data", str(path), "--task", "forecast", "--batch-size",
                            "5", *FAST), "test_mse", "test_log_likelihood")
    assert out["n_test_values"] > 0


@needs_data
def test_fit_with_a_test_file_scores_that_file():
    out = finite_result(sde("fit", "--model", "gru", "--data", ts_file("ItalyPowerDemand"), "--test",
                            ts_file("ItalyPowerDemand", "TEST"), "--task", "forecast", *FAST), "test_mse")
    assert out["n_test"] == 1029 and out["n_train"] + out["n_val"] == 67


@needs_data
@needs_data
def test_fit_out_then_eval_gives_the_same_numbers(small_ts, tmp_path):
    """A stochastic model (fresh Brownian paths per pass), missing values, held-out values: eval rebuilds
    the same test part and noise, so every number is equal."""
    fit = finite_result(sde("fit", "--model", "lsde", "--data", str(small_ts), "--task", "interpolate", "--missing", "0.3",
                            "--seed", "3", "--out", str(tmp_path), *FAST), "test_mse")
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "result.json").is_file()
    masks = np.load(tmp_path / "test_masks.npz")
    assert int(masks["held_out"].sum()) == fit["n_test_values"] and not (masks["held_out"] & masks["missing"]).any()
    ev = sde("eval", "--model-file", str(tmp_path), "--data", str(small_ts), "--task", "interpolate", "--json")
    assert ev.exit_code == 0, ev.output
    again = json.loads(ev.stdout)
    for key in ("test_mse", "test_mae", "test_log_likelihood", "n_test_values", "n_test", "stats"):
        assert again[key] == fit[key], key


@needs_data
@needs_data
@pytest.mark.parametrize("model", ["latent-sde", "neural-mjp"])
def test_generative_models_classify_by_one_model_per_class(small_ts, model, tmp_path):
    res = sde("fit", "--model", model, "--data", str(small_ts), "--task", "classify", "--epochs", "1",
              "--out", str(tmp_path), "--json")
    assert res.exit_code == 0, res.output
    fit = json.loads(res.stdout)
    assert 0.0 <= fit["test_accuracy"] <= 1.0
    from tpp import table

    saved = table.load(tmp_path / "model.pt")
    assert type(saved).__name__ == "GenerativeClassifier" and saved.base == model
    ev = sde("eval", "--model-file", str(tmp_path), "--data", str(small_ts), "--task", "classify", "--json")
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.stdout)["test_accuracy"] == fit["test_accuracy"]


def test_bad_ts_file_exits_2_with_one_line_naming_file_series_row_field(tmp_path):
    bad = tmp_path / "Bad_TRAIN.ts"
    bad.write_text("@problemName bad\n@timeStamps false\n@univariate true\n@equalLength true\n@seriesLength 3\n"
                   "@classLabel true a b\n@data\n1.0,2.0,3.0:a\n1.0,oops,3.0:b\n")
    res = sde("fit", "--model", "gru", "--data", str(bad), "--task", "classify", "--json")
    assert res.exit_code == 2 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert all(s in lines[0] for s in ("Bad_TRAIN.ts", "series 1", "row 1", "field"))


@pytest.mark.parametrize("args", [
    ["--model", "no-such-model", "--data", "x.ts", "--task", "classify"],
    ["--model", "gru", "--data", "x.ts", "--task", "regress"],
    ["--model", "gru", "--data", "x.ts", "--task", "classify", "--missing", "1.5"],
    ["--model", "gru", "--task", "classify"],
    ["--model", "gru", "--data", "no_such_dataset", "--task", "classify"],
    ["--model", "gru", "--data", "missing/file.ts", "--task", "classify"],
])
def test_bad_flags_unknown_names_and_missing_files_exit_2_with_one_line(args):
    res = sde("fit", *args, "--json")
    assert res.exit_code == 2 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")


@needs_data
def test_datasets_json_lists_the_series_registry():
    res = sde("datasets", "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    names = {row["name"] for row in rows}
    assert {"basicmotions", "japanesevowels", "italypowerdemand"} <= names


@needs_data
@needs_data
def test_the_installed_sde_script_runs_fit(small_ts):
    script = Path(sys.executable).parent / "sde"
    assert script.exists(), "the sde console script is missing: `make install` must install it (pip install -e .)"
    res = subprocess.run([str(script), "fit", "--model", "gru", "--data", str(small_ts), "--task", "forecast", *FAST],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert {"test_mse", "test_mae", "test_log_likelihood", "train_seconds", "stats"} <= set(out)


# --------------------------------------------------------------------------- the tasks
def toy(B: int = 6, L: int = 12, C: int = 2, labels: bool = True) -> SeriesBatch:
    g = np.random.default_rng(0)
    series = [(np.arange(L - b % 3, dtype=float), g.normal(size=(L - b % 3, C))) for b in range(B)]
    return SeriesBatch.from_arrays(series, [b % 2 for b in range(B)] if labels else None)


def test_drop_values_blanks_floor_rate_times_length_values_of_every_channel():
    batch = toy()
    out, removed = drop_values(batch, 0.5, seed=1)
    for b, n in enumerate(batch.lengths.tolist()):
        assert removed[b].sum(0).tolist() == [n // 2] * batch.num_channels
    assert torch.isnan(out.values[removed]).all() and torch.equal(out.values[~removed & out.mask[..., None]],
                                                                  batch.values[~removed & batch.mask[..., None]])


def test_holdout_takes_a_seeded_share_of_interior_observed_values():
    batch = toy()
    held = holdout_values(batch, 0.25, seed=5)
    assert torch.equal(held, holdout_values(batch, 0.25, seed=5))
    assert not torch.equal(held, holdout_values(batch, 0.25, seed=6))
    for b, n in enumerate(batch.lengths.tolist()):
        assert not held[b, 0].any() and not held[b, n - 1:].any()  # never the first or last row
        assert int(held[b].sum()) == round(0.25 * (n - 2) * batch.num_channels)


def test_forecast_rows_are_the_last_share_of_each_series_after_an_observed_past():
    batch = toy()
    future = forecast_rows(batch, 0.25)
    for b, n in enumerate(batch.lengths.tolist()):
        k = math.ceil(0.25 * n)
        assert future[b].tolist() == [False] * (n - k) + [True] * k + [False] * (batch.max_length - n)


def test_make_task_hides_exactly_the_scored_values_and_standardises_the_targets():
    batch = toy(labels=False)
    train = make_task(batch, TaskName.INTERPOLATE, seed=0, missing=0.2, train=True)
    test = make_task(batch, TaskName.INTERPOLATE, seed=1, missing=0.2, scale=train.scale)
    assert torch.isnan(test.inputs.values[test.scored]).all()
    assert torch.equal(torch.isfinite(test.inputs.targets), test.scored)  # targets: the held-out values only
    mean, std = train.scale.tensors(batch.values)
    np.testing.assert_allclose(test.inputs.targets[test.scored] * std.expand_as(test.values)[test.scored]
                               + mean.expand_as(test.values)[test.scored], test.values[test.scored])
    assert not (test.missing & test.scored).any()  # a value blanked by --missing is never scored
    future = make_task(batch, TaskName.FORECAST, seed=1, scale=train.scale)
    assert torch.isnan(future.inputs.values[future.masks["future_rows"]]).all()


def test_row_aligned_targets_are_trimmed_with_the_rows_when_series_are_selected():
    batch = toy(labels=False)  # lengths 12, 11, 10, ...
    task = make_task(batch, TaskName.FORECAST, seed=0, train=True)
    part = task.inputs[[1, 2]]
    assert part.targets.shape[:2] == part.mask.shape == (2, 11)
    assert torch.equal(torch.isfinite(part.targets), torch.isfinite(task.inputs.targets[[1, 2], :11]))


def test_derived_seeds_differ_by_key_and_repeat_by_seed():
    assert derived_seed(0, 1) == derived_seed(0, 1) != derived_seed(0, 2) != derived_seed(1, 1)


def test_windows_cut_every_series_and_the_chronological_split_tests_the_last_ones():
    batch = toy(B=2, L=12, labels=True)
    pieces, owner = windows(batch, 4)
    assert owner.tolist() == [0, 0, 0, 1, 1]  # 12 rows -> 3 windows, 11 rows -> 2 (a 3-row tail dropped)
    np.testing.assert_array_equal(torch.cat([pieces.values[k] for k in range(3)]).numpy(), batch.values[0].numpy())
    assert pieces.labels.tolist() == [0, 0, 0, 1, 1]
    assert last_windows(owner, 0.2).tolist() == [False, False, True, False, True]


def test_solver_work_sums_the_stats_of_every_solve_in_the_block():
    import sde.solvers
    from sde.solvers import Method

    original = sde.solvers.solve
    ts = torch.linspace(0, 1, 11, dtype=torch.float64)
    y0 = torch.ones(2, 1, dtype=torch.float64)
    with record_solver_work() as work:
        for _ in range(3):  # fixed-step RK4 on 10 intervals: 10 steps, 4 evaluations each
            sde.solvers.solve(lambda t, y: -y, y0, ts, method=Method.RK4)
    assert (work.solves, work.steps, work.nfe, work.rejected) == (3, 30, 120, 0)
    assert sde.solvers.solve is original  # the binding is restored after the block


def test_solves_through_any_binding_are_recorded_and_nested_blocks_each_see_them():
    from sde.solvers import Method, recording
    from sde.solvers import solve as bound_before_the_block  # what a model's import does

    ts = torch.linspace(0, 1, 5, dtype=torch.float64)
    y0 = torch.ones(1, 1, dtype=torch.float64)
    with recording() as outer:
        bound_before_the_block(lambda t, y: -y, y0, ts, method=Method.EULER)
        with record_solver_work() as inner:
            bound_before_the_block(lambda t, y: -y, y0, ts, method=Method.EULER)
    assert len(outer) == 2 and (inner.solves, inner.steps, inner.nfe) == (1, 4, 4)
    bound_before_the_block(lambda t, y: -y, y0, ts, method=Method.EULER)
    assert len(outer) == 2  # nothing is recorded after the block
