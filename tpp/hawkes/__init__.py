"""Classic Hawkes and Poisson models with the estimator face (``fit`` / ``score`` / ``*_``)."""

from __future__ import annotations

from typing import Any

from tpp.hawkes.exp import ExpHawkes, NonStationaryWarning, SumExpHawkes
from tpp.hawkes.fadin import FaDInHawkes
from tpp.hawkes.kernels import ParametricKernel
from tpp.hawkes.nonparametric import NonparametricHawkes
from tpp.hawkes.poisson import Poisson

__all__ = ["Poisson", "ExpHawkes", "SumExpHawkes", "FaDInHawkes", "NonparametricHawkes", "ParametricKernel", "NonStationaryWarning", "from_dict"]


def from_dict(params: dict[str, Any]) -> Poisson | ExpHawkes | SumExpHawkes:
    """Rebuild a model from ``model.to_dict()`` (the JSON the CLI writes)."""
    kind = params.get("model")
    if kind == "poisson":
        return Poisson.from_params(params["rates"])
    if kind == "exp-hawkes":
        return ExpHawkes.from_params(params["baseline"], params["adjacency"], params["decay"])
    if kind == "sumexp-hawkes":
        return SumExpHawkes.from_params(params["baseline"], params["adjacency"], params["decays"])
    if kind in ("nonparametric-em", "nonparametric-hawkes"):
        return NonparametricHawkes.from_params(params["baseline"], params["kernel_values"], params["support"])
    if kind == "fadin":
        return FaDInHawkes.from_params(params["baseline"], params["adjacency"], params["kernel"], params["support"],
                                       params["kernel_params"], delta=params.get("delta"))
    raise ValueError(f"unknown model {kind!r}: expected 'poisson', 'exp-hawkes', 'sumexp-hawkes', 'fadin' or 'nonparametric-em'")
