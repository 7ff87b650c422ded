"""Compiled inner loops for Hawkes processes with (sums of) exponential kernels.

The kernel is ``phi_ij(t) = sum_u A[i, j, u] * beta[u] * exp(-beta[u] t)`` (tick's convention: row
``i`` is the excited type, column ``j`` the exciting one, ``A`` the kernel's integral). With
``R[j, u](t) = sum_{t_m < t, mark_m = j} exp(-beta[u] (t - t_m))`` the intensity is
``lambda_i(t) = mu_i + sum_{j,u} A[i, j, u] beta[u] R[j, u](t)``, and ``R`` obeys the O(K U)
recursion ``R(t') = exp(-beta (t' - t)) R(t)`` between events (Ozaki 1979). Each loop below is
one pass over the events: O(N K U) time, O(K U) memory.

Only events strictly earlier in time excite: events with equal times (ties) do not excite one
another, so a data set with ties cannot buy likelihood with zero-lag excitation.

Arrays use the concatenated layout of :meth:`tpp.events.EventBatch.to_flat`
(``times``, ``marks``, ``seq_offsets``, ``t_start``, ``t_end``).
"""

from __future__ import annotations

import math

import numba
import numpy as np

_JIT = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")


@numba.njit(**_JIT)
def loglik_and_grad(
    times: np.ndarray,
    marks: np.ndarray,
    offsets: np.ndarray,
    t_start: np.ndarray,
    t_end: np.ndarray,
    mu: np.ndarray,
    adjacency: np.ndarray,
    beta: np.ndarray,
    seq_weights: np.ndarray,
    need_grad: bool,
):
    """Exact log-likelihood per sequence and the ``seq_weights``-weighted gradient, in one fused pass.

    ``log L = sum_n log lambda_{m_n}(t_n) - sum_i int_{t_start}^{t_end} lambda_i(t) dt`` with the
    compensator in closed form: ``sum_i mu_i (t_end - t_start) + sum_{m,i,u} A[i, m_m, u] (1 - exp(-beta_u (t_end - t_m)))``.
    Returns ``(loglik[B], d/dmu [K], d/dA [K, K, U], d/dbeta [U])``; the gradients are of
    ``sum_b seq_weights[b] * loglik[b]``.
    """
    num_seq = offsets.size - 1
    K = mu.size
    U = beta.size
    loglik = np.zeros(num_seq)
    g_mu = np.zeros(K)
    g_adj = np.zeros((K, K, U))
    g_beta = np.zeros(U)
    state = np.zeros((K, U))  # R[j, u] at the current time, events strictly before it
    d_state = np.zeros((K, U))  # dR/dbeta
    pending = np.zeros(K)  # events at the current time: they excite only later times
    tail_sum = np.zeros((K, U))  # sum over source events of (1 - exp(-beta (T - t_m))), weighted
    d_tail = np.zeros(U)
    col_sum = np.zeros((K, U))  # sum_i A[i, j, u]
    for j in range(K):
        for u in range(U):
            s = 0.0
            for i in range(K):
                s += adjacency[i, j, u]
            col_sum[j, u] = s
    mu_total = 0.0
    for i in range(K):
        mu_total += mu[i]
    for b in range(num_seq):
        w = seq_weights[b]
        state[:, :] = 0.0
        d_state[:, :] = 0.0
        pending[:] = 0.0
        t_now = t_start[b]
        t_stop = t_end[b]
        total = 0.0
        for n in range(offsets[b], offsets[b + 1]):
            t = times[n]
            i = marks[n]
            if t > t_now:
                dt = t - t_now
                for u in range(U):
                    decay = math.exp(-beta[u] * dt)
                    for j in range(K):
                        r = state[j, u] + pending[j]
                        d_state[j, u] = decay * (d_state[j, u] - dt * r)
                        state[j, u] = decay * r
                pending[:] = 0.0
                t_now = t
            lam = mu[i]
            for j in range(K):
                for u in range(U):
                    lam += adjacency[i, j, u] * beta[u] * state[j, u]
            total += math.log(lam)
            tail = t_stop - t
            for u in range(U):
                e = math.exp(-beta[u] * tail)
                total -= col_sum[i, u] * (1.0 - e)
                if need_grad:
                    tail_sum[i, u] += w * (1.0 - e)
                    d_tail[u] += w * col_sum[i, u] * tail * e
            if need_grad:
                inv = w / lam
                g_mu[i] += inv
                for j in range(K):
                    for u in range(U):
                        g_adj[i, j, u] += inv * beta[u] * state[j, u]
                        g_beta[u] += inv * adjacency[i, j, u] * (state[j, u] + beta[u] * d_state[j, u])
            pending[i] += 1.0
        duration = t_stop - t_start[b]
        total -= mu_total * duration
        loglik[b] = total
        if need_grad:
            for i in range(K):
                g_mu[i] -= w * duration
    if need_grad:
        for j in range(K):
            for u in range(U):
                for i in range(K):
                    g_adj[i, j, u] -= tail_sum[j, u]
        for u in range(U):
            g_beta[u] -= d_tail[u]
    return loglik, g_mu, g_adj, g_beta


