"""Exponential Hawkes: ``tpp`` beside tick 0.8.0.2 on the same events, in one run, with ratios.

What it measures
----------------
Two multivariate exponential Hawkes settings, kernel ``phi_ij(t) = A[i, j] * decay * exp(-decay t)``
(row i = excited type, column j = exciting type, tick's convention and ours):

* ``k2``:  baseline [.5, .3], adjacency [[.3, .1], [.2, .4]], decay 2;
* ``k10``: a sparse adjacency drawn with a fixed seed, spectral radius 0.6, some row sums above 1,
  baselines drawn in [0.1, 0.5], decay 2.

For each setting and size (about 1e5 and 1e6 events; the window ``t_end`` is chosen from the
stationary rate ``(I - A)^{-1} mu``) one sequence is simulated with OUR exact sampler (timed), and the
SAME events go to both libraries:

* tick ``HawkesExpKern(decay, gofit="likelihood" | "least-squares", penalty="none")`` with the
  true decay fixed, run to ``tol=1e-10`` (max_iter 1000) like ours: at tick's default tol 1e-5 its
  likelihood fit stopped after one iteration on 1e6 events, far from the maximum. A row
  "likelihood, tick defaults" (tol 1e-5, max_iter 100) is shown beside it, not compared. When
  tick's likelihood fit fails from its default start ("The sum of the influence on someone cannot
  be negative") it is started from its own least-squares fit, then, if that fails too, from the
  same start with ``step=1.0``; the notes say which start was used;
* ours ``ExpHawkes(K, decay=2.0).fit(batch, objective="likelihood" | "least-squares")``;
* ours with the decay learned, ``ExpHawkes(K, decay=None).fit(batch)``.

Reported per fit: wall seconds (best of ``--repeats`` runs below 500k events, of
``--repeats-large`` runs above), the ratio ours/tick, events per second, relative errors of the
baseline (2-norm) and adjacency (Frobenius) against the truth, and the log-likelihood of every
solution, tick's included, under OUR exact likelihood
(``ExpHawkes.from_params(b, A, decay).log_likelihood(batch).sum()``), shown relative to the
truth's. Goals (printed as PASS/FAIL): likelihood ours/tick <= 0.5, least squares <= 1.0, learned
decay on 1e6 events <= 2 s (K=2) and <= 6 s (K=10), simulation of 1e6 events <= 0.25 s.

How it runs
-----------
tick is never installed into the project's environment: the script creates (once, then reuses)
a virtual environment ``<scratch>/tick-venv`` (default scratch ``~/.cache/tpp-sde/bench``) with
``pip install tick==0.8.0.2 numpydoc six`` (tick needs both and declares neither), writes a small
worker script there, and runs the tick side as a subprocess, passing events through ``.npz`` files
in the scratch folder and getting fitted parameters and timings back as JSON. Every process runs
single-threaded (OMP/MKL/OPENBLAS/NUMBA threads = 1, ``torch.set_num_threads(1)``): two thread
pools on two cores made runs about 10x slower. Our code compiles with numba: one small warm-up of
every timed call runs first, so compile time is not counted (it is printed separately).

Usage::

    .venv/bin/python benchmarks/hawkes_vs_tick.py --quick          # 1e5 events only
    .venv/bin/python benchmarks/hawkes_vs_tick.py                  # 1e5 and 1e6 events
    .venv/bin/python benchmarks/hawkes_vs_tick.py --sizes 2e5 --settings k10 --repeats 5

Results: a table on stdout and ``--out`` (default ``benchmarks/results/hawkes_vs_tick.json``).
Caveat: tick's learners take each realization's window to end at its last event (their ``fit``
has no ``end_times``), ours at ``t_end``; on these sizes the difference is one inter-event gap.
"""

# ruff: noqa: E402  (the thread variables below must be set before numpy/torch/numba are imported)
from __future__ import annotations

import os

from _bench import SINGLE_THREAD_ENV, base_environment, reproduce_command, write_json_atomically  # sets the threads

import json
import platform
import shutil
import subprocess
import sys
import time
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
from tpp.hawkes import ExpHawkes

torch.set_num_threads(1)

TICK_REQUIREMENTS = ("tick==0.8.0.2", "numpydoc", "six")
DEFAULT_SCRATCH = Path("~/.cache/tpp-sde/bench").expanduser()
DEFAULT_OUT = REPO / "benchmarks" / "results" / "hawkes_vs_tick.json"
LARGE = 500_000  # sizes from here on are timed --repeats-large times
WARMUP_EVENTS = 2_000
SIM_SEED = 1

