"""The JAX twins of :class:`sde.models.NeuralODE`, :class:`~sde.models.NeuralCDE`, :class:`~sde.models.LSDE`,
:class:`~sde.models.LNSDE` and :class:`~sde.models.GSDE`: equinox modules with the torch models'
constructor arguments, parameter names and equations, solved by :func:`sde.jax.solve` (diffrax).

```python
model = sde.jax.LSDE(input_channels=2, hidden_size=32, output_size=3, key=jax.random.PRNGKey(0))
model = sde.jax.from_torch(torch_model)                 # or the twin of a torch model, same weights
data = model.prepare(batch)                             # SeriesBatch -> Prepared (NumPy/torch side, once)
ll = eqx.filter_jit(lambda m, d, k: m.log_likelihood(d, key=k))(model, data, key)   # [B], pure JAX
bm = model.brownian(data, seed=0)                       # the torch twin's Brownian path for that seed
```

A model is used in two steps. :meth:`SeriesModel.prepare` turns a :class:`~sde.series.SeriesBatch`
into a :class:`Prepared` pytree: the series on the model's clock, standardised, their control path
(:class:`sde.jax.SeriesPath`), the readout times and the fixed step grid. It runs the torch base's
own preprocessing code (``SeriesModel.prepare``, ``PathModel.control_path`` and ``.step`` on the
JAX model's buffers) so the two twins see identical inputs; it has data-dependent shapes, so it
runs outside ``jit``. Everything after (:meth:`latent`, :meth:`log_likelihood`, :meth:`predict`)
is pure JAX: wrap it in ``eqx.filter_jit`` and differentiate with ``eqx.filter_grad``.

SDE models take their noise explicitly: ``brownian=`` (a :class:`sde.jax.BrownianPath` on
``data.grid``, e.g. :meth:`StableSDE.brownian`, the torch twin's path for a seed) or ``key=`` (a
path drawn in JAX on that grid). The torch models' ``brownian_seed`` is kept for the converter but
cannot be used inside ``jit`` (it names a torch generator).

The standardisation buffers (``channel_mean``, ``channel_std``, ``time_scale``, ``train_step``) are
NumPy arrays: they are used in :meth:`prepare` only, in the torch twin's dtype (float64 for the
clock) whatever JAX's x64 setting. The readout's batch-norm uses batch statistics unless
``inference`` (``eqx.nn.inference_mode(model)``; :meth:`predict` switches it on); being functional it
does not update its running statistics in a forward pass: :meth:`SeriesModel.update_batch_norm`
returns the model after torch's update.
"""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import torch
from jaxtyping import Array

from sde.jax.nn import BatchNorm, ClassificationHead, GaussianHead, Linear, Sequential, activation, make_head
from sde.jax.paths import SeriesPath
from sde.jax.solvers import BrownianPath, brownian, brownian_from_torch, brownian_grid, solve, step_grid
from sde.models._base import PathModel as _TorchPathModel
from sde.models._base import SeriesModel as _TorchSeriesModel
from sde.models._base import _end_times
from sde.models.heads import Task
from sde.models.stable import GeometricScheme
from sde.solvers import Method

__all__ = ["GSDE", "LNSDE", "LSDE", "NeuralCDE", "NeuralODE", "PathModel", "Prepared", "SeriesModel", "StableSDE"]

_ADAPTIVE = (Method.BOSH3, Method.DOPRI5, Method.DOPRI8, Method.ADAPTIVE_HEUN)


def _key(key: Array | None) -> Array:
    return jax.random.PRNGKey(0) if key is None else key


def _dtype(dtype: Any) -> np.dtype:
    return np.dtype(dtype or jnp.result_type(float))


class Prepared(eqx.Module):
    """A batch ready for a model (see the module docstring); every array is on the model's clock.

    ``query [B, Q]``: the times the readout needs (each series' end, or every row for forecasts);
    ``ts [T]``: the solve's output times (``0`` and the distinct query times); ``index [B, Q]``: where
    each query sits in ``ts``; ``grid``: the fixed step grid (ODE/CDE, :func:`sde.jax.step_grid`) or the
    Brownian grid (SDE, :func:`sde.jax.brownian_grid`), None for adaptive solves; ``step``: the step.
    """

    path: SeriesPath
    query: Array
    ts: Array
    index: Array
    grid: Array | None
    labels: Array | None
    targets: Array | None
    step: float = eqx.field(static=True)


