"""What ``tpp bench --suite`` runs: the :class:`Suite` names and the dispatch to each suite's runner."""

from __future__ import annotations

import enum
import os
from typing import Any

from tpp.bench.config import LikelihoodConfig
from tpp.bench.likelihood import SUITE, BenchReport, collect_likelihood, run_likelihood

__all__ = ["Suite", "run_suite"]


class Suite(str, enum.Enum):
    """What ``tpp bench --suite`` runs. More suites (neural-vs-easytpp, hawkes-vs-tick) join here."""

    LIKELIHOOD = SUITE  #: every model x the registry's event datasets: :func:`run_likelihood`


def run_suite(suite: Suite | str, out_dir: str | os.PathLike, quick: bool = False, collect: bool = False,
              **options: Any) -> BenchReport:
    """Dispatch on :class:`Suite`; ``options`` go to the suite's runner (for likelihood: config fields, ``models``,
    ``names``, ``command``, ``device``, ``data_dir``, ``progress``, ``echo``). ``collect``: only gather the cells
    already finished in ``out_dir`` into its tables (:func:`collect_likelihood`), computing none."""
    suite = Suite(suite)
    if suite is Suite.LIKELIHOOD and collect:
        picked = {k: options.pop(k) for k in ("models", "names", "command") if k in options}
        for k in ("device", "data_dir", "progress", "echo"):
            options.pop(k, None)
        return collect_likelihood(out_dir, LikelihoodConfig.preset(quick, **options), **picked)
    if suite is Suite.LIKELIHOOD:
        run_keys = {"models", "names", "command", "device", "data_dir", "progress", "echo"}
        run_options = {k: options.pop(k) for k in list(options) if k in run_keys}
        return run_likelihood(out_dir, LikelihoodConfig.preset(quick, **options), **run_options)
    raise ValueError(f"suite {suite.value!r} has no runner yet")  # pragma: no cover - every member is handled
