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

Fitting (the paper's training): :meth:`SpikingSDE.fit` learns chosen parameters (``mu`` by default; also
``weights``, ``sigma``, ``theta``, ``v_reset``) from observed spike trains by Adam on the signature-kernel
MMD^2 (:func:`spike_train_mmd`, :func:`sde.signature.signature_mmd`) between fresh simulated trains (a new
Brownian path and new thresholds every step) and a minibatch of observed trains, both lifted to paths by
:func:`spike_path` (the torch twin of :func:`sde.jax.events.spike_path`); the gradient reaches the parameters
through the spike times by autograd. :meth:`SpikingSDE.score` is ``-MMD^2`` (higher is better, the model
contract), :meth:`SpikingSDE.mmd` the MMD^2 itself. Spike trains are read and written as CSV
(``trial,neuron,time``; :func:`read_spike_trains`, :func:`write_spike_trains`).

Why :class:`tpp.model.Model` with its own ``fit`` (an estimator in the model table, saved as ``to_dict()``)
and not the one trainer: the loss compares two *sets* of trains, not a sum over sequences, and each step
simulates fresh trains; :meth:`SpikingSDE.objective` gives each observed trial an equal share of ``-MMD^2``
so the contract's ``[B]`` shape holds. Calling the model (``forward``) simulates, as before, instead of
returning the objective: the simulator is what ``torch.func.functional_call`` differentiates
(:meth:`SpikingSDE.spike_time_derivative`).
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from tpp.events import EventDataError
from tpp.model import Model, Seed

__all__ = ["FITTABLE", "SpikeDataError", "SpikeTrains", "SpikingSDE", "as_spike_trains", "plot_fit",
           "plot_spike_raster", "read_spike_trains", "spike_path", "spike_train_mmd", "write_spike_trains"]

FITTABLE = ("mu", "weights", "sigma", "theta", "v_reset")
"""Parameters :meth:`SpikingSDE.fit` may learn: those without a sign constraint (``tau``, ``tau_syn``,
``rate`` and ``beta`` must stay positive, which plain Adam steps do not guarantee)."""

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

    def __len__(self) -> int:
        return int(self.times.shape[0])

    @property
    def counts(self) -> Tensor:
        """Spikes per trial and neuron ``[B, N]``."""
        return ((self.neurons[..., None] == torch.arange(self.num_neurons)) & torch.isfinite(self.times)[..., None]
                ).sum(-2)

    def __getitem__(self, index: Any) -> SpikeTrains:
        """The trials ``index`` (an int, slice, list or index tensor), as a batch."""
        idx = torch.as_tensor(index) if not isinstance(index, slice) else index
        if isinstance(idx, Tensor) and idx.ndim == 0:
            idx = idx[None]
        return SpikeTrains(self.times[idx], self.neurons[idx], self.truncated[idx], self.t0, self.t1,
                           self.num_neurons)

    def detach(self) -> SpikeTrains:
        """The same trains without the autograd graph."""
        return SpikeTrains(self.times.detach(), self.neurons, self.truncated, self.t0, self.t1, self.num_neurons)

    def path(self, *, time_scale: float | None = None, count_scale: float = 1.0, taper: float = 0.0) -> Tensor:
        """The trains as paths for signature kernels ``[B, 2K + 1, 1 + N]``: see :func:`spike_path`."""
        return spike_path(self.times, self.neurons, self.num_neurons, self.t0, self.t1, time_scale=time_scale,
                          count_scale=count_scale, taper=taper)


class SpikeDataError(EventDataError):
    """Bad spike-train data: the message names the file, line, trial, row and field."""

    noun: ClassVar[str] = "trial"
    position_noun: ClassVar[str] = "spike"


