"""The one numerical integrator of intensities: Gauss-Legendre points on every inter-event interval.

Models without a closed-form compensator integrate ``intensity`` here. The observation window
``[t_start, t_end]`` of each sequence is cut at its events into ``L + 1`` intervals; each interval
gets ``num_points`` Gauss-Legendre nodes, exact for polynomials of degree ``2 num_points - 1``.
The error estimate is the difference with the rule of half as many points, so a caller can see
how fine the integration was (a coarse fixed grid can be gamed by a flexible model).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.special
import torch
from torch import Tensor

from tpp.events import EventBatch

__all__ = ["IntervalIntegral", "gauss_legendre", "integrate_intervals", "interval_bounds"]

IntensityFn = Callable[[EventBatch, Tensor], Tensor]  # (batch, t [B, T]) -> [B, T, K]


@lru_cache(maxsize=32)
def _legendre(num_points: int) -> tuple[np.ndarray, np.ndarray]:
    # scipy's Golub-Welsch roots: ~25x faster than numpy's leggauss for fine rules (256+ points)
    return scipy.special.roots_legendre(num_points)


#: The finest quadrature rule: nodes cost memory per interval, and a num_points of 1e300 once reached scipy's
#: allocator ("Maximum allowed size exceeded").
MAX_QUADRATURE_POINTS = 4096


def gauss_legendre(a: Tensor, b: Tensor, num_points: int) -> tuple[Tensor, Tensor]:
    """Nodes ``[..., n]`` and weights ``[..., n]`` of the ``n``-point rule on each interval ``[a, b]``."""
    if (isinstance(num_points, bool) or not isinstance(num_points, numbers.Real)
            or not float(num_points).is_integer() or not 1 <= num_points <= MAX_QUADRATURE_POINTS):
        raise ValueError(f"num_points (quadrature nodes per interval) must be an integer in "
                         f"[1, {MAX_QUADRATURE_POINTS}], got {num_points!r}")
    x, w = _legendre(int(num_points))
    x = torch.as_tensor(x, dtype=a.dtype, device=a.device)
    w = torch.as_tensor(w, dtype=a.dtype, device=a.device)
    half = ((b - a) / 2)[..., None]
    mid = ((b + a) / 2)[..., None]
    return mid + half * x, half * w


def interval_bounds(batch: EventBatch) -> tuple[Tensor, Tensor, Tensor]:
    """Left and right ends ``[B, L + 1]`` of the intervals between ``t_start``, the events and ``t_end``,
    and their validity mask (padding intervals have zero length and are masked out)."""
    left = torch.cat([batch.t_start[:, None], batch.time], dim=1)
    right = torch.cat([batch.time, batch.t_end[:, None]], dim=1)
    lengths = batch.lengths
    idx = torch.arange(batch.max_length + 1, device=batch.device)
    valid = idx[None, :] <= lengths[:, None]
    # The last valid interval ends at t_end, not at padding.
    right = torch.where(idx[None, :] == lengths[:, None], batch.t_end[:, None], right)
    left = torch.where(valid, left, batch.t_end[:, None])
    right = torch.where(valid, right, batch.t_end[:, None])
    return left, right, valid


@dataclass
class IntervalIntegral:
    """Integrals of each mark's intensity over each interval ``[B, L + 1, K]`` and an error estimate."""

    value: Tensor
    error: Tensor
    num_points: int

    @property
    def total(self) -> Tensor:
        """Compensator of the whole window, ``[B]``."""
        return self.value.sum(dim=(1, 2))


def integrate_intervals(intensity: IntensityFn, batch: EventBatch, num_points: int = 32) -> IntervalIntegral:
    """Integrate ``intensity(batch, t)`` over every inter-event interval with ``num_points`` nodes each."""
    if num_points < 2:
        raise ValueError("num_points must be >= 2")
    left, right, valid = interval_bounds(batch)
    nodes, weights = gauss_legendre(left, right, num_points)
    B, I, n = nodes.shape
    lam = intensity(batch, nodes.reshape(B, I * n)).reshape(B, I, n, -1)
    value = (lam * weights[..., None]).sum(2)
    coarse_nodes, coarse_w = gauss_legendre(left, right, num_points // 2)
    lam_c = intensity(batch, coarse_nodes.reshape(B, -1)).reshape(B, I, num_points // 2, -1)
    coarse = (lam_c * coarse_w[..., None]).sum(2)
    mask = valid[..., None].to(value.dtype)
    return IntervalIntegral(value * mask, ((value - coarse) * mask).abs(), num_points)
