"""Neural TPPs: ``tpp.neural`` beside EasyTPP 0.3.0, the same models on the same events, in one run.

What it measures
----------------
Data: a 3-type exponential Hawkes process (``tpp.hawkes.ExpHawkes``, baseline [.4, .25, .3],
adjacency [[.3, .2, 0], [.1, .4, .1], [0, .3, .3]], decay 1.5, spectral radius 0.58) simulated
by our exact sampler on windows ``[0, 25]`` (about 53 events per sequence): 900 training
sequences (about 48k events, the size PEERS.md's EasyTPP timings were taken on), 100 validation
and 200 test sequences, each from its own seed. ``--quick``: 250 / 50 / 100 sequences, 3 epochs.

Models (ours -> EasyTPP ``model_id``): RMTPP, NHP, THP, SAHP, AttNHP, IntensityFree, each built
with the same hidden size (``--hidden-size``, 32), and for the attention models 2 layers and 2
heads on both sides (our SAHP without its feed-forward block, as EasyTPP builds it:
``MATCHED_ARCHITECTURE``); both trained with the same batch size (64 sequences), epochs, learning rate
and seed, validation every epoch and the best validation epoch kept. Each side keeps its own
training recipe: ours ``tpp.fit`` (length-bucketed batches, AdamW with warm-up/cosine decay,
gradient clipping, Gauss-Legendre compensator with ``train_points`` = 8 nodes per interval in the
training loss, 16 for validation), EasyTPP its ``Runner`` (shuffled padded batches, Adam, the compensator on a fixed
``linspace`` of 20 points per interval, first event and survival term left out).

Reported per model and side:

* training events/s: events of the training set / the median wall seconds of one training epoch
  (the median over epochs is robust to the first epoch's one-off costs and to a busy neighbour;
  the mean over all epochs is in the JSON). Only the training loop is timed: ours, the per-epoch
  ``seconds`` of ``TrainResult.history``, which stop before the validation pass; EasyTPP, the wall
  time of each ``Runner.run_one_epoch(train_loader, TRAIN)`` call, timed by wrapping that method,
  so its validation passes and model saving are not counted. The same count of events on both
  sides (every event of every training sequence; EasyTPP's loss skips each first event but its
  forward pass reads it). Events per CPU second (``time.process_time`` over the same spans: ours
  through a stand-in for the trainer's progress bar, which wraps exactly the pass over the
  minibatches) are shown beside it: this machine is shared, and CPU time is what a busy neighbour
  does not inflate;
* peak memory: the resident set's high-water mark ``VmHWM`` of each side's own process
  (``/proc/self/status``), read before training (data and model built) and after the last
  training epoch, before any evaluation;
* test log-likelihood per event of both trained models scored by OUR integrator: 64
  Gauss-Legendre nodes on every inter-event interval, the survival term on ``(last event, t_end]``
  included. EasyTPP's trained weights are loaded into :class:`EasyTPPAdapter`, a
  ``tpp.neural.base.NeuralTPP`` (``encode`` + ``intensity_at``) that calls the EasyTPP model's own
  ``compute_intensities_at_sample_times`` (the method its thinning sampler uses), so our quadrature
  integrates its intensity. EasyTPP models have no intensity before the first event of a sequence;
  the adapter uses there a homogeneous Poisson process fitted to the training sequences' first
  events (rate per type = first events of that type / summed time to the first event). Because
  that part is not EasyTPP's, the score "after the first event" (the log-likelihood minus that of
  the window ``[t_start, t_1]`` with its one event, per event after the first) is shown beside it
  for both sides, and the true process's exact value of both for reference;
* EasyTPP's own test log-likelihood (its ``loglike`` on its coarse grid, first event and survival
  term left out), shown only to compare with ours: it is not the same quantity.

Goals (PASS/FAIL): ours >= 3x EasyTPP's training events/s for every model, at a test
log-likelihood (our integrator, whole window) no worse than EasyTPP's minus 0.01 nats/event.

How it runs
-----------
EasyTPP is never installed into the project's environment: the script creates (once, then reuses)
``<scratch>/easytpp-venv`` (default scratch ``~/.cache/tpp-sde/bench``) with ``pip install
torch==2.13.0`` then ``pip install easy-tpp==0.3.0``, writes the data there in EasyTPP's pickle
format (``dim_process`` and per split a list of sequences of ``{time_since_start,
time_since_last_event, type_event}``, times since ``t_start``, the first gap measured from
``t_start``) and a JSON config (YAML is a superset), and runs this same file as a worker in each
venv (``--worker JOB.json``): ours with the project's Python, EasyTPP's with its venv's Python,
offline (``HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1``), one after the other per model. Every
process is single-threaded (OMP/MKL/OPENBLAS/NUMBA threads = 1, ``torch.set_num_threads(1)``).

Usage::

    .venv/bin/python benchmarks/neural_vs_easytpp.py --quick
    .venv/bin/python benchmarks/neural_vs_easytpp.py                        # ~48k training events, 10 epochs
    .venv/bin/python benchmarks/neural_vs_easytpp.py --models RMTPP,THP --epochs 20

Results: tables on stdout and ``--out`` (default ``benchmarks/results/neural_vs_easytpp.json``).
"""

