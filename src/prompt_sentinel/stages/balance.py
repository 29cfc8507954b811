"""The ``balance`` stage: what class balancing does to the training split, before any model trains.

Featurizes the training split exactly as the trainers do (``featurizer`` settings, normalized text) and runs
:func:`~prompt_sentinel.training.balance.balance_features` on it, so reviewers see the class counts before and after
SMOTE & co. (or that sparse TF-IDF falls back to balanced class weights). The trainers repeat balancing inside
every cross-validation fold; this stage is the reviewable record of the policy, it does not feed them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prompt_sentinel.config import BalanceConfig, FeaturizerConfig, LabelConfig, SentinelConfig
from prompt_sentinel.data.split import read_split
from prompt_sentinel.features import build_featurizer, featurization_session
from prompt_sentinel.run_layout import BALANCE_REPORT
from prompt_sentinel.text import normalize_text
from prompt_sentinel.training.balance import BalanceReport, balance_features


@dataclass(frozen=True)
class BalanceSettings:
    labels: LabelConfig
    featurizer: FeaturizerConfig
    balance: BalanceConfig
    seed: int

    @classmethod
    def from_config(cls, cfg: SentinelConfig) -> BalanceSettings:
        return cls(cfg.labels, cfg.featurizer, cfg.balance, cfg.seed)


@dataclass
class BalanceOutcome:
    report: BalanceReport
    n_features: int
    settings: BalanceSettings

    def to_dict(self) -> dict[str, Any]:
        return {**self.report.to_dict(), "featurizer": self.settings.featurizer.kind, "n_features": self.n_features}

    def metrics(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for name in self.settings.labels.names:
            values[f"before.{name}"] = self.report.counts_before.get(name, 0)
            values[f"after.{name}"] = self.report.counts_after.get(name, 0)
        values["synthetic_rows"] = self.report.synthetic_rows
        return values

    def markdown(self) -> str:
        r = self.report
        lines = [
            "# Class balance of the training split",
            "",
            f"featurizer `{self.settings.featurizer.kind}` ({self.n_features} features); method `{r.method}`, "
            f"applied as `{r.applied}`" + (f" with {r.sampler}" if r.sampler else ""),
            "",
            "| class | before | after |",
            "|---|---:|---:|",
        ]
        for name in self.settings.labels.names:
            lines.append(f"| {name} | {r.counts_before.get(name, 0)} | {r.counts_after.get(name, 0)} |")
        if r.note:
            lines += ["", r.note]
        return "\n".join(lines) + "\n"


def run(splits_dir: str | Path, settings: BalanceSettings, out_file: str | Path) -> BalanceOutcome:
    """Balance report of ``<splits_dir>/train.csv``, written to ``out_file`` (``balance.json``)."""
    train = read_split(splits_dir, "train")
    texts = [normalize_text(t) for t in train["text"]]
    with featurization_session(progress=False):
        features = build_featurizer(settings.featurizer, seed=settings.seed).fit_transform(texts)
    _, _, report = balance_features(
        features, train["label"].to_numpy(), settings.balance, settings.labels, settings.seed
    )
    outcome = BalanceOutcome(report, int(features.shape[1]), settings)
    target = Path(out_file)
    if target.is_dir():
        target = target / BALANCE_REPORT
    target.write_text(json.dumps(outcome.to_dict(), indent=2, default=str))
    return outcome
