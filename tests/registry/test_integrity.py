"""Registry integrity: store corruption behind a warm cache, one corrupt version in `list`, the completion marker.

Each test reproduces a finding of issue #16 on a real registry (a local directory, or the GCS emulator).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from prompt_sentinel import storage
from prompt_sentinel.config import SentinelConfig
from prompt_sentinel.errors import ChecksumError, RegistryError
from prompt_sentinel.registry import ModelRegistry, resolve_model_ref

from .test_local import make_cfg, make_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("artifact") / "model")


@pytest.fixture
def cfg(tmp_path: Path) -> SentinelConfig:
    return make_cfg(tmp_path)


@pytest.fixture
def registry(cfg: SentinelConfig) -> ModelRegistry:
    return ModelRegistry(cfg.registry.root, cfg)


def flip_one_byte(path: Path) -> None:
    """Corrupt a file without changing its size (the kind of damage a size check cannot see)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def cli(cfg: SentinelConfig, *args: str) -> object:
    from prompt_sentinel.cli.registry import register

    app = typer.Typer()
    register(app)
    common = ["--root", cfg.registry.root, "--set", f"registry.cache_dir={cfg.registry.cache_dir}"]
    return CliRunner().invoke(app, ["registry", *args, *common, "--set", "mlflow.enabled=false"])


# ------------------------------------------------------------------------------ warm cache vs corrupt store
def test_store_corruption_is_reported_although_a_good_cached_copy_exists(
    registry: ModelRegistry, model_dir: Path, cfg: SentinelConfig, tmp_path: Path
) -> None:
    registry.push(model_dir, name="sentinel", aliases=("champion",))
    cached = registry.resolve("sentinel@champion")  # warm cache
    flip_one_byte(Path(registry.root) / "sentinel" / "v1" / "model.skops")

    with pytest.raises(ChecksumError) as info:
        registry.resolve("sentinel@champion")
    message = str(info.value)
    assert "model.skops" in message and "sentinel/v1" in message and str(registry.root) in message
    assert str(cached) in message  # says the cached copy is fine, so nobody deletes the last good copy
    with pytest.raises(ChecksumError):
        resolve_model_ref("sentinel@champion", cfg)  # what serving and evaluation call

    result = cli(cfg, "download", "sentinel@champion", "--out", str(tmp_path / "out"))
    assert result.exit_code != 0 and isinstance(result.exception, ChecksumError)
    assert not (tmp_path / "out").exists()


