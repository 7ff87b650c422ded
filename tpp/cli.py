"""The ``tpp`` command: ``datasets | fit | eval | simulate | report | bench | control``.

Bad input ends with exit code 2 and one line on stderr naming the file, sequence, row and
field; never a traceback. ``--json`` prints one JSON object on stdout and nothing else there.
"""

from __future__ import annotations

import enum
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer

from tpp import table as model_table
from tpp.bench import Suite
from tpp.options import KernelName, Objective
from tpp.table import Family, Training
from tpp.commandline import (
    BatchSizeOption,
    CheckpointEveryOption,
    OverwriteOption,
    ResumeOption,
    check_run_options,
    fit_in_run_folder,
    EpochsOption,
    JsonOption,
    SeedOption,
    command_app,
    echo_json,
    echo_result,
    in_range,
    is_file_argument,
    load_data,
    user_errors,
)

app = command_app("Temporal point processes: fit, evaluate, simulate.")

DEFAULT_LR = 1e-3
"""``tpp fit``'s learning rate for a trained model that declares no ``default_lr`` of its own."""

EVENT_FILE_SUFFIXES = (".csv", ".parquet", ".npz", ".pkl", ".json")
"""Suffixes that make ``--data`` a file read by :func:`tpp.read_events` (anything else is a registry name)."""


ModelName = model_table.model_enum(Family.TPP)
"""``--model``: the tpp names of the model table (:mod:`tpp.table`), members such as ``ModelName.exp_hawkes``."""

NEURAL_MODELS = {n: model_table.spec(n).display for n in model_table.names(Family.TPP, Training.TRAINER)}
"""CLI name -> display name of the models trained by the one trainer (from the table; kept for old imports)."""




_user_errors = user_errors  # the shared wrapper (tpp.commandline); the old private name kept



def _load(data: str, split: str | None, t_end: float | None, remap_marks: bool = False):
    """A path is read with :func:`tpp.read_events` (``remap_marks``: sparse mark ids to 0..K-1); anything else
    is a registry name."""
    from tpp.events import EventBatch
    from tpp.io import read_events

    from tpp import datasets

    batch = load_data(data, suffixes=EVENT_FILE_SUFFIXES, read_file=lambda path: read_events(path, t_end=t_end, split=split,
                                                                                 remap_marks=remap_marks),
                      load_registered=lambda name: datasets.load(name, split=split))
    if t_end is not None and not is_file_argument(data, EVENT_FILE_SUFFIXES):
        flat = batch.to_flat()
        batch = EventBatch.from_flat(
            flat["times"], flat["seq_offsets"], flat["t_start"], np.full(len(batch), t_end), flat["marks"],
            batch.num_marks, seq_names=batch.seq_names, source=f"{data} with --t-end {t_end}",
            features=flat["features"] if batch.features is not None else None,
            feature_names=batch.feature_names or None, mark_names=batch.mark_names,
        )
    return batch


@app.command("datasets")
@_user_errors
def datasets_cmd(json_output: JsonOption = False) -> None:
    """List the registered data sets with their size, marks and licence."""
    from tpp import datasets

    table = datasets.describe()
    if json_output:
        typer.echo(table.to_json(orient="records"))
    else:
        shown = table.copy()
        for column in ("licence", "window"):
            shown[column] = shown[column].str.slice(0, 42)
        typer.echo(shown.to_string(index=False))


