"""Runs own their directory: a checkpoint records the run's identity and ``resume`` refuses another run's
directory naming the difference; a lock file keeps a second run out (a killed run's stale lock is taken
over with a warning); a fresh run refuses a directory holding checkpoints unless ``overwrite``; the
``tpp fit`` / ``sde fit`` flags ``--resume --checkpoint-every --overwrite``."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tpp
import tpp.train as train_module
from tpp import EventBatch
from tpp.hawkes import ExpHawkes
from tpp.neural import RMTPP, THP
from tpp.stream import ParquetSource
from tpp.train import CheckpointError, _read_checkpoint, _save_checkpoint

from ..conftest import SHARED_DATA, needs_data

TRUTH = ExpHawkes.from_params([0.3, 0.2, 0.1], [[0.3, 0.1, 0.0], [0.1, 0.3, 0.1], [0.0, 0.2, 0.3]], 1.5)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
FAST = dict(epochs=1, batch_size=8, seed=0, progress=False)


@pytest.fixture(scope="module")
def data():
    return TRUTH.sample(40, 30.0, generator=0).split((0.8, 0.2), seed=0)


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _lock(folder: Path, pid: int, host: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    path.write_text(f"{pid} {host or socket.gethostname()}\n")
    return path


# --------------------------------------------------------------------------- identity
def test_resume_with_another_learning_rate_is_refused_naming_both_values(data, tmp_path):
    train, val = data
    tpp.fit(RMTPP(3, 8), train, val, lr=1e-3, checkpoint_dir=tmp_path, **FAST)
    with pytest.raises(CheckpointError, match=r"lr 0\.001 there, 0\.01 here"):
        tpp.fit(RMTPP(3, 8), train, val, lr=1e-2, checkpoint_dir=tmp_path, resume=True, **FAST)


def test_resume_names_every_difference_of_trainer_settings(data, tmp_path):
    train, val = data
    tpp.fit(RMTPP(3, 8), train, val, checkpoint_dir=tmp_path, **FAST)
    with pytest.raises(CheckpointError) as info:
        tpp.fit(RMTPP(3, 8), train, val, checkpoint_dir=tmp_path, resume=True, weight_decay=0.0, clip=5.0, amp=True,
                **FAST)
    message = str(info.value)
    for text in ("weight_decay 0.0001 there, 0.0 here", "clip 1.0 there, 5.0 here", "amp False there, True here",
                 str(tmp_path)):
        assert text in message


def test_resume_with_another_model_class_or_size_is_refused(data, tmp_path):
    train, val = data
    tpp.fit(RMTPP(3, 8), train, val, checkpoint_dir=tmp_path, **FAST)
    with pytest.raises(CheckpointError, match=r"model tpp\.neural\.rmtpp\.RMTPP there, tpp\.neural\.thp\.THP here"):
        tpp.fit(THP(3, 8), train, val, checkpoint_dir=tmp_path, resume=True, **FAST)
    with pytest.raises(CheckpointError, match="model argument hidden_size 8 there, 16 here"):
        tpp.fit(RMTPP(3, 16), train, val, checkpoint_dir=tmp_path, resume=True, **FAST)


def test_a_model_built_by_the_table_and_one_made_directly_are_the_same_run(data, tmp_path):
    """The identity fills in the constructor's defaults: how the model was made does not matter."""
    from tpp import table

    train, val = data
    tpp.fit(table.build("rmtpp", train, hidden_size=8), train, val, checkpoint_dir=tmp_path, epochs=2, batch_size=8,
            seed=0, progress=False)
    result = tpp.fit(RMTPP(3, 8), train, val, checkpoint_dir=tmp_path, resume=True, epochs=2, batch_size=8, seed=0,
                     progress=False)
    assert result.resumed_from_epoch == 1


def test_resume_on_other_training_data_with_the_same_lengths_is_refused(data, tmp_path):
    train, val = data
    tpp.fit(RMTPP(3, 8), train, val, checkpoint_dir=tmp_path, **FAST)
    shifted = EventBatch(train.time * 1.5, train.mark, train.mask, train.t_start, train.t_end * 1.5, 3)
    with pytest.raises(CheckpointError, match="training data .* there, .* here"):
        tpp.fit(RMTPP(3, 8), shifted, val, checkpoint_dir=tmp_path, resume=True, **FAST)
    with pytest.raises(CheckpointError, match="validation data"):
        tpp.fit(RMTPP(3, 8), train, None, checkpoint_dir=tmp_path, resume=True, **FAST)


