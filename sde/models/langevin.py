"""Langevin flows: underdamped Langevin latent dynamics for neural population activity, trained by the ELBO.

:class:`LangevinFlow` (after Song et al. 2025, "Langevin Flows for Modeling Neural Latent Dynamics"):
the latent state is a position ``q [D]`` and a velocity ``p [D]`` following the underdamped Langevin
equation

    dq = p dt,     dp = (-grad U(q) - gamma * p) dt + sigma dW,

with a learned potential ``U`` of locally coupled oscillators (:class:`CoupledPotential`)

    U(q) = sum_i k_i q_i^2 / 2 + sum_i c_i (q_i - q_{i+1})^2 / 2 + sum_j a_j softplus(w_j . q + b_j),

(stiffnesses ``k_i > 0``, couplings ``c_i >= 0`` of neighbours on a chain, and a one-hidden-layer term whose
gradient is written in closed form, so the drift needs no autograd inside the solve), a learned friction
``gamma_i > 0`` and noise ``sigma_i > 0`` per coordinate. Spike counts are read from the position only,
``y ~ Poisson(exp(W q + c) dt)`` (:mod:`sde.models.emissions`), or Gaussian (``emission="gaussian"``).

The posterior is :class:`~sde.models.LatentSDE`'s (this class subclasses it and replaces only the solve):
a GRU run backwards over the observed counts gives a context per bin and ``q(q_0, p_0)``; the posterior adds
a control ``u(q, p, context, time to the next bin)`` to the velocity's noise channel,

    dp = (-grad U(q) - gamma p + sigma u) dt + sigma dW,

so Girsanov's theorem gives the path KL ``int 1/2 |u|^2 dt`` (exact for the Euler chains: the position's
step is deterministic given ``(q, p)`` under both laws, the velocity's steps are Gaussians with covariance
``sigma^2 dt``). ``elbo`` is the bound; the training :meth:`LangevinFlow.objective` weighs both KL terms by
``kl_weight``, raised linearly from 0 to 1 over the first ``kl_warmup`` optimiser steps (:meth:`after_step`;
KL annealing, as in the paper and LFADS). Solved by Euler-Maruyama through :func:`sde.solvers.solve`.

With ``potential="zero"`` (``U = 0``) the velocity is an Ornstein-Uhlenbeck process, so its Euler chain
is the AR(1) ``p' = (1 - gamma dt) p + sigma sqrt(dt) xi`` with stationary variance
``sigma^2 / (gamma (2 - gamma dt)) -> sigma^2 / (2 gamma)`` (:meth:`LangevinFlow.stationary_velocity_variance`).

:class:`PoissonLatentSDE` is the plain :class:`~sde.models.LatentSDE` with the same Poisson emission and
KL annealing: the comparison model of ``benchmarks/langevin_flow.py``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sde.models._posterior import mlp, solve_fixed
from sde.models.emissions import PoissonReconstruction
from sde.models.latent import LatentSDE, _Observed, _Paths
from sde.solvers import Backprop, Method
from tpp.options import Interval, check_params

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

    from sde.series import SeriesBatch

__all__ = ["POTENTIALS", "CoupledPotential", "LangevinFlow", "PoissonLatentSDE", "plot_latents"]

POTENTIALS = ("coupled", "zero")
"""The potentials of :class:`LangevinFlow` (its ``potential`` argument)."""


def _softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class CoupledPotential(nn.Module):
    """``U(q)``: harmonic oscillators coupled to their chain neighbours, plus a small softplus-MLP term.

    ``kind="zero"``: ``U = 0`` (no parameters). :meth:`gradient` is the closed form of ``dU/dq``
    (tested against autograd of :meth:`energy`).
    """

    def __init__(self, size: int, hidden_size: int = 16, kind: str = "coupled", stiffness: float = 10.0,
                 coupling: float = 1.0) -> None:
        super().__init__()
        self.size, self.kind = int(size), kind
        if kind == "zero":
            return
        # stiffnesses spread over a decade around `stiffness`: oscillators of different frequencies to start from
        k = torch.logspace(-0.5, 0.5, self.size, dtype=torch.float64) * stiffness
        self.raw_stiffness = nn.Parameter(torch.log(torch.expm1(k)).float())
        self.raw_coupling = nn.Parameter(torch.full((max(self.size - 1, 0),), _softplus_inverse(coupling)))
        self.w = nn.Parameter(torch.randn(hidden_size, self.size) / math.sqrt(self.size))
        self.b = nn.Parameter(torch.zeros(hidden_size))
        self.a = nn.Parameter(0.1 * torch.randn(hidden_size) / math.sqrt(hidden_size))

    def stiffness(self) -> Tensor:
        """``[D]`` ``k_i = softplus(raw)``."""
        return F.softplus(self.raw_stiffness)

    def coupling(self) -> Tensor:
        """``[D - 1]`` ``c_i = softplus(raw)`` between ``q_i`` and ``q_{i+1}``."""
        return F.softplus(self.raw_coupling)

    def energy(self, q: Tensor) -> Tensor:
        """``[N]`` ``U(q)`` of ``q [N, D]``."""
        if self.kind == "zero":
            return torch.zeros(q.shape[:-1], dtype=q.dtype, device=q.device)
        diff = q[..., :-1] - q[..., 1:]
        mlp_term = (F.softplus(q @ self.w.T.to(q.dtype) + self.b) * self.a).sum(-1)
        return 0.5 * (self.stiffness() * q**2).sum(-1) + 0.5 * (self.coupling() * diff**2).sum(-1) + mlp_term

    def gradient(self, q: Tensor) -> Tensor:
        """``[N, D]`` ``dU/dq`` in closed form."""
        if self.kind == "zero":
            return torch.zeros_like(q)
        grad = self.stiffness() * q
        if self.size > 1:
            flow = self.coupling() * (q[..., :-1] - q[..., 1:])  # c_i (q_i - q_{i+1})
            grad = grad + F.pad(flow, (0, 1)) - F.pad(flow, (1, 0))
        return grad + (torch.sigmoid(q @ self.w.T + self.b) * self.a) @ self.w


class _LangevinPrior(nn.Module):
    """The prior ``(q, p)`` SDE for torchsde (diagonal noise, zero on the positions)."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, model: LangevinFlow) -> None:
        super().__init__()
        self.model = model

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        return self.model.prior_drift(t, y)

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        D = self.model.latent_size
        sigma = self.model.noise_scale().to(y.dtype).expand(y.shape[0], D)
        return torch.cat([torch.zeros_like(sigma), sigma], -1)


