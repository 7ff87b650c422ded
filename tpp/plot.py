"""Pictures a person would rather look at than read: intensity with events, kernels, QQ plots.

Every function draws on a given matplotlib ``Axes`` (or a new figure) and returns the figure;
:func:`save_figure` writes PNG atomically. Uses the non-interactive Agg backend when no display
is set, so it works in CI and over SSH.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

if not os.environ.get("DISPLAY") and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from tpp.events import EventBatch  # noqa: E402
from tpp.io import atomic_write  # noqa: E402
from tpp.metrics import RescalingResult  # noqa: E402
from tpp.process import PointProcess  # noqa: E402

__all__ = ["plot_intensity", "plot_adjacency", "plot_qq", "plot_kernels", "save_figure"]


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
