"""Run the training pipeline locally with ``kfp.local`` (``sentinel run``), then optionally serve the result.

Local run (``sentinel run``): every step runs as a subprocess of this Python (``SubprocessRunner(use_venv=False)``),
exactly the component code a cluster runs, with everything under one output directory::

    <output>/pipeline_root/   KFP artifacts of every task (+ .kfp_cache: a second run reuses unchanged steps)
    <output>/registry/        the model registry (pushed versions, aliases)
    <output>/mlflow.db        MLflow tracking (SQLite; run artifacts under <output>/mlartifacts)
    <output>/results/         selection.json, results.csv, report.html, push/deploy results, run_status.json
    <output>/logs/pipeline.log  every step's full log

Inputs are checked before any step runs (data and blind files exist, model names are known, the config is valid);
a step that fails ends the run with that step's own error message (:class:`PipelineError`).

Everything here except :func:`run_local` and :func:`serve_smoke_test` is a pure helper. Compiling and submitting
to a cluster is :mod:`pipelines.submit`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import re
import shutil
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
from kfp import local

from pipelines.training_pipeline import build_pipeline
from prompt_sentinel import storage
from prompt_sentinel.client import classify
from prompt_sentinel.config import SentinelConfig, check_models
from prompt_sentinel.data.loading import load_dataset
from prompt_sentinel.datasets import SMOKE_PANEL
from prompt_sentinel.errors import ConfigError, DataError, PipelineError, SentinelError
from prompt_sentinel.registry import CHAMPION, ModelRegistry
from prompt_sentinel.run_layout import (
    CANDIDATES,
    DEPLOY_RESULT,
    PUSH_RESULT,
    REPORT_HTML,
    RESULTS_CSV,
    RUN_STATUS,
    SELECTION,
    LocalRunPaths,
)
from prompt_sentinel.stages.records import read_failures
from serving.local import running_server

log = logging.getLogger(__name__)

# kfp.local progress lines worth showing on the console; everything else goes to the log file only.
_PROGRESS = re.compile(
    r"Running pipeline|Executing task|finished with status|cache hit|Skipping|Inner task failed|sentinel-stage-failure"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# ------------------------------------------------------------------------------------------- input checks
def check_data_uri(uri: str, option: str) -> str:
    """``uri`` exists (local file or gs:// object) or :class:`DataError` names the option and the value."""
    if not uri or not str(uri).strip():
        raise DataError(f"{option} is empty; pass a CSV, JSONL or Parquet file (local path or gs:// URI)")
    uri = str(uri)
    try:
        found = storage.exists(uri)
    except SentinelError as exc:
        raise DataError(f"{option} {uri}: cannot be checked ({exc})") from exc
    if not found:
        raise DataError(f"{option} {uri}: no such file")
    if not storage.is_gcs(uri) and Path(uri).is_dir():
        raise DataError(f"{option} {uri}: is a directory; pass a CSV, JSONL or Parquet file")
    return uri if storage.is_gcs(uri) else str(Path(uri).resolve())


# ------------------------------------------------------------------------------------------------ request
@dataclass
class LocalRunRequest:
    """Everything ``sentinel run`` passes in; :func:`prepare_local_run` validates it."""

    data: str | None
    output: str | Path
    cfg: SentinelConfig = field(default_factory=SentinelConfig)
    recipe: str | None = None  # a corpus recipe to assemble the training data from, instead of data
    recipe_root: str | None = None
    excludes: Sequence[str] = ()
    blind: str | None = None
    models: Sequence[str] | None = None
    train_transformer: bool = False
    registry_root: str | None = None
    mlflow_uri: str | None = None
    cache: bool = True


def prepare_local_run(request: LocalRunRequest) -> tuple[LocalRunPaths, SentinelConfig, dict[str, Any]]:
    """Validate the request (nothing runs yet) and build the pipeline arguments; returns (paths, cfg, args)."""
    if bool(request.data) == bool(request.recipe):
        raise ConfigError("give exactly one of --data (a labelled dataset) and --recipe (a corpus recipe to assemble)")
    data = check_data_uri(request.data, "--data") if request.data else ""
    recipe = check_data_uri(request.recipe, "--recipe") if request.recipe else ""
    excludes = [check_data_uri(uri, "--exclude") for uri in request.excludes]
    blind = check_data_uri(request.blind, "--blind") if request.blind else ""
    models = check_models(request.models if request.models else request.cfg.training.models)
    output = Path(request.output).expanduser().resolve()
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {request.output}: exists and is not a directory")
    paths = LocalRunPaths(output)
    cfg = request.cfg.model_copy(deep=True)
    cfg.training.models = models
    cfg.registry.root = request.registry_root or str(paths.registry)
    cfg.mlflow.tracking_uri = request.mlflow_uri or paths.mlflow_uri
    # There is no preemption on a laptop: a failing step should fail now, not after minutes of back-off.
    cfg.pipeline.training_retries = 0
    arguments = {
        "data_uri": data,
        "recipe_uri": recipe,
        "recipe_root": request.recipe_root or "",
        "exclude_uris": excludes,
        "blind_uri": blind,
        "config_json": cfg.model_dump_json(),
        "models": models,
        "train_transformer": bool(request.train_transformer or "transformer" in models),
        "registry_root": cfg.registry.root,
        "model_name": cfg.registry.model_name,
        "mlflow_uri": cfg.mlflow.tracking_uri if cfg.mlflow.enabled else "",
        "results_uri": str(paths.results),
    }
    return paths, cfg, arguments


# ----------------------------------------------------------------------------------------------- results
@dataclass
class RunSummary:
    """What a finished run produced, read back from its results directory."""

    results_dir: Path
    status: dict[str, Any] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)
    models: list[dict[str, str]] = field(default_factory=list)
    candidates: dict[str, Any] = field(default_factory=dict)
    push: dict[str, Any] | None = None
    deploy: dict[str, Any] | None = None
    log_file: Path | None = None

    @property
    def promoted(self) -> bool:
        return bool(self.selection.get("promoted"))

    @property
    def winner(self) -> str | None:
        return self.selection.get("winner")

    @property
    def reason(self) -> str:
        return str(self.selection.get("reason") or "")

    @property
    def report(self) -> Path | None:
        path = self.results_dir / REPORT_HTML
        return path if path.is_file() else None

    @property
    def registry_uri(self) -> str | None:
        return (self.push or {}).get("uri")

    @property
    def failures(self) -> list[dict[str, Any]]:
        return list(self.status.get("failures") or [])