class _LangevinPosterior(nn.Module):
    """The posterior ``(q [D], p [D], r [1])`` SDE for torchsde (general noise, ``D`` Brownian motions on the
    velocities). ``r`` accumulates ``1/2 |u|^2 dt`` (mean: the path KL), plus ``u . dW`` with ``weights``
    (then the path's exact log density ratio under Euler steps)."""

    noise_type = "general"
    sde_type = "ito"

    def __init__(self, model: LangevinFlow, context: Tensor, times: Tensor, last: Tensor, weights: bool) -> None:
        super().__init__()
        self.model, self.weights = model, weights
        self.context, self.times, self.last = context, times, last  # [N, L, X], [N, L] (inf padded), [N]
        self._cache: tuple[Tensor, Tensor, Tensor, Tensor, Tensor] | None = None

    def _parts(self, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Prior drift ``[N, 2D]``, control ``u [N, D]`` and ``sigma [D]`` at ``(t, y)`` (once per step)."""
        if self._cache is not None and self._cache[0] is y and bool(self._cache[1] == t):
            return self._cache[2:]  # type: ignore[return-value]
        D = self.model.latent_size
        z = y[:, :2 * D]
        N, L = self.times.shape
        t_col = t.reshape(1, 1).to(self.times.dtype).expand(N, 1).contiguous()
        active = t_col < self.last[:, None]  # after a series' last observation the posterior is the prior
        idx = torch.searchsorted(self.times, t_col, right=True).clamp_max(L - 1)  # first observation after t
        ctx = self.context.gather(1, idx[..., None].expand(N, 1, self.context.shape[-1]))[:, 0]
        ahead = (self.times.gather(1, idx) - t_col).clamp(0, 1e6).to(z.dtype)
        u = self.model.posterior_drift(torch.cat([z, ctx, ahead], -1))
        u = torch.where(active, u, torch.zeros_like(u))
        parts = (self.model.prior_drift(t, z), u, self.model.noise_scale().to(z.dtype))
        self._cache = (y, t, *parts)
        return parts

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        prior, u, sigma = self._parts(t, y)
        control = torch.cat([torch.zeros_like(u), sigma * u], -1)
        return torch.cat([prior + control, 0.5 * (u**2).sum(-1, keepdim=True)], -1)

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        """``[N, 2D + 1, D]``: zeros for ``q``, ``diag(sigma)`` for ``p``, ``u`` (weights) or zeros for ``r``."""
        _, u, sigma = self._parts(t, y)
        N, D = u.shape
        rows_q = torch.zeros(N, D, D, dtype=y.dtype, device=y.device)
        rows_p = torch.diag_embed(sigma.expand(N, D))
        row_r = (u if self.weights else torch.zeros_like(u))[:, None, :]
        return torch.cat([rows_q, rows_p, row_r], 1)


class _Annealed:
    """KL annealing for a latent model on ``LatentSDE``'s bound: ``objective = recon - kl_weight * (KLs)``,
    ``kl_weight`` rising linearly from 0 to 1 over ``kl_warmup`` optimiser steps (counted in the buffer
    ``kl_steps`` by :meth:`after_step`, so a resumed checkpoint continues the schedule)."""

    kl_warmup: int
    kl_steps: Tensor

    @property
    def kl_weight(self) -> float:
        """The current weight of the KL terms in :meth:`objective` (1 after the warm-up)."""
        if self.kl_warmup <= 0:
            return 1.0
        return min(1.0, float(self.kl_steps) / self.kl_warmup)

    def after_step(self) -> None:
        """One more optimiser step of the KL schedule."""
        self.kl_steps += 1

    def objective(self, batch: SeriesBatch) -> Tensor:
        """``[B]`` the annealed bound ``E_q[log p(x | z)] - kl_weight * (path KL + KL(q(z_0) || p(z_0)))``
        (equals :meth:`elbo` once the warm-up is over)."""
        S = self.num_samples  # type: ignore[attr-defined]
        obs = _Observed(self, batch)
        B = obs.s.shape[0]
        paths = self._posterior(obs, None, S)  # type: ignore[attr-defined]
        recon = self._reconstruction(obs, paths, S)  # type: ignore[attr-defined]
        kl = paths.path.reshape(S, B).mean(0) + paths.initial
        bound = recon.mean(0) - self.kl_weight * kl
        return torch.where(obs.lengths > 0, bound, torch.zeros_like(bound))


class PoissonLatentSDE(_Annealed, PoissonReconstruction, LatentSDE):
    """:class:`~sde.models.LatentSDE` with the Poisson count emission (log rate linear in ``z``) and KL annealing.

    Everything but the emission and the annealed objective is ``LatentSDE``'s (MLP prior drift, diagonal
    diffusion, backward-GRU posterior). ``bin_size``: the bin width in data time (None: the median gap
    between training rows); ``kl_warmup``: optimiser steps of the linear KL schedule.
    """

    _constraints = {**LatentSDE._constraints, "kl_warmup": Interval(0, None, integer=True)}

    def __init__(self, num_channels: int, latent_size: int = 8, hidden_size: int = 64, context_size: int = 32, *,
                 num_samples: int = 1, step_size: float = 0.01, backprop: Backprop = Backprop.DIRECT,
                 bin_size: float | None = None, kl_warmup: int = 200) -> None:
        check_params(self, kl_warmup=kl_warmup)
        super().__init__(num_channels, latent_size, hidden_size, context_size, num_samples=num_samples,
                         step_size=step_size, method=Method.EULER, backprop=backprop)
        self.hidden_size, self.context_size, self.kl_warmup = int(hidden_size), int(context_size), int(kl_warmup)
        self._register_poisson("poisson", bin_size)
        self.register_buffer("kl_steps", torch.zeros((), dtype=torch.long))


class _PositionLinear(nn.Linear):
    """``Linear`` of the position, the first ``in_features`` coordinates of a ``(q, p)`` state."""

    def forward(self, z: Tensor) -> Tensor:
        return F.linear(z[..., :self.in_features], self.weight, self.bias)


class LangevinFlow(_Annealed, PoissonReconstruction, LatentSDE):
    """Underdamped Langevin latent dynamics with a coupled-oscillator potential (see the module docstring).

    ``latent_size``: ``D``, the number of positions (the state is ``(q, p)``, ``2D``); ``hidden_size``: the
    encoder GRU's and the control network's width; ``context_size``: the encoder's output per bin.
    ``emission``: ``"poisson"`` (counts, log rate ``W q + c``) or ``"gaussian"`` (``N(W q + c, sigma^2)``, as
    ``LatentSDE``); ``bin_size``: the Poisson exposure in data time (None: median training row gap).
    ``potential``: ``"coupled"`` (:class:`CoupledPotential`) or ``"zero"``; ``stiffness``: the oscillators'
    starting scale ``k`` (model time, where a series spans about 1); ``friction`` and ``noise``: starting
    ``gamma`` and ``sigma`` (a large starting ``sigma``, 10, lets the posterior's
    control steer the positions cheaply: rate R^2 0.919 / 0.938 / 0.950 from sigma = 1 / 3 / 10 in
    ``benchmarks/langevin_flow.py``). ``kl_warmup``: optimiser steps of the KL schedule (0: none). ``step_size``:
    the Euler step in model time. Contract and faces (``elbo``, importance-weighted ``log_likelihood``,
    ``score``, ``predict``, ``interpolate``, ``forecast``, ``rates``, :meth:`latents`) as ``LatentSDE``.
    """

    _constraints = {**LatentSDE._constraints, "kl_warmup": Interval(0, None, integer=True),
                    **{name: Interval(0, None, closed="neither") for name in ("stiffness", "friction", "noise")}}

    def __init__(
        self,
        num_channels: int,
        latent_size: int = 8,
        hidden_size: int = 64,
        context_size: int = 32,
        *,
        emission: str = "poisson",
        potential: str = "coupled",
        potential_hidden: int = 16,
        stiffness: float = 10.0,
        friction: float = 1.0,
        noise: float = 10.0,
        num_samples: int = 1,
        step_size: float = 0.01,
        backprop: Backprop = Backprop.DIRECT,
        bin_size: float | None = None,
        kl_warmup: int = 200,
        noise_init: float = 0.5,
    ) -> None:
        check_params(self, kl_warmup=kl_warmup, stiffness=stiffness, friction=friction, noise=noise,
                     latent_size=latent_size)
        if potential not in POTENTIALS:
            raise ValueError(f"LangevinFlow: potential must be one of {', '.join(map(repr, POTENTIALS))}, "
                             f"got {potential!r}")
        D = int(latent_size)
        # LatentSDE's encoder, q(z_0), p(z_0) and emission over the whole state (q, p): 2D coordinates
        super().__init__(num_channels, 2 * D, hidden_size, context_size, num_samples=num_samples,
                         step_size=step_size, method=Method.EULER, backprop=backprop, noise_init=noise_init,
                         prior_drift=nn.Identity(), diffusion=nn.Identity())  # placeholders: see prior_drift below
        del self.prior_drift, self.diffusion
        # kept under the constructor's names so tpp.table.constructor_args can rebuild a model made directly
        self.latent_size, self.hidden_size, self.context_size = D, int(hidden_size), int(context_size)
        self.potential, self.potential_hidden, self.stiffness = potential, int(potential_hidden), float(stiffness)
        self.friction, self.noise, self.kl_warmup = float(friction), float(noise), int(kl_warmup)
        self.noise_init = float(noise_init)
        self.energy = CoupledPotential(D, self.potential_hidden, potential, self.stiffness)
        self.raw_friction = nn.Parameter(torch.full((D,), _softplus_inverse(self.friction)))
        self.raw_noise_scale = nn.Parameter(torch.full((D,), _softplus_inverse(self.noise)))
        # the control of the velocities reads the state, the context and the time to the next bin; starts at 0
        self.posterior_drift = mlp(2 * D + self.context_size + 1, self.hidden_size, D, zero_last=True)
        self.decoder = _PositionLinear(D, int(num_channels))  # the emission reads the position only
        self._register_poisson(emission, bin_size)
        self.register_buffer("kl_steps", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ the dynamics
    def friction_coefficient(self) -> Tensor:
        """``[D]`` ``gamma_i > 0`` (model time)."""
        return F.softplus(self.raw_friction)

    def noise_scale(self) -> Tensor:
        """``[D]`` ``sigma_i > 0`` (model time)."""
        return F.softplus(self.raw_noise_scale)

    def prior_drift(self, t: Tensor, z: Tensor) -> Tensor:
        """``[N, 2D]`` ``(p, -grad U(q) - gamma p)`` at ``z = (q, p) [N, 2D]``."""
        D = self.latent_size
        q, p = z[..., :D], z[..., D:]
        return torch.cat([p, -self.energy.gradient(q) - self.friction_coefficient().to(z.dtype) * p], -1)

    def stationary_velocity_variance(self, step_size: float | None = None) -> Tensor:
        """``[D]`` stationary variance of the velocity under ``U = 0``: ``sigma^2 / (2 gamma)``, or with
        ``step_size`` that of the Euler chain's AR(1), ``sigma^2 / (gamma (2 - gamma dt))``."""
        gamma, sigma = self.friction_coefficient().detach(), self.noise_scale().detach()
        if step_size is None:
            return sigma**2 / (2 * gamma)
        return sigma**2 / (gamma * (2 - gamma * step_size))

    @torch.no_grad()
    def sample_prior(self, num_paths: int, times: Tensor, z0: Tensor | None = None, seed: int | None = None) -> Tensor:
        """``[N, T, 2D]`` paths of the prior ``(q, p)`` at model times ``times [T]`` (Euler steps of
        ``step_size``), from ``z0 [N, 2D]`` (default: draws of ``p(z_0)``)."""
        times = torch.as_tensor(times, dtype=self.dtype, device=self.device)
        if z0 is None:
            eps = torch.randn(num_paths, 2 * self.latent_size, dtype=self.dtype, device=self.device)
            z0 = self.pz0_mean + self.pz0_log_std.exp() * eps
        return solve_fixed(_LangevinPrior(self), z0, times, step_size=self.step_size, method=Method.EULER,
                           seed=seed).ys

    # ------------------------------------------------------------------ the posterior
    def _posterior(self, obs: _Observed, extra: Tensor | None, num_samples: int, weights: bool = False,
                   logqp: bool = True) -> _Paths:
        """``num_samples`` posterior paths of ``(q, p)`` per series on the union of the observation times (and
        ``extra [B, T]``); path term ``int 1/2 |u|^2 dt`` (``logqp``), the sampled log ratio (``weights``) or
        zero, as :meth:`LatentSDE._posterior`."""
        Z = 2 * self.latent_size
        context, z0, initial, grid, times, last, no_path = self._posterior_start(obs, extra, num_samples, weights,
                                                                                Z)
        if grid.numel() == 1:
            return _Paths(grid, z0[:, None], no_path, initial)
        system = _LangevinPosterior(self, context.repeat(num_samples, 1, 1), times.repeat(num_samples, 1),
                                    last.repeat(num_samples), weights)
        y0 = torch.cat([z0, no_path[:, None]], -1)
        ys = solve_fixed(system, y0, grid, step_size=self.step_size, method=Method.EULER, backprop=self.backprop).ys
        path = ys[:, -1, -1] if (logqp or weights) else no_path
        return _Paths(grid, ys[..., :Z], path, initial)

    @torch.no_grad()
    def latents(self, batch: SeriesBatch, t: Tensor | None = None, num_samples: int = 20) -> Tensor:
        """``[S, B, T, D]`` posterior positions ``q`` at times ``t`` (default each row's time; data clock)."""
        obs, rel = self._times(batch, t)
        return self._latent_paths(obs, rel, int(num_samples))[..., :self.latent_size]


