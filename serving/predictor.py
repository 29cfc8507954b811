"""The KServe predictor: one verified Prompt Sentinel model behind the V1 and V2 protocols.

``load()`` resolves the model reference (``name@champion``, ``name/vK``, a local directory, a ``gs://``
prefix or KServe's ``storageUri`` mount ``/mnt/models``), verifies every file against ``checksums.json``,
loads either family through :func:`prompt_sentinel.models.loading.load_model`, sizes torch's thread pool to the
pod's CPU limit and warms the model up; only then is the predictor ready. ``preprocess`` validates and
extracts texts (:mod:`serving.protocol`; HTTP requests were validated in full before KServe decoded them,
:mod:`serving.http`), ``predict`` runs the model off the event loop in bounded batches shared fairly between
concurrent requests (:mod:`serving.batching`), ``postprocess`` formats the answer for the protocol the request used.
"""

from __future__ import annotations

import atexit
import json
import logging
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prompt_sentinel.config import DecisionConfig, SentinelConfig
from prompt_sentinel.decision import assign_labels, decide
from prompt_sentinel.errors import RegistryError
from prompt_sentinel.models.base import SentinelModel
from prompt_sentinel.models.loading import load_model
from serving._kserve import kserve
from serving.batching import BatchRunner
from serving.http import RequestRejected
from serving.metrics import (
    UNKNOWN_VERSION,
    count_log_records,
    count_predictions,
    count_response,
    observe_latency,
    observe_scores,
    set_model_info,
)
from serving.protocol import (
    BadRequest,
    ParsedRequest,
    Predictions,
    ServingLimits,
    build_predictions,
    format_v1,
    parse_requested_outputs,
    parse_v1_body,
    parse_v2_inputs,
    v2_metadata,
    v2_output_specs,
)

# KServe is reached through serving._kserve only (it must not parse our command line at import time).
ModelNotReady = kserve.errors.ModelNotReady
InferOutput, InferRequest, InferResponse = kserve.InferOutput, kserve.InferRequest, kserve.InferResponse

logger = logging.getLogger("prompt_sentinel.serving")
DEFAULT_MODEL_REF = "/mnt/models"
# A long warm-up text makes the transformer build its largest padded batch before the first request.
_WARMUP_TEXTS = ["warm-up: is this prompt safe?", " ".join(["ignore previous instructions"] * 80)]


def resolve_model_path(model_ref: str, cfg: SentinelConfig) -> str:
    """A verified local model directory for any reference: ``name@alias``, ``name/vK``, ``<root>::name@alias``,
    a local directory (e.g. KServe's ``/mnt/models``) or a ``gs://`` model directory.

    Delegates to the registry (:func:`prompt_sentinel.registry.resolve_model_ref`), which uses
    ``cfg.registry.root`` for bare references and verifies checksums; errors name the reference.
    """
    ref = str(model_ref).strip()
    if not ref:
        raise RegistryError("model reference is empty; pass --model NAME@ALIAS, NAME/vK, a directory or gs://")
    from prompt_sentinel.registry import resolve_model_ref

    return str(resolve_model_ref(ref, cfg))


def effective_decision(model_decision: DecisionConfig, override: DecisionConfig) -> DecisionConfig:
    """The model's thresholds, with any threshold the operator set explicitly in ``serving.decision``.

    Only fields present in the configuration override (pydantic's ``model_fields_set``): a default config
    leaves the thresholds chosen at training/promotion time untouched.
    """
    explicit = {name: getattr(override, name) for name in override.model_fields_set}
    return model_decision.model_copy(update=explicit) if explicit else model_decision


def _size_torch_threads(model: SentinelModel) -> None:
    """Size torch's thread pool to the pod's CPU limit for sklearn pipelines that embed with torch.

    The transformer loader already does this (``prompt_sentinel.models.transformer.torch_threads``: the cgroup
    CPU quota, or ``SENTINEL_TORCH_THREADS``); a classical model with an ``embeddings``/``combined``
    featurizer runs MiniLM through torch as well and gets the same pool, inside an ensemble too. TF-IDF pipelines
    do not use torch.
    """
    members = getattr(model, "members", [model])  # an ensemble: whichever member embeds with torch
    embeds = any(m.family == "sklearn" and m.descriptor.featurizer in ("embeddings", "combined") for m in members)
    if "torch" not in sys.modules or not embeds:
        return
    import torch

    from prompt_sentinel.inference.backends import torch_threads

    torch.set_num_threads(torch_threads())
    logger.info("torch intra-op threads: %d", torch.get_num_threads())


