"""What every benchmark script shares: one thread per pool, the environment record, atomic JSON,
and the command that reproduces a run. Import it first: the thread variables are read once, when
numpy, torch and numba are first imported."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}
os.environ.update(SINGLE_THREAD_ENV)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout, without installing tpp
    sys.path.insert(0, str(REPO))


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return platform.processor() or ""
    return platform.processor() or ""


def base_environment() -> dict[str, Any]:
    """Python, platform, CPU, thread settings and the versions of our numeric stack."""
    import numba
    import numpy as np
    import scipy
    import torch

    return {
        "python": platform.python_version(), "platform": platform.platform(), "cpu": cpu_name(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__, "numba": numba.__version__, "scipy": scipy.__version__,
        "threads_env": SINGLE_THREAD_ENV,
    }


def write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    """Temp file + rename (tpp.io.atomic_write): a reader never sees half a result file."""
    from tpp.io import atomic_write

    with atomic_write(path, ".json") as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=float) + "\n")


def reproduce_command(script: str | Path) -> str:
    """``cd REPO && <python> <script> <args>`` as it was run."""
    exe = Path(sys.executable)
    try:
        exe_text = str(exe.relative_to(REPO))
    except ValueError:
        exe_text = str(exe)
    relative = Path(script).resolve().relative_to(REPO)
    return f"cd {shlex.quote(str(REPO))} && " + shlex.join([exe_text, str(relative), *sys.argv[1:]])
