"""What the latent neural SDEs trained by a bound share: networks, the posterior SDE, the importance weights.

:class:`~sde.models.latent.LatentSDE` (series) and :class:`~sde.models.cox.NeuralCoxSDE` (events)
both have a prior SDE ``dz = h(t, z) dt + g(z) dW`` and a posterior ``dz = f(t, z, context) dt +
g(z) dW`` that shares the diffusion (Li, Wong, Chen & Duvenaud, AISTATS 2020, Sec. 5), discretised
by Euler-Maruyama on a fixed grid. Written once here:

* the networks: :class:`DriftNet`, :class:`DiagonalDiffusion`, :class:`BackwardEncoder`;
* :class:`Posterior`, the posterior SDE as torchsde sees it (drift ``f`` from a subclass, the
  model's prior drift ``h`` and diffusion ``g``);
* :class:`WeightedPosterior`: the same SDE with one more state, the log density ratio of the
  posterior's and the prior's Euler chains. For one Euler step ``z' = z + f dt + g dW`` the two
  transitions are ``N(z + f dt, g^2 dt)`` and ``N(z + h dt, g^2 dt)``, and their log ratio at the
  sampled ``z'`` is ``u dW + |u|^2 dt / 2`` with ``u = (f - h) / g``; summed over the steps it is
  the path's ``log dQ/dP`` (Girsanov's theorem, exact for the discretised chains). Its mean is the
  path KL of the ELBO; per path it is what an importance weight needs (Burda, Grosse &
  Salakhutdinov 2016: ``log (1/K) sum_k p(x, z_k) / q(z_k | x)``, a lower bound on ``log p(x)`` in
  expectation that tightens as ``K`` grows and is consistent as ``K -> inf``).
"""

from __future__ import annotations

import abc
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sde.solvers import Backprop, Method, solve

__all__ = [
    "BackwardEncoder",
    "DiagonalDiffusion",
    "DriftNet",
    "Posterior",
    "WeightedPosterior",
    "check_num_samples",
    "gaussian_kl",
    "gaussian_log_ratio",
    "importance_weighted",
    "mlp",
    "solve_fixed",
]

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def mlp(in_size: int, hidden_size: int, out_size: int, zero_last: bool = False) -> nn.Sequential:
    """``Linear -> Softplus -> Linear -> Softplus -> Linear``; ``zero_last``: the output starts at 0."""
    net = nn.Sequential(
        nn.Linear(in_size, hidden_size), nn.Softplus(), nn.Linear(hidden_size, hidden_size), nn.Softplus(),
        nn.Linear(hidden_size, out_size),
    )
    if zero_last:  # the posterior starts as the prior: no path KL before training
        nn.init.zeros_(net[-1].weight)
        nn.init.zeros_(net[-1].bias)
    return net


class DiagonalDiffusion(nn.Module):
    """``g_i(z_i) = sigmoid(MLP_i(z_i))``: one small network per latent coordinate.

    Each ``g_i`` depends on its own coordinate only, so the noise is diagonal in the strict sense
    (``dg_i / dz_j = 0`` for ``i != j``) that torchsde's diagonal-noise solvers (Milstein, SRK)
    assume, and ``u = (f - h) / g`` of the path KL is elementwise. Values lie in ``(0, 1)``.
    """

    def __init__(self, latent_size: int, hidden_size: int = 16) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(latent_size, hidden_size) / math.sqrt(2))
        self.b1 = nn.Parameter(torch.zeros(latent_size, hidden_size))
        self.w2 = nn.Parameter(torch.randn(latent_size, hidden_size) / math.sqrt(hidden_size))
        self.b2 = nn.Parameter(torch.full((latent_size,), -2.0))

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        """``[N, D]`` diffusion at ``z [N, D]`` (time-homogeneous: ``t`` is unused)."""
        hidden = F.softplus(z[..., None] * self.w1 + self.b1)
        return torch.sigmoid((hidden * self.w2).sum(-1) + self.b2)


class DriftNet(nn.Module):
    """Prior drift ``h(t, z)``: an MLP of ``z`` (and of ``t`` when ``time_dependent``)."""

    def __init__(self, latent_size: int, hidden_size: int, time_dependent: bool = False) -> None:
        super().__init__()
        self.time_dependent = time_dependent
        self.net = mlp(latent_size + int(time_dependent), hidden_size, latent_size)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        """``[N, D]``; ``t`` is a scalar tensor or ``[N]`` (model time)."""
        if self.time_dependent:
            t = torch.as_tensor(t, dtype=z.dtype, device=z.device).reshape(-1)
            z = torch.cat([z, t.expand(z.shape[0])[:, None]], -1)
        return self.net(z)


