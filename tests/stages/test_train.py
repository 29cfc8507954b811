"""The train stage picks the trainer for a model name and hands it only the config sections it needs."""

from __future__ import annotations

import pytest

from prompt_sentinel.config import CLASSICAL_MODELS, load_config
from prompt_sentinel.errors import ConfigError
from prompt_sentinel.stages import train
from prompt_sentinel.training.classical.trainer import ClassicalTrainer
from prompt_sentinel.training.transformer.trainer import TransformerTrainer


@pytest.mark.parametrize("model", CLASSICAL_MODELS)
def test_classical_models_get_the_classical_trainer(model: str) -> None:
    cfg = load_config(None, ["seed=7", "featurizer.kind=tfidf"])
    trainer = train.make_trainer(model, cfg)
    assert isinstance(trainer, ClassicalTrainer)
    assert (trainer.family, trainer.model_type) == ("sklearn", model)
    assert trainer.settings.seed == 7 and trainer.settings.featurizer.kind == "tfidf"


def test_transformer_gets_the_transformer_trainer_with_its_base_model() -> None:
    cfg = load_config(None, ["seed=7", "transformer.max_length=64"])
    trainer = train.make_trainer("transformer", cfg, base_model="/models/minilm")
    assert isinstance(trainer, TransformerTrainer)
    assert trainer.base_model == "/models/minilm"
    assert trainer.settings.seed == 7 and trainer.settings.transformer.max_length == 64
    assert trainer.tags() == {"base_model": "/models/minilm"}


@pytest.mark.parametrize(
    ("model", "base", "message"),
    [("xgboost", None, "not a known model"), ("logreg", "/models/minilm", "only applies to the transformer")],
)
def test_bad_requests_fail_before_any_work(model: str, base: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        train.make_trainer(model, load_config(), base_model=base)


def test_a_gcs_transformer_output_mirrors_its_checkpoints_beside_it(tmp_path) -> None:
    """The checkpoint mirror a preempted pipeline step resumes from: ``<out>-checkpoints`` on gs://."""
    cfg = load_config()
    assert train.with_checkpoint_mirror(cfg, "gs://b/run/model", None).transformer.checkpoint_uri == (
        "gs://b/run/model-checkpoints"
    )
    assert train.with_checkpoint_mirror(cfg, tmp_path / "model", None).transformer.checkpoint_uri is None
    assert train.with_checkpoint_mirror(cfg, tmp_path / "m", "gs://b/ckpt").transformer.checkpoint_uri == "gs://b/ckpt"
    pinned = load_config(None, ["transformer.checkpoint_uri=gs://b/mine"])
    assert train.with_checkpoint_mirror(pinned, "gs://b/run/model", None).transformer.checkpoint_uri == "gs://b/mine"
