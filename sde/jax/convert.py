"""Weights between the twins: :func:`from_torch`, :func:`to_torch`, :func:`state_dict`.

Both twins name their arrays alike (:mod:`sde.jax.nn`), so the torch ``state_dict`` key of an array
(``field.net.0.weight``, ``head.net.2.running_mean``, ``theta``, ``channel_mean``) is also its path
in the equinox model (``model.field.net.layers[0].weight``). Conversion copies every parameter and
buffer (torch's batch-norm counter ``num_batches_tracked`` has no twin and is left alone) in the
torch model's dtype; a float64 torch model turns on ``jax_enable_x64`` (JAX computes in float32
otherwise). The constructor arguments travel too: :func:`from_torch` reads them off the torch
model, :func:`to_torch` builds a torch twin from the equinox model's when none is given.

```python
jm = sde.jax.from_torch(tm)                 # equinox twin, same weights, same mode (train / eval)
sde.jax.to_torch(jm, tm)                    # copy the (e.g. JAX-trained) weights back into tm; returns tm
tm2 = sde.jax.to_torch(jm)                  # a new torch twin
grads = sde.jax.state_dict(eqx.filter_grad(loss)(jm, data))   # torch-keyed NumPy arrays, for any pytree
```
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch import nn

from sde.jax import models as jm
from sde.jax.nn import BatchNorm, Sequential

__all__ = ["from_torch", "state_dict", "to_torch"]

_SKIP = ("num_batches_tracked",)


def _twin_classes() -> dict[str, tuple[type, type]]:
    from sde.models.cde import NeuralCDE
    from sde.models.ode import NeuralODE
    from sde.models.stable import GSDE, LNSDE, LSDE

    return {"NeuralODE": (NeuralODE, jm.NeuralODE), "NeuralCDE": (NeuralCDE, jm.NeuralCDE),
            "LSDE": (LSDE, jm.LSDE), "LNSDE": (LNSDE, jm.LNSDE), "GSDE": (GSDE, jm.GSDE)}


def _linears(seq: nn.Sequential) -> list[nn.Linear]:
    return [m for m in seq if isinstance(m, nn.Linear)]


def _torch_config(model: nn.Module) -> dict[str, Any]:
    """The constructor arguments of a torch series model, read off its attributes and layers."""
    from sde.models.heads import StateBatchNorm
    from sde.models.stable import GSDE, StableSDE

    config: dict[str, Any] = dict(
        input_channels=model.input_channels, hidden_size=model.hidden_size, output_size=model.output_size,
        task=model.task, interpolation=model.interpolation, observation_counts=model.observation_counts,
        method=model.method, step_size=model.step_size,
        batch_norm=any(isinstance(m, StateBatchNorm) for m in model.head.net))
    if isinstance(model, StableSDE):
        config.update(hidden_hidden_size=model.embed_state.out_features, num_layers=len(_linears(model.gamma_net)),
                      clip_drift=model.clip_drift, clip_diffusion=model.clip_diffusion,
                      brownian_seed=model.brownian_seed)
        if isinstance(model, GSDE):
            config["scheme"] = model.scheme
    else:  # NeuralODE / NeuralCDE: Linear x (num_layers + 1) in the vector field
        linears = _linears(model.field.net)
        config.update(hidden_hidden_size=linears[0].out_features, num_layers=len(linears) - 1)
        if hasattr(model, "rtol"):
            config.update(rtol=model.rtol, atol=model.atol)
    return config


def _jax_config(model: jm.AbstractPathModel) -> dict[str, Any]:
    """The constructor arguments of an equinox twin (the same names as the torch model's)."""
    config: dict[str, Any] = dict(
        input_channels=model.input_channels, hidden_size=model.hidden_size, output_size=model.output_size,
        task=model.task, interpolation=model.interpolation, observation_counts=model.observation_counts,
        method=model.method, step_size=model.step_size, hidden_hidden_size=model.hidden_hidden_size,
        num_layers=model.num_layers,
        batch_norm=any(isinstance(m, BatchNorm) for m in model.head.net.layers))
    if isinstance(model, jm.AbstractStableSDE):
        config.update(clip_drift=model.clip_drift, clip_diffusion=model.clip_diffusion,
                      brownian_seed=model.brownian_seed)
        if isinstance(model, jm.GSDE):
            config["scheme"] = model.scheme
    if isinstance(model, jm.NeuralODE):
        config.update(rtol=model.rtol, atol=model.atol)
    return config


def _named(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(torch key, leaf)`` for every array of an equinox twin (or a pytree of the same structure)."""
    if isinstance(node, Sequential):
        for i, layer in enumerate(node.layers):
            yield from _named(layer, f"{prefix}{i}.")
        return
    for field in dataclasses.fields(node):
        if field.metadata.get("static", False):
            continue
        value = getattr(node, field.name, None)
        if isinstance(value, (jax.Array, np.ndarray)):
            yield prefix + field.name, value
        elif isinstance(value, eqx.Module):
            yield from _named(value, f"{prefix}{field.name}.")


def _at(node: Any, key: str) -> Any:
    for part in key.split("."):
        node = node.layers[int(part)] if isinstance(node, Sequential) else getattr(node, part)
    return node


def state_dict(model: Any) -> dict[str, np.ndarray]:
    """Torch-keyed NumPy copies of the arrays of an equinox twin, or of any pytree with its structure
    (e.g. gradients from ``eqx.filter_grad``; entries that are None are left out)."""
    return {k: np.asarray(v) for k, v in _named(model)}


def _enable_x64_for(dtype: torch.dtype) -> None:
    if dtype == torch.float64 and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)  # JAX silently computes in float32 otherwise


def from_torch(model: nn.Module) -> jm.AbstractPathModel:
    """The equinox twin of a torch series model (NeuralODE, NeuralCDE, LSDE, LNSDE, GSDE), with its
    constructor arguments, weights, buffers and mode (``model.training`` -> batch statistics)."""
    twins = _twin_classes()
    name = type(model).__name__
    if name not in twins or not isinstance(model, twins[name][0]):
        raise TypeError(f"from_torch converts {sorted(twins)}; got {type(model).__name__}")
    if getattr(model, "likelihood", "gaussian") != "gaussian":  # the twins have the Gaussian head only
        raise ValueError(f"from_torch: {name} has likelihood={model.likelihood!r}; the equinox twins have only the "
                         "Gaussian head")
    dtype = next(model.parameters()).dtype
    _enable_x64_for(dtype)
    twin = twins[name][1](**_torch_config(model), dtype=np.dtype(str(dtype).removeprefix("torch.")))
    twin = _load(twin, {k: v for k, v in model.state_dict().items() if k.rsplit(".", 1)[-1] not in _SKIP})
    return eqx.nn.inference_mode(twin, not model.training)


def _load(twin: Any, tensors: dict[str, torch.Tensor]) -> Any:
    keys = dict(_named(twin))
    missing, unexpected = sorted(set(keys) - set(tensors)), sorted(set(tensors) - set(keys))
    if missing or unexpected:
        raise ValueError(f"the twins' arrays differ: missing in torch {missing}, missing in JAX {unexpected}")
    names = sorted(keys)
    values = []
    for k in names:
        # a copy: JAX may alias a NumPy buffer, and torch updates its parameters and buffers in place
        t = tensors[k].detach().cpu().numpy().copy()
        if t.shape != keys[k].shape:
            raise ValueError(f"{k}: torch shape {t.shape}, JAX shape {keys[k].shape}")
        values.append(np.array(t) if isinstance(keys[k], np.ndarray) else jnp.asarray(t, dtype=t.dtype))
    return eqx.tree_at(lambda m: [_at(m, k) for k in names], twin, values)


def to_torch(model: jm.AbstractPathModel, torch_model: nn.Module | None = None) -> nn.Module:
    """Copy an equinox twin's weights and buffers into ``torch_model`` (in place; returned), or into a
    new torch model built from the twin's constructor arguments when ``torch_model`` is None. The torch
    model's mode follows the twin's batch-norm ``inference`` flag."""
    twins = {jax_cls: torch_cls for torch_cls, jax_cls in _twin_classes().values()}
    if type(model) not in twins:
        raise TypeError(f"to_torch converts the sde.jax models {sorted(c.__name__ for c in twins)}; got {type(model)}")
    if torch_model is None:
        torch_model = twins[type(model)](**_jax_config(model)).to(getattr(torch, model.dtype.name))
    elif type(torch_model) is not twins[type(model)]:
        raise TypeError(f"{type(model).__name__} converts to {twins[type(model)].__name__}, "
                        f"got {type(torch_model).__name__}")
    own = torch_model.state_dict()
    arrays = state_dict(model)
    missing = sorted(k for k in own if k not in arrays and k.rsplit(".", 1)[-1] not in _SKIP)
    if missing or set(arrays) - set(own):
        raise ValueError(f"the twins' arrays differ: missing in JAX {missing}, "
                         f"missing in torch {sorted(set(arrays) - set(own))}")
    with torch.no_grad():
        for k, value in arrays.items():
            if tuple(own[k].shape) != value.shape:
                raise ValueError(f"{k}: JAX shape {value.shape}, torch shape {tuple(own[k].shape)}")
            own[k].copy_(torch.from_numpy(np.array(value)))
    inference = [m.inference for m in jax.tree_util.tree_leaves(model, is_leaf=lambda x: hasattr(x, "inference"))
                 if hasattr(m, "inference")]
    torch_model.train(not (inference and all(inference)))
    return torch_model
