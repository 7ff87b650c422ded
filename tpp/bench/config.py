"""Settings of the likelihood suite: :class:`LikelihoodConfig` (full and quick presets), the datasets it
runs on by default and the fine integrator it scores with."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

__all__ = ["LikelihoodConfig", "DATASETS", "EVAL_POINTS"]

#: Gauss-Legendre nodes per inter-event interval when scoring test data: fine enough that no grid decides the
#: ranking (EasyTPP's 20-point linspace lets models exploit the grid; see /work/shared/PEERS.md).
EVAL_POINTS = 64
#: the registry's event datasets the suite runs on by default
DATASETS = (
    "taxi",
    "twitter",
    "yelp_airport",
    "pubg",
    "reddit_askscience_comments",
    "wikipedia_ifl",
    "mimic2_rmtpp",
    "stackoverflow_rmtpp_subset",
    "bookorder_rmtpp",
    "earthquakes_japan",
    "yelp_mississauga",
    "yelp_toronto_ifl",
    "anhp_synthetic",
)


#: settings that do not change how a cell is computed, so cells run with other values still count
_NOT_IN_KEY = frozenset({"seeds", "max_quadrature_marks"})


@dataclass(frozen=True)
class LikelihoodConfig:
    """Settings of the likelihood suite. Two runs reuse each other's cells only when all fields but ``seeds`` agree."""

    quick: bool = False
    seeds: tuple[int, ...] = (0, 1, 2)
    #: the cap on epochs; early stopping on validation (``patience`` epochs without a better value) ends most runs
    #: first. 30 was too few: at 3e5 events/s RMTPP still improved at its last epoch on taxi and earthquakes.
    epochs: int = 100
    patience: int = 10
    batch_size: int = 32
    lr: float = 3e-3
    hidden_size: int = 32
    max_train_sequences: int | None = None
    max_eval_sequences: int | None = None
    max_events: int | None = None
    max_predictions: int = 1000
    rescale: bool = True
    max_hawkes_marks: int = 100
    #: neural models that integrate every type's intensity at every node
    #: (:meth:`tpp.neural.base.NeuralTPP.integrates_every_type`: NHP, THP, SAHP, AttNHP) are skipped above this many
    #: types in full runs. A threshold that decides which cells run, not how one runs: not in :meth:`key`.
    max_quadrature_marks: int = 1000
    #: above 1000 types (wikipedia, 8227) in quick mode: (sequences per split, events per sequence, forecasts);
    #: every intensity model evaluates all per-type intensities at every node, so cost ~ events x nodes x K
    quick_many_types: tuple[int, int, int] = (8, 16, 8)
    eval_points: int = EVAL_POINTS
    #: "published": full runs use the paper's split where one is reproduced (tpp.bench.data.PUBLISHED_SPLITS);
    #: "registry": the registry's splits always. Part of :meth:`key`, so cells of the two never mix.
    split: str = "published"

    @classmethod
    def preset(cls, quick: bool = False, **overrides: Any) -> LikelihoodConfig:
        """The full setting (3 seeds, at most 100 epochs with patience 10, whole datasets) or ``quick`` (3 seeds, 5 epochs, at most
        64/32/32 train/val/test sequences cut to 64 events, 100 forecasts); ``overrides`` that are not None win."""
        base = cls(quick=True, seeds=(0, 1, 2), epochs=5, patience=5, batch_size=16, lr=1e-2, max_train_sequences=64,
                   max_eval_sequences=32, max_events=64, max_predictions=100) if quick else cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown benchmark settings {unknown}; known: {sorted(known)}")
        chosen = {k: v for k, v in overrides.items() if v is not None}
        if "seeds" in chosen:
            chosen["seeds"] = tuple(int(s) for s in chosen["seeds"])
        config = replace(base, **chosen)
        config.validate()
        return config

    def validate(self) -> None:
        if not self.seeds:
            raise ValueError("at least one seed is needed")
        for name in ("epochs", "patience", "batch_size", "hidden_size", "max_predictions", "eval_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.split not in ("published", "registry"):
            raise ValueError(f"split must be 'published' or 'registry', got {self.split!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    def key(self) -> str:
        """Ten hex digits naming everything that makes two runs of one cell comparable (all but the seeds)."""
        values = {k: v for k, v in asdict(self).items() if k not in _NOT_IN_KEY}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]

    def describe(self) -> str:
        """One paragraph for the Markdown output."""
        mode = "quick" if self.quick else "full"
        text = (f"Mode **{mode}**: seeds {list(self.seeds)}, at most {self.epochs} epochs (early stopping on validation "
                f"after {self.patience} epochs without a better value), batch "
                f"{self.batch_size}, lr {self.lr:g}, hidden size {self.hidden_size}; at most "
                f"{self.max_train_sequences or 'all'} train / {self.max_eval_sequences or 'all'} val and test sequences, "
                f"each cut to {self.max_events or 'all'} events; {self.max_predictions} forecasts per test split")
        if self.quick:
            n, L, f = self.quick_many_types
            text += f" (datasets with over 1000 types: {n} sequences of {L} events per split, {f} forecasts)"
        if not self.quick:
            text += ("; splits: the papers' where reproduced (TriTPP's file-order 60/20/20, IFL's seeded "
                     "scikit-learn split)" if self.split == "published" else "; splits: the registry's")
        text += (f". Log-likelihood per event (nats, higher is better) by our integrator with {self.eval_points} "
                 "Gauss-Legendre nodes per inter-event interval (closed forms where a model has one), survival term "
                 "to each window's end included; ")
        text += ("times divided by the training split's mean gap for fitting, numbers reported back in the data's "
                 "units. " if self.rescale else "times in the data's units. ")
        return text + "Cells: mean ± std over seeds. Accuracy is '-' for single-type datasets (1 by construction)."