@numba.njit(**_JIT)
def loglik_chunk(
    times: np.ndarray,
    marks: np.ndarray,
    t_stop: float,
    mu: np.ndarray,
    adjacency: np.ndarray,
    beta: np.ndarray,
    state: np.ndarray,
    pending: np.ndarray,
    clock: np.ndarray,
) -> float:
    """The recursion of :func:`loglik_and_grad` over one chunk of ONE sequence's events, no gradient.

    ``state [K, U]``, ``pending [K]`` and ``clock [1]`` (the current time) carry the recursion from
    one chunk to the next and are updated in place: start them at zeros and ``t_start``. Returns the
    chunk's share of the log-likelihood (log intensities minus each event's excitation integrated to
    ``t_stop``); the caller subtracts ``sum(mu) (t_stop - t_start)`` once. Memory: O(K U) beyond the chunk.
    """
    K = mu.size
    U = beta.size
    col_sum = np.zeros((K, U))
    for j in range(K):
        for u in range(U):
            for i in range(K):
                col_sum[j, u] += adjacency[i, j, u]
    t_now = clock[0]
    total = 0.0
    for n in range(times.size):
        t = times[n]
        i = marks[n]
        if t > t_now:
            dt = t - t_now
            for u in range(U):
                decay = math.exp(-beta[u] * dt)
                for j in range(K):
                    state[j, u] = decay * (state[j, u] + pending[j])
            pending[:] = 0.0
            t_now = t
        lam = mu[i]
        for j in range(K):
            for u in range(U):
                lam += adjacency[i, j, u] * beta[u] * state[j, u]
        total += math.log(lam)
        for u in range(U):
            total -= col_sum[i, u] * (1.0 - math.exp(-beta[u] * (t_stop - t)))
        pending[i] += 1.0
    clock[0] = t_now
    return total


@numba.njit(**_JIT)
def post_event_states(times: np.ndarray, marks: np.ndarray, offsets: np.ndarray, beta: np.ndarray, num_marks: int):
    """``R[n, j, u] = sum_{m <= n, mark_m = j} exp(-beta_u (t_n - t_m))`` and the counts ``C[n, j]`` of
    events ``m <= n`` of type ``j``, within each sequence. From these, the history strictly before
    any query time ``t`` is a decay of the state at the last event with ``t_m < t``."""
    N = times.size
    U = beta.size
    R = np.zeros((N, num_marks, U))
    C = np.zeros((N, num_marks))
    for b in range(offsets.size - 1):
        for n in range(offsets[b], offsets[b + 1]):
            if n > offsets[b]:
                dt = times[n] - times[n - 1]
                for u in range(U):
                    decay = math.exp(-beta[u] * dt)
                    for j in range(num_marks):
                        R[n, j, u] = R[n - 1, j, u] * decay
                for j in range(num_marks):
                    C[n, j] = C[n - 1, j]
            for u in range(U):
                R[n, marks[n], u] += 1.0
            C[n, marks[n]] += 1.0
    return R, C