# --------------------------------------------------------------------------- paths and the MMD
def spike_path(times: Tensor, neurons: Tensor, num_neurons: int, t0: float, t1: float, *,
               time_scale: float | None = None, count_scale: float = 1.0, taper: float = 0.0) -> Tensor:
    """Spike trains as piecewise-linear paths ``[..., 2K + 1, 1 + N]`` (the torch twin of
    :func:`sde.jax.events.spike_path`): channel 0 is time (minus ``t0``, divided by ``time_scale``, default
    ``t1 - t0``), channels ``1..N`` the spike counts times ``count_scale``; points ``(0, 0)``, then per spike
    ``(t_k, counts before)`` and ``(t_k, counts after)``: the counting process with vertical jumps, whose
    corners move smoothly with the spike times (so a kernel of these paths is differentiable in them).
    Padding (``inf``) spikes sit at ``t1`` with unchanged counts (zero increments).

    ``taper`` (a fraction of the window, default 0: none, as the JAX twin): a spike's jump is scaled by a
    smoothstep from 1 down to 0 over the last ``taper`` of the window. Without it the path jumps when a spike
    leaves the window through ``t1`` (a count disappears), a change the spike-time gradient cannot see; with
    it the path is continuous in every spike time, so the pathwise gradient of an MMD of these paths is the
    gradient of its expectation (see :meth:`SpikingSDE.fit`)."""
    times = torch.as_tensor(times)
    neurons = torch.as_tensor(neurons, device=times.device)
    scale = float(t1 - t0) if time_scale is None else float(time_scale)
    valid = torch.isfinite(times)
    t = (torch.where(valid, times, torch.full_like(times, float(t1))) - t0) / scale
    jumps = ((neurons[..., None] == torch.arange(num_neurons, device=times.device)) & valid[..., None]).to(t.dtype)
    jumps = jumps * count_scale
    if taper > 0:
        end = float(t1 - t0) / scale  # t1 on the path's time axis
        x = ((end - t) / (taper * end)).clamp(0.0, 1.0)
        jumps = jumps * (x * x * (3.0 - 2.0 * x))[..., None]
    after = jumps.cumsum(-2)
    before = after - jumps
    first = torch.cat([t[..., None], before], dim=-1)
    second = torch.cat([t[..., None], after], dim=-1)
    pairs = torch.stack([first, second], dim=-2).reshape(*t.shape[:-1], 2 * t.shape[-1], 1 + num_neurons)
    start = torch.zeros(*t.shape[:-1], 1, 1 + num_neurons, dtype=t.dtype, device=t.device)
    return torch.cat([start, pairs], dim=-2)


def spike_train_mmd(x: SpikeTrains, y: SpikeTrains, *, time_scale: float | None = None, count_scale: float = 1.0,
                    dyadic_order: int = 1, static_kernel: str = "rbf", sigma: float = 1.0,
                    unbiased: bool = True, taper: float = 0.0) -> Tensor:
    """Squared signature-kernel MMD between two batches of spike trains (their :func:`spike_path` lifts; the
    torch twin of :func:`sde.jax.events.spike_train_mmd`), differentiable in the spike times."""
    from sde.signature import signature_mmd

    if x.num_neurons != y.num_neurons:
        raise ValueError(f"spike_train_mmd: trains of {x.num_neurons} and {y.num_neurons} neurons")
    if (x.t0, x.t1) != (y.t0, y.t1):
        raise ValueError(f"spike_train_mmd: windows differ, [{x.t0}, {x.t1}] and [{y.t0}, {y.t1}]")
    return signature_mmd(x.path(time_scale=time_scale, count_scale=count_scale, taper=taper),
                         y.path(time_scale=time_scale, count_scale=count_scale, taper=taper).to(x.times.dtype),
                         unbiased=unbiased, dyadic_order=dyadic_order, static_kernel=static_kernel, sigma=sigma)


