"""`sentinel hpo`: a model's hyperparameter search — a local Optuna study, or (`--katib`) a Katib Experiment on the
cluster; `sentinel hpo trial`: one Katib trial (what the Experiment's trial Job runs)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from prompt_sentinel.cli.common import ConfigOption, SetOption, resolve_config
from prompt_sentinel.config import ALL_MODELS, config_from_json
from prompt_sentinel.errors import ConfigError

HPO_HELP = (
    "Search a model's hyperparameters. Locally: an Optuna study (seeded TPE, median/Hyperband pruning, "
    "training.search.optuna.*; with --storage an interrupted search resumes), then the best model is trained into "
    "--out. With --katib: render the Katib Experiment running the same search on the cluster (--out: write it as "
    "YAML; --submit: create it through the Kubernetes API)."
)


def register(app: typer.Typer) -> None:
    hpo = typer.Typer(help=HPO_HELP, invoke_without_command=True, no_args_is_help=False)
    app.add_typer(hpo, name="hpo")

    @hpo.callback()
    def search(
        ctx: typer.Context,
        model: Annotated[str | None, typer.Option("--model", "-m", help=f"One of {', '.join(ALL_MODELS)}.")] = None,
        data: Annotated[str | None, typer.Option("--data", help="Training data (local or gs://).")] = None,
        val: Annotated[str | None, typer.Option("--val", help="Validation data (local or gs://).")] = None,
        out: Annotated[
            str | None, typer.Option("--out", "-o", help="Model directory (local search) or Experiment YAML (--katib).")
        ] = None,
        trials: Annotated[int | None, typer.Option("--trials", help="training.search.optuna.n_trials.")] = None,
        timeout: Annotated[float | None, typer.Option("--timeout", help="training.search.optuna.timeout_s.")] = None,
        study_storage: Annotated[
            str | None, typer.Option("--storage", help="Study storage URL, e.g. sqlite:///hpo.db (resumable).")
        ] = None,
        study_name: Annotated[str | None, typer.Option("--study-name", help="Name of the stored study.")] = None,
        base_model: Annotated[str | None, typer.Option("--base-model", help="Transformer checkpoint.")] = None,
        katib: Annotated[bool, typer.Option("--katib", help="Render a Katib Experiment instead of searching.")] = False,
        submit: Annotated[bool, typer.Option("--submit", help="With --katib: create the Experiment.")] = False,
        name: Annotated[str | None, typer.Option("--name", help="Experiment name (--katib).")] = None,
        namespace: Annotated[str | None, typer.Option("--namespace", help="Default: deploy.namespace.")] = None,
        parallel: Annotated[int, typer.Option("--parallel", help="Katib parallelTrialCount.", min=1)] = 2,
        objective: Annotated[
            str | None, typer.Option("--objective", help="Katib objective metric (default validation_custom_score).")
        ] = None,
        progress: Annotated[bool, typer.Option(help="Progress bars.")] = True,
        config: ConfigOption = None,
        overrides: SetOption = None,
    ) -> None:
        if ctx.invoked_subcommand is not None:
            return
        missing = [flag for flag, value in (("--model", model), ("--data", data), ("--val", val)) if not value]
        if missing:
            raise ConfigError(f"sentinel hpo needs {', '.join(missing)} (see sentinel hpo --help)")
        if model not in ALL_MODELS:
            raise ConfigError(f"--model {model!r} is not a known model; allowed: {list(ALL_MODELS)}")
        if submit and not katib:
            raise ConfigError("--submit only applies with --katib")
        sets = list(overrides or [])
        for key, value in (("n_trials", trials), ("timeout_s", timeout), ("storage", study_storage)):
            if value is not None:
                sets.append(f"training.search.optuna.{key}={value}")
        if study_name is not None:
            sets.append(f"training.search.optuna.study_name={study_name}")
        cfg = resolve_config(config, sets)
        from prompt_sentinel.stages import hpo as stage

        if katib:
            result = stage.katib(
                model,
                cfg,
                train_uri=data,
                validation_uri=val,
                out=out,
                submit=submit,
                name=name,
                namespace=namespace,
                parallel_trials=parallel,
                objective=objective,
                base_model=base_model,
            )
            if out is None:
                import yaml

                typer.echo(yaml.safe_dump(result["manifest"], sort_keys=False, width=1000), nl=False)
            else:
                typer.echo(f"Katib Experiment written to {out}")
            if result["created"]:
                typer.echo(f"created Experiment {result['manifest']['metadata']['name']}")
            return
        if out is None:
            raise ConfigError("sentinel hpo needs --out (the model directory the best model is written to)")
        trained = stage.run(model, data, val, cfg, out, base_model=base_model, progress=progress)
        typer.echo(json.dumps(trained.summary(), indent=2, default=str))
        typer.echo(f"model written to {trained.model_dir}")

    @hpo.command("trial")
    def trial(
        model: Annotated[str, typer.Option("--model", "-m", help=f"One of {', '.join(ALL_MODELS)}.")],
        data: Annotated[str, typer.Option("--data", help="Training data (local or gs://).")],
        val: Annotated[str, typer.Option("--val", help="Validation data (local or gs://).")],
        params: Annotated[
            list[str] | None, typer.Option("--param", help="name=value, as Katib substitutes it. Repeatable.")
        ] = None,
        base_model: Annotated[str | None, typer.Option("--base-model", help="Transformer checkpoint.")] = None,
        config_json: Annotated[
            str | None, typer.Option("--config-json", help="The whole config as JSON (what the Experiment passes).")
        ] = None,
        config: ConfigOption = None,
        overrides: SetOption = None,
    ) -> None:
        """Train once with the given parameters and print the metrics Katib's StdOut collector reads."""
        from prompt_sentinel.data.loading import load_dataset
        from prompt_sentinel.hpo.trial import parse_params, run_trial

        if config_json is not None and (config is not None or overrides):
            raise ConfigError("--config-json cannot be combined with --config / --set")
        cfg = config_from_json(config_json) if config_json is not None else resolve_config(config, overrides)
        run_trial(
            model,
            load_dataset(data, cfg),
            load_dataset(val, cfg),
            cfg,
            parse_params(list(params or [])),
            base_model=base_model,
            echo=lambda line: (print(line), sys.stdout.flush()),
        )
