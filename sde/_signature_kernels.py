"""Compiled CPU loops of the signature-kernel PDE (numba): the forward values and the exact discrete
adjoint, private to :mod:`sde.signature`.

Why: the vectorised torch loop over anti-diagonals pays ~8 tensor operations per step and keeps every
step for autograd (memory ``O(pairs x n x m)``). Here one pair at a time runs the scheme row by row in
compiled code (a few ns per refined cell, memory ``O(m)``), and the backward pass recomputes that pair's
grid and sweeps the adjoint recursion of the very same scheme, so its gradients are those of the
discrete values to rounding (checked against torch autograd through the torch loop and by gradcheck).

Scheme (see :mod:`sde.signature`): on refined cell ``(i, j)`` with increment ``g``,
``K[i+1, j+1] = A (K[i, j+1] + K[i+1, j]) - B K[i, j]``, ``A = 1 + g/2 + g^2/12``, ``B = 1 - g^2/12``.
Adjoint ``L = dk/dK`` (``L[n, m] = 1``): ``L[i, j] = A[i, j-1] L[i+1, j] + A[i-1, j] L[i, j+1] -
B[i, j] L[i+1, j+1]`` (terms whose cell lies outside the grid dropped), and
``dk/dg[i, j] = L[i+1, j+1] (A'(g) (K[i, j+1] + K[i+1, j]) - B'(g) K[i, j])``, ``A' = 1/2 + g/6``,
``B' = -g/6``; a refined cell's ``g`` is its unrefined cell's over ``4^order``, so the unrefined cell
collects the sum of its sub-cells' derivatives over ``4^order``.

Two entry points each way: from the cell increments ``g0 [P, n0, m0]`` (any static kernel), and, for the
linear kernel, from the paths' increments ``dx [N, n0, D]``, ``dy [M, m0, D]`` and the pairs ``ix, iy``
(``g0[p] = dx[ix[p]] dy[iy[p]]^T`` is formed cell by cell and never stored: for a Gram matrix that tensor
is the largest object, and writing it costs more than the PDE at ``dyadic_order <= 1``).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["goursat_backward", "goursat_forward", "linear_backward", "linear_forward"]

# No fastmath: the values should be the torch loop's and the JAX twin's to rounding.
_JIT = dict(cache=True, nogil=True, error_model="numpy")

# Pairs stepped together in the forward loop: each cell depends on its left neighbour (a serial chain of
# multiply-adds), so one pair at a time waits on latency; W independent pairs side by side in the innermost
# loop fill the SIMD lanes instead (8 float64 = two AVX2 registers).
_WIDTH = 8


@numba.njit(**_JIT)
def _set_coefficients(g, scale, a, b, r, c, w):
    """``A``, ``B`` of the refined cells of unrefined cell ``(r, c)`` of lane ``w`` from its increment ``g``."""
    g = g * scale
    a[r, c, w] = 1.0 + g * (0.5 + g / 12.0)
    b[r, c, w] = 1.0 - g * g / 12.0


@numba.njit(**_JIT)
def _sweep(a, b, order, prev, cur, out, start, width):
    """The scheme on the lanes of one block (coefficients ``a, b [n0, m0, W]``): ``out[start + w] = K[n, m]``."""
    n0, m0, W = a.shape
    n, m = n0 << order, m0 << order
    prev[:, :] = 1.0
    cur[0, :] = 1.0
    for i in range(n):
        ai = a[i >> order]
        bi = b[i >> order]
        for j in range(m):
            c = j >> order
            for w in range(W):
                cur[j + 1, w] = ai[c, w] * (prev[j + 1, w] + cur[j, w]) - bi[c, w] * prev[j, w]
        prev, cur = cur, prev
    for w in range(width):
        out[start + w] = prev[m, w]


@numba.njit(**_JIT)
def goursat_forward(g0, order):
    """``k`` of every pair from its unrefined cell increments ``g0 [P, n0, m0]`` -> ``[P]``."""
    P, n0, m0 = g0.shape
    W = _WIDTH
    scale = 0.25 ** order
    out = np.empty(P, dtype=g0.dtype)
    a = np.empty((n0, m0, W), dtype=g0.dtype)  # one block's coefficients, pairs innermost
    b = np.empty((n0, m0, W), dtype=g0.dtype)
    prev = np.empty(((m0 << order) + 1, W), dtype=g0.dtype)
    cur = np.empty(((m0 << order) + 1, W), dtype=g0.dtype)
    for start in range(0, P, W):
        width = min(W, P - start)
        for r in range(n0):
            for c in range(m0):
                for w in range(W):  # a short last block repeats its first pair (values discarded)
                    _set_coefficients(g0[start + (w if w < width else 0), r, c], scale, a, b, r, c, w)
        _sweep(a, b, order, prev, cur, out, start, width)
    return out


@numba.njit(**_JIT)
def linear_forward(dx, dy, ix, iy, order):
    """``k(x[ix[p]], y[iy[p]])`` under the linear static kernel from the increments ``dx [N, n0, D]``,
    ``dy [M, m0, D]`` -> ``[P]``."""
    P = ix.shape[0]
    n0, D = dx.shape[1], dx.shape[2]
    m0 = dy.shape[1]
    W = _WIDTH
    scale = 0.25 ** order
    out = np.empty(P, dtype=dx.dtype)
    a = np.empty((n0, m0, W), dtype=dx.dtype)
    b = np.empty((n0, m0, W), dtype=dx.dtype)
    prev = np.empty(((m0 << order) + 1, W), dtype=dx.dtype)
    cur = np.empty(((m0 << order) + 1, W), dtype=dx.dtype)
    for start in range(0, P, W):
        width = min(W, P - start)
        for w in range(W):
            p = start + (w if w < width else 0)
            u, v = dx[ix[p]], dy[iy[p]]
            for r in range(n0):
                for c in range(m0):
                    g = 0.0
                    for d in range(D):
                        g += u[r, d] * v[c, d]
                    _set_coefficients(g, scale, a, b, r, c, w)
        _sweep(a, b, order, prev, cur, out, start, width)
    return out


@numba.njit(**_JIT)
def _pair_adjoint(g0, order, weight, grid, lam_next, lam_cur, grad):
    """``grad += weight dk / dg0`` for one pair (``g0, grad [n0, m0]``; ``grid``, ``lam_*``: scratch)."""
    n0, m0 = g0.shape
    n, m = n0 << order, m0 << order
    scale = 0.25 ** order
    g = g0 * scale
    a = 1.0 + g * (0.5 + g / 12.0)
    b = 1.0 - g * g / 12.0
    da = 0.5 + g / 6.0
    db = -g / 6.0
    grid[0, :] = 1.0
    for i in range(n):
        grid[i + 1, 0] = 1.0
        r = i >> order
        for j in range(m):
            c = j >> order
            grid[i + 1, j + 1] = a[r, c] * (grid[i, j + 1] + grid[i + 1, j]) - b[r, c] * grid[i, j]
    lam_next[:] = 0.0
    for i in range(n, 0, -1):
        lam_cur[:] = 0.0
        for j in range(m, 0, -1):
            if i == n and j == m:
                lam = 1.0
            else:
                lam = 0.0
                if i < n:  # K[i, j] feeds K[i + 1, j] through cell (i, j - 1)
                    lam += a[i >> order, (j - 1) >> order] * lam_next[j]
                if j < m:  # ... K[i, j + 1] through cell (i - 1, j)
                    lam += a[(i - 1) >> order, j >> order] * lam_cur[j + 1]
                if i < n and j < m:  # ... K[i + 1, j + 1] through cell (i, j)
                    lam -= b[i >> order, j >> order] * lam_next[j + 1]
            lam_cur[j] = lam
            # K[i, j] is the output of cell (i - 1, j - 1)
            r, c = (i - 1) >> order, (j - 1) >> order
            local = da[r, c] * (grid[i - 1, j] + grid[i, j - 1]) - db[r, c] * grid[i - 1, j - 1]
            grad[r, c] += weight * scale * lam * local
        lam_next, lam_cur = lam_cur, lam_next


@numba.njit(**_JIT)
def goursat_backward(g0, order, weight):
    """``weight[p] dk_p / dg0[p]`` laid out as ``g0 [P, n0, m0]`` (the vector-Jacobian product)."""
    P, n0, m0 = g0.shape
    n, m = n0 << order, m0 << order
    grad = np.zeros_like(g0)
    grid = np.empty((n + 1, m + 1), dtype=g0.dtype)
    lam_next = np.zeros(m + 2, dtype=g0.dtype)  # L[i + 1, :] (zero past the grid)
    lam_cur = np.zeros(m + 2, dtype=g0.dtype)   # L[i, :]
    for p in range(P):
        if weight[p] != 0.0:
            _pair_adjoint(g0[p], order, weight[p], grid, lam_next, lam_cur, grad[p])
    return grad


@numba.njit(**_JIT)
def linear_backward(dx, dy, ix, iy, order, weight):
    """The vector-Jacobian product of :func:`linear_forward`: ``(grad dx, grad dy)`` for ``weight [P]``
    (``dg0 / d dx[r] = dy[c]`` and ``dg0 / d dy[c] = dx[r]`` on cell ``(r, c)``)."""
    P = ix.shape[0]
    n0, D = dx.shape[1], dx.shape[2]
    m0 = dy.shape[1]
    n, m = n0 << order, m0 << order
    grad_dx = np.zeros_like(dx)
    grad_dy = np.zeros_like(dy)
    g0 = np.empty((n0, m0), dtype=dx.dtype)
    grad = np.empty((n0, m0), dtype=dx.dtype)
    grid = np.empty((n + 1, m + 1), dtype=dx.dtype)
    lam_next = np.zeros(m + 2, dtype=dx.dtype)
    lam_cur = np.zeros(m + 2, dtype=dx.dtype)
    for p in range(P):
        if weight[p] == 0.0:
            continue
        u, v = dx[ix[p]], dy[iy[p]]
        for r in range(n0):
            for c in range(m0):
                g = 0.0
                for d in range(D):
                    g += u[r, d] * v[c, d]
                g0[r, c] = g
        grad[:, :] = 0.0
        _pair_adjoint(g0, order, weight[p], grid, lam_next, lam_cur, grad)
        gu, gv = grad_dx[ix[p]], grad_dy[iy[p]]
        for r in range(n0):
            for c in range(m0):
                for d in range(D):
                    gu[r, d] += grad[r, c] * v[c, d]
                    gv[c, d] += grad[r, c] * u[r, d]
    return grad_dx, grad_dy
