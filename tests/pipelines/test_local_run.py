"""End-to-end local runs of the real pipeline with kfp.local on the demo data (slow: every step is a subprocess).

One full run (module fixture) is asserted by several tests; a second run in the same output directory checks
caching and the champion rule; one run with impossible gates checks the clean "no promotion" exit; one run with
bad data checks that the failing step's own message reaches the user.
"""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.local_run import LocalRunRequest, run_local
from prompt_sentinel.cli import app
from prompt_sentinel.config import load_config
from prompt_sentinel.errors import PipelineError
from prompt_sentinel.registry import CHAMPION, ModelRegistry

pytestmark = pytest.mark.slow

MODELS = ["logreg", "complement_nb"]
# Small but complete: robustness and efficiency on, few bootstrap samples, a small TF-IDF vocabulary.
FAST = [
    "featurizer.kind=tfidf",
    "training.search.n_iter=2",
    "training.search.cv_folds=2",
    "featurizer.max_word_features=3000",
    "featurizer.max_char_features=5000",
    "evaluation.bootstrap_samples=20",
    "evaluation.latency_repeats=5",
    "evaluation.robustness_max_samples=40",
]
# The gate verdict does not need the robustness and latency measurements: skip them where only it matters.
NO_EXTRAS = ["evaluation.robustness=false", "evaluation.efficiency=false"]
# Loose enough that a model trained on 288 demo prompts is promoted, so push and deploy run.
PERMISSIVE = [
    "gates.min_custom_score=0.0",
    "gates.min_recall_c2=0.0",
    "gates.max_false_alarm_rate=1.0",
    "gates.max_missed_threat_rate=1.0",
    "gates.max_latency_p95_ms=100000",
    "gates.max_cv_std=1.0",
]


def _request(output: Path, demo_csv: Path, blind: Path | None, overrides: list[str], models=MODELS) -> LocalRunRequest:
    cfg = load_config(None, [*FAST, f"registry.cache_dir={output / 'cache'}", *overrides])
    blind_uri = str(blind) if blind else None
    return LocalRunRequest(data=str(demo_csv), blind=blind_uri, output=output, cfg=cfg, models=models)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory, demo_csv: Path, demo_blind_csv: Path):
    output = tmp_path_factory.mktemp("run")
    console = io.StringIO()
    summary = run_local(_request(output, demo_csv, demo_blind_csv, PERMISSIVE), console=console)
    return output, summary, console.getvalue()


def test_every_model_is_evaluated_and_one_is_promoted(full_run) -> None:
    _, summary, console = full_run
    assert summary.status["state"] == "SUCCEEDED" and summary.failures == []
    assert sorted(row["model"] for row in summary.models) == sorted(MODELS)
    for row in summary.models:
        assert 0.0 <= float(row["f1_macro"]) <= 1.0
        assert row["latency_p95_ms"] != "" and row["f1_external"] != ""  # efficiency and blind set measured
    assert summary.promoted and summary.winner in MODELS
    assert summary.selection["ranking"][0] == summary.winner
    assert "Executing task" in console and "select-model" in console


def test_the_winner_is_a_registry_version_with_metrics_and_lineage(full_run) -> None:
    output, summary, _ = full_run
    assert summary.push is not None and summary.push["version"] == 1
    registry = ModelRegistry(str(output / "registry"), load_config(None, [f"registry.cache_dir={output / 'cache'}"]))
    name = summary.push["name"]
    assert registry.aliases(name)[CHAMPION] == 1
    metadata = registry.get_metadata(f"{name}/v1")
    assert metadata["model_type"] == summary.winner
    winner_row = next(row for row in summary.models if row["model"] == summary.winner)
    assert metadata["metrics"]["custom_score"] == pytest.approx(float(winner_row["custom_score"]))
    assert metadata["lineage"]["pipeline"] == "prompt-sentinel-training"
    assert summary.registry_uri == metadata["uri"]


def test_report_deploy_change_and_mlflow_runs(full_run) -> None:
    output, summary, _ = full_run
    assert summary.report is not None and "<html" in summary.report.read_text()[:500].lower()
    assert summary.deploy is not None and summary.deploy["mode"] == "gitops"
    assert summary.deploy["version"] == 1 and summary.deploy["changed_files"]
    with sqlite3.connect(output / "mlflow.db") as db:
        artifact_uris = [row[0] for row in db.execute("select artifact_uri from runs")]
    assert len(artifact_uris) >= len(MODELS)
    # every run's artifacts live under the output directory, none in the current directory
    assert all(uri.startswith((output / "mlartifacts").as_uri()) for uri in artifact_uris), artifact_uris


