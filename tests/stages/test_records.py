"""Stage records: failures named by stage, published results, the run status the exit handler writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prompt_sentinel.errors import DataError
from prompt_sentinel.stages import records


def test_stage_records_the_library_error_and_reraises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DataError, match="no such file"), records.stage_failures("train[logreg]", str(tmp_path)):
        raise DataError("data.csv: no such file")
    record = json.loads((tmp_path / "failures" / "train_logreg.json").read_text())
    assert record == {
        "stage": "train[logreg]",
        "error_type": "DataError",
        "message": "data.csv: no such file",
        "user_error": True,
    }
    assert records.FAILURE_MARKER in capsys.readouterr().err
    assert records.read_failures(str(tmp_path)) == [record]


def test_stage_without_results_uri_still_reraises(tmp_path: Path) -> None:
    with pytest.raises(KeyError), records.stage_failures("select", ""):
        raise KeyError("x")
    assert records.read_failures("") == []


def test_read_failures_skips_unreadable_records(tmp_path: Path) -> None:
    (tmp_path / "failures").mkdir()
    (tmp_path / "failures" / "a.json").write_text("{not json")
    (tmp_path / "failures" / "b.json").write_text(json.dumps({"stage": "split"}))
    assert records.read_failures(str(tmp_path)) == [{"stage": "split"}]


def test_read_failures_on_gcs(gcs_bucket: str) -> None:
    uri = f"gs://{gcs_bucket}/run"
    with pytest.raises(ValueError), records.stage_failures("split", uri):
        raise ValueError("ratios do not add up")
    assert records.read_failures(uri)[0]["message"] == "ratios do not add up"


def test_publish_writes_under_results_uri_only_when_set(tmp_path: Path) -> None:
    assert records.publish("", "x.json", "{}") is None
    target = records.publish(str(tmp_path / "results"), "sub/x.json", '{"a": 1}')
    assert target is not None and json.loads(Path(target).read_text()) == {"a": 1}


def test_clear_failures_local_and_gcs(tmp_path: Path, gcs_bucket: str) -> None:
    for uri in (str(tmp_path), f"gs://{gcs_bucket}/runs"):
        with pytest.raises(ValueError), records.stage_failures("split", uri):
            raise ValueError("boom")
        assert len(records.read_failures(uri)) == 1
        records.clear_failures(uri)
        assert records.read_failures(uri) == []
    records.clear_failures("")  # no results_uri: nothing to do


def test_record_run_status_folds_failures_in_and_clears_them(tmp_path: Path) -> None:
    with pytest.raises(ValueError), records.stage_failures("train[logreg]", str(tmp_path)):
        raise ValueError("boom")
    status = records.record_run_status(str(tmp_path), {"state": "FAILED", "error_message": "task failed"})
    assert status["failures"][0]["stage"] == "train[logreg]"
    assert json.loads((tmp_path / "run_status.json").read_text()) == status
    assert records.read_failures(str(tmp_path)) == []  # the next run starts clean
    assert "**train[logreg]** failed: ValueError: boom" in records.status_markdown(status)


def test_finite_scalars_flattens_one_level_and_drops_the_rest() -> None:
    values = {"a": 1, "b": float("nan"), "c": {"d": 2.5, "e": "x"}, "f": True, "g": None}
    assert records.finite_scalars(values) == {"a": 1.0, "c.d": 2.5, "f": 1.0}
