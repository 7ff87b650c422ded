"""Reading a series in both directions (BRITS-style), shared by :class:`~sde.models.GRUD`,
:class:`~sde.models.ODERNN` and :class:`~sde.models.GRUTime` (``bidirectional=True``).

A forward pass reads the rows in time order; a backward pass, with its own weights, reads them in
reverse on the reversed clock ``t' = t_end - t`` (each series' own end; padding stays at the end), so
the backward pass is the forward code run on :func:`reversed_rows`. The state at a query time ``t``
combines (one linear layer) the forward state after the rows at or before ``t``, the backward state
after the rows at or after ``t`` and the two gaps (``t`` minus the previous row's time, the next
row's time minus ``t``; 0 at a row); a continuous-time model first moves each state over its gap
(:meth:`TwoWay._advance`).

Both passes read the row at ``t`` itself, as SAITS does and BRITS does through its feature regression:
the other channels of a row say most about a value hidden there (on PhysioNet 2012, 1000 stays, GRU-D's
interpolation MAE was 12.10 this way and 12.94 when the row at ``t`` was left out of both passes, BRITS's
history-only estimate). No held-out value leaks by it: a hidden value is NaN in the inputs (its mask 0),
whichever row it is on. For a forecast the future rows are NaN in the inputs, so the backward pass over
them carries only their times, which the query itself gives.

A classifier (or regressor) reads :meth:`TwoWay.summary`: the forward state after every row and the
backward state after every row, combined the same way with zero gaps.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["TwoWay", "reversed_rows"]

GAP_SCALE = 100.0
"""The gaps reach the combining layer as ``log1p(GAP_SCALE * gap)`` (model clock: the longest training
series spans 1, so 1/100 of it is where the feature turns from linear to logarithmic)."""


def _end_times(time: Tensor, mask: Tensor) -> Tensor:
    last = (mask.sum(1) - 1).clamp(min=0)
    return time.gather(1, last[:, None])[:, 0]


def reversed_rows(batch: Any) -> Any:
    """A prepared batch (each series starting at 0) with each series' rows in reverse order on the clock
    ``t' = t_end - t``; padding rows stay after the last row (at the series' reversed end), so every
    forward-pass code reads it unchanged. Targets and labels are carried as they are (not read)."""
    mask = batch.mask
    B, L = mask.shape
    lengths = mask.sum(1)
    k = torch.arange(L, device=mask.device)[None, :]
    index = torch.where(k < lengths[:, None], lengths[:, None] - 1 - k, k)
    end = _end_times(batch.time, mask)[:, None]
    time = torch.where(mask, end - batch.time.gather(1, index), end)
    values = batch.values.gather(1, index[..., None].expand_as(batch.values))
    return dataclasses.replace(batch, time=time, values=values, validate=False)


class TwoWay(abc.ABC):
    """Mixin of a :class:`~sde.models._base.SeriesModel` read in both directions (see the module docstring).

    A model sets ``self.bidirectional`` and, when it is on, ``self.combine = nn.Linear(2 * H + 2, H)``
    (:meth:`_init_two_way`), and implements :meth:`_pass`, :meth:`_one_way_latent` (its causal states at
    query times) and :meth:`_advance` if its state moves between rows; ``latent`` and ``summary`` dispatch
    on ``bidirectional`` here, once for every model."""

    bidirectional: bool = False

    def _init_two_way(self, bidirectional: bool) -> None:
        self.bidirectional = bool(bidirectional)
        if self.bidirectional:
            H = self.hidden_size
            self.combine = nn.Linear(2 * H + 2, H)

    @abc.abstractmethod
    def _pass(self, batch: Any, backward: bool) -> Tensor:
        """``[B, L + 1, H]``: the state before any row, then after each row, of the forward pass (or of the
        backward pass's weights, on the batch it is given: :func:`reversed_rows` of the series)."""

    @abc.abstractmethod
    def _one_way_latent(self, batch: Any, times: Tensor) -> Tensor:
        """``[B, T, H]`` the forward (causal) states at ``times``: the model's ``latent`` when one-way."""

    def latent(self, batch: Any, times: Tensor) -> Tensor:
        if self.bidirectional:
            return self._two_way_latent(batch, times)
        return self._one_way_latent(batch, times)

    def summary(self, prepared: Any) -> Tensor:
        if self.bidirectional:
            return self._two_way_summary(prepared)
        return super().summary(prepared)  # type: ignore[misc]  # the SeriesModel's readout

    def _advance(self, h: Tensor, gap: Tensor, backward: bool) -> Tensor:
        """``h [N, H]`` moved over ``gap [N] >= 0`` of the pass's own clock (default: unchanged, a GRU)."""
        return h

    def _combined(self, h_f: Tensor, h_b: Tensor, gap_f: Tensor, gap_b: Tensor) -> Tensor:
        gaps = torch.stack([gap_f, gap_b], -1).clamp(min=0)
        return self.combine(torch.cat([h_f, h_b, torch.log1p(GAP_SCALE * gaps)], -1))

    def _two_way_latent(self, batch: Any, times: Tensor) -> Tensor:
        """``[B, Q, H]`` at ``times [B, Q]``: forward state after the rows at or before each time, backward
        state after the rows at or after it, each moved over its gap, combined."""
        forward = self._pass(batch, backward=False)
        backward = self._pass(reversed_rows(batch), backward=True)
        time, mask = batch.time, batch.mask
        B, L = mask.shape
        H = forward.shape[-1]
        times = times.to(time.dtype)
        row_times = torch.where(mask, time, torch.full_like(time, float("inf"))).contiguous()
        lengths = mask.sum(1)[:, None]
        # forward: the rows at or before each time; backward: the rows at or after it
        before = torch.searchsorted(row_times, times.contiguous(), side="right")
        after = (lengths - torch.searchsorted(row_times, times.contiguous(), side="left")).clamp(min=0)
        end = _end_times(time, mask)[:, None]
        t_prev = torch.cat([time.new_zeros(B, 1), time], 1).gather(1, before)
        t_next = torch.where(after > 0, time.gather(1, (lengths - after).clamp(max=L - 1)), end)
        gap_f = (times - t_prev).clamp(min=0)
        gap_b = (t_next - times).clamp(min=0)
        Q = times.shape[1]
        h_f = forward.gather(1, before[..., None].expand(-1, -1, H))
        h_b = backward.gather(1, after[..., None].expand(-1, -1, H))
        h_f = self._advance(h_f.reshape(B * Q, H), gap_f.reshape(-1), backward=False).view(B, Q, H)
        h_b = self._advance(h_b.reshape(B * Q, H), gap_b.reshape(-1), backward=True).view(B, Q, H)
        return self._combined(h_f, h_b, gap_f, gap_b)

    def _two_way_summary(self, batch: Any) -> Tensor:
        """``[B, H]``: both passes after every row of each series, combined with zero gaps."""
        forward = self._pass(batch, backward=False)
        backward = self._pass(reversed_rows(batch), backward=True)
        lengths = batch.mask.sum(1)
        rows = torch.arange(len(lengths), device=lengths.device)
        h_f, h_b = forward[rows, lengths], backward[rows, lengths]
        zero = h_f.new_zeros(h_f.shape[0])
        return self._combined(h_f, h_b, zero, zero)