class _TorchView:
    """The torch base's preprocessing run on the JAX model's buffers: ``SeriesModel.prepare`` (clock and
    standardisation), ``PathModel.control_path`` and ``PathModel.step`` are the torch code itself."""

    _check_channels = _TorchSeriesModel._check_channels
    prepare = _TorchSeriesModel.prepare
    control_path = _TorchPathModel.control_path
    step = _TorchPathModel.step

    def __init__(self, model: PathModel) -> None:
        self.input_channels = model.input_channels
        self.interpolation = model.interpolation
        self.observation_counts = model.observation_counts
        self.path_channels = model.path_channels
        self.step_size = model.step_size
        self.channel_mean = torch.from_numpy(np.asarray(model.channel_mean))
        self.channel_std = torch.from_numpy(np.asarray(model.channel_std))
        self.time_scale = torch.from_numpy(np.asarray(model.time_scale))
        self.train_step = torch.from_numpy(np.asarray(model.train_step))
        self._param = torch.empty(0, dtype=getattr(torch, model.dtype.name))


class SeriesModel(eqx.Module):
    """What the JAX series models share (the twin of :class:`sde.models._base.SeriesModel`)."""

    input_channels: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)
    output_size: int = eqx.field(static=True)
    task: Task = eqx.field(static=True)
    batch_norm: bool | None = eqx.field(static=True)
    head: ClassificationHead | GaussianHead
    channel_mean: np.ndarray
    channel_std: np.ndarray
    time_scale: np.ndarray
    train_step: np.ndarray

    stochastic: ClassVar[bool] = False

    def _init_base(self, input_channels: int, hidden_size: int, output_size: int, task: Task,
                   batch_norm: bool | None, key: Array, dtype: np.dtype) -> None:
        if input_channels < 1 or hidden_size < 1 or output_size < 1:
            raise ValueError("input_channels, hidden_size and output_size must be >= 1, got "
                             f"{input_channels}, {hidden_size}, {output_size}")
        if not isinstance(task, Task):
            raise TypeError(f"task must be a sde.models.Task, got {task!r}")
        self.input_channels, self.hidden_size = int(input_channels), int(hidden_size)
        self.output_size = int(output_size)
        self.task, self.batch_norm = task, batch_norm
        self.head = make_head(task, hidden_size, output_size, batch_norm, key=key, dtype=dtype)
        self.channel_mean = np.zeros(input_channels, dtype)
        self.channel_std = np.ones(input_channels, dtype)
        self.time_scale = np.ones((), np.float64)
        self.train_step = np.full((), np.nan, np.float64)

    @property
    def dtype(self) -> np.dtype:
        """The parameters' dtype."""
        return np.dtype(self.head.net.layers[-1].weight.dtype)

    def latent(self, data: Prepared, *, brownian: BrownianPath | None = None, key: Array | None = None) -> Array:
        """``[B, Q, H]`` latent states at ``data.query``."""
        raise NotImplementedError

    def _readout_states(self, data: Prepared, brownian: BrownianPath | None, key: Array | None) -> Array:
        z = self.latent(data, brownian=brownian, key=key)
        return z if self.task is Task.FORECAST else z[:, 0]

    def log_likelihood(self, data: Prepared, *, brownian: BrownianPath | None = None,
                       key: Array | None = None) -> Array:
        """``[B]``: ``log p(label | series)`` or the Gaussian log density of the targets (as the torch twin)."""
        z = self._readout_states(data, brownian, key)
        if self.task is Task.CLASSIFICATION:
            if data.labels is None:
                raise ValueError("a classification model needs batch.labels")
            return self.head.log_likelihood(z, data.labels)
        if data.targets is None:
            raise ValueError(f"a {self.task.value} model needs batch.targets")
        return self.head.log_likelihood(z, data.targets)

    def __call__(self, data: Prepared, *, brownian: BrownianPath | None = None, key: Array | None = None) -> Array:
        return self.log_likelihood(data, brownian=brownian, key=key)

    def update_batch_norm(self, data: Prepared, *, brownian: BrownianPath | None = None,
                          key: Array | None = None) -> SeriesModel:
        """The model with its readout's batch-norm running statistics updated as a torch training-mode
        forward pass on ``data`` updates them (the same noise gives the same statistics); the model
        itself when the readout has no batch-norm. Call it beside each training step, outside the
        gradient, so that ``predict`` (running statistics) follows a model trained in JAX."""
        layers = self.head.net.layers
        norms = [i for i, layer in enumerate(layers) if isinstance(layer, BatchNorm)]
        if not norms:
            return self
        x = self._readout_states(data, brownian, key)
        for layer in layers[: norms[0]]:
            x = layer(x)
        return eqx.tree_at(lambda m: m.head.net.layers[norms[0]], self, layers[norms[0]].updated(x))

    def predict(self, data: Prepared, *, brownian: BrownianPath | None = None, key: Array | None = None,
                samples: int = 1) -> Array | tuple[Array, Array]:
        """Class probabilities ``[B, n_classes]`` or ``(mean, std)``, with the batch-norm's running statistics.

        Stochastic models average ``samples`` draws (``key`` split per draw; with ``brownian`` one draw),
        and the std then adds the spread of the sampled means, as the torch twin."""
        model = eqx.nn.inference_mode(self)
        if self.stochastic and brownian is None:
            keys = list(jax.random.split(_key(key), max(int(samples), 1)))
            draws = [model._readout_states(data, None, k) for k in keys]
        else:
            draws = [model._readout_states(data, brownian, key)]
        if isinstance(model.head, ClassificationHead):
            return jnp.stack([model.head.probabilities(z) for z in draws]).mean(0)
        preds = [model.head.predict(z) for z in draws]
        means = jnp.stack([m for m, _ in preds])
        std = jnp.sqrt(preds[0][1] ** 2 + means.var(0))
        return means.mean(0), std


