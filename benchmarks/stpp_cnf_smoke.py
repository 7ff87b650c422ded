"""Smoke run of the neural STPP models (tpp.spatial.cnf) on Pinwheel: a few minutes of CPU training each,
then the test time and space log-likelihood per event (exact trace) and the training speed.

Not the paper's protocol (``benchmarks/stpp.py`` is): a subset of the training sequences, few epochs. It checks
that each model trains end to end through the one trainer and measures its events per second.

    python benchmarks/stpp_cnf_smoke.py                       # all three, defaults below
    python benchmarks/stpp_cnf_smoke.py --models jump-cnf --train 64 --epochs 2
"""

from __future__ import annotations

import _bench  # noqa: F401  (one thread per pool, repository on the path)

import argparse
import json
import time

import torch

from tpp.spatial.cnf import AttentiveCNF, JumpCNF, TimeVaryingCNF
from tpp.spatial.data import pinwheel_splits

MODELS = {"time-varying-cnf": TimeVaryingCNF, "jump-cnf": JumpCNF, "attentive-cnf": AttentiveCNF}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--train", type=int, default=128, help="training sequences (of the paper's 2000)")
    parser.add_argument("--test", type=int, default=32, help="test sequences (of 200)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hidden-size", type=int, default=32)
    parser.add_argument("--flow-hidden", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--tol", type=float, default=1e-4, help="rtol = atol of every solve (training and test)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=str, default=None, help="also write the results here")
    args = parser.parse_args()

    torch.set_num_threads(1)
    train, val, test = pinwheel_splits()
    train = train[torch.arange(min(args.train, len(train)))]
    test = test[torch.arange(min(args.test, len(test)))]
    print(f"Pinwheel: {len(train)} training sequences ({train.num_events} events), {len(test)} test sequences "
          f"({test.num_events} events); epochs {args.epochs}, batch {args.batch_size}, tol {args.tol}", flush=True)
    results = {}
    for name in args.models:
        torch.manual_seed(args.seed)
        model = MODELS[name](feature_dim=2, hidden_size=args.hidden_size, flow_hidden=tuple(args.flow_hidden),
                             rtol=args.tol, atol=args.tol)
        start = time.perf_counter()
        model.fit(train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=False)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        with torch.no_grad():
            t_ll, s_ll = model.log_likelihood_split(test)
        eval_s = time.perf_counter() - start
        n = test.num_events
        row = {"time_ll_per_event": float(t_ll.sum()) / n, "space_ll_per_event": float(s_ll.sum()) / n,
               "train_seconds": fit_s, "train_events_per_second": model.train_result_.train_events_per_second,
               "eval_seconds": eval_s, "eval_events_per_second": n / eval_s}
        results[name] = row
        print(f"{name:17s} time {row['time_ll_per_event']:+.3f}  space {row['space_ll_per_event']:+.3f} nats/event  "
              f"train {fit_s:.0f} s ({row['train_events_per_second']:.1f} events/s)  "
              f"test {eval_s:.0f} s ({row['eval_events_per_second']:.1f} events/s, exact trace)", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
