"""The prepare stage: validate then split, through the same functions the pipeline's two steps call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prompt_sentinel import storage
from prompt_sentinel.config import SentinelConfig, load_config
from prompt_sentinel.data.split import read_split
from prompt_sentinel.errors import DataValidationError
from prompt_sentinel.run_layout import SPLIT_NAMES, SPLIT_REPORT
from prompt_sentinel.stages import prepare
from tests.data.test_split import assert_groups_within_one_split, make_frame, write_csv


@pytest.fixture
def cfg() -> SentinelConfig:
    return load_config()


def run_split(data_uri, cfg, out, blind_uri=None):
    return prepare.run(data_uri, blind_uri, cfg, out).report


def test_run_split_writes_splits_blind_and_report(tmp_path: Path, cfg: SentinelConfig) -> None:
    data = make_frame({0: 150, 1: 90, 2: 60})
    blind = make_frame({0: 20, 1: 10, 2: 10}, seed=99)
    blind["text"] = "blind " + blind["text"]
    out = tmp_path / "splits"
    report = run_split(write_csv(data, tmp_path / "data.csv"), cfg, out, blind_uri=write_csv(blind, tmp_path / "b.csv"))
    assert sorted(p.name for p in out.iterdir()) == [
        "blind.csv",
        "split_report.json",
        "test.csv",
        "train.csv",
        "validation.csv",
    ]
    saved = json.loads((out / SPLIT_REPORT).read_text())
    assert saved == report
    sets = {name: read_split(out, name) for name in (*SPLIT_NAMES, "blind")}
    for name, frame in sets.items():
        counts = frame["label"].value_counts().to_dict()
        assert saved["counts"][name] == {lbl: counts.get(i, 0) for i, lbl in enumerate(cfg.labels.names)}
        assert saved["files"][name]["rows"] == len(frame)
    assert sets["blind"]["text"].tolist() == blind["text"].tolist()  # copied whole, never split
    assert sum(len(sets[n]) for n in SPLIT_NAMES) == len(data)
    assert_groups_within_one_split(sets)
    assert saved["groups"]["near_duplicate_groups"] > 0 and saved["seed"] == cfg.seed


def test_blind_leak_fails_and_writes_nothing(tmp_path: Path, cfg: SentinelConfig) -> None:
    data = make_frame({0: 30, 1: 30, 2: 30})
    blind = make_frame({0: 6, 1: 6, 2: 6}, seed=5)
    blind["text"] = "blind " + blind["text"]
    blind.loc[3, "text"] = data.loc[10, "text"].upper() + "!"  # a near-duplicate of a training row
    paths = write_csv(data, tmp_path / "data.csv"), write_csv(blind, tmp_path / "blind.csv")
    with pytest.raises(DataValidationError) as info:
        run_split(paths[0], cfg, tmp_path / "out", blind_uri=paths[1])
    (f,) = info.value.findings
    assert (f.check, f.row, f.file) == ("cross_set_leak", 12, paths[0])
    assert f"blind set ({paths[1]} row 5)" in f.message
    assert not (tmp_path / "out").exists()

    # as a warning the training-side copy is dropped and the blind set is kept whole
    warn = cfg.model_copy(update={"validation": cfg.validation.model_copy(update={"cross_set_leak": "warning"})})
    report = run_split(paths[0], warn, tmp_path / "out", blind_uri=paths[1])
    assert report["totals"]["blind"] == len(blind)
    assert sum(report["totals"][n] for n in SPLIT_NAMES) == len(data) - 1
    assert report["validation"]["data"]["warnings"][0]["check"] == "cross_set_leak"


def test_split_to_gcs_and_read_back(gcs_bucket: str, tmp_path: Path, cfg: SentinelConfig) -> None:
    data = make_frame({0: 30, 1: 20, 2: 20})
    uri = f"gs://{gcs_bucket}/raw/data.csv"
    storage.write_bytes(uri, Path(write_csv(data, tmp_path / "d.csv")).read_bytes())
    out = f"gs://{gcs_bucket}/splits"
    report = run_split(uri, cfg, out)
    train = read_split(f"{out}/train.csv")
    assert len(train) == report["totals"]["train"] and train["label"].dtype == "int64"
    assert json.loads(storage.read_text(f"{out}/{SPLIT_REPORT}"))["counts"] == report["counts"]
