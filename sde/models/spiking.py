"""The torch twin of :class:`sde.jax.EventSDE`: a stochastic spiking network as an event SDE, spike times
differentiable by autograd (Holberg & Salvi, NeurIPS 2024).

```python
net = SpikingSDE(2, mu=[1.3, 1.2], sigma=0.3, weights=[[0, .4], [-.3, 0]])
path = net.brownian(t1=3.0, num_samples=8, generator=torch.Generator().manual_seed(0))
train = net(3.0, max_spikes=6, path=path, generator=torch.Generator().manual_seed(1))
train.times.sum().backward()          # d(spike times) / d(parameters), exact for the discretised system
```

Same equations, states and parameters as the JAX twin (see :mod:`sde.jax.events`). The scheme: fixed steps
on the grid ``k dt`` (Euler, or Heun: second order for the drift, exact for the additive noise), the Brownian
path piecewise linear on that grid (stored increments, :meth:`SpikingSDE.brownian`). In each step every
neuron's event condition (``s``, or ``v - theta`` in threshold mode) is checked at the step's end; where it
crossed 0, the spike time is the root of its linear interpolation (the dense output diffrax's Euler uses), a
closed-form differentiable expression, so autograd gives the implicit-function derivative of the spike time.
The state at the spike is the interpolation; it resets there and the rest of the step is integrated from the
spike time. At most one spike per sample per step (the earliest crossing): a second neuron crossing in the same
step spikes at the next step's check. The JAX twin instead restarts its solve at each spike and so can fire
twice in one grid cell; with steps well below the inter-spike times the two agree.

Everything is batched over samples (``[B, ...]``); the Python loop is over grid steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["SpikeTrains", "SpikingSDE", "plot_spike_raster"]

MODES = ("intensity", "threshold")


@dataclass
class SpikeTrains:
    """``times [B, K]`` in increasing order, padded with ``inf``; ``neurons [B, K]`` (``-1`` on padding);
    ``truncated [B]`` where ``max_spikes`` ran out before ``t1``."""

    times: Tensor
    neurons: Tensor
    truncated: Tensor
    t0: float
    t1: float
    num_neurons: int


def _vector(value: Any, n: int, name: str, dtype: torch.dtype) -> Tensor:
    t = torch.as_tensor(value, dtype=dtype)
    if t.ndim == 0:
        return t.expand(n).clone()
    if t.shape != (n,):
        raise ValueError(f"SpikingSDE: {name} must be a scalar or have shape ({n},), got {tuple(t.shape)}")
    return t.clone()


class SpikingSDE(nn.Module):
    """A network of stochastic leaky integrate-and-fire neurons with event-triggered resets; the arguments are
    :class:`sde.jax.EventSDE`'s (``solver`` ``"euler"`` or ``"heun"``; ``sigma=None`` is no noise). ``mu``,
    ``tau``, ``sigma``, ``theta``, ``v_reset``, ``weights``, ``tau_syn``, ``rate``, ``beta`` are parameters."""

    def __init__(self, num_neurons: int = 1, *, mu: Any = 1.5, tau: Any = 1.0, sigma: Any = None,
                 theta: Any = 1.0, v_reset: Any = 0.0, weights: Any = None, tau_syn: Any = 1.0, rate: Any = 1.0,
                 beta: Any = 5.0, mode: str | Sequence[str] = "intensity", intensity: str = "exp",
                 refractory: float = 0.0, dt0: float = 1e-2, solver: str = "euler",
                 dtype: torch.dtype = torch.float64):
        super().__init__()
        n = int(num_neurons)
        if n < 1:
            raise ValueError(f"SpikingSDE: num_neurons must be at least 1, got {num_neurons}")
        if intensity not in ("exp", "softplus"):
            raise ValueError(f"SpikingSDE: intensity must be 'exp' or 'softplus', got {intensity!r}")
        if solver not in ("euler", "heun"):
            raise ValueError(f"SpikingSDE: solver must be 'euler' or 'heun', got {solver!r}")
        if not (dt0 > 0 and math.isfinite(dt0)):
            raise ValueError(f"SpikingSDE: dt0 must be positive and finite, got {dt0}")
        if not refractory >= 0:
            raise ValueError(f"SpikingSDE: refractory must be >= 0, got {refractory}")
        modes = [mode] * n if isinstance(mode, str) else list(mode)
        if len(modes) != n or any(m not in MODES for m in modes):
            raise ValueError(f"SpikingSDE: mode must be one of {MODES} or a list of them per neuron ({n}), "
                             f"got {mode!r}")
        self.num_neurons, self.intensity, self.refractory = n, intensity, float(refractory)
        self.dt0, self.solver = float(dt0), solver
        self.mu = nn.Parameter(_vector(mu, n, "mu", dtype))
        self.tau = nn.Parameter(_vector(tau, n, "tau", dtype))
        self.sigma = None if sigma is None else nn.Parameter(_vector(sigma, n, "sigma", dtype))
        self.theta = nn.Parameter(_vector(theta, n, "theta", dtype))
        self.v_reset = nn.Parameter(_vector(v_reset, n, "v_reset", dtype))
        w = torch.zeros(n, n, dtype=dtype) if weights is None else torch.as_tensor(weights, dtype=dtype).clone()
        if w.shape != (n, n):
            raise ValueError(f"SpikingSDE: weights must have shape ({n}, {n}), got {tuple(w.shape)}")
        self.weights = nn.Parameter(w)
        self.tau_syn = nn.Parameter(_vector(tau_syn, n, "tau_syn", dtype))
        self.rate = nn.Parameter(_vector(rate, n, "rate", dtype))
        self.beta = nn.Parameter(_vector(beta, n, "beta", dtype))
        self.register_buffer("hard", torch.tensor([m == "threshold" for m in modes]))

    # ----------------------------------------------------------------- equations
    def lam(self, v: Tensor) -> Tensor:
        x = self.beta * (v - self.theta)
        return self.rate * (torch.exp(x) if self.intensity == "exp" else nn.functional.softplus(x))

    def _drift(self, y: Tensor, current: Tensor | None) -> Tensor:
        v, i, _ = y.unbind(-2)
        drive = self.mu + i if current is None else self.mu + i + current
        ds = torch.where(self.hard, torch.zeros_like(v), self.lam(v))
        return torch.stack([(drive - v) / self.tau, -i / self.tau_syn, ds], dim=-2)

    def _conditions(self, y: Tensor) -> Tensor:
        return torch.where(self.hard, y[..., 0, :] - self.theta, y[..., 2, :])

    def _noise(self, dw: Tensor) -> Tensor:
        zero = torch.zeros_like(dw)
        return torch.stack([self.sigma * dw, zero, zero], dim=-2)

    def _step(self, y: Tensor, h: Tensor, dw: Tensor | None) -> Tensor:
        """One step of length ``h [B, 1, 1]`` with Brownian increment ``dw [B, N]`` (None: no noise)."""
        noise = 0.0 if dw is None else self._noise(dw)
        f0 = self._drift(y, None)
        end = y + f0 * h + noise
        if self.solver == "heun":
            end = y + 0.5 * (f0 + self._drift(end, None)) * h + noise
        return end

    # ----------------------------------------------------------------- simulation
    def brownian(self, t1: float, num_samples: int, *, t0: float = 0.0,
                 generator: torch.Generator | None = None) -> Tensor:
        """Brownian increments ``[B, steps, N]`` on the grid ``t0 + k dt0``: the fixed path to pass as ``path``
        (the same tensor gives the same path, for finite differences)."""
        steps = max(1, math.ceil((t1 - t0) / self.dt0 - 1e-9))
        return torch.randn(num_samples, steps, self.num_neurons, generator=generator,
                           dtype=self.mu.dtype) * math.sqrt(self.dt0)

    def spike_time_derivative(self, t1: float, parameter: str = "mu", direction: Tensor | None = None,
                              **kwargs: Any) -> tuple[SpikeTrains, Tensor]:
        """The trains (times detached) and ``d times / d parameter`` along ``direction`` (default all ones) by
        forward-mode autograd: one simulation for all spikes (reverse mode would need one backward pass per
        spike). ``kwargs`` as :meth:`forward`; for pictures such as :func:`plot_spike_raster`."""
        import torch.autograd.forward_ad as fwAD
        from torch.func import functional_call

        params = {name: p.detach() for name, p in self.named_parameters()}
        if parameter not in params:
            raise ValueError(f"SpikingSDE: no parameter {parameter!r}; have {sorted(params)}")
        tangent = torch.ones_like(params[parameter]) if direction is None else torch.as_tensor(direction)
        with fwAD.dual_level():
            params[parameter] = fwAD.make_dual(params[parameter], tangent.to(params[parameter].dtype))
            train = functional_call(self, params, (t1,), kwargs)
            times, dtimes = fwAD.unpack_dual(train.times)
        dtimes = torch.zeros_like(times) if dtimes is None else torch.where(torch.isfinite(times), dtimes, 0.0)
        return SpikeTrains(times.detach(), train.neurons, train.truncated, train.t0, train.t1,
                           train.num_neurons), dtimes.detach()

    def forward(self, t1: float, *, max_spikes: int, num_samples: int = 1, t0: float = 0.0,
                path: Tensor | None = None, generator: torch.Generator | None = None,
                thresholds: Tensor | None = None, v0: Tensor | None = None) -> SpikeTrains:
        """Simulate ``num_samples`` (or ``path.shape[0]``) samples on ``[t0, t1]``, at most ``max_spikes`` spikes
        each. ``path`` the Brownian increments (:meth:`brownian`; drawn from ``generator`` if None);
        ``thresholds [B, N + max_spikes]`` the Exp(1) draws (initial ones, then one per spike; drawn if None)."""
        if not t1 > t0:
            raise ValueError(f"SpikingSDE: t1 must be after t0, got t0={t0}, t1={t1}")
        n, dtype = self.num_neurons, self.mu.dtype
        steps = max(1, math.ceil((t1 - t0) / self.dt0 - 1e-9))
        if self.sigma is not None and path is None:
            path = self.brownian(t1, num_samples, t0=t0, generator=generator)
        B = num_samples if path is None else path.shape[0]
        if path is not None and path.shape[1:] != (steps, n):
            raise ValueError(f"SpikingSDE: path must have shape [B, {steps}, {n}], got {tuple(path.shape)}")
        if thresholds is None:
            thresholds = torch.empty(B, n + max_spikes, dtype=dtype).exponential_(generator=generator)
        v = self.v_reset.expand(B, n) if v0 is None else torch.as_tensor(v0, dtype=dtype).expand(B, n)
        y = torch.stack([v, torch.zeros(B, n, dtype=dtype), -(thresholds[:, :n] + self.refractory)], dim=-2)
        times = torch.full((B, max_spikes), math.inf, dtype=dtype)
        neurons = torch.full((B, max_spikes), -1, dtype=torch.long)
        count = torch.zeros(B, dtype=torch.long)
        rows = torch.arange(B)
        grid = [t0 + k * self.dt0 for k in range(steps)] + [t1]
        times_list, neuron_list = [[] for _ in range(B)], [[] for _ in range(B)]
        for k in range(steps):
            h = grid[k + 1] - grid[k]
            dw = None if path is None else path[:, k] * (h / self.dt0 if k == steps - 1 else 1.0)
            hh = torch.full((B, 1, 1), h, dtype=dtype)
            end = self._step(y, hh, dw)
            c0, c1 = self._conditions(y), self._conditions(end)
            crossed = (c0 < 0) & (c1 >= 0)
            # the fraction of the step at which each crossing neuron's linear interpolation reaches 0
            frac = torch.where(crossed, -c0 / torch.where(crossed, c1 - c0, torch.ones_like(c1)),
                               torch.full_like(c0, math.inf))
            first, who = frac.min(-1)
            fire = torch.isfinite(first) & (count < max_spikes)
            if not bool(fire.any()):
                y = end
                continue
            u = torch.where(fire, first, torch.zeros_like(first))[:, None, None]
            at = y + u * (end - y)                                   # the state at the spike
            idx = (rows, who)
            new_threshold = thresholds[rows, (n + count).clamp(max=n + max_spikes - 1)] + self.refractory
            reset = at.clone()
            reset[:, 0, :] = torch.where(nn.functional.one_hot(who, n).bool(), self.v_reset[who][:, None],
                                         at[:, 0, :])
            reset[:, 2, :] = torch.where(nn.functional.one_hot(who, n).bool(), -new_threshold[:, None],
                                         at[:, 2, :])
            reset[:, 1, :] = at[:, 1, :] + self.weights[who]
            # the rest of the step from the spike time, with the rest of the (linear) Brownian increment
            rest = hh * (1 - u)
            after = self._step(reset, rest, None if dw is None else dw * (1 - u[:, :, 0]))
            y = torch.where(fire[:, None, None], after, end)
            t_spike = grid[k] + first * h
            for b in torch.nonzero(fire).flatten().tolist():
                times_list[b].append(t_spike[b])
                neuron_list[b].append(int(idx[1][b]))
            count = count + fire.long()
        # assemble with autograd intact (spike times are tensors from the graph)
        out_times = []
        for b in range(B):
            row = times_list[b] + [times.new_tensor(math.inf)] * (max_spikes - len(times_list[b]))
            out_times.append(torch.stack(row))
            neurons[b, : len(neuron_list[b])] = torch.tensor(neuron_list[b], dtype=torch.long)
        truncated = count >= max_spikes
        return SpikeTrains(times=torch.stack(out_times), neurons=neurons, truncated=truncated, t0=float(t0),
                           t1=float(t1), num_neurons=n)


def _numpy(x: Any) -> np.ndarray:
    """A torch tensor (detached), a JAX or NumPy array as NumPy."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


