"""Space-time ETAS (tpp.spatial.ETAS): recovery on simulated catalogues, fits on real catalogues, and its time
part against exponential Hawkes on earthquakes_japan.

What it measures
----------------
1. **Recovery** (issue 16's target): catalogues of ~5,000 events simulated by branching from a known ETAS model
   (Gaussian kernel, Gutenberg-Richter magnitudes with b = 1, uniform background on a 10 x 10 box), fitted by
   maximum likelihood with the declustering EM for the background; per seed the z-score ``(estimate - truth) /
   SE`` of every parameter (SE from the observed information, conditional on the fitted background).
2. **Real catalogues**: ridgecrest2019_comcat (magnitudes rounded to 0.1 from M2.5: ``m0 = 2.45``) and
   phuket_earthquakes (magnitude = mb - 4.95 from mb 5.0: ``m0 = 0``), the whole catalogue, region = bounding
   box of the epicentres: log-likelihood (time, space, magnitude parts), parameters with SEs, branching ratio
   (``E[kappa]``, infinite when alpha >= beta) and the mean productivity of the observed events, fit seconds.
3. **earthquakes_japan** (no magnitudes: ``magnitude=None``, constant productivity), fitted on ``train``
   (950 sequences), region ``[122, 150] x [22, 46]`` (the data's box): the time part per event on ``test``
   against ``ExpHawkes`` (one learned decay) fitted on the same ``train`` (the target: ETAS beats it), and
   ETAS's space part per event. The joint maximum-likelihood fit shares ``K, c, p`` between the time and the
   space part; a diagnostic row fits ETAS's temporal law on the time part alone (``--only-time-law`` adds just
   that row to an existing JSON).

Timings are on this machine with one thread, shared with other jobs (wall seconds).
Usage: ``nice .venv/bin/python benchmarks/etas.py [--seeds 0,1,2] [--events 5000] [--skip-japan]
[--json benchmarks/results/etas.json]``
"""

from __future__ import annotations

import _bench  # noqa: F401  (one thread per pool; must come first)

import argparse
import math
import time
import warnings
from pathlib import Path

import numpy as np

TRUTH = dict(mu=2.5, K=0.28, alpha=1.0, c=0.01, p=1.3, D=0.02, gamma=0.8)
BETA = 2.3  # b = 1
BOX = ((0.0, 10.0), (0.0, 10.0))


def recovery(seeds: list[int], events: int) -> list[dict]:
    from tpp.spatial.etas import ETAS

    truth = ETAS.from_params(**TRUTH, beta=BETA, m0=0.0, region=BOX)
    # expected count ~ mu T / (1 - n) less edge losses: 4484 events on T = 1000 for seed 1
    t_end = 1000.0 * events / 4500.0
    rows = []
    for seed in seeds:
        batch = truth.sample(1, t_end, generator=seed)
        start = time.perf_counter()
        model = ETAS(location_names=("x", "y"), region=BOX).fit(batch)
        seconds = time.perf_counter() - start
        se = model.standard_errors()
        est = dict(model.params_, beta=model.beta_)
        z = {k: (est[k] - v) / se[k] for k, v in {**TRUTH, "beta": BETA}.items()}
        rows.append({"seed": seed, "events": batch.num_events, "t_end": t_end, "estimate": est, "se": se, "z": z,
                     "within_2se": sorted(k for k, v in z.items() if abs(v) <= 2),
                     "em_iterations": model.fit_result_["em_iterations"], "fit_seconds": seconds})
        print(f"seed {seed}: {batch.num_events} events, fit {seconds:.1f} s, z: "
              + " ".join(f"{k} {v:+.2f}" for k, v in z.items()), flush=True)
    return rows


def real(name: str, m0: float) -> dict:
    from tpp import datasets
    from tpp.spatial.etas import ETAS

    batch = datasets.load(name)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the stationarity note when alpha >= beta: reported below instead
        model = ETAS(magnitude="magnitude", m0=m0).fit(batch)
    seconds = time.perf_counter() - start
    se = model.standard_errors()
    parts = {k: float(v.sum()) for k, v in model.log_likelihood_parts(batch).items()}
    n = batch.num_events
    row = {"data": name, "events": n, "m0": m0, "region": model.region_.tolist(),
           "log_likelihood": parts, "per_event": {k: v / n for k, v in parts.items()},
           "params": dict(model.params_, beta=model.beta_), "se": se, "b_value": model.b_value_,
           "branching_ratio": model.branching_ratio if math.isfinite(model.branching_ratio) else "inf (alpha >= beta)",
           "empirical_branching_ratio": model.empirical_branching_ratio_,
           "background_share": float(np.mean(model.background_probabilities_)),
           "em_iterations": model.fit_result_["em_iterations"], "fit_seconds": seconds}
    print(f"{name}: {n} events, fit {seconds:.1f} s, log-lik {parts}, params "
          + " ".join(f"{k} {v:.4g} ({se[k]:.2g})" for k, v in row["params"].items())
          + f", branching {row['branching_ratio']}, empirical {row['empirical_branching_ratio']:.3f}", flush=True)
    return row


