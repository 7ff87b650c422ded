"""The benchmark harness (tpp.bench, `tpp bench`): resumable cells, same table after an interruption, units."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from tpp import bench
from tpp.events import EventBatch
from tpp.hawkes import Poisson

from ..conftest import needs_data

# Tiny cut data, one epoch: the harness is under test here, not the models.
TINY = {"seeds": (0, 1), "epochs": 1, "max_train_sequences": 8, "max_eval_sequences": 4, "max_events": 16,
        "max_predictions": 8}
MODELS = ["Poisson", "RMTPP"]
NAMES = ["taxi", "mimic2_rmtpp"]


def quiet(line: str) -> None:
    pass


def run(out, config, models=MODELS, names=NAMES):
    return bench.run_likelihood(out, config, models, names, command="test", progress=False, echo=quiet)


class Interrupt(KeyboardInterrupt):
    pass


@needs_data
def test_interrupted_run_resumes_without_recomputing_and_gives_the_same_table(tmp_path, monkeypatch):
    config = bench.LikelihoodConfig.preset(quick=True, **TINY)
    every = {(m, d, s) for m in MODELS for d in NAMES for s in config.seeds}
    reference = run(tmp_path / "whole", config)
    assert set(reference.computed) == every and not reference.reused
    assert set(reference.runs["status"]) == {"ok"}  # an error cell would be retried, which is not the point here

    real, calls = bench.run_cell, []

    def interrupted_after_three(name, data, cfg, seed):
        if len(calls) == 3:
            raise Interrupt  # as Ctrl-C in the fourth cell: nothing of it may be kept
        calls.append((name, data.name, seed))
        return real(name, data, cfg, seed)

    monkeypatch.setattr(bench.likelihood, "run_cell", interrupted_after_three)  # where run_likelihood looks it up
    with pytest.raises(Interrupt):
        run(tmp_path / "resumed", config)
    cells = sorted((tmp_path / "resumed" / "cells" / config.key()).glob("*/*.json"))
    assert len(cells) == 3  # one atomically written file per finished cell, none for the interrupted one

    recomputed = []

    def counting(name, data, cfg, seed):
        recomputed.append((name, data.name, seed))
        return real(name, data, cfg, seed)

    monkeypatch.setattr(bench.likelihood, "run_cell", counting)
    resumed = run(tmp_path / "resumed", config)
    assert set(recomputed) == every - set(calls) and len(recomputed) == len(every) - 3
    assert set(resumed.reused) == set(calls)
    numeric = ["ll_mean", "ll_std", "rmse_mean", "rmse_std", "accuracy_mean", "accuracy_std", "seeds"]
    pd.testing.assert_frame_equal(resumed.table[["dataset", "model"] + numeric],
                                  reference.table[["dataset", "model"] + numeric], rtol=1e-12)
    def tables(text):  # the score tables and the notes; the CPU and fit times are clocks and differ
        scores = text.split("## Test log-likelihood")[1].split("## CPU seconds")[0]
        rest = text.split("## CPU seconds")[1]
        return scores + (rest.split("## Notes")[1].split("Fit seconds")[0] if "## Notes" in rest else "")

    assert tables(resumed.markdown) == tables(reference.markdown)

    # A third run finds every cell finished: nothing is recomputed, the tables are only rewritten.
    recomputed.clear()
    again = run(tmp_path / "resumed", config)
    assert recomputed == [] and len(again.reused) == len(every)

    # A damaged cell file (e.g. copied half-way) is recomputed, not trusted.
    victim = cells[0]
    victim.write_text(victim.read_text()[:40])
    run(tmp_path / "resumed", config)
    assert len(recomputed) == 1


@needs_data
def test_outputs_state_the_fine_integrator_seeds_and_environment(tmp_path):
    config = bench.LikelihoodConfig.preset(quick=True, **TINY)
    report = run(tmp_path, config, ["Poisson", "RMTPP"], ["mimic2_rmtpp"])
    for key in ("runs", "table", "markdown", "environment", "plot_ll", "plot_rmse", "plot_accuracy"):
        assert report.files[key].exists() and report.files[key].stat().st_size > 100, key
    assert "64 Gauss-Legendre nodes per inter-event interval" in report.markdown
    env = json.loads(report.files["environment"].read_text())
    assert env["integrator"]["nodes_per_interval"] == 64 and env["seeds"] == [0, 1]
    assert {"torch", "numpy", "device", "git_commit", "torch_threads", "threads_env", "config_key"} <= set(env)
    runs = pd.read_csv(report.files["runs"])
    assert len(runs) == 4 and set(runs["eval_points"]) == {64} and set(runs["status"]) == {"ok"}
    table = pd.read_csv(report.files["table"])
    # mean and std over the two seeds, read back from the per-cell rows
    rmtpp = runs[runs["model"] == "RMTPP"]["ll_per_event"]
    row = table[table["model"] == "RMTPP"].iloc[0]
    assert row["ll_mean"] == pytest.approx(rmtpp.mean()) and row["ll_std"] == pytest.approx(rmtpp.std(ddof=1))
    assert row["seeds"] == 2
    # results.csv: one row per cell with the named columns; nothing published is matched for a cut quick run
    results = pd.read_csv(report.files["results"])
    assert list(results.columns[:9]) == ["dataset", "model", "seed", "test_ll_per_event", "rmse", "accuracy", "ks",
                                         "published", "published_source"]
    assert len(results) == 4 and results["published"].isna().all()
    np.testing.assert_allclose(results.sort_values(["model", "seed"])["test_ll_per_event"],
                               runs.sort_values(["model", "seed"])["ll_per_event"], rtol=1e-12)
    assert ((results["ks"] > 0) & (results["ks"] < 1)).all() and (results["cpu_seconds"] > 0).all()
    for title in ("Time-rescaling KS statistic", "quantile calibration", "CPU seconds per cell"):
        assert f"## {title}" in report.markdown or title in report.markdown


def test_ks_of_a_cell_is_the_time_rescaling_statistic_of_the_test_split():
    """The cell's KS equals tpp.metrics.time_rescaling on the whole test split, however the groups are cut."""
    from tpp.metrics import time_rescaling

    rng = np.random.default_rng(0)
    times = [np.sort(rng.uniform(0, 10, n)) for n in (5, 30, 12, 1)]
    test = EventBatch.from_sequences(times, [np.zeros(t.size, int) for t in times], t_end=10.0, num_marks=1)
    model = Poisson.from_params(np.array([1.3]))
    whole = time_rescaling(model, test).ks_statistic
    assert bench.scoring.test_rescaling_ks(model, test, max_elements=50) == pytest.approx(whole, abs=1e-12)
    assert bench.scoring.test_rescaling_ks(model, test) == pytest.approx(whole, abs=1e-12)


