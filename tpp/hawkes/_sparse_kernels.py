"""Compiled passes of :mod:`tpp.hawkes.sparse`: memory O(K) state, O(N) events, no ``[N, K]`` array.

The exponential state ``R_j(t) = sum_{t_m < t, mark_m = j} exp(-beta (t - t_m))`` is kept *lazily*:
``S_j = sum exp(beta (t_m - t_ref))`` so that ``R_j(t) = S_j exp(-beta (t - t_ref))``. An event touches one
entry of ``S`` (O(1) instead of the O(K) decay of every entry that :mod:`tpp.hawkes._recursion` does), and
reading a feature ``beta R_j(t)`` costs O(1). ``t_ref`` moves forward (rescaling ``S`` by one factor, O(K))
whenever ``beta (t - t_ref)`` passes ``_RESCALE``, so ``S`` never overflows. Ties: events at the current time
are held pending and join ``S`` only when time moves on (they do not excite one another), as in ``_recursion``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_JIT = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")
_RESCALE = 200.0  # exp(200) ~ 7e86: far from overflow, and a rescale is rare (every 200 / beta time units)


@numba.njit(**_JIT)
def _advance(S, pend, plist, npend, t_now, t, tref, beta):
    """Flush the events pending at ``t_now`` into ``S`` and move ``t_ref`` if needed; returns ``(npend, tref)``."""
    w = math.exp(beta * (t_now - tref))
    for q in range(npend):
        j = plist[q]
        S[j] += pend[j] * w
        pend[j] = 0.0
    if beta * (t - tref) > _RESCALE:
        f = math.exp(-beta * (t - tref))
        for j in range(S.size):
            S[j] *= f
        tref = t
    return 0, tref


@numba.njit(**_JIT)
def features_block(times, marks, offsets, t_start, beta, K, local, cand_ptr, cand_idx, out_ptr, out):
    """Per-target design rows ``[1, beta R_j(t_n) for j in candidates(i)]`` of the events of the targets with
    ``local[i] >= 0``, written into the flat buffer ``out`` (target ``local[i]`` from ``out_ptr[local[i]]``, its
    rows in time order, ``1 + len(candidates)`` numbers each). One pass: O(N + sum of the block's row sizes)."""
    S = np.zeros(K)
    pend = np.zeros(K)
    plist = np.empty(K, np.int64)
    count = np.zeros(out_ptr.size, np.int64)
    for b in range(offsets.size - 1):
        S[:] = 0.0
        pend[:] = 0.0
        npend = np.int64(0)  # typed, not a numba Literal: one compiled _advance
        t_now = t_start[b]
        tref = t_start[b]
        for n in range(offsets[b], offsets[b + 1]):
            t = times[n]
            if t > t_now:
                npend, tref = _advance(S, pend, plist, npend, t_now, t, tref, beta)
                t_now = t
            i = marks[n]
            loc = local[i]
            if loc >= 0:
                c0, c1 = cand_ptr[i], cand_ptr[i + 1]
                width = 1 + c1 - c0
                base = out_ptr[loc] + count[loc] * width
                out[base] = 1.0
                f = beta * math.exp(-beta * (t - tref))
                for q in range(c0, c1):
                    out[base + 1 + q - c0] = f * S[cand_idx[q]]
                count[loc] += 1
            if pend[i] == 0.0:
                plist[npend] = i
                npend += 1
            pend[i] += 1.0
    return count


@numba.njit(**_JIT)
def gradient_block(times, marks, offsets, t_start, beta, K, lo, hi, weights):
    """``G[i - lo, j] = sum_{n: mark_n = i} weights[n] beta R_j(t_n)`` for targets ``lo <= i < hi``: the data
    part of the log-likelihood's gradient in the adjacency (``weights = 1 / lambda``), every source ``j``.
    O(N + N_block K) time, ``(hi - lo) K`` numbers of memory."""
    G = np.zeros((hi - lo, K))
    S = np.zeros(K)
    pend = np.zeros(K)
    plist = np.empty(K, np.int64)
    for b in range(offsets.size - 1):
        S[:] = 0.0
        pend[:] = 0.0
        npend = np.int64(0)  # typed, not a numba Literal: one compiled _advance
        t_now = t_start[b]
        tref = t_start[b]
        for n in range(offsets[b], offsets[b + 1]):
            t = times[n]
            if t > t_now:
                npend, tref = _advance(S, pend, plist, npend, t_now, t, tref, beta)
                t_now = t
            i = marks[n]
            if lo <= i < hi:
                f = weights[n] * beta * math.exp(-beta * (t - tref))
                row = i - lo
                for j in range(K):
                    G[row, j] += f * S[j]
            if pend[i] == 0.0:
                plist[npend] = i
                npend += 1
            pend[i] += 1.0
    return G


@numba.njit(**_JIT)
def fold_tails(times, marks, offsets, t_start, t_end, beta, K, n_folds):
    """``tails[f, j] = int_{fold f} beta R_j(t) dt`` and ``durations[f]``: fold ``f`` of a sequence is the
    ``f``-th of ``n_folds`` equal time blocks of its window. Over all folds the tails sum to the whole window's
    ``sum_{m: mark j} (1 - exp(-beta (t_end - t_m)))``: the compensator's excitation part, split by block."""
    tails = np.zeros((n_folds, K))
    durations = np.zeros(n_folds)
    for b in range(offsets.size - 1):
        t0, t1 = t_start[b], t_end[b]
        width = (t1 - t0) / n_folds
        for f in range(n_folds):
            durations[f] += width
        for n in range(offsets[b], offsets[b + 1]):
            t = times[n]
            j = marks[n]
            for f in range(n_folds):
                e1 = t0 + (f + 1) * width if f < n_folds - 1 else t1
                if e1 <= t:
                    continue
                e0 = t0 + f * width
                start = e0 if e0 > t else t
                tails[f, j] += math.exp(-beta * (start - t)) - math.exp(-beta * (e1 - t))
    return tails, durations


@numba.njit(**_JIT)
def sparse_loglik(times, marks, offsets, t_start, t_end, mu, indptr, indices, data, beta, K, lam_out):
    """Exact log-likelihood per sequence for a CSR adjacency (row = target): O(N (1 + nnz / K)) time, O(K)
    state. Writes each event's intensity to ``lam_out`` (the weights of :func:`gradient_block`)."""
    B = offsets.size - 1
    ll = np.zeros(B)
    colsum = np.zeros(K)
    for i in range(K):
        for q in range(indptr[i], indptr[i + 1]):
            colsum[indices[q]] += data[q]
    mu_total = 0.0
    for i in range(K):
        mu_total += mu[i]
    S = np.zeros(K)
    pend = np.zeros(K)
    plist = np.empty(K, np.int64)
    for b in range(B):
        S[:] = 0.0
        pend[:] = 0.0
        npend = np.int64(0)  # typed, not a numba Literal: one compiled _advance
        t_now = t_start[b]
        tref = t_start[b]
        total = 0.0
        for n in range(offsets[b], offsets[b + 1]):
            t = times[n]
            if t > t_now:
                npend, tref = _advance(S, pend, plist, npend, t_now, t, tref, beta)
                t_now = t
            i = marks[n]
            f = beta * math.exp(-beta * (t - tref))
            lam = 0.0
            for q in range(indptr[i], indptr[i + 1]):
                lam += data[q] * S[indices[q]]
            lam = mu[i] + f * lam
            lam_out[n] = lam
            total += math.log(lam)
            total -= colsum[i] * (-math.expm1(-beta * (t_end[b] - t)))
            if pend[i] == 0.0:
                plist[npend] = i
                npend += 1
            pend[i] += 1.0
        ll[b] = total - mu_total * (t_end[b] - t_start[b])
    return ll


@numba.njit(**_JIT)
def _penalty(theta, lam1, lam2):
    s = 0.0
    q = 0.0
    for k in range(1, theta.size):
        s += theta[k]
        q += theta[k] * theta[k]
    return lam1 * s + lam2 * math.sqrt(q)


@numba.njit(**_JIT)
def _smooth(Z, c, theta, n_total):
    """``(-sum_n log(Z theta) + c . theta) / n_total`` (inf where an intensity is not positive)."""
    N, P = Z.shape
    total = 0.0
    for n in range(N):
        lam = 0.0
        for p in range(P):
            lam += Z[n, p] * theta[p]
        if not lam > 0.0:
            return np.inf
        total -= math.log(lam)
    for p in range(P):
        total += c[p] * theta[p]
    return total / n_total


@numba.njit(**_JIT)
def _cd_quadratic(H, g, theta, floor, lam1, lam2, max_sweeps, tol):
    """Coordinate descent on the proximal Newton subproblem
    ``min_x g.(x - theta) + (x - theta)' H (x - theta) / 2 + lam1 sum(x[1:]) + lam2 ||x[1:]||_2``,
    ``x[0] >= floor``, ``x[1:] >= 0``. Each coordinate is minimised exactly (closed form; with the group term a
    safeguarded Newton root of a monotone 1-d derivative). Stops when a sweep moves no coordinate by more than
    ``tol`` (relative to max(1, |x|)) or after ``max_sweeps``."""
    P = theta.size
    x = theta.copy()
    grad = g.copy()  # gradient of the quadratic model at x
    for _ in range(max_sweeps):
        r2 = 0.0
        for k in range(1, P):
            r2 += x[k] * x[k]
        biggest = 0.0
        for k in range(P):
            hk = H[k, k]
            xk = x[k]
            if k == 0:
                z = xk - grad[0] / hk if hk > 0 else xk
                if z < floor:
                    z = floor
            else:
                rest = r2 - xk * xk
                if rest < 0.0:
                    rest = 0.0
                if hk <= 0.0:
                    z = 0.0  # a source never seen before this target's events: only the compensator, which is >= 0
                elif lam2 == 0.0 or rest <= 1e-300:
                    z = xk - (grad[k] + lam1 + lam2) / hk
                    if z < 0.0:
                        z = 0.0
                elif grad[k] - hk * xk + lam1 >= 0.0:
                    z = 0.0
                else:
                    lo, hi = 0.0, xk - (grad[k] + lam1) / hk
                    z = hi
                    for _it in range(100):
                        root = math.sqrt(z * z + rest)
                        d1 = grad[k] + hk * (z - xk) + lam1 + lam2 * z / root
                        if d1 > 0:
                            hi = z
                        else:
                            lo = z
                        d2 = hk + lam2 * rest / (root * root * root)
                        step = z - d1 / d2
                        if not (lo < step < hi):
                            step = 0.5 * (lo + hi)
                        if abs(step - z) <= 1e-15 * max(1.0, z):
                            z = step
                            break
                        z = step
                r2 = rest + z * z
            delta = z - xk
            if delta != 0.0:
                for p in range(P):
                    grad[p] += delta * H[p, k]
                x[k] = z
                change = abs(delta) / max(1.0, abs(z))
                if change > biggest:
                    biggest = change
        if biggest <= tol:
            break
    return x


@numba.njit(**_JIT)
def solve_target(Z, c, n_total, lam1, lam2, theta, floor, tol, max_iter):
    """One target's penalised problem by proximal Newton (Lee, Sun & Saunders 2014) on a working set:
    minimise ``F(theta) + P(theta)`` with ``F = (-sum_n log(Z theta) + c . theta) / n_total`` (the negative
    log-likelihood per event: ``theta = [mu_i, A[i, candidates]]``, ``c = [duration, tails]``) and
    ``P = lam1 sum(A) + lam2 ||A||_2``, subject to ``mu >= floor``, ``A >= 0``.

    Each step: the full gradient; the working set ``W`` = ``mu``, the non-zero entries and the zero entries whose
    KKT condition fails (``dF/dA_k + lam1 < 0``); the exact local quadratic model on ``W`` plus ``P`` minimised by
    coordinate descent (each coordinate in closed form); an Armijo backtracking on the true ``F + P``. Entries
    outside ``W`` are at 0 and satisfy their KKT condition at the current point. Convergence rule: the step (zero
    exactly at a KKT point) moves no coordinate by more than ``tol`` relative to ``max(1, |theta|)``, with no
    violator left outside ``W``. Cost per step O(N_i P) for the gradient and O(N_i |W|^2) for the model.
    Returns ``(theta, objective, iterations, converged)``."""
    N, P = Z.shape
    value = _smooth(Z, c, theta, n_total) + _penalty(theta, lam1, lam2)
    inv = np.empty(N)
    converged = False
    it = 0
    cand = theta.copy()
    for it in range(1, max_iter + 1):
        for n in range(N):
            lam = 0.0
            for p in range(P):
                lam += Z[n, p] * theta[p]
            inv[n] = 1.0 / lam
        g = c.copy()
        for n in range(N):
            w = inv[n]
            for p in range(P):
                g[p] -= w * Z[n, p]
        for p in range(P):
            g[p] /= n_total
        work = np.empty(P, np.int64)
        m = 0
        for p in range(P):
            if p == 0 or theta[p] > 0.0 or g[p] + lam1 < 0.0:
                work[m] = p
                m += 1
        work = work[:m]
        H = np.zeros((m, m))
        for n in range(N):
            w2 = inv[n] * inv[n]
            for a in range(m):
                za = Z[n, work[a]]
                if za == 0.0:
                    continue
                za *= w2
                for b in range(a, m):
                    H[a, b] += za * Z[n, work[b]]
        for a in range(m):
            for b in range(a, m):
                H[a, b] /= n_total
                H[b, a] = H[a, b]
        tw = np.empty(m)
        gw = np.empty(m)
        for a in range(m):
            tw[a] = theta[work[a]]
            gw[a] = g[work[a]]
        # the group norm of the entries outside W (all zero) adds nothing: P on W is the whole penalty
        xw = _cd_quadratic(H, gw, tw, floor, lam1, lam2, 2000, tol * 1e-3)
        d = np.zeros(P)
        step_size = 0.0
        model_drop = 0.0
        for a in range(m):
            da = xw[a] - tw[a]
            d[work[a]] = da
            model_drop += gw[a] * da
            step_size = max(step_size, abs(da) / max(1.0, abs(tw[a])))
        if step_size <= tol:
            converged = True
            break
        x = theta + d
        model_drop += _penalty(x, lam1, lam2) - _penalty(theta, lam1, lam2)
        t = 1.0
        accepted = False
        noise = 1e-13 * max(1.0, abs(value))  # the objective's rounding level
        new = value
        for _ in range(60):
            for p in range(P):
                cand[p] = theta[p] + t * d[p]
            new = _smooth(Z, c, cand, n_total) + _penalty(cand, lam1, lam2)
            # Armijo; a full step whose change is at the rounding level is a Newton step in its quadratic regime
            if new <= value + 1e-4 * t * min(model_drop, 0.0) or (t == 1.0 and new <= value + noise):
                accepted = True
                break
            t *= 0.5
            if t * step_size < 1e-16:
                break
        if not accepted:  # no descent left at machine precision: as converged as the arithmetic allows
            converged = step_size <= 1e3 * tol
            break
        theta = cand.copy()
        value = new
    return theta, value, it, converged


@numba.njit(**_JIT)
def cluster_children(p_seq, p_typ, p_time, p_scale, indptr, indices, data, beta, ends, u_draws_seed):
    """Offspring of one generation of the cluster process (sparse columns: ``indptr``/``indices``/``data`` is the
    adjacency in CSC, column = source). Parent ``m`` of type ``j`` has ``Poisson(A[i, j] * p_scale[m])`` children
    of type ``i`` at ``p_time[m] + Exp(beta)``; children after their sequence's end are dropped."""
    np.random.seed(u_draws_seed)
    cap = max(16, 2 * p_seq.size)
    c_seq = np.empty(cap, np.int64)
    c_typ = np.empty(cap, np.int64)
    c_time = np.empty(cap)
    n_out = 0
    for m in range(p_seq.size):
        j = p_typ[m]
        for q in range(indptr[j], indptr[j + 1]):
            k = np.random.poisson(data[q] * p_scale[m])
            for _ in range(k):
                t = p_time[m] + np.random.exponential(1.0) / beta
                if t > ends[p_seq[m]]:
                    continue
                if n_out == cap:
                    cap *= 2
                    ns = np.empty(cap, np.int64)
                    nt = np.empty(cap, np.int64)
                    nm = np.empty(cap)
                    ns[:n_out] = c_seq[:n_out]
                    nt[:n_out] = c_typ[:n_out]
                    nm[:n_out] = c_time[:n_out]
                    c_seq, c_typ, c_time = ns, nt, nm
                c_seq[n_out] = p_seq[m]
                c_typ[n_out] = indices[q]
                c_time[n_out] = t
                n_out += 1
    return c_seq[:n_out], c_typ[:n_out], c_time[:n_out]
