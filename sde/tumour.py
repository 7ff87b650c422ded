"""Tumour growth under chemotherapy and radiotherapy with time-varying confounding and informative sampling.

Our rewrite of the cancer simulator used by the Bayesian neural CDE experiments (Hess et al., ICLR 2024,
``src/cancer_sim/cancer_simulation.py`` of their code), itself the PK-PD model of Geng et al. (Sci. Rep.
2017) for non-small-cell lung cancer as simulated by Lim et al. (NeurIPS 2018), Bica et al. (ICLR 2020),
Seedat et al. (TE-CDE, ICML 2022) and Vanderschueren et al. (TESAR-CDE, 2023). Time is in days.

Volume (cm^3) of patient ``i``, one step per day::

    V(t+1) = V(t) [1 + rho log(K / V(t)) - beta_c C(t) - (alpha d(t) + beta d(t)^2) + eps(t)]
    C(t) = C(t-1) / 2 + 5 a_c(t)          (chemo concentration, 5 units per dose, one-day half-life)
    d(t) = 2 a_r(t)                        (radiotherapy dose, 2 Gy per fraction)
    eps(t) ~ N(0, noise_level^2)

Without treatment and noise this is the Euler step of Gompertz growth ``dV/dt = rho V log(K / V)``
(closed form ``V(t) = K exp(log(V0 / K) e^{-rho t})``; the day step is small against ``1 / rho``).
A volume pushed to ``<= 0``, or lost with probability ``exp(-V(t+1) rho_cells)`` (fewer than about one
cell left; ``rho_cells = 5.8e8`` cells per cm^3), is set to ``1e-8`` (recovery), as in their code.
Deaths are off (their threshold is disabled, ``V > inf``).

Patients (:func:`patient_parameters`): stage I-IV drawn with the proportions of Detterbeck and Gibson
(2008); initial diameter log-normal per stage, truncated to ``[0.3, 5 or 13]`` cm; ``(alpha, rho)``
bivariate normal, means ``(0.0398, 7e-5)``, stds ``(0.168, 7.23e-3)``, correlation 0.87, both
``> 0`` (rejection); ``beta = alpha / 10``; ``beta_c = 0.028 + 0.0007 z``, ``z`` standard normal
truncated to keep ``beta_c > 0``; ``K = volume of a 30 cm sphere``. Patient type 1, 2, 3 uniform:
type 1 has ``alpha`` raised by ``0.1 * 0.0398`` (radio-sensitive), type 3 ``beta_c`` by ``0.1 * 0.028``.

Treatment policy (time-varying confounding): with ``D(t)`` the mean tumour diameter over the last
``window_size + 1`` days and ``d_max = 13`` cm,

    P(a_c(t) = 1) = P(a_r(t) = 1) = treatment_scale * sigmoid(gamma / d_max (D(t) - d_max / 2))

independently per day and treatment. ``gamma`` (``chemo_coeff = radio_coeff`` of Lim et al.) sets the
confounding: ``gamma = 0`` treats at random (rate ``treatment_scale / 2``), larger ``gamma`` treats
large tumours more. ``treatment_scale = 1/7`` (about one treatment a week) is the BNCDE code's
rescaling (Bica et al. and TE-CDE use 1). A given ``actions`` array replaces the policy (their
sequential / combined arms, or a counterfactual plan).

Observation (informative sampling, the BNCDE / TESAR-CDE process): day 0 is observed; day ``t > 0``
is observed with probability ``min(1, max_intensity * sigmoid(obs_coeff^2 / d_max (D(t) - d_max / 2)))``
(their ``obs_sigmoid_betas = obs_coeff / d_max`` multiplied by ``obs_coeff`` once more, kept as it is:
``obs_coeff = 2`` observes a 3 cm tumour about 30% of the days); ``obs_coeff = 0`` with
``max_intensity = 2`` observes every day.

Differences from their code: one vectorised loop over days for all patients (their loop is per
patient); a seeded NumPy generator instead of the global state; the treatments that drive ``V(t)``
(those of day ``t - 1``) sit on row ``t`` of :meth:`TumourSimulation.to_series`, so a forecast made at
day ``t0`` reads the planned treatments on the rows after ``t0``; :meth:`TumourSimulation.counterfactual`
re-runs the same patients with the same noise under another plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import expit
from scipy.stats import truncnorm

from tpp.model import Seed
from tpp.process import as_numpy_rng

if TYPE_CHECKING:  # the series batch is built in to_series only
    from sde.series import SeriesBatch

__all__ = ["TumourSimulation", "calc_diameter", "calc_volume", "gompertz", "log_outcome", "patient_parameters",
           "simulate_tumour"]

TUMOUR_CELL_DENSITY = 5.8e8  # cells per cm^3
EPS_VOLUME = 1e-8  # the volume of a recovered patient
LOG_OFFSET = 0.01  # cm^3: the detection floor of log_outcome
D_MAX = 13.0  # cm, the (disabled) death diameter; the policy's scale
CHEMO_DOSE, RADIO_DOSE, DRUG_HALF_LIFE = 5.0, 2.0, 1.0
# stage: (mu, sigma, lower, upper) of the log-normal initial diameter (cm), and the observed counts
STAGES = {"I": (1.72, 4.70, 0.3, 5.0), "II": (1.96, 1.63, 0.3, 13.0), "IIIA": (1.91, 9.40, 0.3, 13.0),
          "IIIB": (2.76, 6.87, 0.3, 13.0), "IV": (3.86, 8.82, 0.3, 13.0)}
STAGE_COUNTS = {"I": 1432, "II": 128, "IIIA": 1306, "IIIB": 7248, "IV": 12840}


def log_outcome(volume: Any, offset: float = LOG_OFFSET) -> Any:
    """``log(volume + offset)``: the log volume with a detection floor (``offset = 0.01`` cm^3, a 0.27 cm
    sphere), so a recovered patient (``1e-8``) reads ``log 0.01`` instead of an outlier at ``log 1e-8``."""
    return np.log(np.asarray(volume, np.float64) + offset)


def calc_volume(diameter: Any) -> Any:
    """Volume of a sphere of this diameter (tumours are taken spherical)."""
    return 4.0 / 3.0 * np.pi * (np.asarray(diameter, np.float64) / 2.0) ** 3


def calc_diameter(volume: Any) -> Any:
    """Diameter of a sphere of this volume."""
    return (np.asarray(volume, np.float64) / (4.0 / 3.0 * np.pi)) ** (1.0 / 3.0) * 2.0


def gompertz(v0: Any, rho: Any, K: Any, t: Any) -> Any:
    """Closed-form Gompertz growth ``K exp(log(v0 / K) e^{-rho t})`` (the untreated, noiseless flow)."""
    v0, rho, K, t = (np.asarray(x, np.float64) for x in (v0, rho, K, t))
    return K * np.exp(np.log(v0 / K) * np.exp(-rho * t))


def patient_parameters(num_patients: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-patient parameters (module docstring): stage, type, initial volume, alpha, beta, beta_c, rho, K."""
    n = int(num_patients)
    types = rng.choice([1, 2, 3], n)
    names = sorted(STAGES)
    counts = np.array([STAGE_COUNTS[s] for s in names], np.float64)
    stages = rng.choice(names, n, p=counts / counts.sum())
    diameter = np.empty(n)
    for s in names:
        pick = stages == s
        mu, sigma, lo, hi = STAGES[s]
        z = truncnorm.rvs((math.log(lo) - mu) / sigma, (math.log(hi) - mu) / sigma, size=int(pick.sum()),
                          random_state=rng)
        diameter[pick] = np.exp(mu + sigma * z)
    mean = np.array([0.0398, 7e-5])
    sd = np.array([0.168, 7.23e-3])
    cov = np.array([[sd[0] ** 2, 0.87 * sd[0] * sd[1]], [0.87 * sd[0] * sd[1], sd[1] ** 2]])
    kept = np.empty((0, 2))
    while len(kept) < n:  # both alpha and rho must be positive: redraw the rest
        draw = rng.multivariate_normal(mean, cov, size=n)
        kept = np.concatenate([kept, draw[(draw > 0).all(1)]])
    alpha = kept[:n, 0] + mean[0] * np.where(types == 1, 0.1, 0.0)
    rho = kept[:n, 1]
    bc_mean, bc_sd = 0.028, 0.0007
    beta_c = bc_mean + bc_sd * truncnorm.rvs(-bc_mean / bc_sd, np.inf, size=n, random_state=rng)
    beta_c = beta_c + bc_mean * np.where(types == 3, 0.1, 0.0)
    return {"patient_type": types, "stage": stages, "initial_volume": calc_volume(diameter), "alpha": alpha,
            "beta": alpha / 10.0, "beta_c": beta_c, "rho": rho, "K": np.full(n, float(calc_volume(30.0)))}


