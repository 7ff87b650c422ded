"""Published numbers beside ours (tpp.bench.published) and the papers' splits (tpp.bench.data)."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from ..conftest import needs_data
from tpp import datasets as registry
from tpp import table as model_table
from tpp.bench import data as bench_data
from tpp.bench import published as pub
from tpp.bench import scoring
from tpp.bench.config import LikelihoodConfig
from tpp.bench.likelihood import all_model_names, run_cell
from tpp.events import EventBatch
from tpp.hawkes import Poisson

PAPER = re.compile(r"[A-Z][a-z]+.*\b(19|20)\d\d\b")  # "Authors year"
TABLE = re.compile(r"[Tt]able|data file|[Ff]igure")  # where in the paper (or its data) the number is


def test_every_published_entry_names_registry_data_a_suite_model_a_finite_value_and_paper_and_table():
    names, models = {c.name for c in registry.list_datasets()}, set(all_model_names())
    assert pub.PUBLISHED, "at least the shipped ground truth is matched"
    for e in pub.PUBLISHED:
        assert e.dataset in names and e.model in models, e
        assert math.isfinite(e.value) and (e.std is None or e.std >= 0), e
        assert PAPER.search(e.source) and TABLE.search(e.source), e.source
        assert e.conversion.split(":")[0] in pub.CONVERSIONS, e.conversion
    keys = [(e.dataset, e.model) for e in pub.PUBLISHED]
    assert len(keys) == len(set(keys)), "one number per (dataset, model)"


def test_every_unmatched_entry_says_why_and_is_never_in_published():
    names, models = {c.name for c in registry.list_datasets()}, set(all_model_names())
    matched = {(e.dataset, e.model) for e in pub.PUBLISHED}
    for u in pub.UNMATCHED:
        assert u.dataset in names and u.model in models and u.reason, u
        assert PAPER.search(u.source) and TABLE.search(u.source), u.source
        assert (u.dataset, u.model) not in matched
    assert all(isinstance(u, pub.Published) for u in pub.UNMATCHED)  # same fields, plus the reason


def _poisson(seed: int = 0, n_seq: int = 40, rate: float = 2.5, horizon: float = 3.0):
    """Seeded homogeneous Poisson sequences and the closed-form log-likelihood of each (float64)."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(rate * horizon, n_seq)
    ll = counts * np.log(rate) - rate * horizon
    return counts, ll, rate, horizon


@pytest.mark.parametrize("kind", sorted(pub.CONVERSIONS))
def test_each_conversion_takes_a_papers_protocol_back_to_ours(kind):
    counts, ll, rate, horizon = _poisson()
    ours = ll.sum() / counts.sum()  # log-likelihood per event, survival included, the data's unit
    if kind == "nll_per_event":
        back = pub.convert(kind, -ours)
    elif kind == "ll_per_event":
        back = pub.convert(kind, ours)
    elif kind == "time_unit":
        c = 7.0  # the paper divides times by c: rate c * rate on a window horizon / c
        theirs = (counts * np.log(rate * c) - rate * c * horizon / c).sum() / counts.sum()
        assert theirs == pytest.approx(ours + math.log(c))
        back = pub.convert(kind, theirs, c=c)
    elif kind == "ll_per_sequence":
        back = pub.convert(kind, ll.mean(), mean_test_length=counts.mean())
    elif kind == "tritpp_nll":
        train_counts, _, _, _ = _poisson(seed=1, n_seq=60)
        l_train = train_counts.mean()
        theirs = np.mean(-ll / l_train)  # triangular-tpp: -(log_prob / d_train.mean_number_items).mean()
        back = pub.convert(kind, theirs, mean_train_length=l_train, mean_test_length=counts.mean())
    elif kind == "ifl_time_nll":
        # the intensity-free code reports the NLL of the times it scores: only the sign changes; the number sits
        # beside our ifl_time_ll_per_event column (see the test_ifl_time_score_* tests)
        back = pub.convert(kind, -ours)
    else:
        assert kind == "ground_truth"
        back = pub.convert(kind, ll.tolist(), num_events=int(counts.sum()))
    assert back == pytest.approx(ours, rel=1e-12)


