"""Compiled inner loops of the nonparametric (piecewise-constant kernel) Hawkes process.

The kernel ``phi_ij`` has finite support ``[0, W)``, so only the pairs ``(q, m)`` of a query time
``t_q`` and an event ``t_m`` with ``0 < t_q - t_m < W`` matter; everything further back has spent its
whole kernel. :func:`window_pairs` lists those pairs once, by a pass over the sorted events of each
sequence; every EM iteration and every torch evaluation then works on the pair arrays alone.

Only events strictly earlier in time excite (``t_q - t_m > 0``): ties do not excite one another,
the same convention as :mod:`tpp.hawkes._recursion`.

Arrays use the concatenated layout of :meth:`tpp.events.EventBatch.to_flat`
(``times``, ``marks``, ``seq_offsets``, ``t_start``, ``t_end``).
"""

from __future__ import annotations

import math

import numba
import numpy as np

_JIT = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")


@numba.njit(**_JIT)
def window_pairs(
    queries: np.ndarray, query_offsets: np.ndarray, times: np.ndarray, offsets: np.ndarray, support: float
):
    """Every pair ``(q, m)`` of a query and an event of the same sequence with ``0 < t_q - t_m < support``.

    ``queries`` are concatenated per sequence by ``query_offsets`` (any order within a sequence);
    ``times`` are the sorted events, concatenated by ``offsets``. Returns ``pair_query``,
    ``pair_event`` (flat indices, grouped by query in increasing order, events in increasing
    order within a query), ``lag = t_q - t_m`` and ``first [Q]``: the flat index of the first
    event inside the window of each query (the events of its sequence before it have lags
    ``>= support``: their kernel is spent, which the compensator needs to know).

    The window test is done on the computed lag itself (a backward scan from the last event
    strictly before ``t_q``), so a pair is in the list exactly when its float lag is in
    ``(0, support)``: the bin of a listed lag is never past the last one by rounding.
    """
    num_seq = offsets.size - 1
    Q = queries.size
    first = np.empty(Q, np.int64)
    last = np.empty(Q, np.int64)
    total = 0
    for b in range(num_seq):
        e0 = offsets[b]
        e1 = offsets[b + 1]
        seq_times = times[e0:e1]
        for q in range(query_offsets[b], query_offsets[b + 1]):
            t = queries[q]
            stop = e0 + np.searchsorted(seq_times, t)  # side="left": events strictly before t
            m = stop - 1
            while m >= e0 and t - times[m] < support:
                m -= 1
            first[q] = m + 1
            last[q] = stop
            total += stop - m - 1
    pair_query = np.empty(total, np.int64)
    pair_event = np.empty(total, np.int64)
    lag = np.empty(total)
    k = 0
    for q in range(Q):
        for m in range(first[q], last[q]):
            pair_query[k] = q
            pair_event[k] = m
            lag[k] = queries[q] - times[m]
            k += 1
    return pair_query, pair_event, lag, first


@numba.njit(**_JIT)
def em_step(
    mu: np.ndarray,
    kernel_flat: np.ndarray,
    marks: np.ndarray,
    pair_ptr: np.ndarray,
    pair_cell: np.ndarray,
):
    """One E-step of the EM of Lewis & Mohler (2011) and Marsan & Lengline (2008), fused into one pass.

    ``pair_ptr [N + 1]`` delimits the pairs of each event ``n`` (CSR layout: the pairs are grouped
    by the excited event), and ``pair_cell`` is the flat index ``(i K + j) B + b`` of the kernel
    value ``phi_ij`` on lag bin ``b`` that the pair uses. With
    ``lambda_n = mu_{k_n} + sum_{pairs of n} kernel_flat[cell]``, the probability that event ``n``
    is an immigrant is ``mu_{k_n} / lambda_n`` and that it is a child of the pair's parent is
    ``kernel_flat[cell] / lambda_n``. Both are proportional to the current parameter, so the
    expected counts are returned divided by it (the M-step multiplies back):

    * ``inv_by_type [K] = sum_{n: k_n = i} 1 / lambda_n`` (expected immigrants ``= mu_i * that``),
    * ``inv_by_cell [K K B] = sum_{pairs in cell} 1 / lambda_n`` (expected offspring
      ``= kernel_flat[cell] * that``),
    * ``sum_log = sum_n log lambda_n``, the event part of the log-likelihood at the current
      parameters (the compensator part is linear in them and needs no pass).

    One sequential pass over the pairs with no temporaries: several times faster than the same
    arithmetic as numpy gathers and ``bincount``s, which each stream the pair arrays once.
    """
    N = marks.size
    inv_by_type = np.zeros(mu.size)
    inv_by_cell = np.zeros(kernel_flat.size)
    sum_log = 0.0
    for n in range(N):
        i = marks[n]
        lam = mu[i]
        for p in range(pair_ptr[n], pair_ptr[n + 1]):
            lam += kernel_flat[pair_cell[p]]
        inv = 1.0 / lam
        sum_log += math.log(lam)
        inv_by_type[i] += inv
        for p in range(pair_ptr[n], pair_ptr[n + 1]):
            inv_by_cell[pair_cell[p]] += inv
    return inv_by_type, inv_by_cell, sum_log
