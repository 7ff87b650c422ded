"""Stochastic process diffusion: a diffusion model of whole series whose noise is a process over the
observation times (Bilos, Rasul, Schneider, Nevmyvaka & Guennemann, "Modeling temporal data as continuous
functions with stochastic process diffusion", ICML 2023).

A series ``x_0 [L, D]`` observed at its own times ``t_1 < ... < t_L`` is noised channel by channel with
noise drawn from a stochastic process at those times, ``eps ~ N(0, Sigma)``, ``Sigma_ij = k(t_i, t_j)``:

* ``noise="gp"``: a Gaussian process with the RBF kernel ``exp(-((t_i - t_j) / scale)^2)`` (the paper's GP noise);
* ``noise="ou"``: the stationary Ornstein-Uhlenbeck process, ``exp(-|t_i - t_j| / scale)``;
* ``noise="independent"``: ``Sigma = I``, the usual diffusion model (the baseline).

``Sigma = C C^T`` (Cholesky, float64, with ``jitter`` on the diagonal: a white nugget; beyond keeping
Cholesky stable it lets smooth RBF noise cover rough data, whose rough part the bare RBF covariance all but
excludes: on the OU set, GP noise goes from far below independent noise at 1e-4 to above it at 0.1).
Times are on the model's clock (each series starts at 0, divided by ``time_scale``, the longest training
duration), so ``noise_scale`` is a fraction of a series' length. A padding row is a separate unit-variance
coordinate (identity block) and is masked everywhere.

Forward process (one continuous VP schedule for both kinds): ``beta(s) = beta_min + s (beta_max - beta_min)``
on diffusion time ``s in [0, 1]``, ``alpha_bar(s) = exp(-int_0^s beta)``, and

    x_s = sqrt(alpha_bar_s) x_0 + sqrt(1 - alpha_bar_s) eps,   eps = C z,  z ~ N(0, I),

the marginal of the SDE ``dx = -beta/2 x ds + sqrt(beta) C dW``. The denoiser sees the noisy series, its
observation times and ``s``, and predicts the correlated noise ``eps`` (``output="noise"``, so
``z_hat = C^{-1} eps_hat``) or the white ``z`` itself (``output="white"``); the loss
``|z - z_hat|^2`` is the paper's Mahalanobis loss ``|eps - eps_hat|^2_{Sigma^{-1}}``. The score is
``grad log p_s(x) = -C^{-T} z_hat / sqrt(1 - alpha_bar_s)``.

``kind="ddpm"``: discrete diffusion on ``s_k = k / K`` (``K = num_steps``; ``alpha_bar_k = alpha_bar(s_k)``,
so each step's marginal is the continuous one), trained on uniform ``k``, sampled by ancestral steps whose
posterior noise is ``C w``. ``kind="sde"``: continuous ``s ~ U(eps_s, 1]``, sampled by Euler-Maruyama on
the reverse SDE ``dx = [-beta/2 x - beta Sigma grad log p] ds + sqrt(beta) C dW-bar``.

Likelihood (both kinds, Song et al. 2021): the probability-flow ODE
``dx/ds = -beta/2 x + beta/2 C z_hat / sqrt(1 - alpha_bar_s)`` carries ``x`` from ``s = eps_s`` to 1, and

    log p(x_0) = log N(x_1; 0, Sigma) + int_{eps_s}^1 div f ds

with the exact divergence (the dimension ``L D`` is small: one batched vector-Jacobian product per
coordinate), solved by :func:`sde.solvers.solve` (dopri5). The value is exact for the model defined by the
ODE (up to the solver's tolerance), in the data's units (the standardisation's ``-sum log std``).

Partly observed series (``missing="observed"``, the paper's PhysioNet imputation setting): the diffusion of
channel ``c`` lives on that channel's observed entries only, its noise ``eps_c ~ N(0, Sigma_c)`` with
``Sigma_c = k(t_obs(c), t_obs(c))`` (the process at the channel's own observation times; every other row is an
independent coordinate that nothing reads), the denoiser sees the observed entries and their flags, and the
loss ``sum |z - z_hat|^2`` runs over observed entries. The loss then never depends on an unobserved value. The
factors are kept compact (:class:`_ChannelFactor`: O(n_c^2) per channel with ``n_c`` its entries). Missing
entries are imputed by replacement conditioning: the reverse process over the observed and the queried
entries, the observed ones replaced at every step by their forward-noised values. The paper's own PhysioNet
model is CSDI's conditional denoiser (observed values as an input, trained on randomly hidden observed values)
with GP noise; this is the unconditional alternative the issue asks for, scored in
``benchmarks/process_diffusion_physionet.py``.

That conditional model is ``missing="conditional"``: in training a random share of each series' observed
entries (CSDI's random strategy) become the targets, the diffusion lives on them alone (each channel's noise
process at its targets' times, :class:`_ChannelFactor`), the rest are the conditioning input of
:class:`ConditionalTransformer` (CSDI's denoiser: one token per entry, attention over time and over channels,
time and channel embeddings), and the loss ``sum |z - z_hat|^2`` runs over the targets. The skip connection
generalises to the Gaussian prior ``x_0 ~ N(m, v Sigma)`` per channel, ``m`` the conditioning's linear
interpolation (:func:`linear_fill`) and ``v`` a learned per-channel variance: the network starts from a
calibrated Gaussian imputation around the interpolation and learns the departure from it. Imputation samples
the queried entries by the reverse process over them alone (exact for the model: no replacement).
"""

from __future__ import annotations

import enum
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sde.models._base import eval_mode, seeded
from sde.models.heads import GaussianPrediction
from sde.series import SeriesBatch, SeriesDataError
from tpp.model import Model, Seed
from tpp.options import Interval, check_params

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["ConditionalTransformer", "DiffusionKind", "MissingValues", "NoiseProcess", "Prediction", "ProcessDiffusion",
           "TimeTransformer", "VPSchedule", "linear_fill", "noise_covariance", "plot_imputation", "plot_samples"]

LOG_2PI = math.log(2 * math.pi)


class NoiseProcess(enum.Enum):
    """The process the noise is drawn from, over each series' observation times."""

    GP = "gp"
    OU = "ou"
    INDEPENDENT = "independent"


class Prediction(enum.Enum):
    """What the denoiser network outputs: the white ``z`` itself, or the correlated noise ``eps = C z`` in the
    series' own coordinates (``z_hat = C^{-1} eps_hat``); the loss is the same Mahalanobis loss either way."""

    WHITE = "white"
    NOISE = "noise"


class DiffusionKind(enum.Enum):
    """Discrete (DDPM) or continuous (VP-SDE) diffusion time."""

    DDPM = "ddpm"
    SDE = "sde"


class MissingValues(enum.Enum):
    """What training does with missing values (NaN) of existing rows: ``"refuse"`` them (a density of whole
    series, the default), or train on the ``"observed"`` entries only (the diffusion of each channel lives at
    that channel's own observation times; PhysioNet-style partly observed series), or ``"conditional"``: the
    paper's PhysioNet model (CSDI's conditional denoiser with process noise): a random part of each series'
    observed entries is hidden and diffused, the rest enters the denoiser as a conditioning input."""

    REFUSE = "refuse"
    OBSERVED = "observed"
    CONDITIONAL = "conditional"


