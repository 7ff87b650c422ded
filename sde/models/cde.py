"""Neural controlled differential equation (Kidger, Morrill, Foster, Lyons, NeurIPS 2020).

``z(t0) = zeta(X(t0))``, ``dz(t) = f_theta(z(t)) dX(t)``, read out at the end of each
series (classification, regression) or at every row (forecast). ``X`` is the control path of the
observations (time as a channel, values, optionally cumulative observation counts), interpolated
by :class:`sde.paths.ControlPath`; missing values and irregular times only change ``X``, never the
equation. ``f_theta`` is an MLP with a final tanh whose output is a matrix ``[H, C]`` multiplied by
``dX/dt`` (the reference ``FinalTanh`` vector field).

Initialisation of ``f_theta`` (``field_init``, default :attr:`FieldInit.AUTO`). With PyTorch's
default ``nn.Linear`` initialisation (uniform, bound ``1/sqrt(fan_in)``: weight variance
``1/(3 fan_in)``), every ``Linear -> ReLU`` layer shrinks the signal and the Jacobian by about
``sqrt(6)``; with the reference's three hidden layers ``f_theta`` is almost constant in ``z``
(Jacobian Frobenius norm about 0.25 for ``hidden_size=32``), so at the start of training
``z(T) ~ z(t0) + f_theta(z(t0)) (X(T) - X(t0))``: the state sees the path's increment, not its
shape (the higher signature terms all carry the Jacobian), and the readout mostly reads ``z(t0)``,
a function of the first observation. That is harmless when the path drives the state hard (many
noisy channels: BasicMotions, 6 channels of total variation about 50 each), but on a smooth
univariate series (GunPoint: one channel of total variation about 5) the series-to-series spread
of ``z(T) - z(t0)`` was 0.016 per unit, 8x smaller than that of ``z(t0)``, and ``tpp.fit`` stayed
near chance for 30 epochs at lr 1e-2 (seed 0: train / test accuracy 0.60 / 0.61, where LSDE reached
0.78). Kidger et al. train for hundreds of epochs, where this start matters less. He (Kaiming)
initialisation of the ReLU layers (variance ``2 / fan_in``, zero biases) raises the Jacobian to
about 4 and the series-to-series spread to about 0.15; GunPoint test accuracy in the same 30 epochs,
seeds 0-2: 0.93 / 0.93 / 0.95 against 0.60 / 0.69 / 0.71 with batches of 25, and 0.91 / 0.95 / 0.73
against 0.61 / 0.63 / 0.88 with batches of 16 (whose last batch holds 2 series). On BasicMotions
it over-drives the state (half the readout's tanh units saturated; 25 full-batch steps: 0.65-0.83
instead of 0.95-1.0).

So the default, ``AUTO``, decides from the data, once, in :meth:`NeuralCDE.initialise` (the trainer
calls it before a fresh run): it solves the CDE on up to :data:`AUTO_SAMPLE` training series with
PyTorch's initialisation and, if the path spreads the final states by less than
:data:`AUTO_SPREAD` (mean over hidden units of the std over series of ``z(T) - z(t0)``), re-draws
the hidden layers with He's. Measured at the start: univariate GunPoint, ItalyPowerDemand, OSULeaf
0.01-0.04 (also with 30 % missing), multivariate BasicMotions, JapaneseVowels 0.36-0.80.
"""

from __future__ import annotations

import enum
from typing import Any

import torch
from torch import Tensor, nn

from sde.models._base import PathModel
from sde.models.heads import Task
from tpp.options import Interval, Options, check_params, check_size

__all__ = ["AUTO_SAMPLE", "AUTO_SPREAD", "CDEVectorField", "FieldInit", "NeuralCDE"]

AUTO_SPREAD = 0.1
"""``FieldInit.AUTO`` switches to He's initialisation when the path spreads the final states less than this."""
AUTO_SAMPLE = 64
"""``FieldInit.AUTO`` measures the spread on the first this many training series (one solve, no gradient)."""


class FieldInit(str, enum.Enum):
    """How the hidden ``Linear`` layers of the vector field start (see the module docstring)."""

    AUTO = "auto"
    """``TORCH``, switched to ``KAIMING`` by :meth:`NeuralCDE.initialise` when the path barely moves
    the state (the default of :class:`NeuralCDE`; see the module docstring)."""
    KAIMING = "kaiming"
    """He initialisation for ReLU (``kaiming_uniform_(nonlinearity="relu")``), zero biases: the
    Jacobian of ``f_theta`` stays of order one whatever the depth."""
    TORCH = "torch"
    """PyTorch's default ``nn.Linear`` initialisation, as torchcde's examples and Kidger et al.'s code
    (the behaviour before this option: slow to learn a smooth path's shape with 3 hidden layers)."""