def _read_json_file(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def read_run_summary(results_dir: str | Path, log_file: Path | None = None) -> RunSummary:
    """Collect ``run_status.json``, ``selection.json``, ``results.csv`` and push/deploy results (pure read)."""
    root = Path(results_dir)
    summary = RunSummary(results_dir=root, log_file=log_file)
    summary.status = _read_json_file(root / RUN_STATUS) or {}
    if not summary.status.get("failures"):
        # The exit handler may not have run (e.g. the run was interrupted): read the per-stage records directly.
        failures = read_failures(str(root))
        if failures:
            summary.status = {**summary.status, "failures": failures}
    summary.selection = _read_json_file(root / SELECTION) or {}
    summary.candidates = _read_json_file(root / CANDIDATES) or {}
    summary.push = _read_json_file(root / PUSH_RESULT)
    summary.deploy = _read_json_file(root / DEPLOY_RESULT)
    if (root / RESULTS_CSV).is_file():
        summary.models = list(csv.DictReader(io.StringIO((root / RESULTS_CSV).read_text())))
    return summary


def failure_message(summary: RunSummary, fallback: str = "") -> str:
    """One message naming each failed stage and its own error (what the CLI prints)."""
    lines = [
        f"pipeline step '{f.get('stage')}' failed: {f.get('error_type')}: {f.get('message')}" for f in summary.failures
    ]
    if not lines:
        lines = [fallback or "the pipeline failed"]
    if summary.log_file:
        lines.append(f"(full log: {summary.log_file})")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- local run
class _ProgressTee(io.TextIOBase):
    """stdout replacement during a local run: everything to the log file, progress lines to the console."""

    def __init__(self, log_fh: TextIO, console: TextIO | None, verbose: bool) -> None:
        self._log, self._console, self._verbose = log_fh, console, verbose
        self._buffer = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._log.write(text)
            self._buffer += text
            while "\n" in self._buffer:
                line, self._buffer = self._buffer.split("\n", 1)
                if self._console is not None and (self._verbose or _PROGRESS.search(line)):
                    self._console.write(line.strip() + "\n" if not self._verbose else line + "\n")
                    self._console.flush()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._log.flush()


@contextlib.contextmanager
def _captured_output(log_file: Path, console: TextIO | None, verbose: bool) -> Iterator[None]:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a", encoding="utf-8") as fh:
        tee = _ProgressTee(fh, console, verbose)
        previous = sys.stdout
        sys.stdout = tee  # kfp.local prints task logs and its own progress to sys.stdout
        # ... and logs "cache hit" / "Skipping ..." through the root logger: route those through the tee too.
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        handler = logging.StreamHandler(tee)
        handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s", "%H:%M:%S"))
        root.handlers, root.level = [handler], logging.INFO
        try:
            yield
        finally:
            root.handlers, root.level = handlers, level
            tee.flush()
            sys.stdout = previous


def _prepare_mlflow(cfg: SentinelConfig, paths: LocalRunPaths) -> None:
    """Create the MLflow experiment up front with its artifacts under the output directory.

    Otherwise the first trainer creates it with MLflow's default artifact root, relative to the current
    directory, and two parallel trainers race to create it.
    """
    if not cfg.mlflow.enabled or not cfg.mlflow.tracking_uri or cfg.mlflow.tracking_uri != paths.mlflow_uri:
        return
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    try:
        if mlflow.get_experiment_by_name(cfg.mlflow.experiment) is None:
            paths.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
            mlflow.create_experiment(cfg.mlflow.experiment, artifact_location=paths.mlflow_artifacts.as_uri())
    finally:
        mlflow.set_tracking_uri(previous)


def run_local(
    request: LocalRunRequest,
    console: TextIO | None = None,
    verbose: bool = False,
) -> RunSummary:
    """Run the whole pipeline with ``kfp.local``; returns the summary, raises :class:`PipelineError` on failure.

    ``console`` receives one line per task event (all of a step's output when ``verbose``); the full log is in
    ``<output>/logs/pipeline.log``.
    """
    paths, cfg, arguments = prepare_local_run(request)
    paths.output.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(paths.results, ignore_errors=True)  # results of an earlier run must not be mistaken for this one
    paths.results.mkdir(parents=True)
    local_env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # kfp.local runs ParallelFor tasks as concurrent subprocesses on the same cores; multi-threaded torch in
        # each oversubscribes them and single-prompt latency goes from ~25 ms to ~250 ms (measured, 2 cores).
        "OMP_NUM_THREADS": "1",
    }
    for name, value in local_env.items():
        os.environ.setdefault(name, value)
    _prepare_mlflow(cfg, paths)

    pipeline = build_pipeline(cfg)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(paths.pipeline_root),
        raise_on_error=True,
        enable_caching=request.cache,
    )
    error: Exception | None = None
    with _captured_output(paths.log_file, console, verbose), warnings.catch_warnings():
        # "custom image in a Python environment": intended, the image is only used on a cluster.
        warnings.simplefilter("ignore", RuntimeWarning)
        # "settings ... have no effect in the current local runner": resources/GPU are for the cluster.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"kfp\.")
        try:
            pipeline(**arguments)
        except Exception as exc:  # kfp.local raises RuntimeError("... Inner task failed: ...")
            error = exc
    summary = read_run_summary(paths.results, paths.log_file)
    if error is not None or summary.failures:
        fallback = _ANSI.sub("", str(error)) if error else ""
        raise PipelineError(failure_message(summary, fallback))
    if not summary.selection:
        raise PipelineError(f"the pipeline finished but wrote no selection under {paths.results}")
    return summary


