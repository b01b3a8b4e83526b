"""The model files MLflow logs as "models from code" (one per served model kind).

MLflow copies the file named as ``python_model`` into the model version and runs it when the
version is loaded; it names the pyfunc with ``mlflow.models.set_model``. Nothing is pickled, so
a version loads with any later sentirefine that keeps :mod:`sentirefine.integrations.serving`.
Never imported by the package itself: only their paths are used.
"""

from pathlib import Path

ENSEMBLE = Path(__file__).with_name("ensemble_model.py")
MEMBER = Path(__file__).with_name("member_model.py")
