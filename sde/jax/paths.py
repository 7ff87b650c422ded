"""Control paths in JAX: the same function as the torch :class:`sde.paths.ControlPath`.

The torch path holds, for every series, torchcde's cubic pieces on the series' own knots
(``a + b s + two_c s^2 / 2 + three_d s^3 / 3``, ``s`` the time since the piece's knot), and is held
constant before the series' first row and after its last. :class:`SeriesPath` takes those very
coefficients (:meth:`SeriesPath.from_torch`) and evaluates them with the same formula and the same
knot rule (the piece to the left of a knot, the first piece at the first knot), so the JAX and torch
paths are one function, up to rounding. The coefficients are built once, in torch, by the torch
path code (torchcde's Hermite, natural-cubic, linear or rectilinear rules and its missing-value
filling); re-deriving them in JAX would be a second implementation to keep in step. A
``diffrax.CubicInterpolation`` cannot hold the batch: it takes one knot list, and each series has
its own (see :mod:`sde.paths` for why the union of times would change the path).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

__all__ = ["SeriesPath"]


class SeriesPath(eqx.Module):
    """A batch of control paths ``X`` (``[B, C']``), each on its own knots; see the module docstring.

    ``evaluate(t)`` and ``derivative(t)`` take a scalar ``t`` (what a solver asks) and give ``[B, C']``;
    ``grid`` is the union of the batch's knot times (where ``dX/dt`` may jump: a solver steps onto it).
    """

    knots: Array        # [B, K] each series' knots, padded with its last knot
    a: Array            # [B, K - 1, C'] torchcde's coefficients of each piece
    b: Array
    two_c: Array
    three_d: Array
    pieces: Array       # [B] number of pieces (0: a one-row series, constant)
    start: Array        # [B, C'] the value before the first knot
    end: Array          # [B, C'] the value after the last knot
    grid: Array         # [N] union of the knot times

    @classmethod
    def from_torch(cls, path: Any, dtype: Any = None) -> SeriesPath:
        """The JAX copy of a torch :class:`sde.paths.ControlPath` (its coefficients, as they are)."""
        pieces = getattr(path, "interpolation", path)
        needed = ("_knots", "_a", "_b", "_two_c", "_three_d", "_pieces", "_start", "_end", "_grid")
        if not all(hasattr(pieces, name) for name in needed):
            raise TypeError(f"from_torch needs an sde.paths.ControlPath, got {type(path).__name__}")

        def arr(name: str) -> Array:
            value = getattr(pieces, name).detach().cpu().numpy().copy()  # JAX may alias NumPy memory
            return jnp.asarray(value, dtype=dtype or value.dtype)

        pieces_count = jnp.asarray(pieces._pieces.detach().cpu().numpy().astype("int32"))
        return cls(arr("_knots"), arr("_a"), arr("_b"), arr("_two_c"), arr("_three_d"), pieces_count,
                   arr("_start"), arr("_end"), arr("_grid"))

    @property
    def channels(self) -> int:
        return self.a.shape[-1]

    @property
    def interval(self) -> tuple[Array, Array]:
        """``(t0, t1)``: the first and last knot time of the batch."""
        return self.grid[0], self.grid[-1]

    def _locate(self, t: ArrayLike) -> tuple[Array, Array, Array, Array]:
        t = jnp.asarray(t, self.knots.dtype)
        last_piece = jnp.maximum(self.pieces, 1) - 1
        # torch.searchsorted(right=False) - 1: the piece to the left of a knot, the first at the first knot
        found = jax.vmap(lambda k: jnp.searchsorted(k, t, side="left", method="compare_all"))(self.knots)
        idx = jnp.minimum(jnp.maximum(found - 1, 0), last_piece)
        s = (t - jnp.take_along_axis(self.knots, idx[:, None], 1))[:, 0]
        before = (t < self.knots[:, 0]) | (self.pieces == 0)
        after = t > jnp.take_along_axis(self.knots, (last_piece + 1)[:, None], 1)[:, 0]
        return idx, s[:, None].astype(self.a.dtype), before[:, None], after[:, None]

    def _take(self, z: Array, idx: Array) -> Array:
        return jnp.take_along_axis(z, idx[:, None, None], 1)[:, 0]

    def evaluate(self, t: ArrayLike) -> Array:
        """``X(t)``: ``[B, C']``."""
        idx, s, before, after = self._locate(t)
        inner = self._take(self.two_c, idx) / 2 + self._take(self.three_d, idx) * s / 3
        poly = self._take(self.a, idx) + s * (self._take(self.b, idx) + s * inner)
        return jnp.where(before, self.start, jnp.where(after, self.end, poly))

    def derivative(self, t: ArrayLike) -> Array:
        """``dX/dt``: ``[B, C']``, zero outside each series' own interval."""
        idx, s, before, after = self._locate(t)
        deriv = self._take(self.b, idx) + s * (self._take(self.two_c, idx) + s * self._take(self.three_d, idx))
        return jnp.where(before | after, jnp.zeros_like(deriv), deriv)
