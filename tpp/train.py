"""The one training loop for every gradient-trained model: ``tpp.fit(model, train, val, ...)``, or ``model.fit(...)``.

* The model: a :class:`tpp.model.Model`. The loop relies on its declared contract only:
  ``initialise(sample)`` once before a fresh run (never on resume), ``model(batch)`` (its
  ``objective`` ``[B]``, e.g. the exact log-likelihood of a point process) as the thing maximised,
  ``after_step()`` after every optimizer step.

* Data: an :class:`~tpp.events.EventBatch`, or any :class:`~tpp.stream.BatchSource` (e.g. a
  :class:`~tpp.stream.ParquetSource` streaming a log larger than memory); the same loop reads both.
* Minibatches by length buckets: sequences sorted by length and cut into groups of
  ``batch_size`` (little padding), the order of the groups shuffled each epoch with the seed.
* AdamW, linear warm-up then cosine decay of the learning rate, gradient-norm clipping.
* Loss: ``-model(batch).sum() / n_events``, minus the objective per event.
* Never NaN silently: a non-finite loss or gradient norm raises :class:`TrainingDivergedError`
  naming the epoch, the batch and its sequences, or (``on_nonfinite="skip"``) skips that update
  and counts it in the history.
* Early stopping on the validation objective per event (:func:`evaluate`); the best weights are restored.
* tqdm progress on stderr with events per second.
* Atomic checkpoints (temporary file + rename) after every epoch and, with ``checkpoint_every``,
  every that many steps within an epoch (model, optimizer, schedule, RNG states, the random state
  at the epoch's start and the step reached, history). Each file carries the SHA-256 of its
  contents; the previous one is kept, and a truncated or altered file is detected on load and the
  previous one used instead. ``resume=True`` continues a killed run from its last checkpoint,
  mid-epoch included (the epoch's batch order is rebuilt from its random state), and ends where
  an uninterrupted run with the same seed would.
* A run owns its ``checkpoint_dir``: ``.lock`` there (pid and host, taken atomically) keeps a second
  run out; each checkpoint records the run's identity (trainer settings, model class and settings,
  data fingerprints) and ``resume=True`` refuses another run's directory naming the differences; a
  fresh run refuses a directory holding checkpoints unless ``overwrite=True``.
* Data-parallel when launched by ``torchrun`` (``WORLD_SIZE > 1``): every process takes its share
  of each minibatch (sequences ``rank, rank + world, ...``), gradients are averaged by DDP, rank 0
  writes checkpoints (``checkpoint_dir`` must be shared), every rank resumes from them. The loss
  is scaled so that the update equals the single-process update on the same global minibatch.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import io
import math
import numbers
import os
import random
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from tpp.clock import warn_if_absolute_time
from tpp.events import EventBatch
from tpp.io import atomic_write
from tpp.model import Model
from tpp.options import Interval
from tpp.stream import BatchSource, as_source, length_buckets

__all__ = [
    "fit", "evaluate", "TrainResult", "length_buckets", "shard", "CheckpointError", "TrainingDivergedError",
    "NonFinite",
]


class CheckpointError(RuntimeError):
    """No readable checkpoint where one was expected, or one written by a different run."""


class NonFinite(str, enum.Enum):
    """What :func:`fit` does when a step's loss or gradient norm is NaN or infinite."""

    RAISE = "raise"  #: stop with TrainingDivergedError
    SKIP = "skip"  #: drop that update (parameters and optimizer state untouched), count it, go on


class TrainingDivergedError(FloatingPointError):
    """A non-finite loss or gradient: names where, so the offending sequences can be inspected."""

    def __init__(self, quantity: str, value: float, epoch: int, batch_index: int | None = None,
                 sequences: list[int] | None = None, names: list[Any] | None = None) -> None:
        self.quantity, self.value, self.epoch, self.batch_index = quantity, value, epoch, batch_index
        self.sequences, self.names = sequences, names
        where = f"epoch {epoch}"
        if batch_index is not None:
            ids = f" (ids {names})" if names is not None and names != sequences else ""
            where += f", batch {batch_index}, sequences {sequences}{ids}"
        super().__init__(f"non-finite {quantity} ({value}) at {where}; lower the learning rate, check the data, "
                         "or pass on_nonfinite='skip'")