@dataclass
class TumourSimulation:
    """Simulated patients: arrays ``[N, T]`` over days ``0 .. T-1`` (see the module docstring).

    ``volume`` the true volume, ``observed`` whether it was measured that day, ``chemo`` / ``radio`` the
    treatments given that day (0/1), ``chemo_dosage`` ``C(t)``, ``chemo_prob`` / ``radio_prob`` /
    ``obs_prob`` the policy's and the observation process's probabilities, ``noise`` ``eps(t)`` and
    ``recovery_u`` the uniforms of the recovery draw (kept so a counterfactual reuses them), ``params``
    the per-patient parameters, ``settings`` the simulator's arguments."""

    volume: np.ndarray
    observed: np.ndarray
    chemo: np.ndarray
    radio: np.ndarray
    chemo_dosage: np.ndarray
    chemo_prob: np.ndarray
    radio_prob: np.ndarray
    obs_prob: np.ndarray
    noise: np.ndarray
    recovery_u: np.ndarray
    params: dict[str, np.ndarray]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def days(self) -> np.ndarray:
        """``[T]`` the day of each column."""
        return np.arange(self.volume.shape[1], dtype=np.float64)

    def __len__(self) -> int:
        return self.volume.shape[0]

    def to_series(self, upto: int | np.ndarray | None = None, *, log_volume: bool = False,
                  patients: np.ndarray | None = None, log_offset: float = LOG_OFFSET) -> SeriesBatch:
        """A :class:`~sde.series.SeriesBatch` of days ``0 .. upto`` (per patient, default all days).

        Channels ``volume`` (NaN on days not observed; with ``log_volume`` :func:`log_outcome`), ``chemo``,
        ``radio``: on row ``t`` the treatments given on day ``t - 1`` (those that took ``V(t-1)`` to
        ``V(t)``; zero on day 0), so the rows after a forecast's origin carry its treatment plan."""
        from sde.series import SeriesBatch

        idx = np.arange(len(self)) if patients is None else np.asarray(patients)
        T = self.volume.shape[1]
        ends = np.full(len(idx), T - 1) if upto is None else np.broadcast_to(np.asarray(upto), (len(idx),))
        vol = log_outcome(self.volume, log_offset) if log_volume else self.volume
        series = []
        for k, i in enumerate(idx):
            e = int(ends[k]) + 1
            v = np.where(self.observed[i, :e], vol[i, :e], np.nan)
            given = np.stack([np.r_[0.0, self.chemo[i, : e - 1]], np.r_[0.0, self.radio[i, : e - 1]]], 1)
            series.append((self.days[:e], np.column_stack([v, given])))
        return SeriesBatch.from_arrays(series, channel_names=("volume", "chemo", "radio"),
                                       seq_names=[f"patient{i}" for i in idx])

    def forecast_series(self, origins: int | np.ndarray, tau: int, *, patients: np.ndarray | None = None,
                        measured_only: bool = True, log_offset: float = LOG_OFFSET) -> SeriesBatch:
        """Series for a plan model (``BayesianNeuralCDE(plan_steps=tau)``): each patient's days ``0 .. t0``
        (the history, log volume) then ``tau`` plan rows (the treatments of days ``t0 .. t0+tau-1``, the
        volume blank), with targets ``[n, tau]`` the log volumes of days ``t0+1 .. t0+tau`` (NaN on the
        days not measured with ``measured_only``; all of them, the held-out truth, without)."""
        import torch

        from sde.series import SeriesBatch

        idx = np.arange(len(self)) if patients is None else np.asarray(patients)
        origins = np.broadcast_to(np.asarray(origins, np.int64), (len(idx),))
        if np.any(origins < 0) or np.any(origins + tau > self.volume.shape[1] - 1):
            raise ValueError(f"origins + tau must stay within the {self.volume.shape[1]} simulated days")
        batch = self.to_series(upto=origins + tau, log_volume=True, patients=idx, log_offset=log_offset)
        values = batch.values.clone()
        plan_rows = torch.arange(values.shape[1])[None] >= (batch.mask.sum(1) - tau)[:, None]
        values[..., 0] = values[..., 0].masked_fill(plan_rows & batch.mask, float("nan"))
        days = origins[:, None] + np.arange(1, tau + 1)
        y = log_outcome(self.volume[idx[:, None], days], log_offset)
        if measured_only:
            y = np.where(self.observed[idx[:, None], days], y, np.nan)
        return SeriesBatch(batch.time, values, batch.mask, targets=torch.tensor(y), channel_names=batch.channel_names,
                           seq_names=batch.seq_names, validate=False)

    def counterfactual(self, start: int | np.ndarray, plan: np.ndarray,
                       patients: np.ndarray | None = None) -> np.ndarray:
        """``[n, tau]`` volumes on days ``start+1 .. start+tau`` had the treatments of days ``start ..
        start+tau-1`` been ``plan [n or 1, tau, 2]`` (chemo, radio), with each patient's own noise and
        recovery draws: the potential outcomes of a plan. ``start`` per patient or shared."""
        idx = np.arange(len(self)) if patients is None else np.asarray(patients)
        plan = np.asarray(plan, np.float64)
        if plan.ndim != 3 or plan.shape[-1] != 2:
            raise ValueError(f"plan must be [n, tau, 2] (chemo, radio), got shape {plan.shape}")
        plan = np.broadcast_to(plan, (len(idx), *plan.shape[1:]))
        tau, T = plan.shape[1], self.volume.shape[1]
        start = np.broadcast_to(np.asarray(start, np.int64), (len(idx),))
        if np.any(start < 0) or np.any(start + tau > T - 1):
            raise ValueError(f"start + tau must stay within the {T} simulated days (the noise is drawn for them)")
        p = {k: v[idx] for k, v in self.params.items()}
        v = self.volume[idx, start]
        c = np.where(start > 0, self.chemo_dosage[idx, np.maximum(start - 1, 0)], 0.0)
        out = np.empty((len(idx), tau))
        for j in range(tau):
            t = start + j
            c = c * 0.5 ** (1.0 / DRUG_HALF_LIFE) + CHEMO_DOSE * plan[:, j, 0]
            v = _step(v, c, RADIO_DOSE * plan[:, j, 1], p, self.noise[idx, t], self.recovery_u[idx, t + 1])
            out[:, j] = v
        return out


