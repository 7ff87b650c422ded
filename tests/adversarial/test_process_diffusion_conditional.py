"""Conditional stochastic process diffusion (``ProcessDiffusion(missing="conditional")``, issue 19 item 2: the
paper's PhysioNet model, CSDI's conditional scheme with process noise): the loss lives on the target entries
given the conditioning ones, training hides a random share of the observed entries, imputation returns the
observed entries as they are and, after a short fit on Gaussian-process data, beats the training mean. The
PhysioNet 2012 run is benchmarks/process_diffusion_physionet.py (``--conditional gp``)."""

from __future__ import annotations

import pytest
import torch

from sde.models import ProcessDiffusion
from sde.models.process_diffusion import linear_fill
from sde.series import SeriesBatch

from .test_process_diffusion_missing import SMALL, _partly_observed  # the same seeded partly observed series


def _model(data: SeriesBatch, **options: object) -> ProcessDiffusion:
    torch.manual_seed(0)
    options = {**SMALL, **options}
    return ProcessDiffusion(data.num_channels, missing="conditional", noise="gp", noise_scale=0.2,
                            **options).double().initialise(data)


def _loss(model: ProcessDiffusion, batch: SeriesBatch, **kw: object) -> torch.Tensor:
    torch.manual_seed(7)  # the same targets, diffusion times and noise for every call
    return model.objective(batch, **kw)


def _with(data: SeriesBatch, where: torch.Tensor, fill: float) -> SeriesBatch:
    return SeriesBatch(data.time, torch.where(where, torch.full_like(data.values, fill), data.values), data.mask,
                       validate=False)


def test_the_loss_never_depends_on_an_entry_outside_the_targets_and_the_conditioning() -> None:
    data, observed = _partly_observed()
    model = _model(data)
    g = torch.Generator().manual_seed(1)
    target = ProcessDiffusion.random_targets(observed, generator=g)
    cond = observed & ~target
    assert bool(target.any()) and bool(cond.any())
    base = _loss(model, data, target=target)
    assert bool(torch.isfinite(base).all()) and bool((base <= 0).all())
    # an entry neither target nor conditioning (marked unobserved) may hold any value: the same loss, bit for bit,
    # with the targets given and with CSDI's random draw (which reads no value)
    neither = data.mask[..., None] & ~observed
    for fill in (0.0, 1e6, -3.5):
        filled = _with(data, neither, fill)
        assert torch.equal(_loss(model, filled, observed=observed, target=target), base)
        assert torch.equal(_loss(model, filled, observed=observed), _loss(model, data))
    # the loss is a sum over the targets only: no gradient reaches an entry that is neither
    values = torch.where(observed, data.values, torch.zeros_like(data.values)).requires_grad_(True)
    torch.manual_seed(7)
    loss = model.objective(SeriesBatch(data.time, values, data.mask, validate=False), observed=observed,
                           target=target).sum()
    (grad,) = torch.autograd.grad(loss, values)
    assert bool((grad[neither] == 0).all())
    assert bool((grad[target] != 0).any())
    # while the conditioning is an input: moving the conditioning values moves every series' loss
    moved = torch.where(cond, data.values + 5.0, data.values)
    changed = _loss(model, SeriesBatch(data.time, moved, data.mask), target=target)
    assert bool((changed != base).all())


def test_random_targets_are_a_share_of_the_observed_entries_and_read_no_value() -> None:
    _, observed = _partly_observed(n=64, length=12, channels=3)
    target = ProcessDiffusion.random_targets(observed, generator=torch.Generator().manual_seed(0))
    assert bool((target <= observed).all())
    count, n = target.flatten(1).sum(1), observed.flatten(1).sum(1)
    assert bool((count >= 1).all()) and bool((count <= n).all())
    share = count.double() / n.double()
    # CSDI's random strategy: a share r ~ U(0, 1) per series, so the shares spread over (0, 1]
    assert float(share.min()) < 0.2 and float(share.max()) > 0.8 and abs(float(share.mean()) - 0.5) < 0.12
    empty = torch.zeros(2, 4, 3, dtype=torch.bool)
    assert not bool(ProcessDiffusion.random_targets(empty).any())


def test_conditional_options_are_checked() -> None:
    data, observed = _partly_observed()
    model = _model(data)
    with pytest.raises(ValueError, match="not an observed entry"):
        model.objective(data, target=~observed & data.mask[..., None])
    with pytest.raises(ValueError, match="bool mask"):
        model.objective(data, target=observed.double())
    other = ProcessDiffusion(data.num_channels, missing="observed", **SMALL).double().initialise(data)
    with pytest.raises(ValueError, match="missing='conditional'"):
        other.objective(data, target=observed)
    # the other modes keep their parameters as they were (no conditional prior variance)
    assert other.prior_log_var is None and "prior_log_var" not in other.state_dict()


