"""PhysioNet 2012: our series models beside PyPOTS (SAITS, BRITS, GRU-D, CSDI, Raindrop) on the same patients and masks.

What it measures
----------------
Three tasks on the PhysioNet/CinC 2012 set A records (registry ``physionet2012``: 37 variables, 48 h, the
registry's seeded, label-stratified 70 / 15 / 15 % split), set up by :mod:`sde.tasks` with the run's seed,
exactly as ``sde fit --task ...`` sets them up (same seeds for the train, validation and test parts):

* ``interpolate``: 20 % of the observed values strictly inside each stay held out, reconstructed;
* ``forecast``: the last 20 % of each stay's rows hidden, their observed values predicted;
* ``classify``: in-hospital mortality (AUROC, AUPRC; about 14 % positives).

Per (task, model): MSE and MAE of the held-out values in the data's original units, CRPS and the coverage of
the central 50 % / 90 % predictive intervals (models with a predictive distribution: ours through
:func:`sde.tasks.predictive`, CSDI through its samples), AUROC / AUPRC, training seconds, and the peak resident
memory of the process that trained it (every model trains in its own single-threaded process).

The grid PyPOTS needs
---------------------
Our models read the exact observation times. PyPOTS's models need a regular grid; the script puts every stay
on the grid that PyPOTS's own loader builds (``tsdb.load("physionet_2012")`` + ``benchpots``'s
``preprocess_physionet2012``: the time ``HH:MM`` floored to the hour, the values of one variable within one hour
averaged, 48 steps, hours 0..47), from the same inputs our models see (the held-out values already NaN), with
one difference: the rare values at exactly 48:00 go to step 47 (benchpots drops them) so that every held-out
value has a cell. Each held-out value is scored against the prediction of its cell: the two libraries are
scored on the same values, in the same units, with the same metric code (``_pypots_peer.value_metrics``). A cell
can also hold kept values of the same variable from that hour (their average is the cell's input), as our
models see those values at their exact times. PyPOTS's imputers train on every observed training value (their
own masking makes the training targets); ``X_ori`` of the validation part drives their best-epoch choice, as
our models' validation part drives ours. PyPOTS 1.5 has no model that forecasts a per-stay horizon on a
grid with missing values, so **forecast = imputation of the hidden future cells** by the same imputers (the
future rows are NaN in their input, as in ours); said in the table.

Usage::

    .venv/bin/python benchmarks/physionet.py --quick          # 120 patients, 1 epoch, every task: a few minutes
    .venv/bin/python benchmarks/physionet.py --epochs 20      # all 4000 patients (hours on 2 cores)
    .venv/bin/python benchmarks/physionet.py --max-patients 1000 --models gru,neural-cde --peers saits,brits --tasks interpolate

The first run creates ``<scratch>/pypots-venv`` (``pip install -c constraints torch==2.13.0`` (the local CPU
wheel), then ``pypots==1.5``; about 75 s here); later runs reuse it. Writes ``--out`` (JSON) and ``--markdown``.
"""

# ruff: noqa: I001  (_bench sets the thread variables: it must be imported before numpy and torch)
from _bench import SINGLE_THREAD_ENV, base_environment, reproduce_command, write_json_atomically

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import torch
import typer

from _pypots_peer import CLASSIFIERS, IMPUTERS, auprc, auroc, peak_rss_mb, value_metrics

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
DEFAULT_SCRATCH = Path("~/.cache/tpp-sde/bench").expanduser()
DEFAULT_OUT = HERE / "results" / "physionet.json"
DEFAULT_MARKDOWN = HERE / "results" / "physionet.md"
DATASET = "physionet2012"
TASKS = ("interpolate", "forecast", "classify")
GRID_STEPS = 48
PYPOTS_REQUIREMENTS = (("torch==2.13.0",), ("pypots==1.5",))
#: our models the full run offers, in this order, where the model table has them (new ones appear as they land)
OUR_CANDIDATES = ("latent-ode", "ode-rnn", "gru-d", "gru", "neural-cde", "lsde", "lnsde", "gsde", "latent-sde")
#: quick leaves out neural-cde: 1 epoch on 84 stays took it ~110 s and 8 GB (the others 2-20 s); add it with --models
QUICK_CANDIDATES = ("latent-ode", "ode-rnn", "gru-d", "gru")
PEERS = ("saits", "brits", "grud", "csdi", "raindrop")
#: opt-in (``--peers ...,csdi,raindrop``): CSDI's 50-step reverse diffusion per sample is too slow on a CPU, and
#: Raindrop needs torch_scatter / torch_sparse, which have no wheels for torch 2.13 (see README)
DEFAULT_PEERS = ("saits", "brits", "grud")
PEER_LABELS = {"saits": "SAITS", "brits": "BRITS", "grud": "GRU-D", "csdi": "CSDI", "raindrop": "Raindrop"}
# seeds of the parts, as `sde fit` derives them (sde.cli): same seed, same masks as the CLI
_TRAIN_KEY, _VALPART_KEY, _TEST_KEY = 10, 11, 12

