"""ODE-RNN (Rubanova, Chen & Duvenaud, "Latent ODEs for Irregularly-Sampled Time Series", NeurIPS 2019).

The hidden state ``h`` follows a neural ODE ``dh/dt = f(h)`` between observation times and is updated
by a GRU at each observed row::

    h'_i = ODESolve(f, h_{i-1}, (t_{i-1}, t_i))          # continuous evolution over the gap
    h_i  = GRUCell([x_i filled with 0, m_i], h'_i)       # only if the row has an observed value

``x_i`` are the standardised values (NaN = unobserved, filled with 0, the training mean) and ``m_i``
the per-channel observation mask (the reference code's ``concat_mask=True``). A row with no observed
value only moves the state by the ODE (the reference's ``masked_update``). Before the first row the
state is zero. The state at any query time ``t`` is the state after the last row at or before ``t``,
evolved by the ODE to ``t`` (so a forecast uses only the past, like :class:`sde.models.GRUTime`).
``bidirectional=True`` adds a backward ODE-RNN with its own weights on the reversed clock, combined with
the forward one at each query time (:mod:`sde.models._bidir`): for interpolation.

Solving per series without a hand-written loop. The series of a batch have their observations at
different times, but the vector field is autonomous (as in the reference, whose ``ODEFunc`` ignores
``t``), so the gap ``Delta_b = t_i - t_{i-1}`` of series ``b`` can be folded into the field: on
``s in [0, 1]``, ``dh/ds = Delta_b f(h)`` ends at ``h(t_i)``. One :func:`sde.solvers.solve` call per
row then serves the whole batch, and a negative ``Delta`` runs the ODE backwards in time (the Latent
ODE encoder, :mod:`sde.models.latent_ode`). Fixed-step methods take ``ceil(max_b |Delta_b| /
step_size)`` steps in ``s``, so every series steps by at most ``step_size`` in model time (the
reference uses Euler with about 50 steps per series, ``minimum_step = span / 50``: our default
``step_size=0.02`` on a clock where the longest training series spans 1).

:class:`ODERNN` is a :class:`sde.models._base.SeriesModel`: it classifies, regresses and forecasts
through the shared heads, like :class:`sde.models.GRUTime`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from sde.models._base import SeriesModel
from sde.models._bidir import TwoWay
from sde.models.heads import Task
from sde.solvers import Method, solve
from tpp.options import Interval, check_params, check_size

__all__ = ["ODEFunc", "ODERNN", "evolve", "odernn_states"]

_ADAPTIVE = (Method.BOSH3, Method.DOPRI5, Method.DOPRI8, Method.ADAPTIVE_HEUN)


class ODEFunc(nn.Module):
    """Autonomous vector field ``f(h) = Linear -> Tanh -> (Linear -> Tanh) x (layers - 1) -> Linear``.

    The reference ``create_net(..., nonlinear=nn.Tanh)``, weights drawn ``N(0, 0.1^2)`` and biases 0
    (``utils.init_network_weights``), so the untrained ODE moves the state slowly."""

    def __init__(self, size: int, units: int, num_layers: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(size, units), nn.Tanh()]
        for _ in range(num_layers - 1):
            layers += [nn.Linear(units, units), nn.Tanh()]
        layers.append(nn.Linear(units, size))
        self.net = nn.Sequential(*layers)
        for module in self.net:
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.1)
                nn.init.zeros_(module.bias)

    def forward(self, t: Tensor, h: Tensor) -> Tensor:
        return self.net(h)


class _Stretched(nn.Module):
    """``dh/ds = delta * f(h)`` on ``s in [0, 1]``: the autonomous ODE over each row's own gap ``delta [N, 1]``."""

    def __init__(self, field: nn.Module, delta: Tensor) -> None:
        super().__init__()
        self.field = field
        self.delta = delta

    def forward(self, s: Tensor, h: Tensor) -> Tensor:
        return self.delta * self.field(s, h)


