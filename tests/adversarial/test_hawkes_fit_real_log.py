"""A learned-decay fit on a real order-book log stays at the optimum of its own profile.

A warm-started inner solver once returned an adjacency of 5.7e5 (log-likelihood -1.6e10) on these 24 books while
the fixed-decay fit at the same decay was sane (+3.8e5): the notebook's simulation then exploded."""

import numpy as np

import tpp
from tpp import datasets
from tpp.hawkes import ExpHawkes

from ..conftest import needs_data


@needs_data
def test_learned_decay_fit_on_24_order_books_is_at_least_the_fixed_decay_fit_at_its_decay():
    log = tpp.io.to_dataframe(datasets.load("bookorder"))
    log = log[log["seq"].isin(log["seq"].unique()[:24])]
    events = tpp.read_events(log, seq="seq", time="time", mark="mark", t_start="t_start", t_end="t_end")
    train, _ = events.split((0.75, 0.25), seed=0)
    learned = ExpHawkes(2).fit(train)
    decay = float(learned.decay_)
    fixed = ExpHawkes(2, decay=decay).fit(train)
    ll_learned = float(learned.log_likelihood(train).detach().sum())
    ll_fixed = float(fixed.log_likelihood(train).detach().sum())
    assert ll_learned >= ll_fixed - 1e-6 * abs(ll_fixed)
    assert learned.branching_ratio < 1.5 and np.all(learned.adjacency_ < 10)