# Published reference numbers (Rubanova, Chen & Duvenaud 2019, PhysioNet, their own protocol: 0.1 h grid,
# min-max normalised values; NOT comparable with the numbers of this table, which are in original units).
PUBLISHED = {"latent_ode_interpolation_mse": 2.118e-3, "ode_rnn_interpolation_mse": 2.361e-3,
             "latent_ode_extrapolation_mse": 2.231e-3}


# --------------------------------------------------------------------------- data and masks
def registered_models() -> set[str]:
    """Every name of the model table (ours: the sde entries register on import)."""
    import sde.table  # noqa: F401 - registers the sde entries of the model table
    from tpp import table

    return set(table.names())


def load_parts(max_patients: int | None, seed: int) -> tuple[dict[str, Any], list[str]]:
    """The registry's train / val / test stays, each cut to its share of ``max_patients`` (seeded), without stays
    of fewer than 2 rows (a forecast needs a past and a future); and the notes saying what was dropped."""
    from sde.datasets import load

    notes = []
    parts = {name: load(DATASET, name) for name in ("train", "val", "test")}
    total = sum(len(p) for p in parts.values())
    for name, part in parts.items():
        keep = np.flatnonzero(part.lengths.numpy() >= 2)
        if keep.size < len(part):
            notes.append(f"{name}: {len(part) - keep.size} stay(s) with fewer than 2 rows dropped (nothing observed "
                         "after admission)")
        if max_patients is not None and max_patients < total:
            n = max(2, round(max_patients * len(part) / total))
            rng = np.random.default_rng([seed, ("train", "val", "test").index(name)])
            keep = np.sort(rng.choice(keep, size=min(n, keep.size), replace=False))
        parts[name] = part[keep]
    if max_patients is not None and max_patients < total:
        notes.append(f"subsampled to {sum(len(p) for p in parts.values())} of {total} stays (seeded, each split "
                     "keeps its share)")
    return parts, notes


def make_tasks(parts: dict[str, Any], task: str, seed: int, holdout: float, horizon: float) -> dict[str, Any]:
    """Train / val / test :class:`sde.tasks.TaskData` of ``task``, seeded as ``sde fit`` seeds them."""
    from sde.tasks import derived_seed, make_task

    options = dict(holdout=holdout, horizon=horizon)
    train = make_task(parts["train"], task, seed=derived_seed(seed, _TRAIN_KEY), train=True, **options)
    val = make_task(parts["val"], task, seed=derived_seed(seed, _VALPART_KEY), scale=train.scale, **options)
    test = make_task(parts["test"], task, seed=derived_seed(seed, _TEST_KEY), scale=train.scale, **options)
    return {"train": train, "val": val, "test": test}


def grid_cells(time: torch.Tensor) -> np.ndarray:
    """The grid step of every row: the hour it falls in (PyPOTS's loader floors ``HH:MM`` to the hour), 48:00 in
    step 47."""
    return np.clip(np.floor(time.detach().cpu().numpy()), 0, GRID_STEPS - 1).astype(np.int64)


def to_grid(time: torch.Tensor, values: torch.Tensor, rows: torch.Tensor) -> np.ndarray:
    """``[B, 48, C]``: the mean of the non-NaN values of each (stay, hour, variable), NaN where there is none."""
    v = values.detach().cpu().numpy().astype(np.float64)
    ok = rows.detach().cpu().numpy()[..., None] & ~np.isnan(v)
    b, r, c = np.nonzero(ok)
    cell = grid_cells(time)[b, r]
    shape = (v.shape[0], GRID_STEPS, v.shape[2])
    total, count = np.zeros(shape), np.zeros(shape)
    np.add.at(total, (b, cell, c), v[b, r, c])
    np.add.at(count, (b, cell, c), 1.0)
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)


