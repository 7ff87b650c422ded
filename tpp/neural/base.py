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
(``num_points`` nodes; :meth:`NeuralTPP.compensator_error` estimates the error), ``cumulative_intensity``,
and ``log_likelihood`` including the survival term on ``(last event, t_end]``. Models with a
closed-form compensator override :meth:`NeuralTPP.interval_compensator`; density models
(intensity-free) override :meth:`NeuralTPP.log_likelihood`.

Ties (events at the same time, as day-resolution data give; ``tpp`` never jitters them): the history of
an event is the events strictly earlier in time (:func:`history_index` counts with ``side="left"``), so
tied events do not condition one another and each is scored by ``log lambda_k(t)`` from that history; the
tie adds a zero-length interval to the compensator. IntensityFree scores a tie by the hazard of its
group's gap, the same intensity. ARCHITECTURE.md, "Ties"; ``tests/adversarial/test_ties.py``.

Time unit (the one rule): a model never sees the data's time unit. :meth:`NeuralTPP.initialise` sets the buffer
``time_scale`` ``s`` once per model to the training data's mean positive inter-event time (so events come about
once per model unit), and every batch a subclass receives (``encode``, ``intensity_at``, ``interval_compensator``,
...) has been divided by ``s`` in :meth:`NeuralTPP._prepare`. The public methods answer in the data's unit:
``intensity`` divides by ``s`` (and takes its query times in data units), ``log_likelihood`` subtracts
``N log s`` (the Jacobian of the change of unit, ``N`` the sequence's events), compensators and cumulative
intensities are unitless, ``sample`` and ``predict`` return data times. So training on the same events in
seconds or in microseconds gives the same model up to rounding, and scores that differ by exactly ``log c`` per
event for a unit ``c`` times smaller. A subclass needs no code for this; one that standardises time inside its
own parametrisation sets the class attribute ``own_time_scale = True`` (FullyNN, IntensityFree) and then sees data
units and has no ``time_scale``. Before ``initialise`` (and in state dicts saved before the scale existed)
``s = 1``: the data's own unit.

The :class:`~tpp.model.Model` contract: ``initialise(train)`` is the one-time data-dependent start
(time scale and per-type rates; FullyNN and IntensityFree add their own time standardisation),
``objective`` the log-likelihood with the cheaper ``train_points`` rule while training. Numerical accuracy
is an argument: every query takes ``num_points=`` (nodes per interval; the constructor's ``num_points`` is
only the default) and ``chunk_size=`` (intervals per intensity evaluation, to bound memory with many types or
long sequences; the values do not depend on it), and no query changes the model's state.
"""

from __future__ import annotations

import abc
import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from tpp.compensator import MAX_QUADRATURE_POINTS, gauss_legendre, integrate_intervals, interval_bounds
from tpp.events import EventBatch
from tpp.model import Seed
from tpp.options import Interval, check_params, check_size
from tpp.neural.layers import gather_state
from tpp.process import PointProcess

if TYPE_CHECKING:
    from tpp.stream import BatchSource

__all__ = ["NeuralTPP", "StateTPP", "history_index", "training_sample", "check_accuracy"]


def history_index(batch: EventBatch, t: Tensor) -> Tensor:
    """``[B, T]`` number of events strictly before each time (ties excluded: they are not history)."""
    times = torch.where(batch.mask, batch.time, torch.full_like(batch.time, float("inf")))
    return torch.searchsorted(times.contiguous(), t.to(times.dtype).contiguous(), side="left")


def training_sample(train: EventBatch | BatchSource) -> EventBatch:
    """The events :meth:`NeuralTPP.initialise` learns its start from: a batch itself, or a source's
    ``standardisation_sample()`` (the whole data in memory, the first block of a streamed log)."""
    if isinstance(train, EventBatch):
        return train
    from tpp.stream import as_source

    return as_source(train).standardisation_sample()


def check_accuracy(num_points: int | None, chunk_size: int | None) -> None:
    """Refuse a quadrature rule or chunk size below 1 (None: the defaults), also where a closed form ignores them."""
    for name, value in (("num_points", num_points), ("chunk_size", chunk_size)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1 or None, got {value}")


def _chunks(n: int, chunk_size: int | None) -> list[slice]:
    """Consecutive slices of ``range(n)`` of at most ``chunk_size`` each; one slice (possibly empty) for None."""
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    step = n if chunk_size is None else chunk_size
    return [slice(start, min(start + step, n)) for start in range(0, n, step)] if n else [slice(0, 0)]


class NeuralTPP(PointProcess):
    """Base of the neural models; see the module docstring for what a model implements."""

    #: Gauss-Legendre nodes per interval in the training objective (gradients on, training mode; at most
    #: ``num_points``); ``None`` means ``num_points``. Every query (``log_likelihood``, ``compensator``,
    #: scores, validation) takes ``num_points`` unless given its own ``num_points=``.
    #: Eight nodes integrate the smooth between-event intensities of these models to ~1e-4 and halve
    #: the cost of a training step; the test scores (with a fine integrator) show whether a model
    #: learnt to exploit the coarser rule.
    train_points: int | None = 8

    #: Constructor ranges, checked once by :func:`tpp.options.check_params` (subclasses add their own).
    _constraints = {"num_marks": Interval(1, None, integer=True), "hidden_size": Interval(1, None, integer=True),
                    "num_points": Interval(1, MAX_QUADRATURE_POINTS, integer=True)}

    #: True for a model that standardises time inside its own parametrisation (FullyNN, IntensityFree): the base
    #: then passes its batches in the data's unit and keeps no ``time_scale`` (module docstring).
    own_time_scale: ClassVar[bool] = False

    def __init__(self, num_marks: int, hidden_size: int, num_points: int = 16) -> None:
        super().__init__()
        check_params(self, num_marks=num_marks, hidden_size=hidden_size, num_points=num_points)
        self.num_marks = int(num_marks)
        self.hidden_size = int(hidden_size)
        self.num_points = int(num_points)
        # Refuse sizes torch's allocator would fail on, in our words (the embedding and the square layers).
        given = f"num_marks={self.num_marks}, hidden_size={self.hidden_size}"
        check_size(self, (self.num_marks + 1, self.hidden_size), given)
        check_size(self, (4 * self.hidden_size, self.hidden_size), given)
        self.register_buffer("rates_initialised", torch.tensor(False))
        if not self.own_time_scale:
            # Data time units per model time unit (module docstring); set once by initialise.
            self.register_buffer("time_scale", torch.ones((), dtype=torch.float64))
            self.register_buffer("time_scale_set", torch.tensor(False))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Weights saved before the data-dependent start existed were trained: never re-initialise them.
        state_dict.setdefault(f"{prefix}rates_initialised", torch.tensor(True))
        if not self.own_time_scale:
            # ... and they were trained in the data's own unit: keep it (s = 1) for good.
            state_dict.setdefault(f"{prefix}time_scale", torch.ones((), dtype=torch.float64))
            state_dict.setdefault(f"{prefix}time_scale_set", torch.tensor(True))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ time unit
    def time_unit(self) -> float:
        """``s``: data time units per model time unit (1 before :meth:`initialise`, and for ``own_time_scale``
        models)."""
        return 1.0 if self.own_time_scale else float(self.time_scale)

    def _to_model_units(self, batch: EventBatch) -> EventBatch:
        """``batch`` with its times divided by :meth:`time_unit` (the same batch when ``s = 1``)."""
        s = self.time_unit()
        return batch if s == 1.0 else batch.scale_time(1.0 / s)

    def _start_time_scale(self, batch: EventBatch) -> None:
        """Set ``s`` to the mean positive inter-event time of ``batch`` (gaps from the previous event, the first from
        ``t_start``; ties left out, as FullyNN and IntensityFree leave them out of theirs; with none positive, the
        observed time per event), once per model. The benchmark's ``rescale`` divides by the same mean, so its
        rescaled data give ``s = 1`` up to rounding.

        Why: the layers of these models see times through fixed-size features (``log1p`` of a gap, sinusoids,
        ``exp(w tau)``, a ``+ 1`` in THP's time ratio) whose useful range is about one time unit; gaps of 1e6
        units saturate them (THP and RMTPP then scored far below a Poisson fit and their loss rose every epoch).
        """
        if self.own_time_scale or bool(self.time_scale_set):
            return
        if batch.num_events == 0:
            return  # nothing to measure: keep the data's unit, and let a later call set it
        gaps = batch.inter_event_times[batch.mask].double()
        gaps = gaps[gaps > 0]
        if gaps.numel():
            scale = float(gaps.mean())
        else:  # every event tied with the one before (or at t_start)
            scale = float((batch.t_end - batch.t_start).double().sum()) / batch.num_events
        if not (math.isfinite(scale) and scale > 0):
            return  # nothing to measure: keep the data's unit, and let a later call set it
        self.time_scale.fill_(scale)
        self.time_scale_set.fill_(True)

    # ------------------------------------------------------------------ data-dependent start
    def rate_biases(self) -> list[Tensor]:
        """Biases that set each type's intensity where the history says nothing (``[K]`` each, through a
        softplus): :meth:`initialise` starts them at the types' average rates. None by default."""
        return []

    def initialise(self, train: EventBatch | BatchSource) -> NeuralTPP:
        """One-time data-dependent start from (a sample of, :func:`training_sample`) the training data; returns
        self. The trainer calls it before the first step of a fresh run (never on resume).

        Here: the time scale ``s`` (:meth:`_start_time_scale`), then each type's intensity starts at its average
        rate in model units (:meth:`_start_rates`), each once per model. Subclasses that standardise times
        themselves (FullyNN, IntensityFree) extend it.
        """
        batch = training_sample(train)
        self._start_time_scale(batch)
        self._start_rates(self._to_model_units(batch))
        return self

    def fit_standardisation(self, batch: EventBatch | BatchSource) -> NeuralTPP:
        """Deprecated alias of :meth:`initialise` (the name meant four different things across the project)."""
        warnings.warn(f"{type(self).__name__}.fit_standardisation is deprecated: call initialise(train)",
                      DeprecationWarning, stacklevel=2)
        return self.initialise(batch)

    def _start_rates(self, batch: EventBatch) -> None:
        """Start each type's intensity at its average rate in ``batch`` (its events / the observed time, in the
        units of ``batch``: :meth:`initialise` passes it in model units), once per model (a fine-tuning run keeps
        what was learnt).

        Why: a softplus intensity starts at ``softplus(0) = 0.69`` events per unit of time for every type, so
        with many types or slow ones the untrained model expects hundreds of times too many events and a
        short run never recovers (quick likelihood table, NHP on wikipedia's 8227 types: -5561 nats per
        event before, -25.1 after; on mimic2's 75 types: -8.05 before, -2.47 after). Types absent from ``batch``
        start at 1% of the average type's rate.
        """
        biases = self.rate_biases()
        if not biases or bool(self.rates_initialised):
            return
        K = self.num_marks
        counts = torch.bincount(batch.mark[batch.mask].clamp(0, K - 1), minlength=K).double()
        exposure = float((batch.t_end - batch.t_start).double().sum())
        if exposure <= 0 or float(counts.sum()) == 0:
            return
        rates = (counts + 0.01 * float(counts.sum()) / K) / exposure
        start = torch.where(rates > 20, rates, torch.log(torch.expm1(rates.clamp_max(20))))  # softplus^-1
        with torch.no_grad():
            for bias in biases:
                bias.copy_(start.to(bias))
        self.rates_initialised.fill_(True)

    # ------------------------------------------------------------------ the Model contract
    def objective(self, batch: EventBatch) -> Tensor:
        """``[B]`` the training objective: :meth:`log_likelihood` with ``min(train_points, num_points)`` nodes
        per interval while training with gradients (half the cost of a step), else with ``num_points``."""
        cheap = self.training and torch.is_grad_enabled() and self.train_points
        return self.log_likelihood(batch, num_points=min(self.train_points, self.num_points) if cheap else None)

    def score(self, batch: EventBatch, num_points: int | None = None, chunk_size: int | None = None) -> float:
        """Mean log-likelihood per event (higher is better); ``num_points`` and ``chunk_size`` as in
        :meth:`log_likelihood`."""
        with torch.no_grad():
            return float(self.log_likelihood(batch, num_points, chunk_size).sum()) / max(batch.num_events, 1)

    def quadrature_points(self, num_points: int | None = None) -> int:
        """The Gauss-Legendre nodes per interval a query uses: ``num_points``, else the constructor's default."""
        points = self.num_points if num_points is None else int(num_points)
        if points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        return points

    # ------------------------------------------------------------------ to implement
    @abc.abstractmethod
    def encode(self, batch: EventBatch) -> Any:
        """Whatever the model precomputes from the events of ``batch`` (one pass)."""

    @abc.abstractmethod
    def intensity_at(self, batch: EventBatch, context: Any, index: Tensor, t: Tensor) -> Tensor:
        """``[B, T, K]`` at times ``t`` from the first ``index [B, T]`` events only."""

    # ------------------------------------------------------------------ derived
    def _prepare(self, batch: EventBatch) -> EventBatch:
        """``batch`` on the model's device, its marks checked, its times in model units (divided by :meth:`time_unit`):
        the one place where the data's unit leaves; every subclass method sees prepared batches only."""
        param = next(self.parameters(), None)
        if param is not None and (batch.device != param.device):
            batch = batch.to(param.device)
        self.check_marks(batch)
        return self._to_model_units(batch)

    def intensity(self, batch: EventBatch, t: Tensor) -> Tensor:
        """``[B, T, K]`` at times ``t [B, T]`` (data units), in events per data time unit."""
        return self.intensity_given(batch)(t)

    def intensity_given(self, batch: EventBatch) -> Callable[[Tensor], Tensor]:
        """``t [B, T] -> [B, T, K]``, :meth:`intensity` given the events of ``batch``, which is encoded once here
        (the thinning sampler asks several times per step). Times and intensities in data units."""
        batch = self._prepare(batch)
        context, s = self.encode(batch), self.time_unit()

        def fn(t: Tensor) -> Tensor:
            # The same rounding as the batch's times (scale_time multiplies by 1 / s): t / s can differ from
            # t * (1 / s) in the last bit, and a query at an event's own time would then see the event (or a tie).
            t = t.to(device=batch.device, dtype=batch.dtype) * (1.0 / s)  # exact when s = 1
            return self.intensity_at(batch, context, history_index(batch, t), t) / s

        return fn

    def event_log_intensity(self, batch: EventBatch, context: Any, chunk_size: int | None = None) -> Tensor:
        """``[B, L]`` log intensity of each event's own mark at its time (0 on padding); ``[B, chunk_size, K]``
        intensities at a time when ``chunk_size`` is set."""
        index = history_index(batch, batch.time)
        mark = batch.mark.clamp(0, self.num_marks - 1)
        parts = []
        for part in _chunks(batch.max_length, chunk_size):
            log_lam = self.log_intensity_at(batch, context, index[:, part], batch.time[:, part])
            parts.append(log_lam.gather(-1, mark[:, part, None])[..., 0])
        return torch.where(batch.mask, torch.cat(parts, 1), 0.0)

    def log_intensity_at(self, batch: EventBatch, context: Any, index: Tensor, t: Tensor) -> Tensor:
        """``[B, T, K]`` log of :meth:`intensity_at`; models whose intensity can underflow (an
        exponential or a softplus far in its tail) override it with a log-space form."""
        return torch.log(self.intensity_at(batch, context, index, t))

    def interval_compensator(self, batch: EventBatch, context: Any, num_points: int | None = None,
                             chunk_size: int | None = None) -> Tensor:
        """``[B, L + 1, K]`` integral of each mark's intensity over each inter-event interval.

        Gauss-Legendre with ``num_points`` nodes per interval (default: the constructor's); inside interval
        ``n`` the history is the first ``n`` events, so one call of ``intensity_at`` covers every node of
        ``chunk_size`` intervals (all of them by default). Closed-form overrides ignore both arguments.
        """
        left, right, valid = interval_bounds(batch)
        nodes, weights = gauss_legendre(left, right, self.quadrature_points(num_points))  # [B, L + 1, P]
        B, _, P = nodes.shape
        parts = []
        for part in _chunks(nodes.shape[1], chunk_size):
            part_nodes, part_weights = nodes[:, part], weights[:, part]
            I = part_nodes.shape[1]
            index = torch.arange(part.start, part.start + I, device=batch.device)[None, :, None].expand(B, I, P)
            lam = self.intensity_at(batch, context, index.reshape(B, I * P), part_nodes.reshape(B, I * P))
            parts.append((lam.reshape(B, I, P, -1) * part_weights[..., None]).sum(2) * valid[:, part, None])
        return torch.cat(parts, 1)

    @classmethod
    def integrates_every_type(cls) -> bool:
        """True where the likelihood integrates each of the ``K`` type intensities numerically at every node
        (the base's ground compensator, no density likelihood of the model's own): a training step then costs
        ``events x train_points x K`` intensity evaluations, which is what rules such a model out on thousands of
        types (wikipedia's 8,227 editors). RMTPP and FullyNN integrate the total in closed form and split it over
        the marks by a softmax; IntensityFree is a density of the gaps."""
        return (cls.interval_ground_compensator is NeuralTPP.interval_ground_compensator
                and cls.log_likelihood is NeuralTPP.log_likelihood)

    def interval_ground_compensator(self, batch: EventBatch, context: Any, num_points: int | None = None,
                                    chunk_size: int | None = None) -> Tensor:
        """``[B, L + 1]`` integral of the total intensity (all marks) over each inter-event interval.

        The likelihood needs only this sum; models whose marks come from a softmax independent of the
        time (RMTPP) override it with a closed form that never splits the total over the marks.
        """
        return self.interval_compensator(batch, context, num_points, chunk_size).sum(-1)

    def log_likelihood(self, batch: EventBatch, num_points: int | None = None,
                       chunk_size: int | None = None) -> Tensor:
        """``[B]``: event terms minus the compensator over the whole window (survival term included).

        ``num_points``: Gauss-Legendre nodes per inter-event interval (default: the constructor's
        ``num_points``; closed-form compensators ignore it; :meth:`compensator_error` estimates the error).
        ``chunk_size``: evaluate the intensities of at most that many events and intervals of every sequence
        at once, which bounds memory by ``B x chunk_size x num_points x K`` instead of ``B x L x num_points x K``
        (many types, long sequences); the values equal the unchunked call's up to rounding. To bound the
        sequences too, call it on slices of the batch (the values do not depend on the batch's composition).
        In the data's time unit: the model-unit value minus ``N log s`` (``N`` the sequence's events).
        """
        check_accuracy(num_points, chunk_size)
        batch = self._prepare(batch)
        context = self.encode(batch)
        ground = self.interval_ground_compensator(batch, context, num_points, chunk_size)
        value = self.event_log_intensity(batch, context, chunk_size).sum(1) - ground.sum(1)
        s = self.time_unit()
        return value if s == 1.0 else value - batch.lengths.to(value.dtype) * math.log(s)

    def compensator(self, batch: EventBatch, num_points: int | None = None,
                    chunk_size: int | None = None) -> Tensor:
        """``[B]`` integral of the total intensity over each window (``num_points``, ``chunk_size`` as in
        :meth:`log_likelihood`)."""
        check_accuracy(num_points, chunk_size)
        batch = self._prepare(batch)
        return self.interval_ground_compensator(batch, self.encode(batch), num_points, chunk_size).sum(1)

    def cumulative_intensity(self, batch: EventBatch, num_points: int | None = None,
                             chunk_size: int | None = None) -> Tensor:
        """``[B, L, K]`` ``Lambda_k(t_start, t_n]`` at each event (``num_points``, ``chunk_size`` as in
        :meth:`log_likelihood`)."""
        check_accuracy(num_points, chunk_size)
        batch = self._prepare(batch)
        return self.interval_compensator(batch, self.encode(batch), num_points, chunk_size).cumsum(1)[:, :-1]

    def sample(
        self,
        n: int,
        t_end: float,
        history: EventBatch | None = None,
        generator: Seed = None,
        t_start: float = 0.0,
        max_events: int | None = None,
    ) -> EventBatch:
        """Sequences from the shared thinning sampler (:func:`tpp.sampling.thinning_sample`); its counters are
        left in ``sampling_stats_`` (a diagnostic, not part of the model's state dict).

        ``max_events``: cap on the new events of each sequence (default :data:`tpp.sampling.MAX_EVENTS`); a
        sequence that needs more raises :class:`tpp.process.SamplingBudgetError` saying how far it got."""
        from tpp.sampling import MAX_EVENTS, thinning_sample

        batch, self.sampling_stats_ = thinning_sample(self, n, t_end, history, generator, t_start,
                                                      max_events=MAX_EVENTS if max_events is None else max_events)
        return batch

    def compensator_error(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        """``[B]`` estimated quadrature error of the compensator (difference with half the nodes)."""
        batch = self._prepare(batch)
        context = self.encode(batch)

        def fn(b: EventBatch, t: Tensor) -> Tensor:
            return self.intensity_at(b, context, history_index(b, t), t)

        return integrate_intervals(fn, batch, self.quadrature_points(num_points)).error.sum((1, 2))


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

    def interval_compensator(self, batch: EventBatch, context: Tensor, num_points: int | None = None,
                             chunk_size: int | None = None) -> Tensor:
        left, right, valid = interval_bounds(batch)
        tau, points = right - left, self.quadrature_points(num_points)
        parts = [self.integrate_after(context[:, part], tau[:, part], points)
                 for part in _chunks(tau.shape[1], chunk_size)]
        return torch.cat(parts, 1).to(batch.dtype) * valid[..., None]

    def integrate_after(self, state: Tensor, tau: Tensor, num_points: int | None = None) -> Tensor:
        """``[B, I, K]``: ``intensity_after(state, s)`` integrated over ``s in [0, tau]`` (``state [B, I, S]``,
        ``tau [B, I]``) by the Gauss-Legendre rule of ``num_points`` nodes (default: the constructor's).
        Models may override it with a fused kernel of the same rule (:mod:`tpp.neural._quadrature`)."""
        offsets, weights = gauss_legendre(torch.zeros_like(tau), tau, self.quadrature_points(num_points))  # [B, I, P]
        lam = self.intensity_after(state[:, :, None, :], offsets)
        return (lam * weights[..., None]).sum(2)