@dataclass
class TrainResult:
    """What a run did: one record per epoch, the best epoch and its validation score."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_val_ll_per_event: float | None = None
    stopped_early: bool = False
    resumed_from_epoch: int | None = None
    resumed_from_step: int | None = None  #: steps of that epoch already done (0: it had ended)
    resume_seconds: float | None = None  #: time to read, verify and restore the checkpoint

    @property
    def train_events_per_second(self) -> float:
        rates = [h["events_per_second"] for h in self.history if h.get("events_per_second")]
        return float(np.mean(rates)) if rates else float("nan")

    @property
    def skipped_steps(self) -> int:
        return int(sum(h.get("skipped_steps", 0) for h in self.history))


def shard(indices: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This process's share of a minibatch: sequences ``rank, rank + world, ...`` (disjoint, covering)."""
    return np.asarray(indices)[rank::world]


@torch.no_grad()
def evaluate(model: Model, data: EventBatch | BatchSource, batch_size: int = 64) -> float:
    """The model's objective per event on ``data`` in evaluation mode (in batches, no gradients): for a point
    process its log-likelihood per event. For another quadrature rule than the model's default use
    :func:`tpp.metrics.log_likelihood_per_event` with ``num_points=``."""
    source = as_source(data)
    was_training = model.training
    model.eval()
    total = 0.0
    for idx in source.plan(batch_size, None):
        total += float(model.objective(source.load(idx)).sum())
    model.train(was_training)
    return total / max(source.num_events, 1)


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


# --------------------------------------------------------------------------- checkpoints
_MAGIC = b"TPP-CHECKPOINT-1\n"  # then the SHA-256 of the payload (64 hex digits), a newline, the payload


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Keep the current file as ``.prev.pt``, write the new one atomically with its checksum."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    previous = path.with_suffix(".prev.pt")
    if path.exists():
        os.replace(path, previous)
    with atomic_write(path, ".pt") as tmp:
        with open(tmp, "wb") as fh:
            fh.write(_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
            fh.flush()
            os.fsync(fh.fileno())


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """One checkpoint file, its checksum verified; raises ValueError saying what is wrong."""
    raw = path.read_bytes()
    if raw.startswith(_MAGIC):
        head = len(_MAGIC) + 65
        digest, payload = raw[len(_MAGIC) : head - 1].decode("ascii", "replace"), raw[head:]
        if len(raw) < head or hashlib.sha256(payload).hexdigest() != digest:
            raise ValueError(f"checksum mismatch ({len(payload)} bytes of payload): the file is truncated or altered")
    elif raw.startswith(b"PK"):
        payload = raw  # written before checksums (a bare torch zip): loaded unverified
    else:
        raise ValueError("not a tpp checkpoint (unknown header)")
    state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "epoch" not in state or "model" not in state:
        raise ValueError("not a tpp checkpoint")
    return state


def _load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The latest readable checkpoint: ``path``, else the previous one; None if neither exists."""
    problems = []
    for candidate in (path, path.with_suffix(".prev.pt")):
        if not candidate.exists():
            continue
        try:
            return _read_checkpoint(candidate)
        except Exception as exc:  # noqa: BLE001 - any unreadable file means: try the previous one
            problems.append(f"{candidate.name}: {exc}")
            warnings.warn(f"checkpoint {candidate} is unreadable ({type(exc).__name__}: {exc}); trying the previous one",
                          stacklevel=3)
    if problems:
        raise CheckpointError(f"no readable checkpoint in {path.parent}: " + "; ".join(problems))
    return None


# --------------------------------------------------------------------------- run identity
_IDENTITY_VERSION = 1
_SAMPLED_SEQUENCES = 256  # sequences hashed per data fingerprint: cheap for any size, catches another data set
_STALE_EMPTY_LOCK_SECONDS = 10.0  # an empty lock file older than this was left by a crash while being written


def _show(value: Any) -> str:
    """A stable text of a setting: enums by value, arrays by shape and digest, no memory addresses."""
    if isinstance(value, enum.Enum):
        return _show(value.value)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        digest = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()[:12]
        return f"array{list(value.shape)}:{value.dtype}:{digest}"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))) + "}"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return str(value)
    text = repr(value)
    return type(value).__qualname__ if " at 0x" in text else text  # an object's default repr changes every run


def _model_identity(model: nn.Module) -> dict[str, Any]:
    """The model's class and constructor settings (the table's record, with the constructor's defaults filled in)."""
    import inspect

    cls = type(model)
    args: dict[str, str] = {}
    try:
        from tpp.table import constructor_args

        given = constructor_args(model)
        for p in inspect.signature(cls).parameters.values():
            if p.name in given:
                args[p.name] = _show(given[p.name])
            elif p.default is not inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                args[p.name] = _show(p.default)
    except Exception:  # noqa: BLE001 - a model whose settings cannot be told is identified by its class alone
        args = {}
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "args": args}