def test_ks_uses_the_ground_process_so_many_types_in_short_windows_are_not_censored():
    """20 types at rate 0.05 each, 400 sequences of 5 events (windows ending at the last event, as anhp_synthetic):
    under the true model the ground residuals are exactly Exp(1) (KS small), while per-type residuals are the
    censored few that fit in each window (KS large)."""
    from tpp.metrics import rescaled_residuals
    import scipy.stats

    rng = np.random.default_rng(3)
    times = [np.cumsum(rng.exponential(1.0, 5)) for _ in range(400)]
    marks = [rng.integers(0, 20, 5) for _ in range(400)]
    test = EventBatch.from_sequences(times, marks, t_end=np.array([t[-1] for t in times]), num_marks=20)
    model = Poisson.from_params(np.full(20, 0.05))
    ground = bench.scoring.test_rescaling_ks(model, test)
    per_type = scipy.stats.kstest(rescaled_residuals(model, test), "expon").statistic
    assert ground < 0.05 < 0.5 < per_type
    gaps = np.concatenate([np.diff(np.r_[0.0, t]) for t in times])  # total rate 1: residuals are the gaps
    assert ground == pytest.approx(scipy.stats.kstest(gaps, "expon").statistic, abs=1e-12)


@needs_data
def test_other_settings_do_not_reuse_cells_but_a_new_seed_reuses_the_old_ones(tmp_path):
    first = run(tmp_path, bench.LikelihoodConfig.preset(quick=True, **{**TINY, "seeds": (0,)}), ["Poisson"], ["taxi"])
    assert len(first.computed) == 1
    more = run(tmp_path, bench.LikelihoodConfig.preset(quick=True, **TINY), ["Poisson"], ["taxi"])
    assert more.computed == [("Poisson", "taxi", 1)] and more.reused == [("Poisson", "taxi", 0)]
    other = run(tmp_path, bench.LikelihoodConfig.preset(quick=True, **{**TINY, "max_events": 12}), ["Poisson"], ["taxi"])
    assert len(other.computed) == 2 and not other.reused


