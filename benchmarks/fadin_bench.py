"""FaDIn and nonparametric Hawkes: ``tpp`` beside the reference FaDIn code and tick, on the same events.

What it measures
----------------
Every data set is one long sequence simulated with OUR exact sampler,
``FaDInHawkes.from_params(baseline, adjacency, kernel=..., support=W, kernel_params=...)
.sample(1, t_end, generator=seed)``, with ``W = 3`` and kernels that are densities on ``[0, W]``
(``phi_ij = A[i, j] * kernel_ij``; the reference uses the same normalisation), for

* settings ``k2`` (baseline [.5, .3], adjacency [[.3, .1], [.2, .4]]) and ``k10`` (a sparse
  adjacency with spectral radius 0.6 and some row sums above 1, the one of ``hawkes_vs_tick.py``);
* kernels ``exp`` (truncated exponential, decay 2 everywhere) and ``gauss`` (truncated Gaussian,
  ``m`` and ``sigma`` per pair);
* about 1e5 and 1e6 events (``t_end`` is a whole number: the reference needs one).

Three comparisons, each on the same events:

1. ``fadin``: ours ``tpp.hawkes.FaDInHawkes(K, kernel, support=3, delta=D, objective="l2")`` against
   the reference implementation (github.com/mind-inria/FaDIn, ``fadin.solver.FaDIn(K, kernel,
   kernel_length=3, delta=D)`` with its defaults: random start with torch seed 0, RMSprop lr 1e-3,
   2000 iterations, Toeplitz approximation of ``ztzG``, early stop when no parameter moved by more
   than 1e-4 in one step, tested every 100 steps), for ``D`` in {0.05, 0.01}. Wall time is split into
   precomputation (theirs: ``compute_constants_fadin``, wrapped; ours: ``fit_result_["precompute_seconds"]``),
   iterations, and the rest (theirs: projecting the events on the grid and the random start).
   Errors against the truth: baseline (relative 2-norm), adjacency (relative Frobenius), kernel
   parameters (relative Frobenius weighted by the true ``A[i, j]``: a pair with ``A = 0`` has no
   kernel to find, and one with ``A = 0.01`` hardly any), and our exact continuous-time
   log-likelihood of each solution minus the truth's.
   The reference turns to NaN at K=10 from its default start; by default its worker stops that fit at
   the first NaN iterate (``--no-reference-stop-at-nan`` runs it to the end) and reports the step, the
   time to that point and the projected time of the full 2000 iterations.
2. ``em``: ours ``tpp.hawkes.NonparametricHawkes(K, support=3, bins=B).fit(max_iter, tol)`` against
   tick 0.8.0.2 ``HawkesEM(kernel_support=3, kernel_size=B, tol, max_iter)`` (piecewise-constant
   kernels, the Lewis-Mohler EM), both from the same start (ours: half of each rate as baseline, a
   flat kernel with branching ratio 0.5; given to tick as ``baseline_start`` / ``kernel_start``).
   Seconds per EM iteration, and total time to the same solution: the two libraries stop by different
   rules (tick: relative change of the parameters <= ``--em-tol``, its default 1e-5, tested every
   iteration here; ours: change of the log-likelihood per event <= ``--em-our-tol``), so tick runs to
   its own rule and ours runs on (tol 1e-8) past tick's final log-likelihood; ours' total is the time
   it took to reach that log-likelihood (set-up + iterations x its measured seconds per iteration,
   from the same run). Both solutions are scored with our exact log-likelihood and with tick's.
3. ``exact``: on the truncated-exponential data, our exact MLE ``tpp.hawkes.ExpHawkes(K, decay=2)``
   and ``ExpHawkes(K, decay=None)`` (shared decay learned) beside the FaDIn fits of 1.: what the grid
   costs in accuracy and what it saves in time. The data's kernel is cut at ``W = 3`` (it leaves out
   ``exp(-6) = 0.25%`` of an exponential's mass), a small misfit for ExpHawkes.

Goals (printed as PASS/FAIL): at K=2, 1e6 events, Delta 0.01, ours <= 0.1x the reference's wall time
with errors no worse than 1.1x the reference's; ours converges in every K=10 case; ours <= 0.5x tick's
seconds per EM iteration and total EM time (to tick's final log-likelihood).

How it runs
-----------
Peers are never installed into the project's environment. The reference runs from a local clone
(``--fadin-src PATH``; without it that column is skipped) in ``<scratch>/fadin-venv``
(``torch==2.13.0 numpy scipy numba matplotlib``, then ``pip install --no-deps -e PATH``); tick in
``<scratch>/tick-venv`` (``tick==0.8.0.2 numpydoc six``; shared with ``hawkes_vs_tick.py``). Default
scratch: ``~/.cache/tpp-sde/bench``. Each peer is a subprocess running a small worker script written
to ``<scratch>/work``; events go through ``.npz`` files and results come back as JSON. Every process
runs on one thread (OMP/MKL/OPENBLAS/NUMBA threads = 1, ``torch.set_num_threads(1)``). One-off costs
(numba compilation, first calls) are paid by a small warm-up fit on each side and not counted.

Usage::

    .venv/bin/python benchmarks/fadin_bench.py --quick --fadin-src ~/src/FaDIn   # 1e5 events, Delta 0.05
    .venv/bin/python benchmarks/fadin_bench.py --fadin-src ~/src/FaDIn           # the whole grid (~30 min)
    .venv/bin/python benchmarks/fadin_bench.py --settings k2 --sizes 1e6 --deltas 0.01 --parts fadin

Results: tables on stdout and ``--out`` (default ``benchmarks/results/fadin_bench.json``).
"""

# The thread variables below must be set before numpy / torch / numba are imported.
from __future__ import annotations

import os

from _bench import SINGLE_THREAD_ENV, base_environment, reproduce_command, write_json_atomically  # sets the threads

import json
import math
import platform
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import torch
import typer

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout, without installing tpp
    sys.path.insert(0, str(REPO))

from tpp.events import EventBatch
from tpp.hawkes import ExpHawkes, FaDInHawkes, NonparametricHawkes

torch.set_num_threads(1)

DEFAULT_SCRATCH = Path("~/.cache/tpp-sde/bench").expanduser()
DEFAULT_OUT = REPO / "benchmarks" / "results" / "fadin_bench.json"
TICK_REQUIREMENTS = ("tick==0.8.0.2", "numpydoc", "six")  # same venv and stamp as hawkes_vs_tick.py
FADIN_REQUIREMENTS = ("torch==2.13.0", "numpy", "scipy", "numba", "matplotlib")  # fadin/init.py imports matplotlib
SUPPORT = 3.0  # W
SIM_SEED = 1
WARMUP_EVENTS = 2_000
REFERENCE_SEED_NOTE = "torch seed 0 (its random_state=None)"

# kernel short name -> (ours, reference's name, parameter names)
KERNELS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "exp": ("truncated-exponential", "truncated_exponential", ("decay",)),
    "gauss": ("truncated-gaussian", "truncated_gaussian", ("m", "sigma")),
}

GOAL_TIME_RATIO = 0.1  # ours / reference, K=2, 1e6 events, Delta 0.01
GOAL_ERROR_RATIO = 1.1  # ours' errors <= 1.1x the reference's there ("equal or better")
GOAL_EM_RATIO = 0.5  # ours / tick, per EM iteration and in total
GOAL_SIZE, GOAL_DELTA = 1_000_000, 0.01


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Setting:
    """A true FaDIn Hawkes process: ``lambda_i = mu_i + sum_j A_ij kernel_ij * dN_j`` (kernels: densities on [0, W])."""

    name: str
    baseline: np.ndarray  # [K]
    adjacency: np.ndarray  # [K, K], row = excited type, column = exciting type
    kernel_params: dict[str, dict[str, np.ndarray]]  # kernel short name -> {param: [K, K]}

    @property
    def num_marks(self) -> int:
        return int(self.baseline.size)

    @property
    def stationary_rate(self) -> np.ndarray:
        return np.linalg.solve(np.eye(self.num_marks) - self.adjacency, self.baseline)

    @property
    def spectral_radius(self) -> float:
        return float(np.abs(np.linalg.eigvals(self.adjacency)).max())

    def t_end_for(self, num_events: int) -> int:
        """A whole-number window (the reference's grid needs ``int(1 / delta) * end_time``) with ~``num_events``."""
        return math.ceil(num_events / self.stationary_rate.sum())

    def true_model(self, kernel: str) -> FaDInHawkes:
        return FaDInHawkes.from_params(
            self.baseline, self.adjacency, kernel=KERNELS[kernel][0], support=SUPPORT,
            kernel_params=self.kernel_params[kernel],
        )


