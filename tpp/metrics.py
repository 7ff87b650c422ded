"""Evaluation shared by all models: log-likelihood per event and time-rescaling goodness of fit.

Time-rescaling theorem (Brown et al. 2002; Papangelou 1972): if the model is the true process,
the compensator increments between consecutive events of each type,
``Lambda_k(t_n^k) - Lambda_k(t_{n-1}^k)``, are i.i.d. Exp(1). The KS test against Exp(1) and the
QQ plot of these residuals check a fit without any tuning parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.stats
import torch

from tpp.events import EventBatch
from tpp.process import PointProcess

__all__ = ["RescalingResult", "time_rescaling", "log_likelihood_per_event", "rescaled_residuals"]


@dataclass
class RescalingResult:
    """Rescaled inter-event times and their test against Exp(1)."""

    residuals: np.ndarray  # [M] pooled over sequences and types
    ks_statistic: float
    ks_pvalue: float

    def qq(self, num: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(theoretical Exp(1) quantiles, empirical quantiles) for a QQ plot."""
        res = np.sort(self.residuals)
        if num is not None and res.size > num:
            res = res[np.linspace(0, res.size - 1, num).round().astype(int)]
            probs = (np.linspace(0, self.residuals.size - 1, num).round() + 0.5) / self.residuals.size
        else:
            probs = (np.arange(res.size) + 0.5) / res.size
        return -np.log1p(-probs), res


def log_likelihood_per_event(model: PointProcess, batch: EventBatch) -> float:
    """Total log-likelihood divided by the number of events (nats per event)."""
    with torch.no_grad():
        return float(model.log_likelihood(batch).detach().sum()) / max(batch.num_events, 1)


def rescaled_residuals(model: PointProcess, batch: EventBatch) -> np.ndarray:
    """Compensator increments between consecutive events of the same type, pooled (``[M]``)."""
    with torch.no_grad():
        cum = model.cumulative_intensity(batch)  # [B, L, K]
    mark = batch.mark
    value = cum.gather(2, mark.clamp_max(cum.shape[2] - 1)[..., None])[..., 0]
    mask = batch.mask.cpu().numpy()
    value = value.detach().cpu().numpy()[mask]
    marks = mark.cpu().numpy()[mask]
    seq = np.repeat(np.arange(len(batch)), mask.sum(1))
    order = np.lexsort((np.arange(marks.size), marks, seq))  # group by (sequence, type), keep time order
    value, marks, seq = value[order], marks[order], seq[order]
    first = np.ones(value.size, bool)
    first[1:] = (seq[1:] != seq[:-1]) | (marks[1:] != marks[:-1])
    prev = np.concatenate([[0.0], value[:-1]])
    return np.where(first, value, value - prev)


def time_rescaling(model: PointProcess, batch: EventBatch) -> RescalingResult:
    """Residuals of the time-rescaling theorem and the KS test of them against Exp(1)."""
    residuals = rescaled_residuals(model, batch)
    if residuals.size == 0:
        return RescalingResult(residuals, float("nan"), float("nan"))
    test = scipy.stats.kstest(residuals, "expon")
    return RescalingResult(residuals, float(test.statistic), float(test.pvalue))