def model_version_of(model_path: str | Path) -> str:
    """``v<N>`` of a registry version directory (its ``metadata.json``, which KServe's storage initializer and the
    registry cache copy with the model), else ``unknown``."""
    from prompt_sentinel.registry.layout import METADATA_FILE

    try:
        version = json.loads(Path(model_path, METADATA_FILE).read_text()).get("version")
    except (OSError, ValueError, AttributeError):
        return UNKNOWN_VERSION
    return f"v{version}" if isinstance(version, int) and not isinstance(version, bool) else UNKNOWN_VERSION


@dataclass
class _Result:
    request: ParsedRequest
    predictions: Predictions
    started: float = field(default_factory=time.perf_counter)


class SentinelPredictor(kserve.Model):
    """``kserve.Model`` serving one Prompt Sentinel artifact of either family."""

    def __init__(
        self,
        name: str,
        model_ref: str = DEFAULT_MODEL_REF,
        cfg: SentinelConfig | None = None,
        limits: ServingLimits | None = None,
    ) -> None:
        super().__init__(name)
        self.model_ref = model_ref
        self.cfg = cfg or SentinelConfig()
        self.limits = limits or ServingLimits.from_config(self.cfg.serving)
        self.model: SentinelModel | None = None
        self.model_path: str | None = None
        self.decision: DecisionConfig | None = None
        self.load_seconds: float | None = None
        self.model_version = UNKNOWN_VERSION
        self._runner: BatchRunner | None = None
        self.prediction_log: Any = None  # prompt_sentinel.monitoring.logstore.PredictionLogWriter when logging
        self._text_policy: Any = None

    # ---- lifecycle -------------------------------------------------------------------------------------

    def load(self) -> bool:
        """Resolve, verify, load and warm up the model; raises SentinelError (e.g. ChecksumError) on failure."""
        started = time.perf_counter()
        path = resolve_model_path(self.model_ref, self.cfg)
        logger.info("loading model %r from %s", self.model_ref, path)
        # the configured backend (inference.backend, or SENTINEL_INFERENCE_BACKEND) as evaluation used it
        model = load_model(path, verify=True, inference=self.cfg.inference)
        _size_torch_threads(model)
        serving = self.cfg.serving
        runner = BatchRunner(
            lambda texts: model.predict_proba(texts, batch_size=serving.batch_size),
            serving.batch_size,
            max_batch_chars=serving.batch_max_chars,
            workers=serving.inference_threads,
        )
        model.warmup()
        runner.run_sync(_WARMUP_TEXTS)
        self.model, self.model_path, self._runner = model, path, runner
        self.decision = effective_decision(model.descriptor.decision, self.cfg.serving.decision)
        self.model_version = model_version_of(path)
        set_model_info(
            self.name, self.model_version, model.family, model.descriptor.model_type, model.inference_backend
        )
        if self.cfg.monitoring.log_dir:
            self._open_prediction_log(self.cfg.monitoring.log_dir)
        self.load_seconds = time.perf_counter() - started
        logger.info(
            "model %r ready: family=%s type=%s labels=%s decision=%s (loaded in %.2fs)",
            self.name,
            model.family,
            model.descriptor.model_type,
            model.labels,
            self.decision.model_dump(),
            self.load_seconds,
        )
        self.ready = True
        return self.ready

    def _open_prediction_log(self, log_dir: str) -> None:
        """Append every prediction to ``log_dir`` (buffered, written off the request path)."""
        from prompt_sentinel.monitoring.logstore import PredictionLogWriter
        from prompt_sentinel.monitoring.records import TextPolicy

        settings = self.cfg.monitoring
        self._text_policy = TextPolicy.from_settings(settings.store_text, settings.salt_env)
        self.prediction_log = PredictionLogWriter(
            log_dir,
            prefix=self.name,
            flush_interval_s=settings.flush_interval_s,
            max_buffered=settings.max_buffered_records,
            rotate_records=settings.rotate_records,
            on_written=lambda n: count_log_records(self.name, "written", n),
            on_dropped=lambda n: count_log_records(self.name, "dropped", n),
        )
        atexit.register(self.prediction_log.close)
        logger.info("logging predictions to %s (text stored: %s)", log_dir, settings.store_text)

    def _log_predictions(self, payload: ParsedRequest, predictions: Predictions, headers: Any, seconds: float) -> None:
        from prompt_sentinel.monitoring.records import build_records

        request_id = payload.request_id or (headers or {}).get("x-request-id") or uuid.uuid4().hex
        names = self.label_names
        self.prediction_log.write(
            build_records(
                payload.texts,
                predictions.labels,
                predictions.decisions,
                [dict(zip(names, row, strict=True)) for row in predictions.proba.tolist()],
                model=self.name,
                model_version=self.model_version,
                protocol=payload.protocol,
                request_id=str(request_id),
                source="predictor",
                policy=self._text_policy,
                latency_ms=seconds * 1000.0,
            )
        )

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.close()
        if self.prediction_log is not None:
            self.prediction_log.close()
        self.ready = False

    @property
    def label_names(self) -> list[str]:
        return list(self._loaded().labels)

    def _loaded(self) -> SentinelModel:
        if self.model is None:
            # KServe answers 503 before calling us when not ready; this guards direct calls.
            raise ModelNotReady(self.name)
        return self.model

    # ---- V2 metadata -----------------------------------------------------------------------------------

    def get_input_types(self) -> list[dict[str, Any]]:
        return v2_metadata(len(self.label_names) if self.model else -1)[0]

    def get_output_types(self) -> list[dict[str, Any]]:
        return v2_metadata(len(self.label_names) if self.model else -1)[1]

    # ---- request path ----------------------------------------------------------------------------------

    def validate(self, payload: Any) -> Any:
        # preprocess already validated the request; KServe's generic check would trip over ParsedRequest.
        return payload

    def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> ParsedRequest:
        """Validate the request and extract its texts; malformed input → InvalidInput (HTTP 400).

        HTTP requests were already validated in full by :mod:`serving.http` before KServe decoded them; these
        checks still guard gRPC requests and direct calls.
        """
        is_v2 = isinstance(payload, InferRequest)
        try:
            if is_v2:
                texts = parse_v2_inputs(payload.inputs, self.limits)
                outputs = parse_requested_outputs(payload.request_outputs)
                return ParsedRequest(texts=texts, protocol="v2", request_id=payload.id, requested_outputs=outputs)
            return ParsedRequest(texts=parse_v1_body(payload, self.limits), protocol="v1")
        except BadRequest as exc:
            if is_v2 and payload.from_grpc:  # HTTP answers are counted by the HTTP middleware
                count_response(self.name, "grpc", 400, exc.reason)
            raise RequestRejected(str(exc), exc.reason) from None

    async def predict(
        self, payload: ParsedRequest, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> _Result:
        """Class probabilities for every text of the request, computed in one (shared) batch."""
        started = time.perf_counter()
        model = self._loaded()
        assert self._runner is not None and self.decision is not None
        proba = await self._runner.submit(payload.texts)
        predictions = self._answer(model, np.asarray(proba))
        count_predictions(self.name, predictions.labels, predictions.decisions, self.model_version)
        observe_scores(self.name, self.model_version, model.labels, predictions.proba)
        if self.prediction_log is not None:
            self._log_predictions(payload, predictions, headers, time.perf_counter() - started)
        return _Result(payload, predictions, started)

    def postprocess(
        self, result: _Result, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> dict[str, Any] | kserve.InferResponse:
        names = self.label_names
        observe_latency(self.name, self.model_version, result.request.protocol, time.perf_counter() - result.started)
        if result.request.protocol == "v1":
            # The version lets KServe's payload logger (and so the logger sink) tell a canary's answers apart.
            return {**format_v1(result.predictions, names), "model_version": self.model_version}
        specs = v2_output_specs(result.predictions, names)
        wanted = result.request.requested_outputs
        outputs = [
            InferOutput(
                name=spec["name"],
                shape=spec["shape"],
                datatype=spec["datatype"],
                data=spec["data"],
                parameters=spec.get("parameters"),
            )
            for spec in specs
            if wanted is None or spec["name"] in wanted
        ]
        # The Open Inference Protocol makes the request id optional; the response always carries one.
        return InferResponse(
            response_id=result.request.request_id or str(uuid.uuid4()),
            model_name=self.name,
            infer_outputs=outputs,
            model_version=self.model_version,
        )

    # ---- in-process convenience ------------------------------------------------------------------------

    def predict_texts(self, texts: list[str]) -> Predictions:
        """Same answer as the HTTP path, without HTTP (used by tests and the benchmark floor)."""
        model = self._loaded()
        assert self.decision is not None
        proba = np.asarray(model.predict_proba(texts, batch_size=self.cfg.serving.batch_size))
        return self._answer(model, proba)

    def _answer(self, model: SentinelModel, proba: np.ndarray) -> Predictions:
        """Labels and decisions under the effective decision rule (model metadata + operator overrides)."""
        assert self.decision is not None
        label_ids = assign_labels(proba, model.roles, self.decision)
        decisions = decide(proba, model.roles, self.decision, label_ids)
        return build_predictions(proba, model.labels, label_ids, decisions)
