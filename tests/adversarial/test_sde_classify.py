"""``sde fit --task classify`` with a latent model that has its own classifier (issue 14).

The Latent ODE classifies with its joint classifier on ``z0`` (``LatentODE(..., num_classes=K)``, trained with
its ELBO, as Rubanova et al. 2019 do on PhysioNet), declared in :data:`sde.table.JOINT_CLASSIFIERS`; before,
the CLI sent it through the generative classifier (one Latent ODE per class, Bayes' rule).
"""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from sde.cli import app

from ..conftest import needs_data

runner = CliRunner()


@needs_data
def test_latent_ode_classifies_with_its_own_joint_classifier(tmp_path):
    from sde.datasets import load
    from sde.models import GenerativeClassifier, LatentODE
    from tpp import table

    res = runner.invoke(app, ["fit", "--model", "latent-ode", "--data", "basicmotions", "--task", "classify",
                              "--epochs", "1", "--hidden-size", "8", "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    fit = json.loads(res.stdout)
    assert 0.0 <= fit["test_accuracy"] <= 1.0 and fit["model"] == "latent-ode"
    saved = table.load(tmp_path / "model.pt")
    assert isinstance(saved, LatentODE) and not isinstance(saved, GenerativeClassifier)
    classes = load("basicmotions", "train").num_classes
    assert saved.num_classes == classes == 4 and saved.classifier is not None
    # joint training reached the classifier: its weights moved from the seeded start the CLI built
    start = table.build("latent-ode", load("basicmotions", "train"), seed=0, num_classes=classes, hidden_size=8)
    moved = [not torch.equal(a, b) for a, b in zip(saved.classifier.parameters(), start.classifier.parameters())]
    assert any(moved)
    # eval of the saved run: the same classifier, the same numbers
    ev = runner.invoke(app, ["eval", "--model-file", str(tmp_path), "--data", "basicmotions", "--task", "classify",
                             "--json"])
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.stdout)["test_accuracy"] == fit["test_accuracy"]