# Goals from the issue: (what, threshold). Ratios are ours / tick.
GOAL_LIKELIHOOD_RATIO = 0.5
GOAL_LEAST_SQUARES_RATIO = 1.0
GOAL_LEARNED_DECAY_SECONDS = {2: 2.0, 10: 6.0}  # on 1e6 events, by number of marks
GOAL_SIMULATION_SECONDS = 0.25  # 1e6 events
GOAL_SIZE = 1_000_000


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Setting:
    """A true exponential Hawkes process: ``lambda_i = mu_i + sum_j A_ij decay e^{-decay t}``."""

    name: str
    baseline: np.ndarray  # [K]
    adjacency: np.ndarray  # [K, K], row = excited type, column = exciting type
    decay: float

    @property
    def num_marks(self) -> int:
        return int(self.baseline.size)

    @property
    def stationary_rate(self) -> np.ndarray:
        """Mean event rate per type, ``(I - A)^{-1} mu`` (the kernels integrate to ``A``)."""
        return np.linalg.solve(np.eye(self.num_marks) - self.adjacency, self.baseline)

    @property
    def spectral_radius(self) -> float:
        return float(np.abs(np.linalg.eigvals(self.adjacency)).max())

    def t_end_for(self, num_events: int) -> float:
        return float(num_events / self.stationary_rate.sum())


def setting_k2() -> Setting:
    return Setting(
        name="k2",
        baseline=np.array([0.5, 0.3]),
        adjacency=np.array([[0.3, 0.1], [0.2, 0.4]]),
        decay=2.0,
    )


def setting_k10(seed: int = 0, density: float = 0.25, radius: float = 0.6) -> Setting:
    """Sparse 10-type setting: self-excitation on the diagonal, ~25% of entries non-zero, rows of
    very different strength (so some row sums exceed 1), scaled to spectral radius ``radius``."""
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
    return Setting(name="k10", baseline=baseline, adjacency=adjacency, decay=2.0)


SETTINGS: dict[str, Callable[[], Setting]] = {"k2": setting_k2, "k10": setting_k10}


# --------------------------------------------------------------------------- results
@dataclass
class FitResult:
    """One fit of one library on one data set; parameters are plain lists for JSON."""

    library: str  # "tpp" | "tick"
    fit: str  # "likelihood" | "least-squares" | "likelihood, decay learned"
    seconds: float | None  # best of the timed runs
    runs: list[float] = field(default_factory=list)
    baseline: list[float] | None = None
    adjacency: list[list[float]] | None = None
    decay: float | None = None
    note: str = ""
    error: str | None = None
    # filled by evaluate():
    ratio_to_tick: float | None = None
    events_per_second: float | None = None
    baseline_rel_error: float | None = None
    adjacency_rel_error: float | None = None
    decay_rel_error: float | None = None
    adjacency_rel_diff_to_tick: float | None = None
    log_likelihood: float | None = None
    log_likelihood_minus_truth: float | None = None


@dataclass
class Case:
    """One (setting, size): the simulated data and every fit on it."""

    setting: str
    num_marks: int
    target_events: int
    num_events: int
    t_end: float
    simulation_seconds: float
    simulation_runs: list[float]
    log_likelihood_truth: float
    fits: list[FitResult]


# --------------------------------------------------------------------------- timing helpers
def best_of(repeats: int, call: Callable[[], Any]) -> tuple[Any, list[float]]:
    """Run ``call`` ``repeats`` times; return the last result and every wall time (seconds)."""
    runs: list[float] = []
    result = None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = call()
        runs.append(time.perf_counter() - start)
    return result, runs


def repeats_for(num_events: int, repeats: int, repeats_large: int) -> int:
    return repeats if num_events < LARGE else repeats_large


# --------------------------------------------------------------------------- our side
def true_model(setting: Setting) -> ExpHawkes:
    return ExpHawkes.from_params(setting.baseline, setting.adjacency, setting.decay)


def simulate(setting: Setting, num_events: int, seed: int, repeats: int) -> tuple[EventBatch, list[float]]:
    """One sequence of about ``num_events`` events on ``[0, t_end]`` from our exact sampler."""
    model = true_model(setting)
    t_end = setting.t_end_for(num_events)
    batch, runs = best_of(repeats, lambda: model.sample(1, t_end, generator=seed))
    return batch, runs


