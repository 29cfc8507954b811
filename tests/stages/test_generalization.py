"""The evaluate-generalization stage: fold trainers for one model family and for the ensemble."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from prompt_sentinel.config import SentinelConfig, load_config
from prompt_sentinel.data.loading import load_dataset
from prompt_sentinel.datasets import STARTER_CORPUS
from prompt_sentinel.errors import ConfigError
from prompt_sentinel.evaluation.generalization import GeneralizationError, family_of
from prompt_sentinel.models.loading import load_model
from prompt_sentinel.stages import generalization

FAMILIES = ("coconot", "deepset", "llm-warden", "hh-rlhf", "advbench", "notinject", "pallms", "gptfuzz")
FAST = [
    "featurizer.kind=tfidf",
    "featurizer.max_word_features=2000",
    "featurizer.max_char_features=2000",
    "training.param_grids.logreg.C=[5.0]",
    "training.param_grids.linear_svm.C=[0.5]",
    "training.search.cv_folds=2",
    "mlflow.enabled=false",
]


@pytest.fixture(scope="module")
def corpus() -> pd.DataFrame:
    frame = load_dataset(str(STARTER_CORPUS), SentinelConfig())
    frame = frame[frame["source"].map(family_of).isin(FAMILIES)]
    return pd.concat([g.head(25) for _, g in frame.groupby([frame["source"].map(family_of), "label"])])


def test_the_ensemble_is_trained_per_fold_from_its_members(corpus: pd.DataFrame, tmp_path: Path) -> None:
    cfg = load_config(None, [*FAST, "training.models=[logreg,linear_svm]"])
    outcome = generalization.run(corpus, "ensemble", cfg, tmp_path / "oos", folds=2, keep_models=True, progress=False)
    assert outcome.report["model"] == "ensemble" and len(outcome.report["folds"]) == 2
    assert outcome.mlflow_run_id is None  # tracking off in this config
    for fold in ("fold-0", "fold-1"):
        model = load_model(tmp_path / "oos" / "fold_models" / fold)
        assert model.family == "ensemble"
        assert {m["name"] for m in model.descriptor.params["members"]} == {"logreg", "linear_svm"}


def test_fold_trainer_input_errors(corpus: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="model 'nope' is not known"):
        generalization.fold_trainer("nope", load_config())
    one_member = load_config(None, [*FAST, "training.models=[logreg]"])
    with pytest.raises(GeneralizationError, match="an ensemble needs at least 2 models"):
        generalization.run(corpus, "ensemble", one_member, None, folds=2, progress=False)
    no_validation = load_config(
        None,
        [*FAST, "training.models=[logreg,linear_svm]", "split.train=0.85", "split.validation=0", "split.test=0.15"],
    )
    with pytest.raises(GeneralizationError, match=r"tuned on a validation part; set split\.validation > 0"):
        generalization.run(corpus, "ensemble", no_validation, None, folds=2, progress=False)