def _data_fingerprint(source: BatchSource) -> dict[str, Any]:
    """A cheap fingerprint of training data: every sequence length, plus the rows of an evenly spaced sample
    of sequences (in memory) or the file names and sizes (a streamed Parquet source)."""
    from tpp.stream import InMemorySource, ParquetSource

    lengths = np.asarray(source.lengths, dtype=np.int64)
    h = hashlib.sha256(lengths.tobytes())
    h.update(f"marks={getattr(source, 'num_marks', 0)}".encode())
    if isinstance(source, ParquetSource):
        for path in source._table.paths:
            h.update(f"{Path(path).resolve()}:{Path(path).stat().st_size}".encode())
        h.update(_show([source.seq, source.time, source.mark, source.t_start, source.t_end]).encode())
    elif isinstance(source, InMemorySource):
        data = source.data
        sample = np.unique(np.linspace(0, len(lengths) - 1, min(len(lengths), _SAMPLED_SEQUENCES)).astype(np.int64))
        rows = getattr(type(data), "row_fields", {"time": 0.0})
        for name in (*rows, *getattr(type(data), "sequence_fields", ())):
            x = getattr(data, name, None)
            if not isinstance(x, torch.Tensor):
                continue
            picked = x[torch.as_tensor(sample, device=x.device)].detach().cpu()
            if name in rows and picked.dim() >= 2:  # the sequence's rows only: the padding width is not the data's
                for row, i in zip(picked, sample):
                    h.update(row[: int(lengths[i])].contiguous().numpy().tobytes())
            else:
                h.update(picked.contiguous().numpy().tobytes())
            h.update(name.encode())
    else:
        h.update(type(source).__qualname__.encode())
    return {"fingerprint": h.hexdigest(), "sequences": int(len(lengths)), "events": int(source.num_events)}


def _run_identity(trainer: dict[str, Any], model: nn.Module, train: BatchSource,
                  val: BatchSource | None) -> dict[str, Any]:
    """What makes a run this run: the trainer settings, the model's class and settings, the data's fingerprints."""
    identity = {"version": _IDENTITY_VERSION, "trainer": {k: _show(v) for k, v in trainer.items()},
                "model": _model_identity(model), "data": _data_fingerprint(train),
                "val": None if val is None else _data_fingerprint(val)}
    identity["hash"] = hashlib.sha256(_show({k: v for k, v in identity.items()}).encode()).hexdigest()
    return identity


