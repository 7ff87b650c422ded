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

Usage: ``nice -n 10 .venv/bin/python benchmarks/langevin_flow.py [--epochs 120] [--json
benchmarks/results/langevin_flow.json]``
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
    parser.add_argument("--seed", type=int, default=0)
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
    data = lorenz_spikes(args.trials, args.neurons, args.bins, args.bin_size, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(args.trials)
    n_train = int(0.8 * args.trials)
    train_idx, test_idx = np.sort(order[:n_train]), np.sort(order[n_train:])
    held_in = np.arange(args.neurons - args.held_out)
    held_out = np.arange(args.neurons - args.held_out, args.neurons)
    train = to_series(data.counts[train_idx][..., held_in], data.times)
    test = to_series(data.counts[test_idx][..., held_in], data.times)
    print(f"data: {args.trials} trials x {args.bins} bins of {args.bin_size} s, {len(held_in)} held-in + "
          f"{len(held_out)} held-out neurons, {data.counts.mean() / args.bin_size:.1f} spikes/s per neuron",
          flush=True)
    rows = []
    common = {"latent_size": args.latent, "hidden_size": 64, "context_size": 32, "step_size": args.step_size,
              "kl_warmup": args.kl_warmup}
    for name in args.models.split(","):
        torch.manual_seed(args.seed)
        if name == "langevin":
            model = LangevinFlow(len(held_in), noise=args.noise, stiffness=args.stiffness, **common)
        elif name == "latent-sde":
            model = PoissonLatentSDE(len(held_in), **common)
        else:
            raise SystemExit(f"unknown model {name!r}: langevin or latent-sde")
        rows.append(run_model(name, model, train, test, data, held_in, held_out, test_idx, train_idx, args))
    if args.grasshopper_epochs > 0:
        rows.append(grasshopper(args))
    if args.json is not None:
        _bench.write_json_atomically(args.json, {"command": _bench.reproduce_command(__file__), "environment": env,
                                                 "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows})


if __name__ == "__main__":
    main()
