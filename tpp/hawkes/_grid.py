"""Compiled statistics of events projected on a grid, for FaDIn's discretised objectives.

Events of each sequence are projected to ``s_n = round((t_n - t_start) / delta)`` on the grid
``0 .. G - 1`` with ``G = round((t_end - t_start) / delta) + 1``; ``z_j[s]`` counts the events
of type ``j`` in bin ``s``. With ``L = floor(W / delta)`` kernel taps ``tau = 1 .. L``, FaDIn's
l2 contrast needs (Staerman et al. 2023, Section 3):

* ``zG[j, tau]   = sum_s z_j[s - tau]``            (events of ``j`` with ``s_m + tau <= G - 1``)
* ``zN[i, j, tau] = sum_{n: type i} z_j[s_n - tau]`` (pairs at lag ``tau``)
* ``ztzG[j, k, tau, tau'] = sum_s z_j[s - tau] z_k[s - tau']``.

The reference sweeps a dense grid of ``T / delta`` bins for these. Here every statistic comes
from the pairs of events less than ``L`` bins apart: ``ztzG`` is the Toeplitz matrix of the pair
counts per lag ``tau - tau'``, minus a correction from the few pairs whose first event lies in
the last ``L`` bins of its window (where ``s_m + tau`` would pass ``G - 1``). Cost O(N x events
per window) plus O(L) per boundary pair, whatever the horizon.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = dict(cache=True, nogil=True, error_model="numpy")


@numba.njit(**_JIT)
def project(times: np.ndarray, offsets: np.ndarray, t_start: np.ndarray, t_end: np.ndarray, delta: float):
    """Grid bin of every event and the grid size ``G`` of every sequence."""
    bins = np.empty(times.size, np.int64)
    sizes = np.empty(t_start.size, np.int64)
    for b in range(t_start.size):
        G = int(np.round((t_end[b] - t_start[b]) / delta)) + 1
        sizes[b] = G
        for n in range(offsets[b], offsets[b + 1]):
            s = int(np.round((times[n] - t_start[b]) / delta))
            bins[n] = min(max(s, 0), G - 1)
    return bins, sizes


@numba.njit(**_JIT)
def count_pairs(bins: np.ndarray, offsets: np.ndarray, L: int) -> int:
    """Number of (target, source) pairs at lags 1..L bins (for allocation)."""
    total = 0
    for b in range(offsets.size - 1):
        for m in range(offsets[b], offsets[b + 1]):
            for n in range(m + 1, offsets[b + 1]):
                d = bins[n] - bins[m]
                if d > L:
                    break
                if d >= 1:
                    total += 1
    return total


@numba.njit(**_JIT)
def grid_statistics(
    bins: np.ndarray,
    marks: np.ndarray,
    offsets: np.ndarray,
    sizes: np.ndarray,
    L: int,
    K: int,
    exact: bool,
    num_pairs: int,
):
    """``zG [K, L]``, ``zN [K, K, L]``, ``ztzG [K, K, L, L]`` (exact or Toeplitz), counts ``[K]``,
    and, when ``num_pairs > 0``, the event pairs ``(target, source type, lag)`` at lags 1..L."""
    zG = np.zeros((K, L))
    zN = np.zeros((K, K, L))
    lag_counts = np.zeros((K, K, 2 * L - 1))  # pairs (m, m') by lag s_m' - s_m + L - 1
    ztzG = np.zeros((K, K, L, L))
    counts = np.zeros(K)
    near_end = np.zeros((K, L))  # events of type j with c = G - 1 - s_m < L, by c
    pair_target = np.empty(num_pairs, np.int64)
    pair_source = np.empty(num_pairs, np.int64)
    pair_lag = np.empty(num_pairs, np.int64)
    p = 0
    for b in range(offsets.size - 1):
        G = sizes[b]
        for m in range(offsets[b], offsets[b + 1]):
            j = marks[m]
            counts[j] += 1.0
            c_m = G - 1 - bins[m]
            if c_m < L:
                near_end[j, c_m] += 1.0
            for n in range(m, offsets[b + 1]):
                d = bins[n] - bins[m]
                if d > L:
                    break
                k = marks[n]
                if d >= 1:
                    zN[k, j, d - 1] += 1.0
                    if num_pairs > 0:
                        pair_target[p] = n
                        pair_source[p] = j
                        pair_lag[p] = d
                        p += 1
                if d > L - 1:
                    continue
                lag_counts[j, k, d + L - 1] += 1.0
                if n != m:
                    lag_counts[k, j, -d + L - 1] += 1.0
                if exact:
                    # pair (m, n) with first event m: entries (tau, tau - d) with tau > c_m are outside the grid
                    if c_m < L:
                        for tau in range(c_m + 1, L + 1):
                            tau2 = tau - d
                            if 1 <= tau2 <= L:
                                ztzG[j, k, tau - 1, tau2 - 1] -= 1.0
                    c_n = G - 1 - bins[n]
                    if n != m and c_n < L:
                        for tau in range(c_n + 1, L + 1):
                            tau2 = tau + d
                            if 1 <= tau2 <= L:
                                ztzG[k, j, tau - 1, tau2 - 1] -= 1.0
    for j in range(K):
        cum = 0.0
        for tau in range(1, L + 1):
            cum += near_end[j, tau - 1]  # events with c < tau do not reach bin s_m + tau
            zG[j, tau - 1] = counts[j] - cum
    for j in range(K):
        for k in range(K):
            for t1 in range(L):
                for t2 in range(L):
                    ztzG[j, k, t1, t2] += lag_counts[j, k, t1 - t2 + L - 1]
    return zG, zN, ztzG, counts, pair_target[:p], pair_source[:p], pair_lag[:p]


@numba.njit(**_JIT)
def window_pairs(times: np.ndarray, offsets: np.ndarray, support: float):
    """All pairs ``(target n, source m)`` with ``0 < t_n - t_m <= support`` within each sequence."""
    total = 0
    for b in range(offsets.size - 1):
        lo = offsets[b]
        for n in range(offsets[b], offsets[b + 1]):
            while times[n] - times[lo] > support:
                lo += 1
            for m in range(lo, n):
                if times[m] < times[n]:
                    total += 1
    target = np.empty(total, np.int64)
    source = np.empty(total, np.int64)
    p = 0
    for b in range(offsets.size - 1):
        lo = offsets[b]
        for n in range(offsets[b], offsets[b + 1]):
            while times[n] - times[lo] > support:
                lo += 1
            for m in range(lo, n):
                if times[m] < times[n]:
                    target[p] = n
                    source[p] = m
                    p += 1
    return target, source
