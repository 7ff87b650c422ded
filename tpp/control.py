"""Control of event streams: an intervention environment on a nonlinear Hawkes process, a learned event
model of it and a model-based actor-critic policy (after Qu et al. 2023, "Bellman meets Hawkes:
model-based reinforcement learning via temporal point processes").

The setting (the paper's, sec. 3): ``K = E + I`` event types; the first ``E`` are the environment's
(e.g. shares of a false story, relapses of a patient), the last ``I`` the agent's interventions. At the
decision times ``0, dt, 2 dt, ...`` the agent either does nothing (action 0) or places one intervention
event of type ``E + i - 1`` (action ``i``) at that time; the environment's events then follow the
multivariate Hawkes process ``lambda_k = link(mu_k + sum_j sum_{t_m^j < t} A[k, j] beta e^{-beta (t - t_m)})``
of :class:`tpp.hawkes.NonlinearHawkes` until the next decision, where interventions excite (``A > 0``) or
inhibit (``A < 0``) the environment's types.

Two faults of the paper's public code are not repeated here:

* its waiting times were drawn with mean ``lambda`` (``np.random.exponential(scale=lambda)``) instead of
  ``1 / lambda``; here the environment's events come from the compiled Ogata thinning of
  :mod:`tpp.hawkes.nonlinear` (``-log(U) / bound``), exact between decision times;
* its intensity was linear (``mu + sum A e^{-w dt}``), so an inhibitory intervention could make it negative;
  here a non-decreasing link (softplus by default, relu, exp) keeps every intensity ``>= 0`` whatever the
  signs, and the identity link is refused when an effect or baseline is not positive.

The intervention types have the pre-activation :data:`SILENT` (``-1e300``): their own intensity is exactly 0
in float64 under every link, so the exact simulator never fires them; only the agent places them.

Rewards (``reward="count"``, default): minus the harm-weighted count of the environment's events in the step,
minus ``intervention_cost`` per intervention; ``reward="target"`` is the paper's: minus
``sum_k |lambda_k(t + dt) - target_k|`` over the environment's types at the end of the step, minus the cost.

Observation: ``[K * S + 1]`` float32, per type ``k`` and observation rate ``r_s`` the decayed count
``sum_{t_m^k <= t} exp(-r_s (t - t_m))``, then the elapsed fraction ``t / horizon`` (a summary computable from
the events alone, so a policy trained in a learned model sees the same thing in the real environment);
:func:`history_features` computes it from an :class:`~tpp.events.EventBatch`.

The model-based agent: :func:`collect_trajectories` logs episodes of a behaviour policy, :func:`fit_event_model`
fits one of our neural TPPs (SAHP or THP through the model table and the one trainer) on them,
:class:`LearnedEventEnv` rolls episodes out in the fitted model (batched, with the one thinning sampler
:func:`tpp.sampling.thinning_sample`, the intervention types' intensities zeroed: the agent places those), and
:func:`train_actor_critic` trains :class:`ActorCritic` there (critic by TD(lambda), actor by the policy gradient
with the generalised advantage). Baselines: :func:`no_intervention`, :class:`RandomPolicy`,
:class:`LookaheadPolicy` (one-step lookahead with the true parameters, by common-random-number Monte Carlo on
the exact simulator). :func:`evaluate` scores any of them on the true environment;
:func:`plot_controlled_intensity` draws the controlled beside the uncontrolled intensity. :func:`run_control` runs
the whole pipeline (log, fit, train, evaluate) and returns a :class:`ControlReport` (``tpp control`` and
``benchmarks/hawkes_control.py`` call it).

Needs ``gymnasium`` (the optional extra ``control``); importing this module without it raises an
``ImportError`` that says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

try:
    import gymnasium as gym
    from gymnasium import spaces
except ImportError as _error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "tpp.control needs gymnasium, which is not installed: pip install 'tpp-sde[control]' "
        "(or gymnasium==1.4.0)") from _error

from tqdm.auto import tqdm

from tpp.events import EventBatch
from tpp.hawkes._common import budget_error
from tpp.hawkes.nonlinear import Link, NonlinearHawkes, simulate_from_states
from tpp.sampling import thinning_sample

__all__ = [
    "SILENT", "HawkesInterventionEnv", "benchmark_env", "history_features", "Policy", "no_intervention",
    "RandomPolicy", "LookaheadPolicy", "evaluate", "collect_trajectories", "fit_event_model", "LearnedEventEnv",
    "ActorCritic", "ACResult", "train_actor_critic", "plot_controlled_intensity", "CONTROL_MODELS", "POLICY_LABELS",
    "PolicyScore", "ControlReport", "run_control",
]

#: Pre-activation of the intervention types: ``link(SILENT + any finite excitation)`` is exactly 0 in float64
#: for softplus, relu, exp and identity, so they never fire on their own.
SILENT = -1e300

Policy = Callable[[np.ndarray], int]
"""A policy maps an observation to an action (0: no intervention, ``i``: intervention type ``i - 1``)."""


def _link_numpy(link: Link, x: np.ndarray) -> np.ndarray:
    if link is Link.SOFTPLUS:
        return np.logaddexp(x, 0.0)
    if link in (Link.RELU, Link.IDENTITY):  # a linear intensity below 0 cannot fire (the simulator clamps too)
        return np.maximum(x, 0.0)
    return np.exp(x)


# ------------------------------------------------------------------------------------------ features
def history_features(batch: EventBatch, t: Tensor | float, rates: Sequence[float], horizon: float) -> Tensor:
    """``[B, K * S + 1]`` the observation of :class:`HawkesInterventionEnv` at times ``t [B]`` from the events of
    ``batch`` at or before ``t``: decayed counts ``sum exp(-r_s (t - t_m))`` per type (type-major), then
    ``t / horizon``. float64."""
    times = batch.time.detach().cpu().double()
    B, K = times.shape[0], batch.num_marks
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(B)
    r = torch.as_tensor(list(rates), dtype=torch.float64)
    lag = (t[:, None] - times)  # [B, L]
    valid = batch.mask.cpu() & (lag >= 0)
    weights = torch.exp(-lag.clamp_min(0)[..., None] * r) * valid[..., None]  # [B, L, S]
    onehot = torch.nn.functional.one_hot(batch.mark.cpu().clamp(0, K - 1), K).double()  # [B, L, K]
    decayed = torch.einsum("bls,blk->bks", weights, onehot).reshape(B, -1)
    return torch.cat([decayed, (t / horizon)[:, None]], 1)


# ------------------------------------------------------------------------------------------ the environment
class HawkesInterventionEnv(gym.Env):
    """A multivariate nonlinear Hawkes process that an agent steers with intervention events (module docstring).

    Args:
        baseline: ``[E]`` pre-activations ``mu`` of the environment's types.
        adjacency: ``[E, E + I]`` (or ``[E, E + I, U]`` with several decays) signed effects, row the target
            type, column the source (the environment's types, then the ``I`` intervention types); a 2-D
            adjacency with several decays splits each effect equally over them.
        decays: one decay ``beta`` or ``U`` of them (kernels ``A beta e^{-beta s}``, so ``A`` is the mass).
        link: ``"softplus"`` (default), ``"relu"``, ``"exp"``; ``"identity"`` only with ``mu > 0, A >= 0``.
        step_length: time between decisions ``dt``; ``horizon``: episode length (a multiple of ``dt``).
        harm: ``[E]`` weight of each environment event in the ``"count"`` reward (default all 1).
        intervention_cost: reward cost of one intervention.
        reward: ``"count"`` or ``"target"`` (then ``target_intensity [E]`` is needed).
        observation_rates: rates ``r_s`` of the decayed counts of the observation.
        max_events_per_step: budget of the simulator per step (``SamplingBudgetError`` beyond it).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        baseline: Sequence[float],
        adjacency: np.ndarray | Sequence[Sequence[float]],
        decays: float | Sequence[float] = 1.0,
        *,
        link: Link | str = Link.SOFTPLUS,
        step_length: float = 1.0,
        horizon: float = 20.0,
        harm: Sequence[float] | None = None,
        intervention_cost: float = 0.5,
        reward: str = "count",
        target_intensity: Sequence[float] | None = None,
        observation_rates: Sequence[float] = (0.5, 2.0),
        max_events_per_step: int = 100_000,
    ) -> None:
        super().__init__()
        mu = np.asarray(baseline, np.float64).reshape(-1)
        E = mu.size
        adj = np.asarray(adjacency, np.float64)
        beta = np.atleast_1d(np.asarray(decays, np.float64)).reshape(-1)
        U = beta.size
        if adj.ndim == 2:
            adj = adj[..., None].repeat(U, -1) / U if U > 1 else adj[..., None]
        if adj.ndim != 3 or adj.shape[0] != E or adj.shape[2] != U or adj.shape[1] <= E:
            raise ValueError(f"adjacency must be [E, E + I] (or [E, E + I, U]) with E={E} environment types, "
                             f"I >= 1 intervention types and U={U} decays, got shape {list(np.shape(adjacency))}")
        if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(adj))):
            raise ValueError("baseline and adjacency must be finite")
        if np.any(beta <= 0) or not np.all(np.isfinite(beta)):
            raise ValueError(f"decays must be positive and finite, got {beta.tolist()}")
        self.link = Link(link)
        if self.link is Link.IDENTITY and (np.any(adj < 0) or np.any(mu <= 0)):
            raise ValueError("link='identity' with an inhibitory effect (adjacency < 0) or a baseline <= 0 would make "
                             "an intensity negative (the paper's code did); use link='softplus' (default) or 'relu'")
        if not (step_length > 0 and horizon > 0 and math.isfinite(step_length) and math.isfinite(horizon)):
            raise ValueError(f"step_length and horizon must be positive and finite, got {step_length}, {horizon}")
        steps = horizon / step_length
        if abs(steps - round(steps)) > 1e-9 * max(steps, 1.0) or round(steps) < 1:
            raise ValueError(f"horizon ({horizon}) must be a positive multiple of step_length ({step_length})")
        if reward not in ("count", "target"):
            raise ValueError(f"reward must be 'count' or 'target', got {reward!r}")
        if reward == "target" and target_intensity is None:
            raise ValueError("reward='target' needs target_intensity (one rate per environment type)")
        if intervention_cost < 0 or not math.isfinite(intervention_cost):
            raise ValueError(f"intervention_cost must be a finite number >= 0, got {intervention_cost}")
        rates = np.asarray(observation_rates, np.float64).reshape(-1)
        if rates.size < 1 or np.any(rates <= 0):
            raise ValueError(f"observation_rates must be positive, got {rates.tolist()}")
        self.num_env_types = E
        self.num_interventions = adj.shape[1] - E
        self.num_marks = K = adj.shape[1]
        self.decays = beta
        self.step_length = float(step_length)
        self.horizon = float(horizon)
        self.num_steps = int(round(steps))
        self.harm = np.ones(E) if harm is None else np.asarray(harm, np.float64).reshape(E)
        self.intervention_cost = float(intervention_cost)
        self.reward_kind = reward
        self.target_intensity = None if target_intensity is None else np.asarray(target_intensity, np.float64).reshape(E)
        self.observation_rates = rates
        self.max_events_per_step = int(max_events_per_step)
        # The full K-type process: the intervention types receive nothing and never fire on their own.
        full_mu = np.concatenate([mu, np.full(self.num_interventions, SILENT)])
        full_adj = np.zeros((K, K, U))
        full_adj[:E] = adj
        self.process = NonlinearHawkes.from_params(full_mu, full_adj if U > 1 else full_adj[..., 0], beta, link=self.link)
        self._mu, self._adj = full_mu, full_adj
        self._adj_beta = full_adj * beta  # c[k, u] = sum_j A[k, j, u] beta_u R[j, u]
        self.action_space = spaces.Discrete(1 + self.num_interventions)
        dim = K * rates.size + 1
        self.observation_space = spaces.Box(0.0, np.inf, shape=(dim,), dtype=np.float32)
        self._clear()

    # ------------------------------------------------------------------ state
    def _clear(self) -> None:
        K, U, S = self.num_marks, self.decays.size, self.observation_rates.size
        self._t = 0.0
        self._step = 0
        self._R = np.zeros((K, U))  # sum over past events of e^{-beta_u (t - t_m)}: the process's Markov state
        self._F = np.zeros((K, S))  # the observation's decayed counts
        self._times: list[float] = []
        self._marks: list[int] = []

    @property
    def time(self) -> float:
        """The current decision time."""
        return self._t

    def _observation(self) -> np.ndarray:
        return np.concatenate([self._F.ravel(), [self._t / self.horizon]]).astype(np.float32)

    def intensity_now(self, state: np.ndarray | None = None) -> np.ndarray:
        """``[E]`` the environment's intensities at the current time (or from a state ``R [K, U]``)."""
        R = self._R if state is None else state
        x = self._mu[: self.num_env_types] + np.einsum("kju,ju->k", self._adj_beta[: self.num_env_types], R)
        return _link_numpy(self.link, x)

    def history(self) -> EventBatch:
        """The episode so far as one sequence on ``[0, time]`` (interventions included, as their types)."""
        return EventBatch.from_sequences([np.asarray(self._times)], [np.asarray(self._marks, np.int64)], t_start=0.0,
                                         t_end=self._t,
                                         num_marks=self.num_marks)

    def intensity(self, t: np.ndarray, history: EventBatch | None = None) -> np.ndarray:
        """``[T, E]`` the environment's intensities at times ``t`` given the events before each (of this episode,
        or of ``history``, one sequence)."""
        batch = self.history() if history is None else history
        grid = torch.as_tensor(np.asarray(t, np.float64))[None, :]
        with torch.no_grad():
            lam = self.process.intensity(batch, grid)[0].numpy()
        return lam[:, : self.num_env_types]

    # ------------------------------------------------------------------ dynamics
    def _advance(self, R0: np.ndarray, t0: float, t1: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                                   np.ndarray]:
        """Simulate ``B`` copies from states ``R0 [B, K, U]`` on ``(t0, t1]`` (exact thinning, compiled).
        Returns flat times, marks, counts per copy ``[B]`` and the states at ``t1`` ``[B, K, U]``."""
        B = R0.shape[0]
        times, marks, counts, stopped = simulate_from_states(self.link, self._mu, self._adj, self.decays,
                                                             np.full(B, t0), np.full(B, t1), R0,
                                                             self.max_events_per_step * B, seed)
        if stopped >= 0:
            raise budget_error(self.process, self.max_events_per_step * B,
                               f"{times.size} events simulated in one step of length {t1 - t0:.6g}")
        seq = np.repeat(np.arange(B), counts)
        R1 = R0 * np.exp(-self.decays * (t1 - t0))
        np.add.at(R1, (seq, marks), np.exp(-np.outer(t1 - times, self.decays)))
        return times, marks, counts, R1

    def _rewards(self, type_counts: np.ndarray, R1: np.ndarray, placed: np.ndarray) -> np.ndarray:
        """``[B]`` the reward of a step from its counts per type ``[B, K]``, end states ``[B, K, U]`` and whether an
        intervention was placed ``[B]``."""
        cost = self.intervention_cost * placed
        E = self.num_env_types
        if self.reward_kind == "count":
            return -(type_counts[:, :E] @ self.harm) - cost
        lam = np.stack([self.intensity_now(R) for R in R1])
        return -np.abs(lam - self.target_intensity).sum(-1) - cost

    def _check_action(self, action: Any) -> int:
        if not self.action_space.contains(np.int64(action) if isinstance(action, (int, np.integer)) else action):
            raise ValueError(f"action must be an integer in [0, {self.num_interventions}] (0: no intervention), "
                             f"got {action!r}")
        return int(action)

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._clear()
        return self._observation(), {"time": 0.0, "intensity": self.intensity_now()}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = self._check_action(action)
        if self._step >= self.num_steps:
            raise ValueError("the episode has ended (time reached the horizon): call reset() first")
        t0 = self._t
        t1 = (self._step + 1) * self.step_length
        if a > 0:  # the intervention event at the decision time: it acts on (t0, ...]
            k = self.num_env_types + a - 1
            self._R[k] += 1.0
            self._F[k] += 1.0
            self._times.append(t0)
            self._marks.append(k)
        seed = int(self.np_random.integers(0, 2**62))
        times, marks, counts, R1 = self._advance(self._R[None], t0, t1, seed)
        type_counts = np.bincount(marks, minlength=self.num_marks)[None].astype(np.float64)
        reward = float(self._rewards(type_counts, R1, np.array([float(a > 0)]))[0])
        self._F = self._F * np.exp(-self.observation_rates * (t1 - t0))
        np.add.at(self._F, marks, np.exp(-np.outer(t1 - times, self.observation_rates)))
        self._R = R1[0]
        self._times.extend(times.tolist())
        self._marks.extend(marks.tolist())
        self._t = t1
        self._step += 1
        terminated = self._step == self.num_steps
        info = {"time": t1, "event_times": times, "event_marks": marks, "intervened": a > 0,
                "counts": type_counts[0, : self.num_env_types], "intensity": self.intensity_now()}
        return self._observation(), reward, terminated, False, info

    def expected_rewards(self, samples: int = 64, seed: int = 0) -> np.ndarray:
        """``[1 + I]`` Monte Carlo estimate of the next step's expected reward for each action from the current
        state, with the true parameters (common random numbers: every action sees the same seed). Leaves the
        environment's state and random stream untouched."""
        out = np.empty(1 + self.num_interventions)
        t0, t1 = self._t, min(self._t + self.step_length, self.horizon)
        for a in range(1 + self.num_interventions):
            R0 = np.repeat(self._R[None], samples, 0)
            if a > 0:
                R0[:, self.num_env_types + a - 1] += 1.0
            _, marks, counts, R1 = self._advance(R0, t0, t1, seed)
            seq = np.repeat(np.arange(samples), counts)
            type_counts = np.zeros((samples, self.num_marks))
            np.add.at(type_counts, (seq, marks), 1.0)
            out[a] = self._rewards(type_counts, R1, np.full(samples, float(a > 0))).mean()
        return out


