"""sde: continuous-time latent models of irregular time series and event data.

Solvers (:mod:`sde.solvers`, one face over torchdiffeq / torchsde / torchcde), control paths from
irregular, partly missing observations (:mod:`sde.paths`), the time-series batch and dataset registry
(:mod:`sde.series`, :mod:`sde.datasets`) and the models (:mod:`sde.models`). Submodules are
imported on demand, so ``import sde`` is cheap and never imports JAX (that lives in ``sde.jax``).
"""

__all__: list[str] = []
