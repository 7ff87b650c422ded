"""Time-varying Hawkes baselines that are linear in non-negative coefficients.

``mu_k(t) = sum_b c[k, b] B_b(t)`` with non-negative basis functions ``B_b`` and ``c >= 0``. Because
the baseline is linear in ``c``, the log-likelihood stays concave in ``(c, A)`` for fixed decays (the
basis values join the excitation features of the fast fixed-decay fit), and the compensator is
exact: every basis has a closed-form integral.

* :class:`PeriodicSpline` (``baseline="periodic"``): cyclic uniform B-splines of degree 3 (or 0..3)
  on ``n_basis`` equal knots over ``period``. They sum to one, so a constant baseline is the case of
  equal coefficients; ``c >= 0`` makes the baseline non-negative everywhere (a Fourier series would
  need an ``exp`` link, which costs the closed-form compensator and the concavity).
* :class:`Piecewise` (``baseline="piecewise"``): indicator bins, either ``n_bins`` equal bins of the
  period, or given ``breakpoints``: phases within the period (cyclic bins) when a period is given,
  absolute times otherwise (``len(breakpoints) + 1`` bins covering the real line).

Phases are measured from ``origin`` in the data's clock: with unix seconds and ``period=86400`` the
phase is the UTC time of day; with day-long sequences in hours on ``[0, 24]`` it is the hour.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["SeasonalBasis", "PeriodicSpline", "Piecewise", "make_basis", "BASELINE_KINDS"]

BASELINE_KINDS = ("constant", "periodic", "piecewise")


class SeasonalBasis(abc.ABC):
    """Non-negative basis ``B_b(t)`` with exact integrals (``[N, B]`` values, ``[S, B]`` integrals)."""

    kind: str
    n_basis: int
    period: float | None

    @abc.abstractmethod
    def values(self, t: np.ndarray) -> np.ndarray:
        """``B_b(t)`` per time, ``[N, B]``."""

    @abc.abstractmethod
    def integral(self, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
        """``int_{t0}^{t1} B_b(t) dt`` per row, ``[S, B]``."""

    @abc.abstractmethod
    def mean_weights(self) -> np.ndarray:
        """Each basis function's mean over one period (``baseline_ = c @ mean_weights``)."""

    def bound(self, coef: np.ndarray) -> np.ndarray:
        """An upper bound of ``mu_k(t)`` over all ``t`` per type ``[K]`` (for thinning)."""
        return coef.max(axis=1)

    @abc.abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The JSON that rebuilds the basis."""


class PeriodicSpline(SeasonalBasis):
    """Cyclic uniform B-splines of ``degree`` on ``n_basis`` knots, period ``period``, phase 0 at ``origin``."""

    kind = "periodic"

    def __init__(self, period: float, n_basis: int = 8, degree: int = 3, origin: float = 0.0) -> None:
        if not (isinstance(period, (int, float)) and math.isfinite(period) and period > 0):
            raise ValueError(f"baseline='periodic' needs a positive finite period, got {period!r}")
        if degree not in (0, 1, 2, 3):
            raise ValueError(f"baseline='periodic': degree must be 0, 1, 2 or 3, got {degree!r}")
        if int(n_basis) != n_basis or n_basis < degree + 1 or n_basis < 1:
            raise ValueError(f"baseline='periodic': n_basis must be an integer >= degree + 1 = {degree + 1} "
                             f"(each spline spans degree + 1 knots of the period), got {n_basis!r}")
        self.period, self.n_basis, self.degree, self.origin = float(period), int(n_basis), int(degree), float(origin)
        self.h = self.period / self.n_basis

    # Cardinal B-spline N_d on [0, d + 1] and its antiderivative M_d (M_d = 1 beyond the support).
    def _cardinal(self, z: np.ndarray) -> np.ndarray:
        d = self.degree
        out = np.zeros_like(z)
        if d == 0:
            return ((z >= 0) & (z < 1)).astype(np.float64)
        if d == 1:
            return np.clip(1 - np.abs(z - 1), 0, None)
        if d == 2:
            a, b, c = (z >= 0) & (z < 1), (z >= 1) & (z < 2), (z >= 2) & (z < 3)
            out[a] = z[a] ** 2 / 2
            out[b] = (-2 * z[b] ** 2 + 6 * z[b] - 3) / 2
            out[c] = (3 - z[c]) ** 2 / 2
            return out
        a, b, c, e = (z >= 0) & (z < 1), (z >= 1) & (z < 2), (z >= 2) & (z < 3), (z >= 3) & (z < 4)
        out[a] = z[a] ** 3 / 6
        y = z[b] - 1
        out[b] = (-3 * y ** 3 + 3 * y ** 2 + 3 * y + 1) / 6
        y = 3 - z[c]
        out[c] = (-3 * y ** 3 + 3 * y ** 2 + 3 * y + 1) / 6
        out[e] = (4 - z[e]) ** 3 / 6
        return out

    def _cumulative(self, z: np.ndarray) -> np.ndarray:
        """``M_d(z) = int_0^z N_d``, exact piecewise polynomial."""
        d = self.degree
        z = np.clip(z, 0.0, d + 1.0)
        out = np.zeros_like(z)
        if d == 0:
            return z
        if d == 1:
            return np.where(z < 1, z ** 2 / 2, 1 - (2 - z) ** 2 / 2)
        if d == 2:
            a, b, c = z < 1, (z >= 1) & (z < 2), z >= 2
            out[a] = z[a] ** 3 / 6
            y = z[b]
            out[b] = 1 / 6 + (-2 * (y ** 3 - 1) / 3 + 3 * (y ** 2 - 1) - 3 * (y - 1)) / 2
            out[c] = 1 - (3 - z[c]) ** 3 / 6
            return out
        a, b, c, e = z < 1, (z >= 1) & (z < 2), (z >= 2) & (z < 3), z >= 3
        out[a] = z[a] ** 4 / 24
        y = z[b] - 1
        out[b] = 1 / 24 + (-3 * y ** 4 / 4 + y ** 3 + 3 * y ** 2 / 2 + y) / 6
        y = 3 - z[c]  # by symmetry M(z) = 1 - M(4 - z)
        out[c] = 1 - (1 / 24 + (-3 * y ** 4 / 4 + y ** 3 + 3 * y ** 2 / 2 + y) / 6)
        out[e] = 1 - (4 - z[e]) ** 4 / 24
        return out

    def _phase(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(cycles, x)``: whole periods since ``origin`` and the phase in knot units ``[0, n_basis)``."""
        u = (np.asarray(t, np.float64) - self.origin) / self.period
        cycles = np.floor(u)
        x = (u - cycles) * self.n_basis
        return cycles, np.minimum(x, np.nextafter(self.n_basis, 0))

    def values(self, t: np.ndarray) -> np.ndarray:
        _, x = self._phase(np.ravel(t))
        b = np.arange(self.n_basis)
        return self._cardinal(np.mod(x[:, None] - b[None, :], self.n_basis))

    def _antiderivative(self, t: np.ndarray) -> np.ndarray:
        """``F_b(t) = int_origin^t B_b`` (``[N, B]``): whole periods add ``h`` each (the cardinal spline has unit mass)."""
        cycles, x = self._phase(np.ravel(t))
        B = self.n_basis
        b = np.arange(B)[None, :]
        x = x[:, None]
        lower = np.minimum(x, b)
        # int_0^x N((y - b) mod B) dy: the part y < b sees the wrapped piece N(y - b + B), the rest N(y - b)
        wrapped = self._cumulative(lower - b + B) - self._cumulative(np.zeros_like(lower) - b + B)
        direct = np.where(x > b, self._cumulative(x - b), 0.0)
        return (cycles[:, None] + wrapped + direct) * self.h  # one unit of cumulative mass = h of time

    def integral(self, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
        return self._antiderivative(t1) - self._antiderivative(t0)

    def mean_weights(self) -> np.ndarray:
        return np.full(self.n_basis, 1.0 / self.n_basis)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "period": self.period, "n_basis": self.n_basis, "degree": self.degree,
                "origin": self.origin}


