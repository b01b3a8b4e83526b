"""One-screen text summaries the CLI prints at the end of a command."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value != value:  # NaN
        return "-"
    return format(value, spec) if isinstance(value, float) else str(value)


def iterations_table(iterations: list[dict[str, Any]], members: list[str]) -> str:
    """Per-iteration table: threshold, corrections, change rates, label and gold accuracy."""
    head = ["iter", "threshold", "corrected", "label_chg", "lexicon_chg", "label_acc", *members, "ensemble"]
    lines = [head]
    for it in iterations:
        m = it.get("metrics", it)
        gold = m.get("members", {})
        corrected = (m.get("corrected_to_0", 0) or 0) + (m.get("corrected_to_1", 0) or 0)
        lines.append([
            str(m.get("iteration", it.get("iteration"))),
            _fmt(m.get("threshold"), ".2f"),
            str(corrected) if m.get("iteration", 0) else "-",
            _fmt(m.get("label_change_rate"), ".4f"),
            _fmt(m.get("lexicon_change_rate"), ".4f"),
            _fmt(m.get("label_accuracy"), ".4f"),
            *[_fmt(gold.get(n, {}).get("accuracy"), ".4f") for n in members],
            _fmt(m.get("ensemble", {}).get("accuracy"), ".4f"),
        ])
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    text = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text) + "\n(label_acc: agreement with known-true labels, where the store has them; " \
        "model columns: gold-split accuracy)"
