"""Run the training pipeline locally (``kfp.local``), compile it, or submit it to Kubeflow Pipelines.

Local run (``sentinel run``): every step runs as a subprocess of this Python (``SubprocessRunner(use_venv=False)``),
exactly the component code a cluster runs, with everything under one output directory::

    <output>/pipeline_root/   KFP artifacts of every task (+ .kfp_cache: a second run reuses unchanged steps)
    <output>/registry/        the model registry (pushed versions, aliases)
    <output>/mlflow.db        MLflow tracking (SQLite; run artifacts under <output>/mlartifacts)
    <output>/results/         selection.json, results.csv, report.html, push/deploy results, run_status.json
    <output>/logs/pipeline.log  every step's full log

Inputs are checked before any step runs (data and blind files exist, model names are known, the config is valid);
a step that fails ends the run with that step's own error message (:class:`PipelineError`).

Submit (``sentinel submit``): compile with the given config's pipeline settings, check ``--param`` names and types
against the compiled pipeline's inputs, and create a run (or a recurring run) through ``kfp.Client``.

Everything here except :func:`run_local`, :func:`submit_pipeline` and :func:`serve_smoke_test` is a pure helper.
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
import tempfile
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from prompt_sentinel import storage
from prompt_sentinel.config import ALL_MODELS, SentinelConfig
from prompt_sentinel.errors import ConfigError, DataError, PipelineError, SentinelError

log = logging.getLogger(__name__)

COMPILED_NAME = "training_pipeline.yaml"
TOKEN_ENV = "KF_PIPELINES_TOKEN"
RESULTS_DIR = "results"
STATUS_FILE = "run_status.json"
SELECTION_FILE = "selection.json"
RESULTS_CSV = "results.csv"
REPORT_FILE = "report.html"
PUSH_FILE = "push_result.json"
DEPLOY_FILE = "deploy_result.json"
CANDIDATES_FILE = "candidates.json"
# kfp.local progress lines worth showing on the console; everything else goes to the log file only.
_PROGRESS = re.compile(
    r"Running pipeline|Executing task|finished with status|cache hit|Skipping|Inner task failed|sentinel-stage-failure"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# ------------------------------------------------------------------------------------------- input checks
def check_models(models: Sequence[str] | str) -> list[str]:
    """Model names, de-duplicated in order; unknown names raise :class:`ConfigError` naming the allowed ones."""
    if isinstance(models, str):
        models = [models]
    names: list[str] = []
    for item in models:
        for name in str(item).split(","):
            name = name.strip()
            if name and name not in names:
                names.append(name)
    if not names:
        raise ConfigError(f"models is empty; pass at least one of {list(ALL_MODELS)}")
    unknown = [m for m in names if m not in ALL_MODELS]
    if unknown:
        raise ConfigError(f"unknown model(s) {unknown} in models={names}; allowed: {list(ALL_MODELS)}")
    return names


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


# ------------------------------------------------------------------------------------------------ layout
@dataclass(frozen=True)
class LocalRunPaths:
    """Where a local run puts everything (all under ``output``)."""

    output: Path

    @property
    def pipeline_root(self) -> Path:
        return self.output / "pipeline_root"

    @property
    def registry(self) -> Path:
        return self.output / "registry"

    @property
    def mlflow_db(self) -> Path:
        return self.output / "mlflow.db"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.output / "mlartifacts"

    @property
    def results(self) -> Path:
        return self.output / RESULTS_DIR

    @property
    def log_file(self) -> Path:
        return self.output / "logs" / "pipeline.log"


@dataclass
class LocalRunRequest:
    """Everything ``sentinel run`` passes in; :func:`prepare_local_run` validates it."""

    data: str
    output: str | Path
    cfg: SentinelConfig = field(default_factory=SentinelConfig)
    blind: str | None = None
    models: Sequence[str] | None = None
    train_transformer: bool = False
    registry_root: str | None = None
    mlflow_uri: str | None = None
    cache: bool = True


def prepare_local_run(request: LocalRunRequest) -> tuple[LocalRunPaths, SentinelConfig, dict[str, Any]]:
    """Validate the request (nothing runs yet) and build the pipeline arguments; returns (paths, cfg, args)."""
    data = check_data_uri(request.data, "--data")
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
        path = self.results_dir / REPORT_FILE
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
    summary.status = _read_json_file(root / STATUS_FILE) or {}
    if not summary.status.get("failures"):
        # The exit handler may not have run (e.g. the run was interrupted): read the per-stage records directly.
        from components._runtime import read_failures

        failures = read_failures(str(root))
        if failures:
            summary.status = {**summary.status, "failures": failures}
    summary.selection = _read_json_file(root / SELECTION_FILE) or {}
    summary.candidates = _read_json_file(root / CANDIDATES_FILE) or {}
    summary.push = _read_json_file(root / PUSH_FILE)
    summary.deploy = _read_json_file(root / DEPLOY_FILE)
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

    from kfp import local

    from pipelines.training_pipeline import build_pipeline

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
@dataclass
class SmokeAnswer:
    protocol: str
    text: str
    expected: str
    label: str
    decision: str | None
    scores: dict[str, float]


def smoke_prompts(data_uri: str, cfg: SentinelConfig) -> list[tuple[str, str]]:
    """A benign and a malicious prompt from the dataset (by security role; first two labels otherwise)."""
    from prompt_sentinel.data import load_dataset

    frame = load_dataset(data_uri, cfg)
    roles = cfg.labels.roles
    wanted = [r for r in (roles.benign, roles.malicious) if r is not None] or list(range(cfg.labels.num_classes))[:2]
    prompts = []
    for label_id in wanted:
        rows = frame[frame["label"] == label_id]
        if len(rows):
            prompts.append((cfg.labels.names[label_id], str(rows.iloc[0]["text"])))
    if not prompts:
        raise DataError(f"{data_uri}: no rows of labels {[cfg.labels.names[i] for i in wanted]} to smoke-test with")
    return prompts


def smoke_target(summary: RunSummary, cfg: SentinelConfig) -> tuple[str, str] | None:
    """What to serve after a run: the registry's champion, else the best candidate's model directory (so the
    serving path is exercised even when no model passed the gates); None when there is neither."""
    from prompt_sentinel.registry import CHAMPION, ModelRegistry

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
    model_ref: str, model_name: str, prompts: Sequence[tuple[str, str]], timeout: float = 180.0
) -> list[SmokeAnswer]:
    """Start the real KServe model server on ``model_ref`` (127.0.0.1), send one V1 and one V2 request with
    ``prompts`` ((expected label, text) pairs), stop the server; returns the answers."""
    from prompt_sentinel.client import classify
    from serving.local import running_server

    texts = [text for _, text in prompts]
    answers = []
    with running_server(model_ref, model_name=model_name, timeout=timeout) as url:
        for protocol in ("v1", "v2"):
            predictions = classify(url, texts, protocol=protocol, model_name=model_name)
            for (expected, text), pred in zip(prompts, predictions, strict=True):
                answers.append(SmokeAnswer(protocol, text, expected, pred.label, pred.decision, dict(pred.scores)))
    return answers


# ------------------------------------------------------------------------------------------------ compile
def compile_pipeline(out: str | Path, cfg: SentinelConfig | None = None) -> Path:
    """Compile the pipeline (``cfg.pipeline`` settings) to ``out`` (written atomically); returns the path.

    Deterministic: the YAML holds no timestamps or local paths, so recompiling an unchanged pipeline gives the
    same bytes (the committed ``pipelines/compiled/training_pipeline.yaml`` is checked that way).
    """
    from kfp import compiler

    from pipelines.training_pipeline import build_pipeline

    target = Path(out)
    if target.exists() and target.is_dir():
        raise ConfigError(f"--out {out}: is a directory; pass a .yaml file path")
    if target.suffix not in {".yaml", ".yml"}:
        raise ConfigError(f"--out {out}: must end with .yaml or .yml (the KFP pipeline package format)")
    with tempfile.TemporaryDirectory(prefix="sentinel-compile-") as tmp:
        staged = Path(tmp, "pipeline.yaml")
        compiler.Compiler().compile(build_pipeline(cfg), str(staged))
        storage.write_text(str(target), staged.read_text())
    return target


def pipeline_inputs(package: str | Path) -> dict[str, dict[str, Any]]:
    """``{name: {"type": KFP parameter type, "default": value, "required": bool}}`` of a compiled pipeline."""
    try:
        docs = list(yaml.safe_load_all(Path(package).read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise PipelineError(f"cannot read pipeline package {package}: {exc}") from exc
    spec = docs[0] if docs else {}
    params = (((spec or {}).get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
    return {
        name: {
            "type": p.get("parameterType", "STRING"),
            "default": p.get("defaultValue"),
            "required": "defaultValue" not in p and not p.get("isOptional", False),
        }
        for name, p in params.items()
    }


def _typed(name: str, raw: str, kind: str) -> Any:
    """Convert a ``--param`` string to the parameter's KFP type, or :class:`ConfigError` saying what is allowed."""
    if kind == "STRING":
        return raw
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if kind == "BOOLEAN" and isinstance(value, bool):
        return value
    if kind == "NUMBER_INTEGER" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "NUMBER_DOUBLE" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == "LIST":
        if isinstance(value, list):
            return value
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
    if kind == "STRUCT" and isinstance(value, dict):
        return value
    allowed = {
        "BOOLEAN": "true or false",
        "NUMBER_INTEGER": "an integer",
        "NUMBER_DOUBLE": "a number",
        "LIST": "a list, e.g. [logreg,complement_nb] or logreg,complement_nb",
        "STRUCT": "a mapping, e.g. {a: 1}",
    }.get(kind, kind)
    raise ConfigError(f"--param {name}={raw!r}: parameter {name!r} takes {allowed}")


