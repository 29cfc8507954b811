"""`sentinel hpo`: a local Optuna search into a model directory, and the Katib Experiment as YAML."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from prompt_sentinel.cli import app
from prompt_sentinel.hpo.katib import validate_experiment
from prompt_sentinel.run_layout import TRAINING_REPORT
from tests.fixtures.tiny_bert import demo_frames

FAST = ["--set", "featurizer.kind=tfidf", "--set", "mlflow.enabled=false", "--set", "training.search.cv_folds=2"]


def test_local_search_resumes_from_its_storage_and_katib_renders(demo_csv: Path, tmp_path: Path) -> None:
    train, val = demo_frames(demo_csv, 40, 20)
    train.to_csv(tmp_path / "train.csv", index=False)
    val.to_csv(tmp_path / "val.csv", index=False)
    runner = CliRunner()
    storage = f"sqlite:///{tmp_path / 'hpo.db'}"
    base = ["hpo", "--model", "logreg", "--data", str(tmp_path / "train.csv"), "--val", str(tmp_path / "val.csv")]
    first = runner.invoke(app, [*base, "--out", str(tmp_path / "m1"), "--trials", "3", "--storage", storage, *FAST])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, [*base, "--out", str(tmp_path / "m2"), "--trials", "5", "--storage", storage, *FAST])
    assert second.exit_code == 0, second.output
    study = json.loads((tmp_path / "m2" / TRAINING_REPORT).read_text())["search"]["optuna"]
    assert study["resumed_from"] == 3 and study["new_trials"] == 2 and study["trials"] == 5

    out = tmp_path / "experiment.yaml"
    rendered = runner.invoke(app, [*base, "--katib", "--out", str(out), "--namespace", "ml", *FAST])
    assert rendered.exit_code == 0, rendered.output
    manifest = yaml.safe_load(out.read_text())
    validate_experiment(manifest)
    assert manifest["metadata"]["namespace"] == "ml"

    bad = runner.invoke(app, [*base, "--katib", "--objective", "accuracy", *FAST])
    assert bad.exit_code != 0 and "not reported by the trainer" in str(bad.exception)
    assert runner.invoke(app, [*base, "--submit", *FAST]).exit_code != 0  # --submit needs --katib
