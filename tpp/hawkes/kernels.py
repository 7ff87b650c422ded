"""Parametric kernels with finite support ``[0, W]`` for Hawkes processes (FaDIn, Staerman et al. 2023).

Each kernel is a density on ``[0, W]``: it integrates to 1 there, so a Hawkes adjacency
``A[i, j]`` is the integral of ``phi_ij = A[i, j] * kernel_ij``. A kernel family knows

* ``shape(t, p)``: the unnormalised density, differentiable in its parameters (torch);
* ``cdf(x, p)``: its normalised distribution function on ``[0, W]``, in closed form, which gives
  exact compensators in continuous time;
* ``sample(p, lower, rng)``: exact draws of delays conditioned on ``delay > lower`` (inverse CDF
  where it has a closed form, rejection from a uniform proposal under the density's maximum
  otherwise), used by the branching simulation.

Parameters are per pair ``[K, K]`` and live unconstrained in the model; ``constrain`` maps them
to their domain (softplus for scales and shapes, which cannot reach 0, so no normalisation ever
becomes 0/0).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tpp.options import Interval, KernelName, check_params

__all__ = [
    "Kernel",
    "TruncatedGaussian",
    "RaisedCosine",
    "TruncatedExponential",
    "Kumaraswamy",
    "ParametricKernel",
    "get_kernel",
    "KERNELS",
]

Params = Mapping[str, Tensor]


def _softplus_inverse(x: Tensor) -> Tensor:
    return x + torch.log(-torch.expm1(-x))


class Kernel(abc.ABC):
    """A family of densities on ``[0, W]`` with named parameters (see the module docstring)."""

    name: str = ""
    param_names: tuple[str, ...] = ()
    positive: tuple[str, ...] = ()  # parameters kept > 0 by a softplus

    _constraints = {"support": Interval(0, None, closed="neither")}

    def __init__(self, support: float) -> None:
        check_params(self, support=support)
        self.support = float(support)

    # ---------------------------------------------------------------- parameters
    @abc.abstractmethod
    def default_params(self) -> dict[str, float]:
        """A start for fitting: values in the middle of the support's scale."""

    def constrain(self, raw: Params) -> dict[str, Tensor]:
        return {k: (F.softplus(v) if k in self.positive else v) for k, v in raw.items()}

    def unconstrain(self, params: Params) -> dict[str, Tensor]:
        out = {}
        for k, v in params.items():
            v = torch.as_tensor(v, dtype=torch.float64)
            if k in self.positive:
                if torch.any(v <= 0):
                    raise ValueError(f"kernel parameter {k!r} must be positive, got {v.tolist()}")
                out[k] = _softplus_inverse(v)
            else:
                out[k] = v
        return out

    # ---------------------------------------------------------------- density
    @abc.abstractmethod
    def shape(self, t: Tensor, p: Params) -> Tensor:
        """Unnormalised density at ``t`` (0 outside ``(0, W]``)."""

    @abc.abstractmethod
    def cdf(self, x: Tensor, p: Params) -> Tensor:
        """Normalised distribution function ``int_0^x pdf``, clamped to ``[0, 1]``."""

    def pdf(self, t: Tensor, p: Params) -> Tensor:
        """Density on ``[0, W]``: ``shape / int_0^W shape``; 0 outside ``(0, W]``."""
        return self.shape(t, p) / self._mass(p)

    @abc.abstractmethod
    def _mass(self, p: Params) -> Tensor:
        """``int_0^W shape``."""

    def _inside(self, t: Tensor) -> Tensor:
        return (t > 0) & (t <= self.support)

    # ---------------------------------------------------------------- sampling
    @abc.abstractmethod
    def sample(self, p: Mapping[str, np.ndarray], lower: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Delays ``> lower`` (one per entry of the parameter arrays), exact."""

    def _rejection(
        self, p: Mapping[str, np.ndarray], lower: np.ndarray, rng: np.random.Generator, bound: np.ndarray
    ) -> np.ndarray:
        """Uniform proposal on ``[lower, W]`` accepted with probability ``pdf / bound`` (``bound >= pdf``)."""
        n = lower.size
        out = np.empty(n)
        todo = np.arange(n)
        with torch.no_grad():
            while todo.size:
                x = lower[todo] + rng.random(todo.size) * (self.support - lower[todo])
                sub = {k: torch.as_tensor(v[todo]) for k, v in p.items()}
                dens = self.pdf(torch.as_tensor(x), sub).numpy()
                ok = rng.random(todo.size) * bound[todo] <= dens
                out[todo[ok]] = x[ok]
                todo = todo[~ok]
        return out


class TruncatedGaussian(Kernel):
    """Gaussian ``N(m, sigma^2)`` restricted to ``[0, W]``: a latency ``m`` with spread ``sigma``."""

    name = "truncated-gaussian"
    param_names = ("m", "sigma")
    positive = ("sigma",)

    def default_params(self) -> dict[str, float]:
        return {"m": self.support / 2, "sigma": self.support / 4}

    def shape(self, t: Tensor, p: Params) -> Tensor:
        z = (t - p["m"]) / p["sigma"]
        return torch.where(self._inside(t), torch.exp(-0.5 * z * z) / (p["sigma"] * math.sqrt(2 * math.pi)), 0.0)

    def _mass(self, p: Params) -> Tensor:
        return torch.special.ndtr((self.support - p["m"]) / p["sigma"]) - torch.special.ndtr(-p["m"] / p["sigma"])

    def cdf(self, x: Tensor, p: Params) -> Tensor:
        x = x.clamp(0, self.support)
        low = torch.special.ndtr(-p["m"] / p["sigma"])
        return (torch.special.ndtr((x - p["m"]) / p["sigma"]) - low) / self._mass(p)

    def sample(self, p, lower, rng):
        m, s = p["m"], p["sigma"]
        with torch.no_grad():
            lo = torch.special.ndtr(torch.as_tensor((lower - m) / s)).numpy()
            hi = torch.special.ndtr(torch.as_tensor((self.support - m) / s)).numpy()
        if np.all(hi - lo > 1e-12):
            u = lo + rng.random(lower.size) * (hi - lo)
            with torch.no_grad():
                x = m + s * torch.special.ndtri(torch.as_tensor(u)).numpy()
            return np.clip(x, lower, self.support)
        return self._rejection(p, lower, rng, self._max_density(p, lower))  # far tail: inverse CDF loses precision

    def _max_density(self, p, lower):
        peak = np.clip(p["m"], lower, self.support)
        with torch.no_grad():
            return self.pdf(torch.as_tensor(np.maximum(peak, 1e-300)), {k: torch.as_tensor(v) for k, v in p.items()}).numpy()


class RaisedCosine(Kernel):
    """Raised cosine on ``[u, u + 2 sigma]``: ``(1 - cos(pi (t - u) / sigma)) / (2 sigma)`` (FaDIn, eq. 9)."""

    name = "raised-cosine"
    param_names = ("u", "sigma")
    positive = ("u", "sigma")

    def default_params(self) -> dict[str, float]:
        return {"u": self.support / 10, "sigma": self.support / 4}

    def _antiderivative(self, x: Tensor, p: Params) -> Tensor:
        y = (x - p["u"]).clamp(min=0)
        y = torch.minimum(y, 2 * p["sigma"])
        return (y - p["sigma"] / math.pi * torch.sin(math.pi * y / p["sigma"])) / (2 * p["sigma"])

    def shape(self, t: Tensor, p: Params) -> Tensor:
        y = t - p["u"]
        on = (y >= 0) & (y <= 2 * p["sigma"]) & self._inside(t)
        return torch.where(on, (1 - torch.cos(math.pi * y / p["sigma"])) / (2 * p["sigma"]), 0.0)

    def _mass(self, p: Params) -> Tensor:
        return self._antiderivative(torch.as_tensor(self.support, dtype=p["u"].dtype), p)

    def cdf(self, x: Tensor, p: Params) -> Tensor:
        return self._antiderivative(x.clamp(0, self.support), p) / self._mass(p)

    def sample(self, p, lower, rng):
        # Propose on the kernel's own support: rejection then accepts half the draws on average.
        n = lower.size
        out = np.empty(n)
        todo = np.arange(n)
        u, s = p["u"], p["sigma"]
        start = np.maximum(lower, u)
        end = np.minimum(u + 2 * s, self.support)
        while todo.size:
            x = start[todo] + rng.random(todo.size) * (end[todo] - start[todo])
            dens = 1 - np.cos(np.pi * (x - u[todo]) / s[todo])  # <= 2
            ok = rng.random(todo.size) * 2 <= dens
            out[todo[ok]] = x[ok]
            todo = todo[~ok]
        return out


class TruncatedExponential(Kernel):
    """``decay * exp(-decay t)`` restricted to ``[0, W]``."""

    name = "truncated-exponential"
    param_names = ("decay",)
    positive = ("decay",)

    def default_params(self) -> dict[str, float]:
        return {"decay": 3.0 / self.support}

    def shape(self, t: Tensor, p: Params) -> Tensor:
        return torch.where(self._inside(t), p["decay"] * torch.exp(-p["decay"] * t.clamp(min=0)), 0.0)

    def _mass(self, p: Params) -> Tensor:
        return -torch.expm1(-p["decay"] * self.support)

    def cdf(self, x: Tensor, p: Params) -> Tensor:
        return -torch.expm1(-p["decay"] * x.clamp(0, self.support)) / self._mass(p)

    def sample(self, p, lower, rng):
        beta = p["decay"]
        lo = -np.expm1(-beta * lower)
        hi = -np.expm1(-beta * self.support)
        u = lo + rng.random(lower.size) * (hi - lo)
        return np.clip(-np.log1p(-u) / beta, lower, self.support)


class Kumaraswamy(Kernel):
    """Kumaraswamy density of ``t / W``: ``a b x^(a-1) (1 - x^a)^(b-1) / W`` (FaDIn's flexible shape)."""

    name = "kumaraswamy"
    param_names = ("a", "b")
    positive = ("a", "b")

    def default_params(self) -> dict[str, float]:
        return {"a": 2.0, "b": 2.0}

    def shape(self, t: Tensor, p: Params) -> Tensor:
        inside = self._inside(t) & (t < self.support)
        x = torch.where(inside, t / self.support, torch.full_like(t, 0.5))
        a, b = p["a"], p["b"]
        log_density = torch.log(a) + torch.log(b) + (a - 1) * torch.log(x) + (b - 1) * torch.log1p(-(x**a))
        return torch.where(inside, torch.exp(log_density) / self.support, 0.0)

    def _mass(self, p: Params) -> Tensor:
        return torch.ones_like(p["a"])

    def cdf(self, x: Tensor, p: Params) -> Tensor:
        y = (x / self.support).clamp(0, 1)
        return 1 - (1 - y ** p["a"]) ** p["b"]

    def sample(self, p, lower, rng):
        a, b = p["a"], p["b"]
        y = np.clip(lower / self.support, 0, 1)
        lo = 1 - (1 - y**a) ** b
        u = lo + rng.random(lower.size) * (1 - lo)
        x = (1 - (1 - u) ** (1 / b)) ** (1 / a)
        return np.clip(x * self.support, lower, self.support)


class ParametricKernel(Kernel):
    """A user-supplied kernel: ``fn(t, **params)`` returns the unnormalised density (torch ops).

    Normalisation and the distribution function use ``num_points``-point Gauss-Legendre
    quadrature of ``fn``; gradients come from autograd, no derivative to write. ``positive``
    names the parameters kept > 0. Sampling is by rejection under 1.5 times the maximum of the
    density found on a 2000-point grid, so ``fn`` should be smooth at that scale. The support is
    the model's (``FaDInHawkes(support=W)``) unless given here.

    Example: ``ParametricKernel(lambda t, k, s: t ** (k - 1) * torch.exp(-t / s), {"k": 2.0, "s": 0.5},
    positive=("k", "s"))`` is a truncated gamma kernel.
    """

    def __init__(
        self,
        fn: Callable[..., Tensor],
        params: Mapping[str, float],
        positive: tuple[str, ...] = (),
        support: float | None = None,
        num_points: int = 64,
        name: str = "parametric",
    ) -> None:
        if not callable(fn):
            raise ValueError("ParametricKernel needs a callable fn(t, **params)")
        unknown = set(positive) - set(params)
        if unknown:
            raise ValueError(f"positive names unknown parameters {sorted(unknown)}")
        self.fn = fn
        self.params = dict(params)
        self.name = name
        self.param_names = tuple(params)
        self.positive = tuple(positive)
        self.support = float(support) if support is not None else float("nan")
        x, w = np.polynomial.legendre.leggauss(num_points)
        self._nodes, self._weights = torch.as_tensor(x), torch.as_tensor(w)

    def bind(self, support: float) -> "ParametricKernel":
        """This kernel on the model's support."""
        Kernel.__init__(self, support)
        return self

    def default_params(self) -> dict[str, float]:
        return dict(self.params)

    def shape(self, t: Tensor, p: Params) -> Tensor:
        safe = t.clamp(min=1e-12, max=self.support)
        return torch.where(self._inside(t), self.fn(safe, **p), 0.0)

    def _integral_to(self, x: Tensor, p: Params) -> Tensor:
        x = x.clamp(0, self.support)
        nodes = (x[..., None] / 2) * (self._nodes.to(x.dtype) + 1)
        w = (x[..., None] / 2) * self._weights.to(x.dtype)
        values = self.fn(nodes.clamp(min=1e-12), **{k: v[..., None] for k, v in p.items()})
        return (values * w).sum(-1)

    def _mass(self, p: Params) -> Tensor:
        ref = torch.broadcast_tensors(*p.values())[0]
        return self._integral_to(torch.full_like(ref, self.support), p)

    def cdf(self, x: Tensor, p: Params) -> Tensor:
        x, *rest = torch.broadcast_tensors(x, *p.values())
        pb = dict(zip(p.keys(), rest))
        return self._integral_to(x, pb) / self._mass(pb)

    def sample(self, p, lower, rng):
        grid = torch.linspace(0, self.support, 2001, dtype=torch.float64)[1:, None]
        with torch.no_grad():
            dens = self.pdf(grid, {k: torch.as_tensor(v)[None, :] for k, v in p.items()})
        return self._rejection(p, lower, rng, 1.5 * dens.max(0).values.numpy())


KERNELS: dict[str, type[Kernel]] = {
    cls.name: cls for cls in (TruncatedGaussian, RaisedCosine, TruncatedExponential, Kumaraswamy)
}


def get_kernel(kernel: KernelName | str | Kernel, support: float) -> Kernel:
    """A kernel instance from its :class:`~tpp.options.KernelName` or that name's exact value
    (``truncated-gaussian``, ``raised-cosine``, ``truncated-exponential``, ``kumaraswamy``), or a
    :class:`Kernel` (e.g. :class:`ParametricKernel`)."""
    if isinstance(kernel, ParametricKernel) and not np.isfinite(kernel.support):
        return kernel.bind(support)
    if isinstance(kernel, Kernel):
        if abs(kernel.support - support) > 1e-12 * max(1.0, support):
            raise ValueError(f"kernel support {kernel.support} differs from the model's support {support}")
        return kernel
    try:
        name = KernelName(kernel)
    except ValueError:
        raise ValueError(f"unknown kernel {kernel!r}: choose one of {', '.join(KERNELS)} (tpp.options.KernelName) "
                         "or pass a ParametricKernel") from None
    return KERNELS[name.value](support)
