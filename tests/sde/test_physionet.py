"""The Latent ODE protocol on PhysioNet 2012 (sde.physionet): preprocessing as the paper's code does it, the
seeded split, the two tasks' masks, and the paper's MSE. On the 200-record archive of set A."""

from __future__ import annotations

import math
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from sde.physionet import (
    DESCRIPTORS,
    PAPER_VARIABLES,
    Descriptors,
    exact_times_protocol,
    extrapolation_task,
    interpolation_task,
    latent_ode_protocol,
    load_protocol,
    paper_split,
    protocol_mse,
    quantise_hours,
    read_descriptors,
)
from sde.series import SeriesBatch, SeriesDataError

from ..conftest import SHARED_DATA, needs_data

pytestmark = needs_data  # every test reads the staged archives


@pytest.fixture(scope="module")
def archive() -> Path:
    path = Path(SHARED_DATA or ".") / "physionet2012" / "set-a_first200.tar.gz"
    assert path.is_file(), f"{path} is not staged"
    return path


@pytest.fixture(scope="module")
def batch(archive: Path) -> SeriesBatch:
    from sde.datasets import load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load("physionet2012_first200")


@pytest.fixture(scope="module")
def descriptors(archive: Path) -> Descriptors:
    return read_descriptors(archive)


@pytest.fixture(scope="module")
def protocol(batch: SeriesBatch, descriptors: Descriptors):
    return latent_ode_protocol(batch, descriptors=descriptors)


