"""Typed records of what an iteration measured, persisted in ``iterations.metrics`` as JSON.

Why typed: the metrics were one dict built by the loop and read by string key in the loop, the
tracker, the report and the CLI summary, so a renamed key failed silently (``.get`` → None).
The JSON is unchanged, key for key and in the same order (``to_json``), so existing workspaces,
``status --json`` and the MLflow ``metrics.json`` artifact read the same; ``from_json`` takes
any older or partial record (a key it lacks comes back None, or empty).

The record lives in ``data/`` because the store persists it and every layer above reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sentirefine.data.store import Store

Json = dict[str, Any]
_GOLD_KEYS = ("accuracy", "f1", "log_loss", "n", "confusion")
# Key order of the two shapes, as the loop has always written them.
_REFINED_ORDER = ("iteration", "threshold", "class_offsets", "flip_thresholds", "noise", "train_rows",
                  "corrected_to_0", "corrected_to_1",
                  "label_change_rate", "model_change_rates", "lexicon_change_rate", "queued_low_confidence",
                  "frozen", "label_accuracy", "quiet_streak", "converged", "training", "members", "ensemble",
                  "weights", "temperatures", "spec", "stage_seconds", "llm", "audit", "dataset_tag", "registry",
                  "seconds")
_BOOTSTRAP_ORDER = ("iteration", "train_rows", "label_accuracy", "training", "members", "ensemble", "weights",
                    "temperatures", "spec", "seconds", "dataset_tag", "registry")
# Keys written even when their value is None (None is a value there, not "not measured").
_NULLABLE = {"lexicon_change_rate", "label_accuracy", "dataset_tag"}


@dataclass
class GoldMetrics:
    """One model's (a member's or the ensemble's) metrics on the gold split."""

    accuracy: float | None = None
    f1: float | None = None
    log_loss: float | None = None
    n: int | None = None
    confusion: list[list[int]] | None = None

    @classmethod
    def from_json(cls, data: Json | None) -> GoldMetrics | None:
        """None for an empty record (no gold split)."""
        return cls(**{k: data.get(k) for k in _GOLD_KEYS}) if data else None

    def to_json(self) -> Json:
        return {k: getattr(self, k) for k in _GOLD_KEYS if getattr(self, k) is not None}


def _gold_json(gold: GoldMetrics | None) -> Json:
    return gold.to_json() if gold is not None else {}


@dataclass
class Evaluation:
    """The evaluate stage's info: gold metrics per member and of the ensemble, and the fitted ensemble.

    ``temperatures`` is None where the stage wrote none (an empty gold split).
    """

    members: dict[str, GoldMetrics] = field(default_factory=dict)
    ensemble: GoldMetrics | None = None
    weights: dict[str, float] = field(default_factory=dict)
    temperatures: dict[str, float] | None = None
    spec: Json | None = None

    @classmethod
    def from_json(cls, data: Json) -> Evaluation:
        members = {n: GoldMetrics.from_json(m) or GoldMetrics() for n, m in (data.get("members") or {}).items()}
        return cls(members, GoldMetrics.from_json(data.get("ensemble")), dict(data.get("weights") or {}),
                   data.get("temperatures"), data.get("spec"))

    def to_json(self) -> Json:
        out = {"members": {n: m.to_json() for n, m in self.members.items()}, "ensemble": _gold_json(self.ensemble),
               "weights": self.weights, "temperatures": self.temperatures, "spec": self.spec}
        return {k: v for k, v in out.items() if v is not None}

    def accuracy(self, name: str) -> float | None:
        """Gold accuracy of member ``name``, or of ``"ensemble"``; None where not measured."""
        gold = self.ensemble if name == "ensemble" else self.members.get(name)
        return gold.accuracy if gold is not None else None


@dataclass
class Corrections:
    """The correct stage's live changes by new label (None: not recorded, e.g. the bootstrap)."""

    to_0: int | None = None
    to_1: int | None = None

    @property
    def total(self) -> int:
        return (self.to_0 or 0) + (self.to_1 or 0)


@dataclass
class Convergence:
    """What decides the stop: change rates, and how many quiet iterations in a row."""

    label_change_rate: float | None = None
    model_change_rates: dict[str, float] | None = None
    lexicon_change_rate: float | None = None
    quiet_streak: int | None = None
    converged: bool | None = None


