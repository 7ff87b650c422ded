"""FractionalLatentSDE's fitted Hurst index on exact fractional paths (issue 18, part 1).

The issue's check: on exact fBM / fOU paths (Davies-Harte) the fitted ``hurst_`` of ``FractionalLatentSDE``
built with working defaults from the data's dimensions and trained by ``fit`` is within 0.05 of the truth
for H from 0.2 to 0.8. Before the Markov-likelihood start, the ELBO alone fitted H = 0.8 as 0.41 and 0.5 as
0.31 (benchmarks/fractional_hurst.py, ``elbo-only`` rows); the full sweep over H = 0.2 .. 0.8, fBM and fOU,
two seeds, is that benchmark's ``model`` rows.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from sde.fractional import (
    FBMType,
    MarkovFBM,
    _ma_fou_autocovariance,
    _MarkovSeries,
    _profile_gaussian,
    fit_markov_hurst,
    fou,
    optimal_weights,
    ou_rates,
    paths_to_series,
)
from sde.models import FractionalLatentSDE
from sde.simulate import fbm


@pytest.mark.parametrize("hurst", [0.3, 0.7])
def test_fitted_hurst_within_0_05_on_exact_fbm(hurst):
    torch.manual_seed(0)
    data = paths_to_series(fbm(16, 100, hurst, t_end=1.0, generator=3), 1.0)
    model = FractionalLatentSDE(1)
    model.fit(data, epochs=1, progress=False)
    assert abs(model.hurst_ - hurst) <= 0.05, (model.hurst_, model.hurst_fit_)
    # the ELBO refines H only inside the likelihood estimate's support interval
    fit = model.hurst_fit_
    assert fit is not None and fit.low <= model.hurst_ <= fit.high and fit.high - fit.low < 0.1


def test_markov_likelihood_handles_missing_and_irregular_values():
    """The Kalman likelihood reads any times and missing pattern: thinning an fOU sample to 70% of its rows at
    random keeps the estimate within 0.05 (the drift is fitted, not given)."""
    rng = np.random.default_rng(0)
    x = fou(16, 100, 0.3, theta=1.0, t_end=1.0, generator=4).numpy()
    x = (x - x.mean()) / x.std()
    t = np.linspace(0.0, 1.0, 101)
    series = []
    for row in x:
        keep = np.sort(rng.choice(101, size=70, replace=False))
        series.append((t[keep], row[keep], 0))
    fit = fit_markov_hurst(series)
    assert abs(fit.hurst - 0.3) <= 0.05, fit
    with pytest.raises(ValueError, match="strictly increasing"):
        fit_markov_hurst([(np.array([0.0, 0.0, 1.0]), np.zeros(3), 0)])


def test_kalman_likelihood_equals_the_dense_gaussian():
    """The Kalman filter of the MA-fOU state (closed-form transitions) gives the same profiled log-likelihood and
    scale as the dense stationary covariance of :func:`estimate_hurst` (no noise), on shared and on ragged rows."""
    x = fou(6, 40, 0.35, theta=1.0, t_end=1.0, generator=2).numpy()
    t = np.linspace(0.0, 1.0, 41)
    gamma = ou_rates(7, 60.0)
    ma = MarkovFBM(gamma, optimal_weights(gamma, 0.35, 1.0), 0.35)
    want = _profile_gaussian(x, scipy.linalg.toeplitz(_ma_fou_autocovariance(t, ma, 1.5)))
    shared = _MarkovSeries([(t, row, 0) for row in x])
    assert shared.shared
    ll, sigma = shared.profile(0.35, 1.5, 1e-7, gamma, 1.0, FBMType.TYPE_I, "stationary")
    assert ll == pytest.approx(want[0], abs=1e-6) and sigma[0] == pytest.approx(want[1], rel=1e-8)
    ragged = _MarkovSeries([(t, row, 0) for row in x] + [(t[:10], x[0, :10], 0)])
    assert not ragged.shared
    quad, logdet, count = 0.0, 0.0, 0
    for rows, times in ((x, t), (x[:1, :10], t[:10])):  # pooled dense Gaussian, sigma profiled over all values
        chol = np.linalg.cholesky(scipy.linalg.toeplitz(_ma_fou_autocovariance(times, ma, 1.5)))
        quad += float((scipy.linalg.solve_triangular(chol, rows.T, lower=True) ** 2).sum())
        logdet += rows.shape[0] * 2 * np.log(np.diag(chol)).sum()
        count += rows.size
    pooled = -0.5 * (count * np.log(2 * np.pi * quad / count) + logdet + count)
    assert ragged.profile(0.35, 1.5, 1e-7, gamma, 1.0, FBMType.TYPE_I, "stationary")[0] == pytest.approx(pooled, abs=1e-6)
