"""The protocol every point process answers: a distribution over event sequences.

A :class:`PointProcess` is a :class:`tpp.model.Model` whose training objective is its exact
log-likelihood (survival term included), whose ``score`` is the mean log-likelihood per event and
whose ``predict`` is the distribution of the next event.

Shapes, once for all models (``B`` sequences, ``L`` events, ``T`` query times, ``K`` marks):

``log_likelihood(batch) -> [B]``
    ``sum_n log lambda_{k_n}(t_n) - int_{t_start}^{t_end} sum_k lambda_k(t) dt`` per sequence,
    including the survival term on ``(last event, t_end]``. Exact where a closed form exists; a
    model that integrates numerically takes the rule as an argument (``num_points=``) and states its
    error (:meth:`tpp.neural.NeuralTPP.compensator_error`).
``intensity(batch, t) -> [B, T, K]``
    conditional intensity at times ``t [B, T]`` given the events of ``batch`` strictly before ``t``.
``compensator(batch) -> [B]``
    integral of the total intensity over each observation window.
``cumulative_intensity(batch) -> [B, L, K]``
    ``Lambda_k(t_start, t_n]`` at every event; time-rescaling residuals come from it.
``sample(n, t_end, history=None, generator=None, t_start=0.0) -> EventBatch``
    ``n`` sequences on ``[t_start, t_end]``, or continuations of ``history`` up to ``t_end``.
    Checked at the boundary before any simulation (:func:`check_sample_arguments`, applied to every
    subclass's ``sample``): ``n`` a positive integer (``0`` is refused: there is no empty batch to
    return), ``t_end`` and ``t_start`` finite with ``t_end > t_start`` (with a history,
    ``t_end >=`` each sequence's window end), ``max_events`` (where a sampler has one) a positive
    integer. A sampler that reaches its ``max_events`` raises :class:`SamplingBudgetError` saying
    how far it got; it never runs without bound.
``predict(batch) -> Prediction``
    distribution of the next event after each sequence's last event: mean time, quantiles,
    mark probabilities.

Models with a closed form override ``compensator``/``cumulative_intensity``; the defaults use
the one integrator of :mod:`tpp.compensator`.
"""

from __future__ import annotations

import abc
import functools
import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tpp.compensator import gauss_legendre, integrate_intervals
from tpp.events import EventBatch, EventDataError
from tpp.model import Model, Seed

__all__ = ["PointProcess", "Prediction", "SamplingBudgetError", "as_numpy_rng", "check_sample_arguments"]


@dataclass
class Prediction:
    """Next-event forecast per sequence: times are absolute (not gaps)."""

    time_mean: Tensor  # [B]
    time_quantiles: Tensor  # [B, Q]
    quantile_levels: Tensor  # [Q]
    mark_probs: Tensor  # [B, K]

    @property
    def mark(self) -> Tensor:
        """Most probable next mark, ``[B]``."""
        return self.mark_probs.argmax(-1)


def as_numpy_rng(generator: Seed) -> np.random.Generator:
    """One seeding convention for every sampler: an int seed, a numpy or a torch generator."""
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, torch.Generator):
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        return np.random.default_rng(seed)
    if isinstance(generator, (np.random.SeedSequence, np.random.BitGenerator)):
        return np.random.default_rng(generator)
    # numpy would take 0.0 or -1 only to fail inside SeedSequence with its own words
    if generator is not None and (isinstance(generator, bool) or not isinstance(generator, numbers.Integral)):
        raise TypeError(f"generator must be an int seed, a numpy or torch Generator, or None, got {generator!r}")
    if generator is not None and generator < 0:
        raise ValueError(f"generator (a seed) must be a non-negative integer, got {generator}")
    return np.random.default_rng(generator)


class SamplingBudgetError(RuntimeError, ValueError):
    """A sampler reached its work cap (``max_events``) before ``t_end``; the message says how far it got
    (events simulated, time reached) and how to raise the cap.

    A ``RuntimeError`` as before, and a ``ValueError`` too: the request (horizon, cap) does not fit the
    model, so the command-line tools report it as bad input (one line, exit code 2)."""


def _real(value: Any, name: str) -> np.ndarray:
    """``value`` (a number, an array or a tensor of numbers) as float64, or a ``TypeError`` naming ``name``."""
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.ndarray)):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    array = np.asarray(value)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    return array.astype(np.float64)


#: The most sequences one ``sample`` call simulates (each needs its own row of every output array).
MAX_SAMPLE_SEQUENCES = 1 << 24


