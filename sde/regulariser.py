"""Pal et al. (2021)'s regularisers of a solver's internal heuristics, for adaptive Runge-Kutta ODE solves.

Pal, Ma, Shah, Rackauckas, "Opening the Blackbox: Accelerating Neural Differential Equations by
Regularizing Internal Solver Heuristics", ICML 2021, Sec. 3: the error-estimate regulariser
``R_E = sum_j E_j |h_j|`` over the accepted steps ``j`` (``E_j`` the solver's scaled local error
estimate, the quantity the step-size controller compares with 1; ``h_j`` the step), and the stiffness
regulariser ``R_S = sum_j S_j`` with ``S_j = ||f(g_s) - f(g_{s-1})|| / ||g_s - g_{s-1}||`` from the last
two stages of step ``j`` (for dopri5 both at ``t + h``: Hairer & Wanner's estimate of the dominant
eigenvalue). Both keep their autograd graph: add ``lambda * R_E`` to a loss to train a model that is
cheap to solve.

torchdiffeq computes these quantities inside its solvers and drops them, so :func:`odeint_regularised`
drives a torchdiffeq solver object itself (through torchdiffeq's private ``_check_inputs`` and solver
table: the one place this package depends on torchdiffeq's internals). :func:`sde.solvers.solve` calls
it for ``regularise=True``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchdiffeq._impl.misc import Perturb, _check_inputs
from torchdiffeq._impl.odeint import SOLVERS

__all__ = ["odeint_regularised"]


class _StageRecorder:
    """Wraps a torchdiffeq solver's ``func`` to keep each stage's input and output (with their graph)."""

    def __init__(self, func: Any, stages: list[tuple[Tensor, Tensor]]) -> None:
        self.func, self.stages = func, stages

    def __call__(self, t: Tensor, y: Tensor, *, perturb: Perturb = Perturb.NONE) -> Tensor:
        f = self.func(t, y, perturb=perturb)
        self.stages.append((y, f))
        return f

    def __getattr__(self, name: str) -> Any:  # the solver's callbacks live on the wrapped func
        return getattr(self.func, name)


_REGULARISED: dict[type, type] = {}


def _regularised(solver: type) -> type:
    """Subclass of a torchdiffeq RK solver that accumulates Pal et al.'s ``R_E`` and ``R_S`` per accepted step.

    torchdiffeq computes the error estimate inside ``_adaptive_step`` and drops it; the stages it is
    made of pass through ``func``, so we record them and rebuild ``err = h * sum_i c_err_i k_i`` (the
    tableau's own weights) after the step, keeping the graph.
    """
    if solver not in _REGULARISED:

        class Regularised(solver):  # type: ignore[misc, valid-type]
            def __init__(self, **kwargs: Any) -> None:
                super().__init__(**kwargs)
                self.stages: list[tuple[Tensor, Tensor]] = []
                self.func = _StageRecorder(self.func, self.stages)
                self.error_estimate = self.stiffness = torch.zeros((), dtype=self.y0.dtype, device=self.y0.device)

            def _adaptive_step(self, rk_state: Any) -> Any:
                self.stages.clear()
                new = super()._adaptive_step(rk_state)
                if new.t1 > rk_state.t1:  # accepted: the solver moved on (a rejection keeps t1)
                    stages = [(rk_state.y1, rk_state.f1)] + self.stages[: len(self.tableau.alpha)]
                    k = torch.stack([f for _, f in stages], dim=-1)
                    h = (new.t1 - rk_state.t1).to(k.dtype)
                    error = (k * (h * self.tableau.c_error)).sum(-1)
                    # the tolerance scale is a constant here: the penalty must not reward inflating the state
                    scale = (self.atol + self.rtol * torch.max(rk_state.y1.abs(), new.y1.abs())).detach()
                    ratio = (error / scale).pow(2).mean()
                    ratio = (ratio + torch.finfo(ratio.dtype).tiny).sqrt().to(k.dtype)
                    self.error_estimate = self.error_estimate + ratio * h.abs()
                    (g_a, f_a), (g_b, f_b) = stages[-2], stages[-1]
                    tiny = torch.finfo(k.dtype).tiny
                    self.stiffness = self.stiffness + (f_b - f_a).norm() / (g_b - g_a).norm().clamp_min(tiny)
                return new

        Regularised.__name__ = f"Regularised{solver.__name__}"
        _REGULARISED[solver] = Regularised
    return _REGULARISED[solver]


def odeint_regularised(func: Any, y0: Tensor, ts: Tensor, *, method: str, rtol: float, atol: float,
                       options: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
    """``torchdiffeq.odeint(func, y0, ts, ...)`` for an adaptive RK ``method`` (a torchdiffeq name, e.g.
    ``"dopri5"``), also returning Pal et al.'s ``R_E`` and ``R_S`` (scalars in the graph).

    Returns ``(ys [T, *y0.shape], R_E, R_S)``. The solver's step callbacks on ``func`` still run, so a
    counting wrapper sees the same steps as under ``torchdiffeq.odeint``.
    """
    _, func_, y0_, ts_, rtol_, atol_, _, options_, _, _ = _check_inputs(func, y0, ts, rtol, atol, method, options,
                                                                        None, SOLVERS)
    solver = _regularised(SOLVERS[method])(func=func_, y0=y0_, rtol=rtol_, atol=atol_, **options_)
    ys = solver.integrate(ts_)
    return ys, solver.error_estimate, solver.stiffness
