"""The registered ensemble (``<prefix>-ensemble``): MLflow runs this file to load a version."""

import mlflow

from sentirefine.integrations.serving import EnsemblePyfunc

mlflow.models.set_model(EnsemblePyfunc())
