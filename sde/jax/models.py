"""The JAX twins of :class:`sde.models.NeuralODE`, :class:`~sde.models.NeuralCDE`, :class:`~sde.models.LSDE`,
:class:`~sde.models.LNSDE` and :class:`~sde.models.GSDE`: equinox modules with the torch models'
constructor arguments, parameter names and equations, solved by :func:`sde.jax.solve` (diffrax).

```python
model = sde.jax.LSDE(input_channels=2, hidden_size=32, output_size=3, key=jax.random.PRNGKey(0))
model = sde.jax.from_torch(torch_model)                 # or the twin of a torch model, same weights
data = model.prepare(batch)                             # SeriesBatch -> Prepared (NumPy/torch side, once)
ll = eqx.filter_jit(lambda m, d, k: m.objective(d, key=k))(model, data, key)   # [B], pure JAX
bm = model.brownian(data, seed=0)                       # the torch twin's Brownian path for that seed
```

A model is used in two steps. :meth:`AbstractPathModel.prepare` turns a :class:`~sde.series.SeriesBatch`
into a :class:`Prepared` pytree: the series on the model's clock, standardised, their control path
(:class:`sde.jax.SeriesPath`), the readout times and the fixed step grid. It runs the torch base's
own preprocessing code (``SeriesModel.prepare``, ``PathModel.control_path`` and ``.step`` on the
JAX model's buffers) so the two twins see identical inputs; it has data-dependent shapes, so it
runs outside ``jit``. Everything after (:meth:`latent`, :meth:`objective`, :meth:`predict`)
is pure JAX: wrap it in ``eqx.filter_jit`` and differentiate with ``eqx.filter_grad``.

SDE models take their noise explicitly: ``brownian=`` (a :class:`sde.jax.BrownianPath` on
``data.grid``, e.g. :meth:`AbstractStableSDE.brownian`, the torch twin's path for a seed) or ``key=`` (a
path drawn in JAX on that grid). The torch models' ``brownian_seed`` is kept for the converter but
cannot be used inside ``jit`` (it names a torch generator).

The standardisation buffers (``channel_mean``, ``channel_std``, ``time_scale``, ``train_step``) are
NumPy arrays: they are used in :meth:`prepare` only, in the torch twin's dtype (float64 for the
clock) whatever JAX's x64 setting. The readout's batch-norm uses batch statistics unless
``inference`` (``eqx.nn.inference_mode(model)``; :meth:`predict` switches it on); being functional it
does not update its running statistics in a forward pass: :meth:`AbstractSeriesModel.update_batch_norm`
returns the model after torch's update.

Classes follow equinox's abstract/final rule: the abstract ones are named ``Abstract*`` and declare
what a concrete model supplies (``latent``, ``default_method``, ``_grid``, the class variables
``stochastic``, ``time_in_drift``, ``noise``) as abstract; the concrete models (:class:`NeuralODE`,
:class:`NeuralCDE`, :class:`LSDE`, :class:`LNSDE`, :class:`GSDE`) are final and override nothing but
those. The stable SDEs' equations and layer layout are the torch twin's own code, written once over an
array namespace (:mod:`sde.models._stable_equations`). ``SeriesModel``, ``PathModel`` and ``StableSDE``
are the old names of the abstract classes.
"""

from __future__ import annotations

import abc
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
from sde.models import _stable_equations as eq
from sde.models._stable_equations import GeometricScheme, Noise
from sde.models.heads import Task
from sde.paths import Interpolation
from sde.solvers import Method
from tpp.options import Interval, Options, check_params

__all__ = ["GSDE", "LNSDE", "LSDE", "AbstractPathModel", "AbstractSeriesModel", "AbstractStableSDE", "NeuralCDE",
           "NeuralODE", "PathModel", "Prepared", "SeriesModel", "StableSDE"]

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

    def __init__(self, model: AbstractPathModel) -> None:
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


