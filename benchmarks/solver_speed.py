"""Solver speed: our solve faces against the bare libraries, and torch against JAX on the same models.

```bash
.venv/bin/python benchmarks/solver_speed.py --quick    # fewer repeats, no VirtualBrownianTree row (~1.5 min)
.venv/bin/python benchmarks/solver_speed.py            # everything (~2 min)
.venv/bin/python benchmarks/solver_speed.py --help     # --batch, --state, --repeats, --no-jax, --out
```

Every row times one forward + backward pass (a loss of the solution, gradients of all parameters),
float32, one thread per library (torch.set_num_threads(1); XLA's CPU thread pool off), median of
``--repeats`` timed calls after a warm-up. JAX rows are ``eqx.filter_jit``-compiled; the first call's
extra time (tracing + compilation) is reported separately as ``compile s``.

Problems (batch 128, state 32 by default, as in shared/PEERS.md):

* ``neural ODE``: ``dz/dt = MLP(z)`` (32-64-64-32, ReLU, tanh output: the vector field of
  :class:`sde.models.NeuralODE`) on ``t in [0, 5]``, Dopri5 at rtol = atol = 1e-3 and 1e-6.
  torch: bare ``torchdiffeq.odeint`` vs :func:`sde.solvers.solve`; JAX: bare ``diffrax.diffeqsolve``
  (``ODETerm``, ``Dopri5``, ``PIDController``) vs :func:`sde.jax.solve`; torch vs JAX with the same
  weights. The two libraries' step-size controllers differ, so the ``steps`` column says how many
  steps each took.
* ``neural SDE``: Itô, drift MLP, diagonal diffusion ``sigmoid(Linear(z))``, 100 Euler steps on
  ``[0, 1]`` from one precomputed Brownian path. torch: bare ``torchsde.sdeint`` on that path (and
  on ``BrownianInterval`` with the dt hint) vs our face; JAX: bare diffrax (``LinearInterpolation``
  of the path + ``StepTo``; and ``VirtualBrownianTree`` in the full run) vs our face.
* ``LSDE model``: :class:`sde.models.LSDE` (hidden 32) on 128 regular series of 101 rows (2
  channels) -> ``objective`` (control path, 100 Euler steps, readout), against its JAX twin
  (:func:`sde.jax.from_torch`, noise drawn with a key inside the compiled step). The torch call
  builds the batch's control path each time; the JAX twin does that in ``prepare`` (outside jit),
  timed as its own row, and the ratio is given with and without it.

Things to know when reading the numbers: the implementations of one problem are timed in turns
(rotating order), because this machine's load changes by the minute; compare ratios, not absolute
times across runs. ``sde.jax.solve`` marches fixed grids with ``lax.scan`` over diffrax's solver step
(``diffeqsolve``'s while loop with checkpointed reverse mode is for an unknown number of steps), so on
the fixed-step SDE our face is faster than bare ``diffeqsolve``; on adaptive solves it calls
``diffeqsolve`` itself and the ratio is noise around 1. torchdiffeq and diffrax pick steps with
different controllers (see ``steps``), so the torch/JAX ratio of the neural ODE rows compares libraries
at one tolerance, not the same arithmetic.
"""

from __future__ import annotations

import os

from _bench import REPO, base_environment, reproduce_command, write_json_atomically  # sets the threads

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from tabulate import tabulate
from torch import nn

RESULTS = REPO / "benchmarks" / "results"
app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


@dataclass
class Row:
    problem: str
    setting: str
    impl: str
    ms: float
    ms_min: float
    compile_s: float | None = None
    steps: int | None = None


@dataclass
class Impl:
    """One implementation of a problem: ``fn()`` runs one forward + backward pass."""

    fn: Callable[[], Any]
    jax: bool = False
    steps: int | Callable[[], int] | None = None  # a callable is asked after timing (not to warm a JIT up early)


Groups = dict[tuple[str, str], dict[str, Impl]]


