"""`sentinel validate` and `sentinel split` through the real Typer app."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prompt_sentinel.cli import app
from prompt_sentinel.cli.data import parse_against
from prompt_sentinel.errors import DataError

runner = CliRunner()


def write_csv(path: Path, rows: list[tuple[str, object]], header: tuple[str, str] = ("text", "label")) -> str:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def dataset(labels: list[str], per_class: int = 8, prefix: str = "") -> list[tuple[str, object]]:
    return [(f"{prefix}{name} example number {i}", name) for name in labels for i in range(per_class)]


DEFAULT = ["benign", "suspicious", "malicious"]


def test_validate_prints_counts_and_writes_outputs(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "data.csv", dataset(DEFAULT))
    result = runner.invoke(app, ["validate", data, "--out", str(tmp_path / "out")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "benign" in result.output and "│ total      │   24 │" in result.output
    assert "passed" in result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "cleaned.csv",
        "report.html",
        "report.json",
        "report.md",
    ]


def test_validate_errors_exit_1_and_write_nothing(tmp_path: Path) -> None:
    rows = [*dataset(DEFAULT), ("", "benign"), ("leaky text", "hostile")]
    data = write_csv(tmp_path / "data.csv", rows)
    out = tmp_path / "out"
    result = runner.invoke(app, ["validate", data, "--out", str(out), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    located = [(f["check"], f["row"], f["field"]) for f in report["findings"]]
    assert located == [("null_text", 26, "text"), ("unknown_label", 27, "label")]
    assert not out.exists() and "nothing written" in result.stderr


def test_validate_against_named_set(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "data.csv", dataset(DEFAULT))
    other = write_csv(tmp_path / "holdout.csv", [("BENIGN example number 3!", 0)])
    result = runner.invoke(app, ["validate", data, "--against", f"test={other}", "--json"])
    assert result.exit_code == 1
    (finding,) = json.loads(result.stdout)["findings"]
    assert finding["check"] == "cross_set_leak" and finding["row"] == 5 and "test set" in finding["message"]


def test_parse_against() -> None:
    assert parse_against(["a/test.csv", "blind=gs://b/x.csv"]) == {"test": "a/test.csv", "blind": "gs://b/x.csv"}
    with pytest.raises(DataError, match="given twice"):
        parse_against(["a/test.csv", "b/test.csv"])


def test_validate_and_split_with_four_named_labels(tmp_path: Path) -> None:
    names = ["safe", "spam", "jailbreak", "exfiltration"]
    config = tmp_path / "labels.yaml"
    config.write_text(
        "labels:\n  names: [safe, spam, jailbreak, exfiltration]\n  benign: safe\n  suspicious: spam\n"
        "  malicious: jailbreak\nvalidation:\n  exact_duplicate: off\n"
    )
    data = write_csv(tmp_path / "data.csv", [*dataset(names, per_class=10), ("safe example number 1", "safe")])
    result = runner.invoke(app, ["validate", data, "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["class_counts"] == {"safe": 11, "spam": 10, "jailbreak": 10, "exfiltration": 10}
    out = tmp_path / "splits"
    result = runner.invoke(
        app, ["split", data, "--out", str(out), "--config", str(config), "--set", "seed=7"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "split_report.json").read_text())
    assert saved["seed"] == 7 and list(saved["counts"]["train"]) == names
    assert all(saved["counts"][s][n] > 0 for s in ("train", "validation", "test") for n in names)
    assert "exfiltration" in result.output


def test_split_with_blind_and_a_failure(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "data.csv", dataset(DEFAULT))
    blind = write_csv(tmp_path / "blind.csv", dataset(DEFAULT, per_class=5, prefix="blind "))
    out = tmp_path / "splits"
    result = runner.invoke(app, ["split", data, "--out", str(out), "--blind", blind])
    assert result.exit_code == 0, result.output
    assert (out / "blind.csv").is_file() and json.loads((out / "split_report.json").read_text())["totals"][
        "blind"
    ] == 15

    bad_blind = write_csv(tmp_path / "bad_blind.csv", [("malicious example number 2", 2)])
    result = runner.invoke(app, ["split", data, "--out", str(tmp_path / "never"), "--blind", bad_blind])
    assert result.exit_code == 1
    assert not (tmp_path / "never").exists() and "validation error(s)" in result.stderr


def test_validate_shared_training_data(shared_data_dir: Path) -> None:
    result = runner.invoke(app, ["validate", str(shared_data_dir / "prompts_train.csv"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["rows_read"] > 3000
    assert set(report["class_counts"]) == {"benign", "suspicious", "malicious"}
    assert all(n > 500 for n in report["class_counts"].values())
    assert sum(report["class_counts"].values()) == report["rows_clean"]
