"""Sparse multivariate exponential Hawkes for many types (K = 100 ... 1000+): penalised MLE in memory O(N + nnz).

``lambda_i(t) = mu_i + sum_j A[i, j] sum_{t_m^j < t} beta exp(-beta (t - t_m^j))`` (the kernel of
:class:`~tpp.hawkes.ExpHawkes`, one decay ``beta``; row ``i`` the excited type, column ``j`` the exciting one).

**Penalties** (per event, as ``ExpHawkes.fit(l1=)``): ``penalty="l1"``: ``strength * sum_ij A[i, j]``;
``penalty="group-lasso"``: the sparse group lasso ``strength * sum_i (l1_ratio ||A[i, :]||_1 + (1 - l1_ratio)
||A[i, :]||_2)`` with **groups = rows** (each target's incoming excitation). Rows, not columns: for a fixed decay
the log-likelihood separates by target type (row ``i`` appears only in the terms of type ``i``'s events), and a row
norm keeps that separation, so each row stays its own small problem (solved independently, in parallel, or on
other machines). A column norm (``||A[:, j]||``, "source ``j`` influences nobody") would couple all K targets
into one problem. A zero row group means a type with no excitation (a Poisson type).

**Solver** (per target, :func:`tpp.hawkes._sparse_kernels.solve_target`): proximal Newton: the local quadratic
model of the exact negative log-likelihood plus the penalty is minimised by coordinate descent (each coordinate in
closed form), then an Armijo backtracking on the true objective. Stopped when the step (zero exactly at a KKT point)
moves no coordinate by more than ``tol`` relative to ``max(1, |theta|)``.

**Scale** (what is held): the events (``times``, ``marks``: O(N)), each event's intensity (O(N), the KKT check's
weights), per target a *candidate* set of sources (strong-rule screening at the null model, capped at
``max_candidates``; every non-candidate is checked against the KKT condition after each solve, and violators join:
the result is the exact penalised MLE, never the screened one) and its design rows ``[1, beta R_j(t_n)]`` for the
candidates only. Design rows are built by a lazy-decay pass (:mod:`tpp.hawkes._sparse_kernels`: O(1) per event, no
``[N, K]`` array) in blocks of targets whose rows fit in ``memory_floats`` numbers, one pass per block; the KKT
check's gradient rows likewise in blocks of ``memory_floats`` numbers. The fitted adjacency is a ``scipy.sparse``
CSR matrix (``adjacency_sparse_``); ``adjacency_`` is its dense view (refused above ``num_marks = 5000``).
No ``K x K`` dense array is made when ``num_marks > sqrt(memory_floats)``.

**Model selection**: a path of ``n_strengths`` strengths from ``strength_max`` (the smallest that zeroes every
entry) down to ``min_strength_ratio * strength_max``, warm-started; per point the log-likelihood, the unpenalised
refit on the support ("relaxed" fit), ``df = K + nnz`` (the lasso's degrees of freedom, Zou, Hastie & Tibshirani
2007), AIC ``= -2 ll_refit + 2 df`` and BIC ``= -2 ll_refit + log(N) df`` (the path stops once two points are worse
than the best so far, or one is worse with more than twice the best's support and K: the weakest penalties are the
dense, costly end); ``selection="cv"``: each sequence's
window cut in ``n_folds`` equal time blocks, the path refitted on all blocks but one (the partial likelihood of the
other blocks, conditional on the whole observed history) and scored on the held-out block's exact
log-likelihood, summed over folds. ``path_`` holds the table; ``strength_`` the choice. ``strength=`` a number
skips the path.

**Standard errors** (:meth:`SparseExpHawkes.standard_errors`): the observed information of the unpenalised
log-likelihood restricted to the support (``mu`` and the non-zero entries), per target (the information is block
diagonal by target for a fixed decay), inverted. Valid for the relaxed refit (``refit=True``); at a penalised
estimate they ignore the shrinkage bias.
"""

from __future__ import annotations

import math
import time as _time
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse
import torch
from torch import Tensor

from tpp.events import EventBatch
from tpp.hawkes import _sparse_kernels as _k
from tpp.hawkes._common import (FitResult, assemble, budget_error, check_fit_arguments, record_validation,
                                simulation_window, warn_if_not_stationary)
from tpp.hawkes._common import flat_events as _flat
from tpp.hawkes.exp import ExpHawkes, _standardise
from tpp.model import Seed
from tpp.options import Interval, check_params
from tpp.process import PointProcess, as_numpy_rng

__all__ = ["SparseExpHawkes"]

_PENALTIES = ("l1", "group-lasso")
_SELECTIONS = ("bic", "aic", "cv")
_DENSE_LIMIT = 5000  # adjacency_ (dense) above this many types would be > 200 MB


