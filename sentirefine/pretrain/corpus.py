"""The pretraining corpus file: train-split text plus ``--extra`` text, NFC, one text per line.

Why a file built once: the vocabulary, the token ids and every resumed run read the same
bytes, so a run killed and resumed trains on exactly the text the first one saw. The gold split
is never used, and neither is any text identical to a gold text, wherever it comes from: gold
must stay unseen for its accuracy to mean anything (the card counts what was excluded).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentirefine.data.store import Store
from sentirefine.errors import ConfigError, InputDataError
from sentirefine.pretrain.extra import read_text_file

CORPUS, CORPUS_INFO = "corpus.txt", "corpus.json"
CHUNK = 10_000  # rows per store read and texts per tokenizer call


def normalise(text: str) -> str:
    """One line of NFC text: what the corpus stores and what gold texts are compared on."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def _digest(text: str) -> bytes:
    """8 bytes standing for a text, so the gold set stays small however large the gold split is."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()


@dataclass
class CorpusInfo:
    """What went into the corpus file (the card reports it)."""

    rows: int = 0
    train_rows: int = 0
    extra_rows: dict[str, int] = field(default_factory=dict)
    gold_texts_excluded: int = 0
    empty_skipped: int = 0


def build_corpus(store: Store, extra: Sequence[Path], path: Path) -> CorpusInfo:
    """Write train-split text and the extra files' text to ``path``, one text per line, gold excluded.

    Gold texts are held as 8-byte digests, so memory stays small for large gold splits.
    """
    gold = {_digest(normalise(r.text)) for chunk in store.iter_chunks("gold", CHUNK) for r in chunk}
    info = CorpusInfo()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:

        def add(text: str) -> bool:
            """Write one text unless it is empty or a gold text; count either way."""
            line = normalise(text)
            if not line:
                info.empty_skipped += 1
                return False
            if _digest(line) in gold:
                info.gold_texts_excluded += 1
                return False
            out.write(line + "\n")
            info.rows += 1
            return True

        for chunk in store.iter_chunks("train", CHUNK):
            info.train_rows += sum(add(r.text) for r in chunk)
        for extra_path in extra:
            info.extra_rows[str(extra_path)] = sum(add(t) for t in read_text_file(Path(extra_path)))
    if info.rows == 0:
        tmp.unlink()
        raise InputDataError("no text to pretrain on: the train split is empty and no --extra file added text",
                             hint="import a corpus first (`sentirefine import`) or pass --extra FILE")
    tmp.replace(path)
    return info


def iter_corpus(path: Path) -> Iterator[str]:
    """The corpus texts in file order, streamed: the vocabulary trainer and the encoder read it whole."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            yield line.rstrip("\n")


def prepare_corpus(store: Store, extra: Sequence[Path], work: Path) -> dict[str, Any]:
    """The corpus file and its counts; built once, then reused by every resume.

    A resume with other ``--extra`` files would train on other text than the saved state saw,
    so it is refused rather than silently mixed.
    """
    info_path = work / CORPUS_INFO
    wanted = sorted(str(p) for p in extra)
    if info_path.is_file():
        info: dict[str, Any] = json.loads(info_path.read_text(encoding="utf-8"))
        if sorted(info["extra_rows"]) != wanted:
            raise ConfigError(f"{work} holds a corpus built with --extra {sorted(info['extra_rows']) or 'none'}",
                              hint="pass the same --extra files to resume, or --fresh to start over")
        return info
    built = build_corpus(store, extra, work / CORPUS).__dict__
    info_path.write_text(json.dumps(built, ensure_ascii=False, indent=1), encoding="utf-8")
    return built
