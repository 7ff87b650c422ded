"""The three tasks of the ``sde`` command on a set of series, and how a fitted model is scored on them.

A task turns a :class:`~sde.series.SeriesBatch` into what a model sees (``inputs``) and what it is
scored on; every random choice is seeded and returned as a mask, so a peer can be run on exactly the
same held-out values.

``classify``
    The labels of the data set; scored by the accuracy of the most probable class (and, with two
    classes, AUROC and AUPRC).
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

The protocols, on their own (to run any peer on the same held-out values):
:func:`interpolation_split` and :func:`forecast_split` take a batch and return a :class:`Split`: the
inputs with the hidden values set to NaN (the only thing a model may read) and the masks of what was
hidden and what is scored; :func:`save_masks` writes a part's masks (with the series ids and row
times) to an ``.npz`` atomically, :func:`load_masks` reads them back. :func:`make_task` runs the same
functions with seeds derived from the run's seed. A held-out value never reaches a model: it is NaN in
the inputs, and the targets (which hold it, for the loss) are removed before a model predicts
(:func:`model_inputs`).

Forecast and interpolation are scored on the held-out values only, in the data's original units:
``test_mse`` and ``test_mae`` of the predictive mean, ``test_log_likelihood``, the mean Gaussian
log density of a held-out value under the predictive mean and standard deviation (nats per value),
``test_crps`` (continuous ranked probability score) and ``coverage_50`` / ``coverage_90`` (share of
held-out values inside the central 50 % / 90 % predictive interval), by :mod:`sde.metrics`. A series
model built with ``likelihood="laplace"`` has a Laplace predictive (its location is a median: what an MAE
rewards) and is scored with the Laplace's density, CRPS and intervals (``predictive``: ``laplace``).
Where the predictions come from depends on the model (:func:`predictive_distribution`): the Gaussian
head of the discriminative series models (:class:`~sde.models.heads.GaussianHead`, trained on the
targets standardised with the training inputs' channel means and scales), the posterior samples of
:class:`~sde.models.LatentSDE` with its Gaussian observation noise (CRPS and intervals of that mixture,
exactly), the posterior state marginals and Gaussian emission of :class:`~sde.models.NeuralMJP` (a
mixture too). Classification with two classes adds ``test_auroc`` and ``test_auprc`` of the second
class's probability (imbalanced labels such as in-hospital mortality).

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
import os
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sde.series import SeriesBatch, SeriesDataError

__all__ = [
    "COVERAGE_LEVELS",
    "Predictive",
    "RowTargetBatch",
    "SolverWork",
    "Split",
    "TaskData",
    "TaskName",
    "TargetScale",
    "accuracy",
    "batch_size_rule",
    "class_probabilities",
    "derived_seed",
    "drop_values",
    "evaluate",
    "forecast_rows",
    "forecast_split",
    "holdout_values",
    "interpolation_split",
    "load_masks",
    "make_task",
    "model_inputs",
    "pooled",
    "predictive",
    "predictive_distribution",
    "record_solver_work",
    "save_masks",
    "subsample",
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
    and a generative model of the values (latent SDE, latent ODE, neural MJP) all three. A latent model with
    its own classifier trained jointly with its ELBO (:data:`sde.table.JOINT_CLASSIFIERS`: the latent ODE)
    classifies with it; the others classify through :class:`sde.models.GenerativeClassifier` (one model per
    class and Bayes' rule). The generative classifier itself only classifies; a class with ``classifies = False``
    never does."""
    from sde.models.generative import GenerativeClassifier

    if issubclass(model_class, GenerativeClassifier):
        return (TaskName.CLASSIFY,)
    if not getattr(model_class, "classifies", True):  # e.g. process diffusion: a model of the values only
        return (TaskName.FORECAST, TaskName.INTERPOLATE)
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


def subsample(batch: SeriesBatch, n: int, seed: int) -> SeriesBatch:
    """At most ``n`` series of ``batch``: all of them if it has no more, else ``n`` drawn uniformly without
    replacement (numpy's generator seeded with ``seed``), kept in their original order (``--max-series``,
    for quick runs on large sets such as PhysioNet 2012)."""
    if n < 1:
        raise ValueError(f"--max-series must be at least 1, got {n}")
    if len(batch) <= n:
        return batch
    chosen = np.sort(np.random.default_rng(int(seed)).choice(len(batch), size=n, replace=False))
    return batch[chosen]


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


