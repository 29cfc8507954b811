"""Prompt Sentinel: train, evaluate and serve prompt-security classifiers on Kubeflow, KServe and MLflow."""

__version__ = "0.1.0"
