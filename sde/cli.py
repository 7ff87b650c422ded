"""The ``sde`` command: ``fit | eval | datasets | spiking`` for continuous-time series models.

```
sde fit --model lsde --data basicmotions --task classify --missing 0.3 --json
sde fit --model latent-sde --data path/to/Train.ts --test path/to/Test.ts --task interpolate --out run/
sde eval --model-file run/ --data path/to/Train.ts --task interpolate --json   # the fitted settings, same numbers
sde fit --model gru --data airline --task forecast --window 24 --json          # one long series, cut into windows
sde fit --model gru --data physionet2012 --task classify --json                 # in-hospital mortality: AUROC, AUPRC
sde fit --model gru-d --data physionet2012 --task forecast --likelihood laplace --json   # a median forecaster (MAE)
sde fit --model latent-ode --data physionet2012 --task classify --json          # its own classifier on z0 (joint)
sde fit --model latent-sde --data physionet2012 --task interpolate --max-series 200 --json   # a seeded subset
sde datasets --json
sde spiking simulate --mu 1.2 --t1 5 --trials 64 --out trains.csv --plot raster.png --json   # spike trains
sde spiking fit --data trains.csv --mu0 0.8 --epochs 30 --average 10 --json --out run/       # input current by MMD
```

``--data`` is a registry name (``sde datasets``) or a ``.ts`` (UCR/UEA), ``.tsf`` (Monash) or ``.csv``
file. The test part is ``--test`` (a file or a name), else the registry's test split, else a seeded
80/20 split of the data (stratified by class; with ``--window``, the last windows of each series).
With enough training series (20 or more) 15 % of them are held back for early stopping. The JSON of
``fit`` has the settings, ``n_train`` / ``n_val`` / ``n_test``, ``train_seconds``, the scores
(``test_accuracy``, with two classes also ``test_auroc`` and ``test_auprc``; or ``test_mse``, ``test_mae``,
``test_log_likelihood``, ``test_crps``, ``coverage_50``, ``coverage_90`` and ``n_test_values``) and
``stats``, the solver work of the test evaluation (solves, function evaluations, steps). ``--max-series N``
keeps a seeded random ``N`` series of the training and of the test part (quick runs on large sets; said in
the JSON as ``max_series``). The tasks, the ``--missing`` protocol and the metrics are those of
:mod:`sde.tasks`; models are named, built, trained and saved through the one model table
(:mod:`tpp.table`, :mod:`sde.table`). The machinery (one-line errors with exit code 2, JSON printing,
data by name or path) is the ``tpp`` command's (:mod:`tpp.commandline`).
"""

from __future__ import annotations

import enum
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import torch
import typer

from tpp.commandline import (
    EpochsOption,
    JsonOption,
    LrOption,
    SeedOption,
    command_app,
    echo_result,
    in_range,
    is_file_argument,
    load_data,
    user_errors,
)
from sde.spiking_cli import spiking_app  # imports torch models only inside its commands
from sde.tasks import TaskName

__all__ = ["MODEL_NAMES", "ModelName", "SERIES_FILE_SUFFIXES", "app", "load_parts", "read_series_file"]

app = command_app("Continuous-time models of irregular, partly observed series: fit, evaluate, list data sets.")
app.add_typer(spiking_app, name="spiking")

SERIES_FILE_SUFFIXES = (".ts", ".tsf", ".csv")
"""Suffixes that make ``--data`` / ``--test`` a file (anything else is a registry name)."""

MODEL_NAMES = ("neural-cde", "lsde", "lnsde", "gsde", "gru", "neural-ode", "latent-sde", "neural-mjp", "latent-ode",
               "ode-rnn", "gru-d", "fractional-latent-sde", "scotch", "bayesian-neural-cde",
               "langevin-flow", "poisson-latent-sde", "process-diffusion")
"""The series models of the model table that ``sde fit`` offers (``sde.table`` also holds event models)."""

ModelName = enum.Enum("ModelName", {n.replace("-", "_"): n for n in MODEL_NAMES}, type=str)  # type: ignore[misc]
"""The ``--model`` choices (a str enum, so typer lists them and refuses others)."""