def our_log_likelihood(batch: EventBatch, baseline: Any, adjacency: Any, decay: float) -> float:
    """Exact log-likelihood of given parameters on ``batch`` (summed over sequences), in nats."""
    model = ExpHawkes.from_params(np.asarray(baseline, float), np.asarray(adjacency, float), float(decay))
    with torch.no_grad():
        return float(model.log_likelihood(batch).sum())


def fit_ours(batch: EventBatch, num_marks: int, decay: float | None, objective: str, repeats: int) -> FitResult:
    """Time ``ExpHawkes(K, decay).fit(batch, objective)``; ``decay=None`` learns the decay."""
    name = objective if decay is not None else f"{objective}, decay learned"
    try:
        model, runs = best_of(
            repeats,
            lambda: ExpHawkes(num_marks, decay=decay).fit(batch, objective=objective),
        )
    except Exception as err:  # noqa: BLE001 - report and go on: one broken fit must not hide the others
        return FitResult("tpp", name, None, error=f"{type(err).__name__}: {err}")
    return FitResult(
        "tpp",
        name,
        min(runs),
        runs,
        baseline=np.asarray(model.baseline_, float).tolist(),
        adjacency=np.asarray(model.adjacency_, float).tolist(),
        decay=float(model.decay_),
        note=describe_our_fit(getattr(model, "fit_result_", None)),
    )


def describe_our_fit(result: Any) -> str:
    """``"13 iterations, converged"`` from the fit record our estimator keeps, where it has one."""
    if not isinstance(result, dict):
        return ""
    parts = []
    if "iterations" in result:
        parts.append(f"{result['iterations']} iterations")
    if "evaluations" in result and result.get("evaluations") != result.get("iterations"):
        parts.append(f"{result['evaluations']} evaluations")
    if "converged" in result:
        parts.append("converged" if result["converged"] else f"NOT converged ({result.get('message', '')})")
    return ", ".join(parts)


def warm_up_ours(setting: Setting) -> float:
    """Compile (numba) every call we time, on a small sample; return the seconds it took."""
    start = time.perf_counter()
    model = true_model(setting)
    batch = model.sample(1, setting.t_end_for(WARMUP_EVENTS), generator=12345)
    for decay, objective in (
        (setting.decay, "likelihood"),
        (setting.decay, "least-squares"),
        (None, "likelihood"),
    ):
        ExpHawkes(setting.num_marks, decay=decay).fit(batch, objective=objective)
    our_log_likelihood(batch, setting.baseline, setting.adjacency, setting.decay)
    return time.perf_counter() - start


