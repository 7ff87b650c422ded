"""Langevin flow vs LatentSDE (same Poisson emission) on a Lorenz-driven spiking population: rate R^2 and co-smoothing.

What it measures
----------------
Data: :func:`sde.simulate.lorenz_spikes` (``--trials`` trials of ``--bins`` bins of ``--bin-size`` s,
``--neurons`` neurons, base rate 15 Hz, log-rate gain 1; parameters in its docstring), split by trials
80/20 (train/test), and the neurons split into held-in (the first ``--neurons - --held-out``) and held-out.

Both models (:class:`sde.models.LangevinFlow`, :class:`sde.models.PoissonLatentSDE`: LatentSDE with the same
Poisson emission, encoder, KL annealing and step) are trained by their annealed ELBO on the held-in neurons
of the training trials (``--epochs`` epochs, the one trainer). Then on the test trials:

* ``rate_r2``: the firing-rate R^2 of the held-in neurons' posterior mean rates (``--samples`` paths) against
  the true rates (:func:`sde.spiking_data.rate_r2`, each neuron centred by its mean);
* co-smoothing (Neural Latents Benchmark): a Poisson GLM ``log rate = W x + b`` from the posterior mean latent
  ``x`` (LangevinFlow: the positions ``q``; LatentSDE: its state) to the held-out neurons' counts, fitted on
  the training trials (L-BFGS, L2 1e-3); ``bits_per_spike`` of its held-out predictions on the test trials
  against each held-out neuron's constant training rate (:func:`sde.spiking_data.bits_per_spike`), and
  ``heldout_r2`` against their true rates;
* ``test_elbo``: the mean test ELBO per bin (nats).

The issue's checks: LangevinFlow ``rate_r2 >= 0.9`` and at least LatentSDE's; ``bits_per_spike > 0``.
Defaults: latent size 8, hidden 64, context 32, Euler step 0.02 in model time (a trial spans about 1), KL
warm-up 200 steps, LangevinFlow's starting noise sigma = 10 (``--noise``; 1, 3, 20, 30 gave a lower R^2),
120 epochs of batches of 16 at lr 1e-2 (1200 optimiser steps per model).

Then (``--grasshopper-epochs``, 0 to skip) LangevinFlow on the registry's ``grasshopper_spikes_nitime``
binned at 10 ms in 1 s trials (:func:`sde.spiking_data.grasshopper_counts`; 16 train, 4 test trials): the test
importance-weighted log-likelihood per bin against a constant-rate Poisson model.

Seeds (``--seeds``, default 0,1,2): each seed simulates its own population and split; both models are built,
batched and trained with that seed on the same data for the same epochs; the summary is mean +- sd over seeds
and the paired per-seed difference of rate R^2.

Usage: ``nice -n 10 .venv/bin/python benchmarks/langevin_flow.py [--epochs 120] [--seeds 0,1,2] [--json
benchmarks/results/langevin_flow.json]`` (also writes the ``.md`` beside the JSON)
"""

from __future__ import annotations

import _bench  # noqa: F401  (one thread per pool; must come first)

import argparse
import time
from pathlib import Path


