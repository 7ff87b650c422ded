"""Markov jump processes: exact path likelihood, closed-form MLE, Gillespie, and Neural MJP's ELBO."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

import tpp
from sde.models import MarkovJumpProcess, NeuralMJP

from sde.models.neural_mjp import Emission, Encoder, KLIntegral, PosteriorRates, Reconstruction, path_kl_integrand
from sde.simulate import (
    flashing_ratchet_rates,
    generator_matrix,
    gillespie,
    observe,
    states_at,
    stationary_distribution,
    two_state_rates,
)
from tpp.events import EventBatch, EventDataError
from tpp.process import PointProcess

RATES3 = np.array([[0.0, 1.0, 2.0], [0.5, 0.0, 0.3], [1.5, 0.2, 0.0]])


def three_state_path() -> EventBatch:
    """Initial state 0 at t=0; jumps to 2 at 0.7, to 1 at 1.5, to 0 at 2.0; window ends at 3.0."""
    return EventBatch.from_sequences([[0.0, 0.7, 1.5, 2.0]], [[0, 2, 1, 0]], t_start=0.0, t_end=3.0, num_marks=3)


# ---------------------------------------------------------------------- MarkovJumpProcess
def test_path_log_likelihood_equals_hand_computation() -> None:
    model = MarkovJumpProcess(3, RATES3)
    ll = model.log_likelihood(three_state_path()).item()
    exit0, exit1, exit2 = 3.0, 0.8, 1.7
    jumps = math.log(2.0) + math.log(0.2) + math.log(0.5)  # 0->2, 2->1, 1->0
    survival = exit0 * 0.7 + exit2 * 0.8 + exit1 * 0.5 + exit0 * 1.0
    assert ll == pytest.approx(jumps - survival, abs=1e-12)


def test_closed_forms_match_the_numerical_defaults_of_the_protocol() -> None:
    model = MarkovJumpProcess(3, RATES3)
    paths = gillespie(RATES3, 5, 4.0, generator=1)
    exact_comp = model.compensator(paths)
    numeric_comp = PointProcess.compensator(model, paths, num_points=8)
    assert torch.allclose(exact_comp, numeric_comp, atol=1e-10)
    exact_cum = model.cumulative_intensity(paths)
    numeric_cum = PointProcess.cumulative_intensity(model, paths, num_points=8)
    assert torch.allclose(exact_cum, numeric_cum, atol=1e-10)


def test_intensity_is_the_row_of_the_state_before_t() -> None:
    model = MarkovJumpProcess(3, RATES3)
    t = torch.tensor([[0.0, 0.3, 0.7, 1.0, 1.5, 2.5, 3.0]], dtype=torch.float64)
    lam = model.intensity(three_state_path(), t)[0].detach().numpy()
    before = [0, 0, 0, 2, 2, 0, 0]  # at a jump time the state before the jump counts
    assert np.allclose(lam, RATES3[before])
    assert np.all(lam[np.arange(7), before] == 0)


def test_repeated_state_is_an_error_naming_sequence_and_position() -> None:
    model = MarkovJumpProcess(3)
    bad = EventBatch.from_sequences(
        [[0.0, 1.0], [0.0, 0.5, 0.9]], [[0, 1], [1, 2, 2]], t_start=0.0, t_end=2.0, num_marks=3, seq_names=["a", "b"]
    )
    with pytest.raises(EventDataError, match=r"sequence 'b', position 2.*mark 2 repeats"):
        model.log_likelihood(bad)
    late = EventBatch.from_sequences([[0.5, 1.0]], [[0, 1]], t_start=0.0, t_end=2.0, num_marks=3)
    with pytest.raises(EventDataError, match="initial state"):
        model.log_likelihood(late)


def test_log_likelihood_gradcheck_in_the_log_rates() -> None:
    paths = gillespie(RATES3, 4, 3.0, generator=2)
    model = MarkovJumpProcess(3, RATES3)

    def ll(log_rates: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, {"log_rates": log_rates}, (paths,))

    start = torch.log(torch.tensor(RATES3) + torch.eye(3)).requires_grad_(True)
    assert torch.autograd.gradcheck(ll, (start,), eps=1e-6, atol=1e-8)


def test_fit_recovers_ratchet_rates_within_standard_errors() -> None:
    true = flashing_ratchet_rates()
    paths = gillespie(true, 100, 50.0, generator=3)
    model = MarkovJumpProcess(6).fit(paths)
    se = model.standard_errors(paths)
    allowed = true > 0
    z = (model.rates_ - true)[allowed] / se[allowed]
    assert np.all(np.abs(z) < 4), z
    assert np.all(model.rates_[~allowed & ~np.eye(6, dtype=bool)] < 1e-200)  # never seen: MLE 0
    # The closed form is the maximum: the score vanishes there.
    fitted = MarkovJumpProcess(6, model.rates_)
    fitted.log_likelihood(paths).sum().backward()
    assert fitted.log_rates.grad[torch.from_numpy(allowed)].abs().max() < 1e-8


def test_gillespie_visits_states_in_the_stationary_proportions() -> None:
    rates = flashing_ratchet_rates()
    pi = stationary_distribution(rates)
    # Neural MJP's reference values for V = r = b = 1 (their data generator's initial distribution).
    assert np.allclose(pi, [0.30119, 0.13654, 0.06227, 0.2003, 0.15914, 0.14057], atol=1e-5)
    assert np.allclose(pi @ generator_matrix(torch.tensor(rates)).numpy(), 0, atol=1e-12)
    path = gillespie(rates, 1, 20_000.0, generator=4, initial=0)
    _, holding = MarkovJumpProcess(6).sufficient_statistics(path)
    assert np.allclose(holding / holding.sum(), pi, atol=0.01)


def test_sample_continues_history_and_predict_is_exact() -> None:
    model = MarkovJumpProcess(3, RATES3)
    history = model.sample(3, 2.0, generator=5, initial=1)
    assert torch.all(history.time[:, 0] == 0) and torch.all(history.mark[:, 0] == 1)
    more = model.sample(3, 5.0, history=history, generator=6)
    for (t_old, m_old), (t_new, m_new) in zip(history.sequences(), more.sequences()):
        assert np.array_equal(t_new[: t_old.size], t_old) and np.array_equal(m_new[: m_old.size], m_old)
        assert np.all(t_new[t_old.size :] > 2.0) and np.all(np.diff(m_new) != 0)
    pred = model.predict(three_state_path())
    exit0 = 3.0
    assert float(pred.time_mean[0]) == pytest.approx(3.0 + 1 / exit0)
    assert np.allclose(pred.mark_probs[0].numpy(), RATES3[0] / exit0)
    assert float(pred.time_quantiles[0, 1]) == pytest.approx(3.0 + math.log(2) / exit0)


# ---------------------------------------------------------------------- Neural MJP
def switching_data(n: int, num_obs: int, seed: int, t_end: float = 10.0, noise: float = 0.25):
    paths = gillespie(two_state_rates(0.5, 1.0), n, t_end, generator=seed)
    return paths, observe(paths, num_obs, means=[0.0, 1.0], noise_std=noise, generator=seed + 1)


def exact_log_likelihood(model: NeuralMJP, data) -> np.ndarray:
    """``log p(x)`` under the model's prior and Gaussian emission by the forward algorithm (one process)."""
    Q = generator_matrix(torch.from_numpy(model.rates_)).numpy()
    mu, sd = model.emission_["mean"][0, :, 0], float(model.emission_["std"][0])
    out = []
    for t, x in data.series():
        lik = np.exp(-0.5 * ((x[:, 0, None] - mu) / sd) ** 2) / (math.sqrt(2 * math.pi) * sd)
        alpha, ll = model.initial_ * lik[0], 0.0
        for n in range(1, t.size):
            ll += math.log(alpha.sum())
            alpha = (alpha / alpha.sum()) @ scipy.linalg.expm(Q * (t[n] - t[n - 1])) * lik[n]
        out.append(ll + math.log(alpha.sum()))
    return np.array(out)


