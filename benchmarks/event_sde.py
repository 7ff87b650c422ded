"""Event SDEs for spiking networks: ``sde.jax.EventSDE`` beside eventax 0.1.0 on one LIF problem, and the
recovery of a neuron's input current by signature-kernel MMD on spike trains.

What it measures
----------------
1. ``lif``: one leaky integrate-and-fire neuron, ``v' = (mu - v) / tau`` from ``v = 0``, spike at ``v = theta``,
   reset to 0 (``mu = 1.5, tau = 1, theta = 1`` on ``[0, 10]``: spikes every ``tau log 3``). Ours:
   ``EventSDE(mode="threshold")`` (Tsit5, rtol = atol = 1e-10, Newton root tolerance 1e-12). eventax 0.1.0:
   ``EvNN(LIF, ic=mu, tmem=tau, thresh=theta, vreset=0)`` with the same solver, controller and root
   finder passed in (its defaults, Euler with dt 1e-3 and a 1e-2 Newton tolerance, are far coarser), run by
   ``spikes_until_t``. Both float64. Reported: spike times and their largest distance to the closed form and
   to each other; seconds per forward solve and per forward + gradient of the sum of spike times in ``mu``
   (eventax: in its bias current ``ic``; the gradient is ``sum_k k tau (1/mu - 1/(mu - theta))``), best of
   ``--repeats`` after a compiling call; compile seconds.
2. ``fit``: one stochastic neuron (``mode="intensity"``, ``lambda(v) = exp(5 (v - 1))``, ``sigma = 0.2``,
   Euler on a 1e-2 grid, ``[0, 5]``). Data: 64 trains with ``mu* = 1.2``. Model: ``mu`` from 0.8, Adam
   (lr 0.05) on the unbiased signature-kernel MMD^2 (:func:`sde.jax.events.spike_train_mmd`, rbf static
   kernel, counts scaled by 1/4) between 32 fresh model trains per step and 32 data trains, reverse-mode
   gradients through the event solver. Reported: the recovered ``mu`` (mean of the last 20 steps) and its
   relative error (goal: within 5%).

eventax is never installed in the project's environment: ``<scratch>/eventax-venv`` (``pip install
eventax==0.1.0``, which pulls its own jax, diffrax and equinox) runs a worker script as a subprocess.
If the venv is missing or the run fails, the JSON records why.

    .venv/bin/python benchmarks/event_sde.py --scratch /work/scratch
    .venv/bin/python benchmarks/event_sde.py --skip-fit      # the eventax comparison only

Results: ``benchmarks/results/event_sde.json`` and ``.md``.
"""

from __future__ import annotations

from _bench import base_environment, reproduce_command, write_json_atomically  # sets the threads

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "event_sde.json"
MU, TAU, THETA, T1, K = 1.5, 1.0, 1.0, 10.0, 10

EVENTAX_WORKER = r'''
import json, sys, time, math
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, equinox as eqx, diffrax as dfx, optimistix as optx
from importlib.metadata import version
from eventax.evnn import EvNN
from eventax.neuron_models import LIF
mu, tau, theta, t1, K, repeats = [float(a) for a in sys.argv[1:7]]
K, repeats = int(K), int(repeats)
net = EvNN(LIF, n_neurons=1, max_solver_time=t1, in_size=1, key=jax.random.PRNGKey(0), init_weights=0.0,
           init_bias=mu, thresh=theta, tmem=tau, tsyn=1.0, vreset=0.0, solver=dfx.Tsit5(),
           stepsize_controller=dfx.PIDController(rtol=1e-10, atol=1e-10), root_finder=optx.Newton(1e-12, 1e-12),
           solver_stepsize=1e-2, max_event_steps=4 * K, dtype=jnp.float64, output_no_spike_value=jnp.inf)
inputs = jnp.full((1, 1), jnp.inf)
fwd = eqx.filter_jit(lambda m: m.spikes_until_t(inputs, t1, max_spikes=K)[0])
def total(m):
    times = m.spikes_until_t(inputs, t1, max_spikes=K)[0]
    return jnp.where(jnp.isfinite(times), times, 0.0).sum()
grad = eqx.filter_jit(eqx.filter_value_and_grad(total))
def best(fn):
    out = []
    for _ in range(repeats):
        t = time.perf_counter(); r = fn(); jax.block_until_ready(r); out.append(time.perf_counter() - t)
    return min(out)
t = time.perf_counter(); times = fwd(net); jax.block_until_ready(times); c_fwd = time.perf_counter() - t
t = time.perf_counter(); value, g = grad(net); jax.block_until_ready(value); c_grad = time.perf_counter() - t
print(json.dumps({"versions": {p: version(p) for p in ("eventax", "jax", "jaxlib", "diffrax", "equinox", "optimistix")},
                  "times": [float(x) for x in times], "grad": float(g.neuron_model.ic[0]),
                  "compile_forward_s": c_fwd, "compile_gradient_s": c_grad,
                  "forward_s": best(lambda: fwd(net)), "forward_gradient_s": best(lambda: grad(net)[0])}))
'''


