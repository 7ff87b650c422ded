"""Stable neural SDEs (Oh, Lim, Kim, ICLR 2024): Langevin-type, linear-noise and geometric.

All three read the control path ``X`` in the drift through ``z~(t) = emb([phi(t, z(t)), zeta(X(t))])``
(the latent state and the embedded path value, combined by a learned linear map), run
an MLP ``gamma`` on it, and start from ``z(0) = zeta_0(X(0))``:

* :class:`LSDE`  ``dz = gamma(z~) dt + sigma(t) dW``                (Langevin-type: additive noise)
* :class:`LNSDE` ``dz = gamma(t, z~) dt + sigma(t) z dW``           (linear noise)
* :class:`GSDE`  ``dz = z gamma(t, z~) dt + z sigma(t) dW``, ``z(0) > 0``  (geometric)

Itô, diagonal noise (torchsde conventions), solved by :func:`sde.solvers.solve` with fixed-step
Euler by default and ``dt = max(min observation gap, 1e-3)`` on the model's clock (series scaled
to about ``[0, 1]``), as the reference code does. ``sigma(t) = sigmoid(theta) relu(MLP(sin t, cos t))``.

Stabilisers of the reference code (github.com/yongkyung-oh/Stable-Neural-SDEs, ``Diffusion_model``
with the paper's option pairs LSDE (2, 16), LNSDE (4, 17), GSDE (6, 17)), all on by default and each
a constructor option: ``clip_drift`` (tanh on ``gamma``) and ``clip_diffusion`` (tanh on the
diffusion: LSDE ``sigma(t)``, LNSDE the product ``sigma(t) z`` exactly as the reference code), and
the bounded time features ``sin t, cos t`` (fixed, part of the parameterisation).

Where we follow the paper's equations rather than its code, for the GSDE only: the reference code's
"geometric" drift is ``tanh(gamma * tanh(z))`` with ``tanh(sigma(t) z)`` noise and an unconstrained
``z(0)``, which neither keeps ``z`` positive nor is the paper's GSDE. Here ``log z(0) = zeta_0(X(0))``, the clip
acts on the rates (``tanh(gamma)``, ``tanh(sigma)``) so the geometric form is kept, and by default
(:attr:`GeometricScheme.LOG`) the solver integrates ``u = log z``:
``du = (gamma - sigma^2 / 2) dt + sigma(t) dW`` (Itô's formula), so ``z = exp(u) > 0`` for any step;
:attr:`GeometricScheme.DIRECT` integrates the GSDE in ``z`` as written (Euler can then cross zero).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from sde.models import _stable_equations as eq
from sde.models._base import PathModel
from sde.models._stable_equations import TORCH, GeometricScheme, Noise
from sde.models.heads import Task
from tpp.options import Interval, Options, check_params, check_size

__all__ = ["GSDE", "LNSDE", "LSDE", "GeometricScheme", "StableSDE"]


def _sequential(spec: tuple[tuple[int, int] | str, ...]) -> nn.Sequential:
    """An ``nn.Sequential`` from a layer list of :func:`sde.models._stable_equations.layout`."""
    return nn.Sequential(*(nn.ReLU() if layer == eq.RELU else nn.Linear(*layer) for layer in spec))


class _System(nn.Module):
    """The torchsde view of a model on one batch: ``f``, ``g`` with the batch's control path bound."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, model: StableSDE, path: Any) -> None:
        super().__init__()
        self.model = model
        self.path = path
        self.t_end = float(path.interval[1])

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        return eq.field_drift(TORCH, self.model, self.path, self.t_end, t, y)

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        return self.model.diffusion(t, y)