class _ChannelFactor:
    """The noise factor of partly observed series, one per channel, kept compact: channel ``c`` of series
    ``b`` has its entries' rows ``index[b, c, :n]`` (in time order; ``n`` = its number of entries, the rest of
    the ``K`` slots are other rows, identity there) and the lower Cholesky factor ``chol [B, C, K, K]`` of its
    process at those times. Every row that is not an entry is an independent unit-variance coordinate, so
    ``C z`` and ``C^{-1} z`` touch only the ``K`` gathered rows: O(K^2) per channel instead of O(L^2) (on
    PhysioNet a variable is observed at ~15 % of a stay's rows)."""

    def __init__(self, chol: Tensor, index: Tensor) -> None:
        self.chol, self.index = chol, index

    def _apply(self, z: Tensor, op: Any) -> Tensor:
        zc = z.permute(0, 2, 1)  # [B, C, L]
        gathered = torch.gather(zc, 2, self.index)[..., None]  # [B, C, K, 1]
        return zc.scatter(2, self.index, op(gathered)[..., 0]).permute(0, 2, 1)

    def mul(self, z: Tensor) -> Tensor:
        return self._apply(z, lambda g: self.chol @ g)

    def solve(self, z: Tensor) -> Tensor:
        return self._apply(z, lambda g: torch.linalg.solve_triangular(self.chol, g, upper=False))

    def repeat(self, k: int) -> _ChannelFactor:
        return _ChannelFactor(self.chol.repeat(k, 1, 1, 1), self.index.repeat(k, 1, 1))

    def dense(self, length: int) -> Tensor:
        """``[B, C, L, L]`` the full factors (identity off the entries)."""
        B, C, K = self.index.shape
        out = torch.eye(length, dtype=self.chol.dtype, device=self.chol.device).repeat(B, C, 1, 1)
        rows = self.index[..., :, None].expand(B, C, K, K)
        cols = self.index[..., None, :].expand(B, C, K, K)
        flat = out.view(B, C, length * length)
        flat.scatter_(2, (rows * length + cols).reshape(B, C, K * K), self.chol.reshape(B, C, K * K))
        return out


Factor = Tensor | _ChannelFactor


def _mul(chol: Factor, z: Tensor) -> Tensor:
    """``C z`` per channel: ``chol`` ``[B, L, L]`` (one factor for every channel) or a :class:`_ChannelFactor`
    (one per channel), ``z [B, L, C]``."""
    if isinstance(chol, _ChannelFactor):
        return chol.mul(z)
    return chol @ z


def _solve(chol: Factor, z: Tensor) -> Tensor:
    """``C^{-1} z`` per channel (``chol`` as in :func:`_mul`)."""
    if isinstance(chol, _ChannelFactor):
        return chol.solve(z)
    return torch.linalg.solve_triangular(chol, z, upper=False)


def noise_covariance(times: Tensor, mask: Tensor, noise: NoiseProcess | str, scale: float,
                     jitter: float = 1e-4) -> Tensor:
    """``[B, L, L]`` covariance of the noise process at ``times [B, L]`` (float64), ``jitter`` added on the
    diagonal; padding rows (``mask`` False) are independent unit-variance coordinates."""
    noise = NoiseProcess(noise)
    t = times.to(torch.float64)
    gap = t[:, :, None] - t[:, None, :]
    if noise is NoiseProcess.GP:
        k = torch.exp(-(gap / scale) ** 2)
    elif noise is NoiseProcess.OU:
        k = torch.exp(-gap.abs() / scale)
    else:
        k = torch.zeros_like(gap)
    pair = mask[:, :, None] & mask[:, None, :]
    eye = torch.eye(t.shape[1], dtype=torch.float64, device=t.device)
    k = torch.where(pair, k, torch.zeros_like(k))
    # the independent baseline's diagonal is exactly 1; the others get the jitter that keeps Cholesky stable
    diag = torch.where(mask, torch.full_like(t, 1.0 if noise is NoiseProcess.INDEPENDENT else 1.0 + jitter),
                       torch.ones_like(t))
    return k * (1 - eye) + torch.diag_embed(diag)


class VPSchedule:
    """``beta(s) = beta_min + s (beta_max - beta_min)`` on ``s in [0, 1]``; ``alpha_bar(s) = exp(-int_0^s beta)``."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if not 0 < beta_min <= beta_max:
            raise ValueError(f"need 0 < beta_min <= beta_max, got beta_min={beta_min}, beta_max={beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def beta(self, s: Tensor) -> Tensor:
        return self.beta_min + s * (self.beta_max - self.beta_min)

    def integral(self, s: Tensor) -> Tensor:
        """``int_0^s beta``."""
        return self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s**2

    def alpha_bar(self, s: Tensor) -> Tensor:
        return torch.exp(-self.integral(s))


# ---------------------------------------------------------------------------------------------- denoiser
def _sinusoid(x: Tensor, size: int, max_freq: float) -> Tensor:
    """``[..., size]`` sin/cos features of ``x [...]`` at ``size // 2`` geometric frequencies from 1 to ``max_freq``."""
    half = size // 2
    freqs = torch.exp(torch.linspace(0.0, math.log(max_freq), half, dtype=x.dtype, device=x.device))
    arg = x[..., None] * freqs
    return torch.cat([torch.sin(arg), torch.cos(arg)], -1)


class _Block(nn.Module):
    """Pre-norm self-attention over the rows of a series (padding keys masked) and an MLP."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.qkv, self.out = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, hidden))

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        B, L, H = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(B, L, 3, self.heads, H // self.heads).permute(2, 0, 3, 1, 4)
        logits = q @ k.transpose(-1, -2) / math.sqrt(H // self.heads)  # [B, heads, L, L]
        logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
        att = torch.softmax(logits, -1) @ v  # every series has a row, so no all-masked softmax
        h = h + self.out(att.transpose(1, 2).reshape(B, L, H))
        return h + self.mlp(self.norm2(h))


class TimeTransformer(nn.Module):
    """The default denoiser: a small transformer over the rows ``(x_i, t_i)`` of a series, with the diffusion
    time ``s`` added to every row. ``forward(x [B, L, D], t [B, L], s [B], mask [B, L]) -> z_hat [B, L, D]``.
    With ``entries=True`` (partly observed series) it also reads ``entries [B, L, D]`` (1 where the entry is
    part of the diffusion; ``x`` is 0 elsewhere), so an absent entry is not mistaken for a value 0."""

    def __init__(self, channels: int, hidden: int = 64, layers: int = 2, heads: int = 4,
                 entries: bool = False) -> None:
        super().__init__()
        if hidden % heads or hidden % 2:
            raise ValueError(f"hidden_size={hidden} must be even and divisible by num_heads={heads}")
        self.hidden = hidden
        self.entries = bool(entries)
        self.inp = nn.Linear(2 * channels if self.entries else channels, hidden)
        self.time = nn.Linear(hidden, hidden)
        self.step = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.blocks = nn.ModuleList(_Block(hidden, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, channels)

    def forward(self, x: Tensor, t: Tensor, s: Tensor, mask: Tensor, entries: Tensor | None = None) -> Tensor:
        if self.entries:
            if entries is None:
                raise ValueError("this TimeTransformer was built with entries=True: pass entries [B, L, D]")
            x = torch.cat([x, entries.to(x.dtype)], -1)
        # times on the model clock are ~[0, 1]: frequencies up to 200 resolve gaps of ~1/200
        h = self.inp(x) + self.time(_sinusoid(t, self.hidden, 200.0))
        h = h + self.step(_sinusoid(s, self.hidden, 1000.0))[:, None]
        for block in self.blocks:
            h = block(h, mask)
        return self.head(self.norm(h))


def linear_fill(values: Tensor, known: Tensor, t: Tensor) -> Tensor:
    """``[B, L, D]`` each channel linearly interpolated in time ``t [B, L]`` between its ``known [B, L, D]``
    entries of ``values`` (constant beyond the first and last; 0 for a channel without any): the conditioning
    summary the conditional denoiser reads beside the values themselves, so the network learns how a value
    departs from its neighbours' line rather than the line itself. Depends on ``values`` at ``known`` only."""
    B, L, D = values.shape
    idx = torch.arange(L, device=values.device)[None, :, None].expand(B, L, D)
    prev = torch.where(known, idx, torch.full_like(idx, -1)).cummax(1).values
    nxt = torch.where(known, idx, torch.full_like(idx, L)).flip(1).cummin(1).values.flip(1)
    has_prev, has_next = prev >= 0, nxt < L
    prev_c, next_c = prev.clamp(0, L - 1), nxt.clamp(0, L - 1)
    v = torch.where(known, values, torch.zeros_like(values))
    tt = t[..., None].expand(B, L, D)
    v0, v1 = v.gather(1, prev_c), v.gather(1, next_c)
    t0, t1 = tt.gather(1, prev_c), tt.gather(1, next_c)
    gap = t1 - t0
    w = torch.where(gap > 0, (tt - t0) / torch.where(gap > 0, gap, torch.ones_like(gap)), torch.zeros_like(gap))
    both = v0 + w * (v1 - v0)
    return torch.where(has_prev & has_next, both, torch.where(has_prev, v0, torch.where(has_next, v1,
                                                                                          torch.zeros_like(v))))


