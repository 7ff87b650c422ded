"""Published numbers beside ours: each paper's test log-likelihood converted to the suite's units.

The suite reports the log-likelihood per event in nats, higher is better, survival term included, in the
data's own time unit (:mod:`tpp.bench.config`). A paper's number enters :data:`PUBLISHED` only where its
protocol can be matched (same data set and split, same normalisation once converted); each entry says
which paper, table and model it comes from, how it was converted, and the paper's reported spread. An
entry's ``value`` is already converted: ``published`` in ``results.csv`` is that value.

Conversions used below (each entry names the one it needs):

* ``nll_per_event``: the paper reports the negative log-likelihood per event: ``value = -reported``.
* ``ll_per_event``: the paper reports the log-likelihood per event: ``value = reported``.
* ``time_unit``: a paper that rescales times by a constant ``c`` (reports in units of ``t / c``) gives a
  log-likelihood per event ``log(c)`` higher than in the data's unit; ``value = converted - log(c)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

__all__ = ["Published", "PUBLISHED", "published_for", "results_frame", "RESULTS_COLUMNS"]

#: the columns of ``results.csv`` (one row per finished cell), in this order
RESULTS_COLUMNS = ("dataset", "model", "seed", "test_ll_per_event", "rmse", "accuracy", "ks", "published",
                   "published_source", "calibration_error", "cpu_seconds", "fit_seconds", "eval_seconds")


@dataclass(frozen=True)
class Published:
    """One published number for (``dataset``, our ``model`` name), converted to our units."""

    dataset: str
    model: str
    value: float  #: log-likelihood per event, nats, higher is better, the data's own unit
    std: float | None  #: the paper's reported spread (same units), None where it reports none
    source: str  #: paper, table, the paper's model name
    conversion: str  #: how the paper's number became ``value`` (see the module docstring)


#: Every matched protocol. Empty entries are never guessed: a data set without a matched protocol has no row.
PUBLISHED: tuple[Published, ...] = ()


def published_for(dataset: str, model: str) -> Published | None:
    """The published number for (``dataset``, ``model``), or None where no protocol matches."""
    for entry in PUBLISHED:
        if entry.dataset == dataset and entry.model == model:
            return entry
    return None


def results_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """``results.csv``: one row per finished cell with the columns of :data:`RESULTS_COLUMNS`; ``published`` and
    ``published_source`` empty where no protocol matches."""
    ok = runs[runs["status"] == "ok"]
    rows = []
    for _, cell in ok.iterrows():
        entry = published_for(str(cell["dataset"]), str(cell["model"]))
        rows.append({
            "dataset": cell["dataset"], "model": cell["model"], "seed": cell["seed"],
            "test_ll_per_event": cell.get("ll_per_event"), "rmse": cell.get("rmse"), "accuracy": cell.get("accuracy"),
            "ks": cell.get("ks"), "published": None if entry is None else entry.value,
            "published_source": None if entry is None else entry.source,
            "calibration_error": cell.get("calibration_error"), "cpu_seconds": cell.get("cpu_seconds"),
            "fit_seconds": cell.get("fit_seconds"), "eval_seconds": cell.get("eval_seconds"),
        })
    return pd.DataFrame(rows, columns=list(RESULTS_COLUMNS))
