"""The synthetic data sets of stochastic process diffusion (Bilos et al., ICML 2023, Sec. 5.1), rewritten.

Six sets, each a seeded function returning a :class:`~sde.series.SeriesBatch` of ``n`` fully observed
series; the defaults are the paper's parameters (its generator script). Observation times are irregular
by default: each series is observed at ``length`` times, the first at 0 (the process's start) and the
other ``length - 1`` drawn uniformly on ``(0, t_end]`` and sorted, so every series has its own grid;
``irregular=False`` gives the paper's regular grid ``linspace(0, t_end, length)``.

Every value is exact at its own time, with no interpolation between grids: the Ornstein-Uhlenbeck
and Cox-Ingersoll-Ross paths by their exact Gaussian / scaled non-central chi-square transitions
between consecutive observation times; the ODE sets (Lorenz, predator-prey) by an adaptive solver with
tight tolerances evaluated at the series' own times; the sink by the matrix exponential; the sine sums
in closed form.

========================  ==========================================================  =================
set                       process (defaults)                                          grid
========================  ==========================================================  =================
:func:`ou`                ``dx = (mu t - theta x) dt + sigma dW``, ``mu = 0.02``,      64 on ``[0, 63]``
                          ``theta = 0.1``, ``sigma = 0.4``, ``x0 ~ N(0, 1)``
:func:`cir`               ``dx = a (b - x) dt + sigma sqrt(x) dW``, ``a = 1``,          64 on ``[0, 63]``
                          ``b = 1.2``, ``sigma = 0.2``, ``x0 ~ |N(0, 1)|``
:func:`lorenz`            ``x' = s (y - x)``, ``y' = x (rho - z) - y``,                  100 on ``[0, 2]``
                          ``z' = x y - beta z``, ``s = 10``, ``rho = 28``,
                          ``beta = 2.667``, ``x0 ~ N(0, 10^2 I)``
:func:`sine`              ``x(t) = sum_{k<5} c_k sin(a_k t + b_k)``, ``a ~ U[3, 4)``,   100 on ``[0, 10]``
                          ``b ~ U[0, 0.5)``, ``c ~ U[0, 1)``
:func:`predator_prey`     ``u' = 2/3 u - 2/3 u v``, ``v' = u v - v``,                    64 on ``[0, 10]``
                          ``(u0, v0) ~ U[0, 1)^2``
:func:`sink`              ``y' = y A`` (row vector), ``A = [[-4, 10], [-3, 2]]``,       64 on ``[0, 3]``
                          ``y0 ~ U[0, 1)^2``
========================  ==========================================================  =================

``load(name, n, ...)`` picks one by name (:data:`GENERATORS`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.integrate
import scipy.linalg
import torch

from sde.series import SeriesBatch

__all__ = ["GENERATORS", "cir", "load", "lorenz", "observation_times", "ou", "predator_prey", "sine", "sink"]


def observation_times(rng: np.random.Generator, n: int, length: int, t_end: float, irregular: bool) -> np.ndarray:
    """``[n, length]`` observation times: the first at 0, the rest uniform on ``(0, t_end]`` and sorted
    (``irregular``), or the regular grid ``linspace(0, t_end, length)`` for every series."""
    if int(length) < 2 or not t_end > 0:
        raise ValueError(f"need length >= 2 and t_end > 0, got length={length}, t_end={t_end}")
    if not irregular:
        return np.tile(np.linspace(0.0, t_end, length), (n, 1))
    inner = np.sort(rng.uniform(0.0, t_end, size=(n, length - 1)), axis=1)
    times = np.concatenate([np.zeros((n, 1)), inner], axis=1)
    # a draw equal to an earlier one (probability ~0) would break strict ordering: nudge it forward
    return np.maximum.accumulate(times + np.arange(length) * 1e-12 * t_end, axis=1)


def _batch(times: np.ndarray, values: np.ndarray, channels: tuple[str, ...], dtype: torch.dtype) -> SeriesBatch:
    return SeriesBatch.from_arrays(list(zip(times, values)), channel_names=channels, dtype=dtype)


def _check(n: int) -> int:
    if int(n) < 1:
        raise ValueError(f"n (the number of series) must be >= 1, got {n}")
    return int(n)


def ou(n: int = 1000, length: int = 64, *, t_end: float = 63.0, mu: float = 0.02, theta: float = 0.1,
       sigma: float = 0.4, irregular: bool = True, seed: int = 0, dtype: torch.dtype = torch.float64) -> SeriesBatch:
    """Ornstein-Uhlenbeck paths with a linear trend, ``dx = (mu t - theta x) dt + sigma dW``, ``x0 ~ N(0, 1)``.

    Exact transitions: over ``[t, t + h]`` the mean moves to ``e^{-theta h} x + mu m(t, h)`` with
    ``m = (t + h)(1 - e^{-theta h}) / theta - (1 - e^{-theta h}(1 + theta h)) / theta^2`` and the
    variance is ``sigma^2 (1 - e^{-2 theta h}) / (2 theta)``."""
    n, rng = _check(n), np.random.default_rng(seed)
    if not theta > 0:
        raise ValueError(f"theta must be > 0, got {theta}")
    times = observation_times(rng, n, length, t_end, irregular)
    x = np.empty_like(times)
    x[:, 0] = rng.standard_normal(n)
    for j in range(1, length):
        t, h = times[:, j - 1], times[:, j] - times[:, j - 1]
        decay = np.exp(-theta * h)
        trend = (t + h) * (1 - decay) / theta - (1 - decay * (1 + theta * h)) / theta**2
        std = sigma * np.sqrt(-np.expm1(-2 * theta * h) / (2 * theta))
        x[:, j] = decay * x[:, j - 1] + mu * trend + std * rng.standard_normal(n)
    return _batch(times, x[..., None], ("x",), dtype)


def cir(n: int = 1000, length: int = 64, *, t_end: float = 63.0, a: float = 1.0, b: float = 1.2, sigma: float = 0.2,
        irregular: bool = True, seed: int = 0, dtype: torch.dtype = torch.float64) -> SeriesBatch:
    """Cox-Ingersoll-Ross paths ``dx = a (b - x) dt + sigma sqrt(x) dW``, ``x0 ~ |N(0, 1)|``, exact: over a gap
    ``h``, ``x_{t+h} = c * chi'^2(4 a b / sigma^2, x_t e^{-a h} / c)`` with ``c = sigma^2 (1 - e^{-a h}) / (4 a)``."""
    n, rng = _check(n), np.random.default_rng(seed)
    if not (a > 0 and b > 0 and sigma > 0):
        raise ValueError(f"a, b and sigma must be > 0, got a={a}, b={b}, sigma={sigma}")
    times = observation_times(rng, n, length, t_end, irregular)
    x = np.empty_like(times)
    x[:, 0] = np.abs(rng.standard_normal(n))
    dof = 4 * a * b / sigma**2
    for j in range(1, length):
        h = times[:, j] - times[:, j - 1]
        c = sigma**2 * -np.expm1(-a * h) / (4 * a)
        x[:, j] = c * rng.noncentral_chisquare(dof, x[:, j - 1] * np.exp(-a * h) / c)
    return _batch(times, x[..., None], ("x",), dtype)