class PathModel(SeriesModel):
    """A model driven by the control path (twin of :class:`sde.models._base.PathModel`)."""

    interpolation: Any = eqx.field(static=True)
    observation_counts: bool = eqx.field(static=True)
    method: Method | None = eqx.field(static=True)
    step_size: float | None = eqx.field(static=True)

    def _init_path(self, interpolation: Any, observation_counts: bool, method: Method | None,
                   step_size: float | None) -> None:
        from sde.paths import Interpolation

        self.interpolation = Interpolation.HERMITE if interpolation is None else interpolation
        if not isinstance(self.interpolation, Interpolation):
            raise TypeError(f"interpolation must be a sde.paths.Interpolation, got {interpolation!r}")
        if method is not None and not isinstance(method, Method):
            raise TypeError(f"method must be a sde.solvers.Method, got {method!r}")
        if step_size is not None and not step_size > 0:
            raise ValueError(f"step_size must be positive, got {step_size}")
        self.observation_counts, self.method, self.step_size = bool(observation_counts), method, step_size

    @property
    def path_channels(self) -> int:
        return 1 + self.input_channels * (2 if self.observation_counts else 1)

    def default_method(self) -> Method:
        raise NotImplementedError

    @property
    def solver_method(self) -> Method:
        return self.method if self.method is not None else self.default_method()

    def _grid(self, ts: np.ndarray, step: float, path: SeriesPath) -> np.ndarray | None:
        """The fixed step grid of a solve on ``ts`` (None: adaptive)."""
        raise NotImplementedError

    def prepare(self, batch: Any) -> Prepared:
        """The batch as the model reads it (see the module docstring); runs outside ``jit``."""
        view = _TorchView(self)
        prepared = view.prepare(batch.to(device="cpu"))
        path = view.control_path(prepared)
        step = float(view.step(prepared))
        query = prepared.time if self.task is Task.FORECAST else _end_times(prepared.time, prepared.mask)[:, None]
        start = torch.zeros(1, dtype=query.dtype)
        ts, where = torch.unique(torch.cat([start, query.flatten().clamp(min=0)]), sorted=True, return_inverse=True)
        ts_np = ts.numpy()
        grid = None if ts_np.size == 1 else self._grid(ts_np, step, path)
        labels = targets = None
        if prepared.labels is not None and self.task is Task.CLASSIFICATION:
            lab = prepared.labels.numpy()
            bad = np.flatnonzero((lab < 0) | (lab >= self.output_size))
            if bad.size:
                raise ValueError(f"series {bad[0]}: label {lab[bad[0]]} outside 0..{self.output_size - 1}")
            labels = jnp.asarray(lab.astype(np.int32))
        if prepared.targets is not None and self.task is not Task.CLASSIFICATION:
            tgt = prepared.targets.to(getattr(torch, self.dtype.name))
            if self.task is Task.FORECAST:
                if tgt.dim() != 3 or tgt.shape[:2] != prepared.mask.shape:
                    raise ValueError("forecast targets must be [B, L, O] aligned with the rows, "
                                     f"got {tuple(tgt.shape)}")
                tgt = torch.where(prepared.mask[..., None], tgt, torch.full_like(tgt, float("nan")))
            targets = jnp.asarray(tgt.numpy().copy())  # copies: JAX may alias NumPy memory, torch mutates in place
        return Prepared(SeriesPath.from_torch(path), jnp.asarray(query.numpy().copy()), jnp.asarray(ts_np),
                        jnp.asarray(where[1:].view(query.shape).numpy().astype(np.int32)),
                        None if grid is None else jnp.asarray(grid), labels, targets, step)

    def _pick(self, ys: Array, data: Prepared) -> Array:
        return jnp.take_along_axis(ys, data.index[..., None], 1)

    def _initial(self, data: Prepared, layer: Linear) -> Array:
        return layer(data.path.evaluate(data.path.grid[0]))


