"""The likelihood suite: every model x every event dataset x seeds, one resumable cell each.

Models are named by the model table (:mod:`tpp.table`): the suite runs every ``tpp`` model that the data
alone can build (the neural TPPs, Poisson, ExpHawkes, SumExpHawkes; FaDIn and the nonparametric EM need a
kernel support) and names cells and table columns by the table's display names (``"RMTPP"``); CLI names
(``"rmtpp"``) are accepted too.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from tpp import datasets as registry
from tpp import table as model_table
from tpp.bench.cells import CellStatus, cell_path, read_cell, read_cells, write_cell, write_json
from tpp.bench.config import DATASETS, LikelihoodConfig
from tpp.bench.data import PUBLISHED_SPLITS, BenchData, current_protocol, load_dataset
from tpp.bench.environment import default_command, environment
from tpp.bench.published import published_line
from tpp.bench.scoring import prediction_chunk, test_ifl_time_log_likelihood, test_log_likelihood, test_rescaling_ks
from tpp.bench.tables import likelihood_markdown, summarise, write_outputs
from tpp.table import Family, Training

__all__ = ["CLASSIC_MODELS", "neural_model_names", "all_model_names", "fit_cell", "run_cell", "skip_reason",
           "BenchReport", "run_likelihood"]

SUITE = "likelihood"  #: the suite's name (:class:`tpp.bench.Suite` member value), shown on the progress bar


# --------------------------------------------------------------------------- models (from the table)
def _suite_specs(training: Training) -> tuple[model_table.ModelSpec, ...]:
    """The table's tpp models of one kind that the data alone can build (no required argument, no feature
    column: :attr:`tpp.table.ModelSpec.needs`)."""
    return tuple(s for s in model_table.specs(Family.TPP, training) if not s.required and not s.needs)


#: display names of the classic baselines, in table order: ``("Poisson", "ExpHawkes", "SumExpHawkes", ...)``
CLASSIC_MODELS: tuple[str, ...] = tuple(s.display for s in _suite_specs(Training.ESTIMATOR))


def neural_model_names() -> tuple[str, ...]:
    """Display names of the table's neural TPPs (trained models of the tpp family), in table order."""
    return tuple(s.display for s in _suite_specs(Training.TRAINER))


def all_model_names() -> tuple[str, ...]:
    """Neural models first, then the classic baselines (the table's column order)."""
    return neural_model_names() + CLASSIC_MODELS


def _has_kernel_matrix(entry: model_table.ModelSpec) -> bool:
    """A classic Hawkes model: ``K x K`` kernels, skipped above ``max_hawkes_marks`` types."""
    from tpp.hawkes import Poisson

    return entry.training is Training.ESTIMATOR and not issubclass(entry.cls, Poisson)


def skip_reason(name: str, data: BenchData, config: LikelihoodConfig) -> str:
    """Why cell (``name``, ``data``) is not run (``""``: it is): a Hawkes model's ``K x K`` kernels above
    ``max_hawkes_marks`` types, or, in full runs, a neural model that integrates every type's intensity at every
    node above ``max_quadrature_marks`` (quick runs cut such data instead: ``quick_many_types``)."""
    entry = model_table.spec(name, Family.TPP)
    K = data.num_marks
    if _has_kernel_matrix(entry) and K > config.max_hawkes_marks:
        return f"{K} types: {K ** 2:,} kernels (max_hawkes_marks {config.max_hawkes_marks})"
    integrates = getattr(entry.cls, "integrates_every_type", None)
    if not config.quick and integrates is not None and integrates() and K > config.max_quadrature_marks:
        nodes = getattr(entry.cls, "train_points", None) or 1
        evaluations = data.train.num_events * nodes * K
        return (f"{K} types: its likelihood integrates every type's intensity at each of {nodes} nodes per "
                f"interval, {evaluations:.1e} intensity evaluations per training epoch "
                f"(max_quadrature_marks {config.max_quadrature_marks})")
    return ""


