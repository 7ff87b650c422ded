"""Cells: one JSON file per finished (model, dataset, seed), written atomically under
``<out>/cells/<config key>/<dataset>/<model>__seed<s>.json``, so an interrupted run loses at most the cell
in flight and a rerun with the same configuration reads, not recomputes, what is there."""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tpp.bench.config import LikelihoodConfig
from tpp.bench.data import current_protocol
from tpp.io import atomic_write

__all__ = ["CellStatus", "RUN_FIELDS", "cell_path", "write_cell", "read_cell", "read_cells", "write_json"]


class CellStatus(str, enum.Enum):
    """Outcome of one (model, dataset, seed) cell."""

    OK = "ok"
    SKIPPED = "skipped"  #: by rule (e.g. a Hawkes model on too many types); not retried
    ERROR = "error"  #: retried by the next run



RUN_FIELDS = (
    "config", "model", "dataset", "seed", "status", "note", "ll_per_event", "ifl_time_ll_per_event", "rmse",
    "accuracy", "ks",
    "calibration_error", "calibration_levels", "calibration_observed",
    "num_predictions", "epochs_run", "best_epoch", "fit_seconds", "eval_seconds", "cpu_seconds",
    "train_events_per_second",
    "train_sequences", "train_events", "test_events", "num_marks", "time_scale", "units", "eval_points",
    "first_event", "created",
    "git_commit",
)


def cell_path(cells_dir: Path, model: str, dataset: str, seed: int) -> Path:
    """Where the cell of (``model``'s display name, ``dataset``, ``seed``) lives."""
    return cells_dir / dataset / f"{model}__seed{seed}.json"


def write_cell(path: Path, row: dict[str, Any], config: LikelihoodConfig) -> None:
    """Temp file + rename: a killed run leaves a whole cell or none."""
    payload = {"row": row, "config": asdict(config)}
    with atomic_write(path, ".json") as tmp:
        tmp.write_text(json.dumps(payload, indent=1, default=json_default) + "\n")
        tmp.chmod(0o644)  # atomic_write's temporary file is private (0600)


def json_default(value: Any) -> Any:
    """numpy numbers and enums as plain JSON values (``json.dumps(default=...)``)."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def read_cell(path: Path) -> dict[str, Any] | None:
    """The row of a cell file; None for a missing or damaged one (it is recomputed)."""
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
        row = read_cell(path)
        if row is None or int(row["seed"]) not in config.seeds or not current_protocol(row):
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


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """``payload`` as indented JSON, atomically, readable by others (numpy numbers and enums as values)."""
    with atomic_write(path, ".json") as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=json_default) + "\n")
        tmp.chmod(0o644)
