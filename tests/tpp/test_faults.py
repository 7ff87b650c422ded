"""Faults: a run killed with SIGKILL resumes to the same model; damaged checkpoints are caught and the
previous one used; non-finite losses or gradients never pass silently. (DDP crash and resume: test_scale.py.)"""

import json
import os
import runpy
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

import tpp
import tpp.train as train_module
from tpp import EventBatch
from tpp.hawkes import ExpHawkes
from tpp.neural import RMTPP
from tpp.stream import ParquetSource
from tpp.train import CheckpointError, NonFinite, TrainingDivergedError, _load_checkpoint, shard

TRUTH = ExpHawkes.from_params([0.3, 0.2, 0.1], [[0.3, 0.1, 0.0], [0.1, 0.3, 0.1], [0.0, 0.2, 0.3]], 1.5)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data():
    batch = TRUTH.sample(60, 30.0, generator=0)
    names = [f"s{i}" for i in range(len(batch))]
    batch = EventBatch(batch.time, batch.mark, batch.mask, batch.t_start, batch.t_end, 3, seq_names=names)
    return batch.split((0.8, 0.2), seed=0)


def _same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- SIGKILL mid-epoch, then resume
KILL_SCRIPT = textwrap.dedent("""
    import json, sys, time, torch
    torch.set_num_threads(1)
    import tpp
    from tpp.hawkes import ExpHawkes
    from tpp.neural import RMTPP
    out, ckpt, resume, delay, trace = sys.argv[1], sys.argv[2], sys.argv[3] == "1", float(sys.argv[4]), sys.argv[5]

    class Traced(RMTPP):
        # Appends one line per training step, then waits: the parent sees the progress and can kill mid-step.
        def objective(self, batch):
            if self.training:
                with open(trace, "a") as fh:
                    fh.write("step\\n")
                time.sleep(delay)
            return super().objective(batch)

    truth = ExpHawkes.from_params([0.3, 0.2, 0.1], [[0.3, 0.1, 0.0], [0.1, 0.3, 0.1], [0.0, 0.2, 0.3]], 1.5)
    train, val = truth.sample(100, 30.0, generator=0).split((0.8, 0.2), seed=0)
    torch.manual_seed(0)
    model = Traced(3, 8)
    result = tpp.fit(model, train, val, epochs=3, batch_size=8, lr=5e-3, seed=1, progress=False,
                     checkpoint_dir=ckpt, checkpoint_every=2, resume=resume)
    torch.save(model.state_dict(), out)
    with open(out + ".json", "w") as fh:
        json.dump({"resumed_from_epoch": result.resumed_from_epoch, "resumed_from_step": result.resumed_from_step,
                   "resume_seconds": result.resume_seconds, "history": result.history}, fh)
""")


def _steps(trace) -> int:
    return trace.read_text().count("step") if trace.exists() else 0


