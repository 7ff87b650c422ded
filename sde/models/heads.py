"""Readouts shared by the time-series models: what a latent state ``z`` says about the label or target.

Every model of :mod:`sde.models` maps a series to latent states ``[B, Q, H]`` (its own business)
and hands them to one of these heads, so the losses are written once:

* :class:`ClassificationHead`: ``log p(label | series) = log_softmax(readout(z_end))[label]`` (the
  cross-entropy of every paper in this family, as a log-likelihood);
* :class:`GaussianHead`: ``y ~ N(readout(z), diag(s)^2)`` with a learnable noise scale ``s`` per
  output (regression on the final state, or forecasting at every observation row); with
  ``likelihood="laplace"`` ``y ~ Laplace(readout(z), b)`` instead (:data:`LIKELIHOODS`). A Gaussian
  NLL makes the readout the conditional *mean*, a Laplace NLL the conditional *median*: the one to
  train when forecasts are scored by MAE (PhysioNet 2012 forecast, GRU-D: 3x lower MSE than SAITS,
  which trains on an L1 loss, but 4 % higher MAE with the Gaussian head).

The readout follows the stable-SDE reference code (Oh et al. 2024, torch-ists ``NeuralSDE.linear``
then ``ists_classifier.fc``), shortened to ``tanh -> Linear(H, H) [-> BatchNorm] -> ReLU ->
Linear(H, out)``: the tanh bounds what reaches the readout whatever the scale of the latent state (a
geometric SDE's state is only known to be positive). The batch-norm is the reference classifier's and
is on by default for classification (``batch_norm``): without it the stable SDEs, whose final states
differ little from series to series early in training, learned several times slower in our runs
(BasicMotions, 80 steps: LSDE 50 % -> 75 % test accuracy, GSDE 25 % -> 75 %). As in the reference, a
series' score in training mode then depends on its minibatch's statistics; ``eval()`` mode (``predict``,
``tpp.fit``'s validation) uses the running statistics, so scores are per series. The reference's
dropout and its 100x gradient on the last layer are left out.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LIKELIHOODS", "ClassificationHead", "GaussianHead", "GaussianPrediction", "StateBatchNorm", "Task",
           "check_likelihood", "make_head", "readout"]

LIKELIHOODS = ("gaussian", "laplace")
"""Observation models of :class:`GaussianHead` (the ``likelihood`` argument of the series models)."""


def check_likelihood(likelihood: str, owner: str = "likelihood") -> str:
    """``likelihood`` if it is one of :data:`LIKELIHOODS`, else a ValueError naming the allowed values."""
    if not isinstance(likelihood, str) or likelihood not in LIKELIHOODS:
        raise ValueError(f"{owner}: likelihood must be one of {', '.join(map(repr, LIKELIHOODS))}, got {likelihood!r}")
    return likelihood


class Task(enum.Enum):
    """What the series predict.

    ``CLASSIFICATION``: ``batch.labels [B]`` (long), read from the state at each series' last row.
    ``REGRESSION``: ``batch.targets [B, O]``, read from the state at each series' last row.
    ``FORECAST``: ``batch.targets [B, L, O]`` aligned with the rows, read from the state at each
    row's time (NaN targets are not scored; a model must not use a row's own values to forecast it
    unless the target is defined so).
    """

    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    FORECAST = "forecast"


class StateBatchNorm(nn.BatchNorm1d):
    """Batch-norm over the last axis of ``[..., H]``; batch statistics only when training on more than
    one state (a minibatch of one series uses the running statistics instead of failing)."""

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])
        use_batch = self.training and flat.shape[0] > 1
        out = F.batch_norm(flat, self.running_mean, self.running_var, self.weight, self.bias, use_batch,
                           self.momentum, self.eps)
        return out.view_as(x)


def readout(hidden_size: int, output_size: int, batch_norm: bool = False) -> nn.Sequential:
    """``tanh -> Linear(H, H) [-> batch-norm] -> ReLU -> Linear(H, out)`` (the stable-SDE reference readout)."""
    norm: list[nn.Module] = [StateBatchNorm(hidden_size)] if batch_norm else []
    return nn.Sequential(nn.Tanh(), nn.Linear(hidden_size, hidden_size), *norm, nn.ReLU(),
                         nn.Linear(hidden_size, output_size))


@dataclass
class GaussianPrediction:
    """Predictive mean and standard deviation, ``[B, O]`` (regression) or ``[B, L, O]`` (forecast).

    ``family``: the observation model they describe, ``"gaussian"`` or ``"laplace"`` (then ``mean`` is
    the location, the Laplace's mean and median, and ``std = sqrt(2) b`` its standard deviation, so the
    scale is ``b = std / sqrt(2)``)."""

    mean: Tensor
    std: Tensor
    family: str = "gaussian"


class ClassificationHead(nn.Module):
    """Class logits from the final state; log-likelihood = log-softmax at the true label."""

    def __init__(self, hidden_size: int, num_classes: int, batch_norm: bool = True) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"classification needs at least 2 classes, got output_size={num_classes}")
        self.num_classes = num_classes
        self.net = readout(hidden_size, num_classes, batch_norm)

    def logits(self, z: Tensor) -> Tensor:
        """``[B, n_classes]`` from ``z [B, H]``."""
        return self.net(z)

    def log_likelihood(self, z: Tensor, labels: Tensor) -> Tensor:
        """``[B]`` log p(label | series)."""
        if labels.min() < 0 or labels.max() >= self.num_classes:
            bad = int(torch.nonzero((labels < 0) | (labels >= self.num_classes))[0, 0])
            raise ValueError(f"series {bad}: label {int(labels[bad])} outside 0..{self.num_classes - 1}")
        return F.log_softmax(self.logits(z), -1).gather(-1, labels.long()[:, None])[:, 0]

    def probabilities(self, z: Tensor) -> Tensor:
        """``[B, n_classes]``."""
        return F.softmax(self.logits(z), -1)


class GaussianHead(nn.Module):
    """``y ~ N(readout(z), s^2)`` per output; ``s = softplus(rho)`` is learned (starts at ``init_std``).

    ``likelihood="laplace"``: ``y ~ Laplace(readout(z), b)`` with ``b = softplus(rho) + 1e-6`` (the same
    parameter, so state dicts keep their keys); the readout then learns the conditional median."""

    def __init__(self, hidden_size: int, output_size: int, init_std: float = 1.0, batch_norm: bool = False,
                 likelihood: str = "gaussian") -> None:
        super().__init__()
        self.likelihood = check_likelihood(likelihood, type(self).__name__)
        self.net = readout(hidden_size, output_size, batch_norm)
        # softplus^-1(init_std): the noise starts at init_std
        self.rho = nn.Parameter(torch.full((output_size,), math.log(math.expm1(init_std))))

    def std(self) -> Tensor:
        """``[O]`` observation noise (floored so the likelihood stays bounded): the Gaussian's std, or the
        Laplace's scale ``b`` (its std is ``sqrt(2) b``)."""
        return F.softplus(self.rho) + 1e-6

    def predict(self, z: Tensor) -> GaussianPrediction:
        """Mean and std with the shape of ``z`` but the last axis ``O`` (``family`` says which observation model)."""
        mean = self.net(z)
        scale = self.std().expand_as(mean)
        if self.likelihood == "laplace":
            return GaussianPrediction(mean, math.sqrt(2.0) * scale, family="laplace")
        return GaussianPrediction(mean, scale)

    def log_likelihood(self, z: Tensor, targets: Tensor) -> Tensor:
        """``[B]``: the Gaussian (or Laplace) log density summed over every finite target of each series."""
        mean = self.net(z)
        if targets.shape != mean.shape:
            raise ValueError(f"targets have shape {tuple(targets.shape)}, the model predicts {tuple(mean.shape)}")
        scale = self.std()
        observed = torch.isfinite(targets)
        # a missing target is replaced by the (detached) prediction: no NaN reaches the gradient
        y = torch.where(observed, targets, mean.detach())
        if self.likelihood == "laplace":
            log_density = -torch.log(2 * scale) - (y - mean).abs() / scale
        else:
            log_density = -0.5 * ((y - mean) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)
        return (log_density * observed).flatten(1).sum(1)


def make_head(task: Task, hidden_size: int, output_size: int, batch_norm: bool | None = None,
              likelihood: str = "gaussian") -> ClassificationHead | GaussianHead:
    """The head a task needs (``output_size`` = number of classes, or of regression outputs).

    ``batch_norm`` None: on for classification (the reference classifier), off otherwise. ``likelihood``:
    the observation model of a regression / forecast head (:data:`LIKELIHOODS`); a classifier has none, so
    anything but ``"gaussian"`` (the default) is refused for it rather than ignored."""
    check_likelihood(likelihood, "make_head")
    if task is Task.CLASSIFICATION:
        if likelihood != "gaussian":
            raise ValueError(f"likelihood={likelihood!r} is for regression and forecast; a classifier's head is "
                             "a softmax (leave likelihood at 'gaussian')")
        return ClassificationHead(hidden_size, output_size, True if batch_norm is None else batch_norm)
    if task in (Task.REGRESSION, Task.FORECAST):
        return GaussianHead(hidden_size, output_size, batch_norm=bool(batch_norm), likelihood=likelihood)
    raise TypeError(f"task must be a sde.models.heads.Task, got {task!r}")