@app.command()
@_user_errors
def fit(
    model: Annotated[ModelName, typer.Option(help="Model to fit.")] = ModelName.exp_hawkes,
    data: Annotated[str, typer.Option(help="Registered data set name or a file (.csv/.parquet/.npz/.pkl/.json).")] = "bookorder",
    split: Annotated[Optional[str], typer.Option(help="Split to fit on (train/val/test); default all.")] = None,
    t_end: Annotated[Optional[float], typer.Option("--t-end", help="Observation window end for every sequence.")] = None,
    remap_marks: Annotated[bool, typer.Option(
        "--remap-marks", help="Files: map sparse or text mark ids to 0..K-1 (the ids are kept and written back).")] = False,
    decay: Annotated[Optional[float], typer.Option(help="exp-hawkes: fix the decay (learned when omitted).")] = None,
    feature: Annotated[Optional[str], typer.Option(
        help="marked-hawkes: the feature column that is the mark; etas: the magnitude feature (default magnitude).")] = None,
    link: Annotated[Optional[str], typer.Option(
        help="nonlinear-hawkes: link of the intensity, softplus (default), relu, exp or identity.")] = None,
    baseline: Annotated[str, typer.Option(
        help="exp/sumexp-hawkes: baseline in time: constant, periodic (cyclic splines) or piecewise (equal bins).")] = "constant",
    period: Annotated[Optional[float], typer.Option(help="periodic/piecewise baseline: the period in the data's unit (24 for a day in hours).")] = None,
    n_basis: Annotated[Optional[int], typer.Option("--n-basis", help="periodic/piecewise baseline: splines or bins per period (default 8).")] = None,
    objective: Annotated[Optional[Objective], typer.Option(
        help="Contrast: likelihood (default) or least-squares for exp/sumexp-hawkes; l2 (default) or likelihood for fadin.")] = None,
    kernel: Annotated[KernelName, typer.Option(help="fadin: kernel family.")] = KernelName.TRUNCATED_GAUSSIAN,
    support: Annotated[Optional[float], typer.Option(help="fadin / nonparametric-em: kernel support W.")] = None,
    delta: Annotated[Optional[float], typer.Option(help="fadin: grid step (default W / 100).")] = None,
    bins: Annotated[int, typer.Option(help="nonparametric-em: number of kernel bins.")] = 20,
    hidden_size: Annotated[int, typer.Option("--hidden-size", help="neural models: hidden size.")] = 32,
    epochs: EpochsOption = 20,
    batch_size: BatchSizeOption = 32,
    lr: Annotated[Optional[float], typer.Option(
        callback=in_range(0.0, math.inf, low_open=True),
        help="Peak learning rate (default: the model's default_lr: 1e-3, the Gaussian-mixture spatial baselines 0.05).",
    )] = None,
    seed: SeedOption = 0,
    out: Annotated[Optional[Path], typer.Option(help="Folder for model.json / checkpoints and plots.")] = None,
    resume: ResumeOption = False,
    checkpoint_every: CheckpointEveryOption = None,
    overwrite: OverwriteOption = False,
    json_output: JsonOption = False,
) -> None:
    """Fit a Poisson, Hawkes, FaDIn, nonparametric or neural model; report likelihood, goodness of fit, parameters."""
    from tpp.metrics import time_rescaling
    from tpp.report import build_model, fit_model, model_params

    model = model_table.canonical(model)  # `tv-cnf` is `time-varying-cnf` from here on
    trained = model_table.spec(model.value).training is Training.TRAINER
    check_run_options(out, resume, checkpoint_every, overwrite, trained, model.value,
                      model_table.names(Family.TPP, Training.TRAINER))
    if trained and (baseline != "constant" or period is not None or n_basis is not None):
        raise ValueError(f"--baseline/--period/--n-basis apply to exp-hawkes and sumexp-hawkes, not {model.value}")
    if model is ModelName.etas:  # events with locations, fitted in one go: train/val/test like the neural models
        result = _fit_etas(data, t_end, seed, out, feature, remap_marks, progress=not json_output)
        echo_result(result, json_output, width=34)  # strict JSON: no magnitudes gives beta NaN -> null
        return
    if trained:
        result = _fit_neural(model.value, data, t_end, hidden_size, epochs, batch_size, lr, seed, out,
                             resume=resume, checkpoint_every=checkpoint_every, overwrite=overwrite,
                             remap_marks=remap_marks)
        echo_result(result, json_output, width=30)
        return
    batch = _load(data, split, t_end, remap_marks)
    for name, value in (("--decay", decay), ("--support", support), ("--delta", delta)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if objective is Objective.L2 and model is not ModelName.fadin:
        raise ValueError("--objective l2 is FaDIn's contrast: use it with --model fadin")
    if objective is Objective.LEAST_SQUARES and model not in (ModelName.exp_hawkes, ModelName.sumexp_hawkes):
        raise ValueError("--objective least-squares applies to exp-hawkes and sumexp-hawkes")
    estimator = build_model(model.value, batch.num_marks, decay=decay, kernel=kernel.value, support=support,
                            delta=delta, bins=bins, objective=None if objective is None else objective.value,
                            feature=feature, link=link, baseline=baseline, period=period,
                            n_basis=8 if n_basis is None and baseline == "piecewise" else n_basis)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator, seconds = fit_model(estimator, batch, objective=None if objective is None else objective.value,
                                       progress=not json_output and sys.stderr.isatty())
    for w in caught:
        if issubclass(w.category, UserWarning):
            typer.echo(f"warning: {w.message}", err=True)
    ll = float(estimator.log_likelihood(batch).detach().sum())
    gof = time_rescaling(estimator, batch)
    result = {
        "model": model.value,
        "num_events": batch.num_events,
        "log_likelihood": ll,
        "log_likelihood_per_event": ll / max(batch.num_events, 1),
        **model_params(estimator),
        "ks_statistic": gof.ks_statistic,
        "ks_pvalue": gof.ks_pvalue,
        "fit_seconds": seconds,
    }
    if out is not None:
        _write_fit_outputs(out, model, estimator, batch, gof)
    if json_output:
        echo_json(result)
        return
    for key, value in result.items():
        if key == "kernel_values":
            value = f"[{len(value)} x {len(value[0])} x {len(value[0][0])}] (in model.json)"
        typer.echo(f"{key:>26}: {np.round(value, 6).tolist() if isinstance(value, (list, float)) else value}")
    if out is not None:
        typer.echo(f"{'written':>26}: {', '.join(sorted(p.name for p in out.iterdir()))} in {out}")


def _splits(data: str, t_end: float | None, seed: int, remap_marks: bool = False):
    """(train, val, test): the registry's splits, or a seeded 70/15/15 split of a file's sequences."""
    if not is_file_argument(data, EVENT_FILE_SUFFIXES):
        from tpp import datasets

        if "val" in datasets.card(data).splits:
            return tuple(_load(data, part, t_end) for part in ("train", "val", "test"))
        # published train/test only: validation sequences come from the training split (seeded)
        train, val = _load(data, "train", t_end).split((0.85, 0.15), seed=seed)
        return train, val, _load(data, "test", t_end)
    batch = _load(data, None, t_end, remap_marks)
    if len(batch) < 3:
        raise ValueError(f"{data}: neural models need several sequences to split into train/val/test, got {len(batch)}")
    return batch.split((0.7, 0.15, 0.15), seed=seed)


def _fit_neural(name: str, data: str, t_end: float | None, hidden_size: int, epochs: int, batch_size: int,
                lr: float | None, seed: int, out: Path | None, *, resume: bool = False, checkpoint_every: int | None = None,
                overwrite: bool = False, remap_marks: bool = False) -> dict[str, Any]:
    """Train a neural model with the shared trainer; score on the test split with a fine integrator.

    The run's checkpoints go to ``out`` (the run owns it: see :func:`fit_in_run_folder`)."""
    from tpp.metrics import log_likelihood_per_event, next_event_metrics

    train, val, test = _splits(data, t_end, seed, remap_marks)
    estimator = model_table.build(name, train, seed=seed, hidden_size=hidden_size)
    lr = lr if lr is not None else getattr(estimator, "default_lr", DEFAULT_LR)
    estimator, record = fit_in_run_folder(estimator, train, val, out, resume=resume, checkpoint_every=checkpoint_every,
                                          overwrite=overwrite, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                                          progress=sys.stderr.isatty())  # bars for a person, not for a pipe or log
    from tpp.spatial.base import SpatioTemporalProcess

    if isinstance(estimator, SpatioTemporalProcess):  # events with locations: time and space scored apart
        return _spatial_result(name, estimator, train, test, record, out, seed)
    fine = 64  # nodes per interval when scoring: no coarse grid decides the score
    forecasts = next_event_metrics(estimator, test, max_prefixes=1000, seed=seed)
    estimator.eval()
    test_ll = log_likelihood_per_event(estimator, test, num_points=fine, batch_size=64)
    if out is not None:  # the weights and constructor arguments, for `tpp eval --model-file out`
        model_table.save(estimator, out / "model.pt")
    return {
        "model": name, "num_events": train.num_events,
        "test_log_likelihood_per_event": test_ll,
        "val_log_likelihood_per_event": record.best_val_ll_per_event,
        "rmse": forecasts["rmse"], "mae": forecasts["mae"], "accuracy": forecasts["accuracy"],
        "top3_accuracy": forecasts["top3_accuracy"],
        "train_events_per_second": record.train_events_per_second,
        "epochs_run": record.epochs_run, "best_epoch": record.best_epoch,
        "integrator_points_per_interval": fine,
    }


def _spatial_result(name: str, estimator: Any, train: Any, test: Any, record: Any, out: Path | None,
                    seed: int = 0) -> dict[str, Any]:
    """A trained spatio-temporal model's scores on ``test`` (:func:`_spatial_scores`) and training record; with
    ``out``, the weights (``model.pt``) and the maps (:func:`_write_spatial_plots`)."""
    estimator.eval()
    scores = _spatial_scores(estimator, test, seed)
    if out is not None:  # the weights and constructor arguments, for `tpp eval --model-file out`
        model_table.save(estimator, out / "model.pt")
        _write_spatial_plots(out, estimator, train, test)
    return {
        "model": name, "num_events": train.num_events, **scores,
        "val_log_likelihood_per_event": record.best_val_ll_per_event,
        "train_events_per_second": record.train_events_per_second,
        "epochs_run": record.epochs_run, "best_epoch": record.best_epoch,
    }


def _spatial_scores(estimator: Any, test: Any, seed: int) -> dict[str, Any]:
    """Time and space nats per event on ``test`` over every event, their sum, and the mean distance from an event's
    location to the expected one given its history over at most :data:`LOCATION_PREFIXES` events drawn with
    ``seed`` (:func:`tpp.spatial.spatial_metrics`)."""
    from tpp.spatial import spatial_metrics

    score = spatial_metrics(estimator, test, max_prefixes=LOCATION_PREFIXES, seed=seed)
    return {"test_log_likelihood_per_event": score["log_likelihood_per_event"],
            "test_time_log_likelihood_per_event": score["time_log_likelihood_per_event"],
            "test_space_log_likelihood_per_event": score["space_log_likelihood_per_event"],
            "test_location_error": score["location_error"],
            "test_location_error_events": int(score["location_error_events"])}


def _fit_etas(data: str, t_end: float | None, seed: int, out: Path | None, feature: str | None, remap_marks: bool,
              progress: bool) -> dict[str, Any]:
    """Space-time ETAS on the training split (declustering EM + L-BFGS, no trainer), its study region the box of
    every split's locations; scored on the test split like the trained spatial models, with its parameters and
    branching ratio. The magnitude is ``feature`` (default "magnitude"; a catalogue without one is fitted without
    magnitudes, a named feature that is missing is an error). ``out``: ``model.json``, the maps and the
    magnitude-time plot."""
    from tpp.io import atomic_write

    train, val, test = _splits(data, t_end, seed, remap_marks)
    names = tuple(train.feature_names or ())
    if feature is not None and feature not in names:
        raise ValueError(f"--feature {feature!r}: {data} has features {list(names)}")
    magnitude = feature if feature is not None else ("magnitude" if "magnitude" in names else None)
    estimator = model_table.build("etas", train, magnitude=magnitude).cover(train, val, test)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator.fit(train, val if val.num_events else None, progress=progress)
    seconds = time.perf_counter() - start
    for w in caught:
        if issubclass(w.category, UserWarning):
            typer.echo(f"warning: {w.message}", err=True)
    result = {"model": "etas", "num_events": train.num_events, **_spatial_scores(estimator, test, seed),
              "val_log_likelihood_per_event": estimator.fit_result_.get("val_score"),
              **estimator.summary_params(), "fit_seconds": seconds}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / "model.json", ".json") as tmp:
            tmp.write_text(json.dumps(estimator.to_dict(), indent=2))
        _write_spatial_plots(out, estimator, train, test)
    return result


