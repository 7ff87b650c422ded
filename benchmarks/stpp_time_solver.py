"""Does the Neural STPP's temporal model learn the likelihood it is scored on? (issue 16, Pinwheel time targets)

The temporal part of :mod:`tpp.spatial.cnf` (a hidden-state ODE between events, a GRU jump at each, the
compensator as an ODE state) is trained with a cheap hidden-state solver (RK4 with steps of at most
``train_time_step`` model units, default 2) and scored with dopri5. This script trains the time part alone (a
``TimeVaryingCNF`` whose flow is a single 4-unit layer: the flow's cost and its share of the loss are
negligible, the hidden state is the one every Neural STPP uses) on Pinwheel under a CPU budget and prints the
test time log-likelihood per event under dopri5 (rtol = atol = 1e-4) at fixed CPU marks, for one choice of
``hidden_dynamics`` ("bounded": ``tanh(g(h))``; "free": ``g(h)``), training solver (``--step`` in model units,
or ``none`` for dopri5) and learning rate. The scoring time is not charged to the budget.

The true process's test log-likelihood (Pinwheel's 10-variate Hawkes, marginally a univariate exponential
Hawkes with mu 0.5, alpha 0.6, beta 10) is printed beside it.

Usage::

    nice -n 10 .venv/bin/python benchmarks/stpp_time_solver.py --dynamics free --step 2.0 --minutes 5
"""

from __future__ import annotations

import _bench  # noqa: F401  (one thread per pool, repository on the path; must come first)

import argparse
import json
import time
from pathlib import Path

import torch

MARKS = (1, 2, 3, 4, 5, 7.5, 10, 15, 20, 30)  # CPU minutes at which the test score is printed


class _Budget(Exception):
    """Raised by the after-step hook once the CPU budget is spent."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dynamics", default="free", choices=["bounded", "free"],
                        help="the hidden drift (model default: free)")
    parser.add_argument("--step", default="none",
                        help="training RK4 step (model units), or none (the model default) for dopri5")
    parser.add_argument("--minutes", type=float, default=5.0, help="training CPU budget")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--test", type=int, default=100, help="first N test sequences scored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="append one JSON line per mark to OUT")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from tpp.hawkes import ExpHawkes
    from tpp.spatial import cnf
    from tpp.spatial.data import PINWHEEL, pinwheel_splits

    train, _, test = pinwheel_splits()
    test = test[torch.arange(min(args.test, len(test)))]
    p = PINWHEEL
    truth = ExpHawkes.from_params([p["baseline"] * p["num_clusters"]], [[p["excitation"]]], p["decay"])
    with torch.no_grad():
        truth_ll = float(truth.log_likelihood(test).sum()) / test.num_events
    print(f"true process: test time ll {truth_ll:+.4f} per event ({len(test)} sequences)", flush=True)

    torch.manual_seed(args.seed)
    model = cnf.TimeVaryingCNF(feature_dim=2, hidden_size=32, flow_hidden=(4,), dtype="float32",
                               hidden_dynamics=args.dynamics,
                               train_time_step=None if args.step.lower() == "none" else float(args.step))

    def time_ll() -> float:
        model.eval()
        with torch.no_grad():
            ll = model.time_log_likelihood(test)
        model.train()
        return float(ll.sum()) / test.num_events

    state = {"cpu0": time.process_time(), "steps": 0, "marks": list(MARKS)}

    def hook() -> None:
        state["steps"] += 1
        used = (time.process_time() - state["cpu0"]) / 60
        while state["marks"] and used >= state["marks"][0]:
            start = time.process_time()
            value = time_ll()
            state["cpu0"] += time.process_time() - start  # scoring is not training
            mark = state["marks"].pop(0)
            print(f"{args.dynamics} step={args.step} lr={args.lr}: {mark} CPU min, {state['steps']} steps: "
                  f"test time ll {value:+.4f}", flush=True)
            if args.out is not None:
                with args.out.open("a") as fh:
                    fh.write(json.dumps({"dynamics": args.dynamics, "step": args.step, "lr": args.lr,
                                         "cpu_minutes": mark, "steps": state["steps"], "test_time_ll": value,
                                         "truth": truth_ll}) + "\n")
        if used > args.minutes:
            raise _Budget

    model.after_step = hook
    try:
        model.fit(train, None, epochs=50, batch_size=32, lr=args.lr, seed=args.seed, progress=False, warmup=0.0)
    except _Budget:
        print(f"budget of {args.minutes:g} CPU minutes reached after {state['steps']} steps", flush=True)


if __name__ == "__main__":
    main()
