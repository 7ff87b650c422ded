"""The stable neural SDEs' equations (Oh, Lim, Kim, ICLR 2024), written once for torch and for JAX.

As scikit-learn writes its maths for any array library (``xp = get_namespace(X)``), every function
here takes an array namespace ``xp`` (:data:`TORCH`, or :func:`jax_namespace`, built on first use so
that importing this module never imports JAX) and a model ``m`` of either twin: the torch
:class:`sde.models.stable.StableSDE` and the equinox :class:`sde.jax.models.AbstractStableSDE` name
their layers and settings alike (``initial``, ``embed_control``, ``embed_state``, ``combine``,
``gamma_net``, ``sigma_net``, ``theta``, ``clip_drift``, ``clip_diffusion``, ``time_in_drift``,
``noise``, and ``scheme`` for the geometric SDE), and a layer is a callable on a batch ``[B, in]``.

* the layer layout (:func:`layout`): every linear map's shape and the order of the layers in
  ``gamma_net`` and ``sigma_net``, from which each twin builds its own modules;
* the equations: ``z~ = emb([phi(t, z), zeta(X(t))])``, ``gamma(z~)`` (:func:`gamma`), the noise
  scale ``sigma(t) = sigmoid(theta) relu(MLP(sin t, cos t))`` (:func:`sigma`), and per noise type
  (:class:`Noise`) the drift and diagonal diffusion of the solved state (:func:`drift`,
  :func:`diffusion`), its start from ``X(0)`` (:func:`initial_state`) and the latent ``z`` from it
  (:func:`state`): LSDE ``dz = gamma dt + sigma(t) dW``; LNSDE ``dz = gamma dt + sigma(t) z dW``;
  GSDE ``dz = z gamma dt + z sigma(t) dW``, solved in ``u = log z`` by default
  (``du = (gamma - sigma^2 / 2) dt + sigma dW``, Itô's formula) or in ``z`` (:class:`GeometricScheme`);
* the solver's view (:func:`field_drift`): the drift with the control path held at its last value
  beyond its end.

The order of operations is the same in both twins by construction, which is what keeps the parity
tests (``tests/sde/test_jax_parity.py``) at 1e-9 in float64.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "GeometricScheme",
    "Layout",
    "Namespace",
    "Noise",
    "TORCH",
    "diffusion",
    "drift",
    "field_drift",
    "gamma",
    "get_namespace",
    "initial_state",
    "jax_namespace",
    "layout",
    "sigma",
    "state",
    "time_features",
]


class GeometricScheme(enum.Enum):
    """How the GSDE is integrated: in ``log z`` (positive for any step) or as written, in ``z``."""

    LOG = "log"
    DIRECT = "direct"


class Noise(enum.Enum):
    """The diffusion of each stable SDE (the one thing that tells LSDE, LNSDE and GSDE apart)."""

    ADDITIVE = "additive"  #: LSDE: ``sigma(t) dW``
    LINEAR = "linear"  #: LNSDE: ``sigma(t) z dW``
    GEOMETRIC = "geometric"  #: GSDE: ``z sigma(t) dW`` with the drift ``z gamma``


# ---------------------------------------------------------------------------------------- namespaces
@dataclass(frozen=True)
class Namespace:
    """The few array operations the equations use, for one array library."""

    name: str
    concat: Callable[[Sequence[Any], int], Any]  # (arrays, axis)
    broadcast_to: Callable[[Any, tuple[int, ...]], Any]
    astype: Callable[[Any, Any], Any]  # (x, like): x in like's dtype
    clamp_max: Callable[[Any, Any], Any]  # (x, high): min(x, high)
    sin: Callable[[Any], Any]
    cos: Callable[[Any], Any]
    tanh: Callable[[Any], Any]
    exp: Callable[[Any], Any]
    sigmoid: Callable[[Any], Any]
    relu: Callable[[Any], Any]


TORCH = Namespace(
    name="torch",
    concat=lambda xs, axis: torch.cat(list(xs), axis),
    broadcast_to=torch.broadcast_to,
    astype=lambda x, like: x.to(like) if isinstance(x, torch.Tensor) else torch.as_tensor(x).to(like),
    clamp_max=lambda x, high: x.clamp(max=high),
    sin=torch.sin,
    cos=torch.cos,
    tanh=torch.tanh,
    exp=torch.exp,
    sigmoid=torch.sigmoid,
    relu=torch.relu,
)

_JAX: Namespace | None = None


def jax_namespace() -> Namespace:
    """The JAX namespace (imports JAX on first call only)."""
    global _JAX
    if _JAX is None:
        import jax
        import jax.numpy as jnp

        _JAX = Namespace(
            name="jax",
            concat=lambda xs, axis: jnp.concatenate(list(xs), axis),
            broadcast_to=jnp.broadcast_to,
            astype=lambda x, like: jnp.asarray(x).astype(like.dtype),
            clamp_max=jnp.minimum,
            sin=jnp.sin,
            cos=jnp.cos,
            tanh=jnp.tanh,
            exp=jnp.exp,
            sigmoid=jax.nn.sigmoid,
            relu=jax.nn.relu,
        )
    return _JAX


def get_namespace(*arrays: Any) -> Namespace:
    """:data:`TORCH` if any argument is a torch tensor, else the JAX namespace."""
    return TORCH if any(isinstance(a, torch.Tensor) for a in arrays) else jax_namespace()


# ---------------------------------------------------------------------------------------- the layout
RELU = "relu"
"""A ReLU in a layer sequence of :class:`Layout` (the other entries are ``(in, out)`` linear maps)."""


@dataclass(frozen=True)
class Layout:
    """Every layer of a stable SDE: ``linear`` maps (name -> ``(in, out)``) and the two sequences.

    ``gamma_net`` and ``sigma_net`` list ``(in, out)`` for a linear map and :data:`RELU` for a ReLU, in
    torch's ``nn.Sequential`` order (so ``gamma_net.2.weight`` names the same array in both twins).
    """

    linear: dict[str, tuple[int, int]]
    gamma_net: tuple[tuple[int, int] | str, ...]
    sigma_net: tuple[tuple[int, int] | str, ...]


def layout(path_channels: int, hidden_size: int, hidden_hidden_size: int, num_layers: int,
           time_in_drift: bool) -> Layout:
    """The layers of the reference code's drift ``gamma(z~)`` and noise ``sigma(t)`` networks.

    ``zeta_0`` (``initial``) and ``zeta`` (``embed_control``) embed the path value; ``phi``
    (``embed_state``) the state (and ``sin t, cos t`` when the drift sees the time); ``emb``
    (``combine``) mixes them into ``z~``; ``gamma_net`` is ``ReLU -> (Linear -> ReLU) x
    (num_layers - 1) -> Linear``; ``sigma_net`` is ``Linear(2, H) -> ReLU -> Linear(H, H)``.
    """
    H, hh = hidden_size, hidden_hidden_size
    gamma_net: list[tuple[int, int] | str] = [RELU]
    for _ in range(num_layers - 1):
        gamma_net += [(hh, hh), RELU]
    gamma_net.append((hh, H))
    return Layout(
        linear={
            "initial": (path_channels, H),
            "embed_control": (path_channels, H),
            "embed_state": (H + (2 if time_in_drift else 0), hh),
            "combine": (hh + H, hh),
        },
        gamma_net=tuple(gamma_net),
        sigma_net=((2, H), RELU, (H, H)),
    )


# ---------------------------------------------------------------------------------------- equations
def time_features(xp: Namespace, t: Any, like: Any) -> Any:
    """``[B, 2]``: ``sin t, cos t`` (the reference code's bounded time encoding) for a scalar or ``[B]`` time."""
    t = xp.broadcast_to(xp.astype(t, like).reshape(-1, 1), (like.shape[0], 1))
    return xp.concat([xp.sin(t), xp.cos(t)], -1)


def gamma(xp: Namespace, m: Any, t: Any, z: Any, x: Any) -> Any:
    """``[B, H]`` the drift network on ``z~ = emb([phi(t, z), zeta(X(t))])``, tanh-clipped if ``m.clip_drift``."""
    state_in = xp.concat([time_features(xp, t, z), z], -1) if m.time_in_drift else z
    mixed = m.combine(xp.concat([m.embed_state(state_in), m.embed_control(x)], -1))
    out = m.gamma_net(mixed)
    return xp.tanh(out) if m.clip_drift else out


def sigma(xp: Namespace, m: Any, t: Any, z: Any) -> Any:
    """``[B, H]`` the noise scale ``sigmoid(theta) relu(MLP(sin t, cos t))`` (unclipped)."""
    return xp.sigmoid(m.theta) * xp.relu(m.sigma_net(time_features(xp, t, z)))


def _clip(xp: Namespace, m: Any, g: Any) -> Any:
    return xp.tanh(g) if m.clip_diffusion else g


def _log_scheme(m: Any) -> bool:
    return m.noise is Noise.GEOMETRIC and m.scheme is GeometricScheme.LOG


def drift(xp: Namespace, m: Any, t: Any, y: Any, x: Any) -> Any:
    """``[B, H]`` drift of the solved state ``y`` at ``t`` given the path value ``x = X(t)``."""
    if m.noise is not Noise.GEOMETRIC:
        return gamma(xp, m, t, y, x)
    z = xp.exp(y) if m.scheme is GeometricScheme.LOG else y
    rate = gamma(xp, m, t, z, x)
    if m.scheme is GeometricScheme.LOG:
        return rate - 0.5 * _clip(xp, m, sigma(xp, m, t, y)) ** 2  # Itô correction of d log z
    return z * rate


def diffusion(xp: Namespace, m: Any, t: Any, y: Any) -> Any:
    """``[B, H]`` diagonal diffusion of the solved state ``y``.

    The clip (``m.clip_diffusion``) acts as the reference code's: on ``sigma(t)`` (LSDE), on the
    product ``sigma(t) z`` (LNSDE); on the rate ``sigma(t)`` for the GSDE, which keeps the geometric form.
    """
    if m.noise is Noise.ADDITIVE:
        return _clip(xp, m, sigma(xp, m, t, y))
    if m.noise is Noise.LINEAR:
        return _clip(xp, m, sigma(xp, m, t, y) * y)
    rate = _clip(xp, m, sigma(xp, m, t, y))
    return rate if m.scheme is GeometricScheme.LOG else y * rate


def initial_state(xp: Namespace, m: Any, x0: Any) -> Any:
    """The solved state at ``t = 0`` from ``X(0)``: ``zeta_0(X(0))``, which is ``log z(0)`` for the GSDE."""
    start = m.initial(x0)
    if m.noise is Noise.GEOMETRIC and m.scheme is GeometricScheme.DIRECT:
        return xp.exp(start)
    return start


def state(xp: Namespace, m: Any, solved: Any) -> Any:
    """The latent ``z`` from the solved state (the identity but for the GSDE solved in ``log z``)."""
    return xp.exp(solved) if _log_scheme(m) else solved


def field_drift(xp: Namespace, m: Any, path: Any, t_end: Any, t: Any, y: Any) -> Any:
    """The drift as the solver sees it: the control path ``path`` is read at ``min(t, t_end)`` (held at
    its last value beyond its end, no extrapolation of the last piece), in the state's dtype (the
    solver's clock may be float64)."""
    x = path.evaluate(xp.astype(xp.clamp_max(t, t_end), y))
    return drift(xp, m, t, y, x)
