"""The one model table (tpp.table, sde.table): every name builds, every public model class is named,
save/load round trips score identically, typos get a did-you-mean, tpp never imports sde."""

import inspect
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import sde.table  # noqa: F401 - registers the sde entries
from tpp import table
from tpp.events import EventBatch
from tpp.hawkes import ExpHawkes
from tpp.model import Model

SUPPORT = 2.0  # the one argument without a default (fadin, nonparametric-em): the kernel support W


@pytest.fixture(scope="module")
def events() -> EventBatch:
    """Six short sequences of a two-type exponential Hawkes process."""
    return ExpHawkes.from_params([0.6, 0.4], [[0.3, 0.1], [0.2, 0.3]], 1.5).sample(6, 25.0, generator=0)


@pytest.fixture(scope="module")
def series():
    """Eight labelled two-channel series on irregular times, some values missing."""
    from sde.series import SeriesBatch

    rng = np.random.default_rng(0)
    pairs = []
    for n in (7, 5, 9, 6, 8, 7, 5, 6):
        times = np.sort(rng.uniform(0, 3, n))
        values = rng.normal(size=(n, 2))
        values[rng.random((n, 2)) < 0.2] = np.nan
        values[0] = rng.normal(size=2)  # every series starts observed
        pairs.append((times, values))
    return SeriesBatch.from_arrays(pairs, labels=[0, 1, 0, 1, 1, 0, 1, 0])


@pytest.fixture(scope="module")
def jumps() -> EventBatch:
    """Five paths of a three-state Markov jump process (marks are the states entered, the first at t_start)."""
    from sde.models import MarkovJumpProcess

    return MarkovJumpProcess(3, [[0, 1.0, 0.5], [0.3, 0, 0.7], [0.6, 0.4, 0]]).sample(5, 10.0, generator=0)


SERIES_MODELS = {"neural-cde", "lsde", "lnsde", "gsde", "gru", "neural-ode", "latent-sde", "neural-mjp", "latent-ode",
                 "ode-rnn", "gru-d", "fractional-latent-sde", "scotch", "bayesian-neural-cde",
                 "langevin-flow", "poisson-latent-sde", "process-diffusion"}
LABELLED_SERIES_MODELS = SERIES_MODELS | {"generative-classifier"}


@pytest.fixture(scope="module")
def magnitudes(events) -> EventBatch:
    """The events with a Gutenberg-Richter magnitude above 2.5 each (the mark of marked-hawkes)."""
    flat = events.to_flat()
    values = 2.5 + np.random.default_rng(0).exponential(0.5, flat["times"].size)
    return EventBatch.from_flat(**flat, features=values, feature_names=["magnitude"])


@pytest.fixture(scope="module")
def located() -> EventBatch:
    """Six Pinwheel sequences with locations x, y and a magnitude (the data of the spatio-temporal models)."""
    from tpp.spatial.data import pinwheel

    flat = pinwheel(6, seed=0).to_flat()
    magnitude = 2.5 + np.random.default_rng(0).exponential(0.5, flat["times"].size)
    return EventBatch.from_flat(**{**flat, "features": np.column_stack([flat["features"], magnitude]),
                                   "feature_names": ["x", "y", "magnitude"]})


@pytest.fixture(scope="module")
def spikes():
    """Spike counts of a small Lorenz-driven Poisson population (the models with a Poisson count emission)."""
    from sde.spiking_data import lorenz_spikes, to_series

    data = lorenz_spikes(n_trials=6, n_neurons=3, n_bins=12, seed=0)
    return to_series(data.counts, data.times)


@pytest.fixture(scope="module")
def complete():
    """Fully observed OU series (the diffusion of whole series refuses missing values; short, because its exact
    likelihood takes one backward pass per value)."""
    from sde.diffusion_data import ou

    return ou(6, 8, t_end=9.0, seed=0, dtype=torch.float32)


