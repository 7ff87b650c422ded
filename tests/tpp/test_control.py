"""tpp.control: the intervention environment on the exact nonlinear Hawkes simulator, its learned-model twin and the
model-based actor-critic (issue 19 part 4)."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

pytest.importorskip("gymnasium")  # the optional extra `control`; installed by `make test`

from tpp.control import (ActorCritic, HawkesInterventionEnv, LearnedEventEnv, LookaheadPolicy, RandomPolicy,  # noqa: E402
                         benchmark_env, collect_trajectories, evaluate, history_features, no_intervention,
                         plot_controlled_intensity, train_actor_critic)


def _active_env(**overrides) -> HawkesInterventionEnv:
    """Two busy environment types and one intervention that inhibits type 0 and excites type 1."""
    args = dict(baseline=[0.3, -0.5], adjacency=[[0.5, 0.3, -2.0], [0.2, 0.3, 1.0]], decays=1.5,
                step_length=1.0, horizon=10.0, intervention_cost=0.3)
    args.update(overrides)
    return HawkesInterventionEnv(**args)


def _run(env: HawkesInterventionEnv, actions: list[int], seed: int) -> tuple[list, list]:
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for a in actions:
        obs, r, terminated, truncated, _ = env.step(a)
        observations.append(obs)
        rewards.append(r)
    return observations, rewards


def test_check_env_passes():
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gymnasium's advice (unbounded Box, no render modes), not failures
        check_env(_active_env())
        check_env(benchmark_env())


def test_seeded_reproducibility():
    env_a, env_b = _active_env(), _active_env()
    actions = [1, 0, 1, 1, 0, 0, 1, 0, 1, 0]
    obs_a, rew_a = _run(env_a, actions, seed=11)
    obs_b, rew_b = _run(env_b, actions, seed=11)
    assert rew_a == rew_b and all(np.array_equal(x, y) for x, y in zip(obs_a, obs_b))
    assert env_a._times == env_b._times and env_a._marks == env_b._marks
    _, rew_c = _run(env_b, actions, seed=12)
    assert rew_c != rew_a
    # lookahead planning between steps never disturbs the environment's own random stream
    env_b.reset(seed=11)
    planner = LookaheadPolicy(env_b, samples=8, seed=0)
    replay = []
    for a in actions:
        planner(None)
        replay.append(env_b.step(a)[1])
    assert replay == rew_a


def _env_residuals(env: HawkesInterventionEnv, batch) -> np.ndarray:
    """Compensator increments between consecutive events of each environment type (time rescaling), under the
    exact model's intensity given the whole history, interventions included."""
    with torch.no_grad():
        cum = env.process.cumulative_intensity(batch).numpy()  # [B, L, K]
    out = []
    for b in range(len(batch)):
        n = int(batch.lengths[b])
        marks = batch.mark[b, :n].numpy()
        for k in range(env.num_env_types):
            values = cum[b, :n, k][marks == k]
            out.append(np.diff(np.concatenate([[0.0], values])))
    return np.concatenate(out)


def test_event_statistics_match_the_exact_model_ks():
    """Residuals of the time-rescaling theorem under the exact model are Exp(1): the environment's step-wise
    simulation (state carried across decisions, interventions inserted) is the model's process."""
    env = _active_env()
    batch, _ = collect_trajectories(env, RandomPolicy(2, 0.5, seed=3), episodes=30, seed=100)
    assert int((batch.mark[batch.mask] == 2).sum()) > 50  # interventions did happen
    residuals = _env_residuals(env, batch)
    assert residuals.size > 500
    assert scipy.stats.kstest(residuals, "expon").pvalue > 1e-3
    # a waiting time with mean lambda (the paper's code) instead of 1 / lambda fails the same test
    wrong = HawkesInterventionEnv([np.log(np.expm1(2.0))], [[0.0, 0.0]], horizon=10.0)
    times = np.cumsum(np.random.default_rng(0).exponential(scale=2.0, size=400))
    from tpp.events import EventBatch

    fake = EventBatch.from_sequences([times], [np.zeros(400, np.int64)], t_end=float(times[-1]), num_marks=2)
    assert scipy.stats.kstest(_env_residuals(wrong, fake), "expon").pvalue < 1e-6


def test_uncontrolled_episodes_match_nonlinear_hawkes_sample():
    """Without interventions an episode, simulated decision by decision, has the law of one
    NonlinearHawkes.sample over the horizon (two-sample KS on the counts and on the first event times)."""
    env = _active_env()
    n = 300
    counts, firsts = np.zeros((n, 2)), np.full(n, np.inf)
    for i in range(n):
        env.reset(seed=i)
        for _ in range(env.num_steps):
            counts[i] += env.step(0)[4]["counts"]
        if env._times:
            firsts[i] = env._times[0]
    direct = env.process.sample(n, env.horizon, generator=1)
    direct_counts = np.stack([((direct.mark == k) & direct.mask).sum(1).numpy() for k in range(2)], 1)
    for k in range(2):
        assert scipy.stats.ks_2samp(counts[:, k], direct_counts[:, k]).pvalue > 1e-3
    direct_firsts = np.where(direct.lengths.numpy() > 0, direct.time[:, 0].numpy(), np.inf)
    assert scipy.stats.ks_2samp(firsts, direct_firsts).pvalue > 1e-3
    assert int((direct.mark[direct.mask] == 2).sum()) == 0  # the intervention type never fires on its own


def test_linear_regime_counts_match_closed_form():
    """Identity link, no intervention: E[N(0, T)] from an empty history has a closed form for exponential kernels,
    E[lambda(t)] = L + expm(-beta (I - A) t) (mu - L) with L = (I - A)^{-1} mu."""
    mu = np.array([0.6, 0.3])
    A = np.array([[0.3, 0.2], [0.1, 0.4]])
    beta, T, episodes = 2.0, 8.0, 400
    env = HawkesInterventionEnv(mu, np.c_[A, [0.5, 0.0]], decays=beta, link="identity", horizon=T)
    M = beta * (np.eye(2) - A)
    L = np.linalg.solve(np.eye(2) - A, mu)
    expected = L * T + np.linalg.solve(M, (np.eye(2) - scipy.linalg.expm(-M * T)) @ (mu - L))
    counts = np.zeros((episodes, 2))
    for i in range(episodes):
        env.reset(seed=i)
        for _ in range(env.num_steps):
            counts[i] += env.step(0)[4]["counts"]
    z = (counts.mean(0) - expected) / (counts.std(0, ddof=1) / np.sqrt(episodes))
    assert np.all(np.abs(z) < 4), (counts.mean(0), expected)


def test_intensities_stay_nonnegative_with_inhibition():
    env = _active_env(adjacency=[[0.5, 0.3, -20.0], [0.2, 0.3, -20.0]])
    _run(env, [1] * 10, seed=5)
    grid = np.linspace(0.0, env.horizon, 3001)
    lam = env.intensity(grid)
    assert np.all(lam >= 0) and np.all(np.isfinite(lam))
    assert lam.min() < 1e-6  # the inhibition did push the pre-activation far below zero
    for link in ("relu", "exp"):
        env_l = _active_env(adjacency=[[0.5, 0.3, -20.0], [0.2, 0.3, -20.0]], link=link)
        _, _ = _run(env_l, [1] * 10, seed=5)
        assert np.all(env_l.intensity(grid) >= 0)
    with pytest.raises(ValueError, match="negative"):
        _active_env(link="identity")


def test_reward_accounting_is_exact():
    """Each step's reward recomputed from the episode's events (and, for the target reward, the exact model's
    intensity at the step's end) equals what the environment paid."""
    harm = [1.0, 0.25]
    for kind in ("count", "target"):
        env = _active_env(harm=harm, reward=kind, target_intensity=[0.5, 1.0])
        actions = [1, 1, 0, 1, 0, 0, 1, 0, 0, 1]
        _, rewards = _run(env, actions, seed=21)
        batch = env.history()
        times = batch.time[0].numpy()
        marks = batch.mark[0].numpy()
        for i, (a, r) in enumerate(zip(actions, rewards)):
            t0, t1 = float(i), float(i + 1)
            placed = np.any((times == t0) & (marks == 2))
            assert placed == (a == 1)
            cost = 0.3 * a
            if kind == "count":
                inside = (times > t0) & (times <= t1)
                expected = -(np.sum(marks[inside] == 0) * 1.0 + np.sum(marks[inside] == 1) * 0.25) - cost
            else:
                lam = env.intensity(np.array([t1]))[0]
                expected = -np.abs(lam - np.array([0.5, 1.0])).sum() - cost
            assert r == pytest.approx(expected, abs=1e-12)
    # a hand-built step: 2 harmful type-0 events, 1 type-1 event, one intervention
    env = _active_env(harm=harm)
    assert env._rewards(np.array([[2.0, 1.0, 1.0]]), np.zeros((1, 3, 1)), np.array([1.0]))[0] == -(2 + 0.25) - 0.3