class CDEVectorField(nn.Module):
    """``f(t, z) -> [B, H, C]``: ``Linear -> ReLU -> (Linear -> ReLU) x (layers - 1) -> Linear -> tanh``."""

    _constraints = {"num_layers": Interval(1, None, integer=True), "init": Options(FieldInit)}

    def __init__(self, hidden_size: int, path_channels: int, hidden_hidden_size: int, num_layers: int, *,
                 init: FieldInit | str = FieldInit.TORCH) -> None:
        super().__init__()
        init = check_params(self, num_layers=num_layers, init=init)["init"]
        layers: list[nn.Module] = [nn.Linear(hidden_size, hidden_hidden_size), nn.ReLU()]
        for _ in range(num_layers - 1):
            layers += [nn.Linear(hidden_hidden_size, hidden_hidden_size), nn.ReLU()]
        layers += [nn.Linear(hidden_hidden_size, hidden_size * path_channels), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.hidden_size, self.path_channels = hidden_size, path_channels
        if init is FieldInit.KAIMING:
            self.kaiming_()

    @torch.no_grad()
    def kaiming_(self) -> CDEVectorField:
        """Re-draw the layers followed by a ReLU with He's initialisation, zero biases (the last layer,
        before the tanh, keeps its weights); returns self."""
        for layer in list(self.net)[:-2]:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)
        return self

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return self.net(z).view(*z.shape[:-1], self.hidden_size, self.path_channels)


class NeuralCDE(PathModel):
    """Neural CDE classifier / regressor on irregular, partly observed series.

    Arguments beyond the common ones (see :class:`sde.models._base.PathModel`):
    ``hidden_hidden_size`` (width of ``f_theta``, default ``hidden_size``), ``num_layers`` (hidden
    layers of ``f_theta``, default 3 as in the reference CharacterTrajectories runs), ``method``
    (a :class:`sde.solvers.Method`, default fixed-step RK4 as the reference code), ``step_size``
    (default: the reference rule, see :meth:`PathModel.step`; the solver also steps onto every
    knot of the path, where its pieces join), ``field_init`` (a :class:`FieldInit`, default
    ``"auto"``: PyTorch's initialisation, re-drawn with He's by :meth:`initialise` when the training
    paths barely move the state; ``"kaiming"`` always He's; ``"torch"`` never, the old behaviour; see
    the module docstring).
    """

    _constraints = {"hidden_hidden_size": Interval(1, None, integer=True, none_ok=True),
                    "field_init": Options(FieldInit)}

    def __init__(self, input_channels: int, hidden_size: int = 32, output_size: int = 2,
                 task: Task = Task.CLASSIFICATION, interpolation: Any = None, *, hidden_hidden_size: int | None = None,
                 num_layers: int = 3, observation_counts: bool = False, method: Any = None,
                 step_size: float | None = None, batch_norm: bool | None = None,
                 field_init: FieldInit | str = FieldInit.AUTO, likelihood: str = "gaussian") -> None:
        super().__init__(input_channels, hidden_size, output_size, task, interpolation, observation_counts, method,
                         step_size, batch_norm, likelihood)
        H = self.hidden_size  # an int: the argument may be a NumPy integer
        hh = H if hidden_hidden_size is None else int(check_params(self, hidden_hidden_size=hidden_hidden_size)
                                                      ["hidden_hidden_size"])
        check_size(self, (hh, max(H * self.path_channels, hh)), f"hidden_size={hidden_size}, "
                   f"hidden_hidden_size={hidden_hidden_size} with {self.path_channels} path channels")
        self.field_init: FieldInit = check_params(self, field_init=field_init)["field_init"]
        self.initial = nn.Linear(self.path_channels, H)
        self.field = CDEVectorField(H, self.path_channels, hh, int(num_layers),
                                    init=FieldInit.KAIMING if self.field_init is FieldInit.KAIMING else FieldInit.TORCH)
        # AUTO decides once, at the first initialise, and only on the weights drawn here: weights loaded
        # from a state dict or copied in (sde.jax.convert.to_torch) are someone's choice, never re-drawn
        self._auto_pending = self.field_init is FieldInit.AUTO
        self._drawn = self.field.net[0].weight.detach().clone()  # not a buffer: no state-dict key
        self.field_spread_: float | None = None  # what AUTO measured (None: not measured)

    def initialise(self, train: Any) -> NeuralCDE:
        """The standardisation (:meth:`SeriesModel.initialise`), then, for ``field_init="auto"`` and
        once per model, the choice of the vector field's initialisation (see the module docstring)."""
        super().initialise(train)
        untouched = torch.equal(self.field.net[0].weight.detach().cpu().double(), self._drawn.double())
        if self._auto_pending and untouched:
            self._auto_pending = False
            n = min(len(train), AUTO_SAMPLE)
            if n >= 2:
                self.field_spread_ = self._path_spread(train[list(range(n))])
                if self.field_spread_ < AUTO_SPREAD:
                    self.field.kaiming_()
        return self

    @torch.no_grad()
    def _path_spread(self, sample: Any) -> float:
        """Mean over hidden units of the std over series of ``z(T) - z(t0)``: how much the paths alone
        tell the series apart at the current weights."""
        prepared = self.prepare(sample)
        path = self.control_path(prepared)
        z0 = self.initial(path.evaluate(path.interval[0]))
        last = (prepared.mask.sum(1) - 1).clamp(min=0)
        end = prepared.time.gather(1, last[:, None])
        return float((self.latent(prepared, end)[:, 0] - z0).std(0).mean())

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        # loaded weights are someone's choice: AUTO must not re-draw them at the next initialise
        self._auto_pending = False
        super()._load_from_state_dict(state_dict, prefix, *args)

    def default_method(self) -> Any:
        from sde.solvers import Method

        return Method.RK4

    def latent(self, batch: Any, times: Tensor) -> Tensor:
        path = self.control_path(batch)
        z0 = self.initial(path.evaluate(path.interval[0]))
        return self.solve_at(self.field, z0, times, self.step(batch), control=path)
