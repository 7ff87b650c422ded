"""The suite's outputs: the summary over seeds, the Markdown tables and the PNG plots."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tpp.bench.cells import CellStatus
from tpp.bench.config import LikelihoodConfig
from tpp.io import atomic_write

__all__ = ["summarise", "likelihood_markdown", "write_outputs"]


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (dataset, model) of the cells that finished."""
    columns = ["dataset", "model", "ll_mean", "ll_std", "rmse_mean", "rmse_std", "accuracy_mean", "accuracy_std",
               "ks_mean", "ks_std", "calibration_mean", "cpu_seconds", "seeds", "num_marks", "units", "fit_seconds",
               "eval_points"]
    ok = runs[runs["status"] == CellStatus.OK.value].copy()
    if ok.empty:
        return pd.DataFrame(columns=columns)
    for column in ("ll_per_event", "rmse", "accuracy", "fit_seconds", "ks", "calibration_error", "cpu_seconds"):
        ok[column] = pd.to_numeric(ok[column], errors="coerce")
    table = ok.groupby(["dataset", "model"], sort=False).agg(
        ll_mean=("ll_per_event", "mean"), ll_std=("ll_per_event", "std"),
        rmse_mean=("rmse", "mean"), rmse_std=("rmse", "std"),
        accuracy_mean=("accuracy", "mean"), accuracy_std=("accuracy", "std"),
        ks_mean=("ks", "mean"), ks_std=("ks", "std"), calibration_mean=("calibration_error", "mean"),
        cpu_seconds=("cpu_seconds", "mean"), seeds=("seed", "nunique"), num_marks=("num_marks", "first"), units=("units", "first"),
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
                          ("accuracy", "Next-mark accuracy"),
                          ("ks", "Time-rescaling KS statistic (test residuals against Exp(1); lower is better)"),
                          ("calibration", "Next-time quantile calibration: mean |observed - level| over the levels "
                                          "0.1, 0.25, 0.5, 0.75, 0.9 (lower is better)"),
                          ("cpu", "CPU seconds per cell (fit and evaluation, mean over seeds)")):
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
                elif metric == "ks":
                    cells.append(_cell(r["ks_mean"], r["ks_std"]))
                elif metric == "calibration":
                    cells.append(_cell(r["calibration_mean"], None))
                elif metric == "cpu":
                    cells.append(_cell(r["cpu_seconds"], None, digits=0))
                else:
                    cells.append("-" if K == 1 else _cell(r["accuracy_mean"], r["accuracy_std"]))
            lines.append(f"| {name} ({K}, {units}) | " + " | ".join(cells) + " |")
        lines.append("")
    if not config.quick:
        from tpp.bench.published import comparison_lines, notes_lines

        compared = comparison_lines(runs)
        lines += ["## Published numbers beside ours", "",
                  "Only numbers whose protocol the suite matches fill `published` in results.csv (full mode: the "
                  "papers' splits, whole test sequences); the others are listed with the reason.", "",
                  *compared, *([""] if compared else []), *notes_lines(names), ""]
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



def write_outputs(out_dir: Path, runs: pd.DataFrame, table: pd.DataFrame, markdown: str, models: Sequence[str],
                   names: Sequence[str]) -> dict[str, Path]:
    """CSVs, Markdown and the three PNGs, each atomically."""
    from tpp import plot

    from tpp.bench.published import results_frame

    files = {"runs": out_dir / "likelihood_runs.csv", "table": out_dir / "likelihood_table.csv",
             "results": out_dir / "results.csv", "markdown": out_dir / "likelihood_table.md"}
    for key, frame in (("runs", runs), ("table", table), ("results", results_frame(runs))):
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

