"""What every classic Hawkes model shares: fit diagnostics, the stationarity warning, the simulation
window and history bookkeeping, and the branching (cluster) sampler for finite-support kernels.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from tpp.events import EventBatch
from tpp.options import check_size
from tpp.process import SamplingBudgetError

__all__ = [
    "budget_error",
    "FitResult",
    "check_fit_arguments",
    "check_parameter_size",
    "record_validation",
    "NonStationaryWarning",
    "flat_events",
    "warn_if_not_stationary",
    "simulation_window",
    "assemble",
    "simulate_branching",
]


class NonStationaryWarning(UserWarning):
    """The fitted branching ratio (spectral radius of the adjacency) is >= 1."""


class FitResult(dict):
    """Diagnostics of the last ``fit``: objective value, iterations, evaluations, seconds, convergence."""


def check_parameter_size(owner: Any, shape: tuple[int, ...], given: str) -> None:
    """:func:`tpp.options.check_size` with the hint that fits a classic model: fewer mark types."""
    try:
        check_size(owner, shape, given)
    except ValueError as exc:
        raise ValueError(f"{exc}: use fewer mark types (read_events(..., remap_marks=True) maps sparse ids to "
                         "0..K-1)") from None


@functools.cache
def _trainer_options() -> frozenset[str]:
    """The keyword-only options of :func:`tpp.train.fit`, read once (``inspect.signature`` took ~0.3 ms of
    every fit, a tenth of a small Hawkes fit)."""
    from tpp.train import fit as trainer

    return frozenset(p.name for p in inspect.signature(trainer).parameters.values()
                     if p.kind is inspect.Parameter.KEYWORD_ONLY)


def check_fit_arguments(owner: Any, val: Any, options: Mapping[str, Any], train: Any = None) -> None:
    """``val`` must be an :class:`EventBatch` or None (the second positional argument of ``fit`` was once the
    objective: say so rather than fail later). Then accept the options of the one trainer
    (:func:`tpp.train.fit`: ``epochs``, ``batch_size``, ``lr``, ``seed``, ``progress``, ...) so that every model answers ``fit(train, val, **trainer_options)``; a
    closed-form, L-BFGS or EM estimator has no use for them. Any other name is a ``TypeError``, as
    for a misspelt keyword argument; a bad value (``epochs=-1``) is refused by the trainer's own rules,
    as :func:`tpp.train.fit` would refuse it, so a call that works here works there too.

    With ``train`` (an :class:`EventBatch`), warn once if its times look absolute
    (:func:`tpp.clock.warn_if_absolute_time`)."""
    if val is not None and not isinstance(val, EventBatch):
        raise TypeError(f"{type(owner).__name__}.fit(train, val=None, *, ...): val must be a held-out EventBatch or "
                        f"None, got {val!r} (estimator options such as objective= are keyword-only)")
    known = _trainer_options()
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"{type(owner).__name__}.fit() got unexpected keyword argument(s) {', '.join(unknown)}: "
                        f"its own options or the trainer's ({', '.join(sorted(known))})")
    from tpp.train import _TRAINER_ARGUMENTS, NonFinite, _check_trainer_arguments

    _check_trainer_arguments(**{name: value for name, value in options.items() if name in _TRAINER_ARGUMENTS})
    if "on_nonfinite" in options:
        NonFinite(options["on_nonfinite"])  # ValueError naming the allowed values, as in tpp.fit
    if isinstance(train, EventBatch):
        from tpp.clock import warn_if_absolute_time

        # stacklevel: warn_if_absolute_time <- here <- the estimator's fit <- the caller
        warn_if_absolute_time(train, f"{type(owner).__name__}.fit", stacklevel=4)


def record_validation(model: Any, val: EventBatch | None, result: dict) -> None:
    """With a held-out batch, store its score (log-likelihood per event) in ``result["val_score"]``.

    The classic estimators do not select anything on ``val`` (no early stopping): the score is a report."""
    if val is not None:
        with torch.no_grad():
            result["val_score"] = float(model.score(val))


def observed_information(grad: Callable[[np.ndarray], np.ndarray], theta: np.ndarray, rel_step: float,
                         floor: float = 1e-3) -> np.ndarray:
    """The observed information ``-H`` at ``theta`` (symmetrised), ``H`` the Hessian of the log-likelihood by
    central differences of its gradient ``grad``: column ``k`` with the step ``rel_step * max(|theta_k|,
    floor)``. The one finite-difference Hessian behind every classic model's ``standard_errors``."""
    hessian = np.empty((theta.size, theta.size))
    for k in range(theta.size):
        h = rel_step * max(abs(theta[k]), floor)
        up, down = theta.copy(), theta.copy()
        up[k] += h
        down[k] -= h
        hessian[:, k] = (grad(up) - grad(down)) / (2 * h)
    return -(hessian + hessian.T) / 2


