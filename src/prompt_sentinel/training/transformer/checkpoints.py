"""Base-checkpoint resolution and resumable training checkpoints.

``resolve_checkpoint`` turns a base-model reference (``bundled:all-MiniLM-L6-v2``, a local directory or a
``gs://`` prefix) into a local directory.

Training checkpoints exist because GPU node pools are often preemptible: a restarted training step finds
the last checkpoint and continues from it instead of starting over. The final artifact directory must appear
atomically, so checkpoints live in a working directory *beside* it (``<parent>/.<name>.work/_checkpoints/``)
that survives a restart, and is removed once the artifact is in place. With ``transformer.checkpoint_uri``
every checkpoint is also mirrored to a ``gs://`` prefix (a fresh pod has an empty disk).

A checkpoint directory holds::

    model.safetensors        current weights (safetensors: no pickle)
    best_model.safetensors   weights of the best evaluation so far (absent before the first evaluation)
    optimizer.pt             optimizer state dict (tensors only; loaded with ``torch.load(weights_only=True)``)
    rng.safetensors          torch CPU / CUDA generator states
    trainer_state.json       counters, scheduler/scaler state, controller state, history — written LAST, so a
                             directory without it is incomplete and ignored

Local swaps are crash-safe: the new checkpoint is written to a temp dir, ``last`` is renamed to ``last.old``,
the temp dir to ``last``, then ``last.old`` is removed; a reader falls back to ``last.old`` if it finds no
complete ``last``. Remote copies go to ``<uri>/step-NNNNNNNN/`` and the pointer file ``<uri>/LATEST`` is
rewritten only once every file is uploaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prompt_sentinel import storage
from prompt_sentinel.errors import ModelFormatError, StorageError, TrainingError
from prompt_sentinel.hf_checkpoints import resolve_model_dir

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
MODEL_FILE = "model.safetensors"
BEST_MODEL_FILE = "best_model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng.safetensors"
LATEST_POINTER = "LATEST"


def resolve_checkpoint(ref: str) -> Path:
    """Local directory for a checkpoint reference: ``bundled:<name>``, a local directory or a ``gs://`` prefix.

    Shares :func:`prompt_sentinel.hf_checkpoints.resolve_model_dir` with the embedding featurizer (one list of
    bundled models, one gs:// download cache) and reports problems as :class:`TrainingError`.
    """
    try:
        return resolve_model_dir(ref)
    except ModelFormatError as exc:
        raise TrainingError(f"base model: {exc}") from exc


# ---------------------------------------------------------------------------------------------------------
# RNG state (so dropout masks after a resume match an uninterrupted run)


def capture_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors for safetensors, JSON-able python/numpy state)."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, st in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = st
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    plain = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, np.asarray(np_keys).tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
    }
    return tensors, plain


def restore_rng_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    if "python" in plain:
        version, state, gauss = plain["python"]
        random.setstate((version, tuple(state), gauss))
    if "numpy" in plain:
        name, keys, pos, has_gauss, gauss = plain["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))


# ---------------------------------------------------------------------------------------------------------
# local checkpoints


def work_dir_for(out_dir: str | Path) -> Path:
    """The local working directory of a training output: beside it when local, under the temp dir for gs://."""
    out = str(out_dir).rstrip("/")
    if storage.is_gcs(out):
        digest = hashlib.sha256(out.encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / "prompt-sentinel-checkpoints" / digest
    path = Path(out)
    return path.parent / f".{path.name}.work"


class CheckpointStore:
    """The checkpoints of one training output: a local working dir, optionally mirrored to a remote prefix."""

    def __init__(self, out_dir: str | Path, remote_uri: str | None = None) -> None:
        self.work_dir = work_dir_for(out_dir)
        self.root = self.work_dir / "_checkpoints"
        self.last = self.root / "last"
        self.remote_uri = remote_uri.rstrip("/") if remote_uri else None

    # -- writing --------------------------------------------------------------------------------------------
    def save(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        state: dict[str, Any],
        best_state_dict: dict[str, torch.Tensor] | None,
    ) -> Path:
        """Write a complete checkpoint as ``last`` (atomically), then mirror it remotely if configured."""
        from safetensors.torch import save_file, save_model

        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix="last.", suffix=".tmp"))
        try:
            save_model(model, str(tmp / MODEL_FILE))
            if best_state_dict is not None:
                save_file(best_state_dict, str(tmp / BEST_MODEL_FILE))
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
            rng_tensors, rng_plain = capture_rng_state()
            save_file(rng_tensors, str(tmp / RNG_FILE))
            (tmp / STATE_FILE).write_text(json.dumps({**state, "rng": rng_plain}))
            old = self.root / "last.old"
            shutil.rmtree(old, ignore_errors=True)
            if self.last.exists():
                self.last.rename(old)
            tmp.rename(self.last)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if self.remote_uri:
            self._upload(int(state["global_step"]))
        return self.last

    def _upload(self, step: int) -> None:
        name = f"step-{step:08d}"
        target = storage.join(self.remote_uri, name)
        files = sorted(p for p in self.last.iterdir() if p.is_file())
        # the state file is the commit marker of a checkpoint: upload it after the weights
        for path in [*(p for p in files if p.name != STATE_FILE), self.last / STATE_FILE]:
            storage.write_bytes(storage.join(target, path.name), path.read_bytes())
        pointer = storage.join(self.remote_uri, LATEST_POINTER)
        previous = _read_pointer(pointer)
        storage.write_text(pointer, name)
        if previous and previous != name:
            _delete_prefix(storage.join(self.remote_uri, previous))
        log.info("checkpoint at step %d mirrored to %s", step, target)

    # -- reading --------------------------------------------------------------------------------------------
    def find(self) -> Path | None:
        """The newest complete local checkpoint, fetching the remote one first if the disk has none."""
        for candidate in (self.last, self.root / "last.old"):
            if (candidate / STATE_FILE).is_file():
                return candidate
        if self.remote_uri:
            return self._download()
        return None

    def _download(self) -> Path | None:
        pointer = storage.join(self.remote_uri, LATEST_POINTER)
        name = _read_pointer(pointer)
        if not name:
            return None
        remote = storage.join(self.remote_uri, name)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix="remote.", suffix=".tmp"))
        try:
            storage.download_to_local(remote, cache_dir=tmp)
            if not (tmp / STATE_FILE).is_file():
                log.warning("remote checkpoint %s is incomplete (no %s); ignoring it", remote, STATE_FILE)
                shutil.rmtree(tmp, ignore_errors=True)
                return None
            shutil.rmtree(self.last, ignore_errors=True)
            tmp.rename(self.last)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("downloaded checkpoint %s", remote)
        return self.last

    @staticmethod
    def read_state(ckpt: Path) -> dict[str, Any]:
        try:
            return json.loads((ckpt / STATE_FILE).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise TrainingError(f"checkpoint {ckpt} has an unreadable {STATE_FILE}: {exc}") from exc

    @staticmethod
    def load_into(
        ckpt: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
    ) -> dict[str, torch.Tensor] | None:
        """Load weights, optimizer and RNG state from ``ckpt``; returns the best weights (CPU) if saved."""
        from safetensors.torch import load_file, load_model

        load_model(model, str(ckpt / MODEL_FILE), device=str(device))
        # weights_only=True: only tensors and plain containers can come out of this file
        optimizer.load_state_dict(torch.load(ckpt / OPTIMIZER_FILE, map_location=device, weights_only=True))
        state = CheckpointStore.read_state(ckpt)
        restore_rng_state(load_file(str(ckpt / RNG_FILE)), state.get("rng", {}))
        best = ckpt / BEST_MODEL_FILE
        return load_file(str(best)) if best.is_file() else None

    def discard(self) -> None:
        """Remove the local working directory (after the final artifact is in place, or when stale)."""
        shutil.rmtree(self.work_dir, ignore_errors=True)


def _read_pointer(uri: str) -> str | None:
    try:
        if not storage.exists(uri):
            return None
        return storage.read_text(uri).strip() or None
    except StorageError as exc:
        log.warning("cannot read checkpoint pointer %s: %s", uri, exc)
        return None


def _delete_prefix(uri: str) -> None:
    """Best-effort removal of an older remote checkpoint (a leftover only costs storage)."""
    try:
        if storage.is_gcs(uri):
            bucket, prefix = storage.parse_gs_uri(uri)
            for blob in storage.gcs_client().list_blobs(bucket, prefix=prefix.rstrip("/") + "/"):
                blob.delete()
        else:
            shutil.rmtree(uri, ignore_errors=True)
    except Exception as exc:
        log.warning("could not delete old checkpoint %s: %s", uri, exc)
