"""Data with a known causal graph for structure learning, and the simple baselines SCOTCH is compared with.

Two simulated systems of SCOTCH's experiments (Wang, Jennings & Gong, ICLR 2024, Sec. 6.1), solved by
Euler-Maruyama through :func:`sde.solvers.solve`:

* :func:`lorenz96`: ``dx_i = ((x_{i+1} - x_{i-2}) x_{i-1} - x_i + F) dt + sigma dW_i`` (indices modulo
  ``D``); the parents of ``i`` are ``i - 2, i - 1, i, i + 1``. The paper's setting: ``D = 10``, ``F = 10``,
  ``sigma = 0.5``, ``x_0 ~ N(0, I)``, solver step 0.005, ``t`` in ``[0, 100]`` observed at 100 times, 30%
  of the observation times dropped.
* :func:`glycolysis`: the yeast glycolysis model of Daniels & Nemenman (2015) with 7 species
  (parameters in :data:`GLYCOLYSIS_PARAMETERS`), additive noise 0.01, initial states uniform in
  :data:`GLYCOLYSIS_INITIAL_RANGES` (the paper's ranges).

Each returns a :class:`StructureData`: the complete values on the regular grid, the grid, the true graph
``[D, D]`` with entry ``[i, j] = 1`` when ``j`` is a parent of ``i`` (``x_j`` appears in the drift of
``x_i``; self-loops included), and the observed :class:`~sde.series.SeriesBatch` with the asked-for
missingness (NaN = unobserved).

Baselines (:func:`correlation_graph`, :func:`granger_graph`) score every ordered pair from a
:class:`SeriesBatch`; :func:`auroc` scores edge scores against the truth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from sde.series import SeriesBatch
from sde.solvers import Method, solve
from tpp.model import Seed
from tpp.process import as_numpy_rng

__all__ = [
    "GLYCOLYSIS_INITIAL_RANGES",
    "GLYCOLYSIS_PARAMETERS",
    "MISSING_MODES",
    "StructureData",
    "auroc",
    "correlation_graph",
    "glycolysis",
    "glycolysis_drift",
    "glycolysis_graph",
    "granger_graph",
    "lorenz96",
    "lorenz96_drift",
    "lorenz96_graph",
    "observe_with_missing",
]

MISSING_MODES = ("rows", "values")
"""``rows``: each observation time of a series is dropped with probability ``missing`` (irregular sampling,
the paper's protocol); ``values``: each value is NaN with probability ``missing`` (partly observed rows)."""

GLYCOLYSIS_PARAMETERS: dict[str, float] = {
    "J0": 2.5, "k1": 0.52, "K1": 100.0, "K2": 6.0, "K3": 16.0, "K4": 100.0, "K5": 1.28, "K6": 12.0, "K": 1.8,
    "kappa": 13.0, "phi": 0.1, "q": 4.0, "A": 4.0, "N": 1.0,
}
"""Daniels & Nemenman (2015) yeast glycolysis, the values of SCOTCH's experiments (and its public code)."""

GLYCOLYSIS_INITIAL_RANGES = np.array(
    [[0.15, 1.60], [0.19, 2.16], [0.04, 0.20], [0.10, 0.35], [0.08, 0.30], [0.14, 2.67], [0.05, 0.10]])
"""``[7, 2]`` lower and upper bounds of the uniform initial concentrations (SCOTCH's experiments)."""


@dataclass(frozen=True)
class StructureData:
    """A simulated system: complete ``values [N, T, D]`` on ``times [T]``, the true ``graph [D, D]`` (``[i, j] = 1``:
    ``j`` is a parent of ``i``) and ``series``, the observed batch with its missing values."""

    values: np.ndarray
    times: np.ndarray
    graph: np.ndarray
    series: SeriesBatch


# ---------------------------------------------------------------------------------------------- Lorenz-96
def lorenz96_drift(x: Tensor, forcing: float = 10.0) -> Tensor:
    """``[..., D]`` Lorenz-96 drift ``(x_{i+1} - x_{i-2}) x_{i-1} - x_i + F`` (indices modulo ``D``)."""
    return (torch.roll(x, -1, -1) - torch.roll(x, 2, -1)) * torch.roll(x, 1, -1) - x + forcing


def lorenz96_graph(dim: int) -> np.ndarray:
    """``[D, D]`` int graph of Lorenz-96: ``[i, j] = 1`` for ``j`` in ``{i - 2, i - 1, i, i + 1}`` (mod ``D``)."""
    if dim < 4:
        raise ValueError(f"Lorenz-96 needs dim >= 4 (parents i-2, i-1, i, i+1 distinct), got {dim}")
    graph = np.zeros((dim, dim), np.int64)
    for i in range(dim):
        for shift in (-2, -1, 0, 1):
            graph[i, (i + shift) % dim] = 1
    return graph


class _Additive(torch.nn.Module):
    """``dx = drift(x) dt + sigma dW`` with constant diagonal noise, as torchsde sees it."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, drift, sigma: float) -> None:
        super().__init__()
        self.drift, self.sigma = drift, float(sigma)

    def f(self, t: Tensor, x: Tensor) -> Tensor:
        return self.drift(x)

    def g(self, t: Tensor, x: Tensor) -> Tensor:
        return torch.full_like(x, self.sigma)


def _grid(times: Sequence[float] | np.ndarray | None, n_steps: int, t_end: float) -> np.ndarray:
    if times is None:
        if n_steps < 2 or not t_end > 0:
            raise ValueError(f"need n_steps >= 2 and t_end > 0, got n_steps={n_steps}, t_end={t_end}")
        return np.linspace(0.0, float(t_end), int(n_steps))
    grid = np.asarray(times, np.float64).reshape(-1)
    if grid.size < 2 or not np.all(np.isfinite(grid)) or np.any(np.diff(grid) <= 0):
        raise ValueError("times must hold at least 2 finite, strictly increasing values")
    return grid


def _simulate(drift, x0: np.ndarray, times: np.ndarray, noise: float, dt: float, seed: int) -> np.ndarray:
    """``[N, T, D]`` Euler-Maruyama solution from ``x0 [N, D]`` at ``times`` (float64, fixed step ``dt``)."""
    if noise < 0 or not dt > 0:
        raise ValueError(f"noise must be >= 0 and dt > 0, got noise={noise}, dt={dt}")
    y0 = torch.as_tensor(x0, dtype=torch.float64)
    ts = torch.as_tensor(times - times[0], dtype=torch.float64)
    steps = math.ceil(float(ts[-1]) / dt - 1e-3)
    sol = solve(_Additive(drift, noise), y0, ts, method=Method.EULER, step_size=dt, adaptive=False, seed=seed,
                max_steps=max(steps + 1, 10))
    return sol.ys.numpy()


def observe_with_missing(values: np.ndarray, times: np.ndarray, missing: float = 0.0, mode: str = "rows",
                         generator: Seed = None, channel_names: Sequence[str] = ()) -> SeriesBatch:
    """A :class:`SeriesBatch` of ``values [N, T, D]`` on ``times [T]`` with a fraction ``missing`` unobserved.

    ``mode="rows"``: each series drops each time with probability ``missing`` (its first time is always
    kept, so the clock starts where the simulation does); ``"values"``: each value is NaN with that
    probability (a row may then be all NaN; it stays, the models skip it)."""
    if mode not in MISSING_MODES:
        raise ValueError(f"mode must be one of {MISSING_MODES}, got {mode!r}")
    if not 0.0 <= missing < 1.0:
        raise ValueError(f"missing must be in [0, 1), got {missing}")
    rng = as_numpy_rng(generator)
    N, T, _ = values.shape
    series = []
    for b in range(N):
        if mode == "rows":
            keep = rng.random(T) >= missing
            keep[0] = True
            series.append((times[keep], values[b, keep]))
        else:
            v = values[b].copy()
            v[rng.random(v.shape) < missing] = np.nan
            series.append((times, v))
    return SeriesBatch.from_arrays(series, channel_names=channel_names)


def lorenz96(n_series: int = 10, times: Sequence[float] | np.ndarray | None = None, *, n_steps: int = 100,
             t_end: float = 100.0, dim: int = 10, forcing: float = 10.0, noise: float = 0.5, dt: float = 0.005,
             missing: float = 0.0, missing_mode: str = "rows", x0: np.ndarray | None = None,
             seed: int = 0) -> StructureData:
    """``n_series`` stochastic Lorenz-96 paths (see the module docstring), observed at ``times`` (default
    ``n_steps`` regular times on ``[0, t_end]``) with a fraction ``missing`` unobserved (``missing_mode``).

    ``x0 [n_series, dim]``: initial states (default ``N(0, I)`` as the paper). Defaults are the paper's
    Lorenz setting (10 series, ``D = 10``, ``F = 10``, ``sigma = 0.5``, step 0.005, 100 times on ``[0, 100]``);
    pass ``missing=0.3`` for its 30%-missing variant."""
    rng = np.random.default_rng(seed)
    graph = lorenz96_graph(dim)
    grid = _grid(times, n_steps, t_end)
    start = rng.standard_normal((n_series, dim)) if x0 is None else np.asarray(x0, np.float64)
    if start.shape != (n_series, dim):
        raise ValueError(f"x0 must be [n_series, dim] = [{n_series}, {dim}], got {start.shape}")
    values = _simulate(lambda x: lorenz96_drift(x, forcing), start, grid, noise, dt, int(rng.integers(2**31)))
    series = observe_with_missing(values, grid, missing, missing_mode, rng)
    return StructureData(values, grid, graph, series)


# ---------------------------------------------------------------------------------------------- glycolysis
def glycolysis_drift(y: Tensor, params: dict[str, float] | None = None) -> Tensor:
    """``[..., 7]`` drift of the Daniels & Nemenman (2015) yeast glycolysis model (species S1..S7).

    ``v = K1 S1 S6 / (1 + (S6 / k1)^q)`` (the inhibited first reaction), then
    ``dS1 = J0 - v``, ``dS2 = 2 v - K2 S2 (N - S5) - K6 S2 S5``, ``dS3 = K2 S2 (N - S5) - K3 S3 (A - S6)``,
    ``dS4 = K3 S3 (A - S6) - K4 S4 S5 - kappa (S4 - S7)``, ``dS5 = K2 S2 (N - S5) - K4 S4 S5 - K6 S2 S5``,
    ``dS6 = -2 v + 2 K3 S3 (A - S6) - K5 S6``, ``dS7 = phi kappa (S4 - S7) - K S7``.
    """
    p = {**GLYCOLYSIS_PARAMETERS, **(params or {})}
    s1, s2, s3, s4, s5, s6, s7 = y.unbind(-1)
    v = p["K1"] * s1 * s6 / (1 + (s6 / p["k1"]) ** p["q"])
    r2 = p["K2"] * s2 * (p["N"] - s5)
    r3 = p["K3"] * s3 * (p["A"] - s6)
    r4 = p["K4"] * s4 * s5
    r6 = p["K6"] * s2 * s5
    leak = p["kappa"] * (s4 - s7)
    return torch.stack([
        p["J0"] - v, 2 * v - r2 - r6, r2 - r3, r3 - r4 - leak, r2 - r4 - r6, -2 * v + 2 * r3 - p["K5"] * s6,
        p["phi"] * leak - p["K"] * s7,
    ], -1)


def glycolysis_graph() -> np.ndarray:
    """``[7, 7]`` int graph of :func:`glycolysis_drift`: ``[i, j] = 1`` when ``S_j`` appears in ``dS_i``."""
    parents = {0: (0, 5), 1: (0, 1, 4, 5), 2: (1, 2, 4, 5), 3: (2, 3, 4, 5, 6), 4: (1, 3, 4), 5: (0, 2, 5),
               6: (3, 6)}
    graph = np.zeros((7, 7), np.int64)
    for i, js in parents.items():
        graph[i, list(js)] = 1
    return graph


def glycolysis(n_series: int = 10, times: Sequence[float] | np.ndarray | None = None, *, n_steps: int = 100,
               t_end: float = 100.0, noise: float = 0.01, dt: float = 0.01, missing: float = 0.0,
               missing_mode: str = "rows", params: dict[str, float] | None = None, seed: int = 0) -> StructureData:
    """``n_series`` paths of the stochastic yeast glycolysis model (:func:`glycolysis_drift`, parameters
    :data:`GLYCOLYSIS_PARAMETERS` overridable by ``params``), initial states uniform in
    :data:`GLYCOLYSIS_INITIAL_RANGES`, additive noise ``noise`` (0.01 as the paper), Euler step ``dt``,
    observed at ``times`` (default ``n_steps`` regular times on ``[0, t_end]``) with a fraction ``missing``
    unobserved."""
    rng = np.random.default_rng(seed)
    low, high = GLYCOLYSIS_INITIAL_RANGES.T
    start = low + (high - low) * rng.random((n_series, 7))
    grid = _grid(times, n_steps, t_end)
    values = _simulate(lambda y: glycolysis_drift(y, params), start, grid, noise, dt, int(rng.integers(2**31)))
    series = observe_with_missing(values, grid, missing, missing_mode, rng,
                                  channel_names=[f"S{i + 1}" for i in range(7)])
    return StructureData(values, grid, glycolysis_graph(), series)


# ---------------------------------------------------------------------------------------------- baselines
def auroc(scores: np.ndarray | Tensor, graph: np.ndarray, include_diagonal: bool = True) -> float:
    """Area under the ROC curve of edge ``scores [D, D]`` against the true ``graph [D, D]`` (ties count 1/2;
    the Mann-Whitney statistic). ``include_diagonal=False`` leaves the self-loops out."""
    s = scores.detach().cpu().numpy() if isinstance(scores, Tensor) else np.asarray(scores, np.float64)
    g = np.asarray(graph).astype(bool)
    keep = np.ones_like(g) if include_diagonal else ~np.eye(g.shape[0], dtype=bool)
    s, g = s[keep].astype(np.float64), g[keep]
    pos, neg = int(g.sum()), int((~g).sum())
    if pos == 0 or neg == 0:
        raise ValueError("AUROC needs both edges and non-edges in the graph")
    ranks = stats.rankdata(s)
    return float((ranks[g].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _rows(batch: SeriesBatch) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.asarray(t, np.float64), np.asarray(v, np.float64)) for t, v in batch.series()]


def correlation_graph(batch: SeriesBatch) -> np.ndarray:
    """``[D, D]`` absolute Pearson correlation of every pair of channels over the rows where both are
    observed (all series pooled): a symmetric score that ignores time."""
    values = np.concatenate([v for _, v in _rows(batch)])
    D = values.shape[1]
    out = np.zeros((D, D))
    for i in range(D):
        for j in range(D):
            both = ~np.isnan(values[:, i]) & ~np.isnan(values[:, j])
            if both.sum() > 2:
                out[i, j] = abs(np.corrcoef(values[both, i], values[both, j])[0, 1])
    return np.nan_to_num(out)


def granger_graph(batch: SeriesBatch) -> np.ndarray:
    """``[D, D]`` linear Granger scores from a VAR(1) on consecutive observed rows: ``[i, j]`` is the F
    statistic of dropping ``x_j(t_k)`` from the least-squares regression of ``x_i(t_{k+1})`` on
    ``x(t_k)`` (with an intercept and the gap ``t_{k+1} - t_k``), i.e. ``-log`` of its p-value ordered
    the same. Pairs with any NaN are left out."""
    X, Y = [], []
    for t, v in _rows(batch):
        if len(t) < 2:
            continue
        gap = np.diff(t)[:, None]
        X.append(np.concatenate([v[:-1], gap], 1))
        Y.append(v[1:])
    X, Y = np.concatenate(X), np.concatenate(Y)
    D = Y.shape[1]
    out = np.zeros((D, D))
    for i in range(D):
        ok = ~np.isnan(Y[:, i]) & ~np.isnan(X).any(1)
        A = np.concatenate([np.ones((int(ok.sum()), 1)), X[ok]], 1)
        y = Y[ok, i]
        n, p = A.shape
        if n <= p + 1:
            continue
        rss_full = np.sum((y - A @ np.linalg.lstsq(A, y, rcond=None)[0]) ** 2)
        for j in range(D):
            R = np.delete(A, 1 + j, axis=1)
            rss = np.sum((y - R @ np.linalg.lstsq(R, y, rcond=None)[0]) ** 2)
            f = (rss - rss_full) / max(rss_full / (n - p), 1e-300)
            # -log p of the F(1, n - p) test: the same order as F, but the number a reader expects
            out[i, j] = -stats.f.logsf(max(f, 0.0), 1, n - p)
    return out
