"""Exact simulation of continuous-time Markov jump processes and the synthetic data of Neural MJP.

A Markov jump process on ``S`` states is given by its off-diagonal rates ``R[i, j] >= 0`` (rate of a
jump ``i -> j``); its generator is ``Q = R - diag(R 1)``. :func:`gillespie` draws exact paths
(Gillespie 1977: an ``Exp(sum_j R[z, j])`` holding time, then the next state with probabilities
``R[z, :] / sum_j R[z, j]``), for all sequences at once. A path is an
:class:`~tpp.events.EventBatch` whose marks are the states entered; its first event sits at
``t_start`` and gives the initial state (it is not a jump).

No data ship with Neural MJP (Seifner & Sanchez, ICML 2023); its synthetic sets come from such a
sampler. Here: the discrete flashing ratchet of their experiments (:func:`flashing_ratchet_rates`,
Roldan & Parrondo, PRL 105, 150607, 2010) and a two-state switching (ion-channel-like) process
(:func:`two_state_rates`); :func:`observe` turns paths into noisy observations at irregular times
(a :class:`sde.series.SeriesBatch`), as in the paper's protocol (times uniform on the window, sorted).

Exact fractional Brownian motion and fractional OU paths (:func:`fbm`, :func:`fou`, Davies-Harte) live in
:mod:`sde.fractional` and are re-exported here; so are the systems with a known causal graph of SCOTCH's
experiments (:func:`lorenz96`, :func:`glycolysis`), which live in :mod:`sde.structure_data`.
The Lorenz-driven Poisson population of the Langevin-flow experiments (:func:`lorenz_spikes`) lives in
:mod:`sde.spiking_data` and is re-exported here. The tumour-growth simulator of the Bayesian neural CDE
experiments (:func:`tumour_growth`) lives in :mod:`sde.tumour` (imported on call: it needs SciPy).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from sde.fractional import fbm, fou, paths_to_series  # exact fractional paths (Davies-Harte), re-exported here
from sde.structure_data import glycolysis, lorenz96  # systems with a known graph (SCOTCH), re-exported here
from sde.spiking_data import lorenz_spikes  # Lorenz-driven Poisson population (Langevin flows), re-exported here
from tpp.events import EventBatch
from tpp.model import Seed
from tpp.process import as_numpy_rng

if TYPE_CHECKING:  # the series batch is only needed by observe(); imported there
    from sde.series import SeriesBatch
    from sde.tumour import TumourSimulation

__all__ = [
    "fbm",
    "flashing_ratchet_rates",
    "fou",
    "generator_matrix",
    "gillespie",
    "glycolysis",
    "lorenz96",
    "lorenz_spikes",
    "observe",
    "paths_to_series",
    "states_at",
    "stationary_distribution",
    "tumour_growth",
    "two_state_rates",
]

RatesLike = np.ndarray | Tensor | Sequence[Sequence[float]]


def _rates_array(rates: RatesLike, name: str = "rates") -> np.ndarray:
    """Off-diagonal rates as a float64 ``[S, S]`` array with a zero diagonal (the diagonal is ignored)."""
    array = rates.detach().cpu().numpy() if isinstance(rates, Tensor) else np.asarray(rates)
    array = array.astype(np.float64)
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] < 1:
        raise ValueError(f"{name} must be a square [S, S] matrix, got shape {array.shape}")
    off = ~np.eye(array.shape[0], dtype=bool)
    bad = np.argwhere(off & ~(np.isfinite(array) & (array >= 0)))
    if bad.size:
        i, j = bad[0]
        raise ValueError(f"{name}[{i}, {j}] = {array[i, j]!r}: off-diagonal rates must be finite and >= 0")
    return np.where(off, array, 0.0)


def generator_matrix(rates: Tensor) -> Tensor:
    """Generator ``Q = R - diag(R 1)`` of off-diagonal rates ``R [..., S, S]``.

    Differentiable; the diagonal of ``R`` is ignored, so a generator matrix maps to itself.
    """
    eye = torch.eye(rates.shape[-1], dtype=torch.bool, device=rates.device)
    off = rates.masked_fill(eye, 0.0)
    return off - torch.diag_embed(off.sum(-1))


def stationary_distribution(rates: RatesLike) -> np.ndarray:
    """``pi [S]`` with ``pi Q = 0``, ``sum(pi) = 1``; raises when it is not unique (a reducible chain)."""
    R = _rates_array(rates)
    S = R.shape[0]
    Q = R - np.diag(R.sum(1))
    if S > 1 and np.linalg.matrix_rank(Q) < S - 1:
        raise ValueError("the stationary distribution is not unique: the chain is reducible")
    # pi Q = 0 with the normalisation appended: a consistent overdetermined system, solved exactly.
    A = np.vstack([Q.T, np.ones((1, S))])
    b = np.zeros(S + 1)
    b[-1] = 1.0
    pi = np.linalg.lstsq(A, b, rcond=None)[0]
    return np.clip(pi, 0.0, None) / np.clip(pi, 0.0, None).sum()


def _initial_states(initial, R: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    S = R.shape[0]
    if initial is None:
        probs = stationary_distribution(R)
    else:
        arr = initial.detach().cpu().numpy() if isinstance(initial, Tensor) else np.asarray(initial)
        if arr.ndim == 0 or (arr.dtype.kind in "iu" and arr.shape == (n,)):
            states = np.broadcast_to(arr.astype(np.int64), (n,)).copy()
            if np.any((states < 0) | (states >= S)):
                raise ValueError(f"initial states must lie in 0..{S - 1}, got {np.unique(states).tolist()}")
            return states
        probs = arr.astype(np.float64)
        if probs.shape != (S,) or np.any(probs < 0) or not np.isclose(probs.sum(), 1.0):
            raise ValueError(
                f"initial must be a state, one state per sequence, or a probability vector over {S} states"
            )
    return rng.choice(S, size=n, p=probs / probs.sum())


def gillespie(
    rates: RatesLike,
    n: int,
    t_end: float | np.ndarray,
    *,
    t_start: float | np.ndarray = 0.0,
    initial: int | np.ndarray | Tensor | None = None,
    generator: Seed = None,
    max_jumps: int = 50_000_000,
) -> EventBatch:
    """``n`` exact paths of the jump process with off-diagonal ``rates [S, S]`` on ``[t_start, t_end]``.

    ``initial``: a state, one state per sequence (``int`` array ``[n]``), a probability vector
    ``[S]``, or ``None`` for the stationary distribution. The returned batch has the initial
    state as its first event at ``t_start``, then one event per jump (mark = state entered).
    """
    R = _rates_array(rates)
    S = R.shape[0]
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = as_numpy_rng(generator)
    starts = np.broadcast_to(np.asarray(t_start, np.float64), (n,)).copy()
    ends = np.broadcast_to(np.asarray(t_end, np.float64), (n,)).copy()
    if np.any(~np.isfinite(starts)) or np.any(~np.isfinite(ends)) or np.any(ends < starts):
        raise ValueError("t_start and t_end must be finite with t_end >= t_start")
    exit_rate = R.sum(1)
    # Jump-chain CDF per state; the last reachable state's entry is set to exactly 1 so rounding
    # can never select an unreachable state (or the current one).
    with np.errstate(invalid="ignore", divide="ignore"):
        cdf = np.cumsum(R / exit_rate[:, None], axis=1)
    for i in range(S):
        reachable = np.flatnonzero(R[i] > 0)
        if reachable.size:
            cdf[i, reachable[-1]:] = 1.0
    state = _initial_states(initial, R, n, rng)
    now = starts.copy()
    seqs, times, marks = [np.arange(n)], [starts.copy()], [state.copy()]
    alive = np.arange(n)
    total = n
    while alive.size:
        rate = exit_rate[state[alive]]
        with np.errstate(divide="ignore"):
            wait = rng.standard_exponential(alive.size) / rate  # inf in absorbing states
        t_next = now[alive] + wait
        keep = t_next <= ends[alive]
        alive, t_next = alive[keep], t_next[keep]
        if not alive.size:
            break
        u = rng.random(alive.size)
        new = (u[:, None] >= cdf[state[alive]]).sum(1)
        now[alive] = t_next
        state[alive] = new
        seqs.append(alive.copy())
        times.append(t_next)
        marks.append(new)
        total += alive.size
        if total > max_jumps:
            raise RuntimeError(f"simulation passed max_jumps={max_jumps}: shorten t_end or raise max_jumps")
    seq = np.concatenate(seqs)
    order = np.argsort(seq, kind="stable")  # chunks were appended in time order within each sequence
    offsets = np.concatenate([[0], np.cumsum(np.bincount(seq, minlength=n))]).astype(np.int64)
    return EventBatch.from_flat(
        np.concatenate(times)[order], offsets, starts, ends, np.concatenate(marks)[order], S
    )


def states_at(paths: EventBatch, t: Tensor | np.ndarray) -> Tensor:
    """``[B, T]`` state of each path at times ``t`` (``[T]`` or ``[B, T]``); paths are right-continuous."""
    t = torch.as_tensor(t, dtype=paths.dtype, device=paths.device)
    if t.dim() == 1:
        t = t.expand(len(paths), -1)
    times = torch.where(paths.mask, paths.time, torch.full_like(paths.time, float("inf")))
    idx = torch.searchsorted(times.contiguous(), t.contiguous(), side="right") - 1
    return paths.mark.gather(1, idx.clamp_min(0))


def observe(
    paths: EventBatch,
    num_obs: int | None = None,
    *,
    times: Tensor | np.ndarray | None = None,
    means: np.ndarray | Sequence[float] | None = None,
    noise_std: float = 0.0,
    generator: Seed = None,
    channel_names: Sequence[str] = (),
) -> SeriesBatch:
    """Noisy observations of ``paths`` at irregular times: ``x = means[z(t)] + noise_std * N(0, 1)``.

    Times: ``num_obs`` per path drawn uniformly on its window and sorted (Neural MJP's protocol), or
    given ``times`` (``[T]`` shared or ``[B, T]``). ``means [S]`` or ``[S, C]`` (default: the state
    index itself, one channel); ``noise_std = 0`` with the default means observes the states exactly
    (codes for a categorical emission).
    """
    from sde.series import SeriesBatch

    rng = as_numpy_rng(generator)
    B, S = len(paths), paths.num_marks
    if (times is None) == (num_obs is None):
        raise ValueError("give exactly one of num_obs and times")
    if times is None:
        if num_obs < 1:
            raise ValueError(f"num_obs must be >= 1, got {num_obs}")
        t0 = paths.t_start.detach().cpu().numpy()[:, None]
        t1 = paths.t_end.detach().cpu().numpy()[:, None]
        obs_t = np.sort(t0 + (t1 - t0) * rng.random((B, num_obs)), axis=1)
    else:
        obs_t = times.detach().cpu().numpy() if isinstance(times, Tensor) else np.asarray(times, np.float64)
        obs_t = np.broadcast_to(obs_t.astype(np.float64), (B, obs_t.shape[-1])).copy()
        if np.any(np.diff(obs_t, axis=1) < 0):
            raise ValueError("observation times must be sorted")
    mu = np.arange(S, dtype=np.float64)[:, None] if means is None else np.asarray(means, np.float64)
    if mu.ndim == 1:
        mu = mu[:, None]
    if mu.shape[0] != S:
        raise ValueError(f"means must have one row per state ({S}), got shape {mu.shape}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    z = states_at(paths, torch.from_numpy(obs_t)).cpu().numpy()
    values = mu[z] + noise_std * rng.standard_normal((B, obs_t.shape[1], mu.shape[1]))
    time = torch.from_numpy(obs_t).to(paths.dtype)
    return SeriesBatch(
        time=time,
        values=torch.from_numpy(values).to(paths.dtype),
        mask=torch.ones(obs_t.shape, dtype=torch.bool),
        channel_names=tuple(channel_names),
    )


def flashing_ratchet_rates(V: float = 1.0, r: float = 1.0, b: float = 1.0, temperature: float = 1.0) -> np.ndarray:
    """Rates ``[6, 6]`` of the discrete flashing ratchet (Roldan & Parrondo 2010, as in Neural MJP's experiments).

    States ``0, 1, 2``: potential on, particle at ``x = 0, 1, 2`` on a ring with energy ``x V``;
    jumps ``x -> y`` at rate ``exp(-(y - x) V / (2 T))``. States ``3, 4, 5``: potential off, free
    jumps at rate ``b``. The potential switches on <-> off at rate ``r`` keeping ``x``. Neural MJP
    uses ``V = r = b = T = 1``.
    """
    if min(r, b, temperature) <= 0:
        raise ValueError("r, b and temperature must be > 0")
    energy = V * np.arange(3, dtype=np.float64)
    on = np.exp(-(energy[None, :] - energy[:, None]) / (2.0 * temperature))
    off = np.full((3, 3), float(b))
    np.fill_diagonal(on, 0.0)
    np.fill_diagonal(off, 0.0)
    switch = r * np.eye(3)
    return np.block([[on, switch], [switch, off]])


def two_state_rates(opening: float = 0.5, closing: float = 1.0) -> np.ndarray:
    """Rates ``[2, 2]`` of a two-state switch (ion channel): state 0 closed, 1 open; ``0 -> 1`` at ``opening``."""
    if opening <= 0 or closing <= 0:
        raise ValueError("opening and closing rates must be > 0")
    return np.array([[0.0, opening], [closing, 0.0]])


def tumour_growth(num_patients: int, gamma: float = 4.0, horizon: int = 60, seed: Seed = 0,
                  **options: object) -> TumourSimulation:
    """Tumour growth under chemo- and radiotherapy with time-varying confounding ``gamma`` and informative
    observation: :func:`sde.tumour.simulate_tumour` (its docstring states the model and its parameters)."""
    from sde.tumour import simulate_tumour

    return simulate_tumour(num_patients, gamma, horizon, seed, **options)  # type: ignore[arg-type]
