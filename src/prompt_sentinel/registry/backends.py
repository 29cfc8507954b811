"""Storage backends for the model registry: a local directory or a ``gs://bucket/prefix``.

The registry needs only a handful of primitives, each with a precise concurrency contract:

* :meth:`Backend.create` — create-only write: succeeds for exactly one writer (``O_EXCL``-like). Used to
  allocate version numbers and to write the ``_COMPLETE`` marker.
* :meth:`Backend.read_versioned` / :meth:`Backend.write_if` — compare-and-swap on one small object
  (``aliases.json``): the write succeeds only if the object is still at the generation that was read.
* plain reads, writes, listing and prefix deletion;
* :meth:`Backend.file_tokens` — a cheap fingerprint of every stored object (local: size, mtime, ctime and inode;
  GCS: the object generation, which changes on every overwrite), so an unchanged object need not be hashed again.

Keys are ``/``-separated paths relative to the registry root. Locally a *generation* is the sha256 of the
file's content (comparing content is enough: a CAS computed from identical bytes is still correct); on GCS
it is the object generation, sent as ``ifGenerationMatch`` so the server rejects lost updates.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prompt_sentinel import checksums, storage
from prompt_sentinel.errors import RegistryError, StorageError

if TYPE_CHECKING:
    from google.cloud import storage as gcs

Generation = int | str
MISSING: Generation = 0  # "the object must not exist yet"
_LOCK_SUFFIX = ".lock"


class Backend(ABC):
    """Primitive operations on keys under one registry root."""

    root: str

    @abstractmethod
    def uri(self, key: str = "") -> str:
        """The full local path or gs:// URI of ``key``."""

    @abstractmethod
    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""

    @abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes | None, Generation]:
        """The object's bytes and generation; ``(None, MISSING)`` when it does not exist."""

    @abstractmethod
    def write(self, key: str, data: bytes) -> None:
        """Overwrite (readers see the old or the new content, never a partial object)."""

    @abstractmethod
    def write_if(self, key: str, data: bytes, generation: Generation) -> bool:
        """Write only if ``key`` is still at ``generation`` (``MISSING``: does not exist). False on conflict."""

    def create(self, key: str, data: bytes) -> bool:
        """Create-only write; False if ``key`` already exists."""
        return self.write_if(key, data, MISSING)

    @abstractmethod
    def upload_file(self, local: Path, key: str) -> None: ...

    @abstractmethod
    def download_file(self, key: str, local: Path) -> None: ...

    @abstractmethod
    def list_keys(self, prefix: str) -> list[str]:
        """Every object key under ``prefix`` (recursive), sorted; registry-internal lock files excluded."""

    @abstractmethod
    def list_children(self, prefix: str) -> list[str]:
        """Names of the immediate "sub-directories" of ``prefix``."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete everything under ``prefix``; returns how many objects were removed."""

    @abstractmethod
    def age_seconds(self, key: str) -> float | None:
        """Seconds since ``key`` was last written, or None when it does not exist."""

    def sweep(self, prefix: str, older_than_s: float) -> int:
        """Remove leftovers of interrupted writes under ``prefix`` (temp files, half-deleted versions)."""
        return 0  # object stores have none: an object appears only once fully uploaded

    @abstractmethod
    def check_writable(self) -> None:
        """Raise :class:`RegistryError` when the root cannot be written (before anything is changed)."""

    @abstractmethod
    def file_tokens(self, prefix: str) -> dict[str, str]:
        """``{key: token}`` for every object under ``prefix``; the token changes whenever the object is rewritten."""

    def sha256(self, key: str) -> str:
        """sha256 of the stored object (downloaded to a temp file; local backends hash in place)."""
        with tempfile.TemporaryDirectory(prefix="sentinel-hash-") as tmp:
            local = Path(tmp) / "object"
            self.download_file(key, local)
            return checksums.sha256_file(local)