def scored_entries(part: Any) -> dict[str, np.ndarray]:
    """One entry per held-out value of a test part: its stay, grid step, channel and true value."""
    held = part.scored.detach().cpu().numpy()
    b, r, c = np.nonzero(held)
    return {"score_patient": b, "score_step": grid_cells(part.inputs.time)[b, r], "score_channel": c,
            "score_value": part.values.detach().cpu().numpy()[b, r, c].astype(np.float64)}


def peer_arrays(task: str, data: dict[str, Any]) -> dict[str, np.ndarray]:
    """What ``_pypots_peer.py`` reads (see its docstring), built from the very inputs our models see."""
    train, val, test = data["train"], data["val"], data["test"]

    def grid(part: Any, values: torch.Tensor) -> np.ndarray:
        return to_grid(part.inputs.time, values, part.inputs.mask)

    if task == "classify":
        scale = _scale_of(train)
        return {"X_train": grid(train, train.inputs.values), "X_val": grid(val, val.inputs.values),
                "X_test": grid(test, test.inputs.values), "mean": scale[0], "std": scale[1],
                "y_train": train.inputs.labels.numpy(), "y_val": val.inputs.labels.numpy(),
                "y_test": test.inputs.labels.numpy()}
    mean, std = (np.asarray(x, np.float64) for x in (train.scale.mean, train.scale.std))
    return {"X_train": grid(train, train.values),  # every observed training value (PyPOTS masks its own targets)
            "X_val": grid(val, val.inputs.values), "X_val_ori": grid(val, val.values),
            "X_test": grid(test, test.inputs.values), "mean": mean, "std": std, **scored_entries(test)}


