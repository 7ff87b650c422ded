"""Scale: the exponential Hawkes likelihood of 1e7 events in memory bounded by a chunk; training streamed
from a Parquet log of 1e7 events in memory bounded by a block; the Parquet source itself; DDP that
survives a killed rank."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import torch

import tpp
from tpp import EventBatch, EventDataError
from tpp.hawkes import ExpHawkes, SumExpHawkes, _recursion
from tpp.neural import RMTPP
from tpp.stream import EventLogWriter, ParquetSource
from tpp.train import _load_checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SUMEXP = SumExpHawkes.from_params([0.3, 0.2], [[[0.3, 0.1], [0.1, 0.0]], [[0.1, 0.2], [0.3, 0.1]]], [1.5, 0.2])


# --------------------------------------------------------------------------- chunked Hawkes likelihood
def test_chunked_loglik_equals_the_whole_sequence_with_ties_across_chunk_boundaries():
    times, marks = SUMEXP.sample(1, 3000.0, generator=0).sequences()[0]
    times = np.round(times, 1)  # many ties, some of them split between two chunks
    whole = float(SUMEXP.log_likelihood(EventBatch.from_sequences([times], [marks], t_end=3000.0))[0].detach())
    for seed in range(3):
        cuts = np.sort(np.random.default_rng(seed).choice(times.size, 25))  # includes empty chunks
        chunks = zip(np.split(times, cuts), np.split(marks, cuts))
        assert SUMEXP.log_likelihood_chunked(chunks, 0.0, 3000.0) == pytest.approx(whole, rel=1e-12)
    assert times.size > 3000


def test_chunked_loglik_rejects_bad_chunks_naming_the_position():
    good = np.array([1.0, 2.0, 3.0]), np.array([0, 1, 0])
    with pytest.raises(EventDataError, match="position 4.*non-decreasing"):
        SUMEXP.log_likelihood_chunked([good, (np.array([4.0, 2.5]), np.array([0, 0]))], 0.0, 10.0)
    with pytest.raises(EventDataError, match="position 3.*mark"):
        SUMEXP.log_likelihood_chunked([good, (np.array([4.0]), np.array([2]))], 0.0, 10.0)
    with pytest.raises(EventDataError, match="position 1.*not finite"):
        SUMEXP.log_likelihood_chunked([(np.array([1.0, np.nan]), np.array([0, 0]))], 0.0, 10.0)
    with pytest.raises(EventDataError, match="after the window end"):
        SUMEXP.log_likelihood_chunked([good], 0.0, 2.5)


def _event_chunks(num_events: int, chunk: int, seed: int):
    """A marked sequence of ``num_events`` events with unit-rate gaps, generated a chunk at a time."""
    rng = np.random.default_rng(seed)
    last = 0.0
    for start in range(0, num_events, chunk):
        n = min(chunk, num_events - start)
        times = last + np.cumsum(rng.exponential(1.0, n))
        last = float(times[-1])
        yield times, rng.integers(0, 2, n)


def test_exp_hawkes_loglik_of_1e7_events_runs_in_memory_bounded_by_the_chunk():
    model = ExpHawkes.from_params([0.4, 0.3], [[0.2, 0.1], [0.1, 0.2]], 1.2)
    n, chunk = 10_000_000, 1 << 16
    t_end = 1.2e7  # past the last event (about 1e7)
    model.log_likelihood_chunked(_event_chunks(100, 10, seed=1), 0.0, 1e3)  # compiled code loaded before counting
    tracemalloc.start()
    try:
        chunked = model.log_likelihood_chunked(_event_chunks(n, chunk, seed=0), 0.0, t_end)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    full_arrays = n * (8 + 8)  # float64 times + int64 marks
    print(f"traced peak {peak / 2**20:.2f} MiB for {n} events in chunks of {chunk}")
    assert peak < 8 * chunk * 8 < full_arrays / 30  # a few chunk-sized arrays (measured: 2.1 MiB), not 160 MB
    # The same events all at once, through the one-pass recursion that holds every event.
    parts = list(_event_chunks(n, chunk, seed=0))
    times, marks = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    del parts
    mu, adj, beta = (p.detach().double().numpy() for p in (model.baseline, model.adjacency, model.decays))
    whole, *_ = _recursion.loglik_and_grad(times, marks, np.array([0, n]), np.array([0.0]), np.array([t_end]),
                                           mu, adj, beta, np.ones(1), False)
    assert times[-1] < t_end
    assert chunked == pytest.approx(float(whole[0]), rel=1e-10)


# --------------------------------------------------------------------------- the Parquet source
@pytest.fixture(scope="module")
def small_log(tmp_path_factory):
    data = SUMEXP.sample(40, 30.0, generator=1)
    path = tmp_path_factory.mktemp("log") / "events.parquet"
    with EventLogWriter(path, row_group_size=100) as writer:  # many small row groups
        writer.write(data[:15])
        writer.write(data[15:])
    return data, path


def test_parquet_source_loads_the_same_sequences_as_memory(small_log):
    data, path = small_log
    for block_events in (50, 300, 1 << 20):
        source = ParquetSource(path, block_events=block_events)
        assert source.num_sequences == 40 and source.num_events == data.num_events and source.num_marks == 2
        np.testing.assert_array_equal(source.lengths, data.lengths.numpy())
        idx = np.random.default_rng(block_events).permutation(40)[:17]  # across blocks, any order
        assert source.load(idx) == data[idx]
        plan = source.plan(8, np.random.default_rng(0))
        assert sorted(np.concatenate(plan).tolist()) == list(range(40))  # every sequence once per epoch
        blocks = np.searchsorted(source._block_seq, np.concatenate(plan), side="right") - 1
        assert all(len(set(blocks[np.isin(np.concatenate(plan), g)])) == 1 for g in plan)  # a batch = one block


def test_training_on_a_one_block_stream_equals_training_in_memory(small_log):
    data, path = small_log
    torch.manual_seed(0)
    a, b = RMTPP(2, 8), RMTPP(2, 8)
    b.load_state_dict(a.state_dict())
    ra = tpp.fit(a, data, epochs=2, batch_size=8, seed=4, progress=False)
    rb = tpp.fit(b, ParquetSource(path), epochs=2, batch_size=8, seed=4, progress=False)
    for key, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[key], value)
    assert [h["train_nll_per_event"] for h in ra.history] == [h["train_nll_per_event"] for h in rb.history]
    assert tpp.train.evaluate(a, ParquetSource(path, block_events=100)) == pytest.approx(tpp.train.evaluate(a, data))


def test_parquet_source_errors_name_the_row_of_the_log(tmp_path, small_log):
    data, _ = small_log
    df = tpp.io.to_dataframe(data)
    bad = df.copy()
    bad.loc[500, "time"] = np.nan
    bad.to_parquet(tmp_path / "nan.parquet", row_group_size=64)
    source = ParquetSource(tmp_path / "nan.parquet", block_events=200)
    seq = int(np.searchsorted(np.cumsum(data.lengths.numpy()), 500, side="right"))
    with pytest.raises(EventDataError, match=r"row 500.*finite") as info:
        tpp.train.evaluate(RMTPP(2, 4), source)
    assert info.value.row == 500 and info.value.sequence == str(seq)  # ids are text, as tpp.read_events reads them
    split = pd.concat([df.iloc[:100], df.iloc[300:], df.iloc[100:300]])  # sequence rows not contiguous
    split.to_parquet(tmp_path / "split.parquet")
    with pytest.raises(EventDataError, match="contiguous"):
        ParquetSource(tmp_path / "split.parquet")
    df.drop(columns="time").to_parquet(tmp_path / "notime.parquet")
    with pytest.raises(EventDataError, match="missing column 'time'"):
        ParquetSource(tmp_path / "notime.parquet")


def test_a_folder_of_parquet_files_is_one_log(tmp_path, small_log):
    data, _ = small_log
    for i, part in enumerate((data[:10], data[10:25], data[25:])):
        tpp.write_events(part, tmp_path / f"part{i}.parquet")
    # write_events numbers sequences from 0 in each file: give them distinct ids as one log needs.
    for i in range(3):
        df = pd.read_parquet(tmp_path / f"part{i}.parquet")
        df["seq"] = df["seq"].astype(int) + 100 * i
        df.to_parquet(tmp_path / f"part{i}.parquet")
    source = ParquetSource(tmp_path, block_events=120)
    assert source.load(np.arange(40)) == data


# --------------------------------------------------------------------------- 1e7 events streamed from Parquet
STREAM_SCRIPT = textwrap.dedent("""
    import json, sys, time, torch
    torch.set_num_threads(1)
    import tpp
    from tpp.hawkes import Poisson
    from tpp.stream import ParquetSource

    def kib(key):
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith(key))

    start = time.perf_counter()
    source = ParquetSource(sys.argv[1], block_events=1 << 18)
    index_seconds = time.perf_counter() - start
    # Warm every code path on one minibatch, so first-use allocations are not counted as data.
    tpp.fit(Poisson(3), source.load(source.plan(16, None)[0]), epochs=1, batch_size=4, progress=False)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak resident size (VmHWM) to the current one
    before = kib("VmRSS")
    model = Poisson(3)
    result = tpp.fit(model, source, epochs=1, batch_size=64, lr=0.05, seed=0, progress=False)
    print(json.dumps({"index_seconds": index_seconds, "rss_before_kib": before, "peak_kib": kib("VmHWM"),
                      "events": result.history[0]["events"], "seconds": result.history[0]["seconds"],
                      "steps": len(source.plan(64, None)), "blocks": source.num_blocks,
                      "rates": model.rate.tolist()}))
