"""Layers and heads of the JAX twins, laid out as torch lays them out.

The models here act on a whole batch ``[B, ...]`` (as the torch models, and as their batch-norm
readout needs), so :class:`Linear` takes any leading axes (``eqx.nn.Linear`` takes one example).
Parameter names and shapes are torch's (``weight [out, in]``, ``bias [out]``; :class:`Sequential`
keeps torch's indices, activations included), so a torch ``state_dict`` key such as
``head.net.1.weight`` names the same array in both twins (see :mod:`sde.jax.convert`).
The heads mirror :mod:`sde.models.heads`: same readout, same log-likelihoods.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from sde.models.heads import Task

__all__ = ["BatchNorm", "ClassificationHead", "GaussianHead", "Linear", "Sequential", "make_head", "readout"]


class Linear(eqx.Module):
    """``x @ weight.T + bias`` over the last axis; torch's default initialisation (uniform, bound ``1/sqrt(in)``)."""

    weight: Array
    bias: Array

    def __init__(self, in_features: int, out_features: int, *, key: Array, dtype: Any = None) -> None:
        dtype = dtype or jnp.result_type(float)
        bound = 1.0 / math.sqrt(in_features)
        wkey, bkey = jax.random.split(key)
        self.weight = jax.random.uniform(wkey, (out_features, in_features), dtype, -bound, bound)
        self.bias = jax.random.uniform(bkey, (out_features,), dtype, -bound, bound)

    def __call__(self, x: Array) -> Array:
        return x @ self.weight.T + self.bias


class Sequential(eqx.Module):
    """Layers applied in order; index ``i`` is torch's ``nn.Sequential`` index ``i``."""

    layers: tuple[Any, ...]

    def __call__(self, x: Array) -> Array:
        for layer in self.layers:
            x = layer(x)
        return x


def activation(fn: Callable[[Array], Array]) -> eqx.nn.Lambda:
    """A parameter-free layer (keeps torch's indices in a :class:`Sequential`)."""
    return eqx.nn.Lambda(fn)


class BatchNorm(eqx.Module):
    """Batch-norm over the last axis of ``[..., H]`` (torch's ``StateBatchNorm``): batch statistics
    when ``inference`` is False and there is more than one state, else the running statistics.

    Functional: a call does not update the running statistics; :meth:`updated` returns the layer after
    torch's training-mode update, and a model's ``update_batch_norm`` applies it
    (:meth:`sde.jax.models.SeriesModel.update_batch_norm`). ``eqx.nn.inference_mode(model)`` switches
    every batch-norm of a model to the running statistics.
    """

    weight: Array
    bias: Array
    running_mean: Array
    running_var: Array
    eps: float = eqx.field(static=True)
    momentum: float = eqx.field(static=True)
    inference: bool

    def __init__(self, size: int, *, eps: float = 1e-5, momentum: float = 0.1, inference: bool = False,
                 dtype: Any = None) -> None:
        dtype = dtype or jnp.result_type(float)
        self.weight, self.bias = jnp.ones(size, dtype), jnp.zeros(size, dtype)
        self.running_mean, self.running_var = jnp.zeros(size, dtype), jnp.ones(size, dtype)
        self.eps, self.momentum, self.inference = eps, momentum, inference

    def updated(self, x: Array) -> BatchNorm:
        """This layer after torch's running-statistics update on the input ``x [..., H]`` of a training
        step (momentum average of the batch mean and unbiased variance; none for a single state)."""
        flat = jax.lax.stop_gradient(x.reshape(-1, x.shape[-1]))
        if flat.shape[0] < 2:
            return self
        m = self.momentum
        mean = (1 - m) * self.running_mean + m * flat.mean(0)
        var = (1 - m) * self.running_var + m * flat.var(0, ddof=1)
        return eqx.tree_at(lambda b: (b.running_mean, b.running_var), self, (mean, var))

    def __call__(self, x: Array) -> Array:
        flat = x.reshape(-1, x.shape[-1])
        if self.inference or flat.shape[0] == 1:
            mean, var = self.running_mean, self.running_var
        else:
            mean, var = flat.mean(0), flat.var(0)  # biased, as torch normalises
        return ((flat - mean) / jnp.sqrt(var + self.eps) * self.weight + self.bias).reshape(x.shape)


