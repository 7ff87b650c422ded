"""Classification with a generative model of the series: one model per class and Bayes' rule.

The latent models of :mod:`sde.models` (:class:`~sde.models.LatentSDE`, :class:`~sde.models.NeuralMJP`)
model the values of a series, not its label. :class:`GenerativeClassifier` fits one of them per class,
each on its own class's series, and classifies by

    p(y = k | x)  ∝  p(x | model_k) p(y = k),

with ``log p(x | model_k)`` the base model's ``log_likelihood`` (exact for NeuralMJP by the forward
algorithm, an importance-weighted estimate for LatentSDE) and ``p(y)`` the class shares of the training
data. All class models share one standardisation (of the whole training set), so their likelihoods are
in the same units and comparable. Training is the one trainer: the objective of a series is its own class
model's objective (the ELBO), so every class model learns from its class only.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from sde.models._base import eval_mode, seeded
from tpp.model import Model, Seed
from tpp.options import Interval, check_params

__all__ = ["GENERATIVE_BASES", "GenerativeClassifier"]

GENERATIVE_BASES: dict[str, bool] = {"latent-sde": True, "latent-ode": True, "neural-mjp": False}
"""The model-table names of the generative series models (they have an ``elbo`` and a ``log_likelihood``), and
whether their ``log_likelihood`` is an importance-weighted estimate taking ``num_samples`` (NeuralMJP's is exact)."""


def _base_spec(base: str) -> Any:
    import sde.table  # noqa: F401 - registers the sde entries of the model table
    from tpp import table

    return table.spec(base, family="sde")


class GenerativeClassifier(Model):
    """Bayes classifier from ``num_classes`` generative series models named ``base`` in the model table
    (``"latent-sde"``, ``"latent-ode"`` or ``"neural-mjp"``), each built with ``base_args`` (beyond the channel count).

    ``num_samples``: importance samples of the class likelihoods in :meth:`predict` (LatentSDE).
    """

    _constraints = {"num_classes": Interval(2, None, integer=True), "input_channels": Interval(1, None, integer=True),
                    "num_samples": Interval(1, None, integer=True)}

    def __init__(self, num_classes: int, input_channels: int, base: str = "latent-sde",
                 base_args: dict[str, Any] | None = None, num_samples: int = 16) -> None:
        super().__init__()
        check_params(self, num_classes=num_classes, input_channels=input_channels, num_samples=num_samples)
        entry = _base_spec(base)
        if entry.name not in GENERATIVE_BASES:
            raise ValueError(f"base {base!r} is not a generative model of series: use one of {tuple(GENERATIVE_BASES)}")
        self.num_classes, self.input_channels, self.base = int(num_classes), int(input_channels), entry.name
        self.base_args = dict(base_args or {})
        self.num_samples = int(num_samples)
        # The base's own rule maps a channel count to its shape arguments (num_channels, obs_dim, ...).
        shape = entry.shape(SimpleNamespace(num_channels=self.input_channels, num_classes=None))
        args = {**shape, **entry.defaults, **self.base_args}
        self.models = nn.ModuleList(entry.cls(**args) for _ in range(self.num_classes))
        self.register_buffer("log_prior", torch.full((self.num_classes,), -math.log(self.num_classes),
                                                      dtype=torch.float64))

    # ------------------------------------------------------------------ the contract
    def initialise(self, train: Any) -> GenerativeClassifier:
        """Every class model standardised on the whole training set (comparable likelihoods); the class
        prior from the training labels (with one pseudo-count per class, so no class has probability 0)."""
        labels = self._labels(train)
        for model in self.models:
            model.initialise(train)
        counts = torch.bincount(labels.cpu(), minlength=self.num_classes).to(torch.float64) + 1.0
        self.log_prior.copy_((counts / counts.sum()).log())
        return self

    def objective(self, batch: Any) -> Tensor:
        """``[B]``: each series' objective (ELBO) under its own class's model."""
        labels = self._labels(batch)
        out = None
        for k, model in enumerate(self.models):
            index = torch.nonzero(labels == k).flatten()
            if index.numel() == 0:
                continue
            value = model.objective(batch[index.cpu().numpy()])
            out = value.new_zeros(len(batch)) if out is None else out
            out = out.index_put((index.to(out.device),), value)
        if out is None:
            raise ValueError("the batch has no series")
        return out

    def after_step(self) -> None:
        for model in self.models:
            model.after_step()

    @torch.no_grad()
    def class_log_likelihood(self, batch: Any) -> Tensor:
        """``[B, K]``: ``log p(x | model_k)`` of every series under every class model."""
        options = {"num_samples": self.num_samples} if GENERATIVE_BASES[self.base] else {}
        columns = [model.log_likelihood(batch, **options) for model in self.models]
        return torch.stack([c.to(torch.float64) for c in columns], dim=1)

    @torch.no_grad()
    def predict(self, batch: Any, seed: Seed = 0) -> Tensor:
        """``[B, K]`` class probabilities by Bayes' rule (``seed`` fixes the importance samples)."""
        with eval_mode(self), seeded(seed, self.log_prior.device):
            joint = self.class_log_likelihood(batch) + self.log_prior.to(torch.float64)
        return torch.softmax(joint, dim=1)

    def label_log_prob(self, batch: Any, seed: Seed = 0) -> Tensor:
        """``[B]`` ``log p(label | series)`` by Bayes' rule."""
        labels = self._labels(batch)
        return self.predict(batch, seed).clamp_min(1e-300).log().gather(1, labels[:, None].to(torch.long))[:, 0]

    def score(self, data: Any, seed: Seed = 0) -> float:
        """Accuracy: the share of series whose most probable class is their label (higher is better)."""
        labels = self._labels(data)
        return float((self.predict(data, seed).argmax(1).cpu() == labels.cpu()).double().mean())

    # ------------------------------------------------------------------ helpers
    def _labels(self, batch: Any) -> Tensor:
        labels = getattr(batch, "labels", None)
        if labels is None:
            raise ValueError("a generative classifier needs labelled series (batch.labels)")
        if len(labels) and (int(labels.max()) >= self.num_classes or int(labels.min()) < 0):
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1}, got {int(labels.min())}..{int(labels.max())}")
        return labels
