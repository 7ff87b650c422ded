"""SAHP, the self-attentive Hawkes process (Zhang, Lipani, Kirnap & Yilmaz, ICML 2020).

Each event is embedded as its mark plus a time-shifted positional encoding
``sin / cos(n omega_i + w_i tau_n)`` of its position ``n`` and the gap ``tau_n`` before it, with
learned ``w`` (sec. 3.2; the gap, and ``w ~ U(-1, 1)`` at initialisation, as in the authors' code).
A learned begin-of-sequence input at ``t_start`` takes position 0, as in the authors' code. Causal
multi-head self-attention (pre-norm transformer layers; a GELU feed-forward of width
``feedforward_size``, default ``4 H`` as in the authors' code, 0 for none as in EasyTPP's SAHP;
``window`` bounds how many positions each one attends to, for long sequences in O(L window)
memory) gives a hidden state ``h_n`` at position
``n`` that sees the start input and events ``1 .. n`` only (within the window); ``h_0`` is the
learned start state. From ``h_n`` come, per type ``k``, a baseline ``mu``, a start value ``eta``
and a decay ``gamma > 0`` (eqs. 12-14), and on ``(t_n, t_{n+1}]``

    ``lambda_k(t) = softplus(mu_k + (eta_k - mu_k) exp(-gamma_k (t - t_n)))``     (eq. 15).

``mu`` and ``eta`` are linear in ``h_n``: the paper's GELU would floor every intensity near
``softplus(-0.17) = 0.61``, too high for slow processes. The compensator is the Gauss-Legendre
rule of :class:`NeuralTPP` per interval.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tpp.events import EventBatch
from tpp.neural.base import StateTPP
from tpp.neural._quadrature import sahp_interval_integral
from tpp.neural.layers import CausalAttentionLayer, MarkEmbedding

__all__ = ["SAHP"]


class TimeShiftedEncoding(nn.Module):
    """``sin / cos(n omega_i + w_i tau)``: the position's sinusoid shifted by a learned multiple of the gap (SAHP sec. 3.2)."""

    def __init__(self, dim: int, max_period: float = 10000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"the time-shifted encoding needs an even dimension, got {dim}")
        self.register_buffer("freqs", torch.exp(-math.log(max_period) * torch.arange(0, dim, 2) / dim), persistent=False)
        # U(-1, 1), the default init of the authors' ``nn.Linear(1, dim / 2, bias=False)`` (and EasyTPP's):
        # a gap of about one time unit turns each sinusoid by up to a radian at the start, where the former
        # N(0, 1 / (dim / 2)) gave a weak gap signal the encoder learned to use only slowly (0.006 nats per
        # event worse test log-likelihood on a 3-type Hawkes benchmark after 10 epochs).
        self.gap_weight = nn.Parameter(torch.rand(dim // 2) * 2.0 - 1.0)

    def forward(self, gaps: Tensor) -> Tensor:
        """``gaps [B, L]`` (in the model's dtype) -> ``[B, L, dim]``."""
        position = torch.arange(gaps.shape[1], device=gaps.device, dtype=gaps.dtype)
        angles = position[:, None] * self.freqs.to(gaps.dtype) + gaps[..., None] * self.gap_weight
        return torch.cat([torch.sin(angles), torch.cos(angles)], -1)


class SAHP(StateTPP):
    """Self-attentive Hawkes process: causal attention history, exponentially relaxing softplus intensity."""

    def __init__(
        self, num_marks: int, hidden_size: int = 32, num_heads: int = 2, num_layers: int = 2, num_points: int = 16,
        feedforward_size: int | None = None, window: int | None = None,
    ) -> None:
        super().__init__(num_marks, hidden_size, num_points)
        num_marks, hidden_size = self.num_marks, self.hidden_size  # checked ints (the base's __init__)
        self.embedding = MarkEmbedding(num_marks, hidden_size)
        self.time_encoding = TimeShiftedEncoding(hidden_size)
        feedforward = 4 * hidden_size if feedforward_size is None else feedforward_size
        self.layers = nn.ModuleList(
            CausalAttentionLayer(hidden_size, num_heads, feedforward, norm_first=True, window=window)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(hidden_size)
        self.start = nn.Parameter(torch.randn(hidden_size) / math.sqrt(hidden_size))  # begin-of-sequence input
        self.head = nn.Linear(hidden_size, 3 * num_marks)  # mu, eta, gamma per type

    def rate_biases(self) -> list[Tensor]:
        """The head's per-type offsets (see :meth:`NeuralTPP.initialise`)."""
        K = self.num_marks
        return [self.head.bias[:K], self.head.bias[K : 2 * K]]  # mu, eta: the rate long after / right after an event

    def encode(self, batch: EventBatch) -> Tensor:
        """``[B, L + 1, 3K]``: ``(mu, eta, gamma)`` of the start state (index 0) and after each event.

        The sequence is ``[start, event 1, ..., event L]``; position ``n`` attends to positions
        ``<= n``. Padding comes after the events, so no event attends to it.
        """
        dtype = self.start.dtype
        B = batch.time.shape[0]
        x = torch.cat([self.start.expand(B, 1, -1), self.embedding(batch.mark, batch.mask)], 1)
        gaps = torch.cat([batch.t_start.new_zeros(B, 1), batch.inter_event_times], 1)
        x = x + self.time_encoding(gaps.to(dtype))  # cast the differences, not the times
        for layer in self.layers:
            x = layer(x)
        mu, eta, gamma = self.head(self.norm(x)).chunk(3, -1)
        return torch.cat([mu, eta, F.softplus(gamma)], -1)

    def integrate_after(self, state: Tensor, tau: Tensor, num_points: int | None = None) -> Tensor:
        """The Gauss-Legendre compensator of eq. 15 in one compiled pass on CPU (the base class's rule elsewhere)."""
        points = self.quadrature_points(num_points)
        fused = sahp_interval_integral(state, tau, points)
        return super().integrate_after(state, tau, points) if fused is None else fused

    def intensity_after(self, params: Tensor, dt: Tensor) -> Tensor:
        """``[..., K]`` intensity a time ``dt [...]`` (float64) after the event with ``params [..., 3K]`` (eq. 15)."""
        mu, eta, gamma = params.chunk(3, -1)
        decay = torch.exp(-gamma * dt.to(mu.dtype)[..., None])
        return F.softplus(mu + (eta - mu) * decay)
