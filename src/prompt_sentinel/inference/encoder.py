"""The featurizer's sentence encoder on ONNX Runtime: exported on first use into a per-machine cache.

The cache entry for an encoder lives in ``<cache>/onnx-encoders/<checksum>/`` where ``<checksum>`` is the sha256
of the encoder checkpoint's files (weights, config, tokenizer), so a changed checkpoint never meets a stale
export. An entry holds ``encoder.onnx`` (fp32: mean pooling and L2 normalization inside the graph, so it returns
exactly what :class:`prompt_sentinel.features.SentenceEmbedder` returns), ``encoder.int8.onnx`` when int8 passed
the encoder parity check, ``parity.json`` (an :class:`InferenceRecord`) and ``checksums.json``, verified every
time the entry is opened.

Entries are built in a temporary directory and renamed into place under an exclusive file lock, so two processes
starting together export once and never see half an entry. When the cache directory is not writable (a read-only
serving image) the export goes to a private temporary directory, with a log line.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prompt_sentinel.checksums import sha256_file, verify_manifest, write_manifest
from prompt_sentinel.config import InferenceConfig
from prompt_sentinel.datasets import DEMO_PROMPTS, SMOKE_PANEL
from prompt_sentinel.errors import ChecksumError, ModelFormatError
from prompt_sentinel.inference.backends import Backend, inference_threads
from prompt_sentinel.inference.hf import load_encoder, load_tokenizer, torch_sentence_embeddings
from prompt_sentinel.inference.onnx_runtime import (
    FastTokenizer,
    OnnxSession,
    export_to_onnx,
    length_sorted_batches,
    quantize_int8,
)
from prompt_sentinel.inference.parity import (
    MIN_ENCODER_COSINE,
    BackendParity,
    InferenceRecord,
    encoder_parity,
    fastest_passed,
    summary_line,
    versions,
)
from prompt_sentinel.text import normalize_text

log = logging.getLogger(__name__)

ENCODER_DIR = "onnx-encoders"
FILES: dict[str, str] = {"onnx": "encoder.onnx", "onnx-int8": "encoder.int8.onnx"}
PARITY_FILE = "parity.json"
EXPORT_VERSION = 1  # bump when the exported graph changes, so old cache entries are not reused
_SKIP = {"README.md", ".gitattributes"}

_CHECKSUMS: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}
_RUNNERS: dict[tuple[str, str, int, int, str], OnnxSentenceEncoder] = {}
_LOCK = threading.Lock()


def default_cache_root(cfg: InferenceConfig | None = None) -> Path:
    """``inference.cache_dir``, else ``$PROMPT_SENTINEL_CACHE``, else ``~/.cache/prompt-sentinel``."""
    if cfg is not None and cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    env = os.environ.get("PROMPT_SENTINEL_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "prompt-sentinel"


def _checkpoint_files(model_dir: Path) -> list[Path]:
    return sorted(p for p in model_dir.rglob("*") if p.is_file() and p.name not in _SKIP and not p.name.startswith("."))


def encoder_checksum(model_dir: str | Path) -> str:
    """sha256 over the checkpoint's files (names and contents); cached per process by size and mtime."""
    root = Path(model_dir).resolve()
    files = _checkpoint_files(root)
    stamp = tuple((p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    key = (str(root), stamp)
    with _LOCK:
        if key in _CHECKSUMS:
            return _CHECKSUMS[key]
    import hashlib

    digest = hashlib.sha256(f"export-v{EXPORT_VERSION}\n".encode())
    for path in files:
        digest.update(f"{path.relative_to(root).as_posix()}\t{sha256_file(path)}\n".encode())
    value = digest.hexdigest()
    with _LOCK:
        _CHECKSUMS[key] = value
    return value


# --- probe set --------------------------------------------------------------------------------------------------


def probe_texts() -> list[str]:
    """The fixed, bundled probe set: demo prompts of every class, everyday and smoke-panel prompts, encoded and
    spaced-out attacks, long text."""
    demo = pd.read_csv(DEMO_PROMPTS)
    texts = demo["text"].astype(str).tolist()[::6]
    attacks = demo.loc[demo["label"] == 2, "text"].astype(str).tolist()[:2]
    for attack in attacks:  # obfuscations the encoder must embed the same way on every backend
        texts += [base64.b64encode(attack.encode()).decode(), codecs.encode(attack, "rot13"), " ".join(attack)]
    texts += pd.read_csv(SMOKE_PANEL, keep_default_na=False)["text"].astype(str).tolist()
    long_words = " ".join(texts).split()
    texts += [" ".join(long_words[i : i + 320]) for i in range(0, 1280, 320)]  # past max_length: truncation
    return [normalize_text(t) for t in texts]


# --- export -----------------------------------------------------------------------------------------------------


def _pooled_module(model: Any) -> Any:
    import torch

    class PooledEncoder(torch.nn.Module):
        """AutoModel → mean pooling over real tokens → L2 normalization (SentenceEmbedder's torch path)."""

        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask, token_type_ids=None):  # type: ignore[no-untyped-def]
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    return PooledEncoder(model).eval()


def _torch_embeddings(model_dir: Path, texts: list[str], max_length: int) -> np.ndarray:
    tokenizer, model = load_encoder(model_dir)
    return torch_sentence_embeddings(tokenizer, model, texts, batch_size=32, max_length=max_length)


def _build_entry(model_dir: Path, target: Path, extra_texts: Sequence[str], max_length: int) -> InferenceRecord:
    tokenizer, model = load_encoder(model_dir)
    fast = FastTokenizer(tokenizer, max_length)
    sample = fast.pad(fast.encode(["a first example prompt", "and a second, longer example prompt here"]))
    import torch

    example = {k: torch.from_numpy(v) for k, v in sample.items()}
    fp32 = export_to_onnx(_pooled_module(model), example, "embeddings", target / FILES["onnx"])
    int8 = quantize_int8(fp32, target / FILES["onnx-int8"])

    texts = probe_texts() + [t for t in extra_texts if t]
    reference = _torch_embeddings(model_dir, texts, max_length)
    results: dict[str, BackendParity] = {}
    for backend, path in (("onnx", fp32), ("onnx-int8", int8)):
        runner = OnnxSentenceEncoder(path, tokenizer, max_length, dim=reference.shape[1], threads=None, backend=backend)
        result = encoder_parity(reference, runner.encode(texts, batch_size=32))
        result.file = path.name
        if not result.passed:
            path.unlink()
        else:
            result.sha256 = sha256_file(path)
        results[backend] = result
    log.info(summary_line(f"encoder {model_dir.name} ({len(texts)} probe texts)", results))
    return InferenceRecord(
        kind="encoder",
        parity_set=f"bundled probe set ({len(probe_texts())} texts)"
        + (f" + {len(extra_texts)} training texts" if extra_texts else ""),
        thresholds={"min_cosine": MIN_ENCODER_COSINE},
        backends={"torch": BackendParity(passed=True), **results},
        auto=fastest_passed(results),
        versions=versions(),
        encoder=str(model_dir),
        max_length=max_length,
    )


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _writable(root: Path) -> bool:
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".probe-"):
            return True
    except OSError:
        return False


