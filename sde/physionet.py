"""The Latent ODE protocol on PhysioNet 2012 (Rubanova, Chen & Duvenaud, NeurIPS 2019), next to ours on exact times.

The paper's PhysioNet numbers (test MSE, interpolation 2.118e-3 for the Latent ODE with ODE-RNN
encoder, 2.361e-3 for the ODE-RNN; extrapolation 2.231e-3; :data:`PAPER_MSE`) are only comparable
under its own preprocessing and metric, which the paper's text states only in part. What follows is
read from the paper (section 4.2 "Quantitative evaluation", section 4.4 "Physionet", tables 4-5) and
from its public code, github.com/YuliaRubanova/latent_ode at commit c0682d4 (``physionet.py``,
``lib/parse_datasets.py``, ``lib/utils.py``, ``lib/likelihood_eval.py``, ``lib/base_models.py``,
``run_models.py``); line numbers refer to that commit.

The paper's protocol (:func:`latent_ode_protocol`, :func:`interpolation_task`, :func:`extrapolation_task`,
:func:`protocol_mse`):

* **Records**: sets A and B pooled, 8000 stays (``parse_datasets.py:103-120``: set-b is added unless
  ``--classif``; set-b has no labels in the code, ours has them and they are kept but unused).
* **Variables**: 41 (``physionet.py:68-73``, :data:`PAPER_VARIABLES`): the descriptors Age, Gender,
  Height, ICUType, recorded once at 00:00, are series values at t = 0 like the 37 time-varying variables
  (the paper's text speaks of "37 possible features"; the code's ``input_dim`` is 41). The file format's
  ``-1`` ("missing") is *kept as an observed value* (``physionet.py:176-186`` has no special case), so
  Height, Gender and the admission Weight carry -1 values. Our reader drops the descriptors and the
  Weight -1 codes; pass ``descriptors=read_descriptors(archive)`` to put them back as the code has them.
* **Time quantisation**: ``t = HH + MM / 60`` rounded as ``round(t / q) * q`` (Python's round: half to
  even), ``q = --quantization`` (``physionet.py:164-167``; ``run_models.py:58``: default 0.1 h = 6 min;
  the README's PhysioNet command uses 0.016; the paper's text says "rounded ... to the nearest minute").
  Values of one variable that fall in one bin are averaged (``physionet.py:178-184``). Here the bins are
  computed with the same floating-point operations, so every row lands in the code's bin. One
  difference: our reader has already averaged repeated values *within a minute*, so a bin averages
  per-minute means (equal to the code's mean of raw lines unless one variable has several lines in one
  minute and others in the same bin).
* **Split**: ``sklearn.model_selection.train_test_split(total, train_size=0.8, random_state=42,
  shuffle=True)`` (``parse_datasets.py:123-124``): ``n_train = floor(0.8 n)``, ``n_test = n - n_train``,
  ``perm = RandomState(42).permutation(n)``, test = ``perm[:n_test]``, train = ``perm[n_test:]``
  (sklearn's ShuffleSplit). Reproduced without sklearn. The code's record order is ``os.listdir``
  order (``physionet.py:151``, file-system dependent, so its exact split cannot be rebuilt anywhere);
  ours is the order of the batch given (the reader's: by file name, set A then set B).
* **Normalisation**: per variable, over the observed values of *all* 8000 stays, train and test
  (``get_data_min_max(total_dataset)``, ``parse_datasets.py:132``; ``physionet.py:26-56``), then
  ``(x - min) / max`` -- divided by the maximum, not the range (``lib/utils.py:348-363``; a zero max
  becomes 1). A variable with ``min >= 0`` lands in ``[0, 1 - min/max]`` within [0, 1]; one with a
  negative minimum (the -1 codes; raw outliers such as a negative temperature) can exceed 1.
  ``normalisation="paper"`` does exactly this; ``"minmax-train"`` is the textbook min-max on the training
  part only, ``(x - min) / (max - min)`` (no test information; train values in [0, 1]).
* **Time scale**: times are divided by the largest time of the minibatch (``physionet.py:342-343``);
  the test set is one batch (``parse_datasets.py:137``), so that is its largest time, 48 h in practice.
  Here ``normalise_time=True`` divides by the largest time of the whole data set (:attr:`LatentODEProtocol.time_scale`).
* **Interpolation** (``lib/utils.py:408-428``, ``481-508``): the model is conditioned on the observed
  values and reconstructs *all* of them, those it saw included. With ``--sample-tp p`` (``p`` in (0, 1];
  ``lib/utils.py:135-149``) it is conditioned on ``int(n * p)`` of a series' ``n`` observed rows, drawn at
  random, and still scored on all observed values. The paper does not say which ``--sample-tp`` its
  PhysioNet table used; the code's default is none (condition on everything). :func:`interpolation_task`
  takes ``sample_tp``. Without it the task is a reconstruction of values the model has seen (copying the
  inputs scores 0): its number means something only for a model that cannot copy, such as the Latent
  ODE decoding everything from ``z0``, or the code's ODE-RNN, scored on its one-step-ahead prediction of
  each row (its first row is copied, ``lib/ode_rnn.py:78-81``).
* **Extrapolation** (``lib/utils.py:378-402``; paper 4.2: "we split the timeline in half"): the
  observed part is the first half of the batch's *union* time grid (``n_tp // 2`` points), the target
  the second half. For the one-batch test set at ``q = 0.1`` the union grid is 0, 0.1, ..., 48 h, so the
  cut falls at 24 h: condition on t < 24 h, predict t >= 24 h. :func:`extrapolation_task` applies the
  code's rule to the part it is given (``cut=None``) or a given cut.
* **MSE** (``lib/likelihood_eval.py:141-163``, ``199-234``; ``lib/base_models.py:236-250``): on the
  normalised values; for every posterior sample, stay and variable the mean squared error over that
  variable's scored points, **0 for a variable with no scored point**; then the mean over variables,
  stays and samples (3 samples at test, ``run_models.py:277``). The variables without points pull the
  number down, one reason the published values are of order 1e-3. :func:`protocol_mse` computes it.
  For scale, on the staged copy (sets A and B, ``q = 0.1``, seed 42; 1600 test stays): each variable's
  training mean scores 3.36e-3 on extrapolation and 1.49e-2 on interpolation; carrying each variable's
  last value before 24 h forward scores 1.93e-3 on extrapolation, below the paper's 2.231e-3.
  (``get_next_batch``, ``lib/utils.py:213-247``, also drops union time points whose normalised values
  sum to 0 over the batch; such a point holds only minima, and it is not dropped here.)
* The code works in float32; this module in the batch's dtype (float64 by default).

Our protocol on exact times (:func:`exact_times_protocol`, then :func:`sde.tasks.make_task`):
the same records, variables and seeded 80/20 split, but

* times stay exact (hours since admission, to the minute, no bins, no averaging across minutes);
* values are min-max normalised on the training part only (``"minmax-train"``), so no test value
  shapes the scale;
* interpolation holds values *out* (:func:`sde.tasks.holdout_values`: a share of each stay's observed
  values strictly inside its observed span, never shown to the model) and scores only those;
  forecasting conditions on t < 24 h and scores the observed values at t >= 24 h
  (:func:`extrapolation_task` with ``cut=24``);
* the score is the MSE per held-out value (``sde.tasks.evaluate``'s ``test_mse``), reported beside
  :func:`protocol_mse` on the same masks.
"""

