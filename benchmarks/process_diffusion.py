"""Stochastic process diffusion (``sde.models.ProcessDiffusion``): GP / OU noise against independent noise.

What it measures
----------------
Per synthetic set of ``sde.diffusion_data`` (default: ``ou`` and ``sine``, irregular times, ``--length``
rows per series) and per noise process (``gp``, ``ou``, ``independent``), one model of the same size is
trained with the one trainer (same seed, epochs, batch, learning rate), then scored on held-out series:

* ``test_ll``: the exact log-likelihood through the probability-flow ODE (dopri5, ``--rtol``), nats per
  series, mean over ``--test-ll`` series, with the paired difference to independent noise and its
  standard error (same series);
* ``mmd``: the unbiased signature-kernel MMD^2 (``sde.metrics.signature_mmd``, RBF static kernel
  with sigma 1, dyadic order 1; inf if a sample is not finite) between ``--test-mmd`` held-out series
  and one generated sample at each of their own time grids; paths are ``(t / t_end, standardised value)``. ``mmd_floor`` is the same statistic between
  two independent real test sets (what a perfect model would reach, up to noise).

* ``true_ll`` (``ou`` only): the exact log density of the same series under the generator, the ceiling.

``--predict`` is the denoiser's output (``ProcessDiffusion(output=...)``): ``noise`` (the model's default, the
correlated noise ``C z``) or ``white`` (``z``, what the first runs used; GP/OU noise lost to independent
noise with it). Independent noise is the same model either way (``C = I``).

``--ddpm`` adds the discrete (DDPM) version with the first noise on the first set for comparison. The
results are rewritten after every model, so a stopped run keeps what it finished. One thread.

    .venv/bin/python benchmarks/process_diffusion.py
    .venv/bin/python benchmarks/process_diffusion.py --sets ou --epochs 5 --test-ll 4   # a smoke run

Results: ``benchmarks/results/process_diffusion.json`` and ``.md``.
"""

from __future__ import annotations

from _bench import base_environment, reproduce_command, write_json_atomically  # sets the threads

import math
import time
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from sde import diffusion_data as dd
from sde.metrics import signature_mmd
from sde.models import ProcessDiffusion
from sde.series import SeriesBatch
from sde.solvers import recording

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "process_diffusion.json"
T_END = {"ou": 63.0, "cir": 63.0, "lorenz": 2.0, "sine": 10.0, "predator_prey": 10.0, "sink": 3.0}


def _paths(batch: SeriesBatch, values: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
           t_end: float) -> torch.Tensor:
    """``[N, L, 1 + C]`` paths ``(t / t_end, standardised values)`` of equal-length series."""
    return torch.cat([batch.time[..., None] / t_end, (values - mean) / std], -1).to(torch.float64)


def true_log_likelihood(name: str, batch: SeriesBatch) -> torch.Tensor | None:
    """``[B]`` the exact log density of each series under the generator of the ``ou`` set (its defaults: Gaussian
    transitions, ``x0 ~ N(0, 1)``), the ceiling any model's test likelihood can reach; None for other sets."""
    if name != "ou":
        return None
    mu, theta, sigma = 0.02, 0.1, 0.4  # sde.diffusion_data.ou's defaults, which the benchmark uses
    t, x = batch.time.to(torch.float64), batch.values[..., 0].to(torch.float64)
    t0, h = t[:, :-1], t.diff(dim=1)
    decay = torch.exp(-theta * h)
    mean = decay * x[:, :-1] + mu * ((t0 + h) * (1 - decay) / theta - (1 - decay * (1 + theta * h)) / theta**2)
    var = sigma**2 * -torch.expm1(-2 * theta * h) / (2 * theta)
    steps = -0.5 * ((x[:, 1:] - mean) ** 2 / var + var.log() + math.log(2 * math.pi))
    return steps.sum(1) - 0.5 * (x[:, 0] ** 2 + math.log(2 * math.pi))


