"""One face over torchdiffeq (ODEs), torchsde (SDEs) and torchcde-style CDEs: :func:`solve`.

```python
sol = solve(system, y0, ts)                                   # ODE: system(t, y) -> dy, dopri5 adaptive
sol = solve(sde, y0, ts, step_size=1e-2, seed=0)              # SDE: sde.f / sde.g (torchsde conventions), Euler
sol = solve(field, z0, ts, control=path, method=Method.RK4)   # CDE: field(t, z) -> [B, D, C], dz = field dX
sol.ys            # [B, T, D]  (batch first; the backends' [T, B, D] is transposed)
sol.stats         # SolverStats(nfe, steps, accepted, rejected): what the solve cost
sol.logqp         # [B] path KL of a latent SDE (logqp=True)
sol.regulariser   # scalar R_E in the autograd graph (regularise=True, Pal et al. 2021)
```

What kind of problem ``system`` is decides the backend: ``control`` given -> CDE; ``system`` has
``f`` and ``g`` -> SDE (torchsde: ``noise_type``, ``sde_type``, ``h`` for the prior drift with
``logqp``); otherwise an ODE ``system(t, y)``. Options are enums (:class:`Method`, :class:`Backprop`,
:class:`BrownianKind`); an invalid combination raises a ``ValueError`` naming the fix (a wrong
option type a ``TypeError``).

Stepping. Fixed-step ODE/CDE solves step on the grid ``{t0 + k * step_size} U ts`` (``ts`` alone when
``step_size`` is None), plus a CDE control's knots (``grid_points`` / ``grid``, where ``dX/dt`` may jump),
so outputs are RK values, not interpolations; adaptive CDE solves restart their stages at those knots
(torchdiffeq's ``jump_t``). Fixed-step SDE solves march ``t0 + k * step_size`` as torchsde does and
interpolate linearly to ``ts``. Adaptive solves take ``rtol``/``atol``; ``step_size`` is then the
first step. SDEs adapt by torchsde's step doubling, which needs a method of strong order >= 1 for
the system's noise (else ``ValueError``).

Stats. ``nfe`` counts calls of the vector field through a wrapper (ODE/CDE: every call, including the
two torchdiffeq makes to pick the first step; SDE: drift evaluations from the first Brownian query
on, so torchsde's one-off shape checks are not counted). ``steps`` counts attempted steps: for
torchdiffeq through its ``callback_step`` / ``callback_accept_step`` / ``callback_reject_step`` hooks
on the wrapped system; for torchsde through the Brownian queries (one per step; an adaptive attempt
queries three times, and it was accepted iff the next attempt starts where it ended). Fixed steps:
``accepted == steps``, ``rejected == 0``. Stats describe the forward solve (not an adjoint pass).

Brownian motion (:mod:`sde.brownian`). torchsde's default Brownian object without a ``dt`` hint is
10-25x slower, so :func:`solve` always builds one itself when ``brownian`` is None: fixed steps get a
:class:`PrecomputedBrownian` on the step grid (``.grid``, ``.values`` can be handed to the JAX twin),
adaptive steps a ``torchsde.BrownianInterval`` with the ``dt`` hint; both seeded by ``seed``.

Regulariser (:mod:`sde.regulariser`; ``regularise=True``, adaptive RK ODE/CDE, direct backprop): Pal et
al. (ICML 2021, Sec. 3)'s error-estimate regulariser ``R_E = sum_j E_j |h_j|`` over the accepted steps
-> ``Solution.regulariser``, and the stiffness regulariser ``R_S`` -> ``Solution.stiffness``. Both keep
their graph; add ``lambda * sol.regulariser`` to a loss.

Layout: this module holds the options, the solution and :func:`solve`; the Brownian paths and the
regulariser live in their own modules (the Brownian names are re-exported here).
"""

from __future__ import annotations

import contextlib
import enum
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torchdiffeq
import torchsde
from torch import Tensor, nn
from torchsde._brownian import BaseBrownian

