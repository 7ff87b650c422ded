"""FullyNN (Omi, Ueda & Aihara, NeurIPS 2019): a monotone network is the cumulative hazard.

After the ``n``-th event a GRU state ``h_n`` conditions a network ``Phi(tau | h_n)`` of the time
``tau`` since that event, with non-negative weights on every path from ``tau`` (softplus of free
parameters) and increasing activations (tanh), so it is non-decreasing in ``tau`` (Sec. 3.2). The
cumulative hazard is

``Lambda(tau | h) = Phi(tau) - Phi(0) + (r(h) + eps) tau / s``:

zero at ``tau = 0`` by construction (the original code leaves ``Phi(0) != 0``). The linear term is
one more non-negative path from ``tau`` (``r = softplus(v . h + b)``): a tanh network saturates, so
without it the hazard would fade to 0 at long gaps, the gap distribution would keep mass at
infinity and its mean (``predict``) would be infinite; with it the hazard tends to a learned floor,
like a Hawkes baseline. ``eps = 1e-6`` events per typical gap ``s`` keeps the intensity strictly
positive even where ``r`` underflows. The intensity is ``dLambda / dtau`` (eq. 9), carried through
the layers in forward mode alongside the value: exact, no ``autograd.grad`` needed (so it works
under ``torch.no_grad``), and training is ordinary backprop. The compensator of an interval is
exact: ``Lambda`` at its length.

Marks are drawn from ``softmax(W h_n)`` independently of the time, as in RMTPP:
``lambda_k(t) = lambda(t) p(k | h_n)``.

Time enters as ``u = log1p(tau / s)`` with ``s`` the geometric mean of the training gaps (Omi
standardises ``log tau``; ``log1p`` keeps ``u(0) = 0`` finite and the intensity smooth at 0), so the
model behaves the same in seconds or days. ``s`` is set once per model by :meth:`FullyNN.initialise`
(which the trainer calls before the first step); before it ``s = 1`` time unit, and no query ever sets it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tpp.compensator import interval_bounds
from tpp.events import EventBatch
from tpp.neural.base import NeuralTPP, training_sample
from tpp.neural.layers import RecurrentHistory, gather_state, log_softmax_last
from tpp.options import Interval, check_params

if TYPE_CHECKING:
    from tpp.stream import BatchSource

__all__ = ["FullyNN"]

_EPS = 1e-6  # intensity floor, in events per typical gap s


def _positive_init(fan_in: int, fan_out: int, shape: tuple[int, ...]) -> Tensor:
    """Raw values whose softplus is ``|Glorot uniform|`` (Omi's ``abs_glorot_uniform``)."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    w = torch.empty(shape).uniform_(-bound, bound).abs().clamp_min(1e-4)
    return torch.log(torch.expm1(w))


class FullyNN(NeuralTPP):
    """Fully neural network TPP: GRU history, monotone cumulative-hazard network, softmax marks."""

    _constraints = {"num_layers": Interval(1, None, integer=True)}
    own_time_scale = True  # standardises time itself (log1p(tau / s)): the base leaves its batches in data units

    def __init__(
        self,
        num_marks: int,
        hidden_size: int = 32,
        num_layers: int = 2,
        num_points: int = 16,
        embedding_size: int | None = None,
    ) -> None:
        super().__init__(num_marks, hidden_size, num_points)
        num_marks, hidden_size = self.num_marks, self.hidden_size  # checked ints (the base's __init__)
        check_params(self, num_layers=num_layers)
        self.history = RecurrentHistory(num_marks, hidden_size, embedding_size)
        self.mark_head = nn.Linear(hidden_size, num_marks)
        # Monotone network: h enters the first layer freely; every weight on a path from u is softplus(raw) >= 0.
        self.history_in = nn.Linear(hidden_size, hidden_size)
        self.time_in = nn.Parameter(_positive_init(1, hidden_size, (hidden_size,)))
        self.hidden_raw = nn.ParameterList(
            nn.Parameter(_positive_init(hidden_size, hidden_size, (hidden_size, hidden_size)))
            for _ in range(num_layers - 1)
        )
        self.hidden_bias = nn.ParameterList([nn.Parameter(torch.zeros(hidden_size)) for _ in range(num_layers - 1)])
        self.out_raw = nn.Parameter(_positive_init(hidden_size, 1, (hidden_size,)))
        self.rate_head = nn.Linear(hidden_size, 1)
        nn.init.constant_(self.rate_head.bias, -2.0)  # floor starts near 0.13 events per typical gap
        self.register_buffer("log_time_scale", torch.zeros((), dtype=torch.float64))
        self.register_buffer("standardised", torch.tensor(False))

    def initialise(self, train: EventBatch | BatchSource) -> FullyNN:
        """Set the time scale ``s`` to the geometric mean of the positive gaps of (a sample of) the training data,
        once per model (later calls keep it: the weights were learnt in that unit); returns self."""
        batch = training_sample(train)
        super().initialise(batch)
        if bool(self.standardised):
            return self
        gaps = batch.inter_event_times[batch.mask]
        gaps = gaps[gaps > 0]
        if gaps.numel():
            self.log_time_scale.fill_(float(torch.log(gaps.double()).mean()))
        self.standardised.fill_(True)
        return self

    def _time_feature(self, tau: Tensor) -> Tensor:
        return torch.log1p(tau * torch.exp(-self.log_time_scale.to(tau.dtype)))

    def encode(self, batch: EventBatch) -> Tensor:
        """``[B, L + 1, H]``: ``h0`` then the state after each event (inputs: mark and ``log1p(gap / s)``)."""
        gap = self._time_feature(batch.inter_event_times)
        return self.history(batch.mark, batch.mask, gap)

    def _network(self, h: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """Monotone network at ``u [...]`` given ``h [..., H]``: value and ``d/du`` (forward-mode, exact)."""
        w = F.softplus(self.time_in)
        z = torch.tanh(self.history_in(h) + u[..., None] * w)
        dz = (1 - z * z) * w
        for raw, bias in zip(self.hidden_raw, self.hidden_bias):
            weight = F.softplus(raw)
            z = torch.tanh(F.linear(z, weight, bias))
            dz = (1 - z * z) * F.linear(dz, weight)
        out = F.softplus(self.out_raw)
        return z @ out, dz @ out

    def _hazard(self, h: Tensor, tau: Tensor, cumulative: bool = True) -> tuple[Tensor | None, Tensor]:
        """Cumulative hazard ``Lambda(tau | h)`` (module docstring; skipped if not ``cumulative``) and the
        hazard ``dLambda / dtau``, each of the shape of ``tau``."""
        tau = tau.to(h.dtype)
        inv_scale = torch.exp(-self.log_time_scale).to(h.dtype)
        phi, dphi_du = self._network(h, torch.log1p(tau * inv_scale))
        floor = (F.softplus(self.rate_head(h))[..., 0] + _EPS) * inv_scale
        hazard = dphi_du * inv_scale / (1 + tau * inv_scale) + floor
        if not cumulative:
            return None, hazard
        phi0, _ = self._network(h, torch.zeros_like(tau))
        return phi - phi0 + floor * tau, hazard

    def _parts(self, states: Tensor, index: Tensor, batch: EventBatch) -> tuple[Tensor, Tensor, Tensor]:
        h = gather_state(states, index)
        t_last = torch.cat([batch.t_start[:, None], batch.time], 1).gather(1, index)
        return h, log_softmax_last(self.mark_head(h)), t_last

    def intensity_at(self, batch: EventBatch, context: Tensor, index: Tensor, t: Tensor) -> Tensor:
        h, log_marks, t_last = self._parts(context, index, batch)
        _, hazard = self._hazard(h, t - t_last, cumulative=False)
        return (hazard[..., None] * log_marks.exp()).to(t.dtype)

    def interval_ground_compensator(self, batch: EventBatch, context: Tensor, num_points: int | None = None,
                                    chunk_size: int | None = None) -> Tensor:
        """``[B, L + 1]``: the exact cumulative hazard of each interval; interval ``n``'s state is ``context[:, n]``
        (no quadrature: ``num_points`` and ``chunk_size`` do not apply)."""
        left, right, valid = interval_bounds(batch)
        cumulative, _ = self._hazard(context, right - left)
        return (cumulative * valid).to(batch.dtype)

    def interval_compensator(self, batch: EventBatch, context: Tensor, num_points: int | None = None,
                             chunk_size: int | None = None) -> Tensor:
        """``[B, L + 1, K]``: the ground compensator split over the marks by ``softmax(W h_n)`` (exact)."""
        marks = F.softmax(self.mark_head(context), -1)
        return self.interval_ground_compensator(batch, context)[..., None] * marks.to(batch.dtype)