# --------------------------------------------------------------------------- one cell
def fit_cell(name: str, data: BenchData, config: LikelihoodConfig, seed: int) -> tuple[Any, dict[str, Any]]:
    """A fresh model ``name`` (:func:`tpp.model_table.build`) fitted on ``data.train`` by :func:`tpp.model_table.fit_model`
    (neural: early stopping on ``data.val``) and what the fit reported (epochs, best epoch, events/s, notes)."""
    from tpp.hawkes import Poisson

    entry = model_table.spec(name, Family.TPP)
    train, val = data.train, data.val
    K = train.num_marks
    info: dict[str, Any] = {}
    if issubclass(entry.cls, Poisson):
        # The MLE, except that a type absent from train gets half an event (Poisson.fit refuses a zero rate,
        # which would score -inf on a test event of that type).
        counts = np.bincount(train.mark[train.mask].cpu().numpy(), minlength=K).astype(float)
        if np.all(counts > 0):
            return model_table.fit_model(model_table.build(entry.name, train), train)[0], info
        info["note"] = f"{int((counts == 0).sum())} of {K} types absent from train: half an event each"
        return Poisson.from_params(np.maximum(counts, 0.5) / float(train.duration.sum())), info
    if entry.training is Training.ESTIMATOR:
        model = model_table.build(entry.name, train)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a branching ratio >= 1 warns; the table shows the score anyway
            model_table.fit_model(model, train)
        return model, info
    model = model_table.build(entry.name, train, seed=seed, hidden_size=config.hidden_size)
    model, record = model_table.fit_model(model, train, val, epochs=config.epochs, batch_size=config.batch_size,
                                    lr=config.lr, patience=config.patience, seed=seed, progress=False)
    info.update(record.info())
    return model, info


def run_cell(name: str, data: BenchData, config: LikelihoodConfig, seed: int) -> dict[str, Any]:
    """Fit ``name`` on ``data`` with ``seed``; test log-likelihood per event, RMSE and accuracy in data units."""
    from tpp.metrics import next_event_metrics

    row: dict[str, Any] = {"model": name, "dataset": data.name, "seed": seed, "num_marks": data.num_marks,
                           "train_sequences": len(data.train), "train_events": data.train.num_events,
                           "test_events": data.test.num_events, "time_scale": data.scale, "units": data.units,
                           "eval_points": config.eval_points, "first_event": data.first_event}
    skip = skip_reason(name, data, config)
    if skip:
        return {**row, "status": CellStatus.SKIPPED.value, "note": skip}
    t0, cpu0 = time.perf_counter(), time.process_time()
    model, info = fit_cell(name, data, config, seed)
    row.update(info)
    row["fit_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    row["ll_per_event"] = test_log_likelihood(model, data.test, config.eval_points) - math.log(data.scale)
    if PUBLISHED_SPLITS.get(data.name) == "ifl":
        # The intensity-free paper's own score (times 2..N, no survival term, marks unscored), which its numbers
        # are on (tpp.bench.published); one density term per scored time, hence - log(scale) each.
        row["ifl_time_ll_per_event"] = (test_ifl_time_log_likelihood(model, data.test, config.eval_points)
                                        - math.log(data.scale))
    row["ks"] = test_rescaling_ks(model, data.test, config.eval_points)
    cap = config.max_predictions
    if config.quick and data.num_marks > 1000:
        cap = min(cap, config.quick_many_types[2])
    forecasts = next_event_metrics(model, data.test, max_prefixes=cap, seed=seed, chunk=prediction_chunk(data.test))
    row["rmse"] = forecasts["rmse"] * data.scale
    row["accuracy"] = forecasts["accuracy"]
    row["num_predictions"] = forecasts["num_predictions"]
    # Calibration of the next-time quantiles: the fraction of true times below each predicted quantile (ideal:
    # the level); one number per cell is the mean absolute gap over the levels.
    levels, observed = np.asarray(forecasts["calibration_levels"]), np.asarray(forecasts["calibration_observed"])
    row["calibration_levels"] = levels.tolist()
    row["calibration_observed"] = observed.tolist()
    row["calibration_error"] = float(np.mean(np.abs(observed - levels)))
    row["eval_seconds"] = time.perf_counter() - t0
    row["cpu_seconds"] = time.process_time() - cpu0
    row["status"] = CellStatus.OK.value
    return row


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
    """Models as display names (CLI names and any case accepted) and registry dataset names; raises before any work."""
    known = all_model_names()
    chosen, unknown = [], []
    for model in models or known:
        try:
            display = model_table.spec(model, Family.TPP).display
        except model_table.UnknownModelError:
            display = None
        (chosen if display in known else unknown).append(display if display in known else model)
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}: choose from {', '.join(known)}")
    models = chosen
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
    write_json(out_dir / "environment.json", {**env, "command": command, "models": models, "datasets": names})

    todo, reused = [], []
    for dataset in names:
        for model in models:
            for seed in config.seeds:
                row = read_cell(cell_path(cells_dir, model, dataset, seed))
                finished = row is not None and row.get("status") in (CellStatus.OK.value, CellStatus.SKIPPED.value)
                finished = finished and current_protocol(row)  # else it scored an anchoring first event: redone
                (reused if finished else todo).append((model, dataset, seed))
    echo(f"config {config.key()}: {len(reused)} of {len(todo) + len(reused)} cells already in {cells_dir}")
    started = time.perf_counter()
    notes: list[str] = []
    failed_datasets: set[str] = set()
    loaded: BenchData | None = None
    computed = []
    bar = tqdm(todo, desc=f"bench {SUITE}", unit="cell", disable=not progress, file=sys.stderr)
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
        write_cell(cell_path(cells_dir, model, dataset, seed), row, config)
        computed.append((model, dataset, seed))
        if row["status"] == CellStatus.OK.value:
            acc = "" if loaded.num_marks == 1 else f", accuracy {row['accuracy']:.3f}"
            echo(f"  {model:>13} {dataset} seed {seed}: ll/event {row['ll_per_event']:.4f}, rmse {row['rmse']:.4g}"
                 f"{acc} (fit {row['fit_seconds']:.1f} s, eval {row['eval_seconds']:.1f} s)")
            line = published_line(row)
            if line:
                echo(f"  {'':>13} {line}")
        else:
            echo(f"  {model:>13} {dataset} seed {seed}: {row['status']}: {row['note']}")
    bar.close()
    seconds = time.perf_counter() - started

    return _report(out_dir, out_dir, config, models, names, command, env, notes, computed, reused, seconds)


