"""The data-dependent start of the per-type intensities (``NeuralTPP.initialise``)."""

import numpy as np
import pytest
import torch

import tpp.neural
from tpp.events import EventBatch

MODELS = ["NHP", "THP", "SAHP", "AttNHP"]


def many_type_batch(K: int = 200, n: int = 40, seed: int = 0) -> EventBatch:
    """Poisson events of K types with very unequal rates (a few busy types, many rare ones)."""
    rng = np.random.default_rng(seed)
    rates = 5.0 * rng.dirichlet(np.full(K, 0.3))
    seqs = []
    for _ in range(n):
        count = rng.poisson(rates.sum() * 10.0)
        times = np.sort(rng.uniform(0, 10.0, count))
        seqs.append((times, rng.choice(K, size=count, p=rates / rates.sum())))
    return EventBatch.from_sequences([t for t, _ in seqs], [m for _, m in seqs], num_marks=K, t_end=10.0)


@pytest.mark.parametrize("name", MODELS)
def test_start_puts_each_type_at_its_average_rate_once(name):
    batch = many_type_batch()
    torch.manual_seed(0)
    model = getattr(tpp.neural, name)(num_marks=batch.num_marks, hidden_size=8)
    model.eval()
    before = float(model.log_likelihood(batch).sum()) / batch.num_events
    assert model.initialise(batch) is model
    after = float(model.log_likelihood(batch).sum()) / batch.num_events
    # softplus(0) = 0.69 events per unit time for each of 200 types is ~28x the true total rate
    assert after > before + 1.0
    counts = torch.bincount(batch.mark[batch.mask], minlength=batch.num_marks).double()
    rates = (counts + 0.01 * counts.sum() / batch.num_marks) / 400.0
    # in model units: the time scale is the mean positive gap, so the rates total about one
    gaps = batch.inter_event_times[batch.mask]
    torch.testing.assert_close(model.time_scale, gaps[gaps > 0].double().mean())
    rates = rates * float(model.time_scale)
    for bias in model.rate_biases():
        torch.testing.assert_close(torch.nn.functional.softplus(bias.double()), rates, rtol=1e-5, atol=1e-9)
    with torch.no_grad():
        model.rate_biases()[0].fill_(0.5)
    model.initialise(batch)  # once per model: a fine-tuning run keeps what was learnt
    assert float(model.rate_biases()[0][0]) == 0.5


def test_state_dicts_from_before_the_start_existed_count_as_initialised():
    model = tpp.neural.NHP(3, 8)
    state = model.state_dict()
    del state["rates_initialised"]
    fresh = tpp.neural.NHP(3, 8)
    fresh.load_state_dict(state)
    assert bool(fresh.rates_initialised)


def test_fit_standardisation_is_a_deprecated_alias_of_initialise():
    batch = many_type_batch(K=20, n=10)
    torch.manual_seed(0)
    old, new = tpp.neural.NHP(20, 8), tpp.neural.NHP(20, 8)
    new.load_state_dict(old.state_dict())
    with pytest.warns(DeprecationWarning, match="initialise"):
        assert old.fit_standardisation(batch) is old
    new.initialise(batch)
    for key, value in new.state_dict().items():
        assert torch.equal(old.state_dict()[key], value), key
