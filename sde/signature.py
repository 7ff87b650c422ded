"""The untruncated signature kernel of piecewise-linear paths and the signature-kernel MMD (torch).

The signature kernel of two paths ``x: [0, 1] -> R^D`` and ``y: [0, 1] -> R^D`` is the inner product of
their full signatures, ``k(x, y) = sum_n <S^n(x), S^n(y)>``. Salvi, Cass, Foster, Lyons & Yang (2021), "The
signature kernel is the solution of a Goursat PDE" (SIAM J. Math. Data Sci. 3(3)) show that
``k(x, y) = u(1, 1)`` where

    d^2 u / (ds dt) = <dx/ds, dy/dt> u,      u(0, t) = u(s, 0) = 1.

For piecewise-linear paths the right-hand side is constant on every cell of the grid of the two paths'
knots: on cell ``(i, j)`` it is ``g_ij = <x_{i+1} - x_i, y_{j+1} - y_j>`` (a static kernel ``kappa``
replaces ``<., .>`` by the second difference ``kappa(x_{i+1}, y_{j+1}) - kappa(x_{i+1}, y_j) -
kappa(x_i, y_{j+1}) + kappa(x_i, y_j)``). Each cell is split into ``2^dyadic_order x 2^dyadic_order``
sub-cells with ``g / 4^dyadic_order`` each, and the PDE is stepped by the paper's explicit second-order
scheme

    u[i+1, j+1] = (u[i, j+1] + u[i+1, j]) (1 + g/2 + g^2/12) - u[i, j] (1 - g^2/12),

exact up to ``O(g^3)`` on a cell (the cell's exact value with unit boundary is ``I_0(2 sqrt(g)) = 1 + g +
g^2/4 + g^3/36 + ...``; the scheme gives ``1 + g + g^2/4``). Accuracy, measured on two straight
paths (``k = I_0(2 sqrt(<a, b>))``, ``<a, b> = 1``, ten points each, see
``tests/sde/test_signature_kernel.py``): relative error 1.6e-4 at ``dyadic_order=0``, 4.4e-5 at 1,
1.1e-5 at 2, 2.9e-6 at 3, 7.4e-7 at 4: it falls 4x per order, i.e. the global error is second order in
the refined cell's side (``O(h^2)``, ``h = 1 / (2^dyadic_order (L - 1))``). The default 1 is enough for
an MMD score (the discretisation error is the same smooth bias for both samples); ask for more orders
(or more knots) for kernel values to 1e-6.

Two loops, one scheme, the same values to rounding (``tests/sde/test_signature_kernel.py``):

* CPU (float32/float64): compiled numba loops (:mod:`sde._signature_kernels`), one pair at a time, row
  by row, memory ``O(m)`` per pair; the backward pass recomputes each pair's grid and runs the scheme's
  exact discrete adjoint (the discrete analogue of the paper's backward PDE: gradients of the computed
  values, not of the PDE), wrapped as a ``torch.autograd.Function`` (first derivatives).
* Elsewhere (GPU): all pairs stepped together along the anti-diagonals ``i + j = const`` (every entry of
  one anti-diagonal depends only on the two before it), a Python loop of ``n + m - 1`` steps for
  ``n x m`` refined cells, differentiable by autograd (memory ``O(pairs x n x m)`` when a gradient is
  needed).

Pairs are processed in chunks (``max_elements``) to bound memory; ``signature_kernel(X)`` computes only
the upper triangle. The JAX twin is :mod:`sde.jax.signature` (the anti-diagonal loop as a
``lax.scan``). Against pysiglib 4.0.0 (same scheme): equal to ~1e-13; speed in
``benchmarks/signature_kernel.py``.

Conventions: paths are taken as given (``[N, L, D]``, rows are the knots in order): no time channel and no
basepoint are added unless asked (``time_augment=True`` appends the channel ``linspace(0, 1, L)`` last;
``basepoint=True`` prepends the origin, after the time channel, so the path starts at 0 in every channel).
A one-dimensional path without a time channel has signature ``exp(x_end - x_start)``: its kernel sees only
the total increment. The ``"rbf"`` static kernel is ``exp(-|x - y|^2 / (2 sigma^2))`` (pysiglib's and
sigkernel's ``RBFKernel(sigma=s)`` is ``exp(-|x - y|^2 / s)``: theirs ``s = 2 sigma^2``); its
refinement divides the second difference on the original knots by ``4^dyadic_order`` as sigkernel does.

Torch is imported on first use (like :mod:`sde.metrics`, which re-exports these two functions).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported on first use
    from torch import Tensor

__all__ = ["signature_kernel", "signature_mmd"]

STATIC_KERNELS = ("linear", "rbf")
# Elements of one chunk's largest tensor (float64: 8 bytes each); a chunk holds a few such tensors.
DEFAULT_MAX_ELEMENTS = 1 << 23


def _as_paths(x: Any, name: str, dtype: Any = None) -> Tensor:
    """``x`` as a floating tensor ``[N, L, D]`` (NumPy input becomes float64); a clear error otherwise."""
    import numpy as np
    import torch

    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x, dtype=np.float64))
    if not torch.is_floating_point(x):
        x = x.to(dtype or torch.float64)
    if x.dim() != 3:
        raise ValueError(f"signature kernel: {name} must be a batch of paths [N, L, D], got shape {tuple(x.shape)}")
    if x.shape[1] < 1 or x.shape[2] < 1:
        raise ValueError(f"signature kernel: {name} needs at least one point and one channel, got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"signature kernel: {name} holds non-finite values")
    return x


def _check_options(dyadic_order: int, static_kernel: str, sigma: float) -> None:
    if static_kernel not in STATIC_KERNELS:
        raise ValueError(f"signature kernel: static_kernel must be one of {STATIC_KERNELS}, got {static_kernel!r}")
    if int(dyadic_order) != dyadic_order or dyadic_order < 0:
        raise ValueError(f"signature kernel: dyadic_order must be an integer >= 0, got {dyadic_order!r}")
    if static_kernel == "rbf" and not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"signature kernel: sigma must be > 0, got {sigma!r}")


def _augment(x: Tensor, time_augment: bool, basepoint: bool) -> Tensor:
    """The time channel ``linspace(0, 1, L)`` appended last, then the origin prepended (both only if asked)."""
    import torch

    if time_augment:
        t = torch.linspace(0.0, 1.0, x.shape[1], dtype=x.dtype, device=x.device) if x.shape[1] > 1 else \
            torch.zeros(1, dtype=x.dtype, device=x.device)
        x = torch.cat([x, t.expand(x.shape[0], -1).unsqueeze(-1)], dim=-1)
    if basepoint:
        x = torch.cat([torch.zeros_like(x[:, :1]), x], dim=1)
    return x


def _static_increments(x: Tensor, y: Tensor, static_kernel: str, sigma: float) -> Tensor:
    """``g [P, L - 1, L2 - 1]``: the static kernel's second difference on every cell, pairs ``x[p], y[p]``."""
    import torch

    if static_kernel == "linear":
        return torch.bmm(x.diff(dim=1), y.diff(dim=1).transpose(1, 2))
    # direct differences (not |x|^2 + |y|^2 - 2 x.y): exact at x = y, where the expansion cancels badly
    sq = (x.unsqueeze(2) - y.unsqueeze(1)).pow(2).sum(-1)
    k = torch.exp(-sq / (2.0 * sigma * sigma))
    return k[:, 1:, 1:] - k[:, 1:, :-1] - k[:, :-1, 1:] + k[:, :-1, :-1]