def _report(out_dir: Path, source: Path, config: LikelihoodConfig, models: list[str], names: list[str], command: str,
            env: dict[str, Any], notes: list[str], computed: list, reused: list, seconds: float) -> BenchReport:
    """The tables, plots, ``results.csv`` and ``environment.json`` of the cells of ``config`` under ``source``,
    written into ``out_dir``."""
    runs = read_cells(source, config, models, names)
    table = summarise(runs)
    markdown = likelihood_markdown(table, runs, models, names, config, notes, command, env)
    files = {"environment": out_dir / "environment.json"}
    files.update(write_outputs(out_dir, runs, table, markdown, models, names))
    write_json(files["environment"], {**env, "command": command, "models": models, "datasets": names,
                                       "cells_computed": len(computed), "cells_reused": len(reused),
                                       "run_seconds": seconds,
                                       "cell_commits": sorted(set(runs["git_commit"].dropna().astype(str)))})
    return BenchReport(out_dir, runs, table, markdown, files, computed, reused, seconds, notes)


def collect_likelihood(
    source: str | os.PathLike,
    config: LikelihoodConfig | None = None,
    models: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    *,
    out_dir: str | os.PathLike | None = None,
    command: str | None = None,
) -> BenchReport:
    """The report of the cells already finished under ``source`` (a ``run_likelihood`` output folder, e.g. the
    committed ``benchmarks/results/likelihood_full``), computing nothing: the whole table after runs that each
    did a few models, or the stored results read from a notebook. ``config`` (default: the full preset) picks the
    cells; ``models``/``names`` default to those that have cells, in the suite's order. Tables, plots and
    ``results.csv`` go to ``out_dir`` (default ``source``)."""
    config = config or LikelihoodConfig.preset()
    config.validate()
    source = Path(source).expanduser().resolve()
    out_dir = source if out_dir is None else Path(out_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    found = read_cells(source, config)
    if found.empty:
        raise FileNotFoundError(f"{source}: no cells of configuration {config.key()} "
                                f"(expected {source / 'cells' / config.key()})")
    present_models = set(found["model"])
    present_names = set(found["dataset"])
    models = [m for m in (models or all_model_names()) if models or m in present_models]
    names = [n for n in (names or DATASETS) if names or n in present_names]
    models, names = _check_names(models, names)
    done = [tuple(r) for r in found[["model", "dataset", "seed"]].itertuples(index=False)]
    command = command or default_command()
    return _report(out_dir, source, config, models, names, command, environment("cpu", config), [], [], done, 0.0)