def check_sample_arguments(n: Any, t_end: Any, history: Any = None, t_start: Any = 0.0,
                           max_events: Any = None) -> None:
    """Refuse what no sampler can honour, before any simulation (a bad value would otherwise run until
    a cap, e.g. a NaN horizon that no event time ever passes, or fail deep inside with a raw error).

    ``n``: a positive integer (``TypeError`` for 2.5 or True, ``ValueError`` for 0 or -1). ``t_end``: a
    finite number (or one per sequence); ``t_start`` finite and ``< t_end``; with a ``history`` (an
    :class:`EventBatch` of ``n`` sequences) ``t_end`` must not be before any of its window ends.
    ``max_events``: None or a positive integer.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"n (the number of sequences) must be an integer, got {n!r}")
    if n < 1:
        raise ValueError(f"n (the number of sequences) must be >= 1, got {n}")
    if n > MAX_SAMPLE_SEQUENCES:  # 2**63 once failed inside numpy ("Maximum allowed dimension exceeded")
        raise ValueError(f"n (the number of sequences) must be at most {MAX_SAMPLE_SEQUENCES:,}, got {n}: "
                         "sample in several calls")
    if max_events is not None:
        if isinstance(max_events, bool) or not isinstance(max_events, numbers.Integral):
            raise TypeError(f"max_events must be a positive integer, got {max_events!r}")
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
    ends = _real(t_end, "t_end")
    if ends.ndim > 1 or ends.size not in (1, n):
        raise ValueError(f"t_end must be a number or one per sequence ({n}), got shape {list(ends.shape)}")
    if not np.all(np.isfinite(ends)):
        raise ValueError(f"t_end must be finite, got {t_end!r}")
    if history is not None:
        if not isinstance(history, EventBatch):
            raise TypeError(f"history must be an EventBatch or None, got {type(history).__name__}")
        if len(history) != n:
            raise ValueError(f"n={n} but the history has {len(history)} sequences")
        starts = history.t_end.detach().cpu().double().numpy()
        late = np.flatnonzero(np.broadcast_to(ends, starts.shape) < starts)
        if late.size:
            i = int(late[0])
            raise ValueError(f"t_end {float(np.broadcast_to(ends, starts.shape)[i])!r} is before the end "
                             f"{float(starts[i])!r} of the history's sequence {i}: a continuation must end later")
        return
    start = _real(t_start, "t_start")
    if start.ndim != 0 or not np.isfinite(start):
        raise ValueError(f"t_start must be a finite number, got {t_start!r}")
    if not np.all(ends > start):
        raise ValueError(f"t_end must be after t_start={float(start)!r}, got {t_end!r}")


def _checked_sample(sample: Callable[..., Any]) -> Callable[..., Any]:
    """``sample`` preceded by :func:`check_sample_arguments` on its bound arguments (defaults included)."""
    signature = inspect.signature(sample)

    @functools.wraps(sample)
    def checked(self: Any, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        given = bound.arguments
        check_sample_arguments(given.get("n"), given.get("t_end"), given.get("history"), given.get("t_start", 0.0),
                               given.get("max_events"))
        return sample(self, *args, **kwargs)

    checked._checks_arguments = True  # type: ignore[attr-defined]
    return checked


class PointProcess(Model):
    """Base class of all point processes; see the module docstring for the protocol and shapes.

    The :class:`~tpp.model.Model` contract: ``objective`` is :meth:`log_likelihood` (so the trainer
    maximises the exact likelihood), ``score`` the mean log-likelihood per event, ``predict`` the
    next event.
    """

    num_marks: int

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every concrete ``sample`` checks its arguments at the boundary (:func:`check_sample_arguments`):
        one rule for all samplers, present and future, instead of one copy per model."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("sample")
        if (callable(own) and not getattr(own, "__isabstractmethod__", False)
                and not getattr(own, "_checks_arguments", False)):
            cls.sample = _checked_sample(own)  # type: ignore[method-assign]

    # ------------------------------------------------------------------ to implement
    @abc.abstractmethod
    def log_likelihood(self, batch: EventBatch) -> Tensor:
        """``[B]`` log-likelihood of each sequence over its whole window."""

    @abc.abstractmethod
    def intensity(self, batch: EventBatch, t: Tensor) -> Tensor:
        """``[B, T, K]`` conditional intensity at ``t [B, T]`` given the events strictly before it."""

    @abc.abstractmethod
    def sample(
        self,
        n: int,
        t_end: float,
        history: EventBatch | None = None,
        generator: Seed = None,
        t_start: float = 0.0,
    ) -> EventBatch:
        """``n`` sequences on ``[t_start, t_end]``, or continuations of ``history`` up to ``t_end``."""

    def check_marks(self, batch: EventBatch) -> None:
        """Refuse a batch with more mark types than the model knows (an :class:`EventDataError`)."""
        if batch.num_marks > self.num_marks:
            raise EventDataError(f"the batch has {batch.num_marks} mark types, the {type(self).__name__} model "
                                 f"{self.num_marks}", field="mark")

    def objective(self, batch: EventBatch) -> Tensor:
        """``[B]`` what training maximises: the log-likelihood (calling the model returns it too)."""
        return self.log_likelihood(batch)

    # ------------------------------------------------------------------ defaults
    def compensator(self, batch: EventBatch, num_points: int = 32) -> Tensor:
        """``[B]`` integral of the total intensity over the window (numerical by default)."""
        return integrate_intervals(self.intensity, batch, num_points).total

    def cumulative_intensity(self, batch: EventBatch, num_points: int = 32) -> Tensor:
        """``[B, L, K]`` ``Lambda_k(t_start, t_n]`` at each event (numerical by default)."""
        parts = integrate_intervals(self.intensity, batch, num_points).value
        return parts.cumsum(1)[:, :-1]

    def score(self, batch: EventBatch) -> float:
        """Mean log-likelihood per event (higher is better), as in scikit-learn's ``score``."""
        with torch.no_grad():
            return float(self.log_likelihood(batch).sum()) / max(batch.num_events, 1)

    def predict(
        self,
        batch: EventBatch,
        quantiles: Sequence[float] = (0.1, 0.5, 0.9),
        num_intervals: int = 128,
        num_points: int = 6,
        max_horizon: float | None = None,
    ) -> Prediction:
        """Next event after each sequence's window end, from the intensity by quadrature.

        The next time has survival ``S(t) = exp(-int_{t_end}^t lambda)`` and density
        ``lambda(t) S(t)``. The horizon doubles until ``S < 1e-8`` for every sequence; then
        ``num_intervals`` Gauss-Legendre panels of ``num_points`` nodes give the mean
        ``int S``, the quantiles (inverting the cumulative intensity) and the mark
        probabilities ``int lambda_k S``. ``S`` at each node uses a nested rule from the panel's
        left edge, so no coarse grid enters the result.

        A model whose intensity dies out (e.g. RMTPP with a negative time weight) may never fire
        again: the horizon stops at ``max_horizon`` (default: 100 times the longest window of the batch)
        and the forecast is conditional on an event before it.
        """
        with torch.no_grad():
            start = batch.t_end
            if max_horizon is None:
                max_horizon = 100.0 * float((batch.t_end - batch.t_start).max().clamp_min(1e-9))
            rate0 = self.intensity(batch, start[:, None]).sum(-1)[:, 0].clamp_min(1e-12)
            horizon = (20.0 / rate0).clamp(1e-9, max_horizon)
            for _ in range(60):
                # Panels dense near the start, where a self-exciting intensity changes fastest.
                fractions = torch.expm1(torch.linspace(0, np.log1p(1000.0), num_intervals + 1, dtype=start.dtype,
                                                       device=start.device)) / 1000.0
                edges = start[:, None] + horizon[:, None] * fractions
                cum = self._cumulative_at(batch, edges, num_points)
                done = (cum[:, -1] >= -math.log(1e-8)) | (horizon >= max_horizon)
                if bool(done.all()):
                    break
                horizon = torch.where(done, horizon, (horizon * 2).clamp_max(max_horizon))
            nodes, w = gauss_legendre(edges[:, :-1], edges[:, 1:], num_points)  # [B, M, n]
            B, M, n = nodes.shape
            lam = self.intensity(batch, nodes.reshape(B, M * n)).reshape(B, M, n, -1)
            inner_nodes, inner_w = gauss_legendre(edges[:, :-1, None].expand(B, M, n), nodes, num_points)
            inner = self.intensity(batch, inner_nodes.reshape(B, -1)).sum(-1).reshape(B, M, n, num_points)
            cum_nodes = cum[:, :-1, None] + (inner * inner_w).sum(-1)
            survival = torch.exp(-cum_nodes)
            mark_mass = (lam * (survival * w)[..., None]).sum((1, 2))
            mark_probs = mark_mass / mark_mass.sum(-1, keepdim=True)
            # Conditional on an event before the horizon: F(t) / F(H) with F = 1 - S.
            s_end = torch.exp(-cum[:, -1])
            fired = (1 - s_end).clamp_min(1e-300)
            mean_gap = ((survival - s_end[:, None, None]) * w).sum((1, 2)) / fired
            levels = torch.as_tensor(quantiles, dtype=start.dtype, device=start.device)
            targets = (-torch.log1p(-levels[None, :] * fired[:, None])).contiguous()
            # Invert the cumulative intensity on the fine grid of panel edges and nodes.
            grid_t, order = torch.sort(torch.cat([edges, nodes.reshape(B, -1)], 1), 1)
            grid_c = torch.cat([cum, cum_nodes.reshape(B, -1)], 1).gather(1, order)
            grid_c = torch.cummax(grid_c, 1).values  # monotone despite rounding
            idx = torch.searchsorted(grid_c.contiguous(), targets).clamp(1, grid_c.shape[1] - 1)
            c0, c1 = grid_c.gather(1, idx - 1), grid_c.gather(1, idx)
            e0, e1 = grid_t.gather(1, idx - 1), grid_t.gather(1, idx)
            frac = ((targets - c0) / (c1 - c0).clamp_min(1e-300)).clamp(0, 1)
            return Prediction(start + mean_gap, e0 + frac * (e1 - e0), levels, mark_probs)

    def _cumulative_at(self, batch: EventBatch, edges: Tensor, num_points: int) -> Tensor:
        """Total cumulative intensity from ``edges[:, 0]`` to each edge, ``[B, M + 1]``."""
        nodes, w = gauss_legendre(edges[:, :-1], edges[:, 1:], num_points)
        B, M, n = nodes.shape
        panel = (self.intensity(batch, nodes.reshape(B, M * n)).sum(-1).reshape(B, M, n) * w).sum(-1)
        return torch.cat([torch.zeros_like(panel[:, :1]), panel.cumsum(1)], 1)