def _diagonal_plan(n0: int, m0: int, order: int) -> tuple[Any, Any, Any, int, int]:
    """Index arrays (NumPy) that lay the refined cells out by anti-diagonal; shared with the JAX twin.

    With ``n = n0 2^order <= m = m0 2^order`` the grid's values ``u[i, j]`` are held by anti-diagonal
    ``d = i + j`` as a vector over ``i = 0..n``. For ``d = 2..n + m`` (one step each) and ``i = 0..n``:
    ``rows``, ``cols`` pick the unrefined cell ``(i - 1, j - 1) >> order`` whose increment drives
    ``u[i, j]`` (clamped where ``(i, j)`` is not an interior point), ``mask`` is True where it is
    (``1 <= i <= n``, ``1 <= j <= m``); elsewhere the value is the boundary 1 or unused."""
    import numpy as np

    n, m = n0 << order, m0 << order
    i = np.arange(n + 1)[None, :]
    d = np.arange(2, n + m + 1)[:, None]
    j = d - i
    mask = (i >= 1) & (j >= 1) & (j <= m)
    rows = np.ascontiguousarray(np.broadcast_to(np.clip(i - 1, 0, n - 1) >> order, mask.shape))
    cols = np.clip(j - 1, 0, m - 1) >> order
    return rows, cols, mask, n, m