@numba.njit(**_JIT)
def least_squares_statistics(
    times: np.ndarray,
    marks: np.ndarray,
    offsets: np.ndarray,
    t_start: np.ndarray,
    t_end: np.ndarray,
    beta: np.ndarray,
    num_marks: int,
):
    """Sufficient statistics of the least-squares contrast for fixed decays.

    With features ``f_0 = 1`` and ``f_(j,u)(t) = beta_u R[j, u](t)``, ``lambda_i = w_i . f`` and the
    contrast ``sum_i int lambda_i^2 dt - 2 sum_{n: m_n = i} lambda_i(t_n)`` equals
    ``sum_i w_i^T Q w_i - 2 b_i^T w_i`` with ``Q = int f f^T dt`` (``[P, P]``, ``P = 1 + K U``) and
    ``b_i = sum_{n: m_n = i} f(t_n)`` (``[K, P]``). Between events ``f`` decays exponentially, so
    each ``Q`` entry integrates in closed form.
    """
    K = num_marks
    U = beta.size
    P = 1 + K * U
    Q = np.zeros((P, P))
    bvec = np.zeros((K, P))
    state = np.zeros((K, U))
    pending = np.zeros(K)
    f = np.zeros(P)
    for b in range(offsets.size - 1):
        state[:, :] = 0.0
        pending[:] = 0.0
        t_now = t_start[b]
        Q[0, 0] += t_end[b] - t_start[b]
        n0 = offsets[b]
        n1 = offsets[b + 1]
        for n in range(n0, n1 + 1):
            t = times[n] if n < n1 else t_end[b]
            if t > t_now:
                dt = t - t_now
                for j in range(K):
                    for u in range(U):
                        state[j, u] += pending[j]
                pending[:] = 0.0
                # integrals over (t_now, t) of f_0 f_p and f_p f_q with f_p(s) = beta_u R[j,u] exp(-beta_u (s - t_now))
                for j in range(K):
                    for u in range(U):
                        p = 1 + j * U + u
                        a = beta[u] * state[j, u]
                        if a == 0.0:
                            continue
                        Q[0, p] += state[j, u] * (1.0 - math.exp(-beta[u] * dt))
                        for k in range(K):
                            for v in range(U):
                                q = 1 + k * U + v
                                if q < p:
                                    continue
                                c = beta[v] * state[k, v]
                                if c == 0.0:
                                    continue
                                rate = beta[u] + beta[v]
                                Q[p, q] += a * c * (1.0 - math.exp(-rate * dt)) / rate
                for u in range(U):
                    decay = math.exp(-beta[u] * dt)
                    for j in range(K):
                        state[j, u] *= decay
                t_now = t
            if n == n1:
                break
            i = marks[n]
            f[0] = 1.0
            for j in range(K):
                for u in range(U):
                    f[1 + j * U + u] = beta[u] * state[j, u]
            for p in range(P):
                bvec[i, p] += f[p]
            pending[i] += 1.0
    for p in range(P):
        for q in range(p):
            Q[p, q] = Q[q, p]
    return Q, bvec


