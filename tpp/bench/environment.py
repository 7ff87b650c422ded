"""What a benchmark run records about where it ran: versions, machine, threads, git commit, the command."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tpp.bench.config import LikelihoodConfig

__all__ = ["environment", "default_command"]


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parents[2]  # the checkout (tpp/bench/environment.py)
    try:
        # No optional locks: reading the status must never write the index of a tree others are working in.
        res = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20, check=False,
                             env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str = "cpu", config: LikelihoodConfig | None = None) -> dict[str, Any]:
    """Versions, machine, device, thread settings, git commit and (with ``config``) the seeds and integrator."""
    import numba
    import scipy

    import tpp

    status = _git("status", "--porcelain", "--untracked-files=no")
    env: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(), "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(), "device": device,
        "cuda": torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else None,
        "tpp": tpp.__version__, "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
        "pandas": pd.__version__, "numba": numba.__version__,
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "numba_threads": numba.get_num_threads(),
        "threads_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                      "NUMBA_NUM_THREADS")},
        "git_commit": _git("rev-parse", "HEAD"), "git_dirty": None if status is None else bool(status),
        "data_dir": os.environ.get("TPP_DATA_DIR"),
    }
    if config is not None:
        env["seeds"] = list(config.seeds)
        env["config"] = asdict(config)
        env["config_key"] = config.key()
        env["integrator"] = {"rule": "Gauss-Legendre", "nodes_per_interval": config.eval_points,
                             "closed_forms": "RMTPP, FullyNN, IntensityFree, Poisson, ExpHawkes, SumExpHawkes",
                             "survival_term": "to each window's end"}
    return env


def default_command() -> str:
    """The command line of this process, as a person would type it."""
    return shlex.join([Path(sys.argv[0]).name or "python", *sys.argv[1:]])