def test_an_unknown_conversion_is_an_argument_error():
    with pytest.raises(ValueError, match="unknown conversion 'per_time'"):
        pub.convert("per_time", 1.0)


def test_results_csv_published_column_picks_the_entry_of_a_matching_cell_only():
    entry = pub.PUBLISHED[0]
    runs = pd.DataFrame([
        {"dataset": entry.dataset, "model": entry.model, "seed": 0, "status": "ok", "ll_per_event": -5.1,
         "test_events": entry.test_events},
        # the same pair on a cut test split (a quick run): no protocol matches
        {"dataset": entry.dataset, "model": entry.model, "seed": 1, "status": "ok", "ll_per_event": -5.2,
         "test_events": 160},
        {"dataset": entry.dataset, "model": "RMTPP", "seed": 0, "status": "ok", "ll_per_event": -5.3,
         "test_events": entry.test_events},
        {"dataset": "taxi", "model": entry.model, "seed": 0, "status": "error", "ll_per_event": None,
         "test_events": 3888},
    ])
    out = pub.results_frame(runs)
    assert list(out.columns) == list(pub.RESULTS_COLUMNS) and len(out) == 3
    assert out["published"].iloc[0] == entry.value and out["published_source"].iloc[0] == entry.source
    assert out["published"].iloc[1:].isna().all() and out["published_source"].iloc[1:].isna().all()
    assert pub.published_for(entry.dataset, entry.model) is entry  # without a test size: the pair alone


def test_notes_name_the_published_numbers_and_the_reasons_for_the_others():
    lines = pub.notes_lines(["anhp_synthetic", "taxi"])
    assert any(line.startswith("- published anhp_synthetic / Poisson: -5.004") for line in lines)
    assert any("TriTPP" in line and "taxi/IntensityFree" in line for line in lines)
    assert not any("wikipedia_ifl" in line for line in lines)


def _indexed(n: int) -> EventBatch:
    """n one-event sequences; sequence i's event at time i + 1, so a split's indices can be read back."""
    return EventBatch.from_flat(np.arange(1.0, n + 1), np.arange(n + 1), np.zeros(n), np.full(n, n + 2.0),
                                np.zeros(n, np.int64), 1, dtype=None)


def _ids(batch: EventBatch) -> list[int]:
    return [int(t) - 1 for t in batch.to_flat()["times"]]


def test_tritpp_split_is_contiguous_in_file_order_with_truncated_boundaries():
    train, val, test = bench_data.tritpp_split(_indexed(182))  # taxi's size: int(109.2), int(145.6)
    assert _ids(train) == list(range(109)) and _ids(val) == list(range(109, 145))
    assert _ids(test) == list(range(145, 182))
    with pytest.raises(ValueError, match="cannot cut 2 sequences"):
        bench_data.tritpp_split(_indexed(2))


def test_ifl_split_is_scikit_learns_train_test_split_after_np_random_seed_0():
    # indices from scikit-learn 1.9.1: np.random.seed(0); train_test_split(arange(n), train_size=0.6,
    # test_size=0.4); train_test_split(rest, train_size=0.5, test_size=0.5) -- as ifl-tpp's original code
    train, val, test = bench_data.ifl_split(_indexed(300), seed=0)
    assert (len(train), len(val), len(test)) == (180, 60, 60)
    assert _ids(test)[:5] == [71, 64, 238, 224, 153]
    assert sorted(_ids(train) + _ids(val) + _ids(test)) == list(range(300))
    _, _, test7 = bench_data.ifl_split(_indexed(7), seed=0)
    assert _ids(test7) == [1, 6]


@needs_data
def test_full_runs_use_the_papers_split_and_quick_runs_keep_the_registrys():
    full = bench_data.load_dataset("taxi", LikelihoodConfig.preset(quick=False))
    assert full.split == "tritpp" and (len(full.train), len(full.val), len(full.test)) == (109, 36, 37)
    assert full.test.num_events == 3888
    quick = bench_data.load_dataset("taxi", LikelihoodConfig.preset(quick=True))
    assert quick.split == "registry"
    mimic = bench_data.load_dataset("mimic2_rmtpp", LikelihoodConfig.preset(quick=False))
    assert mimic.split == "registry" and len(mimic.test) == 65  # RMTPP fold 1 is already the published split


