"""AttNHP, the attentive neural Hawkes process (Yang, Mei & Eisner, ICLR 2022, section 2).

The state at any time ``t`` is computed by attention, whose query is ``t`` itself, over the events
strictly before ``t``. Queries, keys and values of layer ``l`` are affine maps of a state and the
sinusoidal embedding ``[[t]]`` of its time since ``t_start``; every state is updated by

    ``x^{l+1}(t) = x^l(t) + tanh(sum_i a_i v^l_i)``,  ``a = softmax_i(q^l(t) . k^l_i / sqrt(D))``,

where ``i`` runs over the events before ``t`` and the state's own slot (its own key and value).
The own slot plays the part of the ``1 +`` in the paper's normalisation ``1 + sum_i alpha_i``: the
attention may give weight to nothing old; we take the authors' code's form, whose own value also
carries ``[[t]]`` into the state. An event's state starts at ``tanh(embedding(k_i))`` (so its own
slot makes it attend to events ``0 .. i``); a query starts at a learned ``x^0``. Each of
``num_heads`` heads is its own stack of ``num_layers`` layers, as in the authors' code; the heads'
final states are concatenated and ``lambda_k(t) = f_k(w_k . x(t) + b_k)`` with ``f_k`` the softplus
with a learned scale per type (one query per time, as the authors' code does, not one per type).

Vectorised: :meth:`AttNHP.encode` runs the events through the layers once (causal ``L x L``
attention) and keeps each layer's keys and values; :meth:`AttNHP.intensity_at` runs all queries
``[B, T]`` at once, each masked to the first ``index`` events (``B x T x L`` attention per layer and
head); with ``window`` set, every event and every query sees only the last ``window`` events before
it (events attend block by block, queries to their gathered window), so memory grows as ``B x T x
window`` and sequences of any length fit. The intensity depends on ``t`` through sinusoids whose fastest
period is ``2 pi`` model time units (the training data's mean gap is one), so the quadrature points per
interval (``num_points``) should grow with the longest gap in the data relative to the mean;
``compensator_error`` reports the error.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tpp.events import EventBatch
from tpp.neural.base import NeuralTPP
from tpp.neural.layers import MarkEmbedding, ScaledSoftplus, TemporalEncoding, sliding_window_attention
from tpp.options import Interval, check_params

__all__ = ["AttNHP"]


def attend_with_own_slot(q: Tensor, k: Tensor, v: Tensor, visible: Tensor, k_own: Tensor, v_own: Tensor) -> Tensor:
    """Softmax attention ``[..., T, D]`` of queries over visible keys ``[..., L, D]`` plus each query's own key.

    The own key differs per query, so it enters as one extra key whose score rides on an extra query
    coordinate and whose attention weight comes back in an extra value coordinate; the fused
    ``scaled_dot_product_attention`` then runs it (only the boolean ``T x L`` mask is materialised).
    """
    D = q.shape[-1]
    own_score = (q * k_own).sum(-1, keepdim=True)
    one = torch.zeros(D + 1, dtype=q.dtype, device=q.device)
    one[-1] = 1.0
    one = one.expand(*k.shape[:-2], 1, D + 1)
    k = torch.cat([F.pad(k, (0, 1)), one], -2)
    v = torch.cat([F.pad(v, (0, 1)), one], -2)
    visible = F.pad(visible, (0, 1), value=True)
    out = F.scaled_dot_product_attention(torch.cat([q, own_score], -1), k, v, attn_mask=visible, scale=1 / math.sqrt(D))
    return out[..., :D] + out[..., D:] * v_own


class AttNHP(NeuralTPP):
    """Attentive neural Hawkes process: continuous-time attention queried at the time being scored."""

    _constraints = {"num_heads": Interval(1, None, integer=True), "num_layers": Interval(1, None, integer=True),
                    "window": Interval(1, None, integer=True, none_ok=True)}

    def __init__(
        self,
        num_marks: int,
        hidden_size: int = 32,
        num_heads: int = 2,
        num_layers: int = 2,
        num_points: int = 16,
        time_size: int | None = None,
        window: int | None = None,
    ) -> None:
        super().__init__(num_marks, hidden_size, num_points)
        num_marks, hidden_size = self.num_marks, self.hidden_size  # checked ints (the base's __init__)
        check_params(self, num_heads=num_heads, num_layers=num_layers, window=window)
        self.window = window
        time_size = time_size or hidden_size + hidden_size % 2
        self.num_heads, self.num_layers = int(num_heads), int(num_layers)
        self.embedding = MarkEmbedding(num_marks, hidden_size)
        self.temporal = TemporalEncoding(time_size)
        # Query, key and value maps of every (layer, head) in one tensor, so that the heads run batched.
        bound = 1 / math.sqrt(hidden_size + time_size)
        shape = (num_layers, num_heads, hidden_size + time_size, 3 * hidden_size)
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_layers, num_heads, 3 * hidden_size).uniform_(-bound, bound))
        self.x0 = nn.Parameter(torch.zeros(hidden_size))
        self.head = nn.Linear(num_heads * hidden_size, num_marks)
        self.softplus = ScaledSoftplus(num_marks)

    def _qkv(self, layer: int, state: Tensor, time_emb: Tensor) -> list[Tensor]:
        """Queries, keys, values ``[B, heads, N, D]`` of states ``[B or 1, heads, N or 1, D]`` at times embedded ``[B, N, Dt]``.

        The affine map of ``[state, [[t]]]`` is split in two: the time part is one matrix product for
        all heads, and a state shared by all times (the queries' ``x^0``) is mapped once.
        """
        D, (B, N, Dt) = self.hidden_size, time_emb.shape
        weight = self.weight[layer]  # [heads, D + Dt, 3 D]
        from_time = time_emb @ weight[:, D:].transpose(0, 1).reshape(Dt, -1)
        from_time = from_time.view(B, N, self.num_heads, 3 * D).transpose(1, 2)
        out = torch.matmul(state, weight[:, :D]) + from_time + self.bias[layer][None, :, None]
        return out.split(D, -1)

    def _time_embedding(self, batch: EventBatch, t: Tensor) -> Tensor:
        # Differences in the batch's (float64) precision, then the model's dtype.
        return self.temporal((t - batch.t_start[:, None]).to(self.x0.dtype))

    def rate_biases(self) -> list[Tensor]:
        """The head's per-type offsets (see :meth:`NeuralTPP.initialise`)."""
        return [self.head.bias]

    def encode(self, batch: EventBatch) -> list[tuple[Tensor, Tensor]]:
        """Keys and values ``[B, heads, L, D]`` of the events at every layer.

        Event ``i`` attends to events ``0 .. i`` (``i`` being its own slot); padding comes last, so
        the causal mask alone keeps it out of every real event.
        """
        L = batch.max_length
        time_emb = self._time_embedding(batch, batch.time)
        state = torch.tanh(self.embedding(batch.mark, batch.mask).to(self.x0.dtype))
        state = state[:, None].expand(-1, self.num_heads, -1, -1)
        windowed = self.window is not None and L >= self.window
        causal = None if windowed else torch.ones(L, L, dtype=torch.bool, device=batch.device).tril()
        context = []
        for layer in range(self.num_layers):
            q, k, v = self._qkv(layer, state, time_emb)
            context.append((k, v))
            if layer + 1 < self.num_layers:
                attended = (sliding_window_attention(q, k, v, self.window) if windowed
                            else F.scaled_dot_product_attention(q, k, v, attn_mask=causal))
                state = state + torch.tanh(attended)
        return context

    def intensity_at(self, batch: EventBatch, context: list[tuple[Tensor, Tensor]], index: Tensor, t: Tensor) -> Tensor:
        B, T = t.shape
        time_emb = self._time_embedding(batch, t)
        state = self.x0.expand(1, self.num_heads, 1, -1)
        if self.window is not None and batch.max_length >= self.window:
            # Each query sees the last ``window`` events before it: gather them ([B, heads, T, W, D]) and
            # attend per query, so nothing of size T x L is formed.
            W = self.window
            slots = index[..., None] - W + torch.arange(W, device=t.device)  # [B, T, W]
            visible = (slots >= 0)[:, None, :, None, :]  # [B, 1, T, 1, W]
            flat = slots.clamp_min(0).reshape(B, 1, T * W, 1)
            for layer, (k, v) in enumerate(context):
                q, k_own, v_own = self._qkv(layer, state, time_emb)
                D = k.shape[-1]
                k_w, v_w = (x.gather(2, flat.expand(B, self.num_heads, T * W, D)).view(B, self.num_heads, T, W, D)
                            for x in (k, v))
                attended = attend_with_own_slot(q[..., None, :], k_w, v_w, visible, k_own[..., None, :],
                                                v_own[..., None, :])[..., 0, :]
                state = state + torch.tanh(attended)
            x = state.transpose(1, 2).reshape(B, T, self.num_heads * self.hidden_size)
            return self.softplus(self.head(x)).to(t.dtype)
        visible = (torch.arange(batch.max_length, device=t.device) < index[..., None])[:, None]  # [B, 1, T, L]
        for layer, (k, v) in enumerate(context):
            q, k_own, v_own = self._qkv(layer, state, time_emb)
            state = state + torch.tanh(attend_with_own_slot(q, k, v, visible, k_own, v_own))
        x = state.transpose(1, 2).reshape(B, T, self.num_heads * self.hidden_size)
        return self.softplus(self.head(x)).to(t.dtype)
