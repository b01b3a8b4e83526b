"""The typed iteration metrics write the JSON the loop always wrote, and read any older record."""

from __future__ import annotations

import json

from sentirefine.data.records import IterationMetrics, IterationRow

GOLD = {"accuracy": 0.8, "f1": 0.79, "log_loss": 0.45, "n": 200, "confusion": [[80, 20], [20, 80]]}
EVALUATION = {"members": {"lexicon": GOLD}, "ensemble": GOLD, "weights": {"lexicon": 1.0},
              "temperatures": {"lexicon": 1.1}, "spec": {"members": ["lexicon"]}}
BOOTSTRAP = {"iteration": 0, "train_rows": 600, "label_accuracy": None, "training": {"lexicon": {"mode": "fit"}},
             **EVALUATION, "seconds": 3.2, "dataset_tag": None, "registry": {}}
REFINED = {"iteration": 1, "threshold": 0.7, "class_offsets": {"0": 0.03, "1": 0.0}, "train_rows": 600,
           "corrected_to_0": 4, "corrected_to_1": 2, "label_change_rate": 0.01, "model_change_rates": {"lexicon": 0.02},
           "lexicon_change_rate": 0.02, "queued_low_confidence": 5, "frozen": 0, "label_accuracy": 0.9,
           "quiet_streak": 1, "converged": False, "training": {"lexicon": {"mode": "update"}}, **EVALUATION,
           "stage_seconds": {"llm": 0.0, "train": 1.0}, "llm": {"skip_reason": "disabled"}, "audit": {},
           "dataset_tag": "iteration-001", "registry": {}, "seconds": 9.9}


def test_both_shapes_round_trip_byte_for_byte() -> None:
    for record in (BOOTSTRAP, REFINED):
        assert json.dumps(IterationMetrics.from_json(record).to_json()) == json.dumps(record)


def test_an_empty_gold_split_writes_no_temperatures() -> None:
    record = {**BOOTSTRAP, "members": {}, "ensemble": {}, "weights": {"lexicon": 1.0}}
    del record["temperatures"]
    metrics = IterationMetrics.from_json(record)
    assert metrics.evaluation.ensemble is None and metrics.evaluation.accuracy("ensemble") is None
    assert json.dumps(metrics.to_json()) == json.dumps(record)


def test_a_partial_or_older_record_reads_with_none_for_what_it_lacks() -> None:
    metrics = IterationMetrics.from_json({"iteration": 2, "members": {"lexicon": {"accuracy": 0.8}},
                                          "corrected_to_1": 1})
    assert metrics.evaluation.accuracy("lexicon") == 0.8 and metrics.evaluation.accuracy("lstm") is None
    assert (metrics.corrections.to_0, metrics.corrections.total) == (None, 1)
    assert metrics.convergence.converged is None and metrics.threshold is None and metrics.llm is None


def test_an_unfinished_row_has_no_metrics() -> None:
    row = IterationRow.from_row({"iteration": 3, "started_at": "t", "finished_at": None, "threshold": 0.8,
                                 "metrics": {}})
    assert row.metrics is None and row.iteration == 3