# --------------------------------------------------------------------------- tick side
TICK_WORKER = r'''
"""tick side of tpp's benchmarks/hawkes_vs_tick.py, run in tick's own venv (written there by it).

usage: python tick_worker.py JOB.json
JOB names the .npz of events, the fits to run (name, gofit, tol, max_iter) and where to write
the results (JSON: best wall seconds, every run, fitted parameters, iterations, a note).
"""
import json
import os
import sys
import time

import numpy as np
import tick
from tick.hawkes import HawkesExpKern

NEGATIVE_INFLUENCE = "cannot be negative"  # tick's message when a likelihood trial point is infeasible


def to_tick_events(times, marks, offsets, num_marks):
    """Flat events -> tick's layout: one list of K arrays per realization (one list if only one)."""
    realizations = []
    for a, b in zip(offsets[:-1], offsets[1:]):
        t, m = times[a:b], marks[a:b]
        realizations.append([np.ascontiguousarray(t[m == k], dtype=np.float64) for k in range(num_marks)])
    return realizations[0] if len(realizations) == 1 else realizations


def timed_fits(make, events, start, repeats):
    runs, learner = [], None
    for _ in range(max(1, repeats)):
        learner = make()
        t0 = time.perf_counter()
        learner.fit(events, start=start)
        runs.append(time.perf_counter() - t0)
    return learner, runs


def n_iter(learner):
    try:
        return int(learner._solver_obj.history.last_values["n_iter"])
    except Exception:
        return None


def record(learner, runs, note):
    return {
        "seconds": min(runs),
        "runs": runs,
        "baseline": np.asarray(learner.baseline, float).tolist(),
        "adjacency": np.asarray(learner.adjacency, float).tolist(),
        "n_iter": n_iter(learner),
        "note": note,
    }


def short(err):
    return "%s: %s" % (type(err).__name__, str(err).strip().split(".")[0])


def fit_likelihood(make, events, ls, ls_seconds, repeats):
    """The likelihood fit from the first start that tick survives.

    tick's solver (agd with line search) stops with "The sum of the influence on someone cannot
    be negative" when a trial point puts an intensity at 0. Tried in order: tick's default start
    (all ones); the least-squares solution (what tick's users are told to do); the same start with
    step=1.0 (tick's own first step is then not used). Only the start that works is timed.
    """
    attempts = [("default start", None, None)]
    if ls is not None:
        start = np.concatenate([np.asarray(ls.baseline, float), np.asarray(ls.adjacency, float).ravel()])
        attempts += [("least-squares start", start, None), ("least-squares start with step=1", start, 1.0)]
    failed = []
    for label, start, step in attempts:
        try:
            learner, runs = timed_fits(make(step), events, start, repeats)
        except RuntimeError as err:
            if NEGATIVE_INFLUENCE not in str(err):
                return {"error": "%s (%s)" % (short(err), label)}
            failed.append(label)
            continue
        note = label
        if failed:
            note = "%s failed ('%s'); used %s" % (" and ".join(failed), NEGATIVE_INFLUENCE, label)
        if start is not None:
            note += " (the least-squares fit's %.3g s not counted)" % ls_seconds
        return record(learner, runs, note)
    return {"error": "every start failed ('%s'): %s" % (NEGATIVE_INFLUENCE, ", ".join(failed))}


def fit_all(events, decay, penalty, fits, repeats):
    """Run the job's fits: least-squares ones first (their solution is the likelihood's start)."""
    def make(fit):
        return lambda step=None: (lambda: HawkesExpKern(
            decay, gofit=fit["gofit"], penalty=penalty, tol=fit["tol"], max_iter=fit["max_iter"],
            step=step, verbose=False))

    out, ls, ls_seconds = {}, None, 0.0
    for fit in sorted(fits, key=lambda f: f["gofit"] != "least-squares"):
        if fit["gofit"] == "least-squares":
            try:
                learner, runs = timed_fits(make(fit)(), events, None, repeats)
                out[fit["name"]] = record(learner, runs, "")
                if ls is None:
                    ls, ls_seconds = learner, min(runs)
            except Exception as err:
                out[fit["name"]] = {"error": short(err)}
        else:
            try:
                out[fit["name"]] = fit_likelihood(make(fit), events, ls, ls_seconds, repeats)
            except Exception as err:
                out[fit["name"]] = {"error": short(err)}
    return out


def main(job_path):
    with open(job_path) as f:
        job = json.load(f)
    data = np.load(job["data"])
    num_marks = int(data["num_marks"])
    times, marks, offsets = data["times"], data["marks"], data["seq_offsets"]
    events = to_tick_events(times, marks, offsets, num_marks)
    # Warm-up on the first events, so one-off costs (first calls, allocations) are not timed.
    n_warm = min(int(job["warmup_events"]), int(offsets[1]))
    warm = to_tick_events(times[:n_warm], marks[:n_warm], np.array([0, n_warm]), num_marks)
    fit_all(warm, job["decay"], job["penalty"], job["fits"], 1)
    results = {
        "tick_version": tick.__version__,
        "numpy_version": np.__version__,
        "python": sys.version.split()[0],
        "fits": fit_all(events, job["decay"], job["penalty"], job["fits"], job["repeats"]),
    }
    tmp = job["out"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f)
    os.replace(tmp, job["out"])


if __name__ == "__main__":
    main(sys.argv[1])
'''


def single_thread_env() -> dict[str, str]:
    return {**os.environ, **SINGLE_THREAD_ENV}