# --------------------------------------------------------------------------- picture
def plot_spike_raster(train: Any, grads: Any = None, *, ax: Any = None, title: str | None = None) -> Any:
    """Spike raster of a :class:`SpikeTrains` or a :class:`sde.jax.events.SpikeTrain` (one row per neuron, or
    per sample for a batch of one-neuron trains) and, if ``grads`` (same shape as ``train.times``: e.g.
    ``d t_k / d mu``) is given, each spike's gradient as a horizontal arrow of that length and a colour, so one
    sees which way each spike moves. Returns the Figure."""
    import matplotlib.pyplot as plt

    times = _numpy(train.times).astype(float)
    neurons = _numpy(train.neurons)
    if times.ndim == 1:
        rows = neurons.astype(float)
        ylabel = "neuron"
    elif times.ndim == 2 and train.num_neurons == 1:
        rows = np.broadcast_to(np.arange(times.shape[0])[:, None], times.shape).astype(float)
        ylabel = "sample"
    elif times.ndim == 2:
        # samples stacked, each with its neurons
        rows = np.arange(times.shape[0])[:, None] * (train.num_neurons + 1) + neurons
        ylabel = "sample x neuron"
    else:
        raise ValueError(f"plot_spike_raster: times must be [K] or [B, K], got shape {times.shape}")
    keep = np.isfinite(times)
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 3.2))
    else:
        fig = ax.figure
    ax.scatter(times[keep], rows[keep], marker="|", s=120, color="black", linewidths=1.2, label="spike")
    if grads is not None:
        g = np.broadcast_to(_numpy(grads).astype(float), times.shape)
        ok = keep & np.isfinite(g)
        if ok.any():
            span = max(train.t1 - train.t0, 1e-12)
            biggest = max(np.abs(g[ok]).max(), 1e-12)
            scale = 0.08 * span / biggest      # the longest arrow is 8% of the time axis
            q = ax.quiver(times[ok], rows[ok] + 0.25, g[ok] * scale, np.zeros(ok.sum()), g[ok], cmap="coolwarm",
                          angles="xy", scale_units="xy", scale=1.0, width=0.004)
            fig.colorbar(q, ax=ax, label="d t_k / d parameter")
    ax.set_xlim(train.t0, train.t1)
    ax.set_xlabel("time")
    ax.set_ylabel(ylabel)
    ax.set_title(title or "spike raster" + (" with spike-time gradients" if grads is not None else ""))
    return fig