from __future__ import annotations

import math
import tarfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sde.readers import PHYSIONET_CHANNELS
from sde.series import SeriesBatch, SeriesDataError

__all__ = [
    "DESCRIPTORS",
    "PAPER_MSE",
    "PAPER_VARIABLES",
    "Descriptors",
    "LatentODEProtocol",
    "exact_times_protocol",
    "extrapolation_task",
    "interpolation_task",
    "latent_ode_protocol",
    "load_protocol",
    "paper_split",
    "protocol_mse",
    "quantise_hours",
    "read_descriptors",
]

#: The descriptors the code reads as series values at t = 0 (``physionet.py:69``).
DESCRIPTORS = ("Age", "Gender", "Height", "ICUType")

#: The code's 41 variables in its channel order (``physionet.py:68-73``).
PAPER_VARIABLES = DESCRIPTORS + (
    "Weight", "Albumin", "ALP", "ALT", "AST", "Bilirubin", "BUN", "Cholesterol", "Creatinine", "DiasABP", "FiO2",
    "GCS", "Glucose", "HCO3", "HCT", "HR", "K", "Lactate", "Mg", "MAP", "MechVent", "Na", "NIDiasABP", "NIMAP",
    "NISysABP", "PaCO2", "PaO2", "pH", "Platelets", "RespRate", "SaO2", "SysABP", "Temp", "TroponinI", "TroponinT",
    "Urine", "WBC",
)

