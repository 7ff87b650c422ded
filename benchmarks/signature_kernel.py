"""Signature kernel: ``sde.signature`` (torch; compiled CPU loops) and ``sde.jax.signature`` beside
pysiglib 4.0.0 on the same paths, one run.

What it measures
----------------
Per case (float64 random walks ``[N, L, D]``, increments ``N(0, 0.25 / L)`` per channel, seeded): wall
seconds, best of ``--repeats``, of

* ``gram``: the Gram matrix ``[N, M]`` (ours ``signature_kernel``, pysiglib ``sig_kernel_gram``);
* ``mmd+grad``: the unbiased MMD^2 and its gradient in ``X`` (ours ``signature_mmd(...).backward()``,
  pysiglib's ``torch_api.sig_mmd(...).backward()``);

for ours in torch on CPU (the compiled numba loops, the default there), ours in JAX (jitted, compile
excluded: the first call is a warm-up), our vectorised torch loop (the GPU path, run here on CPU for
reference, small cases only) and pysiglib (``n_jobs=1``). Reported: the ratios ours/pysiglib and the
largest relative difference of the values (both solve the same explicit scheme of Salvi et al. 2021 on
the same dyadic grid, so they agree to rounding, ~1e-13; the rbf case converts the bandwidth:
ours ``exp(-|x-y|^2 / (2 sigma^2))`` is pysiglib's ``RBFKernel(2 sigma^2)``).

How it runs
-----------
pysiglib is never installed into the project's environment: ``<scratch>/sigkernel-venv`` (default scratch
``~/.cache/tpp-sde/bench``; made once with ``pip install pysiglib==4.0.0``, which pulls its own torch)
runs a worker script as a subprocess on ``.npz`` paths and returns timings and values. One thread
everywhere (``benchmarks/_bench.py``).

    .venv/bin/python benchmarks/signature_kernel.py --scratch /work/scratch
    .venv/bin/python benchmarks/signature_kernel.py --cases gram-lin-o1 --repeats 5

Results: ``benchmarks/results/signature_kernel.json`` and ``.md``.
"""

from __future__ import annotations

from _bench import SINGLE_THREAD_ENV, base_environment, reproduce_command, write_json_atomically  # sets the threads

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

REPO = Path(__file__).resolve().parents[1]
from sde import signature
from sde.signature import signature_kernel, signature_mmd

torch.set_num_threads(1)

PYSIGLIB = "pysiglib==4.0.0"
DEFAULT_SCRATCH = Path("~/.cache/tpp-sde/bench").expanduser()
DEFAULT_OUT = REPO / "benchmarks" / "results" / "signature_kernel.json"
JAX_MEMORY_BYTES = 2 * 2**30  # the JAX twin's gradient is skipped where its scan residuals would pass this

# name: (what, N = M, L, D, dyadic order, static kernel, sigma, run our torch-loop (GPU path) here too)
CASES: dict[str, tuple[str, int, int, int, int, str, float, bool]] = {
    "gram-lin-o0": ("gram", 64, 64, 3, 0, "linear", 1.0, True),
    "gram-lin-o1": ("gram", 64, 64, 3, 1, "linear", 1.0, False),
    "gram-lin-o2-short": ("gram", 32, 32, 3, 2, "linear", 1.0, False),
    "gram-long-o0": ("gram", 8, 512, 2, 0, "linear", 1.0, False),
    "gram-rbf-o1": ("gram", 32, 32, 3, 1, "rbf", 1.0, True),
    "mmd+grad-lin-o1": ("mmd", 32, 32, 3, 1, "linear", 1.0, True),
    "mmd+grad-lin-o0-large": ("mmd", 128, 64, 3, 0, "linear", 1.0, False),
}

WORKER = r'''
import json, sys, time, warnings
import numpy as np
warnings.filterwarnings("ignore")
import torch
torch.set_num_threads(1)
import pysiglib

spec = json.load(open(sys.argv[1]))
data = np.load(spec["paths"])
X, Y = np.ascontiguousarray(data["X"]), np.ascontiguousarray(data["Y"])
kw = dict(dyadic_order=spec["order"], n_jobs=1)
if spec["static_kernel"] == "rbf":
    kw["static_kernel"] = pysiglib.RBFKernel(2.0 * spec["sigma"] ** 2)

def once():
    if spec["what"] == "gram":
        return np.asarray(pysiglib.sig_kernel_gram(X, Y, **kw)), None
    x = torch.tensor(X, requires_grad=True)
    mmd = pysiglib.torch_api.sig_mmd(x, torch.tensor(Y), **kw)
    mmd.backward()
    return np.asarray(mmd.detach().numpy()), x.grad.numpy()

best, out = float("inf"), None
for _ in range(spec["repeats"]):
    t0 = time.perf_counter()
    out = once()
    best = min(best, time.perf_counter() - t0)
np.savez(sys.argv[2] + ".npz", value=out[0], grad=np.zeros(0) if out[1] is None else out[1])
json.dump({"seconds": best, "version": pysiglib.__version__ if hasattr(pysiglib, "__version__") else "4.0.0"},
          open(sys.argv[2], "w"))
'''