def forecast_rows(batch: SeriesBatch, horizon: float, *, short: str = "raise") -> Tensor:
    """``[B, L]`` mask of each series' future rows: its last ``ceil(horizon * L_b)`` rows (at least one, at
    most ``L_b - 1``, so something is observed before them). A series of fewer than 2 rows has no future:
    ``short="raise"`` refuses it (a :class:`SeriesDataError` naming it), ``short="keep"`` gives it none."""
    if not 0.0 < horizon < 1.0:
        raise ValueError(f"--horizon must be in (0, 1), got {horizon}")
    if short not in ("raise", "keep"):
        raise ValueError(f"short must be 'raise' or 'keep', got {short!r}")
    lengths = batch.lengths
    too_short = torch.nonzero(lengths < 2)
    if too_short.numel() and short == "raise":
        b = int(too_short[0, 0])
        raise SeriesDataError("a forecast needs at least 2 rows (an observed past and a future)", series=b,
                              series_id=None if batch.ids is None else batch.ids[b], field="time")
    future = torch.ceil(horizon * lengths.to(torch.float64)).long().clamp(1)
    future = torch.minimum(future, lengths - 1)  # 0 for a series of one row
    index = torch.arange(batch.mask.shape[1], device=lengths.device)
    return batch.mask & (index[None, :] >= (lengths - future)[:, None])


@dataclass(frozen=True)
class Split:
    """What a forecast or interpolation protocol shows a model and what it scores it on.

    ``inputs``: the batch with every hidden value set to NaN (rows, times, labels and ids kept), the only
    thing a model (ours or a peer) may read. ``held_out [B, L, C]``: the observed values that were hidden,
    the ones scored (compare them with the original batch's ``values``). ``hidden [B, L, C]``: every value
    set to NaN (interpolate: ``held_out``; forecast: every channel of the future rows). ``future_rows
    [B, L]``: forecast only. ``masks``: these masks by name, for :func:`save_masks`.
    """

    task: TaskName
    inputs: SeriesBatch
    held_out: Tensor
    hidden: Tensor
    future_rows: Tensor | None = None

    @property
    def masks(self) -> dict[str, Tensor]:
        out = {"held_out": self.held_out}
        if self.future_rows is not None:
            out["future_rows"] = self.future_rows
        return out


def _hide(batch: SeriesBatch, hidden: Tensor) -> SeriesBatch:
    """``batch`` with the values under ``hidden`` set to NaN (a new values tensor; the batch is not changed)."""
    values = torch.where(hidden, torch.full_like(batch.values, float("nan")), batch.values)
    return SeriesBatch(batch.time, values, batch.mask, labels=batch.labels, targets=batch.targets,
                       channel_names=batch.channel_names, class_names=batch.class_names, ids=batch.ids,
                       validate=False)


def interpolation_split(batch: SeriesBatch, share: float = 0.2, seed: int = 0) -> Split:
    """The interpolation protocol: hold out ``round(share * n)`` (at least one) of the ``n`` observed values
    of every series strictly between its first and last observed rows (:func:`holdout_values`, seeded by
    ``seed``), and hide them. Deterministic given ``(batch, share, seed)``; the held-out values are the
    scored ones, and only they differ between ``batch`` and ``Split.inputs``."""
    held = holdout_values(batch, share, seed)
    return Split(TaskName.INTERPOLATE, _hide(batch, held), held, held)


