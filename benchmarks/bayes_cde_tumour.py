"""Bayesian neural CDE for treatment effects on the tumour-growth simulator: coverage of the 95% credible
intervals, against MC dropout, and the error of the predicted treatment effect.

What it measures
----------------
Data: ``sde.tumour.simulate_tumour`` (the PK-PD cancer simulator of Hess et al.'s code, rewritten):
``--patients`` patients over ``--horizon`` days, time-varying confounding ``--gamma``, informative
observation (``obs_coeff=2``: about 30% of days measured). Patients are split 70 / 10 / 20 (train /
validation / test). A series is a patient's days ``0 .. t0`` (the history: log volume where measured,
the treatments) followed by ``--tau`` plan rows (the treatments of days ``t0 .. t0+tau-1``, outcome
blank); its targets are the log volumes (``log(V + 0.01 cm^3)``, a detection floor) on days
``t0+1 .. t0+tau`` (training and validation: only the days that were measured; test: all of them, the
held-out outcomes). Origins ``t0`` uniform on
``[20, horizon - tau - 1]``, ``--origins`` per training patient, one per test patient.

Models (same encoder-decoder CDE: hidden 16, one hidden layer of width 16 in each vector field,
treatments as cumulative doses in both paths, Gaussian outcome head with a state-dependent std, the one
trainer with the same epochs / batch / learning rate):

* ``bayesian-neural-cde``: ``sde.models.BayesianNeuralCDE(plan_steps=tau)``, weight-space SDEs for the
  encoder and the decoder fields, ELBO with the Girsanov KL, predictive = mixture over ``--samples``
  weight paths;
* ``mc-dropout``: ``sde.models.bayes_cde.MCDropoutCDE(aleatoric=False)``, the paper's baseline (TE-CDE
  with dropout 0.5 in the head; a mean fitted by squared error, intervals from the dropout draws);
* ``mc-dropout+gauss``: the same with the Gaussian head (a stronger baseline than the paper's).

On the test patients:

* coverage of the central 95% interval of the factual outcomes (all ``tau`` days; and only the days
  that were measured), median interval width, RMSE of the predictive mean (log volume);
* counterfactual coverage under two plans from ``t0``: A = no treatment, B = chemotherapy and
  radiotherapy on day ``t0`` (outcomes re-simulated for the same patients with the same noise);
* treatment effect ``log V_B(t0+tau) - log V_A(t0+tau)``: RMSE of the predicted effect (difference of
  the predictive means) against the untreated baseline's (which predicts every plan's outcome as the
  untreated one, effect 0), and against the true effect's spread.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bayes_cde_tumour.py                     # 2,000 patients
    nice -n 10 .venv/bin/python benchmarks/bayes_cde_tumour.py --patients 300 --epochs 3   # smoke run
    # the models in two processes, then one table:
    nice -n 10 .venv/bin/python benchmarks/bayes_cde_tumour.py --models bayesian-neural-cde --out bayes_cde_tumour_bncde
    nice -n 10 .venv/bin/python benchmarks/bayes_cde_tumour.py --models mc-dropout,mc-dropout+gauss \
        --out bayes_cde_tumour_dropout
    .venv/bin/python benchmarks/bayes_cde_tumour.py --merge bayes_cde_tumour_bncde,bayes_cde_tumour_dropout

Prints the command, the environment and the numbers; writes benchmarks/results/bayes_cde_tumour.{json,md}.
"""

from __future__ import annotations

# ruff: noqa: I001  (_bench sets the thread variables: it must be imported before numpy and torch)
from _bench import REPO, base_environment, reproduce_command, write_json_atomically

import argparse
import json
import time

import numpy as np
import torch


def make_batch(sim, patients: np.ndarray, origins: np.ndarray, tau: int, measured_only: bool):
    """Series (history to ``t0``, then ``tau`` plan rows with the factual treatments, outcome blanked) and
    targets ``[n, tau]``: :meth:`sde.tumour.TumourSimulation.forecast_series`."""
    return sim.forecast_series(origins, tau, patients=patients, measured_only=measured_only)