def test_kfp_ui_artifacts(full_run) -> None:
    output, _, _ = full_run
    root = output / "pipeline_root"
    confusion = [json.loads(p.read_text()) for p in root.rglob("evaluate-candidate/executor_output.json")]
    assert len(confusion) == len(MODELS)
    for out in confusion:
        metadata = out["artifacts"]["confusion"]["artifacts"][0]["metadata"]
        assert len(metadata["confusionMatrix"]["rows"]) == 3
        assert "custom_score" in out["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert list(root.rglob("select-model/report"))
    assert list(root.rglob("validate-data/report"))


def test_second_run_reuses_cached_steps_and_keeps_the_champion(full_run, demo_csv: Path, demo_blind_csv: Path) -> None:
    output, first, _ = full_run
    console = io.StringIO()
    second = run_local(_request(output, demo_csv, demo_blind_csv, PERMISSIVE), console=console)
    hits = [line for line in console.getvalue().splitlines() if "cache hit" in line]
    for step in ("validate-data", "split-data", "balance-report", "train-classical-model", "evaluate-candidate"):
        assert any(step in line for line in hits), (step, hits)
    assert len(hits) >= 8  # + both trainings and evaluations, both plans, no-transformer
    # Same data, same seed: the retrained winner ties with the champion, so nothing new is pushed.
    assert not second.promoted and "champion" in second.reason
    assert second.push is None
    registry = ModelRegistry(str(output / "registry"), load_config())
    assert [v.version for v in registry.list_versions(first.push["name"])] == [1]


# A few optimizer steps on short inputs: the transformer branch and the ensemble run for real, in seconds.
TINY_TRANSFORMER = [
    "transformer.max_steps=3",
    "transformer.max_length=32",
    "transformer.batch_size=8",
    "transformer.eval_batch_size=32",
]


def test_transformer_branch_and_ensemble_compete_and_nothing_passing_the_gates_ends_cleanly(
    tmp_path: Path, demo_csv: Path
) -> None:
    output = tmp_path / "out"
    settings = [*FAST, *NO_EXTRAS, *TINY_TRANSFORMER, "gates.min_custom_score=0.999", f"registry.cache_dir={tmp_path}"]
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--data", str(demo_csv),
            "--models", "complement_nb,transformer",
            "--output", str(output),
            *[arg for item in settings for arg in ("--set", item)],
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "no promotion" in result.output
    assert "custom_score" in result.output
    selection = json.loads((output / "results" / "selection.json").read_text())
    assert {g["model"] for g in selection["gates"]} == {"complement_nb", "transformer", "ensemble"}
    root = output / "pipeline_root"
    ensembles = [p for p in root.rglob("ensemble-candidate/model") if (p / "sentinel_model.json").is_file()]
    assert ensembles, "the ensemble step wrote no model"
    descriptor = json.loads((ensembles[0] / "sentinel_model.json").read_text())
    assert descriptor["family"] == "ensemble"
    assert sorted(m["model_type"] for m in descriptor["params"]["members"]) == ["complement_nb", "transformer"]
    assert not (output / "registry").exists() or not any((output / "registry").iterdir())
    assert not (output / "results" / "push_result.json").exists()
    status = json.loads((output / "results" / "run_status.json").read_text())
    assert status["state"] == "SUCCEEDED"


def test_a_failing_step_surfaces_its_own_error(tmp_path: Path, demo_csv: Path) -> None:
    bad = tmp_path / "bad.csv"
    lines = demo_csv.read_text().splitlines()
    header = lines[0].split(",")
    row = ["" for _ in header]
    row[header.index("text")] = "please summarise this article"
    row[header.index("label")] = "dangerous"
    bad.write_text("\n".join([*lines, ",".join(row)]) + "\n")
    with pytest.raises(PipelineError) as err:
        run_local(_request(tmp_path / "out", bad, None, []), console=io.StringIO())
    message = str(err.value)
    assert "pipeline step 'validate' failed: DataValidationError" in message
    assert "dangerous" in message
    status = json.loads((tmp_path / "out" / "results" / "run_status.json").read_text())
    assert status["state"] == "FAILED" and status["failures"][0]["stage"] == "validate"


def test_a_run_can_start_from_a_corpus_recipe(tmp_path: Path, demo_csv: Path, demo_blind_csv: Path) -> None:
    """recipe -> assemble-corpus (decontaminated against the blind set) -> the usual stages."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"""
name: demo-recipe
root: {demo_csv.parent}
sources:
  - source: "demo/{{source}}"
    path: {demo_csv.name}
    text: "{{text}}"
    label: {{field: label, map: {{"0": benign, "1": suspicious, "2": malicious}}}}
"""
    )
    output = tmp_path / "out"
    cfg = load_config(None, [*FAST, *NO_EXTRAS, *PERMISSIVE, f"registry.cache_dir={output / 'cache'}"])
    request = LocalRunRequest(
        data=None, recipe=str(recipe), blind=str(demo_blind_csv), output=output, cfg=cfg, models=["complement_nb"]
    )
    summary = run_local(request)
    assert summary.status["state"] == "SUCCEEDED" and summary.promoted
    corpus = next((output / "pipeline_root").rglob("corpus.csv"))
    assert corpus.read_text().count("\n") > 300  # the demo prompts, normalized and deduplicated
    stats = json.loads(next((output / "pipeline_root").rglob("corpus_stats.json")).read_text())
    assert [e["path"].rsplit("/", 1)[-1] for e in stats["excludes"]] == [demo_blind_csv.name]
