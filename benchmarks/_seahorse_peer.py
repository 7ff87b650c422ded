"""The seahorse-stpp side of ``benchmarks/stpp_peer.py``: runs INSIDE the scratch venv that holds
``seahorse-stpp`` 1.0.0 (never in the repository's venv), one model per process.

It reads the splits that ``stpp_peer.py`` wrote in seahorse's own format (``DIR/{train,val,test}.jsonl``, one
sequence a line: ``times``, ``locations``, ``t0``, ``t1``), trains one Neural STPP preset through seahorse's
Python API (``STPPConfig.from_source`` + ``RunnerRegistry.create(...).fit``: the path ``STPPEstimator.fit``
takes, plus a Lightning callback that times the training steps), scores the test split with seahorse's own
evaluation pass (``eval_forward``: exact brute-force divergence, dopri5 at the preset's tolerance, raw data
units) and writes a JSON:

* ``train_events``, ``train_step_cpu_seconds`` (process CPU time inside Lightning's training batches: forward,
  backward, clipping and optimizer step; validation and checkpointing excluded), ``fit_cpu_seconds`` /
  ``fit_wall_seconds`` (the whole ``fit`` call, validation included), ``events_per_cpu_second``;
* ``test_time_log_likelihood_per_event`` / ``test_space_log_likelihood_per_event`` (nats, raw units; seahorse's
  time part stops at the last event: no survival term after it), ``test_events``, ``test_cpu_seconds``;
* ``n_params``, ``versions``, the effective config.

Usage (from ``stpp_peer.py``)::

    <venv>/bin/python benchmarks/_seahorse_peer.py --splits DIR --model jump-cnf --epochs 1 --out r.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

# one thread per pool, like every process of the benchmarks (set before torch is imported)
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

#: our model name -> seahorse preset
PRESETS = {"jump-cnf": "neural_jumpcnf", "attentive-cnf": "neural_attncnf"}


def overrides(args: argparse.Namespace) -> dict:
    """The preset's YAML values we set: sizes, tolerance, optimiser, batching, the checkpoint we score."""
    spatial = {"hidden_dims": "-".join(str(w) for w in args.flow_hidden), "tol": args.tol}
    if args.model == "attentive-cnf":
        spatial.update(nblocks=args.attn_blocks, num_heads=args.attn_heads)
    return {
        "model": {"hidden_dim": args.hidden_size,
                  "backbone": {"tpp_hidden_dims": f"{args.hidden_size}-{args.hidden_size}",
                               "atol": args.tol, "rtol": args.tol},
                  "decoder": {"spatial": spatial}},
        "training": {"device": "cpu", "seed": args.seed, "n_epochs": args.epochs, "lr": args.lr,
                     "batch_size": args.batch_size, "checkpoint_select": "last", "patience": None},
        "data": {"seed": args.seed, "batch_size": args.batch_size,
                 "adapter_kwargs": {"max_events": args.max_events}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=Path, required=True)
    parser.add_argument("--model", choices=sorted(PRESETS), required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per val/test batch")
    parser.add_argument("--max-events", type=int, default=1200, help="events per training batch (seahorse batches "
                        "training sequences by total events, longest first)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden-size", type=int, default=32)
    parser.add_argument("--flow-hidden", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--attn-blocks", type=int, default=1)
    parser.add_argument("--attn-heads", type=int, default=1)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import pytorch_lightning as pl
    import torch

    torch.set_num_threads(1)
    from importlib.metadata import version

    from seahorse.config import STPPConfig
    from seahorse.runner import RunnerRegistry
    from seahorse.utils import load_jsonl

    train, val, test = (load_jsonl(args.splits / f"{part}.jsonl") for part in ("train", "val", "test"))

    class StepClock(pl.Callback):
        """CPU time and events inside the training batches only (validation and checkpoints excluded)."""

        def __init__(self) -> None:
            self.cpu, self.wall, self.events, self.steps, self._start = 0.0, 0.0, 0, 0, (0.0, 0.0)

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            self._start = (time.process_time(), time.perf_counter())

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            self.cpu += time.process_time() - self._start[0]
            self.wall += time.perf_counter() - self._start[1]
            self.events += int(batch["lengths"].sum())
            self.steps += 1

    config = STPPConfig.from_source(preset=PRESETS[args.model], cli_values=overrides(args))
    runner = RunnerRegistry.create(config)
    clock = StepClock()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    runner.fit(train, val, None, dataset_id=args.splits.name, extra_callbacks=[clock])
    fit_cpu, fit_wall = time.process_time() - cpu0, time.perf_counter() - wall0

    # Score the test split with seahorse's own evaluation pass (what its trainer.test logs), summed over events.
    lm = runner._lightning_module
    lm.eval()
    from seahorse.training.data_module import STPPDataModule

    bundle = config.build_data_bundle(train, val, test)
    loader = STPPDataModule(bundle, batch_size=args.batch_size, num_workers=0, seed=args.seed).test_dataloader()
    time_sum = space_sum = 0.0
    n_events = 0
    cpu0 = time.process_time()
    for batch in loader:
        out = lm.eval_forward(batch)
        n = int(out["mask"].sum())
        extra = out.get("extra_metrics") or {}
        t_nll = float(extra.get("raw_space_temporal_nll", out["temporal_nll"]))
        s_nll = float(extra.get("raw_space_spatial_nll", out["spatial_nll"]))
        time_sum -= t_nll * n
        space_sum -= s_nll * n
        n_events += n
    test_cpu = time.process_time() - cpu0

    payload = {
        "model": args.model, "preset": PRESETS[args.model], "seed": args.seed, "epochs": args.epochs,
        "train_sequences": len(train), "test_sequences": len(test),
        "train_events": clock.events, "train_steps": clock.steps,
        "train_step_cpu_seconds": clock.cpu, "train_step_wall_seconds": clock.wall,
        "fit_cpu_seconds": fit_cpu, "fit_wall_seconds": fit_wall,
        "events_per_cpu_second": clock.events / max(clock.cpu, 1e-9),
        "test_events": n_events, "test_cpu_seconds": test_cpu,
        "test_time_log_likelihood_per_event": time_sum / max(n_events, 1),
        "test_space_log_likelihood_per_event": space_sum / max(n_events, 1),
        "n_params": sum(p.numel() for p in lm.model.parameters() if p.requires_grad),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,  # Linux: kB
        "versions": {name: version(name) for name in ("seahorse-stpp", "torch", "torchdiffeq", "pytorch-lightning")},
        "python": sys.version.split()[0], "torch_threads": torch.get_num_threads(),
        "overrides": overrides(args),
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps({k: v for k, v in payload.items() if k != "overrides"}), flush=True)


if __name__ == "__main__":
    main()
