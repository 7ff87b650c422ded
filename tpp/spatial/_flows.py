"""Numerics of the neural spatio-temporal models: continuous normalizing flows and the hidden-state ODE.

One solver for both: :func:`torchdiffeq.odeint` (or :func:`torchdiffeq.odeint_adjoint` with
``adjoint=True``). ``tpp`` never imports ``sde`` (ARCHITECTURE.md), so :func:`sde.solvers.solve` is not
used; the torchdiffeq call here is the same backend it wraps.

Every solve is *batched over rows with their own time intervals*: row ``n`` goes from ``t0[n]`` to
``t1[n]`` (``t1 < t0`` allowed: backwards). As in Chen, Amos & Nickel's ``TimeVariableCNF``, a dummy
variable ``s in [0, 1]`` is integrated instead, ``t = t0 + s (t1 - t0)`` and ``dx/ds = (t1 - t0) f(t, x)``,
so one adaptive solve serves rows with different intervals; a row with ``t0 == t1`` does not move.

CNF log-density (Chen et al. 2018): along ``dx/dt = f(x, t)``, ``d log p(x(t), t) / dt = -tr(df/dx)``, so

``log p_{t0}(x) = log p_{t1}(z) + int_0^1 tr(d(dx/ds)/dx) ds``,  ``z = x(t1)``

(:func:`solve_flow` returns ``z`` and that integral, ``delta``). The trace is exact (``Trace.EXACT``: one
autograd pass per dimension, ``D`` passes; 2 for longitude/latitude) or Hutchinson's estimate
``e^T (df/dx) e`` with one noise vector per solve (``Trace.RADEMACHER`` or ``Trace.GAUSSIAN``; unbiased,
one vector-Jacobian product). Training uses the estimate, evaluation the exact trace.

A drift whose rows interact (attention over the other events: ``drift.cross_rows = True``) supplies
``drift(t, x, cond, self_only=True)``: the same values with the gradient paths to *other* rows' ``x`` cut, so
the trace is the sum of the per-row diagonal blocks (the joint map is triangular, its log-determinant the sum
of the blocks': each row's conditional density).
"""

from __future__ import annotations

import enum
import math
import warnings
from collections.abc import Sequence

import torch
import torchdiffeq
from torch import Tensor, nn

__all__ = ["ConcatMLP", "FlowODE", "HiddenODE", "Trace", "gaussian_log_density", "input_tangent", "solve_flow",
           "solve_hidden", "tangent_trace"]


class Trace(str, enum.Enum):
    """How ``tr(df/dx)`` is computed inside a CNF solve."""

    EXACT = "exact"  #: D autograd passes (evaluation; and tests)
    RADEMACHER = "rademacher"  #: Hutchinson's estimator with +-1 noise (training default)
    GAUSSIAN = "gaussian"  #: Hutchinson's estimator with standard normal noise


