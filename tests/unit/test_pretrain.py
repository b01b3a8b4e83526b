"""`sentirefine pretrain`: corpus without gold, a Korean WordPiece vocabulary, a checkpoint the BERT member loads."""

from __future__ import annotations

import gzip
import json
import random
import shutil

import numpy as np
import pytest
import yaml
from tiny_config import TINY_CONFIG

from sentirefine.config import BertConfig, load_config
from sentirefine.data.store import Store
from sentirefine.data.workspace import resolve_checkpoint
from sentirefine.errors import ModelLoadError
from sentirefine.models import build_model
from sentirefine.models.bert import BertModel
from sentirefine.pretrain.run import build_corpus, iter_corpus, normalise, output_dir, pretrain, train_tokenizer

KOREAN = [
    "진짜 짜증나네요 목소리",
    "흠...포스터보고 초딩영화줄....오버연기조차 가볍지 않구나",
    "너무재밓었다그래서보는것을추천한다",
    "사이몬페그의 익살스런 연기가 돋보였던 영화!스파이더맨에서 늙어보이기만 했던 커스틴 던스트가 너무나도 이뻐보였다",
    "막 걸음마 뗀 3세부터 초등학교 1학년생인 8살용영화.ㅋㅋㅋ...별반개도 아까움.",
]


def _store(path, train: list[str], gold: list[str]) -> Store:
    store = Store(path, create=True)
    rows = [(f"t{i}", t, i % 2, i % 2, "train") for i, t in enumerate(train)]
    rows += [(f"g{i}", t, i % 2, i % 2, "gold") for i, t in enumerate(gold)]
    with store.transaction() as conn:
        conn.executemany("INSERT INTO sentences (id, text, original_label, current_label, split) "
                         "VALUES (?, ?, ?, ?, ?)", rows)
    return store


def _reviews(tiny_corpus) -> list[str]:
    train, _ = tiny_corpus
    return [line.split("\t")[1] for line in train.read_text(encoding="utf-8").splitlines()[1:]]


def test_tokenizer_round_trips_korean_without_unk(tmp_path, tiny_corpus):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(normalise(t) for t in _reviews(tiny_corpus) + KOREAN) + "\n", encoding="utf-8")
    cfg = load_config(None, {"pretrain": {"vocab_size": 2000, "min_frequency": 1}})
    tokenizer = train_tokenizer(corpus, cfg.pretrain)
    for text in KOREAN:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.unk_token_id not in ids, tokenizer.convert_ids_to_tokens(ids)
        assert "".join(tokenizer.decode(ids, skip_special_tokens=True).split()) == "".join(text.split())
    # Decomposed (NFD) input is normalised back to syllables, not turned into [UNK] jamo.
    import unicodedata

    nfd = tokenizer(unicodedata.normalize("NFD", KOREAN[0]))["input_ids"]
    assert nfd == tokenizer(KOREAN[0])["input_ids"]


def test_corpus_holds_train_and_extra_text_but_no_gold(tmp_path):
    gold = ["정말 최고의 영화", "다시는 안 본다", "연기가 어색했다"]
    train = ["정말 최고의 영화", "배우들이 멋있다", "스토리가 탄탄함", " 다시는  안 본다 "]  # 2 gold texts in train
    extra = tmp_path / "extra.tsv.gz"
    with gzip.open(extra, "wt", encoding="utf-8") as handle:
        handle.write("id\tmovie_id\trating\tdocument\n1\t9\t5\t음악이 좋았다\n2\t9\t6\t연기가 어색했다\n")
    with _store(tmp_path / "s.db", train, gold) as store:
        info = build_corpus(store, [extra], tmp_path / "corpus.txt")
    lines = list(iter_corpus(tmp_path / "corpus.txt"))
    assert sorted(lines) == sorted(["배우들이 멋있다", "스토리가 탄탄함", "음악이 좋았다"])
    assert not {normalise(g) for g in gold} & set(lines)
    assert (info.rows, info.train_rows, info.gold_texts_excluded) == (3, 2, 3)
    assert info.extra_rows == {str(extra): 1}