def run_one(name: str, noise: str, kind: str, train: SeriesBatch, test_ll: SeriesBatch, test_mmd: SeriesBatch,
            floor_set: SeriesBatch, opts: dict[str, Any]) -> dict[str, Any]:
    torch.manual_seed(opts["seed"])
    model = ProcessDiffusion(train.num_channels, noise=noise, kind=kind, hidden_size=opts["hidden"],
                             num_layers=opts["layers"], num_heads=4, noise_scale=opts["noise_scale"],
                             output=opts["predict"], jitter=opts["jitter"])
    t0 = time.perf_counter()
    model.fit(train, epochs=opts["epochs"], batch_size=opts["batch_size"], lr=opts["lr"], seed=opts["seed"],
              progress=False)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with recording() as stats:
        ll = model.log_likelihood(test_ll, rtol=opts["rtol"], atol=opts["rtol"])
    ll_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    gen = model.sample(test_mmd.time, num_samples=1, seed=opts["seed"])[0]  # [N, L, C] at the test grids
    mean, std = model.channel_mean.double(), model.channel_std.double()
    t_end = T_END[name]
    finite = bool(torch.isfinite(gen).all())
    real = _paths(test_mmd, test_mmd.values, mean, std, t_end)
    mmd = float(signature_mmd(_paths(test_mmd, gen, mean, std, t_end), real, static_kernel="rbf")) if finite \
        else float("inf")
    floor = float(signature_mmd(_paths(floor_set, floor_set.values, mean, std, t_end), real, static_kernel="rbf"))
    mmd_s = time.perf_counter() - t0
    row = {"set": name, "noise": noise, "kind": kind, "test_ll": float(ll.mean()),
           "test_ll_per_row": float(ll.mean()) / test_ll.values.shape[1], "ll": [float(v) for v in ll],
           "mmd": mmd, "mmd_floor": floor, "fit_s": fit_s, "ll_s": ll_s, "ll_nfe": stats[0].nfe if stats else None,
           "mmd_s": mmd_s, "final_train_loss": model.train_result_.history[-1].get("train_nll_per_event")}
    truth = true_log_likelihood(name, test_ll)
    row["true_ll"] = float(truth.mean()) if truth is not None else None
    print(f"{name:6s} {noise:12s} {kind:5s} ll={row['test_ll']:9.3f} (true {row['true_ll']}) mmd={mmd:.5f} "
          f"(floor {floor:.5f}) "
          f"fit {fit_s:.0f}s ll {ll_s:.0f}s ({row['ll_nfe']} nfe) mmd {mmd_s:.0f}s", flush=True)
    return row


def main(
    sets: Annotated[str, typer.Option(help="comma-separated sets of sde.diffusion_data")] = "ou,sine",
    noises: Annotated[str, typer.Option(help="comma-separated noise processes")] = "gp,ou,independent",
    length: Annotated[int, typer.Option(help="rows per series")] = 32,
    n_train: Annotated[int, typer.Option(help="training series")] = 1000,
    test_ll: Annotated[int, typer.Option("--test-ll", help="held-out series for the exact likelihood")] = 32,
    test_mmd: Annotated[int, typer.Option("--test-mmd", help="held-out series for the MMD")] = 200,
    epochs: int = 60, batch_size: int = 64, lr: float = 1e-3, hidden: int = 32, layers: int = 2,
    noise_scale: Annotated[float, typer.Option(help="kernel length, fraction of the series' span")] = 0.1,
    jitter: Annotated[float, typer.Option(help="added to the GP/OU covariance's diagonal (a white nugget)")] = 1e-4,
    predict: Annotated[str, typer.Option(help="denoiser output: 'white' z or the correlated 'noise' C z")] = "noise",
    rtol: Annotated[float, typer.Option(help="dopri5 rtol = atol of the likelihood ODE")] = 1e-3,
    ddpm: Annotated[bool, typer.Option(help="also the DDPM version with the first noise")] = True,
    seed: int = 0,
    out: Path = DEFAULT_OUT,
) -> None:
    command = reproduce_command(__file__)
    env = base_environment()
    print(command)
    print({k: env[k] for k in ("python", "torch", "cpu", "numpy", "scipy")}, flush=True)
    opts = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "hidden": hidden, "layers": layers,
            "noise_scale": noise_scale, "rtol": rtol, "seed": seed,
            "predict": predict, "jitter": jitter}
    rows = []
    for name in sets.split(","):
        train = dd.load(name, n_train, length=length, seed=seed)
        held = dd.load(name, test_ll + 2 * test_mmd, length=length, seed=seed + 1000)
        ll_set, mmd_set, floor_set = held[:test_ll], held[test_ll:test_ll + test_mmd], held[test_ll + test_mmd:]
        runs = [(noise, "sde") for noise in noises.split(",")]
        if ddpm:
            runs.append((noises.split(",")[0], "ddpm"))
        for noise, kind in runs:
            rows.append(run_one(name, noise, kind, train, ll_set, mmd_set, floor_set, opts))
            _gains(rows)
            _write(out, command, env, opts, rows, dict(sets=sets, noises=noises, length=length, n_train=n_train,
                                                       test_ll=test_ll, test_mmd=test_mmd))
        ddpm = False  # the DDPM comparison on the first set only


