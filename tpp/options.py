"""Options as types: the enumerations the models and both CLIs share, and one declarative table of
constructor constraints.

Enumerations (``str`` enums: a member compares equal to its value, and typer shows the values):

* :class:`Objective`: the contrast a classic estimator minimises (ExpHawkes/SumExpHawkes: likelihood or
  least squares; FaDIn: l2 or likelihood);
* :class:`Initialisation`: where an iterative estimator starts (FaDIn: moments or the current values);
* :class:`Activation`: the feed-forward non-linearity of the attention encoders;
* :class:`KernelName`: the finite-support kernel families of FaDIn (:mod:`tpp.hawkes.kernels`).

An option argument takes the member or its exact value (``Objective.LEAST_SQUARES`` or
``"least-squares"``); any other string is refused with the list of values, never guessed.

Constraints (as scikit-learn's ``_parameter_constraints``): a class states its settings' ranges once,

```python
class NonparametricHawkes(PointProcess):
    _constraints = {"num_marks": Interval(1, None, integer=True), "support": Interval(0, None, closed="right")}

    def __init__(self, num_marks, support, bins):
        check_params(self, num_marks=num_marks, support=support)
```

and :func:`check_params` raises one error for all of them: ``ValueError`` for a value out of range or
an unknown option, ``TypeError`` for a value of the wrong kind, each naming the class, the parameter
and what is allowed. Tables merge along the class hierarchy (a subclass adds or overrides entries).
"""

from __future__ import annotations

import abc
import enum
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np

__all__ = [
    "Activation",
    "Constraint",
    "Initialisation",
    "InstanceOf",
    "Interval",
    "KernelName",
    "Objective",
    "Options",
    "as_option",
    "check_params",
    "check_size",
    "constraints_of",
    "MAX_PARAMETER_SIZE",
]

E = TypeVar("E", bound=enum.Enum)


# ---------------------------------------------------------------------------------------- enumerations
class Objective(str, enum.Enum):
    """The contrast a classic (closed-form / L-BFGS) estimator minimises."""

    LIKELIHOOD = "likelihood"  #: exact (ExpHawkes) or discretised (FaDIn) maximum likelihood
    LEAST_SQUARES = "least-squares"  #: tick's least-squares contrast (ExpHawkes/SumExpHawkes, fixed decays)
    L2 = "l2"  #: FaDIn's l2 contrast on the grid (Staerman et al. 2023, eq. 7)


class Initialisation(str, enum.Enum):
    """Where an iterative estimator starts."""

    MOMENTS = "moments"  #: from the data's rates and dispersion (FaDIn)
    CURRENT = "current"  #: from the model's present parameter values


class Activation(str, enum.Enum):
    """Feed-forward non-linearity (of the attention encoders in :mod:`tpp.neural.layers`)."""

    GELU = "gelu"
    RELU = "relu"


class KernelName(str, enum.Enum):
    """The finite-support kernel families of FaDIn (:data:`tpp.hawkes.kernels.KERNELS`)."""

    TRUNCATED_GAUSSIAN = "truncated-gaussian"
    RAISED_COSINE = "raised-cosine"
    TRUNCATED_EXPONENTIAL = "truncated-exponential"
    KUMARASWAMY = "kumaraswamy"


def as_option(enum_type: type[E], value: Any, *, name: str = "option", owner: Any = None) -> E:
    """``value`` as a member of ``enum_type``: the member itself or its exact value.

    Raises ``ValueError`` naming the allowed values for anything else (no aliases, no case folding).
    """
    if isinstance(value, enum_type):
        return value
    try:
        return enum_type(value)
    except (ValueError, TypeError):
        allowed = ", ".join(repr(m.value) for m in enum_type)
        raise ValueError(f"{_where(owner)}{name} must be one of {allowed} (or {enum_type.__name__}), "
                         f"got {value!r}") from None


