"""Hurst index recovery on exact fractional paths, and the Markov approximation's error against K.

What it measures
----------------
For H = 0.2, 0.3, ..., 0.8 and ``--seeds`` seeds, exact paths (Davies-Harte, :func:`sde.simulate.fbm` /
:func:`sde.simulate.fou`, ``--paths`` paths of ``--steps`` steps) and the maximum-likelihood H of
:func:`sde.fractional.estimate_hurst`:

* ``fbm``: standard fBM on [0, 3] (``sigma`` profiled out), under the MA-fBM (the paper's grid and weights;
  the approximation's exact covariance at the observation times; ``markov``: the estimator's default K = 9,
  gamma_max = 3 n; ``markov-K5``: K = 5, gamma_max = n) and under exact fBM (reference);
* ``fou-known``: stationary fOU (theta = 1, sigma = 1) on [0, 2] with the drift known, as in the paper's
  fOU experiments (MA and exact);
* ``fou-joint``: the same data with theta fitted too (MA; a likelihood ridge couples H and theta, so
  this is the hardest setting).

The issue's check: |H_hat - H| <= 0.05 for H from 0.2 to 0.8. With ``--model``, also
:class:`sde.models.FractionalLatentSDE` built with its defaults (``FractionalLatentSDE(1)``) and trained by
``fit(data, epochs=--epochs)`` on exact fBM and fOU paths (``--model-paths`` x ``--model-steps``,
``--model-seeds`` seeds; the fOU drift is not given to the model): its ``hurst_`` (started at the maximum of
the Markov likelihood, :func:`sde.fractional.fit_markov_hurst`, and refined by the ELBO within that
estimate's support interval), and the ``elbo-only`` rows: the ELBO alone (``init_hurst=False``, the paper's
way, H from 0.5) on noisy fOU paths, with a linear prior drift as in the paper's fOU experiments and with
the default MLP drift, which is biased towards rough noise (see :mod:`sde.models.fractional`).

The second table: the MA-fBM's integrated squared error on [0, 1] and its largest covariance error
against exact fBM for K = 1, 3, ..., 11 on the paper's grid with r = 4.

Usage: ``.venv/bin/python benchmarks/fractional_hurst.py [--seeds 3] [--model] [--epochs 20]
[--json benchmarks/results/fractional_hurst.json] [--markdown benchmarks/results/fractional_hurst.md]``
"""

from __future__ import annotations

import _bench  # noqa: F401  (one thread per pool; must come first)

import argparse
import json
import time
from pathlib import Path

HURSTS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def recovery(seeds: int, paths: int, steps: int) -> list[dict]:
    import numpy as np

    from sde.fractional import estimate_hurst
    from sde.simulate import fbm, fou

    rows = []
    for hurst in HURSTS:
        for seed in range(seeds):
            t_fbm, t_fou = np.linspace(0, 3.0, steps + 1), np.linspace(0, 2.0, steps + 1)
            x_fbm = fbm(paths, steps, hurst, t_end=3.0, generator=100 + seed)
            x_fou = fou(paths, steps, hurst, theta=1.0, t_end=2.0, generator=200 + seed)
            cases = {
                ("fbm", "markov"): lambda: estimate_hurst(x_fbm, t_fbm),
                ("fbm", "markov-K5"): lambda: estimate_hurst(x_fbm, t_fbm, num_ou=5, gamma_max=steps + 1.0),
                ("fbm", "exact"): lambda: estimate_hurst(x_fbm, t_fbm, approximation="exact"),
                ("fou-known", "markov"): lambda: estimate_hurst(x_fou, t_fou, process="fou", theta=1.0, mean=0.0),
                ("fou-known", "exact"): lambda: estimate_hurst(x_fou, t_fou, process="fou", theta=1.0, mean=0.0,
                                                               approximation="exact"),
                ("fou-joint", "markov"): lambda: estimate_hurst(x_fou, t_fou, process="fou"),
            }
            for (process, approximation), run in cases.items():
                start = time.perf_counter()
                fit = run()
                rows.append({"hurst": hurst, "seed": seed, "process": process, "approximation": approximation,
                             "hurst_hat": fit.hurst, "error": fit.hurst - hurst, "sigma_hat": fit.sigma,
                             "theta_hat": fit.theta, "seconds": time.perf_counter() - start})
    return rows