def gaussian_log_density(z: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """``[...]`` log N(z; mean, diag(exp(2 log_std))) summed over the last dimension."""
    u = (z - mean) * torch.exp(-log_std)
    return (-0.5 * u * u - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


class ConcatLinear(nn.Module):
    """``W x + b + t w``: a linear layer that also sees the flow time (Grathwohl et al.'s ``ConcatLinear_v2``)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.time = nn.Linear(1, d_out, bias=False)
        nn.init.zeros_(self.time.weight)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        return self.linear(x) + self.time(t.reshape(-1, 1).to(x.dtype))


class ConcatMLP(nn.Module):
    """``f(t, [x, cond]) -> [N, out]``: time-conditioned MLP (SiLU); the last layer starts at zero so a new flow
    is the identity (the base density), as in the reference code's ``zero_init``."""

    def __init__(self, d_in: int, hidden: Sequence[int], d_out: int, zero_init: bool = True) -> None:
        super().__init__()
        dims = [d_in, *hidden, d_out]
        self.layers = nn.ModuleList(ConcatLinear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        if zero_init:
            nn.init.zeros_(self.layers[-1].linear.weight)
            nn.init.zeros_(self.layers[-1].linear.bias)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = nn.functional.silu(layer(t, x))
        return self.layers[-1](t, x)

    def forward_tangent(self, t: Tensor, x: Tensor, tangent: Tensor) -> tuple[Tensor, Tensor]:
        """``(f(t, x) [N, out], J v [N, P, out])``: the output and its derivatives along ``P`` input directions.

        ``tangent`` is ``[N, P, d_in]``, or ``[P, d_in]`` shared by all rows (the basis vectors of an exact
        trace), and ``J v`` the Jacobian applied to each (forward-mode differentiation by hand: one extra
        ``[N P, width]`` matmul per layer). Why by hand: the autograd route (:func:`torch.autograd.grad` per
        evaluation, ``create_graph`` in training) costs a backward pass per evaluation and a second-order
        backward in training; this costs ``P`` forward passes and a first-order backward."""
        for layer in self.layers[:-1]:
            a = layer(t, x)
            sig = torch.sigmoid(a)
            x = a * sig  # SiLU
            slope = sig + x * (1 - sig)  # SiLU' = sig (1 + a (1 - sig))
            tangent = _matmul(tangent, layer.linear.weight) * slope[:, None, :]
        last = self.layers[-1]
        out = last(t, x)
        tangent = _matmul(tangent, last.linear.weight)
        if tangent.dim() == 2:  # a single linear layer with a shared tangent
            tangent = tangent.expand(x.shape[0], *tangent.shape)
        return out, tangent


def _matmul(tangent: Tensor, weight: Tensor) -> Tensor:
    """``tangent @ weight.T`` as one 2-D matrix product (a 3-D operand goes through a slower batched path)."""
    if tangent.dim() == 2:
        return tangent @ weight.T
    N, P, _ = tangent.shape
    return (tangent.reshape(N * P, -1) @ weight.T).reshape(N, P, -1)


def input_tangent(dim: int, d_in: int, noise: Tensor | None, like: Tensor) -> Tensor:
    """The tangent directions of a drift's input ``[x (dim), cond (d_in - dim)]``: the ``dim`` basis vectors of
    ``x`` (``[dim, d_in]``, shared by all rows: the exact trace), or one noise vector per row (``[N, 1, d_in]``:
    Hutchinson's estimate ``e^T J e``); ``cond`` has a zero tangent (the trace is over ``x`` only)."""
    if noise is None:
        return torch.eye(dim, d_in, dtype=like.dtype, device=like.device)
    pad = noise.new_zeros(noise.shape[0], d_in - dim)
    return torch.cat([noise, pad], -1)[:, None, :]


def tangent_trace(jv: Tensor, noise: Tensor | None) -> Tensor:
    """``[N]`` ``tr(J)`` from the Jacobian applied to the basis (``jv [N, D, D]``), or ``e^T J e`` from ``jv [N, 1,
    D]`` and the noise ``e [N, D]``."""
    if noise is None:
        return torch.diagonal(jv, dim1=1, dim2=2).sum(-1)
    return (jv[:, 0, :] * noise).sum(-1)


class FlowODE(nn.Module):
    """The CNF system of ONE solve on the state ``(x [N, D], delta [N])`` (and ``cond [N, C]`` with
    ``adjoint=True``) in the dummy variable ``s``.

    ``drift(t [N], x [N, D], cond [N, C]) -> [N, D]``. With the adjoint method ``cond`` (hidden states, time
    embeddings) rides in the state with a zero derivative so that :func:`torchdiffeq.odeint_adjoint` returns its
    gradient too; otherwise it is held here (a smaller state: the solver's per-step arithmetic and error norm
    skip it). The per-solve settings (``t0``, ``t1``, trace mode, noise, the drift's ``context``) live in this
    object, made afresh by :func:`solve_flow` for every solve: an adjoint backward pass, run after later solves,
    still sees its own solve's settings.

    The trace: a drift with ``forward_with_trace(t, x, cond, noise)`` (the project's MLP and attentive drifts:
    forward-mode derivatives by hand, :meth:`ConcatMLP.forward_tangent`) returns it with its value, with no
    autograd call (``jacobian="forward"``, the default); otherwise, or with ``jacobian="autograd"``, it comes from
    :func:`torch.autograd.grad` (``D`` passes for the exact trace, one vector-Jacobian product for Hutchinson's).
    Both give the same numbers to rounding (tests/tpp/test_spatial_cnf.py).
    """

    def __init__(self, drift: nn.Module, t0: Tensor, t1: Tensor, trace: Trace | None, noise: Tensor | None,
                 create_graph: bool, context: tuple | None = None, cond: Tensor | None = None,
                 jacobian: str = "forward", penalise: bool = False) -> None:
        super().__init__()
        self.drift = drift
        self.t0, self.t1, self.trace, self.noise = t0, t1, trace, noise
        self.create_graph, self.context = create_graph, context
        self.cond = cond  # None: cond is the state's third part (adjoint)
        self.forward_mode = jacobian == "forward" and hasattr(drift, "forward_with_trace")
        # penalise: two more state columns, the running kinetic energy ||dx/ds||^2 and Jacobian norm ||J e||^2
        # (solve_flow's `penalty`); needs the packed state and the forward-mode Hutchinson pass.
        self.penalise = penalise
        self.nfe = 0

    def forward(self, s: Tensor, state: Tensor | tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
        self.nfe += 1
        if self.cond is None:
            x, _, cond = state
        else:
            # one packed tensor [x, delta (, energy, jacobian norm)]: no tuple bookkeeping per step
            x, cond = state[:, :-3] if self.penalise else state[:, :-1], self.cond
        if self.context is not None:
            self.drift.configure(*self.context)
        ratio = self.t1 - self.t0
        t = self.t0 + s * ratio
        if self.penalise:
            dx, div, jv = self.drift.forward_with_trace(t, x, cond, self.noise, return_jv=True)
            dx, div, jv = dx * ratio[:, None], div * ratio, jv[:, 0, :] * ratio[:, None]
            return torch.cat([dx, div[:, None], (dx * dx).sum(-1, keepdim=True), (jv * jv).sum(-1, keepdim=True)],
                             -1)
        if self.trace is None or self.forward_mode:
            if self.trace is None:
                dx, div = self.drift(t, x, cond), torch.zeros_like(ratio)
            else:
                noise = None if self.trace is Trace.EXACT else self.noise
                dx, div = self.drift.forward_with_trace(t, x, cond, noise)
            dx, div = dx * ratio[:, None], div * ratio
        else:
            dx, div = self._autograd(t, x, cond, ratio)
        if self.cond is None:
            return dx, div, torch.zeros_like(cond)
        return torch.cat([dx, div[:, None]], -1)

    def _autograd(self, t: Tensor, x: Tensor, cond: Tensor, ratio: Tensor) -> tuple[Tensor, Tensor]:
        outer = torch.is_grad_enabled()
        graph = self.create_graph and outer
        with torch.enable_grad():
            # A fresh leaf where no outer graph needs x (evaluation, and the no-grad forward solve of an adjoint
            # run, whose views of the state would not connect to the drift's graph).
            if not (outer and x.requires_grad):
                x = x.detach().requires_grad_(True)
            dx = self.drift(t, x, cond) * ratio[:, None]
            if getattr(self.drift, "cross_rows", False):
                dx_div = self.drift(t, x, cond, self_only=True) * ratio[:, None]
            else:
                dx_div = dx
            div = self._divergence(dx_div, x, graph)
        if not graph:
            dx, div = dx.detach(), div.detach()
        return dx, div

    def _divergence(self, dx: Tensor, x: Tensor, graph: bool) -> Tensor:
        if self.trace is Trace.EXACT:
            div = torch.zeros_like(dx[:, 0])
            for d in range(dx.shape[1]):
                grad = torch.autograd.grad(dx[:, d].sum(), x, create_graph=graph, retain_graph=True)[0]
                div = div + grad[:, d]
            return div
        e = self.noise
        vjp = torch.autograd.grad(dx, x, e, create_graph=graph, retain_graph=True)[0]
        return (vjp * e).sum(-1)


def _noise(like: Tensor, trace: Trace | None, generator: torch.Generator | None) -> Tensor | None:
    if trace is Trace.RADEMACHER:
        bits = torch.randint(0, 2, like.shape, generator=generator, device=like.device)
        return (2 * bits - 1).to(like.dtype)
    if trace is Trace.GAUSSIAN:
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
    return None


def _odeint(func: nn.Module, state: tuple[Tensor, ...], ts: Tensor, *, rtol: float, atol: float, method: str,
            adjoint: bool, options: dict | None) -> tuple[Tensor, ...]:
    """torchdiffeq's solve, except that a solve whose state leaves the floating-point range (a learned map that
    diverges: a float32 Jump CNF's particle passed 1e15 through its jumps after some minutes of training on
    earthquakes_japan) returns NaN for the whole solve, with a warning, instead of torchdiffeq's assertion deep in
    its stepper: the trainer's non-finite policy then raises with the batch's sequences named, or skips the
    update (``on_nonfinite="skip"``), and a score shows NaN."""
    try:
        if adjoint:
            params = tuple(p for p in func.parameters() if p.requires_grad)
            return torchdiffeq.odeint_adjoint(func, state, ts, rtol=rtol, atol=atol, method=method, options=options,
                                              adjoint_params=params)
        return torchdiffeq.odeint(func, state, ts, rtol=rtol, atol=atol, method=method, options=options)
    except AssertionError as exc:
        if "non-finite values" not in str(exc) and "underflow in dt" not in str(exc):
            raise
        # one message, so that the warning filters show it once however many solves follow a diverged one
        warnings.warn("a flow solve diverged (its state left the floating-point range): its results are NaN",
                      RuntimeWarning, stacklevel=3)

        def diverged(s: Tensor) -> Tensor:  # NaN, still on the graph, at every requested time
            return (s * float("nan"))[None].expand(len(ts), *s.shape)

        return tuple(diverged(s) for s in state) if isinstance(state, tuple) else diverged(state)


def solve_flow(drift: nn.Module, x: Tensor, t0: Tensor, t1: Tensor, cond: Tensor, *, trace: Trace | None,
               rtol: float, atol: float, method: str = "dopri5", adjoint: bool = False,
               generator: torch.Generator | None = None, options: dict | None = None,
               context: tuple | None = None, jacobian: str = "forward", penalty: list | None = None
               ) -> tuple[Tensor, Tensor]:
    """Flow ``x [N, D]`` from times ``t0 [N]`` to ``t1 [N]`` along ``drift``; returns ``(z [N, D], delta [N])`` with
    ``log p_{t0}(x) = log p_{t1}(z) + delta`` (module docstring). ``trace=None`` skips the log-density (sampling:
    the flow run from the base density). ``rtol``/``atol``: the adaptive solver's tolerances (stated by the
    caller); ``method`` any torchdiffeq method, ``options`` its options (e.g. ``{"step_size": ...}``);
    ``context``: arguments of ``drift.configure`` (an attentive drift's row layout), set before every evaluation;
    ``jacobian``: ``"forward"`` (the drift's own forward-mode trace where it has one) or ``"autograd"``
    (:class:`FlowODE`).

    ``penalty``: a list to which a Hutchinson-trace solve appends its RNODE regulariser (Finlay et al. 2020, eq.
    8; the reference code's ``otreg``): over the rows that move, the mean of ``int_0^1 ||dx/ds||^2 ds`` (kinetic
    energy) plus ``int_0^1 ||J e||^2 ds`` (an unbiased estimate of the Jacobian's squared Frobenius norm, from
    the same noise vector ``e`` as the trace), both integrated in the same solve. Straighter, smoother flows
    need fewer solver steps. Ignored where the trace is exact or absent (evaluation, sampling); needs the drift's
    forward-mode trace and ``adjoint=False``.
    """
    if jacobian not in ("forward", "autograd"):
        raise ValueError(f"jacobian must be 'forward' or 'autograd', got {jacobian!r}")
    penalise = penalty is not None and trace in (Trace.RADEMACHER, Trace.GAUSSIAN)
    if penalise and (adjoint or jacobian != "forward" or not hasattr(drift, "forward_with_trace")):
        raise ValueError("the flow penalty needs adjoint=False and a drift with a forward-mode trace "
                         "(forward_with_trace)")
    system = FlowODE(drift, t0.to(x.dtype), t1.to(x.dtype), trace, _noise(x, trace, generator),
                     torch.is_grad_enabled(), context, cond=None if adjoint else cond, jacobian=jacobian,
                     penalise=penalise)
    ts = torch.tensor([0.0, 1.0], dtype=x.dtype, device=x.device)
    if penalise:
        end = _odeint(system, torch.cat([x, x.new_zeros(x.shape[0], 3)], -1), ts, rtol=rtol, atol=atol,
                      method=method, adjoint=False, options=options)[-1]
        moving = (t1 != t0).to(end.dtype)
        penalty.append((end[:, -2:].sum(-1) * moving).sum() / moving.sum().clamp_min(1.0))
        return end[:, :-3], end[:, -3]
    if adjoint:
        out = _odeint(system, (x, torch.zeros_like(x[:, 0]), cond), ts, rtol=rtol, atol=atol, method=method,
                      adjoint=True, options=options)
        return out[0][-1], out[1][-1]
    # One packed state [x, delta] (torchdiffeq handles a tuple by flattening it at every evaluation).
    end = _odeint(system, torch.cat([x, x.new_zeros(x.shape[0], 1)], -1), ts, rtol=rtol, atol=atol, method=method,
                  adjoint=False, options=options)[-1]
    return end[:, :-1], end[:, -1]


class HiddenODE(nn.Module):
    """The temporal model's state between events: ``dh/dt = tanh(g(h))`` (``bounded=True``, the reference code's
    "simple" style) or ``dh/dt = g(h)`` (``bounded=False``, its default "gru" style), and ``dLambda/dt =
    softplus(w h + b)`` (the running compensator rides in the state, as in the reference's ``IntensityODEFunc``).
    The bounded drift moves the state by at most one unit per model time unit, so an intensity that must fall
    within a fraction of a mean gap (a Hawkes kernel that decays fast) needs large read-out weights; the free drift
    can decay that fast directly, at the price of stiffer solves."""

    def __init__(self, hidden_size: int, width: int, bounded: bool = True) -> None:
        super().__init__()
        self.bounded = bool(bounded)
        self.dynamics = nn.Sequential(nn.Linear(hidden_size, width), nn.Softplus(), nn.Linear(width, hidden_size))
        nn.init.zeros_(self.dynamics[-1].weight)  # a new model starts with a constant state (a Poisson process)
        nn.init.zeros_(self.dynamics[-1].bias)
        self.intensity = nn.Linear(hidden_size, 1)

    def drift(self, h: Tensor) -> Tensor:
        """``dh/dt`` at the state ``h [N, H]`` (model time units)."""
        g = self.dynamics(h)
        return torch.tanh(g) if self.bounded else g

    def rate(self, h: Tensor) -> Tensor:
        """``[...]`` the intensity (model time units) of the state ``h [..., H]``."""
        return nn.functional.softplus(self.intensity(h))[..., 0]


class _HiddenSystem(nn.Module):
    """:class:`HiddenODE` over row-wise intervals ``t0 -> t1`` in the dummy variable ``s`` (one per solve)."""

    def __init__(self, ode: HiddenODE, t0: Tensor, t1: Tensor) -> None:
        super().__init__()
        self.ode, self.t0, self.t1 = ode, t0, t1

    def forward(self, s: Tensor, state: Tensor | tuple[Tensor, Tensor]) -> Tensor | tuple[Tensor, Tensor]:
        packed = isinstance(state, Tensor)
        h = state[:, :-1] if packed else state[0]
        ratio = (self.t1 - self.t0)[:, None]
        dh, dlam = self.ode.drift(h) * ratio, nn.functional.softplus(self.ode.intensity(h)) * ratio
        return torch.cat([dh, dlam], -1) if packed else (dh, dlam[:, 0])


def solve_hidden(ode: HiddenODE, h: Tensor, t0: Tensor, t1: Tensor, *, rtol: float, atol: float,
                 method: str = "dopri5", adjoint: bool = False, options: dict | None = None) -> tuple[Tensor, Tensor]:
    """``(h(t1) [N, H], int_{t0}^{t1} lambda [N])`` from ``h(t0) = h`` (row-wise intervals, ``t1 >= t0``)."""
    ts = torch.tensor([0.0, 1.0], dtype=h.dtype, device=h.device)
    system = _HiddenSystem(ode, t0.to(h.dtype), t1.to(h.dtype))
    if adjoint:
        hs, lams = _odeint(system, (h, torch.zeros_like(h[:, 0])), ts, rtol=rtol, atol=atol, method=method,
                           adjoint=True, options=options)
        return hs[-1], lams[-1]
    # One packed state [h, Lambda] (no tuple bookkeeping per evaluation).
    end = _odeint(system, torch.cat([h, h.new_zeros(h.shape[0], 1)], -1), ts, rtol=rtol, atol=atol, method=method,
                  adjoint=False, options=options)[-1]
    return end[:, :-1], end[:, -1]