class Likelihood(str, enum.Enum):
    """The ``--likelihood`` choices: the observation model of a series model's forecast / regression head
    (:data:`sde.models.heads.LIKELIHOODS`; ``laplace`` predicts the median, for MAE)."""

    GAUSSIAN = "gaussian"
    LAPLACE = "laplace"


CLI_OPTIONS = {"process-diffusion": {"missing": "observed"}}
"""Constructor options ``sde fit`` builds a model with: the command's data are partly observed, so process
diffusion trains on the observed entries (``missing="observed"``; the library default refuses NaN)."""

TEST_SPLIT_FRACTIONS = (0.8, 0.2)
VAL_FRACTIONS = (0.85, 0.15)
MIN_SERIES_FOR_VAL = 20
MODEL_FILE = "model.pt"
RESULT_FILE = "result.json"
MASKS_FILE = "test_masks.npz"

# Seeds of the parts of one run (sde.tasks.derived_seed(seed, key)): each part has its own stream.
_SPLIT_KEY, _VAL_KEY, _TRAIN_KEY, _VALPART_KEY, _TEST_KEY, _SUBSET_KEY = 0, 1, 10, 11, 12, 13


# --------------------------------------------------------------------------- data
def read_series_file(path: Path) -> Any:
    """A ``.ts``, ``.tsf`` or ``.csv`` file as a :class:`~sde.series.SeriesBatch` (by its suffix)."""
    from sde import datasets

    suffix = path.suffix.lower()
    if suffix == ".ts":
        return datasets.read_ts(path)
    if suffix == ".tsf":
        return datasets.read_tsf(path)
    if suffix == ".csv":
        return datasets.read_csv_series(path)
    raise ValueError(f"{path}: unknown series file type {suffix!r}; use one of {', '.join(SERIES_FILE_SUFFIXES)}")


def _read(data: str, split: str | None = None) -> Any:
    """``data`` read as a file, or the registry's ``split`` of it (None: everything)."""
    from sde import datasets

    return load_data(data, suffixes=SERIES_FILE_SUFFIXES, read_file=read_series_file,
                     load_registered=lambda name: datasets.load(name, split))


def _split(batch: Any, fractions: tuple[float, ...], seed: int, what: str) -> tuple[Any, ...]:
    try:
        return batch.split(fractions, seed=seed)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}; give a larger data set or --test") from None


def load_parts(data: str, test: str | None, seed: int, window: int | None = None) -> tuple[Any, Any, str]:
    """``(train, test, where the test part came from)``: ``--test``, else the registry's test split, else a
    split of ``data``: seeded 80/20 (stratified by class), or with ``window`` chronological (the last
    20 % of each series' windows, so no test window lies before a training window of its series)."""
    from sde import datasets
    from sde.tasks import derived_seed, last_windows, windows

    def cut(batch: Any) -> Any:
        return batch if window is None else windows(batch, window)[0]

    registered = not is_file_argument(data, SERIES_FILE_SUFFIXES)
    train = None
    if registered:
        datasets.card(data)  # an unknown name fails here, with the closest names
        try:
            train = datasets.load(data, "train")
        except KeyError:  # no archive split: all of it
            train = None
        if train is not None and test is None:
            return cut(train), cut(datasets.load(data, "test")), f"{data} test split"
        whole = train if train is not None else datasets.load(data, None)
    else:
        whole = _read(data)
    if test is not None:
        test_batch = _read(test)
        if test_batch.num_channels != whole.num_channels:
            raise ValueError(f"{test}: {test_batch.num_channels} channels, but {data} has {whole.num_channels}")
        return cut(whole), cut(test_batch), test
    if window is not None:
        pieces, owner = windows(whole, window)
        last = last_windows(owner, TEST_SPLIT_FRACTIONS[1])
        if not bool(last.any()) or bool(last.all()):
            raise ValueError(f"{data}: {len(pieces)} window(s) of {window} rows; a chronological split needs a "
                             "series with at least 2 windows (use a shorter --window, or --test)")
        return (pieces[torch.nonzero(~last).flatten()], pieces[torch.nonzero(last).flatten()],
                f"last {round(100 * TEST_SPLIT_FRACTIONS[1])} % of the {window}-row windows of {data}")
    if len(whole) < 2:
        raise ValueError(f"{data}: {len(whole)} series cannot be split into train and test; cut it into "
                         "windows with --window ROWS, or give --test")
    train, test_batch = _split(whole, TEST_SPLIT_FRACTIONS, derived_seed(seed, _SPLIT_KEY), data)
    return train, test_batch, f"seeded {round(100 * TEST_SPLIT_FRACTIONS[1])} % split of {data}"


