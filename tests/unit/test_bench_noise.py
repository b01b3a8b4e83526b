"""The instance-dependent bench noise: flips concentrate on reviews a reader finds ambiguous."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from sentirefine import demo

pytest.importorskip("sklearn", reason="the ambiguous noise kind needs scikit-learn (the bench extra)")


def test_ambiguous_rates_average_the_target_and_follow_the_reader(tmp_path):
    from bench import noise

    train = tmp_path / "train.tsv"  # the demo's first 3,000 reviews: enough for the reader's 5 folds
    with gzip.open(demo.TRAIN, "rt", encoding="utf-8") as src:
        train.write_text("".join(line for _, line in zip(range(3001), src, strict=False)), encoding="utf-8")
    rates = noise.rate("ambiguous25", train, seed=1)
    values = np.array(list(rates.rates.values()))
    assert len(values) == 3000 and values.max() <= noise.AMBIGUOUS_CAP
    assert values.mean() == pytest.approx(noise.AMBIGUOUS_MEAN, abs=0.02)
    # instance-dependent, not uniform: the most ambiguous tenth flips far more often than the surest tenth
    ranked = np.sort(values)
    assert ranked[-300:].mean() > 5 * ranked[:300].mean()
    assert noise.rate("ambiguous25", train, seed=1) == rates  # fixed seed: the same rates every run


def test_unknown_kind_and_missing_file_are_clear():
    from bench import noise

    with pytest.raises(SystemExit, match="choose from"):
        noise.rate("nope")
    with pytest.raises(SystemExit, match="pass it"):
        noise.rate("ambiguous25")
