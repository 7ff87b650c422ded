"""The trainer: the model contract it relies on, learning, early stopping, checkpoints that resume exactly (DDP
equivalence: tests/tpp/test_scale.py)."""

import numpy as np
import pytest
import torch

import tpp
import tpp.stream
from tpp.hawkes import ExpHawkes
from tpp.model import Model
from tpp.neural import RMTPP
from tpp.train import _load_checkpoint, evaluate, length_buckets

TRUTH = ExpHawkes.from_params([0.3, 0.2, 0.1], [[0.3, 0.1, 0.0], [0.1, 0.3, 0.1], [0.0, 0.2, 0.3]], 1.5)


@pytest.fixture(scope="module")
def data():
    batch = TRUTH.sample(120, 40.0, generator=0)
    return batch.split((0.7, 0.15, 0.15), seed=0)


def test_length_buckets_cover_every_sequence_once_with_similar_lengths():
    lengths = np.random.default_rng(0).integers(1, 100, 103)
    groups = length_buckets(lengths, 10, np.random.default_rng(1))
    flat = np.sort(np.concatenate(groups))
    np.testing.assert_array_equal(flat, np.arange(103))
    spread = np.mean([np.ptp(lengths[g]) for g in groups])
    assert spread < 0.3 * np.ptp(lengths)  # buckets are much tighter than random groups


def test_length_buckets_draw_new_groups_each_epoch_when_lengths_are_equal():
    # Equal-length series (most series archives): a stable sort gave the same minibatches every epoch.
    lengths = np.full(50, 150)
    rng = np.random.default_rng(0)
    first = {frozenset(g.tolist()) for g in length_buckets(lengths, 16, rng)}
    second = {frozenset(g.tolist()) for g in length_buckets(lengths, 16, rng)}
    assert first != second
    assert sorted(np.concatenate([list(g) for g in second]).tolist()) == list(range(50))
    fixed = length_buckets(lengths, 16, None)  # evaluation: a fixed order
    np.testing.assert_array_equal(np.concatenate(fixed), np.arange(50))


def test_training_improves_validation_likelihood(data):
    train, val, _ = data
    torch.manual_seed(0)
    model = RMTPP(3, 16)
    before = evaluate(model, val)
    result = tpp.fit(model, train, val, epochs=8, batch_size=16, lr=5e-3, seed=0, progress=False)
    # 3.7k training events; the true process scores -1.735 nats/event on val; over 5 initial seeds
    # an untrained RMTPP scored -1.91 to -2.11 and the trained one -1.841 to -1.859.
    assert result.best_val_ll_per_event > before + 0.05
    assert result.best_val_ll_per_event > TRUTH.score(val) - 0.15
    assert evaluate(model, val) == pytest.approx(result.best_val_ll_per_event, abs=1e-6)  # best weights restored
    assert result.train_events_per_second > 0


def test_same_seed_same_result(data):
    train, val, _ = data
    a, b = RMTPP(3, 8), RMTPP(3, 8)
    b.load_state_dict(a.state_dict())
    ra = tpp.fit(a, train, val, epochs=2, batch_size=16, seed=3, progress=False)
    rb = tpp.fit(b, train, val, epochs=2, batch_size=16, seed=3, progress=False)
    assert ra.history[-1]["val_ll_per_event"] == rb.history[-1]["val_ll_per_event"]


def test_resume_after_interruption_equals_uninterrupted_run(data, tmp_path):
    train, val, _ = data
    torch.manual_seed(0)
    init = RMTPP(3, 8).state_dict()
    full = RMTPP(3, 8)
    full.load_state_dict(init)
    tpp.fit(full, train, val, epochs=4, batch_size=16, seed=1, progress=False, checkpoint_dir=tmp_path / "full")
    run = RMTPP(3, 8)
    run.load_state_dict(init)
    _fit_two_of_four(run, train, val, tmp_path / "part")  # killed after its second checkpoint
    resumed = RMTPP(3, 8)
    result = tpp.fit(resumed, train, val, epochs=4, batch_size=16, seed=1, progress=False,
                     checkpoint_dir=tmp_path / "part", resume=True)
    assert result.resumed_from_epoch == 1
    for key, value in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value)


