"""The bundled demo corpus: 8,000 + 2,000 real NSMC reviews (CC0 1.0).

Source: Naver Sentiment Movie Corpus (https://github.com/e9t/nsmc), a fixed-seed sample drawn
from its train and test files. The demo injects a known share of label flips on top (fixed
seed) and keeps the pre-noise label as the reference truth, so it can show whether the loop
makes labels more correct.
"""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
TRAIN = DEMO_DIR / "train.tsv.gz"
GOLD = DEMO_DIR / "gold.tsv.gz"
CONFIG = DEMO_DIR / "demo.yaml"
NOISE_RATE = 0.15
NOISE_SEED = 7