def _identity_differences(saved: dict[str, Any], here: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``(differences that make it another run, differences that only extend it)``, each as
    ``"<what> <there> there, <here> here"``. A longer (or shorter) ``epochs`` only extends the run."""
    refused: list[str] = []
    extended: list[str] = []
    for key in dict.fromkeys([*saved.get("trainer", {}), *here["trainer"]]):
        a, b = saved.get("trainer", {}).get(key, "unset"), here["trainer"].get(key, "unset")
        if a != b:
            (extended if key == "epochs" else refused).append(f"{key} {a} there, {b} here")
    model_a, model_b = saved.get("model", {}), here["model"]
    if model_a.get("class") != model_b["class"]:
        refused.append(f"model {model_a.get('class')} there, {model_b['class']} here")
    elif model_a.get("args") and model_b["args"]:  # either side unknown: the class decides
        for key in dict.fromkeys([*model_a["args"], *model_b["args"]]):
            a, b = model_a["args"].get(key, "unset"), model_b["args"].get(key, "unset")
            if a != b:
                refused.append(f"model argument {key} {a} there, {b} here")

    def data_text(d: dict[str, Any] | None) -> str:
        return "none" if d is None else f"{d['sequences']} sequences / {d['events']} events (fingerprint {d['fingerprint'][:12]})"

    for key, what in (("data", "training data"), ("val", "validation data")):
        a, b = saved.get(key), here[key]
        if (a or {}).get("fingerprint") != (b or {}).get("fingerprint"):
            refused.append(f"{what} {data_text(a)} there, {data_text(b)} here")
    return refused, extended


def _check_identity(state: dict[str, Any], config: dict[str, Any], identity: dict[str, Any],
                    folder: str | os.PathLike) -> None:
    """Raise CheckpointError naming each difference if ``state`` was written by another run."""
    saved = state.get("identity")
    if saved is None:  # written before run identities: the settings it kept decide
        old = state.get("config", config)
        refused = [f"{k} {old[k]} there, {config[k]} here" for k in ("batch_size", "steps_per_epoch", "seed")
                   if k in old and old[k] != config[k]]
        extended: list[str] = []
    elif saved.get("hash") == identity["hash"]:
        return
    else:
        refused, extended = _identity_differences(saved, identity)
    if refused:
        raise CheckpointError(f"the checkpoint in {folder} belongs to another run: " + "; ".join(refused + extended)
                              + "; resume with the same settings and data, or start afresh with overwrite=True "
                              "(CLI --overwrite) or another directory")
    if extended:
        warnings.warn(f"resuming the run in {folder} with {', '.join(extended)}: the run is extended, its "
                      "learning-rate schedule now spans the new number of epochs (an uninterrupted run with this "
                      "setting would differ)", stacklevel=3)


def _claim_for_a_fresh_run(ckpt_path: Path, overwrite: bool, rank: int) -> None:
    """A fresh run may not write over another run's checkpoints: refuse, or (``overwrite``) delete them."""
    found = [p for p in (ckpt_path, ckpt_path.with_suffix(".prev.pt")) if p.exists()]
    if not found:
        return
    if not overwrite:
        raise CheckpointError(f"{ckpt_path.parent} holds the checkpoint of another run ({', '.join(p.name for p in found)}): "
                              "continue it with resume=True (CLI --resume) or replace it with overwrite=True "
                              "(CLI --overwrite)")
    if rank == 0:
        for p in found:
            p.unlink(missing_ok=True)


# --------------------------------------------------------------------------- one run per directory
def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie, killed but not yet reaped, counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class _DirectoryLock:
    """``checkpoint_dir/.lock``, created atomically (``O_CREAT | O_EXCL``) with the holder's pid and host:
    two runs never write one directory's checkpoints. Released on exit, also on an exception; a lock
    left by a process that no longer runs on this host is taken over with a warning."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.path = folder, folder / ".lock"
        self.text = f"{os.getpid()} {socket.gethostname()}\n"
        self.held = False

    def __enter__(self) -> _DirectoryLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # another run may take over the same stale lock at the same moment: try again
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(self.text)
            self.held = True
            return self
        raise CheckpointError(f"{self.folder} is in use by another run: could not take its lock file {self.path}")

    def __exit__(self, *exc: Any) -> None:
        if self.held:
            self.held = False
            # best effort: a lock already removed (or unreadable) is released all the same
            with contextlib.suppress(OSError):
                if self.path.read_text() == self.text:
                    self.path.unlink()

    def _take_over_if_stale(self) -> None:
        """Remove the lock if its holder is gone; raise CheckpointError naming the holder if it runs."""
        try:
            text = self.path.read_text()
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:  # released meanwhile
            return
        parts = text.split()
        host = socket.gethostname()
        if len(parts) == 2 and parts[0].isdigit() and int(parts[0]) > 0:
            pid, holder = int(parts[0]), parts[1]
            if holder != host:
                raise CheckpointError(f"{self.folder} is in use by another run: pid {pid} on host {holder} holds "
                                      f"{self.path}; if that run has ended, delete the lock file")
            if _pid_alive(pid):
                raise CheckpointError(f"{self.folder} is in use by another run: pid {pid} on {host} holds {self.path}; "
                                      "wait for it to end or use another checkpoint directory")
            why = f"pid {pid} no longer runs on {host}"
        elif age < _STALE_EMPTY_LOCK_SECONDS:  # being written right now
            raise CheckpointError(f"{self.folder} is in use by another run (its lock file {self.path} is being written)")
        else:
            why = f"its content {text[:40]!r} names no process and it is {age:.0f} s old"
        # Move it aside, then check it is still the lock judged stale (another run may have replaced it).
        aside = self.path.with_name(f".lock.stale.{os.getpid()}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        if aside.read_text() != text:  # a live lock taken meanwhile: put it back unless yet another exists
            with contextlib.suppress(FileExistsError):  # a third run holds it now: leave its lock alone
                os.link(aside, self.path)
            aside.unlink(missing_ok=True)
            return
        aside.unlink(missing_ok=True)
        warnings.warn(f"taking over the stale lock {self.path} ({why}): its run was killed", stacklevel=4)


def _schedule(total_steps: int, warmup_steps: int, floor: float = 0.1):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(warmup_steps, 1)
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


class _FlatParameters:
    """The trainable parameters of a model as views of one buffer, their gradients views of another.

    The optimizer then steps one tensor, and the gradient norm, clipping and zeroing are one kernel
    each instead of one per tensor: a few tenths of a millisecond per step on CPU, a tenth of a small
    recurrent model's step. Values, gradients and updates are those of the separate tensors (AdamW
    is element-wise); gradients accumulate into the views in place.
    """

    def __init__(self, params: list[nn.Parameter]) -> None:
        size = sum(p.numel() for p in params)
        data = torch.empty(size, dtype=params[0].dtype, device=params[0].device)
        grad = torch.zeros_like(data)
        offset = 0
        for p in params:
            n = p.numel()
            data[offset : offset + n].copy_(p.detach().reshape(-1))
            p.data = data[offset : offset + n].view_as(p)
            p.grad = grad[offset : offset + n].view_as(p)
            offset += n
        self.parameter = nn.Parameter(data)
        self.parameter.grad = grad

    @classmethod
    def of(cls, model: nn.Module) -> _FlatParameters | None:
        """Flatten ``model``'s trainable parameters if they share a dtype and a device (else None)."""
        params = [p for p in model.parameters() if p.requires_grad]
        if len(params) < 2 or len({(p.dtype, p.device) for p in params}) > 1 or not params[0].is_floating_point():
            return None
        return cls(params)


