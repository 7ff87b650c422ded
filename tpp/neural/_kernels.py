"""Transitional re-export: the compiled kernels live in :mod:`tpp.neural._recurrences` (RNN, GRU and
CT-LSTM recurrences) and :mod:`tpp.neural._quadrature` (SAHP and THP interval integrals)."""

from tpp.neural._quadrature import sahp_interval_integral, thp_interval_integral
from tpp.neural._recurrences import (
    Recurrence,
    compiled_recurrence_applies,
    ctlstm_states,
    ctlstm_states_reference,
    run_projected_recurrence,
    run_recurrence,
)

__all__ = [
    "Recurrence", "compiled_recurrence_applies", "ctlstm_states", "ctlstm_states_reference", "run_projected_recurrence",
    "run_recurrence", "sahp_interval_integral", "thp_interval_integral",
]
