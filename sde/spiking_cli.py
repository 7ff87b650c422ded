"""The ``sde spiking`` commands: simulate spike trains of a stochastic spiking network, and fit its input
current (or other parameters) to observed trains by signature-kernel MMD (:class:`sde.models.SpikingSDE`).

```
sde spiking simulate --neurons 1 --mu 1.2 --sigma 0.2 --t1 5 --trials 64 --seed 0 --out trains.csv \\
    --plot raster.png --json
sde spiking fit --data trains.csv --mu0 0.8 --sigma 0.2 --epochs 30 --json --out run/
```

``simulate`` writes the trains as CSV (``trial,neuron,time`` with a first line holding the window and the
numbers of trials and neurons; :func:`sde.models.spiking.write_spike_trains`). ``fit`` reads such a file
(``--t1`` is needed only when the file lacks that first line), builds the model with the given fixed
parameters and starting values, learns ``--param`` (default ``mu``) and prints the fitted parameters, the
MMD^2 to the data before and after (the same seeded model samples) and the CPU seconds; ``--out DIR`` keeps
``model.json`` (the model's ``to_dict()``, loadable by :func:`tpp.table.load` once ``spiking-sde`` is in the
table) and ``result.json``. Every file is written atomically. Bad input: one ``error:`` line, exit code 2
(:func:`tpp.commandline.user_errors`).

Registered in :mod:`sde.cli` as a sub-command group: ``app.add_typer(spiking_app, name="spiking")``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from tpp.commandline import JsonOption, LrOption, SeedOption, command_app, echo_result, in_range, user_errors

_POSITIVE = in_range(0.0, float("inf"), low_open=True, high_open=True)

__all__ = ["fit", "simulate", "spiking_app"]

spiking_app = command_app("Event SDEs for stochastic spiking networks: simulate spike trains, fit them by "
                          "signature-kernel MMD.")

MODEL_FILE = "model.json"
RESULT_FILE = "result.json"

MuOption = Annotated[Optional[list[float]], typer.Option(
    "--mu", help="Input current: one value for every neuron, or one --mu per neuron.")]
SigmaOption = Annotated[Optional[float], typer.Option(
    min=0.0, help="Voltage noise level (omit or 0: no voltage noise; spikes still come at random times).")]
TauOption = Annotated[float, typer.Option(callback=_POSITIVE, help="Membrane time constant.")]
ThetaOption = Annotated[float, typer.Option(help="Centre of the intensity exp(beta (v - theta)).")]
BetaOption = Annotated[float, typer.Option(callback=_POSITIVE, help="Steepness of the intensity.")]
RateOption = Annotated[float, typer.Option(callback=_POSITIVE, help="Intensity at v = theta.")]
DtOption = Annotated[float, typer.Option("--dt", callback=_POSITIVE, help="Euler step of the simulation.")]
WeightsOption = Annotated[Optional[str], typer.Option(
    help="Synaptic weights as JSON [[w_00, w_01, ...], ...] (w[m][n]: jump of n's current at a spike of m).")]


def _vector(values: list[float] | None, neurons: int, name: str, default: float) -> Any:
    """One value for all neurons or one per neuron (a bad count is a user error)."""
    if not values:
        return default
    if len(values) == 1:
        return values[0]
    if len(values) != neurons:
        raise ValueError(f"--{name}: give one value or one per neuron ({neurons}), got {len(values)}")
    return list(values)


def _weights(text: str | None, neurons: int) -> Any:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--weights is not JSON ({exc})") from None
    ok = isinstance(value, list) and len(value) == neurons and all(
        isinstance(row, list) and len(row) == neurons and all(isinstance(x, (int, float)) for x in row)
        for row in value)
    if not ok:
        raise ValueError(f"--weights must be a {neurons} x {neurons} JSON list of numbers, got {text!r}")
    return value


def _model(neurons: int, mu: Any, sigma: float | None, tau: float, theta: float, beta: float, rate: float, dt: float,
           weights: Any) -> Any:
    from sde.models.spiking import SpikingSDE

    return SpikingSDE(neurons, mu=mu, sigma=sigma if sigma else None, tau=tau, theta=theta, beta=beta, rate=rate,
                      dt0=dt, weights=weights)


def _save_figure(fig: Any, path: Path) -> None:
    from tpp.io import atomic_write

    with atomic_write(path, path.suffix or ".png") as tmp:
        fig.savefig(tmp, format=(path.suffix.lstrip(".") or "png"), dpi=120, bbox_inches="tight")


@user_errors
def simulate(
    out: Annotated[Path, typer.Option(help="CSV file for the trains (trial,neuron,time).")],
    t1: Annotated[float, typer.Option("--t1", callback=_POSITIVE, help="Window end (the window is [0, t1]).")],
    neurons: Annotated[int, typer.Option(min=1, help="Number of neurons.")] = 1,
    mu: MuOption = None,
    sigma: SigmaOption = 0.2,
    tau: TauOption = 1.0,
    theta: ThetaOption = 1.0,
    beta: BetaOption = 5.0,
    rate: RateOption = 1.0,
    dt: DtOption = 1e-2,
    weights: WeightsOption = None,
    trials: Annotated[int, typer.Option(min=1, help="Number of trials (independent samples).")] = 64,
    max_spikes: Annotated[int, typer.Option("--max-spikes", min=1, help="Most spikes per trial kept.")] = 256,
    seed: SeedOption = 0,
    plot: Annotated[Optional[Path], typer.Option(help="PNG file for a spike raster of the first trials.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Simulate spike trains of a network of stochastic leaky integrate-and-fire neurons and write them as CSV."""
    import torch

    from sde.models.spiking import plot_spike_raster, write_spike_trains

    start = time.process_time()
    model = _model(neurons, _vector(mu, neurons, "mu", 1.5), sigma, tau, theta, beta, rate, dt,
                   _weights(weights, neurons))
    with torch.no_grad():
        trains = model(t1, max_spikes=max_spikes, num_samples=trials, generator=torch.Generator().manual_seed(seed))
    write_spike_trains(trains, out)
    if plot is not None:
        import matplotlib.pyplot as plt

        fig = plot_spike_raster(trains[: min(trials, 20)], title=f"{min(trials, 20)} of {trials} trials")
        _save_figure(fig, plot)
        plt.close(fig)
    counts = trains.counts.double()
    result = {"command": "simulate", "out": out, "plot": plot, "trials": trials, "neurons": neurons, "t1": t1,
              "spikes": int(counts.sum()), "mean_rate": (counts.mean(0) / t1).tolist(),
              "truncated_trials": int(trains.truncated.sum()), "seed": seed,
              "cpu_seconds": time.process_time() - start}
    if result["truncated_trials"]:
        typer.echo(f"warning: {result['truncated_trials']} trials hit --max-spikes {max_spikes}; later spikes are "
                   "not written (raise --max-spikes)", err=True)
    echo_result(result, json_output)