def ensure_tick_venv(scratch: Path) -> Path:
    """Create ``<scratch>/tick-venv`` with tick once (a stamp file marks a finished install)."""
    venv = scratch / "tick-venv"
    python = venv / "bin" / "python"
    stamp = venv / ".tpp-bench-installed"
    wanted = " ".join(TICK_REQUIREMENTS)
    if stamp.exists() and stamp.read_text().strip() == wanted and python.exists():
        return python
    if not (3, 11) <= sys.version_info[:2] <= (3, 13):
        raise SystemExit(f"tick 0.8.0.2 has wheels for CPython 3.11-3.13 only; this is {platform.python_version()}")
    if venv.exists():
        shutil.rmtree(venv)  # a half-made venv from an interrupted install
    print(
        f"creating {venv} and installing {wanted} (once; reused by later runs) ...",
        flush=True,
    )
    scratch.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    log = scratch / "tick-venv-install.log"
    with log.open("w") as f:
        done = subprocess.run(
            [str(python), "-m", "pip", "install", *TICK_REQUIREMENTS],
            check=False,
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        raise SystemExit(f"pip install {wanted} failed; see {log}")
    subprocess.run(
        [
            str(python),
            "-c",
            "from tick.hawkes import HawkesExpKern, SimuHawkesExpKernels",
        ],
        check=True,
        env=single_thread_env(),
    )
    stamp.write_text(wanted + "\n")
    return python


def tick_version(python: Path) -> str:
    done = subprocess.run(
        [str(python), "-c", "import tick; print(tick.__version__)"],
        capture_output=True,
        text=True,
        check=True,
        env=single_thread_env(),
    )
    return done.stdout.strip()


@dataclass(frozen=True)
class TickOptions:
    """How tick's learners are built: ``HawkesExpKern(decay, penalty=, tol=, max_iter=)``, solver agd.

    ``tol``/``max_iter`` are for the fits compared with ours: tick's default tol (1e-5, relative
    change of the objective) stopped its likelihood fit after one iteration from the least-squares
    start on 1e6 events, 13 nats short of the maximum on K=10, so the compared fits run to the
    tolerance ours uses; a row with tick's defaults is shown beside them.
    """

    penalty: str = "none"  # positivity only: the plain MLE / least squares, as ours
    tol: float = 1e-10
    max_iter: int = 1000


TICK_DEFAULT_TOL, TICK_DEFAULT_MAX_ITER = 1e-5, 100
TICK_DEFAULTS_FIT = "likelihood, tick defaults"


def tick_fits(options: TickOptions) -> list[dict[str, Any]]:
    """The fits the tick worker runs: name (matched to ours by name), gofit, tol, max_iter."""
    return [
        {
            "name": "likelihood",
            "gofit": "likelihood",
            "tol": options.tol,
            "max_iter": options.max_iter,
        },
        {
            "name": "least-squares",
            "gofit": "least-squares",
            "tol": options.tol,
            "max_iter": options.max_iter,
        },
        {
            "name": TICK_DEFAULTS_FIT,
            "gofit": "likelihood",
            "tol": TICK_DEFAULT_TOL,
            "max_iter": TICK_DEFAULT_MAX_ITER,
        },
    ]


def fit_tick(
    python: Path,
    scratch: Path,
    batch: EventBatch,
    setting: Setting,
    repeats: int,
    options: TickOptions,
) -> list[FitResult]:
    """Run tick's fits on ``batch`` in tick's venv (a subprocess); events go through an .npz."""
    work = scratch / "work"
    work.mkdir(parents=True, exist_ok=True)
    worker = work / "tick_worker.py"
    worker.write_text(TICK_WORKER.lstrip())
    tag = f"{setting.name}-{batch.num_events}"
    data_path, job_path, out_path = (
        work / f"{tag}.npz",
        work / f"{tag}.job.json",
        work / f"{tag}.out.json",
    )
    np.savez(data_path, **batch.to_flat(), num_marks=setting.num_marks)
    out_path.unlink(missing_ok=True)
    fits = tick_fits(options)
    job = {
        "data": str(data_path),
        "out": str(out_path),
        "decay": setting.decay,
        "penalty": options.penalty,
        "fits": fits,
        "repeats": repeats,
        "warmup_events": WARMUP_EVENTS,
    }
    job_path.write_text(json.dumps(job))
    done = subprocess.run([str(python), str(worker), str(job_path)], check=False, env=single_thread_env())
    if done.returncode != 0 or not out_path.exists():
        message = f"tick worker exited with {done.returncode}; inputs kept: {job_path}"
        return [FitResult("tick", fit["name"], None, error=message) for fit in fits]
    answers = json.loads(out_path.read_text())["fits"]
    for path in (
        data_path,
        job_path,
        out_path,
    ):  # keep the scratch folder small; kept on failure
        path.unlink(missing_ok=True)
    results = []
    for fit in fits:
        r = answers[fit["name"]]
        if "error" in r:
            results.append(FitResult("tick", fit["name"], None, error=r["error"]))
            continue
        note = f"{r['note']}; tol {fit['tol']:g}: {r['n_iter']} iterations (max_iter {fit['max_iter']})".lstrip("; ")
        results.append(
            FitResult(
                "tick",
                fit["name"],
                r["seconds"],
                r["runs"],
                baseline=r["baseline"],
                adjacency=r["adjacency"],
                decay=setting.decay,
                note=note,
            )
        )
    return results


# --------------------------------------------------------------------------- evaluation and report
def relative_error(estimate: Any, truth: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(estimate, float) - truth) / np.linalg.norm(truth))