def setting_k2() -> Setting:
    return Setting(
        name="k2",
        baseline=np.array([0.5, 0.3]),
        adjacency=np.array([[0.3, 0.1], [0.2, 0.4]]),
        kernel_params={
            "exp": {"decay": np.full((2, 2), 2.0)},
            "gauss": {"m": np.array([[0.5, 1.0], [1.5, 0.8]]), "sigma": np.array([[0.3, 0.4], [0.5, 0.3]])},
        },
    )


def setting_k10(seed: int = 0, density: float = 0.25, radius: float = 0.6) -> Setting:
    """The sparse 10-type setting of ``hawkes_vs_tick.py`` (same seed, same draw), with kernel parameters."""
    rng = np.random.default_rng(seed)
    k = 10
    while True:  # deterministic: the first draw of this seed that has >= 2 row sums above 1
        support = rng.random((k, k)) < density
        np.fill_diagonal(support, True)
        weights = rng.uniform(0.2, 1.0, (k, k)) * rng.lognormal(0.0, 0.8, (k, 1))
        adjacency = np.where(support, weights, 0.0)
        adjacency *= radius / np.abs(np.linalg.eigvals(adjacency)).max()
        if (adjacency.sum(1) > 1.0).sum() >= 2:
            break
    baseline = rng.uniform(0.1, 0.5, k)
    krng = np.random.default_rng(seed + 100)  # kernel parameters from their own stream
    m = krng.uniform(0.4, 2.0, (k, k))
    sigma = krng.uniform(0.2, 0.5, (k, k))
    return Setting(
        name="k10",
        baseline=baseline,
        adjacency=adjacency,
        kernel_params={"exp": {"decay": np.full((k, k), 2.0)}, "gauss": {"m": m, "sigma": sigma}},
    )


SETTINGS: dict[str, Callable[[], Setting]] = {"k2": setting_k2, "k10": setting_k10}


# --------------------------------------------------------------------------- results
@dataclass
class Fit:
    """One fit of one library on one data set; arrays are plain lists for JSON."""

    part: str  # "fadin" | "em" | "exact"
    library: str  # "tpp" | "reference" | "tick"
    method: str  # e.g. "FaDIn l2, delta 0.01"
    delta: float | None = None
    seconds: float | None = None  # wall time of the whole fit (for an aborted reference fit: to the abort)
    precompute_seconds: float | None = None
    iterate_seconds: float | None = None
    other_seconds: float | None = None
    iterations: int | None = None
    seconds_per_iteration: float | None = None
    projected_seconds: float | None = None  # reference stopped at NaN: what the full max_iter would take
    converged: bool | None = None
    status: str = ""
    error: str | None = None
    runs: list[float] = field(default_factory=list)
    baseline: list[float] | None = None
    adjacency: list[list[float]] | None = None
    kernel_params: dict[str, list[list[float]]] | None = None
    kernel_values: list | None = None  # EM: [K, K, B]
    extra: dict[str, Any] = field(default_factory=dict)
    # filled by evaluate():
    baseline_rel_error: float | None = None
    adjacency_rel_error: float | None = None
    kernel_rel_error: dict[str, float] | None = None
    log_likelihood_per_event_minus_truth: float | None = None
    ratio: float | None = None  # ours / peer, wall time
    ratio_note: str = ""


@dataclass
class Case:
    """One data set (setting, kernel, size) and every fit on it."""

    setting: str
    kernel: str
    num_marks: int
    target_events: int
    num_events: int
    t_end: float
    simulation_seconds: float
    log_likelihood_truth: float | None
    fits: list[Fit]


# --------------------------------------------------------------------------- helpers
def best_of(repeats: int, call: Callable[[], Any]) -> tuple[Any, list[float]]:
    runs: list[float] = []
    result = None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = call()
        runs.append(time.perf_counter() - start)
    return result, runs


def as_list(x: Any) -> Any:
    """Tensors/arrays -> nested lists of floats, NaN and inf -> None (strict JSON)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    return np.where(np.isfinite(arr), arr, np.nan).astype(object).tolist() if arr.ndim else float(arr)


def clean_json(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: clean_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean_json(v) for v in x]
    if isinstance(x, np.generic):
        return clean_json(x.item())
    return x


def to_array(x: Any) -> np.ndarray:
    """Nested lists with None -> float array with NaN."""
    return np.array(x if x is not None else np.nan, dtype=object).astype(np.float64)


def relative_error(estimate: Any, truth: np.ndarray, weights: np.ndarray | None = None) -> float:
    """``||est - truth|| / ||truth||`` (2-norm / Frobenius), optionally weighted entrywise by ``weights``."""
    est = to_array(estimate)
    w = np.ones_like(truth) if weights is None else weights
    return float(np.sqrt(np.sum(w * (est - truth) ** 2) / np.sum(w * truth**2)))


def single_thread_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **SINGLE_THREAD_ENV, **extra}



def save_events(path: Path, batch: EventBatch, num_marks: int) -> None:
    flat = batch.to_flat()
    np.savez(
        path,
        times=np.asarray(flat["times"], np.float64),
        marks=np.asarray(flat["marks"], np.int64),
        seq_offsets=np.asarray(flat["seq_offsets"], np.int64),
        t_end=np.asarray(flat["t_end"], np.float64),
        num_marks=num_marks,
    )


# --------------------------------------------------------------------------- peer venvs
def ensure_venv(venv: Path, requirements: tuple[str, ...], check: str, editable: Path | None = None) -> Path:
    """Create ``venv`` with ``requirements`` once (a stamp file marks a finished install); reinstall
    the editable package when its path changed. Returns the venv's python."""
    python = venv / "bin" / "python"
    stamp = venv / ".tpp-bench-installed"
    wanted = " ".join(requirements)
    editable_line = f"editable {editable}" if editable is not None else None
    lines = stamp.read_text().splitlines() if stamp.exists() else []
    log = venv.parent / f"{venv.name}-install.log"
    if not (lines and lines[0].strip() == wanted and python.exists()):
        if venv.exists():
            shutil.rmtree(venv)  # half-made venv from an interrupted install
        print(f"creating {venv} and installing {wanted} (once; reused by later runs) ...", flush=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        with log.open("w") as f:
            done = subprocess.run(
                [str(python), "-m", "pip", "install", *requirements], stdout=f, stderr=subprocess.STDOUT, check=False
            )
        if done.returncode != 0:
            raise SystemExit(f"pip install {wanted} failed; see {log}")
        lines = [wanted]
    if editable_line is not None and editable_line not in lines[1:]:
        print(f"installing {editable} into {venv} (pip install --no-deps -e) ...", flush=True)
        with log.open("a") as f:
            done = subprocess.run(
                [str(python), "-m", "pip", "install", "--no-deps", "-e", str(editable)],
                stdout=f, stderr=subprocess.STDOUT, check=False,
            )
        if done.returncode != 0:
            raise SystemExit(f"pip install --no-deps -e {editable} failed; see {log}")
        lines = [lines[0], editable_line]
    subprocess.run([str(python), "-c", check], check=True, env=single_thread_env())
    stamp.write_text("\n".join(lines) + "\n")
    return python


def ensure_tick_venv(scratch: Path) -> Path:
    if not (3, 11) <= sys.version_info[:2] <= (3, 13):
        raise SystemExit(f"tick 0.8.0.2 has wheels for CPython 3.11-3.13 only; this is {platform.python_version()}")
    return ensure_venv(scratch / "tick-venv", TICK_REQUIREMENTS, "from tick.hawkes import HawkesEM")


def ensure_fadin_venv(scratch: Path, src: Path) -> Path:
    if not (src / "fadin" / "solver.py").exists():
        raise SystemExit(f"--fadin-src {src} is not a FaDIn checkout (no fadin/solver.py)")
    python = ensure_venv(scratch / "fadin-venv", FADIN_REQUIREMENTS, "import fadin.solver", editable=src)
    where = subprocess.run(
        [str(python), "-c", "import fadin; print(fadin.__file__)"],
        capture_output=True, text=True, check=True, env=single_thread_env(),
    ).stdout.strip()
    if Path(where).resolve().parents[1] != src.resolve():
        raise SystemExit(f"the fadin venv imports {where}, not the checkout {src}")
    return python


def peer_versions(python: Path, code: str) -> str:
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=single_thread_env(), check=False)
    return done.stdout.strip() if done.returncode == 0 else f"unknown ({done.stderr.strip()[-200:]})"


