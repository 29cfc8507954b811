"""The one decorator every pipeline step uses, so images and packaging are decided in a single place.

Two packaging modes (both wrap the same function body, which imports the library *inside* the function):

* **Lightweight** (default): ``@dsl.component(base_image=<pipeline image>, install_kfp_package=False)``. The
  pipeline image (``images/pipeline/Dockerfile``, built by ``make images``) already holds ``prompt_sentinel``,
  ``kfp`` and this ``components`` package, so nothing is pip-installed at run time. This is also the only kind
  ``kfp.local``'s ``SubprocessRunner`` executes, which is what ``sentinel run`` uses.
* **Containerized** (``SENTINEL_CONTAINERIZED=1`` at import/compile time): adds ``target_image`` so
  ``kfp component build components/`` builds one image FROM ``cfg.pipeline.base_image`` (``SENTINEL_BASE_IMAGE``)
  with the component files in it. The base must already hold the library (e.g. the image ``make images``
  builds), or set ``SENTINEL_PIP_INDEX_URL`` to the index you publish the ``prompt-sentinel`` wheel to, and the
  build installs it. ``kfp component build`` insists on one base and one target image for every component in the
  directory, so in this mode the transformer step shares that image too.

Images come from :class:`prompt_sentinel.config.PipelineConfig` defaults; ``SENTINEL_PIPELINE_IMAGE``,
``SENTINEL_GPU_IMAGE`` and ``SENTINEL_BASE_IMAGE`` override them without editing code.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from kfp import dsl

from prompt_sentinel import __version__
from prompt_sentinel.config import PipelineConfig

CONTAINERIZED_ENV = "SENTINEL_CONTAINERIZED"
PIPELINE_IMAGE_ENV = "SENTINEL_PIPELINE_IMAGE"
GPU_IMAGE_ENV = "SENTINEL_GPU_IMAGE"
BASE_IMAGE_ENV = "SENTINEL_BASE_IMAGE"
PIP_INDEX_ENV = "SENTINEL_PIP_INDEX_URL"
_DEFAULTS = PipelineConfig()


def containerized() -> bool:
    """True when components should be Containerized Python Components (``SENTINEL_CONTAINERIZED=1``)."""
    return os.environ.get(CONTAINERIZED_ENV, "").strip().lower() in {"1", "true", "yes"}


def pipeline_image() -> str:
    """The CPU image the steps run in (``cfg.pipeline.target_image`` unless ``SENTINEL_PIPELINE_IMAGE``)."""
    return os.environ.get(PIPELINE_IMAGE_ENV) or _DEFAULTS.target_image


def gpu_image() -> str:
    """The CUDA image the transformer step runs in (``cfg.pipeline.gpu_image`` unless ``SENTINEL_GPU_IMAGE``)."""
    return os.environ.get(GPU_IMAGE_ENV) or _DEFAULTS.gpu_image


def base_image() -> str:
    """What ``kfp component build`` builds FROM (``cfg.pipeline.base_image`` unless ``SENTINEL_BASE_IMAGE``)."""
    return os.environ.get(BASE_IMAGE_ENV) or _DEFAULTS.base_image


def component_options(gpu: bool = False) -> dict[str, Any]:
    """The ``dsl.component`` keyword arguments for the current packaging mode."""
    if containerized():
        options: dict[str, Any] = {"base_image": base_image(), "target_image": pipeline_image()}
        index_urls = [u.strip() for u in os.environ.get(PIP_INDEX_ENV, "").split(",") if u.strip()]
        if index_urls:
            # Installed into the image by `kfp component build` (KFP also re-checks it when the step starts).
            options["packages_to_install"] = [f"prompt-sentinel=={__version__}"]
            options["pip_index_urls"] = index_urls
        return options
    return {"base_image": gpu_image() if gpu else pipeline_image(), "install_kfp_package": False}


def sentinel_component(gpu: bool = False, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
    """``@dsl.component`` with the project's images; ``gpu=True`` selects the CUDA image (lightweight mode)."""
    options = {**component_options(gpu), **kwargs}

    def decorate(func: Callable[..., Any]) -> Any:
        return dsl.component(func, **options)

    return decorate