def parse_params(items: Sequence[str], inputs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``["k=v", ...]`` → typed arguments; unknown names and missing required parameters raise ConfigError."""
    params: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--param {item!r} must look like name=value; parameters: {sorted(inputs)}")
        name, raw = item.split("=", 1)
        name = name.strip()
        if name not in inputs:
            raise ConfigError(f"--param {name}: the pipeline has no such parameter; parameters: {sorted(inputs)}")
        params[name] = _typed(name, raw, str(inputs[name]["type"]))
    return params


def check_submit_params(params: Mapping[str, Any], inputs: Mapping[str, Mapping[str, Any]]) -> None:
    """Required parameters present; data URIs must be gs:// (a cluster cannot read this machine's files)."""
    missing = [n for n, spec in inputs.items() if spec["required"] and n not in params]
    if missing:
        raise ConfigError(f"missing required pipeline parameter(s) {missing}; pass them as --param name=value")
    for name in ("data_uri", "blind_uri", "registry_root", "results_uri"):
        value = params.get(name)
        if isinstance(value, str) and value and not storage.is_gcs(value):
            raise ConfigError(
                f"--param {name}={value}: a cluster run cannot read local paths; use a gs://bucket/... URI"
            )
    if "models" in params:
        check_models(params["models"])


def cron_expression(cron: str) -> str:
    """A 5-field crontab (``"0 3 * * *"``) → the 6-field form KFP's scheduler takes (seconds first)."""
    fields = cron.split()
    if len(fields) == 5:
        return " ".join(["0", *fields])
    if len(fields) == 6:
        return " ".join(fields)
    raise ConfigError(
        f"--cron {cron!r}: expected 5 fields (minute hour day month weekday, e.g. '0 3 * * *') or 6 (with seconds)"
    )


@dataclass
class SubmitResult:
    run_id: str | None
    run_url: str | None
    recurring_run_id: str | None
    recurring_run_url: str | None
    experiment_id: str
    params: dict[str, Any]


def compiled_pipeline_path() -> Path:
    """The committed package ``pipelines/compiled/training_pipeline.yaml`` (shipped as package data)."""
    import pipelines

    return Path(pipelines.__file__).resolve().parent / "compiled" / COMPILED_NAME


def submit_pipeline(
    host: str,
    params: Sequence[str] | Mapping[str, Any],
    cfg: SentinelConfig | None = None,
    *,
    config_given: bool = False,
    namespace: str | None = None,
    experiment: str = "prompt-sentinel",
    cron: str | None = None,
    token: str | None = None,
    run_name: str | None = None,
    pipeline_root: str | None = None,
) -> SubmitResult:
    """Compile, then create a run — or, with ``cron``, a recurring run — on the KFP API at ``host``.

    ``params``: typed arguments, or ``name=value`` strings checked against the compiled pipeline's inputs.
    ``token`` (else ``$KF_PIPELINES_TOKEN``) is sent as a Bearer token; without one kfp.Client uses in-cluster
    credentials. With ``config_given`` the config travels as the ``config_json`` parameter (unless set in params).
    """
    if not host or not str(host).startswith(("http://", "https://")):
        raise ConfigError(f"--host {host!r} must be the KFP API URL, starting with http:// or https://")
    cfg = cfg or SentinelConfig()
    schedule = cron_expression(cron) if cron else None
    token = token or os.environ.get(TOKEN_ENV) or None
    with tempfile.TemporaryDirectory(prefix="sentinel-submit-") as tmp:
        package = compile_pipeline(Path(tmp, COMPILED_NAME), cfg)
        inputs = pipeline_inputs(package)
        arguments = dict(params) if isinstance(params, Mapping) else parse_params(params, inputs)
        if config_given and "config_json" not in arguments:
            arguments["config_json"] = cfg.model_dump_json()
        unknown = [n for n in arguments if n not in inputs]
        if unknown:
            raise ConfigError(f"unknown pipeline parameter(s) {unknown}; parameters: {sorted(inputs)}")
        check_submit_params(arguments, inputs)

        import kfp

        base = host.rstrip("/")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP v2.0.0-beta.2 and later"
                client = kfp.Client(host=base, namespace=namespace or "kubeflow", existing_token=token)
            exp = client.create_experiment(name=experiment, namespace=namespace)
            name = run_name or f"prompt-sentinel-{'schedule' if schedule else 'run'}"
            if schedule:
                recurring = client.create_recurring_run(
                    experiment_id=exp.experiment_id,
                    job_name=name,
                    cron_expression=schedule,
                    params=arguments,
                    pipeline_package_path=str(package),
                    pipeline_root=pipeline_root,
                    max_concurrency=1,
                    no_catchup=True,
                )
                rid = recurring.recurring_run_id
                return SubmitResult(
                    None, None, rid, f"{base}/#/recurringrun/details/{rid}", exp.experiment_id, arguments
                )
            run = client.run_pipeline(
                experiment_id=exp.experiment_id,
                job_name=name,
                pipeline_package_path=str(package),
                params=arguments,
                pipeline_root=pipeline_root,
            )
        except SentinelError:
            raise
        except Exception as exc:  # ApiException, connection errors, auth failures
            raise PipelineError(f"submitting to {base} failed: {type(exc).__name__}: {exc}") from exc
    return SubmitResult(run.run_id, f"{base}/#/runs/details/{run.run_id}", None, None, exp.experiment_id, arguments)
