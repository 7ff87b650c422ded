"""GenerativeClassifier: one generative series model per class and Bayes' rule."""

import numpy as np
import pytest
import torch

from sde.models import GenerativeClassifier
from sde.series import SeriesBatch


def two_level_series(n: int, seed: int) -> SeriesBatch:
    """Class 0 hovers around 0, class 1 around 3 (noise 0.3), on irregular times."""
    rng = np.random.default_rng(seed)
    pairs, labels = [], []
    for i in range(n):
        label = i % 2
        times = np.sort(rng.uniform(0, 1, 12))
        pairs.append((times, 3.0 * label + 0.3 * rng.normal(size=(12, 1))))
        labels.append(label)
    return SeriesBatch.from_arrays(pairs, labels=labels)


@pytest.mark.parametrize("base", ["latent-sde", "neural-mjp"])
def test_probabilities_are_bayes_rule_over_the_class_likelihoods(base):
    data = two_level_series(8, seed=0)
    torch.manual_seed(0)
    model = GenerativeClassifier(2, 1, base=base).initialise(data)
    probs = model.predict(data, seed=3)
    torch.manual_seed(123)  # the query seeds itself: the global stream does not matter
    again = model.predict(data, seed=3)
    assert torch.equal(probs, again)
    assert torch.allclose(probs.sum(1), torch.ones(len(data), dtype=probs.dtype))
    from sde.models._base import seeded

    with seeded(3):
        joint = model.class_log_likelihood(data) + model.log_prior
    assert torch.allclose(probs, torch.softmax(joint, 1), atol=1e-12)


def test_each_class_model_learns_only_from_its_own_class():
    data = two_level_series(8, seed=0)
    model = GenerativeClassifier(2, 1, base="neural-mjp").initialise(data)
    model.train()
    loss = -model.objective(data).sum()
    loss.backward()
    # a batch of class-0 series leaves class 1's model without gradient, and the reverse
    model.zero_grad()
    (-model.objective(data[np.array([0, 2, 4])]).sum()).backward()
    assert all(p.grad is None or not p.grad.any() for p in model.models[1].parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.models[0].parameters())


def test_a_fitted_latent_sde_classifier_separates_two_levels():
    train, test = two_level_series(24, seed=1), two_level_series(16, seed=2)
    torch.manual_seed(0)
    model = GenerativeClassifier(2, 1, base="latent-sde").fit(train, epochs=15, batch_size=8, lr=1e-2, seed=0,
                                                              progress=False)
    assert model.score(test) >= 0.9
    assert model.log_prior.exp().sum().item() == pytest.approx(1.0)


def test_a_base_that_is_not_generative_is_refused():
    with pytest.raises(ValueError, match="not a generative model"):
        GenerativeClassifier(2, 1, base="lsde")
