"""Pictures a person would rather look at than read: intensity with events, kernels, QQ plots.

Every function draws on a given matplotlib ``Axes`` (or a new figure) and returns the figure;
:func:`save_figure` writes PNG atomically. Uses the non-interactive Agg backend when no display
is set, so it works in CI and over SSH.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

if not os.environ.get("DISPLAY") and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from tpp.events import EventBatch  # noqa: E402
from tpp.io import atomic_write  # noqa: E402
from tpp.metrics import RescalingResult  # noqa: E402
from tpp.process import PointProcess  # noqa: E402

if TYPE_CHECKING:
    import pandas

__all__ = [
    "plot_intensity", "plot_adjacency", "plot_qq", "plot_kernels", "save_figure", "plot_kernel_grid", "plot_benchmark",
    "plot_training_curves", "plot_calibration", "plot_forecast", "plot_fan_chart", "plot_state_posterior",
    "plot_hawkes_posterior", "plot_baseline",
]


def _axes(ax: Axes | None, figsize: tuple[float, float] = (8, 3.5)) -> tuple[Figure, Axes]:
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, constrained_layout=True)
        return fig, ax
    return ax.figure, ax


def plot_intensity(
    model: PointProcess,
    batch: EventBatch,
    seq: int = 0,
    t_range: tuple[float, float] | None = None,
    num: int = 2000,
    marks: Sequence[int] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Conditional intensity of sequence ``seq`` on a fine grid, with its events as a rug below."""
    one = batch[seq]
    t0, t1 = t_range or (float(one.t_start[0]), float(one.t_end[0]))
    grid = torch.linspace(t0, t1, num, dtype=one.dtype)[None, :]
    # Add the event times themselves so the jumps are drawn sharply.
    ev = one.time[one.mask]
    ev = ev[(ev >= t0) & (ev <= t1)]
    grid = torch.sort(torch.cat([grid[0], ev, ev + 1e-9 * max(t1 - t0, 1.0)]))[0][None, :]
    with torch.no_grad():
        lam = model.intensity(one, grid)[0].cpu().numpy()  # [T, K]
    fig, ax = _axes(ax)
    K = lam.shape[1]
    shown = list(marks) if marks is not None else list(range(min(K, 10)))
    x = grid[0].numpy()
    colors = plt.cm.tab10(np.arange(10))
    for k in shown:
        ax.plot(x, lam[:, k], lw=1, color=colors[k % 10], label=f"type {k}" if K > 1 else "intensity")
    ymin = 0.0
    ev_marks = one.mark[one.mask].numpy()
    ev_times = one.time[one.mask].numpy()
    sel = (ev_times >= t0) & (ev_times <= t1)
    top = float(np.max(lam[:, shown])) if lam.size else 1.0
    for k in shown:
        tk = ev_times[sel & (ev_marks == k)]
        ax.plot(tk, np.full(tk.size, ymin - 0.04 * top * (1 + shown.index(k) / max(len(shown), 1))), "|",
                color=colors[k % 10], ms=8)
    ax.set_xlim(t0, t1)
    ax.set_xlabel("time")
    ax.set_ylabel("intensity")
    if K > 1:
        ax.legend(loc="upper right", fontsize=7, ncol=min(len(shown), 5))
    ax.set_title(title or f"{type(model).__name__}: intensity of sequence {seq} with its events")
    return fig