def test_store_check_on_a_warm_cache_reads_no_model_bytes(
    registry: ModelRegistry, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-verification is cheap: an unchanged store and cache are compared by their recorded checksums and
    file stamps, not hashed again."""
    from prompt_sentinel import checksums

    hashed: list[str] = []
    real = checksums.sha256_file

    def counting(path: str | Path) -> str:
        hashed.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(checksums, "sha256_file", counting)
    registry.push(model_dir, name="sentinel")
    registry.resolve("sentinel/v1")
    assert "model.skops" in hashed  # the cold resolve verifies the download
    hashed.clear()
    registry.resolve("sentinel/v1")
    assert "model.skops" not in hashed


def test_cached_copy_is_rechecked_against_the_registry_on_every_resolve(
    registry: ModelRegistry, model_dir: Path
) -> None:
    registry.push(model_dir, name="sentinel")
    cached = registry.resolve("sentinel/v1")
    flip_one_byte(cached / "model.skops")  # same size: only a checksum notices
    with pytest.raises(ChecksumError, match=r"model\.skops"):
        registry.resolve("sentinel/v1")


def test_store_corruption_behind_a_warm_cache_on_gcs(gcs_bucket: str, model_dir: Path, tmp_path: Path) -> None:
    root = f"gs://{gcs_bucket}/registry"
    cfg = make_cfg(tmp_path, root=root)
    registry = ModelRegistry(root, cfg)
    registry.push(model_dir, name="sentinel", aliases=("champion",))
    cached = registry.resolve("sentinel@champion")
    assert registry.resolve("sentinel@champion") == cached  # unchanged store: the cache is used
    blob = f"{root}/sentinel/v1/model.skops"
    data = bytearray(storage.read_bytes(blob))
    data[len(data) // 2] ^= 0xFF
    storage.write_bytes(blob, bytes(data))
    with pytest.raises(ChecksumError, match=r"model\.skops"):
        registry.resolve("sentinel@champion")


# ---------------------------------------------------------------------------------------------- listing
def test_one_corrupt_version_does_not_break_list(registry: ModelRegistry, model_dir: Path, cfg: SentinelConfig) -> None:
    for _ in range(3):
        registry.push(model_dir, name="sentinel")
    metadata = Path(registry.root) / "sentinel" / "v2" / "metadata.json"
    metadata.write_text(metadata.read_text().replace('"logreg"', '"linear_svm"'))

    infos = registry.list_versions("sentinel")
    assert [(i.version, i.status) for i in infos] == [(1, "ok"), (2, "corrupt"), (3, "ok")]
    assert "metadata.json" in (infos[1].problem or "") and infos[0].problem is None
    assert infos[2].aliases == ["candidate"] and infos[0].metrics["custom_score"] == pytest.approx(0.81)

    listing = cli(cfg, "list", "sentinel")
    assert listing.exit_code == 0, listing.output
    assert "corrupt" in listing.output and "metadata.json" in listing.output and "v3" in listing.output
    overview = cli(cfg, "list")
    assert overview.exit_code == 0, overview.output
    assert "1 corrupt" in overview.output
    with pytest.raises(ChecksumError):  # using it is still refused
        registry.resolve("sentinel/v2")


def test_a_malformed_alias_file_does_not_break_the_model_overview(
    registry: ModelRegistry, model_dir: Path, cfg: SentinelConfig
) -> None:
    registry.push(model_dir, name="sentinel")
    registry.push(model_dir, name="other")
    (Path(registry.root) / "other" / "aliases.json").write_text("{not json")
    overview = cli(cfg, "list")
    assert overview.exit_code == 0, overview.output
    assert "sentinel" in overview.output and "aliases.json" in overview.output


# ----------------------------------------------------------------------------------------- the marker
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("completed_at", "1999-01-01T00:00:00+00:00"),
        ("push_id", "0" * 32),
        ("version", 7),
        ("model_card_sha256", "0" * 64),
    ],
)
def test_every_field_of_the_completion_marker_is_covered(
    registry: ModelRegistry, model_dir: Path, field: str, value: object
) -> None:
    registry.push(model_dir, name="sentinel")
    marker = Path(registry.root) / "sentinel" / "v1" / "_COMPLETE"
    state = json.loads(marker.read_text())
    assert field in state
    state[field] = value
    marker.write_text(json.dumps(state))
    with pytest.raises(ChecksumError, match="_COMPLETE"):
        registry.get_metadata("sentinel/v1")
    with pytest.raises(ChecksumError, match="_COMPLETE"):
        registry.resolve("sentinel/v1")
    (info,) = registry.list_versions("sentinel")
    assert info.status == "corrupt" and "_COMPLETE" in (info.problem or "")


def test_a_marker_stripped_of_its_checksum_is_refused(registry: ModelRegistry, model_dir: Path) -> None:
    registry.push(model_dir, name="sentinel")
    marker = Path(registry.root) / "sentinel" / "v1" / "_COMPLETE"
    state = json.loads(marker.read_text())
    checksum_fields = [k for k in state if k not in ("version", "push_id", "completed_at") and "card" not in k]
    checksum_fields.remove("metadata_sha256")
    assert checksum_fields, state  # the marker carries a checksum of its own fields
    for key in checksum_fields:
        del state[key]
    marker.write_text(json.dumps(state))
    with pytest.raises(ChecksumError, match="_COMPLETE"):
        registry.get_metadata("sentinel/v1")


def test_an_unreadable_marker_is_a_registry_error_not_a_crash(registry: ModelRegistry, model_dir: Path) -> None:
    registry.push(model_dir, name="sentinel")
    (Path(registry.root) / "sentinel" / "v1" / "_COMPLETE").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(RegistryError, match="_COMPLETE"):
        registry.get_metadata("sentinel/v1")
    (info,) = registry.list_versions("sentinel")
    assert info.status == "corrupt"


def test_a_version_pushed_before_the_marker_checksum_still_reads(
    registry: ModelRegistry, model_dir: Path, cfg: SentinelConfig
) -> None:
    """Registries written by the earlier layout (metadata schema 1, a marker without marker_sha256) stay usable."""
    from prompt_sentinel.checksums import sha256_bytes

    registry.push(model_dir, name="sentinel", aliases=("champion",))
    vdir = Path(registry.root) / "sentinel" / "v1"
    metadata = json.loads((vdir / "metadata.json").read_text())
    metadata["schema_version"] = 1
    raw = (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode()
    (vdir / "metadata.json").write_bytes(raw)
    marker = json.loads((vdir / "_COMPLETE").read_text())
    legacy = {k: marker[k] for k in ("version", "push_id", "completed_at", "model_card_sha256")}
    (vdir / "_COMPLETE").write_text(json.dumps({**legacy, "metadata_sha256": sha256_bytes(raw)}))

    fresh = ModelRegistry(registry.root, cfg, cache_dir=Path(cfg.registry.cache_dir) / "fresh")
    assert fresh.get_metadata("sentinel@champion")["version"] == 1
    assert [i.status for i in fresh.list_versions("sentinel")] == ["ok"]
    assert (fresh.resolve("sentinel@champion") / "model.skops").is_file()
