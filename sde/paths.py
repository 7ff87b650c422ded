"""Control paths from irregular, partly missing observations (Kidger et al., NeurIPS 2020), and the
missing-data protocol of the stable neural SDE paper (Oh, Lim & Kim, ICLR 2024).

A neural CDE ``dz = f(z) dX(t)`` is driven by a continuous path ``X`` built from a series' rows.
:meth:`ControlPath.from_series` builds, for every series of a :class:`~sde.series.SeriesBatch`, the
torchcde interpolation of its own rows (its own knots, missing values handled by torchcde's
convention), with channels

``[time, values_1 .. values_C, count_1 .. count_C]``

* ``time``: the observation time itself (raw, in the batch's unit: rescale ``SeriesBatch.time``
  first if the model wants another clock), so the path knows the gaps between rows;
* the values; a channel NaN at a row is filled as torchcde fills NaN: linearly in time between the
  neighbouring observations of that channel, constant before the first and after the last one, and
  0 for a channel the series never observes (natural cubic: torchcde fits the spline through the
  observed knots only; rectilinear: the last observation is carried forward);
* ``count_c``: the cumulative number of observations of channel ``c`` up to each row (the
  "observational intensity" of Kidger et al. 2020, section 3.5, used by the stable-SDE code as
  ``cumsum(~isnan(x))``), which lets a model tell a filled value from a measured one.

Series of one batch are observed at different times. The batch's time axis is real time: ``.grid``
is the union of all observation times and ``.interval`` its first and last. Each series keeps its
own torchcde pieces on its own knots (torchcde's classes take one knot list for the whole batch; on
the union of times, with NaN at the other series' times as in torchcde's irregular-data example, the
Hermite and natural-cubic paths would change, because inserted knots change the backward
differences and the spline). The path object evaluates every series at a time ``t`` (one batched
``searchsorted``), so memory is ``B x L x 4 C'`` whatever the union of times. Outside its own
``[first, last]`` row a series' path is held constant (its value at the first / last row), so its
derivative is zero there: a CDE solved over the batch's interval stops moving at each series' end,
and its state at ``interval[1]`` is its state at the series' last row. Padding rows never change a
path.

:func:`drop` makes series sparser by the paper's protocol (rows blanked at random per series).
"""

from __future__ import annotations

import enum

import numpy as np
import torch
import torchcde
from torch import Tensor

from sde.series import SeriesBatch

__all__ = ["ControlPath", "Interpolation", "drop"]


class Interpolation(enum.Enum):
    """How a path passes through its knots (all from torchcde)."""

    HERMITE = "hermite"
    """Cubic Hermite with backward differences (``hermite_cubic_coefficients_with_backward_differences``):
    C1, and causal up to one knot: the piece on ``[t_k, t_k+1]`` uses ``x_k-1, x_k, x_k+1`` only."""
    NATURAL_CUBIC = "natural_cubic"
    """Natural cubic spline (``natural_cubic_coeffs``): C2 but not causal (each piece sees all knots)."""
    LINEAR = "linear"
    """Piecewise linear (``linear_interpolation_coeffs``)."""
    RECTILINEAR = "rectilinear"
    """Rectilinear (``linear_interpolation_coeffs(..., rectilinear=0)``): between two rows the time
    channel moves first, then the values jump; causal. Needs the time channel."""