def benchmark_env(**overrides: Any) -> HawkesInterventionEnv:
    """The environment of ``benchmarks/hawkes_control.py`` and the notebook (``overrides`` change any argument).

    Type 1 is a rare trigger (a seed story; rate ``softplus(-2.5) = 0.08``) that drives type 0, the harmful
    shares (quiet rate ``softplus(-4) = 0.018``; pre-activation jump ``14 * 0.5 = 7`` after a trigger, self-excitation
    of mass 0.9); the intervention (type 2) inhibits type 0 with mass -10. Reward: minus the shares, minus 1 per
    intervention; 20 decisions of one time unit, decay 0.5. Intervening pays only during an outbreak, which the
    observation shows, so a state-blind policy (random) is worse than never intervening.
    """
    args: dict[str, Any] = dict(
        baseline=[-4.0, -2.5],
        adjacency=[[0.9, 14.0, -10.0],
                   [0.0, 0.0, 0.0]],
        decays=0.5, step_length=1.0, horizon=20.0, harm=[1.0, 0.0], intervention_cost=1.0)
    args.update(overrides)
    return HawkesInterventionEnv(**args)


# ------------------------------------------------------------------------------------------ policies
def no_intervention(observation: np.ndarray) -> int:
    """Never intervene."""
    return 0