def timed(impls: dict[str, Impl], repeats: int, sync: Callable[[Any], Any]) -> dict[str, tuple[float, float, float]]:
    """``name -> (first call s, median ms, min ms)``. The first call of each is its warm-up (for JAX:
    tracing and compilation); then the implementations of one problem take turns, round by round (in a
    rotating order), so a change in the machine's load falls on all of them alike."""
    first: dict[str, float] = {}
    for name, impl in impls.items():
        start = time.perf_counter()
        out = impl.fn()
        if impl.jax:
            sync(out)
        first[name] = time.perf_counter() - start
    times: dict[str, list[float]] = {name: [] for name in impls}
    names = list(impls)
    for round_ in range(repeats):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:  # rotated: no one always goes first
            impl = impls[name]
            start = time.perf_counter()
            out = impl.fn()
            if impl.jax:
                sync(out)
            times[name].append(1e3 * (time.perf_counter() - start))
    return {name: (first[name], statistics.median(t), min(t)) for name, t in times.items()}


# --------------------------------------------------------------------------- the problems (torch side)
def mlp(d: int, width: int) -> nn.Sequential:
    """The neural ODE field (as sde.models.ode.ODEVectorField with two hidden layers)."""
    return nn.Sequential(nn.Linear(d, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, d),
                         nn.Tanh())


class Field(nn.Module):
    def __init__(self, d: int, width: int) -> None:
        super().__init__()
        self.net = mlp(d, width)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


class NeuralSDE(nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, d: int, width: int) -> None:
        super().__init__()
        self.drift = nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Linear(width, d))
        self.diffusion = nn.Linear(d, d)

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.drift(y)

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.diffusion(y))


def series_batch(n: int, rows: int, seed: int = 0) -> Any:
    from sde.series import SeriesBatch

    rng = np.random.default_rng(seed)
    times = np.linspace(0.0, 1.0, rows)
    series = [(times, np.stack([np.sin(6 * times + rng.uniform(0, 6)), rng.normal(size=rows)], 1)) for _ in range(n)]
    return SeriesBatch.from_arrays(series, rng.integers(0, 2, n))


ODE_SETTINGS = {1e-3: "dopri5 rtol=atol=0.001", 1e-6: "dopri5 rtol=atol=1e-06"}
SDE_SETTING = "euler, 100 steps"


def torch_impls(batch: int, state: int) -> tuple[Groups, dict[str, Any]]:
    import torchdiffeq
    import torchsde

    from sde.models import LSDE
    from sde.solvers import brownian, solve

    torch.manual_seed(0)
    groups: Groups = {}
    field = Field(state, 64)
    y0 = torch.randn(batch, state)
    ts = torch.tensor([0.0, 5.0])
    for tol, setting in ODE_SETTINGS.items():
        def bare(tol: float = tol) -> None:
            ys = torchdiffeq.odeint(field, y0, ts, rtol=tol, atol=tol, method="dopri5")
            ys[-1].pow(2).mean().backward()

        def face(tol: float = tol) -> Any:
            sol = solve(field, y0, ts, rtol=tol, atol=tol)
            sol.ys[:, -1].pow(2).mean().backward()
            return sol

        groups["neural ODE", setting] = {"torchdiffeq (bare)": Impl(bare),
                                         "sde.solvers.solve": Impl(face, steps=lambda face=face: face().stats.steps)}

    sde = NeuralSDE(state, 64)
    bm = brownian(0.0, 1.0, (batch, state), dt=0.01, seed=0)
    ts_sde = torch.tensor([0.0, 1.0])

    def sde_bare(path: Any) -> Callable[[], None]:
        def run() -> None:
            ys = torchsde.sdeint(sde, y0, ts_sde, bm=path, dt=0.01, method="euler")
            ys[-1].pow(2).mean().backward()
        return run

    def sde_face() -> None:
        solve(sde, y0, ts_sde, step_size=0.01, brownian=bm).ys[:, -1].pow(2).mean().backward()

    interval = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(batch, state), dt=0.01, entropy=0)
    groups["neural SDE", SDE_SETTING] = {
        "torchsde (bare), precomputed path": Impl(sde_bare(bm), steps=100),
        "torchsde (bare), BrownianInterval(dt)": Impl(sde_bare(interval), steps=100),
        "sde.solvers.solve": Impl(sde_face, steps=100)}

    data = series_batch(batch, 101)
    model = LSDE(2, state, 2, brownian_seed=0).initialise(data)

    def lsde() -> None:
        (-model.objective(data).sum()).backward()

    groups["LSDE model", SDE_SETTING] = {"torch LSDE.objective": Impl(lsde, steps=100)}
    shared = {"field": field, "y0": y0, "sde": sde, "bm": bm, "lsde": model, "data": data}
    return groups, shared


