"""Cluster scheduling facts shared by the pipeline and Katib trials: the GPU node pool's selector and toleration.

The pipeline's transformer step (:mod:`pipelines.training_pipeline`) and a Katib trial on a GPU
(:mod:`prompt_sentinel.hpo.katib`) must land on the same node pool; both read these constants and
``pipeline.gpu_accelerator`` instead of spelling them twice.
"""

from __future__ import annotations

from typing import Any

from prompt_sentinel.config import PipelineConfig

GPU_RESOURCE = "nvidia.com/gpu"  # the extended resource a GPU pod requests, and the taint key of GPU nodes
GPU_NODE_LABEL = "cloud.google.com/gke-accelerator"  # the node label GKE puts on GPU node pools
GPU_TOLERATION: dict[str, str] = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
MLFLOW_TOKEN_ENV = "MLFLOW_TRACKING_TOKEN"  # read from the pipeline.mlflow_secret Secret


def gpu_node_selector(pipeline: PipelineConfig) -> dict[str, str]:
    """``{cloud.google.com/gke-accelerator: <pipeline.gpu_accelerator>}``."""
    return {GPU_NODE_LABEL: pipeline.gpu_accelerator}


def gpu_tolerations() -> list[dict[str, Any]]:
    return [dict(GPU_TOLERATION)]
