"""Uniform access to local paths and ``gs://bucket/path`` URIs.

GCS goes through ``google-cloud-storage``; setting ``STORAGE_EMULATOR_HOST`` (e.g. for
``gcp-storage-emulator`` in tests) points the client at an emulator with anonymous credentials.
Local writes are atomic (temp file + rename) so a crash never leaves a half-written file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from prompt_sentinel.errors import StorageError

if TYPE_CHECKING:
    from google.cloud import storage as gcs

GS_PREFIX = "gs://"


def is_gcs(uri: str | os.PathLike[str]) -> bool:
    return str(uri).startswith(GS_PREFIX)


def parse_gs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` → (``bucket``, ``a/b``)."""
    if not is_gcs(uri):
        raise StorageError(f"not a gs:// URI: {uri!r}")
    rest = uri[len(GS_PREFIX) :]
    bucket, _, blob = rest.partition("/")
    if not bucket:
        raise StorageError(f"gs:// URI without a bucket: {uri!r}")
    return bucket, blob


def join(base: str, *parts: str) -> str:
    """Join path parts for either a local path or a gs:// URI."""
    if is_gcs(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base, *parts))


@lru_cache(maxsize=4)
def _client_for(emulator_host: str | None, project: str | None) -> gcs.Client:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs_storage

    if emulator_host:
        return gcs_storage.Client(project=project or "test", credentials=AnonymousCredentials())
    return gcs_storage.Client(project=project)


def gcs_client() -> gcs.Client:
    """A cached client; honours STORAGE_EMULATOR_HOST and GOOGLE_CLOUD_PROJECT."""
    try:
        return _client_for(os.environ.get("STORAGE_EMULATOR_HOST"), os.environ.get("GOOGLE_CLOUD_PROJECT"))
    except Exception as exc:  # credentials missing, bad project…
        raise StorageError(f"cannot create a Google Cloud Storage client: {exc}") from exc


def _blob(uri: str):  # -> gcs.Blob
    bucket, name = parse_gs_uri(uri)
    if not name:
        raise StorageError(f"gs:// URI names a bucket, not an object: {uri!r}")
    return gcs_client().bucket(bucket).blob(name)


def exists(uri: str) -> bool:
    if is_gcs(uri):
        try:
            return _blob(uri).exists()
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"cannot check {uri}: {exc}") from exc
    return Path(uri).exists()


def read_bytes(uri: str) -> bytes:
    if is_gcs(uri):
        from google.api_core import exceptions as gexc

        try:
            return _blob(uri).download_as_bytes()
        except gexc.NotFound:
            raise StorageError(f"{uri}: no such object") from None
        except gexc.Forbidden as exc:
            raise StorageError(f"{uri}: permission denied ({exc.message})") from None
        except Exception as exc:
            raise StorageError(f"cannot read {uri}: {exc}") from exc
    path = Path(uri)
    if not path.exists():
        raise StorageError(f"{uri}: no such file")
    if path.is_dir():
        raise StorageError(f"{uri}: is a directory, expected a file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read {uri}: {exc.strerror}") from exc


def read_text(uri: str, encoding: str = "utf-8") -> str:
    data = read_bytes(uri)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise StorageError(f"{uri}: not valid {encoding} at byte {exc.start}") from exc


def write_bytes(uri: str, data: bytes) -> None:
    """Write atomically: a reader sees the old content or the new, never a partial file."""
    if is_gcs(uri):
        try:
            _blob(uri).upload_from_string(data)  # a GCS object appears only once fully uploaded
        except Exception as exc:
            raise StorageError(f"cannot write {uri}: {exc}") from exc
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


@contextmanager
def atomic_output_dir(final_dir: str | Path) -> Iterator[Path]:
    """Yield a temp directory beside ``final_dir``; on success it replaces ``final_dir`` in one rename.

    On any exception the temp directory is removed and ``final_dir`` is left exactly as it was.
    """
    import shutil

    final = Path(final_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    tmp.chmod(0o755)  # mkdtemp makes 0700 dirs; artifacts are read by other users (e.g. a serving container)
    try:
        yield tmp
        if final.exists():
            backup = final.with_name(f".{final.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            final.rename(backup)
            tmp.rename(final)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish_directory(
    out: str | Path, fill: Callable[[Path], None], last: Sequence[str] = (), staging: str | Path | None = None
) -> Path:
    """Have ``fill`` write a fresh directory and publish it at ``out`` (local or gs://); returns a local copy.

    Locally the directory replaces ``out`` in one rename (:func:`atomic_output_dir`) and the copy is ``out``
    itself. For gs:// it is filled in ``staging`` and uploaded with the ``last`` files (the manifest) after the
    others, so a reader that finds the manifest finds every file it lists; the copy is ``staging``, which the
    caller owns.
    """
    if is_gcs(str(out)):
        if staging is None:
            raise StorageError(f"{out}: publishing to gs:// needs a local staging directory")
        fill(Path(staging))
        upload_directory(staging, str(out), last=last)
        return Path(staging)
    with atomic_output_dir(out) as tmp:
        fill(tmp)
    return Path(out)


def download_to_local(uri: str, cache_dir: str | Path | None = None) -> Path:
    """Return a local path for ``uri``: the path itself if local, else a downloaded copy of the file or prefix."""
    if not is_gcs(uri):
        path = Path(uri)
        if not path.exists():
            raise StorageError(f"{uri}: no such file or directory")
        return path
    bucket_name, prefix = parse_gs_uri(uri)
    target_root = Path(cache_dir or tempfile.mkdtemp(prefix="sentinel-gcs-"))
    client = gcs_client()
    blobs = list(client.list_blobs(bucket_name, prefix=prefix.rstrip("/") + "/")) if prefix else []
    if not blobs:
        # a single object
        local = target_root / Path(prefix).name
        write_bytes(str(local), read_bytes(uri))
        return local
    for blob in blobs:
        rel = blob.name[len(prefix.rstrip("/")) + 1 :]
        if not rel or rel.endswith("/"):
            continue
        dest = target_root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        blob.download_to_filename(str(dest))
    return target_root


def upload_directory(local_dir: str | Path, uri: str, last: Sequence[str] = ()) -> list[str]:
    """Copy every file under ``local_dir`` to the gs:// (or local) prefix ``uri``; returns written URIs.

    Files named in ``last`` (paths relative to ``local_dir``) go up after all the others, in that order: a
    manifest written last tells a reader that every file it lists is already there.
    """
    root = Path(local_dir)
    written = []
    ordered = sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() not in last)
    ordered += [root / name for name in last if (root / name).is_file()]
    for path in ordered:
        target = join(uri, path.relative_to(root).as_posix())
        write_bytes(target, path.read_bytes())
        written.append(target)
    return written