def as_spike_trains(data: Any, dtype: torch.dtype = torch.float64) -> SpikeTrains:
    """:class:`SpikeTrains` as given, or an :class:`tpp.events.EventBatch` read as trials (one sequence a
    trial, marks the neurons, each sequence's clock shifted to start at 0). Trials must share one window
    length: the simulator runs all samples on one ``[t0, t1]``."""
    if isinstance(data, SpikeTrains):
        return data
    from tpp.events import EventBatch

    if not isinstance(data, EventBatch):
        raise TypeError(f"spike trains must be SpikeTrains or an EventBatch, got {type(data).__name__}")
    start = data.t_start.detach().cpu().to(torch.float64)
    length = data.t_end.detach().cpu().to(torch.float64) - start
    bad = torch.nonzero((length - length[0]).abs() > 1e-9 * max(float(length[0]), 1.0)).flatten()
    if bad.numel():
        b = int(bad[0])
        raise SpikeDataError(f"window length {float(length[b])!r} differs from trial 0's {float(length[0])!r}; "
                             "spike trains share one window", sequence=b, field="t_end")
    mask = data.mask.cpu()
    times = torch.where(mask, data.time.detach().cpu().to(torch.float64) - start[:, None],
                        torch.full(mask.shape, math.inf, dtype=torch.float64))
    neurons = torch.where(mask, data.mark.cpu().long(), torch.full(mask.shape, -1, dtype=torch.long))
    times, order = times.sort(-1)
    return SpikeTrains(times.to(dtype), neurons.gather(1, order), torch.zeros(len(times), dtype=torch.bool), 0.0,
                       float(length[0]), int(data.num_marks))


# --------------------------------------------------------------------------- files
HEADER = ("trial", "neuron", "time")
META = "# spike-trains"


def write_spike_trains(trains: SpikeTrains, path: str | os.PathLike) -> Path:
    """Write ``trains`` as CSV: a first line ``# spike-trains t0=.. t1=.. trials=.. neurons=..`` (so trials
    without spikes and the window survive), the header ``trial,neuron,time``, one row per spike (trial by
    trial, in time order). Times are written by ``repr`` (shortest exact form): reading back is exact.
    Written atomically (a reader never sees half a file)."""
    from tpp.io import atomic_write

    path = Path(path)
    times = trains.times.detach().cpu().to(torch.float64).numpy()
    neurons = trains.neurons.cpu().numpy()
    with atomic_write(path, path.suffix or ".csv") as tmp:
        with open(tmp, "w", newline="") as handle:
            handle.write(f"{META} t0={float(trains.t0)!r} t1={float(trains.t1)!r} trials={len(times)} "
                         f"neurons={trains.num_neurons}\n")
            writer = csv.writer(handle)
            writer.writerow(HEADER)
            for b in range(len(times)):
                for k in np.flatnonzero(np.isfinite(times[b])):
                    writer.writerow((b, int(neurons[b, k]), repr(float(times[b, k]))))
    return path