class RandomPolicy:
    """Intervene with probability ``p`` (a uniformly chosen type when there are several), seeded."""

    def __init__(self, num_actions: int = 2, p: float = 0.5, seed: int = 0) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.num_actions, self.p = int(num_actions), float(p)
        self.rng = np.random.default_rng(seed)

    def __call__(self, observation: np.ndarray) -> int:
        if self.rng.random() >= self.p:
            return 0
        return int(self.rng.integers(1, self.num_actions))


class LookaheadPolicy:
    """One-step lookahead with the true parameters: the action of the largest expected next-step reward
    (:meth:`HawkesInterventionEnv.expected_rewards`, ``samples`` Monte Carlo copies per action). It reads the
    environment's state directly (it is an oracle, not a policy of the observation)."""

    def __init__(self, env: HawkesInterventionEnv, samples: int = 128, seed: int = 0) -> None:
        self.env, self.samples = env, int(samples)
        self.rng = np.random.default_rng(seed)

    def __call__(self, observation: np.ndarray) -> int:
        seed = int(self.rng.integers(0, 2**62))
        return int(np.argmax(self.env.expected_rewards(self.samples, seed)))


def _run_episode(env: HawkesInterventionEnv, policy: Policy, seed: int) -> float:
    """One episode of ``policy`` from ``env.reset(seed=seed)`` to its end; its return."""
    obs, _ = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(policy(obs))
        total += reward
        done = terminated or truncated
    return total


