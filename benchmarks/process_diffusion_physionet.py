"""Stochastic process diffusion on PhysioNet 2012: imputation of held-out observed values (issue 19).

The protocol (Bilos et al., ICML 2023, section "Imputation", which follows CSDI, Tashiro et al., NeurIPS
2021; their public code ``tsdiff/csdi/dataset_physio.py`` and ``experiment.yaml`` in
github.com/morganstanley/MSML, ``papers/Stochastic_Process_Diffusion``): PhysioNet 2012 set A, per stay 10 %
(``testmissingratio`` 0.1; also 0.5 and 0.9 in the paper) of the observed values drawn at random and held
out as the ground truth; the model imputes them from the rest; scored on the held-out values only, after
per-variable standardisation (mean and std of the observed values). Their stays are 48 hourly rows of 35
variables (the last value within each hour, with its exact time: "we keep the actual times of the
observations"); their split is 5-fold, 70 % train / 10 % validation / 20 % test; they report CRPS
(CSDI's, normalised by the sum of ``|y|``) over 100 samples and CSDI the MAE of the sample median.

Ours, and where it differs (stated in the results):

* data: the registry's ``physionet2012`` (set A, 37 variables, exact observation times, one row per
  distinct time: up to 202 rows, no hourly binning), its seeded train and test splits, each cut to a
  seeded subset (``--train``, ``--test`` stays; stays without any observed value dropped);
* held out: :func:`sde.tasks.interpolation_split` with share 0.1: ``round(0.1 n)`` of a stay's ``n``
  observed values, drawn among those strictly between its first and last observed rows (interpolation,
  not extrapolation; CSDI draws among all observed values);
* standardisation: the training stays' per-variable mean and std (CSDI: all stays'); metrics are given in
  both the data's units and standardised units (``*_std``: comparable in kind to the papers' numbers);
* model: :class:`sde.models.ProcessDiffusion` with ``missing="observed"`` -- unconditional, trained on the
  observed entries only (each variable's noise process at its own observation times, loss on observed
  entries), imputing by replacement conditioning. The paper's PhysioNet model is instead CSDI's conditional
  denoiser (the observed values as an input channel, trained on randomly hidden observed values) with GP
  noise in place of white noise. ``--imputation dense`` (default) samples every missing entry of a test stay
  at once (the model is not told which entries were held out: no leak of the measurement pattern), as
  ``sde fit --task interpolate`` does; ``targeted`` samples only the held-out entries (the diffusion lives on
  the observed and held-out entries; it tells the model where a value was measured, so it is reported apart);
* baselines: the per-variable training mean; last observation carried forward (a variable's last observed
  value before the row, else the next one after it, else the mean); linear interpolation in time between a
  variable's neighbouring observations (constant beyond them); ``--latent-sde``: :class:`sde.models.LatentSDE`
  through the same predictive as ``sde fit`` (:func:`sde.tasks.predictive_distribution`).

Metrics on the held-out values: ``mse`` (of the predictive mean), ``mae`` (of the median: CSDI's
deterministic imputation; the mean for the point baselines), in data units and standardised; for the
probabilistic models ``crps_std`` (mean sample CRPS, :func:`sde.metrics.crps_samples`, standardised units),
``crps_norm`` (its sum over the sum of ``|y|``, standardised: CSDI's normalisation, though CSDI computes the
CRPS by a quantile loss at 19 levels) and ``coverage_90`` (share inside the central 90 % sample interval).
Paper numbers (10 % held out, standardised; quoted from memory, the tables were not re-read): CSDI (Tashiro et
al. 2021, tables 2 and 3) CRPS 0.238, MAE 0.217 -- on hourly binned data of 35 variables, 4000 stays, 200 epochs on a GPU: a different data layout and
scale, not a like-for-like comparison.

    .venv/bin/python benchmarks/process_diffusion_physionet.py
    .venv/bin/python benchmarks/process_diffusion_physionet.py --train 64 --test 16 --epochs 1 --noises gp   # smoke

Results: ``benchmarks/results/process_diffusion_physionet.json`` and ``.md`` (rewritten after each model).
"""

from __future__ import annotations

from _bench import base_environment, reproduce_command, write_json_atomically  # sets the threads

import math
import time
import warnings
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from sde.metrics import crps_samples, inside_interval
from sde.models import ProcessDiffusion
from sde.series import SeriesBatch
from sde.tasks import TargetScale, interpolation_split, subsample

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "process_diffusion_physionet.json"
CSDI_PAPER = {"source": "Tashiro et al., CSDI, NeurIPS 2021, tables 2 (CRPS) and 3 (MAE), PhysioNet, 10 % missing; "
                        "quoted from memory, no stored copy of the tables could be read here",
              "crps_norm": 0.238, "mae_std": 0.217}