def _all_ranks_any(flag: bool, world: int, device: torch.device) -> bool:
    """True if ``flag`` holds on any process (so every rank takes the same branch)."""
    if world == 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


_TRAINER_ARGUMENTS = {
    "epochs": Interval(1, None, integer=True),
    "batch_size": Interval(1, None, integer=True),
    "lr": Interval(0, None, closed="neither"),
    "weight_decay": Interval(0, None),
    "warmup": Interval(0, 1),
    "clip": Interval(0, None),  # 0: no clipping
    "patience": Interval(1, None, integer=True),
    "seed": Interval(0, None, integer=True),
    "checkpoint_every": Interval(1, None, integer=True, none_ok=True),  # None: checkpoint at epoch ends only
}


def _check_trainer_arguments(**values: Any) -> None:
    """Refuse a bad setting of :func:`fit` up front, naming it (``epochs=-1`` used to train nothing silently,
    ``batch_size=0`` to fail deep inside with a raw Python error). Counts must be Python or NumPy integers."""
    for name, value in values.items():
        rule = _TRAINER_ARGUMENTS[name]
        if value is None and rule.none_ok:
            continue
        if rule.integer and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            raise TypeError(f"tpp.fit: {name} must be {rule.describe()}, got {value!r}")
        rule.validate(value, name, "tpp.fit")


