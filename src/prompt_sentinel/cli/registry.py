"""``sentinel registry …``: push, list, show, alias, promote, rollback, download, gc and sync-mlflow.

Exit status: 0 success; 1 an error (nothing changed); 3 the registry changed but its MLflow mirror could not be
updated (the message names the version; do not push again: `sentinel registry sync-mlflow` repairs the mirror).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated, Any

import typer

from prompt_sentinel import storage
from prompt_sentinel.cli.common import ConfigOption, SetOption, resolve_config
from prompt_sentinel.config import SentinelConfig
from prompt_sentinel.errors import RegistryError, SentinelError
from prompt_sentinel.registry import CANDIDATE, CHAMPION, MIRROR_EXIT_CODE, ModelRegistry, parse_ref
from prompt_sentinel.registry.versions import OK

registry_app = typer.Typer(
    help="Versioned model registry (local directory or gs://bucket/prefix), mirrored into MLflow.",
    no_args_is_help=True,
)
alias_app = typer.Typer(help="Point an alias at a version, or remove it.", no_args_is_help=True)
registry_app.add_typer(alias_app, name="alias")

RootOption = Annotated[
    str | None,
    typer.Option("--root", "-r", help="Registry root (directory or gs://bucket/prefix); default registry.root."),
]


def _registry(root: str | None, config: Path | None, overrides: list[str] | None) -> ModelRegistry:
    cfg: SentinelConfig = resolve_config(config, overrides)
    return ModelRegistry(root or cfg.registry.root, cfg)


def _registry_for_ref(
    ref: str, root: str | None, config: Path | None, overrides: list[str] | None
) -> tuple[ModelRegistry, str]:
    """A ``root::name@alias`` reference picks its own registry; ``--root`` is the fallback."""
    parsed = parse_ref(ref)
    registry = _registry(parsed.root or root, config, overrides)
    return registry, str(type(parsed)(parsed.name, parsed.version, parsed.alias))


def _console() -> Any:
    import sys

    from rich.console import Console

    # piped output (CI logs, `| grep`) gets a wide console so the metric columns are never cut to "…"
    return Console() if sys.stdout.isatty() else Console(width=200)


def _print_changes(changes: dict[str, int | None], registry: ModelRegistry | None = None) -> None:
    if not changes:
        typer.echo("aliases unchanged")
    for alias, version in sorted(changes.items()):
        typer.echo(f"  {alias} → {'(removed)' if version is None else f'v{version}'}")
    if registry is not None and registry.last_mirror_error:
        _mirror_failed(registry.last_mirror_error)


def _mirror_failed(message: str) -> None:
    """The registry change stands; its MLflow mirror does not: say so and exit with MIRROR_EXIT_CODE."""
    typer.secho(f"error: MLflow mirror not updated: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(MIRROR_EXIT_CODE)


@registry_app.command("push")
def push(
    model_dir: Annotated[str, typer.Argument(help="Model artifact directory (local or gs://).")],
    name: Annotated[str | None, typer.Option("--name", "-n", help="Model name; default registry.model_name.")] = None,
    alias: Annotated[
        list[str] | None,
        typer.Option("--alias", "-a", help=f"Alias to point at the new version (repeatable; default {CANDIDATE})."),
    ] = None,
    no_alias: Annotated[bool, typer.Option("--no-alias", help="Push without moving any alias.")] = False,
    metrics: Annotated[
        Path | None, typer.Option("--metrics", help="evaluation.json to record (default: the one inside DIR, if any).")
    ] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Pipeline run id recorded as lineage.")] = None,
    root: RootOption = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Upload a model directory as the next version and point aliases at it."""
    registry = _registry(root, config, overrides)
    metrics_data = None
    if metrics is not None:
        try:
            metrics_data = json.loads(metrics.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise RegistryError(f"--metrics {metrics}: not a readable JSON file ({exc})") from exc
    aliases = () if no_alias else tuple(alias or (CANDIDATE,))
    result = registry.push(
        model_dir,
        name=name,
        aliases=aliases,
        metrics=metrics_data,
        lineage={"pipeline_run_id": run_id} if run_id else None,
    )
    typer.echo(f"pushed {result.ref} → {result.uri} ({result.files} files)")
    if result.aliases:
        typer.echo(f"aliases: {', '.join(result.aliases)}")
    if result.mlflow_version:
        typer.echo(f"MLflow: {result.name} version {result.mlflow_version}")
    if result.mlflow_error:
        _mirror_failed(result.mlflow_error)


@registry_app.command("list")
def list_(
    name: Annotated[str | None, typer.Argument(help="Model name; omit to list the models.")] = None,
    root: RootOption = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """List the models, or one model's versions with their aliases and headline metrics."""
    from rich.table import Table

    registry = _registry(root, config, overrides)
    console = _console()
    if name is None:
        table = Table(title=f"models in {registry.root}")
        table.add_column("model")
        table.add_column("versions", justify="right")
        table.add_column("aliases", overflow="fold")
        for model in registry.list_models():
            try:  # one unreadable model must not hide the others
                versions = registry.list_versions(model)
                aliases = ", ".join(f"{a}→v{v}" for a, v in sorted(registry.aliases(model).items()))
            except SentinelError as exc:
                table.add_row(model, "?", f"[red]error: {exc}[/red]")
                continue
            corrupt = sum(i.status != OK for i in versions)
            table.add_row(model, f"{len(versions)}" + (f" ({corrupt} corrupt)" if corrupt else ""), aliases)
        console.print(table)
        return
    infos = registry.list_versions(name)
    metric_names = [m for m in registry.cfg.registry.headline_metrics if any(m in i.metrics for i in infos)]
    corrupt = [i for i in infos if i.status != OK]
    table = Table(title=f"{name} in {registry.root}")
    for column in ("version", "created", "model", "aliases", *metric_names):
        table.add_column(column, justify="right" if column in metric_names else "left")
    if corrupt:
        table.add_column("status", overflow="fold")
    for info in infos:
        status = [] if not corrupt else ["ok" if info.status == OK else f"[red]corrupt: {info.problem}[/red]"]
        table.add_row(
            f"v{info.version}",
            info.created_at[:19].replace("T", " "),
            f"{info.family}/{info.model_type}" if info.status == OK else "—",
            ", ".join(info.aliases),
            *(f"{info.metrics[m]:.4f}" if m in info.metrics else "—" for m in metric_names),
            *status,
        )
    console.print(table)
    if corrupt:
        shown = ", ".join(f"v{i.version}" for i in corrupt)
        typer.secho(f"warning: {len(corrupt)} corrupt version(s) of {name}: {shown}", fg=typer.colors.YELLOW, err=True)


@registry_app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="name@alias or name/v<N> (optionally <root>::…).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print only the metadata JSON.")] = False,
    root: RootOption = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Show a version's metadata and model card."""
    registry, local_ref = _registry_for_ref(ref, root, config, overrides)
    metadata = registry.get_metadata(local_ref)
    if as_json:
        typer.echo(json.dumps(metadata, indent=2, sort_keys=True))
        return
    summary = {k: v for k, v in metadata.items() if k not in ("files", "metrics", "package_versions", "training")}
    summary["files"] = {rel: entry["sha256"] for rel, entry in (metadata.get("files") or {}).items()}
    typer.echo(json.dumps(summary, indent=2, sort_keys=True))
    typer.echo("")
    typer.echo(registry.get_model_card(local_ref))