def load_parts(n_train: int, n_test: int, seed: int) -> tuple[SeriesBatch, SeriesBatch]:
    """Seeded subsets of the registry's train and test splits, stays without any observed value dropped."""
    from sde import datasets

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reader's note about the stays without values: dropped below
        parts = []
        for split, n, key in (("train", n_train, 0), ("test", n_test, 1)):
            batch = datasets.load("physionet2012", split)
            batch = batch[torch.nonzero(batch.observed.flatten(1).any(1)).flatten().numpy()]
            parts.append(subsample(batch, n, seed + key) if n < len(batch) else batch)
    return parts[0], parts[1]


# ---------------------------------------------------------------------------------------------- baselines
def point_baselines(inputs: SeriesBatch, mean: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{name: [B, L, C]}`` point imputations of every entry from the observed entries of ``inputs``."""
    values = inputs.values.to(torch.float64).numpy()
    time_ = inputs.time.to(torch.float64).numpy()
    rows = inputs.mask.numpy()
    B, L, C = values.shape
    locf = np.broadcast_to(mean.numpy(), values.shape).copy()
    linear = locf.copy()
    for b in range(B):
        t = time_[b, rows[b]]
        for c in range(C):
            v = values[b, rows[b], c]
            seen = ~np.isnan(v)
            if not seen.any():
                continue
            ts, vs = t[seen], v[seen]
            idx = np.searchsorted(ts, t, side="right") - 1  # last observation at or before each row
            carried = np.where(idx >= 0, vs[np.clip(idx, 0, None)], vs[0])  # none before: the next one
            n = int(rows[b].sum())
            locf[b, :n, c] = carried
            linear[b, :n, c] = np.interp(t, ts, vs)
    return {"mean": torch.as_tensor(np.broadcast_to(mean.numpy(), values.shape).copy()),
            "locf": torch.as_tensor(locf), "linear": torch.as_tensor(linear)}


# ---------------------------------------------------------------------------------------------- scoring
def score(truth: torch.Tensor, held: torch.Tensor, scale: TargetScale, point: torch.Tensor,
          median: torch.Tensor | None = None, samples: torch.Tensor | None = None) -> dict[str, Any]:
    """Metrics on the held-out entries (see the module docstring)."""
    m, s = (torch.tensor(v, dtype=torch.float64) for v in (scale.mean, scale.std))
    y = truth[held]
    sd = s.expand_as(truth)[held]
    err = point[held] - y
    mid = (median if median is not None else point)[held] - y
    out: dict[str, Any] = {"mse": float((err**2).mean()), "mae": float(mid.abs().mean()),
                           "mse_std": float(((err / sd) ** 2).mean()), "mae_std": float((mid / sd).abs().mean()),
                           "n_values": int(held.sum())}
    if samples is not None:
        ys = (y - m.expand_as(truth)[held]) / sd
        xs = (samples[:, held] - m.expand_as(truth)[held]) / sd
        crps = crps_samples(xs, ys)
        out.update(crps_std=float(crps.mean()), crps_norm=float(crps.sum() / ys.abs().sum()),
                   coverage_90=float(inside_interval(xs, ys, 0.9).double().mean()))
    return out


def run_diffusion(noise: str, train: SeriesBatch, inputs: SeriesBatch, held: torch.Tensor,
                  opts: dict[str, Any]) -> list[tuple[str, dict[str, torch.Tensor], dict[str, Any]]]:
    torch.manual_seed(opts["seed"])
    model = ProcessDiffusion(train.num_channels, missing="observed", noise=noise, noise_scale=opts["noise_scale"],
                             jitter=opts["jitter"] if noise != "independent" else 1e-4, hidden_size=opts["hidden"],
                             num_layers=opts["layers"], num_heads=4, num_steps=opts["steps"])
    start = time.perf_counter()
    model.fit(train, epochs=opts["epochs"], batch_size=opts["batch_size"], lr=opts["lr"], seed=opts["seed"],
              progress=False)
    train_seconds = time.perf_counter() - start
    runs = []
    for mode in opts["imputation"]:
        start = time.perf_counter()
        where = held if mode == "targeted" else None
        draws = model.impute(inputs, num_samples=opts["samples"], seed=opts["seed"], where=where)
        impute_seconds = time.perf_counter() - start
        info = {"train_seconds": round(train_seconds, 1), "impute_seconds": round(impute_seconds, 1),
                "epochs_run": len(model.train_result_.history),
                "train_loss_per_row": [round(h["train_nll_per_event"], 3) for h in model.train_result_.history],
                "parameters": sum(p.numel() for p in model.parameters())}
        runs.append((mode, {"samples": draws, "mean": draws.mean(0), "median": draws.median(0).values}, info))
    return runs


def run_conditional(noise: str, train: SeriesBatch, inputs: SeriesBatch, held: torch.Tensor,
                    opts: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The paper's PhysioNet model: ``ProcessDiffusion(missing="conditional")`` (CSDI's conditional denoiser with
    ``noise`` process noise over the targets' times), trained on randomly hidden observed values; imputes every
    missing entry of a test stay at once given its observed ones (dense: no leak of the held-out pattern)."""
    torch.manual_seed(opts["seed"])
    model = ProcessDiffusion(train.num_channels, missing="conditional", noise=noise, kind=opts["cond_kind"],
                             noise_scale=opts["noise_scale"], jitter=opts["jitter"] if noise != "independent" else 1e-4,
                             hidden_size=opts["cond_hidden"], num_layers=opts["cond_layers"], num_heads=4,
                             num_steps=opts["cond_steps"], interpolation=opts["cond_interpolation"])
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(train, epochs=opts["cond_epochs"], batch_size=opts["batch_size"], lr=opts["cond_lr"],
              seed=opts["seed"], progress=False)
    train_seconds, train_cpu = time.perf_counter() - wall, time.process_time() - cpu
    wall, cpu = time.perf_counter(), time.process_time()
    draws = model.impute(inputs, num_samples=opts["cond_samples"], seed=opts["seed"])
    info = {"train_seconds": round(train_seconds, 1), "train_cpu_seconds": round(train_cpu, 1),
            "impute_seconds": round(time.perf_counter() - wall, 1),
            "impute_cpu_seconds": round(time.process_time() - cpu, 1),
            "epochs_run": len(model.train_result_.history),
            "train_loss_per_row": [round(h["train_nll_per_event"], 3) for h in model.train_result_.history],
            "parameters": sum(p.numel() for p in model.parameters()),
            "prior_var": [round(float(v), 3) for v in model.prior_log_var.detach().exp()],
            "options": {k: opts[k] for k in ("cond_kind", "cond_hidden", "cond_layers", "cond_steps", "cond_samples",
                                             "cond_epochs", "cond_lr", "cond_interpolation", "batch_size")}}
    return {"samples": draws, "mean": draws.mean(0), "median": draws.median(0).values}, info


def run_latent_sde(train: SeriesBatch, inputs: SeriesBatch, scale: TargetScale,
                   opts: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from sde.tasks import predictive_distribution
    from tpp import table

    import sde.table  # noqa: F401 - registers the sde entries

    model = table.build("latent-sde", train, seed=opts["seed"])
    start = time.perf_counter()
    model.fit(train, epochs=opts["latent_epochs"], batch_size=opts["batch_size"], lr=1e-2, seed=opts["seed"],
              progress=False)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        torch.manual_seed(opts["seed"])
        pred = predictive_distribution(model, inputs, scale)
    draws = pred.samples + pred.noise_std * torch.randn_like(pred.samples)  # draws of the value, for the CRPS
    info = {"train_seconds": round(train_seconds, 1), "impute_seconds": round(time.perf_counter() - start, 1),
            "epochs_run": len(model.train_result_.history)}
    return {"samples": draws, "mean": pred.mean, "median": draws.median(0).values}, info


# ---------------------------------------------------------------------------------------------- report
def write_markdown(path: Path, payload: dict[str, Any]) -> None:
    o = payload["options"]
    lines = ["# Stochastic process diffusion: PhysioNet 2012 imputation (10 % of observed values held out)", "",
             f"Command: `{payload['command']}`", "",
             f"Environment: python {payload['environment']['python']}, torch {payload['environment']['torch']}, "
             f"{payload['environment']['cpu']}, one thread.", "",
             f"Data: `physionet2012` (set A, 37 variables, exact times), {payload['n_train']} training stays and "
             f"{payload['n_test']} test stays (seeded subsets of the registry's splits), "
             f"{payload['n_held_out']} held-out values (`sde.tasks.interpolation_split`, share 0.1, seed "
             f"{o['seed']}). ProcessDiffusion: `missing='observed'`, hidden {o['hidden']}, {o['layers']} layers, "
             f"{o['epochs']} epochs, batch {o['batch_size']}, lr {o['lr']}, {o['steps']} reverse steps, "
             f"{o['samples']} samples, imputation {', '.join(o['imputation'])}, noise scale {o['noise_scale']} (model "
             f"time: a fraction of 48 h), GP/OU jitter {o['jitter']}.", "",
             "| model | MSE | MAE | MSE (std.) | MAE (std.) | CRPS (std.) | CRPS norm. | 90 % cov. | train s | impute s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in payload["results"].items():
        def f(key: str, digits: int = 3) -> str:
            v = r.get(key)
            return "" if v is None else (f"{v:.{digits}g}" if isinstance(v, float) else str(v))
        lines.append(f"| {name} | {f('mse', 4)} | {f('mae', 4)} | {f('mse_std')} | {f('mae_std')} | {f('crps_std')} | "
                     f"{f('crps_norm')} | {f('coverage_90')} | {f('train_seconds')} | {f('impute_seconds')} |")
    lines.append("")
    for extra in payload.get("extra_commands", []):
        lines += [f"Rows added by: `{extra}`", ""]
    conditional = [(k, v) for k, v in payload["results"].items() if k.startswith("process-diffusion conditional")]
    for name, r in conditional:
        c = r.get("options", {})
        lines += [f"`{name}`: `missing='conditional'` (CSDI's conditional scheme with process noise, the paper's "
                  f"PhysioNet model): {c.get('cond_kind')}, hidden {c.get('cond_hidden')}, {c.get('cond_layers')} "
                  f"residual layers (time and channel attention), {c.get('cond_epochs')} epochs, batch "
                  f"{c.get('batch_size')}, lr {c.get('cond_lr')}, {c.get('cond_steps')} diffusion steps, "
                  f"{c.get('cond_samples')} samples, every missing entry imputed at once (dense), linear "
                  f"interpolation of the conditioning as input and prior mean: {c.get('cond_interpolation')}; "
                  f"CPU seconds: train {r.get('train_cpu_seconds')}, impute {r.get('impute_cpu_seconds')}.", ""]
    p = payload["paper"]
    lines += ["", f"Paper ({p['source']}): CRPS (normalised) {p['crps_norm']}, MAE (standardised) {p['mae_std']}; "
              "hourly binned stays, 35 variables, all 4000 stays, 200 epochs, 100 samples: a different layout and "
              "scale. MSE/MAE in the data's units mix variables of very different scales (urine output dominates); "
              "the standardised columns divide each error by the variable's training std.", "",
              "`dense`: every missing entry of a test stay sampled at once, the model not told which were held out "
              "(what `sde fit --task interpolate` does). The model is trained on entries as sparse as the data "
              "(a variable at ~15 % of a stay's rows) and at dense imputation sees every entry present: outside "
              "what it was trained on, the likely reason dense scores near the mean. `targeted`: only the held-out "
              "entries join the diffusion (the pattern the model was trained on), at the price of telling it "
              "where a value was measured. The point baselines use no such information.", ""]
    if payload.get("notes"):
        lines += [f"- {n}" for n in payload["notes"]] + [""]
    path.write_text("\n".join(lines))


def main(
    train_stays: Annotated[int, typer.Option("--train")] = 400,
    test_stays: Annotated[int, typer.Option("--test")] = 100,
    noises: Annotated[str, typer.Option(help="comma-separated noise processes")] = "gp,independent",
    epochs: int = 8,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 32,
    lr: float = 1e-3,
    hidden: int = 64,
    layers: int = 2,
    steps: Annotated[int, typer.Option(help="reverse-process steps")] = 50,
    samples: int = 16,
    noise_scale: Annotated[float, typer.Option("--noise-scale")] = 0.02,
    jitter: float = 0.1,
    imputation: Annotated[str, typer.Option(help="dense, targeted, or both comma-separated")] = "dense,targeted",
    latent_sde: Annotated[bool, typer.Option("--latent-sde/--no-latent-sde")] = False,
    latent_epochs: Annotated[int, typer.Option("--latent-epochs")] = 5,
    conditional: Annotated[str, typer.Option(help="comma-separated noises of missing='conditional' models (the "
                                                  "paper's PhysioNet model); empty: none")] = "",
    cond_kind: Annotated[str, typer.Option("--cond-kind")] = "ddpm",
    cond_epochs: Annotated[int, typer.Option("--cond-epochs")] = 10,
    cond_hidden: Annotated[int, typer.Option("--cond-hidden")] = 32,
    cond_layers: Annotated[int, typer.Option("--cond-layers")] = 2,
    cond_steps: Annotated[int, typer.Option("--cond-steps")] = 25,
    cond_samples: Annotated[int, typer.Option("--cond-samples")] = 16,
    cond_lr: Annotated[float, typer.Option("--cond-lr")] = 1e-3,
    cond_interpolation: Annotated[bool, typer.Option("--cond-interpolation/--no-cond-interpolation")] = True,
    merge: Annotated[bool, typer.Option(help="keep the rows of the existing results file that this run does "
                                             "not recompute")] = False,
    seed: int = 0,
    out: Path = DEFAULT_OUT,
) -> None:
    modes = [m.strip() for m in imputation.split(",") if m.strip()]
    if not modes or any(m not in ("dense", "targeted") for m in modes):
        raise typer.BadParameter(f"--imputation must be dense, targeted or both, got {imputation!r}")
    opts = dict(epochs=epochs, batch_size=batch_size, lr=lr, hidden=hidden, layers=layers, steps=steps,
                samples=samples, noise_scale=noise_scale, jitter=jitter, imputation=modes, seed=seed,
                latent_epochs=latent_epochs, cond_kind=cond_kind, cond_epochs=cond_epochs, cond_hidden=cond_hidden,
                cond_layers=cond_layers, cond_steps=cond_steps, cond_samples=cond_samples, cond_lr=cond_lr,
                cond_interpolation=cond_interpolation)
    command = reproduce_command(__file__)
    env = base_environment()
    print(command)
    print(env)
    train, test = load_parts(train_stays, test_stays, seed)
    split = interpolation_split(test, share=0.1, seed=seed)
    held, truth = split.held_out, test.values.to(torch.float64)
    scale = TargetScale.of(train)
    payload: dict[str, Any] = {"command": command, "environment": env, "options": opts, "n_train": len(train),
                               "n_test": len(test), "n_held_out": int(held.sum()), "paper": CSDI_PAPER,
                               "results": {}, "notes": []}
    if merge and out.exists():
        import json

        old = json.loads(out.read_text())
        if (old.get("n_train"), old.get("n_test"), old.get("n_held_out")) != (len(train), len(test), int(held.sum())):
            raise typer.BadParameter(f"--merge: {out} holds another data set ({old.get('n_train')} / "
                                     f"{old.get('n_test')} stays, {old.get('n_held_out')} held out)")
        # the old run's rows, options and command stay; this run's command is listed beside it
        payload.update(results=old["results"], options=old["options"], command=old["command"],
                       environment=old["environment"], extra_commands=old.get("extra_commands", []) + [command])
    mean = torch.tensor(scale.mean, dtype=torch.float64)
    for name, point in point_baselines(split.inputs, mean).items():
        payload["results"][name] = score(truth, held, scale, point)
        print(name, payload["results"][name], flush=True)

    def save() -> None:
        write_json_atomically(out, payload)
        write_markdown(out.with_suffix(".md"), payload)

    save()
    for noise in [n.strip() for n in noises.split(",") if n.strip()]:
        for mode, pred, info in run_diffusion(noise, train, split.inputs, held, opts):
            name = f"process-diffusion ({noise}, {mode})"
            payload["results"][name] = {**score(truth, held, scale, pred["mean"], pred["median"], pred["samples"]),
                                        **info}
            print(name, payload["results"][name], flush=True)
            save()
    for noise in [n.strip() for n in conditional.split(",") if n.strip()]:
        pred, info = run_conditional(noise, train, split.inputs, held, opts)
        name = f"process-diffusion conditional ({noise}, dense)"
        payload["results"][name] = {**score(truth, held, scale, pred["mean"], pred["median"], pred["samples"]),
                                    **info}
        print(name, {k: v for k, v in payload["results"][name].items() if k != "train_loss_per_row"}, flush=True)
        save()
    if latent_sde:
        pred, info = run_latent_sde(train, split.inputs, scale, opts)
        payload["results"]["latent-sde"] = {**score(truth, held, scale, pred["mean"], pred["median"],
                                                    pred["samples"]), **info}
        print("latent-sde", payload["results"]["latent-sde"], flush=True)
        save()
    payload["notes"] = [n for n in payload["notes"] if not n.startswith("lowest ")]
    for key in ("mse_std", "mae_std"):
        finite = {k: v[key] for k, v in payload["results"].items() if math.isfinite(v[key])}
        payload["notes"].append(f"lowest {key}: {min(finite, key=finite.get)}")
    save()


if __name__ == "__main__":
    typer.run(main)