def _ode(field: Callable[[float, np.ndarray], np.ndarray], y0: np.ndarray, times: np.ndarray) -> np.ndarray:
    """``[n, L, D]``: each series' ODE solution at its own times (RK45, rtol 1e-8, atol 1e-10)."""
    out = np.empty((*times.shape, y0.shape[1]))
    for i in range(len(y0)):
        sol = scipy.integrate.solve_ivp(field, (0.0, float(times[i, -1])), y0[i], t_eval=times[i], rtol=1e-8,
                                        atol=1e-10)
        if not sol.success:  # pragma: no cover - the default systems are smooth on their windows
            raise RuntimeError(f"series {i}: the ODE solve failed: {sol.message}")
        out[i] = sol.y.T
    return out


def lorenz(n: int = 1000, length: int = 100, *, t_end: float = 2.0, rho: float = 28.0, sigma: float = 10.0,
           beta: float = 2.667, irregular: bool = True, seed: int = 0,
           dtype: torch.dtype = torch.float64) -> SeriesBatch:
    """Lorenz attractor paths from ``x0 ~ N(0, 10^2 I)`` (three channels x, y, z)."""
    n, rng = _check(n), np.random.default_rng(seed)
    times = observation_times(rng, n, length, t_end, irregular)
    y0 = 10.0 * rng.standard_normal((n, 3))

    def field(t: float, y: np.ndarray) -> np.ndarray:
        return np.array([sigma * (y[1] - y[0]), y[0] * (rho - y[2]) - y[1], y[0] * y[1] - beta * y[2]])

    return _batch(times, _ode(field, y0, times), ("x", "y", "z"), dtype)