def _step(v: np.ndarray, chemo_conc: np.ndarray, dose: np.ndarray, p: dict[str, np.ndarray], noise: np.ndarray,
          recovery_u: np.ndarray) -> np.ndarray:
    """One day of the PK-PD model (module docstring), recovery included."""
    with np.errstate(divide="ignore", invalid="ignore"):
        growth = p["rho"] * np.log(p["K"] / v)
    nxt = v * (1 + growth - p["beta_c"] * chemo_conc - (p["alpha"] * dose + p["beta"] * dose**2) + noise)
    # fewer than about one cell left (or a dose that overshoots): recovered, as in their code
    gone = (nxt <= 0) | (recovery_u < np.exp(-np.clip(nxt, 0, None) * TUMOUR_CELL_DENSITY))
    return np.where(gone, EPS_VOLUME, nxt)


def simulate_tumour(num_patients: int, gamma: float = 4.0, horizon: int = 60, seed: Seed = 0, *,
                    obs_coeff: float = 2.0, max_intensity: float = 1.0, noise_level: float = 0.01,
                    window_size: int = 15, treatment_scale: float = 1.0 / 7.0, actions: np.ndarray | None = None,
                    params: dict[str, np.ndarray] | None = None) -> TumourSimulation:
    """Simulate ``num_patients`` patients for ``horizon`` days (module docstring for the model).

    ``gamma``: confounding of the treatment policy; ``obs_coeff``, ``max_intensity``: the informative
    observation process; ``noise_level``: std of ``eps``; ``window_size``: days of the diameter average
    the policy and the observation process read; ``actions [N, horizon, 2]`` (chemo, radio) replaces the
    policy; ``params`` (from :func:`patient_parameters`) replaces the drawn patients."""
    for name, value in (("num_patients", num_patients), ("horizon", horizon)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name, value in (("gamma", gamma), ("noise_level", noise_level), ("max_intensity", max_intensity),
                        ("treatment_scale", treatment_scale)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    if treatment_scale > 1:
        raise ValueError(f"treatment_scale is a probability factor in [0, 1], got {treatment_scale!r}")
    rng = as_numpy_rng(seed)
    N, T = int(num_patients), int(horizon)
    p = patient_parameters(N, rng) if params is None else {k: np.asarray(v)[:N] for k, v in params.items()}
    if actions is not None:
        actions = np.asarray(actions, np.float64)
        if actions.shape != (N, T, 2):
            raise ValueError(f"actions must be [num_patients, horizon, 2] = [{N}, {T}, 2], got {actions.shape}")
    noise = rng.normal(0.0, noise_level, (N, T))
    recovery_u = rng.random((N, T))
    u_chemo, u_radio, u_obs = rng.random((N, T)), rng.random((N, T)), rng.random((N, T))
    volume = np.zeros((N, T))
    chemo, radio, dosage = np.zeros((N, T)), np.zeros((N, T)), np.zeros((N, T))
    p_chemo, p_radio, p_obs = np.zeros((N, T)), np.zeros((N, T)), np.zeros((N, T))
    diam = np.zeros((N, T))
    volume[:, 0] = p["initial_volume"]
    for t in range(T):
        diam[:, t] = calc_diameter(volume[:, t])
        recent = diam[:, max(t - window_size, 0) : t + 1].mean(1)  # their window: days t-w .. t
        score = recent - D_MAX / 2.0
        if actions is None:
            p_chemo[:, t] = p_radio[:, t] = treatment_scale * expit(gamma / D_MAX * score)
            chemo[:, t] = u_chemo[:, t] < p_chemo[:, t]
            radio[:, t] = u_radio[:, t] < p_radio[:, t]
        else:
            p_chemo[:, t], p_radio[:, t] = actions[:, t, 0], actions[:, t, 1]
            chemo[:, t], radio[:, t] = actions[:, t, 0], actions[:, t, 1]
        p_obs[:, t] = np.minimum(1.0, max_intensity * expit(obs_coeff**2 / D_MAX * score))
        previous = dosage[:, t - 1] if t > 0 else np.zeros(N)
        dosage[:, t] = previous * 0.5 ** (1.0 / DRUG_HALF_LIFE) + CHEMO_DOSE * chemo[:, t]
        if t < T - 1:
            volume[:, t + 1] = _step(volume[:, t], dosage[:, t], RADIO_DOSE * radio[:, t], p, noise[:, t],
                                     recovery_u[:, t + 1])
    observed = u_obs < p_obs
    observed[:, 0] = True  # the initial state is observed (their masked_vector)
    settings = {"num_patients": N, "gamma": float(gamma), "horizon": T, "obs_coeff": float(obs_coeff),
                "max_intensity": float(max_intensity), "noise_level": float(noise_level),
                "window_size": int(window_size), "treatment_scale": float(treatment_scale),
                "policy": "given actions" if actions is not None else "confounded"}
    return TumourSimulation(volume, observed, chemo, radio, dosage, p_chemo, p_radio, p_obs, noise, recovery_u, p,
                            settings)