def _code_bins(archive: Path, q: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The paper code's parse rule, written out from its description (physionet.py:151-200): the lines of a
    record in file order, t = HH + MM/60 rounded to round(t/q)*q, a new row when the rounded time changes,
    each variable the mean of its lines in the row, -1 kept as a value; every record starts with a row at 0."""
    out = {}
    with tarfile.open(archive) as tf:
        for member in tf.getmembers():
            if not member.name.endswith(".txt"):
                continue
            bins: list[float] = [0.0]
            sums: list[dict[str, list[float]]] = [{}]
            for line in tf.extractfile(member).read().decode().splitlines()[1:]:
                stamp, name, value = line.split(",")
                hh, mm = stamp.split(":")
                t = round((float(hh) + float(mm) / 60.0) / q) * q
                if t != bins[-1]:
                    bins.append(t)
                    sums.append({})
                if name != "RecordID":
                    sums[-1].setdefault(name, []).append(float(value))
            values = np.full((len(bins), len(PAPER_VARIABLES)), np.nan)
            for r, cell in enumerate(sums):
                for name, seen in cell.items():
                    values[r, PAPER_VARIABLES.index(name)] = sum(seen) / len(seen)
            out[Path(member.name).stem] = (np.array(bins), values)
    return out


# --------------------------------------------------------------------------- quantisation
def test_quantisation_rounds_half_to_even_with_the_codes_float_operations() -> None:
    hours = np.array([0, 3, 9, 15, 21, 45, 2880]) / 60.0
    # 3 min = 0.05 h -> 0.5 -> 0 (half to even); 9 min: 0.15/0.1 = 1.4999... -> 1; 15 min: 2.5 -> 2;
    # 21 min: 0.35/0.1 = 3.4999... -> 3 (the float quotient, not the decimal 3.5, decides)
    assert quantise_hours(hours, 0.1) == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3, 0.8, 48.0], abs=1e-12)
    minutes = np.arange(0, 48 * 60 + 1)
    for q in (0.1, 0.016, 1.0):
        expected = [round((m // 60 + (m % 60) / 60.0) / q) * q for m in minutes.tolist()]
        assert np.array_equal(quantise_hours(minutes / 60.0, q), np.array(expected))
    with pytest.raises(ValueError, match="quantization"):
        quantise_hours(hours, 0.0)


def test_protocol_times_lie_on_the_grid_and_rows_match_the_codes_parse(protocol, batch, descriptors,
                                                                        archive: Path) -> None:
    assert protocol.time_scale == 48.0 and protocol.quantization == 0.1
    for part in (protocol.train, protocol.test):
        steps = part.time[part.mask] * protocol.time_scale / 0.1
        assert torch.allclose(steps, steps.round(), atol=1e-9)
        assert float(part.time[part.mask].max()) <= 1.0
    hours_protocol = latent_ode_protocol(batch, descriptors=descriptors, normalise_time=False)
    assert torch.allclose(hours_protocol.test.time / 48.0, protocol.test.time)
    reference = _code_bins(archive, 0.1)
    compared = 0
    for part in (hours_protocol.train, hours_protocol.test):
        hours = part.time
        raw = hours_protocol.denormalise(part.values)
        for i, rid in enumerate(part.ids):
            times, values = reference[rid]
            n = int(part.mask[i].sum())
            assert np.array_equal(hours[i, :n].numpy(), times), rid
            ours = raw[i, :n].numpy()
            assert np.array_equal(np.isnan(ours), np.isnan(values)), rid
            assert np.allclose(ours[~np.isnan(ours)], values[~np.isnan(values)], rtol=1e-9, atol=1e-9), rid
            compared += 1
    assert compared == 200


def test_the_codes_41_variables_keep_descriptors_and_minus_one_codes(protocol, descriptors: Descriptors) -> None:
    assert protocol.variables == PAPER_VARIABLES and len(PAPER_VARIABLES) == 41
    assert protocol.train.channel_names == PAPER_VARIABLES
    height = PAPER_VARIABLES.index("Height")
    assert protocol.data_min[height] == -1.0  # "Height,-1" is a value in the code, not a gap
    first = protocol.denormalise(protocol.train.values[:, 0])[:, : len(DESCRIPTORS)]
    expected, _ = descriptors.lookup(list(protocol.train.ids))
    assert np.allclose(first.numpy(), expected)
    with pytest.raises(SeriesDataError, match="no descriptors"):
        Descriptors(("1",), np.zeros((1, 4)), np.zeros(1, bool)).lookup(["132539"])


def test_without_descriptors_the_protocol_warns_and_keeps_37_variables(batch: SeriesBatch) -> None:
    with pytest.warns(UserWarning, match="37 variables"):
        p = latent_ode_protocol(batch)
    assert p.variables == PAPER_VARIABLES[len(DESCRIPTORS):] and p.notes


# --------------------------------------------------------------------------- normalisation
def test_paper_normalisation_is_minus_min_over_max_on_all_stays(protocol) -> None:
    values = torch.cat([protocol.train.values[protocol.train.mask], protocol.test.values[protocol.test.mask]])
    raw = protocol.denormalise(values)
    lo = np.nanmin(raw.numpy(), 0)
    hi = np.nanmax(raw.numpy(), 0)
    assert np.allclose(lo, protocol.data_min) and np.allclose(hi, protocol.data_max)  # over train AND test
    divisor = np.where(hi == 0, 1.0, hi)
    assert np.allclose(values.numpy(), (raw.numpy() - lo) / divisor, equal_nan=True)
    assert np.allclose(np.nanmin(values.numpy(), 0), 0.0)
    nonneg = lo >= 0
    assert np.nanmax(values.numpy()[:, nonneg]) <= 1.0 + 1e-12
    # a variable with a negative minimum (the -1 codes) goes past 1, as in the code
    assert np.nanmax(values.numpy()[:, ~nonneg]) > 1.0


def test_minmax_on_train_puts_train_values_in_unit_interval(batch: SeriesBatch, descriptors: Descriptors) -> None:
    p = latent_ode_protocol(batch, descriptors=descriptors, normalisation="minmax-train")
    train = p.train.values[p.train.mask].numpy()
    assert np.nanmin(train) >= 0.0 and np.nanmax(train) <= 1.0 + 1e-12
    spread = np.nanmax(train, 0) > np.nanmin(train, 0)
    assert np.allclose(np.nanmin(train, 0)[spread], 0.0) and np.allclose(np.nanmax(train, 0)[spread], 1.0)
    raw_train = p.denormalise(p.train.values[p.train.mask]).numpy()
    assert np.allclose(np.nanmin(raw_train, 0), p.data_min, equal_nan=True)  # the statistics are the train part's
    with pytest.raises(ValueError, match="normalisation"):
        latent_ode_protocol(batch, descriptors=descriptors, normalisation="z")


# --------------------------------------------------------------------------- split
def test_split_is_sklearns_seeded_shuffle_split_disjoint_and_complete(protocol, batch: SeriesBatch) -> None:
    train, test = paper_split(200, seed=42)
    assert len(train) == 160 and len(test) == 40
    permutation = np.random.RandomState(42).permutation(200)
    assert np.array_equal(test, permutation[:40]) and np.array_equal(train, permutation[40:])
    assert not set(train) & set(test) and set(train) | set(test) == set(range(200))
    assert np.array_equal(protocol.train_index, train) and np.array_equal(protocol.test_index, test)
    assert protocol.test.ids == tuple(batch.ids[i] for i in test)
    again, _ = paper_split(200, seed=42)
    other, _ = paper_split(200, seed=0)
    assert np.array_equal(again, train) and not np.array_equal(other, train)
    n_train, n_test = (len(x) for x in paper_split(8000))
    assert (n_train, n_test) == (6400, 1600)
    assert len(paper_split(7, train_fraction=0.8)[1]) == 7 - math.floor(0.8 * 7)


# --------------------------------------------------------------------------- tasks
def test_extrapolation_inputs_hold_no_value_after_the_cut(protocol) -> None:
    part = protocol.test
    for cut in (None, 0.5):
        data = extrapolation_task(part, cut=cut, train=True)
        c = float(data.masks["cut"])
        if cut is None:  # the code's rule: the first half of the part's distinct times are observed
            grid = torch.unique(part.time[part.mask])
            assert c == float(grid[grid.numel() // 2])
        late = part.mask & (part.time >= c)
        assert not (~torch.isnan(data.inputs.values) & late[..., None]).any()
        assert torch.equal(data.scored, part.observed & late[..., None])
        early = part.mask & (part.time < c)
        assert torch.equal(~torch.isnan(data.inputs.values) & early[..., None], part.observed & early[..., None])
        assert torch.equal(~torch.isnan(data.inputs.targets), data.scored)
        assert torch.equal(data.inputs.time, part.time)  # later rows stay, to be asked for
    assert float(extrapolation_task(part, cut=0.5, train=True).masks["cut"]) * protocol.time_scale == 24.0


def test_interpolation_scores_every_observed_value_and_subsamples_rows(protocol) -> None:
    part = protocol.test
    full = interpolation_task(part, train=True)
    assert torch.equal(full.scored, part.observed) and not full.masks["held_out"].any()
    data = interpolation_task(part, sample_tp=0.5, seed=3, train=True)
    rows = part.observed.any(-1)
    kept = data.masks["input_rows"]
    assert torch.equal(kept.sum(1), (rows.sum(1) * 0.5).floor().long())  # int(n * p) rows per stay
    assert not (kept & ~rows).any()
    held = data.masks["held_out"]
    assert torch.equal(held, part.observed & ~kept[..., None])
    assert torch.isnan(data.inputs.values[held]).all()  # a held-out value never reaches the input
    assert torch.equal(data.scored, part.observed)  # the code scores seen and unseen values alike
    assert torch.equal(interpolation_task(part, sample_tp=0.5, seed=3, scale=full.scale).masks["input_rows"], kept)
    with pytest.raises(ValueError, match="sample_tp"):
        interpolation_task(part, sample_tp=1.5, train=True)


def test_tasks_standardise_targets_with_the_training_parts_scale_and_go_through_evaluate(protocol) -> None:
    from sde.models import Task
    from sde.models.baselines import GRUTime
    from sde.tasks import evaluate, predictive

    train = extrapolation_task(protocol.train, cut=0.5, train=True)
    with pytest.raises(ValueError, match="training part's scale"):
        extrapolation_task(protocol.test, cut=0.5)
    test = extrapolation_task(protocol.test, cut=0.5, scale=train.scale)
    mean, std = train.scale.tensors(protocol.test.values)
    assert torch.allclose(test.inputs.targets[test.scored], ((protocol.test.values - mean) / std)[test.scored])
    torch.manual_seed(0)
    model = GRUTime(len(protocol.variables), 8, len(protocol.variables), Task.FORECAST)
    model.fit(train.inputs, epochs=1)
    scores = evaluate(model, test, seed=0)
    pred, _ = predictive(model, test.inputs, test.scale)
    by_hand = float(((pred - protocol.test.values)[test.scored] ** 2).mean())
    assert scores["test_mse"] == pytest.approx(by_hand, rel=1e-6)  # the model computes in float32
    assert 0.0 < protocol_mse(pred, protocol.test.values, test.scored) < scores["test_mse"]


def test_exact_times_protocol_keeps_minute_times_and_the_same_split(batch, descriptors, protocol) -> None:
    ours = exact_times_protocol(batch, descriptors=descriptors)
    assert ours.quantization is None and ours.time_scale == 1.0 and ours.normalisation == "minmax-train"
    assert np.array_equal(ours.test_index, protocol.test_index)
    assert int(ours.test.mask.sum()) >= int(protocol.test.mask.sum())  # no bins merge rows
    b = batch.ids.index(ours.test.ids[0])
    n = int(batch.mask[b].sum())
    assert torch.equal(ours.test.time[0, :n], batch.time[b, :n])


# --------------------------------------------------------------------------- the metric
def test_protocol_mse_equals_a_hand_computation() -> None:
    truth = torch.tensor([[[1.0, 0.0], [3.0, float("nan")], [0.0, 0.0]]])  # B=1, L=3, C=2
    mask = torch.tensor([[[True, False], [True, False], [False, False]]])  # channel 1: no scored point
    pred = torch.tensor([[[2.0, 9.0], [1.0, 9.0], [7.0, 7.0]]])
    # channel 0: ((2-1)^2 + (1-3)^2) / 2 = 2.5; channel 1: 0 (no point); mean over channels: 1.25
    assert protocol_mse(pred, truth, mask) == pytest.approx(1.25)
    # two samples: the mean of each sample's MSE (1.25 and 0), not the MSE of the samples' mean (0.3125)
    samples = torch.stack([pred, torch.where(torch.isnan(truth), 0.0, truth)])
    assert protocol_mse(samples, truth, mask) == pytest.approx(0.625)
    # a second stay with nothing scored counts as 0 too
    two = protocol_mse(torch.cat([pred, pred]), torch.cat([truth, truth]), torch.cat([mask, torch.zeros_like(mask)]))
    assert two == pytest.approx(0.625)
    with pytest.raises(ValueError, match="pred must be"):
        protocol_mse(pred[0], truth, mask)
    with pytest.raises(ValueError, match="NaN"):
        protocol_mse(torch.full_like(pred, float("nan")), truth, mask)


def test_load_protocol_reads_the_registered_archives_and_their_descriptors(protocol) -> None:
    loaded = load_protocol(["physionet2012_first200"])
    assert loaded.test == protocol.test and loaded.train == protocol.train
    exact = load_protocol(["physionet2012_first200"], exact_times=True)
    assert exact.quantization is None and exact.variables == protocol.variables