# --------------------------------------------------------------------------- JAX side
def jax_impls(groups: Groups, shared: dict[str, Any], quick: bool) -> Callable[[Any], Any]:
    """Adds the JAX implementations to ``groups``; returns the function that waits for a JAX result."""
    import diffrax
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import lineax

    import sde.jax as sj
    from sde.jax.nn import Linear, Sequential, activation

    def linear(layer: nn.Linear) -> Linear:
        twin = Linear(layer.in_features, layer.out_features, key=jax.random.PRNGKey(0))
        return eqx.tree_at(lambda m: (m.weight, m.bias), twin,
                           (jnp.asarray(layer.weight.detach().numpy()), jnp.asarray(layer.bias.detach().numpy())))

    acts = {nn.ReLU: jax.nn.relu, nn.Tanh: jnp.tanh}

    def sequential(seq: nn.Sequential) -> Sequential:
        return Sequential(tuple(linear(m) if isinstance(m, nn.Linear) else activation(acts[type(m)]) for m in seq))

    class JField(eqx.Module):
        net: Sequential

        def __call__(self, t: Any, y: Any) -> Any:
            return self.net(y)

    class JSDE(eqx.Module):
        drift: Sequential
        diffusion: Linear
        noise_type = "diagonal"
        sde_type = "ito"

        def f(self, t: Any, y: Any) -> Any:
            return self.drift(y)

        def g(self, t: Any, y: Any) -> Any:
            return jax.nn.sigmoid(self.diffusion(y))

    field = JField(sequential(shared["field"].net))
    y0 = jnp.asarray(shared["y0"].numpy())
    ts = jnp.asarray([0.0, 5.0])
    for tol, setting in ODE_SETTINGS.items():
        @eqx.filter_jit
        def bare(f: JField, tol: float = tol) -> Any:
            def loss(f: JField) -> Any:
                sol = diffrax.diffeqsolve(diffrax.ODETerm(lambda t, y, a: a(t, y)), diffrax.Dopri5(), ts[0], ts[-1],
                                          None, y0, f, stepsize_controller=diffrax.PIDController(rtol=tol, atol=tol),
                                          max_steps=10_000)
                return (sol.ys[-1] ** 2).mean(), sol.stats["num_steps"]
            return eqx.filter_grad(loss, has_aux=True)(f)

        @eqx.filter_jit
        def face(f: JField, tol: float = tol) -> Any:
            def loss(f: JField) -> Any:
                sol = sj.solve(f, y0, ts, rtol=tol, atol=tol)
                return (sol.ys[:, -1] ** 2).mean(), sol.stats.steps
            return eqx.filter_grad(loss, has_aux=True)(f)

        groups["neural ODE", setting].update({
            "diffrax (bare)": Impl(lambda bare=bare: bare(field), jax=True,
                                   steps=lambda bare=bare: int(bare(field)[1])),
            "sde.jax.solve": Impl(lambda face=face: face(field), jax=True,
                                  steps=lambda face=face: int(face(field)[1]))})

    system = JSDE(sequential(shared["sde"].drift), linear(shared["sde"].diffusion))
    path = sj.brownian_from_torch(shared["bm"])
    ts_sde = jnp.asarray([0.0, 1.0])

    def diffusion(t: Any, y: Any, s: JSDE) -> Any:
        return lineax.DiagonalLinearOperator(s.g(t, y))

    def bare_sde(control: Any, controller: Any, dt0: float | None) -> Callable[[], Any]:
        @eqx.filter_jit
        def run(s: JSDE) -> Any:
            def loss(s: JSDE) -> Any:
                terms = diffrax.MultiTerm(diffrax.ODETerm(lambda t, y, s: s.f(t, y)),
                                          diffrax.ControlTerm(diffusion, control))
                sol = diffrax.diffeqsolve(terms, diffrax.Euler(), 0.0, 1.0, dt0, y0, s, stepsize_controller=controller,
                                          max_steps=200)
                return (sol.ys[-1] ** 2).mean()
            return eqx.filter_grad(loss)(s)
        return lambda: run(system)

    @eqx.filter_jit
    def face_sde(s: JSDE) -> Any:
        return eqx.filter_grad(lambda s: (sj.solve(s, y0, ts_sde, brownian=path).ys[:, -1] ** 2).mean())(s)

    grid = jnp.asarray(path.grid, jnp.float32)
    interp = diffrax.LinearInterpolation(ts=grid, ys=path.values)
    group = groups["neural SDE", SDE_SETTING]
    group["diffrax (bare), LinearInterpolation + StepTo"] = Impl(bare_sde(interp, diffrax.StepTo(ts=grid), None),
                                                                 jax=True, steps=100)
    group["sde.jax.solve"] = Impl(lambda: face_sde(system), jax=True, steps=100)
    if not quick:  # several times slower: timed in its own group, fewer repeats
        tree = diffrax.VirtualBrownianTree(0.0, 1.0, tol=1e-3, shape=tuple(y0.shape), key=jax.random.PRNGKey(0))
        groups["neural SDE (tree)", SDE_SETTING] = {
            "diffrax (bare), VirtualBrownianTree": Impl(bare_sde(tree, diffrax.ConstantStepSize(), 0.01), jax=True,
                                                        steps=100)}

    twin = sj.from_torch(shared["lsde"])
    data = twin.prepare(shared["data"])

    @eqx.filter_jit
    def step(m: Any, d: Any, key: Any) -> Any:
        return eqx.filter_grad(lambda m: -m.objective(d, key=key).sum())(m)

    key = jax.random.PRNGKey(0)
    groups["LSDE model", SDE_SETTING].update({
        "JAX twin prepare (outside jit)": Impl(lambda: twin.prepare(shared["data"])),
        "JAX twin objective (jit)": Impl(lambda: step(twin, data, key), jax=True, steps=100)})
    return jax.block_until_ready


