"""The faces people expect: ``import tpp`` / ``import sde`` then a submodule or the solver face by attribute.

Each check runs in a fresh interpreter: in this test process the submodules are already imported (and
JAX may be), so an in-process check would pass whether or not the lazy loading works.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_fresh(code: str) -> str:
    """Run ``code`` in a new interpreter from the repository root; fail with its stderr if it fails."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"fresh interpreter failed:\n{code}\n--- stderr ---\n{result.stderr}"
    return result.stdout


def public_submodules(package: str) -> list[str]:
    """The public modules and packages in a package's folder, read from the disk (not from the package)."""
    folder = ROOT / package
    names = [p.stem for p in folder.glob("*.py")] + [p.name for p in folder.iterdir() if (p / "__init__.py").exists()]
    return sorted(n for n in names if not n.startswith("_"))


def test_import_sde_never_imports_jax():
    run_fresh("import sde, sys; assert 'jax' not in sys.modules")


def test_tpp_submodules_load_on_first_attribute_access():
    names = public_submodules("tpp")
    for expected in ("hawkes", "neural", "datasets", "metrics", "plot", "io", "train", "process", "compensator",
                     "sampling", "stream", "bench", "report", "table", "model"):
        assert expected in names
    run_fresh(f"""
        import importlib, sys
        import tpp
        assert 'tpp.hawkes' not in sys.modules and 'tpp.neural' not in sys.modules, "import tpp must stay cheap"
        before = set(sys.modules)
        listed = set(dir(tpp))
        assert set(sys.modules) == before, "dir(tpp) must not import anything"
        assert tpp.hawkes.ExpHawkes.__name__ == 'ExpHawkes'
        assert tpp.neural.NHP.__name__ == 'NHP'
        assert tpp.datasets is sys.modules['tpp.datasets']
        for name in {names!r}:
            assert name in listed, f"dir(tpp) lacks {{name}}"
            assert getattr(tpp, name) is importlib.import_module('tpp.' + name), name
        assert not hasattr(tpp, 'no_such_name')
        try:
            tpp.no_such_name
        except AttributeError as error:
            assert "'tpp'" in str(error) and 'no_such_name' in str(error), error
    """)


def test_sde_models_solve_and_submodules_load_on_first_attribute_access_without_jax():
    names = [n for n in public_submodules("sde") if n != "jax"]  # JAX is checked on its own below
    for expected in ("models", "solvers", "brownian", "paths", "series", "datasets"):
        assert expected in names
    run_fresh(f"""
        import importlib, sys
        import sde
        before = set(sys.modules)
        listed = set(dir(sde))
        assert set(sys.modules) == before, "dir(sde) must not import anything"
        assert {{'models', 'solve', 'paths', 'jax'}} <= listed, listed
        assert sde.models.LSDE.__name__ == 'LSDE'
        assert isinstance(sde.models.NeuralCoxSDE, type)
        assert sde.models.NeuralCox is sde.models.NeuralCoxSDE, "NeuralCox stays as an alias"
        import sde.solvers
        assert sde.solve is sde.solvers.solve and callable(sde.solve)
        assert sde.Method is sde.solvers.Method and sde.Backprop is sde.solvers.Backprop
        for name in {names!r}:
            assert getattr(sde, name) is importlib.import_module('sde.' + name), name
        assert not hasattr(sde, 'no_such_name')
        try:
            sde.no_such_name
        except AttributeError as error:
            assert "'sde'" in str(error) and 'no_such_name' in str(error), error
        assert 'jax' not in sys.modules, "the torch faces must not import JAX"
    """)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is the optional [jax] extra")
def test_sde_jax_loads_only_on_access():
    run_fresh("""
        import sys
        import sde
        assert 'jax' not in sys.modules
        assert sde.jax.solve is sys.modules['sde.jax'].solve
        assert 'jax' in sys.modules
    """)
