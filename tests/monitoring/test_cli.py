"""Command-line plumbing of prediction logging: `sentinel serve --log-dir` reaches monitoring.log_dir."""

from __future__ import annotations

from prompt_sentinel.cli.serve import serve_argv
from serving.server import build_parser, config_from_args


def test_serve_log_dir_becomes_the_monitoring_log_dir() -> None:
    argv = serve_argv("/m", None, 8080, False, 8081, None, None, None, None, None, ["monitoring.store_text=true"],
                      log_dir="gs://bucket/logs")  # fmt: skip
    assert argv[argv.index("--log_dir") + 1] == "gs://bucket/logs"
    cfg = config_from_args(build_parser().parse_args(argv))
    assert cfg.monitoring.log_dir == "gs://bucket/logs" and cfg.monitoring.store_text is True
    assert config_from_args(build_parser().parse_args(["--model", "/m"])).monitoring.log_dir is None