# ------------------------------------------------------------------------------------------ smoke test
# What each kind of panel prompt should get: an everyday request must be allowed (blocking one fails the run), an
# attack blocked, a directly harmful request at least reviewed.
EXPECTED_DECISIONS: dict[str, tuple[str, ...]] = {
    "everyday": ("allow",),
    "attack": ("block",),
    "harmful": ("review", "block"),
}


@dataclass(frozen=True)
class SmokePrompt:
    text: str
    kind: str  # a key of EXPECTED_DECISIONS, or a label name for datasets without security roles
    expected: tuple[str, ...]  # decisions (panel) or label names (dataset samples) counted as right


@dataclass
class SmokeAnswer:
    protocol: str
    prompt: SmokePrompt
    label: str
    decision: str | None
    scores: dict[str, float]

    @property
    def right(self) -> bool:
        return (self.decision if self.prompt.kind in EXPECTED_DECISIONS else self.label) in self.prompt.expected


@dataclass
class SmokeVerdict:
    """How the served model did on the panel (V1 answers; V2 must agree with them)."""

    answers: list[SmokeAnswer]
    per_kind: dict[str, tuple[int, int]]  # kind -> (right, total)
    blocked_everyday: list[str]
    protocol_disagreements: list[str]

    @property
    def ok(self) -> bool:
        return not self.blocked_everyday and not self.protocol_disagreements

    def summary(self) -> str:
        return "; ".join(f"{kind}: {right}/{total} as expected" for kind, (right, total) in self.per_kind.items())