def _fit_two_of_four(model, train, val, folder):
    """Run the 4-epoch schedule but stop after epoch 2, as a kill between epochs would."""
    import tpp.train as train_module

    original = train_module._save_checkpoint
    calls = {"n": 0}

    class Killed(Exception):
        pass

    def save_then_maybe_die(path, state):
        original(path, state)
        calls["n"] += 1
        if calls["n"] == 2:
            raise Killed

    train_module._save_checkpoint = save_then_maybe_die
    try:
        with pytest.raises(Killed):
            tpp.fit(model, train, val, epochs=4, batch_size=16, seed=1, progress=False, checkpoint_dir=folder)
    finally:
        train_module._save_checkpoint = original


def test_truncated_checkpoint_falls_back_to_the_previous_one(data, tmp_path):
    train, val, _ = data
    model = RMTPP(3, 8)
    tpp.fit(model, train, val, epochs=2, batch_size=16, seed=1, progress=False, checkpoint_dir=tmp_path)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:100])  # a torn write
    with pytest.warns(UserWarning, match="unreadable"):
        state = _load_checkpoint(path)
    assert state["epoch"] == 0  # the previous checkpoint


# Two-process DDP equals one process on the whole minibatches: tests/tpp/test_scale.py's kill-and-relaunch test
# checks that result (its resumed run is the plain DDP run from the checkpoint on).


def test_flat_parameter_buffer_trains_like_separate_tensors(data, monkeypatch):
    """The trainer steps one flat view of all parameters; the trajectory is that of the separate tensors."""
    import tpp.train as train_module

    train, val, _ = data
    runs = []
    for flatten in (True, False):
        if not flatten:
            monkeypatch.setattr(train_module._FlatParameters, "of", classmethod(lambda cls, model: None))
        torch.manual_seed(0)
        model = RMTPP(3, 8)
        tpp.fit(model, train, val, epochs=2, batch_size=16, lr=5e-3, seed=0, progress=False)
        runs.append(model)
    flat, separate = runs
    for (name, a), b in zip(flat.named_parameters(), separate.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    data_ptrs = {p.untyped_storage().data_ptr() for p in flat.parameters()}
    assert len(data_ptrs) == 1  # every parameter is a view of the one buffer


@pytest.mark.parametrize("name", ["RMTPP", "IntensityFree", "FullyNN", "NHP", "THP", "SAHP", "AttNHP"])
def test_bfloat16_autocast_trains_every_neural_model(data, name):
    """``amp=True`` (bfloat16 autocast) reaches the compiled CPU kernels, which run in float32: no dtype error,
    finite losses, and a finite float32 evaluation afterwards."""
    import tpp.neural

    train, val, _ = data
    torch.manual_seed(0)
    model = getattr(tpp.neural, name)(3, 8)
    result = tpp.fit(model, train, val, epochs=2, batch_size=16, lr=5e-3, seed=0, progress=False, amp=True)
    assert all(np.isfinite(h["train_nll_per_event"]) for h in result.history)
    assert np.isfinite(evaluate(model, val))


def test_resume_with_an_optimizer_state_of_another_layout_says_so(data, tmp_path):
    """A checkpoint whose optimizer state has per-tensor entries (older trainers) stops resume with a clear error."""
    from tpp.train import CheckpointError, _read_checkpoint, _save_checkpoint

    train, _, _ = data
    tpp.fit(RMTPP(3, 8), train, None, epochs=1, batch_size=16, progress=False, checkpoint_dir=tmp_path)
    path = tmp_path / "checkpoint.pt"
    state = _read_checkpoint(path)
    state["optimizer"] = torch.optim.AdamW(RMTPP(3, 8).parameters()).state_dict()
    _save_checkpoint(path, state)
    with pytest.raises(CheckpointError, match="another version of tpp"):
        tpp.fit(RMTPP(3, 8), train, None, epochs=2, batch_size=16, progress=False, checkpoint_dir=tmp_path, resume=True)


class CountingRate(Model):
    """A Model that is not a point process of :mod:`tpp.process`: one Poisson rate for all sequences, its
    objective ``n log r - r T`` per sequence. It records what the trainer calls."""

    def __init__(self) -> None:
        super().__init__()
        self.log_rate = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.offset = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))  # a second tensor, flattened with it
        self.initialised_with: list[int] = []
        self.steps = 0

    def objective(self, batch):
        n = batch.mask.sum(1).to(torch.float64)
        exposure = (batch.t_end - batch.t_start).to(torch.float64)
        log_rate = self.log_rate + self.offset
        return n * log_rate - torch.exp(log_rate) * exposure

    def score(self, data) -> float:
        with torch.no_grad():
            return float(self.objective(data).sum()) / max(data.num_events, 1)

    def predict(self, data):
        return torch.exp(self.log_rate + self.offset).detach()

    def initialise(self, train):
        self.initialised_with.append(train.num_events)
        return self

    def after_step(self) -> None:
        self.steps += 1


