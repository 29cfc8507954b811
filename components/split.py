"""Stage 2 — split: seeded, stratified, group-aware train/validation/test split of the cleaned data.

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
    from components._runtime import seal_metrics, stage, stage_config

    with stage("split", results_uri):
        from pathlib import Path

        from prompt_sentinel.data import assert_no_leak, split_dataset, write_splits
        from prompt_sentinel.data.loading import read_data_csv
        from prompt_sentinel.data.split import row_groups

        cfg = stage_config(config_json)
        root = Path(cleaned.path)
        data = read_data_csv(str(root / "data" / "cleaned.csv"))
        group_keys = row_groups(data["text"].tolist(), cfg)  # once, for the split and its report
        sets = dict(split_dataset(data, cfg, group_keys))
        blind_csv = root / "blind" / "cleaned.csv"
        if blind_csv.is_file():
            sets["blind"] = read_data_csv(str(blind_csv))
        if cfg.validation.cross_set_leak != "off":
            assert_no_leak(sets)
        result = write_splits(sets, splits.path, cfg, group_keys)
        lines = ["# Data split", "", f"seed {cfg.seed}", "", "| set | " + " | ".join(cfg.labels.names) + " | total |"]
        lines.append("|---|" + "---:|" * (len(cfg.labels.names) + 1))
        for name, counts in result["counts"].items():
            total = sum(counts.values())
            lines.append(f"| {name} | " + " | ".join(str(counts[n]) for n in cfg.labels.names) + f" | {total} |")
            metrics.log_metric(f"{name}.rows", total)
        Path(report.path).write_text("\n".join(lines) + "\n")
        seal_metrics(metrics)
        splits.metadata.update({name: len(frame) for name, frame in sets.items()})
