"""The JAX twin of :mod:`sde.solvers`: one face over diffrax, :func:`solve`, with the torch face's
arguments and dispatch.

```python
sol = solve(system, y0, ts)                                    # ODE: system(t, y) -> dy, Dopri5 + PID controller
sol = solve(sde, y0, ts, step_size=1e-2, brownian=bm)          # SDE: sde.f / sde.g (diagonal noise), Euler
sol = solve(field, z0, ts, control=path, method=Method.RK4)    # CDE: field(t, z) -> [B, D, C], dz = field dX
sol.ys      # [B, T, D] (batch first, as the torch face)
sol.stats   # SolverStats(nfe, steps, accepted, rejected): jnp scalars
```

The options are the torch face's enums (:class:`sde.solvers.Method`, :class:`sde.solvers.Backprop`).
Everything here is pure JAX once the step grid is known, so a whole loss can be wrapped in
``eqx.filter_jit``. A fixed grid has a data-dependent length, so it is built outside the compiled
function: :func:`step_grid` (ODE/CDE) and :func:`brownian_grid` (SDE) in NumPy, from concrete
times; inside ``jit`` pass ``grid=`` (ODE/CDE) or a :class:`BrownianPath` (SDE).

What is the same as the torch face, so that the twins agree to rounding (``tests/sde/test_jax_parity.py``):

* fixed-step ODE/CDE solves step on exactly the torch grid (``ts``, ``t0 + k * step_size``, the
  control's knots, with the same de-duplication), with the same Runge-Kutta tableaus (``RK4`` is
  torchdiffeq's 3/8 rule, written here as a diffrax Butcher tableau);
* a CDE ``dz = f(t, z) dX`` is solved as torchcde solves it, as the ODE ``dz/dt = f(t, z) dX/dt``
  (diffrax's ``ControlTerm`` would use the increment ``X(t1) - X(t0)`` per step instead: another
  scheme). torchdiffeq reads a stage at a step's start just after it and a stage at its end just
  before it (``perturb``), so a piecewise path's derivative comes from the piece the step lies in;
  the fixed-step CDE term here does the same (:class:`_SidedControlledTerm`); adaptive CDE solves
  step onto the knots as ``jump_ts`` (diffrax then restarts just after each knot);
* fixed-step SDE solves step on the Brownian path's grid (the torch face's ``t0 + k * dt``) with
  increments read from the same stored path (:class:`BrownianPath`, e.g. from
  :func:`brownian_from_torch`), and outputs between steps are linear interpolations (torchsde's
  rule; diffrax's Euler dense output is the same line);
* diagonal noise is a ``lineax.DiagonalLinearOperator`` (an elementwise product, not a matrix).

Fixed-step solves run the diffrax solver's own ``step`` over the known grid in a ``jax.lax.scan``
(:func:`_march`) rather than ``diffrax.diffeqsolve``, whose while loop with checkpointed reverse
mode is built for an unknown number of steps: here that compiled twice as fast and ran 1.5-2x
faster. Adaptive solves are ``diffrax.diffeqsolve`` with ``diffrax.PIDController``.

What differs: adaptive solves use diffrax's PID controller (``diffrax.PIDController``, an integral
controller with diffrax's defaults) and its initial step rule, so their step sequences are not
torchdiffeq's; they agree with torch to the tolerance asked for, not to rounding. ``max_steps``
bounds all steps of a solve (torchdiffeq: per output interval). ``stats.nfe`` is computed from the
steps and the tableau (diffrax does not count evaluations); SDE solves count drift evaluations.
Adaptive SDE steps and the SRK / Milstein methods are not offered here (``ValueError``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax
import numpy as np
from jaxtyping import Array, ArrayLike

from sde.solvers import Backprop, Method

__all__ = ["BrownianPath", "RK4", "Solution", "SolverStats", "brownian", "brownian_from_torch", "brownian_grid",
           "solve", "step_grid"]


# --------------------------------------------------------------------------- solvers
_RK38 = diffrax.ButcherTableau(
    a_lower=(np.array([1 / 3]), np.array([-1 / 3, 1.0]), np.array([1.0, -1.0, 1.0])),
    b_sol=np.array([1 / 8, 3 / 8, 3 / 8, 1 / 8]),
    b_error=np.zeros(4),
    c=np.array([1 / 3, 2 / 3, 1.0]),
)


class RK4(diffrax.AbstractERK):
    """Kutta's 3/8-rule fourth-order Runge-Kutta method (torchdiffeq's ``rk4``).

    4th order, 4 stages, fixed step only (no embedded error estimate); cubic Hermite dense output.
    diffrax offers no classical RK4, and the torch face's ``Method.RK4`` is this variant.
    """

    tableau: ClassVar[diffrax.ButcherTableau] = _RK38
    interpolation_cls: ClassVar[Callable[..., diffrax.ThirdOrderHermitePolynomialInterpolation]] = (
        diffrax.ThirdOrderHermitePolynomialInterpolation.from_k)

    def order(self, terms: Any) -> int:
        return 4


# (diffrax solver, stages per step, first-same-as-last)
_ODE_FIXED: dict[Method, tuple[Callable[[], diffrax.AbstractSolver], int, bool]] = {
    Method.EULER: (diffrax.Euler, 1, False),
    Method.MIDPOINT: (diffrax.Midpoint, 2, False),
    Method.HEUN: (diffrax.Heun, 2, False),
    Method.RK4: (RK4, 4, False),
}
_ODE_ADAPTIVE: dict[Method, tuple[Callable[[], diffrax.AbstractSolver], int, bool]] = {
    Method.BOSH3: (diffrax.Bosh3, 4, True),
    Method.DOPRI5: (diffrax.Dopri5, 7, True),
    Method.DOPRI8: (diffrax.Dopri8, 14, False),
    Method.ADAPTIVE_HEUN: (diffrax.Heun, 2, False),
}
# SDE methods by sde_type: (diffrax solver, drift evaluations per step)
_SDE: dict[str, dict[Method, tuple[Callable[[], diffrax.AbstractSolver], int]]] = {
    "ito": {Method.EULER: (diffrax.Euler, 1)},
    "stratonovich": {Method.MIDPOINT: (diffrax.Midpoint, 2), Method.HEUN: (diffrax.Heun, 2),
                     Method.EULER_HEUN: (diffrax.EulerHeun, 1), Method.REVERSIBLE_HEUN: (diffrax.ReversibleHeun, 1)},
}


class SolverStats(eqx.Module):
    """Cost of one solve (jnp integer scalars): ``nfe`` from the tableau and the step counts (see the
    module docstring), ``steps`` attempted, ``accepted``, ``rejected``."""

    nfe: Array
    steps: Array
    accepted: Array
    rejected: Array


class Solution(eqx.Module):
    """``ys [B, T, D]`` at ``ts [T]`` and the :class:`SolverStats` (as the torch face's ``Solution``)."""

    ts: Array
    ys: Array
    stats: SolverStats


# --------------------------------------------------------------------------- grids (NumPy, outside jit)
def _concrete(x: Any, name: str) -> np.ndarray:
    try:
        return np.asarray(x)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError) as error:
        raise ValueError(f"{name} is traced (inside jit): build the step grid outside jit with sde.jax.step_grid / "
                         "sde.jax.brownian_grid and pass grid= (ODE/CDE) or a BrownianPath (SDE)") from error