def test_observation_is_the_history_summary():
    env = _active_env()
    observations, _ = _run(env, [1, 0, 1, 1, 0, 1, 0, 0, 1, 1], seed=2)
    feats = history_features(env.history(), env.time, env.observation_rates, env.horizon)
    np.testing.assert_allclose(observations[-1], feats[0].numpy(), rtol=1e-6, atol=1e-7)
    assert env.observation_space.contains(observations[-1])
    with pytest.raises(ValueError, match="reset"):
        env.step(0)
    with pytest.raises(ValueError, match="action"):
        _active_env().step(5)


def test_learned_env_with_the_true_model_matches_the_environment():
    """LearnedEventEnv driven by the exact process itself reproduces the environment's expected return."""
    env = _active_env(horizon=4.0)
    rollouts = LearnedEventEnv(env.process, env)
    rollouts.reset(200, seed=0)
    total, done = np.zeros(200), False
    actions = np.tile([1, 0], 100)
    while not done:
        _, r, done = rollouts.step(actions)
        total += r
    truth = np.concatenate([evaluate(env, lambda o: 1, 100, seed=0), evaluate(env, no_intervention, 100, seed=500)])
    se = np.sqrt(total.var() / total.size + truth.var() / truth.size)
    assert abs(total.mean() - truth.mean()) < 4 * se


def test_lookahead_reads_the_state_and_policies_run():
    env = benchmark_env()
    env.reset(seed=0)
    quiet = env.expected_rewards(samples=64, seed=1)
    assert np.argmax(quiet) == 0  # nothing to prevent: intervening only costs
    env._R[1] += 1.0  # a trigger just happened: an outbreak is coming
    outbreak = env.expected_rewards(samples=64, seed=1)
    assert np.argmax(outbreak) == 1
    none = evaluate(env, no_intervention, 5, seed=0)
    rand = evaluate(env, RandomPolicy(2, 0.5, 0), 5, seed=0)
    assert none.shape == rand.shape == (5,)


def test_actor_critic_steps_change_the_policy():
    from tpp import table

    env = benchmark_env(horizon=3.0)
    logs, _ = collect_trajectories(env, RandomPolicy(2, 0.5, 0), episodes=8, seed=0)
    model = table.build("sahp", logs, seed=0, hidden_size=8, num_layers=1)
    model.initialise(logs)
    rollouts = LearnedEventEnv(model.eval(), env)
    torch.manual_seed(0)
    agent = ActorCritic(env.observation_space.shape[0], 2, hidden_size=8)
    before = [p.detach().clone() for p in agent.parameters()]
    result = train_actor_critic(rollouts, agent, iterations=2, episodes=4, seed=0)
    assert len(result.returns) == 2 and np.all(np.isfinite(result.returns))
    assert any(not torch.equal(b, p) for b, p in zip(before, agent.parameters()))
    action = agent.policy()(env.reset(seed=0)[0])
    assert action in (0, 1)


def test_plot_controlled_intensity():
    env = benchmark_env(horizon=6.0)
    fig = plot_controlled_intensity(env, lambda o: int(o[2] > 0.3), seed=1)
    assert len(fig.axes[0].lines) >= 2
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_import_without_gymnasium_names_the_extra(monkeypatch):
    import tpp.control

    monkeypatch.setitem(__import__("sys").modules, "gymnasium", None)
    spec = importlib.util.spec_from_file_location("_control_without_gymnasium", tpp.control.__file__)
    module = importlib.util.module_from_spec(spec)
    with pytest.raises(ImportError, match=r"tpp-sde\[control\]"):
        spec.loader.exec_module(module)
