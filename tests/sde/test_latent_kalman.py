"""LatentSDE against the exact answer on a linear-Gaussian SDE (issue 14's correctness test).

Data: an Ornstein-Uhlenbeck latent ``dz = -theta z dt + sigma dW`` (stationary start), observed with
Gaussian noise ``y = z + N(0, r^2)`` at irregular times; some observed values are held out. The exact
posterior of a held-out value is the Kalman (Rauch-Tung-Striebel) smoother's, written here with NumPy on
the OU's exact transitions (and cross-checked against plain Gaussian conditioning).

What the model family can match, precisely: LatentSDE's posterior is a Markov SDE with the prior's
diffusion, the drift ``h(z) + correction(z, context of the next observation, time until it)``, and a
Gaussian ``q(z_0)``. The exact smoothing posterior of a linear-Gaussian SDE is of that form: Doob's
h-transform gives the drift ``h(z) + sigma^2 d/dz log p(y_future | z_t)``, with ``log p(y_future | z_t) =
-P(t) z^2 / 2 + nu(t) z + const`` from the backward information filter, so the correction is
``sigma^2 (nu(t) - P(t) z)``, a function of ``z``, of the next observation's backward message ``(P_j,
nu_j)`` and of the time until it, exactly what the posterior drift reads; ``q(z_0)`` is the Gaussian
``p(z_0 | y)``. So the family holds the exact posterior, and these tests plug it in (the true prior,
diffusion, decoder and noise; an encoder that returns the backward messages as context; the h-transform
as posterior drift) and check that everything LatentSDE does around them (the clock, the
standardisation, the posterior solve and its "prior after the last observation" switch, interpolation,
the observation noise, :func:`sde.tasks.predictive_distribution`) reproduces the smoother: predictive
means and variances within Monte Carlo error (plus the Euler scheme's ``O(step)`` bias, bounded below),
and central 90 % intervals covering held-out values at the nominal rate (binomial tolerance).

What a *trained* fit is not tested on here: the learned GRU encoder and MLP correction only approximate
the messages and the h-transform, to an accuracy that depends on training length; the fit test below
checks the trained model's predictive against the same smoother with loose tolerances.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sde.models import LatentODE, LatentSDE
from sde.models.latent import _inverse_softplus
from sde.series import SeriesBatch
from sde.solvers import Method
from sde.tasks import TargetScale, interpolation_split, predictive_distribution

THETA, SIGMA, NOISE = 1.0, 1.0, 0.4
STATIONARY_VAR = SIGMA**2 / (2 * THETA)


# ---------------------------------------------------------------------------------------------- exact answer
def simulate(rng: np.random.Generator, num_series: int, num_points: int, span: float) -> tuple[np.ndarray, np.ndarray]:
    """Times ``[B, L]`` (sorted, irregular, first at 0) and noisy values ``[B, L]`` of the OU, exactly."""
    times = np.sort(rng.uniform(0, span, size=(num_series, num_points)), axis=1)
    times[:, 0] = 0.0
    z = np.empty_like(times)
    z[:, 0] = rng.normal(0, math.sqrt(STATIONARY_VAR), num_series)
    for j in range(1, num_points):
        a = np.exp(-THETA * (times[:, j] - times[:, j - 1]))
        z[:, j] = a * z[:, j - 1] + rng.normal(0, 1, num_series) * np.sqrt(STATIONARY_VAR * (1 - a**2))
    return times, z + NOISE * rng.normal(size=z.shape)


def kalman_smoother(times: np.ndarray, y: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and variance of the latent ``z`` at every time of one series given the ``observed``
    values: Kalman filter and RTS smoother on the OU's exact transitions (``a = exp(-theta dt)``, ``q =
    stationary variance (1 - a^2)``); unobserved times get no update."""
    n = len(times)
    m_f, p_f, m_p, p_p = (np.zeros(n) for _ in range(4))
    m, p = 0.0, STATIONARY_VAR
    for i in range(n):
        if i:
            a = math.exp(-THETA * (times[i] - times[i - 1]))
            m, p = a * m, a * a * p + STATIONARY_VAR * (1 - a * a)
        m_p[i], p_p[i] = m, p
        if observed[i]:
            gain = p / (p + NOISE**2)
            m, p = m + gain * (y[i] - m), (1 - gain) * p
        m_f[i], p_f[i] = m, p
    m_s, p_s = m_f.copy(), p_f.copy()
    for i in range(n - 2, -1, -1):
        a = math.exp(-THETA * (times[i + 1] - times[i]))
        c = p_f[i] * a / p_p[i + 1]
        m_s[i] = m_f[i] + c * (m_s[i + 1] - m_p[i + 1])
        p_s[i] = p_f[i] + c * c * (p_s[i + 1] - p_p[i + 1])
    return m_s, p_s


