"""Spatio-temporal data helpers: the Pinwheel generator and location standardisation.

:func:`pinwheel` rebuilds the synthetic "Pinwheel" data set of Chen, Amos & Nickel (ICLR 2021, section 6
and appendix; ``toy_datasets.PinwheelHawkes`` of facebookresearch/neural_stpp) from its description and
code, with our own samplers (the numbers of a draw differ from theirs; the distribution is the same):

* time: a 10-variate Hawkes process (one type per cluster) on ``[0, 30]``, baseline ``0.05`` per
  cluster, exponential kernel ``0.6 * 10 exp(-10 t)`` from cluster ``k`` to cluster ``k + 1 (mod 10)``
  only (no self-excitation): ``adjacency[k + 1, k] = 0.6``, decay ``omega = 10``; the branching ratio
  is 0.6, so a sequence holds about ``30 * 10 * 0.05 / (1 - 0.6) = 37.5`` events;
* space: an event of cluster ``k`` is drawn from the ``k``-th arm of the pinwheel of 10 arms
  (``pinwheel`` of the reference code: ``f ~ N((1, 0), diag(0.3^2, 0.1^2))``, angle
  ``2 pi k / 10 + 0.25 exp(f_0)``, location ``2 R(angle)^T f``);
* the paper's split: 2000 training, 200 validation and 200 test sequences (:func:`pinwheel_splits`).

:class:`LocationScaler` standardises locations with the training mean and scale; a density computed in
standardised units converts to the data's units by adding :meth:`LocationScaler.log_det_inverse`
(``- sum_d log scale_d``, ``- D log scale`` for the isotropic default).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor, nn

from tpp.events import EventBatch
from tpp.model import Seed
from tpp.process import as_numpy_rng

__all__ = ["PINWHEEL", "LocationScaler", "pinwheel", "pinwheel_arm_log_density", "pinwheel_locations",
           "pinwheel_log_likelihood", "pinwheel_splits"]

#: The Pinwheel generator's parameters (Chen, Amos & Nickel 2021; ``toy_datasets.py`` of their code).
PINWHEEL = {
    "num_clusters": 10,
    "baseline": 0.05,  # per cluster
    "excitation": 0.6,  # adjacency[k + 1, k]: integral of the kernel from cluster k to cluster k + 1
    "decay": 10.0,  # omega of the kernel omega exp(-omega t)
    "t_end": 30.0,
    "radial_std": 0.3,
    "tangential_std": 0.1,
    "rate": 0.25,  # the arms' twist
    "splits": (2000, 200, 200),  # train, val, test sequences
    "seed": 13579,  # the reference code's seed (its numbers come from another generator: only the law matches)
}


def pinwheel_locations(clusters: np.ndarray, rng: np.random.Generator, num_clusters: int = 10) -> np.ndarray:
    """``[N, 2]`` locations: one draw from the pinwheel arm of each cluster id in ``clusters [N]``."""
    p = PINWHEEL
    clusters = np.asarray(clusters, np.int64)
    f = rng.standard_normal((clusters.size, 2)) * np.array([p["radial_std"], p["tangential_std"]])
    f[:, 0] += 1.0
    angles = 2 * np.pi * clusters / num_clusters + p["rate"] * np.exp(f[:, 0])
    cos, sin = np.cos(angles), np.sin(angles)
    # the reference's einsum("ti,tij->tj", f, [[cos, -sin], [sin, cos]]), times 2
    return 2 * np.stack([f[:, 0] * cos + f[:, 1] * sin, -f[:, 0] * sin + f[:, 1] * cos], axis=1)


def _pinwheel_hawkes():
    """The clusters' 10-variate exponential Hawkes process (module docstring): cluster ``k`` excites ``k + 1``."""
    from tpp.hawkes import ExpHawkes

    p = PINWHEEL
    K = p["num_clusters"]
    adjacency = np.zeros((K, K))
    adjacency[(np.arange(K) + 1) % K, np.arange(K)] = p["excitation"]
    return ExpHawkes.from_params([p["baseline"]] * K, adjacency, p["decay"])


