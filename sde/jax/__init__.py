"""The JAX twins of the continuous-time series models: equinox modules solved with diffrax.

Install with ``pip install 'tpp-sde[jax]'``. This package is the only place JAX is imported:
``import tpp``, ``import sde`` and the torch models never load it.

```python
import sde.jax as sj
model = sj.from_torch(torch_model)            # NeuralODE / NeuralCDE / LSDE / LNSDE / GSDE, same weights
# or sj.LSDE(input_channels, hidden_size=32, output_size=2, ..., key=jax.random.PRNGKey(0))
data = model.prepare(series_batch)            # outside jit: clock, standardisation, control path, grids
loss = lambda m, d, k: -m.objective(d, key=k).sum()
grads = eqx.filter_jit(eqx.filter_grad(loss))(model, data, jax.random.PRNGKey(1))
sj.to_torch(model, torch_model)               # weights back into the torch twin
sol = sj.solve(field, y0, ts)                 # the solver face (diffrax), arguments as sde.solvers.solve
```

* Models (:mod:`sde.jax.models`): the torch models' constructor arguments and parameter names, plus
  ``key`` (initialisation) and ``dtype``; ``prepare`` -> :class:`Prepared`, then ``latent``,
  ``objective`` (also ``__call__``; ``log_likelihood`` is its deprecated alias), ``predict``; SDEs take ``brownian=`` or ``key=``.
* Converter (:mod:`sde.jax.convert`): :func:`from_torch`, :func:`to_torch`, :func:`state_dict`.
* Solver face (:mod:`sde.jax.solvers`): :func:`solve`, :class:`Solution`, :class:`SolverStats`,
  :class:`BrownianPath` (a precomputed path: :func:`brownian`, :func:`brownian_from_torch`),
  :class:`RK4` (torchdiffeq's 3/8 rule), the grids :func:`step_grid` and :func:`brownian_grid`.
* Control paths (:mod:`sde.jax.paths`): :class:`SeriesPath`, the torch path's coefficients
  evaluated by the same formula.

With the same weights and Brownian path the twins agree to rounding on fixed-step solves
(``tests/sde/test_jax_parity.py``: 1e-9 in float64, values and parameter gradients); adaptive solves
agree to their tolerance (different step-size controllers). The stable SDEs' equations and layer layout
are written once for both twins over an array namespace (:mod:`sde.models._stable_equations`); the
classes follow equinox's abstract/final rule (``Abstract*`` bases, final models).
"""

from sde.jax.convert import from_torch, state_dict, to_torch
from sde.jax.events import EventSDE, SpikeTrain
from sde.jax.models import GSDE, LNSDE, LSDE, NeuralCDE, NeuralODE, Prepared
from sde.jax.paths import SeriesPath
from sde.jax.solvers import (RK4, BrownianPath, Solution, SolverStats, brownian, brownian_from_torch, brownian_grid,
                             solve, step_grid)

__all__ = ["EventSDE", "GSDE", "LNSDE", "LSDE", "RK4", "BrownianPath", "NeuralCDE", "NeuralODE", "Prepared", "SeriesPath",
           "SpikeTrain",
           "Solution", "SolverStats", "brownian", "brownian_from_torch", "brownian_grid", "from_torch", "solve",
           "state_dict", "step_grid", "to_torch"]