# Brownian paths live in sde.brownian; re-exported so `from sde.solvers import brownian` keeps working.
from sde.brownian import BrownianKind, CountingBrownian, PrecomputedBrownian, brownian
from sde.regulariser import odeint_regularised

__all__ = ["Backprop", "BrownianKind", "Method", "PrecomputedBrownian", "Solution", "SolverStats", "brownian", "recording",
           "solve"]


class Method(enum.Enum):
    """Solver names (the backends' own, but ``HEUN`` is torchdiffeq's ``heun2`` for ODEs)."""

    EULER = "euler"  # fixed-step ODE / Ito SDE (strong order 0.5, 1 with additive noise)
    MIDPOINT = "midpoint"  # fixed-step ODE / Stratonovich SDE
    HEUN = "heun"  # fixed-step ODE (heun2) / Stratonovich SDE
    RK4 = "rk4"  # fixed-step ODE (3/8 rule, 4 stages)
    BOSH3 = "bosh3"  # adaptive ODE, order 3(2)
    DOPRI5 = "dopri5"  # adaptive ODE, order 5(4)
    DOPRI8 = "dopri8"  # adaptive ODE, order 8(7)
    ADAPTIVE_HEUN = "adaptive_heun"  # adaptive ODE, order 2(1)
    MILSTEIN = "milstein"  # SDE, Ito or Stratonovich, strong order 1 (not general noise)
    SRK = "srk"  # Ito SDE, Roessler's stochastic Runge-Kutta (not general noise)
    EULER_HEUN = "euler_heun"  # Stratonovich SDE
    REVERSIBLE_HEUN = "reversible_heun"  # Stratonovich SDE, algebraically reversible (exact adjoint)


class Backprop(enum.Enum):
    """How gradients flow: through the solver's operations, or by solving the adjoint equation backwards."""

    DIRECT = "direct"
    ADJOINT = "adjoint"


@dataclass
class SolverStats:
    """Cost of one forward solve (see the module docstring for how each number is counted)."""

    nfe: int
    steps: int
    accepted: int
    rejected: int


@dataclass
class Solution:
    """``ys [B, T, D]`` at ``ts [T]``; ``logqp [B]`` with ``logqp=True``; ``regulariser`` / ``stiffness``
    (scalars, in the graph: Pal et al. 2021's ``R_E`` / ``R_S``) with ``regularise=True``."""

    ts: Tensor
    ys: Tensor
    stats: SolverStats
    logqp: Tensor | None = None
    regulariser: Tensor | None = None
    stiffness: Tensor | None = None


_ODE_FIXED = {Method.EULER: "euler", Method.MIDPOINT: "midpoint", Method.HEUN: "heun2", Method.RK4: "rk4"}
_ODE_ADAPTIVE = {m: m.value for m in (Method.BOSH3, Method.DOPRI5, Method.DOPRI8, Method.ADAPTIVE_HEUN)}
_NOT_GENERAL = ("diagonal", "scalar", "additive")
_ALL_NOISE = ("diagonal", "scalar", "additive", "general")


def _sde_order(method: Method, sde_type: str, noise_type: str) -> float | None:
    """Strong order of ``method`` on this kind of SDE, or None where torchsde does not offer it."""
    if method is Method.EULER:
        return (1.0 if noise_type == "additive" else 0.5) if sde_type == "ito" else None
    if method is Method.MILSTEIN:
        return 1.0 if noise_type in _NOT_GENERAL else None
    if method is Method.SRK:
        return 1.0 if sde_type == "ito" and noise_type in _NOT_GENERAL else None
    if method in (Method.MIDPOINT, Method.HEUN, Method.EULER_HEUN):
        return (0.5 if noise_type == "general" else 1.0) if sde_type == "stratonovich" else None
    if method is Method.REVERSIBLE_HEUN:
        return (1.0 if noise_type == "additive" else 0.5) if sde_type == "stratonovich" else None
    return None


