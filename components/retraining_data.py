"""The retraining dataset: the base data plus reviewer-labelled logged traffic, decontaminated against the evaluation
sets: :func:`prompt_sentinel.stages.retrain.run`.

Output ``dataset`` (``retraining_data.csv`` + ``retraining.json``); returns the CSV's URI, which the nested training
pipeline reads as its ``data_uri``.
"""

from kfp.dsl import Dataset, Metrics, Output

from components._base import sentinel_component


@sentinel_component()
def retraining_data(
    base_data_uri: str,
    logs_uri: str,
    exclude_uris: list[str],
    blind_uri: str,
    config_json: str,
    results_uri: str,
    dataset: Output[Dataset],
    metrics: Output[Metrics],
) -> str:
    """Write ``retraining_data.csv`` into ``dataset``; returns its URI."""
    from pathlib import Path

    from components._runtime import log_scalars, seal_metrics, stage_config
    from prompt_sentinel import storage
    from prompt_sentinel.run_layout import RETRAINING_DATA, RETRAINING_REPORT
    from prompt_sentinel.stages import retrain
    from prompt_sentinel.stages.records import publish, stage_failures

    with stage_failures("retraining-data", results_uri):
        held_out = [*exclude_uris, *([blind_uri] if blind_uri else [])]
        result = retrain.run(base_data_uri, logs_uri, stage_config(config_json), dataset.path, excludes=held_out)
        log_scalars(metrics, result.to_dict())
        seal_metrics(metrics)
        dataset.metadata.update({"added": result.added, "base_rows": result.base_rows})
        publish(results_uri, RETRAINING_REPORT, Path(dataset.path, RETRAINING_REPORT).read_bytes())
        return storage.join(dataset.uri, RETRAINING_DATA)
