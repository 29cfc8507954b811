"""``sentinel run``, ``sentinel compile`` and ``sentinel submit``: thin wrappers over :mod:`pipelines.local_run`
and :mod:`pipelines.submit` (imported inside the commands: ``sentinel --help`` need not load kfp and KServe)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from prompt_sentinel.cli.common import ConfigOption, SetOption, resolve_config
from prompt_sentinel.datasets import DEMO_BLIND, STARTER_CORPUS
from prompt_sentinel.errors import PipelineError


def _fmt(value: Any) -> str:
    if value in (None, ""):
        return "n/a"
    try:
        return f"{float(value):.3f}"
    except (TypeError, ValueError):
        return str(value)


def _short_status(status: str) -> str:
    """``failed: custom_score 0.30 >= 0.6: FAIL; recall_c2 …`` → ``failed 2 gates`` (details follow the table)."""
    if not status.startswith("failed:"):
        return status
    failed = [part for part in status[len("failed:") :].split(";") if part.strip()]
    return f"failed {len(failed)} gate{'s' if len(failed) != 1 else ''}"


# (results.csv column, table header)
_COLUMNS = (
    ("custom_score", "custom"),
    ("f1_macro", "F1"),
    ("recall_c2", "recall c2"),
    ("false_alarm_rate", "false alarm"),
    ("missed_threat_rate", "missed threat"),
    ("latency_p95_ms", "p95 ms"),
)


def _results_table(models: list[dict[str, str]]) -> Table:
    table = Table(title="Models (test split)")
    table.add_column("model")
    for _, header in _COLUMNS:
        table.add_column(header, justify="right")
    table.add_column("status")
    for row in models:
        status = _short_status(row.get("status", ""))
        style = "green" if status == "promoted" else ("red" if status.startswith("failed") else "")
        shown = f"[{style}]{status}[/{style}]" if style else status
        table.add_row(row.get("model", "?"), *(_fmt(row.get(c)) for c, _ in _COLUMNS), shown)
    return table


def register(app: typer.Typer) -> None:
    """Add ``run``, ``compile`` and ``submit`` to the top-level app."""

    @app.command("run")
    def run_command(
        data: Annotated[
            str | None,
            typer.Option(
                "--data",
                "-d",
                help="Labelled dataset (CSV/JSONL/Parquet, path or gs://). Default: the bundled starter corpus.",
            ),
        ] = None,
        recipe: Annotated[
            str | None,
            typer.Option(help="Corpus recipe (YAML) to assemble the training data from, instead of --data."),
        ] = None,
        recipe_root: Annotated[
            str | None, typer.Option(help="Folder the recipe's source paths are relative to (overrides root:).")
        ] = None,
        exclude: Annotated[
            list[str] | None,
            typer.Option(help="With --recipe: an evaluation set the corpus is decontaminated against. Repeatable."),
        ] = None,
        blind: Annotated[
            str | None,
            typer.Option(
                help="External blind set (reported, never used to select). Default: demo blind set "
                "when neither --data nor --recipe is given."
            ),
        ] = None,
        models: Annotated[
            list[str] | None,
            typer.Option(
                "--models",
                "-m",
                help="Trainers to run, comma-separated or repeated "
                "(default: training.models). 'transformer' adds the transformer branch.",
            ),
        ] = None,
        output: Annotated[
            Path, typer.Option("--output", "-o", help="Output directory: artifacts, registry, MLflow, results, logs.")
        ] = Path("sentinel-output"),
        train_transformer: Annotated[
            bool, typer.Option("--train-transformer", help="Also fine-tune the transformer (slow on CPU).")
        ] = False,
        registry_root: Annotated[str | None, typer.Option(help="Registry root (default: <output>/registry).")] = None,
        mlflow_uri: Annotated[
            str | None, typer.Option(help="MLflow tracking URI (default: sqlite:///<output>/mlflow.db).")
        ] = None,
        serve_smoke_test: Annotated[
            bool,
            typer.Option(
                "--serve-smoke-test/--no-serve-smoke-test",
                help="Afterwards serve the champion with the real KServe server on 127.0.0.1 and send one V1 "
                "and one V2 request.",
            ),
        ] = False,
        cache: Annotated[
            bool, typer.Option("--cache/--no-cache", help="Reuse outputs of unchanged steps from earlier runs.")
        ] = True,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show every step's full log.")] = False,
        config: ConfigOption = None,
        set_: SetOption = None,
    ) -> None:
        """Run the whole training pipeline locally with kfp.local and print every model's metrics and the verdict.

        Stages: validate, split, balance report, train, evaluate, select, push, deploy (a GitOps change).
        """
        from pipelines.local_run import LocalRunRequest, run_local

        cfg = resolve_config(config, set_)
        if data is None and recipe is None:
            data, blind = str(STARTER_CORPUS), blind or str(DEMO_BLIND)
        request = LocalRunRequest(
            data=data,
            recipe=recipe,
            recipe_root=recipe_root,
            excludes=exclude or [],
            output=output,
            cfg=cfg,
            blind=blind,
            models=models,
            train_transformer=train_transformer,
            registry_root=registry_root,
            mlflow_uri=mlflow_uri,
            cache=cache,
        )
        # Piped output (CI logs, `| tee`) would otherwise be wrapped at 80 columns and squash the table.
        console = Console(width=None if sys.stdout.isatty() else 120)
        console.print(f"[bold]running the pipeline locally[/bold] → {output.resolve()}")
        summary = run_local(request, console=sys.stderr, verbose=verbose)
        console.print(_results_table(summary.models))
        if summary.promoted:
            console.print(f"[bold green]promoted {summary.winner}[/bold green]: {summary.reason}")
        else:
            reason = summary.reason.removeprefix("no promotion: ")
            console.print(f"[bold yellow]no promotion[/bold yellow]: {reason}")
        if summary.registry_uri:
            console.print(f"registry: {summary.push['ref']} at {summary.registry_uri}")
        if summary.deploy:
            changed = ", ".join(summary.deploy.get("changed_files") or []) or "no change"
            console.print(f"deploy ({summary.deploy.get('mode')}, {summary.deploy.get('environment')}): {changed}")
        console.print(f"report: {summary.report}")
        console.print(f"log: {summary.log_file}")
        if serve_smoke_test:
            _smoke(console, request, summary)

    @app.command("compile")
    def compile_command(
        out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the pipeline YAML.")] = Path(
            "pipelines/compiled/training_pipeline.yaml"
        ),
        pipeline: Annotated[str, typer.Option("--pipeline", help="training or monitoring.")] = "training",
        config: ConfigOption = None,
        set_: SetOption = None,
    ) -> None:
        """Compile the pipeline to a KFP YAML package (compile-time settings from the config's pipeline section)."""
        from pipelines.submit import compile_pipeline

        cfg = resolve_config(config, set_)
        typer.echo(f"wrote {compile_pipeline(out, cfg, pipeline)}")

    @app.command("submit")
    def submit_command(
        host: Annotated[str, typer.Option(help="Kubeflow Pipelines API URL, e.g. https://kfp.example.com.")],
        param: Annotated[
            list[str] | None,
            typer.Option(
                "--param",
                "-p",
                help="Pipeline parameter name=value (repeatable), e.g. data_uri=gs://bucket/prompts.csv.",
            ),
        ] = None,
        namespace: Annotated[str | None, typer.Option(help="Kubeflow namespace (multi-user installs).")] = None,
        experiment: Annotated[str, typer.Option(help="KFP experiment to file the run under.")] = "prompt-sentinel",
        cron: Annotated[
            str | None, typer.Option(help="Create a recurring run on this schedule instead, e.g. '0 3 * * *'.")
        ] = None,
        token: Annotated[
            str | None,
            typer.Option(
                help="Bearer token for the KFP API (default: $KF_PIPELINES_TOKEN, else in-cluster auth).",
                envvar="KF_PIPELINES_TOKEN",
                show_envvar=False,
            ),
        ] = None,
        run_name: Annotated[str | None, typer.Option(help="Display name of the run.")] = None,
        pipeline_root: Annotated[
            str | None, typer.Option(help="gs:// prefix for the run's artifacts (default: the cluster's).")
        ] = None,
        pipeline: Annotated[
            str, typer.Option("--pipeline", help="training, or monitoring (drift check, retraining, canary).")
        ] = "training",
        config: ConfigOption = None,
        set_: SetOption = None,
    ) -> None:
        """Compile the pipeline and submit it to Kubeflow Pipelines; prints the run URL.

        With --cron it creates a recurring run instead of a single run, e.g. --pipeline monitoring --cron '0 * * * *'.
        """
        from pipelines.submit import submit_pipeline

        cfg = resolve_config(config, set_)
        result = submit_pipeline(
            host,
            param or [],
            cfg,
            config_given=bool(config or set_),
            namespace=namespace,
            experiment=experiment,
            cron=cron,
            token=token,
            run_name=run_name,
            pipeline_root=pipeline_root,
            pipeline=pipeline,
        )
        if result.recurring_run_url:
            typer.echo(f"recurring run {result.recurring_run_id} ({cron}): {result.recurring_run_url}")
        else:
            typer.echo(f"run {result.run_id}: {result.run_url}")


def _smoke(console: Console, request: Any, summary: Any) -> None:
    """Serve the champion, send the smoke panel over V1 and V2, print the answers; fail when it blocks an everyday
    prompt (a newcomer's first request must not be a false block) or the two protocols disagree."""
    from pipelines.local_run import prepare_local_run, serve_smoke_test, smoke_prompts, smoke_target

    _, cfg, arguments = prepare_local_run(request)
    target = smoke_target(summary, cfg)
    if target is None:
        console.print("[yellow]serve smoke test skipped: no champion and no evaluated candidate[/yellow]")
        return
    ref, what = target
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here
    console.print(f"[bold]serve smoke test[/bold]: starting the KServe model server on the {what}")
    verdict = serve_smoke_test(ref, cfg.registry.model_name, smoke_prompts(cfg, arguments["data_uri"]))
    table = Table(title="Serve smoke test (127.0.0.1, V1; V2 gave the same answers)")
    for column in ("kind", "expected", "decision", "label", "prompt"):
        table.add_column(column)
    for a in verdict.answers:
        if a.protocol != "v1":
            continue
        style = "green" if a.right else "red"
        table.add_row(
            a.prompt.kind, "/".join(a.prompt.expected), f"[{style}]{a.decision}[/{style}]", a.label, a.prompt.text[:70]
        )
    console.print(table)
    console.print(f"smoke panel: {verdict.summary()}")
    if verdict.protocol_disagreements:
        raise PipelineError(f"V1 and V2 answered differently for: {verdict.protocol_disagreements}")
    if verdict.blocked_everyday:
        raise PipelineError(
            f"the served model blocks {len(verdict.blocked_everyday)} everyday benign prompt(s): "
            + "; ".join(repr(t) for t in verdict.blocked_everyday)
            + " (train on more benign data, e.g. the starter corpus, or raise serving.decision.block_threshold)"
        )
