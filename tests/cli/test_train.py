"""`sentinel train` through the real Typer app and the real entry point."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from sklearn.model_selection import train_test_split
from typer.testing import CliRunner

from prompt_sentinel.cli import app, main
from prompt_sentinel.models.loading import load_model

runner = CliRunner()
FAST = [
    "--set",
    "mlflow.enabled=false",
    "--set",
    "training.search.n_iter=1",
    "--set",
    "training.search.cv_folds=2",
]


@pytest.fixture(scope="module")
def demo_files(demo_csv: Path, tmp_path_factory) -> tuple[str, str]:
    df = pd.read_csv(demo_csv)
    train, val = train_test_split(df, test_size=0.25, stratify=df["label"], random_state=0)
    root = tmp_path_factory.mktemp("cli-data")
    train.to_csv(root / "train.csv", index=False)
    val.to_csv(root / "val.csv", index=False)
    return str(root / "train.csv"), str(root / "val.csv")


def _run_main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run the installed entry point (``sentinel``) in-process; returns (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["sentinel", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return int(exc.value.code or 0), capsys.readouterr().err


def test_train_logreg_writes_a_loadable_model(demo_files, tmp_path):
    train, val = demo_files
    out = tmp_path / "logreg"
    result = runner.invoke(
        app,
        [
            "train",
            "--model",
            "logreg",
            "--data",
            train,
            "--val",
            val,
            "--out",
            str(out),
            "--no-progress",
            "--featurizer",
            "tfidf",
            *FAST,
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "trained logreg" in result.output
    assert "val custom_score" in result.output
    assert f"model written to {out}" in result.output
    model = load_model(out)
    assert model.descriptor.model_type == "logreg"
    training = json.loads((out / "training.json").read_text())
    assert training["search"]["cv_folds"] == 2  # --set reached the trainer
    assert training["validation"]["rows"] == len(pd.read_csv(val))


def test_featurizer_option_reaches_the_trainer(demo_files, tmp_path, monkeypatch, capsys):
    train, _ = demo_files
    out = tmp_path / "m"
    args = ["train", "--model", "logreg", "--data", train, "--out", str(out), "--no-progress", *FAST]
    code, err = _run_main(monkeypatch, capsys, *args, "--featurizer", "tfidf")
    assert code == 0, err
    # the default featurizer is `combined`; the option must override it
    assert load_model(out).descriptor.featurizer == "tfidf"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "xgboost"], "--model 'xgboost' is not a known model"),
        (["--model", "logreg", "--featurizer", "bag-of-words"], "--featurizer 'bag-of-words'; allowed"),
        (["--model", "logreg", "--base-model", "bundled:all-MiniLM-L6-v2"], "--base-model only applies"),
        (["--model", "logreg", "--set", "training.search.cv_folds=1"], "training.search.cv_folds"),
    ],
)
def test_bad_options_exit_1_with_a_clear_message(args, message, demo_files, tmp_path, monkeypatch, capsys):
    train, _ = demo_files
    code, err = _run_main(monkeypatch, capsys, "train", "--data", train, "--out", str(tmp_path / "m"), *args)
    assert code == 1
    assert message in err
    assert not (tmp_path / "m").exists()


def test_missing_data_file_exits_1(tmp_path, monkeypatch, capsys):
    missing = str(tmp_path / "nope.csv")
    code, err = _run_main(monkeypatch, capsys, "train", "--model", "logreg", "--data", missing, "--out", str(tmp_path))
    assert code == 1
    assert "nope.csv" in err


def test_help_lists_every_option():
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--model", "--data", "--val", "--out", "--featurizer", "--base-model", "--config", "--set"):
        assert option in result.output
