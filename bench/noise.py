"""The injected-noise settings: uniform flips and class-conditional flips, fixed seed.

Each kind maps to ``import_file(noise_rate=...)``: a float flips every class at that rate, a
``{true_label: rate}`` mapping flips each class at its own rate. The pre-noise label is kept in
``reference_labels`` and is the truth every detection metric is scored against.
"""

from __future__ import annotations

NOISE_KINDS: dict[str, float | dict[int, float]] = {
    "uniform20": 0.20,
    "uniform40": 0.40,
    # 30% of true positives labelled negative, 10% of true negatives labelled positive.
    "classcond": {1: 0.30, 0: 0.10},
}


def rate(kind: str) -> float | dict[int, float]:
    if kind not in NOISE_KINDS:
        raise SystemExit(f"unknown noise kind {kind!r}: choose from {', '.join(NOISE_KINDS)}")
    return NOISE_KINDS[kind]
