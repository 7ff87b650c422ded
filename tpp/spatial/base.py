"""The spatio-temporal protocol: point processes whose events carry a location.

A :class:`SpatioTemporalProcess` is a :class:`tpp.process.PointProcess` over events ``(t_n, x_n)``
with ``x_n`` in ``R^D`` (longitude/latitude, or any ``D`` continuous features of
:attr:`tpp.events.EventBatch.features`). Its density factorises as in Chen, Amos & Nickel (ICLR 2021,
eq. 2):

``log p = [sum_n log lambda(t_n | H_{t_n}) - int lambda]  +  sum_n log f(x_n | t_n, H_{t_n})``

the *time* part (a temporal point process) and the *space* part (the density of each location given
its time and the events strictly before it). Both are reported apart:

``log_likelihood_split(batch) -> (time [B], space [B])``
    nats per sequence; :meth:`log_likelihood` is their sum.
``spatial_density(batch, t, x) -> [B, M]``
    ``f(x | t, history)``: the density of a location at points ``x [M, D]`` (or ``[B, M, D]``) for an
    event at time ``t [B]``, given each sequence's events strictly before ``t`` (:meth:`history_before`).
``predict(batch) -> SpatialPrediction``
    the temporal forecast of :class:`~tpp.process.Prediction` plus the expected next location.
``sample(...)``
    sequences whose ``features`` hold the sampled locations (named by :attr:`location_names`).

Locations are read from the batch by feature name (:meth:`locations`): ``location_names`` fixes which
features, in which order; by default the first ``feature_dim`` features of the batch. Densities are in
the data's own units (per square degree for longitude/latitude); a model that standardises its inputs
subtracts ``D log scale`` itself.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tpp.events import EventBatch, EventDataError
from tpp.process import PointProcess, Prediction

__all__ = ["SpatialPrediction", "SpatioTemporalProcess", "history_before", "spatial_metrics"]


@dataclass
class SpatialPrediction(Prediction):
    """:class:`~tpp.process.Prediction` plus ``location_mean [B, D]``: the expected next location."""

    location_mean: Tensor | None = None


def history_before(batch: EventBatch, t: Tensor) -> EventBatch:
    """``batch`` cut to the events strictly before ``t [B]`` in each sequence, windows ending at ``t``.

    The one rule of the project (predictable intensities, ties do not condition one another): the
    history of a location drawn at ``t`` is the events with ``t_n < t``.
    """
    t = torch.as_tensor(t, dtype=batch.time.dtype, device=batch.time.device).reshape(-1)
    if t.shape[0] != batch.batch_size:
        raise ValueError(f"t must hold one time per sequence ({batch.batch_size}), got shape {tuple(t.shape)}")
    # Times are sorted, so the kept events are a prefix: the batch stays left-aligned.
    cut = batch._replace(mask=batch.mask & (batch.time < t[:, None]), t_end=torch.maximum(t, batch.t_start))
    cut._canonicalise_padding()
    return cut


class SpatioTemporalProcess(PointProcess):
    """Base of the spatio-temporal models: the module docstring states the protocol and shapes.

    Subclasses set ``feature_dim`` (``D``) and may set ``location_names`` (which features are the
    location); they implement :meth:`log_likelihood_split`, :meth:`spatial_log_density`,
    :meth:`intensity` and :meth:`sample`.
    """

    feature_dim: int
    location_names: tuple[str, ...] | None = None

    # ------------------------------------------------------------------ to implement
    @abc.abstractmethod
    def log_likelihood_split(self, batch: EventBatch) -> tuple[Tensor, Tensor]:
        """``(time [B], space [B])``: the temporal log-likelihood (survival term included) and the sum of
        ``log f(x_n | t_n, history)`` over each sequence's events."""

    @abc.abstractmethod
    def spatial_log_density(self, batch: EventBatch, t: Tensor, x: Tensor) -> Tensor:
        """``[B, M]`` ``log f(x | t, events of batch strictly before t)`` at ``x [M, D]`` or ``[B, M, D]``."""

    # ------------------------------------------------------------------ derived
    def log_likelihood(self, batch: EventBatch) -> Tensor:
        """``[B]`` time part + space part (Chen, Amos & Nickel 2021, eq. 2)."""
        time, space = self.log_likelihood_split(batch)
        return time + space

    def spatial_density(self, batch: EventBatch, t: Tensor, x: Tensor) -> Tensor:
        """``[B, M]`` density of the next location at ``x`` for an event at ``t [B]`` given the history."""
        return self.spatial_log_density(batch, t, x).exp()

    def locations(self, batch: EventBatch) -> Tensor:
        """``[B, L, D]`` the events' locations (float64), by :attr:`location_names` or the first ``D`` features."""
        if batch.features is None:
            raise EventDataError(f"{type(self).__name__} needs per-event locations, but the batch has no features",
                                 field="features")
        names = tuple(batch.feature_names)
        if self.location_names is not None:
            missing = [name for name in self.location_names if name not in names]
            if missing:
                raise EventDataError(f"{type(self).__name__} reads locations from features {list(self.location_names)},"
                                     f" but the batch has {list(names)} (missing {missing})", field="features")
            index = [names.index(name) for name in self.location_names]
        else:
            if len(names) < self.feature_dim:
                raise EventDataError(f"{type(self).__name__} has feature_dim={self.feature_dim}, but the batch has "
                                     f"{len(names)} features {list(names)}", field="features")
            index = list(range(self.feature_dim))
        return batch.features[..., index].double()

    def set_locations(self, feature_dim: int, location_names: Sequence[str] | None) -> None:
        """Constructor helper: ``D`` and the names of the location features (``None``: the first ``D``)."""
        if int(feature_dim) < 1:
            raise ValueError(f"feature_dim must be a positive integer, got {feature_dim}")
        self.feature_dim = int(feature_dim)
        self.location_names = None if location_names is None else tuple(str(n) for n in location_names)
        if self.location_names is not None and len(self.location_names) != self.feature_dim:
            raise ValueError(f"location_names {list(self.location_names)} must name feature_dim={self.feature_dim} "
                             "features")

    @abc.abstractmethod
    def expected_location(self, batch: EventBatch, t: Tensor) -> Tensor:
        """``[B, D]`` the mean of ``f(x | t, history)`` (closed form, or a seeded Monte Carlo estimate that says so)."""

    def predict(self, batch: EventBatch, quantiles: Sequence[float] = (0.1, 0.5, 0.9), **kwargs) -> SpatialPrediction:
        """Next event: the temporal forecast of :meth:`PointProcess.predict` and the expected location at the
        predicted mean time."""
        base = super().predict(batch, quantiles=quantiles, **kwargs)
        with torch.no_grad():
            where = self.expected_location(batch, base.time_mean)
        return SpatialPrediction(base.time_mean, base.time_quantiles, base.quantile_levels, base.mark_probs, where)


