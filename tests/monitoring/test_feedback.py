"""Reviewer labels: checked whole, unknown ids counted, unknown classes refused, logs never rewritten."""

from __future__ import annotations

from pathlib import Path

import pytest

from prompt_sentinel.config import LabelConfig
from prompt_sentinel.errors import DataError
from prompt_sentinel.monitoring.feedback import add_feedback, load_feedback
from prompt_sentinel.monitoring.logstore import PredictionLogWriter
from tests.monitoring.test_logstore import _records

LABELS = LabelConfig()


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    writer = PredictionLogWriter(str(tmp_path / "logs"), start_thread=False)
    writer.write(_records(5))
    writer.close()
    return tmp_path / "logs"


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*.jsonl") if "feedback" not in p.parts}


def test_known_ids_are_appended_unknown_ids_counted(logs: Path, tmp_path: Path) -> None:
    before = _snapshot(logs)
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\nr0,malicious\nr1,0\nnope,benign\nr0,malicious\n")
    result = add_feedback(str(logs), str(labels), LABELS)
    assert (result.added, result.unknown_ids, result.repeated) == (2, 1, 1)
    assert result.unknown_examples == ["nope"]
    (tmp_path / "later.jsonl").write_text('{"id": "r0", "label": "benign"}\n')
    add_feedback(str(logs), str(tmp_path / "later.jsonl"), LABELS)
    chosen, summary = load_feedback(str(logs), LABELS)
    assert chosen == {"r0": "benign", "r1": "benign"}  # the later label wins
    assert summary["files"] == 2
    assert _snapshot(logs) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id,label\nr0,evil\n", r"row 2, field 'label': label 'evil' is not a configured class \(allowed: 0/benign"),
        ("id,label\nr0,7\n", "label '7' is not a configured class"),
        ("id,label\n,benign\n", "row 2: field 'id' is empty"),
        ("id,label\nr0,benign\nr0,malicious\n", "id 'r0' labelled 'malicious' here but 'benign'"),
        ("identifier,label\nr0,benign\n", r"missing column\(s\) \['id'\]"),
        ("id,label\n", "no labels in the file"),
    ],
)
def test_bad_label_files_are_refused_whole(logs: Path, tmp_path: Path, content: str, message: str) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text(content)
    with pytest.raises(DataError, match=message):
        add_feedback(str(logs), str(labels), LABELS)
    assert not (logs / "feedback").exists()
