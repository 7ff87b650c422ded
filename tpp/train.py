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
* Data-parallel when launched by ``torchrun`` (``WORLD_SIZE > 1``): every process takes its share
  of each minibatch (sequences ``rank, rank + world, ...``), gradients are averaged by DDP, rank 0
  writes checkpoints (``checkpoint_dir`` must be shared), every rank resumes from them. The loss
  is scaled so that the update equals the single-process update on the same global minibatch.
"""

from __future__ import annotations

import enum
import hashlib
import io
import math
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from tpp.events import EventBatch
from tpp.io import atomic_write
from tpp.model import Model
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
    """
    if not isinstance(model, Model):
        raise TypeError(f"tpp.fit trains a tpp.model.Model (objective, initialise, after_step), got "
                        f"{type(model).__name__}: subclass Model and implement objective(batch) -> [B]")
    on_nonfinite = NonFinite(on_nonfinite)
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1 steps, got {checkpoint_every}")
    source = as_source(train)
    if source.num_events == 0:
        raise ValueError("the training data has no events")
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
    started = time.perf_counter()
    state = _load_checkpoint(ckpt_path) if resume and ckpt_path is not None else None
    if state is not None:
        saved = state.get("config", config)
        changed = [k for k in ("batch_size", "steps_per_epoch", "seed") if saved[k] != config[k]]
        if changed:
            raise CheckpointError(f"the checkpoint in {checkpoint_dir} belongs to another run: "
                                  + ", ".join(f"{k} {saved[k]} there, {config[k]} here" for k in changed))
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
        # The one-time data-dependent start (rates, time and channel standardisation) of a fresh run.
        model.initialise(source.standardisation_sample().to(device))

    def checkpoint(epoch: int, step: int | None, epoch_rng: dict, so_far: dict[str, float]) -> None:
        """``step``: steps done in ``epoch`` (None: the epoch is complete)."""
        if ckpt_path is None or rank != 0:
            return
        _save_checkpoint(ckpt_path, {
            "epoch": epoch, "step": step, "epoch_rng": epoch_rng, "epoch_so_far": so_far, "config": config,
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
