"""Stochastic process diffusion on partly observed series (``ProcessDiffusion(missing="observed")``, issue 19):
the loss lives on the observed entries only, each channel's noise is its process at that channel's own
observation times, imputation by replacement keeps the observed entries, and ``sde fit --model
process-diffusion`` scores an interpolation. The PhysioNet 2012 run is benchmarks/process_diffusion_physionet.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sde.models import ProcessDiffusion
from sde.models.process_diffusion import noise_covariance
from sde.series import SeriesBatch, SeriesDataError

SMALL = dict(hidden_size=8, num_layers=1, num_heads=2, num_steps=5)


def _partly_observed(n: int = 4, length: int = 9, channels: int = 2, seed: int = 0) -> tuple[SeriesBatch, torch.Tensor]:
    """Seeded irregular series with about a third of the entries missing (NaN); and the observed mask."""
    g = torch.Generator().manual_seed(seed)
    time = torch.sort(torch.rand(n, length, dtype=torch.float64, generator=g) * 10, dim=1).values
    time[:, 0] = 0.0
    values = torch.sin(time)[..., None] + 0.3 * torch.randn(n, length, channels, dtype=torch.float64, generator=g)
    missing = torch.rand(n, length, channels, generator=g) < 0.35
    missing[:, 0] = False  # the first row anchors each series' clock
    values = torch.where(missing, torch.full_like(values, float("nan")), values)
    return SeriesBatch(time, values, torch.ones(n, length, dtype=torch.bool)), ~missing


def _model(data: SeriesBatch, **options: object) -> ProcessDiffusion:
    torch.manual_seed(0)
    return ProcessDiffusion(data.num_channels, missing="observed", noise="ou", noise_scale=0.2, **SMALL,
                            **options).double().initialise(data)


def _loss(model: ProcessDiffusion, batch: SeriesBatch, **kw: object) -> torch.Tensor:
    torch.manual_seed(7)  # the same diffusion times and noise for every call
    return model.objective(batch, **kw)


def test_changing_an_unobserved_value_never_changes_the_loss() -> None:
    data, observed = _partly_observed()
    model = _model(data)
    base = _loss(model, data)
    assert bool(torch.isfinite(base).all()) and bool((base < 0).all())
    # the same entries marked unobserved but holding any values (huge ones included): the same loss, bit for bit
    for fill in (0.0, 1e6, -3.5):
        filled = SeriesBatch(data.time, torch.where(observed, data.values, torch.full_like(data.values, fill)),
                             data.mask)
        assert torch.equal(_loss(model, filled, observed=observed), base)
    # and no gradient reaches them: the loss as a function of the values is flat off the observed entries
    values = torch.where(observed, data.values, torch.zeros_like(data.values)).requires_grad_(True)
    torch.manual_seed(7)
    loss = model.objective(SeriesBatch(data.time, values, data.mask, validate=False), observed=observed).sum()
    (grad,) = torch.autograd.grad(loss, values)
    assert float(grad[~observed].abs().max()) == 0.0 and float(grad[observed].abs().max()) > 0
    # an observed value does change it (the check above is not vacuous)
    moved = data.values.clone()
    b, row, c = (int(v) for v in torch.nonzero(observed)[5])
    moved[b, row, c] += 1.0
    assert not torch.equal(_loss(model, SeriesBatch(data.time, moved, data.mask))[b], base[b])


def test_each_channel_noise_is_its_process_at_its_own_observation_times() -> None:
    data, observed = _partly_observed(n=2, length=7)
    model = _model(data)
    t = (data.time - data.time[:, :1]) / model.time_scale
    factors = model.entry_factor(t, observed)  # [B, C, L, L]
    for b in range(2):
        for c in range(2):
            rows = observed[b, :, c]
            sigma = factors[b, c] @ factors[b, c].T
            sub = noise_covariance(t[b:b + 1, rows], torch.ones(1, int(rows.sum()), dtype=torch.bool), "ou", 0.2,
                                   model.jitter)[0]
            assert torch.allclose(sigma[rows][:, rows], sub, atol=1e-12)
            # an unobserved entry is its own unit-variance coordinate, independent of the observed ones
            assert torch.allclose(sigma[~rows][:, ~rows], torch.eye(int((~rows).sum()), dtype=torch.float64))
            assert float(sigma[rows][:, ~rows].abs().sum()) == 0.0
    assert int((~observed).sum()) >= 3  # some channels do miss entries


def test_imputation_leaves_observed_entries_unchanged() -> None:
    data, observed = _partly_observed()
    model = _model(data)
    model.fit(data, epochs=1, batch_size=4, progress=False)
    draws = model.impute(data, num_samples=3, seed=0)
    assert draws.shape == (3, *data.values.shape) and bool(torch.isfinite(draws).all())
    assert torch.equal(draws[:, observed], data.values[observed].expand(3, -1))
    assert float(draws[:, ~observed].std(0).min()) > 0  # the missing entries are sampled
    # only some missing entries asked for: those sampled, the others left NaN, the observed ones kept
    where = ~observed & (torch.arange(data.values.shape[1])[None, :, None] % 2 == 0)
    some = model.impute(data, num_samples=2, seed=0, where=where)
    assert bool(torch.isfinite(some[:, where]).all()) and bool(torch.isnan(some[:, ~observed & ~where]).all())
    assert torch.equal(some[:, observed], data.values[observed].expand(2, -1))
    # chunked (one series per pass) gives the same observed entries and finite draws
    chunked = model.impute(data, num_samples=2, seed=0, where=where, max_elements=1)
    assert torch.equal(chunked[:, observed], some[:, observed]) and bool(torch.isfinite(chunked[:, where]).all())
    # the picture: observed dots, sample paths, their mean, held-out crosses
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from sde.models.process_diffusion import plot_imputation

    complete = SeriesBatch(data.time, torch.nan_to_num(data.values), data.mask)
    fig = plot_imputation(model, complete, series=1, channel=0, num_samples=3, held_out=where)
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) == 3 + 3
    plt.close(fig)
    pred = model.predict(data, num_samples=3)
    assert float(pred.std[observed].abs().max()) == 0.0
    assert torch.allclose(pred.mean[observed], data.values[observed], rtol=0, atol=1e-12)


def test_missing_values_are_refused_by_default_and_named_when_unusable() -> None:
    data, observed = _partly_observed()
    with pytest.raises(SeriesDataError, match="missing='observed'") as info:
        ProcessDiffusion(2, **SMALL).objective(data)
    b, row, _ = (int(v) for v in torch.nonzero(~observed)[0])
    assert (info.value.series, info.value.row, info.value.field) == (b, row, "values")
    model = _model(data)
    bad = observed.clone()
    bad[b, row, :] = True  # an entry marked observed that holds no value
    with pytest.raises(SeriesDataError, match="marked observed") as info:
        model.objective(data, observed=bad)
    assert (info.value.series, info.value.row) == (b, row)
    with pytest.raises(ValueError, match="missing='observed'"):
        ProcessDiffusion(2, **SMALL).impute(data, where=~observed)
    with pytest.raises(ValueError, match="missing="):
        ProcessDiffusion(2, missing="drop")
    with pytest.raises(SeriesDataError, match="fully observed"):  # the exact likelihood is of whole series
        model.log_likelihood(data)
    with pytest.raises(ValueError, match="holds an observed value"):
        model.interpolate(data, data.time + 1.0, num_samples=2)


def test_sde_fit_process_diffusion_interpolates_partly_observed_series(tmp_path: Path) -> None:
    from sde.cli import app

    data, _ = _partly_observed(n=10, length=10, seed=3)
    lines = ["@problemName pdmissing", "@timeStamps false", "@missing true", "@univariate false", "@dimensions 2",
             "@equalLength true", "@seriesLength 10", "@classLabel false", "@data"]
    for b in range(len(data)):
        lines.append(":".join(",".join("?" if math.isnan(v) else f"{v:.6f}" for v in data.values[b, :, c].tolist())
                              for c in range(2)))
    path = tmp_path / "pd_TRAIN.ts"
    path.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(app, ["fit", "--model", "process-diffusion", "--data", str(path), "--task",
                                      "interpolate", "--epochs", "1", "--hidden-size", "8", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    for key in ("test_mse", "test_mae", "test_crps", "test_log_likelihood", "coverage_50", "coverage_90",
                "train_seconds"):
        assert math.isfinite(out[key]), (key, out[key])
    assert out["model"] == "process-diffusion" and out["n_test_values"] > 0
    refused = CliRunner().invoke(app, ["fit", "--model", "process-diffusion", "--data", str(path), "--task",
                                       "classify", "--epochs", "1", "--json"])
    assert refused.exit_code == 2 and "interpolate" in refused.output
