"""RMTPP (Du et al., KDD 2016): a recurrent net over the history, an exponential-in-time intensity.

``lambda*(t) = exp(v . h_n + w (t - t_n) + b)`` after the ``n``-th event (eq. 11), marks drawn
from ``softmax(W h_n)`` independently of the time, so ``lambda_k(t) = lambda*(t) p(k | h_n)``.
The compensator of an interval is closed form: ``exp(v . h_n + b) (exp(w tau) - 1) / w`` (eq. 12).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tpp.compensator import interval_bounds
from tpp.events import EventBatch
from tpp.neural.base import NeuralTPP
from tpp.neural.layers import Recurrence, RecurrentHistory, gather_state

__all__ = ["RMTPP"]


class RMTPP(NeuralTPP):
    """Recurrent marked temporal point process: RNN history, exponential intensity, softmax marks.

    ``cell``: the paper's RNN is an Elman RNN with a ReLU (eq. 9, ``Recurrence.RNN_RELU``); the default
    is its tanh twin (``RNN_TANH``, as in EasyTPP), whose bounded state keeps ``exp(v . h)`` finite on
    sequences of thousands of events; ``Recurrence.GRU`` is the gated alternative.
    """

    def __init__(self, num_marks: int, hidden_size: int = 32, embedding_size: int | None = None,
                 num_points: int = 16, cell: Recurrence = Recurrence.RNN_TANH) -> None:
        super().__init__(num_marks, hidden_size, num_points)
        self.history = RecurrentHistory(num_marks, hidden_size, embedding_size, cell=cell)
        self.time_head = nn.Linear(hidden_size, 1)
        self.mark_head = nn.Linear(hidden_size, num_marks)
        self.w = nn.Parameter(torch.tensor(-0.1))

    def encode(self, batch: EventBatch) -> Tensor:
        """``[B, L + 1, H]``: ``h0`` then the state after each event (inputs: mark and log1p of the gap)."""
        return self.history(batch.mark, batch.mask, torch.log1p(batch.inter_event_times))

    def _parts(self, states: Tensor, index: Tensor, batch: EventBatch) -> tuple[Tensor, Tensor, Tensor]:
        h = gather_state(states, index)
        base = self.time_head(h)[..., 0]
        log_marks = F.log_softmax(self.mark_head(h), -1)
        t_last = torch.cat([batch.t_start[:, None], batch.time], 1).gather(1, index)
        return base, log_marks, t_last

    def log_intensity_at(self, batch: EventBatch, context: Tensor, index: Tensor, t: Tensor) -> Tensor:
        base, log_marks, t_last = self._parts(context, index, batch)
        log_total = base + self.w * (t - t_last).to(base.dtype)
        return (log_total[..., None] + log_marks).to(t.dtype)

    def intensity_at(self, batch: EventBatch, context: Tensor, index: Tensor, t: Tensor) -> Tensor:
        return torch.exp(self.log_intensity_at(batch, context, index, t))

    def interval_compensator(self, batch: EventBatch, context: Tensor) -> Tensor:
        left, right, valid = interval_bounds(batch)
        index = torch.arange(left.shape[1], device=batch.device).expand_as(left)
        base, log_marks, _ = self._parts(context, index, batch)
        tau = (right - left).to(base.dtype)
        wt = self.w * tau
        # (exp(w tau) - 1) / w, stable as w -> 0
        growth = torch.where(wt.abs() > 1e-6, torch.expm1(wt) / self.w, tau * (1 + wt / 2))
        total = torch.exp(base) * growth
        return (total[..., None] * log_marks.exp() * valid[..., None]).to(batch.dtype)