@needs_data
def test_the_anhp_ground_truth_is_the_generating_poisson_on_our_window():
    # every type at rate 0.02 (K = 50): log-likelihood = N log 0.02 - 50 * 0.02 * (t_end - t_start) on our window
    test = registry.load("anhp_synthetic", "test")
    flat = test.to_flat()
    ours = (test.num_events * math.log(0.02) - 50 * 0.02 * (flat["t_end"] - flat["t_start"]).sum()) / test.num_events
    entry = pub.published_for("anhp_synthetic", "Poisson", test.num_events)
    assert entry is not None and entry.value == pytest.approx(ours, abs=1e-5)  # float32 times in the pickle


# --------------------------------------------------------------------------- IFL's score, TriTPP's counts
def _marked(seed: int = 0, K: int = 3, lengths=(1, 4, 7, 2), horizon: float = 5.0) -> EventBatch:
    """Seeded marked sequences on [0, horizon + 1], one of them a single event (IFL scores nothing of it)."""
    rng = np.random.default_rng(seed)
    times = [np.sort(rng.uniform(0.0, horizon, n)) for n in lengths]
    marks = [rng.integers(0, K, n) for n in lengths]
    return EventBatch.from_sequences(times, marks, t_start=0.0, t_end=horizon + 1.0, num_marks=K,
                                     dtype=torch.float64)


def test_ifl_windows_keep_sequences_of_two_events_on_start_to_last_event_and_their_first_event():
    batch = _marked()
    whole, first, scored = scoring.ifl_windows(batch)
    flat, w = batch.to_flat(), whole.to_flat()
    lengths = np.diff(flat["seq_offsets"])
    assert len(whole) == len(first) == 3 and scored == int((lengths[lengths >= 2] - 1).sum()) == 10
    last = flat["times"][flat["seq_offsets"][1:] - 1][lengths >= 2]
    assert np.array_equal(w["t_end"], last) and np.array_equal(first.to_flat()["t_end"],
                                                               flat["times"][flat["seq_offsets"][:-1]][lengths >= 2])
    assert first.num_events == 3 and whole.num_events == batch.num_events - 1


def test_ifl_time_score_of_a_marked_poisson_is_its_ground_density_of_times_two_to_n():
    # K = 3 rates r: tau_n ~ Exp(R), R = sum r, for n >= 2; the marks and the first event are not scored and
    # nothing after the last event is: sum_b (N_b - 1) log R - R (t_N - t_1) over sum_b (N_b - 1)
    batch = _marked()
    rates = np.array([0.5, 1.0, 1.5])
    value = scoring.test_ifl_time_log_likelihood(Poisson.from_params(rates), batch)
    flat = batch.to_flat()
    off, R = flat["seq_offsets"], rates.sum()
    num = den = 0.0
    for a, b in zip(off[:-1], off[1:]):
        if b - a >= 2:
            num += (b - a - 1) * math.log(R) - R * (flat["times"][b - 1] - flat["times"][a])
            den += b - a - 1
    assert value == pytest.approx(num / den, rel=1e-12)


def test_ifl_time_score_of_a_neural_model_equals_its_ground_intensity_and_compensator_from_the_first_event():
    # another path through the model: sum_{n>=2} log lambda(t_n) - (Lambda(t_N) - Lambda(t_1)), all types summed
    batch = _marked(seed=3)
    model = model_table.build("rmtpp", batch, seed=0, hidden_size=8).double().eval()
    value = scoring.test_ifl_time_log_likelihood(model, batch, num_points=64)
    with torch.no_grad():
        lam = model.intensity(batch, batch.time).sum(-1)
        cum = model.cumulative_intensity(batch, num_points=64).sum(-1)
    num = den = 0.0
    for b, n in enumerate(batch.lengths.tolist()):
        if n >= 2:
            num += float(torch.log(lam[b, 1:n]).sum() - (cum[b, n - 1] - cum[b, 0]))
            den += n - 1
    assert value == pytest.approx(num / den, rel=1e-9)
    full = scoring.test_log_likelihood(model, batch, num_points=64)
    assert abs(value - full) > 1e-3  # not the suite's test_ll_per_event: another quantity


