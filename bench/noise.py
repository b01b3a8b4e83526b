"""The injected-noise settings: uniform, class-conditional and ambiguity-dependent flips, fixed seed.

Each kind maps to ``import_file(noise_rate=...)``: a float flips every class at that rate, a
``{true_label: rate}`` mapping flips each class at its own rate, and a ``RowNoise`` gives each row
its own rate. The pre-noise label is kept in ``reference_labels`` and is the truth every
detection metric is scored against.

``ambiguous25`` models a crowd rather than a coin: annotators err where a review is ambiguous.
Uniform flips land on texts the members are sure about, which is the easy case for any
detector. Here a reference reader, a char 1-3-gram TF-IDF logistic regression fitted on the *true*
labels and applied out-of-fold (5 folds, fixed seed), gives each review its probability of the
wrong class q; its flip probability is min(0.9, 0.25 · q / mean(q)), so the mean rate is about 25%
and the flips concentrate on reviews a reader finds ambiguous (a review the reader is sure of
is rarely flipped). It is instance-dependent noise in the sense of polynomial-margin-diminishing
noise (Zhang et al., ICLR 2021), with a text model as the margin.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from sentirefine.data.ingest import NoiseRate, RowNoise

AMBIGUOUS_MEAN, AMBIGUOUS_CAP = 0.25, 0.9
NOISE_KINDS: dict[str, float | dict[int, float] | str] = {
    "uniform20": 0.20,
    "uniform40": 0.40,
    # 30% of true positives labelled negative, 10% of true negatives labelled positive.
    "classcond": {1: 0.30, 0: 0.10},
    # Flip probability follows how ambiguous a reference reader finds the review (module docstring).
    "ambiguous25": "instance: min(0.9, 0.25 * q / mean(q)), q = out-of-fold char-TF-IDF P(wrong class)",
}


def rate(kind: str, train: Path | None = None, seed: int = 0) -> NoiseRate:
    """The ``noise_rate`` to import ``train`` with; ``ambiguous25`` reads the file to rate each row."""
    if kind not in NOISE_KINDS:
        raise SystemExit(f"unknown noise kind {kind!r}: choose from {', '.join(NOISE_KINDS)}")
    value = NOISE_KINDS[kind]
    if isinstance(value, str):
        if train is None:
            raise SystemExit(f"noise kind {kind!r} rates each row of the train file: pass it")
        return ambiguous_rates(train, seed=seed)
    return value


def ambiguous_rates(train: Path, *, mean: float = AMBIGUOUS_MEAN, cap: float = AMBIGUOUS_CAP,
                    seed: int = 0, folds: int = 5) -> RowNoise:
    """Per-row flip probabilities of a bench train file (``id, document, label`` TSV, header line)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from threadpoolctl import threadpool_limits

    with open(train, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    ids, labels = [r["id"] for r in rows], np.array([int(r["label"]) for r in rows])
    features = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), min_df=2, sublinear_tf=True,
                               max_features=200_000).fit_transform([r["document"] for r in rows])
    fold = np.random.default_rng(seed).permutation(len(rows)) % folds
    wrong = np.empty(len(rows))
    # One BLAS thread: lbfgs on sparse features gains nothing from more, and on a busy machine
    # (a benchmark beside it) oversubscribed threads made these fits 25x slower.
    with threadpool_limits(1):
        _fit_reader(features, labels, fold, folds, wrong)
    flip = np.minimum(cap, mean * wrong / max(wrong.mean(), 1e-12))
    return RowNoise(dict(zip(ids, flip.tolist(), strict=True)))


def _fit_reader(features, labels: np.ndarray, fold: np.ndarray, folds: int, wrong: np.ndarray) -> None:
    """Fill ``wrong`` with each row's out-of-fold P(the class it is not labelled)."""
    from sklearn.linear_model import LogisticRegression

    for k in range(folds):
        held = fold == k
        reader = LogisticRegression(C=2.0, max_iter=300).fit(features[~held], labels[~held])
        wrong[held] = reader.predict_proba(features[held])[np.arange(held.sum()), 1 - labels[held]]
