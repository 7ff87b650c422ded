"""Benchmark suites on the registry's real data: the logic behind ``tpp bench`` and ``benchmarks/*.py``.

Suite :attr:`Suite.LIKELIHOOD` (:func:`run_likelihood`): every model x every event dataset x seeds.

* Models: every neural TPP of the model table (:mod:`tpp.table`; a model registered there joins the
  benchmark table without edits here), named by the table's display names, and the classic :class:`~tpp.hawkes.Poisson`, :class:`~tpp.hawkes.ExpHawkes`
  (decay learned) and :class:`~tpp.hawkes.SumExpHawkes` (three decays learned); the Hawkes models
  are skipped above ``max_hawkes_marks`` types, where their ``K x K`` kernels stop being a baseline, and in full runs
  the neural models that integrate every type's intensity at every node (NHP, THP, SAHP, AttNHP) above
  ``max_quadrature_marks`` (:func:`skip_reason`).
* Datasets: :data:`DATASETS`, with the papers' splits in full runs where reproduced (:data:`tpp.bench.data.PUBLISHED_SPLITS`), else the registry's splits (a card without a validation split gets
  15% of its training sequences, seeded).
* Per (model, dataset, seed), one *cell*: fit on train (neural: :func:`tpp.fit` with early stopping
  on validation; classic: exact MLE), then the test log-likelihood per event with a fine integrator,
  :data:`EVAL_POINTS` Gauss-Legendre nodes on every inter-event interval (closed forms where a model
  has one), survival term to each window's end included, and next-event forecasts
  (:func:`tpp.metrics.next_event_metrics`: RMSE of the predicted mean time, mark accuracy).
* Times are shifted to each window's start and divided by the training split's mean gap ``c``
  before fitting; numbers are reported back in the data's units (log-likelihood ``- log c`` per
  event, RMSE ``x c``).
* :func:`collect_likelihood` rebuilds the whole table from finished cells without computing any (after runs that
  each did a few models, or from the committed ``benchmarks/results/likelihood_full``).
* Resumable: each finished cell is one JSON file, written atomically, under
  ``<out>/cells/<config key>/``; a rerun with the same configuration skips finished cells (failed
  ones are retried), so an interrupted run loses at most the cell in flight.
* Outputs in ``<out>``: ``likelihood_runs.csv`` (one row per cell), ``likelihood_table.csv`` (mean
  and std over seeds), ``likelihood_table.md``, ``likelihood_ll.png``, ``likelihood_rmse.png``,
  ``likelihood_accuracy.png`` and ``environment.json`` (versions, device, seeds, git commit, thread
  settings, the integrator).

The package, one module per concern (this file only re-exports them):

* :mod:`tpp.bench.config`: :class:`LikelihoodConfig`, :data:`DATASETS`, :data:`EVAL_POINTS`;
* :mod:`tpp.bench.data`: registry splits cut to size and rescaled (:func:`load_dataset`);
* :mod:`tpp.bench.scoring`: :func:`test_log_likelihood` (the model's own likelihood with a fine rule, chunked), :func:`test_rescaling_ks`;
* :mod:`tpp.bench.published`: published numbers converted to our units, `results.csv`;
* :mod:`tpp.bench.likelihood`: the models (from :mod:`tpp.table`), one cell (:func:`run_cell`), the suite
  (:func:`run_likelihood`);
* :mod:`tpp.bench.cells`: the resumable cell files; :mod:`tpp.bench.tables`: summary, Markdown, plots;
* :mod:`tpp.bench.environment`: versions, machine, threads, commit; :mod:`tpp.bench.suite`: :class:`Suite`.
"""

from __future__ import annotations

from tpp.bench.cells import RUN_FIELDS, CellStatus, read_cells
from tpp.bench.config import DATASETS, EVAL_POINTS, LikelihoodConfig
from tpp.bench.data import BenchData, load_dataset, mean_gap, rescaled, subsample, truncate
from tpp.bench.environment import default_command, environment
from tpp.bench.likelihood import (
    CLASSIC_MODELS,
    BenchReport,
    all_model_names,
    collect_likelihood,
    fit_cell,
    neural_model_names,
    run_cell,
    run_likelihood,
    skip_reason,
)
from tpp.bench.scoring import EVAL_ELEMENTS, test_log_likelihood
from tpp.bench.suite import Suite, run_suite
from tpp.bench.tables import likelihood_markdown, summarise

fit_model = fit_cell
"""The old name of :func:`fit_cell` (a cell's fit); the one model fit is :func:`tpp.table.fit_model`."""

__all__ = [
    "Suite", "CellStatus", "LikelihoodConfig", "BenchData", "BenchReport", "DATASETS", "CLASSIC_MODELS",
    "EVAL_POINTS", "EVAL_ELEMENTS", "RUN_FIELDS", "neural_model_names", "all_model_names", "truncate", "subsample",
    "rescaled", "mean_gap", "load_dataset", "test_log_likelihood", "fit_cell", "fit_model", "run_cell", "skip_reason",
    "run_likelihood", "collect_likelihood", "run_suite", "read_cells", "summarise", "likelihood_markdown", "environment", "default_command",
]