def _scale_of(train: Any) -> tuple[np.ndarray, np.ndarray]:
    from sde.tasks import TargetScale

    scale = TargetScale.of(train.inputs)
    return np.asarray(scale.mean, np.float64), np.asarray(scale.std, np.float64)


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically (the project's writer: a reader never sees half a file)."""
    from tpp.io import atomic_write

    with atomic_write(path, ".npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


# --------------------------------------------------------------------------- our models (one process each)
def our_worker(job_path: Path) -> None:
    """Train one of our models on one task (``job.json``) and write its metrics JSON."""
    torch.set_num_threads(1)
    job = json.loads(job_path.read_text())
    import tpp
    import sde.table  # noqa: F401 - registers the sde entries of the model table
    from sde.cli import _build
    from sde.tasks import TaskName, batch_size_rule, class_probabilities, derived_seed, evaluate, predictive

    data = torch.load(job["tasks"], weights_only=False)
    train, val, test = data["train"], data["val"], data["test"]
    task, seed = TaskName(job["task"]), int(job["seed"])
    net = _build(job["model"], task, train.inputs, test.inputs, job["hidden_size"], seed,
                 options=job.get("model_options") or None)
    batch = job["batch_size"] or batch_size_rule(len(train.inputs))
    started = time.perf_counter()
    record = tpp.fit(net, train.inputs, val.inputs, epochs=job["epochs"], batch_size=batch, lr=job["lr"],
                     patience=job["patience"], seed=seed, progress=False)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    result: dict[str, Any] = {"model": job["model"], "task": task.value, "train_seconds": train_seconds,
                              "epochs": job["epochs"], "epochs_run": len(record.history),
                              "best_epoch": record.best_epoch, "batch_size": batch, "lr": job["lr"],
                              "n_train": len(train.inputs), "n_val": len(val.inputs), "n_test": len(test.inputs),
                              "parameters": int(sum(p.numel() for p in net.parameters()))}
    official = evaluate(net, test, seed=seed)  # the numbers `sde fit --json` reports: the table's primary ones
    result["evaluate"] = {k: v for k, v in official.items() if k != "stats"}
    result["solver_work"] = official.get("stats")
    for key in ("test_mse", "test_mae", "test_crps", "test_log_likelihood", "test_auroc", "test_auprc",
                "test_accuracy"):
        if key in official:
            result[key] = official[key]
    for level in (50, 90):
        if f"coverage_{level}" in official:
            result[f"test_coverage_{level}"] = official[f"coverage_{level}"]
    net.eval()
    # a second pass with the same seed as evaluate: the errors in standard units (per-channel scale of the
    # training inputs, as the peer reports them) and a cross-check of evaluate's numbers with the peer's code
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(derived_seed(seed, 3))
        chunks = [np.arange(s, min(s + 128, len(test.inputs))) for s in range(0, len(test.inputs), 128)]
        if task is TaskName.CLASSIFY:
            proba = class_probabilities(net, test.inputs).numpy()
            y = test.inputs.labels.numpy()
            result["check"] = {"auroc": auroc(y, proba[:, 1]), "auprc": auprc(y, proba[:, 1])}
            result["n_scored"] = int(y.size)
        else:
            truth, means, channels = [], [], []
            for i in chunks:
                part = test.inputs[i]
                mean, _ = predictive(net, part, test.scale)
                held = test.scored[i, :part.time.shape[1]].to(mean.device)
                truth.append(test.values[i, :part.time.shape[1]].to(mean)[held])
                means.append(mean[held])
                channels.append(torch.nonzero(held)[:, 2])
            scores = value_metrics(torch.cat(truth).numpy(), torch.cat(means).numpy(),
                                   unit=np.asarray(test.scale.std)[torch.cat(channels).numpy()])
            result["check"] = scores
            result["n_scored"] = scores["n_scored"]
            result["test_mse_std"], result["test_mae_std"] = scores["mse_std"], scores["mae_std"]
    result["predict_seconds"] = time.perf_counter() - started
    result["peak_rss_mb"] = peak_rss_mb()
    result["torch_threads"] = torch.get_num_threads()
    write_json_atomically(Path(job["out"]), result)


# --------------------------------------------------------------------------- the peer venv
def single_thread_env() -> dict[str, str]:
    env = {**os.environ, **SINGLE_THREAD_ENV}
    env.pop("PYTHONPATH", None)
    return env


def ensure_pypots_venv(scratch: Path) -> Path:
    """Create ``<scratch>/pypots-venv`` with PyPOTS once (a stamp file marks a finished install); torch is pinned
    to the local CPU wheel by a constraints file, so pip never pulls a CUDA build."""
    venv = scratch / "pypots-venv"
    python = venv / "bin" / "python"
    stamp = venv / ".tpp-bench-installed"
    wanted = " && ".join(" ".join(r) for r in PYPOTS_REQUIREMENTS)
    if stamp.exists() and stamp.read_text().strip() == wanted and python.exists():
        return python
    if venv.exists() and not python.exists():
        shutil.rmtree(venv)  # a half-made venv from an interrupted install
    print(f"creating {venv} and installing {wanted} (once; reused by later runs) ...", flush=True)
    scratch.mkdir(parents=True, exist_ok=True)
    constraints = scratch / "pypots-constraints.txt"
    constraints.write_text((REPO / "constraints.txt").read_text())
    started = time.perf_counter()
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    log = scratch / "pypots-venv-install.log"
    with log.open("w") as f:
        for requirement in PYPOTS_REQUIREMENTS:
            done = subprocess.run([str(python), "-m", "pip", "install", "-c", str(constraints), *requirement],
                                  check=False, stdout=f, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                raise SystemExit(f"pip install {' '.join(requirement)} failed; see {log}")
    subprocess.run([str(python), "-c", "import pypots.imputation, pypots.classification"], check=True,
                   env=single_thread_env(), stdout=subprocess.DEVNULL)
    stamp.write_text(wanted + "\n")
    print(f"  installed in {time.perf_counter() - started:.0f} s (log: {log})", flush=True)
    return python


def package_version(python: Path, module: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({module!r}))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False,
                          env=single_thread_env())
    return done.stdout.strip() or "?"


def run_process(command: list[str], log: Path, out: Path, timeout: float) -> dict[str, Any]:
    """Run one training process; its JSON, or ``{"error": ...}`` with the log's tail."""
    started = time.perf_counter()
    with log.open("w") as fh:
        try:
            done = subprocess.run(command, stdout=fh, stderr=subprocess.STDOUT, env=single_thread_env(),
                                  cwd=str(out.parent), timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s", "wall_seconds": time.perf_counter() - started}
    if done.returncode != 0 or not out.exists():
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-3:]
        return {"error": f"exit {done.returncode}: {tail[-1].strip() if tail else 'no output'}"[:400],
                "log_tail": tail, "log": str(log), "wall_seconds": time.perf_counter() - started}
    result = json.loads(out.read_text())
    result["wall_seconds"] = time.perf_counter() - started
    return result


# --------------------------------------------------------------------------- report
def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = ("| task | library | model | MSE | MAE | MSE (sd units) | MAE (sd units) | CRPS | cover 50 % | cover 90 % "
            "| AUROC | AUPRC | train s | peak MB | scored |")
    lines = [head, "|" + "---|" * 15]
    for r in rows:
        if "error" in r:
            reason = r["error"].replace("|", "/")[:120]
            lines.append(f"| {r['task']} | {r['library']} | {r['label']} | failed: {reason} |" + " |" * 11)
            continue
        lines.append(" | ".join([
            f"| {r['task']}", r["library"], r["label"], _fmt(r.get("test_mse"), ".4g"), _fmt(r.get("test_mae"), ".4g"),
            _fmt(r.get("test_mse_std"), ".4f"), _fmt(r.get("test_mae_std"), ".4f"), _fmt(r.get("test_crps"), ".4g"),
            _fmt(r.get("test_coverage_50"), ".3f"),
            _fmt(r.get("test_coverage_90"), ".3f"), _fmt(r.get("test_auroc"), ".3f"), _fmt(r.get("test_auprc"), ".3f"),
            _fmt(r.get("train_seconds"), ".1f"), _fmt(r.get("peak_rss_mb"), ".0f"), str(r.get("n_scored", "-")),
        ]) + " |")
    return "\n".join(lines)


def comparisons(rows: list[dict[str, Any]]) -> list[str]:
    """Best of ours against PyPOTS's best per task (the issue's goals), as PASS / FAIL lines."""
    lines = []
    for task in TASKS:
        ok = [r for r in rows if r["task"] == task and "error" not in r]
        ours = [r for r in ok if r["library"] == "ours"]
        peers = [r for r in ok if r["library"] == "PyPOTS"]
        if not ours or not peers:
            continue
        if task == "classify":
            a = max(ours, key=lambda r: r["test_auroc"])
            b = max(peers, key=lambda r: r["test_auroc"])
            verdict = "PASS" if a["test_auroc"] >= b["test_auroc"] else "FAIL"
            lines.append(f"{task}: our best AUROC {a['test_auroc']:.3f} ({a['label']}) vs PyPOTS best "
                         f"{b['test_auroc']:.3f} ({b['label']}), difference {a['test_auroc'] - b['test_auroc']:+.3f}: "
                         f"{verdict} (goal: ours >= PyPOTS)")
        else:
            a = min(ours, key=lambda r: r["test_mae"])
            b = min(peers, key=lambda r: r["test_mae"])
            verdict = "PASS" if a["test_mae"] <= b["test_mae"] else "FAIL"
            lines.append(f"{task}: our best MAE {a['test_mae']:.4g} ({a['label']}) vs PyPOTS best {b['test_mae']:.4g} "
                         f"({b['label']}), ratio {a['test_mae'] / b['test_mae']:.3f}: {verdict} (goal: ratio <= 1)")
            if all("test_mae_std" in r for r in (*ours, *peers)):
                a = min(ours, key=lambda r: r["test_mae_std"])
                b = min(peers, key=lambda r: r["test_mae_std"])
                lines.append(f"{task}: MAE in sd units (each channel over its training sd): ours {a['test_mae_std']:.4f} "
                             f"({a['label']}) vs PyPOTS {b['test_mae_std']:.4f} ({b['label']}), ratio "
                             f"{a['test_mae_std'] / b['test_mae_std']:.3f}")
            covered = [r for r in ours if r.get("test_coverage_90") is not None]
            if covered:
                inside = [r["label"] for r in covered if 0.85 <= r["test_coverage_90"] <= 0.95]
                lines.append(f"{task}: 90 % intervals covering 85-95 % of held-out values: "
                             f"{', '.join(inside) if inside else 'none'} (of {len(covered)} of ours)")
    return lines


# --------------------------------------------------------------------------- CLI
def _split(text: str) -> list[str]:
    return [s.strip().lower() for s in text.split(",") if s.strip()]


app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


@app.command()
def main(
    quick: Annotated[bool, typer.Option(help="120 stays, 1 epoch, CSDI with 4 samples, no neural-cde: a smoke test, minutes.")] = False,
    max_patients: Annotated[Optional[int], typer.Option(min=12, help="Stays in all (seeded subsample, each split its share).")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs of every model (both libraries keep their best validation epoch).")] = 20,
    patience: Annotated[int, typer.Option(min=1, help="Early-stopping patience of every model.")] = 10,
    models: Annotated[Optional[str], typer.Option(help="Ours, comma-separated table names (default: those of "
                                                       f"{', '.join(OUR_CANDIDATES)} the table has).")] = None,
    peers: Annotated[str, typer.Option(help=f"PyPOTS models: {', '.join(PEERS)} (each on the tasks it does; CSDI is slow).")] =
        ",".join(DEFAULT_PEERS),
    tasks: Annotated[str, typer.Option(help="Comma-separated: interpolate, forecast, classify.")] = ",".join(TASKS),
    seed: Annotated[int, typer.Option(help="Seed of the subsample, the masks and every model.")] = 0,
    holdout: Annotated[float, typer.Option(help="interpolate: share of the observed values held out.")] = 0.2,
    horizon: Annotated[float, typer.Option(help="forecast: share of each stay's rows predicted.")] = 0.2,
    batch_size: Annotated[int, typer.Option(help="Stays per minibatch, both libraries.")] = 64,
    # 3e-3: on all 4000 stays, 10 epochs, GRU-D's best validation epoch was 3-4 at 1e-2; mortality AUROC 0.813 (1e-2),
    # 0.833 (3e-3), 0.830 (1e-3); bidirectional interpolation MAE 12.69, 12.33, 12.92; at 20 epochs 3e-3 gave
    # interpolation 11.92 and forecast 15.86 (1e-2, 10 epochs: 16.03)
    lr: Annotated[float, typer.Option(help="Our peak learning rate (PyPOTS keeps its Adam default, 1e-3).")] = 3e-3,
    hidden_size: Annotated[Optional[int], typer.Option(help="Our hidden size (default: the model table's).")] = None,
    model_options: Annotated[Optional[str], typer.Option(help=(
        "Further constructor arguments of our models as JSON, e.g. '{\"reconstruction_weight\": 1.0}' "
        "(each model must take them)."))] = None,
    peer_size: Annotated[str, typer.Option(help="PyPOTS sizes: small (CPU) or paper (TSI-Bench's).")] = "small",
    csdi_samples: Annotated[int, typer.Option(min=2, help="CSDI predictive samples per value.")] = 20,
    timeout: Annotated[float, typer.Option(help="Seconds per model before it is stopped (the issue's budget: 30 min).")] = 1800,
    scratch: Annotated[Path, typer.Option(help="Scratch folder outside the repo: PyPOTS's venv, data, logs.")] =
        DEFAULT_SCRATCH,
    out: Annotated[Path, typer.Option(help="JSON result.")] = DEFAULT_OUT,
    markdown: Annotated[Path, typer.Option(help="Markdown table.")] = DEFAULT_MARKDOWN,
) -> None:
    from sde.tasks import save_masks

    scratch = scratch.expanduser().resolve()
    if scratch == REPO or REPO in scratch.parents:
        raise typer.BadParameter(f"--scratch must be outside the repository {REPO}")
    if quick:
        max_patients, epochs, csdi_samples = max_patients or 120, 1, min(csdi_samples, 4)
    task_list = _split(tasks)
    try:
        options = json.loads(model_options) if model_options else {}
    except json.JSONDecodeError as error:
        raise typer.BadParameter(f"not JSON: {error}", param_hint="--model-options") from None
    if not isinstance(options, dict):
        raise typer.BadParameter("a JSON object of constructor arguments", param_hint="--model-options")
    for t in task_list:
        if t not in TASKS:
            raise typer.BadParameter(f"task {t!r} is not one of {TASKS}")
    available = registered_models()
    model_list = _split(models) if models else [m for m in (QUICK_CANDIDATES if quick else OUR_CANDIDATES)
                                                if m in available]
    unknown = [m for m in model_list if m not in available]
    if unknown:
        raise typer.BadParameter(f"not in the model table: {unknown}")
    peer_list = _split(peers)
    for p in peer_list:
        if p not in PEERS:
            raise typer.BadParameter(f"peer {p!r} is not one of {PEERS}")

    print("command:", reproduce_command(__file__), flush=True)
    env = base_environment()
    python = ensure_pypots_venv(scratch) if peer_list else None
    if python is not None:
        env["peer_python"] = str(python)
        env.update({f"peer_{m}": package_version(python, m) for m in ("pypots", "torch", "numpy")})
    print("environment:", env, flush=True)
    work = scratch / "work" / "physionet" / out.stem  # one folder per result file: two runs never share one
    work.mkdir(parents=True, exist_ok=True)

    started_all = time.perf_counter()
    parts, notes = load_parts(max_patients, seed)
    for n in notes:
        print("note:", n)
    print(f"stays: train {len(parts['train'])}, val {len(parts['val'])}, test {len(parts['test'])}", flush=True)
    rows: list[dict[str, Any]] = []
    for task in task_list:
        data = make_tasks(parts, task, seed, holdout, horizon)
        tasks_path = work / f"{task}_tasks.pt"
        torch.save(data, tasks_path)
        save_masks(work / f"{task}_test_masks.npz", data["test"])
        arrays = peer_arrays(task, data)
        npz = work / f"{task}_peer.npz"
        _savez(npz, arrays)
        if task != "classify":
            # the grid scores exactly the held-out values our models are scored on
            assert arrays["score_value"].size == data["test"].num_scored
            shared = ~np.isnan(arrays["X_test"][arrays["score_patient"], arrays["score_step"], arrays["score_channel"]])
            notes.append(f"{task}: {100 * shared.mean():.0f} % of the held-out test values share their grid cell with "
                         "a kept value of the same variable in that hour (PyPOTS sees that hour's mean of the kept "
                         "values there)")
        print(f"\n== {task}: {data['test'].num_scored} scored {'stays' if task == 'classify' else 'values'}",
              flush=True)
        for name in model_list:
            job = {"model": name, "task": task, "seed": seed, "epochs": epochs, "patience": patience, "lr": lr,
                   "batch_size": batch_size, "hidden_size": hidden_size, "tasks": str(tasks_path),
                   "model_options": options,
                   "out": str(work / f"{task}_ours_{name}.json")}
            job_path = work / f"{task}_ours_{name}.job.json"
            job_path.write_text(json.dumps(job))
            Path(job["out"]).unlink(missing_ok=True)
            res = run_process([sys.executable, str(Path(__file__).resolve()), "--worker", str(job_path)],
                              work / f"{task}_ours_{name}.log", Path(job["out"]), timeout)
            rows.append({**res, "task": task, "library": "ours", "label": name})
            _print_row(rows[-1])
        for peer in peer_list:
            if peer not in (CLASSIFIERS if task == "classify" else IMPUTERS):
                continue
            result_path = work / f"{task}_pypots_{peer}.json"
            result_path.unlink(missing_ok=True)
            command = [str(python), str(HERE / "_pypots_peer.py"), "--data", str(npz), "--task", task, "--model", peer,
                       "--epochs", str(epochs), "--batch-size", str(batch_size), "--patience", str(patience),
                       "--seed", str(seed), "--size", peer_size, "--samples", str(csdi_samples),
                       "--out", str(result_path)]
            res = run_process(command, work / f"{task}_pypots_{peer}.log", result_path, timeout)
            rows.append({**res, "task": task, "library": "PyPOTS", "label": PEER_LABELS[peer]})
            _print_row(rows[-1])
    total = time.perf_counter() - started_all

    config = {"quick": quick, "max_patients": max_patients, "epochs": epochs, "patience": patience,
              "models": model_list, "peers": peer_list, "tasks": task_list, "seed": seed, "holdout": holdout,
              "horizon": horizon, "batch_size": batch_size, "lr": lr, "hidden_size": hidden_size,
              "model_options": options, "peer_size": peer_size, "csdi_samples": csdi_samples, "grid_steps": GRID_STEPS}
    payload = {"command": reproduce_command(__file__), "environment": env, "config": config,
               "stays": {k: len(v) for k, v in parts.items()}, "rows": rows, "notes": notes, "published": PUBLISHED,
               "wall_seconds": total, "work_dir": str(work)}
    text = render_markdown(payload)
    payload["table_markdown"], payload["comparisons"] = markdown_table(rows), comparisons(rows)
    print()
    print(payload["table_markdown"])
    print()
    print("\n".join(payload["comparisons"]))
    print(f"\ntotal {total:.0f} s wall ({'quick' if quick else 'full'} mode; shared machine: noisy)")
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(text)
    write_json_atomically(out, payload)
    print(f"wrote {out} and {markdown} (masks, peer data and logs in {work})")


def render_markdown(payload: dict[str, Any]) -> str:
    """The Markdown page of a run, from its JSON payload (``--render`` rebuilds it from a saved JSON).
"""
    config, env, rows, stays = payload["config"], payload["environment"], payload["rows"], payload["stays"]
    peers = {r["label"] for r in rows if r["library"] == "PyPOTS" and "error" not in r}
    old_text = ("PyPOTS sees each stay", "forecast on the PyPOTS side", "CRPS and coverage", "our learning rate")
    notes = [n for n in payload["notes"] if not n.startswith(old_text)] + [  # (older JSON had these among its notes)
        "PyPOTS sees each stay on the hourly 48-step grid of its own loader (tsdb/benchpots: HH:MM floored to the "
        "hour, values within an hour averaged; 48:00 put in step 47); each held-out value is scored against its "
        "cell's prediction, our models' at the value's exact time; both by the same metric code",
        "forecast on the PyPOTS side = imputation of the hidden future cells (PyPOTS 1.5 has no forecaster for a "
        "per-stay horizon with missing values)",
        "CRPS and coverage: ours from sde.tasks.evaluate (the Gaussian head; the latent models' posterior samples "
        "plus observation noise)" + (f", CSDI from {config['csdi_samples']} samples" if "CSDI" in peers else "")
        + "; SAITS, BRITS and GRU-D give point predictions only",
        f"learning rates: ours {config['lr']:g} (tpp.fit: AdamW, warm-up + cosine), PyPOTS Adam 1e-3 (its default); "
        f"batch {config['batch_size']} stays and patience {config['patience']} on both sides; PyPOTS sizes "
        f"'{config['peer_size']}' (see benchmarks/README.md)",
        "MSE and MAE in the data's original units (a few channels such as urine and platelets dominate them); "
        "'sd units': each error divided by its channel's training sd, every channel weighing alike",
        "the Latent ODE paper's MSEs (2.118e-3 interpolation, 2.231e-3 extrapolation) are on its own min-max "
        "normalised 0.1 h grid, not comparable with this table (sde/physionet.py runs that protocol)",
    ]
    md = [f"# PhysioNet 2012: ours vs PyPOTS {env.get('peer_pypots', '')}", ""]
    if config["quick"]:
        md += [f"**Quick mode: a smoke test ({config['epochs']} epoch on {sum(stays.values())} stays), not a "
               "ranking.**", ""]
    md += [f"`{payload['command']}`", "",
           f"Stays: train {stays['train']}, val {stays['val']}, test {stays['test']}; {config['epochs']} epoch(s); "
           f"seed {config['seed']}; every model trained in its own single-threaded process; CPU: {env['cpu']} "
           f"({env['cpu_count']} cores, shared); torch {env['torch']}, PyPOTS {env.get('peer_pypots', '-')}; "
           f"{payload['wall_seconds']:.0f} s in all.", "",
           markdown_table(rows), "", *[f"- {v}" for v in comparisons(rows)], "", *[f"- {n}" for n in notes], ""]
    return "\n".join(md)


def _print_row(r: dict[str, Any]) -> None:
    if "error" in r:
        print(f"  {r['library']:6s} {r['label']:12s} FAILED {r['error']}", flush=True)
        return
    keys = ("test_mse", "test_mae", "test_crps", "test_coverage_90", "test_auroc", "test_auprc")
    shown = ", ".join(f"{k[5:]} {r[k]:.4g}" for k in keys if isinstance(r.get(k), float))
    print(f"  {r['library']:6s} {r['label']:12s} {shown} (train {r.get('train_seconds', 0):.1f} s, "
          f"peak {r.get('peak_rss_mb', 0):.0f} MB)", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        our_worker(Path(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "--render":  # --render RESULT.json PAGE.md: rebuild the page
        Path(sys.argv[3]).write_text(render_markdown(json.loads(Path(sys.argv[2]).read_text())))
    else:
        app()
