"""Control paths: torchcde's interpolations of each series, on a shared batch, and the drop protocol."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torchcde

from sde.paths import ControlPath, Interpolation, drop
from sde.series import SeriesBatch

KINDS = list(Interpolation)


def irregular(seed: int = 0, lengths=(7, 4, 9, 1, 2), channels: int = 2, missing: float = 0.3) -> SeriesBatch:
    """Series at distinct random times on a 0.25 lattice (different per series), values partly NaN."""
    rng = np.random.default_rng(seed)
    series = []
    for n in lengths:
        t = np.sort(rng.choice(np.arange(40) * 0.25, n, replace=False))
        v = rng.normal(size=(n, channels))
        v[rng.random((n, channels)) < missing] = np.nan
        series.append((t, v))
    return SeriesBatch.from_arrays(series, channel_names=[f"c{i}" for i in range(channels)])


def torchcde_path(t: np.ndarray, v: np.ndarray, kind: Interpolation):
    """torchcde's own interpolation of one unpadded series (channels time, values, counts), NaN left to torchcde."""
    x = torch.cat([torch.tensor(t)[:, None], torch.tensor(v),
                   torch.tensor((~np.isnan(v)).cumsum(0), dtype=torch.float64)], -1)[None]
    tt = torch.tensor(t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchcde warns about leading NaN for rectilinear
        if kind is Interpolation.HERMITE:
            return torchcde.CubicSpline(torchcde.hermite_cubic_coefficients_with_backward_differences(x, tt), tt)
        if kind is Interpolation.NATURAL_CUBIC:
            return torchcde.CubicSpline(torchcde.natural_cubic_coeffs(x, tt), tt)
        if kind is Interpolation.LINEAR:
            return torchcde.LinearInterpolation(torchcde.linear_interpolation_coeffs(x, tt), tt)
        return torchcde.LinearInterpolation(torchcde.linear_interpolation_coeffs(x, rectilinear=0))


@pytest.mark.parametrize("kind", KINDS)
def test_each_series_path_is_torchcde_path_of_that_series_alone(kind):
    b = irregular()
    path = ControlPath.from_series(b, kind)
    assert path.channels == 5 and path.channel_names == ("time", "c0", "c1", "count[c0]", "count[c1]")
    for i, (t, v) in enumerate(b.series()):
        if len(t) < 2:
            continue
        ref = torchcde_path(t, v, kind)
        if kind is Interpolation.RECTILINEAR:  # torchcde's parameter 2k is row k; ours is the row's time
            got, want = path.evaluate(torch.tensor(t))[i], ref.evaluate(torch.arange(len(t)) * 2.0)[0]
        else:
            fine = torch.linspace(t[0], t[-1], 61, dtype=torch.float64)
            got, want = path.evaluate(fine)[i], ref.evaluate(fine)[0]
            mids = torch.tensor((t[1:] + t[:-1]) / 2)
            assert torch.allclose(path.derivative(mids)[i], ref.derivative(mids)[0], atol=1e-12)
        assert torch.allclose(got, want, atol=1e-12), (kind, i)


@pytest.mark.parametrize("kind", KINDS)
def test_padded_series_path_equals_unpadded_path_on_its_interval(kind):
    b = irregular(seed=1)
    path = ControlPath.from_series(b, kind)
    for i, (t, v) in enumerate(b.series()):
        alone = ControlPath.from_series(SeriesBatch.from_arrays([(t, v), (t + 100.0, v)]), kind)
        padded = SeriesBatch.from_arrays([(np.r_[t, np.nan, np.nan], np.r_[v, np.full((2, 2), np.nan)]),
                                          (t + 100.0, v)])
        fine = torch.tensor(t) if kind is Interpolation.RECTILINEAR else \
            torch.linspace(t[0], t[-1], 41, dtype=torch.float64)
        own = alone.evaluate(fine)[0]
        assert torch.allclose(path.evaluate(fine)[i], own, atol=1e-12)
        assert torch.allclose(ControlPath.from_series(padded, kind).evaluate(fine)[0], own, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_path_passes_through_observations_and_counts_are_cumulative(kind):
    b = irregular(seed=2)
    path = ControlPath.from_series(b, kind)
    for i, (t, v) in enumerate(b.series()):
        at = path.evaluate(torch.tensor(t))[i]
        assert torch.allclose(at[:, 0], torch.tensor(t), atol=1e-12)  # time channel = time
        seen = ~np.isnan(v)
        assert torch.allclose(at[:, 1:3][torch.tensor(seen)], torch.tensor(v[seen]), atol=1e-12)
        counts = at[:, 3:].numpy()
        assert np.allclose(counts, seen.cumsum(0), atol=1e-12)  # exact at the rows, hence monotone there
        assert np.all(np.diff(counts, axis=0) >= -1e-12)


def test_linear_counts_are_monotone_everywhere_and_end_at_the_number_of_observations():
    b = irregular(seed=3)
    path = ControlPath.from_series(b, Interpolation.LINEAR)
    lo, hi = path.interval
    counts = path.evaluate(torch.linspace(float(lo), float(hi), 401, dtype=torch.float64))[..., 3:]
    assert torch.all(counts[:, 1:] >= counts[:, :-1] - 1e-12)
    assert torch.allclose(counts[:, -1], b.observed.sum(1).to(counts.dtype))


@pytest.mark.parametrize("kind", KINDS)
def test_path_is_constant_outside_each_series_interval(kind):
    b = irregular(seed=4)
    path = ControlPath.from_series(b, kind)
    assert torch.equal(path.grid, torch.unique(b.time[b.mask]))
    t0, t1 = path.interval
    assert float(t0) == float(path.grid[0]) and float(t1) == float(path.grid[-1])
    for i, (t, _) in enumerate(b.series()):
        before = torch.linspace(float(t0) - 1.0, t[0] - 1e-9, 5, dtype=torch.float64)
        after = torch.linspace(t[-1] + 1e-9, float(t1) + 1.0, 5, dtype=torch.float64)
        first, last = path.evaluate(torch.tensor(t[0]))[i], path.evaluate(torch.tensor(t[-1]))[i]
        assert torch.allclose(path.evaluate(before)[i], first.expand(5, -1), atol=1e-12)
        assert torch.allclose(path.evaluate(after)[i], last.expand(5, -1), atol=1e-12)
        assert torch.all(path.derivative(after)[i] == 0) and torch.all(path.derivative(before)[i] == 0)


def test_shapes_options_and_errors():
    b = irregular()
    path = ControlPath.from_series(b, time_channel=False, observation_counts=False)
    assert path.channels == 2 and path.evaluate(1.0).shape == (5, 2)
    assert path.evaluate(torch.tensor([0.5, 1.0, 2.0])).shape == (5, 3, 2)
    assert path.derivative(torch.tensor(1.0)).shape == (5, 2)
    with pytest.raises(ValueError, match="time channel"):
        ControlPath.from_series(b, Interpolation.RECTILINEAR, time_channel=False)
    with pytest.raises(ValueError, match="two distinct"):
        ControlPath.from_series(SeriesBatch.from_arrays([(np.array([1.0]), np.ones(1))] * 2))
    with pytest.raises(TypeError):
        ControlPath.from_series(b, "hermite")  # type: ignore[arg-type]


def test_a_channel_never_observed_is_zero_and_one_row_series_are_constant():
    b = SeriesBatch.from_arrays([(np.array([0.0, 1.0, 2.0]), np.array([[1.0, np.nan], [2.0, np.nan], [4.0, np.nan]])),
                                 (np.array([1.5]), np.array([[3.0, 5.0]]))])
    for kind in KINDS:
        path = ControlPath.from_series(b, kind)
        x = path.evaluate(torch.linspace(0, 2, 9, dtype=torch.float64))
        assert torch.all(x[0, :, 2] == 0)  # torchcde's zero path
        assert torch.allclose(x[1], torch.tensor([1.5, 3.0, 5.0, 1.0, 1.0], dtype=torch.float64).expand(9, -1))


def test_cdeint_on_the_batch_path_gives_each_series_own_terminal_state():
    b = irregular(seed=5, lengths=(6, 9, 3))
    path = ControlPath.from_series(b)
    g = torch.Generator().manual_seed(0)
    W = 0.3 * torch.randn(4, 4, path.channels, generator=g, dtype=torch.float64)
    c = torch.randn(4, path.channels, generator=g, dtype=torch.float64)

    def f(t, z):
        return torch.tanh(torch.einsum("hkc,bk->bhc", W, z) + c)

    z0 = torch.randn(3, 4, generator=g, dtype=torch.float64)
    opts = {"method": "dopri5", "rtol": 1e-9, "atol": 1e-9}
    # the pieces change at the knots: tell the adaptive solver (torchdiffeq's jump_t)
    z_batch = torchcde.cdeint(X=path.interpolation, z0=z0, func=f, t=path.interval,
                              options={"jump_t": path.grid}, **opts)[:, -1]
    for i, (t, _) in enumerate(b.series()):
        alone = ControlPath.from_series(b[i])
        z_i = torchcde.cdeint(X=alone.interpolation, z0=z0[i:i + 1], func=f, t=torch.tensor([t[0], t[-1]]),
                              options={"jump_t": alone.grid}, **opts)
        assert torch.allclose(z_batch[i], z_i[0, -1], atol=1e-6)
        assert not torch.allclose(z_batch[i], z0[i], atol=1e-2)  # the state did move


def full(lengths=(20, 20, 20), channels: int = 3) -> SeriesBatch:
    rng = np.random.default_rng(0)
    return SeriesBatch.from_arrays([(np.arange(n, dtype=float), rng.normal(size=(n, channels))) for n in lengths],
                                   labels=[0, 1, 0])


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.5, 0.7])
def test_drop_blanks_floor_of_rate_times_length_rows_per_series(rate):
    b = full(lengths=(20, 13, 7))
    d = drop(b, rate, seed=1)
    blank = torch.isnan(d.values).all(-1) & d.mask
    assert blank.sum(1).tolist() == [int(n * rate) for n in (20, 13, 7)]
    assert torch.equal(d.time, b.time) and torch.equal(d.mask, b.mask) and d.num_events == b.num_events
    kept = ~blank & d.mask
    assert torch.equal(d.values[kept], b.values[kept])  # nothing else changes