def test_kl_integrand_is_nonnegative_and_zero_iff_rates_agree() -> None:
    gen = torch.Generator().manual_seed(0)
    q = torch.softmax(torch.randn(5, 4, generator=gen), -1)
    g = torch.rand(5, 4, 4, generator=gen) * 3
    f = torch.rand(4, 4, generator=gen) * 3
    assert torch.all(path_kl_integrand(q, g, f) > 0)
    assert torch.allclose(path_kl_integrand(q, f.expand(5, 4, 4), f), torch.zeros(5), atol=1e-6)


@pytest.mark.parametrize("rates", list(PosteriorRates))
def test_model_kl_is_zero_when_posterior_equals_prior_and_positive_otherwise(rates: PosteriorRates) -> None:
    torch.manual_seed(0)
    _, data = switching_data(4, 12, seed=10)
    model = NeuralMJP(2, 1, rates=rates).double().eval()
    model.fit_standardisation(data)
    with torch.no_grad():
        model.rate_out[-1].weight.zero_()  # g(t) = f: h constant, or the free head's bias = log f
        if rates is PosteriorRates.FREE:
            log_f = model.prior_log_rates.reshape(-1) + torch.log(model.time_scale)  # in time units
            model.rate_out[-1].bias.copy_(model._raw_rate(log_f))
        model.q0_head[-1].weight.zero_()  # q0 = p0 (both uniform)
        model.q0_head[-1].bias.zero_()
    kl = model.kl(data)
    assert torch.allclose(kl, torch.zeros_like(kl), atol=1e-7)  # p0 was stored in float32
    with torch.no_grad():
        model.rate_out[-1].weight.normal_(0, 1.0)
    assert torch.all(model.kl(data) > 1e-4)