class _ConditionalLayer(nn.Module):
    """One residual layer of CSDI's denoiser: the diffusion step added, a transformer layer over time (each
    channel's rows), one over the channels (each row's entries), the side information (time and channel
    embeddings) added, a gated activation, and a residual and a skip output."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.step = nn.Linear(hidden, hidden)
        self.time = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=hidden, dropout=0.0, batch_first=True,
                                               activation="gelu")
        self.feature = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=hidden, dropout=0.0,
                                                  batch_first=True, activation="gelu")
        self.mid, self.side = nn.Linear(hidden, 2 * hidden), nn.Linear(hidden, 2 * hidden)
        self.out = nn.Linear(hidden, 2 * hidden)

    def forward(self, h: Tensor, step: Tensor, side: Tensor, pad: Tensor) -> tuple[Tensor, Tensor]:
        B, L, D, H = h.shape
        y = h + self.step(step)[:, None, None]
        y = y.permute(0, 2, 1, 3).reshape(B * D, L, H)
        y = self.time(y, src_key_padding_mask=pad).view(B, D, L, H).permute(0, 2, 1, 3)
        y = self.feature(y.reshape(B * L, D, H)).view(B, L, D, H)
        gate, filt = (self.mid(y) + self.side(side)).chunk(2, -1)
        res, skip = self.out(torch.sigmoid(gate) * torch.tanh(filt)).chunk(2, -1)
        return (h + res) / math.sqrt(2.0), skip


class ConditionalTransformer(nn.Module):
    """The conditional denoiser of ``missing="conditional"`` (CSDI's, Tashiro et al. 2021, as the paper uses
    it): one token per entry ``(row, channel)`` reading the noisy target value, the conditioning value, the
    conditioning and target flags and (``interpolate``) the conditioning entries' linear interpolation
    (:func:`linear_fill`); side information: a sinusoidal embedding of the row's time plus a learned embedding
    of the channel; ``layers`` residual layers (:class:`_ConditionalLayer`: attention over time, then over
    channels); the skips summed into one output per entry.
    ``forward(x, t, s, mask, target, cond_x, cond) -> [B, L, D]`` (``mask [B, L]`` the rows)."""

    def __init__(self, channels: int, hidden: int = 64, layers: int = 4, heads: int = 8,
                 interpolate: bool = True) -> None:
        super().__init__()
        if hidden % heads or hidden % 2:
            raise ValueError(f"hidden_size={hidden} must be even and divisible by num_heads={heads}")
        self.hidden, self.interpolate = hidden, bool(interpolate)
        self.inp = nn.Linear(5 if self.interpolate else 4, hidden)
        self.time = nn.Linear(hidden, hidden)
        self.channel = nn.Embedding(channels, hidden)
        self.step = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.layers = nn.ModuleList(_ConditionalLayer(hidden, heads) for _ in range(max(int(layers), 1)))
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.head[-1].weight)  # as CSDI: start from eps_hat = 0 (plus the model's skip)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: Tensor, t: Tensor, s: Tensor, mask: Tensor, target: Tensor, cond_x: Tensor,
                cond: Tensor) -> Tensor:
        B, L, D = x.shape
        parts = [x * target, cond_x * cond, cond, target]
        if self.interpolate:
            parts.append(linear_fill(cond_x, cond > 0, t))
        h = torch.relu(self.inp(torch.stack(parts, -1)))  # [B, L, D, H]
        side = self.time(_sinusoid(t, self.hidden, 200.0))[:, :, None] + self.channel.weight[None, None]
        step = self.step(_sinusoid(s, self.hidden, 1000.0))
        pad = (~mask)[:, None, :].expand(B, D, L).reshape(B * D, L)
        skip = torch.zeros_like(h)
        for layer in self.layers:
            h, out = layer(h, step, side, pad)
            skip = skip + out
        return self.head(skip / math.sqrt(len(self.layers)))[..., 0]


# ---------------------------------------------------------------------------------------------- the model
class _Prepared:
    """A batch on the model's clock and scale: ``x [B, L, D]`` standardised (0 where missing, padding or outside
    the diffusion), ``observed [B, L, D]``, ``t [B, L]`` model times (padding: the series' last time), ``mask
    [B, L]`` (rows), ``entries [B, L, D]`` the entries the diffusion is defined on (default: every entry of
    every row), ``rows [B, L]`` the rows with an entry (the denoiser's attention; a series without any entry
    keeps its rows, so no softmax is empty) and ``chol`` the noise factor: ``[B, L, L]`` when every channel
    has the rows' entries, else a :class:`_ChannelFactor`, each channel's process at its own entries' times
    (an entry outside them is an independent unit-variance coordinate, as a padding row). Conditional models
    (``missing="conditional"``) also keep ``cond [B, L, D]`` (the conditioning entries: observed, outside
    ``entries``; none unless given) and ``cond_x`` (their standardised values, 0 elsewhere)."""

    def __init__(self, model: ProcessDiffusion, batch: SeriesBatch, complete: bool, what: str,
                 entries: Tensor | None = None, cond: Tensor | None = None) -> None:
        if not isinstance(batch, SeriesBatch):
            raise TypeError(f"ProcessDiffusion.{what} takes a sde.series.SeriesBatch, got {type(batch).__name__}")
        if batch.values.shape[-1] != model.num_channels:
            raise ValueError(f"batch has {batch.values.shape[-1]} channels, the model was built for "
                             f"num_channels={model.num_channels}")
        dtype, device = model.dtype, model.device
        self.mask = batch.mask.to(device)
        values = batch.values.to(device=device, dtype=torch.float64)
        observed = self.mask[..., None] & ~torch.isnan(values)
        if complete:
            gaps = self.mask[..., None] & torch.isnan(values)
            if bool(gaps.any()):
                b, row, c = (int(v) for v in torch.nonzero(gaps)[0])
                name = batch.channel_names[c] if c < len(batch.channel_names) else str(c)
                hint = ("build the model with missing='observed' to train on the observed entries only, or "
                        if what in ("objective", "initialise") else "")
                raise SeriesDataError(f"ProcessDiffusion.{what} needs fully observed rows (the diffusion is a "
                                      f"density of whole series); channel {name!r} is missing. Fill or drop it, "
                                      f"{hint}use impute/predict, which sample the missing values", series=b, row=row,
                                      field="values")
        time = batch.time.to(device=device, dtype=torch.float64)
        last = (self.mask.sum(1) - 1).clamp(min=0)
        end = time.gather(1, last[:, None])
        time = torch.where(self.mask, time, end)
        self.start = time[:, :1]
        self.t = ((time - self.start) / model.time_scale).to(dtype)
        standard = (values - model.channel_mean.to(torch.float64)) / model.channel_std.to(torch.float64)
        rows3 = self.mask[..., None].expand_as(observed)
        self.entries = rows3 if entries is None else entries.to(device) & rows3
        self.x = torch.where(observed & self.entries, standard, torch.zeros_like(standard)).to(dtype)
        self.observed = observed
        # the conditioning: observed entries outside the diffusion (a value there is an input, never a target)
        self.cond = (torch.zeros_like(observed) if cond is None else cond.to(device) & observed) & ~self.entries
        self.cond_x = torch.where(self.cond, standard, torch.zeros_like(standard)).to(dtype)
        present = self.entries.any(-1)
        self.rows = torch.where(present.any(1, keepdim=True), present, self.mask)
        if bool((self.entries == rows3).all()):
            self.chol = model.noise_factor(self.t, self.mask)  # [B, L, L], every channel alike
        else:
            self.chol = model.channel_factor(self.t, self.entries)  # one per channel, compact

    def repeat(self, k: int) -> _Prepared:
        """The same series ``k`` times over (``[k B, ...]``), for batched copies and samples."""
        out = _Prepared.__new__(_Prepared)
        out.t, out.mask, out.rows = self.t.repeat(k, 1), self.mask.repeat(k, 1), self.rows.repeat(k, 1)
        out.entries = self.entries.repeat(k, 1, 1)
        out.cond, out.cond_x = self.cond.repeat(k, 1, 1), self.cond_x.repeat(k, 1, 1)
        out.chol = self.chol.repeat(k) if isinstance(self.chol, _ChannelFactor) else self.chol.repeat(k, 1, 1)
        return out


def _option(enum_type: type[enum.Enum], value: Any, name: str) -> Any:
    """``value`` (a member or its name, any case) as a member of ``enum_type``; else a ValueError listing them."""
    if isinstance(value, enum_type):
        return value
    try:
        return enum_type(str(value).lower())
    except ValueError:
        raise ValueError(f"{name}={value!r} is not one of {[m.value for m in enum_type]}") from None


class ProcessDiffusion(Model):
    """Stochastic process diffusion of irregular multivariate series (see the module docstring).

    ``ProcessDiffusion(num_channels)`` works as is. ``noise``: ``"gp"`` (default), ``"ou"`` or ``"independent"``;
    ``noise_scale``: the kernel's length in model time (a fraction of the longest training series);
    ``kind``: ``"sde"`` (default) or ``"ddpm"``; ``num_steps``: DDPM steps, and the reverse-SDE steps of
    :meth:`sample`; ``sample_steps``: fewer reverse steps for :meth:`sample` and :meth:`impute` (the speed knob:
    the cost is linear in it; ``"ddpm"``: the trained steps respaced; default ``num_steps``); ``beta_min``/``beta_max``: the VP schedule; ``eps``: the smallest diffusion time of the
    continuous kind and of the likelihood's ODE. ``denoiser``: a module ``(x [B, L, D], t [B, L], s [B], mask
    [B, L]) -> [B, L, D]`` (``eps_hat`` or ``z_hat``, as ``output`` says) replacing the default
    :class:`TimeTransformer` (``hidden_size``, ``num_layers``, ``num_heads``); ``skip``: add
    ``sqrt(1 - alpha_bar_s) C^{-1} x_s`` to its ``z_hat`` (see :meth:`_denoise`; off to plug in a complete
    denoiser such as a closed form). ``output``: what the denoiser outputs, ``"noise"`` (default) the
    correlated noise ``eps_hat = C z_hat`` in the series' own coordinates, or ``"white"`` ``z_hat`` itself.
    Same loss and likelihood; ``"noise"`` is what makes GP/OU noise pay off, since for data whose covariance
    has the noise's shape the best ``eps_hat`` is row-wise while the best ``z_hat`` needs ``C^{-1}`` (on the
    OU set, 40 epochs: -16.8 vs -34.5 nats/series).

    ``missing``: ``"refuse"`` (default) refuses missing values in training (a density of whole series);
    ``"observed"`` trains on partly observed series (NaN entries; the paper's PhysioNet setting): each
    channel's noise is its process at that channel's own observation times only (``Sigma_c = k(t_obs, t_obs)``),
    the denoiser sees the observed entries and where they are (``TimeTransformer(entries=True)``; a custom
    denoiser then takes a fifth argument ``entries [B, L, D]``), and the loss counts observed entries only, so
    a missing entry never changes it. :meth:`impute` then samples the missing entries by replacement
    conditioning. The exact :meth:`log_likelihood` stays a density of whole (fully observed) series.
    ``"conditional"``: the paper's PhysioNet model, CSDI's conditional scheme with process noise. Training
    (:meth:`objective`) hides a random subset of each series' observed entries (CSDI's random strategy: a
    share ``r ~ U(0, 1)`` per series, ``round(r n)`` of its ``n`` observed entries, at least one), diffuses those
    targets only (each channel's process at its targets' times) and scores them; the other observed entries are
    the conditioning input of :class:`ConditionalTransformer` (values and flags, and with ``interpolation`` their
    linear interpolation per channel). :meth:`impute` samples the queried entries (default: every missing one)
    by the reverse process over them alone given the observed ones (no replacement needed); :meth:`sample` and
    :meth:`log_likelihood` are those of the empty conditioning.

    The contract (:class:`tpp.model.Model`): :meth:`objective` ``[B]`` is minus the denoising loss (a
    reweighted ELBO, not a likelihood); :meth:`log_likelihood` ``[B]`` the exact log density through the
    probability-flow ODE; :meth:`score` its mean per row; :meth:`sample` new series at any times;
    :meth:`impute` / :meth:`predict` conditional samples / their mean and std for the missing values (NaN,
    or rows added at new times: a forecast).
    """

    classifies = False
    """No class heads and no Bayes'-rule classifier (that would need the exact likelihood of partly observed
    series): :func:`sde.tasks.supported_tasks` offers forecast and interpolate only."""

    _constraints = {"num_channels": Interval(1, None, integer=True), "hidden_size": Interval(2, None, integer=True),
                    "num_layers": Interval(0, None, integer=True), "num_heads": Interval(1, None, integer=True),
                    "num_steps": Interval(1, None, integer=True),
                    "noise_scale": Interval(0, None, closed="neither"), "jitter": Interval(0, None),
                    "eps": Interval(0, 1, closed="neither")}

    def __init__(self, num_channels: int, *, noise: NoiseProcess | str = NoiseProcess.GP,
                 kind: DiffusionKind | str = DiffusionKind.SDE, noise_scale: float = 0.1, jitter: float = 1e-4,
                 hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4, num_steps: int = 100,
                 beta_min: float = 0.1, beta_max: float = 20.0, eps: float = 1e-3,
                 denoiser: nn.Module | None = None, skip: bool = True,
                 output: Prediction | str = Prediction.NOISE,
                 missing: MissingValues | str = MissingValues.REFUSE, interpolation: bool = True,
                 sample_steps: int | None = None) -> None:
        super().__init__()
        check_params(self, num_channels=num_channels, hidden_size=hidden_size, num_layers=num_layers,
                     num_heads=num_heads, num_steps=num_steps, noise_scale=noise_scale, jitter=jitter, eps=eps)
        if sample_steps is not None and (isinstance(sample_steps, bool) or int(sample_steps) != sample_steps
                                         or not 1 <= int(sample_steps)):
            raise ValueError(f"sample_steps must be a positive integer or None, got {sample_steps!r}")
        self.sample_steps = None if sample_steps is None else int(sample_steps)
        self.num_channels = int(num_channels)
        self.noise = _option(NoiseProcess, noise, "noise")
        self.kind = _option(DiffusionKind, kind, "kind")
        self.noise_scale, self.jitter = float(noise_scale), float(jitter)
        self.num_steps, self.eps = int(num_steps), float(eps)
        self.schedule = VPSchedule(beta_min, beta_max)
        self.beta_min, self.beta_max = self.schedule.beta_min, self.schedule.beta_max
        self.hidden_size, self.num_layers, self.num_heads = int(hidden_size), int(num_layers), int(num_heads)
        self.skip = bool(skip)
        self.output = _option(Prediction, output, "output")
        self.missing = _option(MissingValues, missing, "missing")
        self.interpolation = bool(interpolation)
        if denoiser is not None:
            self.denoiser = denoiser
        elif self.conditional:
            self.denoiser = ConditionalTransformer(self.num_channels, self.hidden_size, self.num_layers,
                                                   self.num_heads, interpolate=self.interpolation)
        else:
            self.denoiser = TimeTransformer(self.num_channels, self.hidden_size, self.num_layers, self.num_heads,
                                            entries=self.missing is MissingValues.OBSERVED)
        # conditional models: log of the per-channel variance of the data around the conditioning's interpolation,
        # in units of the noise's (see _denoise); other models have none (their state dicts stay as they were)
        self.prior_log_var = nn.Parameter(torch.zeros(self.num_channels)) if self.conditional else None
        self.register_buffer("channel_mean", torch.zeros(self.num_channels))
        self.register_buffer("channel_std", torch.ones(self.num_channels))
        self.register_buffer("time_scale", torch.ones((), dtype=torch.float64))
        # a denoiser without parameters (a closed form) still fixes the model's dtype and device
        self.register_buffer("_anchor", torch.zeros(()))

    # ------------------------------------------------------------------ basics
    @property
    def dtype(self) -> torch.dtype:
        return self.channel_mean.dtype

    @property
    def device(self) -> torch.device:
        return self.channel_mean.device

    @property
    def partial(self) -> bool:
        """Does training take partly observed series (``missing="observed"`` or ``"conditional"``)?"""
        return self.missing in (MissingValues.OBSERVED, MissingValues.CONDITIONAL)

    @property
    def conditional(self) -> bool:
        """Is the denoiser conditional on observed entries (``missing="conditional"``)?"""
        return self.missing is MissingValues.CONDITIONAL

    @torch.no_grad()
    def initialise(self, train: SeriesBatch) -> ProcessDiffusion:
        """Channel means and stds of the (observed) training values and the time scale (the longest training
        series' duration); called once by the trainer. Refuses missing values unless ``missing="observed"``
        (see :meth:`objective`); then a channel with fewer than two observed values keeps mean 0 and std 1,
        and a warning names it."""
        _Prepared(self, train, complete=not self.partial, what="initialise")  # the checks only
        values = train.values.to(torch.float64)
        observed = train.mask[..., None] & ~torch.isnan(values)
        count = observed.sum((0, 1))
        filled = torch.where(observed, values, torch.zeros_like(values))
        mean = filled.sum((0, 1)) / count.clamp(min=1)
        var = (torch.where(observed, values - mean, torch.zeros_like(values)) ** 2).sum((0, 1)) / (count - 1).clamp(min=1)
        std = torch.where(count > 1, var.sqrt(), torch.ones_like(var))
        std = torch.where(std > 0, std, torch.ones_like(std))
        sparse = torch.nonzero(count < 2).flatten().tolist()
        if sparse:
            import warnings

            names = [train.channel_names[c] if c < len(train.channel_names) else str(c) for c in sparse]
            warnings.warn(f"ProcessDiffusion.initialise: channel(s) {', '.join(repr(n) for n in names)} have fewer "
                          "than two observed training values; their standardisation is mean 0, std 1 (their "
                          "imputations come from the prior); drop such channels to silence this", UserWarning,
                          stacklevel=2)
        self.channel_mean.copy_(mean.to(self.channel_mean))
        self.channel_std.copy_(std.to(self.channel_std))
        time = train.time.to(torch.float64)
        last = (train.mask.sum(1) - 1).clamp(min=0)
        duration = float((time.gather(1, last[:, None])[:, 0] - time[:, 0]).max())
        self.time_scale.fill_(duration if duration > 0 else 1.0)
        if self.conditional and self.interpolation:
            self._initialise_prior_variance(train, observed)
        return self

    def _initialise_prior_variance(self, train: SeriesBatch, observed: Tensor) -> None:
        """Start the conditional prior's per-channel variance ``v`` (see :meth:`_denoise`) at the mean squared
        error (standardised) of the linear interpolation on a seeded random half of the observed entries from
        the other half (CSDI's random strategy at share 1/2), clamped to [1e-3, 1]: the network then starts
        from a calibrated Gaussian imputation around the interpolation rather than one of unit spread."""
        g = torch.Generator(device=observed.device).manual_seed(0)
        hidden = observed & (torch.rand(observed.shape, generator=g, device=observed.device) < 0.5)
        mean, std = self.channel_mean.to(torch.float64), self.channel_std.to(torch.float64)
        standard = torch.where(observed, (train.values.to(torch.float64) - mean) / std, torch.zeros_like(mean))
        fill = linear_fill(standard, observed & ~hidden, train.time.to(torch.float64))
        count = hidden.sum((0, 1))
        mse = torch.where(hidden, (fill - standard) ** 2, torch.zeros_like(fill)).sum((0, 1)) / count.clamp(min=1)
        v = torch.where(count > 0, mse, torch.ones_like(mse)).clamp(1e-3, 1.0)
        self.prior_log_var.data.copy_(v.log().to(self.prior_log_var))

    def noise_covariance(self, t: Tensor, mask: Tensor) -> Tensor:
        """``[B, L, L]`` (float64) the noise covariance ``Sigma`` at model times ``t [B, L]``."""
        return noise_covariance(t, mask, self.noise, self.noise_scale, self.jitter)

    def entry_factor(self, t: Tensor, entries: Tensor) -> Tensor:
        """``[B, D, L, L]`` Cholesky factors, one per channel, of the noise process at that channel's entries
        (``entries [B, L, D]``; any other row is an independent unit-variance coordinate). The model itself
        keeps them compact (:meth:`channel_factor`); this dense form is for inspection."""
        return self.channel_factor(t, entries).dense(entries.shape[1])

    def channel_factor(self, t: Tensor, entries: Tensor) -> _ChannelFactor:
        """The per-channel noise factors of :meth:`entry_factor` on each channel's entries only."""
        B, L, D = entries.shape
        masks = entries.permute(0, 2, 1)  # [B, D, L]
        K = max(int(masks.sum(-1).max()), 1)
        # each channel's entries first, in time order (a stable sort), then the other rows
        index = torch.argsort((~masks).to(torch.int8), dim=-1, stable=True)[..., :K]
        valid = torch.gather(masks, 2, index)
        times = torch.gather(t[:, None, :].expand(B, D, L), 2, index)
        sigma = noise_covariance(times.reshape(B * D, K), valid.reshape(B * D, K), self.noise, self.noise_scale,
                                 self.jitter)
        chol, info = torch.linalg.cholesky_ex(sigma)
        if bool((info > 0).any()):
            b = int(torch.nonzero(info)[0]) // D
            raise ValueError(f"series {b}: the {self.noise.value} noise covariance is not positive definite at its "
                             f"times (rows too close for noise_scale={self.noise_scale}); raise jitter={self.jitter}")
        return _ChannelFactor(chol.view(B, D, K, K).to(self.dtype), index)

    def noise_factor(self, t: Tensor, mask: Tensor) -> Tensor:
        """``[B, L, L]`` lower Cholesky factor ``C`` of :meth:`noise_covariance`, in the model's dtype."""
        sigma = self.noise_covariance(t, mask)
        chol, info = torch.linalg.cholesky_ex(sigma)
        if bool((info > 0).any()):
            b = int(torch.nonzero(info)[0])
            raise ValueError(f"series {b}: the {self.noise.value} noise covariance is not positive definite at its "
                             f"times (rows too close for noise_scale={self.noise_scale}); raise jitter={self.jitter}")
        return chol.to(self.dtype)

    def _denoise(self, x: Tensor, p: _Prepared, s: Tensor) -> Tensor:
        """``z_hat [B, L, D]``: the denoiser's output (``output="noise"``: ``C^{-1}`` of it), plus (``skip``)
        ``sqrt(1 - alpha_bar_s) C^{-1} x``, the exact answer when the data's covariance is the noise's (and for
        any data as ``s -> 1``), so the network learns only how the data differ from the noise process (as EDM's
        skip connection)."""
        if self.conditional:
            entries = p.entries.to(x.dtype)
            x = x * entries
            z = self.denoiser(x, p.t, s, p.mask, entries, p.cond_x, p.cond.to(x.dtype))
            if self.skip:
                # E[eps | x_s] for x_0 ~ N(m, v Sigma) per channel, m the conditioning's linear interpolation (0
                # without it) and v a learned per-channel variance: sqrt(1 - a) (x_s - sqrt(a) m) / (a v + 1 - a)
                # (v = 1, m = 0: the unconditional skip below); the network starts from this Gaussian imputation
                # around the interpolation and learns how the data depart from it
                a = self.schedule.alpha_bar(s)[:, None, None]
                m = linear_fill(p.cond_x, p.cond, p.t) if self.interpolation else torch.zeros_like(x)
                v = self.prior_log_var.exp()
                prior = (1 - a).sqrt() * (x - a.sqrt() * m) / (a * v + 1 - a) * entries
                z = _solve(p.chol, z + prior) if self.output is Prediction.NOISE else z + _solve(p.chol, prior)
            elif self.output is Prediction.NOISE:
                z = _solve(p.chol, z)
            return z * p.entries
        if self.partial:
            # an entry outside the diffusion reaches the denoiser as 0 with its flag 0, never as a value
            entries = p.entries.to(x.dtype)
            x = x * entries
            z = self.denoiser(x, p.t, s, p.rows, entries)
        else:
            z = self.denoiser(x, p.t, s, p.mask)
        noise_std = (-torch.expm1(-self.schedule.integral(s))).sqrt()[:, None, None]
        if self.output is Prediction.NOISE:
            # the network's output is eps_hat = C z_hat: for data x_0 ~ N(m(t), c Sigma) (the noise's shape, any
            # scale and mean) the best eps_hat is a function of each row alone (x_i, t_i, s), whereas the best
            # z_hat is C^{-1} of it, a grid-dependent difference of neighbours that a row-wise network must
            # build by attention
            if self.skip:
                z = z + noise_std * x
            z = _solve(p.chol, z)
        elif self.skip:
            z = z + noise_std * _solve(p.chol, x)
        return z * p.entries

    def diffuse(self, x0: Tensor, chol: Tensor, mask: Tensor, s: Tensor,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """The forward marginal: ``(x_s, z)`` with ``x_s = sqrt(alpha_bar_s) x0 + sqrt(1 - alpha_bar_s) C z``,
        ``z ~ N(0, I)`` white (0 on padding rows, or outside the entries); ``x0 [B, L, D]``, ``chol [B, L, L]``
        (or ``[B, D, L, L]``), ``mask`` the rows ``[B, L]`` or the entries ``[B, L, D]``, ``s [B]``."""
        m = mask if mask.dim() == 3 else mask[..., None]
        z = torch.randn(x0.shape, dtype=x0.dtype, device=x0.device, generator=generator) * m
        a = self.schedule.alpha_bar(s)[:, None, None]
        return (a.sqrt() * x0 + (1 - a).sqrt() * _mul(chol, z)) * m, z

    # ------------------------------------------------------------------ training
    def objective(self, batch: SeriesBatch, observed: Tensor | None = None, target: Tensor | None = None) -> Tensor:
        """``[B]`` minus the denoising loss ``sum_rows |z - z_hat|^2`` at one random diffusion time per series
        (``kind="ddpm"``: a step ``k ~ U{1..K}``, ``s = k / K``; ``"sde"``: ``s ~ U(eps, 1]``). Differentiable.
        ``missing="refuse"``: refuses missing values (a density of whole series). ``missing="observed"``: the
        diffusion and the loss live on the observed entries only (``observed [B, L, D]``, default: the
        non-NaN entries of existing rows; an entry given as observed must hold a value), so the value of an
        entry outside them never changes the loss. ``missing="conditional"``: the diffusion and the loss live on
        ``target [B, L, D]`` (observed entries; default: CSDI's random strategy, see :meth:`random_targets`), the
        other observed entries are the denoiser's conditioning input, and an entry that is neither never
        changes the loss."""
        entries = None
        cond = None
        if target is not None and not self.conditional:
            raise ValueError("objective(target=...) needs a model built with missing='conditional'")
        if self.conditional:
            has = self._observed_entries(batch, observed, "objective")
            if target is None:
                target = self.random_targets(has)
            else:
                target = torch.as_tensor(target, device=has.device)
                if target.dtype is not torch.bool or tuple(target.shape) != tuple(has.shape):
                    raise ValueError(f"target must be a bool mask of the values' shape {tuple(has.shape)}, got "
                                     f"{target.dtype} {tuple(target.shape)}")
                if bool((target & ~has).any()):
                    b, row, c = (int(v) for v in torch.nonzero(target & ~has)[0])
                    raise ValueError(f"target: series {b}, row {row}, channel {c} is not an observed entry (a "
                                     "target needs its value)")
            entries, cond = target, has & ~target
        elif self.partial:
            entries = self._observed_entries(batch, observed, "objective")
        elif observed is not None:
            raise ValueError("objective(observed=...) needs a model built with missing='observed'")
        p = _Prepared(self, batch, complete=not self.partial, what="objective", entries=entries, cond=cond)
        B = p.x.shape[0]
        if self.kind is DiffusionKind.DDPM:
            s = torch.randint(1, self.num_steps + 1, (B,), device=self.device).to(self.dtype) / self.num_steps
        else:
            s = self.eps + (1 - self.eps) * torch.rand(B, dtype=self.dtype, device=self.device)
        xs, z = self.diffuse(p.x, p.chol, p.entries, s)
        z_hat = self._denoise(xs, p, s)
        return -((z_hat - z) ** 2).sum((1, 2))

    @staticmethod
    def random_targets(observed: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``[B, L, D]`` CSDI's random strategy: per series a share ``r ~ U(0, 1)`` of its observed entries
        (``observed [B, L, D]``), ``max(1, round(r n))`` of its ``n``, drawn uniformly without replacement (none
        where ``n = 0``). Draws a fixed number of variates for a given shape (values never change the draw)."""
        B = observed.shape[0]
        flat = observed.reshape(B, -1)
        n = flat.sum(1)
        r = torch.rand(B, generator=generator, device=observed.device, dtype=torch.float64)
        k = torch.where(n > 0, (r * n).round().clamp(min=1), torch.zeros_like(r)).to(n.dtype)
        u = torch.rand(flat.shape, generator=generator, device=observed.device, dtype=torch.float64)
        u = torch.where(flat, u, torch.full_like(u, 2.0))  # unobserved entries rank last
        rank = torch.argsort(torch.argsort(u, 1), 1)
        return ((rank < k[:, None]) & flat).view_as(observed)

    def _observed_entries(self, batch: SeriesBatch, observed: Tensor | None, what: str) -> Tensor:
        """The non-NaN entries of existing rows, or ``observed`` checked against them."""
        if not isinstance(batch, SeriesBatch):
            raise TypeError(f"ProcessDiffusion.{what} takes a sde.series.SeriesBatch, got {type(batch).__name__}")
        has = batch.mask[..., None] & ~torch.isnan(batch.values)
        if observed is None:
            return has
        observed = torch.as_tensor(observed, device=batch.values.device)
        if observed.dtype is not torch.bool or tuple(observed.shape) != tuple(batch.values.shape):
            raise ValueError(f"observed must be a bool mask of the values' shape {tuple(batch.values.shape)}, got "
                             f"{observed.dtype} {tuple(observed.shape)}")
        bad = observed & batch.mask[..., None] & ~has
        if bool(bad.any()):
            b, row, c = (int(v) for v in torch.nonzero(bad)[0])
            name = batch.channel_names[c] if c < len(batch.channel_names) else str(c)
            raise SeriesDataError(f"ProcessDiffusion.{what}: channel {name!r} is marked observed but is missing "
                                  "(NaN)", series=b, row=row, field="values")
        return observed & batch.mask[..., None]

    # ------------------------------------------------------------------ likelihood
    def _flow(self, x: Tensor, p: _Prepared, s: Tensor) -> Tensor:
        """Probability-flow drift ``-beta/2 x + beta/2 C z_hat / sqrt(1 - alpha_bar)`` (0 on padding rows)."""
        s_b = s.expand(x.shape[0])
        beta = self.schedule.beta(s)
        noise_std = (-torch.expm1(-self.schedule.integral(s))).sqrt()
        z_hat = self._denoise(x, p, s_b)
        return (-0.5 * beta * x + 0.5 * beta * _mul(p.chol, z_hat) / noise_std) * p.entries

    def log_likelihood(self, batch: SeriesBatch, *, rtol: float = 1e-3, atol: float = 1e-3,
                       max_rows: int = 4096) -> Tensor:
        """``[B]`` exact ``log p(x)`` of each series (nats, the data's units) through the probability-flow ODE
        from ``s = eps`` to 1 (dopri5 at ``rtol``/``atol`` on :func:`sde.solvers.solve`), with the exact
        divergence. A query: no gradients flow.

        The divergence ``sum_i df_i/dx_i`` over the ``n = L D`` coordinates comes from one backward pass on
        ``n`` copies of the batch, copy ``i`` seeded with the unit vector ``e_i`` (so its gradient's ``i``-th
        entry is ``J_ii``); ``max_rows`` bounds the copies times the series per pass. The denoiser must treat
        the series of a batch independently (the default one does)."""
        from sde.solvers import Method, solve

        with eval_mode(self), torch.no_grad():
            p = _Prepared(self, batch, complete=True, what="log_likelihood")
            B, L, D = p.x.shape
            n = L * D
            per_pass = max(1, min(n, int(max_rows) // max(B, 1)))
            basis = torch.eye(n, dtype=self.dtype, device=self.device).view(n, 1, L, D)

            def field(s: Tensor, y: Tensor) -> Tensor:
                x = y[:, :n].view(B, L, D)
                div = torch.zeros(B, dtype=self.dtype, device=self.device)
                drift = None
                for lo in range(0, n, per_pass):
                    k = min(per_pass, n - lo)
                    copies = p.repeat(k)
                    e = basis[lo:lo + k].expand(k, B, L, D).reshape(k * B, L, D)
                    with torch.enable_grad():
                        xr = x.detach().repeat(k, 1, 1).requires_grad_(True)
                        f = self._flow(xr, copies, s)
                        (g,) = torch.autograd.grad(f, xr, e)
                    div = div + (g * e).sum((1, 2)).view(k, B).sum(0)
                    if drift is None:
                        drift = f.detach()[:B]
                return torch.cat([drift.reshape(B, n), div[:, None]], -1)

            y0 = torch.cat([p.x.reshape(B, n), torch.zeros(B, 1, dtype=self.dtype, device=self.device)], -1)
            ts = torch.tensor([self.eps, 1.0], dtype=self.dtype, device=self.device)
            y1 = solve(field, y0, ts, method=Method.DOPRI5, rtol=rtol, atol=atol).ys[:, -1]
            x1, integral = y1[:, :n].view(B, L, D), y1[:, n]
            prior = self.prior_log_density(x1, p.chol, p.mask)
            rows = p.mask.sum(1).to(self.dtype)
            return prior + integral - rows * self.channel_std.log().sum()

    def prior_log_density(self, x: Tensor, chol: Tensor, mask: Tensor) -> Tensor:
        """``[B]`` ``log N(x; 0, Sigma)`` per channel, summed, over the rows that exist (``chol = C``)."""
        white = torch.linalg.solve_triangular(chol, x, upper=False)  # C^{-1} x, [B, L, D]
        logdet = torch.where(mask, chol.diagonal(dim1=-2, dim2=-1).log(), torch.zeros_like(mask, dtype=x.dtype))
        D = x.shape[-1]
        quad = ((white * mask[..., None]) ** 2).sum((1, 2))
        return -0.5 * quad - D * logdet.sum(1) - 0.5 * D * mask.sum(1).to(x.dtype) * LOG_2PI

    @torch.no_grad()
    def score(self, data: SeriesBatch, **options: Any) -> float:
        """Mean :meth:`log_likelihood` per row (nats, higher is better); ``options`` go to it."""
        return float(self.log_likelihood(data, **options).sum()) / max(data.num_events, 1)

    # ------------------------------------------------------------------ sampling
    def _reverse(self, p: _Prepared, num_samples: int, known: Tensor | None) -> Tensor:
        """``[S, B, L, D]`` standardised samples by the reverse process from ``x_1 ~ N(0, Sigma)``; where ``known``
        (``[B, L, D]`` bool) the state is replaced at every step by the forward-noised observation (conditional
        sampling by replacement, Song et al. 2021, App. I.2)."""
        B, L, D = p.x.shape
        S = num_samples
        rep = p.repeat(S)
        chol = rep.chol
        mask3 = rep.entries
        x0_known = p.x.repeat(S, 1, 1)
        known_r = known.repeat(S, 1, 1) if known is not None else None

        def white() -> Tensor:
            return torch.randn(S * B, L, D, dtype=self.dtype, device=self.device) * mask3

        def replace(x: Tensor, s: float) -> Tensor:
            if known_r is None:
                return x
            if s <= 0:
                return torch.where(known_r, x0_known, x)
            a = math.exp(-float(self.schedule.integral(torch.tensor(s, dtype=torch.float64))))
            noisy = math.sqrt(a) * x0_known + math.sqrt(1 - a) * _mul(chol, white())
            return torch.where(known_r, noisy, x)

        x = replace(_mul(chol, white()), 1.0)
        K = self.num_steps
        n = self.sample_steps if self.sample_steps is not None else K
        if self.kind is DiffusionKind.DDPM:
            # n < K: the trained steps respaced (every ancestral step from one trained s to a lower one is exact
            # for the model's marginals, as in Nichol & Dhariwal 2021); n = K: every step
            ks = sorted({round(K * j / n) for j in range(n + 1)}, reverse=True)
            grid = [k / K for k in ks]
        else:
            grid = [1.0 - (1.0 - self.eps) * k / n for k in range(n + 1)]
        for hi, lo in zip(grid[:-1], grid[1:]):
            s = torch.full((S * B,), hi, dtype=self.dtype, device=self.device)
            z_hat = self._denoise(x, rep, s)
            eps_hat = _mul(chol, z_hat)
            a_hi = math.exp(-float(self.schedule.integral(torch.tensor(hi, dtype=torch.float64))))
            if self.kind is DiffusionKind.DDPM:
                a_lo = math.exp(-float(self.schedule.integral(torch.tensor(lo, dtype=torch.float64))))
                beta_k = 1 - a_hi / a_lo
                x0_hat = (x - math.sqrt(1 - a_hi) * eps_hat) / math.sqrt(a_hi)
                mean = (math.sqrt(a_lo) * beta_k / (1 - a_hi)) * x0_hat + \
                       (math.sqrt(a_hi / a_lo) * (1 - a_lo) / (1 - a_hi)) * x
                var = (1 - a_lo) / (1 - a_hi) * beta_k
                x = mean + (math.sqrt(var) * _mul(chol, white()) if var > 0 else 0.0)
            else:  # Euler-Maruyama on the reverse SDE, step h = hi - lo
                h = hi - lo
                beta = float(self.schedule.beta(torch.tensor(hi)))
                drift = -0.5 * beta * x + beta * eps_hat / math.sqrt(1 - a_hi)  # dx/ds = f - beta Sigma score
                x = x - drift * h + math.sqrt(beta * h) * _mul(chol, white())
            x = replace(x * mask3, lo if lo > self.eps or self.kind is DiffusionKind.DDPM else 0.0)
        return x.view(S, B, L, D)

    @torch.no_grad()
    def sample(self, times: Tensor | np.ndarray, num_samples: int = 1, seed: Seed = None) -> Tensor:
        """New series at ``times`` (``[T]``, or ``[B, T]`` one grid per series; strictly increasing, any
        times: the clock starts at each grid's first time): ``[S, T, C]`` or ``[S, B, T, C]`` in the data's units."""
        times = torch.as_tensor(times, dtype=torch.float64)
        single = times.dim() == 1
        grid = times[None] if single else times
        if grid.dim() != 2 or grid.shape[1] < 1:
            raise ValueError(f"times must be [T] or [B, T], got {tuple(times.shape)}")
        if not bool(torch.isfinite(grid).all()) or bool((grid.diff(dim=1) <= 0).any()):
            raise ValueError("times must be finite and strictly increasing along each grid")
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        nan = torch.full((*grid.shape, self.num_channels), float("nan"), dtype=torch.float64)
        batch = SeriesBatch(grid, nan, torch.ones(grid.shape, dtype=torch.bool), validate=False)
        with eval_mode(self), seeded(seed, self.device):
            p = _Prepared(self, batch, complete=False, what="sample")
            x = self._reverse(p, int(num_samples), None)
        out = self._to_data(x)
        return out[:, 0] if single else out

    def _to_data(self, x: Tensor) -> Tensor:
        return x.to(torch.float64) * self.channel_std.to(torch.float64) + self.channel_mean.to(torch.float64)

    @torch.no_grad()
    def impute(self, batch: SeriesBatch, num_samples: int = 16, seed: Seed = 0, *, where: Tensor | None = None,
               max_elements: int = 2**25) -> Tensor:
        """``[S, B, L, C]`` conditional samples of the batch's missing values (NaN) given its observed ones, in
        the data's units (observed values returned as they are; padding rows NaN). Rows with every channel NaN
        at new times make it a forecast or an interpolation. Approximate: the reverse process with the observed
        entries replaced by their forward-noised values at each step (Song et al. 2021, App. I.2; the
        replacement conditioning of RePaint without its resampling).

        ``where [B, L, C]`` (bool; ``missing="observed"`` models only): the missing entries to sample; the
        diffusion then lives on the observed entries and these (each channel's process at its own times), and
        every other missing entry comes back NaN. Default: every missing entry of every row.
        ``missing="conditional"``: exact sampling of the model's conditional (no replacement): the reverse
        process over the queried missing entries (``where``, default all) alone, the observed ones the
        denoiser's conditioning input; the cost no longer grows with how many entries are queried. ``max_elements``
        bounds the samples times the noise factors' size per pass (series are imputed in chunks; the draws
        then depend on it)."""
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if not isinstance(batch, SeriesBatch):
            raise TypeError(f"ProcessDiffusion.impute takes a sde.series.SeriesBatch, got {type(batch).__name__}")
        S = int(num_samples)
        entries = None
        if where is not None:
            if not self.partial:
                raise ValueError("impute(where=...) needs a model built with missing='observed' (a model of whole "
                                 "series imputes every missing entry)")
            where = torch.as_tensor(where, device=batch.values.device)
            if where.dtype is not torch.bool or tuple(where.shape) != tuple(batch.values.shape):
                raise ValueError(f"where must be a bool mask of the values' shape {tuple(batch.values.shape)}, got "
                                 f"{where.dtype} {tuple(where.shape)}")
            entries = (where | ~torch.isnan(batch.values)) & batch.mask[..., None]
        if self.conditional:  # the diffusion lives on the queried missing entries alone, given the observed ones
            missing = torch.isnan(batch.values) & batch.mask[..., None]
            entries = missing if where is None else where & missing
        B, L, D = batch.values.shape
        lengths = batch.mask.sum(1).cpu()
        # series of similar length share a pass (less padding: the cost grows with the square of the rows)
        order = torch.argsort(lengths, stable=True).numpy() if B > 1 else np.arange(B)
        chunks: list[np.ndarray] = []
        for b in order:  # ascending lengths: series b is the longest of the chunk it joins
            size = S * max(int(lengths[b]), 1) ** 2 * (D if entries is not None else 1)
            if chunks and (len(chunks[-1]) + 1) * size <= int(max_elements):
                chunks[-1] = np.append(chunks[-1], b)
            else:
                chunks.append(np.array([b]))
        out_all = torch.full((S, B, L, D), float("nan"), dtype=torch.float64, device=self.device)
        with eval_mode(self), seeded(seed, self.device):
            for index in chunks:
                part = batch if len(index) == B and bool((index == np.arange(B)).all()) else batch[index]
                rows = part.values.shape[1]
                part_entries = None if entries is None else entries[index][:, :rows]
                if self.conditional:
                    p = _Prepared(self, part, complete=False, what="impute", entries=part_entries,
                                  cond=~torch.isnan(part.values))
                    x = self._reverse(p, S, None)
                else:
                    p = _Prepared(self, part, complete=False, what="impute", entries=part_entries)
                    x = self._reverse(p, S, p.observed & p.entries)
                out = self._to_data(x)
                values = part.values.to(device=out.device, dtype=torch.float64)
                out = torch.where(p.observed.to(out.device), values, out)
                keep = p.entries.to(out.device) | p.observed.to(out.device)
                out_all[:, torch.as_tensor(index), :rows] = torch.where(keep, out, torch.full_like(out, float("nan")))
        return out_all

    @property
    def noise_std(self) -> Tensor:
        """``[C]`` zeros: the samples of :meth:`interpolate` are draws of the values themselves (no observation
        noise on top; with :meth:`interpolate` this makes the model scorable by :func:`sde.tasks.evaluate`)."""
        return torch.zeros(self.num_channels, dtype=torch.float64, device=self.device)

    @torch.no_grad()
    def interpolate(self, batch: SeriesBatch, times: Tensor, num_samples: int = 16, seed: Seed = None) -> Tensor:
        """``[S, B, L, C]`` samples of every value of ``batch``'s rows at ``times [B, L]`` (the :mod:`sde.tasks`
        interface of the latent models): :meth:`impute` of the batch with its rows moved to ``times``. A row
        holding an observed value must keep its time; a row without one may move (the task asks rows before a
        series' first observation at that first time). ``seed=None``: the caller's random stream."""
        times = torch.as_tensor(times, dtype=batch.time.dtype, device=batch.time.device)
        if tuple(times.shape) != tuple(batch.time.shape):
            raise ValueError(f"times must be [B, L] = {tuple(batch.time.shape)}, got {tuple(times.shape)}")
        holds = (batch.mask[..., None] & ~torch.isnan(batch.values)).any(-1)
        moved = holds & (times != batch.time)
        if bool(moved.any()):
            b, row = (int(v) for v in torch.nonzero(moved)[0])
            raise ValueError(f"series {b}, row {row}: times moves a row that holds an observed value "
                             f"({float(batch.time[b, row])} -> {float(times[b, row])})")
        if not torch.equal(times, batch.time):
            batch = SeriesBatch(times, batch.values, batch.mask, channel_names=batch.channel_names, ids=batch.ids,
                                validate=False)
        return self.impute(batch, num_samples, seed)

    @torch.no_grad()
    def predict(self, batch: SeriesBatch, num_samples: int = 16, seed: Seed = 0) -> GaussianPrediction:
        """Mean and std ``[B, L, C]`` of :meth:`impute`'s samples (observed entries: the value, std 0)."""
        x = self.impute(batch, num_samples, seed)
        return GaussianPrediction(x.mean(0), x.std(0, unbiased=False))


def plot_samples(model: ProcessDiffusion, data: SeriesBatch, num_samples: int = 8, *, channel: int = 0,
                 seed: int = 0) -> Figure:
    """Generated paths beside real ones: left ``num_samples`` series of ``data``, right as many samples of
    ``model`` at the first series' times (one ``channel``). Returns the Figure."""
    import matplotlib.pyplot as plt

    if not 0 <= channel < model.num_channels:
        raise ValueError(f"channel must be in [0, {model.num_channels}), got {channel}")
    k = min(int(num_samples), len(data))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for b in range(k):
        rows = data.mask[b]
        axes[0].plot(data.time[b, rows].cpu().numpy(), data.values[b, rows, channel].cpu().numpy(), lw=1)
    t = data.time[0, data.mask[0]].cpu()
    samples = model.sample(t, num_samples=k, seed=seed)[..., channel].cpu().numpy()
    for path in samples:
        axes[1].plot(t.numpy(), path, lw=1)
    name = data.channel_names[channel] if channel < len(data.channel_names) else f"channel {channel}"
    axes[0].set_title(f"real ({name})")
    axes[1].set_title(f"generated ({model.noise.value} noise, {model.kind.value})")
    for ax in axes:
        ax.set_xlabel("time")
    fig.tight_layout()
    return fig


def plot_imputation(model: ProcessDiffusion, batch: SeriesBatch, *, series: int = 0, channel: int = 0,
                    num_samples: int = 16, held_out: Tensor | None = None, seed: int = 0) -> Figure:
    """One series' imputation: its observed values (dots), the samples of :meth:`ProcessDiffusion.impute` at
    its missing entries (faint) with their mean, and, where ``held_out [B, L, C]`` and the true values are
    given (``batch`` holding them there, as the un-hidden batch), those values as crosses. Returns the Figure."""
    import matplotlib.pyplot as plt

    if not 0 <= channel < model.num_channels:
        raise ValueError(f"channel must be in [0, {model.num_channels}), got {channel}")
    if not 0 <= series < len(batch):
        raise ValueError(f"series must be in [0, {len(batch)}), got {series}")
    one = batch[[series]]
    rows = one.mask[0]
    t = one.time[0, rows].cpu().numpy()
    values = one.values[0, rows, channel].cpu()
    hidden = None if held_out is None else held_out[series, : one.values.shape[1], channel][rows].cpu()
    shown = one
    if hidden is not None:  # hide the held-out values from the model, keep them for the picture
        v = one.values.clone()
        v[0, torch.nonzero(rows).flatten()[hidden], channel] = float("nan")
        shown = SeriesBatch(one.time, v, one.mask, channel_names=one.channel_names, validate=False)
    draws = model.impute(shown, num_samples=num_samples, seed=seed)[:, 0, rows, channel].cpu().numpy()
    seen = ~torch.isnan(shown.values[0, rows, channel]).cpu().numpy()
    fig, ax = plt.subplots(figsize=(8, 3))
    for path in draws:
        ax.plot(t, path, color="tab:blue", alpha=0.15, lw=0.8)
    ax.plot(t, draws.mean(0), color="tab:blue", lw=1.5, label="imputed mean")
    ax.plot(t[seen], values.numpy()[seen], "o", color="black", ms=3, label="observed")
    if hidden is not None and bool(hidden.any()):
        ax.plot(t[hidden.numpy()], values.numpy()[hidden.numpy()], "x", color="tab:red", ms=6, label="held out")
    name = batch.channel_names[channel] if channel < len(batch.channel_names) else f"channel {channel}"
    ax.set_title(f"{name}: imputation by {model.noise.value}-noise process diffusion")
    ax.set_xlabel("time")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig
