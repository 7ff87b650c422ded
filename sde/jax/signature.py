"""The signature kernel and signature-kernel MMD in JAX: the twin of :mod:`sde.signature`.

Same PDE, same explicit second-order scheme, same anti-diagonal layout (the index plan is
:func:`sde.signature._diagonal_plan`, shared, so both twins step the same cells in the same order) and the
same options; the loop over anti-diagonals is one ``jax.lax.scan``. Values equal the torch twin's to
rounding (``tests/sde/test_signature_kernel.py``: 1e-10 in float64; enable it with
``jax.config.update("jax_enable_x64", True)``). Differentiable by JAX autodiff (``jax.grad`` through the
scan); the public functions are jitted with the options (``dyadic_order``, ``static_kernel``, ...) static,
one compilation per shape. All pairs go through one scan (no chunking: memory ``O(pairs x min(n, m))``
forward, the scan's residuals ``O(pairs x n x m)`` under ``jax.grad``). On one CPU core it is 1-10x slower
than the compiled torch path (``benchmarks/signature_kernel.py``); it is the twin for JAX models and
accelerators, not the fastest CPU route.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from sde.signature import _check_options, _diagonal_plan

__all__ = ["signature_kernel", "signature_mmd"]


def _as_paths(x: Any, name: str) -> Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if x.ndim != 3:
        raise ValueError(f"signature kernel: {name} must be a batch of paths [N, L, D], got shape {tuple(x.shape)}")
    if x.shape[1] < 1 or x.shape[2] < 1:
        raise ValueError(f"signature kernel: {name} needs at least one point and one channel, got {tuple(x.shape)}")
    return x


def _augment(x: Array, time_augment: bool, basepoint: bool) -> Array:
    """The time channel ``linspace(0, 1, L)`` appended last, then the origin prepended (as the torch twin)."""
    if time_augment:
        t = jnp.linspace(0.0, 1.0, x.shape[1], dtype=x.dtype) if x.shape[1] > 1 else jnp.zeros(1, x.dtype)
        x = jnp.concatenate([x, jnp.broadcast_to(t[None, :, None], (x.shape[0], x.shape[1], 1))], axis=-1)
    if basepoint:
        x = jnp.concatenate([jnp.zeros_like(x[:, :1]), x], axis=1)
    return x


def _static_increments(x: Array, y: Array, static_kernel: str, sigma: float) -> Array:
    """``g [P, L - 1, L2 - 1]`` for the pairs ``x[p], y[p]`` (see the torch twin)."""
    if static_kernel == "linear":
        return jnp.einsum("pid,pjd->pij", jnp.diff(x, axis=1), jnp.diff(y, axis=1))
    sq = ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)
    k = jnp.exp(-sq / (2.0 * sigma * sigma))
    return k[:, 1:, 1:] - k[:, 1:, :-1] - k[:, :-1, 1:] + k[:, :-1, :-1]


def _goursat(g: Array, order: int) -> Array:
    """``u(1, 1)`` per pair from the unrefined cell increments ``g [P, n0, m0]`` -> ``[P]``."""
    P, n0, m0 = g.shape
    if n0 == 0 or m0 == 0:
        return jnp.ones(P, g.dtype)
    if n0 > m0:
        g = jnp.swapaxes(g, 1, 2)
        n0, m0 = m0, n0
    rows, cols, mask, n, m = _diagonal_plan(n0, m0, order)
    # the coefficients of each anti-diagonal are gathered inside the step: stacking them for all steps
    # would hold 3 x (n + m) x P x n values (gigabytes at dyadic order 2 on a 32 x 32 Gram matrix)
    g = g * (0.25 ** order)
    ones = jnp.ones((P, n + 1), g.dtype)

    def step(carry: tuple[Array, Array], xs: tuple[Array, Array, Array]) -> tuple[tuple[Array, Array], None]:
        before, last = carry
        rows_d, cols_d, mask_d = xs
        inc = g[:, rows_d, cols_d]
        a_d = 1.0 + inc * (0.5 + inc / 12.0)
        b_d = 1.0 - inc * inc / 12.0
        shifted = jnp.roll(last, 1, axis=1)
        new = jnp.where(mask_d, a_d * (shifted + last) - b_d * before, 1.0)
        return (shifted, new), None

    (_, last), _ = jax.lax.scan(step, (ones, ones), (jnp.asarray(rows), jnp.asarray(cols), jnp.asarray(mask)))
    return last[:, n]


def _pair_kernel(x: Array, y: Array, ix: np.ndarray, iy: np.ndarray, order: int, static_kernel: str,
                 sigma: float) -> Array:
    return _goursat(_static_increments(x[ix], y[iy], static_kernel, sigma), order)


def _check(X: Any, Y: Any, dyadic_order: int, static_kernel: str, sigma: float) -> tuple[Array, Array]:
    _check_options(dyadic_order, static_kernel, sigma)
    x, y = _as_paths(X, "X"), _as_paths(Y, "Y")
    if x.shape[2] != y.shape[2]:
        raise ValueError(f"signature kernel: X and Y must have the same number of channels, got X "
                         f"{tuple(x.shape)} and Y {tuple(y.shape)}")
    if x.dtype != y.dtype:
        raise TypeError(f"signature kernel: X and Y must share a dtype, got {x.dtype} and {y.dtype}")
    return x, y


def _gram(x: Array, y: Array | None, order: int, static_kernel: str, sigma: float, diagonal: bool = True) -> Array:
    """As the torch twin's ``_gram`` (one batch: the caller is jitted and XLA manages memory)."""
    N = x.shape[0]
    if y is None:
        iu, ju = np.triu_indices(N, k=0 if diagonal else 1)
        values = _pair_kernel(x, x, iu, ju, order, static_kernel, sigma)
        gram = jnp.zeros((N, N), x.dtype).at[iu, ju].set(values)
        off = iu != ju
        return gram.at[ju[off], iu[off]].set(values[off])
    M = y.shape[0]
    ix, iy = np.repeat(np.arange(N), M), np.tile(np.arange(M), N)
    return _pair_kernel(x, y, ix, iy, order, static_kernel, sigma).reshape(N, M)


