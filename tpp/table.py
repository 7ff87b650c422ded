"""The one table of model names: CLI name -> class, family, constructor defaults, serialisation, fitting.

Both CLIs, the report, the benchmarks and the tests name models through this table, so a model is
named in one place. Each entry (:class:`ModelSpec`) says

* which class (a ``"module:Class"`` path imported on first use, or the class itself);
* its family (:class:`Family`: ``tpp`` event models, ``sde`` series and latent models);
* how the data fill the shape arguments (``num_marks`` for event models; ``input_channels``,
  ``output_size`` and ``task`` for series models) and the constructor defaults;
* the display name the benchmark tables use (``"ExpHawkes"``, ``"RMTPP"``);
* how it is fitted and saved (:class:`Training`): an estimator with its own ``fit`` is saved as the
  JSON of ``to_dict()`` (the ``model.json`` the ``tpp`` CLI writes); a model trained by the one
  trainer (:func:`tpp.train.fit`) is saved as its ``state_dict`` and constructor arguments.

Layering: :mod:`tpp` never imports :mod:`sde`; this module holds the table and the ``tpp`` entries,
and ``import sde.table`` adds the ``sde`` entries (the ``sde`` CLI and the tests import it).

>>> from tpp import table
>>> table.spec("exp-hawkes").display
'ExpHawkes'
>>> model = table.build("rmtpp", train, seed=0)          # doctest: +SKIP
>>> model, record = table.fit_model(model, train, val, epochs=5, seed=0)  # doctest: +SKIP
>>> table.save(model, "rmtpp.pt"); table.load("rmtpp.pt")  # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import enum
import importlib
import inspect
import json
import os
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = [
    "Family", "Training", "ModelSpec", "FitRecord", "UnknownModelError", "register", "names", "specs", "spec",
    "spec_of", "build", "fit_model", "save", "load", "from_dict", "constructor_args", "model_enum",
    "describe", "event_shape", "location_shape", "TABLE",
]

#: first line of a file written by :func:`save` for a trained model (a torch file: a dict with this ``format``)
STATE_FORMAT = "tpp-model-state/1"


class Family(str, enum.Enum):
    """Which half of the project a model belongs to (the package that owns it)."""

    TPP = "tpp"  #: event sequences (:mod:`tpp.hawkes`, :mod:`tpp.neural`)
    SDE = "sde"  #: series and latent continuous-time models (:mod:`sde.models`)


class Training(str, enum.Enum):
    """How a model is fitted, and therefore how it is saved."""

    ESTIMATOR = "estimator"  #: its own ``fit(data, ...)`` (closed form or its own optimiser); saved as ``to_dict()`` JSON
    TRAINER = "trainer"  #: the one trainer :func:`tpp.train.fit`; saved as ``state_dict`` + constructor arguments


class UnknownModelError(KeyError, ValueError):
    """A name that is not in the table; the message lists the closest names (did you mean ...?)."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------- data-shape arguments
def event_shape(data: Any) -> dict[str, Any]:
    """``num_marks`` of an :class:`~tpp.events.EventBatch` (event models)."""
    return {"num_marks": int(data.num_marks)}


def location_shape(data: Any) -> dict[str, Any]:
    """``feature_dim`` of a batch with locations (spatio-temporal models): its first two features (longitude and
    latitude, x and y), or one when it has one; a batch without features gets 2 (the model names what is missing)."""
    count = int(getattr(data, "num_features", 0) or 0)
    return {"feature_dim": min(2, count) if count else 2}