def evaluate(env: HawkesInterventionEnv, policy: Policy, episodes: int = 20, seed: int = 0, *,
             progress: bool = False, desc: str = "evaluate") -> np.ndarray:
    """``[episodes]`` returns of ``policy`` on ``env``; episode ``i`` is reset with seed ``seed + i`` (so two
    policies evaluated with the same ``seed`` meet the same random streams). ``progress``: a tqdm bar on stderr."""
    return np.array([_run_episode(env, policy, seed + i)
                     for i in tqdm(range(episodes), desc=desc, unit="episode", disable=not progress, leave=False)])


def collect_trajectories(env: HawkesInterventionEnv, policy: Policy, episodes: int, seed: int = 0
                         ) -> tuple[EventBatch, np.ndarray]:
    """Log ``episodes`` episodes of ``policy``: their events (interventions as their types) on ``[0, horizon]``
    and their returns."""
    times, marks, returns = [], [], np.zeros(episodes)
    for i in range(episodes):
        returns[i] = _run_episode(env, policy, seed + i)
        times.append(np.asarray(env._times))
        marks.append(np.asarray(env._marks, np.int64))
    batch = EventBatch.from_sequences(times, marks, t_start=0.0, t_end=env.horizon, num_marks=env.num_marks)
    return batch, returns