_OPTIONS = ("order", "static_kernel", "sigma", "time_augment", "basepoint")


@partial(jax.jit, static_argnames=(*_OPTIONS, "symmetric"))
def _kernel_jit(x: Array, y: Array, *, order: int, static_kernel: str, sigma: float, time_augment: bool,
                basepoint: bool, symmetric: bool) -> Array:
    x = _augment(x, time_augment, basepoint)
    y = None if symmetric else _augment(y, time_augment, basepoint)
    return _gram(x, y, order, static_kernel, sigma)


@partial(jax.jit, static_argnames=(*_OPTIONS, "unbiased"))
def _mmd_jit(x: Array, y: Array, *, order: int, static_kernel: str, sigma: float, time_augment: bool,
             basepoint: bool, unbiased: bool) -> Array:
    x, y = _augment(x, time_augment, basepoint), _augment(y, time_augment, basepoint)
    N, M = x.shape[0], y.shape[0]
    kxx = _gram(x, None, order, static_kernel, sigma, diagonal=not unbiased)
    kyy = _gram(y, None, order, static_kernel, sigma, diagonal=not unbiased)
    kxy = _gram(x, y, order, static_kernel, sigma)
    if unbiased:  # the diagonals were left 0
        return kxx.sum() / (N * (N - 1)) + kyy.sum() / (M * (M - 1)) - 2.0 * kxy.mean()
    return kxx.mean() + kyy.mean() - 2.0 * kxy.mean()


def signature_kernel(X: Any, Y: Any = None, *, dyadic_order: int = 1, static_kernel: str = "linear",
                     sigma: float = 1.0, time_augment: bool = False, basepoint: bool = False) -> Array:
    """Gram matrix ``[N, M]`` of the untruncated signature kernel (see :func:`sde.signature.signature_kernel`);
    jitted (one compilation per shape and options)."""
    x, y = _check(X, X if Y is None else Y, dyadic_order, static_kernel, sigma)
    return _kernel_jit(x, y, order=int(dyadic_order), static_kernel=static_kernel, sigma=float(sigma),
                       time_augment=bool(time_augment), basepoint=bool(basepoint), symmetric=Y is None)


def signature_mmd(X: Any, Y: Any, *, unbiased: bool = True, dyadic_order: int = 1, static_kernel: str = "linear",
                  sigma: float = 1.0, time_augment: bool = False, basepoint: bool = False) -> Array:
    """Squared signature-kernel MMD (unbiased by default; see :func:`sde.signature.signature_mmd`); jitted."""
    x, y = _check(X, Y, dyadic_order, static_kernel, sigma)
    if unbiased and (x.shape[0] < 2 or y.shape[0] < 2):
        raise ValueError(f"signature_mmd: the unbiased estimate needs at least 2 paths per sample, got "
                         f"{x.shape[0]} and {y.shape[0]}")
    return _mmd_jit(x, y, order=int(dyadic_order), static_kernel=static_kernel, sigma=float(sigma),
                    time_augment=bool(time_augment), basepoint=bool(basepoint), unbiased=bool(unbiased))