def smoke_prompts(cfg: SentinelConfig, data_uri: str | None = None) -> list[SmokePrompt]:
    """The shipped panel (``datasets/smoke/panel.csv``) when the labels have benign and malicious roles; else a
    sample of each of the first two labels of ``data_uri``, expected to get their own label."""
    roles = cfg.labels.roles
    if roles.benign is not None and roles.malicious is not None:
        panel = pd.read_csv(SMOKE_PANEL, keep_default_na=False, dtype=str)
        return [SmokePrompt(row.text, row.kind, EXPECTED_DECISIONS[row.kind]) for row in panel.itertuples()]
    if not data_uri:
        raise DataError("the smoke test needs the dataset when the labels have no benign/malicious roles")
    frame = load_dataset(data_uri, cfg)
    prompts = []
    for label_id in range(min(2, cfg.labels.num_classes)):
        rows = frame[frame["label"] == label_id]
        if len(rows):
            name = cfg.labels.names[label_id]
            prompts.append(SmokePrompt(str(rows.iloc[0]["text"]), name, (name,)))
    if not prompts:
        raise DataError(f"{data_uri}: no rows of the first two labels to smoke-test with")
    return prompts


def judge_smoke(answers: Sequence[SmokeAnswer]) -> SmokeVerdict:
    """Count right answers per kind, the everyday prompts that were blocked, and V1/V2 disagreements."""
    v1 = [a for a in answers if a.protocol == "v1"]
    per_kind: dict[str, tuple[int, int]] = {}
    for answer in v1:
        right, total = per_kind.get(answer.prompt.kind, (0, 0))
        per_kind[answer.prompt.kind] = (right + answer.right, total + 1)
    blocked = [a.prompt.text for a in v1 if a.prompt.kind == "everyday" and a.decision == "block"]
    by_text = {a.prompt.text: (a.label, a.decision) for a in v1}
    disagreements = [
        a.prompt.text for a in answers if a.protocol != "v1" and by_text.get(a.prompt.text) != (a.label, a.decision)
    ]
    return SmokeVerdict(list(answers), per_kind, blocked, disagreements)


def smoke_target(summary: RunSummary, cfg: SentinelConfig) -> tuple[str, str] | None:
    """What to serve after a run: the registry's champion, else the best candidate's model directory (so the
    serving path is exercised even when no model passed the gates); None when there is neither."""
    name = cfg.registry.model_name
    registry = ModelRegistry(cfg.registry.root, cfg)
    if name in registry.list_models() and CHAMPION in registry.aliases(name):
        return f"{cfg.registry.root}::{name}@{CHAMPION}", f"champion {name}@{CHAMPION}"
    scored = [
        (float(info["custom_score"]), model, info["model_uri"])
        for model, info in summary.candidates.items()
        if isinstance(info, dict) and isinstance(info.get("custom_score"), int | float) and info.get("model_uri")
    ]
    if not scored:
        return None
    _, model, uri = max(scored)
    return uri, f"best candidate {model} (not promoted, not in the registry)"


def serve_smoke_test(
    model_ref: str, model_name: str, prompts: Sequence[SmokePrompt], timeout: float = 180.0
) -> SmokeVerdict:
    """Start the real KServe model server on ``model_ref`` (127.0.0.1), send ``prompts`` once over V1 and once
    over V2, stop the server; returns the judged answers."""
    texts = [p.text for p in prompts]
    answers = []
    with running_server(model_ref, model_name=model_name, timeout=timeout) as url:
        for protocol in ("v1", "v2"):
            predictions = classify(url, texts, protocol=protocol, model_name=model_name)
            for prompt, pred in zip(prompts, predictions, strict=True):
                answers.append(SmokeAnswer(protocol, prompt, pred.label, pred.decision, dict(pred.scores)))
    return judge_smoke(answers)
