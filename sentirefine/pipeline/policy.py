"""Who gets relabelled: the rising threshold, oscillation freezing, and the review queue.

A row's label changes only when the ensemble predicts the other class with confidence at or
above the iteration's threshold (``ThresholdSchedule.at``) plus the predicted class's offset
(:func:`class_offsets`). The threshold rises each iteration so that later iterations, whose
models were trained on earlier corrections, need more evidence (confirmation-bias mitigation).
A row the ensemble already changed ``max_flips`` times and now wants to change again is
oscillating: it is frozen (kept out of training and of further automatic changes) and queued
for LLM/human review. Rows whose confidence is below
``llm_queue_below`` are queued as ``low_confidence`` (flipped or not); a row predicted at or above it is
``confident``, which closes a low-confidence entry an older iteration left open.

Flip counts come from the live lineage only (``Store.flip_counts``): a change a rollback or
restore undid is not held against the row. :func:`balance_shift` measures how far a stage's
changes would move the train class balance from the gold split's (the loop's balance guard).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from sentirefine.config import RefineConfig, ThresholdSchedule
from sentirefine.data.store import LabelChange


@dataclass
class Decision:
    changes: list[LabelChange] = field(default_factory=list)
    freeze: list[int] = field(default_factory=list)
    queue: list[tuple[int, int, str, float]] = field(default_factory=list)
    confident: list[int] = field(default_factory=list)
    stats: Counter = field(default_factory=Counter)


class BalanceShift(NamedTuple):
    """Train positive share before and after a stage's changes, the gold share, and the move away from it."""

    before: float
    after: float
    gold: float
    away: float


def balance_shift(before: Mapping[int, int], moved: Mapping[int, int], gold: Mapping[int, int]) -> BalanceShift:
    """How much further from the gold positive share the train labels would be after ``moved``.

    ``before``: train label counts before the stage; ``moved``: labels it changes *to* each class.
    ``away`` = |after - gold| - |before - gold|: negative when the changes move the balance
    towards gold (class-conditional noise being corrected), so only a move away can trip the
    guard, and only beyond the distance the labels already had (a crowd that over-uses a label
    is not a stage's fault).
    """
    n = sum(before.values())
    gold_share = gold.get(1, 0) / max(1, sum(gold.values()))
    share = before.get(1, 0) / max(1, n)
    after = (before.get(1, 0) + moved.get(1, 0) - moved.get(0, 0)) / max(1, n)
    return BalanceShift(share, after, gold_share, abs(after - gold_share) - abs(share - gold_share))


def class_offsets(threshold: ThresholdSchedule, train_counts: Mapping[int, int],
                  gold_counts: Mapping[int, int]) -> dict[int, float]:
    """The class offsets in force: ``per_class`` plus the balance offsets chosen from the data.

    Why the balance: when the crowd over-uses one label, members trained on those labels lean
    towards it, and their confident flips *to* it are the ones most often wrong (class-conditional
    bench: precision 0.66 without an offset, 0.76 with {0: 0.05}). How far the train labels'
    share of a class exceeds gold's says how much the labels lean. Only an excess beyond two
    standard errors of the gold share counts, so a small gold set or ordinary sampling noise
    (uniform noise keeps the balance) adds nothing.
    """
    offsets = dict(threshold.per_class)  # a copy: the config is shared
    n_train, n_gold = sum(train_counts.values()), sum(gold_counts.values())
    if threshold.balance_offset <= 0 or not n_train or not n_gold:
        return offsets
    for label in sorted(set(train_counts) | set(gold_counts)):
        gold_share = gold_counts.get(label, 0) / n_gold
        excess = train_counts.get(label, 0) / n_train - gold_share
        if excess > 2 * math.sqrt(gold_share * (1 - gold_share) / n_gold):
            offsets[label] = round(offsets.get(label, 0.0) + threshold.balance_offset * excess, 4)
    return offsets


def flip_thresholds(refine: RefineConfig, iteration: int,
                    offsets: Mapping[int, float] | None = None) -> dict[int, float]:
    """Per predicted class, the confidence a flip needs under the threshold rule: the rising
    threshold plus the class offset (``per_class`` when ``offsets`` is not given).

    The budget rule computes its own mapping (``noise_budget.flip_thresholds``); either way the
    predict stage fixes one mapping per iteration and every decision below reads only it.
    """
    return {label: refine.threshold.at(iteration, label, offsets) for label in (0, 1)}


def candidates(rows: Sequence[tuple], thresholds: Mapping[int, float]) -> list[int]:
    """Sids that would change label this iteration (their flip counts are needed to decide)."""
    return [sid for sid, current, predicted, conf, lock in rows
            if not lock and predicted != current and conf >= thresholds[predicted]]


def decide(
    rows: Sequence[tuple[int, int, int, float, str | None]],
    *,
    iteration: int,
    refine: RefineConfig,
    flip_counts: dict[int, int],
    thresholds: Mapping[int, float],
) -> Decision:
    """Turn one chunk of (sid, current, predicted, confidence, lock) into label decisions.

    ``lock`` ('human', 'frozen' or None, from ``Store.iter_predictions``): a locked row is left
    alone and counted as ``skipped_human`` or ``skipped_frozen``.

    ``thresholds``: per predicted class, the confidence a flip needs this iteration
    (:func:`flip_thresholds`, or the budget rule's), fixed by the predict stage.
    """
    out = Decision()
    for sid, current, predicted, conf, lock in rows:
        out.stats["scanned"] += 1
        if lock:
            out.stats[f"skipped_{lock}"] += 1
            continue
        frozen = False
        if predicted != current and conf >= thresholds[predicted]:
            frozen = flip_counts.get(sid, 0) >= refine.max_flips
            if frozen:
                out.freeze.append(sid)
                out.queue.append((sid, iteration, "oscillation", float(conf)))
                out.stats["frozen"] += 1
            else:
                out.changes.append(LabelChange(sid, int(current), int(predicted), float(conf)))
                out.stats[f"corrected_to_{predicted}"] += 1
        # A flip made under llm_queue_below (the budget rule allows it) is queued too: the LLM or a
        # person should look at it, and a resumed correct stage, which sees the row already flipped,
        # then decides the same.
        if not frozen and conf < refine.llm_queue_below:
            out.queue.append((sid, iteration, "low_confidence", float(conf)))
            out.stats["queued_low_confidence"] += 1
        if conf >= refine.llm_queue_below:
            out.confident.append(sid)
    return out


def convergence(label_change_rate: float, model_change_rates: dict[str, float], refine: RefineConfig,
                previous_streak: int) -> tuple[int, bool]:
    """(quiet streak, converged): quiet when the label change rate is under its bound and every
    model change rate (the lexicon's) under its own; converged after ``patience`` quiet iterations."""
    quiet = label_change_rate < refine.label_change_bound and all(
        rate < refine.lexicon_change_bound for rate in model_change_rates.values()
    )
    streak = previous_streak + 1 if quiet else 0
    return streak, streak >= refine.patience
