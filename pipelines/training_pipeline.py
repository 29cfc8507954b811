"""The training pipeline: [assemble from a recipe] → validate → split → balance report → train (classical fan-out,
optional GPU transformer + ensemble) → evaluate → select → [promoted] push → deploy, inside an exit handler that
records the outcome.

Shape decisions (each one forced by running the same pipeline under ``kfp.local`` and on a cluster):

* the data source is ``dsl.If``/``dsl.Else`` on :func:`plan_data`: with ``recipe_uri`` the corpus is assembled
  first (decontaminated against ``exclude_uris`` and the blind set), otherwise ``data_uri`` is used as given; the
  validate step reads the chosen dataset's URI through ``dsl.OneOf`` over the two branches' string outputs;

* classical models fan out with ``dsl.ParallelFor`` over the single output of :func:`plan_classical`, each
  iteration training and evaluating one model; selection takes ``dsl.Collected`` evaluations;
* the transformer branch is ``dsl.If``/``dsl.Else`` on :func:`plan_transformer` (``train_transformer`` or
  ``"transformer"`` in ``models``); its evaluation reaches selection as a URI through ``dsl.OneOf`` over
  parameters (``kfp.local`` resolves ``OneOf`` for parameters, not artifacts);
* after both branches, :func:`ensemble_candidate` takes the ``dsl.Collected`` classical models and the
  transformer's evaluation URI (the same ``dsl.OneOf``; its ``source.json`` names the transformer model), builds a
  soft-voting ensemble tuned on the validation split and evaluates it. It returns an empty URI when the
  transformer branch was skipped or ``training.ensemble.enabled`` is false: the compiler refuses
  ``dsl.Collected`` inside a condition group, so the step cannot sit in the branch itself;
* push and deploy sit under ``dsl.If(select.outputs["Output"] == True)``: selection returns ``promoted``.

Compile-time settings come from ``cfg.pipeline`` (:func:`build_pipeline`): GPU accelerator and node pool,
retries on training, the MLflow token secret. Run-time settings are pipeline parameters; the whole validated
config travels as ``config_json`` (empty = defaults).
"""

from collections.abc import Callable
from typing import Any

from kfp import dsl, kubernetes
from kfp.dsl import PipelineTask

from components.assemble import assemble_corpus
from components.balance import balance_report
from components.deploy import deploy_model_version
from components.ensemble import ensemble_candidate
from components.evaluate import evaluate_candidate
from components.plan import given_dataset, no_transformer, plan_classical, plan_data, plan_transformer
from components.push import push_model_version
from components.select import select_model
from components.split import split_data
from components.status import record_run_status
from components.train_classical import train_classical_model
from components.train_transformer import train_transformer_model
from components.validate import validate_data
from prompt_sentinel.cluster import GPU_NODE_LABEL, GPU_RESOURCE, GPU_TOLERATION, MLFLOW_TOKEN_ENV
from prompt_sentinel.config import SentinelConfig

PIPELINE_NAME = "prompt-sentinel-training"
PIPELINE_DESCRIPTION = (
    "Validate, split, train (classical fan-out + optional GPU transformer), evaluate, select against the "
    "current champion, and push/deploy the winner."
)
RETRY_BACKOFF = "60s"

# (cpu request, memory request) per step: what the step needs on the demo-to-100k-row range.
RESOURCES: dict[str, tuple[str, str]] = {
    "status": ("100m", "256Mi"),
    "assemble": ("2", "4Gi"),
    "plan": ("250m", "512Mi"),
    "validate": ("1", "2Gi"),
    "split": ("1", "2Gi"),
    "balance": ("2", "4Gi"),
    "train-classical": ("2", "8Gi"),
    "train-transformer": ("4", "16Gi"),
    "evaluate": ("2", "4Gi"),
    "evaluate-transformer": ("4", "8Gi"),
    "ensemble": ("4", "8Gi"),
    "select": ("1", "4Gi"),
    "push": ("500m", "2Gi"),
    "deploy": ("500m", "1Gi"),
}


