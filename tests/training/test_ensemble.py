"""Soft-voting ensembles: weight grid, blending, the weight/cost search, the artifact and every way it is used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import ComplementNB
from sklearn.pipeline import Pipeline
from typer.testing import CliRunner

from prompt_sentinel import storage
from prompt_sentinel.checksums import write_manifest
from prompt_sentinel.cli import app
from prompt_sentinel.config import LabelConfig, LabelRoles, load_config
from prompt_sentinel.data.loading import load_dataset
from prompt_sentinel.data.split import split_dataset
from prompt_sentinel.errors import ChecksumError, ModelFormatError, TrainingError
from prompt_sentinel.metrics import security_score
from prompt_sentinel.models.base import ModelDescriptor
from prompt_sentinel.models.ensemble import EnsembleSentinelModel, blend
from prompt_sentinel.models.loading import load_model
from prompt_sentinel.models.sklearn import save_sklearn_artifact
from prompt_sentinel.run_layout import ENSEMBLE_REPORT, MODEL_DESCRIPTOR
from prompt_sentinel.text import normalize_text
from prompt_sentinel.training.ensemble import build_ensemble, search_weights, simplex_grid

ROLES = LabelRoles(benign=0, suspicious=1, malicious=2)


def _cfg(*overrides: str):
    """Config without MLflow: only the tracking test needs a run, and each one costs seconds."""
    return load_config(None, ["mlflow.enabled=false", *overrides])


# --- pure logic ---------------------------------------------------------------------------------------------


def test_simplex_grid_positive_weights_summing_to_one_most_even_first() -> None:
    assert simplex_grid(2, 0.25) == [(0.5, 0.5), (0.75, 0.25), (0.25, 0.75)]
    three = simplex_grid(3, 0.125)
    assert len(three) == 21  # compositions of 8 into 3 positive parts: C(7, 2)
    assert all(abs(sum(w) - 1) < 1e-12 and min(w) >= 0.125 for w in three)
    assert three[0] == (0.375, 0.375, 0.25)
    for n, step, message in [(1, 0.5, "at least 2 members"), (2, 0.3, "divide 1"), (3, 0.5, "at least 3 equal")]:
        with pytest.raises(ValueError, match=message):
            simplex_grid(n, step)


def test_blend_is_the_weighted_average() -> None:
    a = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    b = np.array([[0.0, 0.0, 1.0], [0.6, 0.3, 0.1]])
    np.testing.assert_allclose(blend([a, b], (0.75, 0.25)), [[0.75, 0.0, 0.25], [0.3, 0.3, 0.4]])
    with pytest.raises(ValueError, match="differ in shape"):
        blend([a, b[:1]], (0.5, 0.5))
    with pytest.raises(ValueError, match="2 probability arrays for 3 weights"):
        blend([a, b], (0.5, 0.25, 0.25))


def test_search_prefers_the_blend_that_fixes_both_members_mistakes() -> None:
    y = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    # member A is sure about benign but calls one malicious prompt benign; member B the other way round
    a = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1],
                  [0.6, 0.1, 0.3], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]])  # fmt: skip
    b = np.array([[0.4, 0.1, 0.5], [0.7, 0.1, 0.2], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1],
                  [0.05, 0.05, 0.9], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8], [0.7, 0.1, 0.2]])  # fmt: skip
    best, trials = search_weights(y, [a, b], ROLES, 0.25, cost_grid=None)
    score_a = security_score(y, a.argmax(1), ROLES, 3).custom_score
    score_b = security_score(y, b.argmax(1), ROLES, 3).custom_score
    assert best.weights == (0.5, 0.5)
    assert best.custom_score == pytest.approx(1.0)
    assert best.custom_score > max(score_a, score_b)
    assert [t.weights for t in trials] == simplex_grid(2, 0.25)


def test_a_candidate_that_only_adds_noise_is_left_out() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 90)
    good = np.full((90, 3), 0.25)
    good[np.arange(90), y] = 0.5
    also_good = good * 0.9 + 0.1 / 3
    wrong = np.zeros((90, 3))
    wrong[np.arange(90), (y + 1) % 3] = 1.0  # certain and wrong on every prompt: even weight 0.25 flips labels
    best, trials = search_weights(y, [good, wrong, also_good], ROLES, 0.25, cost_grid=None)
    assert best.members == (0, 2) and best.custom_score == pytest.approx(1.0)
    assert {t.members for t in trials} == {(0, 1), (0, 2), (1, 2), (0, 1, 2)}
    # with step 0.5 only pairs fit (each member needs a weight of at least one step)
    _, pairs = search_weights(y, [good, wrong, also_good], ROLES, 0.5, cost_grid=None)
    assert {t.members for t in pairs} == {(0, 1), (0, 2), (1, 2)} and all(t.weights == (0.5, 0.5) for t in pairs)


def test_equal_members_keep_even_weights_and_tuned_costs_only_when_they_pay() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    proba = np.full((60, 3), 0.1)
    proba[np.arange(60), y] = 0.8
    best, _ = search_weights(y, [proba, proba], ROLES, 0.125, cost_grid=[1, 2, 4])
    assert best.weights == (0.5, 0.5)
    assert (best.false_alarm_cost, best.missed_threat_cost) == (1.0, 1.0)  # perfect already: ties keep argmax
    assert best.custom_score == pytest.approx(1.0)


# --- artifacts on real data ---------------------------------------------------------------------------------


def _save(pipeline: Pipeline, texts: list[str], y: np.ndarray, out: Path, model_type: str, labels: LabelConfig) -> Path:
    pipeline.fit([normalize_text(t) for t in texts], y)
    descriptor = ModelDescriptor(family="sklearn", model_type=model_type, labels=labels, featurizer="tfidf")
    with storage.atomic_output_dir(out) as tmp:
        save_sklearn_artifact(pipeline, tmp, descriptor)
    return out


@pytest.fixture(scope="module")
def members(demo_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], pd.DataFrame]:
    """Two real, different scikit-learn members trained on the demo train split; the validation split is unseen."""
    cfg = load_config()
    parts = split_dataset(load_dataset(str(demo_csv), cfg), cfg)
    train = parts["train"]
    texts, y = train["text"].tolist(), train["label"].to_numpy()
    root = tmp_path_factory.mktemp("members")
    words = Pipeline([("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)), ("clf", LogisticRegression())])
    chars = Pipeline(
        [("tfidf", TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 4), sublinear_tf=True)), ("clf", ComplementNB())]
    )
    return [
        _save(words, texts, y, root / "words", "logreg", cfg.labels),
        _save(chars, texts, y, root / "chars", "complement_nb", cfg.labels),
    ], parts["validation"]


def test_build_load_and_predict_like_the_weighted_members(members, tmp_path: Path) -> None:
    dirs, val = members
    cfg = _cfg()
    result = build_ensemble(dirs, val, cfg, tmp_path / "ensemble")
    assert result.details["members"] == ["logreg", "complement_nb"]
    assert (
        sum(result.details["weights"]) == pytest.approx(1.0)
        and min(result.details["weights"]) >= cfg.training.ensemble.weight_step
    )
    model = load_model(tmp_path / "ensemble")
    assert isinstance(model, EnsembleSentinelModel) and model.family == "ensemble"
    assert model.weights == result.details["weights"]
    texts = val["text"].tolist()
    expected = blend([load_model(d).predict_proba(texts) for d in dirs], result.details["weights"])
    np.testing.assert_allclose(model.predict_proba(texts), expected, atol=1e-6)
    # the stored decision rule reproduces the reported validation score
    score = security_score(val["label"], model.predict(texts), cfg.labels.roles, 3).custom_score
    assert score == pytest.approx(result.selection_score)
    assert model.descriptor.decision.false_alarm_cost == result.decision.false_alarm_cost
    report = json.loads((tmp_path / "ensemble" / ENSEMBLE_REPORT).read_text())
    assert report["best"]["custom_score"] == max(t["custom_score"] for t in report["trials"])
    assert set(report["member_validation_custom_score"]) == {"logreg", "complement_nb"}


def test_a_changed_byte_in_a_member_is_refused(members, tmp_path: Path) -> None:
    dirs, val = members
    out = tmp_path / "ensemble"
    build_ensemble(dirs, val, _cfg(), out)
    member_file = out / "members" / "complement_nb" / "model.skops"
    data = bytearray(member_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    member_file.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"members/complement_nb/model\.skops.*sha256 mismatch"):
        load_model(out)


def test_descriptor_member_paths_must_stay_inside_the_artifact(members, tmp_path: Path) -> None:
    dirs, val = members
    out = tmp_path / "ensemble"
    build_ensemble(dirs, val, _cfg(), out)
    descriptor = json.loads((out / MODEL_DESCRIPTOR).read_text())
    descriptor["params"]["members"][0]["path"] = "../../somewhere"
    (out / MODEL_DESCRIPTOR).write_text(json.dumps(descriptor))
    write_manifest(out)
    with pytest.raises(ModelFormatError, match=r"params.members\[0\].path='../../somewhere' must lie under members/"):
        load_model(out)


def test_ensemble_to_gcs_and_back(members, gcs_bucket: str, tmp_path: Path) -> None:
    import mlflow

    dirs, val = members
    uri = f"gs://{gcs_bucket}/models/ensemble"
    result = build_ensemble(dirs, val, load_config(), uri, tracking_dir=tmp_path)
    assert result.model_dir == uri
    # the MLflow run logs the staged copy of what was uploaded
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = next(r for e in client.search_experiments() for r in client.search_runs([e.experiment_id]))
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/sentinel_model.json", "model/checksums.json", "model/members"} <= logged
    texts = val["text"].head(5).tolist()
    again = load_model(uri)
    np.testing.assert_allclose(
        again.predict_proba(texts),
        blend([load_model(d).predict_proba(texts) for d in dirs], result.details["weights"]),
        atol=1e-6,
    )


def _expect_error(dirs: list, val: pd.DataFrame, out: Path, match: str, *overrides: str) -> None:
    with pytest.raises(TrainingError, match=match):
        build_ensemble(dirs, val, _cfg(*overrides), out)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_bad_input_is_refused_and_nothing_is_written(members, tmp_path: Path) -> None:
    dirs, val = members
    out = tmp_path / "ensemble"
    _expect_error(dirs[:1], val, out, "needs at least 2 members, got 1")
    _expect_error(dirs, val.iloc[:0], out, "ensemble validation data.*has no rows")
    _expect_error(dirs, val.drop(columns=["label"]), out, r"lacks column\(s\) \['label'\]")
    _expect_error(dirs, val.assign(label=7), out, r"class ids 0\.\.2 \[.*\]; found 7 at index \d+ and \d+ more")
    two_labels = ["labels.names=[safe, unsafe]", "labels.benign=safe", "labels.suspicious=null"]
    two_labels.append("labels.malicious=unsafe")
    expected = r"trained for labels \['benign', 'suspicious', 'malicious'\].*\['safe', 'unsafe'\]"
    _expect_error(dirs, val[val["label"] < 2], out, expected, *two_labels)
    build_ensemble(dirs, val, _cfg(), tmp_path / "first")
    _expect_error([tmp_path / "first", dirs[0]], val, out, "is itself an ensemble")


def test_cli_builds_an_ensemble(members, tmp_path: Path) -> None:
    dirs, val = members
    val_csv = tmp_path / "val.csv"
    val.to_csv(val_csv, index=False)
    out = tmp_path / "ensemble"
    args = ["ensemble", "--member", str(dirs[0]), "--member", str(dirs[1]), "--name", "words", "--name", "chars"]
    result = CliRunner().invoke(app, [*args, "--val", str(val_csv), "--out", str(out), "--set", "mlflow.enabled=false"])
    assert result.exit_code == 0, result.output
    assert "custom_score" in result.output and f"model written to {out}" in result.output
    assert [m.descriptor.model_type for m in load_model(out).members] == ["logreg", "complement_nb"]
    assert sorted(p.name for p in (out / "members").iterdir()) == ["chars", "words"]


def test_mlflow_run_and_registry_push(members, tmp_path: Path) -> None:
    import mlflow

    from prompt_sentinel.registry import ModelRegistry

    dirs, val = members
    cfg = load_config(None, [f"registry.root={tmp_path / 'registry'}", f"registry.cache_dir={tmp_path / 'cache'}"])
    result = build_ensemble(dirs, val, cfg, tmp_path / "models" / "ensemble")
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'models' / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert [r.info.run_name for r in runs] == ["ensemble"]
    run = runs[0]
    assert run.data.metrics["val_custom_score"] == pytest.approx(result.selection_score)
    assert run.data.params["members"] == "logreg,complement_nb"
    assert float(run.data.params["weight.logreg"]) == result.details["weights"][0]

    registry = ModelRegistry(cfg.registry.root, cfg)
    pushed = registry.push(tmp_path / "models" / "ensemble", name="sentinel-ensemble")
    assert pushed.metadata["family"] == "ensemble"
    card = (tmp_path / "registry" / "sentinel-ensemble" / "v1" / "model_card.md").read_text()
    assert "## Ensemble members" in card
    assert f"| logreg | sklearn / logreg | {result.details['weights'][0]} |" in card
    texts = val["text"].head(8).tolist()
    np.testing.assert_allclose(
        load_model(pushed.uri).predict_proba(texts), load_model(result.model_dir).predict_proba(texts), atol=1e-6
    )
