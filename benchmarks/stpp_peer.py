"""Our Neural STPP (``tpp.spatial.JumpCNF`` / ``AttentiveCNF``) side by side with seahorse-stpp 1.0.0's presets of
the same models (``neural_jumpcnf`` / ``neural_attncnf``: a faithful port of the reference code behind YAML and
PyTorch Lightning), issue 16's peer target: same splits, epochs and sizes; test log-likelihood and training
events per CPU second.

Protocol.

* **Data**: Pinwheel (``tpp.spatial.data.pinwheel_splits``) or a registry set; the first ``--train`` / ``--val`` /
  ``--test`` sequences of each split (both sides get exactly these). The splits are written once to
  ``<scratch>/splits/<data>/{train,val,test}.jsonl`` in seahorse's own format (``times``, ``locations``,
  ``t0``, ``t1``: what ``seahorse.utils.load_jsonl`` reads).
* **The peer** runs in its own scratch venv (``--peer-python``, default ``/work/scratch/seahorse-venv``, made by
  ``python3.11 -m venv`` + ``pip install -c constraints seahorse-stpp==1.0.0`` with ``torch==2.13.0`` pinned),
  as a subprocess: ``benchmarks/_seahorse_peer.py`` (our driver; seahorse's code never enters the repository).
* **Same sizes**: hidden state ``--hidden-size`` (peer: ``hidden_dim`` and ``tpp_hidden_dims H-H``), flow MLP
  ``--flow-hidden`` (peer: the spatial ``hidden_dims``), attentive CNF with ``--attn-blocks`` attention block(s)
  of ``--attn-heads`` head(s) on the peer (ours: one single-head block), the same learning rate and epochs,
  evaluation dopri5 at rtol = atol = ``--tol`` with the exact trace on both sides. Batches: ours ``--batch-size``
  sequences, shuffled; seahorse batches training sequences by total events (longest first, its design), so its
  ``max_events`` is set to ``--batch-size`` x the mean training sequence length: the same events per step.
  Each side keeps its own optimiser details (ours: Adam + cosine schedule by step; seahorse: AdamW, beta2 0.98,
  cosine by epoch, clipping per its preset) and its own training numerics (ours: Hutchinson trace by forward-mode
  tangents, the hidden-state ODE by dopri5 (runs before 2026-12-07: RK4 with steps of 2 model units); seahorse: dopri5
  at ``--tol`` for everything, Hutchinson by autograd). Both score the last weights (seahorse's
  ``checkpoint_select: last``; its validation pass runs every epoch but picks nothing).
* **Scores**: test time and space log-likelihood per event (nats, data units, higher is better). seahorse's
  time part ends at the last event (no survival term ``int_{t_N}^{T} lambda``; its data path carries no window
  end to the model), so ours is reported both ways: ``time`` (our protocol, window ``[t_start, t_end]``) and
  ``time_last`` (the same window cut at each sequence's last event: seahorse's convention, the like-for-like
  comparison). Space parts are defined identically.
* **Speed**: training events per CPU second, one thread each (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``):
  ours over the whole ``fit`` call (conservative: set-up and batching included), seahorse's over its training
  batches only (Lightning callback: forward, backward, optimizer step; its validation and checkpointing
  excluded, generous to it). ``ratio`` = ours / seahorse's.

Usage::

    nice -n 10 .venv/bin/python benchmarks/stpp_peer.py --data pinwheel --train 64 --test 32 --epochs 1 \\
        --out benchmarks/results/stpp_peer
"""

from __future__ import annotations

import _bench  # noqa: F401  (one thread per pool, repository on the path; must come first)

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

import stpp as stpp_bench  # benchmarks/stpp.py: the data splits, our training loop and scoring

MODELS = ("jump-cnf", "attentive-cnf")
DEFAULT_PEER_PYTHON = Path("/work/scratch/seahorse-venv/bin/python")
DEFAULT_SCRATCH = Path("/work/scratch/stpp_peer")


def subset(batch, n: int | None):
    """The first ``n`` sequences (all when ``n`` is None)."""
    return batch if n is None else batch[torch.arange(min(int(n), len(batch)))]


def part_sizes(args: argparse.Namespace, data: str) -> tuple[int | None, int | None, int | None]:
    """``(train, val, test)`` sequence counts for ``data``: ``--train`` etc., or ``--long-*`` for the registry's
    sets (their sequences are longer: earthquakes_japan holds ~87 events a sequence, Pinwheel ~37)."""
    if data == "pinwheel":
        return args.train, args.val, args.test
    return args.long_train, args.long_val, args.long_test