def test_elbo_is_below_the_exact_log_likelihood() -> None:
    torch.manual_seed(1)
    _, data = switching_data(6, 20, seed=11)
    model = NeuralMJP(2, 1).double().eval()
    model.fit_standardisation(data)
    with torch.no_grad():
        model.rate_out[-1].weight.normal_(0, 0.5)  # some posterior, not the prior
        elbo = model.elbo(data).numpy()
    assert np.all(elbo <= exact_log_likelihood(model, data) + 1e-6)


def test_log_likelihood_is_the_forward_algorithm_and_bounds_the_elbo() -> None:
    """The exact log p(x) of the prior jump process and the emission (scipy's expm, per series, in the
    test) against the model's batched forward algorithm, with padding; the ELBO lies below it."""
    torch.manual_seed(7)
    _, data = switching_data(5, 14, seed=21)
    model = NeuralMJP(2, 1).double().eval()
    model.initialise(data)
    with torch.no_grad():
        model.prior_log_rates.copy_(torch.log(torch.tensor([[0.7, 1.3]], dtype=torch.float64)))
        model.prior_log_initial.copy_(torch.log(torch.tensor([[0.3, 0.7]], dtype=torch.float64)))
        model.rate_out[-1].weight.normal_(0, 0.5)
        exact = model.log_likelihood(data).numpy()
        elbo = model.elbo(data).numpy()
    np.testing.assert_allclose(exact, exact_log_likelihood(model, data), rtol=1e-10)
    assert np.all(elbo <= exact + 1e-9)
    assert model.score(data) == pytest.approx(exact.sum() / int(data.mask.sum()))
    shorter = data[[0]]
    alone = model.log_likelihood(shorter)
    torch.testing.assert_close(alone, torch.as_tensor(exact[:1]))  # padding rows of the batch change nothing


def test_solver_and_quadrature_kl_agree_on_a_smooth_posterior() -> None:
    torch.manual_seed(2)
    _, data = switching_data(3, 10, seed=12)
    model = NeuralMJP(2, 1, kl_points=128, rtol=1e-7, atol=1e-9).double().eval()
    model.fit_standardisation(data)
    with torch.no_grad():
        model.rate_out[-1].weight.normal_(0, 0.3)
        solver = model.elbo_terms(data)["kl_path"]
        quadrature_model = NeuralMJP(2, 1, kl=KLIntegral.GAUSS_LEGENDRE, kl_points=128, rtol=1e-7, atol=1e-9).double()
        quadrature_model.load_state_dict(model.state_dict())  # the same model, the other integral
        quadrature = quadrature_model.eval().elbo_terms(data)["kl_path"]
    assert torch.allclose(solver, quadrature, rtol=1e-5)


@pytest.mark.parametrize("encoder", list(Encoder))
def test_posterior_is_a_distribution_of_shape_b_t_s(encoder: Encoder) -> None:
    torch.manual_seed(3)
    _, data = switching_data(3, 15, seed=13)
    model = NeuralMJP(2, 1, encoder=encoder).eval()
    model.fit_standardisation(data)
    first = float(data.time[:, 0].max())
    t = torch.linspace(first, 12.0, 40)  # past the last observation too
    with torch.no_grad():
        p = model.posterior(data, t)
        rows = model.posterior(data, data.time)
    assert p.shape == (3, 40, 2)
    assert torch.all(p >= 0) and torch.allclose(p.sum(-1), torch.ones(3, 40), atol=1e-5)
    assert torch.isfinite(rows).all()
    with pytest.raises(ValueError, match="before its first observation"):
        model.posterior(data, torch.tensor([0.0]))


