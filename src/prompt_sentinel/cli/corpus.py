"""``sentinel data assemble``: a thin wrapper over the assemble stage (:mod:`prompt_sentinel.stages.assemble`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from prompt_sentinel.cli.common import ConfigOption, SetOption, resolve_config

data_app = typer.Typer(
    name="data", help="Training data: assemble a corpus from a recipe of sources.", no_args_is_help=True
)


def counts_table(result) -> Table:  # result: AssemblyResult (imported lazily with the library)
    table = Table(
        title=f"Corpus rows per source and label ({result.rows} rows)",
        caption="in: rows the entries produced; dup/conflict/decontam/capped: removed at each step",
    )
    table.add_column("source", overflow="fold", min_width=12)
    table.add_column("label", overflow="fold")
    # short headers: the table must stay readable in an 80-column terminal
    for title in ("in", "dup", "conflict", "decontam", "capped", "final"):
        table.add_column(title, justify="right")
    steps = ("after_filters", "duplicates", "conflicts", "decontaminated", "capped", "final")
    for c in result.counts:
        table.add_row(c.source, c.label, *(str(getattr(c, s)) for s in steps))
    totals = [sum(getattr(c, s) for c in result.counts) for s in steps]
    table.add_row("[bold]total[/bold]", "", *(f"[bold]{t}[/bold]" for t in totals))
    return table


@data_app.command("assemble")
def assemble(
    recipe: Annotated[str, typer.Option(help="Corpus recipe (YAML), e.g. configs/corpus/shared.yaml.")],
    out: Annotated[
        str, typer.Option(help="Output folder (or gs:// prefix): the corpus CSV, stats, SOURCES.md, licenses/.")
    ],
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            help="Evaluation set (file with a text column) whose exact/near duplicates are dropped. Repeatable."
        ),
    ] = None,
    root: Annotated[
        str | None, typer.Option(help="Folder (or gs:// prefix) the recipe's paths are relative to (overrides root:).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar over the sources.")] = True,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Assemble a training corpus from RECIPE: dedup, conflict drop, decontamination, caps, groups."""
    from prompt_sentinel.stages import assemble

    result = assemble.run(
        recipe, resolve_config(config, set_), out, excludes=exclude or [], root=root, progress=progress
    )
    console = Console()
    console.print(counts_table(result))
    per_label = ", ".join(f"{name} {n}" for name, n in result.per_label.items())
    g = result.groups
    console.print(
        f"{result.rows} rows ({per_label}); {g['groups']} groups, {g['groups_with_more_than_one_row']} with more "
        f"than one row (largest {g['largest_group']}); assembled in {result.seconds:.1f} s"
    )
    console.print(
        f"wrote {result.corpus_path}, {result.stats_md_path}, {result.stats_json_path}, {result.sources_md_path}"
    )


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group (``sentinel data assemble``) to the top-level app."""
    app.add_typer(data_app, name="data")