# --------------------------------------------------------------------------- the entry
@dataclass(frozen=True)
class ModelSpec:
    """One row of the table (see the module docstring)."""

    name: str  #: the CLI name, e.g. ``"exp-hawkes"``
    target: str | type  #: ``"module:Class"`` (imported on first use) or the class
    family: Family
    display: str  #: the name in benchmark tables and cell files, e.g. ``"ExpHawkes"``
    training: Training
    #: data -> data-shape constructor arguments (:func:`event_shape`; the series models' is :func:`sde.table.series_shape`)
    shape: Callable[[Any], dict[str, Any]] = event_shape
    defaults: Mapping[str, Any] = field(default_factory=dict)  #: constructor arguments the table sets
    required: Mapping[str, str] = field(default_factory=dict)  #: argument -> what it is, when no default fits
    derive: Callable[[dict[str, Any]], dict[str, Any]] | None = None  #: arguments from the others (fadin's delta)
    loader: Callable[[dict[str, Any]], Any] | None = None  #: ``to_dict()`` JSON -> model (estimators)
    aliases: tuple[str, ...] = ()  #: other names that resolve here (``to_dict()``'s "model" values)
    summary: str = ""  #: one line for ``--help`` and listings
    #: what the events must carry beyond times and marks (e.g. ``("features",)``: a continuous mark column);
    #: the model is then left out of lists fitted to any data (:data:`tpp.report.MODEL_NAMES`)
    needs: tuple[str, ...] = ()

    @property
    def cls(self) -> type:
        """The class (imported on first use)."""
        if isinstance(self.target, type):
            return self.target
        module, _, qualname = self.target.partition(":")
        value: Any = importlib.import_module(module)
        for part in qualname.split("."):
            value = getattr(value, part)
        return value

    @property
    def class_name(self) -> str:
        """The class's name without importing it."""
        return self.target.__name__ if isinstance(self.target, type) else self.target.rpartition(":")[2].split(".")[-1]

    def arguments(self, data: Any = None, **overrides: Any) -> dict[str, Any]:
        """Constructor arguments: the data's shape, then the defaults, then ``overrides``, then derived ones."""
        args = dict(self.shape(data)) if data is not None else {}
        args.update({k: _fresh(v) for k, v in self.defaults.items()})
        args.update(overrides)
        missing = [k for k in self.required if args.get(k) is None]
        if missing:
            what = "; ".join(f"{k}: {self.required[k]}" for k in missing)
            raise ValueError(f"model {self.name} needs {', '.join(missing)} ({what})")
        if self.derive is not None:
            args = self.derive(args)
        return args


def _fresh(value: Any) -> Any:
    """A copy of a mutable default, so a model never shares a list with the table."""
    return list(value) if isinstance(value, (list, tuple)) else dict(value) if isinstance(value, dict) else value


_TABLE: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}  # alias or display name (lower case) -> name
_BUILT: weakref.WeakKeyDictionary[Any, tuple[str, dict[str, Any]]] = weakref.WeakKeyDictionary()


def register(entry: ModelSpec) -> ModelSpec:
    """Add ``entry`` (idempotent for the same entry; a different one under a taken name raises)."""
    known = _TABLE.get(entry.name)
    if known is not None and known != entry:
        raise ValueError(f"model name {entry.name!r} is already in the table for {known.target}")
    for alias in (entry.name, entry.display, *entry.aliases):
        owner = alias if alias in _TABLE else _ALIASES.get(alias.lower())
        if owner is not None and owner != entry.name:
            raise ValueError(f"{alias!r} of model {entry.name} already names model {owner}")
    _TABLE[entry.name] = entry
    for alias in (entry.display, *entry.aliases):
        _ALIASES[alias.lower()] = entry.name
    return entry


def names(family: Family | str | None = None, training: Training | str | None = None) -> tuple[str, ...]:
    """CLI names in table order, optionally of one family and one kind of training."""
    return tuple(s.name for s in specs(family, training))


def specs(family: Family | str | None = None, training: Training | str | None = None) -> tuple[ModelSpec, ...]:
    """The entries in table order, optionally of one family and one kind of training."""
    fam = None if family is None else Family(family)
    kind = None if training is None else Training(training)
    return tuple(s for s in _TABLE.values() if (fam is None or s.family is fam) and (kind is None or s.training is kind))


def spec(name: str, family: Family | str | None = None) -> ModelSpec:
    """The entry of a CLI name, a display name (``"RMTPP"``) or an alias; an unknown name raises
    :class:`UnknownModelError` listing the closest names."""
    key = name if name in _TABLE else _ALIASES.get(str(name).lower())
    found = _TABLE.get(key) if key is not None else None
    fam = None if family is None else Family(family)
    if found is not None and (fam is None or found.family is fam):
        return found
    choices = names(fam)
    close = difflib.get_close_matches(str(name).lower(), [*choices, *(s.display.lower() for s in specs(fam))], n=3)
    close = list(dict.fromkeys(spec(c).name if c not in _TABLE else c for c in close))
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    where = f" {fam.value}" if fam is not None else ""
    if found is not None:
        hint = f"it is a{'n' if found.family is Family.SDE else ''} {found.family.value} model; " + hint
    raise UnknownModelError(f"unknown{where} model {name!r}: {hint}choose one of {', '.join(choices)}")