@numba.njit(**_JIT)
def event_features(
    times: np.ndarray,
    marks: np.ndarray,
    offsets: np.ndarray,
    t_start: np.ndarray,
    t_end: np.ndarray,
    beta: np.ndarray,
    num_marks: int,
    rows: np.ndarray,
):
    """Per-event sufficient statistics for fixed decays, computed once before an MLE.

    ``X[n, j U + u] = beta_u R[j, u](t_n)`` (history strictly before ``t_n``), so that
    ``lambda_{m_n}(t_n) = mu_{m_n} + A[m_n] . X[n]``; ``tails[j U + u] = sum_{m: mark j}
    (1 - exp(-beta_u (t_end - t_m)))`` and ``duration = sum_b (t_end_b - t_start_b)`` make the
    compensator ``duration sum_i mu_i + sum_i A[i] . tails``. Every later evaluation of the
    likelihood is then free of exponentials and of the sequential recursion. Event ``n`` is
    written to row ``rows[n]`` (e.g. grouped by mark, so each type's rows are contiguous).
    """
    K = num_marks
    U = beta.size
    N = times.size
    X = np.zeros((N, K * U))
    tails = np.zeros(K * U)
    state = np.zeros((K, U))
    pending = np.zeros(K)
    duration = 0.0
    for b in range(offsets.size - 1):
        state[:, :] = 0.0
        pending[:] = 0.0
        t_now = t_start[b]
        duration += t_end[b] - t_start[b]
        for n in range(offsets[b], offsets[b + 1]):
            t = times[n]
            if t > t_now:
                dt = t - t_now
                for u in range(U):
                    decay = math.exp(-beta[u] * dt)
                    for j in range(K):
                        state[j, u] = decay * (state[j, u] + pending[j])
                pending[:] = 0.0
                t_now = t
            row = rows[n]
            for j in range(K):
                for u in range(U):
                    X[row, j * U + u] = beta[u] * state[j, u]
            i = marks[n]
            for u in range(U):
                tails[i * U + u] += 1.0 - math.exp(-beta[u] * (t_end[b] - t))
            pending[i] += 1.0
    return X, tails, duration


@numba.njit(**_JIT)
def target_loglik_and_grad(X: np.ndarray, mu: float, weights: np.ndarray, tails: np.ndarray, duration: float):
    """The part of the log-likelihood that depends on one target type ``i``, with its gradient.

    For fixed decays the log-likelihood separates over targets:
    ``sum_{n: m_n = i} log(mu_i + A[i] . X[n]) - mu_i duration - A[i] . tails``; ``X`` holds the
    rows of :func:`event_features` of the events of type ``i`` and ``weights`` is ``A[i]`` flattened.
    """
    N, P = X.shape
    g_w = np.zeros(P)
    g_mu = 0.0
    total = 0.0
    for n in range(N):
        lam = mu
        for p in range(P):
            lam += weights[p] * X[n, p]
        total += math.log(lam)
        inv = 1.0 / lam
        g_mu += inv
        for p in range(P):
            g_w[p] += inv * X[n, p]
    total -= mu * duration
    g_mu -= duration
    for p in range(P):
        total -= weights[p] * tails[p]
        g_w[p] -= tails[p]
    return total, g_mu, g_w


@numba.njit(**_JIT)
def _seed(seed: int) -> None:
    np.random.seed(seed)