class AbstractSeriesModel(eqx.Module):
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

    _constraints: ClassVar[dict[str, Any]] = {
        "input_channels": Interval(1, None, integer=True),
        "hidden_size": Interval(1, None, integer=True),
        "output_size": Interval(1, None, integer=True),
        "task": Options(Task, strict=True),
        "interpolation": Options(Interpolation, strict=True, none_ok=True),
        "method": Options(Method, strict=True, none_ok=True),
        "step_size": Interval(0, None, closed="neither", none_ok=True),
        "num_layers": Interval(1, None, integer=True),
        "hidden_hidden_size": Interval(1, None, integer=True, none_ok=True),
        "rtol": Interval(0, None, closed="neither"),
        "atol": Interval(0, None, closed="neither"),
        "scheme": Options(GeometricScheme, strict=True),
    }

    def _init_base(self, input_channels: int, hidden_size: int, output_size: int, task: Task,
                   batch_norm: bool | None, key: Array, dtype: np.dtype) -> None:
        check_params(self, input_channels=input_channels, hidden_size=hidden_size, output_size=output_size, task=task)
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

    # Abstract class variables as abstract properties (equinox's AbstractClassVar cannot be read from the
    # string annotations of ``from __future__ import annotations``); a final class sets a ClassVar.
    @property
    @abc.abstractmethod
    def stochastic(self) -> bool:
        """Whether a forward pass draws noise (SDE models): :meth:`predict` then averages samples."""

    @abc.abstractmethod
    def latent(self, data: Prepared, *, brownian: BrownianPath | None = None, key: Array | None = None) -> Array:
        """``[B, Q, H]`` latent states at ``data.query``."""

    def _readout_states(self, data: Prepared, brownian: BrownianPath | None, key: Array | None) -> Array:
        z = self.latent(data, brownian=brownian, key=key)
        return z if self.task is Task.FORECAST else z[:, 0]

    def objective(self, data: Prepared, *, brownian: BrownianPath | None = None, key: Array | None = None) -> Array:
        """``[B]`` the training objective, as the torch twin's: ``log p(label | series)`` (classification) or
        the Gaussian log density of the targets."""
        z = self._readout_states(data, brownian, key)
        if self.task is Task.CLASSIFICATION:
            if data.labels is None:
                raise ValueError("a classification model needs batch.labels")
            return self.head.log_likelihood(z, data.labels)
        if data.targets is None:
            raise ValueError(f"a {self.task.value} model needs batch.targets")
        return self.head.log_likelihood(z, data.targets)

    def log_likelihood(self, data: Prepared, *, brownian: BrownianPath | None = None,
                       key: Array | None = None) -> Array:
        """Deprecated alias of :meth:`objective` (not a likelihood of the series)."""
        return self.objective(data, brownian=brownian, key=key)

    def __call__(self, data: Prepared, *, brownian: BrownianPath | None = None, key: Array | None = None) -> Array:
        return self.objective(data, brownian=brownian, key=key)

    def update_batch_norm(self, data: Prepared, *, brownian: BrownianPath | None = None,
                          key: Array | None = None) -> AbstractSeriesModel:
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


class AbstractPathModel(AbstractSeriesModel):
    """A model driven by the control path (twin of :class:`sde.models._base.PathModel`)."""

    interpolation: Any = eqx.field(static=True)
    observation_counts: bool = eqx.field(static=True)
    method: Method | None = eqx.field(static=True)
    step_size: float | None = eqx.field(static=True)

    def _init_path(self, interpolation: Any, observation_counts: bool, method: Method | None,
                   step_size: float | None) -> None:
        check_params(self, interpolation=interpolation, method=method, step_size=step_size)
        self.interpolation = Interpolation.HERMITE if interpolation is None else interpolation
        self.observation_counts, self.method, self.step_size = bool(observation_counts), method, step_size

    @property
    def path_channels(self) -> int:
        return 1 + self.input_channels * (2 if self.observation_counts else 1)

    @abc.abstractmethod
    def default_method(self) -> Method:
        """The solver used when ``method`` is None."""

    @property
    def solver_method(self) -> Method:
        return self.method if self.method is not None else self.default_method()

    @abc.abstractmethod
    def _grid(self, ts: np.ndarray, step: float, path: SeriesPath) -> np.ndarray | None:
        """The fixed step grid of a solve on ``ts`` (None: adaptive)."""

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
    """``Linear -> ReLU -> (Linear -> ReLU) x (layers - 1) -> Linear -> tanh`` (torch's layer order;
    ``num_layers`` checked by the model's constraint table)."""
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


class NeuralODE(AbstractPathModel):
    """Twin of :class:`sde.models.NeuralODE`: ``z(0) = zeta(X(0))``, ``dz/dt = f(z)``; adaptive Dopri5
    (diffrax's PID controller) by default, or a fixed-step method on the torch twin's grid."""

    initial: Linear
    field: ODEVectorField
    hidden_hidden_size: int = eqx.field(static=True)
    num_layers: int = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)

    stochastic: ClassVar[bool] = False

    def __init__(self, input_channels: int, hidden_size: int = 32, output_size: int = 2,
                 task: Task = Task.CLASSIFICATION, interpolation: Any = None, *, hidden_hidden_size: int | None = None,
                 num_layers: int = 3, observation_counts: bool = False, method: Method | None = None,
                 step_size: float | None = None, rtol: float = 1e-3, atol: float = 1e-6,
                 batch_norm: bool | None = None, key: Array | None = None, dtype: Any = None) -> None:
        dtype = _dtype(dtype)
        k_head, k_init, k_field = jax.random.split(_key(key), 3)
        self._init_base(input_channels, hidden_size, output_size, task, batch_norm, k_head, dtype)
        self._init_path(interpolation, observation_counts, method, step_size)
        check_params(self, rtol=rtol, atol=atol, num_layers=num_layers, hidden_hidden_size=hidden_hidden_size)
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


