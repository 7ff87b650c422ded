"""The Latent ODE protocol on PhysioNet 2012 (Rubanova, Chen & Duvenaud 2019): our models beside the paper's numbers.

What it measures
----------------
The paper's preprocessing and metric as :mod:`sde.physionet` reproduces them (sets A and B, 8000 stays, 41
variables, times quantised to ``--quantization`` hours and divided by 48 h, ``(x - min) / max`` over all stays,
the 80 / 20 split of ``random_state=42``), then two tasks on the test part (1600 stays):

* **interpolation** (:func:`sde.physionet.interpolation_task`): condition on the observed values (all of
  them, or ``int(n * sample_tp)`` rows per stay with ``--sample-tp``) and reconstruct *every* observed value;
* **extrapolation** (:func:`sde.physionet.extrapolation_task`): condition on t < 24 h, predict the observed
  values at t >= 24 h (the code's ``n_tp // 2`` cut of the test part's union grid).

Scores: :func:`sde.physionet.protocol_mse` (the paper's MSE: per stay and variable, 0 where a variable has
no scored point, mean over variables, stays and posterior samples; latent models pass their 16 posterior
samples of :func:`sde.tasks.predictive_distribution`, deterministic models their prediction), and
:func:`sde.tasks.evaluate`'s ``test_mse`` (the plain MSE per scored value) beside it.

Models (each trained by ``tpp.fit`` on a seeded subset of the training stays, ``--max-patients``, with
early stopping on a seeded 10 % validation part of them):

* ``latent-ode``: :class:`sde.models.LatentODE` (ODE-RNN encoder, the paper's sizes: 20 latents, 40 encoder
  units, 50-unit networks, 3-layer decoder field) trained once by its ELBO on the full training stays; it
  decodes everything from ``z0``, so reconstructing the values it saw is a real task; extrapolation
  conditions the same model on t < 24 h;
* ``ode-rnn``: :class:`sde.models.ODERNN`. Interpolation: read *before* each row's update (the code's
  ODE-RNN is scored on its one-step-ahead prediction; a read after the update would copy the input and
  score 0), trained on every observed value; extrapolation: its forecast head trained on the values at
  t >= 24 h of the training stays, conditioned on t < 24 h;
* ``ode-rnn-2way``: :class:`sde.models.ODERNN` reading each stay both ways with ``leave_row_out=True``
  (:mod:`sde.models._bidir`): each row is predicted from the rows strictly before it (forward ODE-RNN)
  and strictly after it (backward ODE-RNN), never from itself, so it cannot copy on the reconstruction
  task; the paper reports no bidirectional model. Extrapolation: the same reading, the future rows
  carrying only their times;
* ``gru-d-2way``: :class:`sde.models.GRUD` read the same way (two GRU-D cells, ``leave_row_out=True``);
* ``mean``: each variable's mean over the observed training values;
* ``locf``: last value carried forward: extrapolation, each variable's last value before 24 h;
  interpolation, its previous value in the conditioning set (one step ahead, as the ODE-RNN), the mean where
  there is none.

``tpp.fit`` has no wall-clock budget: ``--minutes`` sets the number of epochs from a timed probe of a few
training steps (the epochs that fit in the budget, at most ``--epochs``).

Usage::

    .venv/bin/python benchmarks/latent_ode_protocol.py --quick       # smoke test: 64 stays, 1 epoch
    .venv/bin/python benchmarks/latent_ode_protocol.py --max-patients 2000 --minutes 20
    .venv/bin/python benchmarks/latent_ode_protocol.py --models latent-ode --fixed-noise 0.1 --out A.json
    .venv/bin/python benchmarks/latent_ode_protocol.py --combine A.json,B.json   # one page from runs side by side

The JSON keeps, per row, the protocol MSE split by variable (``protocol_mse_by_variable``: the parts sum to
``protocol_mse``), each epoch's history, and evaluate's CRPS and coverage.
"""

# ruff: noqa: I001  (_bench sets the thread variables: it must be imported before numpy and torch)
from _bench import base_environment, reproduce_command, write_json_atomically

import math
import time
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import torch
import typer
from torch import Tensor

