"""The MLflow mirror under stress, on real MLflow with SQLite: concurrent first pushes, a push killed before it
mirrored, an unreachable tracking store, and `sentinel registry sync-mlflow` repairing the mirror."""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from prompt_sentinel.config import SentinelConfig
from prompt_sentinel.registry import ModelRegistry
from prompt_sentinel.registry.mlflow_sync import TAG_VERSION, default_tracking_uri

from .test_local import make_cfg, make_model_dir


def run_cli(cfg: SentinelConfig, *args: str) -> Any:
    from prompt_sentinel.cli.registry import register

    app = typer.Typer()
    register(app)
    common = ["--root", cfg.registry.root, "--set", f"registry.cache_dir={cfg.registry.cache_dir}"]
    if cfg.mlflow.tracking_uri:
        common += ["--set", f"mlflow.tracking_uri={cfg.mlflow.tracking_uri}"]
    return CliRunner().invoke(app, ["registry", *args, *common])


def mlflow_state(uri: str, name: str) -> tuple[dict[str, str], dict[str, str]]:
    """(registry version → MLflow version, alias → registry version) as MLflow sees it."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    by_tag = {mv.tags[TAG_VERSION]: str(mv.version) for mv in client.search_model_versions(f"name='{name}'")}
    to_registry = {mlflow_version: tag for tag, mlflow_version in by_tag.items()}
    aliases = {a: to_registry[str(v)] for a, v in client.get_registered_model(name).aliases.items()}
    return by_tag, aliases


def registry_state(registry: ModelRegistry, name: str) -> dict[str, str]:
    return {alias: str(version) for alias, version in registry.aliases(name).items()}


# ------------------------------------------------------------------------------- concurrent first pushes
FIRST_PUSHERS = 4


def _first_push_worker(root: str, cache: str, model_dir: str, barrier: Any, out: Any) -> None:
    cfg = SentinelConfig.model_validate({"registry": {"cache_dir": cache}})
    registry = ModelRegistry(root, cfg)
    import mlflow  # noqa: F401  (imported before the barrier: the race is in the store, not in imports)

    barrier.wait()
    result = registry.push(model_dir, name="sentinel")
    out.put((result.version, result.mlflow_version, result.mlflow_error))


@pytest.mark.slow
def test_concurrent_first_pushes_to_a_new_sqlite_store_are_all_mirrored(tmp_path: Path) -> None:
    """Several processes push at once to a registry whose MLflow SQLite store does not exist yet: creating the
    schema raced ("duplicate column name: step", "table experiments already exists") and 3 of 4 pushes went
    unmirrored. Now every push is mirrored."""
    model_dir = make_model_dir(tmp_path / "model")
    cfg = make_cfg(tmp_path / "out", mlflow=True)
    uri = default_tracking_uri(cfg.mlflow, str(Path(cfg.registry.root).absolute()))
    assert not (tmp_path / "out" / "mlflow.db").exists()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["prompt_sentinel.registry"])
    barrier, out = ctx.Barrier(FIRST_PUSHERS), ctx.Queue()
    procs = [
        ctx.Process(
            target=_first_push_worker, args=(cfg.registry.root, cfg.registry.cache_dir, str(model_dir), barrier, out)
        )
        for _ in range(FIRST_PUSHERS)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert [error for _, _, error in results] == [None] * FIRST_PUSHERS, results
    by_tag, aliases = mlflow_state(uri, "sentinel")
    assert sorted(by_tag, key=int) == [str(v) for v in range(1, FIRST_PUSHERS + 1)]
    assert aliases == registry_state(ModelRegistry(cfg.registry.root, cfg), "sentinel")


# ------------------------------------------------------------------------------- killed push, then repair
_KILLED_BEFORE_MIRROR = textwrap.dedent(
    """
    import os, signal, sys
    from prompt_sentinel.config import SentinelConfig
    from prompt_sentinel.registry import ModelRegistry, mlflow_sync
    # the process dies after the registry committed the version and moved its aliases, before MLflow heard of it
    mlflow_sync.register_version = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
    cfg = SentinelConfig.model_validate({"registry": {"cache_dir": sys.argv[3]}})
    ModelRegistry(sys.argv[1], cfg).push(sys.argv[2], name="sentinel", aliases=("candidate", "champion"))
    """
)


@pytest.mark.slow
def test_sync_mlflow_repairs_the_mirror_after_a_killed_push(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path / "model")
    cfg = make_cfg(tmp_path / "out", mlflow=True)
    registry = ModelRegistry(cfg.registry.root, cfg)
    uri = default_tracking_uri(cfg.mlflow, registry.root)
    registry.push(model_dir, name="sentinel", aliases=("champion",))
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_BEFORE_MIRROR, registry.root, str(model_dir), str(cfg.registry.cache_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert registry_state(registry, "sentinel") == {"champion": "2", "previous": "1", "candidate": "2"}
    by_tag, aliases = mlflow_state(uri, "sentinel")
    assert sorted(by_tag) == ["1"] and aliases == {"champion": "1"}  # the finding: MLflow disagrees
    registry.push(model_dir, name="sentinel", aliases=())  # v3: a later push does not hide the gap

    result = run_cli(cfg, "sync-mlflow", "sentinel")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "sentinel/v2" in result.output
    by_tag, aliases = mlflow_state(uri, "sentinel")
    assert sorted(by_tag) == ["1", "2", "3"]
    assert aliases == registry_state(registry, "sentinel") == {"champion": "2", "previous": "1", "candidate": "2"}

    again = run_cli(cfg, "sync-mlflow")  # every model; nothing left to repair
    assert again.exit_code == 0 and "in sync" in again.output, again.output
    assert mlflow_state(uri, "sentinel") == (by_tag, aliases)


@pytest.mark.slow
def test_sync_mlflow_removes_aliases_the_registry_no_longer_has(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path / "model")
    cfg = make_cfg(tmp_path / "out", mlflow=True)
    registry = ModelRegistry(cfg.registry.root, cfg)
    uri = default_tracking_uri(cfg.mlflow, registry.root)
    registry.push(model_dir, name="sentinel", aliases=("candidate", "staging"))
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.set_registered_model_alias("sentinel", "champion", "1")  # set by hand in MLflow, unknown to the registry
    result = run_cli(cfg, "sync-mlflow", "sentinel")
    assert result.exit_code == 0, result.output
    assert mlflow_state(uri, "sentinel")[1] == {"candidate": "1", "staging": "1"}


# ------------------------------------------------------------------------------------- failure reporting
def test_a_push_that_cannot_be_mirrored_exits_3_naming_the_version_and_the_repair(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path / "model")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    cfg = make_cfg(tmp_path / "out", mlflow=True).model_copy(deep=True)
    cfg.mlflow.tracking_uri = f"sqlite:///{blocker}/mlflow.db"
    result = run_cli(cfg, "push", str(model_dir), "--name", "sentinel")
    assert result.exit_code == 3, (result.output, result.exception)
    assert "sentinel/v1" in result.output and "sync-mlflow" in result.output and "MLflow" in result.output
    assert ModelRegistry(cfg.registry.root, cfg).exists("sentinel/v1")  # the registry push itself stands

    promoted = run_cli(cfg, "promote", "sentinel/v1")
    assert promoted.exit_code == 3 and "champion" in promoted.output and "sync-mlflow" in promoted.output
    assert ModelRegistry(cfg.registry.root, cfg).aliases("sentinel")["champion"] == 1
