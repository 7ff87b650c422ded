"""Clock checks on event data: catch absolute timestamps (Unix seconds, milliseconds) read against a window
that starts at 0.

A process fitted on ``[0, t_end]`` when the events are Unix seconds (about ``1.7e9``) sees decades of
silence before the first event: the baseline rate collapses towards zero, kernels are fitted to the
last few percent of the window, and float32 time grids lose the gaps entirely. Nothing fails, the fit
is just wrong, so :func:`warn_if_absolute_time` says so (once per fit) and names the fix.
"""

from __future__ import annotations

import warnings

import numpy as np

from tpp.events import EventBatch

__all__ = ["AbsoluteTimeWarning", "ABSOLUTE_TIME_RATIO", "absolute_time_ratio", "warn_if_absolute_time"]

#: The first event of every sequence lies more than this many mean spans after its window start.
ABSOLUTE_TIME_RATIO = 100.0


class AbsoluteTimeWarning(UserWarning):
    """The event times look absolute (e.g. Unix seconds) while the windows start far before them (e.g. at 0)."""


def absolute_time_ratio(batch: EventBatch) -> float | None:
    """``min_b (first_b - t_start_b) / mean_b (t_end_b - first_b)`` over the sequences ``b`` with events.

    ``first_b`` is the first event of sequence ``b``. The minimum lead (not the mean) so that one
    sequence whose window really starts long before its events does not speak for a whole batch;
    the mean span, so that one short sequence does not either. None when it is undefined: no events,
    or every sequence spans zero time after its first event (single events: no scale to compare to).
    """
    flat = batch.to_flat()
    offsets = flat["seq_offsets"]
    has_events = np.diff(offsets) > 0
    if not has_events.any():
        return None
    first = np.asarray(flat["times"], dtype=np.float64)[offsets[:-1][has_events]]
    lead = first - np.asarray(flat["t_start"], dtype=np.float64)[has_events]
    span = float(np.mean(np.asarray(flat["t_end"], dtype=np.float64)[has_events] - first))
    if not span > 0:
        return None
    return float(lead.min()) / span


def warn_if_absolute_time(batch: EventBatch, where: str, stacklevel: int = 3) -> bool:
    """Warn with :class:`AbsoluteTimeWarning` (and return True) when ``batch`` looks like absolute timestamps.

    The rule: :func:`absolute_time_ratio` above :data:`ABSOLUTE_TIME_RATIO`, i.e. every sequence's first
    event lies more than 100 mean spans (first event to window end) after its window start. Unix
    seconds with ``t_start=0`` give ratios of ``1e5`` and more; the registry's data sets stay below
    ``0.03`` (their windows start at or just before their events). ``where`` names the caller in the
    message. Nothing is changed: the fix is the caller's (see the message).
    """
    ratio = absolute_time_ratio(batch)
    if ratio is None or not ratio > ABSOLUTE_TIME_RATIO:
        return False
    flat = batch.to_flat()
    offsets = flat["seq_offsets"]
    first = float(np.asarray(flat["times"], dtype=np.float64)[offsets[:-1][np.diff(offsets) > 0]].min())
    warnings.warn(
        f"{where}: the event times look absolute (first event at {first:.6g}, every sequence's first event more "
        f"than {ABSOLUTE_TIME_RATIO:g} x the mean span of its events after its window start; here {ratio:.3g} x): "
        "the window before the first event counts as observed silence and distorts the fit. Give each sequence's "
        "window start (tpp.read_events(..., t_start=<column>) or EventBatch.from_sequences(..., t_start=[...])) "
        "or shift the times so that each sequence starts near 0 (times - times.min()). The data are used as given.",
        AbsoluteTimeWarning,
        stacklevel=stacklevel,
    )
    return True