class ControlPath:
    """A batch of control paths; see the module docstring.

    ``interpolation`` is a torchcde interpolation object (a subclass of torchcde's
    ``InterpolationBase`` holding each series' own torchcde pieces) that
    ``torchcde.cdeint(X=path.interpolation, ...)`` takes. ``evaluate(t)`` and ``derivative(t)`` give
    ``[B, C']`` at a scalar ``t`` and ``[B, T, C']`` at ``t [T]``; between knots and at a knot they
    follow torchcde (the piece to the left of a knot, the first piece at the first knot).

    For ``RECTILINEAR`` a series' torchcde knots are interleaved: knot ``2k`` (row ``k``) sits at
    parameter ``t_k`` and the intermediate knot ``2k + 1`` (time moved, values not yet) at the
    midpoint of ``t_k, t_k+1``; so the parameter is real time at the observation times (a CDE's
    solution does not depend on the parametrisation).
    """

    def __init__(self, interpolation: _SeriesPieces, channel_names: tuple[str, ...], kind: Interpolation,
                 start_times: Tensor, end_times: Tensor) -> None:
        self.interpolation = interpolation
        self.channel_names = channel_names
        self.kind = kind
        self.start_times = start_times
        self.end_times = end_times

    @property
    def grid(self) -> Tensor:
        """``[N]`` the knot times: the union of the batch's observation times."""
        return self.interpolation.grid_points

    @property
    def channels(self) -> int:
        """Number of path channels ``C'`` (``1 + 2 C`` with time and counts)."""
        return len(self.channel_names)

    @property
    def interval(self) -> Tensor:
        """``[2]`` tensor ``(t0, t1)``: first and last time of the grid (unpacks as ``t0, t1``)."""
        return self.interpolation.interval

    @property
    def batch_size(self) -> int:
        return self.start_times.shape[0]

    def evaluate(self, t: Tensor | float) -> Tensor:
        """``X(t)``: ``[B, C']`` for a scalar ``t``, ``[B, T, C']`` for ``t [T]``."""
        return self.interpolation.evaluate(t)

    def derivative(self, t: Tensor | float) -> Tensor:
        """``dX/dt``: same shapes as :meth:`evaluate`; zero outside each series' own interval."""
        return self.interpolation.derivative(t)

    def __repr__(self) -> str:
        return (f"ControlPath({self.kind.name}, series={self.batch_size}, channels={self.channels}, "
                f"knots={self.grid.numel()}, interval=({float(self.grid[0])}, {float(self.grid[-1])}))")

    @classmethod
    def from_series(
        cls,
        batch: SeriesBatch,
        interpolation: Interpolation = Interpolation.HERMITE,
        time_channel: bool = True,
        observation_counts: bool = True,
    ) -> ControlPath:
        """The path of every series of ``batch`` (see the module docstring for the channels)."""
        if not isinstance(interpolation, Interpolation):
            raise TypeError(f"interpolation must be an sde.paths.Interpolation, got {interpolation!r}")
        if interpolation is Interpolation.RECTILINEAR and not time_channel:
            raise ValueError("rectilinear interpolation needs the time channel (torchcde's rectilinear=0)")
        time, lengths = batch.time, batch.lengths
        grid = torch.unique(time[batch.mask], sorted=True)
        if grid.numel() < 2:
            raise ValueError("a control path needs at least two distinct observation times in the batch")
        observed = batch.observed
        values = batch.values if interpolation is Interpolation.NATURAL_CUBIC else _fill(
            time, batch.values, observed, forward=interpolation is Interpolation.RECTILINEAR)
        parts, names = [], []
        if time_channel:
            parts.append(time[..., None])
            names.append("time")
        parts.append(values)
        names.extend(batch.channel_names)
        if observation_counts:
            parts.append(observed.to(time.dtype).cumsum(1))
            names.extend(f"count[{c}]" for c in batch.channel_names)
        x = torch.cat(parts, -1)  # [B, L, C'] at each series' own rows
        knots, coeffs, pieces = _pieces(x, time, lengths, interpolation)
        path = _SeriesPieces(knots, coeffs, pieces, torch.nan_to_num(x[:, 0], nan=0.0), grid)
        end = time.gather(1, (lengths - 1)[:, None])[:, 0]
        return cls(path, tuple(names), interpolation, time[:, 0], end)


