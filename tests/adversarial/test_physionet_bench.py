"""benchmarks/physionet.py: the grid PyPOTS gets holds exactly the values our models see, and scores exactly the
held-out values ours are scored on; the shared metric code gives the textbook values."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("physionet"), importlib.import_module("_pypots_peer")
    finally:
        sys.path.remove(str(BENCHMARKS))


def _stays(n: int = 8, seed: int = 0):
    """Irregular stays over [0, 48] h with several values of a channel in one hour, and one row at 48:00."""
    from sde.series import SeriesBatch

    rng = np.random.default_rng(seed)
    pieces = []
    for b in range(n):
        t = np.unique(np.concatenate([[0.0, 48.0], np.round(rng.uniform(0, 48, 25 + b) * 60) / 60]))
        v = rng.normal(50, 10, (t.size, 3))
        v[rng.random(v.shape) < 0.5] = np.nan
        v[-1] = [1.0, 2.0, 3.0]  # the 48:00 row is observed
        pieces.append((t, v))
    return SeriesBatch.from_arrays(pieces, [b % 2 for b in range(n)], dtype=torch.float64)


def test_grid_is_the_hourly_mean_with_48h_in_the_last_step(bench):
    physionet, _ = bench
    from sde.series import SeriesBatch

    t = np.array([0.0, 0.25, 0.75, 1.5, 47.9, 48.0])
    v = np.array([[1.0], [3.0], [np.nan], [7.0], [10.0], [20.0]])
    batch = SeriesBatch.from_arrays([(t, v)], dtype=torch.float64)
    grid = physionet.to_grid(batch.time, batch.values, batch.mask)
    assert grid.shape == (1, 48, 1)
    assert grid[0, 0, 0] == 2.0  # mean of 1 and 3 (the NaN is not a value)
    assert grid[0, 1, 0] == 7.0
    assert grid[0, 47, 0] == 15.0  # 47:54 and 48:00 share the last step
    assert np.isnan(grid[0, 2:47, 0]).all()


@pytest.mark.parametrize("task", ["interpolate", "forecast"])
def test_peer_scores_exactly_our_held_out_values_and_never_sees_them(bench, task):
    physionet, _ = bench
    stays = _stays()
    parts = {"train": stays, "val": stays, "test": stays}
    data = physionet.make_tasks(parts, task, seed=3, holdout=0.3, horizon=0.25)
    arrays = physionet.peer_arrays(task, data)
    test = data["test"]
    held = test.scored.numpy()
    b, r, c = np.nonzero(held)
    assert arrays["score_value"].size == test.num_scored == held.sum() > 0
    np.testing.assert_array_equal(arrays["score_value"], test.values.numpy()[b, r, c])
    np.testing.assert_array_equal(arrays["score_step"], np.minimum(np.floor(test.inputs.time.numpy()[b, r]), 47))
    # a held-out value moved by 1e6 changes nothing the peer reads
    moved = test.values.clone()
    moved[test.scored] += 1e6
    shown = torch.where(torch.isnan(test.inputs.values), torch.nan, moved)
    again = physionet.to_grid(test.inputs.time, shown, test.inputs.mask)
    np.testing.assert_array_equal(np.nan_to_num(again, nan=-1.0), np.nan_to_num(arrays["X_test"], nan=-1.0))
    assert np.nanmax(np.abs(arrays["X_test"])) < 1e5


def test_shared_metrics_match_textbook_values(bench):
    _, peer = bench
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.9])
    # pairs (pos, neg): 9; pos > neg in 7, one tie (0.35 < 0.4 twice -> 0), 0.8 and 0.9 beat all three
    assert peer.auroc(y, s) == pytest.approx((3 + 3 + 1) / 9)
    # ranked 0.9(+) 0.8(+) 0.4(-,-) 0.35(+) 0.1(-): precision at the recall steps 1, 1, 3/5
    assert peer.auprc(y, s) == pytest.approx((1 + 1 + 3 / 5) / 3)
    m = peer.value_metrics(np.zeros(1), np.zeros(1), std=np.ones(1), unit=np.full(1, 2.0))
    assert m["crps"] == pytest.approx(2 / math.sqrt(2 * math.pi) - 1 / math.sqrt(math.pi))
    assert m["coverage_90"] == 1.0 and m["mse"] == 0.0 and m["mae_std"] == 0.0
    samples = np.array([[-1.0], [1.0]])  # fair CRPS of two draws: E|X - y| - E|X - X'| / 2 = 1 - 2 / 2
    assert peer.value_metrics(np.zeros(1), np.zeros(1), samples=samples)["crps"] == pytest.approx(0.0)
