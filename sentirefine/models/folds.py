"""A member as ``k`` fold models: each train row is judged by the one that never saw its label.

Why: a model trained on a row's current label tends to repeat it (it memorised it), so its
in-sample predictions under-detect label errors. A fold set keeps ``k`` persistent models of
one member; fold model *j* trains only on rows outside fold *j* and, every iteration, is updated
with the member's own strategy from its own previous checkpoint, so it never learns fold *j*'s
labels. :meth:`FoldSet.predict_held_out` answers each row with the model that held it out (what
the predict stage asks); :meth:`FoldSet.predict_proba` averages the ``k`` (gold evaluation,
the registry and serving), so no extra full fit is needed.

A row's fold is a hash of its whitespace-normalised text (:func:`fold_of`): fixed for the row's
life without any id, and a duplicated review lands in one fold, so no fold model learns the
label of a copy of a row it must judge.

On disk: ``<member>/fold-<j>/`` (each a complete member checkpoint), then ``<member>/model.json``
of kind ``folds`` written last (:meth:`FoldSet.seal`), which marks the set complete.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sentirefine.errors import ModelLoadError
from sentirefine.models.base import DAMAGED_HINT, SentimentModel, read_card, write_card

Loader = Callable[[Path], SentimentModel]
Builder = Callable[[int], SentimentModel]


class FoldParams(BaseModel):
    """A fold set's card parameters: how many folds."""

    model_config = ConfigDict(extra="forbid")
    folds: int = Field(ge=2)


def fold_dir(directory: Path, fold: int) -> Path:
    """Where fold model ``fold`` of the set in ``directory`` lives."""
    return Path(directory) / f"fold-{fold}"