def spec_of(model: Any) -> ModelSpec:
    """The entry of a model instance (its class, or the nearest registered base class)."""
    built = _BUILT.get(model)
    if built is not None:
        return _TABLE[built[0]]
    mro = type(model).__mro__
    for cls in mro:  # first the entries whose class name matches: nothing else is imported
        for entry in _TABLE.values():
            if entry.class_name == cls.__name__ and entry.cls is cls:
                return entry
    classes = {entry.cls: entry for entry in _TABLE.values()}  # a path naming an alias of a renamed class
    for cls in mro:
        if cls in classes:
            return classes[cls]
    raise UnknownModelError(f"{type(model).__name__} is not in the model table: register it with tpp.table.register")


def build(name: str, data: Any = None, *, seed: int | None = None, **overrides: Any) -> Any:
    """A fresh model ``name`` with its shape arguments read from ``data`` (an event or series batch), the
    table's defaults and ``overrides`` (which win). ``seed`` seeds torch's global generator first
    (``torch.manual_seed``), so the initial weights, and the training that follows, are reproducible."""
    entry = spec(name)
    args = entry.arguments(data, **overrides)
    if seed is not None:
        import torch

        torch.manual_seed(seed)
    model = entry.cls(**args)
    _BUILT[model] = (entry.name, args)
    return model


# --------------------------------------------------------------------------- fitting
@dataclass
class FitRecord:
    """What :func:`fit_model` did: wall seconds and, for trained models, the trainer's record."""

    seconds: float
    epochs_run: int | None = None
    best_epoch: int | None = None
    train_events_per_second: float | None = None
    best_val_ll_per_event: float | None = None
    train_result: Any = None  #: the :class:`tpp.train.TrainResult` (trained models)

    def info(self) -> dict[str, Any]:
        """The trainer's numbers as a flat dict (empty for estimators)."""
        if self.train_result is None:
            return {}
        return {"epochs_run": self.epochs_run, "best_epoch": self.best_epoch,
                "train_events_per_second": self.train_events_per_second}


def fit_model(model: Any, train: Any, val: Any = None, **options: Any) -> tuple[Any, FitRecord]:
    """Fit ``model`` on ``train`` the way its table entry says; returns the model and a :class:`FitRecord`.

    Estimators: ``model.fit(train, **options)`` (``val`` is passed only when given; ``progress`` only to a
    ``fit`` that shows one). Trained models: :func:`tpp.train.fit` ``(model, train, val, **options)``
    (``epochs``, ``batch_size``, ``lr``, ``seed``, ``checkpoint_dir``, ``progress``, ...), the run's record
    also left on ``model.train_result_``.
    """
    entry = spec_of(model)
    start = time.perf_counter()
    if entry.training is Training.ESTIMATOR:
        if "progress" in options and not _accepts(model.fit, "progress"):
            options.pop("progress")  # a display option: a fit without a progress bar simply has none
        if val is not None:
            model.fit(train, val, **options)
        else:
            model.fit(train, **options)
        return model, FitRecord(time.perf_counter() - start)
    from tpp.train import fit as train_model

    result = train_model(model, train, val, **options)
    model.train_result_ = result
    return model, FitRecord(time.perf_counter() - start, len(result.history), result.best_epoch,
                            result.train_events_per_second, result.best_val_ll_per_event, result)


def _accepts(function: Callable[..., Any], name: str) -> bool:
    parameters = inspect.signature(function).parameters.values()
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


# --------------------------------------------------------------------------- serialisation
def from_dict(params: Mapping[str, Any]) -> Any:
    """An estimator rebuilt from its ``to_dict()`` JSON (the ``model.json`` of ``tpp fit --out``)."""
    kind = params.get("model")
    try:
        entry = spec(str(kind))
    except UnknownModelError as exc:
        raise ValueError(f"model.json: {exc}") from None
    if entry.loader is None:
        raise ValueError(f"model {entry.name} is saved as a state dict (tpp.table.save / load), not as parameters")
    try:
        return entry.loader(dict(params))
    except KeyError as exc:
        raise ValueError(f"model.json of {entry.name}: field {exc.args[0]!r} is missing") from None


