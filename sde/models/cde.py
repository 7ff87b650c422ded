"""Neural controlled differential equation (Kidger, Morrill, Foster, Lyons, NeurIPS 2020).

``z(t0) = zeta(X(t0))``, ``dz(t) = f_theta(z(t)) dX(t)``, read out at the end of each
series (classification, regression) or at every row (forecast). ``X`` is the control path of the
observations (time as a channel, values, optionally cumulative observation counts), interpolated
by :class:`sde.paths.ControlPath`; missing values and irregular times only change ``X``, never the
equation. ``f_theta`` is an MLP with a final tanh whose output is a matrix ``[H, C]`` multiplied by
``dX/dt`` (the reference ``FinalTanh`` vector field).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from sde.models._base import PathModel
from sde.models.heads import Task
from tpp.options import Interval, check_params

__all__ = ["CDEVectorField", "NeuralCDE"]


class CDEVectorField(nn.Module):
    """``f(t, z) -> [B, H, C]``: ``Linear -> ReLU -> (Linear -> ReLU) x (layers - 1) -> Linear -> tanh``."""

    _constraints = {"num_layers": Interval(1, None, integer=True)}

    def __init__(self, hidden_size: int, path_channels: int, hidden_hidden_size: int, num_layers: int) -> None:
        super().__init__()
        check_params(self, num_layers=num_layers)
        layers: list[nn.Module] = [nn.Linear(hidden_size, hidden_hidden_size), nn.ReLU()]
        for _ in range(num_layers - 1):
            layers += [nn.Linear(hidden_hidden_size, hidden_hidden_size), nn.ReLU()]
        layers += [nn.Linear(hidden_hidden_size, hidden_size * path_channels), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.hidden_size, self.path_channels = hidden_size, path_channels

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return self.net(z).view(*z.shape[:-1], self.hidden_size, self.path_channels)


class NeuralCDE(PathModel):
    """Neural CDE classifier / regressor on irregular, partly observed series.

    Arguments beyond the common ones (see :class:`sde.models._base.PathModel`):
    ``hidden_hidden_size`` (width of ``f_theta``, default ``hidden_size``), ``num_layers`` (hidden
    layers of ``f_theta``, default 3 as in the reference CharacterTrajectories runs), ``method``
    (a :class:`sde.solvers.Method`, default fixed-step RK4 as the reference code), ``step_size``
    (default: the reference rule, see :meth:`PathModel.step`; the solver also steps onto every
    knot of the path, where its pieces join).
    """

    def __init__(self, input_channels: int, hidden_size: int = 32, output_size: int = 2,
                 task: Task = Task.CLASSIFICATION, interpolation: Any = None, *, hidden_hidden_size: int | None = None,
                 num_layers: int = 3, observation_counts: bool = False, method: Any = None,
                 step_size: float | None = None, batch_norm: bool | None = None) -> None:
        super().__init__(input_channels, hidden_size, output_size, task, interpolation, observation_counts, method,
                         step_size, batch_norm)
        self.initial = nn.Linear(self.path_channels, hidden_size)
        self.field = CDEVectorField(hidden_size, self.path_channels, hidden_hidden_size or hidden_size, num_layers)

    def default_method(self) -> Any:
        from sde.solvers import Method

        return Method.RK4

    def latent(self, batch: Any, times: Tensor) -> Tensor:
        path = self.control_path(batch)
        z0 = self.initial(path.evaluate(path.interval[0]))
        return self.solve_at(self.field, z0, times, self.step(batch), control=path)
