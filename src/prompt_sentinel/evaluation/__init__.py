"""Security evaluation: the metric suite (``metrics_suite``), adversarial robustness (``robustness``), efficiency
(``efficiency``), one model on a test and blind set (``evaluate.evaluate_model``), charts (``charts``) and the
selection report (``report``). Gates and champion-vs-challenger live in :mod:`prompt_sentinel.evaluation.selection`."""
