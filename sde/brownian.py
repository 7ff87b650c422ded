"""Brownian sample paths for the SDE solves of :func:`sde.solvers.solve` (torchsde's Brownian protocol).

```python
bm = brownian(0.0, 1.0, (B, m), dt=1e-2, seed=0)              # PrecomputedBrownian on the grid 0, 0.01, ..., 1
bm(0.2, 0.5)                                                   # W(0.5) - W(0.2), [B, m]
bm.grid, bm.values                                             # the stored path (the JAX twin takes these)
bm = brownian(0.0, 1.0, (B, m), dt=1e-2, kind=BrownianKind.INTERVAL, seed=0)   # torchsde.BrownianInterval
```

Why a path of our own: torchsde's default Brownian object without a ``dt`` hint is 10-25x slower, and
a path stored on the step grid answers every query of a fixed-step solve (forward and adjoint) by a
lookup from one seeded, device-independent sample. :class:`CountingBrownian` forwards to any Brownian
object and records the queries: torchsde asks once per solver step, which is how :func:`sde.solvers.solve`
counts an SDE solve's steps.
"""

from __future__ import annotations

import bisect
import enum
import math
from typing import Any, Protocol

import torch
import torchsde
from torch import Tensor
from torchsde._brownian import BaseBrownian  # the base class torchsde checks a ``bm`` against

__all__ = ["BrownianKind", "CountingBrownian", "PrecomputedBrownian", "brownian"]


class BrownianKind(enum.Enum):
    """``PATH``: increments precomputed on a fixed grid; ``INTERVAL``: torchsde's BrownianInterval (any query)."""

    PATH = "path"
    INTERVAL = "interval"


class PrecomputedBrownian(BaseBrownian):
    """A seeded Brownian sample path stored on a fixed grid, usable as torchsde's ``bm``.

    ``W(tb) - W(ta)`` is a lookup when ``ta``, ``tb`` are grid points (up to rounding of the solver's
    clock) and a linear interpolation of the stored path otherwise, so every query answers from one
    fixed continuous path (forward and adjoint passes agree). With ``levy_area=True`` it also stores
    each cell's space-time Levy area ``H ~ N(0, h/12)`` and answers ``return_U`` (needed by SRK) for
    intervals made of whole cells, ``U = int_ta^tb (W_s - W_ta) ds`` as torchsde defines it.
    """

    def __init__(self, grid: Tensor, values: Tensor, levy: Tensor | None = None) -> None:
        if grid.ndim != 1 or grid.numel() < 2 or not bool((grid[1:] > grid[:-1]).all()):
            raise ValueError("grid must be a strictly increasing 1-D tensor with at least two points")
        if values.shape[0] != grid.numel() or values.ndim < 2:
            raise ValueError(f"values must be [N+1, *size] with N+1 = {grid.numel()}, got {tuple(values.shape)}")
        self._grid = grid.to(device=values.device, dtype=torch.float64)
        self._values = values
        self._times = self._grid.tolist()
        widths = self._grid.diff()
        self._tol = 1e-4 * float(widths.min())  # absorbs the rounding of torchsde's accumulated clock
        self._prefix_u = self._prefix_wh = None
        if levy is not None:
            # U over cells i..j-1 = sum_k [U_k + (W_k - W_i) h_k], with U_k = h_k (dW_k / 2 + H_k)
            w = values.to(torch.float64)
            shape = (-1,) + (1,) * (values.ndim - 1)
            u_cell = widths.view(shape) * (0.5 * w.diff(dim=0) + levy.to(torch.float64))
            zero = torch.zeros_like(w[:1])
            self._prefix_u = torch.cat([zero, u_cell.cumsum(0)])
            self._prefix_wh = torch.cat([zero, (w[:-1] * widths.view(shape)).cumsum(0)])

    @property
    def grid(self) -> Tensor:
        """``[N+1]`` float64 times of the stored path."""
        return self._grid

    @property
    def values(self) -> Tensor:
        """``[N+1, *size]`` the path ``W(grid) - W(grid[0])`` (``values[0] == 0``)."""
        return self._values

    @property
    def dtype(self) -> torch.dtype:
        return self._values.dtype

    @property
    def device(self) -> torch.device:
        return self._values.device

    @property
    def shape(self) -> torch.Size:
        return self._values.shape[1:]

    @property
    def levy_area_approximation(self) -> str:
        return "none" if self._prefix_u is None else "space-time"

    def __repr__(self) -> str:
        return (f"PrecomputedBrownian(t0={self._times[0]}, t1={self._times[-1]}, steps={len(self._times) - 1}, "
                f"size={tuple(self.shape)}, levy_area={self.levy_area_approximation!r})")

    def covers(self, t0: float, t1: float) -> bool:
        """Whether the stored path spans ``[t0, t1]`` (up to the rounding of a solver's clock)."""
        return self._times[0] <= t0 + self._tol and self._times[-1] >= t1 - self._tol

    def _locate(self, t: float) -> tuple[int, float | None]:
        """``(i, None)`` if ``t`` is grid point ``i``, else ``(i, w)``: ``t`` at fraction ``w`` of cell ``i-1..i``."""
        if t < self._times[0] - self._tol or t > self._times[-1] + self._tol:
            raise ValueError(f"Brownian query at t={t} outside its grid [{self._times[0]}, {self._times[-1]}]")
        i = bisect.bisect_left(self._times, t - self._tol)
        if abs(self._times[i] - t) <= self._tol:
            return i, None
        return i, (t - self._times[i - 1]) / (self._times[i] - self._times[i - 1])

    def _value(self, t: float) -> Tensor:
        i, w = self._locate(t)
        if w is None:
            return self._values[i]
        return torch.lerp(self._values[i - 1], self._values[i], w)

    def __call__(self, ta: Any, tb: Any = None, return_U: bool = False, return_A: bool = False) -> Any:
        if return_A:
            raise ValueError("PrecomputedBrownian has no Levy area A; use BrownianKind.INTERVAL for that method")
        if tb is None:
            ta, tb = self._times[0], ta
        ta, tb = float(ta), float(tb)
        if ta > tb:
            raise ValueError(f"Brownian query needs ta <= tb, got ta={ta}, tb={tb}")
        dw = self._value(tb) - self._value(ta)
        if not return_U:
            return dw
        if self._prefix_u is None:
            raise ValueError("return_U needs the space-time Levy area: build the path with levy_area=True")
        (i, wa), (j, wb) = self._locate(ta), self._locate(tb)
        if wa is not None or wb is not None:
            raise ValueError(f"space-time Levy area is only stored for whole grid cells; [{ta}, {tb}] is not one "
                             "(solve with the path's own step, or use BrownianKind.INTERVAL)")
        w_i = self._values[i].to(torch.float64)
        u = (self._prefix_u[j] - self._prefix_u[i]) + (self._prefix_wh[j] - self._prefix_wh[i]) - w_i * (tb - ta)
        return dw, u.to(self.dtype)


