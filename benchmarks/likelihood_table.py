"""Every model x the registry's real event datasets: test log-likelihood, next-time RMSE, mark accuracy.

What it measures
----------------
Models: every neural TPP that ``tpp.neural`` exports (RMTPP, NHP, THP, SAHP, AttNHP, FullyNN,
IntensityFree; one not exported yet is skipped with a note) and the classic baselines
``tpp.hawkes.Poisson`` (rate per type) and ``tpp.hawkes.ExpHawkes`` (decay learned; skipped above
``--max-hawkes-marks`` types, where its K x K kernels stop being a baseline). Datasets: taxi,
twitter, yelp_airport, pubg, reddit_askscience_comments, wikipedia_ifl, mimic2_rmtpp,
stackoverflow_rmtpp_subset, bookorder_rmtpp, earthquakes_japan, with the registry's splits
(``tpp.datasets.load(name, split)``; a dataset without a validation split gets 15% of its
training sequences, seeded).

For each (model, dataset, seed):

* fit on train (neural: ``tpp.fit`` with early stopping on validation, the best epoch kept;
  classic: ``.fit(train)``, exact MLE);
* test log-likelihood per event with OUR fine integrator: 64 Gauss-Legendre nodes on every
  inter-event interval (closed forms where a model has one: RMTPP, FullyNN, IntensityFree,
  Poisson, ExpHawkes), the survival term up to each window's end included;
* next-event forecasts with ``tpp.metrics.next_event_metrics`` on at most ``--max-predictions``
  histories of the test split (seeded): RMSE of the predicted mean time, mark accuracy (shown
  as "-" for single-type datasets, where it is 1 by construction).

Times are shifted to start at each window's start and divided by the training split's mean
inter-event gap ``c`` before fitting (``--no-rescale`` keeps the data's units); numbers are
reported back in the data's units (log-likelihood ``- log c`` per event, RMSE ``x c``), so they
compare across models and with the dataset cards' units. Mean and standard deviation over the
seeds (3 by default).

Outputs (all written atomically):

* ``<out-dir>/likelihood_table_runs.csv``: one row per (model, dataset, seed) and configuration,
  appended as each run finishes; a rerun with the same options skips the rows already there
  (resumable after a kill);
* ``<out-dir>/likelihood_table.csv`` (mean/std per model and dataset), ``<out-dir>/likelihood_table.png``
  (log-likelihood per event relative to Poisson, per dataset) and the Markdown table, also written
  to ``--markdown`` (default ``benchmarks/results/likelihood_table.md``).

``--quick``: seeds 0 and 1, 5 epochs, at most 64/32/32 train/val/test sequences per dataset each cut
to its first 64 events (the window then ends halfway between the 64th and 65th event), at most
100 forecasts (wikipedia, 8227 types: 8 sequences of 16 events per split, 32 forecasts: every
intensity model evaluates all 8227 per-type intensities at every quadrature node); about 10
minutes on 2 cores.

Usage::

    .venv/bin/python benchmarks/likelihood_table.py --quick
    .venv/bin/python benchmarks/likelihood_table.py                 # 3 seeds, full data
    .venv/bin/python benchmarks/likelihood_table.py --models THP,Poisson --datasets taxi,twitter

Every process is single-threaded (OMP/MKL/OPENBLAS/NUMBA threads = 1, ``torch.set_num_threads(1)``).
Data come from ``$TPP_DATA_DIR``; when it is unset and ``../shared/data`` (beside the repository)
holds the staged copies, that folder is used, as the Makefile does. Runs that failed are retried
by the next invocation; finished and skipped ones are not.
"""

# ruff: noqa: E402  (the thread variables below must be set before numpy/torch/numba are imported)
import os

from _bench import SINGLE_THREAD_ENV, base_environment, reproduce_command  # sets the threads
os.environ.setdefault("MPLBACKEND", "Agg")
_SHARED_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "shared", "data")
if "TPP_DATA_DIR" not in os.environ and os.path.exists(os.path.join(_SHARED_DATA, "INDEX.md")):
    os.environ["TPP_DATA_DIR"] = _SHARED_DATA  # the staged copies beside the repository, as the Makefile does