def pinwheel_arm_log_density(x: np.ndarray, cluster: int, num_clusters: int = 10, grid: int = 4096) -> np.ndarray:
    """``[N]`` log-density of locations ``x [N, 2]`` under arm ``cluster`` of :func:`pinwheel_locations`.

    In polar coordinates ``f = rho (cos psi, sin psi)`` the arm's map is ``x = 2 rho (cos phi, sin phi)`` with
    ``phi = psi - theta(f_0)``, ``theta(f_0) = 2 pi k / K + rate exp(f_0)``: the radius is kept (doubled) and the
    angle twisted, so ``p(x) = sum over the preimages f of p_f(f) / (4 |1 + rate exp(f_0) f_1|)`` (the
    Jacobian ``dphi/dpsi = 1 + theta'(f_0) f_1``, times 4 for the doubling). The preimages are the roots of
    ``psi - theta(rho cos psi) - phi`` (mod ``2 pi``) on ``[0, 2 pi)``: bracketed on a ``grid``-point circle, then
    bisected. Where the twist folds the circle (``f_1 << 0`` far in the normal's tail) there are three.
    """
    x = np.asarray(x, np.float64).reshape(-1, 2)
    chunk = max(1, 2**22 // (grid + 1))  # rows per pass: a few [rows, grid] float64 arrays of 32 MB
    if len(x) > chunk:
        return np.concatenate([pinwheel_arm_log_density(x[i:i + chunk], cluster, num_clusters, grid)
                               for i in range(0, len(x), chunk)])
    p = PINWHEEL
    rho = np.hypot(x[:, 0], x[:, 1]) / 2
    phi = np.arctan2(x[:, 1], x[:, 0])
    base = 2 * np.pi * int(cluster) / num_clusters

    def gap(psi: np.ndarray, rho: np.ndarray, phi: np.ndarray) -> np.ndarray:  # wrapped to [-pi, pi)
        d = psi - (base + p["rate"] * np.exp(rho * np.cos(psi))) - phi
        return (d + np.pi) % (2 * np.pi) - np.pi

    psi = np.linspace(0.0, 2 * np.pi, grid + 1)[None, :].repeat(len(x), 0)
    g = gap(psi, rho[:, None], phi[:, None])
    # a sign change with a small step is a root; a jump of ~2 pi is the wrap-around, not a root
    root = (np.sign(g[:, :-1]) != np.sign(g[:, 1:])) & (np.abs(g[:, 1:] - g[:, :-1]) < np.pi)
    rows, cols = np.nonzero(root)
    lo, hi = psi[rows, cols], psi[rows, cols + 1]
    glo = g[rows, cols]
    for _ in range(60):
        mid = (lo + hi) / 2
        gm = gap(mid, rho[rows], phi[rows])
        left = np.sign(gm) == np.sign(glo)
        lo, glo, hi = np.where(left, mid, lo), np.where(left, gm, glo), np.where(left, hi, mid)
    psi_root = (lo + hi) / 2
    f0, f1 = rho[rows] * np.cos(psi_root), rho[rows] * np.sin(psi_root)
    log_pf = (-0.5 * ((f0 - 1.0) / p["radial_std"]) ** 2 - 0.5 * (f1 / p["tangential_std"]) ** 2
              - np.log(2 * np.pi * p["radial_std"] * p["tangential_std"]))
    terms = np.exp(log_pf) / (4 * np.abs(1 + p["rate"] * np.exp(f0) * f1))
    density = np.zeros(len(x))
    np.add.at(density, rows, terms)
    with np.errstate(divide="ignore"):
        return np.log(density)


def pinwheel_log_likelihood(batch: EventBatch) -> tuple[Tensor, Tensor]:
    """``(time [B], space [B])``: the log-likelihood of the generating law (module docstring) split as the
    models report it, given each event's cluster as its mark (``pinwheel(..., clusters_as_marks=True)``).

    The clusters are latent in the data, so this is the law's likelihood when the history's clusters are
    known: time ``sum_i log lambda(t_i) - int lambda`` with ``lambda = sum_k lambda_k`` the 10-variate Hawkes
    intensity, space ``sum_i log sum_k (lambda_k(t_i) / lambda(t_i)) f_k(x_i)`` (the current event's cluster
    summed out, :func:`pinwheel_arm_log_density`). The arms barely overlap, so a location names its cluster
    almost surely and this is, to a good approximation, the best score any model of the observed events can
    expect: the ceiling a benchmark's numbers sit under. Data units (no standardisation).
    """
    K = PINWHEEL["num_clusters"]
    if batch.num_marks != K or batch.features is None or batch.features.shape[-1] != 2:
        raise ValueError(f"pinwheel_log_likelihood needs the clusters as marks ({K} types) and the x, y features "
                         f"(pinwheel(..., clusters_as_marks=True)); got {batch.num_marks} mark type(s) and "
                         f"features {list(batch.feature_names or [])}")
    law = _pinwheel_hawkes()
    with torch.no_grad():
        rates = law.intensity(batch, batch.time).double()  # [B, L, K], strictly before each event
        compensator = law.compensator(batch).double()
    mask = batch.mask
    x = batch.features[mask].double().numpy()
    log_f = torch.from_numpy(np.stack([pinwheel_arm_log_density(x, k, K) for k in range(K)], -1))  # [N, K]
    total = rates.sum(-1)[mask]
    log_total = total.log()
    space_flat = torch.logsumexp(rates[mask].log() + log_f, -1) - log_total
    time_ll = torch.zeros(mask.shape, dtype=torch.float64).masked_scatter(mask, log_total).sum(1) - compensator
    space_ll = torch.zeros(mask.shape, dtype=torch.float64).masked_scatter(mask, space_flat).sum(1)
    return time_ll, space_ll


def pinwheel(n_sequences: int, seed: Seed = PINWHEEL["seed"], *, clusters_as_marks: bool = False,
             t_end: float = PINWHEEL["t_end"]) -> EventBatch:
    """``n_sequences`` Pinwheel sequences on ``[0, t_end]`` (module docstring) with features ``x, y``.

    The cluster of each event is latent in the paper (one mark type, the default); ``clusters_as_marks=True``
    returns it as the mark (10 types), for plots and checks.
    """
    if isinstance(n_sequences, bool) or not isinstance(n_sequences, (int, np.integer)) or n_sequences < 1:
        raise ValueError(f"n_sequences must be a positive integer, got {n_sequences!r}")
    K = PINWHEEL["num_clusters"]
    rng = as_numpy_rng(seed)
    process = _pinwheel_hawkes()
    times = process.sample(int(n_sequences), float(t_end), generator=rng)
    flat = times.to_flat()
    xy = pinwheel_locations(flat["marks"], rng, K)
    marks = flat["marks"] if clusters_as_marks else np.zeros_like(flat["marks"])
    return EventBatch.from_flat(flat["times"], flat["seq_offsets"], flat["t_start"], flat["t_end"], marks,
                                K if clusters_as_marks else 1, features=xy, feature_names=["x", "y"],
                                source="pinwheel")


def pinwheel_splits(seed: Seed = PINWHEEL["seed"], sizes: tuple[int, int, int] = PINWHEEL["splits"], *,
                    clusters_as_marks: bool = False) -> tuple[EventBatch, EventBatch, EventBatch]:
    """(train, val, test) Pinwheel batches of the paper's sizes (2000/200/200), from one seeded stream (the same
    events with ``clusters_as_marks=True``, which only keeps the latent clusters as marks)."""
    rng = as_numpy_rng(seed)
    return tuple(pinwheel(int(n), rng, clusters_as_marks=clusters_as_marks) for n in sizes)  # type: ignore[return-value]


class LocationScaler(nn.Module):
    """Standardise locations: ``z = (x - mean) / scale`` with ``mean`` and ``scale`` (buffers, ``[D]``) from the
    training locations (:meth:`fit`).

    ``isotropic=True`` (default) uses one scale for every coordinate (the root mean variance), so distances
    keep their geometry (longitude and latitude in degrees); ``False`` one scale per coordinate. A density
    of ``z`` becomes a density of ``x`` (in the data's units) by adding :meth:`log_det_inverse`
    ``= - sum_d log scale_d``. A coordinate without spread (one location, or all equal) keeps scale 1.
    """

    def __init__(self, feature_dim: int, isotropic: bool = True) -> None:
        super().__init__()
        self.feature_dim = int(feature_dim)
        self.isotropic = bool(isotropic)
        self.register_buffer("mean", torch.zeros(self.feature_dim, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(self.feature_dim, dtype=torch.float64))

    @torch.no_grad()
    def fit(self, x: Tensor) -> "LocationScaler":
        """Set ``mean`` and ``scale`` from locations ``x [N, D]`` (float64); returns self."""
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1, self.feature_dim)
        if x.shape[0] == 0:
            return self
        mean = x.mean(0)
        var = x.var(0, unbiased=False) if x.shape[0] > 1 else torch.zeros_like(mean)
        scale = var.mean().sqrt().expand_as(var).clone() if self.isotropic else var.sqrt()
        scale = torch.where(torch.isfinite(scale) & (scale > 0), scale, torch.ones_like(scale))
        self.mean.copy_(mean)
        self.scale.copy_(scale)
        return self

    def standardise(self, x: Tensor) -> Tensor:
        """``(x - mean) / scale`` over the last dimension."""
        return (x - self.mean) / self.scale

    def unstandardise(self, z: Tensor) -> Tensor:
        """``z * scale + mean``: back to the data's units."""
        return z * self.scale + self.mean

    def log_det_inverse(self) -> Tensor:
        """``- sum_d log scale_d``: add it to a log-density of ``z`` to get the log-density of ``x``."""
        return -self.scale.log().sum()


def _warn_dropped_features(names: tuple[str, ...], kept: tuple[str, ...], owner: str) -> None:
    """A sampled continuation carries only the location features: say which others were dropped."""
    dropped = [n for n in names if n not in kept]
    if dropped:
        warnings.warn(f"{owner}.sample returns the location features {list(kept)} only; the history's other features "
                      f"{dropped} are left out (the model does not generate them)", UserWarning, stacklevel=5)


def _normal_log_density(z: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """``sum_d log N(z_d; mean_d, exp(log_scale_d)^2)`` over the last dimension."""
    u = (z - mean) * torch.exp(-log_scale)
    return (-0.5 * u * u - log_scale).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)