# --------------------------------------------------------------------------- counted vector fields
class _CountedODE(nn.Module):
    """``fn(t, y)`` with a call counter and torchdiffeq's step callback (fixed-step solvers)."""

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn  # registered as a submodule when it is one, so parameters() reaches it
        self.nfe = self.steps = self.accepted = self.rejected = 0

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        self.nfe += 1
        return self.fn(t, y)

    def callback_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.steps += 1

    def stats(self, adaptive: bool) -> SolverStats:
        if adaptive:
            return SolverStats(self.nfe, self.steps, self.accepted, self.rejected)
        return SolverStats(self.nfe, self.steps, self.steps, 0)


class _CountedAdaptiveODE(_CountedODE):
    """Adds the accept/reject callbacks that only torchdiffeq's adaptive solvers call."""

    def callback_accept_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.accepted += 1

    def callback_reject_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.rejected += 1


class _ControlledField(nn.Module):
    """The CDE ``dz = f(t, z) dX(t)`` as the ODE ``dz/dt = f(t, z) dX/dt`` (torchcde's reduction)."""

    def __init__(self, system: Callable[[Tensor, Tensor], Tensor], control: Any) -> None:
        super().__init__()
        self.system, self.control = system, control

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return (self.system(t, z) @ self.control.derivative(t).unsqueeze(-1)).squeeze(-1)


class _CountedSDE(nn.Module):
    """A torchsde system that counts drift evaluations; optional methods are exposed only if present."""

    def __init__(self, sde: Any) -> None:
        super().__init__()
        self.sde = sde
        self.noise_type, self.sde_type = sde.noise_type, sde.sde_type
        self.nfe, self.counting = 0, False
        for name, drift in (("h", False), ("f_and_g", True), ("g_prod", False), ("f_and_g_prod", True)):
            if hasattr(sde, name):
                setattr(self, name, self._counted(getattr(sde, name), drift))

    # torchsde's clock runs in float64 (see _solve_sde); the system sees t in y's dtype, as with torchdiffeq
    def _counted(self, fn: Callable[..., Any], drift: bool) -> Callable[..., Any]:
        def call(t: Tensor, y: Tensor, *rest: Any) -> Any:
            self.nfe += int(drift and self.counting)
            return fn(t.to(y.dtype), y, *rest)
        return call

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        self.nfe += int(self.counting)
        return self.sde.f(t.to(y.dtype), y)

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        return self.sde.g(t.to(y.dtype), y)


# --------------------------------------------------------------------------- helpers
def _knot_grid(knots: Tensor) -> Callable[[Any, Tensor, Tensor], Tensor]:
    """torchdiffeq ``grid_constructor``: step on ``t``'s points and the ``knots`` between its ends.

    The same global knots serve the adjoint pass (which asks for one reversed output interval at a
    time), so forward and backward passes step on the same grid.
    """
    span = float(knots[-1] - knots[0])

    def construct(func: Any, y0: Tensor, t: Tensor) -> Tensor:
        tol = max(1e-9, 64 * torch.finfo(t.dtype).eps) * span  # a rounding error, not a step
        ascending = bool(t[-1] > t[0])
        ends = t if ascending else t.flip(0)
        k = knots.to(device=t.device, dtype=t.dtype).unique()
        inner = k[(k > ends[0] + tol) & (k < ends[-1] - tol)]
        if inner.numel():
            inner = inner[torch.cat([inner.new_ones(1, dtype=torch.bool), inner.diff() > tol])]
            at = torch.searchsorted(ends, inner).clamp(1, ends.numel() - 1)
            gap = torch.minimum((inner - ends[at - 1]).abs(), (ends[at] - inner).abs())
            inner = inner[gap > tol]  # never step to a point a rounding error away from an output time
        grid = torch.cat([ends, inner]).sort().values
        return grid if ascending else grid.flip(0)

    return construct