import csv
import hashlib
import json
import math
import shlex
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import torch
import typer

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import tpp.neural
from tpp import datasets
from tpp.compensator import gauss_legendre, interval_bounds
from tpp.events import EventBatch
from tpp.io import atomic_write
from tpp.metrics import next_event_metrics
from tpp.neural.base import NeuralTPP, history_index
from tpp.train import fit

torch.set_num_threads(1)

NEURAL_MODELS = ("RMTPP", "NHP", "THP", "SAHP", "AttNHP", "FullyNN", "IntensityFree")
CLASSIC_MODELS = ("Poisson", "ExpHawkes")
DATASETS = (
    "taxi",
    "twitter",
    "yelp_airport",
    "pubg",
    "reddit_askscience_comments",
    "wikipedia_ifl",
    "mimic2_rmtpp",
    "stackoverflow_rmtpp_subset",
    "bookorder_rmtpp",
    "earthquakes_japan",
)
EVAL_POINTS = 64
DEFAULT_OUT_DIR = Path("~/.cache/tpp-sde/bench/likelihood_table").expanduser()
DEFAULT_MARKDOWN = REPO / "benchmarks" / "results" / "likelihood_table.md"
RUN_FIELDS = (
    "config", "model", "dataset", "seed", "status", "note", "ll_per_event", "rmse", "accuracy",
    "num_predictions", "epochs_run", "best_epoch", "fit_seconds", "eval_seconds", "train_events_per_second",
    "train_sequences", "train_events", "test_events", "num_marks", "time_scale", "units", "created",
)
#: elements of one ``[B, T, K]`` intensity tensor allowed while scoring (sets chunk sizes)
EVAL_ELEMENTS = 4_000_000


# --------------------------------------------------------------------------- options
@dataclass(frozen=True)
class Options:
    quick: bool
    seeds: tuple[int, ...]
    epochs: int
    batch_size: int
    lr: float
    hidden_size: int
    max_train_sequences: int | None
    max_eval_sequences: int | None
    max_events: int | None
    max_predictions: int
    rescale: bool
    max_hawkes_marks: int
    #: quick mode above 1000 types (wikipedia): (train and eval sequences, events per sequence, forecasts)
    quick_many_types: tuple[int, int, int] = (8, 16, 32)

    def key(self) -> str:
        """What makes two runs of one (model, dataset, seed) comparable; rows of other keys are not reused."""
        fields = {k: v for k, v in self.__dict__.items() if k != "seeds"}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]


# --------------------------------------------------------------------------- data
def truncate(batch: EventBatch, max_events: int | None) -> EventBatch:
    """Each sequence cut to its first ``max_events`` events; the window ends halfway to the next event."""
    if max_events is None or int(batch.lengths.max()) <= max_events:
        return batch
    flat = batch.to_flat()
    off = flat["seq_offsets"]
    times, marks, offsets, t_end = [], [], [0], flat["t_end"].copy()
    for b in range(len(batch)):
        t, m = flat["times"][off[b] : off[b + 1]], flat["marks"][off[b] : off[b + 1]]
        if t.size > max_events:
            t_end[b] = 0.5 * (t[max_events - 1] + t[max_events])
            t, m = t[:max_events], m[:max_events]
        times.append(t)
        marks.append(m)
        offsets.append(offsets[-1] + t.size)
    return EventBatch.from_flat(np.concatenate(times), np.asarray(offsets), flat["t_start"], t_end,
                                np.concatenate(marks), batch.num_marks, dtype=batch.dtype)


def subsample(batch: EventBatch, limit: int | None, seed: int) -> EventBatch:
    if limit is None or len(batch) <= limit:
        return batch
    keep = np.sort(np.random.default_rng(seed).choice(len(batch), limit, replace=False))
    return batch[keep]


def rescaled(batch: EventBatch, scale: float) -> EventBatch:
    """Times shifted to start at each window's start and divided by ``scale``."""
    flat = batch.to_flat()
    seq = np.repeat(np.arange(len(batch)), np.diff(flat["seq_offsets"]))
    return EventBatch.from_flat(
        (flat["times"] - flat["t_start"][seq]) / scale, flat["seq_offsets"], np.zeros(len(batch)),
        (flat["t_end"] - flat["t_start"]) / scale, flat["marks"], batch.num_marks, dtype=batch.dtype,
    )


def mean_gap(batch: EventBatch) -> float:
    gaps = batch.inter_event_times[batch.mask]
    gaps = gaps[gaps > 0]
    return float(gaps.mean()) if gaps.numel() else 1.0


