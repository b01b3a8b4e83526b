"""Word Sentiment: a dictionary of token n-grams and their polarities.

Maths. Each text contributes its *set* of entries (token n-grams up to ``ngram``, joined by a
space) once to the count of its class. With smoothing ``α``, kept entries ``V`` and class
totals ``N_c = Σ_e count_c(e) + α|V|``, the polarity of an entry is the Naive-Bayes log-count
ratio

    r(e) = log((pos(e) + α) / N_pos) - log((neg(e) + α) / N_neg).

Seeds (``word<TAB>score``) add ``seed_strength * |score|`` pseudo-counts to the class of the
score's sign. A text scores ``s = Σ r(e)`` over its entries in the dictionary and
``P(pos) = sigmoid(a * s + b)``. Summed NB log-odds are far too confident, so ``(a, b)`` is
fitted by a 1-D logistic regression on *leave-one-out* scores of the training texts (each
text's own counts removed), which keeps in-sample overfitting out of the calibration.

``update`` blends counts, ``counts = m * old + (1 - m) * new``, so the dictionary moves
gradually as labels are corrected; :meth:`change_rate` measures how far it moved.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import chain
from pathlib import Path
from typing import Self

import numpy as np

from sentirefine.config import LexiconConfig
from sentirefine.errors import ModelLoadError
from sentirefine.models.base import DAMAGED_HINT, SentimentModel
from sentirefine.models.batching import check_labels
from sentirefine.models.text import Tokenizer

logger = logging.getLogger(__name__)

_STATE = "lexicon.json"
_NEWTON_STEPS = 50
_RIDGE = 1.0  # a N(0, 1) prior on (a, b): finite when the scores separate the classes, negligible at n >> 1

Counts = dict[str, tuple[float, float]]  # entry -> (negative count, positive count)


def ngrams(tokens: Sequence[str], n_max: int) -> set[str]:
    """All distinct token n-grams of length 1..n_max, joined with a space."""
    return {" ".join(tokens[i : i + n]) for n in range(1, n_max + 1) for i in range(len(tokens) - n + 1)}


def count_entries(entry_sets: Sequence[set[str]], labels: np.ndarray) -> Counts:
    """Document frequency of every entry per class (a text counts once per entry)."""
    neg = Counter(chain.from_iterable(s for s, y in zip(entry_sets, labels, strict=True) if y == 0))
    pos = Counter(chain.from_iterable(s for s, y in zip(entry_sets, labels, strict=True) if y == 1))
    return {e: (float(neg.get(e, 0)), float(pos.get(e, 0))) for e in neg.keys() | pos.keys()}


def blend_counts(old: Counts, new: Counts, momentum: float) -> Counts:
    """``momentum * old + (1 - momentum) * new`` over the union of entries."""
    out: Counts = {}
    for e in old.keys() | new.keys():
        o, n = old.get(e, (0.0, 0.0)), new.get(e, (0.0, 0.0))
        out[e] = (momentum * o[0] + (1 - momentum) * n[0], momentum * o[1] + (1 - momentum) * n[1])
    return out


def fit_calibration(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Newton's method for ``P(y=1) = sigmoid(a*s + b)``: a two-parameter logistic regression."""
    x = np.column_stack([scores, np.ones_like(scores)])
    w = np.zeros(2)
    for _ in range(_NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -500, 500)))
        grad = x.T @ (p - labels) + _RIDGE * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + _RIDGE * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return float(w[0]), float(w[1])


def read_seeds(path: Path) -> list[tuple[str, float]]:
    """Parse a ``word<TAB>score`` file; blank lines and ``#`` comments are skipped.

    Read through :func:`userfile.read_text` like every file a user hands us: a BOM (which would
    glue itself to the first word), gzip, a cp949 file or a directory all give a clear error.
    """
    from sentirefine.errors import InputDataError
    from sentirefine.files.userfile import read_text

    try:
        lines = read_text(path, "seed lexicon (models.lexicon.seed_path)").splitlines()
    except InputDataError as exc:
        raise ModelLoadError(exc.message, hint=f"{exc.hint}; or fix models.lexicon.seed_path") from exc
    seeds = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        word, sep, score = line.rpartition("\t")
        try:
            if not sep or not word.strip():
                raise ValueError("expected 'word<TAB>score'")
            seeds.append((word.strip(), float(score)))
        except ValueError as exc:
            raise ModelLoadError(f"seed lexicon {path} line {number} is invalid: {line!r}: {exc}") from exc
    return seeds