# ------------------------------------------------------------------------------------------ the learned model
def fit_event_model(data: EventBatch, name: str = "sahp", *, epochs: int = 30, seed: int = 0,
                    val_fraction: float = 0.2, batch_size: int = 16, lr: float = 3e-3, progress: bool = False,
                    **overrides: Any) -> Any:
    """Fit the neural TPP ``name`` of the model table (``"sahp"``, ``"thp"``, ...) on logged trajectories with the
    one trainer (a seeded ``val_fraction`` held out for early stopping); ``overrides`` go to the constructor
    (default ``hidden_size=16``, and one layer for the models that have layers). ``progress``: the trainer's tqdm
    bars. Returns the fitted model."""
    import inspect

    from tpp import table

    train, val = data.split((1.0 - val_fraction, val_fraction), seed=seed) if val_fraction > 0 else (data, None)
    args: dict[str, Any] = {"hidden_size": 16}
    if "num_layers" in inspect.signature(table.spec(name).cls.__init__).parameters:  # RMTPP, NHP have no layers
        args["num_layers"] = 1
    args.update(overrides)
    model = table.build(name, train, seed=seed, **args)
    table.fit_model(model, train, val, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, progress=progress)
    return model.eval()


class _EnvironmentTypes(nn.Module):
    """The learned model with the intervention types' intensities set to 0, for the one thinning sampler (the
    agent places those events). Encodes each history once per sampler step (the sampler asks three times)."""

    def __init__(self, model: Any, num_env_types: int) -> None:
        super().__init__()
        self.model = model
        self.num_marks = model.num_marks
        keep = torch.zeros(model.num_marks, dtype=torch.float64)
        keep[:num_env_types] = 1.0
        self.register_buffer("keep", keep)
        self._batch: EventBatch | None = None
        self._fn: Callable[[Tensor], Tensor] | None = None

    def intensity(self, batch: EventBatch, t: Tensor) -> Tensor:
        if batch is not self._batch:
            given = getattr(self.model, "intensity_given", None)
            self._fn = given(batch) if given is not None else (lambda q, b=batch: self.model.intensity(b, q))
            self._batch = batch
        return self._fn(t).double() * self.keep


class LearnedEventEnv:
    """Batched episodes of ``env``'s decision problem rolled out in a learned event model (``model``: any point
    process over ``env.num_marks`` types answering ``intensity``). Events of the environment's types come from
    :func:`tpp.sampling.thinning_sample` given the history (interventions included); rewards and observations
    are computed from the sampled events exactly as ``env`` computes them."""

    def __init__(self, model: Any, env: HawkesInterventionEnv, *, grid: int = 16, safety: float = 1.5) -> None:
        if model.num_marks != env.num_marks:
            raise ValueError(f"the model has {model.num_marks} types, the environment {env.num_marks}")
        self.model, self.env = model, env
        self.view = _EnvironmentTypes(model, env.num_env_types)
        self.grid, self.safety = int(grid), float(safety)

    def reset(self, n: int, seed: int = 0) -> np.ndarray:
        """Start ``n`` empty episodes; returns their observations ``[n, D]``."""
        self.rng = np.random.default_rng(seed)
        self.n, self.step_index, self.t = int(n), 0, 0.0
        self.times = torch.zeros(n, 0, dtype=torch.float64)
        self.marks = torch.zeros(n, 0, dtype=torch.long)
        self.lengths = torch.zeros(n, dtype=torch.long)
        return self._observation(self._batch(0.0))

    def _batch(self, t_end: float) -> EventBatch:
        n, L = self.n, max(int(self.lengths.max()) if self.n else 0, 1)
        times = torch.full((n, L), t_end, dtype=torch.float64)
        marks = torch.zeros(n, L, dtype=torch.long)
        width = self.times.shape[1]
        times[:, :width] = self.times[:, :L]
        marks[:, :width] = self.marks[:, :L]
        mask = torch.arange(L)[None, :] < self.lengths[:, None]
        times = torch.where(mask, times, torch.full_like(times, t_end))
        return EventBatch(times, marks, mask, torch.zeros(n, dtype=torch.float64),
                          torch.full((n,), t_end, dtype=torch.float64), self.env.num_marks, validate=False)

    def _observation(self, batch: EventBatch) -> np.ndarray:
        e = self.env
        return history_features(batch, batch.t_end, e.observation_rates, e.horizon).float().numpy()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """Apply ``actions [n]`` at the current decision time and sample to the next; returns observations,
        rewards ``[n]`` and whether the episodes ended."""
        e = self.env
        actions = np.asarray(actions, np.int64).reshape(self.n)
        t0, t1 = self.t, (self.step_index + 1) * e.step_length
        placed = torch.from_numpy(actions > 0)
        if bool(placed.any()):
            width = int(self.lengths.max()) + 1
            grow = width - self.times.shape[1]
            if grow > 0:
                self.times = torch.cat([self.times, torch.zeros(self.n, grow, dtype=torch.float64)], 1)
                self.marks = torch.cat([self.marks, torch.zeros(self.n, grow, dtype=torch.long)], 1)
            rows = torch.nonzero(placed)[:, 0]
            self.times[rows, self.lengths[rows]] = t0
            self.marks[rows, self.lengths[rows]] = torch.from_numpy(e.num_env_types + actions - 1)[rows]
            self.lengths[rows] += 1
        history = self._batch(t0)
        before = self.lengths.clone()
        with torch.no_grad():
            out, _ = thinning_sample(self.view, self.n, t1, history=history, generator=self.rng, grid=self.grid,
                                     safety=self.safety)
        self.times, self.marks, self.lengths = out.time.double(), out.mark, out.lengths.clone()
        new = out.mask & (torch.arange(out.max_length)[None, :] >= before[:, None])
        counts = torch.zeros(self.n, e.num_marks, dtype=torch.float64)
        counts.index_put_((torch.nonzero(new)[:, 0], out.mark[new]), torch.ones(int(new.sum()), dtype=torch.float64),
                          accumulate=True)
        cost = e.intervention_cost * placed.double()
        if e.reward_kind == "count":
            rewards = -(counts[:, : e.num_env_types] @ torch.from_numpy(e.harm)) - cost
        else:
            with torch.no_grad():
                lam = self.view.model.intensity(out, torch.full((self.n, 1), t1, dtype=torch.float64))[:, 0]
            lam = lam[:, : e.num_env_types].double().cpu()
            rewards = -(lam - torch.from_numpy(e.target_intensity)).abs().sum(-1) - cost
        self.t, self.step_index = t1, self.step_index + 1
        batch = self._batch(t1)
        return self._observation(batch), rewards.numpy(), self.step_index == e.num_steps


