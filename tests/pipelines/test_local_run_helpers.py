"""Pure helpers of the local runner and bad input that must fail before any pipeline step runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.local_run import (
    LocalRunRequest,
    failure_message,
    prepare_local_run,
    read_run_summary,
    run_local,
    smoke_target,
)
from pipelines.submit import cron_expression, parse_params, pipeline_inputs
from prompt_sentinel.cli import app
from prompt_sentinel.config import ALL_MODELS, SentinelConfig, check_models
from prompt_sentinel.errors import ConfigError, DataError, PipelineError

INPUTS = {
    "data_uri": {"type": "STRING", "default": None, "required": True},
    "models": {"type": "LIST", "default": ["logreg"], "required": False},
    "train_transformer": {"type": "BOOLEAN", "default": False, "required": False},
}


def test_check_models_dedupes_splits_commas_and_names_the_allowed_set() -> None:
    assert check_models(["logreg,complement_nb", "logreg", " transformer "]) == [
        "logreg",
        "complement_nb",
        "transformer",
    ]
    with pytest.raises(ConfigError) as err:
        check_models(["logreg", "xgboost"])
    assert "xgboost" in str(err.value) and all(m in str(err.value) for m in ALL_MODELS)
    with pytest.raises(ConfigError, match="empty"):
        check_models([" , "])


def test_prepare_local_run_lays_everything_under_output(tmp_path: Path, demo_csv: Path, demo_blind_csv: Path) -> None:
    cfg = SentinelConfig()
    cfg.pipeline.training_retries = 3
    request = LocalRunRequest(
        data=str(demo_csv), blind=str(demo_blind_csv), output=tmp_path / "out", cfg=cfg, models=["complement_nb"]
    )
    paths, run_cfg, args = prepare_local_run(request)
    assert not (tmp_path / "out").exists(), "preparing must not create anything"
    assert args["data_uri"] == str(demo_csv.resolve()) and args["blind_uri"] == str(demo_blind_csv.resolve())
    assert args["models"] == ["complement_nb"] and args["train_transformer"] is False
    assert args["registry_root"] == str(tmp_path / "out" / "registry")
    assert args["mlflow_uri"] == f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    assert args["results_uri"] == str(tmp_path / "out" / "results")
    passed = SentinelConfig.model_validate_json(args["config_json"])
    assert passed.training.models == ["complement_nb"]
    assert passed.registry.root == args["registry_root"]
    assert run_cfg.pipeline.training_retries == 0, "no preemption locally: fail fast"
    assert cfg.pipeline.training_retries == 3, "the caller's config is not modified"
    assert paths.pipeline_root == tmp_path / "out" / "pipeline_root"


def test_a_recipe_run_passes_the_recipe_and_its_excludes(tmp_path: Path, repo_root: Path, demo_blind_csv: Path) -> None:
    recipe = repo_root / "configs" / "corpus" / "starter.yaml"
    request = LocalRunRequest(
        data=None, recipe=str(recipe), recipe_root="/data/raw", excludes=[str(demo_blind_csv)], output=tmp_path
    )
    args = prepare_local_run(request)[2]
    assert (args["data_uri"], args["recipe_uri"], args["recipe_root"]) == ("", str(recipe), "/data/raw")
    assert args["exclude_uris"] == [str(demo_blind_csv.resolve())]


def test_transformer_in_models_turns_the_branch_on(tmp_path: Path, demo_csv: Path) -> None:
    request = LocalRunRequest(data=str(demo_csv), output=tmp_path, models=["logreg", "transformer"])
    assert prepare_local_run(request)[2]["train_transformer"] is True


@pytest.mark.parametrize(
    ("change", "error", "needle"),
    [
        ({"data": "missing.csv"}, DataError, "--data"),
        ({"blind": "missing-blind.csv"}, DataError, "--blind"),
        ({"models": ["logreg", "gpt"]}, ConfigError, "gpt"),
        ({"data": "."}, DataError, "directory"),
        ({"recipe": "configs/corpus/starter.yaml"}, ConfigError, "exactly one of --data"),
        ({"data": None}, ConfigError, "exactly one of --data"),
    ],
)
def test_bad_input_fails_before_any_step_runs(
    tmp_path: Path, demo_csv: Path, change: dict, error: type, needle: str
) -> None:
    fields = {"data": str(demo_csv), "output": tmp_path / "out", **change}
    if "missing" in str(fields.get("data")) or "missing" in str(fields.get("blind")):
        for key in ("data", "blind"):
            if "missing" in str(fields.get(key)):
                fields[key] = str(tmp_path / fields[key])
    with pytest.raises(error, match=needle):
        run_local(LocalRunRequest(**fields))
    assert not (tmp_path / "out").exists(), "nothing may be created when the input is refused"


def test_cli_run_prints_the_reason_and_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--data", str(tmp_path / "nope.csv"), "--output", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert isinstance(result.exception, DataError)
    assert "nope.csv: no such file" in str(result.exception)


def test_parse_params_types_values_by_the_pipeline_inputs() -> None:
    params = parse_params(["data_uri=gs://b/d.csv", "models=[logreg, complement_nb]", "train_transformer=true"], INPUTS)
    assert params == {"data_uri": "gs://b/d.csv", "models": ["logreg", "complement_nb"], "train_transformer": True}
    assert parse_params(["models=logreg,linear_svm"], INPUTS)["models"] == ["logreg", "linear_svm"]
    with pytest.raises(ConfigError, match=r"no such parameter.*data_uri"):
        parse_params(["dataset=gs://b/d.csv"], INPUTS)
    with pytest.raises(ConfigError, match="true or false"):
        parse_params(["train_transformer=maybe"], INPUTS)
    with pytest.raises(ConfigError, match="name=value"):
        parse_params(["data_uri"], INPUTS)


def test_pipeline_inputs_of_the_committed_package(repo_root: Path) -> None:
    inputs = pipeline_inputs(repo_root / "pipelines" / "compiled" / "training_pipeline.yaml")
    assert not inputs["data_uri"]["required"] and not inputs["recipe_uri"]["required"]
    assert not inputs["blind_uri"]["required"]
    with pytest.raises(PipelineError, match="cannot read"):
        pipeline_inputs(repo_root / "no-such-package.yaml")


def test_cron_expression_adds_the_seconds_field() -> None:
    assert cron_expression("0 3 * * *") == "0 0 3 * * *"
    assert cron_expression("0 0 3 * * *") == "0 0 3 * * *"
    with pytest.raises(ConfigError, match="5 fields"):
        cron_expression("daily")


def _write(root: Path, name: str, payload: object) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(payload if isinstance(payload, str) else json.dumps(payload))


def test_read_run_summary_and_failure_message(tmp_path: Path) -> None:
    _write(tmp_path, "selection.json", {"promoted": False, "winner": None, "reason": "no promotion: gates"})
    _write(tmp_path, "results.csv", "model,custom_score,status\nlogreg,0.5,failed: custom_score 0.5 >= 0.6: FAIL\n")
    _write(tmp_path / "failures", "split.json", {"stage": "split", "error_type": "DataError", "message": "too few"})
    summary = read_run_summary(tmp_path, log_file=tmp_path / "pipeline.log")
    assert not summary.promoted and summary.reason == "no promotion: gates"
    status = "failed: custom_score 0.5 >= 0.6: FAIL"
    assert summary.models == [{"model": "logreg", "custom_score": "0.5", "status": status}]
    assert summary.push is None and summary.report is None
    message = failure_message(summary)
    assert "pipeline step 'split' failed: DataError: too few" in message
    assert str(tmp_path / "pipeline.log") in message
    assert failure_message(read_run_summary(tmp_path / "empty"), "kfp said no").startswith("kfp said no")


def test_smoke_target_falls_back_to_the_best_candidate(tmp_path: Path) -> None:
    cfg = SentinelConfig()
    cfg.registry.root = str(tmp_path / "registry")
    summary = read_run_summary(tmp_path)
    assert smoke_target(summary, cfg) is None
    summary.candidates = {
        "logreg": {"model_uri": "/m/logreg", "custom_score": 0.4},
        "complement_nb": {"model_uri": "/m/nb", "custom_score": 0.5},
        "broken": {"model_uri": "/m/x", "custom_score": None},
    }
    ref, what = smoke_target(summary, cfg)
    assert ref == "/m/nb" and "complement_nb" in what and "not promoted" in what