def constructor_args(model: Any) -> dict[str, Any]:
    """The arguments that rebuild ``model``'s architecture: those :func:`build` used, or, for a model made
    directly, its attributes of the constructor's parameter names (parameters it does not keep take their
    defaults; :func:`save` checks that the rebuilt model has the same tensors)."""
    built = _BUILT.get(model)
    if built is not None:
        return dict(built[1])
    args: dict[str, Any] = {}
    for p in list(inspect.signature(type(model)).parameters.values()):
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        value = getattr(model, p.name, inspect.Parameter.empty)
        if value is inspect.Parameter.empty or callable(value) and not isinstance(value, enum.Enum):
            if p.default is inspect.Parameter.empty:
                raise ValueError(f"cannot tell {type(model).__name__}'s argument {p.name!r}: build the model with "
                                 "tpp.table.build to record its arguments")
            continue
        args[p.name] = value
    return args


def save(model: Any, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path``: an estimator as its ``to_dict()`` JSON, a trained model as a torch file
    holding its table name, constructor arguments and ``state_dict``. :func:`load` reads either back and
    the loaded model scores the same data identically."""
    import torch

    from tpp.io import atomic_write

    entry = spec_of(model)
    path = Path(path)
    if entry.training is Training.ESTIMATOR:
        with atomic_write(path, path.suffix or ".json") as tmp:
            tmp.write_text(json.dumps(model.to_dict(), indent=2))
        return path
    args = constructor_args(model)
    encoded = json.dumps({k: _encode(entry.name, k, v) for k, v in args.items()})
    state = model.state_dict()
    fresh = entry.cls(**_decode_all(json.loads(encoded))).state_dict()
    if {k: tuple(v.shape) for k, v in fresh.items()} != {k: tuple(v.shape) for k, v in state.items()}:
        raise ValueError(f"{type(model).__name__}: its constructor arguments {args} do not rebuild its tensors; "
                         "build the model with tpp.table.build to record its arguments")
    payload = {"format": STATE_FORMAT, "model": entry.name, "args": encoded,
               "dtype": str(_float_dtype(state) or torch.get_default_dtype()).removeprefix("torch."),
               "state_dict": state}
    with atomic_write(path, path.suffix or ".pt") as tmp:
        torch.save(payload, tmp)
    return path


def load(path: str | os.PathLike) -> Any:
    """The model :func:`save` wrote to ``path`` (in evaluation mode for trained models)."""
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file")
    with path.open("rb") as handle:
        head = handle.read(1)
    if head in (b"{", b" ", b"\n"):
        try:
            params = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: invalid JSON ({exc})") from None
        return from_dict(params)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        raise ValueError(f"{path}: not a model file written by tpp.table.save ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: not a model file written by tpp.table.save (no {STATE_FORMAT!r} header)")
    entry = spec(payload["model"])
    args = _decode_all(json.loads(payload["args"]))
    model = entry.cls(**args)
    dtype = getattr(torch, payload.get("dtype", "float32"))
    if dtype != _float_dtype(model.state_dict()):
        model = model.to(dtype)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    # Arguments newer than the file: the values the model settled on while loading it (AttentiveCNF's
    # base_flow / base_net become False / "linear" for a state saved before them), so a re-save records them.
    settled = {}
    for k, p in inspect.signature(entry.cls).parameters.items():
        value = getattr(model, k, p.default)
        if k not in args and isinstance(value, (bool, int, float, str)) and value != p.default:
            settled[k] = value
    _BUILT[model] = (entry.name, {**args, **settled})
    return model


def _float_dtype(state: Mapping[str, Any]) -> Any:
    """The dtype of the first floating parameter tensor (the model's working precision)."""
    for value in state.values():
        if value.is_floating_point():
            return value.dtype
    return None


def _encode(name: str, key: str, value: Any) -> Any:
    """A constructor argument as JSON (enums by class path and value)."""
    if isinstance(value, enum.Enum):
        return {"enum": f"{type(value).__module__}:{type(value).__qualname__}", "value": _encode(name, key, value.value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_encode(name, key, v) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):  # e.g. a wrapped model's arguments
        return {"mapping": {k: _encode(name, f"{key}.{k}", v) for k, v in value.items()}}
    import numpy as np

    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise ValueError(f"model {name}: constructor argument {key}={type(value).__name__} cannot be saved "
                     "(numbers, strings, lists, string-keyed mappings and enums can)")


def _decode_all(args: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _decode(v) for k, v in args.items()}


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"enum", "value"}:
        module, _, qualname = value["enum"].partition(":")
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        if not (isinstance(cls, type) and issubclass(cls, enum.Enum)):
            raise ValueError(f"{value['enum']} is not an enumeration")
        return cls(_decode(value["value"]))
    if isinstance(value, dict) and set(value) == {"mapping"}:
        return {k: _decode(v) for k, v in value["mapping"].items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


# --------------------------------------------------------------------------- faces
def model_enum(family: Family | str, enum_name: str = "ModelName", training: Training | str | None = None) -> type[enum.Enum]:
    """A ``str`` enumeration of the family's CLI names (members ``exp_hawkes = "exp-hawkes"``), for typer
    options: the table's names, then the entries' aliases (``tv_cnf = "tv-cnf"``), so that a CLI accepts every
    name the table answers to; :func:`canonical` maps a member to its entry's name's member."""
    chosen = specs(family, training)
    values = [s.name for s in chosen] + [a for s in chosen for a in s.aliases]
    return enum.Enum(enum_name, {v.replace("-", "_"): v for v in values}, type=str)  # type: ignore[return-value]


def canonical(member: enum.Enum) -> enum.Enum:
    """The member of :func:`model_enum`'s enumeration that holds ``member``'s entry name (itself unless an alias)."""
    return type(member)(spec(member.value).name)


def describe(family: Family | str | None = None) -> list[dict[str, Any]]:
    """One row per entry: name, display name, family, class, training, defaults, required arguments."""
    return [{"name": s.name, "display": s.display, "family": s.family.value, "class": s.class_name,
             "training": s.training.value, "defaults": dict(s.defaults), "required": list(s.required),
             "summary": s.summary} for s in specs(family)]


# --------------------------------------------------------------------------- tpp's entries
def _fadin_delta(args: dict[str, Any]) -> dict[str, Any]:
    """FaDIn's grid step defaults to W / 100 (the discretisation error is O(delta))."""
    if args.get("delta") is None:
        args["delta"] = args["support"] / 100
    return args


def _poisson(p: dict[str, Any]) -> Any:
    from tpp.hawkes import Poisson

    return Poisson.from_params(p["rates"])


def _exp_hawkes(p: dict[str, Any]) -> Any:
    from tpp.hawkes import ExpHawkes

    if "baseline_model" in p:  # a time-varying baseline (baseline="periodic" / "piecewise")
        return ExpHawkes.from_dict(p)
    return ExpHawkes.from_params(p["baseline"], p["adjacency"], p["decay"])


def _sumexp_hawkes(p: dict[str, Any]) -> Any:
    from tpp.hawkes import SumExpHawkes

    if "baseline_model" in p:
        return SumExpHawkes.from_dict(p)
    return SumExpHawkes.from_params(p["baseline"], p["adjacency"], p["decays"])


def _fadin(p: dict[str, Any]) -> Any:
    from tpp.hawkes import FaDInHawkes

    return FaDInHawkes.from_params(p["baseline"], p["adjacency"], p["kernel"], p["support"], p["kernel_params"],
                                   delta=p.get("delta"))


def _nonparametric(p: dict[str, Any]) -> Any:
    from tpp.hawkes import NonparametricHawkes

    return NonparametricHawkes.from_params(p["baseline"], p["kernel_values"], p["support"])


def _powerlaw_hawkes(p: dict[str, Any]) -> Any:
    from tpp.hawkes import PowerLawHawkes

    return PowerLawHawkes.from_params(p["baseline"], p["adjacency"], p["exponent"], p["cutoff"], p["decay_range"],
                                      p["num_terms"], p.get("decays"))


def _marked_hawkes(p: dict[str, Any]) -> Any:
    from tpp.hawkes import MarkedHawkes

    return MarkedHawkes.from_dict(p)


def _sparse_hawkes(p: dict[str, Any]) -> Any:
    from tpp.hawkes import SparseExpHawkes

    return SparseExpHawkes.from_dict(p)


def _nonlinear_hawkes(p: dict[str, Any]) -> Any:
    from tpp.hawkes import NonlinearHawkes

    return NonlinearHawkes.from_params(p["baseline"], p["adjacency"], p["decays"], link=p.get("link", "softplus"),
                                       tol=p.get("tol", 1e-10))


def _etas(p: dict[str, Any]) -> Any:
    from tpp.spatial.etas import ETAS

    return ETAS.from_dict(p)


_E, _T = Training.ESTIMATOR, Training.TRAINER
_TPP_ENTRIES = [
    ModelSpec("poisson", "tpp.hawkes:Poisson", Family.TPP, "Poisson", _E, loader=_poisson,
              summary="homogeneous Poisson process (rates by maximum likelihood)"),
    ModelSpec("exp-hawkes", "tpp.hawkes:ExpHawkes", Family.TPP, "ExpHawkes", _E, defaults={"decay": None},
              loader=_exp_hawkes, summary="exponential-kernel Hawkes process (decay learned unless given)"),
    # Three decays learned, started over four decades around the data's time scale.
    ModelSpec("sumexp-hawkes", "tpp.hawkes:SumExpHawkes", Family.TPP, "SumExpHawkes", _E,
              defaults={"decays": (1.0, 10.0, 100.0), "learn_decays": True}, loader=_sumexp_hawkes,
              summary="Hawkes process with a sum of three exponential kernels (decays learned)"),
    ModelSpec("fadin", "tpp.hawkes:FaDInHawkes", Family.TPP, "FaDIn", _E,
              required={"support": "the kernel support W (--support)"}, derive=_fadin_delta, loader=_fadin,
              summary="Hawkes process with a parametric finite-support kernel on a grid (FaDIn)"),
    ModelSpec("nonparametric-em", "tpp.hawkes:NonparametricHawkes", Family.TPP, "NonparametricEM", _E,
              defaults={"bins": 20}, required={"support": "the kernel support W (--support)"},
              loader=_nonparametric, aliases=("nonparametric-hawkes",),
              summary="Hawkes process with piecewise-constant kernels by EM"),
    # Power-law (Omori) kernels as a sum of 24 exponentials on a geometric grid chosen from the data.
    ModelSpec("powerlaw-hawkes", "tpp.hawkes:PowerLawHawkes", Family.TPP, "PowerLawHawkes", _E,
              defaults={"num_terms": 24}, loader=_powerlaw_hawkes,
              summary="Hawkes process with power-law kernels (exponent and cutoff fitted; sum-of-exponentials form)"),
    # The mark is the feature named "magnitude" unless feature= says otherwise.
    ModelSpec("marked-hawkes", "tpp.hawkes:MarkedHawkes", Family.TPP, "MarkedHawkes", _E,
              defaults={"feature": "magnitude", "productivity": "exp", "mark_distribution": "exponential"},
              loader=_marked_hawkes, needs=("features",),
              summary="exponential Hawkes process whose excitation grows with a continuous mark (ETAS-style)"),
    # Softplus link, one learned decay; adjacency signed (negative: inhibition).
    ModelSpec("nonlinear-hawkes", "tpp.hawkes:NonlinearHawkes", Family.TPP, "NonlinearHawkes", _E,
              loader=_nonlinear_hawkes,
              summary="nonlinear Hawkes process with signed exponential kernels (softplus/relu/exp link; inhibition)"),
    # L1 penalty, strength by BIC over a path; decay from a grid unless given; memory O(N + nnz) for many types.
    ModelSpec("sparse-hawkes", "tpp.hawkes:SparseExpHawkes", Family.TPP, "SparseExpHawkes", _E,
              loader=_sparse_hawkes,
              summary="exponential Hawkes process with a sparse adjacency (L1 / group lasso, BIC/AIC/CV; many types)"),
    ModelSpec("rmtpp", "tpp.neural:RMTPP", Family.TPP, "RMTPP", _T, summary="recurrent marked TPP (Du et al. 2016)"),
    ModelSpec("nhp", "tpp.neural:NHP", Family.TPP, "NHP", _T, summary="neural Hawkes process (Mei & Eisner 2017)"),
    ModelSpec("thp", "tpp.neural:THP", Family.TPP, "THP", _T,
              summary="transformer Hawkes process (Zuo et al. 2020)"),
    ModelSpec("sahp", "tpp.neural:SAHP", Family.TPP, "SAHP", _T,
              summary="self-attentive Hawkes process (Zhang et al. 2020)"),
    ModelSpec("attnhp", "tpp.neural:AttNHP", Family.TPP, "AttNHP", _T,
              summary="attentive neural Hawkes process (Yang et al. 2022)"),
    ModelSpec("fullynn", "tpp.neural:FullyNN", Family.TPP, "FullyNN", _T,
              summary="fully neural cumulative hazard (Omi et al. 2019)"),
    ModelSpec("intensity-free", "tpp.neural:IntensityFree", Family.TPP, "IntensityFree", _T,
              summary="log-normal mixture of inter-event times (Shchur et al. 2020)"),
    # Spatio-temporal baselines of Chen, Amos & Nickel (2021): the location is the first two features.
    ModelSpec("hawkes-gmm", "tpp.spatial.gmm:HawkesGMM", Family.TPP, "HawkesGMM", _T, shape=location_shape,
              needs=("features", "locations"),
              summary="exponential Hawkes in time x a Gaussian mixture around past locations (Chen et al. 2021)"),
    ModelSpec("poisson-gmm", "tpp.spatial.gmm:PoissonGMM", Family.TPP, "PoissonGMM", _T, shape=location_shape,
              needs=("features", "locations"),
              summary="Poisson in time x a Gaussian mixture around past locations (Chen et al. 2021)"),
    ModelSpec("self-correcting-gmm", "tpp.spatial.gmm:SelfCorrectingGMM", Family.TPP, "SelfCorrectingGMM", _T,
              shape=location_shape, needs=("features", "locations"),
              summary="self-correcting process in time x a Gaussian mixture around past locations (Chen et al. 2021)"),
    # Our neural TPPs in time x the same mixture (trained jointly; hidden_size is the neural model's width).
    ModelSpec("nhp-gmm", "tpp.spatial.gmm:HawkesGMM", Family.TPP, "NHPGMM", _T, shape=location_shape,
              defaults={"temporal": "nhp", "hidden_size": 32}, needs=("features", "locations"),
              summary="neural Hawkes process (NHP) in time x a Gaussian mixture around past locations"),
    ModelSpec("thp-gmm", "tpp.spatial.gmm:HawkesGMM", Family.TPP, "THPGMM", _T, shape=location_shape,
              defaults={"temporal": "thp", "hidden_size": 32}, needs=("features", "locations"),
              summary="transformer Hawkes process (THP) in time x a Gaussian mixture around past locations"),
    # Poisson in time; bandwidth a multiple of Scott's rule by leave-one-out likelihood on the training locations.
    ModelSpec("kde-stpp", "tpp.spatial.gmm:KDESpatial", Family.TPP, "KDESpatial", _T, shape=location_shape,
              needs=("features", "locations"),
              summary="Poisson in time x a kernel density of the training locations (spatial baseline)"),
    # Neural STPP (Chen, Amos & Nickel 2021): neural-ODE temporal model x a CNF in space (locations: first 2 features).
    ModelSpec("jump-cnf", "tpp.spatial.cnf:JumpCNF", Family.TPP, "JumpCNF", _T, shape=location_shape,
              defaults={"hidden_size": 32}, needs=("features", "locations"),
              summary="neural STPP: neural-ODE temporal model x jump CNF in space (Chen, Amos & Nickel 2021)"),
    ModelSpec("attentive-cnf", "tpp.spatial.cnf:AttentiveCNF", Family.TPP, "AttentiveCNF", _T, shape=location_shape,
              defaults={"hidden_size": 32}, needs=("features", "locations"),
              summary="neural STPP: neural-ODE temporal model x attentive CNF in space (Chen, Amos & Nickel 2021)"),
    ModelSpec("time-varying-cnf", "tpp.spatial.cnf:TimeVaryingCNF", Family.TPP, "TimeVaryingCNF", _T,
              shape=location_shape, defaults={"hidden_size": 32}, needs=("features", "locations"), aliases=("tv-cnf",),
              summary="neural STPP: neural-ODE temporal model x time-varying CNF in space (no spatial history)"),
    # Space-time ETAS: locations from the two features other than "magnitude" (magnitude=None: no magnitudes).
    ModelSpec("etas", "tpp.spatial.etas:ETAS", Family.TPP, "ETAS", _E, defaults={"magnitude": "magnitude"},
              loader=_etas, needs=("features", "locations"),
              summary="space-time ETAS (Omori-Utsu in time, magnitude-scaled Gaussian in space, declustered background)"),
]
for _entry in _TPP_ENTRIES:
    register(_entry)

#: read-only view of the table (name -> entry), for listings
TABLE: Mapping[str, ModelSpec] = MappingProxyType(_TABLE)