def batch_size_for(args: argparse.Namespace, data: str) -> int:
    return args.batch_size if data == "pinwheel" else args.long_batch_size


def write_splits(parts: dict, locations: tuple[str, ...], folder: Path) -> None:
    """``folder/{train,val,test}.jsonl`` in seahorse's format: one sequence a line, float64 values."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, batch in parts.items():
        names = list(batch.feature_names)
        cols = [names.index(n) for n in locations]
        lines = []
        for b in range(len(batch)):
            m = batch.mask[b]
            lines.append(json.dumps({
                "times": batch.time[b][m].double().tolist(),
                "locations": batch.features[b][m][:, cols].double().tolist(),
                "t0": float(batch.t_start[b]), "t1": float(batch.t_end[b]),
            }))
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")


def cut_at_last_event(batch):
    """The same sequences with the window ending at each one's last event (seahorse's time convention)."""
    from tpp.events import EventBatch

    last = batch.time.gather(1, (batch.lengths - 1).clamp_min(0)[:, None])[:, 0]
    t_end = torch.where(batch.lengths > 0, last.to(batch.t_end.dtype), batch.t_end)
    return EventBatch(batch.time, batch.mark, batch.mask, batch.t_start, t_end, batch.num_marks,
                      features=batch.features, feature_names=batch.feature_names)


def run_ours(name: str, data: tuple, test, locations: tuple[str, ...], batch_size: int,
             args: argparse.Namespace) -> dict:
    """Train ours with ``benchmarks/stpp.py``'s loop (no budget), then score test in both time conventions."""
    ns = argparse.Namespace(hidden_size=args.hidden_size, flow_hidden=args.flow_hidden, tol=args.tol,
                            dtype=args.dtype, minutes=math.inf, epochs=args.epochs, batch_size=batch_size,
                            cnf_batch_size=batch_size, lr=args.lr, baseline_lr=args.lr)
    torch.manual_seed(args.seed)
    model = stpp_bench.build(name, ns, locations, data)
    fit = stpp_bench.train(model, name, data, ns, args.seed)
    cpu0 = time.process_time()
    full = stpp_bench.score(model, test, args.block)
    test_cpu = time.process_time() - cpu0
    last = stpp_bench.score(model, cut_at_last_event(test), args.block)
    return {"model": name, "side": "ours", "train_events": fit["events"], "train_steps": fit["steps"],
            "fit_cpu_seconds": fit["cpu_seconds"], "fit_wall_seconds": fit["seconds"],
            "events_per_cpu_second": fit["events_per_second"], "test_events": test.num_events,
            "test_cpu_seconds": test_cpu,
            "test_time_log_likelihood_per_event": full["time"],
            "test_time_last_log_likelihood_per_event": last["time"],
            "test_space_log_likelihood_per_event": full["space"],
            "n_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def run_peer(name: str, splits_dir: Path, batch_size: int, max_events: int, args: argparse.Namespace) -> dict:
    """One seahorse fit in its venv (``_seahorse_peer.py``); its JSON, or the failure."""
    out = args.scratch / "runs" / f"{splits_dir.name}_{name}_seed{args.seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    cmd = [str(args.peer_python), str(Path(__file__).with_name("_seahorse_peer.py")), "--splits", str(splits_dir),
           "--model", name, "--epochs", str(args.epochs), "--batch-size", str(batch_size),
           "--max-events", str(max_events), "--lr", str(args.lr), "--hidden-size", str(args.hidden_size),
           "--flow-hidden", *map(str, args.flow_hidden), "--attn-blocks", str(args.attn_blocks),
           "--attn-heads", str(args.attn_heads), "--tol", str(args.tol), "--seed", str(args.seed),
           "--out", str(out)]
    env = {**os.environ, **_bench.SINGLE_THREAD_ENV, "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPATH", None)  # the peer sees its own venv only
    log = out.with_suffix(".log")
    with log.open("w") as fh:
        done = subprocess.run(cmd, cwd=args.scratch, env=env, stdout=fh, stderr=subprocess.STDOUT,
                              timeout=args.peer_timeout)
    if done.returncode != 0 or not out.exists():
        tail = log.read_text().strip().splitlines()[-5:]
        return {"model": name, "side": "seahorse", "error": f"exit {done.returncode}: " + " | ".join(tail)}
    payload = json.loads(out.read_text())
    payload["side"] = "seahorse"
    payload["command"] = " ".join(cmd)
    return payload