def _meta(line: str, source: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in line[len(META):].split():
        key, sep, value = item.partition("=")
        if not sep or key not in ("t0", "t1", "trials", "neurons"):
            raise SpikeDataError(f"unknown item {item!r} in the first line (expected t0=, t1=, trials=, neurons=)",
                                 source=source, line=1)
        try:
            out[key] = float(value)
        except ValueError:
            raise SpikeDataError(f"{key}={value!r} is not a number", source=source, line=1, field=key) from None
    return out


def _override(meta: dict[str, float], key: str, given: float | None, source: str) -> float | None:
    """The argument if given (it must agree with the file's first line when that has the key), else the file's."""
    if given is None:
        return meta.get(key)
    if key in meta and float(given) != meta[key]:
        raise SpikeDataError(f"{key}={given!r} was asked for, the file says {key}={meta[key]!r}", source=source,
                             line=1, field=key)
    return float(given)


def read_spike_trains(path: str | os.PathLike, *, t1: float | None = None, t0: float | None = None,
                      num_trials: int | None = None, num_neurons: int | None = None,
                      dtype: torch.dtype = torch.float64) -> SpikeTrains:
    """Spike trains from a CSV file with columns ``trial``, ``neuron``, ``time`` (any order, one row per
    spike; trials and neurons numbered from 0), as :func:`write_spike_trains` writes it. The window and the
    numbers of trials and neurons come from the optional first line ``# spike-trains t0=.. t1=.. trials=..
    neurons=..``; arguments given here must agree with it. Without that line ``t0`` defaults to 0, ``t1``
    must be given, and the trials and neurons are counted from the largest ids. Bad input raises
    :class:`SpikeDataError` naming the file, line, trial, row (0-based data row) and field."""
    source = str(path)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{source}: no such file")
    with open(path, newline="") as handle:
        lines = handle.read().splitlines()
    meta: dict[str, float] = {}
    first = 0
    if lines and lines[0].startswith(META):
        meta, first = _meta(lines[0], source), 1
    elif lines and lines[0].startswith("#"):
        raise SpikeDataError(f"a first comment line must start with {META!r}", source=source, line=1)
    if first >= len(lines):
        raise SpikeDataError("no header line (trial,neuron,time)", source=source, line=first + 1)
    header = [h.strip() for h in next(csv.reader([lines[first]]))]
    missing = [h for h in HEADER if h not in header]
    if missing or len(header) != len(set(header)):
        raise SpikeDataError(f"the header must name the columns trial, neuron, time once each, got {header}"
                             + (f" (missing {', '.join(missing)})" if missing else ""), source=source,
                             line=first + 1)
    col = {h: header.index(h) for h in HEADER}
    start = _override(meta, "t0", t0, source)
    end = _override(meta, "t1", t1, source)
    start = 0.0 if start is None else start
    if end is None:
        raise ValueError(f"{source}: the window end t1 is not in the file (no '{META} ... t1=..' first line); "
                         "give t1")
    if not (math.isfinite(start) and math.isfinite(end) and end > start):
        raise SpikeDataError(f"the window [{start}, {end}] must be finite with t1 > t0", source=source, line=1,
                             field="t1")
    trials_given = _override(meta, "trials", None if num_trials is None else float(num_trials), source)
    neurons_given = _override(meta, "neurons", None if num_neurons is None else float(num_neurons), source)
    rows: list[tuple[int, int, float]] = []
    data_lines = lines[first + 1:]
    for r, (number, record) in enumerate(zip(range(first + 2, first + 2 + len(data_lines)),
                                             csv.reader(data_lines))):
        if not record or all(not c.strip() for c in record):
            raise SpikeDataError("empty row", source=source, line=number, row=r)
        if len(record) != len(header):
            raise SpikeDataError(f"{len(record)} fields, the header has {len(header)}", source=source, line=number,
                                 row=r)
        values: dict[str, Any] = {}
        for name, kind in (("trial", int), ("neuron", int), ("time", float)):
            text = record[col[name]].strip()
            try:
                values[name] = kind(text)
            except ValueError:
                what = "an integer" if kind is int else "a number"
                raise SpikeDataError(f"{text!r} is not {what}", source=source, line=number, row=r,
                                     field=name) from None
        trial, neuron, time = values["trial"], values["neuron"], values["time"]
        if trial < 0 or (trials_given is not None and trial >= trials_given):
            raise SpikeDataError(f"trial {trial} is outside 0..{int(trials_given) - 1 if trials_given else 'inf'}",
                                 source=source, line=number, row=r, field="trial")
        if neuron < 0 or (neurons_given is not None and neuron >= neurons_given):
            top = f"0..{int(neurons_given) - 1}" if neurons_given is not None else "0 and up"
            raise SpikeDataError(f"neuron {neuron} is outside {top}", source=source, line=number, row=r,
                                 sequence=trial, field="neuron")
        if not (math.isfinite(time) and start <= time <= end):
            raise SpikeDataError(f"time {time!r} is outside the window [{start!r}, {end!r}]", source=source,
                                 line=number, row=r, sequence=trial, field="time")
        rows.append((trial, neuron, time))
    B = int(trials_given) if trials_given is not None else (max((r[0] for r in rows), default=-1) + 1)
    N = int(neurons_given) if neurons_given is not None else max(max((r[1] for r in rows), default=0) + 1, 1)
    if B < 1:
        raise SpikeDataError("no trials: no spikes and no trials= in the first line", source=source)
    per: list[list[tuple[float, int]]] = [[] for _ in range(B)]
    for trial, neuron, time in rows:
        per[trial].append((time, neuron))
    K = max(1, max(len(p) for p in per))
    times = torch.full((B, K), math.inf, dtype=torch.float64)
    neurons = torch.full((B, K), -1, dtype=torch.long)
    for b, spikes in enumerate(per):
        spikes.sort()
        if spikes:
            times[b, : len(spikes)] = torch.tensor([t for t, _ in spikes], dtype=torch.float64)
            neurons[b, : len(spikes)] = torch.tensor([n for _, n in spikes], dtype=torch.long)
    return SpikeTrains(times.to(dtype), neurons, torch.zeros(B, dtype=torch.bool), float(start), float(end), N)


def _vector(value: Any, n: int, name: str, dtype: torch.dtype) -> Tensor:
    t = torch.as_tensor(value, dtype=dtype)
    if t.ndim == 0:
        return t.expand(n).clone()
    if t.shape != (n,):
        raise ValueError(f"SpikingSDE: {name} must be a scalar or have shape ({n},), got {tuple(t.shape)}")
    return t.clone()


class SpikingSDE(Model):
    """A network of stochastic leaky integrate-and-fire neurons with event-triggered resets; the arguments are
    :class:`sde.jax.EventSDE`'s (``solver`` ``"euler"`` or ``"heun"``; ``sigma=None`` is no noise). ``mu``,
    ``tau``, ``sigma``, ``theta``, ``v_reset``, ``weights``, ``tau_syn``, ``rate``, ``beta`` are parameters.

    The scoring settings of :meth:`fit` and :meth:`score` (kept with the model, saved by :meth:`to_dict`):
    ``count_scale`` of the count channels of :func:`spike_path` (``None``: ``1 / max(1, 2 x mean spikes per
    trial and neuron)`` of the data, so paths stay of order one), ``kernel_sigma`` of the rbf static kernel and
    ``dyadic_order`` of the signature-kernel PDE, and ``taper`` of :func:`spike_path` (default 0.2: the
    spike-time gradient of an untapered path misses the spikes that enter or leave the window at ``t1``, and
    on a short window that bias dominates: with 2 spikes per trial on ``[0, 5]`` it pointed ``mu`` up at
    ``mu = 1.45`` when the MMD's minimum was at 1.2; tapered, the mean gradient matches the MMD's slope)."""

    stochastic: bool = True

    def __init__(self, num_neurons: int = 1, *, mu: Any = 1.5, tau: Any = 1.0, sigma: Any = None,
                 theta: Any = 1.0, v_reset: Any = 0.0, weights: Any = None, tau_syn: Any = 1.0, rate: Any = 1.0,
                 beta: Any = 5.0, mode: str | Sequence[str] = "intensity", intensity: str = "exp",
                 refractory: float = 0.0, dt0: float = 1e-2, solver: str = "euler",
                 dtype: torch.dtype = torch.float64, count_scale: float | None = None, kernel_sigma: float = 1.0,
                 dyadic_order: int = 1, taper: float = 0.2):
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
        if count_scale is not None and not (count_scale > 0 and math.isfinite(count_scale)):
            raise ValueError(f"SpikingSDE: count_scale must be positive and finite, got {count_scale}")
        if not (kernel_sigma > 0 and math.isfinite(kernel_sigma)):
            raise ValueError(f"SpikingSDE: kernel_sigma must be positive and finite, got {kernel_sigma}")
        if int(dyadic_order) < 0:
            raise ValueError(f"SpikingSDE: dyadic_order must be >= 0, got {dyadic_order}")
        self.count_scale = None if count_scale is None else float(count_scale)
        if not 0.0 <= taper <= 1.0:
            raise ValueError(f"SpikingSDE: taper must be in [0, 1], got {taper}")
        self.kernel_sigma, self.dyadic_order, self.taper = float(kernel_sigma), int(dyadic_order), float(taper)
        self.modes = tuple(modes)
        self.fit_history_: list[dict[str, Any]] = []
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

    # ----------------------------------------------------------------- fitting and scoring (the model contract)
    def _data(self, data: Any) -> SpikeTrains:
        trains = as_spike_trains(data, self.mu.dtype)
        if trains.num_neurons != self.num_neurons:
            raise ValueError(f"SpikingSDE: the trains have {trains.num_neurons} neurons, the model "
                             f"{self.num_neurons}")
        return trains

    def scale_for(self, data: Any) -> float:
        """The count scale of the paths: ``count_scale``, else ``1 / max(1, 2 x mean spikes per trial and
        neuron)`` of ``data``."""
        if self.count_scale is not None:
            return self.count_scale
        mean = float(self._data(data).counts.double().mean())
        return 1.0 / max(1.0, 2.0 * mean)

    @staticmethod
    def spikes_for(trains: SpikeTrains) -> int:
        """``max_spikes`` of the simulations compared with ``trains``: twice the most spikes of a trial, at least 8."""
        return max(8, 2 * int(torch.isfinite(trains.times).sum(-1).max()))

    def simulate(self, trains: SpikeTrains, num_samples: int, generator: torch.Generator,
                 max_spikes: int | None = None) -> SpikeTrains:
        """``num_samples`` fresh model trains on the window of ``trains`` (differentiable spike times)."""
        return self(trains.t1, t0=trains.t0, max_spikes=max_spikes or self.spikes_for(trains),
                    num_samples=num_samples, generator=generator)

    def _loss(self, sim: SpikeTrains, target: SpikeTrains, scale: float) -> Tensor:
        """The training loss: unbiased MMD^2 of the path lifts, rbf static kernel."""
        return spike_train_mmd(_trim(sim), _trim(target), count_scale=scale, dyadic_order=self.dyadic_order,
                               static_kernel="rbf", sigma=self.kernel_sigma, taper=self.taper)

    def mmd(self, data: Any, *, num_samples: int = 64, seed: Seed = 0, max_spikes: int | None = None) -> float:
        """Squared signature-kernel MMD (unbiased) between ``num_samples`` model trains and the trains of
        ``data`` (:class:`SpikeTrains` or an event batch): lower is better, about 0 for the true model (it can
        be slightly negative). ``seed`` fixes the simulated noise, so the same parameters give the same number."""
        trains = self._data(data)
        if len(trains) < 2 or num_samples < 2:
            raise ValueError(f"SpikingSDE.mmd: needs at least 2 trials and 2 samples, got {len(trains)} and "
                             f"{num_samples}")
        with torch.no_grad():
            sim = self.simulate(trains, num_samples, _generator(seed), max_spikes)
            return float(self._loss(sim, trains, self.scale_for(trains)))

    def score(self, data: Any, *, num_samples: int = 64, seed: Seed = 0) -> float:
        """``-MMD^2`` of :meth:`mmd` (the contract's score: higher is better)."""
        return -self.mmd(data, num_samples=num_samples, seed=seed)

    def objective(self, batch: Any) -> Tensor:
        """``[B]`` an equal share of ``-MMD^2`` per observed trial (fresh simulated trains, as many as trials,
        from torch's global generator): the MMD compares sets, so no trial has a share of its own; the sum is
        the training objective :meth:`fit` maximises."""
        trains = self._data(batch)
        sim = self.simulate(trains, max(2, len(trains)), None)  # type: ignore[arg-type]
        value = self._loss(sim, trains, self.scale_for(trains))
        return (-value / len(trains)).expand(len(trains))

    @torch.no_grad()
    def predict(self, data: Any, *, num_samples: int = 64, seed: Seed = 0) -> Tensor:
        """Expected spikes per neuron ``[N]`` on the window of ``data`` (Monte Carlo over ``num_samples``)."""
        trains = self._data(data)
        sim = self.simulate(trains, num_samples, _generator(seed))
        return sim.counts.to(self.mu.dtype).mean(0)

    def fit(self, train: Any, val: Any = None, *, epochs: int = 50, steps: int | None = None, batch_size: int = 32,
            num_samples: int | None = None, lr: float = 0.05, seed: Seed = 0, parameters: Sequence[str] = ("mu",),
            average: int = 0, max_spikes: int | None = None, progress: bool = True) -> SpikingSDE:
        """Learn ``parameters`` (from :data:`FITTABLE`) from the spike trains ``train`` by Adam (``lr``) on the
        signature-kernel MMD^2 between ``num_samples`` (default ``batch_size``) fresh model trains and a random
        ``batch_size`` of the observed trials per step, gradients through the spike times. ``steps`` steps, or
        ``epochs`` x ``ceil(trials / batch_size)``. ``average``: set the parameters at the end to the mean of
        the last ``average`` iterates (tail averaging against the noise of the steps; 0: the last iterate).
        ``val``: its :meth:`mmd` after every epoch goes into :attr:`fit_history_`. ``count_scale`` is fixed
        from ``train`` (see the class docstring). Returns self; :attr:`fit_history_` holds per step the MMD^2
        and the parameters."""
        from tqdm.auto import tqdm

        trains = self._data(train)
        valid = None if val is None else self._data(val)
        unknown = [p for p in parameters if p not in FITTABLE]
        if unknown or not parameters:
            raise ValueError(f"SpikingSDE.fit: parameters must be some of {FITTABLE}, got {list(parameters)}")
        if "sigma" in parameters and self.sigma is None:
            raise ValueError("SpikingSDE.fit: sigma=None (no noise) has no noise level to fit")
        if len(trains) < 2:
            raise ValueError(f"SpikingSDE.fit: needs at least 2 trials (the MMD compares sets), got {len(trains)}")
        if int(batch_size) < 2 or (num_samples is not None and int(num_samples) < 2):
            raise ValueError(f"SpikingSDE.fit: batch_size and num_samples must be >= 2, got {batch_size} and "
                             f"{num_samples}")
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"SpikingSDE.fit: lr must be positive, got {lr}")
        batch = min(int(batch_size), len(trains))
        samples = int(num_samples or batch)
        per_epoch = math.ceil(len(trains) / batch)
        total = int(steps) if steps is not None else int(epochs) * per_epoch
        if total < 1:
            raise ValueError(f"SpikingSDE.fit: needs at least one step, got steps={steps}, epochs={epochs}")
        if self.count_scale is None:
            self.count_scale = self.scale_for(trains)
        scale = self.count_scale
        spikes = max_spikes or self.spikes_for(trains)
        generator = _generator(seed)
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
        chosen = {name: getattr(self, name) for name in parameters}
        frozen = [(p, p.requires_grad) for name, p in self.named_parameters() if name not in chosen]
        optimizer = torch.optim.Adam(list(chosen.values()), lr=lr)
        history: list[dict[str, Any]] = []
        truncated = 0
        bar = tqdm(range(total), desc="spiking fit", unit="step", disable=not progress)
        try:
            for p, _ in frozen:
                p.requires_grad_(False)
            for step in bar:
                index = torch.as_tensor(rng.choice(len(trains), batch, replace=False))
                sim = self.simulate(trains, samples, generator, spikes)
                truncated += int(sim.truncated.sum())
                loss = self._loss(sim, trains[index], scale)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                record = {"step": step, "mmd": float(loss.detach()),
                          **{k: v.detach().cpu().tolist() for k, v in chosen.items()}}
                if valid is not None and (step + 1) % per_epoch == 0:
                    record["val_mmd"] = self.mmd(valid, seed=seed)
                history.append(record)
                bar.set_postfix(mmd=f"{record['mmd']:.4f}",
                                **{k: f"{float(v.detach().flatten()[0]):.4f}" for k, v in chosen.items()})
            if average > 0:
                tail = history[-int(average):]
                with torch.no_grad():
                    for name, p in chosen.items():
                        p.copy_(torch.tensor([h[name] for h in tail], dtype=p.dtype).mean(0))
        finally:
            bar.close()
            for p, flag in frozen:
                p.requires_grad_(flag)
        if truncated:
            warnings.warn(f"SpikingSDE.fit: {truncated} of {total * samples} simulated trains hit max_spikes={spikes} "
                          "(later spikes are not compared); pass a larger max_spikes", stacklevel=2)
        self.fit_history_ = history
        return self

    # ----------------------------------------------------------------- saving (the model table's estimator form)
    def to_dict(self) -> dict[str, Any]:
        """Every constructor argument and parameter as JSON types (``model``: the table name ``spiking-sde``);
        :meth:`from_dict` rebuilds the model exactly (floats round-trip through JSON exactly)."""
        vec = {name: getattr(self, name).detach().cpu().tolist()
               for name in ("mu", "tau", "theta", "v_reset", "tau_syn", "rate", "beta")}
        return {"model": "spiking-sde", "num_neurons": self.num_neurons, **vec,
                "sigma": None if self.sigma is None else self.sigma.detach().cpu().tolist(),
                "weights": self.weights.detach().cpu().tolist(), "mode": list(self.modes), "intensity": self.intensity,
                "refractory": self.refractory, "dt0": self.dt0, "solver": self.solver,
                "dtype": str(self.mu.dtype).removeprefix("torch."), "count_scale": self.count_scale,
                "kernel_sigma": self.kernel_sigma, "dyadic_order": self.dyadic_order, "taper": self.taper}

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> SpikingSDE:
        """The model :meth:`to_dict` described."""
        args = {k: v for k, v in params.items() if k != "model"}
        args["dtype"] = getattr(torch, str(args.get("dtype", "float64")))
        return cls(**args)


