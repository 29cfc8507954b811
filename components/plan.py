"""What the run does: start from a dataset or a recipe, the classical fan-out list, whether the (GPU) transformer
branch runs.

Two single-output steps on purpose: ``kfp.local`` resolves ``dsl.ParallelFor`` items and ``dsl.If`` conditions
only from a task's single ``Output``, and a real cluster is happy either way.
"""

from components._base import sentinel_component


@sentinel_component()
def plan_data(data_uri: str, recipe_uri: str, results_uri: str) -> bool:
    """True when the run assembles its corpus from ``recipe_uri``; exactly one of the two must be given."""
    from prompt_sentinel.errors import ConfigError
    from prompt_sentinel.stages.records import stage_failures

    with stage_failures("plan", results_uri):
        if bool(data_uri) == bool(recipe_uri):
            raise ConfigError(
                "give exactly one of data_uri (a labelled dataset) and recipe_uri (a corpus recipe to assemble one), "
                f"got data_uri={data_uri!r}, recipe_uri={recipe_uri!r}"
            )
        return bool(recipe_uri)


@sentinel_component()
def given_dataset(data_uri: str) -> str:
    """The ``dsl.Else`` side of the data source: the dataset the run was given."""
    return data_uri


@sentinel_component()
def plan_classical(models: list[str], results_uri: str) -> list[str]:
    """The requested models minus ``transformer``, in order, de-duplicated; unknown names fail the run."""
    from prompt_sentinel.config import check_models
    from prompt_sentinel.stages.records import stage_failures

    with stage_failures("plan", results_uri):
        return [m for m in check_models(models) if m != "transformer"]


@sentinel_component()
def plan_transformer(models: list[str], train_transformer: bool) -> bool:
    """True when ``train_transformer`` is set or ``transformer`` is in ``models``."""
    return bool(train_transformer) or "transformer" in models


@sentinel_component()
def no_transformer() -> str:
    """The ``dsl.Else`` side of the transformer branch: no transformer evaluation to select from."""
    return ""
