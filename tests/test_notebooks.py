"""The notebooks in notebooks/ run end to end (nbmake, one fresh kernel each) in their small setting.

Each notebook's first code cell reads ``TPP_NOTEBOOK_QUICK``; here it is 1, so each runs in well under
three minutes. ``TPP_NOTEBOOK_OUT`` sends anything a notebook writes to a temporary folder. The same
run by hand: ``TPP_NOTEBOOK_QUICK=1 .venv/bin/python -m pytest --nbmake notebooks/``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import needs_data

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
TIMEOUT_S = 300  # per cell; the whole notebook is meant to take under 3 minutes on 2 cores


def test_notebooks_are_stored_without_outputs():
    """Outputs are made by CI, not committed: diffs stay small and no stale picture survives a change."""
    assert NOTEBOOKS, "no notebooks found"
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert all(not c["outputs"] and c["execution_count"] is None for c in code), path.name
        assert "parameters" in code[0]["metadata"].get("tags", []), f"{path.name}: first code cell holds the parameters"


@needs_data
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_end_to_end(notebook, tmp_path):
    env = {**os.environ, "TPP_NOTEBOOK_QUICK": "1", "TPP_NOTEBOOK_OUT": str(tmp_path / "out"), "MPLBACKEND": "Agg",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbmake", f"--nbmake-timeout={TIMEOUT_S}", "-p", "no:cacheprovider", "-q",
         "--rootdir", str(tmp_path), str(notebook)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=3 * TIMEOUT_S, check=False,
    )
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
