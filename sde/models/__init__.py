"""Continuous-time latent models; each lives in its own small file and is imported on first use.

``from sde.models import LSDE`` imports :mod:`sde.models.stable` only, so a user of one model never
pays for the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "NeuralCDE": "sde.models.cde",
    "NeuralODE": "sde.models.ode",
    "LSDE": "sde.models.stable",
    "LNSDE": "sde.models.stable",
    "GSDE": "sde.models.stable",
    "GRUTime": "sde.models.baselines",
    "GRUD": "sde.models.grud",
    "ODERNN": "sde.models.odernn",
    "LatentODE": "sde.models.latent_ode",
    "Task": "sde.models.heads",
    "GeometricScheme": "sde.models.stable",
    "LatentSDE": "sde.models.latent",
    "FractionalLatentSDE": "sde.models.fractional",
    "SCOTCH": "sde.models.scotch",
    "BayesianNeuralCDE": "sde.models.bayes_cde",
    "LangevinFlow": "sde.models.langevin",
    "PoissonLatentSDE": "sde.models.langevin",
    "NeuralCoxSDE": "sde.models.cox",
    "GenerativeClassifier": "sde.models.generative",
    "NeuralCox": "sde.models.cox",
    "NeuralMJP": "sde.models.neural_mjp",
    "MarkovJumpProcess": "sde.models.mjp",
    "Emission": "sde.models.neural_mjp",
    "Encoder": "sde.models.neural_mjp",
    "KLIntegral": "sde.models.neural_mjp",
    "PosteriorRates": "sde.models.neural_mjp",
    "Reconstruction": "sde.models.neural_mjp",
    "SeriesModel": "sde.models._base",
    "SpikingSDE": "sde.models.spiking",
    "GaussianPrediction": "sde.models.heads",
    "ProcessDiffusion": "sde.models.process_diffusion",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sde.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