def closed_form() -> tuple[np.ndarray, float]:
    period = TAU * math.log(MU / (MU - THETA))
    count = min(K, int(T1 // period))
    times = period * np.arange(1, count + 1)
    grad = sum(k * TAU * (1 / MU - 1 / (MU - THETA)) for k in range(1, count + 1))
    return times, grad


def best_of(fn: Any, repeats: int) -> float:
    import jax

    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t)
    return min(out)


def ours_lif(repeats: int) -> dict[str, Any]:
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from sde.jax.events import EventSDE

    key = jax.random.PRNGKey(0)
    model = EventSDE(1, mu=MU, tau=TAU, theta=THETA, mode="threshold", solver="tsit5", rtol=1e-10, atol=1e-10,
                     root_tol=1e-12)
    fwd = eqx.filter_jit(lambda m: m(T1, key=key, max_spikes=K).times)

    def total(m: EventSDE) -> Any:
        times = m(T1, key=key, max_spikes=K).times
        return jnp.where(jnp.isfinite(times), times, 0.0).sum()

    grad = eqx.filter_jit(eqx.filter_value_and_grad(total))
    t = time.perf_counter()
    times = jax.block_until_ready(fwd(model))
    c_fwd = time.perf_counter() - t
    t = time.perf_counter()
    _, g = grad(model)
    c_grad = time.perf_counter() - t
    return {"times": [float(x) for x in np.asarray(times)], "grad": float(g.mu[0]), "compile_forward_s": c_fwd,
            "compile_gradient_s": c_grad, "forward_s": best_of(lambda: fwd(model), repeats),
            "forward_gradient_s": best_of(lambda: grad(model)[0], repeats)}


def run_eventax(scratch: Path, repeats: int) -> dict[str, Any]:
    python = scratch / "eventax-venv" / "bin" / "python"
    if not python.exists():
        return {"error": f"no eventax venv at {python.parent.parent} (make it with: python -m venv "
                         f"{python.parent.parent} && {python.parent}/pip install eventax==0.1.0)"}
    proc = subprocess.run([str(python), "-c", EVENTAX_WORKER, str(MU), str(TAU), str(THETA), str(T1), str(K),
                           str(repeats)], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        return {"error": f"eventax worker failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fit(steps: int, seed: int) -> dict[str, Any]:
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from sde.jax.events import EventSDE, SpikeTrain, spike_train_mmd

    true_mu, start_mu, t1, k, batch = 1.2, 0.8, 5.0, 24, 32
    config = dict(tau=1.0, sigma=0.2, theta=1.0, beta=5.0, rate=1.0, dt0=1e-2, solver="euler")
    data = EventSDE(1, mu=true_mu, **config).sample(t1, key=jax.random.PRNGKey(10_000 + seed), num_samples=64,
                                                    max_spikes=k)
    truncated = float(np.asarray(data.truncated).mean())

    def loss(mu: Any, key: Any, index: Any) -> Any:
        model = EventSDE(1, mu=mu, **config)
        trains = model.sample(t1, key=key, num_samples=batch, max_spikes=k)
        target = SpikeTrain(times=data.times[index], neurons=data.neurons[index], truncated=data.truncated[index],
                            ok=data.ok[index], t0=data.t0, t1=data.t1, num_neurons=1)
        return spike_train_mmd(trains, target, count_scale=0.25, static_kernel="rbf", sigma=1.0)

    step = eqx.filter_jit(jax.value_and_grad(loss))
    mu = jnp.asarray(start_mu)
    m = v = 0.0
    lr, b1, b2 = 0.05, 0.9, 0.999
    rng = np.random.default_rng(seed)
    history = []
    t = time.perf_counter()
    for i in range(steps):
        index = jnp.asarray(rng.choice(64, batch, replace=False))
        value, g = step(mu, jax.random.PRNGKey(seed * 100_000 + i), index)
        g = float(g)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mu = mu - lr * (m / (1 - b1 ** (i + 1))) / (math.sqrt(v / (1 - b2 ** (i + 1))) + 1e-8)
        history.append((float(value), float(mu)))
        if i % 10 == 0:
            print(f"  fit step {i}: mmd^2 {float(value):.5f}  mu {float(mu):.4f}", flush=True)
    seconds = time.perf_counter() - t
    recovered = float(np.mean([h[1] for h in history[-20:]]))
    return {"true_mu": true_mu, "start_mu": start_mu, "recovered_mu": recovered,
            "relative_error": abs(recovered - true_mu) / true_mu, "within_5pct": abs(recovered - true_mu) / true_mu
            < 0.05, "steps": steps, "batch": batch, "data_trains": 64, "max_spikes": k, "t1": t1,
            "data_truncated_fraction": truncated, "seconds": seconds, "history": history}


def main(scratch: Annotated[Path, typer.Option(help="folder holding eventax-venv")] = Path("/work/scratch"),
         repeats: Annotated[int, typer.Option(help="timed calls, best kept")] = 5,
         steps: Annotated[int, typer.Option(help="training steps of the fit")] = 120,
         seed: Annotated[int, typer.Option()] = 0,
         skip_fit: Annotated[bool, typer.Option(help="only the eventax comparison")] = False,
         out: Annotated[Path, typer.Option()] = DEFAULT_OUT) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    from importlib.metadata import version

    command = reproduce_command(__file__)
    env = base_environment() | {p: version(p) for p in ("jax", "jaxlib", "diffrax", "equinox", "optimistix")}
    print(command)
    print(json.dumps(env))
    exact_times, exact_grad = closed_form()
    ours = ours_lif(repeats)
    print("ours", json.dumps(ours))
    peer = run_eventax(scratch, repeats)
    print("eventax", json.dumps(peer))
    lif: dict[str, Any] = {"problem": {"mu": MU, "tau": TAU, "theta": THETA, "t1": T1, "max_spikes": K},
                           "closed_form_times": exact_times.tolist(), "closed_form_grad": exact_grad, "ours": ours,
                           "eventax": peer}
    mine = np.asarray(ours["times"])[: len(exact_times)]
    lif["ours_max_error_vs_closed_form"] = float(np.abs(mine - exact_times).max())
    lif["ours_grad_relative_error"] = abs(ours["grad"] - exact_grad) / abs(exact_grad)
    if "times" in peer:
        theirs = np.asarray(peer["times"])[: len(exact_times)]
        lif["eventax_max_error_vs_closed_form"] = float(np.abs(theirs - exact_times).max())
        lif["max_difference_ours_eventax"] = float(np.abs(theirs - mine).max())
        lif["eventax_grad_relative_error"] = abs(peer["grad"] - exact_grad) / abs(exact_grad)
        lif["ratio_forward_gradient_ours_over_eventax"] = ours["forward_gradient_s"] / peer["forward_gradient_s"]
        lif["ratio_forward_ours_over_eventax"] = ours["forward_s"] / peer["forward_s"]
    payload: dict[str, Any] = {"command": command, "environment": env, "lif": lif}
    if not skip_fit:
        payload["fit"] = fit(steps, seed)
        print("fit", json.dumps({k: v for k, v in payload["fit"].items() if k != "history"}))
    write_json_atomically(out, payload)
    out.with_suffix(".md").write_text(markdown(payload))
    print(markdown(payload))


def markdown(p: dict[str, Any]) -> str:
    lif = p["lif"]
    o, e = lif["ours"], lif["eventax"]
    lines = ["# Event SDEs: sde.jax.EventSDE beside eventax 0.1.0", "", f"Command: `{p['command']}`", "",
             "Environment: " + ", ".join(f"{k} {p['environment'].get(k)}" for k in
                                          ("python", "cpu", "jax", "diffrax", "equinox", "optimistix")), "",
             f"## LIF (mu {MU}, tau {TAU}, theta {THETA}, [0, {T1}], float64, Tsit5 rtol=atol=1e-10)", "",
             "| | ours | eventax 0.1.0 |", "| --- | --- | --- |"]
    if "error" in e:
        lines += [f"| forward + gradient (s) | {o['forward_gradient_s']:.4f} | failed |", "",
                  f"eventax: {e['error']}"]
    else:
        lines += [f"| forward (s, best of runs) | {o['forward_s']:.4f} | {e['forward_s']:.4f} |",
                  f"| forward + gradient (s) | {o['forward_gradient_s']:.4f} | {e['forward_gradient_s']:.4f} |",
                  f"| compile forward / gradient (s) | {o['compile_forward_s']:.1f} / {o['compile_gradient_s']:.1f} | "
                  f"{e['compile_forward_s']:.1f} / {e['compile_gradient_s']:.1f} |",
                  f"| max spike-time error vs closed form | {lif['ours_max_error_vs_closed_form']:.2e} | "
                  f"{lif['eventax_max_error_vs_closed_form']:.2e} |",
                  f"| gradient rel. error vs closed form | {lif['ours_grad_relative_error']:.2e} | "
                  f"{lif['eventax_grad_relative_error']:.2e} |", "",
                  f"Largest spike-time difference ours vs eventax: {lif['max_difference_ours_eventax']:.2e}. "
                  f"eventax versions: {e['versions']}."]
    if "fit" in p:
        f = p["fit"]
        lines += ["", "## Input current recovered by signature-kernel MMD on spike trains", "",
                  f"true mu {f['true_mu']}, start {f['start_mu']}, recovered {f['recovered_mu']:.4f} "
                  f"(relative error {100 * f['relative_error']:.2f}%, goal < 5%: {f['within_5pct']}); "
                  f"{f['steps']} Adam steps of {f['batch']} trains, {f['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    typer.run(main)