def _gains(rows: list[dict[str, Any]]) -> None:
    """Paired log-likelihood gain of each row over independent noise on the same set and series."""
    for r in rows:
        base = next((b for b in rows if b["set"] == r["set"] and b["noise"] == "independent" and b["kind"] == "sde"),
                    None)
        if base is not None:
            diff = torch.tensor(r["ll"]) - torch.tensor(base["ll"])
            r["ll_gain_vs_independent"] = float(diff.mean())
            r["ll_gain_se"] = float(diff.std() / math.sqrt(len(diff))) if len(diff) > 1 else float("nan")


def _write(out: Path, command: str, env: dict[str, Any], opts: dict[str, Any], rows: list[dict[str, Any]],
           more: dict[str, Any]) -> None:
    length, n_train, epochs, batch_size, lr = more["length"], more["n_train"], opts["epochs"], opts["batch_size"], \
        opts["lr"]
    hidden, layers, noise_scale, seed, rtol = opts["hidden"], opts["layers"], opts["noise_scale"], opts["seed"], \
        opts["rtol"]
    test_ll, test_mmd = more["test_ll"], more["test_mmd"]
    payload = {"command": command, "environment": env, "options": {**opts, **more}, "rows": rows}
    write_json_atomically(out, payload)
    lines = ["# Stochastic process diffusion: GP / OU noise vs independent noise", "",
             f"Command: `{command}`", "",
             f"Environment: python {env['python']}, torch {env['torch']}, {env['cpu']}, one thread.", "",
             f"Irregular times, {length} rows per series, {n_train} training series, {epochs} epochs, batch "
             f"{batch_size}, lr {lr}, transformer denoiser hidden {hidden} x {layers} layers, noise length "
             f"{noise_scale} of the span, seed {seed}. Test log-likelihood: exact, probability-flow ODE (dopri5, "
             f"rtol = atol = {rtol}), nats per series, mean over {test_ll} held-out series; gain = paired mean "
             f"difference to independent noise +- its standard error. MMD: unbiased signature-kernel MMD^2 over "
             f"{test_mmd} held-out series vs one sample on each of their grids (lower is better; the floor is "
             f"real vs real). Denoiser output: {opts['predict']}; noise nugget (jitter) {opts['jitter']}. True LL: "
             "the exact log density of the same "
             "series under the generator (known for `ou`), the ceiling.", "",
             "| set | noise | kind | test LL (nats/series) | true LL | LL gain vs independent | sig-MMD^2 | MMD floor "
             "| fit s | LL s (nfe) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gain = (f"{r['ll_gain_vs_independent']:+.2f} +- {r['ll_gain_se']:.2f}"
                if "ll_gain_vs_independent" in r else "")
        true = f"{r['true_ll']:.2f}" if r.get("true_ll") is not None else ""
        lines.append(f"| {r['set']} | {r['noise']} | {r['kind']} | {r['test_ll']:.2f} | {true} | {gain} | "
                     f"{r['mmd']:.5f} | {r['mmd_floor']:.5f} | {r['fit_s']:.0f} | {r['ll_s']:.0f} ({r['ll_nfe']}) |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    typer.run(main)