def flat_events(batch: EventBatch) -> dict[str, np.ndarray]:
    """The concatenated layout of :meth:`EventBatch.to_flat` with int64 marks (what compiled loops take)."""
    flat = batch.to_flat()
    flat["marks"] = flat["marks"].astype(np.int64)
    return flat


def warn_if_not_stationary(branching_ratio: float) -> None:
    if branching_ratio >= 1.0:
        warnings.warn(
            f"fitted branching ratio {branching_ratio:.3f} >= 1: the process is not stationary",
            NonStationaryWarning,
            stacklevel=3,
        )


def budget_error(owner: Any, max_events: int, progress: str, branching_ratio: float | None = None) -> SamplingBudgetError:
    """The error of a sampler that passed ``max_events`` (total over the batch): how far it got
    (``progress``: events simulated, time reached), why (a supercritical branching ratio), how to go on."""
    why = ""
    if branching_ratio is not None:
        why = f"; branching ratio {branching_ratio:.3f}" + (
            " >= 1: the process is explosive, its event count grows without bound" if branching_ratio >= 1 else "")
    name = "the branching sampler" if owner is None else f"{type(owner).__name__}.sample"
    return SamplingBudgetError(f"{name} stopped at max_events={max_events} (events over all "
                               f"sequences): {progress}{why}. Pass a larger max_events= (tpp simulate: --max-events) or a "
                               "shorter t_end")


def simulation_window(
    n: int, t_end: float | np.ndarray, history: EventBatch | None, t_start: float, num_marks: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(starts, window starts, ends)`` per sequence: from ``t_start``, or continuing ``history``."""
    if history is not None:
        if history.num_marks > num_marks:
            raise ValueError(f"history has {history.num_marks} marks, the model {num_marks}")
        if len(history) != n:
            raise ValueError(f"n={n} but the history has {len(history)} sequences")
        starts = history.t_end.detach().cpu().numpy().astype(np.float64)
        t0s = history.t_start.detach().cpu().numpy().astype(np.float64)
    else:
        starts = np.full(n, float(t_start))
        t0s = starts
    ends = np.broadcast_to(np.asarray(t_end, np.float64), (n,)).copy()
    if np.any(ends < starts):
        raise ValueError("t_end must not be before the start of the simulation")
    return starts, t0s, ends


def assemble(
    seq: np.ndarray, times: np.ndarray, marks: np.ndarray, n: int, t0s: np.ndarray, ends: np.ndarray,
    num_marks: int, history: EventBatch | None = None,
) -> EventBatch:
    """Sort simulated events by (sequence, time) into a batch; a history's events come first."""
    if history is not None:
        flat = history.to_flat()
        seq = np.concatenate([np.repeat(np.arange(n), np.diff(flat["seq_offsets"])), seq])
        times = np.concatenate([flat["times"], times])
        marks = np.concatenate([flat["marks"], marks])
    in_order = seq.size < 2 or bool(np.all((np.diff(seq) > 0) | ((np.diff(seq) == 0) & (np.diff(times) >= 0))))
    if not in_order:  # samplers that emit sorted events (thinning) skip the O(N log N) sort
        order = np.lexsort((times, seq))  # stable: history before new events at equal times
        seq, times, marks = seq[order], times[order], marks[order]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(seq, minlength=n))]).astype(np.int64)
    return EventBatch.from_flat(times, offsets, t0s, ends, marks, num_marks)


DelaySampler = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
RemainingMass = Callable[[np.ndarray, np.ndarray], np.ndarray]


