"""The one thinning sampler (Ogata 1981), for any model that answers ``intensity``.

All sequences advance together, one candidate each per step, on the model's device. The bound
on each look-ahead window ``[t, t + h]`` is ``safety`` times the largest total intensity seen on
``grid`` points of that window (given the history so far); a candidate from the homogeneous
process of that rate is kept with probability ``lambda(t') / bound`` and its mark drawn in
proportion to ``lambda_k(t')``. When a candidate's intensity exceeds the bound (the grid missed
a peak) the step is counted in ``bound_violations``: the sample is then only approximately
exact, and a finer ``grid`` or larger ``safety`` fixes it. Models with an exact sampler
(exponential Hawkes, intensity-free) use their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tpp.events import EventBatch
from tpp.model import Seed
from tpp.process import PointProcess, as_numpy_rng

__all__ = ["ThinningStats", "thinning_sample"]


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
    max_events: int = 100_000,
) -> tuple[EventBatch, ThinningStats]:
    """Sample ``n`` sequences on ``[t_start, t_end]`` (or continue ``history`` to ``t_end``).

    ``lookahead``: window length for the bound (default: 4 / current total intensity, at most
    the time left). Returns the batch and the :class:`ThinningStats`.
    """
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
    # First probe just after `now`: an event accepted at `now` raises the intensity only after it.
    steps = torch.linspace(0, 1, grid, dtype=torch.float64, device=device)
    steps[0] = 1e-9
    while True:
        active = now < t1
        if not bool(active.any()):
            break
        batch = _batch(times, marks, lengths, t0, t1, K)
        rate_now = model.intensity(batch, now[:, None]).sum(-1)[:, 0].to(torch.float64)
        window = (4.0 / rate_now.clamp_min(1e-12)) if lookahead is None else torch.full_like(now, lookahead)
        window = torch.minimum(window, t1 - now).clamp_min(1e-12)
        probe = now[:, None] + window[:, None] * steps[None, :]
        bound = safety * model.intensity(batch, probe).sum(-1).max(-1).values.to(torch.float64).clamp_min(1e-12)
        gap = torch.empty(n, dtype=torch.float64, device=device).exponential_(generator=gen) / bound
        candidate = now + gap
        inside = active & (gap <= window)
        lam = model.intensity(batch, candidate[:, None])[:, 0].to(torch.float64).clamp_min(0)  # [n, K]
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
            if int(lengths.sum()) > max_events:
                raise RuntimeError(f"sampling passed max_events={max_events}")
        now = torch.minimum(now, t1)
    out = _batch(times, marks, lengths, t0, t1, K)
    # Padded constructor validation once at the end (sorted, inside the window, marks in range).
    return EventBatch(out.time, out.mark, out.mask, out.t_start, out.t_end, K), stats