def test_the_trainer_drives_any_model_through_its_contract_only(data):
    """initialise once with the training data, maximise the objective (the rate reaches the MLE n / T),
    after_step after every update, the objective per event as the validation score."""
    train, val, _ = data
    model = CountingRate()
    assert model.fit(train, None, epochs=30, batch_size=16, lr=0.1, seed=0, progress=False) is model
    assert model.initialised_with == [train.num_events]
    steps_per_epoch = len(tpp.stream.as_source(train).plan(16, None))
    assert model.steps == 30 * steps_per_epoch and len(model.train_result_.history) == 30
    mle = train.num_events / float((train.t_end - train.t_start).sum())
    assert float(model.predict(train)) == pytest.approx(mle, rel=0.01)
    assert evaluate(model, val) == pytest.approx(model.score(val), rel=1e-12)
    validated = CountingRate()
    result = tpp.fit(validated, train, val, epochs=3, batch_size=16, lr=0.1, seed=0, progress=False)
    assert result.best_val_ll_per_event == max(h["val_ll_per_event"] for h in result.history)
    assert evaluate(validated, val) == pytest.approx(result.best_val_ll_per_event, rel=1e-12)  # best weights kept


def test_a_resumed_run_does_not_initialise_again(data, tmp_path):
    train, _, _ = data
    first = CountingRate()
    tpp.fit(first, train, epochs=2, batch_size=16, seed=0, progress=False, checkpoint_dir=tmp_path)
    assert first.initialised_with == [train.num_events]
    resumed = CountingRate()
    result = tpp.fit(resumed, train, epochs=3, batch_size=16, seed=0, progress=False, checkpoint_dir=tmp_path,
                     resume=True)
    assert result.resumed_from_epoch == 1 and resumed.initialised_with == []


def test_neural_models_start_from_the_training_data_in_a_fresh_run(data):
    """The trainer calls initialise: the per-type rates start at the data's (NHP's head biases move before
    any step), FullyNN's time scale is the training gaps' geometric mean."""
    from tpp.neural import NHP, FullyNN

    train, _, _ = data
    torch.manual_seed(0)
    nhp = NHP(3, 8)
    tpp.fit(nhp, train, epochs=1, batch_size=16, lr=1e-12, seed=0, progress=False)
    assert bool(nhp.rates_initialised)
    fully = FullyNN(3, 8)
    tpp.fit(fully, train, epochs=1, batch_size=16, lr=1e-12, seed=0, progress=False)
    gaps = train.inter_event_times[train.mask]
    assert float(fully.log_time_scale) == pytest.approx(float(torch.log(gaps[gaps > 0].double()).mean()), rel=1e-12)


def test_a_checkpoint_records_the_run_identity_and_the_run_leaves_no_lock(data, tmp_path):
    """Each checkpoint names its run (trainer settings, model class and settings, data fingerprints), so
    resume can tell another run's directory; the lock is gone once the run ends."""
    from tpp.train import _read_checkpoint

    train, val, _ = data
    tpp.fit(RMTPP(3, 8), train, val, epochs=1, batch_size=16, lr=2e-3, seed=0, progress=False, checkpoint_dir=tmp_path)
    identity = _read_checkpoint(tmp_path / "checkpoint.pt")["identity"]
    assert identity["trainer"]["lr"] == "0.002" and identity["trainer"]["batch_size"] == "16"
    assert identity["model"]["class"].endswith("RMTPP") and identity["model"]["args"]["hidden_size"] == "8"
    assert identity["data"]["sequences"] == len(train) and identity["val"]["events"] == val.num_events
    assert len(identity["hash"]) == 64 and not (tmp_path / ".lock").exists()
