"""Validate the dataset (and the blind set) and hand on the cleaned rows:
:func:`prompt_sentinel.stages.prepare.validate`.

Output ``cleaned`` (Dataset, a directory): ``data/`` and, with a blind set, ``blind/``, each holding ``cleaned.csv``
and the validation report. Error-level findings fail the step with the report's own message; warnings drop the
offending rows and are counted in the metrics.
"""

from kfp.dsl import HTML, Dataset, Markdown, Metrics, Output

from components._base import sentinel_component


@sentinel_component()
def validate_data(
    data_uri: str,
    blind_uri: str,
    config_json: str,
    results_uri: str,
    cleaned: Output[Dataset],
    report: Output[Markdown],
    report_html: Output[HTML],
    metrics: Output[Metrics],
):
    """Validate ``data_uri`` (and ``blind_uri``, checked for leaks against it) per ``cfg.validation``."""
    from pathlib import Path

    from components._runtime import log_scalars, seal_metrics, stage_config
    from prompt_sentinel.stages import prepare
    from prompt_sentinel.stages.records import stage_failures

    with stage_failures("validate", results_uri):
        outcome = prepare.validate(data_uri, blind_uri, stage_config(config_json), cleaned.path)
        log_scalars(metrics, outcome.metrics())
        Path(report.path).write_text(outcome.markdown())
        Path(report_html.path).write_text(outcome.html())
        seal_metrics(metrics)
        cleaned.metadata.update({"rows": outcome.reports["data"].rows_clean, "has_blind": bool(blind_uri)})
