"""RMTPP (Du et al., KDD 2016): a recurrent net over the history, an exponential-in-time intensity.

``lambda*(t) = exp(v . h_n + w (t - t_n) + b)`` after the ``n``-th event (eq. 11), marks drawn
from ``softmax(W h_n)`` independently of the time, so ``lambda_k(t) = lambda*(t) p(k | h_n)``.
The compensator of an interval is closed form: ``exp(v . h_n + b) (exp(w tau) - 1) / w`` (eq. 12).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tpp.compensator import interval_bounds
from tpp.events import EventBatch
from tpp.neural.base import NeuralTPP, history_index
from tpp.neural.layers import Recurrence, RecurrentHistory, gather_state, log_softmax_last

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
        num_marks, hidden_size = self.num_marks, self.hidden_size  # checked ints (the base's __init__)
        self.history = RecurrentHistory(num_marks, hidden_size, embedding_size, cell=cell)
        self.head = nn.Linear(hidden_size, 1 + num_marks)  # v . h + b, then the mark logits W h
        self.w = nn.Parameter(torch.tensor(-0.1))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Weights saved before the two heads were merged (``time_head``, ``mark_head``) load into ``head``.
        for name in ("weight", "bias"):
            time_key, mark_key = f"{prefix}time_head.{name}", f"{prefix}mark_head.{name}"
            if time_key in state_dict and mark_key in state_dict:
                state_dict[f"{prefix}head.{name}"] = torch.cat([state_dict.pop(time_key), state_dict.pop(mark_key)])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def encode(self, batch: EventBatch) -> tuple[Tensor, Tensor]:
        """``(base [B, L + 1], log_marks [B, L + 1, K])``: ``v . h_n + b`` and ``log softmax(W h_n)`` for
        ``h0`` and the state after each event (RNN inputs: mark and log1p of the gap).

        The heads are applied once per state; every time scored in an interval reuses them.
        """
        states = self.history(batch.mark, batch.mask, torch.log1p(batch.inter_event_times))
        heads = self.head(states)
        return heads[..., 0], log_softmax_last(heads[..., 1:])

    def log_intensity_at(self, batch: EventBatch, context: tuple[Tensor, Tensor], index: Tensor, t: Tensor) -> Tensor:
        base, log_marks = context
        t_last = torch.cat([batch.t_start[:, None], batch.time], 1).gather(1, index)
        log_total = base.gather(1, index) + self.w * (t - t_last).to(base.dtype)
        return (log_total[..., None] + gather_state(log_marks, index)).to(t.dtype)

    def intensity_at(self, batch: EventBatch, context: tuple[Tensor, Tensor], index: Tensor, t: Tensor) -> Tensor:
        return torch.exp(self.log_intensity_at(batch, context, index, t))

    def event_log_intensity(self, batch: EventBatch, context: tuple[Tensor, Tensor],
                            chunk_size: int | None = None) -> Tensor:
        """``[B, L]``: only each event's own mark is gathered (``K`` times less than the base class), so no
        ``[B, L, K]`` tensor forms and ``chunk_size`` is not needed."""
        base, log_marks = context
        index = history_index(batch, batch.time)
        t_last = torch.cat([batch.t_start[:, None], batch.time], 1).gather(1, index)
        K = self.num_marks
        mark = batch.mark.clamp(0, K - 1)
        log_mark = log_marks.reshape(log_marks.shape[0], -1).gather(1, index * K + mark)
        log_event = base.gather(1, index) + self.w * (batch.time - t_last).to(base.dtype) + log_mark
        return torch.where(batch.mask, log_event.to(batch.dtype), 0.0)

    def interval_ground_compensator(self, batch: EventBatch, context: tuple[Tensor, Tensor],
                                    num_points: int | None = None, chunk_size: int | None = None) -> Tensor:
        """``[B, L + 1]`` closed form (eq. 12): ``exp(v . h_n + b) (exp(w tau) - 1) / w`` (exact: no quadrature,
        so ``num_points`` and ``chunk_size`` do not apply)."""
        base, _ = context
        left, right, valid = interval_bounds(batch)
        tau = (right - left).to(base.dtype)
        wt = self.w * tau
        # (exp(w tau) - 1) / w, stable as w -> 0
        growth = torch.where(wt.abs() > 1e-6, torch.expm1(wt) / self.w, tau * (1 + wt / 2))
        return (torch.exp(base) * growth * valid).to(batch.dtype)

    def interval_compensator(self, batch: EventBatch, context: tuple[Tensor, Tensor],
                             num_points: int | None = None, chunk_size: int | None = None) -> Tensor:
        """``[B, L + 1, K]``: the ground compensator split over the marks by ``softmax(W h_n)`` (exact)."""
        return self.interval_ground_compensator(batch, context)[..., None] * context[1].exp().to(batch.dtype)
