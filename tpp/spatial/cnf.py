"""Neural spatio-temporal point processes (Chen, Amos & Nickel, ICLR 2021): continuous normalizing flows in space
over a neural-ODE temporal point process. Our own code, written from the paper and its public reference code
(facebookresearch/neural_stpp: ``models/temporal/neural.py``, ``models/spatial/{cnf,jumpcnf,attncnf,indepcnf}.py``).

**Time** (all three models): a hidden state ``h(t) in R^H`` follows ``dh/dt = g(h)`` (``hidden_dynamics="free"``,
the default and the reference's default "gru" style; ``"bounded"``: ``tanh(g(h))``, its "simple" style and our
default before: :class:`~tpp.spatial._flows.HiddenODE`) between events and jumps at each event, ``h <- GRUCell(x_n, h)`` (the jump sees the event's standardised location, the reference's
``tpp_cond``); the intensity is ``lambda(t) = softplus(w h(t) + b)``, and the compensator rides in the same ODE
as an extra state (the reference's ``IntensityODEFunc``), so it is as exact as the solve. (The reference uses
``50 sigmoid(w h + b - 2)``; the softplus is ours.) Ties: an event's history is the events strictly before it,
so tied events share the state before their group.

**Space**: the density ``f(x | t, history)`` of the next location, each a CNF (:mod:`tpp.spatial._flows`):

* :class:`TimeVaryingCNF` -- no history: ``x`` at time ``t`` flows back along ``dx/dt = f(x, t)`` from
  ``t + offset`` to ``0`` to a learned diagonal Gaussian (the reference's ``IndependentCNF``).
* :class:`JumpCNF` -- the density evolves between events by a CNF whose drift sees the hidden state
  ``h(t-)`` and jumps at each earlier event by an instantaneous conditional flow (conditioned on that event's
  location and ``h``): four radial flows centred near the event (the reference's, with a local, bounded profile:
  :class:`_RadialJumps`), inverted by bisection on the radius, so a location is sampled by running the whole map
  forwards.
* :class:`AttentiveCNF` -- all events flow jointly from ``t_n + offset`` to ``0``; the drift of event ``n``
  attends (one causal attention block, gated) over the flow states and hidden states of the events strictly
  before it; the base Gaussian's mean and scale are linear in ``h(t_n-)``. Opt-in, the reference's form
  (``base_flow=True, base_net="mlp"``): the attentive flow stops at ``offset`` and an unconditional time-varying
  CNF shared by all events takes them on to ``0`` (the reference's ``base_cnf``: the locations' marginal shape),
  the base Gaussian an MLP of ``h(t_n-)`` and the time features of ``t_n``. The joint map is triangular, so each
  event's log-density uses only its own block of the Jacobian (the reference's ``nonself_connections``:
  :class:`~tpp.spatial._flows.FlowODE`'s ``self_only`` pass).

**Numerics.** torchdiffeq's ``dopri5`` with ``rtol``/``atol`` (defaults 1e-4, the reference's ``--tol``) for
every solve in evaluation; ``adjoint=True`` backpropagates by the adjoint method. In training the trace of the
drift's Jacobian is Hutchinson's estimate (``trace="rademacher"`` or ``"gaussian"``, one noise vector per solve);
in evaluation (``model.eval()``, which :meth:`Model.fit` leaves the model in) it is exact, so reported likelihoods
are exact up to the solver tolerance (the training objective is an unbiased estimate of the same log-likelihood:
the log-determinant enters linearly). Both traces come from forward-mode derivatives written into the drifts
(:meth:`~tpp.spatial._flows.ConcatMLP.forward_tangent`: the drift and ``J e`` or ``J`` in one pass, no autograd
call per evaluation and a first-order backward in training; the attentive drift's trace is then differentiated
exactly, including through the other rows' keys, which the autograd ``self_only`` route cuts).
``time_step=`` replaces the hidden-state ODE's adaptive solver by RK4 with steps of at most that many model time
units; ``train_time_step`` does so in training only (default None: the adaptive solve, as in evaluation). It was
2.0 by default, which is cheaper (the temporal pass is ``L`` sequential solves of a small ODE) and matched dopri5
to ~1e-4 nats per event on a young model, but a long fit learns the coarse solve's error: on Pinwheel a free
drift trained with RK4 steps of 2 fell from -0.21 to -1.39 nats per event of test time log-likelihood (dopri5)
within 4 CPU minutes, and the Attentive CNF after 30 CPU minutes scored -0.49 with it against -0.12 trained with
dopri5, at the same space score (benchmarks/results/stpp_time_solver.md). An error-controlled training solve
cannot be exploited beyond its tolerance.
``train_flow_step`` does the same for the flows in training (in flow units, below; off by default), ``train_tol``
loosens their adaptive tolerance in training. ``flow_penalty`` (default 0, off; the reference trains with 1e-4,
its ``otreg_strength``) subtracts that multiple of each flow solve's RNODE regulariser (kinetic energy plus
Jacobian norm, Finlay et al. 2020; :func:`~tpp.spatial._flows.solve_flow`) from every event's training
log-likelihood; reported likelihoods never include it. ``train_space_events=m`` (the Jump CNF's; default None, every
event) trains the space part on ``m`` events drawn per sequence, weighted to an unbiased estimate (each event's
density costs a solve over every earlier interval: ``m L / 2`` particle-intervals per sequence for ``L^2 / 2``).
``dtype="float32"`` runs the networks in single precision
(likelihoods are returned in float64). The rows of one solve share its steps, so a later event changes an
earlier event's terms only at the solver tolerance. Cost: the temporal pass is ``L`` sequential solves per batch;
the Jump CNF adds ``L`` more over the ``sum_b L_b^2 / 2`` particles (each event's location crosses every earlier
interval; padding is dropped), the others one solve over all events (the Attentive CNF with its base flow
two: the attentive one, then the base flow's over the events without padding).

**Units.** ``initialise`` sets the time unit ``s`` (the training data's mean positive gap) and the location
centre and scale (over the training events, :class:`tpp.spatial.data.LocationScaler`, isotropic); the flows see
standardised locations, and every public number is in data units: the space log-likelihood minus
``sum_d log scale_d`` per event, the time log-likelihood minus ``log s`` per event, intensities divided by ``s``.
The flows measure time in their own unit ``max(s, W / flow_span)`` (``W`` the mean training window, ``flow_span``
30 by default; ``flow_span=None``: ``s``): the space density is integrated from ``t + offset`` (attentive,
time-varying) or through every interval (jump) over a span that grows with the window in flow units, and with the
mean-gap unit a window with many events spans hundreds of them (earthquakes_japan: 30 days at ~0.34 days a gap,
~88 units), so each early update moves the flow far: 8 Adam steps at lr 1e-3 took the attentive CNF's test space
log-likelihood there from -6.78 (its start) to -7.11 nats per event (mean of 3 seeds), against -6.77 with the
span bounded (benchmarks/results/stpp_peer_eq.md). The bound 30 is the windows of the reference's data (Pinwheel
``[0, 30]``, earthquakes in 30-day windows, in raw units there); ``time_offset`` and ``train_flow_step`` are in
flow units. Sequences with few events per window (span under ``flow_span``) keep ``s``.

**Sampling.** Times by thinning (:func:`tpp.sampling.thinning_sample`, the one sampler) on the intensity given
the sampled times and locations; each accepted event's location is drawn from ``f(x | t, events before it)``
(base Gaussian, the flow run forwards; :meth:`NeuralSTPP.sample_locations`) before the sampler's next query.
:meth:`~NeuralSTPP.expected_location` is a Monte Carlo mean of ``num_samples`` such draws with the fixed seed
``mc_seed``.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from tpp.events import EventBatch
from tpp.model import Seed
from tpp.process import as_numpy_rng
from tpp.sampling import MAX_EVENTS, thinning_sample
from tpp.spatial._flows import (
    ConcatMLP, HiddenODE, Trace, gaussian_log_density, input_tangent, solve_flow, solve_hidden, tangent_trace,
)
from tpp.spatial.base import SpatioTemporalProcess, history_before
from tpp.spatial.data import LocationScaler

__all__ = ["AttentiveCNF", "JumpCNF", "NeuralSTPP", "TimeVaryingCNF"]

#: How far (standardised units, i.e. training location scales) a Jump CNF's draw may go from the centre.
SAMPLE_BOUND = 1e3


class _Encoding:
    """The temporal model's pass over a batch in model units (see :meth:`NeuralSTPP._encode`); ``v`` holds the
    same event times in flow units (module docstring, *Units*)."""

    def __init__(self, u: Tensor, y: Tensor, mask: Tensor, h_pre: Tensor, h_post: Tensor, log_rate: Tensor,
                 compensator: Tensor, v: Tensor | None = None) -> None:
        self.u, self.y, self.mask = u, y, mask
        self.h_pre, self.h_post = h_pre, h_post  # [B, L, H]: before (tie groups share it) and after each jump
        self.log_rate, self.compensator = log_rate, compensator  # [B, L], [B]
        self.v = u if v is None else v

    def for_flows(self) -> _Encoding:
        """The same pass with the event times in flow units: what the spatial flows (``_space_*``) read as ``u``."""
        return _Encoding(self.v, self.y, self.mask, self.h_pre, self.h_post, self.log_rate, self.compensator)


class NeuralSTPP(SpatioTemporalProcess):
    """The shared temporal model, units and protocol of :class:`TimeVaryingCNF`, :class:`JumpCNF` and
    :class:`AttentiveCNF` (module docstring). A subclass supplies the spatial flow: ``_space_events``,
    ``_space_query`` and ``_space_sample``, with times in flow units (module docstring, *Units*)."""

    def __init__(self, feature_dim: int = 2, hidden_size: int = 32, location_names: Sequence[str] | None = None,
                 num_marks: int = 1, *, flow_hidden: Sequence[int] = (64, 64), trace: Trace | str = "rademacher",
                 rtol: float = 1e-4, atol: float = 1e-4, method: str = "dopri5", adjoint: bool = False,
                 time_offset: float = 2.0, num_samples: int = 256, mc_seed: int = 0, time_step: float | None = None,
                 dtype: torch.dtype | str = "float64", train_time_step: float | None = None,
                 train_tol: float | None = None, train_flow_step: float | None = None,
                 flow_span: float | None = 30.0, flow_penalty: float = 0.0, hidden_dynamics: str = "free",
                 train_space_events: int | None = None) -> None:
        super().__init__()
        self.set_locations(feature_dim, location_names)
        if int(num_marks) != 1:
            raise ValueError(f"{type(self).__name__} models unmarked events (num_marks=1), got num_marks={num_marks}")
        if int(hidden_size) < 1:
            raise ValueError(f"hidden_size must be a positive integer, got {hidden_size}")
        for name, value in (("rtol", rtol), ("atol", atol), ("time_offset", time_offset)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        for name, value in (("time_step", time_step), ("train_time_step", train_time_step),
                            ("train_flow_step", train_flow_step)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be None (adaptive) or a positive number, got {value}")
        if flow_span is not None and not (math.isfinite(flow_span) and flow_span > 0):
            raise ValueError(f"flow_span must be None (no bound) or a positive number, got {flow_span}")
        if hidden_dynamics not in ("bounded", "free"):
            raise ValueError(f"hidden_dynamics must be 'bounded' or 'free', got {hidden_dynamics!r}")
        if not (math.isfinite(flow_penalty) and flow_penalty >= 0):
            raise ValueError(f"flow_penalty must be a non-negative number, got {flow_penalty}")
        if train_space_events is not None:
            if isinstance(train_space_events, bool) or int(train_space_events) != train_space_events \
                    or train_space_events < 1:
                raise ValueError(f"train_space_events must be None (every event) or a positive integer, got "
                                 f"{train_space_events!r}")
            if not self._subsamples_space:
                raise ValueError(f"train_space_events is the Jump CNF's (its cost grows with each event's history); "
                                 f"{type(self).__name__} scores every event in training")
        if train_tol is not None and not (math.isfinite(train_tol) and train_tol > 0):
            raise ValueError(f"train_tol must be None (rtol/atol) or a positive number, got {train_tol}")
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
        self.num_marks = 1
        self.hidden_size = int(hidden_size)
        self.flow_hidden = tuple(int(w) for w in flow_hidden)
        self.trace = Trace(trace)
        self.rtol, self.atol, self.method, self.adjoint = float(rtol), float(atol), str(method), bool(adjoint)
        self.time_offset = float(time_offset)
        self.num_samples, self.mc_seed = int(num_samples), int(mc_seed)
        self.time_step = None if time_step is None else float(time_step)
        self.train_time_step = None if train_time_step is None else float(train_time_step)
        self.train_tol = None if train_tol is None else float(train_tol)
        self.train_flow_step = None if train_flow_step is None else float(train_flow_step)
        self.flow_span = None if flow_span is None else float(flow_span)
        self.flow_penalty = float(flow_penalty)
        self.hidden_dynamics = str(hidden_dynamics)
        self.train_space_events = None if train_space_events is None else int(train_space_events)
        self._penalties: list | None = None  # the flows' regularisers of the objective being computed
        self.dtype = str(dtype).removeprefix("torch.")  # a string: the table saves constructor arguments as JSON
        self._dtype = dtype
        D, H = self.feature_dim, self.hidden_size
        self.h0 = nn.Parameter(torch.randn(H) / math.sqrt(H))
        self.hidden_ode = HiddenODE(H, 4 * H, bounded=self.hidden_dynamics == "bounded")
        self.jump = nn.GRUCell(D, H)
        self.register_buffer("time_scale", torch.ones((), dtype=torch.float64))
        self.register_buffer("flow_time_scale", torch.ones((), dtype=torch.float64))  # data units per flow unit
        self.scaler = LocationScaler(D)  # the shared standardisation (isotropic: one scale for all coordinates)
        self.register_buffer("initialised", torch.tensor(False))
        # Which hidden drift the state was trained with (its tensors are the same for both): a state saved before
        # the choice existed was bounded, and loads as such (_load_from_state_dict).
        self.register_buffer("free_hidden", torch.tensor(self.hidden_dynamics == "free"))
        self._build_space()
        # Parameters in `dtype` (float64 by default: the exact-trace checks hold to 1e-5 there; float32 is about
        # twice as fast); times and locations enter in it, likelihoods leave in float64.
        self.to(dtype)
        self.time_scale.data = self.time_scale.data.double()
        self.flow_time_scale.data = self.flow_time_scale.data.double()
        for name, buf in self.scaler.named_buffers():
            setattr(self.scaler, name, buf.double())

    #: Whether the spatial part can be trained on a random subset of each sequence's events
    #: (``train_space_events``): the Jump CNF's, whose events' densities are separate solves.
    _subsamples_space: bool = False

    # ------------------------------------------------------------------ set-up
    @abc.abstractmethod
    def _build_space(self) -> None:
        """Create the spatial modules."""

    def initialise(self, train: EventBatch) -> NeuralSTPP:
        """Time unit and location standardisation from the training data (once per model); returns self."""
        from tpp.neural.base import training_sample

        batch = training_sample(train)
        if bool(self.initialised) or batch.num_events == 0:
            return self
        x = self.locations(batch)[batch.mask]
        gaps = batch.inter_event_times[batch.mask].double()
        gaps = gaps[gaps > 0]
        scale = float(gaps.mean()) if gaps.numel() else float((batch.t_end - batch.t_start).sum()) / batch.num_events
        if math.isfinite(scale) and scale > 0:
            self.time_scale.fill_(scale)
        # The flows' unit: the same, unless the mean window would then span more than `flow_span` units (module
        # docstring, *Units*: a long integration span makes early updates move the flow far).
        window = float((batch.t_end - batch.t_start).double().mean())
        flow_scale = float(self.time_scale)
        if self.flow_span is not None and math.isfinite(window) and window > 0:
            flow_scale = max(flow_scale, window / self.flow_span)
        self.flow_time_scale.fill_(flow_scale)
        self.scaler.fit(x)
        self.initialised.fill_(True)
        # The intensity starts at the data's average rate (model units), the rest at the identity flow.
        rate = batch.num_events / float((batch.t_end - batch.t_start).sum()) * float(self.time_scale)
        with torch.no_grad():
            self.hidden_ode.intensity.weight.zero_()
            self.hidden_ode.intensity.bias.fill_(math.log(math.expm1(max(rate, 1e-6))))
        return self

    def _solver(self, t0: Tensor | None = None, t1: Tensor | None = None) -> dict:
        """The flows' solver. Every solve runs over ``s in [0, 1]``; adaptive methods first try the whole solve in
        one step (instead of torchdiffeq's estimate, 1e-6 where the drift is zero, as for a new model, then growing
        10x per step: 44 evaluations for nothing), which only changes the cost: the error control is the same, and a
        rejected step is retried smaller. Most solves are short (the Jump CNF's and the hidden state's are one
        inter-event interval each) and pass in one step: 7 dopri5 evaluations, against 13 when the first step was
        0.5 (a Jump CNF training step on 8 earthquakes_japan sequences: 3.8 CPU s and 2.5 GB against 6.4 s and
        4.1 GB, the same losses to 1e-3 over 12 steps). In training,
        ``train_tol`` replaces rtol/atol, and ``train_flow_step`` (given the solve's intervals ``t0``, ``t1``)
        replaces the adaptive solver by RK4 with steps of at most that many flow units."""
        penalty = {"penalty": self._penalties} if self.training and self._penalties is not None else {}
        if self.training and self.train_flow_step is not None and t0 is not None and t1 is not None:
            return {**self._rk4(t0, t1, self.train_flow_step), **penalty}
        adaptive = self.method in ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2")
        rtol, atol = self.rtol, self.atol
        if self.training and self.train_tol is not None:
            rtol = atol = self.train_tol
        return {"rtol": rtol, "atol": atol, "method": self.method, "adjoint": self.adjoint,
                "options": {"first_step": 1.0} if adaptive else None, **penalty}

    def _hidden_solver(self, t0: Tensor, t1: Tensor) -> dict:
        """The hidden-state ODE's solver: adaptive (``rtol``/``atol``), or with ``time_step`` set (in training:
        ``train_time_step``), RK4 with as many equal steps as the longest interval of the solve needs for steps of
        at most that many model units."""
        step = self.train_time_step if self.training and self.train_time_step is not None else self.time_step
        if step is None:
            return {k: v for k, v in self._solver().items() if k != "penalty"}
        return self._rk4(t0, t1, step)

    def objective(self, batch: EventBatch) -> Tensor:
        """``[B]`` the log-likelihood; in training with ``flow_penalty > 0``, minus ``flow_penalty`` times each
        flow solve's RNODE regulariser per event (:func:`~tpp.spatial._flows.solve_flow`'s ``penalty``; the
        reference code adds it to every event's log-density the same way, ``otreg_strength``)."""
        if not (self.training and self.flow_penalty > 0 and torch.is_grad_enabled()):
            return self.log_likelihood(batch)
        self._penalties = []
        try:
            ll = self.log_likelihood(batch)
            penalties = self._penalties
        finally:
            self._penalties = None
        if not penalties:
            return ll
        return ll - self.flow_penalty * torch.stack(penalties).sum().to(ll.dtype) * batch.mask.sum(1).to(ll.dtype)

    def _rk4(self, t0: Tensor, t1: Tensor, step: float) -> dict:
        """RK4 with as many equal steps in ``s`` as the longest interval of the solve needs for steps of at most
        ``step`` model units (the rows share the grid)."""
        longest = float((t1 - t0).abs().max()) if t0.numel() else 0.0
        steps = max(1, math.ceil(longest / step))
        return {"rtol": self.rtol, "atol": self.atol, "method": "rk4", "adjoint": self.adjoint,
                "options": {"step_size": 1.0 / steps}}

    def _trace(self) -> Trace:
        """Hutchinson's estimate in training, the exact trace in evaluation (module docstring)."""
        return self.trace if self.training else Trace.EXACT

    def _standardise(self, x: Tensor) -> Tensor:
        return self.scaler.standardise(x.double()).to(self._dtype)

    def _log_scale(self) -> Tensor:
        """``sum_d log scale_d``: what a standardised log-density loses in data units."""
        return -self.scaler.log_det_inverse()

    def _model_times(self, batch: EventBatch, t: Tensor, scale: Tensor | None = None) -> Tensor:
        """Times since each window's start in model units (``scale``: in those data units instead)."""
        scale = self.time_scale if scale is None else scale
        u = (t.double() - batch.t_start.double().reshape(-1, *([1] * (t.dim() - 1)))) / scale
        return u.to(self._dtype)

    def _flow_times(self, batch: EventBatch, t: Tensor) -> Tensor:
        """Times since each window's start in flow units (module docstring, *Units*)."""
        return self._model_times(batch, t, self.flow_time_scale)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # A state saved before the flows had their own unit ran them in the model unit: keep that.
        if prefix + "time_scale" in state_dict and prefix + "flow_time_scale" not in state_dict:
            state_dict[prefix + "flow_time_scale"] = state_dict[prefix + "time_scale"].clone()
        # A state saved before `hidden_dynamics` existed had the bounded drift; a state says which it had.
        if prefix + "h0" in state_dict:
            free = state_dict.setdefault(prefix + "free_hidden", torch.tensor(False))
            self.hidden_dynamics = "free" if bool(free) else "bounded"
            self.hidden_ode.bounded = not bool(free)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ time
    def _encode(self, batch: EventBatch) -> _Encoding:
        """One pass of the hidden-state ODE over the batch: states before/after each event, log-rates, compensator."""
        u = self._model_times(batch, batch.time)
        mask = batch.mask
        B, L = u.shape
        H = self.hidden_size
        y = self._standardise(self.locations(batch)) if L else u.new_zeros(B, 0, self.feature_dim)
        h = self.h0.expand(B, H)
        cur = torch.zeros(B, dtype=u.dtype, device=u.device)
        comp = torch.zeros_like(cur)
        pre, post = [], []
        for k in range(L):
            target = torch.where(mask[:, k], u[:, k], cur)
            h, part = solve_hidden(self.hidden_ode, h, cur, target, **self._hidden_solver(cur, target))
            comp = comp + part
            pre.append(h)
            h = torch.where(mask[:, k, None], self.jump(y[:, k], h), h)
            post.append(h)
            cur = target
        end = self._model_times(batch, batch.t_end)
        end = torch.maximum(end, cur)
        _, part = solve_hidden(self.hidden_ode, h, cur, end, **self._hidden_solver(cur, end))
        comp = comp + part
        if L:
            h_pre, h_post = torch.stack(pre, 1), torch.stack(post, 1)
            # Tied events share the state before their group (their history is the events strictly before).
            padded = torch.where(mask, u, torch.full_like(u, math.inf)).contiguous()
            first = torch.searchsorted(padded, padded, side="left").clamp_max(L - 1)
            h_pre = h_pre.gather(1, first[..., None].expand(B, L, H))
        else:
            h_pre = h_post = u.new_zeros(B, 0, H)
        log_rate = torch.log(self.hidden_ode.rate(h_pre).clamp_min(torch.finfo(h_pre.dtype).tiny))
        return _Encoding(u, y, mask, h_pre, h_post, log_rate, comp, v=self._flow_times(batch, batch.time))

    def _hidden_at(self, enc: _Encoding, uq: Tensor) -> Tensor:
        """``[B, T, H]`` the state just before model times ``uq [B, T]`` (given the events strictly before each)."""
        B, T = uq.shape
        H = self.hidden_size
        L = enc.u.shape[1]
        start_h = self.h0.expand(B, T, H)
        start_t = torch.zeros_like(uq)
        if L:
            padded = torch.where(enc.mask, enc.u, torch.full_like(enc.u, math.inf)).contiguous()
            count = torch.searchsorted(padded, uq.contiguous(), side="left")  # events strictly before
            idx = (count - 1).clamp_min(0)
            before = count > 0
            start_h = torch.where(before[..., None], enc.h_post.gather(1, idx[..., None].expand(B, T, H)), start_h)
            start_t = torch.where(before, enc.u.gather(1, idx), start_t)
        h, _ = solve_hidden(self.hidden_ode, start_h.reshape(B * T, H), start_t.reshape(-1), uq.reshape(-1),
                            **self._hidden_solver(start_t, uq))
        return h.reshape(B, T, H)

    def intensity(self, batch: EventBatch, t: Tensor) -> Tensor:
        """``[B, T, 1]`` ``lambda(t)`` in data units given the events strictly before each ``t [B, T]``."""
        self.check_marks(batch)
        t = torch.as_tensor(t, dtype=torch.float64, device=batch.time.device)
        t = t.reshape(len(batch), -1)
        enc = self._encode(batch)
        h = self._hidden_at(enc, self._model_times(batch, t))
        return (self.hidden_ode.rate(h).double() / self.time_scale)[..., None]

    # ------------------------------------------------------------------ the protocol
    def log_likelihood_split(self, batch: EventBatch) -> tuple[Tensor, Tensor]:
        """``(time [B], space [B])`` in data units: the temporal log-likelihood (compensator by the ODE, to the
        solver tolerance) and ``sum_n log f(x_n | t_n, history)`` (exact trace in evaluation)."""
        self.check_marks(batch)
        enc = self._encode(batch)
        n = batch.mask.sum(1).double()
        time = self._time_part(enc, batch)
        if batch.max_length == 0:
            return time, torch.zeros_like(time)
        space = self._space_events(enc.for_flows())
        space = (torch.where(batch.mask, space, torch.zeros_like(space))).sum(1).double() - n * self._log_scale()
        return time, space

    def time_log_likelihood(self, batch: EventBatch) -> Tensor:
        """``[B]`` the temporal part of :meth:`log_likelihood_split` alone (no flow is solved), with the solver of
        the current mode: dopri5 in evaluation, the training solver (``train_time_step``) in training mode."""
        self.check_marks(batch)
        return self._time_part(self._encode(batch), batch)

    def _time_part(self, enc: _Encoding, batch: EventBatch) -> Tensor:
        n = batch.mask.sum(1).double()
        return (enc.log_rate * batch.mask).sum(1).double() - enc.compensator.double() - n * self.time_scale.log()

    def _query(self, batch: EventBatch, t: Tensor) -> tuple[_Encoding, Tensor, Tensor]:
        """The history before ``t [B]``, its encoding for the flows (times in flow units), the flow time of ``t`` and
        the state just before ``t``."""
        t = torch.as_tensor(t, dtype=torch.float64, device=batch.time.device).reshape(-1)
        hist = history_before(batch, t)
        enc = self._encode(hist)
        uq = self._model_times(hist, t)
        hq = self._hidden_at(enc, uq[:, None])[:, 0]
        return enc.for_flows(), self._flow_times(hist, t), hq

    def spatial_log_density(self, batch: EventBatch, t: Tensor, x: Tensor) -> Tensor:
        """``[B, M]`` ``log f(x | t, events strictly before t)`` in data units at ``x [M, D]`` or ``[B, M, D]``."""
        self.check_marks(batch)
        enc, uq, hq = self._query(batch, t)
        x = torch.as_tensor(x, dtype=torch.float64, device=batch.time.device)
        if x.dim() == 2:
            x = x[None].expand(len(batch), -1, -1)
        if x.dim() != 3 or x.shape[0] != len(batch) or x.shape[2] != self.feature_dim:
            raise ValueError(f"x must be [M, {self.feature_dim}] or [{len(batch)}, M, {self.feature_dim}], "
                             f"got {tuple(x.shape)}")
        return self._space_query(enc, uq, hq, self._standardise(x)).double() - self._log_scale()

    def sample_locations(self, batch: EventBatch, t: Tensor, num: int, generator: torch.Generator | None = None
                         ) -> Tensor:
        """``[B, num, D]`` draws from ``f(x | t, history)`` in data units: base Gaussian, then the flow forwards."""
        with torch.no_grad():
            enc, uq, hq = self._query(batch, t)
            y = self._space_sample(enc, uq, hq, int(num), generator)
            return self.scaler.unstandardise(y.double())

    def expected_location(self, batch: EventBatch, t: Tensor) -> Tensor:
        """``[B, D]`` Monte Carlo mean of ``f(x | t, history)``: ``num_samples`` draws with the fixed seed ``mc_seed``
        (the same answer on every call; Monte Carlo error about ``std / sqrt(num_samples)``)."""
        gen = torch.Generator(device=batch.time.device).manual_seed(self.mc_seed)
        return self.sample_locations(batch, t, self.num_samples, gen).mean(1)

    def sample(self, n: int, t_end: float, history: EventBatch | None = None, generator: Seed = None,
               t_start: float = 0.0, max_events: int = MAX_EVENTS) -> EventBatch:
        """``n`` sequences on ``[t_start, t_end]`` (or continuations of ``history``): times by thinning
        (:func:`tpp.sampling.thinning_sample`, the one sampler), each new event's location drawn from
        ``f(x | t, events before it)`` (base Gaussian, flow run forwards) as soon as the sampler accepts it."""
        rng = as_numpy_rng(generator)
        locator = _Locator(self, n, history, torch.Generator().manual_seed(int(rng.integers(0, 2**62))))
        self_training = self.training
        self.eval()
        try:
            out, _ = thinning_sample(locator, n, t_end, history, rng, t_start, max_events=max_events)
            locator.fill(out)
        finally:
            self.train(self_training)
        return locator.attach(out, validate=True)

    # ------------------------------------------------------------------ spatial parts (subclasses)
    @abc.abstractmethod
    def _space_events(self, enc: _Encoding) -> Tensor:
        """``[B, L]`` standardised ``log f(y_n | u_n, history)`` of every event."""

    @abc.abstractmethod
    def _space_query(self, enc: _Encoding, uq: Tensor, hq: Tensor, y: Tensor) -> Tensor:
        """``[B, M]`` standardised log-density at ``y [B, M, D]`` for an event at ``uq [B]`` after ``enc``."""

    @abc.abstractmethod
    def _space_sample(self, enc: _Encoding, uq: Tensor, hq: Tensor, num: int, generator: torch.Generator | None
                      ) -> Tensor:
        """``[B, num, D]`` standardised draws at ``uq [B]`` after ``enc``."""

    def _base_draw(self, shape: tuple[int, ...], mean: Tensor, log_std: Tensor, generator: torch.Generator | None
                   ) -> Tensor:
        eps = torch.randn(*shape, self.feature_dim, generator=generator, dtype=mean.dtype, device=mean.device)
        return mean + eps * log_std.exp()


