"""The PyPOTS side of ``benchmarks/physionet.py``: runs INSIDE the scratch PyPOTS venv, one (task, model) per process.

It reads the npz that ``physionet.py`` writes (the patients on PyPOTS's hourly grid, see that script's docstring),
trains one PyPOTS model and writes a metrics JSON. The metric functions at the top need only numpy and scipy:
``physionet.py`` imports them too, so our models and PyPOTS's are scored by the same code.

npz fields (``S`` grid steps, ``C`` channels; values in the data's original units, NaN = not seen):

* ``X_train``, ``X_val``, ``X_test`` ``[N, S, C]``: what the model sees (held-out values already NaN in
  ``X_val`` / ``X_test``); ``X_val_ori``: the validation grid with its held-out values (PyPOTS's
  ``X_ori``: its validation metric is computed on the values in ``X_val_ori`` but not in ``X_val``);
* ``mean``, ``std`` ``[C]``: the training inputs' channel scale (the peer standardises with it and maps
  predictions back to the original units);
* imputation / forecast: ``score_patient``, ``score_step``, ``score_channel``, ``score_value`` ``[M]``: one entry per
  held-out observed value of the test patients (several values in one grid cell share that cell's prediction);
* classify: ``y_train``, ``y_val``, ``y_test``.

Usage (from ``physionet.py``; by hand for debugging)::

    <venv>/bin/python benchmarks/_pypots_peer.py --data task.npz --task interpolate --model saits --epochs 10 --out r.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# the peer runs single-threaded, like every process of the benchmarks (set before torch is imported)
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

IMPUTERS = ("saits", "brits", "grud", "csdi")
CLASSIFIERS = ("grud", "brits", "raindrop")
Z = {0.5: 0.6744897501960817, 0.9: 1.6448536269514722}  # central-interval half widths of N(0, 1)


# --------------------------------------------------------------------------- shared metrics (numpy + scipy only)
def value_metrics(truth: np.ndarray, mean: np.ndarray, std: np.ndarray | None = None,
                  samples: np.ndarray | None = None, unit: np.ndarray | None = None) -> dict[str, float]:
    """MSE and MAE of ``mean`` against ``truth`` ``[M]``; with ``unit [M]`` (each value's channel scale) also
    ``mse_std`` / ``mae_std``, the errors in those units (no channel dominates them); with a Gaussian
    ``std [M]`` or ``samples [S, M]`` the CRPS (closed form / the fair sample estimator
    ``E|X - y| - E|X - X'| / 2``) and the share of ``truth`` inside the central 50 % and 90 % intervals."""
    truth, mean = np.asarray(truth, np.float64), np.asarray(mean, np.float64)
    err = mean - truth
    out = {"mse": float(np.mean(err**2)), "mae": float(np.mean(np.abs(err))), "n_scored": int(truth.size)}
    if unit is not None:
        scaled = err / np.asarray(unit, np.float64)
        out["mse_std"], out["mae_std"] = float(np.mean(scaled**2)), float(np.mean(np.abs(scaled)))
    if samples is not None and samples.shape[0] > 1:
        s = np.asarray(samples, np.float64)
        n = s.shape[0]  # the fair estimator: E|X - X'| over pairs of distinct samples
        spread = np.sum([np.sum(np.abs(s - s[k]), 0) for k in range(n)], 0) / (n * (n - 1))
        out["crps"] = float(np.mean(np.mean(np.abs(s - truth), 0) - 0.5 * spread))
        for level in Z:
            lo, hi = np.quantile(s, [(1 - level) / 2, (1 + level) / 2], axis=0)
            out[f"coverage_{round(100 * level)}"] = float(np.mean((truth >= lo) & (truth <= hi)))
    elif std is not None:
        from scipy.special import ndtr

        sd = np.maximum(np.asarray(std, np.float64), 1e-12)
        z = err / sd
        out["crps"] = float(np.mean(sd * (z * (2 * ndtr(z) - 1) + 2 * np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
                                          - 1 / math.sqrt(math.pi))))
        for level, half in Z.items():
            out[f"coverage_{round(100 * level)}"] = float(np.mean(np.abs(z) <= half))
    return out


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN when one class is absent."""
    y, score = np.asarray(y).astype(bool), np.asarray(score, np.float64)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(score.size)
    sorted_scores = score[order]
    i = 0
    while i < score.size:  # average ranks over ties
        j = i
        while j + 1 < score.size and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def auprc(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision (scikit-learn's definition: sum over distinct thresholds of recall gain x precision)."""
    y, score = np.asarray(y).astype(bool), np.asarray(score, np.float64)
    if not y.any():
        return float("nan")
    order = np.argsort(-score, kind="mergesort")
    y_sorted, s_sorted = y[order], score[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), y.size - 1]  # last index of each distinct score
    tp = np.cumsum(y_sorted)[last]
    precision = tp / (last + 1)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB: ``VmHWM`` of /proc/self/status (Linux keeps ``ru_maxrss``
    across exec, so a child would report at least its parent's peak), else ``ru_maxrss`` (KiB on Linux)."""
    with contextlib.suppress(OSError):  # not Linux: fall back to ru_maxrss
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- the models
def build(model: str, task: str, steps: int, channels: int, epochs: int, batch_size: int, patience: int,
          size: str) -> Any:
    """A PyPOTS model with the sizes of ``size`` (``small``: CPU-sized; ``paper``: TSI-Bench's PhysioNet sizes)."""
    # PyPOTS wants patience < epochs; without early stopping it still keeps its best validation epoch
    common = dict(n_steps=steps, n_features=channels, batch_size=batch_size, epochs=epochs,
                  patience=patience if patience < epochs else None,
                  device="cpu", saving_path=None, verbose=True)
    small = size == "small"
    if task == "classify":
        from pypots.classification import BRITS, GRUD, Raindrop

        if model == "grud":
            return GRUD(n_classes=2, rnn_hidden_size=64 if small else 128, **common)
        if model == "brits":
            return BRITS(n_classes=2, rnn_hidden_size=64 if small else 128, **common)
        if model == "raindrop":
            try:  # Raindrop's graph layers need torch_geometric, torch_scatter and torch_sparse (no CPU wheels on PyPI)
                import torch_geometric  # noqa: F401
                import torch_scatter  # noqa: F401
                import torch_sparse  # noqa: F401
            except ImportError as exc:
                raise SystemExit(f"Raindrop skipped: {exc.name} is not installed in the PyPOTS venv (torch_scatter and "
                                 "torch_sparse have no wheels for torch 2.13 on PyPI; build them from source to run it)")
            return Raindrop(n_classes=2, n_layers=2, d_model=channels * 2, n_heads=2, d_ffn=64 if small else 256,
                            dropout=0.3, **common)
        raise SystemExit(f"no PyPOTS classifier {model!r}; choose from {CLASSIFIERS}")
    from pypots.imputation import BRITS, CSDI, GRUD, SAITS

    if model == "saits":
        return SAITS(n_layers=2, d_model=64 if small else 256, n_heads=4, d_k=16 if small else 64,
                     d_v=16 if small else 64, d_ffn=128, dropout=0.1, **common)
    if model == "brits":
        return BRITS(rnn_hidden_size=64 if small else 128, **common)
    if model == "grud":
        return GRUD(rnn_hidden_size=64 if small else 128, **common)
    if model == "csdi":
        return CSDI(n_layers=2 if small else 4, n_heads=4 if small else 8, n_channels=32 if small else 64,
                    d_time_embedding=64 if small else 128, d_feature_embedding=16,
                    d_diffusion_embedding=64 if small else 128, n_diffusion_steps=50, **common)
    raise SystemExit(f"no PyPOTS imputer {model!r}; choose from {IMPUTERS}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from pypots.utils.random import set_random_seed

    set_random_seed(args.seed)
    data = dict(np.load(args.data, allow_pickle=False))
    mean, std = data["mean"], data["std"]

    def standard(x: np.ndarray) -> np.ndarray:
        return ((x - mean) / std).astype(np.float32)

    steps, channels = data["X_train"].shape[1:]
    net = build(args.model, args.task, steps, channels, args.epochs, args.batch_size, args.patience, args.size)
    result: dict[str, Any] = {"model": args.model, "task": args.task, "epochs": args.epochs, "size": args.size,
                              "batch_size": args.batch_size, "n_train": int(data["X_train"].shape[0]),
                              "n_val": int(data["X_val"].shape[0]), "n_test": int(data["X_test"].shape[0]),
                              "parameters": int(sum(p.numel() for p in net.model.parameters()))}
    if args.task == "classify":
        train = {"X": standard(data["X_train"]), "y": data["y_train"].astype(np.int64)}
        val = {"X": standard(data["X_val"]), "y": data["y_val"].astype(np.int64)}
    else:
        train = {"X": standard(data["X_train"])}
        val = {"X": standard(data["X_val"]), "X_ori": standard(data["X_val_ori"])}
    started = time.perf_counter()
    net.fit(train, val)
    result["train_seconds"] = time.perf_counter() - started
    result["best_epoch"] = int(getattr(net, "best_epoch", -1))
    started = time.perf_counter()
    test = {"X": standard(data["X_test"])}
    if args.task == "classify":
        proba = np.asarray(net.predict(test)["classification_proba"])
        y = data["y_test"]
        result.update(test_auroc=auroc(y, proba[:, 1]), test_auprc=auprc(y, proba[:, 1]),
                      test_accuracy=float(np.mean(proba.argmax(1) == y)), n_scored=int(y.size))
    else:
        kwargs = {"n_sampling_times": args.samples} if args.model == "csdi" else {}
        imputed = np.asarray(net.predict(test, **kwargs)["imputation"], np.float64)
        where = (data["score_patient"], data["score_step"], data["score_channel"])
        c = data["score_channel"]
        if imputed.ndim == 4:  # CSDI: [N, samples, S, C] -> samples of every scored value, original units
            draws = imputed[where[0], :, where[1], where[2]].T * std[c] + mean[c]  # [samples, M]
            scores = value_metrics(data["score_value"], draws.mean(0), samples=draws, unit=std[c])
        else:
            scores = value_metrics(data["score_value"], imputed[where] * std[c] + mean[c], unit=std[c])
        result.update({f"test_{k}" if k != "n_scored" else k: v for k, v in scores.items()})
    result["predict_seconds"] = time.perf_counter() - started
    result["peak_rss_mb"] = peak_rss_mb()
    result["torch_threads"] = torch.get_num_threads()
    import pypots

    result["pypots"] = pypots.__version__
    result["torch"] = torch.__version__
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--task", choices=("interpolate", "forecast", "classify"), required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", choices=("small", "paper"), default="small")
    parser.add_argument("--samples", type=int, default=10, help="CSDI: predictive samples per value.")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    result = run(args)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, args.out)  # atomic: the caller never reads half a file
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