def step_grid(ts: ArrayLike, step_size: float | None = None, knots: ArrayLike | None = None) -> np.ndarray:
    """The fixed-step ODE/CDE grid of the torch face, in ``ts``' dtype: the output times ``ts``,
    ``ts[0] + k * step_size`` and the control's ``knots`` inside ``(ts[0], ts[-1])``, without points a
    rounding error (``max(1e-9, 64 eps) * span``) away from another or from an output time."""
    t = _concrete(ts, "ts")
    if t.ndim != 1 or t.size < 2:
        raise ValueError(f"ts must be a 1-D array of at least 2 times, got shape {t.shape}")
    t64 = t.astype(np.float64)
    parts = [t64]
    if step_size is not None:
        if not step_size > 0:
            raise ValueError(f"step_size must be positive, got {step_size}")
        n = max(1, math.ceil(float(t64[-1] - t64[0]) / step_size - 1e-3))
        parts.insert(0, t64[0] + step_size * np.arange(n, dtype=np.float64))
    if knots is not None:
        k = _concrete(knots, "knots").astype(np.float64).reshape(-1)
        parts.append(k[(k > t64[0]) & (k < t64[-1])])
    all_knots = np.unique(np.concatenate(parts))
    # torch's _knot_grid, on the output times' dtype
    span = float(all_knots[-1] - all_knots[0])
    tol = max(1e-9, 64 * float(np.finfo(t.dtype).eps)) * span
    k = np.unique(all_knots.astype(t.dtype))
    inner = k[(k > t[0] + tol) & (k < t[-1] - tol)]
    if inner.size:
        inner = inner[np.concatenate([[True], np.diff(inner) > tol])]
        at = np.clip(np.searchsorted(t, inner), 1, t.size - 1)
        gap = np.minimum(np.abs(inner - t[at - 1]), np.abs(t[at] - inner))
        inner = inner[gap > tol]
    return np.sort(np.concatenate([t, inner]))


