"""A registered member (``<prefix>-<member>``): MLflow runs this file to load a version."""

import mlflow

from sentirefine.integrations.serving import MemberPyfunc

mlflow.models.set_model(MemberPyfunc())