def _tensors_needing_grad(*objects: Any) -> tuple[Tensor, ...]:
    """Parameters and tensors (e.g. a control path's coefficients) that require grad: the adjoint's parameters.

    A tensor computed from another one found here (torchcde's LinearInterpolation keeps ``coeffs`` and
    the ``derivs`` made from them) is left out: the adjoint's vector-Jacobian product with respect to
    the root already runs through it, and keeping both would count that path twice.
    """
    found: dict[int, Tensor] = {}
    for obj in objects:
        members: list[Any] = []
        if isinstance(obj, nn.Module):
            members += list(obj.parameters()) + list(obj.buffers())
        if hasattr(obj, "__dict__"):
            members += [v for v in vars(obj).values() if isinstance(v, (Tensor, nn.Module))]
        for m in members:
            for tensor in ([m] if isinstance(m, Tensor) else list(m.parameters()) + list(m.buffers())):
                if tensor.requires_grad:
                    found[id(tensor)] = tensor
    nodes = {id(t): (t.grad_fn if t.grad_fn is not None else t.view_as(t).grad_fn.next_functions[0][0]) for t in
             found.values()}
    own = {id(node) for node in nodes.values()}

    def derived(t: Tensor) -> bool:  # does t's graph reach another found tensor?
        stack, seen = [n for n, _ in t.grad_fn.next_functions if n is not None], set()
        while stack:
            node = stack.pop()
            if id(node) in own:
                return True
            if id(node) not in seen:
                seen.add(id(node))
                stack += [n for n, _ in node.next_functions if n is not None]
        return False

    return tuple(t for t in found.values() if t.grad_fn is None or not derived(t))


def _control_knots(control: Any) -> Tensor | None:
    """A control's knot times: torchcde's ``grid_points`` or ``sde.paths.ControlPath.grid``; None if neither."""
    for name in ("grid_points", "grid"):
        knots = getattr(control, name, None)
        if isinstance(knots, Tensor) and knots.ndim == 1:
            return knots
    return None


def _require_module(system: Any, what: str) -> None:
    if not isinstance(system, nn.Module):
        raise TypeError(f"Backprop.ADJOINT needs the {what} to be a torch.nn.Module: its parameters are the "
                         "adjoint's parameters (wrap the function in a Module, or use Backprop.DIRECT)")


def _check_common(y0: Tensor, ts: Tensor, rtol: float, atol: float, step_size: float | None, max_steps: int) -> None:
    if not isinstance(y0, Tensor) or y0.ndim != 2 or not y0.is_floating_point():
        raise ValueError(f"y0 must be a floating tensor [B, D], got "
                         f"{tuple(y0.shape) if isinstance(y0, Tensor) else type(y0).__name__}"
                         f"{'' if not isinstance(y0, Tensor) else ' ' + str(y0.dtype)}")
    if not bool(torch.isfinite(y0).all()):
        raise ValueError("y0 has non-finite values")
    if not isinstance(ts, Tensor) or ts.ndim != 1 or ts.numel() < 2 or not ts.is_floating_point():
        raise ValueError(f"ts must be a floating 1-D tensor of at least 2 output times, got "
                         f"{tuple(ts.shape) if isinstance(ts, Tensor) else type(ts).__name__}")
    if not bool(torch.isfinite(ts).all()):
        raise ValueError("ts has non-finite values")
    bad = (ts[1:] <= ts[:-1]).nonzero()
    if bad.numel():
        i = int(bad[0, 0])
        raise ValueError(f"ts must be strictly increasing: ts[{i}]={float(ts[i])} >= ts[{i + 1}]={float(ts[i + 1])}")
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be positive, got rtol={rtol}, atol={atol}")
    if step_size is not None and not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    if not (isinstance(max_steps, int) and max_steps > 0):
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")