def brownian_grid(t0: float, t1: float, dt: float) -> np.ndarray:
    """``[N+1]`` float64: the torch face's Brownian / fixed SDE step grid ``t0 + k * dt``, last point ``t1``
    (a last cell shorter than ``dt / 1000`` merged into the one before, as :func:`sde.solvers.brownian`)."""
    t0, t1, dt = float(t0), float(t1), float(dt)
    if not t1 > t0:
        raise ValueError(f"brownian_grid needs t0 < t1, got t0={t0}, t1={t1}")
    if not dt > 0:
        raise ValueError(f"brownian_grid needs dt > 0, got {dt}")
    n = max(1, math.ceil((t1 - t0) / dt - 1e-3))
    grid = t0 + dt * np.arange(n + 1, dtype=np.float64)
    grid[-1] = t1
    return grid


# --------------------------------------------------------------------------- Brownian motion
class BrownianPath(diffrax.AbstractBrownianPath):
    """A Brownian sample path stored on a grid (``values [N+1, *shape]`` = ``W(grid) - W(grid[0])``),
    linear between grid points: the JAX twin of :class:`sde.solvers.PrecomputedBrownian`.

    A fixed-step solve on ``grid`` reads each increment with two lookups, where diffrax's
    ``VirtualBrownianTree`` costs several times the solve; it is a fixed function of time, so
    forward, reverse-mode and adjoint passes see one path.
    """

    grid: Array
    values: Array

    @property
    def levy_area(self) -> type[diffrax.BrownianIncrement]:
        return diffrax.BrownianIncrement

    @property
    def t0(self) -> Array:
        return self.grid[0]

    @property
    def t1(self) -> Array:
        return self.grid[-1]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape[1:])

    def _value(self, t: ArrayLike) -> Array:
        i = jnp.clip(jnp.searchsorted(self.grid, t, side="right"), 1, self.grid.shape[0] - 1)
        lo, hi = self.grid[i - 1], self.grid[i]
        w = ((t - lo) / (hi - lo)).astype(self.values.dtype)
        return self.values[i - 1] + w * (self.values[i] - self.values[i - 1])

    def evaluate(self, t0: ArrayLike, t1: ArrayLike | None = None, left: bool = True,
                 use_levy: bool = False) -> Any:
        if t1 is None:
            return self._value(t0)
        dw = self._value(t1) - self._value(t0)
        if use_levy:
            return diffrax.BrownianIncrement(dt=t1 - t0, W=dw)
        return dw


