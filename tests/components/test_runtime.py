"""The shared component decorator (images, packaging modes) and the run-time glue the steps use."""

import math
from pathlib import Path

import pytest
from kfp.dsl import Metrics

from components import _base, _runtime
from prompt_sentinel import __version__
from prompt_sentinel.config import PipelineConfig, SentinelConfig


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (_base.CONTAINERIZED_ENV, _base.PIPELINE_IMAGE_ENV, _base.GPU_IMAGE_ENV, _base.BASE_IMAGE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(_base.PIP_INDEX_ENV, raising=False)
    return monkeypatch


def test_lightweight_mode_uses_the_project_images(clean_env: pytest.MonkeyPatch) -> None:
    defaults = PipelineConfig()
    assert _base.component_options() == {"base_image": defaults.target_image, "install_kfp_package": False}
    assert _base.component_options(gpu=True)["base_image"] == defaults.gpu_image
    clean_env.setenv(_base.PIPELINE_IMAGE_ENV, "registry.example/p:1")
    clean_env.setenv(_base.GPU_IMAGE_ENV, "registry.example/g:1")
    assert _base.component_options()["base_image"] == "registry.example/p:1"
    assert _base.component_options(gpu=True)["base_image"] == "registry.example/g:1"


def test_containerized_mode_adds_target_image_and_the_library(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(_base.CONTAINERIZED_ENV, "1")
    assert _base.component_options() == {
        "base_image": PipelineConfig().base_image,
        "target_image": PipelineConfig().target_image,
    }
    clean_env.setenv(_base.BASE_IMAGE_ENV, "ghcr.io/prompt-sentinel/pipeline:0.1.0")
    assert _base.component_options()["base_image"] == "ghcr.io/prompt-sentinel/pipeline:0.1.0"
    clean_env.delenv(_base.BASE_IMAGE_ENV)
    clean_env.setenv(_base.PIP_INDEX_ENV, "https://pypi.example/simple")
    options = _base.component_options(gpu=True)
    # `kfp component build` needs one base and one target image for the whole directory, GPU step included
    assert options == _base.component_options(gpu=False)
    assert options["base_image"] == PipelineConfig().base_image
    assert options["target_image"] == PipelineConfig().target_image
    assert options["packages_to_install"] == [f"prompt-sentinel=={__version__}"]
    assert options["pip_index_urls"] == ["https://pypi.example/simple"]


def test_containerized_component_compiles_to_the_executor_module_command(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(_base.CONTAINERIZED_ENV, "true")

    @_base.sentinel_component()
    def probe(x: str) -> str:
        return x

    container = probe.component_spec.implementation.container
    assert container.image == PipelineConfig().target_image
    # the library comes with the image: the step starts the executor directly, nothing is installed at run time
    assert container.command == ["python3", "-m", "kfp.dsl.executor_main"]


def test_stage_config_applies_pipeline_parameters() -> None:
    cfg = SentinelConfig()
    cfg.seed = 7
    rebuilt = _runtime.stage_config(cfg.model_dump_json(), registry_root="gs://b/r", mlflow_uri="http://mlflow")
    assert rebuilt.seed == 7
    assert rebuilt.registry.root == "gs://b/r"
    assert rebuilt.registry.model_name == cfg.registry.model_name  # empty parameter: config value kept
    assert rebuilt.mlflow.tracking_uri == "http://mlflow"
    assert _runtime.stage_config("").seed == SentinelConfig().seed


def test_log_scalars_keeps_finite_numbers_only(tmp_path: Path) -> None:
    metrics = Metrics(uri=str(tmp_path / "metrics"))
    logged = _runtime.log_scalars(
        metrics,
        {"f1": 0.5, "n": 3, "ok": True, "nan": math.nan, "inf": math.inf, "name": "x", "none": None,
         "per_class": {"benign": 0.9, "malicious": None}},
        prefix="val.",
    )  # fmt: skip
    assert logged == {"f1": 0.5, "n": 3.0, "ok": 1.0, "per_class.benign": 0.9}
    assert metrics.metadata == {"val.f1": 0.5, "val.n": 3.0, "val.ok": 1.0, "val.per_class.benign": 0.9}


def test_tracking_dir_is_beside_local_artifacts_and_temp_on_a_cluster(tmp_path: Path) -> None:
    local = str(tmp_path / "task" / "model")
    assert _runtime.tracking_dir_for(local, local) == str(tmp_path / "task")
    assert "sentinel-mlflow" in _runtime.tracking_dir_for("gs://b/run/model", "/gcs/b/run/model")
