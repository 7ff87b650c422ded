"""Event SDEs for stochastic spiking networks (Holberg & Salvi, NeurIPS 2024, "Exact gradients for stochastic
spiking neural networks driven by rough signals"), on diffrax with events and a root finder.

```python
import sde.jax as sj
net = sj.EventSDE(2, mu=1.5, tau=1.0, sigma=0.2, weights=[[0, .5], [.5, 0]])   # two coupled LIF neurons
train = net(5.0, key=jax.random.PRNGKey(0), max_spikes=16)     # one sample: train.times [16] (inf padded)
trains = net.sample(5.0, key, num_samples=32, max_spikes=16)   # a batch: times [32, 16]
grads = jax.grad(lambda m: m(5.0, key=k, max_spikes=4).times[0])(net)   # d(first spike)/d(parameters)
```

Each neuron ``n`` carries three states, ``y = [v, i, s]`` (array ``[3, N]``):

* voltage ``dv = (mu + i + I(t) - v) / tau dt + sigma dW`` (``I`` an optional input current),
* synaptic current ``di = -i / tau_syn dt``, into which a spike of neuron ``m`` adds ``weights[m, n]``,
* intensity integral ``ds = lambda(v) dt`` (``mode="intensity"``), started at ``-(E + refractory)`` with
  ``E ~ Exp(1)``: the neuron spikes when ``s`` crosses 0, i.e. when ``int lambda(v) dt`` exceeds an Exp(1)
  threshold; so at a fixed voltage the spikes are a Poisson process of rate ``lambda(v)``. With
  ``mode="threshold"`` it spikes when ``v`` crosses ``theta`` (deterministic LIF when ``sigma is None``).

At a spike ``v`` resets to ``v_reset``, a new threshold ``E`` is drawn, and the other neurons' currents jump.
The simulation is a ``jax.lax.scan`` over at most ``max_spikes`` spikes; each iteration is one
``diffrax.diffeqsolve`` from the last spike to ``t1`` that stops at the next event, found by a Newton root
finder on the step's dense output. diffrax differentiates the event time through the root (implicit
function theorem), so spike times have exact gradients of the discretised system with respect to every
parameter (``tests/sde/test_event_sde.py`` checks them against finite differences on the same path).

Why a piecewise-linear Brownian path on a fixed grid (:class:`GridBrownian`): after a spike the solve
restarts at the spike time, which depends on the parameters. diffrax's ``VirtualBrownianTree`` cannot be
differentiated in time (and the paper's code stops that gradient), so a restart-aligned step grid would
move the Brownian increments without autodiff seeing it, and autodiff would disagree with finite
differences. Here the path is fixed at the grid points ``t0 + k dt0`` and linear between them (by default
stored increments drawn from the key, :func:`grid_brownian`; or, ``brownian="tree"``, the tree read at the
grid points, :class:`GridBrownian`), and the steps land on that grid (:class:`GridSteps`): every full step
reads fixed increments, and only the partial step after a spike depends (smoothly) on the spike time. The noise-free system is solved with an
adaptive Runge-Kutta method (``Tsit5``) instead, so the LIF spike times are exact to the tolerance.

Spike trains become paths for the signature-kernel MMD (:func:`spike_path`: time and counts with a vertical
jump at each spike, the Marcus lift of the counting process, whose corners move smoothly with the spike
times), so ``sde.jax.signature.signature_mmd`` between simulated and observed trains is a differentiable
training loss (``benchmarks/event_sde.py`` recovers an input current with it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import lineax
import optimistix as optx
from jaxtyping import Array, ArrayLike

from sde.jax.solvers import BrownianPath
from sde.models.spiking import plot_spike_raster  # one picture for both twins (numpy + matplotlib only)

__all__ = ["EventSDE", "GridBrownian", "GridSteps", "grid_brownian", "SpikeTrain", "plot_spike_raster", "spike_path",
           "spike_train_mmd"]

MODES = ("intensity", "threshold")
INTENSITIES = ("exp", "softplus")
SOLVERS = ("euler", "heun", "tsit5", "dopri5")
ADJOINTS = ("reverse", "forward")
BROWNIANS = ("grid", "tree")


# --------------------------------------------------------------------------- the step grid and the path
class GridSteps(diffrax.AbstractStepSizeController):
    """Steps onto the fixed grid ``origin + k * h`` from wherever a solve starts (the first step is the
    partial one up to the next grid point), so a restart after a spike keeps the grid of the Brownian
    path and every full step reads the same increments whatever the spike time was."""

    origin: float
    h: float

    def wrap(self, direction: Any) -> GridSteps:
        return self

    def _next(self, t: Array, t1: Array) -> Array:
        # the next grid point strictly after t (by a margin, so a restart on a grid point makes no 1e-16 step);
        # the index carries no gradient: grid points are constants
        k = jnp.floor(jax.lax.stop_gradient((t - self.origin) / self.h) + 1e-9) + 1.0
        return jnp.minimum(self.origin + k * self.h, t1)

    def init(self, terms: Any, t0: Any, t1: Any, y0: Any, dt0: Any, args: Any, func: Any,
             error_order: Any) -> tuple[Array, Array]:
        t1 = jnp.asarray(t1)
        return self._next(jnp.asarray(t0), t1), t1

    def adapt_step_size(self, t0: Any, t1: Any, y0: Any, y1_candidate: Any, args: Any, y_error: Any,
                        error_order: Any, controller_state: Array) -> tuple:
        return (True, t1, self._next(jnp.asarray(t1), controller_state), False, controller_state,
                diffrax.RESULTS.successful)


class GridBrownian(diffrax.AbstractBrownianPath):
    """A Brownian path read from ``diffrax.VirtualBrownianTree(key)`` at the grid points ``t0 + k * h`` and
    linear between them: a fixed function of time given the key (forward, reverse and finite-difference
    passes see one path) that, unlike the tree, is differentiable in time (see the module docstring)."""

    tree: diffrax.VirtualBrownianTree
    origin: float
    h: float
    cells: int

    def __init__(self, t0: float, t1: float, h: float, shape: tuple[int, ...], key: Any, dtype: Any = None):
        self.origin, self.h = float(t0), float(h)
        self.cells = max(1, math.ceil((float(t1) - float(t0)) / float(h) - 1e-9))
        end = self.origin + self.cells * self.h
        struct = jax.ShapeDtypeStruct(shape, dtype or jnp.result_type(float))
        # tol below the grid spacing: the tree's value at a grid point is then its own dyadic sample
        self.tree = diffrax.VirtualBrownianTree(self.origin, end, tol=self.h / 4, shape=struct, key=key)

    @property
    def t0(self) -> float:
        return self.origin

    @property
    def t1(self) -> float:
        return self.origin + self.cells * self.h

    @property
    def levy_area(self) -> type[diffrax.BrownianIncrement]:
        return diffrax.BrownianIncrement

    def _value(self, t: Array) -> Array:
        u = (t - self.origin) / self.h
        k = jnp.clip(jnp.floor(jax.lax.stop_gradient(u)), 0, self.cells - 1)
        lo = jax.lax.stop_gradient(self.origin + k * self.h)
        hi = jax.lax.stop_gradient(self.origin + (k + 1) * self.h)
        w_lo, w_hi = self.tree.evaluate(lo), self.tree.evaluate(jnp.minimum(hi, self.t1))
        return w_lo + ((t - lo) / self.h).astype(w_lo.dtype) * (w_hi - w_lo)

    def evaluate(self, t0: Any, t1: Any = None, left: bool = True, use_levy: bool = False) -> Any:
        t0 = jnp.asarray(t0)
        if t1 is None:
            return self._value(t0)
        dw = self._value(jnp.asarray(t1)) - self._value(t0)
        return diffrax.BrownianIncrement(dt=t1 - t0, W=dw) if use_levy else dw


def grid_brownian(t0: float, t1: float, h: float, n: int, key: Any, dtype: Any = None) -> BrownianPath:
    """A Brownian path ``[n]`` drawn from ``key`` at ``t0 + k h`` and stored (:class:`sde.jax.BrownianPath`, linear
    between the points): the same kind of path as :class:`GridBrownian`, read by two lookups instead of a tree
    descent, and compiled several times faster; memory ``(t1 - t0) / h x n``."""
    cells = max(1, math.ceil((float(t1) - float(t0)) / float(h) - 1e-9))
    dtype = dtype or jnp.result_type(float)
    grid = float(t0) + float(h) * jnp.arange(cells + 1, dtype=dtype)
    steps = jr.normal(key, (cells, n), dtype) * math.sqrt(float(h))
    values = jnp.concatenate([jnp.zeros((1, n), dtype), jnp.cumsum(steps, axis=0)])
    return BrownianPath(grid=grid, values=values)


# --------------------------------------------------------------------------- spike trains
class SpikeTrain(eqx.Module):
    """Spikes of one simulation (or a batch: leading axes): ``times [..., K]`` in increasing order, padded
    with ``inf``; ``neurons [..., K]`` the neuron of each spike (``-1`` on padding); ``truncated [...]``
    true where ``max_spikes`` ran out before ``t1`` (more spikes would have followed); ``ok [...]`` false
    where a solve failed (step budget or root finder)."""

    times: Array
    neurons: Array
    truncated: Array
    ok: Array
    t0: float = eqx.field(static=True)
    t1: float = eqx.field(static=True)
    num_neurons: int = eqx.field(static=True)

    @property
    def counts(self) -> Array:
        """Spikes per neuron ``[..., N]``."""
        return (self.neurons[..., None] == jnp.arange(self.num_neurons)).sum(-2)

    def of(self, neuron: int) -> Array:
        """The spike times of one neuron ``[..., K]`` (others ``inf``), in increasing order."""
        return jnp.sort(jnp.where(self.neurons == neuron, self.times, jnp.inf), axis=-1)

    def path(self, *, time_scale: float | None = None, count_scale: float = 1.0) -> Array:
        """The trains as paths for signature kernels ``[..., 2K + 1, 1 + N]``: see :func:`spike_path`."""
        return spike_path(self.times, self.neurons, self.num_neurons, self.t0, self.t1, time_scale=time_scale,
                          count_scale=count_scale)


def spike_path(times: ArrayLike, neurons: ArrayLike, num_neurons: int, t0: float, t1: float, *,
               time_scale: float | None = None, count_scale: float = 1.0) -> Array:
    """Spike trains as piecewise-linear paths ``[..., 2K + 1, 1 + N]``: channel 0 is time (divided by
    ``time_scale``, default ``t1 - t0``), channels ``1..N`` the spike counts (times ``count_scale``), points
    ``(t0, 0)``, then per spike ``(t_k, counts before)``, ``(t_k, counts after)``: the counting process with
    its jumps drawn vertically. The points move smoothly with the spike times, so a kernel of these paths
    is differentiable in them. Padding (``inf``) spikes sit at ``t1`` with unchanged counts (zero increments)."""
    times = jnp.asarray(times)
    neurons = jnp.asarray(neurons)
    scale = float(t1 - t0) if time_scale is None else float(time_scale)
    valid = jnp.isfinite(times)
    t = (jnp.where(valid, times, t1) - t0) / scale
    jumps = ((neurons[..., None] == jnp.arange(num_neurons)) & valid[..., None]).astype(t.dtype) * count_scale
    after = jnp.cumsum(jumps, axis=-2)
    before = after - jumps
    first = jnp.concatenate([t[..., :, None], before], axis=-1)
    second = jnp.concatenate([t[..., :, None], after], axis=-1)
    pairs = jnp.stack([first, second], axis=-2).reshape(*t.shape[:-1], 2 * t.shape[-1], 1 + num_neurons)
    start = jnp.zeros((*t.shape[:-1], 1, 1 + num_neurons), t.dtype)
    return jnp.concatenate([start, pairs], axis=-2)


def spike_train_mmd(x: SpikeTrain, y: SpikeTrain, *, time_scale: float | None = None, count_scale: float = 1.0,
                    dyadic_order: int = 1, static_kernel: str = "rbf", sigma: float = 1.0,
                    unbiased: bool = True) -> Array:
    """Squared signature-kernel MMD between two batches of spike trains (their :func:`spike_path` lifts),
    differentiable in the spike times; ``sde.jax.signature.signature_mmd`` does the kernel."""
    from sde.jax.signature import signature_mmd

    if x.times.ndim != 2 or y.times.ndim != 2:
        raise ValueError(f"spike_train_mmd: needs batches of trains (times [B, K]), got {x.times.shape} and "
                         f"{y.times.shape}")
    return signature_mmd(x.path(time_scale=time_scale, count_scale=count_scale),
                         y.path(time_scale=time_scale, count_scale=count_scale), unbiased=unbiased,
                         dyadic_order=dyadic_order, static_kernel=static_kernel, sigma=sigma)


# --------------------------------------------------------------------------- the model
def _vector(value: Any, n: int, name: str, dtype: Any) -> Array:
    a = jnp.asarray(value, dtype=dtype)
    if a.ndim == 0:
        return jnp.full((n,), a, dtype)
    if a.shape != (n,):
        raise ValueError(f"EventSDE: {name} must be a scalar or have shape ({n},), got {tuple(a.shape)}")
    return a


class EventSDE(eqx.Module):
    """A network of ``num_neurons`` stochastic leaky integrate-and-fire neurons with event-triggered resets
    (see the module docstring for the equations). Array fields are trainable (``eqx.filter_grad``);
    ``sigma is None`` gives the noise-free network, solved adaptively.

    Arguments: ``mu`` constant drive; ``tau`` membrane time constant; ``sigma`` voltage noise (``None``: none);
    ``theta`` threshold (``mode="threshold"``) and the centre of the intensity; ``v_reset``; ``weights [N, N]``
    (``weights[m, n]``: jump of neuron ``n``'s current at a spike of ``m``); ``tau_syn``; ``rate`` and ``beta``
    of the intensity ``lambda(v) = rate * exp(beta (v - theta))`` (``"exp"``) or ``rate * softplus(beta
    (v - theta))``; ``mode`` ``"intensity"`` or ``"threshold"``, or a list of them per neuron (mixed
    networks); ``refractory`` added to every Exp(1) threshold (the paper's ``alpha``); ``dt0`` the step
    (noisy) or first step (noise-free); ``solver`` one of ``euler``/``heun`` (fixed grid, noisy or not) and
    ``tsit5``/``dopri5`` (adaptive, noise-free only); ``rtol``/``atol`` of adaptive steps; ``root_tol`` of the
    Newton root finder (default ``eps ** 0.75`` of the dtype); ``brownian`` the path drawn from the key:
    ``"grid"`` (stored increments on the step grid, :func:`grid_brownian`) or ``"tree"`` (diffrax's
    ``VirtualBrownianTree`` read on the grid, :class:`GridBrownian`: constant memory, slower to compile);
    ``adjoint`` ``"reverse"`` (``jax.grad``) or ``"forward"`` (``jax.jvp``/``jax.jacfwd`` only, cheaper to
    compile)."""

    mu: Array
    tau: Array
    sigma: Array | None
    theta: Array
    v_reset: Array
    weights: Array
    tau_syn: Array
    rate: Array
    beta: Array
    hard: Array
    num_neurons: int = eqx.field(static=True)
    intensity: str = eqx.field(static=True)
    refractory: float = eqx.field(static=True)
    dt0: float = eqx.field(static=True)
    solver: str = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    root_tol: float | None = eqx.field(static=True)
    max_steps: int | None = eqx.field(static=True)
    adjoint: str = eqx.field(static=True)
    brownian: str = eqx.field(static=True)

    def __init__(self, num_neurons: int = 1, *, mu: ArrayLike = 1.5, tau: ArrayLike = 1.0,
                 sigma: ArrayLike | None = None, theta: ArrayLike = 1.0, v_reset: ArrayLike = 0.0,
                 weights: ArrayLike | None = None, tau_syn: ArrayLike = 1.0, rate: ArrayLike = 1.0,
                 beta: ArrayLike = 5.0, mode: str | Sequence[str] = "intensity", intensity: str = "exp",
                 refractory: float = 0.0,
                 dt0: float = 1e-2, solver: str | None = None, rtol: float = 1e-8, atol: float = 1e-8,
                 root_tol: float | None = None, max_steps: int | None = None, adjoint: str = "reverse",
                 brownian: str = "grid", dtype: Any = None):
        if int(num_neurons) < 1:
            raise ValueError(f"EventSDE: num_neurons must be at least 1, got {num_neurons}")
        if intensity not in INTENSITIES:
            raise ValueError(f"EventSDE: intensity must be one of {INTENSITIES}, got {intensity!r}")
        if not (dt0 > 0 and math.isfinite(dt0)):
            raise ValueError(f"EventSDE: dt0 must be positive and finite, got {dt0}")
        if not refractory >= 0:
            raise ValueError(f"EventSDE: refractory must be >= 0, got {refractory}")
        if adjoint not in ADJOINTS:
            raise ValueError(f"EventSDE: adjoint must be one of {ADJOINTS}, got {adjoint!r}")
        if brownian not in BROWNIANS:
            raise ValueError(f"EventSDE: brownian must be one of {BROWNIANS}, got {brownian!r}")
        solver = solver or ("tsit5" if sigma is None else "euler")
        if solver not in SOLVERS:
            raise ValueError(f"EventSDE: solver must be one of {SOLVERS}, got {solver!r}")
        if sigma is not None and solver in ("tsit5", "dopri5"):
            raise ValueError(f"EventSDE: solver {solver!r} is adaptive, for the noise-free network only "
                             f"(sigma=None); with noise use 'euler' or 'heun'")
        n = self.num_neurons = int(num_neurons)
        dtype = dtype or jnp.result_type(float)
        self.mu = _vector(mu, n, "mu", dtype)
        self.tau = _vector(tau, n, "tau", dtype)
        self.sigma = None if sigma is None else _vector(sigma, n, "sigma", dtype)
        self.theta = _vector(theta, n, "theta", dtype)
        self.v_reset = _vector(v_reset, n, "v_reset", dtype)
        w = jnp.zeros((n, n), dtype) if weights is None else jnp.asarray(weights, dtype)
        if w.shape != (n, n):
            raise ValueError(f"EventSDE: weights must have shape ({n}, {n}), got {tuple(w.shape)}")
        self.weights = w
        self.tau_syn = _vector(tau_syn, n, "tau_syn", dtype)
        self.rate = _vector(rate, n, "rate", dtype)
        self.beta = _vector(beta, n, "beta", dtype)
        modes = [mode] * n if isinstance(mode, str) else list(mode)
        if len(modes) != n or any(m not in MODES for m in modes):
            raise ValueError(f"EventSDE: mode must be one of {MODES} or a list of them per neuron ({n}), got {mode!r}")
        # a boolean array, not a static field: networks that differ only in their modes share one compilation
        self.hard = jnp.asarray([m == "threshold" for m in modes])
        self.intensity, self.refractory = intensity, float(refractory)
        self.dt0, self.solver, self.rtol, self.atol = float(dt0), solver, float(rtol), float(atol)
        self.root_tol = None if root_tol is None else float(root_tol)
        self.max_steps = None if max_steps is None else int(max_steps)
        self.adjoint, self.brownian = adjoint, brownian

    # ----------------------------------------------------------------- equations
    def lam(self, v: Array) -> Array:
        """The intensity ``lambda(v) [N]``."""
        x = self.beta * (v - self.theta)
        return self.rate * (jnp.exp(x) if self.intensity == "exp" else jax.nn.softplus(x))

    def _drift(self, t: Array, y: Array, current: Callable[[Array], Array] | None) -> Array:
        v, i, _ = y
        drive = self.mu + i if current is None else self.mu + i + current(t)
        ds = jnp.where(self.hard, 0.0, self.lam(v))
        return jnp.stack([(drive - v) / self.tau, -i / self.tau_syn, ds])

    def _diffusion(self, t: Array, y: Array, args: Any) -> lineax.FunctionLinearOperator:
        sigma = self.sigma
        zero = jnp.zeros_like(sigma)
        # noise on the voltage only: an operator from dW [N] to dy [3, N], never a dense [3, N, N] matrix
        return lineax.FunctionLinearOperator(lambda dw: jnp.stack([sigma * dw, zero * dw, zero * dw]),
                                             jax.ShapeDtypeStruct(sigma.shape, sigma.dtype))

    def _conditions(self, y: Array) -> Array:
        """Per neuron, negative until it spikes, zero at the spike."""
        return jnp.where(self.hard, y[0] - self.theta, y[2])

    def _solver(self) -> diffrax.AbstractSolver:
        return {"euler": diffrax.Euler, "heun": diffrax.Heun, "tsit5": diffrax.Tsit5,
                "dopri5": diffrax.Dopri5}[self.solver]()

    # ----------------------------------------------------------------- simulation
    def initial_state(self, key: Any, v0: ArrayLike | None = None, i0: ArrayLike | None = None) -> Array:
        """``y0 [3, N]``: ``v0`` (default ``v_reset``), ``i0`` (default 0), ``s0 = -(E + refractory)``."""
        n, dtype = self.num_neurons, self.mu.dtype
        v = self.v_reset if v0 is None else _vector(v0, n, "v0", dtype)
        i = jnp.zeros(n, dtype) if i0 is None else _vector(i0, n, "i0", dtype)
        s = -(jr.exponential(key, (n,), dtype) + self.refractory)
        return jnp.stack([v, i, s])

    def __call__(self, t1: float, *, key: Any, max_spikes: int, t0: float = 0.0, v0: ArrayLike | None = None,
                 i0: ArrayLike | None = None, current: Callable[[Array], Array] | None = None,
                 path: diffrax.AbstractBrownianPath | None = None) -> SpikeTrain:
        """Simulate one sample on ``[t0, t1]``; at most ``max_spikes`` spikes (all neurons together).

        ``key`` draws the thresholds and (unless ``path`` is given) the Brownian path: the same key gives
        the same path and thresholds, so gradients can be checked by finite differences. ``current(t) -> [N]``
        is an extra input current. Jit it with ``eqx.filter_jit`` (``t0``, ``t1``, ``max_spikes`` static)."""
        t0, t1 = float(t0), float(t1)
        if not t1 > t0:
            raise ValueError(f"EventSDE: t1 must be after t0, got t0={t0}, t1={t1}")
        if int(max_spikes) < 1:
            raise ValueError(f"EventSDE: max_spikes must be at least 1, got {max_spikes}")
        n, dtype = self.num_neurons, self.mu.dtype
        bm_key, y_key, spike_key = jr.split(key, 3)
        y0 = self.initial_state(y_key, v0, i0)
        drift = diffrax.ODETerm(lambda t, y, args: self._drift(t, y, args))
        fixed = self.solver in ("euler", "heun")
        if self.sigma is None:
            terms: Any = drift
        else:
            if path is None:
                path = (grid_brownian(t0, t1, self.dt0, n, bm_key, dtype) if self.brownian == "grid"
                        else GridBrownian(t0, t1, self.dt0, (n,), bm_key, dtype))
            terms = diffrax.MultiTerm(drift, diffrax.ControlTerm(self._diffusion, path))
        if fixed:
            controller: Any = GridSteps(t0, self.dt0)
            max_steps = self.max_steps or (math.ceil((t1 - t0) / self.dt0) + 4)
        else:
            controller = diffrax.PIDController(rtol=self.rtol, atol=self.atol)
            max_steps = self.max_steps or 4096
        tol = self.root_tol or float(jnp.finfo(dtype).eps) ** 0.75
        event = diffrax.Event(lambda t, y, args, **kw: jnp.max(self._conditions(y)),
                              optx.Newton(rtol=tol, atol=tol), direction=True)
        solver = self._solver()
        # reverse mode (jax.grad, training) checkpoints the step loop; forward mode (jax.jvp / jax.jacfwd) is a
        # plain loop that compiles in about half the time, for derivatives in a few directions
        adjoint = diffrax.RecursiveCheckpointAdjoint() if self.adjoint == "reverse" else diffrax.ForwardMode()
        t_end = jnp.asarray(t1, dtype)

        def one_spike(carry: tuple[Array, Array, Array, Array], k: Array) -> tuple[tuple, tuple[Array, Array]]:
            t, y, done, ok = carry
            sol = diffrax.diffeqsolve(terms, solver, t, t_end, self.dt0, y, args=current, event=event,
                                      stepsize_controller=controller, saveat=diffrax.SaveAt(t1=True),
                                      max_steps=max_steps, throw=False, adjoint=adjoint)
            t_new, y_new = sol.ts[-1], sol.ys[-1]
            fired = jnp.asarray(sol.event_mask) & ~done
            who = jnp.argmax(self._conditions(y_new))
            # the spike: the neuron's voltage resets, it draws a new threshold, its targets' currents jump
            threshold = thresholds[k] + self.refractory
            reset = y_new.at[0, who].set(self.v_reset[who]).at[2, who].set(-threshold)
            reset = reset.at[1].add(self.weights[who])
            y_next = jnp.where(fired, reset, y_new)
            good = (sol.result == diffrax.RESULTS.successful) | (sol.result == diffrax.RESULTS.event_occurred)
            ok = ok & (good | done)
            carry = (jnp.where(done, t, t_new), y_next, done | ~fired, ok)
            return carry, (jnp.where(fired, t_new, jnp.inf), jnp.where(fired, who, -1).astype(jnp.int32))

        # the k-th spike's new threshold, drawn up front (one random draw, not one per scan step)
        thresholds = jr.exponential(spike_key, (int(max_spikes),), dtype)
        start = (jnp.asarray(t0, dtype), y0, jnp.asarray(False), jnp.asarray(True))
        (_, _, done, ok), (times, neurons) = jax.lax.scan(one_spike, start, jnp.arange(int(max_spikes)))
        return SpikeTrain(times=times, neurons=neurons, truncated=~done, ok=ok, t0=t0, t1=t1, num_neurons=n)

    def sample(self, t1: float, *, key: Any, num_samples: int, max_spikes: int, t0: float = 0.0,
               v0: ArrayLike | None = None, i0: ArrayLike | None = None,
               current: Callable[[Array], Array] | None = None) -> SpikeTrain:
        """``num_samples`` independent simulations (keys split from ``key``): a batched :class:`SpikeTrain`."""
        keys = jr.split(key, int(num_samples))
        return jax.vmap(lambda k: self(t1, key=k, max_spikes=max_spikes, t0=t0, v0=v0, i0=i0,
                                       current=current))(keys)
