"""Exit handler — record how the run ended, whichever step failed (runs after everything else, always).

Writes ``run_status.json`` (KFP's final state plus the per-stage failure records each step left under
``<results_uri>/failures``, which it then clears for the next run) to ``results_uri`` and a Markdown summary
artifact. It never fails itself, so a
broken status write cannot mask the real error.
"""

from kfp import dsl
from kfp.dsl import Markdown, Output

from components._base import sentinel_component


@sentinel_component()
def record_run_status(results_uri: str, status: dsl.PipelineTaskFinalStatus, summary: Output[Markdown]):
    """Record ``status`` (and the failing stage's own error message) for people and ``sentinel run``."""
    import json
    from pathlib import Path

    record = {
        "state": status.state,
        "pipeline_job": status.pipeline_job_resource_name,
        "task": status.pipeline_task_name,
        "error_code": status.error_code,
        "error_message": status.error_message,
        "failures": [],
    }
    try:
        from components._runtime import clear_failures, publish, read_failures

        record["failures"] = read_failures(results_uri)
        publish(results_uri, "run_status.json", json.dumps(record, indent=2))
        clear_failures(results_uri)
    except Exception as exc:  # the status record must never be the reason a run fails
        print(f"could not write the run status under {results_uri!r}: {exc}")
    lines = [f"# Run {record['state']}", ""]
    for failure in record["failures"]:
        lines.append(f"- **{failure.get('stage')}** failed: {failure.get('error_type')}: {failure.get('message')}")
    if record["error_message"] and not record["failures"]:
        lines.append(f"- {record['error_message']}")
    Path(summary.path).write_text("\n".join(lines) + "\n")
    print(json.dumps(record, indent=2))
