"""Optuna search on real (demo) data: it improves on its first trial, resumes from storage, refuses bad spaces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from prompt_sentinel.config import load_config
from prompt_sentinel.data.loading import load_dataset
from prompt_sentinel.errors import ConfigError, TrainingError
from prompt_sentinel.features import build_featurizer
from prompt_sentinel.run_layout import CV_RESULTS, CV_SUMMARY, TRAINING_REPORT
from prompt_sentinel.training.base import labelled_texts
from prompt_sentinel.training.classical.estimators import model_spec
from prompt_sentinel.training.classical.optuna_search import run_optuna_search
from prompt_sentinel.training.classical.search import (
    ClassicalSettings,
    cross_validation_folds,
    families_wanted,
    source_families,
)
from prompt_sentinel.training.classical.search_space import optuna_space
from prompt_sentinel.training.classical.trainer import train_classical

FAST = [
    "featurizer.kind=tfidf",
    "mlflow.enabled=false",
    "training.search.cv_folds=3",
    "featurizer.max_char_features=5000",
]


def _cfg(*extra: str):
    return load_config(None, [*FAST, "training.search.strategy=optuna", *extra])


@pytest.fixture(scope="module")
def demo(demo_csv: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    df = load_dataset(str(demo_csv), load_config())
    train, val = train_test_split(df, test_size=0.25, stratify=df["label"], random_state=0)
    return train.reset_index(drop=True), val.reset_index(drop=True)


def _search(train: pd.DataFrame, cfg, study: str, callbacks=()):
    settings = ClassicalSettings.from_config(cfg)
    texts, y = labelled_texts(train, "train", cfg.labels)
    space = optuna_space("logreg", cfg.training.search)
    return run_optuna_search(
        model_spec("logreg"),
        texts,
        y,
        settings,
        lambda: build_featurizer(settings.featurizer, seed=cfg.seed),
        space,
        study,
        families=source_families(train, settings.training.search.cv_folds) if families_wanted(settings) else None,
        callbacks=callbacks,
    )


def test_optuna_finds_a_better_custom_score_than_its_first_trial(demo) -> None:
    train, _ = demo
    # a first trial far out in the space (C ~ 0.001: nearly constant predictions) that TPE must move away from
    cfg = _cfg(
        "training.search.optuna.n_trials=8",
        "training.search.optuna.n_startup_trials=2",
        "training.search.optuna.pruner=none",
        "training.search.optuna.ranges.logreg={C: {low: 0.0005, high: 100.0, log: true}}",
    )
    result = _search(train, cfg, "improves")
    values = result.table.sort_values("candidate")["decision_custom_score"].to_numpy(dtype=float)
    assert len(values) == 8
    assert result.study["best_value"] == pytest.approx(np.nanmax(values))
    assert np.nanmax(values) > values[0] + 0.01, values
    assert result.decision_tuning is not None  # the winner's costs tuned on its out-of-fold probabilities


class _Stop(Exception):
    """Stands in for Ctrl-C / a killed process after some trials."""


def test_interrupted_study_resumes_from_storage_without_repeating_trials(demo, tmp_path: Path) -> None:
    train, _ = demo
    storage = f"sqlite:///{tmp_path / 'hpo.db'}"
    cfg = _cfg("training.search.optuna.n_trials=6", f"training.search.optuna.storage={storage}")

    def stop_after_three(study, trial) -> None:
        if len(study.trials) == 3:
            raise _Stop

    with pytest.raises(_Stop):
        _search(train, cfg, "resume", callbacks=[stop_after_three])
    import optuna

    stored = optuna.load_study(study_name="resume", storage=storage)
    assert len(stored.trials) == 3
    first_params = [t.params["C"] for t in stored.trials]
    # a trial a killed process left RUNNING is retried with its parameters
    stale = stored.ask({"C": optuna.distributions.FloatDistribution(0.01, 100.0, log=True)})
    stale_c = stale.params["C"]

    result = _search(train, cfg, "resume")
    trials = optuna.load_study(study_name="resume", storage=storage).trials
    assert result.study["resumed_from"] == 3 and result.study["interrupted_recovered"] == 1
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(numbers)))  # numbering continues
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 6  # the budget is the study's, not this run's
    assert trials[stale.number].state.name == "FAIL" and trials[stale.number].user_attrs["interrupted"]
    new_params = [t.params["C"] for t in trials[4:]]
    assert stale_c in new_params  # retried
    assert not set(first_params) & set(new_params)  # the first three are not drawn again
    # once complete, a rerun adds nothing
    again = _search(train, cfg, "resume")
    assert again.study["new_trials"] == 0


def test_resuming_a_study_of_another_space_is_refused(demo, tmp_path: Path) -> None:
    train, _ = demo
    storage = f"sqlite:///{tmp_path / 'hpo.db'}"
    _search(train, _cfg("training.search.optuna.n_trials=1", f"training.search.optuna.storage={storage}"), "s")
    other = _cfg(
        "training.search.optuna.n_trials=2",
        f"training.search.optuna.storage={storage}",
        "training.search.optuna.ranges.logreg={C: {low: 1.0, high: 2.0}}",
    )
    with pytest.raises(TrainingError, match="searched another space"):
        _search(train, other, "s")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.search.optuna.ranges.logreg={C: {low: 5.0, high: 1.0}}", "empty or inverted range"),
        ("training.search.optuna.ranges.logreg={C: {low: 1.0, high: 1.0}}", "empty or inverted range"),
        ("training.search.optuna.ranges.logreg={C: {low: 0.0, high: 1.0}}", r"C: invalid value 0.0; allowed: a float"),
        (
            "training.search.optuna.ranges.logreg={C: {low: -1.0, high: 1.0, log: true}}",
            "log-scale range needs low > 0",
        ),
        ("training.search.optuna.ranges.logreg={max_iter: {low: 10.5, high: 100}}", "max_iter is an integer"),
        ("training.search.optuna.ranges.logreg={gamma: {low: 1, high: 2}}", "unknown parameter 'gamma'"),
        ("training.search.optuna.ranges.logreg={C: {choices: []}}", "non-empty list"),
        ("training.search.optuna.ranges.transformer={learning_rate: {low: 0.001, high: 0.0001}}", "inverted"),
        ("training.search.optuna.ranges.transformer={warmup_ratio: {low: 0.0, high: 1.5}}", "warmup_ratio"),
        ("training.search.optuna.storage=not-a-url", "is not an RDB URL"),
    ],
)
def test_bad_search_settings_fail_before_any_trial(override: str, message: str, demo, tmp_path: Path) -> None:
    train, val = demo
    cfg = _cfg(override, "training.search.optuna.n_trials=2")
    model = "transformer" if "transformer" in override else "logreg"
    out = tmp_path / "model"
    with pytest.raises(TrainingError, match=message):
        if model == "transformer":
            from prompt_sentinel.training.transformer.search_space import transformer_space

            transformer_space(cfg.training.search, cfg.transformer, cfg.labels)
        else:
            train_classical(model, train, val, cfg, out, progress=False)
    assert not out.exists()  # nothing trained, nothing written


@pytest.mark.parametrize(("field", "value"), [("sampler", "cmaes"), ("pruner", "asha")])
def test_unknown_sampler_or_pruner_is_a_config_error(field: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"training.search.optuna.{field}.*{value}"):
        _cfg(f"training.search.optuna.{field}={value}")


def test_optuna_strategy_trains_an_artifact_with_its_study_and_trials_as_mlflow_child_runs(demo, tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    train, val = demo
    cfg = load_config(
        None,
        [
            *FAST,
            "training.search.strategy=optuna",
            "training.search.optuna.n_trials=4",
            "mlflow.enabled=true",
            f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        ],
    )
    result = train_classical("logreg", train, val, cfg, tmp_path / "logreg", progress=False)
    report = json.loads((tmp_path / "logreg" / TRAINING_REPORT).read_text())["search"]
    assert report["strategy"] == "optuna" and report["optuna"]["trials"] == 4
    assert len(pd.read_csv(tmp_path / "logreg" / CV_RESULTS)) == 4
    summary = json.loads((tmp_path / "logreg" / CV_SUMMARY).read_text())
    assert len(summary["metrics"]["custom_score"]["folds"]) == 3
    client = MlflowClient(tracking_uri=cfg.mlflow.tracking_uri)
    parent = client.get_run(result.mlflow_run_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.mlflow_run_id}'"
    )
    assert len(children) == 4
    assert {c.data.tags["optuna.state"] for c in children} <= {"COMPLETE", "PRUNED"}
    assert all("C" in c.data.params and "intermediate_score" in c.data.metrics for c in children)


def test_cv_folds_can_keep_source_families_together() -> None:
    texts, y, sources = [], [], []
    for family in range(12):
        for row in range(6):
            texts.append(f"family {family} prompt {row} " + " ".join(f"w{family}x{row}y{k}" for k in range(6)))
            y.append(family % 3)
            sources.append(f"fam{family}/part{row % 2}")
    cfg = load_config(None, [*FAST, "training.search.group_by_source_family=true"])
    families = source_families(pd.DataFrame({"source": sources}), cfg.training.search.cv_folds)
    folds = cross_validation_folds(texts, np.asarray(y), ClassicalSettings.from_config(cfg), families=families)
    fold_of = {}
    for k, (_, held) in enumerate(folds):
        for i in held:
            fold_of.setdefault(sources[i].split("/")[0], set()).add(k)
    assert all(len(ks) == 1 for ks in fold_of.values()), fold_of  # no family straddles two folds
    plain = cross_validation_folds(texts, np.asarray(y), ClassicalSettings.from_config(load_config(None, FAST)))
    spread = {}
    for k, (_, held) in enumerate(plain):
        for i in held:
            spread.setdefault(sources[i].split("/")[0], set()).add(k)
    assert any(len(ks) > 1 for ks in spread.values())  # without the option they do straddle