@pytest.mark.slow  # subprocesses (torch imports): ~10-30 s
def test_sigkill_mid_epoch_then_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(KILL_SCRIPT)

    def launch(name, resume, delay):
        return subprocess.Popen([sys.executable, str(script), str(tmp_path / f"{name}.pt"), str(tmp_path / f"ckpt_{name}"),
                                 "1" if resume else "0", str(delay), str(tmp_path / f"{name}.trace")],
                                env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    victim = launch("run", False, 0.05)  # slowed so that the kill lands mid-step
    trace, ckpt = tmp_path / "run.trace", tmp_path / "ckpt_run" / "checkpoint.pt"
    steps_per_epoch = 10  # 80 training sequences, batches of 8
    deadline = time.monotonic() + 120
    # Kill in the second epoch, between two mid-epoch checkpoints (not right after one).
    while _steps(trace) < steps_per_epoch + 5 or not ckpt.exists():
        assert victim.poll() is None, victim.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the training run made no progress"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    state = _load_checkpoint(ckpt)
    done_at_kill = _steps(trace)
    assert state["epoch"] == 1 and state["step"] is not None and 0 < state["step"] < steps_per_epoch  # mid-epoch
    lost = done_at_kill - (state["epoch"] * steps_per_epoch + state["step"])
    assert 0 <= lost <= 2  # checkpoint_every=2: at most the steps since the last checkpoint (one in flight)

    resumed = subprocess.run([sys.executable, str(script), str(tmp_path / "run.pt"), str(tmp_path / "ckpt_run"), "1",
                              "0", str(tmp_path / "resumed.trace")], env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # The uninterrupted reference: the same script run in this process (one thread, as the subprocesses), which
    # saves a torch import.
    argv = sys.argv
    sys.argv = [str(script), str(tmp_path / "full.pt"), str(tmp_path / "ckpt_full"), "0", "0.0",
                str(tmp_path / "full.trace")]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
    report = json.loads((tmp_path / "run.pt.json").read_text())
    reference = json.loads((tmp_path / "full.pt.json").read_text())
    assert (report["resumed_from_epoch"], report["resumed_from_step"]) == (1, state["step"])
    # Exactly the steps not yet checkpointed were redone: nothing skipped, nothing done twice beyond them.
    assert _steps(tmp_path / "resumed.trace") == 3 * steps_per_epoch - (steps_per_epoch + state["step"])
    _same_weights(torch.load(tmp_path / "run.pt"), torch.load(tmp_path / "full.pt"))
    for got, want in zip(report["history"], reference["history"], strict=True):
        assert got["train_nll_per_event"] == pytest.approx(want["train_nll_per_event"], rel=1e-9)
        assert got["val_ll_per_event"] == pytest.approx(want["val_ll_per_event"], rel=1e-9)
        assert got["events"] == want["events"]


# --------------------------------------------------------------------------- exact resume, in process
class _Killed(Exception):
    pass


def _run_until_save(n_saves, fit_args, fit_kwargs):
    """Run ``fit`` but die right after its ``n_saves``-th checkpoint, as a kill would."""
    original = train_module._save_checkpoint
    calls = {"n": 0}

    def save_then_maybe_die(path, state):
        original(path, state)
        calls["n"] += 1
        if calls["n"] == n_saves:
            raise _Killed

    train_module._save_checkpoint = save_then_maybe_die
    try:
        with pytest.raises(_Killed):
            tpp.fit(*fit_args, **fit_kwargs)
    finally:
        train_module._save_checkpoint = original


@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "parquet"])
def test_resume_from_every_mid_epoch_checkpoint_equals_the_uninterrupted_run(data, tmp_path, streamed):
    train, val = data
    if streamed:
        tpp.write_events(train, tmp_path / "train.parquet")
        train = ParquetSource(tmp_path / "train.parquet", block_events=300)  # several blocks
    torch.manual_seed(0)
    init = RMTPP(3, 8).state_dict()
    kwargs = dict(epochs=2, batch_size=8, lr=5e-3, seed=2, progress=False, checkpoint_every=3)
    full = RMTPP(3, 8)
    full.load_state_dict(init)
    reference = tpp.fit(full, train, val, **kwargs)
    for kill_after in (1, 2, 3):  # mid-epoch 0, end of epoch 0 or mid-epoch 1, ...
        folder = tmp_path / f"k{kill_after}"
        model = RMTPP(3, 8)
        model.load_state_dict(init)
        _run_until_save(kill_after, (model, train, val), dict(kwargs, checkpoint_dir=folder))
        resumed = RMTPP(3, 8)
        result = tpp.fit(resumed, train, val, **kwargs, checkpoint_dir=folder, resume=True)
        assert result.resumed_from_epoch is not None and result.resume_seconds >= 0
        _same_weights(resumed.state_dict(), full.state_dict())
        assert [h["events"] for h in result.history] == [h["events"] for h in reference.history]
        assert [h["val_ll_per_event"] for h in result.history] == pytest.approx(
            [h["val_ll_per_event"] for h in reference.history], rel=1e-9)


def test_resume_refuses_a_checkpoint_of_another_configuration(data, tmp_path):
    train, val = data
    tpp.fit(RMTPP(3, 8), train, val, epochs=1, batch_size=8, seed=0, progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="batch_size 8 there, 16 here"):
        tpp.fit(RMTPP(3, 8), train, val, epochs=1, batch_size=16, seed=0, progress=False, checkpoint_dir=tmp_path,
                resume=True)


# --------------------------------------------------------------------------- damaged checkpoints
@pytest.fixture()
def two_checkpoints(data, tmp_path):
    train, val = data
    tpp.fit(RMTPP(3, 8), train, val, epochs=2, batch_size=8, seed=1, progress=False, checkpoint_dir=tmp_path)
    return tmp_path / "checkpoint.pt"


@pytest.mark.parametrize("damage", ["truncate", "bit-flip", "zero-page", "garbage"])
def test_damaged_checkpoint_is_detected_and_the_previous_one_used(two_checkpoints, damage):
    path = two_checkpoints
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) * 2 // 3]
    elif damage == "bit-flip":
        raw[len(raw) // 2] ^= 0x10  # one bit deep inside the tensors: torch.load alone would not notice
    elif damage == "zero-page":
        raw[-5000:-1000] = bytes(4000)
    else:
        raw = bytearray(b"not a checkpoint at all")
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="unreadable"):
        state = _load_checkpoint(path)
    assert state["epoch"] == 0 and state["step"] is None  # the previous checkpoint, end of epoch 0


