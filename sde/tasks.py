"""The three tasks of the ``sde`` command on a set of series, and how a fitted model is scored on them.

A task turns a :class:`~sde.series.SeriesBatch` into what a model sees (``inputs``) and what it is
scored on; every random choice is seeded and returned as a mask, so a peer can be run on exactly the
same held-out values.

``classify``
    The labels of the data set; scored by the accuracy of the most probable class.
``interpolate``
    A random share of the observed values of each series is held out (set to NaN in the inputs) and
    reconstructed. Only values strictly between a series' first and last observed rows are held out:
    those are interpolations (the first and last rows anchor the series' clock; a value before the
    first or after the last observation would be an extrapolation). The model is fit to reconstruct
    every observed value of the training series (held out or not).
``forecast``
    The first part of each series is observed, the values of its last ``horizon`` share of rows (at
    least one row) are predicted; the future rows stay in the inputs with NaN values, so a model is
    asked for its prediction at their times and can see none of their values.

Forecast and interpolation are scored on the held-out values only, in the data's original units:
``test_mse`` and ``test_mae`` of the predictive mean and ``test_log_likelihood``, the mean Gaussian
log density of a held-out value under the predictive mean and standard deviation (nats per value).
Where the predictions come from depends on the model (:func:`predictive`): the Gaussian head of the
discriminative series models (:class:`~sde.models.heads.GaussianHead`, trained on the targets
standardised with the training inputs' channel means and scales), the posterior samples of
:class:`~sde.models.LatentSDE`, the posterior state marginals and Gaussian emission of
:class:`~sde.models.NeuralMJP`.

``--missing`` (:func:`drop_values`) is the irregular / missing-data protocol of the stable neural SDE
paper (Oh, Lim & Kim, ICLR 2024; its ``torch-ists`` code): ``floor(L * rate)`` values of every
channel of every series are blanked at random, before the task holds anything out.
The benchmark ``benchmarks/irregular_classification.py`` runs its protocol from here too
(:func:`pooled`, :func:`batch_size_rule`, :func:`drop_values`, :func:`accuracy`).
"""

from __future__ import annotations

import contextlib
import enum
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sde.series import SeriesBatch, SeriesDataError

__all__ = [
    "RowTargetBatch",
    "SolverWork",
    "TaskData",
    "TaskName",
    "TargetScale",
    "accuracy",
    "batch_size_rule",
    "derived_seed",
    "drop_values",
    "evaluate",
    "forecast_rows",
    "holdout_values",
    "make_task",
    "pooled",
    "predictive",
    "record_solver_work",
    "supported_tasks",
    "last_windows",
    "windows",
]

EVAL_CHUNK = 128
"""Series per forward pass when scoring (bounds memory; the result does not depend on it for
deterministic models, and the seeded noise of the SDEs is drawn chunk by chunk in a fixed order)."""

LATENT_SAMPLES = 16
"""Posterior paths per series for the predictive mean and spread of :class:`~sde.models.LatentSDE`."""


class TaskName(str, enum.Enum):
    """What the ``sde`` command asks of a model (see the module docstring)."""

    CLASSIFY = "classify"
    FORECAST = "forecast"
    INTERPOLATE = "interpolate"

    @property
    def head(self) -> Any:
        """The :class:`sde.models.Task` of a discriminative model's head for this task (forecast and
        interpolate both read a Gaussian prediction at every row's time)."""
        from sde.models import Task

        return Task.CLASSIFICATION if self is TaskName.CLASSIFY else Task.FORECAST


def supported_tasks(model_class: type) -> tuple[TaskName, ...]:
    """The tasks a model class can do: a discriminative series model (:class:`sde.models._base.SeriesModel`)
    and a generative model of the values (latent SDE, neural MJP) all three (the generative ones classify
    through :class:`sde.models.GenerativeClassifier`, one model per class and Bayes' rule); the generative
    classifier itself only classifies."""
    from sde.models.generative import GenerativeClassifier

    if issubclass(model_class, GenerativeClassifier):
        return (TaskName.CLASSIFY,)
    return (TaskName.CLASSIFY, TaskName.FORECAST, TaskName.INTERPOLATE)


