"""``sentinel evaluate-generalization``: a thin wrapper over :mod:`prompt_sentinel.stages.generalization`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from prompt_sentinel.cli.common import ConfigOption, SetOption, resolve_config

HELP = (
    "Out-of-source evaluation: train MODEL once per fold of source families (a row's family is its source up to "
    "'/'), each fold model never seeing the families it is scored on, and pool every row's prediction. Prints the "
    "pooled macro F1, custom score, recall_c2, P(benign→malicious), P(malicious→benign), the per-family table "
    "(worst first) and the scores by prompt length; --out writes generalization.json, the predictions, charts and "
    "an HTML page. MODEL is a model of training.models' kind (logreg, linear_svm, transformer, ...) or 'ensemble'."
)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def print_report(report: dict[str, Any], families: int = 0) -> None:
    """The pooled scores, the worst families (all when ``families`` is 0) and the length buckets as tables."""
    console = Console()
    pooled = Table(title=f"{report['model']} out of source: {report['dataset']['rows']} prompts, {report['fold_mode']}")
    keys = ("f1_macro", "custom_score", "recall_c2", "false_alarm_rate", "missed_threat_rate", "accuracy")
    for key in keys:
        pooled.add_column(key, justify="right")
    pooled.add_row(*(_fmt(report.get(k)) for k in keys))
    console.print(pooled)
    table = Table(title="By source family (worst first)")
    for col in ("family", "rows", "labels", "accuracy", "false alarms", "missed threats", "true → predicted"):
        table.add_column(col, justify="left" if col in ("family", "labels", "true → predicted") else "right")
    shown = report["families"] if families <= 0 else report["families"][:families]
    for f in shown:
        went = "; ".join(f"{t}: " + ", ".join(f"{p} {n}" for p, n in to.items()) for t, to in f["predicted"].items())
        labels = ", ".join(f"{k} {v}" for k, v in f["labels"].items())
        table.add_row(
            f["family"],
            str(f["rows"]),
            labels,
            _fmt(f["accuracy"]),
            str(f["false_alarms"]),
            str(f["missed_threats"]),
            went,
        )
    console.print(table)
    lengths = Table(title="By prompt length (characters)")
    for col in ("length", "rows", "accuracy", "macro F1", "custom score", "P(0→2)", "P(2→0)"):
        lengths.add_column(col, justify="right")
    bucket_keys = ("accuracy", "macro_f1", "custom_score", "false_alarm_rate", "missed_threat_rate")
    for b in report["length_buckets"]:
        lengths.add_row(b["bucket"], str(b["rows"]), *(_fmt(b.get(k)) for k in bucket_keys))
    console.print(lengths)


def _together(values: list[str] | None) -> list[list[str]]:
    return [[name.strip() for name in value.split(",") if name.strip()] for value in values or []]


def register(app: typer.Typer) -> None:
    """Add ``evaluate-generalization`` to the top-level app."""

    @app.command("evaluate-generalization", help=HELP)
    def evaluate_generalization(
        data: Annotated[
            str, typer.Option("--data", "-d", help="Corpus with text, label and source (and optionally group).")
        ],
        model: Annotated[str, typer.Option("--model", "-m", help="Model to train per fold, or 'ensemble'.")],
        folds: Annotated[
            int | None,
            typer.Option(help="Group the families into this many folds (default: one fold per family)."),
        ] = None,
        together: Annotated[
            list[str] | None,
            typer.Option(
                help="Comma-separated families that are only held out together (e.g. garak-gcg,smoothllm-gcg). "
                "Repeatable."
            ),
        ] = None,
        out: Annotated[
            str | None, typer.Option("--out", "-o", help="Write the report, predictions, charts and HTML here.")
        ] = None,
        keep_models: Annotated[
            bool, typer.Option("--keep-models", help="Also copy every fold model into OUT/fold_models.")
        ] = False,
        families: Annotated[int, typer.Option(help="Families shown in the table (0 = all).")] = 0,
        as_json: Annotated[bool, typer.Option("--json", help="Print generalization.json on stdout.")] = False,
        progress: Annotated[bool, typer.Option(help="Show a progress bar over the folds.")] = True,
        config: ConfigOption = None,
        set_: SetOption = None,
    ) -> None:
        from prompt_sentinel.jsonio import to_json
        from prompt_sentinel.stages import generalization

        cfg = resolve_config(config, set_)
        outcome = generalization.run(
            data,
            model,
            cfg,
            out,
            folds=folds,
            together=_together(together),
            keep_models=keep_models,
            progress=progress,
        )
        if as_json:
            typer.echo(to_json(outcome.report))
            return
        print_report(outcome.report, families)
        if outcome.out_dir:
            Console().print(f"wrote {outcome.out_dir}")
