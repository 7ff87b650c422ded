"""Discrete-time baseline for irregular series: a GRU over the observed rows.

:class:`GRUTime` is the "GRU-simple" of Che et al. (GRU-D paper, Sci. Rep. 2018), the baseline the
irregular-classification papers compare with: each row feeds the GRU with

* the standardised values, missing ones replaced by 0 (the training mean),
* the observation mask per channel,
* per channel the time since that channel was last observed before this row (``delta``),
* the row's time (the time channel of the CDE models),

so irregular sampling and missingness reach the model only as inputs, not as dynamics.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sde.models._base import SeriesModel
from sde.models._bidir import TwoWay
from sde.models.heads import Task
from tpp.options import Interval, check_params

__all__ = ["GRUTime"]


def gru_inputs(time: Tensor, values: Tensor, mask: Tensor) -> Tensor:
    """``[B, L, 3C + 1]``: filled values, observation mask, time since each channel's last observation, time.

    ``time [B, L]`` and ``values [B, L, C]`` on the model's clock (padding rows: any finite time);
    ``mask [B, L]`` marks rows that exist.
    """
    observed = torch.isfinite(values) & mask[..., None]
    filled = torch.where(observed, values, torch.zeros_like(values))
    t = time[..., None].expand_as(values)
    last = torch.where(observed, t, torch.full_like(t, float("-inf"))).cummax(1).values
    # time since the last observation strictly before this row (0 before any observation)
    before = torch.cat([torch.full_like(last[:, :1], float("-inf")), last[:, :-1]], 1)
    delta = torch.where(torch.isfinite(before), t - before, torch.zeros_like(t))
    return torch.cat([filled, observed.to(values.dtype), delta, time[..., None]], -1)


class GRUTime(TwoWay, SeriesModel):
    """GRU over the rows with values, observation mask, per-channel time gaps and time as inputs.

    The state at a time ``t`` is the GRU state after the last row at or before ``t`` (zeros
    before the first row), so forecasts use only the past. ``bidirectional``: also a backward GRU over
    each series reversed (:mod:`sde.models._bidir`); the state at a time then comes from the rows before
    and after it and from a row at that time (with ``leave_row_out``: from the other rows only).
    ``reconstruction_weight``: a classifier also learns to estimate each observed value one step ahead
    (BRITS's auxiliary loss, :mod:`sde.models._bidir`).
    """

    _constraints = {"num_layers": Interval(1, None, integer=True)}

    def __init__(self, input_channels: int, hidden_size: int = 32, output_size: int = 2,
                 task: Task = Task.CLASSIFICATION, *, num_layers: int = 1, bidirectional: bool = False,
                 leave_row_out: bool = False, reconstruction_weight: float = 0.0,
                 batch_norm: bool | None = None, likelihood: str = "gaussian") -> None:
        super().__init__(input_channels, hidden_size, output_size, task, batch_norm, likelihood)
        check_params(self, num_layers=num_layers)
        self.gru = nn.GRU(3 * self.input_channels + 1, self.hidden_size, num_layers=int(num_layers), batch_first=True)
        self._init_two_way(bidirectional, leave_row_out, reconstruction_weight)
        if self.bidirectional:  # not nn.GRU's own bidirectional: its reverse pass would start in the padding
            self.gru_backward = nn.GRU(3 * self.input_channels + 1, self.hidden_size, num_layers=int(num_layers),
                                       batch_first=True)

    def _pass(self, batch: Any, backward: bool) -> Tensor:
        out, _ = (self.gru_backward if backward else self.gru)(gru_inputs(batch.time, batch.values, batch.mask))
        return torch.cat([out.new_zeros(out.shape[0], 1, out.shape[-1]), out], 1)

    def _one_way_latent(self, batch: Any, times: Tensor) -> Tensor:
        inputs = gru_inputs(batch.time, batch.values, batch.mask)
        out, _ = self.gru(inputs)  # causal: padding rows after a series' end never reach its states
        states = torch.cat([out.new_zeros(out.shape[0], 1, out.shape[-1]), out], 1)
        row_times = torch.where(batch.mask, batch.time, torch.full_like(batch.time, float("inf")))
        # number of rows at or before each query time = index into [h0, h1, ..., hL]
        index = torch.searchsorted(row_times.contiguous(), times.to(row_times.dtype).contiguous(), side="right")
        return states.gather(1, index[..., None].expand(-1, -1, states.shape[-1]))
