"""Spatio-temporal point processes: events with a location (see :mod:`tpp.spatial.base` for the protocol)."""

import importlib as _importlib
from typing import Any as _Any

from tpp.spatial.base import SpatialPrediction, SpatioTemporalProcess, history_before, spatial_metrics

#: models and helpers loaded on first access (the baselines import tpp.hawkes): name -> module
_LAZY = {
    "HawkesGMM": "tpp.spatial.gmm", "PoissonGMM": "tpp.spatial.gmm", "SelfCorrectingGMM": "tpp.spatial.gmm",
    "SelfCorrecting": "tpp.spatial.gmm", "KDESpatial": "tpp.spatial.gmm",
    "pinwheel": "tpp.spatial.data", "pinwheel_splits": "tpp.spatial.data", "LocationScaler": "tpp.spatial.data",
    "ETAS": "tpp.spatial.etas",
    "JumpCNF": "tpp.spatial.cnf", "AttentiveCNF": "tpp.spatial.cnf", "TimeVaryingCNF": "tpp.spatial.cnf",
    "NeuralSTPP": "tpp.spatial.cnf",
}

__all__ = ["SpatialPrediction", "SpatioTemporalProcess", "history_before", "spatial_metrics", *_LAZY]


def __getattr__(name: str) -> _Any:
    """Import the module of a lazily exported name on first access (PEP 562)."""
    if name in _LAZY:
        return getattr(_importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
