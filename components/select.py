"""Select the champion over every candidate's evaluation: :func:`prompt_sentinel.stages.select.run`.

Inputs are the classical evaluations (``dsl.Collected`` from the fan-out) and, when the transformer branch ran,
its evaluation URI (``dsl.OneOf``) and the ensemble step's (both empty otherwise). The registry's current
``champion`` of ``model_name`` is re-evaluated on this run's test split, so the comparison is paired on the same
prompts. Outputs: ``selection`` (``selection.json``, ``results.csv``, ``report.html``, ``candidates.json``, the
champion's evaluation, ``winner_evaluation.json``), ``champion`` (a copy of the winning model directory; empty
when nothing is promoted), ``report`` (the HTML report for the KFP UI), ``summary`` (Markdown verdict) and
``metrics``. Returns ``promoted``, which gates push and deploy. Never cached: the verdict depends on the
registry's current champion.
"""

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components._base import sentinel_component


@sentinel_component()
def select_model(
    config_json: str,
    registry_root: str,
    model_name: str,
    results_uri: str,
    splits: Input[Dataset],
    evaluations: Input[list[Artifact]],
    transformer_evaluation: str,
    selection: Output[Artifact],
    champion: Output[Model],
    report: Output[HTML],
    summary: Output[Markdown],
    metrics: Output[Metrics],
    ensemble_evaluation: str = "",
) -> bool:
    """Pick the model to promote (if any) and copy it to ``champion``."""
    from pathlib import Path

    from components._runtime import log_scalars, seal_metrics, stage_config
    from prompt_sentinel.data.split import read_split
    from prompt_sentinel.stages import select
    from prompt_sentinel.stages.records import publish, stage_failures

    with stage_failures("select", results_uri):
        cfg = stage_config(config_json, registry_root=registry_root, model_name=model_name)
        outcome = select.run(
            [e.path for e in evaluations] + [u for u in (transformer_evaluation, ensemble_evaluation) if u],
            read_split(splits.path, "test"),
            cfg,
            selection.path,
            champion=select.registry_champion(cfg),
            champion_out=champion.path,
            report_path=report.path,
        )
        Path(summary.path).write_text(outcome.markdown())
        log_scalars(metrics, outcome.metrics())
        seal_metrics(metrics)
        if outcome.winner:
            champion.metadata.update({"model": outcome.result.winner, "model_type": outcome.winner.get("model_type")})
        selection.metadata.update({"promoted": outcome.promoted, "winner": outcome.result.winner or ""})
        for name in select.PUBLISHED:
            publish(results_uri, name, Path(selection.path, name).read_bytes())
        return outcome.promoted
