"""The classic estimators (Poisson, ExpHawkes, SumExpHawkes, FaDIn, nonparametric EM) on the one model
contract: ``fit(train, val=None, *, options, **trainer_options) -> self``, ``objective`` is the exact
log-likelihood, ``score`` its mean per event, ``predict`` the next event; options are enums or their
exact values, never aliases."""

import warnings

import numpy as np
import pytest
import torch

from tpp.hawkes import ExpHawkes, FaDInHawkes, NonparametricHawkes, Poisson, PowerLawHawkes, SumExpHawkes
from tpp.model import Model
from tpp.options import Initialisation, Objective
from tpp.process import Prediction

TRUTH = ExpHawkes.from_params([0.6, 0.4], [[0.3, 0.1], [0.2, 0.3]], 2.0)


@pytest.fixture(scope="module")
def data():
    """A train and a held-out batch of the same process."""
    return TRUTH.sample(6, 40.0, generator=3), TRUTH.sample(3, 40.0, generator=4)


ESTIMATORS = {
    "poisson": lambda: Poisson(2),
    "exp-hawkes": lambda: ExpHawkes(2, decay=2.0),
    "sumexp-hawkes": lambda: SumExpHawkes(2, [0.5, 3.0]),
    "fadin": lambda: FaDInHawkes(2, "truncated-exponential", 3.0, 0.05),
    "nonparametric-em": lambda: NonparametricHawkes(2, support=3.0, bins=6),
    "powerlaw-hawkes": lambda: PowerLawHawkes(2, 12, (1e-2, 1e2)),
}


def _fit(model, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a short sample may fit a branching ratio >= 1
        return model.fit(*args, **kwargs)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_fit_takes_a_held_out_batch_and_the_trainer_options_and_returns_self(name, data):
    train, val = data
    model = ESTIMATORS[name]()
    assert isinstance(model, Model)
    fitted = _fit(model, train, val, epochs=1, batch_size=4, lr=0.1, seed=0, progress=False)
    assert fitted is model
    # val is scored, never fitted: the same fit as without it
    alone = _fit(ESTIMATORS[name](), train)
    np.testing.assert_allclose(model.baseline_, alone.baseline_, rtol=1e-12)
    assert "val_score" not in alone.fit_result_
    assert model.fit_result_["val_score"] == pytest.approx(model.score(val), rel=1e-12)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_objective_is_the_log_likelihood_score_its_mean_per_event_and_predict_the_next_event(name, data):
    train, val = data
    model = _fit(ESTIMATORS[name](), train)
    ll = model.log_likelihood(val)
    torch.testing.assert_close(model.objective(val), ll, rtol=0, atol=0)
    torch.testing.assert_close(model(val), ll, rtol=0, atol=0)
    assert model.score(val) == pytest.approx(float(ll.detach().sum()) / val.num_events, rel=1e-12)
    prediction = model.predict(val)
    assert isinstance(prediction, Prediction) and prediction.time_mean.shape == (len(val),)
    assert bool((prediction.time_mean > val.t_end).all())
    torch.testing.assert_close(prediction.mark_probs.sum(-1), torch.ones(len(val), dtype=torch.float64))


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_estimator_options_are_keyword_only_and_unknown_names_are_refused(name, data):
    train, _ = data
    with pytest.raises(TypeError, match="val must be a held-out EventBatch or None.*keyword-only"):
        ESTIMATORS[name]().fit(train, "likelihood")
    with pytest.raises(TypeError, match="unexpected keyword argument.*epoch\\b"):
        ESTIMATORS[name]().fit(train, epoch=3)


def test_exp_hawkes_objective_is_the_enum_or_its_value_and_never_an_alias(data):
    train, _ = data
    by_enum = _fit(ExpHawkes(2, decay=2.0), train, objective=Objective.LEAST_SQUARES)
    by_value = _fit(ExpHawkes(2, decay=2.0), train, objective="least-squares")
    np.testing.assert_array_equal(by_enum.adjacency_, by_value.adjacency_)
    assert by_enum.fit_result_["objective"] == "least-squares"
    mle = _fit(ExpHawkes(2, decay=2.0), train)
    assert mle.fit_result_["objective"] == Objective.LIKELIHOOD.value
    assert np.abs(mle.adjacency_ - by_enum.adjacency_).max() > 1e-6  # two different contrasts
    for alias in ("least_squares", "ls", "LIKELIHOOD", "mle"):
        with pytest.raises(ValueError, match="objective must be one of 'likelihood', 'least-squares', 'l2'"):
            ExpHawkes(2, decay=2.0).fit(train, objective=alias)
    with pytest.raises(ValueError, match="FaDIn's contrast"):
        ExpHawkes(2, decay=2.0).fit(train, objective=Objective.L2)


def test_fadin_objective_and_initialisation_are_enums_or_their_values(data):
    train, _ = data
    a = _fit(FaDInHawkes(2, "truncated-exponential", 3.0, 0.05, objective=Objective.LIKELIHOOD), train, max_iter=30)
    b = _fit(FaDInHawkes(2, "truncated-exponential", 3.0, 0.05, objective="likelihood"), train, max_iter=30)
    assert a.fit_objective is b.fit_objective is Objective.LIKELIHOOD
    assert a.fit_result_["objective"] == "likelihood"
    np.testing.assert_array_equal(a.adjacency_, b.adjacency_)
    # CURRENT starts from the present values: a second fit from the first one's solution stays there
    again = _fit(a, train, max_iter=30, init=Initialisation.CURRENT)
    np.testing.assert_allclose(again.adjacency_, b.adjacency_, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="init must be one of 'moments', 'current'"):
        FaDInHawkes(2, "truncated-exponential", 3.0, 0.05).fit(train, init="warm")


@pytest.mark.parametrize("kwargs, message", [({"l1": -0.1}, "l1 must be non-negative"),
                                             ({"max_iter": 0}, "max_iter must be an integer >= 1"),
                                             ({"tol": -1.0}, "tol must be non-negative")])
def test_fit_options_are_checked_from_the_table(data, kwargs, message):
    with pytest.raises(ValueError, match=f"ExpHawkes: {message}"):
        ExpHawkes(2, decay=2.0).fit(data[0], **kwargs)
