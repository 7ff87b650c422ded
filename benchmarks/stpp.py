"""Spatio-temporal point processes side by side (issue 16): the neural STPPs of Chen, Amos & Nickel (ICLR 2021)
(time-varying, jump and attentive CNFs, ``tpp.spatial.cnf``), their baselines (Poisson, self-correcting and
exponential Hawkes in time x a conditional Gaussian mixture in space; a kernel density in space,
``tpp.spatial.gmm``) and space-time ETAS (``tpp.spatial.etas``; with constant productivity and kernel scale where
the events carry no magnitudes, e.g. earthquakes_japan; ``etas`` is its maximum-likelihood fit, ``etas-two-stage``
its temporal law fitted on the time part and ``D`` on the space part given it), on
Pinwheel (our rebuild of the paper's generator, 2000/200/200 sequences) and the registry's sets.

Protocol. Every gradient-trained model is trained by the one trainer (``Model.fit``) under a stated **CPU budget
per model and seed** (``--minutes`` of this process's CPU time, ``time.process_time``: on a shared machine the wall
time is longer, the CPU time is what the model used): a hook after each optimizer step stops the run once the
budget is spent, and the model keeps its latest weights (the learning rate follows the trainer's cosine schedule over
``--epochs`` epochs, so a budget-stopped run has not annealed it). The CNFs train without a validation set
(scoring val with the exact trace would eat the budget); the Gaussian-mixture baselines use val for early
stopping as in ``benchmarks/stpp_baselines.py``; the KDE picks its bandwidth on val; ETAS is fitted by its own
EM + L-BFGS (no budget; at most ``--etas-em`` background updates; deterministic, so one seed is enough).
``--curve-every N`` scores ``--curve-sequences`` validation sequences every N steps of a CNF (exact trace; that
CPU time is not charged to the budget) into a learning curve (JSON, Markdown table, ``OUT_curve.png``).
SIGINT or SIGTERM during training ends the run after the current step as the budget would (the row records
``stopped_by``), then scores and writes it. Scores: time and space log-likelihood per event on ``test`` (nats, higher is better),
``log_likelihood_split`` in blocks of ``--block`` sequences: exact likelihoods for the baselines; for the CNFs
the exact Jacobian trace with dopri5 at rtol = atol = ``--tol`` (training: Hutchinson's estimate, the
hidden-state ODE by dopri5 too, or with ``--train-time-step`` by RK4 with steps of at most that many model units). ``--max-test`` scores only the
first that many test sequences (stated in the table). Timings: this machine, one thread, shared with other jobs
(``nice -n 10``): training events per CPU second, and CPU and wall seconds.

The paper's Pinwheel numbers (their draw of the same law; Table 2 of the paper) are printed beside ours. **Units:**
the reference code (``datasets.SpatioTemporalDataset``) standardises each coordinate by the training locations'
standard deviation and reports the space log-likelihood of the standardised locations, without the change of
units; ours are in the data's units. The two differ by ``sum_d log std_d`` per event (Pinwheel: +0.788), so the
table adds a column "space, paper units" = ours + that offset (:func:`reference_space_offset`), the one to set
beside the paper's. Time is not rescaled there, so the time columns compare directly.

Usage::

    nice -n 10 .venv/bin/python benchmarks/stpp.py --data pinwheel --minutes 5 --seeds 0,1,2 \\
        --out benchmarks/results/stpp_pinwheel
    nice -n 10 .venv/bin/python benchmarks/stpp.py --data earthquakes_japan --models jump-cnf,hawkes-gmm
"""

from __future__ import annotations

import _bench  # noqa: F401  (one thread per pool, repository on the path; must come first)

import argparse
import ast
import json
import math
import signal
import time
import warnings
from pathlib import Path

import numpy as np
import torch