class NeuralCDE(AbstractPathModel):
    """Twin of :class:`sde.models.NeuralCDE`: ``z(0) = zeta(X(0))``, ``dz = f(z) dX``; fixed-step RK4 by default."""

    initial: Linear
    field: CDEVectorField
    hidden_hidden_size: int = eqx.field(static=True)
    num_layers: int = eqx.field(static=True)

    stochastic: ClassVar[bool] = False

    def __init__(self, input_channels: int, hidden_size: int = 32, output_size: int = 2,
                 task: Task = Task.CLASSIFICATION, interpolation: Any = None, *, hidden_hidden_size: int | None = None,
                 num_layers: int = 3, observation_counts: bool = False, method: Method | None = None,
                 step_size: float | None = None, batch_norm: bool | None = None, key: Array | None = None,
                 dtype: Any = None) -> None:
        dtype = _dtype(dtype)
        k_head, k_init, k_field = jax.random.split(_key(key), 3)
        self._init_base(input_channels, hidden_size, output_size, task, batch_norm, k_head, dtype)
        self._init_path(interpolation, observation_counts, method, step_size)
        check_params(self, num_layers=num_layers, hidden_hidden_size=hidden_hidden_size)
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
class _System(eqx.Module):
    """The SDE of a model on one batch: ``f``, ``g`` with the batch's control path bound."""

    model: AbstractStableSDE
    path: SeriesPath
    noise_type: ClassVar[str] = "diagonal"
    sde_type: ClassVar[str] = "ito"

    def f(self, t: Array, y: Array) -> Array:
        return eq.field_drift(eq.jax_namespace(), self.model, self.path, self.path.grid[-1].astype(t.dtype), t, y)

    def g(self, t: Array, y: Array) -> Array:
        return self.model.diffusion(t, y)


def _sequential(spec: tuple[tuple[int, int] | str, ...], key: Array, dtype: np.dtype) -> Sequential:
    """A :class:`Sequential` from a layer list of :func:`sde.models._stable_equations.layout`."""
    keys = iter(jax.random.split(key, max(sum(layer != eq.RELU for layer in spec), 1)))
    return Sequential(tuple(activation(jax.nn.relu) if layer == eq.RELU else Linear(*layer, key=next(keys), dtype=dtype)
                            for layer in spec))


