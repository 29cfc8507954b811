"""The Optuna study every family's search runs in: sampler, pruner, storage, resume, MLflow child runs.

``training.search.strategy: optuna`` (settings in ``training.search.optuna``):

* **sampler** — a seeded ``TPESampler`` (``n_startup_trials`` random trials first) or ``RandomSampler``;
* **pruner** — ``MedianPruner`` or ``HyperbandPruner`` over the intermediate scores a trial reports (the running
  mean custom score per CV fold for scikit-learn models, the validation custom score of every transformer
  evaluation), or none;
* **storage** — an RDB URL (``sqlite:///hpo.db``, ``postgresql://...``) so an interrupted search resumes:
  ``n_trials`` is the budget of the whole study, a rerun runs only the trials still missing, numbering goes on,
  and a trial left RUNNING by a killed process is marked failed and its parameters are tried again. The sampler
  is re-seeded with ``seed + trials already in the study`` so a resumed TPE does not replay the draws it made
  before. A study holds one search space: resuming it with another raises :class:`TrainingError`.
* **tracking** — each trial is an MLflow child run (nested in the active run: the trainer's run) with its
  parameters, intermediate scores and result.

Everything is checked before the first trial (:func:`check_settings`): an unknown sampler / pruner, an unusable
storage URL, an empty space.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prompt_sentinel.config import OptunaConfig
from prompt_sentinel.errors import TrainingError
from prompt_sentinel.training.search_ranges import Range, space_fingerprint

log = logging.getLogger(__name__)

SPACE_ATTR = "sentinel_space"
INTERRUPTED_ATTR = "interrupted"
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")


def check_settings(cfg: OptunaConfig, space: dict[str, Range]) -> None:
    """Every Optuna setting usable, before any trial (the config type already restricts sampler and pruner)."""
    if cfg.sampler not in SAMPLERS:
        raise TrainingError(f"training.search.optuna.sampler={cfg.sampler!r} is unknown; allowed: {list(SAMPLERS)}")
    if cfg.pruner not in PRUNERS:
        raise TrainingError(f"training.search.optuna.pruner={cfg.pruner!r} is unknown; allowed: {list(PRUNERS)}")
    if not space:
        raise TrainingError("the Optuna search space is empty; give at least one parameter")
    if cfg.storage is not None and "://" not in cfg.storage:
        raise TrainingError(
            f"training.search.optuna.storage={cfg.storage!r} is not an RDB URL; use e.g. sqlite:///hpo.db or "
            "postgresql://user@host/db (None keeps the study in memory)"
        )


def build_sampler(cfg: OptunaConfig, seed: int) -> Any:
    import optuna

    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.n_startup_trials)


def build_pruner(cfg: OptunaConfig, max_resource: int) -> Any:
    import optuna

    if cfg.pruner == "none":
        return optuna.pruners.NopPruner()
    if cfg.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(max_resource, 1), reduction_factor=3)
    return optuna.pruners.MedianPruner(
        n_startup_trials=max(1, cfg.n_startup_trials), n_warmup_steps=cfg.pruner_warmup_steps
    )


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def open_study(cfg: OptunaConfig, name: str, space: dict[str, Range], seed: int, max_resource: int) -> Any:
    """Create the study, or load it from ``cfg.storage`` (checking it searched the same space)."""
    import optuna

    _quiet_optuna()
    fingerprint = space_fingerprint(space)
    try:
        study = optuna.create_study(
            storage=cfg.storage,
            study_name=name,
            direction="maximize",
            load_if_exists=True,
            pruner=build_pruner(cfg, max_resource),
            sampler=build_sampler(cfg, seed),
        )
    except Exception as exc:  # bad URL, unreachable database, unsupported dialect
        raise TrainingError(f"cannot open the Optuna study {name!r} in storage {cfg.storage!r}: {exc}") from exc
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored is None:
        study.set_user_attr(SPACE_ATTR, fingerprint)
    elif stored != fingerprint:
        raise TrainingError(
            f"the Optuna study {name!r} in {cfg.storage} searched another space ({stored}); this search is over "
            f"{fingerprint}. Set training.search.optuna.study_name to start a new study"
        )
    # A resumed study must not replay its first draws: seed by how far it got.
    study.sampler = build_sampler(cfg, seed + len(study.trials))
    return study


def recover_interrupted(study: Any) -> int:
    """Trials a killed process left RUNNING: mark them failed (interrupted) and queue their parameters again."""
    from optuna.trial import TrialState

    stale = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    storage = study._storage  # the public BaseStorage API of the study's storage
    for trial in stale:
        storage.set_trial_user_attr(trial._trial_id, INTERRUPTED_ATTR, True)
        storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        study.enqueue_trial(dict(trial.params), skip_if_exists=False)
        log.info("trial %d was interrupted: its parameters are queued again", trial.number)
    return len(stale)


def finished_trials(study: Any) -> int:
    """Trials that count against ``n_trials``: completed, pruned or failed (interrupted ones excluded)."""
    from optuna.trial import TrialState

    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and not t.user_attrs.get(INTERRUPTED_ATTR))
    )


@contextlib.contextmanager
def child_run(name: str, params: dict[str, Any]) -> Iterator[Any]:
    """An MLflow run nested in the active one (None, and no tracking, when no run is active)."""
    import mlflow

    parent = mlflow.active_run()
    if parent is None:
        yield None
        return
    with mlflow.start_run(run_name=name, nested=True, experiment_id=parent.info.experiment_id) as run:
        mlflow.log_params(
            {k: json.dumps(v) if isinstance(v, list | tuple | dict) else str(v) for k, v in params.items()}
        )
        yield run


@dataclass
class StudyOutcome:
    """What a finished (or timed-out) study left: its trials as rows and the best one."""

    study_name: str
    storage: str | None
    best_number: int
    best_params: dict[str, Any]
    best_value: float
    trials: list[dict[str, Any]]
    new_trials: int
    resumed_from: int
    seconds: float
    interrupted_recovered: int = 0
    best_attrs: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "study_name": self.study_name,
            "storage": self.storage,
            "best_trial": self.best_number,
            "best_value": self.best_value,
            "best_params": self.best_params,
            "trials": len(self.trials),
            "new_trials": self.new_trials,
            "resumed_from": self.resumed_from,
            "interrupted_recovered": self.interrupted_recovered,
            "pruned": sum(1 for t in self.trials if t["state"] == "PRUNED"),
            "seconds": self.seconds,
        }


Objective = Callable[[Any, dict[str, Any]], float]


def run_study(
    cfg: OptunaConfig,
    study_name: str,
    space: dict[str, Range],
    integer: Callable[[str], bool],
    objective: Objective,
    *,
    seed: int,
    max_resource: int,
    progress: bool = False,
    callbacks: Sequence[Callable[[Any, Any], None]] = (),
    run_prefix: str = "trial",
) -> StudyOutcome:
    """Run (or resume) the study until it holds ``cfg.n_trials`` finished trials or ``cfg.timeout_s`` passes.

    ``objective(trial, params)`` gets the drawn parameters (in the form the trainer takes), may call
    ``trial.report`` / raise ``optuna.TrialPruned``, and returns the score to maximize. ``integer(name)`` says
    whether a numeric range is drawn as an int. ``callbacks`` are Optuna study callbacks (after each trial).
    """
    import optuna

    check_settings(cfg, space)
    started = time.perf_counter()
    study = open_study(cfg, study_name, space, seed, max_resource)
    recovered = recover_interrupted(study)
    done_before = finished_trials(study)
    remaining = max(0, cfg.n_trials - done_before)
    if done_before:
        log.info("resuming Optuna study %r: %d of %d trials done", study_name, done_before, cfg.n_trials)

    def wrapped(trial: Any) -> float:
        params = {name: rng.suggest(trial, name, integer(name)) for name, rng in space.items()}
        with child_run(f"{run_prefix}-{trial.number}", params) as run:
            try:
                value = float(objective(trial, params))
            except optuna.TrialPruned:
                if run is not None:
                    _log_trial(trial, None, "PRUNED")
                raise
            if run is not None:
                _log_trial(trial, value, "COMPLETE")
            return value

    if remaining:
        bar = None
        all_callbacks = list(callbacks)
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.n_trials, initial=done_before, desc=f"optuna {study_name}", unit="trial")

            def advance(study: Any, trial: Any) -> None:
                bar.update(1)
                with contextlib.suppress(ValueError):  # no completed trial yet
                    bar.set_postfix(best=f"{study.best_value:.4f}")

            all_callbacks.insert(0, advance)
        try:
            study.optimize(wrapped, n_trials=remaining, timeout=cfg.timeout_s, callbacks=all_callbacks)
        finally:
            if bar is not None:
                bar.close()
    try:
        best = study.best_trial
    except ValueError:
        raise TrainingError(
            f"the Optuna study {study_name!r} has no completed trial (all {len(study.trials)} pruned or failed); "
            "raise training.search.optuna.n_trials or relax the pruner"
        ) from None
    trials = trial_rows(study)
    return StudyOutcome(
        study_name=study_name,
        storage=cfg.storage,
        best_number=best.number,
        best_params=decode_params(space, best.params),
        best_value=float(best.value),
        trials=trials,
        new_trials=finished_trials(study) - done_before,
        resumed_from=done_before,
        seconds=time.perf_counter() - started,
        interrupted_recovered=recovered,
        best_attrs=dict(best.user_attrs),
    )


def _log_trial(trial: Any, value: float | None, state: str) -> None:
    import mlflow

    frozen = trial.study.get_trials(deepcopy=False)[trial.number]
    for step, intermediate in sorted(frozen.intermediate_values.items()):
        mlflow.log_metric("intermediate_score", float(intermediate), step=int(step))
    if value is not None:
        mlflow.log_metric("objective", value)
    mlflow.set_tags({"optuna.trial": str(trial.number), "optuna.state": state})


def decode_params(space: dict[str, Range], stored: dict[str, Any]) -> dict[str, Any]:
    """Stored trial parameters back in trainer form (list choices were stored as JSON text)."""
    out = {}
    for name, value in stored.items():
        rng = space.get(name)
        if rng is not None and rng.choices is not None:
            encoded = [json.dumps(c) if isinstance(c, list | tuple) else c for c in rng.choices]
            out[name] = rng.choices[encoded.index(value)] if value in encoded else value
        else:
            out[name] = value
    return out


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One JSON-able row per trial: number, state, value, parameters, intermediate scores, user attributes."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "params": dict(t.params),
                "intermediate": {int(k): float(v) for k, v in sorted(t.intermediate_values.items())},
                "seconds": t.duration.total_seconds() if t.duration else None,
                **{f"attr_{k}": v for k, v in t.user_attrs.items()},
            }
        )
    return rows


def default_study_name(model: str, data_sha256: str) -> str:
    """``<model>-<sha256[:12]>``: the same search on the same data finds its stored study again."""
    return f"{model}-{data_sha256[:12]}"