@needs_data
def test_a_failed_cell_is_reported_and_retried(tmp_path, monkeypatch):
    config = bench.LikelihoodConfig.preset(quick=True, **{**TINY, "seeds": (0,)})
    real = bench.fit_cell

    def broken(name, data, cfg, seed):
        if name == "RMTPP":
            raise RuntimeError("boom")
        return real(name, data, cfg, seed)

    monkeypatch.setattr(bench.likelihood, "fit_cell", broken)
    report = run(tmp_path, config, ["Poisson", "RMTPP"], ["taxi"])
    assert "RMTPP on taxi (seed 0): error: RuntimeError: boom" in report.markdown
    assert report.table["model"].tolist() == ["Poisson"]
    monkeypatch.setattr(bench.likelihood, "fit_cell", real)
    again = run(tmp_path, config, ["Poisson", "RMTPP"], ["taxi"])
    assert again.computed == [("RMTPP", "taxi", 0)] and "boom" not in again.markdown


@needs_data
def test_hawkes_models_are_skipped_above_the_type_limit(tmp_path):
    config = bench.LikelihoodConfig.preset(quick=True, **{**TINY, "seeds": (0,), "max_hawkes_marks": 10})
    report = run(tmp_path, config, ["ExpHawkes", "SumExpHawkes"], ["mimic2_rmtpp"])
    assert set(report.runs["status"]) == {"skipped"} and "5,625 kernels" in report.markdown
    assert report.table.empty
    assert len(run(tmp_path, config, ["ExpHawkes", "SumExpHawkes"], ["mimic2_rmtpp"]).computed) == 0  # not retried


@needs_data
def test_neural_models_that_integrate_every_type_are_skipped_above_the_type_limit_in_full_runs(monkeypatch):
    """NHP, THP, SAHP, AttNHP evaluate all K intensities at every node (wikipedia: 8227): skipped with the reason;
    RMTPP, FullyNN, IntensityFree (closed-form or density likelihoods) still run, quick runs (cut data) too."""
    full = bench.LikelihoodConfig(max_quadrature_marks=10)
    data = bench.load_dataset("mimic2_rmtpp", bench.LikelihoodConfig.preset(quick=True, **TINY))  # K = 75
    skipped = {name for name in bench.neural_model_names() if bench.skip_reason(name, data, full)}
    assert skipped == {"NHP", "THP", "SAHP", "AttNHP"}
    assert "75 types" in bench.skip_reason("NHP", data, full) and "max_quadrature_marks 10" in bench.skip_reason(
        "NHP", data, full)
    assert not bench.skip_reason("NHP", data, bench.LikelihoodConfig(max_quadrature_marks=75))
    assert not bench.skip_reason("NHP", data, bench.LikelihoodConfig.preset(quick=True, max_quadrature_marks=10))

    def never(*args, **kwargs):
        raise AssertionError("a skipped cell must not be fitted")

    monkeypatch.setattr(bench.likelihood, "fit_cell", never)
    row = bench.run_cell("SAHP", data, full, 0)
    assert row["status"] == "skipped" and "every type's intensity" in row["note"]
    # a threshold that picks cells, not how one is computed: finished cells keep their key
    assert full.key() == bench.LikelihoodConfig().key()


def test_chunked_quadrature_equals_the_model_log_likelihood():
    """The scorer that keeps [B, T, K] small (wikipedia) must be the base class's rule, chunks or not."""
    from tpp.neural import THP

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    times = [np.sort(rng.uniform(0, 10, n)) for n in (7, 3, 12)]
    marks = [rng.integers(0, 3, t.size) for t in times]
    batch = EventBatch.from_sequences(times, marks, t_end=[10.0, 10.0, 11.0], num_marks=3)
    model = THP(num_marks=3, hidden_size=8).double()
    with torch.no_grad():
        exact = float(model.log_likelihood(batch, num_points=64).sum()) / batch.num_events
    assert bench.test_log_likelihood(model, batch, 64) == pytest.approx(exact, rel=1e-10)
    # a budget of 500 elements forces many chunks of intervals and of sequences
    assert bench.test_log_likelihood(model, batch, 64, max_elements=500) == pytest.approx(exact, rel=1e-10)