def _settle(task: PipelineTask, step: str, display: str, *, cache: bool) -> PipelineTask:
    """Resource requests, display name and caching for one task (every task goes through here)."""
    cpu, memory = RESOURCES[step]
    task.set_cpu_request(cpu).set_memory_request(memory).set_display_name(display)
    task.set_caching_options(enable_caching=cache)
    return task


def _mlflow_token(task: PipelineTask, secret: str | None) -> None:
    """Expose the MLflow token secret (optional: a tracking server without auth needs none)."""
    if secret:
        kubernetes.use_secret_as_env(task, secret, {MLFLOW_TOKEN_ENV: MLFLOW_TOKEN_ENV}, optional=True)


def _retry(task: PipelineTask, retries: int) -> None:
    if retries > 0:
        task.set_retry(num_retries=retries, backoff_duration=RETRY_BACKOFF, backoff_factor=2.0)


def build_pipeline(cfg: SentinelConfig | None = None) -> Callable[..., Any]:
    """The pipeline function, with compile-time settings from ``cfg.pipeline`` (defaults when None)."""
    cfg = cfg or SentinelConfig()
    pcfg = cfg.pipeline
    default_models = list(cfg.training.models)

    @dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION)
    def training_pipeline(
        data_uri: str = "",
        recipe_uri: str = "",
        recipe_root: str = "",
        exclude_uris: list = [],  # noqa: B006 - KFP reads the default as the parameter's default value
        blind_uri: str = "",
        config_json: str = "",
        models: list = default_models,
        train_transformer: bool = False,
        registry_root: str = "",
        model_name: str = "",
        mlflow_uri: str = "",
        results_uri: str = "",
        canary_percent: int = 0,
    ):
        """Train, evaluate and (if it wins) register and deploy a prompt-security classifier.

        Args:
            data_uri: Labelled dataset (CSV / JSONL / Parquet), local path or gs:// URI (or give recipe_uri).
            recipe_uri: A corpus recipe (YAML) to assemble the training data from instead of data_uri.
            recipe_root: Folder (gs:// prefix) the recipe's source paths are relative to (empty: the recipe's root).
            exclude_uris: Evaluation sets the assembled corpus is decontaminated against (the blind set always is).
            blind_uri: Optional external blind set: reported, never used for selection.
            config_json: The validated SentinelConfig as JSON (empty: defaults).
            models: Trainers to run (prompt_sentinel.config.ALL_MODELS); "transformer" runs the GPU branch.
            train_transformer: Also run the transformer branch.
            registry_root: Model registry root (empty: cfg.registry.root).
            model_name: Registry model name (empty: cfg.registry.model_name).
            mlflow_uri: MLflow tracking URI (empty: cfg.mlflow.tracking_uri).
            results_uri: Where selection/push/deploy/status write human-readable copies (empty: nowhere).
            canary_percent: > 0: deploy a promoted model as a canary taking this share of the traffic.
        """
        status = record_run_status(results_uri=results_uri)
        _settle(status, "status", "record run status", cache=False)

        with dsl.ExitHandler(status, name="training"):
            from_recipe = plan_data(data_uri=data_uri, recipe_uri=recipe_uri, results_uri=results_uri)
            _settle(from_recipe, "plan", "plan data source", cache=True)
            with dsl.If(from_recipe.output == True, name="from-recipe"):  # noqa: E712
                corpus = assemble_corpus(
                    recipe_uri=recipe_uri,
                    excludes=exclude_uris,
                    blind_uri=blind_uri,
                    root=recipe_root,
                    config_json=config_json,
                    results_uri=results_uri,
                )
                _settle(corpus, "assemble", "assemble corpus from recipe", cache=True)
            with dsl.Else(name="from-dataset"):
                given = given_dataset(data_uri=data_uri)
                _settle(given, "plan", "dataset given", cache=True)
            dataset = dsl.OneOf(corpus.outputs["Output"], given.output)

            validate = validate_data(
                data_uri=dataset, blind_uri=blind_uri, config_json=config_json, results_uri=results_uri
            )
            _settle(validate, "validate", "validate data", cache=True)

            split = split_data(config_json=config_json, results_uri=results_uri, cleaned=validate.outputs["cleaned"])
            _settle(split, "split", "split", cache=True)
            splits = split.outputs["splits"]

            balance = balance_report(config_json=config_json, results_uri=results_uri, splits=splits)
            _settle(balance, "balance", "featurize / balance report", cache=True)

            classical = plan_classical(models=models, results_uri=results_uri)
            _settle(classical, "plan", "plan classical models", cache=True)
            use_transformer = plan_transformer(models=models, train_transformer=train_transformer)
            _settle(use_transformer, "plan", "plan transformer", cache=True)

            with dsl.ParallelFor(classical.output, name="classical-models") as model_type:
                train = train_classical_model(
                    model_name=model_type,
                    config_json=config_json,
                    mlflow_uri=mlflow_uri,
                    results_uri=results_uri,
                    splits=splits,
                )
                _settle(train, "train-classical", "train classical model", cache=True)
                _retry(train, pcfg.training_retries)
                _mlflow_token(train, pcfg.mlflow_secret)
                evaluation = evaluate_candidate(
                    config_json=config_json, results_uri=results_uri, splits=splits, model=train.outputs["model"]
                )
                _settle(evaluation, "evaluate", "evaluate classical model", cache=True)

            with dsl.If(use_transformer.output == True, name="transformer-requested"):  # noqa: E712
                transformer = train_transformer_model(
                    config_json=config_json, mlflow_uri=mlflow_uri, results_uri=results_uri, splits=splits
                )
                _settle(transformer, "train-transformer", "train transformer (GPU)", cache=True)
                transformer.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(1)
                kubernetes.add_node_selector(transformer, GPU_NODE_LABEL, pcfg.gpu_accelerator)
                kubernetes.add_toleration(transformer, **GPU_TOLERATION)
                _retry(transformer, pcfg.training_retries)
                _mlflow_token(transformer, pcfg.mlflow_secret)
                transformer_eval = evaluate_candidate(
                    config_json=config_json,
                    results_uri=results_uri,
                    splits=splits,
                    model=transformer.outputs["model"],
                )
                _settle(transformer_eval, "evaluate-transformer", "evaluate transformer", cache=True)
            with dsl.Else(name="transformer-skipped"):
                skipped = no_transformer()
                _settle(skipped, "plan", "no transformer", cache=True)

            transformer_evaluation = dsl.OneOf(transformer_eval.outputs["Output"], skipped.output)
            ensemble = ensemble_candidate(
                config_json=config_json,
                mlflow_uri=mlflow_uri,
                results_uri=results_uri,
                splits=splits,
                classical=dsl.Collected(train.outputs["model"]),
                transformer_evaluation=transformer_evaluation,
            )
            _settle(ensemble, "ensemble", "ensemble transformer + classical, evaluate", cache=True)
            _mlflow_token(ensemble, pcfg.mlflow_secret)

            select = select_model(
                config_json=config_json,
                registry_root=registry_root,
                model_name=model_name,
                results_uri=results_uri,
                splits=splits,
                evaluations=dsl.Collected(evaluation.outputs["evaluation"]),
                transformer_evaluation=transformer_evaluation,
                ensemble_evaluation=ensemble.outputs["Output"],
            )
            _settle(select, "select", "select champion", cache=False)

            with dsl.If(select.outputs["Output"] == True, name="promoted"):  # noqa: E712
                push = push_model_version(
                    config_json=config_json,
                    registry_root=registry_root,
                    model_name=model_name,
                    mlflow_uri=mlflow_uri,
                    results_uri=results_uri,
                    champion=select.outputs["champion"],
                    selection=select.outputs["selection"],
                )
                _settle(push, "push", "push to registry", cache=False)
                _mlflow_token(push, pcfg.mlflow_secret)
                deploy = deploy_model_version(
                    config_json=config_json,
                    results_uri=results_uri,
                    registered=push.outputs["registered"],
                    canary_percent=canary_percent,
                )
                _settle(deploy, "deploy", "deploy (GitOps change)", cache=False)

    return training_pipeline


training_pipeline = build_pipeline()
