"""`sentinel monitor`, `sentinel feedback add` and `sentinel canary evaluate|promote`: thin wrappers over
:mod:`prompt_sentinel.stages.monitor`, :mod:`prompt_sentinel.monitoring.feedback` and
:mod:`prompt_sentinel.stages.canary`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prompt_sentinel.cli.common import ConfigOption, SetOption, resolve_config

LogsOption = Annotated[
    str,
    typer.Option("--logs", help="Prediction log root (local folder or gs:// prefix) written by the predictor/sink."),
]
EnvOption = Annotated[
    str | None, typer.Option("--env", "-e", help="Environment (overlay); default deploy.environment.")
]
_COLORS = {"ok": typer.colors.GREEN, "warn": typer.colors.YELLOW, "retrain": typer.colors.RED, "skipped": None}


def monitor_command(
    logs: LogsOption,
    reference: Annotated[
        str,
        typer.Option(
            "--reference",
            "-r",
            help="The served model (NAME@ALIAS, NAME/vK, a model directory or gs:// prefix) whose training reference "
            "the traffic is compared with; or a labelled data file (with --model) for models trained without one.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for drift.json and drift.html.")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="With a data-file --reference: the model that scores it.")
    ] = None,
    window: Annotated[
        int | None, typer.Option("--window", help="Most recent records compared (monitoring.window_records).")
    ] = None,
    model_version: Annotated[
        str | None, typer.Option("--model-version", help="Only records of this served version, e.g. v3.")
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Compare logged traffic with the model's training reference: per-signal statistics and ok / warn / retrain."""
    from prompt_sentinel.stages import monitor

    cfg = resolve_config(config, set_)
    report = monitor.run(logs, reference, cfg, out, model=model, window=window, model_version=model_version)
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"drift: {report.window['records']} records vs {reference}")
    for column in ("signal", "status", "effect", "p-value", "detail"):
        table.add_column(column, overflow="fold")
    for s in report.signals:
        effect = "" if s.effect is None else f"{s.effect:.4g}"
        p = "" if s.p_value is None else f"{s.p_value:.3g}"
        table.add_row(Text(s.name), Text(s.status, style=str(_COLORS.get(s.status) or "")), effect, p, Text(s.detail))
    Console().print(table)
    skipped = report.logs.get("skipped") or {}
    if skipped:
        typer.echo("skipped log lines: " + ", ".join(f"{k}: {v}" for k, v in skipped.items()))
    typer.secho(f"verdict: {report.verdict} — {report.reason}", fg=_COLORS.get(report.verdict), bold=True)
    from prompt_sentinel.run_layout import DRIFT_HTML

    typer.echo(f"report: {out / DRIFT_HTML}")


def feedback_add_command(
    logs: LogsOption,
    labels: Annotated[str, typer.Option("--labels", "-l", help="CSV or JSONL with columns id,label (local or gs://).")],
    reviewer: Annotated[str, typer.Option("--reviewer", help="Recorded with each label.")] = "",
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Join reviewer labels (record id → label) onto logged predictions, appended under <logs>/feedback/."""
    from prompt_sentinel.monitoring.feedback import add_feedback

    cfg = resolve_config(config, set_)
    result = add_feedback(logs, labels, cfg.labels, reviewer=reviewer)
    typer.echo(f"added {result.added} label(s) to {result.file or '(nothing written)'}")
    if result.unknown_ids:
        examples = ", ".join(result.unknown_examples)
        typer.secho(f"skipped {result.unknown_ids} id(s) no logged record has (e.g. {examples})", fg="yellow")
    if result.repeated:
        typer.echo(f"{result.repeated} repeated row(s) counted once")


def canary_evaluate_command(
    logs: LogsOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for canary.json.")],
    env: EnvOption = None,
    stable: Annotated[str | None, typer.Option("--stable", help="Stable version (default: from the overlay).")] = None,
    canary: Annotated[str | None, typer.Option("--canary", help="Canary version (default: the overlay's pin).")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Compare the canary's and the stable version's logs: decision rates, latency, labelled critical errors."""
    from prompt_sentinel.stages import canary as stage

    cfg = resolve_config(config, set_)
    verdict = stage.evaluate(logs, cfg, out, environment=env, stable=stable, canary=canary)
    for label, stats in (("stable", verdict.stable), ("canary", verdict.canary)):
        rates = ", ".join(f"{k} {v:.1%}" for k, v in stats.decision_rates.items())
        p95 = "n/a" if stats.latency_p95_ms is None else f"{stats.latency_p95_ms:.1f} ms"
        typer.echo(f"{label} {stats.version}: {stats.records} records; {rates}; p95 {p95}; {stats.labelled} labelled")
    color = {"promote": "green", "rollback": "red", "wait": "yellow"}[verdict.verdict]
    typer.secho(f"verdict: {verdict.verdict}", fg=color, bold=True)
    for reason in verdict.reasons:
        typer.echo(f"  {reason}")


def canary_promote_command(
    verdict: Annotated[
        Path | None, typer.Option("--verdict", help="canary.json (or its folder) from `sentinel canary evaluate`.")
    ] = None,
    action: Annotated[
        str | None, typer.Option("--action", help="complete or rollback, instead of following a verdict.")
    ] = None,
    env: EnvOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the diff without writing the files.")] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Complete the canary (all traffic to it) or roll it back, as an overlay change to review and commit."""
    from prompt_sentinel.cli.deploy import _echo_diff
    from prompt_sentinel.errors import ConfigError
    from prompt_sentinel.stages import canary as stage

    cfg = resolve_config(config, set_)
    if (verdict is None) == (action is None):
        raise ConfigError("give exactly one of --verdict canary.json and --action complete|rollback")
    if verdict is not None:
        judged = stage.read_verdict(verdict)
        if judged["verdict"] == "wait":
            raise ConfigError(f"the verdict is 'wait': {'; '.join(judged.get('reasons') or [])}; nothing to change yet")
        action = stage.ACTIONS[judged["verdict"]]
        env = env or (judged.get("checks") or {}).get("environment")
    promotion = stage.conclude(str(action), cfg, environment=env, dry_run=dry_run)
    _echo_diff(promotion.diff)
    written = "(dry run, nothing written)" if dry_run else f"written: {', '.join(c.relpath for c in promotion.changes)}"
    typer.echo(f"{action}: {promotion.before.describe()} -> {promotion.after.describe()} {written}")


def register(app: typer.Typer) -> None:
    app.command("monitor")(monitor_command)
    feedback = typer.Typer(help="Reviewer labels for logged predictions.", no_args_is_help=True)
    feedback.command("add")(feedback_add_command)
    app.add_typer(feedback, name="feedback")
    canary = typer.Typer(help="Judge and finish canary rollouts.", no_args_is_help=True)
    canary.command("evaluate")(canary_evaluate_command)
    canary.command("promote")(canary_promote_command)
    app.add_typer(canary, name="canary")


__all__ = ["register"]