def _goursat_torch(g: Tensor, order: int) -> Tensor:
    """``u(1, 1)`` for every pair from its unrefined cell increments ``g [P, n0, m0]`` -> ``[P]``: the
    vectorised loop over anti-diagonals, differentiable by autograd (any device)."""
    import torch

    P, n0, m0 = g.shape
    if n0 == 0 or m0 == 0:  # a one-point path: its signature is 1
        return torch.ones(P, dtype=g.dtype, device=g.device)
    if n0 > m0:  # k(x, y) = k(y, x): keep the anti-diagonal vectors short (length min + 1)
        g = g.transpose(1, 2)
        n0, m0 = m0, n0
    rows, cols, mask, n, m = _diagonal_plan(n0, m0, order)
    rows_t = torch.as_tensor(rows, device=g.device)
    cols_t = torch.as_tensor(cols, device=g.device)
    mask_t = torch.as_tensor(mask, device=g.device)
    inc = g[:, rows_t, cols_t].transpose(0, 1) * (0.25 ** order)  # [n + m - 1, P, n + 1]
    a = 1.0 + inc * (0.5 + inc / 12.0)
    b = 1.0 - inc * inc / 12.0
    one = torch.ones((), dtype=g.dtype, device=g.device)
    before = torch.ones(P, n + 1, dtype=g.dtype, device=g.device)  # anti-diagonal d - 2 (shifted by one in i)
    last = torch.ones(P, n + 1, dtype=g.dtype, device=g.device)    # anti-diagonal d - 1
    # unbind once: per-step indexing of a tensor that needs grad costs a full-size zero tensor in backward
    for a_d, b_d, mask_d in zip(a.unbind(0), b.unbind(0), mask_t.unbind(0)):
        shifted = torch.roll(last, 1, dims=1)  # shifted[i] = u[i - 1, j] on anti-diagonal d - 1
        new = torch.where(mask_d, a_d * (shifted + last) - b_d * before, one)
        before, last = shifted, new
    return last[:, n]


def _compiled_applies(g: Tensor) -> bool:
    """Whether the compiled CPU loops run ``g``: a CPU float32/float64 tensor (numba is a core dependency)."""
    import torch

    return g.device.type == "cpu" and g.dtype in (torch.float32, torch.float64)


def _goursat_compiled(g: Tensor, order: int) -> Tensor:
    """As :func:`_goursat_torch`, by the compiled loops of :mod:`sde._signature_kernels` (CPU): values row by
    row, gradients by the scheme's exact discrete adjoint."""
    import numpy as np
    import torch
    from torch.autograd.function import once_differentiable

    from sde import _signature_kernels as kernels

    class Goursat(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, g0: Tensor) -> Tensor:  # type: ignore[override]
            ctx.save_for_backward(g0)
            values = kernels.goursat_forward(np.ascontiguousarray(g0.detach().numpy()), order)
            return torch.from_numpy(values)

        @staticmethod
        @once_differentiable
        def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
            (g0,) = ctx.saved_tensors
            g0_np = np.ascontiguousarray(g0.detach().numpy())
            weight = np.ascontiguousarray(grad.detach().to(g0.dtype).numpy())
            return torch.from_numpy(kernels.goursat_backward(g0_np, order, weight))

    P, n0, m0 = g.shape
    if n0 == 0 or m0 == 0:
        return torch.ones(P, dtype=g.dtype, device=g.device)
    if n0 > m0:  # the torch loop's orientation, so that both round alike
        g = g.transpose(1, 2)
    return Goursat.apply(g)


