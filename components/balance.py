"""Featurize/balance report of the training split: :func:`prompt_sentinel.stages.balance.run`.

The KFP UI shows the class counts before and after SMOTE & co. (or that sparse TF-IDF falls back to balanced
class weights). The trainers repeat balancing inside every cross-validation fold; this step is the reviewable
record of the policy, it does not feed them.
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
    from pathlib import Path

    from components._runtime import log_scalars, seal_metrics, stage_config
    from prompt_sentinel.stages.balance import BalanceSettings, run
    from prompt_sentinel.stages.records import stage_failures

    with stage_failures("balance", results_uri):
        outcome = run(splits.path, BalanceSettings.from_config(stage_config(config_json)), balance.path)
        log_scalars(metrics, outcome.metrics())
        seal_metrics(metrics)
        Path(report.path).write_text(outcome.markdown())
