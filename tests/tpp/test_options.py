"""Options as types (tpp.options): the shared enumerations cover every name the models and the CLIs use,
an option takes its member or its exact value and nothing else, and the one constraint table refuses
out-of-range settings with an error naming the class, the parameter and what is allowed."""

import enum
import math

import numpy as np
import pytest

from tpp.options import (Activation, Initialisation, InstanceOf, Interval, KernelName, Objective, Options, as_option,
                         check_params, constraints_of)


# ----------------------------------------------------------------------------- intervals
@pytest.mark.parametrize("closed, low_in, high_in", [("both", True, True), ("left", True, False),
                                                       ("right", False, True), ("neither", False, False)])
def test_interval_ends_belong_to_it_exactly_as_closed_says(closed, low_in, high_in):
    interval = Interval(0, 1, closed=closed)
    assert interval.validate(0.5, "x") == 0.5
    for value, inside in ((0, low_in), (1, high_in)):
        if inside:
            assert interval.validate(value, "x") == value
        else:
            with pytest.raises(ValueError, match="x must be in"):
                interval.validate(value, "x")
    for outside in (-1e-12, 1 + 1e-12):
        with pytest.raises(ValueError):
            interval.validate(outside, "x")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_interval_refuses_nan_and_infinities_even_when_unbounded(value):
    with pytest.raises(ValueError, match="finite"):
        Interval(None, None).validate(value, "x")
    with pytest.raises(ValueError):
        Interval(0, None, closed="neither").validate(value, "x")


def test_integer_interval_takes_integral_numbers_and_refuses_fractions_bools_and_strings():
    count = Interval(1, None, integer=True)
    assert count.validate(3, "n") == 3 and count.validate(np.int64(2), "n") == 2 and count.validate(4.0, "n") == 4.0
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 2.5"):
        count.validate(2.5, "n")
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        count.validate(0, "n")
    with pytest.raises(TypeError, match="n must be an integer >= 1"):
        count.validate(True, "n")
    with pytest.raises(TypeError):
        count.validate("3", "n")


def test_none_is_refused_unless_the_constraint_admits_it():
    assert Interval(1, None, integer=True, none_ok=True).validate(None, "window") is None
    with pytest.raises(TypeError, match="or None"):
        Interval(1, None, integer=True, none_ok=True).validate("all", "window")
    with pytest.raises(TypeError):
        Interval(1, None).validate(None, "window")


def test_arrays_are_checked_entry_by_entry():
    positive = Interval(0, None, closed="neither")
    values = np.array([[0.5, 2.0], [1.0, 3.0]])
    assert positive.validate(values, "baseline") is values
    for bad in (np.array([0.5, 0.0]), np.array([1.0, np.nan]), np.array([[1.0], [-2.0]])):
        with pytest.raises(ValueError, match=r"baseline must be positive and finite, got \["):
            positive.validate(bad, "baseline")
    assert positive.validate(np.zeros(0), "baseline").size == 0  # nothing to refuse


@pytest.mark.parametrize("interval, text", [
    (Interval(0, None, closed="neither"), "positive and finite"),
    (Interval(0, None), "non-negative and finite"),
    (Interval(0, None, closed="neither", integer=True), "a positive integer"),
    (Interval(1, None, integer=True), "an integer >= 1"),
    (Interval(None, 5, closed="left"), "< 5"),
    (Interval(0, 1, closed="left"), "in [0, 1)"),
])
def test_interval_descriptions_read_as_the_range_they_check(interval, text):
    assert interval.describe() == text


# ----------------------------------------------------------------------------- options
class Colour(enum.Enum):
    RED = "red"
    DARK_BLUE = "dark-blue"


def test_option_takes_its_member_or_exact_value_and_nothing_else():
    option = Options(Colour)
    assert option.validate(Colour.RED, "colour") is Colour.RED
    assert option.validate("dark-blue", "colour") is Colour.DARK_BLUE
    for alias in ("dark_blue", "Dark-Blue", "DARK_BLUE", "blue", 3):
        with pytest.raises(ValueError, match=r"colour must be one of 'red', 'dark-blue', got"):
            option.validate(alias, "colour")


def test_strict_option_takes_members_only_with_a_type_error():
    with pytest.raises(TypeError, match="scheme must be a Colour, got 'red'"):
        Options(Colour, strict=True).validate("red", "scheme")
    assert Options(Colour, strict=True, none_ok=True).validate(None, "scheme") is None


def test_as_option_lists_the_values_and_the_enum():
    assert as_option(Objective, "least-squares") is Objective.LEAST_SQUARES
    with pytest.raises(ValueError, match=r"objective must be one of 'likelihood', 'least-squares', 'l2' \(or Objective\)"):
        as_option(Objective, "ls", name="objective")


def test_instance_of_refuses_other_types():
    assert InstanceOf((int, float)).validate(2, "x") == 2
    with pytest.raises(TypeError, match="x must be an int or float"):
        InstanceOf((int, float)).validate("2", "x")


# ----------------------------------------------------------------------------- the table
class _Base:
    _constraints = {"size": Interval(1, None, integer=True), "rate": Interval(0, None, closed="neither")}