@user_errors
def fit(
    data: Annotated[Path, typer.Option(help="CSV file of spike trains (trial,neuron,time), e.g. from simulate.")],
    t1: Annotated[Optional[float], typer.Option("--t1", help="Window end, when the file does not say it.")] = None,
    mu0: Annotated[Optional[list[float]], typer.Option(
        "--mu0", help="Starting input current (one value, or one per neuron).")] = None,
    sigma: SigmaOption = 0.2,
    tau: TauOption = 1.0,
    theta: ThetaOption = 1.0,
    beta: BetaOption = 5.0,
    rate: RateOption = 1.0,
    dt: DtOption = 1e-2,
    weights: WeightsOption = None,
    param: Annotated[Optional[list[str]], typer.Option(
        "--param", help="Parameter to learn (repeat for several): mu, weights, sigma, theta, v_reset.")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the trials (ceil(trials / batch) steps each).")] = 30,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, help="Observed trials per step.")] = 32,
    num_samples: Annotated[Optional[int], typer.Option(
        "--num-samples", min=2, help="Simulated trains per step (default: the batch size).")] = None,
    lr: LrOption = 0.05,
    average: Annotated[int, typer.Option(min=0, help="End at the mean of the last N iterates (0: the last one).")] = 0,
    seed: SeedOption = 0,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Folder for model.json and result.json.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Fit a spiking network's parameters to observed spike trains by signature-kernel MMD."""
    from sde.models.spiking import read_spike_trains

    start = time.process_time()
    trains = read_spike_trains(data, t1=t1)
    n = trains.num_neurons
    parameters = tuple(param or ("mu",))
    model = _model(n, _vector(mu0, n, "mu0", 1.0), sigma, tau, theta, beta, rate, dt, _weights(weights, n))
    if "sigma" in parameters and model.sigma is None:
        raise ValueError("--param sigma needs a noise level to start from: give --sigma > 0")
    model.count_scale = model.scale_for(trains)  # fixed before the first MMD, so before and after compare alike
    before = model.mmd(trains, seed=seed)
    model.fit(trains, epochs=epochs, batch_size=batch_size, num_samples=num_samples, lr=lr, seed=seed,
              parameters=parameters, average=average, progress=progress)
    after = model.mmd(trains, seed=seed)
    fitted = {name: getattr(model, name).detach().cpu().tolist() for name in parameters}
    result = {"command": "fit", "data": data, "trials": len(trains), "neurons": n, "t0": trains.t0, "t1": trains.t1,
              "parameters": fitted, "mmd_before": before, "mmd_after": after, "steps": len(model.fit_history_),
              "epochs": epochs, "batch_size": batch_size, "lr": lr, "average": average, "seed": seed,
              "count_scale": model.count_scale, "cpu_seconds": time.process_time() - start}
    if out is not None:
        from tpp.commandline import jsonable
        from tpp.io import atomic_write

        for name, payload in ((MODEL_FILE, model.to_dict()), (RESULT_FILE, jsonable(result))):
            with atomic_write(out / name, ".json") as tmp:
                tmp.write_text(json.dumps(payload, indent=2, allow_nan=False))
        result["out"] = out
    echo_result(result, json_output)


spiking_app.command("simulate")(simulate)
spiking_app.command("fit")(fit)