""")


@pytest.mark.slow  # subprocesses (torch imports): ~10-30 s
def test_one_epoch_streamed_from_a_1e7_event_parquet_log_in_memory_bounded_by_a_block(tmp_path):
    path = tmp_path / "log.parquet"
    rng = np.random.default_rng(0)
    seq_len, per_chunk, num_seq = 1000, 1000, 10_000  # 1e7 events, written 1e6 at a time
    with EventLogWriter(path) as writer:
        for _ in range(num_seq // per_chunk):
            times = np.cumsum(rng.exponential(1.0, (per_chunk, seq_len)), 1)  # unit rate, 3 marks
            marks = rng.integers(0, 3, (per_chunk, seq_len))
            writer.write(EventBatch.from_flat(times.ravel(), np.arange(per_chunk + 1) * seq_len, 0.0,
                                              times[:, -1] + 1.0, marks.ravel(), 3))
    script = tmp_path / "stream.py"
    script.write_text(STREAM_SCRIPT)
    run = subprocess.run([sys.executable, str(script), str(path)], env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    print(report)
    assert report["events"] == 10_000_000  # every event trained on, once
    growth_mib = (report["peak_kib"] - report["rss_before_kib"]) / 1024
    decoded_mib = 10_000_000 * 5 * 8 / 2**20  # the five columns read, as 8-byte values: 381 MiB
    # the peak grows by a few blocks' worth of decoded arrays and allocator arenas (measured 55-70 MiB on the
    # 2-core CI machine in batches of 64 sequences, varying run to run), never by the log: a quarter of the decoded
    # log is the bound
    assert growth_mib < decoded_mib / 4
    # One streamed pass fits the rates: unit total rate over 3 equally likely marks.
    np.testing.assert_allclose(report["rates"], 1 / 3, rtol=0.05)
# --------------------------------------------------------------------------- DDP: a rank killed, relaunch, resume
DDP_SCRIPT = textwrap.dedent("""
    import os, signal, sys, torch
    torch.set_num_threads(1)
    import tpp
    import tpp.train as train_module
    from tpp.hawkes import ExpHawkes
    from tpp.neural import RMTPP
    out, ckpt, crash_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rank = int(os.environ.get("RANK", "0"))
    original = train_module._save_checkpoint

    def logged_save(path, state):  # which ranks write checkpoints
        with open(os.path.join(ckpt, f"writes.rank{rank}"), "a") as fh:
            fh.write(f"{state['epoch']} {state['step']}\\n")
        original(path, state)

    train_module._save_checkpoint = logged_save

    class Crashing(RMTPP):
        # Rank 1 kills itself at its crash_at-th step, once (a marker file remembers).
        calls = 0
        def objective(self, batch):
            if self.training:
                Crashing.calls += 1
                marker = os.path.join(ckpt, "crashed")
                if rank == 1 and Crashing.calls == crash_at and not os.path.exists(marker):
                    open(marker, "w").close()
                    os.kill(os.getpid(), signal.SIGKILL)
            return super().objective(batch)

    os.makedirs(ckpt, exist_ok=True)
    truth = ExpHawkes.from_params([0.3, 0.2], [[0.3, 0.1], [0.1, 0.3]], 1.5)
    data = truth.sample(32, 30.0, generator=0)
    torch.manual_seed(0)
    model = Crashing(2, 8)
    result = tpp.fit(model, data, epochs=2, batch_size=8, seed=0, progress=False, clip=0,
                     checkpoint_dir=ckpt, checkpoint_every=1, resume=True)
    if rank == 0:
        torch.save(model.state_dict(), out)
        print("RESUMED", result.resumed_from_epoch, result.resumed_from_step)
