"""Unit tests of the four members (lexicon, LSTM/BiLSTM, BERT) and the OOM back-off.

Data are synthetic and deterministic: sentences assembled from positive and negative word
lists, so a working model must clearly beat chance on held-out rows. Settings are tiny so the
whole file runs in well under a minute and a half on 2 CPU cores.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from sentirefine.config import BertConfig, LexiconConfig, RNNConfig
from sentirefine.errors import ModelLoadError, TrainingError
from sentirefine.models import SentimentModel, load_model
from sentirefine.models.batching import (
    is_oom,
    length_bucketed_order,
    resolve_device,
    run_in_batches,
    run_with_backoff,
)
from sentirefine.models.bert import BertModel
from sentirefine.models.lexicon import LexiconModel
from sentirefine.models.rnn import LSTMClassifier, RNNModel

POSITIVE = [
    "good",
    "great",
    "excellent",
    "wonderful",
    "amazing",
    "fantastic",
    "lovely",
    "brilliant",
    "enjoyable",
    "superb",
    "delightful",
    "perfect",
]
NEGATIVE = [
    "bad",
    "terrible",
    "awful",
    "boring",
    "horrible",
    "poor",
    "dull",
    "disappointing",
    "weak",
    "dreadful",
    "annoying",
    "mediocre",
]
SUBJECTS = [
    "the movie",
    "this film",
    "the story",
    "the acting",
    "the plot",
    "the music",
    "the ending",
    "the cast",
    "the script",
    "the director",
]
FILLERS = [
    "i watched it yesterday",
    "with my friends",
    "on a rainy sunday",
    "at the cinema",
    "after a long day",
    "for the second time",
    "with my family",
    "late at night",
]
ADVERBS = ["really", "quite", "very", "so", "truly", "rather"]

KO_POSITIVE = ["재밌다", "최고다", "감동적이다", "훌륭하다", "좋았다", "추천한다", "멋지다", "행복했다"]
KO_NEGATIVE = ["지루하다", "최악이다", "실망했다", "별로다", "짜증난다", "아깝다", "유치하다", "졸렸다"]
KO_SUBJECTS = ["이 영화", "배우 연기", "스토리", "음악", "결말", "감독 연출"]
KO_FILLERS = ["어제 봤는데", "친구랑 봤는데", "주말에 봤는데", "극장에서 봤는데"]


def synthetic(n: int, seed: int, *, korean: bool = False) -> tuple[list[str], np.ndarray]:
    """``n`` labelled sentences; the label is the class of the sentiment words drawn."""
    rng = np.random.default_rng(seed)
    pos, neg = (KO_POSITIVE, KO_NEGATIVE) if korean else (POSITIVE, NEGATIVE)
    texts, labels = [], rng.integers(0, 2, size=n)
    for y in labels:
        words = pos if y == 1 else neg
        w1, w2 = rng.choice(words, size=2, replace=False)
        if korean:
            texts.append(f"{rng.choice(KO_FILLERS)} {rng.choice(KO_SUBJECTS)} 정말 {w1} 그리고 {w2}")
        else:
            texts.append(
                f"{rng.choice(SUBJECTS)} was {rng.choice(ADVERBS)} {w1} and {w2}, {rng.choice(FILLERS)}"
            )
    return texts, labels.astype(np.int64)


TRAIN = synthetic(400, seed=1)
HELD_OUT = synthetic(100, seed=2)


def accuracy(model: SentimentModel, data: tuple[list[str], np.ndarray]) -> float:
    return float((model.predict_proba(data[0]).argmax(1) == data[1]).mean())


def assert_probabilities(proba: np.ndarray, n: int) -> None:
    assert proba.shape == (n, 2)
    assert proba.dtype == np.float32
    assert np.all(proba >= 0)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)


def assert_round_trip(model: SentimentModel, directory: Path) -> SentimentModel:
    model.save(directory)
    loaded = load_model(directory)
    assert type(loaded) is type(model)
    assert loaded.name == model.name
    assert loaded.params == model.params
    np.testing.assert_array_equal(loaded.predict_proba(HELD_OUT[0]), model.predict_proba(HELD_OUT[0]))
    return loaded


# -- fixtures: each model is fitted once per module ------------------------------------------


def tiny_rnn(**overrides: object) -> RNNModel:
    settings: dict[str, object] = {
        "tokenizer": "regex",
        "vocab_size": 200,
        "min_freq": 1,
        "embedding_dim": 32,
        "hidden_dim": 32,
        "epochs": 4,
        "lr": 1e-2,
        "update_lr": 5e-3,
        "batch_size": 32,
        "max_len": 24,
    } | overrides
    return RNNModel("lstm", RNNConfig(**settings), seed=7)


def tiny_bert(**overrides: object) -> BertModel:
    settings: dict[str, object] = {
        "max_len": 20,
        "epochs": 2,
        "lr": 4e-4,
        "update_lr": 2e-4,
        "batch_size": 32,
        "freeze_layers": 4,
        "freeze_embeddings": True,
        "checkpoint": None,  # the shipped MiniLM
    } | overrides
    return BertModel("bert", BertConfig(**settings), seed=7)


@pytest.fixture(scope="module")
def lexicon() -> LexiconModel:
    return LexiconModel("lexicon", LexiconConfig(tokenizer="regex"), seed=7).fit(*TRAIN)


@pytest.fixture(scope="module")
def lstm() -> RNNModel:
    return tiny_rnn().fit(*TRAIN)


@pytest.fixture(scope="module")
def bilstm() -> RNNModel:
    model = tiny_rnn(bidirectional=True, num_layers=2, freeze_on_update=["embedding", "lower_layers"])
    model.name = "bilstm"
    return model.fit(*TRAIN)


@pytest.fixture(scope="module")
def bert() -> BertModel:
    return tiny_bert().fit(*TRAIN)


# -- batching -----------------------------------------------------------------------------


def oom_above(limit: int) -> Callable[[int], int]:
    """A unit of work that runs out of memory at batch sizes above ``limit``."""

    def work(batch_size: int) -> int:
        if batch_size > limit:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return batch_size

    return work


def test_resolve_device() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("cuda") == "cuda"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_is_oom_recognises_out_of_memory_errors() -> None:
    assert is_oom(RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"))
    assert is_oom(torch.cuda.OutOfMemoryError("boom"))
    assert not is_oom(RuntimeError("shape mismatch"))
    assert not is_oom(ValueError("out of memory"))


def test_backoff_halves_until_the_work_fits(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sentirefine.models.batching"):
        result, size = run_with_backoff(oom_above(16), 64, context="test")
    assert result == size == 16
    steps = [
        (r.old_batch_size, r.new_batch_size)
        for r in caplog.records
        if getattr(r, "event", None) == "oom_backoff"
    ]
    assert steps == [(64, 32), (32, 16)]


def test_backoff_gives_up_at_batch_size_one() -> None:
    with pytest.raises(TrainingError, match="batch size 1"):
        run_with_backoff(oom_above(0), 8)


def test_backoff_does_not_swallow_other_errors() -> None:
    def broken(batch_size: int) -> None:
        raise RuntimeError("expected scalar type Long")

    with pytest.raises(RuntimeError, match="scalar type"):
        run_with_backoff(broken, 8)


def test_run_in_batches_resumes_and_sees_every_row_once() -> None:
    seen: list[int] = []

    def fn(idx: np.ndarray) -> None:
        if len(idx) > 16:
            raise RuntimeError("out of memory")
        seen.extend(idx.tolist())

    final = run_in_batches(np.arange(100), 64, fn)
    assert final == 16
    assert seen == list(range(100))


def test_length_bucketed_order_is_a_permutation() -> None:
    lengths = np.random.default_rng(0).integers(1, 50, size=1000)
    order = length_bucketed_order(lengths, 32, np.random.default_rng(1))
    assert sorted(order.tolist()) == list(range(1000))


def test_rnn_training_backs_off_on_oom(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    forward = LSTMClassifier.forward

    def limited(self: LSTMClassifier, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if ids.shape[0] > 16:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return forward(self, ids, lengths)

    monkeypatch.setattr(LSTMClassifier, "forward", limited)
    with caplog.at_level(logging.WARNING, logger="sentirefine.models.batching"):
        model = tiny_rnn(batch_size=64, epochs=1).fit(*TRAIN)
    assert model.history_[-1]["batch_size"] <= 16
    assert any(getattr(r, "event", None) == "oom_backoff" for r in caplog.records)
    assert_probabilities(model.predict_proba(HELD_OUT[0]), len(HELD_OUT[0]))


# -- lexicon ------------------------------------------------------------------------------


def test_lexicon_fits_and_beats_chance(lexicon: LexiconModel) -> None:
    assert accuracy(lexicon, HELD_OUT) >= 0.9
    assert_probabilities(lexicon.predict_proba(HELD_OUT[0]), len(HELD_OUT[0]))
    assert lexicon.dictionary_["great"] > 0 > lexicon.dictionary_["awful"]
    assert "was really" in lexicon.dictionary_ or "was very" in lexicon.dictionary_  # bigrams exist


def test_lexicon_probabilities_are_calibrated_under_label_noise() -> None:
    # 20% of the training labels flipped: a calibrated model is ~80% sure, not NB's ~100%.
    texts, labels = TRAIN
    noisy = np.where(np.random.default_rng(5).random(len(labels)) < 0.2, 1 - labels, labels)
    model = LexiconModel("lexicon", LexiconConfig(tokenizer="regex")).fit(texts, noisy)
    confidence = model.predict_proba(HELD_OUT[0]).max(1)
    assert 0.65 < confidence.mean() < 0.92
    assert accuracy(model, HELD_OUT) >= 0.75


def test_lexicon_round_trip(lexicon: LexiconModel, tmp_path: Path) -> None:
    loaded = assert_round_trip(lexicon, tmp_path / "lexicon")
    assert loaded.dictionary_ == lexicon.dictionary_


def test_lexicon_change_rate_and_update(lexicon: LexiconModel) -> None:
    assert lexicon.change_rate(copy.deepcopy(lexicon)) == 0.0
    updated = copy.deepcopy(lexicon)
    updated.update(TRAIN[0], 1 - TRAIN[1])
    rate = updated.change_rate(lexicon)
    assert rate is not None and 0.0 < rate <= 1.0
    assert updated.dictionary_ != lexicon.dictionary_
    assert updated.history_[-1]["phase"] == "update"
    # Momentum 0.5 on exactly flipped labels cancels the evidence: polarities collapse to ~0.
    assert abs(updated.dictionary_["great"]) < abs(lexicon.dictionary_["great"])
    assert_probabilities(updated.predict_proba(HELD_OUT[0]), len(HELD_OUT[0]))
    assert lexicon.change_rate(tiny_rnn()) is None


def test_lexicon_min_count_drops_rare_entries() -> None:
    texts = ["good film", "good story", "bad film", "bad story", "zyzzyva good"]
    model = LexiconModel("lexicon", LexiconConfig(tokenizer="regex", min_count=2)).fit(
        texts, np.array([1, 1, 0, 0, 1])
    )
    assert "good" in model.dictionary_
    assert "zyzzyva" not in model.dictionary_


def test_lexicon_seed_file_gives_polarity_without_evidence(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.tsv"
    seeds.write_text("# word\tscore\nsplendiferous\t2\nutter garbage\t-2\nmediocre\t-1\n", encoding="utf-8")
    params = LexiconConfig(tokenizer="regex", seed_path=seeds)
    model = LexiconModel("lexicon", params).fit(*TRAIN)
    assert model.dictionary_["splendiferous"] > 0  # never seen in training
    assert model.dictionary_["utter garbage"] < 0  # a two-token seed becomes a bigram entry
    assert model.predict_proba(["splendiferous"])[0, 1] > 0.5
    assert model.predict_proba(["utter garbage"])[0, 1] < 0.5


def test_lexicon_bad_seed_file_names_the_path(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.tsv"
    seeds.write_text("good\tvery\n", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="seeds.tsv"):
        LexiconModel("lexicon", LexiconConfig(tokenizer="regex", seed_path=seeds)).fit(*TRAIN)
    missing = tmp_path / "nope.tsv"
    with pytest.raises(ModelLoadError, match="nope.tsv"):
        LexiconModel("lexicon", LexiconConfig(tokenizer="regex", seed_path=missing)).fit(*TRAIN)


def test_lexicon_korean_with_kiwi() -> None:
    train, held_out = synthetic(300, seed=3, korean=True), synthetic(100, seed=4, korean=True)
    model = LexiconModel("lexicon", LexiconConfig(tokenizer="kiwi")).fit(*train)
    assert accuracy(model, held_out) >= 0.9


def test_single_class_is_a_training_error() -> None:
    with pytest.raises(TrainingError, match="single class"):
        LexiconModel("lexicon", LexiconConfig(tokenizer="regex")).fit(["good", "great"], np.array([1, 1]))


def test_corrupt_lexicon_state_names_the_path(lexicon: LexiconModel, tmp_path: Path) -> None:
    lexicon.save(tmp_path / "lex")
    (tmp_path / "lex" / "lexicon.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="lexicon.json"):
        load_model(tmp_path / "lex")


def test_missing_model_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="nowhere"):
        load_model(tmp_path / "nowhere")


# -- LSTM / BiLSTM -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lstm", "bilstm"])
def test_rnn_fits_and_beats_chance(name: str, request: pytest.FixtureRequest) -> None:
    model: RNNModel = request.getfixturevalue(name)
    assert accuracy(model, HELD_OUT) >= 0.75
    assert_probabilities(model.predict_proba(HELD_OUT[0]), len(HELD_OUT[0]))
    assert [h["phase"] for h in model.history_] == ["fit"] * model.params.epochs
    assert model.history_[-1]["loss"] < model.history_[0]["loss"]


def test_rnn_is_deterministic_given_seed(lstm: RNNModel) -> None:
    again = tiny_rnn().fit(*TRAIN)
    np.testing.assert_array_equal(again.predict_proba(HELD_OUT[0]), lstm.predict_proba(HELD_OUT[0]))


def test_rnn_round_trip(bilstm: RNNModel, tmp_path: Path) -> None:
    loaded = assert_round_trip(bilstm, tmp_path / "bilstm")
    assert loaded.history_ == bilstm.history_


def test_lstm_update_fine_tunes_everything(lstm: RNNModel) -> None:
    model = copy.deepcopy(lstm)
    before = {k: v.clone() for k, v in model.net_.state_dict().items()}
    model.update(TRAIN[0], 1 - TRAIN[1])
    after = model.net_.state_dict()
    assert not torch.equal(before["embedding.weight"], after["embedding.weight"])
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert model.history_[-1]["phase"] == "update"
    assert_probabilities(model.predict_proba(HELD_OUT[0]), len(HELD_OUT[0]))


def test_bilstm_partial_retraining_keeps_frozen_parts(bilstm: RNNModel) -> None:
    model = copy.deepcopy(bilstm)
    before = {k: v.clone() for k, v in model.net_.state_dict().items()}
    model.update(*TRAIN)
    after = model.net_.state_dict()
    frozen = [k for k in before if k.startswith(("embedding.", "layers.0."))]
    trained = [k for k in before if k.startswith(("layers.1.", "head."))]
    assert frozen and trained
    for key in frozen:
        assert torch.equal(before[key], after[key]), key
    assert all(not torch.equal(before[k], after[k]) for k in trained)
    assert accuracy(model, HELD_OUT) >= 0.75


def test_rnn_vocabulary_mismatch_is_a_load_error(lstm: RNNModel, tmp_path: Path) -> None:
    directory = tmp_path / "lstm"
    lstm.save(directory)
    vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
    (directory / "vocab.json").write_text(json.dumps([*vocab, "extra-token"]), encoding="utf-8")
    with pytest.raises(ModelLoadError, match="vocabulary mismatch") as info:
        load_model(directory)
    assert str(directory) in str(info.value)


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_rnn_bad_weights_name_the_path(damage: str, lstm: RNNModel, tmp_path: Path) -> None:
    directory = tmp_path / "lstm"
    lstm.save(directory)
    weights = directory / "weights.pt"
    if damage == "missing":
        weights.unlink()
    else:
        weights.write_bytes(b"this is not a torch checkpoint")
    with pytest.raises(ModelLoadError, match="weights.pt") as info:
        load_model(directory)
    assert str(directory) in str(info.value)


# -- BERT ---------------------------------------------------------------------------------


def test_bert_fits_and_beats_chance(bert: BertModel) -> None:
    assert accuracy(bert, HELD_OUT) >= 0.75
    assert_probabilities(bert.predict_proba(HELD_OUT[0]), len(HELD_OUT[0]))
    assert [h["frozen_layers"] for h in bert.history_] == [4, 4]


def test_bert_round_trip(bert: BertModel, tmp_path: Path) -> None:
    assert_round_trip(bert, tmp_path / "bert")


def test_bert_update_keeps_frozen_layers_and_changes_the_top(bert: BertModel) -> None:
    model = copy.deepcopy(bert)
    before = {k: v.clone() for k, v in model.model_.state_dict().items()}
    model.update(*HELD_OUT)
    after = model.model_.state_dict()
    assert torch.equal(
        before["bert.embeddings.word_embeddings.weight"], after["bert.embeddings.word_embeddings.weight"]
    )
    assert torch.equal(
        before["bert.encoder.layer.0.output.dense.weight"], after["bert.encoder.layer.0.output.dense.weight"]
    )
    assert not torch.equal(
        before["bert.encoder.layer.5.output.dense.weight"], after["bert.encoder.layer.5.output.dense.weight"]
    )
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    assert model.history_[-1]["phase"] == "update"
    assert_probabilities(model.predict_proba(HELD_OUT[0]), len(HELD_OUT[0]))


def test_bert_max_train_rows_samples() -> None:
    model = tiny_bert(max_train_rows=50, epochs=1).fit(*TRAIN)
    assert model.history_[0]["rows"] == 50


def test_bert_missing_checkpoint_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="no-such-model"):
        tiny_bert(checkpoint=missing).fit(*TRAIN)


def test_bert_corrupt_checkpoint_names_the_path(bert: BertModel, tmp_path: Path) -> None:
    directory = tmp_path / "bert"
    bert.save(directory)
    (directory / "hf" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError) as info:
        load_model(directory)
    assert str(directory) in str(info.value)