def test_a_streamed_source_is_identified_by_its_files(data, tmp_path):
    train, val = data
    tpp.write_events(train, tmp_path / "a.parquet")
    tpp.write_events(train[: len(train) - 1], tmp_path / "b.parquet")
    run = tmp_path / "run"
    tpp.fit(RMTPP(3, 8), ParquetSource(tmp_path / "a.parquet"), val, checkpoint_dir=run, epochs=2, batch_size=8,
            seed=0, progress=False)
    result = tpp.fit(RMTPP(3, 8), ParquetSource(tmp_path / "a.parquet"), val, checkpoint_dir=run, resume=True,
                     epochs=2, batch_size=8, seed=0, progress=False)
    assert result.resumed_from_epoch == 1
    with pytest.raises(CheckpointError, match="training data"):
        tpp.fit(RMTPP(3, 8), ParquetSource(tmp_path / "b.parquet"), val, checkpoint_dir=run, resume=True, epochs=2,
                batch_size=8, seed=0, progress=False)


def test_more_epochs_extend_the_run_with_a_warning(data, tmp_path):
    train, val = data
    tpp.fit(RMTPP(3, 8), train, val, checkpoint_dir=tmp_path, **FAST)
    with pytest.warns(UserWarning, match="epochs 1 there, 2 here"):
        result = tpp.fit(RMTPP(3, 8), train, val, checkpoint_dir=tmp_path, resume=True, **{**FAST, "epochs": 2})
    assert result.resumed_from_epoch == 0 and len(result.history) == 2


