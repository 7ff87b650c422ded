"""The spatio-temporal baselines of Chen, Amos & Nickel (ICLR 2021) on Pinwheel and earthquakes_japan:
Poisson, self-correcting and exponential Hawkes in time x the conditional Gaussian mixture in space
(``tpp.spatial.gmm``), and Poisson / Hawkes x a kernel density (``KDESpatial``, bandwidth chosen on val).

Each model is trained by the one trainer (``Model.fit``) on ``train`` with early stopping on ``val``;
the table reports time and space nats per event on ``test`` (:func:`tpp.spatial.spatial_metrics`, scored
in blocks of 16 sequences, exact likelihoods) and the next-location error (mean distance to the expected
location, in the data's units). Pinwheel: our rebuild of the paper's generator (2000/200/200 sequences,
:func:`tpp.spatial.data.pinwheel_splits`); the paper's numbers are for its own draw of the same law.
Timings: this machine, one thread, shared with other jobs (wall seconds).

Usage: ``nice -n 10 .venv/bin/python benchmarks/stpp_baselines.py --data earthquakes_japan [--epochs 5]
[--lr 0.01] [--seeds 0] [--models hawkes-gmm,poisson-gmm,self-correcting-gmm,kde-stpp,kde-hawkes]
[--json benchmarks/results/stpp_baselines.json]``
"""

from __future__ import annotations

import _bench  # noqa: F401  (one thread per pool; must come first)

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

def _gmm(temporal: str):
    from tpp.spatial.gmm import HawkesGMM

    return HawkesGMM(2, temporal=temporal)


def _kde(temporal: str):
    from tpp.spatial.gmm import KDESpatial

    return KDESpatial(2, temporal=temporal, bandwidth="validation")


MODELS = {
    "hawkes-gmm": lambda: _gmm("hawkes"),
    "poisson-gmm": lambda: _gmm("poisson"),
    "self-correcting-gmm": lambda: _gmm("self-correcting"),
    "kde-stpp": lambda: _kde("poisson"),
    "kde-hawkes": lambda: _kde("hawkes"),
}


def splits(name: str):
    if name == "pinwheel":
        from tpp.spatial.data import pinwheel_splits

        return pinwheel_splits()
    from tpp import datasets

    return tuple(datasets.load(name, part) for part in ("train", "val", "test"))


def scores(model, batch, block: int = 16) -> dict[str, float]:
    """spatial_metrics over blocks of ``block`` sequences: per-event means of the whole, every event's location."""
    from tpp.spatial import spatial_metrics

    return spatial_metrics(model, batch, block=block)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="earthquakes_japan")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    train, val, test = splits(args.data)
    rows = []
    for name in args.models.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            import torch

            torch.manual_seed(seed)
            model = MODELS[name]()
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # the KDE's subsample of centres is stated in its docs
                model.fit(train, val, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed,
                          progress=False)
            seconds = time.perf_counter() - start
            model.eval()
            m = scores(model, test)
            row = {"model": name, "seed": seed, "data": args.data, "epochs": args.epochs, "fit_seconds": seconds,
                   "events_per_second": model.train_result_.train_events_per_second,
                   "test_time_log_likelihood_per_event": m["time_log_likelihood_per_event"],
                   "test_space_log_likelihood_per_event": m["space_log_likelihood_per_event"],
                   "test_location_error": m["location_error"]}
            rows.append(row)
            print(f"{name:>20} seed {seed}: time {row['test_time_log_likelihood_per_event']:+.4f}  space "
                  f"{row['test_space_log_likelihood_per_event']:+.4f}  location error {row['test_location_error']:.3f}"
                  f"  ({seconds:.0f} s)", flush=True)
    print("\n| model | time (nats/event) | space (nats/event) | location error | fit s |\n|---|---|---|---|---|")
    for name in dict.fromkeys(r["model"] for r in rows):
        own = [r for r in rows if r["model"] == name]
        t = np.array([r["test_time_log_likelihood_per_event"] for r in own])
        s = np.array([r["test_space_log_likelihood_per_event"] for r in own])
        e = np.array([r["test_location_error"] for r in own])
        f = np.array([r["fit_seconds"] for r in own])
        pm = (lambda a: f"{a.mean():+.3f} ± {a.std():.3f}") if len(own) > 1 else (lambda a: f"{a.mean():+.3f}")
        print(f"| {name} | {pm(t)} | {pm(s)} | {e.mean():.3f} | {f.mean():.0f} |")
    if args.json is not None:
        _bench.write_json_atomically(args.json, {"environment": _bench.base_environment(), "rows": rows,
                                                 "command": _bench.reproduce_command(__file__)})


if __name__ == "__main__":
    main()