def forecast_split(batch: SeriesBatch, horizon: float = 0.2, seed: int = 0) -> Split:
    """The forecast protocol: the last ``ceil(horizon * L_b)`` rows of every series (:func:`forecast_rows`)
    are its future; all their values are hidden (their times stay, so a model is asked for its prediction
    there) and the observed ones among them are held out and scored. The split takes no random choice:
    ``seed`` is accepted so both protocols are called alike. A series of fewer than 2 rows has no future:
    it stays in the inputs, is not scored, and a warning names it (drop such series to silence it)."""
    del seed  # the future is each series' last rows; nothing is drawn
    future = forecast_rows(batch, horizon, short="keep")
    short = torch.nonzero(batch.lengths < 2).flatten().tolist()
    if short:
        names = [batch.ids[b] if batch.ids is not None else str(b) for b in short]
        shown = ", ".join(repr(n) for n in names[:5]) + (", ..." if len(names) > 5 else "")
        warnings.warn(f"forecast: {len(short)} series with fewer than 2 rows ({shown}) have no past to forecast "
                      "from; they are kept as inputs but nothing of them is scored (drop them, e.g. "
                      "batch[batch.lengths >= 2], to silence this)", UserWarning, stacklevel=2)
    hidden = future[..., None].expand_as(batch.values)
    held = _observed(batch) & hidden
    return Split(TaskName.FORECAST, _hide(batch, hidden), held, hidden.clone(), future)


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
    """Set up ``task`` on ``batch``: blank ``missing`` values (:func:`drop_values`), then hide what the
    task predicts (:func:`interpolation_split`, :func:`forecast_split`), all seeded by ``seed``.

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
        split = interpolation_split(dropped, share=holdout, seed=derived_seed(seed, 2))
        fit_to = observed if train else split.held_out
    else:
        split = forecast_split(dropped, horizon=horizon, seed=derived_seed(seed, 2))
        fit_to = split.held_out
    scored = split.held_out
    masks = {"missing": removed, **split.masks}
    if train:
        scale = TargetScale.of(dropped)
    elif scale is None:
        raise ValueError(f"task {task.value}: the test part needs the training part's TargetScale")
    mean, std = scale.tensors(dropped.values)
    targets = torch.where(fit_to, (dropped.values - mean) / std, torch.full_like(dropped.values, float("nan")))
    inputs = RowTargetBatch(dropped.time, split.inputs.values, dropped.mask, targets=targets,
                            channel_names=dropped.channel_names, ids=dropped.ids)
    return TaskData(task, inputs, dropped.values, scored, removed, scale, masks)


def model_inputs(batch: SeriesBatch) -> SeriesBatch:
    """``batch`` as a model is shown it when predicting: without ``targets`` (for forecast and interpolate
    they hold the held-out values, the answer key; only the trainer's loss and early stopping read them)."""
    if isinstance(batch, RowTargetBatch) or batch.targets is not None:
        return SeriesBatch(batch.time, batch.values, batch.mask, labels=batch.labels, targets=None,
                           channel_names=batch.channel_names, class_names=batch.class_names, ids=batch.ids,
                           validate=False)
    return batch


# --------------------------------------------------------------------------- masks on disk
MASKS_FORMAT = "sde.tasks masks v1"


def save_masks(path: str | os.PathLike, task_data: TaskData | Split | Mapping[str, Tensor]) -> Path:
    """Write the seeded masks of a task part (a :class:`TaskData`, a :class:`Split`, or ``{name: mask}``) to
    the ``.npz`` file ``path``, atomically (:func:`tpp.io.atomic_write`), so a peer is scored on the same
    held-out values. Besides every mask ``[B, L(, C)]`` (bool) the file holds ``format``, and where known
    ``task``, ``ids`` (the series ids, in order), ``lengths`` and ``time [B, L]`` (each row's time), to line
    the rows up with a peer's copy of the data. Read it with :func:`load_masks` (or ``numpy.load``)."""
    from tpp.io import atomic_write

    arrays: dict[str, np.ndarray] = {"format": np.array(MASKS_FORMAT)}
    batch: SeriesBatch | None = None
    if isinstance(task_data, TaskData):
        masks, batch = task_data.masks, task_data.inputs
        arrays["task"] = np.array(task_data.task.value)
    elif isinstance(task_data, Split):
        masks, batch = task_data.masks, task_data.inputs
        arrays["task"] = np.array(task_data.task.value)
    else:
        masks = dict(task_data)
    for name, mask in masks.items():
        if name in arrays or name in ("ids", "lengths", "time"):
            raise ValueError(f"save_masks: mask name {name!r} is reserved")
        arrays[name] = np.asarray(mask.detach().cpu().numpy() if isinstance(mask, Tensor) else mask, dtype=bool)
    if batch is not None:
        if batch.ids is not None:
            arrays["ids"] = np.array(batch.ids, dtype=str)
        arrays["lengths"] = batch.lengths.cpu().numpy().astype(np.int64)
        arrays["time"] = batch.time.detach().cpu().numpy().astype(np.float64)
    path = Path(path)
    with atomic_write(path, ".npz") as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


def load_masks(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays written by :func:`save_masks` (masks as bool numpy arrays, ``ids`` as str, ``task`` and
    ``format`` as 0-d str arrays); a file that is not such an ``.npz`` is a ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such mask file")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a mask file written by sde.tasks.save_masks ({exc})") from None
    return arrays


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
@dataclass
class Predictive:
    """The predictive distribution of every value at every row ``[B, L, C]``, in the data's units.

    ``mean``, ``std``: its mean and standard deviation (what MSE, MAE and the Gaussian log density use).
    ``samples [S, B, L, C]`` (None for a Gaussian head): draws of the model's noise-free prediction (a latent
    SDE's decoded posterior paths; the emission means of a neural MJP's states); with ``noise_std``
    (broadcastable to ``[B, L, C]``) each draw carries Gaussian observation noise, so the predictive is the
    mixture ``sum_s w_s N(samples[s], noise_std**2)`` (``weights [S, B, L, 1]``, None: equal), scored
    exactly (:func:`sde.metrics.crps_mixture`); without ``noise_std`` the samples are draws of the value.
    ``family`` (without samples): ``"gaussian"`` (``N(mean, std**2)``) or ``"laplace"`` (a head trained with
    ``likelihood="laplace"``: ``Laplace(mean, b)`` with ``b = std / sqrt(2)``, scored with its own density,
    CRPS and intervals).
    """

    mean: Tensor
    std: Tensor
    samples: Tensor | None = None
    noise_std: Tensor | None = None
    weights: Tensor | None = None
    family: str = "gaussian"

    @property
    def kind(self) -> str:
        """``gaussian``, ``laplace``, ``mixture`` (samples + Gaussian noise) or ``samples``."""
        if self.samples is None:
            return "laplace" if self.family == "laplace" else "gaussian"
        return "samples" if self.noise_std is None else "mixture"

    @property
    def laplace_scale(self) -> Tensor:
        """``b = std / sqrt(2)`` of a Laplace predictive."""
        return self.std / math.sqrt(2.0)

    def log_density(self, y: Tensor, where: Tensor) -> Tensor:
        """``[N]`` log density of the values ``y = values[where]``: the Laplace's for a Laplace predictive,
        else the Gaussian with the predictive's mean and std (as :func:`evaluate` always scored)."""
        err = y - self.mean[where]
        if self.kind == "laplace":
            b = self.laplace_scale[where]
            return -torch.log(2 * b) - err.abs() / b
        sd = self.std[where]
        return -0.5 * (err / sd) ** 2 - torch.log(sd) - 0.5 * math.log(2 * math.pi)

    def _at(self, where: Tensor) -> Any:
        """The predictive of the values under the mask ``where [B, L, C]``, as :mod:`sde.metrics` takes it."""
        from sde.metrics import GaussianMixture, Laplace

        if self.samples is None:
            if self.kind == "laplace":
                return Laplace(self.mean[where], self.laplace_scale[where])
            return self.mean[where], self.std[where]
        shape = self.mean.shape
        samples = self.samples.expand(-1, *shape)[:, where]
        if self.noise_std is None:
            return samples
        std = torch.as_tensor(self.noise_std, dtype=self.mean.dtype, device=self.mean.device).expand(shape)[where]
        weights = None if self.weights is None else self.weights.expand(-1, *shape)[:, where]
        return GaussianMixture(samples, std, weights)

    def crps(self, y: Tensor, where: Tensor) -> Tensor:
        """CRPS ``[N]`` of the values ``y [N] = values[where]`` (:mod:`sde.metrics`)."""
        from sde.metrics import GaussianMixture, Laplace, crps_gaussian, crps_laplace, crps_mixture, crps_samples

        pred = self._at(where)
        if isinstance(pred, Laplace):
            return crps_laplace(pred.loc, pred.scale, y)
        if isinstance(pred, tuple):
            return crps_gaussian(pred[0], pred[1], y)
        if isinstance(pred, GaussianMixture):
            return crps_mixture(pred, y)
        return crps_samples(pred, y)

    def inside(self, y: Tensor, where: Tensor, level: float) -> Tensor:
        """``[N]``: is each value ``y = values[where]`` inside the central ``level`` predictive interval?"""
        from sde.metrics import inside_interval

        return inside_interval(self._at(where), y, level)


def predictive_distribution(model: Any, inputs: SeriesBatch, scale: TargetScale) -> Predictive:
    """The :class:`Predictive` of every value at every row of ``inputs`` (shown to the model without its
    ``targets``, :func:`model_inputs`): the Gaussian head of a discriminative model (mean and std mapped back
    to the data's units with ``scale``); :class:`~sde.models.LatentSDE`: :data:`LATENT_SAMPLES` decoded
    posterior paths and the observation noise (a Gaussian mixture; its std is the paths' spread plus the
    noise), and so any model with its ``interpolate(batch, t, num_samples)`` and ``noise_std`` (the Latent
    ODE); :class:`~sde.models.NeuralMJP`: its emission, a mixture over the posterior state marginals."""
    from sde.models import NeuralMJP
    from sde.models.latent import LatentSeriesModel
    from sde.models._base import SeriesModel

    inputs = model_inputs(inputs)
    if isinstance(model, SeriesModel):
        pred = model.predict(inputs)
        mean, std = scale.tensors(pred.mean)
        # a Laplace head: its location and scale map to data units as a mean and std do
        return Predictive(pred.mean * std + mean, pred.std * std, family=getattr(pred, "family", "gaussian"))
    time = inputs.time.to(torch.float64)
    if isinstance(model, LatentSeriesModel) or (hasattr(model, "interpolate") and hasattr(model, "noise_std")):
        # LatentSDE, LatentODE (and a user's model with their interface): posterior samples + Gaussian noise
        # the model's clock starts at each series' first observed row: ask no earlier than that
        rows = _observed(inputs).any(-1)
        first = torch.where(rows, time, torch.full_like(time, math.inf)).min(1).values
        query = torch.maximum(time, torch.where(torch.isfinite(first), first, time[:, 0])[:, None])
        samples = model.interpolate(inputs, query, num_samples=LATENT_SAMPLES)  # [S, B, L, C]
        noise = model.noise_std.to(samples)
        spread = samples.var(0, unbiased=False) + noise**2
        return Predictive(samples.mean(0), spread.sqrt(), samples, noise)
    if isinstance(model, NeuralMJP):
        q = model.posterior(inputs, time)  # [B, L, S] (one sub-process)
        emission = model.emission_
        mu = torch.as_tensor(emission["mean"][0], dtype=q.dtype, device=q.device)  # [S, C]
        sd = torch.as_tensor(emission["std"], dtype=q.dtype, device=q.device)  # [C]
        mean = q @ mu
        spread = (q @ mu**2 - mean**2).clamp_min(0) + sd**2
        return Predictive(mean, spread.sqrt(), mu[:, None, None, :], sd, q.permute(2, 0, 1)[..., None])
    raise TypeError(f"no predictive distribution for {type(model).__name__}")


def predictive(model: Any, inputs: SeriesBatch, scale: TargetScale) -> tuple[Tensor, Tensor]:
    """Predictive mean and standard deviation ``[B, L, C]`` of every value at every row of ``inputs``, in the
    data's units (the first two moments of :func:`predictive_distribution`)."""
    pred = predictive_distribution(model, inputs, scale)
    return pred.mean, pred.std


def class_probabilities(model: Any, test: SeriesBatch, chunk: int = EVAL_CHUNK) -> Tensor:
    """``[N, K]`` class probabilities of the ``test`` series, chunk by chunk, in order: ``model.predict_proba``
    where the model has it (a latent model whose ``predict`` gives values), else ``model.predict``."""
    probabilities = getattr(model, "predict_proba", None) or model.predict
    parts = []
    for start in range(0, len(test), chunk):
        part = model_inputs(test[np.arange(start, min(start + chunk, len(test)))])
        parts.append(probabilities(part).detach().to(torch.float64).cpu())
    return torch.cat(parts) if parts else torch.zeros(0, max(test.num_classes or 0, 2), dtype=torch.float64)


COVERAGE_LEVELS = (0.5, 0.9)
"""Central predictive intervals whose coverage :func:`evaluate` reports (``coverage_50``, ``coverage_90``)."""


def evaluate(model: Any, data: TaskData, *, seed: int, chunk: int = EVAL_CHUNK) -> dict[str, Any]:
    """Score a fitted ``model`` on the test part ``data``.

    classify: ``test_accuracy``; with two classes also ``test_auroc`` and ``test_auprc`` of the
    probability of the second class (:func:`sde.metrics.auroc`, :func:`sde.metrics.auprc`; for imbalanced
    labels such as in-hospital mortality). forecast / interpolate, on the held-out values in the data's
    units: ``test_mse``, ``test_mae`` of the predictive mean (a Laplace head's location); ``test_log_likelihood``
    (mean Gaussian log density per held-out value, nats; the Laplace density for a Laplace head); ``test_crps``
    (mean CRPS; from the predictive samples where the model has them, see :class:`Predictive`, else of the
    Gaussian or the Laplace); ``coverage_50``, ``coverage_90`` (share
    of held-out values inside the central 50 % / 90 % predictive interval); ``predictive`` (its kind) and
    ``n_test_values``. Always ``stats``: the solver work of the whole evaluation (:class:`SolverWork`).

    The model is put in eval mode and torch's generator seeded with ``seed`` (the SDEs' Brownian paths, the
    latent models' samples), then restored, so a saved and reloaded model scores the same numbers. The
    model never sees the part's ``targets`` (:func:`model_inputs`)."""
    from sde import metrics

    model.eval()
    inputs = data.inputs
    with torch.random.fork_rng(devices=[]), torch.no_grad(), record_solver_work() as work:
        torch.manual_seed(derived_seed(seed, 3))
        if data.task is TaskName.CLASSIFY:
            if inputs.labels is None:
                raise ValueError("accuracy needs labelled series")
            probs = class_probabilities(model, inputs, chunk)
            labels = inputs.labels.cpu()
            result: dict[str, Any] = {"test_accuracy": float((probs.argmax(1) == labels).double().mean())
                                      if len(labels) else float("nan")}
            if probs.shape[1] == 2:
                result["test_auroc"] = metrics.auroc(probs[:, 1], labels)
                result["test_auprc"] = metrics.auprc(probs[:, 1], labels)
                result["positive_rate"] = float(labels.double().mean()) if len(labels) else float("nan")
        else:
            scale, scored_all = data.scale, data.scored
            assert scale is not None and scored_all is not None
            sq = ab = ll = crps = 0.0
            inside = dict.fromkeys(COVERAGE_LEVELS, 0)
            kind = "gaussian"
            for start in range(0, len(inputs), chunk):
                index = np.arange(start, min(start + chunk, len(inputs)))
                part = inputs[index]
                length = part.time.shape[1]
                pred = predictive_distribution(model, part, scale)
                kind = pred.kind
                mean = pred.mean
                scored = scored_all[index, :length].to(mean.device)
                truth = data.values[index, :length].to(mean)
                err = (mean - truth)[scored]
                sq += float((err**2).sum())
                ab += float(err.abs().sum())
                y = truth[scored]
                ll += float(pred.log_density(y, scored).sum())
                if bool(scored.any()):
                    crps += float(pred.crps(y, scored).sum())
                    for level in COVERAGE_LEVELS:
                        inside[level] += int(pred.inside(y, scored, level).sum())
            n = max(data.num_scored, 1)
            result = {"test_mse": sq / n, "test_mae": ab / n, "test_log_likelihood": ll / n,
                      "test_crps": crps / n,
                      **{f"coverage_{round(100 * level)}": inside[level] / n for level in COVERAGE_LEVELS},
                      "predictive": kind, "n_test_values": data.num_scored}
    result["stats"] = work.as_dict()
    return result
