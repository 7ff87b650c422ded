"""Online updates (``ExpHawkes.partial_fit``) on a long stream against the batch MLE.

What it measures
----------------
One simulated stream of about ``--events`` events from a K-type exponential Hawkes process (fixed decay,
random sparse-ish adjacency with branching ratio ~0.6, seed ``--seed``), fed to ``partial_fit`` in chunks of
``--chunk`` events (each chunk's window ends at its last event, the last at the stream's end). Reported:

* exactness: at fixed parameters (``update=False``) the chunks' summed log-likelihood against the batch
  log-likelihood of the whole stream (relative difference; the test asks 1e-10);
* accuracy: the final streamed estimate's log-likelihood on the whole stream against the batch MLE's,
  relative (issue 17's target: within 1%);
* time: the whole stream's ``partial_fit`` seconds and the batch fit's, one thread, this machine.

Usage: ``.venv/bin/python benchmarks/hawkes_online.py [--events 1000000] [--marks 3,10] [--json benchmarks/results/hawkes_online.json]``
"""

from __future__ import annotations

import _bench  # noqa: F401  (one thread per pool; must come first)

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np


def run(K: int, events: float, chunk: int, seed: int) -> dict:
    from tpp.events import EventBatch
    from tpp.hawkes import ExpHawkes

    rng = np.random.default_rng(seed)
    adj = rng.uniform(0, 1, (K, K)) * (rng.random((K, K)) < 0.5)
    adj *= 0.6 / max(np.max(np.abs(np.linalg.eigvals(adj))), 1e-12)
    mu = rng.uniform(0.1, 0.3, K)
    decay = 2.0
    truth = ExpHawkes.from_params(mu, adj, decay)
    rate = float(np.linalg.solve(np.eye(K) - adj, mu).sum())
    horizon = events / rate
    data = truth.sample(1, horizon, generator=seed)
    flat = data.to_flat()
    times, marks = flat["times"], flat["marks"].astype(np.int64)
    n = times.size
    cuts = list(range(chunk, n, chunk))
    bounds = [0, *cuts, n]

    def feed(model: ExpHawkes, update: bool) -> float:
        start = time.perf_counter()
        for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            end = horizon if k == len(bounds) - 2 else float(times[b - 1])
            model.partial_fit(times[a:b], marks[a:b], t_start=0.0 if k == 0 else None, t_end=end, update=update)
        return time.perf_counter() - start

    whole = EventBatch.from_flat(times, np.array([0, n]), np.array([0.0]), np.array([horizon]), marks, K)
    fixed = ExpHawkes.from_params(mu, adj, decay)
    score_seconds = feed(fixed, update=False)
    batch_ll_truth = fixed.log_likelihood(whole).item()
    exact_rel = abs(fixed.stream_["log_likelihood"] - batch_ll_truth) / abs(batch_ll_truth)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        batch = ExpHawkes(K, decay).fit(whole)
        batch_seconds = time.perf_counter() - start
        online = ExpHawkes(K, decay)
        online_seconds = feed(online, update=True)
    ll_batch = batch.log_likelihood(whole).item()
    ll_online = online.log_likelihood(whole).item()
    return {
        "marks": K, "events": int(n), "chunks": len(bounds) - 1, "chunk_events": chunk,
        "exact_relative_difference_at_fixed_parameters": exact_rel, "scoring_seconds": score_seconds,
        "batch_mle_log_likelihood": ll_batch, "online_log_likelihood": ll_online,
        "relative_gap": (ll_batch - ll_online) / abs(ll_batch),
        "max_abs_adjacency_difference": float(np.abs(online.adjacency_ - batch.adjacency_).max()),
        "batch_fit_seconds": batch_seconds, "online_seconds": online_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=float, default=1e6)
    parser.add_argument("--marks", default="3,10")
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    print("command:", _bench.reproduce_command(__file__))
    env = _bench.base_environment()
    print("environment:", json.dumps(env))
    rows = [run(int(K), args.events, args.chunk, args.seed) for K in args.marks.split(",")]
    for r in rows:
        print(json.dumps(r))
    if args.json is not None:
        _bench.write_json_atomically(args.json, {"command": _bench.reproduce_command(__file__), "environment": env,
                                                 "rows": rows})


if __name__ == "__main__":
    main()
