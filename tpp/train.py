"""The one training loop for every gradient-trained model: ``tpp.fit(model, train, val, ...)``.

* Minibatches by length buckets: sequences sorted by length and cut into groups of
  ``batch_size`` (little padding), the order of the groups shuffled each epoch with the seed.
* AdamW, linear warm-up then cosine decay of the learning rate, gradient-norm clipping.
* Loss: minus the log-likelihood per event (``model.log_likelihood`` includes the survival term).
* Early stopping on the validation log-likelihood per event; the best weights are restored.
* tqdm progress on stderr with events per second.
* Atomic checkpoints after every epoch (model, optimizer, schedule, RNG states, history); the
  previous one is kept, a damaged file is detected on load and the previous one used instead.
  ``resume=True`` continues a killed run from its last checkpoint and ends where an
  uninterrupted run with the same seed would.
* Data-parallel when launched by ``torchrun`` (``WORLD_SIZE > 1``): every process takes its share
  of each minibatch, gradients are averaged by DDP, rank 0 writes checkpoints. The loss is scaled
  so that the update equals the single-process update on the same global minibatch.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from tpp.events import EventBatch
from tpp.io import atomic_write
from tpp.process import PointProcess

__all__ = ["fit", "evaluate", "TrainResult", "length_buckets", "CheckpointError"]


class CheckpointError(RuntimeError):
    """No readable checkpoint where one was expected."""


@dataclass
class TrainResult:
    """What a run did: one record per epoch, the best epoch and its validation score."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_val_ll_per_event: float | None = None
    stopped_early: bool = False
    resumed_from_epoch: int | None = None

    @property
    def train_events_per_second(self) -> float:
        rates = [h["events_per_second"] for h in self.history if h.get("events_per_second")]
        return float(np.mean(rates)) if rates else float("nan")


def length_buckets(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Indices of sequences grouped by similar length, ``batch_size`` per group; group order shuffled by ``rng``."""
    order = np.argsort(lengths, kind="stable")
    groups = [order[i : i + batch_size] for i in range(0, order.size, batch_size)]
    if rng is not None:
        groups = [groups[i] for i in rng.permutation(len(groups))]
    return groups


@torch.no_grad()
def evaluate(model: PointProcess, data: EventBatch, batch_size: int = 64) -> float:
    """Log-likelihood per event of ``data`` (in batches, no gradients)."""
    was_training = model.training
    model.eval()
    total = 0.0
    for idx in length_buckets(data.lengths.cpu().numpy(), batch_size, None):
        total += float(model.log_likelihood(data[idx]).sum())
    model.train(was_training)
    return total / max(data.num_events, 1)


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    previous = path.with_suffix(".prev.pt")
    if path.exists():
        os.replace(path, previous)
    with atomic_write(path, ".pt") as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The latest readable checkpoint: ``path``, else the previous one; None if neither exists."""
    for candidate in (path, path.with_suffix(".prev.pt")):
        if not candidate.exists():
            continue
        try:
            state = torch.load(candidate, map_location="cpu", weights_only=False)
            if not isinstance(state, dict) or "epoch" not in state or "model" not in state:
                raise ValueError("not a tpp checkpoint")
            return state
        except Exception as exc:  # noqa: BLE001 - any unreadable file means: try the previous one
            import warnings

            warnings.warn(f"checkpoint {candidate} is unreadable ({type(exc).__name__}: {exc}); trying the previous one",
                          stacklevel=3)
    if path.exists() or path.with_suffix(".prev.pt").exists():
        raise CheckpointError(f"no readable checkpoint in {path.parent}")
    return None


def _schedule(total_steps: int, warmup_steps: int, floor: float = 0.1):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(warmup_steps, 1)
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def fit(
    model: PointProcess,
    train: EventBatch,
    val: EventBatch | None = None,
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
    resume: bool = False,
    progress: bool = True,
    device: str | torch.device | None = None,
    amp: bool = False,
) -> TrainResult:
    """Train ``model`` by maximum likelihood; returns the :class:`TrainResult` (the model keeps the best weights).

    ``warmup`` is a fraction of all steps. ``patience`` epochs without a better validation
    log-likelihood stop the run. ``amp`` runs the forward pass in bfloat16 autocast (off by
    default: likelihoods of long sequences need float32 accumulation).
    """
    if train.num_events == 0:
        raise ValueError("the training data has no events")
    rank, world = _distributed()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if hasattr(model, "fit_standardisation") and not resume:
        # Models that standardise inter-event times (log tau) take their statistics from all of train.
        model.fit_standardisation(train)
    model.to(device)
    torch.manual_seed(seed)
    random.seed(seed)
    rng = np.random.default_rng(seed)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    lengths = train.lengths.cpu().numpy()
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total_steps = steps_per_epoch * epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total_steps, int(warmup * total_steps)))
    result = TrainResult()
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    bad_epochs = 0
    start_epoch = 0
    ckpt_path = Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir is not None else None
    if resume and ckpt_path is not None:
        state = _load_checkpoint(ckpt_path)
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            rng.bit_generator.state = state["numpy_rng"]
            torch.set_rng_state(state["torch_rng"])
            random.setstate(state["python_rng"])
            best_state = state["best_state"]
            result.history = state["history"]
            result.best_epoch, result.best_val_ll_per_event = state["best_epoch"], state["best_val"]
            bad_epochs = state["bad_epochs"]
            start_epoch = state["epoch"] + 1
            result.resumed_from_epoch = state["epoch"]
    for epoch in range(start_epoch, epochs):
        model.train()
        groups = length_buckets(lengths, batch_size, rng)
        epoch_start, cpu_start = time.perf_counter(), time.process_time()
        events_seen, loss_sum = 0, 0.0
        bar = tqdm(groups, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False,
                   disable=not progress or rank != 0)
        for idx in bar:
            batch = train[idx]
            n_events = batch.num_events
            if n_events == 0:
                continue
            mine = batch[np.arange(rank, len(batch), world)] if world > 1 else batch
            mine = mine.to(device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                ll = net(mine)
            # DDP averages gradients over processes: scale so the update is that of the whole minibatch.
            loss = -ll.sum() * world / n_events
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            scheduler.step()
            events_seen += n_events
            loss_sum += float(loss.detach()) * n_events / world
            elapsed = time.perf_counter() - epoch_start
            bar.set_postfix(nll=f"{loss_sum / events_seen:.4f}", ev_s=f"{events_seen / max(elapsed, 1e-9):.0f}")
        bar.close()
        seconds = time.perf_counter() - epoch_start
        record = {"epoch": epoch, "train_nll_per_event": loss_sum / max(events_seen, 1),
                  "events_per_second": events_seen / max(seconds, 1e-9), "seconds": seconds,
                  "cpu_seconds": time.process_time() - cpu_start,
                  "lr": float(scheduler.get_last_lr()[0])}
        if val is not None:
            record["val_ll_per_event"] = evaluate(model, val, batch_size=max(batch_size, 32))
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
        if ckpt_path is not None and rank == 0:
            _save_checkpoint(ckpt_path, {
                "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(), "best_state": best_state,
                "history": result.history, "best_epoch": result.best_epoch, "best_val": result.best_val_ll_per_event,
                "bad_epochs": bad_epochs,
            })
        if val is not None and bad_epochs >= patience:
            result.stopped_early = True
            break
    model.load_state_dict(best_state)
    return result

