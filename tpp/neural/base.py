"""The shared skeleton of neural TPPs: a history encoder + an intensity head, written once.

A model implements two methods:

``encode(batch) -> context``
    whatever it precomputes from the events (hidden states after each event, keys and values for
    attention, ...), in one pass over the batch;
``intensity_at(batch, context, index, t) -> [B, T, K]``
    the intensity at times ``t [B, T]`` where ``index [B, T]`` is the number of events strictly
    before each ``t`` (0 = none: only ``t_start`` is known). A model must use events
    ``0 .. index - 1`` only: nothing at or after ``t`` may reach the intensity.

From these the base class derives, for every model the same way: ``intensity``, the event term
of the log-likelihood, the compensator by Gauss-Legendre quadrature on every inter-event interval
(``num_points`` nodes; ``tpp.compensator`` gives the error estimate), ``cumulative_intensity``,
and ``log_likelihood`` including the survival term on ``(last event, t_end]``. Models with a
closed-form compensator override :meth:`interval_compensator`; density models (intensity-free)
override :meth:`log_likelihood`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tpp.compensator import gauss_legendre, integrate_intervals, interval_bounds
from tpp.events import EventBatch
from tpp.neural.layers import gather_state
from tpp.process import PointProcess

__all__ = ["NeuralTPP", "StateTPP", "history_index"]


def history_index(batch: EventBatch, t: Tensor) -> Tensor:
    """``[B, T]`` number of events strictly before each time (ties excluded: they are not history)."""
    times = torch.where(batch.mask, batch.time, torch.full_like(batch.time, float("inf")))
    return torch.searchsorted(times.contiguous(), t.to(times.dtype).contiguous(), side="left")


class NeuralTPP(PointProcess):
    """Base of the neural models; see the module docstring for what a model implements."""

    #: Gauss-Legendre nodes per interval in the training loss (gradients on, training mode); ``None``
    #: means ``num_points``. Every other use (``compensator``, evaluation, scores) takes ``num_points``.
    #: Eight nodes integrate the smooth between-event intensities of these models to ~1e-4 and halve
    #: the cost of a training step; the test scores (with a fine integrator) show whether a model
    #: learnt to exploit the coarser rule.
    train_points: int | None = 8

    def __init__(self, num_marks: int, hidden_size: int, num_points: int = 16) -> None:
        super().__init__()
        if num_marks < 1 or hidden_size < 1:
            raise ValueError(f"num_marks and hidden_size must be >= 1, got {num_marks}, {hidden_size}")
        self.num_marks = int(num_marks)
        self.hidden_size = int(hidden_size)
        self.num_points = int(num_points)
        self.register_buffer("rates_initialised", torch.tensor(False))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Weights saved before the data-dependent start existed were trained: never re-initialise them.
        state_dict.setdefault(f"{prefix}rates_initialised", torch.tensor(True))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ data-dependent start
    def rate_biases(self) -> list[Tensor]:
        """Biases that set each type's intensity where the history says nothing (``[K]`` each, through a
        softplus): :meth:`fit_standardisation` starts them at the types' average rates. None by default."""
        return []

    def fit_standardisation(self, batch: EventBatch) -> NeuralTPP:
        """Start each type's intensity at its average rate in ``batch`` (its events / the observed time), once
        per model; the trainer calls it before the first step of a fresh run.

        Why: a softplus intensity starts at ``softplus(0) = 0.69`` events per unit of time for every type, so
        with many types or slow ones the untrained model expects hundreds of times too many events and a
        short run never recovers (quick likelihood table, NHP on wikipedia's 8227 types: -5561 nats per
        event before, -25.1 after; on mimic2's 75 types: -8.05 before, -2.47 after). Types absent from ``batch``
        start at 1% of the average type's rate. Returns self.
        """
        biases = self.rate_biases()
        if not biases or bool(self.rates_initialised):
            return self
        K = self.num_marks
        counts = torch.bincount(batch.mark[batch.mask].clamp(0, K - 1), minlength=K).double()
        exposure = float((batch.t_end - batch.t_start).double().sum())
        if exposure <= 0 or float(counts.sum()) == 0:
            return self
        rates = (counts + 0.01 * float(counts.sum()) / K) / exposure
        start = torch.where(rates > 20, rates, torch.log(torch.expm1(rates.clamp_max(20))))  # softplus^-1
        with torch.no_grad():
            for bias in biases:
                bias.copy_(start.to(bias))
        self.rates_initialised.fill_(True)
        return self

    # ------------------------------------------------------------------ to implement
    @abc.abstractmethod
    def encode(self, batch: EventBatch) -> Any:
        """Whatever the model precomputes from the events of ``batch`` (one pass)."""

    @abc.abstractmethod
    def intensity_at(self, batch: EventBatch, context: Any, index: Tensor, t: Tensor) -> Tensor:
        """``[B, T, K]`` at times ``t`` from the first ``index [B, T]`` events only."""

    # ------------------------------------------------------------------ derived
    def _prepare(self, batch: EventBatch) -> EventBatch:
        param = next(self.parameters(), None)
        if param is not None and (batch.device != param.device):
            batch = batch.to(param.device)
        self.check_marks(batch)
        return batch

    def intensity(self, batch: EventBatch, t: Tensor) -> Tensor:
        batch = self._prepare(batch)
        t = t.to(device=batch.device, dtype=batch.dtype)
        return self.intensity_at(batch, self.encode(batch), history_index(batch, t), t)

    def event_log_intensity(self, batch: EventBatch, context: Any) -> Tensor:
        """``[B, L]`` log intensity of each event's own mark at its time (0 on padding)."""
        index = history_index(batch, batch.time)
        log_lam = self.log_intensity_at(batch, context, index, batch.time)
        log_event = log_lam.gather(-1, batch.mark.clamp(0, self.num_marks - 1)[..., None])[..., 0]
        return torch.where(batch.mask, log_event, 0.0)

    def log_intensity_at(self, batch: EventBatch, context: Any, index: Tensor, t: Tensor) -> Tensor:
        """``[B, T, K]`` log of :meth:`intensity_at`; models whose intensity can underflow (an
        exponential or a softplus far in its tail) override it with a log-space form."""
        return torch.log(self.intensity_at(batch, context, index, t))

    def interval_compensator(self, batch: EventBatch, context: Any) -> Tensor:
        """``[B, L + 1, K]`` integral of each mark's intensity over each inter-event interval.

        Gauss-Legendre with ``self.num_points`` nodes per interval; inside interval ``n`` the history
        is the first ``n`` events, so one call of ``intensity_at`` covers every node.
        """
        left, right, valid = interval_bounds(batch)
        nodes, weights = gauss_legendre(left, right, self.num_points)  # [B, L + 1, P]
        B, I, P = nodes.shape
        index = torch.arange(I, device=batch.device)[None, :, None].expand(B, I, P)
        lam = self.intensity_at(batch, context, index.reshape(B, I * P), nodes.reshape(B, I * P)).reshape(B, I, P, -1)
        return (lam * weights[..., None]).sum(2) * valid[..., None]

    def interval_ground_compensator(self, batch: EventBatch, context: Any) -> Tensor:
        """``[B, L + 1]`` integral of the total intensity (all marks) over each inter-event interval.

        The likelihood needs only this sum; models whose marks come from a softmax independent of the
        time (RMTPP) override it with a closed form that never splits the total over the marks.
        """
        return self.interval_compensator(batch, context).sum(-1)

    def log_likelihood(self, batch: EventBatch) -> Tensor:
        """``[B]``: event terms minus the compensator over the whole window (survival term included)."""
        batch = self._prepare(batch)
        context = self.encode(batch)
        training = self.training and torch.is_grad_enabled() and self.train_points
        points = min(self.train_points, self.num_points) if training else None
        ground = self._intervals(batch, context, points, self.interval_ground_compensator)
        return self.event_log_intensity(batch, context).sum(1) - ground.sum(1)

    def _intervals(self, batch: EventBatch, context: Any, num_points: int | None,
                   method: Callable[[EventBatch, Any], Tensor] | None = None) -> Tensor:
        method = method or self.interval_compensator
        if num_points is None:
            return method(batch, context)
        saved, self.num_points = self.num_points, num_points  # closed-form overrides ignore it
        try:
            return method(batch, context)
        finally:
            self.num_points = saved

    def compensator(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        batch = self._prepare(batch)
        return self._intervals(batch, self.encode(batch), num_points, self.interval_ground_compensator).sum(1)

    def cumulative_intensity(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        batch = self._prepare(batch)
        return self._intervals(batch, self.encode(batch), num_points).cumsum(1)[:, :-1]

    def sample(
        self,
        n: int,
        t_end: float,
        history: EventBatch | None = None,
        generator: int | np.random.Generator | torch.Generator | None = None,
        t_start: float = 0.0,
    ) -> EventBatch:
        """Sequences from the shared thinning sampler (:func:`tpp.sampling.thinning_sample`)."""
        from tpp.sampling import thinning_sample

        batch, self.sampling_stats_ = thinning_sample(self, n, t_end, history, generator, t_start)
        return batch

    def compensator_error(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        """``[B]`` estimated quadrature error of the compensator (difference with half the nodes)."""
        batch = self._prepare(batch)
        context = self.encode(batch)

        def fn(b: EventBatch, t: Tensor) -> Tensor:
            return self.intensity_at(b, context, history_index(b, t), t)

        return integrate_intervals(fn, batch, num_points or self.num_points).error.sum((1, 2))


class StateTPP(NeuralTPP):
    """A neural TPP whose intensity on ``(t_n, t_{n+1}]`` depends only on a state left by event ``n``
    and the time since it (NHP, SAHP): ``encode`` returns the states ``[B, L + 1, S]`` (state 0 at
    ``t_start``), and the model implements :meth:`intensity_after`.

    The compensator then broadcasts each interval's state over its quadrature nodes instead of
    gathering it per node, which halves a training step (the gather's backward is a scatter).
    """

    @abc.abstractmethod
    def intensity_after(self, state: Tensor, dt: Tensor) -> Tensor:
        """``[..., K]`` intensity a time ``dt [...]`` (float64; cast differences, not absolute times)
        after the event whose state is ``state [..., S]``."""

    def intensity_at(self, batch: EventBatch, context: Tensor, index: Tensor, t: Tensor) -> Tensor:
        t_last = torch.cat([batch.t_start[:, None], batch.time], 1).gather(1, index)
        return self.intensity_after(gather_state(context, index), t - t_last).to(t.dtype)

    def interval_compensator(self, batch: EventBatch, context: Tensor) -> Tensor:
        left, right, valid = interval_bounds(batch)
        return self.integrate_after(context, right - left).to(batch.dtype) * valid[..., None]

    def integrate_after(self, state: Tensor, tau: Tensor) -> Tensor:
        """``[B, I, K]``: ``intensity_after(state, s)`` integrated over ``s in [0, tau]`` (``state [B, I, S]``,
        ``tau [B, I]``) by the ``num_points`` Gauss-Legendre rule. Models may override it with a fused kernel
        of the same rule (:mod:`tpp.neural._kernels`)."""
        offsets, weights = gauss_legendre(torch.zeros_like(tau), tau, self.num_points)  # [B, I, P]
        lam = self.intensity_after(state[:, :, None, :], offsets)
        return (lam * weights[..., None]).sum(2)