def _write_spatial_plots(out: Path, estimator: Any, train: Any, test: Any) -> None:
    """``events_map.png``: the training events on the map coloured by time (sized by magnitude where there is
    one) beside the magnitude-time (or count-time) panel; ``density_map.png``: the fitted density of the next
    location in the test sequence of median length, just before its events at a quarter, half and three
    quarters of the way and at its window's end."""
    import torch

    from tpp.plot import save_figure
    from tpp.spatial.plots import plot_events_map, plot_spatial_density

    names = tuple(train.feature_names or ())
    magnitude = getattr(estimator, "magnitude", None) or ("magnitude" if "magnitude" in names else None)
    locations = estimator.location_names or tuple(n for n in names if n != magnitude)[:2]
    save_figure(plot_events_map(train, magnitude=magnitude, location_names=locations), out / "events_map.png")
    lengths = test.mask.sum(1)
    if estimator.feature_dim != 2 or int(lengths.max()) < 2:
        return
    order = torch.argsort(lengths)
    sequence = int(order[len(order) // 2]) if int(lengths[order[len(order) // 2]]) >= 2 else int(order[-1])
    n = int(lengths[sequence])
    times = [float(test.time[sequence, k]) for k in sorted({n // 4, n // 2, (3 * n) // 4})] + [float(test.t_end[sequence])]
    save_figure(plot_spatial_density(estimator, test, times, sequence=sequence, grid=40), out / "density_map.png")


#: Events whose next-location forecast `tpp fit` scores on a spatial model's test split: a flow's Monte Carlo
#: expectation costs solves per query (the Jump CNF's grow with the history: ~8 ms per earlier event and query
#: at 256 draws here), so a catalogue's thousands of events are sampled, as `next_event_metrics` samples prefixes.
LOCATION_PREFIXES = 256


def _write_fit_outputs(out: Path, model: ModelName, estimator: Any, batch: Any, gof: Any) -> None:
    """model.json, the QQ plot, and for Hawkes models the adjacency heatmap and kernel grid."""
    from tpp import plot
    from tpp.io import atomic_write
    from tpp.report import build_model, fit_model

    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "model.json", ".json") as tmp:
        tmp.write_text(json.dumps(estimator.to_dict(), indent=2))
    plot.save_figure(plot.plot_qq({model.value: gof}), out / "qq.png")
    if model is ModelName.poisson:
        return
    plot.save_figure(plot.plot_adjacency(estimator.adjacency_), out / "adjacency.png")
    if getattr(estimator, "_basis", None) is not None and estimator.period is not None:  # a time-varying baseline
        plot.save_figure(plot.plot_baseline(estimator), out / "baseline.png")
    if model in (ModelName.fadin, ModelName.nonparametric_em):
        curves = {model.value: estimator}
        if model is ModelName.fadin:
            # The nonparametric estimate shows whether the chosen family has the right shape.
            em = build_model("nonparametric-em", batch.num_marks, support=estimator.support, bins=30)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                curves["nonparametric EM"] = fit_model(em, batch)[0]
        plot.save_figure(plot.plot_kernel_grid(curves, estimator.support), out / "kernels.png")


def _read_model_file(path: Path) -> tuple[Any, str]:
    """The estimator saved in ``path`` (a ``model.json`` of ``tpp fit --out``) and its model name; anything else
    (no file, not JSON, JSON that is not such an object, fields of the wrong kind) is a ``ValueError`` naming
    the file, so the commands end with one line instead of a traceback."""
    from tpp.hawkes import from_dict

    if path.is_dir():  # the --out folder of `tpp fit`: a classic model's JSON or a trained model's weights
        found = [path / name for name in ("model.json", "model.pt") if (path / name).exists()]
        if not found:
            raise FileNotFoundError(f"{path}: no model.json or model.pt in this folder (write one with `tpp fit --out`)")
        path = found[0]
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file")
    with path.open("rb") as handle:
        binary = handle.read(2) == b"PK"  # a torch file (zip) written by tpp.table.save
    if binary:
        model = model_table.load(path)
        return model, model_table.spec_of(model).name
    try:
        params = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(params, dict) or not isinstance(params.get("model"), str):
        shown = json.dumps(params)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise ValueError(f"{path}: not a model file (a JSON object with a \"model\" name, as `tpp fit --out` writes), "
                         f"got {shown}")
    try:
        return from_dict(params), params["model"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        message = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
        raise ValueError(f"{path}: not a valid {params['model']} model file: {message}") from None


@app.command("eval")
@_user_errors
def eval_cmd(
    model_file: Annotated[Path, typer.Option(
        "--model-file", help="model.json / model.pt written by `tpp fit --out` (or that folder).")],
    data: Annotated[str, typer.Option(help="Registered data set name or a file.")],
    split: Annotated[Optional[str], typer.Option(help="Split to evaluate (train/val/test); default all.")] = None,
    t_end: Annotated[Optional[float], typer.Option("--t-end", help="Observation window end for every sequence.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Score a saved model on data: log-likelihood per event and time-rescaling KS test."""
    from tpp.metrics import time_rescaling

    estimator, name = _read_model_file(model_file)
    batch = _load(data, split, t_end)
    ll = float(estimator.log_likelihood(batch).detach().sum())
    gof = time_rescaling(estimator, batch)
    result = {
        "model": name, "num_events": batch.num_events, "log_likelihood": ll,
        "log_likelihood_per_event": ll / max(batch.num_events, 1), "ks_statistic": gof.ks_statistic,
        "ks_pvalue": gof.ks_pvalue,
    }
    typer.echo(json.dumps(result) if json_output else "\n".join(f"{k:>26}: {v}" for k, v in result.items()))


def _numbers(text: str, flag: str) -> list[float]:
    """A comma-separated list of numbers given to ``flag`` (a ``ValueError`` naming the flag and the entry)."""
    values = []
    for part in text.split(","):
        try:
            values.append(float(part))
        except ValueError:
            raise ValueError(f"{flag}: {part.strip()[:40]!r} is not a number (expected comma-separated numbers)") from None
    return values


@app.command()
@_user_errors
def simulate(
    out: Annotated[Path, typer.Option(help="Output file (.csv, .parquet or .npz).")],
    model_file: Annotated[Optional[Path], typer.Option("--model-file", help="model.json from `tpp fit --out`.")] = None,
    baseline: Annotated[Optional[str], typer.Option(help="Comma-separated baselines, e.g. 0.5,0.3.")] = None,
    adjacency: Annotated[Optional[str], typer.Option(help="Rows separated by ';', e.g. '0.3,0.1;0.2,0.4'.")] = None,
    decay: Annotated[float, typer.Option(help="Exponential decay.", callback=in_range(0.0, math.inf, low_open=True,
                                                                                    high_open=True))] = 1.0,
    t_end: Annotated[float, typer.Option("--t-end", help="Window end of each sequence (they start at 0).",
                                         callback=in_range(0.0, math.inf, low_open=True, high_open=True))] = 100.0,
    num_sequences: Annotated[int, typer.Option("--num-sequences", "-n", min=1, help="Number of sequences.")] = 1,
    seed: Annotated[int, typer.Option(min=0, help="Random seed.")] = 0,
    max_events: Annotated[Optional[int], typer.Option(
        "--max-events", min=1, help="Cap on the events simulated over all sequences (default: the model's, 5e7); "
                                    "an explosive model stops there with an error.")] = None,
) -> None:
    """Simulate an exponential Hawkes (or saved) model exactly and write the events."""
    from tpp.hawkes import ExpHawkes
    from tpp.io import write_events

    if model_file is not None:
        estimator, _ = _read_model_file(model_file)
    else:
        if baseline is None or adjacency is None:
            raise ValueError("give --model-file, or --baseline and --adjacency")
        mu = np.array(_numbers(baseline, "--baseline"))
        rows = [_numbers(row, "--adjacency") for row in adjacency.split(";")]
        if any(len(row) != mu.size for row in rows) or len(rows) != mu.size:
            raise ValueError(f"--adjacency must be {mu.size}x{mu.size} to match --baseline (rows separated by ';', "
                             f"entries by ','), got {adjacency[:60]!r}{'...' if len(adjacency) > 60 else ''}")
        estimator = ExpHawkes.from_params(mu, np.array(rows), decay)
    start = time.perf_counter()
    cap = {} if max_events is None else {"max_events": max_events}
    batch = estimator.sample(num_sequences, t_end, generator=seed, **cap)
    write_events(batch, out)
    typer.echo(f"wrote {batch.num_events} events in {num_sequences} sequence(s) to {out} ({time.perf_counter() - start:.2f} s)", err=True)


@app.command()
@_user_errors
def report(
    data: Annotated[str, typer.Option(help="Registered data set name.")] = "bookorder",
    out: Annotated[Path, typer.Option(help="Folder for the table and the plots.")] = Path("runs/report"),
    train_split: Annotated[str, typer.Option(help="Split to fit on.")] = "train",
    test_split: Annotated[str, typer.Option(help="Split to score on.")] = "test",
) -> None:
    """The main job: fit Poisson, exponential and sum-of-exponentials Hawkes; compare; plot."""
    from tpp import datasets
    from tpp.report import compare_models, write_report

    start = time.perf_counter()
    train = datasets.load(data, split=train_split)
    test = datasets.load(data, split=test_split)
    num_marks = train.num_marks
    typer.echo(f"{data}: train {len(train)} sequences / {train.num_events} events, test {len(test)} / {test.num_events}, {num_marks} mark(s)", err=True)
    reports = compare_models(train, test)
    table = write_report(reports, train, test, out, title=f"Classic models on {data}")
    typer.echo(table.to_string(index=False))
    typer.echo(f"\nplots and tables in {out.resolve()}: " + ", ".join(sorted(p.name for p in out.iterdir())))
    typer.echo(f"total {time.perf_counter() - start:.1f} s", err=True)


def _names(text: str | None) -> list[str] | None:
    """A comma-separated option as a list (None when not given)."""
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    return names or None


@app.command()
@_user_errors
def bench(
    suite: Annotated[Suite, typer.Option(help="Benchmark suite: likelihood = every model x the registry's event datasets.")] = Suite.LIKELIHOOD,
    out: Annotated[Path, typer.Option(help="Folder for the cells, CSV, Markdown, PNG plots and environment.json; rerunning resumes.")] = Path("runs/bench"),
    quick: Annotated[bool, typer.Option("--quick/--full", help="--quick: 3 seeds, 5 epochs, small cut data (under 10 minutes on 2 cores); --full (the default): whole datasets, published splits, at most 100 epochs with early stopping (patience 10), 3 seeds.")] = False,
    models: Annotated[Optional[str], typer.Option(help="Comma-separated models (default: every neural model and Poisson, ExpHawkes, SumExpHawkes).")] = None,
    dataset_names: Annotated[Optional[str], typer.Option("--datasets", help="Comma-separated registry datasets (default: the suite's event datasets, tpp.bench.DATASETS).")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Comma-separated seeds (default 0,1,2).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Cap on neural training epochs (default 100; --quick 5).")] = None,
    patience: Annotated[Optional[int], typer.Option(help="Epochs without a better validation log-likelihood that end a neural fit (default 10; --quick 5).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Sequences per minibatch (default 32; --quick 16).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate (default 3e-3; --quick 1e-2).")] = None,
    hidden_size: Annotated[Optional[int], typer.Option("--hidden-size", help="Hidden size of the neural models (default 32).")] = None,
    max_predictions: Annotated[Optional[int], typer.Option("--max-predictions", help="Forecasts per test split (default 1000; --quick 100).")] = None,
    max_hawkes_marks: Annotated[Optional[int], typer.Option("--max-hawkes-marks", help="Skip the Hawkes models above this many types (default 100).")] = None,
    max_quadrature_marks: Annotated[Optional[int], typer.Option("--max-quadrature-marks", help="In --full runs, skip the neural models that integrate every type's intensity at every node (NHP, THP, SAHP, AttNHP) above this many types (default 1000).")] = None,
    rescale: Annotated[bool, typer.Option(help="Divide times by the training split's mean gap for fitting (numbers reported in data units).")] = True,
    threads: Annotated[int, typer.Option(help="Threads for torch and numba (one per pool: two pools on two cores fight).")] = 1,
    progress: Annotated[bool, typer.Option(help="tqdm progress bar on stderr.")] = True,
    collect: Annotated[bool, typer.Option(help="Compute nothing: gather the cells already finished in OUT (for the same settings) into its tables, plots and results.csv.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of the Markdown.")] = False,
) -> None:
    """Run a benchmark suite into OUT (resumable: finished cells are kept); write CSV, Markdown, PNG, environment.json."""
    import shlex

    import numba
    import torch

    from tpp.bench import run_suite

    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        seed_list = None if seeds is None else [int(s) for s in _names(seeds) or []]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    report = run_suite(
        suite, out, quick=quick, collect=collect, models=_names(models), names=_names(dataset_names), seeds=seed_list,
        epochs=epochs, patience=patience, batch_size=batch_size, lr=lr, hidden_size=hidden_size, max_predictions=max_predictions,
        max_hawkes_marks=max_hawkes_marks, max_quadrature_marks=max_quadrature_marks, rescale=rescale, command=shlex.join(["tpp", *sys.argv[1:]]), progress=progress,
    )
    if json_output:
        typer.echo(json.dumps({
            "suite": Suite(suite).value, "out": str(report.out_dir), "files": {k: str(v) for k, v in report.files.items()},
            "cells_computed": len(report.computed), "cells_reused": len(report.reused), "seconds": report.seconds,
            "table": json.loads(report.table.to_json(orient="records")),
        }))
        return
    typer.echo(report.markdown)
    typer.echo(f"written in {report.out_dir}: " + ", ".join(p.name for p in report.files.values()), err=True)
    typer.echo(f"{len(report.computed)} cells computed, {len(report.reused)} reused, {report.seconds:.0f} s", err=True)


ControlModelName = enum.Enum("ControlModelName", {  # type: ignore[misc]
    s.name.replace("-", "_"): s.name for s in model_table.specs(Family.TPP, Training.TRAINER) if not s.needs}, type=str)
"""``tpp control --model``: the table's neural event models (as :data:`tpp.control.CONTROL_MODELS`; the spatial
entries need locations the environment's events lack). Built here so the CLI imports without gymnasium."""


@app.command()
@_user_errors
def control(
    model: Annotated[ControlModelName, typer.Option(
        help="Neural event model learned from the logged episodes; the policy is trained inside it.",
    )] = ControlModelName.sahp,
    log_episodes: Annotated[int, typer.Option(
        "--log-episodes", min=5,
        help="Episodes of the random policy (p=0.5) logged on the true environment (benchmark: 400).")] = 200,
    epochs: Annotated[int, typer.Option(
        min=1, help="Epochs fitting the event model, early stopping on 20% of the logs (benchmark: 60).")] = 30,
    iterations: Annotated[int, typer.Option(
        min=1, help="Actor-critic iterations inside the learned model (benchmark: 80).")] = 80,
    rollouts: Annotated[int, typer.Option(
        min=2, help="Episodes rolled out in the learned model per iteration (benchmark: 32).")] = 32,
    eval_episodes: Annotated[int, typer.Option(
        "--eval-episodes", min=2,
        help="Episodes per policy on the true environment, the same seeds for every policy (benchmark: 200).")] = 50,
    lookahead_samples: Annotated[int, typer.Option(
        "--lookahead-samples", min=1,
        help="Monte Carlo copies per action of the one-step lookahead planner with the true parameters "
             "(benchmark: 128).")] = 32,
    seed: Annotated[int, typer.Option(min=0, help="Random seed (logging, fit, actor-critic, evaluation).")] = 0,
    out: Annotated[Optional[Path], typer.Option(
        help="Folder for control.json (the report, with each policy's returns per episode) and "
             "controlled_intensity.png.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Control an event stream (Qu et al. 2023): learn a neural TPP of a Hawkes environment from logged episodes,
    train an actor-critic policy inside it, and score it on the true environment beside no intervention, random
    and a one-step lookahead planner. The defaults (half the benchmark's logs and epochs, a quarter of its
    evaluation) take about 30 s on one core and beat no intervention by about 20% and random by about 40% (seed 0); the
    benchmark's sizes are in each option's help (benchmarks/hawkes_control.py)."""
    try:
        from tpp.control import run_control
    except ImportError as exc:  # the optional extra `control` (gymnasium) is missing: one line, not a traceback
        raise ValueError(str(exc)) from None
    from tpp.commandline import jsonable
    from tpp.io import atomic_write
    from tpp.plot import save_figure

    report = run_control(model=model.value, log_episodes=log_episodes, epochs=epochs,
                         iterations=iterations, rollouts=rollouts, eval_episodes=eval_episodes,
                         lookahead_samples=lookahead_samples, seed=seed, progress=sys.stderr.isatty())
    result = report.to_dict()
    if out is not None:
        with atomic_write(out / "control.json", ".json") as tmp:
            tmp.write_text(json.dumps(jsonable(report.to_dict(returns=True)), indent=2, allow_nan=False) + "\n")
        save_figure(report.plot(), out / "controlled_intensity.png")  # the scored episode with the largest outbreak
    if json_output:
        echo_json(result)
        return
    typer.echo(f"returns on the true environment, {eval_episodes} episodes per policy (same seeds):")
    typer.echo(f"{'policy':40s} {'mean':>8s} {'se':>6s}")
    for score in result["returns"].values():
        typer.echo(f"{score['label']:40s} {score['mean']:8.3f} {score['se']:6.3f}")

    def percent(x: float) -> str:
        return "n/a (baseline return 0)" if math.isnan(x) else f"{100 * x:+.1f}%"

    typer.echo(f"trained vs no intervention: {percent(report.improvement_over_none)}; vs random: "
               f"{percent(report.improvement_over_random)}; gap to lookahead: {report.gap_to_lookahead:+.3f} return")
    typer.echo(f"seconds: { {k: round(v, 1) for k, v in report.seconds.items()} }")
    if out is not None:
        typer.echo(f"written: control.json, controlled_intensity.png in {out}")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