class _SeriesPieces(torchcde.interpolation_base.InterpolationBase):
    """Every series' own torchcde pieces (``a + b s + two_c s^2 / 2 + three_d s^3 / 3`` with ``s`` the
    time since the piece's knot), held constant before its first and after its last knot.

    Storing each series on its own knots costs ``B x L x C'``: the union of the batch's times (which
    torchcde's own classes would need, one knot list for the whole batch) is often 30-100x longer.
    """

    def __init__(self, knots: Tensor, coeffs: Tensor, pieces: Tensor, first_row: Tensor, grid: Tensor) -> None:
        super().__init__()
        Cp = coeffs.shape[-1] // 4
        a, b, two_c, three_d = coeffs.split(Cp, dim=-1)
        self.register_buffer("_knots", knots.contiguous())  # [B, K] padded with the last knot
        self.register_buffer("_a", a)
        self.register_buffer("_b", b)
        self.register_buffer("_two_c", two_c)
        self.register_buffer("_three_d", three_d)
        self.register_buffer("_pieces", pieces)  # [B] number of pieces (0: a one-row series, constant)
        self.register_buffer("_grid", grid)
        end = pieces.clamp(min=1)[:, None] - 1
        span = (knots.gather(1, end + 1) - knots.gather(1, end))[..., None]
        last = self._poly(end, span)[:, 0]
        start = torch.where((pieces > 0)[:, None], a[:, 0], first_row)
        self.register_buffer("_start", start)
        self.register_buffer("_end", torch.where((pieces > 0)[:, None], last, start))

    @property
    def grid_points(self) -> Tensor:
        return self._grid

    @property
    def interval(self) -> Tensor:
        return torch.stack([self._grid[0], self._grid[-1]])

    def _take(self, z: Tensor, idx: Tensor) -> Tensor:
        return z.gather(1, idx[..., None].expand(-1, -1, z.shape[-1]))

    def _poly(self, idx: Tensor, s: Tensor) -> Tensor:
        inner = self._take(self._two_c, idx) / 2 + self._take(self._three_d, idx) * s / 3
        return self._take(self._a, idx) + s * (self._take(self._b, idx) + s * inner)

    def _locate(self, t: Tensor | float) -> tuple[Tensor, Tensor, Tensor, Tensor, bool]:
        t = torch.as_tensor(t, dtype=self._knots.dtype, device=self._knots.device)
        scalar = t.dim() == 0
        tt = t.reshape(1, -1).expand(self._knots.shape[0], -1).contiguous()
        last_piece = (self._pieces.clamp(min=1) - 1)[:, None]
        # torchcde's rule: the piece to the left of a knot (bucketize - 1), the first piece at the first knot
        idx = torch.minimum((torch.searchsorted(self._knots, tt.detach()) - 1).clamp(min=0), last_piece)
        s = (tt - self._knots.gather(1, idx))[..., None]
        before = (tt < self._knots[:, :1]) | (self._pieces == 0)[:, None]
        after = tt > self._knots.gather(1, last_piece + 1)
        return idx, s, before[..., None], after[..., None], scalar

    def evaluate(self, t: Tensor | float) -> Tensor:
        idx, s, before, after, scalar = self._locate(t)
        out = torch.where(before, self._start[:, None], torch.where(after, self._end[:, None], self._poly(idx, s)))
        return out[:, 0] if scalar else out

    def derivative(self, t: Tensor | float) -> Tensor:
        idx, s, before, after, scalar = self._locate(t)
        deriv = self._take(self._b, idx) + s * (self._take(self._two_c, idx) + s * self._take(self._three_d, idx))
        out = torch.where(before | after, torch.zeros_like(deriv), deriv)
        return out[:, 0] if scalar else out


