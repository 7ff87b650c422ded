"""Fixtures shared by the sde tests."""

from pathlib import Path

import pytest

from ..conftest import SHARED_DATA


@pytest.fixture(scope="module")
def small_ts(tmp_path_factory) -> Path:
    """The first 30 series of ItalyPowerDemand's training file (24 rows, 2 classes): a small real .ts file.

    Tests that take it carry the shared ``needs_data`` mark (the file lies under ``TPP_DATA_DIR``)."""
    source = Path(SHARED_DATA or "") / "uea_ItalyPowerDemand" / "ItalyPowerDemand_TRAIN.ts"
    text = source.read_text().splitlines()
    start = next(i for i, line in enumerate(text) if line.strip().lower().startswith("@data")) + 1
    path = tmp_path_factory.mktemp("ts") / "Italy_small_TRAIN.ts"
    path.write_text("\n".join(text[: start + 30]) + "\n")
    return path