_PRIVATE_ROOT: Path | None = None


def _entry_root(cache_root: Path) -> Path:
    global _PRIVATE_ROOT
    root = cache_root / ENCODER_DIR
    if _writable(root):
        return root
    if _PRIVATE_ROOT is None:
        _PRIVATE_ROOT = Path(tempfile.mkdtemp(prefix="sentinel-onnx-encoders-"))
        log.warning("ONNX encoder cache %s is not writable; exporting into %s for this process", root, _PRIVATE_ROOT)
    return _PRIVATE_ROOT


def read_entry(entry: Path) -> InferenceRecord:
    """Verify a cache entry's checksums and return its parity record; errors name the file."""
    try:
        verify_manifest(entry)
    except ChecksumError as exc:
        raise ChecksumError(f"{exc} (ONNX encoder cache entry; delete {entry} to export it again)") from None
    path = entry / PARITY_FILE
    try:
        return InferenceRecord.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{path}: unreadable encoder parity record ({exc}); delete {entry}") from exc


def ensure_encoder_export(
    model_dir: str | Path, cache_root: str | Path | None = None, extra_texts: Sequence[str] = (), max_length: int = 256
) -> tuple[Path, InferenceRecord]:
    """The verified cache entry for ``model_dir`` (exporting it first if needed) and its parity record."""
    model_dir = Path(model_dir).resolve()
    root = _entry_root(Path(cache_root) if cache_root else default_cache_root())
    key = encoder_checksum(model_dir)[:24]
    entry = root / key
    if not (entry / PARITY_FILE).is_file():
        with _file_lock(root / f"{key}.lock"):
            if not (entry / PARITY_FILE).is_file():  # another process may have finished it while we waited
                log.info("exporting encoder %s to ONNX (once per checkpoint) into %s", model_dir, entry)
                staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{key}.", suffix=".tmp"))
                try:
                    record = _build_entry(model_dir, staging, extra_texts, max_length)
                    (staging / PARITY_FILE).write_text(record.model_dump_json(indent=2))
                    write_manifest(staging)
                    shutil.rmtree(entry, ignore_errors=True)  # a partial entry without parity.json
                    staging.chmod(0o755)
                    staging.rename(entry)
                except BaseException:
                    shutil.rmtree(staging, ignore_errors=True)
                    raise
    return entry, read_entry(entry)