def gaussian_conditioning(times: np.ndarray, y: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same posterior by conditioning the joint Gaussian (OU covariance ``v exp(-theta |s - t|)``)."""
    k = STATIONARY_VAR * np.exp(-THETA * np.abs(times[:, None] - times[None, :]))
    o = observed
    gram = k[np.ix_(o, o)] + NOISE**2 * np.eye(int(o.sum()))
    cross = k[:, o]
    mean = cross @ np.linalg.solve(gram, y[o])
    var = np.diag(k) - np.einsum("ij,ji->i", cross, np.linalg.solve(gram, cross.T))
    return mean, var


# ---------------------------------------------------------------------------------------------- exact posterior
class LinearDrift(nn.Module):
    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return -THETA * z


class ConstantDiffusion(nn.Module):
    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return torch.full_like(z, SIGMA)


def _message(precision: Tensor, shift: Tensor, gap: Tensor) -> tuple[Tensor, Tensor]:
    """The backward message ``(P, nu)`` of ``exp(-P z^2/2 + nu z)`` carried back by ``gap`` through the OU."""
    a = torch.exp(-THETA * gap)
    v = STATIONARY_VAR * (1 - a**2)
    return a**2 * precision / (1 + v * precision), a * shift / (1 + v * precision)


class BackwardMessages(nn.Module):
    """Encoder stand-in: context ``j`` = ``(P_j, nu_j)``, the information form of ``p(y_j, y_j+1, ... | z(t_j))``
    (backward information filter over the observed rows; features are ``[x, observed, time, gap]``)."""

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        x, seen, s = features[..., 0], features[..., 1], features[..., 2]
        B, L = x.shape
        out = torch.zeros(B, L, 2, dtype=x.dtype)
        precision, shift = torch.zeros(B, dtype=x.dtype), torch.zeros(B, dtype=x.dtype)
        for j in range(L - 1, -1, -1):
            valid = j < lengths
            if j + 1 < L:
                gap = torch.where(j + 1 < lengths, s[:, (j + 1) % L] - s[:, j], torch.zeros_like(s[:, j]))
                precision, shift = _message(precision, shift, gap)
            precision = torch.where(valid, precision + seen[:, j] / NOISE**2, precision)
            shift = torch.where(valid, shift + seen[:, j] * x[:, j] / NOISE**2, shift)
            out[:, j] = torch.stack([precision, shift], -1)
        return out


class InitialPosterior(nn.Module):
    """``q(z_0)`` stand-in: ``p(z_0 | y)`` from the stationary prior and the first message; ``[mean, log std]``."""

    def forward(self, context: Tensor) -> Tensor:
        precision = 1 / STATIONARY_VAR + context[:, 0:1]
        return torch.cat([context[:, 1:2] / precision, -0.5 * torch.log(precision)], -1)


class HTransform(nn.Module):
    """Posterior drift correction stand-in: ``sigma^2 d/dz log h(t, z)`` from the next observation's message
    carried back to ``t``; input ``[z, P_next, nu_next, time until it]``."""

    def forward(self, inputs: Tensor) -> Tensor:
        z, precision, shift, ahead = inputs.unbind(-1)
        p_t, nu_t = _message(precision, shift, ahead)
        return (SIGMA**2 * (nu_t - p_t * z))[:, None]


def exact_latent_sde(step_size: float) -> LatentSDE:
    """A LatentSDE whose prior, decoder and noise are the simulation's and whose posterior is the exact one."""
    model = LatentSDE(1, latent_size=1, hidden_size=8, context_size=2, step_size=step_size,
                      prior_drift=LinearDrift(), diffusion=ConstantDiffusion()).double()
    with torch.no_grad():
        model.decoder.weight.fill_(1.0)
        model.decoder.bias.zero_()
        model.raw_noise.copy_(_inverse_softplus(torch.tensor([NOISE], dtype=torch.float64)))
        model.pz0_mean.zero_()
        model.pz0_log_std.fill_(0.5 * math.log(STATIONARY_VAR))
    # channel_mean 0, channel_std 1, time_scale 1: model units are the data's
    model.encoder, model.qz0, model.posterior_drift = BackwardMessages(), InitialPosterior(), HTransform()
    return model


def make_batch(times: np.ndarray, values: np.ndarray) -> SeriesBatch:
    t = torch.as_tensor(times, dtype=torch.float64)
    return SeriesBatch(t, torch.as_tensor(values, dtype=torch.float64)[..., None], torch.ones_like(t, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------- tests
def test_kalman_smoother_equals_gaussian_conditioning() -> None:
    """The reference itself: the RTS smoother equals conditioning the joint Gaussian."""
    rng = np.random.default_rng(1)
    times, y = simulate(rng, 3, 12, 5.0)
    for b in range(3):
        observed = rng.uniform(size=12) > 0.3
        m1, v1 = kalman_smoother(times[b], y[b], observed)
        m2, v2 = gaussian_conditioning(times[b], y[b], observed)
        np.testing.assert_allclose(m1, m2, atol=1e-10)
        np.testing.assert_allclose(v1, v2, atol=1e-10)


def test_exact_posterior_predictive_matches_kalman_smoother() -> None:
    """With the exact posterior plugged in, LatentSDE's predictive mean and variance of held-out values (inside
    the observed span and after its end) equal the smoother's within Monte Carlo error and the Euler bias."""
    rng = np.random.default_rng(0)
    B, L, S, step = 40, 10, 500, 0.02
    times, y = simulate(rng, B, L, 4.0)
    held = np.zeros((B, L), dtype=bool)
    held[np.arange(B), rng.integers(1, L - 1, B)] = True  # one interior value per series
    values = np.where(held, np.nan, y)
    # queries: the held-out time and a forecast 0.5 after each series' last observation
    query = np.stack([times[held], times[:, -1] + 0.5], 1)
    ref_mean, ref_var = np.zeros((B, 2)), np.zeros((B, 2))
    for b in range(B):
        t_all = np.append(times[b], query[b, 1])
        m, v = kalman_smoother(t_all, np.append(y[b], 0.0), np.append(~held[b], False))
        at = np.append(held[b], False)
        ref_mean[b], ref_var[b] = (m[at][0], m[-1]), (v[at][0], v[-1])
    model = exact_latent_sde(step)
    torch.manual_seed(0)
    x = model.interpolate(make_batch(times, values), torch.as_tensor(query), num_samples=S)[..., 0].numpy()  # [S, B, 2]
    mean, var = x.mean(0), x.var(0)
    # Monte Carlo: the mean's error has sd sqrt(var / S), the variance's sqrt(2 / S) var (Gaussian samples)
    z_mean = (mean - ref_mean) / np.sqrt(ref_var / S)
    rel_var = var / ref_var - 1
    z_var = rel_var / math.sqrt(2 / S)
    # Euler's O(step) bias: theta * step = 2 % on a transition (the OU's Euler chain has stationary variance
    # 1 / (1 - theta * step / 2) = 1.01 times the exact one); allow 2 % of the variance on top of MC error
    assert np.abs(z_mean).max() < 4.5, f"mean off by {np.abs(z_mean).max():.1f} MC standard errors"
    assert abs(np.mean(z_mean)) < 4.5 / math.sqrt(z_mean.size) + 0.3
    assert np.abs(rel_var).max() < 4.5 * math.sqrt(2 / S) + 0.02, f"variance off by {np.abs(rel_var).max():.3f}"
    assert abs(np.mean(rel_var)) < 4.5 * math.sqrt(2 / S) / math.sqrt(rel_var.size) + 0.02
    # predict() adds the observation noise: std^2 = posterior variance + r^2
    torch.manual_seed(1)
    pred = model.predict(make_batch(times, values), torch.as_tensor(query), num_samples=S)
    total = ref_var + NOISE**2
    assert np.abs(pred.mean[..., 0].numpy() - ref_mean).max() < 4.5 * np.sqrt(total / S).max()
    assert np.abs(pred.std[..., 0].numpy() ** 2 / total - 1).max() < 4.5 * math.sqrt(2 / S) + 0.02
    assert z_var.size == 2 * B  # every query was compared


def test_exact_posterior_interval_coverage_is_nominal() -> None:
    """Through the tasks' scoring path (interpolation_split, predictive_distribution: 16 posterior paths plus
    the observation noise), central 90 % and 50 % intervals cover held-out values at the nominal rate, and
    within 3 points of the exact smoother's Gaussian intervals on the same values. (16 paths make the
    mixture a little narrower than the exact predictive, its variance ``15/16`` of the paths' spread in
    expectation, and random: measured 1-2 points below the smoother, e.g. 0.889 against 0.905 of 3000.)"""
    from scipy.stats import norm

    rng = np.random.default_rng(2)
    B, L = 1000, 12
    times, y = simulate(rng, B, L, 4.0)
    batch = make_batch(times, y)
    split = interpolation_split(batch, share=0.25, seed=0)
    # Euler step 0.05 (theta * step = 5 %: the chain's stationary variance 1.026 times the OU's, a shift of the
    # intervals' coverage of about 0.3 points, well inside the tolerances below)
    model = exact_latent_sde(0.05)
    torch.manual_seed(0)
    pred = predictive_distribution(model, split.inputs, TargetScale.of(split.inputs))
    truth = batch.values[split.held_out]
    n = int(split.held_out.sum())
    assert n >= 2000
    held = split.held_out[..., 0].numpy()
    standard = []
    for b in range(B):
        m, v = kalman_smoother(times[b], y[b], ~held[b])
        standard.append((y[b][held[b]] - m[held[b]]) / np.sqrt(v[held[b]] + NOISE**2))
    standard = np.concatenate(standard)
    for level in (0.9, 0.5):
        cover = float(pred.inside(truth, split.held_out, level).double().mean())
        exact = float((np.abs(standard) < norm.ppf(0.5 + level / 2)).mean())
        # binomial sd, inflated 1.5x for the correlation of values of one series
        tolerance = 4 * 1.5 * math.sqrt(level * (1 - level) / n)
        assert abs(exact - level) < tolerance, f"the smoother's {level:.0%} intervals cover {exact:.3f} of {n}"
        assert abs(cover - level) < tolerance, f"{level:.0%} intervals cover {cover:.3f} of {n} held-out values"
        assert abs(cover - exact) < 0.03, f"{level:.0%}: model {cover:.3f}, smoother {exact:.3f}"


@pytest.mark.slow  # ~8 s: 150 ELBO steps on batches of 32
def test_trained_posterior_approaches_the_kalman_smoother() -> None:
    """The learned posterior (GRU encoder, MLP correction, ``q(z_0)``) trained by the ELBO with the true prior,
    decoder and noise held fixed (so the bound's optimum is the exact posterior): after 150 Adam steps (batches
    of 32 of 512 series, learning rate 0.02, Euler step 0.1) its held-out means (over 50 paths) are within 0.5
    posterior sd of the smoother's (root mean square; predicting the prior mean is ~1.4 sd off), its variances
    within a factor 0.6-1.6 of the smoother's (median ratio), and its 90 % intervals cover 80-97 % of held-out
    values. Loose on purpose: the networks only approximate the backward messages and the h-transform, to an
    accuracy that grows with training (measured: rms 0.36 sd, median ratio 0.98, cover 0.89; with the data and
    torch seeds 15 / 10 / 19 / 11: 0.40, 0.93, 0.82, and 0.39, 0.95, 0.82 with batches of 64, so the low cover is
    that sample's, not the batch size's; the 50 paths add a Monte Carlo error of 0.14 sd in quadrature)."""
    rng = np.random.default_rng(5)
    times, y = simulate(rng, 512, 10, 4.0)
    torch.manual_seed(0)
    # Euler step 0.1 (theta * step = 10 %): coarse, but the bound's optimum is still the posterior of the chain
    # the model samples, and the checks below are loose enough for its bias
    model = LatentSDE(1, latent_size=1, hidden_size=16, context_size=8, step_size=0.1,
                      prior_drift=LinearDrift(), diffusion=ConstantDiffusion()).double()
    exact = exact_latent_sde(0.1)
    with torch.no_grad():
        for name in ("decoder.weight", "decoder.bias", "raw_noise", "pz0_mean", "pz0_log_std"):
            model.get_parameter(name).copy_(exact.get_parameter(name)).requires_grad_(False)
    steps = 150
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    for _ in range(steps):
        idx = rng.choice(len(times), 32, replace=False)
        loss = -model.elbo(make_batch(times[idx], y[idx])).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    B, L = 200, 10
    times, y = simulate(np.random.default_rng(9), B, L, 4.0)
    held = np.zeros((B, L), dtype=bool)
    held[np.arange(B), np.random.default_rng(1).integers(1, L - 1, B)] = True
    ref_mean, ref_var = np.zeros(B), np.zeros(B)
    for b in range(B):
        m, v = kalman_smoother(times[b], y[b], ~held[b])
        ref_mean[b], ref_var[b] = m[held[b]][0], v[held[b]][0]
    inputs = make_batch(times, np.where(held, np.nan, y))
    torch.manual_seed(0)
    with torch.no_grad():
        x = model.interpolate(inputs, torch.as_tensor(times[held][:, None]), num_samples=50)[:, :, 0, 0].numpy()
    error = (x.mean(0) - ref_mean) / np.sqrt(ref_var)
    assert np.sqrt(np.mean(error**2)) < 0.5
    assert np.sqrt(np.mean(ref_mean**2 / ref_var)) > 1.0  # what the prior alone would miss by
    assert 0.6 < np.median(x.var(0) / ref_var) < 1.6
    where = torch.as_tensor(held)[..., None]
    pred = predictive_distribution(model, inputs, TargetScale.of(inputs))
    cover = float(pred.inside(torch.as_tensor(y)[..., None][where], where, 0.9).double().mean())
    assert 0.8 <= cover <= 0.97, cover


# ---------------------------------------------------------------------------------------------- Latent ODE
SINE_GRID = np.linspace(0.0, 5.0, 51)


def noisy_sines(n: int, rng: np.random.Generator, rows: int = 24, noise: float = 0.1) -> SeriesBatch:
    """``sin(t + phase)`` plus noise ``noise`` at ``rows`` random points of a shared grid on [0, 5]."""
    pairs = []
    for _ in range(n):
        idx = np.r_[0, np.sort(rng.choice(np.arange(1, SINE_GRID.size), rows - 1, replace=False))]
        t = SINE_GRID[idx]
        pairs.append((t, np.sin(t + rng.uniform(0, 2 * np.pi))[:, None] + noise * rng.normal(size=(rows, 1))))
    return SeriesBatch.from_arrays(pairs)


def test_latent_ode_closed_form_noise_is_the_elbo_optimum() -> None:
    """``after_step`` sets the noise to the value that maximises the bound for the last training batch (same
    draws of ``z_0``): a little more or less noise gives a lower ELBO."""
    rng = np.random.default_rng(3)
    batch = noisy_sines(16, rng)
    model = LatentODE(1, latent_size=2, hidden_size=8, units=8, method=Method.RK4).double().initialise(batch)
    model.train()
    torch.manual_seed(0)
    model.objective(batch)
    model.after_step()
    sigma = float(F.softplus(model.raw_noise.detach()))
    assert sigma != pytest.approx(0.1)  # it moved from noise_init

    def elbo_at(scale: float) -> float:
        with torch.no_grad():
            model.raw_noise.copy_(_inverse_softplus(torch.tensor([sigma * scale], dtype=torch.float64)))
        torch.manual_seed(0)
        with torch.no_grad():
            return float(model.elbo(batch).sum())

    best = elbo_at(1.0)
    assert best > elbo_at(1.05) and best > elbo_at(1 / 1.05)


def test_latent_ode_short_fit_gives_nominal_interval_coverage() -> None:
    """A short fit (the one trainer, 180 steps, RK4 at step 0.05) on sine data with noise sd 0.1: the central
    90 % predictive intervals of :func:`sde.tasks.predictive_distribution` cover 80-97 % of held-out values
    (initialisation seeds 0, 1, 2: 0.926, 0.879, 0.938), and the fit is not a collapsed one (held-out MSE well
    below the values' variance: 0.05-0.06 of it). 120 steps were too few: seeds 0 and 1 stopped in the collapsed
    start (cover 0.988 and 0.969, noise 0.3-0.5, MSE 0.15-0.3 of the variance); the test passed only by the
    RNG state earlier tests left behind. With the noise fitted by gradient steps from ``noise_init=0.1`` (the old default)
    the same fit at step 0.02 covered 71 % (MSE 0.060 against 0.059 with the closed form):
    Adam moves the noise's parameter by about ``lr`` a step, too slowly for a short fit (PhysioNet, 600 stays,
    5 epochs = 35 steps: 23 %)."""
    rng = np.random.default_rng(0)
    train, test = noisy_sines(96, rng), noisy_sines(64, rng)
    torch.manual_seed(0)  # the initial weights: the test must not depend on what ran before it
    model = LatentODE(1, latent_size=4, hidden_size=16, units=32, method=Method.RK4, step_size=0.05)  # 20 RK4 steps
    model.fit(train, epochs=30, batch_size=16, lr=1e-2, seed=0, progress=False)
    split = interpolation_split(test, share=0.2, seed=0)
    torch.manual_seed(0)
    pred = predictive_distribution(model, split.inputs, TargetScale.of(split.inputs))
    truth = test.values[split.held_out]
    cover = float(pred.inside(truth, split.held_out, 0.9).double().mean())
    assert 0.8 <= cover <= 0.97, f"90 % intervals cover {cover:.3f}; noise {float(model.noise_std[0]):.3f}"
    mse = float(((pred.mean[split.held_out] - truth) ** 2).mean())
    assert mse < 0.25 * float(truth.var()), (mse, float(truth.var()))


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
