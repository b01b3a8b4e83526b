"""One-screen text summaries the CLI prints at the end of a command."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sentirefine.data.records import IterationMetrics, IterationRow


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value != value:  # NaN
        return "-"
    return format(value, spec) if isinstance(value, float) else str(value)


def iterations_table(iterations: Sequence[dict[str, Any]], members: list[str]) -> str:
    """Per-iteration table: threshold, corrections, change rates, label and gold accuracy.

    ``iterations``: rows as :meth:`Store.iterations` returns them (an unfinished one shows dashes).
    """
    head = ["iter", "threshold", "corrected", "label_chg", "lexicon_chg", "label_acc", *members, "ensemble"]
    lines = [head]
    for row in map(IterationRow.from_row, iterations):
        m = row.metrics or IterationMetrics(iteration=0)
        lines.append([
            str(row.iteration if row.metrics is None else m.iteration),
            _fmt(m.threshold, ".2f"),
            str(m.corrections.total) if m.iteration else "-",
            _fmt(m.convergence.label_change_rate, ".4f"),
            _fmt(m.convergence.lexicon_change_rate, ".4f"),
            _fmt(m.label_accuracy, ".4f"),
            *[_fmt(m.evaluation.accuracy(n), ".4f") for n in members],
            _fmt(m.evaluation.accuracy("ensemble"), ".4f"),
        ])
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    text = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text) + "\n(label_acc: agreement with known-true labels, where the store has them; " \
        "model columns: gold-split accuracy)"