def peer_versions(python: Path) -> dict:
    code = ("import json, importlib.metadata as m; print(json.dumps({n: m.version(n) for n in "
            "('seahorse-stpp', 'torch', 'torchdiffeq', 'pytorch-lightning', 'numpy')}))")
    try:
        return json.loads(subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                                         check=True).stdout)
    except (OSError, subprocess.CalledProcessError, json.JSONDecodeError) as exc:
        return {"error": str(exc)}


def compare(ours: dict, peer: dict) -> dict:
    if "error" in peer:
        return {"model": ours["model"], "peer_error": peer["error"]}
    return {
        "model": ours["model"],
        "events_per_second_ratio": ours["events_per_cpu_second"] / max(peer["events_per_cpu_second"], 1e-12),
        "time_last_difference": ours["test_time_last_log_likelihood_per_event"]
        - peer["test_time_log_likelihood_per_event"],
        "space_difference": ours["test_space_log_likelihood_per_event"] - peer["test_space_log_likelihood_per_event"],
        "total_difference": (ours["test_time_last_log_likelihood_per_event"]
                             + ours["test_space_log_likelihood_per_event"])
        - (peer["test_time_log_likelihood_per_event"] + peer["test_space_log_likelihood_per_event"]),
        "test_events_equal": ours["test_events"] == peer["test_events"],
    }