def evaluate(batch: EventBatch, setting: Setting, fits: list[FitResult], ll_truth: float) -> None:
    """Fill errors, ratios and our exact log-likelihood into every fit, in place."""
    tick_by_fit = {f.fit: f for f in fits if f.library == "tick" and f.error is None}
    for f in fits:
        if f.error is not None:
            continue
        f.events_per_second = batch.num_events / f.seconds
        f.baseline_rel_error = relative_error(f.baseline, setting.baseline)
        f.adjacency_rel_error = relative_error(f.adjacency, setting.adjacency)
        f.decay_rel_error = abs(f.decay - setting.decay) / setting.decay
        f.log_likelihood = our_log_likelihood(batch, f.baseline, f.adjacency, f.decay)
        f.log_likelihood_minus_truth = f.log_likelihood - ll_truth
        twin = tick_by_fit.get(f.fit)
        if f.library == "tpp" and twin is not None:
            f.ratio_to_tick = f.seconds / twin.seconds
            f.adjacency_rel_diff_to_tick = relative_error(f.adjacency, np.asarray(twin.adjacency, float))


def run_case(
    setting: Setting,
    target: int,
    tick_python: Path,
    scratch: Path,
    repeats: int,
    repeats_large: int,
    tick_options: TickOptions,
) -> Case:
    n_rep = repeats_for(target, repeats, repeats_large)
    batch, sim_runs = simulate(setting, target, SIM_SEED, max(n_rep, repeats))
    print(
        f"[{setting.name}, {batch.num_events:,} events] simulated in {min(sim_runs):.3f} s; fitting "
        f"(best of {n_rep}) ...",
        flush=True,
    )
    fits = fit_tick(tick_python, scratch, batch, setting, n_rep, tick_options)
    for decay, objective in (
        (setting.decay, "likelihood"),
        (setting.decay, "least-squares"),
        (None, "likelihood"),
    ):
        fits.append(fit_ours(batch, setting.num_marks, decay, objective, n_rep))
    ll_truth = our_log_likelihood(batch, setting.baseline, setting.adjacency, setting.decay)
    evaluate(batch, setting, fits, ll_truth)
    return Case(
        setting=setting.name,
        num_marks=setting.num_marks,
        target_events=target,
        num_events=batch.num_events,
        t_end=float(batch.t_end[0]),
        simulation_seconds=min(sim_runs),
        simulation_runs=sim_runs,
        log_likelihood_truth=ll_truth,
        fits=fits,
    )


def results_table(cases: list[Case]) -> pd.DataFrame:
    rows = []
    for case in cases:
        for f in case.fits:
            rows.append(
                {
                    "setting": case.setting,
                    "events": case.num_events,
                    "fit": f.fit,
                    "lib": f.library,
                    "seconds": f.seconds,
                    "ours/tick": f.ratio_to_tick,
                    "events/s": f.events_per_second,
                    "err mu": f.baseline_rel_error,
                    "err A": f.adjacency_rel_error,
                    "decay": f.decay,
                    "A vs tick": f.adjacency_rel_diff_to_tick,
                    "ll - ll(truth)": f.log_likelihood_minus_truth,
                }
            )
    return pd.DataFrame(rows)


def fit_notes(cases: list[Case]) -> list[str]:
    """One line per fit that has something to say: how tick was started, our convergence, errors."""
    lines = []
    for case in cases:
        for f in case.fits:
            text = f"ERROR {f.error}" if f.error else f.note
            if text:
                lines.append(f"  {case.setting}, {case.num_events:,} events, {f.library} {f.fit}: {text}")
    return lines


