"""Control of an event stream: a model-based actor-critic trained through a learned neural TPP (issue 19 part 4,
after Qu et al. 2023, "Bellman meets Hawkes").

What it measures
----------------
The environment is :func:`tpp.control.benchmark_env` (a rare trigger type drives outbreaks of a harmful,
self-exciting type; one intervention type inhibits it; reward minus the harmful events minus 1 per
intervention; 20 decisions of one time unit). The pipeline, every stage seeded:

1. log ``--log-episodes`` episodes of the random behaviour policy (p = 0.5) on the true environment;
2. fit a neural TPP (``--model``, SAHP by default, through the model table and the one trainer) on them;
3. train :class:`tpp.control.ActorCritic` only inside the learned model (``--iterations`` iterations of
   ``--rollouts`` episodes: critic by TD(lambda), actor by the policy gradient);
4. evaluate on the true environment, ``--eval-episodes`` episodes with the same seeds for every policy: the
   trained policy (greedy), no intervention, random (p = 0.5), and the one-step lookahead planner with the
   true parameters (``--lookahead-samples`` Monte Carlo copies per action).

Reported: mean return with its standard error per policy, the trained policy's improvement over no
intervention and over random, ``(R - R_b) / |R_b|`` (target: >= 20% over both), and its gap to lookahead.

The pipeline is :func:`tpp.control.run_control` (also ``tpp control``); this script prints and records it.

Usage: ``nice -n 10 .venv/bin/python benchmarks/hawkes_control.py [--model sahp] [--json benchmarks/results/hawkes_control.json]``
"""

from __future__ import annotations

import _bench  # noqa: F401  (one thread per pool; must come first)

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sahp", help="neural TPP of the model table (sahp, thp, ...)")
    parser.add_argument("--log-episodes", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--iterations", type=int, default=80)
    parser.add_argument("--rollouts", type=int, default=32)
    parser.add_argument("--eval-episodes", type=int, default=200)
    parser.add_argument("--lookahead-samples", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", module="gymnasium")

    from tpp.control import POLICY_LABELS, run_control

    report = run_control(model=args.model, log_episodes=args.log_episodes, epochs=args.epochs,
                         iterations=args.iterations, rollouts=args.rollouts, eval_episodes=args.eval_episodes,
                         lookahead_samples=args.lookahead_samples, seed=args.seed, progress=sys.stderr.isatty())
    timings, curve, val_ll = report.seconds, report.training_curve, report.validation_ll_per_event
    print(f"logged {args.log_episodes} episodes, {report.logged_events} events (random policy return "
          f"{report.logged_return:.3f})", flush=True)
    print(f"fitted {args.model} in {timings['fit']:.1f} s (best validation log-likelihood per event {val_ll})",
          flush=True)
    print(f"actor-critic in the learned model: {timings['actor_critic']:.1f} s, model return "
          f"{np.mean(curve[:5]):.3f} (first 5 iterations) -> {np.mean(curve[-5:]):.3f} (last 5)", flush=True)

    # the result file's keys are the policies' labels, as before run_control existed
    results = {POLICY_LABELS[key]: {"mean": s.mean, "se": s.se, "returns": s.returns.tolist()}
               for key, s in report.scores.items()}
    summary = {
        "improvement_over_none": report.improvement_over_none,
        "improvement_over_random": report.improvement_over_random,
        "gap_to_lookahead": report.gap_to_lookahead,
        "paired_difference": {POLICY_LABELS[key]: {"mean": m, "se": se}
                              for key, (m, se) in report.paired_difference.items()},
    }
    print(f"\nreturns on the true environment, {args.eval_episodes} episodes (same seeds for every policy):")
    print(f"{'policy':40s} {'mean':>8s} {'se':>6s}")
    for name, r in results.items():
        print(f"{name:40s} {r['mean']:8.3f} {r['se']:6.3f}")
    print(f"\ntrained vs no intervention: {100 * summary['improvement_over_none']:+.1f}%; vs random: "
          f"{100 * summary['improvement_over_random']:+.1f}% (target >= +20% each); gap to lookahead: "
          f"{summary['gap_to_lookahead']:+.3f} return")
    for b, d in summary["paired_difference"].items():
        print(f"paired (same seeds) trained - {b}: {d['mean']:+.3f} +- {d['se']:.3f}")
    print("seconds:", {k: round(v, 1) for k, v in timings.items()})
    print("command:", _bench.reproduce_command(__file__))
    if args.json:
        _bench.write_json_atomically(args.json, {
            "command": _bench.reproduce_command(__file__), "environment": _bench.base_environment(),
            "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "results": results, "summary": summary, "training_curve": curve, "seconds": timings,
            "validation_ll_per_event": val_ll})


if __name__ == "__main__":
    main()
