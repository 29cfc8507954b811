"""Compare the latest logged traffic with the served model's training reference:
:func:`prompt_sentinel.stages.monitor.run`.

Outputs ``drift`` (``drift.json`` + ``drift.html``), ``report`` (the HTML page for the KFP UI), ``summary`` (the
verdict and the signal table) and ``metrics`` (verdict code, window size, each signal's effect and p-value).
Returns the verdict (``ok``, ``warn`` or ``retrain``), which gates the retraining branch. Never cached: the logs grow.
"""

from kfp.dsl import HTML, Artifact, Markdown, Metrics, Output

from components._base import sentinel_component


@sentinel_component()
def monitor_traffic(
    logs_uri: str,
    reference: str,
    config_json: str,
    registry_root: str,
    model_name: str,
    results_uri: str,
    drift: Output[Artifact],
    report: Output[HTML],
    summary: Output[Markdown],
    metrics: Output[Metrics],
) -> str:
    """The drift verdict of ``logs_uri`` against ``reference`` (default: the registry's champion)."""
    from pathlib import Path

    from components._runtime import log_scalars, seal_metrics, stage_config
    from prompt_sentinel.run_layout import DRIFT_HTML, DRIFT_REPORT
    from prompt_sentinel.stages import monitor
    from prompt_sentinel.stages.records import publish, stage_failures

    with stage_failures("monitor", results_uri):
        cfg = stage_config(config_json, registry_root=registry_root, model_name=model_name)
        ref = reference or f"{cfg.registry.root}::{cfg.registry.model_name}@champion"
        outcome = monitor.run(logs_uri, ref, cfg, drift.path)
        Path(report.path).write_bytes(Path(drift.path, DRIFT_HTML).read_bytes())
        Path(summary.path).write_text(monitor.markdown(outcome))
        log_scalars(metrics, outcome.metrics())
        seal_metrics(metrics)
        drift.metadata.update({"verdict": outcome.verdict, "fired": ",".join(outcome.fired)})
        for name in (DRIFT_REPORT, DRIFT_HTML):
            publish(results_uri, name, Path(drift.path, name).read_bytes())
        return outcome.verdict