def _trim(trains: SpikeTrains) -> SpikeTrains:
    """The trains without the padding columns no trial needs: padding adds zero increments to the paths (the
    kernel is the same) but costs ``O(K^2)`` in the signature-kernel PDE. One padding column stays (where there
    is one), so every path still runs to ``t1``."""
    used = int(torch.isfinite(trains.times).sum(-1).max()) if trains.times.numel() else 0
    keep = min(used + 1, trains.times.shape[-1])
    return SpikeTrains(trains.times[:, :keep], trains.neurons[:, :keep], trains.truncated, trains.t0, trains.t1,
                       trains.num_neurons)


def _generator(seed: Seed) -> torch.Generator:
    """A CPU torch generator from any seed form (None: a fresh random one)."""
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed.integers(0, 2**62)) if isinstance(seed, np.random.Generator) else int(seed))
    return g


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


def plot_fit(model: SpikingSDE, true: dict[str, Any] | None = None) -> Any:
    """The course of :meth:`SpikingSDE.fit` (its :attr:`~SpikingSDE.fit_history_`): the MMD^2 per step (left)
    and each learned parameter's entries per step (right), with the true values as dashed lines if ``true``
    (name -> value) is given. Returns the Figure."""
    import matplotlib.pyplot as plt

    history = model.fit_history_
    if not history:
        raise ValueError("plot_fit: the model has no fit history (call fit first)")
    names = [k for k in history[0] if k in FITTABLE]
    steps = [h["step"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.plot(steps, [h["mmd"] for h in history], color="black", linewidth=1)
    left.axhline(0.0, color="grey", linewidth=0.5)
    left.set_xlabel("step")
    left.set_ylabel("MMD^2 (minibatch)")
    for name in names:
        values = np.asarray([h[name] for h in history], dtype=float).reshape(len(history), -1)
        for j in range(values.shape[1]):
            line, = right.plot(steps, values[:, j], label=f"{name}[{j}]" if values.shape[1] > 1 else name)
            if true is not None and name in true:
                target = np.broadcast_to(np.asarray(true[name], dtype=float).reshape(-1), (values.shape[1],))[j]
                right.axhline(target, color=line.get_color(), linestyle="--", linewidth=1)
    right.set_xlabel("step")
    right.set_ylabel("parameter")
    right.legend(fontsize=8)
    fig.suptitle("SpikingSDE.fit by signature-kernel MMD" + (" (dashed: true values)" if true else ""))
    fig.tight_layout()
    return fig
