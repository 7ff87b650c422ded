"""The second half of the notebooks (tests/test_notebooks.py runs the first): a file of its own so that the two
pytest-xdist workers of `make test` (whole files each) can run the halves at the same time."""

import pytest

from .conftest import needs_data
from .test_notebooks import FIRST_HALF, NOTEBOOKS, run_notebook

SECOND_HALF = NOTEBOOKS[len(FIRST_HALF):]


def test_the_halves_cover_every_notebook_once():
    assert sorted(FIRST_HALF + SECOND_HALF) == NOTEBOOKS and not set(FIRST_HALF) & set(SECOND_HALF)


@needs_data
@pytest.mark.parametrize("notebook", SECOND_HALF, ids=[p.stem for p in SECOND_HALF])
def test_notebook_runs_end_to_end(notebook, tmp_path):
    run_notebook(notebook, tmp_path)
