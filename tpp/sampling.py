"""The one thinning sampler (Ogata 1981), for any model that answers ``intensity``.

All sequences advance together, one candidate each per step, on the model's device. The bound
on each look-ahead window ``[t, t + h]`` is ``safety`` times the largest total intensity seen on
``grid`` points of that window (given the history so far); a candidate from the homogeneous
process of that rate is kept with probability ``lambda(t') / bound`` and its mark drawn in
proportion to ``lambda_k(t')``. When a candidate's intensity exceeds the bound (the grid missed
a peak) the step is counted in ``bound_violations``: the sample is then only approximately
exact, and a finer ``grid`` or larger ``safety`` fixes it. Models with an exact sampler
(exponential Hawkes, intensity-free) use their own.

The work is capped: each step evaluates the intensity given the whole history so far (a neural
model re-encodes it: a step costs O(L) for a recurrent model and O(L^2) for attention, so a run of
L events costs O(L^2) to O(L^3)). ``max_events`` (default :data:`MAX_EVENTS`) bounds the new events
of each sequence, and the steps to ``STEPS_PER_EVENT * max_events``; reaching either raises
:class:`tpp.process.SamplingBudgetError` with the events simulated and the time reached. The old
cap (100 000 events over the whole batch) was never reached in practice: at that cost a few
thousand events already take minutes, so ``THP.sample(1, t_end=1e7)`` ran for days before it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from tpp.events import EventBatch
from tpp.model import Seed
from tpp.process import PointProcess, SamplingBudgetError, as_numpy_rng, check_sample_arguments

__all__ = ["MAX_EVENTS", "STEPS_PER_EVENT", "ThinningStats", "thinning_sample"]

MAX_EVENTS = 2_000
"""Default cap on the new events of each sequence of :func:`thinning_sample` (THP reaches it in about
25 s on one CPU core); pass ``max_events=`` for more."""

STEPS_PER_EVENT = 50
"""Steps allowed per allowed event (rejected candidates and empty look-ahead windows are steps too)."""


@dataclass
class ThinningStats:
    candidates: int = 0
    accepted: int = 0
    bound_violations: int = 0

    @property
    def accepted_fraction(self) -> float:
        return self.accepted / max(self.candidates, 1)


def _batch(times: Tensor, marks: Tensor, lengths: Tensor, t0: Tensor, t1: Tensor, num_marks: int) -> EventBatch:
    L = max(int(lengths.max()), 1)
    mask = torch.arange(L, device=times.device)[None, :] < lengths[:, None]
    time = torch.where(mask, times[:, :L], t1[:, None].expand(-1, L))
    return EventBatch(time, marks[:, :L], mask, t0, t1, num_marks, validate=False)


def _intensity_given(model: PointProcess, batch: EventBatch) -> Callable[[Tensor], Tensor]:
    """``t [B, T] -> [B, T, K]`` given the events of ``batch``; a neural model encodes the history once per
    step (not once per query: a step asks three times)."""
    from tpp.neural.base import NeuralTPP

    if isinstance(model, NeuralTPP) and type(model).intensity is NeuralTPP.intensity:
        return model.intensity_given(batch)  # in data units, whatever the model's internal time unit
    return lambda t: model.intensity(batch, t)


def _budget_error(model: PointProcess, reason: str, lengths: Tensor, now: Tensor, t1: Tensor, steps: int,
                  max_events: int) -> SamplingBudgetError:
    """How far the sampler got, and how to go further."""
    unfinished = torch.nonzero(now < t1)[:, 0]
    i = int(unfinished[0]) if unfinished.numel() else int(lengths.argmax())
    return SamplingBudgetError(
        f"{type(model).__name__}.sample stopped: {reason} after {steps} steps and {int(lengths.sum())} events "
        f"({int(lengths.max())} in the longest sequence); sequence {i} reached t={float(now[i]):.6g} of "
        f"t_end={float(t1[i]):.6g} with {int(lengths[i])} events, {unfinished.numel()} of {len(lengths)} sequences "
        f"unfinished. Pass a larger max_events= (now {max_events} per sequence) or a shorter t_end")


@torch.no_grad()
def thinning_sample(
    model: PointProcess,
    n: int,
    t_end: float,
    history: EventBatch | None = None,
    generator: Seed = None,
    t_start: float = 0.0,
    *,
    grid: int = 16,
    safety: float = 1.5,
    lookahead: float | None = None,
    max_events: int = MAX_EVENTS,
) -> tuple[EventBatch, ThinningStats]:
    """Sample ``n`` sequences on ``[t_start, t_end]`` (or continue ``history`` to ``t_end``).

    ``lookahead``: window length for the bound (default: 4 / current total intensity, at most
    the time left). ``max_events``: cap on the new events of each sequence (and on the steps, at
    :data:`STEPS_PER_EVENT` per event); reaching it raises :class:`~tpp.process.SamplingBudgetError`
    saying how far the simulation got. Returns the batch and the :class:`ThinningStats`.
    """
    check_sample_arguments(n, t_end, history, t_start, max_events)
    rng = as_numpy_rng(generator)
    gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    K = model.num_marks
    if history is not None:
        if len(history) != n:
            raise ValueError(f"n={n} but the history has {len(history)} sequences")
        h = history.to(device)
        cap = h.max_length + 64
        times = torch.zeros(n, cap, dtype=torch.float64, device=device)
        marks = torch.zeros(n, cap, dtype=torch.long, device=device)
        times[:, : h.max_length] = h.time
        marks[:, : h.max_length] = h.mark
        lengths = h.lengths.clone()
        now = h.t_end.clone().to(torch.float64)
        t0 = h.t_start.to(torch.float64)
    else:
        cap = 64
        times = torch.zeros(n, cap, dtype=torch.float64, device=device)
        marks = torch.zeros(n, cap, dtype=torch.long, device=device)
        lengths = torch.zeros(n, dtype=torch.long, device=device)
        now = torch.full((n,), float(t_start), dtype=torch.float64, device=device)
        t0 = now.clone()
    t1 = torch.full((n,), float(t_end), dtype=torch.float64, device=device)
    if bool((t1 < now).any()):
        raise ValueError("t_end must not be before the start of the simulation")
    stats = ThinningStats()
    old_events = lengths.clone()  # a history's events do not count against the cap
    max_steps = STEPS_PER_EVENT * max_events
    # First probe just after `now`: an event accepted at `now` raises the intensity only after it.
    steps = torch.linspace(0, 1, grid, dtype=torch.float64, device=device)
    steps[0] = 1e-9
    for step in range(max_steps + 1):
        active = now < t1
        if not bool(active.any()):
            break
        if step == max_steps:
            raise _budget_error(model, f"{max_steps} steps ({STEPS_PER_EVENT} per allowed event) ran out",
                                lengths - old_events, now, t1, step, max_events)
        intensity = _intensity_given(model, _batch(times, marks, lengths, t0, t1, K))
        rate_now = intensity(now[:, None]).sum(-1)[:, 0].to(torch.float64)
        window = (4.0 / rate_now.clamp_min(1e-12)) if lookahead is None else torch.full_like(now, lookahead)
        window = torch.minimum(window, t1 - now).clamp_min(1e-12)
        probe = now[:, None] + window[:, None] * steps[None, :]
        bound = safety * intensity(probe).sum(-1).max(-1).values.to(torch.float64).clamp_min(1e-12)
        gap = torch.empty(n, dtype=torch.float64, device=device).exponential_(generator=gen) / bound
        candidate = now + gap
        inside = active & (gap <= window)
        lam = intensity(candidate[:, None])[:, 0].to(torch.float64).clamp_min(0)  # [n, K]
        total = lam.sum(-1)
        u = torch.rand(n, dtype=torch.float64, device=device, generator=gen) * bound
        accept = inside & (u <= total)
        stats.candidates += int(inside.sum())
        stats.accepted += int(accept.sum())
        stats.bound_violations += int((inside & (total > bound)).sum())
        # windows without a candidate move on; rejected candidates move the clock to themselves
        now = torch.where(active & ~inside, now + window, torch.where(inside, candidate, now))
        if bool(accept.any()):
            probs = lam[accept] / total[accept, None]
            new_marks = torch.multinomial(probs.float(), 1, generator=gen)[:, 0]
            rows = torch.nonzero(accept)[:, 0]
            if int(lengths.max()) + 1 > times.shape[1]:
                times = torch.cat([times, torch.zeros_like(times)], 1)
                marks = torch.cat([marks, torch.zeros_like(marks)], 1)
            times[rows, lengths[rows]] = candidate[rows]
            marks[rows, lengths[rows]] = new_marks
            lengths[rows] += 1
            now = torch.minimum(now, t1)
            # a sequence at the cap that still has time left would need more events than allowed
            if bool(((lengths - old_events >= max_events) & (now < t1)).any()):
                raise _budget_error(model, f"a sequence reached max_events={max_events} new events",
                                    lengths - old_events, now, t1, step + 1, max_events)
        now = torch.minimum(now, t1)
    out = _batch(times, marks, lengths, t0, t1, K)
    # Padded constructor validation once at the end (sorted, inside the window, marks in range).
    return EventBatch(out.time, out.mark, out.mask, out.t_start, out.t_end, K), stats
