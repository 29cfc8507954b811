"""Assemble the training corpus from a recipe when the run starts from one: :func:`prompt_sentinel.stages.assemble.run`.

Output ``corpus`` (Dataset, a directory): ``corpus.csv``, ``corpus_stats.json``/``.md``, ``SOURCES.md`` and the
licences; ``report`` the per-label and per-family counts. Returns the URI of ``corpus.csv``, which the validate step
reads like any dataset (the recipe's sources are read from ``root``: a gs:// prefix on a cluster).
"""

from kfp.dsl import Dataset, Markdown, Metrics, Output

from components._base import sentinel_component


@sentinel_component()
def assemble_corpus(
    recipe_uri: str,
    excludes: list[str],
    blind_uri: str,
    root: str,
    config_json: str,
    results_uri: str,
    corpus: Output[Dataset],
    report: Output[Markdown],
    metrics: Output[Metrics],
) -> str:
    """Build ``corpus.csv`` from ``recipe_uri``, decontaminated against ``excludes`` and the blind set."""
    from pathlib import Path

    from components._runtime import log_scalars, seal_metrics, stage_config
    from prompt_sentinel import storage
    from prompt_sentinel.stages import assemble
    from prompt_sentinel.stages.records import stage_failures

    with stage_failures("assemble", results_uri):
        held_out = [*excludes, *([blind_uri] if blind_uri else [])]
        result = assemble.run(recipe_uri, stage_config(config_json), corpus.path, excludes=held_out, root=root)
        log_scalars(metrics, {"rows": result.rows, "rows_per_label": result.per_label, "groups": result.groups})
        seal_metrics(metrics)
        Path(report.path).write_text(assemble.markdown(result))
        corpus.metadata.update({"rows": result.rows, "recipe": recipe_uri})
        return storage.join(corpus.uri, Path(result.corpus_path).name)