class AbstractStableSDE(AbstractPathModel):
    """What the JAX :class:`LSDE`, :class:`LNSDE`, :class:`GSDE` share (twin of
    :class:`sde.models.stable.StableSDE`): the layers, the noise and the solve; the equations are the
    torch twin's (:mod:`sde.models._stable_equations`). A concrete class says whether the drift sees the
    time (``time_in_drift``) and which noise it has (``noise``)."""

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

    @property
    @abc.abstractmethod
    def time_in_drift(self) -> bool:
        """Whether the drift network sees ``sin t, cos t`` (all but the LSDE)."""

    @property
    @abc.abstractmethod
    def noise(self) -> Noise:
        """The diffusion of the model (:class:`sde.models._stable_equations.Noise`)."""

    def _init_stable(self, input_channels: int, hidden_size: int = 32, output_size: int = 2,
                     task: Task = Task.CLASSIFICATION, interpolation: Any = None, *,
                     hidden_hidden_size: int | None = None, num_layers: int = 3, observation_counts: bool = False,
                     method: Method | None = None, step_size: float | None = None, clip_drift: bool = True,
                     clip_diffusion: bool = True, theta: float = 1.0, brownian_seed: int | None = None,
                     batch_norm: bool | None = None, key: Array | None = None, dtype: Any = None) -> None:
        """The constructor of every stable SDE (the torch twin's arguments, plus ``key`` and ``dtype``)."""
        dtype = _dtype(dtype)
        keys = jax.random.split(_key(key), 8)
        self._init_base(input_channels, hidden_size, output_size, task, batch_norm, keys[0], dtype)
        self._init_path(interpolation, observation_counts, method, step_size)
        check_params(self, num_layers=num_layers, hidden_hidden_size=hidden_hidden_size)
        hh = hidden_size if hidden_hidden_size is None else int(hidden_hidden_size)
        self.hidden_hidden_size, self.num_layers = hh, int(num_layers)
        self.clip_drift, self.clip_diffusion, self.brownian_seed = bool(clip_drift), bool(clip_diffusion), brownian_seed
        spec = eq.layout(self.path_channels, hidden_size, hh, self.num_layers, self.time_in_drift)
        self.initial, self.embed_control, self.embed_state, self.combine = (
            Linear(*spec.linear[name], key=k, dtype=dtype)
            for name, k in zip(("initial", "embed_control", "embed_state", "combine"), keys[1:5]))
        self.gamma_net = _sequential(spec.gamma_net, keys[5], dtype)
        self.sigma_net = _sequential(spec.sigma_net, keys[6], dtype)
        self.theta = jnp.asarray(float(theta), dtype)

    def default_method(self) -> Method:
        return Method.EULER

    def _grid(self, ts: np.ndarray, step: float, path: SeriesPath) -> np.ndarray | None:
        return brownian_grid(float(ts[0]), float(ts[-1]), step)

    # ------------------------------------------------------------------ the equations (the torch twin's)
    def gamma(self, t: Array, z: Array, x: Array) -> Array:
        """``[B, H]`` the drift network on ``z~`` (:func:`sde.models._stable_equations.gamma`)."""
        return eq.gamma(eq.jax_namespace(), self, t, z, x)

    def sigma(self, t: Array, z: Array) -> Array:
        """``[B, H]`` the noise scale ``sigmoid(theta) relu(MLP(sin t, cos t))``."""
        return eq.sigma(eq.jax_namespace(), self, t, z)

    def drift(self, t: Array, y: Array, x: Array) -> Array:
        """``[B, H]`` drift of the solved state at ``t`` given the path value ``x = X(t)``."""
        return eq.drift(eq.jax_namespace(), self, t, y, x)

    def diffusion(self, t: Array, y: Array) -> Array:
        """``[B, H]`` diagonal diffusion of the solved state."""
        return eq.diffusion(eq.jax_namespace(), self, t, y)

    def initial_state(self, x0: Array) -> Array:
        """The solved state at ``t = 0`` from ``X(0)``."""
        return eq.initial_state(eq.jax_namespace(), self, x0)

    def state(self, solved: Array) -> Array:
        """The latent ``z`` from the solved state (identity but for the GSDE in log space)."""
        return eq.state(eq.jax_namespace(), self, solved)

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


class LSDE(AbstractStableSDE):
    """Neural Langevin-type SDE ``dz = gamma(z~) dt + sigma(t) dW`` (twin of :class:`sde.models.LSDE`)."""

    time_in_drift: ClassVar[bool] = False
    noise: ClassVar[Noise] = Noise.ADDITIVE

    def __init__(self, input_channels: int, hidden_size: int = 32, output_size: int = 2,
                 task: Task = Task.CLASSIFICATION, interpolation: Any = None, **kwargs: Any) -> None:
        self._init_stable(input_channels, hidden_size, output_size, task, interpolation, **kwargs)


class LNSDE(AbstractStableSDE):
    """Neural linear-noise SDE ``dz = gamma(t, z~) dt + sigma(t) z dW`` (twin of :class:`sde.models.LNSDE`)."""

    time_in_drift: ClassVar[bool] = True
    noise: ClassVar[Noise] = Noise.LINEAR

    def __init__(self, input_channels: int, hidden_size: int = 32, output_size: int = 2,
                 task: Task = Task.CLASSIFICATION, interpolation: Any = None, **kwargs: Any) -> None:
        self._init_stable(input_channels, hidden_size, output_size, task, interpolation, **kwargs)


class GSDE(AbstractStableSDE):
    """Neural geometric SDE ``dz = z gamma dt + z sigma dW`` (twin of :class:`sde.models.GSDE`), solved in
    ``log z`` by default (:class:`sde.models.stable.GeometricScheme`)."""

    scheme: GeometricScheme = eqx.field(static=True)

    time_in_drift: ClassVar[bool] = True
    noise: ClassVar[Noise] = Noise.GEOMETRIC

    def __init__(self, input_channels: int, hidden_size: int = 32, output_size: int = 2,
                 task: Task = Task.CLASSIFICATION, interpolation: Any = None, *,
                 scheme: GeometricScheme = GeometricScheme.LOG, **kwargs: Any) -> None:
        self.scheme = check_params(self, scheme=scheme)["scheme"]
        self._init_stable(input_channels, hidden_size, output_size, task, interpolation, **kwargs)


# The old names of the abstract classes (kept so existing code runs).
SeriesModel = AbstractSeriesModel
PathModel = AbstractPathModel
StableSDE = AbstractStableSDE