@alias_app.command("set")
def alias_set(
    ref: Annotated[str, typer.Argument(help="name/v<N> to point the alias at.")],
    alias: Annotated[str, typer.Argument(help="Alias name, e.g. candidate, staging.")],
    root: RootOption = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Point ALIAS at a version (nothing else moves; use `promote` for champion changes)."""
    registry, local_ref = _registry_for_ref(ref, root, config, overrides)
    name, version = registry.version_of(local_ref)
    _print_changes(registry.set_alias(name, alias, version), registry)


@alias_app.command("rm")
def alias_rm(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Argument(help="Alias to remove.")],
    root: RootOption = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Remove an alias."""
    registry = _registry(root, config, overrides)
    _print_changes(registry.remove_alias(name, alias), registry)


@registry_app.command("promote")
def promote(
    ref: Annotated[str, typer.Argument(help="name/v<N> (or name@alias) to promote.")],
    to: Annotated[
        str, typer.Option("--to", help="Alias to move; the displaced champion becomes 'previous'.")
    ] = CHAMPION,
    root: RootOption = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Promote a version to champion (or another alias), keeping the old one as 'previous'."""
    registry, local_ref = _registry_for_ref(ref, root, config, overrides)
    name, version = registry.version_of(local_ref)
    _print_changes(registry.promote(name, version, alias=to), registry)


@registry_app.command("rollback")
def rollback(
    name: Annotated[str, typer.Argument(help="Model name.")],
    root: RootOption = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Make 'previous' the champion again (the current champion becomes 'previous')."""
    registry = _registry(root, config, overrides)
    _print_changes(registry.rollback(name), registry)


@registry_app.command("download")
def download(
    ref: Annotated[str, typer.Argument(help="name@alias or name/v<N> (optionally <root>::…).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the verified model into.")],
    root: RootOption = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Download a checksum-verified copy of a version into --out."""
    registry, local_ref = _registry_for_ref(ref, root, config, overrides)
    cached = registry.resolve(local_ref)
    if storage.is_gcs(str(out)):
        raise RegistryError(f"--out {out}: must be a local directory")
    with storage.atomic_output_dir(out) as tmp:
        shutil.copytree(cached, tmp, dirs_exist_ok=True)
    typer.echo(f"downloaded {ref} → {out}")


@registry_app.command("gc")
def gc(
    name: Annotated[str | None, typer.Argument(help="Model name; omit for every model.")] = None,
    older_than: Annotated[
        float | None,
        typer.Option(
            "--older-than", help="Seconds an unfinished version must be idle; default registry.gc_grace_seconds."
        ),
    ] = None,
    root: RootOption = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Remove versions left unfinished by crashed pushes."""
    report = _registry(root, config, overrides).gc(name, older_than_s=older_than)
    removed = ", ".join(report.removed)
    typer.echo(f"removed {len(report.removed)} unfinished version(s)" + (f": {removed}" if removed else ""))
    if report.in_flight:
        kept = ", ".join(report.in_flight)
        typer.echo(f"kept {len(report.in_flight)} recent unfinished version(s) (pushes in flight?): {kept}")
    for model, aliases in report.dangling_aliases.items():
        typer.secho(
            f"warning: {model} aliases point at missing versions: {', '.join(aliases)}",
            fg=typer.colors.YELLOW,
            err=True,
        )


@registry_app.command("sync-mlflow")
def sync_mlflow(
    name: Annotated[str | None, typer.Argument(help="Model name; omit for every model.")] = None,
    root: RootOption = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Repair the MLflow mirror: register every complete version MLflow lacks, copy the registry's aliases."""
    registry = _registry(root, config, overrides)
    report = registry.sync_mlflow(name)
    for ref, mlflow_version in report.registered:
        typer.echo(f"registered {ref} in MLflow as version {mlflow_version}")
    for model, applied in sorted(report.aliases.items()):
        for alias, mlflow_version in sorted(applied.items()):
            shown = "(removed)" if mlflow_version is None else f"MLflow version {mlflow_version}"
            typer.echo(f"  {model}@{alias} → {shown}")
    if not report.in_sync:
        for problem in report.problems:
            typer.secho(f"error: {problem}", fg=typer.colors.RED, err=True)
        raise typer.Exit(MIRROR_EXIT_CODE)
    scope = name or "every model"
    typer.echo(f"MLflow mirror of {scope} in {registry.root} is in sync")


def register(app: typer.Typer) -> None:
    """Add the ``registry`` command group to the top-level app."""
    app.add_typer(registry_app, name="registry")