def sine(n: int = 1000, length: int = 100, *, t_end: float = 10.0, components: int = 5, irregular: bool = True,
         seed: int = 0, dtype: torch.dtype = torch.float64) -> SeriesBatch:
    """Sums of ``components`` sines ``c_k sin(a_k t + b_k)``, ``a ~ U[3, 4)``, ``b ~ U[0, 0.5)``, ``c ~ U[0, 1)``."""
    n, rng = _check(n), np.random.default_rng(seed)
    times = observation_times(rng, n, length, t_end, irregular)
    a = rng.uniform(3.0, 4.0, (n, 1, components))
    b = rng.uniform(0.0, 0.5, (n, 1, components))
    c = rng.uniform(0.0, 1.0, (n, 1, components))
    x = (c * np.sin(a * times[..., None] + b)).sum(-1)
    return _batch(times, x[..., None], ("x",), dtype)


def predator_prey(n: int = 1000, length: int = 64, *, t_end: float = 10.0, irregular: bool = True, seed: int = 0,
                  dtype: torch.dtype = torch.float64) -> SeriesBatch:
    """Lotka-Volterra ``u' = 2/3 u - 2/3 u v``, ``v' = u v - v`` from ``(u0, v0) ~ U[0, 1)^2`` (channels prey,
    predator)."""
    n, rng = _check(n), np.random.default_rng(seed)
    times = observation_times(rng, n, length, t_end, irregular)
    y0 = rng.uniform(0.0, 1.0, (n, 2))

    def field(t: float, y: np.ndarray) -> np.ndarray:
        return np.array([2 / 3 * y[0] - 2 / 3 * y[0] * y[1], y[0] * y[1] - y[1]])

    return _batch(times, _ode(field, y0, times), ("prey", "predator"), dtype)


SINK_MATRIX = np.array([[-4.0, 10.0], [-3.0, 2.0]])
"""``A`` of the sink ``y' = y A`` (eigenvalues ``-1 +- 3i``: a spiral into the origin)."""


def sink(n: int = 1000, length: int = 64, *, t_end: float = 3.0, irregular: bool = True, seed: int = 0,
         dtype: torch.dtype = torch.float64) -> SeriesBatch:
    """The linear sink ``y' = y A`` (:data:`SINK_MATRIX`) from ``y0 ~ U[0, 1)^2``: ``y(t) = y0 expm(A t)``."""
    n, rng = _check(n), np.random.default_rng(seed)
    times = observation_times(rng, n, length, t_end, irregular)
    y0 = rng.uniform(0.0, 1.0, (n, 2))
    # expm(A t) for every time through A's eigendecomposition (A is diagonalisable: distinct eigenvalues)
    lam, vec = np.linalg.eig(SINK_MATRIX)
    inv = np.linalg.inv(vec)
    flows = np.einsum("ij,nlj,jk->nlik", vec, np.exp(lam * times[..., None]), inv).real  # [n, L, 2, 2]
    x = np.einsum("ni,nlik->nlk", y0, flows)
    return _batch(times, x, ("y1", "y2"), dtype)


GENERATORS: dict[str, Callable[..., SeriesBatch]] = {"cir": cir, "lorenz": lorenz, "ou": ou,
                                                     "predator_prey": predator_prey, "sine": sine, "sink": sink}
"""The six sets by name."""


def load(name: str, n: int = 1000, **options: object) -> SeriesBatch:
    """The set ``name`` (a key of :data:`GENERATORS`; ``-`` and ``_`` are the same) with ``n`` series; ``options``
    go to its generator (``length``, ``t_end``, ``irregular``, ``seed``, the process's parameters)."""
    key = str(name).replace("-", "_").lower()
    if key not in GENERATORS:
        raise ValueError(f"unknown synthetic set {name!r}; one of {sorted(GENERATORS)}")
    return GENERATORS[key](n, **options)
