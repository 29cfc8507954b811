"""storage.upload_directory: every file copied, the ones named in ``last`` after all the others."""

from __future__ import annotations

from pathlib import Path

from prompt_sentinel import storage


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
