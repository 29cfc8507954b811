"""``sentinel evaluate`` and ``sentinel select``: thin wrappers over :mod:`prompt_sentinel.evaluation` and
:mod:`prompt_sentinel.evaluation.selection`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from prompt_sentinel.cli.common import ConfigOption, SetOption, resolve_config
from prompt_sentinel.evaluation.metrics_suite import HEADLINE_METRICS

_TABLE_METRICS = (*HEADLINE_METRICS, "pr_auc", "ece", "recall_c2_at_budget")


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _evaluation_table(ev: dict[str, Any]) -> Table:
    table = Table(title=f"{ev['model']} ({ev['family']}) on {ev['dataset']['n']} prompts")
    table.add_column("metric")
    table.add_column("test", justify="right")
    table.add_column("95% CI", justify="right")
    has_blind = ev.get("external") is not None
    if has_blind:
        table.add_column("blind set", justify="right")
    ci = ev["metrics"].get("confidence_intervals") or {}
    for key in _TABLE_METRICS:
        interval = ci.get(key) or {}
        shown_ci = (
            f"{_fmt(interval.get('low'))} – {_fmt(interval.get('high'))}" if interval.get("low") is not None else ""
        )
        row = [key, _fmt(ev.get(key)), shown_ci]
        if has_blind:
            row.append(_fmt(ev.get(f"{key}_external")))
        table.add_row(*row)
    for key in ("latency_p50_ms", "latency_p95_ms", "throughput_per_s", "size_mb", "peak_memory_mb"):
        if ev.get(key) is not None:
            table.add_row(key, _fmt(ev[key]), "", *([""] if has_blind else []))
    return table


def _robustness_table(rob: dict[str, Any]) -> Table:
    table = Table(title=f"Adversarial robustness ({rob['n_prompts']} prompts)")
    for col in ("transform", "detection rate", "attack success rate"):
        table.add_column(col, justify="right" if col != "transform" else "left")
    table.add_row("(none)", _fmt(rob["baseline"]["detection_rate"]), _fmt(rob["baseline"]["attack_success_rate"]))
    for name, r in rob["transforms"].items():
        table.add_row(name, _fmt(r["detection_rate"]), _fmt(r["attack_success_rate"]))
    probe = rob.get("false_alarm_probe") or {}
    if probe.get("applicable"):
        table.caption = f"false-alarm probe: {probe['n']} hard benign prompts, {probe['flagged_rate']:.1%} flagged"
    return table


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` and ``select`` to the top-level app."""

    @app.command("evaluate")
    def evaluate(
        model: Annotated[
            str, typer.Option("--model", "-m", help="Model directory, gs:// URI or registry ref (name@alias, name/vK).")
        ],
        data: Annotated[
            str, typer.Option("--data", "-d", help="Labelled test set (.csv/.jsonl/.parquet; local or gs://).")
        ],
        blind: Annotated[
            str | None, typer.Option("--blind", help="Optional external blind set, reported apart (never tuned on).")
        ] = None,
        out: Annotated[
            str | None,
            typer.Option("--out", "-o", help="Write evaluation.json, predictions.csv and charts into this directory."),
        ] = None,
        name: Annotated[
            str | None, typer.Option(help="Name of the model in reports (default: its model type).")
        ] = None,
        robustness: Annotated[
            bool, typer.Option("--robustness/--no-robustness", help="Run the adversarial transforms and probe.")
        ] = True,
        efficiency: Annotated[
            bool, typer.Option("--efficiency/--no-efficiency", help="Measure latency, throughput and memory.")
        ] = True,
        as_json: Annotated[
            bool, typer.Option("--json", help="Print the evaluation as one JSON object on stdout.")
        ] = False,
        config: ConfigOption = None,
        set_: SetOption = None,
    ) -> None:
        """Evaluate one model: security metrics with CIs, blind set, adversarial robustness, efficiency."""
        from prompt_sentinel.evaluation.evaluate import evaluate_model
        from prompt_sentinel.jsonio import to_json

        cfg = resolve_config(config, set_)
        ev = evaluate_model(
            model,
            data,
            cfg,
            blind=blind,
            out_dir=out,
            robustness=robustness,
            efficiency=efficiency,
            name=name,
            progress=not as_json,
        )
        if as_json:
            typer.echo(to_json(ev))
            return
        console = Console()
        console.print(_evaluation_table(ev))
        if ev.get("robustness") and ev["robustness"].get("applicable"):
            console.print(_robustness_table(ev["robustness"]))
        if out:
            console.print(f"wrote {out}")

    @app.command("select")
    def select(
        results: Annotated[
            str, typer.Option("--results", "-r", help="Directory with one sub-directory per model evaluation.")
        ],
        champion: Annotated[
            str | None,
            typer.Option(help="Current champion: model directory, gs:// URI or registry ref (name@alias)."),
        ] = None,
        data: Annotated[
            str | None,
            typer.Option(
                "--data", "-d", help="Test set to evaluate the champion on (default: the set the candidates used)."
            ),
        ] = None,
        report: Annotated[str | None, typer.Option(help="HTML report path (default: RESULTS/report.html).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print selection.json on stdout.")] = False,
        config: ConfigOption = None,
        set_: SetOption = None,
    ) -> None:
        """Apply the gates, rank the models and decide on promotion; writes selection.json, results.csv, report."""
        from prompt_sentinel.stages import select as select_stage

        cfg = resolve_config(config, set_)
        outcome = select_stage.run(results, data, cfg, results, champion=champion, report_path=report)
        result = outcome.result
        if as_json:
            typer.echo(result.to_json())
            return
        console = Console()
        table = Table(title="Gates")
        table.add_column("model")
        table.add_column("status")
        for gate in result.gates:
            style = "green" if gate.passed else "red"
            table.add_row(gate.model, f"[{style}]{result.status_of(gate.model)}[/{style}]")
        console.print(table)
        verdict = f"promoted {result.winner}" if result.promoted else "no promotion"
        console.print(f"[bold]{verdict}[/bold]: {result.reason}")
        copy = f" (report also at {report})" if report else ""
        console.print(f"wrote selection.json, results.csv and report.html in {results}{copy}")
