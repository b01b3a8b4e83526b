"""Which class each member is: building a fresh member by name, loading a saved one by its card.

The only module that knows the member classes, so that the contract (:mod:`.base`) imports none
of them and a new member is one line here. The member modules are imported on first use: importing
:mod:`sentirefine.models` stays cheap (no torch) for commands that never train or predict.

``build_model`` takes the config as it is: a ``models.bert.checkpoint: pretrained`` must already
have been replaced by a directory (``sentirefine.data.workspace.resolve_checkpoint``), because
where a workspace keeps its pretrained checkpoint is no business of the models.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from sentirefine.models.base import SentimentModel, load_from_card, read_card
from sentirefine.models.folds import FoldParams, FoldSet

if TYPE_CHECKING:
    from sentirefine.config import Config


def member_classes() -> dict[str, type[SentimentModel]]:
    """Member name (a ``models`` config section) -> class; LSTM and BiLSTM share one class."""
    from sentirefine.models.bert import BertModel
    from sentirefine.models.lexicon import LexiconModel
    from sentirefine.models.rnn import RNNModel

    return {"lexicon": LexiconModel, "lstm": RNNModel, "bilstm": RNNModel, "bert": BertModel}


def kind_classes() -> dict[str, type[SentimentModel]]:
    """Card ``kind`` -> class: what a saved member is rebuilt as."""
    return {cls.kind: cls for cls in member_classes().values()}


def build_model(name: str, config: Config, *, fold: int = 0) -> SentimentModel:
    """A fresh, untrained member named ``name`` from its config section, on the configured device.

    ``fold``: which fold model of a fold set this is; its seed is offset by it, so the ``k``
    models of a member start from different initialisations (fold 0 is the unfolded member).
    """
    from sentirefine.models.batching import resolve_device

    section = getattr(config.models, name)
    device = resolve_device(config.models.device)
    return member_classes()[name](name, section, device=device, seed=config.models.seed + fold)


def build_fold_set(name: str, config: Config) -> FoldSet:
    """A fresh member of ``ensemble.folds`` fold models (fitted in one process by ``fit``)."""
    return FoldSet(name, FoldParams(folds=config.ensemble.folds), seed=config.models.seed,
                   build=lambda fold: build_model(name, config, fold=fold))


def load_model(directory: Path, *, device: str = "cpu") -> SentimentModel:
    """Load any saved member, a fold set included; its card says which class and parameters to rebuild."""
    directory = Path(directory)
    if read_card(directory)["kind"] == FoldSet.kind:
        return FoldSet.load(directory, partial(load_model, device=device), device=device)
    return load_from_card(directory, kind_classes(), device=device)
