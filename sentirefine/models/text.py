"""Text to tokens, and tokens to integer ids.

Korean is agglutinative: "재밌게" and "재밌었다" share the stem "재밌" only after morpheme
analysis, so the lexicon and the recurrent models read kiwipiepy morphemes. Text without
Hangul (or with kiwipiepy unavailable) goes through a plain regex tokenizer.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from sentirefine.errors import ModelLoadError

_HANGUL = re.compile(r"[\uac00-\ud7a3\u3131-\u318e]")
_REGEX_TOKEN = re.compile(r"\w+|[^\w\s]+", re.UNICODE)

PAD, UNK = "<pad>", "<unk>"
# Tokenisations memoised per process (≈1 KB each). The main process keeps many: members fitted
# one after another (and the k cross-fit copies) read the same train texts. Pool workers are set
# to keep few (``ensemble.worker_token_cache_entries``, via ``set_cache_limit``): the members of
# one batch share its tokens, and a bound that does not depend on the corpus keeps worker memory
# flat as the table grows.
_CACHE_LIMIT = {"entries": 200_000}
_CACHE: dict[str, dict[str, list[str]]] = {}


_KIWI_THREADS: dict[str, int | None] = {"threads": None}  # None = Kiwi's own default (all cores)
# One Kiwi analyser per process and thread count, shared by every tokenizer in it. Each member
# holds its own Tokenizer, and a fold set holds k members: one analyser each cost ~4 s and
# 100-200 MB apiece, 15 of them in every pool worker at 5 folds (lexicon, LSTM, BiLSTM).
# Analysis does not depend on who asks, and a process tokenizes one batch at a time.
_ANALYSERS: dict[int | None, Any] = {}


def set_threads(threads: int | None) -> None:
    """Threads of the Kiwi analysers this process creates from now on.

    A Pool worker asks for its share of the cores (cores // workers), as it does of torch:
    two workers each running Kiwi on every core would oversubscribe the machine.
    """
    _KIWI_THREADS["threads"] = threads


def set_cache_limit(entries: int) -> None:
    """Bound this process's tokenisation cache (dropping what it holds beyond the new bound)."""
    _CACHE_LIMIT["entries"] = entries
    for cache in _CACHE.values():
        if len(cache) > entries:
            cache.clear()


def regex_tokenize(text: str) -> list[str]:
    """Lower-cased word and punctuation runs; the fallback for non-Korean text."""
    return _REGEX_TOKEN.findall(text.lower())


class Tokenizer:
    """Batch tokenizer: kiwipiepy morphemes for Korean text, regex for the rest.

    The Kiwi analyser is created lazily, once per process (see ``_ANALYSERS``), and with
    ``num_workers`` threads (None = all cores; 0 cannot batch), so Pool workers can ask for one.
    """

    def __init__(self, kind: str = "kiwi", num_workers: int | None = None) -> None:
        """Settings only: Kiwi itself is created on first use."""
        self.kind = kind
        self.num_workers = num_workers

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles leave the analyser behind: it is the process's, found again on first use."""
        return {k: v for k, v in self.__dict__.items() if k != "_kiwi"}

    @cached_property
    def _kiwi(self) -> Any:
        """The process's Kiwi analyser for this thread count, created on first use (~4 s, 100-200 MB)."""
        threads = self.num_workers if self.num_workers is not None else _KIWI_THREADS["threads"]
        if threads not in _ANALYSERS:
            from kiwipiepy import Kiwi

            _ANALYSERS[threads] = Kiwi(num_workers=threads)
        return _ANALYSERS[threads]

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        """Tokenize a batch; output order matches input order.

        Results are memoised per process: the lexicon, LSTM and BiLSTM read the same texts
        one after another, and morpheme analysis is the slowest part of their pipeline.
        """
        cache = _CACHE.setdefault(self.kind, {})
        out: list[list[str] | None] = [cache.get(t) for t in texts]
        korean = [i for i, t in enumerate(texts) if out[i] is None and self.kind == "kiwi" and _HANGUL.search(t)]
        for i, t in enumerate(texts):
            if out[i] is None and not (self.kind == "kiwi" and _HANGUL.search(t)):
                out[i] = regex_tokenize(t)
        if korean:
            analysed = self._kiwi.tokenize([texts[i] for i in korean])
            for i, tokens in zip(korean, analysed, strict=True):
                out[i] = [tok.form.lower() for tok in tokens]
        # Only what is new can overflow the bound: re-reading cached texts (the k cross-fit copies
        # read the same train split) must not wipe them (at 150k rows it cost a Kiwi pass per fold).
        new = {t: toks for t, toks in zip(texts, out, strict=True) if t not in cache}
        if len(cache) + len(new) > _CACHE_LIMIT["entries"]:
            cache.clear()  # crude but bounded: the batch just tokenised is always kept
            new = dict(zip(texts, out, strict=True))
        cache.update(new)
        return [list(toks or []) for toks in out]


class Vocabulary:
    """Token <-> id mapping built from a corpus; id 0 is padding, id 1 unknown."""

    def __init__(self, tokens: Sequence[str]) -> None:
        """The id -> token list; ids 0 and 1 must be padding and unknown, which the models rely on."""
        if list(tokens[:2]) != [PAD, UNK]:
            raise ValueError("a vocabulary starts with the padding and unknown tokens")
        self.itos = list(tokens)
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], *, max_size: int, min_freq: int) -> Vocabulary:
        """The ``max_size`` most frequent tokens seen at least ``min_freq`` times."""
        counts = Counter(t for toks in token_lists for t in toks)
        # Ties broken by token so the same corpus always gives the same ids.
        ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        return cls([PAD, UNK, *ranked[: max_size - 2]])

    def __len__(self) -> int:
        """Number of ids, padding and unknown included (the embedding's row count)."""
        return len(self.itos)

    def encode(self, tokens: Sequence[str], max_len: int) -> list[int]:
        """Ids of the first ``max_len`` tokens (at least one id: empty text maps to [UNK])."""
        ids = [self.stoi.get(t, 1) for t in tokens[:max_len]]
        return ids or [1]

    def save(self, path: Path) -> None:
        """The id -> token list as JSON: ids are positions, so the file alone rebuilds the map."""
        path.write_text(json.dumps(self.itos, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        """Read a saved vocabulary; missing or malformed files are load errors naming the path."""
        try:
            return cls(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError as exc:
            raise ModelLoadError(f"vocabulary file missing: {path}", hint="re-run `sentirefine bootstrap`") from exc
        except (ValueError, TypeError) as exc:
            raise ModelLoadError(f"vocabulary file corrupt: {path}: {exc}") from exc
