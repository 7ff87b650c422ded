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
whichever row it is on. ``leave_row_out=True`` reads the rows strictly before and strictly after ``t``
instead: each row is then predicted from the other rows only, the reading a reconstruction task needs
(the Latent ODE protocol scores every value the model was given; a model that reads the row at ``t``
copies it). For a forecast the future rows are NaN in the inputs, so the backward pass over
them carries only their times, which the query itself gives.

A classifier (or regressor) reads :meth:`TwoWay.summary`: the forward state after every row and the
backward state after every row, combined the same way with zero gaps.

``reconstruction_weight > 0`` (classification only) trains a classifier with BRITS's auxiliary task
(Cao et al. 2018, eq. 9-10: the classification loss plus the error of estimating each observed value from
the history before it): each pass predicts every row's observed values from its state before that row
(one step ahead, :meth:`TwoWay.reconstruction_error`), and the training objective is
``log p(label | series) - reconstruction_weight * error``. The error term only shapes the states in
training; the objective in evaluation mode, which early stopping reads, is the label's log-probability.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any

import torch
from torch import Tensor, nn

from sde.models._base import Task

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
    leave_row_out: bool = False
    reconstruction_weight: float = 0.0

    def _init_two_way(self, bidirectional: bool, leave_row_out: bool = False,
                      reconstruction_weight: float = 0.0) -> None:
        if leave_row_out and not bidirectional:
            raise ValueError(f"{type(self).__name__}: leave_row_out=True reads the rows on both sides of a time: "
                             "it needs bidirectional=True")
        if not (math.isfinite(reconstruction_weight) and reconstruction_weight >= 0):
            raise ValueError(f"{type(self).__name__}: reconstruction_weight must be a finite number >= 0, "
                             f"got {reconstruction_weight!r}")
        if reconstruction_weight > 0 and self.task is not Task.CLASSIFICATION:
            raise ValueError(f"{type(self).__name__}: reconstruction_weight is the auxiliary loss of a classifier; "
                             f"this model's task is {self.task.value}")
        self.bidirectional = bool(bidirectional)
        self.leave_row_out = bool(leave_row_out)
        self.reconstruction_weight = float(reconstruction_weight)
        if self.reconstruction_weight > 0:  # one readout per pass, as BRITS's two regressions
            C, H = self.input_channels, self.hidden_size
            self.reconstruct = nn.Linear(H, C)
            if self.bidirectional:
                self.reconstruct_backward = nn.Linear(H, C)
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
        state after the rows at or after it (strictly before / after with ``leave_row_out``), each moved over
        its gap, combined."""
        forward = self._pass(batch, backward=False)
        backward = self._pass(reversed_rows(batch), backward=True)
        time, mask = batch.time, batch.mask
        B, L = mask.shape
        H = forward.shape[-1]
        times = times.to(time.dtype)
        row_times = torch.where(mask, time, torch.full_like(time, float("inf"))).contiguous()
        lengths = mask.sum(1)[:, None]
        # forward: the rows at or before each time; backward: the rows at or after it
        strict = self.leave_row_out
        before = torch.searchsorted(row_times, times.contiguous(), side="left" if strict else "right")
        after = (lengths - torch.searchsorted(row_times, times.contiguous(), side="right" if strict else "left")
                 ).clamp(min=0)
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

    def _two_way_summary(self, batch: Any, forward: Tensor | None = None, backward: Tensor | None = None) -> Tensor:
        """``[B, H]``: both passes after every row of each series (``forward`` / ``backward``: the passes when
        already computed), combined with zero gaps."""
        forward = self._pass(batch, backward=False) if forward is None else forward
        backward = self._pass(reversed_rows(batch), backward=True) if backward is None else backward
        lengths = batch.mask.sum(1)
        rows = torch.arange(len(lengths), device=lengths.device)
        h_f, h_b = forward[rows, lengths], backward[rows, lengths]
        zero = h_f.new_zeros(h_f.shape[0])
        return self._combined(h_f, h_b, zero, zero)


    def reconstruction_error(self, batch: Any, states: Tensor, backward: bool = False) -> Tensor:
        """``[B]`` mean squared error (standardised units) of each series' observed values predicted one step
        ahead: row ``j`` from the pass's state after the rows before it (``states [B, L + 1, H]`` of
        :meth:`_pass` on ``batch``, a prepared batch or its :func:`reversed_rows`), moved over the gap to
        row ``j``. 0 for a series with no observed value."""
        time, mask, values = batch.time, batch.mask, batch.values
        B, L = mask.shape
        H = states.shape[-1]
        previous = torch.cat([time.new_zeros(B, 1), time[:, :-1]], 1)  # the state before row 0 sits at 0
        gap = (time - previous).clamp(min=0)
        h = self._advance(states[:, :L].reshape(B * L, H), gap.reshape(-1), backward=backward).view(B, L, H)
        estimate = (self.reconstruct_backward if backward else self.reconstruct)(h)
        observed = torch.isfinite(values) & mask[..., None]
        sq = torch.where(observed, estimate - torch.nan_to_num(values), torch.zeros_like(estimate)) ** 2
        return sq.sum((1, 2)) / observed.sum((1, 2)).clamp(min=1).to(sq.dtype)

    def objective(self, batch: Any) -> Tensor:
        """``[B]`` the training objective; with ``reconstruction_weight`` (in training mode) the label's
        log-probability minus the weighted one-step reconstruction error of both passes (BRITS's joint loss)."""
        if self.reconstruction_weight == 0 or not self.training:
            return super().objective(batch)  # type: ignore[misc]
        prepared = self.prepare(batch)  # type: ignore[attr-defined]
        if prepared.labels is None:
            raise ValueError("a classification model needs batch.labels")
        forward = self._pass(prepared, backward=False)
        error = self.reconstruction_error(prepared, forward)
        if self.bidirectional:
            flipped = reversed_rows(prepared)
            backward = self._pass(flipped, backward=True)
            error = (error + self.reconstruction_error(flipped, backward, backward=True)) / 2
            summary = self._two_way_summary(prepared, forward, backward)
        else:
            summary = self.summary(prepared)
        log_prob = self.head.log_likelihood(summary, prepared.labels)  # type: ignore[attr-defined]
        return log_prob - self.reconstruction_weight * error