class BackwardEncoder(nn.Module):
    """A GRU run from the last row of each sequence to the first: output ``j`` summarises rows ``j ..``.

    Sequences are left-aligned with padding after their ends; each one's valid part is reversed in
    place (padding stays put), so padding never reaches a valid output.
    """

    def __init__(self, input_size: int, hidden_size: int, context_size: int) -> None:
        super().__init__()
        self.gru = nn.GRU(input_size, hidden_size, batch_first=True)
        self.out = nn.Linear(hidden_size, context_size)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``x [B, L, F]``, ``lengths [B]`` -> ``[B, L, context]`` (garbage on padding)."""
        B, L, _ = x.shape
        j = torch.arange(L, device=x.device)[None, :]
        rev = torch.where(j < lengths[:, None], lengths[:, None] - 1 - j, j)  # an involution
        hidden, _ = self.gru(x.gather(1, rev[..., None].expand_as(x)))
        return self.out(hidden.gather(1, rev[..., None].expand(B, L, hidden.shape[-1])))


def gaussian_kl(mean_q: Tensor, log_std_q: Tensor, mean_p: Tensor, log_std_p: Tensor) -> Tensor:
    """``KL(N(mean_q, std_q^2) || N(mean_p, std_p^2))`` summed over the last dimension."""
    var_ratio = torch.exp(2 * (log_std_q - log_std_p))
    return 0.5 * (var_ratio + ((mean_q - mean_p) / log_std_p.exp()) ** 2 - 1 - 2 * (log_std_q - log_std_p)).sum(-1)


def gaussian_log_ratio(z: Tensor, mean_q: Tensor, log_std_q: Tensor, mean_p: Tensor, log_std_p: Tensor) -> Tensor:
    """``log N(z; mean_q, std_q^2) - log N(z; mean_p, std_p^2)`` summed over the last dimension (its
    mean under ``q`` is :func:`gaussian_kl`)."""
    log_q = -0.5 * ((z - mean_q) / log_std_q.exp()) ** 2 - log_std_q
    log_p = -0.5 * ((z - mean_p) / log_std_p.exp()) ** 2 - log_std_p
    return (log_q - log_p).sum(-1)


def importance_weighted(log_weights: Tensor) -> Tensor:
    """``[B]`` ``log (1/K) sum_k exp(log_weights[k])`` of ``log_weights [K, B]`` (the IWAE estimate)."""
    return torch.logsumexp(log_weights, 0) - math.log(log_weights.shape[0])


def check_num_samples(num_samples: int) -> int:
    """``num_samples`` as an int >= 1 (a clear error otherwise)."""
    if int(num_samples) != num_samples or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    return int(num_samples)


def solve_fixed(system: nn.Module, y0: Tensor, ts: Tensor, *, step_size: float, method: Method,
                backprop: Backprop = Backprop.DIRECT, logqp: bool = False, seed: int | None = None) -> Any:
    """Fixed steps of ``step_size`` from ``ts[0]``; one place where the models call :func:`sde.solvers.solve`."""
    return solve(system, y0, ts, method=method, step_size=step_size, adaptive=False, logqp=logqp, backprop=backprop,
                 seed=seed)


class Posterior(nn.Module, abc.ABC):
    """A posterior SDE for torchsde: drift ``f`` (subclasses), the model's prior drift ``h`` and diffusion ``g``.

    ``model`` has ``prior_drift(t, z)``, ``diffusion(t, z)`` and ``posterior_drift(inputs)``.
    """

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self._last: tuple[Tensor, Tensor, Tensor] | None = None

    @abc.abstractmethod
    def f(self, t: Tensor, z: Tensor) -> Tensor:
        """Posterior drift at ``t`` (each model's own control of the prior drift)."""

    def h(self, t: Tensor, z: Tensor) -> Tensor:
        # torchsde asks for f, g and h at the same (t, z) each step: reuse the prior drift f computed
        if self._last is not None and self._last[0] is z and bool(self._last[1] == t):
            return self._last[2]
        return self.model.prior_drift(t, z)

    def _prior(self, t: Tensor, z: Tensor) -> Tensor:
        prior = self.model.prior_drift(t, z)
        self._last = (z, t, prior)
        return prior

    def g(self, t: Tensor, z: Tensor) -> Tensor:
        return self.model.diffusion(t, z)


class WeightedPosterior(nn.Module):
    """``(z, r)``: the posterior SDE and ``dr = |u|^2 / 2 dt + u . dW`` on the same noise, ``u = (f - h) / g``.

    ``r`` at the end of an Euler solve is the log density ratio of the posterior's and the prior's
    Euler chains along the sampled path (see the module docstring); general noise, so ``r`` sees the
    ``D`` Brownian motions of ``z``. Only Euler-Maruyama gives the exact ratio.
    """

    noise_type = "general"
    sde_type = "ito"

    def __init__(self, posterior: Posterior) -> None:
        super().__init__()
        self.posterior = posterior
        self._cache: tuple[Tensor, Tensor, Tensor, Tensor] | None = None

    def _parts(self, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The posterior drift ``[N, D]`` and ``u [N, D]`` at ``(t, y)`` (computed once per step)."""
        if self._cache is not None and self._cache[0] is y and bool(self._cache[1] == t):
            return self._cache[2], self._cache[3]
        z = y[:, :-1]
        drift = self.posterior.f(t, z)
        u = (drift - self.posterior.h(t, z)) / self.posterior.g(t, z)
        self._cache = (y, t, drift, u)
        return drift, u

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        drift, u = self._parts(t, y)
        return torch.cat([drift, 0.5 * (u**2).sum(-1, keepdim=True)], -1)

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        """``[N, D + 1, D]``: ``diag(g(z))`` above, ``u`` as the last row."""
        _, u = self._parts(t, y)
        return torch.cat([torch.diag_embed(self.posterior.g(t, y[:, :-1])), u[:, None, :]], 1)