def test_mean_field_and_categorical_variants_give_finite_elbos_and_gradients() -> None:
    torch.manual_seed(4)
    paths, _ = switching_data(4, 10, seed=14)
    codes = observe(paths, 10, generator=15)  # exact state codes
    assert torch.equal(codes.values[..., 0].long(), states_at(paths, codes.time))
    cat = NeuralMJP(2, 2, emission=Emission.CATEGORICAL, num_processes=2, encoder=Encoder.ODE_RNN)
    cat.fit_standardisation(codes)  # the old name of initialise
    elbo = cat.objective(codes)
    elbo.sum().backward()
    assert elbo.shape == (4,) and torch.isfinite(elbo).all()
    exact = cat.log_likelihood(codes)  # forward algorithm over the 4 joint states
    assert torch.isfinite(exact).all() and torch.all(cat.elbo(codes) <= exact + 1e-4)
    assert cat.posterior(codes, codes.time).shape == (4, 10, 2, 2)
    gauss = NeuralMJP(3, 2, num_processes=2, reconstruction=Reconstruction.EXPECTED)
    two_channel = observe(paths, 10, means=np.array([[0.0, 1.0], [1.0, 0.0]]), noise_std=0.2, generator=16)
    gauss.initialise(two_channel)
    assert torch.isfinite(gauss.elbo(two_channel)).all()
    assert torch.all(gauss.elbo(two_channel) <= gauss.log_likelihood(two_channel) + 1e-4)
    assert gauss.rates_.shape == (2, 3, 3)


def test_gumbel_relaxation_averages_to_the_exact_reconstruction_at_low_temperature() -> None:
    torch.manual_seed(5)
    _, data = switching_data(2, 8, seed=17)
    model = NeuralMJP(2, 1, reconstruction=Reconstruction.GUMBEL, temperature=(0.02, 0.02, 0.0)).double()
    model.fit_standardisation(data)
    with torch.no_grad():
        model.rate_out[-1].weight.normal_(0, 0.5)
        q = model.posterior(data, data.time)[:, :, None]  # [B, L, P=1, S]
        exact = model._reconstruction(q, data.values, data.mask, relaxed=False)
        reps = 4000
        relaxed = model._reconstruction(q.repeat(reps, 1, 1, 1), data.values.repeat(reps, 1, 1),
                                        data.mask.repeat(reps, 1), relaxed=True).view(reps, -1).mean(0)
    assert torch.allclose(relaxed, exact, rtol=0.03)


def test_training_calls_take_the_prior_m_step_and_anneal_the_temperature() -> None:
    torch.manual_seed(6)
    _, data = switching_data(8, 20, seed=18)
    model = NeuralMJP(2, 1, reconstruction=Reconstruction.GUMBEL, temperature=(1.0, 0.1, 0.5)).double()
    model.fit_standardisation(data)
    with torch.no_grad():
        model.rate_out[-1].weight.normal_(0, 0.5)
        model.eval()
        before = model.rates_.copy()
        model.objective(data)
        assert np.array_equal(model.rates_, before) and model.current_temperature == 1.0
        model.train()
        model.elbo(data)  # a query, in any mode: records nothing
        model.after_step()
        assert np.array_equal(model.rates_, before) and int(model.stat_updates) == 0
        model.steps.zero_()
        model.objective(data)  # the training objective records the batch's statistics ...
        assert np.array_equal(model.rates_, before) and model.current_temperature == 1.0
        model.after_step()  # ... and the step hook takes the M-step and anneals
    # One update from zero statistics is the M-step itself: f = expected jumps / expected holding time.
    jumps, holding = model.stat_jumps[0], model.stat_holding[0]
    assert np.allclose(model.rates_[0, 1], float(jumps[0] / holding[0]), rtol=1e-6)
    assert np.allclose(model.rates_[1, 0], float(jumps[1] / holding[1]), rtol=1e-6)
    assert not np.allclose(model.rates_, before)
    assert model.current_temperature == pytest.approx(math.exp(-0.5))