def git_commit(src: Path) -> str | None:
    done = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def run_worker(python: Path, script: Path, job: dict[str, Any], job_path: Path, out_path: Path) -> dict[str, Any]:
    out_path.unlink(missing_ok=True)
    job_path.write_text(json.dumps(job))
    done = subprocess.run(
        [str(python), str(script), str(job_path)], env=single_thread_env(PYTHONWARNINGS="ignore"), check=False
    )
    if done.returncode != 0 or not out_path.exists():
        return {"error": f"worker {script.name} exited with {done.returncode}; inputs kept: {job_path}"}
    result = json.loads(out_path.read_text())
    job_path.unlink(missing_ok=True)
    out_path.unlink(missing_ok=True)
    return result


# --------------------------------------------------------------------------- reference FaDIn worker
REFERENCE_WORKER = r'''
"""Reference FaDIn side of tpp's benchmarks/fadin_bench.py, run in its own venv (written there by it).

usage: python fadin_worker.py JOB.json
For each delta in the job: FaDIn(K, kernel, kernel_length=W, delta=delta, max_iter=...) with its
defaults, fit on the events; wall time split into grid projection, precomputation
(compute_constants_fadin) and iterations (from the first gradient call to the end of fit), the
parameters, the iterations run and whether it stopped early, or at which step it turned NaN.
"""
import contextlib
import io
import json
import math
import os
import re
import sys
import time

import numpy as np
import torch

torch.set_num_threads(1)

import fadin
import fadin.solver as fs
from fadin.solver import FaDIn


class NaNAbort(Exception):
    pass


def by_type(times, marks, num_marks):
    return [np.ascontiguousarray(times[marks == k], dtype=np.float64) for k in range(num_marks)]


def floats(x):
    a = np.asarray(x.detach().numpy() if torch.is_tensor(x) else x, dtype=np.float64)
    return np.where(np.isfinite(a), a, np.nan).astype(object).tolist()


def first_nan_step(solver):
    hist = [solver.param_baseline_.reshape(solver.param_baseline_.shape[0], -1),
            solver.param_alpha_.reshape(solver.param_alpha_.shape[0], -1)]
    bad = torch.zeros(hist[0].shape[0], dtype=torch.bool)
    for h in hist:
        bad |= torch.isnan(h).any(1)
    idx = torch.nonzero(bad)
    return int(idx[0]) if idx.numel() else None


def fit_once(events, end_time, job, delta, max_iter, stop_at_nan):
    timers = {"grid": 0.0, "precompute": 0.0}
    state = {"calls": 0, "first": None, "nan_at": None}
    orig_grid, orig_constants = fs.projected_grid, fs.compute_constants_fadin

    def grid(*a, **k):
        t0 = time.perf_counter()
        out = orig_grid(*a, **k)
        timers["grid"] += time.perf_counter() - t0
        return out

    def constants(*a, **k):
        t0 = time.perf_counter()
        out = orig_constants(*a, **k)
        timers["precompute"] += time.perf_counter() - t0
        return out

    solver = FaDIn(job["num_marks"], job["kernel"], kernel_length=job["support"], delta=delta, max_iter=max_iter)
    gradient = solver.compute_gradient  # the class's staticmethod, a plain function

    def counted_gradient(slv, events_grid, discretization, i, n_events, end_time_):
        if state["first"] is None:
            state["first"] = time.perf_counter()
        state["calls"] += 1
        if stop_at_nan and i > 0 and any(bool(torch.isnan(p).any()) for p in slv._params_intens):
            state["nan_at"] = i
            raise NaNAbort()
        return gradient(slv, events_grid, discretization, i, n_events, end_time_)

    solver.compute_gradient = counted_gradient  # called as self.compute_gradient(self, ...)
    fs.projected_grid, fs.compute_constants_fadin = grid, constants
    printed = io.StringIO()
    aborted = False
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(printed):
            solver.fit(events, end_time)
    except NaNAbort:
        aborted = True
    finally:
        t1 = time.perf_counter()
        fs.projected_grid, fs.compute_constants_fadin = orig_grid, orig_constants
    total = t1 - t0
    iterate = t1 - state["first"] if state["first"] is not None else 0.0
    text = printed.getvalue().replace("\r", "\n")
    said = {}
    for key, pattern in (("precompute", r"precomput:\s*([0-9.eE+-]+)"), ("iterations", r"iterations in\s*([0-9.eE+-]+)"),
                         ("early_stop", r"early stopping at iteration:\s*([0-9]+)")):
        found = re.findall(pattern, text)
        if found:
            said[key] = float(found[-1])
    if aborted:
        steps = state["nan_at"]
        rows = steps  # param_*_[steps] is the first NaN iterate
        baseline = solver.param_baseline_[rows]
        alpha = solver.param_alpha_[rows]
        kernel = [solver.param_kernel_[j, rows] for j in range(solver.n_kernel_params)]
        nan_step = steps
    else:
        steps = state["calls"]
        baseline, alpha, kernel = solver.baseline_, solver.alpha_, solver.kernel_
        nan_step = first_nan_step(solver)
    finite = all(bool(torch.isfinite(t).all()) for t in [baseline, alpha, *kernel])
    early = "early_stop" in said
    per_iter = iterate / max(steps, 1)
    other = total - timers["grid"] - timers["precompute"] - iterate
    return {
        "seconds": total,
        "grid_seconds": timers["grid"],
        "precompute_seconds": timers["precompute"],
        "iterate_seconds": iterate,
        "other_seconds": other,
        "iterations": steps,
        "seconds_per_iteration": per_iter,
        "projected_seconds": (timers["grid"] + timers["precompute"] + max(other, 0.0) + per_iter * max_iter) if aborted else None,
        "aborted_at_nan": aborted,
        "nan_step": nan_step,
        "early_stop": early,
        "finite": finite,
        "max_iter": max_iter,
        "self_reported": said,
        "baseline": floats(baseline),
        "adjacency": floats(alpha),
        "kernel": [floats(k) for k in kernel],
    }


def main(job_path):
    with open(job_path) as f:
        job = json.load(f)
    data = np.load(job["data"])
    times, marks = data["times"], data["marks"]
    events = by_type(times, marks, job["num_marks"])
    end_time = int(job["end_time"])
    # Warm-up (numba compilation, first torch calls) on the first events; not timed.
    n_warm = min(int(job["warmup_events"]), times.size)
    warm_end = int(math.ceil(times[n_warm - 1])) + 1
    warm = by_type(times[:n_warm], marks[:n_warm], job["num_marks"])
    for delta in job["deltas"]:
        fit_once(warm, warm_end, job, delta, 5, False)
    results = {}
    for delta in job["deltas"]:
        runs = []
        try:
            for _ in range(max(1, job["repeats"])):
                runs.append(fit_once(events, end_time, job, delta, job["max_iter"], job["stop_at_nan"]))
        except Exception as err:  # one failing delta must not hide the others
            results[repr(float(delta))] = {"error": "%s: %s" % (type(err).__name__, str(err)[:300])}
            continue
        best = min(runs, key=lambda r: r["seconds"])
        best["runs"] = [r["seconds"] for r in runs]
        results[repr(float(delta))] = best
    out = {
        "fadin_file": fadin.__file__,
        "fadin_version": getattr(fadin, "__version__", "?"),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy_version": np.__version__,
        "python": sys.version.split()[0],
        "fits": results,
    }
    tmp = job["out"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, job["out"])


if __name__ == "__main__":
    main(sys.argv[1])
'''


