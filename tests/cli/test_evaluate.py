"""``sentinel evaluate`` and ``sentinel select`` on a real tiny model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prompt_sentinel.cli import app
from prompt_sentinel.errors import DataError, SentinelError

FAST = ["--set", "evaluation.latency_repeats=5", "--set", "evaluation.bootstrap_samples=50"]
OPEN_GATES = [
    "--set",
    "gates.min_custom_score=0",
    "--set",
    "gates.min_recall_c2=0",
    "--set",
    "gates.max_false_alarm_rate=1",
    "--set",
    "gates.max_missed_threat_rate=1",
    "--set",
    "gates.max_latency_p95_ms=100000",
    "--set",
    "gates.max_cv_std=1",
]
KEYS = ("custom_score", "f1_macro", "recall_c2", "precision_c1", "f1_c0", "false_alarm_rate", "missed_threat_rate")


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def test_evaluate_json(runner: CliRunner, tiny_model_dir: Path, demo_blind_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(tiny_model_dir), "--data", str(demo_blind_csv), "--out", str(out), "--json"]
    result = runner.invoke(app, [*args, *FAST, "--no-efficiency"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)  # stdout is exactly one JSON object
    for key in KEYS:
        assert isinstance(payload[key], float), key
    assert payload["model"] == "logreg" and payload["robustness"]["applicable"]
    assert (out / "evaluation.json").is_file() and (out / "predictions.csv").is_file()


def test_evaluate_table(runner: CliRunner, tiny_model_dir: Path, demo_blind_csv: Path) -> None:
    result = runner.invoke(
        app,
        ["evaluate", "-m", str(tiny_model_dir), "-d", str(demo_blind_csv), "--blind", str(demo_blind_csv), *FAST],
    )
    assert result.exit_code == 0, result.output
    for text in ("custom_score", "false_alarm_rate", "blind set", "latency_p95_ms", "Adversarial robustness"):
        assert text in result.stdout


def test_evaluate_bad_data_is_a_sentinel_error(runner: CliRunner, tiny_model_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhello,0\nworld,9\n")
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_model_dir), "--data", str(bad), "--json"])
    assert result.exit_code != 0
    assert isinstance(result.exception, DataError)  # main() prints it and exits 1
    assert "9" in str(result.exception)


def test_help_texts(runner: CliRunner) -> None:
    for command in ("evaluate", "select"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0
        assert "--json" in result.stdout


@pytest.mark.slow
def test_select_with_champion(runner: CliRunner, tiny_model_dir: Path, demo_blind_csv: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    for name in ("logreg", "logreg-copy"):
        args = ["evaluate", "-m", str(tiny_model_dir), "-d", str(demo_blind_csv), "--name", name, "--out"]
        evaluated = runner.invoke(app, [*args, str(results / name), *FAST, "--no-robustness", "--json"])
        assert evaluated.exit_code == 0, evaluated.output

    # the champion is the same model: its custom score is not beaten, so nothing is promoted
    select = ["select", "--results", str(results), "--champion", str(tiny_model_dir), "--json", *FAST, *OPEN_GATES]
    result = runner.invoke(app, select)
    assert result.exit_code == 0, result.output
    selection = json.loads(result.stdout)
    assert selection["promoted"] is False and selection["winner"] is None
    assert selection["best_candidate"] == "logreg"  # tie on every key but the name
    assert selection["champion"] == "champion"
    assert "does not beat the champion" in selection["reason"]
    assert json.loads((results / "selection.json").read_text()) == selection
    assert (results / "_champion" / "predictions.csv").is_file()  # the champion was evaluated on the same set
    with open(results / "results.csv", newline="") as fh:
        rows = {r["model"]: r["status"] for r in csv.DictReader(fh)}
    assert rows == {"logreg": "not promoted (champion kept)", "logreg-copy": "passed"}
    report = (results / "report.html").read_text()
    assert "No promotion" in report and "data:image/png;base64," in report

    # without a champion the best candidate is promoted; default gates reject the tiny model (normal outcome)
    promoted = runner.invoke(app, ["select", "--results", str(results), "--json", *OPEN_GATES])
    assert json.loads(promoted.stdout)["winner"] == "logreg"
    gated = runner.invoke(app, ["select", "--results", str(results)])
    assert gated.exit_code == 0 and "no promotion" in gated.stdout


def test_select_errors(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["select", "--results", str(tmp_path)])
    assert isinstance(result.exception, SentinelError)
    assert "no model evaluations" in str(result.exception)