def load_dataset(name: str, opts: Options) -> dict[str, Any]:
    """Train/val/test (validation carved from train when the card has none), cut as the options say."""
    card = datasets.card(name)
    train = datasets.load(name, "train")
    if "val" in card.splits:
        val = datasets.load(name, "val")
    else:
        train, val = train.split((0.85, 0.15), seed=0)
    test = datasets.load(name, "test")
    n_train, n_eval, n_events = opts.max_train_sequences, opts.max_eval_sequences, opts.max_events
    if opts.quick and card.num_marks > 1000:  # per-type intensities at every node: cost ~ events x nodes x K
        n_train = n_eval = opts.quick_many_types[0]
        n_events = opts.quick_many_types[1]
    train = truncate(subsample(train, n_train, 0), n_events)
    val = truncate(subsample(val, n_eval, 1), n_events)
    test = truncate(subsample(test, n_eval, 2), n_events)
    scale = mean_gap(train) if opts.rescale else 1.0
    if opts.rescale:
        train, val, test = (rescaled(b, scale) for b in (train, val, test))
    return {"train": train, "val": val, "test": test, "scale": scale, "units": card.units,
            "num_marks": card.num_marks}


# --------------------------------------------------------------------------- scoring
def uses_base_quadrature(model: Any) -> bool:
    """Neural models whose compensator is the base class's Gauss-Legendre rule (no closed form)."""
    cls = type(model)
    return (isinstance(model, NeuralTPP) and cls.interval_compensator is NeuralTPP.interval_compensator
            and cls.log_likelihood is NeuralTPP.log_likelihood)


