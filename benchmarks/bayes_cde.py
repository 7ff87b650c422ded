"""Bayesian neural CDE against the deterministic neural CDE: accuracy, negative log-likelihood and
calibration on small UEA classification sets.

What it measures
----------------
For each data set (the archive's own train / test split) and seed: ``sde.models.NeuralCDE`` and
``sde.models.BayesianNeuralCDE`` (weight-space SDE posterior over the same vector field, Hess et al.,
ICLR 2024), both with hidden size 16, one hidden layer in the vector field of width 16, the same
readout, trained by the one trainer (``Model.fit``: AdamW, warm-up + cosine, clipping) for the same
epochs, batch size and learning rate. On the test split:

* accuracy of the predicted class; AUROC (one-vs-rest macro average; binary: of class 1);
* NLL: mean ``-log p(label | series)`` of the predictive probabilities (the Bayesian model's are the
  average over ``--samples`` weight paths, its posterior predictive);
* ECE: expected calibration error of the top-class probability, 10 equal-width bins;
* for the Bayesian model also the mean spread (std over weight paths) of the true class's probability,
  on the test series and on the test series with every value multiplied by 3 (out of distribution).

Usage::

    nice -n 10 .venv/bin/python benchmarks/bayes_cde.py                       # BasicMotions, JapaneseVowels, 3 seeds
    nice -n 10 .venv/bin/python benchmarks/bayes_cde.py --datasets basicmotions --seeds 1 --epochs 10

Prints the command, the environment and one row per (data set, model) with mean +- std over seeds;
writes ``benchmarks/results/bayes_cde.json``.
"""

from __future__ import annotations

# ruff: noqa: I001  (_bench sets the thread variables: it must be imported before numpy and torch)
from _bench import REPO, base_environment, reproduce_command, write_json_atomically

import argparse
import dataclasses
import json
import time

import numpy as np
import torch


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of the top-class probability (equal-width bins)."""
    conf, pred = probs.max(1), probs.argmax(1)
    correct = (pred == labels).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return float(total)


def macro_auroc(probs: np.ndarray, labels: np.ndarray) -> float:
    """One-vs-rest macro AUROC (binary: the AUROC of class 1's probability)."""
    from sde.metrics import auroc

    if probs.shape[1] == 2:
        return auroc(probs[:, 1], labels == 1)
    scores = [auroc(probs[:, k], labels == k) for k in range(probs.shape[1]) if 0 < (labels == k).sum() < len(labels)]
    return float(np.mean(scores))


def metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    p, y = probs.double().numpy(), labels.numpy()
    return {"accuracy": float((p.argmax(1) == y).mean()),
            "auroc": macro_auroc(p, y),
            "nll": float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean()),
            "ece": ece(p, y)}


def scaled(batch, factor: float):
    """The batch with every value multiplied by ``factor`` (an input the model never saw)."""
    return dataclasses.replace(batch, values=batch.values * factor)


def run_one(name: str, seed: int, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    from sde.datasets import load_series
    from sde.models import BayesianNeuralCDE, NeuralCDE

    train, test = load_series(name, "train"), load_series(name, "test")
    classes = int(max(train.labels.max(), test.labels.max())) + 1
    out: dict[str, dict[str, float]] = {}
    for label, cls, extra in [("neural-cde", NeuralCDE, {}),
                              ("bayesian-neural-cde", BayesianNeuralCDE,
                               {"weight_diffusion": args.weight_diffusion, "num_samples": args.train_samples})]:
        torch.manual_seed(seed)
        model = cls(train.num_channels, 16, classes, hidden_hidden_size=16, num_layers=1, **extra)
        start = time.perf_counter()
        model.fit(train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, progress=False)
        seconds = time.perf_counter() - start
        torch.manual_seed(1000 + seed)
        with torch.no_grad():
            probs = model.predict(test, samples=args.samples) if cls is BayesianNeuralCDE else model.predict(test)
        row = metrics(probs, test.labels) | {"train_seconds": seconds}
        if cls is BayesianNeuralCDE:
            for what, batch in [("spread_test", test), ("spread_ood_x3", scaled(test, 3.0))]:
                draws = model.predictive_samples(batch, args.samples, seed=seed)  # [S, B, K]
                true = draws[:, torch.arange(len(test)), test.labels]
                row[what] = float(true.std(0).mean())
        out[label] = row
        print(f"  {name} seed {seed} {label}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="basicmotions,japanesevowels")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--samples", type=int, default=32, help="weight paths in the predictive")
    parser.add_argument("--train-samples", type=int, default=4, help="weight paths per step in the ELBO")
    parser.add_argument("--weight-diffusion", type=float, default=0.05)
    args = parser.parse_args()
    print("command:", reproduce_command(__file__))
    env = base_environment()
    print("environment:", json.dumps(env))
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for name in args.datasets.split(","):
        for seed in range(args.seeds):
            for model, row in run_one(name, seed, args).items():
                results.setdefault(name, {}).setdefault(model, []).append(row)
    print("\ndata set | model | accuracy | AUROC | NLL | ECE | train s | spread test | spread OOD x3")
    for name, models in results.items():
        for model, rows in models.items():
            def cell(key: str) -> str:
                vals = [r[key] for r in rows if key in r]
                if not vals:
                    return "-"
                return f"{np.mean(vals):.3f}" + (f" +- {np.std(vals):.3f}" if len(vals) > 1 else "")
            print(f"{name} | {model} | " + " | ".join(cell(k) for k in
                  ("accuracy", "auroc", "nll", "ece", "train_seconds", "spread_test", "spread_ood_x3")))
    write_json_atomically(REPO / "benchmarks" / "results" / "bayes_cde.json",
                          {"command": reproduce_command(__file__), "environment": env, "args": vars(args),
                           "results": results})


if __name__ == "__main__":
    main()