def plot_latents(model: LangevinFlow, batch: SeriesBatch, series: int = 0, *,
                 true_rates: np.ndarray | Tensor | None = None, neurons: int = 4, num_samples: int = 20,
                 seed: int = 0) -> Figure:
    """One series' posterior: left the latent positions ``q`` (mean over ``num_samples`` paths, a band of
    +- 1 sd), right the posterior mean firing rates of the first ``neurons`` neurons against the binned counts
    (dots, per unit time) and, when given, the true rates ``[T, C]`` of that series (dashed). Returns the Figure."""
    import matplotlib.pyplot as plt

    from sde.models._base import seeded

    if not 0 <= series < len(batch):
        raise ValueError(f"series must be in [0, {len(batch)}), got {series}")
    one = batch[torch.tensor([series])]
    with seeded(seed, model.device):
        q = model.latents(one, num_samples=num_samples)[:, 0].cpu()  # [S, T, D]
    with seeded(seed + 1, model.device):
        rates = model.rates(one, num_samples=num_samples).mean(0)[0].cpu()  # [T, C]
    rows = one.mask[0].cpu()
    t = one.time[0, rows].cpu().numpy()
    q, rates = q[:, rows], rates[rows]
    k = min(int(neurons), rates.shape[-1])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    mean, sd = q.mean(0).numpy(), q.std(0).numpy()
    for d in range(mean.shape[-1]):
        line, = axes[0].plot(t, mean[:, d], lw=1)
        axes[0].fill_between(t, mean[:, d] - sd[:, d], mean[:, d] + sd[:, d], color=line.get_color(), alpha=0.2)
    axes[0].set_title(f"latent positions q ({mean.shape[-1]}), series {series}")
    emission = model.poisson_emission
    bin_size = float(emission.bin_size) if emission is not None else 1.0  # counts per bin -> per unit time
    counts = one.values[0, rows].cpu().numpy()
    truth = None
    if true_rates is not None:
        truth = true_rates.detach().cpu().numpy() if isinstance(true_rates, Tensor) else true_rates
    for c in range(k):
        line, = axes[1].plot(t, rates[:, c].numpy(), lw=1.2, label=f"neuron {c}")
        axes[1].plot(t, counts[:, c] / bin_size, ".", ms=2, color=line.get_color(), alpha=0.5)
        if truth is not None:
            axes[1].plot(t, truth[: len(t), c], "--", lw=1, color=line.get_color())
    axes[1].set_title("posterior mean rates" + (" (dashed: true)" if truth is not None else ""))
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("time")
    fig.tight_layout()
    return fig