def peer_python(scratch: Path) -> Path:
    """``<scratch>/sigkernel-venv`` with pysiglib 4.0.0 (created once)."""
    venv = scratch / "sigkernel-venv"
    python = venv / "bin" / "python3"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", PYSIGLIB], check=True)
    return python


def run_peer(python: Path, scratch: Path, name: str, spec: dict, X: np.ndarray, Y: np.ndarray) -> dict:
    """pysiglib's best time and its values (``value``, ``grad``) for one case, from its own venv."""
    work = scratch / "work" / "signature_kernel"
    work.mkdir(parents=True, exist_ok=True)
    (work / "worker.py").write_text(WORKER)
    np.savez(work / f"{name}.npz", X=X, Y=Y)
    (work / f"{name}.json").write_text(json.dumps(dict(spec, paths=str(work / f"{name}.npz"))))
    result = work / f"{name}.out.json"
    env = dict(os.environ, **SINGLE_THREAD_ENV)
    done = subprocess.run([str(python), str(work / "worker.py"), str(work / f"{name}.json"), str(result)],
                          capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    arrays = np.load(str(result) + ".npz")
    return dict(json.loads(result.read_text()), value=arrays["value"], grad=arrays["grad"])


def best_of(repeats: int, fn: Callable[[], Any]) -> tuple[Any, float]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def paths(n: int, length: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = rng.normal(scale=0.5 / np.sqrt(length), size=(n, length - 1, dim))
    return np.concatenate([np.zeros((n, 1, dim)), steps.cumsum(1)], axis=1)


def ours_torch(what: str, X: np.ndarray, Y: np.ndarray, options: dict) -> tuple[np.ndarray, np.ndarray | None]:
    if what == "gram":
        return signature_kernel(torch.as_tensor(X), torch.as_tensor(Y), **options).numpy(), None
    x = torch.tensor(X, requires_grad=True)
    mmd = signature_mmd(x, torch.as_tensor(Y), **options)
    mmd.backward()
    return mmd.detach().numpy(), x.grad.numpy()


def ours_torch_loop(what: str, X: np.ndarray, Y: np.ndarray, options: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """As :func:`ours_torch` by the vectorised anti-diagonal torch loop (the GPU path; autograd through the
    loop), forced on CPU."""
    compiled_applies = signature._compiled_applies
    signature._compiled_applies = lambda g: False
    try:
        return ours_torch(what, X, Y, options)
    finally:
        signature._compiled_applies = compiled_applies


def ours_jax(what: str, X: np.ndarray, Y: np.ndarray, options: dict) -> Callable[[], Any] | None:
    try:
        import jax
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    import sde.jax.signature as js

    if what == "gram":
        return lambda: np.asarray(js.signature_kernel(X, Y, **options).block_until_ready())
    grad = jax.jit(jax.value_and_grad(lambda x, y: js.signature_mmd(x, y, **options)))
    return lambda: [np.asarray(v.block_until_ready()) for v in grad(X, Y)]


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def markdown(rows: list[dict], command: str, env: dict) -> str:
    lines = ["# Signature kernel: sde.signature (torch CPU, compiled) and sde.jax.signature vs pysiglib 4.0.0", "",
             f"Command: `{command}`", "",
             f"Environment: Python {env['python']}, {env['cpu']} ({env['cpu_count']} cores, shared with other jobs), "
             f"one thread; torch {env['torch']}, numba {env['numba']}, jax {env.get('jax', '-')}; pysiglib in its own "
             "venv (its own torch).", "",
             "Seconds are best of the repeats; ratio = ours / pysiglib (below 1: ours faster). Values: the largest "
             "relative difference to pysiglib's (Gram entries; for mmd+grad the MMD^2 and the gradient's largest "
             "entry-wise difference relative to its largest entry).", "",
             "| case | N=M | L | D | order | kernel | ours torch s | pysiglib s | ratio | ours JAX s | JAX/pysiglib | "
             "torch loop (GPU path) s | value rel diff | grad rel diff | notes |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for r in rows:
        lines.append(f"| {r['case']} | {r['n']} | {r['length']} | {r['dim']} | {r['order']} | {r['static_kernel']} | "
                     f"{r['ours_seconds']:.4f} | {fmt(r['peer_seconds'], '.4f')} | {fmt(r['ratio'], '.2f')} | "
                     f"{fmt(r['jax_seconds'], '.4f')} | {fmt(r['jax_ratio'], '.2f')} | {fmt(r['torch_loop_seconds'], '.4f')} | "
                     f"{fmt(r['value_rel_diff'], '.1e')} | {fmt(r['grad_rel_diff'], '.1e')} | {r.get('jax_note') or ''} |")
    return "\n".join(lines) + "\n"


def main(
    cases: Annotated[str, typer.Option(help="Comma-separated cases (default: all): " + ", ".join(CASES))] = ",".join(CASES),
    repeats: Annotated[int, typer.Option(help="Best of this many runs (ours and the peer's).")] = 3,
    scratch: Annotated[Path, typer.Option(help="Scratch folder for the peer's venv and paths.")] = DEFAULT_SCRATCH,
    out: Annotated[Path, typer.Option(help="JSON results (the Markdown table goes beside it).")] = DEFAULT_OUT,
) -> None:
    scratch = scratch.expanduser()
    python = peer_python(scratch)
    command = reproduce_command(__file__)
    env = base_environment()
    env["pysiglib"] = PYSIGLIB
    try:
        import jax

        env["jax"] = jax.__version__
    except ImportError:
        env["jax"] = None  # not installed: the report says so
    print(command)
    print(json.dumps(env))
    rows = []
    for k, name in enumerate(cases.split(",")):
        what, n, length, dim, order, static_kernel, sigma, with_loop = CASES[name]
        X, Y = paths(n, length, dim, seed=2 * k), paths(n, length, dim, seed=2 * k + 1)
        options = {"dyadic_order": order, "static_kernel": static_kernel, "sigma": sigma}
        ours_torch(what, X[:2], Y[:2], options)  # numba: load the compiled loops outside the timing
        (value, grad), seconds = best_of(repeats, lambda: ours_torch(what, X, Y, options))
        peer = run_peer(python, scratch, name, {"what": what, "order": order, "static_kernel": static_kernel,
                                                "sigma": sigma, "repeats": repeats}, X, Y)
        row: dict[str, Any] = {"case": name, "what": what, "n": n, "length": length, "dim": dim, "order": order,
                               "static_kernel": static_kernel, "ours_seconds": seconds,
                               "peer_seconds": peer.get("seconds"), "peer_error": peer.get("error")}
        row["ratio"] = seconds / peer["seconds"] if "seconds" in peer else None
        row["value_rel_diff"] = rel_diff(value, peer["value"]) if "value" in peer else None
        row["grad_rel_diff"] = (float(np.max(np.abs(grad - peer["grad"])) / np.max(np.abs(peer["grad"])))
                                if grad is not None and "grad" in peer else None)
        # jax.grad keeps the scan's residuals, ~3 x pairs x (n + 1) x (n + m) values: skip what would not fit
        cells = (length - 1) << order
        residuals = 3 * (2 * n) ** 2 * (cells + 1) * 2 * cells if what == "mmd" else 0
        jax_call = ours_jax(what, X, Y, options) if residuals * 8 < JAX_MEMORY_BYTES else None
        row["jax_note"] = None if jax_call is not None else f"skipped: jax.grad residuals ~{residuals * 8 / 2**30:.0f} GiB"
        row["jax_seconds"] = row["jax_ratio"] = row["jax_vs_torch"] = None
        if jax_call is not None:
            jax_out = jax_call()  # compile
            _, row["jax_seconds"] = best_of(repeats, jax_call)
            row["jax_ratio"] = row["jax_seconds"] / peer["seconds"] if "seconds" in peer else None
            row["jax_vs_torch"] = rel_diff(jax_out if what == "gram" else jax_out[0], value)
        row["torch_loop_seconds"] = None
        if with_loop:
            (loop_value, loop_grad), row["torch_loop_seconds"] = best_of(1, lambda: ours_torch_loop(what, X, Y, options))
            row["torch_loop_vs_compiled"] = rel_diff(loop_value, value)
            if grad is not None:
                row["torch_loop_grad_vs_compiled"] = float(np.max(np.abs(loop_grad - grad)) / np.max(np.abs(grad)))
        rows.append(row)
        print(json.dumps(row), flush=True)
    text = markdown(rows, command, env)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(out, {"command": command, "environment": env, "rows": rows})
    out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    typer.run(main)
