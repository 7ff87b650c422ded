"""Fractional Brownian motion: exact paths, and its Markov approximation by Ornstein-Uhlenbeck processes.

Exact simulation (:func:`fbm`, :func:`fou`). A stationary Gaussian sequence with autocovariance
``rho(0..n)`` is sampled exactly by circulant embedding (Davies & Harte 1987; Wood & Chan 1994): the
``M x M`` circulant matrix whose first row is ``rho(0), ..., rho(M/2), ..., rho(1)`` has eigenvalues
``lambda = FFT(row)``; if they are all ``>= 0`` it is a covariance, and ``FFT(sqrt(lambda / M) xi)``
with ``xi`` complex standard normal has real and imaginary parts that are two independent draws
of it, whose first ``n + 1`` entries have exactly the wanted covariance. :func:`fbm` embeds the
fractional Gaussian noise (increments of fBM, ``M = 2n``: the embedding is nonnegative for every
``H``) and sums it; :func:`fou` embeds the autocovariance of the stationary fractional
Ornstein-Uhlenbeck process ``dX = -theta (X - mean) dt + sigma dB_H`` (:func:`fou_autocovariance`,
in closed form with incomplete gamma functions), doubling ``M`` until the embedding is nonnegative.

fBM here is the standard one (Type I, Mandelbrot-van Ness, stationary increments):
``Cov(B(s), B(t)) = (s^2H + t^2H - |t - s|^2H) / 2``, what Davies-Harte (and PyPI ``fbm``) draw.
Type II is the Riemann-Liouville process ``B(t) = int_0^t (t - s)^(H - 1/2) dW_s / Gamma(H + 1/2)``.

Markov approximation (MA-fBM; Daems, Opper, Crevecoeur & Birdal, ICLR 2024, after Harms &
Stefanovits 2019). Both types are mixtures of OU processes over their speed ``gamma``; with ``K``
speeds ``gamma_k = r^(k - (K + 1)/2)`` (a geometric grid around 1, :func:`ou_rates`) driven by one
Brownian motion, ``dY_k = -gamma_k Y_k dt + dW``,

    Type I:  B_hat(t) = sum_k omega_k (Y_k(t) - Y_k(0)),   Y(0) ~ N(0, [1 / (gamma_i + gamma_j)])  (stationary)
    Type II: B_hat(t) = sum_k omega_k Y_k(t),              Y(0) = 0.

The weights minimise the mean squared error integrated over ``[0, T]``,
``E(omega) = int_0^T E[(B(t) - B_hat(t))^2] dt = c - 2 b' omega + omega' A omega``, so ``omega = A^-1 b``
(:func:`optimal_weights`; the paper's Prop. for Type II, and its Type I system with ``b`` rescaled to
the standard fBM above: the paper's Type I ``b`` is the cross term of ``int [(t-s)_+^(H-1/2) -
(-s)_+^(H-1/2)] dW / Gamma(H + 1/2)``, whose variance is ``t^2H / (Gamma(2H + 1) sin(pi H))``).
With ``a = H + 1/2``, ``g = gamma_i + gamma_j``, ``P``/``Q`` the regularised lower/upper incomplete gamma:

    Type II: A_ij = (T + (e^(-g T) - 1) / g) / g
             b_k  = T P(a, gamma_k T) / gamma_k^a - a P(a + 1, gamma_k T) / gamma_k^(a + 1)
             c    = T^(2H + 1) / (2H (2H + 1) Gamma(a)^2)
    Type I:  A_ij = (2T + (e^(-gamma_i T) - 1) / gamma_i + (e^(-gamma_j T) - 1) / gamma_j) / g
             b_k  = sqrt(Gamma(2H + 1) sin(pi H)) [2T / gamma_k^a - T^a / (gamma_k Gamma(a + 1))
                    + (e^(-gamma_k T) - e^(gamma_k T) Q(a, gamma_k T)) / gamma_k^(a + 1)]
             c    = T^(2H + 1) / (2H + 1)

(derived in this module's tests by quadrature as well). :class:`MarkovFBM` holds one approximation:
its covariance in closed form (:meth:`MarkovFBM.covariance`), exact samples on any grid
(:meth:`MarkovFBM.sample`: the ``K``-dimensional OU system has Gaussian transitions), and
:func:`optimal_weights_torch` makes ``omega(H)`` differentiable in ``H`` for a learned Hurst index.

Estimating ``H`` from observed paths (:func:`estimate_hurst`): maximum likelihood of the MA-fBM
Gaussian process (or of the MA-fOU, its Langevin equation driven by ``B_hat``) with the exact
covariance of the approximation at the observation times. The paper learns ``H`` by maximising the
ELBO of the MA-fBM latent SDE; for a linear prior the posterior is Gaussian, and the ELBO maximised over
the control equals this marginal likelihood, which is computed here exactly instead of by stochastic
gradients. :func:`fit_markov_hurst` does the same for irregular, partly missing, noisy series of any
length: the MA-fOU state ``(x, Y_1..Y_K)`` is linear-Gaussian and Markov, so a Kalman filter with its
exact transitions gives the likelihood in O(n K^2) per series; :class:`sde.models.FractionalLatentSDE`
starts its Hurst index there (see that module for why the ELBO alone is biased).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.special as sp
import torch
from torch import Tensor

from tpp.model import Seed
from tpp.process import as_numpy_rng

if TYPE_CHECKING:  # the series batch is only needed by paths_to_series(); imported there
    from sde.series import SeriesBatch

__all__ = [
    "FBMType",
    "HurstFit",
    "MarkovHurstFit",
    "MarkovFBM",
    "approximation_cost",
    "circulant_sample",
    "estimate_hurst",
    "fbm",
    "fbm_covariance",
    "fgn_autocovariance",
    "fit_markov_hurst",
    "fou",
    "fou_autocovariance",
    "optimal_weights",
    "optimal_weights_torch",
    "ou_rates",
    "paths_to_series",
]


class FBMType(enum.IntEnum):
    """Which fractional Brownian motion the Markov approximation targets."""

    TYPE_I = 1  # Mandelbrot-van Ness: stationary increments, Var B(t) = t^2H (what Davies-Harte draws)
    TYPE_II = 2  # Riemann-Liouville: int_0^t (t - s)^(H - 1/2) dW / Gamma(H + 1/2), no stationary increments


def _check_hurst(hurst: float) -> float:
    if not (isinstance(hurst, (int, float, np.floating)) and 0.0 < float(hurst) < 1.0):
        raise ValueError(f"hurst must be a number in (0, 1), got {hurst!r}")
    return float(hurst)


def _check_steps(n_paths: int, n_steps: int, t_end: float) -> None:
    if int(n_paths) != n_paths or n_paths < 1:
        raise ValueError(f"n_paths must be an integer >= 1, got {n_paths!r}")
    if int(n_steps) != n_steps or n_steps < 1:
        raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
    if not (math.isfinite(t_end) and t_end > 0):
        raise ValueError(f"t_end must be finite and > 0, got {t_end!r}")


# ---------------------------------------------------------------------------------------------- exact paths
def fgn_autocovariance(hurst: float, n: int) -> np.ndarray:
    """``[n + 1]`` autocovariance of unit-step fractional Gaussian noise at lags ``0..n``:
    ``(|k + 1|^2H - 2|k|^2H + |k - 1|^2H) / 2``."""
    k = np.arange(n + 1, dtype=np.float64)
    h2 = 2.0 * hurst
    return 0.5 * (np.abs(k + 1) ** h2 - 2 * k**h2 + np.abs(k - 1) ** h2)


def circulant_sample(autocov: np.ndarray, n_paths: int, rng: np.random.Generator, *, max_doublings: int = 6,
                     autocov_fn: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """``[n_paths, n + 1]`` exact draws of a stationary Gaussian sequence with autocovariance ``autocov [n + 1]``.

    Circulant embedding of size ``M = 2n`` (doubled up to ``max_doublings`` times, with the lags
    extended by ``autocov_fn(lags)``, while an eigenvalue is negative beyond rounding); raises a
    ``ValueError`` if no embedding is nonnegative. Each complex draw gives two independent paths.
    """
    autocov = np.asarray(autocov, dtype=np.float64)
    n = autocov.shape[0] - 1
    if n < 1:
        return np.sqrt(max(autocov[0], 0.0)) * rng.standard_normal((n_paths, 1))
    half = n
    for _ in range(max_doublings + 1):
        if half > n:
            if autocov_fn is None:
                break
            lags = np.asarray(autocov_fn(np.arange(half + 1, dtype=np.float64)), dtype=np.float64)
        else:
            lags = autocov
        row = np.concatenate([lags, lags[-2:0:-1]])  # rho(0..half), rho(half-1..1): M = 2 half
        eig = np.fft.fft(row).real
        if eig.min() >= -1e-10 * max(eig.max(), 1e-300):
            break
        half *= 2
    else:
        raise ValueError(f"the circulant embedding has a negative eigenvalue ({eig.min():.3g}) even at size {2 * half}")
    if eig.min() < -1e-10 * max(eig.max(), 1e-300):
        raise ValueError(f"the circulant embedding has a negative eigenvalue ({eig.min():.3g}); give autocov_fn to "
                         "extend the lags")
    M = eig.shape[0]
    scale = np.sqrt(np.clip(eig, 0.0, None) / M)
    draws = (n_paths + 1) // 2
    xi = rng.standard_normal((draws, M)) + 1j * rng.standard_normal((draws, M))
    y = np.fft.fft(scale * xi, axis=1)[:, : n + 1]
    return np.concatenate([y.real, y.imag], 0)[:n_paths]


def fbm(n_paths: int, n_steps: int, hurst: float, t_end: float = 1.0, *, generator: Seed = None) -> Tensor:
    """``[n_paths, n_steps + 1]`` exact fractional Brownian motion (standard, Type I) at ``t_k = k t_end / n_steps``.

    Davies-Harte: the increments are fractional Gaussian noise (circulant embedding, exact for every
    ``H`` in (0, 1)), scaled by ``(t_end / n_steps)^H`` (self-similarity) and summed from ``B(0) = 0``.
    float64.
    """
    hurst = _check_hurst(hurst)
    _check_steps(n_paths, n_steps, t_end)
    rng = as_numpy_rng(generator)
    noise = circulant_sample(fgn_autocovariance(hurst, n_steps - 1), int(n_paths), rng)
    paths = np.concatenate([np.zeros((int(n_paths), 1)), np.cumsum(noise, 1)], 1) * (t_end / n_steps) ** hurst
    return torch.from_numpy(paths)


_LAGUERRE_40 = np.polynomial.laguerre.laggauss(40)  # nodes and weights (computed once: _exp_q is in every likelihood)


def _exp_q(a: float, x: np.ndarray) -> np.ndarray:
    """``e^x Q(a, x)`` (``Q`` the regularised upper incomplete gamma), stable for large ``x``.

    Direct below 50; above, ``x^(a-1) / Gamma(a) int_0^inf (1 + v/x)^(a-1) e^-v dv`` by 40-point
    Gauss-Laguerre (a smooth integrand there)."""
    x = np.asarray(x, dtype=np.float64)
    small = x < 50.0
    out = np.empty_like(x)
    xs = x[small]
    out[small] = np.exp(xs) * sp.gammaincc(a, xs)
    if (~small).any():
        nodes, weights = _LAGUERRE_40
        xl = x[~small][..., None]
        out[~small] = xl[..., 0] ** (a - 1) / sp.gamma(a) * ((1 + nodes / xl) ** (a - 1) * weights).sum(-1)
    return out


def fou_autocovariance(lags: np.ndarray, hurst: float, theta: float = 1.0, sigma: float = 1.0) -> np.ndarray:
    """Autocovariance of the stationary fractional OU process ``dX = -theta X dt + sigma dB_H`` at ``lags``.

    ``X(t) = sigma theta int_0^inf e^(-theta w) (B(t) - B(t - w)) dw``, so with ``E ~ Exp(theta)``
    ``rho(tau) = sigma^2 / 4 [E (tau + E)^2H + E |tau - E|^2H - 2 tau^2H]``, which is, with ``a = 2H + 1``
    and ``x = theta tau``, ``sigma^2 theta^-2H / 4 [Gamma(a) (e^x Q(a, x) + e^-x) + x^a / a 1F1(1; a + 1; -x)
    - 2 x^2H]``. ``rho(0) = sigma^2 Gamma(2H + 1) / (2 theta^2H)``; ``H = 1/2`` gives
    ``sigma^2 e^(-theta tau) / (2 theta)``.
    """
    hurst = _check_hurst(hurst)
    if not (theta > 0 and sigma > 0):
        raise ValueError(f"theta and sigma must be > 0, got theta={theta!r}, sigma={sigma!r}")
    x = theta * np.abs(np.asarray(lags, dtype=np.float64))
    a = 2 * hurst + 1
    bracket = sp.gamma(a) * (_exp_q(a, x) + np.exp(-x)) + x**a / a * sp.hyp1f1(1.0, a + 1.0, -x) - 2 * x ** (2 * hurst)
    return sigma**2 * theta ** (-2 * hurst) / 4 * bracket


def fou(n_paths: int, n_steps: int, hurst: float, theta: float = 1.0, sigma: float = 1.0, mean: float = 0.0,
        t_end: float = 1.0, *, generator: Seed = None) -> Tensor:
    """``[n_paths, n_steps + 1]`` exact stationary fractional OU paths ``dX = -theta (X - mean) dt + sigma dB_H``
    at ``t_k = k t_end / n_steps``.

    Circulant embedding of :func:`fou_autocovariance` (exact; the embedding is doubled until it is
    nonnegative). The process starts in its stationary law ``N(mean, sigma^2 Gamma(2H + 1) / (2 theta^2H))``.
    """
    hurst = _check_hurst(hurst)
    _check_steps(n_paths, n_steps, t_end)
    rng = as_numpy_rng(generator)
    dt = t_end / n_steps

    def autocov(k: np.ndarray) -> np.ndarray:
        return fou_autocovariance(k * dt, hurst, theta, sigma)

    draws = circulant_sample(autocov(np.arange(n_steps + 1, dtype=np.float64)), int(n_paths), rng, autocov_fn=autocov)
    return torch.from_numpy(draws + mean)


def fbm_covariance(s: np.ndarray, t: np.ndarray, hurst: float) -> np.ndarray:
    """``Cov(B(s), B(t)) = (|s|^2H + |t|^2H - |t - s|^2H) / 2`` of standard fBM (broadcasts)."""
    s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
    h2 = 2 * hurst
    return 0.5 * (np.abs(s) ** h2 + np.abs(t) ** h2 - np.abs(t - s) ** h2)


def paths_to_series(paths: Tensor, t_end: float = 1.0, *, noise_std: float = 0.0, generator: Seed = None,
                    channel_names: tuple[str, ...] = ()) -> SeriesBatch:
    """A :class:`~sde.series.SeriesBatch` of one-channel paths ``[P, n + 1]`` (or ``[P, n + 1, C]``) on the regular
    grid of :func:`fbm` / :func:`fou`, observed with Gaussian noise of std ``noise_std`` (0: exactly)."""
    from sde.series import SeriesBatch

    values = torch.as_tensor(paths, dtype=torch.float64)
    values = values[..., None] if values.dim() == 2 else values
    if values.dim() != 3:
        raise ValueError(f"paths must be [P, n + 1] or [P, n + 1, C], got {tuple(values.shape)}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
    if noise_std > 0:
        rng = as_numpy_rng(generator)
        values = values + noise_std * torch.from_numpy(rng.standard_normal(tuple(values.shape)))
    P, n = values.shape[:2]
    time = torch.linspace(0.0, float(t_end), n, dtype=torch.float64).expand(P, n).clone()
    return SeriesBatch(time=time, values=values, mask=torch.ones(P, n, dtype=torch.bool),
                       channel_names=tuple(channel_names))


# ---------------------------------------------------------------------------------------- Markov approximation
def ou_rates(num_ou: int, gamma_max: float | None = 20.0, *, r: float | None = None) -> np.ndarray:
    """``[K]`` geometric OU speeds ``gamma_k = r^(k - (K + 1)/2)``, ``k = 1..K`` (the paper's grid, centred on 1).

    Give ``r`` or ``gamma_max`` (then ``r = gamma_max^(2 / (K - 1))``, so the fastest speed is ``gamma_max``,
    the slowest ``1 / gamma_max``: the paper's ``gamma_by_gamma_max``). ``K = 1``: ``[1]``.
    """
    if int(num_ou) != num_ou or num_ou < 1:
        raise ValueError(f"num_ou must be an integer >= 1, got {num_ou!r}")
    K = int(num_ou)
    if r is None:
        if gamma_max is None or not gamma_max > 1:
            raise ValueError(f"gamma_max must be > 1, got {gamma_max!r}")
        r = gamma_max ** (2.0 / (K - 1)) if K > 1 else 1.0
    elif not r > 1:
        raise ValueError(f"r must be > 1, got {r!r}")
    k = np.arange(1, K + 1, dtype=np.float64)
    return float(r) ** (k - (K + 1) / 2)


def _system(gamma: np.ndarray, hurst: float, T: float, fbm_type: FBMType) -> tuple[np.ndarray, np.ndarray, float]:
    """``A [K, K]``, ``b [K]``, ``c`` of ``E(omega) = c - 2 b' omega + omega' A omega`` (see the module docstring)."""
    g = np.asarray(gamma, np.float64)
    gi, gj = g[None, :], g[:, None]
    s = gi + gj
    a = hurst + 0.5
    if FBMType(fbm_type) is FBMType.TYPE_II:
        A = (T + np.expm1(-s * T) / s) / s
        b = T * sp.gammainc(a, g * T) / g**a - a * sp.gammainc(a + 1, g * T) / g ** (a + 1)
        c = T ** (2 * hurst + 1) / (2 * hurst) / (2 * hurst + 1) / sp.gamma(a) ** 2
    else:
        A = (2 * T + np.expm1(-gi * T) / gi + np.expm1(-gj * T) / gj) / s
        b = 2 * T / g**a - T**a / (g * sp.gamma(a + 1)) + (np.exp(-g * T) - _exp_q(a, g * T)) / g ** (a + 1)
        b = b * math.sqrt(sp.gamma(2 * hurst + 1) * math.sin(math.pi * hurst))
        c = T ** (2 * hurst + 1) / (2 * hurst + 1)
    return A, b, c


def optimal_weights(gamma: np.ndarray, hurst: float, time_horizon: float = 1.0,
                    fbm_type: FBMType = FBMType.TYPE_I) -> np.ndarray:
    """``[K]`` weights ``omega = A^-1 b`` minimising ``int_0^T E[(B(t) - B_hat(t))^2] dt`` (closed form; float64).

    ``A`` is a Gram matrix (positive definite for distinct speeds); solved by Cholesky with a
    least-squares fallback when a wide grid makes it numerically singular."""
    hurst = _check_hurst(hurst)
    if not time_horizon > 0:
        raise ValueError(f"time_horizon must be > 0, got {time_horizon!r}")
    A, b, _ = _system(gamma, hurst, float(time_horizon), fbm_type)
    try:
        return scipy.linalg.solve(A, b, assume_a="pos")
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
        return np.linalg.lstsq(A, b, rcond=None)[0]


def approximation_cost(gamma: np.ndarray, hurst: float, time_horizon: float = 1.0,
                       fbm_type: FBMType = FBMType.TYPE_I, omega: np.ndarray | None = None) -> float:
    """``(1/T) int_0^T E[(B(t) - B_hat(t))^2] dt`` of the weights ``omega`` (default: the optimal ones)."""
    A, b, c = _system(gamma, _check_hurst(hurst), float(time_horizon), fbm_type)
    w = optimal_weights(gamma, hurst, time_horizon, fbm_type) if omega is None else np.asarray(omega, np.float64)
    return float((c - 2 * b @ w + w @ A @ w) / time_horizon)


class _Weights(torch.autograd.Function):
    """``omega(H)`` as a differentiable function of a scalar ``H`` tensor: the closed form forward, and
    ``d omega / d H`` by a central difference of the closed form (torch's incomplete gamma has no
    derivative in its first argument)."""

    @staticmethod
    def forward(ctx, hurst: Tensor, gamma: np.ndarray, time_horizon: float,  # type: ignore[override]
                fbm_type: int) -> Tensor:
        h = float(hurst)
        ctx.args = (h, gamma, time_horizon, fbm_type)
        return torch.as_tensor(optimal_weights(gamma, h, time_horizon, FBMType(fbm_type)), dtype=torch.float64,
                               device=hurst.device)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        h, gamma, T, kind = ctx.args
        step = 1e-6 * min(1.0, h / 0.01, (1 - h) / 0.01)
        up = optimal_weights(gamma, h + step, T, FBMType(kind))
        down = optimal_weights(gamma, h - step, T, FBMType(kind))
        d = torch.as_tensor((up - down) / (2 * step), dtype=grad.dtype, device=grad.device)
        return (grad * d).sum().reshape(()), None, None, None


def optimal_weights_torch(gamma: np.ndarray, hurst: Tensor, time_horizon: float = 1.0,
                          fbm_type: FBMType = FBMType.TYPE_I) -> Tensor:
    """``[K]`` float64 :func:`optimal_weights` of a scalar tensor ``hurst``, differentiable in ``hurst``."""
    return _Weights.apply(hurst.reshape(()).to(torch.float64), np.asarray(gamma, np.float64), float(time_horizon),
                          int(FBMType(fbm_type)))


@dataclass(frozen=True)
class MarkovFBM:
    """One Markov approximation ``B_hat = sum_k omega_k (Y_k - Y_k(0) [Type I])`` of fBM with Hurst index ``hurst``.

    Build it with :meth:`optimal` (the paper's weights); ``gamma`` and ``omega`` are ``[K]`` float64.
    """

    gamma: np.ndarray
    omega: np.ndarray
    hurst: float
    fbm_type: FBMType = FBMType.TYPE_I

    @classmethod
    def optimal(cls, hurst: float, num_ou: int = 5, *, gamma_max: float = 20.0, r: float | None = None,
                time_horizon: float = 1.0, fbm_type: FBMType = FBMType.TYPE_I) -> MarkovFBM:
        """The approximation with ``K = num_ou`` speeds (:func:`ou_rates`) and the optimal weights on ``[0, T]``."""
        gamma = ou_rates(num_ou, gamma_max, r=r)
        return cls(gamma, optimal_weights(gamma, hurst, time_horizon, fbm_type), _check_hurst(hurst), FBMType(fbm_type))

    @property
    def initial_covariance(self) -> np.ndarray:
        """``[K, K]`` covariance of ``Y(0)``: the stationary ``1 / (gamma_i + gamma_j)`` (Type I), zero (Type II)."""
        if self.fbm_type is FBMType.TYPE_II:
            return np.zeros((len(self.gamma),) * 2)
        return 1.0 / (self.gamma[:, None] + self.gamma[None, :])

    def covariance(self, s: np.ndarray, t: np.ndarray) -> np.ndarray:
        """``Cov(B_hat(s), B_hat(t))`` in closed form (broadcasts ``s`` against ``t``; times >= 0).

        For ``u = min(s, t)``, ``v = max(s, t)``, ``g = gamma_i + gamma_j`` and the ``Y`` of the later time
        ``j``: Type II ``sum w_i w_j e^(-gamma_j (v - u)) (1 - e^(-g u)) / g``; Type I (stationary ``Y``,
        increments from 0) ``sum w_i w_j (1 + e^(-gamma_j (v - u)) - e^(-gamma_j v) - e^(-gamma_i u)) / g``.
        """
        s, t = np.broadcast_arrays(np.asarray(s, np.float64), np.asarray(t, np.float64))
        u, v = np.minimum(s, t)[..., None, None], np.maximum(s, t)[..., None, None]
        gi, gj = self.gamma[:, None], self.gamma[None, :]
        g = gi + gj
        if self.fbm_type is FBMType.TYPE_II:
            terms = np.exp(-gj * (v - u)) * -np.expm1(-g * u) / g
        else:
            terms = (1 + np.exp(-gj * (v - u)) - np.exp(-gj * v) - np.exp(-gi * u)) / g
        return np.einsum("...ij,i,j->...", terms, self.omega, self.omega)

    def variance(self, t: np.ndarray) -> np.ndarray:
        """``Var B_hat(t)`` (closed form)."""
        return self.covariance(t, t)

    def target_covariance(self, s: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Covariance of the fBM being approximated: standard fBM (Type I) or Riemann-Liouville (Type II,
        ``int_0^min (s-x)^(H-1/2) (t-x)^(H-1/2) dx / Gamma(H+1/2)^2``, in closed form on the diagonal only)."""
        if self.fbm_type is FBMType.TYPE_I:
            return fbm_covariance(s, t, self.hurst)
        s, t = np.broadcast_arrays(np.asarray(s, np.float64), np.asarray(t, np.float64))
        if not np.array_equal(s, t):
            raise ValueError("the Type II target covariance is given on the diagonal (s == t) only")
        return s ** (2 * self.hurst) / (2 * self.hurst * sp.gamma(self.hurst + 0.5) ** 2)

    def sample(self, n_paths: int, times: np.ndarray, *, generator: Seed = None) -> Tensor:
        """``[n_paths, T]`` exact samples of ``B_hat`` at sorted ``times >= 0`` (float64).

        The OU vector ``Y`` moves between times by its exact Gaussian transition,
        ``Y' = e^(-gamma dt) Y + N(0, [(1 - e^(-(gamma_i + gamma_j) dt)) / (gamma_i + gamma_j)])``."""
        times = np.asarray(times, np.float64)
        if times.ndim != 1 or np.any(np.diff(times) < 0) or (times.size and times[0] < 0):
            raise ValueError("times must be a sorted 1-D array of times >= 0")
        rng = as_numpy_rng(generator)
        g = self.gamma[:, None] + self.gamma[None, :]
        y0 = _gaussian(rng, self.initial_covariance, n_paths)
        y, now, out = y0.copy(), 0.0, np.empty((n_paths, times.size))
        for i, t in enumerate(times):
            dt = t - now
            if dt > 0:
                y = np.exp(-self.gamma * dt) * y + _gaussian(rng, -np.expm1(-g * dt) / g, n_paths)
                now = t
            out[:, i] = (y - y0) @ self.omega if self.fbm_type is FBMType.TYPE_I else y @ self.omega
        return torch.from_numpy(out)


def _gaussian(rng: np.random.Generator, cov: np.ndarray, n: int) -> np.ndarray:
    """``[n, K]`` draws of ``N(0, cov)`` for a PSD ``cov`` (eigendecomposition: ``cov`` may be singular)."""
    vals, vecs = np.linalg.eigh(cov)
    root = vecs * np.sqrt(np.clip(vals, 0.0, None))
    return rng.standard_normal((n, cov.shape[0])) @ root.T


# ----------------------------------------------------------------------------------------- Hurst estimation
@dataclass(frozen=True)
class HurstFit:
    """Result of :func:`estimate_hurst`: the Hurst index, scale ``sigma``, mean reversion ``theta`` (fOU;
    ``None`` for fBM), mean (fOU) and the maximised Gaussian log-likelihood (nats, all paths)."""

    hurst: float
    sigma: float
    theta: float | None
    mean: float | None
    log_likelihood: float


def _ma_fou_autocovariance(lags: np.ndarray, ma: MarkovFBM, theta: float) -> np.ndarray:
    """Stationary autocovariance (unit ``sigma``) of ``dX = -theta X dt + dB_hat`` at ``lags``: the linear SDE of
    ``s = (X, Y)`` has ``F = [[-theta, -(omega gamma)'], [0, -diag(gamma)]]``, ``G = (sum omega, 1, .., 1)``,
    stationary covariance ``P`` from ``F P + P F' + G G' = 0`` and ``Cov(s(t + tau), s(t)) = e^(F tau) P``."""
    K = len(ma.gamma)
    F = np.zeros((K + 1, K + 1))
    F[0, 0] = -theta
    F[0, 1:] = -ma.omega * ma.gamma
    F[1:, 1:] = -np.diag(ma.gamma)
    G = np.concatenate([[ma.omega.sum()], np.ones(K)])[:, None]
    P = scipy.linalg.solve_continuous_lyapunov(F, -G @ G.T)
    P = 0.5 * (P + P.T)
    lags = np.abs(np.asarray(lags, np.float64))
    step = lags[1] - lags[0] if lags.ndim == 1 and lags.size > 1 else 0.0
    if step > 0 and lags[0] == 0 and np.allclose(np.diff(lags), step, rtol=1e-9, atol=0):
        # a regular grid of lags: e^(F k step) P by repeated products (one matrix exponential)
        phi, state = scipy.linalg.expm(F * step), P
        out = np.empty(lags.shape)
        for k in range(lags.size):
            out[k] = state[0, 0]
            state = phi @ state
        return out
    out = np.empty(lags.shape)
    for i, tau in np.ndenumerate(lags):
        out[i] = (scipy.linalg.expm(F * tau) @ P)[0, 0]
    return out


def _profile_gaussian(x: np.ndarray, cov: np.ndarray) -> tuple[float, float]:
    """Max over ``sigma^2`` of the log density of rows ``x [P, n]`` under ``N(0, sigma^2 cov)``: (loglik, sigma)."""
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        return -np.inf, float("nan")
    P, n = x.shape
    z = scipy.linalg.solve_triangular(chol, x.T, lower=True)
    quad = float((z**2).sum())
    sigma2 = quad / (P * n)
    logdet = 2 * np.log(np.diag(chol)).sum()
    return -0.5 * P * (n * math.log(2 * math.pi * sigma2) + logdet + n), math.sqrt(sigma2)


def estimate_hurst(paths: Tensor | np.ndarray, times: Tensor | np.ndarray, *, process: str = "fbm",
                   approximation: str = "markov", num_ou: int = 9, gamma_max: float | None = None,
                   fbm_type: FBMType = FBMType.TYPE_I, theta: float | None = None,
                   mean: float | None = None) -> HurstFit:
    """Maximum-likelihood Hurst index of observed paths ``[P, n]`` at shared ``times [n]`` (float64 Gaussian MLE).

    ``process="fbm"``: ``x = sigma B(t)`` with ``B(0) = 0`` (values at ``t = 0`` are dropped: they carry no
    information). ``process="fou"``: stationary ``dX = -theta (X - mean) dt + sigma dB`` on a regular grid;
    ``theta`` and ``mean`` are known when given (the paper's fOU experiments fix the drift ``-theta x``),
    else fitted (``theta`` by likelihood, ``mean`` as the sample mean). ``H`` and ``theta`` lie on a ridge
    of the likelihood of short paths (a rougher path and a faster reversion look alike), so fitting both
    needs more data than fitting ``H`` alone (``benchmarks/fractional_hurst.py`` shows both).
    ``approximation="markov"`` (default): the covariance of the MA-fBM with ``num_ou`` OU processes and
    the paper's weights on ``[0, T]`` (``T`` the observed span), its speeds spanning
    ``[1/gamma_max, gamma_max]`` in units of ``1/T`` (default ``gamma_max`` = 3 x the number of
    observations: the fastest OU forgets within a third of a gap, so the roughness at the smallest observed
    scale is represented; with 9 speeds the MA-fBM's H is then within 0.01 of the exact-fBM likelihood's on
    100-step paths, where K = 5 with ``gamma_max`` = n is 0.05 low at H = 0.2, see
    ``benchmarks/fractional_hurst.py``); ``"exact"``: the exact fBM / fOU covariance (the reference).
    ``sigma`` is profiled out in closed form; ``H`` (and ``theta``) by bounded scalar search / Nelder-Mead.
    """
    x = np.asarray(paths.detach().cpu().numpy() if isinstance(paths, Tensor) else paths, np.float64)
    t = np.asarray(times.detach().cpu().numpy() if isinstance(times, Tensor) else times, np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or t.ndim != 1 or x.shape[1] != t.shape[0]:
        raise ValueError(f"paths must be [P, n] with times [n], got {x.shape} and {t.shape}")
    if not np.all(np.isfinite(x)) or np.any(np.diff(t) <= 0):
        raise ValueError("paths must be finite and times strictly increasing")
    if process not in ("fbm", "fou") or approximation not in ("markov", "exact"):
        raise ValueError(f"process must be 'fbm' or 'fou' and approximation 'markov' or 'exact', got {process!r}, "
                         f"{approximation!r}")
    span = float(t[-1] - t[0]) if process == "fou" else float(t[-1])
    n_obs = t.shape[0]
    gmax = float(gamma_max) if gamma_max is not None else 3.0 * max(n_obs, 4)

    def markov(h: float) -> MarkovFBM:
        # speeds in units of 1 / span, weights on [0, 1]: the same as speeds / span on [0, span]
        return MarkovFBM.optimal(h, num_ou, gamma_max=gmax, time_horizon=1.0, fbm_type=fbm_type)

    if process == "fbm":
        keep = t > 0
        x, ts = x[:, keep], t[keep] / span

        def loglik(h: float) -> tuple[float, float]:
            if approximation == "exact":
                cov = fbm_covariance(ts[:, None], ts[None, :], h)
            else:
                cov = markov(h).covariance(ts[:, None], ts[None, :])
            ll, s = _profile_gaussian(x, cov)
            return ll, s / span**h  # back to the data's time unit: B(c t) = c^H B(t)

        res = scipy.optimize.minimize_scalar(lambda h: -loglik(h)[0], bounds=(0.01, 0.99), method="bounded",
                                             options={"xatol": 1e-4})
        ll, sigma = loglik(float(res.x))
        return HurstFit(float(res.x), float(sigma), None, None, float(ll))

    dt = np.diff(t)
    if not np.allclose(dt, dt[0], rtol=1e-6):
        raise ValueError("process='fou' needs a regular time grid")
    centre = float(x.mean()) if mean is None else float(mean)
    xc = x - centre
    lags = (np.arange(n_obs) * dt[0]) / span
    if theta is not None and not (math.isfinite(theta) and theta > 0):
        raise ValueError(f"theta must be > 0 (or None to fit it), got {theta!r}")

    def loglik_fou(h: float, theta_unit: float) -> tuple[float, float]:
        if approximation == "exact":
            acf = fou_autocovariance(lags, h, theta_unit, 1.0)
        else:
            acf = _ma_fou_autocovariance(lags, markov(h), theta_unit)
        return _profile_gaussian(xc, scipy.linalg.toeplitz(acf))

    if theta is not None:  # known drift: a bounded scalar search over H (theta in units of 1 / span)
        res = scipy.optimize.minimize_scalar(lambda h: -loglik_fou(h, theta * span)[0], bounds=(0.01, 0.99),
                                             method="bounded", options={"xatol": 1e-4})
        h, theta_unit = float(res.x), theta * span
    else:
        best = None
        for h0 in (0.3, 0.5, 0.7):  # a few starts: the surface has a ridge in (H, theta)
            res = scipy.optimize.minimize(
                lambda p: -loglik_fou(1 / (1 + math.exp(-p[0])), math.exp(p[1]))[0],
                np.array([math.log(h0 / (1 - h0)), 0.0]), method="Nelder-Mead",
                options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 400})
            if best is None or res.fun < best.fun:
                best = res
        h, theta_unit = 1 / (1 + math.exp(-best.x[0])), math.exp(best.x[1])
    ll, sigma = loglik_fou(h, theta_unit)
    # back to the data's time unit: X(span t') solves the equation with theta span and sigma span^H
    return HurstFit(float(h), float(sigma * span ** (-h)), float(theta_unit / span), centre, float(ll))



# ------------------------------------------------------------------ Markov likelihood of irregular series
@dataclass(frozen=True)
class MarkovHurstFit:
    """Result of :func:`fit_markov_hurst`: the Hurst index and its support interval ``[low, high]`` (where the
    log-likelihood, the other parameters held at their maximum, is within ``support`` nats of its maximum),
    the mean reversion ``theta``, the scale ``sigma`` per channel and the noise-to-scale ratio (model units;
    ``noise_min`` when the noise-free model was kept), the start law chosen (``"stationary"`` or
    ``"started"``) and the maximised log-likelihood (nats)."""

    hurst: float
    low: float
    high: float
    theta: float
    sigma: tuple[float, ...]
    noise_ratio: float
    start: str
    log_likelihood: float


class _MarkovSeries:
    """Observed series padded to one array, for the Kalman filter of :func:`fit_markov_hurst`: ``times [B, L]``
    (from each series' first observation), ``values [B, L]``, ``valid [B, L]`` (a prefix of each row) and the
    channel of each row (``sigma`` is per channel). The filter runs over all rows at once; when every row
    has the same times, its covariance recursion (which does not depend on the values) is done once."""

    def __init__(self, series: list[tuple[np.ndarray, np.ndarray, int]]) -> None:
        B, L = len(series), max(t.shape[0] for t, _, _ in series)
        self.times, self.values = np.zeros((B, L)), np.zeros((B, L))
        self.valid = np.zeros((B, L), dtype=bool)
        for b, (t, x, _) in enumerate(series):
            self.times[b, : t.shape[0]], self.values[b, : t.shape[0]] = t - t[0], x
            self.valid[b, : t.shape[0]] = True
        self.times = np.where(self.valid, self.times, np.max(self.times, 1, keepdims=True))  # padding: dt = 0
        self.channels = np.asarray([c for _, _, c in series])
        self.num_channels = int(self.channels.max()) + 1
        self.shared = bool(np.all(self.times == self.times[:1]) and np.all(self.valid == self.valid[:1]))
        self.dts, self.dt_index = np.unique(np.diff(self.times, axis=1), return_inverse=True)
        self.dt_index = self.dt_index.reshape(B, L - 1)
        # the "started" law: first values iid N(m_c, s_c^2) per channel (maximum likelihood, s_c^2 >= 1e-6)
        self.first_log_density = 0.0
        for c in range(self.num_channels):
            v = self.values[self.channels == c, 0]
            if v.size:
                s2 = max(float(v.var()), 1e-6)
                self.first_log_density += -0.5 * v.size * (math.log(2 * math.pi * s2) + 1.0)

    def profile(self, hurst: float, theta: float, noise_ratio: float, gamma: np.ndarray, horizon: float,
                fbm_type: FBMType, start: str) -> tuple[float, np.ndarray]:
        """The log-likelihood with each channel's ``sigma`` maximised out (closed form), and those ``sigma``.

        State ``s = (x, Y_1..Y_K)`` of ``dx = -theta x dt + dB_hat``, ``dY_k = -gamma_k Y_k dt + dW`` (unit
        scale), ``dB_hat = sum_k omega_k dY_k``: exact Gaussian transitions, ``Phi = e^(F dt)`` in closed form
        (``Phi_00 = e^(-theta dt)``, ``Phi_kk = e^(-gamma_k dt)``, ``Phi_0k = -omega_k gamma_k (e^(-gamma_k dt) -
        e^(-theta dt)) / (theta - gamma_k)``) and ``Q = P - Phi P Phi'`` (``P`` the stationary covariance, from
        ``F P + P F' + G G' = 0``; it exists for ``theta > 0``). ``start="stationary"``: the state starts in
        ``N(0, P)`` (a stationary fOU observed from some time on); ``"started"``: the first value is drawn from
        its own Gaussian law (a process started at a given point, e.g. fBM at 0) and the rest is conditioned on
        it (``x`` given it, ``Y`` in its own law: stationary for Type I, zero for Type II). Every variance but
        the first values' scales with ``sigma^2``, so ``sigma`` is profiled out."""
        omega = optimal_weights(gamma, hurst, horizon, fbm_type)
        K = len(gamma)
        F = np.zeros((K + 1, K + 1))
        F[0, 0] = -theta
        F[0, 1:] = -omega * gamma
        F[1:, 1:] = -np.diag(gamma)
        G = np.concatenate([[omega.sum()], np.ones(K)])[:, None]
        P = scipy.linalg.solve_continuous_lyapunov(F, -G @ G.T)
        P = 0.5 * (P + P.T)
        # transitions for each distinct gap
        dt = self.dts[:, None]
        Phi = np.zeros((dt.shape[0], K + 1, K + 1))
        Phi[:, 0, 0] = np.exp(-theta * dt[:, 0])
        Phi[:, np.arange(1, K + 1), np.arange(1, K + 1)] = np.exp(-gamma * dt)
        a = np.abs(theta - gamma) * dt  # (e^(-g dt) - e^(-theta dt)) / (theta - g), stable for theta ~ g
        ratio = np.where(a > 1e-12, -np.expm1(-a) / np.where(a > 1e-12, a, 1.0), 1.0)
        Phi[:, 0, 1:] = -omega * gamma * np.exp(-np.minimum(theta, gamma) * dt) * dt * ratio
        PhiT = np.ascontiguousarray(Phi.transpose(0, 2, 1))
        Q = P - Phi @ P @ PhiT
        Q = 0.5 * (Q + Q.transpose(0, 2, 1))
        r2 = noise_ratio**2
        stationary = start == "stationary"
        if stationary:
            C = P.copy()
        else:
            C = np.zeros((K + 1, K + 1))
            C[0, 0] = r2  # x given its first (noisy) value under a flat prior
            if FBMType(fbm_type) is FBMType.TYPE_I:
                C[1:, 1:] = 1.0 / (gamma[:, None] + gamma[None, :])
        x, valid = self.values, self.valid
        B, L = x.shape
        m = np.zeros((B, K + 1))
        if not stationary:
            m[:, 0] = x[:, 0]
        quad, logdet = np.zeros(B), np.zeros(B)
        first = 0 if stationary else 1
        if self.shared:  # one covariance recursion for all rows (same times, nothing padded)
            steps = self.dt_index[0]
            for i in range(first, L):
                if i > 0:
                    j = steps[i - 1]
                    m = m @ PhiT[j]
                    C = Phi[j] @ C @ PhiT[j] + Q[j]
                f = C[0, 0] + r2
                k = C[:, 0] / f
                v = x[:, i] - m[:, 0]
                m += np.outer(v, k)
                C = C - np.outer(k, C[0])
                quad += v * v / f
                logdet += math.log(f) if f > 0 else math.nan
        else:
            C = np.broadcast_to(C, (B, K + 1, K + 1))
            mask = valid.astype(np.float64)
            for i in range(first, L):
                if i > 0:
                    j = self.dt_index[:, i - 1]
                    m = np.einsum("bij,bj->bi", Phi[j], m)
                    C = Phi[j] @ C @ PhiT[j] + Q[j]
                f = C[:, 0, 0] + r2
                k = C[:, :, 0] / f[:, None]
                v = x[:, i] - m[:, 0]
                m = m + v[:, None] * k
                C = C - k[:, :, None] * C[:, None, 0, :]
                quad += mask[:, i] * v * v / f
                logdet += mask[:, i] * np.log(np.maximum(f, 1e-300))
                if not np.all(f > 0):
                    return -math.inf, np.full(self.num_channels, math.nan)
        if not (np.all(np.isfinite(quad)) and np.all(np.isfinite(logdet))):
            return -math.inf, np.full(self.num_channels, math.nan)
        count = (valid.sum(1) - (0 if stationary else 1)).astype(np.float64)
        q_c, n_c, l_c = (np.bincount(self.channels, weights=a_, minlength=self.num_channels)
                         for a_ in (quad, count, logdet))
        used = n_c > 0
        sigma2 = np.where(used, q_c / np.maximum(n_c, 1), 1.0)
        ll = -0.5 * (float((n_c[used] * np.log(2 * math.pi * sigma2[used])).sum()) + float(l_c.sum())
                     + float(n_c.sum()))
        return ll + (0.0 if stationary else self.first_log_density), np.sqrt(sigma2)


def fit_markov_hurst(series: list[tuple[np.ndarray, np.ndarray, int]], *, num_ou: int = 9,
                     gamma_max: float | None = None, time_horizon: float | None = None,
                     fbm_type: FBMType = FBMType.TYPE_I, support: float = 0.5, theta_min: float = 1e-2,
                     noise_min: float = 1e-3, penalty: float = 3.32) -> MarkovHurstFit:
    """Maximum-likelihood Hurst index of irregular, possibly noisy series under the MA-fOU (Kalman filter).

    ``series``: ``(times [n], values [n], channel)`` per observed (series, channel), times strictly increasing,
    values centred (the mean reversion pulls towards 0). The model of each is the linear case of
    :class:`sde.models.FractionalLatentSDE`'s prior observed through Gaussian noise: ``x = z + eps``,
    ``dz = -theta z dt + sigma_c dB_hat``, ``eps ~ N(0, (noise_ratio sigma_c)^2)``; ``H``, ``theta`` and the noise
    ratio shared by all channels, ``sigma_c`` per channel (profiled out). ``B_hat`` is the MA-fBM with
    ``num_ou`` speeds ``ou_rates(num_ou, gamma_max) / T`` (``T = time_horizon``, default the longest span;
    ``gamma_max`` default 3 x the most observations of a series, so that the fastest OU process forgets within
    a third of a gap and the roughness at the observed scale is represented, as in :func:`estimate_hurst`) and
    the optimal weights on ``[0, T]``. The augmented state ``(z, Y)`` is Markov and linear-Gaussian, so the
    likelihood is exact by a Kalman filter (O(n K^2) per series; any times, any missing pattern).

    Model choice, each by maximum likelihood (Nelder-Mead over logit ``H`` and ``log(theta - theta_min)``
    from ``H`` = 0.5, ``theta - theta_min`` = 1): the start law, stationary or started (see
    :meth:`_MarkovSeries.profile`), the larger likelihood; for a started process, ``theta`` stays at
    ``theta_min`` (fBM) unless freeing it raises the log-likelihood by more than ``penalty`` nats; then
    observation noise, kept only when it raises the log-likelihood by more than ``penalty`` nats. The default
    3.32 is a likelihood-ratio test at 1% (chi2_1(0.99) / 2): ``H``, ``theta`` and the noise lie on a ridge of
    the likelihood of short paths (mean reversion looks like anti-persistence, white noise like a smaller
    ``H``), and freeing them on paths that do not need them moved ``H`` by 0.01 - 0.03.
    ``support``: the interval ``[low, high]`` of ``H`` whose log-likelihood is
    within ``support`` nats of the maximum (0.5: one asymptotic standard error either side), the others held.
    """
    rows = []
    for t, x, c in series:
        t, x = np.asarray(t, np.float64), np.asarray(x, np.float64)
        if t.ndim != 1 or t.shape != x.shape or np.any(np.diff(t) <= 0) or not np.all(np.isfinite(x)):
            raise ValueError("each series must be (times [n] strictly increasing, finite values [n], channel)")
        if t.shape[0] >= 2:
            rows.append((t, x, int(c)))
    if sum(t.shape[0] - 1 for t, _, _ in rows) < 8:
        raise ValueError("fit_markov_hurst needs at least 8 increments (series with two or more observations)")
    data = _MarkovSeries(rows)
    horizon = float(time_horizon) if time_horizon is not None else max(float(t[-1] - t[0]) for t, _, _ in rows)
    gmax = float(gamma_max) if gamma_max is not None else 3.0 * max(max(t.shape[0] for t, _, _ in rows), 4)
    gamma = ou_rates(num_ou, gmax) / horizon

    def unpack(p: np.ndarray) -> tuple[float, float, float]:
        h = 1 / (1 + math.exp(-float(np.clip(p[0], -6, 6))))
        noise = noise_min + math.exp(float(np.clip(p[2], -12, 3))) if len(p) > 2 else noise_min
        theta = theta_min + (math.exp(float(np.clip(p[1], -12, 8))) if np.isfinite(p[1]) else 0.0)
        return h, theta, noise

    def search(start: str, starts: list[np.ndarray]) -> scipy.optimize.OptimizeResult:
        def nll(p: np.ndarray) -> float:
            ll = data.profile(*unpack(p), gamma, horizon, fbm_type, start)[0]
            return -ll if math.isfinite(ll) else 1e300

        best = None
        for p0 in starts:
            res = scipy.optimize.minimize(nll, p0, method="Nelder-Mead",
                                          options={"xatol": 3e-3, "fatol": 1e-2, "maxiter": 200 * len(p0)})
            if best is None or res.fun < best.fun:
                best = res
        return best

    fits = {start: search(start, [np.array([0.0, 0.0])]) for start in ("stationary", "started")}
    start = min(fits, key=lambda k: fits[k].fun)
    best = fits[start]
    if start == "started":  # fBM is the limit theta -> 0: keep theta at theta_min unless the data ask for it
        slow = scipy.optimize.minimize_scalar(
            lambda h: -data.profile(h, theta_min, noise_min, gamma, horizon, fbm_type, start)[0], bounds=(0.005, 0.995),
            method="bounded", options={"xatol": 1e-4})
        if slow.fun <= best.fun + penalty:
            best = scipy.optimize.OptimizeResult(x=np.array([math.log(slow.x / (1 - slow.x)), -np.inf]), fun=slow.fun)
    noisy = search(start, [np.concatenate([np.where(np.isfinite(best.x), best.x, -12.0), [math.log(0.05)]])])
    params = unpack(noisy.x) if -noisy.fun > -best.fun + penalty else unpack(best.x)
    h, th, nr = params
    ll, sigma = data.profile(h, th, nr, gamma, horizon, fbm_type, start)

    def drop(x: float) -> float:  # > 0 inside the support
        return data.profile(x, th, nr, gamma, horizon, fbm_type, start)[0] - (ll - support)

    low = 0.005 if drop(0.005) > 0 else scipy.optimize.brentq(drop, 0.005, h, xtol=1e-4)
    high = 0.995 if drop(0.995) > 0 else scipy.optimize.brentq(drop, h, 0.995, xtol=1e-4)
    return MarkovHurstFit(float(h), float(low), float(high), float(th), tuple(float(s) for s in sigma), float(nr),
                          start, float(ll))
