"""Shared test settings: float64, one thread, a fixed seed per test."""

import os

import numpy as np
import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")

SHARED_DATA = os.environ.get("TPP_DATA_DIR")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


needs_data = pytest.mark.skipif(
    not SHARED_DATA or not os.path.isdir(SHARED_DATA), reason="real data sets need TPP_DATA_DIR (make test sets it)"
)