""")


@pytest.mark.slow  # subprocesses (torch imports): ~10-30 s
def test_ddp_rank_killed_then_relaunched_resumes_to_the_single_process_result(tmp_path):
    """Rank 1 is SIGKILLed at its 6th of 8 steps and the job dies; launched again, every rank resumes from
    the checkpoint rank 0 wrote, and the result equals one process on the whole minibatches."""
    script = tmp_path / "train.py"
    script.write_text(DDP_SCRIPT)

    def torchrun():
        with socket.socket() as sock:  # a free port: other test runs may be using torchrun at the same time
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
                   str(script), str(tmp_path / "two.pt"), str(tmp_path / "ckpt"), "6"]
        return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=400)

    crashed = torchrun()
    assert crashed.returncode != 0 and (tmp_path / "ckpt" / "crashed").exists(), crashed.stderr[-3000:]
    assert not (tmp_path / "two.pt").exists()
    state = _load_checkpoint(tmp_path / "ckpt" / "checkpoint.pt")
    # Rank 0 cannot pass step 6 without rank 1: its last checkpoint is after step 5 (epoch 1, one step done),
    # or after step 4 (end of epoch 0) if it was stopped while writing the step-5 one.
    assert (state["epoch"], state["step"]) in {(1, 1), (0, None)}
    resumed = torchrun()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"RESUMED {state['epoch']} {state['step'] or 0}" in resumed.stdout, resumed.stdout
    assert not (tmp_path / "ckpt" / "writes.rank1").exists()  # only rank 0 writes checkpoints
    assert (tmp_path / "ckpt" / "writes.rank0").exists()
    truth = ExpHawkes.from_params([0.3, 0.2], [[0.3, 0.1], [0.1, 0.3]], 1.5)
    torch.manual_seed(0)
    one = RMTPP(2, 8)
    tpp.fit(one, truth.sample(32, 30.0, generator=0), epochs=2, batch_size=8, seed=0, progress=False, clip=0)
    two = torch.load(tmp_path / "two.pt")
    for key, value in one.state_dict().items():
        torch.testing.assert_close(two[key], value, rtol=1e-4, atol=1e-5)