class _Locator:
    """What :func:`tpp.sampling.thinning_sample` simulates: the model's intensity given the sampled times *and*
    locations; a newly accepted event gets its location at the sampler's next query, drawn given the events
    before it (seeded by the sample's generator)."""

    def __init__(self, model: NeuralSTPP, n: int, history: EventBatch | None, generator: torch.Generator) -> None:
        self.model, self.num_marks, self.generator = model, 1, generator
        D = model.feature_dim
        if model.location_names is not None:
            self.names = model.location_names
        elif history is not None and history.features is not None:
            self.names = tuple(history.feature_names[:D])
        else:
            self.names = tuple(f"x{d}" for d in range(D))
        self.locs = torch.zeros(n, 64, D, dtype=torch.float64)
        self.known = torch.zeros(n, dtype=torch.long)
        if history is not None and history.max_length:
            x = model.locations(history).cpu()
            self._grow(x.shape[1])
            self.locs[:, : x.shape[1]] = x
            self.known = history.lengths.cpu().clone()

    def parameters(self):  # the sampler reads the device from here
        return self.model.parameters()

    def _grow(self, length: int) -> None:
        while self.locs.shape[1] < length:
            self.locs = torch.cat([self.locs, torch.zeros_like(self.locs)], 1)

    def attach(self, batch: EventBatch, validate: bool = False) -> EventBatch:
        L = batch.max_length
        self._grow(L)
        feats = self.locs[:, :L].to(batch.time.device)
        feats = torch.where(batch.mask[..., None], feats, torch.zeros_like(feats))
        return EventBatch(batch.time, batch.mark, batch.mask, batch.t_start, batch.t_end, 1, features=feats,
                          feature_names=self.names, validate=validate)

    def fill(self, batch: EventBatch) -> None:
        """Draw the location of every event of ``batch`` that has none yet, in order."""
        lengths = batch.lengths.cpu()
        self._grow(batch.max_length)
        while bool((lengths > self.known).any()):
            rows = torch.nonzero(lengths > self.known)[:, 0]
            pos = self.known[rows]
            sub = self.attach(batch)[rows.to(batch.time.device)]
            t = sub.time.gather(1, pos[:, None].to(sub.time.device))[:, 0]
            x = self.model.sample_locations(sub, t, 1, self.generator)[:, 0].cpu()
            self.locs[rows, pos] = x
            self.known[rows] += 1

    def intensity(self, batch: EventBatch, t: Tensor) -> Tensor:
        self.fill(batch)
        return self.model.intensity(self.attach(batch), t)