@dataclass
class IterationMetrics:
    """Everything one finished iteration (0 = bootstrap) measured; ``iterations.metrics`` in the store.

    Fields a bootstrap does not measure are None; parts other stages own and that vary with
    them (``training``, ``llm``, ``audit``, ``registry``, ``stage_seconds``) stay plain JSON.
    """

    iteration: int
    train_rows: int | None = None
    label_accuracy: float | None = None
    training: Json | None = None
    evaluation: Evaluation = field(default_factory=Evaluation)
    threshold: float | None = None
    class_offsets: dict[Any, float] | None = None  # int keys when built, str once read back from JSON
    flip_thresholds: dict[Any, float] | None = None  # the budget rule's per-class cut-offs (None: threshold rule)
    noise: Json | None = None  # the budget rule's confident joint, budgets and cut-offs
    corrections: Corrections = field(default_factory=Corrections)
    convergence: Convergence = field(default_factory=Convergence)
    queued_low_confidence: int | None = None
    frozen: int | None = None
    stage_seconds: dict[str, float] | None = None
    llm: Json | None = None
    audit: Json | None = None
    dataset_tag: str | None = None
    registry: Json | None = None
    seconds: float | None = None

    @classmethod
    def from_json(cls, data: Json) -> IterationMetrics:
        """Read a stored record; any key may be missing (older workspaces, partial records)."""
        get = data.get
        return cls(
            iteration=get("iteration", 0), train_rows=get("train_rows"), label_accuracy=get("label_accuracy"),
            training=get("training"), evaluation=Evaluation.from_json(data), threshold=get("threshold"),
            class_offsets=get("class_offsets"), flip_thresholds=get("flip_thresholds"), noise=get("noise"),
            corrections=Corrections(get("corrected_to_0"), get("corrected_to_1")),
            convergence=Convergence(get("label_change_rate"), get("model_change_rates"), get("lexicon_change_rate"),
                                    get("quiet_streak"), get("converged")),
            queued_low_confidence=get("queued_low_confidence"), frozen=get("frozen"),
            stage_seconds=get("stage_seconds"), llm=get("llm"), audit=get("audit"), dataset_tag=get("dataset_tag"),
            registry=get("registry"), seconds=get("seconds"),
        )

    def to_json(self) -> Json:
        """The stored JSON: the keys the loop has always written, in its order, for this shape."""
        flat = self._flat()
        order = _BOOTSTRAP_ORDER if self.iteration == 0 else _REFINED_ORDER
        return {k: flat[k] for k in order if k in flat and (flat[k] is not None or k in _NULLABLE)}

    def _flat(self) -> Json:
        c, v = self.corrections, self.convergence
        return {
            "iteration": self.iteration, "threshold": self.threshold, "class_offsets": self.class_offsets,
            "flip_thresholds": self.flip_thresholds, "noise": self.noise,
            "train_rows": self.train_rows, "corrected_to_0": c.to_0, "corrected_to_1": c.to_1,
            "label_change_rate": v.label_change_rate, "model_change_rates": v.model_change_rates,
            "lexicon_change_rate": v.lexicon_change_rate, "queued_low_confidence": self.queued_low_confidence,
            "frozen": self.frozen, "label_accuracy": self.label_accuracy, "quiet_streak": v.quiet_streak,
            "converged": v.converged, "training": self.training, **self.evaluation.to_json(),
            "stage_seconds": self.stage_seconds, "llm": self.llm, "audit": self.audit,
            "dataset_tag": self.dataset_tag, "registry": self.registry, "seconds": self.seconds,
        }


@dataclass
class IterationRow:
    """One row of the ``iterations`` table, its metrics typed (None until the iteration finishes)."""

    iteration: int
    started_at: str | None
    finished_at: str | None
    threshold: float | None
    metrics: IterationMetrics | None

    @classmethod
    def from_row(cls, row: Json) -> IterationRow:
        """From :meth:`Store.iterations`' dict for the row (an unfinished row holds ``{}``)."""
        saved = row.get("metrics")
        metrics = IterationMetrics.from_json(saved) if saved else None
        return cls(row["iteration"], row.get("started_at"), row.get("finished_at"), row.get("threshold"), metrics)


def iteration_rows(store: Store) -> list[IterationRow]:
    """The store's ``iterations`` rows, typed (``Store.iterations`` keeps the raw JSON for ``status --json``)."""
    return [IterationRow.from_row(row) for row in store.iterations()]