def _separable(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Korean sentences whose label is carried by one of a few sentiment words among neutral filler."""
    rng = random.Random(seed)
    filler = ["영화", "배우", "스토리", "오늘", "극장", "감독", "장면", "친구랑", "주말에", "음악"]
    good, bad = ["최고다", "재밌다", "감동적"], ["최악이다", "지루하다", "돈아깝다"]
    texts, labels = [], []
    for i in range(n):
        words = [*rng.sample(filler, 3), rng.choice(good if i % 2 else bad)]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(i % 2)
    return texts, np.array(labels)


@pytest.mark.integration  # ~20-30 s on 2 cores: a real pretraining, then a real fine-tuning
def test_pretrained_checkpoint_fine_tunes_above_chance(tmp_path):
    texts, labels = _separable(400, seed=1)
    held_texts, held_labels = _separable(100, seed=2)
    cfg = load_config(None, {
        "workspace": str(tmp_path / "ws"),
        "tracking": {"enabled": False},
        "pretrain": {"vocab_size": 300, "min_frequency": 1, "layers": 1, "hidden": 32, "heads": 2,
                     "intermediate": 64, "max_len": 16, "batch_size": 32, "max_steps": 15, "lr": 1e-3,
                     "checkpoint_every_steps": 10, "log_every_steps": 5},
        "models": {"bert": {"checkpoint": "pretrained", "epochs": 4, "lr": 2e-3, "freeze_layers": 0,
                            "batch_size": 16, "max_len": 32}},
    })
    with _store(cfg.db_file, texts, held_texts) as store:
        result = pretrain(cfg, store)
    card = json.loads((result.output / "pretrain_card.json").read_text(encoding="utf-8"))
    assert card["training"]["steps"] == 15 and card["corpus"]["rows"] > 0 and card["mlm_loss_curve"]
    model = build_model("bert", resolve_checkpoint(cfg))
    assert model.params.checkpoint == output_dir(cfg).resolve()
    model.fit(texts, labels)
    accuracy = float((model.predict_proba(held_texts).argmax(1) == held_labels).mean())
    assert accuracy > 0.75
    assert model._encode(["영화 " * 40])[0].__len__() <= 16  # capped by the model's positions, not max_len 32


def test_missing_checkpoint_directory_names_the_path(tmp_path):
    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(ModelLoadError, match="no-such-checkpoint") as err:
        BertModel("bert", BertConfig(checkpoint=missing)).fit(["좋다", "싫다"], np.array([1, 0]))
    assert err.value.exit_code == 5 and "sentirefine pretrain" in (err.value.hint or "")


def test_corrupt_checkpoint_directory_names_the_path(tmp_path):
    corrupt = tmp_path / "corrupt-checkpoint"
    corrupt.mkdir()
    (corrupt / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="corrupt-checkpoint"):
        BertModel("bert", BertConfig(checkpoint=corrupt)).fit(["좋다", "싫다"], np.array([1, 0]))


TINY_PRETRAIN = {"vocab_size": 400, "min_frequency": 1, "layers": 1, "hidden": 32, "heads": 2, "intermediate": 64,
                 "max_len": 16, "batch_size": 32, "max_steps": 8, "checkpoint_every_steps": 4, "log_every_steps": 4}


@pytest.mark.integration  # ~30-40 s: a real pretraining, bootstrap and one iteration through the CLI
def test_refine_pretrains_a_missing_pretrained_checkpoint_first(tiny_corpus, cli, tmp_path):
    """The default `checkpoint: pretrained` works on a new workspace: the first `refine` makes it."""
    train, gold = tiny_corpus
    ws = tmp_path / "ws"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        **TINY_CONFIG, "workspace": str(ws), "tracking": {"enabled": False}, "versioning": {"enabled": False},
        "models": {**TINY_CONFIG["models"], "order": ["lexicon", "bert"],
                   "bert": {"checkpoint": "pretrained", "max_len": 16, "batch_size": 16, "freeze_layers": 0,
                            "freeze_embeddings": False, "lr": 1e-3}},
        "pretrain": TINY_PRETRAIN, "refine": {**TINY_CONFIG["refine"], "max_iterations": 1}}))
    cli("-c", str(config), "import", str(train), "--gold", str(gold))
    first = cli("-c", str(config), "refine")
    assert "pretraining it first" in first.stderr
    card = json.loads((ws / "pretrained" / "pretrain_card.json").read_text(encoding="utf-8"))
    assert card["training"]["steps"] == 8 and card["corpus"]["train_rows"] == 600
    with Store(ws / "sentences.db") as store:
        assert "bert" in store.iterations()[0]["metrics"]["members"]
    # Once bootstrapped, BERT continues from its own checkpoints: no second pretraining.
    shutil.rmtree(ws / "pretrained")
    second = cli("-c", str(config), "refine", "--max-iterations", "2", "--ignore-convergence")
    assert "pretraining it first" not in second.stderr
    with Store(ws / "sentences.db") as store:
        assert [it["iteration"] for it in store.iterations() if it["finished_at"]] == [0, 1, 2]


def test_extra_text_is_read_like_an_import(tmp_path):
    """BOM dropped, gzip by content, a review opening with a quote swallows no line, plain text whole."""
    from sentirefine.pretrain.run import read_text_file

    tsv = tmp_path / "extra.tsv"  # gzip data under a plain name
    tsv.write_bytes(gzip.compress(b"\xef\xbb\xbfid\tdocument\tlabel\n1\t\"quoted start\t1\n2\tplain\t0\n3\tend\"\t1\n"))
    assert list(read_text_file(tsv)) == ['"quoted start', "plain", 'end"']
    lines = tmp_path / "lines.txt"
    lines.write_text('"first\nsecond\n', encoding="utf-8")
    assert list(read_text_file(lines)) == ['"first', "second"]