# ====================================================================== time-varying CNF
class _PlainDrift(nn.Module):
    """``f(t, [x, cond])`` of the rows independently."""

    cross_rows = False

    def __init__(self, dim: int, cond_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.net = ConcatMLP(dim + cond_dim, hidden, dim)

    def forward(self, t: Tensor, x: Tensor, cond: Tensor) -> Tensor:
        return self.net(t, torch.cat([x, cond], -1))

    def forward_with_trace(self, t: Tensor, x: Tensor, cond: Tensor, noise: Tensor | None, return_jv: bool = False
                           ) -> tuple[Tensor, ...]:
        """``(f [N, D], tr(df/dx) [N])``: exact (``noise=None``) or Hutchinson's ``e^T (df/dx) e``, by forward-mode
        derivatives (:meth:`~tpp.spatial._flows.ConcatMLP.forward_tangent`); ``return_jv`` adds ``J e`` (or ``J``
        applied to the basis), ``[N, P, D]``."""
        inp = torch.cat([x, cond], -1)
        out, jv = self.net.forward_tangent(t, inp, input_tangent(x.shape[1], inp.shape[1], noise, x))
        return (out, tangent_trace(jv, noise), jv) if return_jv else (out, tangent_trace(jv, noise))


class TimeVaryingCNF(NeuralSTPP):
    """Neural-ODE temporal model x a time-varying CNF in space that ignores the history (module docstring):
    ``log f(x | t) = log N(z; mu, sigma) + int tr(df/dx)`` along ``x`` flowed from ``t + offset`` back to 0."""

    def _build_space(self) -> None:
        D = self.feature_dim
        self.space_drift = _PlainDrift(D, 0, self.flow_hidden)
        self.z_mean = nn.Parameter(torch.zeros(D))
        self.z_log_std = nn.Parameter(torch.zeros(D))

    def _log_density(self, y: Tensor, u: Tensor, live: Tensor | None = None) -> Tensor:
        """``[N]`` at rows ``y [N, D]``, times ``u [N]`` (rows not ``live`` stay put)."""
        t0 = u + self.time_offset if live is None else torch.where(live, u + self.time_offset, torch.zeros_like(u))
        z, delta = solve_flow(self.space_drift, y, t0, torch.zeros_like(u), y.new_zeros(y.shape[0], 0),
                              trace=self._trace(), **self._solver(t0, torch.zeros_like(u)))
        return gaussian_log_density(z, self.z_mean, self.z_log_std) + delta

    def _space_events(self, enc: _Encoding) -> Tensor:
        B, L = enc.u.shape
        return self._log_density(enc.y.reshape(B * L, -1), enc.u.reshape(-1), enc.mask.reshape(-1)).reshape(B, L)

    def _space_query(self, enc: _Encoding, uq: Tensor, hq: Tensor, y: Tensor) -> Tensor:
        B, M, D = y.shape
        return self._log_density(y.reshape(B * M, D), uq[:, None].expand(B, M).reshape(-1)).reshape(B, M)

    def _space_sample(self, enc: _Encoding, uq: Tensor, hq: Tensor, num: int, generator: torch.Generator | None
                      ) -> Tensor:
        B = uq.shape[0]
        z = self._base_draw((B * num,), self.z_mean, self.z_log_std, generator)
        u = uq[:, None].expand(B, num).reshape(-1)
        y, _ = solve_flow(self.space_drift, z, torch.zeros_like(u), u + self.time_offset, z.new_zeros(B * num, 0),
                          trace=None, **self._solver())
        return y.reshape(B, num, -1)


# ====================================================================== jump CNF
class _RadialJumps(nn.Module):
    """The density's jump at an event: ``flows`` radial flows whose centres, widths and strengths a hypernetwork
    reads from ``cond = [x_event, h]`` (the reference's ``HypernetworkRadialFlow``, four flows). Flow ``i`` maps
    ``x -> z0 + (x - z0) g(r)``, ``r = |x - z0|``, with a local profile
    ``g(r) = 1 + (e^c - 1) / (1 + r / alpha)^2``: ``g(0) = e^c`` (the density near the centre changes by
    ``e^(D c)``) and ``g -> 1`` within a few ``alpha``, so a far particle moves by ``~(e^c - 1) alpha^2 / r``.

    Why not the reference's radial flow ``x + beta (x - z0) / (alpha + r)`` (Rezende & Mohamed 2015, eq. 14), with
    ``alpha = exp(a - 6)``, ``beta = softplus(b - 6) - alpha``: its log-determinant is local but its displacement
    is not, every particle however far is pushed by ``beta``; ``alpha`` and ``beta`` are unbounded, and on
    earthquakes_japan after 8 steps a sequence whose hidden state the hypernetwork had not seen gave
    ``alpha ~ 140``: 33 jumps carried a particle 6,000 standardised units away (-2e7 nats); in float32
    ``1 + beta / alpha`` also rounded to 0 when contracting. (Affine couplings, used before, act on every particle
    wherever it is: over earthquakes_japan's 300-550-event histories their log-determinants summed to -76 nats
    per event.) Here everything is bounded: ``alpha = exp(-softplus(6 - a))`` (at most 1 standardised unit;
    ``~exp(a - 6)`` for a fresh network, as in the reference; :meth:`JumpCNF.initialise` can instead start each
    flow at a width read from the data, ``JumpCNF.jump_scale_quantiles``), ``c = C tanh(b / C)`` with
    ``C = max_log_ratio = 3``, which keeps ``r g(r)`` increasing (it is for ``e^c < 28``), so each flow is invertible with
    ``|log det| <= D C``, a displacement of at most ``(e^C - 1) alpha / 4``. ``z0 = x_event + offset`` (centred on
    the event from the start; the reference reads ``z0`` from the network outright). The inverse (sampling only)
    solves the monotone ``r g(r) = |y - z0|`` by bisection on a bracket where it changes sign."""

    alpha_shift = 6.0  # the reference's: a new flow acts within ~e^-6 standardised units of its centre
    max_log_ratio = 3.0
    bisection_steps = 60  # the bracket is at most (e^C - 1) r_y wide: 60 halvings reach float64's resolution

    def __init__(self, dim: int, cond_dim: int, width: int, flows: int = 4) -> None:
        super().__init__()
        self.dim, self.flows = dim, flows
        self.net = nn.Sequential(nn.Linear(cond_dim, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, (dim + 2) * flows))

    def _params(self, cond: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(z0 [N, F, D], alpha [N, F, 1], c [N, F, 1])``; the first ``dim`` entries of ``cond`` are the event."""
        raw = self.net(cond).reshape(-1, self.flows, self.dim + 2)
        z0 = cond[:, None, :self.dim] + raw[..., :self.dim]
        alpha = (-nn.functional.softplus(self.alpha_shift - raw[..., self.dim:self.dim + 1])).exp()
        c = self.max_log_ratio * torch.tanh(raw[..., self.dim + 1:] / self.max_log_ratio)
        return z0, alpha, c

    @staticmethod
    def _radius(d: Tensor) -> Tensor:
        # a particle exactly on a centre (duplicated locations) would give the norm a NaN gradient
        return (d.square().sum(-1, keepdim=True) + 1e-24).sqrt()

    @staticmethod
    def _profile(s: Tensor, k: Tensor) -> Tensor:
        """``g = 1 + k / (1 + s)^2`` at ``s = r / alpha``, ``k = e^c - 1``: the factor on ``x - z0``."""
        return 1 + k / (1 + s).square()

    def forward(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """``(G(x), log |det dG/dx|)`` for rows ``x [N, D]``: per flow ``(D - 1) log g(r) + log (r g(r))'``, with
        ``(r g)' = 1 + (e^c - 1) (1 - s) / (1 + s)^3``, ``s = r / alpha``."""
        z0, alpha, c = self._params(cond)
        logdet = torch.zeros_like(x[:, 0])
        for i in range(self.flows):
            d = x - z0[:, i]
            s = self._radius(d) / alpha[:, i]
            k = torch.expm1(c[:, i])
            g = self._profile(s, k)
            x = z0[:, i] + d * g
            slope = 1 + k * (1 - s) / (1 + s).pow(3)
            logdet = logdet + ((self.dim - 1) * torch.log(g) + torch.log(slope))[:, 0]
        return x, logdet

    def inverse(self, y: Tensor, cond: Tensor) -> Tensor:
        """``G^-1(y)``: per flow, ``r`` with ``r g(r) = r_y`` (bisection on ``[r_y min(1, e^-c), r_y max(1, e^-c)]``,
        where ``g`` lies between 1 and ``e^c``), then ``x = z0 + (y - z0) r / r_y``."""
        z0, alpha, c = self._params(cond)
        for i in reversed(range(self.flows)):
            d = y - z0[:, i]
            ry = self._radius(d)
            a, k, shrink = alpha[:, i], torch.expm1(c[:, i]), (-c[:, i]).exp()
            lo, hi = ry * shrink.clamp(max=1), ry * shrink.clamp(min=1)
            for _ in range(self.bisection_steps):
                mid = (lo + hi) / 2
                above = mid * self._profile(mid / a, k) > ry
                lo, hi = torch.where(above, lo, mid), torch.where(above, mid, hi)
            y = z0[:, i] + d * ((lo + hi) / 2 / ry)
        return y


class JumpCNF(NeuralSTPP):
    """Neural-ODE temporal model x the Jump CNF (module docstring): between events the location density flows
    along ``dx/dt = f(x, t, h)`` and at each earlier event ``k`` it jumps by ``G_k`` (radial flows given
    ``x_k`` and ``h``). ``log f(x | t, H)`` runs ``x`` backwards from ``t`` through every interval and jump down to
    ``-offset``, where the base Gaussian is. ``h`` is the state just before ``t`` (causal)."""

    #: Bytes of autograd graph above which training checkpoints each interval's solve (recomputes it in the
    #: backward pass: ~1.3-2x the step's CPU time; a checkpoint keeps ~40 bytes per particle-interval). The graph
    #: is estimated at ``graph_bytes_per_particle_interval`` times ``sum_b L_b^2 / 2`` (measured: ~55 kB per
    #: particle-interval in float32 for a one-step dopri5 solve, 8 earthquakes_japan sequences; twice that is
    #: assumed, for the solves a trained drift splits in two). Without the bound, 32 earthquakes_japan sequences
    #: in float64 with two-step solves needed over 24 GB (killed).
    _subsamples_space = True
    checkpoint_bytes: int = 6 * 2**30
    graph_bytes_per_particle_interval: int = 28_000  # per byte of the network's dtype: x4 float32, x8 float64
    #: Set to a number of particle-intervals to override the estimate (tests).
    checkpoint_above: int | None = None

    def _checkpoint_threshold(self) -> int:
        """Particle-intervals (``sum_b L_b^2 / 2``) above which training checkpoints (``checkpoint_bytes``)."""
        if self.checkpoint_above is not None:
            return self.checkpoint_above
        itemsize = torch.empty((), dtype=self._dtype).element_size()
        return int(self.checkpoint_bytes // (self.graph_bytes_per_particle_interval * itemsize))

    #: Quantiles of the distance (standardised units) from a training event to its nearest earlier event of the same
    #: sequence at which the jumps' radial flows start acting, one per flow, e.g. ``(0.2, 0.4, 0.6, 0.8)``; None (the
    #: default): the reference's start, every flow within ``~e^-6`` units of its centre. On earthquakes_japan those
    #: distances have quartiles 0.026 / 0.10 / 0.25, so the reference's flows touch almost no later event at first.
    #: Measured there (batch 8, lr 1e-3, float32): the data's scales learn faster (test space -5.63 against -6.29
    #: after 6 CPU minutes; +0.11 nats over seahorse-stpp after 8 steps, benchmarks/results/
    #: stpp_peer_eq_jump_datastart_seed*.md) but end worse after 30 CPU minutes (-6.34 mean of 3 seeds against
    #: -6.02, benchmarks/results/stpp_earthquakes_japan_30min_jump-cnf_datastart*.md: the validation score peaked
    #: near step 90 and fell after): opt-in until training keeps its early gain (early stopping on validation).
    jump_scale_quantiles: tuple[float, ...] | None = None

    def initialise(self, train: EventBatch) -> JumpCNF:
        """The base's start (time unit, location scale, intensity), then, with ``jump_scale_quantiles``, the jumps
        at the data's scales: flow ``i`` centred on its event (offset 0) with width the ``jump_scale_quantiles[i]``
        quantile of the distances from an event to its nearest earlier one, the same for every event until training
        makes it depend on the state (at most 256 sequences of 1000 events looked at; the strengths stay as drawn,
        near the identity)."""
        from tpp.neural.base import training_sample

        fresh = not bool(self.initialised)
        super().initialise(train)
        if fresh and bool(self.initialised) and self.jump_scale_quantiles is not None:
            self._start_jumps(training_sample(train))
        return self

    def _start_jumps(self, batch: EventBatch) -> None:
        quantiles = torch.tensor(self.jump_scale_quantiles, dtype=torch.float64)
        if quantiles.numel() != self.jumps.flows:
            raise ValueError(f"jump_scale_quantiles needs one quantile per jump flow ({self.jumps.flows}), got "
                             f"{self.jump_scale_quantiles}")
        batch = batch[list(range(min(len(batch), 256)))]
        x = self._standardise(self.locations(batch)).double()
        nearest = []
        for b in range(len(batch)):
            y = x[b, batch.mask[b]][:1000]
            if y.shape[0] < 2:
                continue
            earlier = torch.ones(y.shape[0], y.shape[0], dtype=torch.bool).tril(-1)
            nearest.append(torch.cdist(y, y).masked_fill(~earlier, math.inf)[1:].min(1).values)
        if not nearest:
            return
        # duplicated locations give 0; the parametrisation caps a width at 1 unit
        alpha = torch.quantile(torch.cat(nearest), quantiles).clamp(1e-3, 0.5)
        raw = self.jumps.alpha_shift - torch.log(torch.expm1(-torch.log(alpha)))  # alpha = exp(-softplus(6 - raw))
        D, last = self.feature_dim, self.jumps.net[-1]
        with torch.no_grad():
            for i in range(self.jumps.flows):
                start = i * (D + 2)
                last.weight[start:start + D + 1].zero_()
                last.bias[start:start + D].zero_()
                last.bias[start + D] = raw[i].to(last.bias.dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        if prefix + "jumps.masks" in state_dict:  # torch would list ~25 missing and unexpected keys instead
            raise ValueError("this Jump CNF was saved with affine-coupling jumps (before 2026-12-07); its jumps are "
                             "radial flows now (tpp.spatial.cnf._RadialJumps), which that state cannot fill: fit "
                             "the model again")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _build_space(self) -> None:
        D, H = self.feature_dim, self.hidden_size
        self.space_drift = _PlainDrift(D, H, self.flow_hidden)
        self.jumps = _RadialJumps(D, D + H, width=128)  # the reference's hypernetwork width
        self.z_mean = nn.Parameter(torch.zeros(D))
        self.z_log_std = nn.Parameter(torch.zeros(D))

    def _flow(self, y: Tensor, t0: Tensor, t1: Tensor, aux: Tensor, trace: Trace | None) -> tuple[Tensor, Tensor]:
        """Rows ``[B, P, D]`` from ``t0`` to ``t1`` (``[B, P]``) with the drift conditioned on ``aux [B, P, H]``."""
        B, P, D = y.shape
        z, delta = solve_flow(self.space_drift, y.reshape(B * P, D), t0.reshape(-1), t1.reshape(-1),
                              aux.reshape(B * P, -1), trace=trace, **self._solver(t0, t1))
        return z.reshape(B, P, D), delta.reshape(B, P)

    def _jump(self, y: Tensor, x_event: Tensor, aux: Tensor, apply: Tensor) -> tuple[Tensor, Tensor]:
        B, P, D = y.shape
        cond = torch.cat([x_event[:, None].expand(B, P, D), aux], -1)
        z, logdet = self.jumps(y.reshape(B * P, D), cond.reshape(B * P, -1))
        z, logdet = z.reshape(B, P, D), logdet.reshape(B, P)
        return torch.where(apply[..., None], z, y), torch.where(apply, logdet, torch.zeros_like(logdet))

    def _space_events(self, enc: _Encoding) -> Tensor:
        """Every event's particle runs back from its own time through each earlier interval and jump. The events
        are flattened (padding dropped) and ordered by position, latest first, so the particles still moving at
        step ``k`` (events after the ``k``-th) are a prefix: each step is one solve over exactly those rows, none
        for padding (about half the rows of a padded ``[B, L]`` layout on sequences of mixed lengths)."""
        B, L = enc.u.shape
        trace = self._trace()
        chosen, weight = enc.mask, None
        if self.training and torch.is_grad_enabled() and self.train_space_events is not None:
            chosen, weight = self._space_subsample(enc.mask)
        b_idx, n_idx = chosen.nonzero(as_tuple=True)
        order = torch.argsort(n_idx, descending=True, stable=True)
        b_idx, n_idx = b_idx[order], n_idx[order]
        y, cur, aux = enc.y[b_idx, n_idx], enc.u[b_idx, n_idx], enc.h_pre[b_idx, n_idx]
        own_u = cur
        acc = torch.zeros_like(cur)
        counts = torch.bincount(n_idx, minlength=L)
        after = (counts.flip(0).cumsum(0).flip(0) - counts).tolist()  # events at positions > k
        # A large batch recomputes each interval's solve in the backward pass instead of keeping its graph
        # (activation checkpointing, `checkpoint_above`); the Hutchinson noise is redrawn from the same random
        # state, so the gradient is the same.
        keep_memory = torch.is_grad_enabled() and sum(after) > self._checkpoint_threshold()
        penalties = self._penalties if self.training else None
        for k in range(L - 2, -1, -1):
            A = after[k]
            if A == 0:
                continue
            bk = b_idx[:A]
            args = (y[:A], cur[:A], enc.u[bk, k], aux[:A], enc.y[bk, k], own_u[:A])
            if keep_memory:
                z, step_ll, penalty = checkpoint(self._interval_back, *args, trace, penalties is not None,
                                                 use_reentrant=False)
            else:
                z, step_ll, penalty = self._interval_back(*args, trace, penalties is not None)
            if penalties is not None and penalty is not None:
                penalties.append(penalty)
            y = torch.cat([z, y[A:]], 0)
            acc = torch.cat([acc[:A] + step_ll, acc[A:]], 0)
            cur = torch.cat([args[2], cur[A:]], 0)
        end = torch.full_like(cur, -self.time_offset)
        z, delta = solve_flow(self.space_drift, y, cur, end, aux, trace=trace, **self._solver(cur, end))
        flat = gaussian_log_density(z, self.z_mean, self.z_log_std) + acc + delta
        if weight is not None:
            flat = flat * weight[b_idx]
        out = torch.zeros(B, L, dtype=flat.dtype, device=flat.device)
        return out.index_put((b_idx, n_idx), flat)

    def _space_subsample(self, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``(chosen [B, L], weight [B])``: ``train_space_events`` events of each sequence drawn uniformly without
        replacement (all of a shorter one), and ``L_b / m_b``, so that the weighted sum of the chosen events'
        log-densities is an unbiased estimate of the sequence's space log-likelihood (its gradient too). An event
        costs a solve over each earlier interval, so a sequence costs ``~m L / 2`` particle-intervals instead of
        ``L^2 / 2``; every jump is still applied (the history is whole), only fewer events are scored."""
        m = self.train_space_events
        keys = torch.rand(mask.shape, device=mask.device).masked_fill(~mask, 2.0)
        rank = keys.argsort(1).argsort(1)
        lengths = mask.sum(1)
        weight = lengths.to(self._dtype) / lengths.clamp(1, m).to(self._dtype)
        return mask & (rank < m), weight

    def _interval_back(self, y: Tensor, cur: Tensor, uk: Tensor, aux: Tensor, yk: Tensor, own_u: Tensor,
                       trace: Trace, collect: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """Particles ``y [A, D]`` at ``cur [A]`` back to the earlier event at ``uk [A]`` (location ``yk``) and through
        its jump unless it ties with the particle's own event (``own_u``): ``(z, log-density change, penalty)``,
        the penalty the solve's RNODE term if ``collect`` (training with ``flow_penalty``), else None. A function of
        its arguments alone, so that a checkpointed call recomputes the same graph in the backward pass."""
        local: list | None = [] if collect else None
        solver = {k: v for k, v in self._solver(cur, uk).items() if k != "penalty"}
        if local is not None:
            solver["penalty"] = local
        z, delta = solve_flow(self.space_drift, y, cur, uk, aux, trace=trace, **solver)
        jumped, logdet = self.jumps(z, torch.cat([yk, aux], -1))
        strictly = (uk < own_u)[:, None]  # a tied earlier event is not history: no jump
        z = torch.where(strictly, jumped, z)
        logdet = torch.where(strictly[:, 0], logdet, torch.zeros_like(logdet))
        return z, delta + logdet, (local[0] if local else None)

    def _space_query(self, enc: _Encoding, uq: Tensor, hq: Tensor, y: Tensor) -> Tensor:
        B, M, _ = y.shape
        trace = self._trace()
        aux = hq[:, None].expand(B, M, -1)
        cur = uq[:, None].expand(B, M)
        acc = torch.zeros_like(cur)
        for k in range(enc.u.shape[1] - 1, -1, -1):
            live = enc.mask[:, k, None].expand(B, M)
            t1 = torch.where(live, enc.u[:, k, None].expand(B, M), cur)
            y, delta = self._flow(y, cur, t1, aux, trace)
            y, logdet = self._jump(y, enc.y[:, k], aux, live & (enc.u[:, k, None] < uq[:, None]))
            acc, cur = acc + delta + logdet, t1
        z, delta = self._flow(y, cur, torch.full_like(cur, -self.time_offset), aux, trace)
        return gaussian_log_density(z, self.z_mean, self.z_log_std) + acc + delta

    def _space_sample(self, enc: _Encoding, uq: Tensor, hq: Tensor, num: int, generator: torch.Generator | None
                      ) -> Tensor:
        """Base draws run forwards through every interval and inverse jump. A learned drift can be expansive off
        the data, where training never looked (the Jump CNF once had coupling jumps that stretched by up to ``e^8``
        each and sent draws past ``1e308`` within a few hundred events), so draws are kept within
        ``SAMPLE_BOUND`` standardised units of the centre (1000 training scales: far outside any data; the mass
        beyond sits on the boundary)."""
        B = uq.shape[0]
        aux = hq[:, None].expand(B, num, -1)
        y = self._base_draw((B, num), self.z_mean, self.z_log_std, generator)
        cur = torch.full((B, num), -self.time_offset, dtype=uq.dtype, device=uq.device)
        for k in range(enc.u.shape[1]):
            live = enc.mask[:, k, None].expand(B, num)
            t1 = torch.where(live, enc.u[:, k, None].expand(B, num), cur)
            y, _ = self._flow(y, cur, t1, aux, None)
            apply = live & (enc.u[:, k, None] < uq[:, None])
            cond = torch.cat([enc.y[:, k, None].expand(B, num, -1), aux], -1)
            back = self.jumps.inverse(y.reshape(B * num, -1), cond.reshape(B * num, -1)).reshape(B, num, -1)
            y, cur = torch.where(apply[..., None], back, y).clamp(-SAMPLE_BOUND, SAMPLE_BOUND), t1
        y, _ = self._flow(y, cur, uq[:, None].expand(B, num), aux, None)
        return y.clamp(-SAMPLE_BOUND, SAMPLE_BOUND)


# ====================================================================== attentive CNF
def _time_features(u: Tensor, size: int) -> Tensor:
    """``[..., size]`` sinusoids of the model time at periods from 1 to 1000 time units (fixed)."""
    k = size // 2
    freq = torch.exp(-torch.linspace(0, math.log(1000.0), k, dtype=u.dtype, device=u.device))
    ang = u[..., None] * freq
    return torch.cat([torch.sin(ang), torch.cos(ang)], -1)


class _AttentiveDrift(nn.Module):
    """Drift of the rows of ``B`` sequences, ``R`` rows each, of which the first ``K`` are events (keys): row ``i``
    attends to the keys ``j != i`` allowed by ``allowed [B, R, K]`` (events strictly earlier) and to itself.
    ``self_only=True`` cuts the gradient paths from the other rows' ``x`` (FlowODE's module docstring);
    :meth:`forward_with_trace` gives the same trace by forward-mode derivatives, with exact gradients."""

    cross_rows = True

    def __init__(self, dim: int, cond_dim: int, hidden: Sequence[int], width: int, ff: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.embed = ConcatMLP(dim + cond_dim, hidden[:1], width, zero_init=False)
        self.qkv = nn.Linear(width, 3 * width)
        self.gate = nn.Parameter(torch.zeros(1))  # tanh gate: attention starts switched off, as the reference's
        self.out = ConcatMLP(width, hidden[1:], dim)
        # ff=True: the reference block's gated residual feed-forward part after the attention, ``h + tanh(g)
        # FC(h)`` with ``FC = Linear(W, 4W), Softplus, Linear(4W, W)`` (without its ActNorms); made last, so the
        # other parameters draw the same initial values with or without it.
        self.ff = (nn.Sequential(nn.Linear(width, 4 * width), nn.Softplus(), nn.Linear(4 * width, width)) if ff
                   else None)
        self.ff_gate = nn.Parameter(torch.zeros(1)) if ff else None
        self.shape: tuple[int, int, int] = (0, 0, 0)
        self.allowed: Tensor | None = None

    def configure(self, B: int, R: int, K: int, allowed: Tensor) -> None:
        self.shape, self.allowed = (B, R, K), allowed

    def forward(self, t: Tensor, x: Tensor, cond: Tensor, self_only: bool = False) -> Tensor:
        B, R, K = self.shape
        e = self.embed(t, torch.cat([x, cond], -1))
        q, k, v = self.qkv(e).reshape(B, R, 3, -1).unbind(2)
        if self_only:
            e_cut = self.embed(t, torch.cat([x.detach(), cond], -1))
            _, k_keys, v_keys = self.qkv(e_cut).reshape(B, R, 3, -1).unbind(2)
        else:
            k_keys, v_keys = k, v
        k_keys, v_keys = k_keys[:, :K], v_keys[:, :K]
        scale = 1.0 / math.sqrt(q.shape[-1])
        logits = torch.einsum("brw,bkw->brk", q, k_keys) * scale
        logits = logits.masked_fill(~self.allowed, -math.inf)
        own = (q * k).sum(-1, keepdim=True) * scale
        weights = torch.softmax(torch.cat([logits, own], -1), -1)
        attn = torch.einsum("brk,bkw->brw", weights[..., :K], v_keys) + weights[..., K:] * v
        h = e.reshape(B, R, -1) + torch.tanh(self.gate) * attn
        if self.ff is not None:
            h = h + torch.tanh(self.ff_gate) * self.ff(h)
        return self.out(t, h.reshape(B * R, -1))

    def forward_with_trace(self, t: Tensor, x: Tensor, cond: Tensor, noise: Tensor | None, return_jv: bool = False
                           ) -> tuple[Tensor, ...]:
        """``(f [B R, D], trace [B R])``: the drift and the trace of each row's own Jacobian block (the other rows'
        keys and values held fixed, as ``self_only``), exact (``noise=None``) or Hutchinson's, by forward-mode
        derivatives through the embedding, the attention and the output MLP (no autograd call); ``return_jv`` adds
        that block applied to the tangents, ``[B R, P, D]``."""
        B, R, K = self.shape
        inp = torch.cat([x, cond], -1)
        e, te = self.embed.forward_tangent(t, inp, input_tangent(x.shape[1], inp.shape[1], noise, x))
        P = te.shape[1]
        w_q, w_k, w_v = self.qkv.weight.chunk(3, 0)
        q, k, v = self.qkv(e).reshape(B, R, 3, -1).unbind(2)
        tq, tk, tv = ((te @ w.T).reshape(B, R, P, -1) for w in (w_q, w_k, w_v))  # [B, R, P, W]
        k_keys, v_keys = k[:, :K], v[:, :K]
        scale = 1.0 / math.sqrt(q.shape[-1])
        logits = torch.einsum("brw,bkw->brk", q, k_keys) * scale
        logits = logits.masked_fill(~self.allowed, -math.inf)
        own = (q * k).sum(-1, keepdim=True) * scale
        weights = torch.softmax(torch.cat([logits, own], -1), -1)  # [B, R, K + 1]
        w_keys, w_own = weights[..., :K], weights[..., K:]
        attn = torch.einsum("brk,bkw->brw", w_keys, v_keys) + w_own * v
        # Tangents: only the row's own q, k, v move (the keys are other rows' values; the row's own key among
        # them is masked out, its self term is `own`).
        t_logits = torch.einsum("brpw,bkw->brpk", tq, k_keys) * scale
        t_own = ((tq * k[:, :, None]).sum(-1, keepdim=True) + (q[:, :, None] * tk).sum(-1, keepdim=True)) * scale
        t_all = torch.cat([t_logits, t_own], -1)  # [B, R, P, K + 1]; finite where a weight is zero
        t_w = weights[:, :, None] * (t_all - (weights[:, :, None] * t_all).sum(-1, keepdim=True))
        t_attn = (torch.einsum("brpk,bkw->brpw", t_w[..., :K], v_keys) + t_w[..., K:] * v[:, :, None]
                  + w_own[:, :, None] * tv)
        gate = torch.tanh(self.gate)
        h = e.reshape(B, R, -1) + gate * attn
        th = te.reshape(B, R, P, -1) + gate * t_attn
        if self.ff is not None:
            first, last = self.ff[0], self.ff[2]
            pre = first(h)
            t_act = torch.sigmoid(pre)[:, :, None] * (th @ first.weight.T)  # softplus' = sigmoid
            ff_gate = torch.tanh(self.ff_gate)
            h = h + ff_gate * last(nn.functional.softplus(pre))
            th = th + ff_gate * (t_act @ last.weight.T)
        out, jv = self.out.forward_tangent(t, h.reshape(B * R, -1), th.reshape(B * R, P, -1))
        return (out, tangent_trace(jv, noise), jv) if return_jv else (out, tangent_trace(jv, noise))


class AttentiveCNF(NeuralSTPP):
    """Neural-ODE temporal model x the Attentive CNF (module docstring): every event's location flows from
    ``t_n + offset`` back jointly with the others, its drift attending to the events strictly before it.

    ``base_flow=True`` (the paper's method, the reference's ``SelfAttentiveCNF``; opt-in, see below): the attentive flow
    runs only from ``t_n + offset`` to ``offset``, then an *unconditional* time-varying CNF (a concat-MLP drift,
    shared by all events, the reference's ``base_cnf``) from ``offset`` to 0: it learns the marginal shape of the
    locations (correlations, arms), which the attention need not then rebuild per event. ``base_net="mlp"``
    (the reference's ``base_dist_params``): the base Gaussian's mean and log-scale are an MLP
    ``Linear(H + F, 128), ReLU, Linear(128, 2 D)`` (last layer zero) of ``h(t_n-)`` and the time features of
    ``t_n``; ``"linear"``: linear in ``h(t_n-)``. ``base_flow=False, base_net="linear"`` (the default) is the model
    before these options, number for number, and what a file saved before them loads as
    (:meth:`_load_from_state_dict`). Measured (space nats per event): earthquakes_japan, 10 epochs, 3 seeds, -6.40
    against -6.475 without (benchmarks/results/stpp_peer_eq_long_baseflow.md); Pinwheel, 1.5 CPU minutes, -3.01
    against -3.26 (benchmarks/results/stpp_pinwheel_90s_attentive-cnf_baseflow.md); but Pinwheel after 30 CPU
    minutes, -4.31 space and -1.88 time against -2.90 and -0.49 without
    (benchmarks/results/stpp_pinwheel_30min_attentive-cnf_baseflow.md, one seed): long training degrades, likely
    for want of the reference's regularisation of the base flow (below), so it is not the default yet. ``attn_ff=True`` adds the reference block's
    gated feed-forward part to the attention block (:class:`_AttentiveDrift`; off by default: it did not help in
    benchmarks/results/stpp_peer_eq_long_baseflow.md).
    Differences from the reference kept: the base flow shares the flows' solver settings (the reference solves
    it at 1e-6) and has no energy / Jacobian-norm penalty (1e-4 there); one attention block of one head (the
    reference: two of four heads, with ActNorms)."""

    time_features = 8
    base_width = 128  # the reference's base_dist_params width

    def __init__(self, feature_dim: int = 2, hidden_size: int = 32, location_names: Sequence[str] | None = None,
                 num_marks: int = 1, *, flow_hidden: Sequence[int] = (64, 64), trace: Trace | str = "rademacher",
                 rtol: float = 1e-4, atol: float = 1e-4, method: str = "dopri5", adjoint: bool = False,
                 time_offset: float = 2.0, num_samples: int = 256, mc_seed: int = 0, time_step: float | None = None,
                 dtype: torch.dtype | str = "float64", train_time_step: float | None = None,
                 train_tol: float | None = None, train_flow_step: float | None = None,
                 flow_span: float | None = 30.0, flow_penalty: float = 0.0, hidden_dynamics: str = "free",
                 base_flow: bool = False, base_net: str = "linear", attn_ff: bool = False) -> None:
        if base_net not in ("mlp", "linear"):
            raise ValueError(f"base_net must be 'mlp' or 'linear', got {base_net!r}")
        # Read by _build_space, which the base constructor calls.
        object.__setattr__(self, "base_flow", bool(base_flow))
        object.__setattr__(self, "base_net", str(base_net))
        object.__setattr__(self, "attn_ff", bool(attn_ff))
        super().__init__(feature_dim, hidden_size, location_names, num_marks, flow_hidden=flow_hidden, trace=trace,
                         rtol=rtol, atol=atol, method=method, adjoint=adjoint, time_offset=time_offset,
                         num_samples=num_samples, mc_seed=mc_seed, time_step=time_step, dtype=dtype,
                         train_time_step=train_time_step, train_tol=train_tol, train_flow_step=train_flow_step,
                         flow_span=flow_span, flow_penalty=flow_penalty, hidden_dynamics=hidden_dynamics)

    def _build_space(self) -> None:
        D, H = self.feature_dim, self.hidden_size
        width = max(self.flow_hidden, default=64)
        self.space_drift = _AttentiveDrift(D, H + self.time_features, self.flow_hidden, width, ff=self.attn_ff)
        self._build_base()
        if self.base_flow:
            self.base_drift = _PlainDrift(D, 0, self.flow_hidden)

    def _build_base(self) -> None:
        D, H = self.feature_dim, self.hidden_size
        if self.base_net == "linear":
            self.base = nn.Linear(H, 2 * D)
        else:
            self.base = nn.Sequential(nn.Linear(H + self.time_features, self.base_width), nn.ReLU(),
                                      nn.Linear(self.base_width, 2 * D))
        last = self.base if self.base_net == "linear" else self.base[-1]
        nn.init.zeros_(last.weight)  # the base starts at N(0, I) whatever the state
        nn.init.zeros_(last.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # A state without a base flow or with a linear base (saved before `base_flow` / `base_net` existed, or by a
        # model built otherwise than this one) becomes that model.
        if any(k.startswith(prefix + "space_drift.") for k in state_dict):
            dtype = self.h0.dtype
            if self.base_flow and not any(k.startswith(prefix + "base_drift.") for k in state_dict):
                del self.base_drift
                object.__setattr__(self, "base_flow", False)
            linear = prefix + "base.weight" in state_dict
            if linear != (self.base_net == "linear"):
                object.__setattr__(self, "base_net", "linear" if linear else "mlp")
                self._build_base()
                self.base.to(dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _base_params(self, h: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """The base Gaussian's mean and log-scale from the state ``h [..., H]`` and condition ``cond [..., C]``
        (``[h, time features]``) of the same rows."""
        return (self.base(h) if self.base_net == "linear" else self.base(cond)).chunk(2, -1)

    def _base_solve(self, z: Tensor, live: Tensor, forwards: bool, trace: Trace | None) -> tuple[Tensor, Tensor]:
        """The unconditional base flow of the ``live [B, R]`` rows of ``z [B, R, D]``: from ``offset`` to 0 (or,
        ``forwards``, from 0 to ``offset``); ``(z, delta [B, R])``, other rows unchanged with delta 0."""
        rows = z[live]
        hi = torch.full_like(rows[:, 0], self.time_offset)
        t0, t1 = (torch.zeros_like(hi), hi) if forwards else (hi, torch.zeros_like(hi))
        out, delta = solve_flow(self.base_drift, rows, t0, t1, rows.new_zeros(rows.shape[0], 0), trace=trace,
                                **self._solver(t0, t1))
        z = z.masked_scatter(live[..., None], out)
        return z, torch.zeros_like(z[..., 0]).masked_scatter(live, delta)

    def _rows(self, enc: _Encoding, uq: Tensor | None, hq: Tensor | None, num: int) -> tuple[Tensor, Tensor, Tensor]:
        """Times ``[B, R]``, conditions ``[B, R, C]`` and the allowed-key mask ``[B, R, L]`` of the history's events
        followed by ``num`` query rows at ``uq``."""
        B, L = enc.u.shape
        u, h = enc.u, enc.h_pre
        if num:
            u = torch.cat([u, uq[:, None].expand(B, num)], 1)
            h = torch.cat([h, hq[:, None].expand(B, num, -1)], 1)
        cond = torch.cat([h, _time_features(u, self.time_features)], -1)
        allowed = enc.mask[:, None, :] & (enc.u[:, None, :] < u[:, :, None])
        if L:
            eye = torch.zeros(u.shape[1], L, dtype=torch.bool, device=u.device)
            eye[:L] = torch.eye(L, dtype=torch.bool, device=u.device)
            allowed = allowed & ~eye
        return u, cond, allowed

    def _flow(self, y: Tensor, t0: Tensor, t1: Tensor, cond: Tensor, allowed: Tensor, trace: Trace | None
              ) -> tuple[Tensor, Tensor]:
        B, R, D = y.shape
        z, delta = solve_flow(self.space_drift, y.reshape(B * R, D), t0.reshape(-1), t1.reshape(-1),
                              cond.reshape(B * R, -1), trace=trace, context=(B, R, allowed.shape[2], allowed),
                              **self._solver(t0, t1))
        return z.reshape(B, R, D), delta.reshape(B, R)

    def _log_density(self, enc: _Encoding, y: Tensor, u: Tensor, cond: Tensor, allowed: Tensor, h: Tensor) -> Tensor:
        live = torch.cat([enc.mask, torch.ones(y.shape[0], y.shape[1] - enc.u.shape[1], dtype=torch.bool,
                                                 device=y.device)], 1)
        if not self.base_flow:
            t0 = torch.where(live, u + self.time_offset, torch.zeros_like(u))  # padding rows stay put
            z, delta = self._flow(y, t0, torch.zeros_like(u), cond, allowed, self._trace())
        else:
            mid = torch.full_like(u, self.time_offset)
            t0 = torch.where(live, u + self.time_offset, mid)  # padding rows stay put
            z, delta = self._flow(y, t0, mid, cond, allowed, self._trace())
            z, base_delta = self._base_solve(z, live, False, self._trace())
            delta = delta + base_delta
        mean, log_std = self._base_params(h, cond)
        return gaussian_log_density(z, mean, log_std) + delta

    def _space_events(self, enc: _Encoding) -> Tensor:
        u, cond, allowed = self._rows(enc, None, None, 0)
        return self._log_density(enc, enc.y, u, cond, allowed, enc.h_pre)

    def _space_query(self, enc: _Encoding, uq: Tensor, hq: Tensor, y: Tensor) -> Tensor:
        B, M, _ = y.shape
        L = enc.u.shape[1]
        u, cond, allowed = self._rows(enc, uq, hq, M)
        h = torch.cat([enc.h_pre, hq[:, None].expand(B, M, -1)], 1)
        return self._log_density(enc, torch.cat([enc.y, y], 1), u, cond, allowed, h)[:, L:]

    def _space_sample(self, enc: _Encoding, uq: Tensor, hq: Tensor, num: int, generator: torch.Generator | None
                      ) -> Tensor:
        B, L = enc.u.shape
        u, cond, allowed = self._rows(enc, uq, hq, num)
        live = torch.cat([enc.mask, torch.ones(B, num, dtype=torch.bool, device=u.device)], 1)
        # Where the attentive flow ends: 0, or `offset` where the base flow takes over.
        end = torch.full_like(u, self.time_offset if self.base_flow else 0.0)
        start = torch.where(live, u + self.time_offset, end)
        # The history's own flow states at the attentive flow's end (they attend only to one another), then the
        # joint flow forwards with the new rows, which retraces the history's trajectories.
        z_hist, _ = self._flow(enc.y, start[:, :L], end[:, :L], cond[:, :L], allowed[:, :L], None)
        if self.base_net == "linear":
            mean, log_std = self.base(hq).chunk(2, -1)
            mean, log_std = mean[:, None], log_std[:, None]
        else:
            mean, log_std = self._base_params(hq[:, None], cond[:, L:])
        z_new = self._base_draw((B, num), mean, log_std, generator)
        if self.base_flow:
            z_new, _ = self._base_solve(z_new, torch.ones(B, num, dtype=torch.bool, device=u.device), True, None)
        y, _ = self._flow(torch.cat([z_hist, z_new], 1), end, start, cond, allowed, None)
        return y[:, L:]