# ------------------------------------------------------------------------------------------ the agent
class ActorCritic(nn.Module):
    """A small policy (softmax over the actions) and value network on ``log1p`` of the observation."""

    def __init__(self, observation_size: int, num_actions: int, hidden_size: int = 32) -> None:
        super().__init__()

        def mlp(out: int) -> nn.Sequential:
            return nn.Sequential(nn.Linear(observation_size, hidden_size), nn.Tanh(),
                                 nn.Linear(hidden_size, hidden_size), nn.Tanh(), nn.Linear(hidden_size, out))

        self.actor, self.critic = mlp(num_actions), mlp(1)
        self.num_actions = int(num_actions)

    def forward(self, observation: Tensor) -> tuple[Tensor, Tensor]:
        """Action logits ``[N, A]`` and values ``[N]``."""
        x = torch.log1p(observation.float().clamp_min(0))
        return self.actor(x), self.critic(x)[..., 0]

    def policy(self, greedy: bool = True, seed: int = 0) -> Policy:
        """The policy as a function of one observation: the most probable action, or a seeded draw."""
        gen = torch.Generator().manual_seed(seed)

        def act(observation: np.ndarray) -> int:
            with torch.no_grad():
                logits, _ = self(torch.as_tensor(observation)[None])
            if greedy:
                return int(logits.argmax(-1))
            return int(torch.multinomial(logits.softmax(-1), 1, generator=gen))

        return act


@dataclass
class ACResult:
    """What :func:`train_actor_critic` did: the mean return in the model per iteration, and the seconds."""

    returns: list[float] = field(default_factory=list)
    seconds: float = 0.0


