"""Downloaded originals are unpickled by restricted loaders: a pickle (or an ``.npz`` object array, or a legacy
``torch.save``) that names a function is refused with an :class:`EventDataError`, and the function never runs,
even though the file would pass its checksum once a card pointed at it. Plain data still loads, including
protocol-2 pickles of numpy arrays (their bytes travel through ``_codecs.encode``)."""

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tpp import sources
from tpp.events import EventDataError

MARKER = "tpp-adversarial-pickle-ran"


class _RunsCode:
    """Unpickling this calls ``os.mkdir(marker)``: proof that a loader ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _object_npz(path: Path, name: str, obj: object) -> None:
    """An ``.npz`` whose member ``name`` is an object array pickling ``obj``."""
    array = np.empty(1, dtype=object)
    array[0] = obj
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}.npy", buffer.getvalue())


@pytest.mark.parametrize("fmt", ["stpp-pkl", "ntpp-pkl", "ifl-tpp-npz", "triangular-tpp-pkl"])
def test_a_downloaded_pickle_never_runs_code(tmp_path, fmt):
    marker = tmp_path / MARKER
    path = tmp_path / "original.bin"
    evil = _RunsCode(marker)
    if fmt == "stpp-pkl":
        path.write_bytes(pickle.dumps([evil]))
    elif fmt == "ntpp-pkl":
        path.write_bytes(pickle.dumps({"arrival_times": [evil], "t_end": 10.0}, protocol=2))
    elif fmt == "ifl-tpp-npz":
        _object_npz(path, "arrival_times", evil)
    else:
        torch.save({"sequences": [{"arrival_times": evil}], "t_max": 10.0}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(EventDataError, match=str(path)):
        sources.convert(fmt, {fmt: path}, {"source": str(path)})
    assert not marker.exists(), "the loader ran code from the file"


def test_plain_data_pickles_still_load_under_every_protocol(tmp_path):
    seqs = [np.array([[0.5, 1.0, 2.0], [1.5, 3.0, 4.0]]), np.array([[0.25, 0.0, 0.0]])]
    for protocol in (2, 4, 5):
        path = tmp_path / f"stpp{protocol}.pkl"
        path.write_bytes(pickle.dumps(seqs, protocol=protocol))  # protocol 2: array bytes via _codecs.encode
        batch = sources.convert("stpp-pkl", {"stpp-pkl": path}, {"features": ["lon", "lat"], "t_end": 5.0})
        assert batch.num_events == 3
        np.testing.assert_array_equal(batch.to_flat()["times"], [0.5, 1.5, 0.25])
        path = tmp_path / f"ntpp{protocol}.pkl"
        path.write_bytes(pickle.dumps({"arrival_times": [np.array([1.0, 2.0]), np.array([])], "t_end": 3.0},
                                      protocol=protocol))
        assert sources.convert("ntpp-pkl", {"ntpp-pkl": path}, {}).num_events == 2


def test_an_object_npz_and_a_legacy_torch_save_of_numpy_arrays_still_load(tmp_path):
    path = tmp_path / "ifl.npz"
    times = np.empty(2, dtype=object)
    times[0], times[1] = np.array([0.5, 1.0]), np.array([2.0])
    marks = np.empty(2, dtype=object)
    marks[0], marks[1] = np.array([0, 1]), np.array([1])
    np.savez(path, arrival_times=times, marks=marks)
    batch = sources.convert("ifl-tpp-npz", {"ifl-tpp-npz": path}, {})
    np.testing.assert_array_equal(batch.to_flat()["times"], [0.5, 1.0, 2.0])
    np.testing.assert_array_equal(batch.to_flat()["marks"], [0, 1, 1])
    path = tmp_path / "legacy.pkl"
    torch.save({"sequences": [{"arrival_times": np.array([0.5, 1.5], np.float32)}], "t_max": 2.0}, path,
               _use_new_zipfile_serialization=False)
    batch = sources.convert("triangular-tpp-pkl", {"triangular-tpp-pkl": path}, {})
    np.testing.assert_array_equal(batch.to_flat()["times"], [0.5, 1.5])


def test_a_truncated_object_npz_is_a_data_error(tmp_path):
    path = tmp_path / "ifl.npz"
    times = np.empty(1, dtype=object)
    times[0] = np.array([0.5, 1.0])
    buffer = io.BytesIO()
    np.save(buffer, times, allow_pickle=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("arrival_times.npy", buffer.getvalue()[:-20])
    with pytest.raises(EventDataError, match="cannot read as .npz"):
        sources.convert("ifl-tpp-npz", {"ifl-tpp-npz": path}, {})
