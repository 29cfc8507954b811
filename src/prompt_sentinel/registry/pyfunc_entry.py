"""MLflow models-from-code entry point (copied into each logged model; executed on load, never unpickled)."""

from mlflow.models import set_model

from prompt_sentinel.registry.pyfunc_model import SentinelPyfuncModel

set_model(SentinelPyfuncModel())
