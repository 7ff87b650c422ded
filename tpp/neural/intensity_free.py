"""IntensityFree (Shchur, Bilos & Guennemann, ICLR 2020): a log-normal mixture for the next gap.

After the ``n``-th event a GRU state ``h_n`` gives the distribution of the next gap ``tau``: with
``x = (log tau - m) / d`` (``m``, ``d``: mean and std of ``log tau`` in the training data, App. D.2;
we standardise ``log tau``, not ``tau``), ``x`` is a mixture of normals with weights ``w_c``, means
``mu_c`` and scales ``s_c`` from ``h_n`` (eq. 6). Marks come from ``softmax(W h_n)``, independent
of the gap. The log-likelihood is exact and keeps the survival term that is easy to forget:

``sum_n [log p(tau_n | h_{n-1}) + log p(k_n | h_{n-1})] + log S(t_end - t_L | h_L)``,

``S(tau) = sum_c w_c Phi((mu_c - x) / s_c)`` evaluated in log space with ``log_ndtr``. The same
quantities give the protocol's intensity (hazard ``p / S`` times ``p(k)``) and an exact
compensator (``-log S`` per interval). Sampling is exact: component, normal draw, ``exp``, mark;
a continued history draws its first gap conditioned on the quiet time since its last event.

``m`` and ``d`` are buffers set once per model by :meth:`IntensityFree.initialise` (which the trainer
calls before the first step); before it ``m = 0`` and ``d = 1`` (``log tau`` in the data's own time
unit), and no query ever sets them.

Ties (events at the same time) follow the project's rule (ARCHITECTURE.md, "Ties"): an event's history
is the events strictly earlier in time. Event ``n`` of a group tied at ``t`` is scored from the state
``h_g`` after the ``g`` events before ``t``, with the gap ``tau = t - t_{g-1}`` from the last strictly
earlier time (``t_start`` if none): the group's first event by the density ``log p(tau | h_g)``, every
further one by the hazard ``log p(tau | h_g) - log S(tau | h_g)`` (the intensity at ``t`` given the
strictly earlier events, as in every intensity model), each with its mark's ``log p(k | h_g)``. A
log-normal puts no density at a gap of 0, so flooring a tie's zero gap would score it by the density
of ``1e-10`` (a data set with ties lost or, once trained, bought nats per event there). The RNN reads
each event's mark and this same gap, so a tied event's input is finite and the state after a group
has read all of its events. ``m`` and ``d`` come from the positive gaps only. The one gap that is
still 0 is an event exactly at ``t_start``: it is read as ``1e-10`` (``_MIN_GAP``), in the density,
the hazard and the RNN input alike.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tpp.compensator import interval_bounds
from tpp.events import EventBatch
from tpp.model import Seed
from tpp.neural.base import NeuralTPP, check_accuracy, history_index, training_sample
from tpp.neural.layers import RecurrentHistory, gather_state, log_softmax_last
from tpp.options import Interval, check_params
from tpp.process import Prediction, as_numpy_rng

if TYPE_CHECKING:
    from tpp.stream import BatchSource

__all__ = ["IntensityFree"]

_MIN_GAP = 1e-10  # an event exactly at t_start (no earlier time to measure from) is read as this gap
_LOG_SCALE_BOUND = 4.0  # component scales s_c in (e^-4, e^4) standardised units, bounded smoothly


class IntensityFree(NeuralTPP):
    """Intensity-free TPP: GRU history, log-normal mixture of the next gap, softmax marks."""

    own_time_scale = True  # standardises log tau itself (eq. 6 inputs): the base leaves its batches in data units

    _constraints = {"num_mixtures": Interval(1, None, integer=True)}

    def __init__(
        self,
        num_marks: int,
        hidden_size: int = 32,
        num_mixtures: int = 8,
        num_points: int = 16,
        embedding_size: int | None = None,
    ) -> None:
        super().__init__(num_marks, hidden_size, num_points)
        num_marks, hidden_size = self.num_marks, self.hidden_size  # checked ints (the base's __init__)
        check_params(self, num_mixtures=num_mixtures)
        self.num_mixtures = int(num_mixtures)
        self.history = RecurrentHistory(num_marks, hidden_size, embedding_size)
        self.mixture_head = nn.Linear(hidden_size, 3 * num_mixtures)
        self.mark_head = nn.Linear(hidden_size, num_marks)
        self.register_buffer("log_tau_mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("log_tau_std", torch.ones((), dtype=torch.float64))
        self.register_buffer("standardised", torch.tensor(False))

    # ------------------------------------------------------------------ standardisation
    def initialise(self, train: EventBatch | BatchSource) -> IntensityFree:
        """Set ``m``, ``d`` to the mean and std of ``log tau`` over the positive gaps of (a sample of) the training
        data, once per model (later calls keep them: the weights were learnt in those units); returns self."""
        batch = training_sample(train)
        super().initialise(batch)
        if bool(self.standardised):
            return self
        gaps = batch.inter_event_times[batch.mask]
        log_gaps = torch.log(gaps[gaps > 0].double())
        if log_gaps.numel():
            self.log_tau_mean.fill_(float(log_gaps.mean()))
        if log_gaps.numel() > 1:
            self.log_tau_std.fill_(max(float(log_gaps.std()), 1e-3))
        self.standardised.fill_(True)
        return self

    def _standardise(self, tau: Tensor) -> Tensor:
        """``(log tau - m) / d`` in the model's dtype."""
        log_tau = torch.log(tau)
        return ((log_tau - self.log_tau_mean.to(tau.dtype)) / self.log_tau_std.to(tau.dtype)).to(self.history.h0.dtype)

    # ------------------------------------------------------------------ the model
    @staticmethod
    def _strict_gaps(batch: EventBatch) -> tuple[Tensor, Tensor]:
        """``index [B, L]`` (events strictly before each event: ``n`` for the first of a tie group, the group's
        first position for the others) and ``tau [B, L]``, the gap from the last strictly earlier time
        (``t_start`` for none), a gap of 0 (only at ``t_start``) read as ``_MIN_GAP``; 1 on padding."""
        index = history_index(batch, batch.time)
        t_prev = torch.cat([batch.t_start[:, None], batch.time], 1).gather(1, index)
        gap = batch.time - t_prev
        tau = torch.where(batch.mask, torch.where(gap > 0, gap, _MIN_GAP), 1.0)
        return index, tau

    def encode(self, batch: EventBatch) -> Tensor:
        """``[B, L + 1, H]``: ``h0`` then the state after each event (inputs: mark and standardised ``log tau``,
        ``tau`` measured from the last strictly earlier time, so a tied event reads its group's gap)."""
        _, tau = self._strict_gaps(batch)
        return self.history(batch.mark, batch.mask, self._standardise(tau))

    def _mixture(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Log weights, means and log scales ``[..., C]`` of the standardised ``log tau``."""
        raw = self.mixture_head(h)
        log_w, mu, raw_s = raw.split(self.num_mixtures, -1)
        log_s = _LOG_SCALE_BOUND * torch.tanh(raw_s / _LOG_SCALE_BOUND)
        return log_softmax_last(log_w), mu, log_s

    def _log_density(self, x: Tensor, tau: Tensor, mixture: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """``log p(tau | h)`` for ``tau > 0`` with standardised ``x [...]`` and ``z [..., C]`` per component."""
        log_w, mu, log_s = mixture
        z = (x[..., None] - mu) * torch.exp(-log_s)
        log_normal = -0.5 * z * z - log_s
        # Change of variables tau -> x: dx/dtau = 1 / (d tau).
        log_jacobian = (torch.log(tau) + torch.log(self.log_tau_std.to(tau.dtype))).to(z.dtype)
        return torch.logsumexp(log_w + log_normal, -1) - (log_jacobian + 0.5 * math.log(2 * math.pi)), z

    def _log_density_survival(self, h: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
        """``log p(tau | h)`` and ``log S(tau | h)``, shape of ``tau``; ``tau = 0`` gives ``S = 1`` exactly (a
        zero-length interval costs nothing) and the density at ``_MIN_GAP`` (only an event at ``t_start``
        is scored at a zero gap)."""
        positive = tau > 0
        floored = torch.where(positive, tau, _MIN_GAP)  # exact for tau > 0; no inf/nan gradients at 0
        mixture = self._mixture(h)
        log_p, z = self._log_density(self._standardise(floored), floored, mixture)
        log_surv = torch.logsumexp(mixture[0] + torch.special.log_ndtr(-z), -1)
        return log_p, torch.where(positive, log_surv, 0.0)

    def _parts(self, states: Tensor, index: Tensor, batch: EventBatch) -> tuple[Tensor, Tensor, Tensor]:
        h = gather_state(states, index)
        t_last = torch.cat([batch.t_start[:, None], batch.time], 1).gather(1, index)
        return h, log_softmax_last(self.mark_head(h)), t_last

    def intensity_at(self, batch: EventBatch, context: Tensor, index: Tensor, t: Tensor) -> Tensor:
        """Hazard ``p(tau) / S(tau)`` times ``p(k)``, in log space."""
        h, log_marks, t_last = self._parts(context, index, batch)
        log_p, log_surv = self._log_density_survival(h, t - t_last)
        return torch.exp((log_p - log_surv)[..., None] + log_marks).to(t.dtype)

    def interval_compensator(self, batch: EventBatch, context: Tensor, num_points: int | None = None,
                             chunk_size: int | None = None) -> Tensor:
        """``-log S(interval length | h) p(k | h)`` for each interval: the exact integral of the intensity (no
        quadrature: ``num_points`` and ``chunk_size`` do not apply)."""
        left, right, valid = interval_bounds(batch)
        index = torch.arange(left.shape[1], device=batch.device).expand_as(left)
        h, log_marks, _ = self._parts(context, index, batch)
        _, log_surv = self._log_density_survival(h, right - left)
        return (-log_surv[..., None] * log_marks.exp() * valid[..., None]).to(batch.dtype)

    def log_likelihood(self, batch: EventBatch, num_points: int | None = None,
                       chunk_size: int | None = None) -> Tensor:
        """``[B]`` exact: gap densities and mark probabilities of every event plus ``log S`` of the last, open gap
        (no quadrature: ``num_points`` and ``chunk_size`` are accepted for the common signature and not used).

        A tied event after the first of its group is scored by the hazard ``log p - log S`` of the group's gap
        from the state before the group (module docstring, ties)."""
        check_accuracy(num_points, chunk_size)
        batch = self._prepare(batch)
        states = self.encode(batch)
        index, tau = self._strict_gaps(batch)
        h_before = gather_state(states, index)  # the state after the events strictly before each event
        mixture = self._mixture(h_before)
        log_p, z = self._log_density(self._standardise(tau), tau, mixture)
        tied = index < torch.arange(batch.max_length, device=batch.device)  # not the first event at its time
        log_surv = torch.logsumexp(mixture[0] + torch.special.log_ndtr(-z), -1)  # no branch: no device sync
        log_p = log_p - torch.where(tied, log_surv, 0.0)
        log_mark = log_softmax_last(self.mark_head(h_before)).gather(-1, batch.mark[..., None])[..., 0]
        events = torch.where(batch.mask, log_p + log_mark, 0.0).sum(1)
        lengths = batch.lengths
        last_time = torch.cat([batch.t_start[:, None], batch.time], 1).gather(1, lengths[:, None])[:, 0]
        h_last = states.gather(1, lengths[:, None, None].expand(-1, 1, states.shape[-1]))[:, 0]
        _, log_surv = self._log_density_survival(h_last, batch.t_end - last_time)
        return (events + log_surv).to(batch.dtype)

    # ------------------------------------------------------------------ exact forecast
    @torch.no_grad()
    def predict(self, batch: EventBatch, quantiles=(0.1, 0.5, 0.9), max_horizon: float | None = None,
                **_: object) -> Prediction:
        """Next event after each window end, exactly from the mixture (no quadrature).

        Given the quiet time ``s = t_end - t_last``, the next gap is ``tau | s < tau < G`` with
        ``G = s + max_horizon`` (default: 100 times the longest window of the batch), the protocol's
        convention (:meth:`tpp.process.PointProcess.predict`): a log-normal mixture can put mass so far
        out that its unconditional mean is astronomically large. With ``log tau ~ sum_c w_c N(a_c, b_c^2)``
        (``a_c = m + d mu_c``, ``b_c = d s_c``) the truncated log-normal moment is
        ``w_c exp(a_c + b_c^2 / 2) [Phi((log G - a_c - b_c^2) / b_c) - Phi((log s - a_c - b_c^2) / b_c)]``,
        divided by ``S(s) - S(G)``; quantiles solve ``S(tau) = S(s) - q (S(s) - S(G))`` by bisection on
        ``log tau``. Marks are independent of the gap: ``softmax(W h)``.
        """
        batch = self._prepare(batch)
        states = self.encode(batch)
        lengths = batch.lengths
        h = states.gather(1, lengths[:, None, None].expand(-1, 1, states.shape[-1]))[:, 0]
        last = torch.cat([batch.t_start[:, None], batch.time], 1).gather(1, lengths[:, None])[:, 0]
        quiet = (batch.t_end - last).double()
        if max_horizon is None:
            max_horizon = 100.0 * float((batch.t_end - batch.t_start).max().clamp_min(1e-9))
        log_w, mu, log_s = (part.double() for part in self._mixture(h))
        a = self.log_tau_mean.double() + self.log_tau_std.double() * mu  # mixture of log tau, [B, C]
        b = self.log_tau_std.double() * torch.exp(log_s)
        log_low = torch.log(quiet.clamp_min(1e-300))[:, None]  # -690 for s = 0: Phi(-inf) = 0 in effect
        log_high = torch.log(quiet + max_horizon)[:, None]

        def log_mass(lo: Tensor, hi: Tensor) -> Tensor:
            """``log(Phi(hi) - Phi(lo))``, from the tail where it is accurate."""
            upper = lo > 0  # both in the upper tail: Phi(-lo) - Phi(-hi) keeps the digits
            big = torch.special.log_ndtr(torch.where(upper, -lo, hi))
            small = torch.special.log_ndtr(torch.where(upper, -hi, lo))
            return big + torch.log1p(-torch.exp((small - big).clamp_max(0.0)))

        log_prob = torch.logsumexp(log_w + log_mass((log_low - a) / b, (log_high - a) / b), -1)  # P(s < tau < G)
        log_moment = torch.logsumexp(
            log_w + a + 0.5 * b * b + log_mass((log_low - a - b * b) / b, (log_high - a - b * b) / b), -1)
        mean_gap = torch.exp(log_moment - log_prob)

        def survival(log_tau: Tensor) -> Tensor:  # [B, Q] -> [B, Q]
            z = (log_tau[..., None] - a[:, None, :]) / b[:, None, :]
            return (torch.exp(log_w)[:, None, :] * torch.special.ndtr(-z)).sum(-1)

        levels = torch.as_tensor(quantiles, dtype=torch.float64, device=h.device)
        s_low, s_high = survival(log_low), survival(log_high)
        target = s_low - levels[None, :] * (s_low - s_high)
        low = log_low.expand_as(target).clone()
        high = log_high.expand_as(target).clone()
        for _ in range(80):  # bisection on log tau: S is decreasing
            mid = 0.5 * (low + high)
            above = survival(mid) > target
            low, high = torch.where(above, mid, low), torch.where(above, high, mid)
        gap_quantiles = torch.exp(0.5 * (low + high))
        mark_probs = F.softmax(self.mark_head(h), -1).to(batch.dtype)
        start = last.to(batch.dtype)
        return Prediction(start + mean_gap.to(batch.dtype), start[:, None] + gap_quantiles.to(batch.dtype),
                          levels.to(batch.dtype), mark_probs)

    # ------------------------------------------------------------------ exact sampling
    @torch.no_grad()
    def sample(
        self,
        n: int,
        t_end: float,
        history: EventBatch | None = None,
        generator: Seed = None,
        t_start: float = 0.0,
        max_events: int = 100_000,
    ) -> EventBatch:
        """Exact simulation of ``n`` sequences on ``[t_start, t_end]``, all advanced one event per step.

        With ``history`` (``n`` must equal its number of sequences) each sequence continues from its
        ``history.t_end`` and is returned with the history's events; its first new gap is drawn
        given that none came in the quiet time since the last history event: component ``c`` with
        probability ``w_c S_c(quiet) / S(quiet)``, then the normal truncated to ``x > x_quiet`` by
        inverting its upper tail. ``max_events`` bounds the new events per sequence.
        """
        gen = torch.Generator(device=self.history.h0.device).manual_seed(int(as_numpy_rng(generator).integers(0, 2**62)))
        dtype, device = torch.float64, self.history.h0.device
        if history is not None:
            if len(history) != n:
                raise ValueError(f"n={n} but the history has {len(history)} sequences")
            history = self._prepare(history).to(dtype=dtype)
            states = self.encode(history)
            lengths = history.lengths
            h = states.gather(1, lengths[:, None, None].expand(-1, 1, states.shape[-1]))[:, 0]
            t_last = torch.cat([history.t_start[:, None], history.time], 1).gather(1, lengths[:, None])[:, 0]
            # The last strictly earlier time before the history's last event (its tie group's gap origin).
            group = history_index(history, t_last[:, None])[:, 0]
            t_prev = torch.cat([history.t_start[:, None], history.time], 1).gather(1, group[:, None])[:, 0]
            now, t0 = history.t_end.clone(), history.t_start.clone()
        else:
            h = self.history.h0.expand(n, -1)
            now = torch.full((n,), float(t_start), dtype=dtype, device=device)
            t_last, t0, t_prev = now.clone(), now.clone(), now.clone()
        ends = torch.as_tensor(t_end, dtype=dtype, device=device).expand(n).clone()
        if bool((ends < now).any()):
            raise ValueError("t_end must not be before the start of the simulation")
        alive = torch.ones(n, dtype=torch.bool, device=device)
        times, marks = [], []
        for _ in range(max_events):
            log_w, mu, log_s = self._mixture(h)
            quiet = now - t_last  # > 0 only on the first step of a continued history
            x_quiet = torch.where(quiet > 0, self._standardise(quiet), -math.inf)[:, None]
            # log P(x > x_quiet | c) per component: posterior weights and the tail left to sample from.
            log_tail = torch.special.log_ndtr((mu - x_quiet) * torch.exp(-log_s))
            c = torch.multinomial(torch.softmax(log_w + log_tail, -1), 1, generator=gen)
            mu_c, s_c, tail_c = (v.gather(-1, c)[:, 0].to(dtype) for v in (mu, log_s.exp(), log_tail))
            v = torch.rand(n, generator=gen, dtype=dtype, device=device).clamp_min(1e-300)
            x = mu_c - s_c * torch.special.ndtri(v * tail_c.exp())  # upper tail of N(mu_c, s_c) beyond x_quiet
            log_tau = x * self.log_tau_std.to(dtype) + self.log_tau_mean.to(dtype)
            t_new = t_last + torch.exp(log_tau)
            mark = torch.multinomial(torch.softmax(self.mark_head(h), -1), 1, generator=gen)[:, 0]
            alive = alive & (t_new <= ends)
            if not bool(alive.any()):
                break
            times.append(torch.where(alive, t_new, math.inf))
            marks.append(mark)
            # As encode() reads it: the gap from the last strictly earlier time (a draw that rounds onto
            # t_last is a tie and reads its group's gap).
            t_prev = torch.where(alive & (t_new > t_last), t_last, t_prev)
            gap = t_new - t_prev
            gap = torch.where(gap > 0, gap, _MIN_GAP)
            h = torch.where(alive[:, None], self.history.step(mark, self._standardise(gap), h), h)
            t_last = torch.where(alive, t_new, t_last)
            now = t_last
        else:
            if bool(alive.any()):
                from tpp.process import SamplingBudgetError

                i = int(torch.nonzero(alive)[0, 0])
                raise SamplingBudgetError(
                    f"{type(self).__name__}.sample stopped at max_events={max_events} new events per sequence: "
                    f"{int(alive.sum())} of {n} sequences unfinished, sequence {i} reached t={float(t_last[i]):.6g} of "
                    f"t_end={float(ends[i]):.6g}. Pass a larger max_events= or a shorter t_end")
        return self._assemble(times, marks, t0, ends, history)

    def _assemble(
        self, times: list[Tensor], marks: list[Tensor], t0: Tensor, ends: Tensor, history: EventBatch | None
    ) -> EventBatch:
        """Sampled steps ``[n, S]`` (``inf`` past the end) behind each history's events, as one batch."""
        n = t0.shape[0]
        new_t = torch.stack(times, 1).cpu().numpy() if times else np.zeros((n, 0))
        new_m = torch.stack(marks, 1).cpu().numpy() if marks else np.zeros((n, 0), np.int64)
        seqs = history.sequences() if history is not None else [(np.zeros(0), np.zeros(0, np.int64))] * n
        out_t, out_m = [], []
        for b, (ht, hm) in enumerate(seqs):
            keep = np.isfinite(new_t[b])
            out_t.append(np.concatenate([ht, new_t[b][keep]]))
            out_m.append(np.concatenate([hm, new_m[b][keep]]))
        return EventBatch.from_sequences(
            out_t, out_m, t_start=t0.cpu().numpy(), t_end=ends.cpu().numpy(), num_marks=self.num_marks
        )
