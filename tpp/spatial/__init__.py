"""Spatio-temporal point processes: events with a location (see :mod:`tpp.spatial.base` for the protocol)."""

from tpp.spatial.base import SpatialPrediction, SpatioTemporalProcess, history_before, spatial_metrics

__all__ = ["SpatialPrediction", "SpatioTemporalProcess", "history_before", "spatial_metrics"]
