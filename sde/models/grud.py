"""GRU-D (Che, Purushotham, Cho, Sontag & Liu, "Recurrent Neural Networks for Multivariate Time Series with
Missing Values", Scientific Reports 8:6085, 2018): a GRU whose input and state decay with the time since
each channel was last observed.

At each row ``t`` (time ``s_t``), with mask ``m_t^d`` (1 where channel ``d`` is observed), the time since
channel ``d`` was last observed before this row ``delta_t^d`` (``s_t - s_1`` if it never was, 0 at the
first row: the paper's recursion), the last observed value ``x_last^d`` (``x_mean^d`` before any) and the
empirical mean ``x_mean^d``::

    gamma_x = exp(-max(0, w_x * delta + b_x))          # elementwise (the paper's diagonal W_gamma_x)
    gamma_h = exp(-max(0, W_h delta + b_h))            # [H] from all channels' gaps
    x_hat   = m * x + (1 - m) * (gamma_x * x_last + (1 - gamma_x) * x_mean)
    h_hat   = gamma_h * h_{t-1}
    z       = sigmoid(W_z x_hat + U_z h_hat + V_z m + b_z)
    r       = sigmoid(W_r x_hat + U_r h_hat + V_r m + b_r)
    h_tilde = tanh(W x_hat + U (r * h_hat) + V m + b)
    h_t     = (1 - z) * h_hat + z * h_tilde

Values are the model's standardised ones (:meth:`sde.models._base.SeriesModel.prepare`), so the training
mean ``x_mean`` is 0 there; it is the buffer ``x_mean`` (standardised units) so it can be set. Times are
on the model's clock (each series starts at 0, divided by the training time scale). Padding rows leave
the state as it is; a row that exists with no observed value still steps (its input is the decayed
imputation), as on the paper's regular grid.

The state at a query time is the state after the last row at or before it (zeros before the first row),
read by the shared heads: classification, regression, forecast, like :class:`sde.models.GRUTime`. With
``bidirectional=True`` a second cell reads each series backwards and the state at a time combines both
passes (:mod:`sde.models._bidir`): for interpolation, where the rows after a hidden value are given.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sde.models._base import SeriesModel
from sde.models._bidir import TwoWay
from sde.models.heads import Task
from tpp.options import check_size

__all__ = ["GRUD", "GRUDCell"]


class GRUDCell(nn.Module):
    """One GRU-D step (the equations of the module docstring) for ``C`` channels and ``H`` hidden units."""

    def __init__(self, input_channels: int, hidden_size: int) -> None:
        super().__init__()
        C, H = input_channels, hidden_size
        # diagonal W_gamma_x: non-negative at the start, so a gap decays the input and the ReLU passes gradient
        self.decay_x_weight = nn.Parameter(torch.empty(C).uniform_(0.0, C**-0.5))
        self.decay_x_bias = nn.Parameter(torch.zeros(C))
        self.decay_h = nn.Linear(C, H)
        self.update = nn.Linear(C + H + C, H)  # [W_z U_z V_z] on [x_hat, h_hat, m], bias b_z
        self.reset = nn.Linear(C + H + C, H)
        self.candidate = nn.Linear(C + H + C, H)

    def forward(self, x: Tensor, m: Tensor, delta: Tensor, x_last: Tensor, x_mean: Tensor, h: Tensor) -> Tensor:
        """``h_t [B, H]`` from the row's values ``x [B, C]`` (any finite number where ``m [B, C]`` is 0), the
        gaps ``delta [B, C]``, the last observed values ``x_last [B, C]``, ``x_mean [C]`` and ``h [B, H]``."""
        gamma_x = torch.exp(-torch.relu(self.decay_x_weight * delta + self.decay_x_bias))
        gamma_h = torch.exp(-torch.relu(self.decay_h(delta)))
        x_hat = m * x + (1 - m) * (gamma_x * x_last + (1 - gamma_x) * x_mean)
        h_hat = gamma_h * h
        z = torch.sigmoid(self.update(torch.cat([x_hat, h_hat, m], -1)))
        r = torch.sigmoid(self.reset(torch.cat([x_hat, h_hat, m], -1)))
        h_tilde = torch.tanh(self.candidate(torch.cat([x_hat, r * h_hat, m], -1)))
        return (1 - z) * h_hat + z * h_tilde


class GRUD(TwoWay, SeriesModel):
    """GRU-D classifier / regressor / forecaster on irregular, partly observed series (see the module docstring).

    ``bidirectional``: also read each series backwards with a second cell (:mod:`sde.models._bidir`); the
    state at a time then comes from the rows before and after it and from a row at that time
    (with ``leave_row_out``: from the other rows only). ``reconstruction_weight``: a classifier also learns
    to estimate each observed value one step ahead (BRITS's auxiliary loss, :mod:`sde.models._bidir`)."""

    def __init__(self, input_channels: int, hidden_size: int = 32, output_size: int = 2,
                 task: Task = Task.CLASSIFICATION, *, bidirectional: bool = False, leave_row_out: bool = False,
                 reconstruction_weight: float = 0.0,
                 batch_norm: bool | None = None, likelihood: str = "gaussian") -> None:
        super().__init__(input_channels, hidden_size, output_size, task, batch_norm, likelihood)
        C, H = self.input_channels, self.hidden_size  # ints (the base converts NumPy and integral float sizes)
        check_size(self, (2 * C + H, H), f"input_channels={input_channels}, hidden_size={hidden_size}")
        self.cell = GRUDCell(C, H)
        self._init_two_way(bidirectional, leave_row_out, reconstruction_weight)
        if self.bidirectional:
            self.cell_backward = GRUDCell(C, H)  # its own weights, as BRITS's two RNNs
        # the empirical mean of each channel in standardised units: 0 after SeriesModel.initialise
        self.register_buffer("x_mean", torch.zeros(C))

    def row_states(self, batch: Any, cell: GRUDCell | None = None) -> Tensor:
        """``[B, L, H]`` the state after each row of a prepared batch (``cell``: default the forward one)."""
        cell = self.cell if cell is None else cell
        time, values, exists = batch.time, batch.values, batch.mask
        B, L, C = values.shape
        observed = torch.isfinite(values) & exists[..., None]
        m_all = observed.to(values.dtype)
        x_all = torch.where(observed, values, torch.zeros_like(values))
        x_mean = self.x_mean.to(values.dtype)
        h = values.new_zeros(B, self.hidden_size)
        x_last = x_mean.expand(B, C)
        last_seen = time[:, :1].expand(B, C)  # s_1: the gap of a never-observed channel counts from the start
        out = []
        for j in range(L):
            m = m_all[:, j]
            delta = time[:, j, None] - last_seen
            h_new = cell(x_all[:, j], m, delta, x_last, x_mean, h)
            h = torch.where(exists[:, j, None], h_new, h)
            seen = observed[:, j]
            x_last = torch.where(seen, x_all[:, j], x_last)
            last_seen = torch.where(seen, time[:, j, None].expand(B, C), last_seen)
            out.append(h)
        return torch.stack(out, 1) if out else values.new_zeros(B, 0, self.hidden_size)

    def _pass(self, batch: Any, backward: bool) -> Tensor:
        out = self.row_states(batch, self.cell_backward if backward else self.cell)
        return torch.cat([out.new_zeros(out.shape[0], 1, out.shape[-1]), out], 1)

    def _one_way_latent(self, batch: Any, times: Tensor) -> Tensor:
        out = self.row_states(batch)
        states = torch.cat([out.new_zeros(out.shape[0], 1, out.shape[-1]), out], 1)
        row_times = torch.where(batch.mask, batch.time, torch.full_like(batch.time, float("inf")))
        # number of rows at or before each query time = index into [h0, h1, ..., hL]
        index = torch.searchsorted(row_times.contiguous(), times.to(row_times.dtype).contiguous(), side="right")
        return states.gather(1, index[..., None].expand(-1, -1, states.shape[-1]))