@pytest.mark.slow
@pytest.mark.parametrize("encoder", list(Encoder))
def test_neural_mjp_recovers_two_state_rates_from_noisy_irregular_observations(encoder: Encoder) -> None:
    """Switching at 0.5 (closed -> open) and 1.0 (open -> closed) on [0, 10], 50 observations per series
    at uniform random times, Gaussian noise 0.25 around levels 0 and 1; 64 series (about 420 jumps).
    The master-equation solve runs at rtol 1e-2 / atol 1e-4 (not the default 1e-3 / 1e-5): a quarter
    less CPU, and the estimates and the ELBO gap are unchanged within noise (checked on seeds 0 and 1)."""
    torch.manual_seed(0)
    paths, data = switching_data(64, 50, seed=0)
    model = NeuralMJP(2, 1, encoder=encoder, rtol=1e-2, atol=1e-4)
    assert model.fit(data, epochs=25, batch_size=16, lr=2e-2, seed=0, progress=False) is model
    assert int(model.stat_updates) == int(model.steps) == 25 * 4  # one M-step per optimizer step (after_step)
    order = np.argsort(model.emission_["mean"][0, :, 0])  # states are learned up to relabelling
    rates = model.rates_[np.ix_(order, order)]
    pi = model.stationary_distribution_[order]
    # Against the generating process (the sample itself is off by a few percent) ...
    assert rates[0, 1] == pytest.approx(0.5, rel=0.2)
    assert rates[1, 0] == pytest.approx(1.0, rel=0.2)
    assert np.allclose(pi, [2 / 3, 1 / 3], atol=0.05)
    # ... and against the MLE from the hidden paths themselves, the best any method could do.
    path_mle = MarkovJumpProcess(2).fit(paths).rates_
    assert np.allclose(rates[~np.eye(2, dtype=bool)], path_mle[~np.eye(2, dtype=bool)], rtol=0.12)
    assert np.allclose(model.emission_["mean"][0, order, 0], [0.0, 1.0], atol=0.05)
    model.eval()
    with torch.no_grad():
        exact = model.log_likelihood(data).numpy()
        gap = exact_log_likelihood(model, data) - model.elbo(data).numpy()
    np.testing.assert_allclose(exact, exact_log_likelihood(model, data), rtol=1e-5)
    assert np.all(gap > -1e-3) and gap.mean() < 0.5  # a valid and tight bound (nats per series)


@pytest.mark.parametrize("training", [True, False])
def test_queries_change_nothing_in_either_mode(training: bool) -> None:
    torch.manual_seed(8)
    _, data = switching_data(4, 10, seed=22)
    model = NeuralMJP(2, 1, reconstruction=Reconstruction.GUMBEL).double().initialise(data).train(training)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.elbo(data)
        model.elbo_terms(data)
        model.kl(data)
        model.log_likelihood(data)
        probs = model.predict(data)
    model.score(data)
    assert probs.shape == (4, 10, 2) and torch.allclose(probs.sum(-1), torch.ones(4, 10, dtype=probs.dtype))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert model._pending is None and model.training == training


def test_the_trainer_takes_one_m_step_per_optimizer_step() -> None:
    """The M-step lives in after_step: one epoch of 3 minibatches moves the prior 3 times, and the
    statistics it used are those of the training objective (an eval-mode pass records none)."""
    torch.manual_seed(9)
    _, data = switching_data(12, 10, seed=23)
    model = NeuralMJP(2, 1)
    before = model.initialise(data).rates_.copy()
    model.fit(data, epochs=1, batch_size=4, lr=1e-2, seed=0, progress=False)
    assert int(model.stat_updates) == 3 and int(model.steps) == 3
    assert not np.allclose(model.rates_, before)
    assert model._pending is None


def test_closed_form_fit_accepts_and_ignores_trainer_options() -> None:
    paths = gillespie(RATES3, 20, 10.0, generator=7)
    plain = MarkovJumpProcess(3).fit(paths).rates_
    with_options = MarkovJumpProcess(3).fit(paths, paths[:2], epochs=5, batch_size=3, lr=0.1, seed=1).rates_
    assert np.array_equal(plain, with_options)
    assert isinstance(MarkovJumpProcess(3), tpp.model.Model)


def test_old_module_paths_still_import() -> None:
    from sde.models.mjp import NeuralMJP as moved
    from sde.models.mjp import Reconstruction as moved_enum

    assert moved is NeuralMJP and moved_enum is Reconstruction
