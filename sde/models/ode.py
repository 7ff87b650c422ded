"""Neural ODE on series (Chen, Rubanova, Bettencourt, Duvenaud, NeurIPS 2018), the baseline of the
neural CDE paper (Kidger et al. 2020, section 4: a model that sees only the first observation).

``z(0) = zeta(X(0))`` from the control path at the series' first row (the same initial map as
:class:`sde.models.NeuralCDE`), then ``dz/dt = f_theta(z)`` (autonomous: an MLP with a final tanh,
as the CDE's vector field but returning ``[B, H]``), read out by the shared heads at each series'
end (classification, regression) or at every row (forecast). The later observations reach the
prediction only through the series' duration: what a CDE adds over this model is the data.

Solved by :func:`sde.solvers.solve`: adaptive dopri5 by default (``rtol``, ``atol``), or any fixed-step
:class:`sde.solvers.Method` with ``step_size`` (default the reference step rule of
:meth:`sde.models._base.PathModel.step`). Its JAX twin is :class:`sde.jax.NeuralODE`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from sde.models._base import PathModel
from sde.models.heads import Task
from tpp.options import Interval, check_params, check_size

__all__ = ["NeuralODE", "ODEVectorField"]


class ODEVectorField(nn.Module):
    """``f(t, z) -> [B, H]``: ``Linear -> ReLU -> (Linear -> ReLU) x (layers - 1) -> Linear -> tanh`` (autonomous)."""

    _constraints = {"num_layers": Interval(1, None, integer=True)}

    def __init__(self, hidden_size: int, hidden_hidden_size: int, num_layers: int) -> None:
        super().__init__()
        check_params(self, num_layers=num_layers)
        layers: list[nn.Module] = [nn.Linear(hidden_size, hidden_hidden_size), nn.ReLU()]
        for _ in range(num_layers - 1):
            layers += [nn.Linear(hidden_hidden_size, hidden_hidden_size), nn.ReLU()]
        layers += [nn.Linear(hidden_hidden_size, hidden_size), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return self.net(z)


class NeuralODE(PathModel):
    """Neural ODE classifier / regressor: the first observation sets ``z(0)``, an MLP moves it.

    Arguments beyond the common ones (see :class:`sde.models._base.PathModel`):
    ``hidden_hidden_size`` (width of ``f_theta``, default ``hidden_size``), ``num_layers`` (hidden
    layers of ``f_theta``, default 3), ``method`` (a :class:`sde.solvers.Method`, default adaptive
    DOPRI5), ``rtol`` / ``atol`` (adaptive tolerances), ``step_size`` (the fixed step of a
    fixed-step method, default the reference rule; the first step of an adaptive one, default
    chosen by the solver).
    """

    _constraints = {"hidden_hidden_size": Interval(1, None, integer=True, none_ok=True)}

    def __init__(self, input_channels: int, hidden_size: int = 32, output_size: int = 2,
                 task: Task = Task.CLASSIFICATION, interpolation: Any = None, *, hidden_hidden_size: int | None = None,
                 num_layers: int = 3, observation_counts: bool = False, method: Any = None,
                 step_size: float | None = None, rtol: float = 1e-3, atol: float = 1e-6,
                 batch_norm: bool | None = None, likelihood: str = "gaussian") -> None:
        super().__init__(input_channels, hidden_size, output_size, task, interpolation, observation_counts, method,
                         step_size, batch_norm, likelihood)
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"rtol and atol must be positive, got rtol={rtol}, atol={atol}")
        self.rtol, self.atol = float(rtol), float(atol)
        H = self.hidden_size  # an int: the argument may be a NumPy integer
        hh = H if hidden_hidden_size is None else int(check_params(self, hidden_hidden_size=hidden_hidden_size)
                                                      ["hidden_hidden_size"])
        check_size(self, (hh, max(H, hh)), f"hidden_size={hidden_size}, hidden_hidden_size={hidden_hidden_size}")
        self.initial = nn.Linear(self.path_channels, H)
        self.field = ODEVectorField(H, hh, int(num_layers))

    def default_method(self) -> Any:
        from sde.solvers import Method

        return Method.DOPRI5

    def adaptive(self) -> bool:
        """Whether the solver adapts its steps (then ``step_size`` is only its first step)."""
        from sde.solvers import Method

        method = self.method if self.method is not None else self.default_method()
        return method in (Method.BOSH3, Method.DOPRI5, Method.DOPRI8, Method.ADAPTIVE_HEUN)

    def latent(self, batch: Any, times: Tensor) -> Tensor:
        path = self.control_path(batch)
        z0 = self.initial(path.evaluate(path.interval[0]))
        if self.adaptive():
            return self.solve_at(self.field, z0, times, self.step_size, rtol=self.rtol, atol=self.atol)
        return self.solve_at(self.field, z0, times, self.step(batch))
