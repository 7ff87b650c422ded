"""tpp: temporal point processes on one API.

Event data (:class:`EventBatch`, :func:`read_events`), the :class:`PointProcess` protocol,
classic Hawkes models (:mod:`tpp.hawkes`), neural models (:mod:`tpp.neural`), goodness of fit
(:mod:`tpp.metrics`), plots (:mod:`tpp.plot`) and the dataset registry (:mod:`tpp.datasets`).

Submodules load on first attribute access, as scipy's do: ``import tpp; tpp.hawkes.ExpHawkes(...)``
works, and ``import tpp`` stays cheap (only the event batch, the readers and the trainer load with it).
"""

import importlib as _importlib
import pkgutil as _pkgutil
from types import ModuleType as _ModuleType

from tpp.clock import AbsoluteTimeWarning  # loaded by tpp.train anyway: exporting it here costs nothing
from tpp.events import EventBatch, EventDataError
from tpp.io import read_events, write_events
from tpp.train import fit

__all__ = ["EventBatch", "EventDataError", "AbsoluteTimeWarning", "read_events", "write_events", "fit"]
__version__ = "0.1.0"

# Every public module or package beside this file (read from the directory, so a new module needs no edit here).
_SUBMODULES = frozenset(m.name for m in _pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def __getattr__(name: str) -> _ModuleType:
    """Import the submodule ``tpp.<name>`` on first access (PEP 562); later accesses find it directly."""
    if name in _SUBMODULES:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names and the submodules (what tab completion should offer)."""
    return sorted({*__all__, "__version__", *_SUBMODULES})