@pytest.fixture(scope="module")
def trains():
    """Spike trains of two coupled stochastic neurons on [0, 3] (the data of spiking-sde)."""
    from sde.models.spiking import SpikingSDE

    with torch.no_grad():
        return SpikingSDE(2, mu=1.2, sigma=0.2, weights=[[0, 0.3], [0.3, 0]], dt0=0.05)(
            3.0, max_spikes=16, num_samples=8, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def data(request, events, series, jumps, magnitudes, located, spikes, complete, trains):
    """The data set whose shape fills the model's arguments: series for series models, spike counts for the
    Poisson-emission models, jump paths for the jump process, events with magnitudes for marked-hawkes, events
    with locations for the spatio-temporal models (``"locations"`` in the entry's ``needs``), else events."""
    name = request.node.callspec.params["name"]
    if name in ("langevin-flow", "poisson-latent-sde"):
        return spikes
    if name == "process-diffusion":
        return complete
    if name == "spiking-sde":
        return trains
    if name == "marked-hawkes":
        return magnitudes
    if "locations" in table.spec(name).needs:
        return located
    return series if name in LABELLED_SERIES_MODELS else jumps if name == "mjp" else events


def required_args(name):
    return {k: SUPPORT for k in table.spec(name).required}


def score(model, data) -> float:
    """The model's score (the contract) under a fixed torch seed, so stochastic models compare exactly."""
    torch.manual_seed(0)
    model.eval()
    with torch.no_grad():
        if isinstance(model, Model):
            return float(model.score(data))
        return float(model.log_likelihood(data).double().sum())


ALL = table.names()


def test_both_families_are_in_one_table_in_cli_order():
    assert table.names("tpp")[:5] == ("poisson", "exp-hawkes", "sumexp-hawkes", "fadin", "nonparametric-em")
    assert {"rmtpp", "intensity-free"} <= set(table.names("tpp", "trainer"))
    assert set(table.names("sde")) >= {"neural-cde", "lsde", "lnsde", "gsde", "gru", "neural-ode", "latent-sde",
                                       "neural-mjp", "neural-cox-sde", "mjp"}
    assert set(ALL) == set(table.names("tpp")) | set(table.names("sde"))
    assert set(sde.table.SERIES_NAMES) == SERIES_MODELS and set(sde.table.EVENT_NAMES) == {"neural-cox-sde", "mjp"}


@pytest.mark.parametrize("name", ALL)
def test_every_name_builds_from_a_tiny_data_set_with_the_table_defaults(name, data):
    entry = table.spec(name)
    for missing in entry.required:  # the arguments no default fits are asked for by name
        with pytest.raises(ValueError, match=missing):
            table.build(name, data)
    model = table.build(name, data, **required_args(name))
    assert isinstance(model, entry.cls) and isinstance(model, nn.Module)
    assert table.spec_of(model) is entry
    for key, value in entry.shape(data).items():
        assert getattr(model, key) == value  # the data's shape reached the constructor


def public_model_classes(module):
    classes = []
    for attribute in module.__all__:
        value = getattr(module, attribute)
        if (isinstance(value, type) and issubclass(value, nn.Module) and not inspect.isabstract(value)):
            classes.append(value)
    return classes


@pytest.mark.parametrize("module", ["tpp.hawkes", "tpp.neural", "sde.models"])
def test_every_public_model_class_has_a_name_in_the_table(module):
    import importlib

    classes = public_model_classes(importlib.import_module(module))
    assert classes
    named = {entry.cls for entry in table.specs()}
    assert [c.__name__ for c in classes if c not in named] == []


@pytest.mark.parametrize("name", ALL)
def test_save_then_load_gives_the_same_model_and_identical_scores(name, data, tmp_path):
    model = table.build(name, data, seed=0, **required_args(name))
    if table.spec(name).training is table.Training.ESTIMATOR:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a fit on 6 short sequences may be non-stationary: irrelevant here
            options = {"max_iter": 20} if name == "fadin" else {"steps": 2, "progress": False} if name == "spiking-sde" \
                else {}
            model, record = table.fit_model(model, data, **options)
        assert record.seconds >= 0 and record.info() == {}
    elif isinstance(model, Model):
        model.initialise(data)  # the data-dependent start (standardisation, rates) is part of the saved state
    path = table.save(model, tmp_path / f"{name}.model")
    loaded = table.load(path)
    assert type(loaded) is type(model) and table.spec_of(loaded).name == name
    if table.spec(name).training is table.Training.TRAINER:
        assert table.constructor_args(loaded) == table.constructor_args(model)
        for key, value in model.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0, equal_nan=True, msg=key)
    assert score(loaded, data) == score(model, data)