def run_groups(groups: Groups, repeats: int, sync: Callable[[Any], Any]) -> list[Row]:
    rows = []
    for (problem, setting), impls in groups.items():
        n = max(3, repeats // 4) if problem.endswith("(tree)") else repeats
        for name, (first, ms, lo) in timed(impls, n, sync).items():
            impl = impls[name]
            steps = impl.steps() if callable(impl.steps) else impl.steps
            rows.append(Row(problem.removesuffix(" (tree)"), setting, name, ms, lo,
                            (first - ms / 1e3) if impl.jax else None, steps))
    return rows


# --------------------------------------------------------------------------- report
def ratios(rows: list[Row]) -> list[dict[str, Any]]:
    """The comparisons the issue asks for, as ``a / b`` of median times."""
    by = {(r.problem, r.setting, r.impl): r for r in rows}
    out = []

    def add(kind: str, problem: str, setting: str, a: str, b: str, goal: float | None = None,
            extra: str | None = None) -> None:
        if (problem, setting, a) in by and (problem, setting, b) in by:
            num = by[problem, setting, a].ms + (by[problem, setting, extra].ms if extra else 0.0)
            value = num / by[problem, setting, b].ms
            label = a + (f" + {extra}" if extra else "")
            out.append({"comparison": kind, "problem": problem, "setting": setting, "ratio": f"{label} / {b}",
                        "value": round(value, 3), "goal": goal,
                        "pass": None if goal is None else bool(value <= goal)})

    for setting in ("dopri5 rtol=atol=0.001", "dopri5 rtol=atol=1e-06"):
        add("torch face / bare", "neural ODE", setting, "sde.solvers.solve", "torchdiffeq (bare)")
        add("JAX face / bare", "neural ODE", setting, "sde.jax.solve", "diffrax (bare)", goal=1.1)
        add("torch / JAX", "neural ODE", setting, "sde.solvers.solve", "sde.jax.solve")
    s = "euler, 100 steps"
    add("torch face / bare", "neural SDE", s, "sde.solvers.solve", "torchsde (bare), precomputed path")
    add("torch face / bare", "neural SDE", s, "sde.solvers.solve", "torchsde (bare), BrownianInterval(dt)")
    add("JAX face / bare", "neural SDE", s, "sde.jax.solve", "diffrax (bare), LinearInterpolation + StepTo", goal=1.1)
    add("JAX face / bare", "neural SDE", s, "sde.jax.solve", "diffrax (bare), VirtualBrownianTree")
    add("torch / JAX", "neural SDE", s, "sde.solvers.solve", "sde.jax.solve")
    add("torch / JAX", "LSDE model", s, "torch LSDE.objective", "JAX twin objective (jit)")
    by_model = {(r.problem, r.setting, r.impl): r for r in rows}
    key = ("LSDE model", s, "JAX twin objective (jit)")
    prep = ("LSDE model", s, "JAX twin prepare (outside jit)")
    torch_key = ("LSDE model", s, "torch LSDE.objective")
    if key in by_model and prep in by_model and torch_key in by_model:
        value = by_model[torch_key].ms / (by_model[key].ms + by_model[prep].ms)
        out.append({"comparison": "torch / JAX", "problem": "LSDE model", "setting": s,
                    "ratio": "torch LSDE.objective / (JAX prepare + jit step)", "value": round(value, 3),
                    "goal": None, "pass": None})
    return out


def environment() -> dict[str, Any]:
    env = base_environment()
    env["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    for name in ("torchdiffeq", "torchsde", "jax", "jaxlib", "diffrax", "equinox", "lineax"):
        try:
            env[name] = __import__(name).__version__
        except (ImportError, AttributeError):
            env[name] = None
    return env


def markdown(rows: list[Row], comps: list[dict[str, Any]], command: str, env: dict[str, Any]) -> str:
    table = tabulate([[r.problem, r.setting, r.impl, f"{r.ms:.2f}", f"{r.ms_min:.2f}",
                       "" if r.compile_s is None else f"{r.compile_s:.1f}", "" if r.steps is None else r.steps]
                      for r in rows], ["problem", "setting", "implementation", "median ms", "min ms", "compile s",
                                       "steps"], tablefmt="github")
    comp = tabulate([[c["comparison"], c["problem"], c["setting"], c["ratio"], f"{c['value']:.2f}x",
                      "" if c["goal"] is None else f"<= {c['goal']}x: {'PASS' if c['pass'] else 'FAIL'}"]
                     for c in comps], ["comparison", "problem", "setting", "ratio", "value", "goal"],
                    tablefmt="github")
    cpu = f"{env['cpu']} ({env['cpu_count']} cores), {env['platform']}, Python {env['python']}"
    libs = ", ".join(f"{k} {env[k]}" for k in ("torch", "torchdiffeq", "torchsde", "jax", "diffrax", "equinox")
                     if env.get(k))
    return (f"# Solver speed (forward + backward, float32, one thread)\n\n`{command}`\n\n{cpu}; {libs}\n\n"
            f"{table}\n\n{comp}\n")


def _identity(x: Any) -> Any:
    return x


@app.command()
def main(quick: Annotated[bool, typer.Option(help="fewer repeats, no VirtualBrownianTree row")] = False,
         repeats: Annotated[int, typer.Option(help="timed calls per row (0: 30, or 8 with --quick)")] = 0,
         batch: Annotated[int, typer.Option(help="batch size")] = 128,
         state: Annotated[int, typer.Option(help="state dimension (and LSDE hidden size)")] = 32,
         jax: Annotated[bool, typer.Option("--jax/--no-jax", help="the JAX rows (needs the jax extra)")] = True,
         out: Annotated[Path | None, typer.Option(help="JSON file (default benchmarks/results/solver_speed[_quick]"
                                                       ".json); the Markdown table goes beside it")] = None) -> None:
    """Time our solve faces against torchdiffeq / torchsde / diffrax, and torch against JAX."""
    torch.set_num_threads(1)
    repeats = repeats or (8 if quick else 30)
    command = reproduce_command(__file__)
    print(command)
    groups, shared = torch_impls(batch, state)
    sync: Callable[[Any], Any] = _identity
    if jax:
        try:
            sync = jax_impls(groups, shared, quick)
        except ImportError as error:
            print(f"JAX rows skipped: {error} (install the jax extra: pip install -e '.[jax]')")
    rows = run_groups(groups, repeats, sync)
    env = environment()
    comps = ratios(rows)
    text = markdown(rows, comps, command, env)
    print(text)
    out = out or RESULTS / f"solver_speed{'_quick' if quick else ''}.json"
    write_json_atomically(out, {"command": command, "environment": env, "batch": batch, "state": state,
                                "repeats": repeats, "rows": [asdict(r) for r in rows], "comparisons": comps})
    out.with_suffix(".md").write_text(text)
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    app()