#: Published test MSE on PhysioNet (mean over seeds), paper tables 4 and 5, on the protocol's scale.
PAPER_MSE = {
    "interpolation": {"RNN-dt": 3.520e-3, "RNN-Impute": 3.243e-3, "RNN-Decay": 3.215e-3, "GRU-D": 3.384e-3,
                      "ODE-RNN": 2.361e-3, "RNN-VAE": 5.930e-3, "Latent ODE (RNN enc.)": 3.907e-3,
                      "Latent ODE (ODE enc.)": 2.118e-3, "Latent ODE + Poisson": 2.789e-3},
    "extrapolation": {"RNN-VAE": 3.055e-3, "Latent ODE (RNN enc.)": 3.162e-3, "Latent ODE (ODE enc.)": 2.231e-3,
                      "Latent ODE + Poisson": 2.208e-3},
}

NORMALISATIONS = ("paper", "minmax-train")


# --------------------------------------------------------------------------- descriptors
@dataclass(frozen=True)
class Descriptors:
    """What the reader leaves out and the code keeps, per record (``ids``): ``values [B, 4]`` the
    :data:`DESCRIPTORS` at 00:00 as written (-1 kept, NaN if the line is absent) and ``weight_code [B]``
    whether a ``Weight,-1`` line is written at 00:00 (the code keeps it as the value -1)."""

    ids: tuple[str, ...]
    values: np.ndarray
    weight_code: np.ndarray

    def lookup(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``values [B, 4]`` and ``weight_code [B]`` in the order of ``ids``; a record not here raises naming it."""
        where = {r: i for i, r in enumerate(self.ids)}
        missing = [r for r in ids if r not in where]
        if missing:
            raise SeriesDataError(f"{len(missing)} record(s) have no descriptors (first: {missing[0]!r}); read them "
                                  "from the archive(s) the batch was loaded from", series_id=missing[0],
                                  field="descriptors")
        index = np.array([where[r] for r in ids], np.int64)
        return self.values[index], self.weight_code[index]

    @classmethod
    def concat(cls, parts: Sequence[Descriptors]) -> Descriptors:
        return cls(tuple(i for p in parts for i in p.ids), np.concatenate([p.values for p in parts]),
                   np.concatenate([p.weight_code for p in parts]))


def read_descriptors(*archives: str | Path) -> Descriptors:
    """The 00:00 descriptor lines of the records in PhysioNet 2012 ``.tar.gz`` archive(s) (set A, set B, ...).

    Only the lines at ``00:00`` are read (the descriptors are written there); a record is named by its
    file stem, as :func:`sde.readers.read_physionet2012` names it."""
    if not archives:
        raise TypeError("read_descriptors needs at least one archive path")
    ids: list[str] = []
    rows: list[list[float]] = []
    codes: list[bool] = []
    for archive in archives:
        with tarfile.open(archive) as tf:
            members = sorted((m for m in tf.getmembers() if m.isfile() and m.name.endswith(".txt")),
                             key=lambda m: m.name)
            for member in members:
                handle = tf.extractfile(member)
                assert handle is not None
                values = [math.nan] * len(DESCRIPTORS)
                code = False
                for number, raw in enumerate(handle.read().decode("utf-8").splitlines()[1:], start=2):
                    if not raw.startswith("00:00,"):
                        if raw and raw[:5] > "00:00":
                            break  # the records are in time order: the 00:00 block is over
                        continue
                    parts = raw.split(",")
                    if len(parts) != 3:
                        raise SeriesDataError("not a 'Time,Parameter,Value' row", source=f"{archive}:{member.name}",
                                              line=number)
                    name, text = parts[1], parts[2]
                    try:
                        value = float(text)
                    except ValueError:
                        raise SeriesDataError(f"value {text!r} is not a number", source=f"{archive}:{member.name}",
                                              line=number, field=name) from None
                    if name in DESCRIPTORS:
                        values[DESCRIPTORS.index(name)] = value
                    elif name == "Weight" and value == -1:
                        code = True
                ids.append(PurePosixPath(member.name).stem)
                rows.append(values)
                codes.append(code)
    return Descriptors(tuple(ids), np.array(rows, np.float64).reshape(-1, len(DESCRIPTORS)), np.array(codes, bool))


# --------------------------------------------------------------------------- quantisation and split
def quantise_hours(hours: np.ndarray, quantization: float) -> np.ndarray:
    """The code's bin of each time (hours, to the minute): ``round((HH + MM / 60) / q) * q`` with the same
    float operations and Python's half-to-even rounding (``physionet.py:164-167``)."""
    if not quantization > 0:
        raise ValueError(f"quantization must be > 0 hours, got {quantization}")
    minutes = np.rint(np.asarray(hours, np.float64) * 60.0).astype(np.int64)
    # HH + MM / 60, not minutes / 60: the two differ in the last bit for some minutes, which moves a
    # time that sits on a bin's midpoint to the other side
    code_hours = (minutes // 60).astype(np.float64) + (minutes % 60).astype(np.float64) / 60.0
    return np.rint(code_hours / quantization) * quantization  # rint: half to even, as Python's round


def paper_split(n: int, *, train_fraction: float = 0.8, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` indices as ``sklearn.model_selection.train_test_split(range(n), train_size=0.8,
    random_state=42, shuffle=True)`` draws them (``parse_datasets.py:123-124``): ``n_train = floor(0.8 n)``,
    the first ``n - n_train`` of ``RandomState(seed).permutation(n)`` are the test part, the rest train."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    n_train = int(math.floor(train_fraction * n))
    n_test = n - n_train
    if n_train < 1 or n_test < 1:
        raise ValueError(f"{n} series cannot be split {train_fraction:g} / {1 - train_fraction:g} with both parts "
                         "non-empty")
    permutation = np.random.RandomState(seed).permutation(n)
    return permutation[n_test:n_test + n_train], permutation[:n_test]


# --------------------------------------------------------------------------- the protocol
@dataclass(frozen=True)
class LatentODEProtocol:
    """The train and test parts of the protocol and how they were made.

    ``train``/``test``: normalised series (NaN = unobserved) with the protocol's variables as channels;
    ``train_index``/``test_index``: their positions in the batch given; ``data_min``/``data_max``: the
    per-variable statistics of the normalisation (raw units); ``time_scale``: hours per time unit of the
    parts (1 when times are left in hours)."""

    train: SeriesBatch
    test: SeriesBatch
    train_index: np.ndarray
    test_index: np.ndarray
    variables: tuple[str, ...]
    data_min: np.ndarray
    data_max: np.ndarray
    normalisation: str
    quantization: float | None
    time_scale: float
    seed: int
    notes: tuple[str, ...] = field(default=())

    def denormalise(self, values: Tensor) -> Tensor:
        """Normalised values ``[..., C]`` back in the variables' units."""
        lo = torch.as_tensor(self.data_min, dtype=values.dtype, device=values.device)
        hi = torch.as_tensor(self.data_max, dtype=values.dtype, device=values.device)
        return values * _divisor(lo, hi, self.normalisation) + lo


def _divisor(lo: Tensor | np.ndarray, hi: Tensor | np.ndarray, normalisation: str) -> Tensor | np.ndarray:
    """What the values are divided by after subtracting the minimum: the maximum (the code, a zero
    maximum becoming 1, ``lib/utils.py:350``) or the range (a zero or undefined range becoming 1)."""
    if normalisation == "paper":
        div = hi * 1.0
    else:
        div = hi - lo
    if isinstance(div, Tensor):
        return torch.where((div == 0) | ~torch.isfinite(div), torch.ones_like(div), div)
    return np.where((div == 0) | ~np.isfinite(div), 1.0, div)


def _flat(batch: SeriesBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``times [N]``, ``values [N, C]``, ``series [N]`` of the rows that exist."""
    mask = batch.mask.cpu().numpy()
    series = np.nonzero(mask)[0]
    return batch.time.cpu().numpy()[mask], batch.values.cpu().numpy()[mask], series


def _with_descriptors(batch: SeriesBatch, descriptors: Descriptors | None) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                                      np.ndarray, tuple[str, ...]]:
    """Flat rows in the protocol's channel order, with ``count [N, C]`` (how many values each cell averages)."""
    missing = [c for c in PHYSIONET_CHANNELS if c not in batch.channel_names]
    if missing:
        raise ValueError(f"the batch is not PhysioNet 2012 as sde.readers reads it: no channel(s) {missing} "
                         f"(channels: {list(batch.channel_names)})")
    if batch.ids is None:
        raise ValueError("the batch has no record ids (seq_names); the protocol names stays by RecordID")
    times, values, series = _flat(batch)
    variables = PAPER_VARIABLES if descriptors is not None else PAPER_VARIABLES[len(DESCRIPTORS):]
    order = [batch.channel_names.index(v) for v in variables if v in batch.channel_names]
    out = np.full((times.size, len(variables)), np.nan)
    offset = len(variables) - len(order)
    out[:, offset:] = values[:, order]
    count = (~np.isnan(out)).astype(np.float64)
    if descriptors is not None:
        desc, code = descriptors.lookup(list(batch.ids))
        first = np.flatnonzero(np.r_[True, series[1:] != series[:-1]])  # the first row of every series
        if not np.all(times[first] == 0):
            b = int(series[first[np.flatnonzero(times[first] != 0)[0]]])
            raise SeriesDataError("the first row is not at t = 0 (admission), where the descriptors belong",
                                  series=b, series_id=batch.ids[b], field="time")
        out[first, :offset] = desc
        count[first, :offset] = ~np.isnan(desc)
        # a 'Weight,-1' line at 00:00 is the value -1 in the code: average it into the admission row
        w = variables.index("Weight")
        flagged = first[code]
        prior = np.nan_to_num(out[flagged, w]) * count[flagged, w]
        count[flagged, w] += 1
        out[flagged, w] = (prior - 1.0) / count[flagged, w]
    return times, out, count, series, variables


def latent_ode_protocol(
    batch: SeriesBatch,
    *,
    descriptors: Descriptors | None = None,
    quantization: float | None = 0.1,
    seed: int = 42,
    train_fraction: float = 0.8,
    normalisation: str = "paper",
    normalise_time: bool = True,
) -> LatentODEProtocol:
    """The paper's PhysioNet preprocessing of ``batch`` (sets A and B pooled, as read by
    :func:`sde.readers.read_physionet2012`) and its seeded 80/20 split (see the module docstring).

    ``descriptors`` (:func:`read_descriptors` of the same archives) gives the code's 41 variables; without
    it the 37 time-varying ones are used and a warning says so (the MSE then averages over 37 variables,
    not the paper's 41). ``quantization`` (hours, the code's default 0.1; ``None`` keeps exact times);
    ``normalisation``: ``"paper"`` (``(x - min) / max`` over all stays) or ``"minmax-train"``
    (``(x - min) / (max - min)`` over the training part); ``normalise_time`` divides times by the largest
    time of the data set (the code divides by each batch's largest)."""
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    notes: list[str] = []
    if descriptors is None:
        note = ("no descriptors given: 37 variables instead of the code's 41 (Age, Gender, Height, ICUType at "
                "t = 0 and the Weight -1 codes are absent), so protocol_mse does not compare with the paper's "
                "numbers; pass descriptors=sde.physionet.read_descriptors(archive_a, archive_b)")
        warnings.warn(note, UserWarning, stacklevel=2)
        notes.append(note)
    times, values, count, series, variables = _with_descriptors(batch, descriptors)
    B, C = len(batch), len(variables)
    if quantization is not None:
        times = quantise_hours(times, quantization)
        # rows of one series that share a bin become one row: the mean of the values in it
        key = series * (np.int64(1) << 32) + np.rint(times / quantization).astype(np.int64)
        # series ascending, times ascending within a series: the bins come out in row order
        unique, inverse = np.unique(key, return_inverse=True)
        total = np.zeros((unique.size, C))
        weight = np.zeros((unique.size, C))
        np.add.at(total, inverse, np.where(count > 0, np.nan_to_num(values) * count, 0.0))
        np.add.at(weight, inverse, count)
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.where(weight > 0, total / np.where(weight > 0, weight, 1.0), np.nan)
        first_of = np.full(unique.size, -1, np.int64)
        first_of[inverse[::-1]] = np.arange(inverse.size)[::-1]
        times, series = times[first_of], series[first_of]
        notes.append(f"times rounded to multiples of {quantization:g} h; values in one bin averaged")
    train_index, test_index = paper_split(B, train_fraction=train_fraction, seed=seed)
    part_of = np.full(B, -1)
    part_of[train_index] = 0
    part_of[test_index] = 1
    observed = ~np.isnan(values)
    stats_rows = observed if normalisation == "paper" else observed & (part_of[series] == 0)[:, None]
    lo = np.where(stats_rows, values, np.inf).min(0)
    hi = np.where(stats_rows, values, -np.inf).max(0)
    normalised = (values - np.where(np.isfinite(lo), lo, 0.0)) / _divisor(lo, hi, normalisation)
    scale = float(times.max()) if normalise_time and times.max() > 0 else 1.0
    offsets = np.concatenate([[0], np.cumsum(np.bincount(series, minlength=B))])

    def part(index: np.ndarray) -> SeriesBatch:
        pieces = [(times[offsets[b]:offsets[b + 1]] / scale, normalised[offsets[b]:offsets[b + 1]]) for b in index]
        labels = None if batch.labels is None else batch.labels.cpu().numpy()[index]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a stay without any value: the reader has warned about it already
            return SeriesBatch.from_arrays(pieces, labels, channel_names=variables, class_names=batch.class_names,
                                           ids=[batch.ids[b] for b in index], dtype=batch.dtype)

    return LatentODEProtocol(part(train_index), part(test_index), train_index, test_index, variables, lo, hi,
                             normalisation, quantization, scale, seed, tuple(notes))


def load_protocol(names: Sequence[str] = ("physionet2012", "physionet2012_b"), *, exact_times: bool = False,
                  **options: Any) -> LatentODEProtocol:
    """Load the registered sets (default A and B, the paper's 8000 stays) with their descriptors and apply
    :func:`latent_ode_protocol` (``options`` go to it) or, with ``exact_times=True``, :func:`exact_times_protocol`."""
    from sde.datasets import load, verify

    batch = SeriesBatch.concat([load(name) for name in names])
    descriptors = read_descriptors(*(verify(name)["all"] for name in names))
    if exact_times:
        return exact_times_protocol(batch, descriptors=descriptors, **options)
    return latent_ode_protocol(batch, descriptors=descriptors, **options)


def exact_times_protocol(batch: SeriesBatch, *, descriptors: Descriptors | None = None, seed: int = 42,
                         train_fraction: float = 0.8) -> LatentODEProtocol:
    """Our protocol: the same stays, variables and seeded split as :func:`latent_ode_protocol`, exact times in
    hours (no bins), min-max normalisation on the training part (see the module docstring); set the tasks up
    with :func:`sde.tasks.make_task` (interpolate: held-out values) or :func:`extrapolation_task` with ``cut=24``."""
    return latent_ode_protocol(batch, descriptors=descriptors, quantization=None, seed=seed,
                               train_fraction=train_fraction, normalisation="minmax-train", normalise_time=False)


# --------------------------------------------------------------------------- tasks
def _task_data(task: str, part: SeriesBatch, inputs_values: Tensor, scored: Tensor, masks: dict[str, Tensor],
               scale: Any, train: bool) -> Any:
    """A :class:`sde.tasks.TaskData` of a part: targets standardised as :func:`sde.tasks.make_task` does it (the
    training part's :class:`~sde.tasks.TargetScale`), so a model's predictions come back on the protocol's scale."""
    from sde.tasks import RowTargetBatch, TargetScale, TaskData, TaskName

    name = TaskName(task)
    if train:
        scale = TargetScale.of(part)
    elif scale is None:
        raise ValueError(f"{name.value} on a test part: pass the training part's scale (train_data.scale), "
                         "or train=True")
    mean, std = scale.tensors(part.values)
    nan = torch.full_like(part.values, float("nan"))
    targets = torch.where(scored, (part.values - mean) / std, nan)
    inputs = RowTargetBatch(part.time, inputs_values, part.mask, targets=targets, channel_names=part.channel_names,
                            ids=part.ids)
    return TaskData(name, inputs, part.values, scored, torch.zeros_like(scored), scale, masks)


def interpolation_task(part: SeriesBatch, *, sample_tp: float | None = None, seed: int = 1991, train: bool = False,
                       scale: Any = None) -> Any:
    """The code's interpolation set-up on a part of :func:`latent_ode_protocol` as a :class:`sde.tasks.TaskData`.

    Every observed value is a target and is scored (``lib/utils.py:408-428``). ``sample_tp`` (in (0, 1]):
    each stay is conditioned on ``int(n * sample_tp)`` of its ``n`` rows with an observed value, drawn
    without replacement (``lib/utils.py:135-149``; here from ``RandomState(seed)``, stays in order); the
    other rows are NaN in ``inputs``. ``masks``: ``scored`` (all observed values), ``input_rows`` ``[B, L]``
    (rows the model sees), ``held_out`` (scored values it does not see). ``train=True`` measures the target
    standardisation on ``part``; a test part takes the training part's ``scale``, as in :func:`sde.tasks.make_task`."""
    observed = part.observed
    rows = observed.any(-1)
    keep = rows.clone()
    if sample_tp is not None:
        if not 0.0 < sample_tp <= 1.0:
            raise ValueError(f"sample_tp must be in (0, 1] (a share of each stay's observed rows), got {sample_tp}")
        rng = np.random.RandomState(seed)
        keep = torch.zeros_like(rows)
        for b in range(len(part)):
            where = torch.nonzero(rows[b]).flatten().numpy()
            chosen = rng.choice(where, int(where.size * sample_tp), replace=False) if where.size else where
            keep[b, torch.as_tensor(chosen, dtype=torch.long)] = True
    seen = observed & keep[..., None]
    inputs = torch.where(seen, part.values, torch.full_like(part.values, float("nan")))
    return _task_data("interpolate", part, inputs, observed,
                      {"scored": observed, "input_rows": keep, "held_out": observed & ~seen}, scale, train)


def extrapolation_task(part: SeriesBatch, *, cut: float | None = None, train: bool = False, scale: Any = None) -> Any:
    """The code's extrapolation set-up on a part as a :class:`sde.tasks.TaskData`: condition on the rows before
    ``cut``, score the observed values at and after it; the later rows stay in ``inputs`` with NaN values.

    ``cut`` is in the part's time unit; ``None`` applies the code's rule to the whole part (the first
    ``n // 2`` of the ``n`` distinct times of all its stays are observed, ``lib/utils.py:381``), which is
    24 h (0.5 on the normalised clock) when every bin of the grid occurs. ``masks``: ``scored``,
    ``future_rows`` ``[B, L]``, ``held_out`` (= ``scored``), and ``cut`` (a 0-d tensor). ``train``/``scale`` as in
    :func:`interpolation_task`."""
    if cut is None:
        grid = torch.unique(part.time[part.mask])
        cut = float(grid[grid.numel() // 2])
    future = part.mask & (part.time >= cut)
    scored = part.observed & future[..., None]
    inputs = torch.where(future[..., None], torch.full_like(part.values, float("nan")), part.values)
    return _task_data("forecast", part, inputs, scored,
                      {"scored": scored, "future_rows": future, "held_out": scored,
                       "cut": torch.tensor(cut, dtype=part.time.dtype)}, scale, train)


# --------------------------------------------------------------------------- the metric
def protocol_mse(pred: Tensor, truth: Tensor, mask: Tensor) -> float:
    """The paper's test MSE (``lib/likelihood_eval.py:141-163``, ``199-234``): for every sample, stay and
    variable the mean of ``(pred - truth)**2`` over its ``mask``-ed points, 0 where it has none; then the
    mean over variables, stays and samples. ``pred`` ``[B, L, C]`` or ``[S, B, L, C]`` (S posterior samples:
    the code averages the MSE of each sample, not the MSE of their mean); ``truth`` and ``mask``
    ``[B, L, C]`` on the normalised scale (a NaN in ``truth`` is never scored).

    By Jensen's inequality the MSE of a predictive *mean* is at most the code's average over samples: a
    latent model compared with the paper should pass its samples (the code draws 3), and a number from a
    mean prediction should say so."""
    if pred.dim() == 3:
        pred = pred[None]
    if pred.dim() != 4 or pred.shape[1:] != truth.shape or truth.shape != mask.shape:
        raise ValueError(f"pred must be [B, L, C] or [S, B, L, C] and truth, mask [B, L, C]; got pred "
                         f"{tuple(pred.shape)}, truth {tuple(truth.shape)}, mask {tuple(mask.shape)}")
    mask = mask.to(torch.bool) & ~torch.isnan(truth)
    diff = torch.where(mask, pred.to(torch.float64) - torch.nan_to_num(truth.to(torch.float64)),
                       torch.zeros((), dtype=torch.float64, device=pred.device))
    count = mask.sum(1).to(torch.float64)  # [B, C]
    per_variable = (diff**2).sum(2) / count.clamp(min=1)  # [S, B, C]; 0 where nothing is scored
    if torch.isnan(per_variable).any():
        raise ValueError("pred is NaN at a scored point")
    return float(per_variable.mean())
