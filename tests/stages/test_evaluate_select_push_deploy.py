"""evaluate -> select -> push -> deploy as the pipeline chains them, on real artifacts, a local registry and a
copy of the manifests (what the KFP components do, without the kfp.local round trip)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from prompt_sentinel.config import LabelConfig, SentinelConfig
from prompt_sentinel.models.base import ModelDescriptor
from prompt_sentinel.models.sklearn import save_sklearn_artifact
from prompt_sentinel.registry import CHAMPION, ModelRegistry
from prompt_sentinel.run_layout import (
    CANDIDATES,
    DEPLOY_RESULT,
    EVALUATED_SOURCE,
    EVALUATION,
    PUSH_RESULT,
    REPORT_HTML,
    RESULTS_CSV,
    SELECTION,
    WINNER_EVALUATION,
)
from prompt_sentinel.stages import deploy, evaluate, push, select

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def nb_model_dir(tmp_path_factory: pytest.TempPathFactory, demo_csv: Path) -> Path:
    """A second real candidate: TF-IDF + complement naive Bayes on the demo prompts."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.naive_bayes import ComplementNB
    from sklearn.pipeline import Pipeline

    from prompt_sentinel.data.loading import load_dataset
    from prompt_sentinel.text import normalize_text

    frame = load_dataset(str(demo_csv), SentinelConfig())
    estimator = Pipeline([("tfidf", TfidfVectorizer(max_features=2000)), ("clf", ComplementNB(alpha=0.3))])
    estimator.fit([normalize_text(t) for t in frame["text"]], frame["label"])
    out = tmp_path_factory.mktemp("nb-model") / "complement_nb"
    save_sklearn_artifact(
        estimator, out, ModelDescriptor(family="sklearn", model_type="complement_nb", labels=LabelConfig())
    )
    return out


def _cfg(fast_cfg: SentinelConfig, tmp_path: Path) -> SentinelConfig:
    cfg = fast_cfg.model_copy(deep=True)
    cfg.registry.root = str(tmp_path / "registry")
    cfg.registry.cache_dir = str(tmp_path / "cache")
    cfg.gates.min_custom_score = 0.0
    cfg.gates.min_recall_c2 = 0.0
    cfg.gates.max_false_alarm_rate = 1.0
    cfg.gates.max_missed_threat_rate = 1.0
    cfg.gates.max_cv_std = 1.0
    shutil.copytree(REPO / "manifests", tmp_path / "repo" / "manifests")
    cfg.deploy.manifests_dir = str(tmp_path / "repo" / "manifests")
    return cfg


def test_evaluate_writes_the_evaluation_and_where_its_model_is(tiny_model_dir, demo_splits, fast_cfg, tmp_path):
    out = tmp_path / "evaluation"
    result = evaluate.run(tiny_model_dir, demo_splits, fast_cfg, out, model_uri="gs://b/run/model")
    assert json.loads((out / EVALUATION).read_text())["custom_score"] == pytest.approx(result["custom_score"])
    source = json.loads((out / EVALUATED_SOURCE).read_text())
    assert source == {"model": "logreg", "model_uri": "gs://b/run/model", "evaluation_uri": str(out)}
    assert result["external"] is not None  # the blind set riding along in the splits was scored
    headline = evaluate.headline(result)
    assert headline["custom_score"] == result["custom_score"] and "latency_p95_ms" in headline


def test_select_push_deploy_chain(tiny_model_dir, nb_model_dir, demo_splits, fast_cfg, tmp_path):
    cfg = _cfg(fast_cfg, tmp_path)
    evaluations = [
        str(evaluate.run(model, demo_splits, cfg, tmp_path / f"eval-{model.name}")["evaluation_dir"])
        for model in (tiny_model_dir, nb_model_dir)
    ]
    outcome = select.run(evaluations, None, cfg, tmp_path / "selection", champion_out=tmp_path / "champion")
    assert select.registry_champion(cfg) is None
    assert outcome.promoted and outcome.result.winner in {"logreg", "complement_nb"}
    for name in (SELECTION, RESULTS_CSV, REPORT_HTML, CANDIDATES, WINNER_EVALUATION):
        assert (tmp_path / "selection" / name).is_file(), name
    index = json.loads((tmp_path / "selection" / CANDIDATES).read_text())
    winner_dir = {"logreg": tiny_model_dir, "complement_nb": nb_model_dir}[outcome.result.winner]
    assert index[outcome.result.winner]["model_uri"] == str(winner_dir)
    copied = sorted(p.name for p in (tmp_path / "champion").iterdir())
    assert copied == sorted(p.name for p in winner_dir.iterdir())
    assert f"promoted `{outcome.result.winner}`" in outcome.markdown()

    (tmp_path / "push").mkdir()  # a directory gets push_result.json; a KFP output artifact is the file itself
    pushed = push.run(tmp_path / "champion", tmp_path / "selection", cfg, tmp_path / "push")
    assert (pushed.name, pushed.version) == (cfg.registry.model_name, 1)
    assert json.loads((tmp_path / "push" / PUSH_RESULT).read_text())["uri"] == pushed.uri
    registry = ModelRegistry(cfg.registry.root, cfg)
    assert registry.aliases(cfg.registry.model_name)[CHAMPION] == 1
    assert registry.get_metadata(f"{cfg.registry.model_name}@champion")["metrics"]["custom_score"] == pytest.approx(
        outcome.winner["custom_score"]
    )

    deployed = deploy.run(tmp_path / "push", cfg, tmp_path / "deploy")
    assert deployed.mode == "gitops" and deployed.version == 1 and deployed.changed_files
    assert json.loads((tmp_path / "deploy" / DEPLOY_RESULT).read_text())["storage_uri"] == deployed.storage_uri

    # the next run compares against the registry's champion, re-evaluated on the same test prompts
    assert select.registry_champion(cfg) == f"{cfg.registry.model_name}/v1"
    again = select.run(
        evaluations,
        str(demo_splits / "test.csv"),
        cfg,
        tmp_path / "selection-2",
        champion=select.registry_champion(cfg),
        champion_out=tmp_path / "champion-2",
    )
    assert not again.promoted and "no promotion" in again.result.reason
    assert again.champion_evaluation is not None and again.champion_evaluation["model"] == "champion-v1"
    assert list((tmp_path / "champion-2").iterdir()) == []  # nothing to push
