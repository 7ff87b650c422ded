"""The one model contract of both families: what the trainer, the CLIs and the benchmarks rely on.

Every model of :mod:`tpp` and :mod:`sde` is a :class:`Model`. The contract is declared here, once,
never discovered by ``hasattr``:

``objective(batch) -> [B]``
    the per-sequence quantity that training maximises: the exact log-likelihood of a point process,
    the ELBO of a variational model, ``log p(label | series)`` of a classifier. The trainer minimises
    ``-objective(batch).sum() / batch.num_events``.
``initialise(train) -> self``
    one-time, data-dependent set-up before the first step (standardisation of times and channels,
    rate starts); the trainer calls it once per run, never on resume. Default: nothing.
``after_step() -> None``
    optional hook run after every optimizer step (e.g. a closed-form M-step from statistics the
    objective gathered). Default: nothing.
``fit(train, val=None, **trainer_options) -> self``
    the one trainer (:func:`tpp.train.fit`) underneath; models with a closed-form or their own
    estimator (Hawkes, Poisson, the exact Markov jump process) override it and accept the same
    trainer options.
``score(data) -> float`` (higher is better) and ``predict(data)``
    documented per task by each family's base class.

Names are reserved: ``log_likelihood`` is an exact value (or a quadrature whose error is controlled
and stated); a bound is ``elbo``; an importance-weighted estimate says so in its docstring. Numerical
accuracy (``num_points=``, ``num_samples=``) is an argument, and a query never changes model state.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from tpp.train import TrainResult

__all__ = ["Model", "Seed"]

Seed = int | np.random.Generator | torch.Generator | None
"""The one type of every seed/generator argument: an int seed, a numpy or a torch generator, or None."""

_M = TypeVar("_M", bound="Model")


class Model(nn.Module, abc.ABC):
    """Abstract base of every model (see the module docstring for the contract)."""

    train_result_: TrainResult | None = None
    """What the last :meth:`fit` run did (history, best epoch); None before fitting."""

    # ------------------------------------------------------------------ to implement
    @abc.abstractmethod
    def objective(self, batch: Any) -> Tensor:
        """``[B]`` per-sequence training objective (to maximise)."""

    @abc.abstractmethod
    def score(self, data: Any) -> float:
        """One number per data set, higher is better (defined per family and task)."""

    @abc.abstractmethod
    def predict(self, data: Any) -> Any:
        """The family's forecast (next event, class probabilities, values at query times)."""

    # ------------------------------------------------------------------ hooks with defaults
    def initialise(self: _M, train: Any) -> _M:
        """One-time data-dependent set-up from (a sample of) the training data; returns self."""
        return self

    def after_step(self) -> None:
        """Run after each optimizer step (default: nothing)."""

    # ------------------------------------------------------------------ training
    def forward(self, batch: Any) -> Tensor:
        """Calling a model returns its training objective ``[B]`` (so DDP and ``torch.func`` see it)."""
        return self.objective(batch)

    def fit(self: _M, train: Any, val: Any = None, **trainer_options: Any) -> _M:
        """Train with the one trainer (:func:`tpp.train.fit`: ``epochs``, ``batch_size``, ``lr``, ``seed``,
        checkpoints, early stopping on ``val``); the run's record is :attr:`train_result_`. Returns self."""
        from tpp.train import fit as train_model

        self.train_result_ = train_model(self, train, val, **trainer_options)
        self.eval()  # a fitted model answers queries deterministically (no dropout, running statistics)
        return self
