"""The Markov jump process with an observed path: exact likelihood, closed-form MLE.

:class:`MarkovJumpProcess`
    A continuous-time Markov chain with rates ``R[i, j]`` (``i != j``) whose path is observed: an
    :class:`~tpp.events.EventBatch` whose marks are the states entered, the first event at
    ``t_start`` giving the initial state. The path log-likelihood (conditional on the initial state)
    ``sum_jumps log R[z_{n-1}, z_n] - sum_n R[z_n, :].sum() * holding_n`` is exact, and it is a
    marked point process (intensity of mark ``k`` = ``R[z(t-), k]``), so it answers the
    :class:`~tpp.process.PointProcess` protocol; ``fit`` is the closed-form MLE (transition counts /
    holding time).

The hidden-path model observed with noise, :class:`~sde.models.neural_mjp.NeuralMJP`, lives in
:mod:`sde.models.neural_mjp` (its names still import from here).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sde.simulate import generator_matrix, gillespie, stationary_distribution
from tpp.events import EventBatch, EventDataError
from tpp.model import Seed
from tpp.process import PointProcess, Prediction

__all__ = ["MarkovJumpProcess"]

# names that moved to sde.models.neural_mjp; ``from sde.models.mjp import NeuralMJP`` keeps working
_MOVED = ("Emission", "Encoder", "KLIntegral", "NeuralMJP", "PosteriorRates", "Reconstruction", "path_kl_integrand")


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        from sde.models import neural_mjp

        return getattr(neural_mjp, name)
    raise AttributeError(f"module 'sde.models.mjp' has no attribute {name!r}")


class MarkovJumpProcess(PointProcess):
    """Continuous-time Markov chain on ``num_states`` states with off-diagonal rates ``R``.

    ``rates=None`` starts from all rates 1 (learnable); given ``rates [S, S]`` (the diagonal is
    ignored) are the starting values, and their zero off-diagonal entries are structural zeros
    (transitions that cannot happen, kept at 0 by ``fit`` and by gradient training).

    The model contract (:class:`tpp.model.Model`, through :class:`~tpp.process.PointProcess`):
    ``objective`` is the exact :meth:`log_likelihood` (gradient training works), ``fit`` the
    closed-form MLE, ``score`` the mean log-likelihood per event, ``predict`` the exact next jump.
    """

    def __init__(self, num_states: int, rates: np.ndarray | Tensor | Sequence[Sequence[float]] | None = None) -> None:
        super().__init__()
        if num_states < 2:
            raise ValueError(f"a jump process needs num_states >= 2, got {num_states}")
        self.num_states = self.num_marks = int(num_states)
        allowed = ~torch.eye(num_states, dtype=torch.bool)
        log_rates = torch.zeros(num_states, num_states, dtype=torch.float64)
        if rates is not None:
            r = torch.as_tensor(np.asarray(rates.detach().cpu() if isinstance(rates, Tensor) else rates, np.float64))
            if r.shape != (num_states, num_states):
                raise ValueError(f"rates must have shape ({num_states}, {num_states}), got {tuple(r.shape)}")
            off = r[allowed]
            if not bool(torch.all(torch.isfinite(off) & (off >= 0))):
                raise ValueError("off-diagonal rates must be finite and >= 0")
            allowed &= r > 0
            log_rates = torch.where(allowed, r.clamp_min(1e-300).log(), log_rates)
        self.register_buffer("allowed", allowed)
        self.log_rates = nn.Parameter(log_rates)

    # ------------------------------------------------------------------ parameters
    @property
    def rates(self) -> Tensor:
        """``[S, S]`` off-diagonal rates (zero diagonal and structural zeros), differentiable."""
        return torch.where(self.allowed, self.log_rates.exp(), torch.zeros((), dtype=self.log_rates.dtype))

    @property
    def rates_(self) -> np.ndarray:
        """The current rates as a numpy array ``[S, S]`` (after ``fit``: the MLE)."""
        return self.rates.detach().cpu().numpy().copy()

    @property
    def generator_(self) -> np.ndarray:
        """Generator ``Q = R - diag(R 1)``, ``[S, S]``."""
        return generator_matrix(self.rates.detach()).cpu().numpy()

    @property
    def stationary_distribution_(self) -> np.ndarray:
        """``pi [S]`` with ``pi Q = 0`` (raises for a reducible chain)."""
        return stationary_distribution(self.rates_)

    def to_dict(self) -> dict:
        return {"model": "markov-jump-process", "rates": self.rates_.tolist()}

    # ------------------------------------------------------------------ validation and layout
    def _check(self, batch: EventBatch) -> None:
        if batch.num_marks > self.num_states:
            raise EventDataError(
                f"batch has {batch.num_marks} marks, the process {self.num_states} states", field="mark"
            )
        names = batch.seq_names
        empty = torch.nonzero(batch.lengths == 0).flatten()
        if empty.numel():
            b = int(empty[0])
            raise EventDataError(
                "a path needs its initial state as a first event at t_start; the sequence is empty",
                sequence=names[b] if names else b, field="mark",
            )
        late = torch.nonzero(batch.time[:, 0] != batch.t_start).flatten()
        if late.numel():
            b = int(late[0])
            raise EventDataError(
                f"the first event (the initial state) must be at t_start={float(batch.t_start[b])!r}, "
                f"got {float(batch.time[b, 0])!r}",
                sequence=names[b] if names else b, position=0, field="time",
            )
        repeat = (batch.mark[:, 1:] == batch.mark[:, :-1]) & batch.mask[:, 1:]
        bad = torch.nonzero(repeat)
        if bad.numel():
            b, n = int(bad[0, 0]), int(bad[0, 1]) + 1
            state = int(batch.mark[b, n])
            raise EventDataError(
                f"mark {state} repeats the state entered at position {n - 1}: consecutive marks must differ "
                "(each event after the first is a jump to another state)",
                sequence=names[b] if names else b, position=n, field="mark",
            )

    @staticmethod
    def _holding(batch: EventBatch) -> Tensor:
        """``[B, L]`` time spent in the state entered at each event (to the next event or ``t_end``)."""
        right = torch.cat([batch.time[:, 1:], batch.t_end[:, None]], 1)
        last = batch.lengths[:, None] - 1
        idx = torch.arange(batch.max_length, device=batch.device)[None, :]
        right = torch.where(idx == last, batch.t_end[:, None], right)
        return torch.where(batch.mask, right - batch.time, torch.zeros_like(batch.time))

    # ------------------------------------------------------------------ protocol
    def log_likelihood(self, batch: EventBatch) -> Tensor:
        """``[B]`` exact path log-likelihood given the initial state (the first event).

        ``sum_{n >= 1} log R[z_{n-1}, z_n] - sum_{n >= 0} (sum_k R[z_n, k]) (t_{n+1} - t_n)`` with
        ``t_{L} = t_end``: the point-process likelihood of the jumps, differentiable in ``log R``.
        """
        self._check(batch)
        dtype = batch.dtype
        impossible = torch.full((), -math.inf, dtype=self.log_rates.dtype)
        log_r = torch.where(self.allowed, self.log_rates, impossible).to(dtype)
        z = batch.mark
        jump = log_r[z[:, :-1], z[:, 1:]]
        jumps = torch.where(batch.mask[:, 1:], jump, torch.zeros((), dtype=dtype)).sum(1)
        exit_rate = self.rates.to(dtype).sum(1)[z]
        return jumps - (exit_rate * self._holding(batch)).sum(1)

    def _state_before(self, batch: EventBatch, t: Tensor) -> Tensor:
        """``[B, T]`` state just before ``t`` (the initial state at or before ``t_start``)."""
        times = torch.where(batch.mask, batch.time, torch.full_like(batch.time, math.inf))
        idx = torch.searchsorted(times.contiguous(), t.to(times.dtype).contiguous(), side="left") - 1
        return batch.mark.gather(1, idx.clamp_min(0))

    def intensity(self, batch: EventBatch, t: Tensor) -> Tensor:
        """``[B, T, K]``: rate of a jump into state ``k`` from the state before ``t`` (0 for that state)."""
        z = self._state_before(batch, t)
        return self.rates.to(t.dtype)[z]

    def compensator(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        """``[B]`` integral of the exit rate over the window (closed form)."""
        exit_rate = self.rates.to(batch.dtype).sum(1)[batch.mark]
        return (exit_rate * self._holding(batch)).sum(1)

    def cumulative_intensity(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        """``[B, L, K]`` ``Lambda_k(t_start, t_n]`` at every event (closed form; 0 at the initial event)."""
        parts = self.rates.to(batch.dtype)[batch.mark] * self._holding(batch)[..., None]
        return parts.cumsum(1) - parts

    def predict(
        self, batch: EventBatch, quantiles: Sequence[float] = (0.1, 0.5, 0.9), **_: Any
    ) -> Prediction:
        """Exact next jump after ``t_end``: holding time ``Exp(q_z)`` in the current state ``z``, next
        state with probabilities ``R[z, :] / q_z`` (memoryless, so the time already spent does not matter)."""
        with torch.no_grad():
            z = batch.mark.gather(1, (batch.lengths - 1).clamp_min(0)[:, None])[:, 0]
            R = self.rates.to(batch.dtype)[z]
            q = R.sum(1)
            levels = torch.as_tensor(quantiles, dtype=batch.dtype, device=batch.device)
            scale = 1.0 / q
            return Prediction(
                batch.t_end + scale,
                batch.t_end[:, None] - torch.log1p(-levels)[None, :] * scale[:, None],
                levels,
                R / q[:, None],
            )

    def sample(
        self,
        n: int,
        t_end: float,
        history: EventBatch | None = None,
        generator: Seed = None,
        t_start: float = 0.0,
        initial: int | np.ndarray | Tensor | None = None,
    ) -> EventBatch:
        """Exact paths by Gillespie's algorithm (:func:`sde.simulate.gillespie`).

        ``initial`` (a state, states ``[n]`` or probabilities ``[S]``; default the stationary
        distribution) starts new paths; a ``history`` is continued from its last state to ``t_end``.
        """
        rates = self.rates_
        if history is None:
            return gillespie(rates, n, t_end, t_start=t_start, initial=initial, generator=generator)
        if len(history) != n:
            raise ValueError(f"n={n} but the history has {len(history)} sequences")
        self._check(history)
        last = history.mark.gather(1, (history.lengths - 1)[:, None])[:, 0].cpu().numpy()
        starts = history.t_end.detach().cpu().numpy()
        more = gillespie(rates, n, t_end, t_start=starts, initial=last, generator=generator)
        old, new = history.to_flat(), more.to_flat()
        times, marks = [], []
        for b in range(n):
            o = slice(old["seq_offsets"][b], old["seq_offsets"][b + 1])
            m = slice(new["seq_offsets"][b] + 1, new["seq_offsets"][b + 1])  # drop the continuation's initial state
            times.append(np.concatenate([old["times"][o], new["times"][m]]))
            marks.append(np.concatenate([old["marks"][o], new["marks"][m]]))
        return EventBatch.from_sequences(
            times, marks, t_start=old["t_start"], t_end=new["t_end"], num_marks=self.num_states,
            seq_names=history.seq_names, dtype=history.dtype,
        )

    # ------------------------------------------------------------------ estimation
    def sufficient_statistics(self, data: EventBatch) -> tuple[np.ndarray, np.ndarray]:
        """Transition counts ``N [S, S]`` and total holding time per state ``T [S]``."""
        self._check(data)
        z = data.mark.cpu()
        S = self.num_states
        valid = data.mask[:, 1:].cpu()
        pairs = (z[:, :-1] * S + z[:, 1:])[valid]
        counts = torch.bincount(pairs, minlength=S * S).reshape(S, S).double().numpy()
        hold = self._holding(data).detach().cpu().double()
        holding = torch.zeros(S, dtype=torch.float64).index_add_(0, z[data.mask.cpu()], hold[data.mask.cpu()]).numpy()
        return counts, holding

    def fit(self, train: EventBatch, val: EventBatch | None = None, **trainer_options: Any) -> MarkovJumpProcess:
        """Closed-form MLE ``R[i, j] = N[i, j] / T[i]`` (counts over holding time); returns ``self``.

        The contract's ``fit``: ``val`` and the trainer's options (``epochs``, ``batch_size``, ``lr``,
        ``seed``, ...) are accepted and ignored, because the maximum is reached in one closed-form
        step on all of ``train`` (no iterations, no minibatches, no randomness). A state never
        visited has no estimate: its rates keep their current values (with a warning).
        """
        counts, holding = self.sufficient_statistics(train)
        allowed = self.allowed.cpu().numpy()
        current = self.rates_
        with np.errstate(invalid="ignore", divide="ignore"):
            mle = np.where(holding[:, None] > 0, counts / holding[:, None], current)
        unseen = np.flatnonzero(holding <= 0)
        if unseen.size:
            warnings.warn(f"states {unseen.tolist()} are never visited: their rates keep their previous values",
                          stacklevel=2)
        # A transition never seen has MLE 0; the log-parameter stays finite (exp gives 1e-300).
        log_mle = np.log(np.clip(np.where(allowed, mle, 1.0), 1e-300, None))
        with torch.no_grad():
            self.log_rates.copy_(torch.from_numpy(log_mle).to(self.log_rates))
        self.fit_result_ = {"counts": counts, "holding_times": holding, "converged": True}
        return self

    def standard_errors(self, data: EventBatch) -> np.ndarray:
        """``[S, S]`` standard errors of the rates from the observed Fisher information, ``R / sqrt(N)``
        (``sqrt(N) / T`` at the MLE); NaN where a transition was never seen."""
        counts, _ = self.sufficient_statistics(data)
        with np.errstate(invalid="ignore", divide="ignore"):
            se = self.rates_ / np.sqrt(counts)
        se[~self.allowed.cpu().numpy()] = 0.0
        se[(counts == 0) & self.allowed.cpu().numpy()] = np.nan
        return se