def brownian(key: Array, grid: ArrayLike, shape: tuple[int, ...], dtype: Any = None) -> BrownianPath:
    """A Brownian path on ``grid`` (e.g. :func:`brownian_grid`) of shape ``shape`` (``(B, D)`` for diagonal
    noise) drawn with ``key``; usable inside ``jit`` (the grid's length fixes the shapes)."""
    grid = jnp.asarray(grid)
    dtype = dtype or jnp.result_type(float)
    widths = jnp.diff(grid).astype(dtype).reshape((-1,) + (1,) * len(shape))
    dw = jax.random.normal(key, (grid.shape[0] - 1, *shape), dtype) * jnp.sqrt(widths)
    return BrownianPath(grid, jnp.concatenate([jnp.zeros((1, *shape), dtype), jnp.cumsum(dw, 0)]))


def brownian_from_torch(bm: Any) -> BrownianPath:
    """The same sample path as a torch :class:`sde.solvers.PrecomputedBrownian` (``.grid``, ``.values``)."""
    if not (hasattr(bm, "grid") and hasattr(bm, "values")):
        raise TypeError("brownian_from_torch needs a path with .grid and .values: "
                        "sde.solvers.brownian(..., kind=BrownianKind.PATH)")
    values = bm.values.detach().cpu().numpy().copy()  # a copy: JAX may alias NumPy memory
    return BrownianPath(jnp.asarray(bm.grid.detach().cpu().numpy().copy()), jnp.asarray(values, dtype=values.dtype))


# --------------------------------------------------------------------------- terms
def _ode_field(t: Array, y: Array, system: Any) -> Array:
    # the system travels in args, so BacksolveAdjoint differentiates through it
    return system(t.astype(y.dtype), y)


def _cde_field(t: Array, z: Array, args: tuple[Any, Any]) -> Array:
    system, control = args
    t = t.astype(z.dtype)
    return (system(t, z) @ control.derivative(t)[..., None])[..., 0]


class _SidedControlledTerm(diffrax.AbstractTerm):
    """``dz = f(t, z) dX/dt dt`` with every stage reading ``dX/dt`` inside its step (torchdiffeq's
    ``perturb``): the step's start and end are moved one float inwards, so a path made of pieces
    gives the derivative of the piece the step covers, where a plain ODE term would read the piece
    before a knot at the start of the step after it. The control of a step is ``(dt, t0, t1)``."""

    def vf(self, t: Array, y: Array, args: Any) -> Array:
        return _cde_field(t, y, args)

    def contr(self, t0: Array, t1: Array, **kwargs: Any) -> tuple[Array, Array, Array]:
        return t1 - t0, t0, t1

    def prod(self, vf: Array, control: tuple[Array, Array, Array]) -> Array:
        return vf * control[0].astype(vf.dtype)

    def vf_prod(self, t: Array, y: Array, args: Any, control: tuple[Array, Array, Array]) -> Array:
        dt, t0, t1 = control
        inside = jnp.clip(t, jnp.nextafter(t0, t1), jnp.nextafter(t1, t0))
        return self.prod(self.vf(inside, y, args), control)

    def is_vf_expensive(self, t0: Any, t1: Any, y: Any, args: Any) -> bool:
        return True  # makes the Runge-Kutta solver call vf_prod (which sees the step) for every stage


def _sde_drift(t: Array, y: Array, system: Any) -> Array:
    return system.f(t.astype(y.dtype), y)


def _sde_diffusion(t: Array, y: Array, system: Any) -> lineax.DiagonalLinearOperator:
    return lineax.DiagonalLinearOperator(system.g(t.astype(y.dtype), y))


# --------------------------------------------------------------------------- the solve
def _check(y0: Any, ts: Any, rtol: float, atol: float, step_size: float | None, max_steps: int) -> None:
    if not hasattr(y0, "ndim") or y0.ndim != 2 or not jnp.issubdtype(y0.dtype, jnp.floating):
        raise ValueError(f"y0 must be a floating array [B, D], got {getattr(y0, 'shape', type(y0).__name__)}")
    if not hasattr(ts, "ndim") or ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"ts must be a 1-D array of at least 2 output times, got {getattr(ts, 'shape', ts)}")
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be positive, got rtol={rtol}, atol={atol}")
    if step_size is not None and not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    if not (isinstance(max_steps, int) and max_steps > 0):
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")


