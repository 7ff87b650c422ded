"""Bayesian neural CDE (Hess, Melnychuk, Frauen, Feuerriegel, ICLR 2024, "Bayesian neural controlled
differential equations for treatment effect estimation"): the neural CDE of :mod:`sde.models.cde` whose
vector-field weights follow a stochastic differential equation in weight space.

The model (one draw of the weights per Monte Carlo sample ``s``)::

    w(0) = w0                                     (the vector field's parameters, learned)
    prior      dw = -theta (w - w0) dt + sigma dB
    posterior  dw = [-theta (w - w0) + sigma v_phi(t, w - w0)] dt + sigma dB
    z(t0) = zeta(X(t0)),  dz = f_{w(t)}(z) dX(t)      (the neural CDE, weights w(t) at time t)
    y | z(T) ~ head                                   (the task's readout, :mod:`sde.models.heads`)

``v_phi`` (the paper's weight drift network) is an MLP on ``(w - w0, t)`` whose last layer starts at
zero, so the posterior starts as the prior around the deterministic CDE's weights. It gives the
posterior's departure from the prior in units of ``sigma``: Girsanov's control. Both SDEs share the
diffusion ``sigma`` (``weight_diffusion``, a hyperparameter as in the paper), so the path KL is
``KL(q || p) = E_q int 0.5 |v_phi(t, w - w0)|^2 dt``, integrated by the solver as one more state along
the weight path (torchsde's ``logqp`` channel, the paper's "extra state"). The ELBO per training series
is ``E_q[log p(y | series, w)] - KL / N`` (``N`` training series, set by :meth:`initialise`), estimated
with ``num_samples`` weight paths by the reparameterisation trick. (With the posterior drift itself as
the network's output, a prior pulling back at ``theta = 1`` and ``sigma = 0.05``, the KL of a network
that had not learned the pull was already 50 nats per series at the start on a 216-weight field, and
Adam's first steps on the drift added more.)

Differences from the paper's code, and why. The prior reverts to the learned start ``w0`` (their
prior drift is ``-w``, towards zero, which for a 2,000-weight field makes the KL of merely keeping
the weights hundreds of nats per series); with ``prior_rate=0`` it is a random walk from ``w0``, and
the prior's stationary std is ``sigma / sqrt(2 theta)`` otherwise.
The start carries no KL (theirs is multiplied by zero too). Their decoder starts from the encoder
states averaged over the Monte Carlo samples; here each sample's decoder starts from that sample's
encoder state, so the encoder's uncertainty reaches the prediction.

Treatment plans (``plan_steps = tau > 0``, the paper's encoder-decoder; ``task`` FORECAST or REGRESSION).
The last ``tau`` rows of each series are a treatment plan: the ``treatment_channels`` (default: every
channel but ``outcome_channel``) hold the planned treatments, the outcome is blank there, and the
targets ``[B, tau]`` are the outcomes at those rows. Both CDEs read the treatments as cumulative doses
(:meth:`BayesianNeuralCDE.prepare`): a dose coded as a pulse (1 on one row, 0 around it) makes the
interpolated path go up and back down, and its first-order effect on the state cancels. The encoder is the CDE above over the history (the
rows before); the decoder is a second CDE, ``dz = g_{u(t)}(z) dA(t)``, over the plan's path ``A`` (time
and the treatment channels, from the history's last row, on a clock starting there), started from the
encoder's final state, with its own weight SDE ``u(t)`` (same prior and diffusion, its own ``v_phi``) and
its path KL added to the encoder's. The head reads the decoder state at each plan row: a Gaussian with
mean and a state-dependent std (softplus), in the outcome channel's standardised units (the paper's
``pred_head``). The predictive under a plan (:meth:`BayesianNeuralCDE.predict_outcomes`) is the mixture
of the ``S`` Gaussians of ``S`` weight-path draws; its credible interval comes from the mixture's
distribution function (:func:`mixture_quantile`). :class:`MCDropoutCDE` is the paper's MC-dropout
baseline on the same encoder-decoder; :func:`plot_treatment_plans` draws the bands of several plans.
The data: :func:`sde.tumour.simulate_tumour`.

Solve. The weight SDE does not depend on ``z``, so it is solved first (Euler-Maruyama on the CDE's
step grid, :func:`sde.solvers.solve` with ``logqp``), and the CDE is then solved exactly as
:class:`~sde.models.cde.NeuralCDE` solves it (same method, step and knots) with the weights linearly
interpolated between the weight grid's points. With ``weight_diffusion -> 0`` and a zero posterior
drift the weight path is constant and the model's output is the deterministic CDE's, to rounding.

Prediction: ``predict(batch, samples)`` averages ``samples`` weight draws (probabilities; or means
with the spread of the sampled means added to the head's noise, :meth:`SeriesModel.predict`).
Uncertainty comes from the weights' diffusion: a path that drives the state harder or longer than
the training paths (out-of-distribution values, longer series) spreads the sampled states more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from sde.models._base import _replace, eval_mode, seeded
from sde.models._posterior import check_num_samples
from sde.models.cde import CDEVectorField, FieldInit, NeuralCDE
from sde.models.heads import Task
from tpp.model import Seed
from tpp.options import Interval, check_params

if TYPE_CHECKING:  # type hints only
    from sde.series import SeriesBatch

__all__ = ["BayesianNeuralCDE", "MCDropoutCDE", "OutcomePrediction", "WeightSDE", "gaussian_path_kl",
           "interval_coverage", "mixture_quantile", "ou_marginal", "plot_treatment_plans"]


def gaussian_path_kl(control: Tensor, horizon: float) -> float:
    """Closed-form path ``KL(q || p)`` on ``[0, horizon]`` for a constant control ``v = control [P]``
    (posterior drift = prior drift + ``sigma v``): ``|v|^2 T / 2``, whatever ``sigma`` and ``theta``."""
    return 0.5 * float((control.double() ** 2).sum()) * float(horizon)


def ou_marginal(control: Tensor, prior_rate: float, sigma: float, horizon: float) -> tuple[Tensor, float]:
    """Mean offset ``[P]`` and variance of ``w_T - w0`` under the posterior with a constant control ``v``:
    an Ornstein-Uhlenbeck process, ``m = sigma v (1 - e^{-theta T}) / theta``, ``s^2 = sigma^2 (1 - e^{-2 theta
    T}) / (2 theta)`` (``theta -> 0``: ``sigma v T`` and ``sigma^2 T``)."""
    th, T = float(prior_rate), float(horizon)
    gain = T if th == 0 else (1 - math.exp(-th * T)) / th
    var = sigma**2 * (T if th == 0 else (1 - math.exp(-2 * th * T)) / (2 * th))
    return sigma * control.double() * gain, var


def mixture_quantile(means: Tensor, stds: Tensor, q: float, iterations: int = 60) -> Tensor:
    """``[...]`` the ``q``-quantile of the equal-weight Gaussian mixture over axis 0 of ``means, stds [S, ...]``
    (bisection on the mixture's distribution function: exact to ``2^-iterations`` of the bracket)."""
    stds = stds.clamp(min=1e-12)
    lo = (means - 10 * stds).min(0).values
    hi = (means + 10 * stds).max(0).values
    normal = torch.distributions.Normal(means, stds)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        below = normal.cdf(mid.expand_as(means)).mean(0) < q
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / 2


def interval_coverage(lower: Tensor, upper: Tensor, truth: Tensor) -> float:
    """Share of the finite ``truth`` values inside ``[lower, upper]`` (NaN truth is not counted)."""
    finite = torch.isfinite(truth)
    inside = (truth >= lower) & (truth <= upper) & finite
    return float(inside.sum()) / max(int(finite.sum()), 1)


@dataclass
class OutcomePrediction:
    """The predictive of the outcome at the plan rows ``times [B, tau]`` (the data's units): per weight
    sample ``s`` a Gaussian ``N(means[s], stds[s]^2)`` (``[S, B, tau]``) and one outcome drawn from it
    (``samples``); ``mean`` the mixture's mean, ``lower`` / ``upper`` its central ``level`` interval."""

    times: Tensor
    samples: Tensor
    means: Tensor
    stds: Tensor
    mean: Tensor
    lower: Tensor
    upper: Tensor
    level: float

    def coverage(self, truth: Any) -> float:
        """Share of the finite outcomes ``truth [B, tau]`` inside the interval."""
        return interval_coverage(self.lower, self.upper, torch.as_tensor(truth).to(self.lower))

    @property
    def width(self) -> Tensor:
        """``[B, tau]`` the interval's width."""
        return self.upper - self.lower


class WeightSDE(nn.Module):
    """The posterior SDE of the flattened weights ``w [S, P]`` (torchsde conventions: ``f``, ``g``, prior ``h``)."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, model: BayesianNeuralCDE, w0: Tensor, drift: nn.Module | None = None) -> None:
        super().__init__()
        # drift: v_phi of this field (the encoder's ``weight_drift`` unless given, e.g. the decoder's)
        self.model, self.w0 = model, w0
        self.drift = model.weight_drift if drift is None else drift

    def f(self, t: Tensor, w: Tensor) -> Tensor:
        time = torch.as_tensor(t, dtype=w.dtype, device=w.device).expand(w.shape[0], 1)
        # the prior's drift plus sigma times the network's control (module docstring)
        return self.h(t, w) + self.model.weight_diffusion * self.drift(torch.cat([w - self.w0, time], -1))

    def h(self, t: Tensor, w: Tensor) -> Tensor:
        return -self.model.prior_rate * (w - self.w0)

    def g(self, t: Tensor, w: Tensor) -> Tensor:
        return torch.full_like(w, self.model.weight_diffusion)


class _SampledField(nn.Module):
    """``f_{w(t)}(z)`` of the CDE for ``S`` weight paths at once: ``z [S*B, H] -> [S*B, H, C]``.

    The layers are those of the deterministic model's :class:`~sde.models.cde.CDEVectorField` (its
    ``net``), each ``Linear`` applied with sample ``s``'s weights at time ``t`` (linear interpolation
    of the weight path between the grid points ``grid``)."""

    def __init__(self, model: BayesianNeuralCDE, grid: Tensor, weights: Tensor,
                 field: CDEVectorField | None = None) -> None:
        super().__init__()
        self.model, self.grid, self.weights = model, grid, weights  # weights [S, K, P] on grid [K]
        self.vector_field = model.field if field is None else field  # whose layers the weights fill

    def at(self, t: Tensor) -> Tensor:
        """``[S, P]`` the weights at time ``t``."""
        K = self.grid.numel()
        if K == 1:
            return self.weights[:, 0]
        t = torch.as_tensor(t, dtype=self.grid.dtype, device=self.grid.device).clamp(self.grid[0], self.grid[-1])
        i = int(torch.searchsorted(self.grid, t.reshape(1), right=True).clamp(1, K - 1)) - 1
        frac = ((t - self.grid[i]) / (self.grid[i + 1] - self.grid[i])).to(self.weights.dtype)
        return self.weights[:, i] + frac * (self.weights[:, i + 1] - self.weights[:, i])

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        w = self.at(t)
        S = w.shape[0]
        x = z.reshape(S, -1, z.shape[-1])
        offset = 0
        for layer in self.vector_field.net:
            if isinstance(layer, nn.Linear):
                n_w, n_b = layer.weight.numel(), layer.bias.numel()
                weight = w[:, offset : offset + n_w].view(S, *layer.weight.shape)
                bias = w[:, offset + n_w : offset + n_w + n_b]
                offset += n_w + n_b
                x = torch.baddbmm(bias[:, None, :], x, weight.transpose(1, 2))
            else:
                x = layer(x)
        field = self.vector_field
        return x.reshape(*z.shape[:-1], field.hidden_size, field.path_channels)


class BayesianNeuralCDE(NeuralCDE):
    """Neural CDE with a weight-space SDE posterior over its vector field (see the module docstring).

    Arguments beyond :class:`~sde.models.cde.NeuralCDE`'s (whose defaults it keeps, but ``num_layers=1``
    and ``hidden_size=16``: every weight of the field is a dimension of the weight SDE):
    ``weight_diffusion`` (``sigma``, the weights' noise on the model clock, where a series lasts about 1),
    ``prior_rate`` (``theta >= 0``: the prior's pull back to ``w0``; stationary prior std
    ``sigma / sqrt(2 theta)``), ``drift_width`` (hidden width of ``v_phi``), ``num_samples`` (weight paths
    per series in the ELBO and in :meth:`predict` / :meth:`score` by default), ``kl_weight`` (the KL's
    weight in the training objective only; :meth:`elbo` is always the bound).
    """

    stochastic = True
    _constraints = {"weight_diffusion": Interval(0, None, closed="neither"), "prior_rate": Interval(0, None),
                    "drift_width": Interval(1, None, integer=True), "kl_weight": Interval(0, None)}

    def __init__(self, input_channels: int, hidden_size: int = 16, output_size: int = 2,
                 task: Task = Task.CLASSIFICATION, interpolation: Any = None, *, hidden_hidden_size: int | None = None,
                 num_layers: int = 1, observation_counts: bool = False, method: Any = None,
                 step_size: float | None = None, batch_norm: bool | None = None,
                 field_init: FieldInit | str = FieldInit.AUTO, likelihood: str = "gaussian",
                 weight_diffusion: float = 0.05, prior_rate: float = 1.0, drift_width: int = 32,
                 num_samples: int = 4, kl_weight: float = 1.0, plan_steps: int = 0,
                 treatment_channels: Sequence[int] | None = None, outcome_channel: int = 0) -> None:
        super().__init__(input_channels, hidden_size, output_size, task, interpolation,
                         hidden_hidden_size=hidden_hidden_size, num_layers=num_layers,
                         observation_counts=observation_counts, method=method, step_size=step_size,
                         batch_norm=batch_norm, field_init=field_init, likelihood=likelihood)
        check_params(self, weight_diffusion=weight_diffusion, prior_rate=prior_rate, drift_width=drift_width,
                     kl_weight=kl_weight)
        self.weight_diffusion, self.prior_rate = float(weight_diffusion), float(prior_rate)
        self.drift_width, self.kl_weight = int(drift_width), float(kl_weight)
        self.num_samples = check_num_samples(num_samples)
        P = self.num_weights
        self.weight_drift = nn.Sequential(nn.Linear(P + 1, self.drift_width), nn.Tanh(),
                                          nn.Linear(self.drift_width, P))
        # the posterior starts as the prior around w0: v_phi = 0 (its last layer at zero)
        nn.init.zeros_(self.weight_drift[-1].weight)
        nn.init.zeros_(self.weight_drift[-1].bias)
        self.register_buffer("num_train_series", torch.ones((), dtype=torch.float64))
        self.plan_steps = int(plan_steps)
        if self.plan_steps != plan_steps or self.plan_steps < 0:
            raise ValueError(f"plan_steps must be an integer >= 0, got {plan_steps!r}")
        self.outcome_channel = int(outcome_channel)
        self.treatment_channels: tuple[int, ...] = ()
        if self.plan_steps:
            self._build_decoder(treatment_channels, hidden_hidden_size, num_layers)

    @property
    def num_weights(self) -> int:
        """``P``: the vector field's weights, each one dimension of the weight SDE."""
        return sum(p.numel() for p in self.field.parameters())

    def weight_start(self) -> Tensor:
        """``[P]`` ``w0``: the vector field's parameters, flattened (in the autograd graph)."""
        return torch.cat([p.reshape(-1) for p in self.field.parameters()])

    @torch.no_grad()
    def initialise(self, train: SeriesBatch) -> BayesianNeuralCDE:
        """:meth:`NeuralCDE.initialise`, and the number of training series ``N`` that share the weights' KL.
        A plan model's decoder field follows the encoder's ``field_init="auto"`` choice."""
        before = self.field.net[0].weight.detach().clone()
        super().initialise(train)
        if self.plan_steps and not torch.equal(before, self.field.net[0].weight.detach()):
            self.decoder_field.kaiming_()
        self.num_train_series.fill_(max(len(train), 1))
        return self

    # ------------------------------------------------------------------ treatment plans (plan_steps > 0)
    def _build_decoder(self, treatment_channels: Sequence[int] | None, hidden_hidden_size: int | None,
                       num_layers: int) -> None:
        """The decoder of the treatment-effect model: its vector field over the plan's path (time and the
        treatment channels), that field's weight drift ``v_phi`` and the outcome head (mean, std)."""
        if self.task is Task.CLASSIFICATION:
            raise ValueError("plan_steps > 0 predicts outcomes under treatment plans: give task='forecast' "
                             "(or 'regression'), not classification")
        C = self.input_channels
        if not 0 <= self.outcome_channel < C:
            raise ValueError(f"outcome_channel={self.outcome_channel} is not one of the {C} input channels")
        treat = (tuple(c for c in range(C) if c != self.outcome_channel) if treatment_channels is None
                 else tuple(int(c) for c in treatment_channels))
        if (not treat or len(set(treat)) != len(treat)
                or any(not 0 <= c < C or c == self.outcome_channel for c in treat)):
            raise ValueError(f"treatment_channels={treatment_channels!r}: distinct channels among the {C} inputs, "
                             f"not the outcome channel {self.outcome_channel}")
        self.treatment_channels = treat
        H = self.hidden_size
        hh = H if hidden_hidden_size is None else int(hidden_hidden_size)
        init = FieldInit.KAIMING if self.field_init is FieldInit.KAIMING else FieldInit.TORCH
        self.decoder_field = CDEVectorField(H, 1 + len(treat), hh, int(num_layers), init=init)
        P = sum(p.numel() for p in self.decoder_field.parameters())
        self.decoder_drift = nn.Sequential(nn.Linear(P + 1, self.drift_width), nn.Tanh(),
                                           nn.Linear(self.drift_width, P))
        nn.init.zeros_(self.decoder_drift[-1].weight)  # the decoder's posterior starts as its prior too
        nn.init.zeros_(self.decoder_drift[-1].bias)
        # the paper's prediction head: a Gaussian whose std depends on the state (softplus)
        self.outcome_head = nn.Linear(H, 2)

    def prepare(self, batch: SeriesBatch) -> SeriesBatch:
        """:meth:`SeriesModel.prepare`; a plan model's treatment channels become the cumulative doses given
        up to each row (unstandardised): a dose is then a step of the path, whose effect on the CDE is of
        first order, where a pulse (up one row, down the next) cancels to first order."""
        prepared = super().prepare(batch)
        if not self.plan_steps:
            return prepared
        treat = torch.tensor(self.treatment_channels, device=prepared.values.device)
        doses = batch.values.to(prepared.values).index_select(2, treat)
        doses = torch.where(prepared.mask[..., None] & torch.isfinite(doses), doses, torch.zeros_like(doses))
        cumulative = torch.where(prepared.mask[..., None], doses.cumsum(1), torch.full_like(doses, float("nan")))
        values = prepared.values.index_copy(2, treat, cumulative)
        return _replace(prepared, values=values)

    def _split_plan(self, prepared: SeriesBatch) -> tuple[SeriesBatch, SeriesBatch, Tensor]:
        """A prepared batch whose last ``plan_steps`` rows are the plan: the history (the rows before,
        padded canonically), the plan's path batch (the last history row and the plan rows, treatment
        channels only, on a clock starting at the history's end) and the history's end ``t0 [B, 1]``."""
        from sde.series import SeriesBatch

        tau = self.plan_steps
        lengths = prepared.mask.sum(1)
        short = (lengths < tau + 1).nonzero()
        if short.numel():
            b = int(short[0, 0])
            raise ValueError(f"series {b} has {int(lengths[b])} rows: a plan model (plan_steps={tau}) needs at "
                             f"least one history row followed by {tau} plan rows")
        hist_len = lengths - tau
        rows = torch.arange(prepared.mask.shape[1], device=lengths.device)
        in_history = rows[None] < hist_len[:, None]
        t0 = prepared.time.gather(1, (hist_len - 1)[:, None])
        nan = torch.full_like(prepared.values, float("nan"))
        history = _replace(prepared, time=torch.where(in_history, prepared.time, t0),
                           values=torch.where(in_history[..., None], prepared.values, nan), mask=in_history)
        idx = (hist_len - 1)[:, None] + torch.arange(tau + 1, device=lengths.device)
        treat = torch.tensor(self.treatment_channels, device=lengths.device)
        values = prepared.values.index_select(2, treat).gather(1, idx[..., None].expand(-1, -1, treat.numel()))
        plan = SeriesBatch(prepared.time.gather(1, idx) - t0, values, torch.ones_like(idx, dtype=torch.bool),
                           channel_names=tuple(prepared.channel_names[c] for c in self.treatment_channels),
                           validate=False)
        return history, plan, t0

    def _plan_states(self, prepared: SeriesBatch, num_samples: int, logqp: bool) -> tuple[Tensor, Tensor]:
        """``[S, B, tau, H]`` decoder states at the plan rows under ``S`` draws of both weight paths (the
        encoder's over the history, the decoder's over the plan, started from that sample's encoder
        state), and the two paths' KL summed ``[S]``."""
        from sde.paths import ControlPath

        history, plan, t0 = self._split_plan(prepared)
        S, B, H = num_samples, prepared.time.shape[0], self.hidden_size
        z_enc, kl = self.sampled_latent(history, t0, S, logqp)
        step = self.step(prepared)
        times = plan.time[:, 1:]
        grid, weights, kl_dec = self.weight_paths(max(float(times.max()), step), step, S, logqp, decoder=True)
        path = ControlPath.from_series(plan, interpolation=self.interpolation, time_channel=True,
                                       observation_counts=False)
        field = _SampledField(self, grid, weights, self.decoder_field)
        ys = self._solve_samples(field, z_enc[:, :, 0].reshape(S * B, H), times.repeat(S, 1), step, path, S)
        return ys.view(S, B, self.plan_steps, H), kl + kl_dec

    def _outcome(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and std ``[...]`` of the outcome (standardised like the outcome channel) at states ``z [..., H]``."""
        out = self.outcome_head(z)
        return out[..., 0], nn.functional.softplus(out[..., 1]) + 1e-3

    def _outcome_scale(self) -> tuple[Tensor, Tensor]:
        """The outcome channel's training mean and std: model units <-> the data's units."""
        o = self.outcome_channel
        return self.channel_mean[o].to(self._param.dtype), self.channel_std[o].to(self._param.dtype)

    def _plan_log_likelihood(self, prepared: SeriesBatch, num_samples: int) -> tuple[Tensor, Tensor]:
        """``[S, B]`` Gaussian log density (model units) of each series' finite plan targets ``[B, tau]``, and
        the paths' KL ``[S]``."""
        B, tau = prepared.time.shape[0], self.plan_steps
        if prepared.targets is None or tuple(prepared.targets.shape) != (B, tau):
            got = None if prepared.targets is None else tuple(prepared.targets.shape)
            raise ValueError(f"a plan model needs targets [B, plan_steps] = [{B}, {tau}] (the outcome at each "
                             f"plan row), got {got}")
        z, kl = self._plan_states(prepared, num_samples, logqp=True)
        mean, std = self._outcome(z)
        m0, s0 = self._outcome_scale()
        y = (prepared.targets.to(mean.dtype) - m0) / s0
        observed = torch.isfinite(y).expand_as(mean)
        y = torch.where(observed, y.expand_as(mean), mean.detach())  # no NaN reaches the gradient
        log_density = -0.5 * ((y - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)
        return (log_density * observed).sum(-1), kl

    def with_plan(self, history: SeriesBatch, plan: Any, times: Any = None) -> SeriesBatch:
        """``history`` with ``plan_steps`` rows appended: the treatments ``plan [B or 1, tau, n_treat]`` in the
        treatment channels (NaN elsewhere, the outcome included) at ``times`` after each series' last row
        (``[tau]`` offsets or ``[B, tau]``; default ``1, 2, ..., tau`` in the batch's time unit)."""
        from sde.series import SeriesBatch

        tau, B = self.plan_steps, len(history)
        if not tau:
            raise ValueError("with_plan is for a plan model (plan_steps > 0)")
        plan_np = np.asarray(plan.detach().cpu() if isinstance(plan, Tensor) else plan, np.float64)
        n_treat = len(self.treatment_channels)
        if plan_np.ndim != 3 or plan_np.shape[1:] != (tau, n_treat) or plan_np.shape[0] not in (1, B):
            raise ValueError(f"plan must be [B or 1, plan_steps, treatments] = [{B}, {tau}, "
                             f"{len(self.treatment_channels)}], got {plan_np.shape}")
        plan_np = np.broadcast_to(plan_np, (B, tau, plan_np.shape[2]))
        offsets = np.arange(1.0, tau + 1) if times is None else np.asarray(times, np.float64)
        offsets = np.broadcast_to(offsets, (B, tau))
        if np.any(offsets <= 0) or np.any(np.diff(offsets, axis=1) <= 0):
            raise ValueError("plan times must be increasing offsets > 0 after each series' last row")
        lengths = history.mask.sum(1).tolist()
        series = []
        for b in range(B):
            t = history.time[b, : lengths[b]].double().cpu().numpy()
            v = history.values[b, : lengths[b]].double().cpu().numpy()
            extra = np.full((tau, v.shape[1]), np.nan)
            extra[:, list(self.treatment_channels)] = plan_np[b]
            series.append((np.r_[t, t[-1] + offsets[b]], np.vstack([v, extra])))
        return SeriesBatch.from_arrays(series, channel_names=history.channel_names, seq_names=history.seq_names)

    @torch.no_grad()
    def predict_outcomes(self, history: SeriesBatch, plan: Any = None, num_samples: int | None = None, *,
                         level: float = 0.95, times: Any = None, seed: Seed = 0) -> OutcomePrediction:
        """The Monte Carlo posterior predictive of the outcome under a treatment plan (``plan_steps > 0``).

        ``history`` and ``plan [B or 1, plan_steps, treatments]`` (see :meth:`with_plan`), or ``plan=None``
        when ``history`` already ends with its plan rows (as the training series do). ``num_samples`` weight
        paths (default ``num_samples``); each gives a Gaussian of the outcome, so the predictive is their
        mixture: its ``level`` interval is found from the mixture's distribution function. In the outcome
        channel's own units."""
        if not self.plan_steps:
            raise ValueError("predict_outcomes is for a plan model (plan_steps > 0)")
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        S = self.num_samples if num_samples is None else check_num_samples(num_samples)
        batch = history if plan is None else self.with_plan(history, plan, times)
        with seeded(seed, self._param.device), eval_mode(self):
            prepared = self.prepare(batch)
            z, _ = self._plan_states(prepared, S, logqp=False)
            mean, std = self._outcome(z)
            m0, s0 = self._outcome_scale()
            means, stds = mean * s0 + m0, std * s0
            draws = means + stds * torch.randn_like(means)
        lower = mixture_quantile(means, stds, (1 - level) / 2)
        upper = mixture_quantile(means, stds, (1 + level) / 2)
        lengths = batch.mask.sum(1).to(means.device)
        idx = (lengths - self.plan_steps)[:, None] + torch.arange(self.plan_steps, device=means.device)
        return OutcomePrediction(batch.time.to(means.device).gather(1, idx), draws, means, stds, means.mean(0), lower,
                                 upper, float(level))

    # ------------------------------------------------------------------ the weight paths and the states
    def weight_paths(self, end: float, step: float, num_samples: int, logqp: bool = True,
                     decoder: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """``grid [K]`` (``0, step, ...`` covering ``[0, end]``), weight paths ``[S, K, P]`` drawn from the
        posterior and their path KL ``[S]`` (zeros without ``logqp``); ``decoder``: those of the decoder's
        vector field (treatment plans, ``plan_steps > 0``) instead of the encoder's."""
        field = self.decoder_field if decoder else self.field
        w0 = torch.cat([p.reshape(-1) for p in field.parameters()])
        K = max(int(math.ceil(end / step - 1e-9)), 1) + 1
        grid = torch.arange(K, dtype=torch.float64, device=w0.device) * step
        start = w0.expand(num_samples, -1).contiguous()
        from sde.solvers import Method, solve

        system = WeightSDE(self, w0, self.decoder_drift if decoder else None)
        sol = solve(system, start, grid.to(w0.dtype), method=Method.EULER, step_size=step, adaptive=False,
                    logqp=logqp, max_steps=K + 1)
        kl = sol.logqp if logqp else torch.zeros(num_samples, dtype=w0.dtype, device=w0.device)
        return grid.to(w0.dtype), sol.ys, kl

    def sampled_latent(self, prepared: SeriesBatch, times: Tensor, num_samples: int,
                       logqp: bool = False) -> tuple[Tensor, Tensor]:
        """``[S, B, Q, H]`` states at ``times [B, Q]`` under ``S`` weight paths, and the paths' KL ``[S]``."""
        step = self.step(prepared)
        end = max(float(times.max()), float(prepared.time.max()), step)
        grid, weights, kl = self.weight_paths(end, step, num_samples, logqp)
        path = self.control_path(prepared)
        z0 = self.initial(path.evaluate(path.interval[0]))  # [B, H]
        B, S = z0.shape[0], num_samples
        field = _SampledField(self, grid, weights)
        z0s = z0.repeat(S, 1)
        ys = self._solve_samples(field, z0s, times.repeat(S, 1), step, path, S)
        return ys.view(S, B, *ys.shape[1:]), kl

    def _solve_samples(self, field: _SampledField, z0: Tensor, times: Tensor, step: float, path: Any,
                       S: int) -> Tensor:
        """:meth:`solve_at` with the control path repeated for the ``S`` samples (sample-major batch)."""
        return self.solve_at(field, z0, times, step, control=_RepeatedPath(path, S))

    def latent(self, batch: SeriesBatch, times: Tensor) -> Tensor:
        """``[B, Q, H]`` states under one fresh draw of the weight path (see :meth:`sampled_latent`)."""
        return self.sampled_latent(batch, times, 1)[0][0]

    # ------------------------------------------------------------------ the bound
    def _readout_samples(self, prepared: SeriesBatch, num_samples: int) -> tuple[Tensor, Tensor]:
        """``[S*B, ...]`` the states the head reads under ``S`` weight paths, and the KL ``[S]``."""
        if self.task is Task.FORECAST:
            times = prepared.time
        else:
            last = (prepared.mask.sum(1) - 1).clamp(min=0)
            times = prepared.time.gather(1, last[:, None])
        z, kl = self.sampled_latent(prepared, times, num_samples, logqp=True)
        z = z.reshape(-1, *z.shape[2:])
        return (z if self.task is Task.FORECAST else z[:, 0]), kl

    def log_likelihood_samples(self, batch: SeriesBatch, num_samples: int | None = None) -> tuple[Tensor, Tensor]:
        """``[S, B]`` ``log p(y | series, w_s)`` for ``S`` weight paths drawn from the posterior, and their KL ``[S]``
        (in the model's current mode: training mode reads the readout's batch-norm from the minibatch)."""
        S = self.num_samples if num_samples is None else check_num_samples(num_samples)
        prepared = self.prepare(batch)
        if self.plan_steps:
            return self._plan_log_likelihood(prepared, S)
        z, kl = self._readout_samples(prepared, S)
        B = prepared.time.shape[0]
        if self.task is Task.CLASSIFICATION:
            if prepared.labels is None:
                raise ValueError("a classification model needs batch.labels")
            return self.head.log_likelihood(z, prepared.labels.repeat(S)).view(S, B), kl
        if prepared.targets is None:
            raise ValueError(f"a {self.task.value} model needs batch.targets")
        targets = prepared.targets.to(self._param.dtype)
        if self.task is Task.FORECAST:
            if targets.dim() != 3 or targets.shape[:2] != prepared.mask.shape:
                raise ValueError("forecast targets must be [B, L, O] aligned with the rows, "
                                 f"got {tuple(targets.shape)}")
            targets = torch.where(prepared.mask[..., None], targets, torch.full_like(targets, float("nan")))
        reps = (S,) + (1,) * (targets.dim() - 1)
        return self.head.log_likelihood(z, targets.repeat(*reps)).view(S, B), kl

    def _bound(self, batch: SeriesBatch, num_samples: int | None, kl_weight: float) -> Tensor:
        log_lik, kl = self.log_likelihood_samples(batch, num_samples)
        return log_lik.mean(0) - kl_weight * kl.mean() / self.num_train_series.to(log_lik.dtype)

    def elbo(self, batch: SeriesBatch, num_samples: int | None = None) -> Tensor:
        """``[B]`` ELBO per series: ``E_q log p(y | series, w) - KL(q || p) / N`` (a Monte Carlo estimate with
        ``num_samples`` weight paths; the readout's running statistics). A bound on ``log p(y | series)``
        of the Bayesian model, at most the expected log-likelihood and at most the log of the averaged
        predictive probability of the same draws (Jensen)."""
        with eval_mode(self):
            return self._bound(batch, num_samples, 1.0)

    def objective(self, batch: SeriesBatch) -> Tensor:
        """``[B]`` the training objective: the ELBO with the KL weighted by ``kl_weight`` (1: the ELBO)."""
        return self._bound(batch, None, self.kl_weight)

    # ------------------------------------------------------------------ queries
    @torch.no_grad()
    def predict(self, batch: SeriesBatch, samples: int | None = None) -> Any:
        """Posterior predictive averaged over ``samples`` weight paths (default ``num_samples``): class
        probabilities ``[B, n_classes]`` or a :class:`~sde.models.heads.GaussianPrediction` whose std adds the
        spread of the sampled means to the head's noise. A plan model: the outcome at the plan rows ``[B, tau]``
        (the Monte Carlo mixture's mean and std, in the outcome's units)."""
        if self.plan_steps:
            from sde.models.heads import GaussianPrediction

            pred = self.predict_outcomes(batch, None, samples, seed=None)
            var = (pred.stds**2).mean(0) + pred.means.var(0, unbiased=False)
            return GaussianPrediction(pred.mean, var.sqrt())
        return super().predict(batch, samples=self.num_samples if samples is None else check_num_samples(samples))

    @torch.no_grad()
    def score(self, data: SeriesBatch, samples: int | None = None, seed: Seed = 0) -> float:
        """One number per data set, higher is better, from the posterior predictive over ``samples`` weight
        paths (default ``num_samples``; ``seed`` fixes them, None: fresh noise). Classification: the accuracy
        of :meth:`predict`. Regression and forecast: :meth:`predictive_log_prob` (the Monte Carlo mixture's
        log density of each series' targets) summed, per observed target value (nats)."""
        S = self.num_samples if samples is None else check_num_samples(samples)
        if self.task is Task.CLASSIFICATION:
            return super().score(data, samples=S, seed=seed)
        if data.targets is None:
            raise ValueError(f"scoring a {self.task.value} model needs data.targets")
        finite = torch.isfinite(data.targets)
        if self.task is Task.FORECAST and not self.plan_steps:
            finite = finite & data.mask.to(finite.device)[..., None]
        return float(self.predictive_log_prob(data, S, seed).sum()) / max(int(finite.sum()), 1)

    @torch.no_grad()
    def predictive_samples(self, batch: SeriesBatch, num_samples: int | None = None, seed: Seed = 0) -> Tensor:
        """``[S, B, ...]`` what the head predicts under each of ``S`` weight paths: class probabilities
        (classification) or means (regression ``[S, B, O]``, forecast ``[S, B, L, O]``). Their spread over
        ``S`` is the epistemic part of the predictive uncertainty (zero for the deterministic CDE)."""
        S = self.num_samples if num_samples is None else check_num_samples(num_samples)
        if self.plan_steps:
            return self.predict_outcomes(batch, None, S, seed=seed).means
        with seeded(seed, self._param.device), eval_mode(self):
            z, _ = self._readout_samples(self.prepare(batch), S)
            out = self.head.probabilities(z) if self.task is Task.CLASSIFICATION else self.head.predict(z).mean
        return out.view(S, -1, *out.shape[1:])

    @torch.no_grad()
    def predictive_log_prob(self, batch: SeriesBatch, num_samples: int | None = None, seed: Seed = 0) -> Tensor:
        """``[B]`` ``log (1/S) sum_s p(y | series, w_s)``: the Monte Carlo posterior predictive log-probability
        of each series' label or targets (what the negative log-likelihood of a benchmark reads)."""
        with seeded(seed, self._param.device), eval_mode(self):
            log_lik, _ = self.log_likelihood_samples(batch, num_samples)
        out = torch.logsumexp(log_lik, 0) - math.log(log_lik.shape[0])
        if self.plan_steps:  # the outcome's density in its own units, not standardised ones
            count = torch.isfinite(batch.targets.to(out.device)).sum(-1)
            out = out - count * torch.log(self._outcome_scale()[1])
        return out


class _RepeatedPath:
    """A :class:`~sde.paths.ControlPath` seen ``S`` times over (sample-major batch): ``derivative`` and
    ``evaluate`` repeat the batch; the knots (where the solver must step) are the path's own."""

    def __init__(self, path: Any, S: int) -> None:
        self.path, self.S = path, S

    def __getattr__(self, name: str) -> Any:
        return getattr(self.path, name)

    def derivative(self, t: Tensor) -> Tensor:
        d = self.path.derivative(t)
        return d.repeat(self.S, *(1,) * (d.dim() - 1))

    def evaluate(self, t: Tensor) -> Tensor:
        x = self.path.evaluate(t)
        return x.repeat(self.S, *(1,) * (x.dim() - 1))


class MCDropoutCDE(BayesianNeuralCDE):
    """The MC-dropout baseline of the treatment-effect experiments (TE-CDE with dropout in the prediction
    head, the paper's ``tecde_dropout_model``): the same encoder-decoder CDE with deterministic weights
    (``w0``, no weight SDE, no KL) and dropout with probability ``dropout`` on the decoder state before the
    outcome head, kept on at prediction (``num_samples`` dropout masks are the Monte Carlo samples).

    ``aleatoric=True`` keeps the Gaussian head (mean and state-dependent std) of :class:`BayesianNeuralCDE`;
    ``aleatoric=False`` is the paper's baseline: a mean only, fitted by squared error (a unit-variance
    Gaussian on the standardised outcome), whose intervals are the spread of the dropout draws alone.
    Takes :class:`BayesianNeuralCDE`'s arguments (``plan_steps >= 1`` required)."""

    def __init__(self, input_channels: int, *args: Any, dropout: float = 0.5, aleatoric: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(input_channels, *args, **kwargs)
        if not self.plan_steps:
            raise ValueError("MCDropoutCDE is the treatment-plan baseline: give plan_steps >= 1")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.dropout, self.aleatoric = float(dropout), bool(aleatoric)

    def _plan_states(self, prepared: SeriesBatch, num_samples: int, logqp: bool) -> tuple[Tensor, Tensor]:
        from sde.paths import ControlPath

        history, plan, t0 = self._split_plan(prepared)
        encoder = self.control_path(history)
        z_enc = self.solve_at(self.field, self.initial(encoder.evaluate(encoder.interval[0])), t0,
                              self.step(prepared), control=encoder)
        path = ControlPath.from_series(plan, interpolation=self.interpolation, time_channel=True,
                                       observation_counts=False)
        z = self.solve_at(self.decoder_field, z_enc[:, 0], plan.time[:, 1:], self.step(prepared), control=path)
        z = z.expand(num_samples, *z.shape)
        kl = torch.zeros(num_samples, dtype=z.dtype, device=z.device)
        # MC dropout: the masks are drawn at prediction too (that is the method)
        return nn.functional.dropout(z, self.dropout, training=True), kl

    def _outcome(self, z: Tensor) -> tuple[Tensor, Tensor]:
        mean, std = super()._outcome(z)
        if self.aleatoric:
            return mean, std
        # the paper's point head: unit variance in training (squared error), none in the predictive
        return mean, torch.full_like(mean, 1.0 if self.training else 1e-6)


def plot_treatment_plans(model: BayesianNeuralCDE, history: SeriesBatch, plans: dict[str, Any], *,
                         series: int = 0, num_samples: int = 64, level: float = 0.95,
                         truth: dict[str, Any] | None = None, seed: Seed = 0) -> Any:
    """Outcome bands of one series under several treatment plans: the history's observed outcome, and per
    plan (``name -> [plan_steps, treatments]``) the predictive mean and its ``level`` interval over the plan
    rows (``truth``: the true outcomes per plan, drawn as markers). Returns a matplotlib Figure."""
    import matplotlib.pyplot as plt

    one = history[[series]]
    fig, ax = plt.subplots(figsize=(7, 4))
    o = model.outcome_channel
    rows = int(one.mask[0].sum())
    t, v = one.time[0, :rows].cpu().numpy(), one.values[0, :rows, o].cpu().numpy()
    seen = np.isfinite(v)
    ax.plot(t[seen], v[seen], "k.-", label="observed history")
    for k, (name, plan) in enumerate(plans.items()):
        pred = model.predict_outcomes(one, np.asarray(plan, np.float64)[None], num_samples, level=level, seed=seed)
        times = np.r_[t[-1], pred.times[0].cpu().numpy()]
        last = v[seen][-1] if seen.any() else np.nan
        color = f"C{k}"
        ax.plot(times, np.r_[last, pred.mean[0].cpu().numpy()], color=color, label=f"{name}: mean")
        ax.fill_between(times[1:], pred.lower[0].cpu().numpy(), pred.upper[0].cpu().numpy(), color=color,
                        alpha=0.25, label=f"{name}: {level:.0%} interval")
        if truth is not None and name in truth:
            ax.plot(times[1:], np.asarray(truth[name], np.float64).reshape(-1), "x", color=color,
                    label=f"{name}: true")
    ax.axvline(t[-1], color="grey", lw=0.8, ls=":")
    ax.set_xlabel("time")
    ax.set_ylabel(one.channel_names[o])
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
