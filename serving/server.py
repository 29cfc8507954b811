"""Entry point of the serving container: ``python -m serving --model REF [KServe flags]``.

The parser extends KServe's own (``--http_port``, ``--grpc_port``, ``--enable_grpc``, ``--model_name``, …)
with ``--model``, ``--max_instances``, ``--max_chars``, ``--batch_size``, ``--registry_root``, ``--config``
and ``--set``. The model is loaded and verified *before* the HTTP server starts: a tampered or missing
artifact logs one clear line (naming the file) and exits with status 1, so the pod never turns ready.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import warnings
from collections.abc import Sequence

from fastapi import FastAPI
from fastapi.responses import ORJSONResponse

from prompt_sentinel.config import SentinelConfig, load_config
from prompt_sentinel.errors import ConfigError, SentinelError
from serving._kserve import kserve
from serving.http import install_http_guards
from serving.predictor import DEFAULT_MODEL_REF, SentinelPredictor

logger = logging.getLogger("prompt_sentinel.serving")


def build_parser() -> argparse.ArgumentParser:
    """KServe's model-server parser plus the Prompt Sentinel options."""
    # A copy: set_defaults below must not change the defaults of KServe's module-level parser.
    kserve_parser = copy.deepcopy(kserve.model_server.parser)
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="Serve a Prompt Sentinel model with KServe (V1 and V2 REST protocols, /metrics).",
        parents=[kserve_parser],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL_REF,
        help="Model to serve: NAME@ALIAS or NAME/vK from the registry, a model directory, a gs:// prefix, "
        "or the storageUri mount KServe provides.",
    )
    parser.add_argument("--max_instances", type=int, default=None, help="Texts per request (serving.max_instances).")
    parser.add_argument("--max_chars", type=int, default=None, help="Characters per text (serving.max_chars).")
    parser.add_argument("--batch_size", type=int, default=None, help="Texts per model call (serving.batch_size).")
    parser.add_argument("--registry_root", default=None, help="Registry root for NAME@ALIAS refs (registry.root).")
    parser.add_argument(
        "--log_dir",
        default=None,
        help="Append every prediction to this folder or gs:// prefix as JSONL (monitoring.log_dir).",
    )
    parser.add_argument("--config", default=None, help="Prompt Sentinel YAML config (local path or gs://).")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="Override a config field, e.g. --set serving.decision.block_threshold=0.3. Repeatable.",
    )
    parser.set_defaults(model_name=None)
    return parser


def config_from_args(args: argparse.Namespace) -> SentinelConfig:
    """The config file and --set overrides, then the dedicated flags (which win)."""
    overrides = list(args.overrides or [])
    for flag, field in (
        ("max_instances", "serving.max_instances"),
        ("max_chars", "serving.max_chars"),
        ("batch_size", "serving.batch_size"),
        ("registry_root", "registry.root"),
        ("log_dir", "monitoring.log_dir"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{field}={value}")
    return load_config(args.config, overrides)


def create_app(predictor: SentinelPredictor) -> FastAPI:
    """A fresh FastAPI app with KServe's routes, middlewares and error handlers, serving ``predictor``.

    Used in-process (e.g. FastAPI's TestClient); ``main`` uses KServe's own ``ModelServer``, which builds the
    same routes on its module-level app.
    """
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.server import RESTServer

    repository = ModelRepository()
    repository.update(predictor)
    dataplane = DataPlane(model_registry=repository)
    extension = ModelRepositoryExtension(model_registry=repository)
    app = FastAPI(title="Prompt Sentinel", default_response_class=ORJSONResponse, docs_url=None, redoc_url=None)
    install_http_guards(app, predictor.limits, [predictor.name])
    # RESTServer only wires an app here; the uvicorn config it builds is never started. Its public
    # create_application() wires only KServe's module-level app, so the three private steps it consists of are
    # called directly; tests/serving/test_kserve_seams.py fails if KServe changes them.
    rest = RESTServer("kserve.model_server:app", dataplane, extension, http_port=0)
    rest._add_middlewares(app)
    rest._register_endpoints(app)
    rest._add_exception_handlers(app)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, load and verify the model, then run KServe's ModelServer until stopped."""
    args = build_parser().parse_args(argv)
    # KServe 0.21 answers with ORJSONResponse, which FastAPI deprecates: one warning per route, not actionable.
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")
    # KServe reads a few settings (logging, gRPC options) from the namespace it parsed at import time;
    # hand it ours, which holds every KServe flag too.
    kserve.model_server.args = args
    if args.configure_logging:
        kserve.logging.configure_logging(args.log_config_file)
    logging.getLogger("prompt_sentinel").setLevel(logging.INFO)
    if not args.enable_latency_logging:
        # KServe's TimingMiddleware writes every request's timings to its trace logger at INFO whatever this
        # flag says; with the flag off, per-request latency lines are exactly what the operator turned off.
        logging.getLogger(kserve.logging.KSERVE_TRACE_LOGGER_NAME).setLevel(logging.WARNING)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.workers != 1:
            raise ConfigError(
                f"--workers {args.workers}: only 1 worker per process is supported (each worker would load "
                "its own model copy); scale with replicas instead"
            )
        cfg = config_from_args(args)
        name = args.model_name or cfg.registry.model_name
        predictor = SentinelPredictor(name, args.model, cfg)
        predictor.load()
    except SentinelError as exc:
        logger.error("cannot serve model %r: %s", args.model, exc)
        return 1
    install_http_guards(kserve.model_server.app, predictor.limits, [predictor.name])
    server = kserve.ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        max_threads=args.max_threads,
        max_asyncio_workers=args.max_asyncio_workers,
        enable_grpc=args.enable_grpc,
        enable_docs_url=args.enable_docs_url,
        enable_latency_logging=args.enable_latency_logging,
        access_log_format=args.access_log_format,
        event_loop=args.event_loop,
        timeout_keep_alive=args.timeout_keep_alive,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
    )
    server.start([predictor])
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
