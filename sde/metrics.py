"""Scores of probabilistic predictions and of binary classifiers, shared by :mod:`sde.tasks`, the
benchmarks and any peer run on the same held-out values.

Forecast / imputation (elementwise; ``y`` any shape):

* :func:`crps_gaussian` - the continuous ranked probability score of ``N(mean, std**2)``, in closed form.
* :func:`crps_laplace` - the CRPS of ``Laplace(loc, scale)``, in closed form (the predictive of a series
  model trained with a Laplace head, ``likelihood="laplace"``).
* :func:`crps_samples` - the CRPS of an empirical predictive given by ``S >= 2`` samples ``[S, *y.shape]``,
  in its energy form with the unbiased ("fair") spread term
  ``mean_i |X_i - y| - sum_{i<j} |X_i - X_j| / (S (S - 1))``: its expectation over the samples is the
  CRPS of the distribution they are drawn from, for any ``S``.
* :func:`crps_mixture` - the CRPS of a Gaussian mixture (samples of the predictive mean, each with Gaussian
  noise, e.g. a latent SDE's posterior paths and its observation noise), exactly (Grimit et al. 2006).
* :func:`interval_coverage` / :func:`inside_interval` - whether ``y`` lies in the central ``level`` interval
  of a Gaussian ``(mean, std)``, of samples (their empirical quantiles; few samples give narrower
  intervals, so prefer :class:`GaussianMixture` where the noise is known) or of a :class:`GaussianMixture`
  (its exact quantiles: ``y`` is inside iff the mixture's CDF at ``y`` is in ``[(1 - level) / 2, (1 + level) / 2]``)
  or of a :class:`Laplace` (:func:`laplace_interval`).

Classification (``scores``: the probability of the positive class, ``labels`` 0/1):

* :func:`auroc` - the area under the ROC curve (the Mann-Whitney statistic, tied scores count one half).
* :func:`auprc` - the average precision ``sum_k (R_k - R_{k-1}) P_k`` over the distinct score thresholds
  (tied scores enter together; scikit-learn's ``average_precision_score``), for imbalanced labels.

Lower CRPS is better; it has the units of the data and equals the MAE for a point forecast. The module
imports only numpy at load time (torch on first use), so scoring code stays cheap to import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from sde.signature import signature_kernel, signature_mmd  # path-set scores (issue 19); torch on first use

if TYPE_CHECKING:  # torch is imported on first use
    from torch import Tensor

__all__ = [
    "GaussianMixture",
    "Laplace",
    "auprc",
    "auroc",
    "crps_gaussian",
    "crps_laplace",
    "crps_mixture",
    "crps_samples",
    "inside_interval",
    "interval_coverage",
    "laplace_interval",
    "signature_kernel",
    "signature_mmd",
]

_SQRT_PI = math.sqrt(math.pi)


def _tensor(x: Any, like: Any = None) -> Tensor:
    import torch

    if isinstance(x, torch.Tensor):
        return x.to(torch.float64)
    device = like.device if isinstance(like, torch.Tensor) else None
    return torch.as_tensor(np.asarray(x, dtype=np.float64), device=device)


def _phi(z: Tensor) -> Tensor:
    import torch

    return torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _cdf(z: Tensor) -> Tensor:
    import torch

    return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))


def _abs_normal_mean(m: Tensor, s: Tensor) -> Tensor:
    """``E|Z|`` for ``Z ~ N(m, s**2)`` (``|m|`` where ``s == 0``)."""
    import torch

    safe = torch.where(s > 0, s, torch.ones_like(s))
    z = m / safe
    value = safe * 2 * _phi(z) + m * (2 * _cdf(z) - 1)
    return torch.where(s > 0, value, m.abs())


# --------------------------------------------------------------------------- CRPS
def crps_gaussian(mean: Any, std: Any, y: Any) -> Tensor:
    """Elementwise CRPS of ``N(mean, std**2)`` at ``y``: ``std * (z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi))``,
    ``z = (y - mean) / std``; ``|y - mean|`` where ``std == 0`` (a point forecast). Float64, broadcast shape."""
    import torch

    y = _tensor(y)
    mean, std = _tensor(mean, y), _tensor(std, y)
    if bool((std < 0).any()):
        raise ValueError("crps_gaussian: std must be >= 0")
    safe = torch.where(std > 0, std, torch.ones_like(std))
    z = (y - mean) / safe
    value = safe * (z * (2 * _cdf(z) - 1) + 2 * _phi(z) - 1 / _SQRT_PI)
    return torch.where(std > 0, value, (y - mean).abs())


def crps_laplace(loc: Any, scale: Any, y: Any) -> Tensor:
    """Elementwise CRPS of ``Laplace(loc, scale)`` (density ``exp(-|x - loc| / scale) / (2 scale)``) at ``y``:
    ``|y - loc| + scale * exp(-|y - loc| / scale) - 3 scale / 4``, the closed form of
    ``int (F(x) - 1{x >= y})^2 dx`` (Jordan, Krueger & Lerch 2019, "Evaluating probabilistic forecasts with
    scoringRules", J. Stat. Softw. 90(12), the ``crps_laplace`` of their R package); ``|y - loc|`` where
    ``scale == 0`` (a point forecast). Float64, broadcast shape."""
    import torch

    y = _tensor(y)
    loc, scale = _tensor(loc, y), _tensor(scale, y)
    if bool((scale < 0).any()):
        raise ValueError("crps_laplace: scale must be >= 0")
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    err = (y - loc).abs()
    value = err + safe * torch.exp(-err / safe) - 0.75 * safe
    return torch.where(scale > 0, value, err)


def crps_samples(samples: Any, y: Any) -> Tensor:
    """Elementwise CRPS of the predictive given by ``samples [S, *y.shape]`` (``S >= 2``), energy form with
    the unbiased spread term (see the module docstring); O(S log S) per value (sorted samples)."""
    import torch

    y = _tensor(y)
    x = _tensor(samples, y)
    if x.dim() != y.dim() + 1 or tuple(x.shape[1:]) != tuple(y.shape):
        raise ValueError(f"crps_samples: samples must be [S, *y.shape] = [S, {', '.join(map(str, y.shape))}], "
                         f"got {tuple(x.shape)}")
    S = x.shape[0]
    if S < 2:
        raise ValueError(f"crps_samples: the unbiased form needs at least 2 samples, got {S}")
    accuracy = (x - y).abs().mean(0)
    ordered = torch.sort(x, dim=0).values
    k = torch.arange(1, S + 1, dtype=x.dtype, device=x.device).reshape(S, *([1] * y.dim()))
    pair_sum = (ordered * (2 * k - S - 1)).sum(0)  # sum_{i<j} |x_i - x_j|
    return accuracy - pair_sum / (S * (S - 1))


@dataclass(frozen=True)
class GaussianMixture:
    """A predictive ``sum_s w_s N(means[s], std**2)``: ``means [S, *shape]``, ``std`` broadcastable to
    ``shape``, ``weights`` ``[S, *shape]`` (broadcastable; summing to one over ``S``) or None (equal)."""

    means: Any
    std: Any
    weights: Any = None

    def parts(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``means [S, ...]``, ``std [...]`` and ``weights [S, ...]`` as float64 tensors."""
        import torch

        means = _tensor(self.means, like)
        std = _tensor(self.std, like)
        S = means.shape[0]
        weights = (torch.full((S,) + (1,) * (means.dim() - 1), 1.0 / S, dtype=means.dtype, device=means.device)
                   if self.weights is None else _tensor(self.weights, like))
        return means, std, weights

    def cdf(self, y: Any) -> Tensor:
        """The mixture's distribution function at ``y``."""
        import torch

        y = _tensor(y)
        means, std, weights = self.parts(y)
        safe = torch.where(std > 0, std, torch.ones_like(std))
        inside = torch.where(std > 0, _cdf((y - means) / safe), (y >= means).to(y.dtype))
        return (weights * inside).sum(0)


def crps_mixture(mixture: GaussianMixture, y: Any) -> Tensor:
    """Elementwise exact CRPS of a :class:`GaussianMixture` at ``y``:
    ``sum_i w_i E|N(y - mu_i, s**2)| - 1/2 sum_ij w_i w_j E|N(mu_i - mu_j, 2 s**2)|`` (Grimit et al. 2006);
    O(S**2) per value."""
    import torch

    y = _tensor(y)
    means, std, weights = mixture.parts(y)
    std = std.expand_as(y) if std.dim() <= y.dim() else std
    accuracy = (weights * _abs_normal_mean(y - means, std.expand_as(means))).sum(0)
    diff = means[:, None] - means[None, :]  # [S, S, ...]
    spread = _abs_normal_mean(diff, (math.sqrt(2.0) * std).expand_as(diff))
    pair = (weights[:, None] * weights[None, :] * spread).sum((0, 1))
    return accuracy - 0.5 * pair + torch.zeros_like(y)


@dataclass(frozen=True)
class Laplace:
    """A predictive ``Laplace(loc, scale)`` (elementwise; ``scale`` is ``b``, the std is ``sqrt(2) b``)."""

    loc: Any
    scale: Any


def laplace_interval(loc: Any, scale: Any, level: float) -> tuple[Tensor, Tensor]:
    """The central ``level`` interval ``loc -/+ scale * log(1 / (1 - level))`` of ``Laplace(loc, scale)``:
    ``P(|Y - loc| <= t) = 1 - exp(-t / scale)`` equals ``level`` at ``t = scale * log(1 / (1 - level))``."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    loc, scale = _tensor(loc), _tensor(scale)
    half = scale * math.log(1.0 / (1.0 - level))
    return loc - half, loc + half


# --------------------------------------------------------------------------- interval coverage
Predictive = Union["Tensor", np.ndarray, tuple, GaussianMixture, Laplace]


def inside_interval(predictive: Predictive, y: Any, level: float) -> Tensor:
    """Elementwise: is ``y`` in the central ``level`` interval of ``predictive``? ``predictive`` is a
    ``(mean, std)`` pair (Gaussian), a :class:`GaussianMixture`, a :class:`Laplace` (:func:`laplace_interval`),
    or samples ``[S, *y.shape]`` (the interval between their empirical ``(1 -/+ level) / 2`` quantiles, linear
    interpolation)."""
    import torch

    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    y = _tensor(y)
    lo, hi = (1 - level) / 2, (1 + level) / 2
    if isinstance(predictive, tuple):
        if len(predictive) != 2:
            raise TypeError("a Gaussian predictive is a (mean, std) pair")
        mean, std = _tensor(predictive[0], y), _tensor(predictive[1], y)
        return _inside(GaussianMixture(mean[None], std).cdf(y), lo, hi)
    if isinstance(predictive, GaussianMixture):
        return _inside(predictive.cdf(y), lo, hi)
    if isinstance(predictive, Laplace):
        low, high = laplace_interval(_tensor(predictive.loc, y), _tensor(predictive.scale, y), level)
        return (low <= y) & (y <= high)
    x = _tensor(predictive, y)
    if x.dim() != y.dim() + 1 or tuple(x.shape[1:]) != tuple(y.shape):
        raise ValueError(f"samples must be [S, *y.shape], got {tuple(x.shape)} for y {tuple(y.shape)}")
    q = torch.quantile(x, torch.tensor([lo, hi], dtype=x.dtype, device=x.device), dim=0)
    return (q[0] <= y) & (y <= q[1])


def _inside(cdf: Tensor, lo: float, hi: float) -> Tensor:
    return (cdf >= lo) & (cdf <= hi)


def interval_coverage(predictive: Predictive, y: Any, level: float) -> float:
    """Share of the values ``y`` inside the central ``level`` interval of ``predictive`` (see
    :func:`inside_interval`); NaN for no values. A calibrated predictive covers about ``level``."""
    inside = inside_interval(predictive, y, level)
    return float(inside.to(float).mean()) if inside.numel() else float("nan")


# --------------------------------------------------------------------------- binary classification
def _binary(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores, dtype=np.float64).ravel()
    y = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in size: {s.size} and {y.size}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, got {sorted(set(np.unique(y).tolist()) - {0, 1})[:5]}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return s, y.astype(bool)


def auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random negative,
    ties counted one half (average ranks); NaN when only one class is present."""
    s, y = _binary(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=np.float64)
    sorted_s = s[order]
    # average 1-based rank of each run of tied scores
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auprc(scores: Any, labels: Any) -> float:
    """Average precision ``sum_k (R_k - R_{k-1}) P_k`` with ``P_k``, ``R_k`` the precision and recall of
    "score >= the k-th largest distinct score" (tied scores are one threshold); NaN with no positives."""
    s, y = _binary(scores, labels)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]  # the last index of every run of tied scores
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1.0)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