def _content_generation(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalBackend(Backend):
    """A registry in a local directory.

    Create-only writes go through a fully written temp file that is hard-linked into place: ``link`` fails
    with ``EEXIST`` if the name is taken, so exactly one writer wins and nobody ever sees a partial file.
    Compare-and-swap holds an ``fcntl`` lock on ``<key>.lock`` while it compares and renames; readers never
    need the lock because ``os.replace`` is atomic.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = str(Path(root).expanduser().absolute())
        self._root = Path(self.root)

    def uri(self, key: str = "") -> str:
        return str(self._path(key)) if key else self.root

    def _path(self, key: str) -> Path:
        parts = [p for p in key.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise RegistryError(f"invalid registry key {key!r}")
        return self._root.joinpath(*parts)

    def _oserror(self, action: str, key: str, exc: OSError) -> RegistryError:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return RegistryError(
                f"registry root {self.root} is not writable ({exc.strerror}) while trying to {action} "
                f"{key or '.'}; check the directory's permissions or pass another --root"
            )
        return RegistryError(f"cannot {action} {self.uri(key)}: {exc.strerror or exc}")

    def read(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise RegistryError(f"{path}: is a directory, expected a registry file") from None
        except OSError as exc:
            raise self._oserror("read", key, exc) from exc

    def read_versioned(self, key: str) -> tuple[bytes | None, Generation]:
        data = self.read(key)
        return (None, MISSING) if data is None else (data, _content_generation(data))

    def _temp_file(self, path: Path, data: bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Path(tmp)

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            tmp = self._temp_file(path, data)
            os.replace(tmp, path)
        except OSError as exc:
            raise self._oserror("write", key, exc) from exc

    def create(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        try:
            tmp = self._temp_file(path, data)
        except OSError as exc:
            raise self._oserror("create", key, exc) from exc
        try:
            os.link(tmp, path)  # atomic and exclusive: EEXIST when another writer got there first
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            raise self._oserror("create", key, exc) from exc
        finally:
            tmp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        lock_path = path.with_name(path.name + _LOCK_SUFFIX)
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def write_if(self, key: str, data: bytes, generation: Generation) -> bool:
        path = self._path(key)
        try:
            with self._locked(path):
                _, current = self.read_versioned(key)
                if current != generation:
                    return False
                tmp = self._temp_file(path, data)
                os.replace(tmp, path)
                return True
        except OSError as exc:
            raise self._oserror("update", key, exc) from exc

    def upload_file(self, local: Path, key: str) -> None:
        target = self._path(key)
        tmp: Path | None = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            os.close(fd)
            tmp = Path(tmp_name)
            shutil.copyfile(local, tmp)
            os.replace(tmp, target)
        except OSError as exc:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise self._oserror("write", key, exc) from exc

    def download_file(self, key: str, local: Path) -> None:
        source = self._path(key)
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(source, local)
        except FileNotFoundError:
            raise RegistryError(f"{source}: missing from the registry") from None
        except OSError as exc:
            raise self._oserror("read", key, exc) from exc

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        keys = []
        for path in base.rglob("*"):
            # dot-files are temp files and lock files of in-flight writes, never registry objects
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(base).parts):
                keys.append(path.relative_to(self._root).as_posix())
        return sorted(keys)

    def list_children(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))

    def delete_prefix(self, prefix: str) -> int:
        base = self._path(prefix)
        if not base.exists():
            return 0
        count = sum(1 for p in base.rglob("*") if p.is_file())
        # rename first so a half-deleted version is never visible under its real name
        doomed = base.with_name(f".{base.name}.deleting-{os.getpid()}-{time.monotonic_ns()}")
        try:
            base.rename(doomed)
            shutil.rmtree(doomed)
        except OSError as exc:
            raise self._oserror("delete", prefix, exc) from exc
        return count

    def age_seconds(self, key: str) -> float | None:
        try:
            return max(0.0, time.time() - self._path(key).stat().st_mtime)
        except FileNotFoundError:
            return None

    def sweep(self, prefix: str, older_than_s: float) -> int:
        base = self._path(prefix)
        if not base.is_dir():
            return 0
        removed = 0
        now = time.time()
        for path in list(base.rglob(".*")):
            stale = ".deleting-" in path.name or path.name.endswith(".tmp")
            try:
                if not stale or now - path.lstat().st_mtime < older_than_s:
                    continue
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed += 1
            except FileNotFoundError:
                continue  # removed together with its parent, or by a concurrent gc
            except OSError as exc:
                raise self._oserror("delete", path.relative_to(self._root).as_posix(), exc) from exc
        return removed

    def file_tokens(self, prefix: str) -> dict[str, str]:
        tokens = {}
        for key in self.list_keys(prefix):
            try:
                st = self._path(key).stat()
            except FileNotFoundError:
                continue
            # ctime cannot be set back by a writer (unlike mtime), so a rewrite always changes the token
            tokens[key] = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"
        return tokens

    def sha256(self, key: str) -> str:
        try:
            return checksums.sha256_file(self._path(key))
        except FileNotFoundError:
            raise RegistryError(f"{self.uri(key)}: missing from the registry") from None
        except OSError as exc:
            raise self._oserror("read", key, exc) from exc

    def check_writable(self) -> None:
        root = self._root
        if root.exists() and not root.is_dir():
            raise RegistryError(f"registry root {root} exists but is not a directory")
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=root, prefix=".write-probe.", suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise self._oserror("write", "", exc) from exc


def _gcs_retry() -> Any:
    """Bounded exponential backoff on transient errors (429, 5xx, connection resets).

    Safe for every call we make: reads are idempotent, version files live under a prefix this push owns,
    and conditional writes carry a generation precondition (a replayed write fails instead of clobbering).
    """
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_delay(initial=0.2, multiplier=2.0, maximum=5.0).with_timeout(60.0)


class GCSBackend(Backend):
    """A registry under ``gs://bucket/prefix`` (google-cloud-storage; honours ``STORAGE_EMULATOR_HOST``)."""

    def __init__(self, root: str, client: gcs.Client | None = None) -> None:
        bucket, prefix = storage.parse_gs_uri(root.rstrip("/"))
        self.root = f"gs://{bucket}/{prefix}".rstrip("/")
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self._client = client
        self._retry = _gcs_retry()

    @property
    def client(self) -> gcs.Client:
        if self._client is None:
            try:
                self._client = storage.gcs_client()
            except StorageError as exc:
                raise RegistryError(f"registry {self.root}: {exc}") from exc
        return self._client

    @property
    def bucket(self) -> gcs.Bucket:
        return self.client.bucket(self.bucket_name)

    def _name(self, key: str) -> str:
        key = key.strip("/")
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str = "") -> str:
        return f"gs://{self.bucket_name}/{self._name(key)}".rstrip("/") if key else self.root

    def _error(self, action: str, key: str, exc: Exception) -> RegistryError:
        from google.api_core import exceptions as gexc

        if isinstance(exc, gexc.Forbidden | gexc.Unauthorized):
            return RegistryError(
                f"registry root {self.root}: permission denied while trying to {action} {key or '.'} "
                f"({getattr(exc, 'message', exc)}); the service account needs storage.objects.* on the bucket"
            )
        if isinstance(exc, gexc.NotFound):
            return RegistryError(f"registry root {self.root}: bucket or object not found ({action} {key})")
        return RegistryError(f"cannot {action} {self.uri(key)}: {exc}")

    def read(self, key: str) -> bytes | None:
        return self.read_versioned(key)[0]

    def read_versioned(self, key: str) -> tuple[bytes | None, Generation]:
        from google.api_core import exceptions as gexc

        for _ in range(5):
            try:
                blob = self.bucket.get_blob(self._name(key), retry=self._retry)
                if blob is None:
                    return None, MISSING
                generation = int(blob.generation)
                # pin the download to the generation we report, so bytes and generation always agree
                data = blob.download_as_bytes(if_generation_match=generation, retry=self._retry)
                return data, generation
            except (gexc.PreconditionFailed, gexc.NotFound):
                continue  # replaced or deleted between the two calls: read again
            except Exception as exc:
                raise self._error("read", key, exc) from exc
        raise RegistryError(f"{self.uri(key)}: changed on every read attempt; try again")

    def write(self, key: str, data: bytes) -> None:
        try:
            self.bucket.blob(self._name(key)).upload_from_string(
                data, content_type=_content_type(key), retry=self._retry
            )
        except Exception as exc:
            raise self._error("write", key, exc) from exc

    def write_if(self, key: str, data: bytes, generation: Generation) -> bool:
        from google.api_core import exceptions as gexc

        try:
            self.bucket.blob(self._name(key)).upload_from_string(
                data, content_type=_content_type(key), if_generation_match=int(generation), retry=self._retry
            )
            return True
        except gexc.PreconditionFailed:
            return False
        except Exception as exc:
            raise self._error("update", key, exc) from exc

    def upload_file(self, local: Path, key: str) -> None:
        try:
            self.bucket.blob(self._name(key)).upload_from_filename(str(local), retry=self._retry)
        except Exception as exc:
            raise self._error("write", key, exc) from exc

    def download_file(self, key: str, local: Path) -> None:
        from google.api_core import exceptions as gexc

        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.bucket.blob(self._name(key)).download_to_filename(str(local), retry=self._retry)
        except gexc.NotFound:
            local.unlink(missing_ok=True)
            raise RegistryError(f"{self.uri(key)}: missing from the registry") from None
        except Exception as exc:
            local.unlink(missing_ok=True)
            raise self._error("read", key, exc) from exc

    def _list(self, prefix: str, delimiter: str | None = None) -> Any:
        full = self._name(prefix).rstrip("/") + "/"
        return self.client.list_blobs(self.bucket_name, prefix=full, delimiter=delimiter, retry=self._retry)

    def list_keys(self, prefix: str) -> list[str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            names = [b.name[strip:] for b in self._list(prefix)]
        except Exception as exc:
            raise self._error("list", prefix, exc) from exc
        return sorted(n for n in names if not n.endswith(_LOCK_SUFFIX) and not n.endswith("/"))

    def list_children(self, prefix: str) -> list[str]:
        try:
            pages = self._list(prefix, delimiter="/")
            for _ in pages:  # consume the iterator: prefixes are collected page by page
                pass
            prefixes = pages.prefixes
        except Exception as exc:
            raise self._error("list", prefix, exc) from exc
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in prefixes)

    def delete_prefix(self, prefix: str) -> int:
        from google.api_core import exceptions as gexc

        try:
            blobs = list(self._list(prefix))
            for blob in blobs:
                with contextlib.suppress(gexc.NotFound):
                    blob.delete(retry=self._retry)
        except Exception as exc:
            raise self._error("delete", prefix, exc) from exc
        return len(blobs)

    def age_seconds(self, key: str) -> float | None:
        try:
            blob = self.bucket.get_blob(self._name(key), retry=self._retry)
        except Exception as exc:
            raise self._error("read", key, exc) from exc
        if blob is None:
            return None
        updated = blob.updated or blob.time_created
        return None if updated is None else max(0.0, time.time() - updated.timestamp())

    def file_tokens(self, prefix: str) -> dict[str, str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            blobs = list(self._list(prefix))
        except Exception as exc:
            raise self._error("list", prefix, exc) from exc
        return {
            b.name[strip:]: f"{b.generation}:{b.size}"
            for b in blobs
            if not b.name.endswith(_LOCK_SUFFIX) and not b.name.endswith("/")
        }

    def check_writable(self) -> None:
        from google.api_core import exceptions as gexc

        try:
            if not self.bucket.exists(retry=self._retry):
                raise RegistryError(f"registry root {self.root}: bucket {self.bucket_name!r} does not exist")
        except RegistryError:
            raise
        except gexc.Forbidden:
            pass  # object-level permissions without bucket.get are common; the first write tells
        except Exception as exc:
            raise self._error("access", "", exc) from exc


def _content_type(key: str) -> str:
    if key.endswith(".json"):
        return "application/json"
    if key.endswith(".md"):
        return "text/markdown"
    return "application/octet-stream"


def make_backend(root: str, client: Any = None) -> Backend:
    """A backend for ``root``: ``gs://bucket/prefix`` or a local directory."""
    if not str(root).strip():
        raise RegistryError("registry root is empty; set registry.root or pass --root")
    if storage.is_gcs(root):
        try:
            return GCSBackend(str(root), client=client)
        except StorageError as exc:
            raise RegistryError(f"invalid registry root {root!r}: {exc}") from exc
    return LocalBackend(root)
