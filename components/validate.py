"""Stage 1 — validate: check the dataset (and the blind set) and hand on the cleaned rows.

Output ``cleaned`` (Dataset, a directory): ``data/`` and, with a blind set, ``blind/``, each holding
``cleaned.csv``, ``report.md``, ``report.html`` and ``report.json`` from
:func:`prompt_sentinel.data.write_validation_outputs`. Error-level findings fail the step with the validation
report's own message; warnings drop the offending rows and are counted in the metrics.
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
    from components._runtime import seal_metrics, stage, stage_config

    with stage("validate", results_uri):
        from pathlib import Path

        from prompt_sentinel.data import validate_dataset, write_validation_outputs
        from prompt_sentinel.errors import DataValidationError

        cfg = stage_config(config_json)
        reports = {}
        if blind_uri:
            reports["blind"] = validate_dataset(blind_uri, cfg)
        reports["data"] = validate_dataset(data_uri, cfg, against={"blind": blind_uri} if blind_uri else None)
        failed = [r for r in reports.values() if not r.ok]
        if failed:
            findings = [f for r in failed for f in r.errors]
            raise DataValidationError("\n".join(r.error_message() for r in failed), findings)
        for name, rep in reports.items():
            write_validation_outputs(rep, Path(cleaned.path) / name)
            metrics.log_metric(f"{name}.rows_read", rep.rows_read)
            metrics.log_metric(f"{name}.rows_clean", rep.rows_clean)
            metrics.log_metric(f"{name}.warnings", len(rep.warnings))
            for label, count in rep.class_counts.items():
                metrics.log_metric(f"{name}.rows.{label}", count)
        markdown = "\n\n".join(r.to_markdown() for r in reports.values())
        Path(report.path).write_text(markdown)
        Path(report_html.path).write_text(reports["data"].to_html())
        seal_metrics(metrics)
        cleaned.metadata.update({"rows": reports["data"].rows_clean, "has_blind": bool(blind_uri)})
