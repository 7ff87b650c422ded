"""SCOTCH: structure learning with a latent SDE whose drift respects a graph (Wang, Jennings & Gong, ICLR 2024).

The model (Sec. 4 of the paper, and its public code in microsoft/causica, ``research_experiments/scotch``):

* a graph ``G`` (``[D, D]``, ``G[i, j] = 1``: ``j`` is a parent of ``i``; self-loops and cycles allowed:
  SCOTCH needs no acyclicity, a dynamical system's graph is cyclic) with the variational posterior
  ``q(G) = prod_ij Bernoulli(sigmoid(theta_ij))`` and the sparsity prior ``p(G) = prod_ij
  Bernoulli(sigmoid(-lambda))`` (``p(G) ~ exp(-lambda |G|_1)``, the paper's Gibbs prior without a DAG term);
* the prior SDE of the latent state ``z`` (one latent per observed variable):
  ``dz_i = h_i(z * G[i, :]) dt + g_i(z_i) dW_i``: the drift of ``z_i`` reads only ``z_i``'s parents
  (:class:`MaskedDrift`, one MLP per variable with its input masked by the graph's row), the diffusion
  is diagonal (``g_i`` sees ``z_i`` only, :class:`FlooredDiffusion`);
* observations ``x_i(t) = z_i(t) + eps``, Laplace noise of a fixed scale ``noise_scale`` (standardised
  units; the paper's choice), NaN values skipped;
* a posterior SDE per series ``dz = f(z, context(t)) dt + g(z) dW`` whose drift reads a GRU run backwards
  over the observations (the paper's encoder and contextual drift), ``z(0) ~ q(z_0)``. Here ``f`` is a
  guided bridge towards the next observation, ``a * (x_next - z) / max(t_next - t, step)`` with a learned
  gain ``a`` in (0, 1) per variable (Delyon & Hu 2006), plus the contextual network, which starts at 0. The
  paper's ``f`` is the network alone; on a CPU budget the bridge keeps untrained posterior paths on the data
  over a 100-step series instead of piling up a random drift (which made the bound overflow here). The
  variational family is still a free drift, and ``h`` never enters ``f``.

The bound (Eq. 8 of the paper): for graphs ``G ~ q`` (one per series, as the paper)

    ELBO = E_q(G) E_q(z|x,G) [ sum log p(x | z) - int 1/2 |(f - h(z, G)) / g|^2 dt ]
           - KL(q(z_0) || p(z_0)) - KL(q(G) || p(G)),

the path term accumulated by the solve (``logqp=True`` of :func:`sde.solvers.solve`), the graph KL in
closed form (independent Bernoullis) and shared over the training series (each series' bound carries
``KL / num_train_series``, so the sum over the training set is the data set's bound). Gradients reach
``theta`` through hard Gumbel-softmax samples with the straight-through estimator at ``temperature``
(the paper's ``relaxed_sample``, temperature 0.25). During training the path KL is annealed linearly
from 0 to 1 over ``kl_anneal_steps`` optimizer steps (the paper's schedule); :meth:`SCOTCH.elbo` is
always the full bound.

``edge_probabilities_`` ``[D, D]`` is ``sigmoid(theta)``: entry ``[i, j]`` the posterior probability
that ``j`` is a parent of ``i``.

Clock: model time is ``(t - t_first) / time_scale`` with ``time_scale`` (default) the median gap between
consecutive observations of the training series, so a step of ``step_size = 0.5`` is half a typical gap
(the paper steps once per observation interval on its Lorenz data).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sde.models._base import seeded
from sde.models._posterior import BackwardEncoder, DiagonalDiffusion, check_num_samples, gaussian_kl, mlp, solve_fixed
from sde.models.latent import LatentSeriesModel, _Observed
from sde.solvers import Backprop, Method
from tpp.model import Seed
from tpp.options import Interval, check_params, check_size

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sde.series import SeriesBatch

__all__ = ["SCOTCH", "FlooredDiffusion", "MaskedDrift", "bernoulli_kl", "plot_graph", "straight_through_graphs"]


def bernoulli_kl(logits_q: Tensor, logit_p: float) -> Tensor:
    """``sum_ij KL(Bernoulli(sigmoid(logits_q)) || Bernoulli(sigmoid(logit_p)))`` (closed form, differentiable)."""
    q = torch.sigmoid(logits_q)
    log_q, log_1q = F.logsigmoid(logits_q), F.logsigmoid(-logits_q)
    log_p, log_1p = F.logsigmoid(torch.tensor(logit_p, dtype=logits_q.dtype)), F.logsigmoid(
        torch.tensor(-logit_p, dtype=logits_q.dtype))
    return (q * (log_q - log_p) + (1 - q) * (log_1q - log_1p)).sum()


def straight_through_graphs(logits: Tensor, n: int, temperature: float) -> Tensor:
    """``[n, D, D]`` hard 0/1 graphs drawn from ``Bernoulli(sigmoid(logits))`` whose gradient is that of
    the binary Gumbel-softmax relaxation at ``temperature`` (straight-through: Jang et al. 2017)."""
    u = torch.rand((n, *logits.shape), dtype=logits.dtype, device=logits.device).clamp(1e-10, 1 - 1e-10)
    noise = torch.log(u) - torch.log1p(-u)  # logistic = difference of two Gumbels
    soft = torch.sigmoid((logits + noise) / temperature)
    hard = (soft > 0.5).to(soft.dtype)
    return hard + (soft - soft.detach())  # exactly 0 or 1 in value (x - x == 0), the relaxed gradient


class MaskedDrift(nn.Module):
    """``h_i(z, G) = MLP_i(z * G[i, :])``: one MLP per variable, its input masked by the graph's row ``i``.

    A non-edge multiplies its input by an exact zero, so ``d h_i / d z_j = 0`` exactly when ``G[i, j] = 0``
    (what makes the graph the drift's structure). The MLPs run batched: ``[N, D]`` states and ``[N, D, D]``
    graphs (one per path) give ``[N, D]``.
    """

    def __init__(self, dim: int, hidden_size: int = 64) -> None:
        super().__init__()
        self.dim, self.hidden_size = dim, hidden_size
        self.w1 = nn.Parameter(torch.randn(dim, dim, hidden_size) / math.sqrt(dim))
        self.b1 = nn.Parameter(torch.zeros(dim, hidden_size))
        self.w2 = nn.Parameter(torch.randn(dim, hidden_size, hidden_size) / math.sqrt(hidden_size))
        self.b2 = nn.Parameter(torch.zeros(dim, hidden_size))
        self.w3 = nn.Parameter(torch.randn(dim, hidden_size) / math.sqrt(hidden_size) * 0.1)
        self.b3 = nn.Parameter(torch.zeros(dim))

    def forward(self, z: Tensor, graphs: Tensor) -> Tensor:
        masked = graphs * z[:, None, :]  # [N, i, j]: z_j as seen by variable i
        hidden = F.silu(torch.einsum("nij,ijh->nih", masked, self.w1) + self.b1)
        hidden = F.silu(torch.einsum("nih,ihk->nik", hidden, self.w2) + self.b2)
        return (hidden * self.w3).sum(-1) + self.b3


class FlooredDiffusion(DiagonalDiffusion):
    """``g_i(z_i) = floor + (1 - floor) sigmoid(MLP_i(z_i))``: diagonal (``g_i`` sees ``z_i`` only) and bounded
    away from 0, so ``u = (f - h) / g`` of the path KL stays finite when a path wanders far from the data."""

    def __init__(self, latent_size: int, hidden_size: int = 16, floor: float = 0.01) -> None:
        super().__init__(latent_size, hidden_size)
        self.floor = float(floor)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return self.floor + (1 - self.floor) * super().forward(t, z)


class _GraphPosterior(nn.Module):
    """The posterior SDE of one batch of ``N`` paths, each with its own graph, as torchsde sees it.

    ``f``: the contextual posterior drift (the context of the first observation after ``t`` and the time
    left until it); after a series' last observation ``f = h`` (nothing left to condition on, no path KL
    accrues). ``h``: the graph-masked prior drift; ``g``: the shared diagonal diffusion.
    """

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, model: SCOTCH, graphs: Tensor, context: Tensor, times: Tensor, last: Tensor, targets: Tensor,
                 seen: Tensor) -> None:
        super().__init__()
        self.model, self.graphs = model, graphs
        self.context, self.times, self.last = context, times, last  # [N, L, X], [N, L] (inf padded), [N]
        self.targets, self.seen = targets, seen  # [N, L, D] standardised values (0 where missing), observed flags
        self._cache: tuple[Tensor, Tensor, Tensor] | None = None

    def h(self, t: Tensor, z: Tensor) -> Tensor:
        if self._cache is not None and self._cache[0] is z and bool(self._cache[1] == t):
            return self._cache[2]
        prior = self.model.prior_drift(z, self.graphs)
        self._cache = (z, t, prior)
        return prior

    def f(self, t: Tensor, z: Tensor) -> Tensor:
        N, L = self.times.shape
        t_col = t.reshape(1, 1).to(self.times.dtype).expand(N, 1).contiguous()
        idx = torch.searchsorted(self.times, t_col, right=True).clamp_max(L - 1)
        ctx = self.context.gather(1, idx[..., None].expand(N, 1, self.context.shape[-1]))[:, 0]
        next_time = self.times.gather(1, idx)
        # after a series' last observation the next time is inf (padding); the drift there is the prior's
        ahead = torch.where(torch.isfinite(next_time), next_time - t_col, torch.zeros_like(t_col)).clamp_min(0)
        ahead = ahead.to(z.dtype)
        prior = self.h(t, z)
        D = z.shape[-1]
        target = self.targets.gather(1, idx[..., None].expand(N, 1, D))[:, 0]
        seen = self.seen.gather(1, idx[..., None].expand(N, 1, D))[:, 0]
        # guided bridge towards the next observation (Delyon & Hu 2006): at most the gain's share of the way
        # per Euler step, so the posterior cannot overshoot however the learned parts start
        pull = self.model.bridge_gain() * seen * (target - z) / ahead.clamp_min(self.model.step_size)
        # the paper's free posterior drift (a network of the state and the context, not of h: the prior is
        # never integrated by itself, so a prior drift too steep for the Euler step cannot blow a path up),
        # here the bridge plus a correction that starts at 0; the path KL pulls h towards f
        drift = pull + self.model.posterior_drift(torch.cat([z, ctx, ahead], -1))
        return torch.where(t_col < self.last[:, None], drift, prior)

    def g(self, t: Tensor, z: Tensor) -> Tensor:
        return self.model.diffusion(t, z)


class SCOTCH(LatentSeriesModel):
    """SCOTCH structure learning (see the module docstring) for ``num_channels`` variables.

    ``hidden_size``: width of the per-variable drift MLPs, the encoder and the posterior drift;
    ``context_size``: the encoder's context. ``sparsity``: ``lambda`` of the prior, whose edge probability
    is ``sigmoid(-lambda)``. ``temperature``: of the Gumbel-softmax graph samples. ``noise_scale``: the
    Laplace observation scale (standardised units). ``step_size``: the Euler step in model time (see the
    clock in the module docstring); ``time_unit``: data time per model time (None: the median
    observation gap of the training data, set by :meth:`initialise` into the ``time_scale`` buffer).
    ``graph_lr_scale``: the edge logits are this times the ``graph_logits`` parameter (see :meth:`logits`). ``num_samples``: posterior paths
    (and graphs) per series in :meth:`objective`. ``kl_anneal_steps``: optimizer steps of the linear path-KL
    warm-up (0: none).

    Contract: :meth:`objective` the (annealed during training) ELBO per series; :meth:`elbo` the bound;
    :meth:`score` the mean ELBO per observation row (seeded); :meth:`predict` (inherited) the predictive
    mean and std of the values at given times; ``edge_probabilities_`` the fitted graph posterior.
    """

    _constraints = {**{name: Interval(1, None, integer=True)
                       for name in ("num_channels", "hidden_size", "context_size", "num_samples")},
                    "step_size": Interval(0, None, closed="neither"),
                    "noise_scale": Interval(0, None, closed="neither"),
                    "temperature": Interval(0, None, closed="neither"),
                    "sparsity": Interval(None, None),
                    "kl_anneal_steps": Interval(0, None, integer=True),
                    "graph_lr_scale": Interval(0, None, closed="neither"),
                    "time_unit": Interval(0, None, closed="neither", none_ok=True)}

    def __init__(
        self,
        num_channels: int,
        hidden_size: int = 64,
        context_size: int = 32,
        *,
        sparsity: float = 10.0,
        temperature: float = 0.25,
        noise_scale: float = 0.1,
        num_samples: int = 1,
        step_size: float = 0.5,
        time_unit: float | None = None,
        kl_anneal_steps: int = 200,
        graph_lr_scale: float = 10.0,
        method: Method = Method.EULER,
        backprop: Backprop = Backprop.DIRECT,
    ) -> None:
        super().__init__()
        check_params(self, num_channels=num_channels, hidden_size=hidden_size, context_size=context_size,
                     num_samples=num_samples, step_size=step_size, noise_scale=noise_scale, temperature=temperature,
                     sparsity=sparsity, kl_anneal_steps=kl_anneal_steps, time_unit=time_unit,
                     graph_lr_scale=graph_lr_scale)
        D, H, X = int(num_channels), int(hidden_size), int(context_size)
        check_size(self, (max(D * D, 2 * D + 2, D + X + 1), H), f"num_channels={D}, hidden_size={H}")
        self.num_channels, self.num_samples = D, int(num_samples)
        self.sparsity, self.temperature = float(sparsity), float(temperature)
        self.noise_scale, self.step_size = float(noise_scale), float(step_size)
        self.kl_anneal_steps, self.method, self.backprop = int(kl_anneal_steps), method, backprop
        self.hidden_size, self.context_size = H, X  # kept by name: tpp.table.constructor_args rebuilds from them
        self.time_unit = None if time_unit is None else float(time_unit)
        self.graph_lr_scale = float(graph_lr_scale)
        self.graph_logits = nn.Parameter(torch.zeros(D, D))  # probability 1/2 per edge, as the paper
        self.prior_drift = MaskedDrift(D, H)
        self.diffusion = FlooredDiffusion(D)
        self.encoder = BackwardEncoder(2 * D + 2, H, X)
        self.qz0 = nn.Linear(X, 2 * D)
        self.pz0_mean = nn.Parameter(torch.zeros(D))
        self.pz0_log_std = nn.Parameter(torch.zeros(D))
        self.posterior_drift = mlp(D + X + 1, H, D, zero_last=True)
        self.raw_bridge_gain = nn.Parameter(torch.full((D,), 2.0))  # gain sigmoid(2) = 0.88 to start
        # an identity "decoder" (x = z + noise): the shared faces of LatentSeriesModel read its dtype and device
        self.decoder = nn.Linear(D, D)
        with torch.no_grad():
            self.decoder.weight.copy_(torch.eye(D))
            self.decoder.bias.zero_()
        self.decoder.requires_grad_(False)
        self._register_values(D, noise_scale, learn_noise=False)
        self.register_buffer("num_train_series", torch.tensor(1, dtype=torch.int64))
        self.register_buffer("steps_taken", torch.tensor(0, dtype=torch.int64))
        if self.time_unit is not None:
            self.time_scale.fill_(self.time_unit)

    # ------------------------------------------------------------------ set-up and the graph
    @torch.no_grad()
    def initialise(self, train: SeriesBatch) -> SCOTCH:
        """Channel means and scales, ``time_scale`` (the ``time_unit`` argument, else the median gap between
        consecutive observed rows) and the number of training series (which share the graph KL)."""
        super().initialise(train)
        if self.time_unit is not None:
            self.time_scale.fill_(self.time_unit)
        else:
            rows = train.mask & ~torch.isnan(train.values).all(-1)
            gaps = [np.diff(t.numpy()[r.numpy()]) for t, r in zip(train.time.to(torch.float64).cpu(), rows.cpu())]
            gaps = np.concatenate([g for g in gaps if g.size]) if any(g.size for g in gaps) else np.zeros(0)
            gaps = gaps[gaps > 0]
            self.time_scale.fill_(float(np.median(gaps)) if gaps.size else 1.0)
        self.num_train_series.fill_(max(len(train), 1))
        return self

    @property
    def edge_probabilities_(self) -> Tensor:
        """``[D, D]`` posterior edge probabilities ``sigmoid(theta)``: ``[i, j]`` = P(``j`` is a parent of ``i``)."""
        return torch.sigmoid(self.logits().detach()).cpu()

    def logits(self) -> Tensor:
        """``[D, D]`` the edge logits ``theta = graph_lr_scale * graph_logits``: the scale lets the one trainer's
        Adam (one learning rate) move the graph that many times faster than the networks (the paper gives
        each part its own learning rate and trains for 40,000 steps)."""
        return self.graph_lr_scale * self.graph_logits

    def graph_kl(self) -> Tensor:
        """``KL(q(G) || p(G))`` of the independent-edge posterior against the sparsity prior."""
        return bernoulli_kl(self.logits(), -self.sparsity)

    def sample_graphs(self, n: int, relaxed: bool = True) -> Tensor:
        """``[n, D, D]`` graphs from ``q(G)``: straight-through Gumbel-softmax samples (``relaxed``) or plain
        Bernoulli draws (no gradient)."""
        if relaxed:
            return straight_through_graphs(self.logits(), n, self.temperature)
        probs = torch.sigmoid(self.logits().detach()).expand(n, -1, -1)
        return torch.bernoulli(probs)

    def drift(self, z: Tensor, graphs: Tensor) -> Tensor:
        """``[N, D]`` prior drift at states ``z [N, D]`` under ``graphs [N, D, D]`` (model units)."""
        return self.prior_drift(z, graphs)

    def bridge_gain(self) -> Tensor:
        """``[D]`` in ``(0, 1)``: how far per step the posterior is pulled towards the next observation."""
        return torch.sigmoid(self.raw_bridge_gain)

    def after_step(self) -> None:
        self.steps_taken += 1

    def _kl_weight(self) -> float:
        if not self.training or self.kl_anneal_steps == 0:
            return 1.0
        return min(1.0, (int(self.steps_taken) + 1) / self.kl_anneal_steps)

    # ------------------------------------------------------------------ the posterior
    def _paths(self, obs: _Observed, extra: Tensor | None, num_samples: int, relaxed: bool,
               logqp: bool = True) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Posterior paths of ``num_samples`` graphs and paths per series: ``grid [T]``, ``ys [S*B, T, D]``,
        path KL ``[S*B]`` and ``KL(q(z_0) || p(z_0)) [B]``."""
        B, D = obs.s.shape[0], self.num_channels
        graphs = self.sample_graphs(num_samples * B, relaxed)
        context = self.encoder(obs.features(), obs.lengths)
        mean_q, log_std_q = self.qz0(context[:, 0]).chunk(2, -1)
        z0 = mean_q + log_std_q.exp() * torch.randn(num_samples, B, D, dtype=self.dtype, device=self.device)
        initial = gaussian_kl(mean_q, log_std_q, self.pz0_mean, self.pz0_log_std)
        z0 = z0.reshape(num_samples * B, D)
        parts = [obs.s[obs.keep], torch.zeros(1, dtype=self.dtype, device=self.device)]
        if extra is not None:
            parts.append(extra.reshape(-1))
        grid = torch.unique(torch.cat(parts))
        no_path = torch.zeros(z0.shape[0], dtype=self.dtype, device=self.device)
        if grid.numel() == 1:
            return grid, z0[:, None], no_path, initial
        times = torch.where(obs.keep, obs.s, torch.full_like(obs.s, math.inf))
        last = torch.where(obs.lengths > 0, obs.last, torch.zeros_like(obs.last))
        system = _GraphPosterior(self, graphs, context.repeat(num_samples, 1, 1), times.repeat(num_samples, 1),
                                 last.repeat(num_samples), obs.x.repeat(num_samples, 1, 1),
                                 obs.observed.to(self.dtype).repeat(num_samples, 1, 1))
        sol = solve_fixed(system, z0, grid, step_size=self.step_size, method=self.method, backprop=self.backprop,
                          logqp=logqp)
        return grid, sol.ys, (sol.logqp if logqp else no_path), initial

    def _reconstruction(self, obs: _Observed, grid: Tensor, ys: Tensor, num_samples: int) -> Tensor:
        """``[S, B]`` Laplace log density of the raw observed values along each path (``x = z + noise``)."""
        B = obs.s.shape[0]
        idx = torch.searchsorted(grid, obs.s.contiguous()).repeat(num_samples, 1)
        z = ys.gather(1, idx[..., None].expand(-1, -1, ys.shape[-1])).reshape(num_samples, B, *obs.x.shape[1:])
        scale = self.noise_scale
        log_px = -(obs.x - z).abs() / scale - math.log(2 * scale) - torch.log(self.channel_std)
        return torch.where(obs.observed, log_px, torch.zeros_like(log_px)).sum((2, 3))

    def _bound(self, batch: SeriesBatch, num_samples: int, kl_weight: float) -> Tensor:
        obs = _Observed(self, batch)
        B = obs.s.shape[0]
        grid, ys, path, initial = self._paths(obs, None, num_samples, relaxed=True)
        recon = self._reconstruction(obs, grid, ys, num_samples)
        bound = (recon - kl_weight * path.reshape(num_samples, B)).mean(0) - initial
        bound = bound - self.graph_kl() / self.num_train_series.to(bound.dtype)
        return torch.where(obs.lengths > 0, bound, torch.zeros_like(bound))

    # ------------------------------------------------------------------ the contract
    def elbo(self, batch: SeriesBatch, num_samples: int | None = None) -> Tensor:
        """``[B]`` ELBO per series (module docstring), ``num_samples`` graphs and paths per series (default:
        the constructor's); the graph KL is shared over the training series."""
        S = self.num_samples if num_samples is None else check_num_samples(num_samples)
        return self._bound(batch, S, 1.0)

    def objective(self, batch: SeriesBatch) -> Tensor:
        """``[B]`` the training objective: the ELBO with the path KL annealed over ``kl_anneal_steps``."""
        return self._bound(batch, self.num_samples, self._kl_weight())

    @torch.no_grad()
    def score(self, data: SeriesBatch, num_samples: int = 8, seed: Seed = 0) -> float:
        """Mean ELBO per observation row (nats, higher is better), ``num_samples`` graphs and paths per series;
        ``seed`` fixes them (None: fresh noise)."""
        with seeded(seed, self.device):
            return float(self.elbo(data, num_samples).sum()) / max(data.num_events, 1)

    def _sample_values(self, obs: _Observed, rel: Tensor, num_samples: int) -> Tensor:
        """Posterior paths (graphs drawn from ``q(G)``) up to each series' last observation, the prior after it."""
        grid, ys, _, _ = self._paths(obs, rel, num_samples, relaxed=False, logqp=False)
        idx = torch.searchsorted(grid, rel.contiguous()).repeat(num_samples, 1)
        z = ys.gather(1, idx[..., None].expand(-1, -1, ys.shape[-1]))
        return z.reshape(num_samples, rel.shape[0], rel.shape[1], -1)