def evolve(field: nn.Module, h: Tensor, delta: Tensor, *, method: Method = Method.EULER, step_size: float = 0.02,
           rtol: float = 1e-3, atol: float = 1e-4) -> Tensor:
    """``h [N, H]`` moved by the autonomous ODE ``dh/dt = field(t, h)`` over ``delta [N]`` time each (negative:
    backwards; zero: unchanged), by one :func:`sde.solvers.solve` on ``s in [0, 1]`` (see the module docstring).

    Fixed-step methods take ``ceil(max |delta| / step_size)`` steps; adaptive ones use ``rtol``/``atol``."""
    if not bool((delta != 0).any()):
        return h
    ts = torch.tensor([0.0, 1.0], dtype=h.dtype, device=h.device)
    system = _Stretched(field, delta.to(h.dtype)[:, None])
    if method in _ADAPTIVE:
        return solve(system, h, ts, method=method, rtol=rtol, atol=atol).ys[:, -1]
    steps = max(1, math.ceil(float(delta.abs().max()) / step_size - 1e-9))
    return solve(system, h, ts, method=method, step_size=1.0 / steps).ys[:, -1]


def odernn_states(field: nn.Module, cell: nn.Module, time: Tensor, inputs: Tensor, update: Tensor, exists: Tensor,
                  h0: Tensor, t0: Tensor, **solver: Any) -> Tensor:
    """``[B, L, H]`` ODE-RNN states after each row, rows taken in the order given.

    ``time [B, L]`` row times, ``inputs [B, L, F]`` the GRU inputs, ``update [B, L]`` rows whose values
    update the state, ``exists [B, L]`` rows that exist (padding rows neither move nor update the state),
    ``h0 [B, H]`` the state at ``t0 [B]``. ``solver`` goes to :func:`evolve`. Rows in decreasing time
    run the ODE backwards.
    """
    h, prev = h0, t0.to(time.dtype)
    out = []
    for j in range(time.shape[1]):
        delta = torch.where(exists[:, j], time[:, j] - prev, torch.zeros_like(prev))
        h = evolve(field, h, delta, **solver)
        if bool(update[:, j].any()):
            h = torch.where(update[:, j, None], cell(inputs[:, j], h), h)
        prev = torch.where(exists[:, j], time[:, j], prev)
        out.append(h)
    if not out:
        return h0.new_zeros(h0.shape[0], 0, h0.shape[-1])
    return torch.stack(out, 1)


class ODERNN(TwoWay, SeriesModel):
    """ODE-RNN classifier / regressor / forecaster on irregular, partly observed series (see the module docstring).

    Arguments beyond the common ones (:class:`sde.models._base.SeriesModel`): ``units`` (width of the ODE's
    vector field, default ``hidden_size``), ``num_layers`` (its hidden layers, default 1), ``method`` (a
    :class:`sde.solvers.Method`, default Euler as the reference encoder), ``step_size`` (largest fixed step
    in model time, default 0.02), ``rtol`` / ``atol`` (adaptive methods), ``time_input`` (also feed the GRU
    the time since the previous observed row, the reference's RNN-Delta-t input; off as in its ODE-RNN),
    ``bidirectional`` (also read each series backwards with its own ODE and GRU, :mod:`sde.models._bidir`:
    the state at a time then comes from the rows before and after it and from a row at that time; with
    ``leave_row_out`` from the other rows only), ``reconstruction_weight`` (a classifier also learns to estimate
    each observed value one step ahead: BRITS's auxiliary loss, :mod:`sde.models._bidir`).
    """

    _constraints = {**SeriesModel._constraints, "units": Interval(1, None, integer=True, none_ok=True),
                    "num_layers": Interval(1, None, integer=True)}

    def __init__(self, input_channels: int, hidden_size: int = 32, output_size: int = 2,
                 task: Task = Task.CLASSIFICATION, *, units: int | None = None, num_layers: int = 1,
                 method: Method = Method.EULER, step_size: float = 0.02, rtol: float = 1e-3, atol: float = 1e-4,
                 time_input: bool = False, bidirectional: bool = False, leave_row_out: bool = False,
                 reconstruction_weight: float = 0.0, batch_norm: bool | None = None,
                 likelihood: str = "gaussian") -> None:
        super().__init__(input_channels, hidden_size, output_size, task, batch_norm, likelihood)
        check_params(self, units=units, num_layers=num_layers, step_size=step_size)
        if not isinstance(method, Method):
            raise TypeError(f"{type(self).__name__}: method must be a sde.solvers.Method, got {method!r}")
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"{type(self).__name__}: rtol and atol must be positive, got rtol={rtol}, atol={atol}")
        self.method, self.step_size, self.rtol, self.atol = method, float(step_size), float(rtol), float(atol)
        self.time_input = bool(time_input)
        self.units, self.num_layers = None if units is None else int(units), int(num_layers)
        # the int() sizes of the base (torch refuses a NumPy integer or an integral float as a layer size)
        C, H, width = self.input_channels, self.hidden_size, self.units or self.hidden_size
        check_size(self, (max(width, 3 * H), max(H, width, 2 * C + 1)),
                   f"input_channels={input_channels}, hidden_size={hidden_size}, units={units}")
        self.field = ODEFunc(H, width, self.num_layers)
        self.cell = nn.GRUCell(2 * C + int(self.time_input), H)
        self._init_two_way(bidirectional, leave_row_out, reconstruction_weight)
        if self.bidirectional:  # the backward pass's own weights, as BRITS's two RNNs
            self.field_backward = ODEFunc(H, width, self.num_layers)
            self.cell_backward = nn.GRUCell(2 * C + int(self.time_input), H)

    def solver_options(self) -> dict[str, Any]:
        """What :func:`evolve` takes from the constructor."""
        return {"method": self.method, "step_size": self.step_size, "rtol": self.rtol, "atol": self.atol}

    def gru_inputs(self, batch: Any) -> tuple[Tensor, Tensor]:
        """``[B, L, 2C (+1)]`` GRU inputs (values with 0 where missing, mask, and with ``time_input`` the time
        since the previous row with a value) and ``[B, L]`` the rows with at least one observed value."""
        observed = torch.isfinite(batch.values) & batch.mask[..., None]
        filled = torch.where(observed, batch.values, torch.zeros_like(batch.values))
        parts = [filled, observed.to(filled.dtype)]
        update = observed.any(-1)
        if self.time_input:
            seen = torch.where(update, batch.time, torch.full_like(batch.time, float("-inf"))).cummax(1).values
            before = torch.cat([torch.zeros_like(seen[:, :1]), seen[:, :-1]], 1)
            before = torch.where(torch.isfinite(before), before, torch.zeros_like(before))
            parts.append((batch.time - before)[..., None])
        return torch.cat(parts, -1), update

    def _pass(self, batch: Any, backward: bool) -> Tensor:
        inputs, update = self.gru_inputs(batch)
        B = batch.time.shape[0]
        h0 = inputs.new_zeros(B, self.hidden_size)
        field, cell = (self.field_backward, self.cell_backward) if backward else (self.field, self.cell)
        states = odernn_states(field, cell, batch.time, inputs, update, batch.mask, h0, batch.time.new_zeros(B),
                               **self.solver_options())
        return torch.cat([h0[:, None], states], 1)

    def _advance(self, h: Tensor, gap: Tensor, backward: bool) -> Tensor:
        return evolve(self.field_backward if backward else self.field, h, gap, **self.solver_options())

    def _one_way_latent(self, batch: Any, times: Tensor) -> Tensor:
        inputs, update = self.gru_inputs(batch)
        B = batch.time.shape[0]
        h0 = inputs.new_zeros(B, self.hidden_size)
        t0 = batch.time.new_zeros(B)  # every series starts at 0 on the model's clock
        options = self.solver_options()
        states = odernn_states(self.field, self.cell, batch.time, inputs, update, batch.mask, h0, t0, **options)
        states = torch.cat([h0[:, None], states], 1)  # [B, L + 1, H]: before any row, then after each
        row_times = torch.where(batch.mask, batch.time, torch.full_like(batch.time, float("inf")))
        index = torch.searchsorted(row_times.contiguous(), times.to(row_times.dtype).contiguous(), side="right")
        start = torch.cat([t0[:, None], batch.time], 1).gather(1, index)  # time of the state picked
        picked = states.gather(1, index[..., None].expand(-1, -1, self.hidden_size))
        gap = (times.to(start.dtype) - start).clamp(min=0)  # queries before 0 read the initial state
        Q = times.shape[1]
        moved = evolve(self.field, picked.reshape(B * Q, -1), gap.reshape(-1), **options)
        return moved.view(B, Q, self.hidden_size)