# ruff: noqa: E402  (the thread variables below must be set before numpy/torch are imported)
import os

from _bench import SINGLE_THREAD_ENV, base_environment, reproduce_command, write_json_atomically  # sets the threads

OFFLINE_ENV = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}

import json
import pickle
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout (and in EasyTPP's venv) without installing tpp
    sys.path.insert(0, str(REPO))

from tpp.events import EventBatch
from tpp.neural.base import NeuralTPP

torch.set_num_threads(1)

#: pip calls in order: torch first (the local CPU wheel), then EasyTPP; scipy because the adapter imports
#: ``tpp.neural.base`` (our integrator uses ``scipy.special``, the recurrences numba) in EasyTPP's venv.
EASYTPP_REQUIREMENTS = (("torch==2.13.0",), ("easy-tpp==0.3.0",), ("scipy",), ("numba",))
DEFAULT_SCRATCH = Path("~/.cache/tpp-sde/bench").expanduser()
DEFAULT_OUT = REPO / "benchmarks" / "results" / "neural_vs_easytpp.json"

#: ours (display name in the model table, :mod:`tpp.table`) -> EasyTPP ``model_id``
MODEL_IDS = {
    "RMTPP": "RMTPP",
    "NHP": "NHP",
    "THP": "THP",
    "SAHP": "SAHP",
    "AttNHP": "AttNHP",
    "IntensityFree": "IntensityFree",
}
#: Our constructor arguments that give the architecture EasyTPP builds (its SAHP layers are attention
#: only, without the feed-forward block of the authors' code; its THP's feed-forward is 2 H wide, as
#: our default). Same sizes on both sides is the point of the comparison.
MATCHED_ARCHITECTURE: dict[str, dict[str, Any]] = {"SAHP": {"feedforward_size": 0}}
#: EasyTPP models whose ``compute_intensities_at_sample_times`` takes absolute sample times, not gaps
EASYTPP_ABSOLUTE_SAMPLE_TIMES = {"AttNHP"}

# The true process (the same one the neural tests use).
TRUE_BASELINE = np.array([0.4, 0.25, 0.3])
TRUE_ADJACENCY = np.array([[0.3, 0.2, 0.0], [0.1, 0.4, 0.1], [0.0, 0.3, 0.3]])
TRUE_DECAY = 1.5
WINDOW = 25.0
SEEDS = {"train": 101, "val": 102, "test": 103}

GOAL_SPEEDUP = 3.0
GOAL_LL_TOLERANCE = 0.01  # nats/event: "equal" log-likelihood within this
EVAL_POINTS = 64


# --------------------------------------------------------------------------- shared helpers
def read_memory_kib() -> dict[str, int]:
    """``VmHWM`` (peak resident set) and ``VmRSS`` of this process, in KiB."""
    out: dict[str, int] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(line.split()[1])
    except OSError:  # not Linux: fall back to getrusage (KiB on Linux, bytes on macOS)
        import resource

        out["VmHWM"] = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return out


def first_event_prefix(batch: EventBatch) -> tuple[EventBatch, np.ndarray]:
    """Each sequence with an event cut to its first event, window ``[t_start, t_1]``; and which sequences had one."""
    flat = batch.to_flat()
    offsets = flat["seq_offsets"]
    has = np.diff(offsets) > 0
    starts = offsets[:-1][has]
    times = flat["times"][starts]
    prefix = EventBatch.from_flat(
        times, np.arange(times.size + 1), flat["t_start"][has], times, flat["marks"][starts],
        batch.num_marks, dtype=batch.dtype,
    )
    return prefix, has


@torch.no_grad()
def score(model: Any, batch: EventBatch, batch_size: int) -> dict[str, float]:
    """Test log-likelihood per event over the whole window, and per event after each sequence's first event.

    The second is ``(log L - log L(first event on [t_start, t_1])) / (events - sequences)``: what a
    model that conditions on the first event (as EasyTPP's do) is responsible for.
    """
    model.eval()
    # neural intensities integrated with EVAL_POINTS nodes per interval (an argument: the model is not changed)
    accuracy = {"num_points": EVAL_POINTS} if isinstance(model, NeuralTPP) else {}
    lengths = batch.lengths.cpu().numpy()
    order = np.argsort(lengths, kind="stable")
    total = after = 0.0
    for start in range(0, order.size, batch_size):
        part = batch[order[start : start + batch_size]]
        ll = float(model.log_likelihood(part, **accuracy).double().sum())
        prefix, has = first_event_prefix(part)
        first = float(model.log_likelihood(prefix, **accuracy).double().sum()) if has.any() else 0.0
        total += ll
        after += ll - first
    n = batch.num_events
    n_after = n - int((lengths > 0).sum())
    return {"ll_per_event": total / max(n, 1), "ll_after_first_per_event": after / max(n_after, 1)}


# --------------------------------------------------------------------------- the adapter
class EasyTPPAdapter(NeuralTPP):
    """A trained EasyTPP model behind our protocol, so that our integrator scores its intensity.

    ``encode`` lays the batch out as EasyTPP's data loader does (times since ``t_start``, gaps with
    the first one from ``t_start``, marks, right padding with mark ``K``); ``intensity_at`` groups
    the query times by the number of events before them and calls the EasyTPP model's own
    ``compute_intensities_at_sample_times(time_seqs, time_delta_seqs, type_seqs, sample_dtimes)``,
    whose entry ``[b, i, g]`` is the intensity at ``t_i + sample_dtimes[b, i, g]`` given events
    ``0 .. i`` (AttNHP takes absolute times there). Before the first event EasyTPP has no model:
    ``first_rates`` (a Poisson fit to the training sequences' first events) stands in.
    """

    def __init__(self, model: torch.nn.Module, num_marks: int, first_rates: Any, absolute_times: bool = False) -> None:
        super().__init__(num_marks, int(getattr(model, "hidden_size", 1) or 1), num_points=EVAL_POINTS)
        self.model = model
        self.absolute_times = bool(absolute_times)
        self.register_buffer("first_rates", torch.as_tensor(np.asarray(first_rates, float), dtype=torch.float64))

    def encode(self, batch: EventBatch) -> dict[str, torch.Tensor]:
        mask = batch.mask
        rel = batch.time - batch.t_start[:, None]
        last = rel.gather(1, (batch.lengths - 1).clamp_min(0)[:, None])
        rel = torch.where(mask, rel, last)  # finite padding; causal models never look at it
        prev = torch.cat([torch.zeros_like(rel[:, :1]), rel[:, :-1]], 1)
        gaps = torch.where(mask, rel - prev, torch.zeros_like(rel))
        types = torch.where(mask, batch.mark, torch.full_like(batch.mark, self.num_marks))
        while rel.shape[1] < 2:  # EasyTPP's NHP cannot run one event: padding positions after it (causal: unseen)
            tail = rel[:, -1:] if rel.shape[1] else torch.zeros_like(rel[:, :1].expand(len(batch), 1))
            rel, gaps = torch.cat([rel, tail], 1), torch.cat([gaps, torch.zeros_like(tail)], 1)
            types = torch.cat([types, torch.full((len(batch), 1), self.num_marks, dtype=types.dtype)], 1)
        return {"time": rel, "time32": rel.float(), "dt32": gaps.float(), "type": types}

    def intensity_at(self, batch: EventBatch, context: Any, index: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        B, T = index.shape
        K = self.num_marks
        out_dtype = t.dtype
        sorted_index, order = torch.sort(index, dim=1, stable=True)
        t_sorted = (t - batch.t_start[:, None]).gather(1, order)
        first = torch.searchsorted(sorted_index.contiguous(), sorted_index.contiguous(), side="left")
        rank = torch.arange(T, device=index.device).expand(B, T) - first
        G = int(rank.max()) + 1
        N = context["time"].shape[1]
        pos = (sorted_index - 1).clamp(0, N - 1)  # EasyTPP position of the last event before t
        anchor = context["time"].gather(1, pos)
        has_history = sorted_index >= 1
        value = t_sorted if self.absolute_times else (t_sorted - anchor).clamp_min(0.0)
        if self.absolute_times:  # unused slots: the event's own time (finite, harmless)
            grid = context["time"][:, :, None].expand(B, N, G).clone()
        else:
            grid = torch.zeros(B, N, G, dtype=value.dtype)
        b_idx = torch.arange(B)[:, None].expand(B, T)
        sel = has_history
        grid[b_idx[sel], pos[sel], rank[sel]] = value[sel]
        lam = self.model.compute_intensities_at_sample_times(
            context["time32"], context["dt32"], context["type"], grid.float()
        )
        if lam.shape[-1] > K:
            # IntensityFree's mark softmax runs over K + 1 classes, the padding mark included (its loss too):
            # the time model's hazard is the total intensity, the marks renormalised over the K real ones.
            lam = lam[..., :K] * (lam.sum(-1, keepdim=True) / lam[..., :K].sum(-1, keepdim=True))
        picked = lam[b_idx, pos, rank].to(out_dtype)  # [B, T, K]
        picked = torch.where(has_history[..., None], picked, self.first_rates.to(out_dtype).expand(B, T, K))
        out = torch.empty_like(picked)
        out.scatter_(1, order[..., None].expand(B, T, K), picked)
        return out


def first_event_rates(batch: EventBatch) -> list[float]:
    """Poisson rates per type for the time to the first event (MLE over the sequences; a type never first gets half a count)."""
    flat = batch.to_flat()
    offsets = flat["seq_offsets"]
    has = np.diff(offsets) > 0
    first = offsets[:-1][has]
    exposure = float((flat["times"][first] - flat["t_start"][has]).sum() + (flat["t_end"] - flat["t_start"])[~has].sum())
    counts = np.bincount(flat["marks"][first], minlength=batch.num_marks).astype(float)
    return (np.maximum(counts, 0.5) / max(exposure, 1e-12)).tolist()


# --------------------------------------------------------------------------- workers (run in a subprocess)
def load_split(path: str) -> EventBatch:
    data = np.load(path)
    return EventBatch.from_flat(
        data["times"], data["seq_offsets"], data["t_start"], data["t_end"], data["marks"], int(data["num_marks"])
    )


def worker_ours(job: dict[str, Any]) -> dict[str, Any]:
    from tpp import table
    from tpp.train import fit

    train, val, test = (load_split(job["data"][s]) for s in ("train", "val", "test"))
    # the model table's entry for our name (seeds torch before the weights are drawn, as torch.manual_seed did)
    model = table.build(job["model"], train, seed=job["seed"], hidden_size=job["hidden_size"],
                        **MATCHED_ARCHITECTURE.get(job["model"], {}))
    memory_before = read_memory_kib()
    result = fit(model, train, val, epochs=job["epochs"], batch_size=job["batch_size"], lr=job["lr"],
                 seed=job["seed"], progress=False)
    memory_after = read_memory_kib()
    seconds = [h["seconds"] for h in result.history]
    return {
        "epochs_run": len(result.history),
        "epoch_seconds": seconds,
        "epoch_cpu_seconds": [h["cpu_seconds"] for h in result.history],
        "events_per_epoch": train.num_events,
        "train_events_per_second_api": result.train_events_per_second,
        "best_epoch": result.best_epoch,
        "best_val_ll_per_event": result.best_val_ll_per_event,
        "memory_before_kib": memory_before,
        "memory_after_kib": memory_after,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "config": {**{k: getattr(model, k) for k in ("num_heads", "num_layers", "num_mixtures", "train_points")
                      if hasattr(model, k)}, **MATCHED_ARCHITECTURE.get(job["model"], {})},
        "test": score(model, test, job["eval_batch_size"]),
    }


def worker_easytpp(job: dict[str, Any]) -> dict[str, Any]:
    import easy_tpp
    from easy_tpp.config_factory import Config
    from easy_tpp.runner import Runner
    from easy_tpp.utils import RunnerPhase

    config = Config.build_from_yaml_file(job["config"], experiment_id=job["experiment_id"])
    runner = Runner.build_from_config(config)
    epochs: list[dict[str, float]] = []
    original = runner.run_one_epoch

    def timed_epoch(loader: Any, phase: Any) -> Any:
        if phase != RunnerPhase.TRAIN:
            return original(loader, phase)
        w0, c0 = time.perf_counter(), time.process_time()
        metrics = original(loader, phase)
        epochs.append({"seconds": time.perf_counter() - w0, "cpu_seconds": time.process_time() - c0,
                       "loglike": float(metrics["loglike"]), "num_events": int(metrics["num_events"])})
        return metrics

    runner.run_one_epoch = timed_epoch  # the training loop calls self.run_one_epoch
    memory_before = read_memory_kib()
    runner.train()
    memory_after = read_memory_kib()

    # The best validation epoch's weights, as EasyTPP saved them.
    saved = runner.runner_config.base_config.specs["saved_model_dir"]
    model = runner.model
    model.load_state_dict(torch.load(saved, map_location="cpu"))
    model.eval()

    # EasyTPP's own test log-likelihood (its coarse grid), for reference.
    runner.runner_config.data_config.test_dir = job["test_pickle"]
    own = runner.run_one_epoch(runner._data_loader.test_loader(), RunnerPhase.VALIDATE)

    test = load_split(job["data"]["test"])
    adapter = EasyTPPAdapter(model, test.num_marks, job["first_rates"], job["easytpp_model"] in EASYTPP_ABSOLUTE_SAMPLE_TIMES)
    return {
        "easy_tpp_version": getattr(easy_tpp, "__version__", "0.3.0"),
        "epochs_run": len(epochs),
        "epoch_seconds": [e["seconds"] for e in epochs],
        "epoch_cpu_seconds": [e["cpu_seconds"] for e in epochs],
        "events_per_epoch": job["train_events"],
        "easytpp_events_per_epoch": epochs[0]["num_events"] if epochs else None,
        "train_loglike": [e["loglike"] for e in epochs],
        "memory_before_kib": memory_before,
        "memory_after_kib": memory_after,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "own_test_loglike_per_event": float(own["loglike"]),
        "own_test_num_events": int(own["num_events"]),
        "test": score(adapter, test, job["eval_batch_size"]),
    }


def run_worker(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    result = worker_ours(job) if job["side"] == "ours" else worker_easytpp(job)
    result["python"] = platform.python_version()
    result["torch"] = torch.__version__
    tmp = job["out"] + ".tmp"
    Path(tmp).write_text(json.dumps(result, default=float))
    os.replace(tmp, job["out"])


# --------------------------------------------------------------------------- the main process
@dataclass
class SideResult:
    library: str  # "tpp" | "easytpp"
    events_per_second: float | None = None
    events_per_cpu_second: float | None = None
    events_per_second_all_epochs: float | None = None  # including the first epoch's one-off costs
    epochs_run: int | None = None
    train_seconds: float | None = None
    peak_rss_mib: float | None = None
    rss_before_training_mib: float | None = None
    test_ll_per_event: float | None = None
    test_ll_after_first_per_event: float | None = None
    own_test_loglike_per_event: float | None = None
    num_parameters: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class ModelResult:
    model: str
    easytpp_model_id: str
    ours: SideResult
    theirs: SideResult
    speedup: float | None = None
    speedup_cpu: float | None = None
    ll_difference: float | None = None  # ours - theirs, whole window, our integrator


def single_thread_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **SINGLE_THREAD_ENV, **OFFLINE_ENV, **(extra or {})}
    env.pop("PYTHONPATH", None)
    return env


def ensure_easytpp_venv(scratch: Path) -> Path:
    """Create ``<scratch>/easytpp-venv`` with EasyTPP once (a stamp file marks a finished install)."""
    venv = scratch / "easytpp-venv"
    python = venv / "bin" / "python"
    stamp = venv / ".tpp-bench-installed"
    wanted = " && ".join(" ".join(r) for r in EASYTPP_REQUIREMENTS)
    if stamp.exists() and stamp.read_text().strip() == wanted and python.exists():
        return python
    if venv.exists():
        shutil.rmtree(venv)  # a half-made venv from an interrupted install
    print(f"creating {venv} and installing {wanted} (once; reused by later runs) ...", flush=True)
    scratch.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    log = scratch / "easytpp-venv-install.log"
    with log.open("w") as f:
        for requirement in EASYTPP_REQUIREMENTS:
            done = subprocess.run([str(python), "-m", "pip", "install", *requirement], check=False,
                                  stdout=f, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                raise SystemExit(f"pip install {' '.join(requirement)} failed; see {log}")
    subprocess.run([str(python), "-c", "import easy_tpp.runner, easy_tpp.model"], check=True, env=single_thread_env())
    stamp.write_text(wanted + "\n")
    return python


def package_version(python: Path, module: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({module!r}))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False,
                          env=single_thread_env())
    return done.stdout.strip() or "?"


def true_process() -> Any:
    from tpp.hawkes import ExpHawkes

    return ExpHawkes.from_params(TRUE_BASELINE, TRUE_ADJACENCY, TRUE_DECAY)


def simulate(sizes: dict[str, int]) -> dict[str, EventBatch]:
    """Train/val/test sequences on ``[0, WINDOW]``; sequences with fewer than 2 events are dropped
    (EasyTPP's loss needs two; at about 53 events per sequence none is expected)."""
    process = true_process()
    out = {}
    for split, n in sizes.items():
        batch = process.sample(n, WINDOW, generator=SEEDS[split])
        keep = np.flatnonzero(batch.lengths.cpu().numpy() >= 2)
        out[split] = batch[keep] if keep.size < len(batch) else batch
    return out


def to_easytpp_sequences(batch: EventBatch) -> list[list[dict[str, float | int]]]:
    flat = batch.to_flat()
    offsets = flat["seq_offsets"]
    sequences = []
    for b in range(len(batch)):
        times = flat["times"][offsets[b] : offsets[b + 1]] - flat["t_start"][b]
        marks = flat["marks"][offsets[b] : offsets[b + 1]]
        gaps = np.diff(times, prepend=0.0)
        sequences.append([
            {"time_since_start": float(t), "time_since_last_event": float(g), "type_event": int(k)}
            for t, g, k in zip(times, gaps, marks)
        ])
    return sequences


def write_data(work: Path, data: dict[str, EventBatch]) -> dict[str, Any]:
    """``.npz`` per split (ours) and EasyTPP pickles (its split names: train, dev, test)."""
    work.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Any] = {"npz": {}, "pkl": {}}
    num_marks = next(iter(data.values())).num_marks
    for split, batch in data.items():
        npz = work / f"{split}.npz"
        np.savez(npz, **batch.to_flat(), num_marks=num_marks)
        paths["npz"][split] = str(npz)
        name = {"val": "dev"}.get(split, split)
        pkl = work / f"{name}.pkl"
        with pkl.open("wb") as f:
            pickle.dump({"dim_process": num_marks, name: to_easytpp_sequences(batch)}, f)
        paths["pkl"][split] = str(pkl)
    return paths


def easytpp_config(work: Path, model_id: str, paths: dict[str, Any], num_marks: int, options: dict[str, Any]) -> Path:
    """EasyTPP's experiment config (JSON, which its YAML loader reads); no test set during training."""
    model_specs: dict[str, Any] = {}
    if model_id == "IntensityFree":
        model_specs["num_mix_components"] = options["num_mixtures"]
    config = {
        "pipeline_config_id": "runner_config",
        "data": {
            "sim": {
                "data_format": "pkl",
                "train_dir": paths["pkl"]["train"],
                "valid_dir": paths["pkl"]["val"],
                "test_dir": None,
                "data_specs": {"num_event_types": num_marks, "pad_token_id": num_marks,
                               "padding_side": "right", "truncation_side": "right"},
            }
        },
        f"{model_id}_train": {
            "base_config": {"stage": "train", "backend": "torch", "dataset_id": "sim", "runner_id": "std_tpp",
                            "model_id": model_id, "base_dir": str(work / "easytpp-runs")},
            "trainer_config": {"batch_size": options["batch_size"], "max_epoch": options["epochs"], "shuffle": True,
                               "optimizer": "adam", "learning_rate": options["lr"], "valid_freq": 1,
                               "use_tfb": False, "metrics": ["acc", "rmse"], "seed": options["seed"], "gpu": -1},
            "model_config": {"hidden_size": options["hidden_size"], "time_emb_size": options["time_emb_size"],
                             "num_layers": options["num_layers"], "num_heads": options["num_heads"],
                             "loss_integral_num_sample_per_step": 20, "dropout_rate": 0.0, "use_ln": False,
                             "thinning": None, "model_specs": model_specs},
        },
    }
    path = work / f"easytpp-{model_id}.yaml"
    path.write_text(json.dumps(config, indent=1))
    return path


def run_side(python: Path, job: dict[str, Any], work: Path, tag: str, timeout: float) -> tuple[dict[str, Any] | None, str | None]:
    """Run this file as a worker under ``python``; returns (result, error)."""
    job_path, out_path, log_path = work / f"{tag}.job.json", work / f"{tag}.out.json", work / f"{tag}.log"
    job["out"] = str(out_path)
    job_path.write_text(json.dumps(job))
    out_path.unlink(missing_ok=True)
    with log_path.open("w") as log:
        try:
            done = subprocess.run([str(python), str(Path(__file__).resolve()), "--worker", str(job_path)],
                                  stdout=log, stderr=subprocess.STDOUT, env=single_thread_env(), cwd=str(work),
                                  timeout=timeout, check=False)
            code = done.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    if code != 0 or not out_path.exists():
        tail = log_path.read_text().strip().splitlines()[-6:]
        return None, f"worker exited with {code}; log {log_path}: " + " | ".join(tail)
    return json.loads(out_path.read_text()), None


def side_result(library: str, raw: dict[str, Any] | None, error: str | None) -> SideResult:
    if raw is None:
        return SideResult(library, error=error)
    per_epoch = raw["events_per_epoch"]
    wall, cpu = raw["epoch_seconds"], raw["epoch_cpu_seconds"]
    return SideResult(
        library,
        events_per_second=per_epoch / float(np.median(wall)) if wall else None,
        events_per_cpu_second=per_epoch / float(np.median(cpu)) if cpu else None,
        events_per_second_all_epochs=per_epoch * len(wall) / float(np.sum(wall)) if wall else None,
        epochs_run=raw["epochs_run"],
        train_seconds=float(np.sum(wall)),
        peak_rss_mib=raw["memory_after_kib"]["VmHWM"] / 1024,
        rss_before_training_mib=raw["memory_before_kib"]["VmHWM"] / 1024,
        test_ll_per_event=raw["test"]["ll_per_event"],
        test_ll_after_first_per_event=raw["test"]["ll_after_first_per_event"],
        own_test_loglike_per_event=raw.get("own_test_loglike_per_event"),
        num_parameters=raw.get("num_parameters"),
        raw=raw,
    )


def results_table(results: list[ModelResult], truth: dict[str, float]) -> Any:
    import pandas as pd

    rows = []
    for r in results:
        for side in (r.ours, r.theirs):
            rows.append({
                "model": r.model,
                "lib": side.library,
                "epochs": side.epochs_run,
                "train s": side.train_seconds,
                "events/s": side.events_per_second,
                "ev/cpu-s": side.events_per_cpu_second,
                "ours/theirs": r.speedup if side is r.ours else None,
                "ours/theirs CPU": r.speedup_cpu if side is r.ours else None,
                "peak RSS MiB": side.peak_rss_mib,
                "RSS before MiB": side.rss_before_training_mib,
                "test ll/ev": side.test_ll_per_event,
                "ll/ev after 1st": side.test_ll_after_first_per_event,
                "own ll/ev (their grid)": side.own_test_loglike_per_event,
                "params": side.num_parameters,
            })
    rows.append({"model": "truth", "lib": "ExpHawkes", "test ll/ev": truth["ll_per_event"],
                 "ll/ev after 1st": truth["ll_after_first_per_event"]})
    return pd.DataFrame(rows)


@dataclass
class Goal:
    what: str
    measured: float | None
    threshold: float | None
    passed: bool | None


def check_goals(results: list[ModelResult]) -> list[Goal]:
    goals = []
    for r in results:
        goals.append(Goal(f"{r.model}: events/s ours/EasyTPP >= {GOAL_SPEEDUP:g}", r.speedup, GOAL_SPEEDUP,
                          None if r.speedup is None else r.speedup >= GOAL_SPEEDUP))
        goals.append(Goal(f"{r.model}: test ll/event ours - EasyTPP >= -{GOAL_LL_TOLERANCE:g}", r.ll_difference,
                          -GOAL_LL_TOLERANCE, None if r.ll_difference is None else r.ll_difference >= -GOAL_LL_TOLERANCE))
    return goals


def goals_table(goals: list[Goal]) -> Any:
    import pandas as pd

    verdict = {True: "PASS", False: "FAIL", None: "n/a"}
    return pd.DataFrame([{"goal": g.what, "measured": g.measured, "threshold": g.threshold, "": verdict[g.passed]}
                         for g in goals])


def environment(easytpp_python: Path) -> dict[str, Any]:
    return {
        **base_environment(),
        "easy_tpp": package_version(easytpp_python, "easy-tpp"),
        "easytpp_torch": package_version(easytpp_python, "torch"),
        "easytpp_python": str(easytpp_python),
        "offline_env": OFFLINE_ENV,
    }


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None



def print_frame(title: str, frame: Any) -> None:
    import pandas as pd

    print(f"\n{title}")
    with pd.option_context("display.width", 250, "display.max_columns", None, "display.max_colwidth", 120):
        print(frame.to_string(index=False, float_format=lambda x: f"{x:.4g}", na_rep="-"))


def main_cli() -> None:
    from typing import Annotated

    import typer

    app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])

    @app.command()
    def main(
        quick: Annotated[bool, typer.Option(help="250/50/100 sequences (~13k training events), 3 epochs.")] = False,
        models: Annotated[str, typer.Option(help="Comma-separated models: " + ",".join(MODEL_IDS))] = ",".join(MODEL_IDS),
        epochs: Annotated[int | None, typer.Option(help="Training epochs, both sides (default 10; --quick 3).")] = None,
        train_sequences: Annotated[int | None, typer.Option(help="Training sequences on [0, 25] (default 900).")] = None,
        hidden_size: Annotated[int, typer.Option(help="Hidden size, both sides.")] = 32,
        batch_size: Annotated[int, typer.Option(help="Sequences per minibatch, both sides.")] = 64,
        lr: Annotated[float, typer.Option(help="Learning rate, both sides (ours: peak of its schedule).")] = 1e-2,
        seed: Annotated[int, typer.Option(help="Training seed, both sides.")] = 0,
        eval_batch_size: Annotated[int, typer.Option(help="Sequences per batch when scoring the test set.")] = 8,
        timeout: Annotated[float, typer.Option(help="Seconds before a worker is stopped.")] = 3600.0,
        scratch: Annotated[Path, typer.Option(help="Scratch folder outside the repo: EasyTPP's venv, data, runs.")]
        = DEFAULT_SCRATCH,
        out: Annotated[Path, typer.Option(help="JSON results file (written atomically).")] = DEFAULT_OUT,
    ) -> None:
        """Train each neural TPP with tpp and with EasyTPP on the same Hawkes events; print ratios and PASS/FAIL."""
        from tpp import table

        scratch = scratch.expanduser().resolve()
        if scratch == REPO or REPO in scratch.parents:
            raise typer.BadParameter(f"--scratch must be outside the repository {REPO}")
        chosen = [m.strip() for m in models.split(",") if m.strip()]
        unknown = sorted(set(chosen) - set(MODEL_IDS))
        if unknown:
            raise typer.BadParameter(f"unknown models {unknown}; choose from {list(MODEL_IDS)}")
        epochs = epochs or (3 if quick else 10)
        sizes = {"train": train_sequences or (250 if quick else 900), "val": 50 if quick else 100,
                 "test": 100 if quick else 200}

        print(f"reproduce: {reproduce_command(__file__)}")
        python = ensure_easytpp_venv(scratch)
        env = environment(python)
        print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items() if k not in ("threads_env", "offline_env")))
        print(f"threads: {' '.join(f'{k}={v}' for k, v in SINGLE_THREAD_ENV.items())}, torch.set_num_threads(1); "
              f"EasyTPP offline: {' '.join(f'{k}={v}' for k, v in OFFLINE_ENV.items())}")
        print(f"load average at start: {load_average()} on {os.cpu_count()} cores (a shared machine inflates wall times; "
              "events per CPU second are shown beside them)")

        data = simulate(sizes)
        work = scratch / "work" / "neural_vs_easytpp"
        if work.exists():
            shutil.rmtree(work)
        paths = write_data(work, data)
        process = true_process()
        truth = score(process, data["test"], 64)
        first_rates = first_event_rates(data["train"])
        print(f"data: {', '.join(f'{s} {len(b)} sequences / {b.num_events:,} events' for s, b in data.items())} "
              f"on [0, {WINDOW:g}]; true process test ll/event {truth['ll_per_event']:.4f} "
              f"(after the first event {truth['ll_after_first_per_event']:.4f}); first-event Poisson rates "
              f"{np.round(first_rates, 4).tolist()}")
        options = {"hidden_size": hidden_size, "batch_size": batch_size, "epochs": epochs, "lr": lr, "seed": seed,
                   "num_layers": 2, "num_heads": 2, "time_emb_size": 16, "num_mixtures": 8}
        print(f"training: {epochs} epochs, batch {batch_size} sequences, lr {lr:g}, hidden {hidden_size}, seed {seed}; "
              f"scoring: {EVAL_POINTS} Gauss-Legendre nodes per interval")

        results: list[ModelResult] = []
        for name in chosen:
            model_id = MODEL_IDS[name]
            common = {"model": name, "easytpp_model": model_id, "seed": seed, "hidden_size": hidden_size,
                      "batch_size": batch_size, "epochs": epochs, "lr": lr, "eval_batch_size": eval_batch_size,
                      "data": paths["npz"], "first_rates": first_rates, "train_events": data["train"].num_events}
            if name not in {s.display for s in table.specs("tpp")}:
                ours = SideResult("tpp", error=f"{name} is not in the model table (tpp.table) yet")
            else:
                print(f"[{name}] ours: training ...", flush=True)
                raw, error = run_side(Path(sys.executable), {**common, "side": "ours"}, work, f"ours-{name}", timeout)
                ours = side_result("tpp", raw, error)
            print(f"[{name}] EasyTPP {model_id}: training ...", flush=True)
            cfg = easytpp_config(work, model_id, paths, data["train"].num_marks, options)
            job = {**common, "side": "easytpp", "config": str(cfg), "experiment_id": f"{model_id}_train",
                   "test_pickle": paths["pkl"]["test"]}
            raw, error = run_side(python, job, work, f"easytpp-{name}", timeout)
            theirs = side_result("easytpp", raw, error)
            r = ModelResult(name, model_id, ours, theirs)
            if ours.events_per_second and theirs.events_per_second:
                r.speedup = ours.events_per_second / theirs.events_per_second
            if ours.events_per_cpu_second and theirs.events_per_cpu_second:
                r.speedup_cpu = ours.events_per_cpu_second / theirs.events_per_cpu_second
            if ours.test_ll_per_event is not None and theirs.test_ll_per_event is not None:
                r.ll_difference = ours.test_ll_per_event - theirs.test_ll_per_event
            for side in (ours, theirs):
                if side.error:
                    print(f"  {side.library}: ERROR {side.error}")
                else:
                    print(f"  {side.library}: {side.events_per_second:,.0f} events/s ({side.events_per_cpu_second:,.0f} "
                          f"per CPU s), peak RSS {side.peak_rss_mib:.0f} MiB, test ll/event {side.test_ll_per_event:.4f}")
            results.append(r)

        print_frame("training throughput, memory and test log-likelihood (our integrator, 64 nodes per interval; "
                    "'own ll/ev' = EasyTPP's own loglike on its grid, first event and survival term left out):",
                    results_table(results, truth))
        print(f"\nload average at end: {load_average()}")
        goals = check_goals(results)
        print_frame("goals:", goals_table(goals))
        measured = [g for g in goals if g.passed is not None]
        print(f"\n{sum(bool(g.passed) for g in measured)} of {len(measured)} measured goals pass")
        payload = {
            "benchmark": "neural_vs_easytpp",
            "command": reproduce_command(__file__),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "environment": env,
            "load_average_end": load_average(),
            "options": {**options, "quick": quick, "sizes": sizes, "window": WINDOW, "seeds": SEEDS,
                        "eval_points": EVAL_POINTS, "eval_batch_size": eval_batch_size},
            "truth": {"baseline": TRUE_BASELINE.tolist(), "adjacency": TRUE_ADJACENCY.tolist(), "decay": TRUE_DECAY,
                      "test": truth, "first_event_rates": first_rates},
            "data": {s: {"sequences": len(b), "events": b.num_events} for s, b in data.items()},
            "results": [asdict(r) for r in results],
            "goals": [asdict(g) for g in goals],
        }
        write_json_atomically(out.expanduser().resolve(), payload)
        print(f"results written to {out}")

    app()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        run_worker(sys.argv[2])
    else:
        main_cli()