def glm_cosmoothing(train_x, train_counts, test_x, bin_size: float, l2: float = 1e-3):
    """Poisson GLM from latents ``[N, T, D]`` to counts ``[N, T, K]``: fitted on train, rates on test (per s)."""
    import torch

    x = torch.as_tensor(train_x, dtype=torch.float64).reshape(-1, train_x.shape[-1])
    y = torch.as_tensor(train_counts, dtype=torch.float64).reshape(-1, train_counts.shape[-1])
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    x = (x - mu) / sd
    W = torch.zeros(x.shape[1], y.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.log(y.mean(0).clamp_min(1e-3)).clone().requires_grad_(True)
    opt = torch.optim.LBFGS([W, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        eta = x @ W + b
        loss = (eta.exp() - y * eta).mean() + l2 * (W**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    xt = (torch.as_tensor(test_x, dtype=torch.float64) - mu) / sd
    with torch.no_grad():
        return ((xt @ W + b).exp() / bin_size).numpy()


def run_model(name: str, model, train, test, data, held_in, held_out, test_idx, train_idx, args) -> dict:
    import numpy as np
    import torch

    from sde.models._base import seeded
    from sde.spiking_data import bits_per_spike, rate_r2

    start = time.perf_counter()
    model.fit(train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=False)
    seconds = time.perf_counter() - start
    model.eval()
    with seeded(0):
        rates = model.rates(test, num_samples=args.samples).mean(0).numpy()
        with torch.no_grad():
            elbo = float(model.elbo(test, num_samples=4).mean()) / test.values.shape[1]

    def latent(batch):
        with seeded(1):
            if hasattr(model, "latents"):
                return model.latents(batch, num_samples=args.samples).mean(0).numpy()
            from sde.models.latent import _Observed

            obs = _Observed(model, batch)
            rel = obs.s
            with torch.no_grad():
                return model._latent_paths(obs, rel, args.samples).mean(0).numpy()

    true = data.rates
    r2 = rate_r2(rates, true[test_idx][..., held_in])
    x_train, x_test = latent(train), latent(test)
    out_rates = glm_cosmoothing(x_train, data.counts[train_idx][..., held_out], x_test, args.bin_size)
    constant = data.counts[train_idx][..., held_out].reshape(-1, len(held_out)).mean(0) / args.bin_size
    bps = bits_per_spike(out_rates, data.counts[test_idx][..., held_out], args.bin_size, constant)
    heldout_r2 = rate_r2(out_rates, true[test_idx][..., held_out])
    row = {"model": name, "rate_r2": r2, "bits_per_spike": bps, "heldout_r2": heldout_r2, "test_elbo_per_bin": elbo,
           "train_seconds": seconds, "epochs": args.epochs}
    print(f"{name:>16}  rate R^2 {r2:.4f}  held-out bits/spike {bps:.4f}  held-out R^2 {heldout_r2:.4f}  "
          f"test ELBO/bin {elbo:.3f}  train {seconds:.0f} s", flush=True)
    return row


def grasshopper(args) -> dict:
    """LangevinFlow on the grasshopper receptor neuron (10 ms bins, 1 s trials; 16 train / 4 test trials): the
    test importance-weighted log-likelihood per bin against a constant-rate Poisson model (nats)."""
    import math

    import numpy as np
    import torch

    from sde.models import LangevinFlow
    from sde.spiking_data import grasshopper_counts

    batch = grasshopper_counts(0.01, 1.0)
    order = np.random.default_rng(args.seed).permutation(batch.values.shape[0])
    train, test = batch[torch.as_tensor(np.sort(order[:16]))], batch[torch.as_tensor(np.sort(order[16:]))]
    torch.manual_seed(args.seed)
    model = LangevinFlow(1, latent_size=2, hidden_size=32, context_size=16, step_size=args.step_size, kl_warmup=100)
    start = time.perf_counter()
    model.fit(train, epochs=args.grasshopper_epochs, batch_size=4, lr=args.lr, seed=args.seed, progress=False)
    seconds = time.perf_counter() - start
    nats = model.score(test, num_samples=64)
    rate = float(train.values.mean())  # spikes per bin
    y = test.values.numpy()
    constant = float((y * math.log(rate) - rate - np.vectorize(math.lgamma)(y + 1)).mean())
    print(f"     grasshopper  test log-lik/bin {nats:.4f} (IWAE, 64 paths) vs constant rate {constant:.4f} nats; "
          f"train {seconds:.0f} s", flush=True)
    return {"model": "langevin (grasshopper)", "test_loglik_per_bin": nats, "constant_rate_per_bin": constant,
            "train_seconds": seconds, "epochs": args.grasshopper_epochs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--neurons", type=int, default=50)
    parser.add_argument("--held-out", type=int, default=10)
    parser.add_argument("--bins", type=int, default=100)
    parser.add_argument("--bin-size", type=float, default=0.01)
    parser.add_argument("--epochs", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--latent", type=int, default=8)
    parser.add_argument("--step-size", type=float, default=0.02)
    parser.add_argument("--kl-warmup", type=int, default=200)
    parser.add_argument("--noise", type=float, default=10.0, help="LangevinFlow's starting sigma")
    parser.add_argument("--stiffness", type=float, default=10.0, help="LangevinFlow's starting stiffness scale")
    parser.add_argument("--seeds", default="0,1,2", help="data and model seeds, comma separated (mean +- sd)")
    parser.add_argument("--models", default="langevin,latent-sde")
    parser.add_argument("--grasshopper-epochs", type=int, default=30,
                        help="epochs of the grasshopper fit (0: skip; needs the data under TPP_DATA_DIR)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import numpy as np
    import torch

    from sde.models import LangevinFlow, PoissonLatentSDE
    from sde.simulate import lorenz_spikes
    from sde.spiking_data import to_series

    print("command:", _bench.reproduce_command(__file__))
    env = _bench.base_environment()
    print("environment:", env)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.models.split(",")
    for name in names:
        if name not in ("langevin", "latent-sde"):
            raise SystemExit(f"unknown model {name!r}: langevin or latent-sde")
    rows = []
    common = {"latent_size": args.latent, "hidden_size": 64, "context_size": 32, "step_size": args.step_size,
              "kl_warmup": args.kl_warmup}
    for seed in seeds:
        # each seed: its own simulated population and split, and the same seed for both models' weights and
        # batches, so the two models see identical data, epochs and optimiser steps
        args.seed = seed
        data = lorenz_spikes(args.trials, args.neurons, args.bins, args.bin_size, seed=seed)
        rng = np.random.default_rng(seed)
        order = rng.permutation(args.trials)
        n_train = int(0.8 * args.trials)
        train_idx, test_idx = np.sort(order[:n_train]), np.sort(order[n_train:])
        held_in = np.arange(args.neurons - args.held_out)
        held_out = np.arange(args.neurons - args.held_out, args.neurons)
        train = to_series(data.counts[train_idx][..., held_in], data.times)
        test = to_series(data.counts[test_idx][..., held_in], data.times)
        print(f"seed {seed} data: {args.trials} trials x {args.bins} bins of {args.bin_size} s, {len(held_in)} "
              f"held-in + {len(held_out)} held-out neurons, {data.counts.mean() / args.bin_size:.1f} spikes/s per "
              "neuron", flush=True)
        for name in names:
            torch.manual_seed(seed)
            if name == "langevin":
                model = LangevinFlow(len(held_in), noise=args.noise, stiffness=args.stiffness, **common)
            else:
                model = PoissonLatentSDE(len(held_in), **common)
            row = run_model(name, model, train, test, data, held_in, held_out, test_idx, train_idx, args)
            row["seed"] = seed
            rows.append(row)
    summary = summarise(rows, names)
    for name, stats in summary.items():
        print(f"{name:>16}  " + "  ".join(f"{k} {v['mean']:.4f} +- {v['sd']:.4f}" for k, v in stats.items()
                                          if k != "paired"), flush=True)
    if "langevin" in summary and "latent-sde" in summary:
        diff = summary["langevin"]["paired"]
        print(f"langevin - latent-sde rate R^2 per seed: {diff['per_seed']} (mean {diff['mean']:.4f} +- "
              f"{diff['sd']:.4f})", flush=True)
    if args.grasshopper_epochs > 0:
        args.seed = seeds[0]
        rows.append(grasshopper(args))
    if args.json is not None:
        payload = {"command": _bench.reproduce_command(__file__), "environment": env,
                   "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "summary": summary}
        _bench.write_json_atomically(args.json, payload)
        args.json.with_suffix(".md").write_text(markdown(payload))


def summarise(rows: list[dict], names: list[str]) -> dict:
    """Mean and sample sd over seeds of each model's metrics, and (under ``langevin``) the paired
    per-seed difference of rate R^2 against ``latent-sde``."""
    import numpy as np

    metrics = ("rate_r2", "bits_per_spike", "heldout_r2", "test_elbo_per_bin", "train_seconds")
    out: dict = {}
    for name in names:
        mine = [r for r in rows if r.get("model") == name]
        out[name] = {m: {"mean": float(np.mean([r[m] for r in mine])),
                         "sd": float(np.std([r[m] for r in mine], ddof=1)) if len(mine) > 1 else 0.0,
                         "n": len(mine)} for m in metrics}
    if "langevin" in names and "latent-sde" in names:
        by_seed = {r["seed"]: r["rate_r2"] for r in rows if r.get("model") == "latent-sde"}
        diffs = [r["rate_r2"] - by_seed[r["seed"]] for r in rows if r.get("model") == "langevin"]
        out["langevin"]["paired"] = {"per_seed": [round(d, 4) for d in diffs], "mean": float(np.mean(diffs)),
                                     "sd": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0}
    return out


def markdown(payload: dict) -> str:
    """The result file: command, environment, per-seed rows and the mean +- sd table."""
    env = payload["environment"]
    lines = ["# LangevinFlow vs LatentSDE (same Poisson emission) on the Lorenz-driven spiking population", "",
             f"Command: `{payload['command']}`", "",
             f"Environment: python {env['python']}, torch {env['torch']}, numpy {env['numpy']}, {env['cpu']} "
             f"({env['cpu_count']} cores, {env['torch_threads']} torch thread)", "",
             "Both models: the same data, split, epochs, batches, seed, step, encoder and KL warm-up per seed.", "",
             "| model | rate R^2 | held-out bits/spike | held-out R^2 | test ELBO/bin | train s |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, stats in payload["summary"].items():
        cells = [f"{stats[m]['mean']:.4f} ± {stats[m]['sd']:.4f}" for m in
                 ("rate_r2", "bits_per_spike", "heldout_r2", "test_elbo_per_bin")]
        lines.append(f"| {name} (n={stats['rate_r2']['n']}) | " + " | ".join(cells)
                     + f" | {stats['train_seconds']['mean']:.0f} |")
    paired = payload["summary"].get("langevin", {}).get("paired")
    if paired:
        lines += ["", f"Paired rate R^2 difference langevin - latent-sde per seed: {paired['per_seed']} "
                      f"(mean {paired['mean']:.4f} ± {paired['sd']:.4f})."]
    lines += ["", "Per seed:", "", "| seed | model | rate R^2 | bits/spike | held-out R^2 | test ELBO/bin |",
              "| --- | --- | --- | --- | --- | --- |"]
    for r in payload["rows"]:
        if "seed" in r:
            lines.append(f"| {r['seed']} | {r['model']} | {r['rate_r2']:.4f} | {r['bits_per_spike']:.4f} | "
                         f"{r['heldout_r2']:.4f} | {r['test_elbo_per_bin']:.3f} |")
    for r in payload["rows"]:
        if "test_loglik_per_bin" in r:
            lines += ["", f"Grasshopper (registry `grasshopper_spikes_nitime`): test log-lik/bin "
                          f"{r['test_loglik_per_bin']:.4f} vs constant rate {r['constant_rate_per_bin']:.4f} nats."]
    return "\n".join(lines) + "\n"

if __name__ == "__main__":
    main()
