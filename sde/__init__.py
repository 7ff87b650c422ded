"""sde: continuous-time latent models of irregular time series and event data.

Solvers (:mod:`sde.solvers`, one face over torchdiffeq / torchsde / torchcde; :func:`solve` is also
``sde.solve``), Brownian paths (:mod:`sde.brownian`), control paths from irregular, partly missing
observations (:mod:`sde.paths`), the time-series batch and dataset registry (:mod:`sde.series`,
:mod:`sde.datasets`) and the models (:mod:`sde.models`).

Submodules and the solver face load on first attribute access, as scipy's do: ``import sde;
sde.models.LSDE(...)`` and ``sde.solve(...)`` work, while ``import sde`` itself imports nothing
heavy and never imports JAX (that lives in :mod:`sde.jax`, loaded only when ``sde.jax`` is used).
"""

import importlib as _importlib
import pkgutil as _pkgutil
from typing import Any as _Any

# The solver face, re-exported at the top level: name -> the module that defines it.
_ATTRIBUTES = {name: "sde.solvers" for name in ("solve", "Method", "Backprop", "Solution", "SolverStats")}
# Every public module or package beside this file (read from the directory, so a new module needs no edit here).
_SUBMODULES = frozenset(m.name for m in _pkgutil.iter_modules(__path__) if not m.name.startswith("_"))

__all__ = sorted(_ATTRIBUTES)


def __getattr__(name: str) -> _Any:
    """Import ``sde.<name>`` or the solver-face name on first access (PEP 562); later accesses find it directly."""
    if name in _ATTRIBUTES:
        value = getattr(_importlib.import_module(_ATTRIBUTES[name]), name)
        globals()[name] = value  # cache: the next access does not come here
        return value
    if name in _SUBMODULES:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names and the submodules (what tab completion should offer)."""
    return sorted({*__all__, *_SUBMODULES})