@numba.njit(**_JIT)
def simulate_thinning(
    mu: np.ndarray,
    adjacency: np.ndarray,
    beta: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    init_state: np.ndarray,
    max_events: int,
):
    """Exact simulation by Ogata's thinning. Between events the intensity only decays, so its value
    just after the last point is a valid upper bound.

    The state is the excitation of each target, ``E[i, u] = sum_j A[i, j, u] beta_u R[j, u]``,
    which decays like ``R``: a candidate costs O(K U), an accepted event O(K U) more.
    ``init_state [B, K, U]``: the history's ``R`` at each start (zeros without history).
    Returns concatenated ``times``, ``marks``, ``counts [B]`` and the sequence being simulated when
    the total passed ``max_events`` (-1 when every sequence reached its end; the events so far are
    returned either way, so a caller can say how far it got). Seed with :func:`_seed` first.
    """
    K = mu.size
    U = beta.size
    B = starts.size
    capacity = 1024
    out_t = np.empty(capacity)
    out_m = np.empty(capacity, np.int64)
    counts = np.zeros(B, np.int64)
    mu_total = 0.0
    for i in range(K):
        mu_total += mu[i]
    excitation = np.zeros((K, U))
    total_events = 0
    for b in range(B):
        for i in range(K):
            for u in range(U):
                e = 0.0
                for j in range(K):
                    e += adjacency[i, j, u] * beta[u] * init_state[b, j, u]
                excitation[i, u] = e
        t_prev = starts[b]
        bound = mu_total
        for i in range(K):
            for u in range(U):
                bound += excitation[i, u]
        while True:
            t_new = t_prev + (-math.log(1.0 - np.random.random()) / bound)
            if t_new > ends[b]:
                break
            dt = t_new - t_prev
            t_prev = t_new
            total = mu_total
            for u in range(U):
                decay = math.exp(-beta[u] * dt)
                for i in range(K):
                    excitation[i, u] *= decay
                    total += excitation[i, u]
            r = np.random.random() * bound
            bound = total  # the intensity only decays until the next accepted event
            if r >= total:
                continue
            mark = K - 1
            acc = 0.0
            for i in range(K):
                acc += mu[i]
                for u in range(U):
                    acc += excitation[i, u]
                if r < acc:
                    mark = i
                    break
            if total_events == capacity:
                capacity *= 2
                new_t = np.empty(capacity)
                new_m = np.empty(capacity, np.int64)
                new_t[:total_events] = out_t[:total_events]
                new_m[:total_events] = out_m[:total_events]
                out_t = new_t
                out_m = new_m
            out_t[total_events] = t_new
            out_m[total_events] = mark
            total_events += 1
            counts[b] += 1
            for i in range(K):
                for u in range(U):
                    jump = adjacency[i, mark, u] * beta[u]
                    excitation[i, u] += jump
                    bound += jump
            if total_events > max_events:
                return out_t[:total_events], out_m[:total_events], counts, b
    return out_t[:total_events], out_m[:total_events], counts, -1


@numba.njit(**_JIT)
def loglik_and_grad_varying(
    times: np.ndarray,
    marks: np.ndarray,
    offsets: np.ndarray,
    t_end: np.ndarray,
    mu_event: np.ndarray,
    adjacency: np.ndarray,
    beta: np.ndarray,
    seq_weights: np.ndarray,
    need_grad: bool,
):
    """:func:`loglik_and_grad` for a time-varying baseline (:mod:`tpp.hawkes.baselines`).

    ``mu_event[n]`` is the baseline of event ``n``'s own type at its time. The baseline's compensator
    is not included (the caller adds ``-sum_k int mu_k``, exact from the basis integrals). Returns
    ``(loglik[B], inv_lam[N], d/dA [K, K, U], d/dbeta [U])`` with ``inv_lam[n] = seq_weight / lambda(t_n)``,
    from which the caller forms the baseline coefficients' gradient.
    """
    num_seq = offsets.size - 1
    K = adjacency.shape[0]
    U = beta.size
    loglik = np.zeros(num_seq)
    inv_lam = np.zeros(times.size)
    g_adj = np.zeros((K, K, U))
    g_beta = np.zeros(U)
    state = np.zeros((K, U))
    d_state = np.zeros((K, U))
    pending = np.zeros(K)
    tail_sum = np.zeros((K, U))
    d_tail = np.zeros(U)
    col_sum = np.zeros((K, U))
    for j in range(K):
        for u in range(U):
            s = 0.0
            for i in range(K):
                s += adjacency[i, j, u]
            col_sum[j, u] = s
    for b in range(num_seq):
        w = seq_weights[b]
        state[:, :] = 0.0
        d_state[:, :] = 0.0
        pending[:] = 0.0
        t_now = -np.inf
        t_stop = t_end[b]
        total = 0.0
        for n in range(offsets[b], offsets[b + 1]):
            t = times[n]
            i = marks[n]
            if t > t_now:
                if t_now > -np.inf:
                    dt = t - t_now
                    for u in range(U):
                        decay = math.exp(-beta[u] * dt)
                        for j in range(K):
                            r = state[j, u] + pending[j]
                            d_state[j, u] = decay * (d_state[j, u] - dt * r)
                            state[j, u] = decay * r
                    pending[:] = 0.0
                t_now = t
            lam = mu_event[n]
            for j in range(K):
                for u in range(U):
                    lam += adjacency[i, j, u] * beta[u] * state[j, u]
            total += math.log(lam)
            tail = t_stop - t
            for u in range(U):
                e = math.exp(-beta[u] * tail)
                total -= col_sum[i, u] * (1.0 - e)
                if need_grad:
                    tail_sum[i, u] += w * (1.0 - e)
                    d_tail[u] += w * col_sum[i, u] * tail * e
            if need_grad:
                inv = w / lam
                inv_lam[n] = inv
                for j in range(K):
                    for u in range(U):
                        g_adj[i, j, u] += inv * beta[u] * state[j, u]
                        g_beta[u] += inv * adjacency[i, j, u] * (state[j, u] + beta[u] * d_state[j, u])
            pending[i] += 1.0
        loglik[b] = total
    if need_grad:
        for j in range(K):
            for u in range(U):
                for i in range(K):
                    g_adj[i, j, u] -= tail_sum[j, u]
        for u in range(U):
            g_beta[u] -= d_tail[u]
    return loglik, inv_lam, g_adj, g_beta