# ---------------------------------------------------------------------------------------- constraints
def _a(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def _where(owner: Any) -> str:
    if owner is None:
        return ""
    name = owner if isinstance(owner, str) else (owner.__name__ if isinstance(owner, type) else type(owner).__name__)
    return f"{name}: "


class Constraint(abc.ABC):
    """One allowed set of values for a parameter; :meth:`validate` returns the value (an option as its member)."""

    none_ok: bool = False

    @abc.abstractmethod
    def describe(self) -> str:
        """The allowed values in words (``"positive and finite"``, ``"one of 'l2', 'likelihood'"``)."""

    @abc.abstractmethod
    def validate(self, value: Any, name: str, owner: Any = None) -> Any:
        """``value`` if allowed (an option as its enum member); else a ``ValueError`` or ``TypeError``."""

    def _fail(self, error: type[Exception], value: Any, name: str, owner: Any) -> Exception:
        allowed = self.describe() + (" or None" if self.none_ok else "")
        return error(f"{_where(owner)}{name} must be {allowed}, got {value!r}")


@dataclass(frozen=True)
class Interval(Constraint):
    """A finite real (or, with ``integer``, integral) number between ``low`` and ``high`` (None: unbounded).

    ``closed``: which ends belong to the interval (``"both"``, ``"left"``, ``"right"``, ``"neither"``); an
    unbounded end is open. NaN and infinities are always refused. ``none_ok`` also admits None. A NumPy
    array is checked entry by entry (all entries must be in the interval).
    """

    low: float | None = None
    high: float | None = None
    closed: Literal["both", "left", "right", "neither"] = "both"
    integer: bool = False
    none_ok: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        left_in = self.closed in ("both", "left")
        right_in = self.closed in ("both", "right")
        if self.high is None and self.low == 0 and not left_in:
            return "a positive integer" if self.integer else "positive and finite"
        if self.high is None and self.low == 0 and left_in:
            return "a non-negative integer" if self.integer else "non-negative and finite"
        if self.high is None and self.low is not None:
            return f"{'an integer ' if self.integer else ''}{'>=' if left_in else '>'} {self.low:g}"
        if self.low is None and self.high is not None:
            return f"{'an integer ' if self.integer else ''}{'<=' if right_in else '<'} {self.high:g}"
        if self.low is None and self.high is None:
            return kind
        return (f"{'an integer ' if self.integer else ''}in {'[' if left_in else '('}{self.low:g}, "
                f"{self.high:g}{']' if right_in else ')'}")

    def validate(self, value: Any, name: str, owner: Any = None) -> Any:
        if value is None and self.none_ok:
            return value
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "iuf":
                raise self._fail(TypeError, value.tolist(), name, owner)
            if not self._holds(value.astype(np.float64)):
                raise self._fail(ValueError, value.tolist(), name, owner)
            return value
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise self._fail(TypeError, value, name, owner)
        if not self._holds(np.asarray(float(value))):
            raise self._fail(ValueError, value, name, owner)
        return value

    def _holds(self, value: np.ndarray) -> bool:
        """Whether every entry of ``value`` (float64) lies in the interval."""
        ok = np.isfinite(value)
        if self.integer:
            ok &= value == np.round(value)
        if self.low is not None:
            ok &= (value >= self.low) if self.closed in ("both", "left") else (value > self.low)
        if self.high is not None:
            ok &= (value <= self.high) if self.closed in ("both", "right") else (value < self.high)
        return bool(np.all(ok))


@dataclass(frozen=True)
class Options(Constraint):
    """A member of ``enum_type`` or its exact value (``ValueError`` listing the values otherwise).

    ``strict``: members only (a ``TypeError`` for anything else), for enums that are objects, not names.
    """

    enum_type: type[enum.Enum]
    strict: bool = False
    none_ok: bool = False

    def describe(self) -> str:
        if self.strict:
            return _a(self.enum_type.__name__)
        return "one of " + ", ".join(repr(m.value) for m in self.enum_type)

    def validate(self, value: Any, name: str, owner: Any = None) -> Any:
        if value is None and self.none_ok:
            return value
        if isinstance(value, self.enum_type):
            return value
        if self.strict:
            raise self._fail(TypeError, value, name, owner)
        try:
            return self.enum_type(value)
        except (ValueError, TypeError):
            raise self._fail(ValueError, value, name, owner) from None


@dataclass(frozen=True)
class InstanceOf(Constraint):
    """An instance of ``types`` (a ``TypeError`` otherwise)."""

    types: type | tuple[type, ...]
    none_ok: bool = False

    def describe(self) -> str:
        types = self.types if isinstance(self.types, tuple) else (self.types,)
        return _a(" or ".join(t.__name__ for t in types))

    def validate(self, value: Any, name: str, owner: Any = None) -> Any:
        if (value is None and self.none_ok) or isinstance(value, self.types):
            return value
        raise self._fail(TypeError, value, name, owner)


def constraints_of(owner: Any) -> dict[str, Constraint]:
    """The merged ``_constraints`` tables of ``owner``'s class and its bases (the subclass wins)."""
    cls = owner if isinstance(owner, type) else type(owner)
    table: dict[str, Constraint] = {}
    for klass in reversed(cls.__mro__):
        own = vars(klass).get("_constraints")
        if isinstance(own, Mapping):
            table.update(own)
    return table


def check_params(owner: Any, **values: Any) -> dict[str, Any]:
    """Validate ``values`` against ``owner``'s constraint table; returns them (options as enum members).

    A name missing from the table is a programming error (``KeyError``), so a table cannot silently
    fall behind its constructor.
    """
    table = constraints_of(owner)
    out = {}
    for name, value in values.items():
        if name not in table:
            raise KeyError(f"{_where(owner)}no constraint declared for {name!r} (add it to _constraints)")
        out[name] = table[name].validate(value, name, owner)
    return out


# The most numbers one parameter tensor may hold (64 Mi = 512 MiB of float64): a num_marks or hidden_size of
# 2**40 once reached torch's allocator and failed there with a RuntimeError.
MAX_PARAMETER_SIZE = 1 << 26


def check_size(owner: Any, shape: tuple[Any, ...], given: str) -> None:
    """Refuse a parameter of ``shape`` larger than :data:`MAX_PARAMETER_SIZE` numbers with a ``ValueError``
    naming the arguments that asked for it (``given``, e.g. ``"num_marks=5000 with 2 decays"``), before
    anything is allocated."""
    size = 1
    for n in shape:
        size *= int(n)
    if size > MAX_PARAMETER_SIZE:
        raise ValueError(f"{_where(owner)}{given} needs a parameter of shape {[int(n) for n in shape]} ({size:,} "
                         f"numbers, more than the {MAX_PARAMETER_SIZE:,} allowed)")