def spatial_metrics(model: SpatioTemporalProcess, batch: EventBatch, *, max_prefixes: int | None = None,
                    seed: int = 0, block: int = 16) -> dict[str, float]:
    """Time and space nats per event (higher is better) and the next-location error: the mean Euclidean distance
    between an event's location and the model's expected location given the events before it (feature units).

    The likelihoods are scored over blocks of ``block`` sequences (summed, then divided by all the events). The
    location error is over every event, or over ``max_prefixes`` of them drawn uniformly (seeded by ``seed``;
    ``location_error_events`` says how many): each is one query of :meth:`~SpatioTemporalProcess.expected_location`,
    asked ``block`` at a time in order of history length. A Monte Carlo expectation through a flow costs the flow's
    solves per query (the Jump CNF's grow with the history), so the cap is what keeps a long catalogue's score
    affordable; the likelihoods always use every event."""
    if max_prefixes is not None and int(max_prefixes) < 1:
        raise ValueError(f"max_prefixes must be a positive integer or None, got {max_prefixes}")
    if int(block) < 1:
        raise ValueError(f"block must be a positive integer, got {block}")
    block = int(block)
    with torch.no_grad():
        time_total = space_total = 0.0
        for start in range(0, len(batch), block):
            time, space = model.log_likelihood_split(batch[start : start + block])
            time_total, space_total = time_total + float(time.sum()), space_total + float(space.sum())
        n = max(batch.num_events, 1)
        out = {"time_log_likelihood_per_event": time_total / n, "space_log_likelihood_per_event": space_total / n}
        out["log_likelihood_per_event"] = out["time_log_likelihood_per_event"] + out["space_log_likelihood_per_event"]
        seq, pos = batch.mask.nonzero(as_tuple=True)
        if max_prefixes is not None and len(seq) > int(max_prefixes):
            pick = np.sort(np.random.default_rng(seed).choice(len(seq), int(max_prefixes), replace=False))
            seq, pos = seq[pick], pos[pick]
        order = torch.argsort(pos, stable=True)  # similar history lengths share a block
        seq, pos = seq[order], pos[order]
        x = model.locations(batch)
        errors = []
        for start in range(0, len(seq), block):
            b, k = seq[start : start + block], pos[start : start + block]
            mean = model.expected_location(batch[b], batch.time[b, k])
            errors.append(torch.linalg.vector_norm(mean - x[b, k], dim=-1))
        out["location_error"] = float(torch.cat(errors).mean()) if errors else float(np.nan)
        out["location_error_events"] = float(len(seq))
    return out