def test_impute_returns_the_conditioning_entries_unchanged_and_samples_only_the_queried_ones() -> None:
    data, observed = _partly_observed()
    padded = SeriesBatch(data.time, data.values, data.mask.clone(), validate=False)
    padded.mask[0, -2:] = False  # padding rows come back NaN
    model = _model(data)
    draws = model.impute(padded, num_samples=3, seed=0)
    rows = padded.mask[..., None].expand_as(observed)
    kept = observed & rows
    assert torch.equal(draws[:, kept], data.values[kept].expand(3, -1))
    missing = ~observed & rows
    assert bool(torch.isfinite(draws[:, missing]).all())
    assert bool(torch.isnan(draws[:, ~rows]).all())
    assert not torch.equal(draws[0, missing], draws[1, missing])  # samples, not one point
    # where: only the queried missing entries are sampled, the other missing ones come back NaN
    where = missing & (torch.arange(data.values.shape[1])[None, :, None] < 5)
    part = model.impute(padded, num_samples=2, seed=0, where=where)
    assert bool(torch.isfinite(part[:, where]).all()) and bool(torch.isnan(part[:, missing & ~where]).all())
    assert torch.equal(part[:, kept], data.values[kept].expand(2, -1))
    # the same seed, the same draws
    assert torch.equal(model.impute(padded, num_samples=3, seed=0).nan_to_num(7.0), draws.nan_to_num(7.0))


def test_linear_fill_interpolates_the_known_entries_only() -> None:
    t = torch.tensor([[0.0, 1.0, 2.0, 4.0, 5.0]], dtype=torch.float64)
    values = torch.tensor([[[9.0], [1.0], [9.0], [5.0], [9.0]]], dtype=torch.float64)
    known = torch.tensor([[[False], [True], [False], [True], [False]]])
    out = linear_fill(values, known, t)[0, :, 0]
    assert torch.allclose(out, torch.tensor([1.0, 1.0, 1.0 + 4.0 / 3.0, 5.0, 5.0], dtype=torch.float64))
    assert torch.equal(linear_fill(values, torch.zeros_like(known), t), torch.zeros_like(values))


def _gp_data(n: int, length: int, seed: int) -> SeriesBatch:
    """Seeded smooth GP paths (RBF, length 0.15 of the span) on irregular grids, two correlated channels."""
    g = torch.Generator().manual_seed(seed)
    time = torch.sort(torch.rand(n, length, dtype=torch.float64, generator=g), dim=1).values
    time[:, 0] = 0.0
    gap = time[:, :, None] - time[:, None, :]
    cov = torch.exp(-(gap / 0.15) ** 2) + 1e-4 * torch.eye(length, dtype=torch.float64)
    f = torch.linalg.cholesky(cov) @ torch.randn(n, length, 1, dtype=torch.float64, generator=g)
    values = torch.cat([f, -0.5 * f + 0.05 * torch.randn(n, length, 1, dtype=torch.float64, generator=g)], -1)
    return SeriesBatch(time, values, torch.ones(n, length, dtype=torch.bool))


@pytest.mark.parametrize("seed", [0, 1])
def test_a_short_fit_on_gp_data_imputes_better_than_the_training_mean(seed: int) -> None:
    train, test = _gp_data(48, 12, seed), _gp_data(8, 12, seed + 100)
    torch.manual_seed(seed)
    model = ProcessDiffusion(2, missing="conditional", noise="gp", noise_scale=0.15, jitter=0.01, hidden_size=16,
                             num_layers=1, num_heads=2, num_steps=10).double()
    model.fit(train, epochs=25, batch_size=16, lr=5e-3, seed=seed, progress=False)
    hide = torch.rand(test.values.shape, generator=torch.Generator().manual_seed(seed)) < 0.3
    hide[:, 0] = False
    inputs = SeriesBatch(test.time, torch.where(hide, torch.full_like(test.values, float("nan")), test.values),
                         test.mask)
    draws = model.impute(inputs, num_samples=16, seed=seed)
    truth = test.values[hide]
    mse_model = float(((draws.median(0).values[hide] - truth) ** 2).mean())
    mse_mean = float(((model.channel_mean.double().expand_as(test.values)[hide] - truth) ** 2).mean())
    print(f"seed {seed}: conditional {mse_model:.3f}, training mean {mse_mean:.3f}")
    assert mse_model < 0.7 * mse_mean, (mse_model, mse_mean)


@pytest.mark.parametrize("kind", ["sde", "ddpm"])
def test_sample_steps_bound_the_denoiser_calls_of_impute(kind: str) -> None:
    data, _ = _partly_observed()
    model = _model(data, kind=kind, num_steps=20, sample_steps=4)
    calls = []
    model.denoiser.register_forward_hook(lambda *args: calls.append(1))
    draws = model.impute(data, num_samples=2, seed=0)
    assert len(calls) == 4 and bool(torch.isfinite(draws[:, data.mask]).all())
    with pytest.raises(ValueError, match="sample_steps"):
        ProcessDiffusion(2, sample_steps=0)


def test_sample_and_log_likelihood_are_those_of_the_empty_conditioning() -> None:
    data, _ = _partly_observed(n=2, length=5)
    complete = SeriesBatch(data.time, data.values.nan_to_num(0.5), data.mask)
    model = _model(complete)
    assert bool(torch.isfinite(model.log_likelihood(complete, rtol=1e-2, atol=1e-2)).all())
    assert bool(torch.isfinite(model.sample(torch.linspace(0.0, 5.0, 4), num_samples=2, seed=0)).all())
