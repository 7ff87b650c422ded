"""The neural Hawkes process (Mei & Eisner, NeurIPS 2017): a continuous-time LSTM.

After each event the cell jumps (eqs. 5-6) and then decays towards a target ``c_bar`` at rate
``delta`` until the next event (eq. 7): ``c(t) = c_bar + (c - c_bar) exp(-delta (t - t_n))``,
``h(t) = o * tanh(c(t))``. The intensity of type ``k`` is ``s_k softplus(w_k . h(t) / s_k)`` with a
learned scale ``s_k`` per type (eq. 4). Before the first event the state comes from a
begin-of-sequence input at ``t_start`` (the paper's BOS event), so it decays too.
The compensator is the Gauss-Legendre rule of :class:`NeuralTPP` per interval.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tpp.events import EventBatch
from tpp.neural._recurrences import ctlstm_states
from tpp.neural.base import StateTPP
from tpp.neural.layers import (
    ContinuousLSTMCell,
    MarkEmbedding,
    ScaledSoftplus,
)

__all__ = ["NHP"]


class NHP(StateTPP):
    """Neural Hawkes process: continuous-time LSTM history, scaled-softplus intensity per type."""

    def __init__(self, num_marks: int, hidden_size: int = 32, num_points: int = 16) -> None:
        super().__init__(num_marks, hidden_size, num_points)
        num_marks, hidden_size = self.num_marks, self.hidden_size  # checked ints (the base's __init__)
        self.embedding = MarkEmbedding(num_marks, hidden_size)
        self.bos = nn.Parameter(torch.zeros(hidden_size))  # input of the begin-of-sequence step
        self.cell = ContinuousLSTMCell(hidden_size, hidden_size)
        self.head = nn.Linear(hidden_size, num_marks)
        self.softplus = ScaledSoftplus(num_marks)

    def rate_biases(self) -> list[Tensor]:
        """The head's per-type offsets (see :meth:`NeuralTPP.initialise`)."""
        return [self.head.bias]

    def encode(self, batch: EventBatch) -> Tensor:
        """``[B, L + 1, 4H]``: ``(c, c_bar, delta, o)`` after the BOS input (index 0) and after each event.

        State ``n`` defines the decay on ``(t_n, t_{n+1}]``. The input part of the gates is one
        matrix product over all positions; the recurrence runs in
        :func:`tpp.neural._recurrences.ctlstm_states` (a compiled loop and reverse pass on CPU). Padding
        steps see a zero gap and the padding embedding, and their states are never read for real
        intervals.
        """
        dtype = self.head.weight.dtype
        B, L = batch.time.shape
        inputs = torch.cat([self.bos.expand(B, 1, -1), self.embedding(batch.mark, batch.mask)], 1)  # [B, L+1, H]
        weight = self.cell.linear.weight
        gx = F.linear(inputs, weight[:, : self.hidden_size], self.cell.linear.bias)
        gaps = batch.inter_event_times.to(dtype)  # differences in float64, then cast
        return ctlstm_states(gx, weight[:, self.hidden_size :], gaps)

    def intensity_after(self, state: Tensor, dt: Tensor) -> Tensor:
        """``[..., K]`` intensity a time ``dt [...]`` (float64) after the event whose state is ``state [..., 4H]``."""
        c, c_bar, delta, o = state.chunk(4, -1)
        h, _ = ContinuousLSTMCell.decay(c, c_bar, delta, o, dt.to(c.dtype))  # cast the difference, not the times
        return self.softplus(self.head(h))
