"""The input-current recovery of ``benchmarks/event_sde.py`` with the torch twin: :meth:`SpikingSDE.fit`.

Problem (as the JAX fit): one stochastic neuron (``mode="intensity"``, ``lambda(v) = exp(5 (v - 1))``,
``sigma = 0.2``, ``tau = 1``, Euler on a 1e-2 grid, window ``[0, 5]``). Data: 64 trains with ``mu* = 1.2``
(drawn by the torch simulator, seed ``10000 + seed``). Model: ``mu`` from 0.8, Adam (lr 0.05), 120 steps,
each comparing 32 fresh model trains with 32 random data trains by the unbiased signature-kernel MMD^2 (rbf
static kernel, dyadic order 1, counts scaled by ``1 / (2 x mean count)``), gradients through the spike times
by autograd. Reported, per run: the last iterate, the mean of the last 20 iterates (the JAX benchmark's
estimate, the fit's ``average=20``), their relative errors (goal < 5%), CPU seconds (``time.process_time``,
one thread) and wall seconds, beside the JAX fit's seconds read from ``benchmarks/results/event_sde.json``.

Runs: the default taper 0.2 on seeds 0 and 1, and ``taper=0`` (the JAX twin's untapered path) on seed 0:
the spike-time gradient of an untapered path misses spikes entering or leaving the window at ``t1`` (see
:func:`sde.models.spiking.spike_path`).

    nice -n 10 .venv/bin/python benchmarks/spiking_torch.py

Results: ``benchmarks/results/spiking_torch.json`` and ``.md``.
"""

from __future__ import annotations

from _bench import base_environment, reproduce_command, write_json_atomically  # sets the threads

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "spiking_torch.json"
TRUE_MU, START_MU, T1 = 1.2, 0.8, 5.0
CONFIG = dict(tau=1.0, sigma=0.2, theta=1.0, beta=5.0, rate=1.0, dt0=1e-2, solver="euler")


def run(seed: int, taper: float, steps: int, average: int) -> dict[str, Any]:
    import torch

    from sde.models.spiking import SpikingSDE

    with torch.no_grad():
        data = SpikingSDE(1, mu=TRUE_MU, **CONFIG)(T1, max_spikes=64, num_samples=64,
                                                   generator=torch.Generator().manual_seed(10_000 + seed))
    model = SpikingSDE(1, mu=START_MU, taper=taper, **CONFIG)
    cpu, wall = time.process_time(), time.perf_counter()
    model.fit(data, steps=steps, batch_size=32, num_samples=32, lr=0.05, seed=seed, progress=False, average=average)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    history = model.fit_history_
    last = history[-1]["mu"][0]
    averaged = float(model.mu.detach()[0])
    out = {"seed": seed, "taper": taper, "steps": steps, "last_mu": last, "averaged_mu": averaged,
           "relative_error_last": abs(last - TRUE_MU) / TRUE_MU,
           "relative_error_averaged": abs(averaged - TRUE_MU) / TRUE_MU,
           "within_5pct": abs(averaged - TRUE_MU) / TRUE_MU < 0.05, "cpu_seconds": cpu, "wall_seconds": wall,
           "mmd_after": model.mmd(data), "count_scale": model.count_scale,
           "data_mean_spikes": float(data.counts.double().mean()),
           "mu_every_10_steps": [h["mu"][0] for h in history[::10]]}
    print(json.dumps(out), flush=True)
    return out


def main(steps: Annotated[int, typer.Option(help="Adam steps per fit")] = 120,
         average: Annotated[int, typer.Option(help="iterates averaged at the end")] = 20,
         seeds: Annotated[int, typer.Option(help="tapered fits on seeds 0..N-1")] = 2,
         untapered: Annotated[bool, typer.Option(help="also the taper=0 fit on seed 0")] = True,
         out: Annotated[Path, typer.Option()] = DEFAULT_OUT) -> None:
    import torch

    command = reproduce_command(__file__)
    env = base_environment() | {"torch": torch.__version__}
    print(command)
    print(json.dumps(env))
    runs = [run(seed, 0.2, steps, average) for seed in range(seeds)]
    if untapered:
        runs.append(run(0, 0.0, steps, average))
    jax_fit: dict[str, Any] = {}
    jax_file = REPO / "benchmarks" / "results" / "event_sde.json"
    if jax_file.exists():
        f = json.loads(jax_file.read_text()).get("fit", {})
        jax_fit = {k: f.get(k) for k in ("recovered_mu", "relative_error", "steps", "batch", "seconds")}
    payload = {"command": command, "environment": env,
               "problem": {"true_mu": TRUE_MU, "start_mu": START_MU, "t1": T1, **CONFIG, "data_trains": 64,
                           "batch": 32, "samples": 32, "lr": 0.05},
               "runs": runs, "jax_fit": jax_fit}
    write_json_atomically(out, payload)
    out.with_suffix(".md").write_text(markdown(payload))
    print(markdown(payload))


def markdown(p: dict[str, Any]) -> str:
    e = p["environment"]
    lines = ["# Input current by signature-kernel MMD: torch SpikingSDE.fit", "", f"Command: `{p['command']}`", "",
             "Environment: " + ", ".join(f"{k} {e.get(k)}" for k in ("python", "cpu", "torch")), "",
             f"true mu {TRUE_MU}, start {START_MU}, [0, {T1}], 64 data trains, 32 model + 32 data trains per step, "
             "Adam lr 0.05", "",
             "| seed | taper | steps | last mu (err) | mean of last 20 (err) | < 5% | CPU s | wall s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in p["runs"]:
        lines.append(f"| {r['seed']} | {r['taper']} | {r['steps']} | {r['last_mu']:.4f} "
                     f"({100 * r['relative_error_last']:.2f}%) | {r['averaged_mu']:.4f} "
                     f"({100 * r['relative_error_averaged']:.2f}%) | {r['within_5pct']} | {r['cpu_seconds']:.0f} | "
                     f"{r['wall_seconds']:.0f} |")
    j = p["jax_fit"]
    if j:
        lines += ["", f"JAX (`benchmarks/event_sde.py`, untapered, its own data): recovered {j['recovered_mu']:.4f} "
                      f"(relative error {100 * j['relative_error']:.2f}%), {j['steps']} steps of {j['batch']} trains, "
                      f"{j['seconds']:.0f} s wall (compilation included)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    typer.run(main)