def _adjoint(backprop: Backprop) -> diffrax.AbstractAdjoint:
    if not isinstance(backprop, Backprop):
        raise TypeError(f"backprop must be a Backprop, got {backprop!r}")
    return diffrax.BacksolveAdjoint() if backprop is Backprop.ADJOINT else diffrax.RecursiveCheckpointAdjoint()


def _saveat(ts: Array) -> diffrax.SaveAt:
    # two output times are the solve's ends: saving them needs no dense interpolation inside the loop
    return diffrax.SaveAt(t0=True, t1=True) if ts.shape[0] == 2 else diffrax.SaveAt(ts=ts)


def _stats(sol: diffrax.Solution, stages: int, fsal: bool, extra: int = 0) -> SolverStats:
    steps = jnp.asarray(sol.stats["num_steps"])
    accepted = jnp.asarray(sol.stats["num_accepted_steps"])
    rejected = jnp.asarray(sol.stats["num_rejected_steps"])
    nfe = (1 + (stages - 1) * steps if fsal else stages * steps) + extra
    return SolverStats(nfe, steps, accepted, rejected)


def solve(system: Any, y0: Array, ts: Array, *, control: Any = None, method: Method | None = None,
          step_size: float | None = None, adaptive: bool | None = None, rtol: float = 1e-3, atol: float = 1e-6,
          max_steps: int = 10_000, backprop: Backprop = Backprop.DIRECT, brownian: BrownianPath | None = None,
          key: Array | None = None, grid: ArrayLike | None = None) -> Solution:
    """Solve an ODE, SDE or CDE from ``y0 [B, D]`` at ``ts[0]`` and return it at ``ts [T]`` (see the module docstring).

    As :func:`sde.solvers.solve`: ``control`` given -> CDE (``system(t, z) -> [B, D, C]``, ``control``
    with ``derivative(t) -> [B, C]`` and its knots ``grid``, e.g. :class:`sde.jax.SeriesPath`);
    ``system`` with ``f`` and ``g`` -> SDE (``noise_type="diagonal"``; ``sde_type`` "ito" or
    "stratonovich"); else an ODE ``system(t, y)``. Defaults: ODE DOPRI5 adaptive, CDE RK4 fixed
    (DOPRI5 with ``adaptive=True``), SDE Euler (Itô) / midpoint (Stratonovich) fixed.
    ``grid``: the fixed ODE/CDE step grid (default :func:`step_grid` of ``ts``, ``step_size`` and
    the control's knots: needs concrete values). SDE noise: ``brownian`` (a :class:`BrownianPath`
    covering ``[ts[0], ts[-1]]``, whose grid is the step grid) or ``key`` (a path drawn on
    :func:`brownian_grid`). ``backprop``: DIRECT (``RecursiveCheckpointAdjoint``) or ADJOINT
    (``BacksolveAdjoint``, adaptive ODE/CDE solves only).
    """
    _check(y0, ts, rtol, atol, step_size, max_steps)
    if method is not None and not isinstance(method, Method):
        raise TypeError(f"method must be a Method, got {method!r}")
    adjoint = _adjoint(backprop)
    is_sde = hasattr(system, "f") and hasattr(system, "g")
    if control is not None and is_sde:
        raise ValueError("control is for CDEs (system(t, z) -> [B, D, C]); this system has f and g (an SDE)")
    if is_sde:
        return _solve_sde(system, y0, ts, method, step_size, adaptive, max_steps, adjoint, brownian, key)
    if brownian is not None or key is not None:
        kind = "CDE" if control is not None else "ODE"
        raise ValueError(f"brownian and key apply to SDEs only; this system is an {kind}")
    return _solve_ode(system, y0, ts, control, method, step_size, adaptive, rtol, atol, max_steps, adjoint, grid)


