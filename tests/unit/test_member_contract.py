"""The member contract, checked once for all four members (lexicon, LSTM, BiLSTM, BERT).

The loop never asks which member it holds, so every member must keep the same promises:
``fit`` and ``update`` return the model, ``predict_proba`` gives float32 rows that sum to 1,
a saved member loads back to the very same probabilities and can go on training, and
``change_rate`` is either None or a share. Built through the registry, as the loop builds them,
at the tiny sizes the loop tests use (BERT: the shipped MiniLM).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from tiny_config import TINY_CONFIG

from sentirefine.config import Config, load_config
from sentirefine.data.workspace import pretrained_dir, resolve_checkpoint
from sentirefine.errors import ModelLoadError
from sentirefine.models import SentimentModel, build_model, load_model

MEMBERS = ["lexicon", "lstm", "bilstm", "bert"]
GOOD = ["good", "great", "lovely", "superb", "brilliant", "wonderful"]
BAD = ["bad", "awful", "boring", "dull", "terrible", "weak"]
SUBJECTS = ["the movie", "the plot", "the cast", "the music", "the ending"]


def sentences(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``n`` short labelled sentences whose label is the class of their sentiment words."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n).astype(np.int64)
    texts = [f"{rng.choice(SUBJECTS)} was {' and '.join(rng.choice(GOOD if y else BAD, size=2))}" for y in labels]
    return texts, labels


TRAIN = sentences(120, seed=1)
UPDATE = sentences(80, seed=3)
HELD = sentences(30, seed=2)[0]


def tiny_config(workspace: Path) -> Config:
    """The loop tests' tiny member settings, in a workspace of their own."""
    return load_config(overrides={"workspace": str(workspace), "models": TINY_CONFIG["models"]})


@dataclass
class Fitted:
    """A member right after ``fit``, and what ``fit`` returned."""

    model: SentimentModel
    returned: SentimentModel


@pytest.fixture(scope="module", params=MEMBERS)
def fitted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Fitted:
    """Each member fitted once for the whole module (BERT is the slow one)."""
    config = resolve_checkpoint(tiny_config(tmp_path_factory.mktemp("ws")))
    model = build_model(request.param, config)
    return Fitted(model, model.fit(*TRAIN))


def test_fit_returns_the_model(fitted: Fitted) -> None:
    assert fitted.returned is fitted.model


def test_predict_proba_is_a_float_probability_table(fitted: Fitted) -> None:
    proba = fitted.model.predict_proba(HELD)
    assert proba.dtype == np.float32
    assert proba.shape == (len(HELD), 2)
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


def test_saved_member_loads_to_the_same_probabilities(fitted: Fitted, tmp_path: Path) -> None:
    fitted.model.save(tmp_path / "member")
    loaded = load_model(tmp_path / "member")
    assert type(loaded) is type(fitted.model) and loaded.name == fitted.model.name
    # Same settings (a BiLSTMConfig section comes back as the RNNConfig it is validated as).
    assert loaded.params.model_dump() == fitted.model.params.model_dump()
    np.testing.assert_array_equal(loaded.predict_proba(HELD), fitted.model.predict_proba(HELD))


def test_loaded_member_updates_and_reports_a_change_rate(fitted: Fitted, tmp_path: Path) -> None:
    fitted.model.save(tmp_path / "member")
    loaded = load_model(tmp_path / "member")
    before = copy.deepcopy(loaded)
    assert loaded.update(*UPDATE) is loaded
    proba = loaded.predict_proba(HELD)
    assert proba.shape == (len(HELD), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    rate = loaded.change_rate(before)
    assert rate is None or (isinstance(rate, float) and 0.0 <= rate <= 1.0)


def with_pretrained(config: Config) -> Config:
    """The config with ``models.bert.checkpoint: pretrained`` (the product default)."""
    bert = config.models.bert.model_copy(update={"checkpoint": "pretrained"})
    return config.model_copy(update={"models": config.models.model_copy(update={"bert": bert})})


def test_pretrained_checkpoint_is_resolved_to_the_workspace_directory(tmp_path: Path) -> None:
    config = with_pretrained(tiny_config(tmp_path / "ws"))
    resolved = resolve_checkpoint(config)
    assert resolved.models.bert.checkpoint == pretrained_dir(config).resolve()
    assert pretrained_dir(config) == tmp_path / "ws" / "pretrained"
    assert resolve_checkpoint(resolved) is resolved  # a concrete path is left alone
    with pytest.raises(ModelLoadError, match=re.escape(str(pretrained_dir(config).resolve()))):
        build_model("bert", resolved).fit(*TRAIN)  # no `sentirefine pretrain` ran: the error names the path


def test_unresolved_pretrained_checkpoint_is_refused(tmp_path: Path) -> None:
    config = with_pretrained(tiny_config(tmp_path / "ws"))
    with pytest.raises(ModelLoadError, match="not resolved"):
        build_model("bert", config).fit(*TRAIN)