def simulate_branching(
    baseline: np.ndarray,
    adjacency: np.ndarray,
    support: float,
    draw_delays: DelaySampler,
    remaining: RemainingMass,
    n: int,
    t_end: float | np.ndarray,
    history: EventBatch | None,
    rng: np.random.Generator,
    t_start: float = 0.0,
    max_events: int = 50_000_000,
    owner: Any = None,
) -> EventBatch:
    """Exact simulation by the Poisson cluster construction (Hawkes & Oakes 1974).

    ``max_events`` caps the events over all sequences (the immigrants' expected number is checked
    before they are drawn); passing it raises :class:`~tpp.process.SamplingBudgetError` naming
    ``owner``'s class and how far the simulation got.

    Immigrants of type ``i`` arrive at rate ``baseline[i]``; each event of type ``j`` has
    ``Poisson(adjacency[i, j])`` children of type ``i``, delayed by draws from kernel ``ij``.
    Generations are drawn for all sequences at once; a child after ``t_end`` is dropped with its
    line (which can only be later).

    ``draw_delays(child_types, parent_types, lower)`` draws delays ``> lower`` from the kernels;
    ``remaining(parent_types, lower)`` is the ``[M, K]`` mean number of children still to come
    after an elapsed ``lower``. Given a history, the future is the superposition of new immigrants
    and of the children still to come of the history's last ``support``: older events are spent.
    """
    K = baseline.size
    starts, t0s, ends = simulation_window(n, t_end, history, t_start, K)
    ratio = float(np.max(np.abs(np.linalg.eigvals(adjacency)))) if adjacency.size else 0.0
    immigrants = np.outer(ends - starts, baseline)
    if float(immigrants.sum()) > max_events:  # refuse before drawing (and allocating) them
        raise budget_error(owner, max_events, f"the immigrants alone number {float(immigrants.sum()):.4g} on "
                           f"average", ratio)
    counts = rng.poisson(immigrants)
    seq = np.repeat(np.repeat(np.arange(n), K), counts.ravel())
    typ = np.repeat(np.tile(np.arange(K), n), counts.ravel())
    times = starts[seq] + rng.random(seq.size) * (ends - starts)[seq]

    def children(p_seq, p_typ, p_time, mean, lower):
        n_child = rng.poisson(mean).ravel()
        parent = np.repeat(np.arange(p_seq.size).repeat(K), n_child)
        c_typ = np.repeat(np.tile(np.arange(K), p_seq.size), n_child)
        delays = draw_delays(c_typ, p_typ[parent], lower[parent])
        c_time = p_time[parent] + delays
        c_seq = p_seq[parent]
        keep = c_time <= ends[c_seq]
        return c_seq[keep], c_typ[keep], c_time[keep]

    generation = (seq, typ, times)
    parts = [generation]
    if history is not None:
        flat = flat_events(history)
        h_seq = np.repeat(np.arange(n), np.diff(flat["seq_offsets"]))
        elapsed = starts[h_seq] - flat["times"]
        live = elapsed < support
        p_seq, p_typ, p_time, p_lower = h_seq[live], flat["marks"][live], flat["times"][live], elapsed[live]
        late = children(p_seq, p_typ, p_time, np.clip(remaining(p_typ, p_lower), 0, None), p_lower)
        parts.append(late)
        generation = tuple(np.concatenate(pair) for pair in zip(generation, late))
    total = sum(part[0].size for part in parts)
    depth = 0
    while generation[0].size:
        g_seq, g_typ, g_time = generation
        generation = children(g_seq, g_typ, g_time, adjacency[:, g_typ].T, np.zeros(g_seq.size))
        parts.append(generation)
        total += generation[0].size
        depth += 1
        if total > max_events:
            latest = max(float(part[2].max()) for part in parts if part[2].size)
            raise budget_error(owner, max_events, f"{total} events simulated in {depth} generations of children, "
                               f"the latest at t={latest:.6g} (t_end {float(ends.max()):.6g})", ratio)
    seq_all, typ_all, time_all = (np.concatenate(x) for x in zip(*parts))
    return assemble(seq_all, time_all, typ_all, n, t0s, ends, K, history)

