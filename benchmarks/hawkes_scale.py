"""Sparse exponential Hawkes at scale (issue 17, item 7): K types, a sparse truth, simulate, fit, recover.

Truth: ``K`` types, ``--per-row`` non-zeros per adjacency row at random columns, each ``--row-sum / per_row`` (so
every row sums to ``--row-sum``, the branching ratio near it), baseline ``--mu`` per type, decay ``--decay``; the
horizon is chosen so that the expected number of events is ``--events`` (``K mu T / (1 - row_sum)``). Simulated by
``SparseExpHawkes.sample`` (cluster construction on the sparse columns), fitted by ``SparseExpHawkes.fit`` (fixed
decay, L1, BIC over a path), scored by the support F1 against the truth. Prints the command, the environment, the
timings, the peak resident memory (``resource.getrusage``) and the fit's path; ``--json`` writes them.

    python benchmarks/hawkes_scale.py --types 1000 --events 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import threading
import time

import numpy as np


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KB on Linux


def current_rss_mb() -> float:
    """Resident memory now (Linux /proc), to see the fit's own peak under the simulation's."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssSampler(threading.Thread):
    """The largest resident memory seen every 50 ms while the fit runs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.done = current_rss_mb(), threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.peak = max(self.peak, current_rss_mb())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--types", type=int, default=1000)
    p.add_argument("--events", type=float, default=1e6, help="expected number of events")
    p.add_argument("--per-row", type=int, default=5)
    p.add_argument("--row-sum", type=float, default=0.5)
    p.add_argument("--mu", type=float, default=0.01)
    p.add_argument("--decay", type=float, default=1.0)
    p.add_argument("--penalty", default="l1")
    p.add_argument("--n-strengths", type=int, default=8)
    p.add_argument("--min-strength-ratio", type=float, default=0.05)
    p.add_argument("--memory-floats", type=int, default=1 << 24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import numba
    import scipy

    from tpp.hawkes.sparse import SparseExpHawkes

    K = args.types
    rng = np.random.default_rng(args.seed)
    rows = np.repeat(np.arange(K), args.per_row)
    cols = np.concatenate([rng.choice(K, args.per_row, replace=False) for _ in range(K)])
    import scipy.sparse

    truth = scipy.sparse.csr_matrix((np.full(rows.size, args.row_sum / args.per_row), (rows, cols)), shape=(K, K))
    horizon = args.events * (1 - args.row_sum) / (K * args.mu)
    model = SparseExpHawkes.from_params(np.full(K, args.mu), truth, args.decay)
    out: dict = {"command": " ".join([sys.executable, *sys.argv]), "python": platform.python_version(),
                 "machine": platform.machine(), "cpus": os.cpu_count(), "numba": numba.__version__,
                 "scipy": scipy.__version__, "numpy": np.__version__,
                 "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")},
                 "types": K, "per_row": args.per_row, "row_sum": args.row_sum, "horizon": horizon}
    print("command:", out["command"])
    print("environment:", {k: out[k] for k in ("python", "machine", "cpus", "numba", "scipy", "numpy", "threads")})

    t0 = time.perf_counter()
    data = model.sample(1, horizon, generator=args.seed, max_events=int(3 * args.events) + 1000)
    out["simulate_seconds"] = time.perf_counter() - t0
    out["events"] = int(data.num_events)
    out["rss_after_simulation_mb"] = peak_rss_mb()
    print(f"simulated {data.num_events:,} events on [0, {horizon:.4g}] in {out['simulate_seconds']:.1f} s "
          f"(peak RSS {out['rss_after_simulation_mb']:.0f} MB)")

    fit = SparseExpHawkes(K, decay=args.decay, penalty=args.penalty, n_strengths=args.n_strengths,
                          min_strength_ratio=args.min_strength_ratio, memory_floats=args.memory_floats)
    out["log_likelihood_truth"] = float(model.log_likelihood(data).sum())
    out["rss_before_fit_mb"] = current_rss_mb()
    sampler = RssSampler()
    sampler.start()
    t0 = time.perf_counter()
    fit.fit(data)
    out["fit_seconds"] = time.perf_counter() - t0
    sampler.done.set()
    sampler.join()
    out["fit_peak_rss_mb"] = max(sampler.peak, current_rss_mb())
    out["peak_rss_mb"] = peak_rss_mb()
    out["log_likelihood_fit"] = float(fit.log_likelihood(data).sum())
    print(f"log-likelihood: fitted {out['log_likelihood_fit']:.6g}, truth {out['log_likelihood_truth']:.6g}")
    est = fit.adjacency_sparse_
    true_set = set(zip(*truth.nonzero()))
    est_set = set(zip(*est.nonzero()))
    tp = len(true_set & est_set)
    out.update(nnz_true=len(true_set), nnz_fit=len(est_set), true_positives=tp,
               precision=tp / max(len(est_set), 1), recall=tp / len(true_set),
               f1=2 * tp / (len(true_set) + len(est_set)), strength=fit.strength_,
               converged=bool(fit.fit_result_["converged"]), kkt_rounds=fit.fit_result_["kkt_rounds"],
               fit_seconds_per_1e6_events=out["fit_seconds"] / (out["events"] / 1e6),
               simulate_seconds_per_1e6_events=out["simulate_seconds"] / (out["events"] / 1e6),
               path=[{k: (float(v) if not isinstance(v, int) else v) for k, v in pt.items()} for pt in fit.path_])
    on = np.array([est[i, j] for i, j in true_set])
    out["mean_abs_error_on_true_support"] = float(np.mean(np.abs(on - args.row_sum / args.per_row)))
    print(f"fit: {out['fit_seconds']:.1f} s ({out['fit_seconds_per_1e6_events']:.1f} s per 1e6 events), "
          f"RSS {out['rss_before_fit_mb']:.0f} MB before the fit, at most {out['fit_peak_rss_mb']:.0f} MB during it "
          f"(process peak {out['peak_rss_mb']:.0f} MB), strength {fit.strength_:.3g}, nnz {len(est_set)} "
          f"(true {len(true_set)}), precision {out['precision']:.3f}, recall {out['recall']:.3f}, F1 {out['f1']:.3f}, "
          f"converged {out['converged']}, KKT rounds {out['kkt_rounds']}")
    for pt in out["path"]:
        print("  path:", {k: round(v, 4) if isinstance(v, float) else v for k, v in pt.items()})
    if args.json:
        from tpp.io import atomic_write  # a reader never sees half a result file

        with atomic_write(args.json, ".json") as tmp:
            tmp.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