@torch.no_grad()
def quadrature_log_likelihood(model: NeuralTPP, batch: EventBatch, num_points: int) -> torch.Tensor:
    """``[B]`` the base class's log-likelihood (same nodes and weights), the intervals taken in chunks so that
    ``[B, T, K]`` intensities stay small with many types (wikipedia has 8227)."""
    batch = model._prepare(batch)
    context = model.encode(batch)
    K = model.num_marks
    index = history_index(batch, batch.time)
    B, L = batch.time.shape
    event_term = torch.zeros(B, dtype=torch.float64)
    step = max(1, EVAL_ELEMENTS // max(B * K, 1))
    for s in range(0, L, step):
        lam = model.intensity_at(batch, context, index[:, s : s + step], batch.time[:, s : s + step])
        own = lam.gather(-1, batch.mark[:, s : s + step].clamp(0, K - 1)[..., None])[..., 0]
        mask = batch.mask[:, s : s + step]
        event_term += torch.where(mask, torch.log(torch.where(mask, own, torch.ones_like(own))), 0.0).double().sum(1)
    left, right, valid = interval_bounds(batch)
    nodes, weights = gauss_legendre(left, right, num_points)  # [B, L + 1, P]
    compensator = torch.zeros(B, dtype=torch.float64)
    step = max(1, EVAL_ELEMENTS // max(B * num_points * K, 1))
    for s in range(0, L + 1, step):
        n, w = nodes[:, s : s + step], weights[:, s : s + step]
        I = n.shape[1]
        idx = torch.arange(s, s + I, device=batch.device)[None, :, None].expand(B, I, num_points)
        lam = model.intensity_at(batch, context, idx.reshape(B, -1), n.reshape(B, -1)).sum(-1).reshape(B, I, num_points)
        compensator += ((lam * w).sum(-1) * valid[:, s : s + step]).double().sum(1)
    return event_term - compensator



@torch.no_grad()
def test_log_likelihood(model: Any, test: EventBatch) -> float:
    """Log-likelihood per event of ``test`` (in the units the model was fitted in)."""
    model.eval()
    if isinstance(model, NeuralTPP):
        model.num_points = EVAL_POINTS
    lengths = test.lengths.cpu().numpy()
    order = np.argsort(lengths, kind="stable")
    total = 0.0
    K = test.num_marks
    per_sequence = (int(lengths.max()) + 1) * EVAL_POINTS * K
    batch_size = int(np.clip(EVAL_ELEMENTS // max(per_sequence, 1), 1, 64))
    for start in range(0, order.size, batch_size):
        part = test[order[start : start + batch_size]]
        if uses_base_quadrature(model):
            total += float(quadrature_log_likelihood(model, part, EVAL_POINTS).sum())
        else:
            total += float(model.log_likelihood(part).double().sum())
    return total / max(test.num_events, 1)


# --------------------------------------------------------------------------- one run
def build_and_fit(name: str, data: dict[str, Any], opts: Options, seed: int) -> tuple[Any, dict[str, Any]]:
    train, val = data["train"], data["val"]
    K = train.num_marks
    info: dict[str, Any] = {}
    if name == "Poisson":
        from tpp.hawkes import Poisson

        # The MLE, except that a type absent from train gets half an event (Poisson.fit refuses a zero rate,
        # which would score -inf on a test event of that type).
        counts = np.bincount(train.mark[train.mask].cpu().numpy(), minlength=K).astype(float)
        if np.all(counts > 0):
            return Poisson(K).fit(train), info
        info["note"] = f"{int((counts == 0).sum())} of {K} types absent from train: half an event each"
        return Poisson.from_params(np.maximum(counts, 0.5) / float(train.duration.sum())), info
    if name == "ExpHawkes":
        from tpp.hawkes import ExpHawkes

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ExpHawkes(K, decay=None).fit(train)
        return model, info
    cls = getattr(tpp.neural, name)
    torch.manual_seed(seed)
    model = cls(num_marks=K, hidden_size=opts.hidden_size)
    result = fit(model, train, val, epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr, seed=seed,
                 progress=False)
    info.update(epochs_run=len(result.history), best_epoch=result.best_epoch,
                train_events_per_second=result.train_events_per_second)
    return model, info


def prediction_chunk(model: Any, test: EventBatch) -> int:
    """Histories per ``predict`` call: its intensity tensors are about ``chunk x 1280 x K``."""
    # At least 8: RMTPP, FullyNN and IntensityFree (GRU encoders) raise on a batch whose histories are all
    # empty ("Expected sequence length to be larger than 0 in RNN"); a chunk of one empty history is such a batch.
    return int(np.clip(EVAL_ELEMENTS // (1280 * max(test.num_marks, 1)), 8, 256))


def run_one(name: str, dataset: str, data: dict[str, Any], opts: Options, seed: int) -> dict[str, Any]:
    row: dict[str, Any] = {"model": name, "dataset": dataset, "seed": seed, "num_marks": data["num_marks"],
                           "train_sequences": len(data["train"]), "train_events": data["train"].num_events,
                           "test_events": data["test"].num_events, "time_scale": data["scale"],
                           "units": data["units"]}
    t0 = time.perf_counter()
    model, info = build_and_fit(name, data, opts, seed)
    row.update(info)
    row["fit_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    log_scale = math.log(data["scale"])
    row["ll_per_event"] = test_log_likelihood(model, data["test"]) - log_scale
    cap = opts.max_predictions
    if opts.quick and data["num_marks"] > 1000:
        cap = min(cap, opts.quick_many_types[2])
    forecasts = next_event_metrics(model, data["test"], max_prefixes=cap, seed=seed,
                                   chunk=prediction_chunk(model, data["test"]))
    row["rmse"] = forecasts["rmse"] * data["scale"]
    row["accuracy"] = forecasts["accuracy"]
    row["num_predictions"] = forecasts["num_predictions"]
    row["eval_seconds"] = time.perf_counter() - t0
    row["status"] = "ok"
    return row


# --------------------------------------------------------------------------- results files
def read_runs(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame(columns=list(RUN_FIELDS))
    return pd.read_csv(path, dtype={"config": str})


def append_run(path: Path, row: dict[str, Any]) -> None:
    """One CSV line per finished run, written in one call and flushed (a kill loses at most the run in flight)."""
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(RUN_FIELDS), extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in RUN_FIELDS})
        f.flush()
        os.fsync(f.fileno())


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    ok = runs[runs["status"] == "ok"].copy()
    for column in ("ll_per_event", "rmse", "accuracy"):
        ok[column] = pd.to_numeric(ok[column], errors="coerce")
    grouped = ok.groupby(["dataset", "model"])
    table = grouped.agg(
        ll_mean=("ll_per_event", "mean"), ll_std=("ll_per_event", "std"),
        rmse_mean=("rmse", "mean"), rmse_std=("rmse", "std"),
        accuracy_mean=("accuracy", "mean"), accuracy_std=("accuracy", "std"),
        seeds=("seed", "nunique"), num_marks=("num_marks", "first"), units=("units", "first"),
        fit_seconds=("fit_seconds", "mean"),
    ).reset_index()
    return table


def cell(mean: float, std: float, digits: int = 3) -> str:
    if mean is None or not np.isfinite(mean):
        return "-"
    if std is None or not np.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def rmse_cell(mean: float, std: float) -> str:
    if mean is None or not np.isfinite(mean):
        return "-"
    text = f"{mean:.4g}"
    return text if std is None or not np.isfinite(std) else f"{text} ± {std:.2g}"


def markdown(table: pd.DataFrame, runs: pd.DataFrame, models: list[str], names: list[str], notes: list[str],
             opts: Options, command: str, env: dict[str, Any]) -> str:
    lines = ["# Test log-likelihood, next-time RMSE and mark accuracy: every model x the registry's event datasets", ""]
    lines.append(f"Produced by `{command}` on {time.strftime('%Y-%m-%d')} "
                 f"({env['cpu']}, {env['cpu_count']} cores, torch {env['torch']}, one thread).")
    lines.append("")
    mode = "quick" if opts.quick else "full"
    lines.append(
        f"Mode **{mode}**: seeds {list(opts.seeds)}, {opts.epochs} epochs (early stopping on validation), batch "
        f"{opts.batch_size}, lr {opts.lr:g}, hidden size {opts.hidden_size}; at most "
        f"{opts.max_train_sequences or 'all'} train / {opts.max_eval_sequences or 'all'} val and test sequences, "
        f"each cut to {opts.max_events or 'all'} events; {opts.max_predictions} forecasts per test split"
        + (f" (datasets with over 1000 types: {opts.quick_many_types[0]} sequences of {opts.quick_many_types[1]} "
           f"events per split, {opts.quick_many_types[2]} forecasts). " if opts.quick else ". ")
        + "Log-likelihood per event (nats, higher is better) by our integrator with "
        f"{EVAL_POINTS} Gauss-Legendre nodes per inter-event interval (closed forms where a model has one), "
        "survival term to each window's end included; "
        + ("times divided by the training split's mean gap for fitting, numbers reported back in the data's units. "
           if opts.rescale else "times in the data's units. ")
        + "Cells: mean ± std over seeds. Accuracy is '-' for single-type datasets (1 by construction)."
    )
    lines.append("")
    for metric, title in (("ll", "Test log-likelihood per event"), ("rmse", "Next-time RMSE (data units)"),
                          ("accuracy", "Next-mark accuracy")):
        lines.append(f"## {title}")
        lines.append("")
        lines.append("| dataset (K, units) | " + " | ".join(models) + " |")
        lines.append("|---" * (len(models) + 1) + "|")
        for name in names:
            sub = table[table["dataset"] == name].set_index("model")
            if sub.empty:
                lines.append(f"| {name} | " + " | ".join("-" for _ in models) + " |")
                continue
            K = int(sub["num_marks"].iloc[0])
            units = str(sub["units"].iloc[0]).split("(")[0].strip()
            cells = []
            best = sub["ll_mean"].max() if metric == "ll" else None
            for m in models:
                if m not in sub.index:
                    cells.append("-")
                    continue
                r = sub.loc[m]
                if metric == "ll":
                    text = cell(r["ll_mean"], r["ll_std"])
                    cells.append(f"**{text}**" if np.isclose(r["ll_mean"], best) else text)
                elif metric == "rmse":
                    cells.append(rmse_cell(r["rmse_mean"], r["rmse_std"]))
                else:
                    cells.append("-" if K == 1 else cell(r["accuracy_mean"], r["accuracy_std"]))
            lines.append(f"| {name} ({K}, {units}) | " + " | ".join(cells) + " |")
        lines.append("")
    failed = runs[(runs["status"] != "ok") | (runs["note"].fillna("").astype(str) != "")]
    if notes or not failed.empty:
        lines.append("## Notes")
        lines.append("")
        lines.extend(f"- {n}" for n in notes)
        for _, r in failed.drop_duplicates(["model", "dataset", "status", "note"]).iterrows():
            status = "" if r["status"] == "ok" else f"{r['status']}: "
            lines.append(f"- {r['model']} on {r['dataset']} (seed {r['seed']}): {status}{r['note']}")
        lines.append("")
    timing = table.groupby("model")["fit_seconds"].sum()
    lines.append("Fit seconds summed over datasets (mean over seeds): "
                 + ", ".join(f"{m} {timing[m]:.0f}" for m in models if m in timing.index) + ".")
    lines.append("")
    return "\n".join(lines)


def plot(table: pd.DataFrame, models: list[str], names: list[str], path: Path) -> None:
    import matplotlib.pyplot as plt

    from tpp.plot import save_figure

    shown = [n for n in names if n in set(table["dataset"])]
    if not shown:
        return
    cols = 5
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.9 * rows), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, name in zip(axes.flat, shown):
        sub = table[table["dataset"] == name].set_index("model")
        base = sub["ll_mean"].get("Poisson", np.nan)
        present = [m for m in models if m in sub.index]
        values = [sub.loc[m, "ll_mean"] - (base if np.isfinite(base) else 0.0) for m in present]
        errors = [0.0 if not np.isfinite(sub.loc[m, "ll_std"]) else sub.loc[m, "ll_std"] for m in present]
        ax.bar(range(len(present)), values, yerr=errors, color=[colors(models.index(m) % 10) for m in present])
        ax.set_xticks(range(len(present)), present, rotation=60, fontsize=7)
        ax.axhline(0, color="k", lw=0.6)
        if values and np.nanmax(np.abs(values)) > 20:  # some models thousands of nats below (wikipedia, quick)
            ax.set_yscale("symlog", linthresh=1.0)
        ax.set_title(name, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.suptitle("test log-likelihood per event minus Poisson's (nats; higher is better)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def environment() -> dict[str, Any]:
    return base_environment()



# --------------------------------------------------------------------------- CLI
app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


@app.command()
def main(
    quick: Annotated[bool, typer.Option(help="2 seeds, 5 epochs, small cut data: about 10 minutes.")] = False,
    models: Annotated[str, typer.Option(help="Comma-separated models.")] = ",".join(NEURAL_MODELS + CLASSIC_MODELS),
    dataset_names: Annotated[str, typer.Option("--datasets", help="Comma-separated datasets.")] = ",".join(DATASETS),
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds (default 0,1,2; --quick 0,1).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Neural training epochs (default 30; --quick 5).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Sequences per minibatch (default 32; --quick 16).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default 3e-3; --quick 1e-2).")] = None,
    hidden_size: Annotated[int, typer.Option(help="Hidden size of the neural models.")] = 32,
    max_predictions: Annotated[int | None, typer.Option(help="Forecasts per test split (default 1000; --quick 100).")] = None,
    rescale: Annotated[bool, typer.Option(help="Divide times by the training split's mean gap for fitting.")] = True,
    max_hawkes_marks: Annotated[int, typer.Option(help="Skip ExpHawkes above this many types.")] = 100,
    out_dir: Annotated[Path, typer.Option(help="Runs CSV, summary CSV, PNG and Markdown.")] = DEFAULT_OUT_DIR,
    markdown_path: Annotated[Path, typer.Option("--markdown", help="Also write the Markdown table here.")] = DEFAULT_MARKDOWN,
) -> None:
    """Fit every model on every dataset (resumable); write the table as CSV, Markdown and PNG."""
    opts = Options(
        quick=quick,
        seeds=tuple(int(s) for s in (seeds or ("0,1" if quick else "0,1,2")).split(",") if s.strip()),
        epochs=epochs or (5 if quick else 30),
        batch_size=batch_size or (16 if quick else 32),
        lr=lr or (1e-2 if quick else 3e-3),
        hidden_size=hidden_size,
        max_train_sequences=64 if quick else None,
        max_eval_sequences=32 if quick else None,
        max_events=64 if quick else None,
        max_predictions=max_predictions or (100 if quick else 1000),
        rescale=rescale,
        max_hawkes_marks=max_hawkes_marks,
    )
    wanted = [m.strip() for m in models.split(",") if m.strip()]
    unknown = sorted(set(wanted) - set(NEURAL_MODELS + CLASSIC_MODELS))
    if unknown:
        raise typer.BadParameter(f"unknown models {unknown}")
    names = [d.strip() for d in dataset_names.split(",") if d.strip()]
    notes: list[str] = []
    available = []
    for m in wanted:
        if m in NEURAL_MODELS and getattr(tpp.neural, m, None) is None:
            notes.append(f"{m}: not exported by tpp.neural yet, skipped")
        else:
            available.append(m)
    command = reproduce_command(__file__)
    env = environment()
    print(f"reproduce: cd {shlex.quote(str(REPO))} && {command}")
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    print(f"threads: {' '.join(f'{k}={v}' for k, v in SINGLE_THREAD_ENV.items())}, torch.set_num_threads(1)")
    for n in notes:
        print(f"note: {n}")
    out_dir = out_dir.expanduser().resolve()
    runs_path = out_dir / "likelihood_table_runs.csv"
    key = opts.key()
    runs = read_runs(runs_path)
    finished = runs[(runs["config"] == key) & runs["status"].isin(["ok", "skipped"])]  # errors are retried
    done = {(r.model, r.dataset, int(r.seed)) for r in finished.itertuples()}
    print(f"config {key}: {opts}; {len(done)} runs already in {runs_path}")
    started = time.perf_counter()
    for dataset in names:
        todo = [(m, s) for m in available for s in opts.seeds if (m, dataset, s) not in done]
        if not todo:
            continue
        try:
            data = load_dataset(dataset, opts)
        except Exception as exc:  # noqa: BLE001 - a missing dataset is reported, the others go on
            notes.append(f"{dataset}: loading failed ({type(exc).__name__}: {exc})"[:300])
            print(f"[{dataset}] loading failed: {exc}")
            continue
        K = data["num_marks"]
        print(f"[{dataset}] K={K}, train {len(data['train'])} sequences / {data['train'].num_events:,} events, "
              f"test {data['test'].num_events:,} events, time scale {data['scale']:.4g} {data['units']}", flush=True)
        for m, s in todo:
            base = {"config": key, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
            if m == "ExpHawkes" and K > opts.max_hawkes_marks:
                row = {**base, "model": m, "dataset": dataset, "seed": s, "status": "skipped", "num_marks": K,
                       "note": f"{K} types: {K * K:,} kernels (--max-hawkes-marks {opts.max_hawkes_marks})"}
            else:
                t0 = time.perf_counter()
                try:
                    row = {**base, **run_one(m, dataset, data, opts, s)}
                except Exception as exc:  # noqa: BLE001 - one failing model must not stop the table
                    print("".join(traceback.format_exception(exc)[-3:])[:1000])
                    row = {**base, "model": m, "dataset": dataset, "seed": s, "status": "error", "num_marks": K,
                           "note": f"{type(exc).__name__}: {exc}"[:300], "fit_seconds": time.perf_counter() - t0}
            append_run(runs_path, row)
            if row["status"] == "ok":
                acc = "" if K == 1 else f", accuracy {row['accuracy']:.3f}"
                print(f"  {m:>13} seed {s}: ll/event {row['ll_per_event']:.4f}, rmse {row['rmse']:.4g}{acc} "
                      f"(fit {row['fit_seconds']:.1f} s, eval {row['eval_seconds']:.1f} s)", flush=True)
            else:
                print(f"  {m:>13} seed {s}: {row['status']}: {row['note']}", flush=True)
    print(f"runs took {time.perf_counter() - started:.0f} s")

    runs = read_runs(runs_path)
    runs = runs[(runs["config"] == key) & runs["model"].isin(available) & runs["dataset"].isin(names)
                & runs["seed"].astype(int).isin(opts.seeds)]
    table = summarise(runs)
    with atomic_write(out_dir / "likelihood_table.csv", ".csv") as tmp:
        table.to_csv(tmp, index=False)
        tmp.chmod(0o644)  # atomic_write's temporary file is private (0600)
    text = markdown(table, runs, available, names, notes, opts, command, env)
    for path in (out_dir / "likelihood_table.md", markdown_path.expanduser().resolve()):
        with atomic_write(path, ".md") as tmp:
            tmp.write_text(text)
            tmp.chmod(0o644)
    plot(table, available, names, out_dir / "likelihood_table.png")
    (out_dir / "likelihood_table.png").chmod(0o644)
    print(f"\n{text}")
    print(f"written: {runs_path}, {out_dir / 'likelihood_table.csv'}, {out_dir / 'likelihood_table.png'}, "
          f"{markdown_path}")


if __name__ == "__main__":
    app()