def train_actor_critic(rollouts: LearnedEventEnv, agent: ActorCritic, *, iterations: int = 50, episodes: int = 32,
                       lr: float = 3e-3, gamma: float = 1.0, lam: float = 0.9, entropy: float = 0.01,
                       value_weight: float = 0.5, seed: int = 0, progress: bool = False) -> ACResult:
    """Model-based actor-critic: per iteration ``episodes`` episodes rolled out in the learned model with the
    current (stochastic) policy; the critic regresses on TD(lambda) returns, the actor follows the policy gradient
    with the generalised advantage (normalised), plus an entropy bonus. Adam on both. ``progress``: a tqdm bar
    over the iterations (stderr) showing the mean return in the model."""
    import time as _time

    start = _time.perf_counter()
    optimiser = torch.optim.Adam(agent.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    result = ACResult()
    bar = tqdm(range(iterations), desc="actor-critic", unit="iteration", disable=not progress, leave=False)
    for it in bar:
        obs = rollouts.reset(episodes, seed=seed * 100_003 + it)
        observations, actions, rewards = [], [], []
        done = False
        while not done:
            with torch.no_grad():
                logits, _ = agent(torch.from_numpy(obs))
            a = torch.multinomial(logits.softmax(-1), 1, generator=gen)[:, 0]
            observations.append(torch.from_numpy(obs))
            actions.append(a)
            obs, r, done = rollouts.step(a.numpy())
            rewards.append(torch.from_numpy(r).float())
        T = len(rewards)
        O = torch.stack(observations)  # [T, N, D]
        Acts = torch.stack(actions)
        Rw = torch.stack(rewards)  # [T, N]
        logits, values = agent(O.reshape(T * episodes, -1))
        logits, values = logits.reshape(T, episodes, -1), values.reshape(T, episodes)
        with torch.no_grad():
            v = values.detach()
            next_v = torch.cat([v[1:], torch.zeros(1, episodes)])  # the episode ends at the horizon
            delta = Rw + gamma * next_v - v
            advantage = torch.zeros_like(delta)
            acc = torch.zeros(episodes)
            for t in reversed(range(T)):
                acc = delta[t] + gamma * lam * acc
                advantage[t] = acc
            target = advantage + v
            norm_adv = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
        logp = logits.log_softmax(-1)
        chosen = logp.gather(-1, Acts[..., None])[..., 0]
        ent = -(logp.exp() * logp).sum(-1).mean()
        loss = -(chosen * norm_adv).mean() + value_weight * ((values - target) ** 2).mean() - entropy * ent
        optimiser.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(agent.parameters(), 1.0)
        optimiser.step()
        result.returns.append(float(Rw.sum(0).mean()))
        bar.set_postfix(model_return=f"{result.returns[-1]:.3f}", refresh=False)
    result.seconds = _time.perf_counter() - start
    return result


# ------------------------------------------------------------------------------------------ picture
def plot_controlled_intensity(env: HawkesInterventionEnv, policy: Policy, seed: int = 0, type_index: int = 0,
                              num: int = 1500, ax: Any = None, title: str | None = None) -> Any:
    """The intensity of environment type ``type_index`` over one episode under ``policy`` beside the same episode
    without intervention (same seed, so the same random stream per step), with the events as rugs and the
    interventions as vertical lines. Returns the figure."""
    from tpp.plot import _axes

    runs = {}
    for label, pol in (("uncontrolled", no_intervention), ("controlled", policy)):
        evaluate(env, pol, episodes=1, seed=seed)
        runs[label] = env.history()
    grid = np.linspace(0.0, env.horizon, num)
    fig, ax = _axes(ax)
    colors = {"uncontrolled": "tab:red", "controlled": "tab:blue"}
    top = 0.0
    for label, batch in runs.items():
        events = batch.time[batch.mask].numpy()
        marks = batch.mark[batch.mask].numpy()
        x = np.sort(np.concatenate([grid, events, events + 1e-9 * env.horizon]))
        lam = env.intensity(x, history=batch)[:, type_index]
        top = max(top, float(lam.max()))
        ax.plot(x, lam, lw=1, color=colors[label], label=f"{label} (type {type_index}: "
                f"{int(np.sum(marks == type_index))} events)")
        runs[label] = (events, marks)
    for i, (label, (events, marks)) in enumerate(runs.items()):
        tk = events[marks == type_index]
        ax.plot(tk, np.full(tk.size, -0.05 * top * (1 + i)), "|", color=colors[label], ms=8)
    events, marks = runs["controlled"]
    for j, t in enumerate(events[marks >= env.num_env_types]):
        ax.axvline(t, color="tab:green", lw=0.6, alpha=0.6, label="intervention" if j == 0 else None)
    ax.set_xlim(0.0, env.horizon)
    ax.set_xlabel("time")
    ax.set_ylabel("intensity")
    ax.legend(loc="upper right", fontsize=7)
    ax.set_title(title or "controlled vs uncontrolled intensity")
    return fig


# ------------------------------------------------------------------------------------------ the whole pipeline
def _control_models() -> tuple[str, ...]:
    from tpp import table
    from tpp.table import Family, Training

    # the neural event models of the table: trained by the one trainer, needing nothing beyond times and marks
    # (the spatio-temporal entries need locations, which the environment's events do not carry)
    return tuple(s.name for s in table.specs(Family.TPP, Training.TRAINER) if not s.needs)


CONTROL_MODELS: tuple[str, ...] = _control_models()
"""The model table's names :func:`run_control` (and ``tpp control --model``) can learn the environment with."""

POLICY_LABELS: dict[str, str] = {
    "trained": "trained (model-based AC)",
    "no_intervention": "no intervention",
    "random": "random (p=0.5)",
    "lookahead": "one-step lookahead (true parameters)",
}
"""Key of each evaluated policy in :class:`ControlReport` -> its label in tables (the benchmark's JSON keys)."""


@dataclass
class PolicyScore:
    """Returns of one policy on the true environment: per episode, their mean and its standard error."""

    returns: np.ndarray
    mean: float
    se: float

    @classmethod
    def of(cls, returns: np.ndarray) -> PolicyScore:
        returns = np.asarray(returns, np.float64)
        return cls(returns, float(returns.mean()), float(returns.std(ddof=1) / math.sqrt(returns.size)))


@dataclass
class ControlReport:
    """What :func:`run_control` measured (keys of ``scores`` and ``paired_difference``: :data:`POLICY_LABELS`).

    ``improvement_over_none`` / ``improvement_over_random``: ``(R - R_b) / |R_b|`` of the trained policy's mean
    return ``R`` over the baseline's ``R_b`` (NaN when ``R_b == 0``); ``gap_to_lookahead``: ``R - R_lookahead``
    (negative: the trained policy is behind the planner with the true parameters); ``paired_difference``: the
    trained policy's return minus the other's, episode by episode on the same seeds, as (mean, standard error).
    """

    model: str
    settings: dict[str, int]
    scores: dict[str, PolicyScore]
    improvement_over_none: float
    improvement_over_random: float
    gap_to_lookahead: float
    paired_difference: dict[str, tuple[float, float]]
    training_curve: list[float]
    seconds: dict[str, float]
    validation_ll_per_event: float | None
    logged_events: int
    logged_return: float
    env: HawkesInterventionEnv = field(repr=False)
    event_model: Any = field(repr=False)
    agent: ActorCritic = field(repr=False)
    policy: Policy = field(repr=False)

    @property
    def busiest_seed(self) -> int:
        """The reset seed of the evaluation episode where no intervention did worst (the largest outbreak): the
        episode where control shows."""
        return 10_000 + self.settings["seed"] + int(np.argmin(self.scores["no_intervention"].returns))

    def plot(self, **kwargs: Any) -> Any:
        """:func:`plot_controlled_intensity` of the trained policy on the :attr:`busiest_seed` episode (``kwargs``
        go there); returns the figure."""
        kwargs.setdefault("title", f"controlled ({self.model} + actor-critic) vs uncontrolled, "
                                   f"evaluation episode {self.busiest_seed - 10_000 - self.settings['seed']}")
        return plot_controlled_intensity(self.env, self.policy, seed=self.busiest_seed, **kwargs)

    def to_dict(self, returns: bool = False) -> dict[str, Any]:
        """A JSON-ready summary (``returns``: with each policy's per-episode returns); floats may be NaN."""
        scores = {}
        for key, s in self.scores.items():
            scores[key] = {"label": POLICY_LABELS[key], "mean": s.mean, "se": s.se}
            if returns:
                scores[key]["returns"] = s.returns.tolist()
        return {
            "model": self.model, **self.settings, "returns": scores,
            "improvement_over_none": self.improvement_over_none,
            "improvement_over_random": self.improvement_over_random,
            "gap_to_lookahead": self.gap_to_lookahead,
            "paired_difference": {k: {"mean": m, "se": se} for k, (m, se) in self.paired_difference.items()},
            "validation_ll_per_event": self.validation_ll_per_event,
            "logged_events": self.logged_events, "logged_return": self.logged_return,
            "training_curve": list(self.training_curve), "seconds": dict(self.seconds),
        }


def _at_least(name: str, value: int, low: int, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}{why}, got {value!r}")
    return int(value)


def run_control(env: HawkesInterventionEnv | None = None, *, model: str = "sahp", log_episodes: int = 400,
                epochs: int = 60, iterations: int = 80, rollouts: int = 32, eval_episodes: int = 200,
                lookahead_samples: int = 128, seed: int = 0, progress: bool = True) -> ControlReport:
    """The model-based control pipeline on ``env`` (default :func:`benchmark_env`), every stage seeded:

    1. log ``log_episodes`` episodes of the random behaviour policy (p = 0.5) on the true environment;
    2. fit the neural TPP ``model`` of the table (:data:`CONTROL_MODELS`) on them (:func:`fit_event_model`,
       ``epochs`` epochs with early stopping on a 20% held-out part);
    3. train :class:`ActorCritic` only inside the learned model (:class:`LearnedEventEnv`, ``iterations``
       iterations of ``rollouts`` episodes);
    4. evaluate on the true environment, ``eval_episodes`` episodes with the same seeds for every policy: the
       trained policy (greedy), no intervention, random (p = 0.5) and the one-step lookahead planner with the true
       parameters (``lookahead_samples`` Monte Carlo copies per action).

    The defaults are ``benchmarks/hawkes_control.py``'s (about 2 minutes on one core). ``progress``: tqdm bars
    on stderr over the stages and within the long ones. Bad sizes or an unknown model raise ``ValueError``.
    """
    import time

    if model not in CONTROL_MODELS:
        raise ValueError(f"model must be a neural event model of the table ({', '.join(CONTROL_MODELS)}), "
                         f"got {model!r}")
    settings = {
        # the fit holds out 20% for early stopping: five episodes leave one there
        "log_episodes": _at_least("log_episodes", log_episodes, 5, " (20% are held out for validation)"),
        "epochs": _at_least("epochs", epochs, 1),
        "iterations": _at_least("iterations", iterations, 1),
        "rollouts": _at_least("rollouts", rollouts, 2, " (the advantage is normalised over the rollouts)"),
        "eval_episodes": _at_least("eval_episodes", eval_episodes, 2, " (a standard error needs two episodes)"),
        "lookahead_samples": _at_least("lookahead_samples", lookahead_samples, 1),
        "seed": _at_least("seed", seed, 0),
    }
    env = benchmark_env() if env is None else env
    if not isinstance(env, HawkesInterventionEnv):
        raise TypeError(f"env must be a HawkesInterventionEnv, got {type(env).__name__}")
    seconds: dict[str, float] = {}
    stages = tqdm(total=4, desc="control", unit="stage", disable=not progress)
    try:
        stages.set_postfix_str("logging episodes")
        start = time.perf_counter()
        behaviour = RandomPolicy(env.action_space.n, 0.5, seed + 7)
        logs, log_returns = collect_trajectories(env, behaviour, log_episodes, seed=50_000 + seed)
        seconds["log"] = time.perf_counter() - start
        stages.update()

        stages.set_postfix_str(f"fitting {model}")
        start = time.perf_counter()
        event_model = fit_event_model(logs, model, epochs=epochs, seed=seed, progress=progress)
        seconds["fit"] = time.perf_counter() - start
        val_ll = getattr(getattr(event_model, "train_result_", None), "best_val_ll_per_event", None)
        stages.update()

        stages.set_postfix_str("actor-critic in the learned model")
        torch.manual_seed(seed)
        agent = ActorCritic(env.observation_space.shape[0], env.action_space.n)
        trained = train_actor_critic(LearnedEventEnv(event_model, env), agent, iterations=iterations,
                                     episodes=rollouts, seed=seed, progress=progress)
        seconds["actor_critic"] = trained.seconds
        stages.update()

        stages.set_postfix_str("evaluating on the true environment")
        policy = agent.policy(greedy=True)
        policies: dict[str, Policy] = {
            "trained": policy,
            "no_intervention": no_intervention,
            "random": RandomPolicy(env.action_space.n, 0.5, seed + 1),
            "lookahead": LookaheadPolicy(env, lookahead_samples, seed + 2),
        }
        start = time.perf_counter()
        # the seeds of the evaluation episodes are 10_000 + seed + i (ControlReport.busiest_seed relies on it)
        scores = {key: PolicyScore.of(evaluate(env, p, eval_episodes, seed=10_000 + seed, progress=progress,
                                               desc=key.replace("_", " ")))
                  for key, p in policies.items()}
        seconds["evaluate"] = time.perf_counter() - start
        stages.update()
    finally:
        stages.close()

    def gain(baseline: str) -> float:
        b = scores[baseline].mean
        return (scores["trained"].mean - b) / abs(b) if b != 0 else math.nan  # no scale to compare against

    paired = {}
    for key in ("no_intervention", "random", "lookahead"):
        d = PolicyScore.of(scores["trained"].returns - scores[key].returns)
        paired[key] = (d.mean, d.se)
    return ControlReport(
        model=model, settings=settings, scores=scores, improvement_over_none=gain("no_intervention"),
        improvement_over_random=gain("random"), gap_to_lookahead=scores["trained"].mean - scores["lookahead"].mean,
        paired_difference=paired, training_curve=list(trained.returns), seconds=seconds,
        validation_ll_per_event=None if val_ll is None else float(val_ll), logged_events=int(logs.num_events),
        logged_return=float(log_returns.mean()), env=env, event_model=event_model, agent=agent, policy=policy)
