"""scikit-learn models: ``search_space`` (hyperparameter constraints declared as data, one validator),
``estimators`` (one factory per model) and ``trainer`` (cross-validated search, refit, artifact)."""
