"""Maps for spatio-temporal models: the density of the next location at chosen times, with the events so far.

:func:`plot_spatial_density` draws, for one sequence, one panel per query time ``t``: the model's
``f(x | t, events before t)`` (:meth:`~tpp.spatial.SpatioTemporalProcess.spatial_density`) on a grid, with the
sequence's events before ``t`` on top, coloured by their time (the latest in the brightest colour). Any spatial
model works: the Gaussian-mixture baselines, the KDE, ETAS and the CNFs (for a CNF each panel is one batch of flow
solves over the grid, so keep ``grid`` modest). No web tiles: longitude/latitude are plotted as they are.

:func:`plot_events_map` draws a catalogue: events on the map coloured by time, sized by magnitude when the batch
has that feature (earthquakes), beside a magnitude-time (or count-time) panel.

Both return the matplotlib ``Figure`` (``tpp.plot.save_figure`` writes it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

if not os.environ.get("DISPLAY") and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from tpp.events import EventBatch  # noqa: E402
from tpp.spatial.base import SpatioTemporalProcess  # noqa: E402

__all__ = ["plot_events_map", "plot_spatial_density"]


def _bounds(x: np.ndarray, margin: float) -> tuple[tuple[float, float], tuple[float, float]]:
    lo, hi = x.min(0), x.max(0)
    pad = (hi - lo) * margin + 1e-9
    return (float(lo[0] - pad[0]), float(hi[0] + pad[0])), (float(lo[1] - pad[1]), float(hi[1] + pad[1]))


def plot_spatial_density(model: SpatioTemporalProcess, batch: EventBatch, times: Sequence[float], *,
                         sequence: int = 0, grid: int = 48, bounds: Sequence[Sequence[float]] | None = None,
                         log: bool = True, margin: float = 0.15, ncols: int = 4) -> Figure:
    """One panel per time in ``times``: the density of the next location at that time given the events of
    sequence ``sequence`` strictly before it, on a ``grid x grid`` lattice over ``bounds`` ``((x0, x1), (y0,
    y1))`` (default: the sequence's locations plus ``margin``), in log10 with ``log=True``; the events so far on
    top, coloured by time. The first two location coordinates are drawn (``model.feature_dim`` must be 2)."""
    if model.feature_dim != 2:
        raise ValueError(f"plot_spatial_density draws 2-D locations, the model has feature_dim={model.feature_dim}")
    times = [float(t) for t in times]
    if not times:
        raise ValueError("times must hold at least one query time")
    if not 0 <= sequence < len(batch):
        raise ValueError(f"sequence {sequence} is not in the batch of {len(batch)} sequences")
    one = batch[torch.tensor([sequence])]
    locs = model.locations(one)[0][one.mask[0]].cpu().numpy()
    ev_t = one.time[0][one.mask[0]].double().cpu().numpy()
    if bounds is None:
        if len(locs) == 0:
            raise ValueError(f"sequence {sequence} has no events: pass bounds=")
        (x0, x1), (y0, y1) = _bounds(locs, margin)
    else:
        (x0, x1), (y0, y1) = (tuple(map(float, b)) for b in bounds)
    gx, gy = np.meshgrid(np.linspace(x0, x1, grid), np.linspace(y0, y1, grid))
    points = torch.tensor(np.stack([gx.ravel(), gy.ravel()], -1), dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            dens = [model.spatial_density(one, torch.tensor([t], dtype=torch.float64), points)[0].cpu().numpy()
                    for t in times]
    finally:
        model.train(was_training)
    ncols = min(ncols, len(times))
    nrows = -(-len(times) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.0 * nrows), squeeze=False)
    t_lo, t_hi = float(one.t_start[0]), max(float(one.t_end[0]), max(times))
    for ax, t, d in zip(axes.ravel(), times, dens):
        z = np.log10(np.maximum(d, 1e-300)).reshape(grid, grid) if log else d.reshape(grid, grid)
        if log:  # show four decades below the peak
            z = np.maximum(z, z.max() - 4)
        mesh = ax.pcolormesh(gx, gy, z, shading="auto", cmap="viridis")
        fig.colorbar(mesh, ax=ax, shrink=0.8, label="log10 density" if log else "density")
        before = ev_t < t
        if before.any():
            ax.scatter(locs[before, 0], locs[before, 1], c=ev_t[before], cmap="autumn", vmin=t_lo, vmax=t_hi, s=12,
                       edgecolors="k", linewidths=0.3)
        ax.set_title(f"t = {t:.3g} ({int(before.sum())} events before)", fontsize=9)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
    for ax in axes.ravel()[len(times):]:
        ax.axis("off")
    names = model.location_names or tuple(batch.feature_names[:2])
    for ax in axes[-1]:
        ax.set_xlabel(names[0])
    for ax in axes[:, 0]:
        ax.set_ylabel(names[1])
    fig.suptitle(f"{type(model).__name__}: density of the next location (sequence {sequence})", fontsize=10)
    fig.tight_layout()
    return fig


def plot_events_map(batch: EventBatch, *, sequence: int | None = None, magnitude: str | None = "magnitude",
                    location_names: Sequence[str] | None = None) -> Figure:
    """Events on the map coloured by time (all sequences, or only ``sequence``), sized by ``magnitude`` where the
    batch has that feature, and beside it the magnitude (or the event count) against time."""
    if batch.features is None:
        raise ValueError("plot_events_map needs per-event locations (the batch has no features)")
    names = tuple(batch.feature_names)
    loc_names = tuple(location_names) if location_names is not None else (
        ("lon", "lat") if {"lon", "lat"} <= set(names) else tuple(n for n in names if n != magnitude)[:2])
    if len(loc_names) != 2 or any(n not in names for n in loc_names):
        raise ValueError(f"location features {list(loc_names)} are not two of the batch's features {list(names)}")
    rows = range(len(batch)) if sequence is None else [sequence]
    mask = batch.mask.clone()
    if sequence is not None:
        mask[:] = False
        mask[sequence] = batch.mask[sequence]
    idx = [names.index(n) for n in loc_names]
    xy = batch.features[..., idx][mask].double().cpu().numpy()
    t = batch.time[mask].double().cpu().numpy()
    has_m = magnitude is not None and magnitude in names
    m = batch.features[..., names.index(magnitude)][mask].double().cpu().numpy() if has_m else None
    fig, (ax_map, ax_t) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.1, 1]})
    size = 2.0 + 4.0 * np.exp(m - m.min()) if has_m else 8.0
    sc = ax_map.scatter(xy[:, 0], xy[:, 1], c=t, s=size, cmap="plasma", alpha=0.8, edgecolors="none")
    fig.colorbar(sc, ax=ax_map, label="time")
    ax_map.set_xlabel(loc_names[0])
    ax_map.set_ylabel(loc_names[1])
    ax_map.set_title(f"{len(t)} events" + (f", sized by {magnitude}" if has_m else ""), fontsize=10)
    if has_m:
        ax_t.vlines(t, m.min() - 0.1, m, color="tab:gray", linewidth=0.5)
        ax_t.scatter(t, m, s=6, c=t, cmap="plasma")
        ax_t.set_ylabel(magnitude)
        ax_t.set_title("magnitude against time", fontsize=10)
    else:
        order = np.argsort(t, kind="stable")
        ax_t.step(t[order], np.arange(1, len(t) + 1), where="post")
        ax_t.set_ylabel("events so far")
        ax_t.set_title(f"cumulative count ({len(list(rows))} sequence(s))", fontsize=10)
    ax_t.set_xlabel("time")
    fig.tight_layout()
    return fig