def test_a_bit_flip_in_tensor_data_is_caught_by_the_checksum(two_checkpoints):
    path = two_checkpoints
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="checksum mismatch"):
        _load_checkpoint(path)


def test_both_checkpoints_damaged_is_a_clear_error(data, two_checkpoints):
    train, val = data
    for p in (two_checkpoints, two_checkpoints.with_suffix(".prev.pt")):
        p.write_bytes(p.read_bytes()[:-10])
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="no readable checkpoint"):
        tpp.fit(RMTPP(3, 8), train, val, epochs=3, batch_size=8, seed=1, progress=False,
                checkpoint_dir=two_checkpoints.parent, resume=True)


def test_resume_with_a_damaged_latest_checkpoint_continues_from_the_previous_one(data, tmp_path):
    train, val = data
    torch.manual_seed(0)
    init = RMTPP(3, 8).state_dict()
    full, run, resumed = RMTPP(3, 8), RMTPP(3, 8), RMTPP(3, 8)
    full.load_state_dict(init)
    run.load_state_dict(init)
    kwargs = dict(epochs=3, batch_size=8, seed=1, progress=False)
    tpp.fit(full, train, val, **kwargs)
    _run_until_save(2, (run, train, val), dict(kwargs, checkpoint_dir=tmp_path))
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.warns(UserWarning, match="checksum mismatch"):
        result = tpp.fit(resumed, train, val, **kwargs, checkpoint_dir=tmp_path, resume=True)
    assert result.resumed_from_epoch == 0
    _same_weights(resumed.state_dict(), full.state_dict())


# --------------------------------------------------------------------------- non-finite losses and gradients
class _Rigged(RMTPP):
    """RMTPP that returns NaN (``mode="loss"``) or a finite loss with a NaN gradient (``"grad"``) whenever
    the batch holds the sequence named ``poison``."""

    def __init__(self, poison, mode):
        super().__init__(3, 8)
        self.poison, self.mode = poison, mode

    def objective(self, batch):
        ll = super().objective(batch)
        if self.training and self.poison in (batch.seq_names or []):
            if self.mode == "loss":
                return ll * float("nan")
            return ll + torch.sqrt(self.w * 0.0)  # value 0, d/dw = 0 * inf = NaN
        return ll


@pytest.mark.parametrize("mode", ["loss", "grad"])
def test_nonfinite_step_raises_naming_epoch_batch_and_sequences(data, mode):
    train, val = data
    poison = train.seq_names[7]
    model = _Rigged(poison, mode)
    with pytest.raises(TrainingDivergedError) as info:
        tpp.fit(model, train, val, epochs=2, batch_size=8, seed=0, progress=False)
    err = info.value
    assert err.quantity == ("loss" if mode == "loss" else "gradient norm")
    assert err.epoch == 0 and 7 in err.sequences and poison in err.names
    assert f"epoch 0, batch {err.batch_index}" in str(err) and poison in str(err)
    plan = train_module.length_buckets(train.lengths.numpy(), 8, np.random.default_rng(0))
    assert 7 in plan[err.batch_index]  # the named batch is the one that holds the poisoned sequence


@pytest.mark.parametrize("mode", ["loss", "grad"])
def test_nonfinite_step_is_skipped_and_counted_when_asked(data, mode):
    train, val = data
    poison = train.seq_names[7]
    torch.manual_seed(0)
    model = _Rigged(poison, mode)
    result = tpp.fit(model, train, val, epochs=2, batch_size=8, seed=0, progress=False, on_nonfinite="skip")
    assert [h["skipped_steps"] for h in result.history] == [1, 1] and result.skipped_steps == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert np.isfinite(result.best_val_ll_per_event)
    # The poisoned batch's events are not counted as trained on.
    skipped_events = int(train.lengths[next(g for g in train_module.length_buckets(
        train.lengths.numpy(), 8, np.random.default_rng(0)) if 7 in g)].sum())
    assert result.history[0]["events"] == train.num_events - skipped_events


def test_nonfinite_option_is_an_enum():
    assert NonFinite("skip") is NonFinite.SKIP
    with pytest.raises(ValueError):
        NonFinite("ignore")


def test_shards_are_disjoint_and_cover_the_minibatch():
    idx = np.random.default_rng(0).permutation(37)
    for world in (1, 2, 3, 8):
        parts = [shard(idx, r, world) for r in range(world)]
        assert sorted(np.concatenate(parts).tolist()) == sorted(idx.tolist())
        assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