def model_recovery(epochs: int, paths: int, steps: int, seeds: int) -> list[dict]:
    """``FractionalLatentSDE(1)`` with its defaults, ``fit(data, epochs=epochs)`` on exact fBM (on [0, 1]) and
    stationary fOU (theta 1 on [0, 2], drift not given to the model) paths, observed exactly; ``hurst_``."""
    import torch

    from sde.fractional import paths_to_series
    from sde.models import FractionalLatentSDE
    from sde.simulate import fbm, fou

    rows = []
    for process in ("fbm", "fou"):
        for hurst in HURSTS:
            for seed in range(seeds):
                torch.manual_seed(seed)
                if process == "fbm":
                    x = fbm(paths, steps, hurst, t_end=1.0, generator=400 + seed)
                else:
                    x = fou(paths, steps, hurst, theta=1.0, t_end=2.0, generator=500 + seed)
                data = paths_to_series(x, 1.0 if process == "fbm" else 2.0)
                model = FractionalLatentSDE(1)
                start = time.perf_counter()
                model.fit(data, epochs=epochs, progress=False, seed=seed)
                fit = model.hurst_fit_
                rows.append({"process": process, "hurst": hurst, "seed": seed, "hurst_hat": model.hurst_,
                             "error": model.hurst_ - hurst, "likelihood_hurst": fit.hurst, "low": fit.low,
                             "high": fit.high, "start": fit.start, "theta": fit.theta, "noise_ratio": fit.noise_ratio,
                             "seconds": time.perf_counter() - start, "epochs": epochs, "paths": paths,
                             "steps": steps})
    return rows


def elbo_only_recovery(epochs: int) -> list[dict]:
    """The ELBO alone (``init_hurst=False``, H starting at 0.5) on noisy fOU paths: the bias the likelihood start
    removes. A linear prior drift as in the paper's fOU experiments, and the default MLP drift."""
    import torch

    from sde.fractional import paths_to_series
    from sde.models import FractionalLatentSDE
    from sde.simulate import fou

    class LinearDrift(torch.nn.Module):
        """``h(z) = a z``: the fOU prior of the paper's fOU experiments, its rate learned."""

        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor(-0.5))

        def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            return self.a * z

    rows = []
    paths, steps = 64, 50
    for hurst in (0.2, 0.5, 0.8):
        for prior in ("linear", "mlp"):
            torch.manual_seed(0)
            data = paths_to_series(fou(paths, steps, hurst, theta=1.0, t_end=2.0, generator=300), 2.0,
                                   noise_std=0.05, generator=301)
            model = FractionalLatentSDE(1, latent_size=1, hidden_size=32, context_size=16, step_size=0.01,
                                        noise_init=0.1, init_hurst=False,
                                        prior_drift=LinearDrift() if prior == "linear" else None)
            start = time.perf_counter()
            model.fit(data, epochs=epochs, batch_size=32, lr=2e-2, progress=False)
            rows.append({"hurst": hurst, "prior": prior, "hurst_hat": model.hurst_, "error": model.hurst_ - hurst,
                         "seconds": time.perf_counter() - start, "epochs": epochs, "paths": paths, "steps": steps})
    return rows