class _Problem:
    """The data of one fit in standardised time, and the per-target solves on candidate sets."""

    def __init__(self, flat: dict[str, np.ndarray], K: int, beta: float, n_folds: int, memory_floats: int,
                 tol: float, max_iter: int) -> None:
        self.flat, self.K, self.beta = flat, K, float(beta)
        self.times, self.marks, self.offsets = flat["times"], flat["marks"], flat["seq_offsets"]
        self.t_start, self.t_end = flat["t_start"], flat["t_end"]
        self.N = self.times.size
        self.counts = np.bincount(self.marks, minlength=K)
        self.type_ptr = np.concatenate([[0], np.cumsum(self.counts)])
        # events grouped by type, each group in the pass's order (sequence, then time): row r of target i's
        # design is event order[type_ptr[i] + r]
        self.order = np.argsort(self.marks, kind="stable")
        self.n_folds = n_folds
        self.fold_tails, self.fold_dur = _k.fold_tails(self.times, self.marks, self.offsets, self.t_start, self.t_end,
                                                       self.beta, K, n_folds)
        self.tails = self.fold_tails.sum(0)
        self.duration = float(self.fold_dur.sum())
        if n_folds > 1:
            seq = np.repeat(np.arange(self.offsets.size - 1), np.diff(self.offsets))
            width = (self.t_end - self.t_start)[seq] / n_folds
            rel = (self.times - self.t_start[seq]) / np.where(width > 0, width, 1.0)
            self.fold = np.minimum(rel.astype(np.int64), n_folds - 1)[self.order]  # by design row
        self.memory_floats = int(memory_floats)
        self.tol, self.max_iter = tol, max_iter
        self.floor = 1e-12 * max(self.counts.max() / self.duration, 1e-300)
        self._cache: tuple[Any, dict[int, np.ndarray]] | None = None

    # ---------------------------------------------------------------- design rows
    def designs(self, cand: list[np.ndarray], targets: Sequence[int]):
        """Yield ``(i, Z_i)`` for ``targets``: blocks of targets whose rows fit in ``memory_floats`` numbers,
        one lazy-decay pass per block. When all fit, the block is cached for the next call with equal candidates."""
        key = tuple(c.tobytes() for c in cand)
        if self._cache is not None and self._cache[0] == key and all(i in self._cache[1] for i in targets):
            for i in targets:
                yield i, self._cache[1][i]
            return
        sizes = np.array([int(self.counts[i]) * (1 + cand[i].size) for i in targets], np.int64)
        cache_all = int(sizes.sum()) <= self.memory_floats
        cand_ptr = np.concatenate([[0], np.cumsum([c.size for c in cand])]).astype(np.int64)
        cand_idx = np.concatenate(cand).astype(np.int64) if cand_ptr[-1] else np.zeros(0, np.int64)
        store: dict[int, np.ndarray] = {}
        start = 0
        targets = list(targets)
        while start < len(targets):
            stop, used = start, 0
            while stop < len(targets) and (stop == start or used + sizes[stop] <= self.memory_floats):
                used += int(sizes[stop])
                stop += 1
            block = targets[start:stop]
            local = np.full(self.K, -1, np.int64)
            local[block] = np.arange(len(block))
            out_ptr = np.concatenate([[0], np.cumsum(sizes[start:stop])]).astype(np.int64)
            out = np.empty(int(out_ptr[-1]))
            _k.features_block(self.times, self.marks, self.offsets, self.t_start, self.beta, self.K, local,
                              cand_ptr, cand_idx, out_ptr, out)
            for r, i in enumerate(block):
                Z = out[out_ptr[r]: out_ptr[r + 1]].reshape(int(self.counts[i]), 1 + cand[i].size)
                if cache_all:
                    store[i] = Z
                yield i, Z
            start = stop
        if cache_all:
            self._cache = (key, store)

    def linear(self, cand_i: np.ndarray, held_out: int | None = None) -> np.ndarray:
        """``c = [duration, tails[candidates]]``: the compensator's coefficients (without a held-out fold)."""
        if held_out is None:
            return np.concatenate([[self.duration], self.tails[cand_i]])
        return np.concatenate([[self.duration - self.fold_dur[held_out]],
                               (self.tails - self.fold_tails[held_out])[cand_i]])

    def solve(self, Z: np.ndarray, c: np.ndarray, lam1: float, lam2: float, theta: np.ndarray) -> tuple[np.ndarray, float, int, bool]:
        theta = theta.copy()
        theta[0] = max(theta[0], self.floor)
        theta[1:] = np.maximum(theta[1:], 0.0)
        return _k.solve_target(np.ascontiguousarray(Z), c, float(self.N), lam1, lam2, theta, self.floor, self.tol,
                               self.max_iter)

    # ---------------------------------------------------------------- gradients over every source
    def gradient_rows(self, weights: np.ndarray):
        """Yield ``(lo, g)`` with ``g[i - lo, j] = d/dA[i, j]`` of the log-likelihood per event, every ``j``, in
        blocks of ``memory_floats // K`` rows (``weights[n] = 1 / lambda(t_n)``)."""
        rows = max(1, self.memory_floats // max(self.K, 1))
        for lo in range(0, self.K, rows):
            hi = min(self.K, lo + rows)
            G = _k.gradient_block(self.times, self.marks, self.offsets, self.t_start, self.beta, self.K, lo, hi, weights)
            yield lo, (G - self.tails[None, :]) / self.N

    def intensities(self, mu: np.ndarray, adj: scipy.sparse.csr_matrix) -> tuple[np.ndarray, float]:
        lam = np.empty(self.N)
        ll = _k.sparse_loglik(self.times, self.marks, self.offsets, self.t_start, self.t_end, mu,
                              adj.indptr.astype(np.int64), adj.indices.astype(np.int64), adj.data, self.beta, self.K,
                              lam)
        return lam, float(ll.sum())


def _row_threshold(g: np.ndarray, lam1: float, lam2: float) -> bool:
    """True when a zero row violates its KKT condition: ``||max(g - lam1, 0)||_2 > lam2``."""
    return float(np.linalg.norm(np.maximum(g - lam1, 0.0))) > lam2 * (1 + 1e-9) + 1e-14


def _row_strength_max(g: np.ndarray, ratio: float) -> float:
    """The smallest strength ``s`` at which a zero row is optimal: ``||max(g - s r, 0)|| <= s (1 - r)``."""
    if ratio >= 1.0:
        return float(max(g.max(), 0.0))
    lo, hi = 0.0, float(max(g.max(), 0.0)) / max(ratio, 1e-300) if ratio > 0 else float(np.linalg.norm(np.maximum(g, 0)))
    hi = max(hi, float(np.linalg.norm(np.maximum(g, 0.0))) / max(1 - ratio, 1e-300))
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if np.linalg.norm(np.maximum(g - mid * ratio, 0.0)) <= mid * (1 - ratio):
            hi = mid
        else:
            lo = mid
    return hi


class SparseExpHawkes(PointProcess):
    """Exponential Hawkes process with a sparse adjacency, fitted by penalised maximum likelihood.

    Args:
        num_marks: number of types ``K``.
        decay: the kernel's decay ``beta`` (fixed during the fit); ``None`` picks it from a grid of 7 decays
            (:meth:`_decay_grid`) by the selected criterion: 7 fits, meant for small K; pass the decay at scale.
        penalty: ``"l1"`` or ``"group-lasso"`` (sparse group lasso with row groups, see the module docstring).
        strength: the penalty per event; ``None`` selects it on a path (``selection``).
        l1_ratio: the L1 share of ``"group-lasso"`` (0: pure group lasso; ignored for ``"l1"``).
        selection: ``"bic"``, ``"aic"`` (of the relaxed refit) or ``"cv"`` (held-out time blocks).
        n_strengths, min_strength_ratio: the path's length and its smallest strength relative to the largest.
        n_folds: time blocks of ``selection="cv"``.
        refit: publish the unpenalised refit on the selected support (the relaxed fit, which AIC/BIC score) instead
            of the penalised estimate; ``None`` (default): refit when the strength is selected on the path, keep the
            penalised estimate when ``strength`` is given.
        max_candidates: the most sources screened in per target before the KKT check adds violators
            (``None``: all when ``K <= 200``, else 50).
        tol, max_iter: the per-target solver's step tolerance and iteration cap.
        memory_floats: the most float64 numbers held for design rows (and for gradient rows) at once.

    Fitted: ``baseline_ [K]``, ``adjacency_sparse_`` (CSR ``K x K``), ``adjacency_`` (dense view), ``decay_``,
    ``strength_``, ``path_`` (list of dicts), ``fit_result_``.
    """

    _constraints = {
        "num_marks": Interval(1, None, integer=True),
        "decay": Interval(0, None, closed="neither", none_ok=True),
        "strength": Interval(0, None, none_ok=True),
        "l1_ratio": Interval(0, 1),
        "n_strengths": Interval(1, None, integer=True),
        "min_strength_ratio": Interval(0, 1, closed="neither"),
        "n_folds": Interval(2, None, integer=True),
        "max_candidates": Interval(1, None, integer=True, none_ok=True),
        "tol": Interval(0, None, closed="neither"),
        "max_iter": Interval(1, None, integer=True),
        "memory_floats": Interval(1024, None, integer=True),
        "baseline": Interval(0, None, closed="neither"),
        "adjacency": Interval(0, None),
    }

    def __init__(self, num_marks: int, decay: float | None = None, penalty: str = "l1", strength: float | None = None,
                 l1_ratio: float = 0.5, selection: str = "bic", n_strengths: int = 10, min_strength_ratio: float = 1e-2,
                 n_folds: int = 4, refit: bool | None = None, max_candidates: int | None = None, tol: float = 1e-8,
                 max_iter: int = 100, memory_floats: int = 1 << 24) -> None:
        super().__init__()
        check_params(self, num_marks=num_marks, decay=decay, strength=strength, l1_ratio=l1_ratio,
                     n_strengths=n_strengths, min_strength_ratio=min_strength_ratio, n_folds=n_folds,
                     max_candidates=max_candidates, tol=tol, max_iter=max_iter, memory_floats=memory_floats)
        if penalty not in _PENALTIES:
            raise ValueError(f"SparseExpHawkes: penalty must be one of {', '.join(_PENALTIES)}, got {penalty!r}")
        if selection not in _SELECTIONS:
            raise ValueError(f"SparseExpHawkes: selection must be one of {', '.join(_SELECTIONS)}, got {selection!r}")
        self.num_marks = int(num_marks)
        self.decay = None if decay is None else float(decay)
        self.penalty, self.strength, self.l1_ratio, self.selection = penalty, strength, float(l1_ratio), selection
        self.n_strengths, self.min_strength_ratio, self.n_folds = int(n_strengths), float(min_strength_ratio), int(n_folds)
        self.refit, self.max_candidates, self.tol, self.max_iter = refit, max_candidates, float(tol), int(max_iter)
        self.memory_floats = int(memory_floats)
        self._views: dict[str, ExpHawkes] = {}  # a plain dict: the dense view is no submodule (no state_dict entry)

    # ------------------------------------------------------------------ parameters
    def _ratio(self) -> float:
        return 1.0 if self.penalty == "l1" else self.l1_ratio

    def set_params(self, baseline: Sequence[float], adjacency: Any, decay: float) -> "SparseExpHawkes":
        """Set ``baseline [K]``, ``adjacency`` (dense ``[K, K]`` or any scipy.sparse matrix) and ``decay``."""
        K = self.num_marks
        baseline = np.asarray(baseline, np.float64).reshape(K)
        adj = scipy.sparse.csr_matrix(adjacency, dtype=np.float64, shape=(K, K))
        adj.eliminate_zeros()
        adj.sort_indices()
        check_params(self, baseline=baseline, adjacency=adj.data, decay=float(decay))
        self.baseline_, self.adjacency_sparse_, self.decay_ = baseline.copy(), adj, float(decay)
        self._views.clear()
        return self

    @classmethod
    def from_params(cls, baseline: Sequence[float], adjacency: Any, decay: float, **options: Any) -> "SparseExpHawkes":
        K = np.asarray(baseline).reshape(-1).size
        return cls(K, decay=float(decay), **options).set_params(baseline, adjacency, decay)

    @property
    def adjacency_(self) -> np.ndarray:
        """Dense ``[K, K]`` view of ``adjacency_sparse_`` (refused above 5000 types: use the sparse matrix)."""
        if self.num_marks > _DENSE_LIMIT:
            raise ValueError(f"SparseExpHawkes.adjacency_: {self.num_marks} types make a dense {self.num_marks}^2 array; "
                             "use adjacency_sparse_")
        return self.adjacency_sparse_.toarray()

    @property
    def branching_ratio(self) -> float:
        """Spectral radius of the adjacency (sparse eigen-solver for large K)."""
        adj = self.adjacency_sparse_
        if adj.nnz == 0:
            return 0.0
        if self.num_marks <= 200:
            return float(np.max(np.abs(np.linalg.eigvals(adj.toarray()))))
        import scipy.sparse.linalg

        try:
            return float(abs(scipy.sparse.linalg.eigs(adj, k=1, which="LM", return_eigenvectors=False, maxiter=5000)[0]))
        except scipy.sparse.linalg.ArpackNoConvergence:
            return float(abs(scipy.sparse.linalg.norm(adj, 1)))  # an upper bound

    def _options(self) -> dict[str, Any]:
        return {"penalty": self.penalty, "strength": self.strength, "l1_ratio": self.l1_ratio, "selection": self.selection,
                "n_strengths": self.n_strengths, "min_strength_ratio": self.min_strength_ratio, "n_folds": self.n_folds,
                "refit": self.refit, "max_candidates": self.max_candidates, "tol": self.tol, "max_iter": self.max_iter,
                "memory_floats": self.memory_floats}

    def to_dict(self) -> dict:
        """Parameters as JSON (the adjacency as CSR arrays) with the constructor options."""
        adj = self.adjacency_sparse_
        return {"model": "sparse-hawkes", "num_marks": self.num_marks, "baseline": self.baseline_.tolist(),
                "decay": self.decay_, "adjacency": {"indptr": adj.indptr.tolist(), "indices": adj.indices.tolist(),
                                                    "data": adj.data.tolist()},
                "options": {**self._options(), "decay": self.decay}}

    @classmethod
    def from_dict(cls, params: dict) -> "SparseExpHawkes":
        K = int(params["num_marks"])
        a = params["adjacency"]
        adj = scipy.sparse.csr_matrix((np.asarray(a["data"], np.float64), np.asarray(a["indices"], np.int64),
                                       np.asarray(a["indptr"], np.int64)), shape=(K, K))
        return cls(K, **params.get("options", {})).set_params(params["baseline"], adj, params["decay"])

    def summary_params(self) -> dict[str, Any]:
        """The CLI's ``--json`` fields beyond baseline and adjacency (:func:`tpp.report.model_params`)."""
        out: dict[str, Any] = {"decay": self.decay_, "penalty": self.penalty, "nnz": int(self.adjacency_sparse_.nnz)}
        if hasattr(self, "strength_"):
            out["strength"] = float(self.strength_)
        return out

    def to_exp_hawkes(self) -> ExpHawkes:
        """The same model as a dense :class:`ExpHawkes` (for small K: its intensity, plots, diagnostics)."""
        if "dense" not in self._views:
            self._views["dense"] = ExpHawkes.from_params(self.baseline_, self.adjacency_, self.decay_)
        return self._views["dense"]

    # ------------------------------------------------------------------ protocol
    def _fitted(self) -> None:
        if not hasattr(self, "baseline_"):
            raise ValueError("SparseExpHawkes: fit the model (or set_params) first")

    def log_likelihood(self, batch: EventBatch) -> Tensor:
        """Exact log-likelihood per sequence ``[B]`` in O(N (1 + nnz / K)) time (not differentiable: the model
        is fitted by its own solver)."""
        self._fitted()
        self.check_marks(batch)
        flat = _flat(batch)
        adj = self.adjacency_sparse_
        lam = np.empty(flat["times"].size)
        ll = _k.sparse_loglik(flat["times"], flat["marks"], flat["seq_offsets"], flat["t_start"], flat["t_end"],
                              self.baseline_, adj.indptr.astype(np.int64), adj.indices.astype(np.int64), adj.data,
                              self.decay_, self.num_marks, lam)
        return torch.from_numpy(ll).to(device=batch.device, dtype=batch.dtype)

    def intensity(self, batch: EventBatch, t: Tensor) -> Tensor:
        """``[B, T, K]`` by the dense view (small K)."""
        self._fitted()
        return self.to_exp_hawkes().intensity(batch, t).detach()

    def cumulative_intensity(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        self._fitted()
        return self.to_exp_hawkes().cumulative_intensity(batch).detach()

    def compensator(self, batch: EventBatch, num_points: int | None = None) -> Tensor:
        self._fitted()
        return self.to_exp_hawkes().compensator(batch).detach()

    def sample(self, n: int, t_end: float, history: EventBatch | None = None, generator: Seed = None,
               t_start: float = 0.0, max_events: int = 50_000_000) -> EventBatch:
        """Exact simulation by the cluster (branching) construction on the sparse columns: immigrants
        ``Poisson(mu_k)`` per type, each event of type ``j`` has ``Poisson(A[i, j])`` children of type ``i`` after
        ``Exp(beta)`` delays. O(events + nnz) memory; a history's events still have ``Poisson(A[i, j] exp(-beta e))``
        children to come after an elapsed ``e``. ``max_events`` caps the total (``SamplingBudgetError``)."""
        self._fitted()
        rng = as_numpy_rng(generator)
        K = self.num_marks
        mu, beta = self.baseline_, self.decay_
        csc = self.adjacency_sparse_.tocsc()
        csc.sort_indices()
        indptr, indices, data = csc.indptr.astype(np.int64), csc.indices.astype(np.int64), csc.data
        starts, t0s, ends = simulation_window(n, t_end, history, t_start, K)
        expected = float(np.sum(np.outer(ends - starts, mu)))
        if expected > 2 * max_events:
            raise budget_error(self, max_events, f"{expected:.4g} immigrants expected, none simulated", None)
        counts = rng.poisson(np.outer(ends - starts, mu))
        seq = np.repeat(np.repeat(np.arange(n), K), counts.ravel())
        typ = np.repeat(np.tile(np.arange(K), n), counts.ravel())
        times = starts[seq] + rng.random(seq.size) * (ends - starts)[seq]
        parts = [(seq, typ, times)]
        gen = (seq, typ, times, np.ones(seq.size))
        if history is not None:
            flat = _flat(history)
            h_seq = np.repeat(np.arange(n), np.diff(flat["seq_offsets"]))
            late = (h_seq, flat["marks"], starts[h_seq], np.exp(-beta * (starts[h_seq] - flat["times"])))
            gen = tuple(np.concatenate(p) for p in zip(gen, late))
        total = seq.size
        while gen[0].size:
            c_seq, c_typ, c_time = _k.cluster_children(gen[0].astype(np.int64), gen[1].astype(np.int64), gen[2],
                                                       gen[3], indptr, indices, data, beta, ends,
                                                       int(rng.integers(0, 2**31 - 1)))
            parts.append((c_seq, c_typ, c_time))
            total += c_seq.size
            if total > max_events:
                raise budget_error(self, max_events, f"{total} events simulated", self.branching_ratio)
            gen = (c_seq, c_typ, c_time, np.ones(c_seq.size))
        seq_all, typ_all, time_all = (np.concatenate(x) for x in zip(*parts))
        return assemble(seq_all, time_all, typ_all, n, t0s, ends, K, history)

    # ------------------------------------------------------------------ fitting
    def fit(self, train: EventBatch, val: EventBatch | None = None, *, progress: bool = False,
            **trainer_options: Any) -> "SparseExpHawkes":
        """Penalised MLE (see the module docstring); sets ``baseline_``, ``adjacency_sparse_``, ``decay_``,
        ``strength_``, ``path_``, ``fit_result_``. ``val`` is only scored; ``trainer_options`` are accepted for the
        model contract and unused."""
        check_fit_arguments(self, val, trainer_options, train=train)
        self.check_marks(train)
        if train.num_events == 0:
            raise ValueError("cannot fit a Hawkes process to data without events")
        start = _time.perf_counter()
        raw = _flat(train)
        flat, scale = _standardise(raw)
        if self.decay is not None:
            betas = [self.decay * scale]
        else:
            betas = list(self._decay_grid(flat))
        best = None
        for beta in betas:
            result = self._fit_decay(flat, float(beta))
            if best is None or result["criterion"] < best["criterion"]:
                best = result
        assert best is not None
        self.set_params(best["mu"] / scale, best["adj"], best["beta"] / scale)
        self.strength_ = best["strength"]
        n_events = flat["times"].size
        shift = -n_events * math.log(scale)  # standardised time -> the data's clock (criteria differences unchanged)
        for point in best["path"]:
            for key in ("log_likelihood", "log_likelihood_refit", "cv_log_likelihood"):
                if key in point:
                    point[key] += shift
            for key in ("aic", "bic"):
                if key in point:
                    point[key] -= 2 * shift
        self.path_ = best["path"]
        self.fit_result_ = FitResult(
            objective="penalised-likelihood", penalty=self.penalty, strength=best["strength"],
            log_likelihood=float(best["loglik"] - n_events * math.log(scale)), nnz=int(best["adj"].nnz),
            converged=best["converged"], iterations=best["iterations"], kkt_rounds=best["kkt_rounds"],
            decays_tried=[b / scale for b in betas], seconds=_time.perf_counter() - start)
        record_validation(self, val, self.fit_result_)
        if self.num_marks <= 2000:
            warn_if_not_stationary(self.branching_ratio)
        return self

    def _decay_grid(self, flat: dict) -> np.ndarray:
        """``decay=None``: 7 decays, geometric, from a tenth of the inverse median gap between events of one type
        to ten times the inverse median gap between any two events (the time scales excitation can live on)."""
        seq = np.repeat(np.arange(flat["seq_offsets"].size - 1), np.diff(flat["seq_offsets"]))
        key = np.lexsort((flat["times"], seq, flat["marks"]))
        t, same_type = flat["times"][key], (np.diff(flat["marks"][key]) == 0) & (np.diff(seq[key]) == 0)
        gaps_type = np.diff(t)[same_type]
        gaps_all = np.diff(flat["times"])[np.diff(seq) == 0]
        slow = 1.0 / float(np.median(gaps_type[gaps_type > 0])) if np.any(gaps_type > 0) else 1.0
        fast = 1.0 / float(np.median(gaps_all[gaps_all > 0])) if np.any(gaps_all > 0) else 1.0
        return np.geomspace(0.1 * min(slow, fast), 10.0 * max(slow, fast), 7)

    def _fit_decay(self, flat: dict, beta: float) -> dict[str, Any]:
        """The path (or the one given strength) at a fixed decay, and the selected point."""
        K = self.num_marks
        folds = self.n_folds if self.selection == "cv" and self.strength is None else 1
        prob = _Problem(flat, K, beta, folds, self.memory_floats, self.tol, self.max_iter)
        ratio = self._ratio()
        cap = self.max_candidates if self.max_candidates is not None else (K if K <= 200 else 50)
        # null model (A = 0): mu_i = N_i / T; its gradient screens candidates and gives strength_max
        mu0 = np.maximum(prob.counts / prob.duration, prob.floor)
        top_idx: list[np.ndarray] = [np.zeros(0, np.int64)] * K
        top_val: list[np.ndarray] = [np.zeros(0)] * K
        row_max = np.zeros(K)
        for lo, g in prob.gradient_rows(1.0 / mu0[prob.marks]):
            for r in range(g.shape[0]):
                i = lo + r
                row = g[r]
                row_max[i] = _row_strength_max(row, ratio)
                keep = min(cap, K)
                idx = np.argpartition(-row, keep - 1)[:keep] if keep < K else np.arange(K)
                idx = idx[np.argsort(-row[idx], kind="stable")]
                top_idx[i], top_val[i] = idx, row[idx]
        strength_max = float(row_max.max()) if K else 0.0
        if self.strength is not None:
            strengths = [float(self.strength)]
        else:
            strengths = list(strength_max * np.geomspace(1.0, self.min_strength_ratio, self.n_strengths))
        cand = [np.zeros(0, np.int64) for _ in range(K)]
        theta = [np.array([mu0[i]]) for i in range(K)]
        path: list[dict[str, Any]] = []
        solutions = []
        iterations, rounds_total, converged_all = 0, 0, True
        for s in strengths:
            t_point = _time.perf_counter()
            lam1, lam2 = s * ratio, s * (1 - ratio)
            for i in range(K):
                new = top_idx[i][top_val[i] > lam1 * (1 - 1e-9)] if lam2 == 0 else top_idx[i][top_val[i] > 0]
                if lam2 > 0 and row_max[i] <= s:
                    new = new[:0]
                merged = np.union1d(cand[i], new).astype(np.int64)
                if merged.size != cand[i].size:
                    old = dict(zip(cand[i].tolist(), theta[i][1:].tolist()))
                    theta[i] = np.concatenate([theta[i][:1], [old.get(j, 0.0) for j in merged.tolist()]])
                    cand[i] = merged
            todo = list(range(K))
            for kkt_round in range(20):
                rounds_total += 1
                for i, Z in prob.designs(cand, todo):
                    x, _, it, ok = prob.solve(Z, prob.linear(cand[i]), lam1, lam2, theta[i])
                    theta[i] = x
                    iterations += it
                    converged_all &= bool(ok)
                if all(c.size == K for c in cand):
                    break
                mu, adj = self._assemble(theta, cand)
                lam, _ = prob.intensities(mu, adj)
                todo = []
                for lo, g in prob.gradient_rows(1.0 / lam):
                    for r in range(g.shape[0]):
                        i = lo + r
                        outside = np.ones(K, bool)
                        outside[cand[i]] = False
                        row_zero = not np.any(theta[i][1:] > 0)
                        if row_zero and lam2 > 0:
                            # a zero row stays optimal iff ||max(g - lam1, 0)||_2 <= lam2 over every source
                            viol = outside & (g[r] > lam1) if _row_threshold(g[r], lam1, lam2) else np.zeros(K, bool)
                        else:  # an entry at 0 in a non-zero row (or plain L1): g <= lam1
                            viol = outside & (g[r] > lam1 * (1 + 1e-9) + 1e-14)
                        if viol.any():
                            add = np.flatnonzero(viol)
                            old = dict(zip(cand[i].tolist(), theta[i][1:].tolist()))
                            merged = np.union1d(cand[i], add).astype(np.int64)
                            theta[i] = np.concatenate([theta[i][:1], [old.get(j, 0.0) for j in merged.tolist()]])
                            cand[i] = merged
                            todo.append(i)
                if not todo:
                    break
            else:  # 20 rounds and still violators: say so rather than publish a screened solution as the optimum
                converged_all = False
            mu, adj = self._assemble(theta, cand)
            _, ll = prob.intensities(mu, adj)
            point = {"strength": s, "nnz": int(adj.nnz), "log_likelihood": ll}
            if self.strength is None:
                ll_refit, refit_theta = self._refit(prob, theta, cand)
                df = K + adj.nnz
                point.update(log_likelihood_refit=ll_refit, df=int(df), aic=-2 * ll_refit + 2 * df,
                             bic=-2 * ll_refit + math.log(prob.N) * df)
            else:
                refit_theta = None
            path.append(point)
            solutions.append(([t.copy() for t in theta], [c.copy() for c in cand], refit_theta))
            point["seconds"] = _time.perf_counter() - t_point
            if self.strength is None and self.selection != "cv" and self._path_done(path):
                break  # the weaker penalties (the path's costly, dense end) are not needed
        if self.strength is None and self.selection == "cv":
            scores = self._cross_validate(prob, strengths, solutions)
            for point, sc in zip(path, scores):
                point["cv_log_likelihood"] = sc
            pick = int(np.argmax(scores))
            strengths = strengths[: len(path)]
            criterion = -float(scores[pick])
        elif self.strength is None:
            strengths = strengths[: len(path)]
            values = [p[self.selection] for p in path]
            pick = int(np.argmin(values))
            criterion = float(values[pick])
        else:
            pick, criterion = 0, -path[0]["log_likelihood"]
        theta_p, cand_p, refit_p = solutions[pick]
        if self.refit or (self.refit is None and self.strength is None):
            if refit_p is None:
                _, refit_p = self._refit(prob, theta_p, cand_p)
            theta_p = refit_p
        mu, adj = self._assemble(theta_p, cand_p)
        _, ll = prob.intensities(mu, adj)
        return {"mu": mu, "adj": adj, "beta": beta, "strength": strengths[pick], "path": path, "loglik": ll,
                "criterion": criterion, "converged": converged_all, "iterations": iterations, "kkt_rounds": rounds_total}

    def _path_done(self, path: list[dict[str, Any]]) -> bool:
        """Stop the AIC/BIC path when the last two points are both worse than the best so far, or the last is worse
        and its support already passed twice the best's (and K): the criterion has turned, the rest is denser."""
        key = self.selection
        best = min(range(len(path)), key=lambda p: path[p][key])
        worse = [p for p in range(best + 1, len(path))]
        if len(worse) >= 2:
            return True
        return len(worse) == 1 and path[-1]["nnz"] > 2 * max(path[best]["nnz"], self.num_marks)

    def _assemble(self, theta: list[np.ndarray], cand: list[np.ndarray]) -> tuple[np.ndarray, scipy.sparse.csr_matrix]:
        K = self.num_marks
        mu = np.array([t[0] for t in theta])
        lengths = np.array([c.size for c in cand])
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        indices = np.concatenate(cand) if indptr[-1] else np.zeros(0, np.int64)
        data = np.concatenate([t[1:] for t in theta]) if indptr[-1] else np.zeros(0)
        adj = scipy.sparse.csr_matrix((data, indices, indptr), shape=(K, K))
        adj.eliminate_zeros()
        return mu, adj

    def _refit(self, prob: _Problem, theta: list[np.ndarray], cand: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
        """The unpenalised MLE on each target's support (the relaxed fit): its log-likelihood and parameters."""
        out = [t.copy() for t in theta]
        total = 0.0
        for i, Z in prob.designs(cand, range(self.num_marks)):
            cols = np.concatenate([[0], 1 + np.flatnonzero(theta[i][1:] > 0)])
            x, value, _, _ = prob.solve(np.ascontiguousarray(Z[:, cols]), prob.linear(cand[i])[cols], 0.0, 0.0,
                                        theta[i][cols])
            out[i] = np.zeros_like(theta[i])
            out[i][cols] = x
            total += -value * prob.N
        return total, out

    def _cross_validate(self, prob: _Problem, strengths: list[float], solutions: list) -> np.ndarray:
        """Held-out log-likelihood summed over time-block folds, per strength. Each fold's path is warm-started
        and uses the candidates (and KKT-checked supports) of the full-data path at that strength."""
        ratio = self._ratio()
        scores = np.zeros(len(strengths))
        for f in range(prob.n_folds):
            warm = [t.copy() for t in solutions[-1][0]]
            warm_cand = solutions[-1][1]
            for p, s in enumerate(strengths):
                lam1, lam2 = s * ratio, s * (1 - ratio)
                for i, Z in prob.designs(warm_cand, range(self.num_marks)):
                    rows = prob.fold[prob.type_ptr[i]: prob.type_ptr[i + 1]]
                    train, test = Z[rows != f], Z[rows == f]
                    x, _, _, _ = prob.solve(np.ascontiguousarray(train), prob.linear(warm_cand[i], held_out=f), lam1,
                                            lam2, warm[i])
                    warm[i] = x
                    lam = test @ x
                    c_test = np.concatenate([[prob.fold_dur[f]], prob.fold_tails[f][warm_cand[i]]])
                    scores[p] += float(np.sum(np.log(lam)) - c_test @ x)
        return scores

    # ------------------------------------------------------------------ uncertainty
    def standard_errors(self, data: EventBatch) -> dict[str, Any]:
        """Standard errors of ``baseline_`` and of the non-zero adjacency entries from the observed information
        of the (unpenalised) log-likelihood restricted to the support. Returns ``{"baseline": [K],
        "adjacency": CSR with adjacency_sparse_'s pattern}``. Memory: one target's design rows at a time (blocked)."""
        self._fitted()
        self.check_marks(data)
        flat = _flat(data)
        K = self.num_marks
        adj = self.adjacency_sparse_
        prob = _Problem(flat, K, self.decay_, 1, self.memory_floats, self.tol, self.max_iter)
        cand = [adj.indices[adj.indptr[i]: adj.indptr[i + 1]].astype(np.int64) for i in range(K)]
        se_mu = np.full(K, np.nan)
        se_adj = np.full(adj.nnz, np.nan)
        for i, Z in prob.designs(cand, range(K)):
            theta = np.concatenate([[self.baseline_[i]], adj.data[adj.indptr[i]: adj.indptr[i + 1]]])
            lam = Z @ theta
            W = Z / lam[:, None]
            info = W.T @ W
            try:
                cov = np.linalg.inv(info)
            except np.linalg.LinAlgError:
                continue
            var = np.diag(cov)
            se = np.sqrt(np.where(var > 0, var, np.nan))
            se_mu[i] = se[0]
            se_adj[adj.indptr[i]: adj.indptr[i + 1]] = se[1:]
        return {"baseline": se_mu, "adjacency": scipy.sparse.csr_matrix((se_adj, adj.indices.copy(), adj.indptr.copy()),
                                                                        shape=(K, K))}
