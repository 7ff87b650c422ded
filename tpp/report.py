"""Fit several classic models to one data set, compare them on held-out data, draw the pictures.

This is what ``make run`` / ``tpp report`` does, as a library function so notebooks and scripts
get the same table: per model the train and test log-likelihood per event, the time-rescaling
KS statistic and p-value on the test set, the fitted parameters and the fit time.
"""

from __future__ import annotations

import inspect
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from tpp.events import EventBatch
from tpp import table as model_table
from tpp.hawkes import ExpHawkes, FaDInHawkes, NonparametricHawkes, Poisson, SumExpHawkes
from tpp.io import atomic_write
from tpp.metrics import RescalingResult, log_likelihood_per_event, time_rescaling
from tpp.process import PointProcess
from tpp.table import Family, Training

__all__ = ["ModelReport", "build_model", "fit_model", "model_params", "compare_models", "write_report", "MODEL_NAMES",
           "ALL_MODEL_NAMES"]

MODEL_NAMES = tuple(s.name for s in model_table.specs(Family.TPP, Training.ESTIMATOR)
                    if not s.required and not s.needs)
"""The models :func:`compare_models` fits by default: the table's classic models that need no option and
no feature column (``poisson``, ``exp-hawkes``, ``sumexp-hawkes``, ``powerlaw-hawkes``, ...)."""
ALL_MODEL_NAMES = tuple(model_table.names(Family.TPP, Training.ESTIMATOR))
"""Every classic model of the table (the ones fitted by their own estimator)."""


def build_model(
    name: str,
    num_marks: int,
    *,
    decay: float | None = None,
    kernel: str = "truncated-gaussian",
    support: float | None = None,
    delta: float | None = None,
    bins: int = 20,
    objective: str | None = None,
    feature: str | None = None,
    link: str | None = None,
    **baseline_options: Any,
) -> PointProcess:
    """A fresh model by CLI name (:func:`tpp.table.build`), given the options the ``tpp fit`` command has.

    ``baseline_options`` (``baseline="periodic"``, ``period``, ``n_basis``; None entries ignored) go to a model
    with a time-varying baseline (exp-hawkes, sumexp-hawkes); any other model refuses them (``ValueError``).

    ``poisson``; ``exp-hawkes`` (decay learned unless given); ``sumexp-hawkes`` (3 decays learned);
    ``fadin`` (``kernel``, ``support`` W, grid ``delta`` (default W / 100), ``objective`` l2 or
    likelihood); ``nonparametric-em`` (``support`` W, ``bins``). Each model takes the options its
    constructor has; the others are ignored, and None means the table's default.
    """
    entry = model_table.spec(name, Family.TPP)
    options = {"decay": decay, "kernel": kernel, "support": support, "delta": delta, "bins": bins, "objective": objective,
               "feature": feature, "link": link}  # feature: marked-hawkes's mark column; link: nonlinear-hawkes's
    accepted = inspect.signature(entry.cls).parameters
    given = {k: v for k, v in baseline_options.items() if v is not None and not (k == "baseline" and v == "constant")}
    if given and "baseline" not in accepted:
        raise ValueError(f"{name} has a constant baseline only: {', '.join(sorted(given))} apply to exp-hawkes and sumexp-hawkes")
    options.update(given)
    return model_table.build(entry.name, num_marks=num_marks,
                             **{k: v for k, v in options.items() if v is not None and k in accepted})


def fit_model(
    model: PointProcess, data: EventBatch, objective: str | None = None, progress: bool = False
) -> tuple[PointProcess, float]:
    """Fit with the model's own estimator (:func:`tpp.table.fit_model`); returns the model and the wall seconds.
    ``objective`` goes to a ``fit`` that has one (ExpHawkes, SumExpHawkes; FaDIn's is a constructor option)."""
    options: dict[str, Any] = {"progress": progress}
    if objective is not None and "objective" in inspect.signature(model.fit).parameters:
        options["objective"] = objective
    model, record = model_table.fit_model(model, data, **options)
    return model, record.seconds


def model_params(model: PointProcess) -> dict[str, Any]:
    """Fitted parameters as JSON-able values, with the names the CLI's ``--json`` uses."""
    if isinstance(model, Poisson):
        return {"baseline": model.rate_.tolist(), "adjacency": None, "decay": None}
    common = {"baseline": model.baseline_.tolist(), "adjacency": model.adjacency_.tolist()}
    if isinstance(model, SumExpHawkes):
        common.update({k: v for k, v in model._baseline_dict().items() if k != "baseline_mean_weights"})
    if isinstance(model, ExpHawkes):
        return {**common, "decay": model.decay_}
    if isinstance(model, SumExpHawkes):
        return {**common, "adjacency": model.adjacency_.tolist(), "decay": model.decays_.tolist()}
    if isinstance(model, FaDInHawkes):
        return {
            **common, "decay": model.kernel_params_["decay"].tolist() if "decay" in model.kernel_params_ else None,
            "kernel": model.kernel.name, "kernel_params": {k: v.tolist() for k, v in model.kernel_params_.items()},
            "support": model.support, "delta": model.delta,
        }
    if isinstance(model, NonparametricHawkes):
        return {**common, "decay": None, "kernel_values": model.kernel_values_.tolist(),
                "support": model.support_, "bins": model.bins_}
    summary = getattr(model, "summary_params", None)  # a model that names its own parameters (PowerLaw, Marked)
    if callable(summary):
        return {**common, **summary()}
    raise TypeError(f"no parameter summary for {type(model).__name__}")