# --------------------------------------------------------------------------- models
def _check_task(model: str, task: TaskName) -> None:
    from sde.tasks import supported_tasks
    from tpp import table

    import sde.table  # noqa: F401 - registers the sde entries of the model table

    tasks = supported_tasks(table.spec(model).cls)
    if task not in tasks:
        raise ValueError(f"model {model} does not do --task {task.value}; it supports --task "
                         f"{' or '.join(t.value for t in tasks)}")


def _build(model: str, task: TaskName, train: Any, test: Any, hidden_size: int | None, seed: int,
           options: dict[str, Any] | None = None) -> Any:
    """The model from the table, shaped for the data and the task (``options``: further constructor
    arguments, which win over the task's defaults below)."""
    from sde.models._base import SeriesModel
    from sde.models._bidir import TwoWay
    from sde.table import JOINT_CLASSIFIERS
    from tpp import table

    overrides: dict[str, Any] = {} if hidden_size is None else {"hidden_size": hidden_size}
    overrides.update(CLI_OPTIONS.get(table.spec(model).name, {}))
    overrides.update(options or {})
    joint = JOINT_CLASSIFIERS.get(table.spec(model).name)
    if task is TaskName.CLASSIFY and joint is not None:
        # a latent model with its own classifier on z0, trained jointly with its ELBO (as the paper does)
        classes = max(train.num_classes or 0, test.num_classes or 0)
        return table.build(model, train, seed=seed, **{joint: classes}, **overrides)
    if task is TaskName.CLASSIFY and not issubclass(table.spec(model).cls, SeriesModel):
        # a generative model of the values classifies by one model per class and Bayes' rule
        classes = max(train.num_classes or 0, test.num_classes or 0)
        return table.build("generative-classifier", train, seed=seed, num_classes=classes, base=model,
                           base_args=overrides)
    if issubclass(table.spec(model).cls, SeriesModel):
        classes = max(train.num_classes or 0, test.num_classes or 0)
        overrides.update(task=task.head, output_size=classes if task is TaskName.CLASSIFY else train.num_channels)
    if task is not TaskName.FORECAST and issubclass(table.spec(model).cls, TwoWay):
        # Interpolation and classification may read each series both ways (sde.models._bidir: PhysioNet 2012,
        # GRU-D interpolation MAE 11.92 both ways vs 13.48 one way); a forecast stays causal.
        overrides.setdefault("bidirectional", True)
    return table.build(model, train, seed=seed, **overrides)


def _likelihood_option(name: str, task: TaskName, likelihood: Likelihood | str | None) -> dict[str, Any]:
    """The constructor option of ``--likelihood`` (none when not given); a ValueError (exit 2) for a model
    without that option or for classification, rather than a flag silently ignored."""
    import inspect

    from tpp import table

    if likelihood is None:
        return {}
    value = Likelihood(likelihood).value
    from sde.models._base import SeriesModel

    cls = table.spec(name).cls
    if not (issubclass(cls, SeriesModel) and ("likelihood" in inspect.signature(cls).parameters
                                              or any(p.kind is inspect.Parameter.VAR_KEYWORD
                                                     for p in inspect.signature(cls).parameters.values()))):
        raise ValueError(f"--likelihood: model {name} has no likelihood option (it is for the discriminative series "
                         "models: gru, gru-d, ode-rnn, neural-cde, neural-ode, lsde, lnsde, gsde)")
    if task is TaskName.CLASSIFY and value != "gaussian":
        raise ValueError(f"--likelihood {value}: for --task forecast or interpolate; a classifier's head is a softmax")
    return {"likelihood": value}


