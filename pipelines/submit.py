"""Compile a pipeline and submit it to Kubeflow Pipelines (``sentinel compile``, ``sentinel submit``).

Two pipelines: ``training`` (:mod:`pipelines.training_pipeline`) and ``monitoring``
(:mod:`pipelines.monitoring_pipeline`: drift check, and on drift retraining with a canary).

Submit compiles with the given config's pipeline settings, checks ``--param`` names and types against the
compiled pipeline's inputs, and creates a run (or a recurring run) through ``kfp.Client``. Everything here except
:func:`submit_pipeline` is a pure helper.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kfp
import yaml
from kfp import compiler

import pipelines
from pipelines.training_pipeline import build_pipeline
from prompt_sentinel import storage
from prompt_sentinel.config import SentinelConfig, check_models
from prompt_sentinel.errors import ConfigError, PipelineError, SentinelError
from prompt_sentinel.run_layout import COMPILED_MONITORING_PIPELINE, COMPILED_PIPELINE

TOKEN_ENV = "KF_PIPELINES_TOKEN"
PIPELINES = {"training": COMPILED_PIPELINE, "monitoring": COMPILED_MONITORING_PIPELINE}


def pipeline_function(pipeline: str, cfg: SentinelConfig | None) -> Any:
    """The ``@dsl.pipeline`` of ``pipeline`` (``training`` or ``monitoring``) for ``cfg``."""
    if pipeline == "training":
        return build_pipeline(cfg)
    if pipeline == "monitoring":
        from pipelines.monitoring_pipeline import build_monitoring_pipeline

        return build_monitoring_pipeline(cfg)
    raise ConfigError(f"--pipeline {pipeline!r}: expected one of {sorted(PIPELINES)}")


def compile_pipeline(out: str | Path, cfg: SentinelConfig | None = None, pipeline: str = "training") -> Path:
    """Compile the pipeline (``cfg.pipeline`` settings) to ``out`` (written atomically); returns the path.

    Deterministic: the YAML holds no timestamps or local paths, so recompiling an unchanged pipeline gives the
    same bytes (the committed ``pipelines/compiled/training_pipeline.yaml`` is checked that way).
    """
    target = Path(out)
    if target.exists() and target.is_dir():
        raise ConfigError(f"--out {out}: is a directory; pass a .yaml file path")
    if target.suffix not in {".yaml", ".yml"}:
        raise ConfigError(f"--out {out}: must end with .yaml or .yml (the KFP pipeline package format)")
    with tempfile.TemporaryDirectory(prefix="sentinel-compile-") as tmp:
        staged = Path(tmp, "pipeline.yaml")
        compiler.Compiler().compile(pipeline_function(pipeline, cfg), str(staged))
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
    sources = [bool(params.get(name)) for name in ("data_uri", "recipe_uri") if name in inputs]
    if len(sources) == 2 and sources[0] == sources[1]:
        raise ConfigError(
            "pass exactly one of --param data_uri=gs://... (a labelled dataset) and --param recipe_uri=gs://... "
            "(a corpus recipe the run assembles its training data from)"
        )
    uri_params = ("data_uri", "recipe_uri", "recipe_root", "blind_uri", "registry_root", "results_uri")
    for name in (*uri_params, "logs_uri", "base_data_uri"):
        value = params.get(name)
        if isinstance(value, str) and value and not storage.is_gcs(value):
            raise ConfigError(
                f"--param {name}={value}: a cluster run cannot read local paths; use a gs://bucket/... URI"
            )
    for uri in params.get("exclude_uris") or []:
        if not storage.is_gcs(str(uri)):
            raise ConfigError(f"--param exclude_uris: {uri} is a local path; a cluster run needs gs://bucket/... URIs")
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


def compiled_pipeline_path(pipeline: str = "training") -> Path:
    """The committed package ``pipelines/compiled/<pipeline>_pipeline.yaml`` (shipped as package data)."""
    if pipeline not in PIPELINES:
        raise ConfigError(f"--pipeline {pipeline!r}: expected one of {sorted(PIPELINES)}")
    return Path(pipelines.__file__).resolve().parent / "compiled" / PIPELINES[pipeline]


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
    pipeline: str = "training",
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
        package = compile_pipeline(Path(tmp, PIPELINES.get(pipeline, COMPILED_PIPELINE)), cfg, pipeline)
        inputs = pipeline_inputs(package)
        arguments = dict(params) if isinstance(params, Mapping) else parse_params(params, inputs)
        if config_given and "config_json" not in arguments:
            arguments["config_json"] = cfg.model_dump_json()
        unknown = [n for n in arguments if n not in inputs]
        if unknown:
            raise ConfigError(f"unknown pipeline parameter(s) {unknown}; parameters: {sorted(inputs)}")
        check_submit_params(arguments, inputs)

        base = host.rstrip("/")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP v2.0.0-beta.2 and later"
                client = kfp.Client(host=base, namespace=namespace or "kubeflow", existing_token=token)
            exp = client.create_experiment(name=experiment, namespace=namespace)
            kind = "" if pipeline == "training" else f"{pipeline}-"
            name = run_name or f"prompt-sentinel-{kind}{'schedule' if schedule else 'run'}"
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