def derived_seed(seed: int, *keys: int) -> int:
    """An independent 63-bit seed for each ``(seed, *keys)`` (numpy's SeedSequence), so the train and the
    test part of one run, and the runs of two seeds, never share a random stream."""
    return int(np.random.SeedSequence([int(seed) % 2**63, *keys]).generate_state(1, np.uint64)[0] >> 1)


# --------------------------------------------------------------------------- the benchmark's protocol
@cache
def pooled(name: str) -> SeriesBatch:
    """Train and test series of a registered archive data set, pooled (the benchmark draws its split per seed)."""
    from sde.datasets import load

    return SeriesBatch.concat([load(name, "train"), load(name, "test")])


def batch_size_rule(n: int) -> int:
    """The stable-SDE reference's rule: the largest power of two in [16, 128] not above ``n / 2``."""
    size = 16
    for k in range(4, 8):
        if 2**k > n / 2:
            break
        size = 2**k
    return size


def drop_values(batch: SeriesBatch, rate: float, seed: int, *, per_channel: bool = True) -> tuple[SeriesBatch, Tensor]:
    """The batch with ``floor(L_b * rate)`` values of every channel of every series blanked (``per_channel``,
    the paper's robustness protocol), or that many whole rows (``per_channel=False``, Kidger et al.'s),
    drawn by :func:`sde.paths.drop` with ``seed``; and the mask ``[B, L, C]`` of the observed values it removed."""
    from sde.paths import drop

    if not 0.0 <= rate < 1.0:
        raise ValueError(f"--missing must be in [0, 1), got {rate}")
    if rate == 0:
        return batch, torch.zeros(batch.values.shape, dtype=torch.bool, device=batch.device)
    out = drop(batch, rate, seed=seed, per_channel=per_channel)
    removed = _observed(batch) & ~_observed(out)
    return out, removed


def accuracy(model: Any, test: SeriesBatch, chunk: int = EVAL_CHUNK) -> float:
    """Share of ``test`` series whose most probable class (``model.predict``) is their label."""
    if test.labels is None:
        raise ValueError("accuracy needs labelled series")
    correct = 0
    for start in range(0, len(test), chunk):
        part = test[np.arange(start, min(start + chunk, len(test)))]
        correct += int((model.predict(part).argmax(1).cpu() == part.labels.cpu()).sum())
    return correct / len(test)


# --------------------------------------------------------------------------- windows of long series
def windows(batch: SeriesBatch, length: int) -> tuple[SeriesBatch, Tensor]:
    """Every series cut into consecutive windows of ``length`` rows (a shorter tail is dropped; a series
    shorter than ``length`` stays whole), each a series of its own with the label / target of its series;
    and ``[W]`` the index of each window's series. Windows keep their absolute times (a model puts each
    series on its own clock), so one long forecasting series becomes a set of series to train and test on."""
    if length < 2:
        raise ValueError(f"--window must be at least 2 rows, got {length}")
    pieces, owner, labels, targets, ids = [], [], [], [], []
    for b, (t, v) in enumerate(batch.series()):
        t, v = np.asarray(t), np.asarray(v)
        starts = range(0, t.size - length + 1, length) if t.size >= length else [0]
        for k, start in enumerate(starts):
            stop = start + length if t.size >= length else t.size
            pieces.append((t[start:stop], v[start:stop]))
            owner.append(b)
            ids.append(f"{batch.ids[b] if batch.ids is not None else b}[{k}]")
            if batch.labels is not None:
                labels.append(int(batch.labels[b]))
            if batch.targets is not None:
                targets.append(batch.targets[b].detach().cpu().numpy())
    out = SeriesBatch.from_arrays(pieces, labels if batch.labels is not None else None,
                                  targets=np.stack(targets) if targets else None, channel_names=batch.channel_names,
                                  class_names=batch.class_names, ids=ids, dtype=batch.dtype)
    return out, torch.tensor(owner)


def last_windows(owner: Tensor, fraction: float) -> Tensor:
    """``[W]`` mask of the test windows of a chronological split: the last ``round(fraction * n)`` (at least
    one) of the ``n`` windows of each series that has two or more (the rest train on the past only)."""
    test = torch.zeros(owner.shape, dtype=torch.bool)
    for b in torch.unique(owner).tolist():
        where = torch.nonzero(owner == b).flatten()
        if where.numel() >= 2:
            test[where[-max(1, round(fraction * where.numel())):]] = True
    return test


