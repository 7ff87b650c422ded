"""Benchmark suites on the registry's real data: the logic behind ``tpp bench`` and ``benchmarks/*.py``.

Suite :attr:`Suite.LIKELIHOOD` (:func:`run_likelihood`): every model x every event dataset x seeds.

* Models: every neural TPP :mod:`tpp.neural` exports (found at run time, so a new model joins the
  table without edits here) and the classic :class:`~tpp.hawkes.Poisson`, :class:`~tpp.hawkes.ExpHawkes`
  (decay learned) and :class:`~tpp.hawkes.SumExpHawkes` (three decays learned); the Hawkes models
  are skipped above ``max_hawkes_marks`` types, where their ``K x K`` kernels stop being a baseline.
* Datasets: :data:`DATASETS`, with the registry's splits (a card without a validation split gets
  15% of its training sequences, seeded).
* Per (model, dataset, seed), one *cell*: fit on train (neural: :func:`tpp.fit` with early stopping
  on validation; classic: exact MLE), then the test log-likelihood per event with a fine integrator,
  :data:`EVAL_POINTS` Gauss-Legendre nodes on every inter-event interval (closed forms where a model
  has one), survival term to each window's end included, and next-event forecasts
  (:func:`tpp.metrics.next_event_metrics`: RMSE of the predicted mean time, mark accuracy).
* Times are shifted to each window's start and divided by the training split's mean gap ``c``
  before fitting; numbers are reported back in the data's units (log-likelihood ``- log c`` per
  event, RMSE ``x c``).
* Resumable: each finished cell is one JSON file, written atomically, under
  ``<out>/cells/<config key>/``; a rerun with the same configuration skips finished cells (failed
  ones are retried), so an interrupted run loses at most the cell in flight.
* Outputs in ``<out>``: ``likelihood_runs.csv`` (one row per cell), ``likelihood_table.csv`` (mean
  and std over seeds), ``likelihood_table.md``, ``likelihood_ll.png``, ``likelihood_rmse.png``,
  ``likelihood_accuracy.png`` and ``environment.json`` (versions, device, seeds, git commit, thread
  settings, the integrator).
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from tpp import datasets as registry
from tpp.compensator import gauss_legendre, interval_bounds
from tpp.events import EventBatch
from tpp.io import atomic_write

__all__ = [
    "Suite", "CellStatus", "LikelihoodConfig", "BenchData", "BenchReport", "DATASETS", "CLASSIC_MODELS",
    "EVAL_POINTS", "neural_model_names", "all_model_names", "truncate", "subsample", "rescaled", "mean_gap",
    "load_dataset", "test_log_likelihood", "fit_model", "run_cell", "run_likelihood", "run_suite",
    "read_cells", "summarise", "likelihood_markdown", "environment", "default_command",
]


class Suite(str, enum.Enum):
    """What ``tpp bench --suite`` runs. More suites (neural-vs-easytpp, hawkes-vs-tick) join here."""

    LIKELIHOOD = "likelihood"  #: every model x the registry's event datasets: :func:`run_likelihood`


class CellStatus(str, enum.Enum):
    """Outcome of one (model, dataset, seed) cell."""

    OK = "ok"
    SKIPPED = "skipped"  #: by rule (e.g. a Hawkes model on too many types); not retried
    ERROR = "error"  #: retried by the next run


#: Gauss-Legendre nodes per inter-event interval when scoring test data: fine enough that no grid decides the
#: ranking (EasyTPP's 20-point linspace lets models exploit the grid; see /work/shared/PEERS.md).
EVAL_POINTS = 64
#: elements of one ``[B, T, K]`` intensity tensor allowed while scoring (sets chunk sizes)
EVAL_ELEMENTS = 4_000_000
CLASSIC_MODELS = ("Poisson", "ExpHawkes", "SumExpHawkes")
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
RUN_FIELDS = (
    "config", "model", "dataset", "seed", "status", "note", "ll_per_event", "rmse", "accuracy",
    "num_predictions", "epochs_run", "best_epoch", "fit_seconds", "eval_seconds", "train_events_per_second",
    "train_sequences", "train_events", "test_events", "num_marks", "time_scale", "units", "eval_points", "created",
    "git_commit",
)


def neural_model_names() -> tuple[str, ...]:
    """Every concrete neural TPP :mod:`tpp.neural` exports, in its ``__all__`` order."""
    import tpp.neural
    from tpp.neural.base import NeuralTPP

    names = []
    for name in getattr(tpp.neural, "__all__", ()):
        cls = getattr(tpp.neural, name, None)
        if isinstance(cls, type) and issubclass(cls, NeuralTPP) and cls is not NeuralTPP and not name.startswith("_"):
            names.append(name)
    return tuple(names)


def all_model_names() -> tuple[str, ...]:
    """Neural models first, then the classic baselines (the table's column order)."""
    return neural_model_names() + CLASSIC_MODELS


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class LikelihoodConfig:
    """Settings of the likelihood suite. Two runs reuse each other's cells only when all fields but ``seeds`` agree."""

    quick: bool = False
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 30
    batch_size: int = 32
    lr: float = 3e-3
    hidden_size: int = 32
    max_train_sequences: int | None = None
    max_eval_sequences: int | None = None
    max_events: int | None = None
    max_predictions: int = 1000
    rescale: bool = True
    max_hawkes_marks: int = 100
    #: above 1000 types (wikipedia, 8227) in quick mode: (sequences per split, events per sequence, forecasts);
    #: every intensity model evaluates all per-type intensities at every node, so cost ~ events x nodes x K
    quick_many_types: tuple[int, int, int] = (8, 16, 8)
    eval_points: int = EVAL_POINTS

    @classmethod
    def preset(cls, quick: bool = False, **overrides: Any) -> LikelihoodConfig:
        """The full setting (3 seeds, 30 epochs, whole datasets) or ``quick`` (3 seeds, 5 epochs, at most
        64/32/32 train/val/test sequences cut to 64 events, 100 forecasts); ``overrides`` that are not None win."""
        base = cls(quick=True, seeds=(0, 1, 2), epochs=5, batch_size=16, lr=1e-2, max_train_sequences=64,
                   max_eval_sequences=32, max_events=64, max_predictions=100) if quick else cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown benchmark settings {unknown}; known: {sorted(known)}")
        chosen = {k: v for k, v in overrides.items() if v is not None}
        if "seeds" in chosen:
            chosen["seeds"] = tuple(int(s) for s in chosen["seeds"])
        config = replace(base, **chosen)
        config.validate()
        return config

    def validate(self) -> None:
        if not self.seeds:
            raise ValueError("at least one seed is needed")
        for name in ("epochs", "batch_size", "hidden_size", "max_predictions", "eval_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    def key(self) -> str:
        """Ten hex digits naming everything that makes two runs of one cell comparable (all but the seeds)."""
        values = {k: v for k, v in asdict(self).items() if k != "seeds"}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]

    def describe(self) -> str:
        """One paragraph for the Markdown output."""
        mode = "quick" if self.quick else "full"
        text = (f"Mode **{mode}**: seeds {list(self.seeds)}, {self.epochs} epochs (early stopping on validation), batch "
                f"{self.batch_size}, lr {self.lr:g}, hidden size {self.hidden_size}; at most "
                f"{self.max_train_sequences or 'all'} train / {self.max_eval_sequences or 'all'} val and test sequences, "
                f"each cut to {self.max_events or 'all'} events; {self.max_predictions} forecasts per test split")
        if self.quick:
            n, L, f = self.quick_many_types
            text += f" (datasets with over 1000 types: {n} sequences of {L} events per split, {f} forecasts)"
        text += (f". Log-likelihood per event (nats, higher is better) by our integrator with {self.eval_points} "
                 "Gauss-Legendre nodes per inter-event interval (closed forms where a model has one), survival term "
                 "to each window's end included; ")
        text += ("times divided by the training split's mean gap for fitting, numbers reported back in the data's "
                 "units. " if self.rescale else "times in the data's units. ")
        return text + "Cells: mean ± std over seeds. Accuracy is '-' for single-type datasets (1 by construction)."


# --------------------------------------------------------------------------- data
def truncate(batch: EventBatch, max_events: int | None) -> EventBatch:
    """Each sequence cut to its first ``max_events`` events; the window then ends halfway to the next event."""
    if max_events is None or len(batch) == 0 or int(batch.lengths.max()) <= max_events:
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
    """At most ``limit`` sequences, drawn without replacement with ``seed``, in their original order."""
    if limit is None or len(batch) <= limit:
        return batch
    keep = np.sort(np.random.default_rng(seed).choice(len(batch), limit, replace=False))
    return batch[keep]


def rescaled(batch: EventBatch, scale: float) -> EventBatch:
    """Times shifted to start at each window's start and divided by ``scale`` (log-likelihoods move by
    ``- log scale`` per event)."""
    flat = batch.to_flat()
    seq = np.repeat(np.arange(len(batch)), np.diff(flat["seq_offsets"]))
    return EventBatch.from_flat(
        (flat["times"] - flat["t_start"][seq]) / scale, flat["seq_offsets"], np.zeros(len(batch)),
        (flat["t_end"] - flat["t_start"]) / scale, flat["marks"], batch.num_marks, dtype=batch.dtype,
    )


def mean_gap(batch: EventBatch) -> float:
    """Mean positive inter-event time (1.0 when there is none): the time unit the models are fitted in."""
    gaps = batch.inter_event_times[batch.mask]
    gaps = gaps[gaps > 0]
    return float(gaps.mean()) if gaps.numel() else 1.0


@dataclass
class BenchData:
    """One dataset as the suite uses it: rescaled splits and the scale to report numbers back in data units."""

    name: str
    train: EventBatch
    val: EventBatch
    test: EventBatch
    scale: float
    units: str
    num_marks: int


def load_dataset(name: str, config: LikelihoodConfig, data_dir: str | os.PathLike | None = None) -> BenchData:
    """Train/val/test from the registry (validation carved from train, seeded, when the card has none), cut as
    ``config`` says and divided by the training split's mean gap."""
    card = registry.card(name)
    train = registry.load(name, "train", data_dir=data_dir)
    if "val" in card.splits:
        val = registry.load(name, "val", data_dir=data_dir)
    else:
        train, val = train.split((0.85, 0.15), seed=0)
    test = registry.load(name, "test", data_dir=data_dir)
    n_train, n_eval, n_events = config.max_train_sequences, config.max_eval_sequences, config.max_events
    if config.quick and card.num_marks > 1000:
        n_train = n_eval = config.quick_many_types[0]
        n_events = config.quick_many_types[1]
    train = truncate(subsample(train, n_train, 0), n_events)
    val = truncate(subsample(val, n_eval, 1), n_events)
    test = truncate(subsample(test, n_eval, 2), n_events)
    scale = mean_gap(train) if config.rescale else 1.0
    if config.rescale:
        train, val, test = (rescaled(b, scale) for b in (train, val, test))
    return BenchData(card.name, train, val, test, scale, card.units, card.num_marks)


# --------------------------------------------------------------------------- scoring
def _uses_base_quadrature(model: Any) -> bool:
    """Neural models whose compensator is the base class's Gauss-Legendre rule (no closed form)."""
    from tpp.neural.base import NeuralTPP

    cls = type(model)
    return (isinstance(model, NeuralTPP) and cls.interval_compensator is NeuralTPP.interval_compensator
            and cls.log_likelihood is NeuralTPP.log_likelihood)


@torch.no_grad()
def _quadrature_log_likelihood(model: Any, batch: EventBatch, num_points: int) -> torch.Tensor:
    """``[B]`` the base class's log-likelihood (same nodes and weights), the intervals taken in chunks so that
    ``[B, T, K]`` intensities stay small with many types (wikipedia has 8227)."""
    from tpp.neural.base import history_index

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
def test_log_likelihood(model: Any, test: EventBatch, num_points: int = EVAL_POINTS) -> float:
    """Log-likelihood per event of ``test`` (in the units the model was fitted in), neural intensities integrated
    with ``num_points`` Gauss-Legendre nodes per interval; closed forms are used where a model has one."""
    from tpp.neural.base import NeuralTPP

    model.eval()
    if isinstance(model, NeuralTPP):
        model.num_points = num_points
    if test.num_events == 0:
        return float("nan")
    lengths = test.lengths.cpu().numpy()
    order = np.argsort(lengths, kind="stable")
    per_sequence = (int(lengths.max()) + 1) * num_points * test.num_marks
    batch_size = int(np.clip(EVAL_ELEMENTS // max(per_sequence, 1), 1, 64))
    total = 0.0
    for start in range(0, order.size, batch_size):
        part = test[order[start : start + batch_size]]
        if _uses_base_quadrature(model):
            total += float(_quadrature_log_likelihood(model, part, num_points).sum())
        else:
            total += float(model.log_likelihood(part).double().sum())
    return total / test.num_events


def _prediction_chunk(test: EventBatch) -> int:
    """Histories per ``predict`` call: its intensity tensors are about ``chunk x 1280 x K``."""
    # At least 8: RMTPP, FullyNN and IntensityFree (GRU encoders) raise on a batch whose histories are all
    # empty ("Expected sequence length to be larger than 0 in RNN"); a chunk of one empty history is such a batch.
    return int(np.clip(EVAL_ELEMENTS // (1280 * max(test.num_marks, 1)), 8, 256))


# --------------------------------------------------------------------------- one cell
def fit_model(name: str, data: BenchData, config: LikelihoodConfig, seed: int) -> tuple[Any, dict[str, Any]]:
    """A fresh model ``name`` fitted on ``data.train`` (neural: early stopping on ``data.val``) and what the fit
    reported (epochs, best epoch, events/s, notes)."""
    from tpp.hawkes import ExpHawkes, Poisson
    from tpp.report import build_model

    train, val = data.train, data.val
    K = train.num_marks
    info: dict[str, Any] = {}
    if name == "Poisson":
        # The MLE, except that a type absent from train gets half an event (Poisson.fit refuses a zero rate,
        # which would score -inf on a test event of that type).
        counts = np.bincount(train.mark[train.mask].cpu().numpy(), minlength=K).astype(float)
        if np.all(counts > 0):
            return Poisson(K).fit(train), info
        info["note"] = f"{int((counts == 0).sum())} of {K} types absent from train: half an event each"
        return Poisson.from_params(np.maximum(counts, 0.5) / float(train.duration.sum())), info
    if name in ("ExpHawkes", "SumExpHawkes"):
        model = ExpHawkes(K, decay=None) if name == "ExpHawkes" else build_model("sumexp-hawkes", K)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a branching ratio >= 1 warns; the table shows the score anyway
            model.fit(train)
        return model, info
    import tpp.neural
    from tpp.train import fit

    cls = getattr(tpp.neural, name)
    torch.manual_seed(seed)
    model = cls(num_marks=K, hidden_size=config.hidden_size)
    result = fit(model, train, val, epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, seed=seed,
                 progress=False)
    info.update(epochs_run=len(result.history), best_epoch=result.best_epoch,
                train_events_per_second=result.train_events_per_second)
    return model, info


def run_cell(name: str, data: BenchData, config: LikelihoodConfig, seed: int) -> dict[str, Any]:
    """Fit ``name`` on ``data`` with ``seed``; test log-likelihood per event, RMSE and accuracy in data units."""
    from tpp.metrics import next_event_metrics

    row: dict[str, Any] = {"model": name, "dataset": data.name, "seed": seed, "num_marks": data.num_marks,
                           "train_sequences": len(data.train), "train_events": data.train.num_events,
                           "test_events": data.test.num_events, "time_scale": data.scale, "units": data.units,
                           "eval_points": config.eval_points}
    if name in ("ExpHawkes", "SumExpHawkes") and data.num_marks > config.max_hawkes_marks:
        return {**row, "status": CellStatus.SKIPPED.value,
                "note": f"{data.num_marks} types: {data.num_marks ** 2:,} kernels (max_hawkes_marks "
                        f"{config.max_hawkes_marks})"}
    t0 = time.perf_counter()
    model, info = fit_model(name, data, config, seed)
    row.update(info)
    row["fit_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    row["ll_per_event"] = test_log_likelihood(model, data.test, config.eval_points) - math.log(data.scale)
    cap = config.max_predictions
    if config.quick and data.num_marks > 1000:
        cap = min(cap, config.quick_many_types[2])
    forecasts = next_event_metrics(model, data.test, max_prefixes=cap, seed=seed, chunk=_prediction_chunk(data.test))
    row["rmse"] = forecasts["rmse"] * data.scale
    row["accuracy"] = forecasts["accuracy"]
    row["num_predictions"] = forecasts["num_predictions"]
    row["eval_seconds"] = time.perf_counter() - t0
    row["status"] = CellStatus.OK.value
    return row


# --------------------------------------------------------------------------- cell files
def _cell_path(cells_dir: Path, model: str, dataset: str, seed: int) -> Path:
    return cells_dir / dataset / f"{model}__seed{seed}.json"


def _write_cell(path: Path, row: dict[str, Any], config: LikelihoodConfig) -> None:
    """Temp file + rename: a killed run leaves a whole cell or none."""
    payload = {"row": row, "config": asdict(config)}
    with atomic_write(path, ".json") as tmp:
        tmp.write_text(json.dumps(payload, indent=1, default=_json_default) + "\n")
        tmp.chmod(0o644)  # atomic_write's temporary file is private (0600)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def _read_cell(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())["row"]
    except (OSError, ValueError, KeyError):  # an unreadable cell is recomputed
        return None


def read_cells(out_dir: str | os.PathLike, config: LikelihoodConfig, models: Sequence[str] | None = None,
               names: Sequence[str] | None = None) -> pd.DataFrame:
    """Every finished or failed cell of ``config`` under ``out_dir`` (restricted to ``models``, ``names`` and
    ``config.seeds``), one row each, ordered by dataset, model and seed as given."""
    cells_dir = Path(out_dir) / "cells" / config.key()
    rows = []
    for path in sorted(cells_dir.glob("*/*.json")):
        row = _read_cell(path)
        if row is None or int(row["seed"]) not in config.seeds:
            continue
        if (models is not None and row["model"] not in models) or (names is not None and row["dataset"] not in names):
            continue
        rows.append({**row, "config": config.key()})
    runs = pd.DataFrame(rows, columns=list(RUN_FIELDS))
    if runs.empty:
        return runs
    model_order = {m: i for i, m in enumerate(models or sorted(set(runs["model"])))}
    data_order = {d: i for i, d in enumerate(names or sorted(set(runs["dataset"])))}
    order = np.lexsort((runs["seed"].astype(int), runs["model"].map(model_order), runs["dataset"].map(data_order)))
    return runs.iloc[order].reset_index(drop=True)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (dataset, model) of the cells that finished."""
    columns = ["dataset", "model", "ll_mean", "ll_std", "rmse_mean", "rmse_std", "accuracy_mean", "accuracy_std",
               "seeds", "num_marks", "units", "fit_seconds", "eval_points"]
    ok = runs[runs["status"] == CellStatus.OK.value].copy()
    if ok.empty:
        return pd.DataFrame(columns=columns)
    for column in ("ll_per_event", "rmse", "accuracy", "fit_seconds"):
        ok[column] = pd.to_numeric(ok[column], errors="coerce")
    table = ok.groupby(["dataset", "model"], sort=False).agg(
        ll_mean=("ll_per_event", "mean"), ll_std=("ll_per_event", "std"),
        rmse_mean=("rmse", "mean"), rmse_std=("rmse", "std"),
        accuracy_mean=("accuracy", "mean"), accuracy_std=("accuracy", "std"),
        seeds=("seed", "nunique"), num_marks=("num_marks", "first"), units=("units", "first"),
        fit_seconds=("fit_seconds", "mean"), eval_points=("eval_points", "first"),
    ).reset_index()
    return table[columns]


# --------------------------------------------------------------------------- Markdown
def _cell(mean: float, std: float, digits: int = 3) -> str:
    if mean is None or not np.isfinite(mean):
        return "-"
    if std is None or not np.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _rmse_cell(mean: float, std: float) -> str:
    if mean is None or not np.isfinite(mean):
        return "-"
    text = f"{mean:.4g}"
    return text if std is None or not np.isfinite(std) else f"{text} ± {std:.2g}"


def likelihood_markdown(table: pd.DataFrame, runs: pd.DataFrame, models: Sequence[str], names: Sequence[str],
                        config: LikelihoodConfig, notes: Sequence[str] = (), command: str | None = None,
                        env: dict[str, Any] | None = None) -> str:
    """The three tables (log-likelihood, RMSE, accuracy: datasets x models), the notes and the fit times."""
    lines = ["# Test log-likelihood, next-time RMSE and mark accuracy: every model x the registry's event datasets", ""]
    if command is not None:
        where = ""
        if env is not None:
            commit = env.get("git_commit") or "unknown commit"
            where = (f" ({env.get('cpu') or env.get('machine')}, {env.get('cpu_count')} cores, torch {env.get('torch')}, "
                     f"device {env.get('device')}, {env.get('torch_threads')} thread(s), commit {commit[:12]}"
                     + (" + local changes" if env.get("git_dirty") else "") + ")")
        lines += [f"Produced by `{command}` on {time.strftime('%Y-%m-%d')}{where}.", ""]
    lines += [config.describe(), ""]
    for metric, title in (("ll", "Test log-likelihood per event"), ("rmse", "Next-time RMSE (data units)"),
                          ("accuracy", "Next-mark accuracy")):
        lines += [f"## {title}", "", "| dataset (K, units) | " + " | ".join(models) + " |",
                  "|---" * (len(models) + 1) + "|"]
        for name in names:
            sub = table[table["dataset"] == name].set_index("model")
            if sub.empty:
                lines.append(f"| {name} | " + " | ".join("-" for _ in models) + " |")
                continue
            K = int(sub["num_marks"].iloc[0])
            units = str(sub["units"].iloc[0]).split("(")[0].strip()
            best = sub["ll_mean"].max()
            cells = []
            for m in models:
                if m not in sub.index:
                    cells.append("-")
                    continue
                r = sub.loc[m]
                if metric == "ll":
                    text = _cell(r["ll_mean"], r["ll_std"])
                    cells.append(f"**{text}**" if np.isclose(r["ll_mean"], best) else text)
                elif metric == "rmse":
                    cells.append(_rmse_cell(r["rmse_mean"], r["rmse_std"]))
                else:
                    cells.append("-" if K == 1 else _cell(r["accuracy_mean"], r["accuracy_std"]))
            lines.append(f"| {name} ({K}, {units}) | " + " | ".join(cells) + " |")
        lines.append("")
    has_note = runs["note"].map(lambda v: isinstance(v, str) and v != "").astype(bool)
    flagged = runs[(runs["status"] != CellStatus.OK.value) | has_note]
    if notes or not flagged.empty:
        lines += ["## Notes", ""]
        lines += [f"- {n}" for n in notes]
        for _, r in flagged.drop_duplicates(["model", "dataset", "status", "note"]).iterrows():
            status = "" if r["status"] == CellStatus.OK.value else f"{r['status']}: "
            lines.append(f"- {r['model']} on {r['dataset']} (seed {r['seed']}): {status}{r['note']}")
        lines.append("")
    if not table.empty:
        timing = table.groupby("model")["fit_seconds"].sum()
        total = float(pd.to_numeric(runs["fit_seconds"], errors="coerce").fillna(0).sum()
                      + pd.to_numeric(runs["eval_seconds"], errors="coerce").fillna(0).sum())
        lines += ["Fit seconds summed over datasets (mean over seeds): "
                  + ", ".join(f"{m} {timing[m]:.0f}" for m in models if m in timing.index)
                  + f". Fit and evaluation of all {len(runs)} cells: {total:.0f} s (wall clock on a shared machine: noisy).",
                  ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- environment
def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parents[1]
    try:
        # No optional locks: reading the status must never write the index of a tree others are working in.
        res = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20, check=False,
                             env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str = "cpu", config: LikelihoodConfig | None = None) -> dict[str, Any]:
    """Versions, machine, device, thread settings, git commit and (with ``config``) the seeds and integrator."""
    import numba
    import scipy

    import tpp

    status = _git("status", "--porcelain", "--untracked-files=no")
    env: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(), "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(), "device": device,
        "cuda": torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else None,
        "tpp": tpp.__version__, "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
        "pandas": pd.__version__, "numba": numba.__version__,
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "numba_threads": numba.get_num_threads(),
        "threads_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                      "NUMBA_NUM_THREADS")},
        "git_commit": _git("rev-parse", "HEAD"), "git_dirty": None if status is None else bool(status),
        "data_dir": os.environ.get("TPP_DATA_DIR"),
    }
    if config is not None:
        env["seeds"] = list(config.seeds)
        env["config"] = asdict(config)
        env["config_key"] = config.key()
        env["integrator"] = {"rule": "Gauss-Legendre", "nodes_per_interval": config.eval_points,
                             "closed_forms": "RMTPP, FullyNN, IntensityFree, Poisson, ExpHawkes, SumExpHawkes",
                             "survival_term": "to each window's end"}
    return env


def default_command() -> str:
    """The command line of this process, as a person would type it."""
    return shlex.join([Path(sys.argv[0]).name or "python", *sys.argv[1:]])


# --------------------------------------------------------------------------- the suite
@dataclass
class BenchReport:
    """What a suite run produced: the per-cell rows, the summary table, the Markdown and the files written."""

    out_dir: Path
    runs: pd.DataFrame
    table: pd.DataFrame
    markdown: str
    files: dict[str, Path]
    computed: list[tuple[str, str, int]] = field(default_factory=list)  #: cells run by this call
    reused: list[tuple[str, str, int]] = field(default_factory=list)  #: cells found finished
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _check_names(models: Sequence[str] | None, names: Sequence[str] | None) -> tuple[list[str], list[str]]:
    known = all_model_names()
    models = list(models) if models else list(known)
    unknown = [m for m in models if m not in known]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}: choose from {', '.join(known)}")
    names = [registry.card(n).name for n in (names or DATASETS)]  # aliases accepted; an unknown name raises
    return models, list(dict.fromkeys(names))


def run_likelihood(
    out_dir: str | os.PathLike,
    config: LikelihoodConfig | None = None,
    models: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    *,
    command: str | None = None,
    device: str = "cpu",
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> BenchReport:
    """Run (or resume) the likelihood suite into ``out_dir`` and write its tables, plots and environment record.

    ``models``: names from :func:`all_model_names` (default all); ``names``: registry datasets (default
    :data:`DATASETS`; aliases accepted). Cells already finished in ``out_dir`` for the same configuration are
    read, not recomputed. ``echo`` receives one line per finished cell (default: written above the tqdm bar).
    """
    config = config or LikelihoodConfig.preset()
    config.validate()
    if device != "cpu":
        raise ValueError(f"device {device!r}: the likelihood suite runs on the CPU only for now")
    models, names = _check_names(models, names)
    echo = echo or (lambda line: tqdm.write(line, file=sys.stderr))
    out_dir = Path(out_dir).expanduser().resolve()
    cells_dir = out_dir / "cells" / config.key()
    command = command or default_command()
    env = environment(device, config)
    files = {"environment": out_dir / "environment.json"}
    _write_json(files["environment"], {**env, "command": command, "models": models, "datasets": names})

    todo, reused = [], []
    for dataset in names:
        for model in models:
            for seed in config.seeds:
                row = _read_cell(_cell_path(cells_dir, model, dataset, seed))
                finished = row is not None and row.get("status") in (CellStatus.OK.value, CellStatus.SKIPPED.value)
                (reused if finished else todo).append((model, dataset, seed))
    echo(f"config {config.key()}: {len(reused)} of {len(todo) + len(reused)} cells already in {cells_dir}")
    started = time.perf_counter()
    notes: list[str] = []
    failed_datasets: set[str] = set()
    loaded: BenchData | None = None
    computed = []
    bar = tqdm(todo, desc=f"bench {Suite.LIKELIHOOD.value}", unit="cell", disable=not progress, file=sys.stderr)
    for model, dataset, seed in bar:
        if dataset in failed_datasets:
            continue
        bar.set_postfix_str(f"{dataset} {model} seed {seed}")
        if loaded is None or loaded.name != dataset:
            loaded = None  # free the previous dataset first
            try:
                loaded = load_dataset(dataset, config, data_dir)
            except Exception as exc:  # noqa: BLE001 - a missing dataset is reported, the others go on
                failed_datasets.add(dataset)
                notes.append(f"{dataset}: loading failed ({type(exc).__name__}: {exc})"[:300])
                echo(f"[{dataset}] loading failed: {exc}")
                continue
            echo(f"[{dataset}] K={loaded.num_marks}, train {len(loaded.train)} sequences / "
                 f"{loaded.train.num_events:,} events, test {loaded.test.num_events:,} events, "
                 f"time scale {loaded.scale:.4g} {loaded.units}")
        base = {"config": config.key(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "git_commit": env["git_commit"]}
        t0 = time.perf_counter()
        try:
            row = {**base, **run_cell(model, loaded, config, seed)}
        except Exception as exc:  # noqa: BLE001 - one failing model must not stop the table
            echo("".join(traceback.format_exception(exc)[-3:])[:1000])
            row = {**base, "model": model, "dataset": dataset, "seed": seed, "status": CellStatus.ERROR.value,
                   "num_marks": loaded.num_marks, "note": f"{type(exc).__name__}: {exc}"[:300],
                   "fit_seconds": time.perf_counter() - t0}
        _write_cell(_cell_path(cells_dir, model, dataset, seed), row, config)
        computed.append((model, dataset, seed))
        if row["status"] == CellStatus.OK.value:
            acc = "" if loaded.num_marks == 1 else f", accuracy {row['accuracy']:.3f}"
            echo(f"  {model:>13} {dataset} seed {seed}: ll/event {row['ll_per_event']:.4f}, rmse {row['rmse']:.4g}"
                 f"{acc} (fit {row['fit_seconds']:.1f} s, eval {row['eval_seconds']:.1f} s)")
        else:
            echo(f"  {model:>13} {dataset} seed {seed}: {row['status']}: {row['note']}")
    bar.close()
    seconds = time.perf_counter() - started

    runs = read_cells(out_dir, config, models, names)
    table = summarise(runs)
    markdown = likelihood_markdown(table, runs, models, names, config, notes, command, env)
    files.update(_write_outputs(out_dir, runs, table, markdown, models, names))
    _write_json(files["environment"], {**env, "command": command, "models": models, "datasets": names,
                                       "cells_computed": len(computed), "cells_reused": len(reused),
                                       "run_seconds": seconds,
                                       "cell_commits": sorted(set(runs["git_commit"].dropna().astype(str)))})
    return BenchReport(out_dir, runs, table, markdown, files, computed, reused, seconds, notes)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    with atomic_write(path, ".json") as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
        tmp.chmod(0o644)


def _write_outputs(out_dir: Path, runs: pd.DataFrame, table: pd.DataFrame, markdown: str, models: Sequence[str],
                   names: Sequence[str]) -> dict[str, Path]:
    """CSVs, Markdown and the three PNGs, each atomically."""
    from tpp import plot

    files = {"runs": out_dir / "likelihood_runs.csv", "table": out_dir / "likelihood_table.csv",
             "markdown": out_dir / "likelihood_table.md"}
    for key, frame in (("runs", runs), ("table", table)):
        with atomic_write(files[key], ".csv") as tmp:
            frame.to_csv(tmp, index=False)
            tmp.chmod(0o644)
    with atomic_write(files["markdown"], ".md") as tmp:
        tmp.write_text(markdown)
        tmp.chmod(0o644)
    if table.empty:
        return files
    single = set(table.loc[table["num_marks"] == 1, "dataset"])
    figures = {
        "plot_ll": ("likelihood_ll.png", plot.plot_benchmark(
            table, "ll", models=models, datasets=names, relative_to="Poisson",
            title="test log-likelihood per event minus Poisson's (nats, higher is better)\nmean ± std over seeds; "
                  f"{int(table['eval_points'].iloc[0])} Gauss-Legendre nodes per inter-event interval")),
        "plot_rmse": ("likelihood_rmse.png", plot.plot_benchmark(
            table, "rmse", models=models, datasets=names,
            title="next-time RMSE (data units, lower is better)\nmean ± std over seeds")),
    }
    if set(names) - single:
        figures["plot_accuracy"] = ("likelihood_accuracy.png", plot.plot_benchmark(
            table, "accuracy", models=models, datasets=[n for n in names if n not in single],
            title="next-mark accuracy (higher is better)\nmean ± std over seeds; single-type datasets left out"))
    for key, (filename, fig) in figures.items():
        files[key] = plot.save_figure(fig, out_dir / filename)
        files[key].chmod(0o644)
    return files


def run_suite(suite: Suite | str, out_dir: str | os.PathLike, quick: bool = False, **options: Any) -> BenchReport:
    """Dispatch on :class:`Suite`; ``options`` go to the suite's runner (for likelihood: config fields, ``models``,
    ``names``, ``command``, ``device``, ``data_dir``, ``progress``, ``echo``)."""
    suite = Suite(suite)
    if suite is Suite.LIKELIHOOD:
        run_keys = {"models", "names", "command", "device", "data_dir", "progress", "echo"}
        run_options = {k: options.pop(k) for k in list(options) if k in run_keys}
        return run_likelihood(out_dir, LikelihoodConfig.preset(quick, **options), **run_options)
    raise ValueError(f"suite {suite.value!r} has no runner yet")  # pragma: no cover - every member is handled