def plot_adjacency(
    adjacency: np.ndarray, ax: Axes | None = None, title: str = "adjacency (row: excited, column: exciting)",
    labels: Sequence[str] | None = None,
) -> Figure:
    """Heatmap of a ``[K, K]`` adjacency (sums over decays if ``[K, K, U]``), values annotated when small."""
    adj = np.asarray(adjacency)
    if adj.ndim == 3:
        adj = adj.sum(-1)
    K = adj.shape[0]
    fig, ax = _axes(ax, figsize=(1.2 + 0.45 * K + 2, 1.2 + 0.45 * K + 1))
    im = ax.imshow(adj, cmap="viridis", vmin=0)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ticks = np.arange(K)
    ax.set_xticks(ticks, labels=labels or [str(k) for k in ticks], fontsize=7)
    ax.set_yticks(ticks, labels=labels or [str(k) for k in ticks], fontsize=7)
    ax.set_xlabel("exciting type j")
    ax.set_ylabel("excited type i")
    if K <= 12:
        for i in range(K):
            for j in range(K):
                ax.text(j, i, f"{adj[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if adj[i, j] < 0.6 * adj.max() else "black")
    ax.set_title(title, fontsize=9)
    return fig


def plot_kernels(kernel: "callable", num_marks: int, t_max: float, num: int = 400, ax: Axes | None = None,
                 title: str = "kernels", t_min: float | None = None) -> Figure:
    """Curves ``phi_ij(t)`` from ``kernel(t [T]) -> [T, K, K]`` (at most 16 pairs drawn).

    With ``t_min`` the lags run log-spaced from ``t_min`` to ``t_max`` on log-log axes, which is
    how kernels with several time scales (sums of exponentials) can be read at all.
    """
    t = np.geomspace(t_min, t_max, num) if t_min is not None else np.linspace(0, t_max, num)
    values = np.asarray(kernel(t))
    fig, ax = _axes(ax)
    pairs = [(i, j) for i in range(num_marks) for j in range(num_marks)]
    top = sorted(pairs, key=lambda p: -values[:, p[0], p[1]].max())[:16]
    for i, j in top:
        ax.plot(t, values[:, i, j], lw=1, label=f"{j}→{i}")
    if t_min is not None:
        ax.set_xscale("log")
        ax.set_yscale("log")
        peak = float(values.max()) if values.size else 1.0
        ax.set_ylim(peak * 1e-6, peak * 2)
    ax.set_xlabel("lag")
    ax.set_ylabel("phi_ij(lag)")
    ax.legend(fontsize=7, ncol=4)
    ax.set_title(title)
    return fig


def plot_qq(results: dict[str, RescalingResult] | RescalingResult, ax: Axes | None = None,
            title: str = "time-rescaling QQ plot against Exp(1)") -> Figure:
    """QQ plot of rescaled inter-event times, one curve per model, with the identity line."""
    if isinstance(results, RescalingResult):
        results = {"model": results}
    fig, ax = _axes(ax, figsize=(4.5, 4.5))
    top = 0.0
    for name, res in results.items():
        theo, emp = res.qq(num=2000)
        ax.plot(theo, emp, ".", ms=2, label=f"{name} (KS {res.ks_statistic:.3f}, p={res.ks_pvalue:.2g})")
        top = max(top, float(theo.max()) if theo.size else 0.0)
    ax.plot([0, top], [0, top], "k--", lw=1)
    # Heavy right tails of a poor fit would squash the informative part: clip, and say how many.
    ax.set_xlim(0, top * 1.05)
    ax.set_ylim(0, top * 1.5)
    clipped = sum(int((res.residuals > top * 1.5).sum()) for res in results.values())
    if clipped:
        ax.text(0.98, 0.02, f"{clipped} residual(s) above the frame", transform=ax.transAxes, ha="right", fontsize=7)
    ax.set_xlabel("Exp(1) quantiles")
    ax.set_ylabel("rescaled inter-event times")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG atomically and close it."""
    path = Path(path)
    with atomic_write(path, ".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path


def plot_kernel_grid(
    models: dict[str, "PointProcess"],
    support: float,
    num: int = 400,
    max_types: int = 8,
    title: str = "fitted kernels phi_ij (row i: excited, column j: exciting)",
) -> Figure:
    """A K x K grid of small plots of ``phi_ij(lag)`` on ``[0, support]``, one curve per model.

    Every model must offer ``excitation(lags) -> [T, K, K]``; a nonparametric (piecewise-constant)
    estimate overlaid on a parametric fit shows whether the chosen family has the right shape.
    """
    lags = np.linspace(support / num, support, num)
    curves = {name: np.asarray(m.excitation(lags)) for name, m in models.items()}
    K = min(next(iter(curves.values())).shape[1], max_types)
    fig, axes = plt.subplots(K, K, figsize=(1.9 * K + 1, 1.5 * K + 0.8), sharex=True, squeeze=False,
                             constrained_layout=True)
    styles = ["-", "--", ":", "-."]
    for i in range(K):
        for j in range(K):
            ax = axes[i, j]
            for s, (name, values) in enumerate(curves.items()):
                step = "steps-mid" if "nonparametric" in name.lower() or "em" in name.lower().split() else "default"
                ax.plot(lags, values[:, i, j], styles[s % 4], lw=1, drawstyle=step, label=name)
            ax.tick_params(labelsize=6)
            if i == K - 1:
                ax.set_xlabel(f"lag (from {j})", fontsize=7)
            if j == 0:
                ax.set_ylabel(f"to {i}", fontsize=7)
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    return fig


def plot_benchmark(
    table: pandas.DataFrame,
    metric: str = "ll",
    models: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    relative_to: str | None = None,
    title: str | None = None,
    cols: int = 5,
    log_scale: bool | None = None,
) -> Figure:
    """One small panel per dataset: ``<metric>_mean`` per model as a point with a ``<metric>_std`` error bar.

    ``table`` has columns ``dataset``, ``model``, ``<metric>_mean`` and ``<metric>_std`` (as
    :func:`tpp.bench.summarise` writes). Points, not bars, so that each panel's axis can zoom in on
    the differences. ``relative_to`` subtracts that model's mean per dataset (log-likelihoods of
    different datasets then share a meaning: nats per event gained over the baseline); when some
    models sit far below (more than 20 units), the axis turns symmetric-logarithmic. ``log_scale``: a
    logarithmic axis for positive metrics (None: when a panel's largest value exceeds 20 times its
    smallest, e.g. one model's RMSE blown up by a heavy-tailed predicted mean).
    """
    mean_col, std_col = f"{metric}_mean", f"{metric}_std"
    if mean_col not in table.columns:
        raise ValueError(f"table has no column {mean_col!r}; columns: {list(table.columns)}")
    models = list(models) if models is not None else list(dict.fromkeys(table["model"]))
    shown = [d for d in (datasets if datasets is not None else dict.fromkeys(table["dataset"]))
             if d in set(table["dataset"])]
    cols = max(1, min(cols, len(shown) or 1))
    rows = max(1, int(np.ceil(len(shown) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 0.6 + 0.22 * len(models) * rows + 0.7 * rows),
                             squeeze=False, constrained_layout=True)
    colors = plt.get_cmap("tab10")
    for ax, name in zip(axes.flat, shown):
        sub = table[table["dataset"] == name].set_index("model")
        present = [m for m in models if m in sub.index and np.isfinite(float(sub.loc[m, mean_col]))]
        base = 0.0
        if relative_to is not None and relative_to in sub.index and np.isfinite(float(sub.loc[relative_to, mean_col])):
            base = float(sub.loc[relative_to, mean_col])
        values = np.array([float(sub.loc[m, mean_col]) - base for m in present])
        errors = np.array([float(sub.loc[m, std_col]) if std_col in sub.columns else np.nan for m in present])
        errors = np.where(np.isfinite(errors), errors, 0.0)
        y = np.arange(len(present))[::-1]
        for yi, m, v, e in zip(y, present, values, errors):
            ax.errorbar(v, yi, xerr=e, fmt="o", ms=4, capsize=2, color=colors(models.index(m) % 10))
        ax.set_yticks(y, present, fontsize=7)
        ax.set_ylim(-0.7, len(present) - 0.3)
        if relative_to is not None:
            ax.axvline(0, color="k", lw=0.6)
            if values.size and np.nanmax(np.abs(values)) > 20:  # a few models thousands of nats below
                ax.set_xscale("symlog", linthresh=1.0)
        elif values.size and np.all(values > 0) and (
                log_scale or (log_scale is None and values.max() > 20 * values.min())):
            ax.set_xscale("log")
        ax.margins(x=0.08)
        ax.grid(axis="x", lw=0.3, alpha=0.6)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(name, fontsize=8)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.suptitle(title or (f"{metric} minus {relative_to}'s" if relative_to else metric), fontsize=9)
    return fig


def _history(result: object) -> list[dict]:
    history = getattr(result, "history", result)
    if not isinstance(history, (list, tuple)):
        raise TypeError(f"expected a TrainResult or its history (a list of dicts), got {type(result).__name__}")
    return list(history)


def plot_training_curves(results: object, ax: Axes | None = None,
                         title: str = "learning curves (log-likelihood per event)") -> Figure:
    """Train and validation log-likelihood per event by epoch, from :class:`tpp.train.TrainResult` ``.history``.

    ``results``: one TrainResult (or its history), or a mapping name -> TrainResult. Train curves are
    dashed, validation curves solid, the best validation epoch (the weights kept) circled.
    """
    items = dict(results) if isinstance(results, dict) else {"model": results}
    fig, ax = _axes(ax, figsize=(6, 3.5))
    colors = plt.get_cmap("tab10")
    for i, (name, result) in enumerate(items.items()):
        history = _history(result)
        epochs = [h["epoch"] for h in history]
        ax.plot(epochs, [-h["train_nll_per_event"] for h in history], "--", color=colors(i % 10), lw=1,
                label=f"{name} train")
        val = [h.get("val_ll_per_event") for h in history]
        if any(v is not None for v in val):
            ax.plot(epochs, [np.nan if v is None else v for v in val], "-", color=colors(i % 10), lw=1.5,
                    label=f"{name} validation")
            best = getattr(result, "best_epoch", None)
            if best is not None and best in epochs:
                ax.plot(best, val[epochs.index(best)], "o", mfc="none", ms=9, color=colors(i % 10))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("log-likelihood per event")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return fig


def plot_calibration(metrics: dict, ax: Axes | None = None,
                     title: str = "calibration of the next-time quantiles") -> Figure:
    """Observed fraction of true next times below each predicted quantile against its level (ideal: the diagonal).

    ``metrics``: the dict :func:`tpp.metrics.next_event_metrics` returns, or a mapping name -> such dict.
    """
    items = {"model": metrics} if "calibration_levels" in metrics else dict(metrics)
    fig, ax = _axes(ax, figsize=(4.2, 4.2))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="ideal")
    for name, m in items.items():
        ax.plot(m["calibration_levels"], m["calibration_observed"], "o-", ms=4, lw=1,
                label=f"{name} ({m.get('num_predictions', '?')} forecasts)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("quantile level q")
    ax.set_ylabel("fraction of true times below the q-quantile")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return fig


def plot_forecast(
    models: PointProcess | dict,
    batch: EventBatch,
    seq: int = 0,
    num_events: int = 30,
    quantiles: tuple[float, float, float] = (0.1, 0.5, 0.9),
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Next-event forecasts along one sequence: from the history before each of its first ``num_events`` events,
    the predicted median gap to the next event with the band between the outer quantiles, and the true gap.

    ``models``: one model or a mapping name -> model (drawn side by side). Gaps on a log axis: real
    inter-event times span decades.
    """
    items = dict(models) if isinstance(models, dict) else {type(models).__name__: models}
    one = batch[seq]
    times = one.time[one.mask].cpu().numpy()
    marks = one.mark[one.mask].cpu().numpy()
    t0 = float(one.t_start[0])
    n = min(num_events, times.size)
    if n == 0:
        raise ValueError(f"sequence {seq} has no events to forecast")
    # The history before event i, its window ending at the previous event (t_start for the first).
    ends = np.concatenate([[t0], times[: n - 1]])
    histories = EventBatch.from_sequences([times[:i] for i in range(n)], [marks[:i] for i in range(n)],
                                          t_start=np.full(n, t0), t_end=ends, num_marks=batch.num_marks,
                                          dtype=batch.dtype)
    true_gap = times[:n] - ends
    fig, ax = _axes(ax)
    colors = plt.get_cmap("tab10")
    width = 0.6 / max(len(items), 1)
    x = np.arange(n)
    for i, (name, model) in enumerate(items.items()):
        with torch.no_grad():
            pred = model.predict(histories, quantiles=quantiles)
        q = pred.time_quantiles.cpu().numpy() - ends[:, None]
        shift = (i - (len(items) - 1) / 2) * width
        lo, mid, hi = q[:, 0], q[:, len(quantiles) // 2], q[:, -1]
        ax.errorbar(x + shift, mid, yerr=[np.clip(mid - lo, 0, None), np.clip(hi - mid, 0, None)], fmt="_", ms=6,
                    capsize=0, lw=2, alpha=0.7, color=colors(i % 10),
                    label=f"{name}: median, {quantiles[0]:g}-{quantiles[-1]:g} band")
    ax.plot(x, true_gap, "k.", ms=6, label="true gap")
    ax.set_yscale("log")
    ax.set_xlabel(f"event index in sequence {seq}")
    ax.set_ylabel("time to next event")
    ax.legend(fontsize=7)
    ax.set_title(title or "next-event forecasts with uncertainty", fontsize=9)
    return fig


def plot_fan_chart(
    times: torch.Tensor | np.ndarray,
    samples: torch.Tensor | np.ndarray,
    observed_time: torch.Tensor | np.ndarray | None = None,
    observed: torch.Tensor | np.ndarray | None = None,
    bands: Sequence[tuple[float, float]] = ((0.05, 0.95), (0.25, 0.75)),
    ax: Axes | None = None,
    title: str = "forecast",
) -> Figure:
    """A forecast fan: the median of sampled paths ``samples [S, T]`` at ``times [T]`` with quantile
    bands (outer band palest), after the observed series (NaN values skipped)."""
    times = np.asarray(times, dtype=float)
    paths = np.asarray(samples, dtype=float)
    if paths.ndim != 2 or paths.shape[1] != times.size:
        raise ValueError(f"samples must be [S, T] with T = {times.size} forecast times, got {paths.shape}")
    fig, ax = _axes(ax)
    if observed_time is not None and observed is not None:
        t_obs, y_obs = np.asarray(observed_time, dtype=float), np.asarray(observed, dtype=float)
        keep = np.isfinite(y_obs)
        ax.plot(t_obs[keep], y_obs[keep], "k.-", ms=3, lw=1, label="observed")
    for i, (low, high) in enumerate(sorted(bands, key=lambda b: b[1] - b[0], reverse=True)):
        lo, hi = np.nanquantile(paths, [low, high], axis=0)
        ax.fill_between(times, lo, hi, color="C0", alpha=0.2 + 0.2 * i, lw=0, label=f"{low:g}-{high:g}")
    ax.plot(times, np.nanmedian(paths, axis=0), color="C0", lw=1.5, label="median")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return fig


def plot_state_posterior(
    times: torch.Tensor | np.ndarray,
    probabilities: torch.Tensor | np.ndarray,
    true_path: tuple[np.ndarray, np.ndarray] | None = None,
    observed: tuple[np.ndarray, np.ndarray] | None = None,
    t_end: float | None = None,
    ax: Axes | None = None,
    title: str = "posterior state probabilities",
) -> Figure:
    """Posterior probabilities ``[T, S]`` of a jump process's states over ``times [T]`` (stacked bands),
    with the true path (jump times, states entered) as a step line on the state axis scaled to [0, 1],
    and the observations on a second axis."""
    times = np.asarray(times, dtype=float)
    probs = np.asarray(probabilities, dtype=float)
    if probs.ndim != 2 or probs.shape[0] != times.size:
        raise ValueError(f"probabilities must be [T, S] with T = {times.size}, got {probs.shape}")
    fig, ax = _axes(ax)
    num_states = probs.shape[1]
    ax.stackplot(times, probs.T, labels=[f"P(state {s})" for s in range(num_states)], alpha=0.45)
    if true_path is not None:
        jump_t, states = (np.asarray(a) for a in true_path)
        end = times[-1] if t_end is None else t_end
        level = (states + 0.5) / num_states  # the middle of each state's band height
        ax.step(np.append(jump_t, end), np.append(level, level[-1]), where="post", color="k", lw=1.5,
                label="true state")
    if observed is not None:
        twin = ax.twinx()
        twin.plot(np.asarray(observed[0], dtype=float), np.asarray(observed[1], dtype=float), "r.", ms=4,
                  label="observations")
        twin.set_ylabel("observation", color="r")
    ax.set_ylim(0, 1)
    ax.set_xlabel("time")
    ax.set_ylabel("probability")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(title, fontsize=9)
    return fig


def plot_hawkes_posterior(
    posterior: object,
    truth: object | None = None,
    level: float = 0.9,
    bins: int = 40,
    max_types: int = 6,
    title: str = "posterior: branching ratio and adjacency a_ij (row i: excited, column j: exciting)",
) -> Figure:
    """Histograms of a Bayesian Hawkes fit (:class:`tpp.hawkes.bayes.Posterior`): the branching ratio on
    the left, a ``K x K`` grid of the adjacency entries on the right, each with its ``level`` credible
    interval shaded; ``truth`` (a model with ``adjacency_``, e.g. the simulating ExpHawkes) adds the
    true values as red lines. Only the first ``max_types`` types are drawn."""
    ratio = np.asarray(posterior.branching_ratio(), dtype=float)
    adjacency = np.asarray(posterior.adjacency, dtype=float)
    true_adj = None if truth is None else np.asarray(truth.adjacency_, dtype=float).reshape(adjacency.shape[1:])
    K = min(adjacency.shape[1], max_types)
    tail = (1 - level) / 2
    fig = plt.figure(figsize=(2.6 + 1.9 * K, 1.2 + 1.5 * K), constrained_layout=True)
    left, right = fig.subfigures(1, 2, width_ratios=[1.3, K])

    def panel(ax: Axes, x: np.ndarray, true_value: float | None, label: str) -> None:
        ax.hist(x, bins=bins, color="C0", alpha=0.7)
        lo, hi = np.quantile(x, [tail, 1 - tail])
        ax.axvspan(lo, hi, color="C0", alpha=0.15, lw=0)
        if true_value is not None:
            ax.axvline(true_value, color="r", lw=1.2)
        ax.set_xlabel(label, fontsize=7)
        ax.tick_params(labelsize=6)
        ax.set_yticks([])

    ax = left.subplots()
    true_ratio = None if true_adj is None else float(np.max(np.abs(np.linalg.eigvals(true_adj))))
    panel(ax, ratio, true_ratio, f"branching ratio ({100 * level:g}% interval shaded)")
    if true_ratio is None or true_ratio < 1:
        ax.axvline(1.0, color="k", ls=":", lw=1)  # stationarity boundary
    grid = right.subplots(K, K, squeeze=False, sharex=True)
    for i in range(K):
        for j in range(K):
            panel(grid[i, j], adjacency[:, i, j], None if true_adj is None else float(true_adj[i, j]),
                  f"a[{i},{j}]")
    fig.suptitle(title, fontsize=9)
    return fig


def plot_baseline(
    model: PointProcess,
    period: float | None = None,
    origin: float | None = None,
    num: int = 500,
    marks: Sequence[int] | None = None,
    ax: Axes | None = None,
    unit: str = "",
    title: str = "fitted baseline over one period",
) -> Figure:
    """The baseline ``mu_k(t)`` of a Hawkes model (``baseline_at``) over one period (a day, a week), one curve
    per type (at most 10), with each type's mean ``baseline_`` dotted. ``period``/``origin`` default to the
    model's (required for a model without a period); the x axis is the phase ``t - origin`` in ``unit``."""
    period = getattr(model, "period", None) if period is None else period
    if period is None:
        raise ValueError("plot_baseline: the model has no period; pass period= (the span to draw)")
    origin = float(getattr(model, "origin", 0.0) if origin is None else origin)
    phase = np.linspace(0.0, float(period), num, endpoint=False)
    values = np.asarray(model.baseline_at(origin + phase))
    fig, ax = _axes(ax)
    shown = list(range(values.shape[1]))[:10] if marks is None else list(marks)
    mean = np.asarray(getattr(model, "baseline_", values.mean(0)))
    for k in shown:
        line, = ax.plot(phase, values[:, k], lw=1.2, label=f"type {k}")
        ax.axhline(float(mean[k]), color=line.get_color(), ls=":", lw=0.8)
    ax.set_xlim(0.0, float(period))
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel(f"phase{f' ({unit})' if unit else ''} since {origin:g}")
    ax.set_ylabel("baseline mu_k(t)")
    if len(shown) > 1:
        ax.legend(fontsize=7, ncol=2)
    ax.set_title(title)
    return fig
