"""Bayesian fits of the multivariate exponential Hawkes process: posterior samples by NUTS (numpyro).

The model is :class:`tpp.hawkes.ExpHawkes`'s: ``lambda_i(t) = mu_i + sum_j sum_{t_m^j < t} a_ij beta
exp(-beta (t - t_m^j))`` (row ``i`` excited, column ``j`` exciting; ``A`` integrates the kernel, so its
spectral radius is the branching ratio). Its exact log-likelihood is written in JAX: the O(N K)
recursion of :mod:`tpp.hawkes._recursion` as one ``jax.lax.scan`` over the concatenated events of
all sequences (the state resets at each sequence's first event; events at equal times do not excite
one another, as in the compiled recursion), in float64 (``jax.enable_x64`` around every call, so the
global JAX setting is left alone). NUTS (numpyro) samples ``log mu``, ``log A`` and ``log beta``:
numpyro maps every positive parameter to the real line, so the sampler never meets a boundary.

Priors (:class:`Priors`; ``r = N / T`` is the data's mean event rate, events over total observed
time, so the defaults follow the data's clock, unix seconds or days alike):

* ``mu_k ~ HalfNormal(baseline_scale)``, default scale ``r`` (a type's baseline cannot exceed the
  total rate by much);
* ``a_ij ~ HalfCauchy(adjacency_scale)``, default 0.25: half its mass below 0.25 (pulls spurious
  links towards 0) and a heavy tail that lets a real strong link through -- a sparsity-friendly
  prior on ``[0, inf)``;
* ``beta ~ LogNormal(log(decay_median), decay_sd)``, default median ``r`` and ``decay_sd = 2``
  (a factor ``e^4 ~ 55`` either way within two standard deviations).

An entry whose true value is exactly 0 is never inside an equal-tailed interval of a posterior on
``(0, inf)``: read small entries from their upper bound, not from coverage.

Needs the optional extra: ``pip install 'tpp-sde[bayes]'`` (numpyro; JAX comes with it).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time as _time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tpp.events import EventBatch
from tpp.hawkes._common import flat_events

__all__ = ["Priors", "Posterior", "sample_posterior", "log_likelihood"]

_EXTRA = "pip install 'tpp-sde[bayes]'"
_NAMES = ("baseline", "adjacency", "decay", "branching_ratio")


def _require() -> tuple[Any, Any, Any]:
    """``(jax, jax.numpy, numpyro)``, or an ImportError naming the extra that brings them."""
    try:
        import jax
        import jax.numpy as jnp
        import numpyro
    except ImportError as exc:  # an optional extra: say which one
        raise ImportError(f"tpp.hawkes.bayes needs numpyro and JAX ({exc.name} is missing): {_EXTRA}") from exc
    return jax, jnp, numpyro


@dataclass(frozen=True)
class Priors:
    """Prior hyper-parameters; ``None`` means "the data's mean event rate ``N / T``" (see the module doc).

    * ``baseline_scale``: scale of the half-normal prior of each ``mu_k`` (time^-1).
    * ``adjacency_scale``: scale of the half-Cauchy prior of each ``a_ij`` (no unit).
    * ``decay_median``: median of the log-normal prior of ``beta`` (time^-1).
    * ``decay_sd``: standard deviation of ``log beta`` under the prior.
    """

    baseline_scale: float | None = None
    adjacency_scale: float = 0.25
    decay_median: float | None = None
    decay_sd: float = 2.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in ("baseline_scale", "decay_median"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
                raise ValueError(f"Priors.{f.name} must be a finite positive number, got {value!r}")

    def resolved(self, rate: float) -> "Priors":
        """The priors with every ``None`` replaced by the mean event rate ``rate``."""
        return dataclasses.replace(
            self,
            baseline_scale=rate if self.baseline_scale is None else float(self.baseline_scale),
            decay_median=rate if self.decay_median is None else float(self.decay_median),
        )


def _as_priors(priors: Priors | Mapping[str, float] | None) -> Priors:
    if priors is None:
        return Priors()
    if isinstance(priors, Priors):
        return priors
    if isinstance(priors, Mapping):
        known = {f.name for f in dataclasses.fields(Priors)}
        unknown = sorted(set(priors) - known)
        if unknown:
            raise ValueError(f"unknown prior(s) {', '.join(map(str, unknown))}: known are {', '.join(sorted(known))}")
        return Priors(**priors)
    raise TypeError(f"priors must be a Priors, a mapping of its fields or None, got {type(priors).__name__}")


# ---------------------------------------------------------------------------------------- likelihood
def _event_arrays(data: EventBatch, pad_to: int | None = None) -> dict[str, np.ndarray]:
    """What the scan needs per event (numpy, float64): the gap to the previous event of the same
    sequence ``dt``, whether the event starts its sequence ``reset``, its mark, the time left to
    its window's end ``tail``, its sequence ``seq`` and a weight (0 for padding).

    ``pad_to`` appends inert events (weight 0, each resetting the state) so that data sets of
    different sizes share one compiled sampler."""
    flat = flat_events(data)
    times, marks, offsets = flat["times"], flat["marks"], flat["seq_offsets"]
    n = times.size
    seq = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    reset = np.zeros(n, bool)
    reset[offsets[:-1][np.diff(offsets) > 0]] = True
    dt = np.diff(times, prepend=0.0)
    dt[reset] = 0.0
    tail = flat["t_end"][seq] - times
    weight = np.ones(n)
    size = n if pad_to is None else max(int(pad_to), n)
    extra = size - n
    return {
        "dt": np.concatenate([dt, np.zeros(extra)]),
        "reset": np.concatenate([reset, np.ones(extra, bool)]),
        "marks": np.concatenate([marks, np.zeros(extra, np.int64)]).astype(np.int32),
        "tail": np.concatenate([tail, np.zeros(extra)]),
        "seq": np.concatenate([seq, np.zeros(extra, np.int64)]).astype(np.int32),
        "weight": np.concatenate([weight, np.zeros(extra)]),
        "duration": flat["t_end"] - flat["t_start"],
    }


def _event_terms(mu: Any, adjacency: Any, beta: Any, arrays: Mapping[str, Any]) -> Any:
    """Per-event log-likelihood terms ``[N]``: ``log lambda_{m_n}(t_n)`` minus the event's share of
    the compensator, ``sum_i a_{i m_n} (1 - exp(-beta (T - t_n)))`` (weighted: padding gives 0).
    The baselines' share ``sum_k mu_k T`` is the caller's (per sequence or in total)."""
    import jax
    import jax.numpy as jnp

    marks = arrays["marks"]
    K = adjacency.shape[0]
    onehot = jax.nn.one_hot(marks, K, dtype=adjacency.dtype)

    def step(carry, x):
        state, pending = carry  # R_j(t) of events strictly earlier; events at the current time
        dt, reset, hit = x
        moved = dt > 0
        state = jnp.where(reset, 0.0, jnp.where(moved, jnp.exp(-beta * dt) * (state + pending), state))
        pending = jnp.where(reset | moved, 0.0, pending) + hit
        return (state, pending), state

    zero = jnp.zeros(K, adjacency.dtype)
    _, states = jax.lax.scan(step, (zero, zero), (arrays["dt"], arrays["reset"], onehot))  # [N, K]
    lam = mu[marks] + beta * jnp.sum(adjacency[marks] * states, axis=-1)
    lam = jnp.where(arrays["weight"] > 0, lam, 1.0)  # padding: log 1 = 0, and no NaN in gradients
    col = jnp.sum(adjacency, axis=0)[marks]
    return arrays["weight"] * (jnp.log(lam) - col * (1.0 - jnp.exp(-beta * arrays["tail"])))


def log_likelihood(data: EventBatch, baseline: Any, adjacency: Any, decay: float) -> np.ndarray:
    """Exact log-likelihood per sequence ``[B]`` by the JAX recursion the sampler uses; equals
    :meth:`tpp.hawkes.ExpHawkes.log_likelihood` at the same parameters (a check of the sampler's target)."""
    jax, jnp, _ = _require()
    baseline = np.asarray(baseline, np.float64).reshape(-1)
    K = baseline.size
    adjacency = np.asarray(adjacency, np.float64).reshape(K, K)
    if data.num_marks > K:
        raise ValueError(f"the data have {data.num_marks} mark types, the parameters {K}")
    arrays = _event_arrays(data)
    with jax.enable_x64(True):
        terms = _event_terms(jnp.asarray(baseline), jnp.asarray(adjacency), jnp.asarray(float(decay)),
                             {k: jnp.asarray(v) for k, v in arrays.items()})
        per_seq = jax.ops.segment_sum(terms, jnp.asarray(arrays["seq"]), num_segments=len(data))
        return np.asarray(per_seq - float(baseline.sum()) * arrays["duration"])


def _log_density(z: Mapping[str, Any], arrays: Mapping[str, Any], hyper: Any) -> Any:
    """Log posterior density (up to a constant) at the unconstrained point ``z`` = ``log`` of
    ``baseline [K]``, ``adjacency [K, K]`` and ``decay``: the priors' log densities, the Jacobian
    ``sum z`` of ``exp``, and the exact log-likelihood.

    ``hyper``: ``[baseline_scale, adjacency_scale, log decay_median, decay_sd, total duration]``, an
    array argument so that other priors or data of the same padded size reuse the compiled sampler."""
    import jax.numpy as jnp
    import numpyro.distributions as dist

    mu, adjacency, beta = jnp.exp(z["baseline"]), jnp.exp(z["adjacency"]), jnp.exp(z["decay"])
    log_prior = (jnp.sum(dist.HalfNormal(hyper[0]).log_prob(mu)) + jnp.sum(dist.HalfCauchy(hyper[1]).log_prob(adjacency))
                 + dist.LogNormal(hyper[2], hyper[3]).log_prob(beta))
    jacobian = jnp.sum(z["baseline"]) + jnp.sum(z["adjacency"]) + z["decay"]
    log_lik = jnp.sum(_event_terms(mu, adjacency, beta, arrays)) - jnp.sum(mu) * hyper[4]
    return log_prior + jacobian + log_lik


def _potential(arrays: Mapping[str, Any], hyper: Any) -> Any:
    """NUTS's potential energy (minus the log density) given the data: numpyro's ``potential_fn_gen``."""
    return lambda z: -_log_density(z, arrays, hyper)


# ---------------------------------------------------------------------------------------- posterior
@dataclass
class Posterior:
    """Posterior samples (chains concatenated, chain after chain): ``baseline [S, K]``,
    ``adjacency [S, K, K]`` (row excited, column exciting), ``decay [S]``.

    ``num_chains`` lets :meth:`summary` split the draws into chains for ``r_hat`` and the effective
    sample size; ``num_divergences`` counts NUTS's divergent transitions (more than a few: the
    intervals are suspect); ``priors`` are the resolved hyper-parameters used."""

    baseline: np.ndarray
    adjacency: np.ndarray
    decay: np.ndarray
    num_chains: int = 1
    num_divergences: int = 0
    priors: Priors | None = None
    seconds: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.baseline = np.asarray(self.baseline, np.float64)
        self.adjacency = np.asarray(self.adjacency, np.float64)
        self.decay = np.asarray(self.decay, np.float64).reshape(-1)
        S = self.decay.size
        K = self.baseline.shape[-1] if self.baseline.ndim == 2 else -1
        if self.baseline.shape != (S, K) or self.adjacency.shape != (S, K, K):
            raise ValueError(f"Posterior: baseline {self.baseline.shape}, adjacency {self.adjacency.shape} and decay "
                             f"{self.decay.shape} must be [S, K], [S, K, K] and [S]")
        if self.num_chains < 1 or S % self.num_chains:
            raise ValueError(f"Posterior: {S} samples do not split into {self.num_chains} chains")

    @property
    def num_samples(self) -> int:
        return self.decay.size

    @property
    def num_marks(self) -> int:
        return self.baseline.shape[1]

    def branching_ratio(self) -> np.ndarray:
        """Samples ``[S]`` of the branching ratio, the spectral radius of ``A`` (< 1: stationary)."""
        return np.max(np.abs(np.linalg.eigvals(self.adjacency)), axis=-1)

    def samples(self, name: str) -> np.ndarray:
        """The samples of ``baseline``, ``adjacency``, ``decay`` or ``branching_ratio`` (first axis: sample)."""
        if name not in _NAMES:
            raise ValueError(f"unknown quantity {name!r}: one of {', '.join(_NAMES)}")
        return self.branching_ratio() if name == "branching_ratio" else getattr(self, name)

    def credible_interval(self, name: str, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Equal-tailed ``level`` interval ``(lower, upper)`` of ``name``, each shaped like one sample."""
        if not (isinstance(level, (int, float)) and 0 < level < 1):
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        x = self.samples(name)
        tail = (1 - level) / 2
        return np.quantile(x, tail, axis=0), np.quantile(x, 1 - tail, axis=0)

    def mean(self, name: str) -> np.ndarray:
        """Posterior mean of ``name``."""
        return self.samples(name).mean(axis=0)

    def to_model(self) -> Any:
        """An :class:`~tpp.hawkes.ExpHawkes` at the posterior means (for plots, scores, simulation)."""
        from tpp.hawkes.exp import ExpHawkes

        return ExpHawkes.from_params(self.baseline.mean(0), self.adjacency.mean(0), float(self.decay.mean()))

    def summary(self, level: float = 0.9) -> Any:
        """A table (pandas DataFrame), one row per scalar (``baseline[k]``, ``adjacency[i,j]``, ``decay``,
        ``branching_ratio``): mean, sd, median, the ``level`` interval, split ``r_hat`` and the effective
        sample size (numpy's diagnostics of numpyro, over the chains)."""
        import pandas as pd
        from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

        lo_name, hi_name = f"{100 * (1 - level) / 2:g}%", f"{100 * (1 + level) / 2:g}%"
        rows, index = [], []
        C = self.num_chains
        for name in _NAMES:
            x = self.samples(name)
            lower, upper = self.credible_interval(name, level)
            flat = x.reshape(x.shape[0], -1)
            chains = flat.reshape(C, -1, flat.shape[1])
            enough = chains.shape[1] >= 4  # split r_hat halves each chain
            r_hat = split_gelman_rubin(chains) if enough else np.full(flat.shape[1], np.nan)
            ess = effective_sample_size(chains) if enough else np.full(flat.shape[1], np.nan)
            for p, position in enumerate(np.ndindex(*x.shape[1:])):
                index.append(name + (f"[{','.join(map(str, position))}]" if position else ""))
                rows.append({"mean": flat[:, p].mean(), "sd": flat[:, p].std(ddof=1) if flat.shape[0] > 1 else np.nan,
                             "median": np.median(flat[:, p]), lo_name: np.ravel(lower)[p], hi_name: np.ravel(upper)[p],
                             "r_hat": float(np.ravel(r_hat)[p]), "ess": float(np.ravel(ess)[p])})
        return pd.DataFrame(rows, index=index)


# ---------------------------------------------------------------------------------------- sampling
def _padded_size(n: int) -> int:
    """Round the event count up to 64 or a multiple of a quarter of its power of two (at most 1.5 times
    the data), so that data sets of similar size share one compiled sampler."""
    if n <= 64:
        return 64
    step = 2 ** (int(math.ceil(math.log2(n))) - 2)
    return int(math.ceil(n / step) * step)


@functools.lru_cache(maxsize=16)
def _compiled_sampler(num_marks: int, num_warmup: int, num_samples: int, target_accept: float) -> Any:
    """One jitted function ``(keys [C, 2], arrays, hyper) -> (z, diverging, num_steps)`` running NUTS
    (numpyro's kernel) for ``C`` chains at once (vmap): initialisation, warm-up with step size and
    diagonal mass adaptation, and sampling, all in one compiled program. Data and priors are its
    arguments, so a new data set of the same padded size runs without compiling: ``MCMC.run``
    compiles its loop again on every call, which costs more than sampling on small data."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer.hmc import hmc

    K = num_marks

    def one_chain(key: Any, arrays: Mapping[str, Any], hyper: Any) -> Any:
        init_kernel, sample_kernel = hmc(potential_fn_gen=_potential, algo="NUTS")
        # Start at the priors' medians (HalfNormal's median is 0.674 scale), in log space.
        z0 = {"baseline": jnp.full(K, jnp.log(0.6745 * hyper[0])), "adjacency": jnp.full((K, K), jnp.log(hyper[1])),
              "decay": hyper[2]}
        state = init_kernel(z0, num_warmup, target_accept_prob=target_accept, model_args=(arrays, hyper), rng_key=key)

        def warm(state: Any, _: Any) -> tuple[Any, None]:
            return sample_kernel(state, model_args=(arrays, hyper)), None

        def draw(state: Any, _: Any) -> tuple[Any, Any]:
            state = sample_kernel(state, model_args=(arrays, hyper))
            return state, (state.z, state.diverging, state.num_steps)

        state, _ = jax.lax.scan(warm, state, None, length=num_warmup)
        _, out = jax.lax.scan(draw, state, None, length=num_samples)
        return out

    return jax.jit(jax.vmap(one_chain, in_axes=(0, None, None)))


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def sample_posterior(
    data: EventBatch,
    num_marks: int | None = None,
    num_samples: int = 1000,
    num_warmup: int = 500,
    num_chains: int = 1,
    seed: int = 0,
    priors: Priors | Mapping[str, float] | None = None,
    target_accept: float = 0.8,
) -> Posterior:
    """Posterior samples of ``baseline``, ``adjacency`` and ``decay`` of the exponential Hawkes process
    given ``data`` (all sequences, each on its own window), by NUTS (numpyro) on the exact likelihood.

    ``num_marks``: ``K`` (default the data's). ``num_samples`` draws per chain after ``num_warmup``
    adaptation steps; ``num_chains`` independent chains (vectorised in one compiled program; more
    than one gives a meaningful ``r_hat`` in :meth:`Posterior.summary`). ``priors``: :class:`Priors` or
    a mapping of its fields. ``target_accept``: NUTS's target acceptance probability (raise it towards
    0.95 if divergences are reported).
    """
    jax, jnp, _ = _require()
    if not isinstance(data, EventBatch):
        raise TypeError(f"data must be an EventBatch, got {type(data).__name__}")
    K = data.num_marks if num_marks is None else _positive_int("num_marks", num_marks)
    if data.num_marks > K:
        raise ValueError(f"num_marks={K} but the data have {data.num_marks} mark types")
    num_samples = _positive_int("num_samples", num_samples)
    num_warmup = _positive_int("num_warmup", num_warmup)
    num_chains = _positive_int("num_chains", num_chains)
    if not (isinstance(target_accept, float) and 0 < target_accept < 1):
        raise ValueError(f"target_accept must be a number in (0, 1), got {target_accept!r}")
    priors = _as_priors(priors)
    n = int(data.num_events)
    arrays = _event_arrays(data, pad_to=_padded_size(n))
    duration = float(arrays["duration"].sum())
    if n == 0 or not duration > 0:
        raise ValueError(f"sample_posterior needs events and a window of positive length: {n} events over "
                         f"a total time of {duration}")
    resolved = priors.resolved(n / duration)
    hyper = np.array([resolved.baseline_scale, resolved.adjacency_scale, math.log(resolved.decay_median),
                      resolved.decay_sd, duration])
    start = _time.perf_counter()
    with jax.enable_x64(True):
        sampler = _compiled_sampler(K, num_warmup, num_samples, float(target_accept))
        model_arrays = {k: jnp.asarray(v) for k, v in arrays.items() if k not in ("duration", "seq")}
        keys = jax.random.split(jax.random.PRNGKey(int(seed)), num_chains)
        z, diverging, steps = sampler(keys, model_arrays, jnp.asarray(hyper))
        draws = {name: np.exp(np.asarray(v)).reshape(num_chains * num_samples, *np.shape(v)[2:]) for name, v in z.items()}
        diverging = int(np.asarray(diverging).sum())
        steps = float(np.asarray(steps).mean())
    return Posterior(baseline=draws["baseline"], adjacency=draws["adjacency"], decay=draws["decay"],
                     num_chains=num_chains, num_divergences=diverging, priors=resolved,
                     seconds=_time.perf_counter() - start,
                     extra={"num_events": n, "padded_to": arrays["dt"].size, "mean_leapfrog_steps": steps})