class Piecewise(SeasonalBasis):
    """Indicator bins. With ``period``: cyclic bins starting at the phases ``breakpoints`` (in
    ``[0, period)``, default ``n_bins`` equal bins); without: bins of absolute time split at ``breakpoints``."""

    kind = "piecewise"

    def __init__(self, period: float | None = None, n_bins: int | None = None,
                 breakpoints: Sequence[float] | None = None, origin: float = 0.0) -> None:
        self.origin = float(origin)
        if period is not None and not (math.isfinite(period) and period > 0):
            raise ValueError(f"baseline='piecewise': period must be positive and finite, got {period!r}")
        self.period = None if period is None else float(period)
        if breakpoints is None:
            if self.period is None or n_bins is None:
                raise ValueError("baseline='piecewise' needs breakpoints=, or period= with n_bins= (equal bins)")
            if int(n_bins) != n_bins or n_bins < 1:
                raise ValueError(f"baseline='piecewise': n_bins must be a positive integer, got {n_bins!r}")
            edges = np.arange(int(n_bins)) * self.period / int(n_bins)
        else:
            edges = np.asarray(breakpoints, np.float64).ravel()
            if edges.size == 0 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
                raise ValueError(f"baseline='piecewise': breakpoints must be finite and strictly increasing, "
                                 f"got {edges.tolist()}")
            if self.period is not None and (edges[0] < 0 or edges[-1] >= self.period):
                raise ValueError(f"baseline='piecewise': with period={self.period}, breakpoints are phases in "
                                 f"[0, {self.period}), got {edges.tolist()}")
        self.edges = edges
        self.n_basis = edges.size if self.period is not None else edges.size + 1
        # Bins as [lo, hi) segments: cyclic bins on the phase axis [0, period) (the last one wraps round
        # to the first edge), or absolute bins on the real line (the outer two unbounded).
        if self.period is not None:
            lo = edges
            hi = np.append(edges[1:], edges[0] + self.period)
        else:
            lo = np.concatenate([[-np.inf], edges])
            hi = np.concatenate([edges, [np.inf]])
        self.lo, self.hi = lo, hi

    def _phase(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = (np.asarray(t, np.float64) - self.origin) / self.period
        cycles = np.floor(u)
        return cycles, (u - cycles) * self.period

    def values(self, t: np.ndarray) -> np.ndarray:
        t = np.ravel(np.asarray(t, np.float64))
        if self.period is None:
            x = t[:, None]
            return ((x >= self.lo) & (x < self.hi)).astype(np.float64)
        _, x = self._phase(t)
        x = x[:, None]
        # a wrapped last bin also covers [0, edges[0]) (that is, [period, edges[0] + period) shifted)
        return (((x >= self.lo) & (x < self.hi)) | ((x + self.period >= self.lo) & (x + self.period < self.hi))).astype(np.float64)

    def _antiderivative(self, t: np.ndarray) -> np.ndarray:
        cycles, x = self._phase(np.ravel(t))
        x = x[:, None]
        widths = self.hi - self.lo
        # time of [0, x) spent in each bin: the segment itself plus its wrapped part shifted by one period
        inside = np.clip(x, self.lo, self.hi) - self.lo + np.clip(x + self.period, self.lo, self.hi) - np.clip(self.period, self.lo, self.hi)
        return cycles[:, None] * widths[None, :] + inside

    def integral(self, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
        t0 = np.ravel(np.asarray(t0, np.float64))[:, None]
        t1 = np.ravel(np.asarray(t1, np.float64))[:, None]
        if self.period is None:
            return np.clip(t1, self.lo, self.hi) - np.clip(t0, self.lo, self.hi)
        return self._antiderivative(t1[:, 0]) - self._antiderivative(t0[:, 0])

    def mean_weights(self) -> np.ndarray:
        if self.period is None:
            raise ValueError("a piecewise baseline on absolute breakpoints has no period to average over")
        return (self.hi - self.lo) / self.period

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "period": self.period, "breakpoints": self.edges.tolist(), "origin": self.origin}


def make_basis(kind: str, period: float | None = None, n_basis: int | None = None, degree: int = 3,
               breakpoints: Sequence[float] | None = None, origin: float = 0.0) -> SeasonalBasis | None:
    """The basis of ``baseline=kind`` (None for ``"constant"``); argument errors are ``ValueError``."""
    if kind == "constant":
        extra = [name for name, value in (("period", period), ("n_basis", n_basis), ("breakpoints", breakpoints))
                 if value is not None]
        if extra:
            raise ValueError(f"baseline='constant' takes no {', '.join(extra)}: pass baseline='periodic' or 'piecewise'")
        return None
    if kind == "periodic":
        if breakpoints is not None:
            raise ValueError("baseline='periodic' takes n_basis= (equal knots), not breakpoints=; "
                             "use baseline='piecewise' for bins at given breakpoints")
        if period is None:
            raise ValueError("baseline='periodic' needs period= (e.g. 24 for a daily cycle in hours, 86400 in seconds)")
        return PeriodicSpline(period, 8 if n_basis is None else n_basis, degree, origin)
    if kind == "piecewise":
        if degree != 3:
            raise ValueError("baseline='piecewise' takes no degree= (its bins are constant); degree applies to 'periodic'")
        return Piecewise(period, n_basis, breakpoints, origin)
    raise ValueError(f"baseline must be one of {', '.join(map(repr, BASELINE_KINDS))}, got {kind!r}")


def basis_from_dict(d: dict[str, Any]) -> SeasonalBasis:
    """Inverse of ``SeasonalBasis.to_dict``."""
    if d["kind"] == "periodic":
        return PeriodicSpline(d["period"], d["n_basis"], d.get("degree", 3), d.get("origin", 0.0))
    return Piecewise(d.get("period"), None, d["breakpoints"], d.get("origin", 0.0))