def _likelihood_record(model: Any) -> dict[str, Any]:
    """``{"likelihood": ...}`` for a model with a head's observation model (the JSON says which), else ``{}``."""
    value = getattr(model, "likelihood", None)
    return {"likelihood": value} if isinstance(value, str) else {}


def _hidden_size(model: Any) -> int | None:
    """The model's hidden size: its constructor argument as built, else the constructor's default."""
    import inspect

    from tpp import table

    args = table.constructor_args(model)
    if "hidden_size" in args:
        return int(args["hidden_size"])
    parameter = inspect.signature(type(model)).parameters.get("hidden_size")
    return None if parameter is None or parameter.default is inspect.Parameter.empty else int(parameter.default)


def _settings(**values: Any) -> dict[str, Any]:
    return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in values.items()}


# --------------------------------------------------------------------------- commands
# Options of fit and eval (eval's defaults are the fitted run's settings, read from result.json).
DataOption = Annotated[str, typer.Option(help="Registry name (see `sde datasets`) or a .ts / .tsf / .csv file.")]
TaskOption = Annotated[TaskName, typer.Option(
    help="classify (the labels), forecast (each series' last rows), interpolate (held-out values).")]
TestOption = Annotated[Optional[str], typer.Option(
    help="Test file or name (default: the registry's test split, else a split of --data; eval: as fitted).")]
MissingOption = Annotated[Optional[float], typer.Option(callback=in_range(0.0, 1.0, high_open=True), help=(
    "Share of each channel's values blanked at random (seeded) before training and testing (eval: as fitted)."))]
HoldoutOption = Annotated[Optional[float], typer.Option(callback=in_range(0.0, 1.0, low_open=True, high_open=True),
                                                        help="interpolate: share of the observed values held out.")]
HorizonOption = Annotated[Optional[float], typer.Option(callback=in_range(0.0, 1.0, low_open=True, high_open=True),
                                                        help="forecast: share of each series' rows predicted.")]
WindowOption = Annotated[Optional[int], typer.Option(min=2, help=(
    "Cut every series into windows of this many rows (long forecasting series; the split is then chronological)."))]
MaxSeriesOption = Annotated[Optional[int], typer.Option("--max-series", min=1, help=(
    "Keep a seeded random N of the training series and N of the test series (quick runs on large sets; "
    "eval: as fitted)."))]


def _limit(train: Any, test: Any, max_series: int | None, seed: int) -> tuple[Any, Any]:
    """The parts cut to ``--max-series`` series each (:func:`sde.tasks.subsample`, one seed per part)."""
    from sde.tasks import derived_seed, subsample

    if max_series is None:
        return train, test
    return (subsample(train, max_series, derived_seed(seed, _SUBSET_KEY, 0)),
            subsample(test, max_series, derived_seed(seed, _SUBSET_KEY, 1)))


