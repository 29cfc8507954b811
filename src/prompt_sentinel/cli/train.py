"""`sentinel train`: train one model (classical or transformer) and write its artifact directory;
`sentinel ensemble`: combine trained models into one soft-voting artifact."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from prompt_sentinel.cli.common import ConfigOption, SetOption, resolve_config
from prompt_sentinel.config import ALL_MODELS, CLASSICAL_MODELS, SentinelConfig
from prompt_sentinel.errors import ConfigError

FEATURIZERS = ("tfidf", "embeddings", "combined")
TRAIN_HELP = (
    "Train one model and write its artifact directory (skops pipeline or transformers checkpoint, descriptor, "
    f"checksums). Classical models ({', '.join(CLASSICAL_MODELS)}) run a cross-validated hyperparameter search "
    "scored by the security custom score, refit the best candidate, score --val and log the run to MLflow; "
    "--model transformer fine-tunes --base-model."
)


def run_train(
    model: str,
    data: str,
    val: str | None,
    out: str,
    cfg: SentinelConfig,
    base_model: str | None = None,
    progress: bool = True,
    cv: int | None = None,
) -> dict[str, Any]:
    """The train stage on dataset files; returns the result's summary."""
    from prompt_sentinel.stages import train  # the trainers import torch/sklearn: only when training

    if model not in ALL_MODELS:
        raise ConfigError(f"--model {model!r} is not a known model; allowed: {list(ALL_MODELS)}")
    if base_model is not None and model != "transformer":
        raise ConfigError(f"--base-model only applies to --model transformer, not {model!r}")
    result = train.run(model, data, val, cfg, out, base_model=base_model, progress=progress, cv=cv)
    summary = result.summary()
    if cv is not None:
        for metric, stats in result.details["cross_validation"]["metrics"].items():
            summary[f"cv {metric}"] = f"{stats['mean']:.4f} ± {stats['std']:.4f}"
    if result.family == "sklearn":
        summary.update(
            featurizer=cfg.featurizer.kind, best_params=result.params, balance=result.details["balance"]["applied"]
        )
    else:
        summary.update(base_model=base_model or cfg.transformer.base_model)
    return summary


ENSEMBLE_HELP = (
    "Combine trained models (local dirs or gs:// URIs, e.g. a classical model and a fine-tuned transformer) into "
    "one soft-voting model: which members to keep, their weights and the critical-error costs are searched on "
    "--val, which no member may have been trained on. The result is a model directory that evaluate, the registry "
    "and serving take like any other."
)


def run_ensemble(
    members: list[str], val: str, out: str, cfg: SentinelConfig, names: list[str] | None = None
) -> dict[str, Any]:
    """The ensemble stage on model directories and a validation file; returns the result's summary."""
    from prompt_sentinel.stages import ensemble

    result = ensemble.run(members, val, cfg, out, names=names)
    return {
        **result.summary(),
        "weights": dict(zip(result.details["members"], result.details["weights"], strict=True)),
        "validation": {
            "custom_score": result.selection_score,
            "custom_score_argmax": result.details["validation_argmax_custom_score"],
            **{f"{name} custom_score": score for name, score in result.details["member_scores"].items()},
        },
    }


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"trained {summary['model']}", show_header=False)
    for key, value in summary.items():
        if key == "validation":
            for metric, number in value.items():
                shown = f"{number:.4f}" if isinstance(number, float) else str(number)
                table.add_row(f"val {metric}", shown)
        elif isinstance(value, float):
            table.add_row(key, f"{value:.4f}")
        elif value is not None:
            table.add_row(key, str(value))
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``ensemble`` to the top-level app."""

    @app.command("train", help=TRAIN_HELP)
    def train(
        model: Annotated[str, typer.Option("--model", "-m", help=f"Model to train: one of {', '.join(ALL_MODELS)}.")],
        data: Annotated[str, typer.Option("--data", help="Training data (CSV/JSONL/Parquet, local or gs://).")],
        out: Annotated[str, typer.Option("--out", "-o", help="Model directory to write (local or gs://).")],
        val: Annotated[
            str | None, typer.Option("--val", help="Validation data scored after the refit (optional).")
        ] = None,
        featurizer: Annotated[
            str | None,
            typer.Option(
                "--featurizer",
                help=f"Features for classical models: {', '.join(FEATURIZERS)} (default: featurizer.kind).",
            ),
        ] = None,
        base_model: Annotated[
            str | None,
            typer.Option(
                "--base-model",
                help="Transformer checkpoint to fine-tune: local dir, gs:// URI or bundled:all-MiniLM-L6-v2.",
            ),
        ] = None,
        progress: Annotated[bool, typer.Option(help="Show progress bars for search and embedding.")] = True,
        cv: Annotated[
            int | None,
            typer.Option(
                "--cv",
                min=2,
                help="Also train and score K grouped folds of --data first: mean ± std of every headline metric "
                "(cv_summary.json, the report, MLflow, gates.max_cv_std).",
            ),
        ] = None,
        config: ConfigOption = None,
        overrides: SetOption = None,
    ) -> None:
        sets = list(overrides or [])
        if featurizer is not None:
            if featurizer not in FEATURIZERS:
                raise ConfigError(f"--featurizer {featurizer!r}; allowed: {list(FEATURIZERS)}")
            sets.append(f"featurizer.kind={featurizer}")
        cfg = resolve_config(config, sets)
        summary = run_train(model, data, val, out, cfg, base_model=base_model, progress=progress, cv=cv)
        _print_summary(summary)
        typer.echo(f"model written to {summary['model_dir']}")

    @app.command("ensemble", help=ENSEMBLE_HELP)
    def ensemble(
        members: Annotated[
            list[str], typer.Option("--member", help="A trained model directory (local or gs://). Repeat, 2 or more.")
        ],
        val: Annotated[str, typer.Option("--val", help="Validation data the weights and costs are tuned on.")],
        out: Annotated[str, typer.Option("--out", "-o", help="Ensemble model directory to write (local or gs://).")],
        names: Annotated[
            list[str] | None,
            typer.Option("--name", help="Member names, in --member order (default: each member's model type)."),
        ] = None,
        config: ConfigOption = None,
        overrides: SetOption = None,
    ) -> None:
        cfg = resolve_config(config, overrides)
        summary = run_ensemble(members, val, out, cfg, names)
        _print_summary(summary)
        typer.echo(f"model written to {summary['model_dir']}")