def _goursat(g: Tensor, order: int) -> Tensor:
    """``u(1, 1)`` for every pair from its unrefined cell increments ``g [P, n0, m0]`` -> ``[P]``: the compiled
    loops on CPU, the torch loop elsewhere (same scheme, same values to rounding)."""
    if _compiled_applies(g):
        return _goursat_compiled(g, order)
    return _goursat_torch(g, order)


def _linear_compiled(x: Tensor, y: Tensor, ix: Tensor, iy: Tensor, order: int) -> Tensor:
    """``k(x[ix[p]], y[iy[p]])`` under the linear static kernel by the compiled loops straight from the
    paths' increments (the cell increments are formed inside the loop, never stored); differentiable."""
    import numpy as np
    import torch
    from torch.autograd.function import once_differentiable

    from sde import _signature_kernels as kernels

    dx, dy = x.diff(dim=1), y.diff(dim=1)
    if dx.shape[1] > dy.shape[1]:  # the torch loop's orientation, so that both round alike
        dx, dy, ix, iy = dy, dx, iy, ix
    ix_np, iy_np = ix.numpy(), iy.numpy()

    class LinearGoursat(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, u: Tensor, v: Tensor) -> Tensor:  # type: ignore[override]
            ctx.save_for_backward(u, v)
            return torch.from_numpy(kernels.linear_forward(np.ascontiguousarray(u.detach().numpy()),
                                                           np.ascontiguousarray(v.detach().numpy()), ix_np, iy_np,
                                                           order))

        @staticmethod
        @once_differentiable
        def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
            u, v = ctx.saved_tensors
            weight = np.ascontiguousarray(grad.detach().to(u.dtype).numpy())
            gu, gv = kernels.linear_backward(np.ascontiguousarray(u.detach().numpy()),
                                             np.ascontiguousarray(v.detach().numpy()), ix_np, iy_np, order, weight)
            return torch.from_numpy(gu), torch.from_numpy(gv)

    return LinearGoursat.apply(dx, dy)


