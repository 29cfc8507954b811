"""Transformer fine-tuning: a MiniLM smoke run, resume after preemption, tracking, and bad inputs.

The MiniLM test fine-tunes the bundled all-MiniLM-L6-v2 for a few steps on a slice of the demo set. Resume,
tracking and input checks use a real but tiny BERT (2 layers, hidden 32, the MiniLM tokenizer) so they run in
seconds; what they test — counters, RNG, optimizer and controller state, file layout — does not depend on size.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from prompt_sentinel import storage
from prompt_sentinel.checksums import verify_manifest
from prompt_sentinel.config import InferenceConfig, SentinelConfig, load_config
from prompt_sentinel.errors import TrainingError
from prompt_sentinel.metrics import custom_score, score_from_confusion
from prompt_sentinel.models.base import read_descriptor
from prompt_sentinel.models.loading import load_model
from prompt_sentinel.training.base import TrainResult
from prompt_sentinel.training.transformer.checkpoints import (
    LATEST_POINTER,
    STATE_FILE,
    work_dir_for,
)
from prompt_sentinel.training.transformer.trainer import train_transformer
from tests.fixtures.tiny_bert import build_tiny_bert, demo_frames

ARTIFACT_FILES = {
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "training_args.json",
    "metrics_history.json",
    "alpha_trajectory.json",
    "training.json",
    "sentinel_model.json",
    "checksums.json",
}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # the tiny model's ops are far too small to gain from threads, and spinning threads make it much slower
    # on a busy machine; the MiniLM test raises this to 2 (loading a model resets it to the CPU limit)
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def frames(demo_csv: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """48 training rows (16 per class) and 24 validation rows (8 per class) from the bundled demo set."""
    train, val = demo_frames(demo_csv)
    return train[["text", "label"]], val[["text", "label"]]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT encoder checkpoint (no classifier head) with the bundled tokenizer."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def tiny_cfg(*overrides: str) -> SentinelConfig:
    return load_config(
        None,
        [
            "mlflow.enabled=false",
            "transformer.max_length=32",
            "transformer.batch_size=8",
            "transformer.learning_rate=1e-3",
            *overrides,
        ],
    )


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


class Preempted(Exception):
    """Stands in for the pod being killed mid-training."""


def _interrupt_at(step: int, seen: list[int]):
    def callback(global_step: int) -> None:
        seen.append(global_step)
        if global_step == step:
            raise Preempted(f"preempted at step {global_step}")

    return callback


# ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_minilm_fine_tunes_and_reloads_to_identical_predictions(frames, tmp_path: Path) -> None:
    torch.set_num_threads(2)
    train_df, val_df = frames
    cfg = load_config(
        None,
        [
            "mlflow.enabled=false",
            "transformer.max_length=64",
            "transformer.batch_size=8",
            "transformer.epochs=2",
            "transformer.learning_rate=3e-4",
        ],
    )
    out = tmp_path / "minilm"
    result = train_transformer(train_df, val_df, cfg, out, progress=False)

    assert isinstance(result, TrainResult)
    assert (
        result.details["global_step"] == result.details["total_steps"] == 12
    )  # 48 rows / batch 8 = 6 steps × 2 epochs
    history = result.details["metrics_history"]
    assert [h["step"] for h in history] == [6, 12]  # one evaluation per epoch
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]

    assert {p.name for p in out.iterdir()} >= ARTIFACT_FILES
    assert not any(out.glob("*.bin")) and not any(out.glob("*.pt"))
    verify_manifest(out)
    assert not work_dir_for(out).exists()  # checkpoints are removed once the artifact is in place
    hf_config = json.loads((out / "config.json").read_text())
    assert hf_config["id2label"] == {"0": "benign", "1": "suspicious", "2": "malicious"}
    assert hf_config["label2id"] == {"benign": 0, "suspicious": 1, "malicious": 2}
    descriptor = read_descriptor(out)
    assert (descriptor.family, descriptor.model_type, descriptor.max_length) == ("transformer", "transformer", 64)
    assert descriptor.labels == cfg.labels
    # the thresholds come from the config, the critical-error costs from tuning at the best evaluation
    best = result.validation_metrics
    assert descriptor.decision == cfg.serving.decision.model_copy(
        update={"false_alarm_cost": best["false_alarm_cost"], "missed_threat_cost": best["missed_threat_cost"]}
    )
    training = json.loads((out / "training.json").read_text())
    assert (
        training["best_step"] == result.details["best_step"]
        and training["final_alpha"] == result.details["final_alpha"]
    )
    assert training["samples_per_second"] > 0 and training["device"] == "cpu" and training["precision"] == "fp32"
    assert len(json.loads((out / "alpha_trajectory.json").read_text())) == len(history) + 1

    # the reloaded artifact reproduces the validation predictions of the best checkpoint exactly (on torch: the
    # ONNX exports only promise the parity gate's bounds, checked in tests/inference)
    model = load_model(out, inference=InferenceConfig(backend="torch"))
    proba = model.predict_proba(val_df["text"].tolist(), batch_size=7)
    cm = np.zeros((3, 3), dtype=int)
    np.add.at(cm, (val_df["label"].to_numpy(), proba.argmax(axis=1)), 1)
    assert cm.tolist() == result.validation_metrics["confusion_matrix"]  # the argmax view the controller watched
    assert score_from_confusion(cm, cfg.labels.roles).custom_score == pytest.approx(best["custom_score"])
    # the best checkpoint was chosen on the score under the stored rule, which the loaded model reproduces
    rule_score = custom_score(val_df["label"], model.labels_for(proba), cfg.labels.roles, 3)
    assert rule_score == pytest.approx(result.selection_score) == pytest.approx(best["decision_custom_score"])
    assert best["decision_custom_score"] >= best["custom_score"]
    reloaded = load_model(out, inference=InferenceConfig(backend="torch"))
    np.testing.assert_array_equal(reloaded.predict_proba(val_df["text"].tolist(), batch_size=7), proba)


def test_resume_after_preemption_continues_and_matches_an_uninterrupted_run(
    frames, tiny_base: Path, tmp_path: Path, gcs_bucket: str
) -> None:
    train_df, val_df = frames
    # 48 rows / batch 10 → 5 micro-batches → 3 optimizer steps per epoch with accumulation 2 (windows of
    # 2, 2 and 1 micro-batches); evaluations at steps 3 and 6, checkpoints at 2, 3, 4 and 6
    overrides = [
        "transformer.batch_size=10",
        "transformer.epochs=2",
        "transformer.gradient_accumulation_steps=2",
        "transformer.checkpoint_every_steps=2",
        "transformer.controller.patience=1",
    ]
    reference = train_transformer(
        train_df, val_df, tiny_cfg(*overrides), tmp_path / "reference", str(tiny_base), progress=False
    )
    assert reference.details["total_steps"] == 6 and reference.details["resumed_from_step"] == 0
    assert reference.details["final_alpha"] != [
        1.0,
        1.0,
        1.5,
    ]  # the controller acted, so its state must survive a resume

    remote = f"gs://{gcs_bucket}/checkpoints/run-1"
    cfg = tiny_cfg(*overrides, f"transformer.checkpoint_uri={remote}")
    out = tmp_path / "resumed"
    work = work_dir_for(out)

    first: list[int] = []
    with pytest.raises(Preempted):
        train_transformer(train_df, val_df, cfg, out, str(tiny_base), False, step_callback=_interrupt_at(2, first))
    assert first == [1, 2]
    assert not out.exists()  # no half-written artifact
    assert json.loads((work / "_checkpoints" / "last" / STATE_FILE).read_text())["global_step"] == 2
    assert storage.read_text(f"{remote}/{LATEST_POINTER}") == "step-00000002"

    # a fresh pod: the local disk is gone, the gs:// checkpoint is not
    shutil.rmtree(work)
    second: list[int] = []
    with pytest.raises(Preempted):
        train_transformer(train_df, val_df, cfg, out, str(tiny_base), False, step_callback=_interrupt_at(5, second))
    assert second == [3, 4, 5]  # resumed at step 2, not 0; step 5 is lost with the pod
    assert storage.read_text(f"{remote}/{LATEST_POINTER}") == "step-00000004"
    bucket, prefix = storage.parse_gs_uri(remote)
    remote_dirs = {
        b.name[len(prefix) + 1 :].split("/")[0] for b in storage.gcs_client().list_blobs(bucket, prefix=prefix)
    }
    assert remote_dirs == {LATEST_POINTER, "step-00000004"}  # older checkpoints are pruned

    third: list[int] = []
    result = train_transformer(train_df, val_df, cfg, out, str(tiny_base), False, step_callback=third.append)
    assert third == [5, 6]  # from the local checkpoint at step 4 (mid-epoch: after window 1 of epoch 2)
    assert result.details["resumed_from_step"] == 4 and result.details["global_step"] == 6
    assert json.loads((out / "training.json").read_text())["resumed_from_steps"] == [2, 4]
    assert not work.exists()
    load_model(out)  # complete and verified

    # same batches, dropout masks, optimizer moments, schedule and controller weights as without preemption
    assert result.details["final_alpha"] == reference.details["final_alpha"]
    assert [h["custom_score"] for h in result.details["metrics_history"]] == [
        h["custom_score"] for h in reference.details["metrics_history"]
    ]
    assert json.loads((out / "alpha_trajectory.json").read_text()) == reference.details["alpha_trajectory"]
    resumed_weights, reference_weights = (
        _tensors(out / "model.safetensors"),
        _tensors(reference.model_dir / "model.safetensors"),
    )
    assert resumed_weights.keys() == reference_weights.keys()
    for name, tensor in reference_weights.items():
        assert torch.equal(resumed_weights[name], tensor), name


def test_checkpoint_of_a_different_run_is_not_resumed(frames, tiny_base: Path, tmp_path: Path) -> None:
    train_df, val_df = frames
    out = tmp_path / "model"
    with pytest.raises(Preempted):
        train_transformer(
            train_df,
            val_df,
            tiny_cfg("transformer.max_steps=3", "transformer.checkpoint_every_steps=1", "seed=1"),
            out,
            str(tiny_base),
            False,
            step_callback=_interrupt_at(2, []),
        )
    assert (work_dir_for(out) / "_checkpoints" / "last" / STATE_FILE).is_file()
    steps: list[int] = []
    result = train_transformer(
        train_df,
        val_df,
        tiny_cfg("transformer.max_steps=3", "transformer.checkpoint_every_steps=1", "seed=2"),
        out,
        str(tiny_base),
        False,
        step_callback=steps.append,
    )
    assert steps == [1, 2, 3] and result.details["resumed_from_step"] == 0


def test_mlflow_run_and_gs_output(frames, tiny_base: Path, tmp_path: Path, gcs_bucket: str) -> None:
    from mlflow.tracking import MlflowClient

    train_df, val_df = frames
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = tiny_cfg(
        "mlflow.enabled=true",
        f"mlflow.tracking_uri={tracking_uri}",
        "transformer.max_steps=4",
        "transformer.eval_every_steps=2",
        "transformer.loss=weighted_ce",
        "transformer.scheduler=cosine",
    )
    uri = f"gs://{gcs_bucket}/models/tiny"
    result = train_transformer(train_df, val_df, cfg, uri, str(tiny_base), progress=False)
    assert result.model_dir == uri and [h["step"] for h in result.details["metrics_history"]] == [2, 4]
    summary = json.loads(json.dumps(result.summary()))  # what the CLI prints
    assert summary["model_dir"] == uri and summary["mlflow_run_id"] == result.mlflow_run_id

    model = load_model(uri, cache_dir=tmp_path / "download")
    assert model.predict_proba(["hello there"]).shape == (1, 3)

    client = MlflowClient(tracking_uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.data.params["transformer.loss"] == "weighted_ce"
    assert run.data.tags["family"] == "transformer"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "custom_score")] == [2, 4]
    assert run.data.metrics["best_custom_score"] == pytest.approx(result.selection_score)
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/checksums.json", "model/model.safetensors", "model/sentinel_model.json"} <= logged
    assert "model_requirements.txt" in {f.path for f in client.list_artifacts(run.info.run_id)}


# ---------------------------------------------------------------------------------------------------------
# bad inputs: a clear TrainingError before any training, and nothing written


def _copy_without(src: Path, dst: Path, drop: set[str]) -> Path:
    dst.mkdir()
    for path in src.iterdir():
        if path.is_file() and path.name not in drop:
            shutil.copy(path, dst / path.name)
    return dst


def _two_label_checkpoint(tiny_base: Path, dst: Path) -> Path:
    from transformers import AutoTokenizer, BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(tiny_base, num_labels=2)
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(tiny_base).save_pretrained(dst)
    return dst


TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no_config", "config.json"),
        ("no_tokenizer", "no tokenizer files"),
        ("pickled_weights_only", "no model.safetensors"),
        ("two_label_checkpoint", "fine-tuned for 2 labels"),
        ("max_length_too_long", r"max_length=256 exceeds .* 128 tokens"),
        ("minilm_max_length_too_long", r"max_length=1024 exceeds .* 512 tokens"),
        ("empty_validation", "validation set is empty"),
        ("no_validation", "validation set is missing"),
        ("label_out_of_range", r"class ids 0..2 .*found 7"),
        ("missing_base_model", "no such directory"),
        ("unknown_bundled", "unknown bundled"),
    ],
)
def test_bad_inputs_raise_before_training(case: str, message: str, frames, tiny_base: Path, tmp_path: Path) -> None:
    train_df, val_df = frames
    base, cfg = str(tiny_base), tiny_cfg("transformer.max_steps=1")
    if case == "no_config":
        base = str(_copy_without(tiny_base, tmp_path / "b", {"config.json"}))
    elif case == "no_tokenizer":
        base = str(_copy_without(tiny_base, tmp_path / "b", TOKENIZER_FILES))
    elif case == "pickled_weights_only":
        base = str(_copy_without(tiny_base, tmp_path / "b", {"model.safetensors"}))
        (Path(base) / "pytorch_model.bin").write_bytes(b"never unpickled")
    elif case == "two_label_checkpoint":
        base = str(_two_label_checkpoint(tiny_base, tmp_path / "b"))
    elif case == "max_length_too_long":
        cfg = tiny_cfg("transformer.max_steps=1", "transformer.max_length=256")
    elif case == "minilm_max_length_too_long":
        base, cfg = "bundled:all-MiniLM-L6-v2", tiny_cfg("transformer.max_steps=1", "transformer.max_length=1024")
    elif case == "empty_validation":
        val_df = val_df.iloc[:0]
    elif case == "no_validation":
        val_df = None
    elif case == "label_out_of_range":
        train_df = train_df.assign(label=[7, *train_df["label"].tolist()[1:]])
    elif case == "missing_base_model":
        base = str(tmp_path / "nowhere")
    elif case == "unknown_bundled":
        base = "bundled:bert-huge"

    out = tmp_path / "model"
    steps: list[int] = []
    with pytest.raises(TrainingError, match=message):
        train_transformer(train_df, val_df, cfg, out, base, progress=False, step_callback=steps.append)
    assert steps == [] and not out.exists() and not work_dir_for(out).exists()