# --------------------------------------------------------------------------- tick HawkesEM worker
TICK_EM_WORKER = r'''
"""tick side of tpp's benchmarks/fadin_bench.py (HawkesEM), run in tick's own venv (written there by it).

usage: python tick_em_worker.py JOB.json
Fits HawkesEM(kernel_support, kernel_size, tol, max_iter, record_every=1) from the job's start,
times it (and, separately, the same call with max_iter=0: data set-up), and scores its solution and
the candidate solutions given in the job with tick's own log-likelihood.
"""
import json
import os
import sys
import time

import numpy as np
import tick
from tick.hawkes import HawkesEM


def by_type(times, marks, num_marks):
    return [np.ascontiguousarray(times[marks == k], dtype=np.float64) for k in range(num_marks)]


def make(job, max_iter):
    return HawkesEM(kernel_support=job["support"], kernel_size=job["bins"], tol=job["tol"], max_iter=max_iter,
                    record_every=1, verbose=False, n_threads=1)


def main(job_path):
    with open(job_path) as f:
        job = json.load(f)
    data = np.load(job["data"])
    times, marks = data["times"], data["marks"]
    K = job["num_marks"]
    events = by_type(times, marks, K)
    t_end = float(job["end_time"])
    b0 = np.asarray(job["baseline_start"], dtype=np.float64)
    k0 = np.asarray(job["kernel_start"], dtype=np.float64)
    # Warm-up on the first events; not timed.
    n_warm = min(int(job["warmup_events"]), times.size)
    warm = by_type(times[:n_warm], marks[:n_warm], K)
    make(job, 3).fit(warm, end_times=float(times[n_warm - 1]) + 1.0, baseline_start=b0.copy(), kernel_start=k0.copy())

    t0 = time.perf_counter()
    make(job, 0).fit(events, end_times=t_end, baseline_start=b0.copy(), kernel_start=k0.copy())
    setup = time.perf_counter() - t0
    runs, em = [], None
    for _ in range(max(1, job["repeats"])):
        em = make(job, job["max_iter"])
        t0 = time.perf_counter()
        em.fit(events, end_times=t_end, baseline_start=b0.copy(), kernel_start=k0.copy())
        runs.append(time.perf_counter() - t0)
    hist = em.history.values
    n_iter = int(hist["n_iter"][-1]) + 1 if hist.get("n_iter") else job["max_iter"]
    last_rel = max(hist["rel_baseline"][-1], hist["rel_kernel"][-1]) if hist.get("rel_baseline") else None
    converged = last_rel is not None and last_rel <= job["tol"]
    scores = {"tick": float(em.score())}
    for name, cand in job.get("candidates", {}).items():
        scores[name] = float(em.score(baseline=np.asarray(cand["baseline"], dtype=np.float64),
                                      kernel=np.asarray(cand["kernel"], dtype=np.float64)))
    out = {
        "tick_version": tick.__version__,
        "numpy_version": np.__version__,
        "python": sys.version.split()[0],
        "seconds": min(runs),
        "runs": runs,
        "setup_seconds": setup,
        "iterations": n_iter,
        "seconds_per_iteration": max(min(runs) - setup, 0.0) / max(n_iter, 1),
        "converged": bool(converged),
        "last_relative_change": last_rel,
        "baseline": np.asarray(em.baseline, dtype=np.float64).tolist(),
        "kernel": np.asarray(em.kernel, dtype=np.float64).tolist(),
        "adjacency": np.asarray(em.get_kernel_norms(), dtype=np.float64).tolist(),
        "scores": scores,
    }
    tmp = job["out"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, job["out"])


if __name__ == "__main__":
    main(sys.argv[1])
'''


# --------------------------------------------------------------------------- our side
def our_fadin_fit(batch: EventBatch, setting: Setting, kernel: str, delta: float, objective: str, toeplitz: bool,
                  repeats: int) -> Fit:
    method = f"FaDIn {objective}" + (" (Toeplitz)" if toeplitz else "")
    try:
        model, runs = best_of(
            repeats,
            lambda: FaDInHawkes(setting.num_marks, kernel=KERNELS[kernel][0], support=SUPPORT, delta=delta,
                                objective=objective, toeplitz=toeplitz).fit(batch),
        )
    except Exception as err:  # noqa: BLE001 - report and go on
        return Fit("fadin", "tpp", method, delta=delta, error=f"{type(err).__name__}: {err}")
    r = model.fit_result_
    seconds = min(runs)
    pre, opt = float(r.get("precompute_seconds", np.nan)), float(r.get("optimize_seconds", np.nan))
    iterations = int(r.get("iterations", 0))
    converged = bool(r.get("converged"))
    status = f"{'converged' if converged else 'NOT converged'}: {r.get('message', '')}"
    return Fit(
        "fadin", "tpp", method, delta=delta, seconds=seconds, precompute_seconds=pre, iterate_seconds=opt,
        other_seconds=seconds - pre - opt, iterations=iterations,
        seconds_per_iteration=opt / max(iterations, 1), converged=converged, status=status, runs=runs,
        baseline=as_list(model.baseline_), adjacency=as_list(model.adjacency_),
        kernel_params={k: as_list(v) for k, v in model.kernel_params_.items()},
        extra={"evaluations": r.get("evaluations"), "grid_taps": r.get("grid_taps"), "toeplitz": r.get("toeplitz")},
    )


def our_em_fit(batch: EventBatch, setting: Setting, bins: int, tol: float, max_iter: int, repeats: int) -> Fit:
    """``tol`` is ours' own rule (log-likelihood change per event): small, so the run passes tick's final
    log-likelihood and the time to reach it can be read off the same run."""
    try:
        model, runs = best_of(
            repeats,
            lambda: NonparametricHawkes(setting.num_marks, support=SUPPORT, bins=bins).fit(batch, max_iter=max_iter, tol=tol),
        )
    except Exception as err:  # noqa: BLE001
        return Fit("em", "tpp", f"EM, {bins} bins", error=f"{type(err).__name__}: {err}")
    r = model.fit_result_
    seconds = min(runs)
    iterations = int(r.get("iterations", 0))
    em_seconds = float(r.get("em_seconds", seconds))
    converged = bool(r.get("converged"))
    return Fit(
        "em", "tpp", f"EM, {bins} bins", seconds=seconds, precompute_seconds=r.get("setup_seconds"),
        iterate_seconds=em_seconds, iterations=iterations,
        seconds_per_iteration=float(r.get("seconds_per_iteration", em_seconds / max(iterations, 1))),
        converged=converged,
        status=f"{'converged' if converged else 'NOT converged'} (|d loglik| <= {tol:g} nats/event)",
        runs=runs, baseline=as_list(model.baseline_), adjacency=as_list(model.adjacency_),
        kernel_values=as_list(model.kernel_values_),
        extra={"log_likelihood_trace": [float(v) for v in r.get("log_likelihood_trace", [])],
               "num_pairs": r.get("num_pairs")},
    )


def our_exp_fit(batch: EventBatch, setting: Setting, decay: float | None, repeats: int) -> Fit:
    method = "ExpHawkes MLE, decay 2 given" if decay is not None else "ExpHawkes MLE, decay learned"
    try:
        model, runs = best_of(repeats, lambda: ExpHawkes(setting.num_marks, decay=decay).fit(batch))
    except Exception as err:  # noqa: BLE001
        return Fit("exact", "tpp", method, error=f"{type(err).__name__}: {err}")
    r = getattr(model, "fit_result_", {}) or {}
    converged = r.get("converged")
    k = setting.num_marks
    return Fit(
        "exact", "tpp", method, seconds=min(runs), iterations=r.get("iterations"), converged=converged,
        status="" if converged is None else ("converged" if converged else f"NOT converged: {r.get('message', '')}"),
        runs=runs, baseline=as_list(model.baseline_), adjacency=as_list(model.adjacency_),
        kernel_params={"decay": as_list(np.full((k, k), float(model.decay_)))},
        extra={"decay": float(model.decay_)},
    )


