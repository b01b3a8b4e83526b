"""The vocabulary: a cased WordPiece tokenizer trained on the corpus, and the corpus as token ids.

Why trained here: no Korean tokenizer ships in an installable package, and the shipped English
one turns a third of Korean words into ``[UNK]``. Cased, no accent stripping (stripping accents
decomposes Hangul into jamo). Tokenizer and token ids are written once into the work directory,
so every resume trains on the same ids.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from sentirefine.config import PretrainConfig
from sentirefine.errors import ModelLoadError
from sentirefine.pretrain.corpus import CHUNK, CORPUS, iter_corpus

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TOKENIZER_DIR, IDS, OFFSETS = "tokenizer", "ids.npy", "offsets.npy"


def train_tokenizer(corpus: Path, params: PretrainConfig) -> Any:
    """A cased WordPiece tokenizer trained on the corpus, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    # NFC first: decomposed (jamo) input would otherwise become pieces the vocabulary never saw.
    tok.normalizer = normalizers.Sequence([
        normalizers.NFC(),
        normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False),
    ])
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=params.vocab_size, min_frequency=params.min_frequency,
                                        special_tokens=SPECIAL_TOKENS, limit_alphabet=params.alphabet_limit,
                                        show_progress=False)
    tok.train_from_iterator(iter_corpus(corpus), trainer)
    # The trainer numbers pieces of equal frequency in a hash order that varies between runs;
    # sorted ids make the vocabulary (and so a resumed or repeated pretraining) reproducible.
    pieces = sorted(set(tok.get_vocab()) - set(SPECIAL_TOKENS))
    tok.model = models.WordPiece({t: i for i, t in enumerate(SPECIAL_TOKENS + pieces)}, unk_token="[UNK]")
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=params.max_len)


def load_tokenizer(path: Path) -> Any:
    """A saved tokenizer, offline; an unreadable one is a user-facing error naming the path."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"tokenizer at {path} could not be loaded: {exc}",
                             hint="the directory must hold a Hugging Face tokenizer") from exc


def prepare_tokenizer(work: Path, params: PretrainConfig, source: Path | None) -> Any:
    """The source checkpoint's tokenizer (continued mode), else the corpus WordPiece (trained once).

    Saved by a rename, so a kill while saving leaves no half tokenizer for the resume to load.
    """
    if source is not None:
        return load_tokenizer(source)
    path = work / TOKENIZER_DIR
    if (path / "tokenizer.json").is_file():
        return load_tokenizer(path)
    tokenizer = train_tokenizer(work / CORPUS, params)
    tmp = work / f"{TOKENIZER_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return tokenizer


def encode_corpus(corpus: Path, tokenizer: Any, max_len: int, work: Path) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of every corpus line (with [CLS]/[SEP], truncated) as one flat array plus offsets."""
    pieces: list[np.ndarray] = []
    lengths: list[int] = []
    batch: list[str] = []

    def flush() -> None:
        """Tokenize the pending batch: one call per chunk is much faster than one per text."""
        for ids in tokenizer(batch, truncation=True, max_length=max_len)["input_ids"]:
            pieces.append(np.asarray(ids, dtype=np.int32))
            lengths.append(len(ids))
        batch.clear()

    for line in iter_corpus(corpus):
        batch.append(line)
        if len(batch) >= CHUNK:
            flush()
    if batch:
        flush()
    ids = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    for name, array in ((IDS, ids), (OFFSETS, offsets)):
        tmp = work / f"{name}.tmp.npy"
        np.save(tmp, array)
        tmp.replace(work / name)
    return ids, offsets


def token_ids(work: Path, tokenizer: Any, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """The corpus token ids and offsets: encoded once, then loaded by every resume."""
    if (work / IDS).is_file() and (work / OFFSETS).is_file():
        return np.load(work / IDS), np.load(work / OFFSETS)
    return encode_corpus(work / CORPUS, tokenizer, max_len, work)