def readout(hidden_size: int, output_size: int, batch_norm: bool, *, key: Array, dtype: Any = None) -> Sequential:
    """``tanh -> Linear(H, H) [-> batch-norm] -> ReLU -> Linear(H, out)`` (:func:`sde.models.heads.readout`)."""
    k1, k2 = jax.random.split(key)
    norm = [BatchNorm(hidden_size, dtype=dtype)] if batch_norm else []
    return Sequential((activation(jnp.tanh), Linear(hidden_size, hidden_size, key=k1, dtype=dtype), *norm,
                       activation(jax.nn.relu), Linear(hidden_size, output_size, key=k2, dtype=dtype)))


class ClassificationHead(eqx.Module):
    """Class logits from the final state; log-likelihood = log-softmax at the true label."""

    net: Sequential
    num_classes: int = eqx.field(static=True)

    def __init__(self, hidden_size: int, num_classes: int, batch_norm: bool = True, *, key: Array,
                 dtype: Any = None) -> None:
        if num_classes < 2:
            raise ValueError(f"classification needs at least 2 classes, got output_size={num_classes}")
        self.num_classes = num_classes
        self.net = readout(hidden_size, num_classes, batch_norm, key=key, dtype=dtype)

    def log_likelihood(self, z: Array, labels: Array) -> Array:
        """``[B]`` log p(label | series) from ``z [B, H]`` (labels checked when the batch is prepared)."""
        return jnp.take_along_axis(jax.nn.log_softmax(self.net(z), -1), labels[:, None], -1)[:, 0]

    def probabilities(self, z: Array) -> Array:
        return jax.nn.softmax(self.net(z), -1)


class GaussianHead(eqx.Module):
    """``y ~ N(readout(z), s^2)`` per output with ``s = softplus(rho) + 1e-6``; NaN targets not scored."""

    net: Sequential
    rho: Array

    def __init__(self, hidden_size: int, output_size: int, init_std: float = 1.0, batch_norm: bool = False, *,
                 key: Array, dtype: Any = None) -> None:
        self.net = readout(hidden_size, output_size, batch_norm, key=key, dtype=dtype)
        self.rho = jnp.full((output_size,), math.log(math.expm1(init_std)), dtype or jnp.result_type(float))

    def std(self) -> Array:
        return jax.nn.softplus(self.rho) + 1e-6

    def predict(self, z: Array) -> tuple[Array, Array]:
        mean = self.net(z)
        return mean, jnp.broadcast_to(self.std(), mean.shape)

    def log_likelihood(self, z: Array, targets: Array) -> Array:
        mean, std = self.predict(z)
        observed = jnp.isfinite(targets)
        y = jnp.where(observed, targets, jax.lax.stop_gradient(mean))
        log_density = -0.5 * ((y - mean) / std) ** 2 - jnp.log(std) - 0.5 * math.log(2 * math.pi)
        return (log_density * observed).reshape(log_density.shape[0], -1).sum(1)


def make_head(task: Task, hidden_size: int, output_size: int, batch_norm: bool | None, *, key: Array,
              dtype: Any = None) -> ClassificationHead | GaussianHead:
    """The head a task needs (:func:`sde.models.heads.make_head`)."""
    if task is Task.CLASSIFICATION:
        return ClassificationHead(hidden_size, output_size, True if batch_norm is None else batch_norm, key=key,
                                  dtype=dtype)
    if task in (Task.REGRESSION, Task.FORECAST):
        return GaussianHead(hidden_size, output_size, batch_norm=bool(batch_norm), key=key, dtype=dtype)
    raise TypeError(f"task must be a sde.models.heads.Task, got {task!r}")
