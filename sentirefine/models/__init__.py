"""The four ensemble members behind one contract (see :mod:`sentirefine.models.base`)."""

from sentirefine.models.base import SentimentModel
from sentirefine.models.registry import build_model, load_model

__all__ = ["SentimentModel", "build_model", "load_model"]