def test_a_model_made_without_the_table_saves_from_its_own_attributes(events, tmp_path):
    from tpp.neural import THP

    torch.manual_seed(1)
    model = THP(num_marks=2, hidden_size=8, num_points=24).double()
    loaded = table.load(table.save(model, tmp_path / "thp.pt"))
    assert loaded.hidden_size == 8 and loaded.num_points == 24 and next(loaded.parameters()).dtype == torch.float64
    assert score(loaded, events) == score(model, events)


def test_a_typo_gets_did_you_mean_and_the_list_of_names():
    with pytest.raises(table.UnknownModelError, match="did you mean exp-hawkes") as info:
        table.spec("exp-hawks")
    assert isinstance(info.value, ValueError) and isinstance(info.value, KeyError)
    assert "choose one of poisson" in str(info.value)
    with pytest.raises(ValueError, match="did you mean lsde"):
        table.spec("lsdee")
    with pytest.raises(table.UnknownModelError, match="it is an sde model"):
        table.spec("lsde", family="tpp")


def test_display_names_and_aliases_resolve_to_one_entry():
    assert table.spec("RMTPP") is table.spec("rmtpp") is table.spec("rMtPp")
    assert table.spec("ExpHawkes").name == "exp-hawkes"
    assert table.spec("nonparametric-hawkes").name == "nonparametric-em"  # to_dict()'s name
    assert table.spec("NeuralCoxSDE").name == "neural-cox-sde"
    with pytest.raises(ValueError, match="already"):
        table.register(table.ModelSpec("rmtpp", "tpp.neural:NHP", table.Family.TPP, "X", table.Training.TRAINER))


def test_model_enum_lists_a_familys_names_then_their_aliases():
    names = table.model_enum("tpp")
    listed = list(table.names("tpp"))
    aliases = [a for s in table.specs("tpp") for a in s.aliases]
    assert [m.value for m in names] == listed + aliases and "tv-cnf" in aliases
    assert names.exp_hawkes == "exp-hawkes" and names("intensity-free") is names.intensity_free
    assert table.canonical(names("tv-cnf")) is names.time_varying_cnf
    assert table.canonical(names.jump_cnf) is names.jump_cnf


def test_fit_model_trains_as_the_trainer_does_with_the_same_seed(events):
    from tpp.train import fit

    model, record = table.fit_model(table.build("rmtpp", events, seed=3, hidden_size=8), events, epochs=2,
                                    batch_size=4, lr=1e-2, seed=3, progress=False)
    torch.manual_seed(3)
    from tpp.neural import RMTPP

    direct = RMTPP(num_marks=2, hidden_size=8)
    result = fit(direct, events, epochs=2, batch_size=4, lr=1e-2, seed=3, progress=False)
    for key, value in direct.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert record.epochs_run == len(result.history) == 2 and record.best_epoch == result.best_epoch
    assert model.train_result_ is record.train_result


def test_estimator_json_is_the_cli_model_json(events, tmp_path):
    from tpp.hawkes import from_dict

    model, _ = table.fit_model(table.build("exp-hawkes", events, decay=1.5), events, progress=True)
    path = table.save(model, tmp_path / "model.json")
    params = json.loads(path.read_text())
    assert params == model.to_dict() and params["model"] == "exp-hawkes"
    with torch.no_grad():
        assert float(from_dict(params).log_likelihood(events).sum()) == float(model.log_likelihood(events).sum())
    with pytest.raises(ValueError, match="unknown model 'gpt'"):
        table.from_dict({"model": "gpt"})
    with pytest.raises(ValueError, match="field 'adjacency' is missing"):
        table.from_dict({"model": "exp-hawkes", "baseline": [1.0], "decay": 1.0})


def test_importing_the_tpp_table_imports_no_sde_and_no_model():
    code = ("import sys, tpp.table as t; t.names(); t.spec('rmtpp'); "
            "assert not [m for m in sys.modules if m == 'sde' or m.startswith('sde.')]; "
            "assert 'tpp.neural' not in sys.modules and 'tpp.hawkes' not in sys.modules")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