@dataclass
class ModelReport:
    name: str
    model: PointProcess
    fit_seconds: float
    train_ll_per_event: float
    test_ll_per_event: float | None
    rescaling: RescalingResult
    params: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        params = self.params
        if isinstance(self.model, Poisson):
            summary = f"rates={np.round(params['baseline'], 4).tolist()}"
        else:
            summary = (f"branching={getattr(self.model, 'branching_ratio', float('nan')):.3f} "
                       f"decay={np.round(params['decay'], 4).tolist()}")
        return {
            "model": self.name,
            "train ll/event": round(self.train_ll_per_event, 4),
            "test ll/event": None if self.test_ll_per_event is None else round(self.test_ll_per_event, 4),
            "KS stat": round(self.rescaling.ks_statistic, 4),
            "KS p": float(f"{self.rescaling.ks_pvalue:.3g}"),
            "parameters": summary,
            "fit s": round(self.fit_seconds, 3),
        }


def compare_models(
    train: EventBatch,
    test: EventBatch | None = None,
    names: tuple[str, ...] = MODEL_NAMES,
    decay: float | None = None,
    progress: bool = True,
) -> list[ModelReport]:
    """Fit each named model on ``train``; score on ``test`` (goodness of fit on ``test`` when given)."""
    reports = []
    for name in tqdm(names, desc="fitting", disable=not progress, unit="model"):
        model = build_model(name, train.num_marks, decay=decay)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, seconds = fit_model(model, train)
        held_out = test if test is not None else train
        reports.append(
            ModelReport(
                name=name,
                model=model,
                fit_seconds=seconds,
                train_ll_per_event=log_likelihood_per_event(model, train),
                test_ll_per_event=None if test is None else log_likelihood_per_event(model, test),
                rescaling=time_rescaling(model, held_out),
                params=model_params(model),
            )
        )
    return reports


def write_report(reports: list[ModelReport], train: EventBatch, test: EventBatch | None, out: Path, title: str) -> pd.DataFrame:
    """Write ``results.md``, ``results.json`` and the PNG plots into ``out``; return the table."""
    from tpp import plot  # matplotlib only when pictures are asked for

    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame([r.row() for r in reports])
    with atomic_write(out / "results.md", ".md") as tmp:
        tmp.write_text(f"# {title}\n\n" + table.to_markdown(index=False) + "\n")
    payload = [
        {**r.row(), **r.params, "ks_statistic": r.rescaling.ks_statistic, "ks_pvalue": r.rescaling.ks_pvalue}
        for r in reports
    ]
    with atomic_write(out / "results.json", ".json") as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=float))
    held_out = test if test is not None else train
    plot.save_figure(plot.plot_qq({r.name: r.rescaling for r in reports}), out / "qq.png")
    hawkes = [r for r in reports if isinstance(r.model, SumExpHawkes)]
    if hawkes:
        best = max(hawkes, key=lambda r: r.test_ll_per_event if r.test_ll_per_event is not None else r.train_ll_per_event)
        seq = int(np.argmax(held_out.lengths.numpy()))
        one = held_out[seq]
        times = one.time[one.mask].numpy()
        # A window of ~200 events keeps the jumps visible.
        lo = float(times[0]) if times.size else float(one.t_start[0])
        hi = float(times[min(times.size - 1, 200)]) if times.size else float(one.t_end[0])
        plot.save_figure(
            plot.plot_intensity(best.model, held_out, seq=seq, t_range=(lo, max(hi, lo + 1e-9)),
                                title=f"{best.name}: intensity with events (test sequence {seq})"),
            out / "intensity.png",
        )
        for r in hawkes:
            plot.save_figure(
                plot.plot_adjacency(r.model.adjacency_, title=f"{r.name}: adjacency (branching {r.model.branching_ratio:.2f})"),
                out / f"adjacency_{r.name}.png",
            )
        decays = best.model.decays_
        plot.save_figure(
            plot.plot_kernels(best.model.excitation, best.model.num_marks, 10.0 / float(np.min(decays)),
                              t_min=0.01 / float(np.max(decays)), title=f"{best.name}: kernels (log-log)"),
            out / "kernels.png",
        )
    return table
