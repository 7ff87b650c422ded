"""The machinery the ``tpp`` and ``sde`` commands share: one way to fail, to print and to find data.

A command of either package is a typer function wrapped by :func:`user_errors` in an app made by
:func:`command_app`; it reads ``--data`` through :func:`load_data` (a path is read by the family's
file reader, anything else is a registry name) and prints with :func:`echo_result` (``--json``: one JSON
object on stdout and nothing else there). Models are named, built, saved and loaded through the one
model table (:mod:`tpp.table`).

Bad input never shows a traceback: a data, card or value error ends the command with exit code 2
and ONE line on stderr (``error: ...``, naming the file, sequence or series, row and field where the
data layer knows them), and so does a bad flag (an unknown ``--model``, a missing ``--data``): the
apps' group class prints click's usage errors on one line instead of the usage box.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import numpy as np
import typer
from typer.core import TyperGroup

__all__ = [
    "BatchSizeOption",
    "EpochsOption",
    "JsonOption",
    "LrOption",
    "OneLineErrorGroup",
    "OutOption",
    "SeedOption",
    "command_app",
    "echo_error",
    "echo_json",
    "echo_result",
    "in_range",
    "is_file_argument",
    "jsonable",
    "load_data",
    "user_errors",
]

_F = TypeVar("_F", bound=Callable[..., Any])

# --------------------------------------------------------------------------- options both commands share
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout (and nothing else there).")]
EpochsOption = Annotated[int, typer.Option(min=1, help="Training epochs (early stopping on validation where there is one).")]
BatchSizeOption = Annotated[int, typer.Option("--batch-size", min=1, help="Sequences per minibatch.")]
def in_range(low: float, high: float, *, low_open: bool = False,
             high_open: bool = False) -> Callable[[float | None], float | None]:
    """An option callback refusing values outside ``[low, high]`` (``low_open`` / ``high_open``: that end
    excluded); a bad value is a usage error, so one line and exit code 2. ``None`` (not given) passes."""
    text = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    def check(value: float | None) -> float | None:
        if value is None:
            return value
        inside = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not inside:
            raise typer.BadParameter(f"must be in {text}, got {value}")
        return value

    return check


LrOption = Annotated[float, typer.Option(callback=in_range(0.0, math.inf, low_open=True), help="Peak learning rate.")]
SeedOption = Annotated[int, typer.Option(help="Random seed (splits, initialisation, minibatches, noise).")]
OutOption = Annotated[Optional[Path], typer.Option(help="Folder for the saved model and the result.")]


# --------------------------------------------------------------------------- failing
def echo_error(message: object) -> None:
    """``error: <message>`` on ONE line of stderr (newlines and runs of spaces collapsed)."""
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)


def _user_error_types() -> tuple[type[BaseException], ...]:
    from tpp.events import EventDataError  # the base of the event and the series data errors
    from tpp.train import CheckpointError  # a run that does not own its folder

    return (EventDataError, CheckpointError, ValueError, KeyError, FileNotFoundError, OSError)


def user_errors(func: _F) -> _F:
    """Turn bad input (data, card, value and file errors) into one line on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except _user_error_types() as exc:
            # a KeyError's str() is its repr (quoted); its message is the first argument
            echo_error(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


class OneLineErrorGroup(TyperGroup):
    """A typer group whose usage errors (bad or missing flags) are one ``error:`` line and exit code 2.

    Typer prints click's usage errors as a box of several lines; a script reading stderr wants one
    line, as for bad data. Everything else (help, exit codes of the commands) is click's.
    """

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer vendors click
        from typer.exceptions import Abort

        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as exc:  # no arguments at all: the help, as click shows it
            typer.echo(exc.ctx.get_help(), err=True)
            sys.exit(exc.exit_code)
        except ClickException as exc:
            echo_error(exc.format_message())
            sys.exit(exc.exit_code)
        except Abort:
            echo_error("aborted")
            sys.exit(1)
        # without standalone mode click returns the command's value, or the code of an explicit exit
        sys.exit(code if isinstance(code, int) else 0)


def command_app(help: str) -> typer.Typer:
    """The typer app of a command: one-line usage errors, no shell-completion options, help without arguments."""
    return typer.Typer(cls=OneLineErrorGroup, add_completion=False, no_args_is_help=True, help=help)


# --------------------------------------------------------------------------- printing
def jsonable(value: Any) -> Any:
    """``value`` with numpy / torch scalars and arrays, paths and enums made JSON types; non-finite floats -> None."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "value") and hasattr(type(value), "__members__"):  # an Enum member
        return jsonable(value.value)
    return value


def echo_json(result: Mapping[str, Any]) -> None:
    """Print ``result`` as one line of strict JSON on stdout (NaN and infinities become null)."""
    typer.echo(json.dumps(jsonable(result), allow_nan=False))


def echo_result(result: Mapping[str, Any], json_output: bool, width: int = 26) -> None:
    """One JSON object (``json_output``), or aligned ``key: value`` lines for a person."""
    if json_output:
        echo_json(result)
        return
    for key, value in jsonable(result).items():
        typer.echo(f"{key:>{width}}: {value}")


# --------------------------------------------------------------------------- data by name or path
def is_file_argument(data: str, suffixes: Sequence[str]) -> bool:
    """Whether ``--data`` names a file: it exists, holds a path separator, or ends with one of the
    family's file ``suffixes`` (so a mistyped path is reported as a missing file, not as an unknown data
    set); else it is a registry name (registry names hold no separator)."""
    return (Path(data).exists() or "/" in data or os.sep in data
            or data.lower().endswith(tuple(s.lower() for s in suffixes)))


def load_data(data: str, *, suffixes: Sequence[str], read_file: Callable[[Path], Any],
              load_registered: Callable[[str], Any]) -> Any:
    """``read_file(path)`` when ``data`` names a file (:func:`is_file_argument`), else ``load_registered(name)``.

    A path that looks like a file but is not there raises ``FileNotFoundError`` naming it."""
    if is_file_argument(data, suffixes):
        path = Path(data)
        if not path.exists():
            raise FileNotFoundError(f"{data}: no such file")
        return read_file(path)
    return load_registered(data)


# --------------------------------------------------------------------------- runs that own their folder
ResumeOption = Annotated[bool, typer.Option(
    "--resume", help="Trained models: continue the run whose checkpoints are in --out (e.g. after a kill).")]
CheckpointEveryOption = Annotated[Optional[int], typer.Option(
    "--checkpoint-every", min=1, help="Trained models: also checkpoint every N steps within an epoch (needs --out).")]
OverwriteOption = Annotated[bool, typer.Option(
    "--overwrite", help="Replace the run whose checkpoints are in --out (without it a fresh run refuses that folder).")]


def check_run_options(out: Path | None, resume: bool, checkpoint_every: int | None, overwrite: bool, trained: bool,
                      model: str, trained_names: tuple[str, ...]) -> None:
    """Refuse flag combinations that cannot mean anything, before any data is read."""
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out, --overwrite replaces it: give one of them")
    asked = [flag for flag, on in (("--resume", resume), ("--checkpoint-every", checkpoint_every is not None)) if on]
    if asked and not trained:
        raise ValueError(f"{' and '.join(asked)}: {model} is fitted in one go, without checkpoints; they apply to the "
                         f"trained models ({', '.join(trained_names)})")
    if asked and out is None:
        raise ValueError(f"{' and '.join(asked)} {'need' if len(asked) > 1 else 'needs'} --out (the folder of the "
                         "run's checkpoints)")


def fit_in_run_folder(model: Any, train: Any, val: Any, out: Path | None, *, resume: bool,
                      checkpoint_every: int | None, overwrite: bool, **options: Any) -> tuple[Any, Any]:
    """:func:`tpp.table.fit_model` with the run's checkpoints in ``out``: a run owns its folder (a second
    run there, a resume of another run, or a fresh run over existing checkpoints without ``overwrite``
    exits 2 with one line); the trainer's warnings (e.g. a stale lock taken over) are one line each."""
    from tpp import table
    from tpp.train import CheckpointError

    if out is not None:
        options.update(checkpoint_dir=out, resume=resume, overwrite=overwrite, checkpoint_every=checkpoint_every)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fitted = table.fit_model(model, train, val, **options)
    except CheckpointError as exc:
        echo_error(exc)
        raise typer.Exit(code=2) from None
    finally:
        shown = [w for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
        for message in dict.fromkeys(str(w.message) for w in shown):
            typer.echo(f"warning: {' '.join(message.split())}", err=True)
    return fitted