def test_drop_follows_the_reference_random_stream_and_is_reproducible():
    b = full()
    d = drop(b, 0.3, seed=56789)
    g = torch.Generator().manual_seed(56789)  # the reference: one generator, randperm per series in order
    for i in range(3):
        expected = torch.randperm(20, generator=g)[:int(20 * 0.3)].sort().values
        assert torch.equal(torch.nonzero(torch.isnan(d.values[i]).all(-1)).flatten(), expected)
    assert drop(b, 0.3, seed=56789) == d and drop(b, 0.3, seed=1) != d


def test_drop_per_channel_blanks_each_channel_independently():
    b = full()
    d = drop(b, 0.5, seed=3, per_channel=True)
    missing = torch.isnan(d.values) & d.mask[..., None]
    assert (missing.sum(1) == 10).all()
    g = torch.Generator().manual_seed(3)
    for i in range(3):
        for c in range(3):
            expected = torch.randperm(20, generator=g)[:10].sort().values
            assert torch.equal(torch.nonzero(missing[i, :, c]).flatten(), expected)
    assert not torch.equal(missing[0, :, 0], missing[0, :, 1])


def test_drop_remove_deletes_the_same_rows():
    b = full(lengths=(20, 10, 5))
    blanked, removed = drop(b, 0.4, seed=2), drop(b, 0.4, seed=2, remove=True)
    assert removed.lengths.tolist() == [12, 6, 3]
    keep = ~torch.isnan(blanked.values).all(-1) & b.mask
    assert torch.equal(removed.time[removed.mask], b.time[keep])
    assert torch.equal(removed.values[removed.mask], b.values[keep])
    assert torch.equal(removed.labels, b.labels)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        drop(b, 1.0, seed=0)
    with pytest.raises(ValueError, match="per_channel"):
        drop(b, 0.5, seed=0, per_channel=True, remove=True)


def test_hermite_path_of_dropped_rows_is_the_reference_construction():
    """Paper protocol end to end: blanked rows are interpolated over by torchcde's hermite on the full grid."""
    b = full(lengths=(20, 20, 20))
    d = drop(b, 0.5, seed=56789)
    path = ControlPath.from_series(d, observation_counts=True)
    t = torch.arange(20, dtype=torch.float64)
    x = torch.cat([t.expand(3, -1)[..., None], d.values, (~torch.isnan(d.values)).double().cumsum(1)], -1)
    ref = torchcde.CubicSpline(torchcde.hermite_cubic_coefficients_with_backward_differences(x, t), t)
    fine = torch.linspace(0, 19, 77, dtype=torch.float64)
    assert torch.allclose(path.evaluate(fine), ref.evaluate(fine), atol=1e-12)