def _solve_ode(system: Any, y0: Array, ts: Array, control: Any, method: Method | None, step_size: float | None,
               adaptive: bool | None, rtol: float, atol: float, max_steps: int, adjoint: diffrax.AbstractAdjoint,
               grid: ArrayLike | None) -> Solution:
    kind = "CDE" if control is not None else "ODE"
    if method is None:
        method = Method.DOPRI5 if (adaptive if kind == "CDE" else adaptive is not False) else Method.RK4
    if method not in _ODE_FIXED and method not in _ODE_ADAPTIVE:
        raise ValueError(f"{method} is not an ODE method of the JAX face; an {kind} takes one of "
                         f"{[m.name for m in (*_ODE_FIXED, *_ODE_ADAPTIVE)]}")
    is_adaptive = method in _ODE_ADAPTIVE
    if adaptive is not None and adaptive != is_adaptive:
        raise ValueError(f"{method} is {'an adaptive' if is_adaptive else 'a fixed-step'} method")
    if control is not None and not (hasattr(control, "derivative") and hasattr(control, "grid")):
        raise ValueError("control must have derivative(t) and its knots grid (e.g. sde.jax.SeriesPath)")
    solver_cls, stages, fsal = (_ODE_ADAPTIVE if is_adaptive else _ODE_FIXED)[method]
    args = system if control is None else (system, control)
    t0, t1 = ts[0], ts[-1]
    saveat = _saveat(ts)
    if is_adaptive:
        controller: diffrax.AbstractStepSizeController = diffrax.PIDController(rtol=rtol, atol=atol)
        extra = 2 if step_size is None else 0  # diffrax's initial step rule evaluates the field twice
        if control is not None:  # dX/dt may jump at the knots: step to just before, restart just after
            knots = control.grid
            try:
                k = np.asarray(knots)
                knots = k[(k > float(ts[0])) & (k < float(ts[-1]))]
            except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
                pass  # traced: all knots (those at the ends are never crossed)
            if knots.shape[0]:
                controller = diffrax.ClipStepSizeController(controller, jump_ts=jnp.asarray(knots, ts.dtype))
                extra += knots.shape[0]  # a first-same-as-last stage re-evaluated after each jump
        term: diffrax.AbstractTerm = diffrax.ODETerm(_ode_field if control is None else _cde_field)
        sol = diffrax.diffeqsolve(term, solver_cls(), t0, t1, step_size, y0, args, saveat=saveat,
                                  stepsize_controller=controller, adjoint=adjoint, max_steps=max_steps)
        return Solution(ts, jnp.swapaxes(sol.ys, 0, 1), _stats(sol, stages, fsal, extra))
    if isinstance(adjoint, diffrax.BacksolveAdjoint):
        raise ValueError("Backprop.ADJOINT needs an adaptive method in the JAX face (diffrax's BacksolveAdjoint "
                         "cannot step a StepTo grid backwards); use Backprop.DIRECT for fixed steps")
    if grid is None:
        grid = step_grid(ts, step_size, None if control is None else control.grid)
    grid = jnp.asarray(grid, ts.dtype)
    if grid.shape[0] - 1 > max_steps:
        raise ValueError(f"the fixed grid has {grid.shape[0] - 1} steps, more than max_steps={max_steps}")
    term = diffrax.ODETerm(_ode_field) if control is None else _SidedControlledTerm()
    return _march(term, solver_cls(), grid, y0, ts, args, stages)


