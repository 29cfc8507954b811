"""Stage 3 — featurize/balance: what class balancing does to the training split, before any model trains.

Featurizes the training split exactly as the trainers do (``cfg.featurizer``, normalized text) and runs
:func:`prompt_sentinel.training.balance.balance_features` on it, so the KFP UI shows the class counts before and after
SMOTE & co. (or that sparse TF-IDF falls back to balanced class weights). The trainers repeat balancing inside
every cross-validation fold; this step is the reviewable record of the policy, it does not feed them.
"""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Output

from components._base import sentinel_component


@sentinel_component()
def balance_report(
    config_json: str,
    results_uri: str,
    splits: Input[Dataset],
    balance: Output[Artifact],
    report: Output[Markdown],
    metrics: Output[Metrics],
):
    """Write ``balance.json`` (the :class:`BalanceReport`) and a Markdown table of counts before/after."""
    from components._runtime import seal_metrics, stage, stage_config

    with stage("balance", results_uri):
        import json
        from pathlib import Path

        from prompt_sentinel.data import read_split
        from prompt_sentinel.features import build_featurizer, featurization_session
        from prompt_sentinel.text import normalize_text
        from prompt_sentinel.training.balance import balance_features

        cfg = stage_config(config_json)
        train = read_split(splits.path, "train")
        texts = [normalize_text(t) for t in train["text"]]
        with featurization_session(progress=False):
            features = build_featurizer(cfg.featurizer, seed=cfg.seed).fit_transform(texts)
        _, _, result = balance_features(features, train["label"].to_numpy(), cfg)
        payload = {**result.to_dict(), "featurizer": cfg.featurizer.kind, "n_features": int(features.shape[1])}
        Path(balance.path).write_text(json.dumps(payload, indent=2, default=str))
        lines = [
            "# Class balance of the training split",
            "",
            f"featurizer `{cfg.featurizer.kind}` ({features.shape[1]} features); method `{result.method}`, "
            f"applied as `{result.applied}`" + (f" with {result.sampler}" if result.sampler else ""),
            "",
            "| class | before | after |",
            "|---|---:|---:|",
        ]
        for name in cfg.labels.names:
            before, after = result.counts_before.get(name, 0), result.counts_after.get(name, 0)
            lines.append(f"| {name} | {before} | {after} |")
            metrics.log_metric(f"before.{name}", before)
            metrics.log_metric(f"after.{name}", after)
        metrics.log_metric("synthetic_rows", result.synthetic_rows)
        if result.note:
            lines += ["", result.note]
        seal_metrics(metrics)
        Path(report.path).write_text("\n".join(lines) + "\n")