def _new_seed() -> int:
    # drawn from torch's global generator, so torch.manual_seed makes unseeded solves reproducible
    return int(torch.randint(0, 2**62, (), dtype=torch.int64))


def brownian(t0: float, t1: float, size: tuple[int, ...], *, dt: float, kind: BrownianKind = BrownianKind.PATH,
             seed: int | None = None, dtype: torch.dtype | None = None, device: torch.device | str | None = None,
             levy_area: bool = False) -> BaseBrownian:
    """A seeded Brownian motion on ``[t0, t1]`` of shape ``size`` (``(B, m)`` for torchsde), for SDE solves.

    ``PATH``: a :class:`PrecomputedBrownian` on the grid ``t0 + k * dt`` (last point ``t1``; a last cell
    shorter than ``dt / 1000`` is merged into the previous one), drawn on the CPU in float64 so the same
    seed gives the same path on every device and dtype. ``INTERVAL``: ``torchsde.BrownianInterval``
    with ``dt`` as its step hint. ``levy_area=True`` adds the space-time Levy area (needed by SRK).
    """
    t0, t1, dt = float(t0), float(t1), float(dt)
    if not t1 > t0:
        raise ValueError(f"brownian needs t0 < t1, got t0={t0}, t1={t1}")
    if not dt > 0:
        raise ValueError(f"brownian needs dt > 0, got {dt}")
    dtype = dtype or torch.get_default_dtype()
    seed = _new_seed() if seed is None else int(seed)
    if kind is BrownianKind.INTERVAL:
        return torchsde.BrownianInterval(t0=t0, t1=t1, size=tuple(size), dtype=dtype, device=device, entropy=seed,
                                         dt=dt, levy_area_approximation="space-time" if levy_area else "none")
    if not isinstance(kind, BrownianKind):
        raise TypeError(f"kind must be a BrownianKind, got {kind!r}")
    n = max(1, math.ceil((t1 - t0) / dt - 1e-3))
    grid = t0 + dt * torch.arange(n + 1, dtype=torch.float64)
    grid[-1] = t1
    widths = grid.diff().view((-1,) + (1,) * len(size))
    generator = torch.Generator().manual_seed(seed)
    dw = torch.randn((n, *size), generator=generator, dtype=torch.float64) * widths.sqrt()
    values = torch.cat([torch.zeros((1, *size), dtype=torch.float64), dw.cumsum(0)])
    levy = None
    if levy_area:
        levy = (torch.randn((n, *size), generator=generator, dtype=torch.float64) * (widths / 12).sqrt()).to(device)
    return PrecomputedBrownian(grid.to(device), values.to(device=device, dtype=dtype), levy)


class StepCounter(Protocol):
    """What :class:`CountingBrownian` switches on at the first query: the wrapped system's evaluation counter."""

    counting: bool


class CountingBrownian(BaseBrownian):
    """Forwards to a Brownian object and records the forward solve's steps (one query per solver step).

    The first query switches ``counter.counting`` on: torchsde evaluates the system a few times to check
    shapes before it steps, and those calls are not the solve's cost. More than ``max_queries`` queries
    raise ``RuntimeError`` (the solve's ``max_steps``). Set ``recording = False`` after the forward solve,
    so an adjoint pass is not counted.
    """

    def __init__(self, base: BaseBrownian, counter: StepCounter, max_queries: int) -> None:
        self.base, self.counter, self.max_queries = base, counter, max_queries
        self.queries: list[tuple[float, float]] = []
        self.recording = True

    def __call__(self, ta: Any, tb: Any = None, return_U: bool = False, return_A: bool = False) -> Any:
        if self.recording:
            self.counter.counting = True  # stepping has started: evaluations from now on are the solve's
            self.queries.append((float(ta), float(tb if tb is not None else ta)))
            if len(self.queries) > self.max_queries:
                raise RuntimeError(f"SDE solve exceeded max_steps ({self.max_queries} solver steps)")
        return self.base(ta, tb, return_U=return_U, return_A=return_A)

    def __repr__(self) -> str:
        return f"CountingBrownian({self.base!r})"

    @property
    def dtype(self) -> torch.dtype:
        return self.base.dtype

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def shape(self) -> torch.Size:
        return self.base.shape

    @property
    def levy_area_approximation(self) -> str:
        return self.base.levy_area_approximation