def em_start(batch: EventBatch, num_marks: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Our EM's start (NonparametricHawkes.fit): half of each type's rate, a flat kernel with branching ratio 0.5."""
    flat = batch.to_flat()
    total_time = float(np.sum(np.asarray(flat["t_end"]) - np.asarray(flat["t_start"])))
    counts = np.bincount(np.asarray(flat["marks"]), minlength=num_marks).astype(np.float64)
    return 0.5 * counts / total_time, np.full((num_marks, num_marks, bins), 0.5 / (num_marks * SUPPORT))


def warm_up_ours(setting: Setting, kernels: list[str], deltas: list[float], objectives: list[str], toeplitz: bool,
                 parts: set[str], em_bins: int) -> float:
    """Compile (numba) and touch every call we time, on a small sample; return the seconds it took."""
    start = time.perf_counter()
    for kernel in kernels:
        batch = setting.true_model(kernel).sample(1, setting.t_end_for(WARMUP_EVENTS), generator=12345)
        if "fadin" in parts or "exact" in parts:
            for delta in deltas:
                for objective in objectives:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        # a few iterations compile everything; a full fit on so few events can run long
                        FaDInHawkes(setting.num_marks, kernel=KERNELS[kernel][0], support=SUPPORT, delta=delta,
                                    objective=objective, toeplitz=toeplitz).fit(batch, max_iter=5)
        log_likelihood(setting.true_model(kernel), batch)
        if "em" in parts:
            model = NonparametricHawkes(setting.num_marks, support=SUPPORT, bins=em_bins).fit(batch, max_iter=5)
            log_likelihood(model, batch)
        if "exact" in parts and kernel == "exp":
            for decay in (2.0, None):
                model = ExpHawkes(setting.num_marks, decay=decay).fit(batch)
            log_likelihood(model, batch)
    return time.perf_counter() - start


def log_likelihood(model: Any, batch: EventBatch) -> float:
    with torch.no_grad():
        return float(model.log_likelihood(batch).sum())


def fadin_log_likelihood(fit: Fit, kernel: str, batch: EventBatch) -> float | None:
    """Our exact continuous-time log-likelihood of a FaDIn solution (ours or the reference's)."""
    if fit.baseline is None or fit.kernel_params is None:
        return None
    b, a = to_array(fit.baseline), to_array(fit.adjacency)
    params = {k: to_array(v) for k, v in fit.kernel_params.items()}
    if not (np.isfinite(b).all() and np.isfinite(a).all() and all(np.isfinite(v).all() for v in params.values())):
        return None
    try:
        model = FaDInHawkes.from_params(b, a, kernel=KERNELS[kernel][0], support=SUPPORT, kernel_params=params)
        return log_likelihood(model, batch)
    except Exception:  # noqa: BLE001 - e.g. a parameter outside the family's domain
        return None


# --------------------------------------------------------------------------- peers' side
def reference_fits(python: Path, scratch: Path, data_path: Path, tag: str, setting: Setting, kernel: str,
                   t_end: int, deltas: list[float], max_iter: int, stop_at_nan: bool, repeats: int) -> tuple[list[Fit], dict]:
    work = scratch / "work"
    script = work / "fadin_worker.py"
    script.write_text(REFERENCE_WORKER.lstrip())
    job = {
        "data": str(data_path), "out": str(work / f"{tag}.fadin.out.json"), "num_marks": setting.num_marks,
        "kernel": KERNELS[kernel][1], "support": SUPPORT, "end_time": t_end, "deltas": deltas,
        "max_iter": max_iter, "stop_at_nan": stop_at_nan, "repeats": repeats, "warmup_events": WARMUP_EVENTS,
    }
    answer = run_worker(python, script, job, work / f"{tag}.fadin.job.json", Path(job["out"]))
    names = KERNELS[kernel][2]
    if "error" in answer:
        return [Fit("fadin", "reference", "FaDIn l2 (Toeplitz)", delta=d, error=answer["error"]) for d in deltas], {}
    fits = []
    for d in deltas:
        r = answer["fits"][repr(float(d))]
        if "error" in r:
            fits.append(Fit("fadin", "reference", "FaDIn l2 (Toeplitz)", delta=d, error=r["error"]))
            continue
        if r["aborted_at_nan"]:
            status = (f"NaN after step {r['nan_step']} (stopped there; the full {r['max_iter']} steps would take "
                      f"~{r['projected_seconds']:.1f} s)")
        elif r["nan_step"] is not None:
            status = f"NaN from step {r['nan_step']} on (ran all {r['iterations']} steps)"
        elif r["early_stop"]:
            status = f"stopped early after {r['iterations']} steps (its test: no parameter moved > 1e-4 in one step)"
        else:
            status = f"ran all {r['iterations']} steps (its stopping test never met)"
        converged = bool(r["finite"] and r["early_stop"])
        fits.append(Fit(
            "fadin", "reference", "FaDIn l2 (Toeplitz)", delta=d, seconds=r["seconds"],
            precompute_seconds=r["precompute_seconds"], iterate_seconds=r["iterate_seconds"],
            other_seconds=r["other_seconds"] + r["grid_seconds"], iterations=r["iterations"],
            seconds_per_iteration=r["seconds_per_iteration"], projected_seconds=r["projected_seconds"],
            converged=converged, status=status, runs=r["runs"], baseline=r["baseline"], adjacency=r["adjacency"],
            kernel_params=dict(zip(names, r["kernel"])),
            extra={"grid_seconds": r["grid_seconds"], "self_reported": r["self_reported"], "finite": r["finite"],
                   "nan_step": r["nan_step"]},
        ))
    meta = {k: v for k, v in answer.items() if k != "fits"}
    return fits, meta


def tick_em_fit(python: Path, scratch: Path, data_path: Path, tag: str, setting: Setting, t_end: float, bins: int,
                tol: float, max_iter: int, start: tuple[np.ndarray, np.ndarray], candidates: dict[str, Fit],
                repeats: int) -> tuple[Fit, dict]:
    work = scratch / "work"
    script = work / "tick_em_worker.py"
    script.write_text(TICK_EM_WORKER.lstrip())
    job = {
        "data": str(data_path), "out": str(work / f"{tag}.tickem.out.json"), "num_marks": setting.num_marks,
        "support": SUPPORT, "bins": bins, "tol": tol, "max_iter": max_iter, "end_time": t_end,
        "baseline_start": start[0].tolist(), "kernel_start": start[1].tolist(), "repeats": repeats,
        "warmup_events": WARMUP_EVENTS,
        "candidates": {name: {"baseline": f.baseline, "kernel": f.kernel_values} for name, f in candidates.items()
                       if f.error is None},
    }
    answer = run_worker(python, script, job, work / f"{tag}.tickem.job.json", Path(job["out"]))
    method = f"EM, {bins} bins"
    if "error" in answer:
        return Fit("em", "tick", method, error=answer["error"]), {}
    fit = Fit(
        "em", "tick", method, seconds=answer["seconds"], precompute_seconds=answer["setup_seconds"],
        iterate_seconds=answer["seconds"] - answer["setup_seconds"], iterations=answer["iterations"],
        seconds_per_iteration=answer["seconds_per_iteration"], converged=answer["converged"],
        status=(f"{'converged' if answer['converged'] else 'NOT converged'} (relative parameter change "
                f"{answer['last_relative_change']:.2g}, tol {tol:g})"),
        runs=answer["runs"], baseline=answer["baseline"], adjacency=answer["adjacency"],
        kernel_values=answer["kernel"], extra={"tick_scores": answer["scores"]},
    )
    return fit, {k: answer[k] for k in ("tick_version", "numpy_version", "python")}


# --------------------------------------------------------------------------- evaluation
def evaluate(case: Case, setting: Setting, batch: EventBatch, compute_ll: bool) -> None:
    """Errors against the truth, log-likelihoods, and ours/peer ratios, in place."""
    kernel = case.kernel
    truth = setting.kernel_params[kernel]
    n = case.num_events
    for f in case.fits:
        if f.error is not None or f.baseline is None:
            continue
        f.baseline_rel_error = relative_error(f.baseline, setting.baseline)
        f.adjacency_rel_error = relative_error(f.adjacency, setting.adjacency)
        if f.kernel_params is not None:
            f.kernel_rel_error = {
                k: relative_error(v, truth[k], setting.adjacency) for k, v in f.kernel_params.items() if k in truth
            }
        if not compute_ll or case.log_likelihood_truth is None:
            continue
        ll = None
        if f.part == "fadin":
            ll = fadin_log_likelihood(f, kernel, batch)
        elif f.part == "em" and f.kernel_values is not None:
            try:
                model = NonparametricHawkes.from_params(to_array(f.baseline), to_array(f.kernel_values), SUPPORT)
                ll = log_likelihood(model, batch)
            except Exception:  # noqa: BLE001
                ll = None
        elif f.part == "exact":
            model = ExpHawkes.from_params(to_array(f.baseline), to_array(f.adjacency), float(f.extra["decay"]))
            ll = log_likelihood(model, batch)
        if ll is not None:
            f.extra["log_likelihood"] = ll
            f.log_likelihood_per_event_minus_truth = (ll - case.log_likelihood_truth) / n

    # ratios ours / peer
    refs = {f.delta: f for f in case.fits if f.part == "fadin" and f.library == "reference" and f.error is None}
    for f in case.fits:
        if f.part == "fadin" and f.library == "tpp" and f.error is None and f.delta in refs:
            ref = refs[f.delta]
            if ref.projected_seconds is not None:
                f.ratio = f.seconds / ref.projected_seconds
                f.ratio_note = "vs the reference's projected full run"
            else:
                f.ratio = f.seconds / ref.seconds
    tick = next((f for f in case.fits if f.part == "em" and f.library == "tick" and f.error is None), None)
    ours = next((f for f in case.fits if f.part == "em" and f.library == "tpp" and f.error is None), None)
    if tick is not None and ours is not None:
        ours.extra["ratio_own_stop"] = ours.seconds / tick.seconds
        ours.extra["ratio_per_iteration"] = ours.seconds_per_iteration / tick.seconds_per_iteration
        tick_ll = tick.extra.get("log_likelihood")
        trace = ours.extra.get("log_likelihood_trace") or []
        if tick_ll is not None and trace:
            reached = next((i for i, v in enumerate(trace) if v >= tick_ll - 1e-9 * abs(tick_ll)), None)
            if reached is not None:
                t = (ours.precompute_seconds or 0.0) + reached * ours.seconds_per_iteration
                ours.extra["seconds_to_tick_loglik"] = t
                ours.extra["iterations_to_tick_loglik"] = reached
                ours.ratio = t / tick.seconds
                ours.ratio_note = (f"total = time to tick's final log-likelihood: setup + {reached} iterations x "
                                   f"{1e3 * ours.seconds_per_iteration:.3g} ms")
        scores = tick.extra.get("tick_scores", {})
        if "tpp" in scores and "tick" in scores:
            ours.extra["tick_score_minus_tick"] = scores["tpp"] - scores["tick"]


# --------------------------------------------------------------------------- tables
def fmt_kernel_errors(errors: dict[str, float] | None) -> str:
    if not errors:
        return "-"
    return " ".join(f"{k} {v:.3g}" for k, v in errors.items())


def fadin_table(cases: list[Case]) -> pd.DataFrame:
    rows = []
    for c in cases:
        for f in c.fits:
            if f.part != "fadin":
                continue
            rows.append({
                "setting": c.setting, "kernel": c.kernel, "events": c.num_events, "delta": f.delta,
                "lib": f.library, "fit": f.method,
                "total s": f.seconds, "precomp s": f.precompute_seconds, "iter s": f.iterate_seconds,
                "iters": f.iterations, "ms/iter": None if f.seconds_per_iteration is None else 1e3 * f.seconds_per_iteration,
                "ours/ref": f.ratio, "err mu": f.baseline_rel_error, "err A": f.adjacency_rel_error,
                "err kernel": fmt_kernel_errors(f.kernel_rel_error),
                "dll/ev": f.log_likelihood_per_event_minus_truth,
                "ok": "-" if f.error else ("yes" if f.converged else "NO"),
            })
    return pd.DataFrame(rows)


def em_table(cases: list[Case]) -> pd.DataFrame:
    rows = []
    for c in cases:
        for f in c.fits:
            if f.part != "em":
                continue
            rows.append({
                "setting": c.setting, "kernel": c.kernel, "events": c.num_events, "lib": f.library, "fit": f.method,
                "run s": f.seconds, "setup s": f.precompute_seconds, "iters": f.iterations,
                "ms/iter": None if f.seconds_per_iteration is None else 1e3 * f.seconds_per_iteration,
                "s to tick's ll": f.extra.get("seconds_to_tick_loglik"),
                "iters to tick's ll": f.extra.get("iterations_to_tick_loglik"),
                "ours/tick total": f.ratio, "ours/tick per iter": f.extra.get("ratio_per_iteration"),
                "err mu": f.baseline_rel_error, "err A": f.adjacency_rel_error,
                "dll/ev": f.log_likelihood_per_event_minus_truth,
                "ok": "-" if f.error else ("yes" if f.converged else "NO"),
            })
    return pd.DataFrame(rows)


def exact_table(cases: list[Case]) -> pd.DataFrame:
    rows = []
    for c in cases:
        if c.kernel != "exp" or not any(f.part == "exact" for f in c.fits):
            continue
        for f in c.fits:
            if f.part not in ("exact", "fadin"):
                continue
            name = f.method if f.part == "exact" else f"{'ours' if f.library == 'tpp' else 'reference'} {f.method}, delta {f.delta:g}"
            rows.append({
                "setting": c.setting, "events": c.num_events, "fit": name, "seconds": f.seconds,
                "err mu": f.baseline_rel_error, "err A": f.adjacency_rel_error,
                "err decay": (f.kernel_rel_error or {}).get("decay"), "dll/ev": f.log_likelihood_per_event_minus_truth,
                "ok": "-" if f.error else ("yes" if f.converged else "NO"),
            })
    return pd.DataFrame(rows)


def notes(cases: list[Case]) -> list[str]:
    lines = []
    for c in cases:
        for f in c.fits:
            text = f"ERROR {f.error}" if f.error else f.status
            if f.ratio_note:
                text += f"; ratio {f.ratio_note}"
            if f.part == "em" and f.library == "tpp" and "tick_score_minus_tick" in f.extra:
                text += f"; tick's own score of ours minus of tick's: {f.extra['tick_score_minus_tick']:+.3g}"
            if f.part == "em" and f.library == "tpp" and f.error is None and "seconds_to_tick_loglik" not in f.extra:
                text += "; never reached tick's final log-likelihood"
            if text:
                lines.append(f"  {c.setting}/{c.kernel}, {c.num_events:,} events, {f.library} {f.method}"
                             f"{'' if f.delta is None else f', delta {f.delta:g}'}: {text}")
    return lines


@dataclass
class Goal:
    what: str
    measured: Any
    threshold: float | None
    passed: bool | None


def check_goals(cases: list[Case], reference_ran: bool, em_ran: bool) -> list[Goal]:
    goals: list[Goal] = []
    for c in cases:
        label = f"{c.setting}/{c.kernel}, {c.num_events:,} events"
        ours = {f.delta: f for f in c.fits if f.part == "fadin" and f.library == "tpp"}
        refs = {f.delta: f for f in c.fits if f.part == "fadin" and f.library == "reference"}
        if c.num_marks == 2 and c.target_events >= GOAL_SIZE and GOAL_DELTA in ours and GOAL_DELTA in refs:
            o, r = ours[GOAL_DELTA], refs[GOAL_DELTA]
            ok = o.error is None and r.error is None and o.ratio is not None
            goals.append(Goal(f"time ours/ref ({label}, delta {GOAL_DELTA})", o.ratio if ok else None, GOAL_TIME_RATIO,
                              (o.ratio <= GOAL_TIME_RATIO) if ok else False))
            if ok:
                ratios = {"mu": o.baseline_rel_error / r.baseline_rel_error, "A": o.adjacency_rel_error / r.adjacency_rel_error}
                for k, v in (o.kernel_rel_error or {}).items():
                    rv = (r.kernel_rel_error or {}).get(k)
                    if rv and np.isfinite(rv):
                        ratios[k] = v / rv
                worst = max(ratios, key=ratios.get)
                goals.append(Goal(f"errors ours/ref, worst of {sorted(ratios)} is {worst} ({label}, delta {GOAL_DELTA})",
                                  ratios[worst], GOAL_ERROR_RATIO, ratios[worst] <= GOAL_ERROR_RATIO))
        if c.num_marks == 10:
            for d, o in sorted(ours.items()):
                r = refs.get(d)
                ref_text = "" if r is None else f"; reference: {'converged' if r.converged else ('NaN' if r.extra.get('nan_step') is not None else 'not converged')}"
                goals.append(Goal(f"ours converges ({label}, delta {d:g}){ref_text}",
                                  "yes" if (o.error is None and o.converged) else "no", None,
                                  o.error is None and bool(o.converged)))
        em_ours = next((f for f in c.fits if f.part == "em" and f.library == "tpp"), None)
        em_tick = next((f for f in c.fits if f.part == "em" and f.library == "tick"), None)
        if em_ours is not None and em_tick is not None:
            per = em_ours.extra.get("ratio_per_iteration")
            goals.append(Goal(f"EM seconds/iteration ours/tick ({label})", per, GOAL_EM_RATIO,
                              None if per is None else per <= GOAL_EM_RATIO))
            goals.append(Goal(f"EM total seconds ours/tick, to tick's final log-likelihood ({label})", em_ours.ratio,
                              GOAL_EM_RATIO, False if em_ours.ratio is None else em_ours.ratio <= GOAL_EM_RATIO))
    if not reference_ran:
        goals.append(Goal("time and errors ours/ref (not measured: no --fadin-src)", None, None, None))
    elif not any(c.num_marks == 2 and c.target_events >= GOAL_SIZE for c in cases):
        goals.append(Goal("time ours/ref at K=2, 1e6 events, delta 0.01 (not measured in this run)", None, None, None))
    if not em_ran:
        goals.append(Goal("EM ours/tick (not measured in this run)", None, None, None))
    return goals


def goals_table(goals: list[Goal]) -> pd.DataFrame:
    verdict = {True: "PASS", False: "FAIL", None: "n/a"}
    return pd.DataFrame([{"goal": g.what, "measured": g.measured, "<=": g.threshold, "": verdict[g.passed]} for g in goals])


def print_frame(title: str, frame: pd.DataFrame) -> None:
    print(f"\n{title}")
    if frame.empty:
        print("  (nothing)")
        return
    with pd.option_context("display.width", 250, "display.max_columns", None, "display.max_colwidth", 140):
        print(frame.to_string(index=False, float_format=lambda x: f"{x:.4g}", na_rep="-"))


def environment() -> dict[str, Any]:
    return base_environment()



def parse_list(text: str, cast: Callable[[str], Any]) -> list[Any]:
    return [cast(s) for s in text.replace(" ", "").split(",") if s]


# --------------------------------------------------------------------------- CLI
app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


@app.command()
def main(
    quick: Annotated[bool, typer.Option(help="Only ~1e5 events and delta 0.05.")] = False,
    fadin_src: Annotated[
        Path | None, typer.Option(help="Local clone of github.com/mind-inria/FaDIn; without it the reference is skipped.")
    ] = None,
    scratch: Annotated[Path, typer.Option(help="Scratch folder outside the repo: peers' venvs and exchange files.")] = DEFAULT_SCRATCH,
    out: Annotated[Path, typer.Option(help="JSON results file (written atomically).")] = DEFAULT_OUT,
    settings: Annotated[str, typer.Option(help="Comma-separated settings: k2, k10.")] = "k2,k10",
    sizes: Annotated[str, typer.Option(help="Comma-separated target event counts.")] = "1e5,1e6",
    deltas: Annotated[str, typer.Option(help="Comma-separated grid steps Delta.")] = "0.05,0.01",
    kernels: Annotated[str, typer.Option(help="Comma-separated kernels: exp (truncated exponential), gauss.")] = "exp,gauss",
    parts: Annotated[str, typer.Option(help="Comma-separated parts: fadin, em, exact.")] = "fadin,em,exact",
    objectives: Annotated[str, typer.Option(help="Our FaDIn objectives to run: l2 (the reference's), likelihood.")] = "l2",
    our_toeplitz: Annotated[bool, typer.Option(help="Ours with the Toeplitz approximation of ztzG, as the reference.")] = False,
    repeats: Annotated[int, typer.Option(help="Timed runs of every fit, ours and the peers' (the best is kept).")] = 1,
    reference_max_iter: Annotated[int, typer.Option(help="The reference's max_iter (its default: 2000).")] = 2000,
    reference_stop_at_nan: Annotated[
        bool, typer.Option(help="Stop a reference fit at its first NaN iterate and project the full run's time.")
    ] = True,
    em_kernels: Annotated[str, typer.Option(help="Data sets (kernels) for the EM comparison.")] = "gauss",
    em_bins: Annotated[int, typer.Option(help="EM: bins of the piecewise-constant kernels on [0, 3].")] = 30,
    em_tol: Annotated[float, typer.Option(help="EM: tick's tol (relative parameter change; its default 1e-5).")] = 1e-5,
    em_our_tol: Annotated[
        float, typer.Option(help="EM: ours' tol (log-likelihood change per event), small enough to pass tick's solution.")
    ] = 1e-8,
    em_max_iter: Annotated[int, typer.Option(help="EM: maximum iterations for both.")] = 1000,
    loglik: Annotated[bool, typer.Option(help="Score every solution with our exact log-likelihood.")] = True,
) -> None:
    """Fit FaDIn (ours, reference), nonparametric EM (ours, tick) and exact MLE on the same simulated events."""
    scratch = scratch.expanduser().resolve()
    if scratch == REPO or REPO in scratch.parents:
        raise typer.BadParameter(f"--scratch must be outside the repository {REPO}")
    size_list = [int(1e5)] if quick else parse_list(sizes, lambda s: int(float(s)))
    delta_list = [0.05] if quick else parse_list(deltas, float)
    chosen = parse_list(settings, str)
    kernel_list = parse_list(kernels, str)
    part_set = set(parse_list(parts, str))
    objective_list = parse_list(objectives, str)
    em_kernel_list = [k for k in parse_list(em_kernels, str) if k in kernel_list]
    for what, given, allowed in (("settings", chosen, SETTINGS), ("kernels", kernel_list, KERNELS),
                                 ("parts", part_set, {"fadin", "em", "exact"}),
                                 ("objectives", objective_list, {"l2", "likelihood"})):
        unknown = sorted(set(given) - set(allowed))
        if unknown:
            raise typer.BadParameter(f"unknown {what} {unknown}; choose from {sorted(allowed)}")
    if "em" in part_set and not em_kernel_list:
        print(f"note: --em-kernels names none of --kernels {kernel_list}: no EM comparison")
    if "exact" in part_set and "exp" not in kernel_list:
        print("note: the exact-MLE comparison runs on the truncated-exponential data: add exp to --kernels")

    print(f"reproduce: {reproduce_command(__file__)}")
    env = environment()
    reference_python = None
    if "fadin" in part_set or "exact" in part_set:
        if fadin_src is None:
            print("reference FaDIn: no --fadin-src given, so the reference column is SKIPPED (clone "
                  "github.com/mind-inria/FaDIn outside this repository and pass its path)")
        else:
            src = fadin_src.expanduser().resolve()
            if src == REPO or REPO in src.parents:
                raise typer.BadParameter("--fadin-src must be outside the repository")
            reference_python = ensure_fadin_venv(scratch, src)
            env["fadin_src"] = str(src)
            env["fadin_commit"] = git_commit(src)
            env["fadin_python"] = str(reference_python)
            env["fadin_venv_torch"] = peer_versions(reference_python, "import torch; print(torch.__version__)")
    tick_python = None
    if "em" in part_set and em_kernel_list:
        tick_python = ensure_tick_venv(scratch)
        env["tick"] = peer_versions(tick_python, "import tick; print(tick.__version__)")
        env["tick_python"] = str(tick_python)
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items() if not k.endswith("_python") and k != "threads_env"))
    print(f"threads: {' '.join(f'{k}={v}' for k, v in SINGLE_THREAD_ENV.items())}, torch.set_num_threads(1) (every process)")
    print(
        f"timing: wall seconds of each fit, best of {repeats}; warm-ups not counted. Reference: its defaults "
        f"({REFERENCE_SEED_NOTE}, RMSprop lr 1e-3, max_iter {reference_max_iter}, Toeplitz ztzG), "
        f"{'stopped at its first NaN iterate' if reference_stop_at_nan else 'run to the end even after NaN'}. "
        f"Ours: FaDInHawkes objective(s) {objective_list}, {'Toeplitz' if our_toeplitz else 'exact'} ztzG, its defaults. "
        f"EM: {em_bins} bins on [0, {SUPPORT:g}], max_iter {em_max_iter}, same start for both; tick tol {em_tol:g} "
        f"(its rule), ours tol {em_our_tol:g} (its rule); 'total' for ours = its time to tick's final log-likelihood."
    )
    work = scratch / "work"
    work.mkdir(parents=True, exist_ok=True)

    cases: list[Case] = []
    truths: dict[str, Any] = {}
    peers: dict[str, Any] = {}
    for name in chosen:
        setting = SETTINGS[name]()
        truths[name] = {
            "baseline": setting.baseline.tolist(), "adjacency": setting.adjacency.tolist(),
            "kernel_params": {k: {p: v.tolist() for p, v in ps.items()} for k, ps in setting.kernel_params.items()},
            "spectral_radius": setting.spectral_radius, "row_sums": setting.adjacency.sum(1).tolist(),
            "stationary_rate": setting.stationary_rate.tolist(),
        }
        print(
            f"\nsetting {name}: K={setting.num_marks}, W={SUPPORT:g}, spectral radius {setting.spectral_radius:.3f}, "
            f"row sums {np.round(setting.adjacency.sum(1), 2).tolist()}, {int((setting.adjacency > 0).sum())} non-zero "
            f"of {setting.num_marks ** 2}, total rate {setting.stationary_rate.sum():.3f}/unit time",
            flush=True,
        )
        compile_seconds = warm_up_ours(setting, kernel_list, delta_list, objective_list, our_toeplitz, part_set, em_bins)
        print(f"warm-up of our side on ~{WARMUP_EVENTS:,} events: {compile_seconds:.2f} s (not counted)", flush=True)
        for kernel in kernel_list:
            for target in size_list:
                t_end = setting.t_end_for(target)
                model = setting.true_model(kernel)
                start = time.perf_counter()
                batch = model.sample(1, float(t_end), generator=SIM_SEED)
                sim_seconds = time.perf_counter() - start
                tag = f"{name}-{kernel}-{batch.num_events}"
                print(f"[{name}/{kernel}, {batch.num_events:,} events, t_end {t_end}] simulated in {sim_seconds:.2f} s",
                      flush=True)
                ll_truth = log_likelihood(model, batch) if loglik else None
                data_path = work / f"{tag}.npz"
                save_events(data_path, batch, setting.num_marks)
                fits: list[Fit] = []
                if "fadin" in part_set or ("exact" in part_set and kernel == "exp"):
                    for delta in delta_list:
                        for objective in objective_list:
                            f = our_fadin_fit(batch, setting, kernel, delta, objective, our_toeplitz, repeats)
                            print(f"  ours FaDIn {objective}, delta {delta:g}: "
                                  + (f.error or f"{f.seconds:.3f} s ({f.status})"), flush=True)
                            fits.append(f)
                    if reference_python is not None:
                        ref_fits, meta = reference_fits(
                            reference_python, scratch, data_path, tag, setting, kernel, t_end, delta_list,
                            reference_max_iter, reference_stop_at_nan, repeats,
                        )
                        peers.setdefault("reference", meta)
                        for f in ref_fits:
                            print(f"  reference FaDIn, delta {f.delta:g}: "
                                  + (f.error or f"{f.seconds:.2f} s ({f.status})"), flush=True)
                        fits.extend(ref_fits)
                if "exact" in part_set and kernel == "exp":
                    for decay in (2.0, None):
                        fits.append(our_exp_fit(batch, setting, decay, repeats))
                if "em" in part_set and kernel in em_kernel_list and tick_python is not None:
                    ours_em = our_em_fit(batch, setting, em_bins, em_our_tol, em_max_iter, repeats)
                    print("  ours EM: " + (ours_em.error or f"{ours_em.seconds:.2f} s, {ours_em.iterations} iterations"),
                          flush=True)
                    tick_fit, meta = tick_em_fit(
                        tick_python, scratch, data_path, tag, setting, float(t_end), em_bins, em_tol, em_max_iter,
                        em_start(batch, setting.num_marks, em_bins), {"tpp": ours_em}, repeats,
                    )
                    peers.setdefault("tick", meta)
                    print("  tick EM: " + (tick_fit.error or f"{tick_fit.seconds:.2f} s, {tick_fit.iterations} iterations"),
                          flush=True)
                    fits.extend([ours_em, tick_fit])
                case = Case(name, kernel, setting.num_marks, target, batch.num_events, float(t_end), sim_seconds,
                            ll_truth, fits)
                evaluate(case, setting, batch, loglik)
                if all(f.error is None for f in fits):
                    data_path.unlink(missing_ok=True)
                cases.append(case)

    print_frame(
        "FaDIn: ours (tpp, l2 objective) vs the reference (same events). Seconds are wall time; precomp = "
        "statistics on the grid, iter = the optimisation; err = relative error vs truth (kernel parameters "
        "weighted by the true A); dll/ev = our exact log-likelihood of the solution minus the truth's, per event:",
        fadin_table(cases),
    )
    print_frame("EM, piecewise-constant kernels: ours vs tick HawkesEM (same events, same start):", em_table(cases))
    print_frame(
        "What the grid costs (truncated-exponential data, decay 2): exact continuous-time MLE vs FaDIn:",
        exact_table(cases),
    )
    print("\nnotes:\n" + "\n".join(notes(cases)))
    goals = check_goals(cases, reference_python is not None, tick_python is not None)
    print_frame("goals:", goals_table(goals))
    measured = [g for g in goals if g.passed is not None]
    print(f"\n{sum(bool(g.passed) for g in measured)} of {len(measured)} measured goals pass")

    for case in cases:  # traces are long: keep them out of the JSON but their length
        for f in case.fits:
            trace = f.extra.pop("log_likelihood_trace", None)
            if trace is not None:
                f.extra["log_likelihood_trace_len"] = len(trace)
    payload = {
        "benchmark": "fadin_bench",
        "command": reproduce_command(__file__),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": env,
        "peers": peers,
        "options": {
            "sizes": size_list, "deltas": delta_list, "settings": chosen, "kernels": kernel_list,
            "parts": sorted(part_set), "objectives": objective_list, "our_toeplitz": our_toeplitz,
            "repeats": repeats, "reference_max_iter": reference_max_iter,
            "reference_stop_at_nan": reference_stop_at_nan, "em_kernels": em_kernel_list, "em_bins": em_bins,
            "em_tol": em_tol, "em_our_tol": em_our_tol, "em_max_iter": em_max_iter, "support": SUPPORT, "simulation_seed": SIM_SEED,
        },
        "truth": truths,
        "cases": [asdict(c) for c in cases],
        "goals": [asdict(g) for g in goals],
    }
    write_json_atomically(out.expanduser().resolve(), payload)
    print(f"results written to {out}")


if __name__ == "__main__":
    app()