@app.command()
@user_errors
def fit(
    model: Annotated[ModelName, typer.Option(help="Model to fit (a name of the model table).")],
    data: DataOption,
    task: TaskOption,
    test: TestOption = None,
    missing: MissingOption = 0.0,
    holdout: HoldoutOption = 0.2,
    horizon: HorizonOption = 0.2,
    window: WindowOption = None,
    max_series: MaxSeriesOption = None,
    epochs: EpochsOption = 5,
    batch_size: Annotated[Optional[int], typer.Option(
        "--batch-size", min=1, help="Series per minibatch (default: the stable-SDE reference rule, 16..128).")] = None,
    lr: LrOption = 1e-2,
    hidden_size: Annotated[Optional[int], typer.Option(
        "--hidden-size", min=2, help="Hidden size (default: the model table's).")] = None,
    likelihood: Annotated[Optional[Likelihood], typer.Option(
        "--likelihood", help=("Observation model of the forecast / interpolation head of a discriminative series "
                              "model: gaussian (predicts the mean; the default) or laplace (the median, for MAE).")
    )] = None,
    seed: SeedOption = 0,
    out: Annotated[Optional[Path], typer.Option(
        help="Folder for model.pt and result.json (for `sde eval`) and the run's checkpoints.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the run whose checkpoints are in --out (e.g. after a kill).")] = False,
    checkpoint_every: Annotated[Optional[int], typer.Option(
        "--checkpoint-every", min=1, help="Also checkpoint every N steps within an epoch (needs --out).")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace the run whose checkpoints are in --out (without it a fresh run refuses it).")] = False,
    json_output: JsonOption = False,
) -> None:
    """Fit a model on the training part and score it on the test part."""
    from sde.tasks import batch_size_rule, derived_seed, evaluate, make_task
    from tpp import table
    from tpp.commandline import check_run_options, fit_in_run_folder
    from tpp.table import Family, Training

    name = ModelName(model).value
    task = TaskName(task)
    _check_task(name, task)
    check_run_options(out, resume, checkpoint_every, overwrite, table.spec(name).training is Training.TRAINER, name,
                      table.names(Family.SDE, Training.TRAINER))
    model_options = _likelihood_option(name, task, likelihood)
    train_raw, test_raw, test_source = load_parts(data, test, seed, window)
    train_raw, test_raw = _limit(train_raw, test_raw, max_series, seed)
    if task is TaskName.CLASSIFY and (train_raw.labels is None or test_raw.labels is None):
        raise ValueError(f"{data if train_raw.labels is None else test_source}: field 'labels': the series have "
                         "no class labels; use --task forecast or --task interpolate")
    val_raw = None
    if len(train_raw) >= MIN_SERIES_FOR_VAL:
        try:  # early stopping on held-back training series; without them, the last epoch's weights
            train_raw, val_raw = train_raw.split(VAL_FRACTIONS, seed=derived_seed(seed, _VAL_KEY))
        except ValueError:  # a stratified split left a part empty (many small classes)
            val_raw = None
    options = dict(missing=missing, holdout=holdout, horizon=horizon)
    train = make_task(train_raw, task, seed=derived_seed(seed, _TRAIN_KEY), train=True, **options)
    val = None if val_raw is None else make_task(val_raw, task, seed=derived_seed(seed, _VALPART_KEY),
                                                 scale=train.scale, **options)
    test_part = make_task(test_raw, task, seed=derived_seed(seed, _TEST_KEY), scale=train.scale, **options)
    estimator = _build(name, task, train.inputs, test_raw, hidden_size, seed, options=model_options)
    batch = batch_size if batch_size is not None else batch_size_rule(len(train.inputs))
    # The trainer's checkpoints go to --out (the run owns it); a model fitted in one go has none.
    trained = table.spec_of(estimator).training is Training.TRAINER
    if not trained:
        check_run_options(out, resume, checkpoint_every, overwrite, False, table.spec_of(estimator).name, ())
    estimator, record = fit_in_run_folder(estimator, train.inputs, None if val is None else val.inputs,
                                          out if trained else None, resume=resume, checkpoint_every=checkpoint_every,
                                          overwrite=overwrite, epochs=epochs, batch_size=batch, lr=lr, seed=seed,
                                          progress=not json_output and sys.stderr.isatty())
    scores = evaluate(estimator, test_part, seed=seed)
    settings = _settings(model=name, data=data, test=test, task=task, seed=seed, window=window,
                         max_series=max_series, **options)
    result = {
        **settings, "test_source": test_source,
        "epochs": epochs, "epochs_run": record.epochs_run, "batch_size": batch, "lr": lr,
        "hidden_size": _hidden_size(estimator),
        **_likelihood_record(estimator),
        "n_train": len(train.inputs), "n_val": 0 if val is None else len(val.inputs), "n_test": len(test_part.inputs),
        "train_seconds": record.seconds,
        **scores,
        "parameters": sum(p.numel() for p in estimator.parameters()),
        "torch_threads": torch.get_num_threads(),
    }
    if out is not None:
        _save_run(out, estimator, settings, train.scale, result, test_part)
        result["out"] = str(out)
    echo_result(result, json_output)


def _save_run(out: Path, model: Any, settings: dict[str, Any], scale: Any, result: dict[str, Any],
              test_part: Any) -> None:
    """``model.pt`` (the table's state dict + constructor arguments), ``result.json`` (the settings that
    rebuild the test part, the target scale and the result) and ``test_masks.npz`` (the test part's
    seeded masks ``[B, L(, C)]`` with the series ids and row times, :func:`sde.tasks.save_masks`: a peer can
    be scored on the same held-out values), each written atomically."""
    from sde.tasks import save_masks
    from tpp import table
    from tpp.commandline import jsonable
    from tpp.io import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    table.save(model, out / MODEL_FILE)
    save_masks(out / MASKS_FILE, test_part)
    record = {"settings": settings, "target_scale": None if scale is None else {"mean": scale.mean, "std": scale.std},
              "result": result}
    with atomic_write(out / RESULT_FILE, ".json") as tmp:
        tmp.write_text(json.dumps(jsonable(record), indent=2, allow_nan=False))


def _read_run(model_file: Path) -> tuple[Path, dict[str, Any]]:
    """The model file and the saved run record (``result.json`` beside it; empty when there is none)."""
    path = model_file / MODEL_FILE if model_file.is_dir() else model_file
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file (write one with `sde fit --out DIR`)")
    record_path = path.parent / RESULT_FILE
    if not record_path.is_file():
        return path, {}
    try:
        return path, json.loads(record_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{record_path}: invalid JSON ({exc})") from None


@app.command("eval")
@user_errors
def eval_cmd(
    model_file: Annotated[Path, typer.Option("--model-file", help="The --out folder of `sde fit` (or its model.pt).")],
    data: DataOption,
    task: TaskOption,
    test: TestOption = None,
    missing: MissingOption = None,
    holdout: HoldoutOption = None,
    horizon: HorizonOption = None,
    window: WindowOption = None,
    max_series: MaxSeriesOption = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the split, masks and noise (default: as fitted).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Score a model saved by `sde fit --out` on the test part of the data (same settings, same numbers)."""
    from sde.models._base import SeriesModel
    from sde.tasks import TargetScale, derived_seed, evaluate, make_task
    from tpp import table

    import sde.table  # noqa: F401 - registers the sde entries of the model table

    task = TaskName(task)
    path, record = _read_run(model_file)
    saved = record.get("settings", {})

    def pick(value: Any, key: str, default: Any) -> Any:
        return value if value is not None else saved.get(key, default)

    seed_, missing_ = int(pick(seed, "seed", 0)), float(pick(missing, "missing", 0.0))
    options = dict(missing=missing_, holdout=float(pick(holdout, "holdout", 0.2)),
                   horizon=float(pick(horizon, "horizon", 0.2)))
    test, window = pick(test, "test", None), pick(window, "window", None)
    max_series = pick(max_series, "max_series", None)
    estimator = table.load(path)
    name = table.spec_of(estimator).name
    _check_task(name, task)
    if isinstance(estimator, SeriesModel) and estimator.task is not task.head:
        raise ValueError(f"{path}: the model was fitted for {estimator.task.value}, not --task {task.value}")
    scale = record.get("target_scale")
    scale = None if scale is None else TargetScale(tuple(scale["mean"]), tuple(scale["std"]))
    if task is not TaskName.CLASSIFY and scale is None:
        raise ValueError(f"{path.parent / RESULT_FILE}: no target_scale saved; eval needs the result.json of `sde fit --out`")
    train_raw, test_raw, test_source = load_parts(data, test, seed_, window)
    _, test_raw = _limit(train_raw, test_raw, max_series, seed_)
    test_part = make_task(test_raw, task, seed=derived_seed(seed_, _TEST_KEY), scale=scale, **options)
    scores = evaluate(estimator, test_part, seed=seed_)
    result = {**_settings(model=name, data=data, test=test, task=task, seed=seed_, window=window,
                          max_series=max_series, **options),
              "test_source": test_source, "model_file": str(path), "n_test": len(test_part.inputs), **scores}
    echo_result(result, json_output)


@app.command("datasets")
@user_errors
def datasets_cmd(json_output: JsonOption = False) -> None:
    """List the registered time-series data sets: task, series, rows, channels, classes, licence."""
    from sde import datasets

    table = datasets.describe()
    if json_output:
        typer.echo(table.to_json(orient="records"))
        return
    shown = table.copy()
    shown["licence"] = shown["licence"].astype(str).str.slice(0, 42)
    typer.echo(shown.to_string(index=False))


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