@numba.njit(**_JIT)
def chunk_features(
    times: np.ndarray,
    marks: np.ndarray,
    t_stop: float,
    beta: np.ndarray,
    num_marks: int,
    state: np.ndarray,
    pending: np.ndarray,
    clock: np.ndarray,
):
    """:func:`event_features` for one chunk of ONE stream, carrying the recursion (for ``partial_fit``).

    ``state [K, U]``, ``pending [K]`` (events at the current time, which excite only later times) and
    ``clock [1]`` (the current time) are updated in place; the chunk's window is ``(clock, t_stop]``.
    Returns ``X [n, K U]`` (``beta_u R[j, u]`` just before each event, rows in input order) and
    ``tails [K U] = int_clock^t_stop beta_u R[j, u](t) dt`` (the excitation's compensator over the
    window, history before the chunk included). Over consecutive chunks these add up to the batch's.
    At the end the state is advanced to ``t_stop`` when ``t_stop`` is later than the last event
    (an event at exactly ``t_stop`` stays pending: an event of the next chunk at that time is a tie).
    """
    K = num_marks
    U = beta.size
    N = times.size
    X = np.zeros((N, K * U))
    tails = np.zeros(K * U)
    t_now = clock[0]
    # the history before the chunk: its excitation decays over the whole window
    for j in range(K):
        for u in range(U):
            tails[j * U + u] += (state[j, u] + pending[j]) * (1.0 - math.exp(-beta[u] * (t_stop - t_now)))
    for n in range(N):
        t = times[n]
        if t > t_now:
            dt = t - t_now
            for u in range(U):
                decay = math.exp(-beta[u] * dt)
                for j in range(K):
                    state[j, u] = decay * (state[j, u] + pending[j])
            pending[:] = 0.0
            t_now = t
        for j in range(K):
            for u in range(U):
                X[n, j * U + u] = beta[u] * state[j, u]
        i = marks[n]
        for u in range(U):
            tails[i * U + u] += 1.0 - math.exp(-beta[u] * (t_stop - t))
        pending[i] += 1.0
    if t_stop > t_now:
        dt = t_stop - t_now
        for u in range(U):
            decay = math.exp(-beta[u] * dt)
            for j in range(K):
                state[j, u] = decay * (state[j, u] + pending[j])
        pending[:] = 0.0
        t_now = t_stop
    clock[0] = t_now
    return X, tails


