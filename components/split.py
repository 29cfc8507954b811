"""Split the cleaned data: :func:`prompt_sentinel.stages.prepare.split` (seeded, stratified, group-aware).

Output ``splits`` (Dataset, a directory): ``train.csv``, ``validation.csv``, ``test.csv``, ``blind.csv`` when a
blind set was given (never split, only carried along) and ``split_report.json``.
"""

from kfp.dsl import Dataset, Input, Markdown, Metrics, Output

from components._base import sentinel_component


@sentinel_component()
def split_data(
    config_json: str,
    results_uri: str,
    cleaned: Input[Dataset],
    splits: Output[Dataset],
    report: Output[Markdown],
    metrics: Output[Metrics],
):
    """Split ``cleaned/data/cleaned.csv`` per ``cfg.split`` and ``cfg.seed``; the blind set rides along."""
    from pathlib import Path

    from components._runtime import seal_metrics, stage_config
    from prompt_sentinel.stages import prepare
    from prompt_sentinel.stages.records import stage_failures

    with stage_failures("split", results_uri):
        cfg = stage_config(config_json)
        outcome = prepare.split(cleaned.path, cfg, splits.path)
        for name, rows in outcome.rows.items():
            metrics.log_metric(f"{name}.rows", rows)
        Path(report.path).write_text(outcome.markdown(cfg.labels.names))
        seal_metrics(metrics)
        splits.metadata.update(outcome.rows)