HERE = Path(__file__).resolve().parent
MODELS = ("latent-ode", "ode-rnn", "ode-rnn-2way", "gru-d-2way", "mean", "locf")
TASKS = ("interpolation", "extrapolation")
PAPER_NAMES = {"latent-ode": "Latent ODE (ODE enc.)", "ode-rnn": "ODE-RNN"}
OURS = ("latent-ode", "ode-rnn", "ode-rnn-2way", "gru-d-2way")  # trained models (the goal counts them, not the baselines)


# --------------------------------------------------------------------------- data
def subset(batch: Any, n: int | None, seed: int) -> Any:
    """A seeded random ``n`` of the stays of ``batch`` (all when ``n`` is None or not smaller)."""
    if n is None or n >= len(batch):
        return batch
    index = np.sort(np.random.default_rng(seed).choice(len(batch), n, replace=False))
    return batch[index]


def split_validation(batch: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    """``(train, val)``: a seeded ``fraction`` of the stays is the validation part (early stopping)."""
    order = np.random.default_rng(seed + 1).permutation(len(batch))
    n_val = max(1, int(round(fraction * len(batch))))
    return batch[np.sort(order[n_val:])], batch[np.sort(order[:n_val])]


def make_tasks(parts: dict[str, Any], sample_tp: float | None, seed: int) -> dict[str, dict[str, Any]]:
    """Both tasks on the train, val and test parts; train measures the target scale, the others reuse it.
    Extrapolation cuts every part at the test part's cut (the code's rule applied to the test batch)."""
    from sde.physionet import extrapolation_task, interpolation_task

    cut_probe = extrapolation_task(parts["test"], train=True)
    cut = float(cut_probe.masks["cut"])
    out: dict[str, dict[str, Any]] = {"interpolation": {}, "extrapolation": {}}
    out["interpolation"]["train"] = interpolation_task(parts["train"], sample_tp=sample_tp, seed=seed, train=True)
    out["extrapolation"]["train"] = extrapolation_task(parts["train"], cut=cut, train=True)
    for name in ("val", "test"):
        out["interpolation"][name] = interpolation_task(parts[name], sample_tp=sample_tp, seed=seed + 7,
                                                        scale=out["interpolation"]["train"].scale)
        out["extrapolation"][name] = extrapolation_task(parts[name], cut=cut,
                                                        scale=out["extrapolation"]["train"].scale)
    return out


# --------------------------------------------------------------------------- models
def one_step_odernn_class() -> type:
    """:class:`sde.models.ODERNN` whose forecast head reads each row's state *before* that row's update (the
    state after the previous row, evolved to this row's time): a one-step-ahead prediction, as the code scores
    its ODE-RNN on interpolation."""
    from sde.models import ODERNN
    from sde.models._base import Task

    class OneStepODERNN(ODERNN):
        def _readout_states(self, prepared: Any) -> Tensor:
            if self.task is Task.FORECAST:
                # a query just before each row's time: searchsorted(side="right") then picks the state
                # after the previous row (or the initial state), evolved by the gap
                eps = torch.finfo(prepared.time.dtype).eps * 64
                return self.latent(prepared, prepared.time - eps)
            return super()._readout_states(prepared)

    return OneStepODERNN


def build(model: str, task: str, channels: int, hidden: int, seed: int, fixed_noise: float | None = None) -> Any:
    from sde.models import GRUD, LatentODE, ODERNN
    from sde.models._base import Task

    torch.manual_seed(seed)
    if model == "latent-ode":  # the paper's PhysioNet sizes (-l 20 --rec-dims 40 --units 50 --gen-layers 3)
        noise = {} if fixed_noise is None else {"noise_init": fixed_noise, "learn_noise": False}
        return LatentODE(channels, latent_size=20, hidden_size=40, units=50, num_layers=3, **noise)
    if model in ("ode-rnn-2way", "gru-d-2way"):
        cls = ODERNN if model == "ode-rnn-2way" else GRUD
        return cls(channels, hidden_size=hidden, output_size=channels, task=Task.FORECAST, bidirectional=True,
                   leave_row_out=True)
    cls = one_step_odernn_class() if task == "interpolation" else ODERNN
    return cls(channels, hidden_size=hidden, output_size=channels, task=Task.FORECAST)


def probe_epoch_seconds(net: Any, train: Any, val: Any, batch_size: int, seed: int, steps: int = 4) -> float:
    """Seconds one training epoch (forward, backward and step on every minibatch, then the validation pass)
    is expected to take, from ``steps`` timed minibatches on a copy of ``net``."""
    import copy

    probe = copy.deepcopy(net)
    probe.initialise(train[np.arange(min(len(train), 512))])
    probe.train()
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    for _ in range(steps):
        index = np.sort(rng.choice(len(train), min(batch_size, len(train)), replace=False))
        loss = -probe.objective(train[index]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    per_step = (time.perf_counter() - started) / steps
    per_epoch = per_step * math.ceil(len(train) / batch_size)
    # the validation pass: forward only, about a third of a training step per minibatch
    return per_epoch + per_step / 3 * math.ceil(len(val) / batch_size)


def fit(model: str, task: str, data: dict[str, Any], args: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Train ``model`` for ``task`` (latent-ode: on every observed training value) within the budget."""
    import tpp

    train, val = data["train"].inputs, data["val"].inputs
    net = build(model, task, train.num_channels, args["hidden_size"], args["seed"], args["fixed_noise"])
    epochs = args["epochs"]
    per_epoch = None
    if args["minutes"] is not None:
        per_epoch = probe_epoch_seconds(net, train, val, args["batch_size"], args["seed"])
        epochs = max(1, min(epochs, int(args["minutes"] * 60 * 0.9 // per_epoch)))
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        record = tpp.fit(net, train, val, epochs=epochs, batch_size=args["batch_size"], lr=args["lr"],
                         patience=args["patience"], seed=args["seed"], progress=False)
    seconds = time.perf_counter() - started
    info = {"train_seconds": seconds, "epochs": epochs, "epochs_run": len(record.history),
            "best_epoch": record.best_epoch, "probe_epoch_seconds": per_epoch, "n_train": len(train),
            "n_val": len(val), "parameters": int(sum(p.numel() for p in net.parameters())),
            "history": [getattr(h, "__dict__", h) for h in record.history]}
    print(f"  {model} ({task}): {len(record.history)} epochs in {seconds:.0f} s (best {record.best_epoch})",
          flush=True)
    return net, info


# --------------------------------------------------------------------------- scoring
def per_variable_sums(pred: Tensor, truth: Tensor, mask: Tensor) -> Tensor:
    """``[C]`` the sum over stays (mean over samples) of each variable's per-stay MSE, 0 where a stay has no
    scored point of it: protocol_mse is their sum over C, divided by ``B * C``; the parts show which
    variables carry the score."""
    if pred.dim() == 3:
        pred = pred[None]
    mask = mask.to(torch.bool) & ~torch.isnan(truth)
    diff = torch.where(mask, pred.to(torch.float64) - torch.nan_to_num(truth.to(torch.float64)),
                       torch.zeros((), dtype=torch.float64))
    per = (diff**2).sum(2) / mask.sum(1).to(torch.float64).clamp(min=1)  # [S, B, C]
    return per.mean(0).sum(0)


def model_scores(net: Any, data: Any, seed: int, copy_first_row: bool = False) -> dict[str, Any]:
    """protocol_mse (posterior samples for a latent model) and evaluate's per-value numbers on ``data``.

    ``copy_first_row``: the prediction of each stay's first row is its conditioning values there, as the code's
    ODE-RNN outputs its first data point (``lib/ode_rnn.py:78-81``; the descriptors live in that row).
    evaluate's numbers are of the model's own predictions."""
    from sde.physionet import protocol_mse
    from sde.tasks import EVAL_CHUNK, derived_seed, evaluate, predictive_distribution

    net.eval()
    inputs, total, held_total, own_total, n, kind = data.inputs, 0.0, 0.0, 0.0, len(data.inputs), "gaussian"
    held_out = data.masks["held_out"]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(derived_seed(seed, 3))
        for start in range(0, n, EVAL_CHUNK):
            index = np.arange(start, min(start + EVAL_CHUNK, n))
            part = inputs[index]
            length = part.time.shape[1]
            pred = predictive_distribution(net, part, data.scale)
            kind = pred.kind
            sampled = pred.samples if getattr(pred, "samples", None) is not None and pred.samples.dim() == 4 else None
            values = sampled if sampled is not None else pred.mean
            truth = data.values[index, :length].to(values)
            scored = data.scored[index, :length]
            own_total += protocol_mse(values, truth, scored) * len(index)
            if copy_first_row:
                first = part.values[:, :1].to(values)
                values = values.clone()
                values[..., :1, :] = torch.where(torch.isfinite(first), first, values[..., :1, :])
            total += protocol_mse(values, truth, scored) * len(index)
            parts = per_variable_sums(values, truth, scored)
            by_variable = parts if start == 0 else by_variable + parts
            held_total += protocol_mse(values, truth, held_out[index, :length]) * len(index)
    result = {"protocol_mse": total / n, "protocol_mse_held_out": held_total / n,
              "protocol_mse_own_first_row": own_total / n,
              "protocol_mse_from": "posterior samples (16)" if kind != "gaussian" else "prediction",
              "protocol_mse_by_variable": dict(zip(inputs.channel_names,
                                                   (by_variable / (n * inputs.num_channels)).tolist()))}
    official = evaluate(net, data, seed=seed)
    result.update({k: v for k, v in official.items() if k != "stats"})
    return result


def baseline_predictions(model: str, task: str, data: Any, train: Any) -> Tensor:
    """``[B, L, C]`` the baseline's prediction of every value of ``data`` (protocol scale)."""
    counts = train.observed.sum((0, 1)).clamp(min=1)
    mean = torch.where(train.observed, train.values, torch.zeros_like(train.values)).sum((0, 1)) / counts
    values = data.inputs.values  # what the model is conditioned on (NaN elsewhere)
    pred = mean.to(values).expand_as(values).clone()
    if model == "mean":
        return pred
    # locf: the latest conditioning value of each variable; one step ahead (strictly before the row) for
    # interpolation, whose scored values are conditioning values too
    B, L, C = values.shape
    seen = torch.isfinite(values) & data.inputs.mask[..., None]
    index = torch.where(seen, torch.arange(L)[None, :, None].expand(B, L, C), torch.full((B, L, C), -1))
    last = index.cummax(1).values  # [B, L, C]: the row of the latest seen value up to and including this row
    if task == "interpolation":
        # the first row is copied, as the code's ODE-RNN copies it (lib/ode_rnn.py:78-81)
        last = torch.cat([index[:, :1], last[:, :-1]], 1)
    gathered = values.gather(1, last.clamp(min=0))
    return torch.where(last >= 0, gathered, pred)


def baseline_scores(model: str, task: str, data: Any, train: Any) -> dict[str, Any]:
    from sde.physionet import protocol_mse

    pred = baseline_predictions(model, task, data, train)
    scored = data.scored
    err = (pred - data.values)[scored]
    return {"protocol_mse": protocol_mse(pred, data.values, scored),
            "protocol_mse_held_out": protocol_mse(pred, data.values, data.masks["held_out"]),
            "protocol_mse_from": "prediction", "test_mse": float((err**2).mean()),
            "protocol_mse_by_variable": dict(zip(data.inputs.channel_names, (per_variable_sums(
                pred, data.values, scored) / (scored.shape[0] * scored.shape[2])).tolist())),
            "test_mae": float(err.abs().mean()), "n_test_values": int(scored.sum())}


# --------------------------------------------------------------------------- report
def render_markdown(payload: dict[str, Any]) -> str:
    from sde.physionet import PAPER_MSE

    cfg = payload["config"]
    lines = ["# The Latent ODE protocol on PhysioNet 2012: ours beside Rubanova et al. 2019", "",
             f"Command: `{payload['command']}`", "",
             f"Environment: {payload['environment']['cpu']} ({payload['environment']['cpu_count']} CPUs), "
             f"torch {payload['environment']['torch']}, one thread per process; run {payload['started']} UTC.", "",
             f"Data: sets A and B (8000 stays), 41 variables, q = {cfg['quantization']} h, (x - min) / max over all "
             f"stays, split seed 42. Trained on a seeded subset of the 6400 training stays (**{payload['n_train_total']}"
             f"** in the first run; the count is in each trained model's label; 10 % of it held out for early "
             f"stopping); scored on **{payload['n_test']} test stays**. sample_tp: {cfg['sample_tp']}. "
             f"Budget per model in the table (epochs from a timed probe, at most {cfg['epochs']} in the first run); "
             f"lr {cfg['lr']}, batch {cfg['batch_size']}, patience {cfg['patience']}, seed {cfg['seed']}.", "",
             "MSE on the protocol's normalised scale. `protocol MSE` is the paper's definition (sde.physionet."
             "protocol_mse); `per-value MSE` is sde.tasks.evaluate's test_mse (mean over scored values).", "",
             "| task | model | protocol MSE | paper (its model) | <= paper goal? | own first row | per-value MSE | "
             "90% cover | budget min | train s | epochs (best) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    goal = {t: PAPER_MSE[t]["Latent ODE (ODE enc.)"] for t in TASKS}
    for r in payload["results"]:
        paper_name = PAPER_NAMES.get(r["model"])
        paper = PAPER_MSE[r["task"]].get(paper_name) if paper_name else None
        paper_text = f"{paper:.3e} ({paper_name})" if paper is not None else "-"
        ok = "yes" if r["protocol_mse"] <= goal[r["task"]] else "no"
        cover = f"{r['coverage_90']:.2f}" if "coverage_90" in r else "-"
        budget = r.get("minutes", cfg["minutes"]) if r["model"] in OURS else "-"
        epochs = f"{r['epochs_run']} ({r['best_epoch'] + 1})" if "epochs_run" in r else "-"
        own = r.get("protocol_mse_own_first_row")
        own_text = f"{own:.3e}" if own is not None and own != r["protocol_mse"] else "-"
        lines.append(f"| {r['task']} | {r.get('label', r['model'])} | {r['protocol_mse']:.3e} | {paper_text} | {ok} "
                     f"(goal {goal[r['task']]:.3e}) | {own_text} | {r.get('test_mse', float('nan')):.3e} | {cover} | "
                     f"{budget} | "
                     f"{r.get('train_seconds', 0):.0f} | {epochs} |")
    lines += ["", "Goal (issue 14): interpolation <= 2.118e-3 and extrapolation <= 2.231e-3 with one of our models "
              "(the baselines do not count).", ""]
    for t in TASKS:
        ours = [r for r in payload["results"] if r["task"] == t and r["model"] in OURS]
        if ours:
            best = min(ours, key=lambda r: r["protocol_mse"])
            verdict = "MET" if best["protocol_mse"] <= goal[t] else "NOT MET"
            lines.append(f"- {t}: best of ours {best.get('label', best['model'])} {best['protocol_mse']:.3e} vs "
                         f"{goal[t]:.3e}: "
                         f"**{verdict}**")
    lines += ["", "Where the score sits (rows with the split by variable; the descriptors are scored at t = 0 "
              "only):", ""]
    for r in payload["results"]:
        by = r.get("protocol_mse_by_variable")
        if by:
            desc = sum(by.get(k, 0.0) for k in ("Age", "Gender", "Height", "ICUType"))
            top = ", ".join(f"{k} {v:.1e}" for k, v in sorted(by.items(), key=lambda kv: -kv[1])[:4])
            budget = f" (budget {r.get('minutes')} min)" if r["model"] in OURS else ""
            lines.append(f"- {r['task']} {r.get('label', r['model'])}{budget}: "
                         f"descriptors {desc:.3e}, the 37 time-varying variables {r['protocol_mse'] - desc:.3e}; "
                         f"largest: {top}")
    lines += ["", *[f"- {n}" for n in payload["notes"]], ""]
    return "\n".join(lines)


def _label(model: str, config: dict[str, Any]) -> str:
    """The model's name in the table, with the setting that tells two runs of it apart."""
    if model == "latent-ode":
        noise = config.get("fixed_noise")
        return f"latent-ode (noise {'learned' if noise is None else f'fixed {noise:g}'})"
    if model in OURS:
        return f"{model} (hidden {config.get('hidden_size')}, {config.get('max_patients')} train stays)"
    return model


def _split(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def main(
    quick: Annotated[bool, typer.Option(help="Smoke test: 64 training stays, 64 test stays, 1 epoch.")] = False,
    max_patients: Annotated[Optional[int], typer.Option(help="Training stays used (seeded subset of 6400).")] = 2000,
    max_test: Annotated[Optional[int], typer.Option(help="Test stays scored (default: all 1600).")] = None,
    epochs: Annotated[int, typer.Option(help="Largest number of epochs.")] = 40,
    minutes: Annotated[Optional[float], typer.Option(help="Per-model wall budget (sets the epochs).")] = 20.0,
    models: Annotated[str, typer.Option(help=f"Comma list of {', '.join(MODELS)}.")] = ",".join(MODELS),
    tasks: Annotated[str, typer.Option(help=f"Comma list of {', '.join(TASKS)}.")] = ",".join(TASKS),
    quantization: Annotated[float, typer.Option(help="Time bin in hours (the code's default 0.1).")] = 0.1,
    sample_tp: Annotated[Optional[float], typer.Option(help="Interpolation: share of rows conditioned on.")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    lr: Annotated[float, typer.Option()] = 3e-3,
    batch_size: Annotated[int, typer.Option(help="Minibatch (the paper: 50).")] = 50,
    hidden_size: Annotated[int, typer.Option(help="ODE-RNN state size (the paper's --rec-dims 40).")] = 40,
    patience: Annotated[int, typer.Option()] = 5,
    fixed_noise: Annotated[Optional[float], typer.Option(help=(
        "latent-ode: fix its observation noise at this std (standardised units) instead of learning it "
        "(the reference fixes 0.01 on the [0, 1] scale)."))] = None,
    combine: Annotated[Optional[str], typer.Option(help=(
        "Comma list of result JSONs of earlier runs (e.g. one model each, run side by side): merge their rows "
        "into --out / --markdown and train nothing."))] = None,
    out: Annotated[Path, typer.Option()] = HERE / "results" / "latent_ode_protocol.json",
    markdown: Annotated[Path, typer.Option()] = HERE / "results" / "latent_ode_protocol.md",
) -> None:
    """Train and score our models and the baselines on the Latent ODE protocol; write JSON and Markdown."""
    from sde.physionet import load_protocol

    started_at = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    if combine:
        import json

        runs = [json.loads(Path(p).read_text()) for p in _split(combine)]
        for run in runs:  # each row says which run's settings it had
            for r in run["results"]:
                r.setdefault("minutes", run["config"]["minutes"])
                r.setdefault("label", _label(r["model"], run["config"]))
        rows = [r for run in runs for r in run["results"]]
        # a baseline is deterministic: one row per (baseline, task), the last run's (it may carry more fields)
        last = {(r["model"], r["task"]): i for i, r in enumerate(rows) if r["model"] not in OURS}
        rows = [r for i, r in enumerate(rows)
                if r["model"] in OURS or last[(r["model"], r["task"])] == i]
        payload = {**runs[0], "results": rows,
                   "command": " ; ".join(run["command"] for run in runs) + " ; " + reproduce_command(__file__),
                   "wall_seconds": sum(run["wall_seconds"] for run in runs)}
        write_json_atomically(out, payload)
        text = render_markdown(payload)
        markdown.write_text(text)
        print(text)
        return
    torch.set_num_threads(1)
    if quick:
        max_patients, max_test, epochs, minutes = 64, 64, 1, None
        if out == HERE / "results" / "latent_ode_protocol.json":  # a smoke test keeps the real results
            out = out.with_name("latent_ode_protocol_quick.json")
            markdown = markdown.with_name("latent_ode_protocol_quick.md")
    chosen_models, chosen_tasks = _split(models), _split(tasks)
    for m in chosen_models:
        if m not in MODELS:
            raise typer.BadParameter(f"unknown model {m!r}; choose from {MODELS}", param_hint="--models")
    for t in chosen_tasks:
        if t not in TASKS:
            raise typer.BadParameter(f"unknown task {t!r}; choose from {TASKS}", param_hint="--tasks")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the reader's note on the 9 stays without values
        protocol = load_protocol(quantization=quantization)
    pool = subset(protocol.train, max_patients, seed)
    train, val = split_validation(pool, 0.1, seed)
    test = subset(protocol.test, max_test, seed)
    data = make_tasks({"train": train, "val": val, "test": test}, sample_tp, seed)
    print(f"protocol loaded in {time.perf_counter() - t0:.0f} s: {len(train)} train, {len(val)} val, "
          f"{len(test)} test stays; extrapolation cut {float(data['extrapolation']['test'].masks['cut']):.4f} "
          f"(x {protocol.time_scale:g} h)", flush=True)
    args = {"epochs": epochs, "minutes": minutes, "lr": lr, "batch_size": batch_size, "hidden_size": hidden_size,
            "patience": patience, "seed": seed, "fixed_noise": fixed_noise}
    results: list[dict[str, Any]] = []
    for model in chosen_models:
        if model in ("mean", "locf"):
            for task in chosen_tasks:
                scores = baseline_scores(model, task, data[task]["test"], train)
                results.append({"model": model, "task": task, **scores})
                print(f"  {model} {task}: protocol MSE {scores['protocol_mse']:.3e}", flush=True)
            continue
        if model == "latent-ode":  # one fit on the full training stays serves both tasks
            net, info = fit(model, "interpolation", data["interpolation"], args)
            for task in chosen_tasks:
                scores = model_scores(net, data[task]["test"], seed)
                results.append({"model": model, "task": task, "label": _label(model, args), "minutes": minutes,
                                **info, **scores})
                print(f"  {model} {task}: protocol MSE {scores['protocol_mse']:.3e}", flush=True)
            continue
        for task in chosen_tasks:
            net, info = fit(model, task, data[task], args)
            scores = model_scores(net, data[task]["test"], seed, copy_first_row=task == "interpolation")
            results.append({"model": model, "task": task, "label": _label(model, args | {"max_patients": max_patients}),
                            "minutes": minutes, **info, **scores})
            print(f"  {model} {task}: protocol MSE {scores['protocol_mse']:.3e}", flush=True)
    notes = [
        "latent-ode is fitted once (ELBO on every observed value of the training stays) and scored on both tasks; "
        "for extrapolation it is conditioned on t < 24 h only (the paper's code trains a separate model whose "
        "encoder sees the first half and whose loss is on the second).",
        "ode-rnn interpolation reads each row's state before that row's update (one-step-ahead, as the code "
        "scores its ODE-RNN); a read after the update copies the input and scores 0 on this reconstruction task. "
        "As in the code (lib/ode_rnn.py:78-81) the first row (t = 0, where the descriptors are) is copied from the "
        "input in its protocol MSE (and in locf's); its per-value MSE (evaluate) is of its own predictions.",
        "Without --sample-tp the interpolation task conditions on every observed value and scores them all "
        "(the code's default): a reconstruction score; `protocol_mse_held_out` in the JSON scores only the "
        "values not shown (0 here without --sample-tp).",
        "locf extrapolation (last value before 24 h) is a baseline the paper does not report; helper-19 measured "
        "1.93e-3 on the full sets, below the paper's 2.231e-3.",
        "ode-rnn-2way (and gru-d-2way) interpolation predicts each row from the rows strictly before and after it "
        "(leave_row_out), "
        "never from itself; its first row is copied as the code's ODE-RNN's is (protocol MSE) and "
        "`protocol_mse_own_first_row` in the JSON is the same score with its own prediction of the first row.",
        *protocol.notes,
    ]
    payload = {"command": reproduce_command(__file__), "started": started_at, "environment": base_environment(),
               "config": {"quick": quick, "max_patients": max_patients, "max_test": max_test, "epochs": epochs,
                          "minutes": minutes, "quantization": quantization, "sample_tp": sample_tp, "seed": seed,
                          "lr": lr, "batch_size": batch_size, "hidden_size": hidden_size, "patience": patience,
                          "fixed_noise": fixed_noise},
               "n_train_total": len(pool), "n_train": len(train), "n_val": len(val), "n_test": len(test),
               "results": results, "notes": notes, "wall_seconds": time.perf_counter() - t0}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(out, payload)
    text = render_markdown(payload)
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(text)
    print(text)


if __name__ == "__main__":
    typer.run(main)