def test_truncate_keeps_the_first_events_and_ends_the_window_halfway():
    batch = EventBatch.from_sequences([[1.0, 2.0, 4.0, 8.0], [0.5]], [[0, 1, 0, 1], [1]], t_end=[10.0, 3.0], num_marks=2)
    cut = bench.truncate(batch, 2)
    assert cut.lengths.tolist() == [2, 1]
    assert cut.t_end.tolist() == [3.0, 3.0]  # halfway between the 2nd and 3rd event; the short one untouched
    assert cut.mark[0, :2].tolist() == [0, 1]


def test_rescaling_moves_the_log_likelihood_by_log_scale():
    """Numbers are reported in data units: a Poisson fitted on times / c scores ll + log c per event."""
    rng = np.random.default_rng(1)
    times = [np.sort(rng.uniform(5, 25, n)) for n in (30, 50)]
    batch = EventBatch.from_sequences(times, [rng.integers(0, 2, t.size) for t in times], t_start=5.0, t_end=25.0,
                                      num_marks=2)
    scale = bench.mean_gap(batch)
    small = bench.rescaled(batch, scale)
    assert float(small.t_start.max()) == 0.0 and float(small.t_end.min()) == pytest.approx(20.0 / scale)
    original = bench.test_log_likelihood(Poisson(2).fit(batch), batch)
    in_units = bench.test_log_likelihood(Poisson(2).fit(small), small) - math.log(scale)
    assert in_units == pytest.approx(original, rel=1e-12)


def test_bad_settings_and_names_raise_clearly():
    with pytest.raises(ValueError, match="unknown benchmark settings"):
        bench.LikelihoodConfig.preset(epoch=3)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        bench.LikelihoodConfig.preset(epochs=0)
    with pytest.raises(ValueError, match="unknown model"):
        bench.run_likelihood("unused", models=["GPT"])
    assert set(bench.neural_model_names()) >= {"RMTPP", "NHP", "THP", "SAHP", "AttNHP", "FullyNN", "IntensityFree"}


def test_the_suite_names_its_models_by_the_model_table():
    """Columns and cells use the table's display names; CLI names resolve to them; a model the data alone
    cannot build (FaDIn needs a kernel support, MarkedHawkes a feature column) is not in the suite."""
    from tpp import table

    neural = tuple(s.display for s in table.specs("tpp", "trainer") if not s.needs)  # not the spatial models
    classic = tuple(s.display for s in table.specs("tpp", "estimator") if not s.required and not s.needs)
    assert bench.all_model_names() == neural + classic == neural + bench.CLASSIC_MODELS
    assert classic[:3] == ("Poisson", "ExpHawkes", "SumExpHawkes")
    assert "FaDIn" not in classic and "MarkedHawkes" not in classic and "NonlinearHawkes" in classic
    models, names = bench.likelihood._check_names(["rmtpp", "Poisson", "exp-hawkes"], ["taxi"])
    assert models == ["RMTPP", "Poisson", "ExpHawkes"] and names == ["taxi"]
    with pytest.raises(ValueError, match=r"unknown model\(s\) \['FaDIn'\]"):
        bench.run_likelihood("unused", models=["FaDIn"])


def tpp_cli(*args: str):
    """In-process (no second torch import); test_cli.py checks the console entry point itself."""
    from typer.testing import CliRunner

    from tpp.cli import app

    return CliRunner().invoke(app, list(args))


@needs_data
def test_cli_bench_writes_the_report_and_resumes(tmp_path):
    args = ["bench", "--suite", "likelihood", "--quick", "--models", "Poisson", "--datasets", "taxi,mimic2",
            "--seeds", "0", "--out", str(tmp_path), "--json", "--no-progress"]
    res = tpp_cli(*args)
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["cells_computed"] == 2 and out["cells_reused"] == 0
    assert {r["dataset"] for r in out["table"]} == {"taxi", "mimic2_rmtpp"}  # aliases resolved
    assert (tmp_path / "likelihood_table.md").read_text().startswith("# Test log-likelihood")
    again = json.loads(tpp_cli(*args).stdout)
    assert again["cells_computed"] == 0 and again["cells_reused"] == 2 and again["table"] == out["table"]