def test_a_cell_on_an_ifl_data_set_records_the_ifl_score_in_data_units():
    batch = _marked(K=1, lengths=(5, 6, 3, 4, 8))
    data = bench_data.BenchData("yelp_toronto_ifl", batch, batch, batch, 2.0, "seconds", 1, "ifl")
    config = LikelihoodConfig.preset(quick=True, max_predictions=8, seeds=(0,))
    row = run_cell("Poisson", data, config, 0)
    model = Poisson.from_params(np.array([batch.num_events / float(batch.duration.sum())]))
    expected = scoring.test_ifl_time_log_likelihood(model, batch) - math.log(2.0)
    assert row["ifl_time_ll_per_event"] == pytest.approx(expected, rel=1e-9)
    other = run_cell("Poisson", bench_data.BenchData("taxi", batch, batch, batch, 2.0, "hours", 1), config, 0)
    assert "ifl_time_ll_per_event" not in other  # only the IFL data sets carry it


def test_an_entry_on_the_ifl_metric_is_set_beside_our_ifl_column_in_results_and_markdown(monkeypatch):
    entry = pub.Published(dataset="yelp_toronto_ifl", model="Poisson", value=-1.5, std=0.01,
                          source="Shchur, Bilos & Guennemann 2020 (intensity-free, ICLR), Table X",
                          conversion="ifl_time_nll: value = -reported", test_events=99,
                          metric="ifl_time_ll_per_event")
    monkeypatch.setattr(pub, "PUBLISHED", (entry,))
    runs = pd.DataFrame([
        {"dataset": "yelp_toronto_ifl", "model": "Poisson", "seed": s, "status": "ok", "ll_per_event": -3.0,
         "ifl_time_ll_per_event": v, "test_events": 99} for s, v in ((0, -1.4), (1, -1.6))])
    out = pub.results_frame(runs)
    assert list(out["published"]) == [-1.5, -1.5] and set(out["published_metric"]) == {"ifl_time_ll_per_event"}
    assert list(out["ifl_time_ll_per_event"]) == [-1.4, -1.6]
    line = pub.published_line(runs.iloc[0].to_dict())
    assert "published -1.5000 ± 0.010 (ifl_time_ll_per_event" in line and "ours -1.4000" in line
    table = pub.comparison_lines(runs)
    assert table[2].startswith("| yelp_toronto_ifl | Poisson | ifl_time_ll_per_event | -1.500 ± 0.141 (2 seeds) | "
                               "-1.500 ± 0.010 | +0.000 |")
    assert pub.published_line({**runs.iloc[0].to_dict(), "test_events": 50}) == ""  # a cut test split
    assert pub.comparison_lines(runs.assign(test_events=50)) == []


def test_tritpp_counts_an_event_at_the_window_start_or_end_as_padding_as_their_mask_does():
    batch = EventBatch.from_sequences([np.array([0.0, 1.0, 2.0]), np.array([0.5, 3.0])], t_start=0.0, t_end=3.0,
                                      dtype=torch.float64)
    assert pub.tritpp_event_count(batch) == 3  # t = 0 and t = t_max are not events to (times > 0) * (times != t_max)


@needs_data
def test_tritpp_factor_counts_yelp_airports_training_event_at_zero_out_as_theirs():
    train, _, test = bench_data.published_split("yelp_airport")
    assert (len(train), len(test)) == (191, 64)
    expected = ((train.num_events - 1) / 191) / (test.num_events / 64)  # train sequence 75 starts with t = 0
    assert pub.tritpp_factor("yelp_airport") == pytest.approx(expected, rel=1e-14)


def test_every_number_names_where_it_was_read_or_sought():
    # a published number is traceable: its paper's address (and the stored copies tried) or the data file it is in
    for e in pub.PUBLISHED + pub.UNMATCHED:
        assert re.search(r"https?://|data file", e.source), e.source


def test_an_unmatched_entry_without_a_value_says_why_no_number_was_read():
    # a NaN value is never silent: the table could not be read here, or the paper has no such number
    missing = re.compile(r"could not be read|no number read|no published log-likelihood")
    for u in pub.UNMATCHED:
        if math.isnan(u.value):
            assert missing.search(u.reason), (u.dataset, u.model, u.reason[:120])