def simulation_table(cases: list[Case]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "setting": c.setting,
                "events": c.num_events,
                "t_end": c.t_end,
                "seconds": c.simulation_seconds,
                "events/s": c.num_events / c.simulation_seconds,
                "ll(truth)/event": c.log_likelihood_truth / c.num_events,
            }
            for c in cases
        ]
    )


@dataclass
class Goal:
    what: str
    measured: float | None
    threshold: float | None
    passed: bool | None  # None: not measured in this run


def check_goals(cases: list[Case]) -> list[Goal]:
    goals: list[Goal] = []
    for case in cases:
        label = f"{case.setting}, {case.num_events:,} events"
        by = {(f.library, f.fit): f for f in case.fits}
        for fit, threshold in (
            ("likelihood", GOAL_LIKELIHOOD_RATIO),
            ("least-squares", GOAL_LEAST_SQUARES_RATIO),
        ):
            ratio = by[("tpp", fit)].ratio_to_tick
            goals.append(
                Goal(
                    f"{fit} ours/tick ({label})",
                    ratio,
                    threshold,
                    None if ratio is None else ratio <= threshold,
                )
            )
        if case.target_events >= GOAL_SIZE:
            learned = by[("tpp", "likelihood, decay learned")].seconds
            threshold = GOAL_LEARNED_DECAY_SECONDS.get(case.num_marks)
            if threshold is not None:
                goals.append(
                    Goal(
                        f"learned decay seconds ({label})",
                        learned,
                        threshold,
                        None if learned is None else learned <= threshold,
                    )
                )
            goals.append(
                Goal(
                    f"simulation seconds ({label})",
                    case.simulation_seconds,
                    GOAL_SIMULATION_SECONDS,
                    case.simulation_seconds <= GOAL_SIMULATION_SECONDS,
                )
            )
    if not any(c.target_events >= GOAL_SIZE for c in cases):
        for what in (
            "learned decay seconds on 1e6 events",
            "simulation seconds on 1e6 events",
        ):
            goals.append(Goal(what + " (not measured: no 1e6 size in this run)", None, None, None))
    return goals


def goals_table(goals: list[Goal]) -> pd.DataFrame:
    verdict = {True: "PASS", False: "FAIL", None: "n/a"}
    return pd.DataFrame(
        [
            {
                "goal": g.what,
                "measured": g.measured,
                "<=": g.threshold,
                "": verdict[g.passed],
            }
            for g in goals
        ]
    )


def environment(tick_python: Path) -> dict[str, Any]:
    return {**base_environment(), "tick": tick_version(tick_python), "tick_python": str(tick_python)}



def print_frame(title: str, frame: pd.DataFrame) -> None:
    print(f"\n{title}")
    with pd.option_context("display.width", 250, "display.max_columns", None, "display.max_colwidth", 120):
        print(frame.to_string(index=False, float_format=lambda x: f"{x:.4g}", na_rep="-"))


def parse_sizes(text: str) -> list[int]:
    """``"1e5,1e6"`` -> ``[100000, 1000000]``."""
    return [int(float(s)) for s in text.replace(" ", "").split(",") if s]


# --------------------------------------------------------------------------- CLI
app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


