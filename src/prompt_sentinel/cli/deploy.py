"""`sentinel promote` and `sentinel deploy`: thin wrappers over :mod:`prompt_sentinel.deploy`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from prompt_sentinel.cli.common import ConfigOption, SetOption, resolve_config
from prompt_sentinel.errors import ConfigError

RegistryOption = Annotated[
    str | None, typer.Option("--registry", help="Registry root (local dir or gs://); default registry.root.")
]
ManifestsOption = Annotated[
    Path | None, typer.Option("--manifests", help="Manifests directory; default deploy.manifests_dir.")
]
ModelOption = Annotated[
    str | None, typer.Option("--model", "-m", help="Registry model name; default registry.model_name.")
]


def _echo_diff(diff: str) -> None:
    for line in diff.splitlines():
        color = typer.colors.GREEN if line.startswith("+") else typer.colors.RED if line.startswith("-") else None
        typer.secho(line, fg=None if line.startswith(("+++", "---")) else color)


def promote_command(
    model: ModelOption = None,
    version: Annotated[str | None, typer.Option("--version", "-v", help="Registry version to pin, e.g. v3.")] = None,
    env: Annotated[str | None, typer.Option("--env", "-e", help="Environment (overlay) to change.")] = None,
    from_env: Annotated[str | None, typer.Option("--from", help="Copy what this environment runs (with --to).")] = None,
    to_env: Annotated[str | None, typer.Option("--to", help="Environment receiving --from's pin.")] = None,
    canary: Annotated[
        int | None,
        typer.Option("--canary", help="Traffic percentage (0-100) for the new version (canaryTrafficPercent)."),
    ] = None,
    image_tag: Annotated[str | None, typer.Option("--image-tag", help="Pin this predictor image tag too.")] = None,
    registry: RegistryOption = None,
    manifests: ManifestsOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the diff without writing the files.")] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Pin a registry version in an environment's overlay and print the diff.

    --model N --version vK --env staging: pin a complete registry version.

    --from staging --to prod: copy what staging runs (model, version, image tag).

    --canary 10: the share of traffic the new version gets (prod).

    The result is a change to review and commit; nothing talks to a cluster.
    """
    from prompt_sentinel.deploy.promote import parse_version, promote, promote_between
    from prompt_sentinel.deploy.render import resolve_manifests_dir

    cfg = resolve_config(config, set_)
    manifests_dir = resolve_manifests_dir(manifests or cfg.deploy.manifests_dir)
    if from_env or to_env:
        if not (from_env and to_env):
            raise ConfigError("--from and --to go together, e.g. --from staging --to prod")
        if env or version or model or image_tag:
            raise ConfigError(
                "--from/--to copy a whole pin; do not combine them with --env, --model, --version or --image-tag"
            )
        promotion = promote_between(manifests_dir, from_env, to_env, cfg, canary=canary, dry_run=dry_run)
    else:
        if not env:
            raise ConfigError("--env is required (or use --from/--to), e.g. --env staging")
        promotion = promote(
            manifests_dir,
            env,
            cfg,
            registry_root=registry or cfg.registry.root,
            model_name=model,
            version=parse_version(version) if version is not None else None,
            image_tag=image_tag,
            canary=canary,
            dry_run=dry_run,
        )
    if not promotion.changed:
        typer.echo(f"{promotion.environment} already runs {promotion.after.describe()}; nothing to change.")
        return
    _echo_diff(promotion.diff)
    if "://" not in promotion.after.storage_uri:
        typer.secho(
            f"warning: storageUri {promotion.after.storage_uri} is a local path, which KServe cannot download; "
            "promote from a gs:// registry (--registry) for a real cluster",
            fg=typer.colors.YELLOW,
            err=True,
        )
    verb = "would change" if dry_run else "changed"
    typer.echo(f"\n{promotion.environment}: {verb} {', '.join(c.relpath for c in promotion.changes)}")
    typer.echo(f"  before: {promotion.before.describe()}\n  after:  {promotion.after.describe()}")
    if not dry_run:
        typer.echo("Review the diff above, then commit it; Argo CD rolls it out once merged.")


def deploy_command(
    version: Annotated[str, typer.Option("--version", "-v", help="Registry version to deploy, e.g. v3.")],
    model: ModelOption = None,
    env: Annotated[str | None, typer.Option("--env", "-e", help="Environment; default deploy.environment.")] = None,
    mode: Annotated[
        str | None, typer.Option("--mode", help="gitops (overlay change) or apply (cluster); default deploy.mode.")
    ] = None,
    registry: RegistryOption = None,
    manifests: ManifestsOption = None,
    out: Annotated[
        str | None, typer.Option("--out", "-o", help="Directory for the diff, files and rendered manifest.")
    ] = None,
    kube_api: Annotated[
        str | None, typer.Option("--kube-api", help="API server URL without auth (kubectl proxy); default in-cluster.")
    ] = None,
    branch: Annotated[
        str | None, typer.Option("--branch", help="GitOps: also commit the change to this new branch.")
    ] = None,
    timeout: Annotated[
        int | None, typer.Option("--timeout", help="Seconds to wait for Ready; default deploy.ready_timeout_s.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only render and print the InferenceService; change nothing.")
    ] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Deploy a registry version to an environment: a GitOps change (default) or server-side apply + wait."""
    from prompt_sentinel.deploy.promote import (
        check_model_name,
        check_registry_version,
        parse_version,
        plan_promotion,
        render_promotion,
        storage_uri_for,
    )
    from prompt_sentinel.deploy.render import resolve_manifests_dir, to_yaml
    from prompt_sentinel.deploy.rollout import deploy_model

    cfg = resolve_config(config, set_)
    for key, option, value in (
        ("environment", "--env", env),
        ("mode", "--mode", mode),
        ("manifests_dir", "--manifests", str(manifests) if manifests else None),
        ("git_branch", "--branch", branch),
        ("ready_timeout_s", "--timeout", timeout),
    ):
        if value is not None:
            try:
                setattr(cfg.deploy, key, value)  # validated on assignment
            except ValidationError as exc:
                raise ConfigError(f"{option} {value!r}: {exc.errors()[0]['msg']}") from None
    model_name = check_model_name(model or cfg.registry.model_name)
    number = parse_version(version)
    uri = check_registry_version(registry or cfg.registry.root, model_name, number, cfg)
    if dry_run:
        promotion = plan_promotion(
            resolve_manifests_dir(cfg.deploy.manifests_dir),
            cfg.deploy.environment,
            cfg,
            model_name=model_name,
            version=number,
            storage_uri=storage_uri_for(uri),
        )
        typer.echo(to_yaml(render_promotion(promotion)), nl=False)
        return
    result = deploy_model(uri, model_name, number, cfg, out_dir=out, kube_api=kube_api)
    if result.mode == "apply":
        typer.echo(f"{result.namespace}/{result.name} is Ready serving {model_name} v{number}: {result.url}")
    else:
        if result.diff:
            _echo_diff(result.diff)
        else:
            typer.echo(f"{result.environment} already pins {model_name} v{number}; nothing to change.")
        if result.branch:
            typer.echo(f"committed to branch {result.branch} ({result.commit[:12] if result.commit else ''})")
    if out:
        typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    """Add `promote` and `deploy` to the top-level app."""
    app.command("promote")(promote_command)
    app.command("deploy")(deploy_command)
