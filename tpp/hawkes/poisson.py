"""Homogeneous (marked) Poisson process: the baseline every other model must beat.

``lambda_k(t) = rate_k``; ``log L = sum_n log rate_{k_n} - (t_end - t_start) sum_k rate_k``.
The MLE is closed form: ``rate_k = N_k / sum_b (t_end_b - t_start_b)``.
"""

from __future__ import annotations

import time as _time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tpp.events import EventBatch
from tpp.hawkes._common import (assemble, budget_error, check_fit_arguments, check_parameter_size, record_validation,
                                simulation_window)
from tpp.model import Seed
from tpp.options import Interval, check_params
from tpp.process import PointProcess, as_numpy_rng

__all__ = ["Poisson"]


class Poisson(PointProcess):
    """Homogeneous Poisson process with one rate per mark; ``rate_`` after :meth:`fit`."""

    _constraints = {"num_marks": Interval(1, None, integer=True)}

    def __init__(self, num_marks: int = 1) -> None:
        super().__init__()
        check_params(self, num_marks=num_marks)
        self.num_marks = int(num_marks)
        check_parameter_size(self, (self.num_marks,), f"num_marks={self.num_marks}")
        self.log_rate = nn.Parameter(torch.zeros(num_marks, dtype=torch.float64))

    @classmethod
    def from_params(cls, rates: Sequence[float] | float) -> "Poisson":
        rates = np.atleast_1d(np.asarray(rates, np.float64))
        if not np.all(np.isfinite(rates)) or np.any(rates <= 0):
            raise ValueError(f"rates must be positive and finite, got {rates.tolist()}")
        model = cls(rates.size)
        with torch.no_grad():
            model.log_rate.copy_(torch.from_numpy(np.log(rates)))
        model.rate_ = rates.copy()
        return model

    def to_dict(self) -> dict:
        return {"model": "poisson", "rates": self.rate.detach().numpy().tolist()}

    @property
    def rate(self) -> Tensor:
        return self.log_rate.exp()

    @property
    def baseline_(self) -> np.ndarray:
        """The rates, under the name Hawkes models use for their constant part."""
        return self.rate_

    def log_likelihood(self, batch: EventBatch) -> Tensor:
        self.check_marks(batch)
        log_rate = self.log_rate.to(batch.dtype)
        per_event = torch.where(batch.mask, log_rate[batch.mark], torch.zeros((), dtype=batch.dtype))
        return per_event.sum(1) - batch.duration * self.rate.to(batch.dtype).sum()

    def intensity(self, batch: EventBatch, t: Tensor) -> Tensor:
        return self.rate.to(t.dtype).expand(*t.shape, self.num_marks)

    def compensator(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        return batch.duration * self.rate.to(batch.dtype).sum()

    def cumulative_intensity(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        elapsed = (batch.time - batch.t_start[:, None])[..., None]
        return elapsed * self.rate.to(batch.dtype)

    def fit(self, train: EventBatch, val: EventBatch | None = None, **trainer_options: Any) -> "Poisson":
        """Closed-form MLE ``rate_k = N_k / total observed time``; sets ``rate_`` and ``fit_result_``.

        ``val``: a held-out batch, only scored (``fit_result_["val_score"]``, log-likelihood per event).
        ``trainer_options`` (``epochs``, ``batch_size``, ``lr``, ``seed``, ...) are accepted for the
        model contract and unused: the estimate is closed form.
        """
        check_fit_arguments(self, val, trainer_options, train=train)
        data = train
        self.check_marks(data)
        start = _time.perf_counter()
        total_time = float(data.duration.sum())
        if total_time <= 0:
            raise ValueError("cannot fit rates: the observation windows have zero total length")
        counts = torch.bincount(data.mark[data.mask], minlength=self.num_marks).double().numpy()
        if np.any(counts == 0):
            raise ValueError(f"no events of type(s) {np.flatnonzero(counts == 0).tolist()}: their rate MLE is 0")
        rates = counts / total_time
        with torch.no_grad():
            self.log_rate.copy_(torch.from_numpy(np.log(rates)))
        self.rate_ = rates
        self.fit_result_ = {"seconds": _time.perf_counter() - start, "converged": True}
        record_validation(self, val, self.fit_result_)
        return self

    def sample(
        self,
        n: int,
        t_end: float,
        history: EventBatch | None = None,
        generator: Seed = None,
        t_start: float = 0.0,
        max_events: int = 50_000_000,
    ) -> EventBatch:
        """Exact simulation: ``Poisson(rate_k * duration)`` events of each type, uniform on the window
        (continuing ``history`` from its window ends when given). ``max_events`` caps the expected
        number of events over all sequences, checked before drawing (a long horizon would otherwise
        allocate them all): passing it raises :class:`~tpp.process.SamplingBudgetError`."""
        rng = as_numpy_rng(generator)
        rates = self.rate.detach().numpy()
        starts, t0s, ends = simulation_window(n, t_end, history, t_start, self.num_marks)
        expected = np.outer(ends - starts, rates)
        if float(expected.sum()) > max_events:
            raise budget_error(self, max_events, f"{float(expected.sum()):.4g} events expected on windows up to "
                               f"t_end={float(ends.max()):.6g}, none simulated")
        counts = rng.poisson(expected)
        seq = np.repeat(np.repeat(np.arange(n), self.num_marks), counts.ravel())
        typ = np.repeat(np.tile(np.arange(self.num_marks), n), counts.ravel())
        times = starts[seq] + rng.random(seq.size) * (ends - starts)[seq]
        return assemble(seq, times, typ, n, t0s, ends, self.num_marks, history)