def fit(
    model: Model,
    train: EventBatch | BatchSource,
    val: EventBatch | BatchSource | None = None,
    *,
    epochs: int = 20,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    warmup: float = 0.05,
    clip: float = 1.0,
    patience: int = 5,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    on_nonfinite: NonFinite | str = NonFinite.RAISE,
    progress: bool = True,
    device: str | torch.device | None = None,
    amp: bool = False,
) -> TrainResult:
    """Train ``model`` by maximising its objective; returns the :class:`TrainResult` (the model keeps the best weights).

    ``train``/``val``: an :class:`EventBatch` or a :class:`~tpp.stream.BatchSource` (streamed
    minibatches: memory follows a batch, not the data). ``warmup`` is a fraction of all steps.
    ``patience`` epochs without a better validation log-likelihood stop the run. ``checkpoint_every``
    also checkpoints every that many steps within an epoch, so a killed run loses at most that many
    steps. ``on_nonfinite``: :class:`NonFinite` ``"raise"`` (default) or ``"skip"``. ``amp`` runs the
    forward pass in bfloat16 autocast (off by default: likelihoods of long sequences need float32
    accumulation).

    A run owns its ``checkpoint_dir``: it holds ``checkpoint_dir/.lock`` while it runs (a second run
    there raises :class:`CheckpointError` naming the holder's pid); each checkpoint records the run's
    identity (trainer settings, model class and settings, fingerprints of the data), and
    ``resume=True`` refuses a checkpoint of another identity, naming each difference (a changed
    ``epochs`` only extends the run, with a warning). A fresh run (``resume=False``) refuses a directory
    that holds a checkpoint unless ``overwrite=True``, which deletes it first.
    """
    if not isinstance(model, Model):
        raise TypeError(f"tpp.fit trains a tpp.model.Model (objective, initialise, after_step), got "
                        f"{type(model).__name__}: subclass Model and implement objective(batch) -> [B]")
    _check_trainer_arguments(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup=warmup,
                             clip=clip, patience=patience, seed=seed, checkpoint_every=checkpoint_every)
    on_nonfinite = NonFinite(on_nonfinite)
    if resume and overwrite:
        raise ValueError("resume=True continues the run in checkpoint_dir, overwrite=True replaces it: give one of them")
    source = as_source(train)
    if source.num_events == 0:
        raise ValueError("the training data has no events")
    # Unix timestamps against windows starting at 0 train without error but wrong: say so, once per run.
    sample = train if isinstance(train, EventBatch) else source.standardisation_sample()
    if isinstance(sample, EventBatch):  # series sources (sde) train here too: their clock is not checked here
        warn_if_absolute_time(sample, "tpp.fit")
    rank, world = _distributed()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    torch.manual_seed(seed)
    random.seed(seed)
    rng = np.random.default_rng(seed)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model)
    # One fused kernel per step instead of a loop over parameter tensors (about 1 ms per step saved
    # on CPU for the attention models' ~30 tensors).
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in model.parameters())
    flat = _FlatParameters.of(model) if world == 1 else None
    optimizer = torch.optim.AdamW([flat.parameter] if flat else model.parameters(), lr=lr,
                                  weight_decay=weight_decay, fused=fused)
    lengths = source.lengths
    steps_per_epoch = len(source.plan(batch_size, None))
    total_steps = steps_per_epoch * epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total_steps, int(warmup * total_steps)))
    config = {"batch_size": batch_size, "steps_per_epoch": steps_per_epoch, "seed": seed, "epochs": epochs}
    result = TrainResult()
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    bad_epochs = 0
    start_epoch, start_step = 0, 0
    epoch_so_far: dict[str, float] = {}  # an interrupted epoch's running totals
    ckpt_path = Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir is not None else None
    identity = _run_identity(
        {"lr": lr, "weight_decay": weight_decay, "warmup": warmup, "clip": clip, "epochs": epochs,
         "batch_size": batch_size, "seed": seed, "patience": patience, "amp": amp, "on_nonfinite": on_nonfinite},
        model, source, None if val is None else as_source(val)) if ckpt_path is not None else None
    if ckpt_path is not None and not resume and not overwrite:
        _claim_for_a_fresh_run(ckpt_path, False, rank)  # refused before the lock: a stale lock stays for --resume
    # Rank 0 writes the checkpoints, so it alone holds the directory's lock.
    with _DirectoryLock(ckpt_path.parent) if ckpt_path is not None and rank == 0 else contextlib.nullcontext():
        started = time.perf_counter()
        if ckpt_path is not None and not resume:
            _claim_for_a_fresh_run(ckpt_path, overwrite, rank)
        state = _load_checkpoint(ckpt_path) if resume and ckpt_path is not None else None
        if state is not None:
            _check_identity(state, config, identity, checkpoint_dir)
            model.load_state_dict(state["model"])
            try:
                optimizer.load_state_dict(state["optimizer"])
            except ValueError as exc:  # e.g. per-tensor optimizer state from before the flat parameter buffer
                raise CheckpointError(f"the optimizer state in {checkpoint_dir} does not fit this trainer ({exc}); it was "
                                      "written by another version of tpp: resume with that version or start afresh") from exc
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            random.setstate(state["python_rng"])
            best_state = state["best_state"]
            result.history = state["history"]
            result.best_epoch, result.best_val_ll_per_event = state["best_epoch"], state["best_val"]
            bad_epochs = state["bad_epochs"]
            result.resumed_from_epoch = state["epoch"]
            if state.get("step") is None:  # the epoch had ended
                rng.bit_generator.state = state["numpy_rng"]
                start_epoch, result.resumed_from_step = state["epoch"] + 1, 0
            else:  # rebuild that epoch's batch order from its random state, skip the steps done
                rng.bit_generator.state = state["epoch_rng"]
                start_epoch, start_step = state["epoch"], state["step"]
                epoch_so_far = state["epoch_so_far"]
                result.resumed_from_step = start_step
            result.resume_seconds = time.perf_counter() - started
        else:
            if resume and ckpt_path is not None:
                warnings.warn(f"resume=True but {ckpt_path.parent} holds no checkpoint: starting a fresh run",
                              stacklevel=2)
            # The one-time data-dependent start (rates, time and channel standardisation) of a fresh run.
            model.initialise(source.standardisation_sample().to(device))

        def checkpoint(epoch: int, step: int | None, epoch_rng: dict, so_far: dict[str, float]) -> None:
            """``step``: steps done in ``epoch`` (None: the epoch is complete)."""
            if ckpt_path is None or rank != 0:
                return
            _save_checkpoint(ckpt_path, {
                "epoch": epoch, "step": step, "epoch_rng": epoch_rng, "epoch_so_far": so_far, "config": config, "identity": identity,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(),
                "best_state": best_state, "history": result.history, "best_epoch": result.best_epoch,
                "best_val": result.best_val_ll_per_event, "bad_epochs": bad_epochs,
            })

        params = [flat.parameter] if flat else [p for p in model.parameters() if p.requires_grad]

        def zero_grad() -> None:
            if flat:
                flat.parameter.grad.zero_()  # the parameters' gradients are views of it: they must stay
            else:
                optimizer.zero_grad(set_to_none=True)
        for epoch in range(start_epoch, epochs):
            model.train()
            epoch_rng = rng.bit_generator.state
            plan = source.plan(batch_size, rng)
            first_step = start_step if epoch == start_epoch else 0
            totals = {"events": 0.0, "loss": 0.0, "skipped": 0.0, "seconds": 0.0, "cpu_seconds": 0.0}
            if first_step:
                totals.update(epoch_so_far)
            epoch_start, cpu_start = time.perf_counter(), time.process_time()
            bar = tqdm(total=len(plan), initial=first_step, desc=f"epoch {epoch + 1}/{epochs}", unit="batch",
                       leave=False, disable=not progress or rank != 0)
            for step in range(first_step, len(plan)):
                idx = plan[step]
                n_events = int(lengths[idx].sum())
                bar.update(1)
                if n_events > 0:
                    batch = source.load(shard(idx, rank, world)).to(device)
                    zero_grad()
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                        objective = net(batch)  # [B]: Model.forward is the objective (through DDP when distributed)
                    # DDP averages gradients over processes: scale so the update is that of the whole minibatch.
                    loss = -objective.sum() * world / n_events
                    loss.backward()  # on every rank, even a non-finite loss: DDP's all-reduce needs all of them
                    grads = [p.grad for p in params if p.grad is not None]
                    grad_norm = nn.utils.clip_grad_norm_(params, clip) if clip else nn.utils.get_total_norm(grads)
                    loss_value, norm_value = float(loss.detach()), float(grad_norm)
                    if _all_ranks_any(not (math.isfinite(loss_value) and math.isfinite(norm_value)), world, device):
                        if on_nonfinite is NonFinite.RAISE:
                            bad, value = ("loss", loss_value) if not math.isfinite(loss_value) else ("gradient norm", norm_value)
                            raise TrainingDivergedError(bad, value, epoch, step, [int(i) for i in idx],
                                                        getattr(batch, "seq_names", None) if world == 1 else None)
                        zero_grad()
                        totals["skipped"] += 1
                    else:
                        optimizer.step()
                        model.after_step()
                        totals["events"] += n_events
                        totals["loss"] += loss_value * n_events / world
                    # A skipped update still advances the schedule: the learning rate stays a function of the step.
                    scheduler.step()
                    elapsed = totals["seconds"] + time.perf_counter() - epoch_start
                    bar.set_postfix(nll=f"{totals['loss'] / max(totals['events'], 1):.4f}",
                                    ev_s=f"{totals['events'] / max(elapsed, 1e-9):.0f}")
                if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < len(plan):
                    checkpoint(epoch, step + 1, epoch_rng, {
                        **totals, "seconds": totals["seconds"] + time.perf_counter() - epoch_start,
                        "cpu_seconds": totals["cpu_seconds"] + time.process_time() - cpu_start})
            bar.close()
            seconds = totals["seconds"] + time.perf_counter() - epoch_start
            record = {"epoch": epoch, "train_nll_per_event": totals["loss"] / max(totals["events"], 1),
                      "events_per_second": totals["events"] / max(seconds, 1e-9), "seconds": seconds,
                      "cpu_seconds": totals["cpu_seconds"] + time.process_time() - cpu_start,
                      "lr": float(scheduler.get_last_lr()[0]), "events": int(totals["events"]),
                      "skipped_steps": int(totals["skipped"])}
            if val is not None:
                record["val_ll_per_event"] = evaluate(model, val, batch_size=max(batch_size, 32))
                if not math.isfinite(record["val_ll_per_event"]) and on_nonfinite is NonFinite.RAISE:
                    raise TrainingDivergedError("validation log-likelihood", record["val_ll_per_event"], epoch)
                if result.best_val_ll_per_event is None or record["val_ll_per_event"] > result.best_val_ll_per_event:
                    result.best_val_ll_per_event, result.best_epoch = record["val_ll_per_event"], epoch
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    bad_epochs = 0
                else:
                    bad_epochs += 1
            else:
                result.best_epoch = epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            result.history.append(record)
            checkpoint(epoch, None, epoch_rng, {})
            if val is not None and bad_epochs >= patience:
                result.stopped_early = True
                break
        model.load_state_dict(best_state)
        return result