# --------------------------------------------------------------------------- neural ODE and CDE
def _mlp(in_size: int, width: int, out_size: int, num_layers: int, key: Array, dtype: np.dtype) -> list[Any]:
    """``Linear -> ReLU -> (Linear -> ReLU) x (layers - 1) -> Linear -> tanh`` (torch's layer order)."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    keys = jax.random.split(key, num_layers + 1)
    layers: list[Any] = [Linear(in_size, width, key=keys[0], dtype=dtype), activation(jax.nn.relu)]
    for i in range(num_layers - 1):
        layers += [Linear(width, width, key=keys[i + 1], dtype=dtype), activation(jax.nn.relu)]
    return layers + [Linear(width, out_size, key=keys[-1], dtype=dtype), activation(jnp.tanh)]


class ODEVectorField(eqx.Module):
    """``f(t, z) -> [B, H]`` (twin of :class:`sde.models.ode.ODEVectorField`)."""

    net: Sequential

    def __call__(self, t: Array, z: Array) -> Array:
        return self.net(z)


class CDEVectorField(eqx.Module):
    """``f(t, z) -> [B, H, C]`` (twin of :class:`sde.models.cde.CDEVectorField`)."""

    net: Sequential
    hidden_size: int = eqx.field(static=True)
    path_channels: int = eqx.field(static=True)

    def __call__(self, t: Array, z: Array) -> Array:
        return self.net(z).reshape(*z.shape[:-1], self.hidden_size, self.path_channels)


class NeuralODE(PathModel):
    """Twin of :class:`sde.models.NeuralODE`: ``z(0) = zeta(X(0))``, ``dz/dt = f(z)``; adaptive Dopri5
    (diffrax's PID controller) by default, or a fixed-step method on the torch twin's grid."""

    initial: Linear
    field: ODEVectorField
    hidden_hidden_size: int = eqx.field(static=True)
    num_layers: int = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)

    def __init__(self, input_channels: int, hidden_size: int = 32, output_size: int = 2,
                 task: Task = Task.CLASSIFICATION, interpolation: Any = None, *, hidden_hidden_size: int | None = None,
                 num_layers: int = 3, observation_counts: bool = False, method: Method | None = None,
                 step_size: float | None = None, rtol: float = 1e-3, atol: float = 1e-6,
                 batch_norm: bool | None = None, key: Array | None = None, dtype: Any = None) -> None:
        dtype = _dtype(dtype)
        k_head, k_init, k_field = jax.random.split(_key(key), 3)
        self._init_base(input_channels, hidden_size, output_size, task, batch_norm, k_head, dtype)
        self._init_path(interpolation, observation_counts, method, step_size)
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"rtol and atol must be positive, got rtol={rtol}, atol={atol}")
        self.rtol, self.atol = float(rtol), float(atol)
        self.hidden_hidden_size, self.num_layers = int(hidden_hidden_size or hidden_size), int(num_layers)
        self.initial = Linear(self.path_channels, hidden_size, key=k_init, dtype=dtype)
        self.field = ODEVectorField(Sequential(tuple(_mlp(hidden_size, self.hidden_hidden_size, hidden_size,
                                                          num_layers, k_field, dtype))))

    def default_method(self) -> Method:
        return Method.DOPRI5

    def _grid(self, ts: np.ndarray, step: float, path: SeriesPath) -> np.ndarray | None:
        return None if self.solver_method in _ADAPTIVE else step_grid(ts, step)

    def latent(self, data: Prepared, *, brownian: BrownianPath | None = None, key: Array | None = None) -> Array:
        z0 = self._initial(data, self.initial)
        if data.ts.shape[0] == 1:
            return self._pick(z0[:, None, :], data)
        if self.solver_method in _ADAPTIVE:
            ys = solve(self.field, z0, data.ts, method=self.solver_method, step_size=self.step_size, rtol=self.rtol,
                       atol=self.atol).ys
        else:
            ys = solve(self.field, z0, data.ts, method=self.solver_method, grid=data.grid).ys
        return self._pick(ys, data)


class NeuralCDE(PathModel):
    """Twin of :class:`sde.models.NeuralCDE`: ``z(0) = zeta(X(0))``, ``dz = f(z) dX``; fixed-step RK4 by default."""

    initial: Linear
    field: CDEVectorField
    hidden_hidden_size: int = eqx.field(static=True)
    num_layers: int = eqx.field(static=True)

    def __init__(self, input_channels: int, hidden_size: int = 32, output_size: int = 2,
                 task: Task = Task.CLASSIFICATION, interpolation: Any = None, *, hidden_hidden_size: int | None = None,
                 num_layers: int = 3, observation_counts: bool = False, method: Method | None = None,
                 step_size: float | None = None, batch_norm: bool | None = None, key: Array | None = None,
                 dtype: Any = None) -> None:
        dtype = _dtype(dtype)
        k_head, k_init, k_field = jax.random.split(_key(key), 3)
        self._init_base(input_channels, hidden_size, output_size, task, batch_norm, k_head, dtype)
        self._init_path(interpolation, observation_counts, method, step_size)
        self.hidden_hidden_size, self.num_layers = int(hidden_hidden_size or hidden_size), int(num_layers)
        C = self.path_channels
        self.initial = Linear(C, hidden_size, key=k_init, dtype=dtype)
        net = Sequential(tuple(_mlp(hidden_size, self.hidden_hidden_size, hidden_size * C, num_layers, k_field, dtype)))
        self.field = CDEVectorField(net, hidden_size, C)

    def default_method(self) -> Method:
        return Method.RK4

    def _grid(self, ts: np.ndarray, step: float, path: SeriesPath) -> np.ndarray | None:
        return None if self.solver_method in _ADAPTIVE else step_grid(ts, step, path.grid)

    def latent(self, data: Prepared, *, brownian: BrownianPath | None = None, key: Array | None = None) -> Array:
        z0 = self._initial(data, self.initial)
        if data.ts.shape[0] == 1:
            return self._pick(z0[:, None, :], data)
        adaptive = self.solver_method in _ADAPTIVE
        # as the torch twin: the reference step is the first step of an adaptive solve
        ys = solve(self.field, z0, data.ts, control=data.path, method=self.solver_method,
                   step_size=data.step if adaptive else None, grid=None if adaptive else data.grid).ys
        return self._pick(ys, data)


# --------------------------------------------------------------------------- stable neural SDEs
def _time_features(t: Array, like: Array) -> Array:
    """``[B, 2]``: ``sin t, cos t``."""
    t = jnp.broadcast_to(jnp.asarray(t, like.dtype).reshape(-1, 1), (like.shape[0], 1))
    return jnp.concatenate([jnp.sin(t), jnp.cos(t)], -1)


class _System(eqx.Module):
    """The SDE of a model on one batch: ``f``, ``g`` with the batch's control path bound."""

    model: StableSDE
    path: SeriesPath
    noise_type: ClassVar[str] = "diagonal"
    sde_type: ClassVar[str] = "ito"

    def f(self, t: Array, y: Array) -> Array:
        # the path is held at its last value beyond its end (no extrapolation of the last piece)
        x = self.path.evaluate(jnp.minimum(t, self.path.grid[-1].astype(t.dtype)).astype(y.dtype))
        return self.model.drift(t, y, x)

    def g(self, t: Array, y: Array) -> Array:
        return self.model.diffusion(t, y)


class StableSDE(PathModel):
    """Shared parts of the JAX :class:`LSDE`, :class:`LNSDE`, :class:`GSDE` (twin of
    :class:`sde.models.stable.StableSDE`)."""

    initial: Linear
    embed_control: Linear
    embed_state: Linear
    combine: Linear
    gamma_net: Sequential
    sigma_net: Sequential
    theta: Array
    hidden_hidden_size: int = eqx.field(static=True)
    num_layers: int = eqx.field(static=True)
    clip_drift: bool = eqx.field(static=True)
    clip_diffusion: bool = eqx.field(static=True)
    brownian_seed: int | None = eqx.field(static=True)

    stochastic: ClassVar[bool] = True
    time_in_drift: ClassVar[bool] = True

    def __init__(self, input_channels: int, hidden_size: int = 32, output_size: int = 2,
                 task: Task = Task.CLASSIFICATION, interpolation: Any = None, *, hidden_hidden_size: int | None = None,
                 num_layers: int = 3, observation_counts: bool = False, method: Method | None = None,
                 step_size: float | None = None, clip_drift: bool = True, clip_diffusion: bool = True,
                 theta: float = 1.0, brownian_seed: int | None = None, batch_norm: bool | None = None,
                 key: Array | None = None, dtype: Any = None) -> None:
        dtype = _dtype(dtype)
        keys = jax.random.split(_key(key), 8)
        self._init_base(input_channels, hidden_size, output_size, task, batch_norm, keys[0], dtype)
        self._init_path(interpolation, observation_counts, method, step_size)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        hh = hidden_size if hidden_hidden_size is None else int(hidden_hidden_size)
        self.hidden_hidden_size, self.num_layers = hh, int(num_layers)
        self.clip_drift, self.clip_diffusion, self.brownian_seed = bool(clip_drift), bool(clip_diffusion), brownian_seed
        C = self.path_channels
        self.initial = Linear(C, hidden_size, key=keys[1], dtype=dtype)
        self.embed_control = Linear(C, hidden_size, key=keys[2], dtype=dtype)
        self.embed_state = Linear(hidden_size + (2 if self.time_in_drift else 0), hh, key=keys[3], dtype=dtype)
        self.combine = Linear(hh + hidden_size, hh, key=keys[4], dtype=dtype)
        gkeys = jax.random.split(keys[5], num_layers)
        layers: list[Any] = [activation(jax.nn.relu)]
        for i in range(num_layers - 1):
            layers += [Linear(hh, hh, key=gkeys[i], dtype=dtype), activation(jax.nn.relu)]
        layers.append(Linear(hh, hidden_size, key=gkeys[-1], dtype=dtype))
        self.gamma_net = Sequential(tuple(layers))
        s1, s2 = jax.random.split(keys[6])
        self.sigma_net = Sequential((Linear(2, hidden_size, key=s1, dtype=dtype), activation(jax.nn.relu),
                                     Linear(hidden_size, hidden_size, key=s2, dtype=dtype)))
        self.theta = jnp.asarray(float(theta), dtype)

    def default_method(self) -> Method:
        return Method.EULER

    def _grid(self, ts: np.ndarray, step: float, path: SeriesPath) -> np.ndarray | None:
        return brownian_grid(float(ts[0]), float(ts[-1]), step)

    # ------------------------------------------------------------------ building blocks (as the torch twin)
    def gamma(self, t: Array, z: Array, x: Array) -> Array:
        state = jnp.concatenate([_time_features(t, z), z], -1) if self.time_in_drift else z
        mixed = self.combine(jnp.concatenate([self.embed_state(state), self.embed_control(x)], -1))
        out = self.gamma_net(mixed)
        return jnp.tanh(out) if self.clip_drift else out

    def sigma(self, t: Array, z: Array) -> Array:
        return jax.nn.sigmoid(self.theta) * jax.nn.relu(self.sigma_net(_time_features(t, z)))

    def _clip(self, g: Array) -> Array:
        return jnp.tanh(g) if self.clip_diffusion else g

    def drift(self, t: Array, z: Array, x: Array) -> Array:
        return self.gamma(t, z, x)

    def diffusion(self, t: Array, z: Array) -> Array:
        raise NotImplementedError

    def initial_state(self, x0: Array) -> Array:
        return self.initial(x0)

    def state(self, solved: Array) -> Array:
        return solved

    # ------------------------------------------------------------------ noise and solve
    def brownian(self, data: Prepared, seed: int | None = None) -> BrownianPath:
        """The Brownian path the torch twin draws for ``seed`` (default ``brownian_seed``) on this batch:
        :func:`sde.solvers.brownian` on ``[0, ts[-1]]`` with the model's step, converted. Outside ``jit``."""
        from sde.solvers import BrownianKind
        from sde.solvers import brownian as torch_brownian

        seed = self.brownian_seed if seed is None else seed
        if seed is None:
            raise ValueError("brownian() needs a seed (the model has no brownian_seed); or pass key= to the model")
        ts = np.asarray(data.ts)
        bm = torch_brownian(float(ts[0]), float(ts[-1]), (data.query.shape[0], self.hidden_size), dt=data.step,
                            kind=BrownianKind.PATH, seed=int(seed), dtype=getattr(torch, self.dtype.name))
        return brownian_from_torch(bm)

    def latent(self, data: Prepared, *, brownian: BrownianPath | None = None, key: Array | None = None) -> Array:
        y0 = self.initial_state(data.path.evaluate(data.path.grid[0]))
        if data.ts.shape[0] == 1:
            return self.state(self._pick(y0[:, None, :], data))
        if brownian is None:
            if key is None:
                raise ValueError("an SDE model needs brownian= (e.g. model.brownian(data, seed)) or key=")
            brownian = _draw(key, data.grid, y0)
        ys = solve(_System(self, data.path), y0, data.ts, method=self.solver_method, brownian=brownian).ys
        return self.state(self._pick(ys, data))


def _draw(key: Array, grid: Array, y0: Array) -> BrownianPath:
    return brownian(key, grid, tuple(y0.shape), y0.dtype)


class LSDE(StableSDE):
    """Neural Langevin-type SDE ``dz = gamma(z~) dt + sigma(t) dW`` (twin of :class:`sde.models.LSDE`)."""

    time_in_drift: ClassVar[bool] = False

    def diffusion(self, t: Array, z: Array) -> Array:
        return self._clip(self.sigma(t, z))


class LNSDE(StableSDE):
    """Neural linear-noise SDE ``dz = gamma(t, z~) dt + sigma(t) z dW`` (twin of :class:`sde.models.LNSDE`)."""

    def diffusion(self, t: Array, z: Array) -> Array:
        return self._clip(self.sigma(t, z) * z)


class GSDE(StableSDE):
    """Neural geometric SDE ``dz = z gamma dt + z sigma dW`` (twin of :class:`sde.models.GSDE`), solved in
    ``log z`` by default (:class:`sde.models.stable.GeometricScheme`)."""

    scheme: GeometricScheme = eqx.field(static=True)

    def __init__(self, input_channels: int, hidden_size: int = 32, output_size: int = 2,
                 task: Task = Task.CLASSIFICATION, interpolation: Any = None, *,
                 scheme: GeometricScheme = GeometricScheme.LOG, **kwargs: Any) -> None:
        super().__init__(input_channels, hidden_size, output_size, task, interpolation, **kwargs)
        if not isinstance(scheme, GeometricScheme):
            raise TypeError(f"scheme must be a GeometricScheme, got {scheme!r}")
        self.scheme = scheme

    def _z(self, y: Array) -> Array:
        return jnp.exp(y) if self.scheme is GeometricScheme.LOG else y

    def drift(self, t: Array, y: Array, x: Array) -> Array:
        z = self._z(y)
        rate = self.gamma(t, z, x)
        if self.scheme is GeometricScheme.LOG:
            return rate - 0.5 * self._clip(self.sigma(t, y)) ** 2  # Itô correction of d log z
        return z * rate

    def diffusion(self, t: Array, y: Array) -> Array:
        rate = self._clip(self.sigma(t, y))
        return rate if self.scheme is GeometricScheme.LOG else self._z(y) * rate

    def initial_state(self, x0: Array) -> Array:
        log_z0 = self.initial(x0)
        return log_z0 if self.scheme is GeometricScheme.LOG else jnp.exp(log_z0)

    def state(self, solved: Array) -> Array:
        return self._z(solved)