class LexiconModel(SentimentModel):
    """Word Sentiment: calibrated sum of smoothed log-odds of the text's n-grams."""

    kind = "lexicon"
    # The update blends the old counts with counts on the rows given: a sample would be weighed
    # as if it were the corpus. Counting every row is cheap anyway.
    updates_on_a_sample = False
    params: LexiconConfig

    def __init__(self, name: str, params: LexiconConfig, *, device: str = "cpu", seed: int = 13) -> None:
        """Settings only; counts, dictionary and calibration come from ``fit`` or a checkpoint."""
        super().__init__(name, params, device=device, seed=seed)
        self.tokenizer = Tokenizer(params.tokenizer)
        self.counts_: Counts = {}
        self.seed_counts_: Counts = {}
        self.dictionary_: dict[str, float] = {}
        self.calibration_: tuple[float, float] | None = None

    @classmethod
    def params_type(cls) -> type[LexiconConfig]:
        """The ``models.lexicon`` section."""
        return LexiconConfig

    # -- training -------------------------------------------------------------------------
    def fit(self, texts: Sequence[str], labels: np.ndarray) -> Self:
        """Count entries from scratch (seeds reloaded from ``seed_path``; ``history_`` restarts)."""
        labels = check_labels(texts, labels)
        self.history_ = []
        self.seed_counts_ = self._load_seed_counts()
        entry_sets = self._entry_sets(texts)
        self.counts_ = self._prune(count_entries(entry_sets, labels))
        self._refresh(entry_sets, labels, phase="fit")
        return self

    def update(self, texts: Sequence[str], labels: np.ndarray) -> Self:
        """Incremental dictionary update: blend the old counts with counts on the new labels."""
        if self.calibration_ is None:
            return self.fit(texts, labels)
        labels = check_labels(texts, labels)
        entry_sets = self._entry_sets(texts)
        new = count_entries(entry_sets, labels)
        self.counts_ = self._prune(blend_counts(self.counts_, new, self.params.update_momentum))
        self._refresh(entry_sets, labels, phase="update")
        return self

    def _refresh(self, entry_sets: list[set[str]], labels: np.ndarray, *, phase: str) -> None:
        """Recompute polarities and the calibration, and record the step in ``history_``."""
        self.dictionary_ = self._polarities()
        loo = self._leave_one_out_scores(entry_sets, labels)
        self.calibration_ = fit_calibration(loo, labels.astype(np.float64))
        proba = self._proba_from_scores(loo)
        loss = float(-np.mean(np.log(np.clip(proba[np.arange(len(labels)), labels], 1e-12, None))))
        self.history_.append(
            {
                "epoch": len(self.history_) + 1,
                "phase": phase,
                "loss": loss,
                "batch_size": len(labels),
                "entries": len(self.dictionary_),
                "a": self.calibration_[0],
                "b": self.calibration_[1],
            }
        )

    def _prune(self, counts: Counts) -> Counts:
        """Drop unseeded entries seen fewer than ``min_count`` times (their counts are forgotten)."""
        keep = self.params.min_count
        return {e: c for e, c in counts.items() if c[0] + c[1] >= keep or e in self.seed_counts_}

    # -- polarities -----------------------------------------------------------------------
    def _totals(self) -> tuple[float, float, dict[str, tuple[float, float]]]:
        """Seeded counts per entry and the smoothed class totals ``N_neg``, ``N_pos``."""
        merged = dict(self.counts_)
        for e, (sn, sp) in self.seed_counts_.items():
            n, p = merged.get(e, (0.0, 0.0))
            merged[e] = (n + sn, p + sp)
        alpha_v = self.params.smoothing * len(merged)
        neg_total = sum(c[0] for c in merged.values()) + alpha_v
        pos_total = sum(c[1] for c in merged.values()) + alpha_v
        return neg_total, pos_total, merged

    def _polarities(self) -> dict[str, float]:
        """Smoothed log-odds per entry, offset by the class prior so a balanced text scores 0."""
        neg_total, pos_total, merged = self._totals()
        alpha, offset = self.params.smoothing, math.log(neg_total / pos_total)
        return {e: math.log((p + alpha) / (n + alpha)) + offset for e, (n, p) in merged.items()}

    def _leave_one_out_scores(self, entry_sets: list[set[str]], labels: np.ndarray) -> np.ndarray:
        """Each text's score with its own (weight-1) count removed from its class.

        After an update the old counts hold the text at weight ``m`` under its previous label;
        assuming that label equals the current one (true for all but the few corrected rows)
        the text's total weight is still 1.
        """
        neg_total, pos_total, merged = self._totals()
        alpha, offset = self.params.smoothing, math.log(neg_total / pos_total)
        scores = np.zeros(len(entry_sets))
        for row, (entries, y) in enumerate(zip(entry_sets, labels, strict=True)):
            terms = []
            for e in entries:
                c = merged.get(e)
                if c is None:
                    continue
                n, p = (c[0], max(0.0, c[1] - 1.0)) if y == 1 else (max(0.0, c[0] - 1.0), c[1])
                terms.append(math.log((p + alpha) / (n + alpha)) + offset)
            scores[row] = math.fsum(terms)  # exact: a set's order (hash-seeded) cannot change the last digit
        return scores

    # -- prediction -----------------------------------------------------------------------
    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Uncalibrated text scores: the sum of the polarities of the text's entries."""
        d = self.dictionary_
        # fsum is exactly rounded, so the per-process order of a set cannot move the last digit
        # (two runs of the same command gave calibrations differing in the 16th digit).
        return np.array([math.fsum(d.get(e, 0.0) for e in s) for s in self._entry_sets(texts)], dtype=np.float64)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated probabilities of the summed log-odds (a raw sum is not a probability)."""
        if self.calibration_ is None:
            raise RuntimeError(f"lexicon model {self.name!r} is not fitted; call fit() first")
        return self._proba_from_scores(self.scores(texts))

    def _proba_from_scores(self, scores: np.ndarray) -> np.ndarray:
        """The 1-D logistic calibration, clipped so that extreme scores cannot overflow exp."""
        a, b = self.calibration_ or (1.0, 0.0)
        pos = 1.0 / (1.0 + np.exp(-np.clip(a * scores + b, -500, 500)))
        return np.column_stack([1.0 - pos, pos]).astype(np.float32)

    def change_rate(self, previous: SentimentModel) -> float | None:
        """Occurrence-weighted share of entries added, removed, flipped or moved > epsilon.

        Each entry counts by how often it occurs (its larger count in either model): a rare
        token whose log-odds jumps on one relabelled review barely moves the lexicon's
        behaviour, so an unweighted share never settles while the labels already have.
        """
        if not isinstance(previous, LexiconModel):
            return None
        old, new = previous.dictionary_, self.dictionary_
        union = old.keys() | new.keys()
        if not union:
            return 0.0
        eps = self.params.change_epsilon

        def weight(entry: str) -> float:
            """How often the entry occurs, in whichever model saw it more (at least 1)."""
            return max(sum(previous.counts_.get(entry, (0.0, 0.0))), sum(self.counts_.get(entry, (0.0, 0.0))), 1.0)

        total = sum(weight(e) for e in union)
        changed = sum(weight(e) for e in union if _entry_changed(old.get(e), new.get(e), eps))
        return changed / total

    # -- text -> entries ------------------------------------------------------------------
    def _entry_sets(self, texts: Sequence[str]) -> list[set[str]]:
        """Each text's distinct n-grams: a text counts once per entry, however often it repeats it."""
        return [ngrams(toks, self.params.ngram) for toks in self.tokenizer.tokenize(list(texts))]

    def _load_seed_counts(self) -> Counts:
        """Seed pseudo-counts keyed by entry; seeds longer than ``ngram`` tokens are skipped."""
        if self.params.seed_path is None:
            return {}
        seeds = read_seeds(self.params.seed_path)
        tokenized = self.tokenizer.tokenize([w for w, _ in seeds])
        counts: dict[str, list[float]] = {}
        skipped = 0
        for (_, score), toks in zip(seeds, tokenized, strict=True):
            if not toks or len(toks) > self.params.ngram:
                skipped += 1
                continue
            slot = counts.setdefault(" ".join(toks), [0.0, 0.0])
            slot[1 if score > 0 else 0] += self.params.seed_strength * abs(score)
        logger.info(
            "seed lexicon loaded",
            extra={
                "event": "seed_lexicon",
                "path": str(self.params.seed_path),
                "entries": len(counts),
                "skipped": skipped,
            },
        )
        return {e: (c[0], c[1]) for e, c in counts.items()}

    # -- persistence ----------------------------------------------------------------------
    def _save_state(self, directory: Path) -> None:
        """Counts and calibration; the dictionary is derived from them again on load."""
        if self.calibration_ is None:
            raise RuntimeError(f"lexicon model {self.name!r} is not fitted; nothing to save")
        state = {
            "calibration": list(self.calibration_),
            "counts": _counts_to_json(self.counts_),
            "seed_counts": _counts_to_json(self.seed_counts_),
        }
        (directory / _STATE).write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")

    def _load_state(self, directory: Path) -> None:
        """Read the state file; a missing or malformed one is a load error naming the path."""
        path = directory / _STATE
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            self.counts_ = _counts_from_json(state["counts"])
            self.seed_counts_ = _counts_from_json(state["seed_counts"])
            a, b = state["calibration"]
            self.calibration_ = (float(a), float(b))
        except FileNotFoundError as exc:
            raise ModelLoadError(
                f"lexicon state missing: {path}", hint="re-run `sentirefine bootstrap`"
            ) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"lexicon state corrupt: {path}: {exc!r}", hint=DAMAGED_HINT) from exc
        self.dictionary_ = self._polarities()


def _entry_changed(old: float | None, new: float | None, eps: float) -> bool:
    """Added, removed, flipped in sign, or moved by more than ``eps``."""
    if old is None or new is None:
        return True
    return np.sign(old) != np.sign(new) or abs(new - old) > eps


def _counts_to_json(counts: Counts) -> dict[str, list[float]]:
    """Sorted by entry so that the same counts always write the same file."""
    return {e: [c[0], c[1]] for e, c in sorted(counts.items())}


def _counts_from_json(data: dict[str, Iterable[float]]) -> Counts:
    """Back to (negative, positive) float pairs; a malformed pair raises for the caller to report."""
    out: Counts = {}
    for e, c in data.items():
        n, p = (float(x) for x in c)
        out[e] = (n, p)
    return out
