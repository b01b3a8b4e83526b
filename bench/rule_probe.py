"""Correction rules on a stand-in ensemble: which schedule to measure on the real members first.

The quality benchmark takes hours per arm; this probe takes minutes. One char 1-3-gram TF-IDF
logistic regression stands in for the ensemble (5-fold out-of-fold probabilities, as issue 27's
fold models give), on a fixed-seed 20k sample of NSMC train, over 5 rounds: predict out-of-fold,
flip what the rule says (at most once per row, as ``refine.max_flips: 1``), refit. The budget
rule is the product's own estimator (``sentirefine.pipeline.noise_budget``); the threshold rule
is the rising threshold; cleanlab flips its ``find_label_issues`` once. Scores are against the
pre-noise truth. ``python -m bench.rule_probe [--noise uniform20,...] [--shares 0.8,1.0]``
writes ``bench/results/rule_probe.json``. A stand-in, not a result: it ranks schedules.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from bench import data, machine, noise
from sentirefine.config import BudgetRule, ThresholdSchedule
from sentirefine.pipeline import noise_budget

ROUNDS, FOLDS = 5, 5
SCHEDULE = ThresholdSchedule()


def _features(texts: list[str]):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), min_df=2, sublinear_tf=True,
                           max_features=200_000).fit_transform(texts)


def _oof(features, labels: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    fold, p = np.arange(len(labels)) % FOLDS, np.empty(len(labels))
    for k in range(FOLDS):
        model = LogisticRegression(C=2.0, max_iter=300).fit(features[fold != k], labels[fold != k])
        p[fold == k] = model.predict_proba(features[fold == k])[:, 1]
    return p


def _budget_flips(rule: BudgetRule):
    def flips(labels: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
        predicted, confidence = (p > 0.5).astype(np.int64), np.maximum(p, 1 - p)
        est = noise_budget.estimate(labels, p, predicted, confidence, share=rule.share_at(SCHEDULE, k))
        need = noise_budget.flip_thresholds(est, rule.floor_at(SCHEDULE, k), {})
        return (predicted != labels) & (confidence >= np.array([need[c] for c in predicted]))
    return flips


def _threshold_flips(labels: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    return ((p > 0.5) != labels) & (np.maximum(p, 1 - p) >= SCHEDULE.at(k))


def _scores(noisy: np.ndarray, final: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    wrong, changed = noisy != truth, final != noisy
    tp = int(np.sum(changed & wrong))
    precision, recall = tp / max(1, changed.sum()), tp / max(1, wrong.sum())
    return {"f1": round(2 * precision * recall / max(1e-12, precision + recall), 3),
            "precision": round(precision, 3), "recall": round(recall, 3),
            "final_label_accuracy": round(float(np.mean(final == truth)), 3),
            "clean_wrongly_changed_rate": round(float(np.sum(changed & ~wrong) / max(1, (~wrong).sum())), 3)}


def _rounds(features, noisy: np.ndarray, flips) -> np.ndarray:
    labels, flipped = noisy.copy(), np.zeros(len(noisy), dtype=bool)
    for k in range(1, ROUNDS + 1):
        change = flips(labels, _oof(features, labels), k) & ~flipped
        labels[change], flipped = 1 - labels[change], flipped | change
    return labels


def run_kind(kind: str, train: Path, shares: list[float]) -> dict[str, dict[str, float]]:
    import cleanlab.filter

    with open(train, encoding="utf-8", newline="") as handle:
        rows = [(r["id"], r["document"], r["label"]) for r in csv.DictReader(handle, delimiter="\t")]
    texts, truth = [r[1] for r in rows], np.array([int(r[2]) for r in rows])
    features, rng = _features(texts), np.random.default_rng(1)
    rate = noise.rate(kind, train, seed=1)
    per_row = (np.array([rate.rates[r[0]] for r in rows]) if isinstance(rate, noise.RowNoise) else
               np.array([rate.get(int(t), 0.0) for t in truth]) if isinstance(rate, dict) else np.full(len(rows), rate))
    noisy = np.where(rng.random(len(rows)) < per_row, 1 - truth, truth)
    p = _oof(features, noisy)
    issues = cleanlab.filter.find_label_issues(noisy, np.column_stack([1 - p, p]))
    out = {"cleanlab_flip": _scores(noisy, np.where(issues, 1 - noisy, noisy), truth),
           "threshold": _scores(noisy, _rounds(features, noisy, _threshold_flips), truth)}
    for share in shares:
        out[f"budget_share{share}"] = _scores(noisy, _rounds(features, noisy, _budget_flips(BudgetRule(share=share))),
                                             truth)
    print(kind, json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--noise", default=",".join(noise.NOISE_KINDS))
    parser.add_argument("--shares", default="0.6,0.8,1.0")
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "rule_probe.json")
    args = parser.parse_args()
    train = Path("/tmp") / f"rule-probe-train-{args.size}.tsv"
    data.subset(data.source("nsmc").train, args.size, 1, train)
    shares = [float(s) for s in args.shares.split(",")]
    results = {kind: run_kind(kind, train, shares) for kind in args.noise.split(",")}
    payload = {**machine.header(smoke=False, contended=False), "probe": "correction rules on a char-TF-IDF stand-in",
               "size": args.size, "rounds": ROUNDS, "folds": FOLDS, "results": results}
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