def test_a_checkpoint_without_identity_still_resumes_by_its_old_settings(data, tmp_path):
    """Checkpoints written before run identities: resumed when the settings they kept match."""
    train, val = data
    tpp.fit(RMTPP(3, 8), train, val, checkpoint_dir=tmp_path, epochs=2, batch_size=8, seed=0, progress=False)
    for path in (tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt"):
        state = _read_checkpoint(path)
        del state["identity"]
        path.unlink()
        _save_checkpoint(path, state)
    result = tpp.fit(RMTPP(3, 8), train, val, checkpoint_dir=tmp_path, resume=True, epochs=2, batch_size=8, seed=0,
                     progress=False)
    assert result.resumed_from_epoch == 1
    with pytest.raises(CheckpointError, match="batch_size 8 there, 16 here"):
        tpp.fit(RMTPP(3, 8), train, val, checkpoint_dir=tmp_path, resume=True, epochs=2, batch_size=16, seed=0,
                progress=False)


# --------------------------------------------------------------------------- fresh runs
def test_a_fresh_run_refuses_a_directory_holding_another_runs_checkpoint(data, tmp_path):
    train, val = data
    tpp.fit(RMTPP(3, 8), train, val, checkpoint_dir=tmp_path, **FAST)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(CheckpointError) as info:
        tpp.fit(RMTPP(3, 8), train, val, checkpoint_dir=tmp_path, lr=1e-2, **FAST)
    assert str(tmp_path) in str(info.value) and "resume" in str(info.value) and "overwrite" in str(info.value)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before  # untouched


def test_overwrite_replaces_the_run_and_equals_a_run_in_an_empty_directory(data, tmp_path):
    train, val = data
    tpp.fit(RMTPP(3, 8), train, val, checkpoint_dir=tmp_path / "d", lr=1e-2, **{**FAST, "epochs": 2})
    assert (tmp_path / "d" / "checkpoint.prev.pt").exists()
    torch.manual_seed(0)
    init = RMTPP(3, 8).state_dict()
    a, b = RMTPP(3, 8), RMTPP(3, 8)
    a.load_state_dict(init)
    b.load_state_dict(init)
    tpp.fit(a, train, val, checkpoint_dir=tmp_path / "d", overwrite=True, **FAST)
    tpp.fit(b, train, val, checkpoint_dir=tmp_path / "empty", **FAST)
    for key, value in b.state_dict().items():
        torch.testing.assert_close(a.state_dict()[key], value)
    state = _read_checkpoint(tmp_path / "d" / "checkpoint.pt")
    assert state["identity"]["trainer"]["lr"] == "0.001" and state["epoch"] == 0
    assert not (tmp_path / "d" / "checkpoint.prev.pt").exists()  # the old run's files are gone (one epoch: one file)


def test_resume_and_overwrite_together_is_an_argument_error(data, tmp_path):
    train, val = data
    with pytest.raises(ValueError, match="one of them"):
        tpp.fit(RMTPP(3, 8), train, val, checkpoint_dir=tmp_path, resume=True, overwrite=True, **FAST)


# --------------------------------------------------------------------------- the lock
def test_the_lock_is_released_after_a_run_and_after_an_exception(data, tmp_path):
    train, val = data
    tpp.fit(RMTPP(3, 8), train, val, checkpoint_dir=tmp_path / "ok", **FAST)
    assert not (tmp_path / "ok" / ".lock").exists()

    class Killed(Exception):
        pass

    def die(path, state):
        raise Killed

    original = train_module._save_checkpoint
    train_module._save_checkpoint = die
    try:
        with pytest.raises(Killed):
            tpp.fit(RMTPP(3, 8), train, val, checkpoint_dir=tmp_path / "failed", **FAST)
    finally:
        train_module._save_checkpoint = original
    assert not (tmp_path / "failed" / ".lock").exists()
    with pytest.raises(CheckpointError):  # refused by the identity check: the lock is released all the same
        tpp.fit(RMTPP(3, 8), train, val, checkpoint_dir=tmp_path / "ok", resume=True, lr=0.5, **FAST)
    assert not (tmp_path / "ok" / ".lock").exists()


def test_a_second_run_on_a_directory_in_use_is_refused_naming_the_pid(data, tmp_path):
    """While one run trains (its objective starts the second one mid-epoch), the second is refused."""
    train, val = data
    seen = {}

    class Intruding(RMTPP):
        def objective(self, batch):
            if self.training and "error" not in seen:
                try:
                    tpp.fit(RMTPP(3, 8), train, val, checkpoint_dir=tmp_path, resume=True, **FAST)
                except CheckpointError as exc:
                    seen["error"] = str(exc)
            return super().objective(batch)

    tpp.fit(Intruding(3, 8), train, val, checkpoint_dir=tmp_path, **FAST)
    assert f"pid {os.getpid()}" in seen["error"] and "in use" in seen["error"]


def test_a_lock_held_by_a_live_process_refuses_and_its_stale_lock_is_taken_over(data, tmp_path):
    train, val = data
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock(tmp_path, holder.pid)
        with pytest.raises(CheckpointError, match=f"pid {holder.pid}"):
            tpp.fit(RMTPP(3, 8), train, val, checkpoint_dir=tmp_path, **FAST)
    finally:
        holder.kill()
        holder.wait()
    with pytest.warns(UserWarning, match=f"stale lock .*pid {holder.pid} no longer runs"):
        tpp.fit(RMTPP(3, 8), train, val, checkpoint_dir=tmp_path, **FAST)
    assert not (tmp_path / ".lock").exists()


def test_a_lock_of_another_host_is_refused_naming_the_host(data, tmp_path):
    train, val = data
    _lock(tmp_path, _dead_pid(), host="elsewhere.example")
    with pytest.raises(CheckpointError, match="elsewhere.example"):
        tpp.fit(RMTPP(3, 8), train, val, checkpoint_dir=tmp_path, **FAST)
    assert (tmp_path / ".lock").exists()  # not ours to remove


# --------------------------------------------------------------------------- the commands
def _cli(module: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=ENV,
                          timeout=300, **kwargs)


def _in_process(module: str, *args: str):
    """The command run in this process (typer's CliRunner): for runs that only end in an exit-2 line, a
    subprocess's torch import costs seconds; each installed script keeps real subprocess runs above."""
    from typer.testing import CliRunner

    if module == "tpp.cli":
        from tpp.cli import app
    else:
        from sde.cli import app
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception  # no traceback
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def events_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("events") / "hawkes.npz"
    tpp.write_events(TRUTH.sample(100, 30.0, generator=1), path)  # 40 steps an epoch at batch size 2
    return path


@pytest.mark.slow  # subprocesses (torch imports): ~20 s CPU
def test_tpp_fit_killed_then_resumed_ends_as_an_uninterrupted_run(events_file, tmp_path):
    args = ["fit", "--model", "thp", "--data", str(events_file), "--epochs", "3", "--batch-size", "2",
            "--hidden-size", "8", "--json"]
    run = tmp_path / "run"
    victim = subprocess.Popen([sys.executable, "-m", "tpp.cli", *args, "--out", str(run), "--checkpoint-every", "1"],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (run / "checkpoint.pt").exists():
        assert victim.poll() is None, victim.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the run wrote no checkpoint"
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL and (run / ".lock").exists()  # killed with its lock

    again = _in_process("tpp.cli", *args, "--out", str(run))  # neither --resume nor --overwrite
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1, again.stderr
    assert str(run) in again.stderr and "--resume" in again.stderr and "--overwrite" in again.stderr

    resumed = _cli("tpp.cli", *args, "--out", str(run), "--checkpoint-every", "1", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "stale lock" in resumed.stderr and not (run / ".lock").exists()
    # the uninterrupted reference runs in this process (one thread, as the subprocesses): one torch import less
    reference = _in_process("tpp.cli", *args, "--out", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr[-2000:]
    got, want = json.loads(resumed.stdout), json.loads(reference.stdout)
    assert got.keys() == want.keys()
    for key in want:
        if key != "train_events_per_second":  # a timing
            assert got[key] == (pytest.approx(want[key], rel=1e-9) if isinstance(want[key], float) else want[key]), key
    changed = _in_process("tpp.cli", *args[:-1], "--lr", "0.01", "--out", str(run), "--resume")
    assert changed.returncode == 2 and "lr 0.001 there, 0.01 here" in changed.stderr
    assert len(changed.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flags, message", [
    (["--resume"], "--resume needs --out"),
    (["--checkpoint-every", "2"], "--checkpoint-every needs --out"),
    (["--resume", "--overwrite", "--out", "D"], "give one of them"),
    (["--model", "exp-hawkes", "--resume", "--out", "D"], "fitted in one go"),
])
def test_tpp_fit_run_flags_that_mean_nothing_exit_2_with_one_line(events_file, tmp_path, flags, message):
    args = ["fit", "--data", str(events_file), *([] if "--model" in flags else ["--model", "rmtpp"]), *flags]
    cwd = os.getcwd()
    os.chdir(tmp_path)  # "D" is relative: it must not appear there
    try:
        res = _in_process("tpp.cli", *args)
    finally:
        os.chdir(cwd)
    assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "D").exists()


@pytest.fixture(scope="module")
def small_ts(tmp_path_factory) -> Path:
    if not SHARED_DATA:
        pytest.skip("needs TPP_DATA_DIR")
    text = (Path(SHARED_DATA) / "uea_ItalyPowerDemand" / "ItalyPowerDemand_TRAIN.ts").read_text().splitlines()
    start = next(i for i, line in enumerate(text) if line.strip().lower().startswith("@data")) + 1
    path = tmp_path_factory.mktemp("ts") / "Italy_small_TRAIN.ts"
    path.write_text("\n".join(text[: start + 30]) + "\n")
    return path


@needs_data
@pytest.mark.slow  # one subprocess (the real script), then in process: ~8 s CPU
def test_sde_fit_owns_its_out_folder(small_ts, tmp_path):
    args = ["fit", "--model", "gru", "--data", str(small_ts), "--task", "forecast", "--epochs", "2",
            "--hidden-size", "8", "--json", "--out", str(tmp_path)]
    first = _cli("sde.cli", *args)
    assert first.returncode == 0, first.stderr[-2000:]
    assert (tmp_path / "checkpoint.pt").is_file() and not (tmp_path / ".lock").exists()
    again = _in_process("sde.cli", *args)
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1, again.stderr
    assert "--resume" in again.stderr and "--overwrite" in again.stderr
    resumed = _in_process("sde.cli", *args, "--resume")  # the run had ended: the same numbers again
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout)["test_mse"] == pytest.approx(json.loads(first.stdout)["test_mse"], rel=1e-9)
    changed = _in_process("sde.cli", *args, "--lr", "0.1", "--resume")
    assert changed.returncode == 2 and "lr 0.01 there, 0.1 here" in changed.stderr, changed.stderr
    replaced = _in_process("sde.cli", *args, "--lr", "0.1", "--overwrite", "--checkpoint-every", "1")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert _read_checkpoint(tmp_path / "checkpoint.pt")["identity"]["trainer"]["lr"] == "0.1"