class StableSDE(PathModel):
    """Shared parts of :class:`LSDE`, :class:`LNSDE`, :class:`GSDE` (see the module docstring).

    Arguments beyond the common ones (:class:`sde.models._base.PathModel`): ``hidden_hidden_size``
    and ``num_layers`` (width and linear layers of ``gamma``'s MLP after ``z~``), ``method`` (a
    :class:`sde.solvers.Method`, default Euler; Milstein also works with diagonal noise),
    ``step_size``, ``clip_drift`` / ``clip_diffusion`` (the reference's tanh clips), ``theta``
    (initial logit of the noise bound ``sigmoid(theta)``; ``-inf`` switches the noise off),
    ``brownian_seed`` (None: a fresh Brownian path per forward pass from torch's global generator;
    an int: the same path every pass, e.g. for gradcheck), ``batch_norm`` (readout, see
    :mod:`sde.models.heads`).

    Subclasses say whether the drift sees the time (``time_in_drift``) and which noise they have
    (``noise``); the equations (:meth:`drift`, :meth:`diffusion` from :meth:`gamma` and :meth:`sigma`)
    and the layer layout are written once for this model and its JAX twin in
    :mod:`sde.models._stable_equations`.
    """

    stochastic = True
    time_in_drift: bool = True
    noise: ClassVar[Noise]
    _constraints = {"num_layers": Interval(1, None, integer=True),
                    "hidden_hidden_size": Interval(1, None, integer=True, none_ok=True)}

    def __init__(self, input_channels: int, hidden_size: int = 32, output_size: int = 2,
                 task: Task = Task.CLASSIFICATION, interpolation: Any = None, *, hidden_hidden_size: int | None = None,
                 num_layers: int = 3, observation_counts: bool = False, method: Any = None,
                 step_size: float | None = None, clip_drift: bool = True, clip_diffusion: bool = True,
                 theta: float = 1.0, brownian_seed: int | None = None, batch_norm: bool | None = None,
                 likelihood: str = "gaussian") -> None:
        super().__init__(input_channels, hidden_size, output_size, task, interpolation, observation_counts, method,
                         step_size, batch_norm, likelihood)
        check_params(self, num_layers=num_layers, hidden_hidden_size=hidden_hidden_size)
        hh = self.hidden_size if hidden_hidden_size is None else int(hidden_hidden_size)
        check_size(self, (hh, max(self.hidden_size, hh, self.path_channels)),
                   f"hidden_size={hidden_size}, hidden_hidden_size={hidden_hidden_size}")
        self.clip_drift, self.clip_diffusion = bool(clip_drift), bool(clip_diffusion)
        self.brownian_seed = brownian_seed
        spec = eq.layout(self.path_channels, self.hidden_size, hh, int(num_layers), self.time_in_drift)
        # zeta_0 (initial), zeta (embed_control), phi (embed_state), emb (combine: z~), in the twins' order
        self.initial, self.embed_control, self.embed_state, self.combine = (
            nn.Linear(*spec.linear[name]) for name in ("initial", "embed_control", "embed_state", "combine"))
        self.gamma_net = _sequential(spec.gamma_net)
        self.sigma_net = _sequential(spec.sigma_net)
        self.theta = nn.Parameter(torch.tensor(float(theta)))  # sigmoid(theta) bounds the noise scale

    def default_method(self) -> Any:
        from sde.solvers import Method

        return Method.EULER

    # ------------------------------------------------------------------ the equations (shared with sde.jax)
    def gamma(self, t: Tensor, z: Tensor, x: Tensor) -> Tensor:
        """``[B, H]`` the drift network on ``z~ = emb([phi(t, z), zeta(X(t))])``, tanh-clipped if ``clip_drift``."""
        return eq.gamma(TORCH, self, t, z, x)

    def sigma(self, t: Tensor, z: Tensor) -> Tensor:
        """``[B, H]`` the noise scale ``sigmoid(theta) relu(MLP(sin t, cos t))`` (unclipped)."""
        return eq.sigma(TORCH, self, t, z)

    def drift(self, t: Tensor, z: Tensor, x: Tensor) -> Tensor:
        """``[B, H]`` drift of the solved state at ``t`` given the path value ``x = X(t)``."""
        return eq.drift(TORCH, self, t, z, x)

    def diffusion(self, t: Tensor, z: Tensor) -> Tensor:
        """``[B, H]`` diagonal diffusion of the solved state."""
        return eq.diffusion(TORCH, self, t, z)

    def initial_state(self, x0: Tensor) -> Tensor:
        """The solved state at ``t = 0`` from ``X(0)``."""
        return eq.initial_state(TORCH, self, x0)

    def state(self, solved: Tensor) -> Tensor:
        """The latent ``z`` from the solved state (identity but for the GSDE in log space)."""
        return eq.state(TORCH, self, solved)

    # ------------------------------------------------------------------ the solve
    def latent(self, batch: Any, times: Tensor) -> Tensor:
        path = self.control_path(batch)
        y0 = self.initial_state(path.evaluate(path.interval[0]))
        return self.state(self.solve_at(_System(self, path), y0, times, self.step(batch), seed=self.brownian_seed))


class LSDE(StableSDE):
    """Neural Langevin-type SDE: ``dz = gamma(z~) dt + sigma(t) dW`` (the drift does not see ``t``)."""

    time_in_drift = False
    noise = Noise.ADDITIVE


class LNSDE(StableSDE):
    """Neural linear-noise SDE: ``dz = gamma(t, z~) dt + sigma(t) z dW``."""

    noise = Noise.LINEAR


class GSDE(StableSDE):
    """Neural geometric SDE: ``dz = z gamma(t, z~) dt + z sigma(t) dW`` with ``z(0) = exp(zeta_0(X(0))) > 0``.

    ``scheme``: :attr:`GeometricScheme.LOG` (default) solves ``u = log z`` so every state is positive;
    ``DIRECT`` solves the equation in ``z``. ``clip_drift`` / ``clip_diffusion`` clip the rates
    ``gamma`` and ``sigma`` (not the products), which keeps the geometric form.
    """

    noise = Noise.GEOMETRIC
    _constraints = {"scheme": Options(GeometricScheme, strict=True)}

    def __init__(self, input_channels: int, hidden_size: int = 32, output_size: int = 2,
                 task: Task = Task.CLASSIFICATION, interpolation: Any = None, *,
                 scheme: GeometricScheme = GeometricScheme.LOG, **kwargs: Any) -> None:
        super().__init__(input_channels, hidden_size, output_size, task, interpolation, **kwargs)
        self.scheme = check_params(self, scheme=scheme)["scheme"]