def _check_output(name: str, out: Any, expected: tuple[int, ...], hint: str) -> None:
    if not isinstance(out, Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{name} must return {hint} = {expected}, got {got}")


def _batch_first(ys: Tensor) -> Tensor:
    return ys.transpose(0, 1).contiguous()


# --------------------------------------------------------------------------- the solve
_RECORDS: list[list[SolverStats]] = []
"""The open :func:`recording` blocks; every solve appends its stats to each."""


@contextlib.contextmanager
def recording() -> Iterator[list[SolverStats]]:
    """Collect the :class:`SolverStats` of every :func:`solve` run inside the block (nested blocks each see
    every solve), e.g. to report what a model's evaluation cost: ``with recording() as stats: model.predict(x)``."""
    record: list[SolverStats] = []
    _RECORDS.append(record)
    try:
        yield record
    finally:
        _RECORDS.remove(record)


def _recorded(solution: Solution) -> Solution:
    for record in _RECORDS:
        record.append(solution.stats)
    return solution


def solve(system: Any, y0: Tensor, ts: Tensor, *, control: Any = None, method: Method | None = None,
          step_size: float | None = None, adaptive: bool | None = None, rtol: float = 1e-3, atol: float = 1e-6,
          max_steps: int = 10_000, backprop: Backprop = Backprop.DIRECT, brownian: BaseBrownian | None = None,
          seed: int | None = None, logqp: bool = False, regularise: bool = False) -> Solution:
    """Solve an ODE, SDE or CDE from ``y0 [B, D]`` at ``ts[0]`` and return it at the output times ``ts [T]``.

    ``method``: a :class:`Method` valid for the kind of system (defaults: ODE dopri5 adaptive, SDE
    Euler (Ito) / midpoint (Stratonovich) fixed step, CDE rk4 fixed step or dopri5 with
    ``adaptive=True``). ``step_size``: the fixed step (required for fixed-step SDEs), or the first
    step of an adaptive solve. ``adaptive``: None follows the method. ``rtol``/``atol``: adaptive
    tolerances. ``max_steps``: bound on steps (per output interval for adaptive ODEs, as torchdiffeq;
    in all for SDEs and fixed grids). ``backprop``: DIRECT (through the solver) or ADJOINT
    (torchdiffeq.odeint_adjoint / torchsde.sdeint_adjoint; the system must be an ``nn.Module``).
    ``brownian`` / ``seed``: the SDE's driving noise (see :func:`brownian`), shape ``(B, m)``; built from
    ``seed`` if None (``m = D + 1`` with ``logqp`` and diagonal noise: torchsde's KL is one more channel).
    ``logqp``: latent-SDE path KL of drift ``f`` against prior drift ``h``,
    ``int 0.5 |(f - h) / g|^2 dt`` over ``[ts[0], ts[-1]]`` -> ``Solution.logqp [B]``.
    ``regularise``: Pal et al. (2021) ``R_E`` and ``R_S`` -> ``Solution.regulariser``, ``.stiffness``.
    """
    _check_common(y0, ts, rtol, atol, step_size, max_steps)
    if method is not None and not isinstance(method, Method):
        raise TypeError(f"method must be a Method, got {method!r}")
    if not isinstance(backprop, Backprop):
        raise TypeError(f"backprop must be a Backprop, got {backprop!r}")
    ts_out = ts
    ts = ts.to(device=y0.device)
    is_sde = hasattr(system, "f") and hasattr(system, "g")
    if control is not None and is_sde:
        raise ValueError("control is for CDEs (system(t, z) -> [B, D, C]); this system has f and g (an SDE)")
    if not is_sde:
        if logqp:
            raise ValueError("logqp applies to SDEs only (a system with f, g and the prior drift h)")
        if brownian is not None or seed is not None:
            raise ValueError("brownian and seed apply to SDEs only; this system is an "
                             f"{'CDE' if control is not None else 'ODE'}")
        return _solve_ode(system, y0, ts, ts_out, control, method, step_size, adaptive, rtol, atol, max_steps,
                          backprop, regularise)
    if regularise:
        raise ValueError("regularise needs an adaptive Runge-Kutta ODE/CDE solve (its error estimates); "
                         "SDEs are not supported")
    return _solve_sde(system, y0, ts, ts_out, method, step_size, adaptive, rtol, atol, max_steps, backprop,
                      brownian, seed, logqp)


def _solve_ode(system: Any, y0: Tensor, ts: Tensor, ts_out: Tensor, control: Any, method: Method | None,
               step_size: float | None, adaptive: bool | None, rtol: float, atol: float, max_steps: int,
               backprop: Backprop, regularise: bool) -> Solution:
    kind = "CDE" if control is not None else "ODE"
    if method is None:
        method = Method.DOPRI5 if (adaptive if kind == "CDE" else adaptive is not False) else Method.RK4
    if method not in _ODE_FIXED and method not in _ODE_ADAPTIVE:
        raise ValueError(f"{method} is an SDE method; an {kind} takes one of "
                         f"{[m.name for m in (*_ODE_FIXED, *_ODE_ADAPTIVE)]}")
    is_adaptive = method in _ODE_ADAPTIVE
    if adaptive is not None and adaptive != is_adaptive:
        fix = ("it has no fixed-step mode; use RK4/MIDPOINT/HEUN/EULER" if is_adaptive else
               "it has no error estimate; use DOPRI5/BOSH3/DOPRI8/ADAPTIVE_HEUN")
        raise ValueError(f"{method} is {'an adaptive' if is_adaptive else 'a fixed-step'} method: {fix}")
    if regularise and not is_adaptive:
        raise ValueError(f"regularise needs an adaptive method's local error estimates; {method} has none "
                         "(use DOPRI5, BOSH3, DOPRI8 or ADAPTIVE_HEUN)")
    if regularise and backprop is Backprop.ADJOINT:
        raise ValueError("regularise needs Backprop.DIRECT: the adjoint's forward pass keeps no graph of the "
                         "error estimates (Pal et al. differentiate through the solver)")

    batch, dim = y0.shape
    t0 = ts[0].to(y0.dtype)
    with torch.no_grad():  # validate shapes once, outside the counts
        if control is not None:
            if not hasattr(control, "derivative"):
                raise ValueError("control must have a derivative(t) method (a torchcde interpolation or ControlPath)")
            dx = control.derivative(t0)
            if not isinstance(dx, Tensor) or dx.ndim != 2 or dx.shape[0] != batch:
                raise ValueError(f"control.derivative(t) must return [B, C] with B = {batch}, got "
                                 f"{tuple(dx.shape) if isinstance(dx, Tensor) else type(dx).__name__}")
            _check_output("a CDE system(t, z)", system(t0, y0), (batch, dim, dx.shape[1]), "[B, D, C]")
        else:
            _check_output("an ODE system(t, y)", system(t0, y0), (batch, dim), "[B, D] (the shape of y0)")

    fn = _ControlledField(system, control) if control is not None else system
    counted = (_CountedAdaptiveODE if is_adaptive else _CountedODE)(fn)
    if is_adaptive:
        name = _ODE_ADAPTIVE[method]
        options: dict[str, Any] = {"max_num_steps": max_steps}
        if step_size is not None:
            options["first_step"] = step_size
        grid_points = _control_knots(control)
        if grid_points is not None:  # a CDE's dX/dt may jump at the knots: restart the stages there
            grid_points = grid_points.to(device=ts.device, dtype=torch.float64)
            options["jump_t"] = grid_points[(grid_points > ts[0]) & (grid_points < ts[-1])]
    else:
        name = _ODE_FIXED[method]
        t64 = ts.to(torch.float64)
        knots = t64
        if step_size is not None:
            n = max(1, math.ceil(float(t64[-1] - t64[0]) / step_size - 1e-3))
            knots = torch.cat([t64[0] + step_size * torch.arange(n, dtype=torch.float64, device=ts.device), knots])
        grid_points = _control_knots(control)
        if grid_points is not None:  # a CDE's dX/dt may jump at the control's knots: step onto them
            grid_points = grid_points.to(t64)
            knots = torch.cat([knots, grid_points[(grid_points > t64[0]) & (grid_points < t64[-1])]])
        knots = knots.unique()  # sorted
        if knots.numel() - 1 > max_steps:
            raise ValueError(f"the fixed grid has {knots.numel() - 1} steps, more than max_steps={max_steps}")
        # perturb: evaluate a stage at a step's end just before it (left limit of a piecewise control)
        options = {"grid_constructor": _knot_grid(knots), "perturb": control is not None}

    regulariser = stiffness = None
    try:
        if backprop is Backprop.ADJOINT:
            _require_module(system, f"{kind} system")
            params = _tensors_needing_grad(system, control) if control is not None else _tensors_needing_grad(system)
            ys = torchdiffeq.odeint_adjoint(counted, y0, ts, rtol=rtol, atol=atol, method=name, options=options,
                                            adjoint_params=params)
        elif regularise:
            ys, regulariser, stiffness = odeint_regularised(counted, y0, ts, method=name, rtol=rtol, atol=atol,
                                                            options=options)
        else:
            ys = torchdiffeq.odeint(counted, y0, ts, rtol=rtol, atol=atol, method=name, options=options)
    except AssertionError as error:  # torchdiffeq signals exhaustion and underflow by assert
        if "max_num_steps" in str(error):
            raise RuntimeError(f"{kind} solve exceeded max_steps={max_steps} within one output interval "
                               "(loosen rtol/atol or raise max_steps)") from error
        raise RuntimeError(f"{kind} solve failed: {error}") from error
    return _recorded(Solution(ts_out, _batch_first(ys), counted.stats(is_adaptive), regulariser=regulariser,
                              stiffness=stiffness))


def _solve_sde(system: Any, y0: Tensor, ts: Tensor, ts_out: Tensor, method: Method | None, step_size: float | None,
               adaptive: bool | None, rtol: float, atol: float, max_steps: int, backprop: Backprop,
               bm: BaseBrownian | None, seed: int | None, logqp: bool) -> Solution:
    noise, sde_type = getattr(system, "noise_type", None), getattr(system, "sde_type", None)
    if noise not in _ALL_NOISE or sde_type not in ("ito", "stratonovich"):
        raise ValueError("an SDE system needs torchsde's attributes noise_type in "
                         f"{_ALL_NOISE} and sde_type in ('ito', 'stratonovich'); got {noise!r}, {sde_type!r}")
    adaptive = bool(adaptive)
    if method is None:
        if adaptive:
            if noise == "general":
                raise ValueError("no default adaptive method for general noise: pass method= explicitly")
            method = Method.MILSTEIN
        else:
            method = Method.EULER if sde_type == "ito" else Method.MIDPOINT
    order = _sde_order(method, sde_type, noise)
    if order is None:
        valid = [m.name for m in Method if _sde_order(m, sde_type, noise) is not None]
        raise ValueError(f"{method} does not solve an {sde_type} SDE with {noise} noise; valid: {valid}")
    if adaptive and order < 1.0:
        raise ValueError(f"adaptive SDE steps estimate the error by step doubling, which needs strong order >= 1; "
                         f"{method} has strong order {order} for {noise} noise (use MILSTEIN or SRK, or fixed steps)")
    if logqp and not hasattr(system, "h"):
        raise ValueError("logqp=True needs the SDE's prior drift h(t, y) (torchsde convention)")
    if bm is not None and seed is not None:
        raise ValueError("pass either brownian or seed, not both (the Brownian object carries its own seed)")

    t0, t1 = float(ts[0]), float(ts[-1])
    if step_size is None:
        if not adaptive:
            raise ValueError("a fixed-step SDE solve needs step_size (torchsde steps t0 + k * step_size)")
        step_size = (t1 - t0) / 100  # only the first step of an adaptive solve
    if not adaptive and math.ceil((t1 - t0) / step_size - 1e-3) > max_steps:
        raise ValueError(f"{(t1 - t0) / step_size:.0f} fixed steps exceed max_steps={max_steps}")

    batch, dim = y0.shape
    with torch.no_grad():  # validate shapes once, outside the counts; the diffusion gives the noise size
        start = ts[0].to(y0.dtype)
        _check_output("the SDE drift f(t, y)", system.f(start, y0), (batch, dim), "[B, D] (the shape of y0)")
        g = system.g(start, y0)
        if noise == "diagonal":
            _check_output("the diagonal-noise diffusion g(t, y)", g, (batch, dim), "[B, D]")
            m = dim + int(logqp)  # torchsde's KL channel is one more diagonal-noise channel
        else:
            if not isinstance(g, Tensor) or g.ndim != 3 or g.shape[:2] != (batch, dim):
                raise ValueError(f"the {noise}-noise diffusion g(t, y) must return [B, D, m] with B, D = {batch}, "
                                 f"{dim}, got {tuple(g.shape) if isinstance(g, Tensor) else type(g).__name__}")
            m = g.shape[2]
            if noise == "scalar" and m != 1:
                raise ValueError(f"scalar noise needs g(t, y) of shape [B, D, 1], got m = {m}")
    levy = method is Method.SRK
    if bm is None:
        kind = BrownianKind.INTERVAL if adaptive else BrownianKind.PATH
        bm = brownian(t0, t1, (batch, m), dt=step_size, kind=kind, seed=seed, dtype=y0.dtype, device=y0.device,
                      levy_area=levy)
    else:
        if not isinstance(bm, BaseBrownian):
            raise TypeError(f"brownian must be a torchsde Brownian object (see sde.brownian.brownian), got {type(bm)}")
        if tuple(bm.shape) != (batch, m):
            raise ValueError(f"brownian has shape {tuple(bm.shape)}, the SDE needs (B, m) = {(batch, m)}")
        if levy and bm.levy_area_approximation == "none":
            raise ValueError("SRK needs a Brownian object with space-time Levy area (brownian(..., levy_area=True))")
        if isinstance(bm, PrecomputedBrownian) and not bm.covers(t0, t1):
            raise ValueError(f"the Brownian path covers [{float(bm.grid[0])}, {float(bm.grid[-1])}], "
                             f"not the solve's [{t0}, {t1}]")

    counted = _CountedSDE(system)
    per_step = 3 if adaptive else 1  # step doubling: one full step and two half steps per attempt
    counting_bm = CountingBrownian(bm, counted, per_step * max_steps)
    kwargs = {"bm": counting_bm, "method": method.value, "dt": step_size, "adaptive": adaptive, "rtol": rtol,
              "atol": atol, "logqp": logqp}
    ts64 = ts.to(torch.float64)  # torchsde's clock accumulates ts[0] + k * dt; keep it in float64
    if backprop is Backprop.ADJOINT:
        _require_module(system, "SDE system")
        out = torchsde.sdeint_adjoint(counted, y0, ts64, adjoint_params=_tensors_needing_grad(system), **kwargs)
    else:
        out = torchsde.sdeint(counted, y0, ts64, **kwargs)
    counting_bm.recording, counted.counting = False, False  # an adjoint pass later is not this solve's cost
    ys, kl = (out if logqp else (out, None))

    queries = counting_bm.queries
    if adaptive:
        starts = [q[0] for q in queries[::3]]
        # a rejected attempt is retried from the same start; the last attempt reached ts[-1], so was accepted
        accepted = sum(1 for j in range(len(starts) - 1) if starts[j + 1] != starts[j]) + 1
        steps = len(starts)
        stats = SolverStats(counted.nfe, steps, accepted, steps - accepted)
    else:
        stats = SolverStats(counted.nfe, len(queries), len(queries), 0)
    return _recorded(Solution(ts_out, _batch_first(ys), stats, logqp=None if kl is None else kl.sum(0)))
