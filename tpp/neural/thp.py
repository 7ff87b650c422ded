"""THP, the Transformer Hawkes process (Zuo et al., ICML 2020): causal self-attention over the events.

Event ``j`` enters as its mark embedding plus the sinusoidal temporal encoding of its time since
``t_start`` (eq. 2), re-added before every layer as in the authors' code. ``num_layers`` post-norm
transformer layers (attention, then a ReLU feed-forward of width ``feedforward_size``, default ``2 H``, eq. 4;
``window``: each event attends to at most that many events, itself included, computed block by
block in O(L window) memory, so sequences of any length fit; stacked layers carry information
further back) with a causal mask (event
``j`` attends to itself and earlier events, eqs. 3-5) give a hidden state ``h_j``. Between events
the intensity of type ``k`` is (eq. 6)

    ``lambda_k(t) = f_k(alpha_k (t - t_j) / (t_j - t_start + 1) + w_k . h_j + b_k)``,  ``t in (t_j, t_{j+1}]``,

with ``f_k`` the softplus with a learned scale per type. The paper divides by ``t_j``, which is 0 at
the window start; we divide by the time elapsed since ``t_start`` plus one time unit (the authors'
code divides by ``t_j + 1`` in its integral), so the slope stays finite. Times are in model units (the
training data's mean gap, :class:`~tpp.neural.base.NeuralTPP`'s time scale), so the data's own unit does
not matter. Before the first event a learned start state ``h_{-1}`` is used with ``t_j = t_start``.
With a slope ``alpha_k`` that does not depend on the history, this family cannot decay towards a
positive baseline as an exponential Hawkes intensity does (tests/tpp/neural/test_thp.py measures
the gap).

History strictly before ``t``: the event term ``log lambda_{k_n}(t_n)`` uses ``h_{n-1}``. The
authors' code scores event ``n`` with ``h_n``, which has already seen event ``n`` (their issue #10),
so the model can learn to put its mass on a mark after seeing it; here ``h_n`` only shapes the
intensity after ``t_n``. No closed form: the compensator is the base class's Gauss-Legendre rule.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tpp.events import EventBatch
from tpp.neural._quadrature import thp_interval_integral
from tpp.neural.base import StateTPP
from tpp.neural.layers import CausalAttentionLayer, MarkEmbedding, ScaledSoftplus, TemporalEncoding, gather_state

__all__ = ["THP"]


class THP(StateTPP):
    """Transformer Hawkes process: causal transformer history, softplus intensity linear in elapsed time."""

    def __init__(
        self,
        num_marks: int,
        hidden_size: int = 32,
        num_heads: int = 2,
        num_layers: int = 2,
        num_points: int = 16,
        dropout: float = 0.0,
        feedforward_size: int | None = None,
        window: int | None = None,
    ) -> None:
        super().__init__(num_marks, hidden_size, num_points)
        num_marks, hidden_size = self.num_marks, self.hidden_size  # checked ints (the base's __init__)
        if hidden_size % num_heads or hidden_size % 2:
            raise ValueError(f"hidden_size={hidden_size} must be even and divisible by num_heads={num_heads}")
        self.embedding = MarkEmbedding(num_marks, hidden_size)
        self.temporal = TemporalEncoding(hidden_size)
        feedforward = 2 * hidden_size if feedforward_size is None else feedforward_size
        self.layers = nn.ModuleList(
            CausalAttentionLayer(hidden_size, num_heads, feedforward, norm_first=False, dropout=dropout, window=window,
                                 activation="relu")
            for _ in range(num_layers)
        )
        self.h0 = nn.Parameter(torch.zeros(hidden_size))
        self.head = nn.Linear(hidden_size, num_marks)  # w_k, b_k
        self.alpha = nn.Parameter(torch.full((num_marks,), -0.1))
        self.softplus = ScaledSoftplus(num_marks)

    def rate_biases(self) -> list[Tensor]:
        """The head's per-type offsets (see :meth:`NeuralTPP.initialise`)."""
        return [self.head.bias]

    def encode(self, batch: EventBatch) -> Tensor:
        """``[B, L + 1, K + 1]``: ``w_k . h + b_k`` for ``h_{-1}`` and each ``h_j``, then ``1 / (t_j - t_start + 1)``.

        Padding comes last, so the causal mask alone keeps it out of every real event's state.
        Projecting the L + 1 states once, rather than at every quadrature node, and keeping the time
        scale beside them (so an interval's nodes only broadcast its state) make the compensator cheap.
        """
        B, L = batch.time.shape
        x = self.embedding(batch.mark, batch.mask).to(self.h0.dtype)
        if L:
            temporal = self.temporal((batch.time - batch.t_start[:, None]).to(self.h0.dtype))
            for layer in self.layers:
                x = layer(x + temporal)
        elapsed = torch.cat([batch.t_start.new_zeros(B, 1), batch.time - batch.t_start[:, None]], 1)
        scale = (1.0 / (elapsed + 1.0)).to(self.h0.dtype)  # the time ratio's denominator, in the batch's precision
        return torch.cat([self.head(torch.cat([self.h0.expand(B, 1, -1), x], 1)), scale[..., None]], -1)

    def _activation(self, state: Tensor, dt: Tensor) -> Tensor:
        history, scale = state[..., :-1], state[..., -1]
        return self.alpha * (dt.to(state.dtype) * scale)[..., None] + history

    def integrate_after(self, state: Tensor, tau: Tensor, num_points: int | None = None) -> Tensor:
        """The Gauss-Legendre compensator of eq. 6 in one compiled pass on CPU (the base class's rule elsewhere)."""
        points = self.quadrature_points(num_points)
        fused = thp_interval_integral(state[..., :-1], state[..., -1], self.alpha, self.softplus.log_scale, tau, points)
        return super().integrate_after(state, tau, points) if fused is None else fused

    def intensity_after(self, state: Tensor, dt: Tensor) -> Tensor:
        return self.softplus(self._activation(state, dt))

    def log_intensity_at(self, batch: EventBatch, context: Tensor, index: Tensor, t: Tensor) -> Tensor:
        t_last = torch.cat([batch.t_start[:, None], batch.time], 1).gather(1, index)
        return self.softplus.log_forward(self._activation(gather_state(context, index), t - t_last)).to(t.dtype)