@numba.njit(**_JIT)
def event_features_and_slopes(
    times: np.ndarray,
    marks: np.ndarray,
    offsets: np.ndarray,
    t_start: np.ndarray,
    t_end: np.ndarray,
    beta: np.ndarray,
    num_marks: int,
    rows: np.ndarray,
    X: np.ndarray,
    D: np.ndarray,
):
    """:func:`event_features` with their derivatives in the decays, for a profile likelihood over ``beta``.

    ``X`` and ``D`` (``[N, K U]``, every row is written) are the caller's buffers, reused over the decays of a
    fit: fresh arrays of this size are new pages for the kernel to map on every call, which measured up to
    10x the computation on a loaded machine.

    Besides ``X``, ``tails`` and ``duration``: ``D[n, j U + u] = d X[n, j U + u] / d beta_u = R - beta_u S``
    with ``S[j, u](t) = sum_{t_m < t, mark j} (t - t_m) exp(-beta_u (t - t_m))`` (its own O(K U) recursion,
    ``S(t') = e (S(t) + dt R(t))``), and ``dtails[j U + u] = sum_m (t_end - t_m) exp(-beta_u (t_end - t_m))``.
    The decays' gradient at any ``(mu, A)`` is then one pass over these rows (:func:`target_decay_gradient`)
    instead of a second recursion over the events.
    """
    K = num_marks
    U = beta.size
    tails = np.zeros(K * U)
    dtails = np.zeros(K * U)
    R = np.zeros((K, U))
    S = np.zeros((K, U))
    pending = np.zeros(K)
    duration = 0.0
    for b in range(offsets.size - 1):
        R[:, :] = 0.0
        S[:, :] = 0.0
        pending[:] = 0.0
        t_now = t_start[b]
        duration += t_end[b] - t_start[b]
        for n in range(offsets[b], offsets[b + 1]):
            t = times[n]
            if t > t_now:
                dt = t - t_now
                for u in range(U):
                    decay = math.exp(-beta[u] * dt)
                    for j in range(K):
                        r = R[j, u] + pending[j]
                        S[j, u] = decay * (S[j, u] + dt * r)
                        R[j, u] = decay * r
                pending[:] = 0.0
                t_now = t
            row = rows[n]
            for j in range(K):
                for u in range(U):
                    X[row, j * U + u] = beta[u] * R[j, u]
                    D[row, j * U + u] = R[j, u] - beta[u] * S[j, u]
            i = marks[n]
            for u in range(U):
                lag = t_end[b] - t
                decay = math.exp(-beta[u] * lag)
                tails[i * U + u] += 1.0 - decay
                dtails[i * U + u] += lag * decay
            pending[i] += 1.0
    return X, D, tails, dtails, duration


@numba.njit(**_JIT)
def target_decay_gradient(X: np.ndarray, D: np.ndarray, mu: float, weights: np.ndarray, dtails: np.ndarray,
                          num_decays: int) -> np.ndarray:
    """``d/d beta_u`` of :func:`target_loglik_and_grad`'s value (one target type), ``[U]``, from the rows of
    :func:`event_features_and_slopes`: ``sum_n (sum_j A[j, u] D[n, j U + u]) / lambda_n - sum_j A[j, u] dtails``."""
    N, P = X.shape
    U = num_decays
    g = np.zeros(U)
    for n in range(N):
        lam = mu
        for p in range(P):
            lam += weights[p] * X[n, p]
        inv = 1.0 / lam
        for p in range(P):
            g[p % U] += inv * weights[p] * D[n, p]
    for p in range(P):
        g[p % U] -= weights[p] * dtails[p]
    return g


@numba.njit(**_JIT)
def target_hessian_diagonal(X: np.ndarray, mu: float, weights: np.ndarray) -> np.ndarray:
    """The diagonal of minus the Hessian of :func:`target_loglik_and_grad`'s value in ``(mu, A[i])``, ``[1 + P]``:
    ``sum_n z_p^2 / lambda_n^2`` with ``z = (1, X[n])``. A diagonal preconditioner for the target's L-BFGS-B."""
    N, P = X.shape
    h = np.zeros(P + 1)
    for n in range(N):
        lam = mu
        for p in range(P):
            lam += weights[p] * X[n, p]
        inv2 = 1.0 / (lam * lam)
        h[0] += inv2
        for p in range(P):
            h[p + 1] += inv2 * X[n, p] * X[n, p]
    return h
