"""tpp: temporal point processes on one API.

Event data (:class:`EventBatch`, :func:`read_events`), the :class:`PointProcess` protocol,
classic Hawkes models (:mod:`tpp.hawkes`), goodness of fit (:mod:`tpp.metrics`), plots
(:mod:`tpp.plot`) and the dataset registry (:mod:`tpp.datasets`).
"""

from tpp.events import EventBatch, EventDataError
from tpp.io import read_events, write_events
from tpp.train import fit

__all__ = ["EventBatch", "EventDataError", "read_events", "write_events", "fit"]
__version__ = "0.1.0"