#: Chen, Amos & Nickel (2021), Pinwheel test log-likelihood per event: (time, space); None where not reported.
PAPER_PINWHEEL = {
    "jump-cnf": (0.027, -1.605), "attentive-cnf": (0.008, -1.623), "time-varying-cnf": (None, -2.201),
    "kde-stpp": (None, -2.965), "poisson-gmm": (-0.787, None),
}
CNF = ("time-varying-cnf", "jump-cnf", "attentive-cnf")
#: The CNFs' temporal defaults since 2026-12-07 (recorded in each run's JSON; earlier runs: RK4 steps of 2, bounded).
CNF_DEFAULTS = {"train_time_step": None, "hidden_dynamics": "free"}
#: the paper's baselines, then our neural TPPs in time x the same mixture (width --hidden-size)
GMM = ("hawkes-gmm", "poisson-gmm", "self-correcting-gmm", "nhp-gmm", "thp-gmm")
ETAS_MODELS = ("etas", "etas-two-stage")
ALL = (*GMM, "kde-stpp", *CNF, *ETAS_MODELS)


class _BudgetReached(Exception):
    """Raised by the after-step hook once a model's training budget is spent."""


def splits(name: str):
    if name == "pinwheel":
        from tpp.spatial.data import pinwheel_splits

        return pinwheel_splits()
    from tpp import datasets

    return tuple(datasets.load(name, part) for part in ("train", "val", "test"))


def reference_space_offset(train, locations: tuple[str, ...]) -> float:
    """``sum_d log std_d`` of the training locations (unbiased, per coordinate): what the reference code's
    standardisation adds to a space log-likelihood per event (module docstring, *Units*)."""
    names = list(train.feature_names)
    x = train.features[..., [names.index(n) for n in locations]][train.mask].double()
    return float(x.std(0).log().sum())


def build(name: str, args: argparse.Namespace, locations: tuple[str, ...], data: tuple | None = None):
    names = list(locations)
    if name in GMM:
        from tpp.spatial.gmm import HawkesGMM

        return HawkesGMM(2, args.hidden_size, temporal=name.removesuffix("-gmm"), location_names=names)
    if name == "kde-stpp":
        from tpp.spatial.gmm import KDESpatial

        return KDESpatial(2, temporal="poisson", bandwidth="validation", location_names=names)
    if name in ETAS_MODELS:
        from tpp.spatial.etas import ETAS

        magnitude = "magnitude" if data is None or "magnitude" in data[0].feature_names else None
        model = ETAS(magnitude=magnitude, location_names=names,
                     estimator="two-stage" if name == "etas-two-stage" else "likelihood")
        return model if data is None else model.cover(*data)  # the region holds every split's events
    from tpp.spatial import cnf

    cls = {"time-varying-cnf": cnf.TimeVaryingCNF, "jump-cnf": cnf.JumpCNF, "attentive-cnf": cnf.AttentiveCNF}[name]
    given = getattr(args, "train_time_step", None)  # absent (stpp_peer.py): the model's default, dopri5
    step = None if given is None or str(given).lower() == "none" else float(given)
    return cls(feature_dim=2, hidden_size=args.hidden_size, flow_hidden=tuple(args.flow_hidden), rtol=args.tol,
               atol=args.tol, location_names=names, dtype=args.dtype, train_time_step=step,
               **cnf_options(getattr(args, "cnf_option", None) or []))