@app.command()
def main(
    quick: Annotated[bool, typer.Option(help="Only the 1e5-event sizes.")] = False,
    sizes: Annotated[str, typer.Option(help="Comma-separated target event counts.")] = "1e5,1e6",
    settings: Annotated[str, typer.Option(help="Comma-separated settings: k2, k10.")] = "k2,k10",
    scratch: Annotated[
        Path,
        typer.Option(help="Scratch folder outside the repo: tick's venv and exchange files."),
    ] = DEFAULT_SCRATCH,
    out: Annotated[Path, typer.Option(help="JSON results file (written atomically).")] = DEFAULT_OUT,
    repeats: Annotated[int, typer.Option(help="Timed runs per fit below 500k events (best is kept).")] = 3,
    repeats_large: Annotated[int, typer.Option(help="Timed runs per fit from 500k events on.")] = 1,
    tick_penalty: Annotated[
        str,
        typer.Option(help="tick penalty; 'none' = plain (positive) MLE / least squares, like ours."),
    ] = "none",
    tick_tol: Annotated[
        float,
        typer.Option(help="tick solver tol for the fits compared with ours (tick's default: 1e-5)."),
    ] = TickOptions.tol,
    tick_max_iter: Annotated[
        int,
        typer.Option(help="tick solver max_iter for the fits compared with ours (tick's default: 100)."),
    ] = TickOptions.max_iter,
) -> None:
    """Fit exponential Hawkes with tpp and tick on the same simulated events; print ratios."""
    scratch = scratch.expanduser().resolve()
    if scratch == REPO or REPO in scratch.parents:
        raise typer.BadParameter(f"--scratch must be outside the repository {REPO}")
    size_list = [int(1e5)] if quick else parse_sizes(sizes)
    chosen = [s.strip() for s in settings.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SETTINGS))
    if unknown:
        raise typer.BadParameter(f"unknown settings {unknown}; choose from {sorted(SETTINGS)}")

    tick_options = TickOptions(penalty=tick_penalty, max_iter=tick_max_iter, tol=tick_tol)
    print(f"reproduce: {reproduce_command(__file__)}")
    tick_python = ensure_tick_venv(scratch)
    env = environment(tick_python)
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items() if k not in ("tick_python", "threads_env")))
    print(f"threads: {' '.join(f'{k}={v}' for k, v in SINGLE_THREAD_ENV.items())}, torch.set_num_threads(1)")
    print(
        f"timing: wall seconds of fit(), best of {repeats} runs below {LARGE:,} events, of {repeats_large} "
        f"from there on; simulation: best of {repeats}+ runs. tick: penalty={tick_penalty!r}, "
        f"tol={tick_tol:g}, max_iter={tick_max_iter}, solver agd (its default); the row "
        f"'{TICK_DEFAULTS_FIT}' uses tol={TICK_DEFAULT_TOL:g}, max_iter={TICK_DEFAULT_MAX_ITER}."
    )

    cases: list[Case] = []
    truths: dict[str, dict[str, Any]] = {}
    for name in chosen:
        setting = SETTINGS[name]()
        truths[name] = {
            "baseline": setting.baseline.tolist(),
            "adjacency": setting.adjacency.tolist(),
            "decay": setting.decay,
            "spectral_radius": setting.spectral_radius,
            "row_sums": setting.adjacency.sum(1).tolist(),
            "stationary_rate": setting.stationary_rate.tolist(),
        }
        print(
            f"\nsetting {name}: K={setting.num_marks}, decay={setting.decay}, spectral radius "
            f"{setting.spectral_radius:.3f}, row sums {np.round(setting.adjacency.sum(1), 2).tolist()}, "
            f"{int((setting.adjacency > 0).sum())} non-zero of {setting.num_marks**2}, "
            f"total rate {setting.stationary_rate.sum():.3f}/unit time"
        )
        compile_seconds = warm_up_ours(setting)
        print(
            f"warm-up: one sample, each fit and a log-likelihood on ~{WARMUP_EVENTS:,} events took "
            f"{compile_seconds:.2f} s (numba compilation on first use; not counted in any timing below)"
        )
        for target in size_list:
            cases.append(
                run_case(
                    setting,
                    target,
                    tick_python,
                    scratch,
                    repeats,
                    repeats_large,
                    tick_options,
                )
            )

    print_frame(
        "simulation (our exact sampler, one sequence on [0, t_end]):",
        simulation_table(cases),
    )
    print_frame(
        "fits on the same events (err = relative 2-norm / Frobenius error vs truth; 'A vs tick' = ours vs tick's "
        "same-objective adjacency; ll - ll(truth) = our exact log-likelihood of the solution minus the truth's, nats):",
        results_table(cases),
    )
    print("\nnotes:\n" + "\n".join(fit_notes(cases)))
    goals = check_goals(cases)
    print_frame("goals:", goals_table(goals))
    measured = [g for g in goals if g.passed is not None]
    print(f"\n{sum(g.passed for g in measured)} of {len(measured)} measured goals pass")

    payload = {
        "benchmark": "hawkes_vs_tick",
        "command": reproduce_command(__file__),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": env,
        "options": {
            "sizes": size_list,
            "settings": chosen,
            "repeats": repeats,
            "repeats_large": repeats_large,
            "large_from_events": LARGE,
            "tick": asdict(tick_options),
            "simulation_seed": SIM_SEED,
        },
        "truth": truths,
        "cases": [asdict(c) for c in cases],
        "goals": [asdict(g) for g in goals],
    }
    write_json_atomically(out.expanduser().resolve(), payload)
    print(f"results written to {out}")


if __name__ == "__main__":
    app()
