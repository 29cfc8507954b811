"""The monitoring pipeline: monitor → [verdict ``retrain``] retraining data → the training pipeline (nested) → gates,
champion comparison, push → the new version as a **canary** in ``deploy.environment``.

Scheduled as a recurring run (``sentinel submit --pipeline monitoring --cron "0 * * * *"``,
``manifests/kfp/monitoring-recurring-run.yaml``). Shape decisions:

* the monitor step returns the verdict as its single output, so ``dsl.If`` can branch on it under ``kfp.local`` and
  on a cluster alike;
* retraining reuses the training pipeline *as a nested pipeline* (a ``@dsl.pipeline`` called as a component), so
  validation, split, the classical fan-out, the optional GPU transformer, evaluation, selection against the
  registry's champion, push and deploy are exactly the training pipeline's, with its own exit handler recording
  ``run_status.json``; kfp 2.17's local runner executes nested pipelines, ``dsl.If`` around them included;
* the nested pipeline gets the retraining dataset (base data plus reviewer-labelled traffic, decontaminated against
  ``exclude_uris`` and the blind set) as ``data_uri`` and ``canary_percent`` (default ``deploy.canary_percent``), so a
  promoted model becomes a canary overlay change, reviewed like any promotion.
"""

from collections.abc import Callable
from typing import Any

from kfp import dsl

from components.monitor import monitor_traffic
from components.retraining_data import retraining_data
from pipelines.training_pipeline import RESOURCES, _settle, build_pipeline
from prompt_sentinel.config import SentinelConfig

PIPELINE_NAME = "prompt-sentinel-monitoring"
PIPELINE_DESCRIPTION = (
    "Compare logged traffic with the champion's training reference; on a retrain verdict, retrain with the "
    "reviewer-labelled traffic, gate, push and start the winner as a canary."
)
RESOURCES.setdefault("monitor", ("1", "4Gi"))
RESOURCES.setdefault("retraining-data", ("1", "2Gi"))


def build_monitoring_pipeline(cfg: SentinelConfig | None = None) -> Callable[..., Any]:
    cfg = cfg or SentinelConfig()
    training = build_pipeline(cfg)
    default_models = list(cfg.training.models)
    default_canary = cfg.deploy.canary_percent

    @dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION)
    def monitoring_pipeline(
        logs_uri: str,
        base_data_uri: str,
        reference: str = "",
        exclude_uris: list = [],  # noqa: B006 - KFP reads the default as the parameter's default value
        blind_uri: str = "",
        config_json: str = "",
        models: list = default_models,
        registry_root: str = "",
        model_name: str = "",
        mlflow_uri: str = "",
        results_uri: str = "",
        canary_percent: int = default_canary,
    ):
        """Watch the served model; retrain and canary it when the traffic has drifted.

        Args:
            logs_uri: Prediction log root (gs:// prefix) written by the logger sink or the predictor.
            base_data_uri: The labelled dataset the champion was trained on; retraining adds labelled traffic to it.
            reference: The model whose training reference the traffic is compared with (empty: the champion).
            exclude_uris: Evaluation sets the labelled traffic is decontaminated against (the blind set always is).
            blind_uri: Optional external blind set, passed on to the training pipeline.
            config_json: The validated SentinelConfig as JSON (empty: defaults).
            models: Trainers the retraining runs.
            registry_root: Model registry root (empty: cfg.registry.root).
            model_name: Registry model name (empty: cfg.registry.model_name).
            mlflow_uri: MLflow tracking URI (empty: cfg.mlflow.tracking_uri).
            results_uri: Where every step writes human-readable copies (drift report, selection, canary diff).
            canary_percent: Traffic share the retrained model starts with in deploy.environment.
        """
        monitor = monitor_traffic(
            logs_uri=logs_uri,
            reference=reference,
            config_json=config_json,
            registry_root=registry_root,
            model_name=model_name,
            results_uri=results_uri,
        )
        _settle(monitor, "monitor", "monitor traffic (drift)", cache=False)
        with dsl.If(monitor.outputs["Output"] == "retrain", name="drifted"):
            data = retraining_data(
                base_data_uri=base_data_uri,
                logs_uri=logs_uri,
                exclude_uris=exclude_uris,
                blind_uri=blind_uri,
                config_json=config_json,
                results_uri=results_uri,
            )
            _settle(data, "retraining-data", "base data + labelled traffic", cache=False)
            training(
                data_uri=data.outputs["Output"],
                exclude_uris=exclude_uris,
                blind_uri=blind_uri,
                config_json=config_json,
                models=models,
                registry_root=registry_root,
                model_name=model_name,
                mlflow_uri=mlflow_uri,
                results_uri=results_uri,
                canary_percent=canary_percent,
            ).set_display_name("retrain, gate, push, canary")

    return monitoring_pipeline


monitoring_pipeline = build_monitoring_pipeline()
