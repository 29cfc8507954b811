"""Watching a deployed model: prediction logs, the training reference, drift signals, reviewer labels, canaries.

* :mod:`~prompt_sentinel.monitoring.records` — the prediction log record (schema v1);
* :mod:`~prompt_sentinel.monitoring.logstore` — append-only partitioned JSONL logs (writer for the predictor and the
  logger sink, reader that counts bad lines instead of failing);
* :mod:`~prompt_sentinel.monitoring.reference` — the reference profile every trainer writes into its model directory;
* :mod:`~prompt_sentinel.monitoring.drift` — the drift signals and the ok / warn / retrain verdict;
  :mod:`~prompt_sentinel.monitoring.report` — its HTML page;
* :mod:`~prompt_sentinel.monitoring.feedback` — reviewer labels joined onto logged predictions;
* :mod:`~prompt_sentinel.monitoring.canary` — stable vs canary version from their logs.

This package sits below ``training`` (which writes the reference) and above the encoders and data layers; it never
loads a model. Importing it is cheap: scipy, matplotlib and the encoders are imported by the modules that use them.
"""
