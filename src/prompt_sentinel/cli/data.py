"""``sentinel validate`` and ``sentinel split``: thin wrappers over :mod:`prompt_sentinel.data`."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from prompt_sentinel.cli.common import ConfigOption, SetOption, resolve_config
from prompt_sentinel.data.loading import Finding
from prompt_sentinel.errors import DataError, DataValidationError

_NAMED = re.compile(r"^([A-Za-z][\w-]*)=(.+)$")


def parse_against(values: list[str]) -> dict[str, str]:
    """``NAME=URI`` or ``URI`` (named after the file stem) → {name: uri}; names must be unique."""
    out: dict[str, str] = {}
    for value in values:
        match = _NAMED.match(value)
        name, uri = (match.group(1), match.group(2)) if match else (PurePosixPath(value).stem or "other", value)
        if name in out:
            raise DataError(f"--against: set name {name!r} is given twice ({out[name]} and {uri}); use NAME=URI")
        out[name] = uri
    return out


def _findings_table(findings: list[Finding], limit: int) -> Table:
    shown = findings if limit <= 0 else findings[:limit]
    title = f"Findings ({len(findings)})" + (f", first {len(shown)} shown" if len(shown) < len(findings) else "")
    table = Table(title=title, show_lines=False)
    for col in ("severity", "check", "location", "message"):
        table.add_column(col, overflow="fold")
    for f in shown:
        style = "red" if f.severity == "error" else "yellow"
        table.add_row(f"[{style}]{f.severity}[/{style}]", f.check, f.location, f.message)
    return table


def _counts_table(title: str, counts: dict[str, dict[str, int]], label_names: list[str]) -> Table:
    table = Table(title=title)
    table.add_column("label")
    for name in counts:
        table.add_column(name, justify="right")
    for label in label_names:
        table.add_row(label, *(str(c.get(label, 0)) for c in counts.values()))
    table.add_row("[bold]total[/bold]", *(f"[bold]{sum(c.values())}[/bold]" for c in counts.values()))
    return table


def register(app: typer.Typer) -> None:
    """Add ``validate`` and ``split`` to the top-level app."""

    @app.command("validate")
    def validate(
        data: Annotated[str, typer.Argument(help="Dataset to check: .csv, .jsonl or .parquet; local or gs://.")],
        out: Annotated[
            str | None,
            typer.Option(help="Write cleaned.csv + report.json/.md/.html here (only when validation passes)."),
        ] = None,
        against: Annotated[
            list[str] | None,
            typer.Option(help="Test or blind set whose texts must not appear in DATA: URI or NAME=URI. Repeatable."),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of tables.")] = False,
        limit: Annotated[int, typer.Option(help="Findings shown in the table (0 = all; the report has all).")] = 50,
        config: ConfigOption = None,
        set_: SetOption = None,
    ) -> None:
        """Check a dataset (schema, text, labels, class sizes, duplicates, leaks); exit 1 on any error."""
        from prompt_sentinel.data.validation import validate_dataset, write_validation_outputs

        cfg = resolve_config(config, set_)
        report = validate_dataset(data, cfg, against=parse_against(against or []))
        console = Console()
        if as_json:
            typer.echo(report.to_json())
        else:
            if report.rows_read:  # nothing to count when the file could not be read
                console.print(_counts_table("Class counts", {"rows": report.class_counts}, report.label_names))
            if report.findings:
                console.print(_findings_table(report.findings, limit))
            status = "[green]passed[/green]" if report.ok else "[red]FAILED[/red]"
            console.print(
                f"validation of {data} {status}: {report.rows_read} rows read, {report.rows_clean} clean, "
                f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)"
            )
        if not report.ok:
            if out:
                typer.echo(f"nothing written to {out}: validation failed", err=True)
            raise typer.Exit(1)
        if out:
            written = write_validation_outputs(report, out)
            if not as_json:
                console.print(f"wrote {', '.join(written)}")

    @app.command("split")
    def split(
        data: Annotated[str, typer.Argument(help="Dataset to split: .csv, .jsonl or .parquet; local or gs://.")],
        out: Annotated[str, typer.Option(help="Directory (or gs:// prefix) for train/validation/test.csv.")],
        blind: Annotated[
            str | None,
            typer.Option(help="External blind set: validated, leak-checked, copied as blind.csv, never split."),
        ] = None,
        config: ConfigOption = None,
        set_: SetOption = None,
    ) -> None:
        """Validate DATA, then split it stratified and group-aware (near-duplicates stay together)."""
        from prompt_sentinel.stages import prepare

        cfg = resolve_config(config, set_)
        console = Console()
        try:
            report = prepare.run(data, blind, cfg, out).report
        except DataValidationError as exc:
            console.print(_findings_table(exc.findings, 50))
            typer.echo(f"split failed: {len(exc.findings)} validation error(s); nothing written to {out}", err=True)
            raise typer.Exit(1) from None
        console.print(_counts_table(f"Rows per split (seed {cfg.seed})", report["counts"], cfg.labels.names))
        groups = report["groups"]
        console.print(
            f"{groups['near_duplicate_groups']} near-duplicate groups ({groups['rows_in_near_duplicate_groups']} rows) "
            f"kept within one split; wrote {out}"
        )