def history_batch(sim, patients: np.ndarray, origins: np.ndarray):
    """The histories alone (days ``0 .. t0``), for predictions under given plans."""
    return sim.to_series(upto=origins, log_volume=True, patients=patients)


def evaluate(model, sim, test_idx, test_t0, tau, samples, seed) -> dict[str, float]:
    from sde.models.bayes_cde import interval_coverage
    from sde.tumour import log_outcome

    factual = make_batch(sim, test_idx, test_t0, tau, measured_only=False)
    pred = model.predict_outcomes(factual, None, samples, seed=seed)
    y = factual.targets
    days = test_t0[:, None] + np.arange(1, tau + 1)
    measured = torch.tensor(sim.observed[test_idx[:, None], days])
    y_measured = torch.where(measured, y, torch.full_like(y, float("nan")))
    row = {"coverage_all": interval_coverage(pred.lower, pred.upper, y),
           "coverage_measured": interval_coverage(pred.lower, pred.upper, y_measured),
           "coverage_last_day": interval_coverage(pred.lower[:, -1], pred.upper[:, -1], y[:, -1]),
           "width_median": float(pred.width.median()),
           "rmse": float(((pred.mean - y) ** 2).mean().sqrt())}
    history = history_batch(sim, test_idx, test_t0)
    plan_a = np.zeros((1, tau, 2))
    plan_b = np.zeros((1, tau, 2))
    plan_b[0, 0] = 1.0
    truth, means = {}, {}
    for name, plan in (("A", plan_a), ("B", plan_b)):
        truth[name] = torch.tensor(log_outcome(sim.counterfactual(test_t0, plan, patients=test_idx)))
        p = model.predict_outcomes(history, plan, samples, seed=seed)
        means[name] = p.mean
        row[f"coverage_plan_{name}"] = p.coverage(truth[name])
    effect = truth["B"][:, -1] - truth["A"][:, -1]
    predicted = means["B"][:, -1] - means["A"][:, -1]
    row["effect_rmse"] = float(((predicted - effect) ** 2).mean().sqrt())
    row["untreated_effect_rmse"] = float((effect**2).mean().sqrt())  # the untreated baseline predicts no effect
    row["true_effect_mean"] = float(effect.mean())
    row["predicted_effect_mean"] = float(predicted.mean())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--gamma", type=float, default=4.0)
    parser.add_argument("--horizon", type=int, default=60)
    parser.add_argument("--tau", type=int, default=5)
    parser.add_argument("--origins", type=int, default=1, help="origins t0 per training patient")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--samples", type=int, default=32, help="Monte Carlo samples in the predictive")
    parser.add_argument("--train-samples", type=int, default=4, help="weight paths per step in the ELBO")
    parser.add_argument("--weight-diffusion", type=float, default=0.05)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--method", default="euler", help="CDE solver (sde.solvers.Method name)")
    parser.add_argument("--models", default="bayesian-neural-cde,mc-dropout,mc-dropout+gauss")
    parser.add_argument("--counts", action="store_true",
                        help="observation counts in the encoder's path (raw cumulative counts: the treatment "
                        "channels, measured every day, then drive the state with the day count; off by default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bayes_cde_tumour")
    parser.add_argument("--merge", default="", help="comma-separated result names (runs of disjoint --models "
                        "with the same data settings) to join into --out, without training")
    args = parser.parse_args()
    if args.merge:
        merge(args.merge.split(","), args.out)
        return
    from sde.models.bayes_cde import BayesianNeuralCDE, MCDropoutCDE
    from sde.models.heads import Task
    from sde.solvers import Method
    from sde.tumour import simulate_tumour

    command = reproduce_command(__file__)
    print("command:", command)
    env = base_environment()
    print("environment:", json.dumps(env))
    rng = np.random.default_rng(args.seed)
    sim = simulate_tumour(args.patients, gamma=args.gamma, horizon=args.horizon, seed=args.seed)
    perm = rng.permutation(args.patients)
    n_train, n_val = int(0.7 * args.patients), int(0.1 * args.patients)
    parts = {"train": perm[:n_train], "val": perm[n_train : n_train + n_val], "test": perm[n_train + n_val :]}
    lo, hi = 20, args.horizon - args.tau - 1

    def origins(idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        rep = np.repeat(idx, k)
        return rep, rng.integers(lo, hi + 1, len(rep))

    tr_idx, tr_t0 = origins(parts["train"], args.origins)
    va_idx, va_t0 = origins(parts["val"], 1)
    te_idx, te_t0 = origins(parts["test"], 1)
    train = make_batch(sim, tr_idx, tr_t0, args.tau, measured_only=True)
    val = make_batch(sim, va_idx, va_t0, args.tau, measured_only=True)
    print(f"series: train {len(train)} (targets measured {int(torch.isfinite(train.targets).sum())}), "
          f"val {len(val)}, test {len(te_idx)} patients; treated days {sim.chemo.mean():.3f} chemo, "
          f"{sim.radio.mean():.3f} radio; measured days {sim.observed.mean():.3f}", flush=True)
    common = {"task": Task.FORECAST, "plan_steps": args.tau, "hidden_hidden_size": 16, "num_layers": 1,
              "observation_counts": args.counts, "method": Method(args.method)}
    builders = {
        "bayesian-neural-cde": lambda: BayesianNeuralCDE(3, 16, 1, weight_diffusion=args.weight_diffusion,
                                                         num_samples=args.train_samples, **common),
        "mc-dropout": lambda: MCDropoutCDE(3, 16, 1, dropout=args.dropout, aleatoric=False, num_samples=1, **common),
        "mc-dropout+gauss": lambda: MCDropoutCDE(3, 16, 1, dropout=args.dropout, aleatoric=True, num_samples=1,
                                                 **common),
    }
    results: dict[str, dict[str, float]] = {}
    for name in args.models.split(","):
        torch.manual_seed(args.seed)
        model = builders[name]()
        start = time.perf_counter()
        model.fit(train, val, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                  progress=False)
        seconds = time.perf_counter() - start
        row = evaluate(model, sim, te_idx, te_t0, args.tau, args.samples, args.seed) | {"train_seconds": seconds}
        results[name] = row
        print(f"  {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
    write_results(command, env, vars(args), results, args.out)


KEYS = ["coverage_all", "coverage_measured", "coverage_last_day", "coverage_plan_A", "coverage_plan_B",
        "width_median", "rmse", "effect_rmse", "untreated_effect_rmse", "train_seconds"]


def write_results(command: str, env: dict, args: dict, results: dict, name: str) -> None:
    """Print the table and write benchmarks/results/NAME.{json,md}."""
    keys = KEYS
    lines = [f"# Bayesian neural CDE on the tumour simulator ({args['patients']} patients, gamma {args['gamma']}, "
             f"tau {args['tau']})", "", f"command: `{command}`", "", f"environment: `{json.dumps(env)}`", "",
             "| model | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for model, row in results.items():
        lines.append(f"| {model} | " + " | ".join(f"{row[k]:.4f}" for k in keys) + " |")
    table = "\n".join(lines)
    print("\n" + table)
    out = REPO / "benchmarks" / "results"
    write_json_atomically(out / f"{name}.json", {"command": command, "environment": env, "args": args,
                                                 "results": results})
    (out / f"{name}.md").write_text(table + "\n")


def merge(names: list[str], name: str) -> None:
    """Join the results of several runs (same data, disjoint models) into one table."""
    runs = [json.loads((REPO / "benchmarks" / "results" / f"{n}.json").read_text()) for n in names]
    data_keys = ("patients", "gamma", "horizon", "tau", "origins", "seed")
    for run in runs[1:]:
        if any(run["args"][k] != runs[0]["args"][k] for k in data_keys):
            raise ValueError(f"runs {names} were made on different data settings")
    command = " && ".join(run["command"] for run in runs)
    results = {model: row for run in runs for model, row in run["results"].items()}
    write_results(command, runs[0]["environment"], runs[0]["args"], results, name)


if __name__ == "__main__":
    main()
