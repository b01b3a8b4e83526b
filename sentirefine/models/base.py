"""The contract every ensemble member keeps, in the spirit of scikit-learn estimators.

* ``fit(texts, labels)``   train from scratch (bootstrap).
* ``update(texts, labels)`` retrain from the current state with the model's own strategy
  (lexicon: incremental dictionary update; LSTM: fine-tune; BiLSTM: partial retraining;
  BERT: transfer learning with frozen lower layers). The loop calls this every iteration.
* ``predict_proba(texts)`` -> float32 array of shape (n, 2): P(negative), P(positive).
* ``save(dir)`` / ``load_model(dir)`` round-trip through a directory holding ``model.json``
  (``load_model`` and ``build_model`` live in :mod:`sentirefine.models.registry`, which knows
  the members; this module knows none of them).
* ``change_rate(previous)`` how much the model's inspectable state moved (None if it has none);
  the lexicon's is one of the loop's convergence metrics.

Parameters live in the constructor (a pydantic config section); learned state lives in
trailing-underscore attributes. The loop iterates over a list of these and never asks which
one it holds.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from pydantic import BaseModel

from sentirefine.errors import ModelLoadError
from sentirefine.files.atomic import atomic_directory, atomic_write

FORMAT_VERSION = 1
# What to do about a checkpoint that exists but cannot be read (shared by every member).
DAMAGED_HINT = ("the checkpoint is damaged: restore it from a backup, or `sentirefine rollback` to an earlier "
                "iteration and run `sentirefine refine` to retrain it")
_CARD = "model.json"


class SentimentModel(ABC):
    """Binary sentiment classifier with the fit / update / predict_proba / save / load contract."""

    kind: ClassVar[str]
    # Whether ``update`` may be given a sample of the rows (a fold set's per-iteration cost,
    # ``ensemble.fold_update_share``): true for gradient updates, which continue from the
    # weights; false where an update re-weighs what it is given against the old state.
    updates_on_a_sample: ClassVar[bool] = True

    def __init__(self, name: str, params: BaseModel, *, device: str = "cpu", seed: int = 13) -> None:
        """Keep the settings; learned state is set by ``fit`` or ``_load_state``."""
        self.name = name
        self.params = params
        self.device = device
        self.seed = seed
        # Per-epoch training records ({"epoch", "loss", "batch_size", ...}); tracked by MLflow.
        self.history_: list[dict[str, Any]] = []

    @classmethod
    @abstractmethod
    def params_type(cls) -> type[BaseModel]:
        """The config section class, so a saved card's parameters can be validated on load."""

    # -- the contract -------------------------------------------------------------------
    @abstractmethod
    def fit(self, texts: Sequence[str], labels: np.ndarray) -> Self:
        """Train from scratch on ``texts`` with binary ``labels``."""

    @abstractmethod
    def update(self, texts: Sequence[str], labels: np.ndarray) -> Self:
        """Retrain from the current state on the corrected labels, with this model's strategy."""

    @abstractmethod
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities, shape (len(texts), 2), rows summing to 1."""

    def predict_held_out(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities of train rows, each from a model that never saw the row's label.

        A single model trained on every row has no such view: this is :meth:`predict_proba`
        (in-sample). A fold set (:mod:`sentirefine.models.folds`) answers each row with the fold
        model that held it out; the predict stage always asks this, gold and serving never do.
        """
        return self.predict_proba(texts)

    def predict_both(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict_proba` and :meth:`predict_held_out` of the same texts, in one pass.

        The evaluate stage needs both views of the gold rows (the served average, and the
        predict stage's view for the budget's evidence); a fold set derives both from one
        prediction per fold model instead of predicting twice.
        """
        proba = self.predict_proba(texts)
        return proba, proba

    @property
    def fold_count(self) -> int:
        """How many fold models answer :meth:`predict_held_out` (1: the model itself, in-sample)."""
        return 1

    def change_rate(self, previous: SentimentModel) -> float | None:
        """Share of the model's inspectable state that moved since ``previous``; None if n/a."""
        return None

    @abstractmethod
    def _save_state(self, directory: Path) -> None:
        """Write learned state into an existing, empty ``directory``."""

    @abstractmethod
    def _load_state(self, directory: Path) -> None:
        """Read learned state written by :meth:`_save_state`."""

    # -- persistence shared by all ----------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write the model atomically: a crash never leaves a half-written checkpoint in place."""
        with atomic_directory(Path(directory)) as tmp:
            self._save_state(tmp)
            write_card(tmp, self)


def load_from_card(
    directory: Path, kinds: Mapping[str, type[SentimentModel]], *, device: str = "cpu"
) -> SentimentModel:
    """Rebuild a saved member from its card; ``kinds`` maps the card's ``kind`` to a class.

    The map is passed in (it lives in :mod:`sentirefine.models.registry`) so that the contract
    imports no member: a member module imports this one, never the other way round.
    """
    directory = Path(directory)
    card = read_card(directory)
    try:
        cls = kinds[card["kind"]]
    except KeyError as exc:
        raise ModelLoadError(f"model card {directory / _CARD} is corrupt: {exc!r}", hint=DAMAGED_HINT) from exc
    params = cls.params_type().model_validate(card["params"])
    model = cls(card["name"], params, device=device, seed=card.get("seed", 13))
    model.history_ = card.get("history", [])
    _load_weights(model, directory)
    return model


def read_card(directory: Path) -> dict[str, Any]:
    """The ``model.json`` card of a saved model, checked for presence, JSON and format version."""
    card_path = Path(directory) / _CARD
    if not card_path.is_file():
        raise ModelLoadError(
            f"no model at {directory} (missing {_CARD})",
            hint="run `sentirefine bootstrap` to train the baseline models",
        )
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        card["kind"]  # a card without a kind is corrupt
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"model card {card_path} is corrupt: {exc!r}", hint=DAMAGED_HINT) from exc
    if card.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(
            f"model at {directory} has format {card.get('format_version')}, expected {FORMAT_VERSION}"
        )
    return card


def write_card(directory: Path, model: SentimentModel) -> None:
    """Write ``model``'s card into ``directory`` (the last file of a checkpoint: it marks it complete)."""
    card = {
        "format_version": FORMAT_VERSION,
        "kind": model.kind,
        "name": model.name,
        "seed": model.seed,
        "params": model.params.model_dump(mode="json"),
        "history": model.history_,
    }
    with atomic_write(Path(directory) / _CARD, what="model card") as out:  # a fold set's card is written in place
        out.write(json.dumps(card, ensure_ascii=False, indent=1))


def _load_weights(model: SentimentModel, directory: Path) -> None:
    """Read the member's state; any unexpected failure becomes a ModelLoadError naming the path."""
    try:
        model._load_state(directory)
    except ModelLoadError:
        raise
    except Exception as exc:  # corrupt weights surface as many exception types
        raise ModelLoadError(f"model at {directory} could not be loaded: {exc!r}",
                             hint="delete the directory and re-run `sentirefine bootstrap`") from exc
