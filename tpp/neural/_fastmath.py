"""Compiled scalar maths shared by the CPU kernels of :mod:`tpp.neural._recurrences` and
:mod:`tpp.neural._quadrature`: the gate non-linearities as numba overloads, the compile options, and
the test of whether a computation can take the compiled path.

In float32 the non-linearities use a rational approximation of tanh (the one Eigen uses; max. abs.
error 3e-7, below float32's resolution of the gates) that the compiler vectorises: libm's scalar tanh
costs ~20 ns, and a recurrence step evaluates thousands of them. Float64 (gradcheck, double-precision
users) takes the exact functions. The choice is made by type at compile time.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from numba.extending import overload
from torch import Tensor

__all__ = ["INLINE", "JIT", "exp_neg", "runs_compiled", "sigmoid", "softplus", "tanh", "to_numpy"]

JIT = dict(cache=True, nogil=True, fastmath=True, error_model="numpy")  # the kernels: cached on disk
INLINE = dict(inline="always", fastmath=True)  # helpers inlined into the kernels


def _fast_tanh(x):
    x = min(max(x, np.float32(-7.90531110763549805)), np.float32(7.90531110763549805))
    x2 = x * x
    p = np.float32(-2.76076847742355e-16)
    p = p * x2 + np.float32(2.00018790482477e-13)
    p = p * x2 + np.float32(-8.60467152213735e-11)
    p = p * x2 + np.float32(5.12229709037114e-08)
    p = p * x2 + np.float32(1.48572235717979e-05)
    p = p * x2 + np.float32(6.37261928875436e-04)
    p = p * x2 + np.float32(4.89352455891786e-03)
    q = np.float32(1.19825839466702e-06)
    q = q * x2 + np.float32(1.18534705686654e-04)
    q = q * x2 + np.float32(2.26843463243900e-03)
    q = q * x2 + np.float32(4.89352518554385e-03)
    return p * x / q


# The four stubs below are callable from compiled code only: numba picks the implementation by dtype
# through the overloads that follow them.
def tanh(x):
    """tanh."""


def sigmoid(x):
    """logistic function."""


def exp_neg(y):
    """``exp(-y)`` for ``y >= 0``."""


def softplus(d):
    """``log(1 + exp(d))``."""


def _is_double(x) -> bool:
    return isinstance(x, numba.types.Float) and x.bitwidth == 64


@overload(tanh, **INLINE)
def _tanh_impl(x):
    if _is_double(x):
        return lambda x: math.tanh(x)
    fast = numba.njit(**INLINE)(_fast_tanh)
    return lambda x: fast(x)


@overload(sigmoid, **INLINE)
def _sigmoid_impl(x):
    if _is_double(x):
        return lambda x: 1.0 / (1.0 + math.exp(-x))
    return lambda x: np.float32(0.5) + np.float32(0.5) * tanh(np.float32(0.5) * x)


@overload(exp_neg, **INLINE)
def _exp_neg_impl(y):
    if _is_double(y):
        return lambda y: math.exp(-y)

    def fast(y):  # (1 - t) / (1 + t) with t = tanh(y / 2): absolute error < 2e-7
        t = tanh(np.float32(0.5) * y)
        return (np.float32(1.0) - t) / (np.float32(1.0) + t)

    return fast


@overload(softplus, **INLINE)
def _softplus_impl(d):
    if _is_double(d):
        return lambda d: max(d, 0.0) + math.log1p(math.exp(-abs(d)))

    def fast(d):  # max(d, 0) + log1p(u), u = exp(-|d|); log1p(u) = 2 atanh(s), s = u / (2 + u) <= 1/3
        u = exp_neg(abs(d))
        s = u / (np.float32(2.0) + u)
        s2 = s * s
        series = np.float32(1.0 / 11.0)
        series = series * s2 + np.float32(1.0 / 9.0)
        series = series * s2 + np.float32(1.0 / 7.0)
        series = series * s2 + np.float32(1.0 / 5.0)
        series = series * s2 + np.float32(1.0 / 3.0)
        series = series * s2 + np.float32(1.0)
        return max(d, np.float32(0.0)) + np.float32(2.0) * s * series

    return fast


def to_numpy(t: Tensor) -> np.ndarray:
    """A contiguous numpy view of ``t`` without its graph (copies only when ``t`` is not contiguous)."""
    return t.detach().contiguous().numpy()


def runs_compiled(*tensors: Tensor) -> bool:
    """The compiled loops serve CPU tensors of one floating dtype (float32 or float64)."""
    dtype = tensors[0].dtype
    return (dtype in (torch.float32, torch.float64)
            and all(t.device.type == "cpu" and t.dtype == dtype for t in tensors))