class _Child(_Base):
    _constraints = {"rate": Interval(0, 1), "colour": Options(Colour)}


def test_tables_merge_along_the_class_hierarchy_and_the_subclass_wins():
    table = constraints_of(_Child())
    assert set(table) == {"size", "rate", "colour"} and table["rate"] == Interval(0, 1)
    assert check_params(_Child(), size=2, rate=0.0, colour="red") == {"size": 2, "rate": 0.0, "colour": Colour.RED}
    with pytest.raises(ValueError, match=r"_Child: rate must be in \[0, 1\], got 2"):
        check_params(_Child(), rate=2)
    with pytest.raises(ValueError, match="_Base: rate must be positive"):
        check_params(_Base, rate=0.0)


def test_a_parameter_missing_from_the_table_is_a_programming_error():
    with pytest.raises(KeyError, match="no constraint declared for 'depth'"):
        check_params(_Base(), depth=3)


# ----------------------------------------------------------------------------- the enums cover every name in use
def test_objective_covers_every_contrast_of_the_estimators_and_the_cli():
    assert {o.value for o in Objective} == {"likelihood", "least-squares", "l2"}
    import tpp.cli

    # whether the CLI imports these enums or (until it does) defines its own, every value it offers is ours
    for ours in (Objective, KernelName):
        theirs = getattr(tpp.cli, ours.__name__, ours)
        assert {m.value for m in theirs} <= {m.value for m in ours}, ours.__name__


def test_kernel_names_are_exactly_the_fadin_kernel_families():
    from tpp.hawkes.kernels import KERNELS, get_kernel

    assert {k.value for k in KernelName} == set(KERNELS)
    for name in KernelName:
        assert get_kernel(name, 2.0).name == name.value == get_kernel(name.value, 2.0).name
    with pytest.raises(ValueError, match="unknown kernel 'truncated_gaussian'"):
        get_kernel("truncated_gaussian", 2.0)  # no aliases


def test_activations_are_exactly_the_attention_layers_non_linearities():
    from tpp.neural.layers import _ACTIVATIONS, CausalAttentionLayer

    assert set(_ACTIVATIONS) == set(Activation)
    for act in ("gelu", Activation.RELU):
        CausalAttentionLayer(8, 2, 16, activation=act)
    with pytest.raises(ValueError, match="CausalAttentionLayer: activation must be one of 'gelu', 'relu', got 'ReLU'"):
        CausalAttentionLayer(8, 2, 16, activation="ReLU")


def test_initialisation_values():
    assert {i.value for i in Initialisation} == {"moments", "current"}


# ----------------------------------------------------------------------------- constructors use the table
def _constructors():
    from sde.models import GSDE, LSDE, LatentSDE, NeuralCDE, NeuralODE
    from tpp.hawkes import ExpHawkes, FaDInHawkes, NonparametricHawkes, Poisson, SumExpHawkes
    from tpp.neural import AttNHP, FullyNN, IntensityFree, RMTPP

    return [
        (lambda: Poisson(0), ValueError, "Poisson: num_marks must be an integer >= 1, got 0"),
        (lambda: ExpHawkes(2, decay=0.0), ValueError, "ExpHawkes: decay must be positive"),
        (lambda: SumExpHawkes(2, [1.0, -1.0]), ValueError, "SumExpHawkes: decays must be positive"),
        (lambda: FaDInHawkes(2, support=-1.0), ValueError, "FaDInHawkes: support must be positive"),
        (lambda: FaDInHawkes(2, objective="least-squares"), ValueError, "FaDInHawkes: objective must be 'l2' or"),
        (lambda: NonparametricHawkes(2, support=1.0, bins=2.5), ValueError, "NonparametricHawkes: bins must be a positive integer"),
        (lambda: RMTPP(3, 0), ValueError, "RMTPP: hidden_size must be an integer >= 1"),
        (lambda: AttNHP(3, 8, window=0), ValueError, "AttNHP: window must be an integer >= 1 or None"),
        (lambda: FullyNN(3, 8, num_layers=0), ValueError, "FullyNN: num_layers must be"),
        (lambda: IntensityFree(3, 8, num_mixtures=0), ValueError, "IntensityFree: num_mixtures must be"),
        (lambda: LSDE(2, 8, 2, num_layers=0), ValueError, "LSDE: num_layers must be an integer >= 1"),
        (lambda: GSDE(2, 8, 2, scheme="log"), TypeError, "GSDE: scheme must be a GeometricScheme"),
        (lambda: NeuralODE(2, 8, 2, num_layers=0), ValueError, "ODEVectorField: num_layers must be"),
        (lambda: NeuralCDE(0, 8, 2), ValueError, "NeuralCDE: input_channels must be an integer >= 1"),
        (lambda: LatentSDE(2, step_size=-0.1), ValueError, "LatentSDE: step_size must be positive"),
    ]


@pytest.mark.parametrize("case", range(15))
def test_constructors_refuse_bad_settings_naming_class_parameter_and_range(case):
    build, error, message = _constructors()[case]
    with pytest.raises(error, match=message):
        build()
