"""The `tpp` command: JSON output, exit code 2 with one line on bad input, simulate/fit/eval round trip."""

import json
import subprocess
import sys

import numpy as np
import pytest

from ..conftest import needs_data, tpp_in_process


def tpp(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tpp.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "sim.csv"
    res = tpp("simulate", "--out", str(path), "--baseline", "0.5,0.3", "--adjacency", "0.3,0.1;0.2,0.4",
              "--decay", "2", "--t-end", "3000", "--seed", "1")
    assert res.returncode == 0, res.stderr
    return path


def test_fit_json_has_the_documented_keys_and_recovers_parameters(simulated, tmp_path):
    res = tpp_in_process("fit", "--model", "exp-hawkes", "--data", str(simulated), "--decay", "2", "--json",
                         "--t-end", "3000", "--out", str(tmp_path / "fit"))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert set(out) >= {"model", "num_events", "log_likelihood", "log_likelihood_per_event", "baseline", "adjacency",
                        "decay", "ks_statistic", "ks_pvalue", "fit_seconds"}
    assert out["decay"] == 2.0
    np.testing.assert_allclose(out["adjacency"], [[0.3, 0.1], [0.2, 0.4]], atol=0.12)
    assert out["ks_pvalue"] > 0.001
    assert (tmp_path / "fit" / "model.json").exists() and (tmp_path / "fit" / "qq.png").stat().st_size > 1000
    ev = tpp_in_process("eval", "--model-file", str(tmp_path / "fit" / "model.json"), "--data", str(simulated),
                        "--t-end", "3000", "--json")
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["log_likelihood"] == pytest.approx(out["log_likelihood"], rel=1e-12)


@pytest.mark.parametrize("model", ["poisson", "sumexp-hawkes"])
def test_other_models_fit_from_the_cli(simulated, model):
    res = tpp_in_process("fit", "--model", model, "--data", str(simulated), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["model"] == model


def test_bad_file_exits_2_with_one_line_naming_file_sequence_row_field(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("seq,time,mark\nu1,1.0,0\nu1,0.5,0\n")
    res = tpp("fit", "--data", str(bad), "--json")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr and res.stdout == ""
    assert all(s in lines[0] for s in ("bad.csv", "sequence 'u1'", "row 1", "field 'time'"))


def test_missing_file_and_bad_decay_exit_2(tmp_path):
    assert tpp_in_process("fit", "--data", str(tmp_path / "none.csv")).returncode == 2
    good = tmp_path / "ok.csv"
    good.write_text("time\n1.0\n2.0\n")
    res = tpp_in_process("fit", "--data", str(good), "--decay", "-1")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1


@needs_data
def test_datasets_lists_the_registry():
    res = tpp("datasets", "--json")
    assert res.returncode == 0, res.stderr
    names = {row["name"] for row in json.loads(res.stdout)}
    assert {"pubg", "taxi", "bookorder_rmtpp"} <= names


@needs_data
def test_fit_by_registry_name():
    res = tpp_in_process("fit", "--model", "exp-hawkes", "--data", "taxi", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["num_events"] == 17904 and np.isfinite(out["log_likelihood"])


def test_unknown_dataset_exits_2():
    res = tpp_in_process("fit", "--data", "no-such-dataset")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def gaussian_events(tmp_path_factory):
    from tpp.hawkes import FaDInHawkes
    from tpp.io import write_events

    truth = FaDInHawkes.from_params([0.5, 0.3], np.array([[0.3, 0.1], [0.2, 0.4]]), "truncated-gaussian", 3.0,
                                    {"m": np.array([[1.0, 1.5], [0.5, 2.0]]), "sigma": np.full((2, 2), 0.3)})
    path = tmp_path_factory.mktemp("fadin") / "gauss.parquet"
    write_events(truth.sample(1, 1.5e4, generator=1), path)
    return path


def test_fadin_fit_reports_kernel_parameters_and_draws_the_kernel_grid(gaussian_events, tmp_path):
    res = tpp_in_process("fit", "--model", "fadin", "--kernel", "truncated-gaussian", "--support", "3", "--delta", "0.05",
              "--data", str(gaussian_events), "--json", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["kernel"] == "truncated-gaussian" and out["support"] == 3.0 and out["delta"] == 0.05
    np.testing.assert_allclose(out["kernel_params"]["m"], [[1.0, 1.5], [0.5, 2.0]], atol=0.15)
    assert {"log_likelihood", "ks_pvalue", "baseline", "adjacency"} <= set(out)
    assert (tmp_path / "kernels.png").stat().st_size > 10000
    ev = tpp_in_process("eval", "--model-file", str(tmp_path / "model.json"), "--data", str(gaussian_events), "--json")
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["log_likelihood"] == pytest.approx(out["log_likelihood"], rel=1e-10)


def test_nonparametric_em_fit_from_the_cli(gaussian_events):
    res = tpp_in_process("fit", "--model", "nonparametric-em", "--support", "3", "--bins", "15", "--data", str(gaussian_events), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert np.asarray(out["kernel_values"]).shape == (2, 2, 15) and out["bins"] == 15
    np.testing.assert_allclose(out["adjacency"], [[0.3, 0.1], [0.2, 0.4]], atol=0.1)


def test_fadin_without_support_exits_2(gaussian_events):
    res = tpp_in_process("fit", "--model", "fadin", "--data", str(gaussian_events))
    assert res.returncode == 2 and "--support" in res.stderr and len(res.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def rmtpp_run(tmp_path_factory):
    """One `tpp fit --model rmtpp --out run` (2 epochs) shared by the two tests below: the file, its batch,
    the fit's JSON and the run folder. One training instead of two keeps the CLI tests' CPU down."""
    from tpp.hawkes import ExpHawkes
    from tpp.io import write_events

    tmp_path = tmp_path_factory.mktemp("rmtpp")
    path = tmp_path / "hawkes.npz"
    batch = ExpHawkes.from_params([0.3, 0.2], [[0.3, 0.1], [0.1, 0.3]], 1.5).sample(40, 30.0, generator=0)
    write_events(batch, path)
    run = tmp_path / "run"
    res = tpp_in_process("fit", "--model", "rmtpp", "--data", str(path), "--epochs", "2", "--hidden-size", "8", "--json",
              "--out", str(run))
    assert res.returncode == 0, res.stderr
    return path, batch, json.loads(res.stdout), run


def test_neural_fit_trains_and_reports_test_metrics(rmtpp_run):
    out, run = rmtpp_run[2], rmtpp_run[3]
    assert {"test_log_likelihood_per_event", "rmse", "accuracy", "train_events_per_second"} <= set(out)
    assert np.isfinite(out["test_log_likelihood_per_event"]) and out["rmse"] > 0 and 0 <= out["accuracy"] <= 1
    assert (run / "checkpoint.pt").exists()


def test_a_trained_model_saved_by_fit_out_is_scored_by_eval_as_fit_scored_it(rmtpp_run, tmp_path):
    from tpp.io import write_events

    _, batch, _, run = rmtpp_run
    assert (run / "model.pt").exists()
    test = batch.split((0.7, 0.15, 0.15), seed=0)[2]  # the CLI's seeded split of a file
    write_events(test, tmp_path / "test.npz")
    for model_file in (run, run / "model.pt"):
        ev = tpp_in_process("eval", "--model-file", str(model_file), "--data", str(tmp_path / "test.npz"), "--json")
        assert ev.returncode == 0, ev.stderr
        scored = json.loads(ev.stdout)
        assert scored["model"] == "rmtpp" and np.isfinite(scored["log_likelihood_per_event"])


@needs_data
def test_a_registry_set_without_a_val_split_takes_validation_from_train():
    res = tpp_in_process("fit", "--model", "rmtpp", "--data", "mimic2_rmtpp", "--epochs", "1", "--hidden-size", "8", "--json")
    assert res.returncode == 0, res.stderr
    assert np.isfinite(json.loads(res.stdout)["val_log_likelihood_per_event"])


def test_fit_takes_the_models_own_learning_rate_unless_lr_is_given(monkeypatch):
    """The Gaussian-mixture spatial baselines declare default_lr 0.05 (1e-3 left hawkes-gmm 0.58 nats per event
    behind on earthquakes_japan after 3 epochs); the neural models keep 1e-3; --lr wins over both."""
    import tpp.cli as cli
    from tpp.spatial.data import pinwheel

    splits = pinwheel(6, seed=0).split((0.5, 0.25, 0.25), seed=0)
    monkeypatch.setattr(cli, "_splits", lambda *args: splits)
    seen = []

    class Stop(Exception):
        """Ends the fit once its learning rate is seen."""

    def capture(estimator, *args, lr, **kwargs):
        seen.append(lr)
        raise Stop

    monkeypatch.setattr(cli, "fit_in_run_folder", capture)
    for argv in (["hawkes-gmm"], ["attentive-cnf"], ["hawkes-gmm", "--lr", "0.002"]):
        with pytest.raises(Stop):
            cli._fit_neural(argv[0], "pinwheel", None, 8, 1, 4, float(argv[2]) if len(argv) > 1 else None, 0, None)
    assert seen == [0.05, cli.DEFAULT_LR, 0.002]