def _solve_sde(system: Any, y0: Array, ts: Array, method: Method | None, step_size: float | None,
               adaptive: bool | None, max_steps: int, adjoint: diffrax.AbstractAdjoint,
               bm: BrownianPath | None, key: Array | None) -> Solution:
    noise, sde_type = getattr(system, "noise_type", None), getattr(system, "sde_type", None)
    if noise != "diagonal" or sde_type not in _SDE:
        raise ValueError("the JAX face solves SDEs with noise_type='diagonal' and sde_type 'ito' or 'stratonovich'; "
                         f"got {noise!r}, {sde_type!r}")
    if adaptive:
        raise ValueError("the JAX face has fixed-step SDE solves only (adaptive=True: use sde.solvers.solve)")
    if method is None:
        method = Method.EULER if sde_type == "ito" else Method.MIDPOINT
    if method not in _SDE[sde_type]:
        raise ValueError(f"{method} does not solve an {sde_type} SDE in the JAX face; valid: "
                         f"{[m.name for m in _SDE[sde_type]]}")
    solver_cls, drift_evals = _SDE[sde_type][method]
    if isinstance(adjoint, diffrax.BacksolveAdjoint):
        raise ValueError("Backprop.ADJOINT is not offered for the JAX face's fixed-step SDE solves (diffrax's "
                         "BacksolveAdjoint cannot step a StepTo grid backwards); use Backprop.DIRECT")
    if (bm is None) == (key is None):
        raise ValueError("an SDE solve needs exactly one of brownian (a BrownianPath) or key")
    if bm is None:
        if step_size is None:
            raise ValueError("a fixed-step SDE solve drawn from key needs step_size")
        grid = brownian_grid(float(_concrete(ts[0], "ts")), float(_concrete(ts[-1], "ts")), step_size)
        bm = brownian(key, grid, tuple(y0.shape), y0.dtype)
    elif not isinstance(bm, BrownianPath):
        raise TypeError(f"brownian must be an sde.jax.BrownianPath, got {type(bm).__name__}")
    if bm.shape != tuple(y0.shape):
        raise ValueError(f"brownian has shape {bm.shape}, the diagonal-noise SDE needs {tuple(y0.shape)}")
    if bm.grid.shape[0] - 1 > max_steps:
        raise ValueError(f"{bm.grid.shape[0] - 1} fixed steps exceed max_steps={max_steps}")
    # torchsde steps t0 + k dt up to ts[-1]; so do we, on the path's own grid
    terms = diffrax.MultiTerm(diffrax.ODETerm(_sde_drift), diffrax.ControlTerm(_sde_diffusion, bm))
    return _march(terms, solver_cls(), bm.grid.astype(ts.dtype), y0, ts, system, drift_evals)


def _march(terms: Any, solver: diffrax.AbstractSolver, grid: Array, y0: Array, ts: Array, args: Any,
           stages: int) -> Solution:
    """A fixed-step solve: the diffrax solver's own ``step`` over ``grid`` in a ``lax.scan``.

    ``diffeqsolve`` runs a while loop with checkpointed reverse mode, built for an unknown number of
    steps; with the steps known, a scan compiled about twice as fast and ran 1.5-2x faster here
    (``benchmarks/solver_speed.py``), and stores every step for reverse mode as torch's direct
    backpropagation does. Outputs at ``ts`` are the step values at grid points and linear
    interpolations between them (torchdiffeq's and torchsde's rule).
    """
    try:
        t, g = np.asarray(ts), np.asarray(grid)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        pass  # traced: the caller built the grid for these times
    else:
        if t[0] < g[0] or t[-1] > g[-1]:
            raise ValueError(f"the step grid covers [{g[0]}, {g[-1]}], not the output times [{t[0]}, {t[-1]}]")
    state = solver.init(terms, grid[0], grid[1], y0, args)

    def step(carry: tuple[Array, Any], t01: Array) -> tuple[tuple[Array, Any], Array]:
        y, solver_state = carry
        y1, _, _, solver_state, _ = solver.step(terms, t01[0], t01[1], y, args, solver_state, False)
        y1 = y1.astype(y.dtype)  # a float64 clock must not promote a float32 state
        return (y1, solver_state), y1

    _, ys = jax.lax.scan(step, (y0, state), jnp.stack([grid[:-1], grid[1:]], 1))
    ys = jnp.concatenate([y0[None], ys])  # [N + 1, B, D]
    i = jnp.clip(jnp.searchsorted(grid, ts, side="left"), 1, grid.shape[0] - 1)
    w = ((ts - grid[i - 1]) / (grid[i] - grid[i - 1])).astype(y0.dtype)[:, None, None]
    out = jnp.where((grid[i] == ts)[:, None, None], ys[i], ys[i - 1] + w * (ys[i] - ys[i - 1]))
    n = jnp.asarray(grid.shape[0] - 1)
    return Solution(ts, jnp.swapaxes(out, 0, 1), SolverStats(stages * n, n, n, jnp.zeros_like(n)))