# --- runtime ----------------------------------------------------------------------------------------------------


class OnnxSentenceEncoder:
    """Sentence embeddings (mean-pooled, unit norm) from an exported encoder on ONNX Runtime."""

    def __init__(
        self, path: Path, tokenizer: Any, max_length: int, dim: int, threads: int | None, backend: str
    ) -> None:
        self.tokenizer = FastTokenizer(tokenizer, max_length)
        self.session = OnnxSession(path, self.tokenizer.input_names, output_width=dim, threads=threads, backend=backend)
        self.dim = dim
        self.backend = backend
        self.path = path
        self.sha256: str | None = None  # from the verified cache entry's parity record

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embeddings in the order of ``texts`` (length-bucketed internally)."""
        encodings = self.tokenizer.encode(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        batches = length_sorted_batches([len(e.ids) for e in encodings], batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc=f"embedding ({self.backend})", unit="batch", leave=False)
        for idx in batches:
            out[idx] = self.session.run(self.tokenizer.pad([encodings[i] for i in idx]))
        return out


def _hidden_size(model_dir: Path) -> int:
    try:
        config = json.loads((model_dir / "config.json").read_text())
        return int(config["hidden_size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFormatError(f"{model_dir}/config.json: no hidden_size ({exc})") from exc


def onnx_encoder(
    model_dir: str | Path,
    backend: Backend,
    max_length: int,
    threads: int | None = None,
    cache_root: str | Path | None = None,
) -> tuple[OnnxSentenceEncoder | None, Backend]:
    """A (process-wide, shared) ONNX runner for ``model_dir`` and the backend it really runs.

    When this machine's export did not pass the encoder check for ``backend``, the next more exact backend is
    used, with a warning (None + ``"torch"`` when neither ONNX file passed).
    """
    model_dir = Path(model_dir).resolve()
    n_threads = inference_threads(threads)
    key = (str(model_dir), backend, max_length, n_threads, str(cache_root or ""))
    with _LOCK:
        runner = _RUNNERS.get(key)
    if runner is not None:
        return runner, runner.backend  # type: ignore[return-value]
    entry, record = ensure_encoder_export(model_dir, cache_root, max_length=max_length)
    chosen: Backend = backend
    order = ["onnx-int8", "onnx"] if backend == "onnx-int8" else ["onnx"]
    for candidate in order:
        result = record.backends.get(candidate)
        if result is not None and result.passed and (entry / FILES[candidate]).is_file():
            chosen = candidate  # type: ignore[assignment]
            break
    else:
        log.warning("encoder %s: no ONNX export passed the encoder check on this machine; using torch", model_dir)
        return None, "torch"
    if chosen != backend:
        log.warning("encoder %s: %s export failed the encoder check here; using %s", model_dir, backend, chosen)
    tokenizer = load_tokenizer(model_dir)
    runner = OnnxSentenceEncoder(
        entry / FILES[chosen], tokenizer, max_length, _hidden_size(model_dir), n_threads, chosen
    )
    runner.sha256 = record.backends[chosen].sha256
    with _LOCK:
        _RUNNERS.setdefault(key, runner)
        runner = _RUNNERS[key]
    return runner, chosen