def _shift(coeffs: Tensor, s: Tensor) -> Tensor:
    """Re-centre torchcde cubic pieces ``(a, b, two_c, three_d)`` by ``s`` (Taylor shift)."""
    a, b, two_c, three_d = coeffs.split(coeffs.shape[-1] // 4, dim=-1)
    return torch.cat([a + s * (b + s * (two_c / 2 + s * three_d / 3)), b + s * (two_c + s * three_d),
                      two_c + 2 * s * three_d, three_d], -1)


def _natural(xs: Tensor, t: Tensor) -> Tensor:
    """``torchcde.natural_cubic_coeffs(xs, t)`` with its missing-value rule, without its Python loop
    over knots: a channel with NaN is splined through its observed knots (torchcde first fills the
    leading / trailing NaN with the first / last observation), then re-centred on every knot."""
    nan = torch.isnan(xs)
    if not nan.any():
        return torchcde.natural_cubic_coeffs(xs, t)
    G, n, Cp = xs.shape
    out = xs.new_zeros(G, n - 1, 4, Cp)  # a channel never observed stays 0 (torchcde's zero path)
    for g in range(G):
        clean = ~nan[g].any(0)
        if clean.any():
            out[g, :, :, clean] = torchcde.natural_cubic_coeffs(xs[g][None, :, clean], t)[0].unflatten(-1, (4, -1))
        for c in torch.nonzero(~clean & ~nan[g].all(0)).flatten().tolist():
            col = xs[g, :, c].clone()
            seen = torch.nonzero(~nan[g, :, c]).flatten()
            col[: seen[0]] = col[seen[0]]
            col[seen[-1] + 1:] = col[seen[-1]]
            keep = ~torch.isnan(col)
            knots = t[keep]
            piece = torchcde.natural_cubic_coeffs(col[keep][None, :, None], knots)[0]  # [m - 1, 4]
            i = (torch.searchsorted(knots, t[:-1], right=True) - 1).clamp(0, knots.numel() - 2)
            out[g, :, :, c] = _shift(piece[i], (t[:-1] - knots[i])[:, None])
    return out.flatten(-2)


def _pieces(x: Tensor, time: Tensor, lengths: Tensor, kind: Interpolation) -> tuple[Tensor, Tensor, Tensor]:
    """Each series' torchcde pieces on its own knots: ``knots [B, K]`` (padded with the last knot),
    ``coeffs [B, K - 1, 4 C']`` and the number of pieces ``[B]``. Series with equal row times (or,
    for rectilinear, equal lengths) share one torchcde call."""
    B, L, Cp = x.shape
    rect = kind is Interpolation.RECTILINEAR
    K = max(2 * L - 1 if rect else L, 2)  # at least one (maybe empty) piece per series
    knots = time.new_zeros(B, K)
    coeffs = x.new_zeros(B, K - 1, 4 * Cp)
    groups: dict[bytes, list[int]] = {}
    times_np = time.detach().cpu().numpy()
    for b, n in enumerate(lengths.tolist()):
        key = np.int64(n).tobytes() if rect else times_np[b, :n].tobytes()
        groups.setdefault(key, []).append(b)
    for members in groups.values():
        n = int(lengths[members[0]])
        xs = x[members, :n]
        if rect:
            t = time[members, :n]
            mid = (t[:, 1:] + t[:, :-1]) / 2
            kn = torch.cat([torch.stack([t[:, :-1], mid], -1).flatten(1), t[:, -1:]], 1)  # [G, 2n - 1]
        else:
            kn = time[members[0], :n].expand(len(members), -1)
        knots[members] = torch.cat([kn, kn[:, -1:].expand(-1, K - kn.shape[1])], 1)
        if n < 2:
            continue
        if kind is Interpolation.HERMITE:
            c = torchcde.hermite_cubic_coefficients_with_backward_differences(xs, kn[0])
        elif kind is Interpolation.NATURAL_CUBIC:
            c = _natural(xs, kn[0])
        else:  # linear and rectilinear: torchcde's knot values, as pieces with zero curvature
            v = torchcde.linear_interpolation_coeffs(xs, kn[0]) if not rect else \
                torchcde.linear_interpolation_coeffs(xs, rectilinear=0)
            slope = (v[:, 1:] - v[:, :-1]) / (kn[:, 1:] - kn[:, :-1])[..., None]
            c = torch.cat([v[:, :-1], slope, torch.zeros_like(slope), torch.zeros_like(slope)], -1)
        coeffs[members, : c.shape[1]] = c
    pieces = (2 * lengths - 2) if rect else (lengths - 1)
    return knots, coeffs, pieces


def _fill(time: Tensor, values: Tensor, observed: Tensor, forward: bool) -> Tensor:
    """Fill NaN as torchcde does, vectorised over series and channels (torchcde loops in Python).

    ``forward=False`` (``linear_interpolation_coeffs``): linear in time between the previous and
    next observation of the channel, the first observation before it, the last after it.
    ``forward=True`` (rectilinear): the last observation carried forward (the first one before it).
    A channel never observed in a series is 0 (torchcde's zero path).
    """
    B, L, C = values.shape
    idx = torch.arange(L, device=values.device)[None, :, None].expand(B, L, C)
    prev = torch.where(observed, idx, -1).cummax(1).values
    nxt = torch.where(observed, idx, L).flip(1).cummin(1).values.flip(1)
    first, last = nxt[:, :1].expand(B, L, C), prev[:, -1:].expand(B, L, C)
    lo = torch.where(prev < 0, first, prev).clamp(max=L - 1)
    hi = torch.where(nxt >= L, last, nxt).clamp(min=0)
    if forward:
        hi = lo
    x_lo, x_hi = values.gather(1, lo), values.gather(1, hi)
    t = time[..., None].expand(B, L, C)
    t_lo, t_hi = t.gather(1, lo), t.gather(1, hi)
    gap = t_hi - t_lo
    w = torch.where(gap > 0, (t - t_lo) / torch.where(gap > 0, gap, torch.ones_like(gap)), torch.zeros_like(gap))
    filled = x_lo + w * (x_hi - x_lo)
    never = (last < 0)
    return torch.where(observed, values, torch.where(never, torch.zeros_like(values), filled))


def drop(batch: SeriesBatch, rate: float, seed: int, *, per_channel: bool = False, remove: bool = False) -> SeriesBatch:
    """Make ``batch`` sparser by the stable neural SDE paper's protocol: ``floor(L_b * rate)`` rows of
    every series ``b`` chosen uniformly at random, independently per series, are set to NaN in all
    channels (the row, i.e. its time, stays and the path interpolates over it).

    This follows the reference code (Oh, Lim & Kim 2024, ``benchmark_classification/datasets/uea.py``,
    from Kidger et al. 2020's CharacterTrajectories experiment): one ``torch.Generator`` seeded with
    ``seed``, then ``torch.randperm(L_b, generator=g)[:int(L_b * rate)]`` per series in batch order, so
    with equal lengths the dropped rows are exactly the reference's. (The reference draws over the
    padded length for unequal series; we draw over each series' own rows.)

    ``per_channel=True``: the protocol of the paper's robustness experiments (its ``torch-ists``
    ``preprocess``): for each series, then each channel, its own ``randperm`` -- values go missing
    channel by channel. ``remove=True`` (rows only): delete the rows instead of blanking them.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate must be in [0, 1), got {rate}")
    if remove and per_channel:
        raise ValueError("remove=True deletes whole rows; it cannot be combined with per_channel=True")
    g = torch.Generator().manual_seed(int(seed))
    C = batch.num_channels
    lengths = batch.lengths.tolist()
    dropped = np.zeros(tuple(batch.time.shape) + ((C,) if per_channel else ()), dtype=bool)
    for b, n in enumerate(lengths):
        k = int(n * rate)
        if per_channel:
            for c in range(C):
                dropped[b, torch.randperm(n, generator=g)[:k].numpy(), c] = True
        else:
            dropped[b, torch.randperm(n, generator=g)[:k].numpy()] = True
    if remove:
        keep = batch.mask.cpu().numpy() & ~dropped
        out = SeriesBatch.from_flat(
            batch.time.detach().cpu().numpy()[keep], batch.values.detach().cpu().numpy()[keep],
            np.concatenate([[0], np.cumsum(keep.sum(1))]), None if batch.labels is None else batch.labels.cpu().numpy(),
            targets=None if batch.targets is None else batch.targets.detach().cpu().numpy(),
            channel_names=batch.channel_names, class_names=batch.class_names, ids=batch.ids, dtype=batch.dtype)
        return out.to(batch.device)
    hole = torch.from_numpy(dropped).to(batch.device)
    hole = hole if per_channel else hole[..., None].expand_as(batch.values)
    values = torch.where(hole, torch.full_like(batch.values, float("nan")), batch.values)
    return batch._with(values=values)