# --------------------------------------------------------------------------- the tasks
def _observed(batch: SeriesBatch) -> Tensor:
    """``[B, L, C]`` True where a row exists and its value is not NaN."""
    return batch.mask[..., None] & ~torch.isnan(batch.values)


def holdout_values(batch: SeriesBatch, share: float, seed: int) -> Tensor:
    """``[B, L, C]`` mask of the values :data:`TaskName.INTERPOLATE` holds out: in every series, ``round(share * n)``
    (at least one) of its ``n`` observed values strictly between its first and last observed rows, drawn
    uniformly without replacement (``torch.randperm`` on a generator seeded with ``seed``, series in order)."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"--holdout must be in (0, 1), got {share}")
    observed = _observed(batch).cpu()
    rows = observed.any(-1)  # [B, L] rows with a value
    index = torch.arange(rows.shape[1])
    first = torch.where(rows, index, rows.shape[1]).min(1).values
    last = torch.where(rows, index, -1).max(1).values
    inside = (index[None, :] > first[:, None]) & (index[None, :] < last[:, None])
    candidates = observed & inside[..., None]
    g = torch.Generator().manual_seed(int(seed))
    held = torch.zeros_like(candidates)
    for b in range(len(batch)):
        where = torch.nonzero(candidates[b].flatten()).flatten()
        if where.numel() == 0:
            continue
        k = min(max(1, round(share * where.numel())), where.numel())
        chosen = where[torch.randperm(where.numel(), generator=g)[:k]]
        held[b].view(-1)[chosen] = True
    return held.to(batch.device)


def forecast_rows(batch: SeriesBatch, horizon: float) -> Tensor:
    """``[B, L]`` mask of each series' future rows: its last ``ceil(horizon * L_b)`` rows (at least one, at
    most ``L_b - 1``, so something is observed before them)."""
    if not 0.0 < horizon < 1.0:
        raise ValueError(f"--horizon must be in (0, 1), got {horizon}")
    lengths = batch.lengths
    short = torch.nonzero(lengths < 2)
    if short.numel():
        b = int(short[0, 0])
        raise SeriesDataError("a forecast needs at least 2 rows (an observed past and a future)", series=b,
                              series_id=None if batch.ids is None else batch.ids[b], field="time")
    future = torch.ceil(horizon * lengths.to(torch.float64)).long().clamp(1)
    future = torch.minimum(future, lengths - 1)
    index = torch.arange(batch.mask.shape[1], device=lengths.device)
    return batch.mask & (index[None, :] >= (lengths - future)[:, None])


class RowTargetBatch(SeriesBatch):
    """A :class:`~sde.series.SeriesBatch` whose ``targets [B, L, C]`` are aligned with the rows (the forecast
    and interpolation targets a :data:`~sde.models.Task.FORECAST` head reads at every row): they are a row
    field, so selecting series (the trainer's minibatches) trims them with the rows, for series of
    unequal length too."""

    row_fields = {**SeriesBatch.row_fields, "targets": float("nan")}
    sequence_fields = tuple(f for f in SeriesBatch.sequence_fields if f != "targets")


@dataclass(frozen=True)
class TargetScale:
    """Per-channel mean and scale of the observed training inputs; targets are standardised with them
    (the Gaussian head then learns unit-scale outputs) and predictions mapped back to the data's units."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, batch: SeriesBatch) -> TargetScale:
        """From the observed values of ``batch`` (a channel with fewer than two values, or no spread: 0 and 1)."""
        values = batch.values.to(torch.float64)
        observed = _observed(batch)
        count = observed.sum((0, 1))
        filled = torch.where(observed, values, torch.zeros_like(values))
        mean = filled.sum((0, 1)) / count.clamp(min=1)
        var = (torch.where(observed, values - mean, torch.zeros_like(values)) ** 2).sum((0, 1)) / (count - 1).clamp(min=1)
        std = torch.where((count > 1) & (var > 0), var.sqrt(), torch.ones_like(var))
        return cls(tuple(float(m) for m in mean), tuple(float(s) for s in std))

    def tensors(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """``mean [C]``, ``std [C]`` with the dtype and device of ``like``."""
        return (torch.tensor(self.mean, dtype=like.dtype, device=like.device),
                torch.tensor(self.std, dtype=like.dtype, device=like.device))


@dataclass
class TaskData:
    """One part (train, validation or test) of a task.

    ``inputs``: what the model sees (held-out values NaN; ``labels`` for classify, else ``targets
    [B, L, C]``: the standardised values it is trained to predict, NaN elsewhere). ``values``: the
    original values ``[B, L, C]`` (after ``--missing``). ``scored``: ``[B, L, C]`` the held-out values
    the part is scored on (None for classify). ``missing``: ``[B, L, C]`` the observed values that
    ``--missing`` removed. ``scale``: the target standardisation (None for classify). ``masks``: every
    seeded mask by name (``missing``, ``held_out``, ``future_rows``), to run a peer on the same values.
    """

    task: TaskName
    inputs: SeriesBatch
    values: Tensor
    scored: Tensor | None
    missing: Tensor
    scale: TargetScale | None = None
    masks: dict[str, Tensor] = field(default_factory=dict)

    @property
    def num_scored(self) -> int:
        """Number of held-out values (series for classify)."""
        return len(self.inputs) if self.scored is None else int(self.scored.sum())


def make_task(batch: SeriesBatch, task: TaskName, *, seed: int, missing: float = 0.0, holdout: float = 0.2,
              horizon: float = 0.2, scale: TargetScale | None = None, train: bool = False) -> TaskData:
    """Set up ``task`` on ``batch``: blank ``missing`` values (:func:`drop_values`), then hold out what the
    task predicts (:func:`holdout_values`, :func:`forecast_rows`), all seeded by ``seed``.

    ``train=True``: the training part; its :class:`TargetScale` is measured on it (after ``--missing``), and
    interpolate is fit to every observed value (held out or kept). Otherwise give the training part's
    ``scale``; the targets are the held-out values.
    """
    task = TaskName(task)
    dropped, removed = drop_values(batch, missing, derived_seed(seed, 1))
    observed = _observed(dropped)
    if task is TaskName.CLASSIFY:
        if dropped.labels is None:
            raise SeriesDataError("the series have no class labels: use --task forecast or --task interpolate",
                                  field="labels")
        return TaskData(task, dropped, dropped.values, None, removed, None, {"missing": removed})
    if task is TaskName.INTERPOLATE:
        scored = holdout_values(dropped, holdout, derived_seed(seed, 2))
        fit_to = observed if train else scored
        masks = {"missing": removed, "held_out": scored}
    else:
        future = forecast_rows(dropped, horizon)
        scored = observed & future[..., None]
        fit_to = scored
        masks = {"missing": removed, "future_rows": future, "held_out": scored}
    if train:
        scale = TargetScale.of(dropped)
    elif scale is None:
        raise ValueError(f"task {task.value}: the test part needs the training part's TargetScale")
    mean, std = scale.tensors(dropped.values)
    targets = torch.where(fit_to, (dropped.values - mean) / std, torch.full_like(dropped.values, float("nan")))
    hidden = scored if task is TaskName.INTERPOLATE else future[..., None].expand_as(scored)
    inputs = RowTargetBatch(dropped.time, torch.where(hidden, torch.full_like(dropped.values, float("nan")), dropped.values),
                         dropped.mask, targets=targets, channel_names=dropped.channel_names, ids=dropped.ids)
    return TaskData(task, inputs, dropped.values, scored, removed, scale, masks)


# --------------------------------------------------------------------------- solver work
@dataclass
class SolverWork:
    """What the solves of a block cost, summed over every :func:`sde.solvers.solve` call in it."""

    solves: int = 0
    nfe: int = 0
    steps: int = 0
    accepted: int = 0
    rejected: int = 0

    def add(self, stats: Any) -> None:
        self.solves += 1
        self.nfe += int(stats.nfe)
        self.steps += int(stats.steps)
        self.accepted += int(stats.accepted)
        self.rejected += int(stats.rejected)

    def as_dict(self) -> dict[str, int]:
        return {"solves": self.solves, "nfe": self.nfe, "steps": self.steps, "accepted": self.accepted,
                "rejected": self.rejected}


@contextlib.contextmanager
def record_solver_work() -> Iterator[SolverWork]:
    """Sum the :class:`~sde.solvers.SolverStats` of every solve run inside the block (through
    :func:`sde.solvers.recording`, the solver's own hook)."""
    from sde.solvers import recording

    work = SolverWork()
    with recording() as stats:
        try:
            yield work
        finally:
            for item in stats:
                work.add(item)


# --------------------------------------------------------------------------- scoring
def predictive(model: Any, inputs: SeriesBatch, scale: TargetScale) -> tuple[Tensor, Tensor]:
    """Predictive mean and standard deviation ``[B, L, C]`` of every value at every row of ``inputs``, in the
    data's units: the Gaussian head (discriminative models), the posterior samples' mean and spread plus
    the observation noise (:class:`~sde.models.LatentSDE`), or the emission averaged over the posterior
    state marginals (:class:`~sde.models.NeuralMJP`)."""
    from sde.models import LatentSDE, NeuralMJP
    from sde.models._base import SeriesModel

    if isinstance(model, SeriesModel):
        pred = model.predict(inputs)
        mean, std = scale.tensors(pred.mean)
        return pred.mean * std + mean, pred.std * std
    time = inputs.time.to(torch.float64)
    if isinstance(model, LatentSDE):
        # the model's clock starts at each series' first observed row: ask no earlier than that
        rows = _observed(inputs).any(-1)
        first = torch.where(rows, time, torch.full_like(time, math.inf)).min(1).values
        query = torch.maximum(time, torch.where(torch.isfinite(first), first, time[:, 0])[:, None])
        samples = model.interpolate(inputs, query, num_samples=LATENT_SAMPLES)  # [S, B, L, C]
        spread = samples.var(0, unbiased=False) + model.noise_std.to(samples) ** 2
        return samples.mean(0), spread.sqrt()
    if isinstance(model, NeuralMJP):
        q = model.posterior(inputs, time)  # [B, L, S] (one sub-process)
        emission = model.emission_
        mu = torch.as_tensor(emission["mean"][0], dtype=q.dtype, device=q.device)  # [S, C]
        sd = torch.as_tensor(emission["std"], dtype=q.dtype, device=q.device)  # [C]
        mean = q @ mu
        spread = (q @ mu**2 - mean**2).clamp_min(0) + sd**2
        return mean, spread.sqrt()
    raise TypeError(f"no predictive distribution for {type(model).__name__}")


def evaluate(model: Any, data: TaskData, *, seed: int, chunk: int = EVAL_CHUNK) -> dict[str, Any]:
    """Score a fitted ``model`` on the test part ``data``: ``test_accuracy`` (classify) or ``test_mse``,
    ``test_mae``, ``test_log_likelihood`` (mean Gaussian log density per held-out value, nats), and
    ``stats``: the solver work of the whole evaluation (:class:`SolverWork`).

    The model is put in eval mode and torch's generator seeded with ``seed`` (the SDEs' Brownian paths, the
    latent models' samples), then restored, so a saved and reloaded model scores the same numbers."""
    model.eval()
    inputs = data.inputs
    with torch.random.fork_rng(devices=[]), torch.no_grad(), record_solver_work() as work:
        torch.manual_seed(derived_seed(seed, 3))
        if data.task is TaskName.CLASSIFY:
            result: dict[str, Any] = {"test_accuracy": accuracy(model, inputs, chunk)}
        else:
            scale, scored_all = data.scale, data.scored
            assert scale is not None and scored_all is not None
            sq = ab = ll = 0.0
            for start in range(0, len(inputs), chunk):
                index = np.arange(start, min(start + chunk, len(inputs)))
                part = inputs[index]
                length = part.time.shape[1]
                mean, std = predictive(model, part, scale)
                scored = scored_all[index, :length].to(mean.device)
                truth = data.values[index, :length].to(mean)
                err = (mean - truth)[scored]
                sd = std[scored]
                sq += float((err**2).sum())
                ab += float(err.abs().sum())
                ll += float((-0.5 * (err / sd) ** 2 - torch.log(sd) - 0.5 * math.log(2 * math.pi)).sum())
            n = max(data.num_scored, 1)
            result = {"test_mse": sq / n, "test_mae": ab / n, "test_log_likelihood": ll / n,
                      "n_test_values": data.num_scored}
    result["stats"] = work.as_dict()
    return result