def cnf_options(pairs: list[str]) -> dict:
    """``KEY=VALUE`` constructor arguments for the CNFs (``--cnf-option flow_penalty=1e-4``); a value is read as
    JSON where it parses (numbers, true/false, null), else kept as a string."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--cnf-option wants KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def train(model, name: str, data: tuple, args: argparse.Namespace, seed: int) -> dict:
    """Fit under the budget; returns the fit record (seconds, events, steps, events/s, stopped by budget)."""
    tr, val, _ = data
    record = {"steps": 0, "events": 0, "budget_stopped": False}
    start, cpu_start = time.perf_counter(), time.process_time()
    if name in ETAS_MODELS:
        model.fit(tr, val, em_iterations=args.etas_em)
        record["seconds"], record["cpu_seconds"] = time.perf_counter() - start, time.process_time() - cpu_start
        return record
    budget = args.minutes * 60.0
    objective = model.objective

    def counted(batch):  # the trainer calls model(batch) -> forward -> objective: count the events it trains on
        if torch.is_grad_enabled():
            record["events"] += int(batch.num_events)
        return objective(batch)

    curve_every = getattr(args, "curve_every", 0) if name in CNF else 0
    if curve_every:
        record["curve"] = []
        probe = val[torch.arange(min(args.curve_sequences, len(val)))]
    excluded = 0.0  # CPU seconds spent scoring the curve: not training, so not charged to the budget

    def hook() -> None:
        nonlocal excluded
        record["steps"] += 1
        if curve_every and record["steps"] % curve_every == 0:
            scoring = time.process_time()
            was_training = model.training
            part = score(model, probe, args.block, training_solver=False)
            model.train(was_training)
            excluded += time.process_time() - scoring
            record["curve"].append({"step": record["steps"], "events": record["events"],
                                    "cpu_seconds": time.process_time() - cpu_start - excluded,
                                    "val_time": part["time"], "val_space": part["space"]})
            print(f"{name:>18} seed {seed} step {record['steps']}: validation ({len(probe)} sequences) time "
                  f"{part['time']:+.4f}  space {part['space']:+.4f}", flush=True)
        if time.process_time() - cpu_start - excluded > budget or record.get("stopped_by"):
            raise _BudgetReached

    model.objective, model.after_step = counted, hook  # instance attributes: this run only
    cnf = name in CNF
    batch_size = args.cnf_batch_size if cnf and args.cnf_batch_size else args.batch_size
    options = dict(epochs=args.epochs, batch_size=batch_size, lr=args.lr if cnf else args.baseline_lr,
                   seed=seed, progress=False, warmup=0.0 if cnf else 0.05,
                   on_nonfinite=getattr(args, "on_nonfinite", "raise") if cnf else "raise")

    def stop(signum, frame) -> None:  # SIGINT / SIGTERM: end training after this step, then score and write
        record["stopped_by"] = signal.Signals(signum).name

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the KDE's subsample of centres is stated in its docs
            model.fit(tr, None if cnf else val, **options)
    except _BudgetReached:
        record["budget_stopped"] = True
    finally:
        del model.objective, model.after_step
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    record["seconds"], record["cpu_seconds"] = time.perf_counter() - start, time.process_time() - cpu_start - excluded
    record["events_per_second"] = record["events"] / max(record["cpu_seconds"], 1e-9) if record["events"] else None
    return record


def score(model, test, block: int, training_solver: bool = True) -> dict[str, float]:
    """Time and space nats per event over ``test``, in blocks of ``block`` sequences (``training_solver``: also the
    time part with the training solver, :func:`_training_solver_time`)."""
    model.eval()
    t_sum = s_sum = 0.0
    with torch.no_grad():
        for start in range(0, len(test), block):
            part = test[torch.arange(start, min(start + block, len(test)))]
            t, s = model.log_likelihood_split(part)
            t_sum, s_sum = t_sum + float(t.sum()), s_sum + float(s.sum())
    n = max(test.num_events, 1)
    result = {"time": t_sum / n, "space": s_sum / n}
    if training_solver and hasattr(model, "time_log_likelihood"):
        result["time_training_solver"] = _training_solver_time(model, test, block) / n
    return result


def _training_solver_time(model, test, block: int) -> float:
    """A CNF's test time log-likelihood (summed) with its *training* hidden-state solver (RK4 steps of
    ``train_time_step`` where set) instead of dopri5: far from the reported value, the training objective was not the
    likelihood the model is scored on (a coarse solve the optimiser can exploit)."""
    total = 0.0
    model.train()
    try:
        with torch.no_grad():
            for start in range(0, len(test), block):
                part = test[torch.arange(start, min(start + block, len(test)))]
                total += float(model.time_log_likelihood(part).sum())
    finally:
        model.eval()
    return total


def fmt(values: list[float]) -> str:
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], float)
    if a.size == 0:
        return "n/a"
    return f"{a.mean():+.3f} ± {a.std():.3f}" if a.size > 1 else f"{a.mean():+.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="pinwheel")
    parser.add_argument("--models", default=",".join(ALL), help=f"comma-separated, of {','.join(ALL)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--minutes", type=float, default=30.0, help="training CPU budget per model and seed")
    parser.add_argument("--epochs", type=int, default=50, help="the schedule's length (the budget usually ends first)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cnf-batch-size", type=int, default=None,
                        help="the CNFs' batch size (default --batch-size): the Jump CNF holds O(B L^2) flow rows")
    parser.add_argument("--lr", type=float, default=3e-3, help="CNFs' learning rate")
    parser.add_argument("--baseline-lr", type=float, default=0.05, help="Gaussian-mixture baselines' learning rate")
    parser.add_argument("--hidden-size", type=int, default=32)
    parser.add_argument("--flow-hidden", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--tol", type=float, default=1e-4, help="rtol = atol of the CNFs' evaluation solves")
    parser.add_argument("--train-time-step", default="none",
                        help="CNFs' hidden-state RK4 step in training (model units), or 'none' (default) for dopri5")
    parser.add_argument("--on-nonfinite", default="raise", choices=["raise", "skip"],
                        help="CNFs: an update with a non-finite loss or gradient stops the run (raise) or is skipped "
                             "(skip; the float32 Jump CNF met one after 25 CPU minutes on Pinwheel)")
    parser.add_argument("--cnf-option", action="append", metavar="KEY=VALUE",
                        help="a CNF constructor argument, e.g. flow_penalty=1e-4 or base_flow=true (repeatable)")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"], help="CNFs' network precision")
    parser.add_argument("--max-test", type=int, default=None, help="score only the first N test sequences")
    parser.add_argument("--block", type=int, default=16, help="test sequences per scoring block")
    parser.add_argument("--curve-every", type=int, default=0,
                        help="CNFs: score --curve-sequences validation sequences every N training steps (a learning "
                             "curve in the JSON and OUT_curve.png; the scoring's CPU time is not charged to the budget)")
    parser.add_argument("--curve-sequences", type=int, default=20, help="validation sequences the curve scores")
    parser.add_argument("--etas-em", type=int, default=20, help="ETAS: at most this many background (EM) updates")
    parser.add_argument("--out", type=Path, default=None, help="write OUT.md and OUT.json")
    parser.add_argument("--collect", type=Path, default=None,
                        help="only gather the runs' JSON files (benchmarks/results/stpp_*.json) into COLLECT.md/.json")
    args = parser.parse_args()
    if args.collect is not None:
        collect(args.collect)
        return
    torch.set_num_threads(1)
    command = _bench.reproduce_command(__file__)
    env = _bench.base_environment()
    print(command, flush=True)
    print(json.dumps(env), flush=True)

    data = splits(args.data)
    test = data[2] if args.max_test is None else data[2][torch.arange(min(args.max_test, len(data[2])))]
    names = tuple(data[0].feature_names)
    locations = ("lon", "lat") if {"lon", "lat"} <= set(names) else names[:2]
    print(f"{args.data}: train {len(data[0])} sequences ({data[0].num_events} events), test scored on {len(test)} "
          f"({test.num_events} events); features {list(names)}", flush=True)
    offset = reference_space_offset(data[0], locations)
    law = generating_law(test, args) if args.data == "pinwheel" else None
    if law is not None:
        print(f"the generating law on these test sequences: time {law['time']:+.4f}  space {law['space']:+.4f} "
              f"(paper units {law['space'] + offset:+.4f}); its arms' mixture without history: space "
              f"{law['space_without_history']:+.4f}", flush=True)
    curve_law = None
    if args.data == "pinwheel" and args.curve_every:
        curve_law = generating_law(data[1][torch.arange(min(args.curve_sequences, len(data[1])))], args, split=1)
    rows = []
    for name in args.models.split(","):
        if name not in ALL:
            raise SystemExit(f"unknown model {name!r}; choose from {','.join(ALL)}")
        for seed in (int(s) for s in args.seeds.split(",")):
            torch.manual_seed(seed)
            model = build(name, args, locations, data)
            fit = train(model, name, data, args, seed)
            start = time.process_time()
            result = score(model, test, args.block)
            eval_seconds = time.process_time() - start
            row = {"model": name, "seed": seed, "data": args.data, **fit, "eval_seconds": eval_seconds,
                   "test_time_log_likelihood_per_event": result["time"],
                   "test_space_log_likelihood_per_event": result["space"]}
            if "time_training_solver" in result:
                row["test_time_log_likelihood_per_event_training_solver"] = result["time_training_solver"]
            rows.append(row)
            speed = f"{fit['events_per_second']:.0f} events/CPU s" if fit.get("events_per_second") else ""
            if "time_training_solver" in result:
                print(f"{name:>18} seed {seed}: time with the training solver {result['time_training_solver']:+.4f}",
                      flush=True)
            print(f"{name:>18} seed {seed}: time {result['time']:+.4f}  space {result['space']:+.4f}  "
                  f"(fit {fit['cpu_seconds']:.0f} CPU s / {fit['seconds']:.0f} wall s, {fit['steps']} steps, {fit['events']} events {speed}"
                  f"{', budget reached' if fit['budget_stopped'] and not fit.get('stopped_by') else ''}"
                  f"{', stopped by ' + fit['stopped_by'] if fit.get('stopped_by') else ''}; test {eval_seconds:.0f} CPU s)", flush=True)
            if args.out is not None:  # after every row: a killed run keeps what it did
                write(args, rows, command, env, test, offset, law, curve_law)

    print()
    print(table(args, rows, test, offset))


def generating_law(test, args: argparse.Namespace, split: int = 2) -> dict[str, float]:
    """Pinwheel: the generating law's own time and space log-likelihood per event on the scored sequences (the first
    ``len(test)`` of split ``split``: 2 test, 1 validation) (:func:`tpp.spatial.data.pinwheel_log_likelihood`, the
    history's clusters known: the ceiling a model's numbers sit under), and the space score of the arms' equal
    mixture, which ignores the history (what a model that has learned the pinwheel's shape but not which arm comes
    next would score)."""
    from scipy.special import logsumexp

    from tpp.spatial.data import pinwheel_arm_log_density, pinwheel_log_likelihood, pinwheel_splits

    clustered = pinwheel_splits(clusters_as_marks=True)[split]
    clustered = clustered[torch.arange(len(test))]
    if not torch.equal(clustered.time, test.time):
        raise SystemExit("the clustered Pinwheel split differs from the scored one")
    time_ll, space_ll = pinwheel_log_likelihood(clustered)
    x = clustered.features[clustered.mask].double().numpy()
    arms = np.stack([pinwheel_arm_log_density(x, k) for k in range(10)], -1)
    n = clustered.num_events
    return {"time": float(time_ll.sum()) / n, "space": float(space_ll.sum()) / n,
            "space_without_history": float(np.mean(logsumexp(arms, -1) - np.log(10)))}


def table(args: argparse.Namespace, rows: list[dict], test, offset: float | None = None) -> str:
    """The Markdown table; ``offset`` (:func:`reference_space_offset`) adds the space column in the reference's
    standardised units."""
    paper = args.data == "pinwheel"
    head = "| model | seeds | time | space | fit CPU s | fit wall s | steps | train events/CPU s | test CPU s |"
    sep = "|---|---|---|---|---|---|---|---|---|"
    if offset is not None:
        head += " space, paper units |"
        sep += "---|"
    if paper:
        head += " paper time | paper space |"
        sep += "---|---|"
    lines = [head, sep]
    for name in dict.fromkeys(r["model"] for r in rows):
        own = [r for r in rows if r["model"] == name]
        speeds = [r.get("events_per_second") for r in own]
        line = (f"| {name} | {','.join(str(r['seed']) for r in own)} | "
                f"{fmt([r['test_time_log_likelihood_per_event'] for r in own])} | "
                f"{fmt([r['test_space_log_likelihood_per_event'] for r in own])} | "
                f"{np.mean([r['cpu_seconds'] for r in own]):.0f} | {np.mean([r['seconds'] for r in own]):.0f} | "
                f"{np.mean([r['steps'] for r in own]):.0f} | "
                f"{np.mean([s for s in speeds if s]) if any(speeds) else float('nan'):.0f} | "
                f"{np.mean([r['eval_seconds'] for r in own]):.0f} |")
        if offset is not None:
            line += f" {fmt([r['test_space_log_likelihood_per_event'] + offset for r in own])} |"
        if paper:
            pt, ps = PAPER_PINWHEEL.get(name, (None, None))
            line += f" {'' if pt is None else f'{pt:+.3f}'} | {'' if ps is None else f'{ps:+.3f}'} |"
        lines.append(line)
    return "\n".join(lines)


def write(args: argparse.Namespace, rows: list[dict], command: str, env: dict, test, offset: float,
          law: dict[str, float] | None = None, curve_law: dict[str, float] | None = None) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _bench.write_json_atomically(args.out.with_suffix(".json"), {
        "command": command, "environment": env, "args": {k: str(v) for k, v in vars(args).items()},
        "test_sequences": len(test), "test_events": test.num_events, "rows": rows,
        "reference_space_offset": offset, "cnf_defaults": CNF_DEFAULTS, "generating_law": law,
        "curve_generating_law": curve_law})
    text = (f"# Spatio-temporal models on {args.data} (benchmarks/stpp.py)\n\n`{command}`\n\n"
            f"Budget {args.minutes:g} CPU minutes of training per model and seed (shared 2-core machine, one thread, "
            f"nice 10; the budget ends a run after the step that crosses it); CNFs: hidden {args.hidden_size}, flow {args.flow_hidden}, batch {args.cnf_batch_size or args.batch_size}, lr "
            f"{args.lr}, {args.dtype}{cnf_settings(argparse.Namespace(**vars(args), cnf_defaults=CNF_DEFAULTS))}, evaluation dopri5 rtol = atol = {args.tol} with the exact trace. Test: "
            f"{len(test)} sequences, {test.num_events} events. Nats per event, higher is better (mean ± sd over "
            f"seeds).\n\n" + table(args, rows, test, offset) + "\n")
    text += (f"\nSpace, paper units: ours + {offset:.3f} (sum of the log standard deviations of the training "
             "locations per coordinate: the reference code scores standardised locations).\n")
    if args.data == "pinwheel":
        text += ("\nPaper: Chen, Amos & Nickel (ICLR 2021), Pinwheel, their draw of the same law, trained to "
                 "convergence on a GPU (ours: a few CPU minutes).\n")
    if law is not None:
        text += (f"\nThe generating law on these test sequences (`tpp.spatial.data.pinwheel_log_likelihood`, the "
                 f"history's clusters known): time {law['time']:+.3f}, space {law['space']:+.3f} (paper units "
                 f"{law['space'] + offset:+.3f}); the arms' equal mixture, which ignores the history, scores "
                 f"{law['space_without_history']:+.3f} (paper units {law['space_without_history'] + offset:+.3f}). "
                 "A model's space score above the mixture's is what it learned from the history.\n")
    stopped = [f"{r['model']} seed {r['seed']} ({r['stopped_by']} after {r['steps']} steps)" for r in rows
               if r.get("stopped_by")]
    if stopped:
        text += f"\nStopped by a signal before the budget was spent: {'; '.join(stopped)}.\n"
    curves = [r for r in rows if r.get("curve")]
    if curves:
        text += curve_section(args, curves, curve_law)
    args.out.with_suffix(".md").write_text(text)


def curve_section(args: argparse.Namespace, rows: list[dict], law: dict[str, float] | None) -> str:
    """The learning curves (``--curve-every``): a Markdown table and ``OUT_curve.png`` (validation space and time
    against training CPU minutes, the generating law's and the history-free mixture's levels on Pinwheel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tpp.io import atomic_write

    figure, (ax_space, ax_time) = plt.subplots(1, 2, figsize=(11, 4))
    lines = [f"\n## Learning curves\n\nValidation ({args.curve_sequences} sequences, exact trace) every "
             f"{args.curve_every} steps; CPU minutes of training (scoring excluded).\n",
             "| model | seed | step | CPU min | train events | val time | val space |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        points = row["curve"]
        minutes = [c["cpu_seconds"] / 60 for c in points]
        label = f"{row['model']} seed {row['seed']}"
        ax_space.plot(minutes, [c["val_space"] for c in points], marker=".", label=label)
        ax_time.plot(minutes, [c["val_time"] for c in points], marker=".", label=label)
        lines += [f"| {row['model']} | {row['seed']} | {c['step']} | {c['cpu_seconds'] / 60:.1f} | {c['events']} | "
                  f"{c['val_time']:+.3f} | {c['val_space']:+.3f} |" for c in points]
    if law is not None:
        ax_space.axhline(law["space"], color="k", ls="--", lw=1, label="generating law")
        ax_space.axhline(law["space_without_history"], color="grey", ls=":", lw=1, label="arms' mixture, no history")
        ax_time.axhline(law["time"], color="k", ls="--", lw=1, label="generating law")
        lines.append(f"\nOn these validation sequences the generating law scores time {law['time']:+.3f}, space "
                     f"{law['space']:+.3f}; the arms' history-free mixture space {law['space_without_history']:+.3f}.")
    for ax, what in ((ax_space, "space"), (ax_time, "time")):
        ax.set_xlabel("training CPU minutes")
        ax.set_ylabel(f"validation {what} log-likelihood per event (nats)")
        ax.grid(alpha=0.3)
    ax_space.legend(fontsize=8)
    figure.suptitle(f"{args.data}: learning curves")
    figure.tight_layout()
    # an --out that already ends in "_curve" names the picture OUT.png, not OUT_curve_curve.png
    stem = args.out.name if args.out.name.endswith("_curve") else f"{args.out.name}_curve"
    png = args.out.parent / f"{stem}.png"
    with atomic_write(png, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=110)
    plt.close(figure)
    lines.append(f"\n![learning curves]({png.name})\n")
    return "\n".join(lines) + "\n"


def cnf_settings(args: argparse.Namespace) -> str:
    """The CNF settings a run changed from the defaults, for the Markdown's settings line."""
    pairs = getattr(args, "cnf_option", None) or []
    if isinstance(pairs, str):  # a run's JSON keeps its arguments as strings ("None", "['k=v']")
        pairs = [] if pairs == "None" else ast.literal_eval(pairs)
    extra = list(pairs)
    # Runs before 2026-12-07 trained the hidden state by RK4 steps of 2 with the bounded drift (the defaults then);
    # their JSON has no `cnf_defaults`.
    step = str(getattr(args, "train_time_step", "2.0"))
    if step.lower() != "none":
        extra.append(f"train_time_step={step}")
    if not getattr(args, "cnf_defaults", None):
        extra.append("bounded hidden drift")
    if getattr(args, "on_nonfinite", "raise") != "raise":
        extra.append("non-finite updates skipped")
    return "".join(f", {e}" for e in extra)


def collect(out: Path) -> None:
    """One page from every run of this script under ``out``'s folder (``stpp_*.json``): its command, its settings
    line and its table, so the numbers and how to reproduce them sit together."""
    runs, offsets = [], {}
    for path in sorted(out.parent.glob("stpp_*.json")):
        payload = json.loads(path.read_text())
        if "benchmarks/stpp.py" not in payload.get("command", "") or not payload.get("rows"):
            continue
        if "reference_space_offset" not in payload:  # runs from before the column: the same data, the same offset
            data = payload["args"]["data"]
            if data not in offsets:
                train = splits(data)[0]
                names = tuple(train.feature_names)
                offsets[data] = reference_space_offset(
                    train, ("lon", "lat") if {"lon", "lat"} <= set(names) else names[:2])
            payload["reference_space_offset"] = offsets[data]
        runs.append((path, payload))
    parts = ["# Spatio-temporal point processes (benchmarks/stpp.py)\n",
             "Each section is one run (its command first); nats per event on the test split, higher is better. "
             "CPU budgets are this process's CPU time on a shared 2-core machine (nice 10), so wall times are longer. "
             "Pinwheel: the paper's numbers (Chen, Amos & Nickel 2021, their draw, trained to convergence on a GPU) "
             "beside ours.\n"]
    for path, payload in runs:
        ns = argparse.Namespace(**{**payload["args"], "cnf_defaults": payload.get("cnf_defaults")})
        cnf_batch = getattr(ns, "cnf_batch_size", None)
        parts.append(f"## {path.stem} ({ns.data})\n\n`{payload['command']}`\n\nbudget {ns.minutes} CPU min per model "
                     f"and seed; CNFs {ns.dtype}, batch {cnf_batch if cnf_batch not in (None, 'None') else ns.batch_size}"
                     f", lr {ns.lr}{cnf_settings(ns)}; test {payload['test_sequences']} sequences ({payload['test_events']} events)\n\n"
                     + table(ns, payload["rows"], None, payload["reference_space_offset"]) + "\n")
    out.with_suffix(".md").write_text("\n".join(parts))
    _bench.write_json_atomically(out.with_suffix(".json"), {"runs": {p.stem: pl for p, pl in runs}})
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