def table(rows: list[dict], comparisons: list[dict]) -> str:
    lines = ["| data | model | side | params | train events | fit CPU s | train events/CPU s | time (window) | "
             "time (to last event) | space | test CPU s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['data']} | {r['model']} | {r['side']} | failed: {r['error'][:200]} | | | | | | | |")
            continue
        window = r.get("test_time_log_likelihood_per_event") if r["side"] == "ours" else None
        to_last = (r["test_time_last_log_likelihood_per_event"] if r["side"] == "ours"
                   else r["test_time_log_likelihood_per_event"])
        lines.append(f"| {r['data']} | {r['model']} | {r['side']} | {r['n_params']} | {r['train_events']} | "
                     f"{r['fit_cpu_seconds']:.1f} | {r['events_per_cpu_second']:.1f} | "
                     f"{'' if window is None else f'{window:+.4f}'} | {to_last:+.4f} | "
                     f"{r['test_space_log_likelihood_per_event']:+.4f} | {r['test_cpu_seconds']:.1f} |")
    lines += ["", "| data | model | events/s ours / seahorse | time (to last) ours - seahorse | space ours - seahorse | "
              "total ours - seahorse |", "|---|---|---|---|---|---|"]
    for c in comparisons:
        if "peer_error" in c:
            lines.append(f"| {c['data']} | {c['model']} | peer failed | | | |")
            continue
        lines.append(f"| {c['data']} | {c['model']} | {c['events_per_second_ratio']:.2f}x | {c['time_last_difference']:+.4f} | "
                     f"{c['space_difference']:+.4f} | {c['total_difference']:+.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="pinwheel,earthquakes_japan", help="comma-separated data sets")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {','.join(MODELS)}")
    parser.add_argument("--train", type=int, default=64, help="first N training sequences (both sides)")
    parser.add_argument("--val", type=int, default=8, help="first N validation sequences (seahorse's loop needs "
                        "one; neither side's result depends on it)")
    parser.add_argument("--test", type=int, default=32, help="first N test sequences")
    parser.add_argument("--long-train", type=int, default=16, help="--train for the registry's sets")
    parser.add_argument("--long-val", type=int, default=4, help="--val for the registry's sets")
    parser.add_argument("--long-test", type=int, default=8, help="--test for the registry's sets")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per step (seahorse: as many events)")
    parser.add_argument("--long-batch-size", type=int, default=4, help="--batch-size for the registry's sets")
    parser.add_argument("--lr", type=float, default=1e-3, help="both sides' learning rate")
    parser.add_argument("--hidden-size", type=int, default=32)
    parser.add_argument("--flow-hidden", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--attn-blocks", type=int, default=1, help="seahorse's attention blocks (ours: 1)")
    parser.add_argument("--attn-heads", type=int, default=1, help="seahorse's attention heads (ours: 1)")
    parser.add_argument("--tol", type=float, default=1e-4, help="rtol = atol of the evaluation solves (both)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                        help="our networks' precision (seahorse runs float32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--block", type=int, default=16, help="our test sequences per scoring block")
    parser.add_argument("--peer-python", type=Path, default=DEFAULT_PEER_PYTHON)
    parser.add_argument("--peer-timeout", type=float, default=3600.0, help="seconds per seahorse run")
    parser.add_argument("--scratch", type=Path, default=DEFAULT_SCRATCH)
    parser.add_argument("--out", type=Path, default=None, help="write OUT.md and OUT.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.scratch = args.scratch.resolve()
    command = _bench.reproduce_command(__file__)
    env = _bench.base_environment()
    env["seahorse_venv"] = peer_versions(args.peer_python)
    print(command, flush=True)
    print(json.dumps(env), flush=True)

    rows, comparisons, settings = [], [], {}
    for data_name in args.data.split(","):
        full = stpp_bench.splits(data_name)
        tr, va, te = (subset(part, n) for part, n in zip(full, part_sizes(args, data_name)))
        names = tuple(tr.feature_names)
        locations = ("lon", "lat") if {"lon", "lat"} <= set(names) else names[:2]
        splits_dir = args.scratch / "splits" / f"{data_name}_tr{len(tr)}_va{len(va)}_te{len(te)}"
        write_splits({"train": tr, "val": va, "test": te}, locations, splits_dir)
        batch_size = batch_size_for(args, data_name)
        max_events = max(1, round(batch_size * tr.num_events / max(len(tr), 1)))
        settings[data_name] = {"splits": str(splits_dir), "train_sequences": len(tr), "train_events": tr.num_events,
                               "val_sequences": len(va), "test_sequences": len(te), "test_events": te.num_events,
                               "batch_size": batch_size, "seahorse_max_events": max_events}
        print(f"{data_name}: train {len(tr)} sequences ({tr.num_events} events), val {len(va)}, test {len(te)} "
              f"({te.num_events} events); splits in {splits_dir}; batch {batch_size} sequences, seahorse "
              f"max_events {max_events}", flush=True)
        for name in args.models.split(","):
            if name not in MODELS:
                raise SystemExit(f"unknown model {name!r}; choose from {','.join(MODELS)}")
            ours = {"data": data_name, **run_ours(name, (tr, va, te), te, locations, batch_size, args)}
            print("ours    ", json.dumps(ours), flush=True)
            peer = {"data": data_name, **run_peer(name, splits_dir, batch_size, max_events, args)}
            print("seahorse", json.dumps({k: v for k, v in peer.items() if k not in ("overrides", "command")}),
                  flush=True)
            rows += [ours, peer]
            comparisons.append({"data": data_name, **compare(ours, peer)})
            if args.out is not None:
                write(args, command, env, rows, comparisons, settings)
    print()
    print(table(rows, comparisons))


def write(args, command: str, env: dict, rows: list[dict], comparisons: list[dict], settings: dict) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _bench.write_json_atomically(args.out.with_suffix(".json"), {
        "command": command, "environment": env, "args": {k: str(v) for k, v in vars(args).items()},
        "data": settings, "rows": rows, "comparisons": comparisons})
    parts = [f"# Neural STPP: ours vs seahorse-stpp 1.0.0 (benchmarks/stpp_peer.py)\n\n`{command}`\n\n"
             f"Environment: python {env['python']}, torch {env['torch']} (one thread), CPU {env['cpu']} "
             f"({env['cpu_count']} cores, shared; nice 10); seahorse venv: {env['seahorse_venv']}.\n\n"
             f"Both sides: {args.epochs} epoch(s), lr {args.lr}, hidden {args.hidden_size}, flow MLP "
             f"{args.flow_hidden}, evaluation dopri5 rtol = atol = {args.tol} with the exact trace; ours "
             f"{args.dtype}, seahorse float32; seahorse's attentive CNF with {args.attn_blocks} attention block(s) "
             f"of {args.attn_heads} head(s) (ours: 1 x 1). Nats per event, higher is better. \"time (to last "
             f"event)\" is the like-for-like time score (seahorse has no survival term after the last event); "
             f"\"time (window)\" is our protocol's. Speed: training events per CPU second, one thread each; ours "
             f"over the whole fit, seahorse's over its training batches only (its validation excluded).\n"]
    for data, info in settings.items():
        own = [r for r in rows if r["data"] == data]
        comp = [c for c in comparisons if c["data"] == data]
        if not own:
            continue
        parts.append(f"## {data}\n\nThe first {info['train_sequences']} training ({info['train_events']} events), "
                     f"{info['val_sequences']} validation and {info['test_sequences']} test sequences "
                     f"({info['test_events']} events), the same for both; batch {info['batch_size']} sequences "
                     f"(seahorse: {info['seahorse_max_events']} events per batch, longest sequences first).\n\n"
                     + table(own, comp) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(parts))


if __name__ == "__main__":
    main()
