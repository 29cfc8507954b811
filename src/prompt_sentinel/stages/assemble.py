"""The ``assemble`` stage: build a training corpus from a recipe of labelled sources (``sentinel data assemble``,
and the pipeline's first step when it starts from a recipe instead of a dataset).

Calls :func:`prompt_sentinel.data.corpus.assemble_corpus` with the run's labels and near-duplicate settings:
normalize, deduplicate, drop label conflicts, decontaminate against the evaluation sets in ``excludes``, cap,
group; writes ``corpus.csv`` (``text,label,source,group``), the statistics and ``SOURCES.md`` into ``out_dir``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prompt_sentinel.config import SentinelConfig
from prompt_sentinel.data.corpus import AssemblyResult, assemble_corpus


def run(
    recipe: str | Path,
    cfg: SentinelConfig,
    out_dir: str | Path,
    *,
    excludes: Sequence[str] = (),
    root: str | None = None,
    progress: bool = True,
) -> AssemblyResult:
    """Assemble ``recipe`` (a YAML file, local or gs://) into ``out_dir``; nothing is written on a bad recipe."""
    return assemble_corpus(
        str(recipe),
        str(out_dir),
        excludes=list(excludes),
        labels=cfg.labels,
        split_cfg=cfg.split,
        root=root or None,
        progress=progress,
    )


def markdown(result: AssemblyResult) -> str:
    """Rows per label and per source family, for the KFP UI."""
    lines = ["# Corpus", "", f"recipe `{result.recipe}`: **{result.rows} rows**", ""]
    lines += ["| label | rows |", "|---|---:|", *(f"| {k} | {v} |" for k, v in result.per_label.items())]
    families: dict[str, int] = {}
    for counts in result.counts:
        families[counts.family] = families.get(counts.family, 0) + counts.final
    lines += ["", "| source family | rows |", "|---|---:|"]
    lines += [f"| {family} | {rows} |" for family, rows in sorted(families.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines) + "\n"