@needs_data
def test_collect_gathers_runs_of_separate_models_into_one_table_computing_nothing(tmp_path):
    """A long suite runs a model at a time (each run's tables hold only its own cells); --collect rebuilds the
    whole table, with results.csv, from the cells alone."""
    common = ["bench", "--suite", "likelihood", "--quick", "--datasets", "taxi", "--seeds", "0", "--out", str(tmp_path),
              "--json", "--no-progress"]
    parts = [json.loads(tpp_cli(*common, "--models", m).stdout)["table"] for m in ("Poisson", "ExpHawkes")]
    assert [{r["model"] for r in t} for t in parts] == [{"Poisson"}, {"ExpHawkes"}]
    res = tpp_cli(*common[:-1], "--collect")  # no --models: every model that has cells
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["cells_computed"] == 0 and out["cells_reused"] == 2
    assert {r["model"]: r["ll_mean"] for r in out["table"]} == {r["model"]: r["ll_mean"] for t in parts for r in t}
    results = pd.read_csv(tmp_path / "results.csv")
    assert sorted(results["model"]) == ["ExpHawkes", "Poisson"] and set(results["dataset"]) == {"taxi"}
    empty = tpp_cli("bench", "--suite", "likelihood", "--full", "--collect", "--out", str(tmp_path / "none"))
    assert empty.exit_code == 2 and "no cells" in empty.stderr and "Traceback" not in empty.stderr


def test_cli_bench_rejects_bad_input_with_exit_code_2(tmp_path):
    for args, needle in ((["--suite", "nope"], "nope"), (["--models", "GPT"], "unknown model"),
                         (["--datasets", "no_such_data"], "unknown dataset")):
        res = tpp_cli("bench", "--out", str(tmp_path), *args)
        assert res.exit_code == 2 and needle in res.stderr, res.stderr
        assert "Traceback" not in res.stderr and not list((tmp_path).iterdir())  # refused before any work


def test_an_event_at_the_window_start_is_conditioned_on_not_scored():
    """RMTPP's releases start every sequence with an event at its window start: scored, its zero gap made the
    likelihood unbounded (RMTPP's loss overflowed on mimic2); the suite conditions on it instead."""
    from tpp.bench.data import anchored, condition_on_first_event

    batch = EventBatch.from_sequences([np.array([0.0, 0.5, 2.0]), np.array([]), np.array([1.0, 1.5])],
                                      [np.array([1, 0, 1]), np.array([], int), np.array([0, 0])],
                                      t_start=[0.0, 0.0, 1.0], t_end=[3.0, 3.0, 4.0], num_marks=2)
    assert anchored(batch) and not anchored(condition_on_first_event(batch))
    cond = condition_on_first_event(batch)
    seqs = cond.sequences()
    assert [t.tolist() for t, _ in seqs] == [[0.5, 2.0], [], [1.5]] and [m.tolist() for _, m in seqs] == [[0, 1], [], [0]]
    assert cond.t_start.tolist() == [0.0, 0.0, 1.0] and cond.t_end.tolist() == [3.0, 3.0, 4.0]
    shifted = EventBatch.from_sequences([np.array([0.2, 0.5])], [np.array([0, 1])], t_start=[0.0], t_end=[1.0],
                                        num_marks=2)
    assert not anchored(shifted)


@needs_data
def test_anchored_datasets_are_conditioned_and_their_old_cells_recomputed(tmp_path):
    config = bench.LikelihoodConfig.preset(quick=True, **TINY)
    mimic, taxi = bench.load_dataset("mimic2_rmtpp", config), bench.load_dataset("taxi", config)
    assert mimic.first_event == "conditioned" and taxi.first_event == "scored"
    for split in (mimic.train, mimic.val, mimic.test):
        first = split.mask[:, 0]
        assert bool((split.time[:, 0][first] > split.t_start[first]).all())
    report = run(tmp_path, config, ["Poisson"], ["mimic2_rmtpp"])
    assert set(report.runs["first_event"]) == {"conditioned"}
    path = next((tmp_path / "cells" / config.key()).glob("mimic2_rmtpp/*.json"))
    cell = json.loads(path.read_text())
    del cell["row"]["first_event"]  # a cell written before the rule
    path.write_text(json.dumps(cell))
    again = run(tmp_path, config, ["Poisson"], ["mimic2_rmtpp"])
    assert len(again.computed) == 1 and len(again.reused) == len(config.seeds) - 1
