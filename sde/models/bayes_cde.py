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
The start carries no KL (theirs is multiplied by zero too). The paper's encoder-decoder for treatment
plans is a use of this model on a treatment simulator, not a different model; here the model is the
classifier / regressor / forecaster of the other series models.

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
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from sde.models._base import eval_mode, seeded
from sde.models._posterior import check_num_samples
from sde.models.cde import FieldInit, NeuralCDE
from sde.models.heads import Task
from tpp.model import Seed
from tpp.options import Interval, check_params

if TYPE_CHECKING:  # type hints only
    from sde.series import SeriesBatch

__all__ = ["BayesianNeuralCDE", "WeightSDE", "gaussian_path_kl", "ou_marginal"]


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


class WeightSDE(nn.Module):
    """The posterior SDE of the flattened weights ``w [S, P]`` (torchsde conventions: ``f``, ``g``, prior ``h``)."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, model: BayesianNeuralCDE, w0: Tensor) -> None:
        super().__init__()
        self.model, self.w0 = model, w0

    def f(self, t: Tensor, w: Tensor) -> Tensor:
        time = torch.as_tensor(t, dtype=w.dtype, device=w.device).expand(w.shape[0], 1)
        # the prior's drift plus sigma times the network's control (module docstring)
        return self.h(t, w) + self.model.weight_diffusion * self.model.weight_drift(torch.cat([w - self.w0, time], -1))

    def h(self, t: Tensor, w: Tensor) -> Tensor:
        return -self.model.prior_rate * (w - self.w0)

    def g(self, t: Tensor, w: Tensor) -> Tensor:
        return torch.full_like(w, self.model.weight_diffusion)


class _SampledField(nn.Module):
    """``f_{w(t)}(z)`` of the CDE for ``S`` weight paths at once: ``z [S*B, H] -> [S*B, H, C]``.

    The layers are those of the deterministic model's :class:`~sde.models.cde.CDEVectorField` (its
    ``net``), each ``Linear`` applied with sample ``s``'s weights at time ``t`` (linear interpolation
    of the weight path between the grid points ``grid``)."""

    def __init__(self, model: BayesianNeuralCDE, grid: Tensor, weights: Tensor) -> None:
        super().__init__()
        self.model, self.grid, self.weights = model, grid, weights  # weights [S, K, P] on grid [K]

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
        for layer in self.model.field.net:
            if isinstance(layer, nn.Linear):
                n_w, n_b = layer.weight.numel(), layer.bias.numel()
                weight = w[:, offset : offset + n_w].view(S, *layer.weight.shape)
                bias = w[:, offset + n_w : offset + n_w + n_b]
                offset += n_w + n_b
                x = torch.baddbmm(bias[:, None, :], x, weight.transpose(1, 2))
            else:
                x = layer(x)
        field = self.model.field
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
                 num_samples: int = 4, kl_weight: float = 1.0) -> None:
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

    @property
    def num_weights(self) -> int:
        """``P``: the vector field's weights, each one dimension of the weight SDE."""
        return sum(p.numel() for p in self.field.parameters())

    def weight_start(self) -> Tensor:
        """``[P]`` ``w0``: the vector field's parameters, flattened (in the autograd graph)."""
        return torch.cat([p.reshape(-1) for p in self.field.parameters()])

    @torch.no_grad()
    def initialise(self, train: SeriesBatch) -> BayesianNeuralCDE:
        """:meth:`NeuralCDE.initialise`, and the number of training series ``N`` that share the weights' KL."""
        super().initialise(train)
        self.num_train_series.fill_(max(len(train), 1))
        return self

    # ------------------------------------------------------------------ the weight paths and the states
    def weight_paths(self, end: float, step: float, num_samples: int,
                     logqp: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """``grid [K]`` (``0, step, ...`` covering ``[0, end]``), weight paths ``[S, K, P]`` drawn from the
        posterior and their path KL ``[S]`` (zeros without ``logqp``)."""
        w0 = self.weight_start()
        K = max(int(math.ceil(end / step - 1e-9)), 1) + 1
        grid = torch.arange(K, dtype=torch.float64, device=w0.device) * step
        start = w0.expand(num_samples, -1).contiguous()
        from sde.solvers import Method, solve

        sol = solve(WeightSDE(self, w0), start, grid.to(w0.dtype), method=Method.EULER, step_size=step,
                    adaptive=False, logqp=logqp, max_steps=K + 1)
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
        spread of the sampled means to the head's noise."""
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
        if self.task is Task.FORECAST:
            finite = finite & data.mask.to(finite.device)[..., None]
        return float(self.predictive_log_prob(data, S, seed).sum()) / max(int(finite.sum()), 1)

    @torch.no_grad()
    def predictive_samples(self, batch: SeriesBatch, num_samples: int | None = None, seed: Seed = 0) -> Tensor:
        """``[S, B, ...]`` what the head predicts under each of ``S`` weight paths: class probabilities
        (classification) or means (regression ``[S, B, O]``, forecast ``[S, B, L, O]``). Their spread over
        ``S`` is the epistemic part of the predictive uncertainty (zero for the deterministic CDE)."""
        S = self.num_samples if num_samples is None else check_num_samples(num_samples)
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
        return torch.logsumexp(log_lik, 0) - math.log(log_lik.shape[0])


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