def error_against_k() -> list[dict]:
    import numpy as np

    from sde.fractional import MarkovFBM, approximation_cost, fbm_covariance, optimal_weights, ou_rates

    t = np.linspace(0.02, 1.0, 50)
    rows = []
    for hurst in (0.2, 0.3, 0.7, 0.8):
        for K in (1, 3, 5, 7, 9, 11):
            gamma = ou_rates(K, r=4.0)
            ma = MarkovFBM(gamma, optimal_weights(gamma, hurst), hurst)
            err = np.abs(ma.covariance(t[:, None], t[None, :]) - fbm_covariance(t[:, None], t[None, :], hurst)).max()
            rows.append({"hurst": hurst, "K": K, "l2_cost": approximation_cost(gamma, hurst),
                         "max_cov_error": float(err)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--paths", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--model", action="store_true", help="also train FractionalLatentSDE on fBM and fOU paths")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of the model rows")
    parser.add_argument("--model-paths", type=int, default=16)
    parser.add_argument("--model-steps", type=int, default=100)
    parser.add_argument("--model-seeds", type=int, default=2)
    parser.add_argument("--elbo-epochs", type=int, default=60, help="epochs of the ELBO-only rows (0: none)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables here")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    print("command:", _bench.reproduce_command(__file__))
    env = _bench.base_environment()
    print("environment:", json.dumps(env))

    rows = recovery(args.seeds, args.paths, args.steps)
    print(f"\nHurst recovery: {args.paths} paths x {args.steps} steps, {args.seeds} seeds; max |H_hat - H| per cell")
    settings = sorted({(r["process"], r["approximation"]) for r in rows})
    print(f"{'H':>5} " + " ".join(f"{p + '/' + a:>18}" for p, a in settings))
    for hurst in HURSTS:
        cells = []
        for p, a in settings:
            errs = [abs(r["error"]) for r in rows
                    if r["hurst"] == hurst and r["process"] == p and r["approximation"] == a]
            cells.append(f"{max(errs):18.3f}")
        print(f"{hurst:5.1f} " + " ".join(cells))
    for p, a in settings:
        errs = [abs(r["error"]) for r in rows if r["process"] == p and r["approximation"] == a]
        secs = [r["seconds"] for r in rows if r["process"] == p and r["approximation"] == a]
        print(f"  {p}/{a}: max |err| {max(errs):.3f}, mean |err| {sum(errs) / len(errs):.3f}, "
              f"within 0.05: {sum(e <= 0.05 for e in errs)}/{len(errs)}, mean fit {sum(secs) / len(secs):.2f} s")

    k_rows = error_against_k()
    print("\nMA-fBM error against K (r = 4, T = 1): integrated squared error / T, max covariance error")
    for row in k_rows:
        print(f"  H={row['hurst']:.1f} K={row['K']:2d}: {row['l2_cost']:.5f}  {row['max_cov_error']:.4f}")

    model_rows, elbo_rows, lines = [], [], []
    if args.model:
        model_rows = model_recovery(args.epochs, args.model_paths, args.model_steps, args.model_seeds)
        lines.append(f"FractionalLatentSDE(1) defaults, fit(epochs={args.epochs}) on {args.model_paths} exact paths x "
                     f"{args.model_steps} steps (fBM on [0, 1]; fOU theta 1 on [0, 2], drift not given), "
                     f"{args.model_seeds} seeds: hurst_ (likelihood start, support) per seed")
        lines.append("| process | H | hurst_ - H per seed | max abs error |")
        lines.append("|---|---|---|---|")
        for process in ("fbm", "fou"):
            for hurst in HURSTS:
                cell = [r for r in model_rows if r["process"] == process and r["hurst"] == hurst]
                text = ", ".join(f"{r['error']:+.3f} ({r['likelihood_hurst']:.3f}, [{r['low']:.3f}, {r['high']:.3f}])"
                                 for r in cell)
                lines.append(f"| {process} | {hurst:.1f} | {text} | {max(abs(r['error']) for r in cell):.3f} |")
        errs = [abs(r["error"]) for r in model_rows]
        lines.append(f"model: max |hurst_ - H| {max(errs):.3f}, mean {sum(errs) / len(errs):.3f}, within 0.05: "
                     f"{sum(e <= 0.05 for e in errs)}/{len(errs)}, mean fit "
                     f"{sum(r['seconds'] for r in model_rows) / len(model_rows):.1f} s")
        if args.elbo_epochs > 0:
            elbo_rows = elbo_only_recovery(args.elbo_epochs)
            lines.append(f"ELBO alone (init_hurst=False, H from 0.5; {args.elbo_epochs} epochs, lr 2e-2, 64 noisy fOU "
                         "paths x 50 steps on [0, 2], theta 1, noise 0.05):")
            for row in elbo_rows:
                lines.append(f"  H={row['hurst']:.1f} prior {row['prior']:6s}: hurst_ = {row['hurst_hat']:.3f} "
                             f"({row['seconds']:.0f} s)")
        print()
        print("\n".join(lines))
    if args.markdown is not None:
        text = ["# Hurst index recovery (benchmarks/fractional_hurst.py)", "", "```",
                _bench.reproduce_command(__file__), json.dumps(env), "```", "",
                f"estimate_hurst, {args.paths} paths x {args.steps} steps, {args.seeds} seeds:"]
        for p, a in settings:
            errs = [abs(r["error"]) for r in rows if (r["process"], r["approximation"]) == (p, a)]
            text.append(f"- {p}/{a}: max |err| {max(errs):.3f}, within 0.05: {sum(e <= 0.05 for e in errs)}/{len(errs)}")
        text += ["", *lines, ""]
        args.markdown.write_text("\n".join(text))

    if args.json is not None:
        _bench.write_json_atomically(args.json, {"command": _bench.reproduce_command(__file__), "environment": env,
                                                 "recovery": rows, "error_against_k": k_rows, "model": model_rows,
                                                 "elbo_only": elbo_rows})


if __name__ == "__main__":
    main()
