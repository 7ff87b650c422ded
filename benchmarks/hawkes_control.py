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

Usage: ``nice -n 10 .venv/bin/python benchmarks/hawkes_control.py [--model sahp] [--json benchmarks/results/hawkes_control.json]``
"""

from __future__ import annotations

import _bench  # noqa: F401  (one thread per pool; must come first)

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch


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

    from tpp.control import (ActorCritic, LearnedEventEnv, LookaheadPolicy, RandomPolicy, benchmark_env,
                             collect_trajectories, evaluate, fit_event_model, no_intervention, train_actor_critic)

    seed = args.seed
    env = benchmark_env()
    timings = {}
    start = time.perf_counter()
    logs, log_returns = collect_trajectories(env, RandomPolicy(2, 0.5, seed + 7), args.log_episodes, seed=50_000 + seed)
    timings["log"] = time.perf_counter() - start
    print(f"logged {len(logs)} episodes, {logs.num_events} events (random policy return {log_returns.mean():.3f})",
          flush=True)

    start = time.perf_counter()
    model = fit_event_model(logs, args.model, epochs=args.epochs, seed=seed)
    timings["fit"] = time.perf_counter() - start
    val_ll = getattr(getattr(model, "train_result_", None), "best_val_ll_per_event", None)
    print(f"fitted {args.model} in {timings['fit']:.1f} s (best validation log-likelihood per event {val_ll})",
          flush=True)

    rollouts = LearnedEventEnv(model, env)
    torch.manual_seed(seed)
    agent = ActorCritic(env.observation_space.shape[0], env.action_space.n)
    trained = train_actor_critic(rollouts, agent, iterations=args.iterations, episodes=args.rollouts, seed=seed)
    timings["actor_critic"] = trained.seconds
    curve = trained.returns
    print(f"actor-critic in the learned model: {trained.seconds:.1f} s, model return "
          f"{np.mean(curve[:5]):.3f} (first 5 iterations) -> {np.mean(curve[-5:]):.3f} (last 5)", flush=True)

    policies = {
        "trained (model-based AC)": agent.policy(greedy=True),
        "no intervention": no_intervention,
        "random (p=0.5)": RandomPolicy(env.action_space.n, 0.5, seed + 1),
        "one-step lookahead (true parameters)": LookaheadPolicy(env, args.lookahead_samples, seed + 2),
    }
    results = {}
    start = time.perf_counter()
    for name, policy in policies.items():
        returns = evaluate(env, policy, args.eval_episodes, seed=10_000 + seed)
        results[name] = {"mean": float(returns.mean()), "se": float(returns.std(ddof=1) / np.sqrt(returns.size)),
                         "returns": returns.tolist()}
    timings["evaluate"] = time.perf_counter() - start

    def gain(a: str, b: str) -> float:
        return (results[a]["mean"] - results[b]["mean"]) / abs(results[b]["mean"])

    trained_name = "trained (model-based AC)"

    def paired(b: str) -> dict[str, float]:
        """The trained policy's return minus ``b``'s, episode by episode (same seeds): mean and standard error."""
        d = np.asarray(results[trained_name]["returns"]) - np.asarray(results[b]["returns"])
        return {"mean": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(d.size))}

    summary = {
        "improvement_over_none": gain(trained_name, "no intervention"),
        "improvement_over_random": gain(trained_name, "random (p=0.5)"),
        "gap_to_lookahead": results[trained_name]["mean"] - results["one-step lookahead (true parameters)"]["mean"],
        "paired_difference": {b: paired(b) for b in results if b != trained_name},
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