def fold_of(texts: Sequence[str], folds: int) -> np.ndarray:
    """Each text's fold in ``range(folds)``: a stable hash (not Python's salted ``hash``) of its words."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(" ".join(t.split()).encode("utf-8"), digest_size=8).digest(), "little") % folds
         for t in texts), dtype=np.int64, count=len(texts))


def out_of_fold_rows(texts: Sequence[str], labels: np.ndarray, assignment: np.ndarray,
                     fold: int) -> tuple[list[str], np.ndarray]:
    """The rows fold model ``fold`` trains on: every row outside fold ``fold`` (``assignment``: :func:`fold_of`)."""
    keep = np.flatnonzero(assignment != fold)
    return [texts[i] for i in keep], labels[keep]


def update_sample(texts: Sequence[str], labels: np.ndarray, share: float,
                  seed: Sequence[int]) -> tuple[list[str], np.ndarray]:
    """A seeded ``share`` of a fold model's rows for one update (every row when ``share`` >= 1).

    ``seed`` (the models' seed, the iteration, the fold) draws another sample each iteration and
    the same one when a killed update is redone, so a resumed run trains exactly as an
    uninterrupted one. The rows keep their order.
    """
    if share >= 1.0 or len(texts) < 2:
        return list(texts), labels
    size = max(2, round(share * len(texts)))
    keep = np.sort(np.random.default_rng(list(seed)).choice(len(texts), size=size, replace=False))
    return [texts[i] for i in keep], labels[keep]


class FoldSet(SentimentModel):
    """``k`` models of one member, behind the member contract.

    ``build(j)`` makes a fresh fold model *j* (``fit``); ``load(path)`` reads a saved one
    (:meth:`load`). The train stage fits folds as separate jobs (``pipeline.train_folds``) and
    seals the set; :meth:`fit` and :meth:`update` do the same in one process.
    """

    kind: ClassVar[str] = "folds"

    def __init__(self, name: str, params: FoldParams, *, device: str = "cpu", seed: int = 13,
                 build: Builder | None = None) -> None:
        super().__init__(name, params, device=device, seed=seed)
        self._build = build
        self.models_: list[SentimentModel] = []

    @classmethod
    def params_type(cls) -> type[BaseModel]:
        return FoldParams

    @property
    def fold_count(self) -> int:
        return self.params.folds

    # -- training in one process ----------------------------------------------------------
    def fit(self, texts: Sequence[str], labels: np.ndarray) -> Self:
        if self._build is None:
            raise ValueError(f"fold set {self.name!r} was loaded, not built: it can be updated, not fitted")
        assignment = fold_of(texts, self.fold_count)
        self.models_ = [self._build(j).fit(*out_of_fold_rows(texts, labels, assignment, j))
                        for j in range(self.fold_count)]
        self.history_ = self.fold_history()
        return self

    def update(self, texts: Sequence[str], labels: np.ndarray) -> Self:
        assignment = fold_of(texts, self.fold_count)
        for j, model in enumerate(self.models_):
            model.update(*out_of_fold_rows(texts, labels, assignment, j))
        self.history_ = self.fold_history()
        return self

    def fold_history(self) -> list[dict]:
        """The fold models' training records, each marked with its fold."""
        return [{"fold": j, **h} for j, m in enumerate(self.models_) for h in m.history_]

    # -- prediction ------------------------------------------------------------------------
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """The mean of the ``k`` fold models' probabilities (rows still sum to 1)."""
        return np.mean([m.predict_proba(texts) for m in self.models_], axis=0).astype(np.float32)

    def predict_held_out(self, texts: Sequence[str]) -> np.ndarray:
        """Each text answered by the fold model that did not train on its fold."""
        folds = fold_of(texts, self.fold_count)
        out = np.empty((len(texts), 2), dtype=np.float32)
        for j, model in enumerate(self.models_):
            idx = np.flatnonzero(folds == j)
            if idx.size:
                out[idx] = model.predict_proba([texts[i] for i in idx])
        return out

    def predict_both(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The mean and the held-out view from one prediction of every text by every fold model."""
        each = np.stack([m.predict_proba(texts) for m in self.models_])  # (k, n, 2)
        held = each[fold_of(texts, self.fold_count), np.arange(len(texts))]
        return each.mean(axis=0).astype(np.float32), held.astype(np.float32)

    def change_rate(self, previous: SentimentModel) -> float | None:
        """The mean of the fold models' change rates against their own previous fold (None if they have none)."""
        if not isinstance(previous, FoldSet) or previous.fold_count != self.fold_count:
            return None
        rates = [m.change_rate(p) for m, p in zip(self.models_, previous.models_, strict=True)]
        return None if any(r is None for r in rates) else float(np.mean(rates))

    # -- persistence ---------------------------------------------------------------------------
    def _save_state(self, directory: Path) -> None:
        for j, model in enumerate(self.models_):
            model.save(fold_dir(directory, j))

    def _load_state(self, directory: Path) -> None:  # pragma: no cover - FoldSet.load reads the folds
        raise NotImplementedError("a fold set is read with FoldSet.load, which knows how to load its folds")

    @classmethod
    def load(cls, directory: Path, load: Loader, *, device: str = "cpu") -> FoldSet:
        """Read a sealed set: its card, then each fold with ``load`` (the registry's ``load_model``)."""
        card = read_card(directory)
        try:
            params = FoldParams.model_validate(card["params"])
        except (KeyError, ValueError) as exc:
            raise ModelLoadError(f"fold set card {directory}/model.json is corrupt: {exc!r}",
                                 hint=DAMAGED_HINT) from exc
        model = cls(card["name"], params, device=device, seed=card.get("seed", 13))
        model.models_ = [load(fold_dir(directory, j)) for j in range(params.folds)]
        model.history_ = card.get("history", [])
        return model

    @classmethod
    def seal(cls, directory: Path, name: str, folds: int, seed: int, history: list[dict]) -> None:
        """Mark the fold models in ``directory`` (each saved by its own job) one complete set."""
        model = cls(name, FoldParams(folds=folds), seed=seed)
        model.history_ = history
        write_card(directory, model)
