"""storage.upload_directory (the files named in ``last`` after all the others) and storage.publish_directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from prompt_sentinel import storage
from prompt_sentinel.errors import StorageError


def _artifact(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    for name, text in {"checksums.json": "{}", "a.txt": "a", "z.txt": "z", "sub/b.bin": "b"}.items():
        (root / name).write_text(text)
    return root


def test_upload_directory_writes_the_named_files_last(tmp_path: Path, gcs_bucket: str) -> None:
    local = _artifact(tmp_path / "artifact")
    uri = f"gs://{gcs_bucket}/upload/artifact"
    written = storage.upload_directory(local, uri, last=("checksums.json",))
    assert written == [f"{uri}/a.txt", f"{uri}/sub/b.bin", f"{uri}/z.txt", f"{uri}/checksums.json"]
    assert storage.read_text(f"{uri}/sub/b.bin") == "b"
    plain = storage.upload_directory(local, str(tmp_path / "copy"))  # no `last`: sorted order, every file
    assert [Path(p).name for p in plain] == ["a.txt", "checksums.json", "b.bin", "z.txt"]
    assert (tmp_path / "copy" / "sub" / "b.bin").read_text() == "b"


def test_publish_directory_locally_replaces_in_one_step_and_keeps_the_old_one_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "model"
    assert storage.publish_directory(out, _artifact) == out
    assert (out / "sub" / "b.bin").read_text() == "b"

    def broken(directory: Path) -> None:
        (directory / "half.txt").write_text("x")
        raise RuntimeError("fill failed")

    with pytest.raises(RuntimeError, match="fill failed"):
        storage.publish_directory(out, broken)
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "checksums.json", "sub", "z.txt"]


def test_publish_directory_to_gcs_stages_and_uploads_the_manifest_last(tmp_path: Path, gcs_bucket: str) -> None:
    uri = f"gs://{gcs_bucket}/publish/model"
    staging = tmp_path / "staging"
    staging.mkdir()
    assert storage.publish_directory(uri, _artifact, last=("checksums.json",), staging=staging) == staging
    assert storage.read_text(f"{uri}/sub/b.bin") == "b" and storage.read_text(f"{uri}/checksums.json") == "{}"
    with pytest.raises(StorageError, match="needs a local staging directory"):
        storage.publish_directory(f"gs://{gcs_bucket}/publish/other", _artifact)