def plot_graph(probabilities: SCOTCH | Tensor | np.ndarray, truth: np.ndarray | Tensor | None = None, *,
               names: list[str] | tuple[str, ...] | None = None) -> Figure:
    """Heat map of the edge probabilities ``[D, D]`` (a fitted :class:`SCOTCH` or the matrix itself; row ``i``,
    column ``j``: P(``j`` is a parent of ``i``)) beside the true graph when given, its AUROC (all ``D^2``
    entries, as the paper scores) in the title. Returns the Figure."""
    import matplotlib.pyplot as plt

    probs = probabilities.edge_probabilities_ if isinstance(probabilities, SCOTCH) else probabilities
    probs = probs.detach().cpu().numpy() if isinstance(probs, Tensor) else np.asarray(probs, np.float64)
    if probs.ndim != 2 or probs.shape[0] != probs.shape[1]:
        raise ValueError(f"edge probabilities must be a square [D, D] matrix, got shape {probs.shape}")
    D = probs.shape[0]
    labels = list(names) if names is not None else [f"x{i}" for i in range(D)]
    if len(labels) != D:
        raise ValueError(f"names must hold {D} labels, got {len(labels)}")
    panels = [("posterior P(j -> i)", probs)]
    title = ""
    if truth is not None:
        from sde.structure_data import auroc

        true = truth.detach().cpu().numpy() if isinstance(truth, Tensor) else np.asarray(truth)
        if true.shape != probs.shape:
            raise ValueError(f"truth must have the shape of the probabilities {probs.shape}, got {true.shape}")
        panels.append(("true graph", true.astype(np.float64)))
        title = f"AUROC {auroc(probs, true):.3f} (off-diagonal {auroc(probs, true, include_diagonal=False):.3f})"
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (name, matrix) in zip(axes[0], panels):
        image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_title(name)
        ax.set_xticks(range(D), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(D), labels, fontsize=7)
        ax.set_xlabel("parent j")
        ax.set_ylabel("child i")
    fig.colorbar(image, ax=list(axes[0]), shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig
