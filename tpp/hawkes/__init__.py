"""Classic Hawkes and Poisson models with the estimator face (``fit`` / ``score`` / ``*_``)."""

from __future__ import annotations

from typing import Any

from tpp.hawkes import bayes  # noqa: F401  (cheap: JAX and numpyro load when it samples)
from tpp.hawkes.exp import ExpHawkes, NonStationaryWarning, SumExpHawkes
from tpp.hawkes.fadin import FaDInHawkes
from tpp.hawkes.kernels import ParametricKernel
from tpp.hawkes.marked import MarkedHawkes
from tpp.hawkes.nonlinear import NonlinearHawkes
from tpp.hawkes.nonparametric import NonparametricHawkes
from tpp.hawkes.poisson import Poisson
from tpp.hawkes.powerlaw import PowerLawHawkes
from tpp.hawkes.sparse import SparseExpHawkes
from tpp.process import PointProcess

__all__ = ["Poisson", "ExpHawkes", "SumExpHawkes", "FaDInHawkes", "NonparametricHawkes", "PowerLawHawkes", "MarkedHawkes", "NonlinearHawkes", "SparseExpHawkes", "ParametricKernel", "NonStationaryWarning", "from_dict"]


def from_dict(params: dict[str, Any]) -> PointProcess:
    """Rebuild a model from ``model.to_dict()`` (the JSON the CLI writes); the model table
    (:func:`tpp.table.from_dict`) knows which class each ``"model"`` name means."""
    from tpp import table  # the table sits above the models: imported when used

    return table.from_dict(params)
