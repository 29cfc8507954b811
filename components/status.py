"""Exit handler — record how the run ended, whichever step failed:
:func:`prompt_sentinel.stages.records.record_run_status`.

Writes ``run_status.json`` (KFP's final state plus the per-stage failure records each step left under
``<results_uri>/failures``, which it then clears for the next run) and a Markdown summary. It never fails itself,
so a broken status write cannot mask the real error.
"""

from kfp import dsl
from kfp.dsl import Markdown, Output

from components._base import sentinel_component


@sentinel_component()
def record_run_status(results_uri: str, status: dsl.PipelineTaskFinalStatus, summary: Output[Markdown]):
    """Record ``status`` (and the failing stage's own error message) for people and ``sentinel run``."""
    import json
    from pathlib import Path

    from prompt_sentinel.stages.records import record_run_status, status_markdown

    record = record_run_status(
        results_uri,
        {
            "state": status.state,
            "pipeline_job": status.pipeline_job_resource_name,
            "task": status.pipeline_task_name,
            "error_code": status.error_code,
            "error_message": status.error_message,
        },
    )
    Path(summary.path).write_text(status_markdown(record))
    print(json.dumps(record, indent=2))
