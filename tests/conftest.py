"""Shared test settings: float64, one thread, a fixed seed per test."""

import os
import subprocess

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


@pytest.fixture
def offline_registry(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A private data cache and a downloader that fails: a registry test may reach neither the network nor
    ~/.cache (the event and the series registry share one download function, tpp.registry.download_url)."""
    from tpp import registry

    monkeypatch.setenv("TPP_CACHE_DIR", str(tmp_path / "cache"))

    def no_network(url: str, dest, timeout: float = 0) -> None:
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(registry, "download_url", no_network)


def tpp_in_process(*args: str) -> subprocess.CompletedProcess:
    """``tpp ARGS`` run in this process (typer's CliRunner) with a subprocess-like result: a real subprocess's
    torch import costs seconds per run. Tests whose claim is the entry point itself (one stderr line, no
    traceback, as a user sees it) keep a real subprocess."""
    from typer.testing import CliRunner

    from tpp.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception  # no traceback
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)