def _pair_kernel(x: Tensor, y: Tensor, ix: Tensor, iy: Tensor, order: int, static_kernel: str, sigma: float,
                 max_elements: int) -> Tensor:
    """``k(x[ix[p]], y[iy[p]])`` for every ``p``. The linear kernel on CPU: all pairs in one compiled call;
    otherwise in chunks of pairs whose tensors stay small (the cell increments, the rbf's differences and,
    for the torch loop, the anti-diagonal tensors)."""
    import torch

    if x.shape[1] < 2 or y.shape[1] < 2:  # a one-point path: its signature is 1
        return x.new_ones(ix.shape[0]) + 0.0 * (x.sum() + y.sum())  # (keeps the graph: zero gradients)
    if static_kernel == "linear" and _compiled_applies(x):
        return _linear_compiled(x, y, ix, iy, order)
    n, m = (x.shape[1] - 1) << order, (y.shape[1] - 1) << order
    per_pair = max(1, x.shape[1] * y.shape[1] * x.shape[2])
    if not _compiled_applies(x):
        per_pair = max(per_pair, (min(n, m) + 1) * (n + m - 1))
    chunk = max(1, max_elements // per_pair)
    out = []
    for start in range(0, ix.shape[0], chunk):
        sl = slice(start, start + chunk)
        g = _static_increments(x[ix[sl]], y[iy[sl]], static_kernel, sigma)
        out.append(_goursat(g, order))
    if not out:
        return x.new_zeros(0)
    return torch.cat(out)


def _prepare(X: Any, Y: Any, dyadic_order: int, static_kernel: str, sigma: float, time_augment: bool,
             basepoint: bool) -> tuple[Tensor, Tensor]:
    _check_options(dyadic_order, static_kernel, sigma)
    x = _as_paths(X, "X")
    y = _as_paths(Y, "Y", x.dtype)
    if x.shape[2] != y.shape[2]:
        raise ValueError(f"signature kernel: X and Y must have the same number of channels, got X "
                         f"{tuple(x.shape)} and Y {tuple(y.shape)}")
    if x.dtype != y.dtype:
        raise TypeError(f"signature kernel: X and Y must share a dtype, got {x.dtype} and {y.dtype}")
    return _augment(x, time_augment, basepoint), _augment(y, time_augment, basepoint)


def _gram(x: Tensor, y: Tensor | None, order: int, static_kernel: str, sigma: float, max_elements: int,
          diagonal: bool = True) -> Tensor:
    """Gram matrix of prepared paths; ``y is None``: of ``x`` with itself, only ``i <= j`` computed (or
    ``i < j`` with ``diagonal=False``: the diagonal is then left 0)."""
    import torch

    N = x.shape[0]
    if y is None:
        iu, ju = torch.triu_indices(N, N, offset=0 if diagonal else 1, device=x.device)
        values = _pair_kernel(x, x, iu, ju, order, static_kernel, sigma, max_elements)
        gram = x.new_zeros(N, N).index_put((iu, ju), values)
        off = iu != ju
        return gram.index_put((ju[off], iu[off]), values[off])
    M = y.shape[0]
    ix = torch.arange(N, device=x.device).repeat_interleave(M)
    iy = torch.arange(M, device=x.device).repeat(N)
    return _pair_kernel(x, y, ix, iy, order, static_kernel, sigma, max_elements).reshape(N, M)


def signature_kernel(X: Any, Y: Any = None, *, dyadic_order: int = 1, static_kernel: str = "linear",
                     sigma: float = 1.0, time_augment: bool = False, basepoint: bool = False,
                     max_elements: int = DEFAULT_MAX_ELEMENTS) -> Tensor:
    """Gram matrix ``[N, M]`` of the untruncated signature kernel of paths ``X [N, L, D]`` and
    ``Y [M, L2, D]`` (``Y=None``: ``X`` with itself, symmetric, half the work), by the Goursat PDE.

    ``dyadic_order``: each cell of the knot grid is cut into ``4^dyadic_order`` (accuracy in the module
    docstring); ``static_kernel``: ``"linear"`` or ``"rbf"`` (``exp(-|x - y|^2 / (2 sigma^2))``);
    ``time_augment`` / ``basepoint``: add the time channel / the origin (nothing is added unless asked);
    ``max_elements``: the memory bound of one chunk of pairs. Differentiable in ``X`` and ``Y``;
    the dtype is the input's (NumPy input: float64)."""
    x, y = _prepare(X, X if Y is None else Y, dyadic_order, static_kernel, sigma, time_augment, basepoint)
    return _gram(x, None if Y is None else y, int(dyadic_order), static_kernel, float(sigma), max_elements)


def signature_mmd(X: Any, Y: Any, *, unbiased: bool = True, dyadic_order: int = 1, static_kernel: str = "linear",
                  sigma: float = 1.0, time_augment: bool = False, basepoint: bool = False,
                  max_elements: int = DEFAULT_MAX_ELEMENTS) -> Tensor:
    """Squared MMD between the path samples ``X [N, L, D]`` and ``Y [M, L2, D]`` under the signature kernel
    (options as :func:`signature_kernel`), a scalar tensor, differentiable (usable as a training loss).

    ``unbiased=True`` (default, needs ``N, M >= 2``): ``sum_{i != j} k(x_i, x_j) / (N (N - 1)) + sum_{i != j}
    k(y_i, y_j) / (M (M - 1)) - 2 mean k(x_i, y_j)``; its expectation is the population MMD^2, it can be
    slightly negative. ``unbiased=False``: the V-statistic (means over all pairs, diagonals included), >= 0."""
    x, y = _prepare(X, Y, dyadic_order, static_kernel, sigma, time_augment, basepoint)
    N, M = x.shape[0], y.shape[0]
    if unbiased and (N < 2 or M < 2):
        raise ValueError(f"signature_mmd: the unbiased estimate needs at least 2 paths per sample, got {N} and {M}")
    order, s = int(dyadic_order), float(sigma)
    kxx = _gram(x, None, order, static_kernel, s, max_elements, diagonal=not unbiased)
    kyy = _gram(y, None, order, static_kernel, s, max_elements, diagonal=not unbiased)
    kxy = _gram(x, y, order, static_kernel, s, max_elements)
    if unbiased:  # the diagonals were left 0
        return kxx.sum() / (N * (N - 1)) + kyy.sum() / (M * (M - 1)) - 2.0 * kxy.mean()
    return kxx.mean() + kyy.mean() - 2.0 * kxy.mean()
