"""What the registry serves: ``mlflow.pyfunc`` wrappers around the ensemble and its members.

The downstream contract (README, "Serving"): ``mlflow.pyfunc.load_model(
"models:/sentirefine-ensemble@production")`` returns a model whose ``predict`` takes a
DataFrame with a ``text`` column and returns ``label`` (0/1), ``probability`` (P(positive))
and ``confidence``, computed exactly as in the loop: the ``ensemble_spec`` artifact is the
:class:`~sentirefine.ensemble.spec.EnsembleSpec` the iteration's evaluate stage fitted, and its
``combine`` is the loop's own. Versions registered before the spec had a ``format`` key carry
format 1, which ``EnsembleSpec.from_json`` reads too. Versions are models from code
(:mod:`sentirefine.integrations.model_code`) in one bundle per iteration
(:mod:`sentirefine.integrations.model_bundle`); versions logged before that pickled these
classes by name, so the names stay (``sentirefine.serving`` re-exports them for the oldest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, Schema

from sentirefine.ensemble.spec import EnsembleSpec
from sentirefine.models import load_model

SPEC_ARTIFACT = "ensemble_spec"
# Logged with every version as its input example (and checked against the signature then): two rows,
# so that no batch size of one is baked into anything.
INPUT_EXAMPLE = pd.DataFrame({"text": ["정말 재밌게 봤어요 배우들 연기 최고", "시간 아까운 영화 다시는 안 본다"]})


def signature(*, ensemble: bool) -> ModelSignature:
    """The serving contract: a ``text`` column in; label, probability (and the ensemble's confidence) out."""
    outputs = [ColSpec("long", "label"), ColSpec("double", "probability")]
    return ModelSignature(inputs=Schema([ColSpec("string", "text")]),
                          outputs=Schema(outputs + ([ColSpec("double", "confidence")] if ensemble else [])))


def _texts(model_input: Any) -> list[str]:
    if isinstance(model_input, pd.DataFrame):
        if "text" not in model_input.columns:
            raise ValueError(f"input needs a 'text' column, got {list(model_input.columns)}")
        return model_input["text"].astype(str).tolist()
    return [str(t) for t in model_input]


def member_checkpoint(path: Path) -> Path:
    """The checkpoint behind an ensemble artifact: inside a nested member model (an iteration's
    bundle, :mod:`~sentirefine.integrations.model_bundle`), or the folder itself (versions
    registered before checkpoints were stored once)."""
    mlmodel = path / "MLmodel"
    if not mlmodel.is_file():
        return path
    from mlflow.models import Model

    artifacts = Model.load(str(mlmodel)).flavors["python_function"]["artifacts"]
    return path / artifacts["member"]["path"]


class EnsemblePyfunc(mlflow.pyfunc.PythonModel):
    """The weighted, temperature-scaled ensemble of one iteration's members."""

    def load_context(self, context: Any) -> None:
        self.spec = EnsembleSpec.from_json(Path(context.artifacts[SPEC_ARTIFACT]).read_text(encoding="utf-8"))
        self.members = [load_model(member_checkpoint(Path(context.artifacts[name]))) for name in self.spec.members]

    # A DataFrame hint is one MLflow neither infers a schema from nor validates against (the
    # logged signature does that); without any hint it warns on every log_model.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        texts = _texts(model_input)
        out = self.spec.combine(np.stack([m.predict_proba(texts)[:, 1] for m in self.members], axis=1))
        return pd.DataFrame({"label": out.predicted, "probability": out.p_positive, "confidence": out.confidence})


class MemberPyfunc(mlflow.pyfunc.PythonModel):
    """One member on its own (label and probability)."""

    def load_context(self, context: Any) -> None:
        self.member = load_model(Path(context.artifacts["member"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        p = self.member.predict_proba(_texts(model_input))[:, 1]
        return pd.DataFrame({"label": (p > 0.5).astype(np.int64), "probability": p})
