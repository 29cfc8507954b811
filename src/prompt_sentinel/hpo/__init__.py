"""Hyperparameter search orchestration above the trainers: the Katib ``Experiment`` for a cluster (``katib``) and
the trial entry point it runs (``trial``). Local Optuna studies live with the trainers
(:mod:`prompt_sentinel.training.optuna_search`); :mod:`prompt_sentinel.stages.hpo` runs either."""
