"""The ensemble as one typed record: which members, their weights and temperatures, the rules.

Why a record: the weights an iteration's predict stage votes with are fitted by the previous
iteration's evaluate stage, and the model the registry serves must vote the same way. One
:class:`EnsembleSpec` is fitted once (:meth:`EnsembleSpec.fit`, on the gold split), stored as
JSON (the evaluate stage's info, the served model's ``ensemble_spec`` artifact) and read back
by predict, evaluate and serving alike; :meth:`EnsembleSpec.combine` is the one place where
temperature → weights → vote happens.

JSON: ``{"format": 2, "members": [...], "weights": {name: w}, "temperatures": {name: T},
"weight_rule", "confidence_rule", "agreement_gamma", "iteration"}``. Format 1 (the artifact of
model versions registered before this record existed) is the same without ``format`` and
``weight_rule``; :meth:`EnsembleSpec.from_dict` reads both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sentirefine.config import Config, EnsembleConfig
from sentirefine.data.workspace import iteration_dir
from sentirefine.ensemble.combine import EnsembleOutput, apply_temperature, combine, fit_temperature, fit_weights

FORMAT = 2
WEIGHT_RULES = ("equal", "accuracy", "log_loss", "stacked")
CONFIDENCE_RULES = ("probability", "agreement")


@dataclass(frozen=True)
class EnsembleSpec:
    """How the members' P(positive) become one prediction and a confidence.

    ``weight_rule`` is how the weights were fitted (None: not recorded, a format-1 artifact or
    a stage info written before this record); ``iteration`` is the one whose checkpoints the
    members are (``iteration_dir(config, iteration) / name``; None where a caller holds the
    directories itself, as a served model does).
    """

    members: tuple[str, ...]
    weights: tuple[float, ...]
    temperatures: tuple[float, ...]
    weight_rule: str | None = None
    confidence_rule: str = "probability"
    agreement_gamma: float = 1.0
    iteration: int | None = None

    def __post_init__(self) -> None:
        if not len(self.members) == len(self.weights) == len(self.temperatures):
            raise ValueError(f"ensemble spec: {len(self.members)} members, {len(self.weights)} weights, "
                             f"{len(self.temperatures)} temperatures")
        if self.weight_rule is not None and self.weight_rule not in WEIGHT_RULES:
            raise ValueError(f"unknown weight rule {self.weight_rule!r}")
        if self.confidence_rule not in CONFIDENCE_RULES:
            raise ValueError(f"unknown confidence rule {self.confidence_rule!r}")

    # -- fitting ----------------------------------------------------------------------------------
    @classmethod
    def fit(cls, members: Sequence[str], member_p: np.ndarray, labels: np.ndarray, settings: EnsembleConfig,
            iteration: int | None = None) -> EnsembleSpec:
        """Temperatures, then weights from the calibrated gold predictions (rule ``settings.weights``).

        ``member_p`` (n, m) are the raw gold-split P(positive) of ``members``; weights are derived
        from the calibrated probabilities because those are what the vote combines.
        """
        temperatures = [fit_temperature(member_p[:, i], labels) if settings.calibrate else 1.0
                        for i in range(len(members))]
        probs = apply_temperature(member_p, temperatures)
        weights = fit_weights(probs, labels, members, settings.weights)
        return cls(tuple(members), tuple(float(w) for w in weights), tuple(float(t) for t in temperatures),
                   settings.weights, settings.confidence, settings.agreement_gamma, iteration)

    @classmethod
    def uniform(cls, members: Sequence[str], settings: EnsembleConfig, iteration: int | None = None) -> EnsembleSpec:
        """Equal weights, no temperature: the spec of an iteration without a gold split to fit on."""
        return cls(tuple(members), (1 / len(members),) * len(members), (1.0,) * len(members),
                   "equal", settings.confidence, settings.agreement_gamma, iteration)

    # -- use --------------------------------------------------------------------------------------
    def combine(self, member_p: np.ndarray) -> EnsembleOutput:
        """Temperature-scale ``member_p`` (n, m, columns in ``members`` order), weight, vote."""
        probs = apply_temperature(member_p, self.temperatures)
        return combine(probs, np.asarray(self.weights, dtype=np.float64), rule=self.confidence_rule,
                       gamma=self.agreement_gamma)

    def checkpoint_dirs(self, config: Config) -> list[Path]:
        """Where the members' checkpoints are, in ``members`` order."""
        if self.iteration is None:
            raise ValueError("this ensemble spec names no iteration: its members' directories are the caller's")
        return [iteration_dir(config, self.iteration) / n for n in self.members]

    def weight_map(self) -> dict[str, float]:
        """Weights by member name (the evaluate stage's ``weights`` metric)."""
        return dict(zip(self.members, self.weights, strict=True))

    def temperature_map(self) -> dict[str, float]:
        """Temperatures by member name (the evaluate stage's ``temperatures`` metric)."""
        return dict(zip(self.members, self.temperatures, strict=True))

    # -- JSON -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (format 2): weights and temperatures keyed by member, as format 1."""
        return {"format": FORMAT, "members": list(self.members), "weights": self.weight_map(),
                "temperatures": self.temperature_map(), "weight_rule": self.weight_rule,
                "confidence_rule": self.confidence_rule, "agreement_gamma": self.agreement_gamma,
                "iteration": self.iteration}

    def to_json(self) -> str:
        """The served model's ``ensemble_spec`` artifact (Python floats print exactly: no digit is lost)."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnsembleSpec:
        """Read format 2 or format 1 (no ``format``/``weight_rule``; a missing temperature is 1)."""
        version = data.get("format", 1)
        if version not in (1, FORMAT):
            raise ValueError(f"ensemble spec format {version!r} is newer than this sentirefine reads ({FORMAT})")
        members = tuple(data["members"])
        temperatures = data.get("temperatures") or {}
        return cls(members, tuple(float(data["weights"][n]) for n in members),
                   tuple(float(temperatures.get(n, 1.0)) for n in members), data.get("weight_rule"),
                   data.get("confidence_rule", "probability"), float(data.get("agreement_gamma", 1.0)),
                   data.get("iteration"))

    @classmethod
    def from_json(cls, text: str) -> EnsembleSpec:
        """Read an ``ensemble_spec`` artifact, of any registered version (format 1 or 2)."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_stage_info(cls, info: Mapping[str, Any], config: Config, iteration: int) -> EnsembleSpec:
        """The spec an evaluate stage (or an iteration's metrics) recorded for ``iteration``.

        Stage info written before the record existed holds only ``weights`` and ``temperatures``:
        the members are then ``models.order`` and the confidence settings the current config's,
        which is what the code of that time voted with.
        """
        if "spec" in info:
            return cls.from_dict(info["spec"])
        names = config.models.order
        temperatures = info.get("temperatures") or {}
        return cls(tuple(names), tuple(float(info["weights"][n]) for n in names),
                   tuple(float(temperatures.get(n, 1.0)) for n in names), None,
                   config.ensemble.confidence, config.ensemble.agreement_gamma, iteration)