def japan(em_iterations: int) -> dict:
    import torch

    from tpp import datasets
    from tpp.hawkes import ExpHawkes
    from tpp.spatial.etas import ETAS

    train, test = datasets.load("earthquakes_japan", "train"), datasets.load("earthquakes_japan", "test")
    n_test = test.num_events
    start = time.perf_counter()
    etas = ETAS(magnitude=None, region=((122.0, 150.0), (22.0, 46.0))).fit(train, em_iterations=em_iterations,
                                                                           progress=True)
    etas_seconds = time.perf_counter() - start
    time_part, space_part = etas.log_likelihood_split(test)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hawkes = ExpHawkes(1).fit(train)
    hawkes_seconds = time.perf_counter() - start
    with torch.no_grad():
        hawkes_ll = float(hawkes.log_likelihood(test).sum())
    row = {"train_events": train.num_events, "test_events": n_test,
           "etas": {"time_per_event": float(time_part.sum()) / n_test, "space_per_event": float(space_part.sum()) / n_test,
                    "params": etas.params_, "branching_ratio": etas.branching_ratio,
                    "em_iterations": etas.fit_result_["em_iterations"], "fit_seconds": etas_seconds},
           "exp_hawkes": {"time_per_event": hawkes_ll / n_test, "baseline": float(hawkes.baseline_[0]),
                          "adjacency": float(hawkes.adjacency_[0, 0]), "decay": float(np.ravel(hawkes.decays_)[0])
                          if hasattr(hawkes, "decays_") else None, "fit_seconds": hawkes_seconds}}
    row["etas_beats_exp_hawkes_in_time"] = row["etas"]["time_per_event"] > row["exp_hawkes"]["time_per_event"]
    print(f"earthquakes_japan test: ETAS time {row['etas']['time_per_event']:.4f} (space "
          f"{row['etas']['space_per_event']:.4f}) vs ExpHawkes time {row['exp_hawkes']['time_per_event']:.4f} nats/event",
          flush=True)
    return row


def japan_time_law() -> dict:
    """Diagnostic: ETAS's temporal law alone (``mu + sum K g_Omori(t - t_j)``, the region mass taken as 1) fitted
    by maximum likelihood on the time part of ``train`` only, scored on ``test``. The joint fit shares ``K, c, p``
    between the time and the space part; this row shows what the time law does when fitted for time."""
    import scipy.optimize

    from tpp import datasets
    from tpp.spatial.etas import ETAS, _etas_pass

    model = ETAS(magnitude=None, region=((122.0, 150.0), (22.0, 46.0)))
    train = model._catalogue(datasets.load("earthquakes_japan", "train"))
    test = model._catalogue(datasets.load("earthquakes_japan", "test"))

    def time_part(d: dict, z: np.ndarray) -> float:
        mu, K, c, p = math.exp(z[0]), math.exp(z[1]), math.exp(z[2]), 1 + math.exp(z[3])
        one = np.ones(d["times"].size)
        out = _etas_pass(d["times"], d["x"], d["y"], d["dm"], d["offsets"], d["t_start"], d["t_end"], one, K * one,
                         one, one, 0 * one, mu, c, p, False)  # unit masses: the time part does not see space
        return float(out[0].sum()) / d["times"].size

    start = time.perf_counter()
    z0 = np.array([math.log(1.5), math.log(0.5), math.log(0.01), math.log(0.2)])
    res = scipy.optimize.minimize(lambda z: -time_part(train, z), z0, method="L-BFGS-B",
                                  bounds=[(-10, 10), (-10, 15), (-15, 5), (-18, 3)])
    z = res.x
    row = {"time_per_event": time_part(test, z), "train_time_per_event": -float(res.fun),
           "params": {"mu": math.exp(z[0]), "K": math.exp(z[1]), "c": math.exp(z[2]), "p": 1 + math.exp(z[3])},
           "fit_seconds": time.perf_counter() - start, "note": japan_time_law.__doc__.split("\n")[0]}
    print(f"earthquakes_japan test: ETAS time law fitted on time only {row['time_per_event']:.4f} nats/event",
          flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--japan-em", type=int, default=5, help="EM iterations on earthquakes_japan")
    parser.add_argument("--skip-japan", action="store_true")
    parser.add_argument("--skip-recovery", action="store_true")
    parser.add_argument("--only-time-law", action="store_true",
                        help="add only the earthquakes_japan time-law diagnostic to an existing --json")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/etas.json"))
    args = parser.parse_args()
    if args.only_time_law:
        import json

        out = json.loads(args.json.read_text())
        out.setdefault("earthquakes_japan", {})["etas_time_law_fitted_on_time"] = japan_time_law()
        _bench.write_json_atomically(args.json, out)
        return
    out = {"environment": _bench.base_environment(), "command": _bench.reproduce_command(__file__),
           "truth": {**TRUTH, "beta": BETA, "region": BOX}}
    if not args.skip_recovery:
        out["recovery"] = recovery([int(s) for s in args.seeds.split(",")], args.events)
        _bench.write_json_atomically(args.json, out)
    out["real"] = [real("ridgecrest2019_comcat", 2.45), real("phuket_earthquakes", 0.0)]
    _bench.write_json_atomically(args.json, out)
    if not args.skip_japan:
        out["earthquakes_japan"] = japan(args.japan_em)
        out["earthquakes_japan"]["etas_time_law_fitted_on_time"] = japan_time_law()
    _bench.write_json_atomically(args.json, out)


if __name__ == "__main__":
    main()
