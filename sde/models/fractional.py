"""Latent SDE driven by fractional noise, trained by its ELBO, with a learned Hurst index.

:class:`FractionalLatentSDE` (Daems, Opper, Crevecoeur & Birdal, "Variational inference for SDEs
driven by fractional noise", ICLR 2024): the latent path follows ``dz = h(z) dt + g(z) dB_hat``
where ``B_hat`` is the Markov approximation of fractional Brownian motion (:mod:`sde.fractional`):
per latent coordinate ``d``, ``K`` OU processes ``dY_dk = -gamma_k Y_dk dt + dW_d`` on the paper's
geometric grid of speeds, all driven by one Brownian motion ``W_d``, and ``dB_hat_d = sum_k omega_k
dY_dk`` with the optimal weights ``omega(H)`` (closed form, differentiable in ``H``). The
augmented state ``(z, Y)`` is Markov and driven by ``D`` Brownian motions, so Girsanov's theorem
applies: the posterior adds a control ``u_d(t, z, Y, context)`` to every ``dY_dk``,

    dY_dk = (-gamma_k Y_dk + u_d) dt + dW_d,     dz_d = h_d dt + g_d sum_k omega_k dY_dk,

and the ELBO is ``E_q[sum_i log p(x_i | z(t_i))] - E_q[int 1/2 |u|^2 dt] - KL(q(z_0) || p(z_0))``. The
control shifts the mean of the state's increment along the diffusion's own columns, so with
Euler-Maruyama steps ``1/2 |u|^2 dt`` per step is exactly the KL between the posterior's and the
prior's (degenerate) Gaussian transitions, as in :class:`~sde.models.LatentSDE`.

Type I (default): ``Y(0)`` is drawn from its stationary law ``N(0, [1 / (gamma_i + gamma_j)])``
under prior and posterior alike (no KL), and ``B_hat`` approximates the standard fBM with stationary
increments that observed long-memory series are usually modelled by (and that :func:`sde.simulate.fbm`
draws); Type II (``fbm_type=FBMType.TYPE_II``) starts ``Y`` at 0 (Riemann-Liouville fBM). The weights
are optimal on ``[0, T]`` with ``T`` the longest training series in model time (set by
:meth:`FractionalLatentSDE.initialise`).

The Hurst index (:attr:`FractionalLatentSDE.hurst_`) is an empirical-Bayes estimate: ``initialise`` maximises
the exact marginal likelihood of the linear-Gaussian case of this very model (``dz = -theta z dt + sigma
dB_hat`` observed through Gaussian noise; its augmented state ``(z, Y)`` is Markov, so a Kalman filter gives
the likelihood exactly, :func:`sde.fractional.fit_markov_hurst`), and the ELBO then refines ``H`` within that
estimate's support interval (log-likelihood within ``hurst_support`` nats of its maximum), through
``H = low + (high - low) sigmoid(raw_hurst)``. Why not the ELBO alone, as the paper does (a sigmoid of a
raw parameter trained with the rest, in its public code): the ELBO equals ``log p(x) - KL(q || p(z | x))``,
and only its supremum over controls is the marginal likelihood (Girsanov, the augmented state's ELBO
above). The amortised control (an MLP of ``z``, ``Y``, the next observation's context and the time to it)
trained for tens of epochs is far from that supremum, and the gap depends on ``H`` (the exact posterior's
control needs the memory in ``Y`` and all future observations when ``H != 1/2``), so the ELBO's gradient
in ``H`` carries the gap's as well as the likelihood's: on noisy fOU paths the ELBO-only ``hurst_`` after 60
epochs fitted H = 0.8 as 0.41 - 0.47 and 0.5 as 0.31 - 0.36 (benchmarks/fractional_hurst.py, the ``elbo_only``
rows of its json). A
second, measured reason: the solve's OU grid (``K = 5`` speeds up to ``gamma_max`` = 20 per
unit model time, bounded by the Euler step) makes ``B_hat`` Brownian below a twentieth of the series, so
the roughness at the observation spacing is not in the prior and the learned observation noise absorbs it:
even the exact likelihood of this model under that grid puts fOU with H = 0.2 at H = 0.002 (noise 5% of
the scale) and fBM with H = 0.8 at 0.87, on 16 paths x 100 steps, where the likelihood's own grid gets
0.22 and 0.79. The likelihood therefore uses ``K = 9`` speeds up to 3 x the number of observations (the
exact transitions of a linear SDE need no step). ``learn_hurst=False`` keeps ``hurst`` fixed;
``init_hurst=False`` lets the ELBO alone learn ``H`` from ``hurst`` in (0, 1).

Everything else (encoder, ``q(z_0)``, emission, standardisation, clock, importance-weighted
``log_likelihood``, ``score``, ``predict``, ``interpolate``, ``forecast``) is
:class:`~sde.models.LatentSDE`'s: this class replaces only the posterior solve.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sde.fractional import FBMType, MarkovHurstFit, fit_markov_hurst, optimal_weights_torch, ou_rates
from sde.models._posterior import mlp, solve_fixed
from sde.models.latent import LatentSDE, _Observed, _Paths
from sde.solvers import Backprop, Method
from tpp.options import Interval, check_params

if TYPE_CHECKING:
    from sde.series import SeriesBatch

__all__ = ["ConstantDiffusion", "FractionalLatentSDE"]

HURST_SERIES, HURST_OBSERVATIONS = 256, 400
"""Series of the training sample, and observations of each (its first ones), that
:meth:`FractionalLatentSDE.initialise_hurst` reads: its Kalman filter is NumPy, one step per observation for
all series at once, evaluated a few hundred times by the search."""


class ConstantDiffusion(nn.Module):
    """``g_d = softplus(raw_d)``: one learned scale per latent coordinate (state-independent, so the Ito and
    Stratonovich readings of ``g dB_hat`` agree and the roughness of the paths is the noise's, not the
    diffusion's)."""

    def __init__(self, latent_size: int, init: float = 0.5) -> None:
        super().__init__()
        self.raw = nn.Parameter(torch.full((latent_size,), math.log(math.expm1(init))))

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return F.softplus(self.raw).expand_as(z)


class _FractionalPosterior(nn.Module):
    """The posterior SDE of the augmented state ``(z [D], Y [D*K], r [1])`` for torchsde (general noise, ``D``
    Brownian motions). ``r`` accumulates the path term: ``dr = 1/2 |u|^2 dt`` (its mean is the path KL), plus
    ``u . dW`` with ``weights`` (then ``r`` is the path's exact log density ratio under Euler steps)."""

    noise_type = "general"
    sde_type = "ito"

    def __init__(self, model: FractionalLatentSDE, omega: Tensor, context: Tensor, times: Tensor, last: Tensor,
                 weights: bool) -> None:
        super().__init__()
        self.model, self.omega, self.weights = model, omega, weights
        self.context, self.times, self.last = context, times, last  # [N, L, X], [N, L] (inf padded), [N]
        self.gamma = model.gamma.to(omega.dtype)
        self._cache: tuple[Tensor, Tensor, Tensor, Tensor, Tensor] | None = None

    def _parts(self, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``dY`` drift ``[N, D, K]``, ``u [N, D]``, ``h [N, D]``, ``g [N, D]`` at ``(t, y)`` (once per step)."""
        if self._cache is not None and self._cache[0] is y and bool(self._cache[1] == t):
            return self._cache[2:]  # type: ignore[return-value]
        D, K = self.model.latent_size, self.model.num_ou
        z, Y = y[:, :D], y[:, D:D + D * K].reshape(-1, D, K)
        N, L = self.times.shape
        t_col = t.reshape(1, 1).to(self.times.dtype).expand(N, 1).contiguous()
        active = t_col < self.last[:, None]  # after a series' last observation its posterior is the prior (u = 0)
        if bool(active.any()):
            idx = torch.searchsorted(self.times, t_col, right=True).clamp_max(L - 1)  # first observation after t
            ctx = self.context.gather(1, idx[..., None].expand(N, 1, self.context.shape[-1]))[:, 0]
            ahead = (self.times.gather(1, idx) - t_col).clamp(0, 1e6).to(z.dtype)
            u = self.model.posterior_drift(torch.cat([z, Y.reshape(N, D * K), ctx, ahead], -1))
            u = torch.where(active, u, torch.zeros_like(u))
        else:
            u = torch.zeros_like(z)
        dY = -self.gamma * Y + u[..., None]
        parts = (dY, u, self.model.prior_drift(t, z), self.model.diffusion(t, z))
        self._cache = (y, t, *parts)
        return parts

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        dY, u, h, g = self._parts(t, y)
        dz = h + g * (dY * self.omega).sum(-1)
        return torch.cat([dz, dY.flatten(1), 0.5 * (u**2).sum(-1, keepdim=True)], -1)

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        """``[N, D + D K + 1, D]``: ``diag(g sum omega)`` for ``z``, ones on each ``Y_dk``'s own ``W_d``, ``u`` or 0."""
        _, u, _, g = self._parts(t, y)
        D, K = self.model.latent_size, self.model.num_ou
        eye = torch.eye(D, dtype=y.dtype, device=y.device)
        rows_z = torch.diag_embed(g * self.omega.sum())
        rows_y = eye.repeat_interleave(K, 0).expand(y.shape[0], D * K, D)
        row_r = (u if self.weights else torch.zeros_like(u))[:, None, :]
        return torch.cat([rows_z, rows_y, row_r], 1)


class FractionalLatentSDE(LatentSDE):
    """Latent SDE of irregular, partly missing series driven by Markov-approximated fBM (Daems et al. 2024).

    ``num_ou`` OU processes per latent coordinate with speeds ``ou_rates(num_ou, gamma_max)`` in model time
    (``1/gamma_max .. gamma_max``; the Euler step must resolve the fastest: ``gamma_max * step_size < 0.5``,
    the paper's check), weights optimal on ``[0, T]``. Hurst index: started by :meth:`initialise` at the
    maximum of the Markov likelihood of the data and refined by the ELBO within its support interval
    (``init_hurst``, ``hurst_support`` nats; see the module docstring for why), or learned by the ELBO alone
    from ``hurst`` (``init_hurst=False``), or fixed at ``hurst`` (``learn_hurst=False``); :attr:`hurst_` the
    fitted one, :attr:`hurst_fit_` the likelihood fit. The prior drift is an MLP of ``z``
    and the diffusion a learned constant per coordinate (:class:`ConstantDiffusion`) unless modules are given.
    Posterior control ``u = MLP(z, Y, context, time to the next observation)``, starting at 0. The solve is
    Euler-Maruyama (general noise) through :func:`sde.solvers.solve`. Contract, encoder, emission and faces as
    :class:`~sde.models.LatentSDE`.
    """

    _constraints = {**LatentSDE._constraints, "num_ou": Interval(1, None, integer=True),
                    "hurst": Interval(0, 1, closed="neither"), "gamma_max": Interval(1, None, closed="neither"),
                    "hurst_support": Interval(0, None, closed="neither")}

    def __init__(
        self,
        num_channels: int,
        latent_size: int = 4,
        hidden_size: int = 32,
        context_size: int = 16,
        *,
        num_ou: int = 5,
        hurst: float = 0.5,
        learn_hurst: bool = True,
        gamma_max: float = 20.0,
        fbm_type: FBMType = FBMType.TYPE_I,
        init_hurst: bool = True,
        hurst_support: float = 0.5,
        num_samples: int = 1,
        step_size: float = 0.01,
        backprop: Backprop = Backprop.DIRECT,
        noise_init: float = 0.5,
        diffusion_init: float = 0.5,
        prior_drift: nn.Module | None = None,
        diffusion: nn.Module | None = None,
    ) -> None:
        check_params(self, num_ou=num_ou, hurst=hurst, gamma_max=gamma_max, step_size=step_size,
                     hurst_support=hurst_support)
        if gamma_max * step_size >= 0.5:
            raise ValueError(f"gamma_max * step_size = {gamma_max * step_size:.3g} must be < 0.5 for a stable Euler "
                             f"step of the fastest OU process: lower step_size or gamma_max")
        super().__init__(num_channels, latent_size, hidden_size, context_size, num_samples=num_samples,
                         step_size=step_size, method=Method.EULER, backprop=backprop, noise_init=noise_init,
                         prior_drift=prior_drift,
                         diffusion=diffusion if diffusion is not None else ConstantDiffusion(int(latent_size),
                                                                                             diffusion_init))
        # kept under the constructor's names so tpp.table.constructor_args can rebuild a model made directly
        self.hidden_size, self.context_size = int(hidden_size), int(context_size)
        self.num_ou, self.hurst, self.learn_hurst = int(num_ou), float(hurst), bool(learn_hurst)
        self.gamma_max, self.fbm_type, self.diffusion_init = float(gamma_max), FBMType(fbm_type), float(diffusion_init)
        self.init_hurst, self.hurst_support = bool(init_hurst), float(hurst_support)
        D, K = self.latent_size, self.num_ou
        # the control reads the whole Markov state (z and the OU processes), as the paper's u(t, x, y)
        self.posterior_drift = mlp(D * (K + 1) + int(context_size) + 1, int(hidden_size), D, zero_last=True)
        raw = torch.tensor(math.log(self.hurst / (1 - self.hurst)))
        if self.learn_hurst:
            self.raw_hurst = nn.Parameter(raw)
        else:
            self.register_buffer("raw_hurst", raw)
        self.register_buffer("gamma", torch.as_tensor(ou_rates(K, self.gamma_max), dtype=torch.float64))
        self.register_buffer("time_horizon", torch.tensor(1.0, dtype=torch.float64))
        # H = low + (high - low) sigmoid(raw_hurst): (0, 1) until initialise() narrows it to the data's support
        self.register_buffer("hurst_low", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("hurst_high", torch.tensor(1.0, dtype=torch.float64))
        self.hurst_fit_: MarkovHurstFit | None = None

    # ------------------------------------------------------------------ the fractional noise
    @property
    def hurst_(self) -> float:
        """The (fitted) Hurst index ``low + (high - low) sigmoid(raw_hurst)``: in (0, 1), and after
        :meth:`initialise` (``init_hurst``) in the support interval of the Markov likelihood's estimate."""
        with torch.no_grad():
            return float(self.hurst_tensor().to(torch.float64))

    def hurst_tensor(self) -> Tensor:
        """The Hurst index as a differentiable scalar."""
        low, high = self.hurst_low.to(self.raw_hurst.dtype), self.hurst_high.to(self.raw_hurst.dtype)
        return low + (high - low) * torch.sigmoid(self.raw_hurst)

    def omega(self) -> Tensor:
        """``[K]`` optimal weights at the current Hurst index (model dtype; differentiable in ``raw_hurst``)."""
        w = optimal_weights_torch(self.gamma.cpu().numpy(), self.hurst_tensor(), float(self.time_horizon),
                                  self.fbm_type)
        return w.to(dtype=self.dtype, device=self.device)

    @torch.no_grad()
    def initialise(self, train: SeriesBatch) -> FractionalLatentSDE:
        """:meth:`LatentSDE.initialise`, then ``T`` = the longest training series in model time (at least 1),
        then (``learn_hurst`` and ``init_hurst``) the Hurst index from the Markov likelihood of the data
        (:meth:`initialise_hurst`)."""
        super().initialise(train)
        obs = _Observed(self, train)
        longest = float(obs.last.max()) if obs.last.numel() else 1.0
        self.time_horizon.fill_(max(longest, 1.0))
        if self.learn_hurst and self.init_hurst:
            self.initialise_hurst(obs)
        return self

    @torch.no_grad()
    def initialise_hurst(self, obs: _Observed) -> MarkovHurstFit | None:
        """Start ``H`` at the maximum of the exact Markov likelihood of the standardised observations and bound
        it to that estimate's support interval (:func:`sde.fractional.fit_markov_hurst`, on the first
        ``HURST_OBSERVATIONS`` observations of the first ``HURST_SERIES`` series).

        Why (see the module docstring): the ELBO's maximiser in ``H`` is the marginal likelihood's only when
        the control reaches the exact posterior; an amortised control trained for tens of epochs does not, and
        the gap depends on ``H``. The linear-Gaussian case of this model (``dz = -theta z dt + sigma dB_hat``,
        ``x = z + noise``) has that marginal likelihood (the ELBO's supremum over controls) exactly, by a
        Kalman filter of the Markov state ``(z, Y)``. The ELBO then refines ``H`` only within ``[low, high]``
        (log-likelihood within ``hurst_support`` nats of its maximum). Too few observations: a warning, and
        ``H`` starts at ``hurst`` in (0, 1) as with ``init_hurst=False``."""
        series = []
        for b in range(min(int(obs.s.shape[0]), HURST_SERIES)):
            keep = obs.keep[b] & (torch.cumsum(obs.keep[b].long(), 0) <= HURST_OBSERVATIONS)
            times = obs.s64[b][keep].cpu().numpy()
            for c in range(self.num_channels):
                seen = obs.observed[b, :, c][keep].cpu().numpy()
                if seen.sum() >= 2:
                    series.append((times[seen], obs.x[b, :, c][keep].to(torch.float64).cpu().numpy()[seen], c))
        try:
            fit = fit_markov_hurst(series, time_horizon=float(self.time_horizon), fbm_type=self.fbm_type,
                                   support=self.hurst_support)
        except ValueError as error:
            warnings.warn(f"FractionalLatentSDE.initialise: no Markov-likelihood start for the Hurst index ({error}); "
                          f"it starts at hurst={self.hurst} and the ELBO alone learns it", stacklevel=3)
            return None
        low, high = fit.low, fit.high
        self.hurst_low.fill_(low)
        self.hurst_high.fill_(high)
        position = min(max((fit.hurst - low) / max(high - low, 1e-12), 1e-6), 1 - 1e-6)
        self.raw_hurst.fill_(math.log(position / (1 - position)))
        self.hurst_fit_ = fit
        return fit

    def _initial_ou(self, n: int) -> Tensor:
        """``[n, D * K]`` ``Y(0)``: stationary (Type I) or zero (Type II)."""
        D, K = self.latent_size, self.num_ou
        if self.fbm_type is FBMType.TYPE_II:
            return torch.zeros(n, D * K, dtype=self.dtype, device=self.device)
        g = self.gamma.cpu().numpy()
        vals, vecs = np.linalg.eigh(1.0 / (g[:, None] + g[None, :]))
        root = torch.as_tensor(vecs * np.sqrt(np.clip(vals, 0, None)), dtype=self.dtype, device=self.device)
        eps = torch.randn(n, D, K, dtype=self.dtype, device=self.device)
        return (eps @ root.T).reshape(n, D * K)

    # ------------------------------------------------------------------ the posterior
    def _posterior(self, obs: _Observed, extra: Tensor | None, num_samples: int, weights: bool = False,
                   logqp: bool = True) -> _Paths:
        """``num_samples`` posterior paths of ``z`` per series on the union of the observation times (and
        ``extra [B, T]``); the path term is ``int 1/2 |u|^2 dt`` (``logqp``), the sampled log ratio
        (``weights``) or zero (neither), as in :meth:`LatentSDE._posterior`."""
        D = self.latent_size
        context, z0, initial, grid, times, last, no_path = self._posterior_start(obs, extra, num_samples, weights,
                                                                                D)
        if grid.numel() == 1:
            return _Paths(grid, z0[:, None], no_path, initial)
        system = _FractionalPosterior(self, self.omega(), context.repeat(num_samples, 1, 1),
                                      times.repeat(num_samples, 1), last.repeat(num_samples), weights)
        y0 = torch.cat([z0, self._initial_ou(z0.shape[0]), no_path[:, None]], -1)
        ys = solve_fixed(system, y0, grid, step_size=self.step_size, method=Method.EULER, backprop=self.backprop).ys
        path = ys[:, -1, -1] if (logqp or weights) else no_path
        return _Paths(grid, ys[..., :D], path, initial)
