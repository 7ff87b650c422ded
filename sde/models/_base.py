"""What every time-series model of :mod:`sde.models` shares, written once.

A model maps a :class:`~sde.series.SeriesBatch` to latent states at chosen times (its own
business, :meth:`SeriesModel.latent`); everything else is here, on the one model contract
(:class:`tpp.model.Model`):

* the input standardisation (:meth:`SeriesModel.initialise`: per-channel mean and std of the
  observed training values, and a time scale, the longest training series' duration, so a series
  lives on about ``[0, 1]`` as in the stable-SDE reference code, which puts every series on
  ``linspace(0, 1, L)``). The trainer calls it once before training;
* the clock: each series starts at 0 (its first row); the class of a series does not depend on
  when it was recorded, and a batch of series solved together must all start at the solve's ``t0``;
* the heads (:mod:`sde.models.heads`), per task: ``label_log_prob(batch) -> [B]`` is
  ``log p(label | series)`` (classification), ``log_density(batch) -> [B]`` the Gaussian log density
  of the targets (regression, forecast); :meth:`SeriesModel.objective` is the task's one;
  ``predict(batch)`` gives class probabilities or mean and std; ``score(data)`` the accuracy
  (classification) or the mean log density per observed target (regression, forecast).

:class:`PathModel` adds what the models driven by a control path share (neural CDE, stable neural
SDEs): the path (:class:`sde.paths.ControlPath`), the step-size rule of the reference code
``dt = max(min observation gap, 1e-3)``, and one solve on the union of the query times.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from sde.models.heads import ClassificationHead, GaussianHead, GaussianPrediction, Task, check_likelihood, make_head
from tpp.model import Model, Seed
from tpp.options import Interval, Options, check_params, check_size

if TYPE_CHECKING:  # imported for type hints only: a model imports the path machinery when it needs it
    from sde.paths import ControlPath
    from sde.series import SeriesBatch

__all__ = ["MIN_STEP", "PathModel", "SeriesModel", "eval_mode", "seeded"]

MIN_STEP = 1e-3
"""Smallest default step (the reference code's ``max(min gap, 1e-3)``): bounds the cost of a solve."""


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Every submodule in eval mode for the block, each one's own flag restored after it: a query
    (``score``, ``predict``) never updates running statistics, whatever mode the model is in."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def seeded(seed: Seed, device: torch.device | None = None) -> Iterator[None]:
    """Run the block on torch's global generator(s) seeded from ``seed``, restoring their state after it.

    A Monte Carlo query (an ELBO, an importance-weighted estimate, the score of an SDE model) then
    gives the same number for the same weights, and the caller's random stream is left as it was.
    ``None``: no seeding (fresh noise from the global generator, which then advances).
    """
    if seed is None:
        yield
        return
    if isinstance(seed, np.random.Generator):
        seed = int(seed.integers(0, 2**62))
    elif isinstance(seed, torch.Generator):
        seed = int(torch.randint(0, 2**62, (1,), generator=seed, device=seed.device))
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def _replace(batch: SeriesBatch, **fields: Any) -> SeriesBatch:
    """A copy of ``batch`` with some fields changed (labels, targets and names kept), not re-validated:
    the model only shifts, scales and casts a batch that was validated when it was built."""
    return dataclasses.replace(batch, **fields, validate=False)


def _end_times(time: Tensor, mask: Tensor) -> Tensor:
    """``[B]`` time of each series' last row."""
    last = (mask.sum(1) - 1).clamp(min=0)
    return time.gather(1, last[:, None])[:, 0]


class SeriesModel(Model):
    """Base of the series models: standardisation, clock, heads; subclasses implement :meth:`latent`.

    ``batch_norm``: batch-norm in the readout (None: on for classification, as the reference
    classifier; see :mod:`sde.models.heads`). ``likelihood``: the observation model of a regression or
    forecast head, ``"gaussian"`` (predicts the conditional mean) or ``"laplace"`` (the conditional
    median: for forecasts scored by MAE); a classifier accepts only ``"gaussian"``.

    The contract (:class:`tpp.model.Model`) per task:

    * classification: :meth:`objective` = :meth:`label_log_prob` ``log p(label | series) [B]``;
      :meth:`predict` the class probabilities ``[B, n_classes]``; :meth:`score` the accuracy;
    * regression and forecast: :meth:`objective` = :meth:`log_density`, the Gaussian log density of
      each series' targets ``[B]``; :meth:`predict` a :class:`GaussianPrediction`; :meth:`score` the
      mean log density per observed target value (nats).

    Queries (:meth:`label_log_prob`, :meth:`log_density`, :meth:`predict`, :meth:`score`) read the
    readout's batch-norm through its running statistics in any mode and never update them; the
    training objective in training mode uses the minibatch's statistics (and updates the running
    ones), as every batch-norm network does.
    """

    stochastic: bool = False
    """True when a forward pass draws noise (SDE models): :meth:`predict` then averages samples."""

    #: Constructor ranges, checked once by :func:`tpp.options.check_params` (subclasses add their own).
    _constraints = {"input_channels": Interval(1, None, integer=True), "hidden_size": Interval(1, None, integer=True),
                    "output_size": Interval(1, None, integer=True), "task": Options(Task, strict=True),
                    "step_size": Interval(0, None, closed="neither", none_ok=True)}

    def __init__(self, input_channels: int, hidden_size: int, output_size: int, task: Task = Task.CLASSIFICATION,
                 batch_norm: bool | None = None, likelihood: str = "gaussian") -> None:
        super().__init__()
        check_params(self, input_channels=input_channels, hidden_size=hidden_size, output_size=output_size, task=task)
        self.input_channels = int(input_channels)
        self.hidden_size = int(hidden_size)
        self.output_size = int(output_size)
        # the widest weight matrix is [max(C, H, O), H] (or a multiple): refuse sizes no allocator can give
        check_size(self, (max(self.input_channels, self.hidden_size, self.output_size), self.hidden_size),
                   f"input_channels={input_channels}, hidden_size={hidden_size}, output_size={output_size}")
        self.task = task
        # the int() values: torch refuses a NumPy integer or an integral float as a layer size
        check_likelihood(likelihood, type(self).__name__)
        if task is Task.CLASSIFICATION and likelihood != "gaussian":
            raise ValueError(f"{type(self).__name__}: likelihood={likelihood!r} is for regression and forecast; "
                             "a classifier's head is a softmax (leave likelihood at 'gaussian')")
        self.likelihood = likelihood  # kept by name: tpp.table.constructor_args saves it
        self.head: ClassificationHead | GaussianHead = make_head(task, self.hidden_size, self.output_size, batch_norm,
                                                                 likelihood)
        self.register_buffer("channel_mean", torch.zeros(self.input_channels))
        self.register_buffer("channel_std", torch.ones(self.input_channels))
        self.register_buffer("time_scale", torch.ones((), dtype=torch.float64))
        # the reference step rule max(min gap, 1e-3) on the training set's clock (NaN until fitted)
        self.register_buffer("train_step", torch.full((), float("nan"), dtype=torch.float64))

    # ------------------------------------------------------------------ to implement
    @abc.abstractmethod
    def latent(self, batch: SeriesBatch, times: Tensor) -> Tensor:
        """``[B, Q, H]`` latent states at ``times [B, Q]`` of a batch already on the model's clock
        (:meth:`prepare`); a state at ``t`` may use the series up to ``t`` (CDE, GRU) or, for
        models that read the control path, the path's interpolation around ``t``."""

    # ------------------------------------------------------------------ standardisation and clock
    @property
    def _param(self) -> Tensor:
        return next(self.parameters())

    @torch.no_grad()
    def initialise(self, train: SeriesBatch) -> SeriesModel:
        """Channel means and stds of the observed training values, and the time scale; returns self.

        Called once by the trainer before the first step (on a sample of the training data)."""
        self._check_channels(train)
        values = train.values[train.mask].to(torch.float64)  # [N, C] rows that exist
        observed = torch.isfinite(values)
        count = observed.sum(0)
        filled = torch.where(observed, values, torch.zeros_like(values))
        mean = filled.sum(0) / count.clamp(min=1)
        var = (torch.where(observed, values - mean, torch.zeros_like(values)) ** 2).sum(0) / (count - 1).clamp(min=1)
        std = var.sqrt()
        std = torch.where((count > 1) & (std > 0), std, torch.ones_like(std))
        self.channel_mean.copy_(mean.to(self.channel_mean))
        self.channel_std.copy_(std.to(self.channel_std))
        time = train.time.to(torch.float64)
        duration = float((_end_times(time, train.mask) - time[:, 0]).max())
        self.time_scale.fill_(duration if duration > 0 else 1.0)
        gaps = (time[:, 1:] - time[:, :-1]) / self.time_scale
        gaps = gaps[train.mask[:, 1:] & (gaps > 0)]
        self.train_step.fill_(max(float(gaps.min()), MIN_STEP) if gaps.numel() else MIN_STEP)
        return self

    def fit_standardisation(self, train: SeriesBatch) -> SeriesModel:
        """Old name of :meth:`initialise` (kept so existing code runs)."""
        return self.initialise(train)

    def _check_channels(self, batch: SeriesBatch) -> None:
        if batch.values.shape[-1] != self.input_channels:
            raise ValueError(f"batch has {batch.values.shape[-1]} channels, the model was built for "
                             f"input_channels={self.input_channels}")

    def prepare(self, batch: SeriesBatch) -> SeriesBatch:
        """The batch on the model's clock and scale: on the model's device and dtype, each series
        shifted to start at 0 and divided by the time scale, values standardised (NaN kept)."""
        self._check_channels(batch)
        param = self._param
        batch = batch.to(device=param.device)
        time = batch.time.to(torch.float64)
        start = time[:, :1]
        end = _end_times(time, batch.mask)[:, None]
        # padding rows get the series' end time so that every row's time is finite and ordered
        time = torch.where(batch.mask, time, end)
        time = ((time - start) / self.time_scale).to(param.dtype)
        values = (batch.values.to(param.dtype) - self.channel_mean.to(param.dtype)) / self.channel_std.to(param.dtype)
        return _replace(batch, time=time, values=values)

    def model_times(self, batch: SeriesBatch, times: Tensor) -> Tensor:
        """``times [B, Q]`` on the batch's own clock, moved to the model's clock (see :meth:`prepare`)."""
        start = batch.time[:, :1].to(torch.float64)
        return ((times.to(torch.float64) - start.to(times.device)) / self.time_scale.to(times.device)).to(self._param.dtype)

    def states(self, batch: SeriesBatch, times: Tensor | None = None) -> Tensor:
        """``[B, Q, H]`` latent states at ``times [B, Q]`` (the batch's own clock); default: each
        series' last row, ``Q = 1``."""
        prepared = self.prepare(batch)
        if times is None:
            query = _end_times(prepared.time, prepared.mask)[:, None]
        else:
            query = self.model_times(batch, times.to(prepared.device))
        return self.latent(prepared, query)

    # ------------------------------------------------------------------ likelihood and prediction
    def _readout_states(self, prepared: SeriesBatch) -> Tensor:
        """States the head reads: ``[B, H]`` at each series' end, or ``[B, L, H]`` at every row (forecast)."""
        if self.task is Task.FORECAST:
            return self.latent(prepared, prepared.time)
        return self.summary(prepared)

    def summary(self, prepared: SeriesBatch) -> Tensor:
        """``[B, H]`` what a classifier or regressor reads of a prepared series: the state at its last row
        (a model read in both directions overrides it with both passes over every row)."""
        return self.latent(prepared, _end_times(prepared.time, prepared.mask)[:, None])[:, 0]

    def _task_log_prob(self, batch: SeriesBatch) -> Tensor:
        """``[B]`` the task's log-probability in the model's current mode (no mode switch)."""
        prepared = self.prepare(batch)
        if self.task is Task.CLASSIFICATION:
            if prepared.labels is None:
                raise ValueError("a classification model needs batch.labels")
            return self.head.log_likelihood(self._readout_states(prepared), prepared.labels)
        if prepared.targets is None:
            raise ValueError(f"a {self.task.value} model needs batch.targets")
        targets = prepared.targets.to(self._param.dtype)
        if self.task is Task.FORECAST:
            if targets.dim() != 3 or targets.shape[:2] != prepared.mask.shape:
                raise ValueError(f"forecast targets must be [B, L, O] aligned with the rows, got {tuple(targets.shape)}")
            targets = torch.where(prepared.mask[..., None], targets, torch.full_like(targets, float("nan")))
        return self.head.log_likelihood(self._readout_states(prepared), targets)

    def objective(self, batch: SeriesBatch) -> Tensor:
        """``[B]`` the training objective: :meth:`label_log_prob` (classification) or :meth:`log_density`.

        In training mode the readout's batch-norm uses (and updates) the minibatch's statistics."""
        return self._task_log_prob(batch)

    def label_log_prob(self, batch: SeriesBatch) -> Tensor:
        """``[B]`` ``log p(label | series)`` of a classifier (differentiable; the readout's running statistics)."""
        if self.task is not Task.CLASSIFICATION:
            raise ValueError(f"label_log_prob is for classification; this model's task is {self.task.value}: "
                             "use log_density")
        with eval_mode(self):
            return self._task_log_prob(batch)

    def log_density(self, batch: SeriesBatch) -> Tensor:
        """``[B]`` Gaussian (or, with ``likelihood="laplace"``, Laplace) log density of each series' finite
        targets, summed (regression, forecast)."""
        if self.task is Task.CLASSIFICATION:
            raise ValueError("log_density is for regression and forecast; a classifier has label_log_prob")
        with eval_mode(self):
            return self._task_log_prob(batch)

    def log_likelihood(self, batch: SeriesBatch) -> Tensor:
        """Deprecated alias of :meth:`objective` (kept for old code and the JAX parity checks).

        It is ``log p(label | series)`` or a Gaussian log density of the targets, not a likelihood of
        the series: use :meth:`label_log_prob` or :meth:`log_density`."""
        return self.objective(batch)

    @torch.no_grad()
    def score(self, data: SeriesBatch, samples: int = 1, seed: Seed = 0) -> float:
        """One number per data set, higher is better.

        Classification: the accuracy of :meth:`predict` (``samples`` forward passes averaged for SDE
        models). Regression and forecast: the mean Gaussian log density per observed target value
        (nats). ``seed`` fixes the Brownian paths of SDE models (None: fresh noise), so the same
        weights give the same score.
        """
        with seeded(seed, self._param.device):
            if self.task is Task.CLASSIFICATION:
                if data.labels is None:
                    raise ValueError("scoring a classifier needs data.labels")
                probs = self.predict(data, samples=samples)
                return float((probs.argmax(-1).cpu() == data.labels.cpu()).to(torch.float64).mean())
            if data.targets is None:
                raise ValueError(f"scoring a {self.task.value} model needs data.targets")
            targets = data.targets
            finite = torch.isfinite(targets)
            if self.task is Task.FORECAST:
                finite = finite & data.mask.to(finite.device)[..., None]
            total = float(self.log_density(data).sum())
        return total / max(int(finite.sum()), 1)

    @torch.no_grad()
    def predict(self, batch: SeriesBatch, samples: int = 1) -> Tensor | GaussianPrediction:
        """Class probabilities ``[B, n_classes]``, or :class:`GaussianPrediction` (mean, std).

        Stochastic models average ``samples`` forward passes (each with its own Brownian path);
        the predictive std then adds the spread of the sampled means to the learned noise.
        """
        with eval_mode(self):  # running statistics in the readout: each series' prediction is its own
            prepared = self.prepare(batch)
            n = max(int(samples), 1) if self.stochastic else 1
            draws = [self._readout_states(prepared) for _ in range(n)]
            if isinstance(self.head, ClassificationHead):
                return torch.stack([self.head.probabilities(z) for z in draws]).mean(0)
            preds = [self.head.predict(z) for z in draws]
        means = torch.stack([p.mean for p in preds])
        std = (preds[0].std ** 2 + means.var(0, unbiased=False)).sqrt()
        # several draws of a Laplace head: reported as the Laplace with the averaged location and the total std
        return GaussianPrediction(means.mean(0), std, preds[0].family)


class PathModel(SeriesModel):
    """A model driven by a control path built from the (standardised) observations.

    ``interpolation``: a :class:`sde.paths.Interpolation` (default Hermite cubic with backward
    differences, the stable-SDE reference code's choice). The path's channels are time, the values
    and, with ``observation_counts``, the cumulative number of observations per channel (Kidger et
    al.'s observational intensity; off by default as in both reference codes for missing-at-random
    data). ``step_size``: the fixed solver step on the model's clock (see :meth:`step` for ``None``).
    """

    def __init__(self, input_channels: int, hidden_size: int, output_size: int, task: Task = Task.CLASSIFICATION,
                 interpolation: Any = None, observation_counts: bool = False, method: Any = None,
                 step_size: float | None = None, batch_norm: bool | None = None, likelihood: str = "gaussian") -> None:
        super().__init__(input_channels, hidden_size, output_size, task, batch_norm, likelihood)
        from sde.paths import Interpolation

        self.interpolation = Interpolation.HERMITE if interpolation is None else interpolation
        if not isinstance(self.interpolation, Interpolation):
            raise TypeError(f"interpolation must be a sde.paths.Interpolation, got {interpolation!r}")
        self.observation_counts = bool(observation_counts)
        self.method = method
        check_params(self, step_size=step_size)
        self.step_size = step_size

    @property
    def path_channels(self) -> int:
        """Channels of the control path: time, the values, and the observation counts if asked for."""
        return 1 + self.input_channels * (2 if self.observation_counts else 1)

    def control_path(self, prepared: SeriesBatch) -> ControlPath:
        """The control path of a prepared batch (see :meth:`SeriesModel.prepare`)."""
        from sde.paths import ControlPath

        path = ControlPath.from_series(prepared, interpolation=self.interpolation, time_channel=True,
                                       observation_counts=self.observation_counts)
        if path.channels != self.path_channels:
            raise RuntimeError(f"the control path has {path.channels} channels, the model expects {self.path_channels}")
        return path

    def step(self, prepared: SeriesBatch) -> float:
        """The fixed step: ``step_size`` if given, else the reference rule ``max(min observation
        gap, 1e-3)`` over the training set (fixed by :meth:`initialise`, so a series' result
        does not depend on the batch it is in), else over ``prepared``."""
        if self.step_size is not None:
            return float(self.step_size)
        if not torch.isnan(self.train_step):
            return float(self.train_step)
        gaps = prepared.time[:, 1:] - prepared.time[:, :-1]
        gaps = gaps[prepared.mask[:, 1:] & prepared.mask[:, :-1] & (gaps > 0)]
        return max(float(gaps.min()), MIN_STEP) if gaps.numel() else MIN_STEP

    def solve_at(self, system: Any, z0: Tensor, times: Tensor, step_size: float | None, **kwargs: Any) -> Tensor:
        """Solve once on the union of the query times and pick ``[B, Q, H]`` at each series' own ``times [B, Q]``.

        ``kwargs`` go to :func:`sde.solvers.solve` (``control`` for a CDE, ``seed`` for an SDE).
        """
        from sde.solvers import solve

        start = torch.zeros(1, dtype=times.dtype, device=times.device)
        grid, where = torch.unique(torch.cat([start, times.flatten().clamp(min=0)]), sorted=True, return_inverse=True)
        if grid.numel() == 1:  # every query at t = 0
            ys = z0[:, None, :]
        else:
            method = self.method if self.method is not None else self.default_method()
            ys = solve(system, z0, grid, method=method, step_size=step_size, **kwargs).ys
        index = where[1:].view(times.shape)
        return ys.gather(1, index[..., None].expand(-1, -1, ys.shape[-1]))

    def default_method(self) -> Any:
        """The solver when ``method`` is not given (set by each model)."""
        raise NotImplementedError
